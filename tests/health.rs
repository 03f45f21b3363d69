//! Tamper and health detectors on real frames: untouched footage raises nothing over whole clips;
//! each tampering (blackout, glare, blur, shift, freeze) applied to real frames raises its own
//! condition, within the hold time, and nothing else first.

mod common;

use std::time::Duration;

use vigil::frame::RgbFrame;
use vigil::health::{Change, TamperConfig, TamperDetector, measure};

/// Frames of a clip at about `fps`, as analysis would see them.
fn frames(p: &std::path::Path, fps: f64) -> Vec<RgbFrame> {
    let all = common::decode_mp4(p);
    let mut out = Vec::new();
    let mut next = Duration::ZERO;
    for d in all {
        if d.pts + Duration::from_millis(2) >= next {
            next = d.pts + Duration::from_secs_f64(1.0 / fps);
            out.push(RgbFrame { width: d.width, height: d.height, data: d.data, pts: d.pts });
        }
    }
    out
}

fn run(frames: &[RgbFrame], cfg: TamperConfig) -> Vec<Change> {
    let mut d = TamperDetector::new(cfg);
    frames.iter().flat_map(|f| d.update(f.pts, &measure(f))).collect()
}

fn cfg() -> TamperConfig {
    TamperConfig { reference_s: 2.0, ..Default::default() }
}

#[test]
fn untouched_real_footage_raises_nothing() {
    for (clip, fps) in [
        (common::shared_data("videos/intel_face-demographics-walking.mp4"), 15.0),
        (common::shared_data("videos/intel_classroom.mp4"), 15.0),
        (common::shared_data("videos/intel_one-by-one-person-detection.mp4"), 5.0),
        (common::sample("coffee-pan.mp4"), 5.0),
        (common::sample("chelsea-pan.mp4"), 5.0),
    ] {
        let f = frames(&clip, fps);
        let changes = run(&f, cfg());
        assert!(changes.is_empty(), "{}: false alarm over {} frames: {changes:?}", clip.display(), f.len());
        println!("{}: {} frames, no alarm", clip.file_name().unwrap().to_string_lossy(), f.len());
    }
}

/// The hall clip's first 12 s at 5 fps, tampered from 5 s on with `tamper`.
fn tampered(tamper: impl Fn(&RgbFrame, &RgbFrame) -> RgbFrame) -> (Vec<RgbFrame>, Duration) {
    let f = frames(&common::shared_data("videos/intel_one-by-one-person-detection.mp4"), 5.0);
    let f = &f[..60];
    let start = f[25].pts;
    let first = f[25].clone();
    let out = f
        .iter()
        .map(|x| {
            if x.pts >= start {
                let mut t = tamper(x, &first);
                t.pts = x.pts;
                t
            } else {
                x.clone()
            }
        })
        .collect();
    (out, start)
}

fn assert_raised(what: &str, changes: &[Change], start: Duration) {
    let first = changes.first().unwrap_or_else(|| panic!("{what}: nothing raised"));
    assert_eq!(first.condition, what, "{changes:?}");
    assert!(first.active);
    assert!(
        first.at >= start && first.at <= start + Duration::from_millis(500),
        "{what} raised at {:?}, tamper at {start:?}",
        first.at
    );
    println!("{what}: raised at +{:.1} s ({})", first.at.saturating_sub(start).as_secs_f64(), first.detail);
}

#[test]
fn a_covered_lens_is_detected() {
    let (f, start) = tampered(|x, _| {
        let mut t = x.clone();
        for (i, v) in t.data.iter_mut().enumerate() {
            *v = 4 + (i % 7) as u8; // dark, a little sensor noise
        }
        t
    });
    let c = run(&f, cfg());
    assert_raised("covered", &c, start);
}

#[test]
fn a_blinded_lens_is_detected() {
    let (f, start) = tampered(|x, _| {
        let mut t = x.clone();
        for (i, v) in t.data.iter_mut().enumerate() {
            *v = 248 + (i % 5) as u8;
        }
        t
    });
    assert_raised("saturated", &run(&f, cfg()), start);
}

fn box_blur(f: &RgbFrame, r: i64) -> RgbFrame {
    let (w, h) = (f.width as i64, f.height as i64);
    let mut a = f.clone();
    for pass in 0..2 {
        let src = a.clone();
        for y in 0..h {
            for x in 0..w {
                let mut s = [0u32; 3];
                let mut n = 0;
                for k in -r..=r {
                    let (xx, yy) = if pass == 0 { (x + k, y) } else { (x, y + k) };
                    if xx >= 0 && yy >= 0 && xx < w && yy < h {
                        let i = ((yy * w + xx) * 3) as usize;
                        for (acc, v) in s.iter_mut().zip(&src.data[i..i + 3]) {
                            *acc += *v as u32;
                        }
                        n += 1;
                    }
                }
                let i = ((y * w + x) * 3) as usize;
                for (v, acc) in a.data[i..i + 3].iter_mut().zip(s) {
                    *v = (acc / n) as u8;
                }
            }
        }
    }
    a
}

#[test]
fn a_defocused_lens_is_detected() {
    let (f, start) = tampered(|x, _| box_blur(x, 6));
    assert_raised("defocus", &run(&f, cfg()), start);
}

#[test]
fn a_moved_camera_is_detected() {
    let (f, start) = tampered(|x, _| {
        let mut t = x.clone();
        let (w, h) = (x.width as usize, x.height as usize);
        let dx = w / 4;
        for y in 0..h {
            for xx in 0..w {
                let sx = xx.saturating_sub(dx);
                let (i, j) = ((y * w + xx) * 3, (y * w + sx) * 3);
                t.data[i..i + 3].copy_from_slice(&x.data[j..j + 3]);
            }
        }
        t
    });
    assert_raised("moved", &run(&f, cfg()), start);
}

#[test]
fn a_frozen_picture_is_detected() {
    let (f, start) = tampered(|_, first| first.clone());
    let c = run(&f, cfg());
    let first = c.first().expect("frozen raised");
    assert_eq!(first.condition, "frozen", "{c:?}");
    // frozen needs frozen_s (3 s) of stillness, then hold_s (2 s)
    let after = first.at.saturating_sub(start).as_secs_f64();
    assert!((2.5..=3.7).contains(&after), "raised {after:.1} s after the freeze");
    println!("frozen: raised at +{after:.1} s ({})", first.detail);
}

#[test]
fn conditions_end_when_the_picture_comes_back() {
    let f = frames(&common::shared_data("videos/intel_one-by-one-person-detection.mp4"), 5.0);
    let mut f: Vec<RgbFrame> = f[..80].to_vec();
    for x in &mut f[25..45] {
        x.data.iter_mut().for_each(|v| *v = 5);
    }
    let c = run(&f, cfg());
    let on = c.iter().find(|c| c.condition == "covered" && c.active).expect("raised");
    let off = c.iter().find(|c| c.condition == "covered" && !c.active).expect("ended");
    assert!(off.at > on.at);
    let lasted = off.lasted.unwrap().as_secs_f64();
    assert!((3.0..=5.0).contains(&lasted), "lasted {lasted}");
}
