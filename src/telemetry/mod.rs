//! Telemetry: typed internal events. Each [`Event`] is emitted in one place, which writes its log
//! line, updates its metrics, and (for health changes) hands a [`HealthEvent`] to the worker for
//! `vigil.health.<site>.<camera>` — so a log line, its metric and its event can never disagree.
//! Metrics are Prometheus metrics ([`metrics`]), served with `/health` by [`http`].

pub mod alloc;
pub mod http;
pub mod metrics;
pub mod probe;
pub mod stats;
pub mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use stats::{CameraStats, Condition};

/// Per-camera counters of this process, by camera id (for `/health`).
pub fn cameras() -> &'static Mutex<BTreeMap<String, Arc<CameraStats>>> {
    static C: OnceLock<Mutex<BTreeMap<String, Arc<CameraStats>>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// Registers a camera's counters (exported) and returns them.
pub fn register_camera(camera: &str) -> Arc<CameraStats> {
    let s = Arc::new(CameraStats::new(camera));
    cameras().lock().unwrap_or_else(|p| p.into_inner()).insert(camera.into(), s.clone());
    s
}

/// Drops a camera's counters from the registry (it stopped on this worker: a cluster lease went
/// elsewhere), so `/health` and status reports no longer show it here.
pub fn unregister_camera(camera: &str) {
    cameras().lock().unwrap_or_else(|p| p.into_inner()).remove(camera);
}

/// A health fact for `vigil.health.<site>.<camera>`: a condition started or ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct HealthEvent {
    /// The camera, or `worker` for conditions of the worker itself (`spool_full`).
    pub camera: String,
    pub condition: Condition,
    /// true: the condition started (camera down, lens covered); false: it ended.
    pub active: bool,
    pub detail: String,
    pub time_utc: String,
    /// For an ended condition: how long it lasted, seconds.
    pub duration_s: Option<f64>,
}

type HealthSink = tokio::sync::mpsc::UnboundedSender<HealthEvent>;

fn health_tx() -> &'static Mutex<Option<HealthSink>> {
    static T: OnceLock<Mutex<Option<HealthSink>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// Routes health events to `tx` (the worker publishes them).
pub fn set_health_sink(tx: Option<HealthSink>) {
    *health_tx().lock().unwrap_or_else(|p| p.into_inner()) = tx;
}

/// Everything worth a log line and a metric.
pub enum Event<'a> {
    Inference {
        model: &'a str,
        took: Duration,
    },
    ViolationRaised {
        camera: &'a str,
        rule: &'a str,
        evidence_id: &'a str,
        stream_time: Duration,
        value: f64,
    },
    /// A rule configuration change from the pipeline file or NATS KV: applied or rejected.
    RuleChange {
        camera: &'a str,
        rule: &'a str,
        source: &'a str,
        by: &'a str,
        applied: bool,
        revision: &'a str,
        detail: &'a str,
    },
    EvidenceSpooled {
        camera: &'a str,
        evidence_id: &'a str,
        seq: u64,
        status: &'a str,
        admissible: bool,
    },
    EvidenceRefused {
        camera: &'a str,
        evidence_id: &'a str,
        why: &'a str,
    },
    EvidenceFailed {
        camera: &'a str,
        evidence_id: &'a str,
        error: &'a str,
    },
    EventPublished {
        id: &'a str,
        subject: &'a str,
        stream_seq: u64,
    },
    /// The broker refused a message for good (too large, invalid subject): moved aside.
    EventDeadLettered {
        id: &'a str,
        subject: &'a str,
        /// Short and fixed (the metric label).
        reason: &'a str,
        detail: &'a str,
    },
    Health {
        camera: &'a str,
        condition: Condition,
        active: bool,
        detail: &'a str,
        lasted: Option<Duration>,
    },
}

