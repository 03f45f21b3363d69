//! Detection stage: the vendored ONNX models, run with ONNX Runtime through `ort` (library loaded at
//! run time). Each model has a manifest `models/<id>.toml` (input spec, preprocessing, output
//! decoding, labels, licence, SHA-256); the SHA-256 of the ONNX file is checked before it is loaded.
//!
//! Pre- and post-processing follow `../shared/models/MODELS.md` exactly:
//! - CenterFace: RGB, raw 0..255, stretch-resized to multiples of 32, NCHW; heatmap/scale/offset
//!   decoding at stride 4, greedy NMS at IoU 0.3, boxes mapped back by the resize factors.
//! - MobileNetV2 mask classifier: face crop, RGB, bilinear 224×224, `x/127.5 − 1`, NHWC;
//!   output `probs[:,0]` = mask, `probs[:,1]` = no mask.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use ort::session::Session;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::frame::{BBox, RgbFrame};

mod runner;
use runner::Runner;

/// `models/<id>.toml`
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    pub id: String,
    /// ONNX file, relative to the manifest.
    pub file: String,
    /// SHA-256 of the ONNX file, checked at every load.
    pub sha256: String,
    pub task: String,
    /// Which decoding this model needs: "centerface" or "softmax2".
    pub decoder: String,
    pub labels: Vec<String>,
    pub licence: String,
    pub source: String,
    pub input: InputSpec,
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    /// "NCHW" or "NHWC".
    pub layout: String,
    /// "RGB".
    pub color: String,
    /// Fixed input size, or 0 for "the frame's size rounded up to `multiple_of`".
    pub width: usize,
    pub height: usize,
    pub multiple_of: usize,
    /// Normalisation: `(pixel − mean) / std`, per channel in `color` order.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: String,
}

/// A model as loaded: manifest plus where it came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub id: String,
    pub sha256: String,
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(skip)]
    pub manifest: ModelManifest,
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model file {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

impl ModelInfo {
    /// Reads `<dir>/<id>.toml`, checks the ONNX file's SHA-256 against it.
    pub fn load(dir: &Path, id: &str, decoder: &str) -> Result<ModelInfo> {
        let mpath = dir.join(format!("{id}.toml"));
        let text = std::fs::read_to_string(&mpath)
            .with_context(|| format!("model manifest {}: cannot read (model id {id:?})", mpath.display()))?;
        let manifest: ModelManifest =
            toml::from_str(&text).map_err(|e| anyhow!("model manifest {}: {}", mpath.display(), e.message()))?;
        if manifest.decoder != decoder {
            bail!(
                "model manifest {}: decoder is {:?}, but this stage needs a {decoder:?} model",
                mpath.display(),
                manifest.decoder
            );
        }
        let path = dir.join(&manifest.file);
        let actual = sha256_file(&path)?;
        if !actual.eq_ignore_ascii_case(&manifest.sha256) {
            bail!(
                "model file {}: SHA-256 is {actual}, but manifest {} says {}; refusing to load a model that \
                 is not the one vendored (re-vendor it, or fix the manifest if the change is intended)",
                path.display(),
                mpath.display(),
                manifest.sha256
            );
        }
        Ok(ModelInfo { id: manifest.id.clone(), sha256: actual, path, manifest })
    }
}

/// The class names in a model's manifest (no hash check: for validating configuration).
pub fn read_labels(dir: &Path, id: &str) -> Result<Vec<String>> {
    let mpath = dir.join(format!("{id}.toml"));
    let text = std::fs::read_to_string(&mpath)
        .with_context(|| format!("model manifest {}: cannot read (model id {id:?})", mpath.display()))?;
    let m: ModelManifest =
        toml::from_str(&text).map_err(|e| anyhow!("model manifest {}: {}", mpath.display(), e.message()))?;
    Ok(m.labels)
}

static ORT_ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// Finds libonnxruntime: explicit path, `$ORT_DYLIB_PATH`, then `.deps/onnxruntime/` next to the
/// working directory or the executable's checkout.
pub fn find_ort_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(p));
    }
    let mut dirs = vec![PathBuf::from(".deps/onnxruntime")];
    if let Ok(exe) = std::env::current_exe() {
        for anc in exe.ancestors().skip(1).take(4) {
            dirs.push(anc.join(".deps/onnxruntime"));
        }
    }
    for d in &dirs {
        if let Ok(rd) = std::fs::read_dir(d) {
            let mut libs: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so.")))
                .collect();
            libs.sort();
            if let Some(l) = libs.pop() {
                return Ok(l);
            }
        }
    }
    bail!(
        "ONNX Runtime library not found: set ORT_DYLIB_PATH to libonnxruntime.so.1.3x.y, or run .ci/install \
         (it unpacks the PyPI onnxruntime wheel into .deps/onnxruntime/)"
    )
}

