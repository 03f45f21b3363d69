//! Evidence stage: a violation plus its encoded pre/post-roll become an evidence item: the clip
//! and snapshots ([`clip`]), optionally a sealed original ([`seal`]), the signed [`manifest`] at
//! the next position of the camera's hash [`chain`], all written complete to the spool; the
//! spool's uploader stores them and then publishes the event.

pub mod chain;
pub mod clip;
pub mod manifest;
pub mod review;
pub mod seal;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};

pub use manifest::*;

use crate::ingest::ClipSource;
use crate::rules::{Detection, RuleFacts};
use crate::util::{local, rfc3339, sha256_hex};

/// Everything known about a violation when the rule fires.
#[derive(Debug, Clone)]
pub struct Violation {
    pub evidence_id: String,
    pub camera: String,
    pub rule: RuleFacts,
    pub detections: Vec<Detection>,
    pub zone: Option<crate::privacy::Polygon>,
    pub trigger_pts: Duration,
    /// Stream times of the frames in which the triggering face was detected.
    pub detection_frames: Vec<Duration>,
    /// Tamper/health conditions active on the camera when the rule fired.
    pub conditions_at_trigger: Vec<crate::telemetry::Condition>,
    /// Wall-clock time of stream time zero for this camera.
    pub stream_epoch: DateTime<Utc>,
    pub analysis_size: (u32, u32),
    pub pre_roll: Duration,
    pub post_roll: Duration,
    /// The privacy mask the analysis ran with when the rule fired: burnt into the clip's stored
    /// pixels and named in the manifest (it changes at run time from the ops console).
    pub mask: Option<std::sync::Arc<crate::privacy::PrivacyMask>>,
    /// Cluster mode: the camera's lease when the rule fired.
    pub lease: Option<manifest::LeaseFacts>,
}

impl Violation {
    pub fn wall(&self, pts: Duration) -> DateTime<Utc> {
        crate::util::time::add_std(self.stream_epoch, pts)
    }
}

/// What the evidence stage needs besides the violation.
pub struct EvidenceContext {
    pub spool: std::sync::Arc<crate::spool::Spool>,
    pub chains: std::sync::Arc<chain::Chains>,
    pub signer: std::sync::Arc<crate::signing::Signer>,
    pub models: Vec<ModelFacts>,
    pub worker: WorkerFacts,
    pub site: String,
    pub site_name: String,
    /// The operator of the premises (None when the pipeline names none).
    pub premises: Option<crate::config::PremisesConfig>,
    /// Where consumers get the public key (`[signing] public_key_url`).
    pub public_key_url: Option<String>,
    /// The review keys pinned in every manifest ([`SigningFacts::review_key_ids`]).
    pub review_key_ids: Option<Vec<String>>,
    pub utc_offset_s: i32,
    pub jpeg_quality: u8,
    pub quantizer: u32,
    pub scratch: std::path::PathBuf,
    /// Cluster mode: reserve each chain position in the store (its index entry, create-only)
    /// before the item is spooled, so workers that take over a camera never reuse a position;
    /// a store outage is retried for up to this long before the item is spooled unreserved.
    pub reserve_positions: Option<Duration>,
    pub history_dir: std::path::PathBuf,
    pub retention: crate::config::RetentionConfig,
    pub seal: Option<age::x25519::Recipient>,
}

/// Bounds on what one manifest (and so one evidence event) lists, so that no event can approach
/// a broker's message limit whatever happens in the window; the counts beyond are stated.
pub mod limits {
    /// Detections listed (the trigger's first; boxes drawn on the snapshot are the same).
    pub const DETECTIONS: usize = 64;
    /// Detection frame times listed.
    pub const FRAMES: usize = 64;
    /// Stream gaps and health events listed, each.
    pub const HEALTH: usize = 32;
}

/// Keeps the first `max` of `v` and, when more were cut, says how many in a last entry.
fn bounded<T>(mut v: Vec<T>, max: usize, more: impl FnOnce(usize) -> T) -> Vec<T> {
    if v.len() > max {
        let n = v.len() - max;
        v.truncate(max);
        v.push(more(n));
    }
    v
}

