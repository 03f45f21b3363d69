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
        /// File name stem: `signing` (a worker's key) or `review` (the review service's).
        #[arg(long, default_value = "signing")]
        name: String,
    },
    /// Print the public key of a key file (a secret key file, or a public one).
    Public { key: PathBuf },
}

pub fn run(c: Cmd) -> anyhow::Result<ExitCode> {
    match c {
        Cmd::Init { dir, name } => {
            if !crate::rules::valid_id(&name) {
                anyhow::bail!("--name {name:?}: 1-64 characters of A-Z a-z 0-9 - _");
            }
            let s = Signer::init_named(&dir, &name)?;
            println!(
                "key id {}\nsecret key {} (mode 0600)\npublic key {}\n{}",
                s.key_id,
                dir.join(format!("{name}.key")).display(),
                dir.join(format!("{name}.pub")).display(),
                s.public_text()
            );
        }
        Cmd::Public { key } => {
            let k = match PublicKey::load(&key) {
                Ok(k) => k,
                Err(_) => Signer::load(&key)?.public_key(),
            };
            println!("{}", Signer::public_text_of(&k));
        }
    }
    Ok(ExitCode::SUCCESS)
}
