//! Health stage: camera tamper and failure detection on analysis frames (JS 18: no one may cover,
//! move or switch off the devices; JS 28: footage from equipment not working normally is
//! inadmissible).
//!
//! Per frame, from a 64×36 grey thumbnail and a 160×90 grey image:
//! - **frozen**: the picture does not change at all (mean absolute thumbnail difference below
//!   `frozen_diff`) for `frozen_s`;
//! - **covered**: dark and flat (mean luma < `dark_luma`, standard deviation < `flat_std`) — a lens
//!   covered or a black picture;
//! - **saturated**: bright and flat (mean luma > `bright_luma`, std < `flat_std`) — blinded lens;
//! - **defocus**: sharpness (variance of the Laplacian) below `defocus_ratio` × the camera's own
//!   baseline, learnt while the camera is healthy;
//! - **moved**: the view no longer matches the camera's reference view (normalised cross-correlation
//!   of thumbnails below `moved_ncc`); the reference is the mean of the first `reference_s` seconds.
//!
//! A condition must hold for `hold_s` before it is raised and clear for `hold_s` before it ends,
//! so single odd frames raise nothing. Stream down/up is detected by ingest. Every change is a
//! [`crate::telemetry::Event::Health`] (log, metric, `vigil.health.<site>.<camera>` event) and a
//! mark in the camera's ring buffer, from which evidence manifests record health over their window.

use std::time::Duration;

use serde::Deserialize;

use crate::frame::{BBox, RgbFrame};
use crate::telemetry::Condition;

/// `[cameras.tamper]` thresholds.
#[derive(
    Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, schemars::JsonSchema, smart_default::SmartDefault,
)]
#[serde(default, deny_unknown_fields)]
pub struct TamperConfig {
    /// Detection on/off.
    #[default(true)]
    pub enabled: bool,
    /// Seconds a condition must hold before it is raised, and be gone before it ends.
    #[default(2.0)]
    #[schemars(range(min = 0, max = 600))]
    pub hold_s: f64,
    /// Seconds without any change for "frozen".
    #[default(3.0)]
    #[schemars(range(min = 0.1, max = 3600))]
    pub frozen_s: f64,
    /// Mean absolute thumbnail difference (grey levels) below which two frames are "the same"
    /// (in effect identical; real static scenes measured ≥ 0.012).
    #[default(0.005)]
    #[schemars(range(min = 0, max = 255))]
    pub frozen_diff: f32,
    /// Mean luma below which a flat picture is "covered".
    #[default(25.0)]
    #[schemars(range(min = 0, max = 255))]
    pub dark_luma: f32,
    /// Mean luma above which a flat picture is "saturated".
    #[default(235.0)]
    #[schemars(range(min = 0, max = 255))]
    pub bright_luma: f32,
    /// Luma standard deviation below which a picture is flat.
    #[default(12.0)]
    #[schemars(range(min = 0, max = 128))]
    pub flat_std: f32,
    /// Sharpness below this fraction of the baseline is "defocus".
    #[default(0.3)]
    #[schemars(range(min = 0, max = 1))]
    pub defocus_ratio: f32,
    /// Correlation with the reference view below which the camera "moved" (untouched fixed
    /// cameras measured ≥ 0.685 with people walking through, a 25 % shift ≤ 0.58; -1 turns it
    /// off, for a camera that pans).
    #[default(0.6)]
    #[schemars(range(min = -1, max = 1))]
    pub moved_ncc: f32,
    /// Seconds of healthy video that make the reference view and the sharpness baseline.
    #[default(5.0)]
    #[schemars(range(min = 0.5, max = 600))]
    pub reference_s: f64,
}

/// What one frame looks like to the detectors.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measure {
    pub thumb: Vec<f32>,
    pub mean: f32,
    pub std: f32,
    pub sharpness: f32,
}

/// Sharpness samples kept while learning the baseline (its median); enough for 25 s at 10 fps.
const SHARP_SAMPLES: usize = 256;
const TW: usize = 64;
const TH: usize = 36;
const SW: usize = 160;
const SH: usize = 90;

/// Measures frame after frame in buffers it keeps, so that measuring allocates nothing after
/// the first frame.
#[derive(Debug, Default)]
pub struct Measurer {
    measure: Measure,
    sharp: Vec<f32>,
}

/// Grey levels of `frame` at `w`×`h`, each the mean of a 4×4 grid of bilinear samples (an area
/// average), summed as they are sampled: no supersampled picture is kept (at the sharpness
/// size that was 640×360 floats, 0.9 MB per camera).
fn grey_into(frame: &RgbFrame, w: usize, h: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(w * h, 0.0);
    let full = BBox { x1: 0.0, y1: 0.0, x2: frame.width as f32, y2: frame.height as f32 };
    let sw = w * 4;
    // the samples come row by row, left to right
    let (mut x, mut y) = (0usize, 0usize);
    frame.sample_bilinear(full, sw, h * 4, |_, p| {
        out[(y / 4) * w + x / 4] += crate::frame::luma(p);
        x += 1;
        if x == sw {
            (x, y) = (0, y + 1);
        }
    });
    for v in out.iter_mut() {
        *v /= 16.0;
    }
}

