//! Case export: for an approved item, one archive (tar) with everything a case needs and an
//! extraction record (who exported it, when, from where, the SHA-256 of every file: what the 2024
//! SAMR e-evidence rules ask of fixing electronic data), signed by the review service. The
//! archive's SHA-256 goes into the access log. [`verify_package`] checks a package offline with
//! the public keys alone (`vigil verify --package FILE`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::Service;
use super::accounts::User;
use super::items::{ItemView, Verification};
use crate::evidence::Manifest;
use crate::evidence::manifest::ItemFile;
use crate::evidence::review::{Officer, Status};
use crate::signing::{PublicKey, seal};

pub const EXTRACTION_SCHEMA: &str = "vigil.extraction.v1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackedFile {
    pub name: String,
    pub sha256: String,
    /// SM3 of the file, hex, when the review service signs with the `sm2` suite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm3: Option<String>,
    pub bytes: u64,
}

/// `extraction-record.json` (signed in `extraction-record.sig`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractionRecord {
    pub schema: String,
    pub canonicalization: String,
    pub evidence_id: String,
    pub site: String,
    pub camera: String,
    pub exported_by: Officer,
    pub time_utc: String,
    pub time_local: String,
    /// Where the export was asked from (the client's address).
    pub client: String,
    pub service: String,
    pub review_status: Status,
    pub verification: Verification,
    /// Every file of the package but this record and its signature.
    pub files: Vec<PackedFile>,
    pub key_id: String,
    /// The digest algorithms each file is given in (`SHA-256`, and `SM3` with the sm2 suite).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digest_algorithms: Vec<String>,
    /// The review service's SM2 key whose signature `extraction-record.sig` also carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm2_key_id: Option<String>,
}

/// An archive ready to send.
pub struct Package {
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub name: String,
}

/// Builds the package of an approved item.
pub async fn export(svc: &Service, user: &User, view: &ItemView, client: &str) -> Result<Package> {
    if view.status != Status::Approved {
        bail!("only approved evidence is exported (this item is {})", view.status.name());
    }
    let id = &view.item.id;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for f in &view.item.files {
        files.push((f.clone(), svc.store.get(&format!("{}/{f}", view.item.prefix)).await?.to_vec()));
    }
    for f in &view.item.reviews {
        files.push((
            format!("reviews/{f}"),
            svc.store.get(&format!("{}/reviews/{f}", view.item.prefix)).await?.to_vec(),
        ));
    }
    files.push((
        "keys/worker-signing.pub".into(),
        format!("{}\n", crate::signing::Signer::public_text_of(&svc.worker_key)).into_bytes(),
    ));
    files.push(("keys/review.pub".into(), format!("{}\n", svc.signer.public_text()).into_bytes()));
    // the SM2 public keys, as PEM a 国密 tool reads (the documents signed with Ed25519 name them)
    if let Some(k) = &svc.worker_key.sm2 {
        files.push(("keys/worker-signing.sm2.pub".into(), k.to_pem().into_bytes()));
    }
    if let Some(k) = svc.signer.public_key().sm2 {
        files.push(("keys/review.sm2.pub".into(), k.to_pem().into_bytes()));
    }
    let report = serde_json::json!({
        "evidence_id": id,
        "verification": view.verification,
        "review_status": view.status,
        "decisions": view.records.len(),
    });
    files.push(("verification-report.json".into(), serde_json::to_vec_pretty(&report)?));
    let now = chrono::Utc::now();
    let sm3 = svc.signer.sm2_key_id().is_some();
    let packed: Vec<PackedFile> = files
        .iter()
        .map(|(n, b)| PackedFile {
            name: n.clone(),
            sha256: crate::util::sha256_hex(b),
            sm3: sm3.then(|| crate::signing::sm2::sm3_hex(b)),
            bytes: b.len() as u64,
        })
        .collect();
    let officer = format!("{} ({})", user.name, user.officer_id);
    let text =
        extraction_text(id, &view.item.site, &view.item.camera, &officer, now, svc.pipeline.utc_offset_s, &packed);
    files.push(("extraction-record.txt".into(), text.into_bytes()));
    let record = ExtractionRecord {
        schema: EXTRACTION_SCHEMA.into(),
        canonicalization: crate::util::jcs::Version::CURRENT.label().into(),
        evidence_id: id.clone(),
        site: view.item.site.clone(),
        camera: view.item.camera.clone(),
        exported_by: Officer { user: user.name.clone(), officer_id: user.officer_id.clone(), role: user.role },
        time_utc: crate::util::rfc3339(now),
        time_local: crate::util::local(now, svc.pipeline.utc_offset_s),
        client: client.into(),
        service: svc.instance.clone(),
        review_status: view.status,
        verification: view.verification.clone(),
        files: {
            let mut v = packed;
            let b = &files.last().expect("the text record").1;
            v.push(PackedFile {
                name: "extraction-record.txt".into(),
                sha256: crate::util::sha256_hex(b),
                sm3: sm3.then(|| crate::signing::sm2::sm3_hex(b)),
                bytes: b.len() as u64,
            });
            v
        },
        key_id: svc.signer.key_id.clone(),
        digest_algorithms: if sm3 { vec!["SHA-256".into(), "SM3".into()] } else { vec!["SHA-256".into()] },
        sm2_key_id: svc.signer.sm2_key_id(),
    };
    let (rb, rs, _) = seal(&record, &svc.signer)?;
    files.push(("extraction-record.json".into(), rb));
    files.push(("extraction-record.sig".into(), rs));
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(now.timestamp().max(0) as u64);
        h.set_cksum();
        tar.append_data(&mut h, format!("{id}/{name}"), bytes.as_slice())?;
    }
    let bytes = tar.into_inner()?;
    let sha256 = crate::util::sha256_hex(&bytes);
    Ok(Package { bytes, sha256, name: format!("vigil-evidence-{id}.tar") })
}