fn ort_env(lib: Option<&Path>) -> Result<&'static ort::environment::Environment> {
    let env = ORT_ENV.get_or_init(|| {
        let path = find_ort_library(lib).map_err(|e| e.to_string())?;
        let builder =
            ort::init_from(&path).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        builder.with_name("vigil").build().map_err(|e| format!("ONNX Runtime environment: {e}"))
    });
    env.as_ref().map_err(|e| anyhow!("{e}"))
}

/// Runtime options for every session.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub execution_providers: Vec<String>,
    pub intra_threads: usize,
    pub ort_library: Option<PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self { execution_providers: vec!["cpu".into()], intra_threads: 1, ort_library: None }
    }
}

fn session(info: &ModelInfo, opts: &RuntimeOptions) -> Result<Session> {
    use ort::ep::ExecutionProvider;
    let env = ort_env(opts.ort_library.as_deref())?;
    let e = |e: ort::Error<ort::session::builder::SessionBuilder>| anyhow!("{}: {}", info.path.display(), e);
    let mut eps = Vec::new();
    for name in &opts.execution_providers {
        match name.as_str() {
            "cuda" if ort::ep::CUDA::is_available().unwrap_or(false) => eps.push(ort::ep::CUDA::default().build()),
            "tensorrt" if ort::ep::TensorRT::is_available().unwrap_or(false) => {
                eps.push(ort::ep::TensorRT::default().build())
            }
            "cpu" => {}
            other => {
                tracing::warn!(model = %info.id, provider = other, "execution provider not available here; using the next one")
            }
        }
    }
    let used = if eps.is_empty() { "cpu".to_string() } else { format!("{:?} then cpu", opts.execution_providers) };
    let s = Session::builder(env)
        .map_err(|e| anyhow!("{e}"))?
        .with_intra_threads(opts.intra_threads)
        .map_err(e)?
        .with_inter_threads(1)
        .map_err(e)?
        .with_intra_op_spinning(false)
        .map_err(e)?
        .with_inter_op_spinning(false)
        .map_err(e)?
        .with_execution_providers(eps)
        .map_err(e)?
        .commit_from_file(&info.path)
        .map_err(|err| anyhow!("model {}: ONNX Runtime cannot load it: {err}", info.path.display()))?;
    tracing::info!(model = %info.id, sha256 = %info.sha256, execution = %used, "model loaded");
    Ok(s)
}

/// A detected face in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Face {
    pub bbox: BBox,
    pub score: f32,
    /// Five landmarks (x, y): eyes, nose tip, mouth corners.
    pub landmarks: [[f32; 2]; 5],
}

/// Greedy NMS, highest score first; suppresses boxes with IoU ≥ `iou` against a kept box.
pub fn nms<T>(mut items: Vec<T>, iou: f32, bbox: impl Fn(&T) -> BBox, score: impl Fn(&T) -> f32) -> Vec<T> {
    nms_in_place(&mut items, iou, bbox, score);
    items
}

