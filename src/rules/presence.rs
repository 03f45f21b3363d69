//! Rules `object_present` (any of a detector's classes in the zone for `dwell_s`: an animal in the
//! kitchen, a person there out of hours) and `object_with_person` (an object a person holds or
//! covers: a phone in a food preparation zone). Both are configurations of the
//! [`objects`](super::objects) machinery: one item per episode, an episode being the class seen
//! anywhere in the zone within `episode_gap_s`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::objects::{EpisodeScope, Filter, Keys, PERSON, Spec};
use super::{LegalBasis, RiskTier, RuleEnv};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `kind = "object_present"`: any of the object model's `classes` in the zone for `dwell_s`.
/// With the vendored COCO detector: animals (`cat`, `dog`, `bird`; COCO's `mouse` is a computer
/// mouse, not a rodent, and is refused), or `person` with `working_hours` (someone in the kitchen
/// out of hours).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectPresentRule {
    /// Rule id (unique per camera; used in KV keys and events).
    #[default("object_present".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// The object model's class names that count. Default: animals.
    #[default(strings(&["cat", "dog", "bird"]))]
    #[schemars(length(min = 1, max = 80))]
    pub classes: Vec<String>,
    /// The object model these classes are of: a detector the site brings (`models/<id>.toml`, a
    /// rodent or cigarette detector trained elsewhere), beside the pipeline's own. Default: the
    /// pipeline's object model (`models.objects`). Loaded at start: naming another needs a restart.
    #[schemars(length(min = 1, max = 64))]
    pub detector: Option<String>,
    /// Object detector score threshold (NanoDet; 0.35 is upstream's demo value).
    #[default(0.35)]
    #[schemars(range(min = 0, max = 1))]
    pub threshold: f64,
    /// Objects whose box is smaller than this (shorter side, analysis-frame pixels) are ignored.
    #[default(8.0)]
    #[schemars(range(min = 0, max = 4096))]
    pub min_box_px: f64,
    /// How long an object must be seen in the zone before it fires (once per episode), seconds.
    #[default(2.0)]
    #[schemars(range(min = 0, max = 604800))]
    pub dwell_s: f64,
    /// An object not seen for longer than this is gone (its dwell starts again), seconds; at
    /// least twice `analysis.gate_recheck_s` with gating on.
    #[default(10.0)]
    #[schemars(range(min = 0.5, max = 3600))]
    pub max_gap_s: f64,
    /// After a fire, an object of the same class seen anywhere in the zone within this long after
    /// the last sighting is the same episode: it does not fire again. Seconds.
    #[default(300.0)]
    #[schemars(range(min = 0, max = 604800))]
    pub episode_gap_s: f64,
    /// Polygon in normalised [0,1] coordinates; an object counts when its centre is inside.
    /// Default: the whole frame.
    #[schemars(length(max = 256))]
    pub zone: Option<Vec<[f64; 2]>>,
    /// Site-local hours in which the rule applies, "HH:MM-HH:MM" (may wrap midnight). Default:
    /// always.
    #[schemars(length(max = 11))]
    pub hours: Option<String>,
    /// The site's working hours, "HH:MM-HH:MM": the rule applies only outside them (a person in
    /// the kitchen out of hours). Not with `hours`.
    #[schemars(length(max = 11))]
    pub working_hours: Option<String>,
    /// Severity written into events ("minor", "major", ...).
    #[default("major".to_string())]
    #[schemars(length(min = 1, max = 32))]
    pub severity: String,
    /// Risk tier written into events and shown in the review queue: "immediate", "deadline" (fix
    /// by a deadline) or "routine". Default: immediate (an animal where food is handled).
    #[default(RiskTier::Immediate)]
    pub tier: RiskTier,
    /// The legal basis written into events and manifests: `{ regulation = "…", article = "…" }`.
    /// Default: Food Safety Law art. 33(1)(1) (premises kept clean and away from sources of
    /// contamination); set the article your regulator cites for the classes you chose.
    #[default(LegalBasis::food_safety_law("第三十三条第一款第（一）项"))]
    pub legal_basis: LegalBasis,
}

impl ObjectPresentRule {
    fn keys(&self) -> Keys<'_> {
        Keys {
            id: &self.id,
            classes: &self.classes,
            detector: self.detector.as_deref(),
            threshold: self.threshold,
            min_box_px: self.min_box_px,
            dwell_s: self.dwell_s,
            max_gap_s: self.max_gap_s,
            episode_gap_s: self.episode_gap_s,
            zone: &self.zone,
            hours: self.hours.as_deref(),
            working_hours: self.working_hours.as_deref(),
        }
    }

    pub(super) fn check(&self, env: &RuleEnv, p: &mut dyn FnMut(&str, String)) {
        self.keys().check(env, p);
    }

    pub(super) fn spec(&self) -> Spec {
        self.keys().spec(EpisodeScope::Zone, Filter::None)
    }
}

