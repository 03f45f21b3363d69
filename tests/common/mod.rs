//! Test helpers: real servers on free loopback ports (nats-server, gst-rtsp-server, moto), the
//! worker as a real process, and a GStreamer decoder for checking stored clips.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sample(name: &str) -> PathBuf {
    repo().join("sample-streams").join(name)
}

/// `../shared/data/<rel>`; panics with a clear message when the shared data set is missing.
pub fn shared_data(rel: &str) -> PathBuf {
    let p = repo().join("../shared/data").join(rel);
    assert!(
        p.exists(),
        "this test needs the shared evaluation data at {} (../shared/data beside the checkout; CI always has it)",
        p.display()
    );
    p
}

/// A scikit-image sample photo (public domain), from the installed scikit-image package.
pub fn skimage_photo(name: &str) -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import skimage, os; print(os.path.join(os.path.dirname(skimage.__file__), 'data'))"])
        .output()
        .expect("python3 runs");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let p = PathBuf::from(dir).join(name);
    assert!(p.exists(), "scikit-image sample photo {name} not found ({}): run .ci/install", p.display());
    p
}

fn dep_bin(name: &str) -> PathBuf {
    let p = repo().join(".deps/bin").join(name);
    assert!(p.exists(), "{} missing: run .ci/install", p.display());
    p
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_port(port: u16, timeout: Duration) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < timeout, "nothing listens on 127.0.0.1:{port} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nats-server with JetStream on a free loopback port, stopped on drop.
pub struct Nats {
    child: Child,
    pub port: u16,
    pub url: String,
    /// How the tests' own connection authenticates (TLS files, nkey, …), beside `url`.
    pub auth: vigil::util::nats::NatsAuth,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// Starts on a port the server picks itself (no race with parallel tests), read from its
    /// ports file.
    pub fn start() -> Nats {
        Nats::start_with(&[])
    }

    /// A server that asks for this user and password; `url` carries them.
    pub fn start_with_password(user: &str, password: &str) -> Nats {
        let mut n = Nats::start_with(&["--user", user, "--pass", password]);
        n.url = format!("nats://{user}:{password}@127.0.0.1:{}", n.port);
        n
    }

    pub fn start_with(extra: &[&str]) -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(dep_bin("nats-server"))
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir"])
            .arg(dir.path())
            .args(extra)
            .arg("-sd")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let t = Instant::now();
        let port = loop {
            let found = std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(".ports"));
            if let Some(f) = found
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&std::fs::read(f.path()).unwrap_or_default())
                && let Some(u) = v["nats"][0].as_str()
            {
                break u.rsplit(':').next().unwrap().parse::<u16>().unwrap();
            }
            assert!(t.elapsed() < Duration::from_secs(10), "nats-server did not report its port");
            std::thread::sleep(Duration::from_millis(20));
        };
        wait_port(port, Duration::from_secs(10));
        Nats { child, port, url: format!("nats://127.0.0.1:{port}"), auth: Default::default(), _dir: dir }
    }

    fn spawn(port: u16, dir: &Path) -> Child {
        let child = Command::new(dep_bin("nats-server"))
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        wait_port(port, Duration::from_secs(10));
        child
    }

    /// Stops the server (SIGKILL: an outage, not a goodbye).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same JetStream storage.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.port, self._dir.path());
    }

    /// Every message on the stream: (subject, Nats-Msg-Id, payload).
    pub fn messages(&self, stream: &str) -> Vec<(String, String, serde_json::Value)> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let c = vigil::util::nats::Endpoint::new(&self.url, self.auth.clone()).connect().await.unwrap();
            let js = async_nats::jetstream::new(c);
            let Ok(mut st) = js.get_stream(stream).await else { return Vec::new() };
            let info = st.info().await.unwrap().state.clone();
            let mut out = Vec::new();
            for seq in info.first_sequence..=info.last_sequence {
                if let Ok(m) = st.get_raw_message(seq).await {
                    let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string()).unwrap_or_default();
                    let payload: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                    assert_published_schema(m.subject.as_str(), &payload);
                    out.push((m.subject.to_string(), id, payload));
                }
            }
            out
        })
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto (S3-compatible server) on a free loopback port, stopped on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts on a port the server picks itself (no race with parallel tests).
    pub fn start() -> Moto {
        let mut child = Command::new(dep_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moto_server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = l.split("Running on http://127.0.0.1:").nth(1) {
                    let _ = tx.send(rest.trim().parse::<u16>().unwrap_or(0));
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(30)).expect("moto reported its port");
        wait_port(port, Duration::from_secs(30));
        Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    /// Starts on `port` (a restart where the store was): retried while the port is still taken.
    pub fn start_on(port: u16) -> Moto {
        let t = Instant::now();
        loop {
            let mut child = Command::new(dep_bin("moto_server"))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto_server");
            // it either serves the port or exits because the port is taken
            let up = Instant::now();
            while up.elapsed() < Duration::from_secs(30) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(t.elapsed() < Duration::from_secs(60), "moto could not take port {port} again");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Creates a bucket (moto keeps its state in memory: again after a restart).
    pub fn create_bucket(&self, bucket: &str, object_lock: bool) {
        let code = format!(
            "import boto3; boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', \
             aws_secret_access_key='test').create_bucket(Bucket='{bucket}', ObjectLockEnabledForBucket={})",
            self.endpoint,
            if object_lock { "True" } else { "False" }
        );
        // a freshly started moto may accept connections a moment before it serves requests
        let t = Instant::now();
        while !Command::new("python3").args(["-c", &code]).stderr(Stdio::null()).status().unwrap().success() {
            assert!(t.elapsed() < Duration::from_secs(20), "create bucket {bucket} on {}", self.endpoint);
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `[store.options]` lines for this server.
    pub fn store_options(&self) -> String {
        format!(
            "aws_endpoint = \"{}\"\naws_allow_http = \"true\"\naws_region = \"us-east-1\"\n\
             aws_access_key_id = \"test\"\naws_secret_access_key = \"test\"\n",
            self.endpoint
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real RTSP server (gst-rtsp-server) serving a file as `/cam`, on a free loopback port.
pub struct RtspServer {
    pub url: String,
    /// `rtsp://127.0.0.1:<port>` (mount paths go after it).
    pub base: String,
    main_loop: gst::glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Signalled by the server thread when it has dropped its clients and is about to end.
    done: std::sync::mpsc::Receiver<()>,
}

impl RtspServer {
    pub fn serve_file(path: &Path) -> RtspServer {
        RtspServer::serve_file_on(path, 0)
    }

    /// Serves on `port` (0: any free port).
    pub fn serve_file_on(path: &Path, port: u16) -> RtspServer {
        RtspServer::serve_launch(RtspServer::h264_file(path), port)
    }

    /// The launch line serving an H.264 MP4 file.
    pub fn h264_file(path: &Path) -> String {
        format!(
            "( filesrc location={} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )",
            path.display()
        )
    }

    /// Serves an H.265 MP4 file (as H.265 over RTP).
    pub fn serve_h265_file(path: &Path) -> RtspServer {
        RtspServer::serve_launch(
            format!(
                "( filesrc location={} ! qtdemux ! h265parse ! rtph265pay name=pay0 pt=96 config-interval=-1 )",
                path.display()
            ),
            0,
        )
    }

    /// Serves a gst-rtsp-server launch line at `/cam` on `port` (0: any free port).
    pub fn serve_launch(launch: String, port: u16) -> RtspServer {
        RtspServer::serve_with(vec![("/cam".into(), launch)], port, None, true)
    }

    /// Serves launch lines at their mount paths (`url` is the first one's), asking for basic
    /// authentication with `auth` = (user, password) when given. `shared`: clients of a mount
    /// share one media pipeline; otherwise each client gets its own (gst-rtsp-server 1.22 can
    /// abort the process, `g_assert` in `gst_rtsp_media_get_rates`, when clients connect to and
    /// leave one shared media at the same moment).
    pub fn serve_with(
        mounts: Vec<(String, String)>,
        port: u16,
        auth: Option<(&str, &str)>,
        shared: bool,
    ) -> RtspServer {
        gst::init().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        let first = mounts[0].0.clone();
        let thread = std::thread::spawn(move || {
            let ctx = gst::glib::MainContext::new();
            ctx.with_thread_default(|| {
                let main_loop = gst::glib::MainLoop::new(Some(&ctx), false);
                let server = rtsp::RTSPServer::new();
                server.set_address("127.0.0.1");
                server.set_service(&port.to_string());
                if let Some((user, pass)) = &auth {
                    let a = rtsp::RTSPAuth::new();
                    let token =
                        rtsp::RTSPToken::builder().field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "camera-user").build();
                    a.add_basic(rtsp::RTSPAuth::make_basic(user, pass).as_str(), &token);
                    server.set_auth(Some(&a));
                }
                for (path, launch) in &mounts {
                    let factory = rtsp::RTSPMediaFactory::new();
                    factory.set_launch(launch);
                    factory.set_shared(shared);
                    if auth.is_some() {
                        factory.add_role_from_structure(
                            &gst::Structure::builder("camera-user")
                                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                                .build(),
                        );
                    }
                    server.mount_points().unwrap().add_factory(path, factory);
                }
                // a port freed a moment ago (a restart on the same port) may still be taken: retry
                let t = Instant::now();
                let _id = loop {
                    match server.attach(Some(&ctx)) {
                        Ok(id) => break id, // removed with the context
                        Err(e) => {
                            assert!(t.elapsed() < Duration::from_secs(20), "attach rtsp server on port {port}: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                };
                tx.send((server.bound_port(), main_loop.clone())).unwrap();
                main_loop.run();
                // a stopped server drops its clients too (as a crashed or rebooted one would)
                server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
                let _ = done_tx.send(());
            })
            .unwrap();
        });
        let (port, main_loop) = rx.recv_timeout(Duration::from_secs(30)).expect("rtsp server up");
        RtspServer {
            url: format!("rtsp://127.0.0.1:{port}{first}"),
            base: format!("rtsp://127.0.0.1:{port}"),
            main_loop,
            thread: Some(thread),
            done,
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.main_loop.quit();
        // gst-rtsp-server can deadlock dropping a client whose peer is gone (seen once in a full
        // run: the thread parked in a futex for good, the suite hung); a test must not hang on it
        match self.done.recv_timeout(Duration::from_secs(10)) {
            Ok(()) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(_) => eprintln!("warning: the test RTSP server did not stop within 10 s; its thread is left behind"),
        }
    }
}

/// The `vigil` binary running a pipeline; its stderr goes to `log`.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
}

pub fn vigil() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    // VIGIL_TEST_LOG (e.g. `debug,ort=warn`) makes the workers of a test run log more
    c.env("VIGIL_LOG", std::env::var("VIGIL_TEST_LOG").unwrap_or_else(|_| "info,ort=warn".into())).current_dir(repo());
    c
}

impl Worker {
    pub fn start(pipeline: &Path) -> Worker {
        Worker::start_with_env(pipeline, &[])
    }

    /// Starts it with these environment variables set.
    pub fn start_with_env(pipeline: &Path, env: &[(&str, &str)]) -> Worker {
        let log = pipeline.with_extension("log");
        let f = std::fs::File::create(&log).unwrap();
        let child = vigil()
            .envs(env.iter().copied())
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg(pipeline)
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("start vigil");
        Worker { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for exit; panics (with the log) after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            if t.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("vigil did not exit within {timeout:?}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn sigterm(&self) {
        unsafe_kill(self.child.id(), "TERM");
    }

    /// Where the log ends now: wait for what comes after it with [`Worker::wait_log_from`].
    pub fn mark(&self) -> usize {
        self.log_text().len()
    }

    /// The log from a mark on.
    pub fn log_from(&self, mark: usize) -> String {
        self.log_text().get(mark..).unwrap_or_default().to_string()
    }

    /// Waits until the log contains `needle` after `mark`; returns the log from the mark.
    pub fn wait_log_from(&mut self, mark: usize, needle: &str, timeout: Duration) -> String {
        let t = Instant::now();
        loop {
            let text = self.log_from(mark);
            if text.contains(needle) {
                return text;
            }
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!("vigil exited ({s}) before logging {needle:?}; log:\n{}", self.log_text());
            }
            assert!(t.elapsed() < timeout, "no {needle:?} in the log after {timeout:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log contains `needle` (anywhere: for things that happen once).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let t = Instant::now();
        while !self.log_text().contains(needle) {
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!("vigil exited ({s}) before logging {needle:?}; log:\n{}", self.log_text());
            }
            assert!(t.elapsed() < timeout, "no {needle:?} in the log after {timeout:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
}

/// Runs `vigil` to completion and returns (exit code, stderr).
pub fn run_to_end(args: &[&str], timeout: Duration) -> (i32, String) {
    let (code, _, err) = run_capture(args, timeout);
    (code, err)
}

/// Runs `vigil` to completion within `timeout` and returns (exit code, stdout, stderr).
/// `vigil check PIPELINE`: (exit code, stdout + stderr).
pub fn check(pipeline: &Path) -> (i32, String) {
    let (code, out, err) = run_capture(&["check", pipeline.to_str().unwrap()], Duration::from_secs(60));
    (code, out + &err)
}

/// `vigil verify --pipeline PIPELINE EXTRA…`: (exit code, stdout + stderr).
pub fn verify(pipeline: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["verify", "--pipeline", pipeline.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, out, err) = run_capture(&args, Duration::from_secs(120));
    (code, out + &err)
}

pub fn run_capture(args: &[&str], timeout: Duration) -> (i32, String, String) {
    let mut child = vigil().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let read = |r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            for l in BufReader::new(r).lines().map_while(Result::ok) {
                s.push_str(&l);
                s.push('\n');
            }
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let t = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code().unwrap_or(-1);
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            panic!("vigil {args:?} did not finish within {timeout:?}: {}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, out.join().unwrap(), err.join().unwrap())
}

/// A pipeline file in a fresh temp dir; `cameras` is raw TOML for the `[[cameras]]` tables.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub pipeline: PathBuf,
}

impl Site {
    pub fn new(extra: &str, cameras: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[site]\nid = \"test-site\"\n[worker]\nid = \"test-worker\"\ndata_dir = \"data\"\n\
             [models]\ndir = \"{models}\"\n[store]\nurl = \"store\"\n\
             [signing]\nkey = \"keys/signing.key\"\ngenerate_if_missing = true\n{extra}\n{cameras}",
            models = repo().join("models").display(),
        );
        let pipeline = dir.path().join("site.toml");
        std::fs::write(&pipeline, text).unwrap();
        Site { dir, pipeline }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Rewrites the pipeline file atomically (write beside, rename over), as an editor should,
    /// so a watching worker never reads half a file.
    pub fn edit(&self, f: impl FnOnce(String) -> String) {
        let text = f(std::fs::read_to_string(&self.pipeline).unwrap());
        let tmp = self.pipeline.with_extension("toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.pipeline).unwrap();
    }

    /// Replaces text in the pipeline file (atomically).
    pub fn replace(&self, from: &str, to: &str) {
        self.edit(|t| {
            assert!(t.contains(from), "{from:?} not in the pipeline file");
            t.replace(from, to)
        });
    }

    /// Evidence events in the outbox file (chain checkpoints left out).
    pub fn outbox(&self) -> Vec<serde_json::Value> {
        self.outbox_all()
            .into_iter()
            .filter(|e| e["subject"].as_str().unwrap().starts_with("vigil.evidence."))
            .collect()
    }

    /// Everything in the outbox file (each event checked against its published schema).
    pub fn outbox_all(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("data/outbox.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let e: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_published_schema(e["subject"].as_str().unwrap_or_default(), &e["payload"]);
                e
            })
            .collect()
    }

    pub fn stored(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.path("store").join(key)).unwrap_or_else(|e| panic!("stored object {key}: {e}"))
    }
}

/// A decoded RGB frame of a stored clip.
pub struct Decoded {
    pub pts: Duration,
    pub duration: Duration,
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Decoded {
    pub fn px(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y * self.width + x) as usize * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// Decodes an MP4 (H.264) file into RGB frames with their timestamps.
pub fn decode_mp4(path: &Path) -> Vec<Decoded> {
    gst::init().unwrap();
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=RGB,pixel-aspect-ratio=1/1 ! appsink name=sink sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = p.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let b = s.buffer().unwrap();
        let info = gstreamer_video::VideoInfo::from_caps(s.caps().unwrap()).unwrap();
        let map = b.map_readable().unwrap();
        let (w, h, stride) = (info.width(), info.height(), info.stride()[0] as usize);
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h as usize {
            data.extend_from_slice(&map[y * stride..y * stride + w as usize * 3]);
        }
        out.push(Decoded {
            pts: Duration::from_nanos(b.pts().unwrap().nseconds()),
            duration: Duration::from_nanos(b.duration().map(|d| d.nseconds()).unwrap_or(0)),
            width: w,
            height: h,
            data,
        });
        if sink.is_eos() {
            break;
        }
    }
    let bus_err = p.bus().unwrap().pop_filtered(&[gst::MessageType::Error]);
    p.set_state(gst::State::Null).unwrap();
    assert!(bus_err.is_none(), "decoding {} failed: {bus_err:?}", path.display());
    out
}

pub fn decode_jpeg(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes).unwrap().to_rgb8()
}

pub fn sha256(b: &[u8]) -> String {
    vigil::util::sha256_hex(b)
}

/// Checks that the region x ∈ [x0, x1) (fractions of the width) is black and the region left of
/// `x_clear` is not, in any RGB image given as a pixel accessor.
pub fn assert_masked(what: &str, w: u32, h: u32, px: impl Fn(u32, u32) -> [u8; 3], x0: f64, x1: f64, x_clear: f64) {
    let (a, b) = ((x0 * w as f64).ceil() as u32, (x1 * w as f64).floor() as u32);
    let mut worst = 0u8;
    for y in 0..h {
        for x in a..b {
            worst = worst.max(*px(x, y).iter().max().unwrap());
        }
    }
    assert!(worst <= 24, "{what}: masked region has a pixel of brightness {worst}");
    let mut sum = 0u64;
    let mut n = 0u64;
    for y in 0..h {
        for x in 0..(x_clear * w as f64) as u32 {
            sum += px(x, y).iter().map(|&v| v as u64).sum::<u64>();
            n += 3;
        }
    }
    let mean = sum as f64 / n as f64;
    assert!(mean > 40.0, "{what}: the unmasked part is dark too (mean {mean:.1})");
}

/// Encodes RGB frames (all of one size) into an MP4 at `fps` with GStreamer: `encoder` is the
/// element and its options, e.g. `"x264enc speed-preset=veryfast key-int-max=25 ! h264parse"` or
/// `"x265enc key-int-max=25 ! h265parse"`; `mux` e.g. `"mp4mux"`, `"matroskamux"`, `"mpegtsmux"`.
pub fn encode_video(frames: &[vigil::frame::RgbFrame], fps: u32, encoder: &str, mux: &str, path: &Path) {
    gst::init().unwrap();
    let (w, h) = (frames[0].width, frames[0].height);
    let desc = format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={w},height={h},framerate={fps}/1 \
         ! videoconvert ! video/x-raw,format=I420 ! {encoder} ! {mux} ! filesink location={}",
        path.display()
    );
    let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let src = p.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let mut b = gst::Buffer::from_slice(f.data.clone());
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i as u64 * 1_000_000_000 / fps as u64));
            b.set_duration(gst::ClockTime::from_nseconds(1_000_000_000 / fps as u64));
        }
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = p.bus().unwrap();
    let msg =
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(120), &[gst::MessageType::Eos, gst::MessageType::Error]);
    p.set_state(gst::State::Null).unwrap();
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        other => panic!("encoding {} failed: {other:?}", path.display()),
    }
}

/// Every frame of a video file at its own rate and size (RGB).
pub fn frames_of(path: &Path, fps: f64, width: u32) -> Vec<vigil::frame::RgbFrame> {
    vigil::ingest::analysis_frames(path, fps, width).unwrap()
}

/// A TCP proxy in front of a server, for injecting faults in the middle of a transfer: it
/// forwards both ways; `cut_on(n, needle)` makes it break the connection carrying the `n`-th
/// request whose head contains `needle` after forwarding part of it, and then refuse
/// connections for `down`; the listener is held throughout (its port is never freed).
pub struct CutProxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<CutState>>,
}

#[derive(Default)]
struct CutState {
    needle: Vec<u8>,
    cut_at: usize,
    seen: usize,
    /// The `n`-th request whose head contains `lose_needle` reaches the server whole; its answer
    /// never reaches the client, whose connection is then closed (a response lost on the way).
    lose_needle: Vec<u8>,
    lose_at: usize,
    lose_seen: usize,
    pub lost: usize,
    down: Duration,
    down_until: Option<Instant>,
    /// When the cut happened.
    pub cut: Option<Instant>,
    back: Option<Instant>,
}

impl CutProxy {
    pub fn start(upstream: u16) -> CutProxy {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let state: std::sync::Arc<std::sync::Mutex<CutState>> = Default::default();
        let st = state.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let down = {
                    let mut s = st.lock().unwrap();
                    match s.down_until {
                        Some(t) if Instant::now() < t => true,
                        Some(_) => {
                            s.down_until = None;
                            s.back = Some(Instant::now());
                            false
                        }
                        None => false,
                    }
                };
                if down {
                    drop(c);
                    continue;
                }
                let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let st = st.clone();
                std::thread::spawn(move || pump_pair(c, up, st));
            }
        });
        CutProxy { port, state }
    }

    /// Breaks the `n`-th request whose head contains `needle` (1-based) mid-transfer, then
    /// refuses connections for `down`.
    pub fn cut_on(&self, n: usize, needle: &str, down: Duration) {
        let mut s = self.state.lock().unwrap();
        s.needle = needle.as_bytes().to_vec();
        s.cut_at = n;
        s.seen = 0;
        s.down = down;
    }

    /// Lets the `n`-th request whose head contains `needle` (1-based) through whole, and loses
    /// the server's answer: the client's connection is closed instead.
    pub fn lose_response_on(&self, n: usize, needle: &str) {
        let mut s = self.state.lock().unwrap();
        s.lose_needle = needle.as_bytes().to_vec();
        s.lose_at = n;
        s.lose_seen = 0;
    }

    /// How many answers were lost so far.
    pub fn lost(&self) -> usize {
        self.state.lock().unwrap().lost
    }

    /// Takes the server away (refuses every connection) or brings it back.
    pub fn set_down(&self, down: bool) {
        let mut s = self.state.lock().unwrap();
        if down {
            s.down_until = Some(Instant::now() + Duration::from_secs(3600));
        } else {
            s.down_until = Some(Instant::now());
        }
    }

    /// When the cut happened and when the server was reachable again.
    pub fn times(&self) -> (Option<Instant>, Option<Instant>) {
        let s = self.state.lock().unwrap();
        (s.cut, s.back)
    }
}

fn pump_pair(client: std::net::TcpStream, server: std::net::TcpStream, st: std::sync::Arc<std::sync::Mutex<CutState>>) {
    use std::io::{Read, Write};
    let (mut c_r, mut s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (mut s_r, mut c_w) = (server, client);
    // set when a request on this connection is to lose its answer
    let mute = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mute_back, st_back) = (mute.clone(), st.clone());
    let back = std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = s_r.read(&mut buf) {
            if n == 0 {
                break;
            }
            if mute_back.load(std::sync::atomic::Ordering::SeqCst) {
                // the server answered; the client never hears it
                st_back.lock().unwrap().lost += 1;
                break;
            }
            if c_w.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = c_w.shutdown(std::net::Shutdown::Both);
    });
    let mut buf = [0u8; 16384];
    while let Ok(n) = c_r.read(&mut buf) {
        if n == 0 {
            break;
        }
        {
            let mut s = st.lock().unwrap();
            let lose = !s.lose_needle.is_empty()
                && s.lose_at > 0
                && buf[..n].windows(s.lose_needle.len()).any(|w| w == s.lose_needle.as_slice());
            if lose {
                s.lose_seen += 1;
                if s.lose_seen == s.lose_at {
                    s.lose_at = 0;
                    mute.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
        let cut = {
            let mut s = st.lock().unwrap();
            let hit = !s.needle.is_empty()
                && s.cut_at > 0
                && buf[..n].windows(s.needle.len()).any(|w| w == s.needle.as_slice());
            if hit {
                s.seen += 1;
            }
            if hit && s.seen == s.cut_at {
                s.cut = Some(Instant::now());
                s.down_until = Some(Instant::now() + s.down);
                s.cut_at = 0;
                true
            } else {
                false
            }
        };
        if cut {
            // part of the request goes through, then the store is gone
            let _ = s_w.write_all(&buf[..n / 2]);
            let _ = s_w.shutdown(std::net::Shutdown::Both);
            let _ = c_r.shutdown(std::net::Shutdown::Both);
            break;
        }
        if s_w.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = s_w.shutdown(std::net::Shutdown::Both);
    let _ = back.join();
}

/// Re-encodes a video file through `filter` (e.g. `videoscale ! video/x-raw,width=1280,height=720`)
/// with `encoder` into `mux`: test media made from the bundled clips.
pub fn transcode(src: &Path, dst: &Path, filter: &str, encoder: &str, mux: &str) {
    gst::init().unwrap();
    let desc = format!(
        "filesrc location={} ! decodebin ! videoconvert ! {filter} ! videoconvert ! video/x-raw,format=I420 ! {encoder} ! {mux} ! filesink location={}",
        src.display(),
        dst.display()
    );
    let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let msg =
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(180), &[gst::MessageType::Eos, gst::MessageType::Error]);
    p.set_state(gst::State::Null).unwrap();
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        other => panic!("transcoding {} to {} failed: {other:?}", src.display(), dst.display()),
    }
}

/// Serialises the tests of one binary that measure real time (reconnects, outages, stalls), so
/// that two of them never share the two cores while their clocks run.
pub fn realtime_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks one stored evidence item against its event: hashes, clip length, privacy mask.
/// `mask_x` is the masked band [x0, x1) as fractions of the width (the sample mask is a band).
pub fn check_evidence(
    event: &serde_json::Value,
    get: impl Fn(&str) -> Vec<u8>,
    roll_s: f64,
    mask_x: Option<(f64, f64)>,
) {
    check_evidence_sized(event, get, roll_s, mask_x, (640, 360))
}

/// [`check_evidence`] for a clip of `size` pixels (a main stream above the sample's 640×360).
pub fn check_evidence_sized(
    event: &serde_json::Value,
    get: impl Fn(&str) -> Vec<u8>,
    roll_s: f64,
    mask_x: Option<(f64, f64)>,
    size: (u32, u32),
) {
    let arts = &event["artifacts"];
    for name in ["clip", "snapshot", "snapshot_annotated"] {
        let key = arts[name]["key"].as_str().unwrap();
        let bytes = get(key);
        assert_eq!(sha256(&bytes), arts[name]["sha256"].as_str().unwrap(), "{name} hash matches the event");
        assert_eq!(bytes.len() as u64, arts[name]["bytes"].as_u64().unwrap());
        assert!(key.contains(event["evidence_id"].as_str().unwrap()));
    }
    // the signed manifest beside the artifacts: the event is the manifest plus a reference to it
    let mkey = event["manifest"]["key"].as_str().unwrap();
    let mbytes = get(mkey);
    assert_eq!(sha256(&mbytes), event["manifest"]["sha256"].as_str().unwrap());
    let mut stored: serde_json::Value = serde_json::from_slice(&mbytes).unwrap();
    assert_eq!(stored["schema"], "vigil.manifest.v4");
    assert_schema("vigil.manifest.v4", &stored);
    assert_schema("vigil.evidence.v1", event);
    let mut ev = event.clone();
    for k in ["manifest", "store", "objects"] {
        ev.as_object_mut().unwrap().remove(k);
    }
    ev["schema"] = "".into();
    stored["schema"] = "".into();
    let c = vigil::util::jcs::canonical;
    assert_eq!(String::from_utf8(c(&stored)).unwrap(), String::from_utf8(c(&ev)).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    std::fs::write(&clip, get(arts["clip"]["key"].as_str().unwrap())).unwrap();
    let probe = ffprobe(&clip);
    assert_eq!(
        (probe.codec.as_str(), probe.pix_fmt.as_str()),
        ("h264", "yuv420p"),
        "the clip is H.264 4:2:0 (ffprobe: {probe:?})"
    );
    assert!(["High", "Main", "Constrained Baseline"].contains(&probe.profile.as_str()), "{probe:?}");
    let (moov, mdat) = (probe.boxes.iter().position(|b| b == "moov"), probe.boxes.iter().position(|b| b == "mdat"));
    assert!(moov.is_some() && (mdat.is_none() || moov < mdat), "moov before mdat (faststart): {probe:?}");
    let frames = decode_mp4(&clip);
    let fps = event["clip"]["fps"].as_f64().unwrap();
    let first = frames.first().unwrap();
    let last = frames.last().unwrap();
    let dur = (last.pts + last.duration - first.pts).as_secs_f64();
    assert!(
        (dur - roll_s).abs() <= 2.0 / fps,
        "clip lasts {dur:.3} s, wanted pre + post = {roll_s} s within two frames ({} frames)",
        frames.len()
    );
    assert_eq!(frames.len() as u64, event["clip"]["frames"].as_u64().unwrap());
    assert_eq!((first.width, first.height), size, "source resolution kept");
    if let Some((x0, x1)) = mask_x {
        let snap = decode_jpeg(&get(arts["snapshot"]["key"].as_str().unwrap()));
        assert_masked("snapshot", snap.width(), snap.height(), |x, y| snap.get_pixel(x, y).0, x0 + 0.02, x1, x0 - 0.05);
        for (i, f) in frames.iter().enumerate().step_by(10) {
            assert_masked(&format!("clip frame {i}"), f.width, f.height, |x, y| f.px(x, y), x0 + 0.02, x1, x0 - 0.05);
        }
    }
}

pub fn astronaut_camera(source: &str, extra: &str) -> String {
    camera_with_id("cam1", source, extra)
}

/// A camera on the astronaut sample's privacy mask with a no-mask rule.
pub fn camera_with_id(id: &str, source: &str, extra: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nlocation = \"counter\"\nsource = \"{source}\"\nprivacy_mask = \"{}\"\n{extra}\n\
         [[cameras.rules]]\nkind = \"no_mask\"\nmin_hits = 15\nwindow = 15\n",
        repo().join("privacy-masks/cam-astronaut.toml").display()
    )
}

/// A plain HTTP/1.1 GET on loopback: the whole response, status line and headers included.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"));
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Asserts that `doc` is valid against the committed schema `tests/schemas/<name>.schema.json`
/// (what `vigil schema` prints; tests/docs.rs keeps the two equal).
pub fn assert_schema(name: &str, doc: &serde_json::Value) {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>> = OnceLock::new();
    let v = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_insert_with(|| {
            let path = repo().join("tests/schemas").join(format!("{name}.schema.json"));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
            std::sync::Arc::new(jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{name}: {e}")))
        })
        .clone();
    let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).take(5).collect();
    assert!(errors.is_empty(), "not valid against {name}: {errors:?}\n{doc}");
}

/// Checks a published event against the schema of its subject (evidence, checkpoint, review).
/// Payloads a test made up itself (no `schema` member) are left alone.
pub fn assert_published_schema(subject: &str, payload: &serde_json::Value) {
    if payload.get("schema").is_none() {
        return;
    }
    let name = if subject.starts_with("vigil.evidence.") {
        "vigil.evidence.v1"
    } else if subject.starts_with("vigil.chain.") {
        "vigil.checkpoint-event.v1"
    } else if subject.starts_with("vigil.review.") {
        "vigil.review-event.v1"
    } else if subject.starts_with("vigil.access.") {
        "vigil.access-head-event.v1"
    } else {
        return;
    };
    assert_schema(name, payload);
}

/// What ffprobe (Debian's ffmpeg: a reader independent of GStreamer) says of a video file.
#[derive(Debug)]
pub struct Probe {
    pub codec: String,
    pub profile: String,
    pub pix_fmt: String,
    /// Top-level MP4 boxes in file order.
    pub boxes: Vec<String>,
}

pub fn ffprobe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,profile,pix_fmt",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (apt package ffmpeg; .ci/install installs it)");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    let field = |k: &str| s[k].as_str().unwrap_or_default().to_string();
    let trace = Command::new("ffprobe").args(["-v", "trace"]).arg(path).output().unwrap();
    let boxes = String::from_utf8_lossy(&trace.stderr)
        .lines()
        .filter(|l| l.contains("parent:'root'"))
        .filter_map(|l| l.split("type:'").nth(1).and_then(|t| t.split('\'').next()).map(str::to_string))
        .collect();
    Probe { codec: field("codec_name"), profile: field("profile"), pix_fmt: field("pix_fmt"), boxes }
}
