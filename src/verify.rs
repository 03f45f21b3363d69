//! Verification of stored evidence, for reviewers and auditors: re-hash every artifact, check every
//! signature, walk each camera's chain (gaps, reorderings, duplicates, forks, broken links) and
//! compare it with the latest signed checkpoint. Needs only the store and the public key.
//!
//! Also the reviewer's tools built on it: `evidence list`, `evidence get` (verifies before writing
//! anything) and `evidence unseal`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::chain::{Checkpoint, GENESIS, IndexEntry, checkpoint_prefix};
use crate::evidence::{Manifest, sha256_hex};
use crate::manifest::{PublicKey, open};
use crate::store::Store;

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
}

/// Lists evidence items (`evidence/<site>/<camera>/<y>/<m>/<d>/<id>/<file>`).
pub async fn list_items(store: &Store) -> Result<Vec<Item>> {
    let mut by_dir: BTreeMap<String, Item> = BTreeMap::new();
    for key in store.list("evidence/").await? {
        let parts: Vec<&str> = key.split('/').collect();
        if parts.len() != 8 {
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
        });
        it.files.insert(parts[7].into());
    }
    Ok(by_dir.into_values().collect())
}

/// Reads and checks an item's manifest and signature (not the artifacts).
pub async fn load_manifest(store: &Store, key: &PublicKey, it: &mut Item) {
    let (m, s) = (format!("{}/manifest.json", it.prefix), format!("{}/manifest.sig", it.prefix));
    if !it.files.contains("manifest.json") {
        it.problems.push("manifest.json is missing".into());
        return;
    }
    let bytes = match store.get(&m).await {
        Ok(b) => b,
        Err(e) => return it.problems.push(format!("manifest.json unreadable: {e:#}")),
    };
    it.manifest_hash = Some(sha256_hex(&bytes));
    let parsed: Option<Manifest> = serde_json::from_slice(&bytes).ok();
    let sig = if it.files.contains("manifest.sig") { store.get(&s).await.ok() } else { None };
    match sig {
        None => it.problems.push("manifest.sig is missing".into()),
        Some(sig) => {
            if let Err(e) = open::<Manifest>(&bytes, &sig, key) {
                it.problems.push(format!("manifest.json / manifest.sig: {e:#}"));
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
pub async fn check_artifacts(store: &Store, it: &mut Item) -> usize {
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
                if h != a.sha256 {
                    it.problems.push(format!(
                        "{file}: SHA-256 is {}…, the manifest says {}… ({} bytes, manifest {} bytes): content altered or replaced",
                        &h[..16],
                        &a.sha256[..16.min(a.sha256.len())],
                        b.len(),
                        a.bytes
                    ));
                } else if b.len() as u64 != a.bytes {
                    it.problems.push(format!("{file}: {} bytes, the manifest says {}", b.len(), a.bytes));
                }
            }
        }
    }
    let listed: BTreeSet<String> =
        man.artifacts.values().filter_map(|a| a.key.rsplit('/').next().map(str::to_string)).collect();
    for f in &it.files {
        if f != "manifest.json" && f != "manifest.sig" && !listed.contains(f) {
            it.problems.push(format!("{f} is in the item but not in its manifest"));
        }
    }
    n
}

async fn read_signed<T: for<'de> serde::Deserialize<'de>>(store: &Store, key: &PublicKey, k: &str) -> Result<T> {
    let bytes = store.get(k).await?;
    let sig = store.get(&format!("{k}.sig")).await.map_err(|_| anyhow!("{k}.sig is missing"))?;
    open(&bytes, &sig, key).with_context(|| k.to_string())
}

/// Verifies the store (or the part `scope` names).
pub async fn verify(store: &Store, key: &PublicKey, scope: &Scope, now: DateTime<Utc>) -> Result<Report> {
    Ok(verify_items(store, key, scope, now).await?.0)
}

/// [`verify`], also returning the items it looked at, manifests loaded.
async fn verify_items(
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
        items.retain(|i| &i.camera == c);
    }
    let mut report = Report { store: store.url.clone(), key_id: key.key_id.clone(), ..Default::default() };
    for it in &mut items {
        load_manifest(store, key, it).await;
    }
    // artifacts: only for the items in scope
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
            report.artifacts_checked += check_artifacts(store, it).await;
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
        let (summary, problems, warnings) = walk_chain(store, key, &site, &camera, &its, &chain_keys, now).await;
        report.chains.push(summary);
        report.problems.extend(problems);
        report.warnings.extend(warnings);
    }
    report.ok = report.problems.is_empty();
    Ok((report, items))
}