/// The extraction record as people read it, in Chinese and English: per file its name, size,
/// digest algorithm and digest (the form of the 2024 market-supervision electronic-data rules).
/// The signed `extraction-record.json` lists this text's own digests too.
fn extraction_text(
    id: &str,
    site: &str,
    camera: &str,
    officer: &str,
    now: chrono::DateTime<chrono::Utc>,
    utc_offset_s: i32,
    files: &[PackedFile],
) -> String {
    let mut t = String::new();
    t.push_str("电子数据提取记录 / Electronic data extraction record\n\n");
    t.push_str(&format!("证据编号 / Evidence id: {id}\n"));
    t.push_str(&format!("场所 / Site: {site}    摄像机 / Camera: {camera}\n"));
    t.push_str(&format!("提取人 / Extracted by: {officer}\n"));
    t.push_str(&format!(
        "提取时间 / Time: {} (UTC {})\n\n",
        crate::util::local(now, utc_offset_s),
        crate::util::rfc3339(now)
    ));
    t.push_str("序号 No. | 文件名称 File name | 文件大小(字节) Size (bytes) | 完整性校验算法 Digest algorithm | 完整性校验值 Digest value\n");
    for (i, f) in files.iter().enumerate() {
        t.push_str(&format!("{} | {} | {} | SHA-256 | {}\n", i + 1, f.name, f.bytes, f.sha256));
        if let Some(h) = &f.sm3 {
            t.push_str(&format!("{} | {} | {} | SM3 | {h}\n", i + 1, f.name, f.bytes));
        }
    }
    t.push_str(
        "\n本记录由 extraction-record.json 签名（extraction-record.sig：Ed25519，及 SM2/SM3）。\n\
         This record is signed as extraction-record.json (extraction-record.sig: Ed25519, and SM2 with SM3).\n",
    );
    t
}

/// What `vigil verify --package` found.
#[derive(Debug, Default, Serialize)]
pub struct PackageReport {
    pub evidence_id: String,
    pub package_sha256: String,
    pub files_checked: usize,
    /// Known only when the review records were checked against a trusted review key.
    pub review_status: Option<Status>,
    /// The review key the records were checked against, and why it is trusted.
    pub trusted_review_key: Option<String>,
    pub exported_by: Option<Officer>,
    pub warnings: Vec<String>,
    pub problems: Vec<String>,
    /// Which signature suites and digests were checked.
    pub suites: Vec<String>,
    pub ok: bool,
}

/// `key` with the SM2 public key packaged at `pem` when it has none of its own (trusted only
/// because the documents signed with the Ed25519 key name its key id).
fn with_packaged_sm2(mut key: PublicKey, pem: Option<&Vec<u8>>) -> PublicKey {
    if key.sm2.is_none() {
        key.sm2 = pem.and_then(|b| crate::signing::sm2::Sm2Public::parse(&String::from_utf8_lossy(b)).ok());
    }
    key
}

