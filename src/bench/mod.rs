//! `vigil bench`: end-to-end throughput over N concurrent streams, and the two floors on the same
//! streams.
//!
//! Each configuration runs in a child process (`vigil bench` re-executes itself), so that peak
//! RSS is that configuration's own:
//! - **run**: the whole worker (`control::run`) on N copies of the first camera of the pipeline
//!   (its rules, mask and zone), each playing `clip` with `realtime = false`, i.e. as fast as
//!   analysis allows and every analysis frame analysed: analysed frames/s is the throughput.
//!   Reports frames dropped, p50/p95 latency per model, event latency (violating frame → event
//!   recorded in the outbox, which includes waiting for the clip's post-roll), peak RSS (VmHWM, or
//!   the highest exact `/proc/self/smaps` sample when VmHWM's approximate counters lag below it),
//!   and heap allocations per analysed frame (counted by this crate's global allocator; C
//!   libraries' own allocations — GStreamer, ONNX Runtime — are not seen by it).
//! - **decode floor**: the same worker and streams with no rules (GStreamer decode, conversion,
//!   privacy mask, tamper checks; no inference).
//! - **inference floor**: the clip's analysis frames decoded once into memory, then the rule's
//!   inference (face detector on the rule's region, classifier on eligible faces) over N × frames
//!   on `models.instances` threads, no gating. Also measured with the face detector batched two
//!   frames at a time, to show whether batching across cameras helps on this machine.
//!
//! Efficiency = achieved / min(floors), on the steady part of each run (first to last analysed
//! frame, without start-up and the clip finishing at the end). With gating on, frames whose region
//! did not change are not inferred, and in every run a face whose track has raised its event is
//! not classified again, so achieved can exceed the inference floor.
//!
//! While a child runs, [`sample::Sampler`] records its memory by mapping kind at the peak and its
//! CPU by thread group. With nats-server found (PATH or `.deps/bin`), the children publish to a
//! JetStream server the parent starts, and event latency runs to JetStream's acknowledgement.

pub mod gpu;
pub mod sample;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::config::{Pipeline, Source};
use crate::detect::ModelPool;
use crate::frame::RgbFrame;

use crate::telemetry::alloc::{ALLOCATIONS, peak_rss_mb};

