//! Cluster: several workers share a site's cameras through leases in a NATS KV bucket, so that
//! each camera is run by exactly one worker at a time and a dead worker's cameras move on.
//!
//! - [`lease`] is the mechanism (the bucket, its keys and values, create / renew / release, the
//!   watched view, `vigil cluster status`);
//! - [`share`] is the policy (which cameras to claim or let go: fair share, load, joining workers);
//! - [`run`] is the manager: each tick it renews this worker's presence and leases, fences the
//!   cameras it could not renew in time, carries out the policy's moves by starting and stopping
//!   cameras ([`super::CameraKit`]), and on shutdown stops them and hands every lease over.
//!
//! **Fencing.** A holder renews every third of the TTL (at most every 2 s). A lease it could not renew is given up
//! locally at `last successful renewal sent + TTL − margin` (margin: a fifth of the TTL, at least
//! 1 s): the camera is stopped then, before the server can expire the value and another worker
//! can create it. A renewal refused because someone else wrote the key stops the camera at once.
//! Chain checkpoints come only from the current holder. Evidence positions are reserved create-only in the store ([`crate::evidence::chain`]), so even
//! two workers forced onto one camera cannot write two items at one position.

pub mod lease;
pub mod share;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{CameraKit, RunningCamera};
use crate::config::Pipeline;
use crate::evidence::LeaseFacts;
use crate::evidence::chain::Chains;
use crate::ingest::CameraEnd;
use crate::telemetry::{CameraStats, Condition, Event};
use crate::util::nats::Endpoint;
use crate::util::rfc3339;
use lease::{CameraLease, View, WorkerPresence, Write};

/// The leases this worker holds now, shared with the evidence stage (each violation records the
/// one it fired under) and the checkpoint task (it checkpoints only cameras held now: while it
/// holds a camera, this worker's chain head is the store's; after a hand-over it may be behind,
/// and a checkpoint from it would be the newest one with an older head).
#[derive(Default)]
pub struct LeaseBook {
    held: parking_lot::Mutex<BTreeMap<String, LeaseFacts>>,
}

impl LeaseBook {
    pub fn get(&self, camera: &str) -> Option<LeaseFacts> {
        self.held.lock().get(camera).cloned()
    }

    fn set(&self, camera: &str, f: LeaseFacts) {
        self.held.lock().insert(camera.into(), f);
    }

    fn remove(&self, camera: &str) {
        self.held.lock().remove(camera);
    }

    /// Cameras whose lease this worker holds now.
    pub fn held(&self) -> BTreeSet<String> {
        self.held.lock().keys().cloned().collect()
    }
}

/// The lease timings derived from the TTL.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttl: Duration,
    /// Between two renewals: a third of the TTL, at most 2 s (so a lease leader's election, 4-9
    /// s in nats-server, starts with a fresh renewal behind it).
    pub renew: Duration,
    /// Before expiry, when an unrenewed lease is given up.
    pub margin: Duration,
    /// Between two looks at the bucket.
    pub tick: Duration,
}

impl Timing {
    pub fn of(ttl: Duration) -> Timing {
        Timing {
            ttl,
            renew: (ttl / 3).min(Duration::from_secs(2)),
            margin: (ttl / 5).max(Duration::from_secs(1)),
            tick: (ttl / 4).min(Duration::from_secs(1)),
        }
    }
}

/// The fence: a thread that stops a camera the moment its lease's local deadline passes,
/// whatever the manager is waiting for (a renewal that hangs on a cut connection must not delay
/// it).
/// Per camera: when its lease is given up, and the flag that stops it.
type Deadlines = Arc<parking_lot::Mutex<BTreeMap<String, (Instant, Arc<AtomicBool>)>>>;

struct Fence {
    deadlines: Deadlines,
    done: Arc<AtomicBool>,
}

