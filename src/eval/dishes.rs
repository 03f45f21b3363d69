//! The clean/dirty head for `utensils_left` with `require_dirty`: fitted on labelled photos of
//! plates (`../shared/data/dishes/{clean,dirty}`, plus a site's own crops), evaluated split by
//! image.
//!
//! A photo's crop is what the worker would classify: the largest utensil NanoDet finds in it
//! (cup, bowl, … at score ≥ 0.3), else the whole photo. Its feature vector is the mask
//! classifier's 1280-d backbone embedding (the same features model as the no-mask head).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::fit::write_head;
use super::logistic::fit_logistic;
use super::metrics::Prf;
use crate::detect::{FittedHead, MaskClassifier, ObjectDetector, RuntimeOptions};
use crate::frame::RgbFrame;

use super::backbone::FEATURES_MODEL;

/// One labelled photo: its features (and its mirror image's), whether it is dirty, and whether
/// it is in the fit part.
#[derive(Debug, Clone)]
pub struct Dish {
    pub stem: String,
    pub features: Vec<f32>,
    pub mirror: Vec<f32>,
    pub dirty: bool,
    pub fit_part: bool,
}

/// `<dir>/clean/*`, `<dir>/dirty/*` (images), sorted, each with whether it is dirty.
pub fn labelled_dishes(dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for (sub, dirty) in [("clean", false), ("dirty", true)] {
        let d = dir.join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .with_context(|| format!("{}: cannot read (labelled photos: clean/ and dirty/)", d.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && !p.is_symlink())
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (f, dirty)));
    }
    if out.is_empty() {
        bail!("{}: no photos in clean/ or dirty/", dir.display());
    }
    Ok(out)
}

/// The utensil classes whose crops the head sees (as `utensils_left` counts by default).
const UTENSILS: [&str; 7] = ["cup", "bowl", "fork", "knife", "spoon", "bottle", "wine glass"];

/// Features of every labelled photo under `dir`; `fit_part` decides the split by file stem.
pub fn measure_dishes(
    dir: &Path,
    objects: &mut ObjectDetector,
    cls: &mut MaskClassifier,
    fit_part: impl Fn(&str) -> bool,
) -> Result<Vec<Dish>> {
    let labels = objects.labels().to_vec();
    let wanted: Vec<bool> = labels.iter().map(|l| UTENSILS.contains(&l.as_str())).collect();
    let files = labelled_dishes(dir)?;
    let mut out = Vec::new();
    let mut found = Vec::new();
    for (f, dirty) in files {
        let img = image::open(&f).with_context(|| format!("{}", f.display()))?.to_rgb8();
        let frame = RgbFrame::from_image(&img);
        let mirrored = RgbFrame::from_image(&image::imageops::flip_horizontal(&img));
        objects.detect_in(&frame, frame.full(), 0.3, &wanted, &mut found)?;
        let b = found.iter().map(|o| o.bbox).max_by(|a, b| a.area().total_cmp(&b.area())).unwrap_or(frame.full());
        let features = cls.features(&frame, &[b])?.1.remove(0);
        let mirror = cls.features(&mirrored, &[super::scenes::mirror_box(b, frame.width as f32)])?.1.remove(0);
        let stem = format!(
            "{}/{}",
            if dirty { "dirty" } else { "clean" },
            f.file_stem().unwrap_or_default().to_string_lossy()
        );
        let fit = fit_part(&stem);
        out.push(Dish { stem, features, mirror, dirty, fit_part: fit });
    }
    Ok(out)
}

/// The split of the shared photos: by image, as the scenes (first byte of SHA-256 of the
/// `clean/0001`-style name below 154, ≈ 60 %).
pub fn shared_fit_part(stem: &str) -> bool {
    <sha2::Sha256 as sha2::Digest>::digest(stem.as_bytes())[0] < 154
}

fn rows(dishes: &[&Dish], mirror: bool) -> (Vec<Vec<f32>>, Vec<bool>) {
    let mut out = (Vec::new(), Vec::new());
    for d in dishes {
        out.0.push(d.features.clone());
        out.1.push(d.dirty);
        if mirror {
            out.0.push(d.mirror.clone());
            out.1.push(d.dirty);
        }
    }
    out
}

fn head_of(id: &str, fitted: (Vec<f32>, Vec<f32>, Vec<f32>, f32)) -> FittedHead {
    FittedHead::logistic(id, FEATURES_MODEL, fitted, vec![0.0])
}

/// Dirty precision / recall at `threshold` of `head` on `dishes`.
pub fn score(head: &FittedHead, dishes: &[&Dish], threshold: f32) -> Prf {
    let pairs: Vec<(f32, bool)> = dishes.iter().map(|d| (head.predict(&d.features), d.dirty)).collect();
    prf(&pairs, threshold)
}

fn prf(pairs: &[(f32, bool)], threshold: f32) -> Prf {
    let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
    for &(p, dirty) in pairs {
        match (p >= threshold, dirty) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            _ => {}
        }
    }
    Prf::of_counts(threshold, tp, fp, fn_)
}

