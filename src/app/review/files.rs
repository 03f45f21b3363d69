//! An item's files in the page: the clip plays with HTTP range requests, the snapshots show. Each
//! fetch checks the file against the item's signed manifest first. Every byte served is in the
//! access log: a session's reads of one file are one `file_read` entry (naming the first range)
//! per [`RANGE_SESSION`], so a player's many range requests neither go unlogged nor flood the
//! log; `clip_played` is logged when the page's player starts playing ([`played`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::app::auth::{Api, ApiError, Caller, Readers};
use crate::audit_log::{Action, Outcome};
use crate::review::items::valid_id;

/// How long one access-log entry covers a session's reads of one file.
pub const RANGE_SESSION: std::time::Duration = std::time::Duration::from_secs(600);

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` of a `len`-byte file.
fn range(h: &HeaderMap, len: u64) -> Option<std::ops::Range<u64>> {
    let v = h.get(header::RANGE)?.to_str().ok()?.strip_prefix("bytes=")?;
    let (a, b) = v.split_once('-')?;
    let r = match (a.trim(), b.trim()) {
        ("", n) => len.saturating_sub(n.parse().ok()?)..len,
        (a, "") => a.parse().ok()?..len,
        (a, b) => a.parse().ok()?..(b.parse::<u64>().ok()? + 1).min(len),
    };
    (r.start < r.end && r.end <= len).then_some(r)
}

pub async fn file(
    State(svc): State<Arc<App>>,
    Path((id, name)): Path<(String, String)>,
    a: Api<Readers>,
    caller: Caller,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(file) = crate::evidence::manifest::ItemFile::media(&name) else { return Err(ApiError::not_found()) };
    let ctype = file.content_type();
    if !valid_id(&id) {
        return Err(ApiError::not_found());
    }
    // the item's signed manifest names the file and its hash
    let mut items = crate::verify::list_items(&svc.store).await.map_err(ApiError::internal)?;
    let Some(it) = items.iter_mut().find(|i| i.id == id) else { return Err(ApiError::not_found()) };
    crate::verify::load_manifest(&svc.store, &svc.worker_key, it).await;
    let art =
        it.manifest.as_ref().and_then(|m| m.artifacts.values().find(|x| x.key.ends_with(&format!("/{name}"))).cloned());
    let (Some(art), true) = (art, it.problems.is_empty()) else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{name} of {id} fails verification: {}", it.problems.join("; ")),
        ));
    };
    let bytes = svc.store.get(&art.key).await.map_err(ApiError::internal)?;
    if crate::util::sha256_hex(&bytes) != art.sha256 {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{name} of {id}: its SHA-256 differs from the signed manifest"),
        ));
    }
    let len = bytes.len() as u64;
    let r = range(&h, len);
    let read = (crate::util::sha256_hex(a.token.as_bytes()), id.clone(), name.clone());
    let log_now = {
        let mut m = svc.reads.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, t| t.elapsed() < RANGE_SESSION);
        match m.get(&read) {
            Some(_) => false,
            None => {
                m.insert(read, std::time::Instant::now());
                true
            }
        }
    };
    if log_now {
        let what = match &r {
            Some(r) => {
                format!("{name} bytes {}-{} of {len} (and this session's further reads for 10 min)", r.start, r.end - 1)
            }
            None => format!("{name}, {len} bytes"),
        };
        svc.record(crate::review::access(&a.user, Action::FileRead, Outcome::Ok, Some(&id), &what, &caller.0)).await;
    }
    let mut resp = match r {
        Some(r) => {
            let body = bytes.slice(r.start as usize..r.end as usize);
            let mut resp = (StatusCode::PARTIAL_CONTENT, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {}-{}/{len}", r.start, r.end - 1)).expect("header"),
            );
            resp
        }
        None if h.contains_key(header::RANGE) => {
            let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{len}")).expect("header"));
            return Ok(resp);
        }
        None => (StatusCode::OK, bytes).into_response(),
    };
    let hd = resp.headers_mut();
    hd.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    hd.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    hd.insert("x-sha256", HeaderValue::from_str(&art.sha256).expect("hex"));
    Ok(resp)
}

/// `POST /evidence/{id}/played` (x-csrf-token): the page's player started playing the clip.
pub async fn played(
    State(svc): State<Arc<App>>,
    Path(id): Path<String>,
    a: Api<Readers>,
    caller: Caller,
) -> Result<Response, ApiError> {
    if !valid_id(&id)
        || !crate::verify::list_items(&svc.store).await.map_err(ApiError::internal)?.iter().any(|i| i.id == id)
    {
        return Err(ApiError::not_found());
    }
    svc.record(crate::review::access(
        &a.user,
        Action::ClipPlayed,
        Outcome::Ok,
        Some(&id),
        crate::evidence::manifest::ItemFile::Clip.file_name(),
        &caller.0,
    ))
    .await;
    Ok(axum::Json(serde_json::json!({ "ok": true })).into_response())
}
