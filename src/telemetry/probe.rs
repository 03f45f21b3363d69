//! Benchmark instrumentation (`vigil bench`; off otherwise): raw inference latencies, and when
//! each violation was raised and its event recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct BenchProbe {
    /// Inference latencies per model.
    pub inference: BTreeMap<String, Vec<Duration>>,
    pub raised: HashMap<String, Instant>,
    pub recorded: HashMap<String, Instant>,
    /// When JetStream acknowledged each evidence event.
    pub acked: HashMap<String, Instant>,
}

static PROBE: Mutex<Option<BenchProbe>> = Mutex::new(None);

static ON: AtomicBool = AtomicBool::new(false);
static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Nanoseconds since `EPOCH` (+1, 0 = none) of the first and the last analysed frame.
static FIRST_FRAME: AtomicU64 = AtomicU64::new(0);
static LAST_FRAME: AtomicU64 = AtomicU64::new(0);

pub fn enable() {
    *PROBE.lock().unwrap_or_else(|p| p.into_inner()) = Some(BenchProbe::default());
    EPOCH.get_or_init(Instant::now);
    FIRST_FRAME.store(0, Ordering::Relaxed);
    LAST_FRAME.store(0, Ordering::Relaxed);
    ON.store(true, Ordering::Relaxed);
}

/// One frame analysed (two atomics, no lock: it is on the per-frame path).
pub fn record_frame() {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let Some(e) = EPOCH.get() else { return };
    let t = e.elapsed().as_nanos() as u64 + 1;
    let _ = FIRST_FRAME.compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
    LAST_FRAME.fetch_max(t, Ordering::Relaxed);
}

/// Seconds from the first to the last analysed frame since [`enable`] (the steady part of a run,
/// without start-up and the end's clip finishing).
pub fn frames_span_s() -> Option<f64> {
    let (a, b) = (FIRST_FRAME.load(Ordering::Relaxed), LAST_FRAME.load(Ordering::Relaxed));
    (a > 0 && b > a).then(|| (b - a) as f64 / 1e9)
}

pub fn take() -> Option<BenchProbe> {
    ON.store(false, Ordering::Relaxed);
    PROBE.lock().unwrap_or_else(|p| p.into_inner()).take()
}

fn with(f: impl FnOnce(&mut BenchProbe)) {
    if let Some(p) = PROBE.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        f(p);
    }
}

pub fn record_inference(model: &str, took: Duration) {
    with(|p| match p.inference.get_mut(model) {
        Some(v) => v.push(took),
        None => {
            p.inference.insert(model.to_string(), vec![took]);
        }
    });
}

pub fn record_raised(id: &str) {
    with(|p| {
        p.raised.insert(id.to_string(), Instant::now());
    });
}

pub fn record_recorded(id: &str) {
    with(|p| {
        p.recorded.insert(id.to_string(), Instant::now());
    });
}

pub fn record_acked(id: &str) {
    with(|p| {
        p.acked.insert(id.to_string(), Instant::now());
    });
}
