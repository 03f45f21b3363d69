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
}

pub fn run(c: Cmd) -> anyhow::Result<ExitCode> {
    let Cmd::Status { pipeline, json } = c;
    let p = crate::config::Pipeline::load(&pipeline)
        .map_err(|e| anyhow::anyhow!("invalid pipeline configuration:\n{e}"))?;
    let nats = p.nats.clone().with_context(|| format!("{}: publish.nats_url is not set", pipeline.display()))?;
    let cameras: Vec<String> = p.cameras.iter().map(|c| c.id.clone()).collect();
    let ttl = Duration::from_secs_f64(p.raw.cluster.lease_ttl_s);
    let st = block_on(async {
        let client = nats.connect().await?;
        let js = async_nats::jetstream::new(client);
        match js.get_key_value(&p.raw.cluster.bucket).await {
            Ok(kv) => {
                let ttl = kv.status().await.map(|s| s.info.config.max_age).unwrap_or(ttl);
                lease::status(&kv, &p.raw.site.id, &cameras, ttl).await
            }
            // no worker has run in cluster mode yet: nobody runs any camera
            Err(e) if e.to_string().contains("stream not found") => {
                Ok(lease::Status::nobody(&p.raw.site.id, &p.raw.cluster.bucket, ttl, &cameras))
            }
            Err(e) => Err(anyhow::Error::from(e).context(format!("NATS KV bucket {}", p.raw.cluster.bucket))),
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
