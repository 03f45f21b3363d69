//! Detection quality on labelled data (`vigil eval`) and a head fitted on it (`vigil fit`).
//!
//! Data (read in place from `../shared/data`, never copied): `mask/scenes` — full scenes with a
//! Pascal VOC box per face (`with_mask`, `without_mask`, `mask_weared_incorrect`) — and the
//! image-level crops in `mask/with_mask`, `mask/without_mask`.
//!
//! Scenes are split **by image**: an image belongs to the fit part when the first byte of SHA-256
//! of its file stem is below 154 (≈ 60 %), else to the evaluation part; faces of one image never
//! land on both sides. `vigil fit` sees only the fit part; `vigil eval` reports on the evaluation
//! part (and, for reference, on the fit part).
//!
//! Per face, scenes: a detection matches a labelled face at IoU ≥ 0.3 (greedy, best first). A
//! detection classified no-mask is a true positive when it matches a `without_mask` face, a false
//! alarm when it matches a `with_mask` face or no face at all; `mask_weared_incorrect` faces are left
//! out of both sides (neither a clear violation nor clearly compliant). Recall counts every
//! labelled `without_mask` face of at least the minimum size, detected or not.

pub mod attribute;
pub mod backbone;
pub mod clips;
pub mod dishes;
pub mod fit;
pub mod logistic;
pub mod metrics;
pub mod photos;
pub mod report;
pub mod reviews;
pub mod scenes;

