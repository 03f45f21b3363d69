//! `vigil bench --gpu`: the same benchmark on an NVIDIA GPU — ONNX Runtime's TensorRT / CUDA
//! execution providers and GStreamer's NVDEC decoders — after checking that each is there.

use anyhow::{Result, bail};

/// What this machine offers for a GPU run.
#[derive(Debug, Clone)]
pub struct GpuCheck {
    /// An NVIDIA device node or driver is present (`/dev/nvidia0`, `/proc/driver/nvidia/version`).
    pub device: Option<String>,
    /// ONNX Runtime's CUDA execution provider is in the loaded library (the `onnxruntime-gpu` wheel).
    pub cuda: bool,
    /// ONNX Runtime's TensorRT execution provider is in the loaded library.
    pub tensorrt: bool,
    /// GStreamer's NVDEC decoders installed here (`nvh264dec`, `nvh265dec`, …).
    pub nvdec: Vec<String>,
}

impl GpuCheck {
    /// Looks: device nodes, the ONNX Runtime library's providers, GStreamer's element registry.
    pub fn probe(ort_library: Option<&std::path::Path>) -> GpuCheck {
        let device = ["/proc/driver/nvidia/version", "/dev/nvidia0"]
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .map(|p| p.to_string());
        let (cuda, tensorrt) = crate::detect::gpu_providers(ort_library);
        let nvdec = match gstreamer::init() {
            Ok(()) => ["nvh264dec", "nvh265dec", "nvh264sldec", "nvh265sldec", "nvjpegdec"]
                .iter()
                .filter(|n| gstreamer::ElementFactory::find(n).is_some())
                .map(|n| n.to_string())
                .collect(),
            Err(_) => Vec::new(),
        };
        GpuCheck { device, cuda, tensorrt, nvdec }
    }

    /// What is missing for a GPU run, in words; empty when nothing is.
    pub fn missing(&self) -> Vec<String> {
        let mut m = Vec::new();
        if self.device.is_none() {
            m.push("no NVIDIA GPU present (no /dev/nvidia0, no /proc/driver/nvidia/version)".to_string());
        }
        if !self.cuda {
            m.push(
                "ONNX Runtime has no CUDA execution provider (the CPU `onnxruntime` wheel is loaded; install \
                 `onnxruntime-gpu` and point models.ort_library or ORT_DYLIB_PATH at its libonnxruntime.so)"
                    .to_string(),
            );
        }
        if self.nvdec.is_empty() {
            m.push("GStreamer has no NVDEC decoder (nvh264dec / nvh265dec from gstreamer1.0-plugins-bad's nvcodec, with the NVIDIA driver)".to_string());
        }
        m
    }

    /// Ok when a GPU run can start; otherwise an error listing every missing piece.
    pub fn require(&self) -> Result<()> {
        let m = self.missing();
        if m.is_empty() {
            return Ok(());
        }
        bail!("vigil bench --gpu cannot run on this machine:\n  - {}", m.join("\n  - "))
    }

    pub fn describe(&self) -> String {
        format!(
            "GPU: {}; ONNX Runtime providers: {}{}CPU; NVDEC: {}",
            self.device.as_deref().unwrap_or("none"),
            if self.tensorrt { "TensorRT, " } else { "" },
            if self.cuda { "CUDA, " } else { "" },
            if self.nvdec.is_empty() { "none".to_string() } else { self.nvdec.join(", ") }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missing_piece_is_named_and_a_complete_machine_passes() {
        let none = GpuCheck { device: None, cuda: false, tensorrt: false, nvdec: vec![] };
        let e = none.require().unwrap_err().to_string();
        assert!(e.contains("no NVIDIA GPU present"), "{e}");
        assert!(e.contains("no CUDA execution provider"), "{e}");
        assert!(e.contains("no NVDEC decoder"), "{e}");
        let all = GpuCheck {
            device: Some("/dev/nvidia0".into()),
            cuda: true,
            tensorrt: true,
            nvdec: vec!["nvh264dec".into()],
        };
        assert!(all.require().is_ok());
        assert!(all.describe().contains("TensorRT, CUDA, CPU"));
        let no_dec = GpuCheck { nvdec: vec![], ..all };
        assert_eq!(no_dec.missing().len(), 1);
    }
}
