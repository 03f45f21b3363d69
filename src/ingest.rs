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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use std::path::Path;

use crate::config::{AnalysisConfig, Camera, Source};
use crate::frame::RgbFrame;

/// One encoded access unit (H.264 byte-stream, SPS/PPS repeated before each keyframe).
#[derive(Clone, Debug)]
pub struct EncodedSample {
    pub pts: Duration,
    pub dts: Option<Duration>,
    pub duration: Option<Duration>,
    pub keyframe: bool,
    pub data: Bytes,
}

/// The encoded stream of a clip: from a keyframe at or before `start` to `end` (or as far as the
/// stream went).
pub struct ClipSource {
    pub caps: gst::Caps,
    pub samples: Vec<EncodedSample>,
    pub start: Duration,
    pub end: Duration,
    /// The ring no longer held video back to `start`.
    pub pre_truncated: bool,
    /// The stream stopped before `end`.
    pub post_truncated: bool,
    /// Health marks (reconnects, frozen picture, ...) from the start of the samples to the end.
    pub marks: Vec<(Duration, String)>,
}

type ClipDone = Box<dyn FnOnce(ClipSource) + Send>;

struct Collector {
    start: Duration,
    end: Duration,
    samples: Vec<EncodedSample>,
    marks: Vec<(Duration, String)>,
    pre_truncated: bool,
    done: ClipDone,
}

/// Per-camera ring buffer of encoded samples covering at least the pre-roll, starting on a
/// keyframe, plus the clips being collected from it.
pub struct EncodedRing {
    pub caps: Option<gst::Caps>,
    samples: VecDeque<EncodedSample>,
    retain: Duration,
    collectors: Vec<Collector>,
    pub last_pts: Option<Duration>,
    stopped: bool,
    /// Health marks at stream times, kept as long as the samples around them.
    marks: VecDeque<(Duration, String)>,
}

impl EncodedRing {
    pub fn new(retain: Duration) -> EncodedRing {
        EncodedRing {
            caps: None,
            samples: VecDeque::new(),
            retain,
            collectors: Vec::new(),
            last_pts: None,
            stopped: false,
            marks: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Span of time held, first to last sample.
    pub fn span(&self) -> Duration {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) => b.pts.saturating_sub(a.pts),
            _ => Duration::ZERO,
        }
    }

    /// Records a health event (reconnect, frozen picture, ...) at stream time `pts`.
    pub fn mark(&mut self, pts: Duration, what: String) {
        for c in &mut self.collectors {
            c.marks.push((pts, what.clone()));
        }
        self.marks.push_back((pts, what));
    }

    pub fn first_is_keyframe(&self) -> bool {
        self.samples.front().is_none_or(|s| s.keyframe)
    }

    pub fn push(&mut self, s: EncodedSample) {
        self.stopped = false;
        self.last_pts = Some(self.last_pts.map_or(s.pts, |p| p.max(s.pts)));
        let mut i = 0;
        while i < self.collectors.len() {
            let c = &mut self.collectors[i];
            c.samples.push(s.clone());
            if s.pts >= c.end {
                let c = self.collectors.swap_remove(i);
                self.complete(c, false);
            } else {
                i += 1;
            }
        }
        let newest = s.pts;
        self.samples.push_back(s);
        // Drop whole GOPs from the front while the next keyframe still leaves `retain` behind it.
        loop {
            let next_key = self.samples.iter().skip(1).position(|x| x.keyframe).map(|p| p + 1);
            match next_key {
                Some(k) if newest.saturating_sub(self.samples[k].pts) >= self.retain => {
                    self.samples.drain(..k);
                }
                _ => break,
            }
        }
        // Never start on a delta frame (stream joined mid-GOP).
        while self.samples.front().is_some_and(|x| !x.keyframe) {
            self.samples.pop_front();
        }
        let oldest = self.samples.front().map_or(newest, |x| x.pts);
        while self.marks.front().is_some_and(|(p, _)| *p + Duration::from_secs(1) < oldest) {
            self.marks.pop_front();
        }
    }