async fn walk_chain(
    store: &Store,
    key: &PublicKey,
    site: &str,
    camera: &str,
    items: &[&Item],
    chain_keys: &[String],
    now: DateTime<Utc>,
) -> (ChainSummary, Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let prob = |seq: Option<u64>, id: Option<&str>, what: String| Problem {
        camera: camera.into(),
        evidence_id: id.map(str::to_string),
        seq,
        what,
    };
    // index entries
    let idx_prefix = format!("chain/{site}/{camera}/seq/");
    let mut index: BTreeMap<u64, IndexEntry> = BTreeMap::new();
    for k in chain_keys.iter().filter(|k| k.starts_with(&idx_prefix) && k.ends_with(".json")) {
        match read_signed::<IndexEntry>(store, key, k).await {
            Ok(e) => {
                index.insert(e.seq, e);
            }
            Err(e) => problems.push(prob(None, None, format!("chain index entry {k}: {e:#}"))),
        }
    }
    // manifests by seq
    let mut by_seq: BTreeMap<u64, Vec<&Item>> = BTreeMap::new();
    for it in items {
        if let Some(m) = &it.manifest {
            by_seq.entry(m.chain.seq).or_default().push(it);
        }
    }
    for (seq, its) in &by_seq {
        if its.len() > 1 {
            let ids: Vec<&str> = its.iter().map(|i| i.id.as_str()).collect();
            problems.push(prob(
                Some(*seq),
                None,
                format!("fork: {} manifests claim this position: {}", its.len(), ids.join(", ")),
            ));
        }
    }
    let hash_of = |seq: u64| -> Option<String> {
        match by_seq.get(&seq) {
            Some(v) if v.len() == 1 => v[0].manifest_hash.clone(),
            _ => index.get(&seq).map(|e| e.manifest_sha256.clone()),
        }
    };
    // checkpoint
    let cp_prefix = checkpoint_prefix(site, camera);
    let mut cp_keys: Vec<&String> =
        chain_keys.iter().filter(|k| k.starts_with(&cp_prefix) && k.ends_with(".json")).collect();
    cp_keys.sort();
    let mut checkpoint: Option<Checkpoint> = None;
    for k in cp_keys.iter().rev() {
        match read_signed::<Checkpoint>(store, key, k).await {
            Ok(c) => {
                checkpoint = Some(c);
                break;
            }
            Err(e) => problems.push(prob(None, None, format!("checkpoint {k}: {e:#}"))),
        }
    }
    let max_item = by_seq.keys().next_back().copied().unwrap_or(0);
    let max_index = index.keys().next_back().copied().unwrap_or(0);
    let last = max_item.max(max_index).max(checkpoint.as_ref().map_or(0, |c| c.last_seq));
    let mut expired = Vec::new();
    for seq in 1..=last {
        let here = by_seq.get(&seq);
        let idx = index.get(&seq);
        match (here, idx) {
            (None, Some(e)) => {
                let until = DateTime::parse_from_rfc3339(&e.retain_until_utc).map(|t| t.with_timezone(&Utc));
                if until.is_ok_and(|u| u <= now) {
                    expired.push(seq);
                } else if seq > max_item {
                    problems.push(prob(Some(seq), Some(&e.evidence_id), format!(
                        "missing from the end of the chain: the chain index and {} say it exists, its manifest is gone (item deleted)",
                        checkpoint.as_ref().map_or("nothing else".to_string(), |c| format!("the checkpoint of {} (last seq {})", c.time_utc, c.last_seq))
                    )));
                } else {
                    problems.push(prob(Some(seq), Some(&e.evidence_id), "missing from the middle of the chain: the chain index names it, its manifest is gone (item deleted)".into()));
                }
            }
            (None, None) => {
                let what = if seq > max_item {
                    format!(
                        "missing from the end of the chain: the checkpoint of {} says the chain reached seq {}, the store ends at seq {max_item}",
                        checkpoint.as_ref().map_or("?", |c| c.time_utc.as_str()),
                        checkpoint.as_ref().map_or(0, |c| c.last_seq)
                    )
                } else {
                    "gap in the chain: no manifest and no index entry for this position (item deleted)".into()
                };
                problems.push(prob(Some(seq), None, what));
            }
            (Some(its), idx) => {
                for it in its {
                    let m = it.manifest.as_ref().expect("manifest");
                    if let Some(e) = idx {
                        if e.evidence_id != it.id {
                            problems.push(prob(Some(seq), Some(&it.id), format!("the chain index gives this position to evidence {}, not to this item (reordered or swapped)", e.evidence_id)));
                        } else if Some(&e.manifest_sha256) != it.manifest_hash.as_ref() {
                            problems.push(prob(
                                Some(seq),
                                Some(&it.id),
                                "the manifest differs from the one recorded in the chain index (manifest replaced)"
                                    .into(),
                            ));
                        }
                    }
                    let expect = if seq == 1 { Some(GENESIS.to_string()) } else { hash_of(seq - 1) };
                    match expect {
                        Some(h) if h != m.chain.prev_hash => problems.push(prob(
                            Some(seq),
                            Some(&it.id),
                            format!(
                                "chain broken: prev_hash {}… does not match the manifest at seq {} ({}…)",
                                &m.chain.prev_hash[..16.min(m.chain.prev_hash.len())],
                                seq - 1,
                                &h[..16]
                            ),
                        )),
                        _ => {}
                    }
                }
            }
        }
    }
    // ordering: violation times must not go backwards by more than a clip length along the chain
    let mut prev: Option<(u64, DateTime<Utc>)> = None;
    for (seq, its) in &by_seq {
        let Some(t) = its[0].manifest.as_ref().and_then(|m| DateTime::parse_from_rfc3339(&m.violation_time_utc).ok())
        else {
            continue;
        };
        let t = t.with_timezone(&Utc);
        if let Some((ps, pt)) = prev
            && t + chrono::Duration::seconds(120) < pt
        {
            problems.push(prob(
                Some(*seq),
                Some(&its[0].id),
                format!("reordered: its violation time {t} is before that of seq {ps} ({pt})"),
            ));
        }
        prev = Some((*seq, t));
    }
    match &checkpoint {
        None if last > 0 => warnings.push(format!(
            "camera {camera}: no signed checkpoint in the store; removal of the newest items can only be detected against a published checkpoint"
        )),
        Some(c) => {
            if let Some(h) = hash_of(c.last_seq)
                && h != c.last_hash
                && !expired.contains(&c.last_seq)
            {
                problems.push(prob(Some(c.last_seq), None, format!("differs from the checkpoint of {}: chain rewritten", c.time_utc)));
            }
        }
        None => {}
    }
    let summary = ChainSummary {
        site: site.into(),
        camera: camera.into(),
        items: by_seq.values().map(Vec::len).sum(),
        last_seq: last,
        checkpoint_seq: checkpoint.as_ref().map(|c| c.last_seq),
        checkpoint_time_utc: checkpoint.map(|c| c.time_utc),
        expired,
    };
    (summary, problems, warnings)
}

