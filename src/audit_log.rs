//! The access audit log of the review service (ZJ 18(2): record subject, content, method and time
//! of supervision): every login (success and failure), item viewed, clip played, file downloaded,
//! package exported and decision, as an append-only, hash-chained, signed log in the store —
//! `review-audit/<site>/log/<seq:012>.json` + `.sig`, each entry committing to the SHA-256 of the
//! one before. Positions are claimed create-only, so any number of service instances append to
//! one log without a coordinator; `vigil verify` walks it.
//!
//! **Truncation.** Removing the newest entries leaves a log that still verifies by itself, so the
//! log's head is also kept where the store's owner cannot rewrite it: after every append a signed
//! head (position and hash) is published on `vigil.access.<site>.log` through the instance's
//! durable outbox, and every [`HEAD_EVERY`]th one is also written to the store
//! (`review-audit/<site>/heads/<seq>.json` + `.sig`). `vigil verify` and `vigil review audit`
//! compare the log with the newest head they can read: a log shorter than its head, or another
//! entry at the head's position, is a failure.
//!
//! **Decisions.** A decision's entry names the review record it wrote (its number and SHA-256):
//! a record deleted or replaced afterwards disagrees with the log.
//!
//! **Pages.** An entry about an evidence item is also indexed under
//! `review-audit/<site>/items/<id>/<seq>` (an empty marker), so an item's page reads its own
//! entries, and the audit page reads one page of the log, never the whole of it.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::evidence::review::Role;
use crate::signing::{PublicKey, Signer, open, seal};
use crate::store::Store;
use crate::util::rfc3339;

pub const ACCESS_SCHEMA: &str = "vigil.access.v1";
pub const HEAD_SCHEMA: &str = "vigil.access-head.v1";
/// Every how many entries the head is also written to the store.
pub const HEAD_EVERY: u64 = 16;
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
    /// Bytes of a clip or snapshot served (one entry per file and session every ten minutes:
    /// the ranges a player fetches).
    FileRead,
    /// A review record found without its access-log entry (a crash between the two), logged
    /// when the service next touches the item.
    DecisionRecovered,
}

/// The review record a decision wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordRef {
    pub n: u32,
    pub sha256: String,
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
    pub role: Role,
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
    /// Decisions: the review record written (absent in logs from before vigil recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordRef>,
    /// How many accesses of this kind the entry stands for (refused logins while locked out are
    /// counted, not each logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl AccessEntry {
    /// The decision record this entry commits to: its `record`, or for entries from before
    /// vigil recorded it, the number in the detail text ("Approve as decision 2; ...").
    pub fn decision_record(&self) -> Option<(u32, Option<&str>)> {
        if self.action != Action::Decision || self.outcome != Outcome::Ok {
            return None;
        }
        if let Some(r) = &self.record {
            return Some((r.n, Some(r.sha256.as_str())));
        }
        let n = self.detail.split(" as decision ").nth(1)?.split(';').next()?.trim().parse().ok()?;
        Some((n, None))
    }
}

/// What an append records (the log fills in position, time and chain).
#[derive(Debug, Clone)]
pub struct Access {
    pub user: String,
    pub officer_id: String,
    pub role: Role,
    pub action: Action,
    pub outcome: Outcome,
    pub evidence_id: Option<String>,
    pub detail: String,
    pub client: String,
    pub record: Option<RecordRef>,
    pub count: Option<u64>,
}

/// A signed statement of the log's head: its last position and that entry's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessHead {
    pub schema: String,
    pub site: String,
    pub seq: u64,
    pub sha256: String,
    pub time_utc: String,
    pub service: String,
    pub key_id: String,
}

/// `vigil.access.<site>.log`: a head and its signature (re-canonicalise `head` to check it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessHeadEvent {
    pub schema: String,
    pub head: AccessHead,
    pub signature: crate::signing::SignatureFile,
}

