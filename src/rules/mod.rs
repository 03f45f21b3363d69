//! Rules stage: turns a camera's analysed frames into violations. Each rule kind is one file
//! ([`no_mask`], [`utensils`], [`presence`], [`attribute`]) that owns its configuration; the object kinds share
//! one machinery ([`objects`]: tracked objects, dwell, episodes, hours); this module is the
//! mechanism all kinds share — validation, the per-camera [`RuleSet`] with a motion
//! gate per rule ([`gate`]), and the typed [`Fire`] / [`Raised`] a rule hands on. Nothing outside
//! this folder names a rule kind.

pub mod attribute;
pub mod gate;
pub mod no_mask;
pub mod objects;
pub mod presence;
pub mod utensils;

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::detect::{Face, ModelPool, Object};
use crate::frame::{BBox, RgbFrame};
use crate::privacy::{NormPoint, Polygon};
use crate::telemetry::CameraStats;
use crate::track::{Track, Tracker};

pub use attribute::AttributeMissingRule;
pub use gate::{Look, MotionGate};
pub use no_mask::{NoMaskRule, Temporal};
pub use objects::{ObjectRule, Part, Schedule};
pub use presence::{ObjectPresentRule, ObjectWithPersonRule};
pub use utensils::UtensilsRule;

/// `[[cameras.rules]]`, selected by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleConfig {
    /// Staff without a face mask.
    NoMask(NoMaskRule),
    /// Utensils left on a surface that must be clear.
    UtensilsLeft(UtensilsRule),
    /// Any of the object model's classes in the zone (an animal; a person out of hours).
    ObjectPresent(ObjectPresentRule),
    /// An object a person holds (a phone in a food preparation zone).
    ObjectWithPerson(ObjectWithPersonRule),
    /// A person without an attribute a fitted head judges (a chef hat, work clothes).
    AttributeMissing(AttributeMissingRule),
}

/// The rule kinds, as written in configs, events and manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    NoMask,
    UtensilsLeft,
    ObjectPresent,
    ObjectWithPerson,
    AttributeMissing,
}

impl RuleKind {
    pub const ALL: [RuleKind; 5] = [
        RuleKind::NoMask,
        RuleKind::UtensilsLeft,
        RuleKind::ObjectPresent,
        RuleKind::ObjectWithPerson,
        RuleKind::AttributeMissing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RuleKind::NoMask => "no_mask",
            RuleKind::UtensilsLeft => "utensils_left",
            RuleKind::ObjectPresent => "object_present",
            RuleKind::ObjectWithPerson => "object_with_person",
            RuleKind::AttributeMissing => "attribute_missing",
        }
    }

    /// At most one rule of this kind per camera (the general kinds may have several: animals,
    /// and a person out of hours).
    pub fn one_per_camera(self) -> bool {
        matches!(self, RuleKind::NoMask | RuleKind::UtensilsLeft)
    }
}

/// How urgently a violation is to be dealt with, as the regional platforms sort them (Hubei's:
/// rodents immediate; smoking, open bins by a deadline; gloves routine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RiskTier {
    /// Deal with it at once.
    Immediate,
    /// Put right by a deadline.
    Deadline,
    /// Remind and check in the course of supervision.
    Routine,
}

impl RiskTier {
    pub const ALL: [RiskTier; 3] = [RiskTier::Immediate, RiskTier::Deadline, RiskTier::Routine];

    pub fn name(self) -> &'static str {
        match self {
            RiskTier::Immediate => "immediate",
            RiskTier::Deadline => "deadline",
            RiskTier::Routine => "routine",
        }
    }
}

/// Which models the rules of a pipeline need loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Face detector and mask classifier.
    pub faces: bool,
    /// COCO object detector.
    pub objects: bool,
}

impl Needs {
    pub fn any(self) -> bool {
        self.faces || self.objects
    }
    pub fn covers(self, other: Needs) -> bool {
        (self.faces || !other.faces) && (self.objects || !other.objects)
    }
    pub fn union(self, o: Needs) -> Needs {
        Needs { faces: self.faces || o.faces, objects: self.objects || o.objects }
    }
}

