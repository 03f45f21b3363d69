//! The ops console (role `ops` only; every other role gets 403): the cameras overview at `/ops`,
//! a grid of recent masked pictures (one per camera, refreshed every 10 s) above one row per
//! camera with its live state from the workers' status reports ([`live`]), refreshed every second
//! from `/api/ops/cameras`; and the rules page at `/ops/rules`: a form per rule with each key's
//! name, meaning and range (from the configuration schema), its value in force and the proposed
//! one, changed through the same validated, audited KV path as `vigil thresholds set` with the
//! logged-in user as `by`; the eval report's curve beside a no-mask threshold with the operating
//! point marked; and the workers' audit trail of changes.

pub mod live;
pub mod masks;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::auth::{Api, ApiError, Authed, Caller, OpsRole, Page, check_csrf};
use super::i18n::Msg;
use super::page::{local, page};
use crate::app::App;
use crate::control::overrides::{self, Override};
use live::OpsCamera;

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "–".into())
}

/// `/ops`: the cameras overview.
pub async fn overview(State(svc): State<Arc<App>>, a: Page<OpsRole>) -> Response {
    let lang = a.lang;
    let rows = svc.live.cameras(&svc.pipeline, lang);
    let body = html! {
        h2 { (lang.t(Msg::cameras)) " · " span.d { (svc.site()) } }
        p.muted { (lang.t(Msg::ops_keys)) }
        // the camera grid: a recent masked picture per camera, so ops see at a glance that each
        // camera still looks where it should (refreshed by app.js; "no picture" when none comes)
        h3 { (lang.t(Msg::camera_grid)) }
        div #grid {
            @for c in &rows {
                figure.snap data-camera=(c.camera) data-state=(c.state.name()) data-none=(lang.t(Msg::no_picture)) {
                    img alt=(c.camera) src={ "/api/ops/snapshot/" (c.camera) "?grid=1" };
                    figcaption { span class={ "badge state s-" (c.state.name()) } { (c.state_text) } " " span.d { (c.camera) " · " (c.location) } }
                }
            }
        }
        table #ops data-lang=(lang.code()) {
            thead { tr {
                th { (lang.t(Msg::camera)) } th { (lang.t(Msg::location)) } th { (lang.t(Msg::state)) }
                th { (lang.t(Msg::conditions)) } th { (lang.t(Msg::analysed_fps)) } th { (lang.t(Msg::dropped_fps)) }
                th { (lang.t(Msg::inference_ms)) } th { (lang.t(Msg::last_violation)) } th { (lang.t(Msg::worker)) }
                th { (lang.t(Msg::enforcement_status)) } th { (lang.t(Msg::detail)) }
            } }
            tbody {
                @for c in &rows {
                    tr.cam data-camera=(c.camera) data-state=(c.state.name()) {
                        td.d { (c.camera) }
                        td.d { (c.location) }
                        td { span class={ "badge state s-" (c.state.name()) } { (c.state_text) } }
                        td.conditions { (c.conditions_text) }
                        td.analysed { (fmt(c.analysed_fps, 1)) }
                        td.dropped { (fmt(c.dropped_fps, 1)) }
                        td.inference { (fmt(c.inference_ms, 1)) }
                        td.last { (c.last_violation.as_deref().unwrap_or("–")) }
                        td.worker.d { (c.worker.as_deref().unwrap_or("–")) }
                        td { span class={ "badge st-" (c.status.name()) } { (lang.t(status_key(c.status))) }
                            @if !c.status_reasons.is_empty() { div.muted { (c.status_reasons.iter().map(|r| lang.recorded(r)).collect::<Vec<_>>().join("；")) } } }
                        td.detail { (c.detail) }
                    }
                }
            }
        }
    };
    page(lang, lang.t(Msg::cameras), Some(&a.user), "/ops", body)
}

