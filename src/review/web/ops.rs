//! The ops console (role `ops` only; every other role gets 403): the cameras overview at `/ops`,
//! one row per camera of the site with its live state from the workers' status reports
//! ([`crate::review::live`]), refreshed every second from `/api/ops/cameras`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::pages::{LangQuery, forbidden, local, page, page_auth};
use super::{ApiError, require};
use crate::review::Service;
use crate::review::accounts::Role;
use crate::review::live::OpsCamera;

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "–".into())
}

/// `/ops`: the cameras overview.
pub async fn overview(State(svc): State<Arc<Service>>, h: HeaderMap, q: Query<LangQuery>) -> Response {
    let (lang, a) = match page_auth(&svc, &h, q.lang.as_deref()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if a.user.role != Role::Ops {
        return forbidden(lang, &a.user);
    }
    let rows = svc.live.cameras(&svc.pipeline);
    let body = html! {
        h2 { (lang.t("cameras")) " · " (svc.site()) }
        p.muted { (lang.t("ops_keys")) }
        table #ops data-lang=(lang.code()) {
            thead { tr {
                th { (lang.t("camera")) } th { (lang.t("location")) } th { (lang.t("state")) }
                th { (lang.t("conditions")) } th { (lang.t("analysed_fps")) } th { (lang.t("dropped_fps")) }
                th { (lang.t("inference_ms")) } th { (lang.t("last_violation")) } th { (lang.t("worker")) }
                th { (lang.t("enforcement_status")) } th { (lang.t("detail")) }
            } }
            tbody {
                @for c in &rows {
                    tr.cam data-camera=(c.camera) data-state=(c.state) {
                        td { (c.camera) }
                        td { (c.location) }
                        td { span class={ "badge state s-" (c.state) } { (state_text(lang, &c.state)) } }
                        td.conditions { (c.conditions.join(", ")) }
                        td.analysed { (fmt(c.analysed_fps, 1)) }
                        td.dropped { (fmt(c.dropped_fps, 1)) }
                        td.inference { (fmt(c.inference_ms, 1)) }
                        td.last { (c.last_violation_utc.as_deref().map(|t| local(&svc, t)).unwrap_or_else(|| "–".into())) }
                        td.worker { (c.worker.as_deref().unwrap_or("–")) }
                        td { span class={ "badge st-" (c.status) } { (lang.t(status_key(&c.status))) }
                            @if !c.status_reasons.is_empty() { div.muted { (c.status_reasons.join("; ")) } } }
                        td.detail { (c.detail) }
                    }
                }
            }
        }
        div #ops-texts hidden data-up=(lang.t("st_up")) data-down=(lang.t("st_down"))
            data-starting=(lang.t("st_starting")) data-unknown=(lang.t("st_unknown")) {}
    };
    page(lang, lang.t("cameras"), Some(&a.user), "/ops", body)
}

fn status_key(s: &str) -> &'static str {
    if s == "enforcement" { "enforcement" } else { "advisory" }
}

fn state_text(lang: super::i18n::Lang, s: &str) -> &'static str {
    lang.t(match s {
        "up" => "st_up",
        "down" => "st_down",
        "starting" => "st_starting",
        _ => "st_unknown",
    })
}

/// `/api/ops/cameras`: the overview's rows as JSON.
pub async fn cameras(State(svc): State<Arc<Service>>, h: HeaderMap) -> Result<axum::Json<Vec<OpsCamera>>, Response> {
    let a = require(&svc, &h).await.map_err(IntoResponse::into_response)?;
    if a.user.role != Role::Ops {
        return Err(ApiError::forbidden("the ops console is for the ops role").into_response());
    }
    Ok(axum::Json(svc.live.cameras(&svc.pipeline)))
}
