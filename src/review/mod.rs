//! The evidence review service (`vigil review serve`): two qualified officers approve a candidate
//! before it is evidence (JS 25, 27; ZJ 18, 20). A web page (zh-CN by default, English by a
//! switch) and a JSON API with the same rules and authentication, over the same store and NATS
//! the workers use. All state lives in the store — review records beside the evidence, sessions,
//! the access log — so any number of instances serve at once; an instance keeps only its own
//! outbox of decision events and its login-failure counters.
//!
//! [`accounts`] (users, argon2id) · [`session`] (store-backed sessions) · [`items`] (an item as a
//! reviewer sees it, verified now; the queue) · [`decide`] (the workflow, signed records,
//! exactly-once decision events) · [`package`] (case export and its offline check). Its pages and
//! API are the review wing of the web application (`src/app/review/`).

pub mod accounts;
pub mod decide;
pub mod items;
pub mod package;
pub mod session;

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::audit_log::{Access, Action, AuditLog, Outcome};
use crate::config::Pipeline;
use crate::publish::Publisher;
use crate::signing::{PublicKey, Signer};
use crate::store::Store;

pub use accounts::Role;

/// What the review workflow needs (items, decisions, exports, the access log); shared by every
/// request of an instance.
pub struct Service {
    pub pipeline: Pipeline,
    pub store: Store,
    /// The workers' key: what evidence is verified against.
    pub worker_key: PublicKey,
    /// This service's key: decisions, access log, exports.
    pub signer: Arc<Signer>,
    pub audit: AuditLog,
    pub sessions: session::Sessions,
    pub publisher: Arc<Publisher>,
    /// `review-<host>-<port>` unless given: names this instance in records and its outbox.
    pub instance: String,
}

impl Service {
    pub async fn open(p: Pipeline, instance: String) -> Result<Service> {
        let raw = &p.settings;
        let store = Store::open_with(&p.store_url, &raw.store.options, false)?;
        let worker_pub = p.key_path.with_extension("pub");
        let worker_key = if worker_pub.exists() {
            PublicKey::load(&worker_pub)?
        } else {
            Signer::load(&p.key_path).context("the workers' public key (signing.pub beside signing.key)")?.public_key()
        };
        let key_path = p.review_key();
        let signer = Arc::new(
            if !key_path.exists() && raw.review.generate_key_if_missing {
                let dir = key_path.parent().context("review key path has no folder")?;
                let stem = key_path.file_stem().and_then(|s| s.to_str()).unwrap_or("review");
                let s = Signer::init_named(dir, stem)?;
                tracing::warn!(key = %key_path.display(), key_id = %s.key_id, "generated the review service's key (review.generate_key_if_missing)");
                s
            } else {
                Signer::load(&key_path).context("review.key (make it with `vigil keys init --name review`)")?
            }
            .with_suites(&key_path, &raw.signing.suites, raw.review.generate_key_if_missing)?,
        );
        let site = raw.site.id.clone();
        let sessions = session::Sessions::new(store.clone(), raw.review.session_hours);
        let data = p.data_dir.join(&instance);
        let stream = p.stream().to_string();
        let dup = raw.publish.duplicate_window();
        let publisher = Arc::new(
            Publisher::start_replicated(&data, p.nats.as_ref(), &stream, dup, p.settings.publish.replicas).await?,
        );
        let audit = AuditLog::new(store.clone(), signer.clone(), &site, &instance).with_publisher(publisher.clone());
        // the log's head as published: a store log that ends before it was truncated; new entries
        // go after the published head, never into the hole
        if let Some(n) = &p.nats {
            match crate::audit_log::stream_head(n, &stream, &site, &signer.public_key()).await {
                Ok(Some(head)) => {
                    let last = store.last_position(|s| crate::audit_log::entry_key(&site, s), 0).await?;
                    if head.seq > last {
                        tracing::error!(
                            published_seq = head.seq,
                            stored_seq = last,
                            "access log truncated: the store's log ends before the head published on the stream; new entries continue after the published head"
                        );
                    }
                    audit.resume_after(&head).await?;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "access log: the published head cannot be read now; not compared"
                ),
            }
        }
        if let Err(e) = accounts::Accounts::load(&p.review_users()) {
            anyhow::bail!("{e:#}");
        }
        accounts::warm();
        Ok(Service { pipeline: p, store, worker_key, signer, audit, sessions, publisher, instance })
    }

    pub fn site(&self) -> &str {
        &self.pipeline.settings.site.id
    }

    pub fn accounts(&self) -> Result<accounts::Accounts> {
        accounts::Accounts::load(&self.pipeline.review_users())
    }

    /// Records an access; a failure to record is logged loudly (and the request goes on).
    pub async fn record(&self, a: Access) {
        let (action, user) = (a.action, a.user.clone());
        if let Err(e) = self.audit.append(a).await {
            tracing::error!(?action, user, error = format!("{e:#}"), "access log: entry NOT written");
        }
    }
}

/// An access by an authenticated user.
pub fn access(
    user: &accounts::User,
    action: Action,
    outcome: Outcome,
    id: Option<&str>,
    detail: &str,
    client: &str,
) -> Access {
    Access {
        user: user.name.clone(),
        officer_id: user.officer_id.clone(),
        role: user.role,
        action,
        outcome,
        evidence_id: id.map(str::to_string),
        detail: detail.into(),
        client: client.into(),
        record: None,
        count: None,
    }
}
