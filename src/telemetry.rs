//! Telemetry: typed internal events. Each [`Event`] is emitted in one place, which writes its log
//! line, updates its metrics, and (for health changes) publishes a health event on
//! `vigil.health.<site>.<camera>` — so a log line, its metric and its event can never disagree.
//! Metrics are served in Prometheus text format on `/metrics`, state as JSON on `/health`
//! (`[worker] http = "127.0.0.1:9464"`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::ingest::CameraStats;

#[derive(Default)]
pub struct Counter(AtomicU64);
impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Gauge(AtomicI64);
impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Inference latency histogram (seconds), fixed buckets.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

const LATENCY_BOUNDS: &[f64] = &[0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_us: AtomicU64::new(0) }
    }
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self.bounds.iter().position(|&b| s <= b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let mut acc = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            acc += self.counts[i].load(Ordering::Relaxed);
            out.push_str(&format!("{name}_bucket{{{labels}le=\"{b}\"}} {acc}\n"));
        }
        acc += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{{labels}le=\"+Inf\"}} {acc}\n"));
        out.push_str(&format!(
            "{name}_sum{{{}}} {}\n",
            labels.trim_end_matches(','),
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        ));
        out.push_str(&format!("{name}_count{{{}}} {acc}\n", labels.trim_end_matches(',')));
    }
}

pub static EVENTS_PRODUCED: Counter = Counter(AtomicU64::new(0));
pub static EVENTS_PUBLISHED: Counter = Counter(AtomicU64::new(0));
pub static EVIDENCE_REFUSED: Counter = Counter(AtomicU64::new(0));
pub static RULE_CHANGES: Counter = Counter(AtomicU64::new(0));
pub static RULE_CHANGES_REJECTED: Counter = Counter(AtomicU64::new(0));
pub static EVIDENCE_FAILED: Counter = Counter(AtomicU64::new(0));
pub static SPOOL_BYTES: Gauge = Gauge::new();
/// 1 while the spool-full alarm is raised.
pub static SPOOL_FULL: Gauge = Gauge::new();
pub static OUTBOX_DEPTH: Gauge = Gauge::new();

fn inference() -> &'static Mutex<BTreeMap<String, Arc<Histogram>>> {
    static H: OnceLock<Mutex<BTreeMap<String, Arc<Histogram>>>> = OnceLock::new();
    H.get_or_init(Default::default)
}

/// Per-camera counters, registered by the control loop.
pub fn cameras() -> &'static Mutex<BTreeMap<String, Arc<CameraStats>>> {
    static C: OnceLock<Mutex<BTreeMap<String, Arc<CameraStats>>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// A health event for `vigil.health.<site>.<camera>`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthEvent {
    pub camera: String,
    /// "stream", "frozen", "covered", "saturated", "defocus", "moved", "spool_full", ...
    pub condition: String,
    /// true: the condition started (camera down, lens covered); false: it ended.
    pub active: bool,
    pub detail: String,
    pub time_utc: String,
    /// For an ended condition: how long it lasted.
    pub duration_s: Option<f64>,
}

fn health_tx() -> &'static Mutex<Option<tokio::sync::mpsc::UnboundedSender<HealthEvent>>> {
    static T: OnceLock<Mutex<Option<tokio::sync::mpsc::UnboundedSender<HealthEvent>>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// Routes health events to `tx` (the control loop publishes them).
pub fn set_health_sink(tx: Option<tokio::sync::mpsc::UnboundedSender<HealthEvent>>) {
    *health_tx().lock().expect("health sink") = tx;
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
        evidence_id: &'a str,
        subject: &'a str,
        stream_seq: u64,
    },
    Health {
        camera: &'a str,
        condition: &'a str,
        active: bool,
        detail: &'a str,
        lasted: Option<Duration>,
    },
}

