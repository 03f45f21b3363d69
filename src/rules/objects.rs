//! The machinery of the object rules (`utensils_left`, `object_present`, `object_with_person`,
//! `attribute_missing`):
//! objects of the rule's classes scoring ≥ `threshold` whose centre lies in the zone are tracked
//! per object; one that has stayed for `dwell` (seen again within `max_gap` each time) fires once.
//! One episode is one item: after a fire, an object of the same class seen again within
//! `episode_gap` at the same place ([`EpisodeScope::Place`]: a cup left out, hidden a while) or
//! anywhere in the zone ([`EpisodeScope::Zone`]: a cat walking about) is the same episode and does
//! not fire again. With hours, dwell only counts inside (or outside) those site-local hours.
//!
//! A kind is a [`Spec`]: its configuration in this machinery's terms, plus the one filter that is
//! its own (the clean/dirty head, an object held by a person, a fitted attribute head on a part of
//! a person). Each kind's file owns its
//! configuration and says how it maps to a `Spec`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Fire, FrameCtx, Rule, RuleConfig, RuleEnv, Scratch, in_zone, matched, validate_zone};
use crate::detect::{ModelPool, Object};
use crate::frame::BBox;
use crate::privacy::Polygon;
use crate::telemetry::Event;
use crate::track::{Obs, Tracker};

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

/// When a rule applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    Always,
    /// Only inside these hours (`hours`).
    Inside(Schedule),
    /// Only outside these hours (`working_hours`: out of hours).
    Outside(Schedule),
}

impl When {
    /// From a rule's `hours` and `working_hours` (checked by [`Keys::check`]).
    pub fn of(hours: Option<&str>, working_hours: Option<&str>) -> When {
        match (hours.map(Schedule::parse), working_hours.map(Schedule::parse)) {
            (Some(Ok(s)), _) => When::Inside(s),
            (_, Some(Ok(s))) => When::Outside(s),
            _ => When::Always,
        }
    }

    pub fn applies(&self, minute: u32) -> bool {
        match self {
            When::Always => true,
            When::Inside(s) => s.contains(minute),
            When::Outside(s) => !s.contains(minute),
        }
    }
}

/// Where one episode's object may be seen again and still be the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeScope {
    /// At the same place (boxes overlapping by IoU ≥ 0.3): things left somewhere.
    Place,
    /// Anywhere in the zone: things that move about.
    Zone,
}

/// What an object must be besides being in the zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    None,
    /// The clean/dirty head calls it dirty with at least this probability.
    Dirty(f32),
    /// A person (class `person`, score ≥ `person_threshold`) covers at least `overlap` of its box.
    HeldBy {
        person_threshold: f32,
        overlap: f32,
    },
    /// The fitted attribute head `head` (`models/<head>.toml`), on the crop of the person's
    /// `part`, gives at least `missing` probability that the attribute is missing.
    Attribute {
        head: String,
        part: Part,
        missing: f32,
    },
}

/// The crop of a person an attribute head judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The whole person box (work clothes).
    Person,
    /// The box's top half (an apron, a jacket, hands at the chest).
    Upper,
    /// The head: the box's top, as tall as the box is wide (at least 30 % of its height), grown
    /// by 10 % (a chef hat, a mask) — the person pass's head region.
    Head,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Person, Part::Upper, Part::Head];

    pub fn name(self) -> &'static str {
        match self {
            Part::Person => "person",
            Part::Upper => "upper",
            Part::Head => "head",
        }
    }

    /// The crop of `person` for this part, within the `w`×`h` frame.
    pub fn crop(self, person: BBox, w: f32, h: f32) -> BBox {
        match self {
            Part::Person => person.expand(0.0, w, h),
            Part::Upper => BBox { y2: person.y1 + 0.5 * person.h(), ..person }.expand(0.0, w, h),
            Part::Head => crate::detect::face::head_region(person, w, h),
        }
    }
}

