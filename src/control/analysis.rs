//! The per-camera analysis loop: privacy mask → tamper and health measures → rules (each with its
//! motion gate and inference) → what fired. [`Analyser`] is one camera's state and does one frame;
//! [`run_loop`] is the thread that feeds it frames, applies rule changes between two frames, and
//! hands health changes and violations to an [`AnalysisSink`]. The worker, `vigil bench`,
//! `vigil eval-clips` and the tests all run this same code.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::detect::ModelPool;
use crate::frame::RgbFrame;
use crate::health::{self, Change, TamperDetector};
use crate::ingest::FrameSource;
use crate::privacy::{MaskRaster, PrivacyMask};
use crate::rules::{CameraRules, FrameCtx, GateSettings, Raised, RuleSet};
use crate::telemetry::alloc;
use crate::telemetry::{CameraStats, Condition};

/// Rule configuration waiting to be applied by a camera's analysis thread (between two frames).
pub type RuleSlot = Arc<Mutex<Option<CameraRules>>>;

/// A privacy mask waiting to be applied by a camera's analysis thread (between two frames):
/// `Some(None)` runs the camera without a mask.
pub type MaskSlot = Arc<Mutex<Option<Option<Arc<PrivacyMask>>>>>;

/// A request for the camera's next analysis frame (the ops console's picture to draw masks on).
pub struct SnapshotRequest {
    /// The frame before the privacy mask (only the ops console's audited unmasked view asks).
    pub unmasked: bool,
    /// The frame and the SHA-256 of the mask in force (`none` without one).
    pub reply: tokio::sync::oneshot::Sender<(RgbFrame, String)>,
}

/// What reaches a running camera's analysis thread from outside, taken between two frames: new
/// rules, a new privacy mask, requests for a snapshot.
#[derive(Clone, Default)]
pub struct CameraControl {
    pub rules: RuleSlot,
    pub mask: MaskSlot,
    pub snapshots: Arc<Mutex<Vec<SnapshotRequest>>>,
    /// The last rules and mask handed over (kept, not taken): a camera that starts later on this
    /// worker (a cluster lease) starts from them, see [`CameraControl::replay`].
    pub last_rules: RuleSlot,
    pub last_mask: MaskSlot,
}

impl CameraControl {
    /// Hands new rules to the camera (taken between two frames) and keeps them as the last ones.
    pub fn set_rules(&self, r: CameraRules) {
        *lock(&self.last_rules) = Some(r.clone());
        *lock(&self.rules) = Some(r);
    }

    /// Hands a new mask to the camera and keeps it as the last one.
    pub fn set_mask(&self, m: Option<Arc<PrivacyMask>>) {
        *lock(&self.last_mask) = Some(m.clone());
        *lock(&self.mask) = Some(m);
    }

    /// Hands the last rules and mask over again, for a camera (re)started after they were set.
    pub fn replay(&self) {
        if let Some(r) = lock(&self.last_rules).clone() {
            *lock(&self.rules) = Some(r);
        }
        if let Some(m) = lock(&self.last_mask).clone() {
            *lock(&self.mask) = Some(m);
        }
    }
}

/// Locks a slot whatever a panicking holder left (a slot holds plain values).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Analysed frames per camera before allocation counting starts (buffers grow to size first).
pub const WARM_UP_FRAMES: u64 = 10;

/// What one camera's analysis needs to know.
pub struct AnalyserConfig {
    pub camera: String,
    pub mask: Option<PrivacyMask>,
    pub tamper: crate::health::TamperConfig,
    pub rules: CameraRules,
    pub gate: GateSettings,
    /// The object model's class names.
    pub labels: Vec<String>,
    /// Wall-clock time of stream time zero.
    pub epoch: DateTime<Utc>,
    pub utc_offset_s: i32,
    /// Which model copy this camera prefers.
    pub model_hint: usize,
}

/// One camera's analysis state.
pub struct Analyser {
    pub camera: String,
    mask: Option<Arc<PrivacyMask>>,
    raster: Option<MaskRaster>,
    rules: RuleSet,
    tamper: TamperDetector,
    measurer: health::Measurer,
    epoch: DateTime<Utc>,
    utc_offset_s: i32,
    model_hint: usize,
    pub stats: Arc<CameraStats>,
}

/// What one frame produced.
#[derive(Default)]
pub struct FrameOutcome {
    pub changes: Vec<Change>,
    pub raised: Vec<Raised>,
}

impl Analyser {
    pub fn new(c: AnalyserConfig, stats: Arc<CameraStats>) -> Analyser {
        Analyser {
            rules: RuleSet::new(&c.rules, c.gate, &c.labels),
            camera: c.camera,
            mask: c.mask.map(Arc::new),
            raster: None,
            tamper: TamperDetector::new(c.tamper),
            measurer: health::Measurer::default(),
            epoch: c.epoch,
            utc_offset_s: c.utc_offset_s,
            model_hint: c.model_hint,
            stats,
        }
    }

