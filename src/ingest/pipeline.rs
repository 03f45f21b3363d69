//! GStreamer building blocks of a camera pipeline: elements, linking, dynamic pads, timestamps.

use std::time::Duration;

use anyhow::{Result, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;

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

/// Sends a dynamic pad nobody wants (audio, metadata, a second video stream) to a fakesink.
pub(crate) fn discard_pad(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    if let Ok(fake) = gst::ElementFactory::make("fakesink").property("sync", false).build() {
        let _ = pipeline.add(&fake);
        let _ = fake.sync_state_with_parent();
        let _ = pad.link(&fake.static_pad("sink").expect("fakesink pad"));
    }
}
