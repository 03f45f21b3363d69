//! `vigil eval`: per-face quality of the plain classifier, tuned levers and a fitted head on the
//! evaluation part; a JSON report and a PR plot.

use std::path::PathBuf;

use anyhow::Result;

use super::backbone::{FEATURES_MODEL, models};
use super::*;
use crate::detect::mask::view_name;
use crate::detect::{FittedHead, ObjectDetector, RuntimeOptions};

pub struct EvalArgs {
    pub data: PathBuf,
    pub models: PathBuf,
    pub out: PathBuf,
    /// Fitted heads to evaluate (models/<id>.toml).
    pub heads: Vec<String>,
    pub target_precision: f64,
    pub min_face_px: f32,
    /// Every scene is evaluation data (a data set no fitting step read): no split, no tuning.
    pub all: bool,
    /// The clean/dirty head evaluated on `dishes/` (when the data folder has it).
    pub dirty_head: Option<String>,
    /// Face-detector input width of the per-face evaluation (0: each image's own).
    pub face_width: u32,
    /// Face-detector input widths to measure recall by face size at (0: the image's own).
    pub face_widths: Vec<u32>,
    /// Also measure each of `face_widths` with a second pass on 2×2 tiles.
    pub tile_pass: bool,
    /// Also measure each of `face_widths` with a second pass on the heads of the persons NanoDet
    /// finds.
    pub person_pass: bool,
}

/// The first pass (the whole image) and the second passes `vigil eval --face-widths` can add.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    Whole,
    Tiles,
    Persons,
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
        margins.map_or_else(|| view_name(MARGINS[lv.margin_index]), str::to_string),
        at(&b),
        t.map(|p| format!("{} (tp {} fp {})", at(&p), p.tp, p.fp)).unwrap_or_else(|| "not reached".into())
    )
}

