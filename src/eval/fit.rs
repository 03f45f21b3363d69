//! Fitting the no-mask head: training data from the fit part, cross-validation split by image.

use anyhow::Result;

use super::logistic::fit_logistic;
use super::scenes::{Det, FaceFeatures, Label, MARGINS, Recolour, Recolours, SceneResult};
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

/// The feature vector of a face at `views`: its features per view concatenated, or with `flip`
/// (and mirror features measured) each view's average with its mirror image's.
pub fn view_features(f: &FaceFeatures, views: &[usize], flip: bool) -> Vec<f32> {
    if !flip || f.mirrored.is_empty() {
        return concat_features(&f.views, views);
    }
    views.iter().flat_map(|&i| f.views[i].iter().zip(&f.mirrored[i]).map(|(a, b)| 0.5 * (a + b))).collect()
}

/// A labelled crop outside the scenes.
#[derive(Debug, Clone, Default)]
pub struct Crop {
    pub features: FaceFeatures,
    /// It shows no mask.
    pub no_mask: bool,
}

/// How the training set is made (levers of `vigil fit`, each measured in the docs).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TrainingLevers {
    /// `mask_weared_incorrect` faces (mask under the nose or chin) as negatives: a worn mask,
    /// however badly, is not the bare face the rule is about.
    pub hard_negatives: bool,
    /// Every training face also as its mirror image.
    pub mirror: bool,
    /// Test-time flip: a face's features are averaged with its mirror image's, in training
    /// and at inference (the head records it).
    pub flip: bool,
    /// Every training face also recoloured (grey, hue turned, lower face darkened).
    pub recolour: Recolours,
}

/// Training features and labels at `views`: every crop, and the fit part's training faces of
/// the scenes `scene` accepts (by index in `results`).
pub fn training_data(
    results: &[SceneResult],
    min_face_px: f32,
    crops: &[Crop],
    views: &[usize],
    lv: TrainingLevers,
    scene: impl Fn(usize) -> bool,
) -> (Vec<Vec<f32>>, Vec<bool>) {
    let faces = training_set(results, min_face_px, lv).into_iter().filter(|(si, _, _)| scene(*si));
    let rows = crops.iter().map(|c| (&c.features, c.no_mask)).chain(faces.map(|(_, d, t)| (&d.features, t)));
    let mut out = (Vec::new(), Vec::new());
    for (f, t) in rows {
        out.0.push(view_features(f, views, lv.flip));
        out.1.push(t);
        if lv.mirror && !lv.flip && !f.mirrored.is_empty() {
            out.0.push(concat_features(&f.mirrored, views));
            out.1.push(t);
        }
        for (r, f) in Recolour::ALL.into_iter().zip(&f.recoloured) {
            if lv.recolour.has(r) && !f.is_empty() {
                out.0.push(concat_features(f, views));
                out.1.push(t);
            }
        }
    }
    out
}

/// Training pairs from the fit part: detections matched to a clearly labelled face (and, with
/// `hard_negatives`, to a badly worn mask), with the index of their scene (for splitting by image).
pub fn training_set(results: &[SceneResult], min_face_px: f32, lv: TrainingLevers) -> Vec<(usize, &Det, bool)> {
    let mut out = Vec::new();
    for (si, r) in results.iter().enumerate().filter(|(_, r)| r.fit_part) {
        for d in &r.dets {
            if d.size < min_face_px.min(16.0) {
                continue;
            }
            match d.matched {
                Some(Label::NoMask) => out.push((si, d, true)),
                Some(Label::Mask) => out.push((si, d, false)),
                Some(Label::Incorrect) if lv.hard_negatives => out.push((si, d, false)),
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
        if !d.features.views.is_empty() {
            let p = head.predict(&view_features(&d.features, &views, head.flip));
            d.prob = vec![p; MARGINS.len()];
        }
    }
    Ok(())
}

/// Fits a head: logistic regression (`hidden` 0) or an MLP with `hidden` tanh units, on the
/// features of the model `features` (recorded in the head, which inference loads).
pub fn train_head(
    id: &str,
    features: &str,
    x: &[Vec<f32>],
    y: &[bool],
    l2: f32,
    hidden: usize,
    views: Vec<f32>,
) -> FittedHead {
    if hidden == 0 {
        return FittedHead::logistic(id, features, fit_logistic(x, y, l2, 500), views);
    }
    let m = super::logistic::fit_mlp(x, y, l2, hidden, 300);
    FittedHead {
        kind: format!("MLP on standardised features: {hidden} tanh units, logistic output"),
        hidden_weights: m.hidden_weights,
        hidden_bias: m.hidden_bias,
        ..FittedHead::logistic(id, features, (m.mean, m.std, m.weights, m.bias), views)
    }
}

/// How a head is trained: which faces, views and extra crops, the L2 weight, levers and hidden
/// units (0: logistic).
#[derive(Clone, Copy)]
pub struct Training<'a> {
    pub min_face_px: f32,
    pub views: &'a [usize],
    pub crops: &'a [Crop],
    pub l2: f32,
    pub levers: TrainingLevers,
    pub hidden: usize,
}

/// One candidate of the selection: (CV recall at the target, CV best F1) as its key, levers, crop views,
/// l2, face threshold, and the CV point at the target precision.
type Candidate<'a> = ((f64, f64), TrainingLevers, &'a [f32], f32, f32, Option<Prf>);