impl Fence {
    fn start(worker: String) -> Fence {
        let deadlines: Deadlines = Default::default();
        let done: Arc<AtomicBool> = Default::default();
        let (d, stop) = (deadlines.clone(), done.clone());
        let _ = std::thread::Builder::new().name("lease-fence".into()).spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let now = Instant::now();
                for (cam, (deadline, flag)) in d.lock().iter() {
                    if now >= *deadline && !flag.swap(true, Ordering::SeqCst) {
                        tracing::warn!(camera = %cam, worker = %worker, "cluster: fenced: lease not renewed in time; camera stopped before the lease can expire");
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Fence { deadlines, done }
    }

    fn set(&self, camera: &str, deadline: Instant, stop: Arc<AtomicBool>) {
        self.deadlines.lock().insert(camera.into(), (deadline, stop));
    }

    fn remove(&self, camera: &str) {
        self.deadlines.lock().remove(camera);
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

struct Held {
    camera: RunningCamera,
    key: String,
    revision: u64,
    acquired_revision: u64,
    acquired_utc: String,
    /// When the last renewal that succeeded was sent.
    renewed: Instant,
}

/// Stops a camera and waits for its threads (up to 10 s; a camera that does not stop by then is
/// logged and left to finish on its own).
async fn stop(cam: RunningCamera) -> Option<(String, CameraEnd, Arc<CameraStats>)> {
    cam.request_stop();
    let id = cam.id.clone();
    match tokio::time::timeout(Duration::from_secs(10), tokio::task::spawn_blocking(move || cam.join())).await {
        Ok(Ok(r)) => {
            crate::telemetry::unregister_camera(&id);
            Some(r)
        }
        _ => {
            tracing::error!(camera = %id, "cluster: camera did not stop within 10 s; its lease is given up anyway");
            None
        }
    }
}

fn lease_event(camera: &str, active: bool, detail: &str) {
    Event::Health { camera, condition: Condition::Lease, active, detail, lasted: None }.emit();
}

/// Runs this worker's share of the pipeline's cameras until `shutdown`; returns how each camera
/// it ran ended.
pub async fn run(
    p: &Pipeline,
    nats: Endpoint,
    kit: &CameraKit,
    book: Arc<LeaseBook>,
    chains: Arc<Chains>,
    shutdown: Arc<AtomicBool>,
) -> Result<Vec<(String, CameraEnd, Arc<CameraStats>)>> {
    let raw = &p.raw;
    let (site, me) = (raw.site.id.clone(), p.worker_id());
    let ttl = Duration::from_secs_f64(raw.cluster.lease_ttl_s);
    let sd = || shutdown.load(std::sync::atomic::Ordering::SeqCst);
    // connect (NATS may come up after the worker)
    let (kv, ttl) = loop {
        let r = async {
            let client = nats.connect().await?;
            lease::bucket(client, &raw.cluster.bucket, ttl, raw.publish.replicas).await
        }
        .await;
        match r {
            Ok(x) => break x,
            Err(e) if sd() => {
                tracing::warn!(error = format!("{e:#}"), "cluster: stopping before NATS answered");
                return Ok(Vec::new());
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cluster: lease bucket not reachable yet; no camera runs here until it is"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let t = Timing::of(ttl);
    let view = Arc::new(parking_lot::Mutex::new(View::default()));
    let follower = tokio::spawn(lease::follow(kv.clone(), site.clone(), ttl, view.clone()));
    let cameras: Vec<String> = p.cameras.iter().map(|c| c.id.clone()).collect();
    let index: BTreeMap<&str, usize> = cameras.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let started_utc = rfc3339(chrono::Utc::now());
    tracing::info!(worker = %me, bucket = %raw.cluster.bucket, lease_ttl_s = ttl.as_secs_f64(), max_cameras = raw.cluster.max_cameras, cameras = cameras.len(), "cluster: sharing the site's cameras through leases");

    let mut held: BTreeMap<String, Held> = BTreeMap::new();
    let mut out = Vec::new();
    let mut free_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut let_go: BTreeMap<String, Instant> = BTreeMap::new();
    let mut ended_here: BTreeSet<String> = BTreeSet::new();
    let mut presence: Option<Instant> = None;
    let mut presence_rev: Option<u64> = None;
    let mut load = (Instant::now(), 0u64, 0u64, false);
    let mut dropping_until = Instant::now();
    let mut first_tick = true;
    let within = t.renew;
    let fence = Fence::start(me.clone());

    while !sd() {
        let now = Instant::now();
        // presence and load
        if presence.is_none_or(|at| now.duration_since(at) >= t.renew) {
            let (analysed, dropped) = held
                .values()
                .map(|h| (h.camera.stats.analysed.get(), h.camera.stats.analysis_dropped.get()))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            let dt = now.duration_since(load.0).as_secs_f64().max(0.001);
            let (da, dd) = (analysed.saturating_sub(load.1), dropped.saturating_sub(load.2));
            // counters restart when a camera is stopped; a fall is no drop
            if dd > 0 && dropped >= load.2 && load.3 {
                dropping_until = now + t.ttl;
            }
            load = (now, analysed, dropped, true);
            let value = WorkerPresence {
                worker: me.clone(),
                cameras: held.keys().cloned().collect(),
                max_cameras: raw.cluster.max_cameras,
                analysed_fps: da as f64 / dt,
                dropped_fps: dd as f64 / dt,
                dropping: now < dropping_until,
                started_utc: started_utc.clone(),
                renewed_utc: rfc3339(chrono::Utc::now()),
            };
            let bytes = bytes::Bytes::from(serde_json::to_vec(&value)?);
            match tokio::time::timeout(within, kv.put(lease::worker_key(&site, &me), bytes)).await {
                Ok(Ok(rev)) => (presence, presence_rev) = (Some(now), Some(rev)),
                Ok(Err(e)) => tracing::warn!(error = %e, "cluster: presence not written"),
                Err(_) => tracing::warn!("cluster: presence not written (timed out)"),
            }
        }

        // renew, or fence
        let mut gone: Vec<(String, &'static str)> = Vec::new();
        for (cam, h) in held.iter_mut() {
            let mut lost = false;
            if now.duration_since(h.renewed) >= t.renew {
                let value = CameraLease {
                    worker: me.clone(),
                    acquired_utc: h.acquired_utc.clone(),
                    renewed_utc: rfc3339(chrono::Utc::now()),
                    acquired_revision: h.acquired_revision,
                };
                let sent = Instant::now();
                match lease::renew(&kv, &h.key, bytes::Bytes::from(serde_json::to_vec(&value)?), h.revision, within)
                    .await
                {
                    Write::Ok(rev) => {
                        h.revision = rev;
                        h.renewed = sent;
                        fence.set(cam, sent + t.ttl - t.margin, h.camera.stop.clone());
                        book.set(cam, facts(&raw.cluster.bucket, h, &me));
                    }
                    Write::Lost => lost = true,
                    Write::Failed(e) => {
                        tracing::warn!(camera = %cam, error = %e, "cluster: lease not renewed; retrying until its deadline")
                    }
                }
            }
            let why = if lost {
                "lost: another worker wrote the lease"
            } else if h.camera.stop.load(Ordering::SeqCst) {
                "fenced: not renewed in time, stopped before the lease can expire"
            } else if h.camera.finished() {
                "ended: the camera's source ended or failed here"
            } else {
                continue;
            };
            gone.push((cam.clone(), why));
        }
        for (cam, why) in gone {
            let Some(h) = held.remove(&cam) else { continue };
            book.remove(&cam);
            fence.remove(&cam);
            tracing::warn!(camera = %cam, worker = %me, reason = why, "cluster: camera stopped on this worker");
            let ended = why.starts_with("ended");
            if let Some(r) = stop(h.camera).await {
                out.push(r);
            }
            if ended {
                // let another worker try it
                ended_here.insert(cam.clone());
                let _ = lease::release(&kv, &h.key, h.revision, within).await;
            }
            lease_event(&cam, false, &format!("worker {me} stopped the camera ({why})"));
        }

        // the policy's moves (after the view has the bucket's current values)
        let synced = view.lock().synced;
        if synced && !first_tick {
            let now = Instant::now();
            let (holders, workers, last_workers) = {
                let v = view.lock();
                let holders: BTreeMap<String, String> = cameras
                    .iter()
                    .filter_map(|c| {
                        let s = v.get(&lease::camera_key(&site, c), now)?;
                        let l: CameraLease = serde_json::from_slice(&s.value).ok()?;
                        Some((c.clone(), l.worker))
                    })
                    .chain(held.keys().map(|c| (c.clone(), me.clone())))
                    .collect();
                let prefix = format!("{site}.worker.");
                let workers: BTreeSet<String> = v
                    .live(&prefix, now)
                    .filter_map(|(_, s)| serde_json::from_slice::<WorkerPresence>(&s.value).ok().map(|p| p.worker))
                    .chain([me.clone()])
                    .collect();
                let last: BTreeMap<String, String> = cameras
                    .iter()
                    .filter_map(|c| v.last_worker(&lease::camera_key(&site, c)).map(|w| (c.clone(), w.to_string())))
                    .collect();
                (holders, workers, last)
            };
            for c in &cameras {
                if holders.contains_key(c) {
                    free_since.remove(c);
                } else {
                    free_since.entry(c.clone()).or_insert(now);
                }
            }
            let_go.retain(|_, at| now.duration_since(*at) < t.ttl);
            let not_now: BTreeSet<String> = let_go.keys().chain(ended_here.iter()).cloned().collect();
            let free_for = free_since.iter().map(|(c, at)| (c.clone(), now.duration_since(*at))).collect();
            let moves = share::decide(&share::Situation {
                me: &me,
                cameras: &cameras,
                holders: &holders,
                workers: &workers,
                free_for: &free_for,
                not_now: &not_now,
                max_cameras: raw.cluster.max_cameras,
                dropping: now < dropping_until,
                patience: t.ttl,
            });
            for m in moves {
                match m {
                    share::Move::Claim(cam) => {
                        let key = lease::camera_key(&site, &cam);
                        let acquired_utc = rfc3339(chrono::Utc::now());
                        let value = CameraLease {
                            worker: me.clone(),
                            acquired_utc: acquired_utc.clone(),
                            renewed_utc: acquired_utc.clone(),
                            acquired_revision: 0,
                        };
                        let sent = Instant::now();
                        match lease::create(&kv, &key, bytes::Bytes::from(serde_json::to_vec(&value)?), within).await {
                            Write::Ok(rev) => {
                                // the chain continues from the store, not from what this worker
                                // knew when it last ran the camera
                                chains.forget(&cam);
                                let c = &p.cameras[index[cam.as_str()]];
                                let running = match kit.start(c, index[cam.as_str()], Arc::new(AtomicBool::new(false)))
                                {
                                    Ok(r) => r,
                                    Err(e) => {
                                        tracing::error!(camera = %cam, error = format!("{e:#}"), "cluster: camera could not start here; lease handed back");
                                        let _ = lease::release(&kv, &key, rev, within).await;
                                        ended_here.insert(cam);
                                        continue;
                                    }
                                };
                                fence.set(&cam, sent + t.ttl - t.margin, running.stop.clone());
                                let h = Held {
                                    camera: running,
                                    key,
                                    revision: rev,
                                    acquired_revision: rev,
                                    acquired_utc,
                                    renewed: sent,
                                };
                                book.set(&cam, facts(&raw.cluster.bucket, &h, &me));
                                let previous = last_workers.get(&cam).filter(|w| **w != me).cloned();
                                tracing::info!(camera = %cam, worker = %me, revision = rev, previous = previous.as_deref().unwrap_or("none"), "cluster: lease acquired, camera started");
                                lease_event(
                                    &cam,
                                    true,
                                    &format!(
                                        "worker {me} took the camera (lease revision {rev}; previous holder: {})",
                                        previous.as_deref().unwrap_or("none")
                                    ),
                                );
                                held.insert(cam, h);
                                presence = None; // report the new load at once
                            }
                            Write::Lost => tracing::debug!(camera = %cam, "cluster: another worker took it first"),
                            Write::Failed(e) => tracing::warn!(camera = %cam, error = %e, "cluster: claim failed"),
                        }
                    }
                    share::Move::Release(cam) => {
                        let Some(h) = held.remove(&cam) else { continue };
                        book.remove(&cam);
                        fence.remove(&cam);
                        tracing::info!(camera = %cam, worker = %me, "cluster: handing a camera over to a worker below its share");
                        if let Some(r) = stop(h.camera).await {
                            out.push(r);
                        }
                        let _ = lease::release(&kv, &h.key, h.revision, within).await;
                        let_go.insert(cam.clone(), Instant::now());
                        presence = None;
                        lease_event(&cam, false, &format!("worker {me} handed the camera over (share)"));
                    }
                }
            }
        }
        first_tick = first_tick && !synced;
        // until the next tick; earlier on shutdown or when a lease was handed over
        let (until, releases) = (Instant::now() + t.tick, view.lock().releases);
        while Instant::now() < until && !sd() && view.lock().releases == releases {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // shutdown: stop intake on every camera (clips in flight are handed over), then hand every
    // lease over at once
    tracing::info!(worker = %me, cameras = held.len(), "cluster: stopping cameras and handing their leases over");
    for h in held.values() {
        h.camera.request_stop();
    }
    for (cam, h) in std::mem::take(&mut held) {
        book.remove(&cam);
        fence.remove(&cam);
        if let Some(r) = stop(h.camera).await {
            out.push(r);
        }
        match lease::release(&kv, &h.key, h.revision, within).await {
            Write::Ok(_) => tracing::info!(camera = %cam, worker = %me, "cluster: lease released"),
            other => {
                tracing::warn!(camera = %cam, outcome = ?other, "cluster: lease not released; it expires by itself")
            }
        }
        lease_event(&cam, false, &format!("worker {me} stopped and handed the camera over (shutdown)"));
    }
    if let Some(rev) = presence_rev {
        let _ = tokio::time::timeout(within, kv.delete_expect_revision(lease::worker_key(&site, &me), Some(rev))).await;
    }
    follower.abort();
    Ok(out)
}

fn facts(bucket: &str, h: &Held, me: &str) -> LeaseFacts {
    LeaseFacts {
        bucket: bucket.into(),
        key: h.key.clone(),
        worker: me.into(),
        acquired_revision: h.acquired_revision,
        revision: h.revision,
        acquired_utc: h.acquired_utc.clone(),
    }
}
