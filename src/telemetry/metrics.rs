//! The worker's Prometheus metrics (`prometheus-client`), registered once; served on `/metrics`
//! in the OpenMetrics text format.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CameraLabel {
    pub camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabel {
    pub camera: String,
    pub condition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubjectLabel {
    pub reason: String,
}

/// Inference latency buckets, seconds.
const LATENCY_BOUNDS: [f64; 11] = [0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BOUNDS)
}

/// Every metric of the worker.
pub struct Metrics {
    registry: Registry,
    pub frames_decoded: Family<CameraLabel, Counter>,
    pub frames_analysed: Family<CameraLabel, Counter>,
    pub frames_dropped: Family<CameraLabel, Counter>,
    pub inferences: Family<CameraLabel, Counter>,
    pub inferences_gated: Family<CameraLabel, Counter>,
    pub inferences_partial: Family<CameraLabel, Counter>,
    pub reconnects: Family<CameraLabel, Counter>,
    pub violations: Family<CameraLabel, Counter>,
    pub camera_condition: Family<ConditionLabel, Gauge>,
    inference: Family<ModelLabel, Histogram, fn() -> Histogram>,
    /// Histogram handles by model id, so an observation looks up by `&str` (no allocation).
    inference_by_model: Mutex<BTreeMap<String, Histogram>>,
    pub events_produced: Counter,
    pub events_published: Counter,
    pub evidence_refused: Counter,
    pub evidence_failed: Counter,
    pub rule_changes: Counter,
    pub rule_changes_rejected: Counter,
    pub outbox_dead: Family<SubjectLabel, Counter>,
    pub outbox_depth: Gauge,
    pub spool_bytes: Gauge,
    pub spool_full: Gauge,
    pub review_logins_refused: Counter,
    pub spool_quarantined: Counter,
    /// Inference runs of every model and their total time, µs (the status report's mean).
    pub inference_runs: std::sync::atomic::AtomicU64,
    pub inference_us: std::sync::atomic::AtomicU64,
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            frames_decoded: Family::default(),
            frames_analysed: Family::default(),
            frames_dropped: Family::default(),
            inferences: Family::default(),
            inferences_gated: Family::default(),
            inferences_partial: Family::default(),
            reconnects: Family::default(),
            violations: Family::default(),
            camera_condition: Family::default(),
            inference: Family::new_with_constructor(latency_histogram),
            inference_by_model: Mutex::new(BTreeMap::new()),
            events_produced: Counter::default(),
            events_published: Counter::default(),
            evidence_refused: Counter::default(),
            evidence_failed: Counter::default(),
            rule_changes: Counter::default(),
            rule_changes_rejected: Counter::default(),
            outbox_dead: Family::default(),
            outbox_depth: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_full: Gauge::default(),
            review_logins_refused: Counter::default(),
            spool_quarantined: Counter::default(),
            inference_runs: Default::default(),
            inference_us: Default::default(),
            registry: Registry::default(),
        };
        r.register("vigil_frames_decoded", "Encoded frames received per camera", m.frames_decoded.clone());
        r.register("vigil_frames_analysed", "Frames analysed per camera", m.frames_analysed.clone());
        r.register(
            "vigil_frames_dropped",
            "Analysis frames dropped because analysis was behind",
            m.frames_dropped.clone(),
        );
        r.register("vigil_inferences", "Rule-region inferences run per camera", m.inferences.clone());
        r.register("vigil_inferences_gated", "Inferences skipped by motion gating", m.inferences_gated.clone());
        r.register(
            "vigil_inferences_partial",
            "Inferences the motion gate handed on as a part of the rule's region (motion regions)",
            m.inferences_partial.clone(),
        );
        r.register("vigil_reconnects", "Stream reconnects per camera", m.reconnects.clone());
        r.register("vigil_violations", "Violations raised per camera", m.violations.clone());
        r.register(
            "vigil_camera_condition",
            "Health conditions active per camera (1 = active)",
            m.camera_condition.clone(),
        );
        r.register("vigil_inference_seconds", "Model inference latency", m.inference.clone());
        r.register("vigil_events_produced", "Violations that started an evidence item", m.events_produced.clone());
        r.register("vigil_events_published", "Events acknowledged by JetStream", m.events_published.clone());
        r.register(
            "vigil_evidence_refused",
            "Violations not cut because the spool was full",
            m.evidence_refused.clone(),
        );
        r.register("vigil_evidence_failed", "Evidence items that could not be produced", m.evidence_failed.clone());
        r.register(
            "vigil_rule_changes",
            "Rule configuration changes applied (pipeline file or NATS KV)",
            m.rule_changes.clone(),
        );
        r.register(
            "vigil_rule_changes_rejected",
            "Rule configuration changes rejected (invalid); the running configuration stayed",
            m.rule_changes_rejected.clone(),
        );
        r.register(
            "vigil_outbox_dead_letters",
            "Messages the broker refused for good, moved aside from the outbox",
            m.outbox_dead.clone(),
        );
        r.register(
            "vigil_outbox_depth",
            "Events recorded but not yet acknowledged by JetStream",
            m.outbox_depth.clone(),
        );
        r.register("vigil_spool_bytes", "Bytes of evidence waiting in the spool for upload", m.spool_bytes.clone());
        r.register("vigil_spool_full", "1 while the spool is full and new clips are not cut", m.spool_full.clone());
        r.register(
            "vigil_review_logins_refused",
            "Review logins refused because the account or address was locked out",
            m.review_logins_refused.clone(),
        );
        r.register(
            "vigil_spool_quarantined",
            "Spooled evidence items set aside because they cannot be uploaded as they are (kept in spool-quarantine/)",
            m.spool_quarantined.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Records one inference of `model`.
    pub fn observe_inference(&self, model: &str, seconds: f64) {
        self.inference_runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inference_us.fetch_add((seconds * 1e6) as u64, std::sync::atomic::Ordering::Relaxed);
        let mut by = self.inference_by_model.lock().unwrap_or_else(|p| p.into_inner());
        match by.get(model) {
            Some(h) => h.observe(seconds),
            None => {
                let h = self.inference.get_or_create(&ModelLabel { model: model.into() }).clone();
                h.observe(seconds);
                by.insert(model.into(), h);
            }
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(8192);
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}
