//! Behaviour, not just records: a threshold change changes what fires, between frames, with the
//! tracks kept; utensils hours open and closed end to end; a covered lens reaching health events,
//! the manifest and admissibility; advisory events; `vigil check`, `keys init / public`; a lost
//! chain cache rebuilt from the store; `models.instances` and `batch` from a pipeline.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

#[test]
fn a_new_threshold_changes_what_fires_between_frames_and_keeps_the_tracks() {
    use vigil::control::analysis::{Analyser, AnalyserConfig};
    use vigil::detect::{ModelPool, ModelSet, Models, RuntimeOptions};
    use vigil::rules::{GateSettings, RuleConfig, RuleEnv, validate_rules};
    let dir = repo().join("models");
    let o = RuntimeOptions::default();
    let set = ModelSet {
        no_mask: Some(Models::load(&dir, "centerface", "mask-classifier-mobilenetv2", None, &o).unwrap()),
        objects: None,
        dirty: None,
        attributes: Vec::new(),
        detectors: Vec::new(),
    };
    let pool = ModelPool::new(vec![set]);
    let env = RuleEnv {
        object_labels: None,
        gate: true,
        gate_recheck_s: 2.0,
        dirty_head: false,
        attribute_heads: None,
        detectors: None,
    };
    let rules = |t: &str| validate_rules(&[toml::from_str::<RuleConfig>(t).unwrap()], &env).unwrap();
    // 100 hits needed: on this 60-frame clip the face is tracked but never fires
    let strict = rules("kind = \"no_mask\"\nmin_hits = 100\nwindow = 100");
    let normal = rules("kind = \"no_mask\"\nmin_hits = 3\nwindow = 5");
    let frames = frames_of(&sample("astronaut-pan.mp4"), 5.0, 640);
    let mut a = Analyser::new(
        AnalyserConfig {
            camera: "c".into(),
            mask: None,
            tamper: Default::default(),
            rules: strict,
            gate: GateSettings { enabled: true, regions: false, min_change: 12.0, recheck: Duration::from_secs(2) },
            labels: vec![],
            epoch: chrono::Utc::now(),
            utc_offset_s: 0,
            model_hint: 0,
        },
        Arc::new(vigil::telemetry::CameraStats::detached("c")),
    );
    let reload_at = 20;
    let mut fires = Vec::new();
    for (k, f) in frames.iter().enumerate() {
        if k == reload_at {
            a.reconfigure(&normal);
        }
        let mut f = f.clone();
        for r in a.analyse(&mut f, Some(&pool)).1.unwrap() {
            fires.push((k, f.pts, r));
        }
    }
    assert!(!fires.is_empty(), "the new parameters fire");
    let (k, _pts, first) = &fires[0];
    assert_eq!(*k, reload_at, "the change applies between frames: the first frame under the new rule fires");
    // the track's history from before the change counted: it fired at once, with frames seen
    // under the old parameters in its window
    let before = frames[reload_at].pts;
    assert!(
        first.fire.frames.iter().any(|t| *t < before),
        "the firing track is the one tracked before the change: {:?} (change at {before:?})",
        first.fire.frames
    );
    assert_eq!(first.rule.params["min_hits"], 3, "the event records the parameters in force");
    println!(
        "| threshold change at frame {reload_at} | fires at frame {k}, with the track's frames from before the change |"
    );
}

#[test]
fn utensils_left_fires_inside_its_hours_end_to_end() {
    // site-local hours (UTC+08:00) from an hour ago to an hour from now: open
    let now_h = (chrono::Utc::now() + chrono::Duration::hours(8)).format("%H").to_string().parse::<u32>().unwrap();
    let open = format!("{:02}:00-{:02}:00", (now_h + 23) % 24, (now_h + 2) % 24);
    let cams = format!(
        "[[cameras]]\nid = \"open\"\nsource = \"{}\"\nrealtime = false\n\
         [[cameras.rules]]\nkind = \"utensils_left\"\ndwell_s = 3\nmax_gap_s = 5\nhours = \"{open}\"\n",
        sample("coffee-pan.mp4").display()
    );
    let site = Site::new("[clip]\npre_roll_s = 1\npost_roll_s = 1\n", &cams);
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    let out = site.outbox();
    assert!(!out.is_empty(), "inside its hours {open} the rule fires");
    assert!(out.iter().all(|e| e["payload"]["rule"]["params"]["hours"] == open.as_str()));
    println!("| utensils_left with hours {open} (now inside) | {} events |", out.len());
}

