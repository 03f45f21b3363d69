//! Per-camera counters and conditions. Each counter is a Prometheus counter registered under the
//! camera's label, so the run summary, `vigil bench`, `/metrics` and `/health` read the same
//! numbers.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::metrics;

/// A health condition of a camera (or of the worker, for `spool_full`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The stream is down (error, end, stall).
    Stream,
    Frozen,
    Covered,
    Saturated,
    Defocus,
    Moved,
    /// The evidence spool is full: new clips are not cut.
    SpoolFull,
    /// A spooled evidence item could not be uploaded as it is (unreadable, altered on disk, or
    /// its key holds other content): set aside in `spool-quarantine/`, kept, never deleted.
    #[serde(rename = "evidence_quarantined")]
    Quarantined,
    /// The camera's chain head in the store and spool is behind what this worker committed:
    /// items it made are gone (removed from the store?). New items never take their positions.
    ChainGap,
    /// The wall clock stepped back since the last item: the affected items carry the step.
    ClockStep,
    /// Analysis cannot keep up: over the last [`OVERLOAD_WINDOW`] more than half of the frames
    /// due for analysis were dropped (ends below a fifth). Its violations may go unseen.
    Overload,
    /// Cluster: which worker runs the camera. `active`: a worker took its lease (detail names it
    /// and the lease revision); ended: the worker let it go (handed over, lost, stopped). A fact
    /// about the camera's placement, never an abnormal state of the camera (not in `ALL`).
    Lease,
}

impl Condition {
    pub const ALL: [Condition; 11] = [
        Condition::Stream,
        Condition::Frozen,
        Condition::Covered,
        Condition::Saturated,
        Condition::Defocus,
        Condition::Moved,
        Condition::SpoolFull,
        Condition::Quarantined,
        Condition::ChainGap,
        Condition::ClockStep,
        Condition::Overload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Condition::Stream => "stream",
            Condition::Frozen => "frozen",
            Condition::Covered => "covered",
            Condition::Saturated => "saturated",
            Condition::Defocus => "defocus",
            Condition::Moved => "moved",
            Condition::SpoolFull => "spool_full",
            Condition::Quarantined => "evidence_quarantined",
            Condition::ChainGap => "chain_gap",
            Condition::ClockStep => "clock_step",
            Condition::Overload => "overload",
            Condition::Lease => "lease",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters of one camera.
#[derive(Debug)]
pub struct CameraStats {
    pub camera: String,
    pub encoded_frames: Counter,
    pub analysis_offered: Counter,
    pub analysis_dropped: Counter,
    pub analysed: Counter,
    /// Rule-region inferences run, and skipped by motion gating.
    pub inferred: Counter,
    pub gated: Counter,
    /// Inferences the gate handed on as a motion part (`analysis.motion_regions`).
    pub inferred_part: Counter,
    /// Detections the rules tracked in inferred frames (faces, objects): how much a setting
    /// changes what the rules see (`vigil eval-clips`). Not exported.
    pub detections: Counter,
    /// Heap allocations of the analysis thread per frame (mask → tamper → gate → inference →
    /// rules), summed over frames after warm-up, and those frames.
    pub hot_allocations: Counter,
    pub hot_frames: Counter,
    pub reconnects: Counter,
    pub violations: Counter,
    /// Unix time (ms) of the last violation raised; 0: none yet.
    pub last_violation_ms: AtomicI64,
    /// Unix time (ms) of the last video frame received; 0: none yet.
    pub last_video_ms: AtomicI64,
    /// Unix time (ms) at which the `stream` condition last became active (when it is).
    pub down_since_ms: AtomicI64,
    /// The camera's source ended or failed for good: no more video is expected (the watch
    /// stops judging it).
    pub finished: AtomicBool,
    conditions: AtomicU32,
}

/// The span over which [`Condition::Overload`] is judged.
pub const OVERLOAD_WINDOW: Duration = Duration::from_secs(10);

/// Now, as Unix milliseconds.
pub fn unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl CameraStats {
    /// Counters for `camera`, registered in the metrics registry (the same counters again if
    /// the camera was registered before).
    pub fn new(camera: &str) -> CameraStats {
        let m = metrics::get();
        let c = |f: &prometheus_client::metrics::family::Family<metrics::CameraLabel, Counter>| {
            f.get_or_create(&metrics::CameraLabel { camera: camera.into() }).clone()
        };
        CameraStats {
            camera: camera.into(),
            encoded_frames: c(&m.frames_decoded),
            analysis_offered: Counter::default(),
            analysis_dropped: c(&m.frames_dropped),
            analysed: c(&m.frames_analysed),
            inferred: c(&m.inferences),
            gated: c(&m.inferences_gated),
            inferred_part: c(&m.inferences_partial),
            detections: Counter::default(),
            hot_allocations: Counter::default(),
            hot_frames: Counter::default(),
            reconnects: c(&m.reconnects),
            violations: c(&m.violations),
            last_violation_ms: AtomicI64::new(0),
            last_video_ms: AtomicI64::new(0),
            down_since_ms: AtomicI64::new(0),
            finished: AtomicBool::new(false),
            conditions: AtomicU32::new(0),
        }
    }

    /// Counters that are not exported (evaluation and tests).
    pub fn detached(camera: &str) -> CameraStats {
        CameraStats {
            camera: camera.into(),
            encoded_frames: Counter::default(),
            analysis_offered: Counter::default(),
            analysis_dropped: Counter::default(),
            analysed: Counter::default(),
            inferred: Counter::default(),
            gated: Counter::default(),
            inferred_part: Counter::default(),
            detections: Counter::default(),
            hot_allocations: Counter::default(),
            hot_frames: Counter::default(),
            reconnects: Counter::default(),
            violations: Counter::default(),
            last_violation_ms: AtomicI64::new(0),
            last_video_ms: AtomicI64::new(0),
            down_since_ms: AtomicI64::new(0),
            finished: AtomicBool::new(false),
            conditions: AtomicU32::new(0),
        }
    }

    /// Sets or clears `c`; true when that changed it.
    pub fn set_condition(&self, c: Condition, on: bool) -> bool {
        let before = if on {
            self.conditions.fetch_or(c.bit(), Ordering::Relaxed)
        } else {
            self.conditions.fetch_and(!c.bit(), Ordering::Relaxed)
        };
        let changed = (before & c.bit() != 0) != on;
        if on && changed && c == Condition::Stream {
            self.down_since_ms.store(unix_ms(), Ordering::Relaxed);
        }
        self.export(c, on);
        changed
    }

    /// Whether `c` is active.
    pub fn is_active(&self, c: Condition) -> bool {
        self.conditions.load(Ordering::Relaxed) & c.bit() != 0
    }

    fn export(&self, c: Condition, on: bool) {
        metrics::get()
            .camera_condition
            .get_or_create(&metrics::ConditionLabel { camera: self.camera.clone(), condition: c.name().into() })
            .set(on as i64);
    }

    pub fn active(&self) -> Vec<Condition> {
        let bits = self.conditions.load(Ordering::Relaxed);
        Condition::ALL.into_iter().filter(|c| bits & c.bit() != 0).collect()
    }
}

impl PartialEq<&str> for Condition {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}
