//! Threshold tuning by ops: rule parameters change while the worker runs, from two sources.
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
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::config::{AnalysisConfig, CameraRules, Pipeline, RuleConfig, validate_rules};
use crate::control::RuleSlot;
use crate::evidence::RuleFacts;
use crate::publish::{OutboxEntry, Publisher};
use crate::telemetry::Event;

/// One KV override: parameters laid over the file's rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Who made the change (required).
    pub by: String,
    #[serde(default)]
    pub reason: String,
    /// When `vigil thresholds set` wrote it (RFC 3339 UTC).
    #[serde(default)]
    pub at: String,
    pub set: Map<String, Value>,
}

/// One line of the audit trail.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    pub time_utc: String,
    pub site: String,
    pub camera: String,
    pub rule: String,
    /// "file:<path> sha256:<hex>" or "kv:<bucket>/<key>@<revision>".
    pub source: String,
    pub by: String,
    pub reason: String,
    /// "applied" or "rejected".
    pub outcome: String,
    /// Why it was rejected.
    pub problem: Option<String>,
    pub old: Option<Value>,
    pub new: Option<Value>,
    pub old_revision: Option<String>,
    pub new_revision: Option<String>,
}

/// Revision of a rule's parameters, as carried in events and manifests.
pub fn revision(rule: &RuleConfig) -> (Value, String) {
    let params = match rule {
        RuleConfig::NoMask(r) => serde_json::to_value(r),
        RuleConfig::UtensilsLeft(r) => serde_json::to_value(r),
    }
    .unwrap_or_default();
    let rev = RuleFacts::new(rule.id(), rule.kind(), "", params.clone()).revision;
    (params, rev)
}