pub fn measure(frame: &RgbFrame) -> Measure {
    Measurer::default().measure(frame).clone()
}

impl Measurer {
    /// What `frame` looks like to the detectors (valid until the next call).
    pub fn measure(&mut self, frame: &RgbFrame) -> &Measure {
        let m = &mut self.measure;
        grey_into(frame, TW, TH, &mut m.thumb);
        let thumb = &m.thumb;
        let n = thumb.len() as f32;
        let mean = thumb.iter().sum::<f32>() / n;
        let std = (thumb.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt();
        grey_into(frame, SW, SH, &mut self.sharp);
        let g = &self.sharp;
        // variance of the Laplacian, in one pass (sum and sum of squares)
        let (mut sum, mut sq, mut n_lap) = (0f64, 0f64, 0f64);
        for y in 1..SH - 1 {
            for x in 1..SW - 1 {
                let c = g[y * SW + x];
                let l = (g[(y - 1) * SW + x] + g[(y + 1) * SW + x] + g[y * SW + x - 1] + g[y * SW + x + 1] - 4.0 * c)
                    as f64;
                sum += l;
                sq += l * l;
                n_lap += 1.0;
            }
        }
        let lm = sum / n_lap;
        (m.mean, m.std, m.sharpness) = (mean, std, (sq / n_lap - lm * lm).max(0.0) as f32);
        m
    }
}

fn ncc(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() as f32;
    let (ma, mb) = (a.iter().sum::<f32>() / n, b.iter().sum::<f32>() / n);
    let (mut num, mut da, mut db) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        num += (x - ma) * (y - mb);
        da += (x - ma) * (x - ma);
        db += (y - mb) * (y - mb);
    }
    if da <= 1e-6 || db <= 1e-6 { 0.0 } else { num / (da * db).sqrt() }
}

/// The conditions this detector decides (stream down is ingest's, spool full the spool's).
pub const CONDITIONS: [Condition; 5] =
    [Condition::Frozen, Condition::Covered, Condition::Saturated, Condition::Defocus, Condition::Moved];

/// A change of a condition, for the caller to emit.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub condition: Condition,
    pub active: bool,
    pub at: Duration,
    /// When ending: how long it lasted.
    pub lasted: Option<Duration>,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
struct Cond {
    active: bool,
    since: Option<Duration>,
    /// First frame of the current run of frames that disagree with `active`.
    pending: Option<Duration>,
}

/// Per-camera detector state.
pub struct TamperDetector {
    cfg: TamperConfig,
    conds: [Cond; 5],
    prev: Option<Vec<f32>>,
    still_since: Option<Duration>,
    reference: Option<Vec<f32>>,
    /// Sum of the thumbnails seen while learning the reference, and how many.
    learning: (Vec<f32>, u32),
    learn_start: Option<Duration>,
    sharp_base: Option<f32>,
    sharp_learn: Vec<f32>,
}

impl TamperDetector {
    pub fn new(cfg: TamperConfig) -> TamperDetector {
        TamperDetector {
            cfg,
            conds: Default::default(),
            prev: None,
            still_since: None,
            reference: None,
            learning: (Vec::new(), 0),
            learn_start: None,
            sharp_base: None,
            sharp_learn: Vec::with_capacity(SHARP_SAMPLES),
        }
    }

    pub fn active(&self) -> Vec<Condition> {
        CONDITIONS.iter().zip(&self.conds).filter(|(_, c)| c.active).map(|(n, _)| *n).collect()
    }

