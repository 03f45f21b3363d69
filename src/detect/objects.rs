//! The object detector: the vendored NanoDet-g COCO model (MODELS.md §4: GFL decoding per stride),
//! or a model a site brings with its manifest (`models/<id>.toml`, `decoder = "yolov8"` for the
//! YOLOv8/v11 output layout, `"yolov5"` for YOLOv5's, `"ssd"` for decoded boxes with class scores,
//! `"centernet"` for a heatmap with sizes and offsets), its class names in the manifest's
//! `labels`; per-class NMS either way.

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

/// The output layouts the object detector decodes (`decoder` in the model's manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectDecoder {
    /// NanoDet GFL: per stride `cls_strideS` `[n·n, classes]`, `reg_strideS` `[n·n, 4·bins]`.
    NanoDet,
    /// YOLOv8 / YOLO11: one output `[1, 4 + classes, anchors]`: cx, cy, w, h (input pixels), then
    /// the class scores (sigmoid applied).
    Yolov8,
    /// YOLOv5: one output `[1, anchors, 5 + classes]`: cx, cy, w, h, objectness, class scores
    /// (score = objectness × class score).
    Yolov5,
    /// SSD-style decoded boxes: `boxes [1, N, 4]` (x1, y1, x2, y2 as fractions of the input) and
    /// `scores [1, N, classes]` (probabilities), in that order.
    Ssd,
    /// CenterNet: `heatmap [1, classes, H, W]` (sigmoid applied), `size [1, 2, H, W]` (width,
    /// height in heatmap cells), `offset [1, 2, H, W]` (x, y within the cell), in that order; a
    /// detection is a cell no neighbour of its class outscores (the 3×3 max-pool peak).
    CenterNet,
}

impl ObjectDecoder {
    pub const NAMES: [&str; 5] = ["nanodet-gfl", "yolov8", "yolov5", "ssd", "centernet"];

    fn of(name: &str) -> Option<ObjectDecoder> {
        Some(match name {
            "nanodet-gfl" => ObjectDecoder::NanoDet,
            "yolov8" => ObjectDecoder::Yolov8,
            "yolov5" => ObjectDecoder::Yolov5,
            "ssd" => ObjectDecoder::Ssd,
            "centernet" => ObjectDecoder::CenterNet,
            _ => return None,
        })
    }

    /// The outputs the decoder reads.
    fn outputs(self) -> usize {
        match self {
            ObjectDecoder::NanoDet => 6,
            ObjectDecoder::Yolov8 | ObjectDecoder::Yolov5 => 1,
            ObjectDecoder::Ssd => 2,
            ObjectDecoder::CenterNet => 3,
        }
    }
}

/// The best wanted class of `scores` above `threshold`.
fn best_class(scores: impl Iterator<Item = f32>, threshold: f32, wanted: &[bool]) -> Option<(usize, f32)> {
    scores
        .enumerate()
        .filter(|&(c, _)| wanted.get(c).copied().unwrap_or(false))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .filter(|b| b.1 > threshold)
}

/// A box from its corners, clamped to `[0, w] × [0, h]`.
fn clamped(x1: f32, y1: f32, x2: f32, y2: f32, (w, h): (f32, f32)) -> BBox {
    BBox { x1: x1.clamp(0.0, w), y1: y1.clamp(0.0, h), x2: x2.clamp(0.0, w), y2: y2.clamp(0.0, h) }
}

/// SSD-style decoding ([`ObjectDecoder::Ssd`]), appended to `out`: each box's best wanted class
/// scoring above `threshold`; boxes in input pixels.
pub fn decode_ssd(
    boxes: &[f32],
    scores: &[f32],
    classes: usize,
    size: (f32, f32),
    threshold: f32,
    wanted: &[bool],
    out: &mut Vec<Object>,
) {
    let n = (boxes.len() / 4).min(scores.len() / classes.max(1));
    for a in 0..n {
        let s = scores[a * classes..(a + 1) * classes].iter().copied();
        let Some((class, score)) = best_class(s, threshold, wanted) else { continue };
        let b = &boxes[a * 4..a * 4 + 4];
        let bbox = clamped(b[0] * size.0, b[1] * size.1, b[2] * size.0, b[3] * size.1, size);
        out.push(Object { bbox, score, class: class as u16 });
    }
}

