//! The access audit log of the review service (ZJ 18(2): record subject, content, method and time
//! of supervision): every login (success and failure), item viewed, clip played, file downloaded,
//! package exported and decision, as an append-only, hash-chained, signed log in the store —
//! `review-audit/<site>/log/<seq:012>.json` + `.sig`, each entry committing to the SHA-256 of the
//! one before. Positions are claimed create-only, so any number of service instances append to
//! one log without a coordinator; `vigil verify` walks it.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::signing::{PublicKey, Signer, open, seal};
use crate::store::Store;
use crate::util::rfc3339;

pub const ACCESS_SCHEMA: &str = "vigil.access.v1";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Login,
    Logout,
    ItemViewed,
    ClipPlayed,
    FileDownloaded,
    PackageExported,
    Decision,
    QueueViewed,
    AuditViewed,
    UnmaskedViewRequested,
    MaskChanged,
    ThresholdChanged,
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Refused: bad password, wrong role, a decision the workflow forbids.
    Denied,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessEntry {
    pub schema: String,
    pub site: String,
    pub seq: u64,
    pub prev_sha256: String,
    pub time_utc: String,
    /// The account name given (for a failed login, what was typed as the name).
    pub user: String,
    pub officer_id: String,
    pub role: String,
    pub action: Action,
    pub outcome: Outcome,
    pub evidence_id: Option<String>,
    /// What exactly (file name, decision, SHA-256 of an exported package, why refused).
    pub detail: String,
    /// The client's address.
    pub client: String,
    /// The service instance that wrote the entry.
    pub service: String,
    pub key_id: String,
}

/// What an append records (the log fills in position, time and chain).
#[derive(Debug, Clone)]
pub struct Access {
    pub user: String,
    pub officer_id: String,
    pub role: String,
    pub action: Action,
    pub outcome: Outcome,
    pub evidence_id: Option<String>,
    pub detail: String,
    pub client: String,
}

pub fn entry_key(site: &str, seq: u64) -> String {
    format!("review-audit/{site}/log/{seq:012}.json")
}

pub fn log_prefix(site: &str) -> String {
    format!("review-audit/{site}/log/")
}

/// A site's log, appended to by this process.
pub struct AuditLog {
    store: Store,
    signer: std::sync::Arc<Signer>,
    site: String,
    service: String,
    /// The last position this process knows of, and its entry's hash.
    head: Mutex<Option<(u64, String)>>,
}

impl AuditLog {
    pub fn new(store: Store, signer: std::sync::Arc<Signer>, site: &str, service: &str) -> AuditLog {
        AuditLog { store, signer, site: site.into(), service: service.into(), head: Mutex::new(None) }
    }

    async fn hash_at(&self, seq: u64) -> Result<String> {
        if seq == 0 {
            return Ok(GENESIS.into());
        }
        let b = self.store.get(&entry_key(&self.site, seq)).await?;
        Ok(crate::util::sha256_hex(&b))
    }

    /// Appends one entry; returns its position. Another instance taking the same position makes
    /// this one read the new head and try the next.
    pub async fn append(&self, a: Access) -> Result<u64> {
        let mut head = self.head.lock().await;
        let (mut seq, mut prev) = match head.clone() {
            Some(h) => h,
            None => {
                let s = self.store.last_position(|s| entry_key(&self.site, s), 0).await?;
                (s, self.hash_at(s).await?)
            }
        };
        for _ in 0..64 {
            let next = seq + 1;
            let entry = AccessEntry {
                schema: ACCESS_SCHEMA.into(),
                site: self.site.clone(),
                seq: next,
                prev_sha256: prev.clone(),
                time_utc: rfc3339(chrono::Utc::now()),
                user: a.user.clone(),
                officer_id: a.officer_id.clone(),
                role: a.role.clone(),
                action: a.action,
                outcome: a.outcome,
                evidence_id: a.evidence_id.clone(),
                detail: a.detail.clone(),
                client: a.client.clone(),
                service: self.service.clone(),
                key_id: self.signer.key_id.clone(),
            };
            let (bytes, sig, hash) = seal(&entry, &self.signer)?;
            let key = entry_key(&self.site, next);
            match self.store.put_new(&key, Bytes::from(bytes)).await {
                Ok(()) => {
                    self.store.put_new(&format!("{key}.sig"), Bytes::from(sig)).await?;
                    *head = Some((next, hash));
                    return Ok(next);
                }
                Err(_) if self.store.exists(&key).await.unwrap_or(false) => {
                    // taken by another instance: move past it
                    seq = self.store.last_position(|s| entry_key(&self.site, s), next).await?;
                    prev = self.hash_at(seq).await?;
                }
                Err(e) => return Err(e),
            }
        }
        bail!("audit log: could not claim a position after 64 attempts")
    }
}

