//! An attribute head for `attribute_missing` (`vigil fit --kind attribute --name NAME`), fitted on
//! a site's labelled data, cut as the rule cuts a frame (the rule's part of a person NanoDet
//! finds), on the same 1280-d backbone features the no-mask and clean/dirty heads read. Two kinds
//! of labelled data, either or both:
//!
//! - `--crops DIR`: images in `DIR/with_NAME/` (the attribute worn) and `DIR/without_NAME/`
//!   (missing), each showing a person: the part of the largest person found in it (score ≥ 0.3),
//!   or the whole image when none is found;
//! - `--scenes DIR`: frames with boxes (Pascal VOC: `DIR/annotations/<stem>.xml`,
//!   `DIR/images/<stem>.jpg`) labelled `with_NAME` / `without_NAME` on the part (a head, a face):
//!   every person found as the rule finds them (score ≥ 0.35, shorter side ≥ 24 px) whose part
//!   holds exactly one labelled box takes its label.
//!
//! Both are split by image (the first byte of SHA-256 of the name below 154: the fit part, ≈ 60 %,
//! as `vigil eval` splits the scenes): L2 is chosen by 5-fold cross-validation on the fit part
//! (folds by image, best F1 at 0.5), the head is fitted on the fit part with mirror images, and
//! the evaluation part, which the fit never read, gives its precision and recall — per crop, and
//! per person in the scenes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::fit::write_head;
use super::logistic::fit_logistic;
use super::metrics::Prf;
use super::photos::{Photo, choose_l2, data_hash, features_of, fit_part, head_of, labelled, rows, score};
use crate::detect::{MaskClassifier, ObjectDetector, RuntimeOptions};
use crate::frame::{BBox, RgbFrame};
use crate::rules::Part;

use super::backbone::FEATURES_MODEL;

/// Cross-validation folds for choosing L2.
const FOLDS: u8 = 5;

/// Persons in scenes as the rule finds them by default (`threshold`, `min_box_px`).
const SCENE_PERSON_SCORE: f32 = 0.35;
const SCENE_PERSON_MIN_PX: f32 = 40.0;

/// What `vigil fit --kind attribute` measured.
#[derive(Debug, Serialize)]
pub struct AttributeFit {
    pub id: String,
    pub l2: f32,
    /// Examples fitted on (fit part), with the attribute missing among them.
    pub fit_examples: usize,
    pub fit_missing: usize,
    /// The crops' evaluation part, never read by the fit: "missing" precision and recall at 0.5
    /// (`None`: no crops given).
    pub crops: Option<(Prf, usize)>,
    /// The scenes' evaluation part, per person found.
    pub scenes: Option<(Prf, usize)>,
    /// SHA-256 over the examples' names and file hashes.
    pub data_sha256: String,
}

/// The labelled data of `vigil fit --kind attribute`.
pub struct Sources<'a> {
    pub crops: &'a [PathBuf],
    pub scenes: &'a [PathBuf],
}

/// The image a photo's name comes from (`scenes/<stem>#<k>` → `scenes/<stem>`).
fn image_of(stem: &str) -> &str {
    stem.split('#').next().unwrap_or(stem)
}

/// The fold of an example, by its image (as the split).
fn fold(stem: &str) -> u8 {
    <sha2::Sha256 as sha2::Digest>::digest(image_of(stem).as_bytes())[1] % FOLDS
}

/// Out-of-fold predictions over `photos`.
fn cross_validated(photos: &[&Photo], l2: f32) -> Vec<(f32, bool)> {
    let mut out = Vec::new();
    for k in 0..FOLDS {
        let (test, train): (Vec<&Photo>, Vec<&Photo>) = photos.iter().partition(|p| fold(&p.stem) == k);
        if test.is_empty() || train.iter().all(|p| p.positive) || train.iter().all(|p| !p.positive) {
            continue;
        }
        let (x, y) = rows(&train, true);
        let h = head_of("", fit_logistic(&x, &y, l2, 300));
        out.extend(test.iter().map(|p| (h.predict(&p.features), p.positive)));
    }
    out
}

/// A head id from an attribute's name: `<name>-attribute-head`.
pub fn head_id(name: &str) -> String {
    format!("{name}-attribute-head")
}

/// The command that fits this head again (the data as given).
fn command(name: &str, part: Part, id: &str, src: &Sources, l2s: &[f32]) -> String {
    let mut c = format!("vigil fit --kind attribute --name {name} --part {}", part.name());
    for d in src.crops {
        c += &format!(" --crops {}", d.display());
    }
    for d in src.scenes {
        c += &format!(" --scenes {}", d.display());
    }
    if id != head_id(name) {
        c += &format!(" --id {id}");
    }
    let l2: Vec<String> = l2s.iter().map(|l| l.to_string()).collect();
    c + &format!(" --l2 {}", l2.join(","))
}

