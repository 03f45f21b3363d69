//! The page's words in Chinese (zh-CN, the default) and English.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    pub fn param(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// From `?lang=`, else the `vigil_lang` cookie, else Chinese.
    pub fn pick(query: Option<&str>, cookie: Option<&str>) -> Lang {
        match query.or(cookie) {
            Some("en") => Lang::En,
            _ => Lang::Zh,
        }
    }

    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }

    /// The word for `m` in this language.
    pub fn t(self, m: Msg) -> &'static str {
        let (zh, en) = m.words();
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }
}

/// Declares [`Msg`]: one variant per word a page shows, each with its Chinese and its English.
/// A key the pages use and the catalogue lacks does not compile; an entry without both languages
/// does not parse.
macro_rules! catalogue {
    ($($key:ident: $zh:literal, $en:literal;)*) => {
        /// A word a page shows ([`Lang::t`] gives it in one language).
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Msg {
            $($key),*
        }

        impl Msg {
            /// Every entry of the catalogue.
            pub const ALL: &[Msg] = &[$(Msg::$key),*];

            fn words(self) -> (&'static str, &'static str) {
                match self {
                    $(Msg::$key => ($zh, $en)),*
                }
            }

            /// The entry's name, as written in the catalogue.
            pub fn key(self) -> &'static str {
                match self {
                    $(Msg::$key => stringify!($key)),*
                }
            }
        }
    };
}

