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
        /// Take this earlier time (RFC 3339) as the current one: delete only what had expired by
        /// then. A time later than the real clock is refused: a destructive command never lets a
        /// clock override make evidence expire early.
        #[arg(long)]
        now: Option<String>,
        /// Show what would be deleted at this time (any time, also in the future); deletes
        /// nothing (implies --dry-run).
        #[arg(long, conflicts_with = "now")]
        simulate_now: Option<String>,
        /// Report what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(c: Cmd) -> anyhow::Result<ExitCode> {
    match c {
        Cmd::Sweep { pipeline, now, simulate_now, dry_run } => {
            let real = chrono::Utc::now();
            let (now, dry_run) = match (time_arg(&now)?, time_arg(&simulate_now)?) {
                (Some(t), _) if t > real => anyhow::bail!(
                    "--now {} is later than the real clock ({}): retention never deletes by a clock moved forward; \
                     use --simulate-now to see what would expire then (deletes nothing)",
                    crate::util::rfc3339(t),
                    crate::util::rfc3339(real)
                ),
                (Some(t), _) => (t, dry_run),
                (None, Some(t)) => (t, true),
                (None, None) => (real, dry_run),
            };
            let (s, k) = StoreArgs::of_pipeline(pipeline.clone()).open()?;
            let p = crate::config::Pipeline::load(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
            let r = block_on(crate::retention::sweep(&s, &k, p.settings.retention.image_days, now, dry_run))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
