//! Pipeline configuration: one TOML file per site (`pipelines/<site>.toml`), parsed once into these
//! types and validated. Every error names the file and the key (`cameras[1].rules[0].threshold`).
//!
//! Relative paths inside a pipeline file (sources, privacy masks, model dir, data dir) are resolved
//! against the directory that holds the pipeline file, as Cargo does for `Cargo.toml`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::privacy::{self, NormPoint, Polygon, PrivacyMask};

/// A configuration problem: the file it is in, the key, and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.problem)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.problem)
        }
    }
}

/// All problems found in one pipeline file (validation does not stop at the first).
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub site: SiteConfig,
    #[serde(default)]
    pub worker: WorkerConfig,
    #[serde(default)]
    pub models: ModelsConfig,
    #[serde(default)]
    pub analysis: AnalysisConfig,
    #[serde(default)]
    pub clip: ClipConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub publish: PublishConfig,
    #[serde(default)]
    pub signing: SigningConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub evidence: EvidenceConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
}

/// `[control]`: how ops change rule parameters while the worker runs (see control.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Re-read this pipeline file when it changes and apply changed rule parameters (other
    /// changes need a restart and are logged as such).
    #[serde(default = "default_true")]
    pub watch_file: bool,
    /// NATS KV bucket of rule overrides, a key per `<site>.<camera>.<rule id>` (used when
    /// `publish.nats_url` is set; created when missing).
    #[serde(default = "default_kv_bucket")]
    pub kv_bucket: String,
}

fn default_kv_bucket() -> String {
    "vigil-thresholds".into()
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self { watch_file: true, kv_bucket: default_kv_bucket() }
    }
}

/// `[signing]`: the worker's Ed25519 key for manifests and chain checkpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// Secret key file made by `vigil keys init` (mode 0600).
    #[serde(default = "default_key")]
    pub key: PathBuf,
    /// Make the key pair when the file does not exist (convenient for a demo; in production make
    /// it with `vigil keys init` and register the public key with the authority).
    #[serde(default)]
    pub generate_if_missing: bool,
    /// Seconds between signed chain checkpoints per camera (also written on shutdown).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_s: f64,
}

fn default_key() -> PathBuf {
    PathBuf::from("../vigil-data/keys/signing.key")
}
fn default_checkpoint_interval() -> f64 {
    300.0
}

impl Default for SigningConfig {
    fn default() -> Self {
        Self { key: default_key(), generate_if_missing: false, checkpoint_interval_s: default_checkpoint_interval() }
    }
}

/// `[retention]`: minimum keeping periods (JS 21, SD 17). Configurable upward only.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Evidence, warnings and raw data: at least 365 days.
    #[serde(default = "default_evidence_days")]
    pub evidence_days: u32,
    /// Images that are not evidence: at least 30 days.
    #[serde(default = "default_image_days")]
    pub image_days: u32,
}

fn default_evidence_days() -> u32 {
    365
}
fn default_image_days() -> u32 {
    30
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { evidence_days: default_evidence_days(), image_days: default_image_days() }
    }
}

/// `[evidence]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Store a sealed original beside each clip: the unmasked encoded video of the clip window,
    /// muxed without re-encoding and encrypted (age format) to this recipient — the authority's
    /// public key (`age1...`). The worker cannot decrypt it. Off when unset.
    #[serde(default)]
    pub seal_recipient: Option<String>,
}

/// `[site]`: where the cameras are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Site id, used in NATS subjects and object keys: `[A-Za-z0-9_-]+`.
    pub id: String,
    /// Human-readable name of the premises.
    #[serde(default)]
    pub name: String,
    /// Local time offset written next to UTC in events, e.g. "+08:00" (China Standard Time).
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
}

fn default_utc_offset() -> String {
    "+08:00".into()
}

/// `[worker]`: this process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Worker id written into every event (default: the host name).
    #[serde(default)]
    pub id: Option<String>,
    /// Local state: outbox, spool, clip scratch files. Default `vigil-data` beside the pipelines/ folder.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Serve `/metrics` (Prometheus) and `/health` here, e.g. "127.0.0.1:9464". Off when unset.
    #[serde(default)]
    pub http: Option<String>,
    /// Bytes the spool may hold while the store is unreachable (2 GiB). When full, new clips are
    /// not cut: each refused violation is logged, counted and raises the `spool_full` alarm.
    #[serde(default = "default_spool")]
    pub spool_max_bytes: u64,
}

fn default_spool() -> u64 {
    2 << 30
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("../vigil-data")
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self { id: None, data_dir: default_data_dir(), http: None, spool_max_bytes: default_spool() }
    }
}

/// `[models]`: which vendored models to run, and where.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// Folder holding `<id>.toml` manifests and the ONNX files.
    #[serde(default = "default_models_dir")]
    pub dir: PathBuf,
    /// Face detector model id (manifest `models/<id>.toml`).
    #[serde(default = "default_face_model")]
    pub face: String,
    /// Mask classifier model id.
    #[serde(default = "default_mask_model")]
    pub mask: String,
    /// Execution providers in order of preference: "tensorrt", "cuda", "cpu". CPU is always the
    /// fallback; a GPU provider that is not available is logged and skipped.
    #[serde(default = "default_eps")]
    pub execution_providers: Vec<String>,
    /// ONNX Runtime intra-op threads per model (spinning is always off: see NOTES-deps).
    #[serde(default = "default_threads")]
    pub intra_threads: usize,
    /// Path of libonnxruntime.so; default: $ORT_DYLIB_PATH, then .deps/onnxruntime/.
    #[serde(default)]
    pub ort_library: Option<PathBuf>,
    /// A head fitted by `vigil fit` (models/<id>.toml): the no-mask probability then comes from it,
    /// on the backbone features of the model it names, instead of the classifier's own output.
    #[serde(default)]
    pub mask_head: Option<String>,
    /// COCO object detector model id (for `utensils_left`).
    #[serde(default = "default_objects_model")]
    pub objects: String,
    /// Copies of the models loaded; cameras share them round-robin, so up to this many frames
    /// are inferred at once (one per core is the useful maximum on CPU).
    #[serde(default = "default_instances")]
    pub instances: usize,
    /// Batch face detection across cameras: up to this many frames (of the same size and rule
    /// region) in one model run, each waiting at most 20 ms for the batch to fill. 1 = off (the
    /// default: on this project's 2-core CPU a batch of 2 was slower than two single runs; on a
    /// GPU batching is expected to pay).
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_batch() -> usize {
    1
}