/// Finds persons and cuts the rule's part of them.
struct Cutter {
    objects: ObjectDetector,
    persons: Vec<bool>,
    found: Vec<crate::detect::Object>,
    part: Part,
}

impl Cutter {
    /// The part of each person scoring ≥ `score` whose shorter side is ≥ `min_px`, largest first.
    fn parts(&mut self, f: &RgbFrame, score: f32, min_px: f32) -> Result<Vec<BBox>> {
        self.objects.detect_in(f, f.full(), score, &self.persons, &mut self.found)?;
        let mut boxes: Vec<BBox> = self.found.iter().map(|o| o.bbox).filter(|b| b.w().min(b.h()) >= min_px).collect();
        boxes.sort_by(|a, b| b.area().total_cmp(&a.area()));
        Ok(boxes.into_iter().map(|b| self.part.crop(b, f.width as f32, f.height as f32)).collect())
    }
}

/// A labelled scene: its image, its stem, its boxes with whether the attribute is missing.
struct VocScene {
    image: PathBuf,
    stem: String,
    boxes: Vec<(BBox, bool)>,
}

/// Pascal VOC scenes under `dir` with their boxes labelled `with` (false) or `without` (true);
/// boxes of other labels are left out.
fn voc_scenes(dir: &Path, with: &str, without: &str) -> Result<Vec<VocScene>> {
    let ann = dir.join("annotations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ann)
        .with_context(|| format!("{}: cannot read (labelled scenes: annotations/*.xml, images/*.jpg)", ann.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml") && p.is_file() && !p.is_symlink())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = crate::util::fsx::read_text(&f, crate::util::fsx::limits::MANIFEST)?;
        let stem = f.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let mut boxes = Vec::new();
        for obj in text.split("<object>").skip(1) {
            use super::scenes::tag;
            let missing = match tag(obj, "name") {
                Some(n) if n == with => false,
                Some(n) if n == without => true,
                _ => continue,
            };
            let num = |n: &str| -> Result<f32> {
                tag(obj, n).and_then(|v| v.parse().ok()).with_context(|| format!("{}: a box without {n}", f.display()))
            };
            boxes.push((BBox { x1: num("xmin")?, y1: num("ymin")?, x2: num("xmax")?, y2: num("ymax")? }, missing));
        }
        out.push(VocScene { image: dir.join("images").join(format!("{stem}.jpg")), stem, boxes });
    }
    if out.is_empty() {
        bail!("{}: no annotations", ann.display());
    }
    Ok(out)
}

/// One example per person found in the scenes whose part holds exactly one labelled box (by its
/// centre): named `scenes/<stem>#<k>`, split by the scene.
fn scene_examples(
    dir: &Path,
    with: &str,
    without: &str,
    cut: &mut Cutter,
    cls: &mut MaskClassifier,
) -> Result<Vec<Photo>> {
    let scenes = voc_scenes(dir, with, without)?;
    let bar = crate::util::progress::bar(scenes.len() as u64, "scenes");
    let mut out = Vec::new();
    for VocScene { image, stem, boxes } in scenes {
        bar.inc(1);
        let bytes = crate::util::fsx::read_limited(&image, crate::util::fsx::limits::IMAGE)
            .with_context(|| format!("{}: cannot read", image.display()))?;
        let img = image::load_from_memory(&bytes).with_context(|| format!("{}: not an image", image.display()))?;
        let img = img.to_rgb8();
        let (frame, mirrored) =
            (RgbFrame::from_image(&img), RgbFrame::from_image(&image::imageops::flip_horizontal(&img)));
        let sha256 = crate::util::sha256_hex(&bytes);
        let name = format!("scenes/{stem}");
        for (k, part) in cut.parts(&frame, SCENE_PERSON_SCORE, SCENE_PERSON_MIN_PX)?.into_iter().enumerate() {
            let inside: Vec<bool> = boxes
                .iter()
                .filter(|(b, _)| {
                    let (cx, cy) = ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0);
                    cx >= part.x1 && cx <= part.x2 && cy >= part.y1 && cy <= part.y2
                })
                .map(|(_, missing)| *missing)
                .collect();
            let [missing] = inside[..] else { continue };
            let (features, mirror) = features_of(cls, &frame, &mirrored, part)?;
            let fit = fit_part(&name);
            out.push(Photo {
                stem: format!("{name}#{k}"),
                features,
                mirror,
                positive: missing,
                fit_part: fit,
                sha256: sha256.clone(),
            });
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Fits the attribute head `name` on the labelled data `src` and writes `models/<id>.{json,toml}`.
pub fn fit_attribute(
    name: &str,
    part: Part,
    src: &Sources,
    models: &Path,
    id: &str,
    l2s: &[f32],
) -> Result<(PathBuf, AttributeFit)> {
    if !crate::rules::valid_id(name) || !crate::rules::valid_id(id) {
        bail!("--name {name:?} / --id {id:?}: 1-64 characters of A-Z a-z 0-9 - _");
    }
    if src.crops.is_empty() && src.scenes.is_empty() {
        bail!("give the labelled data: --crops (with_{name}/, without_{name}/) and/or --scenes (Pascal VOC)");
    }
    let (with, without) = (format!("with_{name}"), format!("without_{name}"));
    let o = RuntimeOptions { intra_threads: 2, ..Default::default() };
    let mut cls = MaskClassifier::load(models, FEATURES_MODEL, &o)?;
    let objects = ObjectDetector::load(models, "coco-nanodet", &o)?;
    let persons = objects.classes_named(crate::rules::objects::PERSON);
    let mut cut = Cutter { objects, persons, found: Vec::new(), part };
    let mut without_person = 0;
    let mut crops = Vec::new();
    for d in src.crops {
        let files = labelled(d, [(&with, false), (&without, true)])?;
        let mut largest = |f: &RgbFrame| {
            let p = cut.parts(f, 0.3, 0.0)?.first().copied();
            without_person += p.is_none() as usize;
            Ok(p.unwrap_or(f.full()))
        };
        crops.extend(super::photos::measure(&files, &mut cls, &mut largest, fit_part)?);
    }
    let mut scenes = Vec::new();
    for d in src.scenes {
        scenes.extend(scene_examples(d, &with, &without, &mut cut, &mut cls)?);
    }
    let all: Vec<&Photo> = crops.iter().chain(&scenes).collect();
    let fit: Vec<&Photo> = all.iter().copied().filter(|p| p.fit_part).collect();
    if fit.iter().all(|p| p.positive) || fit.iter().all(|p| !p.positive) {
        bail!("the fit part needs examples with and without {name} (found {} examples in all)", all.len());
    }
    eprintln!("choosing l2 by {FOLDS}-fold cross-validation on the fit part ({} examples):", fit.len());
    let (l2, candidates) =
        choose_l2(l2s, "cross-validated", "cross_validated_fit_part", |l2| cross_validated(&fit, l2))?;
    let (x, y) = rows(&fit, true);
    let mut head = head_of(id, fit_logistic(&x, &y, l2, 500));
    let evaluate = |set: &[Photo]| {
        let eval: Vec<&Photo> = set.iter().filter(|p| !p.fit_part).collect();
        (!set.is_empty()).then(|| (score(&head, &eval, 0.5), eval.len()))
    };
    let (on_crops, on_scenes) = (evaluate(&crops), evaluate(&scenes));
    let missing = fit.iter().filter(|p| p.positive).count();
    let data_sha256 = data_hash(&all);
    head.kind = format!("attribute {name:?}: logistic regression on standardised features; 1 = missing");
    head.provenance = serde_json::json!({
        "command": command(name, part, id, src, l2s),
        "attribute": name,
        "part": part.name(),
        "data": {
            "crops": format!("images in {with}/ (worn) and {without}/ (missing): the {} of the largest person NanoDet finds at score >= 0.3, else the whole image ({without_person} images)", part.name()),
            "scenes": format!("Pascal VOC boxes labelled {with} / {without}: every person NanoDet finds at score >= {SCENE_PERSON_SCORE} with a shorter side >= {SCENE_PERSON_MIN_PX} px whose {} holds exactly one labelled box", part.name()),
            "mirror_images": true,
        },
        "data_sha256": data_sha256,
        "examples": {"crops": crops.len(), "scene_persons": scenes.len()},
        "split": "by image: SHA-256(name)[0] < 154 is the fit part; the rest is the evaluation part, never fitted on",
        "fit_examples": fit.len(),
        "fit_missing": missing,
        "l2": l2,
        "selection": {"how": format!("{FOLDS}-fold cross-validation on the fit part (fold: SHA-256(image name)[1] mod {FOLDS}), best F1 at 0.5"), "candidates": candidates},
        "evaluation_part": {"crops": on_crops.map(|e| e.0), "scene_persons": on_scenes.map(|e| e.0)},
        "fitted_by": format!("vigil {}", env!("CARGO_PKG_VERSION")),
    });
    let file = write_head(models, &head)?;
    let fit_examples = fit.len();
    Ok((
        file,
        AttributeFit {
            id: id.into(),
            l2,
            fit_examples,
            fit_missing: missing,
            crops: on_crops,
            scenes: on_scenes,
            data_sha256,
        },
    ))
}
