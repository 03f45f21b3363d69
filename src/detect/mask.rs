//! MobileNetV2 mask classifier (MODELS.md §2): face crop, RGB, bilinear 224×224, `x/127.5 − 1`,
//! NHWC; output `probs[:,0]` = mask, `probs[:,1]` = no mask. Optionally a head fitted by `vigil
//! fit` on the backbone's `features` output gives the no-mask probability instead.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use super::runner::Runner;
use super::runtime::{ModelInfo, RuntimeOptions, session};
use crate::frame::{BBox, RgbFrame};
use crate::util::fsx;

pub struct MaskClassifier {
    pub info: ModelInfo,
    run: Runner,
    pub head: Option<FittedHead>,
    /// `probs` of every crop of the last [`infer`](Self::infer), in crop order.
    probs: Vec<f32>,
    /// `features` of every crop of the last `infer` (models with that output).
    feats: Vec<f32>,
    /// The unmirrored crops' features while the mirrored ones run (test-time flip).
    feats_flip: Vec<f32>,
}

/// Crops per ONNX Runtime run. On CPU a batch is no faster per crop than single runs (9.4–10.9 ms
/// per crop for batches of 1, 2, 4, 8, MobileNetV2 224×224), but the session's arena grows to
/// the largest batch it has seen and keeps it (+13 MB at 1 crop, +112 MB at 8), once per model
/// copy: so crops run one at a time, with one input shape for the whole run (docs "Memory").
const CROPS_PER_RUN: usize = 1;

/// A logistic-regression head on standardised backbone features (`vigil fit`), stored as
/// `models/<id>.json` with a manifest `models/<id>.toml` that holds its SHA-256.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedHead {
    pub id: String,
    pub kind: String,
    /// The model whose `features` output this head reads.
    pub features_model: String,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Output weights: one per feature (logistic regression), or one per hidden unit.
    pub weights: Vec<f32>,
    pub bias: f32,
    /// A hidden tanh layer (small MLP): `hidden_bias.len()` units × features weights, row-major.
    /// Empty: logistic regression on the standardised features.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden_weights: Vec<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden_bias: Vec<f32>,
    /// Crop views the features are taken at: margins (fractions of the face box on each side)
    /// or [`LOWER_FACE`]; the feature vector is their features concatenated, in this order.
    #[serde(default = "single_view")]
    pub views: Vec<f32>,
    /// Test-time flip: each view's features are the average of the crop's and its mirror
    /// image's (twice the classifier runs per face).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flip: bool,
    pub provenance: serde_json::Value,
    /// A head refitted from the officers' decisions (`vigil fit --from-reviews`): its version (the
    /// head it replaced + 1; absent: the first head, fitted from labelled data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// SHA-256 of the evaluation report that promoted this version (`<id>.v<version>.report.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_sha256: Option<String>,
    /// SHA-256 of the head file, set when loaded.
    #[serde(skip)]
    pub sha256: String,
}

/// The crop view that is the lower face (nose, mouth and chin, where a mask is): the box's lower
/// 60 %, widened by 10 % of its width on each side and 10 % of its height below. In a head's
/// `views` it stands beside crop margins (which are ≥ 0).
pub const LOWER_FACE: f32 = -1.0;

/// The crop of face box `b` for a view: `b` widened by the margin `view` on each side, or
/// [`LOWER_FACE`]; clipped to the `w` × `h` frame.
pub fn view_box(b: BBox, view: f32, w: f32, h: f32) -> BBox {
    if view == LOWER_FACE {
        let (bw, bh) = (b.w(), b.h());
        return BBox {
            x1: (b.x1 - 0.1 * bw).max(0.0),
            y1: (b.y1 + 0.4 * bh).max(0.0),
            x2: (b.x2 + 0.1 * bw).min(w),
            y2: (b.y2 + 0.1 * bh).min(h),
        };
    }
    b.expand(view, w, h)
}

/// A view as reports and `--views` name it: the margin (`0.15`), or `lower`.
pub fn view_name(view: f32) -> String {
    if view == LOWER_FACE { "lower".into() } else { format!("{view:.2}") }
}

fn single_view() -> Vec<f32> {
    vec![0.0]
}