catalogue! {
    title: "证据审核", "Evidence review";
    login: "登录", "Log in";
    logout: "退出", "Log out";
    user: "用户名", "User";
    password: "密码", "Password";
    login_failed: "用户名或密码错误", "Wrong user name or password";
    login_expired: "登录页面已过期，请重新登录", "The login form expired; please log in again";
    too_many: "失败次数过多，请稍后再试", "Too many failed attempts; try again later";
    queue: "待审队列", "Queue";
    audit: "访问日志", "Access log";
    filter: "筛选", "Filter";
    site: "场所", "Site";
    camera: "摄像头", "Camera";
    location: "位置", "Location";
    from: "起", "From";
    to: "止", "To";
    rule: "规则", "Rule";
    kind: "性质", "Kind";
    enforcement: "执法", "Enforcement";
    advisory: "提示", "Advisory";
    admissible: "可采性", "Admissible";
    yes: "是", "yes";
    no: "否", "no";
    any: "全部", "any";
    review_status: "审核状态", "Review status";
    pending: "待审", "pending";
    one_approval: "一人通过", "one approval";
    approved: "已通过", "approved";
    rejected: "已驳回", "rejected";
    reminder: "提醒", "reminder";
    mine: "待我审核", "Waiting for me";
    time: "时间", "Time";
    severity: "情节", "Severity";
    decided_by: "审核人", "Decided by";
    open: "打开", "Open";
    no_items: "没有符合条件的证据", "No items match";
    page: "页", "Page";
    prev: "上一页", "Previous";
    next: "下一页", "Next";
    facts: "要素", "Facts";
    violation_time: "违法时间", "Violation time";
    local_time: "本地时间", "Local time";
    utc_time: "UTC 时间", "UTC time";
    registry: "登记", "Registry";
    threshold: "阈值", "Threshold";
    precision: "精确率", "precision";
    recall: "召回率", "recall";
    revision: "配置版本", "Config revision";
    models: "模型", "Models";
    detections: "检测结果", "Detections";
    health: "设备状态", "Device health";
    why: "原因", "Why";
    repeat: "30 日内同类违法", "Same rule in 30 days";
    legal_basis: "法律依据", "Legal basis";
    verified: "已验证：哈希、签名、链位置均正确", "Verified: hashes, signature and chain position";
    not_verified: "验证失败", "Verification FAILED";
    checked_at: "验证时间", "Checked";
    chain_pos: "链位置", "Chain position";
    decision: "审核决定", "Decision";
    approve: "通过", "Approve";
    reject: "驳回", "Reject";
    remind: "提醒整改", "Reminder";
    rejection_kind: "驳回类别", "Kind of rejection";
    rejection_unsaid: "（未说明）", "(not said)";
    rejection_false_alarm: "误报（无违规）", "False alarm (no violation)";
    rejection_unclear: "画面不清", "Footage unclear";
    rejection_duplicate: "重复", "Duplicate";
    rejection_other: "其他", "Other";
    check_true: "真实", "True";
    check_clear: "清晰", "Clear";
    check_complete: "完整", "Complete";
    check_accurate: "准确", "Accurate";
    reason: "理由（驳回必填）", "Reason (required to reject)";
    corrects: "更正本人第几项决定（可选）", "Corrects my decision no. (optional)";
    submit: "提交", "Submit";
    history: "审核记录", "Review history";
    access_log: "访问记录", "Access log";
    no_decisions: "尚无审核决定", "No decision yet";
    cannot_approve: "本证据不能通过", "This item cannot be approved";
    decision_final: "审核已完成", "The review is complete";
    package: "下载证据包", "Download evidence package";
    snapshot: "截图", "Snapshot";
    annotated: "标注截图", "Annotated snapshot";
    clip: "视频", "Clip";
    officer: "执法证号", "Officer id";
    action: "操作", "Action";
    outcome: "结果", "Outcome";
    detail: "详情", "Detail";
    client: "来源地址", "From";
    keys: "快捷键：j/k 上下，Enter 打开，/ 筛选", "Keys: j/k move, Enter open, / filter";
    back: "返回队列", "Back to the queue";
    error: "错误", "Error";
    forbidden: "无权访问", "Forbidden";
    ops: "运维", "Ops";
    rules: "规则与阈值", "Rules and thresholds";
    params: "当前参数", "Parameters in force";
    r#override: "在线修改", "Override";
    eval_curve: "评估曲线", "Eval curve";
    change: "修改", "Change";
    file_values: "配置文件的值", "the pipeline file's values";
    reason_short: "理由", "reason";
    rule_history: "修改记录（工作节点审计）", "Changes (the workers' audit trail)";
    by: "修改人", "By";
    cameras: "摄像头总览", "Cameras";
    state: "状态", "State";
    conditions: "画面异常", "Conditions";
    analysed_fps: "分析帧率", "Analysed fps";
    dropped_fps: "丢帧率", "Dropped fps";
    inference_ms: "推理耗时 (ms)", "Inference (ms)";
    last_violation: "最近违规", "Last violation";
    worker: "工作节点", "Worker";
    enforcement_status: "执法状态", "Enforcement";
    st_up: "正常", "up";
    st_down: "无画面", "no video";
    st_starting: "启动中", "starting";
    st_unknown: "未知", "unknown";
    st_overloaded: "过载", "overloaded";
    st_tampered: "画面异常", "picture fault";
    cond_stream: "无画面", "no video";
    cond_frozen: "画面冻结", "frozen";
    cond_covered: "镜头遮挡", "covered";
    cond_saturated: "过曝或过暗", "over- or under-exposed";
    cond_defocus: "失焦", "out of focus";
    cond_moved: "摄像头移位", "moved";
    cond_spool_full: "证据缓存已满", "spool full";
    cond_evidence_quarantined: "证据已隔离", "evidence quarantined";
    cond_chain_gap: "证据链缺口", "chain gap";
    cond_clock_step: "时钟回拨", "clock stepped back";
    cond_overload: "过载", "overload";
    no_video_since: "无画面，始于", "no video since";
    reconnecting: "正在重连", "reconnecting";
    reconnects_so_far: "已重连次数", "reconnects so far";
    waiting_first_video: "等待首帧画面", "waiting for the first video";
    overload_detail: "分析跟不上，丢帧比例", "analysis cannot keep up; frames dropped";
    no_report_from: "工作节点无报告", "no report from worker";
    seconds: "秒", "s";
    no_worker_reports: "没有工作节点报告此摄像头", "no worker reports this camera";
    no_live_status: "无实时状态：审核服务未连接 NATS", "no live status: the review service has no NATS connection";
    ops_keys: "每秒自动刷新（画面每 10 秒）", "Refreshes every second (pictures every 10 s)";
    camera_grid: "实时画面（已遮挡隐私区域）", "Live pictures (privacy mask applied)";
    no_picture: "暂无画面", "no picture";
    item_keys: "快捷键：a 批准，r 驳回，m 提醒（先选中按钮，Enter 提交），Esc 回到队列", "Keys: a approve, r reject, m reminder (selects the button; Enter submits), Esc back to the queue";
    masks: "遮挡与区域", "Masks and zones";
    mask_editor: "隐私遮挡与规则区域编辑", "Privacy mask and rule zone editor";
    edit: "编辑", "Edit";
    target: "编辑对象", "Editing";
    privacy_mask: "隐私遮挡", "Privacy mask";
    zone_of: "规则区域：", "Zone of rule ";
    unmasked_view: "显示未遮挡画面（记录审计）", "Unmasked view (audited)";
    close_polygon: "闭合多边形", "Close polygon";
    undo_point: "撤销一点", "Undo point";
    delete_polygon: "删除所选多边形", "Delete selected polygon";
    save: "保存", "Save";
    reset_mask: "恢复配置文件的遮挡", "Back to the mask file";
    reload_frame: "刷新画面", "Refresh picture";
    mask_in_force: "当前遮挡", "Mask in force";
    editor_keys: "点击画面加点，拖动顶点修改；Enter 闭合，Backspace 撤销一点，Delete 删除所选，Esc 放弃当前", "Click the picture to add a point, drag a vertex to move it; Enter closes, Backspace undoes a point, Delete removes the selected polygon, Esc drops the one being drawn";
    polygons: "多边形", "Polygons";
    need_checks: "批准需要勾选全部四项核查（真实、清晰、完整、准确）", "Approving needs all four checks (true, clear, complete, accurate)";
    need_reason: "驳回需要填写理由", "Rejecting needs a reason";
    completeness: "完整性", "Complete";
    complete: "完整", "complete";
    incomplete: "不完整", "incomplete";
    clip_length: "片段时长", "Clip length";
    pre_roll: "事前录像", "pre-roll";
    post_roll: "事后录像", "post-roll";
    pre_roll_short: "事前录像不足", "pre-roll cut short";
    post_roll_short: "事后录像不足", "post-roll cut short";
    video_gaps: "画面中断", "gaps in the video";
    of_configured: "配置为", "configured";
    mask_applied: "已应用的隐私遮挡", "Privacy mask applied";
    no_mask_configured: "未配置（摄像头无隐私区域）", "none (the camera has no private area)";
    kind_no_mask: "未戴口罩", "no mask";
    kind_utensils_left: "餐具未清理", "utensils left";
    kind_object_present: "区域内出现违规对象", "object present";
    kind_object_with_person: "作业时持有违规物品", "object held by a person";
    kind_attribute_missing: "未按规定穿戴", "attribute missing";
    part_person: "整个人体", "the whole person";
    part_upper: "上半身", "the upper body";
    part_head: "头部", "the head";
    param_key: "参数", "Parameter";
    meaning: "含义", "Meaning";
    range: "范围", "Range";
    current: "当前值", "Now";
    proposed: "拟改为", "Proposed";
    other_keys: "其他参数（键=值，可选）", "Other keys (key=value, optional)";
    rule_written: "已写入，工作节点在两帧之间生效；KV 版本", "written; the workers apply it between two frames; KV revision";
    not_written: "未写入", "not written";
    out_of_range: "超出范围", "is out of range";
    not_a_number: "不是数字", "is not a number";
    not_an_integer: "不是整数", "is not a whole number";
    nothing_changed: "没有修改任何参数", "nothing changed";
    on: "开", "on";
    off: "关", "off";
    role_reviewer: "审核员", "reviewer";
    role_auditor: "审计员", "auditor";
    role_admin: "管理员", "admin";
    role_ops: "运维人员", "ops";
    role_nobody: "无角色", "no role";
    act_login: "登录", "login";
    act_logout: "退出", "logout";
    act_item_viewed: "查看证据", "item viewed";
    act_clip_played: "播放视频", "clip played";
    act_file_downloaded: "下载文件", "file downloaded";
    act_package_exported: "导出证据包", "package exported";
    act_decision: "审核决定", "decision";
    act_queue_viewed: "查看队列", "queue viewed";
    act_audit_viewed: "查看访问日志", "access log viewed";
    act_unmasked_view: "查看未遮挡画面", "unmasked view";
    act_mask_changed: "修改隐私遮挡", "mask changed";
    act_threshold_changed: "修改阈值", "threshold changed";
    act_file_read: "读取文件", "file read";
    act_decision_recovered: "补记审核决定", "decision recovered";
    outcome_ok: "成功", "ok";
    outcome_denied: "拒绝", "denied";
    loc_kitchen: "后厨", "kitchen";
    loc_food_preparation: "食品加工区", "food preparation";
    loc_food_storage: "食品贮存区", "food storage";
    loc_canteen: "食堂", "canteen";
    loc_dining_area: "就餐区", "dining area";
    loc_serving_counter: "售卖窗口", "serving counter";
    loc_clinic: "诊所", "clinic";
    loc_pharmacy: "药房", "pharmacy";
    loc_other: "其他", "other";
    loc_hotel_room: "客房", "hotel room";
    loc_dormitory: "宿舍", "dormitory";
    loc_bath: "浴室", "bath";
    loc_changing_room: "更衣室", "changing room";
    loc_toilet: "卫生间", "toilet";
    loc_nursing_room: "母婴室", "nursing room";
    sev_minor: "一般", "minor";
    sev_major: "严重", "major";
    sev_critical: "特别严重", "critical";
    reg_legal: "法制审核", "legal review";
    reg_technical: "技术审核", "technical review";
    reg_installation: "安装验收", "installation";
    reg_notice: "公告", "public notice";
    health_normal: "正常", "normal";
    gap: "画面中断", "gap";
    score: "得分", "score";
    no_mask_prob: "未戴口罩概率", "no-mask";
    dwell: "停留", "dwell";
    key_id: "密钥", "key";
    no_such_item: "没有这条证据", "No such evidence item";
    no_decision: "未选择审核决定", "No decision chosen";
    bad_rejection: "驳回类别无效", "Not a kind of rejection";
    corrects_number: "更正项须为本人决定的序号", "Corrects: the number of one of your decisions";
    rsn_no_legal_review: "无法制审核记录", "no legal review on record";
    rsn_no_technical_review: "无技术审核记录", "no technical review on record";
    rsn_no_installation: "无安装验收记录", "no installation confirmation on record";
    rsn_no_notice: "无公告记录", "no public notice on record";
    rsn_notice_period: "公告未满 30 天", "within 30 days of the public notice";
    enforcement_from: "执法始于", "enforcement from";
    active_at_violation: "违法时存在", "active at the violation";
    decode_hole: "解码缺口", "decoded video has a hole of";
    rsn_stream_gap: "画面中断（秒）", "stream gap (s)";
    at: "于", "at";
    no_nats_rules: "本服务未连接 NATS：规则只能在配置文件中修改", "no NATS in this pipeline: rules change through the pipeline file only";
    audit_unreadable: "无法读取修改记录", "the audit trail cannot be read";
    overrides_unreadable: "无法读取在线修改的参数", "the rule overrides cannot be read";
    no_change: "无变化", "no change";
    applied: "已生效", "applied";
    refused: "被拒绝", "refused";
    same_object: "同一对象", "same object";
    need_three_points: "多边形至少需要 3 个点", "a polygon needs at least 3 points";
    draw_zone_first: "请先画出区域（一个多边形）", "draw the zone first (one polygon)";
    saved_by: "已保存，保存人", "saved by";
    workers_apply: "工作节点在两帧之间生效", "the workers apply it between two frames";
    not_saved: "未保存", "not saved";
    risk_tier: "风险等级", "Risk tier";
    tier_immediate: "立即处置", "immediate";
    tier_deadline: "限期整改", "fix by a deadline";
    tier_routine: "日常提醒", "routine";
    repeat_of_object: "同一对象重复", "repeat of one object";
}

