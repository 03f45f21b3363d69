//! Cutting an evidence clip (blocking, run off the ingest path): decode the ring-buffer samples,
//! keep the frames in `[trigger − pre, trigger + post)`, burn the privacy mask into every frame,
//! re-encode H.264 (x264) into MP4 at the source resolution and frame rate; keep the masked frame
//! nearest the trigger as the snapshot. Also the annotated snapshot, and the unmasked original
//! muxed without re-encoding (for sealing).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::frame::RgbFrame;
use crate::ingest::ClipSource;
use crate::ingest::Codec;
use crate::ingest::pipeline::{chain, make as element};
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
    /// What decoding found wrong inside the window: frames that did not decode, holes in the
    /// decoded video, the decoder's own warnings. Empty when every frame decoded.
    pub decode: DecodeFacts,
}

/// Decoding trouble inside a clip window (see [`Clip::decode`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodeFacts {
    /// Encoded frames in the window that produced no picture.
    pub missing_frames: u32,
    /// Holes in the decoded video longer than three frame intervals: (stream time of the last
    /// frame before, length).
    pub gaps: Vec<(Duration, Duration)>,
    /// Errors and warnings the decoder posted (distinct, at most [`MAX_DECODER_MESSAGES`]).
    pub messages: Vec<String>,
}

impl DecodeFacts {
    pub fn is_clean(&self) -> bool {
        self.missing_frames == 0 && self.gaps.is_empty() && self.messages.is_empty()
    }
}

/// Most decoder messages kept for one clip.
pub const MAX_DECODER_MESSAGES: usize = 4;

fn decoder_messages(p: &gst::Pipeline, into: &mut Vec<String>) {
    let Some(bus) = p.bus() else { return };
    while let Some(m) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Warning]) {
        let text = match m.view() {
            gst::MessageView::Error(e) => format!("decoder error: {}", e.error()),
            gst::MessageView::Warning(w) => format!("decoder warning: {}", w.error()),
            _ => continue,
        };
        let text = crate::util::printable(&text, 200);
        if !into.contains(&text) && into.len() < MAX_DECODER_MESSAGES {
            into.push(text);
        }
    }
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

