//! The ops console's mask and zone editor in a real browser (Chromium through chromedriver): a
//! worker runs a looping camera on NATS; the ops user opens the editor, sees the worker's masked
//! snapshot, asks for the unmasked view (audited), draws a privacy polygon by clicking on the
//! picture, drags a vertex into place and saves; the running worker applies it; then the user
//! draws the rule's zone over the face, and the next evidence clip is black under the new polygon
//! in every frame and its manifest names the new mask's SHA-256. Other roles get 403; a polygon
//! outside the frame is refused with the mask loader's own message.

#[path = "support/browser.rs"]
mod browser;
mod common;
#[path = "support/review.rs"]
mod support;

use std::time::{Duration, Instant};

use browser::*;
use common::*;
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use support::*;
use vigil::privacy::PrivacyMask;

/// The polygon the test draws (normalised): a band on the left, away from the face.
const DRAWN: [[f64; 2]; 4] = [[0.03, 0.05], [0.2, 0.05], [0.2, 0.95], [0.03, 0.95]];
/// The zone drawn next: the middle of the frame, where the face is.
const ZONE: [[f64; 2]; 4] = [[0.21, 0.01], [0.77, 0.01], [0.77, 0.99], [0.21, 0.99]];

/// The `#draw` overlay's size in CSS pixels.
async fn overlay_size(c: &fantoccini::Client) -> (f64, f64) {
    let v =
        js(c, "const r = document.getElementById('draw').getBoundingClientRect(); return [r.width, r.height];").await;
    (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
}

/// The pointer moved to normalised (x, y) of the overlay (offsets are from its centre).
async fn move_to(c: &fantoccini::Client, (x, y): (f64, f64)) -> PointerAction {
    let (w, h) = overlay_size(c).await;
    let el = c.find(fantoccini::Locator::Id("draw")).await.unwrap();
    PointerAction::MoveToElement { element: el, duration: None, x: ((x - 0.5) * w).round(), y: ((y - 0.5) * h).round() }
}

/// A real mouse click at normalised (x, y) on the overlay.
async fn click_at(c: &fantoccini::Client, p: [f64; 2]) {
    let m = MouseActions::new("mouse".into())
        .then(move_to(c, (p[0], p[1])).await)
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    c.perform_actions(m).await.unwrap();
}

/// A real mouse drag from `a` to `b` (normalised).
async fn drag(c: &fantoccini::Client, a: [f64; 2], b: [f64; 2]) {
    let m = MouseActions::new("mouse".into())
        .then(move_to(c, (a[0], a[1])).await)
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::MoveBy { duration: Some(Duration::from_millis(100)), x: 0.0, y: 0.0 })
        .then(move_to(c, (b[0], b[1])).await)
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    c.perform_actions(m).await.unwrap();
}

