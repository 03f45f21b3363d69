//! Greedy non-maximum suppression, in place (no allocation on the hot path).

use crate::frame::BBox;

/// Greedy NMS, highest score first; suppresses boxes with IoU ≥ `iou` against a kept box.
pub fn nms<T>(mut items: Vec<T>, iou: f32, bbox: impl Fn(&T) -> BBox, score: impl Fn(&T) -> f32) -> Vec<T> {
    nms_in_place(&mut items, iou, bbox, score);
    items
}

/// [`nms`] in place, without allocating: the kept items end up first, best first.
pub fn nms_in_place<T>(items: &mut Vec<T>, iou: f32, bbox: impl Fn(&T) -> BBox, score: impl Fn(&T) -> f32) {
    items.sort_unstable_by(|a, b| score(b).total_cmp(&score(a)));
    keep_greedy(items, iou, bbox, |_| 0);
}

/// The greedy step of NMS on `items` sorted by group, then best first within a group: keeps an
/// item unless a kept item of its group overlaps it at IoU ≥ `iou`; kept items end up first.
pub(crate) fn keep_greedy<T>(items: &mut Vec<T>, iou: f32, bbox: impl Fn(&T) -> BBox, group: impl Fn(&T) -> u16) {
    let (mut kept, mut start) = (0, 0);
    for i in 0..items.len() {
        if kept > start && group(&items[kept - 1]) != group(&items[i]) {
            start = kept;
        }
        let b = bbox(&items[i]);
        if items[start..kept].iter().all(|k| bbox(k).iou(&b) < iou) {
            items.swap(kept, i);
            kept += 1;
        }
    }
    items.truncate(kept);
}
