//! `vigil keys init | public | rotate`: the signing key pairs (Ed25519, and SM2 for the 国密
//! suite), and their rotation.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::signing::sm2::{Sm2Public, Sm2Signer};
use crate::signing::{PublicKey, Signer, Suite};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Make key pairs: DIR/NAME.key (Ed25519, mode 0600; never overwritten) and DIR/NAME.pub,
    /// and for the sm2 suite DIR/NAME.sm2.key (PKCS#8 PEM, 0600) and DIR/NAME.sm2.pub
    /// (SubjectPublicKeyInfo PEM: what OpenSSL and a case system's 国密 tools read).
    /// `--suite sm2` alone adds the SM2 pair beside an existing Ed25519 key.
    Init {
        #[arg(long, default_value = "vigil-data/keys")]
        dir: PathBuf,
        /// File name stem: `signing` (a worker's key) or `review` (the review service's).
        #[arg(long, default_value = "signing")]
        name: String,
        /// The suites to make keys for.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "ed25519,sm2")]
        suite: Vec<SuiteArg>,
    },
    /// Print the public keys of a key file (a secret key file, or a public one): the Ed25519
    /// key line, then the SM2 public key PEM when there is one beside.
    Public { key: PathBuf },
    /// Replace the pipeline's signing key (stop its worker first): each camera's chain gets a
    /// last checkpoint of the old key, countersigned by the new one; the old secret key moves to
    /// `retired/`; the public key file lists the new key and the old one with its period, and
    /// `vigil verify` accepts each key for its period. With `sm2` in `[signing] suites` and no
    /// SM2 key yet, the new key comes with an SM2 half: the hand-over is countersigned with both,
    /// and every document after it carries both signatures (how a running site adds 国密).
    Rotate {
        #[arg(long)]
        pipeline: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum SuiteArg {
    Ed25519,
    Sm2,
}

pub fn run(c: Cmd) -> anyhow::Result<ExitCode> {
    match c {
        Cmd::Init { dir, name, suite } => {
            if !crate::rules::valid_id(&name) {
                anyhow::bail!("--name {name:?}: 1-64 characters of A-Z a-z 0-9 - _");
            }
            let key_path = dir.join(format!("{name}.key"));
            if suite.contains(&SuiteArg::Ed25519) {
                let s = Signer::init_named(&dir, &name)?;
                println!(
                    "key id {}\nsecret key {} (mode 0600)\npublic key {}\n{}",
                    s.key_id,
                    key_path.display(),
                    dir.join(format!("{name}.pub")).display(),
                    s.public_text()
                );
            }
            if suite.contains(&SuiteArg::Sm2) {
                if !dir.exists() {
                    Signer::init_named(&dir, &name)?;
                }
                let k = Sm2Signer::init(&key_path)?;
                println!(
                    "SM2 key id {}\nSM2 secret key {} (PKCS#8 PEM, mode 0600)\nSM2 public key {}\n{}",
                    k.key_id,
                    crate::signing::sm2::secret_path(&key_path).display(),
                    crate::signing::sm2::public_path(&key_path).display(),
                    k.public().to_pem().trim_end()
                );
            }
        }
        Cmd::Public { key } => {
            let k = match PublicKey::load(&key) {
                Ok(k) => k,
                Err(_) => Signer::load(&key)?.public_key(),
            };
            println!("{}", Signer::public_text_of(&k));
            if let Some(s) = k.sm2.as_ref().map(Sm2Public::to_pem) {
                println!("{}", s.trim_end());
            }
        }
        Cmd::Rotate { pipeline } => rotate(&pipeline)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn rotate(pipeline: &std::path::Path) -> anyhow::Result<()> {
    use std::sync::Arc;
    let p = crate::config::Pipeline::load(pipeline)?;
    let mut old = Signer::load(&p.key_path)?;
    let mut next = Signer::generate()?;
    // the SM2 half stays with the site (rotating it is a new SM2 pair by hand); with sm2 in the
    // suites and none yet, the new key brings one: its hand-over is signed with both
    let new_sm2 = match old.take_sm2() {
        Some(k) => {
            next.set_sm2(Some(k));
            None
        }
        None if p.settings.signing.suites.contains(&Suite::Sm2) => {
            next.set_sm2(Some(Sm2Signer::generate()?));
            Some(())
        }
        None => None,
    };
    let old = Arc::new(old);
    let ring = old.trusted(&p.key_path);
    let store = crate::store::Store::open_with(&p.store_url, &p.settings.store.options, p.settings.store.object_lock)?;
    let chains = crate::evidence::chain::Chains::new(
        store,
        old.clone(),
        &p.settings.site.id,
        &p.data_dir,
        p.settings.retention.evidence_days,
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
    let new_ring = PublicKey {
        key: next.public(),
        key_id: next.key_id.clone(),
        valid_from: Some(now),
        earlier,
        sm2: None,
        checks: Default::default(),
    };
    let retired = next.install_rotated(&p.key_path, &old.key_id, &new_ring)?;
    if new_sm2.is_some() {
        next.write_sm2_beside(&p.key_path)?;
        println!(
            "SM2 key {} added: {} (every document from now on carries an SM2 signature too)",
            next.sm2_key_id().unwrap_or_default(),
            crate::signing::sm2::public_path(&p.key_path).display()
        );
    }
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
