//! Evidence stage: a violation plus its encoded pre/post-roll become an evidence item.
//!
//! 1. `cut_clip` (blocking, run off the ingest path): decode the ring-buffer samples, keep the frames
//!    in `[trigger − pre, trigger + post)`, burn the privacy mask into every frame, re-encode H.264
//!    (x264) into MP4 at the source resolution and frame rate; keep the masked frame nearest the
//!    trigger as the snapshot.
//! 2. `Evidence::write`: JPEG snapshot and annotated snapshot (boxes, scores, track ids), SHA-256 of
//!    every artifact, artifacts stored first, then `event.json`, then the event goes to the outbox /
//!    JetStream.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::frame::RgbFrame;
use crate::ingest::{ClipSource, chain, make as element};
use crate::privacy::PrivacyMask;
use crate::rules::Detection;

/// A re-encoded, masked clip.
pub struct Clip {
    pub mp4: Vec<u8>,
    pub snapshot: RgbFrame,
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Stream time of the first and last frame kept.
    pub first_pts: Duration,
    pub last_pts: Duration,
}

fn wait_eos(p: &gst::Pipeline, what: &str, timeout: Duration) -> Result<()> {
    let bus = p.bus().expect("bus");
    match bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    ) {
        Some(m) => match m.view() {
            gst::MessageView::Error(e) => bail!("{what}: {} ({:?})", e.error(), e.debug()),
            _ => Ok(()),
        },
        None => bail!("{what}: no end of stream within {timeout:?}"),
    }
}

fn bus_error(p: &gst::Pipeline) -> Option<String> {
    p.bus()?.pop_filtered(&[gst::MessageType::Error]).and_then(|m| match m.view() {
        gst::MessageView::Error(e) => Some(format!("{} ({:?})", e.error(), e.debug())),
        _ => None,
    })
}

