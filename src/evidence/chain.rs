//! Per-camera hash chain of evidence manifests.
//!
//! Each manifest carries `chain.seq` (1, 2, 3, … per camera) and `chain.prev_hash`, the SHA-256 of
//! the previous manifest's canonical bytes (64 zeros for the first). Positions are claimed in the
//! store before the manifest is written: `chain/<site>/<camera>/seq/<seq:012>.json`, a signed index
//! entry written create-only, so two writers (or a restarted worker with stale state) can never give
//! two manifests the same position; a conflict means "re-read the head and try the next one". The
//! head (last seq and hash) is cached in `<data_dir>/chain/<camera>.json` and re-derived from the
//! store on start, so the chain survives restarts and lost state files.
//!
//! Signed checkpoints (`chain/<site>/<camera>/checkpoints/<time-ms>-<seq>.json` + `.sig`, also
//! published on `vigil.chain.<site>.<camera>`) record the head at a point in time, so that removing
//! the newest items of a chain is detectable as well.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::signing::{PublicKey, SignatureFile, Signer, open, seal};
use crate::store::Store;
use crate::util::rfc3339;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain position a manifest commits to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainLink {
    /// Position in the camera's chain: the order the worker committed items (processing order).
    /// It is not time order: an item whose post-roll or encoding took longer can follow one whose
    /// violation came later. Sort by `violation_time_utc` for time.
    pub seq: u64,
    /// SHA-256 of the canonical bytes of the manifest at `seq − 1` (64 zeros for seq 1).
    pub prev_hash: String,
    /// When this position was claimed (UTC; manifest v4 on): the processing time that orders the
    /// chain, beside the violation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_utc: Option<String>,
    /// Seconds the worker's wall clock stood behind the camera's previous commit when this
    /// position was claimed (a clock stepped back): its times are not in order with the items
    /// before, the sequence is. Absent when the clock did not step back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_step_back_s: Option<f64>,
}

/// `chain/<site>/<camera>/seq/<seq>.json`: who holds a chain position.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    pub site: String,
    pub camera: String,
    pub seq: u64,
    pub evidence_id: String,
    pub manifest_key: String,
    pub manifest_sha256: String,
    /// When the item may be removed under its retention class (so that a later sweep is not
    /// mistaken for tampering).
    pub retain_until_utc: String,
}

/// A signed statement of a camera's chain head at a point in time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub schema: String,
    pub site: String,
    pub camera: String,
    pub last_seq: u64,
    pub last_hash: String,
    pub time_utc: String,
    pub key_id: String,
    /// Set on the last checkpoint of a key (`vigil keys rotate`): the key that signs from now
    /// on. Such a checkpoint is signed by both: `<key>.sig` by `key_id`, `<key>.next.sig` by
    /// `next_key_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key_id: Option<String>,
}

/// A checkpoint as stored: its object keys and signature.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    pub checkpoint: Checkpoint,
    pub key: String,
    pub sha256: String,
    pub signature_key: String,
    pub signature: SignatureFile,
    pub store: crate::store::StoreRef,
    pub objects: std::collections::BTreeMap<String, crate::store::ObjectLocation>,
}

/// `vigil.chain.<site>.<camera>`: a checkpoint with its signature and object keys, so that a
/// consumer verifies it with the public key alone (re-canonicalise `checkpoint`, check
/// `signature`) and finds both objects in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointEvent {
    pub schema: String,
    pub checkpoint: Checkpoint,
    /// SHA-256 of the checkpoint's canonical bytes.
    pub sha256: String,
    pub signature: SignatureFile,
    /// Object keys of the checkpoint and its signature (relative to the store's root).
    pub key: String,
    pub signature_key: String,
    /// The store and the full locators (URL, version id) of both objects.
    pub store: crate::store::StoreRef,
    pub objects: std::collections::BTreeMap<String, crate::store::ObjectLocation>,
}

pub const CHECKPOINT_EVENT_SCHEMA: &str = "vigil.checkpoint-event.v1";

