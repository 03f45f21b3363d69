//! Evidence that stands up: every tampering of a stored chain is detected by `vigil verify` with a
//! message naming what is wrong; reviewers' `evidence get` refuses tampered items; the sealed
//! original decrypts with the authority's key only; retention removes only what has expired.
//!
//! The base store is made by four runs of the real worker on the same data dir, one evidence item
//! each, so its chain (seq 1..4) also proves that chains survive restarts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

struct Base {
    dir: PathBuf,
    /// (seq, evidence id, item dir relative to the store)
    items: Vec<(u64, String, String)>,
}

fn camera_toml(extra: &str) -> String {
    format!(
        "[[cameras]]\nid = \"cam1\"\nlocation = \"counter\"\nsource = \"{}\"\nrealtime = false\n\
         location_category = \"kitchen\"\nlegal_review_date = \"2026-01-01\"\ntechnical_review_date = \"2026-01-02\"\n\
         installation_ref = \"INST-7\"\npublic_notice_date = \"2026-01-03\"\n{extra}\n\
         [[cameras.rules]]\nkind = \"no_mask\"\nmin_hits = 3\nwindow = 5\n",
        sample("astronaut-pan.mp4").display()
    )
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let site = Site::new("[clip]\npre_roll_s = 1\npost_roll_s = 1\n", &camera_toml(""));
        for run in 0..4 {
            let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
            assert_eq!(code, 0, "run {run}: {log}");
        }
        let items: Vec<(u64, String, String)> = site
            .outbox()
            .iter()
            .map(|e| {
                let p = &e["payload"];
                let key = p["manifest"]["key"].as_str().unwrap();
                (
                    p["chain"]["seq"].as_u64().unwrap(),
                    p["evidence_id"].as_str().unwrap().to_string(),
                    key.trim_end_matches("/manifest.json").to_string(),
                )
            })
            .collect();
        let dir = site.dir.keep();
        Base { dir, items }
    })
}

/// A private copy of the base site to tamper with.
fn copy() -> (tempfile::TempDir, PathBuf) {
    let b = base();
    let t = tempfile::tempdir().unwrap();
    assert!(
        Command::new("cp").arg("-a").arg(format!("{}/.", b.dir.display())).arg(t.path()).status().unwrap().success()
    );
    let p = t.path().join("site.toml");
    (t, p)
}

fn item_dir(site: &Path, seq: u64) -> PathBuf {
    let (_, _, d) = base().items.iter().find(|i| i.0 == seq).unwrap();
    site.join("store").join(d)
}

fn id_of(seq: u64) -> String {
    base().items.iter().find(|i| i.0 == seq).unwrap().1.clone()
}

fn flip_byte(p: &Path, at_fraction: f64) {
    let mut b = std::fs::read(p).unwrap();
    let i = ((b.len() as f64 * at_fraction) as usize).min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(p, b).unwrap();
}

/// Verifies a tampered copy: must fail and say `needles`. Prints the mutation-table row.
fn detected(mutation: &str, pipeline: &Path, needles: &[&str]) {
    let (code, text) = verify(pipeline, &[]);
    assert_eq!(code, 1, "{mutation}: verify should fail:\n{text}");
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    for n in needles {
        assert!(fails.iter().any(|l| l.contains(n)), "{mutation}: no FAIL line mentions {n:?}:\n{text}");
    }
    println!("| {mutation} | detected | {} |", fails.join(" / "));
}

