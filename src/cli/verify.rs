//! `vigil verify`: re-hash every artifact, check every signature and chain.

use std::path::PathBuf;
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
    /// The review service's public key: also check review records and the access log (default
    /// with --pipeline: review.pub beside `[review] key`).
    #[arg(long)]
    pub review_key: Option<PathBuf>,
    /// Check an exported evidence package offline instead of a store (with --public-key, and
    /// --review-key or the key inside the package).
    #[arg(long)]
    pub package: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(pkg) = &a.package {
        let worker = match (&a.store.public_key, &a.store.pipeline) {
            (Some(k), _) => crate::signing::PublicKey::load(k)?,
            (None, Some(_)) => a.store.open()?.1,
            (None, None) => anyhow::bail!("give the workers' public key: --public-key FILE"),
        };
        let rk = a.review_key.as_deref().map(crate::signing::PublicKey::load).transpose()?;
        let r = crate::review::package::verify_package(pkg, &worker, rk.as_ref())?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!("package {} (SHA-256 {})", pkg.display(), r.package_sha256);
            println!(
                "evidence {}: {} file(s) checked; review status {}",
                r.evidence_id,
                r.files_checked,
                r.review_status.map_or("unknown (no trusted review key)", |s| s.name())
            );
            if let Some(k) = &r.trusted_review_key {
                println!("review records checked against key {k}");
            }
            if let Some(o) = &r.exported_by {
                println!("exported by {} ({})", o.user, o.officer_id);
            }
            for l in &r.suites {
                println!("{l}");
            }
            for w in &r.warnings {
                println!("WARNING {w}");
            }
            for p in &r.problems {
                println!("FAIL {p}");
            }
            println!(
                "{}",
                if r.ok { "OK: package intact, evidence verified, approved by two officers" } else { "FAILED" }
            );
        }
        return Ok(if r.ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    let (s, k) = a.store.open()?;
    let (from, to) = a.range.parse()?;
    let scope = crate::verify::Scope { evidence_id: a.evidence, camera: a.camera, from, to };
    let now = time_arg(&a.now)?.unwrap_or_else(chrono::Utc::now);
    let pipeline = a.store.pipeline.as_ref().and_then(|p| crate::config::Pipeline::load(p).ok());
    let rk = match (&a.review_key, &pipeline) {
        (Some(f), _) => Some(crate::signing::PublicKey::load(f)?),
        (None, Some(p)) => super::review::review_public_key(p).ok(),
        (None, None) => None,
    };
    // with NATS, also against the stream: the store's owner cannot rewrite what it holds
    let nats = pipeline.as_ref().and_then(|p| {
        let stream = p.settings.publish.stream.clone().unwrap_or_else(|| "VIGIL".into());
        p.nats.clone().map(|n| (n, stream))
    });
    let r = block_on(crate::verify::verify_against(&s, &k, rk.as_ref(), nats.as_ref(), &scope, now))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", r.human());
        println!("{}", k.checks.summary());
        println!(
            "digests: SHA-256 on every artifact; SM3 on {} artifact(s) whose manifest gives one",
            crate::verify::SM3_CHECKED.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    Ok(if r.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