/// An object rule in the machinery's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub classes: Vec<String>,
    pub threshold: f32,
    pub min_box_px: f32,
    pub dwell: Duration,
    pub max_gap: Duration,
    pub episode_gap: Duration,
    pub zone: Option<Polygon>,
    pub when: When,
    pub episode: EpisodeScope,
    pub filter: Filter,
}

/// The detector's class a person is.
pub const PERSON: &str = "person";

/// The keys every object rule has, borrowed from its configuration: checked and turned into a
/// [`Spec`] here, once for all kinds.
pub(super) struct Keys<'a> {
    pub id: &'a str,
    pub classes: &'a [String],
    /// The object model the classes are of (`None`: the pipeline's `models.objects`).
    pub detector: Option<&'a str>,
    pub threshold: f64,
    pub min_box_px: f64,
    pub dwell_s: f64,
    pub max_gap_s: f64,
    pub episode_gap_s: f64,
    pub zone: &'a Option<Vec<[f64; 2]>>,
    pub hours: Option<&'a str>,
    pub working_hours: Option<&'a str>,
}

impl Keys<'_> {
    pub fn spec(&self, episode: EpisodeScope, filter: Filter) -> Spec {
        Spec {
            classes: self.classes.to_vec(),
            threshold: self.threshold as f32,
            min_box_px: self.min_box_px as f32,
            dwell: Duration::from_secs_f64(self.dwell_s),
            max_gap: Duration::from_secs_f64(self.max_gap_s),
            episode_gap: Duration::from_secs_f64(self.episode_gap_s),
            zone: super::zone_polygon(self.id, self.zone),
            when: When::of(self.hours, self.working_hours),
            episode,
            filter,
        }
    }

    /// Classes the detector has, `max_gap_s` covering the motion gate's recheck, hours, zone.
    pub fn check(&self, env: &RuleEnv, p: &mut dyn FnMut(&str, String)) {
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
        let labels = match self.detector {
            None => env.object_labels,
            Some(d) if !super::valid_id(d) => {
                p("detector", format!("{d:?}: a model id is 1-64 characters of A-Z a-z 0-9 - _"));
                None
            }
            Some(d) => match env.detectors.map(|m| m.get(d)) {
                None => None,
                Some(Some(Ok(labels))) => Some(&labels[..]),
                Some(Some(Err(why))) => {
                    p("detector", why.clone());
                    None
                }
                Some(None) => {
                    p(
                        "detector",
                        format!("object model {d:?} is not loaded by this worker: a new detector needs a restart"),
                    );
                    None
                }
            },
        };
        if let Some(labels) = labels {
            // COCO's "mouse" is the computer kind: a rule that asks for it wants rodents
            let coco = labels.iter().any(|l| l == "keyboard");
            for (k, class) in self.classes.iter().enumerate() {
                if !labels.contains(class) {
                    p(
                        &format!("classes[{k}]"),
                        match self.detector {
                            None => format!(
                                "{class:?} is not a class of the object model (e.g. \"cup\", \"cat\", \"cell phone\")"
                            ),
                            Some(d) => format!(
                                "{class:?} is not a class of object model {d:?} (its classes: {})",
                                labels.join(", ")
                            ),
                        },
                    );
                } else if coco && class == "mouse" {
                    p(
                        &format!("classes[{k}]"),
                        "\"mouse\" in the COCO object model is a computer mouse, not a rodent; rodents need a \
                         detector trained for them (add it under models/ with its manifest)"
                            .into(),
                    );
                }
            }
        }
        for (key, v) in [("hours", self.hours), ("working_hours", self.working_hours)] {
            if let Some(Err(e)) = v.map(Schedule::parse) {
                p(key, e);
            }
        }
        if self.hours.is_some() && self.working_hours.is_some() {
            p(
                "working_hours",
                "set hours (when the rule applies) or working_hours (it applies outside them), not both".into(),
            );
        }
        validate_zone(self.id, self.zone, p);
    }
}

