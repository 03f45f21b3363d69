//! The evidence review service (`vigil review serve`): two qualified officers approve a candidate
//! before it is evidence (JS 25, 27; ZJ 18, 20). A web page (zh-CN by default, English by a
//! switch) and a JSON API with the same rules and authentication, over the same store and NATS
//! the workers use. All state lives in the store — review records beside the evidence, sessions,
//! the access log — so any number of instances serve at once; an instance keeps only its own
//! outbox of decision events and its login-failure counters.
//!
//! [`accounts`] (users, argon2id) · [`session`] (store-backed sessions) · [`items`] (an item as a
//! reviewer sees it, verified now; the queue) · [`decide`] (the workflow, signed records,
//! exactly-once decision events) · [`package`] (case export and its offline check) · [`web`]
//! (pages and API).

pub mod accounts;
pub mod decide;
pub mod items;
pub mod live;
pub mod package;
pub mod session;
pub mod web;

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::audit_log::{Access, Action, AuditLog, Outcome};
use crate::config::Pipeline;
use crate::publish::Publisher;
use crate::signing::{PublicKey, Signer};
use crate::store::Store;

pub use accounts::Role;

/// Everything a request handler needs; shared by every request of an instance.
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
    pub limiter: session::LoginLimiter,
    /// `review-<host>-<port>` unless given: names this instance in records and its outbox.
    pub instance: String,
    pub tls: bool,
    /// The workers' live status (the ops console); fed from NATS by `serve`.
    pub live: Arc<live::Live>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`[review] trusted_proxies`).
    pub trusted_proxies: Vec<crate::util::http::IpNet>,
    /// One message per session for the next page it shows (the ops rules form's outcome): a
    /// message comes from the server, never from the URL.
    pub flash: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// When each (session, item, file) last had its byte ranges logged: a player's range
    /// requests are one access-log entry per [`web::files::RANGE_SESSION`].
    pub reads: std::sync::Mutex<std::collections::HashMap<(String, String, String), std::time::Instant>>,
}

/// How to start an instance.
pub struct ServeOptions {
    pub listen: Option<String>,
    pub instance: Option<String>,
}

impl Service {
    pub async fn open(p: Pipeline, instance: String, tls: bool) -> Result<Service> {
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
        let limiter = session::LoginLimiter::new(raw.review.max_login_failures);
        let trusted_proxies = raw
            .review
            .trusted_proxies
            .iter()
            .map(|t| t.parse().map_err(|e: String| anyhow::anyhow!("review.trusted_proxies: {e}")))
            .collect::<Result<Vec<_>>>()?;
        if let Err(e) = accounts::Accounts::load(&p.review_users()) {
            anyhow::bail!("{e:#}");
        }
        accounts::warm();
        Ok(Service {
            pipeline: p,
            store,
            worker_key,
            signer,
            audit,
            sessions,
            publisher,
            limiter,
            instance,
            tls,
            live: Default::default(),
            trusted_proxies,
            flash: Default::default(),
            reads: Default::default(),
        })
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
        role: user.role.name().into(),
        action,
        outcome,
        evidence_id: id.map(str::to_string),
        detail: detail.into(),
        client: client.into(),
        record: None,
        count: None,
    }
}

/// Runs the service until the process ends.
pub async fn serve(p: Pipeline, o: ServeOptions) -> Result<()> {
    crate::util::secret::install_crypto_provider();
    let raw = &p.settings.review;
    let listen: std::net::SocketAddr =
        o.listen.as_deref().unwrap_or(&raw.listen).parse().context("review listen address")?;
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, tls = raw.tls_cert.is_some(), "review service listens beyond this machine (not a loopback address): serve it over TLS or behind a TLS reverse proxy");
    }
    let tls = match (&raw.tls_cert, &raw.tls_key) {
        (Some(c), Some(k)) => {
            let base = p.file.parent().unwrap_or(std::path::Path::new("."));
            Some(crate::util::http::tls_config(&base.join(c), &base.join(k))?)
        }
        _ => None,
    };
    if tls.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(address = %listen, "the review service listens beyond this machine without TLS: put it behind a TLS reverse proxy, or set review.tls_cert / tls_key");
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "host".into());
    let instance = o.instance.unwrap_or_else(|| format!("review-{host}-{}", bound.port()));
    if !crate::rules::valid_id(&instance) {
        anyhow::bail!("instance id {instance:?}: 1-64 characters of A-Z a-z 0-9 - _");
    }
    let mut svc = Service::open(p, instance.clone(), tls.is_some()).await?;
    if let Some(n) = &svc.pipeline.nats {
        svc.live = live::Live::follow(n.clone(), svc.site().to_string());
    }
    let svc = Arc::new(svc);
    let app = web::router(svc.clone());
    crate::util::http::serve_with(listener, app, tls.clone(), svc.trusted_proxies.clone())?;
    tracing::info!(address = %bound, instance = %instance, tls = tls.is_some(), "review service listening");
    std::future::pending::<()>().await;
    Ok(())
}
