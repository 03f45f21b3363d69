//! SHA-256, the one hash of the evidence format.

use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of `b`.
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}