/// [`nms`] in place, without allocating: the kept items end up first, best first.
pub fn nms_in_place<T>(items: &mut Vec<T>, iou: f32, bbox: impl Fn(&T) -> BBox, score: impl Fn(&T) -> f32) {
    items.sort_unstable_by(|a, b| score(b).total_cmp(&score(a)));
    keep_greedy(items, iou, bbox, |_| 0);
}

/// The greedy step of NMS on `items` sorted by group, then best first within a group: keeps an
/// item unless a kept item of its group overlaps it at IoU ≥ `iou`; kept items end up first.
fn keep_greedy<T>(items: &mut Vec<T>, iou: f32, bbox: impl Fn(&T) -> BBox, group: impl Fn(&T) -> u16) {
    let (mut kept, mut start) = (0, 0);
    for i in 0..items.len() {
        if kept > start && group(&items[kept - 1]) != group(&items[i]) {
            start = kept;
        }
        let b = bbox(&items[i]);
        if items[start..kept].iter().all(|k| bbox(k).iou(&b) < iou) {
            items.swap(kept, i);
            kept += 1;
        }
    }
    items.truncate(kept);
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
    nms_in_place(cands, 0.3, |f| f.bbox, |f| f.score);
}

/// CenterFace face detector.
pub struct FaceDetector {
    pub info: ModelInfo,
    run: Runner,
}

impl FaceDetector {
    pub fn load(dir: &Path, id: &str, opts: &RuntimeOptions) -> Result<FaceDetector> {
        let info = ModelInfo::load(dir, id, "centerface")?;
        let run = Runner::new(session(&info, opts)?, &info.manifest.input.name, &info.manifest.outputs)?;
        Ok(FaceDetector { info, run })
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
        for (b, frame) in frames.iter().enumerate() {
            let buf = &mut self.run.input[b * 3 * plane..(b + 1) * 3 * plane];
            frame.sample_bilinear(roi, w, h, |i, px| {
                for c in 0..3 {
                    buf[c * plane + i] = (px[c] - mean[c]) / std[c];
                }
            });
        }
        self.run.run([nb, 3, h, w])?;
        Ok((w, h))
    }

    /// Decodes image `b` of the last run into `out`, boxes in frame pixels.
    fn decode(&self, b: usize, (w, h): (usize, usize), roi: BBox, threshold: f32, out: &mut Vec<Face>) -> Result<()> {
        let r = &self.run;
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

pub struct MaskClassifier {
    pub info: ModelInfo,
    run: Runner,
    pub head: Option<FittedHead>,
}

/// A logistic-regression head on standardised backbone features (`vigil fit`), stored as
/// `models/<id>.json` with a manifest `models/<id>.toml` that holds its SHA-256.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedHead {
    pub id: String,
    pub kind: String,
    /// The model whose `features` output this head reads.
    pub features_model: String,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// Crop margins the features are taken at (fractions of the face box on each side); the
    /// feature vector is their features concatenated, in this order.
    #[serde(default = "single_view")]
    pub views: Vec<f32>,
    pub provenance: serde_json::Value,
    /// SHA-256 of the head file, set when loaded.
    #[serde(skip)]
    pub sha256: String,
}

fn single_view() -> Vec<f32> {
    vec![0.0]
}

impl FittedHead {
    pub fn predict(&self, f: &[f32]) -> f32 {
        self.predict_iter(f)
    }

    /// [`predict`](Self::predict) on features given piecewise (the views' features in order).
    pub fn predict_iter<'a>(&self, f: impl IntoIterator<Item = &'a f32>) -> f32 {
        let z: f32 = f
            .into_iter()
            .zip(&self.mean)
            .zip(&self.std)
            .zip(&self.weights)
            .map(|(((x, m), s), w)| (x - m) / s * w)
            .sum::<f32>()
            + self.bias;
        1.0 / (1.0 + (-z).exp())
    }

