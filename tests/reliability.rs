//! Nothing lost past the fault table (issue #35): each test injects one fault against real
//! processes — the worker, nats-server with JetStream, moto (S3) behind a proxy that loses
//! answers, tmpfs mounts that are full or read-only, a clock stepped back with libfaketime — and
//! asserts that nothing is lost, duplicated or stuck, and that what cannot be helped is named.
//! The mounts need root, as CI runs; a test that cannot mount says so and fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A tmpfs mounted at `dir` with `opts` (size, inodes, ro), unmounted (lazily) on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", opts, "tmpfs"]).arg(dir).status().unwrap();
        assert!(
            st.success(),
            "mount -t tmpfs -o {opts} {}: these fault tests need root (CI runs as root)",
            dir.display()
        );
        Mount(dir.into())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A camera firing `no_mask` on a bundled sample, replayed as fast as analysis allows.
fn cam(id: &str, sample_name: &str, extra: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nlocation = \"counter\"\nsource = \"{}\"\nrealtime = false\nprivacy_mask = \"none\"\n{extra}\n[[cameras.rules]]\nkind = \"no_mask\"\n",
        sample(sample_name).display()
    )
}

/// Two cameras, one item each per run.
fn two_cameras() -> String {
    cam("cam1", "astronaut-pan.mp4", "") + &cam("cam2", "camera-pan.mp4", "")
}

fn run(site: &Site) -> (i32, String) {
    run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(240))
}

