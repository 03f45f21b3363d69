//! Privacy masks, completely: every pixel under a non-rectangular mask is black in every frame of
//! the stored clip and in both snapshots, at a source resolution other than the analysis size;
//! and a face under the mask never reaches the face detector.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use vigil::privacy::PrivacyMask;

/// A pentagon over the left of the frame (the astronaut's face is in the middle and stays out).
const MASK: &str = "[[polygons]]\nname = \"pentagon\"\npoints = [[0.02, 0.08], [0.30, 0.02], [0.36, 0.55], [0.18, 0.95], [0.04, 0.70]]\n\
                    [[polygons]]\nname = \"right-band\"\npoints = [[0.82, 0.0], [1.0, 0.0], [1.0, 1.0], [0.82, 1.0]]\n";

/// Pixels of a `w`×`h` image under the mask, by their distance to the nearest unmasked pixel
/// (Chebyshev): the edge band (within `EDGE` px of the edge) and the interior beyond it.
fn masked_pixels(mask: &PrivacyMask, w: u32, h: u32) -> (Pixels, Pixels) {
    // rasterise by blacking out a white image with the worker's own raster
    let mut img = vec![255u8; (w * h * 3) as usize];
    mask.raster(w, h).apply_rgb(&mut img, (w * 3) as usize);
    let m = |x: i64, y: i64| {
        x < 0 || y < 0 || x >= w as i64 || y >= h as i64 || img[((y as u32 * w + x as u32) * 3) as usize] == 0
    };
    let (mut inner, mut edge) = (Vec::new(), Vec::new());
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            if !m(x, y) {
                continue;
            }
            let deep = (-EDGE..=EDGE).all(|dy| (-EDGE..=EDGE).all(|dx| m(x + dx, y + dy)));
            if deep { inner.push((x as u32, y as u32)) } else { edge.push((x as u32, y as u32)) }
        }
    }
    (inner, edge)
}

/// Pixel coordinates.
type Pixels = Vec<(u32, u32)>;

/// The edge band: H.264's smallest transform is 4×4, so lossy coding can ring up to 4 px into
/// the black area next to picture.
const EDGE: i64 = 4;

/// The brightest channel over `pixels`.
fn brightest(px: impl Fn(u32, u32) -> [u8; 3], pixels: &[(u32, u32)]) -> u8 {
    pixels.iter().map(|&(x, y)| *px(x, y).iter().max().unwrap()).max().unwrap_or(0)
}