    /// Reads `<dir>/<id>.toml` (`file`, `sha256`) and the head it names, checking the hash.
    pub fn load(dir: &Path, id: &str) -> Result<FittedHead> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct HeadManifest {
            id: String,
            file: String,
            sha256: String,
        }
        let mpath = dir.join(format!("{id}.toml"));
        let text = std::fs::read_to_string(&mpath)
            .with_context(|| format!("head manifest {}: cannot read", mpath.display()))?;
        let m: HeadManifest =
            toml::from_str(&text).map_err(|e| anyhow!("head manifest {}: {}", mpath.display(), e.message()))?;
        let path = dir.join(&m.file);
        let bytes = std::fs::read(&path).with_context(|| format!("head {}: cannot read", path.display()))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != m.sha256 {
            bail!("head {}: SHA-256 is {actual}, but manifest {} says {}", path.display(), mpath.display(), m.sha256);
        }
        let mut h: FittedHead = serde_json::from_slice(&bytes).map_err(|e| anyhow!("head {}: {e}", path.display()))?;
        h.sha256 = actual;
        if h.id != m.id
            || h.weights.len() != h.mean.len()
            || h.std.len() != h.mean.len()
            || h.views.is_empty()
            || !h.mean.len().is_multiple_of(h.views.len())
            || h.views.iter().any(|v| !(0.0..=1.0).contains(v))
        {
            bail!("head {}: inconsistent (id or dimensions)", path.display());
        }
        Ok(h)
    }
}

impl MaskClassifier {
    pub fn load(dir: &Path, id: &str, opts: &RuntimeOptions) -> Result<MaskClassifier> {
        let info = ModelInfo::load(dir, id, "softmax2")?;
        let run = Runner::new(session(&info, opts)?, &info.manifest.input.name, &info.manifest.outputs)?;
        Ok(MaskClassifier { info, run, head: None })
    }

    /// No-mask probability for each face box (one batched run). With a fitted head, the head's
    /// probability on the backbone features at the head's crop margins; otherwise the model's own
    /// `probs[:,1]` on the box widened by `margin`.
    pub fn no_mask_prob(&mut self, frame: &RgbFrame, boxes: &[BBox], margin: f32) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(boxes.len());
        self.no_mask_prob_into(frame, boxes, margin, &mut out)?;
        Ok(out)
    }

    /// [`no_mask_prob`](Self::no_mask_prob) into `out` (cleared first): no allocation once
    /// `out` and the input buffer have grown to the number of faces.
    pub fn no_mask_prob_into(
        &mut self,
        frame: &RgbFrame,
        boxes: &[BBox],
        margin: f32,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        out.clear();
        if boxes.is_empty() {
            return Ok(());
        }
        let (fw, fh) = (frame.width as f32, frame.height as f32);
        let n = boxes.len();
        let Some(head) = &self.head else {
            self.infer(frame, boxes.iter().map(|b| b.expand(margin, fw, fh)), n)?;
            out.extend(self.run.output(0)?.chunks_exact(2).map(|p| p[1]));
            return Ok(());
        };
        let views = head.views.len();
        let head = self.head.take().expect("head");
        let r = self.infer(
            frame,
            head.views.iter().flat_map(|&m| boxes.iter().map(move |b| b.expand(m, fw, fh))),
            n * views,
        );
        let r = r.and_then(|_| {
            let f = self.features_output()?;
            let d = f.len() / (n * views);
            out.extend(
                (0..n).map(|i| head.predict_iter((0..views).flat_map(|v| &f[(v * n + i) * d..(v * n + i + 1) * d]))),
            );
            Ok(())
        });
        self.head = Some(head);
        r
    }

    /// Backbone features (needs a model with a `features` output) and the model's no-mask
    /// probabilities.
    pub fn features(&mut self, frame: &RgbFrame, boxes: &[BBox]) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        if boxes.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        self.infer(frame, boxes.iter().copied(), boxes.len())?;
        let probs = self.run.output(0)?.chunks_exact(2).map(|p| p[1]).collect();
        let f = self.features_output()?;
        let d = f.len() / boxes.len();
        Ok((probs, f.chunks_exact(d).map(<[f32]>::to_vec).collect()))
    }

    /// Runs the model on `n` crops of the frame.
    fn infer(&mut self, frame: &RgbFrame, crops: impl Iterator<Item = BBox>, n: usize) -> Result<()> {
        let spec = &self.info.manifest.input;
        let (w, h) = (spec.width, spec.height);
        let per = w * h * 3;
        self.run.input.resize(n * per, 0.0);
        let (mean, std) = (spec.mean, spec.std);
        for (b, bx) in crops.take(n).enumerate() {
            let buf = &mut self.run.input[b * per..(b + 1) * per];
            frame.sample_bilinear(bx, w, h, |i, px| {
                for c in 0..3 {
                    buf[i * 3 + c] = (px[c] - mean[c]) / std[c];
                }
            });
        }
        self.run.run([n, h, w, 3])
    }

    /// The `features` output of the last run.
    fn features_output(&self) -> Result<&[f32]> {
        if self.info.manifest.outputs.len() < 2 {
            bail!("model {} has no features output (use mask-classifier-mobilenetv2-features)", self.info.id);
        }
        self.run.output(1)
    }
}

