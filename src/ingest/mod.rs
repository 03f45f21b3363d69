//! Ingest stage: one GStreamer pipeline per camera.
//!
//! ```text
//! rtspsrc ! rtph264depay ─┐
//!   or filesrc ! parsebin ┴► h264parse ! tee ─► queue ! appsink "encoded"  → EncodedRing (pre-roll)
//!                                           └─► queue ! <decoder> ! videorate ! videoconvert ! videoscale
//!                                                     ! RGB, analysis width ! appsink "analysis" → frames
//! ```
//! Analysis frames are handed over with `try_send` into a bounded queue: when analysis is behind, the
//! newest frame is dropped and counted; ingest never waits for analysis (except for `realtime =
//! false` file replay, which exists to analyse every frame). Timestamps are running time plus an
//! offset that keeps them monotonic across file loops and RTSP reconnects.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::config::{AnalysisConfig, Camera, Source};
use crate::frame::RgbFrame;

pub mod files;
pub mod pipeline;
pub mod ring;

pub use files::analysis_frames;
pub use pipeline::choose_decoder;
pub use ring::{ClipSource, EncodedRing, EncodedSample};

use crate::telemetry::{CameraStats, Condition};
use pipeline::{link_dynamic_video, make, running_time};

/// How a camera's ingest ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraEnd {
    /// File source reached its end.
    Ended,
    /// Shutdown requested.
    Stopped,
    /// Permanent failure (unreadable or unsupported file), with the reason.
    Failed(String),
}

struct Built {
    pipeline: gst::Pipeline,
}

/// The analysis queue of one camera: frames to the analysis thread, and their pixel buffers
/// back from it, so that a steady stream allocates no frame buffers.
pub struct FrameQueue {
    pub frames: SyncSender<RgbFrame>,
    pub spare: Mutex<std::sync::mpsc::Receiver<Vec<u8>>>,
}

/// A queue of `depth` frames; returns it, the analysis side's receiver and the sender for spent
/// buffers.
pub fn frame_queue(depth: usize) -> (FrameQueue, std::sync::mpsc::Receiver<RgbFrame>, SyncSender<Vec<u8>>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(depth);
    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel(depth + 2);
    (FrameQueue { frames: tx, spare: Mutex::new(spare_rx) }, rx, spare_tx)
}

/// Everything the streaming threads share with the camera thread.
struct Shared {
    camera: String,
    ring: Arc<Mutex<EncodedRing>>,
    stats: Arc<CameraStats>,
    frames: FrameQueue,
    realtime: bool,
    offset_ns: AtomicU64,
    period: Duration,
    next_due: Mutex<Option<Duration>>,
    shutdown: Arc<AtomicBool>,
    /// Milliseconds since `started` of the last encoded sample (stall watchdog).
    last_sample_ms: AtomicU64,
    started: Instant,
    /// Set while the stream is down; the first sample after it ends the outage.
    down_since: Mutex<Option<Instant>>,
    stall: Duration,
}