/// A role in words.
pub fn role_msg(r: crate::review::accounts::Role) -> Msg {
    use crate::review::accounts::Role;
    match r {
        Role::Reviewer => Msg::role_reviewer,
        Role::Auditor => Msg::role_auditor,
        Role::Admin => Msg::role_admin,
        Role::Ops => Msg::role_ops,
        Role::Nobody => Msg::role_nobody,
    }
}

/// Every access-log action (the audit page's filter offers each).
pub const ACTIONS: &[crate::audit_log::Action] = {
    use crate::audit_log::Action::*;
    &[
        Login,
        Logout,
        ItemViewed,
        ClipPlayed,
        FileRead,
        FileDownloaded,
        PackageExported,
        Decision,
        DecisionRecovered,
        QueueViewed,
        AuditViewed,
        UnmaskedViewRequested,
        MaskChanged,
        ThresholdChanged,
    ]
};

/// An access-log action in words.
pub fn action_msg(a: crate::audit_log::Action) -> Msg {
    use crate::audit_log::Action::*;
    match a {
        Login => Msg::act_login,
        Logout => Msg::act_logout,
        ItemViewed => Msg::act_item_viewed,
        ClipPlayed => Msg::act_clip_played,
        FileDownloaded => Msg::act_file_downloaded,
        PackageExported => Msg::act_package_exported,
        Decision => Msg::act_decision,
        QueueViewed => Msg::act_queue_viewed,
        AuditViewed => Msg::act_audit_viewed,
        UnmaskedViewRequested => Msg::act_unmasked_view,
        MaskChanged => Msg::act_mask_changed,
        ThresholdChanged => Msg::act_threshold_changed,
        FileRead => Msg::act_file_read,
        DecisionRecovered => Msg::act_decision_recovered,
    }
}