impl FittedHead {
    /// A logistic-regression head: `(mean, std, weights, bias)` as `fit_logistic` returns them.
    pub fn logistic(
        id: &str,
        features_model: &str,
        (mean, std, weights, bias): (Vec<f32>, Vec<f32>, Vec<f32>, f32),
        views: Vec<f32>,
    ) -> FittedHead {
        FittedHead {
            id: id.into(),
            kind: "logistic regression on standardised features".into(),
            features_model: features_model.into(),
            mean,
            std,
            weights,
            bias,
            hidden_weights: Vec::new(),
            hidden_bias: Vec::new(),
            views,
            flip: false,
            provenance: serde_json::Value::Null,
            version: None,
            report_sha256: None,
            sha256: String::new(),
        }
    }
    pub fn predict(&self, f: &[f32]) -> f32 {
        self.predict_iter(f)
    }

    /// [`predict`](Self::predict) on features given piecewise (the views' features in order).
    pub fn predict_iter<'a>(&self, f: impl IntoIterator<Item = &'a f32>) -> f32 {
        let standardised = f.into_iter().zip(&self.mean).zip(&self.std).map(|((x, m), s)| (x - m) / s);
        let z: f32 = if self.hidden_bias.is_empty() {
            standardised.zip(&self.weights).map(|(x, w)| x * w).sum::<f32>() + self.bias
        } else {
            let x: Vec<f32> = standardised.collect();
            let d = x.len();
            self.hidden_bias
                .iter()
                .enumerate()
                .map(|(j, b)| {
                    let zj: f32 = self.hidden_weights[j * d..(j + 1) * d].iter().zip(&x).map(|(w, x)| w * x).sum();
                    (zj + b).tanh() * self.weights[j]
                })
                .sum::<f32>()
                + self.bias
        };
        1.0 / (1.0 + (-z).exp())
    }

    /// The head as evidence names it.
    pub fn model_ref(&self) -> super::ModelRef {
        super::ModelRef {
            id: self.id.clone(),
            sha256: self.sha256.clone(),
            version: self.version,
            report_sha256: self.report_sha256.clone(),
        }
    }

    /// Reads `<dir>/<id>.toml` (`file`, `sha256`) and the head it names, checking the hash.
    pub fn load(dir: &Path, id: &str) -> Result<FittedHead> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct HeadManifest {
            id: String,
            file: String,
            sha256: String,
        }
        let mpath = dir.join(format!("{id}.toml"));
        let text = fsx::read_text(&mpath, fsx::limits::MANIFEST)
            .with_context(|| format!("head manifest {}: cannot read", mpath.display()))?;
        let m: HeadManifest =
            toml::from_str(&text).map_err(|e| anyhow!("head manifest {}: {}", mpath.display(), e.message()))?;
        let path = dir.join(&m.file);
        let bytes = fsx::read_limited(&path, fsx::limits::HEAD)
            .with_context(|| format!("head {}: cannot read", path.display()))?;
        let actual = crate::util::sha256_hex(&bytes);
        if actual != m.sha256 {
            bail!("head {}: SHA-256 is {actual}, but manifest {} says {}", path.display(), mpath.display(), m.sha256);
        }
        let mut h: FittedHead = serde_json::from_slice(&bytes).map_err(|e| anyhow!("head {}: {e}", path.display()))?;
        h.sha256 = actual;
        let outputs = if h.hidden_bias.is_empty() { h.mean.len() } else { h.hidden_bias.len() };
        if h.id != m.id
            || h.weights.len() != outputs
            || h.hidden_weights.len() != h.hidden_bias.len() * h.mean.len()
            || h.std.len() != h.mean.len()
            || h.views.is_empty()
            || !h.mean.len().is_multiple_of(h.views.len())
            || h.views.iter().any(|&v| !(0.0..=1.0).contains(&v) && v != LOWER_FACE)
        {
            bail!("head {}: inconsistent (id or dimensions)", path.display());
        }
        // a head promoted from reviews comes with the report that promoted it
        if let (Some(v), Some(want)) = (h.version, &h.report_sha256) {
            let rpath = dir.join(format!("{}.v{v}.report.json", h.id));
            let bytes = fsx::read_limited(&rpath, fsx::limits::MANIFEST).with_context(|| {
                format!("head {}: its evaluation report {}: cannot read", path.display(), rpath.display())
            })?;
            let got = crate::util::sha256_hex(&bytes);
            if &got != want {
                bail!(
                    "head {}: evaluation report {} has SHA-256 {got}, the head names {want}",
                    path.display(),
                    rpath.display()
                );
            }
        }
        Ok(h)
    }
}

impl MaskClassifier {
    pub fn load(dir: &Path, id: &str, opts: &RuntimeOptions) -> Result<MaskClassifier> {
        let info = ModelInfo::load(dir, id, "softmax2")?;
        let run = Runner::new(session(&info, opts)?, &info.manifest.input.name, &info.manifest.outputs)?;
        Ok(MaskClassifier { info, run, head: None, probs: Vec::new(), feats: Vec::new(), feats_flip: Vec::new() })
    }