/// What validating a rule may look at besides the rule.
#[derive(Debug, Clone, Copy)]
pub struct RuleEnv<'a> {
    /// The object model's class names (`None`: not known, not checked).
    pub object_labels: Option<&'a [String]>,
    /// The class names of the other object models rules name (`detector`), or why they cannot be
    /// read (`None`: not known, not checked; a model missing from the map is not loaded).
    pub detectors: Option<&'a Detectors>,
    /// Motion gating on, and its recheck interval (the utensils rule's `max_gap_s` must cover it).
    pub gate: bool,
    pub gate_recheck_s: f64,
    /// A clean/dirty head is configured (`models.dirty_head` not "none").
    pub dirty_head: bool,
    /// The attribute heads loaded (`None`: not known yet, not checked: at start every head the
    /// rules name is loaded).
    pub attribute_heads: Option<&'a [String]>,
}

/// The class names of object models by id, or why they cannot be read.
pub type Detectors = std::collections::BTreeMap<String, Result<Vec<String>, String>>;

/// `(key, problem)`; the key relative to the rule list (`rules[0].threshold`).
pub type Problems = Vec<(String, String)>;

/// The same expression on every kind's configuration (each has the field or method).
macro_rules! each {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            RuleConfig::NoMask($r) => $e,
            RuleConfig::UtensilsLeft($r) => $e,
            RuleConfig::ObjectPresent($r) => $e,
            RuleConfig::ObjectWithPerson($r) => $e,
            RuleConfig::AttributeMissing($r) => $e,
        }
    };
}

impl RuleConfig {
    pub fn id(&self) -> &str {
        each!(self, r => &r.id)
    }

    pub fn kind(&self) -> RuleKind {
        match self {
            RuleConfig::NoMask(_) => RuleKind::NoMask,
            RuleConfig::UtensilsLeft(_) => RuleKind::UtensilsLeft,
            RuleConfig::ObjectPresent(_) => RuleKind::ObjectPresent,
            RuleConfig::ObjectWithPerson(_) => RuleKind::ObjectWithPerson,
            RuleConfig::AttributeMissing(_) => RuleKind::AttributeMissing,
        }
    }

    pub fn severity(&self) -> &str {
        each!(self, r => &r.severity)
    }

    pub fn tier(&self) -> RiskTier {
        each!(self, r => r.tier)
    }

    pub fn legal_basis(&self) -> &LegalBasis {
        each!(self, r => &r.legal_basis)
    }

    /// The rule's parameters as recorded in manifests and audit records (its table without
    /// `kind`).
    pub fn params(&self) -> serde_json::Value {
        each!(self, r => serde_json::to_value(r)).unwrap_or_default()
    }

    pub fn needs(&self) -> Needs {
        match self {
            RuleConfig::NoMask(r) => Needs { faces: true, objects: r.person_pass },
            _ => Needs { faces: false, objects: true },
        }
    }

    /// The attribute head the rule names (`attribute_missing`).
    pub fn attribute_head(&self) -> Option<&str> {
        match self {
            RuleConfig::AttributeMissing(r) => Some(&r.head),
            _ => None,
        }
    }

    /// An object kind in the terms of the machinery they share (`None`: `no_mask`).
    pub fn object_spec(&self) -> Option<objects::Spec> {
        match self {
            RuleConfig::NoMask(_) => None,
            RuleConfig::UtensilsLeft(r) => Some(r.spec()),
            RuleConfig::ObjectPresent(r) => Some(r.spec()),
            RuleConfig::ObjectWithPerson(r) => Some(r.spec()),
            RuleConfig::AttributeMissing(r) => Some(r.spec()),
        }
    }

    fn check(&self, env: &RuleEnv, p: &mut dyn FnMut(&str, String)) {
        match self {
            RuleConfig::NoMask(r) => r.check(p),
            RuleConfig::UtensilsLeft(r) => r.check(env, p),
            RuleConfig::ObjectPresent(r) => r.check(env, p),
            RuleConfig::ObjectWithPerson(r) => r.check(env, p),
            RuleConfig::AttributeMissing(r) => r.check(env, p),
        }
    }

    /// The object model an object rule names (`detector`; `None`: the pipeline's).
    pub fn detector(&self) -> Option<&str> {
        match self {
            RuleConfig::ObjectPresent(r) => r.detector.as_deref(),
            _ => None,
        }
    }

    fn build(&self, labels: &[String]) -> Box<dyn Rule> {
        match self {
            RuleConfig::NoMask(r) => Box::new(no_mask::NoMask::new(r.clone())),
            _ => Box::new(ObjectRule::new(self.clone(), labels)),
        }
    }
}

