//! Ingest stage: one GStreamer pipeline per camera.
//!
//! ```text
//! rtspsrc ! <depayloader> ─┐
//!   or filesrc ! parsebin ─┴► <parser> ! tee ─► queue ! appsink "encoded"  → EncodedRing (pre-roll)
//!                                           └─► queue ! <decoder> ! videorate ! videoconvert ! videoscale
//!                                                     ! RGB, analysis width ! appsink "analysis" → frames
//! ```
//! Analysis frames are handed over with `try_send` into a bounded queue: when analysis is behind, the
//! newest frame is dropped and counted; ingest never waits for analysis (except for `realtime =
//! false` file replay, which exists to analyse every frame). Timestamps are running time plus an
//! offset that keeps them monotonic across file loops and RTSP reconnects. Depayloader, parser and
//! decoder follow the codec the camera sends ([`codec`]): H.264, H.265, MPEG-4 Part 2, Motion
//! JPEG, or anything else a decoder installed here takes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::config::{AnalysisConfig, Camera, Source};
use crate::frame::RgbFrame;
pub use codec::Codec;

pub mod codec;
pub mod files;
pub mod pipeline;
pub mod ring;

pub use files::analysis_frames;

pub use ring::{ClipSource, EncodedRing, EncodedSample};

use crate::telemetry::{CameraStats, Condition};
use pipeline::{make, running_time};

/// How a camera's main and sub stream are aligned (written into manifests).
pub const STREAM_ALIGNMENT: &str = "one pipeline clock: both streams' buffers are timestamped in the running time of the \
     same GStreamer pipeline (RTSP: rtspsrc's jitterbuffer maps RTP time to arrival time; files: both start at 0)";

/// How a camera's ingest ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraEnd {
    /// File source reached its end.
    Ended,
    /// Shutdown requested.
    Stopped,
    /// Permanent failure (unreadable or unsupported file), with the reason.
    Failed(String),
    /// Shutdown requested while the live stream was down (reconnecting): the last error, for
    /// how long it had been down, and whether it delivered any video at all in this run.
    Down(String, Duration, bool),
}

impl CameraEnd {
    /// The run's summary says this camera failed (its exit code is then 1): a permanent failure,
    /// or a live camera that never delivered video in the whole run (a dead address, wrong
    /// credentials). One that worked and happened to be down when the run was stopped is named
    /// in the summary but is no failure of the run.
    pub fn failed(&self) -> bool {
        matches!(self, CameraEnd::Failed(_) | CameraEnd::Down(_, _, false))
    }

    /// How the run's summary names it.
    pub fn describe(&self) -> String {
        match self {
            CameraEnd::Failed(why) => format!("failed: {why}"),
            CameraEnd::Down(why, d, true) => {
                format!("down for {:.0} s at shutdown (reconnecting): {why}", d.as_secs_f64())
            }
            CameraEnd::Down(why, d, false) => format!(
                "down for {:.0} s at shutdown (reconnecting; no video at all in this run): {why}",
                d.as_secs_f64()
            ),
            CameraEnd::Ended => "ended".into(),
            CameraEnd::Stopped => "stopped".into(),
        }
    }
}

struct Built {
    pipeline: gst::Pipeline,
}

/// The analysis queue of one camera: frames to the analysis thread, and their pixel buffers
/// back from it, so that a steady stream allocates no frame buffers. `queued` counts the frames
/// in the queue, so that a frame is copied out of GStreamer only once the queue has room for it:
/// a camera then holds at most `depth` queued frames and the one being analysed, never a further
/// copy waiting for room.
pub struct FrameQueue {
    /// `None` once closed (the camera ended): a pipeline left behind sends into nothing.
    frames: Mutex<Option<SyncSender<RgbFrame>>>,
    spare: Mutex<std::sync::mpsc::Receiver<Vec<u8>>>,
    queued: Arc<AtomicUsize>,
    depth: usize,
}

impl FrameQueue {
    fn has_room(&self) -> bool {
        self.queued.load(Ordering::Acquire) < self.depth
    }

    /// A pixel buffer analysis gave back, or a new one.
    fn spare(&self) -> Vec<u8> {
        self.spare.lock().ok().and_then(|r| r.try_recv().ok()).unwrap_or_default()
    }

