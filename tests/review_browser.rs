//! The review page in a real browser (Debian's Chromium, driven through chromedriver with
//! fantoccini): officer A logs in, filters the queue, opens an item, the clip plays, approves;
//! officer B approves and the page says approved; A cannot approve again; an auditor sees both
//! decisions and the access log; a tampered item shows the failed-verification badge and no
//! approve button. Screenshots go to `target/screenshots/`.

#[path = "support/browser.rs"]
mod browser;
mod common;
#[path = "support/review.rs"]
mod support;

use std::time::{Duration, Instant};

use browser::*;
use fantoccini::Locator;
use support::*;

#[test]
fn two_officers_approve_in_a_real_browser() {
    let rs = ReviewSite::new(2, "");
    let items = rs.items();
    let cam1: Vec<String> = items.iter().filter(|i| i.1 == "cam1").map(|i| i.0.clone()).collect();
    let (good, bad) = (cam1[0].clone(), cam1[1].clone());
    // the second item's clip is tampered with
    let clip = rs.item_dir(&bad).join("clip.mp4");
    let mut b = std::fs::read(&clip).unwrap();
    let n = b.len() / 2;
    b[n] ^= 0x40;
    std::fs::write(&clip, b).unwrap();
    let want_dur = rs.site.outbox().iter().find(|e| e["payload"]["evidence_id"] == good.as_str()).unwrap()["payload"]["clip"]["duration_s"].as_f64().unwrap();
    let svc = Service::start(&rs.site, "review-browser");
    let base = svc.url();
    let d = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&d, profile.path()).await;
        // officer A: log in (the page is Chinese by default), filter, open, play, approve
        login(&c, &base, "alice").await;
        let lang = js(&c, "return document.documentElement.lang").await;
        assert_eq!(lang, "zh-CN");
        assert!(c.source().await.unwrap().contains("待审队列"));
        let rows = c.find_all(Locator::Css("#queue tr.row")).await.unwrap().len();
        assert_eq!(rows, 3, "three items in the queue");
        // repeats of one object are grouped: cam1's two items fired at the same place (the two
        // worker runs play the same clip); cam2's is on its own
        let groups = js(&c, "return Array.from(document.querySelectorAll('#queue tr.row')).map(r => [r.dataset.id, r.dataset.group || ''])").await;
        let group_of = |id: &str| groups.as_array().unwrap().iter().find(|g| g[0] == id).map(|g| g[1].as_str().unwrap().to_string()).unwrap();
        assert!(!group_of(&good).is_empty() && group_of(&good) == group_of(&bad), "cam1's items are one group: {groups}");
        let cam2_item = items.iter().find(|i| i.1 == "cam2").unwrap().0.clone();
        assert_eq!(group_of(&cam2_item), "", "cam2's item stands alone: {groups}");
        // a thumbnail per row (the annotated snapshot, 160 px wide)
        let t = Instant::now();
        loop {
            let w = js(&c, &format!("const i = document.querySelector(\"tr.row[data-id='{good}'] img.thumb\"); return i && i.complete ? i.naturalWidth : 0;")).await;
            if w == 160 {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "the queue thumbnail of {good}: {w}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        shot("review-queue.png", &c.screenshot().await.unwrap());
        let cam = c.find(Locator::Css("#filters select[name=camera]")).await.unwrap();
        cam.select_by_value("cam1").await.unwrap();
        c.find(Locator::Css("#filters button")).await.unwrap().click().await.unwrap();
        wait_url(&c, "camera=cam1").await;
        wait(&c, "#queue").await;
        let ids: Vec<serde_json::Value> = js(&c, "return Array.from(document.querySelectorAll('#queue tr.row')).map(r => r.dataset.id)").await.as_array().unwrap().clone();
        assert_eq!(ids.len(), 2, "the camera filter keeps cam1's two items: {ids:?}");
        assert!(ids.iter().any(|i| i == good.as_str()));
        c.find(Locator::Css(&format!("tr.row[data-id='{good}'] a"))).await.unwrap().click().await.unwrap();
        wait(&c, "#verification").await;
        assert_eq!(js(&c, "return document.getElementById('verification').dataset.ok").await, "true");
        // the clip plays in the page (range requests)
        let t = Instant::now();
        loop {
            let v = js(&c, "const v = document.getElementById('clip'); return [v.readyState, v.duration];").await;
            let (state, dur) = (v[0].as_u64().unwrap_or(0), v[1].as_f64().unwrap_or(0.0));
            // the page preloads metadata only: playing is what fetches the frames
            if state >= 1 && (dur - want_dur).abs() < 0.25 {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "the clip did not load: readyState {state}, duration {dur} (manifest: {want_dur})");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let played = js(&c, "const v = document.getElementById('clip'); v.muted = true; return v.play().then(() => new Promise(r => setTimeout(() => r(v.currentTime), 800))).catch(e => -1);").await;
        assert!(played.as_f64().unwrap_or(0.0) > 0.0, "the clip plays: currentTime {played}");
        // the play was logged by the page (clip_played when playback starts)
        let t = Instant::now();
        while js(&c, "return document.getElementById('clip').dataset.logged || ''").await != "yes" {
            assert!(t.elapsed() < Duration::from_secs(10), "clip_played not logged");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shot("review-item.png", &c.screenshot().await.unwrap());
        for k in ["true", "clear", "complete", "accurate"] {
            c.find(Locator::Css(&format!("#decision input[name='{k}']"))).await.unwrap().click().await.unwrap();
        }
        c.find(Locator::Css("#approve")).await.unwrap().click().await.unwrap();
        wait(&c, "#history").await;
        assert_eq!(js(&c, "return document.querySelector('h2 .badge').dataset.status").await, "one_approval");
        // A cannot approve again: no approval form for A any more
        assert!(c.find(Locator::Css("#decision")).await.is_err(), "no decision form for an officer who decided");
        logout(&c).await;
        // officer B approves: approved
        login(&c, &base, "bob").await;
        c.goto(&format!("{base}/evidence/{good}")).await.unwrap();
        wait(&c, "#decision").await;
        for k in ["true", "clear", "complete", "accurate"] {
            c.find(Locator::Css(&format!("#decision input[name='{k}']"))).await.unwrap().click().await.unwrap();
        }
        c.find(Locator::Css("#approve")).await.unwrap().click().await.unwrap();
        wait(&c, "#final").await;
        assert_eq!(js(&c, "return document.querySelector('h2 .badge').dataset.status").await, "approved");
        assert!(text(&c, "#final").await.contains("已通过"));
        // the English switch
        c.find(Locator::Css("#lang")).await.unwrap().click().await.unwrap();
        wait_url(&c, "lang=en").await;
        wait(&c, "#final").await;
        assert_eq!(js(&c, "return document.documentElement.lang").await, "en");
        assert!(text(&c, "#final").await.contains("approved"));
        logout(&c).await;
        // the auditor: both decisions, the access log
        login(&c, &base, "carol").await;
        c.goto(&format!("{base}/evidence/{good}")).await.unwrap();
        wait(&c, "#history").await;
        assert_eq!(c.find_all(Locator::Css("#history tr.decision")).await.unwrap().len(), 2);
        let hist = text(&c, "#history").await;
        assert!(hist.contains("JS-2026-0001") && hist.contains("JS-2026-0002"), "{hist}");
        assert!(c.find(Locator::Css("#decision")).await.is_err(), "an auditor never decides");
        c.goto(&format!("{base}/audit")).await.unwrap();
        wait(&c, "#audit").await;
        let actions: Vec<serde_json::Value> = js(&c, "return Array.from(document.querySelectorAll('#audit tr.entry')).map(r => r.dataset.action)").await.as_array().unwrap().clone();
        for a in ["login", "item_viewed", "clip_played", "decision"] {
            assert!(actions.iter().any(|x| x == a), "{a} in the access log: {actions:?}");
        }
        shot("review-audit.png", &c.screenshot().await.unwrap());
        // the tampered item: failed badge, no approve button
        c.goto(&format!("{base}/evidence/{bad}")).await.unwrap();
        wait(&c, "#verification").await;
        logout(&c).await;
        login(&c, &base, "dave").await;
        c.goto(&format!("{base}/evidence/{bad}")).await.unwrap();
        wait(&c, "#verification").await;
        assert_eq!(js(&c, "return document.getElementById('verification').dataset.ok").await, "false");
        assert!(text(&c, "#verification").await.contains("clip.mp4"), "the badge says why");
        assert!(c.find(Locator::Css("#approve")).await.is_err(), "no approve button on a tampered item");
        assert!(c.find(Locator::Css("#no-approve")).await.is_ok());
        shot("review-tampered.png", &c.screenshot().await.unwrap());
        // phones and small screens: no page is wider than the screen (it used to be 1,102 px on
        // a 390 px phone), the clip fills the width
        logout(&c).await;
        // every page in Chinese: no English outside data fields (the login page, an error page)
        c.goto(&format!("{base}/login?lang=zh")).await.unwrap();
        wait(&c, "#login").await;
        assert_chinese(&c, "/login").await;
        login(&c, &base, "dave").await;
        c.goto(&format!("{base}/evidence/{bad}")).await.unwrap();
        wait(&c, "#decision").await;
        assert_chinese(&c, "a reviewer's item page").await;
        c.goto(&format!("{base}/evidence/0000-no-such-item")).await.unwrap();
        wait(&c, "#error").await;
        assert_chinese(&c, "the no-such-item page").await;
        // (the walk does find English: the same item page in English is full of it)
        c.goto(&format!("{base}/evidence/{bad}?lang=en")).await.unwrap();
        wait(&c, "#decision").await;
        let en = english_words(&c).await;
        assert!(en.len() > 20, "the English item page: {en:?}");
        c.goto(&format!("{base}/queue?lang=zh")).await.unwrap();
        wait(&c, "#queue").await;
        logout(&c).await;
        login(&c, &base, "carol").await;
        for (w, h) in [(390u32, 844u32), (1366, 768)] {
            c.set_window_size(w, h).await.unwrap();
            for path in ["/queue".to_string(), format!("/evidence/{good}"), format!("/evidence/{bad}"), "/audit".into()] {
                c.goto(&format!("{base}{path}")).await.unwrap();
                wait(&c, "main").await;
                if w == 1366 {
                    assert_chinese(&c, &path).await;
                }
                let (sw, cw) = page_width(&c).await;
                if sw > cw + 1.0 {
                    let wide = js(&c, "const w = document.documentElement.clientWidth; return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > w + 0.5).slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).join(', ')").await;
                    panic!("{path} at {w}×{h}: {sw} px wide in a {cw} px window; wider: {wide}");
                }
                if path.starts_with("/evidence/") {
                    let video = js(&c, "return document.getElementById('clip').getBoundingClientRect().width").await;
                    assert!(video.as_f64().unwrap() >= cw.min(700.0) * 0.4, "the clip at {w}: {video} px");
                }
                let name = path.trim_start_matches('/').split('/').next().unwrap().to_string();
                shot(&format!("review-{name}-{w}.png"), &c.screenshot().await.unwrap());
            }
        }
        c.close().await.unwrap();
    });
    // the same decisions through the API
    let carol = Client2::login(svc.port, "carol");
    let item = carol.get(&format!("/api/evidence/{good}")).json();
    assert_eq!(item["review"]["status"], "approved");
    println!(
        "browser: queue, filter, clip played, A approves, B approves → approved; auditor sees both; tampered item offers no approval"
    );
}

type Client2 = support::Client;