/// Stream health inside the clip window: gaps between samples, health marks, and what decoding
/// the window found (frames that would not decode, holes in the decoded video).
fn health(v: &Violation, src: &ClipSource, fps: f64, decode: &clip::DecodeFacts) -> HealthFacts {
    let mut gaps = Vec::new();
    let limit = Duration::from_secs_f64(3.0 / fps.max(1.0));
    let mut pts: Vec<Duration> =
        src.samples.iter().map(|s| s.pts).filter(|p| *p >= src.start && *p < src.end).collect();
    pts.sort();
    for w in pts.windows(2) {
        if w[1] - w[0] > limit {
            gaps.push((rfc3339(v.wall(w[0])), (w[1] - w[0]).as_secs_f64()));
        }
    }
    let mut events: Vec<(String, String)> = v
        .conditions_at_trigger
        .iter()
        .map(|c| (rfc3339(v.wall(v.trigger_pts)), format!("{c} active at the violation")))
        .collect();
    events.extend(
        src.marks
            .iter()
            .filter(|(p, _)| *p >= src.start && *p <= src.end)
            .map(|(p, m)| (rfc3339(v.wall(*p)), m.clone())),
    );
    for (at, len) in &decode.gaps {
        events.push((
            rfc3339(v.wall(*at)),
            format!("decoded video has a hole of {:.2} s (frames did not decode)", len.as_secs_f64()),
        ));
    }
    if decode.missing_frames > 0 {
        events.push((
            rfc3339(v.wall(src.start)),
            format!("{} frame(s) of the clip window could not be decoded", decode.missing_frames),
        ));
    }
    for m in &decode.messages {
        events.push((rfc3339(v.wall(src.start)), m.clone()));
    }
    let normal = gaps.is_empty() && events.is_empty();
    let at = rfc3339(v.wall(src.end));
    let mut events = bounded(events, limits::HEALTH, |n| (at.clone(), format!("… and {n} more health event(s)")));
    if gaps.len() > limits::HEALTH {
        events.push((at.clone(), format!("… and {} more stream gap(s)", gaps.len() - limits::HEALTH)));
        gaps.truncate(limits::HEALTH);
    }
    HealthFacts { gaps, events, normal }
}

/// Events of `rule` in the 30 days before `t`, from the camera's local history.
fn repeat_count(dir: &Path, camera: &str, rule: &str, t: DateTime<Utc>) -> u32 {
    let text = std::fs::read_to_string(dir.join(format!("{camera}.jsonl"))).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<(String, DateTime<Utc>)>(l).ok())
        .filter(|(r, at)| r == rule && *at <= t && t - *at <= chrono::Duration::days(30))
        .count() as u32
}

fn record_history(dir: &Path, camera: &str, rule: &str, t: DateTime<Utc>) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{camera}.jsonl")))?;
    writeln!(f, "{}", serde_json::to_string(&(rule, t))?)?;
    Ok(())
}

/// What the evidence stage reports of an item it spooled.
#[derive(Debug, Clone)]
pub struct EvidenceRecord {
    pub evidence_id: String,
    pub seq: u64,
    pub status: crate::config::StatusKind,
    pub admissible: bool,
    pub event: EvidenceEvent,
}

