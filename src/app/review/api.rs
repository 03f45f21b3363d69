//! The JSON API (for case systems and tests), with the page's authentication and rules:
//! `POST /api/login` → cookie `vigil_session` and `{"csrf"}`; `GET /api/evidence` (the queue's
//! filters); `GET /api/evidence/{id}`; `POST /api/evidence/{id}/decision` (header
//! `x-csrf-token`); `GET /api/evidence/{id}/package`; `GET /api/audit`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::app::App;
use crate::app::auth::{Api, ApiError, Auditors, Caller, Readers, clear_cookie, session_cookie};
use crate::audit_log::{Action, Outcome};
use crate::review::access;
use crate::review::accounts::Role;
use crate::review::decide::{DecideError, DecisionRequest, decide};
use crate::review::items::{Filter, ItemView, check_filter, load, queue, valid_id};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    user: String,
    password: String,
}

/// Parses a JSON body; malformed JSON is a 400 that says what is wrong.
fn json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.len() > 64 << 10 {
        return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, "the request body is larger than 64 KiB".into()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))
}

/// The outcome of a login attempt, shared by the page and the API.
pub enum LoginOutcome {
    Ok(String, String),
    Wrong,
    Limited,
}

pub async fn try_login(svc: &App, user: &str, password: &str, client: &str) -> Result<LoginOutcome, ApiError> {
    let name: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
    let accounts = svc.accounts().map_err(ApiError::internal)?;
    // what was typed as the name is logged only if it is an account's: a password typed into
    // the name field never reaches the signed log
    let logged_name = if accounts.get(&name).is_some() { name.as_str() } else { "" };
    if !svc.limiter.allowed(&name, client) {
        crate::telemetry::metrics::get().review_logins_refused.inc();
        if svc.limiter.refused(logged_name, client) {
            let why = "locked out after too many failed attempts; further attempts are counted and logged as one entry";
            svc.record(denied_login(logged_name, why, client, None)).await;
        }
        return Ok(LoginOutcome::Limited);
    }
    let held = svc.limiter.take_refused(logged_name, client);
    if held > 0 {
        let why = format!("{held} more attempts refused while locked out");
        svc.record(denied_login(logged_name, &why, client, Some(held))).await;
    }
    match accounts.authenticate(&name, password) {
        Some(u) => {
            svc.limiter.succeeded(&name);
            let (token, s) = svc.sessions.create(&u.name, client).await.map_err(ApiError::internal)?;
            svc.record(access(u, Action::Login, Outcome::Ok, None, "", client)).await;
            Ok(LoginOutcome::Ok(token, s.csrf))
        }
        None => {
            svc.limiter.failed(&name, client);
            let why =
                if logged_name.is_empty() { "no such account" } else { "wrong password, or the account is disabled" };
            svc.record(denied_login(logged_name, why, client, None)).await;
            Ok(LoginOutcome::Wrong)
        }
    }
}

pub async fn login(State(svc): State<Arc<App>>, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    let r: LoginRequest = json(&body)?;
    match try_login(&svc, &r.user, &r.password, &caller.0).await? {
        LoginOutcome::Ok(token, csrf) => {
            let mut resp = axum::Json(serde_json::json!({ "csrf": csrf, "user": r.user })).into_response();
            let c = session_cookie(&token, svc.pipeline.settings.review.session_hours, svc.tls);
            resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&c).expect("cookie"));
            Ok(resp)
        }
        LoginOutcome::Wrong => Err(ApiError(StatusCode::UNAUTHORIZED, "wrong user name or password".into())),
        LoginOutcome::Limited => {
            Err(ApiError(StatusCode::TOO_MANY_REQUESTS, "too many failed logins; wait 15 minutes".into()))
        }
    }
}

pub async fn logout(State(svc): State<Arc<App>>, a: Api, caller: Caller) -> Result<Response, ApiError> {
    svc.sessions.end(&a.token).await.map_err(ApiError::internal)?;
    svc.record(access(&a.user, Action::Logout, Outcome::Ok, None, "", &caller.0)).await;
    let mut resp = axum::Json(serde_json::json!({ "ok": true })).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear_cookie(svc.tls)).expect("cookie"));
    Ok(resp)
}

pub async fn list(
    State(svc): State<Arc<App>>,
    a: Api<Readers>,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(f) = q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    check_filter(&f, svc.pipeline.utc_offset_s).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let (rows, total) = queue(&svc, &a.user, &f).await.map_err(ApiError::internal)?;
    Ok(axum::Json(serde_json::json!({ "total": total, "page": f.page.unwrap_or(1), "items": rows })).into_response())
}

