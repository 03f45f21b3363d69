//! `[[cameras]]`: a camera's source, registry entry and rules, and the resolved [`Camera`] the
//! worker runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::check::Checks;
use crate::health::TamperConfig;
use crate::privacy::PrivacyMask;
use crate::rules::{CameraRules, RuleConfig, RuleEnv, validate_rules};
use crate::util::secret::{RedactedUrl, read_secret};

/// RTSP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

/// `[[cameras]]`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
#[schemars(extend("required" = ["id", "source"]))]
pub struct CameraConfig {
    /// Camera id, used in NATS subjects and object keys: 1-64 characters of `A-Z a-z 0-9 - _`
    /// (required).
    #[schemars(length(max = 64))]
    pub id: String,
    /// Where the camera is (free text, written into events).
    #[schemars(length(max = 256))]
    pub location: String,
    /// Kind of place (registry). Private places are refused (JS 17, SD 5, NJ 9).
    pub location_category: LocationCategory,
    /// Registry: date of the legal review of this camera (YYYY-MM-DD).
    #[schemars(length(max = 10))]
    pub legal_review_date: Option<String>,
    /// Registry: date of the technical review (YYYY-MM-DD).
    #[schemars(length(max = 10))]
    pub technical_review_date: Option<String>,
    /// Registry: reference of the installation confirmation.
    #[schemars(length(max = 128))]
    pub installation_ref: Option<String>,
    /// Registry: date the camera was announced to the public (YYYY-MM-DD). Events are advisory
    /// until 30 days after it (JS 13–15, 18).
    #[schemars(length(max = 10))]
    pub public_notice_date: Option<String>,
    /// Registry: the device's serial number, as its maker prints it.
    #[schemars(length(max = 64))]
    pub device_serial: Option<String>,
    /// Registry: the national device id under GB/T 28181 (20 digits), where the camera is
    /// registered on a national video platform.
    #[schemars(length(max = 20))]
    pub national_device_id: Option<String>,
    /// `rtsp://...`, or a file path (relative to the pipeline file) / `file://` URL (required).
    #[schemars(length(max = 2048))]
    pub source: String,
    /// The camera's sub stream (e.g. `rtsp://cam/Streaming/Channels/102`), analysed instead of
    /// `source`: analysis decodes only this low-resolution stream, while the encoded ring and
    /// the evidence clip come from `source` (the main stream) at its resolution. Both RTSP or
    /// both files; aligned by their timestamps on one pipeline clock.
    #[schemars(length(max = 2048))]
    pub analysis_source: Option<String>,
    /// RTSP user name, instead of putting it in the URL (with `password_file` or `password_env`);
    /// used for `source` and `analysis_source`.
    #[schemars(length(max = 256))]
    pub username: Option<String>,
    /// File whose first line is the RTSP password (keep it mode 0600; relative to the pipeline
    /// file).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the RTSP password.
    #[schemars(length(max = 128))]
    pub password_env: Option<String>,
    /// File sources: start again at the end instead of ending.
    #[serde(rename = "loop")]
    pub loop_file: bool,
    /// File sources: play at the file's own pace (as a camera would). `false` replays as fast as
    /// analysis allows and analyses every frame at the analysis rate (replay for tuning, tests).
    #[default(true)]
    pub realtime: bool,
    /// RTSP transport: "tcp" or "udp".
    pub rtsp_transport: RtspTransport,
    /// RTSP jitterbuffer latency, milliseconds: how long packets may wait to be put in order.
    /// Streams with B-frames need it: their frames come in decode order with earlier timestamps,
    /// and at 200 ms a worker under inference load lost runs of about five B-frames of an H.265
    /// stream (a clip with a hole, not admissible); at 500 ms none (tests/codecs.rs). It adds to
    /// event latency only this much, far below the post-roll.
    #[default(500)]
    #[schemars(range(min = 0, max = 10000))]
    pub rtsp_latency_ms: u32,
    /// Decoder element, or "auto": a hardware decoder when present, else the software one.
    #[default("auto".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub decoder: String,
    /// Privacy mask file (polygons blacked out before analysis and in every stored pixel), or
    /// "none" to say that this camera runs without a mask on purpose. Absent: a warning at start.
    pub privacy_mask: Option<PathBuf>,
    /// A live stream without video for this long counts as down, seconds.
    #[default(5.0)]
    #[schemars(range(min = 0.5, max = 3600))]
    pub stall_s: f64,
    /// Cap of the exponential reconnect backoff, seconds (jitter up to 0.25 s is added).
    #[default(3.0)]
    #[schemars(range(min = 0.1, max = 600))]
    pub reconnect_max_s: f64,
    /// Tamper and health detection thresholds.
    pub tamper: TamperConfig,
    /// The camera's rules (`[[cameras.rules]]`, each with a `kind`).
    #[schemars(length(max = 16))]
    pub rules: Vec<RuleConfig>,
}