/// What [`read`] found.
#[derive(Debug, Default, Serialize)]
pub struct LogReport {
    pub entries: Vec<AccessEntry>,
    pub problems: Vec<String>,
}

/// Reads and checks a site's log: every signature, every link, no gap.
pub async fn read(store: &Store, key: &PublicKey, site: &str) -> Result<LogReport> {
    let mut keys: Vec<String> = store
        .list(&log_prefix(site))
        .await
        .with_context(|| format!("audit log of {site}"))?
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect();
    keys.sort();
    let mut r = LogReport::default();
    let mut prev = GENESIS.to_string();
    for (i, k) in keys.iter().enumerate() {
        let want = i as u64 + 1;
        let bytes = store.get(k).await?;
        let hash = crate::util::sha256_hex(&bytes);
        let sig = match store.get(&format!("{k}.sig")).await {
            Ok(s) => s,
            Err(_) => {
                r.problems.push(format!("{k}: signature missing"));
                prev = hash;
                continue;
            }
        };
        match open::<AccessEntry>(&bytes, &sig, key) {
            Ok(e) => {
                if e.seq != want {
                    r.problems
                        .push(format!("{k}: entry says seq {}, expected {want} (entries missing or moved)", e.seq));
                }
                if e.prev_sha256 != prev {
                    r.problems.push(format!("{k}: does not follow the entry before it (log altered)"));
                }
                r.entries.push(e);
            }
            Err(e) => r.problems.push(format!("{k}: {e:#}")),
        }
        prev = hash;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(user: &str) -> Access {
        Access {
            user: user.into(),
            officer_id: "A-1".into(),
            role: "reviewer".into(),
            action: Action::Login,
            outcome: Outcome::Ok,
            evidence_id: None,
            detail: String::new(),
            client: "127.0.0.1".into(),
        }
    }

    #[tokio::test]
    async fn two_writers_append_to_one_chained_log_and_tampering_shows() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path().join("s").to_str().unwrap(), &Default::default()).unwrap();
        let signer = std::sync::Arc::new(Signer::init(&d.path().join("k")).unwrap());
        let (a, b) = (
            AuditLog::new(store.clone(), signer.clone(), "site", "a"),
            AuditLog::new(store.clone(), signer.clone(), "site", "b"),
        );
        assert_eq!(a.append(access("x")).await.unwrap(), 1);
        assert_eq!(b.append(access("y")).await.unwrap(), 2, "b found a's entry and moved past it");
        assert_eq!(a.append(access("z")).await.unwrap(), 3, "a's cached head was stale: it moved past b's");
        let pk = PublicKey::parse(&signer.public_text()).unwrap();
        let r = read(&store, &pk, "site").await.unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.entries.iter().map(|e| e.user.as_str()).collect::<Vec<_>>(), vec!["x", "y", "z"]);
        // an entry removed from the middle
        std::fs::remove_file(d.path().join("s").join(entry_key("site", 2))).unwrap();
        let r = read(&store, &pk, "site").await.unwrap();
        assert!(r.problems.iter().any(|p| p.contains("expected 2")), "{:?}", r.problems);
    }
}
