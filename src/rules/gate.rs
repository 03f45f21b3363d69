//! Motion gating of a rule's inference, and the motion box a rule may restrict it to.

use crate::frame::{BBox, RgbFrame};

/// What the gate decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Look {
    /// Nothing changed and nothing is due: no inference.
    Skip,
    /// Infer on the whole region (gating off, the first frame, or the recheck is due).
    Full,
    /// Infer where it matters: `motion` is the bounding box of the thumbnail cells that changed
    /// (grown by two cells, in frame pixels; `None` when the rule forced the frame and nothing
    /// moved). A rule that can look at part of its region adds the boxes it tracks; one that
    /// cannot treats this as [`Look::Full`].
    Part { motion: Option<BBox> },
}

/// Motion gating (as Frigate does): a 32×18 grey thumbnail of the rule's region is compared with
/// the one at the last inferred frame; inference runs when some cell changed by at least
/// `min_change` grey levels, when `recheck` has passed since the last inference (still objects
/// stay tracked), or when the caller forces it. With `regions`, a frame inferred because something
/// moved (or forced) is a [`Look::Part`] naming where; the recheck is always [`Look::Full`].
pub struct MotionGate {
    /// Off: every frame is inferred in full (and no thumbnail is computed).
    pub enabled: bool,
    /// Hand the changed cells on ([`Look::Part`]) instead of asking for the whole region.
    pub regions: bool,
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
            regions: false,
            min_change,
            recheck,
            reference: Vec::new(),
            current: vec![0.0; Self::W * Self::H],
            last: None,
        }
    }

    /// Whether to run inference on this frame, and on what (when it runs, this frame becomes
    /// the new reference).
    pub fn look(&mut self, frame: &RgbFrame, roi: BBox, force: bool) -> Look {
        if !self.enabled {
            return Look::Full;
        }
        let cur = &mut self.current;
        frame.sample_bilinear(roi, Self::W, Self::H, |i, px| cur[i] = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]);
        let first = self.reference.len() != self.current.len();
        // the changed cells' bounding box, in cells
        let mut cells: Option<(usize, usize, usize, usize)> = None;
        if !first {
            for (i, (a, b)) in self.reference.iter().zip(&self.current).enumerate() {
                if (a - b).abs() >= self.min_change {
                    let (x, y) = (i % Self::W, i / Self::W);
                    cells = Some(match cells {
                        None => (x, y, x, y),
                        Some((x1, y1, x2, y2)) => (x1.min(x), y1.min(y), x2.max(x), y2.max(y)),
                    });
                }
            }
        }
        let due = self.last.is_none_or(|t| frame.pts.saturating_sub(t) >= self.recheck);
        let look = if !(first || due || force || cells.is_some()) {
            Look::Skip
        } else if first || due || !self.regions {
            Look::Full
        } else {
            Look::Part { motion: cells.map(|c| Self::cells_to_px(c, roi)) }
        };
        if look != Look::Skip {
            std::mem::swap(&mut self.reference, &mut self.current);
            if self.current.len() != self.reference.len() {
                self.current.resize(self.reference.len(), 0.0);
            }
            self.last = Some(frame.pts);
        }
        look
    }

    /// Cells (x1, y1, x2, y2 inclusive) grown by [`Self::GROW`] cells on each side, in frame
    /// pixels.
    fn cells_to_px((x1, y1, x2, y2): (usize, usize, usize, usize), roi: BBox) -> BBox {
        let (cw, ch) = (roi.w() / Self::W as f32, roi.h() / Self::H as f32);
        BBox {
            x1: roi.x1 + x1.saturating_sub(Self::GROW) as f32 * cw,
            y1: roi.y1 + y1.saturating_sub(Self::GROW) as f32 * ch,
            x2: roi.x1 + (x2 + 1 + Self::GROW).min(Self::W) as f32 * cw,
            y2: roi.y1 + (y2 + 1 + Self::GROW).min(Self::H) as f32 * ch,
        }
    }

    /// Cells the motion box is grown by on each side: a face moves less than the body under it
    /// (its cells may not change), so the part reaches past what changed.
    const GROW: usize = 2;
}

