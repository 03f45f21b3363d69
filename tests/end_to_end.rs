//! End to end on real parts: the `vigil` binary against a real RTSP server (gst-rtsp-server), a
//! real nats-server with JetStream, the local store and a real S3-compatible server (moto).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn rtsp_camera_to_jetstream_with_masked_clip_and_snapshots() {
    let nats = Nats::start();
    let server = RtspServer::serve_file(&sample("astronaut-pan.mp4"));
    let site = Site::new(
        &format!("[clip]\npre_roll_s = 2\npost_roll_s = 2\n[publish]\nnats_url = \"{}\"\n", nats.url),
        &astronaut_camera(&server.url, ""),
    );
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("JetStream acknowledged event", Duration::from_secs(90));
    w.sigterm();
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "clean exit on SIGTERM; log:\n{}", w.log_text());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (events, checkpoints) = rt.block_on(async {
        let c = vigil::util::nats::connect(&nats.url).await.unwrap();
        let js = async_nats::jetstream::new(c);
        let mut stream = js.get_stream("VIGIL").await.unwrap();
        let n = stream.info().await.unwrap().state.messages;
        let mut all = Vec::new();
        for seq in 1..=n {
            all.push(stream.get_raw_message(seq).await.unwrap());
        }
        all.into_iter().partition::<Vec<_>, _>(|m| m.subject.starts_with("vigil.evidence."))
    });
    assert_eq!(events.len(), 1, "exactly one evidence event on the stream");
    assert!(
        checkpoints.iter().all(|m| m.subject.as_str() == "vigil.chain.test-site.cam1") && !checkpoints.is_empty(),
        "a chain checkpoint was published at shutdown"
    );
    let msg = &events[0];
    assert_eq!(msg.subject.as_str(), "vigil.evidence.test-site.cam1");
    let event: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(msg.headers.get("Nats-Msg-Id").unwrap().as_str(), event["evidence_id"].as_str().unwrap());
    assert_eq!(event["rule"]["id"], "no_mask");
    assert_eq!(event["site"], "test-site");
    assert_eq!(event["privacy_mask"]["id"], "cam-astronaut");
    assert!(event["detections"][0]["no_mask_prob"].as_f64().unwrap() >= 0.7);
    assert_eq!(event["clip"]["pre_roll_truncated"], false);
    check_evidence(&event, |k| site.stored(k), 4.0, Some((0.78, 1.0)));
    // the outbox recorded it and its ack
    assert_eq!(site.outbox().len(), 1);
    let acked = std::fs::read_to_string(site.path("data/outbox.acked")).unwrap();
    assert!(acked.lines().any(|l| l == event["evidence_id"].as_str().unwrap()), "{acked}");
}

#[test]
fn file_camera_without_nats_writes_the_outbox_and_exits_0() {
    let site = Site::new(
        "[clip]\npre_roll_s = 2\npost_roll_s = 2\n",
        &astronaut_camera(&sample("astronaut-pan.mp4").display().to_string(), "realtime = false"),
    );
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    let out = site.outbox();
    assert_eq!(out.len(), 1, "one event in the outbox: {out:?}");
    assert_eq!(out[0]["subject"], "vigil.evidence.test-site.cam1");
    check_evidence(&out[0]["payload"], |k| site.stored(k), 4.0, Some((0.78, 1.0)));
    assert!(log.contains("evidence event"), "event also in the log");
}

#[test]
fn real_clip_with_bare_faces_fires_and_a_faceless_clip_does_not() {
    let walking = shared_data("videos/intel_face-demographics-walking.mp4");
    let cams = format!(
        "[[cameras]]\nid = \"walking\"\nsource = \"{}\"\nrealtime = false\n[[cameras.rules]]\nkind = \"no_mask\"\n\
         [[cameras]]\nid = \"cat\"\nsource = \"{}\"\nrealtime = false\n[[cameras.rules]]\nkind = \"no_mask\"\n",
        walking.display(),
        sample("chelsea-pan.mp4").display()
    );
    let site = Site::new("", &cams);
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    let out = site.outbox();
    let by = |cam: &str| out.iter().filter(|e| e["payload"]["camera"] == cam).count();
    assert!(by("walking") >= 1, "no event from a clip of people walking unmasked: {log}");
    assert_eq!(by("cat"), 0, "a clip without faces produced an event");
    let e = out.iter().find(|e| e["payload"]["camera"] == "walking").unwrap();
    // the clip is only 2.9 s long: the roll is cut short and the event says so
    assert_eq!(e["payload"]["clip"]["post_roll_truncated"], true);
    assert_eq!(e["payload"]["clip"]["width"], 480);
}

