//! Verification of stored evidence, for reviewers and auditors: re-hash every artifact, check every
//! signature, walk each camera's chain (gaps, reorderings, duplicates, forks, broken links) and
//! compare it with the latest signed checkpoint. Needs only the store and the public key.
//!
//! Also the reviewer's tools built on it: `evidence list`, `evidence get` (verifies before writing
//! anything) and `evidence unseal`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::evidence::Manifest;
use crate::evidence::manifest::ItemFile;
use crate::signing::{PublicKey, open};
use crate::store::Store;
use crate::util::sha256_hex;

mod chain;
pub mod reviewer;
pub mod reviews;
mod stream;

pub use reviewer::{Fetched, ListFilter, Listed, get, list, unseal};

/// One thing found wrong.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    pub camera: String,
    pub evidence_id: Option<String>,
    pub seq: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "camera {}", self.camera)?;
        if let Some(s) = self.seq {
            write!(f, " seq {s}")?;
        }
        if let Some(id) = &self.evidence_id {
            write!(f, " evidence {id}")?;
        }
        write!(f, ": {}", self.what)
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ChainSummary {
    pub site: String,
    pub camera: String,
    pub items: usize,
    pub last_seq: u64,
    pub checkpoint_seq: Option<u64>,
    pub checkpoint_time_utc: Option<String>,
    pub expired: Vec<u64>,
    /// The evidence ids of the expired positions.
    #[serde(skip)]
    pub expired_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub store: String,
    pub key_id: String,
    pub items_checked: usize,
    pub artifacts_checked: usize,
    pub chains: Vec<ChainSummary>,
    pub warnings: Vec<String>,
    pub problems: Vec<Problem>,
    /// Each item's review status, from its signed review records (when a review key was given).
    pub reviews: Vec<reviews::ItemReview>,
    /// Entries of the review service's access log checked.
    pub access_log_entries: usize,
    /// The independent copies the store was compared with (the stream's checkpoints and
    /// events, the access log's published head).
    pub checked_against: Vec<String>,
    pub ok: bool,
}

impl Report {
    pub fn human(&self) -> String {
        let mut s = format!("store {}  (trusted key {})\n", self.store, self.key_id);
        for c in &self.chains {
            s += &format!(
                "chain {}/{}: {} item(s), last seq {}, checkpoint {}{}\n",
                c.site,
                c.camera,
                c.items,
                c.last_seq,
                match (&c.checkpoint_seq, &c.checkpoint_time_utc) {
                    (Some(q), Some(t)) => format!("seq {q} at {t}"),
                    _ => "none".into(),
                },
                if c.expired.is_empty() {
                    String::new()
                } else {
                    format!(", expired under retention: {:?}", c.expired)
                }
            );
        }
        s += &format!("{} item(s) and {} artifact(s) checked\n", self.items_checked, self.artifacts_checked);
        for r in &self.reviews {
            s += &format!("review {}: {} ({} decision(s))\n", r.evidence_id, r.status.name(), r.decisions);
        }
        if self.access_log_entries > 0 {
            s += &format!("access log: {} entries, chain and signatures checked\n", self.access_log_entries);
        }
        for c in &self.checked_against {
            s += &format!("compared with {c}\n");
        }
        for w in &self.warnings {
            s += &format!("WARNING {w}\n");
        }
        for p in &self.problems {
            s += &format!("FAIL {p}\n");
        }
        s += if self.ok { "OK: every artifact, signature and chain link verified\n" } else { "FAILED\n" };
        s
    }
}

/// Which part of the store to verify.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub evidence_id: Option<String>,
    pub camera: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// An evidence item as found in the store.
#[derive(Debug, Clone)]
pub struct Item {
    pub site: String,
    pub camera: String,
    pub id: String,
    pub prefix: String,
    pub files: BTreeSet<String>,
    pub manifest: Option<Manifest>,
    pub manifest_hash: Option<String>,
    /// Problems with the item itself (manifest, signature, artifacts).
    pub problems: Vec<String>,
    /// Review record files under `reviews/` (`0001.json`, `0001.sig`, ...).
    pub reviews: BTreeSet<String>,
}

