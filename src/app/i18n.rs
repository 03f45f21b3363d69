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
    ops_keys: "每秒自动刷新", "Refreshes every second";
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
}
