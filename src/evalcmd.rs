//! `vigil eval` and `vigil fit`: the command side of [`crate::eval`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::detect::{FaceDetector, FittedHead, MaskClassifier, RuntimeOptions};
use crate::eval::*;

pub struct EvalArgs {
    pub data: PathBuf,
    pub models: PathBuf,
    pub out: PathBuf,
    pub head: Option<String>,
    pub target_precision: f64,
    pub min_face_px: f32,
}

fn models(dir: &Path) -> Result<(FaceDetector, MaskClassifier)> {
    let o = RuntimeOptions { intra_threads: 2, ..Default::default() };
    Ok((
        FaceDetector::load(dir, "centerface", &o)?,
        MaskClassifier::load(dir, "mask-classifier-mobilenetv2-features", &o)?,
    ))
}

/// A table row; `margins` overrides the crop-margin column (a fitted head's own margins).
fn row(name: &str, lv: Levers, margins: Option<&str>, c: &[Prf], target: f64) -> String {
    let b = best_f1(c);
    let t = lowest_reaching(c, target);
    let at = |p: &Prf| format!("{:.2} / {:.2} / {:.2} @ {:.2}", p.precision, p.recall, p.f1, p.threshold);
    format!(
        "| {name} | {:.1} | {:.0} | {} | {} | {} |",
        lv.face_threshold,
        lv.min_face_px,
        margins.map_or_else(|| format!("{:.2}", MARGINS[lv.margin_index]), str::to_string),
        at(&b),
        t.map(|p| format!("{} (tp {} fp {})", at(&p), p.tp, p.fp)).unwrap_or_else(|| "not reached".into())
    )
}

pub fn eval(a: &EvalArgs) -> Result<serde_json::Value> {
    let scenes = load_scenes(&a.data.join("mask/scenes"))?;
    let (mut det, mut cls) = models(&a.models)?;
    let head = a.head.as_ref().map(|h| FittedHead::load(&a.models, h)).transpose()?;
    let mut results = measure_scenes(&scenes, &mut det, &mut cls, head.is_some())?;
    let n_fit = results.iter().filter(|r| r.fit_part).count();
    let mut lines = vec![
        format!("scenes: {} ({} fit part, {} evaluation part, split by image)", results.len(), n_fit, results.len() - n_fit),
        String::new(),
        "| variant | face threshold | min face px | crop margin | best F1: P / R / F1 @ thr | lowest thr with P ≥ target: P / R / F1 @ thr |".into(),
        "| --- | --- | --- | --- | --- | --- |".into(),
    ];
    let plain = Levers { face_threshold: 0.5, min_face_px: a.min_face_px, margin_index: 0 };
    let plain_curve = pr_curve(&results, plain, false);
    lines.push(row("plain pretrained (evaluation part)", plain, None, &plain_curve, a.target_precision));
    // tune the levers on the fit part, report the chosen point on the evaluation part
    let mut best: Option<(f64, Levers)> = None;
    for ft in [0.3, 0.5, 0.7] {
        for mi in 0..MARGINS.len() {
            let lv = Levers { face_threshold: ft, min_face_px: a.min_face_px, margin_index: mi };
            let c = pr_curve(&results, lv, true);
            let score = lowest_reaching(&c, a.target_precision).map_or(best_f1(&c).f1 - 1.0, |p| p.recall);
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, lv));
            }
        }
    }
    let tuned = best.expect("grid").1;
    let tuned_curve = pr_curve(&results, tuned, false);
    lines.push(row("tuned levers (chosen on fit part)", tuned, None, &tuned_curve, a.target_precision));
    let mut curves: Vec<(String, Vec<Prf>)> =
        vec![("plain pretrained".into(), plain_curve.clone()), ("tuned levers".into(), tuned_curve.clone())];
    if let Some(h) = &head {
        apply_head(&mut results, h)?;
        let lv = Levers { face_threshold: tuned.face_threshold, min_face_px: a.min_face_px, margin_index: 0 };
        let c = pr_curve(&results, lv, false);
        let margins = h.views.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(" + ");
        let row = |name: &str, c: &[Prf]| row(name, lv, Some(&margins), c, a.target_precision);
        lines.push(row(&format!("fitted head {} (evaluation part)", h.id), &c));
        let cf = pr_curve(&results, lv, true);
        lines.push(row(&format!("fitted head {} (fit part, for reference)", h.id), &cf));
        curves.push((format!("fitted head {}", h.id), c));
    }
    lines.push(String::new());
    lines.push("face detection recall by labelled face size (evaluation part, face threshold 0.5):".into());
    for (b, found, n) in detection_recall(&results, 0.5, false) {
        lines.push(format!("  {b:>6} px: {found}/{n} = {:.2}", found as f64 / n.max(1) as f64));
    }
    let crop = crops(&a.data.join("mask"), &mut cls, 0.5)?;
    lines.push(format!(
        "image-level crops (mask/with_mask, mask/without_mask), plain classifier @ 0.5: no-mask P {:.2} R {:.2} F1 {:.2} (tp {} fp {} fn {})",
        crop.precision, crop.recall, crop.f1, crop.tp, crop.fp, crop.fn_
    ));
    std::fs::create_dir_all(&a.out)?;
    let refs: Vec<(&str, &[Prf])> = curves.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    std::fs::write(a.out.join("pr.svg"), pr_svg(&refs))?;
    let report = serde_json::json!({
        "target_precision": a.target_precision,
        "min_face_px": a.min_face_px,
        "split": "by image: SHA-256(stem)[0] < 154 is the fit part",
        "tuned_levers": tuned,
        "curves": curves.iter().map(|(n, c)| (n.clone(), c.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "detection_recall_by_size": detection_recall(&results, 0.5, false),
        "crops": crop,
        "table": lines,
    });
    std::fs::write(a.out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    for l in &lines {
        println!("{l}");
    }
    println!("\nwrote {} and {}", a.out.join("report.json").display(), a.out.join("pr.svg").display());
    Ok(report)
}

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

/// A labelled clip: `tests/labels/<name>.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipLabel {
    /// Relative to the repository root, or `shared:<path>` under the shared data folder.
    pub clip: String,
    /// The rule evaluated on it (same keys as `[[cameras.rules]]`).
    pub rule: crate::config::RuleConfig,
    /// Intervals (stream seconds) during which the rule should fire; none: it should not fire.
    #[serde(default)]
    pub violations: Vec<Interval>,
}

#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    pub from_s: f64,
    pub to_s: f64,
}

