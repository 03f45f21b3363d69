//! Pipeline configuration: one TOML file per site (`pipelines/<site>.toml`), parsed once into these
//! types and validated. Every error names the file and the key (`cameras[1].rules[0].threshold`).
//! A key's default, range and documentation sit on its field ([`sections`], [`camera`], the rule
//! kinds in [`crate::rules`]); `vigil config defaults` prints them ([`docs`]).
//!
//! Relative paths inside a pipeline file (sources, privacy masks, model dir, data dir) are resolved
//! against the directory that holds the pipeline file, as Cargo does for `Cargo.toml`.

pub mod camera;
pub mod check;
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

use crate::rules::RuleEnv;
use crate::util::fsx;
use check::{Checks, Section};

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

/// The file's sections other than `[[cameras]]`, checked: what the stages read. Seconds read as
/// [`std::time::Duration`]s through each section's methods ([`ClipConfig::pre_roll`], …).
#[derive(Debug, Clone)]
pub struct Settings {
    pub site: SiteConfig,
    pub worker: WorkerConfig,
    pub models: ModelsConfig,
    pub analysis: AnalysisConfig,
    pub clip: ClipConfig,
    pub store: StoreConfig,
    pub publish: PublishConfig,
    pub signing: SigningConfig,
    pub retention: RetentionConfig,
    pub evidence: EvidenceConfig,
    pub control: ControlConfig,
    pub review: ReviewConfig,
    pub cluster: ClusterConfig,
}

/// The sections a pipeline file and [`Settings`] share, named once: a file splits into settings
/// and cameras, and joins back.
macro_rules! sections {
    ($($f:ident),*) => {
        impl PipelineFile {
            pub fn split(self) -> (Settings, Vec<CameraConfig>) {
                let PipelineFile { $($f,)* cameras } = self;
                (Settings { $($f),* }, cameras)
            }
        }

        impl Settings {
            pub fn join(self, cameras: Vec<CameraConfig>) -> PipelineFile {
                let Settings { $($f),* } = self;
                PipelineFile { $($f,)* cameras }
            }
        }
    };
}

sections!(site, worker, models, analysis, clip, store, publish, signing, retention, evidence, control, review, cluster);

