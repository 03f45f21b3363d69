//! Learning from the officers' decisions (`vigil fit --from-reviews --rule ID`): every decided
//! item of an `attribute_missing` rule is a label for the site's attribute head — approved (or a
//! reminder: the violation was real) a positive, rejected as a **false alarm** a negative; items
//! pending, with one approval, or rejected for another reason (unclear, duplicate, other) teach
//! nothing and are counted apart.
//!
//! Each item is cut as the rule cut it: the trigger's person box in the item's verified
//! `snapshot.jpg` (the masked trigger frame), the rule's part of it, the head's backbone
//! features (and its mirror image's). Items are split **by evidence id, frozen**: the first byte
//! of SHA-256(`review-split/<id>`) below 154 is the fit part, the rest the evaluation part — an
//! item never changes sides, so every later refit is judged on the decisions earlier refits
//! never read.
//!
//! The refit starts from the current head and is pulled back towards it (L2 on the distance to
//! its weights, on its own standardisation), L2 chosen by 5-fold cross-validation on the fit part.
//! It is **promoted only if it beats the current head** (higher F1 at the rule's
//! `missing_threshold`) on the evaluation part: then the head file gets `version` = the current
//! one's + 1 and the SHA-256 of the evaluation report, the report is kept beside it
//! (`<head>.v<version>.report.json`) and the replaced head too (`<head>.v<old>.json`, for a
//! rollback); every manifest made with it names the version and the report's hash. Refused, the
//! head stays as it was and the report says why (`<head>.refused.report.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::logistic::refit_logistic;
use super::metrics::Prf;
use super::photos::{Photo, choose_l2, data_hash, features_of, rows, score};
use crate::config::Pipeline;
use crate::detect::{FittedHead, MaskClassifier, RuntimeOptions};
use crate::evidence::manifest::ItemFile;
use crate::frame::{BBox, RgbFrame};
use crate::rules::{Part, RuleConfig};

/// Cross-validation folds for choosing L2 (by evidence id).
const FOLDS: u8 = 5;
/// Fewest examples of each label the fit part and the evaluation part need.
pub const MIN_PER_LABEL: usize = 3;
/// The report's format.
pub const REPORT_SCHEMA: &str = "vigil.fit-from-reviews/v1";

/// What `vigil fit --from-reviews` is asked.
pub struct Args<'a> {
    pub pipeline: &'a Pipeline,
    /// The rule's id (`cameras.rules.id`), an `attribute_missing` rule.
    pub rule: &'a str,
    /// L2 strengths (towards the current head) to choose among.
    pub l2s: &'a [f32],
    /// Measure and report only; never promote.
    pub dry_run: bool,
}

/// The rule as the refit needs it: its head, the part it cuts, its threshold.
#[derive(Debug, Clone)]
struct RuleHead {
    head: String,
    part: Part,
    threshold: f32,
}

/// The frozen split: an item is in the fit part when the first byte of
/// SHA-256(`review-split/<evidence id>`) is below 154 (≈ 60 %).
pub fn fit_part(evidence_id: &str) -> bool {
    digest(evidence_id)[0] < 154
}

fn digest(evidence_id: &str) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(format!("review-split/{evidence_id}").as_bytes()).into()
}

/// One side of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct HeadScore {
    pub version: u32,
    pub sha256: String,
    pub evaluation: Prf,
}

/// The report, written either way.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: String,
    pub site: String,
    pub rule: String,
    pub head: String,
    pub part: String,
    pub time_utc: String,
    pub command: String,
    /// Items of the rule in the store, and what became of them.
    pub items: usize,
    pub positives: usize,
    pub negatives: usize,
    /// Items left out, by why (pending, rejected for another reason, failing verification, ...).
    pub left_out: BTreeMap<String, usize>,
    pub split: String,
    pub fit_examples: usize,
    pub evaluation_examples: usize,
    /// SHA-256 over the examples' evidence ids and snapshot hashes, sorted.
    pub data_sha256: String,
    pub l2: Option<f32>,
    pub candidates: Vec<serde_json::Value>,
    /// The current head on the evaluation part (at the rule's `missing_threshold`).
    pub current: HeadScore,
    /// The refit on the evaluation part (absent when there was too little to refit).
    pub refit: Option<HeadScore>,
    pub promoted: bool,
    pub why: String,
}

