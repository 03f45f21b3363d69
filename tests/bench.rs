//! `vigil bench`: the scaling run on the CPU (the twin of the GPU run), and `--gpu` on a machine
//! without a GPU. Figures are not asserted (they belong to the README's measured tables); what is
//! asserted is that each figure is measured on the path it names and adds up.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn bench_gpu_without_a_gpu_exits_2_and_names_each_missing_piece() {
    let (code, out, err) = run_capture(&["bench", "--gpu", "--streams", "1"], Duration::from_secs(60));
    assert_eq!(code, 2, "stdout {out}\nstderr {err}");
    assert!(err.contains("vigil bench --gpu cannot run on this machine"), "{err}");
    assert!(err.contains("no NVIDIA GPU present"), "{err}");
    assert!(err.contains("no CUDA execution provider"), "{err}");
    assert!(err.contains("no NVDEC decoder"), "{err}");
    // it stops before measuring anything
    assert!(!out.contains("| N |"), "{out}");
}

#[test]
fn bench_scaling_run_measures_each_n_its_memory_cpu_and_event_acks_and_plots_them() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let plot = dir.path().join("scaling");
    let (code, out, err) = run_capture(
        &["bench", "--streams", "1,2", "--json", json.to_str().unwrap(), "--plot", plot.to_str().unwrap()],
        Duration::from_secs(600),
    );
    assert_eq!(code, 0, "stdout {out}\nstderr {err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["device"], "CPU only");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["n"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2]);
    for r in rows {
        let n = r["n"].as_u64().unwrap();
        let run = &r["run"];
        // the bundled clip: 12 s at 5 analysis fps, every analysis frame analysed (no real time)
        assert_eq!(run["analysed"].as_u64(), Some(60 * n), "{run}");
        assert_eq!(run["dropped"].as_u64(), Some(0), "{run}");
        let (fps, steady) = (run["fps"].as_f64().unwrap(), run["steady_fps"].as_f64().unwrap());
        assert!(steady.is_finite() && steady >= fps, "steady {steady} excludes start-up, so ≥ wall {fps}");
        // one violation per stream, each event acknowledged by the JetStream server the bench ran
        assert_eq!(run["events"].as_u64(), Some(n), "{run}");
        assert_eq!(run["event_latency_to"], "jetstream_ack", "{run}");
        assert_eq!(run["events_without_end"].as_u64(), Some(0), "{run}");
        let (p50, p95) = (run["event_latency_p50_s"].as_f64().unwrap(), run["event_latency_p95_s"].as_f64().unwrap());
        assert!(p50 > 0.0 && p95 >= p50, "{p50} {p95}");
        // the memory breakdown adds up to the sampled RSS, which cannot exceed the peak
        let m = &run["memory_at_peak"];
        let parts: f64 = [
            "onnxruntime_mb",
            "gstreamer_codecs_mb",
            "other_libraries_mb",
            "vigil_mb",
            "heap_mb",
            "anonymous_mb",
            "other_mb",
        ]
        .iter()
        .map(|k| m[k].as_f64().unwrap())
        .sum();
        let rss = m["rss_mb"].as_f64().unwrap();
        assert!((parts - rss).abs() < 0.01, "{m}");
        assert!(rss > 0.0 && rss <= run["peak_rss_mb"].as_f64().unwrap() + 1.0, "{m} vs {run}");
        assert!(m["onnxruntime_mb"].as_f64().unwrap() > 0.0, "the ONNX Runtime library is mapped: {m}");
        // CPU by thread: the analysis threads (inference runs on them) did the most
        let threads = run["cpu_s_by_thread"].as_array().unwrap();
        assert_eq!(threads[0][0], "analyse", "{threads:?}");
        let sum: f64 = threads.iter().map(|t| t[1].as_f64().unwrap()).sum();
        assert!(sum <= run["cpu_s"].as_f64().unwrap() * 1.05 + 0.5, "threads {sum} vs process {}", run["cpu_s"]);
        // the decode floor runs no model, the inference floor no decoder
        assert!(r["decode_floor"]["inferred"].as_u64() == Some(0), "{}", r["decode_floor"]);
        assert_eq!(r["inference_floor"]["frames"].as_u64(), Some(60 * n));
    }
    for header in
        ["| N | gating | analysed fps (wall / steady)", "resident memory at the peak sample", "CPU seconds by thread"]
    {
        assert!(out.contains(header), "{header}: {out}");
    }
    assert!(out.contains("cameras per core at 5 fps"), "{out}");
    let png = image::open(plot.with_extension("png")).expect("the plot is a PNG");
    assert_eq!((png.width(), png.height()), (800, 480));
    let svg = std::fs::read_to_string(plot.with_extension("svg")).unwrap();
    assert!(svg.contains("peak RSS MB") && svg.contains("analysed fps (steady)"), "{svg}");
}

#[test]
fn bench_realtime_plays_the_clip_at_its_own_pace_and_counts_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let (code, out, err) = run_capture(
        &["bench", "--streams", "1", "--realtime", "--json", json.to_str().unwrap()],
        Duration::from_secs(600),
    );
    assert_eq!(code, 0, "stdout {out}\nstderr {err}");
    assert!(out.contains("played at its own pace"), "the table says how the clip was played: {out}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let run = &v["rows"][0]["run"];
    // the bundled clip lasts 12 s: played as a camera streams it, the run cannot be shorter (as
    // fast as analysis allows, this machine analyses its 60 frames in about 4 s)
    assert!(run["wall_s"].as_f64().unwrap() >= 11.0, "{run}");
    // every analysis frame is either analysed or dropped and counted
    let (analysed, dropped) = (run["analysed"].as_u64().unwrap(), run["dropped"].as_u64().unwrap());
    assert_eq!(analysed + dropped, 60, "{run}");
    assert_eq!(run["events"].as_u64(), Some(1), "{run}");
}