#[test]
fn a_10_fps_fragmented_mp4_camera_is_analysed_to_the_end() {
    // a real 10 fps, 768x432, fragmented MP4 (139 s): with GStreamer's default 1 s queues the
    // decoder branch deadlocked before its first picture and the camera "stalled"
    let hall = shared_data("videos/intel_one-by-one-person-detection.mp4");
    let cams = format!("[[cameras]]\nid = \"hall\"\nsource = \"{}\"\nrealtime = false\n", hall.display());
    let site = Site::new("", &cams);
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    let summary = log.lines().find(|l| l.contains("vigil run finished")).expect("summary line");
    assert!(summary.contains("\"encoded_frames\":1394"), "every encoded frame: {summary}");
    assert!(summary.contains("\"analysed\":697") && summary.contains("\"dropped\":0"), "5 of 10 fps: {summary}");
}

#[test]
fn unreachable_rtsp_camera_does_not_stop_the_others() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cams = format!(
        "[[cameras]]\nid = \"dead\"\nsource = \"rtsp://127.0.0.1:{port}/nothing\"\n[[cameras.rules]]\nkind = \"no_mask\"\n\
         [[cameras]]\nid = \"alive\"\nsource = \"{}\"\nrealtime = false\n[[cameras.rules]]\nkind = \"no_mask\"\n",
        sample("camera-pan.mp4").display()
    );
    let site = Site::new("[clip]\npre_roll_s = 1\npost_roll_s = 1\n", &cams);
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("spool: item stored, event queued", Duration::from_secs(90));
    let log = w.log_text();
    assert!(log.contains("camera down; reconnecting") && log.contains("\"camera\":\"dead\""), "{log}");
    assert!(log.contains(&format!("rtsp://127.0.0.1:{port}/nothing")), "the log names the URL: {log}");
    w.sigterm();
    // a camera that never delivered video in the whole run is a failure of the run, named
    assert_eq!(w.wait(Duration::from_secs(60)), 1, "{}", w.log_text());
    let log = w.log_text();
    assert!(log.contains("error: camera dead down for") && log.contains("no video at all in this run"), "{log}");
    assert!(!log.contains("error: camera alive"), "{log}");
    let out = site.outbox();
    assert!(out.iter().any(|e| e["payload"]["camera"] == "alive"));
}

#[test]
fn a_file_that_is_not_video_fails_its_camera_only_with_a_clear_message() {
    let site = Site::new("", "");
    let bogus = site.path("not-a-video.mp4");
    std::fs::write(&bogus, "this is a text file, not an MP4\n".repeat(50)).unwrap();
    let cams = format!(
        "[[cameras]]\nid = \"bogus\"\nsource = \"{}\"\n[[cameras.rules]]\nkind = \"no_mask\"\n\
         [[cameras]]\nid = \"good\"\nsource = \"{}\"\nrealtime = false\n[[cameras.rules]]\nkind = \"no_mask\"\n",
        bogus.display(),
        sample("coffee-pan.mp4").display()
    );
    let text = std::fs::read_to_string(&site.pipeline).unwrap() + &cams;
    std::fs::write(&site.pipeline, text).unwrap();
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("error: camera bogus failed: file") && log.contains("not-a-video.mp4"), "{log}");
    assert!(log.contains("cannot read it as video"), "{log}");
    let good = log.lines().find(|l| l.contains("vigil run finished")).unwrap();
    assert!(good.contains(r#""good":{"end":"ended","failed":false,"encoded_frames":300"#), "{good}");
}

#[test]
fn an_unknown_config_key_is_refused_naming_file_and_key() {
    let cams = format!(
        "[[cameras]]\nid = \"c\"\nsource = \"{}\"\n[[cameras.rules]]\nkind = \"no_mask\"\nthreshhold = 0.5\n",
        sample("coffee-pan.mp4").display()
    );
    let site = Site::new("", &cams);
    let (code, err) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(30));
    assert_eq!(code, 2);
    assert!(err.contains("site.toml") && err.contains("cameras[0].rules[0].threshhold"), "{err}");
    assert!(err.contains("unknown field `threshhold`"), "{err}");
}

