//! The 国密 suite: SM2 signatures with SM3 (GM/T 0003, GM/T 0009) beside Ed25519, and SM3
//! digests beside SHA-256.
//!
//! Keys are files OpenSSL reads as they are: the secret key PKCS#8 PEM (`<name>.sm2.key`, mode
//! 0600), the public key SubjectPublicKeyInfo PEM (`<name>.sm2.pub`). A signature is DER
//! (`SEQUENCE { r INTEGER, s INTEGER }`, what `openssl dgst -sm3 -sign` writes) over the same
//! canonical bytes the Ed25519 signature covers, with the distinguishing identifier
//! [`DEFAULT_DISTID`] (GM/T 0009's default), so
//! `openssl dgst -sm3 -verify <name>.sm2.pub -sigopt distid:1234567812345678 -signature sig.der doc.json`
//! checks it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use sm2::dsa::signature::{Signer as _, Verifier as _};
use sm2::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};

/// The user id every SM2 signature uses unless configured (GM/T 0009-2012 §10).
pub const DEFAULT_DISTID: &str = "1234567812345678";
/// The signature algorithm's name in signature files.
pub const ALG: &str = "SM2-with-SM3";

/// SM3 of `bytes`, lower-case hex.
pub fn sm3_hex(bytes: &[u8]) -> String {
    use sm3::Digest;
    hex::encode(sm3::Sm3::digest(bytes))
}

/// Key id of an SM2 public key: the first 16 hex digits of SHA-256 of its uncompressed point.
pub fn key_id(pk: &sm2::PublicKey) -> String {
    use sm2::elliptic_curve::sec1::ToEncodedPoint;
    crate::util::sha256_hex(pk.to_encoded_point(false).as_bytes())[..16].to_string()
}

/// `<dir>/<stem>.sm2.key` for a key file `<dir>/<stem>.key` (or `.pub`).
pub fn secret_path(key_path: &Path) -> PathBuf {
    key_path.with_extension("sm2.key")
}

/// `<dir>/<stem>.sm2.pub` for a key file `<dir>/<stem>.key` (or `.pub`).
pub fn public_path(key_path: &Path) -> PathBuf {
    key_path.with_extension("sm2.pub")
}

/// An SM2 secret key.
pub struct Sm2Signer {
    key: sm2::dsa::SigningKey,
    pub key_id: String,
}

impl std::fmt::Debug for Sm2Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sm2Signer(key id {})", self.key_id) // never the secret
    }
}

impl Sm2Signer {
    /// A new key pair written as `<stem>.sm2.key` (0600) and `<stem>.sm2.pub` (0644) beside
    /// `key_path`; never overwrites either.
    pub fn init(key_path: &Path) -> Result<Sm2Signer> {
        let k = Sm2Signer::generate()?;
        k.write_beside(key_path)?;
        Ok(k)
    }

    /// A new key pair in memory (`vigil keys rotate` writes it once the hand-over is stored).
    pub fn generate() -> Result<Sm2Signer> {
        let mut seed = [0u8; 32];
        let secret = loop {
            getrandom::getrandom(&mut seed).map_err(|e| anyhow!("no randomness: {e}"))?;
            if let Ok(s) = sm2::SecretKey::from_slice(&seed) {
                break s;
            }
        };
        Sm2Signer::from_secret(&secret)
    }

