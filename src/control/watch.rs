//! The camera watch: once a second it reads every camera's counters and says what a camera's own
//! threads cannot say when they are the ones stuck:
//!
//! - **no video** (`stream`, 无画面): no frame for longer than the camera's `stall_s` (after a
//!   first frame; `stall_s` + [`START_GRACE`] before one), whatever the source kind and whatever
//!   its pipeline is blocked in. The detail names since when, in site time. The first frame after
//!   it ends it (the ingest tells that).
//! - **overload** (`overload`, 过载): over the last [`OVERLOAD_WINDOW`], more than half of the
//!   frames due for analysis were dropped because analysis could not keep up; it ends when fewer
//!   than a fifth are.
//!
//! Both are health events like every condition: a log line, the `vigil_camera_condition` metric,
//! `/health` (not ok while either is active), the status report (`/ops`) and
//! `vigil.health.<site>.<camera>`. File replay (`realtime = false`) is held back by analysis on
//! purpose and is not judged.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::telemetry::stats::OVERLOAD_WINDOW;
use crate::telemetry::{CameraStats, Condition, Event};

/// Before a camera's first frame, `stall_s` plus this (connecting, models loading).
pub const START_GRACE: Duration = Duration::from_secs(10);
/// How often the watch looks.
pub const EVERY: Duration = Duration::from_secs(1);

/// What the watch knows of one camera.
struct Seen {
    frames: u64,
    /// When its frame counter last moved (or when the watch first saw it).
    moved: Instant,
    /// The watch raised `stream` and has not seen video since.
    no_video: bool,
    /// (when, frames due for analysis, dropped) over the overload window.
    samples: VecDeque<(Instant, u64, u64)>,
}

/// The watch over this worker's cameras.
pub struct Watch {
    /// Judged cameras (live sources) and their `stall_s`.
    stall: BTreeMap<String, Duration>,
    utc_offset_s: i32,
    seen: BTreeMap<String, Seen>,
}

impl Watch {
    /// `stall`: the cameras to judge (live sources: RTSP, realtime files) with their `stall_s`.
    pub fn new(stall: BTreeMap<String, Duration>, utc_offset_s: i32) -> Watch {
        Watch { stall, utc_offset_s, seen: BTreeMap::new() }
    }

    /// Looks at every registered camera once, at `now`.
    pub fn tick(&mut self, now: Instant) {
        let cams = crate::telemetry::cameras().lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.seen.retain(|id, _| cams.contains_key(id));
        for (id, stats) in &cams {
            if let Some(&stall) = self.stall.get(id) {
                self.judge(id, stats, stall, now);
            }
        }
    }

    fn judge(&mut self, id: &str, s: &CameraStats, stall: Duration, now: Instant) {
        let frames = s.encoded_frames.get();
        let due = s.analysis_offered.get();
        let dropped = s.analysis_dropped.get();
        let seen = self.seen.entry(id.to_string()).or_insert_with(|| Seen {
            frames,
            moved: now,
            no_video: false,
            samples: VecDeque::new(),
        });
        if frames != seen.frames {
            seen.frames = frames;
            seen.moved = now;
            seen.no_video = false;
        }
        let finished = s.finished.load(Ordering::Relaxed);
        // no video
        let allowed = if frames == 0 { stall + START_GRACE } else { stall };
        let quiet = now.saturating_duration_since(seen.moved);
        if !finished && !seen.no_video && quiet > allowed {
            seen.no_video = true;
            let last = s.last_video_ms.load(Ordering::Relaxed);
            let since = match chrono::DateTime::from_timestamp_millis(last).filter(|_| last > 0) {
                Some(t) => format!("no video since {}", crate::util::time::shown(t, self.utc_offset_s)),
                None => "no video since the camera started".to_string(),
            };
            Event::Health {
                camera: id,
                condition: Condition::Stream,
                active: true,
                detail: &format!("{since} ({:.0} s; stall_s = {:.1})", quiet.as_secs_f64(), stall.as_secs_f64()),
                lasted: None,
            }
            .emit();
        }
        // overload, over the window
        seen.samples.push_back((now, due, dropped));
        while seen.samples.len() > 2 && now.saturating_duration_since(seen.samples[1].0) >= OVERLOAD_WINDOW {
            seen.samples.pop_front();
        }
        let (t0, due0, dropped0) = seen.samples[0];
        let span = now.saturating_duration_since(t0);
        if span + EVERY / 2 < OVERLOAD_WINDOW {
            return;
        }
        let (due_d, dropped_d) = (due.saturating_sub(due0), dropped.saturating_sub(dropped0));
        let over = s.is_active(Condition::Overload);
        let starts = !over && due_d >= 4 && dropped_d * 2 > due_d && !finished;
        let ends = over && (dropped_d * 5 < due_d || finished || due_d == 0);
        if starts || ends {
            let analysed = due_d - dropped_d;
            Event::Health {
                camera: id,
                condition: Condition::Overload,
                active: starts,
                detail: &format!(
                    "analysed {:.1} frames/s, {} of {} frames due for analysis dropped ({:.0} %) in the last {:.0} s",
                    analysed as f64 / span.as_secs_f64(),
                    dropped_d,
                    due_d,
                    100.0 * dropped_d as f64 / due_d.max(1) as f64,
                    span.as_secs_f64()
                ),
                lasted: None,
            }
            .emit();
        }
    }
}