fn spool_items(site: &Site) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(site.path("data/spool"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("READY").exists())
                .map(|e| e.file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn verify_site(site: &Site) -> (i32, String) {
    verify(&site.pipeline, &[])
}

/// Evidence ids on the stream with how many times each came.
fn stream_counts(nats: &Nats) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for (_, id, _) in nats.messages("VIGIL") {
        *m.entry(id).or_default() += 1;
    }
    m
}

fn evidence_ids_on(nats: &Nats) -> Vec<String> {
    nats.messages("VIGIL").into_iter().filter(|m| m.0.starts_with("vigil.evidence.")).map(|m| m.1).collect()
}

fn stored_ids(site: &Site) -> Vec<String> {
    let mut v = Vec::new();
    for e in walk(&site.path("store/evidence")) {
        if e.ends_with("manifest.json") {
            v.push(e.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    v.sort();
    v
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn nats_site(nats: &Nats, cameras: &str, extra: &str) -> Site {
    Site::new(&format!("[publish]\nnats_url = \"{}\"\n{extra}", nats.url), cameras)
}

#[test]
fn row01_a_torn_outbox_line_is_cut_off_and_its_event_rebuilt_from_the_store() {
    let nats = Nats::start();
    let site = Site::new("", &two_cameras());
    let (code, log) = run(&site);
    assert_eq!(code, 0, "{log}");
    let stored = stored_ids(&site);
    assert_eq!(stored.len(), 2);
    // the outbox's last line half-written (the disk filled, the worker died mid-append)
    let outbox = site.path("data/outbox.jsonl");
    let text = std::fs::read_to_string(&outbox).unwrap();
    let last = text.lines().rev().find(|l| l.contains("vigil.evidence.")).unwrap().to_string();
    let torn_id = serde_json::from_str::<serde_json::Value>(&last).unwrap()["id"].as_str().unwrap().to_string();
    let keep = text.find(&last).unwrap();
    std::fs::write(&outbox, format!("{}{}", &text[..keep], &last[..last.len() / 2])).unwrap();
    // a restart, now with NATS: every stored item's event reaches the stream, once
    site.edit(|t| format!("[publish]\nnats_url = \"{}\"\n{t}", nats.url));
    let (code, log) = run(&site);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("a torn last line") && log.contains("rebuilt from the store"), "{log}");
    let on_stream = evidence_ids_on(&nats);
    let all = stored_ids(&site);
    assert_eq!(all.len(), 4);
    for id in &all {
        assert_eq!(on_stream.iter().filter(|x| *x == id).count(), 1, "{id} on the stream once: {on_stream:?}");
    }
    assert!(on_stream.contains(&torn_id));
    // every line of the outbox is whole: nothing was glued onto the fragment
    for l in std::fs::read_to_string(&outbox).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("a glued line: {e}: {l}"));
    }
    assert!(
        std::fs::read_dir(site.path("data"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("outbox.jsonl.torn-"))
    );
    println!(
        "row 1: torn event {torn_id} rebuilt from the store; 4 of 4 stored items on the stream once; no glued line"
    );
}

#[test]
fn row02_03_a_bad_or_altered_spool_item_is_quarantined_and_never_blocks_the_others() {
    let site = Site::new("", &two_cameras());
    {
        // the store refuses writes: both items wait in the spool
        let _ro = Mount::tmpfs(&site.path("store"), "ro,size=1m");
        let (code, log) = run(&site);
        assert_eq!(code, 0, "{log}");
    }
    let items = spool_items(&site);
    assert_eq!(items.len(), 2, "{items:?}");
    let (garbage, altered) = (&items[0], &items[1]);
    std::fs::write(site.path(&format!("data/spool/{garbage}/objects.json")), b"\x00garbage{").unwrap();
    let clip = site.path(&format!("data/spool/{altered}/000.bin"));
    let mut b = std::fs::read(&clip).unwrap();
    let n = b.len() / 2;
    b[n] ^= 0xFF;
    std::fs::write(&clip, b).unwrap();
    // the store is back; a second run makes two more items
    let (code, log) = run(&site);
    assert_eq!(code, 1, "quarantined items make the exit code 1: {log}");
    assert!(log.contains(&format!("spool/{garbage}/objects.json: not a spool index")), "the file is named: {log}");
    assert!(log.contains(&format!("spool/{altered}/000.bin")) && log.contains("changed since it was spooled"), "{log}");
    assert!(log.contains("2 evidence item(s) set aside in spool-quarantine"), "{log}");
    for id in [garbage, altered] {
        let reason = std::fs::read_to_string(site.path(&format!("data/spool-quarantine/{id}/REASON"))).unwrap();
        assert!(!reason.is_empty());
        assert!(!stored_ids(&site).contains(id), "a quarantined item is not uploaded");
    }
    // the others went on: the second run's two items are stored and announced
    assert_eq!(stored_ids(&site).len(), 2);
    let health: Vec<serde_json::Value> = site
        .outbox_all()
        .into_iter()
        .filter(|e| {
            e["subject"] == "vigil.health.test-site.worker" && e["payload"]["condition"] == "evidence_quarantined"
        })
        .collect();
    assert_eq!(health.len(), 2, "a health event per quarantined item");
    assert!(spool_items(&site).is_empty());
    println!(
        "row 2: garbage objects.json quarantined (named), row 3: altered clip quarantined before upload; the other items uploaded; exit 1"
    );
}

#[test]
fn row04_lost_chain_state_with_items_in_the_spool_forks_nothing() {
    let site = Site::new("", &two_cameras());
    {
        let _ro = Mount::tmpfs(&site.path("store"), "ro,size=1m");
        let (code, log) = run(&site);
        assert_eq!(code, 0, "{log}");
        // the chain state is lost while the items wait, and the store is still away
        std::fs::remove_dir_all(site.path("data/chain")).unwrap();
        let (code, log) = run(&site);
        assert_eq!(code, 0, "{log}");
    }
    assert_eq!(spool_items(&site).len(), 4);
    // the store is back: everything uploads, nothing is stuck, the chains have no fork
    let (code, log) = run(&site);
    assert_eq!(code, 0, "{log}");
    assert!(spool_items(&site).is_empty(), "nothing stuck: {:?}", spool_items(&site));
    assert_eq!(stored_ids(&site).len(), 6);
    let (code, out) = verify_site(&site);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("chain test-site/cam1: 3 item(s), last seq 3"), "{out}");
    println!(
        "row 4: state lost with 2 items spooled: the next items took seq 2 (from the spool), 6 of 6 uploaded, verify OK"
    );
}

#[test]
fn row05_a_full_disk_for_the_chain_state_never_reuses_a_position() {
    // a seated class, every face a track of its own, each firing at once: two items in one run
    let classroom = shared_data("videos/intel_classroom.mp4");
    let site = Site::new(
        "",
        &format!(
            "[[cameras]]\nid = \"cam1\"\nlocation = \"room\"\nsource = \"{}\"\nrealtime = false\nprivacy_mask = \"none\"\n\
             [[cameras.rules]]\nkind = \"no_mask\"\ncooldown_s = 0\nthreshold = 0.3\nmin_hits = 1\nwindow = 1\n",
            classroom.display()
        ),
    );
    let _full = Mount::tmpfs(&site.path("data/chain"), "nr_inodes=1,size=64k");
    let mut w = Worker::start(&site.pipeline);
    let code = w.wait(Duration::from_secs(180));
    let log = w.log_text();
    assert!(log.contains("chain state file not saved"), "{log}");
    assert!(!log.contains("evidence FAILED") && !log.contains("nothing published"), "{log}");
    assert_eq!(code, 0, "{log}");
    let seqs: Vec<u64> = site.outbox().iter().map(|e| e["payload"]["chain"]["seq"].as_u64().unwrap()).collect();
    assert!(seqs.len() >= 2, "two items in one run: {seqs:?}");
    let mut sorted = seqs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seqs.len(), "no position taken twice: {seqs:?}");
    let (code, out) = verify_site(&site);
    assert_eq!(code, 0, "{out}");
    println!(
        "row 5: chain state on a full disk: {} items at seq {seqs:?}, each stored and announced, verify OK",
        seqs.len()
    );
}

#[test]
fn row06_a_torn_ack_line_and_two_restarts_publish_nothing_twice_whatever_the_window() {
    let nats = Nats::start();
    let site = nats_site(&nats, &two_cameras(), "duplicate_window_s = 1\n");
    let (code, log) = run(&site);
    assert_eq!(code, 0, "{log}");
    let acked = site.path("data/outbox.acked");
    let text = std::fs::read_to_string(&acked).unwrap();
    let trimmed = text.trim_end_matches('\n');
    let cut = trimmed.rfind('\n').map_or(0, |i| i + 1) + (trimmed.len() - trimmed.rfind('\n').map_or(0, |i| i + 1)) / 2;
    std::fs::write(&acked, &text[..cut]).unwrap();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(2)); // past the duplicate window
        let (code, log) = run(&site);
        assert_eq!(code, 0, "{log}");
    }
    let counts = stream_counts(&nats);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published twice: {twice:?}");
    assert_eq!(evidence_ids_on(&nats).len(), 6);
    println!("row 6: torn ack line, window 1 s, two restarts: {} messages, none twice", counts.len());
}

