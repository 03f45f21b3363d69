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
    /// For a subject that more than one process publishes on (review decisions from several
    /// service instances): the message was made at this time, so whether it is on the stream
    /// already is looked up among the subject's messages since then, not only the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// When the entry was made: a resend after a restart looks for it among the stream's
    /// messages since then, whatever the stream's duplicate window (absent in old outboxes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

impl OutboxEntry {
    /// A message carrying `payload` (a typed event: evidence, health, checkpoint, audit, review).
    pub fn new(id: impl Into<String>, subject: Subject, payload: &impl Serialize) -> OutboxEntry {
        OutboxEntry {
            id: id.into(),
            subject,
            payload: serde_json::to_value(payload).unwrap_or_default(),
            since: None,
            at: Some(chrono::Utc::now()),
        }
    }

    /// [`OutboxEntry::new`] for a subject several processes publish on (see `since`).
    pub fn shared(
        id: impl Into<String>,
        subject: Subject,
        payload: &impl Serialize,
        made: chrono::DateTime<chrono::Utc>,
    ) -> OutboxEntry {
        OutboxEntry { since: Some(made - chrono::Duration::seconds(60)), ..OutboxEntry::new(id, subject, payload) }
    }
}

struct Files {
    outbox: std::fs::File,
}

pub struct Publisher {
    files: Mutex<Files>,
    /// Fragments of a torn last outbox line found at start (the events they were are rebuilt from
    /// the spool or the store: [`Publisher::torn`]).
    torn: std::sync::Mutex<Vec<Vec<u8>>>,
    queue: Option<mpsc::UnboundedSender<OutboxEntry>>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    drained: Arc<Notify>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub outbox_path: PathBuf,
}

