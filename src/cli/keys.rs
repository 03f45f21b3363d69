//! `vigil keys init | public`: the worker's Ed25519 signing key pair.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::signing::{PublicKey, Signer};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Make an Ed25519 key pair: DIR/signing.key (mode 0600; never overwritten) and DIR/signing.pub.
    Init {
        #[arg(long, default_value = "vigil-data/keys")]
        dir: PathBuf,
    },
    /// Print the public key of a key file.
    Public { key: PathBuf },
}

pub fn run(c: Cmd) -> anyhow::Result<ExitCode> {
    match c {
        Cmd::Init { dir } => {
            let s = Signer::init(&dir)?;
            println!(
                "key id {}\nsecret key {} (mode 0600)\npublic key {}\n{}",
                s.key_id,
                dir.join("signing.key").display(),
                dir.join("signing.pub").display(),
                s.public_text()
            );
        }
        Cmd::Public { key } => {
            let k = PublicKey::load(&key)?;
            println!("{}", Signer::public_text_of(&k));
        }
    }
    Ok(ExitCode::SUCCESS)
}
