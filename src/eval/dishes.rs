//! The clean/dirty head for `utensils_left` with `require_dirty`: fitted on labelled photos of
//! plates (`../shared/data/dishes/{clean,dirty}`, plus a site's own crops), evaluated split by
//! image.
//!
//! A photo's crop is what the worker would classify: the largest utensil NanoDet finds in it
//! (cup, bowl, … at score ≥ 0.3), else the whole photo. Its feature vector is the mask
//! classifier's 1280-d backbone embedding (the same features model as the no-mask head).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;

use super::fit::write_head;
use super::logistic::fit_logistic;
use super::metrics::Prf;
use super::photos::{Photo, choose_l2, fit_part, head_of, labelled, prf, rows, score};
use crate::detect::{FittedHead, MaskClassifier, ObjectDetector, RuntimeOptions};

use super::backbone::FEATURES_MODEL;

/// The utensil classes whose crops the head sees (as `utensils_left` counts by default).
const UTENSILS: [&str; 7] = ["cup", "bowl", "fork", "knife", "spoon", "bottle", "wine glass"];

/// The label folders: `clean/` and `dirty/` (positive).
const FOLDERS: [(&str, bool); 2] = [("clean", false), ("dirty", true)];

/// Features of every labelled photo under `dir` on its largest utensil; `fit_part` decides the
/// split by `clean/0001`-style name.
pub fn measure_dishes(
    dir: &Path,
    objects: &mut ObjectDetector,
    cls: &mut MaskClassifier,
    fit_part: impl Fn(&str) -> bool,
) -> Result<Vec<Photo>> {
    let wanted: Vec<bool> = objects.labels().iter().map(|l| UTENSILS.contains(&l.as_str())).collect();
    let mut found = Vec::new();
    let largest_utensil = |frame: &crate::frame::RgbFrame| {
        objects.detect_in(frame, frame.full(), 0.3, &wanted, &mut found)?;
        Ok(found.iter().map(|o| o.bbox).max_by(|a, b| a.area().total_cmp(&b.area())).unwrap_or(frame.full()))
    };
    super::photos::measure(&labelled(dir, FOLDERS)?, cls, largest_utensil, fit_part)
}

/// Leave-one-image-out predictions over `dishes` (each fitted without that photo).
fn leave_one_out(dishes: &[&Photo], l2: f32, mirror: bool) -> Vec<(f32, bool)> {
    (0..dishes.len())
        .map(|i| {
            let rest: Vec<&Photo> = dishes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, d)| *d).collect();
            let (x, y) = rows(&rest, mirror);
            let h = head_of("", fit_logistic(&x, &y, l2, 500));
            (h.predict(&dishes[i].features), dishes[i].positive)
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
    let shared = measure_dishes(&data.join("dishes"), &mut objects, &mut cls, fit_part)?;
    let mut own = Vec::new();
    for d in site {
        own.extend(measure_dishes(d, &mut objects, &mut cls, |_| true)?);
    }
    let fit: Vec<&Photo> = shared.iter().filter(|d| d.fit_part).collect();
    let eval: Vec<&Photo> = shared.iter().filter(|d| !d.fit_part).collect();
    if fit.iter().all(|d| d.positive) || fit.iter().all(|d| !d.positive) {
        bail!("the fit part needs clean and dirty photos");
    }
    eprintln!("choosing l2 by leave-one-image-out cross-validation on the fit part ({} photos):", fit.len());
    let (l2, candidates) = choose_l2(l2s, "LOO", "loo_fit_part", |l2| leave_one_out(&fit, l2, true))?;
    let train: Vec<&Photo> = fit.iter().copied().chain(own.iter()).collect();
    let (x, y) = rows(&train, true);
    let mut head = head_of(id, fit_logistic(&x, &y, l2, 500));
    let evaluation = score(&head, &eval, 0.5);
    let all: Vec<&Photo> = shared.iter().collect();
    let loo_all = prf(&leave_one_out(&all, l2, true), 0.5);
    let dirty = train.iter().filter(|d| d.positive).count();
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
    let dishes = measure_dishes(&data.join("dishes"), &mut objects, &mut cls, |s| !all && fit_part(s))?;
    let eval: Vec<&Photo> = dishes.iter().filter(|d| !d.fit_part).collect();
    Ok((score(&head, &eval, 0.5), eval.len()))
}
