//! Tracking stage: a SORT-style tracker. Each track predicts its box forward with a smoothed
//! constant velocity; observations are matched to predictions of the same class greedily by IoU
//! (best pair first, IoU ≥ `min_iou`); unmatched observations start tracks. A track ends when it
//! has been missed in more than `max_missed` analysed frames or not seen for longer than
//! `max_gap` of stream time, so identity survives short detection gaps and skipped frames.
//! Each track keeps a window of per-frame hits (the rule decides what a hit is), so "N of the last
//! M frames" is per object, and the stream time it was first seen, so dwell is per object.

use std::collections::VecDeque;
use std::time::Duration;

use crate::frame::BBox;

/// One detection handed to the tracker.
#[derive(Debug, Clone, Copy)]
pub struct Obs {
    pub bbox: BBox,
    pub score: f32,
    /// Detector class; only observations of a track's class match it.
    pub class: u16,
    /// The rule's measurement for this detection (e.g. no-mask probability).
    pub value: f32,
    /// Whether this frame counts as a hit for the rule.
    pub hit: bool,
}

#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    pub class: u16,
    pub bbox: BBox,
    /// Box velocity in pixels per second (x1, y1, x2, y2), exponentially smoothed.
    pub velocity: [f32; 4],
    pub score: f32,
    pub value: f32,
    /// Hits over the last `window` analysed frames, newest last (a missed frame is a non-hit).
    pub hits: VecDeque<bool>,
    /// Stream times of the frames this track was seen in, within the window.
    pub seen_at: VecDeque<Duration>,
    /// The rule's measurements in those frames.
    pub values: VecDeque<f32>,
    pub first_seen: Duration,
    pub last_seen: Duration,
    /// Start of the current dwell period (rules reset it).
    pub dwell_from: Duration,
    pub missed: u32,
    /// The rule already fired for this track.
    pub fired: bool,
    /// Seen in the current frame.
    pub matched: bool,
}

impl Track {
    pub fn hit_count(&self) -> usize {
        self.hits.iter().filter(|&&h| h).count()
    }

    /// Median of the measurements in the frames it was seen in (within the window).
    pub fn median_value(&self) -> f32 {
        // on the stack: the window is at most 100 frames (config), longer histories use the last 128
        let mut buf = [0f32; 128];
        let n = self.values.len().min(buf.len());
        for (b, v) in buf.iter_mut().zip(self.values.iter().skip(self.values.len() - n)) {
            *b = *v;
        }
        let v = &mut buf[..n];
        if v.is_empty() {
            return 0.0;
        }
        v.sort_unstable_by(f32::total_cmp);
        if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
    }

    /// The box expected at `pts` (constant velocity since it was last seen).
    pub fn predict(&self, pts: Duration) -> BBox {
        let dt = pts.saturating_sub(self.last_seen).as_secs_f32();
        let v = self.velocity;
        BBox {
            x1: self.bbox.x1 + v[0] * dt,
            y1: self.bbox.y1 + v[1] * dt,
            x2: self.bbox.x2 + v[2] * dt,
            y2: self.bbox.y2 + v[3] * dt,
        }
    }
}

pub struct Tracker {
    pub tracks: Vec<Track>,
    next_id: u64,
    pub min_iou: f32,
    pub max_missed: u32,
    pub max_gap: Duration,
    pub window: usize,
    pairs: Vec<(f32, usize, usize)>,
    /// Per observation of the last pairing: its track's index.
    owner: Vec<Option<usize>>,
    /// Per track of the last pairing: paired.
    taken: Vec<bool>,
    /// Ended tracks, kept so that a new track reuses their history buffers.
    spare: Vec<Track>,
}