    /// Feeds one analysis frame at stream time `t`; returns the conditions that started or ended.
    pub fn update(&mut self, t: Duration, m: &Measure) -> Vec<Change> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        let diff = self
            .prev
            .as_ref()
            .map(|p| p.iter().zip(&m.thumb).map(|(a, b)| (a - b).abs()).sum::<f32>() / p.len() as f32);
        match &mut self.prev {
            Some(p) if p.len() == m.thumb.len() => p.copy_from_slice(&m.thumb),
            p => *p = Some(m.thumb.clone()),
        }
        let still = diff.is_some_and(|d| d < self.cfg.frozen_diff);
        if still {
            self.still_since.get_or_insert(t);
        } else {
            self.still_since = None;
        }
        let frozen = self.still_since.is_some_and(|s| t.saturating_sub(s).as_secs_f64() >= self.cfg.frozen_s);
        let flat = m.std < self.cfg.flat_std;
        let covered = flat && m.mean < self.cfg.dark_luma;
        let saturated = flat && m.mean > self.cfg.bright_luma;
        let healthy_so_far = !self.conds.iter().any(|c| c.active) && !covered && !saturated && !frozen;
        // learn reference view and sharpness baseline from healthy video
        if self.reference.is_none() && healthy_so_far {
            let start = *self.learn_start.get_or_insert(t);
            let (sum, n) = &mut self.learning;
            sum.resize(m.thumb.len(), 0.0);
            sum.iter_mut().zip(&m.thumb).for_each(|(a, b)| *a += b);
            *n += 1;
            if self.sharp_learn.len() < SHARP_SAMPLES {
                self.sharp_learn.push(m.sharpness);
            }
            if t.saturating_sub(start).as_secs_f64() >= self.cfg.reference_s {
                let (mut r, n) = std::mem::take(&mut self.learning);
                r.iter_mut().for_each(|a| *a /= n as f32);
                self.reference = Some(r);
                let mut s = std::mem::take(&mut self.sharp_learn);
                s.sort_by(f32::total_cmp);
                self.sharp_base = Some(s[s.len() / 2]);
            }
        }
        let defocus =
            !covered && !saturated && self.sharp_base.is_some_and(|b| m.sharpness < self.cfg.defocus_ratio * b);
        let corr = self.reference.as_ref().map(|r| ncc(r, &m.thumb));
        let moved = !covered && !saturated && corr.is_some_and(|c| c < self.cfg.moved_ncc);
        let now = [frozen, covered, saturated, defocus, moved];
        // written only when a condition changes (no allocation per frame)
        let (still_since, sharp_base) = (self.still_since, self.sharp_base);
        let detail = |i: usize| match i {
            0 => format!("no change for {:.1} s", still_since.map_or(0.0, |s| t.saturating_sub(s).as_secs_f64())),
            1 | 2 => format!("mean luma {:.0}, std {:.1}", m.mean, m.std),
            3 => format!("sharpness {:.1} vs baseline {:.1}", m.sharpness, sharp_base.unwrap_or(0.0)),
            _ => format!("correlation with the reference view {:.2}", corr.unwrap_or(1.0)),
        };
        let hold = Duration::from_secs_f64(self.cfg.hold_s);
        let mut changes = Vec::new();
        for (i, c) in self.conds.iter_mut().enumerate() {
            if now[i] == c.active {
                c.pending = None;
                continue;
            }
            let p = *c.pending.get_or_insert(t);
            if t.saturating_sub(p) >= hold {
                c.active = now[i];
                c.pending = None;
                let lasted = if c.active { None } else { c.since.map(|s| p.saturating_sub(s)) };
                let at = p;
                c.since = Some(p);
                changes.push(Change { condition: CONDITIONS[i], active: c.active, at, lasted, detail: detail(i) });
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(f: impl Fn(u32, u32) -> [u8; 3]) -> RgbFrame {
        let mut fr = RgbFrame::new(160, 90);
        for y in 0..90 {
            for x in 0..160 {
                let i = (y * 160 + x) as usize * 3;
                fr.data[i..i + 3].copy_from_slice(&f(x, y));
            }
        }
        fr
    }

    #[test]
    fn conditions_need_to_hold_before_they_are_raised_and_cleared() {
        let cfg = TamperConfig { hold_s: 1.0, reference_s: 1.0, ..Default::default() };
        let mut d = TamperDetector::new(cfg);
        let textured = |k: u32| frame(move |x, y| [((x * 7 + y * 3 + k) % 256) as u8, ((x * y + k) % 256) as u8, 90]);
        let black = frame(|_, _| [3, 3, 3]);
        let mut t = 0.0;
        let mut all = Vec::new();
        let mut step = |d: &mut TamperDetector, f: &RgbFrame| {
            let c = d.update(Duration::from_secs_f64(t), &measure(f));
            t += 0.2;
            c
        };
        for k in 0..10 {
            all.extend(step(&mut d, &textured(k)));
        }
        assert!(all.is_empty(), "{all:?}");
        // one black frame: nothing
        all.extend(step(&mut d, &black));
        all.extend(step(&mut d, &textured(3)));
        assert!(all.is_empty(), "{all:?}");
        for _ in 0..8 {
            all.extend(step(&mut d, &black));
        }
        assert!(all.iter().any(|c| c.condition == "covered" && c.active), "{all:?}");
        all.clear();
        for k in 0..8 {
            all.extend(step(&mut d, &textured(k)));
        }
        let end = all.iter().find(|c| c.condition == "covered" && !c.active).expect("covered ends");
        assert!(end.lasted.unwrap() >= Duration::from_secs_f64(1.0));
    }
}
