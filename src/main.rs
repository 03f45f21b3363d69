//! `vigil` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand, ValueEnum};
use vigil::config::Pipeline;

#[derive(Parser)]
#[command(name = "vigil", version, about = "Video-analytics worker: RTSP → privacy mask → ONNX → rules → evidence")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every camera of a pipeline file until the sources end or SIGINT/SIGTERM.
    Run {
        /// pipelines/<site>.toml
        pipeline: PathBuf,
    },
    /// Validate a pipeline file (config keys, masks, zones, model hashes) and exit.
    Check { pipeline: PathBuf },
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Verify stored evidence: artifact hashes, signatures, chains, checkpoints. Exit 1 on any
    /// failure.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this evidence item (and its chain position).
        #[arg(long)]
        evidence: Option<String>,
        /// Only this camera.
        #[arg(long)]
        camera: Option<String>,
        #[command(flatten)]
        range: TimeRange,
        /// JSON report instead of text.
        #[arg(long)]
        json: bool,
        /// Verify as of this time (RFC 3339; default now): decides which items have expired.
        #[arg(long)]
        now: Option<String>,
    },
    /// Reviewers' tools.
    #[command(subcommand)]
    Evidence(EvidenceCmd),
    /// Retention.
    #[command(subcommand)]
    Retention(RetentionCmd),
    /// Measure detection quality on labelled data (scenes split by image; crops); write a JSON
    /// report and a PR plot.
    Eval {
        /// The data folder (../shared/data).
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        #[arg(long, default_value = "models")]
        models: PathBuf,
        #[arg(long, default_value = "vigil-data/eval")]
        out: PathBuf,
        /// Also evaluate a fitted head (models/<id>.toml).
        #[arg(long)]
        head: Option<String>,
        #[arg(long, default_value_t = 0.9)]
        target_precision: f64,
        #[arg(long, default_value_t = 24.0)]
        min_face_px: f32,
    },
    /// Event-level precision and recall of the full rules (tracking, temporal rule, cooldown,
    /// dwell) on labelled clips, with motion gating on and off and both temporal rules.
    EvalClips {
        /// Folder of label files (clip, rule, violation intervals).
        #[arg(long, default_value = "tests/labels")]
        labels: PathBuf,
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        #[arg(long, default_value = "models")]
        models: PathBuf,
    },
    /// Rule thresholds and parameters in the NATS KV bucket that running workers follow.
    #[command(subcommand)]
    Thresholds(ThresholdsCmd),
    /// End-to-end throughput benchmark over N concurrent sample streams, with the decode-only and
    /// inference-only floors measured on the same streams.
    Bench {
        /// The pipeline whose models, analysis settings and rules are used.
        #[arg(long, default_value = "pipelines/demo.toml")]
        pipeline: PathBuf,
        /// Numbers of concurrent streams to run, e.g. 1,2,4.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        streams: Vec<usize>,
        /// The clip each stream plays (as fast as analysis allows).
        #[arg(long, default_value = "sample-streams/astronaut-pan.mp4")]
        clip: PathBuf,
        /// Also run with motion gating off, to show what it saves.
        #[arg(long)]
        compare_gating: bool,
        /// Write the results as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Fit a no-mask head on the backbone features of the labelled scenes' fit part.
    Fit {
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        #[arg(long, default_value = "models")]
        models: PathBuf,
        /// Head id: writes models/<id>.json and models/<id>.toml.
        #[arg(long, default_value = "mask-head-fitted")]
        id: String,
        #[arg(long, default_value_t = 24.0)]
        min_face_px: f32,
        /// L2 strengths of the logistic head to choose among (by cross-validation on the fit part).
        #[arg(long, value_delimiter = ',', default_values_t = [0.003, 0.01, 0.03])]
        l2: Vec<f32>,
        /// Precision at which cross-validation compares recall.
        #[arg(long, default_value_t = 0.9)]
        target_precision: f64,
        /// Fit on the scenes' fit part only, without the image-level labelled crops
        /// (mask/with_mask, mask/without_mask; the evaluation part of the scenes is never used).
        #[arg(long)]
        scenes_only: bool,
    },
}

#[derive(clap::Args)]
struct KvArgs {
    /// NATS server the workers use.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// KV bucket (pipeline `control.kv_bucket`).
    #[arg(long, default_value = "vigil-thresholds")]
    bucket: String,
    #[arg(long)]
    site: String,
}