/// An item as the API gives it.
pub fn item_json(v: &ItemView) -> serde_json::Value {
    serde_json::json!({
        "id": v.item.id,
        "manifest": v.manifest,
        "manifest_sha256": v.manifest_sha256,
        "verification": v.verification,
        "review": { "status": v.status, "records": v.records },
        "files": {
            "clip": format!("/evidence/{}/file/clip.mp4", v.item.id),
            "snapshot": format!("/evidence/{}/file/snapshot.jpg", v.item.id),
            "snapshot_annotated": format!("/evidence/{}/file/snapshot-annotated.jpg", v.item.id),
        },
    })
}

/// The item `id`, for a reader.
async fn readable_item(svc: &App, id: &str) -> Result<ItemView, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::not_found());
    }
    load(svc, id).await.map_err(ApiError::internal)?.ok_or_else(ApiError::not_found)
}

pub async fn get_item(
    State(svc): State<Arc<App>>,
    Path(id): Path<String>,
    a: Api<Readers>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let v = readable_item(&svc, &id).await?;
    svc.record(access(&a.user, Action::ItemViewed, Outcome::Ok, Some(&id), "api", &caller.0)).await;
    Ok(axum::Json(item_json(&v)).into_response())
}

pub async fn decision(
    State(svc): State<Arc<App>>,
    Path(id): Path<String>,
    a: Api,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    // the role is checked here, not by the extractor: a refused decision is logged
    if a.user.role != Role::Reviewer {
        let detail = "only reviewers decide";
        svc.record(access(&a.user, Action::Decision, Outcome::Denied, Some(&id), detail, &caller.0)).await;
        return Err(ApiError::forbidden("only the reviewer role decides"));
    }
    if !valid_id(&id) {
        return Err(ApiError::not_found());
    }
    let req: DecisionRequest = json(&body)?;
    match decide(&svc, &a.user, &id, &req, &caller.0).await {
        Ok((record, status)) => {
            Ok(axum::Json(serde_json::json!({ "record": record, "status": status })).into_response())
        }
        Err(DecideError::NotFound) => Err(ApiError::not_found()),
        Err(DecideError::Refused(r)) => {
            use crate::evidence::review::Refusal;
            let code = match r {
                Refusal::Conflict(_) => StatusCode::CONFLICT,
                Refusal::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
            };
            Err(ApiError(code, r.to_string()))
        }
        Err(DecideError::Failed(e)) => Err(ApiError::internal(e)),
    }
}

pub async fn package(
    State(svc): State<Arc<App>>,
    Path(id): Path<String>,
    a: Api<Readers>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let v = readable_item(&svc, &id).await?;
    if !v.verification.ok {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("the item fails verification: {}", v.verification.problems.join("; ")),
        ));
    }
    let p = match crate::review::package::export(&svc, &a.user, &v, &caller.0).await {
        Ok(p) => p,
        Err(e) => {
            let why = format!("{e:#}");
            svc.record(access(&a.user, Action::PackageExported, Outcome::Denied, Some(&id), &why, &caller.0)).await;
            return Err(ApiError(StatusCode::CONFLICT, why));
        }
    };
    svc.record(access(
        &a.user,
        Action::PackageExported,
        Outcome::Ok,
        Some(&id),
        &format!("sha256 {}", p.sha256),
        &caller.0,
    ))
    .await;
    let mut resp = (StatusCode::OK, p.bytes).into_response();
    let hd = resp.headers_mut();
    hd.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    hd.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", p.name)).expect("name"),
    );
    hd.insert("x-sha256", HeaderValue::from_str(&p.sha256).expect("hex"));
    Ok(resp)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    page: Option<usize>,
    size: Option<usize>,
}

/// `GET /api/audit?page=&size=`: one page of the access log, newest first (`size` at most 1000,
/// default 200), each entry's signature and the links inside the page checked; `total` entries.
/// `vigil review audit` checks the whole log.
pub async fn audit(
    State(svc): State<Arc<App>>,
    a: Api<Auditors>,
    caller: Caller,
    q: Result<Query<AuditPage>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let (page, size) = (q.page.unwrap_or(1).max(1), q.size.unwrap_or(200).clamp(1, 1000));
    let (entries, total, problems) =
        crate::audit_log::read_page(&svc.store, &svc.signer.public_key(), svc.site(), page, size, |_| true)
            .await
            .map_err(ApiError::internal)?;
    svc.record(access(&a.user, Action::AuditViewed, Outcome::Ok, None, "api", &caller.0)).await;
    Ok(axum::Json(serde_json::json!({ "entries": entries, "problems": problems, "total": total, "page": page }))
        .into_response())
}

/// The access-log entry of a refused login (`name`: the account's, or empty when none has it).
fn denied_login(name: &str, detail: &str, client: &str, count: Option<u64>) -> crate::audit_log::Access {
    crate::audit_log::Access {
        user: name.into(),
        officer_id: String::new(),
        role: Role::Nobody,
        action: Action::Login,
        outcome: Outcome::Denied,
        evidence_id: None,
        detail: detail.into(),
        client: client.into(),
        record: None,
        count,
    }
}