#[test]
fn the_untouched_store_verifies_and_the_chain_survived_restarts() {
    let b = base();
    let seqs: Vec<u64> = b.items.iter().map(|i| i.0).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4], "one chain across four worker runs");
    let (code, text) = verify(&b.dir.join("site.toml"), &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("4 item(s)") && text.contains("checkpoint seq 4") && text.contains("OK:"), "{text}");
    let (code, json) = verify(&b.dir.join("site.toml"), &["--json"]);
    assert_eq!(code, 0);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(r["artifacts_checked"], 12);
    // repeat counts for the case system: 0, 1, 2, 3 earlier no_mask events in 30 days
    let site_events: Vec<serde_json::Value> = std::fs::read_to_string(b.dir.join("data/outbox.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["subject"].as_str().unwrap().starts_with("vigil.evidence"))
        .collect();
    let repeats: Vec<u64> = site_events.iter().map(|e| e["payload"]["repeat_count_30d"].as_u64().unwrap()).collect();
    assert_eq!(repeats, vec![0, 1, 2, 3]);
    assert!(site_events.iter().all(|e| e["payload"]["status"]["kind"] == "enforcement"));
    println!("| none (untouched store) | passes | OK |");
}

#[test]
fn a_flipped_byte_in_the_clip() {
    let (_t, p) = copy();
    flip_byte(&item_dir(p.parent().unwrap(), 2).join("clip.mp4"), 0.5);
    detected("flipped byte in clip.mp4", &p, &["seq 2", "clip.mp4: SHA-256 is"]);
}

#[test]
fn a_flipped_byte_in_the_snapshot() {
    let (_t, p) = copy();
    flip_byte(&item_dir(p.parent().unwrap(), 3).join("snapshot.jpg"), 0.5);
    detected("flipped byte in snapshot.jpg", &p, &["seq 3", "snapshot.jpg: SHA-256 is"]);
}

#[test]
fn a_flipped_byte_in_the_manifest() {
    let (_t, p) = copy();
    flip_byte(&item_dir(p.parent().unwrap(), 2).join("manifest.json"), 0.3);
    detected("flipped byte in manifest.json", &p, &["manifest", "signature does not match"]);
}

#[test]
fn a_flipped_byte_in_the_signature() {
    let (_t, p) = copy();
    let sig = item_dir(p.parent().unwrap(), 1).join("manifest.sig");
    let text = std::fs::read_to_string(&sig).unwrap();
    // change one base64 character of the signature value
    let i = text.find("\"signature\":\"").unwrap() + 20;
    let mut b = text.into_bytes();
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    std::fs::write(&sig, b).unwrap();
    detected("changed byte in manifest.sig", &p, &["seq 1", "signature"]);
}

#[test]
fn an_item_deleted_from_the_middle() {
    let (_t, p) = copy();
    std::fs::remove_dir_all(item_dir(p.parent().unwrap(), 2)).unwrap();
    detected("item deleted from the middle (seq 2)", &p, &["seq 2", "missing from the middle"]);
}

#[test]
fn an_item_deleted_from_the_end_with_its_index_entry() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    std::fs::remove_dir_all(item_dir(site, 4)).unwrap();
    // a careful forger also removes the chain index entry: the signed checkpoint still knows
    for ext in ["json", "json.sig"] {
        std::fs::remove_file(site.join(format!("store/chain/test-site/cam1/seq/000000000004.{ext}"))).unwrap();
    }
    detected(
        "item deleted from the end (seq 4, index entry too)",
        &p,
        &["seq 4", "missing from the end", "checkpoint"],
    );
}

#[test]
fn two_items_swapped() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    let (a, b) = (item_dir(site, 2), item_dir(site, 3));
    for f in ["manifest.json", "manifest.sig"] {
        let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
        std::fs::write(a.join(f), y).unwrap();
        std::fs::write(b.join(f), x).unwrap();
    }
    detected("manifests of seq 2 and 3 swapped", &p, &["items moved or swapped"]);
}

#[test]
fn a_clip_replaced_by_another_valid_clip_of_the_same_camera() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    std::fs::copy(item_dir(site, 1).join("clip.mp4"), item_dir(site, 3).join("clip.mp4")).unwrap();
    detected(
        "clip of seq 3 replaced by the (valid) clip of seq 1",
        &p,
        &[
            "seq 3",
            &format!(
                "clip.mp4 is a copy of clip.mp4 of evidence {} (seq 1): replaced by another item's file",
                id_of(1)
            ),
        ],
    );
}

#[test]
fn a_manifest_re_signed_with_another_key() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    let other = vigil::signing::Signer::init(&site.join("other-key")).unwrap();
    let m = item_dir(site, 2).join("manifest.json");
    let sig = other.sign(&std::fs::read(&m).unwrap());
    std::fs::write(item_dir(site, 2).join("manifest.sig"), sig.to_bytes()).unwrap();
    detected(
        "manifest of seq 2 re-signed with another key",
        &p,
        &["seq 2", &format!("signed with key {}", other.key_id)],
    );
}

/// Rewrites an item's manifest as a forger holding the worker's key would: edited, then
/// canonicalised and signed again.
fn forge_manifest(site: &Path, dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    edit(&mut m);
    let signer = vigil::signing::Signer::load(&site.join("keys/signing.key")).unwrap();
    let (bytes, sig, hash) = vigil::signing::seal(&m, &signer).unwrap();
    std::fs::write(dir.join("manifest.json"), bytes).unwrap();
    std::fs::write(dir.join("manifest.sig"), sig).unwrap();
    hash
}

#[test]
fn a_fork_two_manifests_at_one_position() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    // a second item claiming seq 2, signed with the worker's own key
    let src = item_dir(site, 2);
    let forged_id = "01FORGEDFORGEDFORGEDFORGED";
    let dst = src.parent().unwrap().join(forged_id);
    std::fs::create_dir_all(&dst).unwrap();
    for f in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(f.path(), dst.join(f.file_name())).unwrap();
    }
    let old_id = id_of(2);
    forge_manifest(site, &dst, |m| {
        m["evidence_id"] = forged_id.into();
        for a in m["artifacts"].as_object_mut().unwrap().values_mut() {
            let k = a["key"].as_str().unwrap().replace(&old_id, forged_id);
            a["key"] = k.into();
        }
    });
    detected(
        "a second manifest forged at seq 2 (worker's key)",
        &p,
        &["seq 2", "fork: 2 manifests claim this position"],
    );
}

