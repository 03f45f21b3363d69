//! The worker's stages: what [`super::run`] starts around the cameras. [`Deps`] opens what every
//! stage shares (store, signer, spool, chains, publisher); each stage is started from the pipeline
//! and those, and gives back a [`Handle`]. [`Stages`] stops them in the reverse of the order they
//! were started, so the order of `start` calls is the shutdown order: the evidence stage drains
//! before the uploader stops, the uploader before the last checkpoints, those before the health
//! relay.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::analysis::CameraControl;
use super::audit::AuditWriter;
use super::{EvidenceJob, cluster, live, reload};
use crate::config::{Camera, Pipeline};
use crate::detect::ModelPool;
use crate::evidence::chain::Chains;
use crate::evidence::{self, EvidenceContext, ModelFacts, WorkerFacts};
use crate::publish::{OutboxEntry, Publisher};
use crate::rules::CameraRules;
use crate::signing::Signer;
use crate::spool::Spool;
use crate::store::Store;
use crate::telemetry::{self, Event, HealthEvent};
use crate::util::Subject;

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageReport {
    /// Stopped (or ended by itself) with nothing to report.
    Stopped,
    /// The evidence stage: items produced and items that failed.
    Evidence { produced: u64, failed: u64 },
    /// The task panicked or was cancelled.
    Lost,
}

/// A running stage: its task, and how to ask it to stop.
pub struct Handle {
    pub name: &'static str,
    signal: Option<Box<dyn FnOnce() + Send>>,
    task: JoinHandle<StageReport>,
    /// Runs until aborted (nothing to finish).
    abort: bool,
}

impl Handle {
    /// A stage that ends by itself once its input closes.
    fn ends(name: &'static str, fut: impl Future<Output = StageReport> + Send + 'static) -> Handle {
        Handle { name, signal: None, task: tokio::spawn(fut), abort: false }
    }

    /// A stage told to stop through a watch channel (it finishes what it holds, then returns).
    fn watched<F>(name: &'static str, start: impl FnOnce(watch::Receiver<bool>) -> F) -> Handle
    where
        F: Future<Output = StageReport> + Send + 'static,
    {
        let (tx, rx) = watch::channel(false);
        let mut h = Handle::ends(name, start(rx));
        h.signal = Some(Box::new(move || {
            let _ = tx.send(true);
        }));
        h
    }

    /// A stage with nothing to finish: stopped by aborting it.
    fn aborted(name: &'static str, fut: impl Future<Output = ()> + Send + 'static) -> Handle {
        let mut h = Handle::ends(name, async move {
            fut.await;
            StageReport::Stopped
        });
        h.abort = true;
        h
    }

    /// Also runs `f` when the stage is asked to stop (before waiting for it).
    fn on_stop(mut self, f: impl FnOnce() + Send + 'static) -> Handle {
        let before = self.signal.take();
        self.signal = Some(Box::new(move || {
            if let Some(b) = before {
                b();
            }
            f();
        }));
        self
    }

    /// Asks the stage to stop and waits until it has.
    pub async fn stop(self) -> StageReport {
        if let Some(s) = self.signal {
            s();
        }
        if self.abort {
            self.task.abort();
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => StageReport::Stopped,
            Err(_) => StageReport::Lost,
        }
    }
}

/// The started stages, in start order.
#[derive(Default)]
pub struct Stages(Vec<Handle>);

impl Stages {
    pub fn push(&mut self, h: Handle) {
        tracing::debug!(stage = h.name, "stage started");
        self.0.push(h);
    }