/// CenterNet decoding ([`ObjectDecoder::CenterNet`]), appended to `out`: every peak of a wanted
/// class's heatmap above `threshold`; the heatmap's stride is the input's size over its own.
/// Outputs whose sizes do not fit one another and the input are an error.
#[allow(clippy::too_many_arguments)]
pub fn decode_centernet(
    heat: &[f32],
    wh: &[f32],
    offset: &[f32],
    classes: usize,
    (w, h): (f32, f32),
    threshold: f32,
    wanted: &[bool],
    out: &mut Vec<Object>,
) -> Result<()> {
    let cells = heat.len() / classes.max(1);
    let stride = ((w * h) / cells.max(1) as f32).sqrt();
    let (gw, gh) = ((w / stride).round() as usize, (h / stride).round() as usize);
    if gw * gh != cells || heat.len() != classes * cells || wh.len() != 2 * cells || offset.len() != 2 * cells {
        anyhow::bail!(
            "centernet outputs do not fit a {w}×{h} input: heatmap {} values for {classes} classes, size {}, offset {}",
            heat.len(),
            wh.len(),
            offset.len()
        );
    }
    for c in (0..classes).filter(|&c| wanted.get(c).copied().unwrap_or(false)) {
        let plane = &heat[c * cells..(c + 1) * cells];
        for (i, &v) in plane.iter().enumerate() {
            let (x, y) = (i % gw, i / gw);
            let peak = || {
                (y.saturating_sub(1)..(y + 2).min(gh))
                    .all(|yy| (x.saturating_sub(1)..(x + 2).min(gw)).all(|xx| plane[yy * gw + xx] <= v))
            };
            if v <= threshold || !peak() {
                continue;
            }
            let (cx, cy) = ((x as f32 + offset[i]) * stride, (y as f32 + offset[cells + i]) * stride);
            let (bw, bh) = (wh[i] * stride, wh[cells + i] * stride);
            let bbox = clamped(cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0, (w, h));
            out.push(Object { bbox, score: v, class: c as u16 });
        }
    }
    Ok(())
}

