//! Pipeline configuration: one TOML file per site (`pipelines/<site>.toml`), parsed once into these
//! types and validated. Every error names the file and the key (`cameras[1].rules[0].threshold`).
//! A key's default, range and documentation sit on its field ([`sections`], [`camera`], the rule
//! kinds in [`crate::rules`]); `vigil config defaults` prints them ([`docs`]).
//!
//! Relative paths inside a pipeline file (sources, privacy masks, model dir, data dir) are resolved
//! against the directory that holds the pipeline file, as Cargo does for `Cargo.toml`.

pub mod camera;
pub mod docs;
mod key;
pub mod premises;
pub mod sections;

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use camera::{Camera, CameraConfig, Compliance, LocationCategory, Registry, RtspTransport, Source, StatusKind};
pub use premises::PremisesConfig;
pub use sections::*;

use crate::privacy::PrivacyMask;
use crate::rules::{RuleEnv, valid_id, validate_rules};
use crate::util::fsx;
use crate::util::secret::{RedactedUrl, read_secret};
use crate::util::time::parse_utc_offset;

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
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
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
    pub review: ReviewConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
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
    /// NATS (`publish.nats_url` with `[publish.auth]`), when events go there.
    pub nats: Option<crate::util::nats::Endpoint>,
    pub cameras: Vec<Camera>,
    /// The site's offset from UTC, seconds.
    pub utc_offset_s: i32,
    /// Settings allowed but worth a second look (a non-loopback listen address, a camera without
    /// a privacy mask that does not say so): printed by `check`, logged at start.
    pub warnings: Vec<String>,
}

