//! The cameras' privacy masks while the worker runs: each camera's mask file (re-read when it
//! changes) and the masks ops set in the NATS KV bucket `control.mask_bucket` (a key per
//! `<site>.<camera>`, laid over the file's while it exists). The mask in force is handed to the
//! camera's analysis thread, which applies it between two frames; every change, applied or
//! refused, is an audit record ([`AuditWriter::record`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use super::analysis::CameraControl;
use super::audit::{About, AuditWriter, Change, FileSig, Origin, file_sig};
use super::overrides::MaskOverride;
use crate::config::Pipeline;
use crate::privacy::PrivacyMask;

pub struct MaskControl {
    /// The KV bucket of masks set from the ops console.
    pub bucket: String,
    slots: BTreeMap<String, CameraControl>,
    audit: Arc<AuditWriter>,
    /// The mask file of each camera that has one, and its signature when last read.
    files: BTreeMap<String, (PathBuf, Option<FileSig>)>,
    /// Each camera's mask from its file.
    base: BTreeMap<String, Option<Arc<PrivacyMask>>>,
    /// Masks set in KV (they win over the file's while the key exists).
    kv: BTreeMap<String, Arc<PrivacyMask>>,
    /// The mask in force per camera.
    masks: BTreeMap<String, Option<Arc<PrivacyMask>>>,
}

impl MaskControl {
    pub fn new(p: &Pipeline, slots: BTreeMap<String, CameraControl>, audit: Arc<AuditWriter>) -> MaskControl {
        let file_masks: BTreeMap<String, Option<Arc<PrivacyMask>>> =
            p.cameras.iter().map(|c| (c.id.clone(), c.mask.clone().map(Arc::new))).collect();
        MaskControl {
            bucket: p.settings.control.mask_bucket.clone(),
            slots,
            audit,
            files: p
                .cameras
                .iter()
                .filter_map(|c| c.mask.as_ref().map(|m| (c.id.clone(), (m.path.clone(), file_sig(&m.path)))))
                .collect(),
            masks: file_masks.clone(),
            base: file_masks,
            kv: BTreeMap::new(),
        }
    }

    /// Puts the mask the camera should run with (KV over file) in force when it differs from
    /// the one in force; audits the change.
    async fn apply(&mut self, cam: &str, source: &str, by: &str, reason: &str) {
        let new = self.kv.get(cam).cloned().or_else(|| self.base.get(cam).cloned().flatten());
        let old = self.masks.get(cam).cloned().flatten();
        if old.as_ref().map(|m| &m.sha256) == new.as_ref().map(|m| &m.sha256) {
            return;
        }
        self.masks.insert(cam.to_string(), new.clone());
        if let Some(slot) = self.slots.get(cam) {
            slot.set_mask(new.clone());
        }
        let facts = |m: &Arc<PrivacyMask>| (m.summary(), format!("sha256:{}", m.sha256));
        let (old, new) = (old.as_ref().map(facts), new.as_ref().map(facts));
        self.audit.record(About::Mask(cam), Origin::by(source, by, reason), Change::Applied { old, new }).await;
    }

    /// One entry (put or delete) of the mask bucket, key `<site>.<camera>`.
    pub async fn entry(&mut self, key: &str, revision: u64, value: Option<&[u8]>) {
        let source = format!("kv:{}/{key}@{revision}", self.bucket);
        let cam = key.split_once('.').map(|(_, c)| c.to_string()).unwrap_or_default();
        if !self.base.contains_key(&cam) {
            // recorded for the pipeline: the key names no camera of it (its text is in `problem`)
            let why = format!("key is not <site>.<camera> of a camera in this pipeline: {key:?}");
            self.audit.record(About::Unnamed { mask: true }, Origin::unsigned(&source), Change::Rejected(why)).await;
            return;
        }
        let (by, reason) = match value {
            None => {
                self.kv.remove(&cam);
                ("(key deleted)".to_string(), String::new())
            }
            Some(bytes) => match MaskOverride::parse(bytes, &source) {
                Ok((o, m)) => {
                    self.kv.insert(cam.clone(), Arc::new(m));
                    (o.by, o.reason)
                }
                Err(why) => {
                    let by = serde_json::from_slice::<Value>(bytes)
                        .ok()
                        .and_then(|v| v["by"].as_str().map(|s| crate::util::text::printable(s, 64)))
                        .unwrap_or_else(|| "?".into());
                    self.audit.record(About::Mask(&cam), Origin::by(&source, &by, ""), Change::Rejected(why)).await;
                    return;
                }
            },
        };
        self.apply(&cam, &source, &by, &reason).await;
    }

    /// Re-reads mask files that changed on disk; a valid one is put in force (unless KV holds a
    /// mask for the camera), an invalid one is rejected with its errors and the mask stays.
    pub async fn poll_files(&mut self) {
        let mut changed = Vec::new();
        for (cam, (path, sig)) in self.files.iter_mut() {
            let now = file_sig(path);
            if now != *sig {
                *sig = now;
                changed.push((cam.clone(), path.clone()));
            }
        }
        for (cam, path) in changed {
            match PrivacyMask::load(&path) {
                Ok(m) => {
                    let source = format!("file:{} sha256:{}", path.display(), &m.sha256[..16]);
                    self.base.insert(cam.clone(), Some(Arc::new(m)));
                    self.apply(&cam, &source, "privacy mask file", "").await;
                }
                Err(e) => {
                    tracing::warn!(camera = %cam, file = %path.display(), "privacy mask file invalid; kept the mask in force (see the audit record)");
                    let source = format!("file:{}", path.display());
                    let from = Origin::by(&source, "privacy mask file", "");
                    self.audit.record(About::Mask(&cam), from, Change::Rejected(e.to_string())).await;
                }
            }
        }
    }
}
