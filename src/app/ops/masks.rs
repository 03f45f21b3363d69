//! The ops console's mask and zone editor (role `ops` only): a recent frame of the camera from the
//! worker that runs it (masked as stored evidence is; the unmasked view needed to draw a new mask
//! is asked for explicitly and audited, here in the access log and by the worker), the privacy
//! mask and each rule's zone drawn over it, edited by clicking and dragging, and saved:
//!
//! - the **privacy mask** to the KV bucket `control.mask_bucket` as the text of a mask file,
//!   checked by the code that loads mask files (same messages). Running workers apply it between
//!   two frames; the next clip burns it into its pixels and its manifest names its SHA-256 (the
//!   same bytes saved as a file give the same hash: the page shows them to commit to
//!   `privacy-masks/`). "Back to the mask file" deletes the key.
//! - a **rule's zone** through the rules path (`zone` laid over the rule, validated against the
//!   pipeline file, audited by the workers), as on the rules page.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::change_rule;
use crate::app::App;
use crate::app::auth::{Api, ApiError, Caller, OpsRole, Page};
use crate::app::i18n::Msg;
use crate::app::page::{local, page};
use crate::audit_log::{Action, Outcome};
use crate::control::live::SnapshotAsk;
use crate::control::overrides;
use crate::privacy::{NormPoint, Polygon, PrivacyMask};
use crate::review::access;

/// The mask a camera runs with, as the console sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MaskNow {
    /// `kv:<bucket>/<key>@<revision>`, the mask file's path, or `none`.
    pub source: String,
    pub sha256: Option<String>,
    pub polygons: Vec<PolygonJson>,
    /// Who set the KV mask, when, why.
    pub by: Option<String>,
    pub at: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolygonJson {
    #[serde(default)]
    pub name: String,
    pub points: Vec<[f64; 2]>,
}

fn polygons_json(m: &PrivacyMask) -> Vec<PolygonJson> {
    m.polygons
        .iter()
        .map(|p| PolygonJson { name: p.name.clone(), points: p.points.iter().map(|q| [q.x, q.y]).collect() })
        .collect()
}

fn has_camera(svc: &App, camera: &str) -> bool {
    svc.pipeline.cameras.iter().any(|c| c.id == camera)
}

/// The mask in force for `camera`: the KV's when it holds one, else the pipeline file's.
async fn mask_now(svc: &App, camera: &str) -> Result<MaskNow, String> {
    let p = &svc.pipeline;
    if let Some(n) = &p.nats
        && let Some((rev, o, m)) = overrides::get_mask(n, &p.settings.control.mask_bucket, svc.site(), camera)
            .await
            .map_err(|e| format!("NATS KV {}: {e:#}", p.settings.control.mask_bucket))?
    {
        return Ok(MaskNow {
            source: format!("kv:{}/{}.{camera}@{rev}", p.settings.control.mask_bucket, svc.site()),
            sha256: Some(m.sha256.clone()),
            polygons: polygons_json(&m),
            by: Some(o.by),
            at: Some(o.at),
            reason: Some(o.reason),
        });
    }
    let file = p.cameras.iter().find(|c| c.id == camera).and_then(|c| c.mask.as_ref());
    Ok(MaskNow {
        source: file.map(|m| m.path.display().to_string()).unwrap_or_else(|| "none".into()),
        sha256: file.map(|m| m.sha256.clone()),
        polygons: file.map(polygons_json).unwrap_or_default(),
        by: None,
        at: None,
        reason: None,
    })
}

/// Each rule of `camera` with its zone as running (`None`: the whole frame).
async fn zones_now(svc: &App, camera: &str) -> Vec<(String, Option<Vec<[f64; 2]>>)> {
    let (rules, _) = super::rules_now(svc).await;
    rules
        .into_iter()
        .filter(|r| r.camera == camera)
        .map(|r| {
            let zone = serde_json::from_value::<Option<Vec<[f64; 2]>>>(r.rule.params()["zone"].clone()).unwrap_or(None);
            (r.rule.id().to_string(), zone)
        })
        .collect()
}