/// The attribute_missing rule `id` in the pipeline: every camera that has it must name the same
/// head and part.
fn rule_head(p: &Pipeline, id: &str) -> Result<RuleHead> {
    let mut found: Option<RuleHead> = None;
    let mut other_kind = None;
    for c in &p.cameras {
        for r in c.rules.configs() {
            match r {
                RuleConfig::AttributeMissing(a) if a.id == id => {
                    let h = RuleHead { head: a.head.clone(), part: a.part, threshold: a.missing_threshold as f32 };
                    if let Some(f) = &found
                        && (f.head != h.head || f.part != h.part)
                    {
                        bail!(
                            "rule {id:?}: cameras name different heads or parts ({} {} and {} {}); give each its own rule id",
                            f.head,
                            f.part.name(),
                            h.head,
                            h.part.name()
                        );
                    }
                    found = Some(h);
                }
                r if r.id() == id => other_kind = Some(r.kind().name()),
                _ => {}
            }
        }
    }
    match (found, other_kind) {
        (Some(h), _) => Ok(h),
        (None, Some(k)) => bail!(
            "rule {id:?} is a {k} rule: --from-reviews refits the fitted attribute head of an attribute_missing rule"
        ),
        (None, None) => bail!("no rule with id {id:?} in {}", p.file.display()),
    }
}

/// A decided item as an example, or why it is left out.
async fn example(
    store: &crate::store::Store,
    review: &crate::signing::PublicKey,
    it: &crate::verify::Item,
    rule: &RuleHead,
    cls: &mut MaskClassifier,
) -> Result<Photo, &'static str> {
    let (records, problems) = crate::verify::reviews::read_records(store, review, it).await;
    if !problems.is_empty() {
        return Err("review records failing verification");
    }
    let Some(positive) = crate::evidence::review::model_label(&records) else {
        return Err(match crate::evidence::review::status(&records) {
            crate::evidence::review::Status::Rejected => "rejected, not as a false alarm",
            _ => "not decided (pending or one approval)",
        });
    };
    let m = it.manifest.as_ref().ok_or("no manifest")?;
    let snap = m.artifacts.get(ItemFile::Snapshot.artifact().unwrap_or("snapshot")).ok_or("no snapshot")?;
    if snap.bytes > crate::util::fsx::limits::IMAGE {
        return Err("snapshot too large");
    }
    let bytes = crate::verify::read_artifact(store, snap)
        .await
        .map_err(|_| "snapshot unreadable")?
        .ok_or("snapshot failing verification")?;
    let img = image::load_from_memory(&bytes).map_err(|_| "snapshot not an image")?.to_rgb8();
    let trigger = m.detections.iter().find(|d| d.trigger).ok_or("no trigger detection")?;
    let frame = RgbFrame::from_image(&img);
    let mirrored = RgbFrame::from_image(&image::imageops::flip_horizontal(&img));
    let b: BBox = trigger.bbox;
    let part = rule.part.crop(b, frame.width as f32, frame.height as f32);
    if part.w() < 2.0 || part.h() < 2.0 {
        return Err("trigger box outside the snapshot");
    }
    let (features, mirror) = features_of(cls, &frame, &mirrored, part).map_err(|_| "features failed")?;
    Ok(Photo {
        stem: it.id.clone(),
        features,
        mirror,
        positive,
        fit_part: fit_part(&it.id),
        sha256: snap.sha256.clone(),
    })
}

/// Out-of-fold predictions of refits over `photos` (folds by evidence id).
fn cross_validated(photos: &[&Photo], l2: f32, head: &FittedHead) -> Vec<(f32, bool)> {
    let mut out = Vec::new();
    for k in 0..FOLDS {
        let (test, train): (Vec<&Photo>, Vec<&Photo>) = photos.iter().partition(|p| digest(&p.stem)[1] % FOLDS == k);
        if test.is_empty() || train.is_empty() {
            continue;
        }
        let h = refit(head, &train, l2);
        out.extend(test.iter().map(|p| (h.predict(&p.features), p.positive)));
    }
    out
}

fn refit(head: &FittedHead, photos: &[&Photo], l2: f32) -> FittedHead {
    let (x, y) = rows(photos, true);
    let fitted = refit_logistic(&x, &y, l2, (&head.mean, &head.std, &head.weights, head.bias), 300);
    FittedHead::logistic(&head.id, &head.features_model, fitted, head.views.clone())
}

/// The command that makes this refit again.
fn command(a: &Args) -> String {
    let l2: Vec<String> = a.l2s.iter().map(|l| l.to_string()).collect();
    format!(
        "vigil fit --from-reviews --pipeline {} --rule {} --l2 {}{}",
        a.pipeline.file.display(),
        a.rule,
        l2.join(","),
        if a.dry_run { " --dry-run" } else { "" }
    )
}

