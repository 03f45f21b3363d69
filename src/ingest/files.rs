//! Decoding a whole video file into analysis frames, for evaluation, benchmarks and tests.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::frame::RgbFrame;

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

/// A camera's codec, for re-encoding a clip the way another camera would have sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    /// MPEG-4 Part 2 (older DVRs), in AVI.
    Mpeg4,
}

/// A re-encoding: codec and bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encode {
    pub codec: Codec,
    pub kbps: u32,
}

impl Encode {
    /// `h264-2000`, `h265-500`, `mpeg4-1500` (kbit/s, 50 to 50000).
    pub fn parse(s: &str) -> Result<Encode> {
        let (c, k) = s.split_once('-').with_context(|| format!("{s:?}: an encode is CODEC-KBPS, e.g. h265-500"))?;
        let codec = match c {
            "h264" => Codec::H264,
            "h265" => Codec::H265,
            "mpeg4" => Codec::Mpeg4,
            _ => bail!("{s:?}: the codec is h264, h265 or mpeg4"),
        };
        let kbps: u32 = k
            .parse()
            .ok()
            .filter(|k| (50..=50_000).contains(k))
            .with_context(|| format!("{s:?}: the bitrate is a whole number of kbit/s from 50 to 50000"))?;
        Ok(Encode { codec, kbps })
    }

    pub fn name(&self) -> String {
        let c = match self.codec {
            Codec::H264 => "H.264",
            Codec::H265 => "H.265",
            Codec::Mpeg4 => "MPEG-4 Part 2",
        };
        format!("{c} {} kbit/s", self.kbps)
    }

    /// The encoder (and parser), the muxer and the file extension.
    fn elements(&self) -> (String, &'static str, &'static str) {
        let k = self.kbps;
        match self.codec {
            Codec::H264 => (
                format!("x264enc bitrate={k} speed-preset=veryfast key-int-max=50 bframes=0 ! h264parse"),
                "mp4mux",
                "mp4",
            ),
            Codec::H265 => {
                (format!("x265enc bitrate={k} speed-preset=veryfast key-int-max=50 ! h265parse"), "mp4mux", "mp4")
            }
            Codec::Mpeg4 => (format!("avenc_mpeg4 bitrate={} ! mpeg4videoparse", k * 1000), "avimux", "avi"),
        }
    }
}

/// Re-encodes the video of `src` as `e` into `dir/<stem>.<codec>-<kbps>.<ext>`; returns the file.
pub fn transcode(src: &Path, dir: &Path, e: Encode) -> Result<std::path::PathBuf> {
    gst::init()?;
    let (enc, mux, ext) = e.elements();
    let stem = src.file_stem().unwrap_or_default().to_string_lossy();
    let dst = dir.join(format!("{stem}.{:?}-{}.{ext}", e.codec, e.kbps).to_lowercase());
    let desc = format!(
        "filesrc name=src ! decodebin ! videoconvert ! video/x-raw,format=I420 ! {enc} ! {mux} ! filesink name=sink"
    );
    let p = gst::parse::launch(&desc)?.downcast::<gst::Pipeline>().map_err(|_| anyhow!("not a pipeline"))?;
    p.by_name("src").context("src")?.set_property("location", src.to_string_lossy().as_ref());
    p.by_name("sink").context("sink")?.set_property("location", dst.to_string_lossy().as_ref());
    p.set_state(gst::State::Playing)?;
    let bus = p.bus().context("bus")?;
    let msg =
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(600), &[gst::MessageType::Eos, gst::MessageType::Error]);
    p.set_state(gst::State::Null)?;
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Ok(dst),
        Some(gst::MessageView::Error(err)) => bail!("{}: re-encoding as {}: {}", src.display(), e.name(), err.error()),
        _ => bail!("{}: re-encoding as {}: no end within 10 minutes", src.display(), e.name()),
    }
}