fn status_key(s: crate::config::StatusKind) -> Msg {
    match s {
        crate::config::StatusKind::Enforcement => Msg::enforcement,
        crate::config::StatusKind::Advisory => Msg::advisory,
    }
}

/// `/api/ops/cameras`: the overview's rows as JSON.
pub async fn cameras(
    State(svc): State<Arc<App>>,
    _: Api<OpsRole>,
    headers: axum::http::HeaderMap,
) -> axum::Json<Vec<OpsCamera>> {
    axum::Json(svc.live.cameras(&svc.pipeline, crate::app::page::lang_of(&headers, None)))
}

/// A parameter value for the page: strings bare, long values cut.
fn short(v: &serde_json::Value) -> String {
    let t = match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    if t.chars().count() > 60 { format!("{}…", t.chars().take(60).collect::<String>()) } else { t }
}

/// A rule change's outcome as the workers' audit trail records it, in words.
fn outcome_text(lang: super::i18n::Lang, o: &str) -> String {
    match o {
        "applied" => lang.t(Msg::applied).into(),
        "rejected" => lang.t(Msg::refused).into(),
        "unmasked view served" => lang.t(Msg::act_unmasked_view).into(),
        o => o.into(),
    }
}

/// What a change changed: `threshold 0.8 → 0.85; min_hits 3 → 4`.
fn diff(lang: super::i18n::Lang, old: Option<&serde_json::Value>, new: Option<&serde_json::Value>) -> String {
    let empty = serde_json::Map::new();
    let o = old.and_then(|v| v.as_object()).unwrap_or(&empty);
    let n = new.and_then(|v| v.as_object()).unwrap_or(&empty);
    let parts: Vec<String> = n
        .iter()
        .filter(|(k, v)| o.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k} {} → {}", o.get(k).map(short).unwrap_or_else(|| "–".into()), short(v)))
        .collect();
    if parts.is_empty() { lang.t(Msg::no_change).into() } else { parts.join("; ") }
}

/// A rule as it runs now: the pipeline file's, with the KV override laid over it.
pub(super) struct RuleNow {
    pub camera: String,
    pub rule: crate::rules::RuleConfig,
    /// The KV override in force: (revision, who, when, reason).
    pub kv: Option<(u64, Override)>,
}

/// Why rules cannot be changed from the page.
pub(super) enum Problem {
    /// The service runs without NATS.
    NoNats,
    /// The KV cannot be read (the error).
    Kv(String),
}

impl Problem {
    fn text(&self, lang: super::i18n::Lang) -> String {
        match self {
            Problem::NoNats => lang.t(Msg::no_nats_rules).into(),
            Problem::Kv(e) => format!("{}: {e}", lang.t(Msg::overrides_unreadable)),
        }
    }
}

pub(super) async fn rules_now(svc: &App) -> (Vec<RuleNow>, Option<Problem>) {
    let p = &svc.pipeline;
    let mut kv: BTreeMap<String, (u64, serde_json::Value)> = BTreeMap::new();
    let mut problem = None;
    match &p.nats {
        Some(n) => match overrides::get(n, &p.settings.control.kv_bucket, svc.site(), None).await {
            Ok(v) => kv = v.into_iter().map(|(k, rev, val)| (k, (rev, val))).collect(),
            Err(e) => problem = Some(Problem::Kv(format!("NATS KV {}: {e:#}", p.settings.control.kv_bucket))),
        },
        None => problem = Some(Problem::NoNats),
    }
    let mut out = Vec::new();
    for cam in &p.camera_configs {
        for r in &cam.rules {
            let key = overrides::key(svc.site(), &cam.id, r.id());
            let o = kv.get(&key).and_then(|(rev, v)| {
                let o = Override::parse(v.to_string().as_bytes()).ok()?;
                Some((*rev, o))
            });
            let rule = o.as_ref().and_then(|(_, o)| overrides::overlay(r, &o.set).ok()).unwrap_or_else(|| r.clone());
            out.push(RuleNow { camera: cam.id.clone(), rule, kv: o });
        }
    }
    (out, problem)
}

