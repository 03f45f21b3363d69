//! The face detector: the vendored CenterFace (MODELS.md §1: RGB, raw 0..255, stretch-resized to
//! multiples of 32, NCHW; heatmap/scale/offset decoding at stride 4), or a site's SCRFD-style
//! anchor model (`decoder = "scrfd"`: per stride 8, 16, 32 scores, box distances and optional
//! landmarks, two anchors per cell), or a RetinaFace prior-box model (`decoder = "retinaface"`);
//! greedy NMS at IoU 0.3, boxes mapped back by the resize factors.

use std::path::Path;

use anyhow::Result;

use super::nms::nms_in_place;
use super::objects::Object;
use super::runner::Runner;
use super::runtime::{ModelInfo, RuntimeOptions, session};
use crate::frame::{BBox, RgbFrame};

/// A detected face in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Face {
    pub bbox: BBox,
    pub score: f32,
    /// Five landmarks (x, y): eyes, nose tip, mouth corners.
    pub landmarks: [[f32; 2]; 5],
}

/// Decodes CenterFace outputs (one image) as MODELS.md §1 describes. `h`,`w` is the output grid,
/// `in_w`,`in_h` the network input size; boxes come back in network-input pixels.
#[allow(clippy::too_many_arguments)]
pub fn decode_centerface(
    heat: &[f32],
    scale: &[f32],
    offset: &[f32],
    lms: &[f32],
    h: usize,
    w: usize,
    in_w: f32,
    in_h: f32,
    threshold: f32,
) -> Vec<Face> {
    let mut out = Vec::new();
    decode_centerface_into(heat, scale, offset, lms, (h, w), (in_w, in_h), threshold, &mut out);
    out
}

/// [`decode_centerface`] into `out` (cleared first; no allocation once it has grown).
#[allow(clippy::too_many_arguments)]
pub fn decode_centerface_into(
    heat: &[f32],
    scale: &[f32],
    offset: &[f32],
    lms: &[f32],
    (h, w): (usize, usize),
    (in_w, in_h): (f32, f32),
    threshold: f32,
    cands: &mut Vec<Face>,
) {
    let n = h * w;
    cands.clear();
    for r in 0..h {
        for c in 0..w {
            let i = r * w + c;
            let s = heat[i];
            if s <= threshold {
                continue;
            }
            let bh = scale[i].exp() * 4.0;
            let bw = scale[n + i].exp() * 4.0;
            let cy = (r as f32 + offset[i] + 0.5) * 4.0;
            let cx = (c as f32 + offset[n + i] + 0.5) * 4.0;
            let x1 = (cx - bw / 2.0).max(0.0).min(in_w);
            let y1 = (cy - bh / 2.0).max(0.0).min(in_h);
            let x2 = (x1 + bw).min(in_w);
            let y2 = (y1 + bh).min(in_h);
            let mut landmarks = [[0f32; 2]; 5];
            for (k, lm) in landmarks.iter_mut().enumerate() {
                lm[0] = lms[(2 * k + 1) * n + i] * bw + x1;
                lm[1] = lms[2 * k * n + i] * bh + y1;
            }
            cands.push(Face { bbox: BBox { x1, y1, x2, y2 }, score: s, landmarks });
        }
    }
    nms_in_place(cands, FACE_NMS_IOU, |f| f.bbox, |f| f.score);
}

/// The output layouts the face detector decodes (`decoder` in the model's manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceDecoder {
    /// CenterFace: heatmap, log-size, offset, landmarks at stride 4.
    CenterFace,
    /// SCRFD (insightface): for strides 8, 16, 32 in that order, `score` `[N, 1]`, then `bbox`
    /// `[N, 4]` (left, top, right, bottom distances in strides), then optionally `kps` `[N, 10]`
    /// (landmark offsets in strides): N = 2 anchors per cell, anchors centred at (col, row) ×
    /// stride; 6 or 9 outputs.
    Scrfd,
    /// RetinaFace (Pytorch_Retinaface exports): `loc` `[N, 4]` (centre offsets and log sizes
    /// against prior boxes, variances 0.1 and 0.2), `conf` `[N, 2]` (softmax: background, face),
    /// optionally `landms` `[N, 10]`; priors for strides 8, 16, 32 with sizes 16 and 32, 64 and
    /// 128, 256 and 512, cells row by row, centred at (col + ½, row + ½) × stride; 2 or 3 outputs.
    RetinaFace,
}

