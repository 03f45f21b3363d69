//! `vigil retention sweep`: delete what has passed its retention class.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{StoreArgs, block_on, time_arg};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Delete what has passed its retention class; never anything younger.
    Sweep {
        #[arg(long)]
        pipeline: PathBuf,
        /// Take this as the current time (RFC 3339), for audits and tests.
        #[arg(long)]
        now: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(c: Cmd) -> anyhow::Result<ExitCode> {
    match c {
        Cmd::Sweep { pipeline, now, dry_run } => {
            let (s, k) = StoreArgs::of_pipeline(pipeline.clone()).open()?;
            let p = crate::config::Pipeline::load(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
            let now = time_arg(&now)?.unwrap_or_else(chrono::Utc::now);
            let r = block_on(crate::retention::sweep(&s, &k, p.raw.retention.image_days, now, dry_run))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