/// One copy of every model the pipeline needs: the no-mask pair and/or the object detector.
pub struct ModelSet {
    pub no_mask: Option<Models>,
    pub objects: Option<ObjectDetector>,
}

impl ModelSet {
    /// Models in use, for manifests.
    pub fn infos(&self) -> Vec<(String, String)> {
        let mut v = self.no_mask.as_ref().map(Models::infos).unwrap_or_default();
        if let Some(o) = &self.objects {
            v.push((o.info.id.clone(), o.info.sha256.clone()));
        }
        v
    }
}

/// `instances` copies of the models; cameras take a free one (their own first), so up to
/// `instances` frames are inferred at the same time.
pub struct ModelPool {
    sets: Vec<std::sync::Mutex<ModelSet>>,
    /// Cross-camera batching of face detection (`models.batch` > 1).
    batcher: Option<FaceBatcher>,
}

/// One camera's face-detection request waiting for a batch.
struct BatchRequest {
    id: u64,
    frame: RgbFrame,
    roi: BBox,
    input_width: u32,
    threshold: f32,
}

#[derive(Default)]
struct BatchState {
    pending: Vec<BatchRequest>,
    done: std::collections::HashMap<u64, std::result::Result<Vec<Face>, String>>,
    next_id: u64,
}

/// Batches face detection across cameras: a request waits up to `wait` for others of the same
/// shape (frame size, region, input width, threshold); whoever completes a batch of `max`, or
/// times out first, runs the batch for everyone in one model run.
struct FaceBatcher {
    max: usize,
    wait: std::time::Duration,
    state: std::sync::Mutex<BatchState>,
    ready: std::sync::Condvar,
}

impl ModelPool {
    pub fn new(sets: Vec<ModelSet>) -> ModelPool {
        ModelPool { sets: sets.into_iter().map(std::sync::Mutex::new).collect(), batcher: None }
    }

    /// Batch face detection across cameras, up to `max` frames per model run, waiting at most
    /// `wait` for a batch to fill.
    pub fn with_batching(mut self, max: usize, wait: std::time::Duration) -> ModelPool {
        if max > 1 {
            self.batcher = Some(FaceBatcher { max, wait, state: Default::default(), ready: std::sync::Condvar::new() });
        }
        self
    }

