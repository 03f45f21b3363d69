//! The review service's HTTP side: server-rendered pages ([`pages`], zh-CN by default) and a JSON
//! API ([`api`]) under the same authentication and the same rules. Every request is authenticated
//! from its session cookie, every role checked on the route, every state-changing request carries
//! the session's CSRF token, every evidence id is validated before it reaches a store path.

pub mod api;
pub mod assets;
pub mod files;
pub mod i18n;
pub mod masks;
pub mod ops;
pub mod pages;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::Service;
use super::accounts::{Role, User};
use super::session::{COOKIE, Session};
use crate::util::http::ClientAddr;

pub fn router(svc: Arc<Service>) -> axum::Router {
    axum::Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_page).post(pages::login_form))
        .route("/logout", post(pages::logout_form))
        .route("/queue", get(pages::queue))
        .route("/audit", get(pages::audit))
        .route("/evidence/{id}", get(pages::item))
        .route("/evidence/{id}/decision", post(pages::decision_form))
        .route("/evidence/{id}/file/{name}", get(files::file))
        .route("/evidence/{id}/package", get(api::package))
        .route(
            "/static/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], assets::JS) }),
        )
        .route("/static/app.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], assets::CSS) }))
        .route("/api/login", post(api::login))
        .route("/api/logout", post(api::logout))
        .route("/api/evidence", get(api::list))
        .route("/api/evidence/{id}", get(api::get_item))
        .route("/api/evidence/{id}/decision", post(api::decision))
        .route("/api/evidence/{id}/package", get(api::package))
        .route("/api/audit", get(api::audit))
        .route("/ops", get(ops::overview))
        .route("/api/ops/cameras", get(ops::cameras))
        .route("/ops/rules", get(ops::rules_page).post(ops::rules_form))
        .route("/api/ops/rules/{camera}/{rule}", post(ops::rules_api))
        .route("/ops/masks", get(masks::list))
        .route("/ops/masks/{camera}", get(masks::editor))
        .route("/api/ops/snapshot/{camera}", get(masks::snapshot))
        .route("/api/ops/masks/{camera}", get(masks::get_masks).post(masks::save_mask))
        .route("/api/ops/zones/{camera}/{rule}", post(masks::save_zone))
        .route("/evidence/{id}/played", post(files::played))
        .layer(axum::middleware::from_fn_with_state(svc.clone(), same_origin))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(svc)
}

/// The client's address: the connection's peer, or behind a trusted proxy the address it
/// forwards for ([`crate::util::http::client_ip`]).
pub struct Caller(pub String);

impl axum::extract::FromRequestParts<Arc<Service>> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        svc: &Arc<Service>,
    ) -> Result<Caller, std::convert::Infallible> {
        Ok(Caller(match parts.extensions.get::<ClientAddr>() {
            Some(a) => crate::util::http::client_ip(a.0.ip(), &parts.headers, &svc.trusted_proxies).to_string(),
            None => "?".into(),
        }))
    }
}

/// The host a browser addressed: `Host`, or behind a trusted proxy `X-Forwarded-Host`.
fn addressed_hosts(svc: &Service, req: &axum::extract::Request) -> Vec<String> {
    let h = req.headers();
    let mut hosts: Vec<String> =
        h.get(header::HOST).and_then(|v| v.to_str().ok()).map(|v| vec![v.to_ascii_lowercase()]).unwrap_or_default();
    let from_proxy =
        req.extensions().get::<ClientAddr>().is_some_and(|a| svc.trusted_proxies.iter().any(|t| t.contains(a.0.ip())));
    if from_proxy && let Some(f) = h.get("x-forwarded-host").and_then(|v| v.to_str().ok()) {
        hosts.extend(f.split(',').map(|x| x.trim().to_ascii_lowercase()));
    }
    hosts
}