#[test]
fn a_manifest_re_signed_with_an_earlier_violation_time_reorders_the_chain() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    forge_manifest(site, &item_dir(site, 3), |m| {
        m["violation_time_utc"] = "2020-01-01T00:00:00.000Z".into();
    });
    detected("seq 3's violation time moved years back (re-signed)", &p, &["seq 3", "manifest replaced"]);
    // the time order itself is reported, not failed on: the sequence orders the chain (a clock
    // stepped back would otherwise fail honest items)
    let (_, text) = verify(&p, &[]);
    assert!(
        text.lines().any(|l| l.starts_with("WARNING") && l.contains("seq 3") && l.contains("violation time")),
        "{text}"
    );
}

#[test]
fn a_broken_prev_hash() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    forge_manifest(site, &item_dir(site, 3), |m| {
        m["chain"]["prev_hash"] = "ab".repeat(32).into();
    });
    detected("seq 3's prev_hash changed (re-signed)", &p, &["seq 3", "chain broken: prev_hash abababab"]);
}

#[test]
fn a_manifest_that_differs_from_its_chain_index_entry() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    // the last item, so no later link breaks: only the index entry (and checkpoint) can tell
    forge_manifest(site, &item_dir(site, 4), |m| {
        m["camera_location"] = "somewhere else".into();
    });
    detected(
        "seq 4's manifest edited and re-signed",
        &p,
        &["seq 4", "differs from the one recorded in the chain index (manifest replaced)"],
    );
}

/// The newest checkpoint's file of cam1.
fn last_checkpoint(site: &Path) -> PathBuf {
    let dir = site.join("store/chain/test-site/cam1/checkpoints");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v.pop().unwrap()
}

#[test]
fn a_rewritten_checkpoint() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    let cp = last_checkpoint(site);
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    c["last_hash"] = "cd".repeat(32).into();
    let signer = vigil::signing::Signer::load(&site.join("keys/signing.key")).unwrap();
    let (bytes, sig, _) = vigil::signing::seal(&c, &signer).unwrap();
    std::fs::write(&cp, bytes).unwrap();
    std::fs::write(cp.with_extension("json.sig"), sig).unwrap();
    detected(
        "newest checkpoint rewritten with another head hash (re-signed)",
        &p,
        &["seq 4", "differs from the checkpoint of", "chain rewritten"],
    );
}

#[test]
fn an_extra_file_in_an_item() {
    let (_t, p) = copy();
    std::fs::write(item_dir(p.parent().unwrap(), 2).join("extra.mp4"), b"planted").unwrap();
    detected("a file planted in item seq 2", &p, &["seq 2", "extra.mp4 is in the item but not in its manifest"]);
}

#[test]
fn a_tampered_chain_index_entry() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    flip_byte(&site.join("store/chain/test-site/cam1/seq/000000000002.json"), 0.5);
    detected(
        "flipped byte in the chain index entry of seq 2",
        &p,
        &["chain index entry", "000000000002.json", "signature does not match"],
    );
}

#[test]
fn a_tampered_checkpoint() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    let cp = last_checkpoint(site);
    flip_byte(&cp, 0.5);
    let name = cp.file_name().unwrap().to_string_lossy().into_owned();
    detected("flipped byte in the newest checkpoint", &p, &["checkpoint", &name, "signature does not match"]);
}

