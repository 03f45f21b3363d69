//! Spool: the local, durable staging area between the evidence stage and the object store.
//!
//! Every evidence item is first written here complete — artifacts, chain index entry, signed
//! manifest, and its event — as `<data_dir>/spool/<evidence-id>/` with the files fsync'd and a
//! `READY` marker written last (an item without it is a crash mid-write and is discarded on start:
//! nothing of it reached the store or the outbox). The uploader then puts the objects in order
//! (artifacts first, the manifest last; create-only, an object already there with the same bytes
//! counts as done), and only when all are stored hands the event to the outbox. So:
//! - the object store may be down for as long as the spool has room: items wait here, in order;
//! - a crash at any point loses nothing that was READY, and uploads resume on start;
//! - an event is never published before its evidence is stored.
//!
//! **A bad item never blocks the others.** Before upload every spooled file is checked against the
//! SHA-256 recorded when it was spooled; an item that cannot be read as it was written (a garbage
//! `objects.json`, a missing or altered file) or whose key holds other content in the store is
//! moved to `<data_dir>/spool-quarantine/<id>/` with a `REASON` file, logged naming the file, counted
//! (`vigil_spool_quarantined`) and raised as the `evidence_quarantined` health alarm. It is kept
//! there, never deleted, for ops to look at; the items behind it upload on.
//!
//! **Disk bound** (`spool.max_bytes`): when the spool is full the worker stops cutting new clips:
//! each violation that cannot be spooled is logged as an error, counted
//! (`vigil_evidence_refused_total`), and raises the `spool_full` health alarm on
//! `vigil.health.<site>.worker`, until uploads make room again. Evidence already spooled is never
//! dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::publish::{OutboxEntry, Publisher};
use crate::store::Store;
use crate::util::Backoff;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolObject {
    key: String,
    file: String,
    sha256: String,
    retain_until: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolIndex {
    objects: Vec<SpoolObject>,
}

/// An object to store: key, bytes, and the date it must be kept until.
pub type StoreObject = (String, Vec<u8>, DateTime<Utc>);

/// Chains an item spooled without a reserved chain position (cluster mode, store unreachable):
/// claims a position from the store's head, re-signs the manifest and rewrites the item
/// ([`Spool::read_item`], [`Spool::rewrite_item`]). Called by the uploader before it uploads such
/// an item; an error leaves the item for the next attempt.
pub type Rechain = std::sync::Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>> + Send + Sync,
>;

/// Marker file of an item whose chain position was not reserved in the store.
const UNRESERVED: &str = "UNRESERVED";

/// Why an upload did not go through.
#[derive(Debug)]
enum UploadError {
    /// The store (or the chain) did not take it now: retry, in order.
    Retry(anyhow::Error),
    /// The item cannot be uploaded as it is, ever: quarantine it.
    Bad(String),
}

impl<E: Into<anyhow::Error>> From<E> for UploadError {
    fn from(e: E) -> UploadError {
        UploadError::Retry(e.into())
    }
}

pub struct Spool {
    dir: PathBuf,
    pub max_bytes: u64,
    bytes: AtomicU64,
    wake: tokio::sync::Notify,
    rechain: std::sync::OnceLock<Rechain>,
}

fn dir_bytes(d: &Path) -> u64 {
    std::fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().ok();
                    if m.as_ref().is_some_and(|m| m.is_dir()) { dir_bytes(&e.path()) } else { m.map_or(0, |m| m.len()) }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn write_synced(p: &Path, b: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(p)?;
    f.write_all(b)?;
    f.sync_all()
}

impl Spool {
    /// Opens the spool; items a crash left without `READY` are discarded (never uploaded, never
    /// announced).
    pub fn open(data_dir: &Path, max_bytes: u64) -> Result<Spool> {
        let dir = data_dir.join("spool");
        std::fs::create_dir_all(&dir).with_context(|| format!("spool {}", dir.display()))?;
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.path().is_dir() && !e.path().join("READY").exists() {
                tracing::warn!(item = %e.path().display(), "spool: discarding an item left incomplete by a crash");
                std::fs::remove_dir_all(e.path())?;
            }
        }
        let bytes = AtomicU64::new(dir_bytes(&dir));
        Ok(Spool { dir, max_bytes, bytes, wake: tokio::sync::Notify::new(), rechain: Default::default() })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Items waiting for upload.
    pub fn pending(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("READY").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort(); // ULIDs: oldest first
        v
    }

    /// True when the spool has reached its limit (an item is accepted while it is below, so one
    /// item may take it past the limit).
    pub fn is_full(&self) -> bool {
        self.bytes() >= self.max_bytes
    }

    /// Sets how items spooled without a reserved chain position are chained before upload.
    pub fn set_rechain(&self, r: Rechain) {
        let _ = self.rechain.set(r);
    }

    /// Writes one complete item (objects in upload order, then its event) durably.
    pub fn put(&self, id: &str, objects: Vec<StoreObject>, event: &OutboxEntry) -> Result<()> {
        self.put_with(id, objects, event, false)
    }

    /// [`Spool::put`]; `unreserved`: the item's chain position was not reserved in the store (the
    /// uploader chains it afresh first, see [`Rechain`]).
    pub fn put_with(&self, id: &str, objects: Vec<StoreObject>, event: &OutboxEntry, unreserved: bool) -> Result<()> {
        if self.is_full() {
            bail!("spool full ({} of {} bytes used)", self.bytes(), self.max_bytes);
        }
        let d = self.dir.join(id);
        std::fs::create_dir_all(&d)?;
        Self::write_files(&d, objects, event, "")?;
        if unreserved {
            write_synced(&d.join(UNRESERVED), b"")?;
        }
        write_synced(&d.join("READY"), b"")?;
        std::fs::File::open(&d)?.sync_all()?;
        self.bytes.fetch_add(dir_bytes(&d), Ordering::Relaxed);
        crate::telemetry::metrics::get().spool_bytes.set(self.bytes() as i64);
        self.wake.notify_one();
        Ok(())
    }

    /// The object files (named `<prefix><n>.bin`), `objects.json` and `event.json` of an item.
    fn write_files(d: &Path, objects: Vec<StoreObject>, event: &OutboxEntry, prefix: &str) -> Result<()> {
        let mut index = SpoolIndex { objects: Vec::new() };
        for (i, (key, bytes, until)) in objects.into_iter().enumerate() {
            let file = format!("{prefix}{i:03}.bin");
            write_synced(&d.join(&file), &bytes)?;
            index.objects.push(SpoolObject { key, file, sha256: crate::util::sha256_hex(&bytes), retain_until: until });
        }
        // the event first: an item is read through objects.json, which names only files written
        write_synced(&d.join("event.json.tmp"), &serde_json::to_vec(event)?)?;
        std::fs::rename(d.join("event.json.tmp"), d.join("event.json"))?;
        write_synced(&d.join("objects.json.tmp"), &serde_json::to_vec(&index)?)?;
        std::fs::rename(d.join("objects.json.tmp"), d.join("objects.json"))?;
        Ok(())
    }

    /// An item's objects (in upload order) and its event.
    pub fn read_item(&self, id: &str) -> Result<(Vec<StoreObject>, OutboxEntry)> {
        let d = self.dir.join(id);
        let index: SpoolIndex = serde_json::from_slice(&std::fs::read(d.join("objects.json"))?)?;
        let objects = index
            .objects
            .into_iter()
            .map(|o| Ok((o.key, std::fs::read(d.join(&o.file))?, o.retain_until)))
            .collect::<Result<Vec<_>>>()?;
        Ok((objects, serde_json::from_slice(&std::fs::read(d.join("event.json"))?)?))
    }

    /// Drops an item's unreserved marker: its position turned out to be reserved already (a crash
    /// came after [`Spool::rewrite_item`] wrote it and before the marker went).
    pub fn mark_reserved(&self, id: &str) -> Result<()> {
        let d = self.dir.join(id);
        std::fs::remove_file(d.join(UNRESERVED))?;
        std::fs::File::open(&d)?.sync_all()?;
        Ok(())
    }

    /// Replaces an item's objects and event (after [`Rechain`]: its position is now reserved).
    pub fn rewrite_item(&self, id: &str, objects: Vec<StoreObject>, event: &OutboxEntry) -> Result<()> {
        let d = self.dir.join(id);
        let old: SpoolIndex = serde_json::from_slice(&std::fs::read(d.join("objects.json"))?)?;
        let prefix = format!("r{}-", ulid::Ulid::new());
        Self::write_files(&d, objects, event, &prefix)?;
        for o in old.objects {
            let _ = std::fs::remove_file(d.join(o.file));
        }
        std::fs::remove_file(d.join(UNRESERVED))?;
        std::fs::File::open(&d)?.sync_all()?;
        Ok(())
    }

    /// Reads an item's index and every object file, each checked against the SHA-256 recorded
    /// when it was spooled.
    fn checked(&self, id: &str) -> std::result::Result<(SpoolIndex, Vec<Bytes>, OutboxEntry), UploadError> {
        let d = self.dir.join(id);
        let bad = |what: String| UploadError::Bad(what);
        let raw = std::fs::read(d.join("objects.json"))
            .map_err(|e| bad(format!("{}: {e}", d.join("objects.json").display())))?;
        let index: SpoolIndex = serde_json::from_slice(&raw)
            .map_err(|e| bad(format!("{}: not a spool index ({e})", d.join("objects.json").display())))?;
        let mut files = Vec::with_capacity(index.objects.len());
        for o in &index.objects {
            if o.file.contains(['/', '\\']) || o.file.starts_with('.') {
                return Err(bad(format!(
                    "{}: names a file outside the item ({:?})",
                    d.join("objects.json").display(),
                    o.file
                )));
            }
            let p = d.join(&o.file);
            let b = std::fs::read(&p).map_err(|e| bad(format!("{} ({}): {e}", p.display(), o.key)))?;
            let h = crate::util::sha256_hex(&b);
            if h != o.sha256 {
                return Err(bad(format!(
                    "{} ({}) changed since it was spooled: SHA-256 {}…, recorded {}…",
                    p.display(),
                    o.key,
                    &h[..16],
                    &o.sha256[..16.min(o.sha256.len())]
                )));
            }
            files.push(Bytes::from(b));
        }
        let event: OutboxEntry = serde_json::from_slice(
            &std::fs::read(d.join("event.json"))
                .map_err(|e| bad(format!("{}: {e}", d.join("event.json").display())))?,
        )
        .map_err(|e| bad(format!("{}: not an event ({e})", d.join("event.json").display())))?;
        Ok((index, files, event))
    }

    /// Uploads one spooled item and hands its event to the outbox; removes it from the spool.
    async fn upload(&self, id: &str, store: &Store, publisher: &Publisher) -> std::result::Result<(), UploadError> {
        let d = self.dir.join(id);
        if d.join(UNRESERVED).exists() {
            let Some(rechain) = self.rechain.get() else {
                return Err(UploadError::Bad(
                    "its chain position was not reserved, and nothing here can chain it (not a cluster worker)".into(),
                ));
            };
            rechain(id.to_string()).await.context("chaining an item spooled without a reserved position")?;
        }
        let (index, files, mut event) = self.checked(id)?;
        let mut objects = serde_json::Map::new();
        let here = store.reference();
        for (o, bytes) in index.objects.iter().zip(files) {
            let version = match store.put_evidence_or_exists(&o.key, bytes, o.retain_until).await? {
                Some(version) => version,
                None => {
                    // already there: fine if it is the same object (a previous attempt got this far)
                    let there = store.get(&o.key).await?;
                    if crate::util::sha256_hex(&there) != o.sha256 {
                        return Err(UploadError::Bad(format!("{} exists in the store with other content", o.key)));
                    }
                    tracing::info!(key = %o.key, "spool: already in the store with the same bytes (an earlier attempt stored it)");
                    store.version(&o.key).await?
                }
            };
            objects.insert(o.key.clone(), serde_json::to_value(here.locate(&o.key, version))?);
        }
        // the event names where every object now is (an event made before the store was known)
        if let Some(p) = event.payload.as_object_mut() {
            p.insert("store".into(), serde_json::to_value(&here)?);
            p.insert("objects".into(), serde_json::Value::Object(objects));
        }
        publisher.submit(event).await?;
        let size = dir_bytes(&d);
        std::fs::remove_dir_all(&d)?;
        self.bytes.fetch_sub(size.min(self.bytes()), Ordering::Relaxed);
        crate::telemetry::metrics::get().spool_bytes.set(self.bytes() as i64);
        Ok(())
    }

    /// Moves an item that cannot be uploaded to `spool-quarantine/<id>/` with its reason; raises
    /// the alarm. Kept, never deleted.
    fn quarantine(&self, id: &str, why: &str) -> Result<PathBuf> {
        let qdir = self.dir.with_file_name("spool-quarantine");
        std::fs::create_dir_all(&qdir)?;
        let to = qdir.join(id);
        let from = self.dir.join(id);
        let size = dir_bytes(&from);
        std::fs::rename(&from, &to).with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        write_synced(&to.join("REASON"), format!("{}\n{why}\n", crate::util::rfc3339(chrono::Utc::now())).as_bytes())?;
        std::fs::File::open(&qdir)?.sync_all()?;
        self.bytes.fetch_sub(size.min(self.bytes()), Ordering::Relaxed);
        crate::telemetry::metrics::get().spool_bytes.set(self.bytes() as i64);
        crate::telemetry::metrics::get().spool_quarantined.inc();
        let detail = format!("evidence {id} set aside in {}: {why}", to.display());
        crate::telemetry::Event::Health {
            camera: "worker",
            condition: crate::telemetry::Condition::Quarantined,
            active: true,
            detail: &detail,
            lasted: None,
        }
        .emit();
        Ok(to)
    }

    /// The highest chain position each camera's spooled (and quarantined) items hold, with that
    /// manifest's hash: positions they took, which a new item must never take again whatever the
    /// chain state file says. Items spooled without a reserved position hold none.
    pub fn heads(&self) -> std::collections::BTreeMap<String, (u64, String)> {
        let mut out: std::collections::BTreeMap<String, (u64, String)> = Default::default();
        let dirs = [self.dir.clone(), self.dir.with_file_name("spool-quarantine")];
        for d in dirs.iter().filter_map(|d| std::fs::read_dir(d).ok()).flat_map(|rd| rd.flatten()) {
            let p = d.path();
            if p.join(UNRESERVED).exists() {
                continue;
            }
            let Ok(b) = std::fs::read(p.join("event.json")) else { continue };
            let Ok(e) = serde_json::from_slice::<OutboxEntry>(&b) else { continue };
            let (Some(cam), Some(seq), Some(hash)) = (
                e.payload["camera"].as_str(),
                e.payload["chain"]["seq"].as_u64(),
                e.payload["manifest"]["sha256"].as_str(),
            ) else {
                continue;
            };
            let slot = out.entry(cam.to_string()).or_insert((0, String::new()));
            if seq > slot.0 {
                *slot = (seq, hash.to_string());
            }
        }
        out
    }

    /// Items set aside in quarantine (their ids).
    pub fn quarantined(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.with_file_name("spool-quarantine"))
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Uploads spooled items in order until `stop` is set and the spool is empty (or `stop` is set
    /// and the store keeps failing past `grace`). Failures back off (capped at 10 s) and retry.
    pub async fn run_uploader(
        self: Arc<Self>,
        store: Store,
        publisher: Arc<Publisher>,
        stop: tokio::sync::watch::Receiver<bool>,
        grace: Duration,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10), Duration::from_millis(100));
        let mut stopping_since: Option<std::time::Instant> = None;
        loop {
            let pending = self.pending();
            if *stop.borrow() {
                let since = *stopping_since.get_or_insert_with(std::time::Instant::now);
                if pending.is_empty() || since.elapsed() > grace {
                    if !pending.is_empty() {
                        tracing::warn!(
                            items = pending.len(),
                            "spool: store unreachable at shutdown; items stay spooled and upload on the next start"
                        );
                    }
                    return;
                }
            }
            let Some(id) = pending.first() else {
                let _ = tokio::time::timeout(Duration::from_millis(500), self.wake.notified()).await;
                continue;
            };
            match self.upload(id, &store, &publisher).await {
                Err(UploadError::Bad(why)) => {
                    tracing::error!(evidence_id = %id, error = %why, "ALARM: spooled evidence cannot be uploaded as it is; set aside in spool-quarantine (kept, never deleted); the items behind it go on");
                    if let Err(e) = self.quarantine(id, &why) {
                        tracing::error!(evidence_id = %id, error = format!("{e:#}"), "spool: cannot quarantine the item; retrying later");
                        tokio::time::sleep(backoff.next_wait()).await;
                    }
                }
                Ok(()) => {
                    tracing::info!(evidence_id = %id, spool_bytes = self.bytes(), "spool: item stored, event queued");
                    if crate::telemetry::metrics::get().spool_full.get() == 1 && !self.is_full() {
                        crate::telemetry::Event::Health {
                            camera: "worker",
                            condition: crate::telemetry::Condition::SpoolFull,
                            active: false,
                            detail: "uploads made room; clips are cut again",
                            lasted: None,
                        }
                        .emit();
                    }
                    backoff.reset();
                }
                Err(UploadError::Retry(e)) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(evidence_id = %id, error = format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "spool: upload failed; will retry");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::Subject;

    fn until() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::days(365)
    }

    fn event(id: &str) -> OutboxEntry {
        OutboxEntry::new(id, Subject::evidence("s", "c"), &serde_json::json!({"evidence_id": id}))
    }

    #[test]
    fn an_item_is_ready_only_when_complete_and_a_crashed_one_is_discarded() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path(), 1 << 20).unwrap();
        s.put("01B", vec![("k/b".into(), b"bb".to_vec(), until())], &event("01B")).unwrap();
        s.put("01A", vec![("k/a".into(), b"aa".to_vec(), until())], &event("01A")).unwrap();
        assert_eq!(s.pending(), vec!["01A", "01B"], "oldest (by ULID) first");
        // a crash mid-write: a directory without READY
        std::fs::create_dir_all(d.path().join("spool/01C")).unwrap();
        std::fs::write(d.path().join("spool/01C/000.bin"), b"half").unwrap();
        let s = Spool::open(d.path(), 1 << 20).unwrap();
        assert_eq!(s.pending(), vec!["01A", "01B"]);
        assert!(!d.path().join("spool/01C").exists(), "the incomplete item is gone, never uploaded");
        assert!(s.bytes() > 0);
    }

    #[test]
    fn a_full_spool_refuses_new_items() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path(), 10).unwrap();
        s.put("01A", vec![("k/a".into(), vec![0; 100], until())], &event("01A")).unwrap();
        assert!(s.is_full());
        let e = s.put("01B", vec![], &event("01B")).unwrap_err().to_string();
        assert!(e.contains("spool full"), "{e}");
    }

    #[tokio::test]
    async fn upload_stores_the_objects_then_queues_the_event_and_keeps_an_item_whose_key_holds_other_bytes() {
        let d = tempfile::tempdir().unwrap();
        let store_dir = d.path().join("store");
        let store = Store::open(store_dir.to_str().unwrap(), &Default::default()).unwrap();
        let p = Publisher::start(&d.path().join("data"), None, "VIGIL", Duration::from_secs(1)).await.unwrap();
        let s = Spool::open(&d.path().join("data"), 1 << 20).unwrap();
        // one object is already stored with the same bytes (an earlier attempt got that far)
        store.put_new("k/one", Bytes::from_static(b"1")).await.unwrap();
        s.put(
            "01A",
            vec![("k/one".into(), b"1".to_vec(), until()), ("k/two".into(), b"2".to_vec(), until())],
            &event("01A"),
        )
        .unwrap();
        s.upload("01A", &store, &p).await.unwrap();
        assert_eq!(store.get("k/two").await.unwrap(), Bytes::from_static(b"2"));
        assert!(s.pending().is_empty());
        assert_eq!(crate::publish::unacked(&d.path().join("data")).unwrap().len(), 1, "the event after its objects");
        // a key that holds other bytes: the item stays, nothing is published
        store.put_new("k/three", Bytes::from_static(b"other")).await.unwrap();
        s.put("01B", vec![("k/three".into(), b"3".to_vec(), until())], &event("01B")).unwrap();
        let e = s.upload("01B", &store, &p).await.unwrap_err();
        assert!(matches!(&e, UploadError::Bad(w) if w.contains("other content")), "{e:?}");
        assert_eq!(s.pending(), vec!["01B"]);
        assert_eq!(crate::publish::unacked(&d.path().join("data")).unwrap().len(), 1);
        // a file changed on disk after it was spooled, a garbage index: never uploaded
        s.put("01C", vec![("k/c".into(), b"clip".to_vec(), until())], &event("01C")).unwrap();
        std::fs::write(d.path().join("data/spool/01C/000.bin"), b"CLIP").unwrap();
        let e = s.upload("01C", &store, &p).await.unwrap_err();
        assert!(matches!(&e, UploadError::Bad(w) if w.contains("changed since it was spooled")), "{e:?}");
        assert!(!store.exists("k/c").await.unwrap());
        std::fs::write(d.path().join("data/spool/01C/objects.json"), b"garbage").unwrap();
        let e = s.upload("01C", &store, &p).await.unwrap_err();
        assert!(matches!(&e, UploadError::Bad(w) if w.contains("01C/objects.json: not a spool index")), "{e:?}");
        s.quarantine("01C", "garbage").unwrap();
        assert_eq!(s.quarantined(), vec!["01C"]);
        assert!(d.path().join("data/spool-quarantine/01C/REASON").exists());
        assert_eq!(s.pending(), vec!["01B"]);
    }
}