/// A state-changing request from another site is refused (login CSRF included): a browser names
/// the page's origin in `Origin` (or `Referer`) on every POST, and it must be this service's.
/// A request with neither is not from a browser page (the API's clients) and goes on; the login
/// form also carries a pre-session token, and the API takes JSON only.
async fn same_origin(
    axum::extract::State(svc): axum::extract::State<Arc<Service>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD {
        let h = req.headers();
        let claimed =
            h.get(header::ORIGIN).or_else(|| h.get(header::REFERER)).map(|v| v.to_str().unwrap_or("null").to_string());
        if let Some(o) = claimed {
            let host = url::Url::parse(&o).ok().and_then(|u| {
                let host = u.host_str()?.to_ascii_lowercase();
                Some(match u.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                })
            });
            if !host.is_some_and(|x| addressed_hosts(&svc, &req).contains(&x)) {
                tracing::warn!(origin = %crate::util::printable(&o, 120), path = %req.uri().path(), "refused a request from another site (Origin/Referer)");
                return ApiError::forbidden("cross-site request refused (its Origin is not this service)")
                    .into_response();
            }
        }
        if req.uri().path().starts_with("/api/")
            && !h
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"))
        {
            return ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the API takes JSON (content-type: application/json)".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    // same-origin: our own forms then carry our origin (under no-referrer a browser sends
    // `Origin: null`, which the same-origin check refuses); other sites get no referrer
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self'; media-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An error as the API answers it: `{"error": "..."}` with a status.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    pub fn unauthorized() -> ApiError {
        ApiError(StatusCode::UNAUTHORIZED, "not logged in (POST /api/login)".into())
    }
    pub fn forbidden(why: &str) -> ApiError {
        ApiError(StatusCode::FORBIDDEN, why.into())
    }
    pub fn not_found() -> ApiError {
        ApiError(StatusCode::NOT_FOUND, "no such evidence item".into())
    }
    pub fn internal(e: anyhow::Error) -> ApiError {
        tracing::error!(error = format!("{e:#}"), "review service: request failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error (see the service log)".into())
    }
}

/// The value of a cookie in the request.
pub fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// An authenticated request.
pub struct Authed {
    pub user: User,
    pub session: Session,
    pub token: String,
}

/// The session's user, if the request carries a live session of an enabled account.
pub async fn authenticate(svc: &Service, h: &HeaderMap) -> Result<Option<Authed>, ApiError> {
    let Some(token) = cookie(h, COOKIE) else { return Ok(None) };
    let Some(session) = svc.sessions.get(token).await.map_err(ApiError::internal)? else { return Ok(None) };
    let accounts = svc.accounts().map_err(ApiError::internal)?;
    let Some(user) =
        accounts.get(&session.user).filter(|u| !u.disabled && u.session_valid(&session.created_utc)).cloned()
    else {
        return Ok(None);
    };
    Ok(Some(Authed { user, session, token: token.into() }))
}

/// The request's session; 401 without one.
pub async fn require(svc: &Service, h: &HeaderMap) -> Result<Authed, ApiError> {
    authenticate(svc, h).await?.ok_or_else(ApiError::unauthorized)
}

/// A state-changing request must carry the session's CSRF token (header or form field).
pub fn check_csrf(a: &Authed, given: Option<&str>) -> Result<(), ApiError> {
    match given {
        Some(t) if constant_eq(t.as_bytes(), a.session.csrf.as_bytes()) => Ok(()),
        _ => Err(ApiError::forbidden("missing or wrong CSRF token (x-csrf-token)")),
    }
}

pub(super) fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Roles that may read evidence.
pub fn can_read(r: Role) -> bool {
    matches!(r, Role::Reviewer | Role::Auditor | Role::Admin)
}

/// The session cookie.
pub fn session_cookie(token: &str, hours: f64, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        (hours * 3600.0) as u64,
        if secure { "; Secure" } else { "" }
    )
}

pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}", if secure { "; Secure" } else { "" })
}