/// `/ops/masks`: the cameras, each with its mask in force and a link to the editor.
pub async fn list(State(svc): State<Arc<App>>, a: Page<OpsRole>) -> Response {
    let lang = a.lang;
    let mut rows = Vec::new();
    for c in &svc.pipeline.cameras {
        rows.push((c.id.clone(), c.location.clone(), mask_now(&svc, &c.id).await));
    }
    let body = html! {
        h2 { (lang.t(Msg::masks)) " · " span.d { (svc.site()) } }
        table #masks {
            thead { tr { th { (lang.t(Msg::camera)) } th { (lang.t(Msg::location)) } th { (lang.t(Msg::mask_in_force)) } th {} } }
            tbody {
                @for (id, location, m) in &rows {
                    tr.cam data-camera=(id) {
                        td.d { (id) } td.d { (location) }
                        td { @match m {
                            Ok(m) => { code { (m.source) } div.muted { code { (m.sha256.as_deref().map(|s| &s[..16]).unwrap_or("–")) } " · " (m.polygons.len()) " " (lang.t(Msg::polygons)) } }
                            Err(e) => { span.err.d { (e) } }
                        } }
                        td { a href={ "/ops/masks/" (id) } { (lang.t(Msg::edit)) } }
                    }
                }
            }
        }
    };
    page(lang, lang.t(Msg::masks), Some(&a.user), "/ops/masks", body)
}

/// `/ops/masks/{camera}`: the editor.
pub async fn editor(State(svc): State<Arc<App>>, a: Page<OpsRole>, Path(camera): Path<String>) -> Response {
    let lang = a.lang;
    if !has_camera(&svc, &camera) {
        return (StatusCode::NOT_FOUND, "no such camera").into_response();
    }
    let (mask, problem) = match mask_now(&svc, &camera).await {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(e)),
    };
    let zones = zones_now(&svc, &camera).await;
    let model = serde_json::json!({
        "camera": camera,
        "csrf": a.session.csrf,
        "mask": mask.as_ref().map(|m| &m.polygons),
        "zones": zones.iter().map(|(rule, z)| serde_json::json!({"rule": rule, "points": z})).collect::<Vec<_>>(),
    });
    // what the editor's script says, in the page's language
    let words = serde_json::json!({
        "need3": lang.t(Msg::need_three_points),
        "drawZone": lang.t(Msg::draw_zone_first),
        "savedBy": lang.t(Msg::saved_by),
        "apply": lang.t(Msg::workers_apply),
        "notSaved": lang.t(Msg::not_saved),
        "noPicture": lang.t(Msg::no_picture),
    });
    let here = format!("/ops/masks/{camera}");
    let body = html! {
        h2 { (lang.t(Msg::mask_editor)) " · " span.d { (camera) } }
        p.muted { (lang.t(Msg::editor_keys)) }
        @if let Some(p) = &problem { p #problem.err.d { (p) } }
        @if let Some(m) = &mask {
            p #in-force { (lang.t(Msg::mask_in_force)) ": " code #mask-source { (m.source) } " · " code { "sha256 " } code #mask-sha { (m.sha256.as_deref().unwrap_or("–")) }
                @if let (Some(by), Some(at)) = (&m.by, &m.at) { " · " span.d { (by) } " · " (local(&svc, at)) }
                @if let Some(r) = m.reason.as_ref().filter(|r| !r.is_empty()) { " · " span.d { (r) } } }
        }
        div.toolbar {
            label { (lang.t(Msg::target)) " "
                select #target {
                    option value="mask" { (lang.t(Msg::privacy_mask)) }
                    @for (rule, _) in &zones { option value={ "zone:" (rule) } { (lang.t(Msg::zone_of)) (rule) } }
                }
            }
            label { input #unmasked type="checkbox"; " " (lang.t(Msg::unmasked_view)) }
            button #reload type="button" { (lang.t(Msg::reload_frame)) }
            button #close type="button" { (lang.t(Msg::close_polygon)) }
            button #undo type="button" { (lang.t(Msg::undo_point)) }
            button #delete type="button" { (lang.t(Msg::delete_polygon)) }
            input #reason placeholder=(lang.t(Msg::reason_short));
            button #save type="button" { (lang.t(Msg::save)) }
            button #reset type="button" { (lang.t(Msg::reset_mask)) }
        }
        div #editor data-model=(model.to_string()) data-words=(words.to_string()) {
            img #frame alt=(camera) src={ "/api/ops/snapshot/" (camera) };
            svg #draw xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="none" {}
        }
        p #frame-error.err {}
        p #msg {}
        h3 { (lang.t(Msg::polygons)) }
        ol #polys {}
        pre #mask-text {}
    };
    page(lang, lang.t(Msg::masks), Some(&a.user), &here, body)
}

