//! The codecs cameras send, end to end through the `vigil` binary: H.265 over RTSP
//! (gst-rtsp-server) and from MP4, Matroska and MPEG-TS files; MPEG-4 Part 2 and Motion JPEG
//! files. Each fires its no-mask event with a clip (H.264 MP4, masked) that decodes and lasts pre +
//! post roll; the sealed original stays in the source codec, not re-encoded. The test media are
//! made from the bundled sample clip by GStreamer encoders in the test.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use gstreamer as gst;
use gstreamer::prelude::*;

/// `(camera id, file name, encoder, muxer, codec name the worker logs)`.
const MEDIA: &[(&str, &str, &str, &str, &str)] = &[
    ("h265-mp4", "h265.mp4", "x265enc speed-preset=ultrafast key-int-max=25 ! h265parse", "mp4mux", "H.265/HEVC"),
    ("h265-mkv", "h265.mkv", "x265enc speed-preset=ultrafast key-int-max=25 ! h265parse", "matroskamux", "H.265/HEVC"),
    ("h265-ts", "h265.ts", "x265enc speed-preset=ultrafast key-int-max=25 ! h265parse", "mpegtsmux", "H.265/HEVC"),
    ("mpeg4-avi", "mpeg4.avi", "avenc_mpeg4 bitrate=3000000 gop-size=25", "avimux", "MPEG-4 Part 2"),
    ("mjpeg-mkv", "mjpeg.mkv", "jpegenc quality=85", "matroskamux", "Motion JPEG"),
];

fn make_media(dir: &Path) -> Vec<PathBuf> {
    MEDIA
        .iter()
        .map(|(_, file, enc, mux, _)| {
            let p = dir.join(file);
            if enc.starts_with("avenc_mpeg4") {
                // libav's MPEG-4 encoder takes frames with plain timestamps (from appsrc)
                encode_video(&frames_of(&sample("astronaut-pan.mp4"), 25.0, 640), 25, enc, mux, &p);
            } else {
                transcode(&sample("astronaut-pan.mp4"), &p, "identity", enc, mux);
            }
            p
        })
        .collect()
}

/// The caps of the first video stream of a file (its demuxer's pad).
fn video_caps(path: &Path) -> String {
    gst::init().unwrap();
    let p = gst::parse::launch(&format!("filesrc location={} ! parsebin name=d", path.display()))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let pw = p.downgrade();
    p.by_name("d").unwrap().connect_pad_added(move |_, pad| {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let _ = tx.send(caps.to_string());
        if let Some(p) = pw.upgrade() {
            let fake = gst::ElementFactory::make("fakesink").build().unwrap();
            p.add(&fake).unwrap();
            fake.sync_state_with_parent().unwrap();
            let _ = pad.link(&fake.static_pad("sink").unwrap());
        }
    });
    p.set_state(gst::State::Paused).unwrap();
    let caps = rx.recv_timeout(Duration::from_secs(30)).expect("a stream in the file");
    p.set_state(gst::State::Null).unwrap();
    caps
}

