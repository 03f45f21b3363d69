//! Store stage: artifacts go to object storage through `object_store`: a local directory by default,
//! any object_store URL (`s3://bucket/prefix`, `file:///abs`, `memory:///`) from config. Writes are
//! create-only (`PutMode::Create`): evidence is never overwritten in place.
//!
//! Key layout (DESIGN.md §5): `evidence/<site>/<camera>/<yyyy>/<mm>/<dd>/<evidence-id>/<file>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    pub url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

/// `evidence/<site>/<camera>/<yyyy>/<mm>/<dd>/<id>/`
pub fn evidence_prefix(site: &str, camera: &str, t: DateTime<Utc>, id: &str) -> String {
    format!(
        "evidence/{site}/{camera}/{:04}/{:02}/{:02}/{id}",
        t.year(),
        t.month(),
        t.day()
    )
}

impl Store {
    /// Opens a store from a local path or an object_store URL. S3 also reads the usual `AWS_*`
    /// environment variables; `options` override them.
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Store> {
        let (inner, prefix): (Arc<dyn ObjectStore>, ObjPath) = if !url.contains("://") {
            std::fs::create_dir_all(url)
                .with_context(|| format!("store directory {url}: cannot create"))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(url)
                .with_context(|| format!("store directory {url}"))?;
            (Arc::new(fs), ObjPath::default())
        } else {
            let parsed =
                url::Url::parse(url).with_context(|| format!("store url {url:?} is not a URL"))?;
            if parsed.scheme() == "s3" {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url);
                for (k, v) in options {
                    let key = k.parse().map_err(|e| anyhow!("store option {k:?}: {e}"))?;
                    b = b.with_config(key, v);
                }
                let s3 = b.build().with_context(|| format!("store url {url}"))?;
                let prefix = ObjPath::from(parsed.path().trim_start_matches('/'));
                (Arc::new(s3), prefix)
            } else {
                if parsed.scheme() == "file" {
                    std::fs::create_dir_all(parsed.path()).ok();
                }
                let (s, p) = object_store::parse_url_opts(&parsed, options.iter())
                    .with_context(|| format!("store url {url}"))?;
                (Arc::from(s), p)
            }
        };
        Ok(Store {
            inner,
            prefix,
            url: url.to_string(),
        })
    }

    fn path(&self, key: &str) -> ObjPath {
        let mut p = self.prefix.clone();
        for part in key.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// Writes a new object; fails if it already exists.
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<()> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.inner
            .put_opts(&self.path(key), PutPayload::from(bytes), opts)
            .await
            .with_context(|| format!("store {}: put {key}", self.url))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let r = self
            .inner
            .get(&self.path(key))
            .await
            .with_context(|| format!("store {}: get {key}", self.url))?;
        Ok(r.bytes().await?)
    }

    /// Keys under `prefix` (relative to the store's own prefix).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        use futures::StreamExt;
        let base = self.prefix.as_ref().len();
        let mut out = Vec::new();
        let mut s = self.inner.list(Some(&self.path(prefix)));
        while let Some(m) = s.next().await {
            let loc = m?.location.to_string();
            out.push(loc[base..].trim_start_matches('/').to_string());
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_is_create_only() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().to_str().unwrap(), &BTreeMap::new()).unwrap();
        let t = DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let k = format!("{}/clip.mp4", evidence_prefix("site", "cam", t, "01J"));
        assert_eq!(k, "evidence/site/cam/2026/11/23/01J/clip.mp4");
        s.put_new(&k, Bytes::from_static(b"one")).await.unwrap();
        assert!(s.put_new(&k, Bytes::from_static(b"two")).await.is_err());
        assert_eq!(s.get(&k).await.unwrap(), Bytes::from_static(b"one"));
        assert_eq!(s.list("evidence/site").await.unwrap(), vec![k]);
    }
}
