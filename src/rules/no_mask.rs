//! Rule `no_mask`: a face counts when its box's shorter side is at least `min_face_px` and its
//! centre lies in the zone; a frame is a *hit* for the face's track when its no-mask probability
//! is ≥ `threshold`. A track with ≥ `min_hits` hits in its last `window` analysed frames (or, with
//! `temporal = "median"`, whose median probability there is ≥ `threshold`) fires, once per
//! track; after a fire the rule is quiet on that camera for `cooldown_s` of stream time (a track
//! that meets the condition during the cooldown fires when it ends, if it still meets it).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::{Fire, FrameCtx, Look, Rule, RuleConfig, Scratch, gate, in_zone, matched, validate_zone, zone_polygon};
use crate::detect::face::PERSON_PASS_THRESHOLD;
use crate::detect::{Face, ModelPool};
use crate::frame::BBox;
use crate::privacy::Polygon;
use crate::telemetry::Event;
use crate::track::{Obs, Tracker};

/// A motion part larger than this share of the region is looked at whole.
const FOCUS_MAX_SHARE: f32 = 0.6;

/// The face detector's input sides are multiples of this (CenterFace's manifest `multiple_of`).
const DETECTOR_MULTIPLE: f32 = 32.0;

/// How a track's frames decide a fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Temporal {
    /// At least `min_hits` of the last `window` frames at ≥ `threshold`.
    #[default]
    NOfM,
    /// Seen in at least `min_hits` of the last `window` frames and the median of its no-mask
    /// probabilities there ≥ `threshold` (as Frigate scores tracked objects).
    Median,
}

/// `kind = "no_mask"`: staff without a face mask.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct NoMaskRule {
    /// Rule id (unique per camera; used in KV keys and events).
    #[default("no_mask".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// Minimum no-mask probability (from the fitted head, or the classifier's output 1) for a
    /// frame to count as a hit. Default: the operating point `vigil fit` chose for the shipped
    /// head (`models.mask_head`) by cross-validation at precision 0.95; with `mask_head = "none"`
    /// (the plain classifier) use about 0.95.
    #[default(0.8)]
    #[schemars(range(min = 0, max = 1))]
    pub threshold: f64,
    /// Face detector score threshold (CenterFace heatmap). Default: chosen with the head's
    /// operating point by cross-validation.
    #[default(0.7)]
    #[schemars(range(min = 0, max = 1))]
    pub face_threshold: f64,
    /// Faces whose box is smaller than this (shorter side, analysis-frame pixels) are ignored.
    #[default(24.0)]
    #[schemars(range(min = 0, max = 4096))]
    pub min_face_px: f64,
    /// Margin added around the face box before classification, as a fraction of its width and
    /// height on each side (0.15: 15 %). Used by the plain classifier; a fitted head uses the
    /// crop margins it was fitted on.
    #[default(0.0)]
    #[schemars(range(min = 0, max = 1))]
    pub crop_margin: f64,
    /// N of N-of-M: hits needed (at most `window`).
    #[default(3)]
    #[schemars(range(min = 1, max = 100))]
    pub min_hits: usize,
    /// M of N-of-M: the track's last frames looked at.
    #[default(5)]
    #[schemars(range(min = 1, max = 100))]
    pub window: usize,
    /// Quiet period after a fire, per camera, seconds of stream time.
    #[default(60.0)]
    #[schemars(range(min = 0, max = 86400))]
    pub cooldown_s: f64,
    /// Temporal rule: "n_of_m" or "median".
    pub temporal: Temporal,
    /// Face detector input width in pixels for the whole analysis frame (rounded up to a multiple
    /// of 32); a zone's bounding box gets the same zoom (a zone half the frame wide: half this),
    /// not this width; 0: the region's own width (no zoom). Default 960: a 640-wide analysis
    /// frame zoomed 1.5×, which finds most small faces (docs "Small faces": recall of 16–24 px
    /// faces 0.78 → 0.85, under 16 px 0.44 → 0.72) for 2.8× the detector's time there. Lower it
    /// on a camera that only sees large faces, raise it for a ceiling camera.
    #[default(960)]
    #[schemars(range(min = 0, max = 3840))]
    pub input_width: u32,
    /// A second face-detector pass on a 2×2 grid of overlapping tiles of where the detector
    /// looks, each at `input_width` (about 1.8× more zoom), its faces joined to the first pass's:
    /// recall of faces under 16 px 0.72 → 0.78, 16–24 px 0.85 → 0.88, 24–48 px 0.92 → 0.94 (docs
    /// "Small faces"), for five detector runs per inferred frame instead of one. Off by default
    /// (capacity: about a fifth of the cameras per core); for a ceiling camera with small faces.
    pub tile_pass: bool,
    /// A second face-detector pass on the heads of the persons the object detector (NanoDet,
    /// `models.objects`) finds where the detector looks: the top of each person box narrower than
    /// a quarter of the frame (up to 8), zoomed 3× (at most 320 px wide), its faces joined to the
    /// first pass's. Recall of faces under 16 px 0.72 → 0.75, 16–24 px 0.85 → 0.87 (docs "Small
    /// faces"; the tile pass gets 0.78 / 0.88) for about a third of the tile pass's added time.
    /// Off by default; loads the object detector. Turning it on by hot reload on a worker that
    /// did not load that model is refused (restart).
    pub person_pass: bool,
    /// Polygon in normalised [0,1] coordinates; a face counts when its centre is inside.
    /// Default: the whole frame.
    #[schemars(length(max = 256))]
    pub zone: Option<Vec<[f64; 2]>>,
    /// Severity written into events ("minor", "major", ...).
    #[default("minor".to_string())]
    #[schemars(length(min = 1, max = 32))]
    pub severity: String,
    /// Risk tier written into events and shown in the review queue: "immediate", "deadline" (fix
    /// by a deadline) or "routine". Default: routine (like gloves on the regional platforms: reminded and checked in the course of supervision).
    #[default(super::RiskTier::Routine)]
    pub tier: super::RiskTier,
    /// The legal basis written into events and manifests: `{ regulation = "…", article = "…" }`.
    /// Default: Food Safety Law art. 33(1)(8) (staff keep personal hygiene, wear clean work
    /// clothes); a site's regulator may name a local rule instead.
    #[default(super::LegalBasis::food_safety_law("第三十三条第一款第（八）项"))]
    pub legal_basis: super::LegalBasis,
}