    /// Stops every stage, the last started first.
    pub async fn stop(self) -> Vec<(&'static str, StageReport)> {
        let mut out = Vec::new();
        for h in self.0.into_iter().rev() {
            let name = h.name;
            let r = h.stop().await;
            tracing::debug!(stage = name, report = ?r, "stage stopped");
            out.push((name, r));
        }
        out
    }
}

/// What the stages share, opened once before any of them starts.
pub struct Deps {
    pub store: Store,
    pub signer: Arc<Signer>,
    pub spool: Arc<Spool>,
    pub chains: Arc<Chains>,
    pub publisher: Arc<Publisher>,
    /// Cluster: the leases this worker holds.
    pub leases: Option<Arc<cluster::LeaseBook>>,
    /// Each camera's control slot (rule and mask changes reach its analysis through it).
    pub slots: BTreeMap<String, CameraControl>,
}

impl Deps {
    /// Opens the store, the signing key, the spool, the chains and the publisher; refuses a
    /// stream or bucket that would lose evidence ([`preflight`]); rebuilds events lost to a torn
    /// outbox line; serves `/metrics` and `/health` when `worker.http` says so.
    pub async fn open(p: &Pipeline) -> Result<Deps> {
        let s = &p.settings;
        std::fs::create_dir_all(&p.data_dir).with_context(|| format!("data dir {}", p.data_dir.display()))?;
        std::fs::create_dir_all(p.scratch_dir())?;
        let store = Store::open_with(&p.store_url, &s.store.options, s.store.object_lock)?;
        let signer = Arc::new(
            if !p.key_path.exists() && s.signing.generate_if_missing {
                let dir = p.key_path.parent().context("signing key path has no folder")?;
                let k = Signer::init(dir)?;
                tracing::warn!(key = %p.key_path.display(), key_id = %k.key_id, "generated a new signing key (signing.generate_if_missing)");
                k
            } else {
                Signer::load(&p.key_path).context("signing.key (make one with `vigil keys init`)")?
            }
            .with_suites(&p.key_path, &s.signing.suites, s.signing.generate_if_missing)?,
        );
        preflight(p, &store).await?;
        // the spool first: the positions its items hold are part of every camera's chain head
        let spool = Arc::new(Spool::open(&p.data_dir, s.worker.spool_max_bytes)?);
        telemetry::metrics::get().spool_bytes.set(spool.bytes() as i64);
        let chains = Arc::new(
            Chains::new(store.clone(), signer.clone(), &s.site.id, &p.data_dir, s.retention.evidence_days)?
                .with_trust(signer.trusted(&p.key_path))
                .with_spooled(spool.heads()),
        );
        let publisher = Arc::new(
            Publisher::start_replicated(
                &p.data_dir,
                p.nats.as_ref(),
                p.stream(),
                s.publish.duplicate_window(),
                s.publish.replicas,
            )
            .await?,
        );
        if !publisher.torn().is_empty() {
            rebuild_lost_events(p, &store, &publisher, &spool).await;
        }
        if !spool.quarantined().is_empty() {
            tracing::error!(items = ?spool.quarantined(), "ALARM: evidence items are set aside in spool-quarantine (see each REASON file); they are kept, never deleted");
        }
        if !spool.pending().is_empty() {
            tracing::info!(items = spool.pending().len(), "spool: uploading evidence left from before");
        }
        let leases = s.cluster.enabled.then(|| Arc::new(cluster::LeaseBook::default()));
        if leases.is_some() {
            // (set before the uploader starts: it meets such items first thing after a restart)
            // items spooled while the store could not reserve their chain position are chained
            // when it answers, just before their upload
            let (weak, chains, signer) = (Arc::downgrade(&spool), chains.clone(), signer.clone());
            let patience = s.cluster.lease_ttl();
            spool.set_rechain(Arc::new(move |id: String| {
                let (weak, chains, signer) = (weak.clone(), chains.clone(), signer.clone());
                Box::pin(async move {
                    let spool = weak.upgrade().context("the spool is gone")?;
                    evidence::rechain(&spool, &chains, &signer, &id, patience).await
                })
            }));
        }
        if let Some(addr) = &s.worker.http {
            let addr: std::net::SocketAddr = addr.parse().context("worker.http")?;
            if !crate::util::http::is_loopback(&addr) {
                tracing::warn!(address = %addr, "worker.http listens beyond this machine: /metrics and /health are readable by anyone who reaches the port");
            }
            let a = telemetry::http::serve(addr).await.with_context(|| format!("worker.http {addr}"))?;
            tracing::info!(address = %a, "serving /metrics and /health");
        }
        let slots = p.cameras.iter().map(|c| (c.id.clone(), CameraControl::default())).collect();
        Ok(Deps { store, signer, spool, chains, publisher, leases, slots })
    }
}

/// Before anything runs: a stream or a bucket whose settings would lose or refuse evidence is
/// refused now, naming the setting (`vigil check` says the same), rather than found out when
/// events are evicted or uploads fail for ever. A broker or store that does not answer is not a
/// reason to stop: evidence waits in the spool and the outbox.
async fn preflight(p: &Pipeline, store: &Store) -> Result<()> {
    if let Some(n) = &p.nats
        && let Some(problems) = crate::publish::preflight(n, p.stream()).await?
        && !problems.is_empty()
    {
        anyhow::bail!(
            "refusing to run: the JetStream stream would lose or refuse evidence events:\n  {}",
            problems.join("\n  ")
        );
    }
    if p.settings.store.object_lock
        && let Err(e) = store.probe_object_lock().await
    {
        anyhow::bail!("refusing to run: {e:#}");
    }
    Ok(())
}

/// The outbox's last line was torn: the event it was (and any other lost that way) is made
/// again from the store, for every item of this site's cameras in the store that the outbox
/// does not know and the spool does not hold (those upload and publish as usual).
async fn rebuild_lost_events(p: &Pipeline, store: &Store, publisher: &Publisher, spool: &Spool) {
    let known = publisher.ids();
    let spooled: std::collections::HashSet<String> = spool.pending().into_iter().collect();
    let cams: std::collections::HashSet<&str> = p.cameras.iter().map(|c| c.id.as_str()).collect();
    let items = match crate::verify::list_items(store).await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "outbox: a torn event could not be rebuilt now (store unreachable); it is rebuilt at a later start"
            );
            return;
        }
    };
    let site = &p.settings.site.id;
    for it in items.iter().filter(|i| &i.site == site && cams.contains(i.camera.as_str())) {
        if known.contains(&it.id) || spooled.contains(&it.id) {
            continue;
        }
        match evidence::event_from_store(store, &it.prefix).await {
            Ok(entry) => {
                tracing::warn!(evidence_id = %it.id, "outbox: the event of a stored item was lost to a torn line; rebuilt from the store and queued");
                if let Err(e) = publisher.submit(entry).await {
                    tracing::error!(evidence_id = %it.id, error = format!("{e:#}"), "outbox: rebuilt event not recorded");
                }
            }
            Err(e) => {
                tracing::error!(evidence_id = %it.id, error = format!("{e:#}"), "outbox: the event of a stored item cannot be rebuilt")
            }
        }
    }
}

