//! Store stage: artifacts go to object storage through `object_store`: a local directory by default,
//! any object_store URL (`s3://bucket/prefix`, `file:///abs`, `memory:///`) from config. Writes are
//! create-only (`PutMode::Create`): evidence is never overwritten in place.
//!
//! Key layout (DESIGN.md §5): `evidence/<site>/<camera>/<yyyy>/<mm>/<dd>/<evidence-id>/<file>`.
//!
//! With `object_lock = true` (S3 only) every evidence object is written with S3 Object Lock in
//! COMPLIANCE mode until its retention date and with a SHA-256 checksum. object_store has no
//! Object Lock API, so the lock headers are sent as signed default headers of a client made for
//! that retain-until date (one client per day, cached). The bucket must have Object Lock enabled;
//! a bucket-default retention is the recommended backstop in production.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use object_store::path::Path as ObjPath;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    pub url: String,
    /// S3 Object Lock: clients keyed by retain-until day.
    lock: Option<Arc<LockClients>>,
    /// A local directory store's root: every key is checked under it without following a link.
    local: Option<std::path::PathBuf>,
    /// The S3 endpoint from the options or the environment (for the events' locators).
    s3_endpoint: Option<String>,
}

struct LockClients {
    url: String,
    options: BTreeMap<String, String>,
    by_day: std::sync::Mutex<BTreeMap<String, Arc<dyn ObjectStore>>>,
}

fn s3_builder(url: &str, options: &BTreeMap<String, String>) -> Result<object_store::aws::AmazonS3Builder> {
    // Few, short retries: an unreachable store must not stall the evidence stage (the spool and its
    // uploader retry for as long as it takes).
    let retry = object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: std::time::Duration::from_secs(5),
        ..Default::default()
    };
    let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url).with_retry(retry);
    for (k, v) in options {
        let key = k.parse().map_err(|e| anyhow!("store option {k:?}: {e}"))?;
        b = b.with_config(key, v);
    }
    Ok(b)
}

impl LockClients {
    fn client(&self, until: DateTime<Utc>) -> Result<Arc<dyn ObjectStore>> {
        // whole days, rounded up: an object is never locked for less than its class requires
        let day = (until + chrono::Duration::days(1)).format("%Y-%m-%dT00:00:00Z").to_string();
        let mut m = self.by_day.lock().expect("lock clients");
        if let Some(c) = m.get(&day) {
            return Ok(c.clone());
        }
        let mut h = http::HeaderMap::new();
        h.insert("x-amz-object-lock-mode", http::HeaderValue::from_static("COMPLIANCE"));
        h.insert("x-amz-object-lock-retain-until-date", http::HeaderValue::from_str(&day)?);
        h.insert("x-amz-sdk-checksum-algorithm", http::HeaderValue::from_static("SHA256"));
        let allow_http = self.options.get("aws_allow_http").is_some_and(|v| v == "true");
        let client = s3_builder(&self.url, &self.options)?
            .with_client_options(object_store::ClientOptions::new().with_allow_http(allow_http).with_default_headers(h))
            .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
            .build()
            .with_context(|| format!("store url {}", self.url))?;
        let c: Arc<dyn ObjectStore> = Arc::new(client);
        m.insert(day, c.clone());
        Ok(c)
    }
}

/// One stored object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

/// The media type of a stored object, from its name: what the event says and what the store
/// serves (`Content-Type`).
pub fn content_type(key: &str) -> &'static str {
    match key.rsplit_once('.').map(|(_, e)| e) {
        Some("mp4") => "video/mp4",
        Some("mkv") => "video/x-matroska",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("json") | Some("sig") => "application/json",
        Some("jsonl") => "application/x-ndjson",
        Some("age") => "application/age-encrypted",
        Some("tar") => "application/x-tar",
        _ => "application/octet-stream",
    }
}

/// `Content-Disposition` of a stored object: an attachment named after the file, prefixed with
/// the evidence id inside an item (twenty downloaded `clip.mp4` would otherwise collide).
pub fn content_disposition(key: &str) -> String {
    let parts: Vec<&str> = key.split('/').collect();
    let file = parts.last().copied().unwrap_or("object");
    let name = if parts.first() == Some(&"evidence") && parts.len() >= 3 {
        format!("{}_{file}", parts[parts.len() - 2])
    } else {
        file.to_string()
    };
    let safe: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '_' }).collect();
    format!("attachment; filename=\"{safe}\"")
}

/// Where a stored object is, for a consumer with nothing but the event: the store's URL (never
/// with credentials), the endpoint for S3, and the object's full URL and version.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreRef {
    /// `s3://bucket/prefix` or `file:///absolute/path`.
    pub url: String,
    /// `s3`, `file` or `memory`.
    pub kind: String,
    /// The S3 bucket (S3 only).
    pub bucket: Option<String>,
    /// The key prefix inside the bucket (or directory) under which every key of the event lives.
    pub prefix: String,
    /// The S3 endpoint when it is not AWS's default (S3 only).
    pub endpoint: Option<String>,
}