/// YOLO decoding of one output (layout `decoder`: [`ObjectDecoder::Yolov8`] or `Yolov5`), appended to
/// `out`: each anchor's best wanted class scoring above `threshold`; boxes in input pixels,
/// clamped to `[0, w] × [0, h]`.
pub fn decode_yolo(
    decoder: ObjectDecoder,
    data: &[f32],
    classes: usize,
    (w, h): (f32, f32),
    threshold: f32,
    wanted: &[bool],
    out: &mut Vec<Object>,
) {
    let (rows, obj) = match decoder {
        ObjectDecoder::Yolov5 => (5 + classes, true),
        _ => (4 + classes, false),
    };
    let anchors = data.len() / rows.max(1);
    // v8 is channel-major ([rows, anchors]), v5 anchor-major ([anchors, rows])
    let at = |a: usize, r: usize| if obj { data[a * rows + r] } else { data[r * anchors + a] };
    let first = if obj { 5 } else { 4 };
    for a in 0..anchors {
        let objectness = if obj { at(a, 4) } else { 1.0 };
        if objectness <= threshold {
            continue;
        }
        let scores = (0..classes).map(|c| objectness * at(a, first + c));
        let Some((class, score)) = best_class(scores, threshold, wanted) else { continue };
        let (cx, cy, bw, bh) = (at(a, 0), at(a, 1), at(a, 2), at(a, 3));
        let bbox = clamped(cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0, (w, h));
        out.push(Object { bbox, score, class: class as u16 });
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

/// The object detector: the region (zone bounding box or whole frame) is letterboxed or stretched
/// to the model's input as its manifest says (NanoDet: 416×416, BGR, `(x - mean) / std`,
/// letterboxed), decoded by the manifest's `decoder`.
pub struct ObjectDetector {
    pub info: ModelInfo,
    pub decoder: ObjectDecoder,
    run: Runner,
}

impl ObjectDetector {
    pub fn load(dir: &Path, id: &str, opts: &RuntimeOptions) -> Result<ObjectDetector> {
        let info = ModelInfo::load_one_of(dir, id, &ObjectDecoder::NAMES)?;
        let decoder = ObjectDecoder::of(&info.manifest.decoder).expect("a decoder load_one_of accepted");
        let outputs = decoder.outputs();
        if info.manifest.outputs.len() != outputs {
            anyhow::bail!(
                "model manifest of {id:?}: decoder {:?} reads {outputs} output(s), the manifest names {}",
                info.manifest.decoder,
                info.manifest.outputs.len()
            );
        }
        let run = Runner::new(session(&info, opts)?, &info.manifest.input.name, &info.manifest.outputs)?;
        Ok(ObjectDetector { info, decoder, run })
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
        let (mean, std) = (spec.mean, spec.std);
        let bgr = spec.color == "BGR";
        // letterbox: the region keeps its aspect ratio, top-left, the rest is the mean (0 after
        // normalisation); else stretched to the input
        let (cw, ch) = if spec.letterbox {
            let k = (w as f32 / roi.w().max(1.0)).min(h as f32 / roi.h().max(1.0));
            (((roi.w() * k).round() as usize).clamp(1, w), ((roi.h() * k).round() as usize).clamp(1, h))
        } else {
            (w, h)
        };
        if spec.letterbox {
            // the padding is the mean: zeroed each frame (the region's aspect may change)
            self.run.input.clear();
        }
        self.run.input.resize(3 * plane, 0.0);
        let buf = &mut self.run.input;
        frame.sample_bilinear(roi, cw, ch, |i, px| {
            let at = (i / cw) * w + i % cw;
            for c in 0..3 {
                let dst = if bgr { 2 - c } else { c };
                buf[dst * plane + at] = (px[c] - mean[c]) / std[c];
            }
        });
        self.run.run([1, 3, h, w])?;
        let classes = self.info.manifest.labels.len();
        objects.clear();
        match self.decoder {
            ObjectDecoder::NanoDet => {
                for (k, stride) in [8usize, 16, 32].into_iter().enumerate() {
                    let (cls, reg) = (self.run.output(2 * k)?, self.run.output(2 * k + 1)?);
                    decode_nanodet_stride(cls, reg, classes, stride, w as f32, threshold, wanted, objects);
                }
            }
            ObjectDecoder::Ssd => {
                let size = (w as f32, h as f32);
                decode_ssd(self.run.output(0)?, self.run.output(1)?, classes, size, threshold, wanted, objects)
            }
            ObjectDecoder::CenterNet => {
                let (heat, wh, off) = (self.run.output(0)?, self.run.output(1)?, self.run.output(2)?);
                decode_centernet(heat, wh, off, classes, (w as f32, h as f32), threshold, wanted, objects)
                    .map_err(|e| anyhow::anyhow!("model {}: {e}", self.info.id))?;
            }
            d => decode_yolo(d, self.run.output(0)?, classes, (w as f32, h as f32), threshold, wanted, objects),
        }
        nms_per_class_in_place(objects);
        let (sx, sy) = (roi.w() / cw as f32, roi.h() / ch as f32);
        for o in objects.iter_mut() {
            o.bbox = o.bbox.scale(sx, sy).offset(roi.x1, roi.y1);
        }
        Ok(())
    }
}
