//! The worker's live status report: every `worker.status_interval_s` each worker publishes, on core
//! NATS (not the evidence stream: nothing of it is kept), the state of each of its cameras — up,
//! down or starting, active tamper conditions, analysed and dropped frames per second, the last
//! violation — and its own (spool, outbox, mean inference time). The ops console folds the
//! reports of every worker of a site into its cameras overview; a worker whose report is late
//! shows as such.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Condition, cameras, metrics};

/// `schema` of a [`StatusReport`].
pub const STATUS_SCHEMA: &str = "vigil.status.v1";

/// One camera's state as its worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// No video yet since the worker started.
    Starting,
    /// Video flowing.
    Up,
    /// The stream is down (error, end, stall); RTSP cameras are reconnecting.
    Down,
}

impl CameraState {
    pub fn name(self) -> &'static str {
        match self {
            CameraState::Starting => "starting",
            CameraState::Up => "up",
            CameraState::Down => "down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CameraStatus {
    pub camera: String,
    pub state: CameraState,
    /// Active conditions other than `stream` (frozen, covered, saturated, defocus, moved).
    pub conditions: Vec<Condition>,
    /// Frames analysed and dropped per second over the last interval.
    pub analysed_fps: f64,
    pub dropped_fps: f64,
    pub frames_analysed: u64,
    pub frames_dropped: u64,
    pub reconnects: u64,
    pub violations: u64,
    /// When the last violation was raised (none since the worker started: null).
    pub last_violation_utc: Option<String>,
    /// When the last video frame arrived (none yet: null).
    #[serde(default)]
    pub last_video_utc: Option<String>,
    /// While `down`: since when (the `stream` condition started).
    #[serde(default)]
    pub down_since_utc: Option<String>,
}

/// `vigil-live.status.<site>.<worker>`: a worker's cameras and its own state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[schemars(title = "vigil.status.v1")]
pub struct StatusReport {
    pub schema: String,
    pub site: String,
    pub worker: String,
    pub time_utc: String,
    /// Seconds between two reports of this worker (a report older than three of them is late).
    pub interval_s: f64,
    pub cameras: Vec<CameraStatus>,
    pub spool_full: bool,
    pub outbox_depth: i64,
    /// Mean model run over the last interval, ms (null: no inference ran).
    pub inference_ms: Option<f64>,
}

/// Builds the reports of this process, rates from the counters' change since the previous one.
pub struct Reporter {
    site: String,
    worker: String,
    interval_s: f64,
    prev: BTreeMap<String, (u64, u64)>,
    prev_inference: (u64, u64),
    at: Instant,
}

impl Reporter {
    pub fn new(site: &str, worker: &str, interval_s: f64) -> Reporter {
        let m = metrics::get();
        Reporter {
            site: site.into(),
            worker: worker.into(),
            interval_s,
            prev: BTreeMap::new(),
            prev_inference: (m.inference_runs.load(Ordering::Relaxed), m.inference_us.load(Ordering::Relaxed)),
            at: Instant::now(),
        }
    }

    pub fn report(&mut self) -> StatusReport {
        let dt = self.at.elapsed().as_secs_f64().max(1e-3);
        self.at = Instant::now();
        let cams = cameras().lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = Vec::with_capacity(cams.len());
        for (id, s) in &cams {
            let active = s.active();
            let (analysed, dropped) = (s.analysed.get(), s.analysis_dropped.get());
            let (pa, pd) = self.prev.insert(id.clone(), (analysed, dropped)).unwrap_or((analysed, dropped));
            let state = if active.contains(&Condition::Stream) {
                CameraState::Down
            } else if s.encoded_frames.get() == 0 {
                CameraState::Starting
            } else {
                CameraState::Up
            };
            let last = s.last_violation_ms.load(Ordering::Relaxed);
            let at = |ms: i64| {
                (ms > 0).then(|| chrono::DateTime::from_timestamp_millis(ms).map(crate::util::rfc3339)).flatten()
            };
            out.push(CameraStatus {
                camera: id.clone(),
                state,
                conditions: active
                    .into_iter()
                    .filter(|c| !matches!(c, Condition::Stream | Condition::SpoolFull))
                    .collect(),
                analysed_fps: analysed.saturating_sub(pa) as f64 / dt,
                dropped_fps: dropped.saturating_sub(pd) as f64 / dt,
                frames_analysed: analysed,
                frames_dropped: dropped,
                reconnects: s.reconnects.get(),
                violations: s.violations.get(),
                last_violation_utc: at(last),
                last_video_utc: at(s.last_video_ms.load(Ordering::Relaxed)),
                down_since_utc: if state == CameraState::Down {
                    at(s.down_since_ms.load(Ordering::Relaxed))
                } else {
                    None
                },
            });
        }
        let m = metrics::get();
        let inf = (m.inference_runs.load(Ordering::Relaxed), m.inference_us.load(Ordering::Relaxed));
        let runs = inf.0.saturating_sub(self.prev_inference.0);
        let us = inf.1.saturating_sub(self.prev_inference.1);
        self.prev_inference = inf;
        StatusReport {
            schema: STATUS_SCHEMA.into(),
            site: self.site.clone(),
            worker: self.worker.clone(),
            time_utc: crate::util::rfc3339(chrono::Utc::now()),
            interval_s: self.interval_s,
            cameras: out,
            spool_full: m.spool_full.get() == 1,
            outbox_depth: m.outbox_depth.get(),
            inference_ms: (runs > 0).then(|| us as f64 / runs as f64 / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_is_starting_then_up_then_down_with_its_rates() {
        let s = super::super::register_camera("status-test-cam");
        let mut r = Reporter::new("s", "w", 2.0);
        let state = |rep: &StatusReport| rep.cameras.iter().find(|c| c.camera == "status-test-cam").unwrap().clone();
        assert_eq!(state(&r.report()).state, CameraState::Starting);
        s.encoded_frames.inc();
        for _ in 0..10 {
            s.analysed.inc();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let c = state(&r.report());
        assert_eq!(c.state, CameraState::Up);
        assert!(c.analysed_fps > 10.0 && c.frames_analysed >= 10, "{c:?}");
        s.set_condition(Condition::Stream, true);
        s.set_condition(Condition::Covered, true);
        let c = state(&r.report());
        assert_eq!((c.state, c.conditions.clone()), (CameraState::Down, vec![Condition::Covered]));
        assert_eq!(c.analysed_fps, 0.0, "no frames since the last report");
        let back: StatusReport = serde_json::from_value(serde_json::to_value(r.report()).unwrap()).unwrap();
        assert_eq!(back.schema, STATUS_SCHEMA);
    }
}