/// Health events → `vigil.health.<site>.<camera>` (started before the uploader: it raises
/// alarms too). Stops when the health sink is taken away.
pub fn health_relay(p: &Pipeline, d: &Deps) -> Handle {
    let (htx, mut hrx) = mpsc::unbounded_channel::<HealthEvent>();
    telemetry::set_health_sink(Some(htx));
    let (publisher, site) = (d.publisher.clone(), p.settings.site.id.clone());
    Handle::ends("health relay", async move {
        while let Some(h) = hrx.recv().await {
            let entry =
                OutboxEntry::new(format!("health-{}", ulid::Ulid::new()), Subject::health(&site, &h.camera), &h);
            if let Err(e) = publisher.submit(entry).await {
                tracing::error!(error = format!("{e:#}"), "health event not recorded");
            }
        }
        StageReport::Stopped
    })
    .on_stop(|| telemetry::set_health_sink(None))
}

/// Signed chain checkpoints: periodically while running, and once more at the end (of all the
/// file's cameras; in a cluster, of those whose lease this worker holds at that moment, none at
/// the end: the leases are handed over by then).
pub fn checkpointer(p: &Pipeline, d: &Deps) -> Handle {
    let (chains, publisher, leases) = (d.chains.clone(), d.publisher.clone(), d.leases.clone());
    let ids: Vec<String> = p.cameras.iter().map(|c| c.id.clone()).collect();
    let every = p.settings.signing.checkpoint_interval();
    let site = p.settings.site.id.clone();
    Handle::watched("checkpointer", move |mut stop| async move {
        let mut written: BTreeMap<String, u64> = BTreeMap::new();
        loop {
            let last = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = stop.changed() => true,
            };
            let held = leases.as_ref().map(|l| l.held());
            for cam in ids.iter().filter(|c| held.as_ref().is_none_or(|h| h.contains(*c))) {
                checkpoint(&chains, &publisher, &site, cam, &mut written, last).await;
            }
            if last {
                return StageReport::Stopped;
            }
        }
    })
}