    fn complete(&self, c: Collector, post_truncated: bool) {
        let Some(caps) = self.caps.clone() else {
            return;
        };
        (c.done)(ClipSource {
            caps,
            samples: c.samples,
            start: c.start,
            end: c.end,
            pre_truncated: c.pre_truncated,
            post_truncated,
            marks: c.marks,
        });
    }

    /// Starts collecting the clip `[start, end]`; `done` is called once it is complete, or when the
    /// stream stops (then marked truncated).
    pub fn start_clip(&mut self, start: Duration, end: Duration, done: ClipDone) {
        let from = self.samples.iter().rposition(|s| s.keyframe && s.pts <= start);
        let pre_truncated = from.is_none();
        let from = from.or_else(|| self.samples.iter().position(|s| s.keyframe)).unwrap_or(self.samples.len());
        let samples: Vec<EncodedSample> = self.samples.iter().skip(from).cloned().collect();
        let first = samples.first().map_or(start, |s| s.pts);
        let marks = self.marks.iter().filter(|(p, _)| *p + Duration::from_secs(1) >= first).cloned().collect();
        let c = Collector { start, end, samples, marks, pre_truncated, done };
        if self.last_pts.is_some_and(|p| p >= end) {
            self.complete(c, false);
        } else if self.stopped {
            self.complete(c, true);
        } else {
            self.collectors.push(c);
        }
    }

    /// The stream stopped (end, failure, shutdown): hand over every clip in flight as it is.
    pub fn finish_all(&mut self) {
        self.stopped = true;
        for c in std::mem::take(&mut self.collectors) {
            self.complete(c, true);
        }
    }
}

/// Counters of one camera (read by the control loop and the final summary).
#[derive(Default, Debug)]
pub struct CameraStats {
    pub encoded_frames: AtomicU64,
    pub analysis_offered: AtomicU64,
    pub analysis_dropped: AtomicU64,
    pub analysed: AtomicU64,
    /// Rule-region inferences run, and skipped by motion gating.
    pub inferred: AtomicU64,
    pub gated: AtomicU64,
    /// Heap allocations of the analysis thread per frame (mask → tamper → gate → inference →
    /// rules), summed over frames after the first 10 (warm-up), and those frames.
    pub hot_allocations: AtomicU64,
    pub hot_frames: AtomicU64,
    pub reconnects: AtomicU64,
    conditions: std::sync::atomic::AtomicU32,
}

/// Health conditions a camera can be in (bit i of `CameraStats::conditions`).
pub const CAMERA_CONDITIONS: [&str; 7] = ["stream", "frozen", "covered", "saturated", "defocus", "moved", "spool_full"];

impl CameraStats {
    pub fn set_condition(&self, name: &str, on: bool) {
        if let Some(i) = CAMERA_CONDITIONS.iter().position(|c| *c == name) {
            if on {
                self.conditions.fetch_or(1 << i, Ordering::Relaxed);
            } else {
                self.conditions.fetch_and(!(1 << i), Ordering::Relaxed);
            }
        }
    }

    pub fn conditions(&self) -> Vec<(&'static str, bool)> {
        let bits = self.conditions.load(Ordering::Relaxed);
        CAMERA_CONDITIONS.iter().enumerate().map(|(i, c)| (*c, bits & (1 << i) != 0)).collect()
    }
}

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

/// Picks the H.264 decoder: the configured one, or the first hardware decoder present, else
/// avdec_h264.
pub fn choose_decoder(pref: &str) -> Result<String> {
    if pref != "auto" {
        return gst::ElementFactory::find(pref)
            .map(|_| pref.to_string())
            .ok_or_else(|| anyhow!("decoder element {pref:?} is not installed"));
    }
    ["nvh264dec", "vah264dec", "vaapih264dec", "avdec_h264", "openh264dec"]
        .into_iter()
        .find(|n| gst::ElementFactory::find(n).is_some())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no H.264 decoder found (install gstreamer1.0-libav)"))
}