pub use fit::*;
pub use metrics::*;
pub use scenes::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::FittedHead;
    use crate::eval::logistic::fit_logistic;

    #[test]
    fn logistic_regression_separates_separable_data() {
        let x: Vec<Vec<f32>> = (0..200)
            .map(|i| vec![(i % 2) as f32 * 2.0 - 1.0 + (i as f32 * 0.37).sin() * 0.3, (i as f32).cos()])
            .collect();
        let y: Vec<bool> = (0..200).map(|i| i % 2 == 1).collect();
        let h = FittedHead::logistic("t", "t", fit_logistic(&x, &y, 1e-3, 300), vec![0.0]);
        let correct = x.iter().zip(&y).filter(|(f, t)| (h.predict(f) >= 0.5) == **t).count();
        assert_eq!(correct, 200);
    }

    #[test]
    fn a_refit_keeps_the_head_under_a_strong_pull_and_follows_the_rows_under_a_weak_one() {
        // the head calls everything positive: weight 0 on the only feature, bias 3
        let (mean, std, w, b) = (vec![0.0f32], vec![1.0f32], vec![0.0f32], 3.0f32);
        let x: Vec<Vec<f32>> = (0..100).map(|i| vec![if i % 2 == 1 { 1.0 } else { -1.0 }]).collect();
        let y: Vec<bool> = (0..100).map(|i| i % 2 == 1).collect();
        let strong = logistic::refit_logistic(&x, &y, 1e4, (&mean, &std, &w, b), 300);
        let weak = logistic::refit_logistic(&x, &y, 1e-3, (&mean, &std, &w, b), 300);
        // the head's own standardisation is kept
        assert_eq!((strong.0.clone(), strong.1.clone()), (mean.clone(), std.clone()));
        assert!(strong.2[0].abs() < 0.01, "a strong pull keeps the weight: {}", strong.2[0]);
        assert!(strong.3.abs() < 0.1, "and refits the bias to the balanced classes: {}", strong.3);
        assert!(weak.2[0] > 3.0, "a weak pull follows the rows: {}", weak.2[0]);
        let h = FittedHead::logistic("t", "t", weak, vec![0.0]);
        assert!(x.iter().zip(&y).all(|(f, t)| (h.predict(f) >= 0.5) == *t));
    }

    #[test]
    fn pr_counts_follow_the_matching_rules() {
        let det = |score, size, matched, p| Det {
            bbox: crate::frame::BBox { x1: 0.0, y1: 0.0, x2: size, y2: size },
            score,
            size,
            matched,
            prob: vec![p; MARGINS.len()],
            features: FaceFeatures::default(),
        };
        let r = SceneResult {
            stem: "s".into(),
            fit_part: false,
            dets: vec![
                det(0.9, 30.0, Some(Label::NoMask), 0.9),    // tp
                det(0.9, 30.0, Some(Label::Mask), 0.8),      // fp
                det(0.9, 30.0, None, 0.95),                  // fp: no face there
                det(0.9, 30.0, Some(Label::Incorrect), 0.9), // left out
                det(0.9, 10.0, Some(Label::NoMask), 0.9),    // too small
                det(0.3, 30.0, Some(Label::NoMask), 0.9),    // below the face threshold
            ],
            faces: vec![
                (30.0, Label::NoMask, Some(0.9)),
                (30.0, Label::NoMask, Some(0.3)),
                (30.0, Label::NoMask, None),
                (10.0, Label::NoMask, Some(0.9)),
            ],
        };
        let c = pr_curve(
            std::slice::from_ref(&r),
            Levers { face_threshold: 0.5, min_face_px: 24.0, margin_index: 0 },
            false,
        );
        let at = c.iter().find(|p| (p.threshold - 0.5).abs() < 1e-6).unwrap();
        assert_eq!((at.tp, at.fp, at.fn_), (1, 2, 2));
        let e = errors_at(
            std::slice::from_ref(&r),
            Levers { face_threshold: 0.5, min_face_px: 24.0, margin_index: 0 },
            0.85,
            false,
        );
        let kinds: Vec<(&str, Option<Label>)> = e.iter().map(|x| (x.kind, x.label)).collect();
        assert_eq!(
            kinds,
            [("false alarm", None)],
            "the with-mask face scored 0.8 is under 0.85, the bare one a false alarm"
        );
        let e = errors_at(&[r], Levers { face_threshold: 0.5, min_face_px: 24.0, margin_index: 0 }, 0.92, false);
        let kinds: Vec<(&str, Option<Label>)> = e.iter().map(|x| (x.kind, x.label)).collect();
        assert_eq!(kinds, [("classifier miss", Some(Label::NoMask)), ("false alarm", None)]);
        assert!((at.precision - 1.0 / 3.0).abs() < 1e-9 && (at.recall - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn voc_annotations_of_the_shared_scenes_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mask/scenes");
        assert!(dir.exists(), "needs ../shared/data/mask/scenes (CI has it)");
        let s = load_scenes(&dir).unwrap();
        assert_eq!(s.len(), 525);
        let faces: usize = s.iter().map(|x| x.faces.len()).sum();
        let nomask = s.iter().flat_map(|x| &x.faces).filter(|f| f.1 == Label::NoMask).count();
        assert_eq!((faces, nomask), (1702 + 392 + 61, 392), "DATA.md's box counts");
        let fit = s.iter().filter(|x| x.is_fit_part()).count();
        assert!((280..=350).contains(&fit), "about 60 % of images in the fit part: {fit}");
        assert!(s.iter().all(|x| x.image.exists()));
    }

    #[test]
    fn recolourings_change_colour_not_shape_and_darken_only_the_lower_face() {
        use crate::frame::{BBox, RgbFrame};
        // 4 × 4 pixels, all pure red but for one white pixel at (0, 0)
        let mut data: Vec<u8> = [255u8, 0, 0].repeat(16);
        data[..3].copy_from_slice(&[255, 255, 255]);
        let f = RgbFrame { width: 4, height: 4, data, pts: std::time::Duration::ZERO };
        let px = |f: &RgbFrame, x: usize, y: usize| <[u8; 3]>::try_from(&f.data[(y * 4 + x) * 3..][..3]).unwrap();
        assert_eq!(px(&Recolour::Hue120.apply(&f, &[]), 1, 1), [0, 255, 0], "red turns green");
        assert_eq!(px(&Recolour::Hue240.apply(&f, &[]), 1, 1), [0, 0, 255], "red turns blue");
        assert_eq!(px(&Recolour::Hue120.apply(&f, &[]), 0, 0), [255, 255, 255], "white stays white");
        assert_eq!(px(&Recolour::Grey.apply(&f, &[]), 1, 1), [76, 76, 76], "luma of red");
        // a face box over the whole frame: rows from 0.45 × 4 = 1.8 (row 1) down are darkened
        let face = BBox { x1: 0.0, y1: 0.0, x2: 4.0, y2: 4.0 };
        let d = Recolour::DarkLower.apply(&f, &[face]);
        assert_eq!(px(&d, 0, 0), [255, 255, 255], "the upper face is untouched");
        assert_eq!(px(&d, 2, 3), [77, 0, 0], "the chin is at 30 %");
        assert_eq!(Recolour::DarkLower.apply(&f, &[]).data, f.data, "no face, nothing darkened");
        let r = Recolours::parse("grey, hue").unwrap();
        assert!(r.has(Recolour::Hue240) && r.has(Recolour::Grey) && !r.has(Recolour::DarkLower));
        assert_eq!(r.name(), "grey,hue");
        assert_eq!(Recolours::parse("none").unwrap(), Recolours::default());
        let e = Recolours::parse("grey,sepia").unwrap_err().to_string();
        assert!(e.contains("--recolour") && e.contains("sepia"), "{e}");
    }

    #[test]
    fn recoloured_faces_are_training_rows_only_for_the_chosen_recolourings_and_folds() {
        // features per view: [view 0, view 1, view 2, lower]; a recolouring's features are its
        // index + 10, so each row says where it came from
        let per_view = |v: f32| vec![vec![v], vec![v + 0.5], vec![], vec![]];
        let recoloured = |base: f32| (0..4).map(|k| per_view(base + 10.0 * (k + 1) as f32)).collect::<Vec<_>>();
        let face = |matched, base| Det {
            bbox: crate::frame::BBox { x1: 0.0, y1: 0.0, x2: 30.0, y2: 30.0 },
            score: 0.9,
            size: 30.0,
            matched,
            prob: vec![],
            features: FaceFeatures { views: per_view(base), recoloured: recoloured(base), ..Default::default() },
        };
        let scene =
            |i: usize, d: Det| SceneResult { stem: format!("s{i}"), fit_part: true, dets: vec![d], faces: vec![] };
        let results = vec![scene(0, face(Some(Label::NoMask), 1.0)), scene(1, face(Some(Label::Mask), 2.0))];
        let crops = vec![Crop {
            features: FaceFeatures { views: per_view(3.0), recoloured: recoloured(3.0), ..Default::default() },
            no_mask: true,
        }];
        let dark = TrainingLevers { recolour: Recolours { dark: true, ..Default::default() }, ..Default::default() };
        // views 0 and 1; scene 1 held out (its fold)
        let (x, y) = training_data(&results, 24.0, &crops, &[0, 1], dark, |si| si != 1);
        assert_eq!(x, vec![vec![3.0, 3.5], vec![43.0, 43.5], vec![1.0, 1.5], vec![41.0, 41.5]]);
        assert_eq!(y, vec![true, true, true, true]);
        // no recolouring: the plain rows only; grey and hue: three more rows per face
        let (x, _) = training_data(&results, 24.0, &crops, &[0], TrainingLevers::default(), |_| true);
        assert_eq!(x, vec![vec![3.0], vec![1.0], vec![2.0]]);
        let gh = TrainingLevers { recolour: Recolours::parse("grey,hue").unwrap(), ..Default::default() };
        let (x, y) = training_data(&results, 24.0, &crops, &[0], gh, |_| true);
        assert_eq!(x.len(), 12);
        assert_eq!(&x[8..], &[vec![2.0], vec![12.0], vec![22.0], vec![32.0]]);
        assert_eq!(&y[8..], &[false; 4]);
    }
}
