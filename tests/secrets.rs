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
    // the RTSP server asks for a user and password (basic authentication); `vigil check`'s probes
    // and two cameras connect to its one mount within a second, so each gets a media of its own
    // (a shared one aborted the test binary once in gst-rtsp-server, see `serve_with`)
    let server = RtspServer::serve_with(
        vec![("/cam".into(), RtspServer::h264_file(&sample("astronaut-pan.mp4")))],
        0,
        Some(("camera-admin", RTSP_PW)),
        false,
    );
    let inline = server.url.replace("rtsp://", &format!("rtsp://camera-admin:{RTSP_PW}@"));
    let wrong = server.url.replace("rtsp://", "rtsp://camera-admin:Wrong-Pass-0000@");
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("rtsp.pw");
    std::fs::write(&pw_file, format!("{RTSP_PW}\n")).unwrap();
    // credentials in every place they can be given: the RTSP URL; username + password_file;
    // the NATS user with its password in an environment variable
    let cameras = [
        astronaut_camera(&inline, ""),
        camera_with_id(
            "cam2",
            &server.url,
            &format!("username = \"camera-admin\"\npassword_file = \"{}\"", pw_file.display()),
        ),
        camera_with_id("cam3", &wrong, ""),
    ]
    .concat();
    let site = Site::new(
        &format!(
            "[clip]\npre_roll_s = 2\npost_roll_s = 2\n[publish]\nnats_url = \"nats://127.0.0.1:{}\"\n[publish.auth]\nuser = \"vigil\"\npassword_env = \"VIGIL_TEST_NATS_PASSWORD\"\n",
            nats.port
        ),
        &cameras,
    );
    site.replace("[worker]\n", "[worker]\nhttp = \"127.0.0.1:0\"\n");
    // `vigil check` tries every connection and reports each, without a password
    let o = vigil().arg("check").arg(&site.pipeline).env("VIGIL_TEST_NATS_PASSWORD", NATS_PW).output().unwrap();
    let checked = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(3), "one camera's password is wrong: {checked}");
    assert!(
        checked.contains("connection NATS nats://127.0.0.1")
            && checked.contains("ok, connected (auth: user + password"),
        "{checked}"
    );
    assert!(
        checked.contains("camera cam1 source rtsp://camera-admin:***@") && checked.contains("ok, video H264"),
        "{checked}"
    );
    assert!(checked.contains("camera cam2 source rtsp://camera-admin:***@"), "{checked}");
    let cam3 = checked.lines().find(|l| l.contains("camera cam3")).unwrap_or_else(|| panic!("{checked}"));
    assert!(cam3.contains("FAILED") && cam3.to_lowercase().contains("unauthorized"), "{cam3}");
    let mut w = Worker::start_with_env(&site.pipeline, &[("VIGIL_TEST_NATS_PASSWORD", NATS_PW)]);
    // an evidence event acknowledged (cam3's health event is acknowledged first)
    let t = std::time::Instant::now();
    while !w.log_text().lines().any(|l| l.contains("JetStream acknowledged event") && l.contains("vigil.evidence.")) {
        assert!(t.elapsed() < Duration::from_secs(120), "no evidence acknowledged: {}", w.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    // the camera with the wrong password is down, the others run
    w.wait_log("camera down; reconnecting", Duration::from_secs(30));
    let log = w.log_text();
    let line = log.lines().find(|l| l.contains("serving /metrics and /health")).expect("http address logged");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let http: u16 = v["address"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let metrics = http_get(http, "/metrics");
    let health = http_get(http, "/health");
    assert!(metrics.contains("vigil_frames_decoded_total"), "{metrics}");
    // cam2 got in with username + password_file: its video was decoded
    let decoded = |cam: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("vigil_frames_decoded_total") && l.contains(&format!("camera=\"{cam}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    w.sigterm();
    // cam3 (wrong password) never delivered video: the run fails naming it, and nothing else
    assert_eq!(w.wait(Duration::from_secs(60)), 1, "{}", w.log_text());
    let log = w.log_text();
    assert!(log.contains("error: camera cam3 down for") && log.contains("Unauthorized"), "{log}");
    assert!(!log.contains("error: camera cam1") && !log.contains("error: camera cam2"), "{log}");
    assert!(decoded("cam1") > 0.0 && decoded("cam2") > 0.0, "{metrics}");
    assert_eq!(decoded("cam3"), 0.0, "{metrics}");
    let down = log
        .lines()
        .find(|l| l.contains("camera down; reconnecting") && l.contains("\"camera\":\"cam3\""))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(down.to_lowercase().contains("unauthorized"), "the refusal is named: {down}");
    // what was looked at: every log line, `vigil check`'s output, every file the worker wrote
    // (outbox, spool, store: manifests, events, chain), every message on the stream, both
    // endpoints
    let mut places: Vec<(String, String)> = vec![("log".into(), log.clone()), ("vigil check".into(), checked)];
    all_files(&site.path("data"), &mut places);
    all_files(&site.path("store"), &mut places);
    let msgs = nats.messages("VIGIL");
    assert!(msgs.iter().any(|m| m.0 == "vigil.evidence.test-site.cam1"), "the event arrived through the password");
    places.extend(msgs.iter().map(|m| (m.0.clone(), m.2.to_string())));
    places.push(("/metrics".into(), metrics));
    places.push(("/health".into(), health));
    for (what, text) in &places {
        for pw in [RTSP_PW, NATS_PW, "Wrong-Pass-0000"] {
            assert!(!text.contains(pw), "{what} contains a password");
        }
    }
    // the URLs are still recognisable, with the password replaced
    assert!(log.contains("camera-admin:***@"), "{log}");
    println!(
        "| RTSP password in the URL (cam1), RTSP username + password_file (cam2), a wrong RTSP password (cam3: down, \"Unauthorized\", the others run), NATS user + password_env | {} places checked ({} log lines, `vigil check`, {} files, {} stream messages, /metrics, /health) | 0 contain a password |",
        places.len(),
        log.lines().count(),
        places.len() - 4 - msgs.len(),
        msgs.len()
    );
}

/// Self-signed CA, a server certificate for 127.0.0.1 and a client certificate (openssl).
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=vigil test CA"],
    ]
    .concat());
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, pem, ext) =
            (format!("{who}.key"), format!("{who}.csr"), format!("{who}.pem"), format!("{who}.ext"));
        run(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN=vigil test {who}")]].concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

/// Runs a file camera through a worker whose `[publish.auth]` is `auth` against `nats`: the
/// event arrives on the stream; `vigil check` said the connection works. Returns the check line.
fn delivers_with(nats: &Nats, url: &str, auth: &str, env: &[(&str, &str)]) -> String {
    let site = Site::new(
        &format!("[clip]\npre_roll_s = 2\npost_roll_s = 2\n[publish]\nnats_url = \"{url}\"\n[publish.auth]\n{auth}\n"),
        &astronaut_camera(&sample("astronaut-pan.mp4").display().to_string(), "realtime = false"),
    );
    let mut c = vigil();
    c.arg("check").arg(&site.pipeline).envs(env.iter().copied());
    let o = c.output().unwrap();
    let checked = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{checked}");
    let line =
        checked.lines().find(|l| l.starts_with("connection NATS")).unwrap_or_else(|| panic!("{checked}")).to_string();
    assert!(line.contains(": ok, connected"), "{line}");
    let mut w = Worker::start_with_env(&site.pipeline, env);
    assert_eq!(w.wait(Duration::from_secs(180)), 0, "{}", w.log_text());
    let log = w.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("JetStream acknowledged event"), "{log}");
    let msgs = nats.messages("VIGIL");
    assert!(msgs.iter().any(|m| m.0 == "vigil.evidence.test-site.cam1"), "{msgs:?}");
    let acked = std::fs::read_to_string(site.path("data/outbox.acked")).unwrap_or_default();
    assert!(site.outbox().iter().all(|e| acked.contains(e["id"].as_str().unwrap())), "every event acknowledged");
    line
}

#[test]
fn a_token_from_the_environment_authenticates() {
    let token = "Tok3n-S3cret-5150";
    let nats = Nats::start_with(&["--auth", token]);
    let mut nats = nats;
    nats.url = format!("nats://{token}@127.0.0.1:{}", nats.port);
    let line = delivers_with(
        &nats,
        &format!("nats://127.0.0.1:{}", nats.port),
        "token_env = \"VIGIL_TEST_NATS_TOKEN\"",
        &[("VIGIL_TEST_NATS_TOKEN", token)],
    );
    assert!(line.contains("auth: token") && !line.contains(token), "{line}");
    println!("| token (`token_env`), nats-server --auth | `{line}` | events acknowledged |");
}

#[test]
fn an_nkey_seed_file_authenticates() {
    let user = nkeys::KeyPair::new_user();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nkey.conf");
    std::fs::write(&conf, format!("authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n", user.public_key())).unwrap();
    let seed = dir.path().join("vigil.nk");
    std::fs::write(&seed, format!("{}\n", user.seed().unwrap())).unwrap();
    let mut nats = Nats::start_with(&["-c", conf.to_str().unwrap()]);
    nats.auth = vigil::util::nats::NatsAuth { nkey_seed_file: Some(seed.clone()), ..Default::default() };
    let line = delivers_with(&nats, &nats.url.clone(), &format!("nkey_seed_file = \"{}\"", seed.display()), &[]);
    assert!(line.contains("auth: nkey"), "{line}");
    println!("| nkey seed file (`nkey_seed_file`), nats-server nkey user | `{line}` | events acknowledged |");
}

#[test]
fn tls_with_a_private_ca_and_a_client_certificate_connects_and_a_missing_ca_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let f = |n: &str| dir.path().join(n).display().to_string();
    let mut nats = Nats::start_with(&[
        "--tls",
        "--tlscert",
        &f("server.pem"),
        "--tlskey",
        &f("server.key"),
        "--tlscacert",
        &f("ca.pem"),
        "--tlsverify",
        "--user",
        "vigil",
        "--pass",
        NATS_PW,
    ]);
    let pw = dir.path().join("nats.pw");
    std::fs::write(&pw, format!("{NATS_PW}\n")).unwrap();
    nats.auth = vigil::util::nats::NatsAuth {
        user: Some("vigil".into()),
        password_file: Some(pw.clone()),
        tls_ca_file: Some(f("ca.pem").into()),
        tls_cert_file: Some(f("client.pem").into()),
        tls_key_file: Some(f("client.key").into()),
        ..Default::default()
    };
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let auth = format!(
        "user = \"vigil\"\npassword_file = \"{}\"\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        pw.display(),
        f("ca.pem"),
        f("client.pem"),
        f("client.key")
    );
    let line = delivers_with(&nats, &url, &auth, &[]);
    assert!(line.contains("TLS: yes") && line.contains("auth: user + password"), "{line}");
    // without the CA the server's certificate is not trusted: said plainly, events stay
    let site = Site::new(
        &format!(
            "[clip]\npre_roll_s = 2\npost_roll_s = 2\n[publish]\nnats_url = \"{url}\"\n[publish.auth]\nuser = \"vigil\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
        &astronaut_camera(&sample("astronaut-pan.mp4").display().to_string(), "realtime = false"),
    );
    let (code, checked) = check(&site.pipeline);
    assert_eq!(code, 3, "{checked}");
    let failed = checked.lines().find(|l| l.starts_with("connection NATS")).unwrap_or_else(|| panic!("{checked}"));
    assert!(failed.contains("FAILED") && failed.contains("TLS"), "{failed}");
    let before = nats.messages("VIGIL").len();
    let (code, log) =
        run_to_end(&["--log-format", "json", "run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("panicked") && !log.contains(NATS_PW), "{log}");
    let refused = log.lines().find(|l| l.contains("NATS connection failed")).unwrap_or_else(|| panic!("{log}"));
    assert!(refused.contains("TLS failed") && refused.contains("UnknownIssuer"), "{refused}");
    assert_eq!(site.outbox().len(), 1, "the event waits in the outbox");
    assert_eq!(nats.messages("VIGIL").len(), before, "nothing arrived without TLS trust");
    println!(
        "| TLS (`tls://`, private CA in `tls_ca_file`, client certificate, nats-server --tlsverify) + user + `password_file` | `{line}` | events acknowledged |"
    );
    println!(
        "| the same without `tls_ca_file` | `{failed}`; worker: {} | 1 event in the outbox, unacknowledged; exit 0 |",
        serde_json::from_str::<serde_json::Value>(refused).unwrap()["error"]
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