    /// No-mask probability for each face box (one batched run). With a fitted head, the head's
    /// probability on the backbone features at the head's crop margins; otherwise the model's own
    /// `probs[:,1]` on the box widened by `margin`.
    pub fn no_mask_prob(&mut self, frame: &RgbFrame, boxes: &[BBox], margin: f32) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(boxes.len());
        self.no_mask_prob_into(frame, boxes, margin, &mut out)?;
        Ok(out)
    }

    /// [`no_mask_prob`](Self::no_mask_prob) into `out` (cleared first): no allocation once
    /// `out` and the input buffer have grown to the number of faces.
    pub fn no_mask_prob_into(
        &mut self,
        frame: &RgbFrame,
        boxes: &[BBox],
        margin: f32,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        out.clear();
        if boxes.is_empty() {
            return Ok(());
        }
        let (fw, fh) = (frame.width as f32, frame.height as f32);
        let n = boxes.len();
        let Some(head) = &self.head else {
            self.infer(frame, boxes.iter().map(|b| b.expand(margin, fw, fh)), n, false)?;
            out.extend(self.probs.chunks_exact(2).map(|p| p[1]));
            return Ok(());
        };
        let views = head.views.len();
        let head = self.head.take().expect("head");
        let crops = || head.views.iter().flat_map(|&m| boxes.iter().map(move |b| view_box(*b, m, fw, fh)));
        let mut r = self.infer(frame, crops(), n * views, false);
        if head.flip && r.is_ok() {
            // the mirror images' features, averaged into the crops' own
            std::mem::swap(&mut self.feats, &mut self.feats_flip);
            r = self.infer(frame, crops(), n * views, true);
            for (a, b) in self.feats.iter_mut().zip(&self.feats_flip) {
                *a = 0.5 * (*a + *b);
            }
        }
        let r = r.and_then(|_| {
            let f = self.features_output()?;
            let d = f.len() / (n * views);
            out.extend(
                (0..n).map(|i| head.predict_iter((0..views).flat_map(|v| &f[(v * n + i) * d..(v * n + i + 1) * d]))),
            );
            Ok(())
        });
        self.head = Some(head);
        r
    }

    /// Backbone features (needs a model with a `features` output) and the model's no-mask
    /// probabilities.
    pub fn features(&mut self, frame: &RgbFrame, boxes: &[BBox]) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        if boxes.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        self.infer(frame, boxes.iter().copied(), boxes.len(), false)?;
        let probs = self.probs.chunks_exact(2).map(|p| p[1]).collect();
        let f = self.features_output()?;
        let d = f.len() / boxes.len();
        Ok((probs, f.chunks_exact(d).map(<[f32]>::to_vec).collect()))
    }

    /// Runs the model on `n` crops of the frame (each mirrored left to right with `mirror`),
    /// [`CROPS_PER_RUN`] at a time, collecting the outputs in `probs` and `feats`.
    fn infer(&mut self, frame: &RgbFrame, mut crops: impl Iterator<Item = BBox>, n: usize, mirror: bool) -> Result<()> {
        let spec = &self.info.manifest.input;
        let (w, h, mean, std) = (spec.width, spec.height, spec.mean, spec.std);
        let per = w * h * 3;
        let with_features = self.info.manifest.outputs.len() >= 2;
        self.probs.clear();
        self.feats.clear();
        let mut done = 0;
        while done < n {
            let m = CROPS_PER_RUN.min(n - done);
            self.run.input.resize(m * per, 0.0);
            for (b, bx) in crops.by_ref().take(m).enumerate() {
                let buf = &mut self.run.input[b * per..(b + 1) * per];
                frame.sample_bilinear(bx, w, h, |i, px| {
                    let i = if mirror { (i / w) * w + (w - 1 - i % w) } else { i };
                    for c in 0..3 {
                        buf[i * 3 + c] = (px[c] - mean[c]) / std[c];
                    }
                });
            }
            self.run.run([m, h, w, 3])?;
            self.probs.extend_from_slice(self.run.output(0)?);
            if with_features {
                self.feats.extend_from_slice(self.run.output(1)?);
            }
            done += m;
        }
        Ok(())
    }

    /// The `features` output of the last [`infer`](Self::infer).
    fn features_output(&self) -> Result<&[f32]> {
        if self.info.manifest.outputs.len() < 2 {
            bail!("model {} has no features output (use mask-classifier-mobilenetv2-features)", self.info.id);
        }
        Ok(&self.feats)
    }
}
