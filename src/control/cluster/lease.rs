//! Mechanism: leases on cameras in a NATS KV bucket (`vigil-leases`).
//!
//! - The bucket's `max_age` is the lease TTL and it keeps one value per key, so **every value
//!   expires TTL after it was written, whoever wrote it and whether or not its writer is alive**
//!   (a value written by `update` carries no per-message TTL of its own; the bucket's limit
//!   applies to every message).
//! - `<site>.camera.<camera>`: the holder ([`CameraLease`]). Claimed with `create` (succeeds only
//!   while the key is absent, expired or deleted), renewed with `update` at the revision the
//!   holder last wrote (fails once anyone else wrote it: the lease is lost), handed over with a
//!   delete at that revision.
//! - `<site>.worker.<worker>`: the worker's presence and load ([`WorkerPresence`]), put with every
//!   renewal; it expires like a lease, so the live workers are those with a key.
//!
//! Watching the bucket gives each worker a [`View`]: the values it saw and when they expire.
//! Expiry by `max_age` sends no notice to watchers, so the view expires entries itself, from the
//! time the server wrote them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

pub fn camera_key(site: &str, camera: &str) -> String {
    format!("{site}.camera.{camera}")
}

pub fn worker_key(site: &str, worker: &str) -> String {
    format!("{site}.worker.{worker}")
}

/// `<site>.camera.<camera>`: who runs the camera.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CameraLease {
    pub worker: String,
    pub acquired_utc: String,
    pub renewed_utc: String,
    /// The revision that created this tenure (0 in the creating write itself).
    pub acquired_revision: u64,
}

/// `<site>.worker.<worker>`: a live worker and its load.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerPresence {
    pub worker: String,
    pub cameras: Vec<String>,
    pub max_cameras: usize,
    /// Analysed and dropped frames per second over its cameras, since its previous report.
    pub analysed_fps: f64,
    pub dropped_fps: f64,
    /// Dropped frames lately: it claims no camera another worker could take.
    pub dropping: bool,
    pub started_utc: String,
    pub renewed_utc: String,
}

