//! `vigil eval`, `vigil eval-clips`, `vigil fit`: detection quality, and fitting the no-mask head.

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
    /// Also evaluate a fitted head (models/<id>.toml).
    #[arg(long)]
    pub head: Option<String>,
    #[arg(long, default_value_t = 0.9)]
    pub target_precision: f64,
    #[arg(long, default_value_t = 24.0)]
    pub min_face_px: f32,
}

#[derive(clap::Args)]
pub struct ClipsArgs {
    /// Folder of label files (clip, rule, violation intervals).
    #[arg(long, default_value = "tests/labels")]
    pub labels: PathBuf,
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
}

#[derive(clap::Args)]
pub struct FitArgs {
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Head id: writes models/<id>.json and models/<id>.toml.
    #[arg(long, default_value = "mask-head-fitted")]
    pub id: String,
    #[arg(long, default_value_t = 24.0)]
    pub min_face_px: f32,
    /// L2 strengths of the logistic head to choose among (by cross-validation on the fit part).
    #[arg(long, value_delimiter = ',', default_values_t = [0.003, 0.01, 0.03])]
    pub l2: Vec<f32>,
    /// Precision at which cross-validation compares recall.
    #[arg(long, default_value_t = 0.9)]
    pub target_precision: f64,
    /// Fit on the scenes' fit part only, without the image-level labelled crops
    /// (mask/with_mask, mask/without_mask; the evaluation part of the scenes is never used).
    #[arg(long)]
    pub scenes_only: bool,
}

pub fn eval(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let a = crate::eval::report::EvalArgs {
        data: a.data,
        models: a.models,
        out: a.out,
        head: a.head,
        target_precision: a.target_precision,
        min_face_px: a.min_face_px,
    };
    crate::eval::report::eval(&a)?;
    Ok(ExitCode::SUCCESS)
}

pub fn clips(a: ClipsArgs) -> anyhow::Result<ExitCode> {
    let scores = crate::eval::clips::eval_clips(&a.labels, &a.data, &a.models, std::path::Path::new("."))?;
    println!("| variant | violations detected | recall | fires | false fires | precision | inferred / gated frames |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for s in &scores {
        println!(
            "| {} | {} of {} | {:.2} | {} | {} | {:.2} | {} / {} |",
            s.variant,
            s.detected,
            s.intervals,
            s.recall(),
            s.fires,
            s.false_fires,
            s.precision(),
            s.inferred,
            s.gated
        );
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

pub fn fit(a: FitArgs) -> anyhow::Result<ExitCode> {
    let f = crate::eval::fit::fit(&crate::eval::fit::FitArgs {
        data: &a.data,
        models: &a.models,
        id: &a.id,
        min_face_px: a.min_face_px,
        l2: &a.l2,
        with_crops: !a.scenes_only,
        target_precision: a.target_precision,
    })?;
    println!("wrote {}", f.display());
    Ok(ExitCode::SUCCESS)
}
