//! vigil: a video-analytics worker for off-site health enforcement.
//!
//! The modules follow the data:
//! `config` → `ingest` (GStreamer decode, encoded ring buffer) → `privacy` (masks) → `detect`
//! (ONNX models) → `track` → `rules` → `evidence` (clip, snapshots, hashes) → `store` (object
//! storage) → `publish` (outbox, NATS JetStream); `control` wires them per camera and runs them.

pub mod chain;
pub mod config;
pub mod control;
pub mod detect;
pub mod evidence;
pub mod frame;
pub mod ingest;
pub mod manifest;
pub mod privacy;
pub mod publish;
pub mod retention;
pub mod rules;
pub mod store;
pub mod track;
pub mod verify;
