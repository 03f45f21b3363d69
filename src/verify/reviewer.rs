//! The reviewer's tools on top of verification: `evidence list`, `evidence get` (verifies before
//! writing anything) and `evidence unseal`.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Report, list_items, load_manifest};
use crate::evidence::Manifest;
use crate::signing::PublicKey;
use crate::store::Store;
use crate::util::sha256_hex;

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
    use crate::config::StatusKind;
    if let Some(s) = &f.status
        && ![StatusKind::Enforcement, StatusKind::Advisory].iter().any(|k| k.name() == s)
    {
        bail!("--status {:?}: not a status (enforcement | advisory)", crate::util::printable(s, 64));
    }
    let items = list_items(store).await?;
    let known = |what: &str, given: &Option<String>, all: std::collections::BTreeSet<&str>| -> Result<()> {
        match given {
            Some(g) if !all.contains(g.as_str()) => bail!(
                "--{what} {:?}: no evidence in store {} has it (there: {})",
                crate::util::printable(g, 64),
                store.url,
                all.into_iter().collect::<Vec<_>>().join(", ")
            ),
            _ => Ok(()),
        }
    };
    known("site", &f.site, items.iter().map(|i| i.site.as_str()).collect())?;
    known("camera", &f.camera, items.iter().map(|i| i.camera.as_str()).collect())?;
    // a rule is known by its id in a manifest, or as a rule kind (which may have fired nowhere yet)
    let mut rules: std::collections::BTreeSet<String> =
        crate::rules::RuleKind::ALL.iter().map(|k| k.name().into()).collect();
    let mut out = Vec::new();
    for mut it in items {
        if f.site.as_ref().is_some_and(|s| s != &it.site) || f.camera.as_ref().is_some_and(|c| c != &it.camera) {
            continue;
        }
        load_manifest(store, key, &mut it).await;
        let Some(m) = &it.manifest else { continue };
        rules.insert(m.rule.id.clone());
        let t = DateTime::parse_from_rfc3339(&m.violation_time_utc).map(|t| t.with_timezone(&Utc)).ok();
        let keep = f.rule.as_ref().is_none_or(|r| r == &m.rule.id)
            && f.status.as_ref().is_none_or(|s| s == m.status.kind.name())
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
                status: m.status.kind.name().into(),
                admissible: m.admissibility.admissible,
                chain_seq: m.chain.seq,
                signature_ok: it.problems.is_empty(),
            });
        }
    }
    known("rule", &f.rule, rules.iter().map(String::as_str).collect())?;
    out.sort_by(|a, b| a.violation_time_utc.cmp(&b.violation_time_utc));
    Ok(out)
}

/// Problems that concern one item: its own, and its chain position (the links to and from it).
pub(crate) fn problems_of(report: &Report, id: &str, seq: Option<u64>) -> Vec<String> {
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
    let check = super::verify_item(store, key, id, now).await?;
    if !check.problems.is_empty() {
        bail!("evidence {id} failed verification; nothing written:\n  {}", check.problems.join("\n  "));
    }
    let (it, warnings) = (check.item, check.warnings);
    let dir = out.join(id);
    if crate::util::fsx::is_symlink(out) {
        bail!("output dir {} is a symbolic link: refusing to write through it", out.display());
    }
    crate::util::fsx::fresh_dir(&dir).context("evidence get")?;
    let mut written = Vec::new();
    for f in &it.files {
        let bytes = store.get(&format!("{}/{f}", it.prefix)).await?;
        let p = dir.join(f);
        crate::util::fsx::create_new(&p, &bytes, 0o644)?;
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
    let text = crate::util::fsx::read_text(identity, crate::util::fsx::limits::KEY)
        .with_context(|| format!("identity file {}", identity.display()))?;
    let line = text.lines().map(str::trim).find(|l| l.starts_with("AGE-SECRET-KEY-")).ok_or_else(|| {
        anyhow!("identity file {}: no AGE-SECRET-KEY- line (an age X25519 identity)", identity.display())
    })?;
    let ident: age::x25519::Identity =
        line.parse().map_err(|e| anyhow!("identity file {}: {e}", identity.display()))?;
    let dir = tempfile_dir(out)?;
    get(store, key, id, &dir, now).await?;
    let man: Manifest = serde_json::from_slice(&std::fs::read(
        dir.join(id).join(crate::evidence::manifest::ItemFile::Manifest.file_name()),
    )?)?;
    let sealed = man.sealed_original.as_ref().ok_or_else(|| anyhow!("evidence {id} has no sealed original"))?;
    // original.mp4.age, or original.mkv.age for a codec without an MP4 mapping
    let file = man
        .artifacts
        .get("sealed_original")
        .and_then(|a| a.key.rsplit('/').next())
        .filter(|f| f.starts_with("original.") && f.ends_with(".age") && !f.contains(['/', '\\']))
        .ok_or_else(|| anyhow!("evidence {id}: the manifest names no sealed_original artifact"))?
        .to_string();
    let cipher = std::fs::read(dir.join(id).join(&file))?;
    let plain = crate::evidence::seal::unseal_with(&ident, &cipher)?;
    let h = sha256_hex(&plain);
    if h != sealed.plaintext_sha256 {
        bail!("evidence {id}: decrypted original has SHA-256 {h}, the manifest says {}", sealed.plaintext_sha256);
    }
    let p = out.join(format!("{id}-{}", file.trim_end_matches(".age")));
    let written = crate::util::fsx::create_new(&p, &plain, 0o600);
    let _ = std::fs::remove_dir_all(&dir);
    written?;
    Ok(p.display().to_string())
}

/// A new private working directory inside `near` (which is created if missing, and may not be
/// a symbolic link).
fn tempfile_dir(near: &Path) -> Result<std::path::PathBuf> {
    if crate::util::fsx::is_symlink(near) {
        bail!("output dir {} is a symbolic link: refusing to write through it", near.display());
    }
    std::fs::create_dir_all(near).with_context(|| format!("output dir {}", near.display()))?;
    let d = near.join(format!(".vigil-unseal-{}", ulid::Ulid::new()));
    crate::util::fsx::fresh_dir(&d)?;
    Ok(d)
}
