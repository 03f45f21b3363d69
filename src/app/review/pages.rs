//! The review pages, rendered on the server (maud): login, the queue with its filters, an item
//! with its clip, snapshots, facts, verification badge, decision form, history and access log,
//! and the access log for auditors. Chinese by default, English by `?lang=en`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use crate::app::App;
use crate::app::auth::{
    Auditors, Caller, Page, Readers, Reviewers, authenticate, check_csrf, clear_cookie, session_cookie,
};
use crate::app::i18n::{Lang, Msg, action_msg, kind_msg, location_msg, outcome_msg, tier_msg};
use crate::app::page::{LangQuery, error_page, lang_of, local, opt, page, select};
use crate::audit_log::{Action, Outcome};
use crate::config::StatusKind;
use crate::evidence::review::{Checks, Decision, Refusal, Rejection, Status};
use crate::review::access;
use crate::review::accounts::Role;
use crate::review::decide::{DecideError, DecisionRequest, decide};
use crate::review::items::{self, Filter, ItemView, check_filter, load, valid_id};

/// A review status in words.
fn status_msg(s: Status) -> Msg {
    match s {
        Status::Pending => Msg::pending,
        Status::OneApproval => Msg::one_approval,
        Status::Approved => Msg::approved,
        Status::Rejected => Msg::rejected,
        Status::Reminder => Msg::reminder,
    }
}

fn status_badge(lang: Lang, s: Status) -> Markup {
    html! { span class={ "badge st-" (s.name()) } data-status=(s.name()) { (lang.t(status_msg(s))) } }
}

/// `/`: the ops console for the ops role, the queue for everyone else.
pub async fn home(State(svc): State<Arc<App>>, h: HeaderMap) -> Response {
    match authenticate(&svc, &h).await {
        Ok(Some(a)) if a.user.role == Role::Ops => Redirect::to("/ops").into_response(),
        _ => Redirect::to("/queue").into_response(),
    }
}

pub async fn login_page(q: Query<LangQuery>, h: HeaderMap) -> Response {
    let lang = lang_of(&h, q.lang.as_deref());
    login_markup(lang, None)
}

/// The pre-session token's cookie: the login form carries the same value, which a page on
/// another site can neither read nor set (login CSRF).
const LOGIN_COOKIE: &str = "vigil_login";

fn login_markup(lang: Lang, err: Option<&str>) -> Response {
    let pre = crate::review::session::random_token();
    let mut r = login_form_markup(lang, err, &pre);
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&crate::util::http::set_cookie(LOGIN_COOKIE, &pre, "/login", 3600, false, true))
            .expect("cookie"),
    );
    r
}

fn login_form_markup(lang: Lang, err: Option<&str>, pre: &str) -> Response {
    page(
        lang,
        lang.t(Msg::login),
        None,
        "/login",
        html! {
            h2 { (lang.t(Msg::login)) }
            @if let Some(e) = err { p #login-error .err { (e) } }
            form #login method="post" action="/login" {
                input type="hidden" name="pre" value=(pre);
                p { label { (lang.t(Msg::user)) br; input name="user" autocomplete="username" required autofocus; } }
                p { label { (lang.t(Msg::password)) br; input name="password" type="password" autocomplete="current-password" required; } }
                button type="submit" { (lang.t(Msg::login)) }
            }
        },
    )
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    pre: String,
}

pub async fn login_form(
    State(svc): State<Arc<App>>,
    caller: Caller,
    h: HeaderMap,
    f: axum::Form<LoginForm>,
) -> Response {
    let lang = lang_of(&h, None);
    let cookie = crate::app::auth::cookie(&h, LOGIN_COOKIE).unwrap_or_default();
    if cookie.is_empty() || !crate::app::auth::constant_eq(cookie.as_bytes(), f.pre.as_bytes()) {
        let mut r = login_markup(lang, Some(lang.t(Msg::login_expired)));
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    match super::api::try_login(&svc, &f.user, &f.password, &caller.0).await {
        Ok(super::api::LoginOutcome::Ok(token, _)) => {
            let mut r = Redirect::to("/").into_response();
            let c = session_cookie(&token, svc.pipeline.settings.review.session_hours, svc.tls);
            r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&c).expect("cookie"));
            r
        }
        Ok(super::api::LoginOutcome::Wrong) => {
            let mut r = login_markup(lang, Some(lang.t(Msg::login_failed)));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
        Ok(super::api::LoginOutcome::Limited) => {
            let mut r = login_markup(lang, Some(lang.t(Msg::too_many)));
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            r
        }
        Err(e) => e.into_response(),
    }
}

/// Logout from the page: the form is same-origin only (SameSite=Strict cookie, form-action
/// 'self'), and ends the session.
pub async fn logout_form(State(svc): State<Arc<App>>, caller: Caller, h: HeaderMap) -> Response {
    if let Ok(Some(a)) = authenticate(&svc, &h).await {
        let _ = svc.sessions.end(&a.token).await;
        svc.record(access(&a.user, Action::Logout, Outcome::Ok, None, "", &caller.0)).await;
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear_cookie(svc.tls)).expect("cookie"));
    r
}