pub fn outcome_msg(o: crate::audit_log::Outcome) -> Msg {
    match o {
        crate::audit_log::Outcome::Ok => Msg::outcome_ok,
        crate::audit_log::Outcome::Denied => Msg::outcome_denied,
    }
}

/// A camera's location category in words.
pub fn location_msg(c: crate::config::LocationCategory) -> Msg {
    use crate::config::LocationCategory::*;
    match c {
        Kitchen => Msg::loc_kitchen,
        FoodPreparation => Msg::loc_food_preparation,
        FoodStorage => Msg::loc_food_storage,
        Canteen => Msg::loc_canteen,
        DiningArea => Msg::loc_dining_area,
        ServingCounter => Msg::loc_serving_counter,
        Clinic => Msg::loc_clinic,
        Pharmacy => Msg::loc_pharmacy,
        Other => Msg::loc_other,
        HotelRoom => Msg::loc_hotel_room,
        Dormitory => Msg::loc_dormitory,
        Bath => Msg::loc_bath,
        ChangingRoom => Msg::loc_changing_room,
        Toilet => Msg::loc_toilet,
        NursingRoom => Msg::loc_nursing_room,
    }
}

impl Lang {
    /// A rule's severity as configured: the usual words in this language, any other as written.
    pub fn severity(self, s: &str) -> String {
        match s {
            "minor" => self.t(Msg::sev_minor).into(),
            "major" => self.t(Msg::sev_major).into(),
            "critical" => self.t(Msg::sev_critical).into(),
            s => s.into(),
        }
    }

