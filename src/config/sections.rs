//! The sections of a pipeline file other than `[[cameras]]`. Each key's default, range and
//! meaning sit on its field: the default in `#[default(..)]`, the range in `#[schemars(..)]`
//! (checked at load from the schema, [`crate::util::ranges`]), the doc comment as its
//! documentation (`vigil config defaults` prints all three).

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

/// `[site]`: where the cameras are.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
#[schemars(extend("required" = ["id"]))]
pub struct SiteConfig {
    /// Site id, used in NATS subjects and object keys: 1-64 characters of `A-Z a-z 0-9 - _`
    /// (required).
    #[schemars(length(max = 64))]
    pub id: String,
    /// Human-readable name of the premises.
    #[schemars(length(max = 256))]
    pub name: String,
    /// Local time offset written next to UTC in events, e.g. "+08:00" (China Standard Time).
    #[default("+08:00".to_string())]
    #[schemars(length(max = 6))]
    pub utc_offset: String,
    /// The operator of the premises (`[site.premises]`): name, credit code, licence, address,
    /// area code, regulator — written into every manifest and event.
    pub premises: super::premises::PremisesConfig,
}

/// `[worker]`: this process.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Worker id written into every event (default: `--worker-id`, else the host name).
    #[schemars(length(max = 64))]
    pub id: Option<String>,
    /// Local state: outbox, spool, clip scratch files.
    #[default(PathBuf::from("../vigil-data"))]
    pub data_dir: PathBuf,
    /// Serve `/metrics` (Prometheus) and `/health` here, e.g. "127.0.0.1:9464". Off when unset.
    /// A non-loopback address is allowed and logged as a warning.
    pub http: Option<String>,
    /// Bytes the spool may hold while the store is unreachable. When full, new clips are not cut:
    /// each refused violation is logged, counted and raises the `spool_full` alarm.
    #[default(2 << 30)]
    #[schemars(range(min = 1000, max = 1099511627776u64))]
    pub spool_max_bytes: u64,
    /// Seconds between two live status reports on `vigil-live.status.<site>.<worker>` (core NATS,
    /// not kept): camera states, frame rates, conditions, for the ops console. With NATS only.
    #[default(2.0)]
    #[schemars(range(min = 0.5, max = 60.0))]
    pub status_interval_s: f64,
}

/// `[cluster]`: several workers share a site's cameras through NATS KV leases (bucket
/// `vigil-leases`): each camera is run by exactly one worker at a time, a dead worker's cameras
/// move to the others after `lease_ttl_s`, a stopping one hands them over at once. Needs
/// `publish.nats_url`; every worker of the site gets the same pipeline file and signing key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Claim cameras through leases instead of running every camera of the file.
    pub enabled: bool,
    /// Seconds a lease lives without renewal (the bucket's `max_age`, so it expires whether or
    /// not its holder is alive). Holders renew every third of it (at most every 2 s) and stop a camera they could not
    /// renew a fifth of it (at least 1 s) before it expires. A killed worker's cameras resume
    /// elsewhere after about this long. 15 s rides out the loss of the NATS node that leads the
    /// lease bucket (its replicas elect a new leader within nats-server's 4-9 s election timeout;
    /// 6 s measured in tests/cluster.rs): with 10 s or less such a node failure could stop every
    /// camera of the site at once.
    #[default(15.0)]
    #[schemars(range(min = 3, max = 600))]
    pub lease_ttl_s: f64,
    /// Cameras this worker runs at most (size it from `vigil bench`'s capacity line).
    #[default(32)]
    #[schemars(range(min = 1, max = 1024))]
    pub max_cameras: usize,
    /// The NATS KV bucket of leases: `<site>.camera.<camera>` (holder) and `<site>.worker.<id>`
    /// (presence and load). Created when missing, with `publish.replicas` replicas.
    #[default("vigil-leases".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub bucket: String,
}

pub use crate::detect::runtime::ExecutionProvider;

