//! Signing: signed documents (manifests, chain index entries, checkpoints, review records, audit
//! log entries) are stored as their RFC 8785 canonical bytes ([`crate::util::jcs`]); their SHA-256
//! is the document's hash.
//!
//! **Signature**: Ed25519 over the canonical bytes, stored beside as `manifest.sig`:
//! `{"alg":"Ed25519","key_id":"<16 hex>","signature":"<base64>"}`. The key id is the first 16 hex
//! digits of SHA-256 of the 32-byte public key, and is also inside the manifest. Verifying needs only
//! the public key.
//!
//! **国密 suite** ([`sm2`]): with `[signing] suites` naming `sm2`, the same file also carries
//! `"sm2": {"alg":"SM2-with-SM3","key_id":…,"distid":"1234567812345678","signature":"<base64 DER>"}`
//! over the same bytes, and artifacts carry SM3 digests beside SHA-256. Ed25519 is always there:
//! it is what chains, checkpoints and earlier keys rest on; SM2 is checked wherever the verifier
//! has the SM2 public key (`<stem>.sm2.pub` beside the `.pub` file).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::util::jcs;
use crate::util::sha256_hex;

pub mod sm2;

/// A signature suite (`[signing] suites`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// Ed25519 signatures, SHA-256 digests (always on).
    Ed25519,
    /// SM2 signatures with SM3 (GM/T 0003/0009), SM3 digests beside SHA-256.
    Sm2,
}

/// What signature checks passed, counted over a verification (shared by clones of a
/// [`PublicKey`]).
#[derive(Debug, Default)]
pub struct SuiteCounts {
    pub ed25519: std::sync::atomic::AtomicU64,
    pub sm2: std::sync::atomic::AtomicU64,
    /// Documents with an SM2 signature by a key the verifier was not given.
    pub sm2_unchecked: std::sync::atomic::AtomicU64,
}

impl SuiteCounts {
    /// `Ed25519 ✓ N; SM2/SM3 ✓ M` for a report line.
    pub fn summary(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut s = format!(
            "signature suites checked: Ed25519 on {} document(s); SM2-with-SM3 on {}",
            self.ed25519.load(Relaxed),
            self.sm2.load(Relaxed)
        );
        let u = self.sm2_unchecked.load(Relaxed);
        if u > 0 {
            s.push_str(&format!(
                " ({u} SM2 signature(s) by a key not given: not checked; pass its .sm2.pub beside the .pub file)"
            ));
        }
        s
    }
}

/// Key id: first 16 hex digits of SHA-256 of the public key bytes.
pub fn key_id(pk: &VerifyingKey) -> String {
    sha256_hex(pk.as_bytes())[..16].to_string()
}

const SECRET_TAG: &str = "vigil-ed25519-secret-key:";
const PUBLIC_TAG: &str = "vigil-ed25519-public-key:";

/// The worker's signing key.
pub struct Signer {
    key: SigningKey,
    pub key_id: String,
    /// The SM2 key beside, when the suites name it.
    sm2: Option<sm2::Sm2Signer>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer(key id {})", self.key_id) // never the secret
    }
}

impl Signer {
    /// Creates a new key pair in `dir` (`signing.key`, mode 0600, and `signing.pub`, 0644).
    pub fn init(dir: &Path) -> Result<Signer> {
        Signer::init_named(dir, "signing")
    }

