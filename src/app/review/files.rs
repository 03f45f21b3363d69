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

/// An item's file as its signed manifest names it, checked against the manifest's hash.
async fn verified(svc: &App, id: &str, name: &str) -> Result<(bytes::Bytes, String), ApiError> {
    if !valid_id(id) {
        return Err(ApiError::not_found());
    }
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
    match crate::verify::read_artifact(&svc.store, &art).await.map_err(ApiError::internal)? {
        Some(bytes) => Ok((bytes, art.sha256)),
        None => {
            Err(ApiError(StatusCode::CONFLICT, format!("{name} of {id}: its SHA-256 differs from the signed manifest")))
        }
    }
}

/// Whether this session's reads of `(id, what)` are due an access-log entry: the first read, and
/// again once [`RANGE_SESSION`] has passed. Asking notes the read (the queue page asks for the
/// thumbnails it shows and logs them in its own entry).
pub(super) fn due(svc: &App, token: &str, id: &str, what: &str) -> bool {
    let read = (crate::util::sha256_hex(token.as_bytes()), id.to_string(), what.to_string());
    let mut m = svc.reads.lock().unwrap_or_else(|p| p.into_inner());
    m.retain(|_, t| t.elapsed() < RANGE_SESSION);
    match m.get(&read) {
        Some(_) => false,
        None => {
            m.insert(read, std::time::Instant::now());
            true
        }
    }
}

/// The name a thumbnail's reads are noted under.
pub(super) const THUMB: &str = "snapshot-annotated.jpg (thumbnail)";

/// Width of a queue thumbnail, pixels.
const THUMB_W: u32 = 160;

/// `GET /evidence/{id}/thumb.jpg`: the annotated snapshot (masked, as stored) scaled to
/// [`THUMB_W`] pixels wide for the queue. Kept in memory once made; logged like any file read
/// unless the queue page that shows it has logged it.
pub async fn thumb(
    State(svc): State<Arc<App>>,
    Path(id): Path<String>,
    a: Api<Readers>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let cached = svc.thumbs.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned();
    let jpeg = match cached {
        Some(j) => j,
        None => {
            let name = crate::evidence::manifest::ItemFile::SnapshotAnnotated.file_name();
            let (bytes, _) = verified(&svc, &id, name).await?;
            let jpeg = tokio::task::spawn_blocking(move || shrink(&bytes))
                .await
                .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?
                .map_err(|e| ApiError::internal(anyhow::anyhow!("thumbnail of {id}: {e}")))?;
            let mut t = svc.thumbs.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() >= 4096 {
                t.clear();
            }
            t.insert(id.clone(), jpeg.clone());
            jpeg
        }
    };
    if due(&svc, &a.token, &id, THUMB) {
        let what = format!("{THUMB}, {} bytes", jpeg.len());
        svc.record(crate::review::access(&a.user, Action::FileRead, Outcome::Ok, Some(&id), &what, &caller.0)).await;
    }
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=600")),
        ],
        jpeg,
    )
        .into_response())
}

/// A JPEG scaled to [`THUMB_W`] wide (aspect kept).
fn shrink(jpeg: &[u8]) -> Result<bytes::Bytes, image::ImageError> {
    let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)?;
    let h = (img.height() as u64 * THUMB_W as u64 / img.width().max(1) as u64).max(1) as u32;
    let small = image::imageops::thumbnail(&img.to_rgb8(), THUMB_W, h);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 75).encode_image(&small)?;
    Ok(out.into())
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
    let (bytes, sha256) = verified(&svc, &id, &name).await?;
    let len = bytes.len() as u64;
    let r = range(&h, len);
    let log_now = due(&svc, &a.token, &id, &name);
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
    hd.insert("x-sha256", HeaderValue::from_str(&sha256).expect("hex"));
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
