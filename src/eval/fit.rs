//! Fitting the no-mask head: training data from the fit part, cross-validation split by image.

use anyhow::Result;

use super::logistic::fit_logistic;
use super::scenes::{Det, Label, MARGINS, SceneResult};
use crate::detect::{FaceDetector, FittedHead, MaskClassifier};

/// The index in `MARGINS` of each of a head's crop margins.
pub fn view_indices(views: &[f32]) -> Result<Vec<usize>> {
    views
        .iter()
        .map(|v| {
            MARGINS
                .iter()
                .position(|m| (m - v).abs() < 1e-6)
                .ok_or_else(|| anyhow::anyhow!("crop margin {v} is not one vigil eval measures ({MARGINS:?})"))
        })
        .collect()
}

/// Features per margin (`Det::features`, or a labelled crop's) at the given margins (indices into
/// `MARGINS`), concatenated.
pub fn concat_features(per_margin: &[Vec<f32>], views: &[usize]) -> Vec<f32> {
    views.iter().flat_map(|&i| per_margin[i].iter().copied()).collect()
}

/// A labelled crop outside the scenes: its features per margin, and whether it shows no mask.
pub type Crop = (Vec<Vec<f32>>, bool);

/// Training features and labels at `views`: every crop, and the fit part's training faces of
/// the scenes `scene` accepts (by index in `results`).
pub fn training_data(
    results: &[SceneResult],
    min_face_px: f32,
    crops: &[Crop],
    views: &[usize],
    scene: impl Fn(usize) -> bool,
) -> (Vec<Vec<f32>>, Vec<bool>) {
    let faces = training_set(results, min_face_px).into_iter().filter(|(si, _, _)| scene(*si));
    crops
        .iter()
        .map(|(f, t)| (f.as_slice(), *t))
        .chain(faces.map(|(_, d, t)| (d.features.as_slice(), t)))
        .map(|(f, t)| (concat_features(f, views), t))
        .unzip()
}

/// Training pairs from the fit part: detections matched to a clearly labelled face, with the
/// index of their scene (for splitting by image).
pub fn training_set(results: &[SceneResult], min_face_px: f32) -> Vec<(usize, &Det, bool)> {
    let mut out = Vec::new();
    for (si, r) in results.iter().enumerate().filter(|(_, r)| r.fit_part) {
        for d in &r.dets {
            if d.size < min_face_px.min(16.0) {
                continue;
            }
            match d.matched {
                Some(Label::NoMask) => out.push((si, d, true)),
                Some(Label::Mask) => out.push((si, d, false)),
                _ => {}
            }
        }
    }
    out
}

/// Applies a head to stored features, replacing the model's probabilities.
pub fn apply_head(results: &mut [SceneResult], head: &FittedHead) -> Result<()> {
    let views = view_indices(&head.views)?;
    for d in results.iter_mut().flat_map(|r| r.dets.iter_mut()) {
        if !d.features.is_empty() {
            let p = head.predict(&concat_features(&d.features, &views));
            d.prob = vec![p; MARGINS.len()];
        }
    }
    Ok(())
}

/// Cross-validation on the fit part, split by image (scene `i` is in fold `i % folds`): for each
/// fold, fits on the other folds' training faces (plus `crops`, always in training) and predicts
/// every detection of the fold's scenes. Returns the fit-part scenes with those out-of-fold
/// probabilities (at every margin index).
pub fn cross_validate(
    results: &[SceneResult],
    min_face_px: f32,
    views: &[usize],
    crops: &[Crop],
    l2: f32,
    folds: usize,
) -> Vec<SceneResult> {
    let mut out: Vec<SceneResult> = results.iter().filter(|r| r.fit_part).cloned().collect();
    let fit_index: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.fit_part).map(|(i, _)| i).collect();
    for k in 0..folds {
        let (x, y) = training_data(results, min_face_px, crops, views, |si| si % folds != k);
        let (mean, std, weights, bias) = fit_logistic(&x, &y, l2, 500);
        let head = FittedHead {
            id: String::new(),
            kind: String::new(),
            features_model: String::new(),
            mean,
            std,
            weights,
            bias,
            views: Vec::new(),
            provenance: serde_json::Value::Null,
            sha256: String::new(),
        };
        for (r, &si) in out.iter_mut().zip(&fit_index) {
            if si % folds == k {
                for d in &mut r.dets {
                    d.prob = vec![head.predict(&concat_features(&d.features, views)); MARGINS.len()];
                }
            }
        }
    }
    out
}

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::metrics::{Levers, best_f1, lowest_reaching, pr_curve};
use super::report::models;
use super::scenes::{Scene, labelled_crops, load_scenes, measure_scenes};

/// Features (per crop margin of `MARGINS`) of the image-level labelled crops (`mask/with_mask`,
/// `mask/without_mask`): the largest face CenterFace finds in each (the whole image when it finds
/// none), labelled by folder.
fn crop_features(dir: &Path, det: &mut FaceDetector, cls: &mut MaskClassifier) -> Result<Vec<Crop>> {
    let mut out = Vec::new();
    for (f, positive) in labelled_crops(dir)? {
        let Ok(img) = image::open(&f) else { continue };
        let frame = crate::frame::RgbFrame::from_image(&img.to_rgb8());
        let faces = det.detect(&frame, 0.5)?;
        let b = faces.iter().map(|f| f.bbox).max_by(|a, b| a.area().total_cmp(&b.area())).unwrap_or(frame.full());
        let mut per_margin = Vec::new();
        for m in MARGINS {
            let (_, feats) = cls.features(&frame, &[b.expand(m, frame.width as f32, frame.height as f32)])?;
            per_margin.push(feats[0].clone());
        }
        out.push((per_margin, positive));
    }
    Ok(out)
}

