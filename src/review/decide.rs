//! Deciding on an item: the workflow checked against the records as they are in the store now, the
//! decision written as the next signed record (claimed create-only: of two decisions made at
//! once on different instances, one takes the position and the other re-reads and is checked
//! again), then published on `vigil.review.<site>.<camera>` through the instance's durable
//! outbox, exactly once.

use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;

use super::Service;
use super::accounts::User;
use super::items::{ItemView, load};
use crate::audit_log::{Action, Outcome, RecordRef};
use crate::evidence::review::{
    Checks, Decision, ItemFacts, Officer, Proposal, REVIEW_EVENT_SCHEMA, REVIEW_SCHEMA, Refusal, ReviewEvent,
    ReviewRecord, Status, check_decision, record_key,
};
use crate::publish::OutboxEntry;
use crate::signing::{SignatureFile, seal};
use crate::util::{Subject, local, rfc3339};

/// `POST /api/evidence/{id}/decision`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: Decision,
    #[serde(default)]
    pub checks: Checks,
    #[serde(default)]
    pub reason: String,
    /// A rejection's kind: false_alarm, unclear, duplicate or other.
    #[serde(default)]
    pub rejection: Option<crate::evidence::review::Rejection>,
    /// The decision (its number) this one corrects.
    #[serde(default)]
    pub corrects: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no such evidence item")]
    NotFound,
    #[error("{0}")]
    Refused(Refusal),
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Decides; returns the record written and the item's status after it.
pub async fn decide(
    svc: &Service,
    user: &User,
    id: &str,
    req: &DecisionRequest,
    client: &str,
) -> Result<(ReviewRecord, Status), DecideError> {
    let officer = Officer { user: user.name.clone(), officer_id: user.officer_id.clone(), role: user.role };
    for _ in 0..8 {
        let view = load(svc, id).await.map_err(DecideError::Failed)?.ok_or(DecideError::NotFound)?;
        // the records must be what the signed access log says was decided: a deleted or
        // replaced record blocks further decisions (and `vigil verify` fails) until it is resolved
        if let Some(why) = records_against_log(svc, &view, user, client).await.map_err(DecideError::Failed)? {
            let a = super::access(user, Action::Decision, Outcome::Denied, Some(id), &why, client);
            svc.record(a).await;
            return Err(DecideError::Refused(Refusal::Conflict(why)));
        }
        let p = Proposal {
            decision: req.decision,
            checks: req.checks,
            reason: &req.reason,
            rejection: req.rejection,
            corrects: req.corrects,
            officer: &officer,
            verification_ok: view.verification.ok,
            admissible: view.manifest.admissibility.admissible,
            advisory: view.advisory(),
            first_minor: view.first_minor(),
        };
        let after = match check_decision(&view.records, &p) {
            Ok(s) => s,
            Err(r) => {
                let a = super::access(
                    user,
                    Action::Decision,
                    Outcome::Denied,
                    Some(id),
                    &format!("{:?}: {r}", req.decision),
                    client,
                );
                svc.record(a).await;
                return Err(DecideError::Refused(r));
            }
        };
        match write(svc, &view, &officer, req, after).await {
            Ok(Some((record, sha256))) => {
                let detail = format!("{:?} as decision {}; status {}", record.decision, record.n, after.name());
                let mut a = super::access(user, Action::Decision, Outcome::Ok, Some(id), &detail, client);
                a.record = Some(RecordRef { n: record.n, sha256 });
                svc.record(a).await;
                tracing::info!(evidence_id = id, user = %user.name, officer_id = %user.officer_id, decision = ?record.decision, n = record.n, status = after.name(), "review decision recorded");
                return Ok((record, after));
            }
            // another instance took this position meanwhile: read again, check again
            Ok(None) => continue,
            Err(e) => return Err(DecideError::Failed(e)),
        }
    }
    Err(DecideError::Failed(anyhow::anyhow!(
        "could not claim a review record position (too many concurrent decisions)"
    )))
}

