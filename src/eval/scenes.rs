//! The labelled scenes and crops of `../shared/data/mask`, and what the models say on them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::detect::mask::{LOWER_FACE, view_box};
use crate::detect::{FaceDetector, MaskClassifier, ObjectDetector};
use crate::frame::{BBox, RgbFrame};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Label {
    Mask,
    NoMask,
    Incorrect,
}

#[derive(Debug, Clone)]
pub struct Scene {
    pub image: PathBuf,
    pub stem: String,
    pub faces: Vec<(BBox, Label)>,
}

impl Scene {
    pub fn is_fit_part(&self) -> bool {
        <sha2::Sha256 as sha2::Digest>::digest(self.stem.as_bytes())[0] < 154
    }
}

pub(crate) fn tag<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let a = s.find(&format!("<{name}>"))? + name.len() + 2;
    let b = s[a..].find(&format!("</{name}>"))? + a;
    Some(s[a..b].trim())
}

/// Reads `scenes/annotations/*.xml` (Pascal VOC) with their `scenes/images/<stem>.jpg`.
pub fn load_scenes(dir: &Path) -> Result<Vec<Scene>> {
    let ann = dir.join("annotations");
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ann)
        .with_context(|| format!("{}: cannot read (the labelled scenes of ../shared/data/mask/scenes)", ann.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let stem = f.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let mut faces = Vec::new();
        for obj in text.split("<object>").skip(1) {
            let label = match tag(obj, "name") {
                Some("with_mask") => Label::Mask,
                Some("without_mask") => Label::NoMask,
                Some("mask_weared_incorrect") => Label::Incorrect,
                other => bail!("{}: unknown label {other:?}", f.display()),
            };
            let num = |n: &str| -> Result<f32> {
                tag(obj, n).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("{}: object without {n}", f.display()))
            };
            faces.push((BBox { x1: num("xmin")?, y1: num("ymin")?, x2: num("xmax")?, y2: num("ymax")? }, label));
        }
        out.push(Scene { image: dir.join("images").join(format!("{stem}.jpg")), stem, faces });
    }
    if out.is_empty() {
        bail!("{}: no annotations", ann.display());
    }
    Ok(out)
}

/// One detection in a scene, with what the models said and what it matched.
#[derive(Debug, Clone, Serialize)]
pub struct Det {
    /// The detection's box, image pixels.
    pub bbox: BBox,
    pub score: f32,
    pub size: f32,
    /// Label of the matched face, if any.
    pub matched: Option<Label>,
    /// No-mask probability per crop margin (same order as `MARGINS`).
    pub prob: Vec<f32>,
    /// Backbone features, when asked for.
    #[serde(skip)]
    pub features: FaceFeatures,
}

/// Backbone features of one face (a detection or a labelled crop) for fitting a head, per crop
/// view in the order of `MARGINS`.
#[derive(Debug, Clone, Default)]
pub struct FaceFeatures {
    /// Of each crop view (empty when not asked for).
    pub views: Vec<Vec<f32>>,
    /// Of each view's mirror image (empty when not measured: training augmentation).
    pub mirrored: Vec<Vec<f32>>,
    /// Of each view of the image recoloured by each of [`Recolour::ALL`] (empty when not
    /// measured: training augmentation, [`recoloured_features`]).
    pub recoloured: Vec<Vec<Vec<f32>>>,
}

/// What `measure_scenes` keeps of the classifier's backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Features {
    /// Only the no-mask probabilities.
    No,
    /// Features of each crop.
    Yes,
    /// Features of each crop and of its mirror image.
    WithMirror,
}

/// `b` in the horizontally mirrored frame of width `w`.
pub fn mirror_box(b: BBox, w: f32) -> BBox {
    BBox { x1: w - b.x2, x2: w - b.x1, ..b }
}

/// Everything measured on one scene.
#[derive(Debug, Clone, Serialize)]
pub struct SceneResult {
    pub stem: String,
    pub fit_part: bool,
    pub dets: Vec<Det>,
    /// Labelled faces: (short side, label, detected at the lowest face threshold).
    pub faces: Vec<(f32, Label, Option<f32>)>,
}

/// The crop views measured: margins, and the lower face ([`LOWER_FACE`]).
pub const MARGINS: [f32; 4] = [0.0, 0.15, 0.3, LOWER_FACE];
const LOW_FACE_THRESHOLD: f32 = 0.2;