/// The crop-margin sets `vigil fit` chooses among (features of each margin concatenated).
pub const VIEW_SETS: [&[f32]; 3] = [&[0.0], &[0.0, 0.15], &[0.0, 0.15, 0.3]];

/// What `vigil fit` is asked to do.
pub struct FitArgs<'a> {
    pub data: &'a Path,
    pub models: &'a Path,
    pub id: &'a str,
    pub min_face_px: f32,
    /// L2 strengths to choose among.
    pub l2: &'a [f32],
    pub with_crops: bool,
    pub target_precision: f64,
}

/// Fits a no-mask head on the fit part: chooses crop margins and L2 strength by 5-fold
/// cross-validation split by image (highest recall at the target precision, then best F1), then
/// fits the chosen head on the whole fit part.
pub fn fit(a: &FitArgs) -> Result<PathBuf> {
    let scenes: Vec<Scene> = load_scenes(&a.data.join("mask/scenes"))?.into_iter().filter(Scene::is_fit_part).collect();
    let (mut det, mut cls) = models(a.models)?;
    let results = measure_scenes(&scenes, &mut det, &mut cls, true)?;
    let crops = if a.with_crops { crop_features(&a.data.join("mask"), &mut det, &mut cls)? } else { Vec::new() };
    let lv = Levers { face_threshold: 0.5, min_face_px: a.min_face_px, margin_index: 0 };
    let mut selection = Vec::new();
    let mut best: Option<((f64, f64), &[f32], f32)> = None;
    eprintln!("choosing crop margins and l2 by 5-fold cross-validation on the fit part (split by image):");
    eprintln!("| crop margins | l2 | CV best F1: P / R / F1 | CV recall at P ≥ {} |", a.target_precision);
    eprintln!("| --- | --- | --- | --- |");
    for views in VIEW_SETS {
        let vi = view_indices(views)?;
        for &l2 in a.l2 {
            let oof = cross_validate(&results, a.min_face_px, &vi, &crops, l2, 5);
            let c = pr_curve(&oof, lv, true);
            let (bf, at) = (best_f1(&c), lowest_reaching(&c, a.target_precision));
            let key = (at.map_or(0.0, |p| p.recall), bf.f1);
            eprintln!(
                "| {views:?} | {l2} | {:.2} / {:.2} / {:.3} | {} |",
                bf.precision,
                bf.recall,
                bf.f1,
                at.map_or("-".into(), |p| format!("{:.3} (P {:.2})", p.recall, p.precision))
            );
            selection.push(serde_json::json!({"views": views, "l2": l2, "cv_best_f1": bf, "cv_at_target": at}));
            if best.is_none_or(|(k, _, _)| key > k) {
                best = Some((key, views, l2));
            }
        }
    }
    let (_, views, l2) = best.context("no candidates (give --l2)")?;
    let vi = view_indices(views)?;
    let (x, y) = training_data(&results, a.min_face_px, &crops, &vi, |_| true);
    let pos = y.iter().filter(|&&v| v).count();
    eprintln!(
        "chosen: crop margins {views:?}, l2 {l2}; fitting on {} faces from {} images ({pos} without mask, {} with mask)",
        x.len(),
        scenes.len(),
        x.len() - pos
    );
    let (mean, std, weights, bias) = fit_logistic(&x, &y, l2, 500);
    let head = FittedHead {
        id: a.id.into(),
        kind: "logistic regression on standardised features".into(),
        features_model: "mask-classifier-mobilenetv2-features".into(),
        mean,
        std,
        weights,
        bias,
        views: views.to_vec(),
        provenance: serde_json::json!({
            "data": if a.with_crops {
                "../shared/data/mask/scenes (andrewmvd face-mask-detection, CC0), fit part only; plus the image-level crops ../shared/data/mask/with_mask, without_mask (chandrikadeb7/Face-Mask-Detection), largest detected face of each"
            } else {
                "../shared/data/mask/scenes (andrewmvd face-mask-detection, CC0), fit part only"
            },
            "scene_faces": x.len() - crops.len(),
            "split": "by image: SHA-256(stem)[0] < 154",
            "images": scenes.len(),
            "faces": x.len(),
            "without_mask": pos,
            "detector": "centerface @ 0.2, matched to labelled faces at IoU >= 0.3; mask_weared_incorrect left out",
            "features": "features output (1280-d) of each crop margin in `views`, concatenated",
            "l2": l2,
            "optimiser": "L-BFGS, at most 500 iterations",
            "selection": {
                "how": format!("5-fold cross-validation on the fit part, split by image (scene i in fold i % 5); highest recall at precision >= {}, then best F1; faces >= {} px, face threshold 0.5", a.target_precision, a.min_face_px),
                "candidates": selection,
            },
            "fitted_by": format!("vigil {}", env!("CARGO_PKG_VERSION")),
        }),
        sha256: String::new(),
    };
    let json = serde_json::to_vec_pretty(&head)?;
    let file = a.models.join(format!("{}.json", a.id));
    std::fs::write(&file, &json).with_context(|| format!("{}", file.display()))?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json));
    std::fs::write(
        a.models.join(format!("{}.toml", a.id)),
        format!(
            "# Fitted by `vigil fit`; see {id}.json for provenance.\nid = \"{id}\"\nfile = \"{id}.json\"\nsha256 = \"{sha}\"\n",
            id = a.id
        ),
    )?;
    Ok(file)
}