impl NoMaskRule {
    pub(super) fn check(&self, p: &mut dyn FnMut(&str, String)) {
        if self.min_hits > self.window {
            p("min_hits", format!("{} must be in [1, window = {}]", self.min_hits, self.window));
        }
        if self.input_width != 0 && self.input_width < 32 {
            p("input_width", format!("{} must be 0 (the region's own width) or in [32, 3840]", self.input_width));
        }
        validate_zone(&self.id, &self.zone, p);
    }
}

/// The rule's state on one camera.
pub struct NoMask {
    pub rule: NoMaskRule,
    pub zone: Option<Polygon>,
    tracker: Tracker,
    last_fire: Option<Duration>,
    /// This frame's observations (kept to reuse its allocation).
    obs: Vec<Obs>,
    /// Per eligible face of this frame: the no-mask value kept from its track when that track
    /// has fired already (so the face is not classified again), and the faces still to classify.
    known: Vec<Option<f32>>,
    to_classify: Vec<BBox>,
    classified: Vec<f32>,
    /// The object detector's classes that are "person" (`person_pass`; filled on first use).
    person_class: Vec<bool>,
}

impl NoMask {
    pub fn new(rule: NoMaskRule) -> NoMask {
        // a face missing for up to `window` analysed frames keeps its track
        let tracker = Tracker::new(0.3, rule.window as u32, Duration::from_secs(10), rule.window);
        let zone = zone_polygon(&rule.id, &rule.zone);
        NoMask {
            rule,
            zone,
            tracker,
            last_fire: None,
            obs: Vec::new(),
            known: Vec::new(),
            to_classify: Vec::new(),
            classified: Vec::new(),
            person_class: Vec::new(),
        }
    }

    /// Hot reload: new parameters, same tracks (a track that fired stays fired).
    pub fn set_rule(&mut self, rule: NoMaskRule) {
        self.tracker.window = rule.window.max(1);
        self.tracker.max_missed = rule.window as u32;
        self.zone = zone_polygon(&rule.id, &rule.zone);
        self.rule = rule;
    }