#[test]
fn a_missing_mask_file_is_refused() {
    let cams = format!(
        "[[cameras]]\nid = \"c\"\nsource = \"{}\"\nprivacy_mask = \"masks/nope.toml\"\n",
        sample("coffee-pan.mp4").display()
    );
    let site = Site::new("", &cams);
    let (code, err) = run_to_end(&["check", site.pipeline.to_str().unwrap()], Duration::from_secs(30));
    assert_eq!(code, 2);
    assert!(err.contains("cameras[0].privacy_mask") && err.contains("masks/nope.toml: cannot open"), "{err}");
}

#[test]
fn an_invalid_mask_polygon_is_refused_naming_the_polygon() {
    let site = Site::new("", "");
    std::fs::write(site.path("m.toml"), "[[polygons]]\nname = \"till\"\npoints = [[0.1, 0.1], [0.5, 0.1]]\n").unwrap();
    let cams = format!(
        "[[cameras]]\nid = \"c\"\nsource = \"{}\"\nprivacy_mask = \"m.toml\"\n",
        sample("coffee-pan.mp4").display()
    );
    std::fs::write(&site.pipeline, std::fs::read_to_string(&site.pipeline).unwrap() + &cams).unwrap();
    let (code, err) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(30));
    assert_eq!(code, 2);
    assert!(err.contains("m.toml") && err.contains("polygon 0 (till)") && err.contains("at least 3 points"), "{err}");
}

