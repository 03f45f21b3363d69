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
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::frame::RgbFrame;
use crate::ingest::{ClipSource, chain, make as element};
use crate::privacy::PrivacyMask;
use crate::rules::TrackedFace;

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
    p.bus()?
        .pop_filtered(&[gst::MessageType::Error])
        .and_then(|m| match m.view() {
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
    let appsrc = gst_app::AppSrc::builder()
        .caps(&src.caps)
        .format(gst::Format::Time)
        .build();
    let parse = element("h264parse")?;
    let decoder = element(&crate::ingest::choose_decoder("auto")?)?;
    let convert = element("videoconvert")?;
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(4)
        .caps(
            &gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgb)
                .build(),
        )
        .build();
    chain(
        &dec,
        &[
            appsrc.upcast_ref(),
            &parse,
            &decoder,
            &convert,
            sink.upcast_ref(),
        ],
    )?;
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
            None => bail!(
                "clip decode stalled: {}",
                bus_error(&dec).unwrap_or_else(|| "no frame in 10 s".into())
            ),
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
            fps = if fr.numer() > 0 && fr.denom() > 0 {
                fr.numer() as f64 / fr.denom() as f64
            } else {
                25.0
            };
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
        if snapshot
            .as_ref()
            .is_none_or(|s| pts.abs_diff(trigger) < s.pts.abs_diff(trigger))
        {
            snapshot = Some(f.clone());
        }
        let first = *first_pts.get_or_insert(pts);
        last_pts = pts;
        let (_, esrc) = enc.as_ref().expect("encoder");
        let mut out = gst::Buffer::from_mut_slice(f.data);
        {
            let b = out.get_mut().expect("new buffer");
            b.set_pts(gst::ClockTime::from_nseconds(
                (pts - first).as_nanos() as u64
            ));
            b.set_duration(gst::ClockTime::from_nseconds(frame_dur.as_nanos() as u64));
        }
        esrc.push_buffer(out)
            .map_err(|e| anyhow!("clip encoder refused a frame: {e:?}"))?;
        frames += 1;
    }
    let _ = feeder.join();
    let dec_err = bus_error(&dec);
    dec.set_state(gst::State::Null)?;
    let Some((pipe, esrc)) = enc else {
        bail!(
            "no decodable frame in the clip window{}",
            dec_err.map(|e| format!(": {e}")).unwrap_or_default()
        );
    };
    esrc.end_of_stream()?;
    let r = wait_eos(&pipe, "clip encode", Duration::from_secs(120));
    pipe.set_state(gst::State::Null)?;
    r?;
    let mp4 =
        std::fs::read(&tmp).with_context(|| format!("clip scratch file {}", tmp.display()))?;
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
    let fr = if fr.numer() > 0 {
        fr
    } else {
        gst::Fraction::new(25, 1)
    };
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
    chain(
        &p,
        &[src.upcast_ref(), &convert, &x264, &parse, &mux, &sink],
    )?;
    p.set_state(gst::State::Playing)?;
    Ok((p, src))
}

