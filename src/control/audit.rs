//! The audit trail of rule and mask changes: every change the worker applies or refuses, from
//! the pipeline file, a mask file or the NATS KV, is one [`AuditRecord`] in
//! `<data_dir>/audit/rules.jsonl` and on `vigil.audit.<site>.<camera>` ([`AuditWriter`]), with an
//! event ([`Event::RuleChange`]) that logs and counts it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::Value;

use super::overrides::{AuditRecord, MASK_RULE};
use crate::publish::{OutboxEntry, Publisher};
use crate::telemetry::Event;

/// Where audit records go: `<data_dir>/audit/rules.jsonl` (appended, synced) and
/// `vigil.audit.<site>.<camera>` through the durable outbox.
pub struct AuditWriter {
    site: String,
    path: PathBuf,
    publisher: Arc<Publisher>,
}

impl AuditWriter {
    pub fn new(data_dir: &Path, site: &str, publisher: Arc<Publisher>) -> Result<AuditWriter> {
        let dir = data_dir.join("audit");
        std::fs::create_dir_all(&dir).with_context(|| format!("audit dir {}", dir.display()))?;
        Ok(AuditWriter { site: site.into(), path: dir.join("rules.jsonl"), publisher })
    }

    /// Writes the audit record of a change (applied or rejected) and emits its event.
    pub async fn record(&self, about: About<'_>, from: Origin<'_>, change: Change) {
        let (cam, rule) = about.names();
        let (source, by, reason) = (from.source, from.by.unwrap_or("?"), from.reason);
        let (outcome, old, new) = match change {
            Change::Applied { old, new } => (Ok(()), old, new),
            Change::Rejected(why) => (Err(why), None, None),
        };
        let (old, old_rev) = old.unzip();
        let (new, new_rev) = new.unzip();
        let rec = AuditRecord {
            time_utc: crate::util::rfc3339(chrono::Utc::now()),
            site: self.site.clone(),
            camera: cam.into(),
            rule: rule.into(),
            source: source.into(),
            by: by.into(),
            reason: reason.into(),
            outcome: if outcome.is_ok() { "applied" } else { "rejected" }.into(),
            problem: outcome.as_ref().err().cloned(),
            old,
            new,
            old_revision: old_rev,
            new_revision: new_rev.clone(),
        };
        let detail = match &outcome {
            Err(p) => p.clone(),
            Ok(()) => format!(
                "{} -> {}",
                rec.old.as_ref().map(Value::to_string).unwrap_or("(none)".into()),
                rec.new.as_ref().map(Value::to_string).unwrap_or("(none)".into())
            ),
        };
        Event::RuleChange {
            camera: cam,
            rule,
            source,
            by,
            applied: outcome.is_ok(),
            revision: new_rev.as_deref().unwrap_or(""),
            detail: &detail,
        }
        .emit();
        self.write(&rec).await;
    }

    /// Writes one record to both places; a failure is logged (the change itself stands).
    pub async fn write(&self, rec: &AuditRecord) {
        let line = serde_json::to_string(rec).unwrap_or_default();
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()).and_then(|_| f.sync_data()));
        if let Err(e) = written {
            tracing::error!(file = %self.path.display(), error = %e, "audit record not written");
        }
        let cam = if rec.camera == "*" { "_pipeline" } else { rec.camera.as_str() };
        let entry =
            OutboxEntry::new(format!("audit-{}", ulid::Ulid::new()), crate::util::Subject::audit(&rec.site, cam), rec);
        if let Err(e) = self.publisher.submit(entry).await {
            tracing::error!(error = format!("{e:#}"), "audit record not queued for publishing");
        }
    }
}

/// What an audit record of a change is about.
#[derive(Debug, Clone, Copy)]
pub enum About<'a> {
    /// One rule of a camera.
    Rule(&'a str, &'a str),
    /// A camera's rules as a whole (a change to several, refused before one is singled out).
    Rules(&'a str),
    /// A camera's privacy mask.
    Mask(&'a str),
    /// A file or key that names no camera of this pipeline (rules, or the mask bucket).
    Unnamed { mask: bool },
}

impl<'a> About<'a> {
    /// The record's `camera` and `rule` (`*` where it names none).
    fn names(self) -> (&'a str, &'a str) {
        match self {
            About::Rule(c, r) => (c, r),
            About::Rules(c) => (c, "*"),
            About::Mask(c) => (c, MASK_RULE),
            About::Unnamed { mask: true } => ("*", MASK_RULE),
            About::Unnamed { mask: false } => ("*", "*"),
        }
    }
}

/// Where a change came from and who made it (`by` unknown when the entry could not be read).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    source: &'a str,
    by: Option<&'a str>,
    reason: &'a str,
}

impl<'a> Origin<'a> {
    pub fn by(source: &'a str, by: &'a str, reason: &'a str) -> Origin<'a> {
        Origin { source, by: Some(by), reason }
    }

    /// An entry whose author is not known (recorded as `?`).
    pub fn unsigned(source: &'a str) -> Origin<'a> {
        Origin { source, by: None, reason: "" }
    }
}

/// A change put in force (a rule's or mask's facts before and after) or refused, and why.
pub enum Change {
    Applied { old: Option<(Value, String)>, new: Option<(Value, String)> },
    Rejected(String),
}

/// A file's modification time and length: what tells a changed file.
pub(super) type FileSig = (std::time::SystemTime, u64);

pub(super) fn file_sig(p: &Path) -> Option<FileSig> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}