fn append_line(f: &mut std::fs::File, line: &str) -> std::io::Result<()> {
    crate::util::fsx::append_line(f, line)
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
    /// An outbox in `data_dir`, delivering to `stream` (created with one replica when missing).
    pub async fn start(
        data_dir: &Path,
        nats: Option<&crate::util::nats::Endpoint>,
        stream: &str,
        dup_window: Duration,
    ) -> Result<Publisher> {
        Self::start_replicated(data_dir, nats, stream, dup_window, 1).await
    }

    /// The same, creating a missing stream with `replicas` replicas (3 on a 3-node cluster).
    pub async fn start_replicated(
        data_dir: &Path,
        nats: Option<&crate::util::nats::Endpoint>,
        stream: &str,
        dup_window: Duration,
        replicas: usize,
    ) -> Result<Publisher> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("data dir {}", data_dir.display()))?;
        // a torn last line (a crash or a full disk mid-append) is cut off before anything is
        // appended: never glued onto. A torn ack only means that event is sent again (and found
        // on the stream); a torn event is rebuilt by the caller from the spool or the store.
        let torn: Vec<Vec<u8>> =
            crate::util::fsx::repair_line_log(&data_dir.join("outbox.jsonl"))?.into_iter().collect();
        crate::util::fsx::repair_line_log(&data_dir.join("outbox.acked"))?;
        crate::util::fsx::repair_line_log(&data_dir.join("outbox.dead.jsonl"))?;
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
        let (queue, task) = match nats {
            None => (None, None),
            Some(nats) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let backlog = unacked(data_dir)?;
                if !backlog.is_empty() {
                    tracing::info!(events = backlog.len(), "outbox: resending events not acknowledged before");
                }
                // the resends are looked for on the stream from the oldest one's time (a day back
                // for entries from before entries carried their time)
                let resend = Resend {
                    ids: backlog.iter().map(|e| e.id.clone()).collect(),
                    since: backlog
                        .iter()
                        .map(|e| e.at.or(e.since).unwrap_or_else(|| chrono::Utc::now() - chrono::Duration::days(1)))
                        .min()
                        .map(|t| t - chrono::Duration::seconds(60)),
                };
                for e in backlog {
                    pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tx.send(e).ok();
                }
                let task = tokio::spawn(deliver(
                    nats.clone(),
                    stream.to_string(),
                    (dup_window, replicas),
                    rx,
                    data_dir.join("outbox.acked"),
                    pending.clone(),
                    drained.clone(),
                    resend,
                ));
                (Some(tx), Some(task))
            }
        };
        Ok(Publisher {
            files: Mutex::new(files),
            torn: std::sync::Mutex::new(torn),
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

    /// The fragments of a torn outbox line found at start, taken once: the caller rebuilds the
    /// events they were from the spool or the store.
    pub fn torn(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.torn.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every id in the outbox (acknowledged or not).
    pub fn ids(&self) -> HashSet<String> {
        let dir = self.outbox_path.parent().unwrap_or(Path::new("."));
        std::fs::read_to_string(dir.join("outbox.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<OutboxEntry>(l).ok().map(|e| e.id))
            .collect()
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

/// What the broker made of one outbox entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Stored now, at this stream sequence.
    Published(u64),
    /// Already on the stream (an earlier acknowledgement was lost), at this sequence.
    AlreadyThere(u64),
}

impl Delivered {
    pub fn seq(self) -> u64 {
        match self {
            Delivered::Published(s) | Delivered::AlreadyThere(s) => s,
        }
    }
}

/// Why a publish did not go through.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Another message reached the subject between reading its last message and publishing
    /// (`Nats-Expected-Last-Subject-Sequence` refused): read it again and decide again.
    #[error("the subject moved since its last message was read; checking again")]
    Conflict,
    /// The broker will never take this message (too large, invalid): it is moved aside.
    #[error("refused for good ({kind}): {detail}")]
    Refused {
        /// A short, fixed name (the metric label): `max_payload`, `not_json`.
        kind: &'static str,
        detail: String,
    },
    /// Broker down, stream missing, ack lost: retry later.
    #[error("{0:#}")]
    Retry(anyhow::Error),
}

/// The sequence of the last message on `subject`, and whether it carries `id`.
pub async fn last_on_subject(
    js: &async_nats::jetstream::Context,
    stream: &str,
    subject: &str,
    id: &str,
) -> Result<(u64, bool), DeliveryError> {
    let st =
        js.get_stream(stream).await.map_err(|e| DeliveryError::Retry(anyhow::Error::from(e).context("stream info")))?;
    match st.get_last_raw_message_by_subject(subject).await {
        Ok(m) => {
            let there = m.headers.get("Nats-Msg-Id").map(|v| v.as_str()) == Some(id);
            Ok((m.sequence, there))
        }
        Err(err) if err.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            Ok((0, false))
        }
        Err(err) => Err(DeliveryError::Retry(anyhow::Error::from(err).context("last message on subject"))),
    }
}

/// Publishes `e` on the condition that the last message on its subject is at `last`.
pub async fn publish_expecting(
    js: &async_nats::jetstream::Context,
    e: &OutboxEntry,
    last: u64,
) -> Result<u64, DeliveryError> {
    use async_nats::jetstream::context::PublishErrorKind as K;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", e.id.as_str());
    headers.insert("Nats-Expected-Last-Subject-Sequence", last.to_string().as_str());
    let payload = Bytes::from(
        serde_json::to_vec(&e.payload)
            .map_err(|x| DeliveryError::Refused { kind: "not_json", detail: x.to_string() })?,
    );
    let classify = |err: async_nats::jetstream::context::PublishError| match err.kind() {
        K::WrongLastSequence => DeliveryError::Conflict,
        K::MaxPayloadExceeded => DeliveryError::Refused { kind: "max_payload", detail: format!("{err}") },
        _ if jetstream_code(&err) == Some(async_nats::jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => {
            DeliveryError::Refused { kind: "max_msg_size", detail: format!("the stream's max_msg_size: {err}") }
        }
        _ => DeliveryError::Retry(anyhow::Error::from(err)),
    };
    let ack = tokio::time::timeout(Duration::from_secs(5), async {
        js.publish_with_headers(e.subject.to_string(), headers, payload)
            .await
            .map_err(classify)?
            .await
            .map_err(classify)
    })
    .await
    .map_err(|_| DeliveryError::Retry(anyhow::anyhow!("ack timed out")))??;
    Ok(ack.sequence)
}

/// The JetStream API error code behind a publish error, if the server refused it.
fn jetstream_code(err: &async_nats::jetstream::context::PublishError) -> Option<async_nats::jetstream::ErrorCode> {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        .map(|e| e.error_code())
}

/// The smallest `max_msg_size` a stream may have: NATS's default `max_payload` (1 MiB), which
/// bounds every event vigil makes.
pub const MIN_MSG_SIZE: i32 = 1 << 20;

/// What in an existing stream's settings would lose or refuse vigil's events: limits with
/// discard-old evict acknowledged events, an age limit below a year expires them before their
/// retention, a smaller message size refuses them. Empty: the stream keeps what it acknowledges.
pub fn stream_problems(name: &str, c: &async_nats::jetstream::stream::Config) -> Vec<String> {
    use async_nats::jetstream::stream::DiscardPolicy;
    let mut out = Vec::new();
    if c.discard == DiscardPolicy::Old {
        for (what, v) in [
            ("max_msgs", c.max_messages),
            ("max_bytes", c.max_bytes),
            ("max_msgs_per_subject", c.max_messages_per_subject),
        ] {
            if v > 0 {
                out.push(format!(
                    "stream {name}: {what} = {v} with discard = old evicts acknowledged events once the limit is reached (use discard = new, or no limit)"
                ));
            }
        }
    }
    if !c.max_age.is_zero() && c.max_age < Duration::from_secs(365 * 86_400) {
        out.push(format!(
            "stream {name}: max_age = {} s expires events before their one-year retention (JS 21)",
            c.max_age.as_secs()
        ));
    }
    if c.max_message_size > 0 && c.max_message_size < MIN_MSG_SIZE {
        out.push(format!(
            "stream {name}: max_msg_size = {} bytes refuses events vigil may publish (at least {MIN_MSG_SIZE})",
            c.max_message_size
        ));
    }
    if c.retention != async_nats::jetstream::stream::RetentionPolicy::Limits {
        out.push(format!(
            "stream {name}: retention = {:?} removes events once consumed or without interest (use limits)",
            c.retention
        ));
    }
    out
}

/// Checks the stream before a run or in `vigil check`: `Ok(None)` when NATS does not answer in
/// time (events then wait in the outbox), `Ok(Some(problems))` otherwise (empty: fine, or the
/// stream does not exist yet and vigil creates it).
pub async fn preflight(nats: &crate::util::nats::Endpoint, stream: &str) -> Result<Option<Vec<String>>> {
    let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(3), nats.connect()).await else { return Ok(None) };
    let js = async_nats::jetstream::new(client);
    let r = tokio::time::timeout(Duration::from_secs(3), js.get_stream(stream)).await;
    match r {
        Err(_) => Ok(None),
        Ok(Err(e)) if matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(_)) => {
            Ok(Some(Vec::new()))
        }
        Ok(Err(_)) => Ok(None),
        Ok(Ok(mut st)) => {
            let cfg = st.info().await.map(|i| i.config.clone()).map_err(|e| anyhow::anyhow!("stream {stream}: {e}"))?;
            Ok(Some(stream_problems(stream, &cfg)))
        }
    }
}

/// The ids of the stream's messages stored since `since` (to tell which resends are there).
async fn ids_since(
    js: &async_nats::jetstream::Context,
    stream: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<HashSet<String>> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures::StreamExt;
    let st = js.get_stream(stream).await?;
    let start =
        time::OffsetDateTime::from_unix_timestamp(since.timestamp()).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let consumer = st
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await?;
    let mut msgs = consumer.messages().await?;
    let mut out = HashSet::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), msgs.next()).await {
            Err(_) | Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(anyhow::Error::from(e)),
            Ok(Some(Ok(m))) => {
                if let Some(id) = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
                    out.insert(id.as_str().to_string());
                }
                if m.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending == 0 {
                    return Ok(out);
                }
            }
        }
    }
}

