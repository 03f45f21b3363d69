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

/// Connects to an RTSP URL and waits (at most `timeout`) for its video: the RTP encoding name
/// (`H264`, `H265`, …) on success; the server's refusal (authentication, not found, no route)
/// with credentials redacted otherwise. What `vigil check` reports per camera.
pub fn probe_rtsp(url: &crate::util::secret::RedactedUrl, tcp: bool, timeout: Duration) -> Result<String> {
    gst::init()?;
    let pipeline = gst::Pipeline::new();
    let src = make("rtspsrc")?;
    src.set_property("location", url.expose());
    src.set_property_from_str("protocols", if tcp { "tcp" } else { "udp" });
    pipeline.add(&src)?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let pw = pipeline.downgrade();
    src.connect_pad_added(move |_, pad| {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        if let Some(s) = caps.structure(0)
            && s.get::<&str>("media").ok() == Some("video")
        {
            let _ = tx.send(s.get::<&str>("encoding-name").unwrap_or("video").to_string());
        }
        if let Some(p) = pw.upgrade() {
            discard_pad(&p, pad);
        }
    });
    let bus = pipeline.bus().expect("pipeline bus");
    let outcome = (|| {
        pipeline.set_state(gst::State::Playing).map_err(|e| anyhow!("{e}"))?;
        let until = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < until {
            if let Ok(enc) = rx.try_recv() {
                return Ok(enc);
            }
            if let Some(m) = bus.timed_pop_filtered(gst::ClockTime::from_mseconds(50), &[gst::MessageType::Error])
                && let gst::MessageView::Error(e) = m.view()
            {
                return Err(anyhow!("{}", crate::util::secret::redact(&e.error().to_string())));
            }
        }
        Err(anyhow!("no video within {:.0} s", timeout.as_secs_f64()))
    })();
    let _ = pipeline.set_state(gst::State::Null);
    outcome
}
