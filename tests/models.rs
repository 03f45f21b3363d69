//! The vendored models reproduce MODELS.md's reference results on scikit-image's sample photos,
//! with vigil's own pre- and post-processing.

mod common;

use vigil::detect::{FaceDetector, MaskClassifier, RuntimeOptions};
use vigil::frame::{BBox, RgbFrame};

fn photo(name: &str) -> RgbFrame {
    let img = image::open(common::skimage_photo(name)).unwrap().to_rgb8();
    RgbFrame::from_image(&img)
}

fn detector() -> FaceDetector {
    FaceDetector::load(&common::repo().join("models"), "centerface", &RuntimeOptions::default()).unwrap()
}

fn classifier() -> MaskClassifier {
    MaskClassifier::load(&common::repo().join("models"), "mask-classifier-mobilenetv2", &RuntimeOptions::default())
        .unwrap()
}

#[test]
fn centerface_finds_the_astronaut_face_as_models_md_says() {
    let mut d = detector();
    let faces = d.detect(&photo("astronaut.png"), 0.5).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
    let f = faces[0];
    // MODELS.md: astronaut: one face, [181,58,269,177], score 0.93
    let want = [181.0, 58.0, 269.0, 177.0];
    let got = [f.bbox.x1, f.bbox.y1, f.bbox.x2, f.bbox.y2];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 2.0, "box {got:?} vs {want:?}");
    }
    assert!((f.score - 0.93).abs() < 0.01, "score {}", f.score);
    // landmarks: eyes above nose above mouth, inside the box
    let [le, re, nose, lm, rm] = f.landmarks;
    assert!(le[0] < re[0] && lm[0] < rm[0]);
    assert!(le[1] < nose[1] && nose[1] < lm[1]);
    for p in f.landmarks {
        assert!(p[0] > f.bbox.x1 && p[0] < f.bbox.x2 && p[1] > f.bbox.y1 && p[1] < f.bbox.y2);
    }
}

#[test]
fn centerface_cameraman_one_face_and_no_face_on_cat_or_coffee() {
    let mut d = detector();
    let cam = d.detect(&photo("camera.png"), 0.5).unwrap();
    assert_eq!(cam.len(), 1);
    assert!((cam[0].score - 0.83).abs() < 0.02, "cameraman score {}", cam[0].score);
    // MODELS.md: heatmap maximum 0.08 (chelsea) and 0.03 (coffee), so nothing even at 0.2
    assert!(d.detect(&photo("chelsea.png"), 0.2).unwrap().is_empty());
    assert!(d.detect(&photo("coffee.png"), 0.2).unwrap().is_empty());
}

#[test]
fn centerface_maps_boxes_back_through_a_stretch_resize() {
    // 500x380 is not a multiple of 32: the detector stretches to 512x384 and maps back
    let mut d = detector();
    let full = photo("astronaut.png");
    let img = image::imageops::resize(
        &image::RgbImage::from_raw(512, 512, full.data.clone()).unwrap(),
        500,
        380,
        image::imageops::FilterType::Triangle,
    );
    let faces = d.detect(&RgbFrame::from_image(&img), 0.5).unwrap();
    assert_eq!(faces.len(), 1);
    let b = faces[0].bbox;
    let (sx, sy) = (500.0 / 512.0, 380.0 / 512.0);
    let want = BBox { x1: 181.0 * sx, y1: 58.0 * sy, x2: 269.0 * sx, y2: 177.0 * sy };
    // the network sees a squashed face, so the box differs a little; it must land on the same face
    assert!(b.iou(&want) > 0.75, "box {b:?} vs {want:?}: IoU {}", b.iou(&want));
    assert!(b.x2 <= 500.0 && b.y2 <= 380.0);
}

#[test]
fn classifier_says_no_mask_on_bare_faces_and_mask_on_a_drawn_mask() {
    let mut d = detector();
    let mut c = classifier();
    let mut frame = photo("astronaut.png");
    let f = d.detect(&frame, 0.5).unwrap()[0];
    let cam = photo("camera.png");
    let cf = d.detect(&cam, 0.5).unwrap()[0];
    // MODELS.md: unmasked faces came out "no mask" with probs[1] between 0.92 and 0.999
    let p = c.no_mask_prob(&frame, &[f.bbox], 0.0).unwrap();
    assert!(p[0] > 0.9, "astronaut no-mask prob {}", p[0]);
    let p = c.no_mask_prob(&cam, &[cf.bbox], 0.0).unwrap();
    assert!(p[0] > 0.9, "cameraman no-mask prob {}", p[0]);

    // Paint a light-blue surgical-mask shape over nose, mouth and chin (a trapezoid narrowing to the
    // chin), as MODELS.md's own check did with a drawn polygon.
    let nose = f.landmarks[2];
    let top = nose[1] - 0.12 * f.bbox.h();
    let bottom = f.bbox.y2 + 0.05 * f.bbox.h();
    for y in top as u32..bottom as u32 {
        let t = (y as f32 - top) / (bottom - top);
        let inset = f.bbox.w() * (0.02 + 0.15 * t * t);
        for x in (f.bbox.x1 + inset) as u32..(f.bbox.x2 - inset) as u32 {
            let i = (y * frame.width + x) as usize * 3;
            frame.data[i..i + 3].copy_from_slice(&[120, 180, 230]);
        }
    }
    let p = c.no_mask_prob(&frame, &[f.bbox], 0.0).unwrap();
    assert!(p[0] < 0.5, "astronaut with a drawn mask: no-mask prob {}", p[0]);
}

#[test]
fn classifier_batch_equals_single_runs() {
    let mut d = detector();
    let mut c = classifier();
    let frame = photo("astronaut.png");
    let f = d.detect(&frame, 0.5).unwrap()[0];
    let other = BBox { x1: 10.0, y1: 300.0, x2: 120.0, y2: 420.0 };
    let batch = c.no_mask_prob(&frame, &[f.bbox, other], 0.0).unwrap();
    let one = c.no_mask_prob(&frame, &[f.bbox], 0.0).unwrap();
    let two = c.no_mask_prob(&frame, &[other], 0.0).unwrap();
    assert!((batch[0] - one[0]).abs() < 1e-4 && (batch[1] - two[0]).abs() < 1e-4, "{batch:?} {one:?} {two:?}");
}

