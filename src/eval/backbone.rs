//! The models every measurement loads: CenterFace and the classifier whose `features` output the
//! fitted heads read. Below `fit`, `dishes` and `report`, which all load them.

use std::path::Path;

use anyhow::Result;

use crate::detect::{FaceDetector, MaskClassifier, RuntimeOptions};

/// The classifier whose `features` output the heads read (the dirty head always, a no-mask head
/// unless it names another).
pub const FEATURES_MODEL: &str = "mask-classifier-mobilenetv2-features";

/// CenterFace and the features model `features` (its `probs` are the plain classifier's).
pub(crate) fn models(dir: &Path, features: &str) -> Result<(FaceDetector, MaskClassifier)> {
    let o = RuntimeOptions { intra_threads: 2, ..Default::default() };
    Ok((FaceDetector::load(dir, "centerface", &o)?, MaskClassifier::load(dir, features, &o)?))
}
