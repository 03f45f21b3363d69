//! The ops console's view of the running workers: the latest status report of each worker of the
//! site (`vigil-live.status.<site>.*`, core NATS), folded into one row per camera of the pipeline.
//! A camera no worker reports is `unknown`; a report older than three of its worker's intervals is
//! stale, so a dead worker's cameras turn to `unknown` within seconds, not `up` forever.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::app::i18n::{Lang, Msg};
use crate::config::Pipeline;
use crate::telemetry::Condition;
use crate::telemetry::status::{CameraState, StatusReport};

/// A status report larger than this is ignored (a worker with a thousand cameras stays far below).
const MAX_REPORT: usize = 1 << 20;

#[derive(Default)]
pub struct Live {
    reports: RwLock<BTreeMap<String, (Instant, StatusReport)>>,
    /// Whether a NATS connection feeds this view (without one, every camera is `unknown`).
    pub connected: std::sync::atomic::AtomicBool,
    /// The connection, once made (snapshot requests go through it).
    client: std::sync::OnceLock<async_nats::Client>,
    /// The camera grid's masked snapshots, by camera: when asked and what came (a picture, or why
    /// none), so many open overviews ask each worker at most once per [`GRID_MAX_AGE`].
    grid: std::sync::Mutex<BTreeMap<String, GridEntry>>,
}

/// When a grid picture was asked for, and what came: the picture, or why none.
type GridEntry = (Instant, Result<Arc<Snapshot>, String>);

/// How old a camera grid snapshot may be before it is asked for again.
pub const GRID_MAX_AGE: Duration = Duration::from_secs(5);

/// A snapshot a worker sent: the JPEG and what it says of itself.
pub struct Snapshot {
    pub jpeg: bytes::Bytes,
    pub unmasked: bool,
    /// SHA-256 of the mask the worker runs with (`none`).
    pub mask_sha256: String,
}

/// A camera's state on the overview: its worker's [`CameraState`], or `unknown` when no worker
/// reports it (or the report is stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpsState {
    Starting,
    Up,
    /// Video flows but analysis cannot keep up (`overload`).
    Overloaded,
    /// Video flows but the picture is wrong (covered, frozen, moved, …).
    Tampered,
    /// No video (`stream`): since when is in the row.
    Down,
    Unknown,
}

impl OpsState {
    /// The name in JSON, CSS classes and `data-state`.
    pub fn name(self) -> &'static str {
        match self {
            OpsState::Starting => "starting",
            OpsState::Up => "up",
            OpsState::Overloaded => "overloaded",
            OpsState::Tampered => "tampered",
            OpsState::Down => "down",
            OpsState::Unknown => "unknown",
        }
    }

    pub fn text(self, lang: Lang) -> &'static str {
        lang.t(match self {
            OpsState::Starting => Msg::st_starting,
            OpsState::Up => Msg::st_up,
            OpsState::Overloaded => Msg::st_overloaded,
            OpsState::Tampered => Msg::st_tampered,
            OpsState::Down => Msg::st_down,
            OpsState::Unknown => Msg::st_unknown,
        })
    }

    /// A worker's camera state and its active conditions, as the overview shows them.
    fn of(state: CameraState, conditions: &[Condition]) -> OpsState {
        match state {
            CameraState::Starting => OpsState::Starting,
            CameraState::Down => OpsState::Down,
            CameraState::Up if conditions.contains(&Condition::Overload) => OpsState::Overloaded,
            CameraState::Up if !conditions.is_empty() => OpsState::Tampered,
            CameraState::Up => OpsState::Up,
        }
    }
}

/// A condition's name in `lang`.
pub fn condition_text(lang: Lang, c: Condition) -> &'static str {
    // (the worker lease is the only condition of no camera: its worker)
    lang.t(crate::app::i18n::condition_msg(c.name()).unwrap_or(Msg::worker))
}

/// One camera on the overview.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpsCamera {
    pub camera: String,
    pub location: String,
    /// `up`, `overloaded`, `tampered`, `down`, `starting`, or `unknown` (no recent report from any
    /// worker).
    pub state: OpsState,
    /// The state in the page's language.
    pub state_text: String,
    /// Conditions active now other than `stream` (overload, frozen, covered, saturated, defocus,
    /// moved).
    pub conditions: Vec<String>,
    /// The same in the page's language.
    pub conditions_text: String,
    pub analysed_fps: Option<f64>,
    pub dropped_fps: Option<f64>,
    pub inference_ms: Option<f64>,
    pub reconnects: Option<u64>,
    pub last_violation_utc: Option<String>,
    /// The same in site time, as the pages show times.
    pub last_violation: Option<String>,
    /// While `down`: since when, in site time.
    pub down_since: Option<String>,
    /// The worker running the camera (the newest report naming it).
    pub worker: Option<String>,
    /// Seconds since that report arrived.
    pub report_age_s: Option<f64>,
    /// `enforcement` or `advisory`, and why (camera registry, today, site time).
    pub status: crate::config::StatusKind,
    pub status_reasons: Vec<String>,
    /// Why the state is what it is, when it is not `up`, in the page's language.
    pub detail: String,
}

