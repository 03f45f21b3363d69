//! The evidence review service through its API, against the real service process over the store
//! the real worker wrote: every workflow rule, every bad request, a restart mid-way, two instances
//! deciding at once, S3 and NATS (decision events exactly once, across a broker outage).

mod common;
#[path = "support/review.rs"]
mod support;

use std::time::Duration;

use common::*;
use support::*;

/// One row of the workflow table: (action, expected, observed).
struct Table(Vec<(String, String, String)>);

impl Table {
    fn row(&mut self, action: &str, expected: &str, r: &Resp, want: u16) {
        let observed = if r.header("content-type") == Some("application/x-tar") {
            format!("{} tar of {} bytes, SHA-256 {}", r.status, r.body.len(), r.header("x-sha256").unwrap_or(""))
        } else {
            format!("{} {}", r.status, r.text().chars().take(120).collect::<String>())
        };
        assert_eq!(r.status, want, "{action}: {observed}");
        self.0.push((action.into(), expected.into(), observed));
    }
    fn print(&self) {
        for (a, e, o) in &self.0 {
            println!("| {a} | {e} | {} |", o.replace('|', "/"));
        }
    }
}

#[test]
fn the_workflow_rules_and_every_bad_request() {
    let rs = ReviewSite::new(3, "");
    let items = rs.items();
    let enf: Vec<&String> = items.iter().filter(|i| i.1 == "cam1").map(|i| &i.0).collect();
    let adv = &items.iter().find(|i| i.1 == "cam2").unwrap().0;
    assert_eq!(enf.len(), 3);
    let mut svc = Service::start(&rs.site, "review-a");
    let mut t = Table(Vec::new());
    let anon = Client::new(svc.port);
    t.row("list without a session", "401", &anon.get("/api/evidence"), 401);
    let r = anon.request(
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        br#"{"user":"alice","password":"nope"}"#,
    );
    t.row("login with a wrong password", "401", &r, 401);
    let alice = Client::login(svc.port, "alice");
    let bob = Client::login(svc.port, "bob");
    let carol = Client::login(svc.port, "carol");
    let olga = Client::login(svc.port, "olga");
    let list = alice.get("/api/evidence");
    t.row("reviewer lists the queue", "200, 4 items, each pending", &list, 200);
    let j = list.json();
    assert_eq!(j["total"], 4);
    assert!(j["items"].as_array().unwrap().iter().all(|i| i["review"]["status"] == "pending" && i["id"].is_string()));
    let times: Vec<&str> =
        j["items"].as_array().unwrap().iter().map(|i| i["violation_time_utc"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    // the risk-tier filter (the rule's severity: this site's rules are all "minor")
    assert_eq!(alice.get("/api/evidence?severity=minor").json()["total"], 4);
    assert_eq!(alice.get("/api/evidence?severity=major").json()["total"], 0);
    // the risk tier (no_mask's default: routine), carried in the item and shown in the queue
    assert_eq!(alice.get("/api/evidence?tier=routine").json()["total"], 4);
    assert_eq!(alice.get("/api/evidence?tier=immediate").json()["total"], 0);
    assert!(j["items"].as_array().unwrap().iter().all(|i| i["tier"] == "routine"), "{j}");
    t.row("an unknown risk tier", "400", &alice.get("/api/evidence?tier=urgent"), 400);
    let q = alice.get("/queue?tier=routine");
    assert!(q.text().contains("data-tier=\"routine\">日常提醒</span>"), "the tier badge: {}", q.text());
    let q = alice.get("/queue?severity=minor");
    assert!(q.status == 200 && q.text().contains("<option value=\"minor\" selected>一般</option>"), "{}", q.text());
    // completeness: the queue flags an item whose clip lacks pre- or post-roll or has gaps, and the
    // item page says how, with the clip's length and the privacy mask that was applied
    let outbox = rs.site.outbox();
    let mut incomplete = 0;
    for i in j["items"].as_array().unwrap() {
        let e = outbox.iter().find(|e| e["payload"]["evidence_id"] == i["id"]).unwrap();
        let p = &e["payload"];
        let short = p["clip"]["pre_roll_truncated"] == true
            || p["clip"]["post_roll_truncated"] == true
            || !p["health"]["gaps"].as_array().unwrap().is_empty();
        assert_eq!(i["complete"], !short, "{i} / {}", p["clip"]);
        incomplete += short as usize;
        let page = alice.get(&format!("/evidence/{}", i["id"].as_str().unwrap())).text();
        assert!(page.contains(&format!("id=\"completeness\" data-complete=\"{}\"", !short)), "{page}");
        assert!(page.contains("id=\"mask-applied\"") && page.contains("id=\"clip-length\""), "{page}");
        if p["clip"]["pre_roll_truncated"] == true {
            assert!(page.contains("事前录像不足"), "the shortfall named: {page}");
        }
        if let Some(mask) = p["privacy_mask"]["sha256"].as_str() {
            assert!(page.contains(&mask[..16]), "the mask applied, by hash: {page}");
        }
    }
    println!("| queue of {} items | {incomplete} flagged incomplete, each matching its manifest |", j["total"]);
    // a refused decision from the page's form comes back as the item page, the form as the
    // officer left it (three checks ticked, the reason) and why beside it, in Chinese
    let form = |body: &str| {
        alice.request(
            "POST",
            &format!("/evidence/{}/decision", enf[0]),
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("csrf={}&{body}", alice.csrf.as_deref().unwrap()).as_bytes(),
        )
    };
    let r = form("decision=approve&true=1&clear=1&complete=1&reason=%E7%94%BB%E9%9D%A2%E6%B8%85%E6%A5%9A");
    assert_eq!(r.status, 422, "{}", r.text());
    let page = r.text();
    assert!(page.contains("id=\"decision-error\"") && page.contains("批准需要勾选全部四项核查"), "{page}");
    assert_eq!(page.matches("checked").count(), 3, "the three ticks kept: {page}");
    assert!(page.contains(">画面清楚</textarea>"), "the reason kept: {page}");
    let r = form("decision=reject&true=1");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("驳回需要填写理由") && r.text().matches("checked").count() == 1, "{}", r.text());
    assert_eq!(
        alice.get(&format!("/api/evidence/{}", enf[0])).json()["review"]["status"],
        "pending",
        "nothing decided"
    );
    let mut nocsrf = alice.clone();
    nocsrf.csrf = None;
    t.row("decision without the CSRF token", "403", &nocsrf.decide(enf[0], "approve", true, ""), 403);
    t.row("auditor tries to decide", "403", &carol.decide(enf[0], "approve", true, ""), 403);
    t.row("ops account reads evidence", "403", &olga.get("/api/evidence"), 403);
    t.row("unknown evidence id", "404", &alice.get("/api/evidence/01ZZZZZZZZZZZZZZZZZZZZZZZZ"), 404);
    t.row("traversal in the id", "404", &alice.get("/api/evidence/..%2F..%2Fkeys%2Fsigning.key"), 404);
    t.row("traversal in a file name", "404", &alice.get(&format!("/api/evidence/{}/..%2Fmanifest.sig", enf[0])), 404);
    let r = alice.request(
        "POST",
        &format!("/api/evidence/{}/decision", enf[0]),
        &[("x-csrf-token", alice.csrf.as_deref().unwrap()), ("content-type", "application/json")],
        b"{\"decision\": approve",
    );
    t.row("malformed JSON", "400 with the parser's message", &r, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("malformed JSON"), "{}", r.text());
    let r = alice.get("/api/evidence?status=bogus");
    t.row("an unknown filter value", "400", &r, 400);
    t.row("approval without the four checks", "422", &alice.decide(enf[0], "approve", false, ""), 422);
    let r = alice.decide(enf[0], "approve", true, "");
    t.row("first approval (alice)", "200, one_approval", &r, 200);
    assert_eq!(r.json()["status"], "one_approval");
    assert_eq!(r.json()["record"]["officer"]["officer_id"], "JS-2026-0001", "the certificate number is in the record");
    t.row("same officer approves again", "409", &alice.decide(enf[0], "approve", true, ""), 409);
    t.row("rejection without a reason", "422", &bob.decide(enf[0], "reject", true, ""), 422);
    // the service restarts mid-way: the state comes back from the store
    svc.stop();
    svc = Service::start(&rs.site, "review-a");
    let (alice, bob, carol) =
        (Client::login(svc.port, "alice"), Client::login(svc.port, "bob"), Client::login(svc.port, "carol"));
    let anon = Client::new(svc.port);
    let r = bob.get(&format!("/api/evidence/{}", enf[0]));
    t.row("after a restart the item is still one_approval", "200, one_approval", &r, 200);
    assert_eq!(r.json()["review"]["status"], "one_approval");
    let r = bob.decide(enf[0], "approve", true, "");
    t.row("second approval by another officer (bob)", "200, approved", &r, 200);
    assert_eq!(r.json()["status"], "approved");
    t.row(
        "a decision after approval",
        "409 (final)",
        &Client::login(svc.port, "dave").decide(enf[0], "reject", true, "late"),
        409,
    );
    // one rejection rejects
    let r = alice.decide(enf[1], "reject", true, "the face is not clearly visible");
    t.row("one rejection", "200, rejected", &r, 200);
    assert_eq!(r.json()["status"], "rejected");
    t.row("approval after a rejection", "409", &bob.decide(enf[1], "approve", true, ""), 409);
    // a correction: alice corrects her own rejection
    let r = alice.post(&format!("/api/evidence/{}/decision", enf[1]), &serde_json::json!({"decision": "approve", "checks": {"true": true, "clear": true, "complete": true, "accurate": true}, "reason": "second look: clear", "corrects": 1}));
    t.row("a correction of one's own rejection", "200, one_approval", &r, 200);
    assert_eq!(r.json()["status"], "one_approval");
    let r = bob.post(
        &format!("/api/evidence/{}/decision", enf[1]),
        &serde_json::json!({"decision": "reject", "reason": "x", "corrects": 2}),
    );
    t.row("correcting someone else's decision", "403", &r, 403);
    // advisory: a reminder, never approved
    t.row("approving an advisory item", "409", &alice.decide(adv, "approve", true, ""), 409);
    let r = alice.decide(adv, "reminder", false, "please wear masks");
    t.row("reminder on an advisory item", "200, reminder", &r, 200);
    assert_eq!(r.json()["status"], "reminder");
    // an item that fails verification cannot be approved
    let snap = rs.item_dir(enf[2]).join("snapshot.jpg");
    let mut b = std::fs::read(&snap).unwrap();
    let n = b.len() / 2;
    b[n] ^= 1;
    std::fs::write(&snap, b).unwrap();
    let r = alice.get(&format!("/api/evidence/{}", enf[2]));
    assert_eq!(r.json()["verification"]["ok"], false, "{}", r.text());
    t.row("approving an item that fails verification", "409", &alice.decide(enf[2], "approve", true, ""), 409);
    // the package of the approved item, checked offline
    let r = carol.get(&format!("/api/evidence/{}/package", enf[0]));
    t.row("auditor exports the approved item's package", "200, tar", &r, 200);
    let pkg = rs.site.path("package.tar");
    std::fs::write(&pkg, &r.body).unwrap();
    assert_eq!(sha256(&r.body), r.header("x-sha256").unwrap());
    let o = vigil()
        .args(["verify", "--package", pkg.to_str().unwrap(), "--public-key"])
        .arg(rs.site.path("keys/signing.pub"))
        .arg("--review-key")
        .arg(rs.site.path("keys/review.pub"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success() && out.contains("approved by two officers"), "{out}");
    t.row("package of an item not approved", "409", &carol.get(&format!("/api/evidence/{}/package", enf[1])), 409);
    // queue thumbnails (the annotated snapshot, 160 px wide): the queue page that shows them logs
    // them in its own entry; one fetched without that page is a file_read of its own
    let q = carol.get("/queue");
    assert_eq!(q.status, 200);
    assert!(q.text().contains(&format!("/evidence/{}/thumb.jpg", enf[0])), "a thumbnail per row");
    let th = carol.get(&format!("/evidence/{}/thumb.jpg", enf[0]));
    t.row("a queue thumbnail", "200, JPEG 160 px wide", &th, 200);
    assert_eq!(th.header("content-type"), Some("image/jpeg"));
    assert_eq!(image::load_from_memory(&th.body).unwrap().width(), 160);
    let bob_thumb = bob.get(&format!("/evidence/{}/thumb.jpg", enf[1]));
    assert_eq!(bob_thumb.status, 200);
    t.row("a thumbnail without a session", "401", &anon.get(&format!("/evidence/{}/thumb.jpg", enf[0])), 401);
    let olga_thumb = Client::login(svc.port, "olga").get(&format!("/evidence/{}/thumb.jpg", enf[0]));
    t.row("an ops user's thumbnail (ops sees no evidence)", "403", &olga_thumb, 403);
    // the access log: auditors only; it holds the failed login, the decisions, the export
    t.row("reviewer reads the access log", "403", &alice.get("/api/audit"), 403);
    let r = carol.get("/api/audit");
    t.row("auditor reads the access log", "200", &r, 200);
    let log = r.json();
    let entries = log["entries"].as_array().unwrap();
    assert!(log["problems"].as_array().unwrap().is_empty(), "{log}");
    let has = |action: &str, outcome: &str| entries.iter().any(|e| e["action"] == action && e["outcome"] == outcome);
    assert!(
        has("login", "denied")
            && has("login", "ok")
            && has("decision", "ok")
            && has("decision", "denied")
            && has("package_exported", "ok")
    );
    let thumbs = |user: &str, action: &str| {
        entries
            .iter()
            .filter(|e| {
                e["user"] == user && e["action"] == action && e["detail"].as_str().unwrap_or("").contains("thumbnail")
            })
            .map(|e| format!("{} {}", e["evidence_id"], e["detail"]))
            .collect::<Vec<_>>()
    };
    let carol_queue = thumbs("carol", "queue_viewed");
    assert!(
        carol_queue.iter().any(|d| d.contains(enf[0].as_str())),
        "carol's queue entry names the thumbnails: {carol_queue:?}"
    );
    assert!(
        thumbs("carol", "file_read").is_empty(),
        "no entry per thumbnail the queue logged: {:?}",
        thumbs("carol", "file_read")
    );
    let bob_reads = thumbs("bob", "file_read");
    assert!(bob_reads.iter().any(|d| d.contains(enf[1].as_str())), "bob's thumbnail without the queue: {bob_reads:?}");
    let exp = entries.iter().find(|e| e["action"] == "package_exported" && e["outcome"] == "ok").unwrap();
    assert!(
        exp["detail"].as_str().unwrap().contains(r.header("x-sha256").unwrap_or(""))
            || exp["detail"].as_str().unwrap().starts_with("sha256 ")
    );
    // logout ends the session
    let r = bob.request(
        "POST",
        "/api/logout",
        &[("x-csrf-token", bob.csrf.as_deref().unwrap()), ("content-type", "application/json")],
        b"",
    );
    t.row("logout", "200", &r, 200);
    t.row("the old session after logout", "401", &bob.get("/api/evidence"), 401);
    // accounts: a new password and a new role, by command, end the open sessions; the old
    // password no longer works, the new one does, with the new role
    let login_with = |pw: &str| {
        anon.request(
            "POST",
            "/api/login",
            &[("content-type", "application/json")],
            serde_json::json!({"user": "alice", "password": pw}).to_string().as_bytes(),
        )
    };
    let user_cmd = |args: &[&str], stdin: &str| {
        let mut c = vigil()
            .args(["review", "user"])
            .args(args)
            .args(["--pipeline", rs.site.pipeline.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut c.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(alice.get("/api/evidence").status, 200);
    let out = user_cmd(&["passwd", "alice", "--password-stdin"], "alice-new-pass-7\n");
    assert!(out.contains("sessions are ended"), "{out}");
    t.row("alice's session after `review user passwd`", "401", &alice.get("/api/evidence"), 401);
    t.row("alice's old password", "401", &login_with(password("alice")), 401);
    t.row("alice's new password", "200", &login_with("alice-new-pass-7"), 200);
    let out = user_cmd(&["role", "alice", "--role", "auditor"], "");
    assert!(out.contains("alice is now auditor"), "{out}");
    let r = login_with("alice-new-pass-7");
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().split_once('=').unwrap().1.to_string();
    let auditor_alice =
        Client { port: svc.port, cookie: Some(cookie), csrf: r.json()["csrf"].as_str().map(str::to_string) };
    t.row("alice as auditor reads the access log (a reviewer gets 403)", "200", &auditor_alice.get("/api/audit"), 200);
    t.row("alice as auditor decides", "403", &auditor_alice.decide(enf[1], "approve", true, ""), 403);
    // login attempts are limited
    let mut last = 0;
    for _ in 0..6 {
        last = anon
            .request(
                "POST",
                "/api/login",
                &[("content-type", "application/json")],
                br#"{"user":"dave","password":"wrong-wrong"}"#,
            )
            .status;
    }
    assert_eq!(last, 429, "the sixth wrong password in 15 minutes");
    let r = anon.request(
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        format!("{{\"user\":\"dave\",\"password\":\"{}\"}}", password("dave")).as_bytes(),
    );
    t.row("the right password after 5 failures", "429 until the window passes", &r, 429);
    // vigil verify checks review records and reports each item's status
    let o = vigil().args(["verify", "--pipeline", rs.site.pipeline.to_str().unwrap(), "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let st = |id: &str| {
        v["reviews"].as_array().unwrap().iter().find(|r| r["evidence_id"] == id).map(|r| r["status"].clone())
    };
    assert_eq!(st(enf[0]), Some("approved".into()));
    assert_eq!(st(enf[1]), Some("one_approval".into()));
    assert_eq!(st(adv), Some("reminder".into()));
    assert!(v["access_log_entries"].as_u64().unwrap() > 20);
    // a password never appears in the service's log
    let log = svc.log_text();
    for (_, _, _, pw) in PASSWORDS {
        assert!(!log.contains(pw), "a password in the log");
    }
    t.print();
}

#[test]
fn two_instances_on_one_store_deciding_at_once_give_one_approval_and_two_records() {
    let rs = ReviewSite::new(1, "");
    let id = rs.items().into_iter().find(|i| i.1 == "cam1").unwrap().0;
    let (a, b) = (Service::start(&rs.site, "review-a"), Service::start(&rs.site, "review-b"));
    let (alice, bob) = (Client::login(a.port, "alice"), Client::login(b.port, "bob"));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let go = |c: Client, id: String, barrier: std::sync::Arc<std::sync::Barrier>| {
        std::thread::spawn(move || {
            barrier.wait();
            c.decide(&id, "approve", true, "")
        })
    };
    let ta = go(alice, id.clone(), barrier.clone());
    let tb = go(bob, id.clone(), barrier);
    let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
    assert_eq!((ra.status, rb.status), (200, 200), "{} / {}", ra.text(), rb.text());
    let statuses = [ra.json()["status"].clone(), rb.json()["status"].clone()];
    assert_eq!(
        statuses.iter().filter(|s| **s == "approved").count(),
        1,
        "exactly one decision made it approved: {statuses:?}"
    );
    let ns: std::collections::BTreeSet<u64> =
        [ra.json()["record"]["n"].as_u64().unwrap(), rb.json()["record"]["n"].as_u64().unwrap()].into();
    assert_eq!(ns, [1, 2].into(), "two records, at positions 1 and 2");
    let dir = rs.item_dir(&id).join("reviews");
    let mut files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, vec!["0001.json", "0001.sig", "0002.json", "0002.sig"]);
    for s in [&a, &b] {
        let c = Client::login(s.port, "carol");
        assert_eq!(
            c.get(&format!("/api/evidence/{id}")).json()["review"]["status"],
            "approved",
            "both instances see it"
        );
    }
    println!("| two approvals at once on two instances | 200 + 200; statuses {statuses:?}; records {files:?} |");
}

#[test]
fn on_s3_with_nats_each_decision_is_published_exactly_once_across_a_broker_outage() {
    let mut nats = Nats::start();
    let moto = Moto::start();
    moto.create_bucket("evidence", false);
    let rs = ReviewSite::with(
        2,
        &format!("[publish]\nnats_url = \"{}\"\n[store.options]\n{}", nats.url, moto.store_options()),
        |s| s.replace("url = \"store\"", "url = \"s3://evidence/vigil\""),
    );
    let items = rs.items();
    let id = items.iter().find(|i| i.1 == "cam1").unwrap().0.clone();
    let svc = Service::start(&rs.site, "review-s3");
    let alice = Client::login(svc.port, "alice");
    let r = alice.get(&format!("/api/evidence/{id}"));
    assert_eq!(r.json()["verification"]["ok"], true, "{}", r.text());
    assert_eq!(alice.decide(&id, "approve", true, "").status, 200);
    // the broker goes away; the second decision waits in the instance's outbox
    nats.stop();
    let bob = Client::login(svc.port, "bob");
    let r = bob.decide(&id, "approve", true, "");
    assert_eq!(r.json()["status"], "approved");
    std::thread::sleep(Duration::from_secs(2));
    nats.restart();
    let t = std::time::Instant::now();
    let reviews = loop {
        let m: Vec<_> = nats.messages("VIGIL").into_iter().filter(|m| m.0.starts_with("vigil.review.")).collect();
        if m.len() >= 2 || t.elapsed() > Duration::from_secs(60) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ids: Vec<&str> = reviews.iter().map(|m| m.1.as_str()).collect();
    // ids name the decision and its record's hash (`review-<id>-<n>-<hash16>`)
    assert_eq!(ids.len(), 2, "each decision once: {ids:?}");
    for (i, n) in ids.iter().zip(1..) {
        assert!(
            i.starts_with(&format!("review-{id}-{n}-")) && i.len() == format!("review-{id}-{n}-").len() + 16,
            "in order: {ids:?}"
        );
    }
    assert!(reviews.iter().all(|m| m.0 == "vigil.review.test-site.cam1"));
    let ev = &reviews[1].2;
    assert_eq!(ev["record"]["status_after"], "approved");
    // the event verifies with the review key alone
    let pk = vigil::signing::PublicKey::load(&rs.site.path("keys/review.pub")).unwrap();
    let sig: vigil::signing::SignatureFile = serde_json::from_value(ev["signature"].clone()).unwrap();
    pk.verify(&vigil::util::jcs::canonical(&ev["record"]), &sig).unwrap();
    // a restart of the service resends nothing twice
    drop(svc);
    let svc = Service::start(&rs.site, "review-s3");
    std::thread::sleep(Duration::from_secs(3));
    let n = nats.messages("VIGIL").into_iter().filter(|m| m.0.starts_with("vigil.review.")).count();
    assert_eq!(n, 2);
    drop(svc);
    println!(
        "| decisions published on vigil.review.test-site.cam1 (one during a broker outage), the service restarted | {n} messages after the restart, ids {ids:?} |"
    );
}

#[test]
fn over_tls_the_session_cookie_is_secure_and_plain_http_gets_nothing() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let rs = ReviewSite::with(0, "tls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n", |site| {
        // no evidence yet: the workers' key exists all the same
        assert!(vigil().args(["keys", "init", "--dir"]).arg(site.path("keys")).status().unwrap().success());
        // a test CA and a certificate for 127.0.0.1 signed by it, made with openssl (apt)
        std::fs::create_dir_all(site.path("tls")).unwrap();
        let script = "set -e; ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'; \
            openssl req -x509 $ec -days 2 -subj /CN=vigil-test-ca -keyout ca.key -out ca.pem; \
            openssl req $ec -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr; \
            printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf; \
            openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem";
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(site.path("tls"))
            .output()
            .expect("openssl (apt package openssl)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    });
    let svc = Service::start(&rs.site, "tls");
    // a client that trusts exactly that certificate
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(rs.site.path("tls/ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    let body = serde_json::json!({"user": "alice", "password": password("alice")}).to_string();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let conn = rustls::ClientConnection::new(cfg, "127.0.0.1".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "POST /api/login HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let cookie = text.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect("a session cookie");
    for attr in ["vigil_session=", "HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    // plain HTTP to the TLS port: no page, no cookie
    let r = std::panic::catch_unwind(|| Client::new(svc.port).get("/api/evidence"));
    assert!(r.is_err() || r.as_ref().is_ok_and(|r| r.status != 200 && r.header("set-cookie").is_none()));
    assert!(!svc.log_text().contains(password("alice")), "no password in the log");
}