#[test]
fn row07_a_store_write_whose_answer_is_lost_is_found_there_and_counts() {
    let moto = Moto::start();
    moto.create_bucket("evidence", false);
    let proxy = CutProxy::start(moto.port());
    proxy.lose_response_on(1, "checkpoints/");
    let site = Site::new(
        &format!(
            "[store]\nurl = \"s3://evidence/site\"\noptions = {{ aws_endpoint = \"http://127.0.0.1:{}\", aws_region = \"us-east-1\", aws_allow_http = \"true\", aws_access_key_id = \"test\", aws_secret_access_key = \"test\" }}\n",
            proxy.port
        ),
        &cam("cam1", "astronaut-pan.mp4", ""),
    );
    site.edit(|t| t.replacen("[store]\nurl = \"store\"\n", "", 1));
    let (code, log) = run(&site);
    assert_eq!(code, 0, "{log}");
    assert_eq!(proxy.lost(), 1, "the first checkpoint write's answer was lost");
    assert!(!log.contains("chain checkpoint FAILED"), "{log}");
    let checkpoints: Vec<serde_json::Value> =
        site.outbox_all().into_iter().filter(|e| e["subject"].as_str().unwrap().starts_with("vigil.chain.")).collect();
    assert!(!checkpoints.is_empty(), "the checkpoint event is published");
    let (code, out) = verify_site(&site);
    assert_eq!(code, 0, "{out}");
    println!("row 7: checkpoint PUT answer lost: found there with the same bytes, event published, verify OK");
}

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn row08_a_clock_stepped_back_flags_the_item_and_never_decides_order_or_checkpoint() {
    assert!(Path::new(FAKETIME_LIB).exists(), "{FAKETIME_LIB} missing: .ci/install installs Debian's faketime");
    let site = Site::new("", &cam("cam1", "astronaut-pan.mp4", ""));
    let (code, log) = run(&site);
    assert_eq!(code, 0, "{log}");
    // the same worker an hour in the past
    let mut w = Worker::start_with_env(
        &site.pipeline,
        &[("LD_PRELOAD", FAKETIME_LIB), ("FAKETIME", "-1h"), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")],
    );
    let code = w.wait(Duration::from_secs(240));
    let log2 = w.log_text();
    assert_eq!(code, 0, "{log2}");
    assert!(log2.contains("clock stepped back"), "{log2}");
    let items = site.outbox();
    assert_eq!(items.len(), 2);
    let (a, b) = (&items[0]["payload"], &items[1]["payload"]);
    assert_eq!(b["chain"]["seq"], 2);
    let step = b["chain"]["clock_step_back_s"].as_f64().expect("the item carries the step");
    assert!((3500.0..3700.0).contains(&step), "{step}");
    assert!(
        b["retention"]["retain_until_utc"].as_str() >= a["retention"]["retain_until_utc"].as_str(),
        "retention never shortened"
    );
    let (code, out) = verify_site(&site);
    assert_eq!(code, 0, "a clock step is no failure: {out}");
    assert!(out.contains("WARNING") && out.contains("clock stood"), "{out}");
    assert!(out.contains("checkpoint seq 2"), "the checkpoint of the highest position is the newest: {out}");
    // the newest item removed (its index entry too): the newest checkpoint still tells
    let seq2 = b["evidence_id"].as_str().unwrap();
    let dir = walk(&site.path("store/evidence")).into_iter().find(|p| p.to_string_lossy().contains(seq2)).unwrap();
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    let idx = site.path("store/chain/test-site/cam1/seq/000000000002.json");
    std::fs::remove_file(&idx).unwrap();
    std::fs::remove_file(idx.with_extension("json.sig")).unwrap();
    let (code, out) = verify_site(&site);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing from the end of the chain"), "{out}");
    println!(
        "row 8: clock -1 h: item flagged ({step:.0} s), verify OK with a warning, checkpoint seq 2 chosen; removing seq 2 is caught"
    );
}

/// Creates stream VIGIL (subjects `vigil.>`) with settings of the test's choosing.
fn make_stream(nats: &Nats, cfg: impl FnOnce(&mut async_nats::jetstream::stream::Config)) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = async_nats::connect(&nats.url).await.unwrap();
        let js = async_nats::jetstream::new(c);
        let mut s = async_nats::jetstream::stream::Config {
            name: "VIGIL".into(),
            subjects: vec!["vigil.>".into()],
            ..Default::default()
        };
        cfg(&mut s);
        js.create_stream(s).await.unwrap();
    });
}