#[derive(serde::Deserialize)]
pub struct SnapshotQuery {
    #[serde(default)]
    unmasked: Option<String>,
    /// For the overview's camera grid: a masked picture at most [`GRID_MAX_AGE`](super::live::GRID_MAX_AGE) old
    /// (shared by every open overview).
    #[serde(default)]
    grid: Option<String>,
}

/// `GET /api/ops/snapshot/{camera}[?unmasked=1][?grid=1]`: a recent frame as JPEG, from the worker
/// running the camera; the unmasked view is written to the access log first.
pub async fn snapshot(
    State(svc): State<Arc<App>>,
    a: Api,
    Path(camera): Path<String>,
    q: Query<SnapshotQuery>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let unmasked = q.unmasked.as_deref().is_some_and(|v| v == "1" || v == "true");
    // the role is checked here: an unmasked view refused is logged
    if let Err(e) = a.must::<OpsRole>() {
        if unmasked {
            let entry = access(
                &a.user,
                Action::UnmaskedViewRequested,
                Outcome::Denied,
                None,
                &camera_detail(&camera),
                &caller.0,
            );
            svc.record(entry).await;
        }
        return Err(e);
    }
    if !has_camera(&svc, &camera) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no camera {camera:?} in this pipeline")));
    }
    if unmasked {
        let entry =
            access(&a.user, Action::UnmaskedViewRequested, Outcome::Ok, None, &camera_detail(&camera), &caller.0);
        svc.record(entry).await;
    }
    let grid = q.grid.as_deref().is_some_and(|v| v == "1" || v == "true");
    let s = if grid && !unmasked {
        svc.live.grid_snapshot(svc.site(), &camera).await
    } else {
        let ask = SnapshotAsk { unmasked, by: a.user.name.clone(), reason: "ops console: drawing a mask".into() };
        svc.live.snapshot(svc.site(), &camera, &ask).await.map(std::sync::Arc::new)
    }
    .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg".to_string()),
            (
                header::HeaderName::from_static("x-vigil-snapshot"),
                if s.unmasked { "unmasked" } else { "masked" }.into(),
            ),
            (header::HeaderName::from_static("x-vigil-mask-sha256"), s.mask_sha256.clone()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        s.jpeg.clone(),
    )
        .into_response())
}

fn camera_detail(camera: &str) -> String {
    format!("camera {}", crate::util::printable(camera, 64))
}