/// The decided items of a rule, as examples, and the rest counted by why they were left out.
struct Collected {
    items: usize,
    left_out: BTreeMap<String, usize>,
    examples: Vec<Photo>,
}

/// Reads every item of rule `id` in the pipeline's store: verified, decided, cut as the rule cut it.
async fn collect(p: &Pipeline, id: &str, rule: &RuleHead, features_model: &str) -> Result<Collected> {
    let store = crate::store::Store::open_with(&p.store_url, &p.settings.store.options, false)?;
    let worker = crate::signing::PublicKey::beside(&p.key_path).context("the workers' public key")?;
    let review = crate::signing::PublicKey::beside(&p.review_key())
        .context("the review service's public key (review.pub beside review.key)")?;
    let o = RuntimeOptions { intra_threads: 2, ..Default::default() };
    let mut cls = MaskClassifier::load(&p.models_dir, features_model, &o)?;
    let site = &p.settings.site.id;
    let mut items = 0;
    let mut left_out: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples = Vec::new();
    for mut it in crate::verify::list_items(&store).await? {
        if &it.site != site {
            continue;
        }
        crate::verify::load_manifest(&store, &worker, &mut it).await;
        let Some(m) = &it.manifest else {
            *left_out.entry("manifest unreadable".into()).or_default() += 1;
            continue;
        };
        if m.rule.id != id {
            continue;
        }
        items += 1;
        if !it.problems.is_empty() {
            *left_out.entry("item failing verification".into()).or_default() += 1;
            continue;
        }
        match example(&store, &review, &it, rule, &mut cls).await {
            Ok(e) => examples.push(e),
            Err(why) => *left_out.entry(why.into()).or_default() += 1,
        }
    }
    Ok(Collected { items, left_out, examples })
}

/// Refits the head of rule `a.rule` from the decided items in the pipeline's store; promotes it
/// when it beats the current head. Returns the report and the file it was written to.
pub async fn fit_from_reviews(a: &Args<'_>) -> Result<(Report, PathBuf)> {
    let p = a.pipeline;
    let rule = rule_head(p, a.rule)?;
    let models = &p.models_dir;
    let current = FittedHead::load(models, &rule.head)?;
    if !current.hidden_bias.is_empty() || current.views.len() != 1 {
        bail!("head {}: only a logistic head on one crop view can be refitted from reviews", rule.head);
    }
    let Collected { items, left_out, examples } = collect(p, a.rule, &rule, &current.features_model).await?;
    let site = &p.settings.site.id;
    let all: Vec<&Photo> = examples.iter().collect();
    let fit: Vec<&Photo> = all.iter().copied().filter(|p| p.fit_part).collect();
    let eval: Vec<&Photo> = all.iter().copied().filter(|p| !p.fit_part).collect();
    let count = |v: &[&Photo], pos: bool| v.iter().filter(|p| p.positive == pos).count();
    let current_score = HeadScore {
        version: current.version.unwrap_or(1),
        sha256: current.sha256.clone(),
        evaluation: score(&current, &eval, rule.threshold),
    };
    let mut report = Report {
        schema: REPORT_SCHEMA.into(),
        site: site.clone(),
        rule: a.rule.into(),
        head: rule.head.clone(),
        part: rule.part.name().into(),
        time_utc: crate::util::rfc3339(chrono::Utc::now()),
        command: command(a),
        items,
        positives: count(&all, true),
        negatives: count(&all, false),
        left_out,
        split: "frozen, by evidence id: SHA-256(\"review-split/<id>\")[0] < 154 is the fit part; the rest the evaluation part, never fitted on".into(),
        fit_examples: fit.len(),
        evaluation_examples: eval.len(),
        data_sha256: data_hash(&all),
        l2: None,
        candidates: Vec::new(),
        current: current_score,
        refit: None,
        promoted: false,
        why: String::new(),
    };
    let short = [(&fit, "fit"), (&eval, "evaluation")]
        .iter()
        .find(|(v, _)| count(v, true) < MIN_PER_LABEL || count(v, false) < MIN_PER_LABEL)
        .map(|(v, name)| (name.to_string(), count(v, true), count(v, false)));
    if let Some((name, pos, neg)) = short {
        report.why = format!(
            "refused: too few decisions — the {name} part has {pos} confirmed and {neg} false alarms; each part needs at least {MIN_PER_LABEL} of each"
        );
        let file = write_report(models, &rule.head, None, &report)?;
        return Ok((report, file));
    }
    eprintln!("choosing l2 by {FOLDS}-fold cross-validation on the fit part ({} decided items):", fit.len());
    let (l2, candidates) = choose_l2(a.l2s, "cross-validated refits", "cross_validated_fit_part", |l2| {
        cross_validated(&fit, l2, &current)
    })?;
    let head = refit(&current, &fit, l2);
    let version = current.version.unwrap_or(1) + 1;
    let refit_score = score(&head, &eval, rule.threshold);
    let (old_f1, new_f1) = (report.current.evaluation.f1, refit_score.f1);
    report.l2 = Some(l2);
    report.candidates = candidates;
    report.promoted = new_f1 > old_f1 && !a.dry_run;
    report.why = if new_f1 <= old_f1 {
        format!(
            "refused: the refit does not beat the current head on the evaluation part (F1 {new_f1:.3} against {old_f1:.3})"
        )
    } else if a.dry_run {
        format!("not promoted (--dry-run); the refit beats the current head (F1 {new_f1:.3} against {old_f1:.3})")
    } else {
        format!("promoted as version {version}: F1 {new_f1:.3} against {old_f1:.3} on the evaluation part")
    };
    if !report.promoted {
        report.refit = Some(HeadScore { version, sha256: String::new(), evaluation: refit_score });
        let file = write_report(models, &rule.head, None, &report)?;
        return Ok((report, file));
    }
    // the report names the head it replaces, and the promoted head names the report
    report.refit = Some(HeadScore { version, sha256: String::new(), evaluation: refit_score });
    let report_file = promote(models, &current, head, &report, fit.len(), l2)?;
    Ok((report, report_file))
}

