//! The video codecs a camera may send, and for each how it is parsed, decoded, depayloaded and
//! muxed. H.264 and H.265 are what cameras stream; MPEG-4 Part 2 and Motion JPEG come from older
//! cameras and recorders; anything else GStreamer can decode on this machine is taken too, with
//! its decoder found by caps.

use anyhow::{Result, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;

/// The codec of an encoded video stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    Mpeg4Part2,
    Mjpeg,
    /// Another encoded video format (its caps name, e.g. `video/x-vp9`).
    Other(String),
}

/// Hardware decoders first (NVIDIA, VA-API), software last: the first one installed is used.
const H264_DECODERS: &[&str] = &["nvh264dec", "nvh264sldec", "vah264dec", "vaapih264dec", "avdec_h264", "openh264dec"];
const H265_DECODERS: &[&str] = &["nvh265dec", "nvh265sldec", "vah265dec", "vaapih265dec", "avdec_h265", "libde265dec"];

impl Codec {
    /// The codec of encoded caps (`video/x-h264`, `video/x-h265`, `video/mpeg` version 4,
    /// `image/jpeg`, any other `video/…`); `None` for raw video and non-video caps.
    pub fn of(caps: &gst::CapsRef) -> Option<Codec> {
        let s = caps.structure(0)?;
        Some(match s.name().as_str() {
            "video/x-h264" => Codec::H264,
            "video/x-h265" => Codec::H265,
            "video/mpeg" if s.get::<i32>("mpegversion").ok() == Some(4) => Codec::Mpeg4Part2,
            // what AVI and Matroska demuxers call MPEG-4 Part 2 streams
            "video/x-divx" if s.get::<i32>("divxversion").is_ok_and(|v| v >= 4) => Codec::Mpeg4Part2,
            "video/x-xvid" => Codec::Mpeg4Part2,
            "image/jpeg" => Codec::Mjpeg,
            "video/x-raw" => return None,
            n if n.starts_with("video/") => Codec::Other(n.to_string()),
            _ => return None,
        })
    }

    /// A name for people: logs, errors, manifests.
    pub fn name(&self) -> &str {
        match self {
            Codec::H264 => "H.264",
            Codec::H265 => "H.265/HEVC",
            Codec::Mpeg4Part2 => "MPEG-4 Part 2",
            Codec::Mjpeg => "Motion JPEG",
            Codec::Other(n) => n,
        }
    }

    /// The parser that frames the stream into access units with flagged keyframes (and, for
    /// H.264/H.265, repeats the parameter sets before every keyframe, so that a clip cut from
    /// the ring at a keyframe decodes on its own).
    pub fn parser(&self) -> Result<gst::Element> {
        let (name, headers_at_keyframes) = match self {
            Codec::H264 => ("h264parse", true),
            Codec::H265 => ("h265parse", true),
            Codec::Mpeg4Part2 => ("mpeg4videoparse", true),
            Codec::Mjpeg => ("jpegparse", false),
            Codec::Other(_) => ("identity", false),
        };
        let e = super::pipeline::make(name)?;
        if headers_at_keyframes {
            e.set_property("config-interval", -1i32);
        }
        Ok(e)
    }

    /// What the parser is asked to output (byte-stream access units for H.264/H.265; anything
    /// for the others).
    pub fn parsed_caps(&self) -> gst::Caps {
        match self {
            Codec::H264 => gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
            Codec::H265 => gst::Caps::builder("video/x-h265")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
            // the parser keeps the demuxer's naming (video/mpeg, video/x-divx, video/x-xvid)
            Codec::Mpeg4Part2 | Codec::Other(_) => gst::Caps::new_any(),
            Codec::Mjpeg => gst::Caps::new_empty_simple("image/jpeg"),
        }
    }

