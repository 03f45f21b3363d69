//! 国密 (issue #41): every kind of document vigil signs carries an SM2 signature (with SM3 and the
//! GM/T 0009 default user id) beside Ed25519, and every artifact an SM3 digest beside SHA-256 —
//! checked here by tools no one on this project wrote: the `openssl` command from Debian and
//! gmssl from PyPI (`.deps/consumer-venv`), following only the README's instructions. And a site
//! that signed with Ed25519 alone adds SM2 by a key rotation: its old items still verify, its new
//! ones carry both.

mod common;
#[path = "support/review.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use support::*;

/// `openssl dgst -sm3 -verify PUB -sigopt distid:1234567812345678 -signature SIG.der DOC`, the
/// DER signature taken from the `.sig` file's "sm2" member (README: "国密 signatures").
fn openssl_verify(doc: &Path, sig: &Path, public: &Path, scratch: &Path) -> bool {
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(sig).unwrap()).unwrap();
    let der = scratch.join(format!("{}.der", sha256(doc.to_string_lossy().as_bytes())));
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(s["sm2"]["signature"].as_str().unwrap()).unwrap();
    std::fs::write(&der, raw).unwrap();
    let o = Command::new("openssl")
        .args(["dgst", "-sm3", "-verify"])
        .arg(public)
        .args(["-sigopt", "distid:1234567812345678", "-signature"])
        .arg(&der)
        .arg(doc)
        .output()
        .expect("openssl (apt package openssl)");
    let out = String::from_utf8_lossy(&o.stdout);
    o.status.success() && out.trim() == "Verified OK"
}

/// `openssl dgst -sm3 FILE`, the hex digest.
fn openssl_sm3(file: &Path) -> String {
    let o = Command::new("openssl").args(["dgst", "-sm3", "-r"]).arg(file).output().expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().to_string()
}

/// tests/support/gm_verify.py in the consumer venv: name → verified.
fn gmssl(jobs: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let python = repo().join(".deps/consumer-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run .ci/install (it makes the consumer venv with gmssl)",
        python.display()
    );
    let mut child = Command::new(&python)
        .arg(repo().join("tests/support/gm_verify.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(jobs.to_string().as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "gm_verify.py: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap().as_object().unwrap().clone()
}

/// The first stored object under `dir` (recursively) whose name ends with `suffix`.
fn find(dir: &Path, suffix: &str) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    let mut found: Vec<PathBuf> = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                found.push(p);
            }
        }
    }
    found.sort();
    found.into_iter().next().unwrap_or_else(|| panic!("no *{suffix} under {}", dir.display()))
}

/// The signature file of a stored document: `<doc>.sig`, or `<stem>.sig` (manifests, review
/// records).
fn sig_of(doc: &Path) -> PathBuf {
    let beside = PathBuf::from(format!("{}.sig", doc.display()));
    if beside.exists() { beside } else { doc.with_extension("sig") }
}

