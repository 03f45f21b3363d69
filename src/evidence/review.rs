//! Review records: the decisions of qualified officers on an evidence item (JS 25, 27; ZJ 18,
//! 20). Each decision is a signed record stored create-only beside the evidence,
//! `evidence/<site>/<camera>/<y>/<m>/<d>/<id>/reviews/<n:04>.json` + `.sig`; claiming `<n>` with a
//! create-only write is what serialises decisions made at the same time on different review
//! service instances. An item's review status is a function of its records ([`status`]), so any
//! instance, `vigil verify` and a case system compute the same one.
//!
//! The workflow (enforced by [`check_decision`], used by the service before it writes):
//! - **approved** only after approvals by two different officers with the reviewer role, each with
//!   all four checks (true, clear, complete, accurate: 真实、清晰、完整、准确) ticked;
//! - the same officer cannot approve twice; one rejection makes the item **rejected** (a reason is
//!   required);
//! - an inadmissible item, or one failing verification, cannot be approved;
//! - an advisory item, or a first minor violation, can get a **reminder** (the premises are asked
//!   to correct, no penalty: SD 3, NJ 4); an advisory item never becomes approved evidence;
//! - decisions are final: a correction is a new decision by the same officer that references the
//!   one it corrects (`corrects`), and takes its place.
//!
//! A rejection may say what kind of rejection it is ([`Rejection`]): a false alarm (the model was
//! wrong), unclear footage, a duplicate, or another reason. Only false alarms teach a site's
//! model that it was wrong (`vigil fit --from-reviews`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an officer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
    /// The premises are reminded to correct; no penalty (advisory items, first minor violations).
    Reminder,
}

/// What kind of rejection a rejection is (beside its free-text reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// 误报: no violation is shown; the model was wrong (a negative example for the site's head).
    FalseAlarm,
    /// 画面不清: the footage cannot show whether there was a violation.
    Unclear,
    /// 重复: the same violation is already an item.
    Duplicate,
    /// 其他: any other reason (the text says which).
    Other,
}

impl Rejection {
    pub const ALL: [Rejection; 4] = [Rejection::FalseAlarm, Rejection::Unclear, Rejection::Duplicate, Rejection::Other];

    pub fn name(self) -> &'static str {
        match self {
            Rejection::FalseAlarm => "false_alarm",
            Rejection::Unclear => "unclear",
            Rejection::Duplicate => "duplicate",
            Rejection::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Rejection> {
        Rejection::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// An item's review status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    OneApproval,
    Approved,
    Rejected,
    Reminder,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::OneApproval => "one_approval",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Reminder => "reminder",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [Status::Pending, Status::OneApproval, Status::Approved, Status::Rejected, Status::Reminder]
            .into_iter()
            .find(|x| x.name() == s)
    }

    /// No further decision changes it (only a correction of one of its decisions).
    pub fn is_final(self) -> bool {
        matches!(self, Status::Approved | Status::Rejected | Status::Reminder)
    }
}

/// The four checks of JS 27 / ZJ 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// 真实: the record is true (not forged or altered).
    #[serde(rename = "true")]
    pub true_: bool,
    /// 清晰: clear enough to show the violation.
    pub clear: bool,
    /// 完整: complete (nothing missing from the event).
    pub complete: bool,
    /// 准确: accurate (time, place, camera, rule).
    pub accurate: bool,
}

impl Checks {
    pub fn all(self) -> bool {
        self.true_ && self.clear && self.complete && self.accurate
    }
}

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reviews candidates and decides (two reviewers make an item approved evidence).
    Reviewer,
    /// Reads everything, the access log included; never decides.
    Auditor,
    /// Reads; sees accounts.
    Admin,
    /// The ops console: cameras, masks and zones, thresholds.
    Ops,
    /// No account: what the access log records for a login refused before one was known
    /// (written as the empty text).
    #[serde(rename = "")]
    #[value(skip)]
    Nobody,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::Ops => "ops",
            Role::Nobody => "",
        }
    }

    /// Reviewers, auditors and admins read evidence; ops and nobody do not.
    pub fn reads_evidence(self) -> bool {
        matches!(self, Role::Reviewer | Role::Auditor | Role::Admin)
    }
}

/// Who decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Officer {
    pub user: String,
    /// Law-enforcement certificate number.
    pub officer_id: String,
    pub role: Role,
}

/// What the officer saw of the item when deciding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemFacts {
    /// SHA-256 of the item's manifest (the decision is about exactly this manifest).
    pub manifest_sha256: String,
    pub chain_seq: u64,
    /// The item verified (hashes, signature, chain position) at the decision.
    pub verification_ok: bool,
    pub admissible: bool,
    /// "enforcement" or "advisory".
    pub status: String,
}