/// Decodes the clip's samples, masks and re-encodes the frames in `[start, end)`.
pub fn cut_clip(
    src: &ClipSource,
    mask: Option<&PrivacyMask>,
    trigger: Duration,
    quantizer: u32,
    scratch: &Path,
) -> Result<Clip> {
    if src.samples.is_empty() {
        bail!("no encoded video was buffered for this clip");
    }
    // decoder: appsrc ! h264parse ! avdec_h264 ! videoconvert ! RGB appsink
    let dec = gst::Pipeline::with_name("clip-decode");
    let appsrc = gst_app::AppSrc::builder().caps(&src.caps).format(gst::Format::Time).build();
    let parse = element("h264parse")?;
    let decoder = element(&crate::ingest::choose_decoder("auto")?)?;
    let convert = element("videoconvert")?;
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(4)
        .caps(&gst_video::VideoCapsBuilder::new().format(gst_video::VideoFormat::Rgb).build())
        .build();
    chain(&dec, &[appsrc.upcast_ref(), &parse, &decoder, &convert, sink.upcast_ref()])?;
    dec.set_state(gst::State::Playing)?;
    // Feed from another thread: the decoder's output is pulled (bounded) here at the same time.
    let samples = src.samples.clone();
    let feeder_src = appsrc.clone();
    let feeder = std::thread::spawn(move || {
        for s in samples {
            let mut b = gst::Buffer::from_slice(s.data);
            {
                let b = b.get_mut().expect("new buffer");
                b.set_pts(gst::ClockTime::from_nseconds(s.pts.as_nanos() as u64));
                if let Some(d) = s.dts {
                    b.set_dts(gst::ClockTime::from_nseconds(d.as_nanos() as u64));
                }
                if let Some(d) = s.duration {
                    b.set_duration(gst::ClockTime::from_nseconds(d.as_nanos() as u64));
                }
                if !s.keyframe {
                    b.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
            }
            if feeder_src.push_buffer(b).is_err() {
                return;
            }
        }
        let _ = feeder_src.end_of_stream();
    });

    let (start, end) = (src.start, src.end);
    let tmp = scratch.join(format!("clip-{}.mp4", ulid::Ulid::new()));
    let mut enc: Option<(gst::Pipeline, gst_app::AppSrc)> = None;
    let mut raster = None;
    let mut snapshot: Option<RgbFrame> = None;
    let (mut frames, mut first_pts, mut last_pts) = (0u32, None, Duration::ZERO);
    let (mut width, mut height, mut fps) = (0, 0, 0.0);
    let mut frame_dur = Duration::from_millis(40);
    loop {
        let sample = match sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            Some(s) => s,
            None if sink.is_eos() => break,
            None => bail!("clip decode stalled: {}", bus_error(&dec).unwrap_or_else(|| "no frame in 10 s".into())),
        };
        let buf = sample.buffer().context("sample without buffer")?;
        let Some(pts) = buf.pts().map(|t| Duration::from_nanos(t.nseconds())) else {
            continue;
        };
        if pts < start || pts >= end {
            continue;
        }
        let info = gst_video::VideoInfo::from_caps(sample.caps().context("no caps")?)?;
        if enc.is_none() {
            (width, height) = (info.width(), info.height());
            let fr = info.fps();
            fps = if fr.numer() > 0 && fr.denom() > 0 { fr.numer() as f64 / fr.denom() as f64 } else { 25.0 };
            frame_dur = Duration::from_secs_f64(1.0 / fps);
            enc = Some(encoder(width, height, info.fps(), fps, quantizer, &tmp)?);
            raster = mask.map(|m| m.raster(width, height));
        }
        let map = buf.map_readable()?;
        let stride = info.stride()[0] as usize;
        let mut f = RgbFrame::from_rows(&map, width, height, stride, pts);
        let row = f.stride();
        if let Some(r) = &raster {
            r.apply_rgb(&mut f.data, row);
        }
        if snapshot.as_ref().is_none_or(|s| pts.abs_diff(trigger) < s.pts.abs_diff(trigger)) {
            snapshot = Some(f.clone());
        }
        let first = *first_pts.get_or_insert(pts);
        last_pts = pts;
        let (_, esrc) = enc.as_ref().expect("encoder");
        let mut out = gst::Buffer::from_mut_slice(f.data);
        {
            let b = out.get_mut().expect("new buffer");
            b.set_pts(gst::ClockTime::from_nseconds((pts - first).as_nanos() as u64));
            b.set_duration(gst::ClockTime::from_nseconds(frame_dur.as_nanos() as u64));
        }
        esrc.push_buffer(out).map_err(|e| anyhow!("clip encoder refused a frame: {e:?}"))?;
        frames += 1;
    }
    let _ = feeder.join();
    let dec_err = bus_error(&dec);
    dec.set_state(gst::State::Null)?;
    let Some((pipe, esrc)) = enc else {
        bail!("no decodable frame in the clip window{}", dec_err.map(|e| format!(": {e}")).unwrap_or_default());
    };
    esrc.end_of_stream()?;
    let r = wait_eos(&pipe, "clip encode", Duration::from_secs(120));
    pipe.set_state(gst::State::Null)?;
    r?;
    let mp4 = std::fs::read(&tmp).with_context(|| format!("clip scratch file {}", tmp.display()))?;
    let _ = std::fs::remove_file(&tmp);
    Ok(Clip {
        mp4,
        snapshot: snapshot.expect("at least one frame"),
        frames,
        width,
        height,
        fps,
        first_pts: first_pts.unwrap_or_default(),
        last_pts,
    })
}

fn encoder(
    w: u32,
    h: u32,
    fr: gst::Fraction,
    fps: f64,
    quantizer: u32,
    out: &Path,
) -> Result<(gst::Pipeline, gst_app::AppSrc)> {
    let p = gst::Pipeline::with_name("clip-encode");
    let fr = if fr.numer() > 0 { fr } else { gst::Fraction::new(25, 1) };
    let caps = gst_video::VideoCapsBuilder::new()
        .format(gst_video::VideoFormat::Rgb)
        .width(w as i32)
        .height(h as i32)
        .framerate(fr)
        .build();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .block(true)
        .max_bytes(8 * (w as u64) * (h as u64) * 3)
        .build();
    let convert = element("videoconvert")?;
    let x264 = element("x264enc")?;
    x264.set_property_from_str("speed-preset", "veryfast");
    x264.set_property_from_str("pass", "qual");
    x264.set_property("quantizer", quantizer);
    x264.set_property("key-int-max", (fps * 2.0).round().max(1.0) as u32);
    x264.set_property("bframes", 0u32);
    let parse = element("h264parse")?;
    let mux = element("mp4mux")?;
    let sink = element("filesink")?;
    sink.set_property("location", out.to_string_lossy().as_ref());
    chain(&p, &[src.upcast_ref(), &convert, &x264, &parse, &mux, &sink])?;
    p.set_state(gst::State::Playing)?;
    Ok((p, src))
}