fn build(cam: &Camera, decoder: &str, analysis: &AnalysisConfig, sh: &Arc<Shared>) -> Result<Built> {
    let pipeline = gst::Pipeline::with_name(&format!("camera-{}", cam.id));
    let parse = make("h264parse")?;
    parse.set_property("config-interval", -1i32);
    let bytestream = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build(),
        )
        .build()?;
    let tee = make("tee")?;
    // Queues bounded by buffer count only: the default 1 s time limit deadlocks preroll on
    // low-frame-rate streams (a 10 fps camera fills 1 s before the decoder, which needs a few
    // frames of reordering, has output the first picture the other branch waits for). 32 frames
    // cover the decoder's delay; the tee couples the branches, so the encoded ring never runs
    // more than this (plus the analysis queue) ahead of analysis.
    let queue = || -> Result<gst::Element> {
        Ok(gst::ElementFactory::make("queue")
            .property("max-size-time", 0u64)
            .property("max-size-bytes", 0u32)
            .property("max-size-buffers", 32u32)
            .build()?)
    };
    let q_enc = queue()?;
    let q_dec = queue()?;
    let dec = make(decoder)?;
    let rate = make("videorate")?;
    rate.set_property("drop-only", true);
    rate.set_property("max-rate", analysis.fps.ceil().max(1.0) as i32);
    let convert = make("videoconvert")?;
    let scale = make("videoscale")?;
    let sync = sh.realtime;
    let enc_sink = gst_app::AppSink::builder().name("encoded").sync(sync).build();
    let ana_sink = gst_app::AppSink::builder()
        .name("analysis")
        .sync(sync)
        .max_buffers(1)
        .caps(
            &gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgb)
                .width(analysis.width as i32)
                .pixel_aspect_ratio(gst::Fraction::new(1, 1))
                .build(),
        )
        .build();
    pipeline.add_many([&parse, &bytestream, &tee, &q_enc, &q_dec, &dec, &rate, &convert, &scale])?;
    pipeline.add_many([enc_sink.upcast_ref::<gst::Element>(), ana_sink.upcast_ref()])?;
    gst::Element::link_many([&parse, &bytestream, &tee])?;
    gst::Element::link_many([&tee, &q_enc, enc_sink.upcast_ref()])?;
    gst::Element::link_many([&tee, &q_dec, &dec, &rate, &convert, &scale, ana_sink.upcast_ref()])?;

    match &cam.source {
        Source::File { path, .. } => {
            let src = make("filesrc")?;
            src.set_property("location", path.to_string_lossy().as_ref());
            let demux = make("parsebin")?;
            pipeline.add_many([&src, &demux])?;
            src.link(&demux)?;
            link_dynamic_video(&demux, &parse, &pipeline, "video/x-h264");
        }
        Source::Rtsp { url, tcp } => {
            let src = make("rtspsrc")?;
            src.set_property("location", url.expose());
            src.set_property("latency", 200u32);
            src.set_property_from_str("protocols", if *tcp { "tcp" } else { "udp" });
            let depay = make("rtph264depay")?;
            pipeline.add_many([&src, &depay])?;
            depay.link(&parse)?;
            link_dynamic_video(&src, &depay, &pipeline, "application/x-rtp");
        }
    }

    let s = sh.clone();
    enc_sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                on_encoded(&s, &sample);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let s = sh.clone();
    ana_sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                on_analysis(&s, &sample)
            })
            .build(),
    );
    Ok(Built { pipeline })
}