/// Running time of `ts` in the sample's segment.
fn running_time(sample: &gst::Sample, ts: Option<gst::ClockTime>) -> Option<Duration> {
    let ts = ts?;
    let seg = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    seg.to_running_time(ts).map(|t| Duration::from_nanos(t.nseconds()))
}

/// Adds `elements` to `p` and links them in order.
pub fn chain(p: &gst::Pipeline, elements: &[&gst::Element]) -> Result<()> {
    p.add_many(elements.iter().copied())?;
    gst::Element::link_many(elements.iter().copied())?;
    Ok(())
}

pub fn make(name: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(name).build().map_err(|_| anyhow!("GStreamer element {name:?} is not installed"))
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
            src.set_property("location", url.as_str());
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

/// Links the first matching dynamic pad of `src` to `sink`; a video stream of another codec is an
/// error that names the codec; other streams (audio, metadata) go to a fakesink.
fn link_dynamic_video(src: &gst::Element, sink: &gst::Element, pipeline: &gst::Pipeline, want: &'static str) {
    let sink = sink.downgrade();
    let pipeline = pipeline.downgrade();
    src.connect_pad_added(move |el, pad| {
        let (Some(sink), Some(pipeline)) = (sink.upgrade(), pipeline.upgrade()) else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(s) = caps.structure(0) else { return };
        let name = s.name().to_string();
        let is_video =
            name.starts_with("video/") || (name == "application/x-rtp" && s.get::<&str>("media").ok() == Some("video"));
        let wanted =
            name == want && (want != "application/x-rtp" || s.get::<&str>("encoding-name").ok() == Some("H264"));
        let sink_pad = sink.static_pad("sink").expect("sink pad");
        if wanted && !sink_pad.is_linked() {
            if let Err(e) = pad.link(&sink_pad) {
                gst::element_error!(el, gst::StreamError::Failed, ["cannot link {}: {:?}", name, e]);
            }
        } else if is_video && !sink_pad.is_linked() {
            gst::element_error!(
                el,
                gst::StreamError::CodecNotFound,
                ["the video stream is {}; vigil needs H.264", caps.to_string()]
            );
        } else if let Ok(fake) = gst::ElementFactory::make("fakesink").property("sync", false).build() {
            let _ = pipeline.add(&fake);
            let _ = fake.sync_state_with_parent();
            let _ = pad.link(&fake.static_pad("sink").expect("fakesink pad"));
        }
    });
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
    sh.stats.encoded_frames.fetch_add(1, Ordering::Relaxed);
    sh.last_sample_ms.store(sh.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    if let Some(since) = sh.down_since.lock().expect("down").take() {
        crate::telemetry::Event::Health {
            camera: &sh.camera,
            condition: "stream",
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
    sh.stats.analysis_offered.fetch_add(1, Ordering::Relaxed);
    loop {
        match sh.frames.frames.try_send(frame) {
            Ok(()) => return Ok(gst::FlowSuccess::Ok),
            Err(TrySendError::Disconnected(_)) => return Err(gst::FlowError::Eos),
            Err(TrySendError::Full(f)) => {
                if sh.realtime || sh.shutdown.load(Ordering::Relaxed) {
                    sh.stats.analysis_dropped.fetch_add(1, Ordering::Relaxed);
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
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                {
                    let mut down = sh.down_since.lock().expect("down");
                    if down.is_none() {
                        *down = Some(Instant::now());
                        crate::telemetry::Event::Health {
                            camera: &cam.id,
                            condition: "stream",
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

/// Decodes a video file into analysis frames (`fps`, `width`, RGB), the way a file camera with
/// `realtime = false` is analysed: for tuning, evaluation on labelled clips and benchmarks.
pub fn analysis_frames(path: &Path, fps: f64, width: u32) -> Result<Vec<RgbFrame>> {
    gst::init()?;
    let (num, den) = ((fps * 1000.0).round() as i32, 1000);
    let desc = format!(
        "filesrc name=src ! decodebin ! videoconvert ! videoscale ! videorate ! \
         video/x-raw,format=RGB,width={width},pixel-aspect-ratio=1/1,framerate={num}/{den} ! appsink name=sink sync=false"
    );
    let p = gst::parse::launch(&desc)?.downcast::<gst::Pipeline>().map_err(|_| anyhow!("not a pipeline"))?;
    p.by_name("src").context("src")?.set_property("location", path.to_string_lossy().as_ref());
    let sink = p.by_name("sink").context("sink")?.downcast::<gst_app::AppSink>().map_err(|_| anyhow!("appsink"))?;
    p.set_state(gst::State::Playing)?;
    let mut out = Vec::new();
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        let b = s.buffer().context("buffer")?;
        let info = gst_video::VideoInfo::from_caps(s.caps().context("caps")?)?;
        let map = b.map_readable()?;
        let pts = Duration::from_nanos(b.pts().map(|t| t.nseconds()).unwrap_or(0));
        out.push(RgbFrame::from_rows(&map, info.width(), info.height(), info.stride()[0] as usize, pts));
    }
    let err = p.bus().and_then(|b| b.pop_filtered(&[gst::MessageType::Error]));
    p.set_state(gst::State::Null)?;
    if let Some(e) = err
        && let gst::MessageView::Error(e) = e.view()
    {
        bail!("{}: cannot decode: {}", path.display(), e.error());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64, key: bool) -> EncodedSample {
        EncodedSample {
            pts: Duration::from_millis(ms),
            dts: None,
            duration: None,
            keyframe: key,
            data: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn ring_keeps_preroll_from_a_keyframe() {
        gst::init().unwrap();
        let mut r = EncodedRing::new(Duration::from_millis(1000));
        r.caps = Some(gst::Caps::new_empty_simple("video/x-h264"));
        // keyframe every 500 ms, a frame every 100 ms, 5 s of stream
        for i in 0..50 {
            r.push(s(i * 100, i % 5 == 0));
        }
        assert!(r.first_is_keyframe());
        assert!(r.span() >= Duration::from_millis(1000), "{:?}", r.span());
        assert!(r.span() < Duration::from_millis(1500), "{:?}", r.span());

        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        r.start_clip(
            Duration::from_millis(4000),
            Duration::from_millis(5500),
            Box::new(move |c| *g.lock().unwrap() = Some(c)),
        );
        assert!(got.lock().unwrap().is_none(), "waits for post-roll");
        for i in 50..56 {
            r.push(s(i * 100, i % 5 == 0));
        }
        let clip = got.lock().unwrap().take().expect("complete at end pts");
        assert!(!clip.pre_truncated && !clip.post_truncated);
        assert_eq!(clip.samples.first().unwrap().pts, Duration::from_millis(4000));
        assert!(clip.samples.first().unwrap().keyframe);
        assert_eq!(clip.samples.last().unwrap().pts, Duration::from_millis(5500));
    }

    #[test]
    fn clips_in_flight_are_handed_over_truncated_when_the_stream_stops() {
        gst::init().unwrap();
        let mut r = EncodedRing::new(Duration::from_millis(1000));
        r.caps = Some(gst::Caps::new_empty_simple("video/x-h264"));
        for i in 0..10 {
            r.push(s(i * 100, i % 5 == 0));
        }
        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        r.start_clip(Duration::ZERO, Duration::from_secs(10), Box::new(move |c| *g.lock().unwrap() = Some(c)));
        r.finish_all();
        let clip = got.lock().unwrap().take().unwrap();
        assert!(clip.post_truncated);
        assert_eq!(clip.samples.len(), 10);
    }
}
