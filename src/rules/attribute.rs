//! Rule `attribute_missing`: a person in the zone whose crop (the whole person, the upper body or
//! the head) a fitted attribute head calls missing its attribute — a chef hat, work clothes,
//! gloves — for `dwell_s`. The head is fitted from a site's labelled crops by `vigil fit --kind
//! attribute --name NAME --crops DIR` (`DIR/with_NAME/`, `DIR/without_NAME/`), on the same
//! backbone features as the no-mask and clean/dirty heads. A configuration of the
//! [`objects`](super::objects) machinery on the detector's persons: one item per episode, an
//! episode being a person missing it anywhere in the zone within `episode_gap_s`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::objects::{EpisodeScope, Filter, Keys, PERSON, Part, Spec};
use super::{LegalBasis, RiskTier, RuleEnv};

/// `kind = "attribute_missing"`: a person without the attribute its fitted head judges, in the
/// zone for `dwell_s`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct AttributeMissingRule {
    /// Rule id (unique per camera; used in KV keys and events).
    #[default("attribute_missing".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// The fitted attribute head (`models/<head>.toml`, written by `vigil fit --kind attribute`),
    /// e.g. "chef-hat-attribute-head". Loaded at start: naming another one needs a restart.
    #[schemars(length(min = 1, max = 64))]
    pub head: String,
    /// The crop of the person the head judges: "person" (the whole box: work clothes), "upper"
    /// (its top half) or "head" (a hat, a mask). Use the part the head's crops show.
    #[default(Part::Head)]
    pub part: Part,
    /// Object detector score threshold for the persons.
    #[default(0.35)]
    #[schemars(range(min = 0, max = 1))]
    pub threshold: f64,
    /// The head's probability that the attribute is missing at or above which a person counts.
    #[default(0.5)]
    #[schemars(range(min = 0, max = 1))]
    pub missing_threshold: f64,
    /// Persons whose box is smaller than this (shorter side, analysis-frame pixels) are ignored:
    /// too small to judge (measured: at 24 px, small passers-by in a street of masked people
    /// raised a false event; at 40 none, and no labelled violation was lost).
    #[default(40.0)]
    #[schemars(range(min = 0, max = 4096))]
    pub min_box_px: f64,
    /// How long a person must be seen without it in the zone before it fires (once per episode),
    /// seconds.
    #[default(2.0)]
    #[schemars(range(min = 0, max = 604800))]
    pub dwell_s: f64,
    /// A person not seen (without it) for longer than this is gone, seconds; at least twice
    /// `analysis.gate_recheck_s` with gating on.
    #[default(5.0)]
    #[schemars(range(min = 0.5, max = 3600))]
    pub max_gap_s: f64,
    /// After a fire, a person without it seen anywhere in the zone within this long after the
    /// last sighting is the same episode: it does not fire again. Seconds.
    #[default(300.0)]
    #[schemars(range(min = 0, max = 604800))]
    pub episode_gap_s: f64,
    /// Polygon in normalised [0,1] coordinates (the food preparation area); a person counts when
    /// the centre of their box is inside. Default: the whole frame.
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
    /// Risk tier written into events and shown in the review queue. Default: routine (Hubei's
    /// platform files work clothes and gloves as routine).
    #[default(RiskTier::Routine)]
    pub tier: RiskTier,
    /// The legal basis written into events and manifests. Default: Food Safety Law art.
    /// 33(1)(8) (staff wear clean work clothes and hats when handling food).
    #[default(LegalBasis::food_safety_law("第三十三条第一款第（八）项"))]
    pub legal_basis: LegalBasis,
}

impl AttributeMissingRule {
    fn keys<'a>(&'a self, persons: &'a [String]) -> Keys<'a> {
        Keys {
            id: &self.id,
            classes: persons,
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
        let persons = [PERSON.to_string()];
        let mut problems = Vec::new();
        self.keys(&persons).check(env, &mut |k, e| problems.push((k.to_string(), e)));
        for (k, e) in problems {
            // the only class is the detector's persons
            if k.starts_with("classes") {
                p("", format!("the object model has no {PERSON:?} class, which this rule needs"));
            } else {
                p(&k, e);
            }
        }
        if self.head.is_empty() {
            p("head", "name the fitted attribute head (models/<head>.toml, from `vigil fit --kind attribute`)".into());
        } else if !super::valid_id(&self.head) {
            p("head", format!("{:?} is not a model id (1-64 characters of A-Z a-z 0-9 - _)", self.head));
        } else if let Some(loaded) = env.attribute_heads
            && !loaded.contains(&self.head)
        {
            p("head", format!("attribute head {:?} is not loaded in this worker: needs a restart", self.head));
        }
    }

    pub(super) fn spec(&self) -> Spec {
        let persons = [PERSON.to_string()];
        self.keys(&persons).spec(
            EpisodeScope::Zone,
            Filter::Attribute { head: self.head.clone(), part: self.part, missing: self.missing_threshold as f32 },
        )
    }
}
