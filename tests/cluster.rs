//! Many workers, one site (#13): cameras shared through leases in NATS KV, on a real 3-node
//! JetStream cluster (three nats-server processes routed to each other on loopback), with real
//! workers playing looping sample files in real time.
//!
//! - `failover_on_a_three_node_cluster`: three workers spread six cameras; kill -9 one (its
//!   cameras resume elsewhere within TTL + 5 s), SIGTERM another (hand-over within 3 s), start a
//!   fourth (it takes cameras), stop one NATS node (nothing stops), bring back the killed worker
//!   (its spool uploads); then every chain verifies, continuous across workers, no evidence id
//!   twice on the stream, nothing left in any spool. Prints the failover table and
//!   `vigil cluster status`.
//! - `split_brain_a_cut_worker_fences_itself_and_forced_double_holders_cannot_fork_a_chain`: a
//!   worker whose NATS connection is cut stops its camera before another worker can take the
//!   lease; two workers forced onto the same cameras (different lease buckets) write one chain
//!   without a double position.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Lease TTL of the split-brain test (one nats-server: nothing to elect).
const TTL: f64 = 6.0;
/// Lease TTL on the 3-node cluster: the shipped default, which outlasts the election of a new
/// bucket leader when a node dies.
const CLUSTER_TTL: f64 = 15.0;

/// One nats-server of the cluster.
struct Node {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
}