impl Pipeline {
    /// Reads, parses and validates a pipeline file, including the privacy-mask files it names.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigErrors> {
        let err = |key: &str, problem: String| ConfigError { file: path.to_path_buf(), key: key.into(), problem };
        let text = fsx::read_text(path, fsx::limits::PIPELINE)
            .map_err(|e| ConfigErrors(vec![err("", format!("cannot read pipeline file: {e:#}"))]))?;
        let raw: PipelineFile = toml::from_str(&text).map_err(|e| {
            let key = key::toml_error_key(&text, &e);
            ConfigErrors(vec![err(&key, e.message().to_string())])
        })?;
        Self::validate(path, raw)
    }

    /// Validates a parsed pipeline file (what [`Pipeline::load`] does after parsing).
    pub fn validate(path: &Path, raw: PipelineFile) -> Result<Pipeline, ConfigErrors> {
        let err = |key: &str, problem: String| ConfigError { file: path.to_path_buf(), key: key.into(), problem };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
        };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        // ranges and lengths from the schema (rules are checked per camera below)
        for (key, problem) in crate::util::ranges::check(&raw) {
            if !key.contains(".rules[") {
                errors.push(err(&key, problem));
            }
        }
        if raw.site.id.is_empty() {
            errors.push(err("site.id", "required: the site's id (A-Z a-z 0-9 - _)".into()));
        } else if !valid_id(&raw.site.id) {
            errors.push(err("site.id", format!("{:?} must be 1-64 characters of A-Z a-z 0-9 - _", raw.site.id)));
        }
        for (key, problem) in raw.site.premises.problems() {
            errors.push(err(&format!("site.premises.{key}"), problem));
        }
        let utc_offset_s = parse_utc_offset(&raw.site.utc_offset);
        if utc_offset_s.is_none() {
            errors.push(err("site.utc_offset", format!("{:?} is not an offset like \"+08:00\"", raw.site.utc_offset)));
        }
        if !raw.analysis.width.is_multiple_of(2) {
            errors.push(err("analysis.width", format!("{} must be an even number in [64, 3840]", raw.analysis.width)));
        }
        if let Some(rcp) = &raw.evidence.seal_recipient
            && rcp.parse::<age::x25519::Recipient>().is_err()
        {
            errors.push(err("evidence.seal_recipient", format!("{rcp:?} is not an age X25519 recipient (age1...)")));
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
        if !raw.signing.suites.contains(&crate::signing::Suite::Ed25519) {
            errors.push(err(
                "signing.suites",
                "must name ed25519: chains, checkpoints and earlier keys rest on it (add sm2 beside it)".into(),
            ));
        }
        if raw.store.object_lock && !raw.store.url.starts_with("s3://") {
            errors.push(err("store.object_lock", "Object Lock needs an s3:// store".into()));
        }
        if raw.store.url.trim().is_empty() {
            errors.push(err("store.url", "empty: give a directory or an s3:// URL".into()));
        } else if let Some((scheme, _)) = raw.store.url.split_once("://")
            && !["s3", "file", "memory"].contains(&scheme)
        {
            errors.push(err(
                "store.url",
                format!(
                    "{:?}: scheme {scheme:?} is not one of s3, file, memory",
                    crate::util::secret::redact(&raw.store.url)
                ),
            ));
        }
        if let Some(u) = &raw.publish.nats_url
            && let Err(problem) = check_nats_urls(u)
        {
            errors.push(err("publish.nats_url", problem));
        }
        let auth = raw.publish.auth.resolved(|p| resolve(p));
        let nats = raw.publish.nats_url.as_deref().map(|u| crate::util::nats::Endpoint::new(u, auth.clone()));
        if raw.publish.auth != Default::default() {
            for (key, problem) in auth.check(nats.as_ref().is_some_and(|n| n.url_has_credentials())) {
                let key = if key.is_empty() { "publish.auth".to_string() } else { format!("publish.auth.{key}") };
                errors.push(err(&key, problem));
            }
            if raw.publish.nats_url.is_none() {
                warnings.push(format!("{}: [publish.auth] is set but publish.nats_url is not", path.display()));
            }
        }
        if raw.cluster.enabled && raw.publish.nats_url.is_none() {
            errors.push(err(
                "cluster.enabled",
                "workers share cameras through NATS KV leases: set publish.nats_url".into(),
            ));
        }
        if let Some(id) = &raw.worker.id
            && !valid_id(id)
        {
            errors.push(err("worker.id", format!("{id:?}: use 1-64 characters of A-Z a-z 0-9 - _")));
        }
        let mut listen = |key: &str, v: &str, example: &str| match v.parse::<std::net::SocketAddr>() {
            Err(_) => errors.push(err(key, format!("{v:?} is not an address like {example}"))),
            Ok(a) if !a.ip().is_loopback() => warnings.push(format!(
                "{}: {key} = {v:?} listens beyond this machine (not a loopback address): make sure a firewall or a \
                 TLS reverse proxy is in front of it",
                path.display()
            )),
            Ok(_) => {}
        };
        if let Some(h) = &raw.worker.http {
            listen("worker.http", h, "127.0.0.1:9464");
        }
        listen("review.listen", &raw.review.listen, "127.0.0.1:8080");
        if raw.review.tls_cert.is_some() != raw.review.tls_key.is_some() {
            errors.push(err("review.tls_cert", "TLS needs both tls_cert and tls_key".into()));
        }
        for (i, t) in raw.review.trusted_proxies.iter().enumerate() {
            if let Err(e) = t.parse::<crate::util::http::IpNet>() {
                errors.push(err(&format!("review.trusted_proxies[{i}]"), e));
            }
        }
        if raw.cameras.is_empty() {
            errors.push(err("cameras", "no camera configured ([[cameras]])".into()));
        }
        // the object model's class names, for utensils_left.classes
        let wants_objects = raw.cameras.iter().any(|c| c.rules.iter().any(|r| r.needs().objects));
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
        let env = RuleEnv {
            object_labels: labels.as_deref(),
            gate: raw.analysis.gate,
            gate_recheck_s: raw.analysis.gate_recheck_s,
            dirty_head: raw.models.dirty().is_some(),
        };
        let mut cameras = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, cam) in raw.cameras.iter().enumerate() {
            let k = |f: &str| format!("cameras[{i}].{f}");
            if cam.id.is_empty() {
                errors.push(err(&k("id"), "required: the camera's id (A-Z a-z 0-9 - _)".into()));
            } else if !valid_id(&cam.id) {
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
                device_serial: cam.device_serial.clone().filter(|s| !s.trim().is_empty()),
                national_device_id: cam.national_device_id.clone(),
            };
            if let Some(id) = &cam.national_device_id {
                match premises::check_national_device_id(id) {
                    Err(p) => errors.push(err(&k("national_device_id"), p)),
                    Ok(Some(w)) => warnings.push(format!("{}: {}: {w}", path.display(), k("national_device_id"))),
                    Ok(None) => {}
                }
            }
            let tcp = cam.rtsp_transport == RtspTransport::Tcp;
            // the RTSP password from `password_file` / `password_env`, read once here
            let password =
                match read_secret(cam.password_file.as_deref().map(&resolve).as_deref(), cam.password_env.as_deref()) {
                    Ok(p) => p,
                    Err(e) => {
                        let key = if cam.password_file.is_some() { "password_file" } else { "password_env" };
                        errors.push(err(&k(key), format!("{e:#}")));
                        None
                    }
                };
            if cam.password_file.is_some() && cam.password_env.is_some() {
                errors.push(err(&k("password_env"), "give password_file or password_env, not both".into()));
            }
            if password.is_some() && cam.username.is_none() {
                errors.push(err(&k("username"), "a password_file or password_env needs a username".into()));
            }
            let mut src_errors = Vec::new();
            let mut parse_source = |key: &str, text: &str| -> Source {
                if text.starts_with("rtsp://") || text.starts_with("rtsps://") {
                    let mut url = RedactedUrl::new(text);
                    if let Some(user) = &cam.username {
                        if url.has_credentials() {
                            src_errors.push(err(
                                &k("username"),
                                format!("{url}: credentials in the URL and in username/password_file; give them once"),
                            ));
                        }
                        url = url.with_credentials(user, password.as_deref().unwrap_or(""));
                    }
                    return Source::Rtsp { url, tcp, latency_ms: cam.rtsp_latency_ms };
                }
                let p = text.strip_prefix("file://").unwrap_or(text);
                if p.contains("://") {
                    src_errors.push(err(
                        &k(key),
                        format!("{}: only rtsp:// URLs and files are supported", crate::util::secret::redact(text)),
                    ));
                }
                let path = resolve(Path::new(p));
                if !path.is_file() {
                    src_errors.push(err(&k(key), format!("file {} does not exist", path.display())));
                }
                Source::File { path, looping: cam.loop_file, realtime: cam.realtime }
            };
            let source = if cam.source.is_empty() {
                errors.push(err(&k("source"), "required: rtsp://… or a video file".into()));
                Source::File { path: PathBuf::new(), looping: false, realtime: true }
            } else {
                parse_source("source", &cam.source)
            };
            let analysis_source = cam.analysis_source.as_deref().map(|a| parse_source("analysis_source", a));
            errors.append(&mut src_errors);
            if let Some(a) = &analysis_source
                && matches!(a, Source::Rtsp { .. }) != matches!(source, Source::Rtsp { .. })
            {
                errors.push(err(
                    &k("analysis_source"),
                    "source and analysis_source must both be RTSP or both files".into(),
                ));
            }
            if cam.username.is_some() && !matches!(source, Source::Rtsp { .. }) {
                errors.push(err(&k("username"), "username and password_file are for rtsp:// sources".into()));
            }
            let mask = match &cam.privacy_mask {
                None => {
                    warnings.push(format!(
                        "{}: camera {:?} has no privacy mask; say privacy_mask = \"none\" if that is on purpose",
                        path.display(),
                        cam.id
                    ));
                    None
                }
                Some(p) if p.as_os_str() == "none" => None,
                Some(p) => match PrivacyMask::load(&resolve(p)) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        errors.push(err(&k("privacy_mask"), e.to_string()));
                        None
                    }
                },
            };
            let rules = match validate_rules(&cam.rules, &env) {
                Ok(r) => r,
                Err(es) => {
                    errors.extend(es.into_iter().map(|(key, problem)| err(&k(&key), problem)));
                    Default::default()
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
                analysis_source,
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
            nats,
            cameras,
            utc_offset_s: utc_offset_s.unwrap_or(0),
            raw,
            warnings,
        })
    }

    /// Logs [`Pipeline::warnings`].
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(warning = %w, "configuration");
        }
    }

    /// `worker.id` (or `--worker-id`), else the host name up to its first dot, as a valid id
    /// (other characters become `_`): it names the worker in events, leases and KV keys.
    pub fn worker_id(&self) -> String {
        self.raw.worker.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let id: String = host
                .trim()
                .split('.')
                .next()
                .unwrap_or_default()
                .chars()
                .take(64)
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect();
            if id.is_empty() { "worker".into() } else { id }
        })
    }

    /// What validating a rule change needs to know of this pipeline.
    pub fn rule_env<'a>(&self, labels: Option<&'a [String]>) -> RuleEnv<'a> {
        RuleEnv {
            object_labels: labels,
            gate: self.raw.analysis.gate,
            gate_recheck_s: self.raw.analysis.gate_recheck_s,
            dirty_head: self.raw.models.dirty().is_some(),
        }
    }

    /// The object model's class names (for validating rule changes), if it has a manifest.
    pub fn object_labels(&self) -> Option<Vec<String>> {
        crate::detect::read_labels(&self.models_dir, &self.raw.models.objects).ok()
    }

    /// The review service's accounts file.
    pub fn review_users(&self) -> PathBuf {
        match &self.raw.review.users {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => self.file.parent().unwrap_or(Path::new(".")).join(p),
            None => self.data_dir.with_file_name("review-users.toml"),
        }
    }

    /// The review service's signing key.
    pub fn review_key(&self) -> PathBuf {
        let k = &self.raw.review.key;
        if k.is_absolute() { k.clone() } else { self.file.parent().unwrap_or(Path::new(".")).join(k) }
    }

    /// The models this pipeline's rules need.
    pub fn needs(&self) -> crate::rules::Needs {
        self.cameras.iter().fold(Default::default(), |n, c| n.union(c.rules.needs()))
    }
}

