//! Rule `utensils_left`: objects of the configured classes (cups, bowls, cutlery …) whose centre
//! lies in the zone, tracked per object; one that has stayed for `dwell_s` fires once (the
//! [`objects`](super::objects) machinery). One object left in one place is one episode and one
//! item: if its track breaks (a person stood in front of it longer than `max_gap_s`) and an object
//! of the same class is seen again at the same place within `episode_gap_s`, it is the same object
//! and does not fire again. With `hours`, dwell only counts inside those site-local hours; with
//! `require_dirty`, only objects the clean/dirty head calls dirty count.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::RuleEnv;
use super::objects::{EpisodeScope, Filter, Keys, Spec};

fn default_classes() -> Vec<String> {
    ["cup", "bowl", "fork", "knife", "spoon", "bottle", "wine glass"].iter().map(|s| s.to_string()).collect()
}

/// `kind = "utensils_left"`: cups, bowls, cutlery, bottles and glasses left on a surface that
/// must be clear.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct UtensilsRule {
    /// Rule id (unique per camera; used in KV keys and events).
    #[default("utensils_left".to_string())]
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// COCO class names that count (the object model's labels).
    #[default(default_classes())]
    #[schemars(length(min = 1, max = 80))]
    pub classes: Vec<String>,
    /// Object detector score threshold (NanoDet; 0.35 is upstream's demo value).
    #[default(0.35)]
    #[schemars(range(min = 0, max = 1))]
    pub threshold: f64,
    /// Objects whose box is smaller than this (shorter side, analysis-frame pixels) are ignored.
    #[default(8.0)]
    #[schemars(range(min = 0, max = 4096))]
    pub min_box_px: f64,
    /// How long an object must stay in the zone before it fires (once per episode), seconds.
    #[default(600.0)]
    #[schemars(range(min = 1, max = 604800))]
    pub dwell_s: f64,
    /// An object not seen for longer than this is gone (a new one if it comes back), seconds; at
    /// least twice `analysis.gate_recheck_s` with gating on.
    #[default(10.0)]
    #[schemars(range(min = 0.5, max = 3600))]
    pub max_gap_s: f64,
    /// An object that fired, seen again at the same place (same class, boxes overlapping by IoU
    /// ≥ 0.3) within this long after it was last seen, is the same object in the same episode:
    /// it does not fire again. Longer away, it is a new episode. Seconds.
    #[default(300.0)]
    #[schemars(range(min = 0, max = 604800))]
    pub episode_gap_s: f64,
    /// Polygon in normalised [0,1] coordinates (the must-be-clear surface); an object counts when
    /// its centre is inside. Default: the whole frame.
    #[schemars(length(max = 256))]
    pub zone: Option<Vec<[f64; 2]>>,
    /// Count only objects the clean/dirty head (`models.dirty_head`) calls dirty: the
    /// regulation is about utensils not washed, not about any cup left out. Off by default: the
    /// head is fitted on 26 photos of plates (see the docs), not on counters.
    #[default(false)]
    pub require_dirty: bool,
    /// With `require_dirty`: the head's dirty probability at or above which an object counts.
    #[default(0.5)]
    #[schemars(range(min = 0, max = 1))]
    pub dirty_threshold: f64,
    /// Site-local hours in which the rule applies, "HH:MM-HH:MM" (may wrap midnight, e.g.
    /// "22:00-06:00"). Default: always.
    #[schemars(length(max = 11))]
    pub hours: Option<String>,
    /// Severity written into events ("minor", "major", ...).
    #[default("minor".to_string())]
    #[schemars(length(min = 1, max = 32))]
    pub severity: String,
    /// Risk tier written into events and shown in the review queue: "immediate", "deadline" (fix
    /// by a deadline) or "routine". Default: fix by a deadline (unwashed tableware is to be put right within a set time).
    #[default(super::RiskTier::Deadline)]
    pub tier: super::RiskTier,
    /// The legal basis written into events and manifests: `{ regulation = "…", article = "…" }`.
    /// Default: Food Safety Law art. 33(1)(5) (tableware and containers washed and disinfected
    /// before use).
    #[default(super::LegalBasis::food_safety_law("第三十三条第一款第（五）项"))]
    pub legal_basis: super::LegalBasis,
}

impl UtensilsRule {
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
            working_hours: None,
        }
    }

    pub(super) fn check(&self, env: &RuleEnv, p: &mut dyn FnMut(&str, String)) {
        self.keys().check(env, p);
        if self.require_dirty && !env.dirty_head {
            p("require_dirty", "needs a clean/dirty head, but models.dirty_head is \"none\"".into());
        }
    }

    pub(super) fn spec(&self) -> Spec {
        let filter = if self.require_dirty { Filter::Dirty(self.dirty_threshold as f32) } else { Filter::None };
        self.keys().spec(EpisodeScope::Place, filter)
    }
}