#[derive(Subcommand)]
enum ThresholdsCmd {
    /// Show the overrides in force (KV values over the pipeline files' rules).
    Get {
        #[command(flatten)]
        kv: KvArgs,
        #[arg(long)]
        camera: Option<String>,
    },
    /// Change rule parameters: `vigil thresholds set --site s --camera c --rule no_mask --by alice
    /// threshold=0.8 min_hits=4`. Merged with the override in force; `--clear` returns to the
    /// pipeline file's values.
    Set {
        #[command(flatten)]
        kv: KvArgs,
        #[arg(long)]
        camera: String,
        #[arg(long)]
        rule: String,
        /// Who makes the change (recorded in the audit trail).
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// Validate against this pipeline file first (refuse bad values here).
        #[arg(long)]
        pipeline: Option<PathBuf>,
        #[arg(long)]
        clear: bool,
        /// key=value (value as JSON; plain text is a string).
        params: Vec<String>,
    },
    /// What was written (KV history) and what the workers did with it (audit records).
    History {
        #[command(flatten)]
        kv: KvArgs,
        #[arg(long)]
        camera: String,
        #[arg(long)]
        rule: Option<String>,
        /// JetStream stream holding `vigil.audit.>` (pipeline `publish.stream`).
        #[arg(long, default_value = "VIGIL")]
        stream: String,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Make an Ed25519 key pair: DIR/signing.key (mode 0600; never overwritten) and DIR/signing.pub.
    Init {
        #[arg(long, default_value = "vigil-data/keys")]
        dir: PathBuf,
    },
    /// Print the public key of a key file.
    Public { key: PathBuf },
}

#[derive(Subcommand)]
enum EvidenceCmd {
    /// List evidence items.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        camera: Option<String>,
        #[arg(long)]
        rule: Option<String>,
        /// enforcement | advisory
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        admissible: Option<bool>,
        #[command(flatten)]
        range: TimeRange,
        #[arg(long)]
        json: bool,
    },
    /// Verify one item (hashes, signature, chain position) and, only if it passes, download it.
    Get {
        id: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Decrypt an item's sealed original with the authority's age identity and check its hash.
    Unseal {
        id: String,
        #[arg(long)]
        identity: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum RetentionCmd {
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

/// A range of violation times.
#[derive(clap::Args)]
struct TimeRange {
    /// Only items whose violation time is at or after this (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// ... and at or before this.
    #[arg(long)]
    to: Option<String>,
}

impl TimeRange {
    #[allow(clippy::type_complexity)]
    fn parse(&self) -> anyhow::Result<(Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>)> {
        Ok((time_arg(&self.from)?, time_arg(&self.to)?))
    }
}

/// Which store to read and which key to trust: a pipeline file, or both given explicitly.
#[derive(clap::Args)]
struct StoreArgs {
    /// Take the store and the public key from this pipeline file.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Store URL or directory (overrides the pipeline's).
    #[arg(long)]
    store: Option<String>,
    /// object_store option for --store, KEY=VALUE (repeatable).
    #[arg(long = "store-option")]
    store_options: Vec<String>,
    /// Public key file (vigil-ed25519-public-key:...); default: signing.pub beside the pipeline's key.
    #[arg(long)]
    public_key: Option<PathBuf>,
}

impl StoreArgs {
    fn open(&self) -> anyhow::Result<(vigil::store::Store, vigil::manifest::PublicKey)> {
        use anyhow::Context;
        let p = match &self.pipeline {
            Some(f) => Some(Pipeline::load(f).map_err(|e| anyhow::anyhow!("invalid pipeline configuration:\n{e}"))?),
            None => None,
        };
        let mut options = p.as_ref().map(|p| p.raw.store.options.clone()).unwrap_or_default();
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
        let store = vigil::store::Store::open(&url, &options)?;
        let key_file = match (&self.public_key, &p) {
            (Some(k), _) => k.clone(),
            (None, Some(p)) => {
                let pubf = p.key_path.with_file_name("signing.pub");
                if pubf.exists() { pubf } else { p.key_path.clone() }
            }
            (None, None) => anyhow::bail!("say which key to trust: --public-key FILE (or --pipeline FILE)"),
        };
        Ok((store, vigil::manifest::PublicKey::load(&key_file)?))
    }
}

fn time_arg(s: &Option<String>) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    s.as_ref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| anyhow::anyhow!("{t:?} is not an RFC 3339 time: {e}"))
        })
        .transpose()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio").block_on(f)
}

