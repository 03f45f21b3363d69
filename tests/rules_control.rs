//! The `utensils_left` rule with zones, dwell and hours on a real clip; hot reload of rule
//! parameters from NATS KV (a real nats-server) and from the pipeline file, validated and audited.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn utensils_left_fires_once_per_object_inside_zone_and_hours_only() {
    // the coffee clip pans over a cup on a saucer; a zone over the middle of the frame
    // site-local hours (the test site is UTC+08:00): a window that starts two hours from now
    let now_h = (chrono::Utc::now() + chrono::Duration::hours(8)).format("%H").to_string().parse::<u32>().unwrap();
    let closed = format!("{:02}:00-{:02}:00", (now_h + 2) % 24, (now_h + 3) % 24);
    let rule = "[[cameras.rules]]\nkind = \"utensils_left\"\ndwell_s = 3\nmax_gap_s = 5\n\
                zone = [[0.1, 0.0], [0.9, 0.0], [0.9, 1.0], [0.1, 1.0]]\n";
    let cams = format!(
        "[[cameras]]\nid = \"counter\"\nsource = \"{src}\"\nrealtime = false\n{rule}\
         [[cameras]]\nid = \"closed\"\nsource = \"{src}\"\nrealtime = false\n{rule}hours = \"{closed}\"\n",
        src = sample("coffee-pan.mp4").display()
    );
    let site = Site::new("[clip]\npre_roll_s = 1\npost_roll_s = 1\n", &cams);
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(240));
    assert_eq!(code, 0, "{log}");
    let out: Vec<serde_json::Value> = site.outbox().into_iter().map(|e| e["payload"].clone()).collect();
    assert!(out.iter().all(|e| e["camera"] == "counter"), "outside its hours a camera raises nothing: {out:#?}");
    // 12 s of a cup in the zone, dwell 3 s: one object, one episode, one item (it used to fire
    // again every further 3 s: the demo queue filled with one cup)
    assert_eq!(out.len(), 1, "{} events: {out:#?}", out.len());
    let d = out[0]["detections"].as_array().unwrap().iter().find(|d| d["trigger"] == true).unwrap().clone();
    assert_eq!(out[0]["rule"]["kind"], "utensils_left");
    assert_eq!(d["label"], "cup", "{d}");
    assert!(d["dwell_s"].as_f64().unwrap() >= 3.0, "{d}");
    // the zone is in the manifest and drawn (cyan) in the annotated snapshot, not in the plain one
    let e = &out[0];
    assert_eq!(e["zone"][0], serde_json::json!([0.1, 0.0]));
    let ann = decode_jpeg(&site.stored(e["artifacts"]["snapshot_annotated"]["key"].as_str().unwrap()));
    let plain = decode_jpeg(&site.stored(e["artifacts"]["snapshot"]["key"].as_str().unwrap()));
    let cyan = |img: &image::RgbImage| {
        let x = (0.1 * img.width() as f64) as u32;
        (0..img.height())
            .filter(|&y| {
                let p = img.get_pixel(x, y).0;
                p[0] < 80 && p[1] > 170 && p[2] > 200
            })
            .count()
    };
    assert!(cyan(&ann) > ann.height() as usize / 2, "zone edge drawn at x = 0.1");
    assert!(cyan(&plain) < 5, "plain snapshot has no overlay");
}

fn count(w: &Worker, needle: &str) -> usize {
    w.log_text().matches(needle).count()
}