pub const HEAD_EVENT_SCHEMA: &str = "vigil.access-head-event.v1";

impl AccessHeadEvent {
    /// The head, if its signature verifies with `key`.
    pub fn verified(&self, key: &PublicKey) -> Result<&AccessHead> {
        let bytes = crate::util::jcs::canonical(&serde_json::to_value(&self.head)?);
        key.verify(&bytes, &self.signature).context("access-log head")?;
        Ok(&self.head)
    }
}

pub fn entry_key(site: &str, seq: u64) -> String {
    format!("review-audit/{site}/log/{seq:012}.json")
}

pub fn log_prefix(site: &str) -> String {
    format!("review-audit/{site}/log/")
}

fn head_key(site: &str, seq: u64) -> String {
    format!("review-audit/{site}/heads/{seq:012}.json")
}

fn item_prefix(site: &str, id: &str) -> String {
    format!("review-audit/{site}/items/{id}/")
}

/// A site's log, appended to by this process.
pub struct AuditLog {
    store: Store,
    signer: std::sync::Arc<Signer>,
    site: String,
    service: String,
    /// The last position this process knows of, and its entry's hash.
    head: Mutex<Option<(u64, String)>>,
    /// Where each new head is published (`vigil.access.<site>.log`).
    publisher: Option<std::sync::Arc<crate::publish::Publisher>>,
}

impl AuditLog {
    pub fn new(store: Store, signer: std::sync::Arc<Signer>, site: &str, service: &str) -> AuditLog {
        AuditLog { store, signer, site: site.into(), service: service.into(), head: Mutex::new(None), publisher: None }
    }

    /// Publishes the head after every append through `p` (its outbox, then the stream).
    pub fn with_publisher(mut self, p: std::sync::Arc<crate::publish::Publisher>) -> AuditLog {
        self.publisher = Some(p);
        self
    }

    /// Continues after `head` when the store's log ends before it (a truncated log): new
    /// entries never take a position a published head already names, so the hole stays
    /// visible to every check.
    pub async fn resume_after(&self, head: &AccessHead) -> Result<()> {
        let stored = self.store.last_position(|s| entry_key(&self.site, s), 0).await?;
        if head.seq > stored {
            *self.head.lock().await = Some((head.seq, head.sha256.clone()));
        }
        Ok(())
    }

