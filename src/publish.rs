//! Publish stage: evidence events leave through a local outbox, then NATS JetStream.
//!
//! Every event is first appended to `<data_dir>/outbox.jsonl` and fsync'd. Why an append-only
//! file and not an embedded database: events are written once and read in order, the volume is
//! small (one line per evidence item or health change), a torn last line after a crash is easy to
//! detect and skip, and ops can inspect it with `tail`; an acknowledgement log beside it
//! (`outbox.acked`, one id a line) marks what JetStream has confirmed. When NATS is configured, a
//! background task publishes the events in order to JetStream (`Nats-Msg-Id` = the event id) and
//! appends the id to `outbox.acked` once the stream acknowledged it. Events not acknowledged when
//! the worker stops — broker down, crash — are published on the next start, still in order.
//!
//! **Exactly once, however long the outage.** JetStream's duplicate window (`publish.
//! duplicate_window_s`, default 2 minutes) only catches a resend within the window. vigil does not
//! rely on it: before each publish it reads the last message on the event's subject; if that message
//! carries this event's id, the event is already on the stream (the earlier ack was lost) and is
//! only marked acknowledged; otherwise it publishes with `Nats-Expected-Last-Subject-Sequence` set
//! to that message's sequence, so a concurrent or earlier copy makes the publish fail and the check
//! runs again instead of storing a duplicate. Events of one subject are published by one worker in
//! order, which is what makes "the last message" the right place to look.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify, mpsc};

use crate::telemetry::metrics;
use crate::util::{Backoff, Subject};

/// One line of the outbox: a message for `subject`, deduplicated on the stream by `id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: String,
    pub subject: Subject,
    pub payload: serde_json::Value,
}

impl OutboxEntry {
    /// A message carrying `payload` (a typed event: evidence, health, checkpoint, audit, review).
    pub fn new(id: impl Into<String>, subject: Subject, payload: &impl Serialize) -> OutboxEntry {
        OutboxEntry { id: id.into(), subject, payload: serde_json::to_value(payload).unwrap_or_default() }
    }
}

struct Files {
    outbox: std::fs::File,
}

pub struct Publisher {
    files: Mutex<Files>,
    queue: Option<mpsc::UnboundedSender<OutboxEntry>>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    drained: Arc<Notify>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub outbox_path: PathBuf,
}

fn append_line(f: &mut std::fs::File, line: &str) -> std::io::Result<()> {
    f.write_all(line.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_data()
}

/// Reads the outbox and returns the entries not yet acknowledged, in order.
pub fn unacked(dir: &Path) -> Result<Vec<OutboxEntry>> {
    let acked: HashSet<String> =
        std::fs::read_to_string(dir.join("outbox.acked")).unwrap_or_default().lines().map(str::to_string).collect();
    let text = std::fs::read_to_string(dir.join("outbox.jsonl")).unwrap_or_default();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<OutboxEntry>(line) {
            Ok(e) if !acked.contains(&e.id) => out.push(e),
            Ok(_) => {}
            // a torn last line from a crash mid-write: the event was not acknowledged to anyone
            Err(e) => tracing::warn!(line = i + 1, error = %e, "outbox: skipping unreadable line"),
        }
    }
    Ok(out)
}