#[test]
fn truncated_files_and_bad_keys_and_a_non_store_are_clear_errors() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    let m = item_dir(site, 1).join("manifest.json");
    let b = std::fs::read(&m).unwrap();
    std::fs::write(&m, &b[..b.len() / 2]).unwrap();
    let c = item_dir(site, 4).join("clip.mp4");
    let b = std::fs::read(&c).unwrap();
    std::fs::write(&c, &b[..b.len() / 3]).unwrap();
    detected(
        "truncated manifest (seq 1) and truncated clip (seq 4)",
        &p,
        &["not a readable manifest", "clip.mp4: SHA-256 is"],
    );

    // a key file that is not a key
    std::fs::write(site.join("bad.pub"), "hello").unwrap();
    let out = vigil()
        .args(["verify", "--pipeline", p.to_str().unwrap(), "--public-key"])
        .arg(site.join("bad.pub"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("bad.pub") && err.contains("not a vigil Ed25519 public key"), "{err}");
    // a directory that is not a vigil store
    let empty = tempfile::tempdir().unwrap();
    let out = vigil()
        .args(["verify", "--store", empty.path().to_str().unwrap(), "--public-key"])
        .arg(site.join("keys/signing.pub"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("holds no vigil evidence"), "{err}");
}

#[test]
fn reviewers_get_verified_items_only() {
    let (t, p) = copy();
    let site = p.parent().unwrap();
    let out = t.path().join("review");
    let id = id_of(2);
    let o = vigil()
        .args(["evidence", "get", &id, "--out"])
        .arg(&out)
        .args(["--pipeline", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["clip.mp4", "snapshot.jpg", "snapshot-annotated.jpg", "manifest.json", "manifest.sig"] {
        assert!(out.join(&id).join(f).exists(), "{f} written");
    }
    // tamper with item 3: get refuses and writes nothing
    flip_byte(&item_dir(site, 3).join("snapshot-annotated.jpg"), 0.5);
    let id3 = id_of(3);
    let o = vigil()
        .args(["evidence", "get", &id3, "--out"])
        .arg(&out)
        .args(["--pipeline", p.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("failed verification; nothing written") && err.contains("snapshot-annotated.jpg"), "{err}");
    assert!(!out.join(&id3).exists());
    // a deleted neighbour does not make item 2 wrong (its link is checked against the signed
    // chain index), but the reviewer is told
    std::fs::remove_dir_all(item_dir(site, 1)).unwrap();
    let o = vigil()
        .args(["evidence", "get", &id, "--out"])
        .arg(t.path().join("again"))
        .args(["--pipeline", p.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning: elsewhere in this camera's chain") && err.contains("seq 1"), "{err}");
    // item 2 with the manifest of item 4 in its place: refused
    for f in ["manifest.json", "manifest.sig"] {
        std::fs::copy(item_dir(site, 4).join(f), item_dir(site, 2).join(f)).unwrap();
    }
    let o = vigil()
        .args(["evidence", "get", &id, "--out"])
        .arg(t.path().join("third"))
        .args(["--pipeline", p.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("moved or swapped"), "{err}");
    assert!(!t.path().join("third").join(&id).exists());
    // list with filters
    let o = vigil()
        .args([
            "evidence",
            "list",
            "--json",
            "--status",
            "enforcement",
            "--camera",
            "cam1",
            "--pipeline",
            p.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let l: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(l.len(), 3, "items 2 (with 4's manifest), 3, 4 remain: {l:?}");
    let o = vigil()
        .args(["evidence", "list", "--json", "--status", "advisory", "--pipeline", p.to_str().unwrap()])
        .output()
        .unwrap();
    let l: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(l.is_empty());
}

#[test]
fn hostile_row03_the_store_never_follows_a_symlink_out_of_its_root() {
    let (t, p) = copy();
    let site = p.parent().unwrap();
    // item 2's directory replaced by a link to an outside directory holding the same files
    let outside = t.path().join("outside");
    assert!(Command::new("cp").arg("-a").arg(item_dir(site, 2)).arg(&outside).status().unwrap().success());
    std::fs::remove_dir_all(item_dir(site, 2)).unwrap();
    std::os::unix::fs::symlink(&outside, item_dir(site, 2)).unwrap();
    // verify names the link (and the item behind it counts as missing from the chain)
    let (code, text) = verify(&p, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("(a symbolic link) in the store") && text.contains(&id_of(2)), "{text}");
    // a sweep at a time when every item has expired deletes the others, never the outside files
    let (store, key) = vigil::cli::StoreArgs::of_pipeline(p.clone()).open().unwrap();
    let far = chrono::Utc::now() + chrono::Duration::days(400);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(vigil::retention::sweep(&store, &key, 30, far, false)).unwrap();
    assert_eq!(r.removed.len(), 3 * 5, "items 1, 3, 4: {:?}", r.removed);
    for f in ["clip.mp4", "manifest.json", "manifest.sig", "snapshot.jpg"] {
        assert!(outside.join(f).exists(), "{f} outside the store untouched");
    }
    // reading or deleting through the link is refused by name
    let key2 = format!("{}/clip.mp4", base().items.iter().find(|i| i.0 == 2).unwrap().2);
    let e = rt.block_on(store.get(&key2)).unwrap_err().to_string();
    assert!(e.contains("is a symbolic link"), "{e}");
    let e = rt.block_on(store.delete(&key2)).unwrap_err().to_string();
    assert!(e.contains("is a symbolic link"), "{e}");
    assert!(outside.join("clip.mp4").exists());
}

#[test]
fn hostile_row04_evidence_get_writes_into_a_fresh_directory_only() {
    let (t, p) = copy();
    let id = id_of(2);
    let get = |out: &Path| {
        let o = vigil()
            .args(["evidence", "get", &id, "--out"])
            .arg(out)
            .args(["--pipeline", p.to_str().unwrap()])
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let victim = t.path().join("victim.txt");
    std::fs::write(&victim, "untouched").unwrap();
    // DIR/ID/clip.mp4 planted as a symlink to another file
    let planted = t.path().join("planted");
    std::fs::create_dir_all(planted.join(&id)).unwrap();
    std::os::unix::fs::symlink(&victim, planted.join(&id).join("clip.mp4")).unwrap();
    let (code, err) = get(&planted);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("already exists and is not empty"), "{err}");
    // DIR/ID itself a symlink
    let linked = t.path().join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(t.path(), linked.join(&id)).unwrap();
    let (code, err) = get(&linked);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
    // DIR a symlink
    let dir_link = t.path().join("dir-link");
    std::os::unix::fs::symlink(t.path().join("elsewhere"), &dir_link).unwrap();
    let (code, err) = get(&dir_link);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    // a second get into the same place does not overwrite the first
    let fresh = t.path().join("fresh");
    assert_eq!(get(&fresh).0, Some(0));
    let (code, err) = get(&fresh);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn hostile_row07_a_fifo_in_place_of_a_clip_is_reported_never_waited_on() {
    let (t, p) = copy();
    let site = p.parent().unwrap();
    let clip = item_dir(site, 3).join("clip.mp4");
    std::fs::remove_file(&clip).unwrap();
    let c = std::ffi::CString::new(clip.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let start = std::time::Instant::now();
    let (code, text) = verify(&p, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("clip.mp4 (not a regular file) in the store"), "{text}");
    assert!(text.contains("clip.mp4 is missing"), "{text}");
    let o = vigil()
        .args(["evidence", "get", &id_of(3), "--out"])
        .arg(t.path().join("out"))
        .args(["--pipeline", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(start.elapsed() < Duration::from_secs(30), "no hang: {:?}", start.elapsed());
}

#[test]
fn hostile_row11_an_unknown_camera_or_filter_value_is_an_error() {
    let p = base().dir.join("site.toml");
    let run = |args: &[&str]| {
        let o = vigil().args(args).args(["--pipeline", p.to_str().unwrap()]).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let (code, err) = run(&["verify", "--camera", "NO_SUCH_CAMERA"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("camera \"NO_SUCH_CAMERA\" has no evidence and no chain") && err.contains("cam1"), "{err}");
    let (code, err) = run(&["evidence", "list", "--status", "bogus"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--status \"bogus\": not a status (enforcement | advisory)"), "{err}");
    let (code, err) = run(&["evidence", "list", "--camera", "nope"]);
    assert!(code == Some(2) && err.contains("--camera \"nope\"") && err.contains("cam1"), "{err}");
    let (code, err) = run(&["evidence", "list", "--rule", "no_such_rule"]);
    assert!(code == Some(2) && err.contains("--rule \"no_such_rule\""), "{err}");
    // known values still select
    assert_eq!(run(&["evidence", "list", "--status", "advisory"]).0, Some(0));
}

#[test]
fn verify_and_list_filters_select_what_they_say() {
    let b = base();
    let p = b.dir.join("site.toml");
    let json = |args: &[&str]| -> serde_json::Value {
        let o = vigil().args(args).args(["--pipeline", p.to_str().unwrap()]).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let time_of = |seq: u64| -> String {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(item_dir(&b.dir, seq).join("manifest.json")).unwrap()).unwrap();
        m["violation_time_utc"].as_str().unwrap().to_string()
    };
    let checked = |args: &[&str]| json(&[&["verify", "--json"], args].concat())["items_checked"].as_u64().unwrap();
    assert_eq!(checked(&[]), 4);
    assert_eq!(checked(&["--evidence", &id_of(2)]), 1);
    assert_eq!(checked(&["--camera", "cam1"]), 4);
    assert_eq!(checked(&["--from", &time_of(3)]), 2);
    assert_eq!(checked(&["--to", &time_of(2)]), 2);
    let listed = |args: &[&str]| json(&[&["evidence", "list", "--json"], args].concat()).as_array().unwrap().len();
    assert_eq!(listed(&["--rule", "no_mask"]), 4);
    assert_eq!(listed(&["--rule", "utensils_left"]), 0);
    assert_eq!(listed(&["--admissible", "true"]), 4);
    assert_eq!(listed(&["--admissible", "false"]), 0);
    assert_eq!(listed(&["--status", "enforcement", "--camera", "cam1"]), 4);
    assert_eq!(listed(&["--from", &time_of(3)]), 2);
    assert_eq!(listed(&["--from", &time_of(2), "--to", &time_of(3)]), 2);
    let ids: Vec<String> = json(&["evidence", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["evidence_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, (1..=4).map(id_of).collect::<Vec<_>>(), "listed by violation time");
}

#[test]
fn retention_sweep_removes_only_what_has_expired() {
    let (_t, p) = copy();
    let site = p.parent().unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(item_dir(site, 1).join("manifest.json")).unwrap()).unwrap();
    let until = chrono::DateTime::parse_from_rfc3339(m["retention"]["retain_until_utc"].as_str().unwrap()).unwrap();
    assert_eq!(m["retention"]["min_days"], 365);
    let sweep = |args: &[&str]| {
        let o = vigil().args(["retention", "sweep", "--pipeline", p.to_str().unwrap()]).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        (o.status.code(), serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default(), err)
    };
    let removed = |r: &serde_json::Value| r["removed"].as_array().map(|a| a.len()).unwrap_or(usize::MAX);
    let (code, r, err) = sweep(&["--simulate-now", &(until - chrono::Duration::days(1)).to_rfc3339()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(removed(&r), 0, "nothing younger than its class is removed: {r}");
    // a non-evidence image: 30 days, by the real clock
    let img = site.join("store/images/test-site/cam1/reference.jpg");
    std::fs::create_dir_all(img.parent().unwrap()).unwrap();
    let aged = |days: u64| {
        std::fs::write(&img, b"jpeg").unwrap();
        let f = std::fs::File::options().write(true).open(&img).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(days * 86_400)).unwrap();
    };
    aged(29);
    let (_, r, err) = sweep(&[]);
    assert!(removed(&r) == 0 && img.exists(), "{r} {err}");
    // the 30-day class and the 365-day class apart: at 31 days the image goes, the evidence stays
    aged(31);
    let (_, r, err) = sweep(&[]);
    assert_eq!(removed(&r), 1, "{r} {err}");
    assert_eq!(r["kept_items"], 4, "{r}");
    assert!(!img.exists() && item_dir(site, 1).join("clip.mp4").exists());
    // a clock moved forward never deletes: --now later than the real clock is refused ...
    let later = (until + chrono::Duration::days(2)).to_rfc3339();
    let (code, _, err) = sweep(&["--now", &later]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("later than the real clock") && err.contains("--simulate-now"), "{err}");
    assert!(item_dir(site, 1).join("clip.mp4").exists(), "nothing deleted");
    // ... and --simulate-now says what would go then, deleting nothing
    let (code, dry, err) = sweep(&["--simulate-now", &later]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(removed(&dry), 4 * 5, "{dry}");
    assert!(item_dir(site, 1).join("clip.mp4").exists(), "a simulated sweep deletes nothing");
    // the sweep itself at that time (the library call the CLI makes when the time has come)
    let (store, key) = vigil::cli::StoreArgs::of_pipeline(p.clone()).open().unwrap();
    let at = until.with_timezone(&chrono::Utc) + chrono::Duration::days(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(vigil::retention::sweep(&store, &key, 30, at, false)).unwrap();
    assert_eq!(r.removed.len(), 4 * 5, "all four items, 5 objects each: {:?}", r.removed);
    assert!(!item_dir(site, 1).join("clip.mp4").exists());
    // verify tells expired items from deleted ones: as of the sweep's time all is in order ...
    let (code, text) = verify(&p, &["--now", &later]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("expired under retention: [1, 2, 3, 4]"), "{text}");
    // ... while today the same removals are deletions before their date
    let (code, text) = verify(&p, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("seq 1") && text.contains("its manifest is gone (item deleted)"), "{text}");
}

#[test]
fn the_sealed_original_opens_with_the_authority_key_only() {
    let authority = age::x25519::Identity::generate();
    let recipient = authority.to_public().to_string();
    let site = Site::new(
        &format!("[clip]\npre_roll_s = 1\npost_roll_s = 1\n[evidence]\nseal_recipient = \"{recipient}\"\n"),
        &camera_toml(&format!("privacy_mask = \"{}\"", repo().join("privacy-masks/cam-astronaut.toml").display())),
    );
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    let ev = &site.outbox()[0]["payload"];
    let id = ev["evidence_id"].as_str().unwrap();
    assert_eq!(ev["sealed_original"]["recipient"], recipient.as_str());
    assert!(ev["artifacts"]["sealed_original"]["key"].as_str().unwrap().ends_with("original.mp4.age"));
    use age::secrecy::ExposeSecret;
    let idf = site.path("authority.key");
    std::fs::write(&idf, format!("{}\n", authority.to_string().expose_secret())).unwrap();
    let out = site.path("unsealed");
    let o = vigil()
        .args(["evidence", "unseal", id, "--identity"])
        .arg(&idf)
        .arg("--out")
        .arg(&out)
        .args(["--pipeline", site.pipeline.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let original = out.join(format!("{id}-original.mp4"));
    assert_eq!(sha256(&std::fs::read(&original).unwrap()), ev["sealed_original"]["plaintext_sha256"].as_str().unwrap());
    // the original is unmasked: the band the mask blacks out in the clip has picture in it
    let frames = decode_mp4(&original);
    assert!(frames.len() as u64 >= ev["clip"]["frames"].as_u64().unwrap());
    let f = &frames[frames.len() / 2];
    let bright: u64 = (0..f.height).map(|y| f.px(f.width - 20, y).iter().map(|&v| v as u64).sum::<u64>()).sum();
    assert!(bright / (f.height as u64 * 3) > 40, "the sealed original keeps the pixels the mask hides");
    // another identity cannot open it
    std::fs::write(&idf, format!("{}\n", age::x25519::Identity::generate().to_string().expose_secret())).unwrap();
    let o = vigil()
        .args(["evidence", "unseal", id, "--identity"])
        .arg(&idf)
        .arg("--out")
        .arg(site.path("nope"))
        .args(["--pipeline", site.pipeline.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot decrypt"));
}

#[test]
fn manifest_parsing_and_verification_never_panic_on_mutated_input() {
    // property test, bounded: random byte flips, truncations and insertions of a real manifest and
    // signature are always rejected with an error (and never accepted, never a panic)
    let b = base();
    let dir = b.dir.join("store").join(&b.items[0].2);
    let m = std::fs::read(dir.join("manifest.json")).unwrap();
    let s = std::fs::read(dir.join("manifest.sig")).unwrap();
    let key = vigil::signing::PublicKey::load(&b.dir.join("keys/signing.pub")).unwrap();
    vigil::signing::open::<vigil::evidence::Manifest>(&m, &s, &key).expect("the original verifies");
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let start = std::time::Instant::now();
    let mut n = 0;
    while n < 3000 {
        let (mut mm, mut ss) = (m.clone(), s.clone());
        let target = if rnd() % 4 == 0 { &mut ss } else { &mut mm };
        match rnd() % 3 {
            0 => {
                let i = (rnd() as usize) % target.len();
                target[i] ^= 1 << (rnd() % 8);
            }
            1 => {
                let l = (rnd() as usize) % target.len();
                target.truncate(l);
            }
            _ => {
                let i = (rnd() as usize) % target.len();
                target.insert(i, (rnd() % 256) as u8);
            }
        }
        if mm == m && ss == s {
            continue;
        }
        let r = std::panic::catch_unwind(|| vigil::signing::open::<vigil::evidence::Manifest>(&mm, &ss, &key));
        assert!(matches!(r, Ok(Err(_))), "mutation {n} was accepted or panicked");
        let _ = serde_json::from_slice::<vigil::evidence::Manifest>(&mm);
        n += 1;
    }
    assert_eq!(n, 3000);
    println!(
        "| 3,000 random mutations of a manifest and its signature | all rejected, no panic | {:.1} s |",
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn evidence_on_s3_is_write_once_and_locked_until_its_retention_date() {
    let moto = Moto::start();
    let py = |code: &str| -> serde_json::Value {
        let prelude = format!(
            "import boto3, json, datetime\ns3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='test', aws_secret_access_key='test')\n",
            moto.endpoint
        );
        let o = Command::new("python3").arg("-c").arg(prelude + code).output().unwrap();
        assert!(o.status.success(), "python: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    py("s3.create_bucket(Bucket='locked', ObjectLockEnabledForBucket=True)\nprint('{}')");
    let opts = format!(
        "aws_endpoint = \"{}\"\naws_allow_http = \"true\"\naws_region = \"us-east-1\"\n\
         aws_access_key_id = \"test\"\naws_secret_access_key = \"test\"\n",
        moto.endpoint
    );
    let site =
        Site::new(&format!("[clip]\npre_roll_s = 1\npost_roll_s = 1\n[store.options]\n{opts}"), &camera_toml(""));
    let text = std::fs::read_to_string(&site.pipeline)
        .unwrap()
        .replace("url = \"store\"", "url = \"s3://locked/vigil\"\nobject_lock = true");
    std::fs::write(&site.pipeline, text).unwrap();
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    let ev = &site.outbox()[0]["payload"];
    let key = format!("vigil/{}", ev["artifacts"]["clip"]["key"].as_str().unwrap());
    let r = py(&format!(
        "k = '{key}'\nh = s3.head_object(Bucket='locked', Key=k)\nv = h['VersionId']\n\
         out = {{'mode': h.get('ObjectLockMode'), 'until': h['ObjectLockRetainUntilDate'].isoformat(), 'version': v}}\n\
         try:\n    s3.delete_object(Bucket='locked', Key=k, VersionId=v)\n    out['delete'] = 'deleted'\n\
         except Exception as e:\n    out['delete'] = str(e)\n\
         s3.put_object(Bucket='locked', Key=k, Body=b'forged')\n\
         orig = s3.get_object(Bucket='locked', Key=k, VersionId=v)['Body'].read()\n\
         import hashlib\nout['original_sha256'] = hashlib.sha256(orig).hexdigest()\nprint(json.dumps(out))"
    ));
    assert_eq!(r["mode"], "COMPLIANCE", "{r}");
    let until = chrono::DateTime::parse_from_rfc3339(r["until"].as_str().unwrap()).unwrap();
    assert!(until > chrono::Utc::now() + chrono::Duration::days(364), "locked until {until}");
    assert!(r["delete"].as_str().unwrap().contains("AccessDenied"), "a locked version cannot be deleted: {r}");
    assert_eq!(
        r["original_sha256"], ev["artifacts"]["clip"]["sha256"],
        "the locked version is intact after an overwrite attempt"
    );
    // vigil's own writes are create-only: a second write of the same key is refused
    let mut o = std::collections::BTreeMap::new();
    for l in opts.lines() {
        let (k, v) = l.split_once(" = ").unwrap();
        o.insert(k.to_string(), v.trim_matches('"').to_string());
    }
    let store = vigil::store::Store::open_with("s3://locked/vigil", &o, true).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let k = ev["artifacts"]["snapshot"]["key"].as_str().unwrap();
    let e = rt.block_on(store.put_evidence(k, bytes::Bytes::from_static(b"x"), chrono::Utc::now())).unwrap_err();
    assert!(format!("{e:#}").contains("never overwritten"), "{e:#}");
    println!("| S3 (moto) Object Lock | COMPLIANCE until {until}; delete of the locked version: {} |", r["delete"]);
}

/// Issue 18: `vigil keys rotate` — the last checkpoint of the old key is countersigned by the new
/// one, the chain goes on under the new key, `vigil verify` accepts each key for its period, and
/// a key used outside its period (or missing from the key file) is a failure.
#[test]
fn a_rotated_key_verifies_for_its_period_and_the_chain_goes_on() {
    let (t, pipeline) = copy();
    let old_pub = std::fs::read_to_string(t.path().join("keys/signing.pub")).unwrap();
    let out = vigil().args(["keys", "rotate", "--pipeline", pipeline.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    println!("{text}");
    assert!(text.contains("camera cam1: last checkpoint of key") && text.contains("at seq 4"), "{text}");
    let ring = std::fs::read_to_string(t.path().join("keys/signing.pub")).unwrap();
    let lines: Vec<&str> = ring.lines().collect();
    assert_eq!(lines.len(), 2, "{ring}");
    assert!(lines[0].contains("valid_from=") && !lines[0].contains("valid_until"), "{ring}");
    assert!(lines[1].starts_with(old_pub.trim()) && lines[1].contains("valid_until="), "{ring}");
    let retired: Vec<_> = std::fs::read_dir(t.path().join("keys/retired")).unwrap().collect();
    assert_eq!(retired.len(), 1, "the old secret key is kept aside, not deleted");
    let cp_dir = t.path().join("store/chain/test-site/cam1/checkpoints");
    let handover = std::fs::read_dir(&cp_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".next.sig"))
        .expect("a countersigned hand-over checkpoint");
    // the chain goes on under the new key
    let (code, log) = run_to_end(&["run", pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    let events: Vec<serde_json::Value> = std::fs::read_to_string(t.path().join("data/outbox.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["subject"].as_str().unwrap().starts_with("vigil.evidence"))
        .collect();
    let last = &events.last().unwrap()["payload"];
    assert_eq!(last["chain"]["seq"], 5, "the chain continues");
    assert_ne!(last["signing"]["key_id"], events[0]["payload"]["signing"]["key_id"], "signed with the new key");
    let (code, text) = verify(&pipeline, &[]);
    assert_eq!(code, 0, "both keys verify, each for its period:\n{text}");
    assert!(text.contains("5 item(s)"), "{text}");
    println!("| key rotated after seq 4, seq 5 under the new key | passes | OK |");

    // a countersignature that does not verify
    let mut sig: serde_json::Value = serde_json::from_slice(&std::fs::read(&handover).unwrap()).unwrap();
    let good = sig.clone();
    // another first base64 character: always a different signature (a swap of letters the
    // signature may not contain left it unchanged now and then)
    let text = good["signature"].as_str().unwrap();
    let first = if text.starts_with('A') { "B" } else { "A" };
    sig["signature"] = format!("{first}{}", &text[1..]).into();
    std::fs::write(&handover, serde_json::to_vec(&sig).unwrap()).unwrap();
    detected("hand-over countersignature altered", &pipeline, &["key hand-over checkpoint"]);
    std::fs::write(&handover, serde_json::to_vec(&good).unwrap()).unwrap();

    // the old key's period ends before its items were signed
    let early = ring.lines().nth(1).unwrap().split(" valid_until=").next().unwrap().to_string()
        + " valid_until=2020-01-01T00:00:00Z";
    std::fs::write(t.path().join("keys/signing.pub"), format!("{}\n{early}\n", lines[0])).unwrap();
    detected("old key's period cut short (items signed after it)", &pipeline, &["outside its period"]);
    // the old key left out of the key file
    std::fs::write(t.path().join("keys/signing.pub"), format!("{}\n", lines[0])).unwrap();
    detected("old key missing from the public key file", &pipeline, &["not with the trusted key"]);
}
