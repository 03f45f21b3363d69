//! `vigil keys init | public | rotate`: the worker's Ed25519 signing key pair, and its rotation.

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
    /// Replace the pipeline's signing key (stop its worker first): each camera's chain gets a
    /// last checkpoint of the old key, countersigned by the new one; the old secret key moves to
    /// `retired/`; the public key file lists the new key and the old one with its period, and
    /// `vigil verify` accepts each key for its period.
    Rotate {
        #[arg(long)]
        pipeline: PathBuf,
    },
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
        Cmd::Rotate { pipeline } => rotate(&pipeline)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn rotate(pipeline: &std::path::Path) -> anyhow::Result<()> {
    use std::sync::Arc;
    let p = crate::config::Pipeline::load(pipeline)?;
    let old = Arc::new(Signer::load(&p.key_path)?);
    let ring = old.trusted(&p.key_path);
    let next = Signer::generate()?;
    let store = crate::store::Store::open_with(&p.store_url, &p.raw.store.options, p.raw.store.object_lock)?;
    let chains = crate::evidence::chain::Chains::new(
        store,
        old.clone(),
        &p.raw.site.id,
        &p.data_dir,
        p.raw.retention.evidence_days,
    )?
    .with_trust(ring.clone());
    let now = chrono::Utc::now();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for cam in &p.cameras {
        let cp = rt.block_on(chains.handover_checkpoint(&cam.id, &next))?;
        println!(
            "camera {}: last checkpoint of key {} at seq {} ({}), countersigned by {}",
            cam.id, old.key_id, cp.checkpoint.last_seq, cp.key, next.key_id
        );
    }
    let mut earlier = vec![crate::signing::EarlierKey {
        key: old.public(),
        key_id: old.key_id.clone(),
        valid_from: ring.valid_from,
        valid_until: now,
    }];
    earlier.extend(ring.earlier.iter().cloned());
    let new_ring = PublicKey { key: next.public(), key_id: next.key_id.clone(), valid_from: Some(now), earlier };
    let retired = next.install_rotated(&p.key_path, &old.key_id, &new_ring)?;
    println!(
        "new key {} in {}; old key {} retired to {} (archive it offline or destroy it)\npublic key file {}:\n{}",
        next.key_id,
        p.key_path.display(),
        old.key_id,
        retired.display(),
        p.key_path.with_extension("pub").display(),
        new_ring.to_text().trim_end()
    );
    Ok(())
}