impl Event<'_> {
    pub fn emit(self) {
        match self {
            Event::Inference { model, took } => {
                probe(|p| match p.inference.get_mut(model) {
                    Some(v) => v.push(took),
                    None => {
                        p.inference.insert(model.to_string(), vec![took]);
                    }
                });
                let h = {
                    let mut m = inference().lock().expect("hist");
                    match m.get(model) {
                        Some(h) => h.clone(),
                        None => {
                            m.entry(model.into()).or_insert_with(|| Arc::new(Histogram::new(LATENCY_BOUNDS))).clone()
                        }
                    }
                };
                h.observe(took);
            }
            Event::ViolationRaised { camera, rule, evidence_id, stream_time, value } => {
                EVENTS_PRODUCED.inc();
                probe(|p| {
                    p.raised.insert(evidence_id.to_string(), std::time::Instant::now());
                });
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
                    RULE_CHANGES.inc();
                    tracing::info!(camera, rule, source, by, revision, change = detail, "rule configuration applied");
                } else {
                    RULE_CHANGES_REJECTED.inc();
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
                EVIDENCE_REFUSED.inc();
                tracing::error!(
                    camera,
                    evidence_id,
                    why,
                    "evidence NOT cut: spool full (see worker.spool_max_bytes); health alarm raised"
                );
                if SPOOL_FULL.get() == 0 {
                    Event::Health {
                        camera: "worker",
                        condition: "spool_full",
                        active: true,
                        detail: why,
                        lasted: None,
                    }
                    .emit();
                }
            }
            Event::EvidenceFailed { camera, evidence_id, error } => {
                EVIDENCE_FAILED.inc();
                tracing::error!(camera, evidence_id, error, "evidence item FAILED; nothing published for it");
            }
            Event::EventPublished { evidence_id, subject, stream_seq } => {
                EVENTS_PUBLISHED.inc();
                tracing::info!(evidence_id, subject, stream_seq, "JetStream acknowledged event");
            }
            Event::Health { camera, condition, active, detail, lasted } => {
                if condition == "spool_full" {
                    SPOOL_FULL.set(active as i64);
                }
                if let Some(s) = cameras().lock().expect("cams").get(camera) {
                    s.set_condition(condition, active);
                }
                if active {
                    tracing::warn!(camera, condition, detail, "health: {condition} started");
                } else {
                    tracing::info!(
                        camera,
                        condition,
                        detail,
                        lasted_s = lasted.map(|d| d.as_secs_f64()),
                        "health: {condition} ended"
                    );
                }
                let ev = HealthEvent {
                    camera: camera.into(),
                    condition: condition.into(),
                    active,
                    detail: detail.into(),
                    time_utc: crate::evidence::rfc3339(chrono::Utc::now()),
                    duration_s: lasted.map(|d| d.as_secs_f64()),
                };
                if let Some(tx) = health_tx().lock().expect("health sink").as_ref() {
                    let _ = tx.send(ev);
                }
            }
        }
    }
}

/// Prometheus text exposition of every metric.
pub fn render() -> String {
    let mut o = String::new();
    let cams = cameras().lock().expect("cams").clone();
    let per = |o: &mut String, name: &str, help: &str, kind: &str, f: &dyn Fn(&CameraStats) -> u64| {
        o.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (id, s) in &cams {
            o.push_str(&format!("{name}{{camera=\"{id}\"}} {}\n", f(s)));
        }
    };
    per(&mut o, "vigil_frames_decoded_total", "Encoded frames received per camera.", "counter", &|s| {
        s.encoded_frames.load(Ordering::Relaxed)
    });
    per(&mut o, "vigil_frames_analysed_total", "Frames analysed per camera.", "counter", &|s| {
        s.analysed.load(Ordering::Relaxed)
    });
    per(&mut o, "vigil_inferences_total", "Rule-region inferences run per camera.", "counter", &|s| {
        s.inferred.load(Ordering::Relaxed)
    });
    per(&mut o, "vigil_inferences_gated_total", "Inferences skipped by motion gating.", "counter", &|s| {
        s.gated.load(Ordering::Relaxed)
    });
    per(
        &mut o,
        "vigil_frames_dropped_total",
        "Analysis frames dropped because analysis was behind.",
        "counter",
        &|s| s.analysis_dropped.load(Ordering::Relaxed),
    );
    per(&mut o, "vigil_reconnects_total", "Stream reconnects per camera.", "counter", &|s| {
        s.reconnects.load(Ordering::Relaxed)
    });
    o.push_str("# HELP vigil_camera_condition Health conditions active per camera (1 = active).\n# TYPE vigil_camera_condition gauge\n");
    for (id, s) in &cams {
        for (c, on) in s.conditions() {
            o.push_str(&format!("vigil_camera_condition{{camera=\"{id}\",condition=\"{c}\"}} {}\n", on as u8));
        }
    }
    o.push_str("# HELP vigil_inference_seconds Model inference latency.\n# TYPE vigil_inference_seconds histogram\n");
    for (m, h) in inference().lock().expect("hist").iter() {
        h.render("vigil_inference_seconds", &format!("model=\"{m}\","), &mut o);
    }
    for (name, help, kind, v) in [
        (
            "vigil_events_produced_total",
            "Violations that started an evidence item.",
            "counter",
            EVENTS_PRODUCED.get() as i64,
        ),
        (
            "vigil_events_published_total",
            "Evidence events acknowledged by JetStream.",
            "counter",
            EVENTS_PUBLISHED.get() as i64,
        ),
        (
            "vigil_evidence_refused_total",
            "Violations not cut because the spool was full.",
            "counter",
            EVIDENCE_REFUSED.get() as i64,
        ),
        (
            "vigil_evidence_failed_total",
            "Evidence items that could not be produced.",
            "counter",
            EVIDENCE_FAILED.get() as i64,
        ),
        (
            "vigil_rule_changes_total",
            "Rule configuration changes applied (pipeline file or NATS KV).",
            "counter",
            RULE_CHANGES.get() as i64,
        ),
        (
            "vigil_rule_changes_rejected_total",
            "Rule configuration changes rejected (invalid); the running configuration stayed.",
            "counter",
            RULE_CHANGES_REJECTED.get() as i64,
        ),
        ("vigil_outbox_depth", "Events recorded but not yet acknowledged by JetStream.", "gauge", OUTBOX_DEPTH.get()),
        ("vigil_spool_bytes", "Bytes of evidence waiting in the spool for upload.", "gauge", SPOOL_BYTES.get()),
        ("vigil_spool_full", "1 while the spool is full and new clips are not cut.", "gauge", SPOOL_FULL.get()),
    ] {
        o.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
    }
    o
}

