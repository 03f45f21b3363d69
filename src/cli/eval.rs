//! `vigil eval`, `vigil eval-clips`, `vigil fit`: detection quality, and fitting the no-mask head.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The data folder (../shared/data).
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    #[arg(long, default_value = "vigil-data/eval")]
    pub out: PathBuf,
    /// Also evaluate these fitted heads (models/<id>.toml, comma-separated; "none": only the
    /// plain classifier).
    #[arg(long, value_delimiter = ',', default_value = "mask-head-fitted")]
    pub head: Vec<String>,
    /// The clean/dirty head evaluated on the data folder's dishes/ ("none": skip).
    #[arg(long, default_value = "dirty-head-fitted")]
    pub dirty_head: String,
    /// Also measure face-detection recall by face size at these detector input widths (0: each
    /// image's own width), with the detector's time per image.
    #[arg(long, value_delimiter = ',')]
    pub face_widths: Vec<u32>,
    /// With `--face-widths`: also each width with a second pass on a 2×2 grid of overlapping
    /// tiles at the same input width (about twice the zoom; the lever for small faces that
    /// costs five detector runs per frame).
    #[arg(long)]
    pub tile_pass: bool,
    /// With `--face-widths`: also each width with a second pass on the heads of the persons the
    /// object detector (NanoDet) finds, each zoomed 3× (at most 320 px wide; persons wider than a
    /// quarter of the image are left to the first pass).
    #[arg(long)]
    pub person_pass: bool,
    /// Face-detector input width for the per-face evaluation (0: each image's own width; the
    /// scenes are 400-600 px wide, so 640 zooms about 1.5x, as the shipped `input_width = 960`
    /// does on a 640-wide analysis frame).
    #[arg(long, default_value_t = 640)]
    pub face_width: u32,
    #[arg(long, default_value_t = 0.95)]
    pub target_precision: f64,
    #[arg(long, default_value_t = 24.0)]
    pub min_face_px: f32,
    /// Every scene of the data folder is evaluation data (for a data set no fitting step read):
    /// no fit/evaluation split, no lever tuning.
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args)]
pub struct ClipsArgs {
    /// Folder of label files (clip, rule, violation intervals).
    #[arg(long, default_value = "tests/labels")]
    pub labels: PathBuf,
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    /// The pipeline evaluated as configured: its models and fitted head, analysis rate and width,
    /// gating, and its rules' parameters (under what each label file names).
    #[arg(long, default_value = "pipelines/demo.toml")]
    pub pipeline: PathBuf,
    /// Evaluate each clip as recorded and re-encoded the way other cameras send it, e.g.
    /// `h264-2000,h264-500,h265-1000,h265-300,mpeg4-1500` (codec-kbit/s; GStreamer's x264enc,
    /// x265enc, avenc_mpeg4): the same events must fire on every encode.
    #[arg(long, value_delimiter = ',')]
    pub encodes: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeadKind {
    /// The no-mask head (faces; `models.mask_head`).
    NoMask,
    /// The clean/dirty head (utensil crops; `models.dirty_head`).
    Dirty,
    /// An attribute head for `attribute_missing` (`--name`, `--crops`).
    Attribute,
}

/// `--part`: a person's part, as the rules name it.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PartArg {
    Person,
    Upper,
    Head,
}

impl From<PartArg> for crate::rules::Part {
    fn from(p: PartArg) -> Self {
        match p {
            PartArg::Person => crate::rules::Part::Person,
            PartArg::Upper => crate::rules::Part::Upper,
            PartArg::Head => crate::rules::Part::Head,
        }
    }
}

