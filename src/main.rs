//! `vigil` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand, ValueEnum};
use vigil::config::Pipeline;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Video-analytics worker: RTSP → privacy mask → ONNX → rules → evidence"
)]
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
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match cli.cmd {
        Cmd::Check { pipeline } => {
            let p = match load(&pipeline) {
                Ok(p) => p,
                Err(c) => return c,
            };
            let m = &p.raw.models;
            for id in [&m.face, &m.mask] {
                let dec = if id == &m.face {
                    "centerface"
                } else {
                    "softmax2"
                };
                if let Err(e) = vigil::detect::ModelInfo::load(&p.models_dir, id, dec) {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
            }
            println!("{}: ok ({} cameras)", pipeline.display(), p.cameras.len());
            ExitCode::SUCCESS
        }
        Cmd::Run { pipeline } => {
            let p = match load(&pipeline) {
                Ok(p) => p,
                Err(c) => return c,
            };
            if let Err(e) = gstreamer::init() {
                eprintln!("error: GStreamer: {e}");
                return ExitCode::from(2);
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio");
            rt.block_on(async move {
                let shutdown = Arc::new(AtomicBool::new(false));
                let sd = shutdown.clone();
                tokio::spawn(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
                    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                    tracing::info!(
                        "shutdown requested: stopping intake, finishing clips in flight"
                    );
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
                        if s.evidence_failures > 0 {
                            eprintln!(
                                "error: {} evidence item(s) could not be produced (see log)",
                                s.evidence_failures
                            );
                        }
                        if failed.is_empty() && s.evidence_failures == 0 {
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