/// Filters for `evidence list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub site: Option<String>,
    pub camera: Option<String>,
    pub rule: Option<String>,
    pub status: Option<String>,
    pub admissible: Option<bool>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub evidence_id: String,
    pub site: String,
    pub camera: String,
    pub violation_time_utc: String,
    pub rule: String,
    pub status: String,
    pub admissible: bool,
    pub chain_seq: u64,
    pub signature_ok: bool,
}

pub async fn list(store: &Store, key: &PublicKey, f: &ListFilter) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for mut it in list_items(store).await? {
        if f.site.as_ref().is_some_and(|s| s != &it.site) || f.camera.as_ref().is_some_and(|c| c != &it.camera) {
            continue;
        }
        load_manifest(store, key, &mut it).await;
        let Some(m) = &it.manifest else { continue };
        let t = DateTime::parse_from_rfc3339(&m.violation_time_utc).map(|t| t.with_timezone(&Utc)).ok();
        let keep = f.rule.as_ref().is_none_or(|r| r == &m.rule.id)
            && f.status.as_ref().is_none_or(|s| s == &m.status.kind)
            && f.admissible.is_none_or(|a| a == m.admissibility.admissible)
            && f.from.is_none_or(|x| t.is_some_and(|t| t >= x))
            && f.to.is_none_or(|x| t.is_some_and(|t| t <= x));
        if keep {
            out.push(Listed {
                evidence_id: it.id.clone(),
                site: it.site.clone(),
                camera: it.camera.clone(),
                violation_time_utc: m.violation_time_utc.clone(),
                rule: m.rule.id.clone(),
                status: m.status.kind.clone(),
                admissible: m.admissibility.admissible,
                chain_seq: m.chain.seq,
                signature_ok: it.problems.is_empty(),
            });
        }
    }
    out.sort_by(|a, b| a.violation_time_utc.cmp(&b.violation_time_utc));
    Ok(out)
}