#[test]
fn a_covered_lens_is_a_health_event_a_manifest_fact_and_makes_the_item_inadmissible() {
    let site = Site::new("[clip]\npre_roll_s = 1\npost_roll_s = 8\n", "");
    // the bundled clip with the lens covered (black) from 1.5 s to 4 s; the face fires at ~0.6 s
    let mut frames = frames_of(&sample("astronaut-pan.mp4"), 25.0, 640);
    frames.truncate(25 * 9);
    for f in &mut frames[(25 * 3 / 2)..(25 * 4)] {
        f.data.iter_mut().for_each(|p| *p = 2);
    }
    let src = site.path("covered.mp4");
    encode_video(&frames, 25, "x264enc speed-preset=veryfast key-int-max=25 bframes=0 ! h264parse", "mp4mux", &src);
    drop(frames);
    site.edit(|t| {
        // no registry dates: events are advisory
        t + &format!(
            "[[cameras]]\nid = \"cam1\"\nsource = \"{}\"\nrealtime = false\ntamper = {{ moved_ncc = -1 }}\n\
             [[cameras.rules]]\nkind = \"no_mask\"\n",
            src.display()
        )
    });
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    let all = site.outbox_all();
    let health: Vec<&serde_json::Value> =
        all.iter().filter(|e| e["subject"] == "vigil.health.test-site.cam1").map(|e| &e["payload"]).collect();
    let started = health.iter().find(|h| h["condition"] == "covered" && h["active"] == true).expect("covered started");
    assert!(health.iter().any(|h| h["condition"] == "covered" && h["active"] == false), "covered ended: {health:?}");
    let ev = &site.outbox()[0]["payload"];
    let events = ev["health"]["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e[1].as_str().unwrap().starts_with("covered started")), "{events:?}");
    assert_eq!(ev["health"]["normal"], false);
    assert_eq!(ev["admissibility"]["admissible"], false);
    let reasons: Vec<&str> =
        ev["admissibility"]["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("covered started")), "{reasons:?}");
    // advisory: no registry entry on record
    assert_eq!(ev["status"]["kind"], "advisory");
    let why: Vec<&str> = ev["status"]["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(why.contains(&"no legal review on record") && why.contains(&"no public notice on record"), "{why:?}");
    println!(
        "| lens covered 1.5-4 s inside the clip window | health event {} ({}); manifest health event; admissible false: {} | advisory: {} |",
        started["condition"],
        started["detail"].as_str().unwrap(),
        reasons.join("; "),
        why.join("; ")
    );
}

#[test]
fn vigil_check_passes_on_the_shipped_pipeline_and_keys_init_and_public_agree() {
    let o = vigil().args(["check", "pipelines/demo.toml"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok (4 cameras)"));
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("keys");
    let o = vigil().args(["keys", "init", "--dir"]).arg(&keys).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let public = std::fs::read_to_string(keys.join("signing.pub")).unwrap();
    assert!(out.contains(public.trim()), "init prints the public key it wrote");
    let o = vigil().args(["keys", "public"]).arg(keys.join("signing.key")).output().unwrap();
    // the Ed25519 key line, then the SM2 public key PEM (the shipped suites make both)
    let printed = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(printed.lines().next().unwrap(), public.trim(), "public of the secret = the .pub file");
    let sm2 = std::fs::read_to_string(keys.join("signing.sm2.pub")).unwrap();
    assert!(printed.trim_end().ends_with(sm2.trim_end()), "then the SM2 .pub file: {printed}");
    let o = vigil().args(["keys", "public"]).arg(keys.join("signing.pub")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), printed, "the same from the public file");
    let id = out.lines().next().unwrap().strip_prefix("key id ").unwrap().to_string();
    let pk = vigil::signing::PublicKey::load(&keys.join("signing.pub")).unwrap();
    assert_eq!(pk.key_id, id);
    // a second init refuses to overwrite
    let o = vigil().args(["keys", "init", "--dir"]).arg(&keys).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to overwrite"));
}

#[test]
fn a_lost_chain_cache_is_rebuilt_from_the_store() {
    let cams = format!(
        "[[cameras]]\nid = \"cam1\"\nsource = \"{}\"\nrealtime = false\n[[cameras.rules]]\nkind = \"no_mask\"\n",
        sample("astronaut-pan.mp4").display()
    );
    let site = Site::new("[clip]\npre_roll_s = 1\npost_roll_s = 1\n", &cams);
    let run = || {
        let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
        assert_eq!(code, 0, "{log}");
    };
    run();
    run();
    // the worker's local chain state is lost (disk replaced): the head comes back from the store
    std::fs::remove_dir_all(site.path("data/chain")).unwrap();
    run();
    let seqs: Vec<u64> = site.outbox().iter().map(|e| e["payload"]["chain"]["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3], "the chain continues after the cache is lost");
    let o = vigil().args(["verify", "--pipeline", site.pipeline.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn model_instances_and_batching_come_from_the_pipeline() {
    let cam = |id: &str| {
        format!(
            "[[cameras]]\nid = \"{id}\"\nsource = \"{}\"\nrealtime = false\n[[cameras.rules]]\nkind = \"no_mask\"\n",
            sample("astronaut-pan.mp4").display()
        )
    };
    let site = Site::new("[clip]\npre_roll_s = 1\npost_roll_s = 1\n", &(cam("a") + &cam("b")));
    site.replace("[models]\ndir", "[models]\ninstances = 2\nbatch = 2\ndir");
    let (code, log) =
        run_to_end(&["--log-format", "json", "run", site.pipeline.to_str().unwrap()], Duration::from_secs(180));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("\"copies\":2,\"face_batch\":2"), "{log}");
    assert_eq!(
        log.matches("\"message\":\"model loaded\",\"model\":\"centerface\"").count(),
        2,
        "two copies of the face detector: {log}"
    );
    let cams: std::collections::BTreeSet<String> =
        site.outbox().iter().map(|e| e["payload"]["camera"].as_str().unwrap().to_string()).collect();
    assert_eq!(cams.len(), 2, "each camera got its own faces back through the batch: {cams:?}");
}

#[test]
fn require_dirty_counts_only_what_the_clean_dirty_head_calls_dirty() {
    use vigil::control::analysis::{Analyser, AnalyserConfig};
    use vigil::detect::{ModelPool, ModelSet, ObjectDetector, RuntimeOptions, load_head};
    use vigil::rules::{GateSettings, RuleConfig, RuleEnv, validate_rules};
    let dir = repo().join("models");
    let o = RuntimeOptions::default();
    let objects = ObjectDetector::load(&dir, "coco-nanodet", &o).unwrap();
    let labels = objects.labels().to_vec();
    let set = ModelSet {
        no_mask: None,
        objects: Some(objects),
        dirty: Some(load_head(&dir, "dirty-head-fitted", &o).unwrap()),
        attributes: Vec::new(),
        detectors: Vec::new(),
    };
    let pool = ModelPool::new(vec![set]);
    let env = RuleEnv {
        object_labels: Some(&labels),
        gate: false,
        gate_recheck_s: 2.0,
        dirty_head: true,
        attribute_heads: None,
        detectors: None,
    };
    let frames = frames_of(&sample("coffee-pan.mp4"), 5.0, 640);
    let fires = |extra: &str| {
        let rule: RuleConfig = toml::from_str(&format!("kind = \"utensils_left\"\ndwell_s = 3\n{extra}")).unwrap();
        let mut a = Analyser::new(
            AnalyserConfig {
                camera: "c".into(),
                mask: None,
                tamper: Default::default(),
                rules: validate_rules(&[rule], &env).unwrap(),
                gate: GateSettings {
                    enabled: false,
                    regions: false,
                    min_change: 12.0,
                    recheck: Duration::from_secs(2),
                },
                labels: labels.clone(),
                epoch: chrono::Utc::now(),
                utc_offset_s: 0,
                model_hint: 0,
            },
            Arc::new(vigil::telemetry::CameraStats::detached("c")),
        );
        let mut n = 0;
        for f in &frames {
            n += a.analyse(&mut f.clone(), Some(&pool)).1.unwrap().len();
        }
        n
    };
    let any_cup = fires("");
    assert!(any_cup > 0, "the cup left on the counter fires without require_dirty");
    assert_eq!(fires("require_dirty = true\ndirty_threshold = 0.0"), any_cup, "every object counts at threshold 0");
    assert_eq!(
        fires("require_dirty = true\ndirty_threshold = 1.0"),
        0,
        "no object is certainly dirty: the head was asked"
    );
    // the head is required for the option
    let no_head = RuleEnv { dirty_head: false, ..env };
    let rule: RuleConfig = toml::from_str("kind = \"utensils_left\"\nrequire_dirty = true").unwrap();
    let e = validate_rules(&[rule], &no_head).unwrap_err();
    assert!(e.iter().any(|(k, p)| k.ends_with("require_dirty") && p.contains("models.dirty_head")), "{e:?}");
}