/// Lists evidence items (`evidence/<site>/<camera>/<y>/<m>/<d>/<id>/<file>`).
pub async fn list_items(store: &Store) -> Result<Vec<Item>> {
    let mut by_dir: BTreeMap<String, Item> = BTreeMap::new();
    for key in store.list("evidence/").await? {
        let parts: Vec<&str> = key.split('/').collect();
        let review = parts.len() == 9 && parts[7] == "reviews";
        if parts.len() != 8 && !review {
            continue;
        }
        let prefix = parts[..7].join("/");
        let it = by_dir.entry(prefix.clone()).or_insert_with(|| Item {
            site: parts[1].into(),
            camera: parts[2].into(),
            id: parts[6].into(),
            prefix,
            files: BTreeSet::new(),
            manifest: None,
            manifest_hash: None,
            problems: Vec::new(),
            reviews: BTreeSet::new(),
        });
        if review {
            it.reviews.insert(parts[8].into());
        } else {
            it.files.insert(parts[7].into());
        }
    }
    Ok(by_dir.into_values().collect())
}

/// The stored bytes of an artifact a signed manifest names, when they still have its SHA-256
/// (`None`: they differ from the manifest).
pub async fn read_artifact(store: &Store, a: &crate::evidence::manifest::Artifact) -> Result<Option<bytes::Bytes>> {
    let bytes = store.get(&a.key).await?;
    Ok((sha256_hex(&bytes) == a.sha256).then_some(bytes))
}

/// Reads and checks an item's manifest and signature (not the artifacts).
pub async fn load_manifest(store: &Store, key: &PublicKey, it: &mut Item) {
    let (mf, sf) = (ItemFile::Manifest.file_name(), ItemFile::Signature.file_name());
    let (m, s) = (format!("{}/{mf}", it.prefix), format!("{}/{sf}", it.prefix));
    if !it.files.contains(mf) {
        it.problems.push("manifest.json is missing".into());
        return;
    }
    let bytes = match store.get(&m).await {
        Ok(b) => b,
        Err(e) => return it.problems.push(format!("manifest.json unreadable: {e:#}")),
    };
    it.manifest_hash = Some(sha256_hex(&bytes));
    let parsed: Option<Manifest> = serde_json::from_slice(&bytes).ok();
    let sig = if it.files.contains(sf) { store.get(&s).await.ok() } else { None };
    match sig {
        None => it.problems.push("manifest.sig is missing".into()),
        Some(sig) => {
            if let Err(e) = open::<Manifest>(&bytes, &sig, key) {
                it.problems.push(format!("manifest.json / manifest.sig: {e:#}"));
            } else if let Some(man) = &parsed {
                // a key signs only in its period (after a rotation, earlier keys are trusted for theirs)
                let at = man.chain.committed_utc.as_deref().unwrap_or(&man.violation_time_utc);
                if let Ok(t) = chrono::DateTime::parse_from_rfc3339(at)
                    && let Err(e) = key.check_period(&man.signing.key_id, t.with_timezone(&chrono::Utc))
                {
                    it.problems.push(format!("manifest.sig: {e:#}"));
                }
                if let Some(p) = crate::signing::sm2_pin_problem(&sig, man.signing.sm2_key_id.as_deref()) {
                    it.problems.push(format!("manifest.sig: {p}"));
                }
            }
        }
    }
    match parsed {
        None => {
            let why = serde_json::from_slice::<Manifest>(&bytes).err().map(|e| e.to_string()).unwrap_or_default();
            it.problems.push(format!("manifest.json is not a readable manifest ({why})"));
        }
        Some(man) => {
            if man.evidence_id != it.id || man.camera != it.camera || man.site != it.site {
                it.problems.push(format!(
                    "stored under {}/{}/{} but the manifest is for {}/{}/{} (items moved or swapped)",
                    it.site, it.camera, it.id, man.site, man.camera, man.evidence_id
                ));
            }
            it.manifest = Some(man);
        }
    }
}