#[test]
fn a_model_whose_hash_is_wrong_is_refused() {
    let site = Site::new("", "");
    let models = site.path("models");
    std::fs::create_dir_all(&models).unwrap();
    for f in [
        "centerface.toml",
        "mask-classifier-mobilenetv2.toml",
        "mask-classifier-mobilenetv2.onnx",
        "mask-head-fitted.toml",
        "mask-head-fitted.json",
        "mask-classifier-mobilenetv2-features.toml",
        "mask-classifier-mobilenetv2-features.onnx",
    ] {
        std::fs::copy(repo().join("models").join(f), models.join(f)).unwrap();
    }
    let mut onnx = std::fs::read(repo().join("models/centerface.onnx")).unwrap();
    let n = onnx.len();
    onnx[n / 2] ^= 1; // one flipped bit in the weights
    std::fs::write(models.join("centerface.onnx"), onnx).unwrap();
    let text = std::fs::read_to_string(&site.pipeline)
        .unwrap()
        .replace(&format!("dir = \"{}\"", repo().join("models").display()), "dir = \"models\"");
    let cams = format!(
        "[[cameras]]\nid = \"c\"\nsource = \"{}\"\n[[cameras.rules]]\nkind = \"no_mask\"\n",
        sample("coffee-pan.mp4").display()
    );
    std::fs::write(&site.pipeline, text + &cams).unwrap();
    let (code, err) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("centerface.onnx") && err.contains("SHA-256 is") && err.contains("c3673a4506"), "{err}");
    let (code, err) = run_to_end(&["check", site.pipeline.to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(code, 2);
    assert!(err.contains("SHA-256 is"), "{err}");
}

#[test]
fn evidence_goes_to_an_s3_store() {
    let moto = Moto::start();
    let ok = std::process::Command::new("python3")
        .args([
            "-c",
            &format!(
                "import boto3; boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', \
                 aws_secret_access_key='test').create_bucket(Bucket='evidence')",
                moto.endpoint
            ),
        ])
        .status()
        .unwrap();
    assert!(ok.success(), "create bucket on moto");
    let extra = format!(
        "[clip]\npre_roll_s = 1\npost_roll_s = 1\n[store.options]\naws_endpoint = \"{}\"\naws_allow_http = \"true\"\n\
         aws_region = \"us-east-1\"\naws_access_key_id = \"test\"\naws_secret_access_key = \"test\"\n",
        moto.endpoint
    );
    let cams = format!(
        "[[cameras]]\nid = \"cam1\"\nsource = \"{}\"\nrealtime = false\n[[cameras.rules]]\nkind = \"no_mask\"\n\
         min_hits = 10\nwindow = 10\n",
        sample("astronaut-pan.mp4").display()
    );
    let site = Site::new(&extra, &cams);
    let text =
        std::fs::read_to_string(&site.pipeline).unwrap().replace("url = \"store\"", "url = \"s3://evidence/vigil\"");
    std::fs::write(&site.pipeline, text).unwrap();
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    let out = site.outbox();
    assert_eq!(out.len(), 1, "{log}");
    let opts: std::collections::BTreeMap<String, String> = [
        ("aws_endpoint", moto.endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let store = vigil::store::Store::open("s3://evidence/vigil", &opts).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    check_evidence(&out[0]["payload"], |k| rt.block_on(store.get(k)).unwrap().to_vec(), 2.0, None);
    assert!(!site.path("store").exists(), "nothing was written to a local store");
}

#[test]
fn the_fitted_head_is_the_default_and_recorded_in_the_manifest() {
    let cams = format!(
        "[[cameras]]\nid = \"cam1\"\nsource = \"{}\"\nrealtime = false\n[[cameras.rules]]\nkind = \"no_mask\"\n",
        sample("astronaut-pan.mp4").display()
    );
    let site = Site::new("[clip]\npre_roll_s = 1\npost_roll_s = 1\n", &cams);
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("fitted head loaded") && log.contains("mask-head-fitted"), "{log}");
    let out = site.outbox();
    assert_eq!(out.len(), 1, "the bare astronaut face is a violation with the fitted head: {log}");
    let models: Vec<String> =
        out[0]["payload"]["models"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(models, ["centerface", "mask-classifier-mobilenetv2-features", "mask-head-fitted"]);
    let toml = std::fs::read_to_string(repo().join("models/mask-head-fitted.toml")).unwrap();
    let sha = out[0]["payload"]["models"][2]["sha256"].as_str().unwrap();
    assert!(toml.contains(sha), "the manifest records the head file's SHA-256");
    let rule = &out[0]["payload"]["rule"]["params"];
    assert_eq!(rule["threshold"], serde_json::json!(SHIPPED_THRESHOLD), "the rule default is the measured threshold");
}

/// The no-mask threshold `vigil eval` measured for the shipped head (the rule's default).
const SHIPPED_THRESHOLD: f64 = 0.8;

#[test]
fn without_a_head_the_plain_classifier_runs_and_says_so() {
    let cams = format!(
        "[[cameras]]\nid = \"cam1\"\nsource = \"{}\"\nrealtime = false\n[[cameras.rules]]\nkind = \"no_mask\"\nthreshold = 0.7\n",
        sample("astronaut-pan.mp4").display()
    );
    let site = Site::new("[clip]\npre_roll_s = 1\npost_roll_s = 1\n", &cams);
    let text =
        std::fs::read_to_string(&site.pipeline).unwrap().replacen("[models]\n", "[models]\nmask_head = \"none\"\n", 1);
    std::fs::write(&site.pipeline, text).unwrap();
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("the plain classifier's own no-mask output is used"), "{log}");
    let out = site.outbox();
    assert_eq!(out.len(), 1, "the plain classifier finds the bare astronaut face too: {log}");
    let models: Vec<&str> =
        out[0]["payload"]["models"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(models, ["centerface", "mask-classifier-mobilenetv2"]);
}