/// Prints a Markdown table's header row and separator.
fn table_header(columns: &[&str]) {
    println!("| {} |", columns.join(" | "));
    println!("|{}", " --- |".repeat(columns.len()));
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The pipeline with N copies of its first camera playing `clip` as fast as analysis allows.
/// `sub`: a sub stream of the same scene, analysed instead of `clip` (which then feeds the clip
/// only).
fn bench_pipeline(
    p: &Pipeline,
    n: usize,
    clip: &Path,
    gate: bool,
    rules: bool,
    dir: &Path,
    sub: Option<&Path>,
) -> Pipeline {
    let mut q = p.clone();
    let (tmpl_raw, tmpl) = (p.camera_configs[0].clone(), p.cameras[0].clone());
    q.camera_configs.clear();
    q.cameras.clear();
    // `vigil bench --realtime`: as cameras stream
    let realtime = std::env::var_os("VIGIL_BENCH_REALTIME").is_some();
    for i in 0..n {
        let id = format!("bench-{i}");
        let mut rc = tmpl_raw.clone();
        rc.id = id.clone();
        let mut c = tmpl.clone();
        c.id = id;
        c.source = Source::File { path: clip.to_path_buf(), looping: false, realtime };
        c.analysis_source = sub.map(|s| Source::File { path: s.to_path_buf(), looping: false, realtime });
        c.tamper.moved_ncc = -1.0;
        if !rules {
            rc.rules.clear();
            c.rules = Default::default();
        }
        q.camera_configs.push(rc);
        q.cameras.push(c);
    }
    q.settings.analysis.gate = gate;
    q.settings.publish.nats_url = None;
    q.nats = None;
    q.settings.control.watch_file = false;
    q.settings.worker.http = None;
    q.data_dir = dir.to_path_buf();
    q.store_url = dir.join("store").to_string_lossy().into_owned();
    q.key_path = dir.join("keys/signing.key");
    q.settings.signing.generate_if_missing = true;
    q
}

/// CPU seconds this process has used (user + system).
fn cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn child_run(p: &Pipeline, n: usize, clip: &Path, gate: bool, rules: bool, sub: Option<&Path>) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir)?;
    let mut q = bench_pipeline(p, n, clip, gate, rules, &dir, sub);
    if let Ok(url) = std::env::var("VIGIL_BENCH_NATS") {
        q.settings.publish.nats_url = Some(url.clone());
        q.nats = Some(crate::util::nats::Endpoint::new(&url, Default::default()));
    }
    let acked = q.nats.is_some();
    let sampler = sample::Sampler::start(std::time::Duration::from_millis(250));
    let cpu0 = cpu_s();
    gstreamer::init()?;
    crate::telemetry::probe::enable();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let a0 = ALLOCATIONS.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let summary = rt.block_on(crate::control::run(q, Arc::new(AtomicBool::new(false))))?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_s() - cpu0;
    let span = crate::telemetry::probe::frames_span_s();
    let samples = sampler.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let allocs = ALLOCATIONS.load(Ordering::Relaxed) - a0;
    let probe = crate::telemetry::probe::take().unwrap_or_default();
    let analysed: u64 = summary.cameras.values().map(|c| c.analysed).sum();
    let dropped: u64 = summary.cameras.values().map(|c| c.dropped).sum();
    let inferred: u64 = summary.cameras.values().map(|c| c.inferred).sum();
    let gated: u64 = summary.cameras.values().map(|c| c.gated).sum();
    let hot: u64 = summary.cameras.values().map(|c| c.hot_allocations).sum();
    let hot_frames: u64 = summary.cameras.values().map(|c| c.hot_frames).sum();
    let mut lat = serde_json::Map::new();
    for (m, d) in probe.inference {
        let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        lat.insert(m, json!({"p50_ms": quantile(&mut v, 0.5), "p95_ms": quantile(&mut v, 0.95), "n": v.len()}));
    }
    // to JetStream's acknowledgement when publishing, else to the outbox record
    let ends = if acked { &probe.acked } else { &probe.recorded };
    let mut ev: Vec<f64> =
        probe.raised.iter().filter_map(|(id, t)| ends.get(id).map(|r| r.duration_since(*t).as_secs_f64())).collect();
    let unmatched = probe.raised.len() - ev.len();
    // steady: first to last analysed frame, over the frames between them
    let steady = span.map_or(f64::NAN, |s| analysed.saturating_sub(1) as f64 / s);
    let failed = summary.failed_cameras().len();
    if failed > 0 {
        bail!("{failed} camera(s) failed in the benchmark run: {:?}", summary.cameras);
    }
    Ok(json!({
        "streams": n, "gate": gate, "rules": rules, "wall_s": wall, "analysed": analysed,
        "fps": analysed as f64 / wall, "dropped": dropped, "inferred": inferred, "gated": gated,
        "latency": lat, "events": summary.events,
        "steady_fps": steady, "event_latency_to": if acked { "jetstream_ack" } else { "outbox" },
        "event_latency_p50_s": quantile(&mut ev, 0.5), "event_latency_p95_s": quantile(&mut ev, 0.95),
        "event_latency_max_s": ev.iter().cloned().fold(f64::NAN, f64::max), "events_without_end": unmatched,
        // VmHWM comes from the kernel's lazily updated per-thread counters (proc(5): "inaccurate"),
        // and measured up to 90 MB below an exact smaps sample of the same run: the peak is at
        // least that sample
        "peak_rss_mb": peak_rss_mb().max(samples.peak.rss_mb),
        "memory_at_peak": samples.peak, "cpu_s_by_thread": samples.cpu_by_thread,
        "cpu_s": cpu, "cpu_ms_per_frame": cpu * 1e3 / analysed.max(1) as f64,
        "allocations_per_frame": allocs as f64 / analysed.max(1) as f64,
        "hot_path_allocations_per_frame": hot as f64 / hot_frames.max(1) as f64,
    }))
}