#[test]
fn every_stored_pixel_under_a_non_rectangular_mask_is_black_at_a_source_resolution_other_than_the_analysis_size() {
    let site = Site::new("[clip]\npre_roll_s = 2\npost_roll_s = 2\n", "");
    let src = site.path("hd.mp4");
    transcode(
        &sample("astronaut-pan.mp4"),
        &src,
        "videoscale ! video/x-raw,width=1280,height=720",
        "x264enc speed-preset=veryfast key-int-max=25 bframes=0",
        "mp4mux",
    );
    std::fs::write(site.path("mask.toml"), MASK).unwrap();
    site.edit(|t| {
        t + &format!(
            "[[cameras]]\nid = \"cam1\"\nsource = \"{}\"\nrealtime = false\nprivacy_mask = \"mask.toml\"\n\
             [[cameras.rules]]\nkind = \"no_mask\"\n",
            src.display()
        )
    });
    let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(180));
    assert_eq!(code, 0, "{log}");
    let ev = site.outbox().into_iter().next().expect("the unmasked face fired")["payload"].clone();
    assert_eq!(
        (ev["clip"]["width"].as_u64(), ev["clip"]["height"].as_u64()),
        (Some(1280), Some(720)),
        "source resolution"
    );
    let mask = PrivacyMask::load(&site.path("mask.toml")).unwrap();
    assert_eq!(ev["privacy_mask"]["sha256"], mask.sha256.as_str(), "the manifest names the mask file by hash");
    let (inner, edge) = masked_pixels(&mask, 1280, 720);
    assert!(inner.len() > 100_000 && edge.len() > 1_000, "{} interior and {} edge pixels", inner.len(), edge.len());
    // every frame of the stored clip
    let clip = site.path("clip.mp4");
    std::fs::write(&clip, site.stored(ev["artifacts"]["clip"]["key"].as_str().unwrap())).unwrap();
    let frames = decode_mp4(&clip);
    assert_eq!(frames.len() as u64, ev["clip"]["frames"].as_u64().unwrap());
    let (mut worst_inner, mut worst_edge) = (0u8, 0u8);
    for f in &frames {
        assert_eq!((f.width, f.height), (1280, 720));
        worst_inner = worst_inner.max(brightest(|x, y| f.px(x, y), &inner));
        worst_edge = worst_edge.max(brightest(|x, y| f.px(x, y), &edge));
    }
    // a 4 px guard band around each polygon keeps lossy coding from bleeding picture into it
    assert!(worst_inner <= 16, "interior of the mask: brightest pixel {worst_inner} over {} frames", frames.len());
    assert!(worst_edge <= 16, "edge band of the mask: brightest pixel {worst_edge}");
    // both snapshots
    for name in ["snapshot", "snapshot_annotated"] {
        let img = decode_jpeg(&site.stored(ev["artifacts"][name]["key"].as_str().unwrap()));
        assert_eq!(img.dimensions(), (1280, 720));
        let px = |x, y| img.get_pixel(x, y).0;
        let (wi, we) = (brightest(px, &inner), brightest(px, &edge));
        assert!(wi <= 16 && we <= 16, "{name}: brightest pixel {wi} inside, {we} on the edge band");
    }
    // and the picture outside the mask is there
    let f = &frames[frames.len() / 2];
    let lit: u64 = (0..720).map(|y| f.px(800, y).iter().map(|&v| v as u64).sum::<u64>()).sum();
    assert!(lit / (720 * 3) > 40, "the unmasked middle has picture");
    println!(
        "| {} frames at 1280x720 (analysis at 640), 2 polygons (a pentagon and a band) | {} interior px: brightest {worst_inner}; {} edge-band px: brightest {worst_edge} | both snapshots black under the mask |",
        frames.len(),
        inner.len(),
        edge.len()
    );
}

/// Convex hull (monotone chain) of points.
fn hull(mut p: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    p.sort_by(|a, b| a.partial_cmp(b).unwrap());
    p.dedup();
    let cross = |o: (f64, f64), a: (f64, f64), b: (f64, f64)| (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0);
    let mut lower: Vec<(f64, f64)> = Vec::new();
    for &q in &p {
        while lower.len() >= 2 && cross(lower[lower.len() - 2], lower[lower.len() - 1], q) <= 0.0 {
            lower.pop();
        }
        lower.push(q);
    }
    let mut upper: Vec<(f64, f64)> = Vec::new();
    for &q in p.iter().rev() {
        while upper.len() >= 2 && cross(upper[upper.len() - 2], upper[upper.len() - 1], q) <= 0.0 {
            upper.pop();
        }
        upper.push(q);
    }
    lower.pop();
    upper.pop();
    lower.extend(upper);
    lower
}