impl Publisher {
    pub async fn start(
        data_dir: &Path,
        nats_url: Option<&str>,
        stream: &str,
        dup_window: Duration,
    ) -> Result<Publisher> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("data dir {}", data_dir.display()))?;
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data_dir.join(name))
                .with_context(|| format!("outbox {}", data_dir.join(name).display()))
        };
        let files = Files { outbox: open("outbox.jsonl")? };
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let drained = Arc::new(Notify::new());
        let (queue, task) = match nats_url {
            None => (None, None),
            Some(url) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let backlog = unacked(data_dir)?;
                if !backlog.is_empty() {
                    tracing::info!(events = backlog.len(), "outbox: resending events not acknowledged before");
                }
                for e in backlog {
                    pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tx.send(e).ok();
                }
                let task = tokio::spawn(deliver(
                    url.to_string(),
                    stream.to_string(),
                    dup_window,
                    rx,
                    data_dir.join("outbox.acked"),
                    pending.clone(),
                    drained.clone(),
                ));
                (Some(tx), Some(task))
            }
        };
        Ok(Publisher {
            files: Mutex::new(files),
            queue,
            pending,
            drained,
            task: Mutex::new(task),
            outbox_path: data_dir.join("outbox.jsonl"),
        })
    }

    /// Durably records the event, then queues it for NATS (if configured).
    pub async fn submit(&self, entry: OutboxEntry) -> Result<()> {
        let line = serde_json::to_string(&entry)?;
        {
            let mut f = self.files.lock().await;
            append_line(&mut f.outbox, &line).context("outbox: append")?;
        }
        if entry.subject.is_evidence() {
            crate::telemetry::probe::record_recorded(&entry.id);
        }
        tracing::info!(target: "vigil::event", evidence_id = %entry.id, subject = %entry.subject, event = %line, "evidence event");
        if let Some(q) = &self.queue {
            let n = self.pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            metrics::get().outbox_depth.set(n as i64);
            q.send(entry).ok();
        }
        Ok(())
    }

    /// Events recorded but not yet acknowledged by JetStream.
    pub fn pending(&self) -> usize {
        self.pending.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until every queued event is acknowledged, or `deadline` passes.
    pub async fn flush(&self, deadline: Duration) -> usize {
        let _ = tokio::time::timeout(deadline, async {
            while self.pending() > 0 {
                let n = self.drained.notified();
                if self.pending() == 0 {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), n).await;
            }
        })
        .await;
        if let Some(t) = self.task.lock().await.take() {
            t.abort();
        }
        self.pending()
    }
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    url: String,
    stream: String,
    dup_window: Duration,
    mut rx: mpsc::UnboundedReceiver<OutboxEntry>,
    acked_path: PathBuf,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    drained: Arc<Notify>,
) {
    let client = match async_nats::ConnectOptions::new().retry_on_initial_connect().connect(url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %url, error = %e, "NATS: cannot connect; events stay in the outbox");
            return;
        }
    };
    let js = async_nats::jetstream::new(client);
    let mut stream_ready = false;
    let mut acked = match std::fs::OpenOptions::new().create(true).append(true).open(&acked_path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %acked_path.display(), error = %e, "outbox: cannot open ack log");
            return;
        }
    };
    while let Some(entry) = rx.recv().await {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10), Duration::from_millis(100));
        loop {
            if !stream_ready {
                let cfg = async_nats::jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![crate::util::subject::ALL.into()],
                    duplicate_window: dup_window,
                    ..Default::default()
                };
                match js.get_or_create_stream(cfg).await {
                    Ok(_) => stream_ready = true,
                    Err(e) => {
                        tracing::warn!(stream = %stream, error = %e, "JetStream: stream not ready")
                    }
                }
            }
            if stream_ready {
                match publish_once(&js, &stream, &entry).await {
                    Ok(seq) => {
                        crate::telemetry::Event::EventPublished {
                            id: &entry.id,
                            subject: &entry.subject.to_string(),
                            stream_seq: seq,
                        }
                        .emit();
                        if let Err(e) = append_line(&mut acked, &entry.id) {
                            tracing::error!(error = %e, "outbox: cannot record ack (event will be resent and deduplicated)");
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(evidence_id = %entry.id, error = %e, "JetStream publish failed; retrying")
                    }
                }
            }
            tokio::time::sleep(backoff.next_wait()).await;
        }
        let n = pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) - 1;
        metrics::get().outbox_depth.set(n as i64);
        drained.notify_waiters();
    }
}

/// Publishes `e` unless the stream already has it (see the module docs); returns its stream
/// sequence.
async fn publish_once(js: &async_nats::jetstream::Context, stream: &str, e: &OutboxEntry) -> Result<u64> {
    let st = js.get_stream(stream).await.context("stream info")?;
    let last = match st.get_last_raw_message_by_subject(&e.subject.to_string()).await {
        Ok(m) => {
            let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string());
            if id.as_deref() == Some(e.id.as_str()) {
                tracing::info!(evidence_id = %e.id, stream_seq = m.sequence, "already on the stream (an earlier acknowledgement was lost); not published again");
                return Ok(m.sequence);
            }
            m.sequence
        }
        Err(err) if err.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => 0,
        Err(err) => return Err(anyhow::Error::from(err).context("last message on subject")),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", e.id.as_str());
    headers.insert("Nats-Expected-Last-Subject-Sequence", last.to_string().as_str());
    let payload = Bytes::from(serde_json::to_vec(&e.payload)?);
    let ack = tokio::time::timeout(Duration::from_secs(5), async {
        js.publish_with_headers(e.subject.to_string(), headers, payload).await?.await.map_err(anyhow::Error::from)
    })
    .await
    .context("ack timed out")??;
    Ok(ack.sequence)
}