/// Runs the watch until the task is aborted.
pub async fn run(mut watch: Watch) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        watch.tick(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_video_and_overload_start_and_end_as_the_counters_say() {
        let id = "watch-test-cam";
        let s = crate::telemetry::register_camera(id);
        let stall = Duration::from_secs(5);
        let mut w = Watch::new([(id.to_string(), stall)].into(), 8 * 3600);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // video at 25 frames/s, 5 due for analysis per second, none dropped
        for k in 0..12 {
            s.encoded_frames.inc_by(25);
            s.analysis_offered.inc_by(5);
            s.last_video_ms.store(crate::telemetry::stats::unix_ms(), Ordering::Relaxed);
            w.tick(at(k));
        }
        assert!(s.active().is_empty(), "{:?}", s.active());
        // analysis falls behind: 4 of 5 dropped each second
        for k in 12..24 {
            s.encoded_frames.inc_by(25);
            s.analysis_offered.inc_by(5);
            s.analysis_dropped.inc_by(4);
            w.tick(at(k));
        }
        assert_eq!(s.active(), vec![Condition::Overload]);
        assert_eq!(crate::telemetry::health_json()["ok"], false);
        // it keeps up again
        for k in 24..36 {
            s.encoded_frames.inc_by(25);
            s.analysis_offered.inc_by(5);
            w.tick(at(k));
        }
        assert!(s.active().is_empty(), "overload ended: {:?}", s.active());
        // the source stops sending: 5 s pass unjudged, the 6th says so
        for k in 36..41 {
            w.tick(at(k));
        }
        assert!(!s.is_active(Condition::Stream), "not before stall_s");
        w.tick(at(42));
        assert!(s.is_active(Condition::Stream), "no video for longer than stall_s");
        assert!(s.down_since_ms.load(Ordering::Relaxed) > 0);
        // a camera that ended (a file without loop) is not judged
        let ended = crate::telemetry::register_camera("watch-test-ended");
        let mut w = Watch::new([("watch-test-ended".to_string(), stall)].into(), 0);
        ended.encoded_frames.inc();
        ended.finished.store(true, Ordering::Relaxed);
        for k in 0..30 {
            w.tick(at(k));
        }
        assert!(ended.active().is_empty());
        // before a first frame the camera has stall_s + START_GRACE
        let quiet = crate::telemetry::register_camera("watch-test-quiet");
        let mut w = Watch::new([("watch-test-quiet".to_string(), stall)].into(), 0);
        for k in 0..=15 {
            w.tick(at(k));
        }
        assert!(quiet.active().is_empty(), "within the grace");
        w.tick(at(16));
        assert!(quiet.is_active(Condition::Stream));
        for c in ["watch-test-cam", "watch-test-ended", "watch-test-quiet"] {
            crate::telemetry::unregister_camera(c);
        }
    }
}