    /// Queues `frame`, counted (before it is sent, so that analysis never sees the count below
    /// what it received).
    fn send(&self, frame: RgbFrame) -> Result<(), TrySendError<RgbFrame>> {
        let frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = frames.as_ref() else { return Err(TrySendError::Disconnected(frame)) };
        self.queued.fetch_add(1, Ordering::AcqRel);
        tx.try_send(frame).inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Ends the queue: analysis sees the camera end even while a pipeline that would not stop
    /// still holds the queue.
    fn close(&self) {
        self.frames.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The analysis side of a camera's frame queue: frames in, their pixel buffers back.
pub struct FrameSource {
    frames: std::sync::mpsc::Receiver<RgbFrame>,
    queued: Option<Arc<AtomicUsize>>,
    spare: Option<SyncSender<Vec<u8>>>,
}

impl FrameSource {
    /// Frames from a plain channel (no buffers given back).
    pub fn plain(frames: std::sync::mpsc::Receiver<RgbFrame>) -> FrameSource {
        FrameSource { frames, queued: None, spare: None }
    }

    /// The next frame; `None` once the camera's ingest has ended.
    pub fn recv(&self) -> Option<RgbFrame> {
        let f = self.frames.recv().ok()?;
        if let Some(q) = &self.queued {
            q.fetch_sub(1, Ordering::AcqRel);
        }
        Some(f)
    }

    /// Gives a spent frame's pixel buffer back to ingest for the next frame.
    pub fn give_back(&self, data: Vec<u8>) {
        if let Some(s) = &self.spare {
            let _ = s.try_send(data);
        }
    }
}

impl Drop for FrameSource {
    fn drop(&mut self) {
        // analysis has ended: ingest waiting for room must find the queue closed, not full
        if let Some(q) = &self.queued {
            q.store(0, Ordering::Release);
        }
    }
}

/// A queue of `depth` frames: ingest's end and analysis's end.
pub fn frame_queue(depth: usize) -> (FrameQueue, FrameSource) {
    let depth = depth.max(1);
    let (tx, rx) = std::sync::mpsc::sync_channel(depth);
    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel(depth + 1);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        FrameQueue { frames: Mutex::new(Some(tx)), spare: Mutex::new(spare_rx), queued: queued.clone(), depth },
        FrameSource { frames: rx, queued: Some(queued), spare: Some(spare_tx) },
    )
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
    /// Milliseconds since `started` at which file replay (`realtime = false`) last waited for
    /// analysis to take a frame: the source is held back, not stalled (the watchdog skips it).
    held_ms: AtomicU64,
    started: Instant,
    /// Set while the stream is down; the first sample after it ends the outage.
    down_since: Mutex<Option<Instant>>,
    stall: Duration,
    /// The camera has a sub stream (`analysis_source`): analysis and the encoded ring come from
    /// two sources.
    dual: bool,
    /// Milliseconds since `started` of the last analysis sample (the sub stream's watchdog).
    last_analysis_ms: AtomicU64,
    /// Timestamp of the last analysis sample, ns (file replay: the main stream waits for it).
    analysis_pts_ns: AtomicU64,
    /// The analysis branch reached its end (file replay: the main stream stops waiting).
    analysis_eos: AtomicBool,
    /// An RTSP camera (not a file).
    live: bool,
    /// Which pipeline run is current: a pipeline left behind (it would not stop) keeps its
    /// callbacks, which then drop what they get instead of mixing an old timeline into the ring.
    run: AtomicU64,
}

impl Shared {
    /// File replay waits for analysis: the source is held back on purpose, not stalled.
    fn hold(&self) {
        self.held_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

fn build(cam: &Camera, analysis: &AnalysisConfig, sh: &Arc<Shared>) -> Result<Built> {
    let pipeline = gst::Pipeline::with_name(&format!("camera-{}", cam.id));
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
    let rate = make("videorate")?;
    rate.set_property("drop-only", true);
    rate.set_property("max-rate", analysis.fps.ceil().max(1.0) as i32);
    let convert = make("videoconvert")?;
    let scale = make("videoscale")?;
    let sync = sh.realtime;
    // no `last-sample`: a sink keeping the buffer it last handed over holds one more analysis
    // frame (0.7 MB at 640×360) per camera for nothing
    let enc_sink = gst_app::AppSink::builder().name("encoded").sync(sync).enable_last_sample(false).build();
    let ana_sink = gst_app::AppSink::builder()
        .name("analysis")
        .sync(sync)
        .enable_last_sample(false)
        .max_buffers(1)
        .caps(
            &gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgb)
                .width(analysis.width as i32)
                .pixel_aspect_ratio(gst::Fraction::new(1, 1))
                .build(),
        )
        .build();
    pipeline.add_many([&q_enc, &q_dec, &rate, &convert, &scale])?;
    pipeline.add_many([enc_sink.upcast_ref::<gst::Element>(), ana_sink.upcast_ref()])?;
    q_enc.link(&enc_sink)?;
    // convert, then scale: scaling first (in I420) saved 0.7 MB per stream but changed the
    // analysis pixels enough that borderline faces of tests/end_to_end.rs's walking clip no
    // longer reached the threshold (and eval-clips decodes this way too)
    gst::Element::link_many([&rate, &convert, &scale, ana_sink.upcast_ref()])?;
    // The parser and decoder follow the codec, known once a source's video pad appears. One
    // source feeds both branches through a tee; with a sub stream the main stream feeds the
    // encoded ring only and the sub stream analysis only.
    let front = |role: Role| {
        Arc::new(Front {
            camera: cam.id.clone(),
            decoder_pref: cam.decoder.clone(),
            decoder_threads: analysis.decoder_threads,
            pipeline: pipeline.downgrade(),
            role,
            linked: AtomicBool::new(false),
        })
    };
    let analysis = AnalysisBranch { q_dec: q_dec.downgrade(), rate: rate.downgrade() };
    match &cam.analysis_source {
        None => {
            pipeline.add(&tee)?;
            tee.link(&q_enc)?;
            tee.link(&q_dec)?;
            add_source(&pipeline, &cam.source, "main", front(Role::Both { tee: tee.downgrade(), analysis }))?;
        }
        Some(sub) => {
            add_source(&pipeline, &cam.source, "main", front(Role::Encoded { q_enc: q_enc.downgrade() }))?;
            add_source(&pipeline, sub, "sub", front(Role::Analysis(analysis)))?;
        }
    }

    set_callbacks(&enc_sink, &ana_sink, sh);
    Ok(Built { pipeline })
}

/// The two sinks hand their samples to the camera's shared state, for this run of the pipeline
/// only (a sample of an earlier run, after a restart, is refused as flushing).
fn set_callbacks(enc_sink: &gst_app::AppSink, ana_sink: &gst_app::AppSink, sh: &Arc<Shared>) {
    let (s, run) = (sh.clone(), sh.run.load(Ordering::SeqCst));
    enc_sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if s.run.load(Ordering::SeqCst) != run {
                    return Err(gst::FlowError::Flushing);
                }
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
                if s.run.load(Ordering::SeqCst) != run {
                    return Err(gst::FlowError::Flushing);
                }
                on_analysis(&s, &sample)
            })
            .eos({
                let s = sh.clone();
                move |_| s.analysis_eos.store(true, Ordering::SeqCst)
            })
            .build(),
    );
}

