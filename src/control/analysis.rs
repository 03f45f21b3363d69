//! The per-camera analysis loop: privacy mask → tamper and health measures → rules (each with its
//! motion gate and inference) → what fired. [`Analyser`] is one camera's state and does one frame;
//! [`run_loop`] is the thread that feeds it frames, applies rule changes between two frames, and
//! hands health changes and violations to an [`AnalysisSink`]. The worker, `vigil bench`,
//! `vigil eval-clips` and the tests all run this same code.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::detect::ModelPool;
use crate::frame::RgbFrame;
use crate::health::{self, Change, TamperDetector};
use crate::privacy::{MaskRaster, PrivacyMask};
use crate::rules::{CameraRules, FrameCtx, GateSettings, Raised, RuleSet};
use crate::telemetry::alloc;
use crate::telemetry::{CameraStats, Condition};

/// Rule configuration waiting to be applied by a camera's analysis thread (between two frames).
pub type RuleSlot = Arc<Mutex<Option<CameraRules>>>;

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
    mask: Option<PrivacyMask>,
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
            mask: c.mask,
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
        (changes, raised)
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
    /// A rule fired on `frame` (already masked), with the conditions active at that frame.
    fn raise(&mut self, camera: &str, r: Raised, frame: &RgbFrame, active: &[Condition]);
}

/// Runs one camera's analysis until the frame queue closes. A new rule configuration in `reload`
/// takes effect between two frames. Heap allocations on the analysis thread are counted per
/// frame after warm-up into the camera's stats (`hot_allocations` over `hot_frames`); frames that
/// raise a violation or change a health condition are left out: building their record allocates.
pub fn run_loop(
    mut a: Analyser,
    frames: Receiver<RgbFrame>,
    spare: Option<SyncSender<Vec<u8>>>,
    reload: RuleSlot,
    models: Option<Arc<ModelPool>>,
    sink: &mut dyn AnalysisSink,
) {
    let mut errors = 0u64;
    let mut seen = 0u64;
    let trace = alloc::trace_frames();
    while let Ok(mut frame) = frames.recv() {
        let allocs_before = alloc::thread_allocations();
        alloc::trace_allocations(seen >= WARM_UP_FRAMES && seen < WARM_UP_FRAMES + trace);
        let update = reload.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(r) = update {
            a.reconfigure(&r);
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
                        sink.raise(&a.camera, r, &frame, &active);
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
        if let Some(s) = &spare {
            let _ = s.try_send(frame.data);
        }
    }
}
