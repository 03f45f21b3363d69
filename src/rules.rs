//! Rules stage: turns tracked detections into violations. Mechanism (tracking, N-of-M windows,
//! dwell, cooldowns, zones, schedules) is shared; each rule is policy over it.
//!
//! `no_mask` (defaults in `config::NoMaskRule`): a face counts when its box's shorter side is at
//! least `min_face_px` and its centre lies in the zone; a frame is a *hit* for a face's track when
//! its no-mask probability ≥ `threshold`. A track with ≥ `min_hits` hits in its last `window`
//! analysed frames fires, once per track; after a fire the rule is quiet on that camera for
//! `cooldown_s` of stream time (a track that meets the condition during the cooldown fires when it
//! ends, if it still meets it).
//!
//! `utensils_left` (defaults in `config::UtensilsRule`): objects of the configured classes scoring
//! ≥ `threshold` whose centre lies in the zone are tracked per object; one that has stayed for
//! `dwell_s` (seen again within `max_gap_s` each time) fires, and fires again after each further
//! `dwell_s` it stays. With `hours`, dwell only counts inside those local hours.

use std::time::Duration;

use crate::config::{NoMaskRule, Schedule, UtensilsRule};
use crate::detect::{Face, Object};
use crate::frame::BBox;
use crate::privacy::Polygon;
use crate::track::{Obs, Track, Tracker};

/// One tracked detection in a violation, as reported in the event and manifest.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    pub track_id: u64,
    /// Box in pixels: of the analysis frame in the rule, of the clip in events.
    #[serde(rename = "box")]
    pub bbox: BBox,
    /// "face", or the detector's class name ("cup", "bowl", ...).
    pub label: String,
    /// Detector score.
    pub score: f32,
    /// no_mask: the classifier's no-mask probability, and hits in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_mask_prob: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// utensils_left: seconds the object has been in the zone in the current dwell period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<f64>,
    /// The detection that triggered the violation (others are context).
    pub trigger: bool,
}

#[derive(Debug, Clone)]
pub struct Fire {
    pub rule_id: String,
    pub pts: Duration,
    pub detections: Vec<Detection>,
    /// Stream times of the frames in which the triggering object was seen (its window).
    pub frames: Vec<Duration>,
    /// The trigger's measurement: no-mask probability, or dwell seconds.
    pub value: f64,
}

/// Inference region for a rule: its zone's bounding box with a 10 % margin, or the whole frame.
pub fn roi(zone: Option<&Polygon>, w: u32, h: u32) -> BBox {
    zone.map(|z| z.bbox_px(w, h, 0.1)).unwrap_or(BBox { x1: 0.0, y1: 0.0, x2: w as f32, y2: h as f32 })
}

/// The tracks seen in this frame as detections of a violation: the common fields filled in,
/// `fill` adds the rule's own.
fn matched(tracker: &Tracker, trigger_id: u64, fill: impl Fn(&Track, Detection) -> Detection) -> Vec<Detection> {
    tracker
        .tracks
        .iter()
        .filter(|t| t.matched)
        .map(|t| {
            let d = Detection {
                track_id: t.id,
                bbox: t.bbox,
                label: String::new(),
                score: t.score,
                no_mask_prob: None,
                hits: None,
                window: None,
                dwell_s: None,
                trigger: t.id == trigger_id,
            };
            fill(t, d)
        })
        .collect()
}

fn in_zone(zone: Option<&Polygon>, b: &BBox, w: u32, h: u32) -> bool {
    zone.is_none_or(|z| z.contains_center(b, w, h))
}

pub struct NoMaskState {
    pub rule: NoMaskRule,
    pub zone: Option<Polygon>,
    tracker: Tracker,
    last_fire: Option<Duration>,
    /// This frame's observations (kept to reuse its allocation).
    obs: Vec<Obs>,
}

impl NoMaskState {
    pub fn new(rule: NoMaskRule, zone: Option<Polygon>) -> NoMaskState {
        // a face missing for up to `window` analysed frames keeps its track
        let tracker = Tracker::new(0.3, rule.window as u32, Duration::from_secs(10), rule.window);
        NoMaskState { rule, zone, tracker, last_fire: None, obs: Vec::new() }
    }