/// Runs a tool command: errors print as `error: …` and exit 2.
fn tool(f: impl FnOnce() -> anyhow::Result<ExitCode>) -> ExitCode {
    match f() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

fn load(path: &std::path::Path) -> Result<Pipeline, ExitCode> {
    Pipeline::load(path).map_err(|e| {
        eprintln!("error: invalid pipeline configuration:\n{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    // glibc gives threads that allocate their own malloc arenas (up to 8 per core), whose free
    // pages stay resident; two are enough here and lowered peak RSS by 5-7 % in `vigil bench`.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match cli.cmd {
        Cmd::Check { pipeline } => {
            let p = match load(&pipeline) {
                Ok(p) => p,
                Err(c) => return c,
            };
            let m = &p.raw.models;
            let mut wanted = vec![(&m.face, "centerface"), (&m.mask, "softmax2")];
            if p.cameras.iter().any(|c| c.rules.utensils.is_some()) {
                wanted.push((&m.objects, "nanodet-gfl"));
            }
            for (id, dec) in wanted {
                if let Err(e) = vigil::detect::ModelInfo::load(&p.models_dir, id, dec) {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
            }
            println!("{}: ok ({} cameras)", pipeline.display(), p.cameras.len());
            ExitCode::SUCCESS
        }
        Cmd::Keys(KeysCmd::Init { dir }) => tool(|| {
            let s = vigil::manifest::Signer::init(&dir)?;
            println!(
                "key id {}\nsecret key {} (mode 0600)\npublic key {}\n{}",
                s.key_id,
                dir.join("signing.key").display(),
                dir.join("signing.pub").display(),
                s.public_text()
            );
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Keys(KeysCmd::Public { key }) => tool(|| {
            let k = vigil::manifest::PublicKey::load(&key)?;
            println!("{}", vigil::manifest::Signer::public_text_of(&k));
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Verify { store, evidence, camera, range, json, now } => tool(|| {
            let (s, k) = store.open()?;
            let (from, to) = range.parse()?;
            let scope = vigil::verify::Scope { evidence_id: evidence, camera, from, to };
            let now = time_arg(&now)?.unwrap_or_else(chrono::Utc::now);
            let r = block_on(vigil::verify::verify(&s, &k, &scope, now))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.human());
            }
            Ok(if r.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }),
        Cmd::Evidence(EvidenceCmd::List { store, site, camera, rule, status, admissible, range, json }) => tool(|| {
            let (s, k) = store.open()?;
            let (from, to) = range.parse()?;
            let f = vigil::verify::ListFilter { site, camera, rule, status, admissible, from, to };
            let items = block_on(vigil::verify::list(&s, &k, &f))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!(
                    "{:<26}  {:<24}  {:<14}  {:<10}  {:<11}  {:<10}  seq",
                    "evidence id", "violation (UTC)", "camera", "rule", "status", "admissible"
                );
                for i in &items {
                    println!(
                        "{:<26}  {:<24}  {:<14}  {:<10}  {:<11}  {:<10}  {}{}",
                        i.evidence_id,
                        i.violation_time_utc,
                        i.camera,
                        i.rule,
                        i.status,
                        i.admissible,
                        i.chain_seq,
                        if i.signature_ok { "" } else { "  SIGNATURE FAILED" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Evidence(EvidenceCmd::Get { id, out, store }) => tool(|| {
            let (s, k) = store.open()?;
            let fetched = block_on(vigil::verify::get(&s, &k, &id, &out, chrono::Utc::now()))?;
            for w in &fetched.warnings {
                eprintln!("warning: elsewhere in this camera's chain: {w}");
            }
            for f in &fetched.written {
                println!("{f}");
            }
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Evidence(EvidenceCmd::Unseal { id, identity, out, store }) => tool(|| {
            let (s, k) = store.open()?;
            println!("{}", block_on(vigil::verify::unseal(&s, &k, &id, &identity, &out, chrono::Utc::now()))?);
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Retention(RetentionCmd::Sweep { pipeline, now, dry_run }) => tool(|| {
            let args =
                StoreArgs { pipeline: Some(pipeline.clone()), store: None, store_options: vec![], public_key: None };
            let (s, k) = args.open()?;
            let p = Pipeline::load(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
            let now = time_arg(&now)?.unwrap_or_else(chrono::Utc::now);
            let r = block_on(vigil::retention::sweep(&s, &k, p.raw.retention.image_days, now, dry_run))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Eval { data, models, out, head, target_precision, min_face_px } => tool(|| {
            let a = vigil::evalcmd::EvalArgs { data, models, out, head, target_precision, min_face_px };
            vigil::evalcmd::eval(&a)?;
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::EvalClips { labels, data, models } => tool(|| {
            let scores = vigil::evalcmd::eval_clips(&labels, &data, &models, std::path::Path::new("."))?;
            println!(
                "| variant | violations detected | recall | fires | false fires | precision | inferred / gated frames |"
            );
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
        }),
        Cmd::Thresholds(ThresholdsCmd::Get { kv, camera }) => tool(|| {
            let rows = block_on(vigil::thresholds::get(&kv.nats, &kv.bucket, &kv.site, camera.as_deref()))?;
            if rows.is_empty() {
                println!("no overrides: the pipeline files' values are in force");
            }
            for (k, rev, v) in rows {
                println!("{k} (revision {rev}): {v}");
            }
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Thresholds(ThresholdsCmd::Set { kv, camera, rule, by, reason, pipeline, clear, params }) => tool(|| {
            let set = vigil::thresholds::parse_assignments(&params)?;
            if set.is_empty() && !clear {
                anyhow::bail!("nothing to set: give key=value pairs, or --clear");
            }
            let rev = block_on(vigil::thresholds::set(
                &kv.nats,
                &kv.bucket,
                &kv.site,
                &camera,
                &rule,
                &by,
                &reason,
                set,
                clear,
                pipeline.as_deref(),
            ))?;
            println!(
                "{}.{camera}.{rule}: revision {rev} written; workers validate and apply it between frames (see `vigil thresholds history`)",
                kv.site
            );
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Thresholds(ThresholdsCmd::History { kv, camera, rule, stream }) => tool(|| {
            block_on(async {
                if let Some(r) = &rule {
                    let key = format!("{}.{camera}.{r}", kv.site);
                    println!("written to {}/{key}:", kv.bucket);
                    for (rev, o) in vigil::thresholds::kv_history(&kv.nats, &kv.bucket, &key).await? {
                        match o {
                            Some(Err(raw)) => println!("  rev {rev}  invalid value {raw:?}"),
                            Some(Ok(o)) => println!(
                                "  rev {rev}  {}  by {}  {}  set {}",
                                o.at,
                                o.by,
                                if o.reason.is_empty() { String::new() } else { format!("({})", o.reason) },
                                serde_json::Value::Object(o.set)
                            ),
                            None => println!("  rev {rev}  deleted (back to the pipeline file's values)"),
                        }
                    }
                }
                println!("applied or rejected by the workers (vigil.audit.{}.{camera}):", kv.site);
                for a in vigil::thresholds::audit_history(&kv.nats, &stream, &kv.site, Some(&camera)).await? {
                    if rule.as_ref().is_some_and(|r| r != &a.rule && a.rule != "*") {
                        continue;
                    }
                    println!("  {}", serde_json::to_string(&a)?);
                }
                Ok(ExitCode::SUCCESS)
            })
        }),
        Cmd::Bench { pipeline, streams, clip, compare_gating, json } => {
            let p = match load(&pipeline) {
                Ok(p) => p,
                Err(c) => return c,
            };
            tool(|| vigil::bench::run(p, &streams, &clip, compare_gating, json.as_deref()).map(|_| ExitCode::SUCCESS))
        }
        Cmd::Fit { data, models, id, min_face_px, l2, target_precision, scenes_only } => tool(|| {
            let f = vigil::evalcmd::fit(&vigil::evalcmd::FitArgs {
                data: &data,
                models: &models,
                id: &id,
                min_face_px,
                l2: &l2,
                with_crops: !scenes_only,
                target_precision,
            })?;
            println!("wrote {}", f.display());
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Run { pipeline } => {
            let p = match load(&pipeline) {
                Ok(p) => p,
                Err(c) => return c,
            };
            if let Err(e) = gstreamer::init() {
                eprintln!("error: GStreamer: {e}");
                return ExitCode::from(2);
            }
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
            rt.block_on(async move {
                let shutdown = Arc::new(AtomicBool::new(false));
                let sd = shutdown.clone();
                tokio::spawn(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
                    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                    tracing::info!("shutdown requested: stopping intake, finishing clips in flight");
                    sd.store(true, Ordering::SeqCst);
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                    tracing::warn!("second signal: exiting now");
                    std::process::exit(130);
                });
                match vigil::control::run(p, shutdown).await {
                    Ok(s) => {
                        let failed = s.failed_cameras();
                        for (id, c) in &failed {
                            eprintln!("error: camera {id} {}", c.end);
                        }
                        if s.refused > 0 {
                            eprintln!("error: {} violation(s) not cut because the spool was full (see log)", s.refused);
                        }
                        if s.evidence_failures > 0 {
                            eprintln!(
                                "error: {} evidence item(s) could not be produced (see log)",
                                s.evidence_failures
                            );
                        }
                        if failed.is_empty() && s.evidence_failures == 0 && s.refused == 0 {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(1)
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::from(1)
                    }
                }
            })
        }
    }
}