impl StoredCheckpoint {
    pub fn event(&self) -> CheckpointEvent {
        CheckpointEvent {
            schema: CHECKPOINT_EVENT_SCHEMA.into(),
            checkpoint: self.checkpoint.clone(),
            sha256: self.sha256.clone(),
            signature: self.signature.clone(),
            key: self.key.clone(),
            signature_key: self.signature_key.clone(),
            store: self.store.clone(),
            objects: self.objects.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    /// The latest wall-clock time a position of the camera was committed here (never goes back:
    /// a claim earlier than it is a clock step back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

impl Head {
    fn genesis() -> Head {
        Head { seq: 0, hash: GENESIS.into(), at: None }
    }
}

pub fn index_key(site: &str, camera: &str, seq: u64) -> String {
    format!("chain/{site}/{camera}/seq/{seq:012}.json")
}

pub fn checkpoint_prefix(site: &str, camera: &str) -> String {
    format!("chain/{site}/{camera}/checkpoints/")
}

/// How reserving a chain position in the store went ([`Chains::reserve`]).
#[derive(Debug)]
pub enum Reserved {
    /// The index entry is in the store: the position is this item's.
    Yes,
    /// Another item holds the position.
    Taken,
    /// The store did not answer within the patience given.
    Unreachable(String),
}

/// Times a claim is retried after its position was taken by another worker.
pub const RESERVE_ATTEMPTS: u32 = 16;

/// Chains of all cameras of one site, backed by the store.
pub struct Chains {
    store: Store,
    signer: Arc<Signer>,
    /// Keys whose index entries are accepted: the signer's and, after a rotation, earlier ones.
    trust: PublicKey,
    site: String,
    state_dir: PathBuf,
    evidence_days: u32,
    /// One lock per camera, held from claiming a position to updating the head.
    heads: std::sync::Mutex<HashMap<String, Arc<Mutex<Option<Head>>>>>,
    /// The highest position each camera's spooled items hold (set by the worker from its spool
    /// at start): the head is never below it.
    spooled: std::sync::Mutex<std::collections::BTreeMap<String, (u64, String)>>,
}

/// A position claimed for a new manifest; finish with [`Chains::commit`].
pub struct Claim {
    pub link: ChainLink,
    guard: tokio::sync::OwnedMutexGuard<Option<Head>>,
}

impl Claim {
    /// Gives the position back and forgets the cached head: the position was taken elsewhere,
    /// so the next claim reads the head from the store.
    pub fn forget(mut self) {
        *self.guard = None;
    }
}

impl Chains {
    pub fn new(
        store: Store,
        signer: Arc<Signer>,
        site: &str,
        data_dir: &std::path::Path,
        evidence_days: u32,
    ) -> Result<Chains> {
        let state_dir = data_dir.join("chain");
        std::fs::create_dir_all(&state_dir).with_context(|| format!("chain state dir {}", state_dir.display()))?;
        let trust = signer.public_key();
        Ok(Chains {
            store,
            signer,
            trust,
            site: site.into(),
            state_dir,
            evidence_days,
            heads: Default::default(),
            spooled: Default::default(),
        })
    }

    /// The positions the spool's items hold ([`crate::spool::Spool::heads`]): a camera's head is
    /// at least there, whatever the state file and the store say.
    pub fn with_spooled(self, heads: std::collections::BTreeMap<String, (u64, String)>) -> Chains {
        *self.spooled.lock().expect("spooled") = heads;
        self
    }

    /// Also accept index entries signed by the earlier keys of `trust` (after `vigil keys rotate`).
    pub fn with_trust(mut self, trust: PublicKey) -> Chains {
        self.trust = trust;
        self
    }

    fn slot(&self, camera: &str) -> Arc<Mutex<Option<Head>>> {
        self.heads.lock().expect("heads").entry(camera.into()).or_default().clone()
    }

    fn state_path(&self, camera: &str) -> PathBuf {
        self.state_dir.join(format!("{camera}.json"))
    }

    async fn exists(&self, camera: &str, seq: u64) -> Result<bool> {
        self.store.exists(&index_key(&self.site, camera, seq)).await
    }

    /// The head from the store, starting from a known-good lower bound: exponential then binary
    /// search over the create-only index entries.
    async fn probe_head(&self, camera: &str, from: u64) -> Result<Head> {
        let lo = self.store.last_position(|s| index_key(&self.site, camera, s), from).await?;
        if lo == 0 {
            return Ok(Head::genesis());
        }
        let e = self.read_index(camera, lo).await?;
        Ok(Head { seq: e.seq, hash: e.manifest_sha256, at: None })
    }

    pub async fn read_index(&self, camera: &str, seq: u64) -> Result<IndexEntry> {
        let key = index_key(&self.site, camera, seq);
        let bytes = self.store.get(&key).await?;
        let sig = self.store.get(&format!("{key}.sig")).await?;
        open(&bytes, &sig, &self.trust).with_context(|| format!("chain index {key}"))
    }

    /// The camera's head: what the store (its index entries) and the spool (positions its items
    /// hold) prove, reconciled with this worker's state file. The state file is a cache: lost, the
    /// store and spool give the head; ahead of both, positions this worker committed are gone
    /// (removed from the store?) and the `chain_gap` alarm is raised — new items still continue
    /// after it, never taking those positions again.
    async fn load_head(&self, camera: &str) -> Result<Head> {
        let cached: Option<Head> =
            std::fs::read(self.state_path(camera)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let spooled = self.spooled.lock().expect("spooled").get(camera).cloned();
        let from = cached.as_ref().map_or(0, |h| h.seq);
        let probed = async {
            let from = if from > 0 && self.exists(camera, from).await? { from } else { 0 };
            self.probe_head(camera, from).await
        };
        let at = cached.as_ref().and_then(|c| c.at);
        let mut proven = match probed.await {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(
                    camera,
                    error = format!("{e:#}"),
                    "chain: store unreachable; the head comes from the spool and the local state"
                );
                None
            }
        };
        if let Some((seq, hash)) = spooled
            && proven.as_ref().is_none_or(|p| seq > p.seq)
            && (proven.is_some() || cached.as_ref().is_none_or(|c| seq > c.seq))
        {
            proven = Some(Head { seq, hash, at: None });
        }
        let head = match (proven, cached) {
            (Some(p), Some(c)) if c.seq > p.seq => {
                let detail = format!(
                    "positions {}..{} of camera {camera} were committed by this worker but are neither in the store nor in the spool (removed?); new items continue after {}",
                    p.seq + 1,
                    c.seq,
                    c.seq
                );
                tracing::error!(camera, store_and_spool = p.seq, state = c.seq, "ALARM: chain tail missing: {detail}");
                crate::telemetry::Event::Health {
                    camera,
                    condition: crate::telemetry::Condition::ChainGap,
                    active: true,
                    detail: &detail,
                    lasted: None,
                }
                .emit();
                c
            }
            (Some(p), _) => Head { at, ..p },
            (None, Some(c)) => c,
            (None, None) => {
                tracing::warn!(
                    camera,
                    "chain: store unreachable and no local chain state or spooled item; starting at seq 1"
                );
                Head::genesis()
            }
        };
        Ok(head)
    }

    fn save_head(&self, camera: &str, head: &Head) -> Result<()> {
        let path = self.state_path(camera);
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(head)?)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Claims the next position of `camera`'s chain. The claim holds the camera's chain lock until
    /// [`Chains::commit`] (or until dropped, which gives the position back).
    pub async fn claim(&self, camera: &str) -> Result<Claim> {
        let mut guard = self.slot(camera).lock_owned().await;
        if guard.is_none() {
            *guard = Some(self.load_head(camera).await?);
        }
        let head = guard.clone().expect("head");
        let now = Utc::now();
        // a wall clock behind this camera's last commit stepped back: the item says by how much
        let step = head
            .at
            .filter(|a| *a > now + chrono::Duration::seconds(1))
            .map(|a| (a - now).num_milliseconds() as f64 / 1000.0);
        if let Some(s) = step {
            let detail = format!(
                "the wall clock stands {s:.1} s behind the last commit of camera {camera}; items carry the step, the sequence keeps their order"
            );
            tracing::warn!(camera, step_back_s = s, "clock stepped back: {detail}");
            crate::telemetry::Event::Health {
                camera,
                condition: crate::telemetry::Condition::ClockStep,
                active: true,
                detail: &detail,
                lasted: None,
            }
            .emit();
        }
        Ok(Claim {
            link: ChainLink {
                seq: head.seq + 1,
                prev_hash: head.hash,
                committed_utc: Some(rfc3339(now)),
                clock_step_back_s: step,
            },
            guard,
        })
    }

    /// Writes the index entry of a claimed position (from [`Chains::index_objects`]) create-only,
    /// entry before signature: the store decides who holds a position when workers hand a camera
    /// to each other. The same bytes already there count as this item's (a retry).
    pub async fn reserve(&self, index: &[crate::spool::StoreObject], patience: std::time::Duration) -> Reserved {
        let started = std::time::Instant::now();
        let mut wait = std::time::Duration::from_millis(200);
        // the entry first (the create-only claim), then its signature
        let mut ordered: Vec<&crate::spool::StoreObject> = index.iter().filter(|o| !o.0.ends_with(".sig")).collect();
        ordered.extend(index.iter().filter(|o| o.0.ends_with(".sig")));
        for (key, bytes, until) in ordered {
            loop {
                let r = self.store.put_evidence_or_exists(key, Bytes::from(bytes.clone()), *until).await;
                let e = match r {
                    Ok(Some(_)) => break,
                    Ok(None) => match self.store.get(key).await {
                        Ok(there) if there.as_ref() == bytes.as_slice() => break,
                        Ok(_) => return Reserved::Taken,
                        Err(e) => e,
                    },
                    Err(e) => e,
                };
                if started.elapsed() + wait > patience {
                    return Reserved::Unreachable(format!("{key}: {e:#}"));
                }
                tracing::warn!(key = %key, error = format!("{e:#}"), "chain: cannot reserve the position yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
        }
        Reserved::Yes
    }

    /// Whether the store holds exactly `bytes` at `key` (an index entry this item already reserved).
    pub async fn holds(&self, key: &str, bytes: &[u8]) -> bool {
        self.store.get(key).await.is_ok_and(|b| b.as_ref() == bytes)
    }

    /// Forgets the cached head of `camera`, so the next claim reads it from the store (a worker
    /// that takes a camera over from another does this first). Never waits: while an item holds
    /// the camera's chain lock the head stays, and a stale head only costs a reservation that
    /// finds its position taken and reads the head again.
    pub fn forget(&self, camera: &str) {
        if let Ok(mut g) = self.slot(camera).try_lock_owned() {
            *g = None;
        }
    }

    /// The signed chain index entry for a claimed position, as objects to store.
    pub fn index_objects(
        &self,
        camera: &str,
        claim: &Claim,
        evidence_id: &str,
        manifest_key: &str,
        manifest_sha256: &str,
        retain_until: DateTime<Utc>,
    ) -> Result<Vec<crate::spool::StoreObject>> {
        let entry = IndexEntry {
            site: self.site.clone(),
            camera: camera.into(),
            seq: claim.link.seq,
            evidence_id: evidence_id.into(),
            manifest_key: manifest_key.into(),
            manifest_sha256: manifest_sha256.into(),
            retain_until_utc: rfc3339(retain_until),
        };
        let (bytes, sig, _) = seal(&entry, &self.signer)?;
        let key = index_key(&self.site, camera, claim.link.seq);
        Ok(vec![(format!("{key}.sig"), sig, retain_until), (key, bytes, retain_until)])
    }

    /// The latest time a position of `camera` was committed here: retention counts from no
    /// earlier (a clock stepped back never shortens it).
    pub async fn clock_floor(&self, camera: &str) -> Option<DateTime<Utc>> {
        self.head(camera).await.ok().and_then(|h| h.at)
    }

    /// Records the manifest at the claimed position as the new head: in memory first (the item
    /// is spooled: its position is used whatever happens to the state file), then in the state
    /// file. A state file that cannot be written (a full disk) is logged; the next start takes the
    /// head from the store and the spool.
    pub fn commit(&self, camera: &str, mut claim: Claim, manifest_sha256: &str) {
        let now = Utc::now();
        let at = claim.guard.as_ref().and_then(|h| h.at).map_or(now, |a| a.max(now));
        let head = Head { seq: claim.link.seq, hash: manifest_sha256.into(), at: Some(at) };
        *claim.guard = Some(head.clone());
        if let Err(e) = self.save_head(camera, &head) {
            tracing::error!(
                camera,
                seq = head.seq,
                error = format!("{e:#}"),
                "chain state file not saved (the item is spooled and its position used; the next start reads the head from the store and the spool)"
            );
        }
    }

    /// Current head of a camera (0 and the genesis hash when it has no items).
    pub async fn head(&self, camera: &str) -> Result<Head> {
        let mut g = self.slot(camera).lock_owned().await;
        if g.is_none() {
            *g = Some(self.load_head(camera).await?);
        }
        Ok(g.clone().expect("head"))
    }

    /// Writes a signed checkpoint of `camera`'s head; returns it with its keys and signature.
    pub async fn checkpoint(&self, camera: &str) -> Result<StoredCheckpoint> {
        self.checkpoint_signed(camera, None).await
    }

    /// The last checkpoint of this worker's key before `next` takes over, signed by both.
    pub async fn handover_checkpoint(&self, camera: &str, next: &Signer) -> Result<StoredCheckpoint> {
        self.checkpoint_signed(camera, Some(next)).await
    }

    /// A create-only write, tried again a few times: a write whose answer was lost finds its own
    /// bytes there and counts as done ([`Store::put_evidence`]), so a checkpoint never stays half
    /// written (its `.json` without its `.sig`).
    async fn put_retried(&self, key: &str, bytes: Bytes, until: DateTime<Utc>) -> Result<Option<String>> {
        let mut wait = std::time::Duration::from_millis(500);
        for _ in 0..3 {
            match self.store.put_evidence(key, bytes.clone(), until).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::warn!(key, error = format!("{e:#}"), "chain checkpoint: write failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        self.store.put_evidence(key, bytes, until).await
    }

    async fn checkpoint_signed(&self, camera: &str, next: Option<&Signer>) -> Result<StoredCheckpoint> {
        let head = self.head(camera).await?;
        let now = Utc::now();
        let cp = Checkpoint {
            schema: "vigil.checkpoint.v1".into(),
            site: self.site.clone(),
            camera: camera.into(),
            last_seq: head.seq,
            last_hash: head.hash,
            time_utc: rfc3339(now),
            key_id: self.signer.key_id.clone(),
            next_key_id: next.map(|n| n.key_id.clone()),
        };
        let (bytes, sig, hash) = seal(&cp, &self.signer)?;
        let cosig = next.map(|n| n.sign(&bytes).to_bytes());
        let key =
            format!("{}{:013}-{:012}.json", checkpoint_prefix(&self.site, camera), now.timestamp_millis(), head.seq);
        let until = crate::util::time::add_days(now, self.evidence_days).context("retention date out of range")?;
        let version = self.put_retried(&key, Bytes::from(bytes), until).await?;
        let sig_key = format!("{key}.sig");
        let signature = SignatureFile::parse(&sig)?;
        let sig_version = self.put_retried(&sig_key, Bytes::from(sig), until).await?;
        let mut stored = vec![(key.clone(), version), (sig_key.clone(), sig_version)];
        if let Some(c) = cosig {
            let k = format!("{key}.next.sig");
            stored.push((k.clone(), self.put_retried(&k, Bytes::from(c), until).await?));
        }
        let here = self.store.reference();
        let objects = stored.into_iter().map(|(k, v)| (k.clone(), here.locate(&k, v))).collect();
        Ok(StoredCheckpoint {
            checkpoint: cp,
            key,
            sha256: hash,
            signature_key: sig_key,
            signature,
            store: here,
            objects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(d: &std::path::Path) -> (Store, Arc<Signer>) {
        let store = Store::open(d.join("store").to_str().unwrap(), &Default::default()).unwrap();
        (store, Arc::new(Signer::init(&d.join("keys")).unwrap()))
    }

    #[tokio::test]
    async fn two_workers_on_one_camera_cannot_take_one_position_the_second_reads_the_head_again() {
        let d = tempfile::tempdir().unwrap();
        let (store, signer) = setup(d.path());
        let until = Utc::now() + chrono::Duration::days(365);
        let a = Chains::new(store.clone(), signer.clone(), "s", &d.path().join("a"), 365).unwrap();
        let b = Chains::new(store.clone(), signer.clone(), "s", &d.path().join("b"), 365).unwrap();
        let patience = std::time::Duration::from_secs(1);
        // both believe the chain is empty and claim seq 1
        let (ca, cb) = (a.claim("cam").await.unwrap(), b.claim("cam").await.unwrap());
        assert_eq!((ca.link.seq, cb.link.seq), (1, 1));
        let ia = a.index_objects("cam", &ca, "A", "ma", "aa", until).unwrap();
        let ib = b.index_objects("cam", &cb, "B", "mb", "bb", until).unwrap();
        assert!(matches!(a.reserve(&ia, patience).await, Reserved::Yes));
        assert!(
            matches!(a.reserve(&ia, patience).await, Reserved::Yes),
            "a retry of the same entry is the same reservation"
        );
        assert!(matches!(b.reserve(&ib, patience).await, Reserved::Taken), "a second item at seq 1 is refused");
        a.commit("cam", ca, "aa");
        cb.forget();
        // b reads the head from the store and takes the next position, linked to a's item
        let cb = b.claim("cam").await.unwrap();
        assert_eq!((cb.link.seq, cb.link.prev_hash.as_str()), (2, "aa"));
        let ib = b.index_objects("cam", &cb, "B", "mb", "bb", until).unwrap();
        assert!(matches!(b.reserve(&ib, patience).await, Reserved::Yes));
        assert_eq!(a.read_index("cam", 1).await.unwrap().evidence_id, "A");
        assert_eq!(b.read_index("cam", 2).await.unwrap().evidence_id, "B");
    }

    #[tokio::test]
    async fn positions_follow_commits_and_the_head_comes_back_from_the_store() {
        let d = tempfile::tempdir().unwrap();
        let (store, signer) = setup(d.path());
        let chains = Chains::new(store.clone(), signer.clone(), "s", &d.path().join("data"), 365).unwrap();
        let until = Utc::now() + chrono::Duration::days(365);
        for (i, hash) in ["aa", "bb", "cc"].iter().enumerate() {
            let c = chains.claim("cam").await.unwrap();
            assert_eq!(c.link.seq, i as u64 + 1);
            assert_eq!(c.link.prev_hash, if i == 0 { GENESIS.to_string() } else { ["aa", "bb"][i - 1].to_string() });
            for (k, b, _) in chains.index_objects("cam", &c, &format!("id{i}"), "m", hash, until).unwrap() {
                store.put_new(&k, Bytes::from(b)).await.unwrap();
            }
            chains.commit("cam", c, hash);
        }
        // a dropped claim gives its position back
        let c = chains.claim("cam").await.unwrap();
        assert_eq!(c.link.seq, 4);
        drop(c);
        assert_eq!(chains.claim("cam").await.unwrap().link.seq, 4);
        // the local state is lost: a new instance finds the head in the store
        std::fs::remove_dir_all(d.path().join("data/chain")).unwrap();
        let again = Chains::new(store.clone(), signer.clone(), "s", &d.path().join("data"), 365).unwrap();
        assert_eq!(again.head("cam").await.unwrap(), Head { seq: 3, hash: "cc".into(), at: None });
        let e = again.read_index("cam", 2).await.unwrap();
        assert_eq!((e.evidence_id.as_str(), e.manifest_sha256.as_str()), ("id1", "bb"));
        // a checkpoint is stored signed, and its event carries what a consumer needs to verify it
        let cp = again.checkpoint("cam").await.unwrap();
        assert_eq!((cp.checkpoint.last_seq, cp.checkpoint.last_hash.as_str()), (3, "cc"));
        let pk = signer.public_key();
        let bytes = store.get(&cp.key).await.unwrap();
        let back: Checkpoint = open(&bytes, &store.get(&cp.signature_key).await.unwrap(), &pk).unwrap();
        assert_eq!(back, cp.checkpoint);
        let ev = cp.event();
        let canonical = crate::util::jcs::canonical(&serde_json::to_value(&ev.checkpoint).unwrap());
        pk.verify(&canonical, &ev.signature).unwrap();
        assert_eq!(crate::util::sha256_hex(&canonical), ev.sha256);
    }
}