impl FaceDecoder {
    pub const NAMES: [&str; 3] = ["centerface", "scrfd", "retinaface"];
}

/// RetinaFace's prior boxes: (stride, the two sizes of its cells' priors).
const RETINAFACE_PRIORS: [(usize, [f32; 2]); 3] = [(8, [16.0, 32.0]), (16, [64.0, 128.0]), (32, [256.0, 512.0])];
/// RetinaFace's box variances: centre, size.
const RETINAFACE_VARIANCE: [f32; 2] = [0.1, 0.2];

/// Decodes RetinaFace outputs of one image (`loc`, `conf`, optionally `landms`) for an input of
/// `in_w` × `in_h`, into `out` (cleared first); boxes in input pixels, NMS applied. Outputs whose
/// sizes do not fit the input's priors are an error.
pub fn decode_retinaface_into(
    outs: &[&[f32]],
    (in_w, in_h): (usize, usize),
    threshold: f32,
    out: &mut Vec<Face>,
) -> Result<()> {
    out.clear();
    if !(2..=3).contains(&outs.len()) {
        anyhow::bail!("retinaface reads 2 or 3 outputs (loc, conf, landms), got {}", outs.len());
    }
    let n: usize = RETINAFACE_PRIORS.iter().map(|(s, sizes)| in_w.div_ceil(*s) * in_h.div_ceil(*s) * sizes.len()).sum();
    let (loc, conf) = (outs[0], outs[1]);
    let lms = outs.get(2).copied();
    if loc.len() != 4 * n || conf.len() != 2 * n || lms.is_some_and(|l| l.len() != 10 * n) {
        anyhow::bail!(
            "retinaface outputs do not fit a {in_w}×{in_h} input: {} box rows for its {n} priors",
            loc.len() / 4
        );
    }
    let [vc, vs] = RETINAFACE_VARIANCE;
    let (w, h) = (in_w as f32, in_h as f32);
    let mut a = 0;
    for (stride, sizes) in RETINAFACE_PRIORS {
        let (gw, gh) = (in_w.div_ceil(stride), in_h.div_ceil(stride));
        for cell in 0..gw * gh {
            let s = stride as f32;
            let (cx, cy) = (((cell % gw) as f32 + 0.5) * s, ((cell / gw) as f32 + 0.5) * s);
            for size in sizes {
                let k = a;
                a += 1;
                let p = conf[2 * k + 1];
                if p <= threshold {
                    continue;
                }
                let l = &loc[4 * k..4 * k + 4];
                let (bx, by) = (cx + l[0] * vc * size, cy + l[1] * vc * size);
                let (bw, bh) = (size * (l[2] * vs).exp(), size * (l[3] * vs).exp());
                let bbox = BBox {
                    x1: (bx - bw / 2.0).clamp(0.0, w),
                    y1: (by - bh / 2.0).clamp(0.0, h),
                    x2: (bx + bw / 2.0).clamp(0.0, w),
                    y2: (by + bh / 2.0).clamp(0.0, h),
                };
                let mut landmarks = [[bx, by]; 5];
                if let Some(lm) = lms {
                    for (j, m) in landmarks.iter_mut().enumerate() {
                        *m = [cx + lm[10 * k + 2 * j] * vc * size, cy + lm[10 * k + 2 * j + 1] * vc * size];
                    }
                }
                out.push(Face { bbox, score: p, landmarks });
            }
        }
    }
    nms_in_place(out, FACE_NMS_IOU, |f| f.bbox, |f| f.score);
    Ok(())
}

/// The SCRFD strides and anchors per cell.
const SCRFD_STRIDES: [usize; 3] = [8, 16, 32];
const SCRFD_ANCHORS: usize = 2;