    /// Writes `<stem>.sm2.key` (0600) and `<stem>.sm2.pub` (0644) beside `key_path`; never
    /// overwrites either, never through a symlink planted at their paths.
    pub fn write_beside(&self, key_path: &Path) -> Result<()> {
        let (sk_path, pk_path) = (secret_path(key_path), public_path(key_path));
        for p in [&sk_path, &pk_path] {
            if std::fs::symlink_metadata(p).is_ok() {
                bail!("{} already exists: refusing to overwrite a key file", p.display());
            }
        }
        let secret = sm2::SecretKey::from_bytes(&self.key.to_bytes()).map_err(|e| anyhow!("SM2 key: {e}"))?;
        let pem = secret.to_pkcs8_pem(LineEnding::LF).map_err(|e| anyhow!("SM2 key: {e}"))?;
        crate::util::fsx::create_new(&sk_path, pem.as_bytes(), 0o600)
            .map_err(|e| anyhow!("{e:#}: refusing to overwrite a signing key"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sk_path, std::fs::Permissions::from_mode(0o600))?;
        crate::util::fsx::create_new(&pk_path, self.public().to_pem().as_bytes(), 0o644)?;
        std::fs::set_permissions(&pk_path, std::fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    fn from_secret(secret: &sm2::SecretKey) -> Result<Sm2Signer> {
        let key = sm2::dsa::SigningKey::new(DEFAULT_DISTID, secret).map_err(|e| anyhow!("SM2 key: {e}"))?;
        Ok(Sm2Signer { key_id: key_id(&secret.public_key()), key })
    }

    /// Loads `<stem>.sm2.key` beside `key_path`, None when there is none. A key readable by
    /// group or others is refused.
    pub fn load_beside(key_path: &Path) -> Result<Option<Sm2Signer>> {
        let path = secret_path(key_path);
        let Some(text) = read_if_there(&path, "SM2 key")? else { return Ok(None) };
        super::refuse_shared(&path, "SM2 key")?;
        let secret = sm2::SecretKey::from_pkcs8_pem(&text)
            .map_err(|e| anyhow!("SM2 key {}: not a PKCS#8 PEM SM2 secret key ({e})", path.display()))?;
        Ok(Some(Sm2Signer::from_secret(&secret)?))
    }

    /// The public key.
    pub fn public(&self) -> Sm2Public {
        let pk: sm2::PublicKey = self.key.verifying_key().into();
        Sm2Public { key_id: self.key_id.clone(), key: pk }
    }

    /// A signature over `bytes` (DER, base64 in the signature file).
    pub fn sign(&self, bytes: &[u8]) -> Sm2Signature {
        let sig: sm2::dsa::Signature = self.key.sign(bytes);
        Sm2Signature {
            alg: ALG.into(),
            key_id: self.key_id.clone(),
            distid: DEFAULT_DISTID.into(),
            signature: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der_encode(&sig.to_bytes())),
        }
    }
}

/// An SM2 public key.
#[derive(Clone)]
pub struct Sm2Public {
    pub key: sm2::PublicKey,
    pub key_id: String,
}

impl Sm2Public {
    /// Parses SubjectPublicKeyInfo PEM.
    pub fn parse(text: &str) -> Result<Sm2Public> {
        let key = sm2::PublicKey::from_public_key_pem(text.trim())
            .map_err(|e| anyhow!("not an SM2 public key in SubjectPublicKeyInfo PEM ({e})"))?;
        Ok(Sm2Public { key_id: key_id(&key), key })
    }

    /// Loads `<stem>.sm2.pub` beside a key file, None when there is none.
    pub fn load_beside(path: &Path) -> Result<Option<Sm2Public>> {
        let p = public_path(path);
        let Some(text) = read_if_there(&p, "SM2 public key")? else { return Ok(None) };
        Sm2Public::parse(&text).map(Some).with_context(|| format!("SM2 public key {}", p.display()))
    }

    /// The PEM text.
    pub fn to_pem(&self) -> String {
        self.key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// Checks an SM2 signature over `bytes`.
    pub fn verify(&self, bytes: &[u8], sig: &Sm2Signature) -> Result<()> {
        if sig.alg != ALG {
            bail!("SM2 signature algorithm {:?} is not {ALG}", sig.alg);
        }
        if sig.key_id != self.key_id {
            bail!("SM2 signature by key {}, not by the trusted SM2 key {}", sig.key_id, self.key_id);
        }
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &sig.signature)
            .map_err(|_| anyhow!("SM2 signature is damaged (not base64)"))?;
        let raw = der_decode(&der).ok_or_else(|| anyhow!("SM2 signature is damaged (not a DER r, s pair)"))?;
        let s = sm2::dsa::Signature::from_bytes(&raw).map_err(|_| anyhow!("SM2 signature is damaged"))?;
        let vk = sm2::dsa::VerifyingKey::new(&sig.distid, self.key).map_err(|e| anyhow!("SM2 key: {e}"))?;
        vk.verify(bytes, &s)
            .map_err(|_| anyhow!("SM2 signature does not match the signed bytes (content or signature altered)"))
    }
}

/// The text of the key file at `path` (bounded), None when there is none; `what` names it.
fn read_if_there(path: &Path, what: &str) -> Result<Option<String>> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    crate::util::fsx::read_text(path, crate::util::fsx::limits::KEY)
        .map(Some)
        .with_context(|| format!("{what} {}: cannot read", path.display()))
}

/// The SM2 half of a signature file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sm2Signature {
    /// `SM2-with-SM3`.
    pub alg: String,
    pub key_id: String,
    /// The distinguishing identifier (user id) signed with; GM/T 0009's default unless configured.
    pub distid: String,
    /// DER `SEQUENCE { r, s }`, base64: `base64 -d` gives what `openssl dgst -signature` reads.
    pub signature: String,
}

