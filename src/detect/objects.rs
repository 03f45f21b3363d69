//! NanoDet-g COCO object detector (MODELS.md §4): GFL decoding per stride, per-class NMS.

use std::path::Path;

use anyhow::Result;

use super::nms::keep_greedy;
use super::runner::Runner;
use super::runtime::{ModelInfo, RuntimeOptions, session};
use crate::frame::{BBox, RgbFrame};

/// One object from the COCO detector.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Object {
    pub bbox: BBox,
    pub score: f32,
    pub class: u16,
}

/// NanoDet GFL decoding (MODELS.md §4) of one stride's outputs, appended to `out`: `cls` is
/// `[n*n, classes]` (sigmoid scores), `reg` `[n*n, 4*bins]` (left, top, right, bottom
/// distributions). Only classes with `wanted[c]` and score > `threshold` are decoded. Boxes are in
/// input pixels, clamped to `[0, size]`.
#[allow(clippy::too_many_arguments)]
pub fn decode_nanodet_stride(
    cls: &[f32],
    reg: &[f32],
    classes: usize,
    stride: usize,
    size: f32,
    threshold: f32,
    wanted: &[bool],
    out: &mut Vec<Object>,
) {
    let n = (size as usize).div_ceil(stride);
    let bins = reg.len() / (n * n * 4).max(1);
    for i in 0..n * n {
        let scores = &cls[i * classes..(i + 1) * classes];
        let mut dist: Option<[f32; 4]> = None;
        for (c, &s) in scores.iter().enumerate() {
            if s <= threshold || !wanted.get(c).copied().unwrap_or(false) {
                continue;
            }
            let d = *dist.get_or_insert_with(|| {
                let mut d = [0f32; 4];
                for (side, v) in d.iter_mut().enumerate() {
                    let logits = &reg[i * 4 * bins + side * bins..i * 4 * bins + (side + 1) * bins];
                    let max = logits.iter().copied().fold(f32::MIN, f32::max);
                    let (mut sum, mut acc) = (0f32, 0f32);
                    for (k, &l) in logits.iter().enumerate() {
                        let e = (l - max).exp();
                        sum += e;
                        acc += e * k as f32;
                    }
                    *v = acc / sum * stride as f32;
                }
                d
            });
            let (row, col) = (i / n, i % n);
            let (cx, cy) = ((col as f32 + 0.5) * stride as f32, (row as f32 + 0.5) * stride as f32);
            let bbox = BBox {
                x1: (cx - d[0]).clamp(0.0, size),
                y1: (cy - d[1]).clamp(0.0, size),
                x2: (cx + d[2]).clamp(0.0, size),
                y2: (cy + d[3]).clamp(0.0, size),
            };
            out.push(Object { bbox, score: s, class: c as u16 });
        }
    }
}

/// Per-class NMS at IoU 0.6, at most 100 detections, best first (upstream `multiclass_nms`).
pub fn nms_per_class(mut objects: Vec<Object>) -> Vec<Object> {
    nms_per_class_in_place(&mut objects);
    objects
}

/// [`nms_per_class`] in place, without allocating.
pub fn nms_per_class_in_place(objects: &mut Vec<Object>) {
    objects.sort_unstable_by(|a, b| a.class.cmp(&b.class).then(b.score.total_cmp(&a.score)));
    keep_greedy(objects, 0.6, |o| o.bbox, |o| o.class);
    objects.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
    objects.truncate(100);
}

/// NanoDet COCO detector: the region (zone bounding box or whole frame) is stretched to the
/// model's 416x416 input, BGR, `(x - mean) / std`.
pub struct ObjectDetector {
    pub info: ModelInfo,
    run: Runner,
}

impl ObjectDetector {
    pub fn load(dir: &Path, id: &str, opts: &RuntimeOptions) -> Result<ObjectDetector> {
        let info = ModelInfo::load(dir, id, "nanodet-gfl")?;
        let run = Runner::new(session(&info, opts)?, &info.manifest.input.name, &info.manifest.outputs)?;
        Ok(ObjectDetector { info, run })
    }

    pub fn labels(&self) -> &[String] {
        &self.info.manifest.labels
    }

    /// Which classes are called `name`: the `wanted` argument of [`detect_in`](Self::detect_in).
    pub fn classes_named(&self, name: &str) -> Vec<bool> {
        self.labels().iter().map(|l| l == name).collect()
    }

    /// Objects of the `wanted` classes scoring above `threshold` in `roi`, boxes in frame pixels,
    /// into `objects` (cleared first; no allocation once it has grown).
    pub fn detect_in(
        &mut self,
        frame: &RgbFrame,
        roi: BBox,
        threshold: f32,
        wanted: &[bool],
        objects: &mut Vec<Object>,
    ) -> Result<()> {
        let spec = &self.info.manifest.input;
        let (w, h) = (spec.width, spec.height);
        let plane = w * h;
        self.run.input.resize(3 * plane, 0.0);
        let (mean, std) = (spec.mean, spec.std);
        let bgr = spec.color == "BGR";
        let buf = &mut self.run.input;
        frame.sample_bilinear(roi, w, h, |i, px| {
            for c in 0..3 {
                let dst = if bgr { 2 - c } else { c };
                buf[dst * plane + i] = (px[c] - mean[c]) / std[c];
            }
        });
        self.run.run([1, 3, h, w])?;
        let classes = self.info.manifest.labels.len();
        objects.clear();
        for (k, stride) in [8usize, 16, 32].into_iter().enumerate() {
            let (cls, reg) = (self.run.output(2 * k)?, self.run.output(2 * k + 1)?);
            decode_nanodet_stride(cls, reg, classes, stride, w as f32, threshold, wanted, objects);
        }
        nms_per_class_in_place(objects);
        let (sx, sy) = (roi.w() / w as f32, roi.h() / h as f32);
        for o in objects.iter_mut() {
            o.bbox = o.bbox.scale(sx, sy).offset(roi.x1, roi.y1);
        }
        Ok(())
    }
}