/// Writes and publishes a checkpoint of `cam`'s chain when it has items and (unless `always`)
/// moved since the last one.
async fn checkpoint(
    chains: &Chains,
    publisher: &Publisher,
    site: &str,
    cam: &str,
    written: &mut BTreeMap<String, u64>,
    always: bool,
) {
    let head = match chains.head(cam).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(camera = cam, error = format!("{e:#}"), "chain: cannot read head");
            return;
        }
    };
    if head.seq == 0 || (!always && written.get(cam) == Some(&head.seq)) {
        return;
    }
    match chains.checkpoint(cam).await {
        Ok(stored) => {
            written.insert(cam.into(), stored.checkpoint.last_seq);
            tracing::info!(camera = cam, last_seq = stored.checkpoint.last_seq, "chain checkpoint written");
            let id = format!("checkpoint-{site}-{cam}-{}-{}", stored.checkpoint.last_seq, stored.checkpoint.time_utc);
            let entry = OutboxEntry::new(id, Subject::chain(site, cam), &stored.event());
            if let Err(e) = publisher.submit(entry).await {
                tracing::error!(camera = cam, error = format!("{e:#}"), "chain checkpoint not queued for publishing");
            }
        }
        Err(e) => tracing::error!(camera = cam, error = format!("{e:#}"), "chain checkpoint FAILED"),
    }
}

/// Uploads spooled items to the store and publishes their events; on stop, everything spooled
/// goes to the store (a bounded wait if it is down).
pub fn uploader(d: &Deps) -> Handle {
    let (spool, store, publisher) = (d.spool.clone(), d.store.clone(), d.publisher.clone());
    Handle::watched("uploader", move |stop| async move {
        spool.run_uploader(store, publisher, stop, Duration::from_secs(10)).await;
        StageReport::Stopped
    })
}

/// The camera watch ([`super::watch`]): no video and overload, judged once a second for the
/// cameras with a live source (RTSP, files played in real time).
pub fn camera_watch(p: &Pipeline) -> Handle {
    let stall = p
        .cameras
        .iter()
        .filter(|c| match &c.source {
            crate::config::Source::File { realtime, .. } => *realtime,
            crate::config::Source::Rtsp { .. } => true,
        })
        .map(|c| (c.id.clone(), c.stall))
        .collect();
    Handle::aborted("camera watch", super::watch::run(super::watch::Watch::new(stall, p.settings.site.utc_offset_s())))
}

/// How often the worker gives the C heap's free memory back (`malloc_trim`).
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// The C heap's free pages back to the system every few seconds: GStreamer's and the codecs'
/// small blocks of many threads otherwise leave holes that stay resident.
pub fn memory_trim() -> Handle {
    Handle::aborted("memory trim", async {
        let mut every = tokio::time::interval(TRIM_EVERY);
        loop {
            every.tick().await;
            let _ = tokio::task::spawn_blocking(telemetry::alloc::release_free_memory).await;
        }
    })
}