/// (threshold, precision, recall) of an eval report's curve.
type CurvePoint = (f64, f64, f64);

/// The eval report's precision/recall curve for a no-mask rule (the head it runs), if a report
/// is there (`<data_dir>/eval/report.json`, written by `vigil eval`).
fn eval_curve(svc: &App) -> Option<(String, Vec<CurvePoint>)> {
    let path = svc.pipeline.data_dir.join("eval/report.json");
    let text = crate::util::fsx::read_text(&path, 16 << 20).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let name = match svc.pipeline.settings.models.head() {
        Some(h) => format!("fitted head {h}"),
        None => "plain pretrained".into(),
    };
    let pts = v["curves"][&name]
        .as_array()?
        .iter()
        .filter_map(|p| Some((p["threshold"].as_f64()?, p["precision"].as_f64()?, p["recall"].as_f64()?)))
        .collect::<Vec<_>>();
    (!pts.is_empty()).then_some((name, pts))
}

/// The curve drawn by the project's plot module (recall → x, precision → y), the operating point
/// of the current threshold marked on it and stated under it.
fn curve_figure(lang: super::i18n::Lang, name: &str, pts: &[CurvePoint], threshold: f64) -> maud::Markup {
    let at = pts.iter().min_by(|a, b| (a.0 - threshold).abs().total_cmp(&(b.0 - threshold).abs())).copied();
    let plot = crate::util::plot::Plot {
        x_label: lang.t(Msg::recall).into(),
        y_label: lang.t(Msg::precision).into(),
        x_range: (0.0, 1.0),
        y_range: (0.0, 1.0),
        series: vec![(name.to_string(), pts.iter().map(|&(_, p, r)| (r, p)).collect())],
        marks: at.map(|(t, p, r)| vec![(r, p, format!("{t:.2}"))]).unwrap_or_default(),
        ..Default::default()
    };
    let svg = plot.svg((300, 220)).unwrap_or_default();
    html! {
        figure.curve {
            (maud::PreEscaped(svg))
            @if let Some((t, p, r)) = at {
                figcaption.now data-threshold=(t) data-precision=(p) data-recall=(r) {
                    (lang.t(Msg::threshold)) " " (format!("{t:.2}")) " · " (lang.t(Msg::precision)) " " (format!("{p:.2}"))
                    " · " (lang.t(Msg::recall)) " " (format!("{r:.2}"))
                }
            }
        }
    }
}

/// The keys the rules form offers for `rule`, with their values in force: the single values of
/// its kind's schema (polygons are drawn in the mask editor; class lists and the legal basis stay
/// in the pipeline file).
fn form_keys(rule: &crate::rules::RuleConfig) -> Vec<(crate::config::docs::KeyDoc, serde_json::Value)> {
    let params = rule.params();
    crate::config::docs::rule_keys(rule.kind().name())
        .into_iter()
        .filter(|k| !k.scalar.is_empty() && k.key != "id")
        .map(|k| {
            let now = params.get(&k.key).cloned().unwrap_or(serde_json::Value::Null);
            (k, now)
        })
        .collect()
}

/// A key's name and meaning in `lang` (Chinese from the catalogue; English from the schema).
fn key_words(
    lang: super::i18n::Lang,
    kind: crate::rules::RuleKind,
    k: &crate::config::docs::KeyDoc,
) -> (String, String) {
    match (lang, super::i18n::param_zh(kind, &k.key)) {
        (super::i18n::Lang::Zh, Some((label, meaning))) => (label.into(), meaning.into()),
        _ => (k.key.clone(), k.doc.clone()),
    }
}

