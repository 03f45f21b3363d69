//! Benchmark instrumentation (`vigil bench`; off otherwise): raw inference latencies, and when
//! each violation was raised and its event recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
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

pub fn enable() {
    *PROBE.lock().unwrap_or_else(|p| p.into_inner()) = Some(BenchProbe::default());
}

pub fn take() -> Option<BenchProbe> {
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
