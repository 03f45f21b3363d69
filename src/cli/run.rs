//! `vigil run`: the worker.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(clap::Args)]
pub struct Args {
    /// pipelines/<site>.toml
    pub pipeline: PathBuf,
    /// This worker's id (over `worker.id`; default: the host name). With `[cluster]`, each worker
    /// of a site needs its own.
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Local state folder (over `worker.data_dir`): outbox, spool, chain state. Several workers
    /// on one machine need one each.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub fn run(a: Args) -> ExitCode {
    let mut p = match super::load(&a.pipeline) {
        Ok(p) => p,
        Err(c) => return c,
    };
    if let Some(id) = a.worker_id {
        if !crate::rules::valid_id(&id) {
            eprintln!("error: --worker-id {id:?}: use 1-64 characters of A-Z a-z 0-9 - _");
            return ExitCode::from(2);
        }
        p.settings.worker.id = Some(id);
    }
    if let Some(d) = a.data_dir {
        p.data_dir = d;
    }
    if let Err(e) = gstreamer::init() {
        eprintln!("error: GStreamer: {e}");
        return ExitCode::from(2);
    }
    crate::util::secret::install_crypto_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        let shutdown = Arc::new(AtomicBool::new(false));
        let sd = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::info!("shutdown requested: stopping intake, finishing clips in flight");
            sd.store(true, Ordering::SeqCst);
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        });
        match crate::control::run(p, shutdown).await {
            Ok(s) => {
                let failed = s.failed_cameras();
                for (id, c) in &failed {
                    eprintln!("error: camera {id} {}", c.end.describe());
                }
                for (id, c) in
                    s.cameras.iter().filter(|(_, c)| !c.failed && matches!(c.end, crate::ingest::CameraEnd::Down(..)))
                {
                    eprintln!("warning: camera {id} {}", c.end.describe());
                }
                if s.refused > 0 {
                    eprintln!("error: {} violation(s) not cut because the spool was full (see log)", s.refused);
                }
                if s.evidence_failures > 0 {
                    eprintln!("error: {} evidence item(s) could not be produced (see log)", s.evidence_failures);
                }
                if s.quarantined > 0 {
                    eprintln!(
                        "error: {} evidence item(s) set aside in spool-quarantine (kept; see each REASON file)",
                        s.quarantined
                    );
                }
                if failed.is_empty() && s.evidence_failures == 0 && s.refused == 0 && s.quarantined == 0 {
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