/// Cuts the clip, signs the manifest into the camera's chain and writes the complete item to the
/// spool; the spool's uploader stores it and then publishes the event.
pub async fn produce(
    ctx: &EvidenceContext,
    v: Violation,
    src: ClipSource,
    cam: &crate::config::Camera,
) -> Result<EvidenceRecord> {
    let (quant, scratch, trigger) = (ctx.quantizer, ctx.scratch.clone(), v.trigger_pts);
    let mask = v.mask.clone();
    let seal = ctx.seal.is_some();
    let (clip, original, src) = tokio::task::spawn_blocking(move || {
        let clip = clip::cut_clip(&src, mask.as_deref(), trigger, quant, &scratch);
        let original = if seal { Some(clip::mux_original(&src, &scratch)) } else { None };
        crate::telemetry::alloc::release_free_memory();
        (clip, original, src)
    })
    .await?;
    let clip = clip?;
    let annotated = clip::annotate(&clip.snapshot, &v.detections, v.zone.as_ref(), v.analysis_size);
    let t = v.wall(v.trigger_pts);
    // retention counts from the violation, and never from earlier than this camera's last commit:
    // a wall clock stepped back never shortens it
    let basis = ctx.chains.clock_floor(&v.camera).await.map_or(t, |f| f.max(t));
    let retain_until = crate::util::time::add_days(basis, ctx.retention.evidence_days).ok_or_else(|| {
        anyhow::anyhow!("retention date of {} days after {t} is out of range", ctx.retention.evidence_days)
    })?;
    let prefix = crate::store::evidence_prefix(&ctx.site, &v.camera, t, &v.evidence_id);
    // (artifact name, file name, bytes); the media type follows the file name, as the store's
    // Content-Type does
    use manifest::ItemFile;
    let media = |f: ItemFile, b: Vec<u8>| (f.artifact().unwrap_or_default(), f.file_name(), b);
    let mut files: Vec<(&str, &str, Vec<u8>)> = vec![
        media(ItemFile::Clip, clip.mp4),
        media(ItemFile::Snapshot, clip.snapshot.to_jpeg(ctx.jpeg_quality)),
        media(ItemFile::SnapshotAnnotated, annotated.to_jpeg(ctx.jpeg_quality)),
    ];
    let mut sealed = None;
    let sealed_name;
    if let (Some(rcp), Some(original)) = (&ctx.seal, original) {
        let plain = original?;
        let codec = clip::source_codec(&src)?;
        let (_, ext, _) = codec.container(&src.caps);
        sealed = Some(SealedFacts {
            format: format!(
                "age-encryption.org/v1, X25519 recipient; plaintext: {} of the unmasked {} stream, not re-encoded",
                if ext == "mp4" { "MP4" } else { "Matroska" },
                codec.name()
            ),
            recipient: rcp.to_string(),
            plaintext_sha256: sha256_hex(&plain),
            plaintext_bytes: plain.len() as u64,
        });
        sealed_name = format!("original.{ext}.age");
        files.push(("sealed_original", &sealed_name, seal::seal_to(rcp, &plain)?));
    }
    let mut artifacts = BTreeMap::new();
    let mut objects: Vec<crate::spool::StoreObject> = Vec::new();
    for (name, file, bytes) in files {
        let key = format!("{prefix}/{file}");
        let a = Artifact {
            key: key.clone(),
            sha256: sha256_hex(&bytes),
            sm3: ctx.signer.sm2_key_id().map(|_| crate::signing::sm2::sm3_hex(&bytes)),
            bytes: bytes.len() as u64,
            content_type: crate::store::content_type(file).into(),
        };
        objects.push((key, bytes, retain_until));
        artifacts.insert(name.to_string(), a);
    }
    let (sx, sy) = (clip.width as f32 / v.analysis_size.0 as f32, clip.height as f32 / v.analysis_size.1 as f32);
    let frame_dur = Duration::from_secs_f64(1.0 / clip.fps.max(1.0));
    let (start, end) = (v.wall(clip.first_pts), v.wall(clip.last_pts + frame_dur));
    let health = health(&v, &src, clip.fps, &clip.decode);
    if !clip.decode.is_clean() {
        tracing::warn!(camera = %v.camera, evidence_id = %v.evidence_id, missing_frames = clip.decode.missing_frames, holes = clip.decode.gaps.len(), "clip window did not decode cleanly: recorded in the manifest, item not admissible");
    }
    let mut reasons: Vec<String> =
        health.gaps.iter().map(|(at, s)| format!("stream gap of {s:.2} s at {at}")).collect();
    reasons.extend(health.events.iter().map(|(at, what)| format!("{what} at {at}")));
    let status =
        cam.registry.compliance(t.with_timezone(&crate::util::time::fixed_offset(ctx.utc_offset_s)).date_naive());
    let mut manifest = Manifest {
        schema: MANIFEST_SCHEMA.into(),
        canonicalization: crate::util::jcs::Version::CURRENT.label().into(),
        evidence_id: v.evidence_id.clone(),
        site: ctx.site.clone(),
        site_name: ctx.site_name.clone(),
        premises: ctx.premises.clone(),
        camera: v.camera.clone(),
        camera_location: cam.location.clone(),
        camera_registry: cam.registry.clone(),
        worker: ctx.worker.clone(),
        rule: v.rule.clone(),
        violation_time_utc: rfc3339(t),
        violation_time_local: local(t, ctx.utc_offset_s),
        detection_frames_utc: v.detection_frames.iter().take(limits::FRAMES).map(|p| rfc3339(v.wall(*p))).collect(),
        clip: ClipFacts {
            start_utc: rfc3339(start),
            start_local: local(start, ctx.utc_offset_s),
            end_utc: rfc3339(end),
            end_local: local(end, ctx.utc_offset_s),
            duration_s: (clip.last_pts + frame_dur - clip.first_pts).as_secs_f64(),
            frames: clip.frames,
            width: clip.width,
            height: clip.height,
            fps: clip.fps,
            pre_roll_s: v.pre_roll.as_secs_f64(),
            post_roll_s: v.post_roll.as_secs_f64(),
            pre_roll_truncated: src.pre_truncated
                || v.trigger_pts < v.pre_roll
                || clip.first_pts > src.start + frame_dur,
            post_roll_truncated: src.post_truncated,
        },
        streams: cam.analysis_source.as_ref().map(|a| StreamFacts {
            clip_source: cam.source.to_string(),
            analysis_source: a.to_string(),
            alignment: crate::ingest::STREAM_ALIGNMENT.into(),
            analysis_width: v.analysis_size.0,
            analysis_height: v.analysis_size.1,
        }),
        detections: v
            .detections
            .iter()
            .take(limits::DETECTIONS)
            .map(|f| Detection { bbox: f.bbox.scale(sx, sy), ..f.clone() })
            .collect(),
        zone: v.zone.as_ref().map(|z| z.points.iter().map(|p| [p.x, p.y]).collect()),
        models: ctx.models.clone(),
        privacy_mask: v.mask.as_ref().map(|m| MaskFacts {
            id: m.id.clone(),
            sha256: m.sha256.clone(),
            polygons: m.polygons.len(),
        }),
        admissibility: Admissibility { admissible: health.normal, reasons },
        health,
        status,
        repeat_count_30d: 0,
        artifacts,
        sealed_original: sealed,
        retention: RetentionFacts {
            class: "evidence".into(),
            min_days: ctx.retention.evidence_days,
            retain_until_utc: rfc3339(retain_until),
        },
        chain: chain::ChainLink { seq: 0, prev_hash: String::new(), committed_utc: None, clock_step_back_s: None },
        signing: SigningFacts {
            alg: "Ed25519".into(),
            key_id: ctx.signer.key_id.clone(),
            public_key_url: ctx.public_key_url.clone(),
            review_key_ids: ctx.review_key_ids.clone(),
            sm2_key_id: ctx.signer.sm2_key_id(),
        },
        lease: v.lease.clone(),
    };
    let manifest_key = format!("{prefix}/manifest.json");
    let sig_key = format!("{prefix}/manifest.sig");
    // chain position, manifest, spool: under the camera's chain lock, so positions follow commits
    manifest.repeat_count_30d = repeat_count(&ctx.history_dir, &v.camera, &v.rule.id, t);
    let Chained { claim, bytes, sig, hash, index, reserved } = chain_manifest(
        &ctx.chains,
        &ctx.signer,
        &mut manifest,
        (&v.evidence_id, &manifest_key, retain_until),
        ctx.reserve_positions,
    )
    .await?;
    // upload order: artifacts, signature, manifest (an item is complete once its manifest shows),
    // then the chain index entry
    objects.push((sig_key.clone(), sig, retain_until));
    objects.push((manifest_key.clone(), bytes, retain_until));
    objects.extend(index);

    let record = EvidenceRecord {
        evidence_id: v.evidence_id.clone(),
        seq: manifest.chain.seq,
        status: manifest.status.kind,
        admissible: manifest.admissibility.admissible,
        event: EvidenceEvent {
            manifest: Manifest { schema: EVENT_SCHEMA.into(), ..manifest },
            manifest_ref: ManifestRef { key: manifest_key, sha256: hash.clone(), signature_key: sig_key },
            store: None,
            objects: BTreeMap::new(),
        },
    };
    let entry = crate::publish::OutboxEntry::new(
        v.evidence_id.clone(),
        crate::util::Subject::evidence(&ctx.site, &v.camera),
        &record.event,
    );
    if reserved {
        ctx.spool.put(&v.evidence_id, objects, &entry)?;
        ctx.chains.commit(&v.camera, claim, &hash);
    } else {
        // chained afresh by the uploader once the store answers (see `rechain`); the head stays
        ctx.spool.put_with(&v.evidence_id, objects, &entry, true)?;
        claim.forget();
    }
    record_history(&ctx.history_dir, &v.camera, &v.rule.id, t)?;
    Ok(record)
}