/// The queue's filters: camera, rule, risk tier, severity, kind, admissibility, status, time,
/// "waiting for me"; the choices from the site's cameras and rules.
fn queue_filters(svc: &App, lang: Lang, f: &Filter) -> Markup {
    let cams: Vec<(String, String)> = svc.pipeline.cameras.iter().map(|c| (c.id.clone(), c.id.clone())).collect();
    let mut cam_choices: Vec<(&str, &str)> = vec![("", lang.t(Msg::any))];
    cam_choices.extend(cams.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    let rules: Vec<String> = {
        let mut v: Vec<String> =
            svc.pipeline.cameras.iter().flat_map(|c| c.rules.configs().iter().map(|r| r.id().to_string())).collect();
        v.sort();
        v.dedup();
        v
    };
    let mut rule_choices: Vec<(&str, &str)> = vec![("", lang.t(Msg::any))];
    rule_choices.extend(rules.iter().map(|r| (r.as_str(), r.as_str())));
    // the severities the site's rules write
    let severities: Vec<(String, String)> = {
        let mut v: Vec<String> = svc
            .pipeline
            .cameras
            .iter()
            .flat_map(|c| c.rules.configs().iter().map(|r| r.severity().to_string()))
            .collect();
        v.sort();
        v.dedup();
        v.into_iter().map(|s| (lang.severity(&s), s)).collect()
    };
    let mut severity_choices: Vec<(&str, &str)> = vec![("", lang.t(Msg::any))];
    severity_choices.extend(severities.iter().map(|(t, v)| (v.as_str(), t.as_str())));
    let mut tier_choices: Vec<(&str, &str)> = vec![("", lang.t(Msg::any))];
    tier_choices.extend(crate::rules::RiskTier::ALL.iter().map(|t| (t.name(), lang.t(tier_msg(*t)))));
    html! {
        form.filters #filters method="get" action="/queue" {
            label { (lang.t(Msg::site)) input name="site" value=(opt(&f.site)) placeholder=(svc.site()) size="12"; }
            label { (lang.t(Msg::camera)) (select("camera", opt(&f.camera), &cam_choices)) }
            label { (lang.t(Msg::rule)) (select("rule", opt(&f.rule), &rule_choices)) }
            label { (lang.t(Msg::risk_tier)) (select("tier", opt(&f.tier), &tier_choices)) }
            label { (lang.t(Msg::severity)) (select("severity", opt(&f.severity), &severity_choices)) }
            label { (lang.t(Msg::kind)) (select("kind", opt(&f.kind), &[("", lang.t(Msg::any)), ("enforcement", lang.t(Msg::enforcement)), ("advisory", lang.t(Msg::advisory))])) }
            label { (lang.t(Msg::admissible)) (select("admissible", opt(&f.admissible), &[("", lang.t(Msg::any)), ("true", lang.t(Msg::yes)), ("false", lang.t(Msg::no))])) }
            label { (lang.t(Msg::review_status)) (select("status", opt(&f.status), &[("", lang.t(Msg::any)), ("pending", lang.t(Msg::pending)), ("one_approval", lang.t(Msg::one_approval)), ("approved", lang.t(Msg::approved)), ("rejected", lang.t(Msg::rejected)), ("reminder", lang.t(Msg::reminder))])) }
            label { (lang.t(Msg::from)) input type="datetime-local" name="from" value=(opt(&f.from)); }
            label { (lang.t(Msg::to)) input type="datetime-local" name="to" value=(opt(&f.to)); }
            label { (lang.t(Msg::mine)) input type="checkbox" name="mine" value="1" checked[f.mine.as_deref() == Some("1")]; }
            button type="submit" { (lang.t(Msg::filter)) }
        }
    }
}