/// NATS server URLs (comma-separated): each `nats://`, `tls://`, `ws://` or `wss://` with a host.
pub fn check_nats_urls(urls: &str) -> Result<(), String> {
    for u in urls.split(',').map(str::trim) {
        let shown = crate::util::secret::redact(u);
        let parsed = url::Url::parse(u).map_err(|_| format!("{shown:?} is not a URL like nats://127.0.0.1:4222"))?;
        if !["nats", "tls", "ws", "wss"].contains(&parsed.scheme()) {
            return Err(format!("{shown:?}: scheme {:?} is not one of nats, tls, ws, wss", parsed.scheme()));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("{shown:?} has no host"));
        }
    }
    Ok(())
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
    fn camera_credentials_and_sub_streams_are_checked_and_the_password_goes_into_the_url_only() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.mp4", "x");
        write(d.path(), "cam.pw", "S3cret-Pw\n");
        let cam = |extra: &str| {
            format!(
                "[site]\nid = \"s\"\n[[cameras]]\nid = \"c\"\nsource = \"rtsp://10.0.0.5/Streaming/Channels/101\"\nprivacy_mask = \"none\"\n{extra}\n"
            )
        };
        let ok = write(
            d.path(),
            "ok.toml",
            &cam(
                "analysis_source = \"rtsp://10.0.0.5/Streaming/Channels/102\"\nusername = \"ops\"\npassword_file = \"cam.pw\"",
            ),
        );
        let p = Pipeline::load(&ok).unwrap();
        let c = &p.cameras[0];
        let (Source::Rtsp { url: main, .. }, Some(Source::Rtsp { url: sub, .. })) = (&c.source, &c.analysis_source)
        else {
            panic!("{c:?}")
        };
        assert_eq!(main.expose(), "rtsp://ops:S3cret-Pw@10.0.0.5/Streaming/Channels/101");
        assert_eq!(sub.to_string(), "rtsp://ops:***@10.0.0.5/Streaming/Channels/102");
        assert!(!format!("{c:?}").contains("S3cret-Pw"), "the camera's Debug shows no password");
        for (extra, key, problem) in [
            ("password_file = \"cam.pw\"", "cameras[0].username", "needs a username"),
            ("username = \"ops\"\npassword_file = \"nope.pw\"", "cameras[0].password_file", "nope.pw"),
            (
                "username = \"ops\"\npassword_env = \"VIGIL_TEST_UNSET_PW\"",
                "cameras[0].password_env",
                "VIGIL_TEST_UNSET_PW is not set",
            ),
            ("analysis_source = \"a.mp4\"", "cameras[0].analysis_source", "both be RTSP or both files"),
        ] {
            let f = write(d.path(), "bad.toml", &cam(extra));
            let e = Pipeline::load(&f).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(problem), "{extra}: {e}");
        }
        let f = write(
            d.path(),
            "twice.toml",
            &cam("username = \"ops\"\npassword_file = \"cam.pw\"")
                .replace("rtsp://10.0.0.5/Streaming/Channels/101", "rtsp://a:b@10.0.0.5/x"),
        );
        let e = Pipeline::load(&f).unwrap_err().to_string();
        assert!(e.contains("give them once") && !e.contains("S3cret-Pw"), "{e}");
        // [publish.auth]: two ways at once is refused, naming the section
        let f = write(
            d.path(),
            "nats.toml",
            &(cam("")
                + "[publish]\nnats_url = \"nats://t0k@127.0.0.1:4222\"\n[publish.auth]\nnkey_seed_file = \"cam.pw\"\n"),
        );
        let e = Pipeline::load(&f).unwrap_err().to_string();
        assert!(e.contains("publish.auth") && e.contains("not nkey_seed_file and credentials in nats_url"), "{e}");
        assert!(!e.contains("t0k"), "{e}");
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
            device_serial: None,
            national_device_id: None,
        };
        assert_eq!(r.compliance(day("2026-03-31")).kind, StatusKind::Enforcement);
        let c = r.compliance(day("2026-03-30"));
        assert_eq!(c.kind, StatusKind::Advisory);
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
