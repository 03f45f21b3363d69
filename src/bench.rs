//! `vigil bench`: end-to-end throughput over N concurrent streams, and the two floors on the same
//! streams.
//!
//! Each configuration runs in a child process (`vigil bench` re-executes itself), so that peak
//! RSS is that configuration's own:
//! - **run**: the whole worker (`control::run`) on N copies of the first camera of the pipeline
//!   (its rules, mask and zone), each playing `clip` with `realtime = false`, i.e. as fast as
//!   analysis allows and every analysis frame analysed: analysed frames/s is the throughput.
//!   Reports frames dropped, p50/p95 latency per model, event latency (violating frame → event
//!   recorded in the outbox, which includes waiting for the clip's post-roll), peak RSS (VmHWM),
//!   and heap allocations per analysed frame (counted by this crate's global allocator; C
//!   libraries' own allocations — GStreamer, ONNX Runtime — are not seen by it).
//! - **decode floor**: the same worker and streams with no rules (GStreamer decode, conversion,
//!   privacy mask, tamper checks; no inference).
//! - **inference floor**: the clip's analysis frames decoded once into memory, then the rule's
//!   inference (face detector on the rule's region, classifier on eligible faces) over N × frames
//!   on `models.instances` threads, no gating. Also measured with the face detector batched two
//!   frames at a time, to show whether batching across cameras helps on this machine.
//!
//! Efficiency = achieved / min(floors). With gating on, frames whose region did not change are not
//! inferred, so achieved can exceed the inference floor.

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
    let (tmpl_raw, tmpl) = (p.raw.cameras[0].clone(), p.cameras[0].clone());
    q.raw.cameras.clear();
    q.cameras.clear();
    for i in 0..n {
        let id = format!("bench-{i}");
        let mut rc = tmpl_raw.clone();
        rc.id = id.clone();
        let mut c = tmpl.clone();
        c.id = id;
        c.source = Source::File { path: clip.to_path_buf(), looping: false, realtime: false };
        c.analysis_source = sub.map(|s| Source::File { path: s.to_path_buf(), looping: false, realtime: false });
        c.tamper.moved_ncc = -1.0;
        if !rules {
            rc.rules.clear();
            c.rules = Default::default();
        }
        q.raw.cameras.push(rc);
        q.cameras.push(c);
    }
    q.raw.analysis.gate = gate;
    q.raw.publish.nats_url = None;
    q.nats = None;
    q.raw.control.watch_file = false;
    q.raw.worker.http = None;
    q.data_dir = dir.to_path_buf();
    q.store_url = dir.join("store").to_string_lossy().into_owned();
    q.key_path = dir.join("keys/signing.key");
    q.raw.signing.generate_if_missing = true;
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
    let q = bench_pipeline(p, n, clip, gate, rules, &dir, sub);
    let cpu0 = cpu_s();
    gstreamer::init()?;
    crate::telemetry::probe::enable();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let a0 = ALLOCATIONS.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let summary = rt.block_on(crate::control::run(q, Arc::new(AtomicBool::new(false))))?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_s() - cpu0;
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
    let mut ev: Vec<f64> = probe
        .raised
        .iter()
        .filter_map(|(id, t)| probe.recorded.get(id).map(|r| r.duration_since(*t).as_secs_f64()))
        .collect();
    let failed = summary.failed_cameras().len();
    if failed > 0 {
        bail!("{failed} camera(s) failed in the benchmark run: {:?}", summary.cameras);
    }
    Ok(json!({
        "streams": n, "gate": gate, "rules": rules, "wall_s": wall, "analysed": analysed,
        "fps": analysed as f64 / wall, "dropped": dropped, "inferred": inferred, "gated": gated,
        "latency": lat, "events": summary.events,
        "event_latency_p50_s": quantile(&mut ev, 0.5), "event_latency_max_s": ev.iter().cloned().fold(f64::NAN, f64::max),
        "cpu_s": cpu, "cpu_ms_per_frame": cpu * 1e3 / analysed.max(1) as f64,
        "peak_rss_mb": peak_rss_mb(), "allocations_per_frame": allocs as f64 / analysed.max(1) as f64,
        "hot_path_allocations_per_frame": hot as f64 / hot_frames.max(1) as f64,
    }))
}

