//! The evidence manifest: one JSON document per item, stored as its RFC 8785 canonical bytes
//! (`manifest.json`) and signed (`manifest.sig`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules::{Detection, RuleFacts};

/// The files of a stored item: their names, manifest artifact names and media types, in one
/// place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemFile {
    /// The masked clip (`clip.mp4`).
    Clip,
    /// The trigger frame, masked (`snapshot.jpg`).
    Snapshot,
    /// The trigger frame with the detections drawn (`snapshot-annotated.jpg`).
    SnapshotAnnotated,
    /// The signed manifest (`manifest.json`).
    Manifest,
    /// Its signature file (`manifest.sig`).
    Signature,
}

impl ItemFile {
    /// The files a reviewer may be served (the media).
    pub const MEDIA: [ItemFile; 3] = [ItemFile::Clip, ItemFile::Snapshot, ItemFile::SnapshotAnnotated];

    /// The file name inside the item's folder.
    pub const fn file_name(self) -> &'static str {
        match self {
            ItemFile::Clip => "clip.mp4",
            ItemFile::Snapshot => "snapshot.jpg",
            ItemFile::SnapshotAnnotated => "snapshot-annotated.jpg",
            ItemFile::Manifest => "manifest.json",
            ItemFile::Signature => "manifest.sig",
        }
    }

    /// The key of the file in the manifest's `artifacts` (the manifest and its signature are
    /// not artifacts).
    pub const fn artifact(self) -> Option<&'static str> {
        match self {
            ItemFile::Clip => Some("clip"),
            ItemFile::Snapshot => Some("snapshot"),
            ItemFile::SnapshotAnnotated => Some("snapshot_annotated"),
            ItemFile::Manifest | ItemFile::Signature => None,
        }
    }

    /// The media type it is stored and served with (the store's, by its name).
    pub fn content_type(self) -> &'static str {
        crate::store::content_type(self.file_name())
    }

    /// The media file called `name`, if it is one.
    pub fn media(name: &str) -> Option<ItemFile> {
        ItemFile::MEDIA.into_iter().find(|f| f.file_name() == name)
    }
}

/// A stored artifact as referenced by the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub key: String,
    pub sha256: String,
    /// SM3 of the bytes, hex (GM/T 0004), when the worker signs with the `sm2` suite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm3: Option<String>,
    pub bytes: u64,
    pub content_type: String,
}

/// The sealed original: ciphertext stored as an artifact, plaintext hash kept here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SealedFacts {
    pub format: String,
    pub recipient: String,
    pub plaintext_sha256: String,
    pub plaintext_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClipFacts {
    pub start_utc: String,
    pub start_local: String,
    pub end_utc: String,
    pub end_local: String,
    pub duration_s: f64,
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub pre_roll_s: f64,
    pub post_roll_s: f64,
    pub pre_roll_truncated: bool,
    pub post_roll_truncated: bool,
}

