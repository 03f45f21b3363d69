//! Rule overrides in NATS KV — the ops side of threshold tuning, shared by `vigil thresholds` and
//! the ops console: a key per `<site>.<camera>.<rule id>`, value `{"by", "reason", "at", "set"}`;
//! `set` holds rule parameters laid over the pipeline file's rule. Also the audit records workers
//! write for every change they apply or reject.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::config::Pipeline;
use crate::privacy::PrivacyMask;
use crate::rules::{RuleConfig, revision_of, validate_rules};
use crate::util::nats::Endpoint;

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
    /// The NATS user the writer was connected as, when the connection had one: identity from the
    /// broker, not from the writer's word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_user: Option<String>,
}

/// Bounds on an override, so that no value (and no audit event made from it) can grow past
/// what a broker message may carry.
pub mod limits {
    /// A KV value, in bytes.
    pub const VALUE: usize = 64 << 10;
    /// `by`, in characters.
    pub const BY: usize = 64;
    /// `reason`, in characters.
    pub const REASON: usize = 1024;
    /// Parameters in `set`.
    pub const PARAMS: usize = 64;
    /// A privacy-mask KV value, in bytes (under NATS's default 1 MiB message size).
    pub const MASK_VALUE: usize = 512 << 10;
}

impl Override {
    /// Reads a KV value strictly: bounded size, the known fields, `by` and `reason` printable
    /// and bounded.
    pub fn parse(bytes: &[u8]) -> Result<Override, String> {
        if bytes.len() > limits::VALUE {
            return Err(format!(
                "value is {} bytes, more than the {} an override may have",
                bytes.len(),
                limits::VALUE
            ));
        }
        let o: Override = serde_json::from_slice(bytes)
            .map_err(|e| format!("value is not {{\"by\": ..., \"reason\": ..., \"set\": {{...}}}} JSON: {e}"))?;
        o.check().map_err(|e| e.to_string())?;
        Ok(o)
    }

    fn check(&self) -> Result<()> {
        crate::util::check_label("\"by\" (who makes the change)", &self.by, 1, limits::BY)?;
        crate::util::check_label("\"reason\"", &self.reason, 0, limits::REASON)?;
        if self.set.len() > limits::PARAMS {
            bail!("\"set\" has {} parameters, more than {}", self.set.len(), limits::PARAMS);
        }
        Ok(())
    }
}

/// A privacy mask set from the ops console: the KV value of `<site>.<camera>` in
/// `control.mask_bucket`. `mask` is the text of a privacy-mask file (checked as one); its SHA-256
/// is what manifests name, and saved as a file it is the same mask with the same hash.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskOverride {
    pub by: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub at: String,
    pub mask: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_user: Option<String>,
}

/// The audit records' `rule` for a privacy-mask change.
pub const MASK_RULE: &str = "privacy_mask";

impl MaskOverride {
    /// Reads a KV value strictly (bounded; `by` and `reason` labels) and the mask in it, checked
    /// as a mask file is; `origin` names the KV entry in messages and becomes the mask's id.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<(MaskOverride, PrivacyMask), String> {
        if bytes.len() > limits::MASK_VALUE {
            return Err(format!(
                "value is {} bytes, more than the {} a mask may have",
                bytes.len(),
                limits::MASK_VALUE
            ));
        }
        let o: MaskOverride = serde_json::from_slice(bytes)
            .map_err(|e| format!("value is not {{\"by\": ..., \"reason\": ..., \"mask\": \"...\"}} JSON: {e}"))?;
        crate::util::check_label("\"by\" (who makes the change)", &o.by, 1, limits::BY).map_err(|e| e.to_string())?;
        crate::util::check_label("\"reason\"", &o.reason, 0, limits::REASON).map_err(|e| e.to_string())?;
        let m =
            PrivacyMask::parse(o.mask.as_bytes(), Path::new(origin), origin.to_string()).map_err(|e| e.to_string())?;
        Ok((o, m))
    }
}

/// Writes the privacy mask of `camera` (`None`: deletes it, back to the pipeline file's mask)
/// after checking it as a mask file is checked. Returns the KV revision and the mask's SHA-256.
pub async fn set_mask(
    nats: &Endpoint,
    bucket: &str,
    site: &str,
    camera: &str,
    by: &str,
    reason: &str,
    mask_text: Option<&str>,
) -> Result<(u64, Option<String>)> {
    crate::util::check_label("by", by, 1, limits::BY)?;
    crate::util::check_label("reason", reason, 0, limits::REASON)?;
    let kv = kv_store(connect(nats).await?, bucket).await?;
    let key = format!("{site}.{camera}");
    let Some(text) = mask_text else {
        kv.delete(&key).await.with_context(|| format!("KV delete {key}"))?;
        return Ok((kv.entry(&key).await?.map(|e| e.revision).unwrap_or_default(), None));
    };
    let o = MaskOverride {
        by: by.into(),
        reason: reason.into(),
        at: crate::util::rfc3339(chrono::Utc::now()),
        mask: text.into(),
        nats_user: nats.user(),
    };
    let bytes = serde_json::to_vec(&o)?;
    let (_, m) = MaskOverride::parse(&bytes, &format!("kv:{bucket}/{key}")).map_err(|e| anyhow::anyhow!(e))?;
    let rev = kv.put(&key, bytes.into()).await.with_context(|| format!("KV put {key}"))?;
    Ok((rev, Some(m.sha256)))
}

