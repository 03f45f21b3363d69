//! Review-service test helpers: a site with evidence made by the real worker, accounts, the
//! service as a real process on a free port, and a small HTTP client with a cookie.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::common::*;

pub const PASSWORDS: [(&str, &str, &str, &str); 5] = [
    ("alice", "reviewer", "JS-2026-0001", "alice-pass-1"),
    ("bob", "reviewer", "JS-2026-0002", "bob-pass-22"),
    ("dave", "reviewer", "JS-2026-0004", "dave-pass-4"),
    ("carol", "auditor", "", "carol-pass-3"),
    ("olga", "ops", "", "olga-pass-55"),
];

pub fn password(user: &str) -> &'static str {
    PASSWORDS.iter().find(|p| p.0 == user).unwrap().3
}

fn registered(id: &str, src: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nlocation = \"serving counter\"\nsource = \"{src}\"\nrealtime = false\n\
         location_category = \"kitchen\"\nlegal_review_date = \"2026-01-01\"\ntechnical_review_date = \"2026-01-02\"\n\
         installation_ref = \"INST-1\"\npublic_notice_date = \"2026-01-03\"\n[[cameras.rules]]\nkind = \"no_mask\"\n"
    )
}

fn unregistered(id: &str, src: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nlocation = \"back kitchen\"\nsource = \"{src}\"\nrealtime = false\n[[cameras.rules]]\nkind = \"no_mask\"\n"
    )
}

/// An account for every role (`vigil review user add`, passwords on stdin).
pub fn add_users(site: &Site) {
    for (u, role, officer, pw) in PASSWORDS {
        let mut c = vigil()
            .args([
                "review",
                "user",
                "add",
                u,
                "--pipeline",
                site.pipeline.to_str().unwrap(),
                "--role",
                role,
                "--officer-id",
                officer,
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(format!("{pw}\n").as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "user add {u}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// A site with evidence: `runs` runs of an enforcement camera (one item each) and one advisory
/// item; accounts for every role.
pub struct ReviewSite {
    pub site: Site,
}

impl ReviewSite {
    pub fn new(runs: usize, extra: &str) -> ReviewSite {
        ReviewSite::with(runs, extra, |_| {})
    }

    /// [`ReviewSite::new`], with `prepare` editing the site before the worker runs.
    pub fn with(runs: usize, extra: &str, prepare: impl FnOnce(&Site)) -> ReviewSite {
        let astro = sample("astronaut-pan.mp4").display().to_string();
        let cams = registered("cam1", &astro) + &unregistered("cam2", &sample("camera-pan.mp4").display().to_string());
        let site = Site::new(
            &format!(
                "[clip]\npre_roll_s = 1\npost_roll_s = 1\n[review]\nkey = \"keys/review.key\"\ngenerate_key_if_missing = true\n{extra}"
            ),
            &cams,
        );
        prepare(&site);
        for i in 0..runs {
            let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(180));
            assert_eq!(code, 0, "run {i}: {log}");
            if i == 0 {
                // the advisory camera once is enough
                site.replace(&unregistered("cam2", &sample("camera-pan.mp4").display().to_string()), "");
            }
        }
        add_users(&site);
        ReviewSite { site }
    }

    /// Evidence events in the outbox: (id, camera).
    pub fn items(&self) -> Vec<(String, String)> {
        self.site
            .outbox()
            .iter()
            .map(|e| {
                (
                    e["payload"]["evidence_id"].as_str().unwrap().to_string(),
                    e["payload"]["camera"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn item_dir(&self, id: &str) -> PathBuf {
        let e = self.site.outbox().into_iter().find(|e| e["payload"]["evidence_id"] == id).unwrap();
        let k = e["payload"]["manifest"]["key"].as_str().unwrap().trim_end_matches("/manifest.json").to_string();
        self.site.path("store").join(k)
    }
}

/// `vigil review serve` as a real process; its address read from its log.
pub struct Service {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Service {
    pub fn start(site: &Site, instance: &str) -> Service {
        let log = site.path(&format!("{instance}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = vigil()
            .args([
                "--log-format",
                "json",
                "review",
                "serve",
                "--pipeline",
                site.pipeline.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--instance-id",
                instance,
            ])
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        let t = Instant::now();
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.contains("review service listening")) {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                break v["address"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
            }
            assert!(t.elapsed() < Duration::from_secs(30), "review service did not start: {text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        Service { child, port, log }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP/1.1 response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A client with one session cookie and its CSRF token.
#[derive(Clone, Default)]
pub struct Client {
    pub port: u16,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client { port, ..Default::default() }
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        if let Some(c) = &self.cookie {
            req += &format!("cookie: vigil_session={c}\r\n");
        }
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        req += "\r\n";
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
        let head = String::from_utf8_lossy(&out[..split]).to_string();
        let mut lines = head.lines();
        let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = out[split + 4..].to_vec();
        if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
            body = unchunk(&body);
        }
        Resp { status, headers, body }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    /// POST JSON with the session's CSRF token.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Resp {
        let csrf = self.csrf.clone().unwrap_or_default();
        self.request(
            "POST",
            path,
            &[("content-type", "application/json"), ("x-csrf-token", &csrf)],
            body.to_string().as_bytes(),
        )
    }

    /// Logs in through the API; panics unless it works.
    pub fn login(port: u16, user: &str) -> Client {
        let mut c = Client::new(port);
        let r = c.request(
            "POST",
            "/api/login",
            &[("content-type", "application/json")],
            serde_json::json!({"user": user, "password": password(user)}).to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "login {user}: {}", r.text());
        let set = r.header("set-cookie").unwrap().to_string();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        c.cookie = Some(set.split(';').next().unwrap().split_once('=').unwrap().1.to_string());
        c.csrf = Some(r.json()["csrf"].as_str().unwrap().to_string());
        c
    }

    pub fn decide(&self, id: &str, decision: &str, all_checks: bool, reason: &str) -> Resp {
        let checks = serde_json::json!({"true": all_checks, "clear": all_checks, "complete": all_checks, "accurate": all_checks});
        self.post(
            &format!("/api/evidence/{id}/decision"),
            &serde_json::json!({"decision": decision, "checks": checks, "reason": reason}),
        )
    }
}

fn unchunk(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let Some(e) = b[i..].windows(2).position(|w| w == b"\r\n") else { break };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[i..i + e]).trim(), 16).unwrap_or(0);
        i += e + 2;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i..i + n]);
        i += n + 2;
    }
    out
}