/// Where a rule that can look at part of its region runs its detector: the motion box and the
/// boxes it tracks (each grown by its size on every side, for the movement since), snapped
/// outwards to the region's thumbnail grid (so the same few shapes recur), within the region.
/// `None` (look at the whole region) when that is most of the region anyway (`max_share` of its
/// area or more: the whole region costs about the same and sees more), or when there is nothing
/// to look at.
pub fn focus(region: BBox, motion: Option<BBox>, tracked: impl Iterator<Item = BBox>, max_share: f32) -> Option<BBox> {
    let mut u: Option<BBox> = motion;
    for b in tracked {
        let g = BBox { x1: b.x1 - b.w(), y1: b.y1 - b.h(), x2: b.x2 + b.w(), y2: b.y2 + b.h() };
        u = Some(match u {
            None => g,
            Some(a) => BBox { x1: a.x1.min(g.x1), y1: a.y1.min(g.y1), x2: a.x2.max(g.x2), y2: a.y2.max(g.y2) },
        });
    }
    let u = u?;
    let (cw, ch) = (region.w() / MotionGate::W as f32, region.h() / MotionGate::H as f32);
    let snap = |v: f32, o: f32, c: f32, up: bool| {
        let k = (v - o) / c;
        o + if up { k.ceil() } else { k.floor() } * c
    };
    let b = BBox {
        x1: snap(u.x1, region.x1, cw, false).max(region.x1),
        y1: snap(u.y1, region.y1, ch, false).max(region.y1),
        x2: snap(u.x2, region.x1, cw, true).min(region.x2),
        y2: snap(u.y2, region.y1, ch, true).min(region.y2),
    };
    if b.w() <= 0.0 || b.h() <= 0.0 || b.area() >= max_share * region.area() {
        return None;
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(pts_ms: u64, square: Option<(usize, usize)>) -> RgbFrame {
        let (w, h) = (320u32, 180u32);
        let mut data = vec![100u8; (w * h * 3) as usize];
        if let Some((sx, sy)) = square {
            for y in sy..sy + 20 {
                for x in sx..sx + 20 {
                    let i = (y * w as usize + x) * 3;
                    data[i..i + 3].copy_from_slice(&[250, 250, 250]);
                }
            }
        }
        RgbFrame { width: w, height: h, pts: Duration::from_millis(pts_ms), data }
    }

    fn whole() -> BBox {
        BBox { x1: 0.0, y1: 0.0, x2: 320.0, y2: 180.0 }
    }

    #[test]
    fn regions_name_where_it_moved_and_the_recheck_is_full() {
        let mut g = MotionGate::new(12.0, Duration::from_secs(2));
        g.regions = true;
        assert_eq!(g.look(&frame(0, None), whole(), false), Look::Full, "first frame");
        assert_eq!(g.look(&frame(200, None), whole(), false), Look::Skip, "nothing moved");
        let Look::Part { motion: Some(m) } = g.look(&frame(400, Some((200, 100))), whole(), false) else {
            panic!("a square appeared: part")
        };
        // the square (200..220, 100..120) lies inside the box, which is a few cells around it
        assert!(m.x1 <= 200.0 && m.y1 <= 100.0 && m.x2 >= 220.0 && m.y2 >= 120.0, "{m:?}");
        assert!(m.area() < 0.1 * whole().area(), "{m:?} is small");
        assert_eq!(g.look(&frame(600, Some((200, 100))), whole(), true), Look::Part { motion: None }, "forced, still");
        assert_eq!(g.look(&frame(2700, Some((200, 100))), whole(), false), Look::Full, "recheck due");
        // without regions a change asks for the whole region
        let mut g = MotionGate::new(12.0, Duration::from_secs(2));
        g.look(&frame(0, None), whole(), false);
        assert_eq!(g.look(&frame(200, Some((10, 10))), whole(), false), Look::Full);
        assert_eq!(g.look(&frame(400, Some((10, 10))), whole(), true), Look::Full, "forced");
        assert_eq!(g.look(&frame(600, Some((10, 10))), whole(), false), Look::Skip);
    }

    #[test]
    fn focus_covers_motion_and_tracks_snapped_to_cells_or_gives_up_when_large() {
        let r = whole();
        let m = BBox { x1: 195.0, y1: 95.0, x2: 225.0, y2: 125.0 };
        let t = BBox { x1: 20.0, y1: 20.0, x2: 40.0, y2: 40.0 };
        let f = focus(r, Some(m), [t].into_iter(), 0.6).expect("a part");
        assert!(f.x1 <= 10.0 && f.y1 <= 10.0 && f.x2 >= 225.0 && f.y2 >= 125.0, "{f:?}");
        let cw = 320.0 / 32.0;
        assert_eq!((f.x1 / cw).fract(), 0.0, "snapped to the grid");
        assert!(focus(r, Some(m), std::iter::empty(), 0.6).is_some());
        assert!(focus(r, Some(BBox { x1: 0.0, y1: 0.0, x2: 300.0, y2: 170.0 }), std::iter::empty(), 0.6).is_none());
        assert!(focus(r, None, std::iter::empty(), 0.6).is_none(), "nothing to look at");
    }
}
