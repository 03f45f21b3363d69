//! Control: wires the stages for every camera of a pipeline and runs them until the sources end or
//! a shutdown is requested.
//!
//! Per camera: one ingest thread (GStreamer pipeline lifecycle, reconnects) and one analysis thread
//! ([`analysis`]: privacy mask → health → rules). Models are loaded once and shared. Violations
//! start a clip collection on the camera's ring; finished clips go to the evidence stage (tokio
//! tasks, at most `clip.max_concurrent` encodes at once), which spools, stores and publishes.
//! Rule parameters change at run time through [`reload`] (pipeline file, NATS KV, [`overrides`]).
//!
//! Shutdown (SIGINT/SIGTERM): stop intake, hand over clips in flight (post-roll cut short and marked
//! so), finish encoding and storing them, flush the outbox to NATS as far as it allows, exit 0.

pub mod analysis;
pub mod cluster;
pub mod live;
pub mod overrides;
pub mod reload;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use tokio::sync::mpsc;

use analysis::{Analyser, AnalyserConfig, AnalysisSink, CameraControl};

use crate::config::{Camera, Pipeline};
use crate::detect::{ModelPool, ModelSet, Models, ObjectDetector, RuntimeOptions};
use crate::evidence::chain::Chains;
use crate::evidence::{self, EvidenceContext, ModelFacts, Violation, WorkerFacts};
use crate::frame::RgbFrame;
use crate::health::Change;
use crate::ingest::{self, CameraEnd, ClipSource, EncodedRing};
use crate::publish::{OutboxEntry, Publisher};
use crate::rules::{GateSettings, Raised};
use crate::signing::Signer;
use crate::spool::Spool;
use crate::store::Store;
use crate::telemetry::{self, CameraStats, Condition, Event, HealthEvent};
use crate::util::Subject;

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

