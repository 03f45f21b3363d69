//! The worker's live side on core NATS (outside the evidence stream, nothing kept): periodic
//! status reports for the ops console, and snapshots on request — a recent analysis frame of a
//! camera, masked as stored evidence is, or unmasked for the ops role drawing a new mask (audited).
//!
//! Snapshot protocol: a request on `vigil-live.snapshot.<site>.<camera>` with a JSON body
//! [`SnapshotAsk`]; the reply is the JPEG, with headers `Vigil-Snapshot: masked|unmasked`,
//! `Vigil-Mask-Sha256` (the mask in force, `none` without one), `Vigil-Width`/`Vigil-Height`; or,
//! when no frame can be had, an empty body with `Vigil-Error`. Only the review service should be
//! allowed to publish on these subjects (NATS permissions): it enforces the ops role, the worker
//! records who asked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::analysis::{CameraControl, SnapshotRequest};
use super::audit::AuditWriter;
use super::overrides::{AuditRecord, MASK_RULE};
use crate::telemetry::status::Reporter;

/// A snapshot request's body.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotAsk {
    /// The frame before the privacy mask (audited).
    #[serde(default)]
    pub unmasked: bool,
    /// Who asks (the logged-in user of the ops console).
    pub by: String,
    #[serde(default)]
    pub reason: String,
}

/// Largest request body.
const MAX_ASK: usize = 4096;
/// How long a snapshot waits for the camera's next analysis frame.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);
/// JPEG quality of snapshots (a picture to draw on, not evidence).
const SNAPSHOT_QUALITY: u8 = 80;

/// Publishes a status report every `every` until the task is aborted.
pub async fn status_reports(client: async_nats::Client, subject: String, mut reporter: Reporter, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let body = serde_json::to_vec(&reporter.report()).unwrap_or_default();
        // best effort: a report lost while NATS is away is superseded by the next one
        if let Err(e) = client.publish(subject.clone(), body.into()).await {
            tracing::debug!(error = %e, "status report not sent");
        }
    }
}

/// Answers snapshot requests for the worker's cameras until the task is aborted.
pub async fn snapshots(
    client: async_nats::Client,
    site: String,
    cameras: BTreeMap<String, CameraControl>,
    audit: Arc<AuditWriter>,
) {
    let filter = crate::util::subject::snapshot(&site, "*");
    let mut sub = match client.subscribe(filter.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, subject = %filter, "snapshots off: cannot subscribe");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply.clone() else { continue };
        let camera = msg.subject.as_str().rsplit('.').next().unwrap_or_default().to_string();
        let Some(ctl) = cameras.get(&camera).cloned() else { continue };
        let (client, site, audit) = (client.clone(), site.clone(), audit.clone());
        tokio::spawn(async move {
            let mut headers = async_nats::HeaderMap::new();
            let body = match answer(&site, &camera, &ctl, &msg.payload, &audit).await {
                Ok((jpeg, unmasked, mask, (w, h))) => {
                    headers.insert("Vigil-Snapshot", if unmasked { "unmasked" } else { "masked" });
                    headers.insert("Vigil-Mask-Sha256", mask.as_str());
                    headers.insert("Vigil-Width", w.to_string().as_str());
                    headers.insert("Vigil-Height", h.to_string().as_str());
                    jpeg
                }
                Err(why) => {
                    headers.insert("Vigil-Error", crate::util::printable(&why, 300).as_str());
                    Vec::new()
                }
            };
            if let Err(e) = client.publish_with_headers(reply, headers, body.into()).await {
                tracing::debug!(error = %e, camera, "snapshot reply not sent");
            }
        });
    }
}

type Answer = (Vec<u8>, bool, String, (u32, u32));

async fn answer(
    site: &str,
    camera: &str,
    ctl: &CameraControl,
    body: &[u8],
    audit: &AuditWriter,
) -> Result<Answer, String> {
    if body.len() > MAX_ASK {
        return Err(format!("request is {} bytes, more than {MAX_ASK}", body.len()));
    }
    let ask: SnapshotAsk =
        serde_json::from_slice(body).map_err(|e| format!("request is not a snapshot request: {e}"))?;
    crate::util::check_label("by", &ask.by, 1, super::overrides::limits::BY).map_err(|e| e.to_string())?;
    crate::util::check_label("reason", &ask.reason, 0, super::overrides::limits::REASON).map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let mut pending = ctl.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        // requests of a camera that is down pile up until its next frame: drop the abandoned ones
        pending.retain(|r| !r.reply.is_closed());
        if pending.len() >= 16 {
            return Err(format!("camera {camera} has 16 snapshot requests waiting for a frame"));
        }
        pending.push(SnapshotRequest { unmasked: ask.unmasked, reply: tx });
    }
    let (frame, mask) = match tokio::time::timeout(SNAPSHOT_WAIT, rx).await {
        Ok(Ok(f)) => f,
        _ => return Err(format!("camera {camera} gave no frame within {} s (is it down?)", SNAPSHOT_WAIT.as_secs())),
    };
    if ask.unmasked {
        tracing::warn!(camera, by = %ask.by, "unmasked snapshot served (ops console)");
        let rec = AuditRecord {
            time_utc: crate::util::rfc3339(chrono::Utc::now()),
            site: site.into(),
            camera: camera.into(),
            rule: MASK_RULE.into(),
            source: "ops console: unmasked snapshot".into(),
            by: ask.by.clone(),
            reason: ask.reason.clone(),
            outcome: "unmasked view served".into(),
            problem: None,
            old: None,
            new: None,
            old_revision: Some(format!("sha256:{mask}")),
            new_revision: None,
        };
        audit.write(&rec).await;
    }
    let size = (frame.width, frame.height);
    let jpeg = tokio::task::spawn_blocking(move || frame.to_jpeg(SNAPSHOT_QUALITY)).await.map_err(|e| e.to_string())?;
    Ok((jpeg, ask.unmasked, mask, size))
}