#[derive(clap::Args)]
pub struct FitArgs {
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Which head to fit.
    #[arg(long, value_enum, default_value = "no-mask")]
    pub kind: HeadKind,
    /// Head id: writes models/<id>.json and models/<id>.toml (default mask-head-fitted,
    /// dirty-head-fitted with --kind dirty, <name>-attribute-head with --kind attribute).
    #[arg(long)]
    pub id: Option<String>,
    /// With --kind attribute: the attribute's name (`hat`, `gloves`); the crops are in
    /// `with_<name>/` and `without_<name>/`.
    #[arg(long)]
    pub name: Option<String>,
    /// With --kind attribute: the part of the person the head judges, cut from each crop as the
    /// rule cuts it (the `part` of the `attribute_missing` rules that use the head).
    #[arg(long, value_enum, default_value = "head")]
    pub part: PartArg,
    /// A site's own labelled crops (repeatable): folders with `with_mask/` and `without_mask/`
    /// images (no-mask head; always training data), `clean/` and `dirty/` (dirty head; always
    /// training data), or `with_<name>/` and `without_<name>/` (attribute head: split by image
    /// into a fit and an evaluation part).
    #[arg(long)]
    pub crops: Vec<PathBuf>,
    /// With --kind attribute: labelled scenes (repeatable), Pascal VOC (`annotations/*.xml`,
    /// `images/*.jpg`) with boxes `with_<name>` / `without_<name>` on the part: each person found
    /// whose part holds one box takes its label (split by image as the crops).
    #[arg(long)]
    pub scenes: Vec<PathBuf>,
    #[arg(long, default_value_t = 24.0)]
    pub min_face_px: f32,
    /// L2 strengths of the logistic head to choose among (by cross-validation on the fit part;
    /// with --kind dirty the default grid is 0.01,0.03,0.1,0.3,1).
    #[arg(long, value_delimiter = ',', default_values_t = [0.003, 0.01, 0.03])]
    pub l2: Vec<f32>,
    /// Precision at which cross-validation compares recall.
    #[arg(long, default_value_t = 0.95)]
    pub target_precision: f64,
    /// Fit on the scenes' fit part only, without the image-level labelled crops
    /// (mask/with_mask, mask/without_mask; the evaluation part of the scenes is never used).
    #[arg(long)]
    pub scenes_only: bool,
    /// Train on the `mask_weared_incorrect` faces as negatives (measured: no gain on the
    /// evaluation part, so off by default).
    #[arg(long)]
    pub hard_negatives: bool,
    /// Train on every face's mirror image too (measured: no gain, twice the fitting time).
    #[arg(long)]
    pub mirror: bool,
    /// Test-time flip: average each face's features with its mirror image's, in training and at
    /// inference (twice the classifier runs per face).
    #[arg(long)]
    pub flip: bool,
    /// Face-detector input width when measuring the scenes (0: each image's own width; the
    /// scenes are 400-600 px wide, so 640 zooms about 1.5x, as `input_width = 960` does on a
    /// 640-wide analysis frame).
    #[arg(long, default_value_t = 640)]
    pub face_width: u32,
    /// Hidden tanh units of an MLP head (0: logistic regression).
    #[arg(long, default_value_t = 0)]
    pub hidden: usize,
    /// Crop-view sets to choose among, `;`-separated lists of crop margins or `lower` (the lower
    /// face: nose, mouth and chin; measured, not in the default sets: docs "Detection quality").
    #[arg(long, default_value = "0;0,0.15;0,0.15,0.3")]
    pub views: String,
    /// The classifier whose `features` output the head reads (models/<id>.toml); e.g.
    /// mask-classifier-mobilenetv2-features-ml from `models/make_features_model.py
    /// --multi-layer` (features from four layers; measured, not shipped).
    #[arg(long, default_value = crate::eval::backbone::FEATURES_MODEL)]
    pub features_model: String,
    /// Recolouring sets to choose among, `;`-separated: `none`, or names from `grey` (luma only),
    /// `hue` (hue turned 120° and 240°), `dark` (lower face darkened) joined by `,`; each training
    /// face is added once more per recolouring (not with --flip).
    #[arg(long, default_value = "none")]
    pub recolour: String,
    /// Learn from the officers' decisions: refit the attribute head of the `attribute_missing`
    /// rule `--rule` from the decided items in the pipeline's store (approved or reminded:
    /// missing; rejected as a false alarm: not), and promote it only if it beats the current head
    /// on the frozen evaluation part of the decisions. A report either way.
    #[arg(long, requires = "rule")]
    pub from_reviews: bool,
    /// With --from-reviews: the pipeline whose store, keys, models and rule are used.
    #[arg(long, default_value = "pipelines/demo.toml")]
    pub pipeline: PathBuf,
    /// With --from-reviews: the rule's id (`cameras.rules.id`).
    #[arg(long)]
    pub rule: Option<String>,
    /// With --from-reviews: measure and report, never promote.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn eval(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let a = crate::eval::report::EvalArgs {
        data: a.data,
        models: a.models,
        out: a.out,
        heads: a.head.into_iter().filter(|h| h != "none").collect(),
        target_precision: a.target_precision,
        min_face_px: a.min_face_px,
        all: a.all,
        dirty_head: Some(a.dirty_head).filter(|h| h != "none"),
        face_widths: a.face_widths,
        tile_pass: a.tile_pass,
        person_pass: a.person_pass,
        face_width: a.face_width,
    };
    crate::eval::report::eval(&a)?;
    Ok(ExitCode::SUCCESS)
}