/// Greedy matching of detections to the scene's labelled faces at IoU ≥ 0.3, best IoU first:
/// (label index per detection, detection index per label).
pub fn match_faces(dets: impl Iterator<Item = BBox>, s: &Scene) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
    let dets: Vec<BBox> = dets.collect();
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (di, d) in dets.iter().enumerate() {
        for (li, (b, _)) in s.faces.iter().enumerate() {
            let iou = d.iou(b);
            if iou >= 0.3 {
                pairs.push((iou, di, li));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut dm, mut lm) = (vec![None; dets.len()], vec![None; s.faces.len()]);
    for (_, di, li) in pairs {
        if dm[di].is_none() && lm[li].is_none() {
            dm[di] = Some(li);
            lm[li] = Some(di);
        }
    }
    (dm, lm)
}

/// A face-size bucket: its name, faces found, faces labelled.
pub type SizeRecall = (String, u32, u32);

/// Face-detection recall by labelled face size (short side, px), at a detector threshold.
pub fn detection_recall(results: &[SceneResult], face_threshold: f32, use_fit_part: bool) -> Vec<(String, u32, u32)> {
    let buckets = [(0.0, 16.0, "<16"), (16.0, 24.0, "16-24"), (24.0, 48.0, "24-48"), (48.0, f32::MAX, ">=48")];
    buckets
        .iter()
        .map(|(lo, hi, name)| {
            let faces: Vec<_> = results
                .iter()
                .filter(|r| r.fit_part == use_fit_part)
                .flat_map(|r| &r.faces)
                .filter(|(s, _, _)| s >= lo && s < hi)
                .collect();
            let found = faces.iter().filter(|(_, _, d)| d.is_some_and(|s| s >= face_threshold)).count() as u32;
            (name.to_string(), found, faces.len() as u32)
        })
        .collect()
}

/// A second face-detector pass after the whole image's, its faces joined to the first pass's.
pub enum SecondPass<'a> {
    None,
    /// Each of a 2×2 grid of tiles ([`BBox::tiles_2x2`]) at the same input width (0: each tile at
    /// its own size, no zoom): `add_tile_pass`, as the no-mask rule's `tile_pass`.
    Tiles,
    /// The head region of each person NanoDet finds (score ≥ 0.35), zoomed: `add_person_pass`.
    Persons(&'a mut ObjectDetector),
}

/// Face-detection recall by labelled face size with the detector's input `width` pixels wide
/// (0: the image's own width; wider zooms in, as a wider analysis frame or `input_width` does),
/// at `threshold`, over `scenes`, with `second`'s pass after the first; with the mean time per
/// image (ms) of both passes (the object detector's included).
pub fn recall_at_width(
    scenes: &[&Scene],
    det: &mut FaceDetector,
    width: u32,
    threshold: f32,
    mut second: SecondPass<'_>,
) -> Result<(f64, Vec<SizeRecall>)> {
    let mut results = Vec::with_capacity(scenes.len());
    let mut took = std::time::Duration::ZERO;
    let (mut faces, mut more, mut persons) = (Vec::new(), Vec::new(), Vec::new());
    let person_class: Vec<bool> = match &second {
        SecondPass::Persons(o) => o.classes_named("person"),
        _ => Vec::new(),
    };
    for s in scenes {
        let img = image::open(&s.image).with_context(|| format!("{}", s.image.display()))?.to_rgb8();
        let frame = RgbFrame::from_image(&img);
        let t0 = std::time::Instant::now();
        det.detect_in(&frame, frame.full(), width, threshold, &mut faces)?;
        match &mut second {
            SecondPass::None => {}
            SecondPass::Tiles => {
                crate::detect::face::add_tile_pass(frame.full(), &mut faces, &mut more, |tile, out| {
                    det.detect_in(&frame, tile, width, threshold, out)
                })?;
            }
            SecondPass::Persons(o) => {
                o.detect_in(
                    &frame,
                    frame.full(),
                    crate::detect::face::PERSON_PASS_THRESHOLD,
                    &person_class,
                    &mut persons,
                )?;
                let size = (frame.width as f32, frame.height as f32);
                crate::detect::face::add_person_pass(&mut persons, size, &mut faces, &mut more, |r, iw, out| {
                    det.detect_in(&frame, r, iw, threshold, out)
                })?;
            }
        }
        took += t0.elapsed();
        let (_, lm) = match_faces(faces.iter().map(|f| f.bbox), s);
        results.push(SceneResult {
            stem: s.stem.clone(),
            fit_part: false,
            dets: Vec::new(),
            faces: s.faces.iter().zip(&lm).map(|((b, l), m)| (b.w().min(b.h()), *l, m.map(|_| threshold))).collect(),
        });
    }
    let ms = took.as_secs_f64() * 1000.0 / scenes.len().max(1) as f64;
    Ok((ms, detection_recall(&results, threshold, false)))
}

/// Runs the detector once (at a low threshold, input `input_width` wide; 0: the image's own) and
/// the classifier at every margin on every scene.
pub fn measure_scenes(
    scenes: &[Scene],
    det: &mut FaceDetector,
    cls: &mut MaskClassifier,
    want: Features,
    input_width: u32,
) -> Result<Vec<SceneResult>> {
    let mut out = Vec::with_capacity(scenes.len());
    let bar = crate::util::progress::bar(scenes.len() as u64, "scenes");
    for s in scenes {
        bar.inc(1);
        let img = image::open(&s.image).with_context(|| format!("{}", s.image.display()))?.to_rgb8();
        let frame = RgbFrame::from_image(&img);
        let mirrored =
            (want == Features::WithMirror).then(|| RgbFrame::from_image(&image::imageops::flip_horizontal(&img)));
        let mut faces = Vec::new();
        det.detect_in(&frame, frame.full(), input_width, LOW_FACE_THRESHOLD, &mut faces)?;
        faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        let (dm, lm) = match_faces(faces.iter().map(|f| f.bbox), s);
        let mut dets: Vec<Det> = faces
            .iter()
            .enumerate()
            .map(|(di, f)| Det {
                bbox: f.bbox,
                score: f.score,
                size: f.bbox.w().min(f.bbox.h()),
                matched: dm[di].map(|li| s.faces[li].1),
                prob: Vec::new(),
                features: FaceFeatures::default(),
            })
            .collect();
        let w = frame.width as f32;
        for m in MARGINS {
            let boxes: Vec<BBox> = faces.iter().map(|f| view_box(f.bbox, m, w, frame.height as f32)).collect();
            let (p, f) = if want == Features::No {
                (cls.no_mask_prob(&frame, &boxes, 0.0)?, vec![])
            } else {
                cls.features(&frame, &boxes)?
            };
            for (k, d) in dets.iter_mut().enumerate() {
                d.prob.push(p[k]);
                if let Some(v) = f.get(k) {
                    d.features.views.push(v.clone());
                }
            }
            if let Some(mf) = &mirrored {
                let mb: Vec<BBox> = boxes.iter().map(|b| mirror_box(*b, w)).collect();
                let (_, f) = cls.features(mf, &mb)?;
                for (d, v) in dets.iter_mut().zip(f) {
                    d.features.mirrored.push(v);
                }
            }
        }
        let faces_out = s
            .faces
            .iter()
            .enumerate()
            .map(|(li, (b, l))| (b.w().min(b.h()), *l, lm[li].map(|di| faces[di].score)))
            .collect();
        out.push(SceneResult { stem: s.stem.clone(), fit_part: s.is_fit_part(), dets, faces: faces_out });
    }
    bar.finish_and_clear();
    Ok(out)
}

/// A colour change of a training image (`vigil fit --recolour`): whether a face wears a mask
/// should not depend on the mask's colour or shade (the shipped head's false alarms are a black
/// mask and a green cloth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Recolour {
    /// Luma only (BT.601).
    Grey,
    /// Hue turned by 120° (R, G, B ← B, R, G: red becomes green).
    Hue120,
    /// Hue turned by 240° (R, G, B ← G, B, R: red becomes blue).
    Hue240,
    /// The lower 55 % of each face box at 30 % brightness: a dark mask on a masked face, a
    /// shadowed or bearded chin on a bare one.
    DarkLower,
}