/// Before anything runs: a stream or a bucket whose settings would lose or refuse evidence is
/// refused now, naming the setting (`vigil check` says the same), rather than found out when
/// events are evicted or uploads fail for ever. A broker or store that does not answer is not a
/// reason to stop: evidence waits in the spool and the outbox.
async fn preflight(p: &Pipeline, store: &Store, stream: &str) -> Result<()> {
    if let Some(n) = &p.nats
        && let Some(problems) = crate::publish::preflight(n, stream).await?
        && !problems.is_empty()
    {
        anyhow::bail!(
            "refusing to run: the JetStream stream would lose or refuse evidence events:\n  {}",
            problems.join("\n  ")
        );
    }
    if p.raw.store.object_lock
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
    let site = &p.raw.site.id;
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

/// What a run did, per camera and in total.
#[derive(Debug, Default, serde::Serialize)]
pub struct RunSummary {
    pub cameras: BTreeMap<String, CameraSummary>,
    pub events: u64,
    pub evidence_failures: u64,
    /// Violations not cut because the spool was full.
    pub refused: u64,
    /// Items still in the spool (store unreachable at shutdown); they upload on the next start.
    pub spooled: usize,
    /// Items set aside in `spool-quarantine/` (kept; see each REASON): the exit code is 1.
    pub quarantined: usize,
    pub unpublished: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct CameraSummary {
    /// How the camera ended; in JSON, its description ([`CameraEnd::describe`]).
    #[serde(serialize_with = "describe_end")]
    pub end: CameraEnd,
    /// Failed for good, or down at shutdown without having delivered any video in the run: the
    /// run's exit code is 1 ([`crate::ingest::CameraEnd::failed`]).
    pub failed: bool,
    pub encoded_frames: u64,
    pub analysis_frames: u64,
    pub analysed: u64,
    pub dropped: u64,
    pub reconnects: u64,
    pub violations: u64,
    pub inferred: u64,
    pub gated: u64,
    pub hot_allocations: u64,
    pub hot_frames: u64,
}

fn describe_end<S: serde::Serializer>(end: &CameraEnd, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&end.describe())
}

impl CameraSummary {
    fn of(end: &CameraEnd, s: &CameraStats) -> CameraSummary {
        CameraSummary {
            end: end.clone(),
            failed: end.failed(),
            encoded_frames: s.encoded_frames.get(),
            analysis_frames: s.analysis_offered.get(),
            analysed: s.analysed.get(),
            dropped: s.analysis_dropped.get(),
            reconnects: s.reconnects.get(),
            violations: s.violations.get(),
            inferred: s.inferred.get(),
            gated: s.gated.get(),
            hot_allocations: s.hot_allocations.get(),
            hot_frames: s.hot_frames.get(),
        }
    }
}

impl RunSummary {
    pub fn failed_cameras(&self) -> Vec<(&String, &CameraSummary)> {
        self.cameras.iter().filter(|(_, c)| c.failed).collect()
    }
}

type EvidenceJob = (Violation, ClipSource);

/// The worker's analysis sink: health changes become events and ring marks; a violation starts
/// collecting its clip, which the evidence stage takes from there.
struct WorkerSink {
    ring: Arc<Mutex<EncodedRing>>,
    evidence: mpsc::UnboundedSender<EvidenceJob>,
    spool: Arc<Spool>,
    stats: Arc<CameraStats>,
    epoch: chrono::DateTime<Utc>,
    pre: Duration,
    post: Duration,
    /// Cluster: the leases this worker holds (the violation records the one it fired under).
    leases: Option<Arc<cluster::LeaseBook>>,
}

impl AnalysisSink for WorkerSink {
    fn health(&mut self, camera: &str, c: &Change) {
        let what = format!("{} {}", c.condition, if c.active { "started" } else { "ended" });
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).mark(c.at, format!("{what} ({})", c.detail));
        Event::Health { camera, condition: c.condition, active: c.active, detail: &c.detail, lasted: c.lasted }.emit();
    }

    fn raise(
        &mut self,
        camera: &str,
        r: Raised,
        frame: &RgbFrame,
        active: &[Condition],
        mask: Option<&Arc<crate::privacy::PrivacyMask>>,
    ) {
        let fire = r.fire;
        let evidence_id = ulid::Ulid::new().to_string();
        self.stats.violations.inc();
        self.stats.last_violation_ms.store(chrono::Utc::now().timestamp_millis(), std::sync::atomic::Ordering::Relaxed);
        Event::ViolationRaised {
            camera,
            rule: &r.rule.id,
            evidence_id: &evidence_id,
            stream_time: fire.pts,
            value: fire.value,
        }
        .emit();
        if self.spool.is_full() {
            let why = format!("spool holds {} of {} bytes", self.spool.bytes(), self.spool.max_bytes);
            Event::EvidenceRefused { camera, evidence_id: &evidence_id, why: &why }.emit();
            return;
        }
        let v = Violation {
            evidence_id,
            camera: camera.into(),
            rule: r.rule,
            detections: fire.detections,
            zone: r.zone,
            trigger_pts: fire.pts,
            detection_frames: fire.frames,
            conditions_at_trigger: active.to_vec(),
            stream_epoch: self.epoch,
            analysis_size: (frame.width, frame.height),
            pre_roll: self.pre,
            post_roll: self.post,
            mask: mask.cloned(),
            lease: self.leases.as_ref().and_then(|l| l.get(camera)),
        };
        let tx = self.evidence.clone();
        let (start, end) = (fire.pts.saturating_sub(self.pre), fire.pts + self.post);
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).start_clip(
            start,
            end,
            Box::new(move |clip| {
                let _ = tx.send((v, clip));
            }),
        );
    }
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

/// What starting a camera on this worker needs: built once by [`run`], used for every camera of
/// the file at start or, in a cluster, whenever a lease gives this worker a camera.
pub struct CameraKit {
    analysis: crate::config::AnalysisConfig,
    gate: GateSettings,
    labels: Vec<String>,
    utc_offset_s: i32,
    pre: Duration,
    post: Duration,
    evidence: mpsc::UnboundedSender<EvidenceJob>,
    spool: Arc<Spool>,
    models: Option<Arc<ModelPool>>,
    slots: BTreeMap<String, CameraControl>,
    initial_rules: BTreeMap<String, crate::rules::CameraRules>,
    leases: Option<Arc<cluster::LeaseBook>>,
}

/// A camera running on this worker: its ingest and analysis threads, and the flag that stops it
/// (stop intake; clips in flight are handed over with their post-roll cut short).
pub struct RunningCamera {
    pub id: String,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<CameraStats>,
    ingest: std::thread::JoinHandle<CameraEnd>,
    analysis: std::thread::JoinHandle<()>,
}

impl RunningCamera {
    /// The camera's source ended or failed for good (its ingest thread is done).
    pub fn finished(&self) -> bool {
        self.ingest.is_finished()
    }

