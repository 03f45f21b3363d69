//! Detection quality on labelled data (`vigil eval`) and a head fitted on it (`vigil fit`).
//!
//! Data (read in place from `../shared/data`, never copied): `mask/scenes` — full scenes with a
//! Pascal VOC box per face (`with_mask`, `without_mask`, `mask_weared_incorrect`) — and the
//! image-level crops in `mask/with_mask`, `mask/without_mask`.
//!
//! Scenes are split **by image**: an image belongs to the fit part when the first byte of SHA-256
//! of its file stem is below 154 (≈ 60 %), else to the evaluation part; faces of one image never
//! land on both sides. `vigil fit` sees only the fit part; `vigil eval` reports on the evaluation
//! part (and, for reference, on the fit part).
//!
//! Per face, scenes: a detection matches a labelled face at IoU ≥ 0.3 (greedy, best first). A
//! detection classified no-mask is a true positive when it matches a `without_mask` face, a false
//! alarm when it matches a `with_mask` face or no face at all; `mask_weared_incorrect` faces are left
//! out of both sides (neither a clear violation nor clearly compliant). Recall counts every
//! labelled `without_mask` face of at least the minimum size, detected or not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::detect::{FaceDetector, FittedHead, MaskClassifier};
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
        Sha256::digest(self.stem.as_bytes())[0] < 154
    }
}

fn tag<'a>(s: &'a str, name: &str) -> Option<&'a str> {
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
    pub score: f32,
    pub size: f32,
    /// Label of the matched face, if any.
    pub matched: Option<Label>,
    /// No-mask probability per crop margin (same order as `MARGINS`).
    pub prob: Vec<f32>,
    /// Backbone features per crop margin (same order as `MARGINS`), when asked for.
    #[serde(skip)]
    pub features: Vec<Vec<f32>>,
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

pub const MARGINS: [f32; 3] = [0.0, 0.15, 0.3];
const LOW_FACE_THRESHOLD: f32 = 0.2;

fn progress(i: usize, n: usize, what: &str) {
    use std::io::Write;
    if i.is_multiple_of(10) || i + 1 == n {
        let w = 30;
        let done = (i + 1) * w / n.max(1);
        eprint!("\r{what} [{}{}] {}/{}", "#".repeat(done), ".".repeat(w - done), i + 1, n);
        let _ = std::io::stderr().flush();
        if i + 1 == n {
            eprintln!();
        }
    }
}