impl Recolour {
    /// Every recolouring, in the order of `FaceFeatures::recoloured`.
    pub const ALL: [Recolour; 4] = [Recolour::Grey, Recolour::Hue120, Recolour::Hue240, Recolour::DarkLower];

    /// `frame` recoloured; `faces` are the boxes `DarkLower` darkens.
    pub fn apply(self, frame: &RgbFrame, faces: &[BBox]) -> RgbFrame {
        let mut out = frame.clone();
        match self {
            Recolour::Grey => {
                for p in out.data.chunks_exact_mut(3) {
                    let y = crate::frame::luma([p[0] as f32, p[1] as f32, p[2] as f32]).round() as u8;
                    p.fill(y);
                }
            }
            Recolour::Hue120 => out.data.chunks_exact_mut(3).for_each(|p| p.rotate_right(1)),
            Recolour::Hue240 => out.data.chunks_exact_mut(3).for_each(|p| p.rotate_left(1)),
            Recolour::DarkLower => {
                let (w, h) = (frame.width as usize, frame.height as usize);
                for b in faces {
                    let clamp = |v: f32, hi: usize| (v.max(0.0) as usize).min(hi);
                    let (x1, x2) = (clamp(b.x1, w), clamp(b.x2, w));
                    let (y1, y2) = (clamp(b.y1 + 0.45 * b.h(), h), clamp(b.y2, h));
                    for y in y1..y2 {
                        for v in &mut out.data[(y * w + x1) * 3..(y * w + x2) * 3] {
                            *v = (*v as f32 * 0.3).round() as u8;
                        }
                    }
                }
            }
        }
        out
    }
}