fn default_objects_model() -> String {
    "coco-nanodet".into()
}
fn default_instances() -> usize {
    1
}

fn default_models_dir() -> PathBuf {
    PathBuf::from("../models")
}
fn default_face_model() -> String {
    "centerface".into()
}
fn default_mask_model() -> String {
    "mask-classifier-mobilenetv2".into()
}
fn default_eps() -> Vec<String> {
    vec!["cpu".into()]
}
fn default_threads() -> usize {
    1
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            dir: default_models_dir(),
            face: default_face_model(),
            mask: default_mask_model(),
            execution_providers: default_eps(),
            intra_threads: default_threads(),
            ort_library: None,
            mask_head: None,
            objects: default_objects_model(),
            instances: default_instances(),
            batch: default_batch(),
        }
    }
}

/// `[analysis]`: the decoded frames the models see.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Analysis frames per second (frames above this rate are dropped before conversion).
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Width of analysis frames in pixels; height follows the source's aspect ratio.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Frames waiting for analysis per camera; when full, new frames are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Motion gating: skip inference on a frame when nothing in the rule's region changed since
    /// the last inferred frame (and no face track is collecting its N of M).
    #[serde(default = "default_true")]
    pub gate: bool,
    /// A region changed when some cell of its 32×18 grey thumbnail moved by at least this many
    /// grey levels (0–255).
    #[serde(default = "default_gate_change")]
    pub gate_min_change: f32,
    /// With gating, inference runs at least this often (s), so still objects stay tracked.
    #[serde(default = "default_gate_recheck")]
    pub gate_recheck_s: f64,
}

fn default_gate_change() -> f32 {
    12.0
}
fn default_gate_recheck() -> f64 {
    2.0
}

fn default_fps() -> f64 {
    5.0
}
fn default_width() -> u32 {
    640
}
fn default_queue() -> usize {
    2
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            fps: default_fps(),
            width: default_width(),
            queue: default_queue(),
            gate: true,
            gate_min_change: default_gate_change(),
            gate_recheck_s: default_gate_recheck(),
        }
    }
}

/// `[clip]`: evidence clips.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    /// Seconds of video before the violating frame.
    #[serde(default = "default_roll")]
    pub pre_roll_s: f64,
    /// Seconds of video after the violating frame.
    #[serde(default = "default_roll")]
    pub post_roll_s: f64,
    /// Clips encoded at the same time (each uses about one core with x264).
    #[serde(default = "default_concurrent")]
    pub max_concurrent: usize,
    /// JPEG quality of snapshots.
    #[serde(default = "default_jpeg_quality")]
    pub jpeg_quality: u8,
    /// x264 quantizer for the re-encoded clip (lower is better quality, bigger files).
    #[serde(default = "default_quantizer")]
    pub quantizer: u32,
}

fn default_roll() -> f64 {
    5.0
}
fn default_concurrent() -> usize {
    1
}
fn default_jpeg_quality() -> u8 {
    90
}
fn default_quantizer() -> u32 {
    23
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            pre_roll_s: default_roll(),
            post_roll_s: default_roll(),
            max_concurrent: default_concurrent(),
            jpeg_quality: default_jpeg_quality(),
            quantizer: default_quantizer(),
        }
    }
}

/// `[store]`: where artifacts go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A local directory (relative to the pipeline file) or an object_store URL: `s3://bucket/prefix`,
    /// `file:///abs/path`, `memory:///`.
    #[serde(default = "default_store_url")]
    pub url: String,
    /// object_store options, e.g. `aws_endpoint`, `aws_region`, `aws_allow_http`. Credentials are
    /// better taken from the environment (`AWS_ACCESS_KEY_ID`, ...), which is also read.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// S3 Object Lock (COMPLIANCE mode) on every evidence object until its retention date. The
    /// bucket must be created with Object Lock enabled.
    #[serde(default)]
    pub object_lock: bool,
}

fn default_store_url() -> String {
    "../vigil-data/store".into()
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { url: default_store_url(), options: BTreeMap::new(), object_lock: false }
    }
}

/// `[publish]`: where events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// NATS server URL, e.g. "nats://127.0.0.1:4222". Without it events only go to the outbox file
    /// and the log.
    #[serde(default)]
    pub nats_url: Option<String>,
    /// JetStream stream name (created when missing, subjects `vigil.>`).
    #[serde(default)]
    pub stream: Option<String>,
    /// The stream's duplicate window, seconds (120). Exactly-once delivery does not depend on it:
    /// each publish states the subject's expected last sequence (see publish.rs).
    #[serde(default = "default_dup_window")]
    pub duplicate_window_s: f64,
}