fn wait_count(w: &mut Worker, needle: &str, n: usize) {
    let t = Instant::now();
    while count(w, needle) < n {
        assert!(t.elapsed() < Duration::from_secs(30), "waited for {n} × {needle:?}; log:\n{}", w.log_text());
        if let Some(s) = w.child.try_wait().unwrap() {
            panic!("vigil exited ({s}); log:\n{}", w.log_text());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn thresholds(args: &[&str]) -> (i32, String) {
    let out = vigil().arg("thresholds").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn thresholds_hot_reload_from_kv_and_file_validated_applied_between_frames_and_audited() {
    let nats = Nats::start();
    let cams = format!(
        "[[cameras]]\nid = \"cam1\"\nsource = \"{}\"\nloop = true\n[[cameras.rules]]\nkind = \"no_mask\"\nthreshold = 0.7\n",
        sample("astronaut-pan.mp4").display()
    );
    let site =
        Site::new(&format!("[clip]\npre_roll_s = 1\npost_roll_s = 1\n[publish]\nnats_url = \"{}\"\n", nats.url), &cams);
    let p = site.pipeline.to_str().unwrap().to_string();
    let kv = ["--nats", nats.url.as_str(), "--site", "test-site"];
    let set = |extra: &[&str]| {
        let mut a = vec!["set"];
        a.extend(kv);
        a.extend(["--camera", "cam1", "--rule", "no_mask"]);
        a.extend(extra);
        thresholds(&a)
    };
    // 1. an override made before the worker starts is in force from its first frame
    let (code, out) = set(&["--by", "alice", "--reason", "fewer false alarms", "threshold=0.8"]);
    assert_eq!(code, 0, "{out}");
    // refused by the CLI itself when validated against the pipeline file
    let (code, out) = set(&["--by", "alice", "--pipeline", &p, "threshold=2"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("test-site.cam1.no_mask") && out.contains("threshold: 2 must be in [0, 1]"), "{out}");
    let mut w = Worker::start(&site.pipeline);
    wait_count(&mut w, "rule configuration applied", 1);
    // 2. out of range via KV (no --pipeline): the worker rejects it, the running value stays
    let (code, out) = set(&["--by", "bob", "threshold=1.5"]);
    assert_eq!(code, 0, "{out}");
    wait_count(&mut w, "REJECTED", 1);
    // 3. a KV value that is not valid
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = vigil::util::nats::connect(&nats.url).await.unwrap();
        let kv = async_nats::jetstream::new(c).get_key_value("vigil-thresholds").await.unwrap();
        kv.put("test-site.cam1.no_mask", "threshold: 0.9".into()).await.unwrap();
    });
    wait_count(&mut w, "REJECTED", 2);
    // 4. valid: applied
    let (code, out) = set(&["--by", "carol", "--reason", "night shift", "threshold=0.9", "min_hits=4"]);
    assert_eq!(code, 0, "{out}");
    wait_count(&mut w, "rule configuration applied", 2);
    // 5. the pipeline file changes: applied; then an invalid edit: rejected, nothing changes
    let text = std::fs::read_to_string(&site.pipeline).unwrap();
    site.edit(|_| text.replace("threshold = 0.7\n", "threshold = 0.7\ncooldown_s = 30\n"));
    wait_count(&mut w, "rule configuration applied", 3);
    site.edit(|_| text.replace("threshold = 0.7\n", "threshold = 0.7\nzone = [[0,0],[1.5,0],[1,1]]\n"));
    wait_count(&mut w, "REJECTED", 3);
    w.sigterm();
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log_text());

    // the audit trail: in the stream, in the file, and through `vigil thresholds history`
    let audit: Vec<serde_json::Value> =
        nats.messages("VIGIL").into_iter().filter(|m| m.0.starts_with("vigil.audit.test-site.")).map(|m| m.2).collect();
    let file: Vec<serde_json::Value> = std::fs::read_to_string(site.path("data/audit/rules.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(audit, file, "published audit = audit file");
    let brief: Vec<(String, String, String)> = audit
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap().into(),
                a["by"].as_str().unwrap().into(),
                a["source"].as_str().unwrap()[..4].into(),
            )
        })
        .collect();
    let want = [
        ("applied", "alice", "kv:v"),
        ("rejected", "bob", "kv:v"),
        ("rejected", "?", "kv:v"),
        ("applied", "carol", "kv:v"),
        ("applied", "pipeline file", "file"),
        ("rejected", "pipeline file", "file"),
    ];
    assert_eq!(brief, want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())), "{audit:#?}");
    assert!(audit[1]["problem"].as_str().unwrap().contains("threshold: 1.5 must be in [0, 1]"), "{}", audit[1]);
    assert!(audit[2]["problem"].as_str().unwrap().contains("not {\"by\""), "{}", audit[2]);
    assert!(audit[5]["problem"].as_str().unwrap().contains("zone"), "{}", audit[5]);
    assert_eq!(audit[0]["old"]["threshold"], 0.7);
    assert_eq!(audit[0]["new"]["threshold"], 0.8);
    assert_eq!((audit[3]["old"]["threshold"].as_f64(), audit[3]["new"]["threshold"].as_f64()), (Some(0.8), Some(0.9)));
    assert_eq!(audit[3]["new"]["min_hits"], 4);
    assert_eq!(audit[3]["reason"], "night shift");
    assert_eq!(
        (audit[4]["old"]["cooldown_s"].as_f64(), audit[4]["new"]["cooldown_s"].as_f64()),
        (Some(60.0), Some(30.0))
    );
    assert_eq!(audit[4]["new"]["threshold"], 0.9, "the KV override stays laid over the file's new values");
    // every event carries the revision of the rule configuration in force when it fired
    let revisions: Vec<&str> = audit.iter().filter_map(|a| a["new_revision"].as_str()).collect();
    let events: Vec<serde_json::Value> =
        nats.messages("VIGIL").into_iter().filter(|m| m.0.starts_with("vigil.evidence.")).map(|m| m.2).collect();
    assert!(!events.is_empty(), "the looping astronaut clip raises no_mask");
    for e in &events {
        assert!(revisions.contains(&e["rule"]["revision"].as_str().unwrap()), "{}", e["rule"]);
    }
    let mut a = vec!["history"];
    a.extend(kv);
    a.extend(["--camera", "cam1", "--rule", "no_mask"]);
    let (code, out) = thresholds(&a);
    assert_eq!(code, 0, "{out}");
    println!("vigil thresholds history --site test-site --camera cam1 --rule no_mask\n{out}");
    assert!(
        out.contains("by carol") && out.contains("(night shift)") && out.contains("\"outcome\":\"rejected\""),
        "{out}"
    );
    let mut g = vec!["get"];
    g.extend(kv);
    let (code, out) = thresholds(&g);
    assert_eq!(code, 0);
    assert!(out.contains("test-site.cam1.no_mask") && out.contains("\"threshold\":0.9"), "{out}");
}