/// Re-hashes an item's artifacts against its manifest. Returns how many were checked.
/// Artifacts of all items by SHA-256: (evidence id, seq, file), to tell a file replaced by
/// another item's from one altered.
pub type ArtifactIndex = BTreeMap<String, (String, u64, String)>;

/// The artifact index of `items`.
pub fn artifact_index(items: &[Item]) -> ArtifactIndex {
    let mut ix = ArtifactIndex::new();
    for it in items {
        if let Some(m) = &it.manifest {
            for a in m.artifacts.values() {
                let file = a.key.rsplit('/').next().unwrap_or_default().to_string();
                ix.insert(a.sha256.clone(), (it.id.clone(), m.chain.seq, file));
            }
        }
    }
    ix
}

/// Re-hashes an item's artifacts against its manifest; a file that is another item's (by
/// `others`) is named as such. Returns how many were checked.
pub async fn check_artifacts(store: &Store, it: &mut Item, others: &ArtifactIndex) -> usize {
    let Some(man) = it.manifest.clone() else { return 0 };
    let mut n = 0;
    for (name, a) in &man.artifacts {
        let file = a.key.rsplit('/').next().unwrap_or_default().to_string();
        if !a.key.starts_with(&format!("{}/", it.prefix)) {
            it.problems.push(format!("artifact {name} points outside the item: {}", a.key));
            continue;
        }
        n += 1;
        match store.get(&a.key).await {
            Err(_) => it.problems.push(format!("{file} is missing")),
            Ok(b) => {
                let h = sha256_hex(&b);
                if h != a.sha256
                    && let Some((id, seq, other)) = others.get(&h)
                    && id != &it.id
                {
                    it.problems.push(format!(
                        "{file} is a copy of {other} of evidence {id} (seq {seq}): replaced by another item's file"
                    ));
                } else if h != a.sha256 {
                    it.problems.push(format!(
                        "{file}: SHA-256 is {}…, the manifest says {}… ({} bytes, manifest {} bytes): content altered",
                        &h[..16],
                        &a.sha256[..16.min(a.sha256.len())],
                        b.len(),
                        a.bytes
                    ));
                } else if b.len() as u64 != a.bytes {
                    it.problems.push(format!("{file}: {} bytes, the manifest says {}", b.len(), a.bytes));
                } else if let Some(p) = sm3_problem(&b, a) {
                    it.problems.push(format!("{file}: {p}"));
                }
            }
        }
    }
    let listed: BTreeSet<String> =
        man.artifacts.values().filter_map(|a| a.key.rsplit('/').next().map(str::to_string)).collect();
    for f in &it.files {
        if f != ItemFile::Manifest.file_name() && f != ItemFile::Signature.file_name() && !listed.contains(f) {
            it.problems.push(format!("{f} is in the item but not in its manifest"));
        }
    }
    n
}

/// The artifact's SM3 digest against `bytes`, when the manifest gives one (counted in
/// [`SM3_CHECKED`]); the problem if they differ.
pub fn sm3_problem(bytes: &[u8], a: &crate::evidence::manifest::Artifact) -> Option<String> {
    let want = a.sm3.as_deref()?;
    SM3_CHECKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let h = crate::signing::sm2::sm3_hex(bytes);
    (h != want)
        .then(|| format!("SM3 is {}…, the manifest says {}…: content altered", &h[..16], &want[..16.min(want.len())]))
}

