//! Hot reload of rule parameters (the worker side of threshold tuning): rule parameters change while the worker runs, from two sources.
//!
//! - **The pipeline file.** It is polled every second; when its content changes it is parsed and
//!   validated whole (`Pipeline::load`). Invalid: the change is rejected with the errors, the
//!   running rules stay. Valid: each camera whose rules differ gets the new ones. Changes outside
//!   `[[cameras.rules]]` (sources, cameras added, models...) need a restart and are logged as such.
//! - **A NATS KV bucket** (`control.kv_bucket`, default `vigil-thresholds`), a key per
//!   `<site>.<camera>.<rule id>`, value `{"by": "...", "reason": "...", "at": "...", "set": {...}}`:
//!   `set` holds rule parameters (any key of the rule's `[[cameras.rules]]` table except `kind` and
//!   `id`) laid over the file's values. Deleting the key returns to the file's values. `vigil
//!   thresholds set|get|history` is the ops side.
//!
//! Every change is validated with the same code as the pipeline file (`config::validate_rules`), so
//! a threshold out of range, a zone outside the frame, hours that don't parse or a KV value that
//! isn't valid JSON is rejected with a reason and the running rules stay. An accepted change is
//! handed to the camera's analysis thread, which applies it between two frames, all of it at once
//! (tracks are kept). Each outcome is logged, counted, appended to `<data_dir>/audit/rules.jsonl`
//! and published on `vigil.audit.<site>.<camera>` (through the durable outbox): who, when, where
//! from, old and new parameters and revisions. Events and manifests carry `rule.revision`, the
//! same content hash as the audit record's `new_revision`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;

use super::analysis::CameraControl;
use super::audit::{About, AuditWriter, Change, FileSig, Origin, file_sig};
use super::masks::MaskControl;
use super::overrides::{Override, kv_store_with, overlay, revision};
use crate::config::Pipeline;
use crate::publish::Publisher;
use crate::rules::{CameraRules, Needs, RuleConfig, RuleEnv, validate_rules};

pub struct RuleControl {
    site: String,
    file: PathBuf,
    file_sig: Option<FileSig>,
    file_text: String,
    /// The pipeline file's settings other than rules, as running: a change there needs a restart.
    restart_only: BTreeMap<String, serde_json::Value>,
    gate: bool,
    gate_recheck_s: f64,
    dirty_head: bool,
    labels: Option<Vec<String>>,
    /// The other object models loaded (rules' `detector`), with their class names.
    detectors: crate::rules::Detectors,
    /// Which models are loaded.
    loaded: Needs,
    /// The attribute heads loaded.
    loaded_heads: Vec<String>,
    base: BTreeMap<String, Vec<RuleConfig>>,
    overrides: BTreeMap<(String, String), (Override, String)>,
    pub current: BTreeMap<String, CameraRules>,
    slots: BTreeMap<String, CameraControl>,
    pub audit: Arc<AuditWriter>,
    pub bucket: String,
    /// Replicas of the buckets when this worker creates them (`publish.replicas`).
    replicas: usize,
    /// The cameras' privacy masks (file and KV).
    pub masks: MaskControl,
}

impl RuleControl {
    pub fn new(p: &Pipeline, slots: BTreeMap<String, CameraControl>, publisher: Arc<Publisher>) -> Result<RuleControl> {
        let audit = Arc::new(AuditWriter::new(&p.data_dir, &p.settings.site.id, publisher)?);
        let sig = file_sig(&p.file);
        let labels = p.object_labels();
        let (slots_for_masks, audit_for_masks) = (slots.clone(), audit.clone());
        Ok(RuleControl {
            site: p.settings.site.id.clone(),
            file: p.file.clone(),
            file_sig: sig,
            file_text: crate::util::fsx::read_text(&p.file, crate::util::fsx::limits::PIPELINE).unwrap_or_default(),
            restart_only: restart_only(&p.as_file()),
            gate: p.settings.analysis.gate,
            gate_recheck_s: p.settings.analysis.gate_recheck_s,
            dirty_head: p.settings.models.dirty().is_some(),
            labels,
            detectors: p.detector_labels(),
            loaded: p.needs(),
            loaded_heads: p.attribute_heads(),
            base: p.camera_configs.iter().map(|c| (c.id.clone(), c.rules.clone())).collect(),
            overrides: BTreeMap::new(),
            current: p.cameras.iter().map(|c| (c.id.clone(), c.rules.clone())).collect(),
            slots,
            audit,
            bucket: p.settings.control.kv_bucket.clone(),
            replicas: p.settings.publish.replicas,
            masks: MaskControl::new(p, slots_for_masks, audit_for_masks),
        })
    }

