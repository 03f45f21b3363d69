//! `/metrics` (OpenMetrics text) and `/health` (JSON; 503 while any camera has an active
//! condition or the spool is full), served with axum.

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

pub fn router() -> axum::Router {
    axum::Router::new().route("/metrics", get(metrics)).route("/health", get(health)).fallback(not_found)
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        super::metrics::get().render(),
    )
}

async fn health() -> impl IntoResponse {
    let h = super::health_json();
    let code = if h["ok"] == true { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(h))
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "try /metrics or /health\n")
}

/// Serves both on `addr` until the process ends; returns the bound address.
pub async fn serve(addr: std::net::SocketAddr) -> std::io::Result<std::net::SocketAddr> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    crate::util::http::serve(l, router(), None)
}
