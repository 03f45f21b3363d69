//! Credentials never leak: a worker with an RTSP password in the camera URL and a NATS user and
//! password (nats-server asking for them) runs to an acknowledged event; no log line, event,
//! manifest, stored file, stream message, `/metrics` or `/health` contains either password. A
//! wrong NATS password is said plainly, the events wait in the outbox, nothing panics.

mod common;

use std::time::Duration;

use common::*;

const RTSP_PW: &str = "Rtsp-S3cret-7781";
const NATS_PW: &str = "Nats-S3cret-9932";

/// Every file under `dir`, as text (lossy).
fn all_files(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p.display().to_string(), String::from_utf8_lossy(&b).into_owned()));
        }
    }
}

#[test]
fn no_password_reaches_a_log_line_an_event_a_manifest_or_an_endpoint() {
    let nats = Nats::start_with_password("vigil", NATS_PW);
    let server = RtspServer::serve_file(&sample("astronaut-pan.mp4"));
    let rtsp = server.url.replace("rtsp://", &format!("rtsp://camera-admin:{RTSP_PW}@"));
    let site = Site::new(
        &format!("[clip]\npre_roll_s = 2\npost_roll_s = 2\n[publish]\nnats_url = \"{}\"\n", nats.url),
        &astronaut_camera(&rtsp, ""),
    );
    site.replace("[worker]\n", "[worker]\nhttp = \"127.0.0.1:0\"\n");
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("JetStream acknowledged event", Duration::from_secs(120));
    let log = w.log_text();
    let line = log.lines().find(|l| l.contains("serving /metrics and /health")).expect("http address logged");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let http: u16 = v["address"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let metrics = http_get(http, "/metrics");
    let health = http_get(http, "/health");
    assert!(metrics.contains("vigil_frames_decoded_total"), "{metrics}");
    w.sigterm();
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log_text());
    let log = w.log_text();
    // what was looked at: every log line, every file the worker wrote (outbox, spool, store:
    // manifests, events, chain), every message on the stream, both endpoints
    let mut places: Vec<(String, String)> = vec![("log".into(), log.clone())];
    all_files(&site.path("data"), &mut places);
    all_files(&site.path("store"), &mut places);
    let msgs = nats.messages("VIGIL");
    assert!(msgs.iter().any(|m| m.0 == "vigil.evidence.test-site.cam1"), "the event arrived through the password");
    places.extend(msgs.iter().map(|m| (m.0.clone(), m.2.to_string())));
    places.push(("/metrics".into(), metrics));
    places.push(("/health".into(), health));
    for (what, text) in &places {
        for pw in [RTSP_PW, NATS_PW] {
            assert!(!text.contains(pw), "{what} contains a password");
        }
    }
    // the URLs are still recognisable, with the password replaced
    assert!(log.contains("camera-admin:***@") || log.contains("rtsp://***@"), "{log}");
    println!(
        "| RTSP password in the camera URL, NATS user + password (nats-server --user/--pass) | {} places checked ({} log lines, {} files, {} stream messages, /metrics, /health) | 0 contain either password |",
        places.len(),
        log.lines().count(),
        places.len() - 3 - msgs.len(),
        msgs.len()
    );
}

#[test]
fn a_wrong_nats_password_is_said_plainly_and_the_events_wait_in_the_outbox() {
    let nats = Nats::start_with_password("vigil", NATS_PW);
    let wrong = nats.url.replace(NATS_PW, "not-the-password");
    let site = Site::new(
        &format!("[clip]\npre_roll_s = 2\npost_roll_s = 2\n[publish]\nnats_url = \"{wrong}\"\n"),
        &astronaut_camera(&sample("astronaut-pan.mp4").display().to_string(), "realtime = false"),
    );
    let (code, log) =
        run_to_end(&["--log-format", "json", "run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(code, 0, "{log}");
    let refused = log
        .lines()
        .find(|l| l.contains("NATS refused the connection"))
        .unwrap_or_else(|| panic!("no plain NATS error: {log}"));
    assert!(refused.to_lowercase().contains("authorization"), "{refused}");
    assert!(!log.contains("not-the-password"), "the wrong password is not shown either");
    let out = site.outbox();
    assert_eq!(out.len(), 1, "the event waits in the outbox");
    let acked = std::fs::read_to_string(site.path("data/outbox.acked")).unwrap_or_default();
    assert!(!acked.contains(out[0]["id"].as_str().unwrap()), "not acknowledged");
    assert!(nats.messages("VIGIL").is_empty());
    let v: serde_json::Value = serde_json::from_str(refused).unwrap();
    println!(
        "| wrong NATS password | `{}`: {} | 1 event in the outbox, unacknowledged; exit 0 |",
        v["message"], v["error"]
    );
}