/// Adds a camera source (`name`: "main" or "sub", which errors and health name) whose video pad
/// goes to `front`.
fn add_source(pipeline: &gst::Pipeline, source: &Source, name: &str, front: Arc<Front>) -> Result<()> {
    match source {
        Source::File { path, .. } => {
            let src = gst::ElementFactory::make("filesrc").name(format!("{name}-file")).build()?;
            src.set_property("location", path.to_string_lossy().as_ref());
            let demux = gst::ElementFactory::make("parsebin").name(format!("{name}-demux")).build()?;
            pipeline.add_many([&src, &demux])?;
            src.link(&demux)?;
            demux.connect_pad_added(move |el, pad| front.on_pad(el, pad));
        }
        Source::Rtsp { url, tcp, latency_ms } => {
            let src = gst::ElementFactory::make("rtspsrc").name(format!("{name}-rtsp")).build()?;
            src.set_property("location", url.expose());
            src.set_property("latency", *latency_ms);
            src.set_property_from_str("protocols", if *tcp { "tcp" } else { "udp" });
            pipeline.add(&src)?;
            src.connect_pad_added(move |el, pad| front.on_pad(el, pad));
        }
    }
    Ok(())
}

/// Where a source's parsed video goes.
enum Role {
    /// The one source of the camera: a tee to the encoded ring and to analysis.
    Both { tee: gst::glib::WeakRef<gst::Element>, analysis: AnalysisBranch },
    /// The main stream of a camera with a sub stream: the encoded ring only.
    Encoded { q_enc: gst::glib::WeakRef<gst::Element> },
    /// Analysis only.
    Analysis(AnalysisBranch),
}