/// `/health`: JSON state; `ok` is false while any camera has an active condition.
pub fn health_json() -> serde_json::Value {
    let cams = cameras().lock().expect("cams").clone();
    let mut ok = true;
    let mut c = serde_json::Map::new();
    for (id, s) in &cams {
        let active: Vec<&str> = s.conditions().into_iter().filter(|(_, on)| *on).map(|(c, _)| c).collect();
        ok &= active.is_empty();
        c.insert(id.clone(), serde_json::json!({ "conditions": active }));
    }
    let spool_full = SPOOL_FULL.get() == 1;
    serde_json::json!({
        "ok": ok && !spool_full,
        "cameras": c,
        "spool_full": spool_full,
        "spool_bytes": SPOOL_BYTES.get(),
        "outbox_depth": OUTBOX_DEPTH.get(),
    })
}

/// Serves `/metrics` and `/health` on `addr` until the process ends (plain HTTP/1.1).
pub async fn serve(addr: std::net::SocketAddr) -> std::io::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind(addr).await?;
    let bound = l.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { continue };
            tokio::spawn(async move {
                // read the request head (it may arrive in pieces), at most 8 KiB, 5 s
                let mut buf = Vec::with_capacity(1024);
                let head = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    true
                })
                .await;
                if !matches!(head, Ok(true)) {
                    return;
                }
                let req = String::from_utf8_lossy(&buf);
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let (code, ctype, body) = match path {
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4", render()),
                    "/health" => {
                        let h = health_json();
                        let code = if h["ok"] == true { "200 OK" } else { "503 Service Unavailable" };
                        (code, "application/json", h.to_string())
                    }
                    _ => ("404 Not Found", "text/plain", "try /metrics or /health\n".into()),
                };
                let resp = format!(
                    "HTTP/1.1 {code}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}

/// Benchmark instrumentation (`vigil bench`; off otherwise): raw inference latencies, and when
/// each violation was raised and its event recorded.
#[derive(Default)]
pub struct BenchProbe {
    /// Inference latencies per model (the model's id is allocated once, not per inference).
    pub inference: std::collections::BTreeMap<String, Vec<Duration>>,
    pub raised: std::collections::HashMap<String, std::time::Instant>,
    pub recorded: std::collections::HashMap<String, std::time::Instant>,
}

static PROBE: Mutex<Option<BenchProbe>> = Mutex::new(None);

pub fn probe_enable() {
    *PROBE.lock().expect("probe") = Some(BenchProbe::default());
}

pub fn probe_take() -> Option<BenchProbe> {
    PROBE.lock().expect("probe").take()
}

pub fn probe(f: impl FnOnce(&mut BenchProbe)) {
    if let Some(p) = PROBE.lock().expect("probe").as_mut() {
        f(p);
    }
}