/// `[models]`: which vendored models to run, and where.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Folder holding `<id>.toml` manifests and the ONNX files.
    #[default(PathBuf::from("../models"))]
    pub dir: PathBuf,
    /// Face detector model id (manifest `models/<id>.toml`).
    #[default("centerface".to_string())]
    pub face: String,
    /// Mask classifier model id (used when `mask_head = "none"`).
    #[default("mask-classifier-mobilenetv2".to_string())]
    pub mask: String,
    /// Execution providers in order of preference. CPU is always the fallback; a GPU provider that
    /// is not available is logged and skipped.
    #[default(vec![ExecutionProvider::Cpu])]
    #[schemars(length(min = 1, max = 3))]
    pub execution_providers: Vec<ExecutionProvider>,
    /// ONNX Runtime intra-op threads per model copy (spinning is always off); 0: one per core.
    /// Default 0 with one model copy: measured on 2 cores (docs "Memory"), one copy on both
    /// cores gives 4× the plain Python pipeline's throughput on a fixed camera at 0.38× its
    /// memory; a second copy (`instances = 2`, `intra_threads = 1`) adds 17–24 % throughput for
    /// 40–110 MB.
    #[default(0)]
    #[schemars(range(min = 0, max = 64))]
    pub intra_threads: usize,
    /// Path of libonnxruntime.so; default: $ORT_DYLIB_PATH, then .deps/onnxruntime/.
    pub ort_library: Option<PathBuf>,
    /// The no-mask head fitted by `vigil fit` (`models/<id>.toml`): the no-mask probability comes
    /// from it, on the backbone features of the model it names, instead of the classifier's own
    /// output. "none": the plain pretrained classifier (`mask`), logged at start.
    #[default("mask-head-fitted".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub mask_head: String,
    /// The clean/dirty head fitted by `vigil fit --kind dirty` (`models/<id>.toml`), on the
    /// backbone features of the object's crop: `utensils_left` rules with `require_dirty` count
    /// only objects it calls dirty. Loaded with the object detector; "none": not loaded
    /// (`require_dirty` is then an error).
    #[default("dirty-head-fitted".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub dirty_head: String,
    /// Object detector model id (for `utensils_left`, `object_present`, `object_with_person`, and
    /// `no_mask`'s `person_pass`); its manifest's labels are the classes rules may name.
    #[default("coco-nanodet".to_string())]
    pub objects: String,
    /// Copies of the models loaded; cameras share them, so up to this many frames are inferred
    /// at once. Each copy holds its own ONNX Runtime arenas (about 100 MB with the face detector
    /// at 960 px), so on CPU one copy with an intra-op thread per core is the default.
    #[default(1)]
    #[schemars(range(min = 1, max = 16))]
    pub instances: usize,
    /// Batch face detection across cameras: up to this many frames (of the same size and rule
    /// region) in one model run, each waiting at most 20 ms for the batch to fill. 1 = off (on a
    /// 2-core CPU a batch of 2 measured slower than two single runs; on a GPU batching pays).
    #[default(1)]
    #[schemars(range(min = 1, max = 16))]
    pub batch: usize,
}

impl ModelsConfig {
    /// The fitted no-mask head in use; `None` for `mask_head = "none"` (the plain classifier).
    pub fn head(&self) -> Option<&str> {
        Some(self.mask_head.as_str()).filter(|h| *h != "none")
    }

    /// Intra-op threads per model copy: `intra_threads`, or one per core for 0.
    pub fn threads(&self) -> usize {
        match self.intra_threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }

    /// The clean/dirty head in use; `None` for `dirty_head = "none"`.
    pub fn dirty(&self) -> Option<&str> {
        Some(self.dirty_head.as_str()).filter(|h| *h != "none")
    }
}

/// `[analysis]`: the decoded frames the models see.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Analysis frames per second per camera (frames above this rate are dropped before
    /// conversion).
    #[default(5.0)]
    #[schemars(extend("exclusiveMinimum" = 0), range(max = 60))]
    pub fps: f64,
    /// Width of analysis frames in pixels (even); height follows the source's aspect ratio.
    #[default(640)]
    #[schemars(range(min = 64, max = 3840))]
    pub width: u32,
    /// Frames waiting for analysis per camera; when full, new frames are dropped and counted.
    /// Each holds an analysis frame (0.7 MB at 640×360): 1 saves that per camera, but cameras
    /// whose frames arrive together then drop more (docs "Benchmarks": 721 against 441 of
    /// 6970 frames at 10 streams in `vigil bench --realtime`).
    #[default(2)]
    #[schemars(range(min = 1, max = 64))]
    pub queue: usize,
    /// Motion gating: skip inference on a frame when nothing in the rule's region changed since
    /// the last inferred frame (and no face track is collecting its N of M).
    #[default(true)]
    pub gate: bool,
    /// A region changed when some cell of its 32×18 grey thumbnail moved by at least this many
    /// grey levels (0–255).
    #[default(12.0)]
    #[schemars(range(min = 0, max = 255))]
    pub gate_min_change: f32,
    /// With gating, inference runs at least this often (s), so still objects stay tracked.
    #[default(2.0)]
    #[schemars(range(min = 0.1, max = 600))]
    pub gate_recheck_s: f64,
    /// With gating, a frame inferred because something moved runs the face detector only on the
    /// cells that changed and the faces being tracked (grown by a margin, at the zoom the whole
    /// region gets), as Frigate does with motion regions; the recheck every `gate_recheck_s`
    /// looks at the whole region. Off: every inferred frame is looked at whole. The object
    /// detector always looks at its whole region.
    #[default(true)]
    pub motion_regions: bool,
    /// Threads of a software decoder (libav's `avdec_*`) per camera; 0: libav's own choice (a
    /// frame thread per core, plus one, each holding frames). One thread (slice threading, no
    /// frame-thread contexts) decodes a camera many times faster than real time; with more
    /// cameras than cores it measured smaller and faster (`vigil bench`, docs "Memory").
    /// Hardware decoders ignore it.
    #[default(1)]
    #[schemars(range(min = 0, max = 16))]
    pub decoder_threads: u32,
}