    /// Applies a rule configuration, all of it at once, keeping the tracks of rules that stay.
    pub fn reconfigure(&mut self, r: &CameraRules) {
        self.rules.apply(r);
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Replaces the privacy mask from the next frame on (`None`: no mask).
    pub fn set_mask(&mut self, mask: Option<Arc<PrivacyMask>>) {
        self.mask = mask;
        self.raster = None;
    }

    /// The privacy mask in force: what the analysis blacks out and what evidence cut from a
    /// violation raised now burns into its stored pixels and names in its manifest.
    pub fn current_mask(&self) -> Option<&Arc<PrivacyMask>> {
        self.mask.as_ref()
    }

    /// Conditions active now (for the evidence of a violation).
    pub fn active_conditions(&self) -> Vec<Condition> {
        self.tamper.active()
    }

    /// Blacks out the privacy mask in `frame` (in place).
    pub fn mask(&mut self, frame: &mut RgbFrame) {
        if let Some(mask) = &self.mask {
            if self.raster.as_ref().is_none_or(|r| r.width != frame.width || r.height != frame.height) {
                self.raster = Some(mask.raster(frame.width, frame.height));
            }
            let stride = frame.stride();
            self.raster.as_ref().expect("raster").apply_rgb(&mut frame.data, stride);
        }
    }

    /// One frame: mask, health measures, rules. `models` `None`: no rule needs a model.
    pub fn analyse(&mut self, frame: &mut RgbFrame, models: Option<&ModelPool>) -> (Vec<Change>, Result<Vec<Raised>>) {
        self.mask(frame);
        let changes = self.tamper.update(frame.pts, self.measurer.measure(frame));
        let raised = match models {
            None => Ok(Vec::new()),
            Some(m) => {
                let ctx = FrameCtx {
                    frame,
                    wall: crate::util::time::add_std(self.epoch, frame.pts),
                    utc_offset_s: self.utc_offset_s,
                    model_hint: self.model_hint,
                };
                self.rules.run(&ctx, m, &self.stats)
            }
        };
        self.stats.analysed.inc();
        crate::telemetry::probe::record_frame();
        (changes, raised)
    }

    /// Answers snapshot requests with a copy of `frame` (not yet masked): unmasked as it is, or
    /// masked as stored pixels are (the polygons and their guard band).
    fn answer_snapshots(&self, wanted: Vec<SnapshotRequest>, frame: &RgbFrame) {
        let mut masked: Option<RgbFrame> = None;
        let sha = self.mask.as_ref().map_or_else(|| "none".to_string(), |m| m.sha256.clone());
        for w in wanted {
            let copy = if w.unmasked {
                frame.clone()
            } else {
                masked
                    .get_or_insert_with(|| {
                        let mut f = frame.clone();
                        if let Some(m) = &self.mask {
                            let stride = f.stride();
                            m.stored_raster(f.width, f.height).apply_rgb(&mut f.data, stride);
                        }
                        f
                    })
                    .clone()
            };
            let _ = w.reply.send((copy, sha.clone()));
        }
    }

    /// Wall-clock time of stream time zero.
    pub fn epoch(&self) -> DateTime<Utc> {
        self.epoch
    }
}

/// Where the analysis loop's results go.
pub trait AnalysisSink {
    /// A tamper/health condition started or ended.
    fn health(&mut self, camera: &str, change: &Change);
    /// A rule fired on `frame` (already masked with `mask`), with the conditions active at that
    /// frame.
    fn raise(
        &mut self,
        camera: &str,
        r: Raised,
        frame: &RgbFrame,
        active: &[Condition],
        mask: Option<&Arc<PrivacyMask>>,
    );
}

/// Runs one camera's analysis until the frame queue closes. A new rule configuration or privacy
/// mask in `control` takes effect between two frames; snapshot requests are answered with the next
/// frame (masked as stored evidence is, unless the request is for the unmasked view). Heap allocations on the analysis thread are counted per
/// frame after warm-up into the camera's stats (`hot_allocations` over `hot_frames`); frames that
/// raise a violation or change a health condition are left out: building their record allocates.
pub fn run_loop(
    mut a: Analyser,
    frames: FrameSource,
    control: CameraControl,
    models: Option<Arc<ModelPool>>,
    sink: &mut dyn AnalysisSink,
) {
    let mut errors = 0u64;
    let mut seen = 0u64;
    let trace = alloc::trace_frames();
    while let Some(mut frame) = frames.recv() {
        let allocs_before = alloc::thread_allocations();
        alloc::trace_allocations(seen >= WARM_UP_FRAMES && seen < WARM_UP_FRAMES + trace);
        let update = lock(&control.rules).take();
        if let Some(r) = update {
            a.reconfigure(&r);
        }
        let mask = lock(&control.mask).take();
        if let Some(m) = mask {
            a.set_mask(m);
        }
        let wanted = std::mem::take(&mut *lock(&control.snapshots));
        if !wanted.is_empty() {
            a.answer_snapshots(wanted, &frame);
        }
        let (changes, raised) = a.analyse(&mut frame, models.as_deref());
        for c in &changes {
            sink.health(&a.camera, c);
        }
        seen += 1;
        // the hot path: frames after warm-up that raise nothing (an event builds its record,
        // which allocates)
        if seen > WARM_UP_FRAMES && changes.is_empty() && raised.as_ref().is_ok_and(|r| r.is_empty()) {
            let n = alloc::thread_allocations() - allocs_before;
            a.stats.hot_allocations.inc_by(n);
            a.stats.hot_frames.inc();
        }
        alloc::trace_allocations(false);
        match raised {
            Ok(raised) => {
                if !raised.is_empty() {
                    let active = a.active_conditions();
                    for r in raised {
                        sink.raise(&a.camera, r, &frame, &active, a.current_mask());
                    }
                }
            }
            Err(e) => {
                errors += 1;
                if errors <= 3 || errors.is_power_of_two() {
                    tracing::error!(camera = %a.camera, error = format!("{e:#}"), errors, "inference failed on a frame");
                }
            }
        }
        // the pixel buffer goes back to ingest for the next frame
        frames.give_back(frame.data);
    }
}