/// Cross-validation on the fit part, split by image (scene `i` is in fold `i % folds`): for each
/// fold, fits on the other folds' training faces (plus `crops`, always in training) and predicts
/// every detection of the fold's scenes. Returns the fit-part scenes with those out-of-fold
/// probabilities (at every margin index).
pub fn cross_validate(results: &[SceneResult], t: &Training<'_>, folds: usize) -> Vec<SceneResult> {
    let Training { min_face_px, views, crops, l2, levers: lv, hidden } = *t;
    let mut out: Vec<SceneResult> = results.iter().filter(|r| r.fit_part).cloned().collect();
    let fit_index: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.fit_part).map(|(i, _)| i).collect();
    for k in 0..folds {
        let (x, y) = training_data(results, min_face_px, crops, views, lv, |si| si % folds != k);
        // only predicted with here: the features model it would name does not matter
        let head = train_head("", "", &x, &y, l2, hidden, Vec::new());
        for (r, &si) in out.iter_mut().zip(&fit_index) {
            if si % folds == k {
                for d in &mut r.dets {
                    let f = view_features(&d.features, views, lv.flip);
                    d.prob = vec![head.predict(&f); MARGINS.len()];
                }
            }
        }
    }
    out
}

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::backbone::models;
use super::metrics::{Levers, Prf, best_f1, lowest_reaching, pr_curve};
use super::scenes::{
    Features, Scene, labelled_crops, load_scenes, measure_recoloured, measure_scenes, mirror_box, recoloured_features,
};

/// Features (per crop margin of `MARGINS`) of the image-level labelled crops (`mask/with_mask`,
/// `mask/without_mask`): the largest face CenterFace finds in each (the whole image when it finds
/// none), labelled by folder.
fn crop_features(
    dir: &Path,
    det: &mut FaceDetector,
    cls: &mut MaskClassifier,
    mirror: bool,
    recolour: (Recolours, &[usize]),
) -> Result<Vec<Crop>> {
    let mut out = Vec::new();
    for (f, no_mask) in labelled_crops(dir)? {
        let Ok(img) = image::open(&f) else { continue };
        let img = img.to_rgb8();
        let frame = crate::frame::RgbFrame::from_image(&img);
        let mframe = mirror.then(|| crate::frame::RgbFrame::from_image(&image::imageops::flip_horizontal(&img)));
        let faces = det.detect(&frame, 0.5)?;
        let b = faces.iter().map(|f| f.bbox).max_by(|a, b| a.area().total_cmp(&b.area())).unwrap_or(frame.full());
        let (mut per_margin, mut mirrored) = (Vec::new(), Vec::new());
        let w = frame.width as f32;
        for m in MARGINS {
            let bm = crate::detect::mask::view_box(b, m, w, frame.height as f32);
            per_margin.push(cls.features(&frame, &[bm])?.1.remove(0));
            if let Some(mf) = &mframe {
                mirrored.push(cls.features(mf, &[mirror_box(bm, w)])?.1.remove(0));
            }
        }
        let recoloured = if recolour.0.any() {
            recoloured_features(&frame, &[b], cls, recolour.0, recolour.1)?.remove(0)
        } else {
            Vec::new()
        };
        out.push(Crop { features: FaceFeatures { views: per_margin, mirrored, recoloured }, no_mask });
    }
    Ok(out)
}

/// Face-detector thresholds the operating point is chosen among.
const FACE_THRESHOLDS: [f32; 4] = [0.5, 0.6, 0.7, 0.8];