impl Live {
    /// Follows the site's status reports on `nats` (reconnecting as the client does).
    pub fn follow(nats: crate::util::nats::Endpoint, site: String) -> Arc<Live> {
        let live = Arc::new(Live::default());
        let l = live.clone();
        tokio::spawn(async move {
            let client = match nats.connect().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "ops console: no live camera status (cannot connect to NATS)"
                    );
                    return;
                }
            };
            let mut sub = match client.subscribe(crate::util::subject::status_filter(&site)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "ops console: cannot subscribe to status reports");
                    return;
                }
            };
            let _ = l.client.set(client.clone());
            l.connected.store(true, std::sync::atomic::Ordering::Relaxed);
            while let Some(m) = sub.next().await {
                if m.payload.len() > MAX_REPORT {
                    tracing::warn!(subject = %m.subject, bytes = m.payload.len(), "status report too large; ignored");
                    continue;
                }
                match serde_json::from_slice::<StatusReport>(&m.payload) {
                    // the worker id is a label on the page: bounded, printable
                    Ok(r) if r.site == site && crate::util::check_label("worker", &r.worker, 1, 64).is_ok() => l.put(r),
                    Ok(r) => {
                        tracing::debug!(site = %r.site, worker = %r.worker, "status report of another site; ignored")
                    }
                    Err(e) => tracing::warn!(subject = %m.subject, error = %e, "status report unreadable; ignored"),
                }
            }
        });
        live
    }

    /// Asks the worker running `camera` for a recent frame (masked as stored evidence is unless
    /// `ask.unmasked`). The error says why there is none.
    pub async fn snapshot(
        &self,
        site: &str,
        camera: &str,
        ask: &crate::control::live::SnapshotAsk,
    ) -> Result<Snapshot, String> {
        let client = self.client.get().ok_or("no NATS connection: no live picture")?;
        let body = serde_json::to_vec(ask).map_err(|e| e.to_string())?;
        let req = client.request(crate::util::subject::snapshot(site, camera), body.into());
        let m = match tokio::time::timeout(crate::control::live::SNAPSHOT_WAIT + Duration::from_secs(2), req).await {
            Err(_) => return Err(format!("no answer from the worker of camera {camera} in time")),
            Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                return Err(format!("no worker runs camera {camera} now"));
            }
            Ok(Err(e)) => return Err(format!("snapshot request: {e}")),
            Ok(Ok(m)) => m,
        };
        let header = |k: &str| m.headers.as_ref().and_then(|h| h.get(k)).map(|v| v.as_str().to_string());
        if let Some(e) = header("Vigil-Error") {
            return Err(e);
        }
        if m.payload.len() > 16 << 20 || !m.payload.starts_with(&[0xff, 0xd8]) {
            return Err("the worker's answer is not a JPEG".into());
        }
        Ok(Snapshot {
            jpeg: m.payload.clone(),
            unmasked: header("Vigil-Snapshot").as_deref() == Some("unmasked"),
            mask_sha256: header("Vigil-Mask-Sha256").unwrap_or_default(),
        })
    }

    /// A recent masked snapshot of `camera` for the camera grid: the one asked for less than
    /// [`GRID_MAX_AGE`] ago, else a new one (never the unmasked view; not audited, as a masked
    /// picture shows what stored evidence shows).
    pub async fn grid_snapshot(&self, site: &str, camera: &str) -> Result<Arc<Snapshot>, String> {
        let fresh = |g: &BTreeMap<String, GridEntry>| {
            g.get(camera).filter(|(at, _)| at.elapsed() < GRID_MAX_AGE).map(|(_, r)| r.clone())
        };
        if let Some(r) = fresh(&self.grid.lock().unwrap_or_else(|p| p.into_inner())) {
            return r;
        }
        let ask = crate::control::live::SnapshotAsk {
            unmasked: false,
            by: "ops console".into(),
            reason: "camera grid".into(),
        };
        let r = self.snapshot(site, camera, &ask).await.map(Arc::new);
        self.grid.lock().unwrap_or_else(|p| p.into_inner()).insert(camera.to_string(), (Instant::now(), r.clone()));
        r
    }

    pub fn put(&self, r: StatusReport) {
        self.reports.write().unwrap_or_else(|p| p.into_inner()).insert(r.worker.clone(), (Instant::now(), r));
    }

    /// One row per camera of `p`, in the pipeline's order, its words in `lang`.
    pub fn cameras(&self, p: &Pipeline, lang: Lang) -> Vec<OpsCamera> {
        let shown = |utc: &Option<String>| {
            utc.as_deref()
                .and_then(|t| crate::util::time::parse_rfc3339(t).ok())
                .map(|t| crate::util::time::shown(t, p.utc_offset_s))
        };
        let reports = self.reports.read().unwrap_or_else(|p| p.into_inner());
        let today = chrono::Utc::now().with_timezone(&crate::util::time::fixed_offset(p.utc_offset_s)).date_naive();
        p.cameras
            .iter()
            .map(|cam| {
                let c = cam.registry.compliance(today);
                // the newest report that names this camera
                let seen = reports
                    .values()
                    .filter_map(|(at, r)| r.cameras.iter().find(|x| x.camera == cam.id).map(|x| (at, r, x)))
                    .max_by_key(|(at, ..)| **at);
                let mut row = OpsCamera {
                    camera: cam.id.clone(),
                    location: cam.location.clone(),
                    state: OpsState::Unknown,
                    state_text: OpsState::Unknown.text(lang).into(),
                    conditions: Vec::new(),
                    conditions_text: String::new(),
                    analysed_fps: None,
                    dropped_fps: None,
                    inference_ms: None,
                    reconnects: None,
                    last_violation_utc: None,
                    last_violation: None,
                    down_since: None,
                    worker: None,
                    report_age_s: None,
                    status: c.kind,
                    status_reasons: c.reasons,
                    detail: lang
                        .t(if self.connected.load(std::sync::atomic::Ordering::Relaxed) {
                            Msg::no_worker_reports
                        } else {
                            Msg::no_live_status
                        })
                        .into(),
                };
                if let Some((at, r, x)) = seen {
                    let age = at.elapsed();
                    row.worker = Some(r.worker.clone());
                    row.report_age_s = Some(age.as_secs_f64());
                    row.last_violation_utc = x.last_violation_utc.clone();
                    row.last_violation = shown(&x.last_violation_utc);
                    row.reconnects = Some(x.reconnects);
                    if age > Duration::from_secs_f64(3.0 * r.interval_s) {
                        row.detail = format!(
                            "{} {} ({:.0} {})",
                            lang.t(Msg::no_report_from),
                            r.worker,
                            age.as_secs_f64(),
                            lang.t(Msg::seconds)
                        );
                    } else {
                        row.state = OpsState::of(x.state, &x.conditions);
                        row.state_text = row.state.text(lang).into();
                        row.conditions = x.conditions.iter().map(|c| c.name().to_string()).collect();
                        row.conditions_text = x
                            .conditions
                            .iter()
                            .map(|c| condition_text(lang, *c))
                            .collect::<Vec<_>>()
                            .join(if lang == Lang::Zh { "、" } else { ", " });
                        row.analysed_fps = Some(x.analysed_fps);
                        row.dropped_fps = Some(x.dropped_fps);
                        row.inference_ms = r.inference_ms;
                        row.down_since = shown(&x.down_since_utc);
                        row.detail =
                            detail(lang, row.state, row.down_since.clone().or_else(|| shown(&x.last_video_utc)), x);
                    }
                }
                row
            })
            .collect()
    }
}

/// Why a camera is in `state`, in `lang`: since when it has no video and whether it is
/// reconnecting, how much an overloaded camera drops.
fn detail(lang: Lang, state: OpsState, since: Option<String>, x: &crate::telemetry::status::CameraStatus) -> String {
    match state {
        OpsState::Starting => lang.t(Msg::waiting_first_video).into(),
        OpsState::Down => {
            let mut d = match since {
                Some(t) => format!("{} {t}", lang.t(Msg::no_video_since)),
                None => lang.t(Msg::cond_stream).into(),
            };
            if x.reconnects > 0 {
                let sep = if lang == Lang::Zh { "；" } else { "; " };
                d += &format!(
                    "{sep}{} ({} {})",
                    lang.t(Msg::reconnecting),
                    lang.t(Msg::reconnects_so_far),
                    x.reconnects
                );
            }
            d
        }
        OpsState::Overloaded => {
            let (a, d) = (x.analysed_fps, x.dropped_fps);
            format!("{} {:.0} %", lang.t(Msg::overload_detail), if a + d > 0.0 { 100.0 * d / (a + d) } else { 0.0 })
        }
        _ => String::new(),
    }
}