    /// Face detection for camera `hint` into `out` (cleared first): batched with other cameras'
    /// frames when batching is on, else on a free model copy. Without batching, no allocation once
    /// `out` has grown; a batch copies the frame for the camera that runs it.
    pub fn detect_faces(
        &self,
        hint: usize,
        frame: &RgbFrame,
        roi: BBox,
        input_width: u32,
        threshold: f32,
        out: &mut Vec<Face>,
    ) -> Result<()> {
        let Some(b) = &self.batcher else {
            let mut set = self.get(hint);
            let m = set.no_mask.as_mut().context("no-mask models not loaded")?;
            return m.face.detect_in(frame, roi, input_width, threshold, out);
        };
        let shape = |r: &BatchRequest| (r.frame.width, r.frame.height, r.roi, r.input_width, r.threshold);
        let mut st = b.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = st.next_id;
        st.next_id += 1;
        st.pending.push(BatchRequest { id, frame: frame.clone(), roi, input_width, threshold });
        let deadline = std::time::Instant::now() + b.wait;
        loop {
            if let Some(r) = st.done.remove(&id) {
                out.clear();
                out.extend(r.map_err(|e| anyhow!("{e}"))?);
                return Ok(());
            }
            let mine = st.pending.iter().position(|r| r.id == id);
            let now = std::time::Instant::now();
            let key = mine.map(|i| shape(&st.pending[i]));
            let full = key.is_some_and(|k| st.pending.iter().filter(|r| shape(r) == k).count() >= b.max);
            if let Some(k) = key
                && (full || now >= deadline)
            {
                // lead: take up to `max` requests shaped like this one and run them together
                let (mut batch, rest): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut st.pending).into_iter().partition(|r| shape(r) == k);
                let overflow = batch.split_off(batch.len().min(b.max));
                st.pending = rest;
                st.pending.extend(overflow);
                drop(st);
                let frames: Vec<&RgbFrame> = batch.iter().map(|r| &r.frame).collect();
                let result = {
                    let mut set = self.get(hint);
                    match set.no_mask.as_mut() {
                        Some(m) => {
                            m.face.detect_batch(&frames, roi, input_width, threshold).map_err(|e| format!("{e:#}"))
                        }
                        None => Err("no-mask models not loaded".into()),
                    }
                };
                st = b.state.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(faces) => {
                        for (r, f) in batch.iter().zip(faces) {
                            st.done.insert(r.id, Ok(f));
                        }
                    }
                    Err(e) => {
                        for r in &batch {
                            st.done.insert(r.id, Err(e.clone()));
                        }
                    }
                }
                b.ready.notify_all();
                continue;
            }
            let left = deadline.saturating_duration_since(now).max(std::time::Duration::from_millis(1));
            st = b.ready.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// A copy for camera number `hint`: a free one if any, else waits for the camera's own.
    pub fn get(&self, hint: usize) -> std::sync::MutexGuard<'_, ModelSet> {
        let n = self.sets.len();
        for k in 0..n {
            if let Ok(g) = self.sets[(hint + k) % n].try_lock() {
                return g;
            }
        }
        self.sets[hint % n].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Motion gating (as Frigate does): a 32×18 grey thumbnail of the rule's region is compared with
/// the one at the last inferred frame; inference runs when some cell changed by at least
/// `min_change` grey levels, when `recheck` has passed since the last inference (still objects
/// stay tracked), or when the caller forces it.
pub struct MotionGate {
    /// Off: every frame is inferred (and no thumbnail is computed).
    pub enabled: bool,
    pub min_change: f32,
    pub recheck: std::time::Duration,
    reference: Vec<f32>,
    current: Vec<f32>,
    last: Option<std::time::Duration>,
}

impl MotionGate {
    pub const W: usize = 32;
    pub const H: usize = 18;

    pub fn new(min_change: f32, recheck: std::time::Duration) -> MotionGate {
        MotionGate {
            enabled: true,
            min_change,
            recheck,
            reference: Vec::new(),
            current: vec![0.0; Self::W * Self::H],
            last: None,
        }
    }