    fn effective(&self, cam: &str) -> Result<Vec<RuleConfig>, String> {
        let base = self.base.get(cam).cloned().unwrap_or_default();
        base.iter()
            .map(|r| match self.overrides.get(&(cam.to_string(), r.id().to_string())) {
                None => Ok(r.clone()),
                Some((o, _)) => overlay(r, &o.set),
            })
            .collect()
    }

    /// Recomputes `cam`'s rules; applies them when valid and different, audits either way.
    /// Returns whether the result is valid (applied or unchanged).
    async fn change(&mut self, cam: &str, source: &str, by: &str, reason: &str, only_rule: Option<&str>) -> bool {
        let old = self.current.get(cam).cloned().unwrap_or_default().configs().to_vec();
        let env = RuleEnv {
            object_labels: self.labels.as_deref(),
            detectors: Some(&self.detectors),
            gate: self.gate,
            gate_recheck_s: self.gate_recheck_s,
            dirty_head: self.dirty_head,
            attribute_heads: Some(&self.loaded_heads),
        };
        let checked = self.effective(cam).and_then(|rules| {
            let r = validate_rules(&rules, &env)
                .map_err(|es| es.into_iter().map(|(k, p)| format!("{k}: {p}")).collect::<Vec<_>>().join("; "))?;
            let (need, have) = (r.needs(), self.loaded);
            if need.objects && !have.objects {
                return Err("needs the object detector (models.objects: an object rule, or person_pass on \
                            no_mask), which this worker did not load: needs a restart"
                    .into());
            }
            if !have.covers(need) {
                return Err("adds a rule whose model is not loaded: needs a restart".into());
            }
            Ok((rules, r))
        });
        let (rules, resolved) = match checked {
            Ok(x) => x,
            Err(problem) => {
                let about = only_rule.map_or(About::Rules(cam), |r| About::Rule(cam, r));
                self.audit.record(about, Origin::by(source, by, reason), Change::Rejected(problem)).await;
                return false;
            }
        };
        // audit each rule that changed
        let ids: std::collections::BTreeSet<String> =
            old.iter().chain(rules.iter()).map(|r| r.id().to_string()).collect();
        let mut changed = false;
        for id in ids {
            let o = old.iter().find(|r| r.id() == id);
            let n = rules.iter().find(|r| r.id() == id);
            if o == n {
                continue;
            }
            changed = true;
            let change = Change::Applied { old: o.map(revision), new: n.map(revision) };
            self.audit.record(About::Rule(cam, &id), Origin::by(source, by, reason), change).await;
        }
        if changed {
            self.current.insert(cam.to_string(), resolved.clone());
            if let Some(slot) = self.slots.get(cam) {
                slot.set_rules(resolved);
            }
        }
        true
    }