/// One decision: `reviews/<n>.json`, signed in `reviews/<n>.sig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRecord {
    pub schema: String,
    pub canonicalization: String,
    pub evidence_id: String,
    pub site: String,
    pub camera: String,
    /// Position among the item's decisions (1, 2, ...).
    pub n: u32,
    pub decision: Decision,
    pub checks: Checks,
    pub reason: String,
    /// A rejection's kind (absent: not said, or not a rejection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// The earlier decision (its `n`) this one corrects, by the same officer.
    pub corrects: Option<u32>,
    pub officer: Officer,
    pub time_utc: String,
    pub time_local: String,
    pub item: ItemFacts,
    /// The item's status once this decision is counted.
    pub status_after: Status,
    /// SHA-256 of the item's previous record (`n − 1`), 64 zeros for the first.
    pub prev_sha256: String,
    /// The review service instance that wrote it, and its version.
    pub service: String,
    pub key_id: String,
}

pub const REVIEW_SCHEMA: &str = "vigil.review.v1";

/// `vigil.review.<site>.<camera>`: a decision, for the case system to inform the premises
/// (ZJ 18(4)): the record, its signature, and where both are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewEvent {
    pub schema: String,
    pub record: ReviewRecord,
    pub sha256: String,
    pub signature: crate::signing::SignatureFile,
    pub key: String,
    pub signature_key: String,
}

pub const REVIEW_EVENT_SCHEMA: &str = "vigil.review-event.v1";

/// Object key of record `n` of the item stored under `prefix`.
pub fn record_key(prefix: &str, n: u32) -> String {
    format!("{prefix}/reviews/{n:04}.json")
}

impl Officer {
    /// The officer id as compared: two ids that differ only in case, width or invisible
    /// characters are one officer ([`crate::util::text::normalize_id`]).
    pub fn key(&self) -> String {
        crate::util::text::normalize_id(&self.officer_id)
    }

    pub fn same_as(&self, other: &Officer) -> bool {
        self.key() == other.key()
    }
}

/// The records that count: each officer's, without those a later record of theirs corrects.
pub fn effective(records: &[ReviewRecord]) -> Vec<&ReviewRecord> {
    records
        .iter()
        .filter(|r| {
            !records
                .iter()
                .any(|later| later.n > r.n && later.corrects == Some(r.n) && later.officer.same_as(&r.officer))
        })
        .collect()
}

/// What the officers' decisions say of the model that raised the item: `Some(true)` when they
/// confirmed the violation (approved, or a reminder: the premises are asked to correct it),
/// `Some(false)` when a rejection in effect calls it a false alarm, `None` otherwise (pending,
/// one approval, rejected for another reason).
pub fn model_label(records: &[ReviewRecord]) -> Option<bool> {
    match status(records) {
        Status::Approved | Status::Reminder => Some(true),
        Status::Rejected => effective(records)
            .iter()
            .any(|r| r.decision == Decision::Reject && r.rejection == Some(Rejection::FalseAlarm))
            .then_some(false),
        Status::Pending | Status::OneApproval => None,
    }
}

/// An item's review status from its records (in `n` order).
pub fn status(records: &[ReviewRecord]) -> Status {
    let eff = effective(records);
    if eff.iter().any(|r| r.decision == Decision::Reject) {
        return Status::Rejected;
    }
    if eff.iter().any(|r| r.decision == Decision::Reminder) {
        return Status::Reminder;
    }
    let mut approvers: Vec<String> = eff
        .iter()
        .filter(|r| r.decision == Decision::Approve && r.officer.role == Role::Reviewer)
        .map(|r| r.officer.key())
        .filter(|k| !k.is_empty())
        .collect();
    approvers.sort_unstable();
    approvers.dedup();
    match approvers.len() {
        0 => Status::Pending,
        1 => Status::OneApproval,
        _ => Status::Approved,
    }
}

/// Why a decision is refused, with the HTTP status the API answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 409: the workflow forbids it now.
    #[error("{0}")]
    Conflict(String),
    /// 422: the request is incomplete.
    #[error("{0}")]
    Invalid(String),
    /// 403: this user may not decide.
    #[error("{0}")]
    Forbidden(String),
}

/// What a decision is about, as the service sees the item now.
pub struct Proposal<'a> {
    pub decision: Decision,
    pub checks: Checks,
    pub reason: &'a str,
    pub rejection: Option<Rejection>,
    pub corrects: Option<u32>,
    pub officer: &'a Officer,
    pub verification_ok: bool,
    pub admissible: bool,
    pub advisory: bool,
    /// A minor violation with no earlier one of the same rule in 30 days.
    pub first_minor: bool,
}

