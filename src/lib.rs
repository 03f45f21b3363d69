//! vigil: a video-analytics worker for off-site health enforcement.
//!
//! The modules follow the data, top to bottom:
//! `config` → `ingest` (GStreamer decode, encoded ring buffer) → `privacy` (masks) → `health`
//! (tamper detection) → `detect` (ONNX models) → `track` → `rules` (one file per rule kind) →
//! `evidence` (clip, snapshots, signed manifest, per-camera chain) → `spool` (durable staging) →
//! `store` (object storage) → `publish` (outbox, NATS JetStream). `control` wires them per camera
//! and runs them (the analysis loop, hot reload); `telemetry` turns typed internal events into log
//! lines, metrics and health events; `verify` and `retention` are the auditors' side; `eval` and
//! `bench` measure; `cli` is the command line. `util` holds the helpers below all of them (time,
//! hashing, backoff, subjects, canonical JSON, safe files, secrets, HTTP serving, plots).

pub mod app;
pub mod audit_log;
pub mod bench;
pub mod cli;
pub mod config;
pub mod control;
pub mod detect;
pub mod eval;
pub mod evidence;
pub mod frame;
pub mod health;
pub mod ingest;
pub mod privacy;
pub mod publish;
pub mod retention;
pub mod review;
pub mod rules;
pub mod signing;
pub mod spool;
pub mod store;
pub mod telemetry;
pub mod track;
pub mod util;
pub mod verify;