/// Pushes a frame into the encoder's appsrc without ever blocking on a stalled encoder: waits
/// (bounded) while its queue is full, and fails with the encoder's error if it has one (an
/// appsrc with `block = true` would wait forever once its pipeline has stopped on an error).
fn push_bounded(src: &gst_app::AppSrc, p: &gst::Pipeline, b: gst::Buffer) -> Result<()> {
    let t = std::time::Instant::now();
    while src.current_level_bytes() >= src.max_bytes() {
        if let Some(e) = bus_error(p) {
            bail!("clip encoder: {e}");
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("clip encoder took no frame for 30 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if let Some(e) = bus_error(p) {
        bail!("clip encoder: {e}");
    }
    src.push_buffer(b).map_err(|e| anyhow!("clip encoder refused a frame: {e:?}"))?;
    Ok(())
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
    // decoder: appsrc ! <parser> ! <decoder> ! videoconvert ! RGB appsink, for the camera's codec
    let codec = source_codec(src)?;
    let dec = gst::Pipeline::with_name("clip-decode");
    let appsrc = gst_app::AppSrc::builder().caps(&src.caps).format(gst::Format::Time).build();
    let parse = codec.parser()?;
    let decoder = element(&codec.decoder("auto", &src.caps)?)?;
    // The decoder keeps its own thread count: on a damaged window the frame-threaded decoder
    // recovers the frames after the damage (85 of 85 in tests/hostile.rs row 6) where one thread
    // gave up until the next keyframe (29 of 85), and a clip decode is short-lived.
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
    let mut last_slot: Option<u64> = None;
    let mut decoded: Vec<Duration> = Vec::new();
    let mut messages = Vec::new();
    loop {
        decoder_messages(&dec, &mut messages);
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
            raster = mask.map(|m| m.stored_raster(width, height));
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
        let (epipe, esrc) = enc.as_ref().expect("encoder");
        let mut out = gst::Buffer::from_mut_slice(f.data);
        {
            let b = out.get_mut().expect("new buffer");
            // On the frame grid: cameras' timestamps jitter (RTP arrival, reordered B-frames
            // without DTS), and x264 counts time in frames, so two frames closer than one frame
            // period would collide. Rounding keeps every gap; the true frame times go to the
            // manifest.
            let mut slot = ((pts - first).as_secs_f64() / frame_dur.as_secs_f64()).round() as u64;
            if let Some(prev) = last_slot
                && slot <= prev
            {
                slot = prev + 1;
            }
            last_slot = Some(slot);
            b.set_pts(gst::ClockTime::from_nseconds(frame_dur.as_nanos() as u64 * slot));
            b.set_duration(gst::ClockTime::from_nseconds(frame_dur.as_nanos() as u64));
        }
        push_bounded(esrc, epipe, out)?;
        frames += 1;
        decoded.push(pts);
    }
    let _ = feeder.join();
    let dec_err = bus_error(&dec);
    if let Some(e) = &dec_err {
        messages.push(crate::util::printable(&format!("decoder error: {e}"), 200));
    }
    decoder_messages(&dec, &mut messages);
    dec.set_state(gst::State::Null)?;
    let in_window = src.samples.iter().filter(|s| s.pts >= start && s.pts < end).count() as u32;
    decoded.sort();
    let limit = frame_dur * 3;
    let decode = DecodeFacts {
        missing_frames: in_window.saturating_sub(frames),
        gaps: decoded.windows(2).filter(|w| w[1] - w[0] > limit).map(|w| (w[0], w[1] - w[0])).collect(),
        messages,
    };
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
        decode,
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
    // One thread per clip: clips of several cameras encode side by side, and each x264 frame
    // thread holds frames of its own (`vigil bench`, docs "Memory": peak RSS with clips of
    // 16 cameras in flight). A 10 s 640×360 clip still encodes in well under a second.
    x264.set_property("threads", 1u32);
    // 4:2:0 (H.264 High profile), what hardware and platform decoders play; 4:4:4 only for an
    // odd-sized picture, which 4:2:0 cannot hold
    let even = w.is_multiple_of(2) && h.is_multiple_of(2);
    let format = if even { gst_video::VideoFormat::I420 } else { gst_video::VideoFormat::Y444 };
    if !even {
        tracing::warn!(width = w, height = h, "clip: odd picture size; encoding 4:4:4 (4:2:0 needs even sizes)");
    }
    let raw = element("capsfilter")?;
    raw.set_property("caps", gst_video::VideoCapsBuilder::new().format(format).build());
    let parse = element("h264parse")?;
    let mux = element("mp4mux")?;
    // moov before mdat: a player starts before the whole file has arrived
    mux.set_property("faststart", true);
    let sink = element("filesink")?;
    sink.set_property("location", out.to_string_lossy().as_ref());
    chain(&p, &[src.upcast_ref(), &convert, &raw, &x264, &parse, &mux, &sink])?;
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

/// The codec of a clip's encoded samples.
pub fn source_codec(src: &ClipSource) -> Result<Codec> {
    Codec::of(&src.caps).ok_or_else(|| anyhow!("the buffered video is not an encoded stream ({})", src.caps))
}

/// Muxes the clip's encoded samples (unmasked, as the camera sent them, in its codec) without
/// re-encoding, into MP4 (H.264, H.265, MPEG-4 Part 2) or Matroska (others): the original
/// behind a sealed clip.
pub fn mux_original(src: &ClipSource, scratch: &Path) -> Result<Vec<u8>> {
    let codec = source_codec(src)?;
    let (muxer, ext, _) = codec.container(&src.caps);
    let p = gst::Pipeline::with_name("clip-original");
    let appsrc = gst_app::AppSrc::builder().caps(&src.caps).format(gst::Format::Time).build();
    let parse = codec.parser()?;
    let mux = element(muxer)?;
    let sink = element("filesink")?;
    let tmp = scratch.join(format!("original-{}.{ext}", ulid::Ulid::new()));
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