    /// Asks the camera to stop (returns at once).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for both threads (blocking): how the camera ended, and its counters.
    pub fn join(self) -> (String, CameraEnd, Arc<CameraStats>) {
        let end = self.ingest.join().unwrap_or_else(|_| CameraEnd::Failed("ingest thread panicked".into()));
        let _ = self.analysis.join();
        match &end {
            // a failure was reported when it happened
            CameraEnd::Failed(_) => {}
            e => tracing::info!(camera = %self.id, end = %e.describe(), "camera finished"),
        }
        (self.id, end, self.stats)
    }
}

impl CameraKit {
    /// Starts `cam` (the `index`-th of the file) on two threads; `stop` ends it.
    pub fn start(&self, cam: &Camera, index: usize, stop: Arc<AtomicBool>) -> Result<RunningCamera> {
        let mut cam = cam.clone();
        if let Some(r) = self.initial_rules.get(&cam.id) {
            cam.rules = r.clone();
        }
        let control = self.slots.get(&cam.id).cloned().unwrap_or_default();
        if self.leases.is_some() {
            // started after the worker: take the rules and mask in force now, not those at start
            control.replay();
        }
        // the encoded branch runs ahead of analysis by up to the decoder queue (32 frames), the
        // decoder's delay and the analysis queue: 8 s beyond the pre-roll covers that down to 5 fps
        let ring = Arc::new(Mutex::new(EncodedRing::new(self.pre + Duration::from_secs(8))));
        let stats = telemetry::register_camera(&cam.id);
        let (ftx, frx) = ingest::frame_queue(self.analysis.queue);
        let epoch_instant = Instant::now();
        let epoch = Utc::now();
        let analyser = Analyser::new(
            AnalyserConfig {
                camera: cam.id.clone(),
                mask: cam.mask.clone(),
                tamper: cam.tamper,
                rules: cam.rules.clone(),
                gate: self.gate,
                labels: self.labels.clone(),
                epoch,
                utc_offset_s: self.utc_offset_s,
                model_hint: index,
            },
            stats.clone(),
        );
        let mut sink = WorkerSink {
            ring: ring.clone(),
            evidence: self.evidence.clone(),
            spool: self.spool.clone(),
            stats: stats.clone(),
            epoch,
            pre: self.pre,
            post: self.post,
            leases: self.leases.clone(),
        };
        let models = self.models.clone();
        let analysis = std::thread::Builder::new()
            .name(format!("analyse-{}", cam.id))
            .spawn(move || analysis::run_loop(analyser, frx, control, models, &mut sink))?;
        let (c, a, r, s, sd) = (cam.clone(), self.analysis, ring, stats.clone(), stop.clone());
        let ingest = std::thread::Builder::new()
            .name(format!("ingest-{}", cam.id))
            .spawn(move || ingest::run_camera(&c, a, r, s, ftx, sd, epoch_instant))?;
        Ok(RunningCamera { id: cam.id, stop, stats, ingest, analysis })
    }
}

/// How long a frame waits for other cameras' frames to fill a face-detection batch.
pub const BATCH_WAIT: Duration = Duration::from_millis(20);

/// How often the worker gives the C heap's free memory back (`malloc_trim`).
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Loads `models.instances` copies of the models the cameras' rules need (none: `None`).
pub async fn load_models(p: &Pipeline) -> Result<Option<Arc<ModelPool>>> {
    let needs = p.needs();
    if !needs.any() {
        return Ok(None);
    }
    let (no_mask, objects) = (needs.faces, needs.objects);
    let dir = p.models_dir.clone();
    let m = p.raw.models.clone();
    let opts = RuntimeOptions {
        execution_providers: m.execution_providers.clone(),
        intra_threads: m.threads(),
        ort_library: m.ort_library.clone(),
    };
    // sessions are made on a thread named `onnxruntime`: ONNX Runtime's intra-op threads take
    // their creator's name, so CPU by thread (`vigil bench`, `top -H`) names them
    let load = move || -> Result<Vec<ModelSet>> {
        (0..m.instances)
            .map(|_| {
                Ok(ModelSet {
                    no_mask: if no_mask { Some(Models::load(&dir, &m.face, &m.mask, m.head(), &opts)?) } else { None },
                    objects: if objects { Some(ObjectDetector::load(&dir, &m.objects, &opts)?) } else { None },
                    dirty: match m.dirty().filter(|_| objects) {
                        Some(h) => Some(crate::detect::load_head(&dir, h, &opts)?),
                        None => None,
                    },
                })
            })
            .collect()
    };
    let sets = tokio::task::spawn_blocking(move || {
        std::thread::Builder::new()
            .name("onnxruntime".into())
            .spawn(load)
            .map_err(anyhow::Error::from)?
            .join()
            .map_err(|_| anyhow::anyhow!("loading the models panicked"))?
    })
    .await??;
    tracing::info!(copies = sets.len(), face_batch = p.raw.models.batch, "models loaded");
    Ok(Some(Arc::new(ModelPool::new(sets).with_batching(p.raw.models.batch, BATCH_WAIT))))
}

