//! Motion gating of a rule's inference.

use crate::frame::{BBox, RgbFrame};

/// Motion gating (as Frigate does): a 32×18 grey thumbnail of the rule's region is compared with
/// the one at the last inferred frame; inference runs when some cell changed by at least
/// `min_change` grey levels, when `recheck` has passed since the last inference (still objects
/// stay tracked), or when the caller forces it.
pub struct MotionGate {
    /// Off: every frame is inferred (and no thumbnail is computed).
    pub enabled: bool,
    pub min_change: f32,
    pub recheck: std::time::Duration,
    reference: Vec<f32>,
    current: Vec<f32>,
    last: Option<std::time::Duration>,
}

impl MotionGate {
    pub const W: usize = 32;
    pub const H: usize = 18;

    pub fn new(min_change: f32, recheck: std::time::Duration) -> MotionGate {
        MotionGate {
            enabled: true,
            min_change,
            recheck,
            reference: Vec::new(),
            current: vec![0.0; Self::W * Self::H],
            last: None,
        }
    }

    /// Whether to run inference on this frame (and if so, it becomes the new reference).
    pub fn should_infer(&mut self, frame: &RgbFrame, roi: BBox, force: bool) -> bool {
        if !self.enabled {
            return true;
        }
        let cur = &mut self.current;
        frame.sample_bilinear(roi, Self::W, Self::H, |i, px| cur[i] = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]);
        let changed = self.reference.len() != self.current.len()
            || self.reference.iter().zip(&self.current).any(|(a, b)| (a - b).abs() >= self.min_change);
        let due = self.last.is_none_or(|t| frame.pts.saturating_sub(t) >= self.recheck);
        let infer = force || changed || due;
        if infer {
            std::mem::swap(&mut self.reference, &mut self.current);
            if self.current.len() != self.reference.len() {
                self.current.resize(self.reference.len(), 0.0);
            }
            self.last = Some(frame.pts);
        }
        infer
    }
}