fn update_stream(nats: &Nats, cfg: impl FnOnce(&mut async_nats::jetstream::stream::Config)) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = async_nats::connect(&nats.url).await.unwrap();
        let js = async_nats::jetstream::new(c);
        let mut st = js.get_stream("VIGIL").await.unwrap();
        let mut s = st.info().await.unwrap().config.clone();
        cfg(&mut s);
        js.update_stream(s).await.unwrap();
    });
}

#[test]
fn row09_a_stream_that_refuses_events_is_refused_at_start_and_a_refused_message_is_dead_lettered() {
    // refused at start, and by `vigil check`
    let small = Nats::start();
    make_stream(&small, |s| s.max_message_size = 512);
    let site = nats_site(&small, &cam("cam1", "astronaut-pan.mp4", ""), "");
    let (code, log) = run(&site);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("refusing to run") && log.contains("max_msg_size = 512"), "{log}");
    let (code, out, err) = run_capture(&["check", site.pipeline.to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("stream VIGIL: FAILED") && err.contains("max_msg_size = 512"), "{err}");
    // a stream changed under a running worker: the refused message is moved aside with its reason
    let nats = Nats::start();
    let site = nats_site(&nats, &cam("cam1", "astronaut-pan.mp4", "loop = true"), "");
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("JetStream acknowledged event", Duration::from_secs(120));
    // ops shrink the stream under it: the chain checkpoint published at shutdown (about 1.5 KB)
    // no longer fits
    update_stream(&nats, |s| s.max_message_size = 1024);
    w.sigterm();
    w.wait(Duration::from_secs(120));
    assert!(site.path("data/outbox.dead.jsonl").exists(), "nothing dead-lettered: {}", w.log_text());
    let dead: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(site.path("data/outbox.dead.jsonl")).unwrap().lines().next().unwrap(),
    )
    .unwrap();
    assert_eq!(dead["reason"], "max_msg_size", "{dead}");
    println!(
        "row 9: max_msg_size 512 refused at start and by check; changed under a running worker: dead-lettered with reason max_msg_size"
    );
}

#[test]
fn row10_a_stream_that_evicts_acknowledged_events_is_refused() {
    let nats = Nats::start();
    make_stream(&nats, |s| {
        s.max_messages = 2;
        s.discard = async_nats::jetstream::stream::DiscardPolicy::Old;
    });
    let site = nats_site(&nats, &cam("cam1", "astronaut-pan.mp4", ""), "");
    let (code, log) = run(&site);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("max_msgs = 2 with discard = old"), "{log}");
    let (code, out, err) = run_capture(&["check", site.pipeline.to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("max_msgs = 2 with discard = old"), "{err}");
    assert!(nats.messages("VIGIL").is_empty(), "nothing was published into it");
    println!("row 10: max_msgs 2 + discard old: refused at start and by check, nothing published");
}

