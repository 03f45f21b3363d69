//! Control: wires the stages for every camera of a pipeline and runs them until the sources end or
//! a shutdown is requested.
//!
//! Per camera: one ingest thread (GStreamer pipeline lifecycle, reconnects) and one analysis thread
//! (privacy mask → detect → track → rules). Models are loaded once and shared. Violations start a
//! clip collection on the camera's ring; finished clips go to the evidence stage (tokio tasks,
//! at most `clip.max_concurrent` encodes at once), which stores and publishes.
//!
//! Shutdown (SIGINT/SIGTERM): stop intake, hand over clips in flight (post-roll cut short and marked
//! so), finish encoding and storing them, flush the outbox to NATS as far as it allows, exit 0.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use tokio::sync::mpsc;

use crate::chain::Chains;
use crate::config::{AnalysisConfig, Camera, CameraRules, Pipeline};
use crate::detect::{ModelPool, ModelSet, Models, MotionGate, ObjectDetector, RuntimeOptions};
use crate::evidence::{self, EvidenceContext, ModelFacts, RuleFacts, Violation, WorkerFacts};
use crate::health::{self, TamperDetector};
use crate::ingest::{self, CameraEnd, CameraStats, ClipSource, EncodedRing};
use crate::manifest::Signer;
use crate::privacy::{MaskRaster, Polygon};
use crate::publish::Publisher;
use crate::rules::{self, Fire, NoMaskState, UtensilsState};
use crate::spool::Spool;
use crate::store::Store;
use crate::telemetry::{self, Event};

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
    pub unpublished: usize,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct CameraSummary {
    pub end: String,
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

impl RunSummary {
    pub fn failed_cameras(&self) -> Vec<(&String, &CameraSummary)> {
        self.cameras.iter().filter(|(_, c)| c.end.starts_with("failed")).collect()
    }
}

type EvidenceJob = (Violation, ClipSource);

/// Rule configuration waiting to be applied by a camera's analysis thread (between two frames).
pub type RuleSlot = Arc<Mutex<Option<CameraRules>>>;

struct AnalysisCtx {
    cam: Camera,
    index: usize,
    models: Option<Arc<ModelPool>>,
    ring: Arc<Mutex<EncodedRing>>,
    stats: Arc<CameraStats>,
    evidence: mpsc::UnboundedSender<EvidenceJob>,
    epoch: chrono::DateTime<Utc>,
    utc_offset_s: i32,
    analysis: AnalysisConfig,
    pre: Duration,
    post: Duration,
    spool: Arc<Spool>,
    violations: Arc<AtomicU64>,
    reload: RuleSlot,
    labels: Vec<String>,
}

/// A camera's rule states, each with its own motion gate.
#[derive(Default)]
pub struct RuleStates {
    pub no_mask: Option<(NoMaskState, MotionGate)>,
    pub utensils: Option<(UtensilsState, MotionGate)>,
    /// Per-frame buffers, kept so that inference allocates nothing once they have grown (sized
    /// up front for the detectors' candidates before NMS).
    faces: Vec<crate::detect::Face>,
    boxes: Vec<crate::frame::BBox>,
    probs: Vec<f32>,
    objects: Vec<crate::detect::Object>,
}

impl RuleStates {
    pub fn new(r: CameraRules, a: &AnalysisConfig, labels: &[String]) -> RuleStates {
        let mut s = RuleStates {
            faces: Vec::with_capacity(256),
            boxes: Vec::with_capacity(64),
            probs: Vec::with_capacity(64),
            objects: Vec::with_capacity(1024),
            ..Default::default()
        };
        s.apply(r, a, labels);
        s
    }

    fn gate(a: &AnalysisConfig) -> MotionGate {
        let mut g = MotionGate::new(a.gate_min_change, Duration::from_secs_f64(a.gate_recheck_s));
        g.enabled = a.gate;
        g
    }

    /// Applies a (re)configuration, keeping the tracks of rules that stay.
    pub fn apply(&mut self, r: CameraRules, a: &AnalysisConfig, labels: &[String]) {
        self.no_mask = match (self.no_mask.take(), r.no_mask) {
            (Some((mut st, g)), Some((rule, zone))) => {
                st.set_rule(rule, zone);
                Some((st, g))
            }
            (None, Some((rule, zone))) => Some((NoMaskState::new(rule, zone), Self::gate(a))),
            (_, None) => None,
        };
        self.utensils = match (self.utensils.take(), r.utensils) {
            (Some((mut st, g)), Some((rule, zone, sched))) => {
                st.set_rule(rule, zone, sched);
                Some((st, g))
            }
            (None, Some((rule, zone, sched))) => Some((UtensilsState::new(rule, zone, sched, labels), Self::gate(a))),
            (_, None) => None,
        };
    }
}

/// What a fired rule contributes to its evidence item.
pub struct Raised {
    pub fire: Fire,
    pub kind: &'static str,
    pub severity: String,
    pub params: serde_json::Value,
    pub zone: Option<Polygon>,
}

/// Where an analysed frame comes from: for model sharing, counters and the site-local time.
pub struct FrameOrigin<'a> {
    pub index: usize,
    pub stats: &'a CameraStats,
    pub epoch: chrono::DateTime<Utc>,
    pub utc_offset_s: i32,
}