pub fn clips(a: ClipsArgs) -> anyhow::Result<ExitCode> {
    let p = match super::load(&a.pipeline) {
        Ok(p) => p,
        Err(c) => return Ok(c),
    };
    if !a.encodes.is_empty() {
        return encodes(&a, &p);
    }
    let scores = crate::eval::clips::eval_clips(&a.labels, &a.data, &p, std::path::Path::new("."))?;
    println!(
        "| variant | violations detected | recall | fires | false fires | precision | inferred / gated frames | on a motion part | detections tracked | analysis ms / frame |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for s in &scores {
        println!(
            "| {} | {} of {} | {:.2} | {} | {} | {:.2} | {} / {} | {} | {} | {:.1} |",
            s.variant,
            s.detected,
            s.intervals,
            s.recall(),
            s.fires,
            s.false_fires,
            s.precision(),
            s.inferred,
            s.gated,
            s.partial,
            s.detections,
            1000.0 * s.analysis_s / s.frames.max(1) as f64
        );
    }
    if let Some(s) = scores.first() {
        println!("\nBy rule kind, {}:\n", s.variant);
        println!("| kind | clips | violations detected | fires | false fires |");
        println!("| --- | --- | --- | --- | --- |");
        for (kind, k) in &s.by_kind {
            println!("| {kind} | {} | {} of {} | {} | {} |", k.clips, k.detected, k.intervals, k.fires, k.false_fires);
        }
    }
    println!();
    for s in &scores {
        for (clip, fires) in &s.per_clip {
            let f: Vec<String> = fires.iter().map(|t| format!("{t:.1}")).collect();
            println!("{} | {clip}: fires at [{}] s", s.variant, f.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `vigil eval-clips --encodes`: the configured rules on each clip as recorded and re-encoded.
fn encodes(a: &ClipsArgs, p: &crate::config::Pipeline) -> anyhow::Result<ExitCode> {
    let encodes =
        a.encodes.iter().map(|e| crate::ingest::files::Encode::parse(e)).collect::<anyhow::Result<Vec<_>>>()?;
    let work = std::env::temp_dir().join(format!("vigil-encodes-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let r = crate::eval::clips::eval_encodes(&a.labels, &a.data, p, std::path::Path::new("."), &encodes, &work);
    std::fs::remove_dir_all(&work).ok();
    let scores = r?;
    println!(
        "| encode | bitrate reached, kbit/s | violations detected | fires | false fires | clips whose events differ from as recorded |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let recorded = &scores[0];
    for s in &scores {
        let differ: Vec<&str> = s
            .per_clip
            .iter()
            .zip(&recorded.per_clip)
            .filter(|((_, f), (_, g))| f.len() != g.len())
            .map(|((c, _), _)| c.as_str())
            .collect();
        println!(
            "| {} | {:.0} | {} of {} | {} | {} | {} |",
            s.variant,
            s.video_bytes as f64 * 8.0 / s.video_s.max(1e-9) / 1000.0,
            s.detected,
            s.intervals,
            s.fires,
            s.false_fires,
            if differ.is_empty() { "none".to_string() } else { differ.join(", ") }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn fit(a: FitArgs) -> anyhow::Result<ExitCode> {
    let default_l2 = a.l2 == [0.003, 0.01, 0.03];
    if a.from_reviews {
        return from_reviews(&a, default_l2);
    }
    if a.rule.is_some() || a.dry_run {
        anyhow::bail!("--rule and --dry-run are for --from-reviews");
    }
    if a.kind == HeadKind::Attribute {
        let name = a.name.as_deref().context("--kind attribute needs --name (the attribute: hat, gloves, ...)")?;
        let id = a.id.clone().unwrap_or_else(|| crate::eval::attribute::head_id(name));
        let l2 = if default_l2 { vec![0.01, 0.03, 0.1, 0.3, 1.0] } else { a.l2.clone() };
        let src = crate::eval::attribute::Sources { crops: &a.crops, scenes: &a.scenes };
        let (f, r) = crate::eval::attribute::fit_attribute(name, a.part.into(), &src, &a.models, &id, &l2)?;
        println!(
            "chosen l2 {}; fitted on {} examples ({} without {name}); data SHA-256 {}",
            r.l2, r.fit_examples, r.fit_missing, r.data_sha256
        );
        for (what, e) in [("crops", &r.crops), ("persons in the scenes", &r.scenes)] {
            if let Some((e, n)) = e {
                println!(
                    "evaluation part, {what} ({n}, never fitted on) @ 0.5: missing P {:.2} R {:.2} F1 {:.2} (tp {} fp {} fn {})",
                    e.precision, e.recall, e.f1, e.tp, e.fp, e.fn_
                );
            }
        }
        println!("wrote {}", f.display());
        return Ok(ExitCode::SUCCESS);
    }
    if a.name.is_some() || !a.scenes.is_empty() {
        anyhow::bail!("--name and --scenes are for --kind attribute");
    }
    if a.kind == HeadKind::Dirty {
        let id = a.id.as_deref().unwrap_or("dirty-head-fitted");
        let l2 = if default_l2 { vec![0.01, 0.03, 0.1, 0.3, 1.0] } else { a.l2.clone() };
        let (f, r) = crate::eval::dishes::fit_dirty(&a.data, &a.crops, &a.models, id, &l2)?;
        let e = &r.evaluation;
        let l = &r.loo_all;
        println!(
            "chosen l2 {}; fitted on {} shared photos (fit part) + {} site photos",
            r.l2, r.fit_images, r.site_images
        );
        println!(
            "evaluation part @ 0.5: dirty P {:.2} R {:.2} F1 {:.2} (tp {} fp {} fn {})",
            e.precision, e.recall, e.f1, e.tp, e.fp, e.fn_
        );
        println!(
            "leave-one-image-out over all shared photos @ 0.5: dirty P {:.2} R {:.2} F1 {:.2} (tp {} fp {} fn {})",
            l.precision, l.recall, l.f1, l.tp, l.fp, l.fn_
        );
        println!("wrote {}", f.display());
        return Ok(ExitCode::SUCCESS);
    }
    let f = crate::eval::fit::fit(&crate::eval::fit::FitArgs {
        data: &a.data,
        models: &a.models,
        id: a.id.as_deref().unwrap_or("mask-head-fitted"),
        site_crops: &a.crops,
        min_face_px: a.min_face_px,
        l2: &a.l2,
        with_crops: !a.scenes_only,
        target_precision: a.target_precision,
        levers: crate::eval::TrainingLevers {
            hard_negatives: a.hard_negatives,
            mirror: a.mirror,
            flip: a.flip,
            recolour: Default::default(),
        },
        hidden: a.hidden,
        face_width: a.face_width,
        view_sets: parse_view_sets(&a.views)?,
        features_model: &a.features_model,
        recolour_sets: a.recolour.split(';').map(crate::eval::Recolours::parse).collect::<anyhow::Result<_>>()?,
    })?;
    println!("wrote {}", f.display());
    Ok(ExitCode::SUCCESS)
}

/// `vigil fit --from-reviews`: prints the comparison; exit 0 when promoted, 3 when refused (or a
/// dry run), so a script can tell.
fn from_reviews(a: &FitArgs, default_l2: bool) -> anyhow::Result<ExitCode> {
    let p = match super::load(&a.pipeline) {
        Ok(p) => p,
        Err(c) => return Ok(c),
    };
    let l2 = if default_l2 { vec![0.01, 0.03, 0.1, 0.3, 1.0, 3.0] } else { a.l2.clone() };
    let rule = a.rule.as_deref().unwrap_or_default();
    let args = crate::eval::reviews::Args { pipeline: &p, rule, l2s: &l2, dry_run: a.dry_run };
    let (r, file) = super::block_on(crate::eval::reviews::fit_from_reviews(&args))?;
    println!(
        "rule {} (head {}): {} items; {} confirmed, {} false alarms; fit part {}, evaluation part {}",
        r.rule, r.head, r.items, r.positives, r.negatives, r.fit_examples, r.evaluation_examples
    );
    for (why, n) in &r.left_out {
        println!("  left out: {n} {why}");
    }
    println!("| head | version | evaluation part: P / R / F1 @ {} (tp fp fn) |", r.current.evaluation.threshold);
    println!("| --- | --- | --- |");
    for (name, s) in [("current", Some(&r.current)), ("refit", r.refit.as_ref())] {
        if let Some(s) = s {
            let e = &s.evaluation;
            println!(
                "| {name} | {} | {:.2} / {:.2} / {:.2} ({} {} {}) |",
                s.version, e.precision, e.recall, e.f1, e.tp, e.fp, e.fn_
            );
        }
    }
    println!("{}", r.why);
    println!("report: {}", file.display());
    if r.promoted {
        println!("restart the workers to judge with it (heads are loaded at start)");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(3))
    }
}

/// `"0;0,0.15;0,lower"` → [[0.0], [0.0, 0.15], [0.0, LOWER_FACE]].
fn parse_view_sets(s: &str) -> anyhow::Result<Vec<Vec<f32>>> {
    s.split(';')
        .map(|set| {
            set.split(',')
                .map(|v| match v.trim() {
                    "lower" => Ok(crate::detect::mask::LOWER_FACE),
                    m => {
                        m.parse::<f32>().ok().filter(|m| (0.0..=1.0).contains(m)).ok_or_else(|| {
                            anyhow::anyhow!("--views: {v:?} is neither a crop margin (0 to 1) nor `lower`")
                        })
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn views_name_crop_margins_or_the_lower_face() {
        use crate::detect::mask::LOWER_FACE;
        assert_eq!(super::parse_view_sets("0;0, lower").unwrap(), vec![vec![0.0], vec![0.0, LOWER_FACE]]);
        for bad in ["0,-1", "0,1.5", "0,chin"] {
            let e = super::parse_view_sets(bad).unwrap_err().to_string();
            assert!(e.contains("--views") && e.contains("neither a crop margin"), "{bad}: {e}");
        }
    }
}