impl Tracker {
    pub fn new(min_iou: f32, max_missed: u32, max_gap: Duration, window: usize) -> Tracker {
        Tracker {
            tracks: Vec::new(),
            next_id: 1,
            min_iou,
            max_missed,
            max_gap,
            window: window.max(1),
            pairs: Vec::new(),
            owner: Vec::new(),
            taken: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Ends the tracks `keep` rejects (order of the others kept), saving them for reuse.
    fn end_tracks(&mut self, keep: impl Fn(&Track) -> bool) {
        let mut i = 0;
        while i < self.tracks.len() {
            if keep(&self.tracks[i]) {
                i += 1;
            } else {
                let t = self.tracks.remove(i);
                self.spare.push(t);
            }
        }
    }

    /// Pairs `n` boxes (box and class of each from `at`) with the tracks alive at `pts`, the way
    /// [`update`](Self::update) does: all pairs of one class with IoU ≥ `min_iou` against the
    /// track's prediction or last box, best first, each box and track once. Fills `owner` (per
    /// box: the index of its track) and `taken` (per track).
    fn pair_up(&mut self, pts: Duration, n: usize, at: impl Fn(usize) -> (BBox, u16)) {
        let max_gap = self.max_gap;
        self.pairs.clear();
        for oi in 0..n {
            let (b, class) = at(oi);
            for (ti, t) in self.tracks.iter().enumerate() {
                if t.class != class || pts.saturating_sub(t.last_seen) > max_gap {
                    continue;
                }
                let iou = b.iou(&t.predict(pts)).max(b.iou(&t.bbox));
                if iou >= self.min_iou {
                    self.pairs.push((iou, oi, ti));
                }
            }
        }
        self.pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        self.owner.clear();
        self.owner.resize(n, None);
        self.taken.clear();
        self.taken.resize(self.tracks.len(), false);
        for &(_, oi, ti) in &self.pairs {
            if self.owner[oi].is_none() && !self.taken[ti] {
                self.owner[oi] = Some(ti);
                self.taken[ti] = true;
            }
        }
    }

    /// The track each of `boxes` (of `class`) would join if they were the observations of the
    /// frame at `pts` (`None`: a new track), without changing any track: a rule can skip work for
    /// boxes of tracks it is done with before it measures them.
    pub fn would_match(
        &mut self,
        pts: Duration,
        boxes: &[BBox],
        class: u16,
    ) -> impl ExactSizeIterator<Item = Option<&Track>> + '_ {
        self.pair_up(pts, boxes.len(), |i| (boxes[i], class));
        let tracks = &self.tracks;
        self.owner.iter().map(move |o| o.map(|ti| &tracks[ti]))
    }

    pub fn update(&mut self, pts: Duration, obs: &[Obs]) {
        let max_gap = self.max_gap;
        self.end_tracks(|t| pts.saturating_sub(t.last_seen) <= max_gap);
        for t in &mut self.tracks {
            t.matched = false;
        }
        self.pair_up(pts, obs.len(), |i| (obs[i].bbox, obs[i].class));
        for (oi, o) in obs.iter().enumerate() {
            let Some(ti) = self.owner[oi] else { continue };
            let t = &mut self.tracks[ti];
            let dt = pts.saturating_sub(t.last_seen).as_secs_f32();
            if dt > 0.0 {
                let d = [o.bbox.x1 - t.bbox.x1, o.bbox.y1 - t.bbox.y1, o.bbox.x2 - t.bbox.x2, o.bbox.y2 - t.bbox.y2];
                for (v, d) in t.velocity.iter_mut().zip(d) {
                    *v = 0.5 * *v + 0.5 * d / dt;
                }
            }
            t.matched = true;
            t.bbox = o.bbox;
            t.score = o.score;
            t.value = o.value;
            t.missed = 0;
            t.last_seen = pts;
            t.hits.push_back(o.hit);
            t.seen_at.push_back(pts);
            t.values.push_back(o.value);
        }
        let window = self.window;
        for t in &mut self.tracks {
            if !t.matched {
                t.missed += 1;
                t.hits.push_back(false);
            }
            while t.hits.len() > window {
                t.hits.pop_front();
            }
            while t.seen_at.len() > window {
                t.seen_at.pop_front();
                t.values.pop_front();
            }
        }
        let max_missed = self.max_missed;
        self.end_tracks(|t| t.missed <= max_missed);
        for (oi, o) in obs.iter().enumerate() {
            if self.owner[oi].is_none() {
                let (mut hits, mut seen_at, mut values) = match self.spare.pop() {
                    Some(t) => (t.hits, t.seen_at, t.values),
                    None => (VecDeque::new(), VecDeque::new(), VecDeque::new()),
                };
                hits.clear();
                seen_at.clear();
                values.clear();
                hits.push_back(o.hit);
                seen_at.push_back(pts);
                values.push_back(o.value);
                self.tracks.push(Track {
                    id: self.next_id,
                    class: o.class,
                    bbox: o.bbox,
                    velocity: [0.0; 4],
                    score: o.score,
                    value: o.value,
                    hits,
                    seen_at,
                    values,
                    first_seen: pts,
                    last_seen: pts,
                    dwell_from: pts,
                    missed: 0,
                    fired: false,
                    matched: true,
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
        Obs { bbox: BBox { x1: x, y1: 0.0, x2: x + 10.0, y2: 10.0 }, score: 0.9, class: 0, value: 0.8, hit }
    }

    fn s(t: f64) -> Duration {
        Duration::from_secs_f64(t)
    }

    #[test]
    fn identity_is_kept_across_small_moves_and_short_gaps() {
        let mut t = Tracker::new(0.3, 2, Duration::MAX, 5);
        t.update(s(0.0), &[ob(0.0, true), ob(100.0, false)]);
        let ids: Vec<u64> = t.tracks.iter().map(|t| t.id).collect();
        t.update(s(0.2), &[ob(2.0, true)]);
        t.update(s(0.4), &[ob(4.0, true)]);
        t.update(s(0.6), &[ob(101.0, false)]); // second object back after a 2-frame gap
        assert_eq!(t.tracks.iter().map(|t| t.id).collect::<Vec<_>>(), ids);
        let first = t.tracks.iter().find(|t| t.id == ids[0]).unwrap();
        assert_eq!(first.hit_count(), 3);
        assert_eq!(first.hits.len(), 4);
        assert_eq!(first.first_seen, s(0.0));
        for k in 0..3 {
            t.update(s(0.8 + k as f64 * 0.2), &[]);
        }
        assert!(t.tracks.is_empty());
        t.update(s(2.0), &[ob(0.0, true)]);
        assert_eq!(t.tracks[0].id, 3, "a new object gets a new id");
    }

    #[test]
    fn a_fast_mover_is_followed_by_its_prediction_and_classes_do_not_mix() {
        let mut t = Tracker::new(0.3, 3, Duration::MAX, 5);
        // 5 px per frame on a 10 px box, then 9 px per frame: IoU of the last box with the new one
        // is then 0.05, with the prediction 0.4
        for (k, x) in [0.0, 5.0, 10.0, 15.0, 20.0, 29.0, 38.0, 47.0].into_iter().enumerate() {
            t.update(s(k as f64 * 0.2), &[ob(x, true)]);
        }
        assert_eq!(t.tracks.len(), 1, "one identity for the mover");
        let mut other = ob(40.0, true);
        other.class = 7;
        t.update(s(1.2), &[other]);
        assert_eq!(t.tracks.len(), 2, "another class starts its own track");
    }

    #[test]
    fn time_gap_ends_tracks_when_frames_are_skipped() {
        let mut t = Tracker::new(0.3, u32::MAX, s(3.0), 5);
        t.update(s(0.0), &[ob(0.0, true)]);
        t.update(s(2.5), &[ob(0.0, true)]);
        assert_eq!(t.tracks[0].id, 1, "seen again within max_gap: same object");
        t.update(s(6.0), &[ob(0.0, true)]);
        assert_eq!(t.tracks.len(), 1);
        assert_eq!(t.tracks[0].id, 2, "gap longer than max_gap: a new object");
    }
}