    /// Creates `<dir>/<name>.key` (mode 0600) and `<dir>/<name>.pub` (0644), the folder 0700,
    /// whatever the umask. Never overwrites either file, and never writes through a symlink
    /// planted at their paths.
    pub fn init_named(dir: &Path, name: &str) -> Result<Signer> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("key dir {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("key dir {}", dir.display()))?;
        }
        let sk_path = dir.join(format!("{name}.key"));
        let pk_path = dir.join(format!("{name}.pub"));
        for p in [&sk_path, &pk_path] {
            if std::fs::symlink_metadata(p).is_ok() {
                bail!("{} already exists: refusing to overwrite a key file", p.display());
            }
        }
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| anyhow!("no randomness: {e}"))?;
        let key = SigningKey::from_bytes(&seed);
        let signer = Signer { key_id: key_id(&key.verifying_key()), key, sm2: None };
        crate::util::fsx::create_new(&sk_path, format!("{SECRET_TAG}{}\n", B64.encode(seed)).as_bytes(), 0o600)
            .map_err(|e| anyhow!("{e:#}: refusing to overwrite a signing key"))?;
        std::fs::set_permissions(&sk_path, std::fs::Permissions::from_mode(0o600))?;
        crate::util::fsx::create_new(&pk_path, format!("{}\n", signer.public_text()).as_bytes(), 0o644)?;
        std::fs::set_permissions(&pk_path, std::fs::Permissions::from_mode(0o644))?;
        Ok(signer)
    }

    /// A new key pair in memory (`vigil keys rotate` writes it once the hand-over is stored).
    pub fn generate() -> Result<Signer> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| anyhow!("no randomness: {e}"))?;
        let key = SigningKey::from_bytes(&seed);
        Ok(Signer { key_id: key_id(&key.verifying_key()), key, sm2: None })
    }

    /// Replaces the key at `key_path` by this one: the old secret key moves to
    /// `retired/<old key id>.key` beside it (mode 0600: archive it offline or destroy it), this
    /// key is written (0600) and the public key file becomes `ring` (this key first, the earlier
    /// ones with their periods). Each file is written beside and renamed into place.
    pub fn install_rotated(&self, key_path: &Path, old_id: &str, ring: &PublicKey) -> Result<std::path::PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let dir = key_path.parent().unwrap_or(Path::new("."));
        let retired_dir = dir.join("retired");
        std::fs::create_dir_all(&retired_dir)?;
        std::fs::set_permissions(&retired_dir, std::fs::Permissions::from_mode(0o700))?;
        let next = key_path.with_extension("key.next");
        let _ = std::fs::remove_file(&next);
        crate::util::fsx::create_new(
            &next,
            format!("{SECRET_TAG}{}\n", B64.encode(self.key.to_bytes())).as_bytes(),
            0o600,
        )?;
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o600))?;
        let retired = retired_dir.join(format!("{old_id}.key"));
        if std::fs::symlink_metadata(&retired).is_ok() {
            bail!("{} already exists: refusing to overwrite a key file", retired.display());
        }
        std::fs::rename(key_path, &retired).with_context(|| format!("retire {}", key_path.display()))?;
        std::fs::rename(&next, key_path).with_context(|| format!("install {}", key_path.display()))?;
        let pub_path = key_path.with_extension("pub");
        let tmp = key_path.with_extension("pub.tmp");
        let _ = std::fs::remove_file(&tmp);
        crate::util::fsx::create_new(&tmp, ring.to_text().as_bytes(), 0o644)?;
        std::fs::rename(&tmp, &pub_path)?;
        Ok(retired)
    }

    /// Loads a secret key file, and the SM2 key beside it when there is one (see
    /// [`Signer::with_suites`] for which are used). A key readable by group or others is refused
    /// (as ssh does).
    pub fn load(path: &Path) -> Result<Signer> {
        let text = crate::util::fsx::read_text(path, crate::util::fsx::limits::KEY)
            .with_context(|| format!("signing key {}: cannot read", path.display()))?;
        let b64 = text
            .trim()
            .strip_prefix(SECRET_TAG)
            .ok_or_else(|| anyhow!("signing key {}: not a vigil Ed25519 secret key file", path.display()))?;
        refuse_shared(path, "signing key")?;
        let seed: [u8; 32] = B64
            .decode(b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| anyhow!("signing key {}: damaged (expected 32 bytes of base64)", path.display()))?;
        let key = SigningKey::from_bytes(&seed);
        Ok(Signer { key_id: key_id(&key.verifying_key()), key, sm2: sm2::Sm2Signer::load_beside(path)? })
    }

    /// The public half, as a trusted key (no earlier keys; see [`Signer::trusted`]).
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key: self.public(),
            key_id: self.key_id.clone(),
            valid_from: None,
            earlier: Vec::new(),
            sm2: self.sm2.as_ref().map(sm2::Sm2Signer::public),
            checks: Default::default(),
        }
    }

    /// Attaches the keys of the other `suites` kept beside `key_path` (`<stem>.sm2.key`); with
    /// `generate`, makes a missing one. A suite configured without its key is an error that
    /// names the file and the command that makes it.
    pub fn with_suites(mut self, key_path: &Path, suites: &[Suite], generate: bool) -> Result<Signer> {
        if suites.contains(&Suite::Sm2) {
            self.sm2 = match sm2::Sm2Signer::load_beside(key_path)? {
                Some(k) => Some(k),
                None if generate => {
                    let k = sm2::Sm2Signer::init(key_path)?;
                    tracing::warn!(key = %sm2::secret_path(key_path).display(), key_id = %k.key_id, "generated a new SM2 key");
                    Some(k)
                }
                None => bail!(
                    "{}: no SM2 key, and [signing] suites names sm2. Make it with `vigil keys init --suite sm2 --dir {}`{}",
                    sm2::secret_path(key_path).display(),
                    key_path.parent().unwrap_or(Path::new(".")).display(),
                    key_path
                        .file_stem()
                        .filter(|s| *s != "signing")
                        .map(|s| format!(" --name {}", s.to_string_lossy()))
                        .unwrap_or_default()
                ),
            };
        } else {
            self.sm2 = None;
        }
        Ok(self)
    }

    /// Signs with `key` as the SM2 half from now on.
    pub fn set_sm2(&mut self, key: Option<sm2::Sm2Signer>) {
        self.sm2 = key;
    }

    /// Writes the SM2 half beside `key_path` (`<stem>.sm2.key`, `.sm2.pub`).
    pub fn write_sm2_beside(&self, key_path: &Path) -> Result<()> {
        match &self.sm2 {
            Some(k) => k.write_beside(key_path),
            None => Ok(()),
        }
    }

    /// Takes the SM2 half out (to hand it to the key that replaces this one).
    pub fn take_sm2(&mut self) -> Option<sm2::Sm2Signer> {
        self.sm2.take()
    }

    /// The SM2 key id, when this signer signs with SM2 too.
    pub fn sm2_key_id(&self) -> Option<String> {
        self.sm2.as_ref().map(|k| k.key_id.clone())
    }

    /// The suites this signer signs with.
    pub fn suites(&self) -> Vec<Suite> {
        let mut v = vec![Suite::Ed25519];
        if self.sm2.is_some() {
            v.push(Suite::Sm2);
        }
        v
    }

    /// What this worker trusts for its own documents: its key and, after `vigil keys rotate`,
    /// the earlier keys listed (with their periods) in the public key file beside `key_path`.
    pub fn trusted(&self, key_path: &Path) -> PublicKey {
        let pub_path = key_path.with_extension("pub");
        match PublicKey::load(&pub_path) {
            Ok(mut k) if k.key_id == self.key_id => {
                if k.sm2.is_none() {
                    k.sm2 = self.sm2.as_ref().map(sm2::Sm2Signer::public);
                }
                k
            }
            _ => self.public_key(),
        }
    }

    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn public_text(&self) -> String {
        format!("{PUBLIC_TAG}{}", B64.encode(self.public().as_bytes()))
    }

    pub fn public_text_of(k: &PublicKey) -> String {
        k.to_text().trim_end().to_string()
    }

    pub fn sign(&self, canonical_bytes: &[u8]) -> SignatureFile {
        let sig = self.key.sign(canonical_bytes);
        SignatureFile {
            alg: "Ed25519".into(),
            key_id: self.key_id.clone(),
            signature: B64.encode(sig.to_bytes()),
            sm2: self.sm2.as_ref().map(|k| k.sign(canonical_bytes)),
        }
    }
}