/// A camera with a sub stream: the clip from the main stream, analysis from the sub stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamFacts {
    /// The main stream (clip, snapshots, sealed original), credentials replaced by `***`.
    pub clip_source: String,
    /// The sub stream that was analysed.
    pub analysis_source: String,
    /// How the two streams' timestamps were put on one timeline.
    pub alignment: String,
    /// Analysis frame size, pixels (detections are scaled from it onto the clip).
    pub analysis_width: u32,
    pub analysis_height: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskFacts {
    pub id: String,
    pub sha256: String,
    pub polygons: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelFacts {
    pub id: String,
    pub sha256: String,
    /// A head refitted from the officers' decisions: its version (`vigil fit --from-reviews`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// SHA-256 of the evaluation report that promoted that version: which model judged, and why
    /// it was trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_sha256: Option<String>,
}

impl From<crate::detect::ModelRef> for ModelFacts {
    fn from(m: crate::detect::ModelRef) -> Self {
        ModelFacts { id: m.id, sha256: m.sha256, version: m.version, report_sha256: m.report_sha256 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerFacts {
    pub id: String,
    pub version: String,
}

/// Stream health over the clip window (JS 28: content recorded while the equipment was not
/// working normally is inadmissible).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthFacts {
    /// Breaks in the stream longer than three frame intervals: (start UTC, seconds).
    pub gaps: Vec<(String, f64)>,
    /// Reconnects, freezes and other health events inside the window: (UTC, what).
    pub events: Vec<(String, String)>,
    pub normal: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admissibility {
    pub admissible: bool,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionFacts {
    pub class: String,
    pub min_days: u32,
    pub retain_until_utc: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningFacts {
    /// Always "Ed25519": the signature in `manifest.sig` is Ed25519 over the manifest's canonical
    /// bytes, base64 (standard alphabet, padded).
    pub alg: String,
    /// First 16 hex digits of SHA-256 of the 32-byte Ed25519 public key.
    pub key_id: String,
    /// Where the public key (and the periods of earlier keys) is published (v4 on, when set).
    #[serde(default)]
    pub public_key_url: Option<String>,
    /// The review service keys (key ids) whose signed decisions count for this item: the site's
    /// review key as the worker knew it (`review.pub` beside `[review] key`). A verifier trusts a
    /// review record signed by one of them without being given the review key; a record signed by
    /// any other key needs the verifier's own `--review-key`. Absent in items made before
    /// vigil pinned it, or when the worker had no review key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_key_ids: Option<Vec<String>>,
    /// The SM2 key (key id: first 16 hex digits of SHA-256 of its uncompressed point) whose
    /// signature `manifest.sig` also carries (`"sm2"`), when the worker signs with the `sm2`
    /// suite. Under the Ed25519 signature: the Ed25519 key vouches for the SM2 key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm2_key_id: Option<String>,
}

/// Cluster: the lease under which the worker ran the camera when the rule fired (NATS KV bucket
/// `cluster.bucket`), so a reader sees which tenure of which worker produced the item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseFacts {
    pub bucket: String,
    /// `<site>.camera.<camera>`.
    pub key: String,
    pub worker: String,
    /// The KV revision that created the lease (the tenure: it changes only when the camera
    /// changes hands).
    pub acquired_revision: u64,
    /// The revision of the lease's latest renewal when the rule fired.
    pub revision: u64,
    pub acquired_utc: String,
}

/// One evidence item, stored canonically as `manifest.json` and signed in `manifest.sig`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub canonicalization: String,
    pub evidence_id: String,
    pub site: String,
    pub site_name: String,
    /// The operator of the premises (v4 on; null when the pipeline names none).
    #[serde(default)]
    pub premises: Option<crate::config::PremisesConfig>,
    pub camera: String,
    pub camera_location: String,
    pub camera_registry: crate::config::Registry,
    pub worker: WorkerFacts,
    pub rule: RuleFacts,
    pub violation_time_utc: String,
    pub violation_time_local: String,
    pub detection_frames_utc: Vec<String>,
    pub clip: ClipFacts,
    /// Main and sub stream, when the camera analyses a sub stream (null otherwise).
    #[serde(default)]
    pub streams: Option<StreamFacts>,
    /// Tracked detections at the violating frame (faces, or objects), boxes in clip pixels.
    pub detections: Vec<Detection>,
    /// The rule's zone (normalised polygon), when it has one.
    pub zone: Option<Vec<[f64; 2]>>,
    pub models: Vec<ModelFacts>,
    pub privacy_mask: Option<MaskFacts>,
    pub health: HealthFacts,
    pub admissibility: Admissibility,
    pub status: crate::config::Compliance,
    /// Events of the same rule from this camera in the 30 days before this one (SD 3, NJ 4).
    pub repeat_count_30d: u32,
    pub artifacts: BTreeMap<String, Artifact>,
    pub sealed_original: Option<SealedFacts>,
    pub retention: RetentionFacts,
    pub chain: super::chain::ChainLink,
    pub signing: SigningFacts,
    /// Cluster mode: the camera's lease when the rule fired (absent for a worker that runs its
    /// pipeline's cameras alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseFacts>,
}

/// The manifest format. v3: canonical bytes by `RFC 8785 (JCS) v2` (ECMAScript numbers). v4:
/// premises, device ids, structured legal basis, chain commit time, public key URL.
/// One way a clip does not cover what its rule asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shortfall {
    /// The camera's ring held less than `pre_roll_s` before the first detection frame.
    PreRoll { had_s: f64, want_s: f64 },
    /// The clip ended (stream down, shutdown) before `post_roll_s` after the violation.
    PostRoll { had_s: f64, want_s: f64 },
    /// Breaks in the video inside the clip.
    Gaps { count: usize, total_s: f64 },
}

impl Manifest {
    /// How the clip falls short of complete (empty: it is complete): what a reviewer must know
    /// before judging what the clip shows and does not show.
    pub fn shortfalls(&self) -> Vec<Shortfall> {
        let at = |t: &str| crate::util::time::parse_rfc3339(t).ok();
        let secs = |a: Option<chrono::DateTime<chrono::Utc>>, b: Option<chrono::DateTime<chrono::Utc>>| match (a, b) {
            (Some(a), Some(b)) => ((b - a).num_milliseconds() as f64 / 1000.0).max(0.0),
            _ => 0.0,
        };
        let c = &self.clip;
        let first = self.detection_frames_utc.first().map(String::as_str).unwrap_or(&self.violation_time_utc);
        let mut out = Vec::new();
        if c.pre_roll_truncated {
            out.push(Shortfall::PreRoll { had_s: secs(at(&c.start_utc), at(first)), want_s: c.pre_roll_s });
        }
        if c.post_roll_truncated {
            out.push(Shortfall::PostRoll {
                had_s: secs(at(&self.violation_time_utc), at(&c.end_utc)),
                want_s: c.post_roll_s,
            });
        }
        if !self.health.gaps.is_empty() {
            out.push(Shortfall::Gaps {
                count: self.health.gaps.len(),
                total_s: self.health.gaps.iter().map(|g| g.1).sum(),
            });
        }
        out
    }
}

pub const MANIFEST_SCHEMA: &str = "vigil.manifest.v4";
/// The evidence event format (the manifest plus where it is stored).
pub const EVENT_SCHEMA: &str = "vigil.evidence.v1";

/// Where the signed manifest of an event is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestRef {
    pub key: String,
    pub sha256: String,
    pub signature_key: String,
}

/// `vigil.evidence.<site>.<camera>`: an evidence candidate. The manifest's members, with
/// `schema` = [`EVENT_SCHEMA`], and `manifest`: where its signed bytes are.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct EvidenceEvent {
    #[serde(flatten)]
    pub manifest: Manifest,
    #[serde(rename = "manifest")]
    pub manifest_ref: ManifestRef,
    /// The store every key of the event is in (filled when the item is uploaded).
    #[serde(default)]
    pub store: Option<crate::store::StoreRef>,
    /// Full locator (URL, version id) of every object of the item, by key: artifacts, manifest,
    /// signature, chain index entry (filled when the item is uploaded).
    #[serde(default)]
    pub objects: BTreeMap<String, crate::store::ObjectLocation>,
}