#[test]
fn h265_mpeg4_and_mjpeg_files_fire_with_clips_and_the_sealed_original_keeps_the_source_codec() {
    let media_dir = tempfile::tempdir().unwrap();
    let files = make_media(media_dir.path());
    assert!(video_caps(&files[0]).starts_with("video/x-h265"), "the test media is H.265: {}", video_caps(&files[0]));
    assert!(video_caps(&files[3]).starts_with("video/mpeg"), "{}", video_caps(&files[3]));
    let authority = age::x25519::Identity::generate();
    let cameras: String = MEDIA
        .iter()
        .zip(&files)
        .map(|((id, ..), f)| camera_with_id(id, &f.display().to_string(), "realtime = false"))
        .collect();
    let site = Site::new(
        &format!(
            "[clip]\npre_roll_s = 2\npost_roll_s = 2\n[evidence]\nseal_recipient = \"{}\"\n",
            authority.to_public()
        ),
        &cameras,
    );
    let (code, log) =
        run_to_end(&["--log-format", "json", "run", site.pipeline.to_str().unwrap()], Duration::from_secs(300));
    assert_eq!(code, 0, "{log}");
    let out = site.outbox();
    let mut rows = Vec::new();
    for ((id, file, _, _, codec), path) in MEDIA.iter().zip(&files) {
        // the log names the codec and decoder the camera got
        let line = log
            .lines()
            .find(|l| l.contains("camera video") && l.contains(&format!("\"camera\":\"{id}\"")))
            .unwrap_or_else(|| panic!("no `camera video` line for {id}: {log}"));
        assert!(line.contains(codec), "{line}");
        let events: Vec<_> = out.iter().filter(|e| e["payload"]["camera"] == *id).collect();
        assert_eq!(events.len(), 1, "{id}: one no-mask event: {out:?}");
        let ev = &events[0]["payload"];
        check_evidence(ev, |k| site.stored(k), 4.0, Some((0.78, 1.0)));
        let sealed = ev["sealed_original"]["format"].as_str().unwrap();
        assert!(sealed.contains(codec), "{sealed}");
        let key = ev["artifacts"]["sealed_original"]["key"].as_str().unwrap();
        // MP4 where mp4mux takes the stream as it is (H.265 here), Matroska otherwise
        let want_ext = if file.starts_with("h265") { "mp4" } else { "mkv" };
        assert!(key.ends_with(&format!("original.{want_ext}.age")), "{key}");
        let decoder = serde_json::from_str::<serde_json::Value>(line).unwrap()["decoder"].as_str().unwrap().to_string();
        rows.push(format!(
            "| {} | file ({}) | {codec} | {} | one event; clip H.264 MP4, {} frames, {:.1} s; sealed original {} |",
            id,
            path.extension().unwrap().to_string_lossy(),
            decoder,
            ev["clip"]["frames"],
            ev["clip"]["duration_s"].as_f64().unwrap(),
            want_ext
        ));
    }
    // the sealed H.265 original opens to an H.265 stream, as the camera sent it
    let h265 = out.iter().find(|e| e["payload"]["camera"] == "h265-mkv").unwrap();
    let id = h265["payload"]["evidence_id"].as_str().unwrap();
    use age::secrecy::ExposeSecret;
    let idf = site.path("authority.key");
    std::fs::write(&idf, format!("{}\n", authority.to_string().expose_secret())).unwrap();
    let unsealed = site.path("unsealed");
    let o = vigil()
        .args(["evidence", "unseal", id, "--identity"])
        .arg(&idf)
        .arg("--out")
        .arg(&unsealed)
        .args(["--pipeline", site.pipeline.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let original = unsealed.join(format!("{id}-original.mp4"));
    let caps = video_caps(&original);
    assert!(caps.starts_with("video/x-h265"), "the original is not re-encoded: {caps}");
    for r in rows {
        println!("{r}");
    }
    println!(
        "| h265-mkv sealed original | unsealed | {} | – | {} |",
        caps.split(',').next().unwrap(),
        original.display()
    );
}

#[test]
fn an_h265_rtsp_camera_fires_with_a_clip_that_decodes_and_lasts_pre_plus_post_roll() {
    let media_dir = tempfile::tempdir().unwrap();
    let file = media_dir.path().join("h265.mp4");
    // with B-frames (x265's defaults), the hard case: RTP carries no decode times and the
    // frames arrive in decode order with earlier timestamps (I/P-only streams: the H.264 RTSP
    // tests and the sub-stream test)
    transcode(
        &sample("astronaut-pan.mp4"),
        &file,
        "identity",
        "x265enc speed-preset=ultrafast key-int-max=25 ! h265parse",
        "mp4mux",
    );
    let server = RtspServer::serve_h265_file(&file);
    let site = Site::new("[clip]\npre_roll_s = 2\npost_roll_s = 2\n", &astronaut_camera(&server.url, ""));
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("evidence event", Duration::from_secs(120));
    w.sigterm();
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "clean exit on SIGTERM; log:\n{}", w.log_text());
    let log = w.log_text();
    if std::env::var("VIGIL_TEST_LOG").is_ok() {
        eprintln!("{log}");
    }
    let line = log.lines().find(|l| l.contains("camera video")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("H.265/HEVC") && line.contains("h265"), "{line}");
    let out = site.outbox();
    assert!(!out.is_empty(), "an event from the H.265 stream");
    let ev = &out[0]["payload"];
    assert_eq!(ev["rule"]["id"], "no_mask");
    check_evidence(ev, |k| site.stored(k), 4.0, Some((0.78, 1.0)));
    assert_eq!(ev["admissibility"]["admissible"], true, "a clean clip: {}", ev["health"]);
    println!(
        "| cam1 | RTSP (rtph265depay), B-frames | H.265/HEVC | {} | {} event(s); clip H.264 MP4, {} frames, {:.1} s |",
        serde_json::from_str::<serde_json::Value>(line).unwrap()["decoder"].as_str().unwrap(),
        out.len(),
        ev["clip"]["frames"],
        ev["clip"]["duration_s"].as_f64().unwrap()
    );
}

#[test]
fn a_sub_stream_is_analysed_while_the_clip_comes_from_the_main_stream_at_its_resolution() {
    let media_dir = tempfile::tempdir().unwrap();
    // the same scene as a 1280×720 main stream and a 640×360 sub stream, as an IP camera
    // serves them (two RTSP servers, so that one can drop alone)
    let main_file = media_dir.path().join("main-720p.mp4");
    transcode(
        &sample("astronaut-pan.mp4"),
        &main_file,
        "videoscale ! video/x-raw,width=1280,height=720",
        "x264enc speed-preset=ultrafast key-int-max=25 bframes=0 ! h264parse",
        "mp4mux",
    );
    let main = RtspServer::serve_file(&main_file);
    let sub = RtspServer::serve_file(&sample("astronaut-pan.mp4"));
    let site = Site::new(
        "[clip]\npre_roll_s = 2\npost_roll_s = 2\n",
        &astronaut_camera(&main.url, &format!("analysis_source = \"{}\"\nstall_s = 2", sub.url)),
    );
    let mut w = Worker::start(&site.pipeline);
    w.wait_log("evidence event", Duration::from_secs(120));
    // the sub stream drops alone: the camera is down and the log says which stream
    drop(sub);
    w.wait_log("sub stream (analysis_source)", Duration::from_secs(30));
    w.sigterm();
    assert_eq!(w.wait(Duration::from_secs(60)), 0, "{}", w.log_text());
    let log = w.log_text();
    let video: Vec<&str> = log.lines().filter(|l| l.contains("\"camera video\"")).collect();
    assert!(
        video.iter().any(|l| l.contains("main (evidence)") && l.contains("none (kept encoded)")),
        "the main stream is not decoded for analysis: {video:?}"
    );
    assert!(video.iter().any(|l| l.contains("sub (analysis)") && l.contains("avdec_h264")), "{video:?}");
    let down = log
        .lines()
        .find(|l| l.contains("camera down; reconnecting") && l.contains("sub stream (analysis_source)"))
        .unwrap_or_else(|| panic!("the log says which stream dropped: {log}"));
    let health = site
        .outbox_all()
        .into_iter()
        .find(|e| {
            e["subject"].as_str().is_some_and(|s| s.starts_with("vigil.health"))
                && e["payload"]["detail"].as_str().is_some_and(|d| d.contains("sub stream"))
        })
        .unwrap_or_else(|| panic!("a health event: {:?}", site.outbox_all()));
    assert_eq!(health["payload"]["active"], true, "{health}");

    let out = site.outbox();
    let ev = &out[0]["payload"];
    // the clip: the main stream's 1280×720, masked at that resolution, pre + post roll
    assert_eq!((ev["clip"]["width"].as_u64(), ev["clip"]["height"].as_u64()), (Some(1280), Some(720)));
    check_evidence_sized(ev, |k| site.stored(k), 4.0, Some((0.78, 1.0)), (1280, 720));
    let streams = &ev["streams"];
    assert!(streams["clip_source"].as_str().unwrap().contains(&main.url), "{streams}");
    assert_eq!((streams["analysis_width"].as_u64(), streams["analysis_height"].as_u64()), (Some(640), Some(360)));
    assert!(streams["alignment"].as_str().unwrap().contains("one pipeline clock"), "{streams}");
    // the boxes, detected on the sub stream, sit on the faces of the main stream's snapshot:
    // CenterFace on the 1280×720 snapshot finds a face where the trigger's box is
    let trigger = ev["detections"].as_array().unwrap().iter().find(|d| d["trigger"] == true).unwrap().clone();
    let b = &trigger["box"];
    let bbox = vigil::frame::BBox {
        x1: b["x1"].as_f64().unwrap() as f32,
        y1: b["y1"].as_f64().unwrap() as f32,
        x2: b["x2"].as_f64().unwrap() as f32,
        y2: b["y2"].as_f64().unwrap() as f32,
    };
    let snap = decode_jpeg(&site.stored(ev["artifacts"]["snapshot"]["key"].as_str().unwrap()));
    assert_eq!(snap.dimensions(), (1280, 720));
    let mut faces = vigil::detect::FaceDetector::load(
        &repo().join("models"),
        "centerface",
        &vigil::detect::RuntimeOptions::default(),
    )
    .unwrap();
    let found = faces.detect(&vigil::frame::RgbFrame::from_image(&snap), 0.5).unwrap();
    let best = found.iter().map(|f| f.bbox.iou(&bbox)).fold(0.0f32, f32::max);
    assert!(
        best >= 0.5,
        "the trigger's box {bbox:?} is on a face of the snapshot (best IoU {best:.2}; faces {found:?})"
    );
    // and it is drawn there: the annotated snapshot differs from the plain one along the box
    let ann = decode_jpeg(&site.stored(ev["artifacts"]["snapshot_annotated"]["key"].as_str().unwrap()));
    let y = (bbox.y2.round() as u32).saturating_sub(2).min(719); // inside the 4 px line
    let changed = (bbox.x1 as u32..bbox.x2 as u32)
        .filter(|&x| {
            let (p, q) = (snap.get_pixel(x, y).0, ann.get_pixel(x, y).0);
            (0..3).map(|i| (p[i] as i32 - q[i] as i32).abs()).sum::<i32>() > 60
        })
        .count();
    let width = (bbox.x2 - bbox.x1) as usize;
    assert!(changed * 10 >= width * 8, "the box's bottom edge is drawn at 1280×720 ({changed} of {width} px)");
    println!(
        "| main + sub stream (RTSP, 1280×720 + 640×360) | clip {}×{}, {} frames, {:.1} s; trigger box IoU {best:.2} with CenterFace on the snapshot; sub stream dropped → `{}` |",
        ev["clip"]["width"],
        ev["clip"]["height"],
        ev["clip"]["frames"],
        ev["clip"]["duration_s"].as_f64().unwrap(),
        serde_json::from_str::<serde_json::Value>(down).unwrap()["error"].as_str().unwrap()
    );
}
