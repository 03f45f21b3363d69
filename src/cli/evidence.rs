//! `vigil evidence list | get | unseal`: the reviewer's command-line tools.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{StoreArgs, TimeRange, block_on};

#[derive(clap::Subcommand)]
pub enum Cmd {
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

pub fn run(c: Cmd) -> anyhow::Result<ExitCode> {
    match c {
        Cmd::List { store, site, camera, rule, status, admissible, range, json } => {
            let (s, k) = store.open()?;
            let (from, to) = range.parse()?;
            let f = crate::verify::ListFilter { site, camera, rule, status, admissible, from, to };
            let items = block_on(crate::verify::list(&s, &k, &f))?;
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
        }
        Cmd::Get { id, out, store } => {
            let (s, k) = store.open()?;
            let fetched = block_on(crate::verify::get(&s, &k, &id, &out, chrono::Utc::now()))?;
            for w in &fetched.warnings {
                eprintln!("warning: elsewhere in this camera's chain: {w}");
            }
            for f in &fetched.written {
                println!("{f}");
            }
        }
        Cmd::Unseal { id, identity, out, store } => {
            let (s, k) = store.open()?;
            println!("{}", block_on(crate::verify::unseal(&s, &k, &id, &identity, &out, chrono::Utc::now()))?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
