//! Helpers every stage uses, below all of them: time formatting, hashing, retry backoff, NATS
//! subject names, RFC 8785 canonical JSON, bounded and symlink-safe file access, and secrets that
//! redact themselves. Nothing here knows about cameras, rules or evidence.

pub mod backoff;
pub mod fsx;
pub mod hash;
pub mod http;
pub mod jcs;
pub mod nats;
pub mod plot;
pub mod progress;
pub mod ranges;
pub mod secret;
pub mod subject;
pub mod text;
pub mod time;

pub use backoff::Backoff;
pub use hash::sha256_hex;
pub use subject::Subject;
pub use text::{check_label, printable};
pub use time::{local, rfc3339};