/// Where a camera looks. The last six are private places where monitoring is not allowed.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    pub location_category: LocationCategory,
    pub legal_review_date: Option<chrono::NaiveDate>,
    pub technical_review_date: Option<chrono::NaiveDate>,
    pub installation_ref: Option<String>,
    pub public_notice_date: Option<chrono::NaiveDate>,
    /// The device's serial number (manifest v4 on).
    #[serde(default)]
    pub device_serial: Option<String>,
    /// GB/T 28181 national device id, 20 digits (manifest v4 on).
    #[serde(default)]
    pub national_device_id: Option<String>,
}

/// Whether a camera's events may become enforcement candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    /// An enforcement candidate.
    Enforcement,
    /// A prompt for the premises only, never an enforcement candidate.
    Advisory,
}

impl StatusKind {
    pub fn name(self) -> &'static str {
        match self {
            StatusKind::Enforcement => "enforcement",
            StatusKind::Advisory => "advisory",
        }
    }
}

/// A camera's status at the time of a violation, with the reasons when advisory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Compliance {
    pub kind: StatusKind,
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
            Some(d) => {
                let from = d.checked_add_days(chrono::Days::new(30)).unwrap_or(chrono::NaiveDate::MAX);
                if day < from {
                    reasons.push(format!("within 30 days of the public notice of {d} (enforcement from {from})"));
                }
            }
        }
        let kind = if reasons.is_empty() { StatusKind::Enforcement } else { StatusKind::Advisory };
        Compliance { kind, reasons }
    }
}

/// Where a camera's stream comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Rtsp { url: RedactedUrl, tcp: bool, latency_ms: u32 },
    File { path: PathBuf, looping: bool, realtime: bool },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Rtsp { url, .. } => write!(f, "rtsp {url}"),
            Source::File { path, .. } => write!(f, "file {}", path.display()),
        }
    }
}

/// A camera ready to run: config plus resolved source, mask and rules.
#[derive(Debug, Clone)]
pub struct Camera {
    pub id: String,
    pub location: String,
    pub registry: Registry,
    /// No video for this long: the camera is down (`stall_s`).
    pub stall: Duration,
    /// The longest wait between two reconnect attempts (`reconnect_max_s`).
    pub reconnect_max: Duration,
    pub tamper: TamperConfig,
    pub source: Source,
    /// The sub stream analysed instead of `source`, when the camera has one.
    pub analysis_source: Option<Source>,
    pub decoder: String,
    pub mask: Option<PrivacyMask>,
    pub rules: CameraRules,
}