/// One of the values a key may take, in words (a risk tier in the page's language; others as
/// written in the pipeline file).
fn choice_text(lang: super::i18n::Lang, c: &str) -> String {
    if let Some(t) = crate::rules::RiskTier::ALL.iter().find(|t| t.name() == c) {
        return lang.t(super::i18n::tier_msg(*t)).into();
    }
    match crate::rules::Part::ALL.iter().find(|p| p.name() == c) {
        Some(p) => lang.t(super::i18n::part_msg(*p)).into(),
        None => c.into(),
    }
}

/// A key's range as the form shows it: `0 – 1`, `≥ 1`, or the values it may take.
fn range_text(lang: super::i18n::Lang, k: &crate::config::docs::KeyDoc) -> String {
    match k.bounds {
        (Some(lo), Some(hi)) => format!("{lo} – {hi}"),
        (Some(lo), None) => format!("≥ {lo}"),
        (None, Some(hi)) => format!("≤ {hi}"),
        (None, None) if k.scalar == "boolean" => format!("{} / {}", lang.t(Msg::on), lang.t(Msg::off)),
        (None, None) => k.choices.iter().map(|c| choice_text(lang, c)).collect::<Vec<_>>().join(" / "),
    }
}

/// A number as a person writes it (`24`, not the `24.0` an f32 field serialises to).
fn plain(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) if v.is_f64() && x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
        _ => short(v),
    }
}

fn value_text(lang: super::i18n::Lang, v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(_) => plain(v),
        serde_json::Value::Bool(true) => lang.t(Msg::on).into(),
        serde_json::Value::Bool(false) => lang.t(Msg::off).into(),
        serde_json::Value::Null => "–".into(),
        serde_json::Value::String(s) => choice_text(lang, s),
        v => short(v),
    }
}

/// The input for a key's proposed value, holding the value in force (the browser keeps a number
/// within the schema's bounds; the server checks again).
fn key_input(
    lang: super::i18n::Lang,
    k: &crate::config::docs::KeyDoc,
    now: &serde_json::Value,
    enabled: bool,
) -> maud::Markup {
    let name = format!("p.{}", k.key);
    let text = match now {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        v => plain(v),
    };
    html! {
        @if k.scalar == "boolean" {
            select name=(name) disabled[!enabled] {
                option value="true" selected[now == &serde_json::Value::Bool(true)] { (lang.t(Msg::on)) }
                option value="false" selected[now == &serde_json::Value::Bool(false)] { (lang.t(Msg::off)) }
            }
        } @else if !k.choices.is_empty() {
            select name=(name) disabled[!enabled] {
                @for c in &k.choices { option value=(c) selected[c == &text] { (choice_text(lang, c)) } }
            }
        } @else if k.scalar == "number" || k.scalar == "integer" {
            input type="number" name=(name) value=(text) step=(if k.scalar == "integer" { "1" } else { "any" })
                min=[k.bounds.0] max=[k.bounds.1] disabled[!enabled];
        } @else {
            input type="text" name=(name) value=(text) disabled[!enabled];
        }
    }
}

