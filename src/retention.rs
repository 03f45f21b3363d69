//! Retention: every stored object has a class, and nothing is deleted before its class allows
//! (JS 21, SD 17: images ≥ 30 days; evidence, warnings and raw data ≥ 1 year).
//!
//! | class | what | minimum |
//! | --- | --- | --- |
//! | `evidence` | every object of an evidence item (clip, snapshots, sealed original, manifest), chain index entries, checkpoints | `retention.evidence_days` ≥ 365 |
//! | `image` | images that are not evidence, under `images/` | `retention.image_days` ≥ 30 |
//!
//! An evidence item's retention date is in its signed manifest (`retention.retain_until_utc`) and
//! in its chain index entry. `vigil retention sweep` removes an item only when its signed manifest
//! says its date has passed, removes `images/` objects older than their class, and keeps chain
//! index entries and checkpoints (small, and the record that lets `vigil verify` tell an expired
//! item from a deleted one). On S3 with Object Lock the store itself refuses early deletes.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::signing::PublicKey;
use crate::store::Store;
use crate::verify::{list_items, load_manifest};

#[derive(Debug, Default, Serialize)]
pub struct SweepReport {
    /// The time the sweep took as now.
    pub now_utc: String,
    /// Nothing was deleted: `removed` is what would have been.
    pub dry_run: bool,
    pub removed: Vec<String>,
    pub kept_items: usize,
    /// Items left alone because their manifest could not be read or verified.
    pub refused: Vec<String>,
}

/// Deletes what has passed its retention class at `now` (`dry_run`: only reports).
pub async fn sweep(
    store: &Store,
    key: &PublicKey,
    image_days: u32,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<SweepReport> {
    let mut r = SweepReport { now_utc: crate::util::rfc3339(now), dry_run, ..Default::default() };
    for mut it in list_items(store).await? {
        load_manifest(store, key, &mut it).await;
        let until = it.manifest.as_ref().and_then(|m| DateTime::parse_from_rfc3339(&m.retention.retain_until_utc).ok());
        match (until, it.problems.is_empty()) {
            (Some(u), true) if u.with_timezone(&Utc) <= now => {
                for f in &it.files {
                    let k = format!("{}/{f}", it.prefix);
                    if !dry_run {
                        store.delete(&k).await?;
                    }
                    tracing::info!(key = %k, retain_until = %u, dry_run, "retention: removed");
                    r.removed.push(k);
                }
            }
            (Some(_), true) => r.kept_items += 1,
            _ => {
                tracing::warn!(evidence_id = %it.id, problems = ?it.problems, "retention: manifest unreadable or unverified; item kept");
                r.refused.push(it.id.clone());
            }
        }
    }
    for o in store.list_info("images/").await? {
        let expires = o.last_modified.checked_add_signed(chrono::Duration::days(image_days as i64));
        if expires.is_some_and(|e| e <= now) {
            if !dry_run {
                store.delete(&o.key).await?;
            }
            tracing::info!(key = %o.key, stored = %o.last_modified, dry_run, "retention: removed image");
            r.removed.push(o.key);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn images_go_after_their_class_and_an_unverifiable_item_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path().to_str().unwrap(), &Default::default()).unwrap();
        let key = PublicKey::parse(&crate::signing::Signer::init(&d.path().join("k")).unwrap().public_text()).unwrap();
        store.put_new("images/s/c/ref.jpg", bytes::Bytes::from_static(b"jpeg")).await.unwrap();
        // an item whose manifest is not signed by the trusted key: never deleted
        store.put_new("evidence/s/c/2026/01/01/01X/clip.mp4", bytes::Bytes::from_static(b"mp4")).await.unwrap();
        store.put_new("evidence/s/c/2026/01/01/01X/manifest.json", bytes::Bytes::from_static(b"{}")).await.unwrap();
        let now = Utc::now();
        let r = sweep(&store, &key, 30, now + chrono::Duration::days(29), false).await.unwrap();
        assert!(r.removed.is_empty());
        assert_eq!(r.refused, vec!["01X"]);
        let r = sweep(&store, &key, 30, now + chrono::Duration::days(31), true).await.unwrap();
        assert_eq!(r.removed, vec!["images/s/c/ref.jpg"], "a dry run reports");
        assert!(store.exists("images/s/c/ref.jpg").await.unwrap(), "and deletes nothing");
        let r = sweep(&store, &key, 30, now + chrono::Duration::days(31), false).await.unwrap();
        assert_eq!(r.removed, vec!["images/s/c/ref.jpg"]);
        assert!(!store.exists("images/s/c/ref.jpg").await.unwrap());
        assert!(store.exists("evidence/s/c/2026/01/01/01X/clip.mp4").await.unwrap());
    }
}