/// Decodes SCRFD outputs of one image (`outs` in the manifest's order: 3 scores, 3 box
/// distances, and 3 landmark sets or none) for an input of `in_w` × `in_h`, into `out` (cleared
/// first); boxes in input pixels, NMS applied. Outputs whose sizes do not fit the input are an
/// error.
pub fn decode_scrfd_into(
    outs: &[&[f32]],
    (in_w, in_h): (usize, usize),
    threshold: f32,
    out: &mut Vec<Face>,
) -> Result<()> {
    out.clear();
    let kps = outs.len() == 9;
    if outs.len() != 6 && !kps {
        anyhow::bail!("scrfd reads 6 or 9 outputs, got {}", outs.len());
    }
    for (k, stride) in SCRFD_STRIDES.into_iter().enumerate() {
        let (gw, gh) = (in_w.div_ceil(stride), in_h.div_ceil(stride));
        let n = gw * gh * SCRFD_ANCHORS;
        let (score, dist) = (outs[k], outs[3 + k]);
        let lms = if kps { outs[6 + k] } else { &[][..] };
        if score.len() != n || dist.len() != 4 * n || (kps && lms.len() != 10 * n) {
            anyhow::bail!(
                "scrfd outputs at stride {stride} do not fit a {in_w}×{in_h} input: {} scores for {n} anchors",
                score.len()
            );
        }
        let s = stride as f32;
        for (a, &p) in score.iter().enumerate().filter(|(_, p)| **p > threshold) {
            let cell = a / SCRFD_ANCHORS;
            let (cx, cy) = ((cell % gw) as f32 * s, (cell / gw) as f32 * s);
            let d = &dist[4 * a..4 * a + 4];
            let (w, h) = (in_w as f32, in_h as f32);
            let bbox = BBox {
                x1: (cx - d[0] * s).clamp(0.0, w),
                y1: (cy - d[1] * s).clamp(0.0, h),
                x2: (cx + d[2] * s).clamp(0.0, w),
                y2: (cy + d[3] * s).clamp(0.0, h),
            };
            let mut landmarks = [[cx, cy]; 5];
            if kps {
                for (j, lm) in landmarks.iter_mut().enumerate() {
                    *lm = [cx + lms[10 * a + 2 * j] * s, cy + lms[10 * a + 2 * j + 1] * s];
                }
            }
            out.push(Face { bbox, score: p, landmarks });
        }
    }
    nms_in_place(out, FACE_NMS_IOU, |f| f.bbox, |f| f.score);
    Ok(())
}

/// Faces overlapping a better-scored one at this IoU or more are the same face.
const FACE_NMS_IOU: f32 = 0.3;

