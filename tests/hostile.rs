//! Hostile and careless input (issue 14): one test per row of the table in the README's
//! "Hostile input" section, each on the path the row names; and property tests (proptest, bounded
//! cases) of the pipeline-file, privacy-mask and KV-value parsers. The rows that need a store of
//! signed evidence (symlinks in the store, `evidence get` into a planted directory, a FIFO in
//! place of a clip, unknown filter values) are in `evidence_integrity.rs`, beside its fixtures.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;

fn camera(extra: &str) -> String {
    format!(
        "[[cameras]]\nid = \"cam1\"\nsource = \"{}\"\nrealtime = false\n{extra}\n[[cameras.rules]]\nkind = \"no_mask\"\nmin_hits = 3\nwindow = 5\n",
        sample("astronaut-pan.mp4").display()
    )
}

// ---- row 1: size limits on what becomes a message; a refused message never blocks the outbox

#[test]
fn row01_an_oversized_override_is_refused_and_a_message_the_broker_refuses_is_moved_aside() {
    use vigil::control::overrides::Override;
    // a 900 KB reason in a KV value: refused as a whole, with a short reason
    let big = serde_json::json!({"by": "mallory", "reason": "x".repeat(900_000), "set": {"threshold": 0.5}});
    let e = Override::parse(&serde_json::to_vec(&big).unwrap()).unwrap_err();
    assert!(e.contains("900052 bytes, more than the 65536") && e.len() < 200, "{e}");
    let long = serde_json::json!({"by": "mallory", "reason": "x".repeat(2000), "set": {}});
    let e = Override::parse(&serde_json::to_vec(&long).unwrap()).unwrap_err();
    assert!(e.contains("\"reason\" must be 0 to 1024 characters"), "{e}");
    // the CLI refuses it before it reaches any broker (nothing listens on port 9)
    let o = vigil()
        .args(["thresholds", "set", "--nats", "nats://127.0.0.1:9", "--site", "s", "--camera", "c"])
        .args(["--rule", "no_mask", "--by", "ops", "--reason", &"y".repeat(100_000), "threshold=0.8"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--reason must be 0 to 1024 characters") && err.len() < 400, "{err}");

    // the outbox: a message the broker will never take goes aside, the ones behind it flow on
    let nats = Nats::start();
    let d = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pending = rt.block_on(async {
        use vigil::publish::{OutboxEntry, Publisher};
        use vigil::util::Subject;
        let p = Publisher::start(
            d.path(),
            Some(&vigil::util::nats::Endpoint::plain(&nats.url)),
            "VIGIL",
            Duration::from_secs(120),
        )
        .await
        .unwrap();
        let huge = serde_json::json!({"blob": "z".repeat(2 << 20)});
        p.submit(OutboxEntry::new("audit-huge", Subject::audit("s", "c"), &huge)).await.unwrap();
        p.submit(OutboxEntry::new("ev-1", Subject::evidence("s", "c"), &serde_json::json!({"n": 1}))).await.unwrap();
        p.flush(Duration::from_secs(30)).await
    });
    assert_eq!(pending, 0, "nothing left waiting behind the refused message");
    let msgs = nats.messages("VIGIL");
    assert_eq!(msgs.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(), vec!["ev-1"], "{msgs:?}");
    let dead = std::fs::read_to_string(d.path().join("outbox.dead.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(line["entry"]["id"], "audit-huge");
    assert_eq!(line["reason"], "max_payload");
    let metrics = vigil::telemetry::metrics::get().render();
    assert!(metrics.contains("vigil_outbox_dead_letters_total{reason=\"max_payload\"} 1"), "{metrics}");
    // and it is not sent again on the next start: it is acknowledged as handled
    assert!(vigil::publish::unacked(d.path()).unwrap().is_empty());
}

// ---- row 2: a destructive command never trusts a clock moved forward

#[test]
fn row02_retention_sweep_refuses_a_clock_moved_forward() {
    let site = Site::new("", &camera("privacy_mask = \"none\""));
    std::fs::create_dir_all(site.path("store/evidence")).unwrap();
    let keys = site.path("keys");
    assert!(vigil().args(["keys", "init", "--dir"]).arg(&keys).output().unwrap().status.success());
    let o = vigil()
        .args(["retention", "sweep", "--pipeline"])
        .arg(&site.pipeline)
        .args(["--now", "2100-01-01T00:00:00Z"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--now 2100-01-01T00:00:00.000Z is later than the real clock"), "{err}");
    let o = vigil()
        .args(["retention", "sweep", "--pipeline"])
        .arg(&site.pipeline)
        .args(["--simulate-now", "2100-01-01T00:00:00Z"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["dry_run"], true, "--simulate-now never deletes: {r}");
    // (the full sweep over signed items, classes and verify afterwards:
    // evidence_integrity::retention_sweep_removes_only_what_has_expired)
}

// ---- row 5: bounded durations, checked at load

#[test]
fn row05_a_retention_beyond_its_range_is_a_config_error() {
    for (extra, key) in [
        ("[retention]\nevidence_days = 100000000\n", "retention.evidence_days"),
        ("[retention]\nevidence_days = 100\n", "retention.evidence_days"),
        ("[retention]\nimage_days = 7\n", "retention.image_days"),
    ] {
        let site = Site::new(extra, &camera("privacy_mask = \"none\""));
        let (code, out) = check(&site.pipeline);
        assert_eq!(code, 2, "{extra}: {out}");
        assert!(out.contains("site.toml") && out.contains(key) && out.contains("36500"), "{extra}: {out}");
    }
    // the date arithmetic itself cannot overflow: far dates are None, not a panic
    let t = chrono::Utc::now();
    assert!(vigil::util::time::add_days(t, u32::MAX).is_none());
    assert!(vigil::util::time::add_days(t, 365).is_some());
}

// ---- row 6: decode errors inside the clip window are health facts

fn damaged_copy(dir: &Path, offset: usize) -> std::path::PathBuf {
    let mut b = std::fs::read(sample("astronaut-pan.mp4")).unwrap();
    // 100 KB of (seeded) random bytes over the encoded frames
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for byte in &mut b[offset..offset + 100_000] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    let p = dir.join("damaged.mp4");
    std::fs::write(&p, b).unwrap();
    p
}

#[test]
fn row06_frames_that_do_not_decode_make_the_item_inadmissible_with_the_reason() {
    let run = |source: &Path| {
        let site = Site::new(
            "[clip]\npre_roll_s = 3\npost_roll_s = 3\n",
            &camera("privacy_mask = \"none\"")
                .replace(&sample("astronaut-pan.mp4").display().to_string(), &source.display().to_string()),
        );
        let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
        assert_eq!(code, 0, "{log}");
        let first = site.outbox().into_iter().next().unwrap_or_else(|| panic!("no evidence: {log}"));
        let key = first["payload"]["artifacts"]["clip"]["key"].as_str().unwrap().to_string();
        let frames = decode_mp4(&site.path("store").join(&key));
        (first["payload"].clone(), frames, site)
    };
    // the clean stream: admissible, no decode facts
    let (clean, frames, _s) = run(&sample("astronaut-pan.mp4"));
    assert_eq!(clean["admissibility"]["admissible"], true, "{}", clean["admissibility"]);
    let max_step = frames.windows(2).map(|w| w[1].pts - w[0].pts).max().unwrap();
    assert!(max_step <= Duration::from_millis(41), "{max_step:?}");
    // 100 KB overwritten inside the window
    let t = tempfile::tempdir().unwrap();
    let (ev, frames, _s) = run(&damaged_copy(t.path(), 60_000));
    let reasons: Vec<String> =
        ev["admissibility"]["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    assert_eq!(ev["admissibility"]["admissible"], false, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("frame(s) of the clip window could not be decoded")), "{reasons:?}");
    let hole = reasons
        .iter()
        .find(|r| r.contains("decoded video has a hole of"))
        .unwrap_or_else(|| panic!("the hole is named: {reasons:?}"));
    // the hole the manifest names is the hole in the stored clip
    let stored = frames.windows(2).map(|w| w[1].pts - w[0].pts).max().unwrap();
    let named: f64 = hole.split("hole of ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(stored > Duration::from_secs(1), "the stored clip skips {stored:?}");
    assert!((stored.as_secs_f64() - named).abs() < 0.05, "manifest says {named} s, clip skips {stored:?}");
    assert!(ev["health"]["normal"] == false, "{}", ev["health"]);
    println!("| 6 | 100 KB overwritten | admissible false: {} |", reasons.join("; "));
}

// ---- row 7: every file vigil reads is bounded and must be a regular file

#[test]
fn row07_devices_and_huge_files_are_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    // the pipeline file a link to /dev/zero
    let link = t.path().join("site.toml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let start = Instant::now();
    let (code, out) = check(&link);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("site.toml") && out.contains("not a regular file (a character device)"), "{out}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // a 2 MB pipeline file
    let big = t.path().join("big.toml");
    std::fs::write(&big, "#".repeat(2 << 20)).unwrap();
    let (code, out) = check(&big);
    assert!(code == 2 && out.contains("big.toml") && out.contains("more than the 1048576 bytes"), "{out}");
    // the privacy mask /dev/zero
    let site = Site::new("", &camera("privacy_mask = \"/dev/zero\""));
    let (code, out) = check(&site.pipeline);
    assert!(code == 2 && out.contains("cameras[0].privacy_mask") && out.contains("/dev/zero"), "{out}");
    assert!(out.contains("not a regular file"), "{out}");
    // a FIFO as the mask: no hang
    let fifo = t.path().join("mask.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let site = Site::new("", &camera(&format!("privacy_mask = \"{}\"", fifo.display())));
    let start = Instant::now();
    let (code, out) = check(&site.pipeline);
    assert!(code == 2 && out.contains("a FIFO"), "{out}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

// ---- row 8: empty masks and degenerate polygons are errors; no mask is said explicitly

#[test]
fn row08_empty_masks_and_degenerate_polygons_are_errors_and_no_mask_is_said_explicitly() {
    let t = tempfile::tempdir().unwrap();
    for (name, text, needle) in [
        ("empty.toml", "", "no polygons"),
        ("none.toml", "polygons = []\n", "privacy_mask = \"none\""),
        (
            "flat.toml",
            "[[polygons]]\nname = \"shelf\"\npoints = [[0.1,0.1],[0.5,0.5],[0.9,0.9]]\n",
            "polygon 0 (shelf)",
        ),
    ] {
        let m = t.path().join(name);
        std::fs::write(&m, text).unwrap();
        let site = Site::new("", &camera(&format!("privacy_mask = \"{}\"", m.display())));
        let (code, out) = check(&site.pipeline);
        assert_eq!(code, 2, "{name}: {out}");
        assert!(out.contains(name) && out.contains(needle), "{name}: {out}");
    }
    // a zone with no area
    let site = Site::new(
        "",
        &camera("privacy_mask = \"none\"")
            .replace("window = 5\n", "window = 5\nzone = [[0.2,0.2],[0.4,0.4],[0.6,0.6]]\n"),
    );
    let (code, out) = check(&site.pipeline);
    assert!(code == 2 && out.contains("rules[0].zone") && out.contains("degenerate"), "{out}");
    // "none" is quiet; no key at all is a warning
    let (code, out) = check(&Site::new("", &camera("privacy_mask = \"none\"")).pipeline);
    assert!(code == 0 && !out.contains("warning"), "{out}");
    let (code, out) = check(&Site::new("", &camera("")).pipeline);
    assert!(code == 0 && out.contains("warning") && out.contains("no privacy mask"), "{out}");
}

// ---- row 9: keys

#[test]
fn row09_keys_are_private_whatever_the_umask_and_never_written_through_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("keys");
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000 && exec {} keys init --dir {}", env!("CARGO_BIN_EXE_vigil"), dir.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("signing.key")), 0o600);
    assert_eq!(mode(&dir.join("signing.pub")), 0o644);
    // a key readable by others is refused, with the chmod to run
    let key = dir.join("signing.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let Err(e) = vigil::signing::Signer::load(&key).map(|_| ()) else { panic!("a readable key was used") };
    let e = e.to_string();
    assert!(e.contains("signing.key") && e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(vigil::signing::Signer::load(&key).is_ok());
    // --public-key given the secret key
    let Err(e) = vigil::signing::PublicKey::load(&key).map(|_| ()) else { panic!("a secret key taken as public") };
    let e = e.to_string();
    assert!(e.contains("secret key"), "{e}");
    // an existing signing.pub is not overwritten; a symlink there is not written through
    let other = t.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("signing.pub"), "keep me").unwrap();
    let o = vigil().args(["keys", "init", "--dir"]).arg(&other).output().unwrap();
    assert!(!o.status.success());
    assert_eq!(std::fs::read_to_string(other.join("signing.pub")).unwrap(), "keep me");
    let victim = t.path().join("victim.txt");
    std::fs::write(&victim, "untouched").unwrap();
    let linked = t.path().join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(&victim, linked.join("signing.pub")).unwrap();
    let o = vigil().args(["keys", "init", "--dir"]).arg(&linked).output().unwrap();
    assert!(!o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(!linked.join("signing.key").exists(), "nothing half-written");
}

// ---- row 10: who and why are printable, bounded text

#[test]
fn row10_a_forged_log_line_in_by_is_refused_and_history_output_escapes() {
    let o = vigil()
        .args([
            "thresholds",
            "set",
            "--nats",
            "nats://127.0.0.1:9",
            "--site",
            "s",
            "--camera",
            "c",
            "--rule",
            "no_mask",
        ])
        .args(["--by", "mallory\n2026-01-01T00:00:00Z  INFO fake: applied", "threshold=0.8"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--by has a control character"), "{err}");
    // a value written to the KV by other means is rejected by the worker's parser the same way
    let v = serde_json::json!({"by": "mallory\n2026 INFO fake", "set": {"threshold": 0.8}});
    let e = vigil::control::overrides::Override::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(e.contains("control character"), "{e}");
    // whatever is shown is escaped
    assert_eq!(vigil::util::printable("a\nb", 64), "a\\nb");
    // the NATS user the writer connected as is recorded; a bare token is not a name
    assert_eq!(vigil::util::secret::url_user("nats://alice:pw@127.0.0.1:4222").as_deref(), Some("alice"));
    assert_eq!(vigil::util::secret::url_user("nats://s3cr3t@127.0.0.1:4222"), None);
}

// ---- row 12: empty or wrong-scheme URLs are errors; a non-loopback listener a warning

#[test]
fn row12_urls_and_listen_addresses() {
    for (extra, key, needle) in [
        ("[store]\nurl = \"  \"\n", "store.url", "empty"),
        ("[publish]\nnats_url = \"http://127.0.0.1:4222\"\n", "publish.nats_url", "scheme \"http\""),
        ("[publish]\nnats_url = \"nats://127.0.0.1:4222, ftp://x\"\n", "publish.nats_url", "scheme \"ftp\""),
        ("[publish]\nnats_url = \"nats://ops:hunter2@\"\n", "publish.nats_url", "nats://***@\" is not a URL"),
    ] {
        let text = Site::new("", &camera("privacy_mask = \"none\""));
        text.edit(|t| {
            let t = if key == "store.url" { t.replace("[store]\nurl = \"store\"\n", "") } else { t };
            format!("{extra}{t}")
        });
        let (code, out) = check(&text.pipeline);
        assert_eq!(code, 2, "{extra}: {out}");
        assert!(out.contains(key) && out.contains(needle), "{extra}: {out}");
        assert!(!out.contains("hunter2"), "no password in an error: {out}");
    }
    let site = Site::new("", &camera("privacy_mask = \"none\""));
    site.replace("data_dir = \"data\"\n", "data_dir = \"data\"\nhttp = \"0.0.0.0:80\"\n");
    let (code, out) = check(&site.pipeline);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning") && out.contains("worker.http = \"0.0.0.0:80\" listens beyond this machine"),
        "{out}"
    );
}

// ---- row 13: the watched pipeline file deleted, binary, a directory; restart-only settings

#[test]
fn row13_every_change_to_the_watched_file_is_logged_with_what_vigil_did() {
    let _rt = realtime_lock();
    let site = Site::new("", &camera("privacy_mask = \"none\"\nloop = true\nrealtime = true"));
    site.replace("realtime = false\n", "");
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("camera starting", Duration::from_secs(60));
    let kept = "kept running with the config it has";
    let good = std::fs::read_to_string(&site.pipeline).unwrap();
    // deleted
    let m = w.mark();
    std::fs::remove_file(&site.pipeline).unwrap();
    let log = w.wait_log_from(m, kept, Duration::from_secs(20));
    assert!(log.contains("pipeline file unreadable") && log.contains("cannot open"), "{log}");
    // binary
    let m = w.mark();
    std::fs::write(&site.pipeline, [0xff, 0xfe, 0x00, 0x81]).unwrap();
    let log = w.wait_log_from(m, kept, Duration::from_secs(20));
    assert!(log.contains("not UTF-8"), "{log}");
    // a directory
    std::fs::remove_file(&site.pipeline).unwrap();
    let m = w.mark();
    std::fs::create_dir(&site.pipeline).unwrap();
    let log = w.wait_log_from(m, kept, Duration::from_secs(20));
    assert!(log.contains("a directory"), "{log}");
    std::fs::remove_dir(&site.pipeline).unwrap();
    // back, with the camera's source changed: needs a restart, said so (the value is not logged)
    let m = w.mark();
    let other = sample("chelsea-pan.mp4").display().to_string();
    std::fs::write(&site.pipeline, good.replace(&sample("astronaut-pan.mp4").display().to_string(), &other)).unwrap();
    let log = w.wait_log_from(m, "needs a restart", Duration::from_secs(20));
    assert!(log.contains("cameras.cam1.source") && !log.contains("chelsea"), "{log}");
    // and the worker is still running its camera
    assert!(w.child.try_wait().unwrap().is_none(), "{}", w.log_text());
    w.sigterm();
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log_text());
}

// ---- property tests: no panic, and either Ok or an error naming the file

fn mutate(base: &str, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut b = base.as_bytes().to_vec();
    for &(at, v) in edits {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] = v;
        }
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn pipeline_parser_never_panics(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in prop::option::of(any::<usize>())) {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::read_to_string(repo().join("pipelines/demo.toml")).unwrap();
        let p = d.path().join("fuzz.toml");
        std::fs::write(&p, mutate(&base, &edits, cut)).unwrap();
        if let Err(e) = vigil::config::Pipeline::load(&p) {
            let text = e.to_string();
            prop_assert!(text.contains("fuzz.toml"), "{}", text);
        }
    }

    #[test]
    fn mask_parser_never_panics(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in prop::option::of(any::<usize>())) {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::read_to_string(repo().join("privacy-masks/cam-astronaut.toml")).unwrap();
        let p = d.path().join("fuzz-mask.toml");
        std::fs::write(&p, mutate(&base, &edits, cut)).unwrap();
        match vigil::privacy::PrivacyMask::load(&p) {
            Ok(m) => {
                prop_assert!(!m.polygons.is_empty());
                let r = m.stored_raster(64, 48);
                prop_assert_eq!(r.width, 64);
            }
            Err(e) => prop_assert!(e.to_string().contains("fuzz-mask.toml")),
        }
    }

    #[test]
    fn kv_value_parser_never_panics(
        by in "\\PC{0,80}",
        reason in any::<String>(),
        threshold in prop_oneof![any::<f64>().prop_map(serde_json::Value::from), any::<i64>().prop_map(serde_json::Value::from), "\\PC*".prop_map(serde_json::Value::from)],
        raw in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        use vigil::control::overrides::{Override, overlay};
        let v = serde_json::json!({"by": by, "reason": reason, "set": {"threshold": threshold, "min_hits": 3}});
        let rule: vigil::rules::RuleConfig = toml::from_str("kind = \"no_mask\"").unwrap();
        if let Ok(o) = Override::parse(&serde_json::to_vec(&v).unwrap()) {
            prop_assert!(!o.by.chars().any(char::is_control));
            if let Ok(r) = overlay(&rule, &o.set) {
                let env = vigil::rules::RuleEnv { object_labels: None, gate: true, gate_recheck_s: 2.0, dirty_head: false, attribute_heads: None, detectors: None };
                let _ = vigil::rules::validate_rules(&[r], &env);
            }
        }
        let _ = Override::parse(&raw);
    }
}
