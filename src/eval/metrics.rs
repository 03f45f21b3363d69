//! Precision / recall per face and on image-level crops.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::scenes::{Label, SceneResult, labelled_crops};
use crate::detect::MaskClassifier;
use crate::frame::RgbFrame;

/// A point of the operating space.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Levers {
    pub face_threshold: f32,
    pub min_face_px: f32,
    pub margin_index: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Prf {
    pub threshold: f32,
    pub tp: u32,
    pub fp: u32,
    pub fn_: u32,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Prf {
    /// Precision, recall and F1 of counts at `threshold` (0 where nothing was counted).
    pub fn of_counts(threshold: f32, tp: u32, fp: u32, fn_: u32) -> Prf {
        let precision = tp as f64 / (tp + fp).max(1) as f64;
        let recall = tp as f64 / (tp + fn_).max(1) as f64;
        Prf { threshold, tp, fp, fn_, precision, recall, f1: 2.0 * precision * recall / (precision + recall).max(1e-9) }
    }
}

/// No-mask precision/recall per face at every classifier threshold.
pub fn pr_curve(results: &[SceneResult], lv: Levers, use_fit_part: bool) -> Vec<Prf> {
    let scenes: Vec<&SceneResult> = results.iter().filter(|r| r.fit_part == use_fit_part).collect();
    let positives: u32 =
        scenes.iter().flat_map(|r| &r.faces).filter(|(s, l, _)| *l == Label::NoMask && *s >= lv.min_face_px).count()
            as u32;
    // thresholds every 0.01, and every 0.001 above 0.99 where calibrated heads saturate
    let ts = (0..=99).map(|i| i as f32 / 100.0).chain((990..=1000).map(|i| i as f32 / 1000.0));
    ts.map(|t| {
        let (mut tp, mut fp) = (0, 0);
        for d in scenes.iter().flat_map(|r| &r.dets) {
            if d.score < lv.face_threshold || d.size < lv.min_face_px || d.prob[lv.margin_index] < t {
                continue;
            }
            match d.matched {
                Some(Label::NoMask) => tp += 1,
                Some(Label::Incorrect) => {}
                _ => fp += 1,
            }
        }
        let fn_ = positives.saturating_sub(tp);
        let precision = if tp + fp == 0 { 1.0 } else { tp as f64 / (tp + fp) as f64 };
        let recall = if positives == 0 { 0.0 } else { tp as f64 / positives as f64 };
        let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        Prf { threshold: t, tp, fp, fn_, precision, recall, f1 }
    })
    .collect()
}

/// A detection the head got wrong at one operating point, to look at (`report.json`
/// `at_rule_defaults[].errors`).
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCase {
    pub scene: String,
    /// "false alarm" (called no-mask: a with-mask face or no labelled face) or "classifier miss"
    /// (a bare face the detector found and the head called masked).
    pub kind: &'static str,
    /// The labelled face it matched (None: no labelled face there).
    pub label: Option<Label>,
    pub bbox: crate::frame::BBox,
    pub face_score: f32,
    pub no_mask_prob: f32,
}

/// The errors behind one point of [`pr_curve`] (classifier threshold `t`), by scene. Bare faces
/// the detector missed are not listed (the curve's `fn_` counts them).
pub fn errors_at(results: &[SceneResult], lv: Levers, t: f32, use_fit_part: bool) -> Vec<ErrorCase> {
    let mut out = Vec::new();
    for r in results.iter().filter(|r| r.fit_part == use_fit_part) {
        for d in &r.dets {
            if d.score < lv.face_threshold || d.size < lv.min_face_px {
                continue;
            }
            let p = d.prob[lv.margin_index];
            let kind = match (d.matched, p >= t) {
                (Some(Label::NoMask), false) => "classifier miss",
                (Some(Label::Mask) | None, true) => "false alarm",
                _ => continue,
            };
            out.push(ErrorCase {
                scene: r.stem.clone(),
                kind,
                label: d.matched,
                bbox: d.bbox,
                face_score: d.score,
                no_mask_prob: p,
            });
        }
    }
    out
}

pub fn best_f1(c: &[Prf]) -> Prf {
    *c.iter().max_by(|a, b| a.f1.total_cmp(&b.f1)).expect("curve")
}

/// The lowest threshold whose precision reaches `target` (with at least one detection).
pub fn lowest_reaching(c: &[Prf], target: f64) -> Option<Prf> {
    c.iter().find(|p| p.precision >= target && p.tp > 0).copied()
}

/// Summary rows for the report: label → (levers, best-F1 point, lowest threshold reaching target).
pub type Rows = BTreeMap<String, (Levers, Prf, Option<Prf>)>;

/// Image-level crops: no-mask precision/recall of the classifier on whole images.
pub fn crops(dir: &Path, cls: &mut MaskClassifier, threshold: f32) -> Result<Prf> {
    let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
    let files = labelled_crops(dir)?;
    let bar = crate::util::progress::bar(files.len() as u64, "crops");
    for (f, positive) in &files {
        bar.inc(1);
        let Ok(img) = image::open(f) else { continue };
        let frame = RgbFrame::from_image(&img.to_rgb8());
        let p = cls.no_mask_prob(&frame, &[frame.full()], 0.0)?[0] >= threshold;
        match (p, *positive) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            _ => {}
        }
    }
    bar.finish_and_clear();
    Ok(Prf::of_counts(threshold, tp, fp, fn_))
}