/// Promotes `head` over `current`: writes the report (the head names its hash), keeps the head
/// it replaces, writes the head and its manifest. Returns the report's file.
fn promote(
    models: &Path,
    current: &FittedHead,
    mut head: FittedHead,
    report: &Report,
    examples: usize,
    l2: f32,
) -> Result<PathBuf> {
    let version = current.version.unwrap_or(1) + 1;
    let report_file = write_report(models, &current.id, Some(version), report)?;
    let report_sha256 = crate::util::sha256_hex(&std::fs::read(&report_file)?);
    keep_replaced(models, current)?;
    head.kind.clone_from(&current.kind);
    head.version = Some(version);
    head.report_sha256 = Some(report_sha256.clone());
    head.provenance = serde_json::json!({
        "command": report.command,
        "from_reviews": {
            "rule": report.rule,
            "site": report.site,
            "examples": examples,
            "data_sha256": report.data_sha256,
            "report": report_file.file_name().map(|f| f.to_string_lossy().into_owned()),
            "report_sha256": report_sha256,
        },
        "l2_towards_previous": l2,
        "previous": {"version": current.version.unwrap_or(1), "sha256": current.sha256, "provenance": current.provenance},
        "fitted_by": format!("vigil {}", env!("CARGO_PKG_VERSION")),
    });
    super::fit::write_head(models, &head)?;
    Ok(report_file)
}

/// Writes the report: `<head>.v<version>.report.json` for a promotion, else
/// `<head>.refused.report.json`.
fn write_report(models: &Path, head: &str, version: Option<u32>, r: &Report) -> Result<PathBuf> {
    let file = match version {
        Some(v) => models.join(format!("{head}.v{v}.report.json")),
        None => models.join(format!("{head}.refused.report.json")),
    };
    let mut bytes = serde_json::to_vec_pretty(r)?;
    bytes.push(b'\n');
    crate::util::fsx::write_atomic(&file, &bytes).with_context(|| format!("{}: cannot write", file.display()))?;
    Ok(file)
}

/// Keeps the head being replaced as `<head>.v<version>.json` (for a rollback).
fn keep_replaced(models: &Path, current: &FittedHead) -> Result<()> {
    let to = models.join(format!("{}.v{}.json", current.id, current.version.unwrap_or(1)));
    let from = models.join(format!("{}.json", current.id));
    std::fs::copy(&from, &to).with_context(|| format!("keeping {} as {}", from.display(), to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_frozen_by_id_and_about_sixty_percent() {
        let ids: Vec<String> = (0..2000).map(|i| format!("01J{i:023}")).collect();
        let fit = ids.iter().filter(|i| fit_part(i)).count();
        assert!((1100..1300).contains(&fit), "{fit} of 2000 in the fit part");
        // the salt keeps it apart from the scenes' split of names (a different side for some)
        let scenes = ids.iter().filter(|i| super::super::photos::fit_part(i) != fit_part(i)).count();
        assert!(scenes > 500, "{scenes}");
    }
}