#[test]
fn the_fitted_head_reads_its_crop_margins_features_concatenated() {
    let dir = common::repo().join("models");
    let head = vigil::detect::FittedHead::load(&dir, "mask-head-fitted").unwrap();
    assert_eq!(head.views, [0.0, 0.15], "the shipped head was chosen with two crop margins");
    let mut c = MaskClassifier::load(&dir, &head.features_model, &RuntimeOptions::default()).unwrap();
    let frame = photo("astronaut.png");
    let f = detector().detect(&frame, 0.5).unwrap()[0];
    // by hand: features of each margin's crop, concatenated in the head's order
    let mut x = Vec::new();
    for m in &head.views {
        let (_, feats) = c.features(&frame, &[f.bbox.expand(*m, frame.width as f32, frame.height as f32)]).unwrap();
        x.extend_from_slice(&feats[0]);
    }
    assert_eq!(x.len(), head.weights.len());
    let by_hand = head.predict(&x);
    c.head = Some(head);
    // the crop margin argument is for the pretrained classifier; the head uses its own
    let p = c.no_mask_prob(&frame, &[f.bbox], 0.3).unwrap();
    assert!((p[0] - by_hand).abs() < 1e-4, "pipeline {} vs by hand {by_hand}", p[0]);
    assert!(p[0] > 0.5, "the bare astronaut face is no-mask for the head: {}", p[0]);
}

fn objects() -> vigil::detect::ObjectDetector {
    vigil::detect::ObjectDetector::load(&common::repo().join("models"), "coco-nanodet", &RuntimeOptions::default())
        .unwrap()
}

/// The vendored NanoDet with its manifest's `letterbox` set to `letterbox` (the shipped manifest
/// letterboxes; MODELS.md's reference figures are for a stretch resize).
fn objects_resized(letterbox: bool, dir: &std::path::Path) -> vigil::detect::ObjectDetector {
    let models = common::repo().join("models");
    let manifest = std::fs::read_to_string(models.join("coco-nanodet.toml")).unwrap();
    assert!(manifest.contains("\nletterbox = true\n"), "the shipped manifest letterboxes");
    let manifest = manifest.replace("\nletterbox = true\n", &format!("\nletterbox = {letterbox}\n"));
    std::fs::write(dir.join("coco-nanodet.toml"), manifest).unwrap();
    std::fs::copy(models.join("coco-nanodet.onnx"), dir.join("coco-nanodet.onnx")).unwrap();
    vigil::detect::ObjectDetector::load(dir, "coco-nanodet", &RuntimeOptions::default()).unwrap()
}

#[test]
fn nanodet_finds_the_coffee_cup_and_the_astronaut_as_models_md_says() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = objects_resized(false, tmp.path());
    let all = vec![true; d.labels().len()];
    let cup = d.labels().iter().position(|l| l == "cup").unwrap() as u16;
    let person = d.labels().iter().position(|l| l == "person").unwrap() as u16;
    // MODELS.md §4: coffee: cup 0.53 [147,10,426,398]; astronaut: person 0.73 [14,14,364,507]
    for (name, class, score, want) in [
        ("coffee.png", cup, 0.53, [147.0, 10.0, 426.0, 398.0]),
        ("astronaut.png", person, 0.73, [14.0, 14.0, 364.0, 507.0]),
    ] {
        let f = photo(name);
        let mut found = Vec::new();
        d.detect_in(&f, f.full(), 0.35, &all, &mut found).unwrap();
        let best = found.iter().filter(|o| o.class == class).max_by(|a, b| a.score.total_cmp(&b.score));
        let o = best.unwrap_or_else(|| panic!("{name}: no {class} in {found:?}"));
        assert!((o.score - score).abs() < 0.02, "{name}: score {}", o.score);
        let got = [o.bbox.x1, o.bbox.y1, o.bbox.x2, o.bbox.y2];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 3.0, "{name}: box {got:?} vs {want:?}");
        }
    }
    // only the wanted classes come back, and a region crop maps boxes back to frame pixels
    let f = photo("coffee.png");
    let only_cup: Vec<bool> = (0..d.labels().len()).map(|c| c == cup as usize).collect();
    let roi = BBox { x1: 100.0, y1: 0.0, x2: 500.0, y2: 400.0 };
    let mut found = Vec::new();
    d.detect_in(&f, roi, 0.35, &only_cup, &mut found).unwrap();
    assert!(!found.is_empty() && found.iter().all(|o| o.class == cup), "{found:?}");
    let b = found[0].bbox;
    assert!(b.x1 >= 100.0 && (b.center().0 - 286.0).abs() < 30.0, "box in frame pixels: {b:?}");
    // letterboxed (the shipped manifest): a square photo is seen as before; a wide region's boxes
    // still come back in frame pixels, where the whole photo puts them
    let mut d = objects();
    let f = photo("astronaut.png");
    let mut found = Vec::new();
    d.detect_in(&f, f.full(), 0.35, &all, &mut found).unwrap();
    assert!(found.iter().any(|o| o.class == person && (o.score - 0.73).abs() < 0.02), "{found:?}");
    let wide = BBox { x1: 0.0, y1: 0.0, x2: 512.0, y2: 300.0 };
    let mut found = Vec::new();
    d.detect_in(&f, wide, 0.35, &all, &mut found).unwrap();
    let o = found.iter().find(|o| o.class == person).unwrap_or_else(|| panic!("no person in {found:?}"));
    assert!(o.bbox.x1 < 40.0 && o.bbox.y1 < 40.0 && (o.bbox.x2 - 364.0).abs() < 30.0 && o.bbox.y2 <= 300.0, "{o:?}");
}

