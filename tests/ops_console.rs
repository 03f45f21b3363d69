//! The ops console in a real browser (Chromium through chromedriver): a worker with two RTSP
//! cameras (one served, one whose server is not there) publishes its live status on NATS; the
//! review service folds it into `/ops`. The ops user sees cam1 up and cam2 down; the RTSP server of
//! cam1 is stopped and cam1 turns down on the page within 5 s, then up again when the server comes
//! back. Every other role gets 403 on the page and its API. Screenshots to `target/screenshots/`.

#[path = "support/browser.rs"]
mod browser;
mod common;
#[path = "support/review.rs"]
mod support;

use std::time::{Duration, Instant};

use browser::*;
use common::*;
use support::*;

/// A live, endless H.264 stream (a file would end and reconnect on its own).
fn live_launch() -> String {
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=25/1 ! \
     x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        .into()
}

/// The state the page shows for `camera`.
async fn state(c: &fantoccini::Client, camera: &str) -> String {
    js(
        c,
        &format!(
            "const r = document.querySelector('tr.cam[data-camera=\"{camera}\"]'); return r ? r.dataset.state : null;"
        ),
    )
    .await
    .as_str()
    .unwrap_or("")
    .to_string()
}

/// Waits until the page shows `camera` in `want`; returns how long it took.
async fn wait_state(c: &fantoccini::Client, camera: &str, want: &str, timeout: Duration) -> Duration {
    let t = Instant::now();
    loop {
        if state(c, camera).await == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < timeout,
            "{camera} not {want} on /ops after {timeout:?}: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_ops_overview_shows_a_camera_go_down_and_come_back_and_other_roles_get_403() {
    let nats = Nats::start();
    let server = RtspServer::serve_launch(live_launch(), 0);
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    let gone = format!("rtsp://127.0.0.1:{}/cam", free_port());
    let cams = format!(
        "[[cameras]]\nid = \"cam1\"\nlocation = \"serving counter\"\nsource = \"{}\"\nlocation_category = \"kitchen\"\n\
         legal_review_date = \"2026-01-01\"\ntechnical_review_date = \"2026-01-02\"\ninstallation_ref = \"INST-1\"\n\
         public_notice_date = \"2026-01-03\"\n[[cameras.rules]]\nkind = \"no_mask\"\n\
         [[cameras]]\nid = \"cam2\"\nlocation = \"back kitchen\"\nsource = \"{gone}\"\n[[cameras.rules]]\nkind = \"no_mask\"\n",
        server.url
    );
    let site = Site::new(
        &format!(
            "[publish]\nnats_url = \"{}\"\n[review]\nkey = \"keys/review.key\"\ngenerate_key_if_missing = true\n",
            nats.url
        ),
        &cams,
    );
    add_users(&site);
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("camera video", Duration::from_secs(60));
    let svc = Service::start(&site, "ops-console");
    let base = svc.url();

    // the API: ops reads the rows; every other role gets 403 on the page and the API
    let t = Instant::now();
    let rows = loop {
        let r = Client::login(svc.port, "olga").get("/api/ops/cameras");
        assert_eq!(r.status, 200, "{}", r.text());
        let rows = r.json();
        if rows[0]["state"] == "up" {
            break rows;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "cam1 never up in the API: {rows}\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    assert_eq!(rows[0]["worker"], "test-worker", "{rows}");
    assert_eq!(rows[0]["status"], "enforcement", "{rows}");
    assert_eq!(rows[1]["camera"], "cam2");
    assert_eq!(rows[1]["status"], "advisory", "an unregistered camera is advisory: {rows}");
    assert!(!rows[1]["status_reasons"].as_array().unwrap().is_empty(), "{rows}");
    for user in ["alice", "carol"] {
        let c = Client::login(svc.port, user);
        for path in ["/ops", "/api/ops/cameras"] {
            let r = c.get(path);
            assert_eq!(r.status, 403, "{user} on {path}: {}", r.text());
        }
    }
    let anon = Client::new(svc.port).get("/api/ops/cameras");
    assert_eq!(anon.status, 401, "no session: {}", anon.text());

    let d = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(async {
        let c = browser(&d, profile.path()).await;
        // the ops role lands on the overview
        login(&c, &base, "olga").await;
        assert!(c.current_url().await.unwrap().as_str().ends_with("/ops"), "ops lands on /ops");
        wait_state(&c, "cam1", "up", Duration::from_secs(30)).await;
        wait_state(&c, "cam2", "down", Duration::from_secs(30)).await;
        // the live figures are filled in
        let analysed =
            js(&c, "return document.querySelector('tr.cam[data-camera=\"cam1\"] .analysed').textContent").await;
        let fps: f64 = analysed.as_str().unwrap_or("").parse().unwrap_or(-1.0);
        assert!(fps > 0.0, "cam1 analysed fps on the page: {analysed}");
        shot("ops-overview.png", &c.screenshot().await.unwrap());

        // the camera's RTSP server stops: down on the page within 5 s
        drop(server);
        let stopped = Instant::now();
        wait_state(&c, "cam1", "down", Duration::from_secs(5)).await;
        let down_after = stopped.elapsed();
        shot("ops-overview-down.png", &c.screenshot().await.unwrap());
        // and back: up again once the server is
        let server = RtspServer::serve_launch(live_launch(), port);
        let restarted = Instant::now();
        wait_state(&c, "cam1", "up", Duration::from_secs(40)).await;
        println!(
            "| cam1 RTSP server stopped → down on /ops | {:.1} s |\n| server back → up on /ops | {:.1} s |",
            down_after.as_secs_f64(),
            restarted.elapsed().as_secs_f64()
        );
        let _ = c.close().await;
        server
    });
    drop(server);
    w.sigterm();
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "clean exit; log:\n{}", w.log_text());
}