impl Event<'_> {
    pub fn emit(self) {
        let m = metrics::get();
        match self {
            Event::Inference { model, took } => {
                probe::record_inference(model, took);
                m.observe_inference(model, took.as_secs_f64());
            }
            Event::ViolationRaised { camera, rule, evidence_id, stream_time, value } => {
                m.events_produced.inc();
                probe::record_raised(evidence_id);
                tracing::info!(
                    camera,
                    rule,
                    evidence_id,
                    stream_time_s = stream_time.as_secs_f64(),
                    value,
                    "violation"
                );
            }
            Event::RuleChange { camera, rule, source, by, applied, revision, detail } => {
                if applied {
                    m.rule_changes.inc();
                    tracing::info!(camera, rule, source, by, revision, change = detail, "rule configuration applied");
                } else {
                    m.rule_changes_rejected.inc();
                    tracing::warn!(
                        camera,
                        rule,
                        source,
                        by,
                        reason = detail,
                        "rule configuration change REJECTED; the running one stays"
                    );
                }
            }
            Event::EvidenceSpooled { camera, evidence_id, seq, status, admissible } => {
                tracing::info!(
                    camera,
                    evidence_id,
                    chain_seq = seq,
                    status,
                    admissible,
                    "evidence spooled (complete, signed); uploading"
                );
            }
            Event::EvidenceRefused { camera, evidence_id, why } => {
                m.evidence_refused.inc();
                tracing::error!(
                    camera,
                    evidence_id,
                    why,
                    "evidence NOT cut: spool full (see worker.spool_max_bytes); health alarm raised"
                );
                if m.spool_full.get() == 0 {
                    Event::Health {
                        camera: "worker",
                        condition: Condition::SpoolFull,
                        active: true,
                        detail: why,
                        lasted: None,
                    }
                    .emit();
                }
            }
            Event::EvidenceFailed { camera, evidence_id, error } => {
                m.evidence_failed.inc();
                tracing::error!(camera, evidence_id, error, "evidence item FAILED; nothing published for it");
            }
            Event::EventPublished { id, subject, stream_seq } => {
                m.events_published.inc();
                tracing::info!(evidence_id = id, subject, stream_seq, "JetStream acknowledged event");
            }
            Event::EventDeadLettered { id, subject, reason, detail } => {
                m.outbox_dead.get_or_create(&metrics::SubjectLabel { reason: reason.into() }).inc();
                tracing::error!(
                    id,
                    subject,
                    reason,
                    detail,
                    "ALARM: the broker refused this message for good; moved aside to outbox.dead.jsonl (the messages behind it flow on)"
                );
            }
            Event::Health { camera, condition, active, detail, lasted } => {
                if condition == Condition::SpoolFull {
                    m.spool_full.set(active as i64);
                }
                // `stream` and `overload` have two observers (the camera's own loop and the camera
                // watch): each start and end is told once. Other conditions are facts told each
                // time (each item quarantined, each clock step).
                if condition != Condition::Lease
                    && let Some(s) = cameras().lock().unwrap_or_else(|p| p.into_inner()).get(camera)
                    && !s.set_condition(condition, active)
                    && matches!(condition, Condition::Stream | Condition::Overload)
                {
                    return;
                }
                if active && condition != Condition::Lease {
                    tracing::warn!(camera, condition = condition.name(), detail, "health: {condition} started");
                } else if active {
                    tracing::info!(camera, condition = condition.name(), detail, "health: {condition} started");
                } else {
                    tracing::info!(
                        camera,
                        condition = condition.name(),
                        detail,
                        lasted_s = lasted.map(|d| d.as_secs_f64()),
                        "health: {condition} ended"
                    );
                }
                let ev = HealthEvent {
                    camera: camera.into(),
                    condition,
                    active,
                    detail: detail.into(),
                    time_utc: crate::util::rfc3339(chrono::Utc::now()),
                    duration_s: lasted.map(|d| d.as_secs_f64()),
                };
                if let Some(tx) = health_tx().lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    let _ = tx.send(ev);
                }
            }
        }
    }
}

/// `/health`: JSON state; `ok` is false while any camera has an active condition or the spool is
/// full.
pub fn health_json() -> serde_json::Value {
    let cams = cameras().lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut ok = true;
    let mut c = serde_json::Map::new();
    for (id, s) in &cams {
        let active: Vec<&str> = s.active().into_iter().map(Condition::name).collect();
        ok &= active.is_empty();
        c.insert(id.clone(), serde_json::json!({ "conditions": active }));
    }
    let m = metrics::get();
    let spool_full = m.spool_full.get() == 1;
    serde_json::json!({
        "ok": ok && !spool_full,
        "cameras": c,
        "spool_full": spool_full,
        "spool_bytes": m.spool_bytes.get(),
        "outbox_depth": m.outbox_depth.get(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_moves_its_metric_and_the_health_state_together() {
        let s = register_camera("telemetry-test-cam");
        s.analysed.inc();
        let before = metrics::get().rule_changes_rejected.get();
        Event::RuleChange { camera: "c", rule: "r", source: "t", by: "b", applied: false, revision: "", detail: "d" }
            .emit();
        assert_eq!(metrics::get().rule_changes_rejected.get(), before + 1);
        Event::Health {
            camera: "telemetry-test-cam",
            condition: Condition::Covered,
            active: true,
            detail: "x",
            lasted: None,
        }
        .emit();
        assert_eq!(s.active(), vec![Condition::Covered]);
        let h = health_json();
        assert_eq!(h["ok"], false);
        assert_eq!(h["cameras"]["telemetry-test-cam"]["conditions"][0], "covered");
        let text = metrics::get().render();
        assert!(text.contains("vigil_frames_analysed_total{camera=\"telemetry-test-cam\"} 1"), "{text}");
        assert!(
            text.contains("vigil_camera_condition{camera=\"telemetry-test-cam\",condition=\"covered\"} 1"),
            "{text}"
        );
        Event::Health {
            camera: "telemetry-test-cam",
            condition: Condition::Covered,
            active: false,
            detail: "x",
            lasted: Some(Duration::from_secs(1)),
        }
        .emit();
        assert!(s.active().is_empty());
        assert_eq!(Condition::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().len(), 11);
    }
}