/// A secret key file readable by group or others is refused (as ssh does); `what` names it.
pub(crate) fn refuse_shared(path: &Path, what: &str) -> Result<()> {
    if let Ok(m) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "{what} {p}: mode {mode:04o} lets others read it; refusing to use it. Run: chmod 600 {p}",
                p = path.display()
            );
        }
    }
    Ok(())
}

/// A key that signed before the current one, and the period it signed in.
#[derive(Clone)]
pub struct EarlierKey {
    pub key: VerifyingKey,
    pub key_id: String,
    pub valid_from: Option<chrono::DateTime<chrono::Utc>>,
    pub valid_until: chrono::DateTime<chrono::Utc>,
}

/// A trusted public key: the current key and, after rotations, the earlier keys with their
/// periods.
///
/// File format (`signing.pub`): one key a line, the current key first,
/// `vigil-ed25519-public-key:<base64 of the 32 key bytes>`, optionally followed by
/// ` valid_from=<RFC 3339>`; each earlier key on a line of its own with ` valid_from=…` (when
/// known) and ` valid_until=<RFC 3339>`. Lines starting with `#` are comments.
#[derive(Clone)]
pub struct PublicKey {
    pub key: VerifyingKey,
    pub key_id: String,
    pub valid_from: Option<chrono::DateTime<chrono::Utc>>,
    pub earlier: Vec<EarlierKey>,
    /// The SM2 public key (`<stem>.sm2.pub` beside the file), when there is one.
    pub sm2: Option<sm2::Sm2Public>,
    /// The checks passed through this key and its clones.
    pub checks: std::sync::Arc<SuiteCounts>,
}

