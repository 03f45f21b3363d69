//! The `vigil` command line: one file per command; this module holds the top-level parser, the
//! arguments several commands share, and the dispatch.

pub mod bench;
pub mod check;
pub mod cluster;
pub mod config;
pub mod eval;
pub mod evidence;
pub mod keys;
pub mod retention;
pub mod review;
pub mod run;
pub mod schema;
pub mod thresholds;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Pipeline;

#[derive(Parser)]
#[command(name = "vigil", version, about = "Video-analytics worker: RTSP → privacy mask → ONNX → rules → evidence")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run every camera of a pipeline file until the sources end or SIGINT/SIGTERM.
    Run(run::Args),
    /// Validate a pipeline file (config keys, masks, zones, model hashes) and exit.
    Check(check::Args),
    /// The pipeline file's keys: defaults, ranges, meaning; or its JSON Schema.
    #[command(subcommand)]
    Config(config::Cmd),
    /// Signing keys.
    #[command(subcommand)]
    Keys(keys::Cmd),
    /// The JSON Schema of an event or stored document (event, manifest, checkpoint, review, …).
    Schema(schema::Args),
    /// Verify stored evidence: artifact hashes, signatures, chains, checkpoints. Exit 1 on any
    /// failure.
    Verify(verify::Args),
    /// Reviewers' tools.
    #[command(subcommand)]
    Evidence(evidence::Cmd),
    /// Retention.
    #[command(subcommand)]
    Retention(retention::Cmd),
    /// The evidence review service: two officers approve a candidate before it is evidence.
    #[command(subcommand)]
    Review(review::Cmd),
    /// Measure detection quality on labelled data (scenes split by image; crops); write a JSON
    /// report and a PR plot.
    Eval(eval::EvalArgs),
    /// Event-level precision and recall of the full rules (tracking, temporal rule, cooldown,
    /// dwell) on labelled clips, with motion gating on and off and both temporal rules.
    EvalClips(eval::ClipsArgs),
    /// Fit a head on backbone features: the no-mask head (labelled scenes' fit part and crops),
    /// with --kind dirty the clean/dirty head (labelled plates), with --kind attribute --name NAME
    /// an attribute head for `attribute_missing` (a site's crops in with_NAME/, without_NAME/).
    Fit(eval::FitArgs),
    /// Rule thresholds and parameters in the NATS KV bucket that running workers follow.
    #[command(subcommand)]
    Thresholds(thresholds::Cmd),
    /// Several workers, one site: which worker runs which camera (leases in NATS KV).
    #[command(subcommand)]
    Cluster(cluster::Cmd),
    /// End-to-end throughput benchmark over N concurrent sample streams, with the decode-only and
    /// inference-only floors measured on the same streams.
    Bench(bench::Args),
}

/// Runs the command.
pub fn dispatch(cmd: Cmd) -> ExitCode {
    match cmd {
        Cmd::Run(a) => run::run(a),
        Cmd::Check(a) => check::run(a),
        Cmd::Config(c) => tool(|| config::run(c)),
        Cmd::Keys(c) => tool(|| keys::run(c)),
        Cmd::Schema(a) => tool(|| schema::run(a)),
        Cmd::Verify(a) => tool(|| verify::run(a)),
        Cmd::Evidence(c) => tool(|| evidence::run(c)),
        Cmd::Retention(c) => tool(|| retention::run(c)),
        Cmd::Review(c) => tool(|| review::run(c)),
        Cmd::Eval(a) => tool(|| eval::eval(a)),
        Cmd::EvalClips(a) => tool(|| eval::clips(a)),
        Cmd::Fit(a) => tool(|| eval::fit(a)),
        Cmd::Thresholds(c) => tool(|| thresholds::run(c)),
        Cmd::Cluster(c) => tool(|| cluster::run(c)),
        Cmd::Bench(a) => bench::run(a),
    }
}

/// A range of violation times.
#[derive(clap::Args)]
pub struct TimeRange {
    /// Only items whose violation time is at or after this (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// ... and at or before this.
    #[arg(long)]
    pub to: Option<String>,
}

/// A time range, parsed.
pub type Range = (Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>);

impl TimeRange {
    pub fn parse(&self) -> anyhow::Result<Range> {
        Ok((time_arg(&self.from)?, time_arg(&self.to)?))
    }
}

/// Which store to read and which key to trust: a pipeline file, or both given explicitly.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Take the store and the public key from this pipeline file.
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Store URL or directory (overrides the pipeline's).
    #[arg(long)]
    pub store: Option<String>,
    /// object_store option for --store, KEY=VALUE (repeatable).
    #[arg(long = "store-option")]
    pub store_options: Vec<String>,
    /// Public key file (vigil-ed25519-public-key:...); default: signing.pub beside the pipeline's key.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
}

impl StoreArgs {
    pub fn of_pipeline(p: PathBuf) -> StoreArgs {
        StoreArgs { pipeline: Some(p), store: None, store_options: vec![], public_key: None }
    }

    pub fn open(&self) -> anyhow::Result<(crate::store::Store, crate::signing::PublicKey)> {
        let p = match &self.pipeline {
            Some(f) => Some(Pipeline::load(f).map_err(|e| anyhow::anyhow!("invalid pipeline configuration:\n{e}"))?),
            None => None,
        };
        let mut options = p.as_ref().map(|p| p.settings.store.options.clone()).unwrap_or_default();
        for o in &self.store_options {
            let (k, v) = o.split_once('=').context("--store-option takes KEY=VALUE")?;
            options.insert(k.into(), v.into());
        }
        let url = match (&self.store, &p) {
            (Some(u), _) => u.clone(),
            (None, Some(p)) => p.store_url.clone(),
            (None, None) => anyhow::bail!("say which store: --pipeline FILE or --store URL"),
        };
        if !url.contains("://") && !std::path::Path::new(&url).is_dir() {
            anyhow::bail!("store {url}: no such directory");
        }
        let store = crate::store::Store::open(&url, &options)?;
        let key = match (&self.public_key, &p) {
            (Some(k), _) => crate::signing::PublicKey::load(k)?,
            (None, Some(p)) => {
                let pubf = p.key_path.with_extension("pub");
                if pubf.exists() {
                    crate::signing::PublicKey::load(&pubf)?
                } else {
                    crate::signing::Signer::load(&p.key_path)?.public_key()
                }
            }
            (None, None) => anyhow::bail!("say which key to trust: --public-key FILE (or --pipeline FILE)"),
        };
        Ok((store, key))
    }
}

pub fn time_arg(s: &Option<String>) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    s.as_ref().map(|t| crate::util::time::parse_rfc3339(t).map_err(anyhow::Error::msg)).transpose()
}

/// A current-thread tokio runtime for a tool command.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(f)
}

/// Runs a tool command: errors print as `error: …` and exit 2.
pub fn tool(f: impl FnOnce() -> anyhow::Result<ExitCode>) -> ExitCode {
    match f() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Loads a pipeline file; a problem prints and exits 2.
pub fn load(path: &std::path::Path) -> Result<Pipeline, ExitCode> {
    Pipeline::load(path).map_err(|e| {
        eprintln!("error: invalid pipeline configuration:\n{e}");
        ExitCode::from(2)
    })
}

/// Sets up logging on stderr (`VIGIL_LOG` filter, default `info`).
pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}