#[test]
fn labelled_clips_event_recall_is_unchanged_by_motion_gating() {
    // labels in tests/labels; the shared clips are read from ../shared/data/videos
    let data = shared_data("videos");
    assert!(data.is_dir(), "../shared/data/videos is missing: this test evaluates on its real clips");
    let (code, out) = {
        let o = vigil().args(["eval-clips", "--data"]).arg(data.parent().unwrap()).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    assert_eq!(code, 0, "{out}");
    println!("{out}");
    let row = |variant: &str| -> Vec<String> {
        let l = out
            .lines()
            .find(|l| l.starts_with(&format!("| {variant} |")))
            .unwrap_or_else(|| panic!("{variant}: {out}"));
        l.split('|').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
    };
    let (on, off) = (row("n_of_m, gating on, whole region"), row("n_of_m, gating off"));
    let parts = row("n_of_m, gating on, motion regions");
    assert_eq!(on[1], off[1], "violations detected with and without gating");
    assert_eq!(on[2], "1.00", "every labelled violation is found: {out}");
    // the face detector on the moving cells and tracked faces only: the same events
    assert_eq!(parts[1], off[1], "violations detected with motion regions and without gating");
    assert_eq!(parts[4], off[4], "false fires with motion regions and without gating");
    let inferred = |r: &[String]| r[6].split('/').next().unwrap().trim().parse::<u64>().unwrap();
    let (part, seen) = (|r: &[String]| r[7].parse::<u64>().unwrap(), |r: &[String]| r[8].parse::<u64>().unwrap());
    assert_eq!(part(&on), 0, "without motion regions every inference looks at the whole region");
    assert!(part(&parts) > 0, "motion regions look at parts: {out}");
    // the gate decides alike either way; only frames forced by a track collecting hits can differ
    assert!(
        inferred(&parts).abs_diff(inferred(&on)) * 50 <= inferred(&on),
        "about the same frames are inferred either way: {} vs {}",
        inferred(&parts),
        inferred(&on)
    );
    // the faces (and utensils) the rules track: what motion regions cost in detections
    assert!(
        seen(&parts) as f64 >= 0.95 * seen(&on) as f64,
        "motion regions keep ≥ 95 % of the detections: {} vs {}",
        seen(&parts),
        seen(&on)
    );
    assert!(inferred(&on) < inferred(&off), "gating skips inference: {} vs {}", inferred(&on), inferred(&off));
    assert!(out.contains("chelsea-pan: fires at [] s") && out.contains("coffee-pan: fires at [] s"), "{out}");
    // the mask as a fitted attribute on persons' head crops (README's kinds table)
    assert!(out.contains("| attribute_missing | 5 | 4 of 4 | 5 | 1 |"), "{out}");
}

/// Counts what the real analysis loop sends on: health changes and violations.
#[derive(Default)]
struct CountingSink {
    changes: usize,
    raised: usize,
}

impl vigil::control::analysis::AnalysisSink for CountingSink {
    fn health(&mut self, _: &str, _: &vigil::health::Change) {
        self.changes += 1;
    }
    fn raise(
        &mut self,
        _: &str,
        _: vigil::rules::Raised,
        _: &vigil::frame::RgbFrame,
        _: &[vigil::telemetry::Condition],
        _: Option<&std::sync::Arc<vigil::privacy::PrivacyMask>>,
    ) {
        self.raised += 1;
    }
}

/// Runs the worker's analysis loop (`control::analysis::run_loop`: privacy mask → tamper
/// measures → motion gate → face detection → classifier with the fitted head → tracker and
/// median rule → utensils detection and dwell) on `frames` and returns its stats.
fn run_analysis_loop(
    frames: Vec<vigil::frame::RgbFrame>,
    pool: &std::sync::Arc<vigil::detect::ModelPool>,
    labels: &[String],
) -> (std::sync::Arc<vigil::telemetry::CameraStats>, CountingSink) {
    use vigil::control::analysis::{Analyser, AnalyserConfig, run_loop};
    use vigil::ingest::FrameSource;
    use vigil::rules::{GateSettings, RuleConfig, RuleEnv, validate_rules};
    let mask = vigil::privacy::PrivacyMask::load(&repo().join("privacy-masks/cam-astronaut.toml")).unwrap();
    let no_mask: RuleConfig = toml::from_str("kind = \"no_mask\"\ntemporal = \"median\"\nthreshold = 0.9").unwrap();
    let utensils: RuleConfig = toml::from_str("kind = \"utensils_left\"\ndwell_s = 3").unwrap();
    let env = RuleEnv {
        object_labels: Some(labels),
        gate: true,
        gate_recheck_s: 2.0,
        dirty_head: false,
        attribute_heads: None,
        detectors: None,
    };
    let rules = validate_rules(&[no_mask, utensils], &env).unwrap();
    let stats = std::sync::Arc::new(vigil::telemetry::CameraStats::detached("alloc-test"));
    let a = Analyser::new(
        AnalyserConfig {
            camera: "alloc-test".into(),
            mask: Some(mask),
            tamper: Default::default(),
            rules,
            gate: GateSettings { enabled: true, regions: false, min_change: 12.0, recheck: Duration::from_secs(2) },
            labels: labels.to_vec(),
            epoch: chrono::Utc::now(),
            utc_offset_s: 8 * 3600,
            model_hint: 0,
        },
        stats.clone(),
    );
    let (tx, rx) = std::sync::mpsc::sync_channel(frames.len());
    for f in frames {
        tx.send(f).unwrap();
    }
    drop(tx);
    let mut sink = CountingSink::default();
    let pool = Some(pool.clone());
    // on its own thread, as in the worker (the counter is per thread)
    std::thread::scope(|s| {
        s.spawn(|| run_loop(a, FrameSource::plain(rx), Default::default(), pool, &mut sink)).join().unwrap();
    });
    (stats, sink)
}

#[test]
fn the_per_frame_hot_path_makes_no_heap_allocation_after_warm_up() {
    use vigil::detect::{ModelPool, ModelSet, Models, ObjectDetector, RuntimeOptions};
    let dir = repo().join("models");
    let o = RuntimeOptions::default();
    let set = ModelSet {
        no_mask: Some(
            Models::load(&dir, "centerface", "mask-classifier-mobilenetv2", Some("mask-head-fitted"), &o).unwrap(),
        ),
        objects: Some(ObjectDetector::load(&dir, "coco-nanodet", &o).unwrap()),
        dirty: None,
        attributes: Vec::new(),
        detectors: Vec::new(),
    };
    let labels = set.objects.as_ref().unwrap().labels().to_vec();
    let pool = std::sync::Arc::new(ModelPool::new(vec![set]));
    let mut checked = 0;
    for clip in ["astronaut-pan.mp4", "coffee-pan.mp4"] {
        let mut frames = vigil::ingest::analysis_frames(&sample(clip), 5.0, 640).unwrap();
        if clip == "coffee-pan.mp4" {
            // the lens covered for 4 s: a tamper condition starts and ends inside the loop
            for f in &mut frames[20..40] {
                f.data.iter_mut().for_each(|p| *p = 3);
            }
        }
        let n = frames.len();
        let (stats, sink) = run_analysis_loop(frames, &pool, &labels);
        assert_eq!(stats.analysed.get(), n as u64, "{clip}: every frame went through the loop");
        assert!(stats.inferred.get() > 20, "{clip}: the models ran ({} inferences)", stats.inferred.get());
        if clip == "coffee-pan.mp4" {
            assert!(
                sink.changes >= 2,
                "{clip}: the covered lens started and ended in the loop ({} changes)",
                sink.changes
            );
        }
        assert_eq!(stats.hot_allocations.get(), 0, "{clip}: heap allocations on {} hot frames", stats.hot_frames.get());
        checked += stats.hot_frames.get();
        eprintln!(
            "{clip}: {} frames, {} hot, {} health changes, {} violations",
            n,
            stats.hot_frames.get(),
            sink.changes,
            sink.raised
        );
    }
    assert!(checked > 60, "{checked} frames checked");
    // negative control: a frame of another size in the middle makes the loop rasterise the
    // privacy mask again (a real allocation on the same path): the counter must see it
    let mut frames = vigil::ingest::analysis_frames(&sample("coffee-pan.mp4"), 5.0, 640).unwrap();
    let small = vigil::ingest::analysis_frames(&sample("coffee-pan.mp4"), 5.0, 320).unwrap();
    frames[30] = vigil::frame::RgbFrame { pts: frames[30].pts, ..small[30].clone() };
    let (stats, _) = run_analysis_loop(frames, &pool, &labels);
    assert!(stats.hot_allocations.get() > 0, "the counter counts: a resized frame allocated a new mask raster");
    eprintln!(
        "{checked} hot frames after warm-up: no heap allocation; negative control: {} allocation(s) seen",
        stats.hot_allocations.get()
    );
}

/// `vigil eval-clips --encodes`: each labelled clip scored as recorded and re-encoded the way other
/// cameras send it (here H.265 at 300 kbit/s and MPEG-4 Part 2), one row per encode; an encode it
/// does not know is refused, naming it.
#[test]
fn eval_clips_scores_each_clip_as_recorded_and_re_encoded() {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("tests/labels/astronaut-pan.toml"), d.path().join("astronaut-pan.toml")).unwrap();
    let labels = d.path().to_str().unwrap();
    let (code, out, err) =
        run_capture(&["eval-clips", "--labels", labels, "--encodes", "h265-300,mpeg4-800"], Duration::from_secs(300));
    assert_eq!(code, 0, "{out}\n{err}");
    let rows: Vec<&str> =
        out.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| encode") && !l.starts_with("| ---")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    fn cells(r: &str) -> Vec<&str> {
        r.split('|').map(str::trim).skip(1).collect()
    }
    assert_eq!(cells(rows[0])[0], "as recorded");
    assert_eq!(cells(rows[0])[2..6], ["1 of 1", "1", "0", "none"], "{out}");
    // the bitrate the encode reached, measured on the file
    let kbps: f64 = cells(rows[1])[1].parse().unwrap();
    assert!((30.0..=600.0).contains(&kbps), "{out}");
    assert!(rows[1].starts_with("| H.265 300 kbit/s | "), "{out}");
    assert!(rows[2].starts_with("| MPEG-4 Part 2 800 kbit/s | "), "{out}");
    // an encode with a different number of events names the clip
    for r in &rows[1..] {
        assert!(r.ends_with("| none |") || r.ends_with("| astronaut-pan |"), "{r}");
        assert!(!r.contains("| 1 of 1 | 1 |") || r.ends_with("| none |"), "{r}");
    }
    let (code, _, err) =
        run_capture(&["eval-clips", "--labels", labels, "--encodes", "vp9-300"], Duration::from_secs(60));
    assert_ne!(code, 0);
    assert!(err.contains("\"vp9-300\": the codec is h264, h265 or mpeg4"), "{err}");
}