fn parse_key_line(line: &str) -> Result<(VerifyingKey, BTreeMap<String, chrono::DateTime<chrono::Utc>>)> {
    let mut parts = line.split_whitespace();
    let b64 = parts
        .next()
        .and_then(|p| p.strip_prefix(PUBLIC_TAG))
        .ok_or_else(|| anyhow!("not a vigil Ed25519 public key"))?;
    let bytes: [u8; 32] = B64
        .decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("public key damaged (expected 32 bytes of base64)"))?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|e| anyhow!("public key invalid: {e}"))?;
    let mut period = BTreeMap::new();
    for p in parts {
        let (k, v) = p.split_once('=').ok_or_else(|| anyhow!("{p:?}: expected valid_from=… or valid_until=…"))?;
        if k != "valid_from" && k != "valid_until" {
            bail!("{k:?}: only valid_from and valid_until may follow a key");
        }
        let t = chrono::DateTime::parse_from_rfc3339(v).map_err(|e| anyhow!("{k}={v:?}: {e}"))?;
        period.insert(k.to_string(), t.with_timezone(&chrono::Utc));
    }
    Ok((key, period))
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let first = lines.next().ok_or_else(|| anyhow!("not a vigil Ed25519 public key (empty)"))?;
        let (key, period) = parse_key_line(first)?;
        if period.contains_key("valid_until") {
            bail!("the first key is the current one and has no valid_until");
        }
        let mut earlier = Vec::new();
        for (i, l) in lines.enumerate() {
            let (k, p) = parse_key_line(l).with_context(|| format!("key line {}", i + 2))?;
            let until =
                *p.get("valid_until").ok_or_else(|| anyhow!("key line {}: an earlier key needs valid_until", i + 2))?;
            earlier.push(EarlierKey {
                key_id: key_id(&k),
                key: k,
                valid_from: p.get("valid_from").copied(),
                valid_until: until,
            });
        }
        Ok(PublicKey {
            key_id: key_id(&key),
            key,
            valid_from: period.get("valid_from").copied(),
            earlier,
            sm2: None,
            checks: Default::default(),
        })
    }

    /// The file text (see the type's documentation).
    pub fn to_text(&self) -> String {
        let mut out = format!("{PUBLIC_TAG}{}", B64.encode(self.key.as_bytes()));
        if let Some(f) = self.valid_from {
            out.push_str(&format!(" valid_from={}", crate::util::rfc3339(f)));
        }
        out.push('\n');
        for e in &self.earlier {
            out.push_str(&format!("{PUBLIC_TAG}{}", B64.encode(e.key.as_bytes())));
            if let Some(f) = e.valid_from {
                out.push_str(&format!(" valid_from={}", crate::util::rfc3339(f)));
            }
            out.push_str(&format!(" valid_until={}\n", crate::util::rfc3339(e.valid_until)));
        }
        out
    }

    /// The period in which key `id` signs: (from, until); None when the key is not trusted.
    #[allow(clippy::type_complexity)]
    pub fn period_of(
        &self,
        id: &str,
    ) -> Option<(Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>)> {
        if id == self.key_id {
            return Some((self.valid_from, None));
        }
        self.earlier.iter().find(|e| e.key_id == id).map(|e| (e.valid_from, Some(e.valid_until)))
    }

    /// Whether a document signed by key `id` at `t` falls in that key's period; the problem if not.
    pub fn check_period(&self, id: &str, t: chrono::DateTime<chrono::Utc>) -> Result<()> {
        let Some((from, until)) = self.period_of(id) else { bail!("key {id} is not trusted") };
        if from.is_some_and(|f| t < f) || until.is_some_and(|u| t > u) {
            let show = |x: Option<chrono::DateTime<chrono::Utc>>| x.map_or("…".to_string(), crate::util::rfc3339);
            bail!(
                "signed by key {id} at {}, outside its period {} – {}",
                crate::util::rfc3339(t),
                show(from),
                show(until)
            );
        }
        Ok(())
    }

    /// The ids of every key in this ring: the current one and the earlier ones.
    pub fn ids(&self) -> Vec<String> {
        std::iter::once(self.key_id.clone()).chain(self.earlier.iter().map(|e| e.key_id.clone())).collect()
    }

    /// The public key of the key file `key_path`: the `.pub` file beside it, else the public half
    /// of the secret key itself.
    pub fn beside(key_path: &Path) -> Result<PublicKey> {
        let pubf = key_path.with_extension("pub");
        if pubf.exists() { PublicKey::load(&pubf) } else { Ok(Signer::load(key_path)?.public_key()) }
    }

    /// Reads a public key file. A secret key file is refused: a verifier is given the public key
    /// only.
    pub fn load(path: &Path) -> Result<PublicKey> {
        let text = crate::util::fsx::read_text(path, crate::util::fsx::limits::KEY)
            .with_context(|| format!("key file {}: cannot read", path.display()))?;
        if text.trim().starts_with(SECRET_TAG) {
            bail!(
                "key file {}: this is a secret key; give the public key (the .pub file beside it, or `vigil keys public`)",
                path.display()
            );
        }
        let mut k = PublicKey::parse(&text).with_context(|| format!("key file {}", path.display()))?;
        k.sm2 = sm2::Sm2Public::load_beside(path)?;
        Ok(k)
    }

    /// Checks `sig` over `bytes`; the error says what is wrong.
    pub fn verify(&self, bytes: &[u8], sig: &SignatureFile) -> Result<()> {
        if sig.alg != "Ed25519" {
            bail!("signature algorithm {:?} is not Ed25519", sig.alg);
        }
        let key = if sig.key_id == self.key_id {
            &self.key
        } else if let Some(e) = self.earlier.iter().find(|e| e.key_id == sig.key_id) {
            &e.key
        } else {
            bail!("signed with key {}, not with the trusted key {}", sig.key_id, self.key_id);
        };
        let raw: [u8; 64] = B64
            .decode(&sig.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| anyhow!("signature is damaged (not 64 bytes of base64)"))?;
        key.verify(bytes, &Signature::from_bytes(&raw))
            .map_err(|_| anyhow!("signature does not match the signed bytes (content or signature altered)"))?;
        use std::sync::atomic::Ordering::Relaxed;
        self.checks.ed25519.fetch_add(1, Relaxed);
        if let Some(s) = &sig.sm2 {
            match &self.sm2 {
                // (a trusted SM2 key: the signature must be by it; Sm2Public::verify says so)
                Some(k) => {
                    k.verify(bytes, s)?;
                    self.checks.sm2.fetch_add(1, Relaxed);
                }
                None => {
                    self.checks.sm2_unchecked.fetch_add(1, Relaxed);
                }
            }
        }
        Ok(())
    }
}