pub async fn queue_page(svc: Arc<App>, a: Page<Readers>, f: Filter, client_addr: String) -> Response {
    let lang = a.lang;
    if let Err(e) = check_filter(&f, svc.pipeline.utc_offset_s) {
        return error_page(lang, Some(&a.user), StatusCode::BAD_REQUEST, &e);
    }
    let (rows, total) = match items::queue(&svc, &a.user, &f).await {
        Ok(x) => x,
        Err(e) => return crate::app::auth::ApiError::internal(e).into_response(),
    };
    // the thumbnails this page shows are read in this entry (not one entry per picture)
    let thumbs: Vec<&str> = rows
        .iter()
        .filter(|r| super::files::due(&svc, &a.token, &r.id, super::files::THUMB))
        .map(|r| r.id.as_str())
        .collect();
    let detail = if thumbs.is_empty() {
        String::new()
    } else {
        format!("{} of {} item(s): {}", super::files::THUMB, thumbs.len(), thumbs.join(" "))
    };
    svc.record(access(&a.user, Action::QueueViewed, Outcome::Ok, None, &detail, &client_addr)).await;
    // repeats of one object on this page (same camera, rule and place): the group's size
    let groups = items::repeats(&rows);
    let size_of = |g: usize| groups.iter().filter(|x| **x == Some(g)).count();
    let page_no = f.page.unwrap_or(1).max(1);
    let size = svc.pipeline.settings.review.page_size;
    let pages = total.div_ceil(size).max(1);
    let qs = |p: usize| {
        let mut s = format!("?page={p}");
        for (k, v) in [
            ("site", &f.site),
            ("camera", &f.camera),
            ("rule", &f.rule),
            ("kind", &f.kind),
            ("admissible", &f.admissible),
            ("status", &f.status),
            ("from", &f.from),
            ("to", &f.to),
            ("mine", &f.mine),
            ("severity", &f.severity),
            ("tier", &f.tier),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                s += &format!("&{k}={}", url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>());
            }
        }
        s
    };
    let here = format!("/queue{}", qs(page_no));
    let body = html! {
        h2 { (lang.t(Msg::queue)) " (" (total) ")" }
        (queue_filters(&svc, lang, &f))
        @if rows.is_empty() {
            p #empty { (lang.t(Msg::no_items)) }
        } @else {
            table #queue {
                thead { tr { th { (lang.t(Msg::snapshot)) } th { (lang.t(Msg::time)) } th { (lang.t(Msg::camera)) } th { (lang.t(Msg::location)) } th { (lang.t(Msg::rule)) } th { (lang.t(Msg::kind)) } th { (lang.t(Msg::admissible)) } th { (lang.t(Msg::risk_tier)) } th { (lang.t(Msg::review_status)) } th { (lang.t(Msg::decided_by)) } } }
                tbody {
                    @for (i, r) in rows.iter().enumerate() {
                        @let n = groups[i].map(size_of).unwrap_or(1);
                        @let first = groups[i].is_none_or(|g| g == i);
                        tr.row.repeat[!first] data-href={ "/evidence/" (r.id) } data-id=(r.id) data-group=[groups[i].map(|g| rows[g].id.clone())] {
                            td.thumb { img.thumb loading="lazy" alt="" width="96" src={ "/evidence/" (r.id) "/thumb.jpg" }; }
                            td { a href={ "/evidence/" (r.id) } { (local(&svc, &r.violation_time_utc)) }
                                @if n > 1 {
                                    br; span.badge.group { @if first { (lang.t(Msg::same_object)) " ×" (n) } @else { "↳ " (lang.t(Msg::repeat_of_object)) } }
                                } }
                            td.d { (r.camera) }
                            td.d { (r.camera_location) }
                            td.d { (r.rule) }
                            td { (lang.t(if r.kind == "advisory" { Msg::advisory } else { Msg::enforcement })) }
                            td { (lang.t(if r.admissible { Msg::yes } else { Msg::no })) }
                            td { @match r.tier {
                                Some(t) => { span class={ "badge tier t-" (t.name()) } data-tier=(t.name()) { (lang.t(tier_msg(t))) } }
                                None => { "–" }
                            } " " span.muted { (lang.severity(&r.severity)) } }
                            td { (status_badge(lang, r.review.status)) @if !r.signature_ok { " " span.err { "⚠" } }
                                @if !r.complete { " " span.badge.incomplete title=(lang.t(Msg::incomplete)) { (lang.t(Msg::incomplete)) } } }
                            td.d { (r.review.decided_by.join(", ")) }
                        }
                    }
                }
            }
            p {
                @if page_no > 1 { a href={ "/queue" (qs(page_no - 1)) } { (lang.t(Msg::prev)) } " " }
                (lang.t(Msg::page)) " " (page_no) " / " (pages)
                @if page_no < pages { " " a href={ "/queue" (qs(page_no + 1)) } { (lang.t(Msg::next)) } }
            }
        }
        p.muted { (lang.t(Msg::keys)) }
    };
    page(lang, lang.t(Msg::queue), Some(&a.user), &here, body)
}

