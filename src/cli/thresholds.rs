//! `vigil thresholds get | set | history`: ops change rule parameters of running workers through
//! NATS KV, and read the audit trail.

use std::path::PathBuf;
use std::process::ExitCode;

use super::block_on;
use crate::control::overrides;
use crate::util::nats::Endpoint;
use crate::util::printable;

#[derive(clap::Args)]
pub struct KvArgs {
    /// NATS server the workers use.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// KV bucket (pipeline `control.kv_bucket`).
    #[arg(long, default_value = "vigil-thresholds")]
    pub bucket: String,
    #[arg(long)]
    pub site: String,
    /// Authenticate as this pipeline file's `[publish.auth]` says (password or token files,
    /// nkey, `.creds`, TLS files), so no secret goes on the command line.
    #[arg(long, value_name = "PIPELINE")]
    pub auth_from: Option<PathBuf>,
}

impl KvArgs {
    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let auth = match &self.auth_from {
            None => Default::default(),
            Some(f) => match crate::config::Pipeline::load(f) {
                Ok(p) => p.nats.map(|n| n.auth).unwrap_or_default(),
                Err(e) => anyhow::bail!("{e}"),
            },
        };
        Ok(Endpoint::new(&self.nats, auth))
    }
}

#[derive(clap::Subcommand)]
pub enum Cmd {
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

pub fn run(c: Cmd) -> anyhow::Result<ExitCode> {
    match c {
        Cmd::Get { kv, camera } => {
            let rows = block_on(overrides::get(&kv.endpoint()?, &kv.bucket, &kv.site, camera.as_deref()))?;
            if rows.is_empty() {
                println!("no overrides: the pipeline files' values are in force");
            }
            for (k, rev, v) in rows {
                println!("{k} (revision {rev}): {v}");
            }
        }
        Cmd::Set { kv, camera, rule, by, reason, pipeline, clear, params } => {
            let set = overrides::parse_assignments(&params)?;
            if set.is_empty() && !clear {
                anyhow::bail!("nothing to set: give key=value pairs, or --clear");
            }
            let change = overrides::Change { camera: &camera, rule: &rule, by: &by, reason: &reason, set, clear };
            let rev = block_on(overrides::set(&kv.endpoint()?, &kv.bucket, &kv.site, change, pipeline.as_deref()))?;
            println!(
                "{}: revision {rev} written; workers validate and apply it between frames (see `vigil thresholds history`)",
                overrides::key(&kv.site, &camera, &rule)
            );
        }
        Cmd::History { kv, camera, rule, stream } => block_on(async {
            if let Some(r) = &rule {
                let key = overrides::key(&kv.site, &camera, r);
                println!("written to {}/{key}:", kv.bucket);
                for (rev, o) in overrides::kv_history(&kv.endpoint()?, &kv.bucket, &key).await? {
                    match o {
                        Some(Err(raw)) => {
                            println!("  rev {rev}  invalid value {}", printable(&format!("{raw:?}"), 1024))
                        }
                        Some(Ok(o)) => println!(
                            "  rev {rev}  {}  by {}  {}  set {}",
                            printable(&o.at, 64),
                            printable(&o.by, 64),
                            if o.reason.is_empty() {
                                String::new()
                            } else {
                                format!("({})", printable(&o.reason, 1024))
                            },
                            printable(&serde_json::Value::Object(o.set).to_string(), 4096)
                        ),
                        None => println!("  rev {rev}  deleted (back to the pipeline file's values)"),
                    }
                }
            }
            println!("applied or rejected by the workers (vigil.audit.{}.{camera}):", kv.site);
            for a in overrides::audit_history(&kv.endpoint()?, &stream, &kv.site, Some(&camera)).await? {
                if rule.as_ref().is_some_and(|r| r != &a.rule && a.rule != "*") {
                    continue;
                }
                println!("  {}", serde_json::to_string(&a)?);
            }
            anyhow::Ok(())
        })?,
    }
    Ok(ExitCode::SUCCESS)
}
