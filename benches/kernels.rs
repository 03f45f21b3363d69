//! Criterion benchmarks of the per-frame kernels on the hot path (no external services, no
//! models): model-input preprocessing, privacy-mask application, output decoding (CenterFace,
//! NanoDet), NMS, tracker update, motion gate. Run: `cargo bench --bench kernels`.
//! End-to-end throughput with the models is `vigil bench`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use vigil::detect::{decode_centerface, decode_nanodet_stride, nms, nms_per_class};
use vigil::frame::{BBox, RgbFrame};
use vigil::privacy::{NormPoint, Polygon};
use vigil::rules::MotionGate;
use vigil::track::{Obs, Tracker};

fn frame(w: u32, h: u32) -> RgbFrame {
    let mut f = RgbFrame::new(w, h);
    for (i, v) in f.data.iter_mut().enumerate() {
        *v = (i % 251) as u8;
    }
    f
}

fn preprocessing(c: &mut Criterion) {
    let f = frame(640, 360);
    let mut buf = vec![0f32; 3 * 640 * 384];
    c.bench_function("preprocess CenterFace 640x360 -> 3x384x640", |b| {
        b.iter(|| {
            let plane = 640 * 384;
            f.sample_bilinear(f.full(), 640, 384, |i, px| {
                buf[i] = px[0];
                buf[plane + i] = px[1];
                buf[2 * plane + i] = px[2];
            });
            black_box(&buf);
        })
    });
    let mut nd = vec![0f32; 3 * 416 * 416];
    c.bench_function("preprocess NanoDet 640x360 -> 3x416x416 BGR norm", |b| {
        b.iter(|| {
            let plane = 416 * 416;
            let (mean, std) = ([123.675f32, 116.28, 103.53], [58.395f32, 57.12, 57.375]);
            f.sample_bilinear(f.full(), 416, 416, |i, px| {
                for c in 0..3 {
                    nd[(2 - c) * plane + i] = (px[c] - mean[c]) / std[c];
                }
            });
            black_box(&nd);
        })
    });
    let mut crop = vec![0f32; 224 * 224 * 3];
    c.bench_function("preprocess classifier crop 90x120 -> 224x224x3", |b| {
        b.iter(|| {
            f.sample_bilinear(BBox { x1: 200.0, y1: 100.0, x2: 290.0, y2: 220.0 }, 224, 224, |i, px| {
                crop[i * 3] = px[0] / 127.5 - 1.0;
                crop[i * 3 + 1] = px[1] / 127.5 - 1.0;
                crop[i * 3 + 2] = px[2] / 127.5 - 1.0;
            });
            black_box(&crop);
        })
    });
}

fn masks(c: &mut Criterion) {
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
        let mut f = frame(w, h);
        let stride = f.stride();
        c.bench_function(&format!("privacy mask apply {w}x{h}"), |b| {
            b.iter(|| raster.apply_rgb(black_box(&mut f.data), stride))
        });
    }
}

fn decoding(c: &mut Criterion) {
    // CenterFace outputs for a 384x640 input: 96x160 grid, a few hot cells
    let (gh, gw) = (96, 160);
    let n = gh * gw;
    let mut heat = vec![0.01f32; n];
    for i in (0..n).step_by(997) {
        heat[i] = 0.9;
    }
    let (scale, offset, lms) = (vec![2.0f32; 2 * n], vec![0.1f32; 2 * n], vec![0.5f32; 10 * n]);
    c.bench_function("decode CenterFace 96x160 grid (16 peaks)", |b| {
        b.iter(|| black_box(decode_centerface(&heat, &scale, &offset, &lms, gh, gw, 640.0, 384.0, 0.5)))
    });
    // NanoDet stride-8 outputs: 52x52 cells x 80 classes, a few above threshold
    let cells = 52 * 52;
    let mut cls = vec![0.01f32; cells * 80];
    for i in (0..cells).step_by(101) {
        cls[i * 80 + 41] = 0.6; // cup
    }
    let reg: Vec<f32> = (0..cells * 44).map(|i| (i % 11) as f32 * 0.3).collect();
    let wanted: Vec<bool> = (0..80).map(|c| [39, 40, 41, 42, 43, 44, 45].contains(&c)).collect();
    c.bench_function("decode NanoDet stride 8 (52x52x80, 27 hits) + class NMS", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            decode_nanodet_stride(&cls, &reg, 80, 8, 416.0, 0.35, &wanted, &mut out);
            black_box(nms_per_class(out))
        })
    });
    let boxes: Vec<(BBox, f32)> = (0..200)
        .map(|i| {
            let (x, y) = ((i % 20) as f32 * 30.0, (i / 20) as f32 * 30.0);
            (BBox { x1: x, y1: y, x2: x + 40.0, y2: y + 40.0 }, (i as f32 * 0.37) % 1.0)
        })
        .collect();
    c.bench_function("NMS 200 boxes", |b| b.iter(|| black_box(nms(boxes.clone(), 0.3, |b| b.0, |b| b.1))));
}

fn tracking(c: &mut Criterion) {
    let mut tracker = Tracker::new(0.3, 5, Duration::from_secs(10), 5);
    let mut k = 0f32;
    let mut obs: Vec<Obs> = Vec::with_capacity(10);
    c.bench_function("tracker update, 10 objects", |b| {
        b.iter(|| {
            k += 1.0;
            obs.clear();
            obs.extend((0..10).map(|i| Obs {
                bbox: BBox { x1: i as f32 * 60.0 + k % 5.0, y1: 10.0, x2: i as f32 * 60.0 + 40.0 + k % 5.0, y2: 50.0 },
                score: 0.9,
                class: 0,
                value: 0.8,
                hit: true,
            }));
            tracker.update(Duration::from_millis(k as u64 * 200), black_box(&obs));
        })
    });
    let f = frame(640, 360);
    let mut gate = MotionGate::new(12.0, Duration::from_secs(2));
    c.bench_function("motion gate 640x360 region", |b| b.iter(|| black_box(gate.look(&f, f.full(), false))));
}

criterion_group! {
    name = kernels;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = preprocessing, masks, decoding, tracking
}
criterion_main!(kernels);