fn child_infer(p: &Pipeline, n: usize, clip: &Path) -> Result<Value> {
    let frames = crate::ingest::analysis_frames(clip, p.settings.analysis.fps, p.settings.analysis.width)?;
    if frames.is_empty() {
        bail!("{}: no frames decoded", clip.display());
    }
    let rule = p.cameras[0]
        .rules
        .configs()
        .iter()
        .find_map(|r| match r {
            crate::rules::RuleConfig::NoMask(r) => Some(r.clone()),
            _ => None,
        })
        .context("the first camera has no no_mask rule")?;
    let mask = p.cameras[0].mask.as_ref().map(|m| m.raster(frames[0].width, frames[0].height));
    let frames: Vec<RgbFrame> = frames
        .into_iter()
        .map(|mut f| {
            if let Some(m) = &mask {
                let s = f.stride();
                m.apply_rgb(&mut f.data, s);
            }
            f
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let pool: Arc<ModelPool> = rt.block_on(crate::control::load_models(p))?.context("no models")?;
    let threads = pool.len().min(n).max(1);
    let frames = Arc::new(frames);
    // a rate: 300 frames measure it as well as N × the clip, in a fraction of the time
    let total = (n * frames.len()).min(300);
    let st = crate::rules::no_mask::NoMask::new(rule.clone());
    let st = Arc::new(st);
    let infer_all = |batch: usize, total: usize| -> Result<(f64, f64)> {
        let next = Arc::new(AtomicU64::new(0));
        let a0 = ALLOCATIONS.load(Ordering::Relaxed);
        let t0 = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let mut hs = Vec::new();
            for t in 0..threads {
                let (next, frames, pool, st, rule) = (next.clone(), frames.clone(), pool.clone(), st.clone(), &rule);
                hs.push(s.spawn(move || -> Result<()> {
                    loop {
                        let k = next.fetch_add(batch as u64, Ordering::Relaxed) as usize;
                        if k >= total {
                            return Ok(());
                        }
                        let group: Vec<&RgbFrame> =
                            (k..(k + batch).min(total)).map(|i| &frames[i % frames.len()]).collect();
                        let mut set = pool.get(t);
                        let m = set.no_mask.as_mut().context("models")?;
                        let (w, h) = (group[0].width, group[0].height);
                        let zone = crate::rules::roi(st.zone.as_ref(), w, h);
                        // as the rule looks at a whole region: its zone at the frame's zoom
                        let (roi, iw) = st.detector_region(zone, w, crate::rules::Look::Full);
                        let found = m.face.detect_batch(&group, roi, iw, rule.face_threshold as f32)?;
                        for (f, mut faces) in group.iter().zip(found) {
                            st.keep_eligible(&mut faces, f.width, f.height);
                            let boxes: Vec<_> = faces.iter().map(|f| f.bbox).collect();
                            m.mask.no_mask_prob(f, &boxes, rule.crop_margin as f32)?;
                        }
                    }
                }));
            }
            for h in hs {
                h.join().map_err(|_| anyhow::anyhow!("inference thread panicked"))??;
            }
            Ok(())
        })?;
        let fps = total as f64 / t0.elapsed().as_secs_f64();
        Ok((fps, (ALLOCATIONS.load(Ordering::Relaxed) - a0) as f64 / total as f64))
    };
    infer_all(1, threads * 4)?; // warm-up
    let (fps1, alloc1) = infer_all(1, total)?;
    let (fps2, _) = infer_all(2, total)?;
    Ok(
        json!({"streams": n, "threads": threads, "frames": total, "fps": fps1, "fps_batch2": fps2, "allocations_per_frame": alloc1}),
    )
}