fn default_dup_window() -> f64 {
    120.0
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self { nats_url: None, stream: None, duplicate_window_s: default_dup_window() }
    }
}

/// `[[cameras]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Camera id, used in NATS subjects and object keys: `[A-Za-z0-9_-]+`.
    pub id: String,
    /// Where the camera is (free text, written into events).
    #[serde(default)]
    pub location: String,
    /// Kind of place (registry). Private places are refused (JS 17, SD 5, NJ 9).
    #[serde(default)]
    pub location_category: LocationCategory,
    /// Registry: date of the legal review of this camera (YYYY-MM-DD).
    #[serde(default)]
    pub legal_review_date: Option<String>,
    /// Registry: date of the technical review (YYYY-MM-DD).
    #[serde(default)]
    pub technical_review_date: Option<String>,
    /// Registry: reference of the installation confirmation.
    #[serde(default)]
    pub installation_ref: Option<String>,
    /// Registry: date the camera was announced to the public (YYYY-MM-DD). Events are advisory
    /// until 30 days after it (JS 13–15, 18).
    #[serde(default)]
    pub public_notice_date: Option<String>,
    /// `rtsp://...`, or a file path (relative to the pipeline file) / `file://` URL.
    pub source: String,
    /// File sources: start again at the end instead of ending.
    #[serde(default, rename = "loop")]
    pub loop_file: bool,
    /// File sources: play at the file's own pace (as a camera would). `false` replays as fast as
    /// analysis allows and analyses every frame at the analysis rate (replay for tuning, tests).
    #[serde(default = "default_true")]
    pub realtime: bool,
    /// RTSP transport: "tcp" (default) or "udp".
    #[serde(default = "default_transport")]
    pub rtsp_transport: String,
    /// Decoder element, or "auto": a hardware decoder when present, else avdec_h264.
    #[serde(default = "default_decoder")]
    pub decoder: String,
    /// Privacy mask file (polygons blacked out before analysis and in every stored pixel).
    #[serde(default)]
    pub privacy_mask: Option<PathBuf>,
    /// A live stream without video for this long counts as down (5).
    #[serde(default = "default_stall")]
    pub stall_s: f64,
    /// Cap of the exponential reconnect backoff, seconds (3; jitter up to 0.25 s is added).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_s: f64,
    /// Tamper and health detection thresholds.
    #[serde(default)]
    pub tamper: crate::health::TamperConfig,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

fn default_stall() -> f64 {
    5.0
}
fn default_reconnect_max() -> f64 {
    3.0
}

fn default_true() -> bool {
    true
}
fn default_transport() -> String {
    "tcp".into()
}
fn default_decoder() -> String {
    "auto".into()
}

/// Where a camera looks. The last six are private places where monitoring is not allowed.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LocationCategory {
    Kitchen,
    FoodPreparation,
    FoodStorage,
    Canteen,
    DiningArea,
    ServingCounter,
    Clinic,
    Pharmacy,
    #[default]
    Other,
    HotelRoom,
    Dormitory,
    Bath,
    ChangingRoom,
    Toilet,
    NursingRoom,
}

impl LocationCategory {
    pub fn is_private(self) -> bool {
        matches!(
            self,
            Self::HotelRoom | Self::Dormitory | Self::Bath | Self::ChangingRoom | Self::Toilet | Self::NursingRoom
        )
    }

    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }
}

/// A camera's registry entry (DESIGN.md §2: announced and reviewed before use).
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    pub location_category: LocationCategory,
    pub legal_review_date: Option<chrono::NaiveDate>,
    pub technical_review_date: Option<chrono::NaiveDate>,
    pub installation_ref: Option<String>,
    pub public_notice_date: Option<chrono::NaiveDate>,
}

/// Whether a camera's events may become enforcement candidates.
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Compliance {
    /// "enforcement" or "advisory".
    pub kind: String,
    pub reasons: Vec<String>,
}

impl Registry {
    /// Enforcement only when both reviews and the installation confirmation are on record and the
    /// public notice is at least 30 days old on `day`; otherwise advisory, with the reasons.
    pub fn compliance(&self, day: chrono::NaiveDate) -> Compliance {
        let mut reasons = Vec::new();
        if self.legal_review_date.is_none() {
            reasons.push("no legal review on record".to_string());
        }
        if self.technical_review_date.is_none() {
            reasons.push("no technical review on record".to_string());
        }
        if self.installation_ref.is_none() {
            reasons.push("no installation confirmation on record".to_string());
        }
        match self.public_notice_date {
            None => reasons.push("no public notice on record".to_string()),
            Some(d) if day < d + chrono::Duration::days(30) => reasons.push(format!(
                "within 30 days of the public notice of {d} (enforcement from {})",
                d + chrono::Duration::days(30)
            )),
            Some(_) => {}
        }
        let kind = if reasons.is_empty() { "enforcement" } else { "advisory" };
        Compliance { kind: kind.into(), reasons }
    }
}

/// `[[cameras.rules]]`, selected by `kind`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleConfig {
    NoMask(NoMaskRule),
    UtensilsLeft(UtensilsRule),
}

impl RuleConfig {
    pub fn id(&self) -> &str {
        match self {
            RuleConfig::NoMask(r) => &r.id,
            RuleConfig::UtensilsLeft(r) => &r.id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            RuleConfig::NoMask(_) => "no_mask",
            RuleConfig::UtensilsLeft(_) => "utensils_left",
        }
    }
}