    async fn after_append(&self, seq: u64, hash: &str, evidence_id: Option<&str>) -> Result<()> {
        if let Some(id) = evidence_id {
            self.store.put_new(&format!("{}{seq:012}", item_prefix(&self.site, id)), Bytes::new()).await?;
        }
        let head = AccessHead {
            schema: HEAD_SCHEMA.into(),
            site: self.site.clone(),
            seq,
            sha256: hash.into(),
            time_utc: rfc3339(chrono::Utc::now()),
            service: self.service.clone(),
            key_id: self.signer.key_id.clone(),
        };
        let (bytes, sig, _) = seal(&head, &self.signer)?;
        if seq.is_multiple_of(HEAD_EVERY) {
            let k = head_key(&self.site, seq);
            self.store.put_new(&k, Bytes::from(bytes)).await?;
            self.store.put_new(&format!("{k}.sig"), Bytes::from(sig.clone())).await?;
        }
        if let Some(p) = &self.publisher {
            let event = AccessHeadEvent {
                schema: HEAD_EVENT_SCHEMA.into(),
                head: head.clone(),
                signature: crate::signing::SignatureFile::parse(&sig)?,
            };
            // a head published twice does no harm (readers take the newest): no scan for copies
            let entry = crate::publish::OutboxEntry::new(
                format!("access-{}-{seq}-{}", self.site, &hash[..16]),
                crate::util::Subject::access(&self.site),
                &event,
            );
            p.submit(entry).await?;
        }
        Ok(())
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
                role: a.role,
                action: a.action,
                outcome: a.outcome,
                evidence_id: a.evidence_id.clone(),
                detail: a.detail.clone(),
                client: a.client.clone(),
                service: self.service.clone(),
                key_id: self.signer.key_id.clone(),
                record: a.record.clone(),
                count: a.count,
            };
            let (bytes, sig, hash) = seal(&entry, &self.signer)?;
            let key = entry_key(&self.site, next);
            match self.store.put_new(&key, Bytes::from(bytes)).await {
                Ok(()) => {
                    self.store.put_new(&format!("{key}.sig"), Bytes::from(sig)).await?;
                    *head = Some((next, hash.clone()));
                    drop(head);
                    self.after_append(next, &hash, a.evidence_id.as_deref()).await?;
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
    /// The newest head the log was compared with, and where it came from.
    pub head_checked: Option<String>,
}

impl LogReport {
    /// Compares the log with a head read elsewhere (`from`: where it came from); a log that ends
    /// before it, or holds another entry at its position, was truncated or rewritten.
    pub fn check_head(&mut self, head: &AccessHead, hash_at: &BTreeMap<u64, String>, from: &str) {
        let last = self.entries.last().map_or(0, |e| e.seq);
        self.head_checked = Some(format!("seq {} from {from}", head.seq));
        if head.seq > last {
            self.problems.push(format!(
                "truncated: {from} says the log reached entry {} ({}), the store's log ends at entry {last}: {} newest entries removed",
                head.seq,
                head.time_utc,
                head.seq - last
            ));
        } else if hash_at.get(&head.seq).is_some_and(|h| h != &head.sha256) {
            self.problems.push(format!("entry {} differs from the one {from} names (log rewritten)", head.seq));
        }
    }
}

/// Reads one entry and its signature: (entry, SHA-256 of its bytes).
async fn read_entry(store: &Store, key: &PublicKey, k: &str) -> Result<(AccessEntry, String)> {
    let bytes = store.get(k).await?;
    let hash = crate::util::sha256_hex(&bytes);
    let sig = store.get(&format!("{k}.sig")).await.map_err(|_| anyhow::anyhow!("{k}: signature missing"))?;
    let e = open::<AccessEntry>(&bytes, &sig, key).with_context(|| k.to_string())?;
    Ok((e, hash))
}

async fn entry_keys(store: &Store, site: &str) -> Result<Vec<String>> {
    let mut keys: Vec<String> = store
        .list(&log_prefix(site))
        .await
        .with_context(|| format!("audit log of {site}"))?
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect();
    keys.sort();
    Ok(keys)
}

/// Reads and checks a site's log: every signature, every link, no gap, and the newest head
/// written to the store.
pub async fn read(store: &Store, key: &PublicKey, site: &str) -> Result<LogReport> {
    let keys = entry_keys(store, site).await?;
    let mut r = LogReport::default();
    let mut prev = GENESIS.to_string();
    let mut hash_at = BTreeMap::new();
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
                hash_at.insert(e.seq, hash.clone());
                r.entries.push(e);
            }
            Err(e) => r.problems.push(format!("{k}: {e:#}")),
        }
        prev = hash;
    }
    // the newest head in the store
    let mut heads: Vec<String> = store
        .list(&format!("review-audit/{site}/heads/"))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect();
    heads.sort();
    if let Some(k) = heads.last() {
        let signed = async {
            let b = store.get(k).await?;
            let sig = store.get(&format!("{k}.sig")).await?;
            open::<AccessHead>(&b, &sig, key)
        };
        match signed.await {
            Ok(h) => r.check_head(&h, &hash_at, "the newest head in the store"),
            Err(e) => r.problems.push(format!("{k}: {e:#}")),
        }
    }
    Ok(r)
}