fn child_infer(p: &Pipeline, n: usize, clip: &Path) -> Result<Value> {
    let frames = crate::ingest::analysis_frames(clip, p.raw.analysis.fps, p.raw.analysis.width)?;
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
    let total = n * frames.len();
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
                        let roi = crate::rules::roi(st.zone.as_ref(), group[0].width, group[0].height);
                        let found = m.face.detect_batch(&group, roi, rule.input_width, rule.face_threshold as f32)?;
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

/// Runs one configuration in a child process; `sub`: the sub stream analysed instead of `clip`.
fn spawn(spec: &str, pipeline: &Path, clip: &Path, sub: Option<&Path>) -> Result<Value> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(s) = sub {
        cmd.env("VIGIL_BENCH_SUB", s);
    }
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

pub fn run(p: Pipeline, streams: &[usize], clip: &Path, compare_gating: bool, json_out: Option<&Path>) -> Result<()> {
    let clip: PathBuf = std::fs::canonicalize(clip).with_context(|| format!("clip {}", clip.display()))?;
    if let Ok(spec) = std::env::var("VIGIL_BENCH_CHILD") {
        return child(&p, &spec, &clip);
    }
    if !p.cameras[0].rules.configs().iter().any(|r| r.kind() == crate::rules::RuleKind::NoMask) {
        bail!("{}: the first camera needs a no_mask rule (its rule is what the benchmark runs)", p.file.display());
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
    println!(
        "machine: {cpu}, {cores} cores; clip {}; analysis {} fps at {} px; models.instances {}, intra_threads {}\n",
        clip.display(),
        p.raw.analysis.fps,
        p.raw.analysis.width,
        p.raw.models.instances,
        p.raw.models.intra_threads
    );
    table_header(&[
        "N",
        "gating",
        "analysed fps",
        "inferred / gated",
        "dropped",
        "face p50 / p95 ms",
        "event latency p50 s",
        "peak RSS MB",
        "RSS target MB",
        "allocs/frame: hot path / all",
        "decode floor fps",
        "inference floor fps (batch 2)",
        "efficiency",
    ]);
    let pf = p.file.clone();
    let mut rows = Vec::new();
    for &n in streams {
        let decode = spawn(&format!("decode:{n}"), &pf, &clip, None)?;
        let infer = spawn(&format!("infer:{n}"), &pf, &clip, None)?;
        let gates: &[bool] = if compare_gating { &[true, false] } else { &[p.raw.analysis.gate] };
        for &g in gates {
            let r = spawn(&format!("run:{n}:{}", g as u8), &pf, &clip, None)?;
            let floor = decode["fps"].as_f64().unwrap_or(0.0).min(infer["fps"].as_f64().unwrap_or(0.0));
            let fps = r["fps"].as_f64().unwrap_or(0.0);
            let face = &r["latency"][&p.raw.models.face];
            println!(
                "| {n} | {} | {:.1} | {} / {} | {} | {:.0} / {:.0} | {:.2} | {:.0} | {:.0} | {:.2} / {:.0} | {:.1} | {:.1} ({:.1}) | {:.2} |",
                if g { "on" } else { "off" },
                fps,
                r["inferred"],
                r["gated"],
                r["dropped"],
                face["p50_ms"].as_f64().unwrap_or(f64::NAN),
                face["p95_ms"].as_f64().unwrap_or(f64::NAN),
                r["event_latency_p50_s"].as_f64().unwrap_or(f64::NAN),
                r["peak_rss_mb"].as_f64().unwrap_or(0.0),
                60.0 + 15.0 * n as f64,
                r["hot_path_allocations_per_frame"].as_f64().unwrap_or(0.0),
                r["allocations_per_frame"].as_f64().unwrap_or(0.0),
                decode["fps"].as_f64().unwrap_or(0.0),
                infer["fps"].as_f64().unwrap_or(0.0),
                infer["fps_batch2"].as_f64().unwrap_or(0.0),
                fps / floor.max(1e-9),
            );
            rows.push(json!({"n": n, "run": r, "decode_floor": decode, "inference_floor": infer, "efficiency": fps / floor.max(1e-9)}));
        }
    }
    if let Some(path) = json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&json!({"machine": cpu, "cores": cores, "rows": rows}))?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
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
        p.raw.analysis.fps,
        p.raw.analysis.width
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
        let run = spawn(&format!("run:1:{}", p.raw.analysis.gate as u8), &pf, &main, s)?;
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