fn der_int(b: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = b.iter().copied().skip_while(|x| *x == 0).collect();
    if v.is_empty() || v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    let mut out = vec![0x02, v.len() as u8];
    out.extend(v);
    out
}

/// r‖s (32 + 32 bytes) as DER.
fn der_encode(rs: &[u8; 64]) -> Vec<u8> {
    let mut body = der_int(&rs[..32]);
    body.extend(der_int(&rs[32..]));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// DER `SEQUENCE { r, s }` as r‖s; None when it is anything else.
fn der_decode(der: &[u8]) -> Option<[u8; 64]> {
    if der.len() < 8 || der.len() > 72 || der[0] != 0x30 || der[1] as usize != der.len() - 2 {
        return None;
    }
    let mut out = [0u8; 64];
    let mut at = 2;
    for half in 0..2 {
        if der.get(at)? != &0x02 {
            return None;
        }
        let len = *der.get(at + 1)? as usize;
        let v = der.get(at + 2..at + 2 + len)?;
        let v: Vec<u8> = v.iter().copied().skip_while(|x| *x == 0).collect();
        if v.len() > 32 {
            return None;
        }
        out[half * 32 + 32 - v.len()..half * 32 + 32].copy_from_slice(&v);
        at += 2 + len;
    }
    (at == der.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sm3_of_abc_is_the_standards_example() {
        // GM/T 0004-2012 appendix A.1
        assert_eq!(sm3_hex(b"abc"), "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0");
    }

    #[test]
    fn sign_verify_der_round_trip_and_tamper() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("signing.key");
        let s = Sm2Signer::init(&k).unwrap();
        assert!(Sm2Signer::init(&k).unwrap_err().to_string().contains("refusing to overwrite"));
        let loaded = Sm2Signer::load_beside(&k).unwrap().unwrap();
        assert_eq!(loaded.key_id, s.key_id);
        let p = Sm2Public::load_beside(&d.path().join("signing.pub")).unwrap().unwrap();
        assert_eq!(p.key_id, s.key_id);
        let sig = loaded.sign(b"{\"a\":1}");
        p.verify(b"{\"a\":1}", &sig).unwrap();
        assert!(p.verify(b"{\"a\":2}", &sig).unwrap_err().to_string().contains("does not match"));
        for rs in [[0u8; 64], [0xffu8; 64]] {
            assert_eq!(der_decode(&der_encode(&rs)), Some(rs));
        }
        assert_eq!(der_decode(b"\x30\x02\x02\x00"), None);
    }
}
