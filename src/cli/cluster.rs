//! `vigil cluster status`: which worker runs which camera of a site, and each worker's load.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::block_on;
use crate::control::cluster::lease;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Camera → worker, lease age, each live worker's load and dropped frames, from the lease
    /// bucket (NATS and credentials from the pipeline file).
    Status {
        /// The site's pipeline file.
        #[arg(long)]
        pipeline: PathBuf,
        /// JSON: `{"site", "bucket", "lease_ttl_s", "cameras": [{"camera", "worker",
        /// "lease_age_s", "renewed_s_ago", "revision", "acquired_revision"}], "workers": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// A district without video: `--workers` members of the lease protocol (the one `vigil run`
    /// runs) share `--cameras` cameras that run nothing, over the NATS cluster at `--nats`; prints
    /// a JSON line a second (holders, KV writes), then a summary (time to spread every camera,
    /// KV write rate, failover time after `--kill` members die `--kill-at` s after the spread).
    Simulate {
        /// NATS server URLs, comma-separated.
        #[arg(long)]
        nats: String,
        #[arg(long, default_value_t = 5000)]
        cameras: usize,
        #[arg(long, default_value_t = 50)]
        workers: usize,
        /// Lease TTL, seconds (the bucket's max_age).
        #[arg(long, default_value_t = 15.0)]
        ttl: f64,
        /// Most cameras one member takes.
        #[arg(long, default_value_t = 1000)]
        max_cameras: usize,
        /// Replicas of the lease bucket.
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        #[arg(long, default_value_t = 120.0)]
        seconds: f64,
        /// Members killed at once (no hand-over) at `--kill-at`.
        #[arg(long, default_value_t = 0)]
        kill: usize,
        /// Seconds after every camera first had a holder when `--kill` members die.
        #[arg(long, default_value_t = 30.0)]
        kill_at: f64,
        /// The lease bucket (a simulation's own, so that it never touches a site's).
        #[arg(long, default_value = "vigil-sim-leases")]
        bucket: String,
    },
}

pub fn run(c: Cmd) -> anyhow::Result<ExitCode> {
    let (pipeline, json) = match c {
        Cmd::Status { pipeline, json } => (pipeline, json),
        Cmd::Simulate { nats, cameras, workers, ttl, max_cameras, replicas, seconds, kill, kill_at, bucket } => {
            let o = crate::control::cluster::sim::Options {
                nats: crate::util::nats::Endpoint::plain(&nats),
                cameras,
                workers,
                ttl: Duration::from_secs_f64(ttl),
                max_cameras,
                replicas,
                site: "sim".into(),
                bucket,
            };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let s = rt.block_on(crate::control::cluster::sim::run(&o, seconds, kill, kill_at, |x| {
                println!("{}", serde_json::to_string(x).unwrap_or_default());
            }))?;
            println!("{}", serde_json::to_string(&serde_json::json!({ "summary": s }))?);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let p = crate::config::Pipeline::load(&pipeline)
        .map_err(|e| anyhow::anyhow!("invalid pipeline configuration:\n{e}"))?;
    let nats = p.nats.clone().with_context(|| format!("{}: publish.nats_url is not set", pipeline.display()))?;
    let cameras: Vec<String> = p.cameras.iter().map(|c| c.id.clone()).collect();
    let ttl = p.settings.cluster.lease_ttl();
    let st = block_on(async {
        let client = nats.connect().await?;
        let js = async_nats::jetstream::new(client);
        match js.get_key_value(&p.settings.cluster.bucket).await {
            Ok(kv) => {
                let ttl = kv.status().await.map(|s| s.info.config.max_age).unwrap_or(ttl);
                lease::status(&kv, &p.settings.site.id, &cameras, ttl).await
            }
            // no worker has run in cluster mode yet: nobody runs any camera
            Err(e) if e.to_string().contains("stream not found") => {
                Ok(lease::Status::nobody(&p.settings.site.id, &p.settings.cluster.bucket, ttl, &cameras))
            }
            Err(e) => Err(anyhow::Error::from(e).context(format!("NATS KV bucket {}", p.settings.cluster.bucket))),
        }
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(ExitCode::SUCCESS);
    }
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!("site {}  bucket {}  lease TTL {:.0} s", st.site, st.bucket, st.lease_ttl_s);
    println!("{:<24} {:<20} {:>12} {:>14} {:>9}", "camera", "worker", "lease age s", "renewed s ago", "revision");
    for c in &st.cameras {
        println!(
            "{:<24} {:<20} {:>12} {:>14} {:>9}",
            c.camera,
            c.worker.as_deref().unwrap_or("(nobody)"),
            f(c.lease_age_s),
            f(c.renewed_s_ago),
            c.revision.map_or("-".into(), |r| r.to_string())
        );
    }
    println!();
    println!(
        "{:<20} {:>8} {:>5} {:>13} {:>12} {:>9} {:>11}",
        "worker", "cameras", "max", "analysed fps", "dropped fps", "dropping", "seen s ago"
    );
    for w in &st.workers {
        println!(
            "{:<20} {:>8} {:>5} {:>13.1} {:>12.1} {:>9} {:>11.1}",
            w.worker, w.cameras, w.max_cameras, w.analysed_fps, w.dropped_fps, w.dropping, w.seen_s_ago
        );
    }
    let nobody = st.cameras.iter().filter(|c| c.worker.is_none()).count();
    if nobody > 0 {
        println!("\n{nobody} camera(s) run by nobody");
    }
    Ok(ExitCode::SUCCESS)
}