/// Compares `log` (read by [`read`]) with the head published on the stream, if the stream holds
/// one.
pub async fn check_stream_head(
    store: &Store,
    log: &mut LogReport,
    (nats, stream): (&crate::util::nats::Endpoint, &str),
    site: &str,
    key: &PublicKey,
) -> Result<()> {
    let Some(h) = stream_head(nats, stream, site, key).await? else { return Ok(()) };
    let mut hash_at = BTreeMap::new();
    if let Ok(b) = store.get(&entry_key(site, h.seq)).await {
        hash_at.insert(h.seq, crate::util::sha256_hex(&b));
    }
    log.check_head(&h, &hash_at, "the head published on the stream");
    Ok(())
}

/// The newest head published on the stream, verified with `key`; `None` when the stream holds
/// none. Reads the last message on `vigil.access.<site>.log`.
pub async fn stream_head(
    nats: &crate::util::nats::Endpoint,
    stream: &str,
    site: &str,
    key: &PublicKey,
) -> Result<Option<AccessHead>> {
    let client = tokio::time::timeout(std::time::Duration::from_secs(5), nats.connect())
        .await
        .map_err(|_| anyhow::anyhow!("NATS {}: no answer in 5 s", nats.shown()))??;
    let js = async_nats::jetstream::new(client);
    let st = js.get_stream(stream).await.with_context(|| format!("stream {stream}"))?;
    let subject = crate::util::Subject::access(site).to_string();
    match st.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => {
            let ev: AccessHeadEvent =
                serde_json::from_slice(&m.payload).with_context(|| format!("{subject}: not an access-log head"))?;
            Ok(Some(ev.verified(key)?.clone()))
        }
        Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(anyhow::Error::from(e).context(subject)),
    }
}

/// One page of the log, newest first: entries `(page-1)*size ..` from the end, each checked
/// (signature, and the links inside the page); and the log's length.
pub async fn read_page(
    store: &Store,
    key: &PublicKey,
    site: &str,
    page: usize,
    size: usize,
    keep: impl Fn(&AccessEntry) -> bool,
) -> Result<(Vec<AccessEntry>, usize, Vec<String>)> {
    let keys = entry_keys(store, site).await?;
    let total = keys.len();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut matched = 0usize;
    let skip = page.saturating_sub(1) * size;
    // newest first; a filter reads on until the page is full (at most 20 pages' worth)
    let mut later: Option<AccessEntry> = None;
    for k in keys.iter().rev().take((skip + size) * 20) {
        match read_entry(store, key, k).await {
            Ok((e, hash)) => {
                if let Some(l) = &later
                    && l.prev_sha256 != hash
                {
                    problems.push(format!("entry {} does not follow entry {} (log altered)", l.seq, e.seq));
                }
                later = Some(e.clone());
                if keep(&e) {
                    matched += 1;
                    if matched > skip {
                        out.push(e);
                    }
                }
                if out.len() >= size {
                    break;
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    Ok((out, total, problems))
}

/// The entries about evidence item `id`, newest first (at most `limit`), each checked.
pub async fn for_item(store: &Store, key: &PublicKey, site: &str, id: &str, limit: usize) -> Result<Vec<AccessEntry>> {
    let mut seqs: Vec<u64> =
        store.list(&item_prefix(site, id)).await?.iter().filter_map(|k| k.rsplit('/').next()?.parse().ok()).collect();
    seqs.sort_unstable();
    let mut out = Vec::new();
    for s in seqs.into_iter().rev().take(limit) {
        match read_entry(store, key, &entry_key(site, s)).await {
            Ok((e, _)) if e.evidence_id.as_deref() == Some(id) => out.push(e),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = format!("{e:#}"), "access log: an item's entry does not verify"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(user: &str) -> Access {
        Access {
            user: user.into(),
            officer_id: "A-1".into(),
            role: Role::Reviewer,
            action: Action::Login,
            outcome: Outcome::Ok,
            evidence_id: None,
            detail: String::new(),
            client: "127.0.0.1".into(),
            record: None,
            count: None,
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