    /// The decoder element: `pref` when it is not `auto` (it must be installed and take this
    /// codec), else the first installed of the hardware-first list, else any installed decoder
    /// that takes `caps`, highest rank first.
    pub fn decoder(&self, pref: &str, caps: &gst::Caps) -> Result<String> {
        if pref != "auto" {
            let f =
                gst::ElementFactory::find(pref).ok_or_else(|| anyhow!("decoder element {pref:?} is not installed"))?;
            if !f.can_sink_any_caps(caps) {
                return Err(anyhow!(
                    "decoder {pref:?} (camera `decoder`) does not decode {}; set `decoder = \"auto\"` or name a {} decoder",
                    self.name(),
                    self.name()
                ));
            }
            return Ok(pref.to_string());
        }
        let list: &[&str] = match self {
            Codec::H264 => H264_DECODERS,
            Codec::H265 => H265_DECODERS,
            _ => &[],
        };
        if let Some(n) = list.iter().find(|n| gst::ElementFactory::find(n).is_some()) {
            return Ok(n.to_string());
        }
        let mut found = gst::ElementFactory::factories_with_type(
            gst::ElementFactoryType::DECODER
                | gst::ElementFactoryType::MEDIA_VIDEO
                | gst::ElementFactoryType::MEDIA_IMAGE,
            gst::Rank::MARGINAL,
        )
        .into_iter()
        .filter(|f| f.can_sink_any_caps(caps))
        .collect::<Vec<_>>();
        found.sort_by_key(|f| std::cmp::Reverse(f.rank()));
        found
            .first()
            .map(|f| f.name().to_string())
            .ok_or_else(|| anyhow!("no {} decoder is installed here ({caps}); {}", self.name(), self.install_hint()))
    }

    /// What to install for a decoder of this codec (Debian packages).
    pub fn install_hint(&self) -> &'static str {
        match self {
            Codec::H264 | Codec::H265 | Codec::Mpeg4Part2 => "install gstreamer1.0-libav",
            Codec::Mjpeg => "install gstreamer1.0-plugins-good",
            Codec::Other(_) => {
                "install the GStreamer plugin that decodes it (gstreamer1.0-libav, gstreamer1.0-plugins-bad or -ugly)"
            }
        }
    }

    /// Whether `decoder` is a hardware decoder.
    pub fn is_hardware(decoder: &str) -> bool {
        ["nv", "va", "vaapi", "v4l2", "msdk", "qsv"].iter().any(|p| decoder.starts_with(p))
    }

    /// The container the stream (of `caps`, this codec) is muxed into without re-encoding: element, file
    /// extension, content type. MP4 where the muxer takes the stream as it is, Matroska
    /// otherwise.
    pub fn container(&self, caps: &gst::Caps) -> (&'static str, &'static str, &'static str) {
        // H.264/H.265: the parser converts byte-stream to what mp4mux takes
        let mp4 = matches!(self, Codec::H264 | Codec::H265)
            || gst::ElementFactory::find("mp4mux").is_some_and(|f| f.can_sink_any_caps(caps));
        if mp4 { ("mp4mux", "mp4", "video/mp4") } else { ("matroskamux", "mkv", "video/x-matroska") }
    }
}