/// `GET /api/ops/masks/{camera}`: the mask in force and the rules' zones.
pub async fn get_masks(
    State(svc): State<Arc<App>>,
    _: Api<OpsRole>,
    Path(camera): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if !has_camera(&svc, &camera) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no camera {camera:?} in this pipeline")));
    }
    let mask = mask_now(&svc, &camera).await.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let zones: Vec<_> = zones_now(&svc, &camera)
        .await
        .into_iter()
        .map(|(rule, z)| serde_json::json!({"rule": rule, "points": z}))
        .collect();
    Ok(axum::Json(serde_json::json!({ "camera": camera, "mask": mask, "zones": zones })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskBody {
    #[serde(default)]
    polygons: Vec<PolygonJson>,
    #[serde(default)]
    reason: String,
    /// Delete the KV mask: back to the pipeline file's.
    #[serde(default)]
    reset: bool,
}

/// `POST /api/ops/masks/{camera}` `{"polygons": [{"name", "points"}], "reason"}` or
/// `{"reset": true}` (x-csrf-token): checked as a mask file is, written to the KV with the user
/// as `by`. Answers the KV revision, the mask's SHA-256 and its file text.
pub async fn save_mask(
    State(svc): State<Arc<App>>,
    a: Api,
    Path(camera): Path<String>,
    caller: Caller,
    body: axum::Json<MaskBody>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    // the role is checked here: a refused mask change is logged
    if let Err(e) = a.must::<OpsRole>() {
        let entry = access(&a.user, Action::MaskChanged, Outcome::Denied, None, &camera_detail(&camera), &caller.0);
        svc.record(entry).await;
        return Err(e);
    }
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let p = &svc.pipeline;
    let Some(n) = &p.nats else { return Err(bad("no NATS in this pipeline: edit the mask file".into())) };
    if !has_camera(&svc, &camera) {
        return Err(bad(format!("no camera {camera:?} in this pipeline")));
    }
    let bucket = &p.settings.control.mask_bucket;
    let by = &a.user.name;
    let text = if body.reset {
        None
    } else {
        let polygons: Vec<Polygon> = body
            .polygons
            .iter()
            .enumerate()
            .map(|(i, q)| Polygon {
                name: if q.name.is_empty() { format!("#{i}") } else { q.name.clone() },
                points: q.points.iter().map(|p| NormPoint { x: p[0], y: p[1] }).collect(),
            })
            .collect();
        let comment = format!(
            "Privacy mask of camera {camera} (site {}), saved from the ops console by {by} at {}.",
            svc.site(),
            crate::util::rfc3339(chrono::Utc::now())
        );
        Some(PrivacyMask::file_text(&polygons, &comment))
    };
    let (rev, sha) = overrides::set_mask(n, bucket, svc.site(), &camera, by, &body.reason, text.as_deref())
        .await
        .map_err(|e| bad(format!("{e:#}")))?;
    let detail = match &sha {
        Some(s) => {
            format!("{}: sha256 {s}, {} polygons, KV revision {rev}", camera_detail(&camera), body.polygons.len())
        }
        None => format!("{}: back to the mask file, KV revision {rev}", camera_detail(&camera)),
    };
    svc.record(access(&a.user, Action::MaskChanged, Outcome::Ok, None, &detail, &caller.0)).await;
    tracing::info!(user = %by, camera, revision = rev, sha256 = sha.as_deref().unwrap_or("(file)"), "ops console: privacy mask written");
    let source = match &sha {
        Some(_) => format!("kv:{bucket}/{}.{camera}@{rev}", svc.site()),
        None => mask_now(&svc, &camera).await.map(|m| m.source).unwrap_or_default(),
    };
    Ok(axum::Json(
        serde_json::json!({ "camera": camera, "revision": rev, "sha256": sha, "text": text, "by": by, "source": source }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneBody {
    points: Vec<[f64; 2]>,
    #[serde(default)]
    reason: String,
}

/// `POST /api/ops/zones/{camera}/{rule}` `{"points": [[x, y], ...], "reason"}` (x-csrf-token): the
/// rule's zone, through the rules path (validated against the pipeline file, audited by the
/// workers).
pub async fn save_zone(
    State(svc): State<Arc<App>>,
    a: Api<OpsRole>,
    Path((camera, rule)): Path<(String, String)>,
    caller: Caller,
    body: axum::Json<ZoneBody>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let mut set = serde_json::Map::new();
    set.insert("zone".into(), serde_json::json!(body.points));
    let rev = change_rule(&svc, &a, &camera, &rule, set, &body.reason, &caller.0).await?;
    Ok(axum::Json(serde_json::json!({ "camera": camera, "rule": rule, "revision": rev, "by": a.user.name })))
}