    /// A reason the worker recorded in a manifest or status (in English, as signed) in this
    /// language: the camera's compliance gaps and the admissibility reasons; any other as written.
    pub fn recorded(self, s: &str) -> String {
        let fixed = [
            ("no legal review on record", Msg::rsn_no_legal_review),
            ("no technical review on record", Msg::rsn_no_technical_review),
            ("no installation confirmation on record", Msg::rsn_no_installation),
            ("no public notice on record", Msg::rsn_no_notice),
        ];
        if let Some((_, m)) = fixed.iter().find(|(e, _)| *e == s) {
            return self.t(*m).into();
        }
        if self == Lang::En {
            return s.into();
        }
        // "within 30 days of the public notice of D (enforcement from F)"
        if let Some(rest) = s.strip_prefix("within 30 days of the public notice of ")
            && let Some((d, from)) = rest.split_once(" (enforcement from ")
        {
            let from = from.trim_end_matches(')');
            return format!(
                "{}（{} {d}，{} {from}）",
                self.t(Msg::rsn_notice_period),
                self.t(Msg::reg_notice),
                self.t(Msg::enforcement_from)
            );
        }
        // "stream gap of X s at T"
        if let Some(rest) = s.strip_prefix("stream gap of ")
            && let Some((x, at)) = rest.split_once(" s at ")
        {
            return format!("{} {x} {}，{} {at}", self.t(Msg::gap), self.t(Msg::seconds), self.t(Msg::at));
        }
        // "<condition> active at the violation"
        if let Some(c) = s.strip_suffix(" active at the violation")
            && let Some(m) = condition_msg(c)
        {
            return format!("{}（{}）", self.t(m), self.t(Msg::active_at_violation));
        }
        // "decoded video has a hole of X s (frames did not decode)"
        if let Some(x) =
            s.strip_prefix("decoded video has a hole of ").and_then(|r| r.strip_suffix(" s (frames did not decode)"))
        {
            return format!("{} {x} {}", self.t(Msg::decode_hole), self.t(Msg::seconds));
        }
        s.into()
    }
}