/// The evidence event of an item already in the store, made again from its signed manifest
/// (its event was lost: a torn outbox line). The same event as the uploader makes: the
/// manifest's members, where the manifest is, and where every object is.
pub async fn event_from_store(store: &crate::store::Store, prefix: &str) -> Result<crate::publish::OutboxEntry> {
    let manifest_key = format!("{prefix}/manifest.json");
    let bytes = store.get(&manifest_key).await?;
    let manifest: Manifest = serde_json::from_slice(&bytes)?;
    let sig_key = format!("{prefix}/manifest.sig");
    let index = chain::index_key(&manifest.site, &manifest.camera, manifest.chain.seq);
    let here = store.reference();
    let mut objects = BTreeMap::new();
    let keys = manifest.artifacts.values().map(|a| a.key.clone()).chain([
        sig_key.clone(),
        manifest_key.clone(),
        format!("{index}.sig"),
        index,
    ]);
    for k in keys {
        if store.exists(&k).await? {
            objects.insert(k.clone(), here.locate(&k, store.version(&k).await?));
        }
    }
    let (site, camera, id) = (manifest.site.clone(), manifest.camera.clone(), manifest.evidence_id.clone());
    let event = EvidenceEvent {
        manifest: Manifest { schema: EVENT_SCHEMA.into(), ..manifest },
        manifest_ref: ManifestRef {
            key: manifest_key,
            sha256: crate::util::sha256_hex(&bytes),
            signature_key: sig_key,
        },
        store: Some(here),
        objects,
    };
    Ok(crate::publish::OutboxEntry::new(id, crate::util::Subject::evidence(&site, &camera), &event))
}

