//! Rule `utensils_left`: objects of the configured classes scoring ≥ `threshold` whose centre
//! lies in the zone are tracked per object; one that has stayed for `dwell_s` (seen again within
//! `max_gap_s` each time) fires once. One object left in one place is one episode and one item:
//! if its track breaks (a person stood in front of it longer than `max_gap_s`) and an object of
//! the same class is seen again at the same place within `episode_gap_s`, it is the same object
//! and does not fire again. With `hours`, dwell only counts inside those site-local hours.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::{Fire, FrameCtx, Rule, RuleConfig, RuleEnv, Scratch, in_zone, matched, validate_zone, zone_polygon};
use crate::detect::{ModelPool, Object};
use crate::privacy::Polygon;
use crate::telemetry::Event;
use crate::track::{Obs, Tracker};

fn default_classes() -> Vec<String> {
    ["cup", "bowl", "fork", "knife", "spoon", "bottle", "wine glass"].iter().map(|s| s.to_string()).collect()
}

/// `kind = "utensils_left"`: cups, bowls, cutlery, bottles and glasses left on a surface that
/// must be clear.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct UtensilsRule {
    /// Rule id (unique per camera; used in KV keys and events).
    #[default("utensils_left".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// COCO class names that count (the object model's labels).
    #[default(default_classes())]
    #[schemars(length(min = 1, max = 80))]
    pub classes: Vec<String>,
    /// Object detector score threshold (NanoDet; 0.35 is upstream's demo value).
    #[default(0.35)]
    #[schemars(range(min = 0, max = 1))]
    pub threshold: f64,
    /// Objects whose box is smaller than this (shorter side, analysis-frame pixels) are ignored.
    #[default(8.0)]
    #[schemars(range(min = 0, max = 4096))]
    pub min_box_px: f64,
    /// How long an object must stay in the zone before it fires (once per episode), seconds.
    #[default(600.0)]
    #[schemars(range(min = 1, max = 604800))]
    pub dwell_s: f64,
    /// An object not seen for longer than this is gone (a new one if it comes back), seconds; at
    /// least twice `analysis.gate_recheck_s` with gating on.
    #[default(10.0)]
    #[schemars(range(min = 0.5, max = 3600))]
    pub max_gap_s: f64,
    /// An object that fired, seen again at the same place (same class, boxes overlapping by IoU
    /// ≥ 0.3) within this long after it was last seen, is the same object in the same episode:
    /// it does not fire again. Longer away, it is a new episode. Seconds.
    #[default(300.0)]
    #[schemars(range(min = 0, max = 604800))]
    pub episode_gap_s: f64,
    /// Polygon in normalised [0,1] coordinates (the must-be-clear surface); an object counts when
    /// its centre is inside. Default: the whole frame.
    #[schemars(length(max = 256))]
    pub zone: Option<Vec<[f64; 2]>>,
    /// Count only objects the clean/dirty head (`models.dirty_head`) calls dirty: the
    /// regulation is about utensils not washed, not about any cup left out. Off by default: the
    /// head is fitted on 26 photos of plates (see the docs), not on counters.
    #[default(false)]
    pub require_dirty: bool,
    /// With `require_dirty`: the head's dirty probability at or above which an object counts.
    #[default(0.5)]
    #[schemars(range(min = 0, max = 1))]
    pub dirty_threshold: f64,
    /// Site-local hours in which the rule applies, "HH:MM-HH:MM" (may wrap midnight, e.g.
    /// "22:00-06:00"). Default: always.
    #[schemars(length(max = 11))]
    pub hours: Option<String>,
    /// Severity written into events ("minor", "major", ...).
    #[default("minor".to_string())]
    #[schemars(length(min = 1, max = 32))]
    pub severity: String,
    /// Risk tier written into events and shown in the review queue: "immediate", "deadline" (fix
    /// by a deadline) or "routine". Default: fix by a deadline (unwashed tableware is to be put right within a set time).
    #[default(super::RiskTier::Deadline)]
    pub tier: super::RiskTier,
    /// The legal basis written into events and manifests: `{ regulation = "…", article = "…" }`.
    /// Default: Food Safety Law art. 33(1)(5) (tableware and containers washed and disinfected
    /// before use).
    #[default(super::LegalBasis::food_safety_law("第三十三条第一款第（五）项"))]
    pub legal_basis: super::LegalBasis,
}

impl UtensilsRule {
    pub(super) fn check(&self, env: &RuleEnv, p: &mut dyn FnMut(&str, String)) {
        let min_gap = if env.gate { env.gate_recheck_s * 2.0 } else { 0.5 };
        if self.max_gap_s < min_gap {
            p(
                "max_gap_s",
                format!(
                    "{} must be in [{min_gap}, 3600] seconds (at least twice analysis.gate_recheck_s with gating on)",
                    self.max_gap_s
                ),
            );
        }
        if let Some(labels) = env.object_labels {
            for (k, c) in self.classes.iter().enumerate() {
                if !labels.contains(c) {
                    p(
                        &format!("classes[{k}]"),
                        format!("{c:?} is not a class of the object model (e.g. \"cup\", \"bowl\", \"wine glass\")"),
                    );
                }
            }
        }
        if self.require_dirty && !env.dirty_head {
            p("require_dirty", "needs a clean/dirty head, but models.dirty_head is \"none\"".into());
        }
        if let Some(Err(e)) = self.hours.as_deref().map(Schedule::parse) {
            p("hours", e);
        }
        validate_zone(&self.id, &self.zone, p);
    }
}

