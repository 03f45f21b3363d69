//! `vigil verify`: re-hash every artifact, check every signature and chain.

use std::process::ExitCode;

use super::{StoreArgs, TimeRange, block_on, time_arg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this evidence item (and its chain position).
    #[arg(long)]
    pub evidence: Option<String>,
    /// Only this camera.
    #[arg(long)]
    pub camera: Option<String>,
    #[command(flatten)]
    pub range: TimeRange,
    /// JSON report instead of text.
    #[arg(long)]
    pub json: bool,
    /// Verify as of this time (RFC 3339; default now): decides which items have expired.
    #[arg(long)]
    pub now: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let (s, k) = a.store.open()?;
    let (from, to) = a.range.parse()?;
    let scope = crate::verify::Scope { evidence_id: a.evidence, camera: a.camera, from, to };
    let now = time_arg(&a.now)?.unwrap_or_else(chrono::Utc::now);
    let r = block_on(crate::verify::verify(&s, &k, &scope, now))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", r.human());
    }
    Ok(if r.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