/// The entries resent from an earlier run, and since when to look for them on the stream.
struct Resend {
    ids: HashSet<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
}

/// Publishes `e` unless the stream already has it (see the module docs).
pub async fn deliver_one(
    js: &async_nats::jetstream::Context,
    stream: &str,
    e: &OutboxEntry,
) -> Result<Delivered, DeliveryError> {
    let (last, there) = last_on_subject(js, stream, &e.subject.to_string(), &e.id).await?;
    if there {
        tracing::info!(evidence_id = %e.id, stream_seq = last, "already on the stream (an earlier acknowledgement was lost); not published again");
        return Ok(Delivered::AlreadyThere(last));
    }
    if let Some(since) = e.since
        && let Some(seq) = on_subject_since(js, stream, &e.subject.to_string(), &e.id, since).await?
    {
        tracing::info!(evidence_id = %e.id, stream_seq = seq, "already on the stream (found among the subject's messages); not published again");
        return Ok(Delivered::AlreadyThere(seq));
    }
    publish_expecting(js, e, last).await.map(Delivered::Published)
}

/// The stream sequence of a message with `id` on `subject` stored at or after `since`.
async fn on_subject_since(
    js: &async_nats::jetstream::Context,
    stream: &str,
    subject: &str,
    id: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Option<u64>, DeliveryError> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures::StreamExt;
    let retry = |e: anyhow::Error| DeliveryError::Retry(e);
    let st = js.get_stream(stream).await.map_err(|e| retry(anyhow::Error::from(e).context("stream info")))?;
    let start =
        time::OffsetDateTime::from_unix_timestamp(since.timestamp()).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let consumer = st
        .create_consumer(OrderedConfig {
            filter_subject: subject.into(),
            deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await
        .map_err(|e| retry(anyhow::Error::from(e).context("scan consumer")))?;
    let mut msgs = consumer.messages().await.map_err(|e| retry(anyhow::Error::from(e).context("scan")))?;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), msgs.next()).await {
            Err(_) | Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(retry(anyhow::Error::from(e).context("scan"))),
            Ok(Some(Ok(m))) => {
                let info = m.info().map_err(|e| retry(anyhow::anyhow!("scan: {e}")))?;
                if m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str()) == Some(id) {
                    return Ok(Some(info.stream_sequence));
                }
                if info.pending == 0 {
                    return Ok(None);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    nats: crate::util::nats::Endpoint,
    stream: String,
    (dup_window, replicas): (Duration, usize),
    mut rx: mpsc::UnboundedReceiver<OutboxEntry>,
    acked_path: PathBuf,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    drained: Arc<Notify>,
    resend: Resend,
) {
    let shown = nats.shown();
    let (opts, bare) = match nats.options() {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(url = %shown, error = format!("{e:#}"), "NATS credentials or TLS files unusable; events stay in the outbox");
            return;
        }
    };
    let last_refusal = Arc::new(std::sync::Mutex::new(None::<(String, std::time::Instant)>));
    let opts = opts.retry_on_initial_connect().event_callback(move |e| {
        let shown = shown.clone();
        let last = last_refusal.clone();
        async move {
            // authentication and TLS failures say so plainly (once a minute while they last);
            // events wait in the outbox
            match &e {
                async_nats::Event::ServerError(_) | async_nats::Event::ClientError(_) => {
                    let text = e.to_string();
                    let mut l = last.lock().expect("refusal");
                    if l.as_ref().is_none_or(|(t, at)| *t != text || at.elapsed() > Duration::from_secs(60)) {
                        tracing::error!(url = %shown, error = %text, "NATS refused the connection; events stay in the outbox");
                        *l = Some((text, std::time::Instant::now()));
                    }
                }
                async_nats::Event::Disconnected => tracing::warn!(url = %shown, "NATS disconnected"),
                async_nats::Event::Connected => tracing::info!(url = %shown, "NATS connected"),
                _ => tracing::debug!(url = %shown, event = %e, "NATS"),
            }
        }
    });
    // the first attempt, beside the retrying connection: its error names the cause (an
    // untrusted certificate, a refused password), which the retry loop reports only as "IO error"
    {
        let (nats, shown) = (nats.clone(), nats.shown());
        tokio::spawn(async move {
            if let Err(e) = nats.connect().await {
                tracing::error!(url = %shown, error = format!("{e:#}"), "NATS connection failed; events stay in the outbox, retrying");
            }
        });
    }
    let client = match opts.connect(bare.as_slice()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %nats.shown(), error = %crate::util::nats::describe(&e), "NATS: cannot connect; events stay in the outbox");
            return;
        }
    };
    let js = async_nats::jetstream::new(client);
    let mut stream_ready = false;
    // resends already on the stream (found once the stream is there)
    let mut already: Option<HashSet<String>> = None;
    let mut refused_said: Option<std::time::Instant> = None;
    let mut acked = match crate::util::fsx::open_append(&acked_path, 0o600) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %acked_path.display(), error = %e, "outbox: cannot open ack log");
            return;
        }
    };
    let dead_path = acked_path.with_file_name("outbox.dead.jsonl");
    while let Some(entry) = rx.recv().await {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10), Duration::from_millis(100));
        let mut conflicts = 0u32;
        loop {
            if !stream_ready {
                let cfg = async_nats::jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![crate::util::subject::ALL.into()],
                    duplicate_window: dup_window,
                    num_replicas: replicas,
                    ..Default::default()
                };
                match js.get_or_create_stream(cfg).await {
                    Ok(mut st) => {
                        // a stream whose settings would lose or refuse events gets none of them:
                        // they wait in the outbox until ops fix it
                        let problems = match st.info().await {
                            Ok(i) => stream_problems(&stream, &i.config),
                            Err(e) => vec![format!("stream {stream}: cannot read its settings: {e}")],
                        };
                        if problems.is_empty() {
                            stream_ready = true;
                        } else if refused_said.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                            refused_said = Some(std::time::Instant::now());
                            tracing::error!(stream = %stream, problems = %problems.join("; "), "JetStream: the stream's settings would lose or refuse events; events stay in the outbox until it is fixed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(stream = %stream, error = %e, "JetStream: stream not ready")
                    }
                }
            }
            if stream_ready && already.is_none() {
                already = Some(match resend.since {
                    Some(since) if !resend.ids.is_empty() => match ids_since(&js, &stream, since).await {
                        Ok(found) => found,
                        Err(e) => {
                            tracing::warn!(
                                error = format!("{e:#}"),
                                "outbox: cannot list the stream's recent messages; checking each resend by its subject's last message"
                            );
                            HashSet::new()
                        }
                    },
                    _ => HashSet::new(),
                });
            }
            if stream_ready && resend.ids.contains(&entry.id) && already.as_ref().is_some_and(|a| a.contains(&entry.id))
            {
                tracing::info!(evidence_id = %entry.id, "already on the stream (an earlier acknowledgement was lost); not published again");
                if let Err(e) = append_line(&mut acked, &entry.id) {
                    tracing::error!(error = %e, "outbox: cannot record ack (event will be resent and deduplicated)");
                }
                break;
            }
            if stream_ready {
                match deliver_one(&js, &stream, &entry).await {
                    Ok(d) => {
                        crate::telemetry::Event::EventPublished {
                            id: &entry.id,
                            subject: &entry.subject.to_string(),
                            stream_seq: d.seq(),
                        }
                        .emit();
                        if entry.subject.is_evidence() {
                            crate::telemetry::probe::record_acked(&entry.id);
                        }
                        if let Err(e) = append_line(&mut acked, &entry.id) {
                            tracing::error!(error = %e, "outbox: cannot record ack (event will be resent and deduplicated)");
                        }
                        break;
                    }
                    Err(DeliveryError::Conflict) if conflicts < 5 => {
                        conflicts += 1;
                        tracing::info!(evidence_id = %entry.id, "another message reached the subject meanwhile; checking again");
                        continue;
                    }
                    Err(DeliveryError::Refused { kind, detail }) => {
                        let line = serde_json::json!({"entry": entry, "reason": kind, "detail": detail, "time_utc": crate::util::rfc3339(chrono::Utc::now())});
                        let written = crate::util::fsx::open_append(&dead_path, 0o600)
                            .and_then(|mut f| append_line(&mut f, &line.to_string()));
                        if let Err(e) = written {
                            tracing::error!(path = %dead_path.display(), error = %e, "outbox: cannot move a refused message aside; it stays in the outbox");
                            tokio::time::sleep(backoff.next_wait()).await;
                            continue;
                        }
                        let _ = append_line(&mut acked, &entry.id);
                        crate::telemetry::Event::EventDeadLettered {
                            id: &entry.id,
                            subject: &entry.subject.to_string(),
                            reason: kind,
                            detail: &detail,
                        }
                        .emit();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> OutboxEntry {
        OutboxEntry::new(id, Subject::evidence("s", "c"), &serde_json::json!({"id": id}))
    }

    #[test]
    fn the_outbox_resends_what_was_not_acknowledged_in_order_and_skips_a_torn_line() {
        let d = tempfile::tempdir().unwrap();
        let lines: Vec<String> = ["a", "b", "c"].iter().map(|i| serde_json::to_string(&entry(i)).unwrap()).collect();
        // a crash mid-write leaves half a line at the end
        let torn = &lines[2][..lines[2].len() / 2];
        std::fs::write(d.path().join("outbox.jsonl"), format!("{}\n{}\n{torn}", lines[0], lines[1])).unwrap();
        std::fs::write(d.path().join("outbox.acked"), "a\n").unwrap();
        let left = unacked(d.path()).unwrap();
        assert_eq!(left.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(left[0].subject.to_string(), "vigil.evidence.s.c");
    }

    #[tokio::test]
    async fn without_nats_events_are_recorded_durably_and_nothing_is_pending() {
        let d = tempfile::tempdir().unwrap();
        let p = Publisher::start(d.path(), None, "VIGIL", Duration::from_secs(120)).await.unwrap();
        p.submit(entry("x")).await.unwrap();
        p.submit(entry("y")).await.unwrap();
        assert_eq!(p.pending(), 0);
        assert_eq!(p.flush(Duration::from_millis(10)).await, 0);
        let ids: Vec<String> = unacked(d.path()).unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, vec!["x", "y"], "recorded in order, none acknowledged");
    }

    #[test]
    fn delivered_reports_its_sequence() {
        assert_eq!(Delivered::Published(3).seq(), 3);
        assert_eq!(Delivered::AlreadyThere(7).seq(), 7);
    }
}
