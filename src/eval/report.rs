//! `vigil eval`: per-face quality of the plain classifier, tuned levers and a fitted head on the
//! evaluation part; a JSON report and a PR plot.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::*;
use crate::detect::{FaceDetector, FittedHead, MaskClassifier, RuntimeOptions};

pub struct EvalArgs {
    pub data: PathBuf,
    pub models: PathBuf,
    pub out: PathBuf,
    pub head: Option<String>,
    pub target_precision: f64,
    pub min_face_px: f32,
}

pub(crate) fn models(dir: &Path) -> Result<(FaceDetector, MaskClassifier)> {
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
    pr_plot(&curves).write(&a.out.join("pr"), (640, 480))?;
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
    println!(
        "\nwrote {}, {} and {}",
        a.out.join("report.json").display(),
        a.out.join("pr.svg").display(),
        a.out.join("pr.png").display()
    );
    Ok(report)
}

/// Precision against recall, one line per named curve, the target region shaded.
pub fn pr_plot(curves: &[(String, Vec<Prf>)]) -> crate::util::plot::Plot {
    crate::util::plot::Plot {
        title: "no-mask precision / recall per face (evaluation part, faces >= 24 px)".into(),
        x_label: "recall".into(),
        y_label: "precision".into(),
        x_range: (0.0, 1.0),
        y_range: (0.0, 1.0),
        series: curves
            .iter()
            .map(|(n, c)| (n.clone(), c.iter().filter(|p| p.tp > 0).map(|p| (p.recall, p.precision)).collect()))
            .collect(),
        target: Some((0.8, 1.0, 0.9, 1.0)),
        ..Default::default()
    }
}