/// An object rule's state on one camera.
pub struct ObjectRule {
    cfg: RuleConfig,
    pub spec: Spec,
    /// Detector class index → wanted by this rule (its classes, and persons for `HeldBy`).
    pub wanted: Vec<bool>,
    /// Detector class index → one of the rule's classes.
    counted: Vec<bool>,
    /// Every class of the detector (the shared run asks for all).
    every_class: Vec<bool>,
    person: Option<u16>,
    labels: Vec<String>,
    /// The detector (its index in the model set) `labels` are of, once the rule has run: a rule
    /// naming its own detector takes that detector's class names at its first frame.
    bound: Option<usize>,
    tracker: Tracker,
    outside_hours: bool,
    /// Where objects that fired were last seen, kept until nothing of its class was seen there
    /// (or in the zone) for `episode_gap`.
    episodes: Vec<Episode>,
    /// This frame's observations (kept to reuse its allocation).
    obs: Vec<Obs>,
    /// Scope `Zone`: since when any of the classes has been in the zone without a gap longer
    /// than `max_gap`, and when one was last seen (a cat that walks away from its track, or is
    /// taken for a dog a moment, still dwells).
    presence: Option<(Duration, Duration)>,
}

/// Where an object that fired was last seen.
#[derive(Debug, Clone, Copy)]
struct Episode {
    class: u16,
    bbox: BBox,
    last_seen: Duration,
}

/// The object rules of a camera share one detector run per frame, with every class above this
/// score (or the lowest threshold asked for, if lower).
const SHARED_FLOOR: f32 = 0.3;

/// Boxes this much alike (IoU) are the same place.
const SAME_PLACE_IOU: f32 = 0.3;

/// A box this much inside another (share of its area) is at the same place.
const SAME_PLACE_NESTED: f32 = 0.5;

/// How alike two places are: their IoU if ≥ 0.3, or, for one box mostly inside the other (a cup
/// and the cup with its saucer), the share covered if ≥ 0.5; 0 when they are different places.
fn same_place(a: &BBox, b: &BBox) -> f32 {
    let iou = a.iou(b);
    let nested = covered(a, b).max(covered(b, a));
    if iou >= SAME_PLACE_IOU {
        iou
    } else if nested >= SAME_PLACE_NESTED {
        nested * SAME_PLACE_IOU
    } else {
        0.0
    }
}

/// The share of `inner`'s area that `outer` covers.
fn covered(inner: &BBox, outer: &BBox) -> f32 {
    let w = (inner.x2.min(outer.x2) - inner.x1.max(outer.x1)).max(0.0);
    let h = (inner.y2.min(outer.y2) - inner.y1.max(outer.y1)).max(0.0);
    let area = inner.w() * inner.h();
    if area <= 0.0 { 0.0 } else { w * h / area }
}

impl ObjectRule {
    /// `cfg` must be an object kind ([`RuleConfig::object_spec`]).
    pub fn new(cfg: RuleConfig, labels: &[String]) -> ObjectRule {
        let spec = cfg.object_spec().expect("an object rule");
        let mut s = ObjectRule {
            wanted: Vec::new(),
            counted: Vec::new(),
            every_class: vec![true; labels.len()],
            person: None,
            labels: labels.to_vec(),
            bound: None,
            tracker: Tracker::new(0.3, u32::MAX, spec.max_gap, 1),
            outside_hours: false,
            episodes: Vec::new(),
            obs: Vec::new(),
            presence: None,
            spec: spec.clone(),
            cfg: cfg.clone(),
        };
        s.set(cfg, spec);
        s
    }

