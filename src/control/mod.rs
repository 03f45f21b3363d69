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
pub mod audit;
pub mod cluster;
pub mod live;
pub mod masks;
pub mod overrides;
pub mod reload;
pub mod stages;
pub mod watch;

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
use crate::evidence::Violation;
use crate::frame::RgbFrame;
use crate::health::Change;
use crate::ingest::{self, CameraEnd, ClipSource, EncodedRing};
use crate::rules::{GateSettings, Raised};
use crate::spool::Spool;
use crate::telemetry::{self, CameraStats, Condition, Event};
use stages::{Deps, StageReport, Stages};

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
    /// What every camera of `p` starts with: the analysis settings, the models, the rules in force
    /// now, and where finished clips go.
    pub fn new(
        p: &Pipeline,
        d: &Deps,
        models: Option<Arc<ModelPool>>,
        evidence: mpsc::UnboundedSender<EvidenceJob>,
        initial_rules: BTreeMap<String, crate::rules::CameraRules>,
    ) -> CameraKit {
        let s = &p.settings;
        let labels = models.as_ref().and_then(|m| m.get(0).objects.as_ref().map(|o| o.labels().to_vec()));
        CameraKit {
            analysis: s.analysis,
            gate: s.analysis.gate_settings(),
            labels: labels.unwrap_or_default(),
            utc_offset_s: p.utc_offset_s,
            pre: s.clip.pre_roll(),
            post: s.clip.post_roll(),
            evidence,
            spool: d.spool.clone(),
            models,
            slots: d.slots.clone(),
            initial_rules,
            leases: d.leases.clone(),
        }
    }

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

/// Loads `models.instances` copies of the models the cameras' rules need (none: `None`).
pub async fn load_models(p: &Pipeline) -> Result<Option<Arc<ModelPool>>> {
    let needs = p.needs();
    if !needs.any() {
        return Ok(None);
    }
    let (no_mask, objects) = (needs.faces, needs.objects);
    let dir = p.models_dir.clone();
    let m = p.settings.models.clone();
    let heads = p.attribute_heads();
    let detectors = p.detectors();
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
                    attributes: heads
                        .iter()
                        .map(|h| crate::detect::load_head(&dir, h, &opts))
                        .collect::<Result<_>>()?,
                    detectors: detectors.iter().map(|d| ObjectDetector::load(&dir, d, &opts)).collect::<Result<_>>()?,
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
    tracing::info!(copies = sets.len(), face_batch = p.settings.models.batch, "models loaded");
    Ok(Some(Arc::new(ModelPool::new(sets).with_batching(p.settings.models.batch, BATCH_WAIT))))
}

/// Runs the pipeline until every source has ended or `shutdown` is set: opens what the stages
/// share, starts the stages in order, runs the cameras, stops the stages in reverse order.
pub async fn run(p: Pipeline, shutdown: Arc<AtomicBool>) -> Result<RunSummary> {
    let started = Instant::now();
    p.log_warnings();
    let d = Deps::open(&p).await?;
    tracing::info!(
        pipeline = %p.file.display(), site = %p.settings.site.id, cameras = p.cameras.len(), store = %d.store.url,
        nats = p.nats.as_ref().map(|n| n.shown()).unwrap_or_else(|| "none (outbox file only)".into()),
        nats_auth = p.nats.as_ref().map_or("none", |n| n.auth.method()),
        outbox = %d.publisher.outbox_path.display(), "vigil run starting"
    );
    let mut running = Stages::default();
    running.push(stages::health_relay(&p, &d));
    running.push(stages::checkpointer(&p, &d));
    running.push(stages::uploader(&d));
    running.push(stages::memory_trim());
    running.push(stages::camera_watch(&p));
    let models = load_models(&p).await?;
    let (jobs, jobs_rx) = mpsc::unbounded_channel::<EvidenceJob>();
    running.push(stages::evidence(&p, &d, &models, jobs_rx));
    let (control, initial_rules, audit) = stages::rule_control(&p, &d).await?;
    running.push(control);
    if let Some(live) = stages::live_status(&p, &d, audit) {
        running.push(live);
    }
    let kit = CameraKit::new(&p, &d, models, jobs, initial_rules);
    let ran = run_cameras(&p, &d, &kit, shutdown).await;
    drop(kit);
    let reports = running.stop().await;
    let ran = ran?;
    let unpublished = d.publisher.flush(Duration::from_secs(10)).await;
    if unpublished > 0 {
        tracing::warn!(events = unpublished, outbox = %d.publisher.outbox_path.display(), "events not yet acknowledged by JetStream stay in the outbox and are sent on the next start");
    }
    let (events, evidence_failures) = reports
        .iter()
        .find_map(|(_, r)| match r {
            StageReport::Evidence { produced, failed } => Some((*produced, *failed)),
            _ => None,
        })
        .unwrap_or_default();
    let mut summary = RunSummary {
        events,
        evidence_failures,
        refused: telemetry::metrics::get().evidence_refused.get(),
        spooled: d.spool.pending().len(),
        quarantined: d.spool.quarantined().len(),
        unpublished,
        ..Default::default()
    };
    for (id, end, stats) in ran {
        summary.cameras.insert(id, CameraSummary::of(&end, &stats));
    }
    tracing::info!(elapsed_s = started.elapsed().as_secs_f64(), summary = %serde_json::to_string(&summary).unwrap_or_default(), "vigil run finished");
    Ok(summary)
}

/// Runs the cameras: all of the file's until their sources end, or in a cluster those whose
/// leases this worker holds, until shutdown.
async fn run_cameras(
    p: &Pipeline,
    d: &Deps,
    kit: &CameraKit,
    shutdown: Arc<AtomicBool>,
) -> Result<Vec<(String, CameraEnd, Arc<CameraStats>)>> {
    if let Some(book) = d.leases.clone() {
        let nats = p.nats.clone().context("cluster.enabled needs publish.nats_url")?;
        return cluster::run(p, nats, kit, book, d.chains.clone(), shutdown).await;
    }
    let mut running = Vec::new();
    for (index, cam) in p.cameras.iter().enumerate() {
        running.push(kit.start(cam, index, shutdown.clone())?);
    }
    let mut out = Vec::new();
    for r in running {
        out.push(tokio::task::spawn_blocking(move || r.join()).await?);
    }
    Ok(out)
}