/// Rule `utensils_left`: an object of one of `classes` scoring ≥ `threshold` whose centre stays in
/// `zone` for `dwell_s` fires, once per object per dwell period; with `hours`, only within them.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UtensilsRule {
    #[serde(default = "default_utensils_id")]
    pub id: String,
    /// COCO class names that count (the object model's labels).
    #[serde(default = "default_utensil_classes")]
    pub classes: Vec<String>,
    /// Object detector score threshold (NanoDet; 0.35 is upstream's demo value).
    #[serde(default = "default_object_threshold")]
    pub threshold: f64,
    /// Objects whose box is smaller than this (shorter side, analysis-frame pixels) are ignored.
    #[serde(default = "default_min_box")]
    pub min_box_px: f64,
    /// How long an object must stay in the zone before it fires (and again after each further
    /// `dwell_s`).
    #[serde(default = "default_dwell")]
    pub dwell_s: f64,
    /// An object not seen for longer than this is gone (a new one if it comes back).
    #[serde(default = "default_max_gap")]
    pub max_gap_s: f64,
    /// Polygon in normalised [0,1] coordinates (the must-be-clear surface); an object counts when
    /// its centre is inside. Default: the whole frame.
    #[serde(default)]
    pub zone: Option<Vec<[f64; 2]>>,
    /// Site-local hours in which the rule applies, "HH:MM-HH:MM" (may wrap midnight, e.g.
    /// "22:00-06:00"). Default: always.
    #[serde(default)]
    pub hours: Option<String>,
    #[serde(default = "default_severity")]
    pub severity: String,
}

fn default_utensils_id() -> String {
    "utensils_left".into()
}
fn default_utensil_classes() -> Vec<String> {
    ["cup", "bowl", "fork", "knife", "spoon", "bottle", "wine glass"].iter().map(|s| s.to_string()).collect()
}
fn default_object_threshold() -> f64 {
    0.35
}
fn default_min_box() -> f64 {
    8.0
}
fn default_dwell() -> f64 {
    600.0
}
fn default_max_gap() -> f64 {
    10.0
}

/// Daily hours "HH:MM-HH:MM" in site-local time, as minutes of the day; `to` < `from` wraps
/// midnight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub from: u32,
    pub to: u32,
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let bad = || format!("{s:?} is not hours like \"22:00-06:00\" (HH:MM-HH:MM, 24-hour, site-local)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0)) && t.trim().len() == 5).then_some(h * 60 + m)
        };
        let (from, to) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
        if from == to {
            return Err(format!("{s:?} is an empty range (from = to)"));
        }
        Ok(Schedule { from, to })
    }

    pub fn contains(&self, minute: u32) -> bool {
        if self.from < self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

/// Rule `no_mask`: a tracked face whose no-mask probability is ≥ `threshold` inside `zone` in at
/// least `min_hits` of its last `window` analysed frames fires once per track; after a fire the
/// rule stays quiet on this camera for `cooldown_s`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NoMaskRule {
    #[serde(default = "default_no_mask_id")]
    pub id: String,
    /// Minimum no-mask probability (classifier output 1) for a frame to count as a hit.
    #[serde(default = "default_no_mask_threshold")]
    pub threshold: f64,
    /// Face detector score threshold (CenterFace heatmap).
    #[serde(default = "default_face_threshold")]
    pub face_threshold: f64,
    /// Faces whose box is smaller than this (shorter side, analysis-frame pixels) are ignored.
    #[serde(default = "default_min_face")]
    pub min_face_px: f64,
    /// Margin added around the face box before classification, as a fraction of its width and
    /// height on each side (0.15: 15 %). Used by the pretrained classifier; a fitted head uses the
    /// crop margins it was fitted on (`views` in its file).
    #[serde(default)]
    pub crop_margin: f64,
    /// N of N-of-M.
    #[serde(default = "default_min_hits")]
    pub min_hits: usize,
    /// M of N-of-M.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Quiet period after a fire, per camera.
    #[serde(default = "default_cooldown")]
    pub cooldown_s: f64,
    /// Temporal rule: "n_of_m" (≥ `min_hits` frames of the last `window` at ≥ `threshold`) or
    /// "median" (seen in ≥ `min_hits` of the last `window` frames and the median of its no-mask
    /// probabilities there ≥ `threshold`, as Frigate scores tracked objects).
    #[serde(default = "default_temporal")]
    pub temporal: String,
    /// Face detector input width in pixels (rounded up to a multiple of 32); 0: the region's own
    /// width (the zone's bounding box, or the analysis frame). Smaller is faster and misses small
    /// faces.
    #[serde(default)]
    pub input_width: u32,
    /// Polygon in normalised [0,1] coordinates; a face counts when its centre is inside.
    /// Default: the whole frame.
    #[serde(default)]
    pub zone: Option<Vec<[f64; 2]>>,
    /// Severity written into events ("minor", "major", ...).
    #[serde(default = "default_severity")]
    pub severity: String,
}

fn default_no_mask_id() -> String {
    "no_mask".into()
}
fn default_no_mask_threshold() -> f64 {
    0.7
}
fn default_face_threshold() -> f64 {
    0.5
}
fn default_min_face() -> f64 {
    24.0
}
fn default_temporal() -> String {
    "n_of_m".into()
}
fn default_min_hits() -> usize {
    3
}
fn default_window() -> usize {
    5
}
fn default_cooldown() -> f64 {
    60.0
}
fn default_severity() -> String {
    "minor".into()
}

/// Where a camera's stream comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Rtsp { url: String, tcp: bool },
    File { path: PathBuf, looping: bool, realtime: bool },
}

/// A camera ready to run: config plus resolved source, mask and zone.
#[derive(Debug, Clone)]
pub struct Camera {
    pub id: String,
    pub location: String,
    pub registry: Registry,
    pub stall_s: f64,
    pub reconnect_max_s: f64,
    pub tamper: crate::health::TamperConfig,
    pub source: Source,
    pub decoder: String,
    pub mask: Option<PrivacyMask>,
    pub rules: CameraRules,
}

