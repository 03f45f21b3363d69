//! A cluster member: one worker's part of the lease protocol, tick by tick — write its presence,
//! renew its leases or fence the cameras it could not renew in time, carry out the policy's moves,
//! and hand everything over on shutdown. What it runs for a lease is a [`Host`]'s business: real
//! cameras for `vigil run` ([`Cameras`]), nothing at all for `vigil cluster simulate`
//! ([`super::sim`]), so the protocol measured in a simulated district is the one workers run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use async_nats::jetstream::kv;

use super::lease::{self, CameraLease, View, WorkerPresence, Write};
use super::{Fence, LeaseBook, Timing, facts, lease_event, share};
use crate::config::Pipeline;
use crate::evidence::chain::Chains;
use crate::ingest::CameraEnd;
use crate::telemetry::CameraStats;
use crate::util::nats::Endpoint;
use crate::util::rfc3339;

/// How a camera run here ended (for the run's summary).
pub type Ended = (String, CameraEnd, Arc<CameraStats>);

/// What a member runs for the leases it holds.
pub trait Host {
    type Cam: Hosted;
    /// Starts `camera` here.
    fn start(&self, camera: &str) -> Result<Self::Cam>;
}

/// A camera run for a lease.
pub trait Hosted: Send + 'static {
    /// The flag that stops it (the fence sets it when the lease's deadline passes).
    fn stop_flag(&self) -> Arc<AtomicBool>;
    /// Analysed and dropped frames so far (the load the member reports).
    fn load(&self) -> (u64, u64);
    /// Its source ended or failed for good here.
    fn finished(&self) -> bool;
    /// Asks it to stop (returns at once).
    fn request_stop(&self);
    /// Stops it and waits for it (bounded); how it ended, for the summary.
    fn stop(self) -> impl std::future::Future<Output = Option<Ended>> + Send;
}

/// The worker's cameras: [`super::super::CameraKit`] starts them.
pub struct Cameras<'a> {
    pub p: &'a Pipeline,
    pub kit: &'a super::CameraKit,
}

impl Host for Cameras<'_> {
    type Cam = super::super::RunningCamera;
    fn start(&self, camera: &str) -> Result<Self::Cam> {
        let (index, c) = self
            .p
            .cameras
            .iter()
            .enumerate()
            .find(|(_, c)| c.id == camera)
            .ok_or_else(|| anyhow::anyhow!("camera {camera} is not in the pipeline"))?;
        self.kit.start(c, index, Arc::new(AtomicBool::new(false)))
    }
}

