//! The encoded ring buffer of a camera: the last pre-roll (and a margin) of encoded samples from
//! a keyframe on, health marks at stream times, and the clips being collected from it.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use gstreamer as gst;

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

/// Gives decode timestamps to samples that came without (RTP: H.264/H.265 depayloaders set only
/// PTS). With B-frames the PTS are out of decode order, and a decoder or muxer without DTS
/// guesses wrong; the DTS of the i-th sample is the i-th smallest PTS, moved back by the
/// stream's reorder delay so that no DTS is after its PTS.
pub fn synthesize_dts(samples: &mut [EncodedSample]) {
    if samples.is_empty() || samples.iter().any(|s| s.dts.is_some()) {
        return;
    }
    let mut sorted: Vec<Duration> = samples.iter().map(|s| s.pts).collect();
    sorted.sort();
    let delay = samples.iter().zip(&sorted).map(|(s, d)| d.saturating_sub(s.pts)).max().unwrap_or_default();
    for (s, d) in samples.iter_mut().zip(sorted) {
        s.dts = Some(d.saturating_sub(delay));
    }
}

/// How far past a clip's end the stream must run before the clip is complete: samples come in
/// decode order, and with B-frames (RTP carries no decode times) a frame inside the clip can
/// arrive after one past its end (x265 reorders up to 4 frames, open GOPs more); a second
/// covers a reorder of 25 frames at 25 fps, 5 at 5 fps.
pub const REORDER_MARGIN: Duration = Duration::from_secs(1);

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
            if s.pts >= c.end + REORDER_MARGIN {
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
        // never dropped: without caps (no sample came) the clip fails downstream, by name
        let caps = self.caps.clone().unwrap_or_else(gst::Caps::new_empty);
        let mut samples = c.samples;
        synthesize_dts(&mut samples);
        (c.done)(ClipSource {
            caps,
            samples,
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
        if self.last_pts.is_some_and(|p| p >= end + REORDER_MARGIN) {
            self.complete(c, false);
        } else if self.stopped {
            self.complete(c, true);
        } else {
            self.collectors.push(c);
        }
    }

    /// The stream stopped (end, failure, shutdown): hand over every clip in flight as it is.
    /// A clip whose end the stream reached (within the reorder margin) is not truncated.
    pub fn finish_all(&mut self) {
        self.stopped = true;
        for c in std::mem::take(&mut self.collectors) {
            let reached = self.last_pts.is_some_and(|p| p >= c.end);
            self.complete(c, !reached);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b_frames_without_dts_get_monotonic_dts_never_after_their_pts() {
        let ms = Duration::from_millis;
        // decode order I P B B (PTS 0, 120, 40, 80), as an RTP depayloader hands them over
        let mut s: Vec<EncodedSample> = [0u64, 120, 40, 80, 240, 160, 200]
            .iter()
            .map(|&p| EncodedSample { pts: ms(p), dts: None, duration: None, keyframe: p == 0, data: Bytes::new() })
            .collect();
        synthesize_dts(&mut s);
        let dts: Vec<Duration> = s.iter().map(|x| x.dts.unwrap()).collect();
        assert!(dts.windows(2).all(|w| w[0] <= w[1]), "{dts:?}");
        assert!(s.iter().all(|x| x.dts.unwrap() <= x.pts), "{s:?}");
        // samples that have DTS keep them
        let mut t =
            vec![EncodedSample { pts: ms(40), dts: Some(ms(0)), duration: None, keyframe: true, data: Bytes::new() }];
        synthesize_dts(&mut t);
        assert_eq!(t[0].dts, Some(ms(0)));
    }
    use std::sync::{Arc, Mutex};

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
        for i in 50..65 {
            r.push(s(i * 100, i % 5 == 0));
        }
        assert!(got.lock().unwrap().is_none(), "waits for the reorder margin past the end");
        r.push(s(6500, true));
        let clip = got.lock().unwrap().take().expect("complete at end pts + reorder margin");
        assert!(!clip.pre_truncated && !clip.post_truncated);
        assert_eq!(clip.samples.first().unwrap().pts, Duration::from_millis(4000));
        assert!(clip.samples.first().unwrap().keyframe);
        assert_eq!(clip.samples.last().unwrap().pts, Duration::from_millis(6500));
    }

    #[test]
    fn a_b_frame_inside_the_clip_that_arrives_after_one_past_its_end_is_kept() {
        gst::init().unwrap();
        let mut r = EncodedRing::new(Duration::from_millis(1000));
        r.caps = Some(gst::Caps::new_empty_simple("video/x-h265"));
        r.push(s(0, true));
        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        r.start_clip(Duration::ZERO, Duration::from_millis(400), Box::new(move |c| *g.lock().unwrap() = Some(c)));
        // decode order I P B B B P …: the P at 480 ms comes before the B-frames at 360 and 400 ms
        for (ms, key) in [(480, false), (120, false), (240, false), (360, false), (400, false)] {
            r.push(s(ms, key));
        }
        assert!(got.lock().unwrap().is_none(), "one sample past the end does not close the clip");
        for i in 5..20 {
            r.push(s(i * 120, false));
        }
        let clip = got.lock().unwrap().take().expect("complete once the stream is a reorder margin past the end");
        let pts: Vec<u64> = clip.samples.iter().map(|x| x.pts.as_millis() as u64).collect();
        for want in [0, 120, 240, 360, 400] {
            assert!(pts.contains(&want), "frame at {want} ms in the clip: {pts:?}");
        }
        assert!(!clip.post_truncated);
    }

    #[test]
    fn a_stream_that_stops_after_the_clip_end_but_within_the_margin_is_not_truncated() {
        gst::init().unwrap();
        let mut r = EncodedRing::new(Duration::from_millis(1000));
        r.caps = Some(gst::Caps::new_empty_simple("video/x-h264"));
        r.push(s(0, true));
        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        r.start_clip(Duration::ZERO, Duration::from_millis(500), Box::new(move |c| *g.lock().unwrap() = Some(c)));
        for i in 1..7 {
            r.push(s(i * 100, false));
        }
        r.finish_all();
        assert!(!got.lock().unwrap().take().unwrap().post_truncated);
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