/// A manifest sealed at a chain position: its bytes, signature, hash and index entry objects;
/// `reserved` when its position is reserved in the store (always, outside cluster mode).
struct Chained {
    claim: chain::Claim,
    bytes: Vec<u8>,
    sig: Vec<u8>,
    hash: String,
    index: Vec<crate::spool::StoreObject>,
    reserved: bool,
}

/// Claims the next position of the manifest's camera, seals the manifest there and, with
/// `reserve` (cluster mode), reserves the position in the store: a position taken by another
/// worker makes it read the head again and take the next one; a store that does not answer
/// within `reserve` gives `reserved: false` (the caller spools the item for [`rechain`]).
async fn chain_manifest(
    chains: &chain::Chains,
    signer: &crate::signing::Signer,
    manifest: &mut Manifest,
    (evidence_id, manifest_key, retain_until): (&str, &str, DateTime<Utc>),
    reserve: Option<Duration>,
) -> Result<Chained> {
    let camera = manifest.camera.clone();
    let mut taken = 0u32;
    loop {
        let claim = chains.claim(&camera).await?;
        manifest.chain = claim.link.clone();
        let (bytes, sig, hash) = crate::signing::seal(&*manifest, signer)?;
        let index = chains.index_objects(&camera, &claim, evidence_id, manifest_key, &hash, retain_until)?;
        let mut reserved = true;
        if let Some(patience) = reserve {
            match chains.reserve(&index, patience).await {
                chain::Reserved::Yes => {}
                chain::Reserved::Taken if taken < chain::RESERVE_ATTEMPTS => {
                    // another worker holds this position (it ran the camera since this worker's
                    // head was read): read the head from the store again and take the next one
                    taken += 1;
                    tracing::info!(camera = %camera, seq = claim.link.seq, "chain position taken by another worker; reading the head again");
                    claim.forget();
                    continue;
                }
                chain::Reserved::Taken => anyhow::bail!(
                    "chain positions of camera {camera} kept being taken by another worker ({taken} tries); is a second worker running it outside the cluster?"
                ),
                chain::Reserved::Unreachable(e) => {
                    tracing::error!(
                        camera = %camera, evidence_id, error = %e,
                        "chain position NOT reserved: the store did not answer; the item is spooled and takes its position when the store answers (chained afresh before upload)"
                    );
                    reserved = false;
                }
            }
        }
        return Ok(Chained { claim, bytes, sig, hash, index, reserved });
    }
}