#[test]
fn batched_face_detection_matches_one_at_a_time() {
    let mut d = detector();
    let (a, c) = (photo("astronaut.png"), photo("camera.png"));
    assert_eq!((a.width, a.height), (c.width, c.height), "sample photos are both 512x512");
    let batch = d.detect_batch(&[&a, &c], a.full(), 0, 0.5).unwrap();
    let one = [d.detect(&a, 0.5).unwrap(), d.detect(&c, 0.5).unwrap()];
    for (b, o) in batch.iter().zip(&one) {
        assert_eq!(b.len(), o.len());
        for (x, y) in b.iter().zip(o) {
            assert!((x.score - y.score).abs() < 1e-4 && (x.bbox.x1 - y.bbox.x1).abs() < 0.1);
        }
    }
}

/// A model copy with the face detector and the plain classifier.
fn no_mask_set() -> vigil::detect::ModelSet {
    let dir = common::repo().join("models");
    vigil::detect::ModelSet {
        no_mask: Some(
            vigil::detect::Models::load(
                &dir,
                "centerface",
                "mask-classifier-mobilenetv2",
                None,
                &RuntimeOptions::default(),
            )
            .unwrap(),
        ),
        objects: None,
        dirty: None,
        attributes: Vec::new(),
        detectors: Vec::new(),
    }
}