/// A camera's rules, validated and resolved: the unit that hot reload replaces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CameraRules {
    pub no_mask: Option<(NoMaskRule, Option<Polygon>)>,
    pub utensils: Option<(UtensilsRule, Option<Polygon>, Option<Schedule>)>,
}

impl CameraRules {
    pub fn is_empty(&self) -> bool {
        self.no_mask.is_none() && self.utensils.is_none()
    }

    /// The rule configs these were made from (for diffs and audit records).
    pub fn configs(&self) -> Vec<RuleConfig> {
        let mut v = Vec::new();
        if let Some((r, _)) = &self.no_mask {
            v.push(RuleConfig::NoMask(r.clone()));
        }
        if let Some((r, _, _)) = &self.utensils {
            v.push(RuleConfig::UtensilsLeft(r.clone()));
        }
        v
    }
}

fn zone_of(id: &str, pts: &Option<Vec<[f64; 2]>>, errors: &mut Vec<(String, String)>, key: String) -> Option<Polygon> {
    let pts: Vec<NormPoint> = pts.as_ref()?.iter().map(|p| NormPoint { x: p[0], y: p[1] }).collect();
    match privacy::validate_polygon(&pts) {
        Ok(()) => Some(Polygon { name: format!("{id}.zone"), points: pts }),
        Err(problem) => {
            errors.push((key, format!("{problem} (a zone is in normalised [0,1] frame coordinates)")));
            None
        }
    }
}