/// `/ops/rules`: each rule's parameters as running, the change form, the eval curve beside a
/// no-mask threshold, and the audit trail of changes.
pub async fn rules_page(State(svc): State<Arc<App>>, a: Page<OpsRole>) -> Response {
    let lang = a.lang;
    let (rules, problem) = rules_now(&svc).await;
    let flash =
        svc.flash.lock().unwrap_or_else(|p| p.into_inner()).remove(&crate::util::sha256_hex(a.token.as_bytes()));
    let curve = eval_curve(&svc);
    let history = match &svc.pipeline.nats {
        Some(n) => {
            let stream = svc.pipeline.settings.publish.stream.clone().unwrap_or_else(|| "VIGIL".into());
            overrides::audit_history(n, &stream, svc.site(), None).await.map_err(|e| format!("{e:#}"))
        }
        None => Ok(Vec::new()),
    };
    let (history, history_problem) = match history {
        Ok(h) => (h, None),
        Err(e) => (Vec::new(), Some(format!("{}: {e}", lang.t(Msg::audit_unreadable)))),
    };
    let body = html! {
        h2 { (lang.t(Msg::rules)) " · " span.d { (svc.site()) } }
        @if let Some(p) = &problem { p #problem.err { (p.text(lang)) } }
        @if let Some(m) = &flash { p #message { (m) } }
        div #rules { @for r in &rules {
            @let kind = r.rule.kind();
            section.rule data-camera=(r.camera) data-rule=(r.rule.id()) {
                h3 { span.d { (r.camera) " · " (r.rule.id()) } " " span.muted { "(" (lang.t(super::i18n::kind_msg(kind))) ")" } }
                p.override {
                    @if let Some((rev, o)) = &r.kv {
                        (lang.t(Msg::r#override)) ": " span.d { (o.by) } " · " (local(&svc, &o.at)) " · " code { "KV rev " (rev) }
                        @if !o.reason.is_empty() { " · " span.d { (o.reason) } }
                    } @else { span.muted { (lang.t(Msg::file_values)) } }
                }
                div.rule-body {
                form.change method="post" action="/ops/rules" {
                    input type="hidden" name="csrf" value=(a.session.csrf);
                    input type="hidden" name="camera" value=(r.camera);
                    input type="hidden" name="rule" value=(r.rule.id());
                    div.scroll { table.params {
                        thead { tr { th { (lang.t(Msg::param_key)) } th { (lang.t(Msg::meaning)) } th { (lang.t(Msg::range)) } th { (lang.t(Msg::current)) } th { (lang.t(Msg::proposed)) } } }
                        tbody {
                            @for (k, now) in form_keys(&r.rule) {
                                @let (label, meaning) = key_words(lang, kind, &k);
                                tr data-key=(k.key) {
                                    td { (label) div.muted { code { (k.key) } } }
                                    td.meaning { (meaning) }
                                    td.range { (range_text(lang, &k)) }
                                    td.now data-key=(k.key) { (value_text(lang, &now)) }
                                    td { (key_input(lang, &k, &now, problem.is_none())) }
                                }
                            }
                        }
                    } }
                    @if problem.is_none() {
                        div.submit {
                            input name="set" placeholder=(lang.t(Msg::other_keys)) aria-label=(lang.t(Msg::other_keys));
                            input name="reason" placeholder=(lang.t(Msg::reason_short)) required;
                            button type="submit" { (lang.t(Msg::submit)) }
                        }
                    }
                }
                @if let (Some((name, pts)), Some(t)) = (&curve, r.rule.params().get("threshold").and_then(|v| v.as_f64()).filter(|_| kind == crate::rules::RuleKind::NoMask)) {
                    (curve_figure(lang, name, pts, t))
                }
                }
            }
        } }
        h3 { (lang.t(Msg::rule_history)) }
        @if let Some(p) = &history_problem { p #history-problem.err { (p) } }
        table #rule-history {
            thead { tr { th { (lang.t(Msg::time)) } th { (lang.t(Msg::camera)) } th { (lang.t(Msg::rule)) } th { (lang.t(Msg::by)) } th { (lang.t(Msg::outcome)) } th { (lang.t(Msg::detail)) } } }
            tbody {
                @for rec in history.iter().rev().take(100) {
                    tr { td { (local(&svc, &rec.time_utc)) } td.d { (rec.camera) } td.d { (rec.rule) } td.by.d { (rec.by) }
                         td.outcome data-outcome=(rec.outcome) { (outcome_text(lang, &rec.outcome)) }
                         td.change { @match &rec.problem { Some(p) => span.d { (p) }, None => code { (diff(lang, rec.old.as_ref(), rec.new.as_ref())) } } } }
                }
            }
        }
    };
    page(lang, lang.t(Msg::rules), Some(&a.user), "/ops/rules", body)
}

/// A rule change asked for by a logged-in ops user: validated against the pipeline file (the same
/// code and messages as config load and `vigil thresholds set`), written to the KV with the
/// user as `by`, and recorded in the signed access log (done or refused), whichever page or
/// API asked. Returns the KV revision.
pub(super) async fn change_rule(
    svc: &App,
    a: &Authed,
    camera: &str,
    rule: &str,
    set: serde_json::Map<String, serde_json::Value>,
    reason: &str,
    client: &str,
) -> Result<u64, ApiError> {
    let what = format!(
        "{}.{}: {}{}",
        crate::util::printable(camera, 64),
        crate::util::printable(rule, 64),
        crate::util::printable(&serde_json::Value::Object(set.clone()).to_string(), 300),
        if reason.is_empty() { String::new() } else { format!("; reason: {}", crate::util::printable(reason, 200)) }
    );
    let r = write_rule(svc, a, camera, rule, set, reason).await;
    let (outcome, detail) = match &r {
        Ok(rev) => (crate::audit_log::Outcome::Ok, format!("{what}; KV revision {rev}")),
        Err(ApiError(_, m)) => (crate::audit_log::Outcome::Denied, format!("{what}; refused: {m}")),
    };
    let entry =
        crate::review::access(&a.user, crate::audit_log::Action::ThresholdChanged, outcome, None, &detail, client);
    svc.record(entry).await;
    r
}

async fn write_rule(
    svc: &App,
    a: &Authed,
    camera: &str,
    rule: &str,
    set: serde_json::Map<String, serde_json::Value>,
    reason: &str,
) -> Result<u64, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let p = &svc.pipeline;
    let Some(n) = &p.nats else { return Err(bad("no NATS in this pipeline: change the pipeline file".into())) };
    if !p.camera_configs.iter().any(|c| c.id == camera && c.rules.iter().any(|r| r.id() == rule)) {
        return Err(bad(format!("no rule {rule:?} on camera {camera:?}")));
    }
    if set.is_empty() {
        return Err(bad("nothing to set (e.g. threshold=0.85)".into()));
    }
    let change = overrides::Change { camera, rule, by: &a.user.name, reason, set, clear: false };
    overrides::set(n, &p.settings.control.kv_bucket, svc.site(), change, Some(&p.file))
        .await
        .map_err(|e| bad(format!("{e:#}")))
        .inspect(
            |rev| tracing::info!(user = %a.user.name, camera, rule, revision = rev, "ops console: rule change written"),
        )
}

/// What the rules form proposes for one rule: the keys whose proposed value differs from the
/// value in force, typed as the schema says and within its bounds (a message in the page's
/// language names the key otherwise), plus any `key=value` items of the "other keys" box.
fn proposed(
    lang: super::i18n::Lang,
    rule: &crate::rules::RuleConfig,
    fields: &[(String, String)],
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    use serde_json::Value;
    let keys = form_keys(rule);
    let mut set = serde_json::Map::new();
    for (name, given) in fields {
        let Some(key) = name.strip_prefix("p.") else { continue };
        let Some((k, now)) = keys.iter().find(|(k, _)| k.key == key) else {
            return Err(format!("{} {key:?}", lang.t(Msg::param_key)));
        };
        let given = given.trim();
        let label = key_words(lang, rule.kind(), k).0;
        let v = match k.scalar {
            "boolean" => Value::Bool(given == "true"),
            "integer" | "number" => {
                let x: f64 = given.parse().map_err(|_| format!("{label}: {given:?} {}", lang.t(Msg::not_a_number)))?;
                if k.scalar == "integer" && x.fract() != 0.0 {
                    return Err(format!("{label}: {given} {}", lang.t(Msg::not_an_integer)));
                }
                let (lo, hi) = k.bounds;
                if lo.is_some_and(|lo| x < lo) || hi.is_some_and(|hi| x > hi) {
                    return Err(format!("{label}: {given} {} ({})", lang.t(Msg::out_of_range), range_text(lang, k)));
                }
                if k.scalar == "integer" { Value::from(x as i64) } else { Value::from(x) }
            }
            _ if given.is_empty() && now.is_null() => continue,
            _ => Value::String(given.to_string()),
        };
        let same = match (&v, now) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        };
        if !same {
            set.insert(key.to_string(), v);
        }
    }
    let other: Vec<String> =
        fields.iter().filter(|(n, _)| n == "set").flat_map(|(_, v)| v.split_whitespace().map(str::to_string)).collect();
    set.extend(overrides::parse_assignments(&other).map_err(|e| format!("{e:#}"))?);
    if set.is_empty() {
        return Err(lang.t(Msg::nothing_changed).into());
    }
    Ok(set)
}