/// Checks a decision against the workflow and the item's records so far; the status it leads
/// to when allowed.
pub fn check_decision(records: &[ReviewRecord], p: &Proposal) -> Result<Status, Refusal> {
    if p.officer.role != Role::Reviewer {
        return Err(Refusal::Forbidden(format!("role {} cannot decide; only reviewers do", p.officer.role.name())));
    }
    if p.officer.officer_id.trim().is_empty() {
        return Err(Refusal::Forbidden("no law-enforcement certificate number on record for this account".into()));
    }
    if p.reason.chars().count() > 2000 {
        return Err(Refusal::Invalid("the reason is longer than 2000 characters".into()));
    }
    if p.rejection.is_some() && p.decision != Decision::Reject {
        return Err(Refusal::Invalid("a kind of rejection is given only with a rejection".into()));
    }
    let current = status(records);
    match p.corrects {
        Some(n) => {
            let Some(old) = records.iter().find(|r| r.n == n) else {
                return Err(Refusal::Invalid(format!("there is no decision {n} to correct")));
            };
            if !old.officer.same_as(p.officer) {
                return Err(Refusal::Forbidden("only the officer who made a decision can correct it".into()));
            }
            if records.iter().any(|r| r.corrects == Some(n)) {
                return Err(Refusal::Conflict(format!("decision {n} was corrected already")));
            }
        }
        None => {
            if current.is_final() {
                return Err(Refusal::Conflict(format!(
                    "the item is {} and decisions are final (a correction references the decision it corrects)",
                    current.name()
                )));
            }
            if effective(records).iter().any(|r| r.officer.same_as(p.officer) && r.decision == p.decision) {
                return Err(Refusal::Conflict(format!(
                    "officer {} has already decided {:?} on this item; a second approval must come from another officer",
                    p.officer.officer_id, p.decision
                )));
            }
        }
    }
    match p.decision {
        Decision::Approve => {
            if !p.verification_ok {
                return Err(Refusal::Conflict("the item fails verification: it cannot be approved".into()));
            }
            if !p.admissible {
                return Err(Refusal::Conflict("the item is not admissible (JS 28): it cannot be approved".into()));
            }
            if p.advisory {
                return Err(Refusal::Conflict(
                    "the item is advisory (the camera is not yet on record or announced): a reminder, never evidence"
                        .into(),
                ));
            }
            if !p.checks.all() {
                return Err(Refusal::Invalid(
                    "an approval needs all four checks: true, clear, complete, accurate (真实、清晰、完整、准确)"
                        .into(),
                ));
            }
        }
        Decision::Reject => {
            if p.reason.trim().is_empty() {
                return Err(Refusal::Invalid("a rejection needs a reason".into()));
            }
        }
        Decision::Reminder => {
            if !(p.advisory || p.first_minor) {
                return Err(Refusal::Conflict(
                    "a reminder is for advisory items and first minor violations (SD 3, NJ 4)".into(),
                ));
            }
        }
    }
    Ok(status(&with(records, p)))
}