impl Hosted for super::super::RunningCamera {
    fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
    fn load(&self) -> (u64, u64) {
        (self.stats.analysed.get(), self.stats.analysis_dropped.get())
    }
    fn finished(&self) -> bool {
        super::super::RunningCamera::finished(self)
    }
    fn request_stop(&self) {
        super::super::RunningCamera::request_stop(self)
    }
    /// Waits for both threads up to 10 s; a camera that does not stop by then is logged and left
    /// to finish on its own.
    async fn stop(self) -> Option<Ended> {
        self.request_stop();
        let id = self.id.clone();
        match tokio::time::timeout(Duration::from_secs(10), tokio::task::spawn_blocking(move || self.join())).await {
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
}

/// A lease held, with what runs for it.
pub struct Held<C> {
    pub camera: C,
    pub key: String,
    pub revision: u64,
    pub acquired_revision: u64,
    pub acquired_utc: String,
    /// When the last renewal that succeeded was sent.
    pub renewed: Instant,
}

/// Who the member is and what it shares.
pub struct Settings {
    pub site: String,
    pub me: String,
    pub bucket: String,
    pub max_cameras: usize,
    pub replicas: usize,
    pub cameras: Vec<String>,
}

/// What a member did (the simulation reads it live).
#[derive(Default)]
pub struct Counters {
    /// KV writes sent: presence, renewals, claims, releases.
    pub writes: AtomicU64,
    /// KV writes that failed or timed out.
    pub failed: AtomicU64,
    /// Leases held now.
    pub held: AtomicU64,
}

/// One worker in the lease protocol.
pub struct Member<'h, H: Host> {
    s: Settings,
    host: &'h H,
    kv: kv::Store,
    t: Timing,
    view: Arc<parking_lot::Mutex<View>>,
    follower: tokio::task::JoinHandle<()>,
    fence: Fence,
    book: Arc<LeaseBook>,
    chains: Option<Arc<Chains>>,
    pub counters: Arc<Counters>,
    held: BTreeMap<String, Held<H::Cam>>,
    out: Vec<Ended>,
    free_since: BTreeMap<String, Instant>,
    let_go: BTreeMap<String, Instant>,
    ended_here: BTreeSet<String>,
    presence: Option<Instant>,
    presence_rev: Option<u64>,
    load: (Instant, u64, u64, bool),
    dropping_until: Instant,
    first_tick: bool,
    started_utc: String,
}

impl<'h, H: Host> Member<'h, H> {
    /// Connects and opens the lease bucket (NATS may come up after the worker: it waits);
    /// `None` when `shutdown` came first.
    pub async fn join(
        s: Settings,
        host: &'h H,
        nats: Endpoint,
        ttl: Duration,
        shutdown: &AtomicBool,
    ) -> Result<Option<Member<'h, H>>> {
        let mut wait =
            crate::util::Backoff::new(Duration::from_millis(250), Duration::from_secs(5), Duration::from_millis(100));
        let (kv, ttl) = loop {
            let r = async {
                let client = nats.connect().await?;
                lease::bucket(client, &s.bucket, ttl, s.replicas).await
            }
            .await;
            match r {
                Ok(x) => break x,
                Err(e) if shutdown.load(Ordering::SeqCst) => {
                    tracing::warn!(error = format!("{e:#}"), "cluster: stopping before NATS answered");
                    return Ok(None);
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "cluster: lease bucket not reachable yet; no camera runs here until it is"
                    );
                    tokio::time::sleep(wait.next_wait()).await;
                }
            }
        };
        Ok(Some(Member::over(s, host, kv, ttl)))
    }

    /// A member over an open bucket (the simulation shares connections this way).
    pub fn over(s: Settings, host: &'h H, kv: kv::Store, ttl: Duration) -> Member<'h, H> {
        let t = Timing::of(ttl);
        let view = Arc::new(parking_lot::Mutex::new(View::default()));
        let follower = tokio::spawn(lease::follow(kv.clone(), s.site.clone(), ttl, view.clone()));
        let fence = Fence::start(s.me.clone());
        Member {
            host,
            kv,
            t,
            view,
            follower,
            fence,
            book: Default::default(),
            chains: None,
            counters: Default::default(),
            held: BTreeMap::new(),
            out: Vec::new(),
            free_since: BTreeMap::new(),
            let_go: BTreeMap::new(),
            ended_here: BTreeSet::new(),
            presence: None,
            presence_rev: None,
            load: (Instant::now(), 0, 0, false),
            dropping_until: Instant::now(),
            first_tick: true,
            started_utc: rfc3339(chrono::Utc::now()),
            s,
        }
    }

    /// The leases held, shared with the evidence stage and the checkpointer.
    pub fn with_book(mut self, book: Arc<LeaseBook>) -> Self {
        self.book = book;
        self
    }

    /// The chains whose cached head is forgotten when a camera is taken over.
    pub fn with_chains(mut self, chains: Arc<Chains>) -> Self {
        self.chains = Some(chains);
        self
    }

    fn count(&self, w: &Write) {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        if matches!(w, Write::Failed(_)) {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs the protocol until `shutdown`, then hands every lease over; how each camera ended.
    pub async fn run(mut self, shutdown: &AtomicBool) -> Result<Vec<Ended>> {
        tracing::info!(worker = %self.s.me, bucket = %self.s.bucket, lease_ttl_s = self.t.ttl.as_secs_f64(), max_cameras = self.s.max_cameras, cameras = self.s.cameras.len(), "cluster: sharing the site's cameras through leases");
        while !shutdown.load(Ordering::SeqCst) {
            self.tick().await?;
            self.wait_tick(shutdown).await;
        }
        self.hand_over_all().await;
        Ok(std::mem::take(&mut self.out))
    }

    /// One tick: presence, renewals (or fencing), the policy's moves.
    pub async fn tick(&mut self) -> Result<()> {
        let now = Instant::now();
        if self.presence.is_none_or(|at| now.duration_since(at) >= self.t.renew) {
            self.write_presence(now).await?;
        }
        self.renew_or_fence(now).await?;
        self.apply_policy().await?;
        self.counters.held.store(self.held.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Until the next tick; earlier on shutdown or when a lease was handed over.
    async fn wait_tick(&self, shutdown: &AtomicBool) {
        let (until, releases) = (Instant::now() + self.t.tick, self.view.lock().releases);
        while Instant::now() < until && !shutdown.load(Ordering::SeqCst) && self.view.lock().releases == releases {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// This worker's presence and load (`<site>.worker.<id>`).
    async fn write_presence(&mut self, now: Instant) -> Result<()> {
        let (analysed, dropped) =
            self.held.values().map(|h| h.camera.load()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let load = self.load;
        let dt = now.duration_since(load.0).as_secs_f64().max(0.001);
        let (da, dd) = (analysed.saturating_sub(load.1), dropped.saturating_sub(load.2));
        // counters restart when a camera is stopped; a fall is no drop
        if dd > 0 && dropped >= load.2 && load.3 {
            self.dropping_until = now + self.t.ttl;
        }
        self.load = (now, analysed, dropped, true);
        let value = WorkerPresence {
            worker: self.s.me.clone(),
            cameras: self.held.keys().cloned().collect(),
            max_cameras: self.s.max_cameras,
            analysed_fps: da as f64 / dt,
            dropped_fps: dd as f64 / dt,
            dropping: now < self.dropping_until,
            started_utc: self.started_utc.clone(),
            renewed_utc: rfc3339(chrono::Utc::now()),
        };
        let bytes = bytes::Bytes::from(serde_json::to_vec(&value)?);
        let r =
            tokio::time::timeout(self.t.renew, self.kv.put(lease::worker_key(&self.s.site, &self.s.me), bytes)).await;
        let w = match r {
            Ok(Ok(rev)) => {
                (self.presence, self.presence_rev) = (Some(now), Some(rev));
                Write::Ok(rev)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cluster: presence not written");
                Write::Failed(e.to_string())
            }
            Err(_) => {
                tracing::warn!("cluster: presence not written (timed out)");
                Write::Failed("timed out".into())
            }
        };
        self.count(&w);
        Ok(())
    }

    /// Renews each lease due; a camera whose lease was lost, fenced or whose source ended here
    /// is stopped (an ended one's lease handed back for another worker to try).
    async fn renew_or_fence(&mut self, now: Instant) -> Result<()> {
        let me = self.s.me.clone();
        // every renewal due goes out at once: one slow answer (a leader being elected) holds up
        // no other lease, and a tick waits one timeout at most
        let mut due = Vec::new();
        for (cam, h) in &self.held {
            if now.duration_since(h.renewed) >= self.t.renew {
                let value = CameraLease {
                    worker: me.clone(),
                    acquired_utc: h.acquired_utc.clone(),
                    renewed_utc: rfc3339(chrono::Utc::now()),
                    acquired_revision: h.acquired_revision,
                };
                due.push((cam.clone(), h.key.clone(), h.revision, bytes::Bytes::from(serde_json::to_vec(&value)?)));
            }
        }
        let sent = Instant::now();
        let (kv, within) = (&self.kv, self.t.renew);
        let me_ = me.as_str();
        let answers = futures::future::join_all(due.into_iter().map(|(cam, key, rev, value)| async move {
            let w = match lease::renew(kv, &key, value, rev, within).await {
                // the key moved on: if to a value this worker wrote (an earlier renewal whose
                // answer was lost, e.g. while the bucket's leader changed), the lease is still ours
                Write::Lost => match lease::ours(kv, &key, me_, within).await {
                    Some(current) => Write::Ok(current),
                    None => Write::Lost,
                },
                w => w,
            };
            (cam, w)
        }))
        .await;
        let mut lost: BTreeSet<String> = BTreeSet::new();
        for (cam, w) in answers {
            self.count(&w);
            let Some(h) = self.held.get_mut(&cam) else { continue };
            match w {
                Write::Ok(rev) => {
                    h.revision = rev;
                    h.renewed = sent;
                    self.fence.set(&cam, sent + self.t.ttl - self.t.margin, h.camera.stop_flag());
                    self.book.set(&cam, facts(&self.s.bucket, h, &me));
                }
                Write::Lost => {
                    lost.insert(cam);
                }
                Write::Failed(e) => {
                    tracing::warn!(camera = %cam, error = %e, "cluster: lease not renewed; retrying until its deadline")
                }
            }
        }
        let mut gone: Vec<(String, &'static str)> = Vec::new();
        for (cam, h) in &self.held {
            let why = if lost.contains(cam) {
                "lost: another worker wrote the lease"
            } else if h.camera.stop_flag().load(Ordering::SeqCst) {
                "fenced: not renewed in time, stopped before the lease can expire"
            } else if h.camera.finished() {
                "ended: the camera's source ended or failed here"
            } else {
                continue;
            };
            gone.push((cam.clone(), why));
        }
        for (cam, why) in gone {
            let Some(h) = self.held.remove(&cam) else { continue };
            self.book.remove(&cam);
            self.fence.remove(&cam);
            tracing::warn!(camera = %cam, worker = %me, reason = why, "cluster: camera stopped on this worker");
            if let Some(r) = h.camera.stop().await {
                self.out.push(r);
            }
            if why.starts_with("ended") {
                // let another worker try it
                self.ended_here.insert(cam.clone());
                let w = lease::release(&self.kv, &h.key, h.revision, self.t.renew).await;
                self.count(&w);
            }
            lease_event(&cam, false, &format!("worker {me} stopped the camera ({why})"));
        }
        Ok(())
    }

    /// The policy's moves, once the view has the bucket's current values.
    async fn apply_policy(&mut self) -> Result<()> {
        let synced = self.view.lock().synced;
        if synced && !self.first_tick {
            let now = Instant::now();
            let (holders, workers, last_workers) = self.situation(now);
            for c in &self.s.cameras {
                if holders.contains_key(c) {
                    self.free_since.remove(c);
                } else {
                    self.free_since.entry(c.clone()).or_insert(now);
                }
            }
            let ttl = self.t.ttl;
            self.let_go.retain(|_, at| now.duration_since(*at) < ttl);
            let not_now: BTreeSet<String> = self.let_go.keys().chain(self.ended_here.iter()).cloned().collect();
            let free_for = self.free_since.iter().map(|(c, at)| (c.clone(), now.duration_since(*at))).collect();
            let moves = share::decide(&share::Situation {
                me: &self.s.me,
                cameras: &self.s.cameras,
                holders: &holders,
                workers: &workers,
                free_for: &free_for,
                not_now: &not_now,
                max_cameras: self.s.max_cameras,
                dropping: now < self.dropping_until,
                patience: self.t.ttl,
            });
            // the moves never hold up a renewal: hand-overs stop when one is due (the rest wait
            // for the next tick), and claims go out at once, so that a tick with many free
            // cameras during an election waits one timeout, not one per camera
            let due = self.held.values().map(|h| h.renewed + self.t.renew).min();
            let mut claims = Vec::new();
            for m in moves {
                match m {
                    share::Move::Claim(cam) => claims.push(cam),
                    share::Move::Release(cam) if due.is_none_or(|d| Instant::now() < d) => self.release(cam).await,
                    share::Move::Release(_) => {}
                }
            }
            self.claim_all(claims, &last_workers).await?;
        }
        self.first_tick = self.first_tick && !synced;
        Ok(())
    }

    /// Who holds each camera, the live workers, and each camera's last holder, from the view.
    #[allow(clippy::type_complexity)]
    fn situation(&self, now: Instant) -> (BTreeMap<String, String>, BTreeSet<String>, BTreeMap<String, String>) {
        let v = self.view.lock();
        let site = &self.s.site;
        let holders: BTreeMap<String, String> = self
            .s
            .cameras
            .iter()
            .filter_map(|c| Some((c.clone(), v.get(&lease::camera_key(site, c), now)?.holder.clone()?)))
            .chain(self.held.keys().map(|c| (c.clone(), self.s.me.clone())))
            .collect();
        let prefix = format!("{site}.worker.");
        let workers: BTreeSet<String> = v
            .live(&prefix, now)
            .filter_map(|(_, s)| serde_json::from_slice::<WorkerPresence>(&s.value).ok().map(|p| p.worker))
            .chain([self.s.me.clone()])
            .collect();
        let last: BTreeMap<String, String> = self
            .s
            .cameras
            .iter()
            .filter_map(|c| v.last_worker(&lease::camera_key(site, c)).map(|w| (c.clone(), w.to_string())))
            .collect();
        (holders, workers, last)
    }

    /// Takes free cameras' leases (all writes at once) and starts each won camera here.
    async fn claim_all(&mut self, cams: Vec<String>, last_workers: &BTreeMap<String, String>) -> Result<()> {
        let me = self.s.me.clone();
        let acquired_utc = rfc3339(chrono::Utc::now());
        let value = bytes::Bytes::from(serde_json::to_vec(&CameraLease {
            worker: me.clone(),
            acquired_utc: acquired_utc.clone(),
            renewed_utc: acquired_utc.clone(),
            acquired_revision: 0,
        })?);
        let sent = Instant::now();
        let (kv, within, site) = (&self.kv, self.t.renew, &self.s.site);
        let answers = futures::future::join_all(cams.into_iter().map(|cam| {
            let value = value.clone();
            async move {
                let key = lease::camera_key(site, &cam);
                let w = lease::create(kv, &key, value, within).await;
                (cam, key, w)
            }
        }))
        .await;
        for (cam, key, w) in answers {
            self.took(cam, key, w, &acquired_utc, sent, last_workers).await;
        }
        Ok(())
    }

    /// What one claim's write came to: a won lease starts the camera here.
    async fn took(
        &mut self,
        cam: String,
        key: String,
        w: Write,
        acquired_utc: &str,
        sent: Instant,
        last_workers: &BTreeMap<String, String>,
    ) {
        let me = self.s.me.clone();
        let acquired_utc = acquired_utc.to_string();
        self.count(&w);
        match w {
            Write::Ok(rev) => {
                // the chain continues from the store, not from what this worker knew when it
                // last ran the camera
                if let Some(c) = &self.chains {
                    c.forget(&cam);
                }
                let running = match self.host.start(&cam) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(camera = %cam, error = format!("{e:#}"), "cluster: camera could not start here; lease handed back");
                        let w = lease::release(&self.kv, &key, rev, self.t.renew).await;
                        self.count(&w);
                        self.ended_here.insert(cam);
                        return;
                    }
                };
                self.fence.set(&cam, sent + self.t.ttl - self.t.margin, running.stop_flag());
                let h =
                    Held { camera: running, key, revision: rev, acquired_revision: rev, acquired_utc, renewed: sent };
                self.book.set(&cam, facts(&self.s.bucket, &h, &me));
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
                self.held.insert(cam, h);
                self.presence = None; // report the new load at once
            }
            Write::Lost => tracing::debug!(camera = %cam, "cluster: another worker took it first"),
            Write::Failed(e) => tracing::warn!(camera = %cam, error = %e, "cluster: claim failed"),
        }
    }

    /// Hands a camera over to a worker below its share.
    async fn release(&mut self, cam: String) {
        let Some(h) = self.held.remove(&cam) else { return };
        self.book.remove(&cam);
        self.fence.remove(&cam);
        tracing::info!(camera = %cam, worker = %self.s.me, "cluster: handing a camera over to a worker below its share");
        if let Some(r) = h.camera.stop().await {
            self.out.push(r);
        }
        let w = lease::release(&self.kv, &h.key, h.revision, self.t.renew).await;
        self.count(&w);
        self.let_go.insert(cam.clone(), Instant::now());
        self.presence = None;
        lease_event(&cam, false, &format!("worker {} handed the camera over (share)", self.s.me));
    }

    /// Shutdown: stop intake on every camera (clips in flight are handed over), then hand every
    /// lease over at once, and take the presence away.
    async fn hand_over_all(&mut self) {
        let me = self.s.me.clone();
        tracing::info!(worker = %me, cameras = self.held.len(), "cluster: stopping cameras and handing their leases over");
        for h in self.held.values() {
            h.camera.request_stop();
        }
        for (cam, h) in std::mem::take(&mut self.held) {
            self.book.remove(&cam);
            self.fence.remove(&cam);
            if let Some(r) = h.camera.stop().await {
                self.out.push(r);
            }
            match lease::release(&self.kv, &h.key, h.revision, self.t.renew).await {
                Write::Ok(_) => tracing::info!(camera = %cam, worker = %me, "cluster: lease released"),
                other => {
                    tracing::warn!(camera = %cam, outcome = ?other, "cluster: lease not released; it expires by itself")
                }
            }
            lease_event(&cam, false, &format!("worker {me} stopped and handed the camera over (shutdown)"));
        }
        if let Some(rev) = self.presence_rev {
            let _ = tokio::time::timeout(
                self.t.renew,
                self.kv.delete_expect_revision(lease::worker_key(&self.s.site, &me), Some(rev)),
            )
            .await;
        }
        self.counters.held.store(0, Ordering::Relaxed);
    }
}

impl<H: Host> Drop for Member<'_, H> {
    fn drop(&mut self) {
        self.follower.abort();
    }
}