/// The regulation and article a rule enforces, as a case file cites it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalBasis {
    /// The regulation, e.g. "中华人民共和国食品安全法".
    #[schemars(length(min = 1, max = 256))]
    pub regulation: String,
    /// The article, e.g. "第三十三条第一款第（八）项".
    #[schemars(length(min = 1, max = 128))]
    pub article: String,
}

impl LegalBasis {
    pub fn food_safety_law(article: &str) -> LegalBasis {
        LegalBasis { regulation: "中华人民共和国食品安全法".into(), article: article.into() }
    }
}

impl std::fmt::Display for LegalBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "《{}》{}", self.regulation, self.article)
    }
}

/// What a manifest records of the rule that fired.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFacts {
    pub id: String,
    pub kind: RuleKind,
    pub severity: String,
    /// The risk tier (absent in manifests made before tiers existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<RiskTier>,
    /// Content revision of the rule configuration in force: first 16 hex digits of SHA-256 of the
    /// canonical JSON of `params`.
    pub revision: String,
    /// The rule's parameters in force (its `[[cameras.rules]]` table without `kind`).
    pub params: serde_json::Value,
    /// The legal basis of the rule (regulation and article); absent in manifests before v4,
    /// where it was free text when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<LegalBasisFact>,
}

/// A manifest's legal basis: structured (v4 on) or the free text of earlier manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LegalBasisFact {
    Structured(LegalBasis),
    Text(String),
}

impl std::fmt::Display for LegalBasisFact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LegalBasisFact::Structured(b) => b.fmt(f),
            LegalBasisFact::Text(t) => f.write_str(t),
        }
    }
}

impl RuleFacts {
    pub fn of(r: &RuleConfig) -> RuleFacts {
        let params = r.params();
        RuleFacts {
            id: r.id().into(),
            kind: r.kind(),
            severity: r.severity().into(),
            tier: Some(r.tier()),
            revision: revision_of(&params),
            legal_basis: Some(LegalBasisFact::Structured(r.legal_basis().clone())),
            params,
        }
    }
}

/// First 16 hex digits of SHA-256 of the canonical JSON of a rule's parameters.
pub fn revision_of(params: &serde_json::Value) -> String {
    crate::util::sha256_hex(&crate::util::jcs::canonical(params))[..16].to_string()
}

/// A camera's rules, validated ([`validate_rules`] is the only way to make one): the unit that
/// hot reload replaces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CameraRules(Vec<RuleConfig>);

impl CameraRules {
    pub fn configs(&self) -> &[RuleConfig] {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn needs(&self) -> Needs {
        self.0.iter().fold(Needs::default(), |n, r| n.union(r.needs()))
    }
    pub fn get(&self, id: &str) -> Option<&RuleConfig> {
        self.0.iter().find(|r| r.id() == id)
    }
    /// The attribute heads the rules name.
    pub fn attribute_heads(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(RuleConfig::attribute_head)
    }
}

/// A rule or camera id: 1-64 characters of `A-Z a-z 0-9 - _`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A zone as a polygon (`None`: the whole frame); checked by [`validate_zone`].
pub fn zone_polygon(id: &str, pts: &Option<Vec<[f64; 2]>>) -> Option<Polygon> {
    let pts = pts.as_ref()?;
    Some(Polygon { name: format!("{id}.zone"), points: pts.iter().map(|p| NormPoint { x: p[0], y: p[1] }).collect() })
}

/// Checks a rule's zone as a privacy-mask polygon is checked.
pub fn validate_zone(id: &str, pts: &Option<Vec<[f64; 2]>>, p: &mut dyn FnMut(&str, String)) {
    if let Some(z) = zone_polygon(id, pts)
        && let Err(problem) = crate::privacy::validate_polygon(&z.points)
    {
        p("zone", format!("{problem} (a zone is in normalised [0,1] frame coordinates)"));
    }
}

/// Validates one camera's rules: what `Pipeline::load` and hot reload (file or NATS KV) both use.
pub fn validate_rules(rules: &[RuleConfig], env: &RuleEnv) -> Result<CameraRules, Problems> {
    let mut errors: Problems = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut kinds = std::collections::HashSet::new();
    for (j, rule) in rules.iter().enumerate() {
        let mut p = |f: &str, problem: String| {
            errors.push((if f.is_empty() { format!("rules[{j}]") } else { format!("rules[{j}].{f}") }, problem))
        };
        if !valid_id(rule.id()) {
            p("id", format!("{:?} must be 1-64 characters of A-Z a-z 0-9 - _", rule.id()));
        } else if !ids.insert(rule.id().to_string()) {
            p("id", format!("rule id {:?} is used twice on this camera", rule.id()));
        }
        if rule.kind().one_per_camera() && !kinds.insert(rule.kind()) {
            p("kind", format!("only one {} rule per camera", rule.kind().name()));
        }
        for (k, problem) in crate::util::ranges::check(rule) {
            p(&k, problem);
        }
        rule.check(env, &mut p);
    }
    if errors.is_empty() { Ok(CameraRules(rules.to_vec())) } else { Err(errors) }
}

/// One tracked detection in a violation, as reported in the event and manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    pub track_id: u64,
    /// Box in pixels: of the analysis frame in the rule, of the clip in events.
    #[serde(rename = "box")]
    pub bbox: BBox,
    /// "face", or the detector's class name ("cup", "cat", "cell phone", ...).
    pub label: String,
    /// Detector score.
    pub score: f32,
    /// no_mask: the classifier's no-mask probability, and hits in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_mask_prob: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// Object rules: seconds the object has been in the zone in the current dwell period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<f64>,
    /// utensils_left with `require_dirty`: the dirty head's probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_prob: Option<f32>,
    /// The detection that triggered the violation (others are context).
    pub trigger: bool,
}

