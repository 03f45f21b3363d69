//! Who is asking: the client's address ([`Caller`]), the session ([`Authed`]), and the extractors
//! every handler takes instead of repeating the preamble: [`Api`] (401/403 as JSON, the CSRF
//! header on every state-changing request) and [`Page`] (the login page or the forbidden page),
//! each carrying the roles it admits ([`Roles`]).

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::App;
use super::i18n::Lang;
use crate::review::accounts::{Role, User};
use crate::review::session::{COOKIE, Session};
use crate::util::http::ClientAddr;

/// The client's address: the connection's peer, or behind a trusted proxy the address it
/// forwards for ([`crate::util::http::client_ip`]).
pub struct Caller(pub String);

impl axum::extract::FromRequestParts<Arc<App>> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        svc: &Arc<App>,
    ) -> Result<Caller, std::convert::Infallible> {
        Ok(Caller(match parts.extensions.get::<ClientAddr>() {
            Some(a) => crate::util::http::client_ip(a.0.ip(), &parts.headers, &svc.trusted_proxies).to_string(),
            None => "?".into(),
        }))
    }
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

pub use crate::util::http::cookie;

/// An authenticated request.
pub struct Authed {
    pub user: User,
    pub session: Session,
    pub token: String,
}

/// The session's user, if the request carries a live session of an enabled account.
pub async fn authenticate(svc: &App, h: &HeaderMap) -> Result<Option<Authed>, ApiError> {
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
pub async fn require(svc: &App, h: &HeaderMap) -> Result<Authed, ApiError> {
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

/// The session cookie.
pub fn session_cookie(token: &str, hours: f64, secure: bool) -> String {
    crate::util::http::set_cookie(COOKIE, token, "/", (hours * 3600.0) as i64, secure, true)
}

pub fn clear_cookie(secure: bool) -> String {
    crate::util::http::set_cookie(COOKIE, "", "/", 0, secure, true)
}

/// The roles an extractor admits, and what a refused request is told.
pub trait Roles: Send + Sync + 'static {
    fn admits(r: Role) -> bool;
    const REFUSED: &'static str;
}

/// Any logged-in account.
pub struct Anyone;
/// Accounts that read evidence: reviewers, auditors, admins.
pub struct Readers;
/// Reviewers: they decide.
pub struct Reviewers;
/// Auditors and admins: the access log.
pub struct Auditors;
/// The ops console's role.
pub struct OpsRole;

impl Roles for Anyone {
    fn admits(_: Role) -> bool {
        true
    }
    const REFUSED: &'static str = "";
}

impl Roles for Readers {
    fn admits(r: Role) -> bool {
        r.reads_evidence()
    }
    const REFUSED: &'static str = "this role does not read evidence";
}

impl Roles for Reviewers {
    fn admits(r: Role) -> bool {
        r == Role::Reviewer
    }
    const REFUSED: &'static str = "only reviewers decide";
}

impl Roles for Auditors {
    fn admits(r: Role) -> bool {
        matches!(r, Role::Auditor | Role::Admin)
    }
    const REFUSED: &'static str = "the access log is for auditors and admins";
}

impl Roles for OpsRole {
    fn admits(r: Role) -> bool {
        r == Role::Ops
    }
    const REFUSED: &'static str = "the ops console is for the ops role";
}

/// An API request by a logged-in account of the roles `R`: 401 without a session, 403 for
/// another role, and a state-changing request without the session's CSRF token
/// (`x-csrf-token`) is refused (403).
pub struct Api<R: Roles = Anyone>(pub Authed, PhantomData<R>);

impl<R: Roles> std::ops::Deref for Api<R> {
    type Target = Authed;
    fn deref(&self) -> &Authed {
        &self.0
    }
}

impl<R: Roles> FromRequestParts<Arc<App>> for Api<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let a = authenticate(app, &parts.headers).await?.ok_or_else(ApiError::unauthorized)?;
        if !R::admits(a.user.role) {
            return Err(ApiError::forbidden(R::REFUSED));
        }
        if parts.method != Method::GET && parts.method != Method::HEAD {
            check_csrf(&a, parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))?;
        }
        Ok(Api(a, PhantomData))
    }
}

/// A page request by a logged-in account of the roles `R`, in the language it asked for
/// (`?lang=`, else its cookie): without a session the login page, for another role the
/// forbidden page. A form's CSRF token comes in its body: its handler checks it
/// ([`check_csrf`]).
pub struct Page<R: Roles = Anyone> {
    pub lang: Lang,
    pub auth: Authed,
    _roles: PhantomData<R>,
}

impl<R: Roles> std::ops::Deref for Page<R> {
    type Target = Authed;
    fn deref(&self) -> &Authed {
        &self.auth
    }
}

impl<R: Roles> FromRequestParts<Arc<App>> for Page<R> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let asked = parts.uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "lang").map(|(_, v)| v.into_owned())
        });
        let lang = super::page::lang_of(&parts.headers, asked.as_deref());
        let auth = match authenticate(app, &parts.headers).await {
            Ok(Some(a)) => a,
            Ok(None) => return Err(super::page::to_login()),
            Err(e) => return Err(e.into_response()),
        };
        if !R::admits(auth.user.role) {
            return Err(super::page::forbidden(lang, &auth.user));
        }
        Ok(Page { lang, auth, _roles: PhantomData })
    }
}

impl Authed {
    /// 403 unless the account has one of the roles `R` (for a handler that records a refusal in
    /// the access log before answering it, and so checks the role itself).
    pub fn must<R: Roles>(&self) -> Result<(), ApiError> {
        if R::admits(self.user.role) { Ok(()) } else { Err(ApiError::forbidden(R::REFUSED)) }
    }
}