/// The validated pipeline: everything resolved, nothing left to check at run time.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub file: PathBuf,
    pub settings: Settings,
    /// The cameras as the file states them (what a reload compares; the worker runs [`Pipeline::cameras`]).
    pub camera_configs: Vec<CameraConfig>,
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
        let raw: PipelineFile = key::parse(&text).map_err(|(key, problem)| ConfigErrors(vec![err(&key, problem)]))?;
        Self::validate(path, raw)
    }

    /// Validates a parsed pipeline file (what [`Pipeline::load`] does after parsing): the ranges
    /// every key's schema states, each section's own checks, the checks that span two sections,
    /// then each camera.
    pub fn validate(path: &Path, raw: PipelineFile) -> Result<Pipeline, ConfigErrors> {
        let mut c = Checks::new(path);
        // ranges and lengths from the schema (rules are checked per camera below)
        for (key, problem) in crate::util::ranges::check(&raw) {
            if !key.contains(".rules[") {
                c.error(&key, problem);
            }
        }
        let sections: [&dyn Section; 8] =
            [&raw.site, &raw.worker, &raw.analysis, &raw.evidence, &raw.signing, &raw.store, &raw.publish, &raw.review];
        for s in sections {
            s.check(&mut c);
        }
        if raw.cluster.enabled && raw.publish.nats_url.is_none() {
            c.error("cluster.enabled", "workers share cameras through NATS KV leases: set publish.nats_url");
        }
        if raw.cameras.is_empty() {
            c.error("cameras", "no camera configured ([[cameras]])");
        }
        // the object model's class names, for the object rules' classes
        let wants_objects = raw.cameras.iter().any(|c| c.rules.iter().any(|r| r.needs().objects));
        let labels =
            match wants_objects.then(|| crate::detect::read_labels(&c.resolve(&raw.models.dir), &raw.models.objects)) {
                Some(Err(e)) => {
                    c.error("models.objects", format!("{e:#}"));
                    None
                }
                other => other.and_then(Result::ok),
            };
        // and the other object models rules name (`detector`), for theirs
        let detectors = detector_labels(
            &c.resolve(&raw.models.dir),
            &named_detectors(raw.cameras.iter().flat_map(|c| c.rules.iter()), &raw.models.objects),
        );
        let env = RuleEnv {
            object_labels: labels.as_deref(),
            detectors: Some(&detectors),
            gate: raw.analysis.gate,
            gate_recheck_s: raw.analysis.gate_recheck_s,
            dirty_head: raw.models.dirty().is_some(),
            attribute_heads: None,
        };
        let mut seen = std::collections::HashSet::new();
        let mut cameras = Vec::new();
        for (i, cam) in raw.cameras.iter().enumerate() {
            if !cam.id.is_empty() && !seen.insert(cam.id.clone()) {
                c.error(&format!("cameras[{i}].id"), format!("camera id {:?} is used twice", cam.id));
            }
            cameras.push(cam.resolve(i, &env, &mut c));
            // an attribute head a rule names must be there, whole (its manifest's hash)
            for (j, r) in cam.rules.iter().enumerate() {
                if let Some(h) = r.attribute_head().filter(|h| crate::rules::valid_id(h))
                    && let Err(e) = crate::detect::FittedHead::load(&c.resolve(&raw.models.dir), h)
                {
                    c.error(&format!("cameras[{i}].rules[{j}].head"), format!("{e:#}"));
                }
            }
        }
        if !c.errors.is_empty() {
            return Err(ConfigErrors(c.errors));
        }
        let (settings, camera_configs) = raw.split();
        Ok(Pipeline {
            file: path.to_path_buf(),
            data_dir: c.resolve(&settings.worker.data_dir),
            models_dir: c.resolve(&settings.models.dir),
            key_path: c.resolve(&settings.signing.key),
            store_url: settings.store.resolved_url(&c),
            nats: settings.publish.endpoint(&c),
            cameras,
            utc_offset_s: settings.site.utc_offset_s(),
            warnings: c.warnings,
            camera_configs,
            settings,
        })
    }

    /// The file again, as parsed (for comparing two versions of it).
    pub fn as_file(&self) -> PipelineFile {
        self.settings.clone().join(self.camera_configs.clone())
    }

    /// The JetStream stream events go to.
    pub fn stream(&self) -> &str {
        self.settings.publish.stream.as_deref().unwrap_or("VIGIL")
    }

    /// Where clips are cut before they are spooled.
    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir.join("scratch")
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
        self.settings.worker.id.clone().unwrap_or_else(|| {
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
            detectors: None,
            gate: self.settings.analysis.gate,
            gate_recheck_s: self.settings.analysis.gate_recheck_s,
            dirty_head: self.settings.models.dirty().is_some(),
            attribute_heads: None,
        }
    }

    /// The object model's class names (for validating rule changes), if it has a manifest.
    pub fn object_labels(&self) -> Option<Vec<String>> {
        crate::detect::read_labels(&self.models_dir, &self.settings.models.objects).ok()
    }

    /// The review service's accounts file.
    pub fn review_users(&self) -> PathBuf {
        match &self.settings.review.users {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => self.file.parent().unwrap_or(Path::new(".")).join(p),
            None => self.data_dir.with_file_name("review-users.toml"),
        }
    }

    /// The review service's signing key.
    pub fn review_key(&self) -> PathBuf {
        let k = &self.settings.review.key;
        if k.is_absolute() { k.clone() } else { self.file.parent().unwrap_or(Path::new(".")).join(k) }
    }

    /// The models this pipeline's rules need.
    pub fn needs(&self) -> crate::rules::Needs {
        self.cameras.iter().fold(Default::default(), |n, c| n.union(c.rules.needs()))
    }

    /// The attribute heads the rules name (each once, sorted): loaded at start.
    pub fn attribute_heads(&self) -> Vec<String> {
        let heads: std::collections::BTreeSet<&str> =
            self.cameras.iter().flat_map(|c| c.rules.attribute_heads()).collect();
        heads.into_iter().map(str::to_string).collect()
    }

    /// The object models rules name beside `models.objects` (`detector`), each once.
    pub fn detectors(&self) -> Vec<String> {
        named_detectors(self.cameras.iter().flat_map(|c| c.rules.configs()), &self.settings.models.objects)
    }

    /// The class names of [`detectors`](Self::detectors), or why each cannot be read.
    pub fn detector_labels(&self) -> crate::rules::Detectors {
        detector_labels(&self.models_dir, &self.detectors())
    }
}

/// The distinct `detector`s of `rules` other than the pipeline's own object model.
fn named_detectors<'a>(rules: impl Iterator<Item = &'a crate::rules::RuleConfig>, own: &str) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> = rules.filter_map(|r| r.detector()).filter(|d| *d != own).collect();
    set.into_iter().map(str::to_string).collect()
}

/// The class names of the object models `ids` in `dir` (their manifests), or why not.
fn detector_labels(dir: &Path, ids: &[String]) -> crate::rules::Detectors {
    ids.iter()
        .filter(|d| crate::rules::valid_id(d))
        .map(|d| (d.clone(), crate::detect::read_labels(dir, d).map_err(|e| format!("{e:#}"))))
        .collect()
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