    /// Hot reload: new parameters, same tracks (a track that fired stays fired).
    pub fn set_rule(&mut self, rule: NoMaskRule, zone: Option<Polygon>) {
        self.tracker.window = rule.window.max(1);
        self.tracker.max_missed = rule.window as u32;
        self.rule = rule;
        self.zone = zone;
    }

    /// A face track is collecting its N of M: inference must not be skipped.
    pub fn wants_frames(&self) -> bool {
        self.tracker.tracks.iter().any(|t| !t.fired && t.hit_count() > 0)
    }

    /// Keeps the faces worth classifying: large enough and inside the zone.
    pub fn keep_eligible(&self, faces: &mut Vec<Face>, frame_w: u32, frame_h: u32) {
        faces.retain(|f| {
            f.bbox.w().min(f.bbox.h()) >= self.rule.min_face_px as f32
                && in_zone(self.zone.as_ref(), &f.bbox, frame_w, frame_h)
        });
    }

    /// Feeds one analysed frame: eligible faces and their no-mask probabilities.
    pub fn update(&mut self, pts: Duration, faces: &[Face], no_mask: &[f32]) -> Option<Fire> {
        let mut obs = std::mem::take(&mut self.obs);
        obs.clear();
        obs.extend(faces.iter().zip(no_mask).map(|(f, &p)| Obs {
            bbox: f.bbox,
            score: f.score,
            class: 0,
            value: p,
            hit: p as f64 >= self.rule.threshold,
        }));
        self.tracker.update(pts, &obs);
        self.obs = obs;
        let cooling =
            self.last_fire.is_some_and(|t| pts.saturating_sub(t) < Duration::from_secs_f64(self.rule.cooldown_s));
        if cooling {
            return None;
        }
        let (min_hits, median, thr) = (self.rule.min_hits, self.rule.temporal == "median", self.rule.threshold);
        let trigger = self
            .tracker
            .tracks
            .iter_mut()
            .filter(|t| t.matched && !t.fired)
            .filter(|t| {
                if median {
                    t.values.len() >= min_hits && t.median_value() as f64 >= thr
                } else {
                    t.hit_count() >= min_hits
                }
            })
            .max_by(|a, b| a.value.total_cmp(&b.value))?;
        trigger.fired = true;
        let (trigger_id, value) = (trigger.id, trigger.value as f64);
        let frames: Vec<Duration> = trigger.seen_at.iter().copied().collect();
        self.last_fire = Some(pts);
        let window = self.rule.window;
        let detections = matched(&self.tracker, trigger_id, |t, d| Detection {
            label: "face".into(),
            no_mask_prob: Some(t.value),
            hits: Some(t.hit_count()),
            window: Some(window),
            ..d
        });
        Some(Fire { rule_id: self.rule.id.clone(), pts, detections, frames, value })
    }
}

pub struct UtensilsState {
    pub rule: UtensilsRule,
    pub zone: Option<Polygon>,
    pub schedule: Option<Schedule>,
    /// Detector class index → wanted by this rule.
    pub wanted: Vec<bool>,
    labels: Vec<String>,
    tracker: Tracker,
    outside_hours: bool,
    /// This frame's observations (kept to reuse its allocation).
    obs: Vec<Obs>,
}

impl UtensilsState {
    pub fn new(rule: UtensilsRule, zone: Option<Polygon>, schedule: Option<Schedule>, labels: &[String]) -> Self {
        let tracker = Tracker::new(0.3, u32::MAX, Duration::from_secs_f64(rule.max_gap_s), 1);
        let mut s = UtensilsState {
            wanted: Vec::new(),
            labels: labels.to_vec(),
            tracker,
            rule,
            zone,
            schedule,
            outside_hours: false,
            obs: Vec::new(),
        };
        s.set_rule(s.rule.clone(), s.zone.clone(), s.schedule);
        s
    }

    /// Hot reload: new parameters, same tracks and dwell times.
    pub fn set_rule(&mut self, rule: UtensilsRule, zone: Option<Polygon>, schedule: Option<Schedule>) {
        self.wanted = self.labels.iter().map(|l| rule.classes.iter().any(|c| c == l)).collect();
        self.tracker.max_gap = Duration::from_secs_f64(rule.max_gap_s);
        self.rule = rule;
        self.zone = zone;
        self.schedule = schedule;
    }

