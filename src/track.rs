//! Tracking stage: a greedy IoU tracker. Each observation is matched to the live track it overlaps
//! most (IoU ≥ `min_iou`); unmatched observations start tracks; a track missed for more than
//! `max_missed` analysed frames ends. Each track keeps a window of per-frame hits (the rule decides
//! what a hit is), so "N of the last M frames" is per object.

use std::collections::VecDeque;

use crate::frame::BBox;

/// One detection handed to the tracker.
#[derive(Debug, Clone, Copy)]
pub struct Obs {
    pub bbox: BBox,
    pub score: f32,
    /// The rule's measurement for this detection (e.g. no-mask probability).
    pub value: f32,
    /// Whether this frame counts as a hit for the rule.
    pub hit: bool,
}

#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    pub bbox: BBox,
    pub score: f32,
    pub value: f32,
    /// Hits over the last `window` analysed frames, newest last (a missed frame is a non-hit).
    pub hits: VecDeque<bool>,
    pub missed: u32,
    /// The rule already fired for this track.
    pub fired: bool,
    /// Seen in the current frame.
    pub matched: bool,
    /// Stream times of the frames this track was seen in, within the window.
    pub seen_at: VecDeque<std::time::Duration>,
}

impl Track {
    pub fn hit_count(&self) -> usize {
        self.hits.iter().filter(|&&h| h).count()
    }
}

pub struct IouTracker {
    pub tracks: Vec<Track>,
    next_id: u64,
    min_iou: f32,
    max_missed: u32,
    window: usize,
}

impl IouTracker {
    pub fn new(min_iou: f32, max_missed: u32, window: usize) -> IouTracker {
        IouTracker { tracks: Vec::new(), next_id: 1, min_iou, max_missed, window: window.max(1) }
    }

    pub fn update(&mut self, pts: std::time::Duration, obs: &[Obs]) {
        for t in &mut self.tracks {
            t.matched = false;
        }
        // all candidate pairs, best IoU first
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (oi, o) in obs.iter().enumerate() {
            for (ti, t) in self.tracks.iter().enumerate() {
                let iou = o.bbox.iou(&t.bbox);
                if iou >= self.min_iou {
                    pairs.push((iou, oi, ti));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut used = vec![false; obs.len()];
        for (_, oi, ti) in pairs {
            if used[oi] || self.tracks[ti].matched {
                continue;
            }
            used[oi] = true;
            let t = &mut self.tracks[ti];
            let o = &obs[oi];
            t.matched = true;
            t.bbox = o.bbox;
            t.score = o.score;
            t.value = o.value;
            t.missed = 0;
            t.hits.push_back(o.hit);
            t.seen_at.push_back(pts);
        }
        for t in &mut self.tracks {
            if !t.matched {
                t.missed += 1;
                t.hits.push_back(false);
            }
            while t.hits.len() > self.window {
                t.hits.pop_front();
            }
            let window = self.window;
            while t.seen_at.len() > window {
                t.seen_at.pop_front();
            }
        }
        let max_missed = self.max_missed;
        self.tracks.retain(|t| t.missed <= max_missed);
        for (oi, o) in obs.iter().enumerate() {
            if !used[oi] {
                self.tracks.push(Track {
                    id: self.next_id,
                    bbox: o.bbox,
                    score: o.score,
                    value: o.value,
                    hits: VecDeque::from([o.hit]),
                    missed: 0,
                    fired: false,
                    matched: true,
                    seen_at: VecDeque::from([pts]),
                });
                self.next_id += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ob(x: f32, hit: bool) -> Obs {
        Obs { bbox: BBox { x1: x, y1: 0.0, x2: x + 10.0, y2: 10.0 }, score: 0.9, value: 0.8, hit }
    }

    #[test]
    fn identity_is_kept_across_small_moves_and_short_gaps() {
        let mut t = IouTracker::new(0.3, 2, 5);
        t.update(std::time::Duration::ZERO, &[ob(0.0, true), ob(100.0, false)]);
        let ids: Vec<u64> = t.tracks.iter().map(|t| t.id).collect();
        t.update(std::time::Duration::ZERO, &[ob(2.0, true)]);
        t.update(std::time::Duration::ZERO, &[ob(4.0, true)]);
        t.update(std::time::Duration::ZERO, &[ob(101.0, false)]); // second object back after a 2-frame gap
        assert_eq!(t.tracks.iter().map(|t| t.id).collect::<Vec<_>>(), ids);
        let first = t.tracks.iter().find(|t| t.id == ids[0]).unwrap();
        assert_eq!(first.hit_count(), 3);
        assert_eq!(first.hits.len(), 4);
        for _ in 0..3 {
            t.update(std::time::Duration::ZERO, &[]);
        }
        assert!(t.tracks.is_empty());
        t.update(std::time::Duration::ZERO, &[ob(0.0, true)]);
        assert_eq!(t.tracks[0].id, 3, "a new object gets a new id");
    }
}