/// The review key a verifier may trust, why, and a warning to show: the one the verifier gave
/// (`--review-key`), else the package's own key if the worker-signed manifest pins it. A key that
/// only the package vouches for is never trusted: anyone can make a key, approve a copy of an
/// item with made-up officers and pack it with their key.
pub fn trusted_review_key(
    given: Option<&PublicKey>,
    packaged: Option<&PublicKey>,
    pinned: Option<&[String]>,
) -> Result<(PublicKey, &'static str, Option<String>), String> {
    if let Some(k) = given {
        let warning = pinned.filter(|p| !k.ids().iter().any(|id| p.contains(id))).map(|p| {
            format!(
                "the review key you gave ({}) is not one the worker-signed manifest pins ({}): checked against yours because you gave it",
                k.key_id,
                p.join(", ")
            )
        });
        return Ok((k.clone(), "given with --review-key", warning));
    }
    match (packaged, pinned) {
        (Some(k), Some(p)) if p.contains(&k.key_id) => Ok((k.clone(), "pinned in the worker-signed manifest", None)),
        (Some(k), Some(p)) => Err(format!(
            "no trusted review key: the package's review key {} is not the one the worker-signed manifest pins ({}); its approvals are not trusted (give --review-key only for a review key you trust)",
            k.key_id,
            p.join(", ")
        )),
        (_, None) => Err(
            "no trusted review key: the manifest pins none (an item made before vigil pinned the review key, or by a worker without `review.pub`) and no --review-key was given; the review records could be signed by anyone, so the item is not shown as approved"
                .into(),
        ),
        (None, Some(_)) => Err("no trusted review key: the package holds no keys/review.pub and no --review-key was given".into()),
    }
}

const MAX_PACKAGE: u64 = 8 << 30;
const MAX_ENTRIES: usize = 256;

