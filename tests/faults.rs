//! Fault injection with real processes on loopback, bounded in time: broker outage longer than the
//! duplicate window, SIGKILL of the worker mid-clip, RTSP server restart, object store outage, and
//! a full spool. Each test prints its row of the results table:
//! `| fault | expected | received | duplicates | recovery |`.

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
    let t = std::fs::read_to_string(&site.pipeline).unwrap().replace(from, to);
    std::fs::write(&site.pipeline, t).unwrap();
}

#[test]
fn broker_outage_longer_than_the_duplicate_window_delivers_every_event_exactly_once() {
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
    let mut got = ids.clone();
    got.sort();
    let mut want = produced.clone();
    want.sort();
    assert_eq!(got, want, "every produced event arrived");
    assert!(log.contains("already on the stream"), "the resend of the un-acked first event was recognised: {log}");
    println!(
        "| nats-server killed while an event was produced, back after 3 s (> 1 s duplicate window), first ack lost | {} | {} | {} | backlog delivered {:.1} s after restart |",
        produced.len(),
        ids.len(),
        dups(&ids),
        recovery.as_secs_f64()
    );
}

#[test]
fn sigkill_mid_clip_leaves_no_partial_evidence_and_no_duplicates() {
    let nats = Nats::start();
    let cams = camera("fast", &sample("astronaut-pan.mp4").display().to_string(), "realtime = false", "")
        + &camera("slow", &sample("camera-pan.mp4").display().to_string(), "", "min_hits = 10\nwindow = 10");
    let site =
        Site::new(&format!("[clip]\npre_roll_s = 1\npost_roll_s = 4\n[publish]\nnats_url = \"{}\"\n", nats.url), &cams);
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("\"camera\":\"slow\"", Duration::from_secs(60));
    w.wait_log("JetStream acknowledged event", Duration::from_secs(60));
    // the slow camera's violation: its clip is being collected / cut now
    let t = Instant::now();
    while !w.log_text().contains("\"message\":\"violation\",\"camera\":\"slow\"")
        && t.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(800));
    let _ = w.child.kill(); // SIGKILL
    let _ = w.child.wait();
    let before = site.outbox().len();
    // no item in the store without its manifest
    let partial: Vec<_> = walk(&site.path("store/evidence"))
        .into_iter()
        .filter(|d| d.is_dir() && d.join("clip.mp4").exists() && !d.join("manifest.json").exists())
        .collect();
    assert!(partial.is_empty(), "partial evidence visible: {partial:?}");
    // restart with faceless sources: whatever was spooled or queued completes
    let t0 = Instant::now();
    set_source(
        &site,
        &sample("astronaut-pan.mp4").display().to_string(),
        &sample("chelsea-pan.mp4").display().to_string(),
    );
    set_source(&site, &sample("camera-pan.mp4").display().to_string(), &sample("coffee-pan.mp4").display().to_string());
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    let produced: Vec<String> = site.outbox().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    let ids = evidence_ids(&nats.messages("VIGIL"));
    assert_eq!(dups(&ids), 0, "{ids:?}");
    for id in &produced {
        assert!(ids.contains(id), "event {id} was recorded but never reached the stream");
    }
    let out = vigil().args(["verify", "--pipeline", site.pipeline.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    println!(
        "| worker SIGKILLed while cutting a clip, restarted | {} recorded before the kill ({} after) | {} | {} | complete after restart ({:.1} s run); store verifies; no partial item |",
        before,
        produced.len(),
        ids.len(),
        dups(&ids),
        t0.elapsed().as_secs_f64()
    );
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn rtsp_server_restart_reconnects_within_5_s_and_reports_down_and_up() {
    let nats = Nats::start();
    let port = free_port();
    let clip = sample("astronaut-pan.mp4");
    let server = RtspServer::serve_file_on(&clip, port);
    let url = server.url.clone();
    let site = Site::new(
        &format!("[publish]\nnats_url = \"{}\"\n", nats.url),
        &camera("cam1", &url, "stall_s = 2\nreconnect_max_s = 1", ""),
    );
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("violation", Duration::from_secs(60));
    drop(server);
    let down_at = Instant::now();
    w.wait_log("health: stream started", Duration::from_secs(20));
    let detected = down_at.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let _server = RtspServer::serve_file_on(&clip, port);
    let up_at = Instant::now();
    w.wait_log("health: stream ended", Duration::from_secs(20));
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
    println!(
        "| RTSP server stopped 3 s, restarted on the same port | down + recovered health events | down ({}) + recovered (down {lasted:.1} s) | 0 | down detected after {:.1} s; reconnected {:.1} s after the server returned |",
        down["detail"].as_str().unwrap_or_default(),
        detected.as_secs_f64(),
        reconnect.as_secs_f64()
    );
}

#[test]
fn object_store_outage_spools_evidence_then_uploads_it_and_publishes_after() {
    let moto = Moto::start();
    moto.create_bucket("evidence", false);
    let port = moto.port();
    let cams = camera("cam1", &sample("astronaut-pan.mp4").display().to_string(), "", "");
    let site = Site::new(
        &format!("[clip]\npre_roll_s = 1\npost_roll_s = 1\n[store.options]\n{}", moto.store_options()),
        &cams,
    );
    set_source(&site, "url = \"store\"", "url = \"s3://evidence/vigil\"");
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("camera starting", Duration::from_secs(30));
    drop(moto); // the store goes away during the run
    w.wait_log("spool: upload failed; will retry", Duration::from_secs(60));
    assert!(site.outbox().is_empty(), "no event before its evidence is stored");
    std::thread::sleep(Duration::from_secs(2));
    let moto = Moto::start_on(port);
    moto.create_bucket("evidence", false);
    let back = Instant::now();
    w.wait_log("spool: item stored, event queued", Duration::from_secs(30));
    let recovery = back.elapsed();
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log_text());
    let events = site.outbox();
    assert_eq!(events.len(), 1);
    let out = vigil().args(["verify", "--pipeline", site.pipeline.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    println!(
        "| S3 server (moto) stopped during the upload, restarted | 1 event after its artifacts | 1, artifacts verified in S3 | 0 | uploaded {:.1} s after the store returned |",
        recovery.as_secs_f64()
    );
}

#[test]
fn a_full_spool_stops_cutting_clips_and_raises_the_alarm() {
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
    let log = w.log_text();
    let line = log.lines().find(|l| l.contains("serving /metrics and /health")).expect("http address logged");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let http: u16 = v["address"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
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
    assert!(
        site.path("data/spool").read_dir().unwrap().count() == 1,
        "the first item stays spooled for the next start"
    );
    println!(
        "| spool limit reached (store unreachable, spool_max_bytes = 1000) | 1 spooled, next clip refused + alarm | 1 spooled, 1 refused, spool_full on vigil.health.test-site.worker, /health 503, exit 1 | 0 | item uploads on the next start |"
    );
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"));
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