pub fn eval(a: &EvalArgs) -> Result<serde_json::Value> {
    let scenes = load_scenes(&a.data.join("mask/scenes"))?;
    let heads = a.heads.iter().map(|h| FittedHead::load(&a.models, h)).collect::<Result<Vec<_>>>()?;
    // one features model per evaluation: the one the heads read
    let features = heads.first().map_or(FEATURES_MODEL, |h| h.features_model.as_str());
    if let Some(h) = heads.iter().find(|h| h.features_model != features) {
        anyhow::bail!(
            "heads {} and {} read different features models ({features}, {}): evaluate them in separate runs",
            heads[0].id,
            h.id,
            h.features_model
        );
    }
    let (mut det, mut cls) = models(&a.models, features)?;
    let want = match () {
        _ if heads.is_empty() => Features::No,
        _ if heads.iter().any(|h| h.flip) => Features::WithMirror,
        _ => Features::Yes,
    };
    let mut results = measure_scenes(&scenes, &mut det, &mut cls, want, a.face_width)?;
    if a.all {
        results.iter_mut().for_each(|r| r.fit_part = false);
    }
    let n_fit = results.iter().filter(|r| r.fit_part).count();
    let scene_dir = a.data.join("mask/scenes");
    let split = if a.all {
        format!("scenes: {} in {}, all of them evaluation data (--all)", results.len(), scene_dir.display())
    } else {
        format!(
            "scenes: {} in {} ({} fit part, {} evaluation part, split by image)",
            results.len(),
            scene_dir.display(),
            n_fit,
            results.len() - n_fit
        )
    };
    let positives = results
        .iter()
        .filter(|r| !r.fit_part)
        .flat_map(|r| &r.faces)
        .filter(|f| f.1 == Label::NoMask && f.0 >= a.min_face_px)
        .count();
    let mut lines = vec![
        format!("{split}; {positives} labelled `without_mask` faces ≥ {} px evaluated", a.min_face_px),
        String::new(),
        "| variant | face threshold | min face px | crop margin | best F1: P / R / F1 @ thr | lowest thr with P ≥ target: P / R / F1 @ thr |".into(),
        "| --- | --- | --- | --- | --- | --- |".into(),
    ];
    let plain = Levers { face_threshold: 0.5, min_face_px: a.min_face_px, margin_index: 0 };
    let plain_curve = pr_curve(&results, plain, false);
    lines.push(row("plain pretrained (evaluation part)", plain, None, &plain_curve, a.target_precision));
    // tune the levers on the fit part, report the chosen point on the evaluation part
    let mut best: Option<(f64, Levers)> = None;
    for ft in if a.all { vec![] } else { vec![0.3, 0.5, 0.7] } {
        for mi in 0..MARGINS.len() {
            let lv = Levers { face_threshold: ft, min_face_px: a.min_face_px, margin_index: mi };
            let c = pr_curve(&results, lv, true);
            let score = lowest_reaching(&c, a.target_precision).map_or(best_f1(&c).f1 - 1.0, |p| p.recall);
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, lv));
            }
        }
    }
    let mut curves: Vec<(String, Vec<Prf>)> = vec![("plain pretrained".into(), plain_curve.clone())];
    let tuned = best.map_or(plain, |b| b.1);
    if best.is_some() {
        let tuned_curve = pr_curve(&results, tuned, false);
        lines.push(row("tuned levers (chosen on fit part)", tuned, None, &tuned_curve, a.target_precision));
        curves.push(("tuned levers".into(), tuned_curve));
    }
    let (mut notes, mut shipped) = (Vec::new(), Vec::new());
    for h in &heads {
        apply_head(&mut results, h)?;
        let lv = Levers { face_threshold: tuned.face_threshold, min_face_px: a.min_face_px, margin_index: 0 };
        let c = pr_curve(&results, lv, false);
        let margins = h.views.iter().map(|&v| view_name(v)).collect::<Vec<_>>().join(" + ");
        let row = |name: &str, c: &[Prf]| row(name, lv, Some(&margins), c, a.target_precision);
        lines.push(row(&format!("fitted head {} (evaluation part)", h.id), &c));
        let rule = crate::rules::NoMaskRule::default();
        let dl = Levers { face_threshold: rule.face_threshold as f32, ..lv };
        let dc = pr_curve(&results, dl, false);
        if let Some(p) = dc.iter().find(|p| (p.threshold as f64 - rule.threshold).abs() < 1e-6) {
            notes.push(format!(
                "fitted head {} at the rule's defaults (face threshold {}, threshold {}), evaluation part: P {:.2} R {:.2} F1 {:.2} (tp {} fp {} fn {})",
                h.id, rule.face_threshold, rule.threshold, p.precision, p.recall, p.f1, p.tp, p.fp, p.fn_
            ));
            let errors = super::metrics::errors_at(&results, dl, rule.threshold as f32, false);
            for e in &errors {
                notes.push(format!(
                    "  {} {}: {} (face {:.2}, no-mask {:.2}, box {:.0},{:.0} {:.0}×{:.0} px)",
                    h.id,
                    e.scene,
                    e.kind,
                    e.face_score,
                    e.no_mask_prob,
                    e.bbox.x1,
                    e.bbox.y1,
                    e.bbox.w(),
                    e.bbox.h()
                ));
            }
            shipped.push(
                serde_json::json!({"head": h.id, "face_threshold": rule.face_threshold, "at": p, "errors": errors}),
            );
        }
        if !a.all {
            let cf = pr_curve(&results, lv, true);
            lines.push(row(&format!("fitted head {} (fit part, for reference)", h.id), &cf));
        }
        curves.push((format!("fitted head {}", h.id), c));
    }
    lines.push(String::new());
    lines.append(&mut notes);
    lines.push(format!(
        "face detection recall by labelled face size (evaluation part, face threshold 0.5, detector input {}):",
        if a.face_width == 0 { "each image's own width".to_string() } else { format!("{} px wide", a.face_width) }
    ));
    for (b, found, n) in detection_recall(&results, 0.5, false) {
        lines.push(format!("  {b:>6} px: {found}/{n} = {:.2}", found as f64 / n.max(1) as f64));
    }
    let mut widths = Vec::new();
    if !a.face_widths.is_empty() {
        let eval_scenes: Vec<&Scene> = scenes.iter().filter(|s| a.all || !s.is_fit_part()).collect();
        lines.push(String::new());
        lines.push(format!(
            "face detection recall by labelled face size against detector input width ({} evaluation images, face threshold 0.5; ms: CenterFace per image on this machine):",
            eval_scenes.len()
        ));
        lines.push("| input width | ms per image | <16 px | 16-24 px | 24-48 px | >=48 px |".into());
        lines.push("| --- | --- | --- | --- | --- | --- |".into());
        let mut objects = match a.person_pass {
            true => Some(ObjectDetector::load(
                &a.models,
                "coco-nanodet",
                &RuntimeOptions { intra_threads: 2, ..Default::default() },
            )?),
            false => None,
        };
        let passes = [Pass::Whole]
            .into_iter()
            .chain(a.tile_pass.then_some(Pass::Tiles))
            .chain(a.person_pass.then_some(Pass::Persons));
        for (pass, &w) in passes.flat_map(|p| a.face_widths.iter().map(move |w| (p, w))) {
            let second = match (pass, objects.as_mut()) {
                (Pass::Tiles, _) => SecondPass::Tiles,
                (Pass::Persons, Some(o)) => SecondPass::Persons(o),
                _ => SecondPass::None,
            };
            let (ms, r) = recall_at_width(&eval_scenes, &mut det, w, 0.5, second)?;
            let cells: Vec<String> =
                r.iter().map(|(_, f, n)| format!("{:.2} ({f}/{n})", *f as f64 / (*n).max(1) as f64)).collect();
            let mut name = if w == 0 { "image's own (400-600)".to_string() } else { w.to_string() };
            name.push_str(match (pass, w) {
                (Pass::Whole, _) => "",
                (Pass::Tiles, 0) => " + 2×2 tiles at their own size",
                (Pass::Tiles, _) => " + 2×2 tiles at the same width",
                (Pass::Persons, _) => " + person heads (NanoDet) zoomed 3×",
            });
            lines.push(format!("| {name} | {ms:.1} | {} |", cells.join(" | ")));
            let (tiles, persons) = (pass == Pass::Tiles, pass == Pass::Persons);
            widths.push(serde_json::json!({"input_width": w, "tiles": tiles, "persons": persons, "ms_per_image": ms, "recall_by_size": r}));
        }
    }
    // the image-level crops are training data of the fitted head: plain classifier only, and
    // only where the data folder has them
    let crop =
        if a.data.join("mask/with_mask").is_dir() { Some(crops(&a.data.join("mask"), &mut cls, 0.5)?) } else { None };
    if let Some(crop) = &crop {
        lines.push(format!(
            "image-level crops (mask/with_mask, mask/without_mask), plain classifier @ 0.5: no-mask P {:.2} R {:.2} F1 {:.2} (tp {} fp {} fn {})",
            crop.precision, crop.recall, crop.f1, crop.tp, crop.fp, crop.fn_
        ));
    }
    let dishes = match &a.dirty_head {
        Some(h) if a.data.join("dishes").is_dir() => {
            let (p, n) = super::dishes::eval_dirty(&a.data, &a.models, h, a.all)?;
            lines.push(format!(
                "dishes ({}, {n} photos), clean/dirty head {h} @ 0.5: dirty P {:.2} R {:.2} F1 {:.2} (tp {} fp {} fn {})",
                if a.all { "all of them" } else { "evaluation part" },
                p.precision,
                p.recall,
                p.f1,
                p.tp,
                p.fp,
                p.fn_
            ));
            Some(p)
        }
        _ => None,
    };
    std::fs::create_dir_all(&a.out)?;
    pr_plot(&curves).write(&a.out.join("pr"), (640, 480))?;
    let report = serde_json::json!({
        "target_precision": a.target_precision,
        "min_face_px": a.min_face_px,
        "split": if a.all { "none (--all): every scene is evaluation data" } else { "by image: SHA-256(stem)[0] < 154 is the fit part" },
        "scenes_dir": scene_dir,
        "evaluation_scenes": results.iter().filter(|r| !r.fit_part).map(|r| r.stem.as_str()).collect::<Vec<_>>(),
        "fit_scenes": results.iter().filter(|r| r.fit_part).map(|r| r.stem.as_str()).collect::<Vec<_>>(),
        "heads": heads.iter().map(|h| serde_json::json!({"id": h.id, "sha256": h.sha256})).collect::<Vec<_>>(),
        "tuned_levers": best.map(|b| b.1),
        "curves": curves.iter().map(|(n, c)| (n.clone(), c.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "detection_recall_by_size": detection_recall(&results, 0.5, false),
        "crops": crop,
        "dishes": dishes,
        "at_rule_defaults": shipped,
        "recall_by_input_width": widths,
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