impl StoreRef {
    /// The full locator of `key` (its version id given by the caller who stored it).
    pub fn locate(&self, key: &str, version_id: Option<String>) -> ObjectLocation {
        ObjectLocation { url: format!("{}/{}", self.url, key.trim_start_matches('/')), version_id }
    }
}

/// One stored object's full locator.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectLocation {
    /// The store URL joined with the key.
    pub url: String,
    /// The object's version id where the store keeps versions (S3 with versioning or Object
    /// Lock): fetch it by version and no later delete marker hides it.
    pub version_id: Option<String>,
}

/// `evidence/<site>/<camera>/<yyyy>/<mm>/<dd>/<id>/`
pub fn evidence_prefix(site: &str, camera: &str, t: DateTime<Utc>, id: &str) -> String {
    format!("evidence/{site}/{camera}/{:04}/{:02}/{:02}/{id}", t.year(), t.month(), t.day())
}

impl Store {
    /// Opens a store from a local path or an object_store URL. S3 also reads the usual `AWS_*`
    /// environment variables; `options` override them.
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Store> {
        Store::open_with(url, options, false)
    }

    /// `object_lock`: lock every evidence object (S3 only).
    pub fn open_with(url: &str, options: &BTreeMap<String, String>, object_lock: bool) -> Result<Store> {
        let mut lock = None;
        let mut local = None;
        if url.trim().is_empty() {
            anyhow::bail!("store url is empty: give a directory or an s3:// URL");
        }
        let (inner, prefix): (Arc<dyn ObjectStore>, ObjPath) = if !url.contains("://") {
            std::fs::create_dir_all(url).with_context(|| format!("store directory {url}: cannot create"))?;
            local = Some(std::fs::canonicalize(url).with_context(|| format!("store directory {url}"))?);
            let fs = object_store::local::LocalFileSystem::new_with_prefix(url)
                .with_context(|| format!("store directory {url}"))?;
            (Arc::new(fs), ObjPath::default())
        } else {
            let parsed = url::Url::parse(url).with_context(|| format!("store url {url:?} is not a URL"))?;
            if parsed.scheme() == "s3" {
                let s3 = s3_builder(url, options)?.build().with_context(|| format!("store url {url}"))?;
                if object_lock {
                    lock = Some(Arc::new(LockClients {
                        url: url.into(),
                        options: options.clone(),
                        by_day: Default::default(),
                    }));
                }
                let prefix = ObjPath::from(parsed.path().trim_start_matches('/'));
                (Arc::new(s3), prefix)
            } else {
                if parsed.scheme() == "file" {
                    std::fs::create_dir_all(parsed.path()).ok();
                    local = std::fs::canonicalize(parsed.path()).ok();
                }
                let (s, p) = object_store::parse_url_opts(&parsed, options.iter())
                    .with_context(|| format!("store url {url}"))?;
                (Arc::from(s), p)
            }
        };
        if object_lock && lock.is_none() {
            anyhow::bail!("store url {url}: object_lock needs an s3:// store (Object Lock is an S3 feature)");
        }
        let s3_endpoint = ["aws_endpoint", "aws_endpoint_url", "endpoint", "endpoint_url"]
            .iter()
            .find_map(|k| options.get(*k).cloned())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok())
            .filter(|_| url.starts_with("s3://"));
        Ok(Store { inner, prefix, url: url.to_string(), lock, local, s3_endpoint })
    }

    /// On a local store, refuses a key whose path has a symbolic link in it (the store never
    /// follows a link out of its root, for reading or deleting) or names something that is not a
    /// regular file (a FIFO would block a reader). A missing path passes: the operation itself
    /// reports it.
    fn guard(&self, key: &str) -> Result<()> {
        let Some(root) = &self.local else { return Ok(()) };
        let mut p = root.join(self.prefix.as_ref());
        let parts: Vec<&str> = key.split('/').filter(|s| !s.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            if *part == ".." || *part == "." {
                anyhow::bail!("store {}: key {key:?} has a {part:?} component", self.url);
            }
            p.push(part);
            let m = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(_) => return Ok(()),
            };
            if m.file_type().is_symlink() {
                anyhow::bail!(
                    "store {}: {} is a symbolic link; the store never follows links out of its root",
                    self.url,
                    p.display()
                );
            }
            if i + 1 == parts.len() && !m.file_type().is_file() && !m.file_type().is_dir() {
                anyhow::bail!("store {}: {} is not a regular file", self.url, p.display());
            }
        }
        Ok(())
    }

    /// Symbolic links and other non-regular entries inside a local store (relative paths, sorted):
    /// `verify` reports them. Empty for other stores.
    pub fn foreign_entries(&self) -> Vec<String> {
        let Some(root) = &self.local else { return Vec::new() };
        let base = root.join(self.prefix.as_ref());
        let mut out = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let Ok(t) = e.file_type() else { continue };
                let rel = e.path().strip_prefix(&base).map(|r| r.display().to_string()).unwrap_or_default();
                if t.is_dir() {
                    stack.push(e.path());
                } else if t.is_symlink() {
                    out.push(format!("{rel} (a symbolic link)"));
                } else if !t.is_file() {
                    out.push(format!("{rel} (not a regular file)"));
                }
            }
        }
        out.sort();
        out
    }

    fn path(&self, key: &str) -> ObjPath {
        let mut p = self.prefix.clone();
        for part in key.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// Writes a new object; fails if it already exists with other content. The same bytes
    /// already there count as written: a write whose response was lost, retried, succeeds.
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.guard(key)?;
        let opts = self.put_options(key);
        match self.inner.put_opts(&self.path(key), PutPayload::from(bytes.clone()), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) if self.holds(key, &bytes).await => {
                tracing::info!(key, "store: already there with the same bytes (an earlier write's answer was lost)");
                Ok(())
            }
            Err(e) => Err(anyhow::Error::from(e).context(format!("store {}: put {key}", self.url))),
        }
    }

    /// Whether `key` holds exactly `bytes`.
    pub async fn holds(&self, key: &str, bytes: &[u8]) -> bool {
        self.get(key).await.is_ok_and(|b| b.as_ref() == bytes)
    }

    /// Create-only, with `Content-Type` and `Content-Disposition` where the store keeps them (a
    /// local directory keeps no attributes).
    fn put_options(&self, key: &str) -> PutOptions {
        let mut attributes = Attributes::new();
        if self.local.is_none() {
            attributes.insert(Attribute::ContentType, content_type(key).into());
            attributes.insert(Attribute::ContentDisposition, content_disposition(key).into());
        }
        PutOptions { mode: PutMode::Create, attributes, ..Default::default() }
    }

    /// [`Store::put_evidence`], but `Ok(None)` when the object already exists; `Ok(Some(version))`
    /// when it was written (the version id where the store keeps versions).
    pub async fn put_evidence_or_exists(
        &self,
        key: &str,
        bytes: Bytes,
        retain_until: DateTime<Utc>,
    ) -> Result<Option<Option<String>>> {
        self.guard(key)?;
        let client = match &self.lock {
            None => self.inner.clone(),
            Some(l) => l.client(retain_until)?,
        };
        match client.put_opts(&self.path(key), PutPayload::from(bytes), self.put_options(key)).await {
            Ok(r) => Ok(Some(r.version)),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(None),
            Err(e) => Err(anyhow::Error::from(e).context(format!("store {}: put {key}", self.url))),
        }
    }

    /// Writes a new evidence object that must be kept until `retain_until`: create-only, and on an
    /// Object Lock store locked in COMPLIANCE mode until that date. Returns its version id where
    /// the store keeps versions.
    /// The same bytes already there count as written (a write whose response was lost).
    pub async fn put_evidence(&self, key: &str, bytes: Bytes, retain_until: DateTime<Utc>) -> Result<Option<String>> {
        match self.put_evidence_or_exists(key, bytes.clone(), retain_until).await? {
            Some(version) => Ok(version),
            None if self.holds(key, &bytes).await => {
                tracing::info!(key, "store: already there with the same bytes (an earlier write's answer was lost)");
                self.version(key).await
            }
            None => anyhow::bail!(
                "store {}: {key} already exists with other content; evidence is never overwritten",
                self.url
            ),
        }
    }

    /// With `object_lock`: writes a small probe object locked for a day (`vigil-probe/…`), so a
    /// bucket without Object Lock is found at start, not by uploads that fail for ever. A store
    /// that does not answer is not an error here (uploads wait in the spool).
    pub async fn probe_object_lock(&self) -> Result<()> {
        let Some(l) = &self.lock else { return Ok(()) };
        let until = Utc::now() + chrono::Duration::days(1);
        let key = format!("vigil-probe/object-lock-{}", ulid::Ulid::new());
        let client = l.client(until)?;
        match client.put_opts(&self.path(&key), PutPayload::from_static(b"probe"), self.put_options(&key)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let text = format!("{e:#}").to_lowercase();
                if text.contains("object lock") || text.contains("objectlock") || text.contains("invalidrequest") {
                    anyhow::bail!(
                        "store {}: store.object_lock = true, but the bucket refuses locked objects (it was not created with Object Lock enabled): {e}",
                        self.url
                    )
                }
                tracing::warn!(store = %self.url, error = %e, "store: the Object Lock probe got no answer now; checked again by every upload");
                Ok(())
            }
        }
    }

    /// The version id of a stored object (None where the store keeps no versions).
    pub async fn version(&self, key: &str) -> Result<Option<String>> {
        self.guard(key)?;
        let m = self.inner.head(&self.path(key)).await.with_context(|| format!("store {}: head {key}", self.url))?;
        Ok(m.version)
    }

    /// The store as a consumer of the events needs to name it: URL without credentials, bucket,
    /// prefix, endpoint.
    pub fn reference(&self) -> StoreRef {
        let redacted = crate::util::secret::RedactedUrl::new(self.url.as_str()).redacted();
        if let Some(root) = &self.local {
            let url = url::Url::from_directory_path(root).map(|u| u.to_string()).unwrap_or(redacted);
            return StoreRef {
                url: url.trim_end_matches('/').to_string(),
                kind: "file".into(),
                bucket: None,
                prefix: self.prefix.to_string(),
                endpoint: None,
            };
        }
        let parsed = url::Url::parse(&self.url).ok();
        let kind = parsed.as_ref().map_or("unknown".to_string(), |u| u.scheme().to_string());
        let bucket = parsed.as_ref().filter(|u| u.scheme() == "s3").and_then(|u| u.host_str().map(String::from));
        let endpoint = self
            .s3_endpoint
            .as_ref()
            .map(|e| crate::util::secret::RedactedUrl::new(e.as_str()).redacted().trim_end_matches('/').to_string());
        StoreRef {
            url: redacted.trim_end_matches('/').to_string(),
            kind,
            bucket,
            prefix: self.prefix.to_string(),
            endpoint,
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool> {
        self.guard(key)?;
        match self.inner.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(anyhow::Error::from(e).context(format!("store {}: head {key}", self.url))),
        }
    }

    /// The last of the create-only positions `key(1)`, `key(2)`, … that exists (0: none), found
    /// from a position known to exist (`from`, or 0) by an exponential then a binary search.
    pub async fn last_position(&self, key: impl Fn(u64) -> String, from: u64) -> Result<u64> {
        let mut lo = from;
        let mut step = 1;
        let mut hi = loop {
            let s = lo + step;
            if !self.exists(&key(s)).await? {
                break s;
            }
            lo = s;
            step *= 2;
        };
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.exists(&key(mid)).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.guard(key)?;
        self.inner.delete(&self.path(key)).await.with_context(|| format!("store {}: delete {key}", self.url))
    }

    /// Objects under `prefix`, with size and time.
    pub async fn list_info(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        use futures::StreamExt;
        let base = self.prefix.as_ref().len();
        let mut out = Vec::new();
        let mut s = self.inner.list(Some(&self.path(prefix)));
        while let Some(m) = s.next().await {
            let m = m.with_context(|| format!("store {}: list {prefix}", self.url))?;
            let loc = m.location.to_string();
            let key = loc[base..].trim_start_matches('/').to_string();
            if self.guard(&key).is_err() {
                // reached through a link (listing follows them): not the store's; verify reports it
                continue;
            }
            out.push(ObjectInfo { key, size: m.size, last_modified: m.last_modified });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub async fn get(&self, key: &str) -> Result<Bytes> {
        self.guard(key)?;
        let r = self.inner.get(&self.path(key)).await.with_context(|| format!("store {}: get {key}", self.url))?;
        Ok(r.bytes().await?)
    }

    /// Size of an object.
    pub async fn size(&self, key: &str) -> Result<u64> {
        self.guard(key)?;
        let m = self.inner.head(&self.path(key)).await.with_context(|| format!("store {}: head {key}", self.url))?;
        Ok(m.size)
    }

    /// Bytes `range` of an object.
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        self.guard(key)?;
        self.inner.get_range(&self.path(key), range).await.with_context(|| format!("store {}: get {key}", self.url))
    }

    /// Keys under `prefix` (relative to the store's own prefix).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.list_info(prefix).await?.into_iter().map(|o| o.key).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_is_create_only() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().to_str().unwrap(), &BTreeMap::new()).unwrap();
        let t = DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z").unwrap().with_timezone(&Utc);
        let k = format!("{}/clip.mp4", evidence_prefix("site", "cam", t, "01J"));
        assert_eq!(k, "evidence/site/cam/2026/11/23/01J/clip.mp4");
        s.put_new(&k, Bytes::from_static(b"one")).await.unwrap();
        assert!(s.put_new(&k, Bytes::from_static(b"two")).await.is_err());
        assert_eq!(s.get(&k).await.unwrap(), Bytes::from_static(b"one"));
        assert_eq!(s.list("evidence/site").await.unwrap(), vec![k]);
    }
}