pub async fn queue(
    State(svc): State<Arc<App>>,
    a: Page<Readers>,
    caller: Caller,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match q {
        Ok(Query(f)) => queue_page(svc, a, f, caller.0.clone()).await,
        Err(e) => (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    }
}

/// One way the clip falls short, in `lang`.
fn shortfall_text(lang: Lang, f: &crate::evidence::manifest::Shortfall) -> String {
    use crate::evidence::manifest::Shortfall;
    match *f {
        Shortfall::PreRoll { had_s, want_s } => {
            format!("{}: {had_s:.1} s ({} {want_s:.1} s)", lang.t(Msg::pre_roll_short), lang.t(Msg::of_configured))
        }
        Shortfall::PostRoll { had_s, want_s } => {
            format!("{}: {had_s:.1} s ({} {want_s:.1} s)", lang.t(Msg::post_roll_short), lang.t(Msg::of_configured))
        }
        Shortfall::Gaps { count, total_s } => format!("{}: {count} × {total_s:.2} s", lang.t(Msg::video_gaps)),
    }
}

fn facts(svc: &App, lang: Lang, v: &ItemView) -> Markup {
    let m = &v.manifest;
    let reg = &m.camera_registry;
    let date = |d: &Option<chrono::NaiveDate>| d.map(|d| d.to_string()).unwrap_or_else(|| "—".into());
    let shortfalls = m.shortfalls();
    html! {
        table #facts {
            tr { th { (lang.t(Msg::site)) } td { span.d { (m.site) } " " span.d { (m.site_name) } } }
            tr { th { (lang.t(Msg::camera)) } td.d { (m.camera) } }
            tr { th { (lang.t(Msg::location)) } td { span.d { (m.camera_location) } " (" (lang.t(location_msg(reg.location_category))) ")" } }
            tr { th { (lang.t(Msg::registry)) } td { (lang.t(Msg::reg_legal)) " " (date(&reg.legal_review_date)) "，" (lang.t(Msg::reg_technical)) " " (date(&reg.technical_review_date)) "，" (lang.t(Msg::reg_installation)) " " span.d { (reg.installation_ref.as_deref().unwrap_or("—")) } "，" (lang.t(Msg::reg_notice)) " " (date(&reg.public_notice_date)) } }
            tr { th { (lang.t(Msg::local_time)) } td #time-local { (local(svc, &m.violation_time_utc)) } }
            tr { th { (lang.t(Msg::utc_time)) } td #time-utc { (m.violation_time_utc) } }
            tr { th { (lang.t(Msg::rule)) } td { (lang.t(kind_msg(m.rule.kind))) " " code { (m.rule.id) } } }
            tr { th { (lang.t(Msg::threshold)) } td { (m.rule.params.get("threshold").map(|t| t.to_string()).unwrap_or_default()) } }
            tr { th { (lang.t(Msg::revision)) } td { code { (m.rule.revision) } } }
            @if let Some(b) = &m.rule.legal_basis { tr { th { (lang.t(Msg::legal_basis)) } td { (b) } } }
            tr { th { (lang.t(Msg::severity)) } td { (lang.severity(&m.rule.severity)) } }
            tr { th { (lang.t(Msg::risk_tier)) } td #tier { (m.rule.tier.map(|t| lang.t(tier_msg(t))).unwrap_or("–")) } }
            tr { th { (lang.t(Msg::repeat)) } td { (m.repeat_count_30d) } }
            tr { th { (lang.t(Msg::kind)) } td #kind { (lang.t(match m.status.kind { StatusKind::Enforcement => Msg::enforcement, StatusKind::Advisory => Msg::advisory })) @for r in &m.status.reasons { br; span.muted.d { (lang.recorded(r)) } } } }
            tr { th { (lang.t(Msg::admissible)) } td #admissible { (lang.t(if m.admissibility.admissible { Msg::yes } else { Msg::no })) @for r in &m.admissibility.reasons { br; span.muted.d { (lang.recorded(r)) } } } }
            tr { th { (lang.t(Msg::clip_length)) } td #clip-length {
                (format!("{:.1} s", m.clip.duration_s)) " · " (lang.t(Msg::pre_roll)) " " (format!("{:.1}", m.clip.pre_roll_s)) " s · "
                (lang.t(Msg::post_roll)) " " (format!("{:.1}", m.clip.post_roll_s)) " s" } }
            tr { th { (lang.t(Msg::completeness)) } td #completeness data-complete=(shortfalls.is_empty()) {
                @if shortfalls.is_empty() { (lang.t(Msg::complete)) }
                @else { span.err { (lang.t(Msg::incomplete)) } @for f in &shortfalls { br; span { (shortfall_text(lang, f)) } } } } }
            tr { th { (lang.t(Msg::mask_applied)) } td #mask-applied {
                @match &m.privacy_mask {
                    Some(mk) => { code { (mk.id) } " · " (mk.polygons) " " (lang.t(Msg::polygons)) " · " code.muted { "sha256 " (&mk.sha256[..16.min(mk.sha256.len())]) } }
                    None => { (lang.t(Msg::no_mask_configured)) }
                } } }
            tr { th { (lang.t(Msg::health)) } td { @if m.health.normal { (lang.t(Msg::health_normal)) } @else { @for (t, e) in &m.health.events { (local(svc, t)) ": " span.d { (lang.recorded(e)) } br; } @for (t, s) in &m.health.gaps { (local(svc, t)) ": " (lang.t(Msg::gap)) " " (format!("{s:.2}")) " " (lang.t(Msg::seconds)) br; } } } }
            tr { th { (lang.t(Msg::models)) } td { @for md in &m.models { code { (md.id) } " " code.muted { (&md.sha256[..16.min(md.sha256.len())]) } br; } } }
            tr { th { (lang.t(Msg::detections)) } td { @for d in &m.detections { code { (d.label) } " #" (d.track_id) " " (lang.t(Msg::score)) " " (format!("{:.2}", d.score)) @if let Some(p) = d.no_mask_prob { " " (lang.t(Msg::no_mask_prob)) " " (format!("{p:.2}")) } @if let Some(s) = d.dwell_s { " " (lang.t(Msg::dwell)) " " (format!("{s:.0}")) " " (lang.t(Msg::seconds)) } @if d.trigger { " ◀" } br; } } }
            tr { th { "ID" } td { code { (m.evidence_id) } } }
        }
    }
}

pub async fn item(State(svc): State<Arc<App>>, Path(id): Path<String>, a: Page<Readers>, caller: Caller) -> Response {
    item_page(&svc, &a.auth, a.lang, &caller, &id, None).await
}

/// What an officer entered in a decision the service refused: the page comes back with it, and
/// why, beside the form.
pub struct Entered {
    pub checks: Checks,
    pub reason: String,
    pub rejection: Option<Rejection>,
    pub corrects: Option<String>,
    pub error: String,
}

/// The item page; with `entered`, the refused decision's form as the officer left it and the
/// reason beside it (answered with `code`).
async fn item_page(
    svc: &Arc<App>,
    a: &crate::app::auth::Authed,
    lang: Lang,
    caller: &Caller,
    id: &str,
    entered: Option<(&Entered, StatusCode)>,
) -> Response {
    let id = id.to_string();
    if !valid_id(&id) {
        return error_page(lang, Some(&a.user), StatusCode::NOT_FOUND, lang.t(Msg::no_such_item));
    }
    let v = match load(svc, &id).await {
        Ok(Some(v)) => v,
        Ok(None) => return error_page(lang, Some(&a.user), StatusCode::NOT_FOUND, lang.t(Msg::no_such_item)),
        Err(e) => return crate::app::auth::ApiError::internal(e).into_response(),
    };
    if entered.is_none() {
        svc.record(access(&a.user, Action::ItemViewed, Outcome::Ok, Some(&id), "", &caller.0)).await;
    }
    let kept = entered.map(|e| e.0);
    let reason = kept.map(|e| e.reason.as_str()).unwrap_or("");
    // the item's own entries (its index in the log), never the whole log
    let item_log =
        crate::audit_log::for_item(&svc.store, &svc.signer.public_key(), svc.site(), &id, 50).await.unwrap_or_default();
    let reviewer = a.user.role == Role::Reviewer;
    let me = crate::util::text::normalize_id(&a.user.officer_id);
    let mine_decided = v.records.iter().any(|r| r.officer.key() == me);
    let can_approve = v.verification.ok && v.manifest.admissibility.admissible && !v.advisory();
    let can_remind = v.advisory() || v.first_minor();
    let body = html! {
        p { a href="/queue" { "← " (lang.t(Msg::back)) } }
        h2 { (local(svc, &v.manifest.violation_time_utc)) " · " span.d { (v.manifest.camera) } " · " (lang.t(kind_msg(v.manifest.rule.kind))) " " (status_badge(lang, v.status)) }
        @if v.verification.ok {
            div #verification .verified data-ok="true" { "✔ " (lang.t(Msg::verified)) " · " (lang.t(Msg::chain_pos)) " " (v.verification.chain_seq) " · " (lang.t(Msg::key_id)) " " code { (v.verification.key_id) } " · " (lang.t(Msg::checked_at)) " " (local(svc, &v.verification.checked_utc)) }
        } @else {
            div #verification .failed data-ok="false" { "✘ " (lang.t(Msg::not_verified)) ul { @for p in &v.verification.problems { li.d { (p) } } } }
        }
        div.cols {
            div {
                section {
                    h3 { (lang.t(Msg::clip)) }
                    video #clip controls preload="metadata" src={ "/evidence/" (id) "/file/clip.mp4" }
                        data-played={ "/evidence/" (id) "/played" } data-csrf=(a.session.csrf) {}
                }
                section {
                    h3 { (lang.t(Msg::snapshot)) " / " (lang.t(Msg::annotated)) }
                    img.shot #snapshot src={ "/evidence/" (id) "/file/snapshot.jpg" } alt=(lang.t(Msg::snapshot));
                    img.shot #annotated src={ "/evidence/" (id) "/file/snapshot-annotated.jpg" } alt=(lang.t(Msg::annotated));
                }
            }
            div {
                section {
                    h3 { (lang.t(Msg::decision)) }
                    @if v.status.is_final() {
                        p #final { (lang.t(Msg::decision_final)) ": " (status_badge(lang, v.status)) }
                        @if v.status == Status::Approved { p { a #package href={ "/evidence/" (id) "/package" } { (lang.t(Msg::package)) } } }
                    } @else if reviewer && !mine_decided {
                        form #decision .decide method="post" action={ "/evidence/" (id) "/decision" }
                            data-need-checks=(lang.t(Msg::need_checks)) data-need-reason=(lang.t(Msg::need_reason)) {
                            input type="hidden" name="csrf" value=(a.session.csrf);
                            @if let Some(e) = kept { p #decision-error .err role="alert" { (e.error) } }
                            (check_boxes(lang, kept))
                            (reason_fields(lang, kept, reason, 3))
                            p #decision-hint .err role="status" {}
                            p {
                                @if can_approve { button #approve type="submit" name="decision" value="approve" { (lang.t(Msg::approve)) } }
                                button #reject type="submit" name="decision" value="reject" { (lang.t(Msg::reject)) }
                                @if can_remind { button #remind type="submit" name="decision" value="reminder" { (lang.t(Msg::remind)) } }
                            }
                            @if !can_approve { p #no-approve .err { (lang.t(Msg::cannot_approve)) } }
                            p.muted { (lang.t(Msg::item_keys)) }
                        }
                    } @else if reviewer {
                        form #correction .decide method="post" action={ "/evidence/" (id) "/decision" } {
                            input type="hidden" name="csrf" value=(a.session.csrf);
                            @if let Some(e) = kept { p #decision-error .err role="alert" { (e.error) } }
                            p { label { (lang.t(Msg::corrects)) " " input name="corrects" size="3" value=(kept.and_then(|e| e.corrects.as_deref()).unwrap_or("")); } }
                            (reason_fields(lang, kept, reason, 2))
                            (check_boxes(lang, kept))
                            button type="submit" name="decision" value="reject" { (lang.t(Msg::reject)) }
                            @if can_approve { button type="submit" name="decision" value="approve" { (lang.t(Msg::approve)) } }
                        }
                    } @else {
                        p.muted { (lang.t(Msg::pending)) }
                    }
                }
                section { h3 { (lang.t(Msg::facts)) } (facts(svc, lang, &v)) }
                (history(svc, lang, &v.records))
                (access_section(svc, lang, &item_log))
            }
        }
    };
    let mut r = page(lang, &v.manifest.evidence_id, Some(&a.user), &format!("/evidence/{id}"), body);
    if let Some((_, code)) = entered {
        *r.status_mut() = code;
    }
    r
}

/// The four checks as boxes, ticked as the officer left them in a refused form.
fn check_boxes(lang: Lang, kept: Option<&Entered>) -> Markup {
    let was = |f: fn(&Checks) -> bool| kept.is_some_and(|e| f(&e.checks));
    html! {
        p {
            label { input type="checkbox" name="true" value="1" checked[was(|c| c.true_)]; (lang.t(Msg::check_true)) } " "
            label { input type="checkbox" name="clear" value="1" checked[was(|c| c.clear)]; (lang.t(Msg::check_clear)) } " "
            label { input type="checkbox" name="complete" value="1" checked[was(|c| c.complete)]; (lang.t(Msg::check_complete)) } " "
            label { input type="checkbox" name="accurate" value="1" checked[was(|c| c.accurate)]; (lang.t(Msg::check_accurate)) }
        }
    }
}

/// The reason and the kind of a rejection, as the officer left them in a refused form.
fn reason_fields(lang: Lang, kept: Option<&Entered>, reason: &str, rows: u32) -> Markup {
    let was = kept.and_then(|e| e.rejection);
    html! {
        p { label { (lang.t(Msg::reason)) br; textarea name="reason" rows=(rows) cols="40" maxlength="2000" { (reason) } } }
        p {
            label {
                (lang.t(Msg::rejection_kind)) " "
                select #rejection name="rejection" {
                    option value="" selected[was.is_none()] { (lang.t(Msg::rejection_unsaid)) }
                    @for r in Rejection::ALL {
                        option value=(r.name()) selected[was == Some(r)] { (lang.t(rejection_msg(r))) }
                    }
                }
            }
        }
    }
}

pub fn rejection_msg(r: Rejection) -> Msg {
    match r {
        Rejection::FalseAlarm => Msg::rejection_false_alarm,
        Rejection::Unclear => Msg::rejection_unclear,
        Rejection::Duplicate => Msg::rejection_duplicate,
        Rejection::Other => Msg::rejection_other,
    }
}

/// The item's decisions so far.
fn history(svc: &App, lang: Lang, records: &[crate::evidence::review::ReviewRecord]) -> Markup {
    html! {
        section {
            h3 { (lang.t(Msg::history)) }
            @if records.is_empty() { p #no-decisions { (lang.t(Msg::no_decisions)) } }
            @else {
                table #history {
                    thead { tr { th { "#" } th { (lang.t(Msg::time)) } th { (lang.t(Msg::officer)) } th { (lang.t(Msg::decision)) } th { "4" } th { (lang.t(Msg::why)) } } }
                    tbody {
                        @for r in records {
                            tr.decision data-decision=(serde_json::to_string(&r.decision).unwrap_or_default().trim_matches('"')) {
                                td { (r.n) @if let Some(c) = r.corrects { " (→" (c) ")" } }
                                td { (local(svc, &r.time_utc)) }
                                td.d { (r.officer.user) " · " (r.officer.officer_id) }
                                td { (lang.t(match r.decision { Decision::Approve => Msg::approve, Decision::Reject => Msg::reject, Decision::Reminder => Msg::remind })) }
                                td { (checks_text(r.checks)) }
                                td.d { @if let Some(k) = r.rejection { span.tag data-rejection=(k.name()) { (lang.t(rejection_msg(k))) } " " } (r.reason) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The item's own access-log entries.
fn access_section(svc: &App, lang: Lang, item_log: &[crate::audit_log::AccessEntry]) -> Markup {
    html! {
        section {
            h3 { (lang.t(Msg::access_log)) }
            table #item-log {
                thead { tr { th { (lang.t(Msg::time)) } th { (lang.t(Msg::user)) } th { (lang.t(Msg::action)) } th { (lang.t(Msg::detail)) } } }
                tbody {
                    @for e in item_log {
                        tr { td { (local(svc, &e.time_utc)) } td.d { (e.user) } td { (lang.t(action_msg(e.action))) } td.d { (e.detail) } }
                    }
                }
            }
        }
    }
}

fn checks_text(c: Checks) -> String {
    [(c.true_, "真"), (c.clear, "清"), (c.complete, "完"), (c.accurate, "准")]
        .iter()
        .map(|(on, l)| if *on { l.to_string() } else { "·".into() })
        .collect()
}

#[derive(serde::Deserialize)]
pub struct DecisionForm {
    csrf: Option<String>,
    decision: Option<String>,
    #[serde(rename = "true")]
    true_: Option<String>,
    clear: Option<String>,
    complete: Option<String>,
    accurate: Option<String>,
    reason: Option<String>,
    rejection: Option<String>,
    corrects: Option<String>,
}

pub async fn decision_form(
    State(svc): State<Arc<App>>,
    Path(id): Path<String>,
    a: Page<Reviewers>,
    caller: Caller,
    f: axum::Form<DecisionForm>,
) -> Response {
    let lang = a.lang;
    if let Err(e) = check_csrf(&a, f.csrf.as_deref()) {
        return e.into_response();
    }
    let decision = match f.decision.as_deref() {
        Some("approve") => Decision::Approve,
        Some("reject") => Decision::Reject,
        Some("reminder") => Decision::Reminder,
        _ => return error_page(lang, Some(&a.user), StatusCode::BAD_REQUEST, lang.t(Msg::no_decision)),
    };
    let corrects = match f.corrects.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.parse() {
            Ok(n) => Some(n),
            Err(_) => return error_page(lang, Some(&a.user), StatusCode::BAD_REQUEST, lang.t(Msg::corrects_number)),
        },
    };
    let rejection = match f.rejection.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match Rejection::parse(s) {
            Some(r) => Some(r),
            None => return error_page(lang, Some(&a.user), StatusCode::BAD_REQUEST, lang.t(Msg::bad_rejection)),
        },
    };
    // a kind chosen for a rejection is no error on an approval: the select keeps its value
    let rejection = rejection.filter(|_| decision == Decision::Reject);
    let on = |v: &Option<String>| v.is_some();
    let req = DecisionRequest {
        decision,
        checks: Checks {
            true_: on(&f.true_),
            clear: on(&f.clear),
            complete: on(&f.complete),
            accurate: on(&f.accurate),
        },
        reason: f.reason.clone().unwrap_or_default(),
        rejection,
        corrects,
    };
    match decide(&svc, &a.user, &id, &req, &caller.0).await {
        Ok(_) => Redirect::to(&format!("/evidence/{id}")).into_response(),
        Err(DecideError::NotFound) => error_page(lang, Some(&a.user), StatusCode::NOT_FOUND, lang.t(Msg::no_such_item)),
        Err(DecideError::Refused(r)) => {
            let code = match r {
                Refusal::Conflict(_) => StatusCode::CONFLICT,
                Refusal::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
            };
            // the page again, the form as the officer left it, why beside it
            let entered = Entered {
                checks: req.checks,
                reason: req.reason.clone(),
                rejection: req.rejection,
                corrects: f.corrects.clone(),
                // the two refusals an officer meets most, in the page's language
                error: match req.decision {
                    Decision::Approve if matches!(r, Refusal::Invalid(_)) && !req.checks.all() => {
                        lang.t(Msg::need_checks).to_string()
                    }
                    Decision::Reject if req.reason.trim().is_empty() => lang.t(Msg::need_reason).to_string(),
                    _ => r.to_string(),
                },
            };
            item_page(&svc, &a.auth, lang, &caller, &id, Some((&entered, code))).await
        }
        Err(DecideError::Failed(e)) => crate::app::auth::ApiError::internal(e).into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct AuditQuery {
    pub lang: Option<String>,
    pub page: Option<usize>,
    /// Only entries of this action (`login`, `decision`, ...).
    pub action: Option<String>,
    /// Only entries of this account.
    pub user: Option<String>,
    /// Only entries about this evidence item.
    pub evidence: Option<String>,
}

/// Entries of the access log per page.
const AUDIT_PAGE: usize = 100;

pub async fn audit(State(svc): State<Arc<App>>, a: Page<Auditors>, q: Query<AuditQuery>, caller: Caller) -> Response {
    let lang = a.lang;
    let page_no = q.page.unwrap_or(1).max(1);
    let want = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let (action, user, evidence) = (want(&q.action), want(&q.user), want(&q.evidence));
    let keep = |e: &crate::audit_log::AccessEntry| {
        action.as_deref().is_none_or(|x| serde_json::to_value(e.action).is_ok_and(|v| v == x))
            && user.as_deref().is_none_or(|u| e.user == u)
            && evidence.as_deref().is_none_or(|id| e.evidence_id.as_deref() == Some(id))
    };
    let (entries, total, problems) =
        match crate::audit_log::read_page(&svc.store, &svc.signer.public_key(), svc.site(), page_no, AUDIT_PAGE, keep)
            .await
        {
            Ok(x) => x,
            Err(e) => return crate::app::auth::ApiError::internal(e).into_response(),
        };
    svc.record(access(&a.user, Action::AuditViewed, Outcome::Ok, None, "", &caller.0)).await;
    let filtered = action.is_some() || user.is_some() || evidence.is_some();
    let qs = |p: usize| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.append_pair("page", &p.to_string());
        for (k, v) in [("action", &action), ("user", &user), ("evidence", &evidence)] {
            if let Some(v) = v {
                s.append_pair(k, v);
            }
        }
        s.finish()
    };
    let names: Vec<(String, &str)> = crate::app::i18n::ACTIONS
        .iter()
        .map(|&x| {
            (
                serde_json::to_value(x).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                lang.t(action_msg(x)),
            )
        })
        .collect();
    let mut action_choices: Vec<(&str, &str)> = vec![("", lang.t(Msg::any))];
    action_choices.extend(names.iter().map(|(v, t)| (v.as_str(), *t)));
    let body = html! {
        h2 { (lang.t(Msg::audit)) " (" (total) ")" }
        form.filters #audit-filters method="get" action="/audit" {
            label { (lang.t(Msg::action)) (select("action", action.as_deref().unwrap_or(""), &action_choices)) }
            label { (lang.t(Msg::user)) input name="user" value=(user.as_deref().unwrap_or("")) size="12"; }
            label { "ID" input name="evidence" value=(evidence.as_deref().unwrap_or("")) size="26"; }
            button type="submit" { (lang.t(Msg::filter)) }
        }
        @for p in &problems { p.err { (p) } }
        div.scroll {
            table #audit {
                thead { tr { th { "#" } th { (lang.t(Msg::time)) } th { (lang.t(Msg::user)) } th { (lang.t(Msg::officer)) } th { (lang.t(Msg::action)) } th { (lang.t(Msg::outcome)) } th { "ID" } th { (lang.t(Msg::detail)) } th { (lang.t(Msg::client)) } } }
                tbody {
                    @for e in &entries {
                        tr.entry data-action=(serde_json::to_string(&e.action).unwrap_or_default().trim_matches('"')) {
                            td { (e.seq) } td { (local(&svc, &e.time_utc)) } td.d { (e.user) } td.d { (e.officer_id) }
                            td { (lang.t(action_msg(e.action))) @if let Some(n) = e.count { " ×" (n) } }
                            td { (lang.t(outcome_msg(e.outcome))) }
                            td { @if let Some(id) = &e.evidence_id { a.d href={ "/evidence/" (id) } { (id) } } }
                            td.d { (e.detail) } td.d { (e.client) }
                        }
                    }
                }
            }
        }
        p #audit-pages {
            @if page_no > 1 { a #prev href={ "/audit?" (qs(page_no - 1)) } { (lang.t(Msg::prev)) } " " }
            (lang.t(Msg::page)) " " (page_no) @if !filtered { " / " (total.div_ceil(AUDIT_PAGE).max(1)) }
            @if entries.len() == AUDIT_PAGE { " " a #next href={ "/audit?" (qs(page_no + 1)) } { (lang.t(Msg::next)) } }
        }
    };
    page(lang, lang.t(Msg::audit), Some(&a.user), "/audit", body)
}