/// SM3 digests checked by this process (for the report).
pub static SM3_CHECKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) async fn read_signed<T: for<'de> serde::Deserialize<'de>>(
    store: &Store,
    key: &PublicKey,
    k: &str,
) -> Result<T> {
    let bytes = store.get(k).await?;
    let sig = store.get(&format!("{k}.sig")).await.map_err(|_| anyhow!("{k}.sig is missing"))?;
    open(&bytes, &sig, key).with_context(|| k.to_string())
}

/// Verifies the store (or the part `scope` names).
pub async fn verify(store: &Store, key: &PublicKey, scope: &Scope, now: DateTime<Utc>) -> Result<Report> {
    Ok(verify_items(store, key, scope, now).await?.0)
}

/// [`verify`], and with the review service's key also every item's review records (signatures,
/// order, links, the manifest they decided on, the status they claim) and the access log.
pub async fn verify_with_reviews(
    store: &Store,
    key: &PublicKey,
    review_key: Option<&PublicKey>,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Result<Report> {
    verify_against(store, key, review_key, None, scope, now).await
}

/// [`verify_with_reviews`], and with NATS (endpoint, stream) also against what the stream holds:
/// each camera's newest checkpoint and evidence event, and the access log's published head, so
/// that removing the newest items (with their index entries and checkpoints) or the newest log
/// entries from the store shows.
pub async fn verify_against(
    store: &Store,
    key: &PublicKey,
    review_key: Option<&PublicKey>,
    nats: Option<&(crate::util::nats::Endpoint, String)>,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Result<Report> {
    let (mut report, items) = verify_items(store, key, scope, now).await?;
    if let Some(n) = nats {
        stream::compare_chains(&mut report, key, n).await;
    }
    let reviewed = items.iter().any(|i| !i.reviews.is_empty());
    let Some(rk) = review_key else {
        if reviewed {
            report.problems.push(Problem {
                camera: "-".into(),
                evidence_id: None,
                seq: None,
                what: "review records present, but no trusted review key to check them (--review-key, or `review.pub` beside the pipeline's `[review] key`): no item is shown as approved".into(),
            });
            report.ok = false;
        }
        return Ok(report);
    };
    // the access logs first: they commit to decisions and name the items officers saw
    let logs = access_logs(store, rk, nats, &items, &mut report).await?;
    let mut by_item: BTreeMap<&str, Vec<&crate::audit_log::AccessEntry>> = BTreeMap::new();
    for e in logs.iter().flat_map(|l| &l.entries) {
        if let Some(id) = &e.evidence_id {
            by_item.entry(id.as_str()).or_default().push(e);
        }
    }
    for it in &items {
        if scope.evidence_id.as_ref().is_some_and(|id| id != &it.id) || it.manifest.is_none() {
            continue;
        }
        let (records, hashes, mut problems) = reviews::read_records_hashed(store, rk, it).await;
        let logged = by_item.get(it.id.as_str()).cloned().unwrap_or_default();
        let (p, w) = reviews::check_against_log(&records, &hashes, &logged);
        problems.extend(p);
        report.warnings.extend(w.into_iter().map(|w| format!("evidence {}: {w}", it.id)));
        // the worker pinned the review keys that may decide on this item
        if let Some(pins) = it.manifest.as_ref().and_then(|m| m.signing.review_key_ids.as_ref()) {
            for r in &records {
                if !pins.contains(&r.key_id) {
                    problems.push(format!(
                        "review record {:04}: signed by review key {}, which the worker-signed manifest does not pin ({})",
                        r.n,
                        r.key_id,
                        pins.join(", ")
                    ));
                }
            }
        }
        for p in problems {
            report.problems.push(Problem {
                camera: it.camera.clone(),
                evidence_id: Some(it.id.clone()),
                seq: None,
                what: p,
            });
        }
        report.reviews.push(reviews::ItemReview {
            evidence_id: it.id.clone(),
            status: crate::evidence::review::status(&records),
            decisions: records.len(),
        });
    }
    // an item the access log names must still be in the store, unless retention removed it
    if scope.evidence_id.is_none() && scope.camera.is_none() {
        let stored: BTreeSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        let expired: BTreeSet<&str> =
            report.chains.iter().flat_map(|c| c.expired_ids.iter().map(String::as_str)).collect();
        for (id, entries) in &by_item {
            if !stored.contains(id) && !expired.contains(id) {
                let e = entries[0];
                report.problems.push(Problem {
                    camera: "-".into(),
                    evidence_id: Some(id.to_string()),
                    seq: None,
                    what: format!(
                        "named in the signed access log (entry {}, {:?} at {}) but not in the store, and no retention removed it (item deleted)",
                        e.seq, e.action, e.time_utc
                    ),
                });
            }
        }
    }
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// The access log of every site `items` are of, checked (and against the stream's published head
/// when `nats` is given); their problems and what they were compared with go into `report`.
async fn access_logs(
    store: &Store,
    rk: &PublicKey,
    nats: Option<&(crate::util::nats::Endpoint, String)>,
    items: &[Item],
    report: &mut Report,
) -> Result<Vec<crate::audit_log::LogReport>> {
    let sites: BTreeSet<String> = items.iter().map(|i| i.site.clone()).collect();
    let mut logs = Vec::new();
    for site in sites {
        let mut log = crate::audit_log::read(store, rk, &site).await?;
        if let Some((n, stream)) = nats
            && let Err(e) = crate::audit_log::check_stream_head(store, &mut log, (n, stream), &site, rk).await
        {
            report.warnings.push(format!("access log of {site}: not compared with the stream: {e:#}"));
        }
        report.access_log_entries += log.entries.len();
        if let Some(h) = &log.head_checked {
            report.checked_against.push(format!("access log of {site}: head {h}"));
        }
        for p in &log.problems {
            report.problems.push(Problem {
                camera: "-".into(),
                evidence_id: None,
                seq: None,
                what: format!("access log: {p}"),
            });
        }
        logs.push(log);
    }
    Ok(logs)
}

/// One item verified now: its own problems and those of its chain position.
pub struct ItemCheck {
    pub item: Item,
    pub problems: Vec<String>,
    /// Problems elsewhere in the item's chain that do not touch the item itself.
    pub warnings: Vec<String>,
}

/// Verifies one item (artifacts, signature, chain position); `None` when it is not in the store.
pub async fn find_and_verify_item(
    store: &Store,
    key: &PublicKey,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<ItemCheck>> {
    if !list_items(store).await?.iter().any(|i| i.id == id) {
        return Ok(None);
    }
    verify_item(store, key, id, now).await.map(Some)
}

/// Verifies one item (artifacts, signature, chain position).
pub async fn verify_item(store: &Store, key: &PublicKey, id: &str, now: DateTime<Utc>) -> Result<ItemCheck> {
    let scope = Scope { evidence_id: Some(id.into()), ..Default::default() };
    let (report, items) = verify_items(store, key, &scope, now).await?;
    let item = items.into_iter().find(|i| i.id == id).ok_or_else(|| anyhow!("evidence {id} is not in the store"))?;
    let seq = item.manifest.as_ref().map(|m| m.chain.seq);
    let problems = reviewer::problems_of(&report, id, seq);
    let warnings = report.problems.iter().map(|p| p.to_string()).filter(|p| !problems.contains(p)).collect();
    Ok(ItemCheck { item, problems, warnings })
}

/// [`verify`], also returning the items it looked at, manifests loaded.
pub(crate) async fn verify_items(
    store: &Store,
    key: &PublicKey,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Result<(Report, Vec<Item>)> {
    let mut items = list_items(store).await?;
    let chain_keys = store.list("chain/").await?;
    if items.is_empty() && chain_keys.is_empty() {
        bail!("store {} holds no vigil evidence (no evidence/ or chain/ objects)", store.url);
    }
    if let Some(id) = &scope.evidence_id {
        let Some(it) = items.iter().find(|i| &i.id == id) else {
            bail!("evidence {id} is not in store {}", store.url);
        };
        let cam = it.camera.clone();
        items.retain(|i| i.camera == cam);
    }
    if let Some(c) = &scope.camera {
        let known: BTreeSet<String> = items
            .iter()
            .map(|i| i.camera.clone())
            .chain(chain_keys.iter().filter_map(|k| k.split('/').nth(2).map(str::to_string)))
            .collect();
        if !known.contains(c) {
            bail!(
                "camera {:?} has no evidence and no chain in store {} (cameras there: {})",
                crate::util::printable(c, 64),
                store.url,
                known.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        items.retain(|i| &i.camera == c);
    }
    let mut report = Report { store: store.url.clone(), key_id: key.key_id.clone(), ..Default::default() };
    for e in store.foreign_entries() {
        report.problems.push(Problem {
            camera: "-".into(),
            evidence_id: None,
            seq: None,
            what: format!("{e} in the store: vigil never writes one, and never follows it"),
        });
    }
    for it in &mut items {
        load_manifest(store, key, it).await;
    }
    // artifacts: only for the items in scope
    let others = artifact_index(&items);
    for it in &mut items {
        let in_scope = match (&scope.evidence_id, &it.manifest) {
            (Some(id), _) => &it.id == id,
            (None, Some(m)) => {
                let t = DateTime::parse_from_rfc3339(&m.violation_time_utc).map(|t| t.with_timezone(&Utc)).ok();
                scope.from.is_none_or(|f| t.is_some_and(|t| t >= f))
                    && scope.to.is_none_or(|e| t.is_some_and(|t| t <= e))
            }
            (None, None) => true,
        };
        if in_scope {
            report.items_checked += 1;
            report.artifacts_checked += check_artifacts(store, it, &others).await;
            for p in it.problems.drain(..) {
                let seq = it.manifest.as_ref().map(|m| m.chain.seq);
                report.problems.push(Problem {
                    camera: it.camera.clone(),
                    evidence_id: Some(it.id.clone()),
                    seq,
                    what: p,
                });
            }
        }
    }
    // chains
    let mut cams: BTreeMap<(String, String), Vec<&Item>> = BTreeMap::new();
    for it in &items {
        cams.entry((it.site.clone(), it.camera.clone())).or_default().push(it);
    }
    for k in &chain_keys {
        let p: Vec<&str> = k.split('/').collect();
        if p.len() >= 3 && scope.camera.as_ref().is_none_or(|c| c == p[2]) {
            if let Some(id) = &scope.evidence_id
                && !items.iter().any(|i| i.camera == p[2] && &i.id == id)
            {
                continue;
            }
            cams.entry((p[1].into(), p[2].into())).or_default();
        }
    }
    for ((site, camera), its) in cams {
        let (summary, problems, warnings) = chain::walk_chain(store, key, &site, &camera, &its, &chain_keys, now).await;
        report.chains.push(summary);
        report.problems.extend(problems);
        report.warnings.extend(warnings);
    }
    report.ok = report.problems.is_empty();
    Ok((report, items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_ok_only_without_problems_and_names_each_one() {
        let mut r = Report {
            store: "s".into(),
            key_id: "k".into(),
            items_checked: 2,
            artifacts_checked: 6,
            ..Default::default()
        };
        r.ok = r.problems.is_empty();
        assert!(r.human().ends_with("OK: every artifact, signature and chain link verified\n"));
        r.problems.push(Problem {
            camera: "c".into(),
            evidence_id: Some("01X".into()),
            seq: Some(3),
            what: "clip.mp4 is missing".into(),
        });
        r.ok = r.problems.is_empty();
        let h = r.human();
        assert!(h.contains("FAIL camera c seq 3 evidence 01X: clip.mp4 is missing") && h.ends_with("FAILED\n"), "{h}");
        let ix = artifact_index(&[]);
        assert!(ix.is_empty());
    }
}