/// Daily hours "HH:MM-HH:MM" in site-local time, as minutes of the day; `to` < `from` wraps
/// midnight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub from: u32,
    pub to: u32,
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let bad = || format!("{s:?} is not hours like \"22:00-06:00\" (HH:MM-HH:MM, 24-hour, site-local)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0)) && t.trim().len() == 5).then_some(h * 60 + m)
        };
        let (from, to) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
        if from == to {
            return Err(format!("{s:?} is an empty range (from = to)"));
        }
        Ok(Schedule { from, to })
    }

    pub fn contains(&self, minute: u32) -> bool {
        if self.from < self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

/// The rule's state on one camera.
pub struct Utensils {
    pub rule: UtensilsRule,
    pub zone: Option<Polygon>,
    pub schedule: Option<Schedule>,
    /// Detector class index → wanted by this rule.
    pub wanted: Vec<bool>,
    labels: Vec<String>,
    tracker: Tracker,
    outside_hours: bool,
    /// Places where an object fired, kept until nothing of its class was seen there for
    /// `episode_gap_s`.
    episodes: Vec<Episode>,
    /// This frame's observations (kept to reuse its allocation).
    obs: Vec<Obs>,
}

/// Where an object that fired was last seen.
#[derive(Debug, Clone, Copy)]
struct Episode {
    class: u16,
    bbox: crate::frame::BBox,
    last_seen: Duration,
}

/// Boxes this much alike (IoU) are the same place.
const SAME_PLACE_IOU: f32 = 0.3;

impl Utensils {
    pub fn new(rule: UtensilsRule, labels: &[String]) -> Self {
        let tracker = Tracker::new(0.3, u32::MAX, Duration::from_secs_f64(rule.max_gap_s), 1);
        let mut s = Utensils {
            wanted: Vec::new(),
            labels: labels.to_vec(),
            tracker,
            rule: rule.clone(),
            zone: None,
            schedule: None,
            outside_hours: false,
            episodes: Vec::new(),
            obs: Vec::new(),
        };
        s.set_rule(rule);
        s
    }

    /// Hot reload: new parameters, same tracks and dwell times.
    pub fn set_rule(&mut self, rule: UtensilsRule) {
        self.wanted = self.labels.iter().map(|l| rule.classes.iter().any(|c| c == l)).collect();
        self.tracker.max_gap = Duration::from_secs_f64(rule.max_gap_s);
        self.zone = zone_polygon(&rule.id, &rule.zone);
        self.schedule = rule.hours.as_deref().and_then(|h| Schedule::parse(h).ok());
        self.rule = rule;
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
        self.follow_episodes(pts);
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
            .filter(|t| t.matched && !t.fired && pts.saturating_sub(t.dwell_from) >= dwell)
            .max_by_key(|t| pts.saturating_sub(t.dwell_from))?;
        let value = pts.saturating_sub(trigger.dwell_from).as_secs_f64();
        let trigger_id = trigger.id;
        let frames = vec![trigger.dwell_from, pts];
        let detections = matched(&self.tracker, trigger_id, |t, d| super::Detection {
            label: self.labels.get(t.class as usize).cloned().unwrap_or_default(),
            dwell_s: Some((pts.saturating_sub(t.dwell_from).as_secs_f64() * 1000.0).round() / 1000.0),
            ..d
        });
        // once per object and episode
        if let Some(t) = self.tracker.tracks.iter_mut().find(|t| t.id == trigger_id) {
            t.fired = true;
            self.episodes.push(Episode { class: t.class, bbox: t.bbox, last_seen: pts });
        }
        Some(Fire { pts, detections, frames, value })
    }

    /// Episodes follow their objects: a fired track seen now keeps its episode's place fresh; a
    /// new track at the place of an episode is the same object again (fired already); episodes
    /// whose place stayed empty for `episode_gap_s` end.
    fn follow_episodes(&mut self, pts: Duration) {
        let gap = Duration::from_secs_f64(self.rule.episode_gap_s);
        self.episodes.retain(|e| pts.saturating_sub(e.last_seen) <= gap);
        for t in self.tracker.tracks.iter_mut().filter(|t| t.matched) {
            let place = self
                .episodes
                .iter_mut()
                .filter(|e| e.class == t.class)
                .map(|e| (e.bbox.iou(&t.bbox), e))
                .filter(|(iou, _)| *iou >= SAME_PLACE_IOU)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match place {
                Some((_, e)) => {
                    t.fired = true;
                    e.bbox = t.bbox;
                    e.last_seen = pts;
                }
                None if t.fired => self.episodes.push(Episode { class: t.class, bbox: t.bbox, last_seen: pts }),
                None => {}
            }
        }
    }
}

impl Rule for Utensils {
    fn config(&self) -> RuleConfig {
        RuleConfig::UtensilsLeft(self.rule.clone())
    }

    fn zone(&self) -> Option<&Polygon> {
        self.zone.as_ref()
    }

    /// Always the whole region: the object detector's input has a fixed size, and a still
    /// object is what this rule looks for.
    fn infer(&mut self, f: &FrameCtx, _look: super::Look, models: &ModelPool, s: &mut Scratch) -> Result<Option<Fire>> {
        let frame = f.frame;
        let region = super::roi(self.zone.as_ref(), frame.width, frame.height);
        {
            let mut set = models.get(f.model_hint);
            let m = set.objects.as_mut().context("object model not loaded")?;
            let t0 = Instant::now();
            m.detect_in(frame, region, self.rule.threshold as f32, &self.wanted, &mut s.objects)?;
            Event::Inference { model: &m.info.id, took: t0.elapsed() }.emit();
            if self.rule.require_dirty && !s.objects.is_empty() {
                let d = set.dirty.as_mut().context("clean/dirty head not loaded (models.dirty_head)")?;
                let t0 = Instant::now();
                let boxes: Vec<_> = s.objects.iter().map(|o| o.bbox).collect();
                let dirty = d.no_mask_prob(frame, &boxes, 0.0)?;
                Event::Inference { model: &d.info.id, took: t0.elapsed() }.emit();
                let thr = self.rule.dirty_threshold as f32;
                let mut k = 0;
                s.objects.retain(|_| {
                    k += 1;
                    dirty[k - 1] >= thr
                });
            }
        }
        Ok(self.update(frame.pts, f.local_minute(), &s.objects, frame.width, frame.height))
    }

    fn matched_now(&self) -> usize {
        self.tracker.tracks.iter().filter(|t| t.matched).count()
    }

    fn reconfigure(&mut self, cfg: &RuleConfig) -> bool {
        let RuleConfig::UtensilsLeft(r) = cfg else { return false };
        self.set_rule(r.clone());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BBox;

    fn ms(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn utensils(dwell: f64, hours: Option<&str>) -> Utensils {
        let mut rule: UtensilsRule = toml::from_str(&format!("dwell_s = {dwell}\nmax_gap_s = 5")).unwrap();
        rule.zone = Some(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]);
        rule.hours = hours.map(str::to_string);
        let labels: Vec<String> = ["person", "cup", "bowl"].iter().map(|s| s.to_string()).collect();
        Utensils::new(rule, &labels)
    }

    fn obj(x: f32, class: u16) -> Object {
        Object { bbox: BBox { x1: x, y1: 100.0, x2: x + 30.0, y2: 130.0 }, score: 0.6, class }
    }
    /// Feeds `frames` frames at 1 frame/s from `from` s; `seen(k)` says which objects frame k shows.
    fn feed(st: &mut Utensils, from: u32, frames: u32, seen: impl Fn(u32) -> Vec<Object>) -> Vec<Fire> {
        (from..from + frames).filter_map(|k| st.update(ms(k as f64), 0, &seen(k), 640, 360)).collect()
    }

    #[test]
    fn utensil_fires_once_per_object_and_episode_in_zone_only() {
        let mut st = utensils(10.0, None);
        // a cup in the zone, a cup outside it, a person in it; 1 frame/s for 60 s, with a 3 s gap
        // (detector missed it, or gating skipped: shorter than max_gap_s)
        let fires = feed(&mut st, 0, 60, |k| {
            if (12..15).contains(&k) { vec![] } else { vec![obj(50.0, 1), obj(500.0, 1), obj(100.0, 0)] }
        });
        assert_eq!(fires.len(), 1, "once, at 10 s, however long it stays: {fires:?}");
        assert_eq!(fires[0].pts, ms(10.0));
        assert_eq!((fires[0].detections.len(), fires[0].detections[0].label.as_str()), (1, "cup"));
    }

    #[test]
    fn a_broken_track_at_the_same_place_is_the_same_episode_and_a_later_return_a_new_one() {
        let mut st = utensils(10.0, None);
        let cup = |k: u32| if (20..40).contains(&k) { vec![] } else { vec![obj(50.0, 1)] };
        // hidden for 20 s (past max_gap_s = 5: its track ends), then back where it was
        let fires = feed(&mut st, 0, 80, cup);
        assert_eq!(fires.len(), 1, "one object, one episode, one item: {fires:?}");
        // a cup of another class at another place is another object
        let fires = feed(&mut st, 80, 20, |_| vec![obj(50.0, 1), obj(200.0, 2)]);
        assert_eq!(fires.len(), 1, "the bowl fires, the cup still does not: {fires:?}");
        let trigger = fires[0].detections.iter().find(|d| d.trigger).expect("a trigger");
        assert_eq!(trigger.label, "bowl");
        // both gone for longer than episode_gap_s (300 s), then a cup at the same place: a new episode
        let fires = feed(&mut st, 400, 20, |_| vec![obj(50.0, 1)]);
        assert_eq!(fires.len(), 1, "a new episode fires again: {fires:?}");
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