#[test]
fn every_signed_document_verifies_with_openssl_and_gmssl_and_every_digest_is_also_sm3() {
    // the shipped default suites: ed25519 and sm2; keys made by the worker and the review service
    let rs = ReviewSite::new(1, "");
    let keys = rs.site.path("keys");
    for f in ["signing.sm2.key", "signing.sm2.pub"] {
        assert!(keys.join(f).exists(), "{f} made beside the Ed25519 key");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(keys.join("signing.sm2.key")).unwrap().permissions().mode() & 0o777, 0o600);
    // OpenSSL reads the keys as they are
    let o = Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(keys.join("signing.sm2.key"))
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("SM2"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // `vigil keys public` prints both
    let (code, out, _) =
        run_capture(&["keys", "public", keys.join("signing.pub").to_str().unwrap()], Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(out.starts_with("vigil-ed25519-public-key:") && out.contains("-----BEGIN PUBLIC KEY-----"), "{out}");

    // one enforcement item approved by two officers and exported
    let items = rs.items();
    let id = items.iter().find(|i| i.1 == "cam1").unwrap().0.clone();
    let svc = Service::start(&rs.site, "review-a");
    for f in ["review.sm2.key", "review.sm2.pub"] {
        assert!(keys.join(f).exists(), "{f} made beside the review key");
    }
    assert_eq!(Client::login(svc.port, "alice").decide(&id, "approve", true, "").status, 200);
    assert_eq!(Client::login(svc.port, "bob").decide(&id, "approve", true, "").status, 200);
    let r = Client::login(svc.port, "carol").get(&format!("/api/evidence/{id}/package"));
    assert_eq!(r.status, 200, "{}", r.text());
    let scratch = rs.site.path("gm");
    std::fs::create_dir_all(&scratch).unwrap();
    let pkg = scratch.join("package.tar");
    std::fs::write(&pkg, &r.body).unwrap();
    let st = Command::new("tar").arg("-xf").arg(&pkg).arg("-C").arg(&scratch).status().unwrap();
    assert!(st.success());
    let unpacked = scratch.join(&id);

    // the document kinds, each with the SM2 public key that signed it
    let store = rs.site.path("store");
    let item = rs.item_dir(&id);
    let worker_pub = keys.join("signing.sm2.pub");
    let review_pub = keys.join("review.sm2.pub");
    let checkpoint = std::fs::read_dir(find_dir(&store.join("chain"), "checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let docs: Vec<(&str, PathBuf, &Path)> = vec![
        ("evidence manifest", item.join("manifest.json"), &worker_pub),
        ("chain index entry", find(&store.join("chain"), "seq/000000000001.json"), &worker_pub),
        ("chain checkpoint", checkpoint, &worker_pub),
        ("review record", item.join("reviews/0001.json"), &review_pub),
        ("access-log entry", find(&store.join("review-audit"), "log/000000000001.json"), &review_pub),
        ("extraction record (package)", unpacked.join("extraction-record.json"), &review_pub),
    ];
    let mut jobs = Vec::new();
    let mut table = vec![
        "| signed document | Ed25519 (`vigil verify`) | SM2-with-SM3: `openssl dgst -sm3 -verify` | SM2-with-SM3: gmssl (PyPI) |".to_string(),
        "| --- | --- | --- | --- |".to_string(),
    ];
    let mut ossl = Vec::new();
    for (kind, doc, public) in &docs {
        let sig = sig_of(doc);
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
        assert_eq!(s["alg"], "Ed25519", "{kind}");
        assert_eq!(s["sm2"]["alg"], "SM2-with-SM3", "{kind}: {s}");
        let ok = openssl_verify(doc, &sig, public, &scratch);
        assert!(ok, "{kind}: openssl does not verify {}", doc.display());
        // and a changed byte fails it
        let mut bad = std::fs::read(doc).unwrap();
        let n = bad.len() / 2;
        bad[n] ^= 1;
        let badf = scratch.join(format!("bad-{}", kind.replace(' ', "-")));
        std::fs::write(&badf, &bad).unwrap();
        assert!(!openssl_verify(&badf, &sig, public, &scratch), "{kind}: openssl verified altered bytes");
        ossl.push(ok);
        jobs.push(serde_json::json!({"name": kind, "doc": doc, "sig": sig, "pub": public}));
        jobs.push(serde_json::json!({"name": format!("{kind} (altered)"), "doc": badf, "sig": sig, "pub": public}));
    }
    // digests: every artifact's SM3 in the manifest, every packed file's in the extraction record
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(item.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["signing"]["sm2_key_id"].is_string(), "the manifest names its SM2 key");
    let mut digests = 0;
    for (name, a) in manifest["artifacts"].as_object().unwrap() {
        let file = store.join(a["key"].as_str().unwrap());
        let want = a["sm3"].as_str().unwrap_or_else(|| panic!("artifact {name} has no SM3"));
        assert_eq!(openssl_sm3(&file), want, "{name}: openssl dgst -sm3");
        jobs.push(serde_json::json!({"name": format!("artifact {name}"), "file": file, "sm3": want}));
        digests += 1;
    }
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("extraction-record.json")).unwrap()).unwrap();
    assert_eq!(record["digest_algorithms"], serde_json::json!(["SHA-256", "SM3"]));
    for f in record["files"].as_array().unwrap() {
        let file = unpacked.join(f["name"].as_str().unwrap());
        let want = f["sm3"].as_str().unwrap();
        assert_eq!(openssl_sm3(&file), want, "{}: openssl dgst -sm3", f["name"]);
        jobs.push(
            serde_json::json!({"name": format!("packed {}", f["name"].as_str().unwrap()), "file": file, "sm3": want}),
        );
        digests += 1;
    }
    // the human record names file, size, algorithm and value, in Chinese and English
    let text = std::fs::read_to_string(unpacked.join("extraction-record.txt")).unwrap();
    assert!(text.contains("电子数据提取记录") && text.contains("完整性校验算法 Digest algorithm"), "{text}");
    assert!(text.contains(&format!("| clip.mp4 | {} | SM3 | ", manifest["artifacts"]["clip"]["bytes"])), "{text}");
    let py = gmssl(&serde_json::Value::Array(jobs));
    for (kind, _, _) in &docs {
        assert_eq!(py[*kind], true, "gmssl: {kind}");
        assert_eq!(py[&format!("{kind} (altered)")], false, "gmssl verified altered bytes of {kind}");
    }
    for (k, v) in &py {
        if k.starts_with("artifact ") || k.starts_with("packed ") {
            assert_eq!(v, &true, "gmssl SM3 of {k}");
        }
    }
    // vigil's own check, of the store and of the package, says which suites it checked
    let (code, out, err) =
        run_capture(&["verify", "--pipeline", rs.site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{out}{err}");
    let line = out.lines().find(|l| l.starts_with("signature suites checked")).unwrap_or_else(|| panic!("{out}"));
    println!("vigil verify --pipeline: {line}");
    assert!(!line.contains("SM2-with-SM3 on 0"), "{line}");
    let (code, out, err) = run_capture(
        &[
            "verify",
            "--package",
            pkg.to_str().unwrap(),
            "--public-key",
            keys.join("signing.pub").to_str().unwrap(),
            "--review-key",
            keys.join("review.pub").to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{out}{err}");
    println!("vigil verify --package:\n{out}");
    assert!(
        out.contains("review key: signature suites checked: Ed25519 on")
            && !out.contains("review key: signature suites checked: Ed25519 on 0"),
        "{out}"
    );
    for ((kind, _, _), ok) in docs.iter().zip(&ossl) {
        table.push(format!(
            "| {kind} | ✓ | {} | {} |",
            if *ok { "Verified OK; altered byte: fails" } else { "FAILED" },
            if py[*kind] == true && py[&format!("{kind} (altered)")] == false {
                "True; altered byte: False"
            } else {
                "FAILED"
            }
        ));
    }
    println!("{}", table.join("\n"));
    println!(
        "SM3 digests compared with `openssl dgst -sm3` and gmssl: {digests} (artifacts of the manifest, files of the package), all equal"
    );

    // a stripped SM2 signature is caught: the manifest names its SM2 key under Ed25519
    let sigf = item.join("manifest.sig");
    let mut s: serde_json::Value = serde_json::from_slice(&std::fs::read(&sigf).unwrap()).unwrap();
    s.as_object_mut().unwrap().remove("sm2");
    std::fs::write(&sigf, serde_json::to_vec(&s).unwrap()).unwrap();
    let (code, out, _) = run_capture(
        &["verify", "--pipeline", rs.site.pipeline.to_str().unwrap(), "--evidence", &id],
        Duration::from_secs(60),
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no SM2 signature (removed)"), "{out}");
}

fn find_dir(dir: &Path, name: &str) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == name) {
                    return p;
                }
                stack.push(p);
            }
        }
    }
    panic!("no folder {name} under {}", dir.display())
}

#[test]
fn a_site_adds_sm2_by_a_key_rotation_old_items_verify_by_ed25519_new_ones_by_both() {
    // a site made before 国密: Ed25519 alone
    let site = Site::new(
        "suites = [\"ed25519\"]\n[clip]\npre_roll_s = 1\npost_roll_s = 1\n",
        &format!(
            "[[cameras]]\nid = \"cam1\"\nsource = \"{}\"\nrealtime = false\nprivacy_mask = \"none\"\n\
             [[cameras.rules]]\nkind = \"no_mask\"\nmin_hits = 10\nwindow = 10\n",
            sample("astronaut-pan.mp4").display()
        ),
    );
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(180));
    assert_eq!(code, 0, "{log}");
    let old: Vec<serde_json::Value> = site.outbox();
    assert!(!old.is_empty());
    let old_sig: serde_json::Value =
        serde_json::from_slice(&site.stored(old[0]["payload"]["manifest"]["signature_key"].as_str().unwrap())).unwrap();
    assert!(old_sig.get("sm2").is_none(), "Ed25519 alone: {old_sig}");
    assert!(!site.path("keys/signing.sm2.key").exists());

    // adding sm2 without a key: a clear error naming the file and the command
    site.replace("suites = [\"ed25519\"]\n", "generate_if_missing = false\n");
    site.replace("generate_if_missing = true\n", "");
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(60));
    assert_ne!(code, 0);
    assert!(log.contains("signing.sm2.key: no SM2 key") && log.contains("vigil keys init --suite sm2"), "{log}");
    // the rotation: the hand-over countersigned by the new key with both suites
    let (code, out, err) =
        run_capture(&["keys", "rotate", "--pipeline", site.pipeline.to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("SM2 key") && site.path("keys/signing.sm2.pub").exists(), "{out}");
    println!("vigil keys rotate:\n{out}");
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(180));
    assert_eq!(code, 0, "{log}");
    let all = site.outbox();
    let new: Vec<&serde_json::Value> = all.iter().skip(old.len()).collect();
    assert!(!new.is_empty());
    for e in &new {
        let sig: serde_json::Value =
            serde_json::from_slice(&site.stored(e["payload"]["manifest"]["signature_key"].as_str().unwrap())).unwrap();
        assert_eq!(sig["sm2"]["alg"], "SM2-with-SM3", "{sig}");
    }
    // the hand-over checkpoint's countersignature carries SM2 too
    let dir = find_dir(&site.path("store/chain"), "checkpoints");
    let cosigned: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".next.sig"))
        .collect();
    assert_eq!(cosigned.len(), 1, "one hand-over");
    let cs: serde_json::Value = serde_json::from_slice(&std::fs::read(&cosigned[0]).unwrap()).unwrap();
    assert!(cs["sm2"].is_object(), "the new key countersigns with SM2 as well: {cs}");
    let doc = PathBuf::from(cosigned[0].to_string_lossy().replace(".next.sig", ""));
    assert!(openssl_verify(&doc, &cosigned[0], &site.path("keys/signing.sm2.pub"), &site.path("")));

    // the whole store verifies: old items by Ed25519, new ones by both
    let (code, out, err) =
        run_capture(&["verify", "--pipeline", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{out}{err}");
    let line = out.lines().find(|l| l.starts_with("signature suites checked")).unwrap().to_string();
    println!("after the rotation, vigil verify --pipeline: {line}");
    let count = |after: &str| -> u64 {
        let rest = line.split(after).nth(1).unwrap_or_else(|| panic!("{after:?} in {line}"));
        rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
    };
    let (ed, sm) = (count("Ed25519 on "), count("SM2-with-SM3 on "));
    assert!(sm > 0 && ed > sm, "old documents Ed25519 only, new ones both: {line}");
    println!(
        "items before the rotation: {} (Ed25519), after: {} (Ed25519 + SM2); documents checked: Ed25519 {ed}, SM2 {sm}",
        old.len(),
        new.len()
    );
    // an SM2 signature altered (Ed25519 intact) fails verify
    let k = new[0]["payload"]["manifest"]["signature_key"].as_str().unwrap();
    let p = site.path("store").join(k);
    let mut sig: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let s = sig["sm2"]["signature"].as_str().unwrap().to_string();
    let flipped = format!("{}{}", &s[..20], if &s[20..21] == "A" { "B" } else { "A" }) + &s[21..];
    sig["sm2"]["signature"] = flipped.into();
    std::fs::write(&p, serde_json::to_vec(&sig).unwrap()).unwrap();
    let (code, out, _) = run_capture(
        &[
            "verify",
            "--pipeline",
            site.pipeline.to_str().unwrap(),
            "--evidence",
            new[0]["payload"]["evidence_id"].as_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("SM2 signature"), "{out}");
}