/// A camera condition's name (as events write it) in words.
pub fn condition_msg(name: &str) -> Option<Msg> {
    Some(match name {
        "stream" => Msg::cond_stream,
        "frozen" => Msg::cond_frozen,
        "covered" => Msg::cond_covered,
        "saturated" => Msg::cond_saturated,
        "defocus" => Msg::cond_defocus,
        "moved" => Msg::cond_moved,
        "spool_full" => Msg::cond_spool_full,
        "evidence_quarantined" => Msg::cond_evidence_quarantined,
        "chain_gap" => Msg::cond_chain_gap,
        "clock_step" => Msg::cond_clock_step,
        "overload" => Msg::cond_overload,
        _ => return None,
    })
}

/// The words for a rule kind.
pub fn kind_msg(k: crate::rules::RuleKind) -> Msg {
    match k {
        crate::rules::RuleKind::NoMask => Msg::kind_no_mask,
        crate::rules::RuleKind::UtensilsLeft => Msg::kind_utensils_left,
        crate::rules::RuleKind::ObjectPresent => Msg::kind_object_present,
        crate::rules::RuleKind::ObjectWithPerson => Msg::kind_object_with_person,
        crate::rules::RuleKind::AttributeMissing => Msg::kind_attribute_missing,
    }
}

/// A person's part (an attribute head's crop) in words.
pub fn part_msg(p: crate::rules::Part) -> Msg {
    match p {
        crate::rules::Part::Person => Msg::part_person,
        crate::rules::Part::Upper => Msg::part_upper,
        crate::rules::Part::Head => Msg::part_head,
    }
}

/// A risk tier in words.
pub fn tier_msg(t: crate::rules::RiskTier) -> Msg {
    match t {
        crate::rules::RiskTier::Immediate => Msg::tier_immediate,
        crate::rules::RiskTier::Deadline => Msg::tier_deadline,
        crate::rules::RiskTier::Routine => Msg::tier_routine,
    }
}