/// A rule fired on a frame.
#[derive(Debug, Clone)]
pub struct Fire {
    pub pts: Duration,
    pub detections: Vec<Detection>,
    /// Stream times of the frames in which the triggering object was seen (its window).
    pub frames: Vec<Duration>,
    /// The trigger's measurement: no-mask probability, or dwell seconds.
    pub value: f64,
}

/// A fire with the facts of the rule that raised it: what the evidence stage needs of a rule.
#[derive(Debug, Clone)]
pub struct Raised {
    pub fire: Fire,
    pub rule: RuleFacts,
    pub zone: Option<Polygon>,
}

/// One analysed frame as the rules see it.
pub struct FrameCtx<'a> {
    pub frame: &'a RgbFrame,
    /// Wall-clock time of the frame.
    pub wall: DateTime<Utc>,
    /// The site's offset from UTC, seconds (schedules are site-local).
    pub utc_offset_s: i32,
    /// Which model copy this camera prefers.
    pub model_hint: usize,
}

impl FrameCtx<'_> {
    /// Site-local minute of the day.
    pub fn local_minute(&self) -> u32 {
        ((self.wall.timestamp() + self.utc_offset_s as i64).rem_euclid(86400) / 60) as u32
    }
}

/// Buffers the rules of one camera share from frame to frame, so that inference allocates
/// nothing once they have grown.
pub struct Scratch {
    pub faces: Vec<Face>,
    /// A second pass's faces before they join `faces` (`tile_pass`, `person_pass`).
    pub more_faces: Vec<Face>,
    pub boxes: Vec<BBox>,
    pub probs: Vec<f32>,
    pub objects: Vec<Object>,
    /// The object detector's output on this frame's region, every class above a floor: what the
    /// object rules of one camera share (one detector run per frame, not one per rule).
    pub detected: Vec<Object>,
    /// What `detected` is of: frame time, region, score floor, detector (its index in the set).
    pub detected_for: Option<(Duration, BBox, f32, usize)>,
}

impl Default for Scratch {
    fn default() -> Self {
        // sized up front for the detectors' candidates before NMS
        Scratch {
            faces: Vec::with_capacity(256),
            more_faces: Vec::with_capacity(256),
            boxes: Vec::with_capacity(64),
            probs: Vec::with_capacity(64),
            objects: Vec::with_capacity(1024),
            detected: Vec::with_capacity(1024),
            detected_for: None,
        }
    }
}

/// A rule's state on one camera.
pub trait Rule: Send {
    fn config(&self) -> RuleConfig;
    /// The zone polygon (`None`: the whole frame).
    fn zone(&self) -> Option<&Polygon>;
    /// A detection is being confirmed over several frames: inference must not be skipped.
    fn wants_every_frame(&self) -> bool {
        false
    }
    /// Runs the rule's inference on its region of the frame (or the part `look` names, if the
    /// rule can look at part of it) and feeds its state.
    fn infer(&mut self, f: &FrameCtx, look: Look, models: &ModelPool, scratch: &mut Scratch) -> Result<Option<Fire>>;
    /// Hot reload: takes new parameters of the same kind, keeping its tracks. False when `cfg`
    /// is another kind.
    fn reconfigure(&mut self, cfg: &RuleConfig) -> bool;
    /// Tracks matched by a detection in the last inferred frame.
    fn matched_now(&self) -> usize;
}