/// The analysis branch's ends: the decoder goes between them (`queue ! decoder ! videorate`).
struct AnalysisBranch {
    q_dec: gst::glib::WeakRef<gst::Element>,
    rate: gst::glib::WeakRef<gst::Element>,
}

/// The codec-dependent front of a camera source, built when its video pad appears:
/// `[depayloader !] parser ! capsfilter` to the [`Role`]'s elements.
struct Front {
    camera: String,
    decoder_pref: String,
    /// `[analysis] decoder_threads`, for a software decoder.
    decoder_threads: u32,
    pipeline: gst::glib::WeakRef<gst::Pipeline>,
    role: Role,
    linked: AtomicBool,
}

impl Front {
    fn on_pad(&self, el: &gst::Element, pad: &gst::Pad) {
        let Some(pipeline) = self.pipeline.upgrade() else { return };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(s) = caps.structure(0) else { return };
        let rtp_video = s.name() == "application/x-rtp" && s.get::<&str>("media").ok() == Some("video");
        let codec = Codec::of(&caps);
        if (!rtp_video && codec.is_none()) || self.linked.swap(true, Ordering::SeqCst) {
            pipeline::discard_pad(&pipeline, pad);
            return;
        }
        if let Err(e) = self.attach(&pipeline, pad, rtp_video, codec) {
            gst::element_error!(el, gst::StreamError::CodecNotFound, ["{}", e]);
        }
    }

    fn attach(&self, pipeline: &gst::Pipeline, pad: &gst::Pad, rtp: bool, codec: Option<Codec>) -> Result<()> {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let (depay, codec, dec_caps) = if rtp {
            let (d, c) = codec::depayloader(&caps)?;
            let dec_caps = d.static_pad("src").map(|p| p.pad_template_caps()).unwrap_or_else(gst::Caps::new_any);
            (Some(d), c, dec_caps)
        } else {
            (None, codec.expect("video caps"), caps)
        };
        let parse = codec.parser()?;
        let filter = gst::ElementFactory::make("capsfilter").property("caps", codec.parsed_caps()).build()?;
        // elements named after their stream, so that an error says which stream failed
        let prefix = if matches!(self.role, Role::Analysis(_)) { "sub" } else { "main" };
        parse.set_property("name", format!("{prefix}-parse"));
        pipeline.add_many([&parse, &filter])?;
        parse.link(&filter)?;
        let gone = || anyhow!("pipeline gone");
        // the decoder, between the analysis queue and videorate
        let decode = |a: &AnalysisBranch| -> Result<(gst::Element, String)> {
            let (q_dec, rate) = (a.q_dec.upgrade().ok_or_else(gone)?, a.rate.upgrade().ok_or_else(gone)?);
            let decoder = codec.decoder(&self.decoder_pref, &dec_caps)?;
            let dec = make(&decoder)?;
            dec.set_property("name", format!("{prefix}-decoder"));
            if dec.has_property("max-threads") {
                dec.set_property("max-threads", self.decoder_threads as i32);
            }
            // one thread: slice threading, so libav sets up no frame-thread contexts (measured
            // with 16 streams of a 768×432 H.264 clip: 8.7 instead of 18.6 MB per stream, same
            // decode time; docs "Memory")
            if self.decoder_threads == 1 && dec.has_property("thread-type") {
                dec.set_property_from_str("thread-type", "slice");
            }
            pipeline.add(&dec)?;
            gst::Element::link_many([&q_dec, &dec, &rate])?;
            dec.sync_state_with_parent()?;
            Ok((q_dec, decoder))
        };
        let decoder = match &self.role {
            Role::Both { tee, analysis } => {
                let (_, decoder) = decode(analysis)?;
                filter.link(&tee.upgrade().ok_or_else(gone)?)?;
                Some(decoder)
            }
            Role::Encoded { q_enc } => {
                filter.link(&q_enc.upgrade().ok_or_else(gone)?)?;
                None
            }
            Role::Analysis(analysis) => {
                let (q_dec, decoder) = decode(analysis)?;
                filter.link(&q_dec)?;
                Some(decoder)
            }
        };
        for e in [&filter, &parse] {
            e.sync_state_with_parent()?;
        }
        let head = match depay {
            Some(d) => {
                d.set_property("name", format!("{prefix}-depay"));
                pipeline.add(&d)?;
                d.link(&parse)?;
                d.sync_state_with_parent()?;
                d
            }
            None => parse,
        };
        pad.link(&head.static_pad("sink").expect("sink pad")).map_err(|e| anyhow!("cannot link the video: {e:?}"))?;
        let stream = match self.role {
            Role::Both { .. } => "main",
            Role::Encoded { .. } => "main (evidence)",
            Role::Analysis(_) => "sub (analysis)",
        };
        let decoder = decoder.unwrap_or_else(|| "none (kept encoded)".into());
        tracing::info!(camera = %self.camera, stream, codec = codec.name(), decoder = %decoder, hardware = Codec::is_hardware(&decoder), "camera video");
        Ok(())
    }
}

