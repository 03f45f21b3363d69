//! The loaded model copies shared by the cameras, and cross-camera batching of face detection.

use anyhow::{Context, Result, anyhow};

use super::{Face, Models, ObjectDetector};
use crate::frame::{BBox, RgbFrame};

/// One copy of every model the pipeline needs: the no-mask pair and/or the object detector.
#[derive(Default)]
pub struct ModelSet {
    pub no_mask: Option<Models>,
    pub objects: Option<ObjectDetector>,
    /// The clean/dirty head on its features model (with the object detector, when configured).
    pub dirty: Option<super::MaskClassifier>,
    /// The attribute heads the `attribute_missing` rules name, each on its features model.
    pub attributes: Vec<super::MaskClassifier>,
    /// Object models rules name beside `objects` (`detector`: a site's rodent detector).
    pub detectors: Vec<ObjectDetector>,
}

impl ModelSet {
    /// The attribute head `id`, on its features model.
    pub fn attribute(&mut self, id: &str) -> Option<&mut super::MaskClassifier> {
        self.attributes.iter_mut().find(|m| m.head.as_ref().is_some_and(|h| h.id == id))
    }

    /// The object model `id` (`None`: the pipeline's, `objects`) and its index in the set (0:
    /// `objects`).
    pub fn detector(&mut self, id: Option<&str>) -> Option<(usize, &mut ObjectDetector)> {
        match id {
            Some(id) if self.objects.as_ref().is_none_or(|o| o.info.id != id) => {
                self.detectors.iter_mut().enumerate().find(|(_, d)| d.info.id == id).map(|(i, d)| (i + 1, d))
            }
            _ => self.objects.as_mut().map(|m| (0, m)),
        }
    }

    /// Models in use, for manifests.
    pub fn infos(&self) -> Vec<super::ModelRef> {
        let mut v = self.no_mask.as_ref().map(Models::infos).unwrap_or_default();
        v.extend(self.objects.iter().chain(&self.detectors).map(|o| super::ModelRef::of(&o.info)));
        v.extend(self.dirty.iter().chain(&self.attributes).filter_map(|d| d.head.as_ref()).map(|h| h.model_ref()));
        v
    }
}

/// `instances` copies of the models; cameras take a free one (their own first), so up to
/// `instances` frames are inferred at the same time.
pub struct ModelPool {
    /// parking_lot's mutex is eventually fair: a camera that just released a copy cannot keep
    /// taking it back while another waits (std's may starve a waiter for seconds).
    sets: Vec<parking_lot::Mutex<ModelSet>>,
    /// Cross-camera batching of face detection (`models.batch` > 1).
    batcher: Option<FaceBatcher>,
}

/// One camera's face-detection request waiting for a batch.
struct BatchRequest {
    id: u64,
    frame: RgbFrame,
    roi: BBox,
    input_width: u32,
    threshold: f32,
}

#[derive(Default)]
struct BatchState {
    pending: Vec<BatchRequest>,
    done: std::collections::HashMap<u64, std::result::Result<Vec<Face>, String>>,
    next_id: u64,
}

/// Batches face detection across cameras: a request waits up to `wait` for others of the same
/// shape (frame size, region, input width, threshold); whoever completes a batch of `max`, or
/// times out first, runs the batch for everyone in one model run.
struct FaceBatcher {
    max: usize,
    wait: std::time::Duration,
    state: std::sync::Mutex<BatchState>,
    ready: std::sync::Condvar,
}

impl ModelPool {
    pub fn new(sets: Vec<ModelSet>) -> ModelPool {
        ModelPool { sets: sets.into_iter().map(parking_lot::Mutex::new).collect(), batcher: None }
    }

    /// Batch face detection across cameras, up to `max` frames per model run, waiting at most
    /// `wait` for a batch to fill.
    pub fn with_batching(mut self, max: usize, wait: std::time::Duration) -> ModelPool {
        if max > 1 {
            self.batcher = Some(FaceBatcher { max, wait, state: Default::default(), ready: std::sync::Condvar::new() });
        }
        self
    }

    /// Face detection for camera `hint` into `out` (cleared first): batched with other cameras'
    /// frames when batching is on, else on a free model copy. Without batching, no allocation once
    /// `out` has grown; a batch copies the frame for the camera that runs it.
    pub fn detect_faces(
        &self,
        hint: usize,
        frame: &RgbFrame,
        roi: BBox,
        input_width: u32,
        threshold: f32,
        out: &mut Vec<Face>,
    ) -> Result<()> {
        let Some(b) = &self.batcher else {
            let mut set = self.get(hint);
            let m = set.no_mask.as_mut().context("no-mask models not loaded")?;
            return m.face.detect_in(frame, roi, input_width, threshold, out);
        };
        let shape = |r: &BatchRequest| (r.frame.width, r.frame.height, r.roi, r.input_width, r.threshold);
        let mut st = b.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = st.next_id;
        st.next_id += 1;
        st.pending.push(BatchRequest { id, frame: frame.clone(), roi, input_width, threshold });
        let deadline = std::time::Instant::now() + b.wait;
        loop {
            if let Some(r) = st.done.remove(&id) {
                out.clear();
                out.extend(r.map_err(|e| anyhow!("{e}"))?);
                return Ok(());
            }
            let mine = st.pending.iter().position(|r| r.id == id);
            let now = std::time::Instant::now();
            let key = mine.map(|i| shape(&st.pending[i]));
            let full = key.is_some_and(|k| st.pending.iter().filter(|r| shape(r) == k).count() >= b.max);
            if let Some(k) = key
                && (full || now >= deadline)
            {
                // lead: take up to `max` requests shaped like this one and run them together
                let (mut batch, rest): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut st.pending).into_iter().partition(|r| shape(r) == k);
                let overflow = batch.split_off(batch.len().min(b.max));
                st.pending = rest;
                st.pending.extend(overflow);
                drop(st);
                let frames: Vec<&RgbFrame> = batch.iter().map(|r| &r.frame).collect();
                let result = {
                    let mut set = self.get(hint);
                    match set.no_mask.as_mut() {
                        Some(m) => {
                            m.face.detect_batch(&frames, roi, input_width, threshold).map_err(|e| format!("{e:#}"))
                        }
                        None => Err("no-mask models not loaded".into()),
                    }
                };
                st = b.state.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(faces) => {
                        for (r, f) in batch.iter().zip(faces) {
                            st.done.insert(r.id, Ok(f));
                        }
                    }
                    Err(e) => {
                        for r in &batch {
                            st.done.insert(r.id, Err(e.clone()));
                        }
                    }
                }
                b.ready.notify_all();
                continue;
            }
            let left = deadline.saturating_duration_since(now).max(std::time::Duration::from_millis(1));
            st = b.ready.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// A copy for camera number `hint`: a free one if any, else waits for the camera's own.
    pub fn get(&self, hint: usize) -> parking_lot::MutexGuard<'_, ModelSet> {
        let n = self.sets.len();
        for k in 0..n {
            if let Some(g) = self.sets[(hint + k) % n].try_lock() {
                return g;
            }
        }
        self.sets[hint % n].lock()
    }
}
