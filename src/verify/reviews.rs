//! Checking an item's review records: each signed by the review service's key, numbered 1, 2, …
//! without a gap, each committing to the one before, all about the item's manifest as stored,
//! and each claiming the status its predecessors and itself give.

use serde::Serialize;

use super::Item;
use crate::evidence::review::{ReviewRecord, Status, record_key, status};
use crate::signing::{PublicKey, open};
use crate::store::Store;

/// An item's review state, as `vigil verify` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ItemReview {
    pub evidence_id: String,
    pub status: Status,
    pub decisions: usize,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The item's review records that verify, in order, and the problems found.
pub async fn read_records(store: &Store, key: &PublicKey, it: &Item) -> (Vec<ReviewRecord>, Vec<String>) {
    let (records, _, problems) = read_records_hashed(store, key, it).await;
    (records, problems)
}

/// [`read_records`], with the SHA-256 of each record's stored bytes (by its `n`).
pub async fn read_records_hashed(
    store: &Store,
    key: &PublicKey,
    it: &Item,
) -> (Vec<ReviewRecord>, std::collections::BTreeMap<u32, String>, Vec<String>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let mut jsons: Vec<&String> = it.reviews.iter().filter(|f| f.ends_with(".json")).collect();
    jsons.sort();
    for (i, f) in jsons.iter().enumerate() {
        let n = i as u32 + 1;
        let k = format!("{}/reviews/{f}", it.prefix);
        if k != record_key(&it.prefix, n) {
            problems.push(format!("review record {f}: expected reviews/{n:04}.json here (records missing or renamed)"));
        }
        let Ok(bytes) = store.get(&k).await else {
            problems.push(format!("review record {f}: unreadable"));
            continue;
        };
        let sig = store.get(&k.replace(".json", ".sig")).await.ok().map(|b| b.to_vec());
        files.push((f.to_string(), bytes.to_vec(), sig));
    }
    let hashes = files.iter().enumerate().map(|(i, (_, b, _))| (i as u32 + 1, crate::util::sha256_hex(b))).collect();
    let (records, more) = check_records(&files, key, &it.id, it.manifest_hash.as_deref());
    problems.extend(more);
    (records, hashes, problems)
}

/// What the access log says of an item's decisions, against its records: a decision the log
/// committed to (its number, and from vigil 0.2 its SHA-256) must be in the store as logged.
/// Returns (problems, warnings): a record missing or replaced is a problem; a record the log
/// does not mention is a warning (a crash between writing the record and its log entry, or a
/// log from before decisions were logged with their record).
pub fn check_against_log(
    records: &[ReviewRecord],
    hashes: &std::collections::BTreeMap<u32, String>,
    logged: &[&crate::audit_log::AccessEntry],
) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    let mut mentioned = std::collections::BTreeSet::new();
    for e in logged {
        let Some((n, sha)) = e.decision_record() else { continue };
        mentioned.insert(n);
        match (records.iter().find(|r| r.n == n), hashes.get(&n)) {
            (None, _) => problems.push(format!(
                "review record {n:04}: the signed access log (entry {}, {}) records decision {n} by {}, the store has no such record (deleted)",
                e.seq, e.time_utc, e.officer_id
            )),
            (Some(_), Some(h)) if sha.is_some_and(|s| s != h) => problems.push(format!(
                "review record {n:04}: differs from the one the signed access log (entry {}) committed to (record replaced)",
                e.seq
            )),
            _ => {}
        }
    }
    for r in records {
        if !mentioned.contains(&r.n) {
            warnings.push(format!("review record {:04}: no access-log entry names it", r.n));
        }
    }
    (problems, warnings)
}

/// A review record file: (name, bytes, its signature's bytes).
pub type RecordFile = (String, Vec<u8>, Option<Vec<u8>>);

/// Checks review records given in order.
pub fn check_records(
    files: &[RecordFile],
    key: &PublicKey,
    id: &str,
    manifest_sha256: Option<&str>,
) -> (Vec<ReviewRecord>, Vec<String>) {
    let mut records: Vec<ReviewRecord> = Vec::new();
    let mut problems = Vec::new();
    let mut prev = GENESIS.to_string();
    for (i, (f, bytes, sig)) in files.iter().enumerate() {
        let n = i as u32 + 1;
        let hash = crate::util::sha256_hex(bytes);
        let Some(sig) = sig else {
            problems.push(format!("review record {f}: its signature is missing"));
            prev = hash;
            continue;
        };
        match open::<ReviewRecord>(bytes, sig, key) {
            Err(e) => problems.push(format!("review record {f}: {e:#}")),
            Ok(r) => {
                if r.n != n || r.evidence_id != id {
                    problems.push(format!(
                        "review record {f}: says it is decision {} of {}, not {n} of {id}",
                        r.n, r.evidence_id
                    ));
                }
                if r.prev_sha256 != prev {
                    problems.push(format!("review record {f}: does not follow the record before it (records altered)"));
                }
                if Some(r.item.manifest_sha256.as_str()) != manifest_sha256 {
                    problems.push(format!(
                        "review record {f}: decided on another manifest than the one stored (manifest replaced after review)"
                    ));
                }
                records.push(r);
                let s = status(&records);
                if records.last().is_some_and(|r| r.status_after != s) {
                    problems.push(format!(
                        "review record {f}: claims status {:?}, its records give {:?}",
                        records.last().map(|r| r.status_after),
                        s
                    ));
                }
            }
        }
        prev = hash;
    }
    (records, problems)
}