/// `manifest.sig` (and `*.sig` of checkpoints).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    pub alg: String,
    pub key_id: String,
    pub signature: String,
    /// The SM2 signature over the same bytes (suite `sm2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm2: Option<sm2::Sm2Signature>,
}

impl SignatureFile {
    pub fn parse(bytes: &[u8]) -> Result<SignatureFile> {
        serde_json::from_slice(bytes).map_err(|e| anyhow!("signature file unreadable: {e}"))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        jcs::canonical(&serde_json::to_value(self).expect("serialisable"))
    }
}

/// A document that names its SM2 key (`pinned`) must carry that key's SM2 signature: the
/// problem when the signature file has none (stripped) or another key's.
pub fn sm2_pin_problem(sig: &[u8], pinned: Option<&str>) -> Option<String> {
    let pinned = pinned?;
    match SignatureFile::parse(sig) {
        Err(e) => Some(format!("{e:#}")),
        Ok(SignatureFile { sm2: None, .. }) => {
            Some(format!("the document names SM2 key {pinned}, but its signature file has no SM2 signature (removed)"))
        }
        Ok(SignatureFile { sm2: Some(s), .. }) if s.key_id != pinned => {
            Some(format!("SM2 signature by key {}, the document names SM2 key {pinned}", s.key_id))
        }
        Ok(_) => None,
    }
}