/// The privacy mask in KV for `camera`, if any: `(revision, value, mask)`.
pub async fn get_mask(
    nats: &Endpoint,
    bucket: &str,
    site: &str,
    camera: &str,
) -> Result<Option<(u64, MaskOverride, PrivacyMask)>> {
    let kv = kv_store(connect(nats).await?, bucket).await?;
    let key = format!("{site}.{camera}");
    match kv.entry(&key).await.context("KV entry")? {
        Some(e) if matches!(e.operation, async_nats::jetstream::kv::Operation::Put) => {
            let origin = format!("kv:{bucket}/{key}@{}", e.revision);
            let (o, m) = MaskOverride::parse(&e.value, &origin).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            Ok(Some((e.revision, o, m)))
        }
        _ => Ok(None),
    }
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

/// A rule's parameters and their revision, as carried in events and manifests.
pub fn revision(rule: &RuleConfig) -> (Value, String) {
    let params = rule.params();
    let rev = revision_of(&params);
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

/// The control bucket, created (one replica) when missing.
pub async fn kv_store(client: async_nats::Client, bucket: &str) -> Result<async_nats::jetstream::kv::Store> {
    kv_store_with(client, bucket, 1).await
}

/// The control bucket, created with `replicas` replicas when missing (an existing one keeps its own).
pub async fn kv_store_with(
    client: async_nats::Client,
    bucket: &str,
    replicas: usize,
) -> Result<async_nats::jetstream::kv::Store> {
    let js = async_nats::jetstream::new(client);
    match js.get_key_value(bucket).await {
        Ok(kv) => Ok(kv),
        Err(_) => js
            .create_key_value(async_nats::jetstream::kv::Config {
                bucket: bucket.into(),
                history: 64,
                num_replicas: replicas,
                description: "vigil control: rule overrides (<site>.<camera>.<rule> -> {by, reason, at, set}) or \
                              privacy masks (<site>.<camera> -> {by, reason, at, mask})"
                    .into(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("NATS KV bucket {bucket}")),
    }
}

/// The KV key of one rule's override: `<site>.<camera>.<rule id>`.
pub fn key(site: &str, camera: &str, rule: &str) -> String {
    format!("{site}.{camera}.{rule}")
}

async fn connect(nats: &Endpoint) -> Result<async_nats::Client> {
    nats.connect().await
}

/// Current overrides of a site (one camera, or all): `(key, revision, value)`.
pub async fn get(nats: &Endpoint, bucket: &str, site: &str, camera: Option<&str>) -> Result<Vec<(String, u64, Value)>> {
    let kv = kv_store(connect(nats).await?, bucket).await?;
    let prefix = match camera {
        Some(c) => format!("{site}.{c}."),
        None => format!("{site}."),
    };
    Ok(crate::util::nats::kv_entries(&kv, &prefix)
        .await?
        .into_iter()
        .filter(|e| matches!(e.operation, async_nats::jetstream::kv::Operation::Put))
        .map(|e| (e.key, e.revision, serde_json::from_slice(&e.value).unwrap_or(Value::Null)))
        .collect())
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

/// A change an operator asks for: rule parameters to lay over the one in force, or `clear`.
pub struct Change<'a> {
    pub camera: &'a str,
    pub rule: &'a str,
    /// Who (a person; recorded in the audit trail).
    pub by: &'a str,
    pub reason: &'a str,
    pub set: Map<String, Value>,
    /// Delete the override: back to the pipeline file's values.
    pub clear: bool,
}

/// Writes (or with `set` empty and `clear`, deletes) the override of one rule, merged with the
/// one in force. With `pipeline`, the result is first validated against that pipeline file's
/// rule, so a bad value is refused here, before any worker sees it. Returns the KV revision.
pub async fn set(nats: &Endpoint, bucket: &str, site: &str, c: Change<'_>, pipeline: Option<&Path>) -> Result<u64> {
    let Change { camera, rule, by, reason, set: assignments, clear } = c;
    crate::util::check_label("--by", by, 1, limits::BY)?;
    crate::util::check_label("--reason", reason, 0, limits::REASON)?;
    let kv = kv_store(connect(nats).await?, bucket).await?;
    let key = key(site, camera, rule);
    if clear {
        kv.delete(&key).await.with_context(|| format!("KV delete {key}"))?;
        return Ok(kv.entry(&key).await?.map(|e| e.revision).unwrap_or_default());
    }
    let mut merged = match kv.entry(&key).await.context("KV entry")? {
        Some(e) if matches!(e.operation, async_nats::jetstream::kv::Operation::Put) => {
            Override::parse(&e.value).map(|o| o.set).unwrap_or_default()
        }
        _ => Map::new(),
    };
    merged.extend(assignments);
    if let Some(p) = pipeline {
        let pl = Pipeline::load(p).map_err(|e| anyhow::anyhow!("{e}"))?;
        let cam = pl
            .camera_configs
            .iter()
            .find(|c| c.id == camera)
            .with_context(|| format!("no camera {camera:?} in {}", p.display()))?;
        let mut rules = cam.rules.clone();
        let r = rules
            .iter_mut()
            .find(|r| r.id() == rule)
            .with_context(|| format!("camera {camera:?} has no rule {rule:?}"))?;
        *r = overlay(r, &merged).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        let labels = pl.object_labels();
        validate_rules(&rules, &pl.rule_env(labels.as_deref())).map_err(|es| {
            anyhow::anyhow!(
                "{key}: {}",
                es.into_iter().map(|(k, p)| format!("{k}: {p}")).collect::<Vec<_>>().join("; ")
            )
        })?;
    }
    let o = Override {
        by: by.into(),
        reason: reason.into(),
        at: crate::util::rfc3339(chrono::Utc::now()),
        set: merged,
        nats_user: nats.user(),
    };
    o.check()?;
    let bytes = serde_json::to_vec(&o)?;
    if bytes.len() > limits::VALUE {
        bail!("{key}: the override would be {} bytes, more than {}", bytes.len(), limits::VALUE);
    }
    let rev = kv.put(&key, bytes.into()).await.with_context(|| format!("KV put {key}"))?;
    Ok(rev)
}

/// What was written to the KV for one rule (who, when, what), oldest first.
/// `None`: deleted; `Some(Err(raw))`: a value that is not an override.
pub async fn kv_history(
    nats: &Endpoint,
    bucket: &str,
    key: &str,
) -> Result<Vec<(u64, Option<Result<Override, String>>)>> {
    let kv = kv_store(connect(nats).await?, bucket).await?;
    let mut h = kv.history(key).await.with_context(|| format!("KV history {key}"))?;
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(2), h.next()).await {
        let e = e.context("KV history")?;
        let put = matches!(e.operation, async_nats::jetstream::kv::Operation::Put);
        let v = put.then(|| Override::parse(&e.value).map_err(|_| String::from_utf8_lossy(&e.value).into_owned()));
        out.push((e.revision, v));
    }
    Ok(out)
}

/// What the workers did (applied or rejected, old and new), from `vigil.audit.<site>.<camera>`.
pub async fn audit_history(
    nats: &Endpoint,
    stream: &str,
    site: &str,
    camera: Option<&str>,
) -> Result<Vec<AuditRecord>> {
    let js = async_nats::jetstream::new(connect(nats).await?);
    let st = js.get_stream(stream).await.with_context(|| format!("JetStream stream {stream}"))?;
    let consumer = st
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            // one camera's and the pipeline file's records; all cameras: `*` covers `_pipeline`
            // (filters of one consumer must not overlap)
            filter_subjects: match camera {
                Some(_) => vec![
                    crate::util::Subject::filter("audit", site, camera),
                    crate::util::Subject::audit(site, "_pipeline").to_string(),
                ],
                None => vec![crate::util::Subject::filter("audit", site, None)],
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_mask() -> RuleConfig {
        toml::from_str("kind = \"no_mask\"\nthreshold = 0.7").unwrap()
    }

    #[test]
    fn an_override_lays_parameters_over_the_rule_and_cannot_change_what_it_is() {
        let set =
            parse_assignments(&["threshold=0.9".into(), "zone=[[0,0],[1,0],[1,1]]".into(), "severity=major".into()])
                .unwrap();
        let r = overlay(&no_mask(), &set).unwrap();
        let RuleConfig::NoMask(r) = r else { panic!() };
        assert_eq!((r.threshold, r.severity.as_str()), (0.9, "major"));
        assert_eq!(r.zone.as_ref().unwrap().len(), 3);
        for bad in ["kind=\"utensils_left\"", "id=\"other\"", "threshold=null", "treshold=0.5"] {
            let set = parse_assignments(&[bad.into()]).unwrap();
            assert!(overlay(&no_mask(), &set).is_err(), "{bad} must be refused");
        }
        assert!(parse_assignments(&["threshold".into()]).is_err());
        let (p1, r1) = revision(&no_mask());
        let (_, r2) = revision(&overlay(&no_mask(), &parse_assignments(&["threshold=0.8".into()]).unwrap()).unwrap());
        assert_eq!(p1["threshold"], 0.7);
        assert_ne!(r1, r2, "the revision follows the parameters");
        assert_eq!(r1, revision(&no_mask()).1, "and only them");
    }
}
