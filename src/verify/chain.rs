//! Walking one camera's chain: positions, links, index entries, checkpoint, order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{ChainSummary, Item, Problem, read_signed};
use crate::evidence::chain::{Checkpoint, GENESIS, IndexEntry, checkpoint_prefix};
use crate::signing::PublicKey;
use crate::store::Store;

pub(super) async fn walk_chain(
    store: &Store,
    key: &PublicKey,
    site: &str,
    camera: &str,
    items: &[&Item],
    chain_keys: &[String],
    now: DateTime<Utc>,
) -> (ChainSummary, Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let prob = |seq: Option<u64>, id: Option<&str>, what: String| Problem {
        camera: camera.into(),
        evidence_id: id.map(str::to_string),
        seq,
        what,
    };
    // index entries
    let idx_prefix = format!("chain/{site}/{camera}/seq/");
    let mut index: BTreeMap<u64, IndexEntry> = BTreeMap::new();
    for k in chain_keys.iter().filter(|k| k.starts_with(&idx_prefix) && k.ends_with(".json")) {
        match read_signed::<IndexEntry>(store, key, k).await {
            Ok(e) => {
                index.insert(e.seq, e);
            }
            Err(e) => problems.push(prob(None, None, format!("chain index entry {k}: {e:#}"))),
        }
    }
    // manifests by seq
    let mut by_seq: BTreeMap<u64, Vec<&Item>> = BTreeMap::new();
    for it in items {
        if let Some(m) = &it.manifest {
            by_seq.entry(m.chain.seq).or_default().push(it);
        }
    }
    for (seq, its) in &by_seq {
        if its.len() > 1 {
            let ids: Vec<&str> = its.iter().map(|i| i.id.as_str()).collect();
            problems.push(prob(
                Some(*seq),
                None,
                format!("fork: {} manifests claim this position: {}", its.len(), ids.join(", ")),
            ));
        }
    }
    let hash_of = |seq: u64| -> Option<String> {
        match by_seq.get(&seq) {
            Some(v) if v.len() == 1 => v[0].manifest_hash.clone(),
            _ => index.get(&seq).map(|e| e.manifest_sha256.clone()),
        }
    };
    // checkpoint
    let cp_prefix = checkpoint_prefix(site, camera);
    let mut cp_keys: Vec<&String> =
        chain_keys.iter().filter(|k| k.starts_with(&cp_prefix) && k.ends_with(".json")).collect();
    // the newest checkpoint is the one of the highest position (`<ms>-<seq>.json`): the sequence
    // decides, not the wall clock (a clock stepped back names a newer checkpoint with an earlier
    // time)
    let seq_of = |k: &str| {
        k.rsplit('/')
            .next()
            .and_then(|f| f.trim_end_matches(".json").rsplit('-').next())
            .and_then(|q| q.parse::<u64>().ok())
    };
    cp_keys.sort_by_key(|k| (seq_of(k), (*k).clone()));
    let mut checkpoint: Option<Checkpoint> = None;
    for k in cp_keys.iter().rev() {
        match read_signed::<Checkpoint>(store, key, k).await {
            Ok(c) => {
                checkpoint = Some(c);
                break;
            }
            Err(e) => problems.push(prob(None, None, format!("checkpoint {k}: {e:#}"))),
        }
    }
    // key hand-overs: the last checkpoint of a key, countersigned by the next one
    for k in cp_keys.iter().filter(|k| chain_keys.contains(&format!("{k}.next.sig"))) {
        let handover = async {
            let c: Checkpoint = read_signed(store, key, k).await?;
            let next = c.next_key_id.clone().ok_or_else(|| anyhow::anyhow!("has a .next.sig but names no next key"))?;
            let bytes = store.get(k).await?;
            let sig = crate::signing::SignatureFile::parse(&store.get(&format!("{k}.next.sig")).await?)?;
            if sig.key_id != next {
                anyhow::bail!("countersigned by key {}, but it names {next} as the next key", sig.key_id);
            }
            key.verify(&bytes, &sig)
        };
        if let Err(e) = handover.await {
            problems.push(prob(None, None, format!("key hand-over checkpoint {k}: {e:#}")));
        }
    }
    let max_item = by_seq.keys().next_back().copied().unwrap_or(0);
    let max_index = index.keys().next_back().copied().unwrap_or(0);
    let last = max_item.max(max_index).max(checkpoint.as_ref().map_or(0, |c| c.last_seq));
    let mut expired = Vec::new();
    let mut expired_ids = Vec::new();
    for seq in 1..=last {
        let here = by_seq.get(&seq);
        let idx = index.get(&seq);
        match (here, idx) {
            (None, Some(e)) => {
                let until = DateTime::parse_from_rfc3339(&e.retain_until_utc).map(|t| t.with_timezone(&Utc));
                if until.is_ok_and(|u| u <= now) {
                    expired.push(seq);
                    expired_ids.push(e.evidence_id.clone());
                } else if seq > max_item {
                    problems.push(prob(Some(seq), Some(&e.evidence_id), format!(
                        "missing from the end of the chain: the chain index and {} say it exists, its manifest is gone (item deleted)",
                        checkpoint.as_ref().map_or("nothing else".to_string(), |c| format!("the checkpoint of {} (last seq {})", c.time_utc, c.last_seq))
                    )));
                } else {
                    problems.push(prob(Some(seq), Some(&e.evidence_id), "missing from the middle of the chain: the chain index names it, its manifest is gone (item deleted)".into()));
                }
            }
            (None, None) => {
                let what = if seq > max_item {
                    format!(
                        "missing from the end of the chain: the checkpoint of {} says the chain reached seq {}, the store ends at seq {max_item}",
                        checkpoint.as_ref().map_or("?", |c| c.time_utc.as_str()),
                        checkpoint.as_ref().map_or(0, |c| c.last_seq)
                    )
                } else {
                    "gap in the chain: no manifest and no index entry for this position (item deleted)".into()
                };
                problems.push(prob(Some(seq), None, what));
            }
            (Some(its), idx) => {
                for it in its {
                    let m = it.manifest.as_ref().expect("manifest");
                    if let Some(e) = idx {
                        if e.evidence_id != it.id {
                            problems.push(prob(Some(seq), Some(&it.id), format!("the chain index gives this position to evidence {}, not to this item (reordered or swapped)", e.evidence_id)));
                        } else if Some(&e.manifest_sha256) != it.manifest_hash.as_ref() {
                            problems.push(prob(
                                Some(seq),
                                Some(&it.id),
                                "the manifest differs from the one recorded in the chain index (manifest replaced)"
                                    .into(),
                            ));
                        }
                    }
                    let expect = if seq == 1 { Some(GENESIS.to_string()) } else { hash_of(seq - 1) };
                    match expect {
                        Some(h) if h != m.chain.prev_hash => problems.push(prob(
                            Some(seq),
                            Some(&it.id),
                            format!(
                                "chain broken: prev_hash {}… does not match the manifest at seq {} ({}…)",
                                &m.chain.prev_hash[..16.min(m.chain.prev_hash.len())],
                                seq - 1,
                                &h[..16]
                            ),
                        )),
                        _ => {}
                    }
                }
            }
        }
    }
    // ordering: the sequence orders the chain; violation times going back along it by more
    // than a clip length are reported (a clock step back, or a re-signed time — which the index
    // entries and links above catch), never failed on
    let mut prev: Option<(u64, DateTime<Utc>)> = None;
    for (seq, its) in &by_seq {
        let Some(m) = its[0].manifest.as_ref() else { continue };
        let Some(t) = DateTime::parse_from_rfc3339(&m.violation_time_utc).ok() else { continue };
        let t = t.with_timezone(&Utc);
        if let Some((ps, pt)) = prev
            && t + chrono::Duration::seconds(120) < pt
        {
            let why = match m.chain.clock_step_back_s {
                Some(s) => {
                    format!("the worker's clock stood {s:.0} s behind its previous commit (flagged in the item)")
                }
                None => "a clock step back, or a time re-signed".into(),
            };
            warnings.push(format!(
                "camera {camera} seq {seq} evidence {}: violation time {t} is before that of seq {ps} ({pt}): {why}",
                its[0].id
            ));
        }
        prev = Some((*seq, t));
    }
    match &checkpoint {
        None if last > 0 => warnings.push(format!(
            "camera {camera}: no signed checkpoint in the store; removal of the newest items can only be detected against a published checkpoint"
        )),
        Some(c) => {
            if let Some(h) = hash_of(c.last_seq)
                && h != c.last_hash
                && !expired.contains(&c.last_seq)
            {
                problems.push(prob(Some(c.last_seq), None, format!("differs from the checkpoint of {}: chain rewritten", c.time_utc)));
            }
        }
        None => {}
    }
    let summary = ChainSummary {
        site: site.into(),
        camera: camera.into(),
        items: by_seq.values().map(Vec::len).sum(),
        last_seq: last,
        checkpoint_seq: checkpoint.as_ref().map(|c| c.last_seq),
        checkpoint_time_utc: checkpoint.map(|c| c.time_utc),
        expired,
        expired_ids,
    };
    (summary, problems, warnings)
}