/// Leave-one-image-out predictions over `dishes` (each fitted without that photo).
fn leave_one_out(dishes: &[&Dish], l2: f32, mirror: bool) -> Vec<(f32, bool)> {
    (0..dishes.len())
        .map(|i| {
            let rest: Vec<&Dish> = dishes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, d)| *d).collect();
            let (x, y) = rows(&rest, mirror);
            let h = head_of("", fit_logistic(&x, &y, l2, 500));
            (h.predict(&dishes[i].features), dishes[i].dirty)
        })
        .collect()
}

/// What `vigil fit --kind dirty` measured.
#[derive(Debug, Serialize)]
pub struct DishFit {
    pub l2: f32,
    pub fit_images: usize,
    pub site_images: usize,
    pub evaluation: Prf,
    pub loo_all: Prf,
}

/// Fits the clean/dirty head: L2 by leave-one-image-out cross-validation on the fit part (best
/// F1 at 0.5, then accuracy), fitted on the fit part plus `site` photos (always training data),
/// with mirror images; reports the evaluation part and, for a second estimate on so little data,
/// leave-one-out over all shared photos. Writes `models/<id>.{json,toml}`.
pub fn fit_dirty(data: &Path, site: &[PathBuf], models: &Path, id: &str, l2s: &[f32]) -> Result<(PathBuf, DishFit)> {
    let o = RuntimeOptions { intra_threads: 2, ..Default::default() };
    let mut objects = ObjectDetector::load(models, "coco-nanodet", &o)?;
    let mut cls = MaskClassifier::load(models, FEATURES_MODEL, &o)?;
    let shared = measure_dishes(&data.join("dishes"), &mut objects, &mut cls, shared_fit_part)?;
    let mut own = Vec::new();
    for d in site {
        own.extend(measure_dishes(d, &mut objects, &mut cls, |_| true)?);
    }
    let fit: Vec<&Dish> = shared.iter().filter(|d| d.fit_part).collect();
    let eval: Vec<&Dish> = shared.iter().filter(|d| !d.fit_part).collect();
    if fit.iter().all(|d| d.dirty) || fit.iter().all(|d| !d.dirty) {
        bail!("the fit part needs clean and dirty photos");
    }
    eprintln!("choosing l2 by leave-one-image-out cross-validation on the fit part ({} photos):", fit.len());
    eprintln!("| l2 | LOO on the fit part: P / R / F1 @ 0.5 (tp fp fn) |");
    eprintln!("| --- | --- |");
    let mut best: Option<((f64, u32), f32)> = None;
    let mut candidates = Vec::new();
    for &l2 in l2s {
        let p = prf(&leave_one_out(&fit, l2, true), 0.5);
        eprintln!("| {l2} | {:.2} / {:.2} / {:.2} ({} {} {}) |", p.precision, p.recall, p.f1, p.tp, p.fp, p.fn_);
        let key = (p.f1, u32::MAX - p.fp - p.fn_);
        if best.is_none_or(|(k, _)| key > k) {
            best = Some((key, l2));
        }
        candidates.push(serde_json::json!({"l2": l2, "loo_fit_part": p}));
    }
    let (_, l2) = best.context("no candidates (give --l2)")?;
    let train: Vec<&Dish> = fit.iter().copied().chain(own.iter()).collect();
    let (x, y) = rows(&train, true);
    let mut head = head_of(id, fit_logistic(&x, &y, l2, 500));
    let evaluation = score(&head, &eval, 0.5);
    let all: Vec<&Dish> = shared.iter().collect();
    let loo_all = prf(&leave_one_out(&all, l2, true), 0.5);
    let dirty = train.iter().filter(|d| d.dirty).count();
    head.provenance = serde_json::json!({
        "data": "../shared/data/dishes (platesv2 training photos: clean/, dirty/), fit part only; plus the site's photos given with --crops",
        "split": "by image: SHA-256(\"clean/0001\"-style name)[0] < 154",
        "crop": "largest cup/bowl/fork/knife/spoon/bottle/wine glass NanoDet finds at score >= 0.3, else the whole photo; mirror images added",
        "images": train.len(),
        "site_images": own.len(),
        "dirty": dirty,
        "clean": train.len() - dirty,
        "l2": l2,
        "selection": {"how": "leave-one-image-out on the fit part, best F1 at 0.5", "candidates": candidates},
        "evaluation_part": evaluation,
        "leave_one_out_all_shared": loo_all,
        "fitted_by": format!("vigil {}", env!("CARGO_PKG_VERSION")),
    });
    let file = write_head(models, &head)?;
    Ok((file, DishFit { l2, fit_images: fit.len(), site_images: own.len(), evaluation, loo_all }))
}

/// `vigil eval`'s dishes section: the shipped head on the evaluation part (and, with `all`, on
/// every photo).
pub fn eval_dirty(data: &Path, models: &Path, head_id: &str, all: bool) -> Result<(Prf, usize)> {
    let o = RuntimeOptions { intra_threads: 2, ..Default::default() };
    let head = FittedHead::load(models, head_id)?;
    let mut objects = ObjectDetector::load(models, "coco-nanodet", &o)?;
    let mut cls = MaskClassifier::load(models, &head.features_model, &o)?;
    let dishes = measure_dishes(&data.join("dishes"), &mut objects, &mut cls, |s| !all && shared_fit_part(s))?;
    let eval: Vec<&Dish> = dishes.iter().filter(|d| !d.fit_part).collect();
    Ok((score(&head, &eval, 0.5), eval.len()))
}
