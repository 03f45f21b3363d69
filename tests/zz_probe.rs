mod common;
use common::*;
use gstreamer as gst;
use gstreamer::prelude::*;

#[test]
fn probe() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("h265.mp4");
    transcode(
        &sample("astronaut-pan.mp4"),
        &file,
        "identity",
        "x265enc speed-preset=ultrafast key-int-max=25 ! h265parse",
        "mp4mux",
    );
    let server = RtspServer::serve_h265_file(&file);
    for load in [false, true] {
        let mut hogs = Vec::new();
        if load {
            for _ in 0..3 {
                hogs.push(
                    std::process::Command::new("sh")
                        .args(["-c", "timeout 20 sh -c 'while :; do :; done'"])
                        .spawn()
                        .unwrap(),
                );
            }
        }
        let p = gst::parse::launch(&format!(
            "rtspsrc location={} latency=200 protocols=tcp ! rtph265depay ! h265parse ! fakesink name=s sync=false",
            server.url
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n2 = n.clone();
        p.by_name("s").unwrap().static_pad("sink").unwrap().add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            n2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
        p.set_state(gst::State::Playing).unwrap();
        let bus = p.bus().unwrap();
        let _ =
            bus.timed_pop_filtered(gst::ClockTime::from_seconds(20), &[gst::MessageType::Eos, gst::MessageType::Error]);
        p.set_state(gst::State::Null).unwrap();
        eprintln!("PROBE load={load}: {} frames", n.load(std::sync::atomic::Ordering::Relaxed));
        for mut h in hogs {
            let _ = h.kill();
            let _ = h.wait();
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