    /// Where the face detector looks and at what input width: the whole region, or, on a frame
    /// inferred for motion ([`Look::Part`]), the moving cells and the faces tracked (see
    /// [`gate::focus`]); always at the zoom `input_width` gives the whole frame (`frame_w` wide), so
    /// a face is seen at the same size either way and a small zone is not scaled up to
    /// `input_width`.
    pub fn detector_region(&self, region: BBox, frame_w: u32, look: Look) -> (BBox, u32) {
        let iw = self.rule.input_width;
        let k = if iw == 0 { 1.0 } else { iw as f32 / frame_w.max(1) as f32 };
        let width = |w: f32| if iw == 0 { 0 } else { ((w * k).round() as u32).max(DETECTOR_MULTIPLE as u32) };
        let Look::Part { motion } = look else { return (region, width(region.w())) };
        let Some(part) = gate::focus(region, motion, self.tracker.tracks.iter().map(|t| t.bbox), FOCUS_MAX_SHARE)
        else {
            return (region, width(region.w()));
        };
        // The detector's input is a multiple of DETECTOR_MULTIPLE on each side: grow the part
        // so that at the region's zoom it is exactly that (within the region), else rounding
        // the input up would stretch a small part (a 50 px tall part at 1.5× is 75 px, read as
        // 96: faces 28 % taller than they are).
        let side = |lo: f32, hi: f32, max: f32| -> (f32, f32) {
            let want = (((hi - lo) * k / DETECTOR_MULTIPLE).ceil() * DETECTOR_MULTIPLE / k).min(max);
            let from = ((lo + hi - want) / 2.0).clamp(0.0, max - want);
            (from, from + want)
        };
        let (x1, x2) = side(part.x1 - region.x1, part.x2 - region.x1, region.w());
        let (y1, y2) = side(part.y1 - region.y1, part.y2 - region.y1, region.h());
        let part = BBox { x1: region.x1 + x1, y1: region.y1 + y1, x2: region.x1 + x2, y2: region.y1 + y2 };
        (part, width(part.w()))
    }

    /// Keeps the faces worth classifying: large enough and inside the zone.
    pub fn keep_eligible(&self, faces: &mut Vec<Face>, frame_w: u32, frame_h: u32) {
        faces.retain(|f| {
            f.bbox.w().min(f.bbox.h()) >= self.rule.min_face_px as f32
                && in_zone(self.zone.as_ref(), &f.bbox, frame_w, frame_h)
        });
    }

    /// Which of this frame's eligible `boxes` need the classifier: a face that joins a track
    /// which has fired already keeps that track's last value (a track fires once, so a new
    /// value could change nothing). Fills `known` (per box) and `to_classify`.
    fn split_known(&mut self, pts: Duration, boxes: &[BBox]) {
        self.known.clear();
        let owners = self.tracker.would_match(pts, boxes, 0);
        self.known.extend(owners.map(|t| t.filter(|t| t.fired).map(|t| t.value)));
        self.to_classify.clear();
        self.to_classify.extend(boxes.iter().zip(&self.known).filter(|(_, k)| k.is_none()).map(|(b, _)| *b));
    }

    /// Joins the classified values (in `classified`, one per face in `to_classify`) with the
    /// known ones, in the order of the boxes, into `out`.
    fn join_known(&self, out: &mut Vec<f32>) {
        let mut new = self.classified.iter();
        out.clear();
        out.extend(self.known.iter().map(|k| k.or_else(|| new.next().copied()).unwrap_or(0.0)));
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
        let (min_hits, median, thr) = (self.rule.min_hits, self.rule.temporal == Temporal::Median, self.rule.threshold);
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
        let detections = matched(&self.tracker, trigger_id, |t, d| super::Detection {
            label: "face".into(),
            no_mask_prob: Some(t.value),
            hits: Some(t.hit_count()),
            window: Some(window),
            ..d
        });
        Some(Fire { pts, detections, frames, value })
    }
}

impl Rule for NoMask {
    fn config(&self) -> RuleConfig {
        RuleConfig::NoMask(self.rule.clone())
    }

    fn zone(&self) -> Option<&Polygon> {
        self.zone.as_ref()
    }

    fn wants_every_frame(&self) -> bool {
        self.tracker.tracks.iter().any(|t| !t.fired && t.hit_count() > 0)
    }

