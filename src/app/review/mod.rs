//! The review wing: server-rendered pages ([`pages`], zh-CN by default), a JSON API ([`api`])
//! under the same rules, and the evidence files with their byte ranges ([`files`]).

pub mod api;
pub mod files;
pub mod pages;

use std::sync::Arc;

use axum::routing::{get, post};

use super::App;

pub fn routes() -> axum::Router<Arc<App>> {
    axum::Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_page).post(pages::login_form))
        .route("/logout", post(pages::logout_form))
        .route("/queue", get(pages::queue))
        .route("/audit", get(pages::audit))
        .route("/evidence/{id}", get(pages::item))
        .route("/evidence/{id}/decision", post(pages::decision_form))
        .route("/evidence/{id}/file/{name}", get(files::file))
        .route("/evidence/{id}/played", post(files::played))
        .route("/evidence/{id}/thumb.jpg", get(files::thumb))
        .route("/evidence/{id}/package", get(api::package))
        .route("/api/login", post(api::login))
        .route("/api/logout", post(api::logout))
        .route("/api/evidence", get(api::list))
        .route("/api/evidence/{id}", get(api::get_item))
        .route("/api/evidence/{id}/decision", post(api::decision))
        .route("/api/evidence/{id}/package", get(api::package))
        .route("/api/audit", get(api::audit))
}