/// Draws boxes and labels for the faces of a violation onto a copy of the snapshot. Boxes arrive
/// in analysis-frame pixels and are scaled to the snapshot.
pub fn annotate(snapshot: &RgbFrame, faces: &[TrackedFace], analysis: (u32, u32)) -> RgbFrame {
    let mut a = snapshot.clone();
    let (sx, sy) = (
        a.width as f32 / analysis.0 as f32,
        a.height as f32 / analysis.1 as f32,
    );
    let scale = ((a.height / 180).max(2)) as i64;
    let thick = (a.height / 180).max(2);
    for f in faces {
        let b = f.bbox.scale(sx, sy);
        let color = if f.trigger {
            [255, 32, 32]
        } else {
            [255, 200, 0]
        };
        a.draw_box(b, color, thick);
        let label = format!(
            "#{} NO MASK {:.2} FACE {:.2}",
            f.track_id, f.no_mask_prob, f.face_score
        );
        let y = (b.y1 as i64 - 7 * scale - 2).max(0);
        a.draw_text(b.x1 as i64, y, &label, [255, 255, 255], color, scale);
    }
    a
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A stored artifact as referenced by the event.
#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    pub key: String,
    pub sha256: String,
    pub bytes: u64,
    pub content_type: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClipFacts {
    pub start_utc: String,
    pub end_utc: String,
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

#[derive(Debug, Clone, Serialize)]
pub struct RuleFacts {
    pub id: String,
    pub kind: &'static str,
    pub severity: String,
    pub params: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct MaskFacts {
    pub id: String,
    pub sha256: String,
    pub polygons: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelFacts {
    pub id: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerFacts {
    pub id: String,
    pub version: &'static str,
}

/// The evidence event: what downstream case systems receive, and `event.json` in the store.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceEvent {
    pub schema: &'static str,
    pub evidence_id: String,
    pub site: String,
    pub camera: String,
    pub camera_location: String,
    pub rule: RuleFacts,
    pub violation_time_utc: String,
    pub violation_time_local: String,
    pub clip: ClipFacts,
    pub artifacts: std::collections::BTreeMap<&'static str, Artifact>,
    /// Faces at the violating frame, boxes in source (clip) pixels.
    pub detections: Vec<TrackedFace>,
    pub models: Vec<ModelFacts>,
    pub privacy_mask: Option<MaskFacts>,
    pub worker: WorkerFacts,
}

/// Everything known about a violation when the rule fires.
#[derive(Debug, Clone)]
pub struct Violation {
    pub evidence_id: String,
    pub site: String,
    pub camera: String,
    pub location: String,
    pub rule: RuleFacts,
    pub faces: Vec<TrackedFace>,
    pub trigger_pts: Duration,
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
    let off =
        FixedOffset::east_opt(offset_s).unwrap_or(FixedOffset::east_opt(0).expect("zero offset"));
    t.with_timezone(&off)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What the evidence stage needs besides the violation.
pub struct EvidenceContext {
    pub store: crate::store::Store,
    pub publisher: std::sync::Arc<crate::publish::Publisher>,
    pub models: Vec<ModelFacts>,
    pub worker: WorkerFacts,
    pub utc_offset_s: i32,
    pub jpeg_quality: u8,
    pub quantizer: u32,
    pub scratch: std::path::PathBuf,
}

/// Cuts the clip, stores the artifacts, then records and publishes the event.
pub async fn produce(
    ctx: &EvidenceContext,
    v: Violation,
    src: ClipSource,
    mask: Option<PrivacyMask>,
) -> Result<EvidenceEvent> {
    let (quant, scratch, trigger) = (ctx.quantizer, ctx.scratch.clone(), v.trigger_pts);
    let mask2 = mask.clone();
    let (clip, src) = tokio::task::spawn_blocking(move || {
        let r = cut_clip(&src, mask2.as_ref(), trigger, quant, &scratch);
        (r, src)
    })
    .await?;
    let clip = clip?;
    let annotated = annotate(&clip.snapshot, &v.faces, v.analysis_size);
    let snap = clip.snapshot.to_jpeg(ctx.jpeg_quality);
    let ann = annotated.to_jpeg(ctx.jpeg_quality);
    let t = v.wall(v.trigger_pts);
    let prefix = crate::store::evidence_prefix(&v.site, &v.camera, t, &v.evidence_id);
    let mut artifacts = std::collections::BTreeMap::new();
    for (name, file, bytes, ct) in [
        ("clip", "clip.mp4", clip.mp4, "video/mp4"),
        ("snapshot", "snapshot.jpg", snap, "image/jpeg"),
        (
            "snapshot_annotated",
            "snapshot-annotated.jpg",
            ann,
            "image/jpeg",
        ),
    ] {
        let key = format!("{prefix}/{file}");
        let a = Artifact {
            key: key.clone(),
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
            content_type: ct,
        };
        ctx.store.put_new(&key, Bytes::from(bytes)).await?;
        artifacts.insert(name, a);
    }
    let (sx, sy) = (
        clip.width as f32 / v.analysis_size.0 as f32,
        clip.height as f32 / v.analysis_size.1 as f32,
    );
    let frame_dur = Duration::from_secs_f64(1.0 / clip.fps.max(1.0));
    let event = EvidenceEvent {
        schema: "vigil.evidence.v1",
        evidence_id: v.evidence_id.clone(),
        site: v.site.clone(),
        camera: v.camera.clone(),
        camera_location: v.location.clone(),
        rule: v.rule.clone(),
        violation_time_utc: rfc3339(t),
        violation_time_local: local(t, ctx.utc_offset_s),
        clip: ClipFacts {
            start_utc: rfc3339(v.wall(clip.first_pts)),
            end_utc: rfc3339(v.wall(clip.last_pts + frame_dur)),
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
        artifacts,
        detections: v
            .faces
            .iter()
            .map(|f| TrackedFace {
                bbox: f.bbox.scale(sx, sy),
                ..f.clone()
            })
            .collect(),
        models: ctx.models.clone(),
        privacy_mask: mask.map(|m| MaskFacts {
            id: m.id,
            sha256: m.sha256,
            polygons: m.polygons.len(),
        }),
        worker: ctx.worker.clone(),
    };
    let json = serde_json::to_value(&event)?;
    ctx.store
        .put_new(
            &format!("{prefix}/event.json"),
            Bytes::from(serde_json::to_vec_pretty(&json)?),
        )
        .await?;
    let subject = format!("vigil.evidence.{}.{}", v.site, v.camera);
    ctx.publisher
        .submit(crate::publish::OutboxEntry {
            id: v.evidence_id.clone(),
            subject,
            payload: json,
        })
        .await?;
    Ok(event)
}