/// The change form (`csrf`, `camera`, `rule`, `reason`, a `p.<key>` per offered key, `set` for
/// other keys). Its outcome is shown on the next page of the session (a flash message kept by the
/// server), in the page's language.
pub async fn rules_form(
    State(svc): State<Arc<App>>,
    a: Page<OpsRole>,
    caller: Caller,
    f: axum::Form<Vec<(String, String)>>,
) -> Response {
    let field = |n: &str| f.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()).unwrap_or("");
    if let Err(e) = check_csrf(&a, Some(field("csrf"))) {
        return e.into_response();
    }
    let lang = a.lang;
    let (camera, rule) = (field("camera"), field("rule"));
    let (rules, _) = rules_now(&svc).await;
    let msg = match rules.iter().find(|r| r.camera == camera && r.rule.id() == rule) {
        None => format!("{}: {camera}.{rule}", lang.t(Msg::not_written)),
        Some(r) => match proposed(lang, &r.rule, &f) {
            Err(e) => format!("{}: {e}", lang.t(Msg::not_written)),
            Ok(set) => match change_rule(&svc, &a, camera, rule, set, field("reason"), &caller.0).await {
                Ok(rev) => format!("{camera}.{rule}: {} {rev}", lang.t(Msg::rule_written)),
                Err(ApiError(StatusCode::FORBIDDEN, m)) => return ApiError::forbidden(&m).into_response(),
                Err(ApiError(_, m)) => format!("{}: {m}", lang.t(Msg::not_written)),
            },
        },
    };
    svc.flash.lock().unwrap_or_else(|p| p.into_inner()).insert(crate::util::sha256_hex(a.token.as_bytes()), msg);
    axum::response::Redirect::to("/ops/rules").into_response()
}