/// Inference region for a rule: its zone's bounding box with a 10 % margin, or the whole frame.
pub fn roi(zone: Option<&Polygon>, w: u32, h: u32) -> BBox {
    zone.map(|z| z.bbox_px(w, h, 0.1)).unwrap_or(BBox { x1: 0.0, y1: 0.0, x2: w as f32, y2: h as f32 })
}

pub(crate) fn in_zone(zone: Option<&Polygon>, b: &BBox, w: u32, h: u32) -> bool {
    zone.is_none_or(|z| z.contains_center(b, w, h))
}

/// The tracks seen in this frame as detections of a violation: the common fields filled in,
/// `fill` adds the rule's own.
pub(crate) fn matched(
    tracker: &Tracker,
    trigger_id: u64,
    fill: impl Fn(&Track, Detection) -> Detection,
) -> Vec<Detection> {
    tracker
        .tracks
        .iter()
        .filter(|t| t.matched)
        .map(|t| {
            let d = Detection {
                track_id: t.id,
                bbox: t.bbox,
                label: String::new(),
                score: t.score,
                no_mask_prob: None,
                hits: None,
                window: None,
                dwell_s: None,
                dirty_prob: None,
                trigger: t.id == trigger_id,
            };
            fill(t, d)
        })
        .collect()
}

/// Motion gating settings shared by a camera's rules.
#[derive(Debug, Clone, Copy)]
pub struct GateSettings {
    pub enabled: bool,
    /// A rule that can look at part of its region does so on frames inferred for motion.
    pub regions: bool,
    pub min_change: f32,
    pub recheck: Duration,
}

/// The rules of one camera, each with its motion gate.
pub struct RuleSet {
    rules: Vec<(Box<dyn Rule>, MotionGate)>,
    scratch: Scratch,
    gate: GateSettings,
    labels: Vec<String>,
}

impl RuleSet {
    pub fn new(r: &CameraRules, gate: GateSettings, labels: &[String]) -> RuleSet {
        let mut s = RuleSet { rules: Vec::new(), scratch: Scratch::default(), gate, labels: labels.to_vec() };
        s.apply(r);
        s
    }

    fn new_gate(&self) -> MotionGate {
        let mut g = MotionGate::new(self.gate.min_change, self.gate.recheck);
        g.enabled = self.gate.enabled;
        g.regions = self.gate.regions;
        g
    }

    /// Applies a (re)configuration between two frames, all of it at once: rules whose id and
    /// kind stay keep their tracks and gates; others start fresh; removed rules end.
    pub fn apply(&mut self, r: &CameraRules) {
        let mut old = std::mem::take(&mut self.rules);
        for cfg in r.configs() {
            match old.iter().position(|(x, _)| x.config().id() == cfg.id()) {
                Some(i) => {
                    let (mut rule, g) = old.swap_remove(i);
                    if rule.reconfigure(cfg) {
                        self.rules.push((rule, g));
                    } else {
                        self.rules.push((cfg.build(&self.labels), self.new_gate()));
                    }
                }
                None => self.rules.push((cfg.build(&self.labels), self.new_gate())),
            }
        }
    }

    pub fn configs(&self) -> Vec<RuleConfig> {
        self.rules.iter().map(|(r, _)| r.config()).collect()
    }

    /// Runs each rule's inference on the frame (unless its motion gate skips it); returns what
    /// fired. Counts inferred and gated regions in `stats`.
    pub fn run(&mut self, f: &FrameCtx, models: &ModelPool, stats: &CameraStats) -> Result<Vec<Raised>> {
        let (w, h) = (f.frame.width, f.frame.height);
        let mut raised = Vec::new();
        for (rule, gate) in &mut self.rules {
            let region = roi(rule.zone(), w, h);
            let look = gate.look(f.frame, region, rule.wants_every_frame());
            if look == Look::Skip {
                stats.gated.inc();
                continue;
            }
            stats.inferred.inc();
            if matches!(look, Look::Part { .. }) {
                stats.inferred_part.inc();
            }
            let fired = rule.infer(f, look, models, &mut self.scratch)?;
            stats.detections.inc_by(rule.matched_now() as u64);
            if let Some(fire) = fired {
                let cfg = rule.config();
                raised.push(Raised { fire, rule: RuleFacts::of(&cfg), zone: rule.zone().cloned() });
            }
        }
        Ok(raised)
    }
}
