//! `vigil eval-clips`: event-level precision and recall of the full rules (tracking, temporal
//! rule, cooldown, dwell) on labelled clips, through the same analysis code the worker runs.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Pipeline;
use crate::control::analysis::{Analyser, AnalyserConfig};
use crate::health::TamperConfig;
use crate::rules::{GateSettings, RuleConfig, RuleEnv, RuleKind, Temporal, validate_rules};
use crate::telemetry::CameraStats;

/// A labelled clip: `tests/labels/<name>.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipLabel {
    /// Relative to the repository root, or `shared:<path>` under the shared data folder.
    pub clip: String,
    /// The rule evaluated on it: `kind` and any keys of `[[cameras.rules]]`; keys not named come
    /// from the pipeline's first rule of that kind (else the rule defaults).
    pub rule: toml::Table,
    /// Intervals (stream seconds) during which the rule should fire; none: it should not fire.
    #[serde(default)]
    pub violations: Vec<Interval>,
}

#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    pub from_s: f64,
    pub to_s: f64,
}

/// Event-level result of one rule variant over the labelled clips.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct EventScore {
    pub variant: String,
    pub intervals: u32,
    pub detected: u32,
    pub fires: u32,
    pub false_fires: u32,
    pub inferred: u64,
    pub gated: u64,
    /// Inferences on a motion part of the region.
    pub partial: u64,
    /// Detections the rule tracked, over all inferred frames.
    pub detections: u64,
    /// Analysed frames and the analysis time they took (mask, gate, inference, rules), s.
    pub frames: u64,
    pub analysis_s: f64,
    pub per_clip: Vec<(String, Vec<f64>)>,
    /// The same counts per rule kind.
    pub by_kind: std::collections::BTreeMap<&'static str, KindScore>,
    /// The clips' video files: bytes and seconds (the bitrate an encode reached).
    pub video_bytes: u64,
    pub video_s: f64,
}

/// Event counts of one rule kind over its labelled clips.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct KindScore {
    pub clips: u32,
    pub intervals: u32,
    pub detected: u32,
    pub fires: u32,
    pub false_fires: u32,
}

impl EventScore {
    pub fn recall(&self) -> f64 {
        if self.intervals == 0 { 1.0 } else { self.detected as f64 / self.intervals as f64 }
    }
    pub fn precision(&self) -> f64 {
        if self.fires == 0 { 1.0 } else { (self.fires - self.false_fires) as f64 / self.fires as f64 }
    }
}

/// A fire counts for an interval when it comes between its start and 3 s after its end (the
/// temporal rule needs a few frames).
const FIRE_LATENESS_S: f64 = 3.0;

/// The label's rule over the pipeline's first rule of the same kind: keys the label names win.
fn label_rule(f: &Path, label: &toml::Table, p: &Pipeline) -> Result<RuleConfig> {
    let kind =
        label.get("kind").and_then(|k| k.as_str()).with_context(|| format!("{}: [rule] has no kind", f.display()))?;
    let base = p.camera_configs.iter().flat_map(|c| &c.rules).find(|r| {
        toml::Table::try_from(r).ok().and_then(|t| t.get("kind").and_then(|k| k.as_str().map(|s| s == kind)))
            == Some(true)
    });
    let mut t = match base {
        Some(r) => toml::Table::try_from(r)?,
        None => toml::Table::new(),
    };
    t.extend(label.iter().map(|(k, v)| (k.clone(), v.clone())));
    t.try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("{}: [rule]: {}", f.display(), e.message()))
}

/// The labels of a folder with the rule each evaluates, and one copy of the models they need.
struct Prepared {
    labelled: Vec<(PathBuf, ClipLabel, RuleConfig)>,
    pool: crate::detect::ModelPool,
    label_names: Vec<String>,
}