/// Checks a package offline: the extraction record's signature and every file's hash, the
/// manifest's signature (the workers' key), the artifacts against the manifest, the review records
/// (the review service's key) and that they make the item approved.
pub fn verify_package(path: &Path, worker_key: &PublicKey, review_key: Option<&PublicKey>) -> Result<PackageReport> {
    let f = std::fs::File::open(path).with_context(|| format!("package {}", path.display()))?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() > MAX_PACKAGE {
        bail!("package {}: not a regular file of at most {MAX_PACKAGE} bytes", path.display());
    }
    let sha = {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        let mut r = std::io::BufReader::new(std::fs::File::open(path)?);
        std::io::copy(&mut r, &mut h)?;
        hex::encode(sha2::Digest::finalize(h))
    };
    let mut entries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut ar = tar::Archive::new(f);
    let mut root: Option<String> = None;
    for e in ar.entries().with_context(|| format!("package {}: not a tar archive", path.display()))? {
        let mut e = e?;
        if entries.len() >= MAX_ENTRIES {
            bail!("package {}: more than {MAX_ENTRIES} files", path.display());
        }
        if e.header().entry_type() != tar::EntryType::Regular {
            bail!("package {}: {:?} is not a regular file", path.display(), e.path()?);
        }
        let name = e.path()?.to_string_lossy().into_owned();
        if name.starts_with('/') || name.split('/').any(|c| c == ".." || c.is_empty()) {
            bail!("package {}: unsafe path {name:?}", path.display());
        }
        let (top, rest) = name.split_once('/').with_context(|| format!("package: {name:?} outside the item folder"))?;
        match &root {
            None => root = Some(top.into()),
            Some(r) if r != top => bail!("package: files of two items ({r}, {top})"),
            _ => {}
        }
        let mut b = Vec::with_capacity(e.size() as usize);
        e.by_ref().take(MAX_PACKAGE).read_to_end(&mut b)?;
        entries.insert(rest.into(), b);
    }
    let id = root.context("package: empty")?;
    let mut r = PackageReport { evidence_id: id.clone(), package_sha256: sha, ..Default::default() };
    let (Some(rec), Some(sig)) = (entries.get("extraction-record.json"), entries.get("extraction-record.sig")) else {
        bail!("package: no extraction-record.json / .sig");
    };
    let packaged_review_key =
        entries.get("keys/review.pub").and_then(|b| PublicKey::parse(&String::from_utf8_lossy(b)).ok());
    // the review keys the worker pinned in the manifest it signed (read before anything is
    // trusted: the manifest's signature is checked with the workers' key)
    let (mf, sf) = (ItemFile::Manifest.file_name(), ItemFile::Signature.file_name());
    let pinned: Option<Vec<String>> = match (entries.get(mf), entries.get(sf)) {
        (Some(mb), Some(ms)) => {
            crate::signing::open::<Manifest>(mb, ms, worker_key).ok().and_then(|m| m.signing.review_key_ids)
        }
        _ => None,
    };
    let rk = match trusted_review_key(review_key, packaged_review_key.as_ref(), pinned.as_deref()) {
        Ok((k, why, warning)) => {
            r.trusted_review_key = Some(format!("{} ({why})", k.key_id));
            r.warnings.extend(warning);
            k
        }
        Err(why) => {
            r.problems.push(why);
            r.ok = false;
            return Ok(r);
        }
    };
    let mut sm3_files = 0usize;
    let rk = with_packaged_sm2(rk, entries.get("keys/review.sm2.pub"));
    let worker_key = &with_packaged_sm2(worker_key.clone(), entries.get("keys/worker-signing.sm2.pub"));
    match crate::signing::open::<ExtractionRecord>(rec, sig, &rk) {
        Err(e) => r.problems.push(format!("extraction record: {e:#}")),
        Ok(x) => {
            if let Some(p) = crate::signing::sm2_pin_problem(sig, x.sm2_key_id.as_deref()) {
                r.problems.push(format!("extraction-record.sig: {p}"));
            }
            if x.evidence_id != id {
                r.problems.push(format!("extraction record is for {}, the package holds {id}", x.evidence_id));
            }
            for pf in &x.files {
                match entries.get(&pf.name) {
                    None => r.problems.push(format!("{} is listed in the extraction record but missing", pf.name)),
                    Some(b) if crate::util::sha256_hex(b) != pf.sha256 => {
                        r.problems.push(format!("{}: SHA-256 differs from the extraction record (altered)", pf.name))
                    }
                    Some(b) if pf.sm3.as_deref().is_some_and(|h| crate::signing::sm2::sm3_hex(b) != h) => {
                        r.problems.push(format!("{}: SM3 differs from the extraction record (altered)", pf.name))
                    }
                    Some(_) => {
                        r.files_checked += 1;
                        sm3_files += usize::from(pf.sm3.is_some());
                    }
                }
            }
            for name in entries.keys() {
                if !name.starts_with("extraction-record.") && !x.files.iter().any(|f| &f.name == name) {
                    r.problems.push(format!("{name} is in the package but not in the extraction record"));
                }
            }
            r.exported_by = Some(x.exported_by);
        }
    }
    // the evidence itself, against the workers' key
    let (Some(mb), Some(ms)) = (entries.get(mf), entries.get(sf)) else {
        r.problems.push("manifest.json / manifest.sig missing".into());
        r.ok = false;
        return Ok(r);
    };
    let manifest_sha = crate::util::sha256_hex(mb);
    match crate::signing::open::<Manifest>(mb, ms, worker_key) {
        Err(e) => r.problems.push(format!("manifest: {e:#}")),
        Ok(m) => {
            if let Some(p) = crate::signing::sm2_pin_problem(ms, m.signing.sm2_key_id.as_deref()) {
                r.problems.push(format!("manifest.sig: {p}"));
            }
            if m.evidence_id != id {
                r.problems.push(format!("manifest is for {}, the package holds {id}", m.evidence_id));
            }
            for (name, a) in &m.artifacts {
                let file = a.key.rsplit('/').next().unwrap_or_default();
                match entries.get(file) {
                    None => r.problems.push(format!("artifact {name} ({file}) missing")),
                    Some(b) if crate::util::sha256_hex(b) != a.sha256 => {
                        r.problems.push(format!("{file}: SHA-256 differs from the manifest"))
                    }
                    Some(b) => {
                        if let Some(p) = crate::verify::sm3_problem(b, a) {
                            r.problems.push(format!("{file}: {p}"));
                        }
                    }
                }
            }
        }
    }
    let mut names: Vec<&String> =
        entries.keys().filter(|k| k.starts_with("reviews/") && k.ends_with(".json")).collect();
    names.sort();
    let files: Vec<crate::verify::reviews::RecordFile> = names
        .iter()
        .map(|n| ((*n).clone(), entries[*n].clone(), entries.get(&n.replace(".json", ".sig")).cloned()))
        .collect();
    let (records, problems) = crate::verify::reviews::check_records(&files, &rk, &id, Some(&manifest_sha));
    r.problems.extend(problems);
    let status = crate::evidence::review::status(&records);
    if status != Status::Approved {
        r.problems.push(format!("the review records make the item {}, not approved", status.name()));
    }
    r.review_status = Some(status);
    r.suites = vec![
        format!("worker key: {}", worker_key.checks.summary()),
        format!("review key: {}", rk.checks.summary()),
        format!(
            "digests: SHA-256 on every file; SM3 on {} file(s) of the extraction record and the manifest",
            sm3_files + crate::verify::SM3_CHECKED.load(std::sync::atomic::Ordering::Relaxed) as usize
        ),
    ];
    r.ok = r.problems.is_empty();
    Ok(r)
}