/// The evidence stage: each finished clip becomes an item (encode, hash, sign, spool), at most
/// `clip.max_concurrent` at once. Ends when every camera has handed over its last clip.
pub fn evidence(
    p: &Pipeline,
    d: &Deps,
    models: &Option<Arc<ModelPool>>,
    mut jobs: mpsc::UnboundedReceiver<EvidenceJob>,
) -> Handle {
    let s = &p.settings;
    let model_facts: Vec<ModelFacts> =
        models.as_ref().map(|m| m.get(0).infos().into_iter().map(ModelFacts::from).collect()).unwrap_or_default();
    let ctx = Arc::new(EvidenceContext {
        spool: d.spool.clone(),
        chains: d.chains.clone(),
        signer: d.signer.clone(),
        models: model_facts,
        worker: WorkerFacts { id: p.worker_id(), version: env!("CARGO_PKG_VERSION").into() },
        site: s.site.id.clone(),
        site_name: s.site.name.clone(),
        premises: Some(s.site.premises.clone()).filter(|p| !p.is_empty()),
        public_key_url: s.signing.public_key_url.clone(),
        review_key_ids: pinned_review_keys(p),
        history_dir: p.data_dir.join("history"),
        retention: s.retention,
        seal: s.evidence.seal_recipient.as_ref().and_then(|r| r.parse().ok()),
        utc_offset_s: p.utc_offset_s,
        jpeg_quality: s.clip.jpeg_quality,
        quantizer: s.clip.quantizer,
        scratch: p.scratch_dir(),
        reserve_positions: s.cluster.enabled.then(|| s.cluster.lease_ttl()),
    });
    let cams: BTreeMap<String, Camera> = p.cameras.iter().map(|c| (c.id.clone(), c.clone())).collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(s.clip.max_concurrent));
    Handle::ends("evidence", async move {
        let mut tasks = tokio::task::JoinSet::new();
        while let Some((v, clip)) = jobs.recv().await {
            let (ctx, limit) = (ctx.clone(), limit.clone());
            let Some(cam) = cams.get(&v.camera).cloned() else { continue };
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.ok();
                let id = v.evidence_id.clone();
                match evidence::produce(&ctx, v, clip, &cam).await {
                    Ok(e) => {
                        let status = e.status.name();
                        Event::EvidenceSpooled {
                            camera: &cam.id,
                            evidence_id: &id,
                            seq: e.seq,
                            status,
                            admissible: e.admissible,
                        }
                        .emit();
                        true
                    }
                    Err(e) => {
                        let error = format!("{e:#}");
                        Event::EvidenceFailed { camera: &cam.id, evidence_id: &id, error: &error }.emit();
                        false
                    }
                }
            });
        }
        let (mut produced, mut failed) = (0u64, 0u64);
        while let Some(r) = tasks.join_next().await {
            if r.unwrap_or(false) { produced += 1 } else { failed += 1 }
        }
        StageReport::Evidence { produced, failed }
    })
}

/// The review keys this worker pins in its manifests: the site's review public key
/// (`review.pub` beside `[review] key`), when it is there.
fn pinned_review_keys(p: &Pipeline) -> Option<Vec<String>> {
    let path = p.review_key().with_extension("pub");
    match crate::signing::PublicKey::load(&path) {
        Ok(k) => {
            tracing::info!(key_id = %k.key_id, file = %path.display(), "review key pinned in every manifest");
            Some(k.ids())
        }
        Err(_) if std::fs::symlink_metadata(&path).is_err() => {
            tracing::warn!(file = %path.display(), "no review public key: manifests pin none, so verifying an approval of this worker's items needs the verifier's own --review-key (make it with `vigil keys init --name review` before the first run)");
            None
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = format!("{e:#}"), "review public key unreadable: manifests pin none");
            None
        }
    }
}

/// Hot reload of rule parameters and masks (pipeline file, NATS KV): returns the rules in force
/// now (cameras start with them) and the audit log the live side writes to.
pub async fn rule_control(p: &Pipeline, d: &Deps) -> Result<(Handle, BTreeMap<String, CameraRules>, Arc<AuditWriter>)> {
    let ctl = reload::RuleControl::new(p, d.slots.clone(), d.publisher.clone())?;
    let audit = ctl.audit.clone();
    let (tx, rx) = watch::channel(false);
    let (initial, task) = reload::start(ctl, p.nats.clone(), p.settings.control.watch_file, rx).await;
    let h = Handle::ends("rule control", async move {
        let _ = task.await;
        StageReport::Stopped
    })
    .on_stop(move || {
        let _ = tx.send(true);
    });
    Ok((h, initial, audit))
}

/// The live side on core NATS (for the ops console): status reports →
/// `vigil-live.status.<site>.<worker>`, snapshots on request ← `vigil-live.snapshot.<site>.<camera>`.
pub fn live_status(p: &Pipeline, d: &Deps, audit: Arc<AuditWriter>) -> Option<Handle> {
    let nats = p.nats.clone()?;
    let s = &p.settings;
    let worker = p.worker_id();
    let subject = crate::util::subject::status(&s.site.id, &worker);
    let reporter = telemetry::status::Reporter::new(&s.site.id, &worker, s.worker.status_interval_s);
    let every = s.worker.status_interval();
    let (site, cams) = (s.site.id.clone(), d.slots.clone());
    Some(Handle::aborted("live status", async move {
        match nats.connect().await {
            Ok(client) => {
                tokio::join!(
                    live::status_reports(client.clone(), subject, reporter, every),
                    live::snapshots(client, site, cams, audit)
                );
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "status reports and snapshots off: cannot connect to NATS")
            }
        }
    }))
}