fn on_encoded(sh: &Shared, sample: &gst::Sample) {
    let Some(buf) = sample.buffer() else { return };
    let off = Duration::from_nanos(sh.offset_ns.load(Ordering::Relaxed));
    let Some(pts) = running_time(sample, buf.pts()).or_else(|| running_time(sample, buf.dts())) else {
        return;
    };
    if sh.dual && !sh.realtime {
        // file replay with a sub stream: the main stream runs at most a second ahead of analysis,
        // as the tee keeps a single source (the ring then holds what the clip needs)
        let ahead = Duration::from_secs(1);
        while (pts + off).saturating_sub(Duration::from_nanos(sh.analysis_pts_ns.load(Ordering::Relaxed))) > ahead
            && !sh.analysis_eos.load(Ordering::Relaxed)
            && !sh.shutdown.load(Ordering::Relaxed)
        {
            sh.hold();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
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
    let now_ms = crate::telemetry::stats::unix_ms();
    sh.stats.last_video_ms.store(now_ms, Ordering::Relaxed);
    // the outage ends with the first frame, whoever saw it start (this loop or the camera watch)
    let was_down = sh.down_since.lock().expect("down").take().is_some();
    if was_down || sh.stats.is_active(Condition::Stream) {
        let since = sh.stats.down_since_ms.load(Ordering::Relaxed);
        crate::telemetry::Event::Health {
            camera: &sh.camera,
            condition: Condition::Stream,
            active: false,
            detail: "video flowing again",
            lasted: Some(Duration::from_millis(now_ms.saturating_sub(since).max(0) as u64)),
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
    sh.last_analysis_ms.store(sh.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    sh.analysis_pts_ns.store(pts.as_nanos() as u64, Ordering::Relaxed);
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
    // room in the queue first: a frame that would wait is not copied yet (realtime: not at all)
    while !sh.frames.has_room() {
        if sh.realtime || sh.shutdown.load(Ordering::Relaxed) {
            sh.stats.analysis_offered.inc();
            sh.stats.analysis_dropped.inc();
            return Ok(gst::FlowSuccess::Ok);
        }
        sh.hold();
        std::thread::sleep(Duration::from_millis(2));
    }
    let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
    let frame = RgbFrame::from_rows_into(sh.frames.spare(), &map, w, h, stride, pts);
    sh.stats.analysis_offered.inc();
    match sh.frames.send(frame) {
        Ok(()) => Ok(gst::FlowSuccess::Ok),
        Err(TrySendError::Disconnected(_)) => Err(gst::FlowError::Eos),
        // only this thread adds frames, so room seen above is still there
        Err(TrySendError::Full(_)) => {
            sh.stats.analysis_dropped.inc();
            Ok(gst::FlowSuccess::Ok)
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
    let (realtime, what) = match &cam.source {
        Source::File { path, realtime, .. } => (*realtime, format!("file {}", path.display())),
        Source::Rtsp { url, .. } => (true, format!("rtsp {url}")),
    };
    tracing::info!(camera = %cam.id, source = %what, decoder = %cam.decoder, "camera starting");
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
        held_ms: AtomicU64::new(0),
        started: Instant::now(),
        down_since: Mutex::new(None),
        stall: cam.stall,
        dual: cam.analysis_source.is_some(),
        last_analysis_ms: AtomicU64::new(0),
        analysis_pts_ns: AtomicU64::new(0),
        analysis_eos: AtomicBool::new(false),
        live: matches!(cam.source, Source::Rtsp { .. }),
        run: AtomicU64::new(0),
    });
    let mut backoff =
        crate::util::backoff::Backoff::new(Duration::from_millis(500), cam.reconnect_max, Duration::from_millis(250));
    let mut last_why = String::new();
    // stopped while a live stream is down (reconnecting): the summary names it as down
    let stopped = |sh: &Shared, why: &str| match *sh.down_since.lock().expect("down") {
        Some(since) => CameraEnd::Down(why.to_string(), since.elapsed(), sh.stats.encoded_frames.get() > 0),
        None => CameraEnd::Stopped,
    };
    let end = loop {
        if shutdown.load(Ordering::Relaxed) {
            break stopped(&sh, &last_why);
        }
        let frames_before = stats.encoded_frames.get();
        let outcome = match build(cam, &analysis, &sh) {
            Ok(b) => play(&b.pipeline, &sh),
            Err(e) => Outcome::Error(format!("cannot build pipeline: {e}")),
        };
        // whatever that pipeline still does (if it would not stop) is no longer this camera's
        sh.run.fetch_add(1, Ordering::SeqCst);
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
            (Outcome::Shutdown, _) => break stopped(&sh, &last_why),
            (Outcome::Eos, Source::File { looping: true, .. }) => {
                tracing::debug!(camera = %sh.camera, "file ended, looping");
                continue;
            }
            (Outcome::Eos, Source::File { .. }) => break CameraEnd::Ended,
            // a file that never gave video is not video; one that did and loops is a camera:
            // it stalled or broke mid-way, and starts again as a camera reconnects
            (Outcome::Error(e), Source::File { path, looping, .. }) if !*looping || stats.encoded_frames.get() == 0 => {
                break CameraEnd::Failed(format!("file {}: cannot read it as video: {e}", path.display()));
            }
            (o, source) => {
                let url = match source {
                    Source::Rtsp { url, .. } => url.to_string(),
                    Source::File { path, .. } => format!("file {}", path.display()),
                };
                let why = match o {
                    Outcome::Eos => "stream ended".to_string(),
                    Outcome::Error(e) => e,
                    Outcome::Shutdown => unreachable!(),
                };
                last_why = why.clone();
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
                // a run that gave video starts the backoff again from its first step
                if stats.encoded_frames.get() > frames_before {
                    backoff.reset();
                }
                let wait = backoff.next_wait();
                tracing::warn!(camera = %sh.camera, source = %url, error = %why, retry_in_ms = wait.as_millis() as u64, "camera down; reconnecting");
                let until = Instant::now() + wait;
                while Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    };
    ring.lock().expect("ring").finish_all();
    sh.run.fetch_add(1, Ordering::SeqCst);
    sh.frames.close();
    if matches!(end, CameraEnd::Ended | CameraEnd::Failed(_)) {
        stats.finished.store(true, Ordering::Relaxed);
    }
    // a camera that failed for good says so at once — log and health event — not only when the
    // run ends
    if let CameraEnd::Failed(why) = &end {
        tracing::error!(camera = %cam.id, error = %why, "camera FAILED");
        // told even when `stream` is already active (no video): failing for good is news
        stats.set_condition(Condition::Stream, false);
        crate::telemetry::Event::Health {
            camera: &cam.id,
            condition: Condition::Stream,
            active: true,
            detail: &format!("failed for good: {why}"),
            lasted: None,
        }
        .emit();
    }
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
        stop_pipeline(pipeline, &sh.camera);
        return Outcome::Error(reason);
    }
    let run_start = sh.started.elapsed();
    let outcome = loop {
        if sh.shutdown.load(Ordering::Relaxed) {
            break Outcome::Shutdown;
        }
        // stall watchdog: no video for `stall` (since the last sample, the last wait for analysis
        // in file replay, or since this run started)
        let last =
            Duration::from_millis(sh.last_sample_ms.load(Ordering::Relaxed).max(sh.held_ms.load(Ordering::Relaxed)))
                .max(run_start);
        if sh.started.elapsed().saturating_sub(last) > sh.stall {
            let which = if sh.dual { "main stream (source) " } else { "" };
            break Outcome::Error(format!("{which}stalled: no video for {:.1} s", sh.stall.as_secs_f64()));
        }
        // a live sub stream that ended is a sub stream down (a file's ends with the file)
        if sh.dual && sh.realtime && sh.live && sh.analysis_eos.load(Ordering::Relaxed) {
            break Outcome::Error("sub stream (analysis_source) ended".into());
        }
        // the sub stream's own watchdog (live streams: file replay may hold analysis back)
        let last_analysis = Duration::from_millis(sh.last_analysis_ms.load(Ordering::Relaxed)).max(run_start);
        if sh.dual
            && sh.realtime
            && !sh.analysis_eos.load(Ordering::Relaxed)
            && sh.started.elapsed().saturating_sub(last_analysis) > sh.stall
        {
            break Outcome::Error(format!(
                "sub stream (analysis_source) stalled: no video for {:.1} s",
                sh.stall.as_secs_f64()
            ));
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
                // GStreamer's texts may quote the source location, credentials included
                let detail = err.debug().map(|d| crate::util::secret::redact(&d)).unwrap_or_default();
                tracing::debug!(camera = %sh.camera, element = %src, debug = %detail, "gstreamer error");
                let text = crate::util::secret::redact(&err.error().to_string());
                // with a sub stream, say which stream failed
                let stream = if !sh.dual {
                    ""
                } else if err.src().is_some_and(|s| has_ancestor_named(s, "sub")) {
                    "sub stream (analysis_source): "
                } else {
                    "main stream (source): "
                };
                break Outcome::Error(format!("{stream}{text}"));
            }
            gst::MessageView::Warning(w) => {
                tracing::warn!(camera = %sh.camera, warning = %crate::util::secret::redact(&w.error().to_string()), "gstreamer warning");
            }
            _ => {}
        }
    };
    stop_pipeline(pipeline, &sh.camera);
    outcome
}

/// How long a camera's pipeline may take to stop before it is left behind.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Sets the pipeline to NULL, waiting at most [`STOP_WAIT`]: a source blocked in a read that
/// never returns (a file on a stuck network mount, a FIFO nobody writes) must not stop the camera
/// from starting again, nor keep its stall unseen. Such a pipeline is left to stop on its own.
fn stop_pipeline(pipeline: &gst::Pipeline, camera: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = pipeline.clone();
    let spawned = std::thread::Builder::new().name(format!("stop-{camera}")).spawn(move || {
        let _ = p.set_state(gst::State::Null);
        let _ = tx.send(());
    });
    if spawned.is_err() {
        let _ = pipeline.set_state(gst::State::Null);
        return;
    }
    if rx.recv_timeout(STOP_WAIT).is_err() {
        tracing::error!(
            camera,
            wait_s = STOP_WAIT.as_secs(),
            "camera pipeline did not stop in time (a source blocked in a read?); left behind, starting a new one"
        );
    }
}

/// Whether `o` or one of its parents is named with `prefix` ("sub-rtsp", "sub-demux", …).
fn has_ancestor_named(o: &gst::Object, prefix: &str) -> bool {
    let mut cur = Some(o.clone());
    while let Some(c) = cur {
        if c.name().starts_with(prefix) {
            return true;
        }
        cur = c.parent();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_queue_counts_its_frames_and_opens_when_analysis_ends() {
        let (q, src) = frame_queue(2);
        let f = || RgbFrame::new(2, 2);
        for _ in 0..2 {
            assert!(q.has_room());
            q.send(f()).unwrap();
        }
        assert!(!q.has_room(), "two queued: ingest waits before copying a third");
        let got = src.recv().expect("a frame");
        assert!(q.has_room(), "taken by analysis: room for one");
        src.give_back(got.data);
        assert_eq!(q.spare().len(), 12, "its buffer comes back");
        q.send(f()).unwrap();
        assert!(!q.has_room());
        drop(src);
        assert!(q.has_room(), "analysis ended: the next send finds the queue closed");
        assert!(matches!(q.send(f()), Err(TrySendError::Disconnected(_))));
    }
}
