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