impl AnalysisConfig {
    /// The motion gate's settings for a camera's rules.
    pub fn gate_settings(&self) -> crate::rules::GateSettings {
        crate::rules::GateSettings {
            enabled: self.gate,
            regions: self.motion_regions,
            min_change: self.gate_min_change,
            recheck: std::time::Duration::from_secs_f64(self.gate_recheck_s),
        }
    }
}

/// `[clip]`: evidence clips.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct ClipConfig {
    /// Seconds of video before the violating frame.
    #[default(5.0)]
    #[schemars(range(min = 0, max = 120))]
    pub pre_roll_s: f64,
    /// Seconds of video after the violating frame.
    #[default(5.0)]
    #[schemars(range(min = 0, max = 120))]
    pub post_roll_s: f64,
    /// Clips encoded at the same time (each uses about one core with x264).
    #[default(1)]
    #[schemars(range(min = 1, max = 16))]
    pub max_concurrent: usize,
    /// JPEG quality of snapshots.
    #[default(90)]
    #[schemars(range(min = 1, max = 100))]
    pub jpeg_quality: u8,
    /// x264 quantizer for the re-encoded clip (lower is better quality, bigger files).
    #[default(23)]
    #[schemars(range(min = 0, max = 51))]
    pub quantizer: u32,
}

/// `[store]`: where artifacts go.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A local directory (relative to the pipeline file) or an object_store URL:
    /// `s3://bucket/prefix`, `file:///abs/path`.
    #[default("../vigil-data/store".to_string())]
    #[schemars(length(min = 1, max = 1024))]
    pub url: String,
    /// object_store options, e.g. `aws_endpoint`, `aws_region`, `aws_allow_http`. Credentials are
    /// better taken from the environment (`AWS_ACCESS_KEY_ID`, ...), which is also read.
    pub options: BTreeMap<String, String>,
    /// S3 Object Lock (COMPLIANCE mode) on every evidence object until its retention date. The
    /// bucket must be created with Object Lock enabled.
    pub object_lock: bool,
}

/// `[publish]`: where events go.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// NATS server URL(s), e.g. "nats://127.0.0.1:4222" (comma-separated for a cluster). Without
    /// it events only go to the outbox file and the log.
    pub nats_url: Option<String>,
    /// JetStream stream name (created when missing, subjects `vigil.>`).
    pub stream: Option<String>,
    /// The stream's duplicate window, seconds. Exactly-once delivery does not depend on it: each
    /// publish states the subject's expected last sequence.
    #[default(120.0)]
    #[schemars(range(min = 1, max = 604800))]
    pub duplicate_window_s: f64,
    /// Replicas of what vigil creates in JetStream: the evidence stream and the KV buckets
    /// (thresholds, masks, leases). 3 on a 3-node cluster (production); 1 on a single server.
    /// Applies when vigil creates them; an existing stream or bucket keeps its own.
    #[default(1)]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: usize,
    /// `[publish.auth]`: NATS credentials (user + password, token, nkey, `.creds`) and TLS.
    pub auth: crate::util::nats::NatsAuth,
}