    fn infer(&mut self, f: &FrameCtx, look: Look, models: &ModelPool, s: &mut Scratch) -> Result<Option<Fire>> {
        let frame = f.frame;
        let (w, h) = (frame.width, frame.height);
        let zone_box = super::roi(self.zone.as_ref(), w, h);
        let (region, iw) = self.detector_region(zone_box, w, look);
        let t0 = Instant::now();
        let fth = self.rule.face_threshold as f32;
        models.detect_faces(f.model_hint, frame, region, iw, fth, &mut s.faces)?;
        if self.rule.tile_pass {
            crate::detect::face::add_tile_pass(region, &mut s.faces, &mut s.more_faces, |tile, out| {
                models.detect_faces(f.model_hint, frame, tile, iw, fth, out)
            })?;
        }
        if self.rule.person_pass {
            {
                let mut set = models.get(f.model_hint);
                let o = set.objects.as_mut().context("object model not loaded (person_pass)")?;
                if self.person_class.is_empty() {
                    self.person_class = o.classes_named("person");
                }
                o.detect_in(frame, region, PERSON_PASS_THRESHOLD, &self.person_class, &mut s.objects)?;
            }
            let size = (w as f32, h as f32);
            crate::detect::face::add_person_pass(
                &mut s.objects,
                size,
                &mut s.faces,
                &mut s.more_faces,
                |r, iw, out| models.detect_faces(f.model_hint, frame, r, iw, fth, out),
            )?;
        }
        let took = t0.elapsed();
        {
            let mut set = models.get(f.model_hint);
            let m = set.no_mask.as_mut().context("no-mask models not loaded")?;
            Event::Inference { model: &m.face.info.id, took }.emit();
            self.keep_eligible(&mut s.faces, w, h);
            s.boxes.clear();
            s.boxes.extend(s.faces.iter().map(|f| f.bbox));
            self.split_known(frame.pts, &s.boxes);
            let t1 = Instant::now();
            m.mask.no_mask_prob_into(frame, &self.to_classify, self.rule.crop_margin as f32, &mut self.classified)?;
            if !self.to_classify.is_empty() {
                Event::Inference { model: &m.mask.info.id, took: t1.elapsed() }.emit();
            }
            self.join_known(&mut s.probs);
        }
        Ok(self.update(frame.pts, &s.faces, &s.probs))
    }

    fn matched_now(&self) -> usize {
        self.tracker.tracks.iter().filter(|t| t.matched).count()
    }