/// Serialises `doc` canonically and signs it: (canonical bytes, signature file bytes, SHA-256).
pub fn seal<T: Serialize>(doc: &T, signer: &Signer) -> Result<(Vec<u8>, Vec<u8>, String)> {
    let bytes = jcs::canonical(&serde_json::to_value(doc)?);
    let sig = signer.sign(&bytes).to_bytes();
    let hash = sha256_hex(&bytes);
    Ok((bytes, sig, hash))
}

/// Whether `bytes` are the canonical form of `v`, by the serialiser the document names in its
/// `canonicalization` field (a document that names none may come from either).
pub fn is_canonical(v: &Value, bytes: &[u8]) -> bool {
    match v.get("canonicalization").and_then(Value::as_str).and_then(jcs::Version::from_label) {
        Some(ver) => jcs::canonical_as(v, ver) == bytes,
        None => jcs::canonical_as(v, jcs::Version::V2) == bytes || jcs::canonical_as(v, jcs::Version::V1) == bytes,
    }
}

/// Parses canonical bytes, checks they are canonical, verifies the signature.
pub fn open<T: for<'de> Deserialize<'de>>(bytes: &[u8], sig: &[u8], key: &PublicKey) -> Result<T> {
    let sig = SignatureFile::parse(sig)?;
    key.verify(bytes, &sig)?;
    let v: Value = serde_json::from_slice(bytes).map_err(|e| anyhow!("not JSON: {e}"))?;
    if !is_canonical(&v, bytes) {
        bail!("not in canonical (RFC 8785) form");
    }
    serde_json::from_value(v).map_err(|e| anyhow!("unexpected content: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_key_files() {
        let d = tempfile::tempdir().unwrap();
        let s = Signer::init(d.path()).unwrap();
        assert!(Signer::init(d.path()).unwrap_err().to_string().contains("refusing to overwrite"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(d.path().join("signing.key")).unwrap().permissions().mode() & 0o777, 0o600);
        let pk = PublicKey::load(&d.path().join("signing.pub")).unwrap();
        assert_eq!(pk.key_id, s.key_id);
        let doc = serde_json::json!({"b": 1, "a": [1.5, "x"]});
        let (bytes, sig, _) = seal(&doc, &s).unwrap();
        assert_eq!(bytes, br#"{"a":[1.5,"x"],"b":1}"#);
        let back: Value = open(&bytes, &sig, &pk).unwrap();
        assert_eq!(back, doc);
        let mut bad = bytes.clone();
        bad[6] = b'7';
        assert!(open::<Value>(&bad, &sig, &pk).unwrap_err().to_string().contains("does not match"));
        let other = Signer::init(&d.path().join("other")).unwrap();
        let (_, sig2, _) = seal(&doc, &other).unwrap();
        assert!(open::<Value>(&bytes, &sig2, &pk).unwrap_err().to_string().contains("not with the trusted key"));
        std::fs::write(d.path().join("bad.key"), "vigil-ed25519-secret-key:AAAA").unwrap();
        std::fs::set_permissions(d.path().join("bad.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Signer::load(&d.path().join("bad.key")).unwrap_err().to_string().contains("damaged"));
    }
}
