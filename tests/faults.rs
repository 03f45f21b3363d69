//! Fault injection with real processes on loopback, bounded in time: broker outage longer than the
//! duplicate window, SIGKILL of the worker mid-clip, RTSP server restart, object store outage, and
//! a full spool. Each test prints its row of the results table —
//! `| fault | expected | received | duplicates | recovery |` — with every cell measured, and
//! asserts the bound the README states for it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

fn camera(id: &str, source: &str, extra: &str, rule: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nsource = \"{source}\"\n{extra}\n[[cameras.rules]]\nkind = \"no_mask\"\n{rule}\n"
    )
}

fn evidence_ids(msgs: &[(String, String, serde_json::Value)]) -> Vec<String> {
    msgs.iter().filter(|m| m.0.starts_with("vigil.evidence.")).map(|m| m.1.clone()).collect()
}

fn dups(ids: &[String]) -> usize {
    let mut c: BTreeMap<&String, usize> = BTreeMap::new();
    for i in ids {
        *c.entry(i).or_default() += 1;
    }
    c.values().filter(|&&n| n > 1).map(|n| n - 1).sum()
}

fn set_source(site: &Site, from: &str, to: &str) {
    site.replace(from, to);
}

/// The port of the worker's `/metrics` and `/health` (`worker.http = "127.0.0.1:0"`), from its log.
fn http_port(w: &Worker) -> u16 {
    let log = w.log_text();
    let line = log.lines().find(|l| l.contains("serving /metrics and /health")).expect("http address logged");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["address"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_file_source_that_stops_delivering_is_seen_within_seconds_and_the_other_camera_runs_on() {
    let _serial = realtime_lock();
    // a FIFO as the file source: its writer sends the first part of an MPEG-TS clip, then keeps
    // the pipe open and sends nothing — a file source blocked in a read (a stuck mount, a
    // receiver that hung), which its own pipeline cannot report
    let t = tempfile::tempdir().unwrap();
    let ts = t.path().join("astronaut.ts");
    transcode(
        &sample("astronaut-pan.mp4"),
        &ts,
        "videoscale ! video/x-raw,width=640,height=360",
        "x264enc key-int-max=25 speed-preset=ultrafast tune=zerolatency ! h264parse",
        "mpegtsmux",
    );
    let bytes = std::fs::read(&ts).unwrap();
    let fifo = t.path().join("cam.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let (sent_tx, sent) = std::sync::mpsc::channel::<Instant>();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let _ = f.write_all(&bytes[..bytes.len() / 2]);
            let _ = sent_tx.send(Instant::now());
            let _ = hold.recv_timeout(Duration::from_secs(120));
        })
    };
    let cams = camera("piped", &fifo.display().to_string(), "stall_s = 2", "")
        + &camera(
            "other",
            &sample("camera-pan.mp4").display().to_string(),
            "loop = true",
            "min_hits = 20
window = 20",
        );
    let site = Site::new("", &cams);
    set_source(&site, "[worker]\n", "[worker]\nhttp = \"127.0.0.1:0\"\n");
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("serving /metrics and /health", Duration::from_secs(60));
    let http = http_port(&w);
    let stopped = sent.recv_timeout(Duration::from_secs(90)).expect("the worker read the first half");
    // within seconds: /health 503 naming the camera's `stream` condition, the metric, the log line
    let seen = loop {
        let health = http_get(http, "/health");
        if health.starts_with("HTTP/1.1 503") {
            assert!(health.contains(r#""piped":{"conditions":["stream"]}"#), "{health}");
            assert!(health.contains(r#""other":{"conditions":[]}"#), "the other camera is fine: {health}");
            break stopped.elapsed();
        }
        assert!(stopped.elapsed() < Duration::from_secs(20), "never seen: {health}\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(200));
    };
    // the last frames sent are still in the pipe when the writer stops: the stall starts later
    assert!(seen < Duration::from_secs(12), "no video seen {seen:?} after the writer stopped (stall_s 2)");
    let metrics = http_get(http, "/metrics");
    assert!(metrics.contains(r#"vigil_camera_condition{camera="piped",condition="stream"} 1"#), "{metrics}");
    // told by whichever saw it first: the camera watch (since when, site time) or the camera's own
    // watchdog, when its pipeline stopped at once and the camera failed for good
    let line = w.log_text().lines().find(|l| l.contains("health: stream started")).unwrap().to_string();
    assert!(
        (line.contains("no video since") && line.contains("(+08:00)")) || line.contains("stalled: no video for 2.0 s"),
        "{line}"
    );
    // one broken camera never stops the others: its frames keep coming
    let frames = |m: &str| -> u64 {
        let l = m.lines().find(|l| l.starts_with(r#"vigil_frames_decoded_total{camera="other"}"#)).unwrap();
        l.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = frames(&metrics);
    std::thread::sleep(Duration::from_secs(8));
    let after = frames(&http_get(http, "/metrics"));
    assert!(after > before + 100, "the other camera's frames: {before} → {after}");
    // the stuck camera's pipeline is left behind, not waited for: shutdown does not hang
    let _ = release.send(());
    writer.join().unwrap();
    w.sigterm();
    let code = w.wait(Duration::from_secs(60));
    let log = w.log_text();
    assert_eq!(code, 1, "a camera failed: exit 1\n{log}");
    assert!(log.contains("camera piped failed") && log.contains("stalled: no video for 2.0 s"), "{log}");
    println!(
        "| file source (FIFO) stops delivering, stall_s 2 | /health 503 + `stream` metric + log after {:.1} s; the other camera ran on ({} frames in 8 s); exit {code} |",
        seen.as_secs_f64(),
        after - before
    );
}

#[test]
fn broker_outage_longer_than_the_duplicate_window_delivers_every_event_exactly_once() {
    let _serial = realtime_lock();
    let mut nats = Nats::start();
    let astro = sample("astronaut-pan.mp4").display().to_string();
    let cat = sample("chelsea-pan.mp4").display().to_string();
    let site = Site::new(
        &format!(
            "[clip]\npre_roll_s = 1\npost_roll_s = 1\n[publish]\nnats_url = \"{}\"\nduplicate_window_s = 1\n",
            nats.url
        ),
        &camera("cam1", &astro, "realtime = false", ""),
    );
    let pipeline = site.pipeline.to_str().unwrap();
    // 1: broker up
    let (code, log) = run_to_end(&["run", pipeline], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    // 2: broker down while the next event is produced: it waits in the outbox
    nats.stop();
    let (code, log) = run_to_end(&["run", pipeline], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("stay in the outbox"), "{log}");
    let produced: Vec<String> = site.outbox().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(produced.len(), 2);
    // Pretend the ack of the first event was lost too: only the last-message check can save
    // exactly-once now, since the outage outlasts the 1 s duplicate window.
    let acked = std::fs::read_to_string(site.path("data/outbox.acked")).unwrap();
    let kept: Vec<&str> = acked.lines().filter(|l| *l != produced[0]).collect();
    std::fs::write(site.path("data/outbox.acked"), kept.join("\n") + "\n").unwrap();
    // the outage itself: the broker stays away 3 s, beyond the 1 s duplicate window
    std::thread::sleep(Duration::from_secs(3));
    // 3: broker back; a run with a faceless camera delivers the backlog
    nats.restart();
    let back = Instant::now();
    set_source(&site, &astro, &cat);
    let (code, log) = run_to_end(&["run", pipeline], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    let recovery = back.elapsed();
    let ids = evidence_ids(&nats.messages("VIGIL"));
    assert_eq!(dups(&ids), 0, "duplicates on the stream: {ids:?}");
    assert_eq!(ids, produced, "every produced event arrived, in the order it was produced");
    assert!(log.contains("already on the stream"), "the resend of the un-acked first event was recognised: {log}");
    assert!(recovery < Duration::from_secs(30), "backlog delivered {recovery:?} after the broker returned");
    println!(
        "| nats-server killed while an event was produced, back after 3 s (> 1 s duplicate window), first ack lost | {} | {} (in order) | {} | backlog delivered {:.1} s after restart |",
        produced.len(),
        ids.len(),
        dups(&ids),
        recovery.as_secs_f64()
    );
}

/// The evidence id in a JSON log line.
fn evidence_id_in(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["evidence_id"].as_str().unwrap().to_string()
}

/// Spool items with their `READY` marker (complete, waiting for upload).
fn ready_items(site: &Site) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(site.path("data/spool"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("READY").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn sigkill_mid_clip_leaves_no_partial_evidence_and_no_duplicates() {
    let _serial = realtime_lock();
    let nats = Nats::start();
    // the store sits behind a proxy that is down: the fast camera's item stays READY in the spool
    let moto = Moto::start();
    moto.create_bucket("evidence", false);
    let proxy = CutProxy::start(moto.port());
    proxy.set_down(true);
    let cams = camera("fast", &sample("astronaut-pan.mp4").display().to_string(), "realtime = false", "")
        + &camera("slow", &sample("camera-pan.mp4").display().to_string(), "", "min_hits = 10\nwindow = 10");
    let opts = moto.store_options().replace(&moto.endpoint, &format!("http://127.0.0.1:{}", proxy.port));
    let site = Site::new(
        &format!(
            "[clip]\npre_roll_s = 1\npost_roll_s = 4\n[publish]\nnats_url = \"{}\"\n[store.options]\n{opts}",
            nats.url
        ),
        &cams,
    );
    set_source(&site, "url = \"store\"", "url = \"s3://evidence/vigil\"");
    let mut w = Worker::start(&site.pipeline);
    w.wait_log(
        "\"message\":\"evidence spooled (complete, signed); uploading\",\"camera\":\"fast\"",
        Duration::from_secs(90),
    );
    // the slow camera's violation: its clip (4 s post-roll) is being collected now
    let log = w.wait_log_from(0, "\"message\":\"violation\",\"camera\":\"slow\"", Duration::from_secs(60));
    let line = log.lines().find(|l| l.contains("\"message\":\"violation\",\"camera\":\"slow\"")).unwrap();
    let slow_id = evidence_id_in(line);
    let _ = w.child.kill(); // SIGKILL
    let _ = w.child.wait();
    let log = w.log_text();
    assert!(
        !log.lines().any(|l| l.contains("evidence spooled") && l.contains(&slow_id)),
        "the kill landed while the slow camera's clip was in flight (its item {slow_id} was not complete)"
    );
    let ready = ready_items(&site);
    assert!(!ready.is_empty(), "the fast camera's item waited READY in the spool at the kill");
    let before = site.outbox().len();
    // restart with faceless sources and the store back: whatever was spooled completes
    proxy.set_down(false);
    let t0 = Instant::now();
    set_source(
        &site,
        &sample("astronaut-pan.mp4").display().to_string(),
        &sample("chelsea-pan.mp4").display().to_string(),
    );
    set_source(&site, &sample("camera-pan.mp4").display().to_string(), &sample("coffee-pan.mp4").display().to_string());
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    assert!(
        ready_items(&site).is_empty() && std::fs::read_dir(site.path("data/spool")).unwrap().count() == 0,
        "the spool is empty"
    );
    let produced: Vec<String> = site.outbox().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    let ids = evidence_ids(&nats.messages("VIGIL"));
    assert_eq!(dups(&ids), 0, "{ids:?}");
    for id in &ready {
        assert!(
            produced.contains(id) && ids.contains(id),
            "READY item {id} was stored and published after the restart"
        );
    }
    for id in &produced {
        assert!(ids.contains(id), "event {id} was recorded but never reached the stream");
    }
    assert!(!ids.contains(&slow_id), "the incomplete item never surfaces");
    // every stored object belongs to a complete item (its manifest stored too)
    let keys = s3_keys(&moto, "evidence");
    for k in keys.iter().filter(|k| k.starts_with("vigil/evidence/")) {
        let dir = k.rsplit_once('/').unwrap().0;
        assert!(keys.contains(&format!("{dir}/manifest.json")), "{k} belongs to no complete item");
    }
    let out = vigil().args(["verify", "--pipeline", site.pipeline.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    println!(
        "| worker SIGKILLed while cutting a clip (store down, 1 item READY in the spool), restarted | {} READY at the kill; {} recorded before the kill ({} after) | {} on the stream, READY items among them; the clip in flight never surfaces | {} | complete after restart ({:.1} s run); store verifies; no partial item |",
        ready.len(),
        before,
        produced.len(),
        ids.len(),
        dups(&ids),
        t0.elapsed().as_secs_f64()
    );
}

/// Object keys in a moto bucket.
fn s3_keys(moto: &Moto, bucket: &str) -> Vec<String> {
    let code = format!(
        "import boto3, json\ns3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n\
         keys = []\nfor p in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}'):\n    keys += [o['Key'] for o in p.get('Contents', [])]\nprint(json.dumps(keys))",
        moto.endpoint
    );
    let o = std::process::Command::new("python3").arg("-c").arg(code).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_copy_published_meanwhile_makes_the_expected_sequence_refuse_and_the_check_run_again() {
    // the Nats-Expected-Last-Subject-Sequence path, against a real nats-server: an event is
    // published by "another copy" between the subject check and the publish
    use vigil::publish::{Delivered, DeliveryError, OutboxEntry, deliver_one, last_on_subject, publish_expecting};
    use vigil::util::Subject;
    let nats = Nats::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(vigil::util::nats::connect(&nats.url).await.unwrap());
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "VIGIL".into(),
            subjects: vec!["vigil.>".into()],
            duplicate_window: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
        let subject = Subject::evidence("test-site", "cam1");
        let e = OutboxEntry::new("01EVENTA", subject.clone(), &serde_json::json!({"n": 1}));
        // the worker reads the subject's last message: none
        let (last, there) = last_on_subject(&js, "VIGIL", &subject.to_string(), &e.id).await.unwrap();
        assert_eq!((last, there), (0, false));
        // meanwhile a copy of the same event is published (a lost ack, a second worker)
        let first = deliver_one(&js, "VIGIL", &e).await.unwrap();
        assert_eq!(first, Delivered::Published(1));
        // the worker's publish, still expecting seq 0, is refused instead of storing a duplicate
        let r = publish_expecting(&js, &e, last).await;
        assert!(matches!(r, Err(DeliveryError::Conflict)), "{r:?}");
        // checking again finds the event already there
        assert_eq!(deliver_one(&js, "VIGIL", &e).await.unwrap(), Delivered::AlreadyThere(1));
        // after the duplicate window too (the check does not rely on it)
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(deliver_one(&js, "VIGIL", &e).await.unwrap(), Delivered::AlreadyThere(1));
        // another event on the subject goes on after it
        let b = OutboxEntry::new("01EVENTB", subject.clone(), &serde_json::json!({"n": 2}));
        assert_eq!(deliver_one(&js, "VIGIL", &b).await.unwrap(), Delivered::Published(2));
    });
    let ids = evidence_ids(&nats.messages("VIGIL"));
    assert_eq!(ids, vec!["01EVENTA", "01EVENTB"], "each once, in order");
    println!(
        "| a copy published between the subject check and the publish | refused (`Conflict`), checked again | {} events on the stream ({}) | {} | the second check finds it (`AlreadyThere`), also after the duplicate window |",
        ids.len(),
        ids.join(", "),
        dups(&ids)
    );
}

#[test]
fn rtsp_server_restart_reconnects_within_5_s_and_reports_down_and_up() {
    let _serial = realtime_lock();
    let nats = Nats::start();
    let clip = sample("astronaut-pan.mp4");
    let server = RtspServer::serve_file(&clip);
    let url = server.url.clone();
    let port: u16 = url.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();
    let site = Site::new(
        &format!("[publish]\nnats_url = \"{}\"\n", nats.url),
        &camera("cam1", &url, "stall_s = 2\nreconnect_max_s = 1", ""),
    );
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("violation", Duration::from_secs(60));
    let mark = w.mark();
    drop(server);
    let down_at = Instant::now();
    w.wait_log_from(mark, "health: stream started", Duration::from_secs(20));
    let detected = down_at.elapsed();
    assert!(detected < Duration::from_secs(5), "down detected {detected:?} after the server stopped (stall_s 2)");
    // the outage: the server stays away 3 s
    std::thread::sleep(Duration::from_secs(3));
    let mark = w.mark();
    let _server = RtspServer::serve_file_on(&clip, port);
    let up_at = Instant::now();
    w.wait_log_from(mark, "health: stream ended", Duration::from_secs(20));
    let reconnect = up_at.elapsed();
    assert!(reconnect < Duration::from_secs(5), "reconnected {reconnect:?} after the server came back");
    w.sigterm();
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log_text());
    let health: Vec<serde_json::Value> =
        nats.messages("VIGIL").into_iter().filter(|m| m.0 == "vigil.health.test-site.cam1").map(|m| m.2).collect();
    let down = health.iter().find(|h| h["condition"] == "stream" && h["active"] == true).expect("down event");
    let up = health.iter().find(|h| h["condition"] == "stream" && h["active"] == false).expect("recovered event");
    let lasted = up["duration_s"].as_f64().unwrap();
    assert!(lasted >= 2.5, "outage lasted {lasted} s");
    let downs = health.iter().filter(|h| h["condition"] == "stream" && h["active"] == true).count();
    let ups = health.iter().filter(|h| h["condition"] == "stream" && h["active"] == false).count();
    assert_eq!((downs, ups), (1, 1), "one outage, reported once each way: {health:?}");
    let ev = evidence_ids(&nats.messages("VIGIL"));
    println!(
        "| RTSP server stopped 3 s, restarted on the same port | down + recovered health events | down ({}) + recovered (down {lasted:.1} s) | {} | down detected after {:.1} s; reconnected {:.1} s after the server returned |",
        down["detail"].as_str().unwrap_or_default(),
        dups(&ev),
        detected.as_secs_f64(),
        reconnect.as_secs_f64()
    );
}

#[test]
fn object_store_outage_mid_upload_spools_evidence_then_uploads_it_and_publishes_after() {
    let _serial = realtime_lock();
    let moto = Moto::start();
    moto.create_bucket("evidence", false);
    // the store goes away in the middle of the item's second object (the first is stored)
    let proxy = CutProxy::start(moto.port());
    proxy.cut_on(2, "PUT /evidence/vigil/evidence/", Duration::from_secs(3));
    let cams = camera("cam1", &sample("astronaut-pan.mp4").display().to_string(), "", "");
    let opts = moto.store_options().replace(&moto.endpoint, &format!("http://127.0.0.1:{}", proxy.port));
    let site = Site::new(&format!("[clip]\npre_roll_s = 1\npost_roll_s = 1\n[store.options]\n{opts}"), &cams);
    set_source(&site, "url = \"store\"", "url = \"s3://evidence/vigil\"");
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("spool: upload failed; will retry", Duration::from_secs(60));
    let (cut, _) = proxy.times();
    assert!(cut.is_some(), "the store went away during an upload");
    assert!(site.outbox().is_empty(), "no event before its evidence is stored");
    w.wait_log("spool: item stored, event queued", Duration::from_secs(60));
    let stored_at = Instant::now();
    let (_, back) = proxy.times();
    let recovery = stored_at - back.expect("the store came back");
    assert!(recovery < Duration::from_secs(15), "uploaded {recovery:?} after the store returned");
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log_text());
    let log = w.log_text();
    assert!(
        log.contains("already in the store with the same bytes"),
        "the object stored before the cut was found again and kept: {log}"
    );
    let events = site.outbox();
    assert_eq!(events.len(), 1);
    let out = vigil().args(["verify", "--pipeline", site.pipeline.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let ids: Vec<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    println!(
        "| S3 server (moto) gone in the middle of the item's second object (its first already stored), back after 3 s | 1 event after its artifacts | {}, artifacts verified in S3; the stored object kept (same bytes) | {} | uploaded {:.1} s after the store returned |",
        events.len(),
        dups(&ids),
        recovery.as_secs_f64()
    );
}

#[test]
fn a_full_spool_stops_cutting_clips_and_raises_the_alarm() {
    let _serial = realtime_lock();
    // a port we hold, answering every connection with a reset: uploads never succeed
    let dead_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = dead_listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in dead_listener.incoming().flatten() {
            drop(c);
        }
    });
    let cams = camera("first", &sample("astronaut-pan.mp4").display().to_string(), "realtime = false", "")
        + &camera("second", &sample("camera-pan.mp4").display().to_string(), "", "min_hits = 20\nwindow = 20");
    let extra = format!(
        "[clip]\npre_roll_s = 1\npost_roll_s = 1\n[store.options]\naws_endpoint = \"http://127.0.0.1:{dead}\"\n\
         aws_allow_http = \"true\"\naws_region = \"us-east-1\"\naws_access_key_id = \"x\"\naws_secret_access_key = \"x\"\n"
    );
    let site = Site::new(&extra, &cams);
    set_source(&site, "url = \"store\"", "url = \"s3://evidence/vigil\"");
    set_source(&site, "[worker]\n", "[worker]\nspool_max_bytes = 1000\nhttp = \"127.0.0.1:0\"\n");
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("evidence NOT cut: spool full", Duration::from_secs(60));
    let http = http_port(&w);
    assert!(w.child.try_wait().unwrap().is_none(), "worker exited early: {}", w.log_text());
    let metrics = http_get(http, "/metrics");
    let health = http_get(http, "/health");
    assert!(metrics.contains("vigil_evidence_refused_total 1"), "{metrics}");
    let spool: i64 =
        metrics.lines().find(|l| l.starts_with("vigil_spool_bytes ")).unwrap()[18..].trim().parse().unwrap();
    assert!(spool > 1000, "{metrics}");
    assert!(metrics.contains("vigil_frames_analysed_total{camera=\"second\"}"), "{metrics}");
    assert!(
        metrics.lines().any(|l| l.starts_with("vigil_inference_seconds_bucket{") && l.contains("model=\"centerface\"")),
        "{metrics}"
    );
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    let code = w.wait(Duration::from_secs(90));
    assert_eq!(code, 1, "a refused clip makes the run fail loudly: {}", w.log_text());
    let alarms: Vec<serde_json::Value> = std::fs::read_to_string(site.path("data/outbox.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["subject"] == "vigil.health.test-site.worker")
        .collect();
    assert!(alarms.iter().any(|a| a["payload"]["condition"] == "spool_full"), "{alarms:?}");
    let spooled = ready_items(&site);
    assert_eq!(spooled.len(), 1, "the first item stays spooled for the next start");
    let refused = w.log_text().matches("evidence NOT cut: spool full").count();
    let health_code: u16 = health[9..12].parse().unwrap();
    // the next start, with the store reachable: the spooled item uploads, then its event
    let moto = Moto::start();
    moto.create_bucket("evidence", false);
    site.replace(&format!("http://127.0.0.1:{dead}"), &moto.endpoint);
    site.replace("spool_max_bytes = 1000\n", "");
    set_source(
        &site,
        &sample("astronaut-pan.mp4").display().to_string(),
        &sample("chelsea-pan.mp4").display().to_string(),
    );
    set_source(&site, &sample("camera-pan.mp4").display().to_string(), &sample("coffee-pan.mp4").display().to_string());
    let t0 = Instant::now();
    let mut w2 = Worker::start(&site.pipeline);
    w2.wait_log(&format!("\"evidence_id\":\"{}\",\"spool_bytes\"", spooled[0]), Duration::from_secs(60));
    let uploaded = t0.elapsed();
    assert_eq!(w2.wait(Duration::from_secs(90)), 0, "{}", w2.log_text());
    let ids: Vec<String> = site.outbox().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, spooled, "the spooled item's event, once, after its upload");
    assert!(s3_keys(&moto, "evidence").iter().any(|k| k.contains(&spooled[0]) && k.ends_with("manifest.json")));
    println!(
        "| spool limit reached (store unreachable, spool_max_bytes = 1000) | 1 spooled, next clip refused + alarm | {} spooled, {refused} refused, spool_full on vigil.health.test-site.worker, /health {health_code}, exit {code} | {} | item uploaded and published {:.1} s into the next start |",
        spooled.len(),
        dups(&ids),
        uploaded.as_secs_f64()
    );
}