/// Child entry: `VIGIL_BENCH_CHILD=run:N:gate|decode:N|infer:N` (with `VIGIL_BENCH_SUB`, the
/// sub stream analysed instead of the clip).
fn child(p: &Pipeline, spec: &str, clip: &Path) -> Result<()> {
    let mut p = p.clone();
    if std::env::var_os("VIGIL_BENCH_GPU").is_some() {
        use crate::detect::runtime::ExecutionProvider as E;
        p.settings.models.execution_providers = vec![E::Tensorrt, E::Cuda, E::Cpu];
    }
    let p = &p;
    let parts: Vec<&str> = spec.split(':').collect();
    let n: usize = parts.get(1).and_then(|v| v.parse().ok()).context("bench child: N")?;
    let sub = std::env::var_os("VIGIL_BENCH_SUB").map(PathBuf::from);
    let sub = sub.as_deref();
    let v = match parts[0] {
        "run" => child_run(p, n, clip, parts.get(2) == Some(&"1"), true, sub)?,
        "decode" => child_run(p, n, clip, false, false, sub)?,
        "infer" => child_infer(p, n, clip)?,
        other => bail!("bench child: unknown {other}"),
    };
    println!("VIGIL_BENCH {v}");
    Ok(())
}

/// Environment variables every later child gets.
static CHILD_ENV: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn child_env(k: &str, v: &str) {
    CHILD_ENV.lock().unwrap_or_else(|p| p.into_inner()).push((k.to_string(), v.to_string()));
}

/// Runs one configuration in a child process; `sub`: the sub stream analysed instead of `clip`.
fn spawn(spec: &str, pipeline: &Path, clip: &Path, sub: Option<&Path>) -> Result<Value> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(s) = sub {
        cmd.env("VIGIL_BENCH_SUB", s);
    }
    cmd.envs(CHILD_ENV.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
    let out = cmd
        .args(["bench", "--pipeline"])
        .arg(pipeline)
        .arg("--clip")
        .arg(clip)
        .env("VIGIL_BENCH_CHILD", spec)
        .env("VIGIL_LOG", std::env::var("VIGIL_LOG").unwrap_or_else(|_| "warn".into()))
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("VIGIL_BENCH "))
        .with_context(|| format!("bench {spec} failed ({})", out.status))?;
    Ok(serde_json::from_str(line)?)
}

/// What `vigil bench` (the scaling run) is asked for.
pub struct Options<'a> {
    pub streams: &'a [usize],
    pub clip: &'a Path,
    pub compare_gating: bool,
    pub json_out: Option<&'a Path>,
    /// Write `<stem>.svg` and `<stem>.png`: analysed fps and peak RSS against N.
    pub plot: Option<&'a Path>,
    /// Run on the GPU (TensorRT / CUDA providers, NVDEC), after checking they are there.
    pub gpu: bool,
    /// Play the clips at their own pace (cameras), not as fast as analysis allows.
    pub realtime: bool,
}

/// nats-server with JetStream on a free loopback port for the children, stopped on drop.
struct BenchNats {
    child: std::process::Child,
    url: String,
    dir: PathBuf,
}

impl Drop for BenchNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// nats-server from PATH or a `.deps/bin` beside the executable's ancestors.
fn find_nats_server() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).take(4).map(|a| a.join(".deps/bin")));
    }
    dirs.into_iter().map(|d| d.join("nats-server")).find(|p| p.is_file())
}