/// Event-level result of one rule variant over the labelled clips.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct EventScore {
    pub variant: String,
    pub intervals: u32,
    pub detected: u32,
    pub fires: u32,
    pub false_fires: u32,
    pub inferred: u64,
    pub gated: u64,
    pub per_clip: Vec<(String, Vec<f64>)>,
}

impl EventScore {
    pub fn recall(&self) -> f64 {
        if self.intervals == 0 { 1.0 } else { self.detected as f64 / self.intervals as f64 }
    }
    pub fn precision(&self) -> f64 {
        if self.fires == 0 { 1.0 } else { (self.fires - self.false_fires) as f64 / self.fires as f64 }
    }
}

/// A fire counts for an interval when it comes between its start and 3 s after its end (the
/// temporal rule needs a few frames).
const FIRE_LATENESS_S: f64 = 3.0;

/// Runs the full rule (detection, tracking, temporal rule, cooldown/dwell) over each labelled
/// clip's analysis frames (5 fps, 640 wide, as the demo analyses) for each variant, and scores
/// fires against the labelled intervals.
pub fn eval_clips(labels: &Path, data: &Path, models_dir: &Path, repo: &Path) -> Result<Vec<EventScore>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(labels)
        .with_context(|| format!("labels folder {}", labels.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let o = RuntimeOptions::default();
    let set = crate::detect::ModelSet {
        no_mask: Some(crate::detect::Models::load(models_dir, "centerface", "mask-classifier-mobilenetv2", None, &o)?),
        objects: Some(crate::detect::ObjectDetector::load(models_dir, "coco-nanodet", &o)?),
    };
    let label_names = set.objects.as_ref().map(|d| d.labels().to_vec()).unwrap_or_default();
    let pool = crate::detect::ModelPool::new(vec![set]);
    let variants: [(&str, bool, &str); 4] = [
        ("n_of_m, gating on", true, "n_of_m"),
        ("n_of_m, gating off", false, "n_of_m"),
        ("median, gating on", true, "median"),
        ("median, gating off", false, "median"),
    ];
    let mut scores: Vec<EventScore> =
        variants.iter().map(|v| EventScore { variant: v.0.into(), ..Default::default() }).collect();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let label: ClipLabel =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", f.display(), e.message()))?;
        let path = match label.clip.strip_prefix("shared:") {
            Some(rel) => data.join(rel),
            None => repo.join(&label.clip),
        };
        if !path.is_file() {
            anyhow::bail!(
                "{}: clip {} is missing (shared data is expected at {})",
                f.display(),
                path.display(),
                data.display()
            );
        }
        let frames = crate::ingest::analysis_frames(&path, 5.0, 640)?;
        let name = f.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        for (k, &(_, gate, temporal)) in variants.iter().enumerate() {
            // the temporal variants apply to no_mask; utensils_left runs the same rule in both
            let mut rule = label.rule.clone();
            if let crate::config::RuleConfig::NoMask(r) = &mut rule {
                r.temporal = temporal.into();
            }
            let analysis = crate::config::AnalysisConfig { gate, ..Default::default() };
            let rules = crate::config::validate_rules(&[rule], Some(&label_names), &analysis)
                .map_err(|e| anyhow::anyhow!("{}: {e:?}", f.display()))?;
            let mut states = crate::control::RuleStates::new(rules, &analysis, &label_names);
            let stats = crate::ingest::CameraStats::default();
            let origin =
                crate::control::FrameOrigin { index: 0, stats: &stats, epoch: chrono::Utc::now(), utc_offset_s: 0 };
            let mut fires = Vec::new();
            for fr in &frames {
                for r in crate::control::infer_rules(&origin, &mut states, &pool, fr)? {
                    fires.push(r.fire.pts.as_secs_f64());
                }
            }
            let s = &mut scores[k];
            score_clip(s, &label.violations, &fires);
            s.inferred += stats.inferred.load(std::sync::atomic::Ordering::Relaxed);
            s.gated += stats.gated.load(std::sync::atomic::Ordering::Relaxed);
            s.per_clip.push((name.clone(), fires));
        }
    }
    Ok(scores)
}

fn score_clip(s: &mut EventScore, intervals: &[Interval], fires: &[f64]) {
    s.intervals += intervals.len() as u32;
    s.fires += fires.len() as u32;
    for iv in intervals {
        if fires.iter().any(|&t| t >= iv.from_s && t <= iv.to_s + FIRE_LATENESS_S) {
            s.detected += 1;
        }
    }
    s.false_fires +=
        fires.iter().filter(|&&t| !intervals.iter().any(|iv| t >= iv.from_s && t <= iv.to_s + FIRE_LATENESS_S)).count()
            as u32;
}