fn prepare(labels: &Path, p: &Pipeline) -> Result<Prepared> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(labels)
        .with_context(|| format!("labels folder {}", labels.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut labelled = Vec::new();
    for f in &files {
        let text = crate::util::fsx::read_text(f, crate::util::fsx::limits::PIPELINE)?;
        let label: ClipLabel =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", f.display(), e.message()))?;
        let base = label_rule(f, &label.rule, p)?;
        labelled.push((f.clone(), label, base));
    }
    let o = crate::detect::RuntimeOptions::default();
    let (m, dir) = (&p.settings.models, &p.models_dir);
    let heads: std::collections::BTreeSet<&str> = labelled.iter().filter_map(|l| l.2.attribute_head()).collect();
    let set = crate::detect::ModelSet {
        no_mask: Some(crate::detect::Models::load(dir, &m.face, &m.mask, m.head(), &o)?),
        objects: Some(crate::detect::ObjectDetector::load(dir, &m.objects, &o)?),
        dirty: m.dirty().map(|h| crate::detect::load_head(dir, h, &o)).transpose()?,
        attributes: heads.iter().map(|h| crate::detect::load_head(dir, h, &o)).collect::<Result<_>>()?,
        detectors: p
            .detectors()
            .iter()
            .map(|d| crate::detect::ObjectDetector::load(dir, d, &o))
            .collect::<Result<_>>()?,
    };
    let label_names = set.objects.as_ref().map(|d| d.labels().to_vec()).unwrap_or_default();
    Ok(Prepared { labelled, pool: crate::detect::ModelPool::new(vec![set]), label_names })
}

/// The clip a label names: `shared:<path>` under `data`, else under `repo`; missing is an error.
fn clip_path(f: &Path, label: &ClipLabel, data: &Path, repo: &Path) -> Result<PathBuf> {
    let path = match label.clip.strip_prefix("shared:") {
        Some(rel) => data.join(rel),
        None => repo.join(&label.clip),
    };
    if !path.is_file() {
        anyhow::bail!(
            "{}: clip {} is missing (shared data is expected at {})",
            f.display(),
            path.display(),
            data.display()
        );
    }
    Ok(path)
}

/// Runs the full rule (detection, tracking, temporal rule, cooldown/dwell) over each labelled
/// clip's analysis frames for each variant, as the pipeline `p` configures it: its models (and
/// fitted head), analysis rate and width, motion gating, and its rules' parameters under the
/// label's; scores fires against the labelled intervals. The first variant is the pipeline as
/// configured; the others switch gating and the temporal rule.
pub fn eval_clips(labels: &Path, data: &Path, p: &Pipeline, repo: &Path) -> Result<Vec<EventScore>> {
    let Prepared { labelled, pool, label_names } = prepare(labels, p)?;
    let (fps, width) = (p.settings.analysis.fps, p.settings.analysis.width);
    let configured_gate = p.settings.analysis.gate_settings();
    // (name, gating, motion regions, temporal rule; None: as the pipeline's rule says)
    let configured = format!("as configured ({})", p.file.display());
    let variants: [(&str, bool, bool, Option<Temporal>); 6] = [
        (&configured, configured_gate.enabled, configured_gate.regions, None),
        ("n_of_m, gating on, motion regions", true, true, Some(Temporal::NOfM)),
        ("n_of_m, gating on, whole region", true, false, Some(Temporal::NOfM)),
        ("n_of_m, gating off", false, false, Some(Temporal::NOfM)),
        ("median, gating on, motion regions", true, true, Some(Temporal::Median)),
        ("median, gating off", false, false, Some(Temporal::Median)),
    ];
    let mut scores: Vec<EventScore> =
        variants.iter().map(|v| EventScore { variant: v.0.into(), ..Default::default() }).collect();
    let bar = crate::util::progress::bar(labelled.len() as u64, "clips");
    for (f, label, base) in &labelled {
        bar.inc(1);
        let path = clip_path(f, label, data, repo)?;
        let frames = crate::ingest::analysis_frames(&path, fps, width)?;
        let name = f.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        // (gating, regions, temporal rule) → what that run gave: the temporal variants change
        // no_mask only, so an object rule runs once per gating setting
        let mut done: Vec<(RunKey, Run)> = Vec::new();
        for (k, &(_, gate, regions, temporal)) in variants.iter().enumerate() {
            let key = (gate, regions, if base.kind() == RuleKind::NoMask { temporal } else { None });
            let run = match done.iter().find(|(x, _)| *x == key) {
                Some((_, r)) => r.clone(),
                None => {
                    let r = run_clip(f, &name, &frames, base, temporal, gate, regions, p, &pool, &label_names)?;
                    done.push((key, r.clone()));
                    r
                }
            };
            let Run { fires, took, stats } = run;
            let s = &mut scores[k];
            add_run(s, base.kind(), &label.violations, &fires, took, stats, frames.len());
            s.per_clip.push((name.clone(), fires));
        }
    }
    bar.finish_and_clear();
    Ok(scores)
}

/// Each labelled clip as it is and re-encoded as each of `encodes` (into `work`), evaluated as
/// the pipeline is configured: the first score is the clips as they are, then one per encode. A
/// camera's codec must not decide whether a violation is seen.
pub fn eval_encodes(
    labels: &Path,
    data: &Path,
    p: &Pipeline,
    repo: &Path,
    encodes: &[crate::ingest::files::Encode],
    work: &Path,
) -> Result<Vec<EventScore>> {
    let Prepared { labelled, pool, label_names } = prepare(labels, p)?;
    let (fps, width) = (p.settings.analysis.fps, p.settings.analysis.width);
    let gate = p.settings.analysis.gate_settings();
    let mut scores: Vec<EventScore> = std::iter::once("as recorded".to_string())
        .chain(encodes.iter().map(|e| e.name()))
        .map(|variant| EventScore { variant, ..Default::default() })
        .collect();
    let bar = crate::util::progress::bar((labelled.len() * scores.len()) as u64, "clips × encodes");
    for (f, label, base) in &labelled {
        let path = clip_path(f, label, data, repo)?;
        let name = f.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        for (k, s) in scores.iter_mut().enumerate() {
            bar.inc(1);
            let file = match k {
                0 => path.clone(),
                _ => crate::ingest::files::transcode(&path, work, encodes[k - 1])?,
            };
            let frames = crate::ingest::analysis_frames(&file, fps, width)?;
            s.video_bytes += std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            s.video_s += frames.len() as f64 / fps;
            let Run { fires, took, stats } =
                run_clip(f, &name, &frames, base, None, gate.enabled, gate.regions, p, &pool, &label_names)?;
            add_run(s, base.kind(), &label.violations, &fires, took, stats, frames.len());
            s.per_clip.push((name.clone(), fires));
            if k > 0 {
                std::fs::remove_file(&file).ok();
            }
        }
    }
    bar.finish_and_clear();
    Ok(scores)
}

/// Adds one run's fires, counts and time to `s` (and to its rule kind's counts).
fn add_run(
    s: &mut EventScore,
    kind: RuleKind,
    violations: &[Interval],
    fires: &[f64],
    took: f64,
    stats: [u64; 4],
    frames: usize,
) {
    let before = (s.intervals, s.detected, s.fires, s.false_fires);
    score_clip(s, violations, fires);
    let k = s.by_kind.entry(kind.name()).or_default();
    k.clips += 1;
    k.intervals += s.intervals - before.0;
    k.detected += s.detected - before.1;
    k.fires += s.fires - before.2;
    k.false_fires += s.false_fires - before.3;
    s.inferred += stats[0];
    s.gated += stats[1];
    s.partial += stats[2];
    s.detections += stats[3];
    s.frames += frames as u64;
    s.analysis_s += took;
}

/// What makes two runs of a rule over a clip the same: gating, motion regions, temporal rule.
type RunKey = (bool, bool, Option<Temporal>);

/// One rule run over one clip's frames.
#[derive(Clone)]
struct Run {
    fires: Vec<f64>,
    took: f64,
    /// inferred, gated, inferred on a part, detections tracked.
    stats: [u64; 4],
}

#[allow(clippy::too_many_arguments)]
fn run_clip(
    f: &Path,
    name: &str,
    frames: &[crate::frame::RgbFrame],
    base: &RuleConfig,
    temporal: Option<Temporal>,
    gate: bool,
    regions: bool,
    p: &Pipeline,
    pool: &crate::detect::ModelPool,
    label_names: &[String],
) -> Result<Run> {
    let mut rule = base.clone();
    if let (RuleConfig::NoMask(r), Some(t)) = (&mut rule, temporal) {
        r.temporal = t;
    }
    let env = RuleEnv { gate, ..p.rule_env(Some(label_names)) };
    let rules = validate_rules(&[rule], &env).map_err(|e| anyhow::anyhow!("{}: {e:?}", f.display()))?;
    let stats = Arc::new(CameraStats::detached(name));
    let mut a = Analyser::new(
        AnalyserConfig {
            camera: name.to_string(),
            mask: None,
            tamper: TamperConfig { enabled: false, ..Default::default() },
            rules,
            gate: GateSettings { enabled: gate, regions, ..p.settings.analysis.gate_settings() },
            labels: label_names.to_vec(),
            epoch: chrono::Utc::now(),
            utc_offset_s: 0,
            model_hint: 0,
        },
        stats.clone(),
    );
    let (mut fires, mut took) = (Vec::new(), 0.0);
    for fr in frames {
        let mut fr = fr.clone();
        let t0 = std::time::Instant::now();
        let raised = a.analyse(&mut fr, Some(pool)).1?;
        took += t0.elapsed().as_secs_f64();
        fires.extend(raised.iter().map(|r| r.fire.pts.as_secs_f64()));
    }
    let stats = [stats.inferred.get(), stats.gated.get(), stats.inferred_part.get(), stats.detections.get()];
    Ok(Run { fires, took, stats })
}

fn score_clip(s: &mut EventScore, intervals: &[Interval], fires: &[f64]) {
    s.intervals += intervals.len() as u32;
    s.fires += fires.len() as u32;
    for iv in intervals {
        if fires.iter().any(|&t| t >= iv.from_s && t <= iv.to_s + FIRE_LATENESS_S) {
            s.detected += 1;
        }
    }
    s.false_fires +=
        fires.iter().filter(|&&t| !intervals.iter().any(|iv| t >= iv.from_s && t <= iv.to_s + FIRE_LATENESS_S)).count()
            as u32;
}
