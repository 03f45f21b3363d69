//! vigil: a video-analytics worker for off-site health enforcement.
//!
//! The modules follow the data:
//! `config` → `ingest` (GStreamer decode, encoded ring buffer) → `privacy` (masks) → `health`
//! (tamper detection) → `detect` (ONNX models) → `track` → `rules` → `evidence` (clip, snapshots,
//! signed `manifest`, per-camera `chain`) → `spool` (durable staging) → `store` (object storage) →
//! `publish` (outbox, NATS JetStream); `control` wires them per camera and runs them; `telemetry`
//! turns typed internal events into log lines, metrics and health events; `verify` and
//! `retention` are the auditors' side.

pub mod bench;
pub mod chain;
pub mod config;
pub mod control;
pub mod detect;
pub mod eval;
pub mod evalcmd;
pub mod evidence;
pub mod frame;
pub mod health;
pub mod ingest;
pub mod manifest;
pub mod privacy;
pub mod publish;
pub mod retention;
pub mod rules;
pub mod spool;
pub mod store;
pub mod telemetry;
pub mod thresholds;
pub mod track;
pub mod verify;