fn start_nats() -> Result<Option<BenchNats>> {
    let Some(bin) = find_nats_server() else { return Ok(None) };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("vigil-bench-nats-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir)?;
    let child = std::process::Command::new(&bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let n = BenchNats { child, url: format!("nats://127.0.0.1:{port}"), dir };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed().as_secs() > 10 {
            bail!("{}: not listening on 127.0.0.1:{port} after 10 s", bin.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(Some(n))
}

/// `v[key]` as f64, NaN when absent.
fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

pub fn run(p: Pipeline, o: Options) -> Result<()> {
    let clip: PathBuf = std::fs::canonicalize(o.clip).with_context(|| format!("clip {}", o.clip.display()))?;
    if let Ok(spec) = std::env::var("VIGIL_BENCH_CHILD") {
        return child(&p, &spec, &clip);
    }
    if !p.cameras[0].rules.configs().iter().any(|r| r.kind() == crate::rules::RuleKind::NoMask) {
        bail!("{}: the first camera needs a no_mask rule (its rule is what the benchmark runs)", p.file.display());
    }
    let device = if o.gpu {
        let g = gpu::GpuCheck::probe(p.settings.models.ort_library.as_deref());
        g.require()?;
        // the children pick NVDEC first (codec.rs lists hardware decoders first) and the GPU providers
        child_env("VIGIL_BENCH_GPU", "1");
        g.describe()
    } else {
        "CPU only".to_string()
    };
    if o.realtime {
        child_env("VIGIL_BENCH_REALTIME", "1");
    }
    let nats = start_nats()?;
    if let Some(n) = &nats {
        child_env("VIGIL_BENCH_NATS", &n.url);
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let fps_cam = p.settings.analysis.fps;
    println!(
        "machine: {cpu}, {cores} cores; {device}; clip {} ({}); analysis {} fps at {} px; models.instances {}, intra_threads {}; event latency to {}\n",
        clip.display(),
        if o.realtime { "played at its own pace, as a camera streams" } else { "played as fast as analysis allows" },
        fps_cam,
        p.settings.analysis.width,
        p.settings.models.instances,
        p.settings.models.threads(),
        if nats.is_some() {
            "JetStream's ack (nats-server started for the run)"
        } else {
            "the outbox record (no nats-server found)"
        }
    );
    table_header(&[
        "N",
        "gating",
        "analysed fps (wall / steady)",
        "dropped",
        "face p50 / p95 ms",
        "event latency p50 / p95 s",
        "peak RSS MB",
        "MB per added camera",
        "CPU ms / frame",
        "decode floor fps",
        "inference floor fps (batch 2)",
        "efficiency",
    ]);
    let pf = p.file.clone();
    let mut rows = Vec::new();
    let mut prev: Option<(usize, f64)> = None;
    for &n in o.streams {
        let decode = spawn(&format!("decode:{n}"), &pf, &clip, None)?;
        let infer = spawn(&format!("infer:{n}"), &pf, &clip, None)?;
        let gates: &[bool] = if o.compare_gating { &[true, false] } else { &[p.settings.analysis.gate] };
        for &g in gates {
            let r = spawn(&format!("run:{n}:{}", g as u8), &pf, &clip, None)?;
            let decode_fps = match num(&decode, "steady_fps") {
                f if f.is_finite() => f,
                _ => num(&decode, "fps"),
            };
            let floor = decode_fps.min(num(&infer, "fps"));
            let steady = num(&r, "steady_fps");
            let face = &r["latency"][&p.settings.models.face];
            let rss = num(&r, "peak_rss_mb");
            let per_cam = match prev {
                Some((pn, prss)) if g == p.settings.analysis.gate && n > pn => {
                    format!("{:.1}", (rss - prss) / (n - pn) as f64)
                }
                _ => "–".into(),
            };
            let latency = match (num(&r, "event_latency_p50_s"), num(&r, "event_latency_p95_s")) {
                (a, b) if a.is_finite() && b.is_finite() => format!("{a:.2} / {b:.2}"),
                _ => "– (no event)".into(),
            };
            println!(
                "| {n} | {} | {:.1} / {:.1} | {} | {:.0} / {:.0} | {latency} | {:.0} | {per_cam} | {:.1} | {:.1} | {:.1} ({:.1}) | {:.2} |",
                if g { "on" } else { "off" },
                num(&r, "fps"),
                steady,
                r["dropped"],
                num(face, "p50_ms"),
                num(face, "p95_ms"),
                rss,
                num(&r, "cpu_ms_per_frame"),
                decode_fps,
                num(&infer, "fps"),
                num(&infer, "fps_batch2"),
                steady / floor.max(1e-9),
            );
            if g == p.settings.analysis.gate {
                prev = Some((n, rss));
            }
            rows.push(json!({"n": n, "gate": g, "run": r, "decode_floor": decode, "inference_floor": infer,
                "efficiency": steady / floor.max(1e-9)}));
        }
    }
    let main: Vec<&Value> = rows.iter().filter(|r| r["gate"].as_bool() == Some(p.settings.analysis.gate)).collect();
    println!("\nresident memory at the peak sample, MB (`/proc/self/smaps` of the run):\n");
    table_header(&[
        "N",
        "RSS",
        "ONNX Runtime library",
        "GStreamer + codec libraries",
        "other libraries",
        "vigil",
        "heap",
        "anonymous (arenas, tensors, frames, stacks)",
        "other",
    ]);
    for r in &main {
        let m = &r["run"]["memory_at_peak"];
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r["n"],
            num(m, "rss_mb"),
            num(m, "onnxruntime_mb"),
            num(m, "gstreamer_codecs_mb"),
            num(m, "other_libraries_mb"),
            num(m, "vigil_mb"),
            num(m, "heap_mb"),
            num(m, "anonymous_mb"),
            num(m, "other_mb")
        );
    }
    println!("\nCPU seconds by thread (the run; decode-only run for comparison):\n");
    table_header(&["N", "run: CPU s by thread group (share)", "decode-only run"]);
    let top = |v: &Value| -> String {
        let groups = v["cpu_s_by_thread"].as_array().cloned().unwrap_or_default();
        let total: f64 = groups.iter().filter_map(|g| g[1].as_f64()).sum();
        let mut shown: Vec<String> = groups
            .iter()
            .take(5)
            .map(|g| {
                format!(
                    "{} {:.1} ({:.0} %)",
                    g[0].as_str().unwrap_or("?"),
                    g[1].as_f64().unwrap_or(0.0),
                    100.0 * g[1].as_f64().unwrap_or(0.0) / total.max(1e-9)
                )
            })
            .collect();
        if groups.len() > 5 {
            let rest: f64 = groups.iter().skip(5).filter_map(|g| g[1].as_f64()).sum();
            shown.push(format!("other {rest:.1}"));
        }
        shown.join(", ")
    };
    for r in &main {
        println!("| {} | {} | {} |", r["n"], top(&r["run"]), top(&r["decode_floor"]));
    }
    if let Some(last) = main.last() {
        let cpu_ms = num(&last["run"], "cpu_ms_per_frame");
        let inf = &last["inference_floor"];
        let inf_ms = 1e3 * num(inf, "threads") / num(inf, "fps");
        println!(
            "\ncapacity: at N = {}, {cpu_ms:.1} CPU ms per analysed frame for the whole worker ({inf_ms:.1} ms of it the rule's inference) \
             → {:.1} cameras per core at {fps_cam} fps, {:.0} on this machine's {cores} cores",
            last["n"],
            1e3 / (cpu_ms * fps_cam),
            cores as f64 * 1e3 / (cpu_ms * fps_cam)
        );
    }
    if let Some(stem) = o.plot {
        scaling_plot(&main, &device).write(stem, (800, 480)).with_context(|| format!("plot {}", stem.display()))?;
        println!("\nplot: {} and {}", stem.with_extension("svg").display(), stem.with_extension("png").display());
    }
    if let Some(path) = o.json_out {
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&json!({"machine": cpu, "cores": cores, "device": device, "rows": rows}))?,
        )
        .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Analysed fps (steady) and peak RSS against N.
fn scaling_plot(rows: &[&Value], device: &str) -> crate::util::plot::Plot {
    let pts = |f: &dyn Fn(&Value) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (r["n"].as_f64().unwrap_or(0.0), f(r))).filter(|p| p.1.is_finite()).collect()
    };
    let fps = pts(&|r| num(&r["run"], "steady_fps"));
    let floor = pts(&|r| num(&r["inference_floor"], "fps"));
    let rss = pts(&|r| num(&r["run"], "peak_rss_mb"));
    let max = |v: &[(f64, f64)]| v.iter().map(|p| p.1).fold(1.0, f64::max);
    let n_max = rows.iter().filter_map(|r| r["n"].as_f64()).fold(1.0, f64::max);
    crate::util::plot::Plot {
        title: format!("vigil bench: analysed fps and peak RSS against streams ({device})"),
        x_label: "concurrent streams N".into(),
        y_label: "analysed frames / s".into(),
        x_range: (0.0, n_max + 1.0),
        y_range: (0.0, max(&fps).max(max(&floor)) * 1.15),
        series: vec![("analysed fps (steady)".into(), fps), ("inference floor fps".into(), floor)],
        right: Some(("peak RSS MB".into(), (0.0, max(&rss) * 1.15), vec![("peak RSS MB".into(), rss)])),
        ..Default::default()
    }
}

/// Re-encodes `src` to H.264 MP4 at `width`×`height` (a camera's main or sub stream of the same
/// scene).
fn encode_h264(src: &Path, dst: &Path, width: u32, height: u32) -> Result<()> {
    use gstreamer::prelude::*;
    gstreamer::init()?;
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! videoscale ! video/x-raw,width={width},height={height},pixel-aspect-ratio=1/1 ! \
         x264enc speed-preset=veryfast key-int-max=25 bframes=0 ! h264parse ! mp4mux ! filesink location=\"{}\"",
        src.display(),
        dst.display()
    );
    let p = gstreamer::parse::launch(&desc)?;
    p.set_state(gstreamer::State::Playing)?;
    let bus = p.bus().context("bus")?;
    let r = match bus.timed_pop_filtered(
        gstreamer::ClockTime::from_seconds(600),
        &[gstreamer::MessageType::Eos, gstreamer::MessageType::Error],
    ) {
        Some(m) => match m.view() {
            gstreamer::MessageView::Error(e) => Err(anyhow::anyhow!("encode {}: {}", dst.display(), e.error())),
            _ => Ok(()),
        },
        None => Err(anyhow::anyhow!("encode {}: timed out", dst.display())),
    };
    p.set_state(gstreamer::State::Null)?;
    r
}

/// `vigil bench --sub-stream`: one 1920×1080 main stream analysed directly, and through a
/// 640×360 sub stream of the same scene (both made from `clip`): decode cost and analysed fps.
pub fn run_sub_stream(p: Pipeline, clip: &Path, json_out: Option<&Path>) -> Result<()> {
    let clip: PathBuf = std::fs::canonicalize(clip).with_context(|| format!("clip {}", clip.display()))?;
    if let Ok(spec) = std::env::var("VIGIL_BENCH_CHILD") {
        return child(&p, &spec, &clip);
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-sub-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir)?;
    let r = sub_stream_rows(&p, &clip, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let rows = r?;
    if let Some(path) = json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&json!({"rows": rows}))?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The two rows of [`run_sub_stream`], with the streams encoded into `dir`.
fn sub_stream_rows(p: &Pipeline, clip: &Path, dir: &Path) -> Result<Vec<Value>> {
    let (main, sub) = (dir.join("main-1080p.mp4"), dir.join("sub-360p.mp4"));
    encode_h264(clip, &main, 1920, 1080)?;
    encode_h264(clip, &sub, 640, 360)?;
    println!(
        "clip {} as a 1920×1080 main stream and a 640×360 sub stream (H.264); analysis {} fps at {} px\n",
        clip.display(),
        p.settings.analysis.fps,
        p.settings.analysis.width
    );
    table_header(&[
        "analysed stream",
        "decode-only fps",
        "decode CPU ms / analysed frame",
        "analysed fps (no_mask)",
        "CPU ms / analysed frame",
        "peak RSS MB",
        "events",
    ]);
    let pf = p.file.clone();
    let mut rows = Vec::new();
    for (name, s) in [("main 1920×1080 (directly)", None), ("sub 640×360 (analysis_source)", Some(sub.as_path()))] {
        let decode = spawn("decode:1", &pf, &main, s)?;
        let run = spawn(&format!("run:1:{}", p.settings.analysis.gate as u8), &pf, &main, s)?;
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {} |",
            f(&decode, "fps"),
            f(&decode, "cpu_ms_per_frame"),
            f(&run, "fps"),
            f(&run, "cpu_ms_per_frame"),
            f(&run, "peak_rss_mb"),
            run["events"]
        );
        rows.push(json!({"analysed": name, "decode": decode, "run": run}));
    }
    Ok(rows)
}
