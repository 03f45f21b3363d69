//! A real browser for the web tests: Debian's Chromium driven through chromedriver (fantoccini),
//! and the waits and helpers the page tests share. Screenshots go to `target/screenshots/`.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use super::common::repo;
use super::support::password;

/// chromedriver on a port it picks itself (read from its output), stopped on drop.
pub struct Driver {
    child: std::process::Child,
    pub port: u16,
}

impl Driver {
    pub fn start() -> Driver {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} missing: the browser test needs Debian's chromium and chromium-driver (run .ci/install)"
            );
        }
        let mut child = Command::new("/usr/bin/chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(p) = l.split("started successfully on port ").nth(1) {
                    let _ = tx.send(p.trim_end_matches('.').parse::<u16>().unwrap_or(0));
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(30)).expect("chromedriver reported its port");
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn browser(d: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1400,1000", "--autoplay-policy=no-user-gesture-required",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    vigil::util::secret::install_crypto_provider();
    ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("connect to chromedriver")
}

/// Logs `user` in through the login form and waits for the page it lands on (the queue; the
/// cameras overview for the ops role).
pub async fn login(c: &Client, base: &str, user: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Css("#login input[name=user]")).await.unwrap().send_keys(user).await.unwrap();
    c.find(Locator::Css("#login input[name=password]")).await.unwrap().send_keys(password(user)).await.unwrap();
    c.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();
    wait(c, "#queue, #empty, #ops").await;
}

pub async fn logout(c: &Client) {
    c.find(Locator::Css("#logout")).await.unwrap().click().await.unwrap();
    wait(c, "#login").await;
}

/// Waits until an element matching `css` is on the page.
pub async fn wait(c: &Client, css: &str) {
    let t = Instant::now();
    loop {
        if c.find(Locator::Css(css)).await.is_ok() {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no {css} on {:?}: {}",
            c.current_url().await.ok(),
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the page's address contains `needle` (a navigation happened).
pub async fn wait_url(c: &Client, needle: &str) {
    let t = Instant::now();
    while !c.current_url().await.map(|u| u.to_string().contains(needle)).unwrap_or(false) {
        assert!(t.elapsed() < Duration::from_secs(30), "no navigation to {needle}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn js(c: &Client, script: &str) -> serde_json::Value {
    c.execute(script, vec![]).await.unwrap()
}

pub async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

pub fn shot(name: &str, png: &[u8]) {
    let dir = repo().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// The page's width and the window's (`scrollWidth`, `clientWidth` of the document), in CSS px.
pub async fn page_width(c: &Client) -> (f64, f64) {
    (
        js(c, "return document.documentElement.scrollWidth").await.as_f64().unwrap(),
        js(c, "return document.documentElement.clientWidth").await.as_f64().unwrap(),
    )
}

/// Words that may stand in a Chinese page outside data fields: the product's name, the language
/// switch, protocol and format names, key names the key hints teach, model names, and the
/// configuration values an operator types (`median`, `minor`, ...).
pub const NOT_ENGLISH: &[&str] = &[
    "vigil",
    "English",
    "RTSP",
    "NATS",
    "JPEG",
    "MP4",
    "SHA",
    "UTC",
    "KV",
    "rev",
    "fps",
    "Enter",
    "Esc",
    "Backspace",
    "Delete",
    "CenterFace",
    "NanoDet",
    "median",
    "minor",
    "major",
];

/// The English words the page shows outside data fields: text nodes not inside `code`, `pre`,
/// `.d` (a data field: ids, names, locations, free text someone wrote), `script`, `style`,
/// `svg` or the language switch, nor an option that shows its own value. Each as
/// `word in <tag#id.class>: text`.
pub async fn english_words(c: &Client) -> Vec<String> {
    let allow = serde_json::to_string(NOT_ENGLISH).unwrap();
    let script = format!(
        r#"const allow = new Set({allow});
        const skip = el => el.closest('script,style,svg,code,pre,.d,#lang,video,textarea') || (el.tagName === 'OPTION' && el.value === el.textContent);
        const out = [];
        const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        let n;
        while ((n = w.nextNode())) {{
          const el = n.parentElement;
          if (!el || skip(el)) continue;
          for (const tok of n.textContent.split(/[^A-Za-z0-9_]+/)) {{
            if (tok.length >= 3 && /^[A-Za-z]+$/.test(tok) && !allow.has(tok)) {{
              out.push(tok + ' in <' + el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : '') + '>: ' + n.textContent.trim().slice(0, 100));
            }}
          }}
        }}
        return out;"#
    );
    js(c, &script).await.as_array().unwrap().iter().map(|v| v.as_str().unwrap_or("").to_string()).collect()
}

/// Fails when the page (in Chinese) shows English outside data fields.
pub async fn assert_chinese(c: &Client, what: &str) {
    assert_eq!(js(c, "return document.documentElement.lang").await, "zh-CN", "{what} is not the Chinese page");
    let words = english_words(c).await;
    assert!(words.is_empty(), "{what} shows English outside data fields:\n{}", words.join("\n"));
}
