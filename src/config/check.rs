//! How a section checks itself: [`Section::check`] reports each problem under its full key into
//! [`Checks`], which also resolves paths against the pipeline file's folder. `Pipeline::validate`
//! is a loop over the sections, then the checks that span two of them, then the cameras.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sections::*;
use super::{ConfigError, check_nats_urls};
use crate::rules::valid_id;
use crate::util::time::parse_utc_offset;

/// Problems and warnings gathered while checking one pipeline file.
pub struct Checks {
    file: PathBuf,
    base: PathBuf,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

impl Checks {
    pub fn new(file: &Path) -> Checks {
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Checks { file: file.to_path_buf(), base, errors: Vec::new(), warnings: Vec::new() }
    }

    /// A problem at `key` (the full key, e.g. `cameras[1].source`).
    pub fn error(&mut self, key: &str, problem: impl Into<String>) {
        self.errors.push(ConfigError { file: self.file.clone(), key: key.into(), problem: problem.into() });
    }

    /// A setting allowed but worth a second look.
    pub fn warn(&mut self, text: impl std::fmt::Display) {
        self.warnings.push(format!("{}: {text}", self.file.display()));
    }

    /// `p` as written in the file, resolved against the file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }

    /// A listen address: refused when it is not one; a warning when it reaches beyond this machine.
    pub fn listen(&mut self, key: &str, v: &str, example: &str) {
        match v.parse::<std::net::SocketAddr>() {
            Err(_) => self.error(key, format!("{v:?} is not an address like {example}")),
            Ok(a) if !a.ip().is_loopback() => self.warn(format_args!(
                "{key} = {v:?} listens beyond this machine (not a loopback address): make sure a firewall or a \
                 TLS reverse proxy is in front of it"
            )),
            Ok(_) => {}
        }
    }

