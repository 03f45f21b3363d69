//! GStreamer building blocks of a camera pipeline: elements, linking, dynamic pads, decoder
//! choice, timestamps.

use std::time::Duration;

use anyhow::{Result, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;

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
pub(crate) fn running_time(sample: &gst::Sample, ts: Option<gst::ClockTime>) -> Option<Duration> {
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

/// Links the first matching dynamic pad of `src` to `sink`; a video stream of another codec is an
/// error that names the codec; other streams (audio, metadata) go to a fakesink.
pub(crate) fn link_dynamic_video(
    src: &gst::Element,
    sink: &gst::Element,
    pipeline: &gst::Pipeline,
    want: &'static str,
) {
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
