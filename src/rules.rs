//! Rules stage: turns tracked detections into violations. Mechanism (tracking, N-of-M windows,
//! cooldowns) is shared; each rule is policy over it.
//!
//! `no_mask` (defaults in `config::NoMaskRule`): a face counts when its box's shorter side is at
//! least `min_face_px` and its centre lies in the zone; a frame is a *hit* for a face's track when
//! its no-mask probability ≥ `threshold`. A track with ≥ `min_hits` hits in its last `window`
//! analysed frames fires, once per track; after a fire the rule is quiet on that camera for
//! `cooldown_s` of stream time (a track that meets the condition during the cooldown fires when it
//! ends, if it still meets it).

use std::time::Duration;

use crate::config::NoMaskRule;
use crate::detect::Face;
use crate::frame::BBox;
use crate::privacy::Polygon;
use crate::track::{IouTracker, Obs};

/// One face in a violation, as reported in the event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackedFace {
    pub track_id: u64,
    /// Box in pixels: of the analysis frame in the rule, of the clip in events.
    #[serde(rename = "box")]
    pub bbox: BBox,
    pub face_score: f32,
    pub no_mask_prob: f32,
    pub hits: usize,
    pub window: usize,
    /// The face that triggered the violation (others are context).
    pub trigger: bool,
}

#[derive(Debug, Clone)]
pub struct Fire {
    pub rule_id: String,
    pub pts: Duration,
    pub faces: Vec<TrackedFace>,
    /// Stream times of the frames in which the triggering face was seen (its window).
    pub frames: Vec<Duration>,
}

pub struct NoMaskState {
    pub rule: NoMaskRule,
    zone: Option<Polygon>,
    tracker: IouTracker,
    last_fire: Option<Duration>,
}

impl NoMaskState {
    pub fn new(rule: NoMaskRule, zone: Option<Polygon>) -> NoMaskState {
        // a face missing for up to `window` frames keeps its track
        let tracker = IouTracker::new(0.3, rule.window as u32, rule.window);
        NoMaskState { rule, zone, tracker, last_fire: None }
    }

    /// Faces worth classifying: large enough and inside the zone.
    pub fn eligible(&self, faces: &[Face], frame_w: u32, frame_h: u32) -> Vec<Face> {
        faces
            .iter()
            .filter(|f| f.bbox.w().min(f.bbox.h()) >= self.rule.min_face_px)
            .filter(|f| {
                let (cx, cy) = f.bbox.center();
                self.zone
                    .as_ref()
                    .is_none_or(|z| z.contains((cx / frame_w as f32) as f64, (cy / frame_h as f32) as f64))
            })
            .copied()
            .collect()
    }

    /// Feeds one analysed frame: eligible faces and their no-mask probabilities.
    pub fn update(&mut self, pts: Duration, faces: &[Face], no_mask: &[f32]) -> Option<Fire> {
        let obs: Vec<Obs> = faces
            .iter()
            .zip(no_mask)
            .map(|(f, &p)| Obs { bbox: f.bbox, score: f.score, value: p, hit: p >= self.rule.threshold })
            .collect();
        self.tracker.update(pts, &obs);
        let cooling =
            self.last_fire.is_some_and(|t| pts.saturating_sub(t) < Duration::from_secs_f64(self.rule.cooldown_s));
        if cooling {
            return None;
        }
        let min_hits = self.rule.min_hits;
        let trigger = self
            .tracker
            .tracks
            .iter_mut()
            .filter(|t| t.matched && !t.fired && t.hit_count() >= min_hits)
            .max_by(|a, b| a.value.total_cmp(&b.value))?;
        trigger.fired = true;
        let trigger_id = trigger.id;
        let frames: Vec<Duration> = trigger.seen_at.iter().copied().collect();
        self.last_fire = Some(pts);
        let window = self.rule.window;
        let faces = self
            .tracker
            .tracks
            .iter()
            .filter(|t| t.matched)
            .map(|t| TrackedFace {
                track_id: t.id,
                bbox: t.bbox,
                face_score: t.score,
                no_mask_prob: t.value,
                hits: t.hit_count(),
                window,
                trigger: t.id == trigger_id,
            })
            .collect();
        Some(Fire { rule_id: self.rule.id.clone(), pts, faces, frames })
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

    #[test]
    fn fires_once_per_track_after_n_of_m_and_respects_cooldown() {
        let mut st = NoMaskState::new(rule(), None);
        let f = [face(100.0, 40.0)];
        assert!(st.update(ms(0.0), &f, &[0.9]).is_none());
        assert!(st.update(ms(0.2), &f, &[0.5]).is_none()); // not a hit
        assert!(st.update(ms(0.4), &f, &[0.8]).is_none());
        let fire = st.update(ms(0.6), &f, &[0.95]).expect("3 hits of 4");
        assert_eq!(fire.faces.len(), 1);
        assert!(fire.faces[0].trigger && fire.faces[0].hits == 3);
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
    fn small_faces_and_faces_outside_the_zone_are_ignored() {
        let zone = Polygon {
            name: "z".into(),
            points: vec![
                NormPoint { x: 0.0, y: 0.0 },
                NormPoint { x: 0.5, y: 0.0 },
                NormPoint { x: 0.5, y: 1.0 },
                NormPoint { x: 0.0, y: 1.0 },
            ],
        };
        let st = NoMaskState::new(rule(), Some(zone));
        let kept = st.eligible(&[face(10.0, 40.0), face(10.0, 10.0), face(500.0, 40.0)], 640, 360);
        assert_eq!(kept, vec![face(10.0, 40.0)]);
    }
}