/// Draws the rule's zone (cyan outline) and boxes and labels for the detections of a violation
/// onto a copy of the snapshot. Boxes arrive in analysis-frame pixels and are scaled to the
/// snapshot.
pub fn annotate(
    snapshot: &RgbFrame,
    detections: &[Detection],
    zone: Option<&crate::privacy::Polygon>,
    analysis: (u32, u32),
) -> RgbFrame {
    let mut a = snapshot.clone();
    let (sx, sy) = (a.width as f32 / analysis.0 as f32, a.height as f32 / analysis.1 as f32);
    let scale = ((a.height / 180).max(2)) as i64;
    let thick = (a.height / 180).max(2);
    if let Some(z) = zone {
        a.draw_polygon(&z.pixels(a.width, a.height), [0, 220, 255], thick);
    }
    for f in detections {
        let b = f.bbox.scale(sx, sy);
        let color = if f.trigger { [255, 32, 32] } else { [255, 200, 0] };
        a.draw_box(b, color, thick);
        let label = match (f.no_mask_prob, f.dwell_s) {
            (Some(p), _) => format!("#{} NO MASK {:.2} FACE {:.2}", f.track_id, p, f.score),
            (_, Some(d)) => format!("#{} {} {:.2} {:.0}S", f.track_id, f.label.to_uppercase(), f.score, d),
            _ => format!("#{} {} {:.2}", f.track_id, f.label.to_uppercase(), f.score),
        };
        let y = (b.y1 as i64 - 7 * scale - 2).max(0);
        a.draw_text(b.x1 as i64, y, &label, [255, 255, 255], color, scale);
    }
    a
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Muxes the clip's encoded samples (unmasked, as the camera sent them) into MP4 without
/// re-encoding: the original behind a sealed clip.
pub fn mux_original(src: &ClipSource, scratch: &Path) -> Result<Vec<u8>> {
    let p = gst::Pipeline::with_name("clip-original");
    let appsrc = gst_app::AppSrc::builder().caps(&src.caps).format(gst::Format::Time).build();
    let parse = element("h264parse")?;
    let mux = element("mp4mux")?;
    let sink = element("filesink")?;
    let tmp = scratch.join(format!("original-{}.mp4", ulid::Ulid::new()));
    sink.set_property("location", tmp.to_string_lossy().as_ref());
    chain(&p, &[appsrc.upcast_ref(), &parse, &mux, &sink])?;
    p.set_state(gst::State::Playing)?;
    let base = src.samples.iter().map(|s| s.dts.unwrap_or(s.pts).min(s.pts)).min().unwrap_or_default();
    let ns = |d: Duration| gst::ClockTime::from_nseconds((d - base).as_nanos() as u64);
    for s in &src.samples {
        let mut b = gst::Buffer::from_slice(s.data.clone());
        {
            let b = b.get_mut().expect("new buffer");
            b.set_pts(ns(s.pts));
            if let Some(d) = s.dts {
                b.set_dts(ns(d));
            }
            if let Some(d) = s.duration {
                b.set_duration(gst::ClockTime::from_nseconds(d.as_nanos() as u64));
            }
            if !s.keyframe {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        appsrc.push_buffer(b).map_err(|e| anyhow!("original mux refused a sample: {e:?}"))?;
    }
    appsrc.end_of_stream()?;
    let r = wait_eos(&p, "original mux", Duration::from_secs(60));
    p.set_state(gst::State::Null)?;
    r?;
    let bytes = std::fs::read(&tmp)?;
    let _ = std::fs::remove_file(&tmp);
    Ok(bytes)
}

/// Encrypts to an age X25519 recipient.
pub fn seal_to(recipient: &age::x25519::Recipient, plain: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let enc = age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
        .map_err(|e| anyhow!("age: {e}"))?;
    let mut out = Vec::with_capacity(plain.len() + 512);
    let mut w = enc.wrap_output(&mut out)?;
    w.write_all(plain)?;
    w.finish()?;
    Ok(out)
}

/// Decrypts an age file with an X25519 identity.
pub fn unseal_with(identity: &age::x25519::Identity, cipher: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let dec = age::Decryptor::new(cipher).map_err(|e| anyhow!("not an age file: {e}"))?;
    let mut r = dec
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| anyhow!("cannot decrypt with this identity: {e}"))?;
    let mut plain = Vec::new();
    r.read_to_end(&mut plain)?;
    Ok(plain)
}

/// A stored artifact as referenced by the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub key: String,
    pub sha256: String,
    pub bytes: u64,
    pub content_type: String,
}

/// The sealed original: ciphertext stored as an artifact, plaintext hash kept here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SealedFacts {
    pub format: String,
    pub recipient: String,
    pub plaintext_sha256: String,
    pub plaintext_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClipFacts {
    pub start_utc: String,
    pub start_local: String,
    pub end_utc: String,
    pub end_local: String,
    pub duration_s: f64,
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub pre_roll_s: f64,
    pub post_roll_s: f64,
    pub pre_roll_truncated: bool,
    pub post_roll_truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleFacts {
    pub id: String,
    pub kind: String,
    pub severity: String,
    /// Content revision of the rule configuration in force: first 16 hex digits of SHA-256 of the
    /// canonical JSON of `params`.
    pub revision: String,
    pub params: serde_json::Value,
}

impl RuleFacts {
    pub fn new(id: &str, kind: &str, severity: &str, params: serde_json::Value) -> RuleFacts {
        let revision = sha256_hex(&crate::manifest::canonical(&params))[..16].to_string();
        RuleFacts { id: id.into(), kind: kind.into(), severity: severity.into(), revision, params }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaskFacts {
    pub id: String,
    pub sha256: String,
    pub polygons: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelFacts {
    pub id: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerFacts {
    pub id: String,
    pub version: String,
}

/// Stream health over the clip window (JS 28: content recorded while the equipment was not
/// working normally is inadmissible).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthFacts {
    /// Breaks in the stream longer than three frame intervals: (start UTC, seconds).
    pub gaps: Vec<(String, f64)>,
    /// Reconnects, freezes and other health events inside the window: (UTC, what).
    pub events: Vec<(String, String)>,
    pub normal: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admissibility {
    pub admissible: bool,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionFacts {
    pub class: String,
    pub min_days: u32,
    pub retain_until_utc: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SigningFacts {
    pub alg: String,
    pub key_id: String,
}

/// One evidence item, stored canonically as `manifest.json` and signed in `manifest.sig`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub canonicalization: String,
    pub evidence_id: String,
    pub site: String,
    pub site_name: String,
    pub camera: String,
    pub camera_location: String,
    pub camera_registry: crate::config::Registry,
    pub worker: WorkerFacts,
    pub rule: RuleFacts,
    pub violation_time_utc: String,
    pub violation_time_local: String,
    pub detection_frames_utc: Vec<String>,
    pub clip: ClipFacts,
    /// Tracked detections at the violating frame (faces, or objects), boxes in clip pixels.
    pub detections: Vec<Detection>,
    /// The rule's zone (normalised polygon), when it has one.
    pub zone: Option<Vec<[f64; 2]>>,
    pub models: Vec<ModelFacts>,
    pub privacy_mask: Option<MaskFacts>,
    pub health: HealthFacts,
    pub admissibility: Admissibility,
    pub status: crate::config::Compliance,
    /// Events of the same rule from this camera in the 30 days before this one (SD 3, NJ 4).
    pub repeat_count_30d: u32,
    pub artifacts: BTreeMap<String, Artifact>,
    pub sealed_original: Option<SealedFacts>,
    pub retention: RetentionFacts,
    pub chain: crate::chain::ChainLink,
    pub signing: SigningFacts,
}

pub const MANIFEST_SCHEMA: &str = "vigil.manifest.v2";

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
    pub conditions_at_trigger: Vec<String>,
    /// Wall-clock time of stream time zero for this camera.
    pub stream_epoch: DateTime<Utc>,
    pub analysis_size: (u32, u32),
    pub pre_roll: Duration,
    pub post_roll: Duration,
}

impl Violation {
    pub fn wall(&self, pts: Duration) -> DateTime<Utc> {
        self.stream_epoch + chrono::Duration::from_std(pts).unwrap_or_default()
    }
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn local(t: DateTime<Utc>, offset_s: i32) -> String {
    t.with_timezone(&offset(offset_s)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn offset(offset_s: i32) -> FixedOffset {
    FixedOffset::east_opt(offset_s).unwrap_or(FixedOffset::east_opt(0).expect("zero offset"))
}

/// What the evidence stage needs besides the violation.
pub struct EvidenceContext {
    pub spool: std::sync::Arc<crate::spool::Spool>,
    pub chains: std::sync::Arc<crate::chain::Chains>,
    pub signer: std::sync::Arc<crate::manifest::Signer>,
    pub models: Vec<ModelFacts>,
    pub worker: WorkerFacts,
    pub site: String,
    pub site_name: String,
    pub utc_offset_s: i32,
    pub jpeg_quality: u8,
    pub quantizer: u32,
    pub scratch: std::path::PathBuf,
    pub history_dir: std::path::PathBuf,
    pub retention: crate::config::RetentionConfig,
    pub seal: Option<age::x25519::Recipient>,
}

/// Stream health inside the clip window: gaps between samples and health marks.
fn health(v: &Violation, src: &ClipSource, fps: f64) -> HealthFacts {
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
    let normal = gaps.is_empty() && events.is_empty();
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

/// Cuts the clip, signs the manifest into the camera's chain and writes the complete item to the
/// spool; the spool's uploader stores it and then publishes the event.
pub async fn produce(
    ctx: &EvidenceContext,
    v: Violation,
    src: ClipSource,
    cam: &crate::config::Camera,
) -> Result<serde_json::Value> {
    let (quant, scratch, trigger) = (ctx.quantizer, ctx.scratch.clone(), v.trigger_pts);
    let mask = cam.mask.clone();
    let seal = ctx.seal.is_some();
    let (clip, original, src) = tokio::task::spawn_blocking(move || {
        let clip = cut_clip(&src, mask.as_ref(), trigger, quant, &scratch);
        let original = if seal { Some(mux_original(&src, &scratch)) } else { None };
        (clip, original, src)
    })
    .await?;
    let clip = clip?;
    let annotated = annotate(&clip.snapshot, &v.detections, v.zone.as_ref(), v.analysis_size);
    let t = v.wall(v.trigger_pts);
    let retain_until = t + chrono::Duration::days(ctx.retention.evidence_days as i64);
    let prefix = crate::store::evidence_prefix(&ctx.site, &v.camera, t, &v.evidence_id);
    let mut files: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("clip", "clip.mp4", clip.mp4, "video/mp4"),
        ("snapshot", "snapshot.jpg", clip.snapshot.to_jpeg(ctx.jpeg_quality), "image/jpeg"),
        ("snapshot_annotated", "snapshot-annotated.jpg", annotated.to_jpeg(ctx.jpeg_quality), "image/jpeg"),
    ];
    let mut sealed = None;
    if let (Some(rcp), Some(original)) = (&ctx.seal, original) {
        let plain = original?;
        sealed = Some(SealedFacts {
            format:
                "age-encryption.org/v1, X25519 recipient; plaintext: MP4 of the unmasked H.264 stream, not re-encoded"
                    .into(),
            recipient: rcp.to_string(),
            plaintext_sha256: sha256_hex(&plain),
            plaintext_bytes: plain.len() as u64,
        });
        files.push(("sealed_original", "original.mp4.age", seal_to(rcp, &plain)?, "application/age-encrypted"));
    }
    let mut artifacts = BTreeMap::new();
    let mut objects: Vec<crate::spool::StoreObject> = Vec::new();
    for (name, file, bytes, ct) in files {
        let key = format!("{prefix}/{file}");
        let a = Artifact {
            key: key.clone(),
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
            content_type: ct.into(),
        };
        objects.push((key, bytes, retain_until));
        artifacts.insert(name.to_string(), a);
    }
    let (sx, sy) = (clip.width as f32 / v.analysis_size.0 as f32, clip.height as f32 / v.analysis_size.1 as f32);
    let frame_dur = Duration::from_secs_f64(1.0 / clip.fps.max(1.0));
    let (start, end) = (v.wall(clip.first_pts), v.wall(clip.last_pts + frame_dur));
    let health = health(&v, &src, clip.fps);
    let mut reasons: Vec<String> =
        health.gaps.iter().map(|(at, s)| format!("stream gap of {s:.2} s at {at}")).collect();
    reasons.extend(health.events.iter().map(|(at, what)| format!("{what} at {at}")));
    let status = cam.registry.compliance(t.with_timezone(&offset(ctx.utc_offset_s)).date_naive());
    let mut manifest = Manifest {
        schema: MANIFEST_SCHEMA.into(),
        canonicalization: "RFC 8785 (JCS)".into(),
        evidence_id: v.evidence_id.clone(),
        site: ctx.site.clone(),
        site_name: ctx.site_name.clone(),
        camera: v.camera.clone(),
        camera_location: cam.location.clone(),
        camera_registry: cam.registry.clone(),
        worker: ctx.worker.clone(),
        rule: v.rule.clone(),
        violation_time_utc: rfc3339(t),
        violation_time_local: local(t, ctx.utc_offset_s),
        detection_frames_utc: v.detection_frames.iter().map(|p| rfc3339(v.wall(*p))).collect(),
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
        detections: v.detections.iter().map(|f| Detection { bbox: f.bbox.scale(sx, sy), ..f.clone() }).collect(),
        zone: v.zone.as_ref().map(|z| z.points.iter().map(|p| [p.x, p.y]).collect()),
        models: ctx.models.clone(),
        privacy_mask: cam.mask.as_ref().map(|m| MaskFacts {
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
        chain: crate::chain::ChainLink { seq: 0, prev_hash: String::new() },
        signing: SigningFacts { alg: "Ed25519".into(), key_id: ctx.signer.key_id.clone() },
    };
    let manifest_key = format!("{prefix}/manifest.json");
    let sig_key = format!("{prefix}/manifest.sig");
    // chain position, manifest, spool: under the camera's chain lock, so positions follow commits
    let claim = ctx.chains.claim(&v.camera).await?;
    manifest.chain = claim.link.clone();
    manifest.repeat_count_30d = repeat_count(&ctx.history_dir, &v.camera, &v.rule.id, t);
    let (bytes, sig, hash) = crate::manifest::seal(&manifest, &ctx.signer)?;
    let index = ctx.chains.index_objects(&v.camera, &claim, &v.evidence_id, &manifest_key, &hash, retain_until)?;
    // upload order: artifacts, signature, manifest (an item is complete once its manifest shows),
    // then the chain index entry
    objects.push((sig_key.clone(), sig, retain_until));
    objects.push((manifest_key.clone(), bytes, retain_until));
    objects.extend(index);

    let mut event = serde_json::to_value(&manifest)?;
    event["schema"] = "vigil.evidence.v1".into();
    event["manifest"] = serde_json::json!({ "key": manifest_key, "sha256": hash, "signature_key": sig_key });
    let subject = format!("vigil.evidence.{}.{}", ctx.site, v.camera);
    let entry = crate::publish::OutboxEntry { id: v.evidence_id.clone(), subject, payload: event.clone() };
    ctx.spool.put(&v.evidence_id, objects, &entry)?;
    ctx.chains.commit(&v.camera, claim, &hash)?;
    record_history(&ctx.history_dir, &v.camera, &v.rule.id, t)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::EncodedSample;

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
            rule: RuleFacts::new("no_mask", "no_mask", "minor", serde_json::json!({"threshold": 0.7})),
            detections: vec![],
            zone: None,
            trigger_pts: Duration::from_secs(5),
            detection_frames: vec![],
            conditions_at_trigger: vec![],
            stream_epoch: DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z").unwrap().with_timezone(&Utc),
            analysis_size: (640, 360),
            pre_roll: Duration::from_secs(5),
            post_roll: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_steady_stream_is_normal_and_a_gap_or_a_reconnect_is_not() {
        let steady: Vec<u64> = (0..250).map(|i| i * 40).collect();
        let h = health(&violation(), &clip(&steady, vec![]), 25.0);
        assert!(h.normal && h.gaps.is_empty(), "{h:?}");

        let mut gappy = steady.clone();
        gappy.retain(|&p| !(4000..6000).contains(&p)); // two seconds missing
        let h = health(&violation(), &clip(&gappy, vec![]), 25.0);
        assert!(!h.normal);
        assert_eq!(h.gaps.len(), 1);
        assert_eq!(h.gaps[0].0, "2026-11-23T00:00:03.960Z");
        assert!((h.gaps[0].1 - 2.04).abs() < 1e-9);

        let h = health(&violation(), &clip(&steady, vec![(Duration::from_secs(3), "stream down (eos)".into())]), 25.0);
        assert!(!h.normal);
        assert_eq!(h.events, vec![("2026-11-23T00:00:03.000Z".to_string(), "stream down (eos)".to_string())]);
    }

    #[test]
    fn rule_revision_is_a_content_hash_of_the_params() {
        let a = RuleFacts::new("no_mask", "no_mask", "minor", serde_json::json!({"threshold": 0.7, "window": 5}));
        let b = RuleFacts::new("no_mask", "no_mask", "minor", serde_json::json!({"window": 5, "threshold": 0.7}));
        let c = RuleFacts::new("no_mask", "no_mask", "minor", serde_json::json!({"threshold": 0.8, "window": 5}));
        assert_eq!(a.revision, b.revision);
        assert_ne!(a.revision, c.revision);
        assert_eq!(a.revision.len(), 16);
    }
}