/// The second pass of `tile_pass`: `detect` (the detector at the first pass's input width) runs
/// on each of `region`'s 2×2 tiles ([`BBox::tiles_2x2`]), and their faces join `faces` (the first
/// pass's) by the detector's own NMS. `more` is scratch space.
pub fn add_tile_pass(
    region: BBox,
    faces: &mut Vec<Face>,
    more: &mut Vec<Face>,
    mut detect: impl FnMut(BBox, &mut Vec<Face>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for tile in region.tiles_2x2() {
        detect(tile, more)?;
        faces.append(more);
    }
    nms_in_place(faces, FACE_NMS_IOU, |f| f.bbox, |f| f.score);
    Ok(())
}

/// NanoDet's person score for the person pass (upstream's threshold, as the utensils rule's).
pub const PERSON_PASS_THRESHOLD: f32 = 0.35;
/// Persons the person pass looks at: at most this many per frame, the highest-scored first.
pub const PERSON_PASS_MAX: usize = 8;
/// The person pass skips persons wider than this share of the frame: their faces are large enough
/// for the whole-frame pass.
pub const PERSON_PASS_MAX_SHARE: f32 = 0.25;
/// The person pass zooms a head region by this much (its input width, rounded up to the
/// detector's multiple), at most to [`PERSON_PASS_MAX_WIDTH`].
pub const PERSON_PASS_ZOOM: f32 = 3.0;
pub const PERSON_PASS_MAX_WIDTH: u32 = 320;

/// Where a person box's face is: the box's top, as tall as the box is wide (a head and shoulders;
/// the whole box when it shows only those) but at least 30 % of its height, grown by 10 % on every
/// side (a detector's person box may cut the top of the head), within `w`×`h`.
pub fn head_region(person: BBox, w: f32, h: f32) -> BBox {
    let tall = person.h().min(person.w().max(0.3 * person.h()));
    BBox { x1: person.x1, y1: person.y1, x2: person.x2, y2: person.y1 + tall }.expand(0.1, w, h)
}

/// The second pass of the person pass: `detect` runs on the head region ([`head_region`]) of each
/// of up to [`PERSON_PASS_MAX`] `persons` (the object detector's, sorted here best first) narrower
/// than [`PERSON_PASS_MAX_SHARE`] of the frame, zoomed [`PERSON_PASS_ZOOM`]× (the input width it
/// is given), and their faces join `faces` by the detector's own NMS. `more` is scratch space.
/// Returns the regions looked at.
pub fn add_person_pass(
    persons: &mut [Object],
    (w, h): (f32, f32),
    faces: &mut Vec<Face>,
    more: &mut Vec<Face>,
    mut detect: impl FnMut(BBox, u32, &mut Vec<Face>) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    persons.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut looked = 0;
    for p in persons.iter().map(|p| p.bbox).filter(|p| p.w() <= PERSON_PASS_MAX_SHARE * w).take(PERSON_PASS_MAX) {
        let r = head_region(p, w, h);
        let iw = ((r.w() * PERSON_PASS_ZOOM).round() as u32).clamp(32, PERSON_PASS_MAX_WIDTH);
        detect(r, iw, more)?;
        faces.append(more);
        looked += 1;
    }
    nms_in_place(faces, FACE_NMS_IOU, |f| f.bbox, |f| f.score);
    Ok(looked)
}

/// The face detector: CenterFace, or an SCRFD- or RetinaFace-style model.
pub struct FaceDetector {
    pub info: ModelInfo,
    pub decoder: FaceDecoder,
    run: Runner,
}

impl FaceDetector {
    pub fn load(dir: &Path, id: &str, opts: &RuntimeOptions) -> Result<FaceDetector> {
        let info = ModelInfo::load_one_of(dir, id, &FaceDecoder::NAMES)?;
        let (decoder, outputs) = match info.manifest.decoder.as_str() {
            "scrfd" => (FaceDecoder::Scrfd, &[6, 9][..]),
            "retinaface" => (FaceDecoder::RetinaFace, &[2, 3][..]),
            _ => (FaceDecoder::CenterFace, &[4][..]),
        };
        if !outputs.contains(&info.manifest.outputs.len()) {
            anyhow::bail!(
                "model manifest of {id:?}: decoder {:?} reads {outputs:?} outputs, the manifest names {}",
                info.manifest.decoder,
                info.manifest.outputs.len()
            );
        }
        let run = Runner::new(session(&info, opts)?, &info.manifest.input.name, &info.manifest.outputs)?;
        Ok(FaceDetector { info, decoder, run })
    }

    /// Detects faces in `frame`; boxes in frame pixels.
    pub fn detect(&mut self, frame: &RgbFrame, threshold: f32) -> Result<Vec<Face>> {
        let mut out = Vec::new();
        self.detect_in(frame, frame.full(), 0, threshold, &mut out)?;
        Ok(out)
    }

    /// Detects faces in `roi` of the frame (a zone's bounding box, or the whole frame), with the
    /// model input `input_width` pixels wide (0: the region's own width), rounded up to the
    /// model's multiple, into `out` (cleared first; no allocation once it has grown). Boxes are in
    /// frame pixels.
    pub fn detect_in(
        &mut self,
        frame: &RgbFrame,
        roi: BBox,
        input_width: u32,
        threshold: f32,
        out: &mut Vec<Face>,
    ) -> Result<()> {
        let g = self.infer(&[frame], roi, input_width)?;
        self.decode(0, g, roi, threshold, out)
    }

    /// [`detect_in`](Self::detect_in) on several frames of the same size in one model run
    /// (batch = frames.len()).
    pub fn detect_batch(
        &mut self,
        frames: &[&RgbFrame],
        roi: BBox,
        input_width: u32,
        threshold: f32,
    ) -> Result<Vec<Vec<Face>>> {
        let g = self.infer(frames, roi, input_width)?;
        (0..frames.len())
            .map(|b| {
                let mut out = Vec::new();
                self.decode(b, g, roi, threshold, &mut out)?;
                Ok(out)
            })
            .collect()
    }

    /// Runs the model on `roi` of each frame; returns the input size (w, h).
    fn infer(&mut self, frames: &[&RgbFrame], roi: BBox, input_width: u32) -> Result<(usize, usize)> {
        let spec = &self.info.manifest.input;
        let m = spec.multiple_of.max(1);
        let (rw, rh) = (roi.w().max(1.0), roi.h().max(1.0));
        let (tw, th) = if input_width == 0 {
            (rw, rh)
        } else {
            let k = input_width as f32 / rw;
            (input_width as f32, rh * k)
        };
        let (w, h) = if spec.width > 0 {
            (spec.width, spec.height)
        } else {
            ((tw.round() as usize).div_ceil(m) * m, (th.round() as usize).div_ceil(m) * m)
        };
        let plane = w * h;
        let nb = frames.len();
        self.run.input.resize(nb * 3 * plane, 0.0);
        let (mean, std) = (spec.mean, spec.std);
        // channel c of the input is the pixel's channel `order[c]` (RetinaFace exports read BGR)
        let order = if spec.color == "BGR" { [2, 1, 0] } else { [0, 1, 2] };
        for (b, frame) in frames.iter().enumerate() {
            let buf = &mut self.run.input[b * 3 * plane..(b + 1) * 3 * plane];
            frame.sample_bilinear(roi, w, h, |i, px| {
                for c in 0..3 {
                    buf[c * plane + i] = (px[order[c]] - mean[c]) / std[c];
                }
            });
        }
        self.run.run([nb, 3, h, w])?;
        Ok((w, h))
    }

    /// Decodes image `b` of the last run into `out`, boxes in frame pixels.
    fn decode(&self, b: usize, (w, h): (usize, usize), roi: BBox, threshold: f32, out: &mut Vec<Face>) -> Result<()> {
        let r = &self.run;
        if self.decoder != FaceDecoder::CenterFace {
            // each output holds the batch's images one after another
            let nb = self.run.input.len() / (3 * w * h).max(1);
            let outs = (0..self.info.manifest.outputs.len())
                .map(|k| {
                    let o = r.output(k)?;
                    let per = o.len() / nb.max(1);
                    Ok(&o[b * per..(b + 1) * per])
                })
                .collect::<Result<Vec<&[f32]>>>()?;
            let decode = if self.decoder == FaceDecoder::Scrfd { decode_scrfd_into } else { decode_retinaface_into };
            decode(&outs, (w, h), threshold, out).map_err(|e| anyhow::anyhow!("model {}: {e}", self.info.id))?;
        } else {
            let (heat, scale, offset, lms) = (r.output(0)?, r.output(1)?, r.output(2)?, r.output(3)?);
            let (gh, gw) = (h / 4, w / 4);
            let g = gh * gw;
            decode_centerface_into(
                &heat[b * g..(b + 1) * g],
                &scale[b * 2 * g..(b + 1) * 2 * g],
                &offset[b * 2 * g..(b + 1) * 2 * g],
                &lms[b * 10 * g..(b + 1) * 10 * g],
                (gh, gw),
                (w as f32, h as f32),
                threshold,
                out,
            );
        }
        let (sx, sy) = (w as f32 / roi.w().max(1.0), h as f32 / roi.h().max(1.0));
        for f in out.iter_mut() {
            f.bbox = f.bbox.scale(1.0 / sx, 1.0 / sy).offset(roi.x1, roi.y1);
            for lm in &mut f.landmarks {
                lm[0] = lm[0] / sx + roi.x1;
                lm[1] = lm[1] / sy + roi.y1;
            }
        }
        Ok(())
    }
}