    fn reconfigure(&mut self, cfg: &RuleConfig) -> bool {
        let RuleConfig::NoMask(r) = cfg else { return false };
        self.set_rule(r.clone());
        true
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

    pub(crate) fn left_half() -> Vec<[f64; 2]> {
        vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
    }

    #[test]
    fn fires_once_per_track_after_n_of_m_and_respects_cooldown() {
        let mut st = NoMask::new(rule());
        let f = [face(100.0, 40.0)];
        assert!(st.update(ms(0.0), &f, &[0.9]).is_none());
        assert!(st.wants_every_frame(), "a track collecting hits wants every frame");
        assert!(st.update(ms(0.2), &f, &[0.5]).is_none()); // not a hit
        assert!(st.update(ms(0.4), &f, &[0.8]).is_none());
        let fire = st.update(ms(0.6), &f, &[0.95]).expect("3 hits of 4");
        assert_eq!(fire.detections.len(), 1);
        assert!(fire.detections[0].trigger && fire.detections[0].hits == Some(3));
        assert!(!st.wants_every_frame());
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
    fn a_face_whose_track_fired_is_not_classified_again() {
        let mut st = NoMask::new(rule());
        let f = [face(100.0, 40.0)];
        let boxes = [f[0].bbox, face(400.0, 40.0).bbox];
        st.split_known(ms(0.0), &boxes);
        assert_eq!(st.to_classify.len(), 2, "no tracks yet: both faces are classified");
        for k in 0..3 {
            st.split_known(ms(k as f64 * 0.2), &boxes[..1]);
            assert_eq!(st.to_classify.len(), 1, "a track still collecting hits is classified");
            st.update(ms(k as f64 * 0.2), &f, &[[0.8, 0.85, 0.9][k]]);
        }
        assert!(st.tracker.tracks[0].fired);
        // the fired face (moved a little) keeps its track's last value; a new face is classified
        let moved = [face(103.0, 40.0).bbox, boxes[1]];
        st.split_known(ms(0.6), &moved);
        assert_eq!(st.known, vec![Some(0.9), None]);
        assert_eq!(st.to_classify, vec![boxes[1]]);
        st.classified = vec![0.3];
        let mut probs = Vec::new();
        st.join_known(&mut probs);
        assert_eq!(probs, vec![0.9, 0.3], "values in the order of the faces");
        // the tracks are untouched by the look-ahead, and update pairs the faces the same way
        let id = st.tracker.tracks[0].id;
        assert_eq!(st.tracker.tracks.len(), 1);
        let faces = [face(103.0, 40.0), face(400.0, 40.0)];
        st.update(ms(0.6), &faces, &probs);
        assert_eq!(st.tracker.tracks.iter().find(|t| t.bbox == moved[0]).map(|t| t.id), Some(id));
    }

    #[test]
    fn median_rule_fires_on_the_median_not_on_single_frames() {
        let mut r = rule();
        r.temporal = Temporal::Median;
        let mut st = NoMask::new(r.clone());
        let f = [face(100.0, 40.0)];
        // median of 0.9, 0.2, 0.95 is 0.9 ≥ 0.7 after 3 frames: fires on the third
        assert!(st.update(ms(0.0), &f, &[0.9]).is_none());
        assert!(st.update(ms(0.2), &f, &[0.2]).is_none());
        assert!(st.update(ms(0.4), &f, &[0.95]).is_some(), "median of 0.9, 0.2, 0.95 is 0.9");
        let mut st = NoMask::new(r);
        for (k, p) in [0.99, 0.1, 0.2, 0.99, 0.3].into_iter().enumerate() {
            assert!(st.update(ms(k as f64 * 0.2), &f, &[p]).is_none(), "median stays below 0.7 at frame {k}");
        }
    }

    #[test]
    fn motion_part_keeps_the_zoom_and_covers_tracked_faces() {
        let mut st = NoMask::new(rule());
        let region = BBox { x1: 0.0, y1: 0.0, x2: 640.0, y2: 360.0 };
        // the whole region on a recheck, at the configured width
        assert_eq!(st.detector_region(region, 640, Look::Full), (region, 960));
        // motion in one corner: that part, at 960 × its share of the width (same zoom)
        let m = BBox { x1: 40.0, y1: 40.0, x2: 120.0, y2: 120.0 };
        let (part, iw) = st.detector_region(region, 640, Look::Part { motion: Some(m) });
        assert!(part.x1 <= 40.0 && part.x2 >= 120.0 && part.w() < 200.0, "{part:?}");
        // at the zoom of the whole region (1.5), and a multiple of 32 both ways: no stretching
        assert!((iw as f32 - 1.5 * part.w()).abs() < 0.5 && iw % 32 == 0, "{iw} for {part:?}");
        assert!(((1.5 * part.h()) % 32.0).min(32.0 - (1.5 * part.h()) % 32.0) < 0.01, "{part:?}");
        // a tracked face elsewhere is looked at too
        st.update(ms(0.0), &[face(500.0, 40.0)], &[0.1]);
        let (part, _) = st.detector_region(region, 640, Look::Part { motion: Some(m) });
        assert!(part.x1 <= 40.0 && part.x2 >= 540.0, "{part:?}");
        let (only_face, _) = st.detector_region(region, 640, Look::Part { motion: None });
        assert!(only_face.x1 <= 500.0 && only_face.x2 >= 540.0 && only_face.x1 > 400.0, "{only_face:?}");
        // a zone half the frame wide gets the same zoom, so half the width (not 960)
        let half = BBox { x1: 320.0, y1: 0.0, x2: 640.0, y2: 360.0 };
        assert_eq!(st.detector_region(half, 640, Look::Full), (half, 480));
        // input width 0 (the region's own) stays 0
        let mut r = rule();
        r.input_width = 0;
        assert_eq!(NoMask::new(r).detector_region(region, 640, Look::Part { motion: Some(m) }).1, 0);
    }

    #[test]
    fn small_faces_and_faces_outside_the_zone_are_ignored() {
        let mut r = rule();
        r.zone = Some(left_half());
        let st = NoMask::new(r);
        let mut kept = vec![face(10.0, 40.0), face(10.0, 10.0), face(500.0, 40.0)];
        st.keep_eligible(&mut kept, 640, 360);
        assert_eq!(kept, vec![face(10.0, 40.0)]);
        let r = super::super::roi(st.zone.as_ref(), 640, 360);
        assert_eq!((r.x1, r.x2, r.y1, r.y2), (0.0, 352.0, 0.0, 360.0), "zone bbox + 10 % margin, clamped");
        let _ = NormPoint { x: 0.0, y: 0.0 };
    }
}