    /// Whether to run inference on this frame (and if so, it becomes the new reference).
    pub fn should_infer(&mut self, frame: &RgbFrame, roi: BBox, force: bool) -> bool {
        if !self.enabled {
            return true;
        }
        let cur = &mut self.current;
        frame.sample_bilinear(roi, Self::W, Self::H, |i, px| cur[i] = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]);
        let changed = self.reference.len() != self.current.len()
            || self.reference.iter().zip(&self.current).any(|(a, b)| (a - b).abs() >= self.min_change);
        let due = self.last.is_none_or(|t| frame.pts.saturating_sub(t) >= self.recheck);
        let infer = force || changed || due;
        if infer {
            std::mem::swap(&mut self.reference, &mut self.current);
            if self.current.len() != self.reference.len() {
                self.current.resize(self.reference.len(), 0.0);
            }
            self.last = Some(frame.pts);
        }
        infer
    }
}

/// Both models of the no-mask path, loaded once per process.
pub struct Models {
    pub face: FaceDetector,
    pub mask: MaskClassifier,
}

impl Models {
    /// With `head`, the classifier is the head's features model and the head gives the no-mask
    /// probability.
    pub fn load(dir: &Path, face: &str, mask: &str, head: Option<&str>, opts: &RuntimeOptions) -> Result<Models> {
        let face = FaceDetector::load(dir, face, opts)?;
        let mask = match head {
            None => MaskClassifier::load(dir, mask, opts)?,
            Some(h) => {
                let head = FittedHead::load(dir, h)?;
                let mut m = MaskClassifier::load(dir, &head.features_model, opts)?;
                tracing::info!(head = %head.id, features = %head.features_model, "fitted no-mask head loaded");
                m.head = Some(head);
                m
            }
        };
        Ok(Models { face, mask })
    }

    /// Models in use, for manifests (a fitted head is listed with the SHA-256 of its file).
    pub fn infos(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (self.face.info.id.clone(), self.face.info.sha256.clone()),
            (self.mask.info.id.clone(), self.mask.info.sha256.clone()),
        ];
        if let Some(h) = &self.mask.head {
            v.push((h.id.clone(), h.sha256.clone()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_keeps_best_of_overlapping() {
        let b = |x: f32| BBox { x1: x, y1: 0.0, x2: x + 10.0, y2: 10.0 };
        let kept = nms(vec![(b(0.0), 0.5), (b(1.0), 0.9), (b(50.0), 0.3)], 0.3, |t| t.0, |t| t.1);
        assert_eq!(kept.iter().map(|t| t.1).collect::<Vec<_>>(), vec![0.9, 0.3]);
    }

    #[test]
    fn centerface_decoding_follows_models_md() {
        // one 2x2 grid, one hot cell at (r=1, c=0)
        let (h, w) = (2, 2);
        let n = h * w;
        let mut heat = vec![0.0; n];
        heat[2] = 0.9;
        let mut scale = vec![0.0; 2 * n];
        scale[2] = (8.0f32 / 4.0).ln(); // bh = 8
        scale[n + 2] = (4.0f32 / 4.0).ln(); // bw = 4
        let offset = vec![0.0; 2 * n];
        let lms = vec![0.5; 10 * n];
        let f = decode_centerface(&heat, &scale, &offset, &lms, h, w, 8.0, 8.0, 0.5);
        assert_eq!(f.len(), 1);
        // cy = (1 + 0 + .5) * 4 = 6, cx = 2 -> x1 = 0, y1 = 2, x2 = 4, y2 = 8 (clamped to in_h)
        assert_eq!(f[0].bbox, BBox { x1: 0.0, y1: 2.0, x2: 4.0, y2: 8.0 });
        assert_eq!(f[0].landmarks[0], [2.0, 6.0]);
    }

    #[test]
    fn hash_mismatch_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("m.onnx"), b"not the model").unwrap();
        let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/centerface.toml"))
            .unwrap()
            .replace("centerface.onnx", "m.onnx");
        std::fs::write(d.path().join("centerface.toml"), manifest).unwrap();
        let e = ModelInfo::load(d.path(), "centerface", "centerface").unwrap_err().to_string();
        assert!(e.contains("m.onnx") && e.contains("SHA-256 is") && e.contains("c3673a45"), "{e}");
    }
}