fn on_encoded(sh: &Shared, sample: &gst::Sample) {
    let Some(buf) = sample.buffer() else { return };
    let off = Duration::from_nanos(sh.offset_ns.load(Ordering::Relaxed));
    let Some(pts) = running_time(sample, buf.pts()).or_else(|| running_time(sample, buf.dts())) else {
        return;
    };
    let Ok(map) = buf.map_readable() else { return };
    let s = EncodedSample {
        pts: pts + off,
        dts: running_time(sample, buf.dts()).map(|d| d + off),
        duration: buf.duration().map(|d| Duration::from_nanos(d.nseconds())),
        keyframe: !buf.flags().contains(gst::BufferFlags::DELTA_UNIT),
        data: Bytes::copy_from_slice(map.as_slice()),
    };
    sh.stats.encoded_frames.inc();
    sh.last_sample_ms.store(sh.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    if let Some(since) = sh.down_since.lock().expect("down").take() {
        crate::telemetry::Event::Health {
            camera: &sh.camera,
            condition: Condition::Stream,
            active: false,
            detail: "video flowing again",
            lasted: Some(since.elapsed()),
        }
        .emit();
    }
    let mut ring = sh.ring.lock().expect("ring lock");
    if let Some(caps) = sample.caps()
        && ring.caps.as_ref().is_none_or(|c| c.as_ref() != caps)
    {
        ring.caps = Some(caps.to_owned());
    }
    ring.push(s);
}

fn on_analysis(sh: &Shared, sample: &gst::Sample) -> Result<gst::FlowSuccess, gst::FlowError> {
    let buf = sample.buffer().ok_or(gst::FlowError::Error)?;
    let Some(pts) = running_time(sample, buf.pts()) else {
        return Ok(gst::FlowSuccess::Ok);
    };
    let pts = pts + Duration::from_nanos(sh.offset_ns.load(Ordering::Relaxed));
    {
        // thin to the configured rate (videorate already capped it at ceil(fps))
        let mut due = sh.next_due.lock().expect("due lock");
        if due.is_some_and(|d| pts + Duration::from_millis(2) < d) {
            return Ok(gst::FlowSuccess::Ok);
        }
        *due = Some(due.map_or(pts, |d| (d + sh.period).max(pts)));
    }
    let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|_| gst::FlowError::NotNegotiated)?;
    let (w, h) = (info.width(), info.height());
    let stride = info.stride()[0] as usize;
    let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
    let spare = sh.frames.spare.lock().ok().and_then(|r| r.try_recv().ok()).unwrap_or_default();
    let mut frame = RgbFrame::from_rows_into(spare, &map, w, h, stride, pts);
    sh.stats.analysis_offered.inc();
    loop {
        match sh.frames.frames.try_send(frame) {
            Ok(()) => return Ok(gst::FlowSuccess::Ok),
            Err(TrySendError::Disconnected(_)) => return Err(gst::FlowError::Eos),
            Err(TrySendError::Full(f)) => {
                if sh.realtime || sh.shutdown.load(Ordering::Relaxed) {
                    sh.stats.analysis_dropped.inc();
                    return Ok(gst::FlowSuccess::Ok);
                }
                frame = f;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Runs one camera until its source ends, fails for good, or shutdown is requested. RTSP sources
/// reconnect with capped exponential backoff; file sources may loop.
pub fn run_camera(
    cam: &Camera,
    analysis: AnalysisConfig,
    ring: Arc<Mutex<EncodedRing>>,
    stats: Arc<CameraStats>,
    frames: FrameQueue,
    shutdown: Arc<AtomicBool>,
    epoch: Instant,
) -> CameraEnd {
    let decoder = match choose_decoder(&cam.decoder) {
        Ok(d) => d,
        Err(e) => return CameraEnd::Failed(e.to_string()),
    };
    let (realtime, what) = match &cam.source {
        Source::File { path, realtime, .. } => (*realtime, format!("file {}", path.display())),
        Source::Rtsp { url, .. } => (true, format!("rtsp {url}")),
    };
    tracing::info!(camera = %cam.id, source = %what, decoder = %decoder, hardware = !decoder.starts_with("avdec") && decoder != "openh264dec", "camera starting");
    let sh = Arc::new(Shared {
        camera: cam.id.clone(),
        ring: ring.clone(),
        stats: stats.clone(),
        frames,
        realtime,
        offset_ns: AtomicU64::new(0),
        period: Duration::from_secs_f64(1.0 / analysis.fps),
        next_due: Mutex::new(None),
        shutdown: shutdown.clone(),
        last_sample_ms: AtomicU64::new(0),
        started: Instant::now(),
        down_since: Mutex::new(None),
        stall: Duration::from_secs_f64(cam.stall_s),
    });
    let mut backoff = Duration::from_millis(500);
    let end = loop {
        if shutdown.load(Ordering::Relaxed) {
            break CameraEnd::Stopped;
        }
        let outcome = match build(cam, &decoder, &analysis, &sh) {
            Ok(b) => play(&b.pipeline, &sh),
            Err(e) => Outcome::Error(format!("cannot build pipeline: {e}")),
        };
        // The next run continues the timeline after the last sample seen; a live source continues
        // at wall-clock time, so that an outage shows as a gap and stream time stays true.
        if let Some(last) = ring.lock().expect("ring").last_pts {
            let mut next = last + Duration::from_millis(40);
            if matches!(cam.source, Source::Rtsp { .. }) {
                next = next.max(epoch.elapsed());
            }
            sh.offset_ns.store(next.as_nanos() as u64, Ordering::Relaxed);
            *sh.next_due.lock().expect("due") = None;
        }
        match (outcome, &cam.source) {
            (Outcome::Shutdown, _) => break CameraEnd::Stopped,
            (Outcome::Eos, Source::File { looping: true, .. }) => {
                tracing::debug!(camera = %sh.camera, "file ended, looping");
                continue;
            }
            (Outcome::Eos, Source::File { .. }) => break CameraEnd::Ended,
            (Outcome::Error(e), Source::File { path, .. }) => {
                break CameraEnd::Failed(format!("file {}: cannot read it as H.264 video: {e}", path.display()));
            }
            (o, Source::Rtsp { url, .. }) => {
                let why = match o {
                    Outcome::Eos => "stream ended".to_string(),
                    Outcome::Error(e) => e,
                    Outcome::Shutdown => unreachable!(),
                };
                {
                    let mut r = ring.lock().expect("ring");
                    let at = r.last_pts.unwrap_or_default();
                    r.mark(at, format!("stream down ({why})"));
                    r.finish_all();
                }
                stats.reconnects.inc();
                {
                    let mut down = sh.down_since.lock().expect("down");
                    if down.is_none() {
                        *down = Some(Instant::now());
                        crate::telemetry::Event::Health {
                            camera: &cam.id,
                            condition: Condition::Stream,
                            active: true,
                            detail: &why,
                            lasted: None,
                        }
                        .emit();
                    }
                }
                let nanos =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
                let jitter = Duration::from_millis(u64::from(nanos ^ std::process::id()) % 250);
                tracing::warn!(camera = %sh.camera, url = %url, error = %why, retry_in_ms = (backoff + jitter).as_millis() as u64, "camera down; reconnecting");
                let until = Instant::now() + backoff + jitter;
                while Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs_f64(cam.reconnect_max_s));
            }
        }
    };
    ring.lock().expect("ring").finish_all();
    end
}

enum Outcome {
    Eos,
    Error(String),
    Shutdown,
}

fn play(pipeline: &gst::Pipeline, sh: &Shared) -> Outcome {
    let bus = pipeline.bus().expect("pipeline has a bus");
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        // the bus usually holds the real reason
        let reason = bus
            .timed_pop_filtered(gst::ClockTime::from_mseconds(200), &[gst::MessageType::Error])
            .and_then(|m| match m.view() {
                gst::MessageView::Error(err) => Some(err.error().to_string()),
                _ => None,
            })
            .unwrap_or_else(|| e.to_string());
        let _ = pipeline.set_state(gst::State::Null);
        return Outcome::Error(reason);
    }
    let run_start = sh.started.elapsed();
    let outcome = loop {
        if sh.shutdown.load(Ordering::Relaxed) {
            break Outcome::Shutdown;
        }
        // stall watchdog: no video for `stall` (since the last sample, or since this run started)
        let last = Duration::from_millis(sh.last_sample_ms.load(Ordering::Relaxed)).max(run_start);
        if sh.started.elapsed().saturating_sub(last) > sh.stall {
            break Outcome::Error(format!("stalled: no video for {:.1} s", sh.stall.as_secs_f64()));
        }
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(100),
            &[gst::MessageType::Eos, gst::MessageType::Error, gst::MessageType::Warning],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Outcome::Eos,
            gst::MessageView::Error(err) => {
                let src = err.src().map(|s| s.name().to_string()).unwrap_or_default();
                tracing::debug!(camera = %sh.camera, element = %src, debug = ?err.debug(), "gstreamer error");
                break Outcome::Error(err.error().to_string());
            }
            gst::MessageView::Warning(w) => {
                tracing::warn!(camera = %sh.camera, warning = %w.error(), "gstreamer warning");
            }
            _ => {}
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    outcome
}