#[derive(serde::Deserialize)]
pub struct ChangeBody {
    set: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    reason: String,
}

/// `POST /api/ops/rules/{camera}/{rule}` `{"set": {...}, "reason": "..."}` (x-csrf-token).
pub async fn rules_api(
    State(svc): State<Arc<App>>,
    a: Api<OpsRole>,
    caller: Caller,
    Path((camera, rule)): Path<(String, String)>,
    body: axum::Json<ChangeBody>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let rev = change_rule(&svc, &a, &camera, &rule, body.0.set, &body.0.reason, &caller.0).await?;
    Ok(axum::Json(serde_json::json!({ "camera": camera, "rule": rule, "revision": rev, "by": a.user.name })))
}

pub fn routes() -> axum::Router<Arc<App>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/ops", get(overview))
        .route("/api/ops/cameras", get(cameras))
        .route("/ops/rules", get(rules_page).post(rules_form))
        .route("/api/ops/rules/{camera}/{rule}", post(rules_api))
        .route("/ops/masks", get(masks::list))
        .route("/ops/masks/{camera}", get(masks::editor))
        .route("/api/ops/snapshot/{camera}", get(masks::snapshot))
        .route("/api/ops/masks/{camera}", get(masks::get_masks).post(masks::save_mask))
        .route("/api/ops/zones/{camera}/{rule}", post(masks::save_zone))
}