    /// Checks the pipeline file; re-reads and applies it when its content changed. Whatever
    /// goes wrong (the file deleted, turned into a directory or a device, binary, invalid) is
    /// logged once with what vigil did: it keeps running with the config it has.
    pub async fn poll_file(&mut self) {
        self.masks.poll_files().await;
        let sig = file_sig(&self.file);
        if sig == self.file_sig {
            return;
        }
        self.file_sig = sig;
        let kept = "kept running with the config it has";
        let text = match crate::util::fsx::read_text(&self.file, crate::util::fsx::limits::PIPELINE) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = %self.file.display(), error = format!("{e:#}"), "pipeline file unreadable; {kept}");
                return;
            }
        };
        if text == self.file_text {
            return;
        }
        self.file_text = text.clone();
        let source = format!("file:{} sha256:{}", self.file.display(), &crate::util::sha256_hex(text.as_bytes())[..16]);
        let by = "pipeline file";
        let p = match Pipeline::load(&self.file) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(file = %self.file.display(), "pipeline file invalid; {kept} (see the audit record)");
                self.audit
                    .record(
                        About::Unnamed { mask: false },
                        Origin::by(&source, by, ""),
                        Change::Rejected(e.to_string()),
                    )
                    .await;
                return;
            }
        };
        let cams: Vec<String> = self.base.keys().cloned().collect();
        let new_ids: Vec<&String> = p.camera_configs.iter().map(|c| &c.id).collect();
        if new_ids.len() != cams.len() || new_ids.iter().any(|id| !cams.contains(id)) {
            tracing::warn!(file = %self.file.display(), "cameras were added or removed in the pipeline file: that needs a restart (rule changes of the others are applied)");
        }
        let now = restart_only(&p.as_file());
        for (k, v) in &now {
            if self.restart_only.get(k).is_some_and(|old| old != v) {
                tracing::warn!(file = %self.file.display(), setting = %k, "changed in the pipeline file: that needs a restart; running with the old value until then (rule changes are applied)");
            }
        }
        self.restart_only = now;
        let old_base = self.base.clone();
        for c in &p.camera_configs {
            if !self.base.contains_key(&c.id) || old_base.get(&c.id) == Some(&c.rules) {
                continue;
            }
            let before = self.base.insert(c.id.clone(), c.rules.clone());
            if !self.change(&c.id, &source, by, "", None).await
                && let Some(b) = before
            {
                self.base.insert(c.id.clone(), b);
            }
        }
    }

    /// One KV entry (put or delete) for `<site>.<camera>.<rule>`.
    pub async fn kv_entry(&mut self, key: &str, revision: u64, value: Option<&[u8]>) {
        let source = format!("kv:{}/{key}@{revision}", self.bucket);
        let mut parts = key.splitn(3, '.');
        let (Some(_site), Some(cam), Some(rule)) = (parts.next(), parts.next(), parts.next()) else {
            let why = "key is not <site>.<camera>.<rule>".to_string();
            self.audit.record(About::Unnamed { mask: false }, Origin::unsigned(&source), Change::Rejected(why)).await;
            return;
        };
        let (cam, rule) = (cam.to_string(), rule.to_string());
        let exists = self.base.get(&cam).is_some_and(|rs| rs.iter().any(|r| r.id() == rule));
        let ov = match value {
            None => None,
            Some(bytes) => match Override::parse(bytes) {
                Ok(o) => Some(o),
                Err(why) => {
                    self.audit.record(About::Rule(&cam, &rule), Origin::unsigned(&source), Change::Rejected(why)).await;
                    return;
                }
            },
        };
        let by = ov.as_ref().map(|o| o.by.clone()).unwrap_or_else(|| "(key deleted)".into());
        let reason = ov.as_ref().map(|o| o.reason.clone()).unwrap_or_default();
        if !exists {
            let why = format!("camera {cam:?} has no rule {rule:?} in this pipeline");
            self.audit.record(About::Rule(&cam, &rule), Origin::by(&source, &by, &reason), Change::Rejected(why)).await;
            return;
        }
        let k = (cam.clone(), rule.clone());
        let before = match &ov {
            Some(o) => self.overrides.insert(k.clone(), (o.clone(), source.clone())),
            None => self.overrides.remove(&k),
        };
        if !self.change(&cam, &source, &by, &reason, Some(&rule)).await {
            match before {
                Some(b) => self.overrides.insert(k, b),
                None => self.overrides.remove(&k),
            };
        }
    }
}

/// The settings of a pipeline file that only a restart changes, by key: every section, and each
/// camera without its rules (`cameras.<id>`, e.g. its source).
fn restart_only(raw: &crate::config::PipelineFile) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(raw) {
        for (k, v) in m {
            if k == "cameras" {
                for mut c in v.as_array().cloned().unwrap_or_default() {
                    let id = c["id"].as_str().unwrap_or_default().to_string();
                    if let Some(o) = c.as_object_mut() {
                        o.remove("rules");
                        for (f, fv) in o.iter() {
                            out.insert(format!("cameras.{id}.{f}"), fv.clone());
                        }
                    }
                }
            } else {
                out.insert(k, v);
            }
        }
    }
    out
}

/// Which bucket an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bucket {
    Rules,
    Masks,
}

type KvItem = (Bucket, String, u64, Option<Vec<u8>>);