/// The RTP depayloader for an RTP video pad's caps (`encoding-name` H264, H265, MP4V-ES, JPEG,
/// …), found among the installed depayloaders, with the codec it outputs.
pub fn depayloader(rtp_caps: &gst::CapsRef) -> Result<(gst::Element, Codec)> {
    let enc = rtp_caps.structure(0).and_then(|s| s.get::<String>("encoding-name").ok()).unwrap_or_default();
    // A depayloader whose sink template names this encoding (templates that leave
    // encoding-name open would take anything).
    let names_it = |f: &gst::ElementFactory| {
        f.static_pad_templates().iter().filter(|t| t.direction() == gst::PadDirection::Sink).any(|t| {
            t.caps().iter().any(|st| match st.value("encoding-name") {
                Ok(v) => match v.get::<String>() {
                    Ok(one) => one.eq_ignore_ascii_case(&enc),
                    Err(_) => v
                        .get::<gst::List>()
                        .is_ok_and(|l| l.iter().any(|x| x.get::<String>().is_ok_and(|n| n.eq_ignore_ascii_case(&enc)))),
                },
                Err(_) => false,
            })
        })
    };
    let mut found = gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DEPAYLOADER, gst::Rank::MARGINAL)
        .into_iter()
        .filter(|f| names_it(f) && f.can_sink_any_caps(rtp_caps))
        .collect::<Vec<_>>();
    found.sort_by_key(|f| std::cmp::Reverse(f.rank()));
    for f in found {
        let codec = f
            .static_pad_templates()
            .iter()
            .filter(|t| t.direction() == gst::PadDirection::Src)
            .find_map(|t| Codec::of(&t.caps()));
        if let Some(codec) = codec {
            let e = f.create().build().map_err(|e| anyhow!("cannot create {}: {e}", f.name()))?;
            return Ok((e, codec));
        }
    }
    Err(anyhow!(
        "the camera sends {enc} video over RTP and no depayloader for it is installed here \
         (install gstreamer1.0-plugins-good, -bad or -ugly)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_are_known_by_caps_and_each_has_a_parser_and_a_decoder_here() {
        gst::init().unwrap();
        let c = |s: &str| Codec::of(&s.parse::<gst::Caps>().unwrap());
        assert_eq!(c("video/x-h264, stream-format=avc"), Some(Codec::H264));
        assert_eq!(c("video/x-h265"), Some(Codec::H265));
        assert_eq!(c("video/mpeg, mpegversion=4, systemstream=false"), Some(Codec::Mpeg4Part2));
        assert_eq!(c("video/mpeg, mpegversion=2"), Some(Codec::Other("video/mpeg".into())));
        assert_eq!(c("image/jpeg"), Some(Codec::Mjpeg));
        assert_eq!(c("video/x-raw, format=RGB"), None);
        assert_eq!(c("audio/mpeg"), None);
        assert_eq!(c("video/x-divx, divxversion=4"), Some(Codec::Mpeg4Part2));
        for (codec, caps) in [
            (Codec::H264, "video/x-h264"),
            (Codec::H265, "video/x-h265"),
            (Codec::Mpeg4Part2, "video/mpeg, mpegversion=4, systemstream=false"),
            (Codec::Mpeg4Part2, "video/x-divx, divxversion=5"),
            (Codec::Mjpeg, "image/jpeg"),
        ] {
            codec.parser().unwrap();
            let d = codec.decoder("auto", &caps.parse().unwrap()).unwrap();
            assert!(gst::ElementFactory::find(&d).is_some(), "{d}");
        }
        // a configured decoder that does not take the codec is named in the error
        let e = Codec::H265.decoder("avdec_h264", &"video/x-h265".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("does not decode H.265/HEVC"), "{e}");
        // a codec nothing here decodes: the error says what to install
        let e = Codec::Other("video/x-nothing".into())
            .decoder("auto", &gst::Caps::new_empty_simple("video/x-nothing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no video/x-nothing decoder") && e.contains("install"), "{e}");
    }

    #[test]
    fn rtp_payloads_find_their_depayloader() {
        gst::init().unwrap();
        let rtp = |enc: &str| {
            format!("application/x-rtp, media=video, encoding-name={enc}, clock-rate=90000")
                .parse::<gst::Caps>()
                .unwrap()
        };
        assert_eq!(depayloader(&rtp("H264")).unwrap().1, Codec::H264);
        assert_eq!(depayloader(&rtp("H265")).unwrap().1, Codec::H265);
        assert_eq!(depayloader(&rtp("MP4V-ES")).unwrap().1, Codec::Mpeg4Part2);
        assert_eq!(depayloader(&rtp("JPEG")).unwrap().1, Codec::Mjpeg);
        let e = depayloader(&rtp("X-NOTHING")).unwrap_err().to_string();
        assert!(e.contains("X-NOTHING") && e.contains("install"), "{e}");
    }
}