/// `kind = "object_with_person"`: an object of `classes` that a person holds or stands over (at
/// least `overlap` of its box inside a person's box) in the zone for `dwell_s`: a phone in a food
/// preparation zone.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectWithPersonRule {
    /// Rule id (unique per camera; used in KV keys and events).
    #[default("object_with_person".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// The object model's class names that count when held. Default: a mobile phone.
    #[default(strings(&["cell phone"]))]
    #[schemars(length(min = 1, max = 80))]
    pub classes: Vec<String>,
    /// Object detector score threshold for the objects.
    #[default(0.35)]
    #[schemars(range(min = 0, max = 1))]
    pub threshold: f64,
    /// Object detector score threshold for the persons.
    #[default(0.35)]
    #[schemars(range(min = 0, max = 1))]
    pub person_threshold: f64,
    /// The share of the object's box a person's box must cover (0.5: at least half).
    #[default(0.5)]
    #[schemars(range(min = 0.01, max = 1))]
    pub overlap: f64,
    /// Objects whose box is smaller than this (shorter side, analysis-frame pixels) are ignored.
    #[default(4.0)]
    #[schemars(range(min = 0, max = 4096))]
    pub min_box_px: f64,
    /// How long the object must be held in the zone before it fires (once per episode), seconds.
    #[default(3.0)]
    #[schemars(range(min = 0, max = 604800))]
    pub dwell_s: f64,
    /// An object not seen for longer than this is gone, seconds; at least twice
    /// `analysis.gate_recheck_s` with gating on.
    #[default(5.0)]
    #[schemars(range(min = 0.5, max = 3600))]
    pub max_gap_s: f64,
    /// After a fire, the same class held anywhere in the zone within this long after the last
    /// sighting is the same episode: it does not fire again. Seconds.
    #[default(60.0)]
    #[schemars(range(min = 0, max = 604800))]
    pub episode_gap_s: f64,
    /// Polygon in normalised [0,1] coordinates (the food preparation area); the object counts when
    /// its centre is inside. Default: the whole frame.
    #[schemars(length(max = 256))]
    pub zone: Option<Vec<[f64; 2]>>,
    /// Site-local hours in which the rule applies, "HH:MM-HH:MM" (may wrap midnight). Default:
    /// always.
    #[schemars(length(max = 11))]
    pub hours: Option<String>,
    /// The site's working hours, "HH:MM-HH:MM": the rule applies only outside them. Not with
    /// `hours`.
    #[schemars(length(max = 11))]
    pub working_hours: Option<String>,
    /// Severity written into events ("minor", "major", ...).
    #[default("minor".to_string())]
    #[schemars(length(min = 1, max = 32))]
    pub severity: String,
    /// Risk tier written into events and shown in the review queue. Default: routine (a reminder
    /// of personal hygiene).
    #[default(RiskTier::Routine)]
    pub tier: RiskTier,
    /// The legal basis written into events and manifests. Default: Food Safety Law art.
    /// 33(1)(8) (personal hygiene of staff handling food).
    #[default(LegalBasis::food_safety_law("第三十三条第一款第（八）项"))]
    pub legal_basis: LegalBasis,
}

impl ObjectWithPersonRule {
    fn keys(&self) -> Keys<'_> {
        Keys {
            id: &self.id,
            classes: &self.classes,
            detector: None,
            threshold: self.threshold,
            min_box_px: self.min_box_px,
            dwell_s: self.dwell_s,
            max_gap_s: self.max_gap_s,
            episode_gap_s: self.episode_gap_s,
            zone: &self.zone,
            hours: self.hours.as_deref(),
            working_hours: self.working_hours.as_deref(),
        }
    }

    pub(super) fn check(&self, env: &RuleEnv, p: &mut dyn FnMut(&str, String)) {
        self.keys().check(env, p);
        if let Some(labels) = env.object_labels
            && !labels.iter().any(|l| l == PERSON)
        {
            p("", format!("the object model has no {PERSON:?} class, which this rule needs"));
        }
    }

    pub(super) fn spec(&self) -> Spec {
        self.keys().spec(
            EpisodeScope::Zone,
            Filter::HeldBy { person_threshold: self.person_threshold as f32, overlap: self.overlap as f32 },
        )
    }
}
