//! The web application `vigil review serve` runs: two wings under one router, one login and one
//! set of rules. [`review`] is the officers' side (queue, item, decisions, export, access log);
//! [`ops`] is the ops console (cameras, thresholds, masks and zones, live status). Both take
//! [`auth`]'s extractors: every request authenticated from its session cookie, every role checked
//! by the extractor the handler names, every state-changing API request carrying the session's CSRF
//! token; every evidence id is validated before it reaches a store path.

pub mod assets;
pub mod auth;
pub mod i18n;
pub mod ops;
pub mod page;
pub mod review;

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::Pipeline;
use crate::review::{Service, session};
use crate::util::http::ClientAddr;
use auth::ApiError;

/// The application's state: the review service (what decisions, items and exports need; its
/// fields read through this) and what only the web side keeps.
pub struct App {
    pub service: Service,
    /// Served over TLS (cookies are `Secure`).
    pub tls: bool,
    /// The workers' live status (the ops console); fed from NATS by [`serve`].
    pub live: Arc<ops::live::Live>,
    pub limiter: session::LoginLimiter,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`[review] trusted_proxies`).
    pub trusted_proxies: Vec<crate::util::http::IpNet>,
    /// One message per session for the next page it shows (the ops rules form's outcome): a
    /// message comes from the server, never from the URL.
    pub flash: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// When each (session, item, file) last had its byte ranges logged: a player's range
    /// requests are one access-log entry per [`review::files::RANGE_SESSION`].
    pub reads: std::sync::Mutex<std::collections::HashMap<(String, String, String), std::time::Instant>>,
    /// The queue's thumbnails, by item id, once made (bounded: cleared past 4,096).
    pub thumbs: std::sync::Mutex<std::collections::HashMap<String, bytes::Bytes>>,
}

impl std::ops::Deref for App {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl App {
    /// Opens the review service over `p` and the web side's state.
    pub async fn open(p: Pipeline, instance: String, tls: bool) -> Result<App> {
        let r = &p.settings.review;
        let limiter = session::LoginLimiter::new(r.max_login_failures);
        let trusted_proxies = r
            .trusted_proxies
            .iter()
            .map(|t| t.parse().map_err(|e: String| anyhow::anyhow!("review.trusted_proxies: {e}")))
            .collect::<Result<Vec<_>>>()?;
        let service = Service::open(p, instance).await?;
        Ok(App {
            service,
            tls,
            live: Default::default(),
            limiter,
            trusted_proxies,
            flash: Default::default(),
            reads: Default::default(),
            thumbs: Default::default(),
        })
    }
}

/// How to start an instance.
pub struct ServeOptions {
    pub listen: Option<String>,
    pub instance: Option<String>,
}

/// Runs the service until the process ends.
pub async fn serve(p: Pipeline, o: ServeOptions) -> Result<()> {
    crate::util::secret::install_crypto_provider();
    let raw = &p.settings.review;
    let listen: std::net::SocketAddr =
        o.listen.as_deref().unwrap_or(&raw.listen).parse().context("review listen address")?;
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, tls = raw.tls_cert.is_some(), "review service listens beyond this machine (not a loopback address): serve it over TLS or behind a TLS reverse proxy");
    }
    let tls = match (&raw.tls_cert, &raw.tls_key) {
        (Some(c), Some(k)) => {
            let base = p.file.parent().unwrap_or(std::path::Path::new("."));
            Some(crate::util::http::tls_config(&base.join(c), &base.join(k))?)
        }
        _ => None,
    };
    if tls.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(address = %listen, "the review service listens beyond this machine without TLS: put it behind a TLS reverse proxy, or set review.tls_cert / tls_key");
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "host".into());
    let instance = o.instance.unwrap_or_else(|| format!("review-{host}-{}", bound.port()));
    if !crate::rules::valid_id(&instance) {
        anyhow::bail!("instance id {instance:?}: 1-64 characters of A-Z a-z 0-9 - _");
    }
    let mut app = App::open(p, instance.clone(), tls.is_some()).await?;
    if let Some(n) = &app.pipeline.nats {
        app.live = ops::live::Live::follow(n.clone(), app.site().to_string());
    }
    let app = Arc::new(app);
    let router = router(app.clone());
    crate::util::http::serve_with(listener, router, tls.clone(), app.trusted_proxies.clone())?;
    tracing::info!(address = %bound, instance = %instance, tls = tls.is_some(), "review service listening");
    std::future::pending::<()>().await;
    Ok(())
}

/// Both wings, the shared assets, and the layers every request passes (same origin, security
/// headers).
pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .merge(review::routes())
        .merge(ops::routes())
        .route(
            "/static/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], assets::JS) }),
        )
        .route("/static/app.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], assets::CSS) }))
        .layer(axum::middleware::from_fn_with_state(app.clone(), same_origin))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// The host a browser addressed: `Host`, or behind a trusted proxy `X-Forwarded-Host`.
fn addressed_hosts(svc: &App, req: &axum::extract::Request) -> Vec<String> {
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
    axum::extract::State(svc): axum::extract::State<Arc<App>>,
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