    /// `key` must be an id (1-64 characters of A-Z a-z 0-9 - _).
    pub fn id(&mut self, key: &str, what: &str, v: &str) {
        if v.is_empty() {
            self.error(key, format!("required: {what} (A-Z a-z 0-9 - _)"));
        } else if !valid_id(v) {
            self.error(key, format!("{v:?} must be 1-64 characters of A-Z a-z 0-9 - _"));
        }
    }
}

/// A section of the pipeline file that checks itself (beyond the ranges its schema states, which
/// `Pipeline::validate` checks for every section at once).
pub trait Section {
    fn check(&self, c: &mut Checks);
}

impl Section for SiteConfig {
    fn check(&self, c: &mut Checks) {
        c.id("site.id", "the site's id", &self.id);
        for (key, problem) in self.premises.problems() {
            c.error(&format!("site.premises.{key}"), problem);
        }
        if parse_utc_offset(&self.utc_offset).is_none() {
            c.error("site.utc_offset", format!("{:?} is not an offset like \"+08:00\"", self.utc_offset));
        }
    }
}

impl SiteConfig {
    /// The site's offset from UTC, seconds (0 when unchecked and invalid).
    pub fn utc_offset_s(&self) -> i32 {
        parse_utc_offset(&self.utc_offset).unwrap_or(0)
    }
}

impl Section for WorkerConfig {
    fn check(&self, c: &mut Checks) {
        if let Some(id) = &self.id
            && !valid_id(id)
        {
            c.error("worker.id", format!("{id:?}: use 1-64 characters of A-Z a-z 0-9 - _"));
        }
        if let Some(h) = &self.http {
            c.listen("worker.http", h, "127.0.0.1:9464");
        }
    }
}

impl Section for AnalysisConfig {
    fn check(&self, c: &mut Checks) {
        if !self.width.is_multiple_of(2) {
            c.error("analysis.width", format!("{} must be an even number in [64, 3840]", self.width));
        }
    }
}

impl Section for EvidenceConfig {
    fn check(&self, c: &mut Checks) {
        if let Some(rcp) = &self.seal_recipient
            && rcp.parse::<age::x25519::Recipient>().is_err()
        {
            c.error("evidence.seal_recipient", format!("{rcp:?} is not an age X25519 recipient (age1...)"));
        }
    }
}

impl Section for SigningConfig {
    fn check(&self, c: &mut Checks) {
        if self.generate_if_missing && self.key.file_name().is_none_or(|n| n != "signing.key") {
            c.error(
                "signing.key",
                format!(
                    "{}: with generate_if_missing the file must be named signing.key (what `vigil keys init` writes)",
                    self.key.display()
                ),
            );
        }
        if !self.suites.contains(&crate::signing::Suite::Ed25519) {
            c.error(
                "signing.suites",
                "must name ed25519: chains, checkpoints and earlier keys rest on it (add sm2 beside it)",
            );
        }
    }
}

impl Section for StoreConfig {
    fn check(&self, c: &mut Checks) {
        if self.object_lock && !self.url.starts_with("s3://") {
            c.error("store.object_lock", "Object Lock needs an s3:// store");
        }
        if self.url.trim().is_empty() {
            c.error("store.url", "empty: give a directory or an s3:// URL");
        } else if let Some((scheme, _)) = self.url.split_once("://")
            && !["s3", "file", "memory"].contains(&scheme)
        {
            let shown = crate::util::secret::redact(&self.url);
            c.error("store.url", format!("{shown:?}: scheme {scheme:?} is not one of s3, file, memory"));
        }
    }
}

impl StoreConfig {
    /// The store's URL, a local directory resolved against the pipeline file's folder.
    pub fn resolved_url(&self, c: &Checks) -> String {
        if self.url.contains("://") {
            self.url.clone()
        } else {
            c.resolve(Path::new(&self.url)).to_string_lossy().into_owned()
        }
    }
}

impl Section for PublishConfig {
    fn check(&self, c: &mut Checks) {
        if let Some(u) = &self.nats_url
            && let Err(problem) = check_nats_urls(u)
        {
            c.error("publish.nats_url", problem);
        }
        if self.auth != Default::default() {
            let nats = self.endpoint(c);
            for (key, problem) in
                self.auth.resolved(|p| c.resolve(p)).check(nats.as_ref().is_some_and(|n| n.url_has_credentials()))
            {
                let key = if key.is_empty() { "publish.auth".to_string() } else { format!("publish.auth.{key}") };
                c.error(&key, problem);
            }
            if self.nats_url.is_none() {
                c.warn("[publish.auth] is set but publish.nats_url is not");
            }
        }
    }
}

impl PublishConfig {
    /// NATS (`nats_url` with `[publish.auth]`, its files resolved), when events go there.
    pub fn endpoint(&self, c: &Checks) -> Option<crate::util::nats::Endpoint> {
        let auth = self.auth.resolved(|p| c.resolve(p));
        self.nats_url.as_deref().map(|u| crate::util::nats::Endpoint::new(u, auth))
    }

    pub fn duplicate_window(&self) -> Duration {
        Duration::from_secs_f64(self.duplicate_window_s)
    }
}

impl Section for ReviewConfig {
    fn check(&self, c: &mut Checks) {
        c.listen("review.listen", &self.listen, "127.0.0.1:8080");
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            c.error("review.tls_cert", "TLS needs both tls_cert and tls_key");
        }
        for (i, t) in self.trusted_proxies.iter().enumerate() {
            if let Err(e) = t.parse::<crate::util::http::IpNet>() {
                c.error(&format!("review.trusted_proxies[{i}]"), e);
            }
        }
    }
}

impl ClipConfig {
    pub fn pre_roll(&self) -> Duration {
        Duration::from_secs_f64(self.pre_roll_s)
    }

    pub fn post_roll(&self) -> Duration {
        Duration::from_secs_f64(self.post_roll_s)
    }
}

impl ClusterConfig {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.lease_ttl_s)
    }
}

impl SigningConfig {
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_secs_f64(self.checkpoint_interval_s)
    }
}

impl WorkerConfig {
    pub fn status_interval(&self) -> Duration {
        Duration::from_secs_f64(self.status_interval_s)
    }
}