/// Lays `set` over a rule (by its TOML/JSON field names) and re-reads it strictly.
pub fn overlay(rule: &RuleConfig, set: &Map<String, Value>) -> Result<RuleConfig, String> {
    let mut v = serde_json::to_value(rule).map_err(|e| e.to_string())?;
    let obj = v.as_object_mut().ok_or("rule is not an object")?;
    for (k, val) in set {
        if k == "kind" || k == "id" {
            return Err(format!("{k:?} cannot be changed at run time"));
        }
        if val.is_null() {
            return Err(format!("{k}: null is not a value (delete the key to return to the file's values)"));
        }
        obj.insert(k.clone(), val.clone());
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

pub struct RuleControl {
    site: String,
    file: PathBuf,
    file_sig: Option<(std::time::SystemTime, u64)>,
    file_text: String,
    analysis: AnalysisConfig,
    labels: Option<Vec<String>>,
    /// Which models are loaded: (no-mask pair, object detector).
    loaded: (bool, bool),
    base: BTreeMap<String, Vec<RuleConfig>>,
    overrides: BTreeMap<(String, String), (Override, String)>,
    pub current: BTreeMap<String, CameraRules>,
    slots: BTreeMap<String, RuleSlot>,
    audit_path: PathBuf,
    publisher: Arc<Publisher>,
    pub bucket: String,
}

impl RuleControl {
    pub fn new(p: &Pipeline, slots: BTreeMap<String, RuleSlot>, publisher: Arc<Publisher>) -> Result<RuleControl> {
        let audit_dir = p.data_dir.join("audit");
        std::fs::create_dir_all(&audit_dir).with_context(|| format!("audit dir {}", audit_dir.display()))?;
        let sig = file_sig(&p.file);
        let labels = crate::detect::read_labels(&p.models_dir, &p.raw.models.objects).ok();
        Ok(RuleControl {
            site: p.raw.site.id.clone(),
            file: p.file.clone(),
            file_sig: sig,
            file_text: std::fs::read_to_string(&p.file).unwrap_or_default(),
            analysis: p.raw.analysis,
            labels,
            loaded: (
                p.cameras.iter().any(|c| c.rules.no_mask.is_some()),
                p.cameras.iter().any(|c| c.rules.utensils.is_some()),
            ),
            base: p.raw.cameras.iter().map(|c| (c.id.clone(), c.rules.clone())).collect(),
            overrides: BTreeMap::new(),
            current: p.cameras.iter().map(|c| (c.id.clone(), c.rules.clone())).collect(),
            slots,
            audit_path: audit_dir.join("rules.jsonl"),
            publisher,
            bucket: p.raw.control.kv_bucket.clone(),
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
        let old = self.current.get(cam).cloned().unwrap_or_default().configs();
        let checked = self.effective(cam).and_then(|rules| {
            let r = validate_rules(&rules, self.labels.as_deref(), &self.analysis)
                .map_err(|es| es.into_iter().map(|(k, p)| format!("{k}: {p}")).collect::<Vec<_>>().join("; "))?;
            if (r.no_mask.is_some() && !self.loaded.0) || (r.utensils.is_some() && !self.loaded.1) {
                return Err("adds a rule whose model is not loaded: needs a restart".into());
            }
            Ok((rules, r))
        });
        let (rules, resolved) = match checked {
            Ok(x) => x,
            Err(problem) => {
                let rule = only_rule.unwrap_or("*").to_string();
                self.record(cam, &rule, source, by, reason, Err(problem), None, None).await;
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
            self.record(cam, &id, source, by, reason, Ok(()), o, n).await;
        }
        if changed {
            self.current.insert(cam.to_string(), resolved.clone());
            if let Some(slot) = self.slots.get(cam) {
                *slot.lock().expect("rule slot") = Some(resolved);
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        cam: &str,
        rule: &str,
        source: &str,
        by: &str,
        reason: &str,
        outcome: Result<(), String>,
        old: Option<&RuleConfig>,
        new: Option<&RuleConfig>,
    ) {
        let (old, old_rev) = old.map(revision).unzip();
        let (new, new_rev) = new.map(revision).unzip();
        let rec = AuditRecord {
            time_utc: crate::evidence::rfc3339(chrono::Utc::now()),
            site: self.site.clone(),
            camera: cam.into(),
            rule: rule.into(),
            source: source.into(),
            by: by.into(),
            reason: reason.into(),
            outcome: if outcome.is_ok() { "applied" } else { "rejected" }.into(),
            problem: outcome.as_ref().err().cloned(),
            old,
            new,
            old_revision: old_rev,
            new_revision: new_rev.clone(),
        };
        let detail = match &outcome {
            Err(p) => p.clone(),
            Ok(()) => format!(
                "{} -> {}",
                rec.old.as_ref().map(Value::to_string).unwrap_or("(none)".into()),
                rec.new.as_ref().map(Value::to_string).unwrap_or("(none)".into())
            ),
        };
        Event::RuleChange {
            camera: cam,
            rule,
            source,
            by,
            applied: outcome.is_ok(),
            revision: new_rev.as_deref().unwrap_or(""),
            detail: &detail,
        }
        .emit();
        let line = serde_json::to_string(&rec).unwrap_or_default();
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.audit_path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()).and_then(|_| f.sync_data()));
        if let Err(e) = written {
            tracing::error!(file = %self.audit_path.display(), error = %e, "audit record not written");
        }
        let entry = OutboxEntry {
            id: format!("audit-{}", ulid::Ulid::new()),
            subject: format!("vigil.audit.{}.{}", self.site, if cam == "*" { "_pipeline" } else { cam }),
            payload: serde_json::to_value(&rec).unwrap_or_default(),
        };
        if let Err(e) = self.publisher.submit(entry).await {
            tracing::error!(error = format!("{e:#}"), "audit record not queued for publishing");
        }
    }

    /// Checks the pipeline file; re-reads and applies it when its content changed.
    pub async fn poll_file(&mut self) {
        let sig = file_sig(&self.file);
        if sig == self.file_sig {
            return;
        }
        self.file_sig = sig;
        let Ok(text) = std::fs::read_to_string(&self.file) else { return };
        if text == self.file_text {
            return;
        }
        self.file_text = text.clone();
        let source =
            format!("file:{} sha256:{}", self.file.display(), &crate::evidence::sha256_hex(text.as_bytes())[..16]);
        let by = "pipeline file";
        let p = match Pipeline::load(&self.file) {
            Ok(p) => p,
            Err(e) => {
                self.record("*", "*", &source, by, "", Err(e.to_string()), None, None).await;
                return;
            }
        };
        let cams: Vec<String> = self.base.keys().cloned().collect();
        let new_ids: Vec<&String> = p.raw.cameras.iter().map(|c| &c.id).collect();
        if new_ids.len() != cams.len() || new_ids.iter().any(|id| !cams.contains(id)) {
            tracing::warn!(file = %self.file.display(), "cameras were added or removed in the pipeline file: that needs a restart (rule changes of the others are applied)");
        }
        let old_base = self.base.clone();
        for c in &p.raw.cameras {
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
            self.record("*", "*", &source, "?", "", Err("key is not <site>.<camera>.<rule>".into()), None, None).await;
            return;
        };
        let (cam, rule) = (cam.to_string(), rule.to_string());
        let exists = self.base.get(&cam).is_some_and(|rs| rs.iter().any(|r| r.id() == rule));
        let ov = match value {
            None => None,
            Some(bytes) => match serde_json::from_slice::<Override>(bytes) {
                Ok(o) if o.by.trim().is_empty() => {
                    self.record(
                        &cam,
                        &rule,
                        &source,
                        "?",
                        &o.reason,
                        Err("\"by\" is empty: say who".into()),
                        None,
                        None,
                    )
                    .await;
                    return;
                }
                Ok(o) => Some(o),
                Err(e) => {
                    let why = format!("value is not {{\"by\": ..., \"reason\": ..., \"set\": {{...}}}} JSON: {e}");
                    self.record(&cam, &rule, &source, "?", "", Err(why), None, None).await;
                    return;
                }
            },
        };
        let by = ov.as_ref().map(|o| o.by.clone()).unwrap_or_else(|| "(key deleted)".into());
        let reason = ov.as_ref().map(|o| o.reason.clone()).unwrap_or_default();
        if !exists {
            let why = format!("camera {cam:?} has no rule {rule:?} in this pipeline");
            self.record(&cam, &rule, &source, &by, &reason, Err(why), None, None).await;
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

fn file_sig(p: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

pub async fn kv_store(client: async_nats::Client, bucket: &str) -> Result<async_nats::jetstream::kv::Store> {
    let js = async_nats::jetstream::new(client);
    match js.get_key_value(bucket).await {
        Ok(kv) => Ok(kv),
        Err(_) => js
            .create_key_value(async_nats::jetstream::kv::Config {
                bucket: bucket.into(),
                history: 64,
                description: "vigil rule overrides: <site>.<camera>.<rule> -> {by, reason, at, set}".into(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("NATS KV bucket {bucket}")),
    }
}

type KvItem = (String, u64, Option<Vec<u8>>);

/// Follows the KV bucket (reconnecting as needed): the current values first, then every change.
/// Sends `()` on `synced` once the current values have been sent (or the first attempt failed).
async fn follow_kv(
    url: String,
    bucket: String,
    site: String,
    tx: tokio::sync::mpsc::UnboundedSender<KvItem>,
    synced: tokio::sync::oneshot::Sender<()>,
) {
    let mut synced = Some(synced);
    loop {
        let r: Result<()> = async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(3))
                .connect(&url)
                .await
                .with_context(|| format!("NATS {url}"))?;
            let kv = kv_store(client, &bucket).await?;
            let filter = format!("{site}.>");
            let mut watch = kv.watch(&filter).await.context("KV watch")?;
            let mut keys = kv.keys().await.context("KV keys")?;
            while let Some(k) = keys.next().await {
                let k = k.context("KV keys")?;
                if !k.starts_with(&format!("{site}.")) {
                    continue;
                }
                if let Some(e) = kv.entry(&k).await.context("KV entry")? {
                    let put = matches!(e.operation, async_nats::jetstream::kv::Operation::Put);
                    let _ = tx.send((e.key, e.revision, put.then(|| e.value.to_vec())));
                }
            }
            if let Some(s) = synced.take() {
                let _ = s.send(());
            }
            while let Some(e) = watch.next().await {
                let e = e.context("KV watch")?;
                let put = matches!(e.operation, async_nats::jetstream::kv::Operation::Put);
                if tx.send((e.key, e.revision, put.then(|| e.value.to_vec()))).is_err() {
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
    nats_url: Option<String>,
    watch_file: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (BTreeMap<String, CameraRules>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<KvItem>();
    let kv_task = nats_url.map(|url| {
        let (stx, srx) = tokio::sync::oneshot::channel();
        let t = tokio::spawn(follow_kv(url, ctl.bucket.clone(), ctl.site.clone(), tx, stx));
        (t, srx)
    });
    let kv_task = match kv_task {
        Some((t, srx)) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), srx).await;
            while let Ok((k, rev, v)) = rx.try_recv() {
                ctl.kv_entry(&k, rev, v.as_deref()).await;
            }
            Some(t)
        }
        None => None,
    };
    let initial = ctl.current.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick(), if watch_file => ctl.poll_file().await,
                Some((k, rev, v)) = rx.recv() => ctl.kv_entry(&k, rev, v.as_deref()).await,
            }
        }
        if let Some(t) = kv_task {
            t.abort();
        }
    });
    (initial, task)
}

// ---- the ops side: `vigil thresholds get | set | history` ----

async fn connect(url: &str) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))
}

/// Current overrides of a site (one camera, or all): `(key, revision, value)`.
pub async fn get(url: &str, bucket: &str, site: &str, camera: Option<&str>) -> Result<Vec<(String, u64, Value)>> {
    let kv = kv_store(connect(url).await?, bucket).await?;
    let prefix = match camera {
        Some(c) => format!("{site}.{c}."),
        None => format!("{site}."),
    };
    let mut out = Vec::new();
    let mut keys = kv.keys().await.context("KV keys")?;
    while let Some(k) = keys.next().await {
        let k = k.context("KV keys")?;
        if !k.starts_with(&prefix) {
            continue;
        }
        if let Some(e) = kv.entry(&k).await.context("KV entry")?
            && matches!(e.operation, async_nats::jetstream::kv::Operation::Put)
        {
            out.push((k, e.revision, serde_json::from_slice(&e.value).unwrap_or(Value::Null)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Parses `key=value` assignments; a value that is not JSON is taken as a string.
pub fn parse_assignments(items: &[String]) -> Result<Map<String, Value>> {
    let mut set = Map::new();
    for it in items {
        let Some((k, v)) = it.split_once('=') else {
            bail!("{it:?} is not key=value (e.g. threshold=0.8, hours=\"22:00-06:00\", zone=[[0,0],[1,0],[1,1]])");
        };
        let v = serde_json::from_str(v.trim()).unwrap_or_else(|_| Value::String(v.trim().to_string()));
        set.insert(k.trim().to_string(), v);
    }
    Ok(set)
}

/// Writes (or with `set` empty and `clear`, deletes) the override of one rule, merged with the
/// one in force. With `pipeline`, the result is first validated against that pipeline file's
/// rule, so a bad value is refused here, before any worker sees it. Returns the KV revision.
#[allow(clippy::too_many_arguments)]
pub async fn set(
    url: &str,
    bucket: &str,
    site: &str,
    camera: &str,
    rule: &str,
    by: &str,
    reason: &str,
    assignments: Map<String, Value>,
    clear: bool,
    pipeline: Option<&Path>,
) -> Result<u64> {
    if by.trim().is_empty() {
        bail!("--by is required: who makes the change");
    }
    let kv = kv_store(connect(url).await?, bucket).await?;
    let key = format!("{site}.{camera}.{rule}");
    if clear {
        kv.delete(&key).await.with_context(|| format!("KV delete {key}"))?;
        return Ok(kv.entry(&key).await?.map(|e| e.revision).unwrap_or_default());
    }
    let mut merged = match kv.entry(&key).await.context("KV entry")? {
        Some(e) if matches!(e.operation, async_nats::jetstream::kv::Operation::Put) => {
            serde_json::from_slice::<Override>(&e.value).map(|o| o.set).unwrap_or_default()
        }
        _ => Map::new(),
    };
    merged.extend(assignments);
    if let Some(p) = pipeline {
        let pl = Pipeline::load(p).map_err(|e| anyhow::anyhow!("{e}"))?;
        let cam = pl
            .raw
            .cameras
            .iter()
            .find(|c| c.id == camera)
            .with_context(|| format!("no camera {camera:?} in {}", p.display()))?;
        let mut rules = cam.rules.clone();
        let r = rules
            .iter_mut()
            .find(|r| r.id() == rule)
            .with_context(|| format!("camera {camera:?} has no rule {rule:?}"))?;
        *r = overlay(r, &merged).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        let labels = crate::detect::read_labels(&pl.models_dir, &pl.raw.models.objects).ok();
        validate_rules(&rules, labels.as_deref(), &pl.raw.analysis).map_err(|es| {
            anyhow::anyhow!(
                "{key}: {}",
                es.into_iter().map(|(k, p)| format!("{k}: {p}")).collect::<Vec<_>>().join("; ")
            )
        })?;
    }
    let o = Override {
        by: by.into(),
        reason: reason.into(),
        at: crate::evidence::rfc3339(chrono::Utc::now()),
        set: merged,
    };
    let rev = kv.put(&key, serde_json::to_vec(&o)?.into()).await.with_context(|| format!("KV put {key}"))?;
    Ok(rev)
}

/// What was written to the KV for one rule (who, when, what), oldest first.
/// `None`: deleted; `Some(Err(raw))`: a value that is not an override.
pub async fn kv_history(url: &str, bucket: &str, key: &str) -> Result<Vec<(u64, Option<Result<Override, String>>)>> {
    let kv = kv_store(connect(url).await?, bucket).await?;
    let mut h = kv.history(key).await.with_context(|| format!("KV history {key}"))?;
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(2), h.next()).await {
        let e = e.context("KV history")?;
        let put = matches!(e.operation, async_nats::jetstream::kv::Operation::Put);
        let v =
            put.then(|| serde_json::from_slice(&e.value).map_err(|_| String::from_utf8_lossy(&e.value).into_owned()));
        out.push((e.revision, v));
    }
    Ok(out)
}

/// What the workers did (applied or rejected, old and new), from `vigil.audit.<site>.<camera>`.
pub async fn audit_history(url: &str, stream: &str, site: &str, camera: Option<&str>) -> Result<Vec<AuditRecord>> {
    let js = async_nats::jetstream::new(connect(url).await?);
    let st = js.get_stream(stream).await.with_context(|| format!("JetStream stream {stream}"))?;
    let consumer = st
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subjects: vec![
                format!("vigil.audit.{site}.{}", camera.unwrap_or("*")),
                format!("vigil.audit.{site}._pipeline"),
            ],
            ..Default::default()
        })
        .await
        .context("audit consumer")?;
    let mut msgs = consumer.messages().await.context("audit messages")?;
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), msgs.next()).await {
        let m = m.context("audit message")?;
        if let Ok(r) = serde_json::from_slice::<AuditRecord>(&m.payload) {
            out.push(r);
        }
        if m.info().map(|i| i.pending == 0).unwrap_or(true) {
            break;
        }
    }
    Ok(out)
}