/// Follows the KV bucket (reconnecting as needed): the current values first, then every change.
/// Sends `()` on `synced` once the current values have been sent (or the first attempt failed).
async fn follow_kv(
    nats: crate::util::nats::Endpoint,
    (which, bucket): (Bucket, String),
    replicas: usize,
    site: String,
    tx: tokio::sync::mpsc::UnboundedSender<KvItem>,
    synced: tokio::sync::oneshot::Sender<()>,
) {
    let mut synced = Some(synced);
    loop {
        let r: Result<()> = async {
            let client = nats.connect().await?;
            let kv = kv_store_with(client, &bucket, replicas).await?;
            let filter = format!("{site}.>");
            let mut watch = kv.watch(&filter).await.context("KV watch")?;
            for e in crate::util::nats::kv_entries(&kv, &format!("{site}.")).await? {
                let put = matches!(e.operation, async_nats::jetstream::kv::Operation::Put);
                let _ = tx.send((which, e.key, e.revision, put.then(|| e.value.to_vec())));
            }
            if let Some(s) = synced.take() {
                let _ = s.send(());
            }
            while let Some(e) = watch.next().await {
                let e = e.context("KV watch")?;
                let put = matches!(e.operation, async_nats::jetstream::kv::Operation::Put);
                if tx.send((which, e.key, e.revision, put.then(|| e.value.to_vec()))).is_err() {
                    return Ok(());
                }
            }
            bail!("KV watch ended")
        }
        .await;
        if tx.is_closed() {
            return;
        }
        if let Err(e) = r {
            tracing::warn!(error = format!("{e:#}"), bucket = %bucket, "threshold overrides from NATS KV unavailable; retrying in 2 s");
        }
        if let Some(s) = synced.take() {
            let _ = s.send(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Runs hot reload until `stop` changes: waits (at most 5 s) for the KV's current values before
/// returning, so that cameras start with them.
pub async fn start(
    mut ctl: RuleControl,
    nats: Option<crate::util::nats::Endpoint>,
    watch_file: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (BTreeMap<String, CameraRules>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<KvItem>();
    let mut kv_tasks = Vec::new();
    if let Some(nats) = nats {
        let mut synced = Vec::new();
        for b in [(Bucket::Rules, ctl.bucket.clone()), (Bucket::Masks, ctl.masks.bucket.clone())] {
            let (stx, srx) = tokio::sync::oneshot::channel();
            kv_tasks.push(tokio::spawn(follow_kv(nats.clone(), b, ctl.replicas, ctl.site.clone(), tx.clone(), stx)));
            synced.push(srx);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(synced)).await;
        while let Ok(item) = rx.try_recv() {
            ctl.entry(item).await;
        }
    }
    drop(tx);
    let initial = ctl.current.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick(), if watch_file => ctl.poll_file().await,
                Some(item) = rx.recv() => ctl.entry(item).await,
            }
        }
        for t in kv_tasks {
            t.abort();
        }
    });
    (initial, task)
}

impl RuleControl {
    async fn entry(&mut self, (which, key, rev, value): KvItem) {
        match which {
            Bucket::Rules => self.kv_entry(&key, rev, value.as_deref()).await,
            Bucket::Masks => self.masks.entry(&key, rev, value.as_deref()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::overrides::{AuditRecord, MASK_RULE};
    use super::*;

    async fn control(d: &Path) -> (RuleControl, BTreeMap<String, CameraControl>) {
        std::fs::write(d.join("a.mp4"), "x").unwrap();
        let text = format!(
            "[site]\nid = \"s\"\n[worker]\ndata_dir = \"data\"\n[models]\ndir = \"{}\"\n\
             [[cameras]]\nid = \"c\"\nsource = \"a.mp4\"\n[[cameras.rules]]\nkind = \"no_mask\"\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/models")
        );
        std::fs::write(d.join("site.toml"), text).unwrap();
        let p = Pipeline::load(&d.join("site.toml")).unwrap();
        let slots: BTreeMap<String, CameraControl> = [("c".to_string(), CameraControl::default())].into();
        let publisher = Arc::new(Publisher::start(&p.data_dir, None, "VIGIL", Duration::from_secs(1)).await.unwrap());
        (RuleControl::new(&p, slots.clone(), publisher).unwrap(), slots)
    }

    fn audit(d: &Path) -> Vec<AuditRecord> {
        std::fs::read_to_string(d.join("data/audit/rules.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_kv_change_is_validated_handed_to_the_camera_and_audited_either_way() {
        let d = tempfile::tempdir().unwrap();
        let (mut ctl, slots) = control(d.path()).await;
        ctl.kv_entry("s.c.no_mask", 1, Some(br#"{"by":"alice","reason":"r","set":{"threshold":0.85}}"#)).await;
        let applied = slots["c"].rules.lock().unwrap().take().expect("handed to the analysis thread");
        let RuleConfig::NoMask(r) = &applied.configs()[0] else { panic!() };
        assert_eq!(r.threshold, 0.85);
        ctl.kv_entry("s.c.no_mask", 2, Some(br#"{"by":"bob","set":{"threshold":1.5}}"#)).await;
        ctl.kv_entry("s.c.no_mask", 3, Some(b"threshold: 0.9")).await;
        ctl.kv_entry("s.c.nosuch", 4, Some(br#"{"by":"eve","set":{}}"#)).await;
        assert!(slots["c"].rules.lock().unwrap().is_none(), "nothing invalid reaches the camera");
        ctl.kv_entry("s.c.no_mask", 5, None).await;
        let back = slots["c"].rules.lock().unwrap().take().expect("deleting the key returns to the file's values");
        let RuleConfig::NoMask(r) = &back.configs()[0] else { panic!() };
        assert_eq!(r.threshold, 0.8, "the rule default");
        let a = audit(d.path());
        let outcomes: Vec<(&str, &str)> = a.iter().map(|r| (r.by.as_str(), r.outcome.as_str())).collect();
        assert_eq!(
            outcomes,
            vec![
                ("alice", "applied"),
                ("bob", "rejected"),
                ("?", "rejected"),
                ("eve", "rejected"),
                ("(key deleted)", "applied")
            ]
        );
        assert!(a[1].problem.as_deref().unwrap().contains("threshold: 1.5 must be in [0, 1]"), "{:?}", a[1].problem);
        assert_eq!(a[0].new_revision, Some(revision(&applied.configs()[0]).1));
        // the same records went to the outbox for vigil.audit.s.c
        let out = crate::publish::unacked(&d.path().join("data")).unwrap();
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|e| e.subject.to_string() == "vigil.audit.s.c"));
    }

    #[tokio::test]
    async fn person_pass_by_hot_reload_is_refused_where_the_object_detector_is_not_loaded() {
        let d = tempfile::tempdir().unwrap();
        let (mut ctl, slots) = control(d.path()).await;
        ctl.kv_entry("s.c.no_mask", 1, Some(br#"{"by":"alice","set":{"person_pass":true}}"#)).await;
        assert!(slots["c"].rules.lock().unwrap().is_none(), "not handed to the camera");
        ctl.kv_entry("s.c.no_mask", 2, Some(br#"{"by":"alice","set":{"tile_pass":true}}"#)).await;
        assert!(slots["c"].rules.lock().unwrap().take().is_some(), "tile_pass needs no other model");
        let a = audit(d.path());
        assert_eq!(a.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(), vec!["rejected", "applied"]);
        let p = a[0].problem.as_deref().unwrap();
        assert!(p.contains("object detector") && p.contains("restart"), "{p}");
    }

    #[tokio::test]
    async fn a_kv_mask_is_checked_as_a_mask_file_handed_to_the_camera_and_audited_with_its_hash() {
        let d = tempfile::tempdir().unwrap();
        let (mut ctl, slots) = control(d.path()).await;
        let text = "[[polygons]]\nname = \"window\"\npoints = [[0, 0], [0.3, 0], [0.3, 0.4]]\n";
        let value = serde_json::json!({"by": "olga", "reason": "street", "mask": text}).to_string();
        ctl.masks.entry("s.c", 7, Some(value.as_bytes())).await;
        let m = slots["c"].mask.lock().unwrap().take().expect("handed to the analysis thread").expect("a mask");
        assert_eq!(m.sha256, crate::util::sha256_hex(text.as_bytes()), "the hash of the mask file text");
        assert_eq!(m.id, "kv:vigil-masks/s.c@7");
        // outside the frame: refused with the mask loader's words; a camera that is not there
        let bad = serde_json::json!({"by": "olga", "mask": "[[polygons]]\npoints = [[0, 0], [1.5, 0], [1, 1]]\n"});
        ctl.masks.entry("s.c", 8, Some(bad.to_string().as_bytes())).await;
        ctl.masks.entry("s.nosuch", 9, Some(value.as_bytes())).await;
        assert!(slots["c"].mask.lock().unwrap().is_none(), "nothing invalid reaches the camera");
        // deleted: back to the file's mask (none here)
        ctl.masks.entry("s.c", 10, None).await;
        assert_eq!(slots["c"].mask.lock().unwrap().take(), Some(None));
        let a: Vec<AuditRecord> = audit(d.path()).into_iter().filter(|r| r.rule == MASK_RULE).collect();
        let got: Vec<(&str, &str)> = a.iter().map(|r| (r.by.as_str(), r.outcome.as_str())).collect();
        assert_eq!(
            got,
            vec![("olga", "applied"), ("olga", "rejected"), ("?", "rejected"), ("(key deleted)", "applied")]
        );
        assert_eq!(a[0].new_revision.as_deref(), Some(format!("sha256:{}", m.sha256).as_str()));
        assert!(a[1].problem.as_deref().unwrap().contains("point 1 [1.5, 0] is outside [0, 1]"), "{:?}", a[1].problem);
        assert_eq!(a[3].old_revision, a[0].new_revision);
    }
}
