//! `vigil schema KIND`: the JSON Schema (draft 2020-12) of what vigil publishes and stores,
//! generated from the Rust types that write it. The committed copies in `tests/schemas/` are
//! checked against this output, and every event and stored document the tests produce is
//! validated against them.

use std::process::ExitCode;

use clap::ValueEnum;

use crate::evidence::chain::{CHECKPOINT_EVENT_SCHEMA, Checkpoint, CheckpointEvent, IndexEntry};
use crate::evidence::review::{REVIEW_EVENT_SCHEMA, REVIEW_SCHEMA, ReviewEvent, ReviewRecord};
use crate::evidence::{EVENT_SCHEMA, EvidenceEvent, MANIFEST_SCHEMA, Manifest};

/// The documents with a published schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// `vigil.evidence.<site>.<camera>`: an evidence candidate.
    Event,
    /// `manifest.json`: the signed manifest of an item.
    Manifest,
    /// `chain/<site>/<camera>/checkpoints/<ms>-<seq>.json`: a signed chain checkpoint.
    Checkpoint,
    /// `vigil.chain.<site>.<camera>`: a checkpoint with its signature and locators.
    CheckpointEvent,
    /// `chain/<site>/<camera>/seq/<seq>.json`: a signed chain index entry.
    Index,
    /// `reviews/<n>.json`: a signed review decision.
    Review,
    /// `vigil.review.<site>.<camera>`: a decision with its signature and keys.
    ReviewEvent,
    /// `*.sig`: a signature file.
    Signature,
    /// `vigil-live.status.<site>.<worker>`: a worker's live status report (core NATS).
    Status,
    /// `review-audit/<site>/log/<seq>.json`: an entry of the review service's signed access log.
    Access,
    /// `vigil.access.<site>.log`: the access log's signed head.
    AccessHeadEvent,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Event,
        Kind::Manifest,
        Kind::Checkpoint,
        Kind::CheckpointEvent,
        Kind::Index,
        Kind::Review,
        Kind::ReviewEvent,
        Kind::Signature,
        Kind::Status,
        Kind::Access,
        Kind::AccessHeadEvent,
    ];

    /// The document's schema name (its `schema` member where it has one).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Event => EVENT_SCHEMA,
            Kind::Manifest => MANIFEST_SCHEMA,
            Kind::Checkpoint => "vigil.checkpoint.v1",
            Kind::CheckpointEvent => CHECKPOINT_EVENT_SCHEMA,
            Kind::Index => "vigil.chain-index.v1",
            Kind::Review => REVIEW_SCHEMA,
            Kind::ReviewEvent => REVIEW_EVENT_SCHEMA,
            Kind::Signature => "vigil.signature.v1",
            Kind::Status => crate::telemetry::status::STATUS_SCHEMA,
            Kind::Access => crate::audit_log::ACCESS_SCHEMA,
            Kind::AccessHeadEvent => crate::audit_log::HEAD_EVENT_SCHEMA,
        }
    }

    /// File name of the committed copy.
    pub fn file_name(self) -> String {
        format!("{}.schema.json", self.name())
    }
}

/// The schema of `kind`, with `$id` and `title` naming the document's version.
pub fn schema(kind: Kind) -> serde_json::Value {
    let s = match kind {
        Kind::Event => schemars::schema_for!(EvidenceEvent),
        Kind::Manifest => schemars::schema_for!(Manifest),
        Kind::Checkpoint => schemars::schema_for!(Checkpoint),
        Kind::CheckpointEvent => schemars::schema_for!(CheckpointEvent),
        Kind::Index => schemars::schema_for!(IndexEntry),
        Kind::Review => schemars::schema_for!(ReviewRecord),
        Kind::ReviewEvent => schemars::schema_for!(ReviewEvent),
        Kind::Signature => schemars::schema_for!(crate::signing::SignatureFile),
        Kind::Status => schemars::schema_for!(crate::telemetry::status::StatusReport),
        Kind::Access => schemars::schema_for!(crate::audit_log::AccessEntry),
        Kind::AccessHeadEvent => schemars::schema_for!(crate::audit_log::AccessHeadEvent),
    };
    let mut v = serde_json::to_value(s).expect("a schema serialises");
    if let Some(o) = v.as_object_mut() {
        o.insert("$id".into(), format!("urn:vigil:schema:{}", kind.name()).into());
        o.insert("title".into(), kind.name().into());
    }
    v
}

#[derive(clap::Args)]
pub struct Args {
    /// Which document.
    #[arg(value_enum)]
    pub kind: Kind,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&schema(a.kind))?);
    Ok(ExitCode::SUCCESS)
}