async fn wait_js(c: &fantoccini::Client, script: &str, want: &str, timeout: Duration) {
    let t = Instant::now();
    loop {
        let v = js(c, script).await;
        if v.as_str() == Some(want) {
            return;
        }
        assert!(t.elapsed() < timeout, "{script} is {v}, not {want:?}, after {timeout:?}: {}", text(c, "body").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The points of the polygons the editor holds for the current target.
async fn editor_points(c: &fantoccini::Client) -> Vec<String> {
    js(c, "return Array.from(document.querySelectorAll('#polys li')).map(l => l.textContent)")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The brightest channel over the pixels deep inside `mask` (more than `EDGE` px from its edge)
/// and the mean over the pixels outside it, in one frame.
fn inside_and_outside(mask: &PrivacyMask, w: u32, h: u32, px: impl Fn(u32, u32) -> [u8; 3]) -> (u8, f64, usize) {
    const EDGE: i64 = 5;
    let r = mask.raster(w, h);
    let covered = |x: i64, y: i64| x < 0 || y < 0 || x >= w as i64 || y >= h as i64 || r.covers(x as u32, y as u32);
    let (mut worst, mut sum, mut n, mut inner) = (0u8, 0u64, 0u64, 0usize);
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let p = px(x as u32, y as u32);
            if !covered(x, y) {
                sum += p.iter().map(|&v| v as u64).sum::<u64>();
                n += 3;
            } else if (-EDGE..=EDGE).all(|d| covered(x + d, y) && covered(x, y + d)) {
                worst = worst.max(*p.iter().max().unwrap());
                inner += 1;
            }
        }
    }
    (worst, sum as f64 / n.max(1) as f64, inner)
}

#[test]
fn an_ops_user_draws_a_privacy_polygon_and_the_next_clip_is_black_there_with_the_new_hash_in_its_manifest() {
    let _rt = realtime_lock();
    let nats = Nats::start();
    let file_mask = repo().join("privacy-masks/cam-astronaut.toml");
    let cams = format!(
        "[[cameras]]\nid = \"cam1\"\nlocation = \"counter\"\nsource = \"{}\"\nloop = true\nrealtime = true\n\
         privacy_mask = \"{}\"\n[[cameras.rules]]\nkind = \"no_mask\"\ncooldown_s = 1\n\
         zone = [[0.0, 0.9], [0.06, 0.9], [0.06, 1.0], [0.0, 1.0]]\n",
        sample("astronaut-pan.mp4").display(),
        file_mask.display()
    );
    let site = Site::new(
        &format!(
            "[publish]\nnats_url = \"{}\"\n[review]\nkey = \"keys/review.key\"\ngenerate_key_if_missing = true\n\
             [clip]\npre_roll_s = 1\npost_roll_s = 1\n",
            nats.url
        ),
        &cams,
    );
    add_users(&site);
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("camera video", Duration::from_secs(60));
    let svc = Service::start(&site, "ops-masks");
    let base = svc.url();
    let evidence = |nats: &Nats| -> Vec<serde_json::Value> {
        nats.messages("VIGIL")
            .into_iter()
            .filter(|(s, ..)| s.starts_with("vigil.evidence."))
            .map(|(_, _, p)| p)
            .collect()
    };

    // the masked snapshot, from the worker, black where the file's mask is (the right band)
    let olga = Client::login(svc.port, "olga");
    let t = Instant::now();
    let snap = loop {
        let r = olga.get("/api/ops/snapshot/cam1");
        if r.status == 200 {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no snapshot: {} {}", r.status, r.text());
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(snap.header("content-type"), Some("image/jpeg"));
    assert_eq!(snap.header("x-vigil-snapshot"), Some("masked"));
    let file = PrivacyMask::load(&file_mask).unwrap();
    assert_eq!(snap.header("x-vigil-mask-sha256"), Some(file.sha256.as_str()), "the worker names the mask in force");
    let img = decode_jpeg(&snap.body);
    assert_masked("masked snapshot", img.width(), img.height(), |x, y| img.get_pixel(x, y).0, 0.79, 1.0, 0.7);
    // every other role: 403 on the pages and the API, the unmasked request logged as denied
    for user in ["alice", "carol"] {
        let c = Client::login(svc.port, user);
        for path in ["/ops/masks", "/ops/masks/cam1", "/api/ops/snapshot/cam1?unmasked=1", "/api/ops/masks/cam1"] {
            let r = c.get(path);
            assert_eq!(r.status, 403, "{user} on {path}: {}", r.text());
        }
        let r = c.post("/api/ops/masks/cam1", &serde_json::json!({"polygons": [{"points": DRAWN}]}));
        assert_eq!(r.status, 403, "{user} saving a mask: {}", r.text());
    }
    assert_eq!(Client::new(svc.port).get("/api/ops/snapshot/cam1").status, 401);
    // refused with the mask loader's own words; nothing written
    let r = olga.post(
        "/api/ops/masks/cam1",
        &serde_json::json!({"polygons": [{"name": "door", "points": [[0.1, 0.1], [1.2, 0.5], [0.1, 0.9]]}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("polygon 0 (door): point 1 [1.2, 0.5] is outside [0, 1]"), "{}", r.text());
    let r = olga.post("/api/ops/masks/cam1", &serde_json::json!({"polygons": [{"points": [[0.1, 0.1], [0.2, 0.2]]}]}));
    assert!(r.status == 400 && r.text().contains("at least 3 points"), "{}", r.text());
    let r = olga.post("/api/ops/masks/cam9", &serde_json::json!({"polygons": [{"points": DRAWN}]}));
    assert_eq!(r.status, 400, "{}", r.text());

    let d = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (c, sha, text_saved) = rt.block_on(async {
        let c = browser(&d, profile.path()).await;
        login(&c, &base, "olga").await;
        c.goto(&format!("{base}/ops/masks")).await.unwrap();
        wait(&c, "#masks").await;
        c.find(fantoccini::Locator::Css("tr.cam[data-camera='cam1'] a")).await.unwrap().click().await.unwrap();
        wait(&c, "#editor").await;
        wait_js(&c, "return document.getElementById('editor').dataset.loaded", "masked", Duration::from_secs(20)).await;
        assert_eq!(editor_points(&c).await.len(), 1, "the file's polygon is there to edit");
        // the unmasked view: asked for explicitly, served, audited
        c.find(fantoccini::Locator::Id("unmasked")).await.unwrap().click().await.unwrap();
        wait_js(&c, "return document.getElementById('editor').dataset.loaded", "unmasked", Duration::from_secs(20))
            .await;
        // draw: three corners where they belong, the fourth off, then dragged into place
        for p in &DRAWN[..3] {
            click_at(&c, *p).await;
        }
        click_at(&c, [0.1, 0.8]).await;
        drag(&c, [0.1, 0.8], DRAWN[3]).await;
        c.find(fantoccini::Locator::Id("close")).await.unwrap().click().await.unwrap();
        let polys = editor_points(&c).await;
        assert_eq!(polys.len(), 2, "{polys:?}");
        let drawn: Vec<f64> = polys[1]
            .rsplit('·')
            .next()
            .unwrap()
            .replace(['[', ']', ','], " ")
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(drawn.len(), 8, "{polys:?}");
        for (got, want) in drawn.iter().zip(DRAWN.iter().flatten()) {
            assert!((got - want).abs() < 0.01, "drawn {drawn:?}, meant {DRAWN:?}");
        }
        c.find(fantoccini::Locator::Id("reason")).await.unwrap().send_keys("window onto the street").await.unwrap();
        shot("ops-mask-editor.png", &c.screenshot().await.unwrap());
        let mark = w.mark();
        c.find(fantoccini::Locator::Id("save")).await.unwrap().click().await.unwrap();
        wait_js(&c, "return document.getElementById('msg').dataset.state", "saved", Duration::from_secs(20)).await;
        let sha = js(&c, "return document.getElementById('msg').dataset.sha").await.as_str().unwrap().to_string();
        let text_saved =
            js(&c, "return document.getElementById('mask-text').textContent").await.as_str().unwrap().to_string();
        let line = w.wait_log_from(mark, "rule configuration applied", Duration::from_secs(30));
        assert!(
            line.contains("privacy_mask") && line.contains("olga") && line.contains(&sha),
            "the worker applied olga's mask: {line}"
        );
        // the picture from the worker now is masked with it
        c.find(fantoccini::Locator::Id("unmasked")).await.unwrap().click().await.unwrap();
        wait_js(&c, "return document.getElementById('editor').dataset.loaded", "masked", Duration::from_secs(20)).await;
        (c, sha, text_saved)
    });
    assert!(evidence(&nats).is_empty(), "no event yet: the rule's zone is off the face");
    rt.block_on(async {
        // the rule's zone, drawn over the face
        c.execute("const s = document.getElementById('target'); s.value = 'zone:no_mask'; s.dispatchEvent(new Event('change'));", vec![]).await.unwrap();
        for p in ZONE {
            click_at(&c, p).await;
        }
        c.find(fantoccini::Locator::Id("close")).await.unwrap().click().await.unwrap();
        let mark = w.mark();
        c.find(fantoccini::Locator::Id("save")).await.unwrap().click().await.unwrap();
        wait_js(&c, "return document.getElementById('msg').dataset.state", "saved", Duration::from_secs(20)).await;
        let line = w.wait_log_from(mark, "rule configuration applied", Duration::from_secs(30));
        assert!(line.contains("zone") && line.contains("olga"), "{line}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        shot("ops-mask-editor-saved.png", &c.screenshot().await.unwrap());
        let _ = c.close().await;
    });
    let saved = PrivacyMask::parse(text_saved.as_bytes(), std::path::Path::new("page"), "page".into()).unwrap();
    assert_eq!(saved.sha256, sha, "the page shows the bytes whose hash it names");
    assert_eq!(saved.polygons.len(), 2, "{text_saved}");

    // the next evidence: its manifest names the new mask, its clip is black under it
    let t = Instant::now();
    let ev = loop {
        if let Some(e) = evidence(&nats).into_iter().next() {
            break e;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "no evidence after the zone change:\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(ev["privacy_mask"]["sha256"], sha.as_str(), "{}", ev["privacy_mask"]);
    assert_eq!(ev["privacy_mask"]["polygons"], 2);
    assert!(
        ev["privacy_mask"]["id"].as_str().unwrap().starts_with("kv:vigil-masks/test-site.cam1@"),
        "{}",
        ev["privacy_mask"]
    );
    let zone: Vec<[f64; 2]> = serde_json::from_value(ev["zone"].clone()).unwrap();
    assert_eq!(zone.len(), 4, "the drawn zone is in the manifest: {zone:?}");
    let clip = site.path("clip.mp4");
    std::fs::write(&clip, site.stored(ev["artifacts"]["clip"]["key"].as_str().unwrap())).unwrap();
    let frames = decode_mp4(&clip);
    assert!(frames.len() >= 25, "{} frames", frames.len());
    let drawn_only = PrivacyMask::parse(
        format!("[[polygons]]\npoints = {}\n", serde_json::json!(DRAWN)).as_bytes(),
        std::path::Path::new("drawn"),
        "drawn".into(),
    )
    .unwrap();
    let (mut worst, mut darkest_outside, mut inner) = (0u8, f64::MAX, 0);
    for f in &frames {
        let (w_in, mean_out, n) = inside_and_outside(&drawn_only, f.width, f.height, |x, y| f.px(x, y));
        worst = worst.max(w_in);
        darkest_outside = darkest_outside.min(mean_out);
        inner = n;
    }
    assert!(inner > 10_000, "{inner} pixels deep inside the drawn polygon");
    assert!(worst <= 16, "under the drawn polygon: brightest pixel {worst} over {} frames", frames.len());
    assert!(darkest_outside > 30.0, "picture outside the masks (darkest frame mean {darkest_outside:.1})");
    let snap = decode_jpeg(&site.stored(ev["artifacts"]["snapshot"]["key"].as_str().unwrap()));
    let (w_in, ..) = inside_and_outside(&drawn_only, snap.width(), snap.height(), |x, y| snap.get_pixel(x, y).0);
    assert!(w_in <= 16, "the snapshot under the drawn polygon: {w_in}");

    // the audit records: the worker's (on the stream) and the review service's access log
    let audit: Vec<serde_json::Value> = nats
        .messages("VIGIL")
        .into_iter()
        .filter(|(s, ..)| s == "vigil.audit.test-site.cam1")
        .map(|(_, _, p)| p)
        .collect();
    let masks: Vec<&serde_json::Value> = audit.iter().filter(|r| r["rule"] == "privacy_mask").collect();
    for r in &audit {
        println!("audit record: {}", serde_json::to_string(r).unwrap());
    }
    let served: Vec<_> = masks.iter().filter(|r| r["outcome"] == "unmasked view served").collect();
    assert!(!served.is_empty() && served.iter().all(|r| r["by"] == "olga"), "{masks:?}");
    let applied: Vec<_> = masks.iter().filter(|r| r["outcome"] == "applied").collect();
    assert_eq!(applied.len(), 1, "{masks:?}");
    assert_eq!(applied[0]["by"], "olga");
    assert_eq!(applied[0]["reason"], "window onto the street");
    assert_eq!(applied[0]["old_revision"], format!("sha256:{}", file.sha256));
    assert_eq!(applied[0]["new_revision"], format!("sha256:{sha}"));
    assert_eq!(applied[0]["old"]["polygons"].as_array().unwrap().len(), 1);
    assert_eq!(applied[0]["new"]["polygons"].as_array().unwrap().len(), 2);
    assert!(applied[0]["time_utc"].as_str().is_some_and(|t| t.ends_with('Z')));
    let zone_rec: Vec<_> = audit.iter().filter(|r| r["rule"] == "no_mask" && r["outcome"] == "applied").collect();
    assert!(
        zone_rec.iter().any(|r| r["by"] == "olga" && r["new"]["zone"].as_array().is_some_and(|z| z.len() == 4)),
        "{zone_rec:?}"
    );
    let log = Client::login(svc.port, "carol").get("/api/audit").json();
    let actions: Vec<String> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["user"].as_str().unwrap_or(""),
                e["action"].as_str().unwrap_or(""),
                e["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "olga unmasked_view_requested ok",
        "olga mask_changed ok",
        "alice unmasked_view_requested denied",
        "olga threshold_changed ok",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want} in the access log: {actions:?}");
    }
    w.sigterm();
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "clean exit; log:\n{}", w.log_text());
}