    /// Hot reload: new parameters, same tracks and dwell times.
    fn set(&mut self, cfg: RuleConfig, spec: Spec) {
        self.counted = self.labels.iter().map(|l| spec.classes.iter().any(|c| c == l)).collect();
        self.person = self.labels.iter().position(|l| l == PERSON).map(|i| i as u16);
        let held = matches!(spec.filter, Filter::HeldBy { .. });
        self.wanted =
            self.counted.iter().enumerate().map(|(i, &c)| c || (held && Some(i as u16) == self.person)).collect();
        self.tracker.max_gap = spec.max_gap;
        self.spec = spec;
        self.cfg = cfg;
    }

    /// Feeds one analysed frame: the detector's objects (frame pixels) and the site-local minute of
    /// the day of the frame.
    pub fn update(&mut self, pts: Duration, minute_of_day: u32, objects: &[Object], w: u32, h: u32) -> Option<Fire> {
        let spec = &self.spec;
        let held_by = |o: &Object| match spec.filter {
            Filter::HeldBy { person_threshold, overlap } => objects.iter().any(|p| {
                Some(p.class) == self.person && p.score >= person_threshold && covered(&o.bbox, &p.bbox) >= overlap
            }),
            _ => true,
        };
        let mut obs = std::mem::take(&mut self.obs);
        obs.clear();
        obs.extend(
            objects
                .iter()
                .filter(|o| self.counted.get(o.class as usize).copied().unwrap_or(false))
                .filter(|o| o.score >= spec.threshold && o.bbox.w().min(o.bbox.h()) >= spec.min_box_px)
                .filter(|o| in_zone(spec.zone.as_ref(), &o.bbox, w, h))
                .filter(|o| held_by(o))
                .map(|o| Obs { bbox: o.bbox, score: o.score, class: o.class, value: o.score, hit: true }),
        );
        self.tracker.update(pts, &obs);
        self.obs = obs;
        self.follow_episodes(pts);
        if self.spec.episode == EpisodeScope::Zone {
            self.follow_presence(pts);
        }
        let outside = !self.spec.when.applies(minute_of_day);
        if outside || self.outside_hours {
            // outside the hours nothing dwells; inside, dwell counts from the first frame in them
            for t in &mut self.tracker.tracks {
                t.dwell_from = pts;
            }
            if let Some(p) = &mut self.presence {
                p.0 = pts;
            }
        }
        self.outside_hours = outside;
        if outside {
            return None;
        }
        let dwell = self.spec.dwell;
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

    /// Scope `Zone`: the classes' presence in the zone goes on while one of them is seen again
    /// within `max_gap`, whatever track it is on; each track dwells since the presence began.
    fn follow_presence(&mut self, pts: Duration) {
        let gap = self.spec.max_gap;
        if self.presence.is_some_and(|(_, last)| pts.saturating_sub(last) > gap) {
            self.presence = None;
        }
        for t in self.tracker.tracks.iter_mut().filter(|t| t.matched) {
            let p = self.presence.get_or_insert((t.dwell_from.min(pts), pts));
            p.1 = pts;
            t.dwell_from = t.dwell_from.min(p.0);
        }
    }

    /// Episodes follow their objects: a fired track seen now keeps its episode fresh; a new track
    /// of an episode's class at its place (scope `Zone`: of any of the classes, anywhere) is the
    /// same object again (fired already); episodes not seen for `episode_gap` end.
    fn follow_episodes(&mut self, pts: Duration) {
        let gap = self.spec.episode_gap;
        let anywhere = self.spec.episode == EpisodeScope::Zone;
        self.episodes.retain(|e| pts.saturating_sub(e.last_seen) <= gap);
        for t in self.tracker.tracks.iter_mut().filter(|t| t.matched) {
            let place = self
                .episodes
                .iter_mut()
                .filter(|e| anywhere || e.class == t.class)
                .map(|e| (if anywhere { 1.0 } else { same_place(&e.bbox, &t.bbox) }, e))
                .filter(|(alike, _)| *alike > 0.0)
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

impl Rule for ObjectRule {
    fn config(&self) -> RuleConfig {
        self.cfg.clone()
    }

    fn zone(&self) -> Option<&Polygon> {
        self.spec.zone.as_ref()
    }

    /// Always the whole region: the object detector's input has a fixed size.
    fn infer(&mut self, f: &FrameCtx, _look: super::Look, models: &ModelPool, s: &mut Scratch) -> Result<Option<Fire>> {
        let frame = f.frame;
        let region = super::roi(self.spec.zone.as_ref(), frame.width, frame.height);
        {
            let mut set = models.get(f.model_hint);
            // persons are asked for at their own threshold; the rule's classes at theirs (update)
            let floor = match self.spec.filter {
                Filter::HeldBy { person_threshold, .. } => self.spec.threshold.min(person_threshold),
                _ => self.spec.threshold,
            };
            // one detector run per frame and region for all the camera's object rules: every
            // class above a floor low enough for the usual thresholds
            let detector = self.cfg.detector();
            let (k, m) = set
                .detector(detector)
                .with_context(|| format!("object model {} not loaded", detector.unwrap_or("(models.objects)")))?;
            if self.bound != Some(k) {
                // the class names of the detector the rule names (the pipeline's by default)
                self.labels = m.labels().to_vec();
                self.every_class = vec![true; self.labels.len()];
                let (cfg, spec) = (self.cfg.clone(), self.spec.clone());
                self.set(cfg, spec);
                self.bound = Some(k);
            }
            let fresh =
                s.detected_for.is_some_and(|(pts, r, fl, d)| pts == frame.pts && r == region && fl <= floor && d == k);
            if !fresh {
                let fl = floor.min(SHARED_FLOOR);
                let t0 = Instant::now();
                m.detect_in(frame, region, fl, &self.every_class, &mut s.detected)?;
                Event::Inference { model: &m.info.id, took: t0.elapsed() }.emit();
                s.detected_for = Some((frame.pts, region, fl, k));
            }
            s.objects.clear();
            let wanted = &self.wanted;
            s.objects.extend(
                s.detected.iter().filter(|o| o.score > floor && wanted.get(o.class as usize).copied().unwrap_or(false)),
            );
            let judged = match &self.spec.filter {
                _ if s.objects.is_empty() => None,
                Filter::Dirty(thr) => {
                    let d = set.dirty.as_mut().context("clean/dirty head not loaded (models.dirty_head)")?;
                    Some((d, *thr, None))
                }
                Filter::Attribute { head, part, missing } => {
                    let d = set.attribute(head).with_context(|| format!("attribute head {head:?} not loaded"))?;
                    Some((d, *missing, Some(*part)))
                }
                _ => None,
            };
            if let Some((d, thr, part)) = judged {
                // the head's probability on each object's crop (a person's part): kept at ≥ thr
                let (w, h) = (frame.width as f32, frame.height as f32);
                let boxes: Vec<_> = s.objects.iter().map(|o| part.map_or(o.bbox, |p| p.crop(o.bbox, w, h))).collect();
                let t0 = Instant::now();
                let p = d.no_mask_prob(frame, &boxes, 0.0)?;
                Event::Inference { model: &d.info.id, took: t0.elapsed() }.emit();
                let mut k = 0;
                s.objects.retain(|_| {
                    k += 1;
                    p[k - 1] >= thr
                });
            }
        }
        Ok(self.update(frame.pts, f.local_minute(), &s.objects, frame.width, frame.height))
    }

    fn matched_now(&self) -> usize {
        self.tracker.tracks.iter().filter(|t| t.matched).count()
    }

    fn reconfigure(&mut self, cfg: &RuleConfig) -> bool {
        match cfg.object_spec() {
            Some(spec) if cfg.kind() == self.cfg.kind() => {
                self.set(cfg.clone(), spec);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{ObjectPresentRule, ObjectWithPersonRule, UtensilsRule};

    fn s(v: f64) -> Duration {
        Duration::from_secs_f64(v)
    }

    fn labels() -> Vec<String> {
        ["person", "cup", "bowl", "cat", "cell phone", "dog"].iter().map(|s| s.to_string()).collect()
    }

    fn cat_only() -> ObjectPresentRule {
        toml::from_str("classes = [\"cat\"]\ndwell_s = 2").unwrap()
    }

    fn utensils(dwell: f64, hours: Option<&str>) -> ObjectRule {
        let mut rule: UtensilsRule = toml::from_str(&format!("dwell_s = {dwell}\nmax_gap_s = 5")).unwrap();
        rule.zone = Some(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]);
        rule.hours = hours.map(str::to_string);
        ObjectRule::new(RuleConfig::UtensilsLeft(rule), &labels())
    }

    fn obj(x: f32, class: u16) -> Object {
        Object { bbox: BBox { x1: x, y1: 100.0, x2: x + 30.0, y2: 130.0 }, score: 0.6, class }
    }
    /// Feeds `frames` frames at 1 frame/s from `from` s; `seen(k)` says which objects frame k shows.
    fn feed(st: &mut ObjectRule, from: u32, frames: u32, seen: impl Fn(u32) -> Vec<Object>) -> Vec<Fire> {
        (from..from + frames).filter_map(|k| st.update(s(k as f64), 0, &seen(k), 640, 360)).collect()
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
        assert_eq!(fires[0].pts, s(10.0));
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
    fn a_box_inside_another_of_its_class_is_the_same_object() {
        // the demo's coffee: NanoDet boxes the cup with its saucer and the cup alone (IoU 0.21)
        let mut st = utensils(5.0, None);
        let (whole, cup) =
            (BBox { x1: 10.0, y1: 9.0, x2: 275.0, y2: 342.0 }, BBox { x1: 177.0, y1: 111.0, x2: 300.0, y2: 356.0 });
        assert!(whole.iou(&cup) < SAME_PLACE_IOU);
        let seen = |_| vec![Object { bbox: whole, score: 0.6, class: 1 }, Object { bbox: cup, score: 0.5, class: 1 }];
        assert_eq!(feed(&mut st, 0, 30, seen).len(), 1, "one cup, one item");
        // two cups side by side are two
        let mut st = utensils(5.0, None);
        assert_eq!(feed(&mut st, 0, 30, |_| vec![obj(20.0, 1), obj(60.0, 1)]).len(), 2);
    }

    #[test]
    fn utensil_dwell_counts_only_inside_the_hours() {
        let mut st = utensils(60.0, Some("22:00-06:00"));
        // 21:58 .. 22:03, one frame every 2 s: dwell starts at 22:00, fires at 22:01
        let mut fired_at = None;
        for k in 0..150 {
            let minute = (21 * 60 + 58) + (k * 2) / 60;
            if st.update(s(k as f64 * 2.0), minute, &[obj(50.0, 2)], 640, 360).is_some() {
                fired_at = Some(minute);
                break;
            }
        }
        assert_eq!(fired_at, Some(22 * 60 + 1));
    }

    #[test]
    fn an_animal_walking_about_is_one_episode_and_a_person_counts_only_out_of_hours() {
        // a cat crossing the frame 20 px a second, its track broken twice for longer than max_gap_s
        let mut st = ObjectRule::new(RuleConfig::ObjectPresent(cat_only()), &labels());
        let walk = |k: u32| {
            if (10..25).contains(&k) || (40..55).contains(&k) { vec![] } else { vec![obj(20.0 * k as f32 % 600.0, 3)] }
        };
        let fires = feed(&mut st, 0, 90, walk);
        assert_eq!(fires.len(), 1, "one cat about the kitchen, one item: {fires:?}");
        // the same cat taken for a dog as well (two boxes, two classes): still one item
        let mut st = ObjectRule::new(RuleConfig::ObjectPresent(toml::from_str("dwell_s = 2").unwrap()), &labels());
        let fires = feed(&mut st, 0, 30, |k| {
            let cat = obj(10.0 * k as f32, 3);
            if k >= 3 { vec![cat, Object { class: 5, ..cat }] } else { vec![cat] }
        });
        assert_eq!(fires.len(), 1, "{fires:?}");
        let mut st = ObjectRule::new(RuleConfig::ObjectPresent(cat_only()), &labels());
        let fires = feed(&mut st, 0, 90, walk);
        assert_eq!((fires[0].pts, fires[0].detections[0].label.as_str()), (s(2.0), "cat"));
        // gone for longer than episode_gap_s (default 300 s): a new episode
        assert_eq!(feed(&mut st, 500, 5, |_| vec![obj(100.0, 3)]).len(), 1);

        // a person in the kitchen counts outside working hours only
        let night: ObjectPresentRule =
            toml::from_str("classes = [\"person\"]\ndwell_s = 5\nworking_hours = \"06:00-22:00\"").unwrap();
        let mut st = ObjectRule::new(RuleConfig::ObjectPresent(night), &labels());
        let person = [obj(100.0, 0)];
        let at = |st: &mut ObjectRule, from: u32, minute: u32| {
            (from..from + 20).find(|&k| st.update(s(k as f64), minute, &person, 640, 360).is_some())
        };
        assert_eq!(at(&mut st, 0, 12 * 60), None, "at noon: working hours");
        assert_eq!(at(&mut st, 1000, 23 * 60), Some(1005), "at 23:00 after 5 s");
    }

    #[test]
    fn a_phone_counts_only_in_a_persons_hands() {
        let rule: ObjectWithPersonRule = toml::from_str("dwell_s = 2").unwrap();
        let mut st = ObjectRule::new(RuleConfig::ObjectWithPerson(rule), &labels());
        assert_eq!(st.wanted, vec![true, false, false, false, true, false], "phones and persons are detected");
        let person = Object { bbox: BBox { x1: 300.0, y1: 50.0, x2: 420.0, y2: 350.0 }, score: 0.8, class: 0 };
        let phone = |x: f32| Object { bbox: BBox { x1: x, y1: 150.0, x2: x + 20.0, y2: 180.0 }, score: 0.5, class: 4 };
        // a phone on the counter, away from anyone: nothing
        assert!(feed(&mut st, 0, 10, |_| vec![person, phone(50.0)]).is_empty());
        // a quarter of it over the person's box is not enough (`overlap`: at least half covered)
        assert!(feed(&mut st, 10, 10, |_| vec![person, phone(285.0)]).is_empty());
        // in the person's hands for 2 s: fires, once
        let fires = feed(&mut st, 20, 10, |_| vec![person, phone(350.0)]);
        assert_eq!(fires.len(), 1, "{fires:?}");
        let trigger = fires[0].detections.iter().find(|d| d.trigger).unwrap();
        assert_eq!((trigger.label.as_str(), fires[0].pts), ("cell phone", s(22.0)));
        // a person below person_threshold holds nothing
        let mut st = ObjectRule::new(RuleConfig::ObjectWithPerson(toml::from_str("dwell_s = 2").unwrap()), &labels());
        let faint = Object { score: 0.2, ..person };
        assert!(feed(&mut st, 0, 10, |_| vec![faint, phone(350.0)]).is_empty());
    }

    #[test]
    fn an_attribute_head_judges_the_part_of_the_person_the_rule_names() {
        let (w, h) = (640.0, 360.0);
        let standing = BBox { x1: 100.0, y1: 50.0, x2: 180.0, y2: 290.0 };
        assert_eq!(Part::Person.crop(standing, w, h), standing);
        assert_eq!(Part::Upper.crop(standing, w, h), BBox { y2: 170.0, ..standing });
        // the head: the top, as tall as the box is wide, grown by 10 %
        assert_eq!(Part::Head.crop(standing, w, h), BBox { x1: 92.0, y1: 42.0, x2: 188.0, y2: 138.0 });
        // within the frame
        let edge = BBox { x1: -5.0, y1: -5.0, x2: 60.0, y2: 400.0 };
        let c = Part::Person.crop(edge, w, h);
        assert!(c.x1 >= 0.0 && c.y1 >= 0.0 && c.y2 <= h, "{c:?}");
        // the rule: persons only, and the head, part and threshold it names
        let rule: crate::rules::AttributeMissingRule =
            toml::from_str("head = \"hat-attribute-head\"\npart = \"upper\"\nmissing_threshold = 0.7").unwrap();
        let st = ObjectRule::new(RuleConfig::AttributeMissing(rule), &labels());
        assert_eq!(st.wanted, vec![true, false, false, false, false, false], "persons only");
        assert_eq!(
            st.spec.filter,
            Filter::Attribute { head: "hat-attribute-head".into(), part: Part::Upper, missing: 0.7 }
        );
        assert_eq!(st.spec.episode, EpisodeScope::Zone);
    }

    #[test]
    fn the_shared_checks_name_the_key() {
        let env = RuleEnv {
            object_labels: None,
            gate: false,
            gate_recheck_s: 1.0,
            dirty_head: false,
            attribute_heads: None,
            detectors: None,
        };
        let coco: Vec<String> = ["person", "mouse", "keyboard", "cat"].iter().map(|s| s.to_string()).collect();
        let env_coco = RuleEnv { object_labels: Some(&coco), ..env };
        let problems = |toml: &str, env: &RuleEnv| {
            let r: RuleConfig = toml::from_str(toml).unwrap();
            let mut out = Vec::new();
            r.check(env, &mut |k: &str, p: String| out.push(format!("{k}: {p}")));
            out
        };
        let p = problems("kind = \"object_present\"\nclasses = [\"mouse\", \"rat\"]", &env_coco);
        assert!(p[0].starts_with("classes[0]: \"mouse\" in the COCO object model is a computer mouse"), "{p:?}");
        assert!(p[1].starts_with("classes[1]: \"rat\" is not a class"), "{p:?}");
        let p = problems("kind = \"object_present\"\nhours = \"22:00-06:00\"\nworking_hours = \"6-22\"", &env);
        assert!(p.iter().any(|x| x.starts_with("working_hours: \"6-22\" is not hours")), "{p:?}");
        assert!(p.iter().any(|x| x.starts_with("working_hours: set hours")), "{p:?}");
        assert!(problems("kind = \"object_with_person\"", &env).is_empty());
        // an attribute rule names a head, by a model id, that this worker loaded
        let p = problems("kind = \"attribute_missing\"", &env);
        assert!(p.len() == 1 && p[0].starts_with("head: name the fitted attribute head"), "{p:?}");
        let p = problems("kind = \"attribute_missing\"\nhead = \"../../etc/x\"", &env);
        assert!(p.len() == 1 && p[0].starts_with("head: \"../../etc/x\" is not a model id"), "{p:?}");
        let loaded = ["mask-attribute-head".to_string()];
        let env_loaded = RuleEnv { attribute_heads: Some(&loaded), ..env_coco };
        assert!(problems("kind = \"attribute_missing\"\nhead = \"mask-attribute-head\"", &env_loaded).is_empty());
        let p = problems("kind = \"attribute_missing\"\nhead = \"hat-attribute-head\"", &env_loaded);
        assert!(p.len() == 1 && p[0].contains("not loaded in this worker: needs a restart"), "{p:?}");
        // the object model must have persons
        let no_persons = ["cat".to_string()];
        let env_cats = RuleEnv { object_labels: Some(&no_persons), ..env };
        let p = problems("kind = \"attribute_missing\"\nhead = \"h\"", &env_cats);
        assert!(p.len() == 1 && p[0].contains("has no \"person\" class"), "{p:?}");
    }
}