/// Runs each rule's inference on `frame` (unless its motion gate skips it) and feeds its state.
pub fn infer_rules(
    ctx: &FrameOrigin,
    states: &mut RuleStates,
    models: &ModelPool,
    frame: &crate::frame::RgbFrame,
) -> Result<Vec<Raised>> {
    let (w, h) = (frame.width, frame.height);
    let mut raised = Vec::new();
    if let Some((st, gate)) = states.no_mask.as_mut() {
        let roi = rules::roi(st.zone.as_ref(), w, h);
        if gate.should_infer(frame, roi, st.wants_frames()) {
            ctx.stats.inferred.fetch_add(1, Ordering::Relaxed);
            let (faces, boxes, probs) = (&mut states.faces, &mut states.boxes, &mut states.probs);
            {
                let t0 = Instant::now();
                let (fw, fth) = (st.rule.input_width, st.rule.face_threshold as f32);
                models.detect_faces(ctx.index, frame, roi, fw, fth, faces)?;
                let took = t0.elapsed();
                let mut set = models.get(ctx.index);
                let m = set.no_mask.as_mut().context("no-mask models not loaded")?;
                Event::Inference { model: &m.face.info.id, took }.emit();
                st.keep_eligible(faces, w, h);
                boxes.clear();
                boxes.extend(faces.iter().map(|f| f.bbox));
                let t1 = Instant::now();
                m.mask.no_mask_prob_into(frame, boxes, st.rule.crop_margin as f32, probs)?;
                if !boxes.is_empty() {
                    Event::Inference { model: &m.mask.info.id, took: t1.elapsed() }.emit();
                }
            }
            if let Some(fire) = st.update(frame.pts, faces, probs) {
                let params = serde_json::to_value(&st.rule).unwrap_or_default();
                let severity = st.rule.severity.clone();
                raised.push(Raised { fire, kind: "no_mask", severity, params, zone: st.zone.clone() });
            }
        } else {
            ctx.stats.gated.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Some((st, gate)) = states.utensils.as_mut() {
        let roi = rules::roi(st.zone.as_ref(), w, h);
        if gate.should_infer(frame, roi, false) {
            ctx.stats.inferred.fetch_add(1, Ordering::Relaxed);
            let objects = &mut states.objects;
            {
                let mut set = models.get(ctx.index);
                let m = set.objects.as_mut().context("object model not loaded")?;
                let t0 = Instant::now();
                m.detect_in(frame, roi, st.rule.threshold as f32, &st.wanted, objects)?;
                Event::Inference { model: &m.info.id, took: t0.elapsed() }.emit();
            }
            let wall = ctx.epoch + chrono::Duration::from_std(frame.pts).unwrap_or_default();
            let local_s = (wall.timestamp() + ctx.utc_offset_s as i64).rem_euclid(86400);
            if let Some(fire) = st.update(frame.pts, (local_s / 60) as u32, objects, w, h) {
                let params = serde_json::to_value(&st.rule).unwrap_or_default();
                let severity = st.rule.severity.clone();
                raised.push(Raised { fire, kind: "utensils_left", severity, params, zone: st.zone.clone() });
            }
        } else {
            ctx.stats.gated.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(raised)
}

/// Analysed frames per camera before allocation counting starts (buffers grow to size first).
const WARM_UP_FRAMES: u64 = 10;

fn analysis_loop(
    ctx: AnalysisCtx,
    frames: std::sync::mpsc::Receiver<crate::frame::RgbFrame>,
    spare: std::sync::mpsc::SyncSender<Vec<u8>>,
) {
    let mut raster: Option<MaskRaster> = None;
    let mut states = RuleStates::new(ctx.cam.rules.clone(), &ctx.analysis, &ctx.labels);
    let origin = FrameOrigin { index: ctx.index, stats: &ctx.stats, epoch: ctx.epoch, utc_offset_s: ctx.utc_offset_s };
    let mut tamper = TamperDetector::new(ctx.cam.tamper);
    let mut measurer = health::Measurer::default();
    let mut errors = 0u64;
    let mut seen = 0u64;
    let trace = crate::bench::trace_frames();
    while let Ok(mut frame) = frames.recv() {
        let allocs_before = crate::bench::thread_allocations();
        crate::bench::trace_allocations(seen >= WARM_UP_FRAMES && seen < WARM_UP_FRAMES + trace);
        // a new rule configuration takes effect between two frames, all of it at once
        let update = ctx.reload.lock().expect("rule slot").take();
        if let Some(r) = update {
            states.apply(r, &ctx.analysis, &ctx.labels);
        }
        if let Some(mask) = &ctx.cam.mask {
            if raster.as_ref().is_none_or(|r| r.width != frame.width || r.height != frame.height) {
                raster = Some(mask.raster(frame.width, frame.height));
            }
            let stride = frame.stride();
            raster.as_ref().expect("raster").apply_rgb(&mut frame.data, stride);
        }
        for c in tamper.update(frame.pts, measurer.measure(&frame)) {
            let what = format!("{} {}", c.condition, if c.active { "started" } else { "ended" });
            ctx.ring.lock().expect("ring").mark(c.at, format!("{what} ({})", c.detail));
            let lasted = c.lasted;
            Event::Health { camera: &ctx.cam.id, condition: c.condition, active: c.active, detail: &c.detail, lasted }
                .emit();
        }
        let raised = match ctx.models.as_deref() {
            None => Ok(Vec::new()),
            Some(models) => infer_rules(&origin, &mut states, models, &frame),
        };
        ctx.stats.analysed.fetch_add(1, Ordering::Relaxed);
        seen += 1;
        // the hot path: frames after warm-up that raise no violation (a violation builds its
        // evidence record, which allocates)
        if seen > WARM_UP_FRAMES && raised.as_ref().is_ok_and(|r| r.is_empty()) {
            let n = crate::bench::thread_allocations() - allocs_before;
            ctx.stats.hot_allocations.fetch_add(n, Ordering::Relaxed);
            ctx.stats.hot_frames.fetch_add(1, Ordering::Relaxed);
        }
        let raised = match raised {
            Ok(r) => r,
            Err(e) => {
                errors += 1;
                if errors <= 3 || errors.is_power_of_two() {
                    tracing::error!(camera = %ctx.cam.id, error = format!("{e:#}"), errors, "inference failed on a frame");
                }
                continue;
            }
        };
        for r in raised {
            raise(&ctx, r, &tamper, (frame.width, frame.height));
        }
        // the pixel buffer goes back to ingest for the next frame
        let _ = spare.try_send(frame.data);
    }
}

/// A rule fired: start collecting its clip; the evidence stage takes it from there.
fn raise(ctx: &AnalysisCtx, r: Raised, tamper: &TamperDetector, analysis_size: (u32, u32)) {
    let fire = r.fire;
    let evidence_id = ulid::Ulid::new().to_string();
    ctx.violations.fetch_add(1, Ordering::Relaxed);
    Event::ViolationRaised {
        camera: &ctx.cam.id,
        rule: &fire.rule_id,
        evidence_id: &evidence_id,
        stream_time: fire.pts,
        value: fire.value,
    }
    .emit();
    if ctx.spool.is_full() {
        let why = format!("spool holds {} of {} bytes", ctx.spool.bytes(), ctx.spool.max_bytes);
        Event::EvidenceRefused { camera: &ctx.cam.id, evidence_id: &evidence_id, why: &why }.emit();
        return;
    }
    let v = Violation {
        evidence_id,
        camera: ctx.cam.id.clone(),
        rule: RuleFacts::new(&fire.rule_id, r.kind, &r.severity, r.params),
        detections: fire.detections,
        zone: r.zone,
        trigger_pts: fire.pts,
        detection_frames: fire.frames,
        conditions_at_trigger: tamper.active().into_iter().map(str::to_string).collect(),
        stream_epoch: ctx.epoch,
        analysis_size,
        pre_roll: ctx.pre,
        post_roll: ctx.post,
    };
    let tx = ctx.evidence.clone();
    let (start, end) = (fire.pts.saturating_sub(ctx.pre), fire.pts + ctx.post);
    ctx.ring.lock().expect("ring").start_clip(
        start,
        end,
        Box::new(move |clip| {
            let _ = tx.send((v, clip));
        }),
    );
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
        Ok((cp, bytes)) => {
            written.insert(cam.into(), cp.last_seq);
            tracing::info!(camera = cam, last_seq = cp.last_seq, "chain checkpoint written");
            let payload: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let id = format!("checkpoint-{site}-{cam}-{}-{}", cp.last_seq, cp.time_utc);
            let entry = crate::publish::OutboxEntry { id, subject: format!("vigil.chain.{site}.{cam}"), payload };
            if let Err(e) = publisher.submit(entry).await {
                tracing::error!(camera = cam, error = format!("{e:#}"), "chain checkpoint not queued for publishing");
            }
        }
        Err(e) => tracing::error!(camera = cam, error = format!("{e:#}"), "chain checkpoint FAILED"),
    }
}

/// How long a frame waits for other cameras' frames to fill a face-detection batch.
pub const BATCH_WAIT: Duration = Duration::from_millis(20);

/// Loads `models.instances` copies of the models the cameras' rules need (none: `None`).
pub async fn load_models(p: &Pipeline) -> Result<Option<Arc<ModelPool>>> {
    let no_mask = p.cameras.iter().any(|c| c.rules.no_mask.is_some());
    let objects = p.cameras.iter().any(|c| c.rules.utensils.is_some());
    if !no_mask && !objects {
        return Ok(None);
    }
    let dir = p.models_dir.clone();
    let m = p.raw.models.clone();
    let opts = RuntimeOptions {
        execution_providers: m.execution_providers.clone(),
        intra_threads: m.intra_threads,
        ort_library: m.ort_library.clone(),
    };
    let sets = tokio::task::spawn_blocking(move || -> Result<Vec<ModelSet>> {
        (0..m.instances)
            .map(|_| {
                Ok(ModelSet {
                    no_mask: if no_mask {
                        Some(Models::load(&dir, &m.face, &m.mask, m.mask_head.as_deref(), &opts)?)
                    } else {
                        None
                    },
                    objects: if objects { Some(ObjectDetector::load(&dir, &m.objects, &opts)?) } else { None },
                })
            })
            .collect()
    })
    .await??;
    Ok(Some(Arc::new(ModelPool::new(sets).with_batching(p.raw.models.batch, BATCH_WAIT))))
}

/// Runs the pipeline until every source has ended or `shutdown` is set.
pub async fn run(p: Pipeline, shutdown: Arc<AtomicBool>) -> Result<RunSummary> {
    let started = Instant::now();
    let raw = &p.raw;
    std::fs::create_dir_all(&p.data_dir).with_context(|| format!("data dir {}", p.data_dir.display()))?;
    let scratch = p.data_dir.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let store = Store::open_with(&p.store_url, &raw.store.options, raw.store.object_lock)?;
    let signer = Arc::new(if !p.key_path.exists() && raw.signing.generate_if_missing {
        let dir = p.key_path.parent().context("signing key path has no folder")?;
        let s = Signer::init(dir)?;
        tracing::warn!(key = %p.key_path.display(), key_id = %s.key_id, "generated a new signing key (signing.generate_if_missing)");
        s
    } else {
        Signer::load(&p.key_path).context("signing.key (make one with `vigil keys init`)")?
    });
    let chains =
        Arc::new(Chains::new(store.clone(), signer.clone(), &raw.site.id, &p.data_dir, raw.retention.evidence_days)?);
    let stream = raw.publish.stream.clone().unwrap_or_else(|| "VIGIL".into());
    let dup = Duration::from_secs_f64(raw.publish.duplicate_window_s);
    let publisher = Arc::new(Publisher::start(&p.data_dir, raw.publish.nats_url.as_deref(), &stream, dup).await?);
    let spool = Arc::new(Spool::open(&p.data_dir, raw.worker.spool_max_bytes)?);
    telemetry::SPOOL_BYTES.set(spool.bytes() as i64);
    if !spool.pending().is_empty() {
        tracing::info!(items = spool.pending().len(), "spool: uploading evidence left from before");
    }
    let (up_stop_tx, up_stop) = tokio::sync::watch::channel(false);
    let uploader =
        tokio::spawn(spool.clone().run_uploader(store.clone(), publisher.clone(), up_stop, Duration::from_secs(10)));
    // health events → vigil.health.<site>.<camera>
    let (htx, mut hrx) = mpsc::unbounded_channel::<telemetry::HealthEvent>();
    telemetry::set_health_sink(Some(htx));
    let health_task = {
        let (publisher, site) = (publisher.clone(), raw.site.id.clone());
        tokio::spawn(async move {
            while let Some(h) = hrx.recv().await {
                let entry = crate::publish::OutboxEntry {
                    id: format!("health-{}", ulid::Ulid::new()),
                    subject: format!("vigil.health.{site}.{}", h.camera),
                    payload: serde_json::to_value(&h).unwrap_or_default(),
                };
                if let Err(e) = publisher.submit(entry).await {
                    tracing::error!(error = format!("{e:#}"), "health event not recorded");
                }
            }
        })
    };
    if let Some(addr) = &raw.worker.http {
        let a = telemetry::serve(addr.parse().context("worker.http")?)
            .await
            .with_context(|| format!("worker.http {addr}"))?;
        tracing::info!(address = %a, "serving /metrics and /health");
    }
    tracing::info!(
        pipeline = %p.file.display(), site = %raw.site.id, cameras = p.cameras.len(), store = %store.url,
        nats = raw.publish.nats_url.as_deref().unwrap_or("none (outbox file only)"),
        outbox = %publisher.outbox_path.display(), "vigil run starting"
    );

    let models = load_models(&p).await?;
    let model_facts: Vec<ModelFacts> = models
        .as_ref()
        .map(|m| m.get(0).infos().into_iter().map(|(id, sha256)| ModelFacts { id, sha256 }).collect())
        .unwrap_or_default();
    let labels: Vec<String> =
        models.as_ref().and_then(|m| m.get(0).objects.as_ref().map(|o| o.labels().to_vec())).unwrap_or_default();

    let pre = Duration::from_secs_f64(raw.clip.pre_roll_s);
    let post = Duration::from_secs_f64(raw.clip.post_roll_s);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<EvidenceJob>();
    let mut camera_threads = Vec::new();
    let mut analysis_threads = Vec::new();
    let mut per_cam = Vec::new();
    // hot reload of rule parameters (pipeline file, NATS KV): cameras start with the current ones
    let slots: BTreeMap<String, RuleSlot> =
        p.cameras.iter().map(|c| (c.id.clone(), Arc::new(Mutex::new(None)))).collect();
    let (ctl_stop_tx, ctl_stop) = tokio::sync::watch::channel(false);
    let ctl = crate::thresholds::RuleControl::new(&p, slots.clone(), publisher.clone())?;
    let (initial_rules, ctl_task) =
        crate::thresholds::start(ctl, raw.publish.nats_url.clone(), raw.control.watch_file, ctl_stop).await;
    for (index, cam) in p.cameras.iter().enumerate() {
        let reload = slots[&cam.id].clone();
        let mut cam = cam.clone();
        if let Some(r) = initial_rules.get(&cam.id) {
            cam.rules = r.clone();
        }
        let cam = &cam;
        // the encoded branch runs ahead of analysis by up to the decoder queue (32 frames), the
        // decoder's delay and the analysis queue: 8 s beyond the pre-roll covers that down to 5 fps
        let ring = Arc::new(Mutex::new(EncodedRing::new(pre + Duration::from_secs(8))));
        let stats = Arc::new(CameraStats::default());
        telemetry::cameras().lock().expect("cams").insert(cam.id.clone(), stats.clone());
        let violations = Arc::new(AtomicU64::new(0));
        let (ftx, frx, spare) = ingest::frame_queue(raw.analysis.queue);
        let epoch_instant = Instant::now();
        let ctx = AnalysisCtx {
            cam: cam.clone(),
            index,
            models: models.clone(),
            ring: ring.clone(),
            stats: stats.clone(),
            evidence: ev_tx.clone(),
            epoch: Utc::now(),
            utc_offset_s: p.utc_offset_s(),
            analysis: raw.analysis,
            pre,
            post,
            spool: spool.clone(),
            violations: violations.clone(),
            reload,
            labels: labels.clone(),
        };
        analysis_threads.push(
            std::thread::Builder::new()
                .name(format!("analyse-{}", cam.id))
                .spawn(move || analysis_loop(ctx, frx, spare))?,
        );
        let (c, a, r, s, sd) = (cam.clone(), raw.analysis, ring.clone(), stats.clone(), shutdown.clone());
        camera_threads.push((
            cam.id.clone(),
            std::thread::Builder::new()
                .name(format!("ingest-{}", cam.id))
                .spawn(move || ingest::run_camera(&c, a, r, s, ftx, sd, epoch_instant))?,
        ));
        per_cam.push((cam.id.clone(), stats, violations));
    }
    drop(ev_tx);

    // evidence stage
    let ctx = Arc::new(EvidenceContext {
        spool: spool.clone(),
        chains: chains.clone(),
        signer: signer.clone(),
        models: model_facts,
        worker: WorkerFacts { id: p.worker_id(), version: env!("CARGO_PKG_VERSION").into() },
        site: raw.site.id.clone(),
        site_name: raw.site.name.clone(),
        history_dir: p.data_dir.join("history"),
        retention: raw.retention,
        seal: raw.evidence.seal_recipient.as_ref().map(|r| r.parse().expect("validated at load")),
        utc_offset_s: p.utc_offset_s(),
        jpeg_quality: raw.clip.jpeg_quality,
        quantizer: raw.clip.quantizer,
        scratch,
    });
    let cams: BTreeMap<String, Camera> = p.cameras.iter().map(|c| (c.id.clone(), c.clone())).collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(raw.clip.max_concurrent));
    let evidence_task = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        while let Some((v, clip)) = ev_rx.recv().await {
            let (ctx, limit) = (ctx.clone(), limit.clone());
            let cam = cams.get(&v.camera).cloned().expect("camera of a violation");
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore");
                let id = v.evidence_id.clone();
                match evidence::produce(&ctx, v, clip, &cam).await {
                    Ok(e) => {
                        let seq = e["chain"]["seq"].as_u64().unwrap_or_default();
                        let status = e["status"]["kind"].as_str().unwrap_or_default();
                        let admissible = e["admissibility"]["admissible"].as_bool().unwrap_or_default();
                        Event::EvidenceSpooled { camera: &cam.id, evidence_id: &id, seq, status, admissible }.emit();
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

    // signed chain checkpoints: periodically while running, and once more at the end
    let cam_ids: Vec<String> = p.cameras.iter().map(|c| c.id.clone()).collect();
    let (cp_stop_tx, mut cp_stop) = tokio::sync::watch::channel(false);
    let cp_task = {
        let (chains, publisher, ids) = (chains.clone(), publisher.clone(), cam_ids.clone());
        let every = Duration::from_secs_f64(raw.signing.checkpoint_interval_s);
        let site = raw.site.id.clone();
        tokio::spawn(async move {
            let mut written: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let stop = tokio::select! {
                    _ = tokio::time::sleep(every) => false,
                    _ = cp_stop.changed() => true,
                };
                for cam in &ids {
                    checkpoint(&chains, &publisher, &site, cam, &mut written, stop).await;
                }
                if stop {
                    break;
                }
            }
        })
    };

    // wait for ingest to end
    let mut ends = BTreeMap::new();
    for (id, t) in camera_threads {
        let end = tokio::task::spawn_blocking(move || t.join()).await?;
        let end = match end {
            Ok(e) => e,
            Err(_) => CameraEnd::Failed("ingest thread panicked".into()),
        };
        match &end {
            CameraEnd::Failed(why) => tracing::error!(camera = %id, error = %why, "camera FAILED"),
            e => tracing::info!(camera = %id, end = ?e, "camera finished"),
        }
        ends.insert(id, end);
    }
    for t in analysis_threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await?;
    }
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
    let unpublished = publisher.flush(Duration::from_secs(10)).await;
    if unpublished > 0 {
        tracing::warn!(events = unpublished, outbox = %publisher.outbox_path.display(), "events not yet acknowledged by JetStream stay in the outbox and are sent on the next start");
    }
    let mut summary = RunSummary {
        events,
        evidence_failures,
        refused: telemetry::EVIDENCE_REFUSED.get(),
        spooled: spool.pending().len(),
        unpublished,
        ..Default::default()
    };
    for (id, stats, violations) in per_cam {
        let end = match ends.remove(&id) {
            Some(CameraEnd::Failed(why)) => format!("failed: {why}"),
            Some(CameraEnd::Ended) => "ended".into(),
            _ => "stopped".into(),
        };
        summary.cameras.insert(
            id,
            CameraSummary {
                end,
                encoded_frames: stats.encoded_frames.load(Ordering::Relaxed),
                analysis_frames: stats.analysis_offered.load(Ordering::Relaxed),
                analysed: stats.analysed.load(Ordering::Relaxed),
                dropped: stats.analysis_dropped.load(Ordering::Relaxed),
                reconnects: stats.reconnects.load(Ordering::Relaxed),
                violations: violations.load(Ordering::Relaxed),
                inferred: stats.inferred.load(Ordering::Relaxed),
                gated: stats.gated.load(Ordering::Relaxed),
                hot_allocations: stats.hot_allocations.load(Ordering::Relaxed),
                hot_frames: stats.hot_frames.load(Ordering::Relaxed),
            },
        );
    }
    tracing::info!(elapsed_s = started.elapsed().as_secs_f64(), summary = %serde_json::to_string(&summary).unwrap_or_default(), "vigil run finished");
    Ok(summary)
}