/// A rule parameter's Chinese name and meaning, for the rules page (the English page shows the
/// key and the configuration schema's own doc). Every key the page offers has one (a test checks).
pub fn param_zh(k: crate::rules::RuleKind, key: &str) -> Option<(&'static str, &'static str)> {
    use crate::rules::RuleKind::*;
    Some(match (k, key) {
        (NoMask, "threshold") => ("未戴口罩概率阈值", "一帧中人脸被判为未戴口罩所需的最低概率（拟合头或分类器的输出）"),
        (NoMask, "face_threshold") => ("人脸检测阈值", "人脸检测器（CenterFace）得分阈值"),
        (NoMask, "min_face_px") => ("最小人脸（像素）", "短边小于此值的人脸不计（分析帧像素）"),
        (NoMask, "crop_margin") => ("裁剪边距", "分类前在人脸框四周加的边距，占宽、高的比例（0.15 即 15%）"),
        (NoMask, "min_hits") => ("命中帧数 N", "N/M 规则：最近 M 帧中需命中的帧数（不超过窗口帧数）"),
        (NoMask, "window") => ("窗口帧数 M", "N/M 规则：回看同一轨迹的最近帧数"),
        (NoMask, "cooldown_s") => ("冷却时间（秒）", "触发后同一摄像头的静默时间（视频时间）"),
        (NoMask, "temporal") => ("时序规则", "n_of_m：N/M 帧命中；median：中位数"),
        (NoMask, "input_width") => (
            "检测输入宽度（像素）",
            "整帧画面对应的人脸检测器输入宽度（向上取整为 32 的倍数）；检测区域按同一放大倍数缩放；0 为不放大",
        ),
        (NoMask, "tile_pass") => {
            ("分块二次检测", "在检测区域的 2×2 重叠分块上再检测一次人脸（约放大 1.8 倍），找出远处小脸")
        }
        (NoMask, "person_pass") => ("人体头部二次检测", "在物体检测器找到的人体头部再检测一次人脸"),
        (UtensilsLeft | ObjectPresent | ObjectWithPerson, "threshold") => {
            ("物体检测阈值", "物体检测器（NanoDet）得分阈值")
        }
        (AttributeMissing, "threshold") => ("人体检测阈值", "物体检测器对人体的得分阈值"),
        (AttributeMissing, "head") => {
            ("穿戴分类头", "`vigil fit --kind attribute` 拟合的分类头（models/<id>.toml），在启动时加载")
        }
        (AttributeMissing, "part") => {
            ("裁剪部位", "分类头判断的人体部位：整个人体（工作服）、上半身或头部（帽子、口罩）")
        }
        (AttributeMissing, "missing_threshold") => ("未穿戴概率阈值", "分类头判为未穿戴所需的最低概率"),
        (AttributeMissing, "min_box_px") => ("最小人体（像素）", "短边小于此值的人体不计（太小看不清穿戴）"),
        (UtensilsLeft | ObjectPresent | ObjectWithPerson, "min_box_px") => {
            ("最小物体（像素）", "短边小于此值的物体不计（分析帧像素）")
        }
        (UtensilsLeft | ObjectPresent | ObjectWithPerson | AttributeMissing, "dwell_s") => {
            ("停留时间（秒）", "物体在区域内停留超过此时长才触发（每段只触发一次）")
        }
        (UtensilsLeft | ObjectPresent | ObjectWithPerson | AttributeMissing, "max_gap_s") => {
            ("离开判定（秒）", "物体超过此时长未被看到即视为离开（再出现重新计时）")
        }
        (UtensilsLeft, "episode_gap_s") => {
            ("同段间隔（秒）", "已触发的物体在此时长内于同一位置再出现，仍属同一段，不再触发")
        }
        (ObjectPresent | ObjectWithPerson | AttributeMissing, "episode_gap_s") => {
            ("同段间隔（秒）", "触发后，同类对象在此时长内于区域内任何位置再出现，仍属同一段，不再触发")
        }
        (ObjectPresent, "detector") => (
            "检测模型",
            "这些类别所属的目标检测模型（models/<id>.toml，本单位自带的检测器，如鼠类检测）；留空为管道的目标模型，更换需重启",
        ),
        (ObjectWithPerson, "person_threshold") => ("人体检测阈值", "判定持有者所用的人体检测得分阈值"),
        (ObjectWithPerson, "overlap") => ("重叠比例", "物体框被人体框覆盖的最低比例（0.5 即至少一半）"),
        (ObjectPresent | ObjectWithPerson | AttributeMissing, "working_hours") => {
            ("营业时段", "本地营业时段 HH:MM-HH:MM；设置后规则只在营业时段以外生效（如非营业时间有人进入后厨）")
        }
        (UtensilsLeft, "require_dirty") => ("仅计未清洗餐具", "只计清洁/脏污分类头判为脏污的物体"),
        (UtensilsLeft, "dirty_threshold") => ("脏污概率阈值", "开启“仅计未清洗餐具”时，判为脏污的最低概率"),
        (UtensilsLeft | ObjectPresent | ObjectWithPerson | AttributeMissing, "hours") => {
            ("适用时段", "规则生效的本地时段 HH:MM-HH:MM（可跨午夜，如 22:00-06:00）；留空为全天")
        }
        (_, "severity") => ("情节", "写入事件的情节等级（minor 一般、major 严重等）"),
        (_, "tier") => ("风险等级", "写入事件，在审核队列中显示并可筛选：立即处置、限期整改或日常提醒"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_has_chinese_and_english_and_each_key_is_one_entry() {
        let mut keys = std::collections::HashSet::new();
        for &m in Msg::ALL {
            assert!(keys.insert(m.key()), "{} twice", m.key());
            let (zh, en) = (Lang::Zh.t(m), Lang::En.t(m));
            assert!(!en.trim().is_empty(), "{}: no English", m.key());
            assert!(!zh.is_ascii(), "{}: the Chinese is {zh:?}", m.key());
        }
        assert!(Msg::ALL.len() > 100, "{}", Msg::ALL.len());
    }

    #[test]
    fn every_key_the_rules_form_offers_has_chinese_words() {
        for kind in crate::rules::RuleKind::ALL {
            let keys = crate::config::docs::rule_keys(kind.name());
            assert!(keys.len() > 8, "{kind:?}: {} keys", keys.len());
            for k in keys.iter().filter(|k| !k.scalar.is_empty() && k.key != "id") {
                let (label, meaning) =
                    param_zh(kind, &k.key).unwrap_or_else(|| panic!("{kind:?}.{}: no Chinese", k.key));
                assert!(!label.is_ascii() && !meaning.is_ascii(), "{kind:?}.{}", k.key);
            }
        }
    }

    #[test]
    fn every_access_log_action_is_offered_once() {
        // the action names the schema lists (plain values under `enum`, documented ones as `const`)
        fn names(v: &serde_json::Value, out: &mut std::collections::HashSet<String>) {
            match v {
                serde_json::Value::Object(o) => {
                    for (k, x) in o {
                        match (k.as_str(), x) {
                            ("enum", serde_json::Value::Array(a)) => {
                                out.extend(a.iter().filter_map(|s| s.as_str().map(str::to_string)))
                            }
                            ("const", serde_json::Value::String(c)) => {
                                out.insert(c.clone());
                            }
                            _ => names(x, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| names(x, out)),
                _ => {}
            }
        }
        let mut all = std::collections::HashSet::new();
        names(schemars::schema_for!(crate::audit_log::Action).as_value(), &mut all);
        let n = all.len();
        assert!(n >= 14, "{all:?}");
        let names: std::collections::HashSet<String> =
            ACTIONS.iter().map(|a| serde_json::to_string(a).unwrap()).collect();
        assert_eq!((ACTIONS.len(), names.len()), (n, n), "ACTIONS lists each of the {n} actions once");
    }

    #[test]
    fn recorded_reasons_read_in_chinese() {
        let zh = |s: &str| Lang::Zh.recorded(s);
        assert_eq!(zh("no legal review on record"), "无法制审核记录");
        assert_eq!(
            zh("within 30 days of the public notice of 2026-12-01 (enforcement from 2026-12-31)"),
            "公告未满 30 天（公告 2026-12-01，执法始于 2026-12-31）"
        );
        assert_eq!(zh("stream gap of 1.50 s at 2026-12-07T01:02:03Z"), "画面中断 1.50 秒，于 2026-12-07T01:02:03Z");
        assert_eq!(zh("covered active at the violation"), "镜头遮挡（违法时存在）");
        assert_eq!(zh("decoded video has a hole of 0.40 s (frames did not decode)"), "解码缺口 0.40 秒");
        // English stays as recorded; an unknown reason is shown as written
        assert_eq!(Lang::En.recorded("no public notice on record"), "no public notice on record");
        assert_eq!(zh("something new"), "something new");
    }
}