impl CameraConfig {
    /// Checks the `i`-th camera and resolves it: source URLs with their credentials (read once
    /// here), files against the pipeline file's folder, the privacy mask, the rules.
    pub fn resolve(&self, i: usize, env: &RuleEnv, c: &mut Checks) -> Camera {
        let cam = self;
        let k = |f: &str| format!("cameras[{i}].{f}");
        c.id(&k("id"), "the camera's id", &cam.id);
        if cam.location_category.is_private() {
            c.error(
                &k("location_category"),
                format!(
                    "{:?} is a private place; monitoring it is not allowed (JS 17, SD 5, NJ 9): remove this camera",
                    cam.location_category.name()
                ),
            );
        }
        let registry = self.registry(&k, c);
        // the RTSP password from `password_file` / `password_env`, read once here
        let password = match read_secret(
            cam.password_file.as_deref().map(|p| c.resolve(p)).as_deref(),
            cam.password_env.as_deref(),
        ) {
            Ok(p) => p,
            Err(e) => {
                let key = if cam.password_file.is_some() { "password_file" } else { "password_env" };
                c.error(&k(key), format!("{e:#}"));
                None
            }
        };
        if cam.password_file.is_some() && cam.password_env.is_some() {
            c.error(&k("password_env"), "give password_file or password_env, not both");
        }
        if password.is_some() && cam.username.is_none() {
            c.error(&k("username"), "a password_file or password_env needs a username");
        }
        let source = if cam.source.is_empty() {
            c.error(&k("source"), "required: rtsp://… or a video file");
            Source::File { path: PathBuf::new(), looping: false, realtime: true }
        } else {
            self.source_of(&k("source"), &cam.source, password.as_deref(), c)
        };
        let analysis_source =
            cam.analysis_source.as_deref().map(|a| self.source_of(&k("analysis_source"), a, password.as_deref(), c));
        if let Some(a) = &analysis_source
            && matches!(a, Source::Rtsp { .. }) != matches!(source, Source::Rtsp { .. })
        {
            c.error(&k("analysis_source"), "source and analysis_source must both be RTSP or both files");
        }
        if cam.username.is_some() && !matches!(source, Source::Rtsp { .. }) {
            c.error(&k("username"), "username and password_file are for rtsp:// sources");
        }
        let mask = match &cam.privacy_mask {
            None => {
                c.warn(format_args!(
                    "camera {:?} has no privacy mask; say privacy_mask = \"none\" if that is on purpose",
                    cam.id
                ));
                None
            }
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) => match PrivacyMask::load(&c.resolve(p)) {
                Ok(m) => Some(m),
                Err(e) => {
                    c.error(&k("privacy_mask"), e.to_string());
                    None
                }
            },
        };
        let rules = match validate_rules(&cam.rules, env) {
            Ok(r) => r,
            Err(es) => {
                for (key, problem) in es {
                    c.error(&k(&key), problem);
                }
                Default::default()
            }
        };
        Camera {
            id: cam.id.clone(),
            location: cam.location.clone(),
            registry,
            stall: Duration::from_secs_f64(cam.stall_s),
            reconnect_max: Duration::from_secs_f64(cam.reconnect_max_s),
            tamper: cam.tamper,
            source,
            analysis_source,
            decoder: cam.decoder.clone(),
            mask,
            rules,
        }
    }

    /// The camera's registry entry (JS 17-19, SD 5): its dates checked.
    fn registry(&self, k: &dyn Fn(&str) -> String, c: &mut Checks) -> Registry {
        let cam = self;
        let mut date = |f: &str, v: &Option<String>| -> Option<chrono::NaiveDate> {
            let v = v.as_ref()?;
            let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok();
            if d.is_none() {
                c.error(&k(f), format!("{v:?} is not a date like 2026-01-31"));
            }
            d
        };
        let registry = Registry {
            location_category: cam.location_category,
            legal_review_date: date("legal_review_date", &cam.legal_review_date),
            technical_review_date: date("technical_review_date", &cam.technical_review_date),
            installation_ref: cam.installation_ref.clone().filter(|s| !s.trim().is_empty()),
            public_notice_date: date("public_notice_date", &cam.public_notice_date),
            device_serial: cam.device_serial.clone().filter(|s| !s.trim().is_empty()),
            national_device_id: cam.national_device_id.clone(),
        };
        if let Some(id) = &cam.national_device_id {
            match super::premises::check_national_device_id(id) {
                Err(p) => c.error(&k("national_device_id"), p),
                Ok(Some(w)) => c.warn(format_args!("{}: {w}", k("national_device_id"))),
                Ok(None) => {}
            }
        }
        registry
    }

    /// `text` (the value of `key`) as a source: an RTSP URL, given this camera's credentials, or
    /// a file resolved against the pipeline file's folder.
    fn source_of(&self, key: &str, text: &str, password: Option<&str>, c: &mut Checks) -> Source {
        if text.starts_with("rtsp://") || text.starts_with("rtsps://") {
            let mut url = RedactedUrl::new(text);
            if let Some(user) = &self.username {
                if url.has_credentials() {
                    let ukey = key.rsplit_once('.').map_or(String::new(), |(head, _)| format!("{head}.username"));
                    c.error(
                        &ukey,
                        format!("{url}: credentials in the URL and in username/password_file; give them once"),
                    );
                }
                url = url.with_credentials(user, password.unwrap_or(""));
            }
            return Source::Rtsp {
                url,
                tcp: self.rtsp_transport == RtspTransport::Tcp,
                latency_ms: self.rtsp_latency_ms,
            };
        }
        let p = text.strip_prefix("file://").unwrap_or(text);
        if p.contains("://") {
            c.error(key, format!("{}: only rtsp:// URLs and files are supported", crate::util::secret::redact(text)));
        }
        let path = c.resolve(Path::new(p));
        // a regular file, or a FIFO another program feeds (a receiver writing MPEG-TS into it)
        match std::fs::metadata(&path).map(|m| m.file_type()) {
            Ok(t) if t.is_file() || std::os::unix::fs::FileTypeExt::is_fifo(&t) => {}
            Ok(_) => c.error(key, format!("{} is not a regular file or a FIFO", path.display())),
            Err(_) => c.error(key, format!("file {} does not exist", path.display())),
        }
        Source::File { path, looping: self.loop_file, realtime: self.realtime }
    }
}