/// The lease bucket, created when missing with `max_age` = `ttl`, one value per key. Returns it
/// with the TTL in force: an existing bucket's own `max_age` (logged when it differs).
pub async fn bucket(
    client: async_nats::Client,
    name: &str,
    ttl: Duration,
    replicas: usize,
) -> Result<(kv::Store, Duration)> {
    let js = async_nats::jetstream::new(client);
    // a cluster busy electing a leader answers late: a few tries before giving up
    let mut tries = 0;
    let store = loop {
        tries += 1;
        match open_bucket(&js, name, ttl, replicas).await {
            Ok(s) => break s,
            Err(e) if tries < 4 && format!("{e:#}").contains("timed out") => {
                tracing::warn!(bucket = name, error = %format!("{e:#}"), "NATS KV bucket did not answer; trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let age = store.status().await.map(|s| s.info.config.max_age).unwrap_or(ttl);
    if age.is_zero() {
        anyhow::bail!(
            "NATS KV bucket {name} has no max_age: its leases would never expire; delete it or give it a max_age"
        );
    }
    if age != ttl {
        tracing::warn!(
            bucket = name,
            max_age_s = age.as_secs_f64(),
            lease_ttl_s = ttl.as_secs_f64(),
            "the lease bucket exists with another max_age: leases expire after the bucket's"
        );
    }
    Ok((store, age))
}

async fn open_bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store> {
    Ok(match js.get_key_value(name).await {
        Ok(kv) => kv,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: name.into(),
                history: 1,
                max_age: ttl,
                num_replicas: replicas,
                description: "vigil cluster leases: <site>.camera.<camera> -> holder, <site>.worker.<id> -> presence; \
                              max_age is the lease TTL"
                    .into(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("NATS KV bucket {name}"))?,
    })
}

/// A value seen in the bucket.
#[derive(Debug, Clone)]
pub struct Seen {
    pub value: bytes::Bytes,
    pub revision: u64,
    /// When the server wrote it (UTC).
    pub written: chrono::DateTime<chrono::Utc>,
    /// When it expires, on this machine's monotonic clock.
    pub expires: Instant,
    /// A camera key's holder (parsed once, when seen).
    pub holder: Option<String>,
}

/// What a worker saw of the bucket: the current value of each key, until it expires.
#[derive(Debug, Default)]
pub struct View {
    entries: BTreeMap<String, Seen>,
    /// The last holder of each camera key, kept after its lease ended (for hand-over events).
    last_worker: BTreeMap<String, String>,
    pub synced: bool,
    /// Counts deletes seen (a lease handed over): the manager acts on them before its next tick.
    pub releases: u64,
}

fn utc_of(t: time::OffsetDateTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_default()
}

impl View {
    pub fn apply(&mut self, e: &kv::Entry, ttl: Duration) {
        match e.operation {
            kv::Operation::Put => {
                let written = utc_of(e.created);
                let age = (chrono::Utc::now() - written).to_std().unwrap_or_default();
                let holder = serde_json::from_slice::<CameraLease>(&e.value).ok().map(|l| l.worker);
                if let Some(w) = &holder {
                    self.last_worker.insert(e.key.clone(), w.clone());
                }
                self.entries.insert(
                    e.key.clone(),
                    Seen {
                        value: e.value.clone(),
                        revision: e.revision,
                        written,
                        expires: Instant::now() + ttl.saturating_sub(age),
                        holder,
                    },
                );
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                self.entries.remove(&e.key);
                self.releases += 1;
            }
        }
    }

    /// The live value of `key`.
    pub fn get(&self, key: &str, now: Instant) -> Option<&Seen> {
        self.entries.get(key).filter(|s| s.expires > now)
    }

    /// Live values whose key starts with `prefix`.
    pub fn live<'a>(&'a self, prefix: &'a str, now: Instant) -> impl Iterator<Item = (&'a String, &'a Seen)> + 'a {
        self.entries
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .filter(move |(_, s)| s.expires > now)
    }

    pub fn last_worker(&self, key: &str) -> Option<&str> {
        self.last_worker.get(key).map(String::as_str)
    }
}

/// Follows the bucket's keys under `<site>.` into `view` (current values first, then changes),
/// re-watching after an error, until the task is dropped.
pub async fn follow(kv: kv::Store, site: String, ttl: Duration, view: std::sync::Arc<parking_lot::Mutex<View>>) {
    loop {
        let r: Result<()> = async {
            let mut w = kv.watch_with_history(format!("{site}.>")).await.context("lease watch")?;
            while let Some(e) = w.next().await {
                let e = e.context("lease watch")?;
                let mut v = view.lock();
                v.apply(&e, ttl);
                if e.delta == 0 {
                    v.synced = true;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(error = format!("{e:#}"), "cluster: lease watch interrupted; watching again");
        }
        view.lock().synced = true;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How a write to a lease went.
#[derive(Debug)]
pub enum Write {
    /// Written at this revision.
    Ok(u64),
    /// Someone else holds the key (create: it exists; update or delete: it moved on).
    Lost,
    /// NATS did not answer in time (the lease may still be ours until its deadline).
    Failed(String),
}

fn outcome<E: std::fmt::Display>(
    r: Result<Result<u64, E>, tokio::time::error::Elapsed>,
    conflict: impl Fn(&E) -> bool,
) -> Write {
    match r {
        Ok(Ok(rev)) => Write::Ok(rev),
        Ok(Err(e)) if conflict(&e) => Write::Lost,
        Ok(Err(e)) => Write::Failed(e.to_string()),
        Err(_) => Write::Failed("timed out".into()),
    }
}

/// Claims `key` if nobody holds it.
pub async fn create(kv: &kv::Store, key: &str, value: bytes::Bytes, within: Duration) -> Write {
    outcome(tokio::time::timeout(within, kv.create(key, value)).await, |e: &kv::CreateError| {
        matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
    })
}

/// Renews `key` held at `revision`.
pub async fn renew(kv: &kv::Store, key: &str, value: bytes::Bytes, revision: u64, within: Duration) -> Write {
    outcome(tokio::time::timeout(within, kv.update(key, value, revision)).await, |e: &kv::UpdateError| {
        matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision)
    })
}

/// The revision of `key` if its current value is a lease held by `worker` (its own write whose
/// answer was lost), else `None`.
pub async fn ours(kv: &kv::Store, key: &str, worker: &str, within: Duration) -> Option<u64> {
    let e = tokio::time::timeout(within, kv.entry(key)).await.ok()?.ok()??;
    let l: CameraLease = serde_json::from_slice(&e.value).ok()?;
    (l.worker == worker && e.operation == kv::Operation::Put).then_some(e.revision)
}

/// Hands `key` over: deletes it if it is still at `revision`.
pub async fn release(kv: &kv::Store, key: &str, revision: u64, within: Duration) -> Write {
    let r = tokio::time::timeout(within, kv.delete_expect_revision(key, Some(revision))).await;
    outcome(r.map(|r| r.map(|()| revision)), |e: &kv::DeleteError| {
        matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision)
    })
}

/// A camera's lease as `vigil cluster status` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CameraRow {
    pub camera: String,
    /// The holder; null while nobody runs the camera.
    pub worker: Option<String>,
    /// Seconds since the holder took it.
    pub lease_age_s: Option<f64>,
    /// Seconds since its last renewal.
    pub renewed_s_ago: Option<f64>,
    pub revision: Option<u64>,
    pub acquired_revision: Option<u64>,
}

/// A live worker as `vigil cluster status` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct WorkerRow {
    pub worker: String,
    pub cameras: usize,
    pub max_cameras: usize,
    pub analysed_fps: f64,
    pub dropped_fps: f64,
    pub dropping: bool,
    pub started_utc: String,
    pub seen_s_ago: f64,
}

/// `vigil cluster status --json`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Status {
    pub site: String,
    pub bucket: String,
    pub lease_ttl_s: f64,
    pub cameras: Vec<CameraRow>,
    pub workers: Vec<WorkerRow>,
}

impl Status {
    /// Before any worker made the bucket: every camera run by nobody.
    pub fn nobody(site: &str, bucket: &str, ttl: Duration, cameras: &[String]) -> Status {
        let cameras = cameras
            .iter()
            .map(|c| CameraRow {
                camera: c.clone(),
                worker: None,
                lease_age_s: None,
                renewed_s_ago: None,
                revision: None,
                acquired_revision: None,
            })
            .collect();
        Status {
            site: site.into(),
            bucket: bucket.into(),
            lease_ttl_s: ttl.as_secs_f64(),
            cameras,
            workers: Vec::new(),
        }
    }
}

/// Reads the bucket once: each camera of `cameras` with its holder, and the live workers.
pub async fn status(kv: &kv::Store, site: &str, cameras: &[String], ttl: Duration) -> Result<Status> {
    let mut view = View::default();
    for e in crate::util::nats::kv_entries(kv, &format!("{site}.")).await? {
        view.apply(&e, ttl);
    }
    let (now, utc) = (Instant::now(), chrono::Utc::now());
    let secs = |t: chrono::DateTime<chrono::Utc>| ((utc - t).num_milliseconds().max(0) as f64) / 1000.0;
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&chrono::Utc));
    let cameras = cameras
        .iter()
        .map(|c| {
            let seen = view.get(&camera_key(site, c), now);
            let lease = seen.and_then(|s| serde_json::from_slice::<CameraLease>(&s.value).ok());
            CameraRow {
                camera: c.clone(),
                worker: lease.as_ref().map(|l| l.worker.clone()),
                lease_age_s: lease.as_ref().and_then(|l| parse(&l.acquired_utc)).map(secs),
                renewed_s_ago: seen.map(|s| secs(s.written)),
                revision: seen.map(|s| s.revision),
                acquired_revision: lease
                    .as_ref()
                    .zip(seen)
                    .map(|(l, s)| if l.acquired_revision == 0 { s.revision } else { l.acquired_revision }),
            }
        })
        .collect();
    let prefix = format!("{site}.worker.");
    let workers = view
        .live(&prefix, now)
        .filter_map(|(_, s)| {
            let p: WorkerPresence = serde_json::from_slice(&s.value).ok()?;
            Some(WorkerRow {
                worker: p.worker,
                cameras: p.cameras.len(),
                max_cameras: p.max_cameras,
                analysed_fps: p.analysed_fps,
                dropped_fps: p.dropped_fps,
                dropping: p.dropping,
                started_utc: p.started_utc,
                seen_s_ago: secs(s.written),
            })
        })
        .collect();
    Ok(Status { site: site.into(), bucket: kv.name.clone(), lease_ttl_s: ttl.as_secs_f64(), cameras, workers })
}
