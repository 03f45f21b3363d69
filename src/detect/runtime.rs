//! ONNX Runtime (loaded at run time through `ort`) and the vendored models' manifests: input
//! spec, decoding, labels, and the SHA-256 that is checked before a model is loaded.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use ort::session::Session;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::util::fsx;

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
    /// Which decoding this model needs: "centerface", "scrfd" or "retinaface" (face detector), "softmax2"
    /// (classifier), "nanodet-gfl", "yolov8", "yolov5", "ssd" or "centernet" (object detector).
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
    /// "RGB", or "BGR" (object and face detectors).
    pub color: String,
    /// Fixed input size, or 0 for "the frame's size rounded up to `multiple_of`".
    pub width: usize,
    pub height: usize,
    pub multiple_of: usize,
    /// Normalisation: `(pixel − mean) / std`, per channel in `color` order.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: String,
    /// Keep the region's aspect ratio: scaled to fit the input, top-left, the rest filled with
    /// the mean. Default: stretched to the input.
    #[serde(default)]
    pub letterbox: bool,
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
    let bytes = fsx::read_limited(path, fsx::limits::MODEL)
        .with_context(|| format!("cannot read model file {}", path.display()))?;
    Ok(crate::util::sha256_hex(&bytes))
}

impl ModelInfo {
    /// Reads `<dir>/<id>.toml`, checks the ONNX file's SHA-256 against it.
    pub fn load(dir: &Path, id: &str, decoder: &str) -> Result<ModelInfo> {
        Self::load_one_of(dir, id, &[decoder])
    }

    /// [`load`](Self::load) for a stage that decodes any of `decoders`.
    pub fn load_one_of(dir: &Path, id: &str, decoders: &[&str]) -> Result<ModelInfo> {
        let mpath = dir.join(format!("{id}.toml"));
        let text = fsx::read_text(&mpath, fsx::limits::MANIFEST)
            .with_context(|| format!("model manifest {}: cannot read (model id {id:?})", mpath.display()))?;
        let manifest: ModelManifest =
            toml::from_str(&text).map_err(|e| anyhow!("model manifest {}: {}", mpath.display(), e.message()))?;
        if !decoders.contains(&manifest.decoder.as_str()) {
            bail!(
                "model manifest {}: decoder is {:?}, but this stage needs a model decoded as {}",
                mpath.display(),
                manifest.decoder,
                decoders.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(" or ")
            );
        }
        if !["RGB", "BGR"].contains(&manifest.input.color.as_str()) {
            bail!("model manifest {}: input.color is {:?}; \"RGB\" or \"BGR\"", mpath.display(), manifest.input.color);
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
    let text = fsx::read_text(&mpath, fsx::limits::MANIFEST)
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

/// Whether the ONNX Runtime library (`lib`, else the one [`find_ort_library`] finds) has the CUDA
/// and the TensorRT execution providers: (cuda, tensorrt). A library that cannot be loaded has
/// neither.
pub fn gpu_providers(lib: Option<&Path>) -> (bool, bool) {
    use ort::ep::ExecutionProvider as _;
    if ort_env(lib).is_err() {
        return (false, false);
    }
    (ort::ep::CUDA::is_available().unwrap_or(false), ort::ep::TensorRT::is_available().unwrap_or(false))
}

/// An ONNX Runtime execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionProvider {
    Tensorrt,
    Cuda,
    Cpu,
}

/// Runtime options for every session.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub execution_providers: Vec<ExecutionProvider>,
    pub intra_threads: usize,
    pub ort_library: Option<PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self { execution_providers: vec![ExecutionProvider::Cpu], intra_threads: 1, ort_library: None }
    }
}

pub(crate) fn session(info: &ModelInfo, opts: &RuntimeOptions) -> Result<Session> {
    use ort::ep::ExecutionProvider as _;
    let env = ort_env(opts.ort_library.as_deref())?;
    let e = |e: ort::Error<ort::session::builder::SessionBuilder>| anyhow!("{}: {}", info.path.display(), e);
    let mut eps = Vec::new();
    for name in &opts.execution_providers {
        match name {
            ExecutionProvider::Cuda if ort::ep::CUDA::is_available().unwrap_or(false) => {
                eps.push(ort::ep::CUDA::default().build())
            }
            ExecutionProvider::Tensorrt if ort::ep::TensorRT::is_available().unwrap_or(false) => {
                eps.push(ort::ep::TensorRT::default().build())
            }
            ExecutionProvider::Cpu => {}
            other => {
                tracing::warn!(model = %info.id, provider = ?other, "execution provider not available here; using the next one")
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
        // Memory-pattern planning off: with it the CPU arena kept the first run's tensors and then
        // the planned block as well (CenterFace at 960×544: +164 MB after four runs, +92 MB
        // without; as fast or faster), once per model copy (docs "Memory").
        .with_memory_pattern(false)
        .map_err(e)?
        .with_execution_providers(eps)
        .map_err(e)?
        .commit_from_file(&info.path)
        .map_err(|err| anyhow!("model {}: ONNX Runtime cannot load it: {err}", info.path.display()))?;
    tracing::info!(model = %info.id, sha256 = %info.sha256, execution = %used, "model loaded");
    Ok(s)
}