/// Problems that concern one item: its own, and its chain position (the links to and from it).
fn problems_of(report: &Report, id: &str, seq: Option<u64>) -> Vec<String> {
    report
        .problems
        .iter()
        .filter(|p| {
            p.evidence_id.as_deref() == Some(id)
                || seq.is_some_and(|s| p.seq == Some(s) || p.seq == Some(s + 1) && p.what.starts_with("chain broken"))
        })
        .map(|p| p.to_string())
        .collect()
}

/// What `evidence get` wrote, and problems elsewhere in the item's chain that do not touch the
/// item itself (reported, not fatal).
#[derive(Debug, Default)]
pub struct Fetched {
    pub written: Vec<String>,
    pub warnings: Vec<String>,
}

/// `evidence get`: verifies the item (artifacts, signature, chain position), then writes its files
/// into `out/<id>/`. Writes nothing if anything about the item is wrong.
pub async fn get(store: &Store, key: &PublicKey, id: &str, out: &Path, now: DateTime<Utc>) -> Result<Fetched> {
    let scope = Scope { evidence_id: Some(id.into()), ..Default::default() };
    let (report, items) = verify_items(store, key, &scope, now).await?;
    let it = items.into_iter().find(|i| i.id == id).ok_or_else(|| anyhow!("evidence {id} is not in the store"))?;
    let seq = it.manifest.as_ref().map(|m| m.chain.seq);
    let bad = problems_of(&report, id, seq);
    if !bad.is_empty() {
        bail!("evidence {id} failed verification; nothing written:\n  {}", bad.join("\n  "));
    }
    let warnings: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    let dir = out.join(id);
    std::fs::create_dir_all(&dir).with_context(|| format!("output dir {}", dir.display()))?;
    let mut written = Vec::new();
    for f in &it.files {
        let bytes = store.get(&format!("{}/{f}", it.prefix)).await?;
        let p = dir.join(f);
        std::fs::write(&p, &bytes).with_context(|| format!("write {}", p.display()))?;
        written.push(p.display().to_string());
    }
    Ok(Fetched { written, warnings })
}

/// `evidence unseal`: decrypts the sealed original with the authority's identity and checks the
/// plaintext against the manifest.
pub async fn unseal(
    store: &Store,
    key: &PublicKey,
    id: &str,
    identity: &Path,
    out: &Path,
    now: DateTime<Utc>,
) -> Result<String> {
    let text = std::fs::read_to_string(identity)
        .with_context(|| format!("identity file {}: cannot read", identity.display()))?;
    let line = text.lines().map(str::trim).find(|l| l.starts_with("AGE-SECRET-KEY-")).ok_or_else(|| {
        anyhow!("identity file {}: no AGE-SECRET-KEY- line (an age X25519 identity)", identity.display())
    })?;
    let ident: age::x25519::Identity =
        line.parse().map_err(|e| anyhow!("identity file {}: {e}", identity.display()))?;
    let dir = tempfile_dir(out)?;
    get(store, key, id, &dir, now).await?;
    let man: Manifest = serde_json::from_slice(&std::fs::read(dir.join(id).join("manifest.json"))?)?;
    let sealed = man.sealed_original.as_ref().ok_or_else(|| anyhow!("evidence {id} has no sealed original"))?;
    let cipher = std::fs::read(dir.join(id).join("original.mp4.age"))?;
    let plain = crate::evidence::unseal_with(&ident, &cipher)?;
    let h = sha256_hex(&plain);
    if h != sealed.plaintext_sha256 {
        bail!("evidence {id}: decrypted original has SHA-256 {h}, the manifest says {}", sealed.plaintext_sha256);
    }
    std::fs::create_dir_all(out)?;
    let p = out.join(format!("{id}-original.mp4"));
    std::fs::write(&p, plain)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(p.display().to_string())
}

fn tempfile_dir(near: &Path) -> Result<std::path::PathBuf> {
    let d = near.join(format!(".vigil-unseal-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