/// What `vigil fit` is asked to do.
pub struct FitArgs<'a> {
    pub data: &'a Path,
    pub models: &'a Path,
    pub id: &'a str,
    /// A site's own labelled crops (`with_mask/`, `without_mask/` folders), always training data.
    pub site_crops: &'a [PathBuf],
    pub min_face_px: f32,
    /// L2 strengths to choose among.
    pub l2: &'a [f32],
    pub with_crops: bool,
    pub target_precision: f64,
    pub levers: TrainingLevers,
    /// Face-detector input width when measuring the scenes (0: each image's own).
    pub face_width: u32,
    /// 0: logistic regression; else an MLP with this many hidden units.
    pub hidden: usize,
    /// Crop-view sets to choose among (`vigil fit --views`): margins and the lower face.
    pub view_sets: Vec<Vec<f32>>,
    /// The classifier whose `features` output the head reads (a features model in models/).
    pub features_model: &'a str,
    /// Recolouring sets to choose among (`vigil fit --recolour`); `levers.recolour` is ignored.
    pub recolour_sets: Vec<Recolours>,
}

/// Fits a no-mask head on the fit part: chooses crop margins and L2 strength by 5-fold
/// cross-validation split by image (highest recall at the target precision, then best F1), then
/// fits the chosen head on the whole fit part.
pub fn fit(a: &FitArgs) -> Result<PathBuf> {
    let scenes: Vec<Scene> = load_scenes(&a.data.join("mask/scenes"))?.into_iter().filter(Scene::is_fit_part).collect();
    let (mut det, mut cls) = models(a.models, a.features_model)?;
    let mirrored = a.levers.mirror || a.levers.flip;
    let want = if mirrored { Features::WithMirror } else { Features::Yes };
    let mut results = measure_scenes(&scenes, &mut det, &mut cls, want, a.face_width)?;
    let wanted = a.recolour_sets.iter().fold(Recolours::default(), |u, &r| u.union(r));
    if wanted.any() && a.levers.flip {
        anyhow::bail!(
            "--recolour and --flip cannot be combined (a flipped head averages mirror features, which recoloured faces lack)"
        );
    }
    let mut union_views: Vec<usize> = Vec::new();
    for v in &a.view_sets {
        union_views.extend(view_indices(v)?);
    }
    union_views.sort_unstable();
    union_views.dedup();
    if wanted.any() {
        measure_recoloured(&scenes, &mut results, &mut cls, wanted, &union_views)?;
    }
    let rc = (wanted, union_views.as_slice());
    let mut crops =
        if a.with_crops { crop_features(&a.data.join("mask"), &mut det, &mut cls, mirrored, rc)? } else { Vec::new() };
    for d in a.site_crops {
        crops.extend(crop_features(d, &mut det, &mut cls, mirrored, rc)?);
    }
    let mut selection = Vec::new();
    // (key, views, l2, face threshold, the CV point at the target precision)
    let mut best: Option<Candidate<'_>> = None;
    eprintln!(
        "choosing crop margins, l2 and the face threshold by 5-fold cross-validation on the fit part (split by image):"
    );
    eprintln!(
        "| recolour | crop views | l2 | face threshold | CV best F1: P / R / F1 | CV recall at P ≥ {} |",
        a.target_precision
    );
    eprintln!("| --- | --- | --- | --- | --- | --- |");
    let names = |views: &[f32]| {
        format!("[{}]", views.iter().map(|&v| crate::detect::mask::view_name(v)).collect::<Vec<_>>().join(", "))
    };
    for (recolour, views) in a.recolour_sets.iter().flat_map(|r| a.view_sets.iter().map(move |v| (*r, v))) {
        let levers = TrainingLevers { recolour, ..a.levers };
        let views = views.as_slice();
        let vi = view_indices(views)?;
        for &l2 in a.l2 {
            let t = Training { min_face_px: a.min_face_px, views: &vi, crops: &crops, l2, levers, hidden: a.hidden };
            let oof = cross_validate(&results, &t, 5);
            for &ft in &FACE_THRESHOLDS {
                let lv = Levers { face_threshold: ft, min_face_px: a.min_face_px, margin_index: 0 };
                let c = pr_curve(&oof, lv, true);
                let (bf, at) = (best_f1(&c), lowest_reaching(&c, a.target_precision));
                let key = (at.map_or(0.0, |p| p.recall), bf.f1);
                eprintln!(
                    "| {} | {} | {l2} | {ft} | {:.2} / {:.2} / {:.3} | {} |",
                    recolour.name(),
                    names(views),
                    bf.precision,
                    bf.recall,
                    bf.f1,
                    at.map_or("-".into(), |p| format!("{:.3} (P {:.2} @ {:.2})", p.recall, p.precision, p.threshold))
                );
                selection.push(serde_json::json!({"recolour": recolour.name(), "views": views, "l2": l2, "face_threshold": ft, "cv_best_f1": bf, "cv_at_target": at}));
                if best.is_none_or(|(k, ..)| key > k) {
                    best = Some((key, levers, views, l2, ft, at));
                }
            }
        }
    }
    let (_, levers, views, l2, face_threshold, at) = best.context("no candidates (give --l2)")?;
    eprintln!(
        "operating point (CV): face threshold {face_threshold}, classifier threshold {}",
        at.map_or("- (target precision not reached)".into(), |p| format!("{:.2}", p.threshold))
    );
    let vi = view_indices(views)?;
    let (x, y) = training_data(&results, a.min_face_px, &crops, &vi, levers, |_| true);
    let pos = y.iter().filter(|&&v| v).count();
    let scene_faces = training_set(&results, a.min_face_px, levers).len();
    eprintln!(
        "chosen: recolour {}, crop views {}, l2 {l2}; fitting on {} faces from {} images and {} crops: {} rows ({pos} without mask, {} with mask)",
        levers.recolour.name(),
        names(views),
        scene_faces,
        scenes.len(),
        crops.len(),
        x.len(),
        x.len() - pos
    );
    let head = FittedHead {
        provenance: serde_json::json!({
            "data": if a.with_crops {
                "../shared/data/mask/scenes (andrewmvd face-mask-detection, CC0), fit part only; plus the image-level crops ../shared/data/mask/with_mask, without_mask (chandrikadeb7/Face-Mask-Detection), largest detected face of each"
            } else {
                "../shared/data/mask/scenes (andrewmvd face-mask-detection, CC0), fit part only"
            },
            "levers": levers,
            "face_input_width": a.face_width,
            "operating_point": {
                "how": format!("the chosen candidate's lowest classifier threshold whose out-of-fold precision reaches {}", a.target_precision),
                "face_threshold": face_threshold,
                "threshold": at.map(|p| p.threshold),
                "cv": at,
            },
            "site_crop_folders": a.site_crops.len(),
            "scene_faces": scene_faces,
            "split": "by image: SHA-256(stem)[0] < 154",
            "images": scenes.len(),
            "faces": x.len(),
            "without_mask": pos,
            "detector": if a.levers.hard_negatives {
                "centerface @ 0.2, matched to labelled faces at IoU >= 0.3; mask_weared_incorrect as negatives"
            } else {
                "centerface @ 0.2, matched to labelled faces at IoU >= 0.3; mask_weared_incorrect left out"
            },
            "features": format!("features output of {} for each crop margin in `views`, concatenated", a.features_model),
            "l2": l2,
            "optimiser": "L-BFGS, at most 500 iterations",
            "selection": {
                "how": format!("5-fold cross-validation on the fit part, split by image (scene i in fold i % 5); highest recall at precision >= {}, then best F1; faces >= {} px, face threshold 0.5", a.target_precision, a.min_face_px),
                "candidates": selection,
            },
            "fitted_by": format!("vigil {}", env!("CARGO_PKG_VERSION")),
        }),
        flip: a.levers.flip,
        ..train_head(a.id, a.features_model, &x, &y, l2, a.hidden, views.to_vec())
    };
    write_head(a.models, &head)
}

/// Writes a head as `<models>/<id>.json` with its manifest `<id>.toml` (its SHA-256).
pub fn write_head(models: &Path, head: &FittedHead) -> Result<PathBuf> {
    let json = serde_json::to_vec_pretty(head)?;
    let file = models.join(format!("{}.json", head.id));
    std::fs::write(&file, &json).with_context(|| format!("{}", file.display()))?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json));
    std::fs::write(
        models.join(format!("{}.toml", head.id)),
        format!(
            "# Fitted by `vigil fit`; see {id}.json for provenance.\nid = \"{id}\"\nfile = \"{id}.json\"\nsha256 = \"{sha}\"\n",
            id = head.id
        ),
    )?;
    Ok(file)
}
