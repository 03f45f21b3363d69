//! The frame every page shares (header, navigation for the role, language switch, logout), the
//! pages every wing may answer with (forbidden, error), and times shown in the site's zone.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

use super::App;
use super::i18n::{Lang, Msg};
use crate::review::accounts::{Role, User};

pub fn lang_of(h: &HeaderMap, q: Option<&str>) -> Lang {
    Lang::pick(q, crate::util::http::cookie(h, "vigil_lang"))
}

/// The page around `body`; sets the language cookie when the switch was used.
pub fn page(lang: Lang, title: &str, user: Option<&User>, here: &str, body: Markup) -> Response {
    let m = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — vigil" }
                link rel="stylesheet" href="/static/app.css";
            }
            body {
                header {
                    strong { "vigil · " (lang.t(Msg::title)) }
                    @if let Some(u) = user {
                        @if u.role.reads_evidence() { a href="/queue" { (lang.t(Msg::queue)) } }
                        @if matches!(u.role, Role::Auditor | Role::Admin) { a href="/audit" { (lang.t(Msg::audit)) } }
                        @if u.role == Role::Ops { a href="/ops" { (lang.t(Msg::ops)) } a href="/ops/rules" { (lang.t(Msg::rules)) } a href="/ops/masks" { (lang.t(Msg::masks)) } }
                    }
                    span.spacer {}
                    a #lang href={ (here) (if here.contains('?') { "&" } else { "?" }) "lang=" (lang.other().param()) } {
                        // (the switch names the other language in that language)
                        (match lang { Lang::Zh => "English", Lang::En => "中文" })
                    }
                    @if let Some(u) = user {
                        span #me data-role=(u.role.name()) {
                            span.d { (u.name) } " (" (lang.t(super::i18n::role_msg(u.role)))
                            @if !u.officer_id.is_empty() { "，" (lang.t(Msg::officer)) " " span.d { (u.officer_id) } }
                            ")"
                        }
                        form method="post" action="/logout" style="display:inline" {
                            button #logout type="submit" { (lang.t(Msg::logout)) }
                        }
                    }
                }
                main { (body) }
                script src="/static/app.js" {}
            }
        }
    };
    let mut r = m.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&crate::util::http::set_cookie(
            "vigil_lang",
            lang.param(),
            "/",
            31_536_000,
            false,
            false,
        ))
        .expect("cookie"),
    );
    r
}

pub fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

pub fn forbidden(lang: Lang, user: &User) -> Response {
    let mut r = page(lang, lang.t(Msg::forbidden), Some(user), "/queue", html! { h2.err { (lang.t(Msg::forbidden)) } });
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

pub fn error_page(lang: Lang, user: Option<&User>, code: StatusCode, msg: &str) -> Response {
    let mut r =
        page(lang, lang.t(Msg::error), user, "/queue", html! { h2.err { (lang.t(Msg::error)) } p #error { (msg) } });
    *r.status_mut() = code;
    r
}

/// A stored UTC time in the site's local time: `2026-11-24 06:10:44 (+08:00)`.
pub fn local(svc: &App, utc: &str) -> String {
    match crate::util::time::parse_rfc3339(utc) {
        Ok(t) => crate::util::time::shown(t, svc.pipeline.utc_offset_s),
        Err(_) => utc.to_string(),
    }
}

#[derive(serde::Deserialize)]
pub struct LangQuery {
    pub lang: Option<String>,
}

pub fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

pub fn select(name: &str, current: &str, choices: &[(&str, &str)]) -> Markup {
    html! {
        select name=(name) {
            @for (v, label) in choices {
                option value=(v) selected[*v == current] { (label) }
            }
        }
    }
}
