//! `vigil review serve | user add | user disable | user list | audit`: the evidence review
//! service and its accounts.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use super::block_on;
use crate::review::Role;
use crate::review::accounts::Accounts;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Serve the review pages and API over the pipeline's store and NATS.
    Serve {
        #[arg(long)]
        pipeline: PathBuf,
        /// Address to listen on (default: `[review] listen`, 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// Name of this instance (its outbox, its records); default review-<host>-<port>.
        #[arg(long)]
        instance_id: Option<String>,
    },
    /// Review accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Print the access log (verified: signatures and chain).
    Audit {
        #[arg(long)]
        pipeline: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum UserCmd {
    /// Add an account; the password is read from standard input.
    Add {
        name: String,
        #[arg(long)]
        pipeline: PathBuf,
        #[arg(long, value_enum)]
        role: Role,
        /// Law-enforcement certificate number (required for reviewers).
        #[arg(long, default_value = "")]
        officer_id: String,
        /// Read the password from standard input (the only way: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Set a new password (read from standard input).
    Passwd {
        name: String,
        #[arg(long)]
        pipeline: PathBuf,
        /// Read the password from standard input (the only way: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Change an account's role.
    Role {
        name: String,
        #[arg(long)]
        pipeline: PathBuf,
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Disable an account (its sessions end at their next request).
    Disable {
        name: String,
        #[arg(long)]
        pipeline: PathBuf,
    },
    /// List accounts.
    List {
        #[arg(long)]
        pipeline: PathBuf,
    },
}

fn password_from_stdin() -> anyhow::Result<String> {
    let mut pw = String::new();
    std::io::stdin().take(4096).read_to_string(&mut pw)?;
    Ok(pw.trim_end_matches(['\n', '\r']).to_string())
}

fn pipeline(p: &std::path::Path) -> anyhow::Result<crate::config::Pipeline> {
    crate::config::Pipeline::load(p).map_err(|e| anyhow::anyhow!("invalid pipeline configuration:\n{e}"))
}

pub fn run(c: Cmd) -> anyhow::Result<ExitCode> {
    match c {
        Cmd::Serve { pipeline: p, listen, instance_id } => {
            let p = pipeline(&p)?;
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(crate::app::serve(p, crate::app::ServeOptions { listen, instance: instance_id }))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::User(u) => user(u).map(|()| ExitCode::SUCCESS),
        Cmd::Audit { pipeline: p, json } => audit(&pipeline(&p)?, json),
    }
}

/// `vigil review user …`: the accounts file.
fn user(c: UserCmd) -> anyhow::Result<()> {
    match c {
        UserCmd::Add { name, pipeline: p, role, officer_id, password_stdin: _ } => {
            let p = pipeline(&p)?;
            let pw = password_from_stdin()?;
            let path = p.review_users();
            let mut a = Accounts::load(&path)?;
            a.add(&name, role, &officer_id, &pw)?;
            a.save(&path)?;
            println!("added {name} ({}) to {}", role.name(), path.display());
        }
        UserCmd::Passwd { name, pipeline: p, password_stdin: _ } => {
            let p = pipeline(&p)?;
            let pw = password_from_stdin()?;
            let path = p.review_users();
            let mut a = Accounts::load(&path)?;
            a.set_password(&name, &pw)?;
            a.save(&path)?;
            println!("new password set for {name}; its open sessions are ended");
        }
        UserCmd::Role { name, pipeline: p, role } => {
            let p = pipeline(&p)?;
            let path = p.review_users();
            let mut a = Accounts::load(&path)?;
            a.set_role(&name, role)?;
            a.save(&path)?;
            println!("{name} is now {}; its open sessions are ended", role.name());
        }
        UserCmd::Disable { name, pipeline: p } => {
            let p = pipeline(&p)?;
            let path = p.review_users();
            let mut a = Accounts::load(&path)?;
            a.disable(&name)?;
            a.save(&path)?;
            println!("disabled {name}");
        }
        UserCmd::List { pipeline: p } => {
            let p = pipeline(&p)?;
            let a = Accounts::load(&p.review_users())?;
            println!("{:<20} {:<9} {:<20} {:<9} created", "name", "role", "officer id", "state");
            for u in &a.users {
                println!(
                    "{:<20} {:<9} {:<20} {:<9} {}",
                    u.name,
                    u.role.name(),
                    u.officer_id,
                    if u.disabled { "disabled" } else { "active" },
                    u.created_utc
                );
            }
        }
    }
    Ok(())
}

/// `vigil review audit`: the access log, checked (chain, signatures, the published head).
fn audit(p: &crate::config::Pipeline, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::store::Store::open(&p.store_url, &p.settings.store.options)?;
    let key = review_public_key(p)?;
    let site = p.settings.site.id.clone();
    let log = block_on(async {
        let mut log = crate::audit_log::read(&store, &key, &site).await?;
        // the published head: a log that ends before it was truncated
        if let Some(n) = &p.nats {
            let stream = p.settings.publish.stream.clone().unwrap_or_else(|| "VIGIL".into());
            if let Err(e) = crate::audit_log::check_stream_head(&store, &mut log, (n, &stream), &site, &key).await {
                eprintln!("WARNING not compared with the stream: {e:#}");
            }
        }
        anyhow::Ok(log)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&log)?);
    } else {
        for e in &log.entries {
            println!(
                "{:>6}  {}  {:<12} {:<14} {:<18} {:<7} {}  {}  {}",
                e.seq,
                e.time_utc,
                crate::util::printable(&e.user, 64),
                e.officer_id,
                serde_json::to_string(&e.action)?.trim_matches('"'),
                serde_json::to_string(&e.outcome)?.trim_matches('"'),
                e.evidence_id.as_deref().unwrap_or("-"),
                crate::util::printable(&e.detail, 1024),
                e.client
            );
        }
        for pr in &log.problems {
            println!("FAIL {pr}");
        }
        if let Some(h) = &log.head_checked {
            println!("compared with head {h}");
        }
        println!(
            "{} entries; {}",
            log.entries.len(),
            if log.problems.is_empty() { "chain and signatures OK" } else { "FAILED" }
        );
    }
    Ok(if log.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The review service's public key of a pipeline (`review.pub` beside `review.key`).
pub fn review_public_key(p: &crate::config::Pipeline) -> anyhow::Result<crate::signing::PublicKey> {
    crate::signing::PublicKey::beside(&p.review_key())
}
