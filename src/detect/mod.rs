//! Detection stage: the vendored ONNX models, run with ONNX Runtime through `ort` (library loaded at
//! run time, [`runtime`]). Each model has a manifest `models/<id>.toml` (input spec,
//! preprocessing, output decoding, labels, licence, SHA-256); the SHA-256 of the ONNX file is
//! checked before it is loaded. One file per model ([`face`], [`mask`], [`objects`]), the shared
//! [`nms`], and the [`pool`] of model copies the cameras share.
//!
//! Pre- and post-processing follow `../shared/models/MODELS.md` exactly:
//! - CenterFace: RGB, raw 0..255, stretch-resized to multiples of 32, NCHW; heatmap/scale/offset
//!   decoding at stride 4, greedy NMS at IoU 0.3, boxes mapped back by the resize factors.
//! - MobileNetV2 mask classifier: face crop, RGB, bilinear 224×224, `x/127.5 − 1`, NHWC;
//!   output `probs[:,0]` = mask, `probs[:,1]` = no mask.

use std::path::Path;

use anyhow::Result;

pub mod face;
pub mod mask;
pub mod nms;
pub mod objects;
pub mod pool;
mod runner;
pub mod runtime;

pub use face::{
    Face, FaceDecoder, FaceDetector, decode_centerface, decode_centerface_into, decode_retinaface_into,
    decode_scrfd_into,
};
pub use mask::{FittedHead, MaskClassifier};
pub use nms::{nms, nms_in_place};
pub use objects::{
    Object, ObjectDecoder, ObjectDetector, decode_centernet, decode_nanodet_stride, decode_ssd, decode_yolo,
    nms_per_class, nms_per_class_in_place,
};
pub use pool::{ModelPool, ModelSet};
pub use runtime::{ModelInfo, ModelManifest, RuntimeOptions, find_ort_library, gpu_providers, read_labels};

/// A loaded model as evidence names it: its id and the SHA-256 of its file; for a head refitted
/// from the officers' decisions, its version and the SHA-256 of the report that promoted it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRef {
    pub id: String,
    pub sha256: String,
    pub version: Option<u32>,
    pub report_sha256: Option<String>,
}

impl ModelRef {
    pub fn of(info: &ModelInfo) -> ModelRef {
        ModelRef { id: info.id.clone(), sha256: info.sha256.clone(), version: None, report_sha256: None }
    }
}

/// Both models of the no-mask path, loaded once per process.
pub struct Models {
    pub face: FaceDetector,
    pub mask: MaskClassifier,
}

/// A fitted head (`models/<id>.toml`) on the classifier whose features it reads.
pub fn load_head(dir: &Path, id: &str, opts: &RuntimeOptions) -> Result<MaskClassifier> {
    let head = FittedHead::load(dir, id)?;
    let mut m = MaskClassifier::load(dir, &head.features_model, opts)?;
    tracing::info!(head = %head.id, features = %head.features_model, "fitted head loaded");
    m.head = Some(head);
    Ok(m)
}

impl Models {
    /// With `head`, the classifier is the head's features model and the head gives the no-mask
    /// probability.
    pub fn load(dir: &Path, face: &str, mask: &str, head: Option<&str>, opts: &RuntimeOptions) -> Result<Models> {
        let face = FaceDetector::load(dir, face, opts)?;
        let mask = match head {
            None => {
                tracing::info!(
                    classifier = mask,
                    "no fitted head (models.mask_head = \"none\"): the plain classifier's own no-mask output is used"
                );
                MaskClassifier::load(dir, mask, opts)?
            }
            Some(h) => load_head(dir, h, opts)?,
        };
        Ok(Models { face, mask })
    }