/// Validates one camera's rules: what `Pipeline::load` and hot reload (file or NATS KV) both use.
/// Errors are `(key, problem)` with keys like `rules[0].threshold`; `labels` are the object
/// model's class names (checked against `utensils_left.classes`).
pub fn validate_rules(
    rules: &[RuleConfig],
    labels: Option<&[String]>,
    analysis: &AnalysisConfig,
) -> Result<CameraRules, Vec<(String, String)>> {
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut out = CameraRules::default();
    let mut ids = std::collections::HashSet::new();
    for (j, rule) in rules.iter().enumerate() {
        let rk = |f: &str| format!("rules[{j}].{f}");
        let mut e = |f: &str, p: String| errors.push((rk(f), p));
        if !valid_id(rule.id()) {
            e("id", format!("{:?} must be 1-64 characters of A-Z a-z 0-9 - _", rule.id()));
        } else if !ids.insert(rule.id().to_string()) {
            e("id", format!("rule id {:?} is used twice on this camera", rule.id()));
        }
        match rule {
            RuleConfig::NoMask(r) => {
                if out.no_mask.is_some() {
                    e("kind", "only one no_mask rule per camera".into());
                }
                for (f, v) in [("threshold", r.threshold), ("face_threshold", r.face_threshold)] {
                    if !(0.0..=1.0).contains(&v) {
                        e(f, format!("{v} must be in [0, 1]"));
                    }
                }
                if !(0.0..=1.0).contains(&r.crop_margin) {
                    e("crop_margin", format!("{} must be in [0, 1]", r.crop_margin));
                }
                if !(0.0..=4096.0).contains(&r.min_face_px) {
                    e("min_face_px", format!("{} must be in [0, 4096]", r.min_face_px));
                }
                if r.window == 0 || r.window > 100 {
                    e("window", format!("{} must be in [1, 100]", r.window));
                }
                if r.min_hits == 0 || r.min_hits > r.window {
                    e("min_hits", format!("{} must be in [1, window = {}]", r.min_hits, r.window));
                }
                if !(0.0..=86400.0).contains(&r.cooldown_s) {
                    e("cooldown_s", format!("{} must be in [0, 86400]", r.cooldown_s));
                }
                if !["n_of_m", "median"].contains(&r.temporal.as_str()) {
                    e("temporal", format!("{:?} must be \"n_of_m\" or \"median\"", r.temporal));
                }
                if r.input_width != 0 && !(32..=3840).contains(&r.input_width) {
                    e("input_width", format!("{} must be 0 (the region's own width) or in [32, 3840]", r.input_width));
                }
                let zone = zone_of(&r.id, &r.zone, &mut errors, rk("zone"));
                out.no_mask = Some((r.clone(), zone));
            }
            RuleConfig::UtensilsLeft(r) => {
                if out.utensils.is_some() {
                    e("kind", "only one utensils_left rule per camera".into());
                }
                if !(0.0..=1.0).contains(&r.threshold) {
                    e("threshold", format!("{} must be in [0, 1]", r.threshold));
                }
                if !(0.0..=4096.0).contains(&r.min_box_px) {
                    e("min_box_px", format!("{} must be in [0, 4096]", r.min_box_px));
                }
                if !(1.0..=7.0 * 86400.0).contains(&r.dwell_s) {
                    e("dwell_s", format!("{} must be in [1, 604800] seconds", r.dwell_s));
                }
                let min_gap = if analysis.gate { analysis.gate_recheck_s * 2.0 } else { 0.5 };
                if !(min_gap..=3600.0).contains(&r.max_gap_s) {
                    e(
                        "max_gap_s",
                        format!(
                            "{} must be in [{min_gap}, 3600] seconds (at least twice analysis.gate_recheck_s with gating on)",
                            r.max_gap_s
                        ),
                    );
                }
                if r.classes.is_empty() {
                    e("classes", "names no class".into());
                }
                if let Some(labels) = labels {
                    for (k, c) in r.classes.iter().enumerate() {
                        if !labels.contains(c) {
                            errors.push((
                                format!("rules[{j}].classes[{k}]"),
                                format!(
                                    "{c:?} is not a class of the object model (e.g. \"cup\", \"bowl\", \"wine glass\")"
                                ),
                            ));
                        }
                    }
                }
                let schedule = match r.hours.as_deref().map(Schedule::parse) {
                    None => None,
                    Some(Ok(s)) => Some(s),
                    Some(Err(p)) => {
                        errors.push((rk("hours"), p));
                        None
                    }
                };
                let zone = zone_of(&r.id, &r.zone, &mut errors, rk("zone"));
                out.utensils = Some((r.clone(), zone, schedule));
            }
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// The validated pipeline: everything resolved, nothing left to check at run time.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub file: PathBuf,
    pub raw: PipelineFile,
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    pub key_path: PathBuf,
    pub store_url: String,
    pub cameras: Vec<Camera>,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Parses a UTC offset like "+08:00" into seconds east of UTC.
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60 && h.to_string().len() <= 2).then_some(sign * (h * 3600 + m * 60))
}

impl Pipeline {
    /// Reads, parses and validates a pipeline file, including the privacy-mask files it names.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigErrors> {
        let err = |key: &str, problem: String| ConfigError { file: path.to_path_buf(), key: key.into(), problem };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![err("", format!("cannot read pipeline file: {e}"))]))?;
        let raw: PipelineFile = toml::from_str(&text).map_err(|e| {
            let key = toml_error_key(&text, &e);
            ConfigErrors(vec![err(&key, e.message().to_string())])
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
        };

        let mut errors = Vec::new();
        if !valid_id(&raw.site.id) {
            errors.push(err("site.id", format!("{:?} must be 1-64 characters of A-Z a-z 0-9 - _", raw.site.id)));
        }
        if parse_utc_offset(&raw.site.utc_offset).is_none() {
            errors.push(err("site.utc_offset", format!("{:?} is not an offset like \"+08:00\"", raw.site.utc_offset)));
        }
        let a = &raw.analysis;
        if !(a.fps > 0.0 && a.fps <= 60.0) {
            errors.push(err("analysis.fps", format!("{} must be in (0, 60]", a.fps)));
        }
        if !(64..=3840).contains(&a.width) || !a.width.is_multiple_of(2) {
            errors.push(err("analysis.width", format!("{} must be an even number in [64, 3840]", a.width)));
        }
        if a.queue == 0 || a.queue > 64 {
            errors.push(err("analysis.queue", format!("{} must be in [1, 64]", a.queue)));
        }
        let c = &raw.clip;
        for (k, v) in [("clip.pre_roll_s", c.pre_roll_s), ("clip.post_roll_s", c.post_roll_s)] {
            if !(0.0..=120.0).contains(&v) {
                errors.push(err(k, format!("{v} must be in [0, 120] seconds")));
            }
        }
        if c.max_concurrent == 0 {
            errors.push(err("clip.max_concurrent", "must be at least 1".into()));
        }
        if !(1..=100).contains(&c.jpeg_quality) {
            errors.push(err("clip.jpeg_quality", format!("{} must be in [1, 100]", c.jpeg_quality)));
        }
        if c.quantizer > 51 {
            errors.push(err("clip.quantizer", format!("{} must be in [0, 51]", c.quantizer)));
        }
        for (i, ep) in raw.models.execution_providers.iter().enumerate() {
            if !["cpu", "cuda", "tensorrt"].contains(&ep.as_str()) {
                errors.push(err(
                    &format!("models.execution_providers[{i}]"),
                    format!("{ep:?} is not one of \"tensorrt\", \"cuda\", \"cpu\""),
                ));
            }
        }
        if raw.models.intra_threads == 0 || raw.models.intra_threads > 64 {
            errors.push(err("models.intra_threads", "must be in [1, 64]".into()));
        }
        let r = &raw.retention;
        if r.evidence_days < 365 {
            errors.push(err(
                "retention.evidence_days",
                format!(
                    "{} is below the legal minimum of 365 days (JS 21, SD 17); it can only be raised",
                    r.evidence_days
                ),
            ));
        }
        if r.image_days < 30 {
            errors.push(err(
                "retention.image_days",
                format!("{} is below the legal minimum of 30 days (JS 21); it can only be raised", r.image_days),
            ));
        }
        if let Some(rcp) = &raw.evidence.seal_recipient
            && rcp.parse::<age::x25519::Recipient>().is_err()
        {
            errors.push(err("evidence.seal_recipient", format!("{rcp:?} is not an age X25519 recipient (age1...)")));
        }
        if !(1.0..=86400.0).contains(&raw.signing.checkpoint_interval_s) {
            errors.push(err("signing.checkpoint_interval_s", "must be in [1, 86400] seconds".into()));
        }
        if raw.signing.generate_if_missing && raw.signing.key.file_name().is_none_or(|n| n != "signing.key") {
            errors.push(err(
                "signing.key",
                format!(
                    "{}: with generate_if_missing the file must be named signing.key (what `vigil keys init` writes)",
                    raw.signing.key.display()
                ),
            ));
        }
        if raw.store.object_lock && !raw.store.url.starts_with("s3://") {
            errors.push(err("store.object_lock", "Object Lock needs an s3:// store".into()));
        }
        if let Some(h) = &raw.worker.http
            && h.parse::<std::net::SocketAddr>().is_err()
        {
            errors.push(err("worker.http", format!("{h:?} is not an address like 127.0.0.1:9464")));
        }
        if !(1.0..=86400.0 * 7.0).contains(&raw.publish.duplicate_window_s) {
            errors.push(err("publish.duplicate_window_s", "must be in [1, 604800]".into()));
        }
        if raw.cameras.is_empty() {
            errors.push(err("cameras", "no camera configured ([[cameras]])".into()));
        }

        if raw.models.batch == 0 || raw.models.batch > 16 {
            errors.push(err("models.batch", format!("{} must be in [1, 16] (1: no batching)", raw.models.batch)));
        }
        if raw.models.instances == 0 || raw.models.instances > 16 {
            errors.push(err("models.instances", format!("{} must be in [1, 16]", raw.models.instances)));
        }
        if !(0.0..=255.0).contains(&a.gate_min_change) {
            errors.push(err("analysis.gate_min_change", format!("{} must be in [0, 255]", a.gate_min_change)));
        }
        if !(0.1..=600.0).contains(&a.gate_recheck_s) {
            errors.push(err("analysis.gate_recheck_s", format!("{} must be in [0.1, 600] seconds", a.gate_recheck_s)));
        }
        // the object model's class names, for utensils_left.classes
        let wants_objects =
            raw.cameras.iter().any(|c| c.rules.iter().any(|r| matches!(r, RuleConfig::UtensilsLeft(_))));
        let labels = if wants_objects {
            match crate::detect::read_labels(&resolve(&raw.models.dir), &raw.models.objects) {
                Ok(l) => Some(l),
                Err(e) => {
                    errors.push(err("models.objects", format!("{e:#}")));
                    None
                }
            }
        } else {
            None
        };
        let mut cameras = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, cam) in raw.cameras.iter().enumerate() {
            let k = |f: &str| format!("cameras[{i}].{f}");
            if !valid_id(&cam.id) {
                errors.push(err(&k("id"), format!("{:?} must be 1-64 characters of A-Z a-z 0-9 - _", cam.id)));
            } else if !seen.insert(cam.id.clone()) {
                errors.push(err(&k("id"), format!("camera id {:?} is used twice", cam.id)));
            }
            if cam.location_category.is_private() {
                errors.push(err(
                    &k("location_category"),
                    format!(
                        "{:?} is a private place; monitoring it is not allowed (JS 17, SD 5, NJ 9): remove this camera",
                        cam.location_category.name()
                    ),
                ));
            }
            let mut date = |f: &str, v: &Option<String>| -> Option<chrono::NaiveDate> {
                let v = v.as_ref()?;
                match chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
                    Ok(d) => Some(d),
                    Err(_) => {
                        errors.push(err(&k(f), format!("{v:?} is not a date like 2026-01-31")));
                        None
                    }
                }
            };
            let registry = Registry {
                location_category: cam.location_category,
                legal_review_date: date("legal_review_date", &cam.legal_review_date),
                technical_review_date: date("technical_review_date", &cam.technical_review_date),
                installation_ref: cam.installation_ref.clone().filter(|s| !s.trim().is_empty()),
                public_notice_date: date("public_notice_date", &cam.public_notice_date),
            };
            if let Err(e) = cam.tamper.validate() {
                errors.push(err(&k("tamper"), e));
            }
            if !(0.5..=3600.0).contains(&cam.stall_s) {
                errors.push(err(&k("stall_s"), format!("{} must be in [0.5, 3600]", cam.stall_s)));
            }
            if !(0.1..=600.0).contains(&cam.reconnect_max_s) {
                errors.push(err(&k("reconnect_max_s"), format!("{} must be in [0.1, 600]", cam.reconnect_max_s)));
            }
            let tcp = match cam.rtsp_transport.as_str() {
                "tcp" => true,
                "udp" => false,
                other => {
                    errors.push(err(&k("rtsp_transport"), format!("{other:?} must be \"tcp\" or \"udp\"")));
                    true
                }
            };
            let source = if cam.source.starts_with("rtsp://") || cam.source.starts_with("rtsps://") {
                Source::Rtsp { url: cam.source.clone(), tcp }
            } else {
                let p = cam.source.strip_prefix("file://").unwrap_or(&cam.source);
                if p.contains("://") {
                    errors.push(err(
                        &k("source"),
                        format!("{:?}: only rtsp:// URLs and files are supported", cam.source),
                    ));
                }
                let path = resolve(Path::new(p));
                if !path.is_file() {
                    errors.push(err(&k("source"), format!("file {} does not exist", path.display())));
                }
                Source::File { path, looping: cam.loop_file, realtime: cam.realtime }
            };
            let mask = match &cam.privacy_mask {
                None => None,
                Some(p) => match PrivacyMask::load(&resolve(p)) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        errors.push(err(&k("privacy_mask"), e.to_string()));
                        None
                    }
                },
            };
            let rules = match validate_rules(&cam.rules, labels.as_deref(), &raw.analysis) {
                Ok(r) => r,
                Err(es) => {
                    errors.extend(es.into_iter().map(|(key, problem)| err(&k(&key), problem)));
                    CameraRules::default()
                }
            };
            cameras.push(Camera {
                id: cam.id.clone(),
                location: cam.location.clone(),
                registry,
                stall_s: cam.stall_s,
                reconnect_max_s: cam.reconnect_max_s,
                tamper: cam.tamper,
                source,
                decoder: cam.decoder.clone(),
                mask,
                rules,
            });
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let store_url = if raw.store.url.contains("://") {
            raw.store.url.clone()
        } else {
            resolve(Path::new(&raw.store.url)).to_string_lossy().into_owned()
        };
        Ok(Pipeline {
            file: path.to_path_buf(),
            data_dir: resolve(&raw.worker.data_dir),
            models_dir: resolve(&raw.models.dir),
            key_path: resolve(&raw.signing.key),
            store_url,
            cameras,
            raw,
        })
    }

    pub fn utc_offset_s(&self) -> i32 {
        parse_utc_offset(&self.raw.site.utc_offset).unwrap_or(0)
    }

    pub fn worker_id(&self) -> String {
        self.raw.worker.id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "worker".into())
        })
    }
}

