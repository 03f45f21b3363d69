//! Labelled photos for a head on backbone features (the clean/dirty head, attribute heads): two
//! folders of images, one per label; each photo's features (and its mirror image's) on the crop
//! the worker would classify; a split by image; the counts a head scores on them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::metrics::Prf;
use crate::detect::{FittedHead, MaskClassifier};
use crate::frame::{BBox, RgbFrame};

use super::backbone::FEATURES_MODEL;

/// One labelled photo: its features (and its mirror image's), its label, and whether it is in
/// the fit part.
#[derive(Debug, Clone)]
pub struct Photo {
    /// `<folder>/<file stem>`, e.g. `dirty/0003`.
    pub stem: String,
    pub features: Vec<f32>,
    pub mirror: Vec<f32>,
    /// The label the head predicts (dirty; the attribute missing).
    pub positive: bool,
    pub fit_part: bool,
    /// SHA-256 of the file (for the head's provenance).
    pub sha256: String,
}

/// The images of `dir`'s two label folders (`(folder, positive)`), each folder sorted; files
/// only (no symlinks), at most `limits::IMAGE` bytes each when read.
pub fn labelled(dir: &Path, folders: [(&str, bool); 2]) -> Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    let names = format!("{}/ and {}/", folders[0].0, folders[1].0);
    for (sub, positive) in folders {
        let d = dir.join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .with_context(|| format!("{}: cannot read (labelled photos: {names})", d.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && !p.is_symlink())
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (f, positive)));
    }
    if out.is_empty() {
        bail!("{}: no photos in {names}", dir.display());
    }
    Ok(out)
}

/// The split by image: the first byte of SHA-256 of the `<folder>/<stem>` name below 154 (≈ 60 %)
/// is the fit part, as the scenes are split.
pub fn fit_part(stem: &str) -> bool {
    <sha2::Sha256 as sha2::Digest>::digest(stem.as_bytes())[0] < 154
}

/// Features of every photo in `files` on the crop `crop` chooses (frame pixels), and of its
/// mirror image; `fit_part` decides the split by `<folder>/<stem>`.
pub fn measure(
    files: &[(PathBuf, bool)],
    cls: &mut MaskClassifier,
    mut crop: impl FnMut(&RgbFrame) -> Result<BBox>,
    fit_part: impl Fn(&str) -> bool,
) -> Result<Vec<Photo>> {
    let mut out = Vec::new();
    let bar = crate::util::progress::bar(files.len() as u64, "photos");
    for (f, positive) in files {
        bar.inc(1);
        let bytes = crate::util::fsx::read_limited(f, crate::util::fsx::limits::IMAGE)
            .with_context(|| format!("{}: cannot read", f.display()))?;
        let img = image::load_from_memory(&bytes).with_context(|| format!("{}: not an image", f.display()))?.to_rgb8();
        let frame = RgbFrame::from_image(&img);
        let mirrored = RgbFrame::from_image(&image::imageops::flip_horizontal(&img));
        let b = crop(&frame)?;
        let (features, mirror) = features_of(cls, &frame, &mirrored, b)?;
        let folder = f.parent().and_then(|p| p.file_name()).unwrap_or_default().to_string_lossy();
        let stem = format!("{folder}/{}", f.file_stem().unwrap_or_default().to_string_lossy());
        let fit = fit_part(&stem);
        let sha256 = crate::util::sha256_hex(&bytes);
        out.push(Photo { stem, features, mirror, positive: *positive, fit_part: fit, sha256 });
    }
    bar.finish_and_clear();
    Ok(out)
}

/// The features of crop `b` of `frame`, and of its mirror image in `mirrored` (the frame flipped
/// left to right).
pub fn features_of(
    cls: &mut MaskClassifier,
    frame: &RgbFrame,
    mirrored: &RgbFrame,
    b: BBox,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let features = cls.features(frame, &[b])?.1.remove(0);
    let mirror = cls.features(mirrored, &[super::scenes::mirror_box(b, frame.width as f32)])?.1.remove(0);
    Ok((features, mirror))
}

/// Training rows: each photo's features (and, with `mirror`, its mirror image's) and label.
pub fn rows(photos: &[&Photo], mirror: bool) -> (Vec<Vec<f32>>, Vec<bool>) {
    let mut out = (Vec::new(), Vec::new());
    for d in photos {
        out.0.push(d.features.clone());
        out.1.push(d.positive);
        if mirror {
            out.0.push(d.mirror.clone());
            out.1.push(d.positive);
        }
    }
    out
}

/// A logistic head on the features model's whole-crop features.
pub fn head_of(id: &str, fitted: (Vec<f32>, Vec<f32>, Vec<f32>, f32)) -> FittedHead {
    FittedHead::logistic(id, FEATURES_MODEL, fitted, vec![0.0])
}

/// Precision / recall of the positive label at `threshold` of `head` on `photos`.
pub fn score(head: &FittedHead, photos: &[&Photo], threshold: f32) -> Prf {
    let pairs: Vec<(f32, bool)> = photos.iter().map(|d| (head.predict(&d.features), d.positive)).collect();
    prf(&pairs, threshold)
}

/// Counts of `(probability, label)` pairs at `threshold`.
pub fn prf(pairs: &[(f32, bool)], threshold: f32) -> Prf {
    let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
    for &(p, positive) in pairs {
        match (p >= threshold, positive) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            _ => {}
        }
    }
    Prf::of_counts(threshold, tp, fp, fn_)
}

/// SHA-256 over the sorted `<folder>/<stem> <file SHA-256>` lines of `photos`: which data a head
/// was fitted on, in one value.
pub fn data_hash(photos: &[&Photo]) -> String {
    let mut lines: Vec<String> = photos.iter().map(|p| format!("{} {}\n", p.stem, p.sha256)).collect();
    lines.sort();
    crate::util::sha256_hex(lines.concat().as_bytes())
}

/// Chooses L2 among `l2s` by `predict(l2)` (held-out predictions on the fit part, `how` naming
/// them: "LOO", "cross-validated"): best F1 at 0.5, then fewest errors. Prints the table to
/// stderr; returns the choice and every candidate's counts (under `key`) for the provenance.
pub fn choose_l2(
    l2s: &[f32],
    how: &str,
    key: &str,
    mut predict: impl FnMut(f32) -> Vec<(f32, bool)>,
) -> Result<(f32, Vec<serde_json::Value>)> {
    eprintln!("| l2 | {how} on the fit part: P / R / F1 @ 0.5 (tp fp fn) |");
    eprintln!("| --- | --- |");
    let mut best: Option<((f64, u32), f32)> = None;
    let mut candidates = Vec::new();
    for &l2 in l2s {
        let p = prf(&predict(l2), 0.5);
        eprintln!("| {l2} | {:.2} / {:.2} / {:.2} ({} {} {}) |", p.precision, p.recall, p.f1, p.tp, p.fp, p.fn_);
        let rank = (p.f1, u32::MAX - p.fp - p.fn_);
        if best.is_none_or(|(k, _)| rank > k) {
            best = Some((rank, l2));
        }
        candidates.push(serde_json::json!({"l2": l2, key: p}));
    }
    let (_, l2) = best.context("no candidates (give --l2)")?;
    Ok((l2, candidates))
}