/// The records as they would be with the proposal added (for the status it leads to).
fn with(records: &[ReviewRecord], p: &Proposal) -> Vec<ReviewRecord> {
    let mut v = records.to_vec();
    let n = records.iter().map(|r| r.n).max().unwrap_or(0) + 1;
    v.push(ReviewRecord {
        schema: REVIEW_SCHEMA.into(),
        canonicalization: String::new(),
        evidence_id: String::new(),
        site: String::new(),
        camera: String::new(),
        n,
        decision: p.decision,
        checks: p.checks,
        reason: p.reason.into(),
        rejection: p.rejection,
        corrects: p.corrects,
        officer: p.officer.clone(),
        time_utc: String::new(),
        time_local: String::new(),
        item: ItemFacts {
            manifest_sha256: String::new(),
            chain_seq: 0,
            verification_ok: true,
            admissible: true,
            status: String::new(),
        },
        status_after: Status::Pending,
        prev_sha256: String::new(),
        service: String::new(),
        key_id: String::new(),
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn officer(id: &str) -> Officer {
        Officer { user: id.to_lowercase(), officer_id: id.into(), role: Role::Reviewer }
    }

    fn all() -> Checks {
        Checks { true_: true, clear: true, complete: true, accurate: true }
    }

    fn prop<'a>(d: Decision, o: &'a Officer) -> Proposal<'a> {
        Proposal {
            decision: d,
            checks: all(),
            reason: "",
            rejection: None,
            corrects: None,
            officer: o,
            verification_ok: true,
            admissible: true,
            advisory: false,
            first_minor: false,
        }
    }

    fn add(records: &mut Vec<ReviewRecord>, p: &Proposal) {
        let s = check_decision(records, p).unwrap();
        let mut v = with(records, p);
        let mut r = v.pop().unwrap();
        r.status_after = s;
        records.push(r);
    }

    #[test]
    fn two_different_officers_approve_and_the_same_one_cannot_twice() {
        let (a, b) = (officer("A-001"), officer("B-002"));
        let mut rs = Vec::new();
        add(&mut rs, &prop(Decision::Approve, &a));
        assert_eq!(status(&rs), Status::OneApproval);
        assert!(matches!(check_decision(&rs, &prop(Decision::Approve, &a)), Err(Refusal::Conflict(_))));
        add(&mut rs, &prop(Decision::Approve, &b));
        assert_eq!(status(&rs), Status::Approved);
        let c = officer("C-003");
        assert!(matches!(check_decision(&rs, &prop(Decision::Reject, &c)), Err(Refusal::Conflict(_))), "final");
    }

    #[test]
    fn ids_that_differ_in_case_width_or_invisible_characters_are_one_officer() {
        let a = officer("JS-2026-0001");
        let mut rs = Vec::new();
        add(&mut rs, &prop(Decision::Approve, &a));
        for twin in ["js-2026-0001", "JS-2026-0001\u{200b}", "ＪＳ－２０２６－０００１"] {
            let t = officer(twin);
            assert!(matches!(check_decision(&rs, &prop(Decision::Approve, &t)), Err(Refusal::Conflict(_))), "{twin:?}");
            // even written as a record (a store edited by hand), it counts once
            let mut v = with(&rs, &prop(Decision::Approve, &t));
            v.last_mut().unwrap().status_after = Status::Approved;
            assert_eq!(status(&v), Status::OneApproval, "{twin:?}");
        }
    }

    #[test]
    fn one_rejection_rejects_and_needs_a_reason() {
        let a = officer("A-001");
        let mut rs = Vec::new();
        assert!(matches!(check_decision(&rs, &prop(Decision::Reject, &a)), Err(Refusal::Invalid(_))));
        let mut p = prop(Decision::Reject, &a);
        p.reason = "blurred";
        add(&mut rs, &p);
        assert_eq!(status(&rs), Status::Rejected);
    }

    #[test]
    fn what_cannot_be_approved_and_who_cannot_decide() {
        let a = officer("A-001");
        for (f, want) in [
            (|p: &mut Proposal| p.verification_ok = false) as fn(&mut Proposal),
            |p| p.admissible = false,
            |p| p.advisory = true,
            |p| p.checks.clear = false,
        ]
        .into_iter()
        .zip([0, 1, 2, 3])
        {
            let mut p = prop(Decision::Approve, &a);
            f(&mut p);
            assert!(check_decision(&[], &p).is_err(), "case {want}");
        }
        let auditor = Officer { role: Role::Auditor, ..officer("X-9") };
        assert!(matches!(check_decision(&[], &prop(Decision::Approve, &auditor)), Err(Refusal::Forbidden(_))));
        // reminder: advisory or first minor only
        assert!(check_decision(&[], &prop(Decision::Reminder, &a)).is_err());
        let mut p = prop(Decision::Reminder, &a);
        p.advisory = true;
        assert_eq!(check_decision(&[], &p).unwrap(), Status::Reminder);
    }

    #[test]
    fn a_correction_replaces_the_officers_own_decision() {
        let (a, b) = (officer("A-001"), officer("B-002"));
        let mut rs = Vec::new();
        let mut r = prop(Decision::Reject, &a);
        r.reason = "looked blurred";
        add(&mut rs, &r);
        assert_eq!(status(&rs), Status::Rejected);
        let mut c = prop(Decision::Approve, &b);
        c.corrects = Some(1);
        assert!(matches!(check_decision(&rs, &c), Err(Refusal::Forbidden(_))), "only A corrects A");
        let mut c = prop(Decision::Approve, &a);
        c.corrects = Some(1);
        add(&mut rs, &c);
        assert_eq!(status(&rs), Status::OneApproval, "A's rejection is replaced by A's approval");
        assert!(matches!(check_decision(&rs, &c), Err(Refusal::Conflict(_))), "corrected once");
        add(&mut rs, &prop(Decision::Approve, &b));
        assert_eq!(status(&rs), Status::Approved);
    }
}
