//! Sealed originals: the unmasked clip window encrypted (age v1, X25519) to the authority's
//! public key; the worker cannot decrypt it.

use anyhow::{Result, anyhow};

/// Encrypts to an age X25519 recipient.
pub fn seal_to(recipient: &age::x25519::Recipient, plain: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let enc = age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
        .map_err(|e| anyhow!("age: {e}"))?;
    let mut out = Vec::with_capacity(plain.len() + 512);
    let mut w = enc.wrap_output(&mut out)?;
    w.write_all(plain)?;
    w.finish()?;
    Ok(out)
}

/// Decrypts an age file with an X25519 identity.
pub fn unseal_with(identity: &age::x25519::Identity, cipher: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let dec = age::Decryptor::new(cipher).map_err(|e| anyhow!("not an age file: {e}"))?;
    let mut r = dec
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| anyhow!("cannot decrypt with this identity: {e}"))?;
    let mut plain = Vec::new();
    r.read_to_end(&mut plain)?;
    Ok(plain)
}