/// Chains a spooled item whose position was not reserved ([`crate::spool::Rechain`]): a position
/// from the store's head now, the manifest re-signed there, the item and its event rewritten.
/// Items are chained in upload order (oldest first), so the chain stays in processing order.
pub async fn rechain(
    spool: &crate::spool::Spool,
    chains: &chain::Chains,
    signer: &crate::signing::Signer,
    id: &str,
    patience: Duration,
) -> Result<()> {
    use anyhow::Context;
    let (mut objects, mut event) = spool.read_item(id)?;
    // already chained and reserved (a crash before the marker went): nothing to change
    if let Some(entry) = objects.iter().find(|o| o.0.starts_with("chain/") && !o.0.ends_with(".sig"))
        && chains.holds(&entry.0, &entry.1).await
    {
        return spool.mark_reserved(id);
    }
    let mi = objects.iter().position(|o| o.0.ends_with("/manifest.json")).context("the item has no manifest")?;
    let si = objects.iter().position(|o| o.0.ends_with("/manifest.sig")).context("the item has no signature")?;
    let mut manifest: Manifest = serde_json::from_slice(&objects[mi].1).context("the item's manifest")?;
    let (key, until) = (objects[mi].0.clone(), objects[mi].2);
    let c = chain_manifest(chains, signer, &mut manifest, (id, &key, until), Some(patience)).await?;
    if !c.reserved {
        c.claim.forget();
        anyhow::bail!("the store did not answer; the item waits");
    }
    objects[mi].1 = c.bytes;
    objects[si].1 = c.sig;
    objects.retain(|o| !o.0.starts_with("chain/"));
    objects.extend(c.index);
    if let Some(p) = event.payload.as_object_mut() {
        p.insert("chain".into(), serde_json::to_value(&manifest.chain)?);
        if let Some(m) = p.get_mut("manifest").and_then(|m| m.as_object_mut()) {
            m.insert("sha256".into(), c.hash.clone().into());
        }
    }
    spool.rewrite_item(id, objects, &event)?;
    chains.commit(&manifest.camera, c.claim, &c.hash);
    tracing::info!(evidence_id = id, camera = %manifest.camera, seq = manifest.chain.seq, "spool: an item spooled without a reserved chain position now holds one");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::EncodedSample;
    use gstreamer as gst;

    fn clip(pts_ms: &[u64], marks: Vec<(Duration, String)>) -> ClipSource {
        gst::init().unwrap();
        ClipSource {
            caps: gst::Caps::new_empty_simple("video/x-h264"),
            samples: pts_ms
                .iter()
                .map(|&p| EncodedSample {
                    pts: Duration::from_millis(p),
                    dts: None,
                    duration: None,
                    keyframe: p == 0,
                    data: bytes::Bytes::from_static(b"x"),
                })
                .collect(),
            start: Duration::ZERO,
            end: Duration::from_secs(10),
            pre_truncated: false,
            post_truncated: false,
            marks,
        }
    }

    fn violation() -> Violation {
        Violation {
            evidence_id: "01TEST".into(),
            camera: "c".into(),
            rule: RuleFacts::of(&crate::rules::RuleConfig::NoMask(Default::default())),
            detections: vec![],
            zone: None,
            trigger_pts: Duration::from_secs(5),
            detection_frames: vec![],
            conditions_at_trigger: vec![],
            stream_epoch: DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z").unwrap().with_timezone(&Utc),
            analysis_size: (640, 360),
            pre_roll: Duration::from_secs(5),
            post_roll: Duration::from_secs(5),
            mask: None,
            lease: None,
        }
    }

    #[test]
    fn a_steady_stream_is_normal_and_a_gap_or_a_reconnect_is_not() {
        let steady: Vec<u64> = (0..250).map(|i| i * 40).collect();
        let h = health(&violation(), &clip(&steady, vec![]), 25.0, &Default::default());
        assert!(h.normal && h.gaps.is_empty(), "{h:?}");

        let mut gappy = steady.clone();
        gappy.retain(|&p| !(4000..6000).contains(&p)); // two seconds missing
        let h = health(&violation(), &clip(&gappy, vec![]), 25.0, &Default::default());
        assert!(!h.normal);
        assert_eq!(h.gaps.len(), 1);
        assert_eq!(h.gaps[0].0, "2026-11-23T00:00:03.960Z");
        assert!((h.gaps[0].1 - 2.04).abs() < 1e-9);

        let h = health(
            &violation(),
            &clip(&steady, vec![(Duration::from_secs(3), "stream down (eos)".into())]),
            25.0,
            &Default::default(),
        );
        assert!(!h.normal);
        assert_eq!(h.events, vec![("2026-11-23T00:00:03.000Z".to_string(), "stream down (eos)".to_string())]);

        // samples all there, but some would not decode: not normal either
        let d = clip::DecodeFacts {
            missing_frames: 50,
            gaps: vec![(Duration::from_secs(2), Duration::from_millis(2040))],
            messages: vec!["decoder warning: Could not decode stream.".into()],
        };
        let h = health(&violation(), &clip(&steady, vec![]), 25.0, &d);
        assert!(!h.normal && h.gaps.is_empty(), "{h:?}");
        assert_eq!(h.events.len(), 3, "{h:?}");
        assert!(h.events[0].1.contains("hole of 2.04 s") && h.events[0].0 == "2026-11-23T00:00:02.000Z", "{h:?}");
        assert!(h.events[1].1.contains("50 frame(s)"), "{h:?}");

        // a flapping stream: the lists stay bounded and say how much was left out
        let marks: Vec<(Duration, String)> =
            (0..5000).map(|i| (Duration::from_millis(i), "stream down (eos)".to_string())).collect();
        let choppy: Vec<u64> = (0..250).map(|i| i * 200).collect();
        let h = health(&violation(), &clip(&choppy, marks), 25.0, &Default::default());
        assert_eq!(h.gaps.len(), limits::HEALTH);
        assert_eq!(h.events.len(), limits::HEALTH + 2, "{:?}", &h.events[30..]);
        assert!(h.events[limits::HEALTH].1.contains("more health event"), "{:?}", h.events.last());
        assert!(h.events[limits::HEALTH + 1].1.contains("more stream gap"), "{:?}", h.events.last());
    }

    #[test]
    fn rule_revision_is_a_content_hash_of_the_params() {
        use crate::rules::revision_of;
        let a = revision_of(&serde_json::json!({"threshold": 0.7, "window": 5}));
        let b = revision_of(&serde_json::json!({"window": 5, "threshold": 0.7}));
        let c = revision_of(&serde_json::json!({"threshold": 0.8, "window": 5}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 16);
    }
}
