//! Timings of the per-frame kernels on the hot path (no external services, no models):
//! privacy-mask application, model-input resampling, CenterFace output decoding, NMS, tracker
//! update. Run: `cargo bench --bench kernels`. Reports the median of repeated runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vigil::detect::{decode_centerface, nms};
use vigil::frame::{BBox, RgbFrame};
use vigil::privacy::{NormPoint, Polygon};
use vigil::track::{IouTracker, Obs};

fn median_time(iters: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..iters.div_ceil(10) {
        f();
    }
    let mut t: Vec<Duration> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[t.len() / 2]
}

fn report(name: &str, d: Duration) {
    println!("| {name:<46} | {:>10.1} µs |", d.as_secs_f64() * 1e6);
}

fn main() {
    println!("| kernel | median |\n| --- | --- |");
    let polys = vec![
        Polygon {
            name: "a".into(),
            points: vec![
                NormPoint { x: 0.78, y: 0.0 },
                NormPoint { x: 1.0, y: 0.0 },
                NormPoint { x: 1.0, y: 1.0 },
                NormPoint { x: 0.78, y: 1.0 },
            ],
        },
        Polygon {
            name: "b".into(),
            points: vec![NormPoint { x: 0.0, y: 0.0 }, NormPoint { x: 0.3, y: 0.0 }, NormPoint { x: 0.0, y: 0.4 }],
        },
    ];
    for (w, h) in [(640u32, 360u32), (1920, 1080)] {
        let raster = vigil::privacy::MaskRaster::new(&polys, w, h);
        let mut f = RgbFrame::new(w, h);
        f.data.fill(128);
        let stride = f.stride();
        report(
            &format!("privacy mask apply {w}x{h}"),
            median_time(200, || raster.apply_rgb(black_box(&mut f.data), stride)),
        );
        report(
            &format!("privacy mask rasterise {w}x{h}"),
            median_time(50, || {
                black_box(vigil::privacy::MaskRaster::new(&polys, w, h));
            }),
        );
    }
    let mut f = RgbFrame::new(640, 360);
    for (i, v) in f.data.iter_mut().enumerate() {
        *v = (i % 251) as u8;
    }
    let mut buf = vec![0f32; 3 * 640 * 384];
    report(
        "CenterFace input 640x360 -> 3x384x640 f32",
        median_time(100, || {
            let plane = 640 * 384;
            f.sample_bilinear(BBox { x1: 0.0, y1: 0.0, x2: 640.0, y2: 360.0 }, 640, 384, |i, px| {
                buf[i] = px[0];
                buf[plane + i] = px[1];
                buf[2 * plane + i] = px[2];
            });
            black_box(&buf);
        }),
    );
    let mut crop = vec![0f32; 224 * 224 * 3];
    report(
        "classifier crop 90x120 -> 224x224x3 f32",
        median_time(200, || {
            f.sample_bilinear(BBox { x1: 200.0, y1: 100.0, x2: 290.0, y2: 220.0 }, 224, 224, |i, px| {
                crop[i * 3] = px[0] / 127.5 - 1.0;
                crop[i * 3 + 1] = px[1] / 127.5 - 1.0;
                crop[i * 3 + 2] = px[2] / 127.5 - 1.0;
            });
            black_box(&crop);
        }),
    );
    // CenterFace outputs for a 384x640 input: 96x160 grid, a few hot cells
    let (gh, gw) = (96, 160);
    let n = gh * gw;
    let mut heat = vec![0.01f32; n];
    for i in (0..n).step_by(997) {
        heat[i] = 0.9;
    }
    let scale = vec![2.0f32; 2 * n];
    let offset = vec![0.1f32; 2 * n];
    let lms = vec![0.5f32; 10 * n];
    report(
        "CenterFace decode 96x160 grid (16 peaks)",
        median_time(200, || {
            black_box(decode_centerface(&heat, &scale, &offset, &lms, gh, gw, 640.0, 384.0, 0.5));
        }),
    );
    let boxes: Vec<(BBox, f32)> = (0..200)
        .map(|i| {
            let x = (i % 20) as f32 * 30.0;
            let y = (i / 20) as f32 * 30.0;
            (BBox { x1: x, y1: y, x2: x + 40.0, y2: y + 40.0 }, (i as f32 * 0.37) % 1.0)
        })
        .collect();
    report(
        "NMS 200 boxes",
        median_time(200, || {
            black_box(nms(boxes.clone(), 0.3, |b| b.0, |b| b.1));
        }),
    );
    let mut tracker = IouTracker::new(0.3, 5, 5);
    let mut k = 0f32;
    report(
        "IoU tracker update, 10 objects",
        median_time(500, || {
            k += 1.0;
            let obs: Vec<Obs> = (0..10)
                .map(|i| Obs {
                    bbox: BBox {
                        x1: i as f32 * 60.0 + k % 5.0,
                        y1: 10.0,
                        x2: i as f32 * 60.0 + 40.0 + k % 5.0,
                        y2: 50.0,
                    },
                    score: 0.9,
                    value: 0.8,
                    hit: true,
                })
                .collect();
            tracker.update(Duration::from_millis(k as u64 * 200), black_box(&obs));
        }),
    );
}