#[test]
fn row11_object_lock_on_a_bucket_without_it_is_refused_at_start_and_by_check() {
    let moto = Moto::start();
    moto.create_bucket("plain", false);
    let site = Site::new(
        &format!(
            "[store]\nurl = \"s3://plain/site\"\nobject_lock = true\noptions = {{ aws_endpoint = \"http://127.0.0.1:{}\", aws_region = \"us-east-1\", aws_allow_http = \"true\", aws_access_key_id = \"test\", aws_secret_access_key = \"test\" }}\n",
            moto.port()
        ),
        &cam("cam1", "astronaut-pan.mp4", ""),
    );
    site.edit(|t| t.replacen("[store]\nurl = \"store\"\n", "", 1));
    let (code, out, err) = run_capture(&["check", site.pipeline.to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("refuses locked objects"), "{err}");
    let (code, log) = run(&site);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("refusing to run") && log.contains("refuses locked objects"), "{log}");
    println!("row 11: object_lock on a plain bucket: check exit 3, run refused at start");
}

#[test]
fn row12_every_failed_camera_is_reported_at_once_and_named_in_the_summary() {
    let d = tempfile::tempdir().unwrap();
    let random = d.path().join("random.mp4");
    std::fs::write(&random, (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<u8>>())
        .unwrap();
    let text = d.path().join("notes.mp4");
    std::fs::write(&text, "this is not a video\n".repeat(500)).unwrap();
    let truncated = d.path().join("truncated.mp4");
    std::fs::write(&truncated, &std::fs::read(sample("coffee-pan.mp4")).unwrap()[..4096]).unwrap();
    let closed = free_port();
    let bad = |id: &str, src: &str| {
        format!(
            "[[cameras]]\nid = \"{id}\"\nlocation = \"x\"\nsource = \"{src}\"\nrealtime = false\nprivacy_mask = \"none\"\nreconnect_max_s = 2\n[[cameras.rules]]\nkind = \"no_mask\"\n"
        )
    };
    let nats = Nats::start();
    let mut cams = String::new();
    for i in 0..4 {
        cams += &cam(&format!("good{i}"), "chelsea-pan.mp4", "");
    }
    cams += &bad("random", random.to_str().unwrap());
    cams += &bad("text", text.to_str().unwrap());
    cams += &bad("truncated", truncated.to_str().unwrap());
    cams += &bad("rtsp", &format!("rtsp://127.0.0.1:{closed}/none"));
    let site = nats_site(&nats, &cams, "");
    let mut w = Worker::start(&site.pipeline);
    let t = Instant::now();
    // the good cameras end with their files; the RTSP one never would
    while w.log_text().matches("camera finished").count() < 4 {
        assert!(t.elapsed() < Duration::from_secs(200), "{}", w.log_text());
        std::thread::sleep(Duration::from_millis(300));
    }
    w.sigterm();
    let code = w.wait(Duration::from_secs(120));
    let log = w.log_text();
    assert_eq!(code, 1, "{log}");
    // at once: each file camera's failure is logged as it happens, before the good ones finish
    let line_of = |needle: &dyn Fn(&str) -> bool| log.lines().position(needle);
    let first_finished = line_of(&|l| l.contains("camera finished")).unwrap();
    for id in ["random", "text", "truncated"] {
        let failed = line_of(&|l: &str| l.contains("camera FAILED") && l.contains(&format!("\"camera\":\"{id}\"")))
            .unwrap_or_else(|| panic!("{id} not reported: {log}"));
        assert!(failed < first_finished, "{id} reported late (after the good cameras finished)");
    }
    // the summary names every failed camera, the RTSP one included
    for id in ["random", "text", "truncated", "rtsp"] {
        assert!(log.lines().any(|l| l.starts_with(&format!("error: camera {id} "))), "{id} not in the summary: {log}");
    }
    assert!(log.contains("error: camera rtsp down for"), "{log}");
    // and each is a health event on NATS
    let t = Instant::now();
    loop {
        let health: Vec<String> = nats
            .messages("VIGIL")
            .into_iter()
            .filter(|m| m.0.starts_with("vigil.health.") && m.2["condition"] == "stream" && m.2["active"] == true)
            .map(|m| m.2["camera"].as_str().unwrap().to_string())
            .collect();
        if ["random", "text", "truncated", "rtsp"].iter().all(|c| health.iter().any(|h| h == c)) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "health events: {health:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "row 12: 4 of 8 cameras bad: each reported before the good ones finished, named in the summary (RTSP as down), health events on NATS, exit 1"
    );
}