/// Runs the pipeline until every source has ended or `shutdown` is set.
pub async fn run(p: Pipeline, shutdown: Arc<AtomicBool>) -> Result<RunSummary> {
    let started = Instant::now();
    let raw = &p.raw;
    p.log_warnings();
    std::fs::create_dir_all(&p.data_dir).with_context(|| format!("data dir {}", p.data_dir.display()))?;
    let scratch = p.data_dir.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let store = Store::open_with(&p.store_url, &raw.store.options, raw.store.object_lock)?;
    let signer = Arc::new(
        if !p.key_path.exists() && raw.signing.generate_if_missing {
            let dir = p.key_path.parent().context("signing key path has no folder")?;
            let s = Signer::init(dir)?;
            tracing::warn!(key = %p.key_path.display(), key_id = %s.key_id, "generated a new signing key (signing.generate_if_missing)");
            s
        } else {
            Signer::load(&p.key_path).context("signing.key (make one with `vigil keys init`)")?
        }
        .with_suites(&p.key_path, &raw.signing.suites, raw.signing.generate_if_missing)?,
    );
    let stream = raw.publish.stream.clone().unwrap_or_else(|| "VIGIL".into());
    preflight(&p, &store, &stream).await?;
    // the spool first: the positions its items hold are part of every camera's chain head
    let spool = Arc::new(Spool::open(&p.data_dir, raw.worker.spool_max_bytes)?);
    telemetry::metrics::get().spool_bytes.set(spool.bytes() as i64);
    let chains = Arc::new(
        Chains::new(store.clone(), signer.clone(), &raw.site.id, &p.data_dir, raw.retention.evidence_days)?
            .with_trust(signer.trusted(&p.key_path))
            .with_spooled(spool.heads()),
    );
    let dup = Duration::from_secs_f64(raw.publish.duplicate_window_s);
    let publisher =
        Arc::new(Publisher::start_replicated(&p.data_dir, p.nats.as_ref(), &stream, dup, raw.publish.replicas).await?);
    if !publisher.torn().is_empty() {
        rebuild_lost_events(&p, &store, &publisher, &spool).await;
    }
    if !spool.quarantined().is_empty() {
        tracing::error!(items = ?spool.quarantined(), "ALARM: evidence items are set aside in spool-quarantine (see each REASON file); they are kept, never deleted");
    }
    if !spool.pending().is_empty() {
        tracing::info!(items = spool.pending().len(), "spool: uploading evidence left from before");
    }
    // health events → vigil.health.<site>.<camera> (before the uploader: it raises alarms too)
    let (htx, mut hrx) = mpsc::unbounded_channel::<HealthEvent>();
    telemetry::set_health_sink(Some(htx));
    let health_task = {
        let (publisher, site) = (publisher.clone(), raw.site.id.clone());
        tokio::spawn(async move {
            while let Some(h) = hrx.recv().await {
                let entry =
                    OutboxEntry::new(format!("health-{}", ulid::Ulid::new()), Subject::health(&site, &h.camera), &h);
                if let Err(e) = publisher.submit(entry).await {
                    tracing::error!(error = format!("{e:#}"), "health event not recorded");
                }
            }
        })
    };
    let leases = raw.cluster.enabled.then(|| Arc::new(cluster::LeaseBook::default()));
    if leases.is_some() {
        // (set before the uploader starts: it meets such items first thing after a restart)
        // items spooled while the store could not reserve their chain position are chained when
        // it answers, just before their upload
        let (weak, chains, signer) = (Arc::downgrade(&spool), chains.clone(), signer.clone());
        let patience = Duration::from_secs_f64(raw.cluster.lease_ttl_s);
        spool.set_rechain(Arc::new(move |id: String| {
            let (weak, chains, signer) = (weak.clone(), chains.clone(), signer.clone());
            Box::pin(async move {
                let spool = weak.upgrade().context("the spool is gone")?;
                evidence::rechain(&spool, &chains, &signer, &id, patience).await
            })
        }));
    }
    let (up_stop_tx, up_stop) = tokio::sync::watch::channel(false);
    let uploader =
        tokio::spawn(spool.clone().run_uploader(store.clone(), publisher.clone(), up_stop, Duration::from_secs(10)));
    if let Some(addr) = &raw.worker.http {
        let addr: std::net::SocketAddr = addr.parse().context("worker.http")?;
        if !crate::util::http::is_loopback(&addr) {
            tracing::warn!(address = %addr, "worker.http listens beyond this machine: /metrics and /health are readable by anyone who reaches the port");
        }
        let a = telemetry::http::serve(addr).await.with_context(|| format!("worker.http {addr}"))?;
        tracing::info!(address = %a, "serving /metrics and /health");
    }
    tracing::info!(
        pipeline = %p.file.display(), site = %raw.site.id, cameras = p.cameras.len(), store = %store.url,
        nats = p.nats.as_ref().map(|n| n.shown()).unwrap_or_else(|| "none (outbox file only)".into()),
        nats_auth = p.nats.as_ref().map_or("none", |n| n.auth.method()),
        outbox = %publisher.outbox_path.display(), "vigil run starting"
    );

    let models = load_models(&p).await?;
    // the C heap's free pages back to the system every few seconds: GStreamer's and the
    // codecs' small blocks of many threads otherwise leave holes that stay resident
    let trim_task = tokio::spawn(async {
        let mut every = tokio::time::interval(TRIM_EVERY);
        loop {
            every.tick().await;
            let _ = tokio::task::spawn_blocking(telemetry::alloc::release_free_memory).await;
        }
    });
    let model_facts: Vec<ModelFacts> = models
        .as_ref()
        .map(|m| m.get(0).infos().into_iter().map(|(id, sha256)| ModelFacts { id, sha256 }).collect())
        .unwrap_or_default();
    let labels: Vec<String> =
        models.as_ref().and_then(|m| m.get(0).objects.as_ref().map(|o| o.labels().to_vec())).unwrap_or_default();

    let pre = Duration::from_secs_f64(raw.clip.pre_roll_s);
    let post = Duration::from_secs_f64(raw.clip.post_roll_s);
    let gate = raw.analysis.gate_settings();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<EvidenceJob>();
    // hot reload of rule parameters (pipeline file, NATS KV): cameras start with the current ones
    let slots: BTreeMap<String, CameraControl> =
        p.cameras.iter().map(|c| (c.id.clone(), CameraControl::default())).collect();
    let (ctl_stop_tx, ctl_stop) = tokio::sync::watch::channel(false);
    let ctl = reload::RuleControl::new(&p, slots.clone(), publisher.clone())?;
    let audit = ctl.audit.clone();
    let (initial_rules, ctl_task) = reload::start(ctl, p.nats.clone(), raw.control.watch_file, ctl_stop).await;
    // the live side on core NATS (for the ops console): status reports → vigil-live.status.<site>.
    // <worker>, snapshots on request ← vigil-live.snapshot.<site>.<camera>
    let live_task = p.nats.clone().map(|nats| {
        let worker = p.worker_id();
        let subject = crate::util::subject::status(&raw.site.id, &worker);
        let reporter = telemetry::status::Reporter::new(&raw.site.id, &worker, raw.worker.status_interval_s);
        let every = Duration::from_secs_f64(raw.worker.status_interval_s);
        let (site, cams) = (raw.site.id.clone(), slots.clone());
        tokio::spawn(async move {
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
        })
    });
    let kit = CameraKit {
        analysis: raw.analysis,
        gate,
        labels: labels.clone(),
        utc_offset_s: p.utc_offset_s,
        pre,
        post,
        evidence: ev_tx,
        spool: spool.clone(),
        models: models.clone(),
        slots: slots.clone(),
        initial_rules,
        leases: leases.clone(),
    };

    // evidence stage
    let ctx = Arc::new(EvidenceContext {
        spool: spool.clone(),
        chains: chains.clone(),
        signer: signer.clone(),
        models: model_facts,
        worker: WorkerFacts { id: p.worker_id(), version: env!("CARGO_PKG_VERSION").into() },
        site: raw.site.id.clone(),
        site_name: raw.site.name.clone(),
        premises: Some(raw.site.premises.clone()).filter(|p| !p.is_empty()),
        public_key_url: raw.signing.public_key_url.clone(),
        review_key_ids: pinned_review_keys(&p),
        history_dir: p.data_dir.join("history"),
        retention: raw.retention,
        seal: raw.evidence.seal_recipient.as_ref().and_then(|r| r.parse().ok()),
        utc_offset_s: p.utc_offset_s,
        jpeg_quality: raw.clip.jpeg_quality,
        quantizer: raw.clip.quantizer,
        scratch,
        reserve_positions: raw.cluster.enabled.then(|| Duration::from_secs_f64(raw.cluster.lease_ttl_s)),
    });
    let cams: BTreeMap<String, Camera> = p.cameras.iter().map(|c| (c.id.clone(), c.clone())).collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(raw.clip.max_concurrent));
    let evidence_task = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        while let Some((v, clip)) = ev_rx.recv().await {
            let (ctx, limit) = (ctx.clone(), limit.clone());
            let Some(cam) = cams.get(&v.camera).cloned() else { continue };
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.ok();
                let id = v.evidence_id.clone();
                match evidence::produce(&ctx, v, clip, &cam).await {
                    Ok(e) => {
                        Event::EvidenceSpooled {
                            camera: &cam.id,
                            evidence_id: &id,
                            seq: e.seq,
                            status: e.status.name(),
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
        let (mut ok, mut failed) = (0u64, 0u64);
        while let Some(r) = tasks.join_next().await {
            if r.unwrap_or(false) { ok += 1 } else { failed += 1 }
        }
        (ok, failed)
    });

    // signed chain checkpoints: periodically while running, and once more at the end (of all the
    // file's cameras; in a cluster, of those whose lease this worker holds at that moment, none
    // at the end: the leases are handed over by then)
    let cam_ids: Vec<String> = p.cameras.iter().map(|c| c.id.clone()).collect();
    let (cp_stop_tx, mut cp_stop) = tokio::sync::watch::channel(false);
    let cp_task = {
        let (chains, publisher, ids, leases) = (chains.clone(), publisher.clone(), cam_ids.clone(), leases.clone());
        let every = Duration::from_secs_f64(raw.signing.checkpoint_interval_s);
        let site = raw.site.id.clone();
        tokio::spawn(async move {
            let mut written: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let stop = tokio::select! {
                    _ = tokio::time::sleep(every) => false,
                    _ = cp_stop.changed() => true,
                };
                let held = leases.as_ref().map(|l| l.held());
                for cam in ids.iter().filter(|c| held.as_ref().is_none_or(|h| h.contains(*c))) {
                    checkpoint(&chains, &publisher, &site, cam, &mut written, stop).await;
                }
                if stop {
                    break;
                }
            }
        })
    };

    // run the cameras: all of the file's until their sources end, or in a cluster those whose
    // leases this worker holds, until shutdown
    let ran: Vec<(String, CameraEnd, Arc<CameraStats>)> = if let Some(book) = leases {
        let nats = p.nats.clone().context("cluster.enabled needs publish.nats_url")?;
        cluster::run(&p, nats, &kit, book, chains.clone(), shutdown.clone()).await?
    } else {
        let mut running = Vec::new();
        for (index, cam) in p.cameras.iter().enumerate() {
            running.push(kit.start(cam, index, shutdown.clone())?);
        }
        let mut out = Vec::new();
        for r in running {
            out.push(tokio::task::spawn_blocking(move || r.join()).await?);
        }
        out
    };
    drop(kit);
    let _ = ctl_stop_tx.send(true);
    let _ = ctl_task.await;
    let (events, evidence_failures) = evidence_task.await?;
    // everything spooled goes to the store (bounded wait if it is down), then the checkpoints
    let _ = up_stop_tx.send(true);
    let _ = uploader.await;
    let _ = cp_stop_tx.send(true);
    let _ = cp_task.await;
    telemetry::set_health_sink(None);
    let _ = health_task.await;
    if let Some(t) = live_task {
        t.abort();
    }
    trim_task.abort();
    let unpublished = publisher.flush(Duration::from_secs(10)).await;
    if unpublished > 0 {
        tracing::warn!(events = unpublished, outbox = %publisher.outbox_path.display(), "events not yet acknowledged by JetStream stay in the outbox and are sent on the next start");
    }
    let mut summary = RunSummary {
        events,
        evidence_failures,
        refused: telemetry::metrics::get().evidence_refused.get(),
        spooled: spool.pending().len(),
        quarantined: spool.quarantined().len(),
        unpublished,
        ..Default::default()
    };
    for (id, end, stats) in ran {
        summary.cameras.insert(id, CameraSummary::of(&end, &stats));
    }
    tracing::info!(elapsed_s = started.elapsed().as_secs_f64(), summary = %serde_json::to_string(&summary).unwrap_or_default(), "vigil run finished");
    Ok(summary)
}