/// Runs the detector once (at a low threshold) and the classifier at every margin on every scene.
pub fn measure_scenes(
    scenes: &[Scene],
    det: &mut FaceDetector,
    cls: &mut MaskClassifier,
    want_features: bool,
) -> Result<Vec<SceneResult>> {
    let mut out = Vec::with_capacity(scenes.len());
    for (i, s) in scenes.iter().enumerate() {
        progress(i, scenes.len(), "scenes");
        let img = image::open(&s.image).with_context(|| format!("{}", s.image.display()))?.to_rgb8();
        let frame = RgbFrame::from_image(&img);
        let mut faces = det.detect(&frame, LOW_FACE_THRESHOLD)?;
        faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        // greedy matching, best IoU first
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (di, d) in faces.iter().enumerate() {
            for (li, (b, _)) in s.faces.iter().enumerate() {
                let iou = d.bbox.iou(b);
                if iou >= 0.3 {
                    pairs.push((iou, di, li));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut dm, mut lm) = (vec![None; faces.len()], vec![None; s.faces.len()]);
        for (_, di, li) in pairs {
            if dm[di].is_none() && lm[li].is_none() {
                dm[di] = Some(li);
                lm[li] = Some(di);
            }
        }
        let mut dets: Vec<Det> = faces
            .iter()
            .enumerate()
            .map(|(di, f)| Det {
                score: f.score,
                size: f.bbox.w().min(f.bbox.h()),
                matched: dm[di].map(|li| s.faces[li].1),
                prob: Vec::new(),
                features: Vec::new(),
            })
            .collect();
        for m in MARGINS {
            let boxes: Vec<BBox> =
                faces.iter().map(|f| f.bbox.expand(m, frame.width as f32, frame.height as f32)).collect();
            let (p, f) = if want_features {
                cls.features(&frame, &boxes)?
            } else {
                (cls.no_mask_prob(&frame, &boxes, 0.0)?, vec![])
            };
            for (k, d) in dets.iter_mut().enumerate() {
                d.prob.push(p[k]);
                if let Some(v) = f.get(k) {
                    d.features.push(v.clone());
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
    Ok(out)
}

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

pub fn best_f1(c: &[Prf]) -> Prf {
    *c.iter().max_by(|a, b| a.f1.total_cmp(&b.f1)).expect("curve")
}

/// The lowest threshold whose precision reaches `target` (with at least one detection).
pub fn lowest_reaching(c: &[Prf], target: f64) -> Option<Prf> {
    c.iter().find(|p| p.precision >= target && p.tp > 0).copied()
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

/// Image-level crops: no-mask precision/recall of the classifier on whole images.
pub fn crops(dir: &Path, cls: &mut MaskClassifier, threshold: f32) -> Result<Prf> {
    let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
    let files = labelled_crops(dir)?;
    let n = files.len();
    for (i, (f, positive)) in files.iter().enumerate() {
        progress(i, n, "crops");
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
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    Ok(Prf { threshold, tp, fp, fn_, precision, recall, f1: 2.0 * precision * recall / (precision + recall).max(1e-9) })
}

/// Fits an L2-regularised logistic regression on standardised features, classes weighted to
/// balance: minimises mean weighted log-loss + l2/2·|w|² (bias not penalised) with L-BFGS to
/// convergence (at most `iters` iterations). Returns (mean, std, weights, bias).
pub fn fit_logistic(x: &[Vec<f32>], y: &[bool], l2: f32, iters: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, f32) {
    let d = x[0].len();
    let n = x.len();
    let mut mean = vec![0f32; d];
    for r in x {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n as f32;
        }
    }
    let mut std = vec![0f32; d];
    for r in x {
        for ((s, v), m) in std.iter_mut().zip(r).zip(&mean) {
            *s += (v - m) * (v - m) / n as f32;
        }
    }
    for s in &mut std {
        *s = s.sqrt().max(1e-3);
    }
    let xs: Vec<f64> =
        x.iter().flat_map(|r| r.iter().zip(&mean).zip(&std).map(|((v, m), s)| ((v - m) / s) as f64)).collect();
    let pos = y.iter().filter(|&&v| v).count().max(1) as f64;
    let neg = (n as f64 - pos).max(1.0);
    let cw: Vec<f64> = y.iter().map(|&t| if t { n as f64 / (2.0 * pos) } else { n as f64 / (2.0 * neg) }).collect();
    let l2 = l2 as f64;
    // θ = (w, b)
    let objective = |th: &[f64], g: &mut [f64]| -> f64 {
        let (w, b) = (&th[..d], th[d]);
        g.iter_mut().for_each(|v| *v = 0.0);
        let mut loss = 0.0;
        for ((row, &t), &c) in xs.chunks_exact(d).zip(y).zip(&cw) {
            let z: f64 = row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + b;
            let yt = if t { 1.0 } else { 0.0 };
            // log(1 + e^z) − y·z, stably
            loss += c * (z.max(0.0) + (-z.abs()).exp().ln_1p() - yt * z);
            let e = c * (1.0 / (1.0 + (-z).exp()) - yt) / n as f64;
            for (gi, a) in g[..d].iter_mut().zip(row) {
                *gi += e * a;
            }
            g[d] += e;
        }
        for (gi, wi) in g[..d].iter_mut().zip(w) {
            *gi += l2 * wi;
        }
        loss / n as f64 + 0.5 * l2 * w.iter().map(|v| v * v).sum::<f64>()
    };
    let th = lbfgs(vec![0.0; d + 1], objective, iters);
    (mean, std, th[..d].iter().map(|&v| v as f32).collect(), th[d] as f32)
}

/// Minimises a smooth function with L-BFGS (memory 10, backtracking Armijo line search); stops at
/// `iters` iterations or when the gradient's largest component is below 1e-6.
fn lbfgs(mut x: Vec<f64>, mut f: impl FnMut(&[f64], &mut [f64]) -> f64, iters: usize) -> Vec<f64> {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut hist: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> = std::collections::VecDeque::new();
    let (mut xn, mut gn) = (vec![0.0; n], vec![0.0; n]);
    for it in 0..iters {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < 1e-6 {
            break;
        }
        // two-loop recursion: dir = −H·g
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, yv, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = hist.back().map_or(1.0 / dot(&g, &g).sqrt().max(1e-12), |(s, yv, _)| dot(s, yv) / dot(yv, yv));
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, yv, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(yv, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        if slope >= 0.0 {
            // not a descent direction: restart from steepest descent
            hist.clear();
            dir = g.iter().map(|v| -v / dot(&g, &g).sqrt().max(1e-12)).collect();
            slope = dot(&g, &dir);
        }
        let mut step = 1.0;
        let mut fnew;
        loop {
            xn.iter_mut().zip(&x).zip(&dir).for_each(|((o, xi), di)| *o = xi + step * di);
            fnew = f(&xn, &mut gn);
            if fnew <= fx + 1e-4 * step * slope || step < 1e-12 {
                break;
            }
            step *= 0.5;
        }
        let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = gn.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            if hist.len() == 10 {
                hist.pop_front();
            }
            hist.push_back((s, yv, 1.0 / sy));
        }
        std::mem::swap(&mut x, &mut xn);
        std::mem::swap(&mut g, &mut gn);
        let converged = (fx - fnew).abs() <= 1e-10 * fx.abs().max(1.0);
        fx = fnew;
        if converged && it > 0 {
            break;
        }
    }
    x
}

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

/// An SVG plot of precision against recall, one line per named curve.
pub fn pr_svg(curves: &[(&str, &[Prf])]) -> String {
    let (w, h, m) = (520.0, 420.0, 50.0);
    let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"20\" text-anchor=\"middle\">no-mask precision / recall per face (evaluation part, faces ≥ 24 px)</text>\n",
        w / 2.0
    );
    let (pw, ph) = (w - 2.0 * m, h - 2.0 * m);
    s += &format!("<rect x=\"{m}\" y=\"{m}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"black\"/>\n");
    for i in 0..=10 {
        let v = i as f64 / 10.0;
        s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{v:.1}</text>\n", m + v * pw, h - m + 16.0);
        s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.1}</text>\n", m - 6.0, h - m - v * ph + 4.0);
    }
    s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">recall</text>\n", w / 2.0, h - 10.0);
    s += &format!(
        "<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">precision</text>\n",
        h / 2.0,
        h / 2.0
    );
    // target box: precision ≥ 0.9 at recall ≥ 0.8
    s += &format!(
        "<rect x=\"{}\" y=\"{m}\" width=\"{}\" height=\"{}\" fill=\"#2ca02c\" fill-opacity=\"0.08\"/>\n",
        m + 0.8 * pw,
        0.2 * pw,
        0.1 * ph
    );
    for (k, (name, c)) in curves.iter().enumerate() {
        let pts: Vec<String> = c
            .iter()
            .filter(|p| p.tp > 0)
            .map(|p| format!("{:.1},{:.1}", m + p.recall * pw, h - m - p.precision * ph))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
            colors[k % 4],
            pts.join(" ")
        );
        s += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{}\">{name}</text>\n",
            m + 10.0,
            m + 20.0 + 16.0 * k as f64,
            colors[k % 4]
        );
    }
    s + "</svg>\n"
}

/// Summary rows for the report: label → (levers, best-F1 point, lowest threshold reaching target).
pub type Rows = BTreeMap<String, (Levers, Prf, Option<Prf>)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logistic_regression_separates_separable_data() {
        let x: Vec<Vec<f32>> = (0..200)
            .map(|i| vec![(i % 2) as f32 * 2.0 - 1.0 + (i as f32 * 0.37).sin() * 0.3, (i as f32).cos()])
            .collect();
        let y: Vec<bool> = (0..200).map(|i| i % 2 == 1).collect();
        let (mean, std, w, b) = fit_logistic(&x, &y, 1e-3, 300);
        let h = FittedHead {
            id: "t".into(),
            kind: "t".into(),
            features_model: "t".into(),
            mean,
            std,
            weights: w,
            bias: b,
            views: vec![0.0],
            provenance: serde_json::Value::Null,
            sha256: String::new(),
        };
        let correct = x.iter().zip(&y).filter(|(f, t)| (h.predict(f) >= 0.5) == **t).count();
        assert_eq!(correct, 200);
    }

    #[test]
    fn pr_counts_follow_the_matching_rules() {
        let det =
            |score, size, matched, p| Det { score, size, matched, prob: vec![p; MARGINS.len()], features: vec![] };
        let r = SceneResult {
            stem: "s".into(),
            fit_part: false,
            dets: vec![
                det(0.9, 30.0, Some(Label::NoMask), 0.9),    // tp
                det(0.9, 30.0, Some(Label::Mask), 0.8),      // fp
                det(0.9, 30.0, None, 0.95),                  // fp: no face there
                det(0.9, 30.0, Some(Label::Incorrect), 0.9), // left out
                det(0.9, 10.0, Some(Label::NoMask), 0.9),    // too small
                det(0.3, 30.0, Some(Label::NoMask), 0.9),    // below the face threshold
            ],
            faces: vec![
                (30.0, Label::NoMask, Some(0.9)),
                (30.0, Label::NoMask, Some(0.3)),
                (30.0, Label::NoMask, None),
                (10.0, Label::NoMask, Some(0.9)),
            ],
        };
        let c = pr_curve(&[r], Levers { face_threshold: 0.5, min_face_px: 24.0, margin_index: 0 }, false);
        let at = c.iter().find(|p| (p.threshold - 0.5).abs() < 1e-6).unwrap();
        assert_eq!((at.tp, at.fp, at.fn_), (1, 2, 2));
        assert!((at.precision - 1.0 / 3.0).abs() < 1e-9 && (at.recall - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn voc_annotations_of_the_shared_scenes_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mask/scenes");
        assert!(dir.exists(), "needs ../shared/data/mask/scenes (CI has it)");
        let s = load_scenes(&dir).unwrap();
        assert_eq!(s.len(), 525);
        let faces: usize = s.iter().map(|x| x.faces.len()).sum();
        let nomask = s.iter().flat_map(|x| &x.faces).filter(|f| f.1 == Label::NoMask).count();
        assert_eq!((faces, nomask), (1702 + 392 + 61, 392), "DATA.md's box counts");
        let fit = s.iter().filter(|x| x.is_fit_part()).count();
        assert!((280..=350).contains(&fit), "about 60 % of images in the fit part: {fit}");
        assert!(s.iter().all(|x| x.image.exists()));
    }
}
