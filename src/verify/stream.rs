//! The store against the stream: what JetStream holds of each camera's chain (its newest signed
//! checkpoint and its newest evidence event) is a copy the store's owner cannot rewrite, so a
//! store whose chain ends before it lost its newest items — even when their index entries and
//! checkpoints were removed with them.

use super::{Problem, Report};
use crate::evidence::chain::CheckpointEvent;
use crate::signing::PublicKey;
use crate::util::Subject;
use crate::util::nats::Endpoint;

/// The newest message on `subject`, if any.
async fn last(st: &async_nats::jetstream::stream::Stream, subject: &str) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
    match st.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some((m.sequence, m.payload.to_vec()))),
        Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(anyhow::Error::from(e).context(subject.to_string())),
    }
}

/// Compares each chain of `report` with the stream; a failure to reach it is a warning.
pub(super) async fn compare_chains(report: &mut Report, key: &PublicKey, (nats, stream): &(Endpoint, String)) {
    let connected = async {
        let c = tokio::time::timeout(std::time::Duration::from_secs(5), nats.connect())
            .await
            .map_err(|_| anyhow::anyhow!("NATS {}: no answer in 5 s", nats.shown()))??;
        let js = async_nats::jetstream::new(c);
        anyhow::Ok(js.get_stream(stream).await?)
    };
    let st = match connected.await {
        Ok(s) => s,
        Err(e) => {
            report.warnings.push(format!("not compared with stream {stream}: {e:#}"));
            return;
        }
    };
    let mut problems = Vec::new();
    for c in &report.chains {
        let mut stream_seq: Option<(u64, String)> = None;
        // the newest signed checkpoint
        match last(&st, &Subject::chain(&c.site, &c.camera).to_string()).await {
            Ok(Some((mseq, payload))) => match serde_json::from_slice::<CheckpointEvent>(&payload) {
                Ok(ev) => {
                    let bytes = crate::util::jcs::canonical(&serde_json::to_value(&ev.checkpoint).unwrap_or_default());
                    if key.verify(&bytes, &ev.signature).is_ok() {
                        stream_seq = Some((
                            ev.checkpoint.last_seq,
                            format!("its checkpoint of {} (stream message {mseq})", ev.checkpoint.time_utc),
                        ));
                    } else {
                        report.warnings.push(format!(
                            "camera {}: the stream's newest checkpoint (message {mseq}) does not verify with the trusted key; not used",
                            c.camera
                        ));
                    }
                }
                Err(e) => report.warnings.push(format!("camera {}: stream message {mseq}: {e}", c.camera)),
            },
            Ok(None) => {}
            Err(e) => report.warnings.push(format!("camera {}: {e:#}", c.camera)),
        }
        // the newest evidence event
        if let Ok(Some((mseq, payload))) = last(&st, &Subject::evidence(&c.site, &c.camera).to_string()).await
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload)
            && let Some(seq) = v["chain"]["seq"].as_u64()
            && stream_seq.as_ref().is_none_or(|(s, _)| seq > *s)
        {
            let id = v["evidence_id"].as_str().unwrap_or("?").to_string();
            stream_seq = Some((seq, format!("its evidence event for {id} (stream message {mseq})")));
        }
        let Some((seq, what)) = stream_seq else { continue };
        report.checked_against.push(format!("stream {stream}, camera {}: seq {seq} from {what}", c.camera));
        if seq > c.last_seq {
            problems.push(Problem {
                camera: c.camera.clone(),
                evidence_id: None,
                seq: Some(seq),
                what: format!(
                    "missing from the end of the chain: stream {stream} holds {what}, which says the chain reached seq {seq}; the store ends at seq {} (newest items removed)",
                    c.last_seq
                ),
            });
        }
    }
    report.problems.extend(problems);
}
