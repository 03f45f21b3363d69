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
use ort::value::TensorRef;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::frame::{BBox, RgbFrame};

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
    items.sort_by(|a, b| score(b).total_cmp(&score(a)));
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for it in items {
        if kept.iter().all(|k| bbox(k).iou(&bbox(&it)) < iou) {
            kept.push(it);
        }
    }
    kept
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
    let n = h * w;
    let mut cands = Vec::new();
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
    nms(cands, 0.3, |f| f.bbox, |f| f.score)
}

/// CenterFace face detector.
pub struct FaceDetector {
    pub info: ModelInfo,
    session: Session,
    input: Vec<f32>,
}

impl FaceDetector {
    pub fn load(dir: &Path, id: &str, opts: &RuntimeOptions) -> Result<FaceDetector> {
        let info = ModelInfo::load(dir, id, "centerface")?;
        let session = session(&info, opts)?;
        Ok(FaceDetector { info, session, input: Vec::new() })
    }

    /// Detects faces in `frame`; boxes in frame pixels.
    pub fn detect(&mut self, frame: &RgbFrame, threshold: f32) -> Result<Vec<Face>> {
        let spec = &self.info.manifest.input;
        let m = spec.multiple_of.max(1);
        let (iw, ih) = (frame.width as usize, frame.height as usize);
        let (w, h) = if spec.width > 0 { (spec.width, spec.height) } else { (iw.div_ceil(m) * m, ih.div_ceil(m) * m) };
        let plane = w * h;
        self.input.resize(3 * plane, 0.0);
        let (mean, std) = (spec.mean, spec.std);
        let buf = &mut self.input;
        frame.sample_bilinear(BBox { x1: 0.0, y1: 0.0, x2: iw as f32, y2: ih as f32 }, w, h, |i, px| {
            for c in 0..3 {
                buf[c * plane + i] = (px[c] - mean[c]) / std[c];
            }
        });
        let tensor = TensorRef::from_array_view(([1usize, 3, h, w], &*self.input))?;
        let outputs = self.session.run(ort::inputs![spec.name.as_str() => tensor])?;
        let names = &self.info.manifest.outputs;
        let get = |k: usize| -> Result<&[f32]> {
            let (_, d) = outputs[names[k].as_str()].try_extract_tensor::<f32>()?;
            Ok(d)
        };
        let faces = decode_centerface(get(0)?, get(1)?, get(2)?, get(3)?, h / 4, w / 4, w as f32, h as f32, threshold);
        let (sx, sy) = (w as f32 / iw as f32, h as f32 / ih as f32);
        Ok(faces
            .into_iter()
            .map(|mut f| {
                f.bbox = f.bbox.scale(1.0 / sx, 1.0 / sy);
                for lm in &mut f.landmarks {
                    lm[0] /= sx;
                    lm[1] /= sy;
                }
                f
            })
            .collect())
    }
}

/// MobileNetV2 mask / no-mask classifier, optionally with a head fitted on site data.
pub struct MaskClassifier {
    pub info: ModelInfo,
    session: Session,
    input: Vec<f32>,
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
    pub provenance: serde_json::Value,
    /// SHA-256 of the head file, set when loaded.
    #[serde(skip)]
    pub sha256: String,
}

impl FittedHead {
    pub fn predict(&self, f: &[f32]) -> f32 {
        let z: f32 = f
            .iter()
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
        if h.id != m.id || h.weights.len() != h.mean.len() || h.std.len() != h.mean.len() {
            bail!("head {}: inconsistent (id or dimensions)", path.display());
        }
        Ok(h)
    }
}

impl MaskClassifier {
    pub fn load(dir: &Path, id: &str, opts: &RuntimeOptions) -> Result<MaskClassifier> {
        let info = ModelInfo::load(dir, id, "softmax2")?;
        let session = session(&info, opts)?;
        Ok(MaskClassifier { info, session, input: Vec::new(), head: None })
    }

    /// No-mask probability for each face box (one batched run). With a fitted head, the head's
    /// probability on the backbone features; otherwise the model's own `probs[:,1]`.
    pub fn no_mask_prob(&mut self, frame: &RgbFrame, boxes: &[BBox]) -> Result<Vec<f32>> {
        if self.head.is_some() {
            let (_, feats) = self.run(frame, boxes, true)?;
            let head = self.head.as_ref().expect("head");
            return Ok(feats.iter().map(|f| head.predict(f)).collect());
        }
        Ok(self.run(frame, boxes, false)?.0)
    }

    /// Backbone features (needs a model with a `features` output) and the model's no-mask
    /// probabilities.
    pub fn features(&mut self, frame: &RgbFrame, boxes: &[BBox]) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        self.run(frame, boxes, true)
    }

    fn run(&mut self, frame: &RgbFrame, boxes: &[BBox], want_features: bool) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        if boxes.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let spec = &self.info.manifest.input;
        let (w, h) = (spec.width, spec.height);
        let per = w * h * 3;
        self.input.resize(boxes.len() * per, 0.0);
        let (mean, std) = (spec.mean, spec.std);
        for (b, bx) in boxes.iter().enumerate() {
            let buf = &mut self.input[b * per..(b + 1) * per];
            frame.sample_bilinear(*bx, w, h, |i, px| {
                for c in 0..3 {
                    buf[i * 3 + c] = (px[c] - mean[c]) / std[c];
                }
            });
        }
        let tensor = TensorRef::from_array_view(([boxes.len(), h, w, 3], &*self.input))?;
        let outputs = self.session.run(ort::inputs![spec.name.as_str() => tensor])?;
        let (_, probs) = outputs[self.info.manifest.outputs[0].as_str()].try_extract_tensor::<f32>()?;
        let probs: Vec<f32> = probs.chunks_exact(2).map(|p| p[1]).collect();
        if !want_features {
            return Ok((probs, Vec::new()));
        }
        let name = self.info.manifest.outputs.get(1).ok_or_else(|| {
            anyhow!("model {} has no features output (use mask-classifier-mobilenetv2-features)", self.info.id)
        })?;
        let (shape, f) = outputs[name.as_str()].try_extract_tensor::<f32>()?;
        let d = shape[1] as usize;
        Ok((probs, f.chunks_exact(d).map(<[f32]>::to_vec).collect()))
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