#[test]
fn cross_camera_batching_gives_each_camera_its_own_faces() {
    let pool =
        vigil::detect::ModelPool::new(vec![no_mask_set()]).with_batching(2, std::time::Duration::from_millis(500));
    let (a, c) = (photo("astronaut.png"), photo("camera.png"));
    let want = [detector().detect(&a, 0.5).unwrap(), detector().detect(&c, 0.5).unwrap()];
    // two cameras at once: one batch of two
    let got: Vec<Vec<vigil::detect::Face>> = std::thread::scope(|s| {
        let hs: Vec<_> = [&a, &c]
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let pool = &pool;
                s.spawn(move || {
                    let mut out = Vec::new();
                    pool.detect_faces(i, f, f.full(), 0, 0.5, &mut out).unwrap();
                    out
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.len(), w.len());
        for (x, y) in g.iter().zip(w) {
            assert!((x.score - y.score).abs() < 1e-4 && (x.bbox.x1 - y.bbox.x1).abs() < 0.1, "{x:?} vs {y:?}");
        }
    }
    // a camera alone is not held up for longer than the wait
    let t = std::time::Instant::now();
    let mut alone = Vec::new();
    pool.detect_faces(0, &a, a.full(), 0, 0.5, &mut alone).unwrap();
    assert_eq!(alone.len(), want[0].len());
    assert!(t.elapsed() < std::time::Duration::from_secs(2), "{:?}", t.elapsed());
}

/// The second passes of the no-mask rule, on its own inference path, on a crowd (a labelled
/// scene with 57 faces under 16 px): `tile_pass` (2×2 tiles) and `person_pass` (the heads of
/// NanoDet's persons, zoomed) each find small faces the whole-frame pass misses, none twice.
#[test]
fn the_rules_second_passes_find_small_faces_the_whole_frame_pass_misses() {
    use vigil::rules::Rule;
    let img = image::open(common::shared_data("mask/scenes/images/maksssksksss240.jpg")).unwrap().to_rgb8();
    let frame = RgbFrame::from_image(&img);
    let mut set = no_mask_set();
    set.objects = Some(
        vigil::detect::ObjectDetector::load(&common::repo().join("models"), "coco-nanodet", &RuntimeOptions::default())
            .unwrap(),
    );
    let pool = vigil::detect::ModelPool::new(vec![set]);
    let faces = |tile_pass: bool, person_pass: bool| {
        let rule =
            vigil::rules::NoMaskRule { input_width: 0, min_face_px: 0.0, tile_pass, person_pass, ..Default::default() };
        let mut st = vigil::rules::no_mask::NoMask::new(rule);
        let mut s = vigil::rules::Scratch::default();
        let ctx = vigil::rules::FrameCtx { frame: &frame, wall: chrono::Utc::now(), utc_offset_s: 0, model_hint: 0 };
        st.infer(&ctx, vigil::rules::Look::Full, &pool, &mut s).unwrap();
        s.faces.iter().map(|f| f.bbox).collect::<Vec<BBox>>()
    };
    let (whole, tiled, persons) = (faces(false, false), faces(true, false), faces(false, true));
    eprintln!("faces: whole frame {}, tile pass {}, person pass {}", whole.len(), tiled.len(), persons.len());
    assert!(tiled.len() >= whole.len() + 5, "whole frame {} faces, with the tile pass {}", whole.len(), tiled.len());
    assert!(
        persons.len() >= whole.len() + 5,
        "whole frame {} faces, with the person pass {}",
        whole.len(),
        persons.len()
    );
    // no face twice: the passes' faces are joined by NMS
    for found in [&tiled, &persons] {
        for (i, a) in found.iter().enumerate() {
            assert!(found[i + 1..].iter().all(|b| a.iou(b) < 0.3), "{a:?} twice");
        }
    }
}

/// `vigil eval` evaluates heads of one features model per run: two heads that read different
/// features models are refused before any model loads, naming both heads and both models.
#[test]
fn eval_refuses_heads_on_different_features_models() {
    let d = tempfile::tempdir().unwrap();
    let models = common::repo().join("models");
    for f in ["mask-head-fitted.json", "mask-head-fitted.toml"] {
        std::fs::copy(models.join(f), d.path().join(f)).unwrap();
    }
    let json = std::fs::read_to_string(models.join("mask-head-fitted.json")).unwrap();
    let other = json.replacen("\"id\": \"mask-head-fitted\"", "\"id\": \"other-head\"", 1).replacen(
        "\"features_model\": \"mask-classifier-mobilenetv2-features\"",
        "\"features_model\": \"mask-classifier-mobilenetv2-features-ml\"",
        1,
    );
    assert_ne!(other, json);
    std::fs::write(d.path().join("other-head.json"), &other).unwrap();
    std::fs::write(
        d.path().join("other-head.toml"),
        format!("id = \"other-head\"\nfile = \"other-head.json\"\nsha256 = \"{}\"\n", common::sha256(other.as_bytes())),
    )
    .unwrap();
    let o = common::vigil()
        .args(["eval", "--models"])
        .arg(d.path())
        .arg("--data")
        .arg(common::shared_data(""))
        .args(["--head", "mask-head-fitted,other-head", "--out"])
        .arg(d.path().join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("mask-head-fitted")
            && err.contains("other-head")
            && err.contains("different features models")
            && err.contains("mask-classifier-mobilenetv2-features-ml"),
        "{err}"
    );
    assert!(!d.path().join("out/report.json").exists(), "no report from a refused run");
}

#[path = "support/onnx.rs"]
mod onnx;

/// A site's own detector: an ONNX file and its manifest in the models folder, the decoder named
/// there. Writes `<dir>/<id>.onnx` (a graph whose output is `output`, of `shape`) and its manifest
/// (letterboxed 64×64 RGB /255, classes rat and cockroach).
fn site_detector(dir: &std::path::Path, id: &str, decoder: &str, shape: &[i64], output: &[f32]) {
    site_detector_with(dir, id, decoder, &[("output0", shape, output)]);
}

/// [`site_detector`] with several outputs `(name, shape, value)`, in the manifest's order.
fn site_detector_with(dir: &std::path::Path, id: &str, decoder: &str, outputs: &[(&str, &[i64], &[f32])]) {
    let model = onnx::constant_outputs("images", &[1, 3, 64, 64], outputs);
    let names: Vec<String> = outputs.iter().map(|o| format!("{:?}", o.0)).collect();
    let names = names.join(", ");
    std::fs::write(dir.join(format!("{id}.onnx")), &model).unwrap();
    let sha = vigil::util::sha256_hex(&model);
    std::fs::write(
        dir.join(format!("{id}.toml")),
        format!(
            r#"id = "{id}"
file = "{id}.onnx"
sha256 = "{sha}"
task = "object_detection"
decoder = "{decoder}"
licence = "test graph"
source = "made by tests/models.rs"
outputs = [{names}]
labels = ["rat", "cockroach"]
[input]
name = "images"
layout = "NCHW"
color = "RGB"
width = 64
height = 64
multiple_of = 0
mean = [0.0, 0.0, 0.0]
std = [255.0, 255.0, 255.0]
resize = "letterbox"
letterbox = true
"#
        ),
    )
    .unwrap();
}

/// YOLOv8 (`[1, 4 + classes, anchors]`) and YOLOv5 (`[1, anchors, 5 + classes]`) outputs of a
/// graph made here, with known values, decoded through ONNX Runtime and `detect_in`: best class per
/// anchor over the threshold (v5: × objectness), per-class NMS, boxes mapped back from the
/// letterboxed input to frame pixels.
#[test]
fn a_sites_yolo_detector_is_decoded_from_its_manifest() {
    let d = tempfile::tempdir().unwrap();
    // v8: 3 anchors, rows cx, cy, w, h, rat, cockroach (channel-major)
    let anchors = [
        [32.0, 16.0, 20.0, 10.0, 0.9, 0.1], // a rat
        [33.0, 16.0, 20.0, 10.0, 0.6, 0.0], // the same rat again: NMS
        [10.0, 50.0, 8.0, 8.0, 0.0, 0.2],   // a cockroach under the threshold
    ];
    let v8: Vec<f32> = (0..6).flat_map(|r| anchors.iter().map(move |a| a[r])).collect();
    site_detector(d.path(), "site-yolo8", "yolov8", &[1, 6, 3], &v8);
    // v5: cx, cy, w, h, objectness, rat, cockroach (anchor-major)
    let v5 = [
        32.0, 16.0, 20.0, 10.0, 0.8, 0.9, 0.1, // rat 0.72
        10.0, 50.0, 8.0, 8.0, 0.3, 0.0, 1.0, // objectness 0.3: nothing
        48.0, 48.0, 10.0, 6.0, 0.9, 0.1, 0.5, // cockroach 0.45
    ];
    site_detector(d.path(), "site-yolo5", "yolov5", &[1, 3, 7], &v5);
    // a 128×128 frame: letterboxed at 0.5, so input pixels ×2 are frame pixels
    let frame = RgbFrame::from_image(&image::RgbImage::new(128, 128));
    let found = |id: &str| {
        let mut det = vigil::detect::ObjectDetector::load(d.path(), id, &RuntimeOptions::default())
            .unwrap_or_else(|e| panic!("{e:#}"));
        let mut out = Vec::new();
        det.detect_in(&frame, frame.full(), 0.35, &[true, true], &mut out).unwrap();
        out.iter()
            .map(|o| (o.class, (o.score * 100.0).round() as u32, [o.bbox.x1, o.bbox.y1, o.bbox.x2, o.bbox.y2]))
            .collect::<Vec<_>>()
    };
    assert_eq!(found("site-yolo8"), vec![(0, 90, [44.0, 22.0, 84.0, 42.0])]);
    assert_eq!(found("site-yolo5"), vec![(0, 72, [44.0, 22.0, 84.0, 42.0]), (1, 45, [86.0, 90.0, 106.0, 102.0])]);

    // SSD-style: 3 boxes as fractions of the input, scores per class
    let boxes = [0.25, 0.125, 0.5, 0.375, 0.26, 0.125, 0.5, 0.375, 0.0, 0.5, 0.25, 1.0];
    let scores = [0.9, 0.05, 0.7, 0.1, 0.3, 0.6];
    site_detector_with(d.path(), "site-ssd", "ssd", &[("boxes", &[1, 3, 4], &boxes), ("scores", &[1, 3, 2], &scores)]);
    // rat (NMS keeps the better of the two alike), cockroach; input 64 px = frame 128 px
    assert_eq!(found("site-ssd"), vec![(0, 90, [32.0, 16.0, 64.0, 48.0]), (1, 60, [0.0, 64.0, 32.0, 128.0])]);

    // CenterNet: a 16×16 heatmap (stride 4) per class, sizes and offsets in cells
    let cells = 16 * 16;
    let mut heat = vec![0.0f32; 2 * cells];
    heat[4 * 16 + 8] = 0.8; // a rat peak at cell (x 8, y 4)
    heat[4 * 16 + 9] = 0.5; // its neighbour: not a peak
    heat[cells + 12 * 16 + 2] = 0.4; // a cockroach peak at (2, 12)
    heat[cells + 15 * 16 + 15] = 0.2; // under the threshold
    let (mut wh, mut off) = (vec![0.0f32; 2 * cells], vec![0.0f32; 2 * cells]);
    (wh[4 * 16 + 8], wh[cells + 4 * 16 + 8]) = (4.0, 2.0); // 16 × 8 input pixels
    (off[4 * 16 + 8], off[cells + 4 * 16 + 8]) = (0.5, 0.5);
    (wh[12 * 16 + 2], wh[cells + 12 * 16 + 2]) = (2.0, 2.0);
    let outputs: [(&str, &[i64], &[f32]); 3] =
        [("heatmap", &[1, 2, 16, 16], &heat), ("size", &[1, 2, 16, 16], &wh), ("offset", &[1, 2, 16, 16], &off)];
    site_detector_with(d.path(), "site-centernet", "centernet", &outputs);
    // rat: centre (8.5, 4.5) cells = (34, 18) input px, 16×8 → frame (52, 28)-(84, 44); cockroach
    // centre (8, 48), 8×8 → frame (8, 88)-(24, 104)
    assert_eq!(found("site-centernet"), vec![(0, 80, [52.0, 28.0, 84.0, 44.0]), (1, 40, [8.0, 88.0, 24.0, 104.0])]);
    // outputs that do not fit the input are an error naming the model, not a panic
    let small = vec![0.0f32; 2 * 8 * 8];
    let outputs: [(&str, &[i64], &[f32]); 3] =
        [("heatmap", &[1, 2, 8, 7], &small[..112]), ("size", &[1, 2, 8, 8], &small), ("offset", &[1, 2, 8, 8], &small)];
    site_detector_with(d.path(), "site-bad", "centernet", &outputs);
    let mut det = vigil::detect::ObjectDetector::load(d.path(), "site-bad", &RuntimeOptions::default()).unwrap();
    let e = det.detect_in(&frame, frame.full(), 0.35, &[true, true], &mut Vec::new()).unwrap_err();
    assert!(format!("{e:#}").contains("site-bad") && format!("{e:#}").contains("do not fit"), "{e:#}");
    // the manifest names as many outputs as the decoder reads
    let m = std::fs::read_to_string(d.path().join("site-ssd.toml")).unwrap();
    std::fs::write(d.path().join("site-ssd.toml"), m.replace(", \"scores\"", "")).unwrap();
    let e = vigil::detect::ObjectDetector::load(d.path(), "site-ssd", &RuntimeOptions::default()).err().unwrap();
    assert!(format!("{e:#}").contains("reads 2 output(s), the manifest names 1"), "{e:#}");
    // a manifest whose decoder the object stage does not know is refused, naming those it does
    let m = std::fs::read_to_string(d.path().join("site-yolo8.toml")).unwrap();
    std::fs::write(d.path().join("site-yolo8.toml"), m.replace("\"yolov8\"", "\"yolox\"")).unwrap();
    let e = vigil::detect::ObjectDetector::load(d.path(), "site-yolo8", &RuntimeOptions::default()).err().unwrap();
    assert!(format!("{e:#}").contains("decoder is \"yolox\"") && format!("{e:#}").contains("\"yolov8\""), "{e:#}");
}

/// `vigil check` (with `extra` arguments) on a pipeline file written in `dir`: success, and what it printed.
fn check_pipeline(dir: &std::path::Path, text: &str, extra: &[&str]) -> (bool, String) {
    let p = dir.join("p.toml");
    std::fs::write(&p, text).unwrap();
    let o = common::vigil().arg("check").args(extra).arg(&p).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
}

/// A rule names the classes of the site's detector: no code. `vigil check` takes a pipeline whose
/// object model is the site's and whose rule asks for its "rat"; COCO's "cat" is then refused.
#[test]
fn a_rule_names_the_classes_of_the_sites_detector() {
    let d = tempfile::tempdir().unwrap();
    let v8: Vec<f32> = vec![0.0; 6 * 3];
    site_detector(d.path(), "site-yolo8", "yolov8", &[1, 6, 3], &v8);
    let pipeline = |classes: &str| {
        let text = format!(
            r#"[site]
id = "site"
[models]
dir = "{}"
objects = "site-yolo8"
dirty_head = "none"
[[cameras]]
id = "store"
source = "{}"
privacy_mask = "none"
  [[cameras.rules]]
  kind = "object_present"
  classes = {classes}
"#,
            d.path().display(),
            common::sample("chelsea-pan.mp4").display()
        );
        check_pipeline(d.path(), &text, &[])
    };
    let (ok, out) = pipeline("[\"rat\"]");
    assert!(ok, "{out}");
    let (ok, out) = pipeline("[\"cat\"]");
    assert!(!ok && out.contains("classes[0]") && out.contains("\"cat\" is not a class of the object model"), "{out}");
}

/// Copies the first `n` files (sorted) of `../shared/data/mask/<sub>` into `dir/<sub>`.
fn some_crops(dir: &std::path::Path, sub: &str, n: usize) {
    let from = common::shared_data(&format!("mask/{sub}"));
    assert!(from.is_dir(), "{}: missing (this test fits on the shared mask crops)", from.display());
    let mut files: Vec<_> = std::fs::read_dir(&from).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    std::fs::create_dir_all(dir.join(sub)).unwrap();
    for f in files.iter().take(n) {
        std::fs::copy(f, dir.join(sub).join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn an_attribute_head_is_fitted_from_a_sites_crops_reproducibly_and_reports_a_part_it_never_read() {
    let d = tempfile::tempdir().unwrap();
    let (crops, models) = (d.path().join("crops"), d.path().join("models"));
    std::fs::create_dir_all(&models).unwrap();
    for f in ["mask-classifier-mobilenetv2-features", "coco-nanodet"]
        .iter()
        .flat_map(|m| [".onnx", ".toml"].map(|e| format!("{m}{e}")))
    {
        std::fs::copy(common::repo().join("models").join(&f), models.join(&f)).unwrap();
    }
    // the mask as the attribute: with_mask/ worn, without_mask/ missing
    some_crops(&crops, "with_mask", 30);
    some_crops(&crops, "without_mask", 30);
    let fit = || {
        let o = common::vigil()
            .args(["fit", "--kind", "attribute", "--name", "mask", "--l2", "0.01,0.1", "--models"])
            .arg(&models)
            .arg("--crops")
            .arg(&crops)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let out = fit();
    println!("{out}");
    let head = vigil::detect::FittedHead::load(&models, "mask-attribute-head").unwrap();
    let p = &head.provenance;
    let (fitted, eval) = (p["fit_examples"].as_u64().unwrap(), p["evaluation_part"]["crops"].clone());
    assert_eq!((p["examples"]["crops"].as_u64(), p["examples"]["scene_persons"].as_u64()), (Some(60), Some(0)));
    assert!(fitted > 20 && fitted < 50, "about 60 % fitted on: {fitted}");
    // the evaluation part is the rest: every missing crop there is a hit or a miss
    let eval_missing = eval["tp"].as_u64().unwrap() + eval["fn_"].as_u64().unwrap();
    assert_eq!(eval_missing, 30 - p["fit_missing"].as_u64().unwrap(), "{p}");
    assert!(out.contains(&format!("evaluation part, crops ({}, never fitted on)", 60 - fitted)), "{out}");
    assert_eq!(p["part"], "head");
    assert!(p["command"].as_str().unwrap().contains("--name mask --part head --crops"), "{p}");
    let data = p["data_sha256"].as_str().unwrap();
    assert!(out.contains(data) && data.len() == 64, "{out}");
    assert!(head.kind.contains("attribute \"mask\""), "{}", head.kind);
    // the same crops, the same head, byte for byte
    let first = std::fs::read(models.join("mask-attribute-head.json")).unwrap();
    fit();
    assert_eq!(first, std::fs::read(models.join("mask-attribute-head.json")).unwrap(), "reproducible");

    // a folder without the "missing" crops: the error names it
    std::fs::remove_dir_all(crops.join("without_mask")).unwrap();
    let o = common::vigil()
        .args(["fit", "--kind", "attribute", "--name", "mask", "--models"])
        .arg(&models)
        .arg("--crops")
        .arg(&crops)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("without_mask") && err.contains("cannot read"), "{err}");
    let o = common::vigil().args(["fit", "--kind", "attribute", "--models"]).arg(&models).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("needs --name"), "{err}");
}

/// `vigil check` takes a rule naming the shipped attribute head and refuses one naming a head
/// that is not there, at the rule's key.
#[test]
fn a_rule_names_an_attribute_head_that_must_be_there() {
    let d = tempfile::tempdir().unwrap();
    let check = |head: &str| {
        let text = format!(
            r#"[site]
id = "site"
[models]
dir = "{}"
[[cameras]]
id = "kitchen"
source = "{}"
privacy_mask = "none"
  [[cameras.rules]]
  kind = "attribute_missing"
  head = "{head}"
"#,
            common::repo().join("models").display(),
            common::sample("camera-pan.mp4").display()
        );
        check_pipeline(d.path(), &text, &["--offline"])
    };
    let (ok, out) = check("mask-attribute-head");
    assert!(ok, "{out}");
    let (ok, out) = check("hat-attribute-head");
    assert!(!ok && out.contains("cameras[0].rules[0].head") && out.contains("hat-attribute-head.toml"), "{out}");
}

/// Writes a face detector made in a test (`<id>.onnx`) with its manifest (`<id>.toml`): 64×64
/// input, `outputs` in order, `(color, mean, std)`; returns the manifest's text.
fn face_detector(
    dir: &std::path::Path,
    id: &str,
    model: &[u8],
    decoder: &str,
    outputs: &[&str],
    input: &str,
    (color, mean, std): (&str, [f32; 3], [f32; 3]),
) -> String {
    std::fs::write(dir.join(format!("{id}.onnx")), model).unwrap();
    let quoted: Vec<String> = outputs.iter().map(|n| format!("{n:?}")).collect();
    let manifest = format!(
        r#"id = "{id}"
file = "{id}.onnx"
sha256 = "{}"
task = "face_detection"
decoder = "{decoder}"
licence = "test graph"
source = "made by tests/models.rs"
outputs = [{}]
labels = ["face"]
[input]
name = "{input}"
layout = "NCHW"
color = "{color}"
width = 64
height = 64
multiple_of = 32
mean = {mean:?}
std = {std:?}
resize = "bilinear stretch"
"#,
        vigil::util::sha256_hex(model),
        quoted.join(", ")
    );
    std::fs::write(dir.join(format!("{id}.toml")), &manifest).unwrap();
    manifest
}

/// A site's SCRFD-style face detector (`decoder = "scrfd"`: per stride 8, 16, 32 scores, box
/// distances and landmarks, two anchors per cell), made here with known outputs and decoded
/// through ONNX Runtime and `detect_in`: boxes and landmarks from the anchor centres, NMS, mapped
/// back from the 64×64 input to a 128×128 frame.
#[test]
fn a_sites_scrfd_face_detector_is_decoded_from_its_manifest() {
    let d = tempfile::tempdir().unwrap();
    let anchors = |stride: usize| (64 / stride) * (64 / stride) * 2;
    let per_stride = |k: usize| -> Vec<Vec<f32>> { [8, 16, 32].map(|s| vec![0.0; k * anchors(s)]).to_vec() };
    let (mut scores, mut boxes, mut kps) = (per_stride(1), per_stride(4), per_stride(10));
    // stride 8, cell (col 3, row 2), anchor 0: centre (24, 16); distances 1, 1, 1, 1.5 strides
    let a = (2 * 8 + 3) * 2;
    scores[0][a] = 0.9;
    boxes[0][4 * a..4 * a + 4].copy_from_slice(&[1.0, 1.0, 1.0, 1.5]);
    kps[0][10 * a..10 * a + 2].copy_from_slice(&[-0.5, -0.25]); // left eye at (20, 14)
    // its second anchor, the same face less sure: joined by NMS
    scores[0][a + 1] = 0.6;
    boxes[0][4 * (a + 1)..4 * (a + 1) + 4].copy_from_slice(&[1.0, 1.0, 1.0, 1.5]);
    // stride 32, cell (1, 1), anchor 0: centre (32, 32), half a stride each way
    let b = (2 + 1) * 2;
    scores[2][b] = 0.7;
    boxes[2][4 * b..4 * b + 4].copy_from_slice(&[0.5, 0.5, 0.5, 0.5]);
    // stride 16: under the threshold
    scores[1][0] = 0.3;
    let names = ["score_8", "score_16", "score_32", "bbox_8", "bbox_16", "bbox_32", "kps_8", "kps_16", "kps_32"];
    let mut outputs: Vec<(&str, Vec<i64>, &[f32])> = Vec::new();
    for (k, s) in [8usize, 16, 32].into_iter().enumerate() {
        outputs.push((names[k], vec![anchors(s) as i64, 1], &scores[k]));
    }
    for (k, s) in [8usize, 16, 32].into_iter().enumerate() {
        outputs.push((names[3 + k], vec![anchors(s) as i64, 4], &boxes[k]));
    }
    for (k, s) in [8usize, 16, 32].into_iter().enumerate() {
        outputs.push((names[6 + k], vec![anchors(s) as i64, 10], &kps[k]));
    }
    let outs: Vec<(&str, &[i64], &[f32])> = outputs.iter().map(|(n, s, v)| (*n, &s[..], *v)).collect();
    let model = onnx::constant_outputs("input.1", &[1, 3, 64, 64], &outs);
    let manifest =
        face_detector(d.path(), "site-scrfd", &model, "scrfd", &names, "input.1", ("RGB", [127.5; 3], [128.0; 3]));
    let mut det =
        FaceDetector::load(d.path(), "site-scrfd", &RuntimeOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
    let frame = RgbFrame::from_image(&image::RgbImage::new(128, 128));
    let faces = det.detect(&frame, 0.5).unwrap();
    let got: Vec<_> = faces
        .iter()
        .map(|f| ((f.score * 100.0).round() as u32, [f.bbox.x1, f.bbox.y1, f.bbox.x2, f.bbox.y2]))
        .collect();
    // input pixels ×2: (16, 8)-(32, 28) and (16, 16)-(48, 48)
    assert_eq!(got, vec![(90, [32.0, 16.0, 64.0, 56.0]), (70, [32.0, 32.0, 96.0, 96.0])]);
    assert_eq!(faces[0].landmarks[0], [40.0, 28.0], "left eye");
    assert_eq!(faces[0].landmarks[1], [48.0, 32.0], "an offset of 0 is the anchor centre");
    // the manifest names as many outputs as the decoder reads
    std::fs::write(d.path().join("site-scrfd.toml"), manifest.replace(", \"kps_32\"", "")).unwrap();
    let e = FaceDetector::load(d.path(), "site-scrfd", &RuntimeOptions::default()).err().unwrap();
    assert!(format!("{e:#}").contains("reads [6, 9] outputs, the manifest names 8"), "{e:#}");
}

/// A site's RetinaFace face detector (`decoder = "retinaface"`: `loc`, `conf`, `landms` against
/// prior boxes of sizes 16/32, 64/128, 256/512 at strides 8, 16, 32; BGR input), made here with
/// known outputs and decoded through ONNX Runtime and `detect_in`, mapped back from the 64×64
/// input to a 128×128 frame.
#[test]
fn a_sites_retinaface_face_detector_is_decoded_from_its_prior_boxes() {
    let d = tempfile::tempdir().unwrap();
    // priors of a 64×64 input: 8×8 cells × 2 + 4×4 × 2 + 2×2 × 2
    let n = 8 * 8 * 2 + 4 * 4 * 2 + 2 * 2 * 2;
    let (mut loc, mut conf, mut landms) = (vec![0f32; 4 * n], vec![0f32; 2 * n], vec![0f32; 10 * n]);
    for k in 0..n {
        conf[2 * k] = 1.0; // background
    }
    // stride 8, cell (col 3, row 2), the size-16 prior: centre (28, 20); no offset
    let a = (2 * 8 + 3) * 2;
    conf[2 * a..2 * a + 2].copy_from_slice(&[0.1, 0.9]);
    landms[10 * a..10 * a + 2].copy_from_slice(&[-2.5, 0.0]); // left eye 4 px left of the centre
    // stride 16, cell (0, 0), the size-64 prior: centre (8, 8); moved by (2.5, 5) × 0.1 × 64 =
    // (16, 32) and halved in size: centre (24, 40), 32 × 32
    let b = 8 * 8 * 2;
    conf[2 * b..2 * b + 2].copy_from_slice(&[0.2, 0.8]);
    let half = 0.5f32.ln() / 0.2;
    loc[4 * b..4 * b + 4].copy_from_slice(&[2.5, 5.0, half, half]);
    // the size-32 prior of the first cell: under the threshold
    conf[2 * (a + 1)..2 * (a + 1) + 2].copy_from_slice(&[0.6, 0.4]);
    let shapes = [vec![1, n as i64, 4], vec![1, n as i64, 2], vec![1, n as i64, 10]];
    let outs: Vec<(&str, &[i64], &[f32])> =
        vec![("loc", &shapes[0], &loc), ("conf", &shapes[1], &conf), ("landms", &shapes[2], &landms)];
    let model = onnx::constant_outputs("input0", &[1, 3, 64, 64], &outs);
    let bgr = ("BGR", [104.0, 117.0, 123.0], [1.0; 3]);
    let manifest =
        face_detector(d.path(), "site-retinaface", &model, "retinaface", &["loc", "conf", "landms"], "input0", bgr);
    let mut det =
        FaceDetector::load(d.path(), "site-retinaface", &RuntimeOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
    let frame = RgbFrame::from_image(&image::RgbImage::new(128, 128));
    let faces = det.detect(&frame, 0.5).unwrap();
    let r = |v: f32| (v * 100.0).round() / 100.0;
    let got: Vec<_> = faces
        .iter()
        .map(|f| ((f.score * 100.0).round() as u32, [r(f.bbox.x1), r(f.bbox.y1), r(f.bbox.x2), r(f.bbox.y2)]))
        .collect();
    // input pixels ×2: (20, 12)-(36, 28) and (8, 24)-(40, 56)
    assert_eq!(got, vec![(90, [40.0, 24.0, 72.0, 56.0]), (80, [16.0, 48.0, 80.0, 112.0])]);
    assert_eq!(faces[0].landmarks[0], [48.0, 40.0], "left eye: (28 − 2.5 × 0.1 × 16, 20) × 2");
    assert_eq!(faces[0].landmarks[1], [56.0, 40.0], "an offset of 0 is the prior's centre");
    // outputs sized for another input are refused, naming the model
    let small = vec![0f32; 8];
    let outs: Vec<(&str, &[i64], &[f32])> =
        vec![("loc", &[1, 2, 4], &small), ("conf", &[1, 2, 2], &small[..4]), ("landms", &[1, 2, 10], &[0.0; 20])];
    let model = onnx::constant_outputs("input0", &[1, 3, 64, 64], &outs);
    face_detector(d.path(), "site-retinaface", &model, "retinaface", &["loc", "conf", "landms"], "input0", bgr);
    let mut det = FaceDetector::load(d.path(), "site-retinaface", &RuntimeOptions::default()).unwrap();
    let e = det.detect(&frame, 0.5).err().unwrap();
    assert!(format!("{e:#}").contains("site-retinaface") && format!("{e:#}").contains("168 priors"), "{e:#}");
    // a colour order the preprocessing does not know is refused at load
    std::fs::write(d.path().join("site-retinaface.toml"), manifest.replace("\"BGR\"", "\"YUV\"")).unwrap();
    let e = FaceDetector::load(d.path(), "site-retinaface", &RuntimeOptions::default()).err().unwrap();
    assert!(format!("{e:#}").contains("input.color is \"YUV\""), "{e:#}");
}

/// Several object models in one pipeline: a camera runs the pipeline's COCO detector for a cat
/// rule and a site's own detector (`detector = "site-yolo8"`, a graph made here that always sees
/// a rat) for a rodent rule, side by side; each rule's classes are checked against its own
/// detector, a detector without a manifest is refused at its key, and the items name the model
/// that judged.
#[test]
fn a_camera_runs_the_pipelines_detector_and_a_sites_detector_side_by_side() {
    let site = common::Site::new("", "");
    let models = site.path("models");
    std::fs::create_dir_all(&models).unwrap();
    for f in ["coco-nanodet.toml", "coco-nanodet.onnx"] {
        std::fs::copy(common::repo().join("models").join(f), models.join(f)).unwrap();
    }
    // one anchor: a rat at (32, 16), 20 × 10 input pixels
    let v8 = [32.0, 16.0, 20.0, 10.0, 0.9, 0.1];
    site_detector(&models, "site-yolo8", "yolov8", &[1, 6, 1], &v8);
    site.replace(
        &format!("dir = \"{}\"", common::repo().join("models").display()),
        &format!("dir = \"{}\"\ndirty_head = \"none\"", models.display()),
    );
    let camera = |rodents: &str| {
        format!(
            "[[cameras]]\nid = \"store\"\nsource = \"{}\"\nrealtime = false\nprivacy_mask = \"none\"\n\
             [[cameras.rules]]\nkind = \"object_present\"\nid = \"animals\"\nclasses = [\"cat\"]\n\
             [[cameras.rules]]\nkind = \"object_present\"\nid = \"rodents\"\n{rodents}\n",
            common::sample("chelsea-pan.mp4").display()
        )
    };
    let base = std::fs::read_to_string(&site.pipeline).unwrap();
    let with = |rodents: &str| {
        std::fs::write(&site.pipeline, base.clone() + &camera(rodents)).unwrap();
        common::check(&site.pipeline)
    };
    let (code, out) = with("detector = \"site-yolo8\"\nclasses = [\"cat\"]");
    assert!(
        code != 0
            && out.contains("cameras[0].rules[1].classes[0]")
            && out.contains("not a class of object model \"site-yolo8\" (its classes: rat, cockroach)"),
        "{out}"
    );
    let (code, out) = with("detector = \"site-rodent\"\nclasses = [\"rat\"]");
    assert!(code != 0 && out.contains("cameras[0].rules[1].detector") && out.contains("site-rodent.toml"), "{out}");
    let (code, out) = with("detector = \"site-yolo8\"\nclasses = [\"rat\"]");
    assert_eq!(code, 0, "{out}");
    let (code, log) =
        common::run_to_end(&["run", site.pipeline.to_str().unwrap()], std::time::Duration::from_secs(180));
    assert_eq!(code, 0, "{log}");
    let events = site.outbox();
    let rule_of = |e: &serde_json::Value| e["payload"]["rule"]["id"].as_str().unwrap().to_string();
    let rules: std::collections::BTreeSet<String> = events.iter().map(rule_of).collect();
    assert_eq!(rules, ["animals", "rodents"].map(String::from).into(), "{log}");
    for e in &events {
        let m: serde_json::Value =
            serde_json::from_slice(&site.stored(e["payload"]["manifest"]["key"].as_str().unwrap())).unwrap();
        let ids: Vec<&str> = m["models"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["coco-nanodet", "site-yolo8"], "both detectors named in every manifest");
        let trigger = m["detections"].as_array().unwrap().iter().find(|d| d["trigger"] == true).unwrap().clone();
        let want = if rule_of(e) == "rodents" { "rat" } else { "cat" };
        assert_eq!(trigger["label"], want, "{m}");
    }
}