#[test]
fn a_face_under_the_mask_never_reaches_the_detector() {
    use vigil::control::analysis::{Analyser, AnalyserConfig};
    use vigil::detect::{FaceDetector, ModelPool, ModelSet, Models, RuntimeOptions};
    use vigil::rules::{GateSettings, RuleConfig, RuleEnv, validate_rules};
    let dir = repo().join("models");
    let o = RuntimeOptions::default();
    let mut det = FaceDetector::load(&dir, "centerface", &o).unwrap();
    let frames = frames_of(&sample("astronaut-pan.mp4"), 5.0, 640);
    // where the face is over the whole clip, unmasked
    let mut corners = Vec::new();
    for f in &frames {
        for face in det.detect(f, 0.3).unwrap() {
            let b = face.bbox;
            let (mx, my) = (b.w() * 0.15, b.h() * 0.15);
            for (x, y) in
                [(b.x1 - mx, b.y1 - my), (b.x2 + mx, b.y1 - my), (b.x2 + mx, b.y2 + my), (b.x1 - mx, b.y2 + my)]
            {
                corners
                    .push(((x / f.width as f32).clamp(0.0, 1.0) as f64, (y / f.height as f32).clamp(0.0, 1.0) as f64));
            }
        }
    }
    assert!(corners.len() >= 40, "the face is found unmasked in most frames");
    let poly = hull(corners);
    assert!(poly.len() >= 5, "a non-rectangular mask: {poly:?}");
    let d = tempfile::tempdir().unwrap();
    let pts: Vec<String> = poly.iter().map(|(x, y)| format!("[{x:.4}, {y:.4}]")).collect();
    std::fs::write(
        d.path().join("face.toml"),
        format!("[[polygons]]\nname = \"face-path\"\npoints = [{}]\n", pts.join(", ")),
    )
    .unwrap();
    let mask = PrivacyMask::load(&d.path().join("face.toml")).unwrap();
    let set = ModelSet {
        no_mask: Some(
            Models::load(&dir, "centerface", "mask-classifier-mobilenetv2", Some("mask-head-fitted"), &o).unwrap(),
        ),
        objects: None,
        dirty: None,
        attributes: Vec::new(),
        detectors: Vec::new(),
    };
    let pool = ModelPool::new(vec![set]);
    let rule: RuleConfig =
        toml::from_str("kind = \"no_mask\"\nmin_hits = 1\nwindow = 1\nthreshold = 0.5\nface_threshold = 0.3").unwrap();
    let env = RuleEnv {
        object_labels: None,
        gate: false,
        gate_recheck_s: 2.0,
        dirty_head: false,
        attribute_heads: None,
        detectors: None,
    };
    let mut run = |mask: Option<PrivacyMask>| {
        let stats = Arc::new(vigil::telemetry::CameraStats::detached("c"));
        let mut a = Analyser::new(
            AnalyserConfig {
                camera: "c".into(),
                mask,
                tamper: Default::default(),
                rules: validate_rules(std::slice::from_ref(&rule), &env).unwrap(),
                gate: GateSettings {
                    enabled: false,
                    regions: false,
                    min_change: 12.0,
                    recheck: Duration::from_secs(2),
                },
                labels: vec![],
                epoch: chrono::Utc::now(),
                utc_offset_s: 0,
                model_hint: 0,
            },
            stats,
        );
        let (mut fired, mut faces_in_mask) = (0, 0);
        for f in &frames {
            let mut f = f.clone();
            fired += a.analyse(&mut f, Some(&pool)).1.unwrap().len();
            // what the detector sees of this frame: the frame as the loop masked it
            for face in det.detect(&f, 0.3).unwrap() {
                let (cx, cy) = face.bbox.center();
                if mask_contains(&poly, (cx / f.width as f32) as f64, (cy / f.height as f32) as f64) {
                    faces_in_mask += 1;
                }
            }
        }
        (fired, faces_in_mask)
    };
    let (fired, _) = run(None);
    assert!(fired >= 1, "control: without the mask the face fires");
    let (fired, seen) = run(Some(mask));
    assert_eq!((fired, seen), (0, 0), "under the mask no face is detected and nothing fires");
    println!(
        "| a face under a {}-point mask over its whole path | unmasked: fires; masked: 0 faces detected in the mask, 0 fires |",
        poly.len()
    );
}

fn mask_contains(poly: &[(f64, f64)], x: f64, y: f64) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[j]);
        if (a.1 > y) != (b.1 > y) && x < (b.0 - a.0) * (y - a.1) / (b.1 - a.1) + a.0 {
            inside = !inside;
        }
        j = i;
    }
    inside
}