/// Three nats-servers with JetStream, routed to each other on loopback; stopped on drop.
struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    fn start() -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, c)| format!("nats-route://127.0.0.1:{c}")).collect();
        let mut nodes = Vec::new();
        for (i, (client, route)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{i}"));
            // no_advertise: clients keep to the URLs they were given (the split-brain test's proxy)
            let conf = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{client}\njetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{\n  name: vigil-test\n  listen: 127.0.0.1:{route}\n  no_advertise: true\n  routes: [{}]\n}}\n",
                store.display(),
                routes.join(", ")
            );
            let path = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&path, conf).unwrap();
            nodes.push(Node { child: None, port: *client, conf: path });
        }
        let mut c = NatsCluster { nodes, _dir: dir };
        for i in 0..3 {
            c.start_node(i);
        }
        // ready once a replicated bucket can be made (meta leader elected, peers known)
        let url = c.url();
        let t = Instant::now();
        rt().block_on(async {
            loop {
                let r = async {
                    let client = async_nats::connect(url.split(',').collect::<Vec<_>>().as_slice()).await?;
                    let js = async_nats::jetstream::new(client);
                    js.create_key_value(async_nats::jetstream::kv::Config {
                        bucket: "ready".into(),
                        num_replicas: 3,
                        ..Default::default()
                    })
                    .await?;
                    Ok::<_, async_nats::Error>(())
                }
                .await;
                match r {
                    Ok(()) => break,
                    Err(e) => assert!(t.elapsed() < Duration::from_secs(60), "JetStream cluster not ready: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        println!("3-node JetStream cluster ready in {:.1} s", t.elapsed().as_secs_f64());
        c
    }

    fn start_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let child = Command::new(repo().join(".deps/bin/nats-server"))
            .arg("-c")
            .arg(&n.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        n.child = Some(child);
        wait_port(n.port, Duration::from_secs(10));
    }

    fn stop_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The index of the node that leads `stream`.
    fn leader(&self, stream: &str) -> usize {
        let url = self.url();
        let name = rt().block_on(async {
            let c = async_nats::connect(url.split(',').collect::<Vec<_>>().as_slice()).await.unwrap();
            let js = async_nats::jetstream::new(c);
            let mut st = js.get_stream(stream).await.unwrap();
            st.info().await.unwrap().cluster.clone().and_then(|c| c.leader).expect("a leader")
        });
        name.trim_start_matches('n').parse().unwrap()
    }

    fn url(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A camera on the looping astronaut sample, analysed lightly (2 fps, 320 px face input) so that
/// several workers share two cores, firing every few seconds.
fn camera(id: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nlocation = \"counter\"\nsource = \"{}\"\nloop = true\nrealtime = true\n\
         privacy_mask = \"{}\"\n[[cameras.rules]]\nkind = \"no_mask\"\nmin_hits = 2\nwindow = 3\ncooldown_s = 4\ninput_width = 320\n",
        sample("astronaut-pan.mp4").display(),
        repo().join("privacy-masks/cam-astronaut.toml").display()
    )
}

fn site(nats_url: &str, replicas: usize, ttl: f64, cameras: &[&str], extra: &str) -> Site {
    let cams: String = cameras.iter().map(|c| camera(c)).collect();
    let site = Site::new(
        &format!(
            "[publish]\nnats_url = \"{nats_url}\"\nreplicas = {replicas}\n[cluster]\nenabled = true\nlease_ttl_s = {ttl}\n{extra}\n\
             [analysis]\nfps = 2\n[clip]\npre_roll_s = 1\npost_roll_s = 1\n"
        ),
        &cams,
    );
    // one signing key for the site's workers, made before any of them starts
    let (code, _, err) =
        run_capture(&["keys", "init", "--dir", site.path("keys").to_str().unwrap()], Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    site
}

/// `vigil run --worker-id W --data-dir <site>/W`, logging JSON to `<site>/W.log`.
fn worker(site: &Site, id: &str, pipeline: &Path) -> Worker {
    let log = site.path(&format!("{id}.log"));
    let f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let child = vigil()
        .args(["--log-format", "json", "run"])
        .arg(pipeline)
        .args(["--worker-id", id, "--data-dir"])
        .arg(site.path(id))
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .expect("start vigil");
    Worker { child, log }
}

fn kill9(w: &mut Worker) {
    let _ = w.child.kill();
    let _ = w.child.wait();
}

/// `vigil cluster status --json`.
fn status(pipeline: &Path) -> serde_json::Value {
    let (code, out, err) = run_capture(
        &["cluster", "status", "--pipeline", pipeline.to_str().unwrap(), "--json"],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "cluster status: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("cluster status --json: {e}: {out}"))
}

/// camera → worker, from the lease bucket.
fn holders(pipeline: &Path) -> BTreeMap<String, Option<String>> {
    let s = status(pipeline);
    s["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["camera"].as_str().unwrap().to_string(), c["worker"].as_str().map(String::from)))
        .collect()
}

fn count(h: &BTreeMap<String, Option<String>>, w: &str) -> usize {
    h.values().filter(|v| v.as_deref() == Some(w)).count()
}

/// Polls the holders until `ok`; returns them and how long it took.
fn wait_holders(
    pipeline: &Path,
    within: Duration,
    what: &str,
    ok: impl Fn(&BTreeMap<String, Option<String>>) -> bool,
) -> (BTreeMap<String, Option<String>>, Duration) {
    let t = Instant::now();
    loop {
        let h = holders(pipeline);
        if ok(&h) {
            return (h, t.elapsed());
        }
        assert!(t.elapsed() < within, "{what}: not within {within:?}; holders {h:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Evidence events on the stream: (evidence id, camera, seq, worker, lease worker).
fn evidence(messages: &[(String, String, serde_json::Value)]) -> Vec<(String, String, u64, String, Option<String>)> {
    messages
        .iter()
        .filter(|(s, _, _)| s.starts_with("vigil.evidence."))
        .map(|(_, id, p)| {
            (
                id.clone(),
                p["camera"].as_str().unwrap().to_string(),
                p["chain"]["seq"].as_u64().unwrap(),
                p["worker"]["id"].as_str().unwrap().to_string(),
                p["lease"]["worker"].as_str().map(String::from),
            )
        })
        .collect()
}

/// Every message on the stream (subject, msg id, payload), read from any live node.
fn stream_messages(url: &str) -> Vec<(String, String, serde_json::Value)> {
    rt().block_on(async {
        let c = async_nats::connect(url.split(',').collect::<Vec<_>>().as_slice()).await.unwrap();
        let js = async_nats::jetstream::new(c);
        let Ok(mut st) = js.get_stream("VIGIL").await else { return Vec::new() };
        let info = st.info().await.unwrap().state.clone();
        assert_eq!(st.info().await.unwrap().config.num_replicas, 3, "the evidence stream is replicated");
        let mut out = Vec::new();
        for seq in info.first_sequence..=info.last_sequence {
            if let Ok(m) = st.get_raw_message(seq).await {
                let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string()).unwrap_or_default();
                out.push((m.subject.to_string(), id, serde_json::from_slice(&m.payload).unwrap_or_default()));
            }
        }
        out
    })
}

/// Spooled items complete on disk (their `READY` marker written).
fn ready_spool_items(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("spool"))
        .map(|d| d.flatten().filter(|e| e.path().join("READY").exists()).count())
        .unwrap_or(0)
}

fn spool_items(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("spool")).map(|d| d.flatten().filter(|e| e.path().is_dir()).count()).unwrap_or(0)
}

fn verified(pipeline: &Path) -> String {
    let (code, text) = verify(pipeline, &[]);
    assert_eq!(code, 0, "vigil verify failed:\n{text}");
    text
}

/// The chain seen from the events: each camera's seqs are 1..=N, each once.
fn assert_chains_continuous(
    ev: &[(String, String, u64, String, Option<String>)],
) -> BTreeMap<String, BTreeSet<String>> {
    let ids: BTreeSet<&String> = ev.iter().map(|e| &e.0).collect();
    assert_eq!(ids.len(), ev.len(), "an evidence id appears twice on the stream");
    let mut by_cam: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut workers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, cam, seq, w, lease) in ev {
        by_cam.entry(cam.clone()).or_default().push(*seq);
        workers.entry(cam.clone()).or_default().insert(w.clone());
        assert_eq!(lease.as_deref(), Some(w.as_str()), "the manifest's lease is its worker's");
    }
    for (cam, seqs) in &mut by_cam {
        seqs.sort();
        assert_eq!(
            *seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "camera {cam}: chain positions fork or have a gap"
        );
    }
    workers
}

#[test]
fn failover_on_a_three_node_cluster() {
    let _rt = realtime_lock();
    let mut cluster = NatsCluster::start();
    let cams = ["cam1", "cam2", "cam3", "cam4", "cam5", "cam6"];
    // the evidence store is S3 (moto); w2 reaches it through a proxy that breaks its first clip
    // upload and then refuses it, so w2 dies with an item in its spool (its chain position
    // already reserved in the store)
    let moto = Moto::start();
    moto.create_bucket("evidence", false);
    let proxy = CutProxy::start(moto.port());
    proxy.cut_on(1, "clip.mp4", Duration::from_secs(600));
    let site = site(&cluster.url(), 3, CLUSTER_TTL, &cams, &format!("[store.options]\n{}", moto.store_options()));
    site.replace("url = \"store\"", "url = \"s3://evidence/vigil\"");
    let p = site.pipeline.clone();
    let via = site.path("w2-via-proxy.toml");
    std::fs::write(
        &via,
        std::fs::read_to_string(&p).unwrap().replace(&moto.endpoint, &format!("http://127.0.0.1:{}", proxy.port)),
    )
    .unwrap();
    let mut w: BTreeMap<&str, Worker> = BTreeMap::new();
    for id in ["w1", "w2", "w3"] {
        w.insert(id, worker(&site, id, if id == "w2" { &via } else { &p }));
    }
    let mut table: Vec<String> = Vec::new();

    // spread: every camera held by exactly one worker, two each
    let (h, took) = wait_holders(&p, Duration::from_secs(90), "six cameras over three workers", |h| {
        ["w1", "w2", "w3"].iter().all(|x| count(h, x) == 2)
    });
    println!("spread in {:.1} s: {h:?}", took.as_secs_f64());
    assert!(h.values().all(Option::is_some));
    // presence (load) follows a claim within a tick
    let t = Instant::now();
    let st = loop {
        let st = status(&p);
        let reported: u64 = st["workers"].as_array().unwrap().iter().map(|x| x["cameras"].as_u64().unwrap()).sum();
        if reported == 6 {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "workers' presence does not report their cameras: {st}");
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("vigil cluster status --json (three workers):\n{}", serde_json::to_string_pretty(&st).unwrap());
    assert_eq!(st["workers"].as_array().unwrap().len(), 3);
    let (_, out, _) = run_capture(&["cluster", "status", "--pipeline", p.to_str().unwrap()], Duration::from_secs(30));
    println!("vigil cluster status:\n{out}");
    for c in cams {
        assert!(out.contains(c), "{out}");
    }

    // evidence flows before anything fails
    let t = Instant::now();
    while evidence(&stream_messages(&cluster.url())).len() < 4 {
        assert!(t.elapsed() < Duration::from_secs(90), "no evidence on the stream");
        std::thread::sleep(Duration::from_millis(500));
    }

    // kill -9 w2 once its first item is stuck in its spool: its cameras resume elsewhere
    // within TTL + 5 s
    // (one item reserved its chain position, then lost the store in the middle of its clip; the
    // next could not reach the store to reserve one and was spooled without)
    w.get_mut("w2").unwrap().wait_log("spool: upload failed", Duration::from_secs(60));
    w.get_mut("w2").unwrap().wait_log("chain position NOT reserved", Duration::from_secs(60));
    // (that item is spooled right after the line: killed before its READY marker it would be an
    // incomplete item, discarded at restart by design)
    let t = Instant::now();
    while ready_spool_items(&site.path("w2")) < 2 {
        assert!(t.elapsed() < Duration::from_secs(30), "w2 spooled no second item:\n{}", w["w2"].log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let lost: Vec<String> = h.iter().filter(|(_, v)| v.as_deref() == Some("w2")).map(|(c, _)| c.clone()).collect();
    kill9(w.get_mut("w2").unwrap());
    let w2_spooled = spool_items(&site.path("w2"));
    assert!(w2_spooled >= 2, "w2 died with a reserved and an unreserved item in its spool: {w2_spooled}");
    let (h, took) =
        wait_holders(&p, Duration::from_secs_f64(CLUSTER_TTL + 5.0), "the killed worker's cameras resumed", |h| {
            lost.iter().all(|c| matches!(h[c].as_deref(), Some(x) if x != "w2"))
        });
    for c in &lost {
        let by = h[c].clone().unwrap();
        let log = w[by.as_str()].log_text();
        assert!(
            logged_at(&log, &["lease acquired", &format!("\"camera\":\"{c}\"")]).is_some(),
            "{by} took {c}:\n{log}"
        );
    }
    println!("kill -9 w2: {lost:?} resumed in {:.1} s", took.as_secs_f64());
    table.push(format!(
        "| kill -9 one worker (TTL {CLUSTER_TTL:.0} s) | {} ({}) | {:.1} s (bound {:.0} s) |",
        lost.len(),
        lost.join(", "),
        took.as_secs_f64(),
        CLUSTER_TTL + 5.0
    ));

    // SIGTERM w3: hand-over within 3 s
    let handed: Vec<String> = h.iter().filter(|(_, v)| v.as_deref() == Some("w3")).map(|(c, _)| c.clone()).collect();
    assert!(!handed.is_empty(), "{h:?}");
    w["w3"].sigterm();
    let (_, took) = wait_holders(&p, Duration::from_secs(3), "SIGTERM hand-over", |h| {
        handed.iter().all(|c| h[c].as_deref() == Some("w1"))
    });
    println!("SIGTERM w3: {handed:?} handed over in {:.1} s", took.as_secs_f64());
    table.push(format!(
        "| SIGTERM one worker | {} ({}) | {:.1} s (bound 3 s) |",
        handed.len(),
        handed.join(", "),
        took.as_secs_f64()
    ));
    assert_eq!(w.get_mut("w3").unwrap().wait(Duration::from_secs(60)), 0, "w3 exits cleanly after handing over");

    // a fourth worker joins and takes a share
    w.insert("w4", worker(&site, "w4", &p));
    let (h, took) =
        wait_holders(&p, Duration::from_secs(60), "the fourth worker takes cameras", |h| count(h, "w4") >= 3);
    println!("w4 joined: holds {} of 6 after {:.1} s: {h:?}", count(&h, "w4"), took.as_secs_f64());
    // each camera that moved was off for the time between its hand-over and its new start
    let mut gaps = Vec::new();
    for (c, _) in h.iter().filter(|(_, v)| v.as_deref() == Some("w4")) {
        let cam = format!("\"camera\":\"{c}\"");
        let released = logged(&w["w1"].log_text(), &["handing a camera over", &cam]).last().copied();
        let taken = logged(&w["w4"].log_text(), &["lease acquired", &cam]).last().copied().unwrap();
        if let Some(r) = released {
            gaps.push((taken - r).num_milliseconds() as f64 / 1000.0);
        }
    }
    let worst = gaps.iter().cloned().fold(0.0, f64::max);
    println!("cameras handed to w4: off for {gaps:?} s between the hand-over and the new holder's start");
    assert!(!gaps.is_empty(), "w1 handed cameras over to w4");
    let renewal = (CLUSTER_TTL / 3.0).min(2.0);
    assert!(worst <= renewal, "a camera was off {worst} s, longer than a lease renewal ({renewal} s)");
    table.push(format!(
        "| a worker joins | {} moved to it ({:.1} s after its start, model loading included) | each off {:.2} s at most between hand-over and its new start (bound: one renewal, {:.0} s) |",
        count(&h, "w4"),
        took.as_secs_f64(),
        worst,
        renewal
    ));

    // stop the NATS node that leads the lease bucket (the worst one to lose): nothing stops
    let before: BTreeMap<&str, usize> = ["w1", "w4"].iter().map(|k| (*k, w[k].mark())).collect();
    let held_before = h.clone();
    let leader = cluster.leader("KV_vigil-leases");
    cluster.stop_node(leader);
    let stopped = Instant::now();
    let stopped_utc = chrono::Utc::now();
    while stopped.elapsed() < Duration::from_secs_f64(CLUSTER_TTL + 5.0) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let h = holders(&p);
    assert_eq!(h, held_before, "a NATS node down moved no camera");
    for k in ["w1", "w4"] {
        let log = w[k].log_from(before[k]);
        assert!(
            !log.contains("camera stopped on this worker"),
            "{k} stopped a camera while one NATS node was down:\n{log}"
        );
    }
    // how long the workers could not renew (no leader for the bucket): their own log lines
    let failed: Vec<chrono::DateTime<chrono::Utc>> =
        ["w1", "w4"].iter().flat_map(|k| logged(&w[k].log_from(before[k]), &["lease not renewed"])).collect();
    let gap = failed.iter().max().map_or(0.0, |t| (*t - stopped_utc).num_milliseconds() as f64 / 1000.0);
    println!(
        "the lease bucket's leader n{leader} stopped: renewals failed for up to {gap:.1} s ({} failed attempts)",
        failed.len()
    );
    cluster.start_node(leader);
    table.push(format!(
        "| the NATS node leading the lease bucket stopped for {:.0} s (renewals failed for up to {gap:.1} s until a new leader) | 0 | nothing stopped |",
        CLUSTER_TTL + 5.0
    ));

    // the killed worker comes back (its disk too, the store reachable): its spool uploads
    let mark = w["w2"].mark();
    w.insert("w2", worker(&site, "w2", &p));
    let w2 = w.get_mut("w2").unwrap();
    w2.wait_log_from(mark, "now holds one", Duration::from_secs(60));
    let t = Instant::now();
    while spool_items(&site.path("w2")) > 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "w2's spool did not empty:\n{}", w2.log_from(mark));
        std::thread::sleep(Duration::from_millis(200));
    }

    // stop everything, then check the evidence
    for k in ["w1", "w2", "w4"] {
        w[k].sigterm();
    }
    for k in ["w1", "w2", "w4"] {
        assert_eq!(w.get_mut(k).unwrap().wait(Duration::from_secs(90)), 0, "{k}: {}", w[k].log_text());
    }
    for k in ["w1", "w2", "w3", "w4"] {
        assert_eq!(spool_items(&site.path(k)), 0, "{k}: items left in the spool");
    }
    let text = verified(&p);
    println!(
        "{}",
        text.lines().filter(|l| l.contains("camera") || l.starts_with("OK")).take(12).collect::<Vec<_>>().join("\n")
    );
    let ev = evidence(&stream_messages(&cluster.url()));
    let workers = assert_chains_continuous(&ev);
    let moved: Vec<&String> = workers.iter().filter(|(_, ws)| ws.len() >= 2).map(|(c, _)| c).collect();
    assert!(!moved.is_empty(), "some camera's chain continues across workers: {workers:?}");
    println!(
        "evidence on the stream: {} items, ids unique; per camera, workers that wrote its chain: {workers:?}",
        ev.len()
    );
    println!(
        "the killed worker had {w2_spooled} item(s) in its spool (one with its position reserved, one without); after its restart: 0, all on the stream"
    );
    println!("\n| event | cameras affected | time to resume | evidence lost / duplicated |\n| --- | --- | --- | --- |");
    for row in table {
        println!("{row} 0 / 0 |");
    }
}

/// A TCP forwarder whose connections can all be cut at once (and new ones refused).
struct Cutter {
    port: u16,
    conns: Arc<Mutex<Vec<std::net::TcpStream>>>,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl Cutter {
    fn start(upstream: u16) -> Cutter {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Default::default();
        let cut: Arc<std::sync::atomic::AtomicBool> = Default::default();
        let (cs, ct) = (conns.clone(), cut.clone());
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                if ct.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                cs.lock().unwrap().extend([c.try_clone().unwrap(), up.try_clone().unwrap()]);
                let pump = |mut a: std::net::TcpStream, mut b: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = a.read(&mut buf) {
                            if n == 0 || b.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = b.shutdown(std::net::Shutdown::Both);
                    });
                };
                pump(c.try_clone().unwrap(), up.try_clone().unwrap());
                pump(up, c);
            }
        });
        Cutter { port, conns, cut }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The `timestamp`s of the JSON log lines of `log` that contain every needle.
fn logged(log: &str, needles: &[&str]) -> Vec<chrono::DateTime<chrono::Utc>> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok().map(|t| t.with_timezone(&chrono::Utc))
        })
        .collect()
}

/// The first of [`logged`].
fn logged_at(log: &str, needles: &[&str]) -> Option<chrono::DateTime<chrono::Utc>> {
    logged(log, needles).first().copied()
}

#[test]
fn split_brain_a_cut_worker_fences_itself_and_forced_double_holders_cannot_fork_a_chain() {
    let _rt = realtime_lock();
    let nats = Nats::start();
    let cutter = Cutter::start(nats.port);
    let cams = ["cam1", "cam2"];
    let direct = site(&nats.url, 1, TTL, &cams, "");
    // a: the same site through the forwarder
    let via = direct.path("via-proxy.toml");
    std::fs::write(
        &via,
        std::fs::read_to_string(&direct.pipeline)
            .unwrap()
            .replace(&nats.url, &format!("nats://127.0.0.1:{}", cutter.port)),
    )
    .unwrap();
    let mut a = worker(&direct, "wa", &via);
    wait_holders(&direct.pipeline, Duration::from_secs(60), "wa takes both cameras", |h| count(h, "wa") == 2);
    let mut b = worker(&direct, "wb", &direct.pipeline);
    let (h, _) = wait_holders(&direct.pipeline, Duration::from_secs(60), "one camera each", |h| {
        count(h, "wa") == 1 && count(h, "wb") == 1
    });
    let cam_a = h.iter().find(|(_, v)| v.as_deref() == Some("wa")).map(|(c, _)| c.clone()).unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // cut wa from NATS: it must stop its camera before wb can take the lease
    let cut_at = chrono::Utc::now();
    cutter.cut();
    let t = Instant::now();
    loop {
        let log = b.log_text();
        if logged_at(&log, &["lease acquired", &format!("\"camera\":\"{cam_a}\"")]).is_some() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs_f64(TTL + 5.0), "wb did not take {cam_a}:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let fenced = logged_at(&a.log_text(), &["fenced", &format!("\"camera\":\"{cam_a}\"")])
        .unwrap_or_else(|| panic!("wa did not fence {cam_a}:\n{}", a.log_text()));
    let taken = logged_at(&b.log_text(), &["lease acquired", &format!("\"camera\":\"{cam_a}\"")]).unwrap();
    println!(
        "NATS cut at {cut_at}; wa stopped {cam_a} at {fenced} ({:.2} s later); wb took it at {taken} ({:.2} s after the fence)",
        (fenced - cut_at).num_milliseconds() as f64 / 1000.0,
        (taken - fenced).num_milliseconds() as f64 / 1000.0
    );
    assert!(fenced < taken, "wa kept {cam_a} until {fenced}, wb took it at {taken}");
    assert!((fenced - cut_at).num_milliseconds() as f64 <= TTL * 1000.0, "wa kept the camera past its lease");

    // forced double holders: wc follows another lease bucket, so it runs both cameras beside wb
    let forced = direct.path("forced.toml");
    std::fs::write(
        &forced,
        std::fs::read_to_string(&direct.pipeline)
            .unwrap()
            .replace("lease_ttl_s", "bucket = \"vigil-leases-rogue\"\nlease_ttl_s"),
    )
    .unwrap();
    let mut c = worker(&direct, "wc", &forced);
    c.wait_log("lease acquired", Duration::from_secs(60));
    let t = Instant::now();
    let both = |log: &str| log.matches("evidence spooled (complete, signed)").count();
    while both(&c.log_text()) < 2 {
        let lines = |l: String| {
            l.lines()
                .filter(|x| x.contains("evidence") || x.contains("violation") || x.contains("ERROR"))
                .map(String::from)
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "wb and wc both produce evidence on the same cameras:\nwb:\n{}\nwc:\n{}",
            lines(b.log_text()),
            lines(c.log_text())
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for x in [&b, &c] {
        x.sigterm();
    }
    assert_eq!(b.wait(Duration::from_secs(60)), 0);
    assert_eq!(c.wait(Duration::from_secs(60)), 0);
    kill9(&mut a);
    // wa comes back with NATS reachable: its spooled items upload
    let mut a2 = worker(&direct, "wa", &direct.pipeline);
    std::thread::sleep(Duration::from_secs(5));
    a2.sigterm();
    assert_eq!(a2.wait(Duration::from_secs(60)), 0);
    for k in ["wa", "wb", "wc"] {
        assert_eq!(spool_items(&direct.path(k)), 0, "{k}");
    }
    verified(&direct.pipeline);
    // one chain per camera: every position once, from several workers
    let ev = evidence(&nats.messages("VIGIL"));
    let workers = assert_chains_continuous(&ev);
    println!("chains after the forced double holders: {workers:?} ({} items)", ev.len());
    assert!(workers.values().any(|w| w.contains("wb") && w.contains("wc")), "{workers:?}");
    let retried = ["wb", "wc"]
        .iter()
        .map(|k| {
            std::fs::read_to_string(direct.path(&format!("{k}.log")))
                .unwrap()
                .matches("chain position taken by another worker")
                .count()
        })
        .sum::<usize>();
    println!("positions taken by the other worker and claimed again: {retried}");
}

/// A district without video (issue #35): `vigil cluster simulate` runs 50 members of the lease
/// protocol over 5,000 cameras on the three-node cluster; 5 members are killed at once (no
/// hand-over) 20 s after the spread, and once their cameras run elsewhere the node leading the
/// lease bucket is killed. Every moment is relative to what happened, not to the clock, so a loaded
/// machine (a slow spread) stretches the run instead of skipping a phase. Prints the figures the
/// README's capacity model uses.
#[test]
fn a_district_of_5000_cameras_and_50_workers_spreads_fails_over_and_rides_out_a_lost_leader() {
    let _rt = realtime_lock();
    let mut cluster = NatsCluster::start();
    let (cameras, workers, ttl) = (5000usize, 50usize, 30.0f64);
    let mut child = vigil()
        .args(["cluster", "simulate", "--nats", &cluster.url(), "--bucket", "vigil-district"])
        .args(["--cameras", &cameras.to_string(), "--workers", &workers.to_string(), "--ttl", &ttl.to_string()])
        .args(["--seconds", "170", "--kill", "5", "--kill-at", "20"])
        .env("VIGIL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(std::env::temp_dir().join("vigil-district.log")).unwrap())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut samples: Vec<serde_json::Value> = Vec::new();
    let mut summary = serde_json::Value::Null;
    let mut leader_killed_at: Option<f64> = None;
    let mut failed_over_at: Option<f64> = None;
    use std::io::BufRead;
    for line in out.lines().map_while(Result::ok) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v.get("summary").is_some() {
            summary = v["summary"].clone();
            break;
        }
        let t = v["t_s"].as_f64().unwrap();
        // the five are dead (members dropped) and their cameras have holders again: 5 s later the
        // leader goes; at 130 s at the latest, so that 40 s remain to watch the election
        let members = v["members"].as_u64().unwrap() as usize;
        let held = v["held"].as_u64().unwrap() as usize;
        if members < workers && held >= cameras && failed_over_at.is_none() {
            failed_over_at = Some(t);
        }
        let due = failed_over_at.is_some_and(|f| t >= f + 5.0) || t >= 130.0;
        if due && leader_killed_at.is_none() {
            let leader = cluster.leader("KV_vigil-district");
            cluster.stop_node(leader);
            leader_killed_at = Some(t);
            println!("district: killed n{leader}, the lease bucket's leader, at {t:.0} s");
        }
        samples.push(v);
    }
    assert!(child.wait().unwrap().success());
    let killed_at = leader_killed_at.expect("the leader was killed");
    let spread = summary["spread_s"].as_f64().expect("every camera got a holder");
    let writes = summary["steady_writes_per_s"].as_f64().unwrap();
    let failover = summary["failover_s"].as_f64().expect("the killed members' cameras run elsewhere");
    let after: Vec<&serde_json::Value> = samples.iter().filter(|s| s["t_s"].as_f64().unwrap() > killed_at).collect();
    let min_after = after.iter().map(|s| s["held"].as_u64().unwrap()).min().unwrap();
    let failed_after: f64 = after.iter().map(|s| s["failed_per_s"].as_f64().unwrap()).sum();
    let failing_s = after.iter().filter(|s| s["failed_per_s"].as_f64().unwrap() > 0.0).count();
    // from the kill until every camera has a holder for the rest of the run
    let last_dip = after.iter().rposition(|s| (s["held"].as_u64().unwrap() as usize) < cameras);
    let all_held_again = match last_dip {
        None => Some(0.0),
        Some(i) => after.get(i + 1).map(|s| s["t_s"].as_f64().unwrap() - killed_at),
    };
    // cameras stopped because their lease was lost or fenced (a hand-over by the share policy,
    // still rebalancing after the five deaths, is neither)
    let log = std::fs::read_to_string(std::env::temp_dir().join("vigil-district.log")).unwrap_or_default();
    let stopped = log
        .lines()
        .filter(|l| l.contains("camera stopped on this worker") && (l.contains("lost:") || l.contains("fenced:")))
        .count();
    // renewals every 10 s at TTL 30 s: (cameras + workers) / 10 writes a second
    let expected = (cameras + workers) as f64 / 10.0;
    println!(
        "| {cameras} cameras, {workers} members, TTL {ttl} s | spread {spread:.1} s | KV writes {writes:.0}/s (protocol: {expected:.0}/s) | 5 killed: failover {failover:.1} s | leader killed: writes failed for {failing_s} s ({failed_after:.0} failed, retried), {stopped} cameras stopped by a lost or fenced lease, fewest holders {min_after} of {cameras}, all held again {:.1} s after |",
        all_held_again.unwrap_or(f64::NAN)
    );
    assert!(spread < 60.0, "{summary}");
    assert!((0.6 * expected..1.4 * expected).contains(&writes), "{summary}");
    // the killed members' leases lapse at most TTL after the kill. Usually the survivors see the
    // five gone (presence) soon after and take the cameras within their larger fair share: 31-44 s
    // in most runs here. When the survivors still count the dead members (their presence not yet
    // gone from the survivors' view), everyone is at its fair share and the cameras are taken as
    // orphans, free for 2 x TTL (share.rs): at most TTL + 2 x TTL. One full run here took that
    // path (78.7 s); the bound is the protocol's guarantee, the printed figure what this run did.
    assert!(failover <= 3.0 * ttl + 5.0, "{summary}");
    if failover > ttl + ttl / 3.0 + 10.0 {
        println!(
            "district: failover {failover:.1} s took the orphan path (the survivors still counted the killed members)"
        );
    }
    // The protocol rides out an outage of up to 10 s (Timing: renewal every 10 s, fence at
    // TTL − 6 s = 24 s after the last good renewal, so 14 s less a loaded tick's lateness). The
    // outage is taken from the kill to the end of the first run of seconds with failed writes
    // (later stray failures are contention, not the election): writes in
    // flight to the dying leader hang until their timeout and fail late, so this over-counts by up
    // to that timeout, and the assertion below holds where the outage was clearly short. A longer
    // outage (a loaded machine electing slowly: runs here saw 9-18 s of failing writes, a renewal
    // sent 2 s late, 45 and 100 cameras fenced) must fence cameras before their leases lapse:
    // that is the fence doing its job, not a fault, and the run says so.
    let failing = |s: &&serde_json::Value| s["failed_per_s"].as_f64().unwrap() > 0.0;
    let outage_s = after
        .iter()
        .copied()
        .skip_while(|s| !failing(s))
        .take_while(failing)
        .map(|s| s["t_s"].as_f64().unwrap() - killed_at)
        .fold(0.0, f64::max);
    println!("district: leader killed: the last failed write {outage_s:.1} s after the kill");
    if outage_s <= 10.0 {
        assert_eq!(stopped, 0, "a lost leader stops no camera: renewals wait out the election");
        // what dips is a camera in hand-over (the share policy still rebalancing after the five
        // deaths), never a run of cameras whose leases lapsed; when the leader was killed at the
        // 130 s cap before the five's cameras all ran elsewhere (a slow spread, then the orphan
        // path), the ones still orphaned are counted too, and the run says so
        if failed_over_at.is_some() {
            assert!(min_after as usize + 5 >= cameras, "{summary}");
        } else {
            println!(
                "district: the leader was killed at the cap, before the five's cameras all ran elsewhere: fewest holders {min_after} counts those"
            );
        }
    } else {
        println!(
            "district: an outage of {outage_s:.1} s ({failing_s} s of failed writes), past the protocol's 10 s: the fence stopped {stopped} cameras before their leases could lapse"
        );
    }
}