/// Why the item's records disagree with the decisions the access log records for it, if they
/// do. A record the log does not name, older than a minute (a crash between writing the record
/// and its log entry), is logged now as recovered.
async fn records_against_log(
    svc: &Service,
    view: &ItemView,
    user: &User,
    client: &str,
) -> anyhow::Result<Option<String>> {
    let key = svc.signer.public_key();
    let old = |r: &crate::evidence::review::ReviewRecord| {
        crate::util::time::parse_rfc3339(&r.time_utc).is_ok_and(|t| Utc::now() - t > chrono::Duration::seconds(60))
    };
    // a young record the log does not name yet is another instance's decision in flight (its
    // log entry follows the record): wait for it a little before judging
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (logged, named) = loop {
        let mut logged = crate::audit_log::for_item(&svc.store, &key, svc.site(), &view.item.id, 10_000).await?;
        if logged.is_empty() && !view.records.is_empty() {
            // a log from before entries were indexed by item: read it whole
            let all = crate::audit_log::read(&svc.store, &key, svc.site()).await?.entries;
            logged = all.into_iter().filter(|e| e.evidence_id.as_deref() == Some(view.item.id.as_str())).collect();
        }
        let named: Vec<u32> = logged.iter().filter_map(|e| e.decision_record().map(|(n, _)| n)).collect();
        let in_flight = view.records.iter().any(|r| !named.contains(&r.n) && !old(r));
        if !in_flight || std::time::Instant::now() >= deadline {
            break (logged, named);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let (_, hashes, _) = crate::verify::reviews::read_records_hashed(&svc.store, &key, &view.item).await;
    let refs: Vec<&crate::audit_log::AccessEntry> = logged.iter().collect();
    let (problems, _) = crate::verify::reviews::check_against_log(&view.records, &hashes, &refs);
    if !problems.is_empty() {
        return Ok(Some(format!(
            "the item's review records disagree with the signed access log ({}); no decision can be added until an auditor has resolved it",
            problems.join("; ")
        )));
    }
    for r in &view.records {
        if !named.contains(&r.n)
            && old(r)
            && let Some(h) = hashes.get(&r.n)
        {
            let detail = format!(
                "decision {} by {} ({}) found without its access-log entry; logged now by {}",
                r.n, r.officer.user, r.officer.officer_id, user.name
            );
            let mut a =
                super::access(user, Action::DecisionRecovered, Outcome::Ok, Some(&view.item.id), &detail, client);
            a.record = Some(RecordRef { n: r.n, sha256: h.clone() });
            svc.record(a).await;
        }
    }
    Ok(None)
}

/// Writes the next record; `None` when its position was taken by another writer. Returns the
/// record and the SHA-256 of its stored bytes.
async fn write(
    svc: &Service,
    view: &ItemView,
    officer: &Officer,
    req: &DecisionRequest,
    after: Status,
) -> anyhow::Result<Option<(ReviewRecord, String)>> {
    let n = view.records.iter().map(|r| r.n).max().unwrap_or(0) + 1;
    let prefix = &view.item.prefix;
    let prev = if n == 1 {
        GENESIS.to_string()
    } else {
        crate::util::sha256_hex(&svc.store.get(&record_key(prefix, n - 1)).await?)
    };
    let now = Utc::now();
    let record = ReviewRecord {
        schema: REVIEW_SCHEMA.into(),
        canonicalization: crate::util::jcs::Version::CURRENT.label().into(),
        evidence_id: view.item.id.clone(),
        site: view.item.site.clone(),
        camera: view.item.camera.clone(),
        n,
        decision: req.decision,
        checks: req.checks,
        reason: req.reason.trim().to_string(),
        rejection: req.rejection,
        corrects: req.corrects,
        officer: officer.clone(),
        time_utc: rfc3339(now),
        time_local: local(now, svc.pipeline.utc_offset_s),
        item: ItemFacts {
            manifest_sha256: view.manifest_sha256.clone(),
            chain_seq: view.manifest.chain.seq,
            verification_ok: view.verification.ok,
            admissible: view.manifest.admissibility.admissible,
            status: view.manifest.status.kind.name().into(),
        },
        status_after: after,
        prev_sha256: prev,
        service: format!("{} (vigil {})", svc.instance, env!("CARGO_PKG_VERSION")),
        key_id: svc.signer.key_id.clone(),
    };
    let (bytes, sig, hash) = seal(&record, &svc.signer)?;
    let key = record_key(prefix, n);
    let record_hash = hash.clone();
    match svc.store.put_new(&key, Bytes::from(bytes)).await {
        Ok(()) => {}
        Err(_) if svc.store.exists(&key).await.unwrap_or(false) => return Ok(None),
        Err(e) => return Err(e),
    }
    let sig_key = key.replace(".json", ".sig");
    svc.store.put_new(&sig_key, Bytes::from(sig.clone())).await?;
    let event = ReviewEvent {
        schema: REVIEW_EVENT_SCHEMA.into(),
        record: record.clone(),
        sha256: hash,
        signature: SignatureFile::parse(&sig)?,
        key,
        signature_key: sig_key,
    };
    // the id names the record's hash: a position reused after a deletion is a new message,
    // never a duplicate the stream drops
    let entry = OutboxEntry::shared(
        format!("review-{}-{n}-{}", view.item.id, &record_hash[..16]),
        Subject::review(&view.item.site, &view.item.camera),
        &event,
        now,
    );
    svc.publisher.submit(entry).await?;
    Ok(Some((record, record_hash)))
}