/// Which recolourings a training set adds (`vigil fit --recolour`): each training face once more
/// per recolouring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Recolours {
    pub grey: bool,
    /// Both hue turns.
    pub hue: bool,
    pub dark: bool,
}

impl Recolours {
    pub fn has(self, r: Recolour) -> bool {
        match r {
            Recolour::Grey => self.grey,
            Recolour::Hue120 | Recolour::Hue240 => self.hue,
            Recolour::DarkLower => self.dark,
        }
    }

    pub fn any(self) -> bool {
        self.grey || self.hue || self.dark
    }

    /// The recolourings either names.
    pub fn union(self, o: Recolours) -> Recolours {
        Recolours { grey: self.grey || o.grey, hue: self.hue || o.hue, dark: self.dark || o.dark }
    }

    /// `"none"`, or names from `grey`, `hue`, `dark` joined by `,`.
    pub fn parse(s: &str) -> Result<Recolours> {
        let mut r = Recolours::default();
        for name in s.split(',').map(str::trim) {
            match name {
                "none" => {}
                "grey" => r.grey = true,
                "hue" => r.hue = true,
                "dark" => r.dark = true,
                other => bail!("--recolour: {other:?} is none of none, grey, hue, dark"),
            }
        }
        Ok(r)
    }

    pub fn name(self) -> String {
        let names: Vec<&str> =
            [(self.grey, "grey"), (self.hue, "hue"), (self.dark, "dark")].iter().filter(|p| p.0).map(|p| p.1).collect();
        if names.is_empty() { "none".into() } else { names.join(",") }
    }
}

/// Adds to each training face of the fit part (a detection matched to a labelled face, at least
/// 16 px) its [`recoloured_features`].
pub fn measure_recoloured(
    scenes: &[Scene],
    results: &mut [SceneResult],
    cls: &mut MaskClassifier,
    wanted: Recolours,
    views: &[usize],
) -> Result<()> {
    let bar = crate::util::progress::bar(scenes.len() as u64, "recoloured scenes");
    for (s, r) in scenes.iter().zip(results.iter_mut()).filter(|(_, r)| r.fit_part) {
        bar.inc(1);
        let train: Vec<usize> =
            (0..r.dets.len()).filter(|&i| r.dets[i].matched.is_some() && r.dets[i].size >= 16.0).collect();
        if train.is_empty() {
            continue;
        }
        let img = image::open(&s.image).with_context(|| format!("{}", s.image.display()))?.to_rgb8();
        let boxes: Vec<BBox> = train.iter().map(|&i| r.dets[i].bbox).collect();
        let f = recoloured_features(&RgbFrame::from_image(&img), &boxes, cls, wanted, views)?;
        for (&i, v) in train.iter().zip(f) {
            r.dets[i].features.recoloured = v;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Features of each of `boxes` in `frame` recoloured by each of [`Recolour::ALL`] that `wanted`
/// names, at the crop views `views` (indices into `MARGINS`): per box, per recolouring (empty
/// when not wanted), per view (empty when not in `views`).
pub fn recoloured_features(
    frame: &RgbFrame,
    boxes: &[BBox],
    cls: &mut MaskClassifier,
    wanted: Recolours,
    views: &[usize],
) -> Result<Vec<Vec<Vec<Vec<f32>>>>> {
    let mut out = vec![vec![Vec::new(); Recolour::ALL.len()]; boxes.len()];
    let (w, h) = (frame.width as f32, frame.height as f32);
    for (k, rc) in Recolour::ALL.into_iter().enumerate().filter(|(_, rc)| wanted.has(*rc)) {
        let img = rc.apply(frame, boxes);
        for o in out.iter_mut() {
            o[k] = vec![Vec::new(); MARGINS.len()];
        }
        for &m in views {
            let vb: Vec<BBox> = boxes.iter().map(|b| view_box(*b, MARGINS[m], w, h)).collect();
            for (o, f) in out.iter_mut().zip(cls.features(&img, &vb)?.1) {
                o[k][m] = f;
            }
        }
    }
    Ok(out)
}

/// The image-level labelled crops under `dir` (`with_mask/`, `without_mask/`), sorted, each with
/// whether it shows no mask.
pub fn labelled_crops(dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for (sub, positive) in [("with_mask", false), ("without_mask", true)] {
        let d = dir.join(sub);
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&d).with_context(|| format!("{}", d.display()))?.flatten().map(|e| e.path()).collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (f, positive)));
    }
    Ok(out)
}