    /// Feeds one analysed frame: the detector's objects (frame pixels) and the site-local minute of
    /// the day of the frame.
    pub fn update(&mut self, pts: Duration, minute_of_day: u32, objects: &[Object], w: u32, h: u32) -> Option<Fire> {
        let mut obs = std::mem::take(&mut self.obs);
        obs.clear();
        obs.extend(
            objects
                .iter()
                .filter(|o| self.wanted.get(o.class as usize).copied().unwrap_or(false))
                .filter(|o| {
                    o.score as f64 >= self.rule.threshold && o.bbox.w().min(o.bbox.h()) >= self.rule.min_box_px as f32
                })
                .filter(|o| in_zone(self.zone.as_ref(), &o.bbox, w, h))
                .map(|o| Obs { bbox: o.bbox, score: o.score, class: o.class, value: o.score, hit: true }),
        );
        self.tracker.update(pts, &obs);
        self.obs = obs;
        let outside = self.schedule.is_some_and(|s| !s.contains(minute_of_day));
        if outside || self.outside_hours {
            // outside the hours nothing dwells; inside, dwell counts from the first frame in them
            for t in &mut self.tracker.tracks {
                t.dwell_from = pts;
            }
        }
        self.outside_hours = outside;
        if outside {
            return None;
        }
        let dwell = Duration::from_secs_f64(self.rule.dwell_s);
        let trigger = self
            .tracker
            .tracks
            .iter_mut()
            .filter(|t| t.matched && pts.saturating_sub(t.dwell_from) >= dwell)
            .max_by_key(|t| pts.saturating_sub(t.dwell_from))?;
        let value = pts.saturating_sub(trigger.dwell_from).as_secs_f64();
        let trigger_id = trigger.id;
        let frames = vec![trigger.dwell_from, pts];
        let detections = matched(&self.tracker, trigger_id, |t, d| Detection {
            label: self.labels.get(t.class as usize).cloned().unwrap_or_default(),
            dwell_s: Some((pts.saturating_sub(t.dwell_from).as_secs_f64() * 1000.0).round() / 1000.0),
            ..d
        });
        // once per object per dwell period
        if let Some(t) = self.tracker.tracks.iter_mut().find(|t| t.id == trigger_id) {
            t.dwell_from = pts;
            t.fired = true;
        }
        Some(Fire { rule_id: self.rule.id.clone(), pts, detections, frames, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::NormPoint;

    fn rule() -> NoMaskRule {
        toml::from_str("min_hits = 3\nwindow = 5\ncooldown_s = 10\nthreshold = 0.7\nmin_face_px = 20").unwrap()
    }

    fn face(x: f32, size: f32) -> Face {
        Face { bbox: BBox { x1: x, y1: 10.0, x2: x + size, y2: 10.0 + size }, score: 0.9, landmarks: [[0.0; 2]; 5] }
    }

    fn ms(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn left_half() -> Polygon {
        Polygon {
            name: "z".into(),
            points: vec![
                NormPoint { x: 0.0, y: 0.0 },
                NormPoint { x: 0.5, y: 0.0 },
                NormPoint { x: 0.5, y: 1.0 },
                NormPoint { x: 0.0, y: 1.0 },
            ],
        }
    }

    #[test]
    fn fires_once_per_track_after_n_of_m_and_respects_cooldown() {
        let mut st = NoMaskState::new(rule(), None);
        let f = [face(100.0, 40.0)];
        assert!(st.update(ms(0.0), &f, &[0.9]).is_none());
        assert!(st.wants_frames(), "a track collecting hits wants every frame");
        assert!(st.update(ms(0.2), &f, &[0.5]).is_none()); // not a hit
        assert!(st.update(ms(0.4), &f, &[0.8]).is_none());
        let fire = st.update(ms(0.6), &f, &[0.95]).expect("3 hits of 4");
        assert_eq!(fire.detections.len(), 1);
        assert!(fire.detections[0].trigger && fire.detections[0].hits == Some(3));
        assert!(!st.wants_frames());
        // same track never fires again
        for i in 0..20 {
            assert!(st.update(ms(0.8 + i as f64 * 0.2), &f, &[0.99]).is_none());
        }
        // a new face inside the cooldown waits for it to end
        let g = [face(100.0, 40.0), face(400.0, 40.0)];
        for i in 0..3 {
            assert!(st.update(ms(5.0 + i as f64 * 0.2), &g, &[0.99, 0.99]).is_none());
        }
        assert!(st.update(ms(10.7), &g, &[0.99, 0.99]).is_some());
    }

    #[test]
    fn median_rule_fires_on_the_median_not_on_single_frames() {
        let mut r = rule();
        r.temporal = "median".into();
        let mut st = NoMaskState::new(r, None);
        let f = [face(100.0, 40.0)];
        // 0.9, 0.2, 0.95: 2 hits of 3 would not fire N-of-M (3 needed) nor the median yet (0.9 ≥ 0.7
        // after 3 frames: fires on the third)
        assert!(st.update(ms(0.0), &f, &[0.9]).is_none());
        assert!(st.update(ms(0.2), &f, &[0.2]).is_none());
        assert!(st.update(ms(0.4), &f, &[0.95]).is_some(), "median of 0.9, 0.2, 0.95 is 0.9");
        let mut r = rule();
        r.temporal = "median".into();
        let mut st = NoMaskState::new(r, None);
        for (k, p) in [0.99, 0.1, 0.2, 0.99, 0.3].into_iter().enumerate() {
            assert!(st.update(ms(k as f64 * 0.2), &f, &[p]).is_none(), "median stays below 0.7 at frame {k}");
        }
    }

    #[test]
    fn small_faces_and_faces_outside_the_zone_are_ignored() {
        let st = NoMaskState::new(rule(), Some(left_half()));
        let mut kept = vec![face(10.0, 40.0), face(10.0, 10.0), face(500.0, 40.0)];
        st.keep_eligible(&mut kept, 640, 360);
        assert_eq!(kept, vec![face(10.0, 40.0)]);
        let r = roi(st.zone.as_ref(), 640, 360);
        assert_eq!((r.x1, r.x2, r.y1, r.y2), (0.0, 352.0, 0.0, 360.0), "zone bbox + 10 % margin, clamped");
    }

    fn utensils(dwell: f64, hours: Option<&str>) -> UtensilsState {
        let rule: UtensilsRule = toml::from_str(&format!("dwell_s = {dwell}\nmax_gap_s = 5")).unwrap();
        let labels: Vec<String> = ["person", "cup", "bowl"].iter().map(|s| s.to_string()).collect();
        let sched = hours.map(|h| Schedule::parse(h).unwrap());
        UtensilsState::new(rule, Some(left_half()), sched, &labels)
    }

    fn obj(x: f32, class: u16) -> Object {
        Object { bbox: BBox { x1: x, y1: 100.0, x2: x + 30.0, y2: 130.0 }, score: 0.6, class }
    }

    #[test]
    fn utensil_fires_once_per_object_per_dwell_period_in_zone_only() {
        let mut st = utensils(10.0, None);
        let mut fires = Vec::new();
        // a cup in the zone, a cup outside it, a person in it; 1 frame/s for 25 s, with a 3 s gap
        for k in 0..25 {
            if (12..15).contains(&k) {
                continue; // detector missed it (or gating skipped): shorter than max_gap_s
            }
            let objs = [obj(50.0, 1), obj(500.0, 1), obj(100.0, 0)];
            if let Some(f) = st.update(ms(k as f64), 0, &objs, 640, 360) {
                fires.push(f);
            }
        }
        assert_eq!(fires.len(), 2, "at 10 s and 20 s: {fires:?}");
        assert_eq!(fires[0].pts, ms(10.0));
        assert_eq!(fires[1].pts, ms(20.0));
        assert!(fires.iter().all(|f| f.detections.len() == 1 && f.detections[0].label == "cup"));
        assert_eq!(fires[0].detections[0].track_id, fires[1].detections[0].track_id, "same object");
    }

    #[test]
    fn utensil_dwell_counts_only_inside_the_hours() {
        let mut st = utensils(60.0, Some("22:00-06:00"));
        // 21:58 .. 22:03, one frame every 2 s: dwell starts at 22:00, fires at 22:01
        let mut fired_at = None;
        for k in 0..150 {
            let minute = (21 * 60 + 58) + (k * 2) / 60;
            if st.update(ms(k as f64 * 2.0), minute, &[obj(50.0, 2)], 640, 360).is_some() {
                fired_at = Some(minute);
                break;
            }
        }
        assert_eq!(fired_at, Some(22 * 60 + 1));
    }
}