/// Turns a toml parse error's span into the dotted key path at that place, so that an unknown key
/// reads `cameras[0].rules[0].treshold` rather than a line number alone.
fn toml_error_key(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return String::new();
    };
    let msg = e.message();
    // The key the error is about: for an unknown field, the line that spells it (serde's span may
    // cover the whole table); otherwise the line the span starts on.
    let start = span.start.min(text.len());
    let line_start = |pos: usize| text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let unknown = msg.strip_prefix("unknown field `").and_then(|r| r.split('`').next());
    let mut pos = line_start(start);
    if let Some(name) = unknown {
        let mut off = pos;
        for line in text[pos..].split_inclusive('\n') {
            let t = line.trim_start();
            if t.strip_prefix(name).is_some_and(|r| r.trim_start().starts_with('=')) {
                pos = off;
                break;
            }
            off += line.len();
        }
    }
    let line = text[pos..].lines().next().unwrap_or("");
    let field = line.split_once('=').map(|(k, _)| k.trim().trim_matches('"')).unwrap_or("");
    let field_ok = !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let before = &text[..pos];
    let line_no = before.matches('\n').count() + 1;
    // The table header the key is under, with array-of-tables indices.
    let mut header = String::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut header_idx: BTreeMap<String, usize> = BTreeMap::new();
    for line in before.lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix("[[").and_then(|s| s.strip_suffix("]]")) {
            let h = h.trim().to_string();
            let n = counts.entry(h.clone()).or_insert(0);
            header_idx.insert(h.clone(), *n);
            *n += 1;
            // a new parent element restarts its children's numbering
            let prefix = format!("{h}.");
            counts.retain(|k, _| !k.starts_with(&prefix));
            header = h;
        } else if let Some(h) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            header = h.trim().to_string();
        }
    }
    let mut path = String::new();
    let mut acc = String::new();
    for part in header.split('.').filter(|p| !p.is_empty()) {
        if !acc.is_empty() {
            acc.push('.');
        }
        acc.push_str(part);
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(part);
        if let Some(i) = header_idx.get(&acc) {
            path.push_str(&format!("[{i}]"));
        }
    }
    let key = match (path.is_empty(), field_ok) {
        (true, true) => field.to_string(),
        (false, true) => format!("{path}.{field}"),
        (_, false) => path,
    };
    format!("line {line_no}{}{key}", if key.is_empty() { "" } else { ", " })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("+08:00"), Some(8 * 3600));
        assert_eq!(parse_utc_offset("-05:30"), Some(-(5 * 3600 + 1800)));
        assert_eq!(parse_utc_offset("08:00"), None);
        assert_eq!(parse_utc_offset("+8"), None);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.mp4", "x");
        let p = write(
            d.path(),
            "site.toml",
            "[site]\nid = \"s\"\n[[cameras]]\nid = \"c\"\nsource = \"a.mp4\"\n[[cameras.rules]]\nkind = \"no_mask\"\ntreshold = 0.5\n",
        );
        let e = Pipeline::load(&p).unwrap_err().to_string();
        assert!(e.contains("site.toml"), "{e}");
        assert!(e.contains("cameras[0].rules[0].treshold"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn private_places_are_refused_and_registry_decides_enforcement() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.mp4", "x");
        let p = write(
            d.path(),
            "site.toml",
            "[site]\nid = \"s\"\n[retention]\nevidence_days = 100\n[[cameras]]\nid = \"c\"\nsource = \"a.mp4\"\nlocation_category = \"changing_room\"\n",
        );
        let e = Pipeline::load(&p).unwrap_err().to_string();
        assert!(e.contains("cameras[0].location_category") && e.contains("private place"), "{e}");
        assert!(e.contains("retention.evidence_days") && e.contains("365"), "{e}");
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let mut r = Registry {
            location_category: LocationCategory::Kitchen,
            legal_review_date: Some(day("2026-01-01")),
            technical_review_date: Some(day("2026-01-02")),
            installation_ref: Some("INST-1".into()),
            public_notice_date: Some(day("2026-03-01")),
        };
        assert_eq!(r.compliance(day("2026-03-31")).kind, "enforcement");
        let c = r.compliance(day("2026-03-30"));
        assert_eq!(c.kind, "advisory");
        assert!(c.reasons[0].contains("within 30 days"), "{c:?}");
        r.technical_review_date = None;
        assert_eq!(r.compliance(day("2027-01-01")).reasons, vec!["no technical review on record"]);
    }

    #[test]
    fn bad_values_are_all_reported() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "site.toml",
            "[site]\nid = \"bad site\"\n[analysis]\nfps = 0\n[[cameras]]\nid = \"c\"\nsource = \"missing.mp4\"\n\
             [[cameras.rules]]\nkind = \"no_mask\"\nthreshold = 1.5\ncrop_margin = -0.1\nmin_hits = 6\nzone = [[0,0],[2,0],[1,1]]\n",
        );
        let e = Pipeline::load(&p).unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "site.id",
            "analysis.fps",
            "cameras[0].source",
            "cameras[0].rules[0].threshold",
            "cameras[0].rules[0].crop_margin",
            "cameras[0].rules[0].min_hits",
            "cameras[0].rules[0].zone",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }
}