/// `[signing]`: the worker's Ed25519 key for manifests and chain checkpoints.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct SigningConfig {
    /// Secret key file made by `vigil keys init` (mode 0600).
    #[default(PathBuf::from("../vigil-data/keys/signing.key"))]
    pub key: PathBuf,
    /// Make the key pair when the file does not exist (convenient for a demo; in production make
    /// it with `vigil keys init` and register the public key with the authority).
    pub generate_if_missing: bool,
    /// Seconds between signed chain checkpoints per camera (also written on shutdown).
    #[default(300.0)]
    #[schemars(range(min = 1, max = 86400))]
    pub checkpoint_interval_s: f64,
    /// Where consumers get the public key file (its current key and the periods of earlier
    /// ones), e.g. "https://regulator.example/keys/site-a.pub": written into every manifest.
    #[schemars(length(max = 1024))]
    pub public_key_url: Option<String>,
    /// Signature suites every signed document carries (manifests, chain entries, checkpoints,
    /// review records, access-log entries, extraction records): `ed25519` (always; SHA-256
    /// digests) and `sm2` (SM2 signatures with SM3 and the GM/T 0009 default user id, beside it;
    /// artifacts and packed files then carry SM3 digests too). The SM2 key is `<stem>.sm2.key`
    /// beside the key (PKCS#8 PEM; `vigil keys init` makes both). The review service's key
    /// follows the same list.
    #[default(vec![crate::signing::Suite::Ed25519, crate::signing::Suite::Sm2])]
    #[schemars(length(min = 1, max = 2))]
    pub suites: Vec<crate::signing::Suite>,
}

/// `[retention]`: minimum keeping periods (JS 21, SD 17). Configurable upward only.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Evidence, warnings and raw data, days.
    #[default(365)]
    #[schemars(range(min = 365, max = 36500), extend("x-why" = "the legal minimum is 365 days (JS 21, SD 17); it can only be raised, up to 100 years"))]
    pub evidence_days: u32,
    /// Images that are not evidence, days.
    #[default(30)]
    #[schemars(range(min = 30, max = 36500), extend("x-why" = "the legal minimum is 30 days (JS 21); it can only be raised, up to 100 years"))]
    pub image_days: u32,
}

/// `[evidence]`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Store a sealed original beside each clip: the unmasked encoded video of the clip window,
    /// muxed without re-encoding and encrypted (age format) to this recipient — the authority's
    /// public key (`age1...`). The worker cannot decrypt it. Off when unset.
    #[schemars(length(max = 128))]
    pub seal_recipient: Option<String>,
}

/// `[control]`: how ops change rule parameters and privacy masks while the worker runs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Re-read this pipeline file when it changes and apply changed rule parameters (other
    /// changes need a restart and are logged as such).
    #[default(true)]
    pub watch_file: bool,
    /// NATS KV bucket of rule overrides, a key per `<site>.<camera>.<rule id>` (used when
    /// `publish.nats_url` is set; created when missing).
    #[default("vigil-thresholds".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub kv_bucket: String,
    /// NATS KV bucket of privacy masks set from the ops console, a key per `<site>.<camera>`
    /// holding the mask file's text: laid over the camera's `privacy_mask` file while the key
    /// exists, applied by running workers between two frames (used when `publish.nats_url` is
    /// set; created when missing).
    #[default("vigil-masks".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub mask_bucket: String,
}

/// `[review]`: the evidence review service (`vigil review serve`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct ReviewConfig {
    /// The accounts file (`vigil review user add`; argon2id hashes, mode 0600). Default:
    /// `review-users.toml` beside the data dir.
    pub users: Option<PathBuf>,
    /// The service's Ed25519 key, which signs review decisions, the access log and exports
    /// (`vigil keys init --dir DIR --name review`; its `.pub` beside it).
    #[default(PathBuf::from("../vigil-data/keys/review.key"))]
    pub key: PathBuf,
    /// Make the key when the file does not exist (a demo; production makes it with `vigil keys init`).
    pub generate_key_if_missing: bool,
    /// Address to listen on (loopback by default; behind a reverse proxy, or with `tls_cert` /
    /// `tls_key` for TLS).
    #[default("127.0.0.1:8080".to_string())]
    pub listen: String,
    /// TLS certificate chain (PEM); with `tls_key`, the service speaks HTTPS and cookies are
    /// `Secure`.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Hours a login session lasts.
    #[default(8.0)]
    #[schemars(range(min = 0.1, max = 24))]
    pub session_hours: f64,
    /// Failed logins allowed per account, and per client address, in 15 minutes; more are
    /// refused (429) until the window passes.
    #[default(5)]
    #[schemars(range(min = 1, max = 100))]
    pub max_login_failures: u32,
    /// Items per page of the queue.
    #[default(25)]
    #[schemars(range(min = 5, max = 200))]
    pub page_size: usize,
    /// Reverse proxies in front of the service (addresses or CIDR ranges, e.g. "127.0.0.1",
    /// "10.0.0.0/8"): for a connection from one of them the client is the address its
    /// `X-Forwarded-For` names (the rightmost one that is not a trusted proxy), in the access log,
    /// the login limits and the extraction record. From anyone else the header is ignored.
    /// Trusted proxies are also exempt from the per-address connection limit.
    #[schemars(length(max = 64))]
    pub trusted_proxies: Vec<String>,
}