    /// Models in use, for manifests (a fitted head is listed with the SHA-256 of its file).
    pub fn infos(&self) -> Vec<ModelRef> {
        let mut v = vec![ModelRef::of(&self.face.info), ModelRef::of(&self.mask.info)];
        v.extend(self.mask.head.as_ref().map(FittedHead::model_ref));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BBox;

    #[test]
    fn nms_keeps_best_of_overlapping() {
        let b = |x: f32| BBox { x1: x, y1: 0.0, x2: x + 10.0, y2: 10.0 };
        let kept = nms(vec![(b(0.0), 0.5), (b(1.0), 0.9), (b(50.0), 0.3)], 0.3, |t| t.0, |t| t.1);
        assert_eq!(kept.iter().map(|t| t.1).collect::<Vec<_>>(), vec![0.9, 0.3]);
    }

    #[test]
    fn centerface_decoding_follows_models_md() {
        // one 2x2 grid, one hot cell at (r=1, c=0)
        let (h, w) = (2, 2);
        let n = h * w;
        let mut heat = vec![0.0; n];
        heat[2] = 0.9;
        let mut scale = vec![0.0; 2 * n];
        scale[2] = (8.0f32 / 4.0).ln(); // bh = 8
        scale[n + 2] = (4.0f32 / 4.0).ln(); // bw = 4
        let offset = vec![0.0; 2 * n];
        let lms = vec![0.5; 10 * n];
        let f = decode_centerface(&heat, &scale, &offset, &lms, h, w, 8.0, 8.0, 0.5);
        assert_eq!(f.len(), 1);
        // cy = (1 + 0 + .5) * 4 = 6, cx = 2 -> x1 = 0, y1 = 2, x2 = 4, y2 = 8 (clamped to in_h)
        assert_eq!(f[0].bbox, BBox { x1: 0.0, y1: 2.0, x2: 4.0, y2: 8.0 });
        assert_eq!(f[0].landmarks[0], [2.0, 6.0]);
    }

    #[test]
    fn the_person_pass_looks_at_the_heads_of_small_persons_zoomed() {
        use face::{add_person_pass, head_region};
        let (w, h) = (400.0, 300.0);
        // a standing person 40 px wide: the top 40 px, grown by 10 %
        let standing = BBox { x1: 100.0, y1: 50.0, x2: 140.0, y2: 170.0 };
        assert_eq!(head_region(standing, w, h), BBox { x1: 96.0, y1: 46.0, x2: 144.0, y2: 94.0 });
        // head and shoulders only: the whole box
        let bust = BBox { x1: 200.0, y1: 0.0, x2: 260.0, y2: 50.0 };
        assert_eq!(head_region(bust, w, h), BBox { x1: 194.0, y1: 0.0, x2: 266.0, y2: 55.0 });
        // a person wider than a quarter of the frame is left to the first pass; at most 8 others
        let wide = BBox { x1: 0.0, y1: 0.0, x2: 120.0, y2: 300.0 };
        let person = |bbox: BBox, score: f32| objects::Object { bbox, score, class: 0 };
        // given worst first: the pass takes the best first all the same
        let mut persons: Vec<objects::Object> =
            std::iter::repeat_n(person(standing, 0.5), 10).chain(std::iter::once(person(wide, 0.9))).collect();
        let face = |x: f32, s: f32| Face {
            bbox: BBox { x1: x, y1: 50.0, x2: x + 10.0, y2: 60.0 },
            score: s,
            landmarks: [[0.0; 2]; 5],
        };
        let (mut faces, mut more, mut seen) = (vec![face(300.0, 0.9)], Vec::new(), Vec::new());
        let looked = add_person_pass(&mut persons, (w, h), &mut faces, &mut more, |r, iw, out| {
            seen.push((r, iw));
            out.push(face(115.0, 0.8));
            out.push(face(116.0, 0.7)); // the same face again: joined by NMS
            Ok(())
        })
        .unwrap();
        assert_eq!(looked, 8);
        assert!(seen.iter().all(|&(r, iw)| r == head_region(standing, w, h) && iw == 144), "{seen:?}");
        assert_eq!(faces.iter().map(|f| f.score).collect::<Vec<_>>(), vec![0.9, 0.8]);
    }

    #[test]
    fn the_lower_face_view_is_the_boxs_lower_part_and_heads_may_name_it() {
        use mask::{FittedHead, LOWER_FACE, view_box, view_name};
        let b = BBox { x1: 100.0, y1: 100.0, x2: 140.0, y2: 150.0 };
        // the lower 60 %, 10 % wider each side, 10 % lower; clipped to the frame
        assert_eq!(view_box(b, LOWER_FACE, 640.0, 480.0), BBox { x1: 96.0, y1: 120.0, x2: 144.0, y2: 155.0 });
        assert_eq!(view_box(b, LOWER_FACE, 142.0, 152.0), BBox { x1: 96.0, y1: 120.0, x2: 142.0, y2: 152.0 });
        assert_eq!(view_box(b, 0.15, 640.0, 480.0), b.expand(0.15, 640.0, 480.0));
        assert_eq!((view_name(LOWER_FACE), view_name(0.15)), ("lower".to_string(), "0.15".to_string()));
        // a head file naming the lower face loads; any other negative view is refused
        let d = tempfile::tempdir().unwrap();
        for (views, ok) in [(vec![0.0, LOWER_FACE], true), (vec![0.0, -0.5], false)] {
            let head = FittedHead::logistic("h", "f", (vec![0.0; 4], vec![1.0; 4], vec![0.5; 4], 0.0), views);
            let json = serde_json::to_vec(&head).unwrap();
            std::fs::write(d.path().join("h.json"), &json).unwrap();
            let sha = crate::util::sha256_hex(&json);
            std::fs::write(d.path().join("h.toml"), format!("id = \"h\"\nfile = \"h.json\"\nsha256 = \"{sha}\"\n"))
                .unwrap();
            let r = FittedHead::load(d.path(), "h");
            assert_eq!(r.is_ok(), ok, "{:?}", r.map(|h| h.views));
        }
    }

    #[test]
    fn hash_mismatch_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("m.onnx"), b"not the model").unwrap();
        let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/centerface.toml"))
            .unwrap()
            .replace("centerface.onnx", "m.onnx");
        std::fs::write(d.path().join("centerface.toml"), manifest).unwrap();
        let e = ModelInfo::load(d.path(), "centerface", "centerface").unwrap_err().to_string();
        assert!(e.contains("m.onnx") && e.contains("SHA-256 is") && e.contains("c3673a45"), "{e}");
    }
}
