//! An evidence item as a reviewer sees it — its manifest, its verification *now* (hashes,
//! signature, chain position), its review records and status — and the queue of items.

use anyhow::Result;
use chrono::Utc;
use serde::Serialize;

use super::Service;
use super::accounts::User;
use crate::evidence::Manifest;
use crate::evidence::review::{ReviewRecord, Status};
use crate::verify::{self, Item};

/// An evidence id is a ULID: 26 characters of Crockford base32 (anything else is not in the
/// store, and never reaches a store path).
pub fn valid_id(id: &str) -> bool {
    id.len() == 26 && id.bytes().all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !b"ILOU".contains(&c)))
}

/// The result of verifying an item now.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Verification {
    pub ok: bool,
    pub problems: Vec<String>,
    /// Problems elsewhere in the camera's chain that do not touch this item.
    pub warnings: Vec<String>,
    pub chain_seq: u64,
    pub key_id: String,
    pub checked_utc: String,
}

/// One item, loaded and verified.
pub struct ItemView {
    pub item: Item,
    pub manifest: Manifest,
    pub manifest_sha256: String,
    pub verification: Verification,
    pub records: Vec<ReviewRecord>,
    pub status: Status,
}

impl ItemView {
    pub fn advisory(&self) -> bool {
        self.manifest.status.kind == crate::config::StatusKind::Advisory
    }

    /// A minor violation with no earlier one of the same rule on this camera in 30 days.
    pub fn first_minor(&self) -> bool {
        self.manifest.rule.severity == "minor" && self.manifest.repeat_count_30d == 0
    }
}

/// Loads and verifies an item; `None` when it is not in the store.
pub async fn load(svc: &Service, id: &str) -> Result<Option<ItemView>> {
    if !valid_id(id) {
        return Ok(None);
    }
    let Some(check) = verify::find_and_verify_item(&svc.store, &svc.worker_key, id, Utc::now()).await? else {
        return Ok(None);
    };
    let Some(manifest) = check.item.manifest.clone() else {
        // an item without a readable manifest cannot be reviewed: report it as failing
        return Ok(None);
    };
    let (records, record_problems) =
        verify::reviews::read_records(&svc.store, &svc.signer.public_key(), &check.item).await;
    let mut problems = check.problems;
    problems.extend(record_problems);
    let status = crate::evidence::review::status(&records);
    Ok(Some(ItemView {
        manifest_sha256: check.item.manifest_hash.clone().unwrap_or_default(),
        verification: Verification {
            ok: problems.is_empty(),
            problems,
            warnings: check.warnings,
            chain_seq: manifest.chain.seq,
            key_id: svc.worker_key.key_id.clone(),
            checked_utc: crate::util::rfc3339(Utc::now()),
        },
        item: check.item,
        manifest,
        records,
        status,
    }))
}

/// Queue filters (every one optional).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub site: Option<String>,
    pub camera: Option<String>,
    pub rule: Option<String>,
    /// "enforcement" or "advisory".
    pub kind: Option<String>,
    pub admissible: Option<String>,
    /// A review status: pending, one_approval, approved, rejected, reminder.
    pub status: Option<String>,
    /// RFC 3339 (or the page's `YYYY-MM-DDTHH:MM`, site-local).
    pub from: Option<String>,
    pub to: Option<String>,
    /// "1": items still waiting for this officer's decision.
    pub mine: Option<String>,
    /// The rule's severity ("minor", "major", ...).
    pub severity: Option<String>,
    /// The risk tier: immediate, deadline or routine.
    pub tier: Option<String>,
    pub page: Option<usize>,
    pub lang: Option<String>,
}

/// One line of the queue.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub site: String,
    pub camera: String,
    pub camera_location: String,
    pub violation_time_utc: String,
    pub rule: String,
    pub kind: String,
    pub admissible: bool,
    pub severity: String,
    /// The rule's risk tier (none for items made before tiers existed).
    pub tier: Option<crate::rules::RiskTier>,
    pub review: RowReview,
    pub signature_ok: bool,
    /// The clip covers its pre- and post-roll without gaps (else the item page says how not).
    pub complete: bool,
    /// Where the detection that fired the rule was (clip pixels): items of one camera and rule
    /// fired at the same place are repeats of one object ([`repeats`]).
    #[serde(skip)]
    pub trigger_box: Option<crate::frame::BBox>,
}

/// Boxes overlapping at least this much (IoU) are the same place.
pub const REPEAT_IOU: f32 = 0.3;
/// Items further apart than this are not repeats of one object.
pub const REPEAT_WITHIN: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The repeats among `rows` (newest first): for each row, its group (the index of the group's
/// newest row) when another row of the same camera and rule fired at the same place (trigger
/// boxes overlapping by [`REPEAT_IOU`]) within [`REPEAT_WITHIN`] of the group's previous row.
/// Track ids are not used: they start again with each worker run.
pub fn repeats(rows: &[Row]) -> Vec<Option<usize>> {
    let time = |r: &Row| crate::util::time::parse_rfc3339(&r.violation_time_utc).ok();
    // per group: (head index, newest-so-far last row index)
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut of = vec![None; rows.len()];
    for (i, r) in rows.iter().enumerate() {
        let Some(b) = &r.trigger_box else { continue };
        let joined = groups.iter_mut().find(|(_, last)| {
            let l = &rows[*last];
            l.camera == r.camera
                && l.rule == r.rule
                && l.trigger_box.as_ref().is_some_and(|lb| lb.iou(b) >= REPEAT_IOU)
                && match (time(l), time(r)) {
                    (Some(a), Some(b)) => (a - b).abs().to_std().is_ok_and(|d| d <= REPEAT_WITHIN),
                    _ => false,
                }
        });
        match joined {
            Some(g) => {
                g.1 = i;
                of[i] = Some(g.0);
            }
            None => groups.push((i, i)),
        }
    }
    // a group of one is no group
    for g in &groups {
        if of.contains(&Some(g.0)) {
            of[g.0] = Some(g.0);
        }
    }
    of
}

#[derive(Debug, Clone, Serialize)]
pub struct RowReview {
    pub status: Status,
    pub decided_by: Vec<String>,
}

/// Why a filter value is refused (the API answers 400 with it).
pub fn check_filter(f: &Filter, offset_s: i32) -> Result<(), String> {
    if let Some(k) = f.kind.as_deref().filter(|k| !k.is_empty())
        && !["enforcement", "advisory"].contains(&k)
    {
        return Err(format!("kind {k:?}: enforcement or advisory"));
    }
    if let Some(s) = f.status.as_deref().filter(|s| !s.is_empty())
        && Status::parse(s).is_none()
    {
        return Err(format!("status {s:?}: pending, one_approval, approved, rejected or reminder"));
    }
    if let Some(t) = f.tier.as_deref().filter(|t| !t.is_empty())
        && !crate::rules::RiskTier::ALL.iter().any(|x| x.name() == t)
    {
        return Err(format!("tier {t:?}: immediate, deadline or routine"));
    }
    if let Some(a) = f.admissible.as_deref().filter(|a| !a.is_empty())
        && !["true", "false"].contains(&a)
    {
        return Err(format!("admissible {a:?}: true or false"));
    }
    for t in [&f.from, &f.to].into_iter().flatten() {
        if !t.is_empty() && crate::util::time::parse_shown(t, offset_s).is_none() {
            return Err(format!(
                "{t:?} is not a time (as the pages show it, 2026-11-23 16:00:05 (+08:00); RFC 3339; or YYYY-MM-DD[ HH:MM[:SS]] in site time)"
            ));
        }
    }
    Ok(())
}

/// The queue, newest first, filtered; returns one page and the number of matching items.
pub async fn queue(svc: &Service, user: &User, f: &Filter) -> Result<(Vec<Row>, usize)> {
    let offset = svc.pipeline.utc_offset_s;
    let (from, to) = (
        f.from.as_deref().and_then(|t| crate::util::time::parse_shown(t, offset)),
        f.to.as_deref().and_then(|t| crate::util::time::parse_shown(t, offset)),
    );
    let want = |o: &Option<String>| o.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
    let review_key = svc.signer.public_key();
    let mut rows = Vec::new();
    let items = match verify::list_items(&svc.store).await {
        Ok(i) => i,
        Err(e) => return Err(e),
    };
    for mut it in items {
        if want(&f.site).is_some_and(|s| s != it.site) || want(&f.camera).is_some_and(|c| c != it.camera) {
            continue;
        }
        verify::load_manifest(&svc.store, &svc.worker_key, &mut it).await;
        let Some(m) = it.manifest.clone() else { continue };
        let t = crate::util::time::parse_rfc3339(&m.violation_time_utc).ok();
        let keep = want(&f.rule).is_none_or(|r| r == m.rule.id)
            && want(&f.severity).is_none_or(|s| s == m.rule.severity)
            && want(&f.tier).is_none_or(|x| m.rule.tier.is_some_and(|t| t.name() == x))
            && want(&f.kind).is_none_or(|k| k == m.status.kind.name())
            && want(&f.admissible).is_none_or(|a| a == m.admissibility.admissible.to_string())
            && from.is_none_or(|x| t.is_some_and(|t| t >= x))
            && to.is_none_or(|x| t.is_some_and(|t| t <= x));
        if !keep {
            continue;
        }
        let (records, problems) = verify::reviews::read_records(&svc.store, &review_key, &it).await;
        let status = crate::evidence::review::status(&records);
        if want(&f.status).is_some_and(|s| s != status.name()) {
            continue;
        }
        let decided_by: Vec<String> =
            crate::evidence::review::effective(&records).iter().map(|r| r.officer.officer_id.clone()).collect();
        let me = crate::util::text::normalize_id(&user.officer_id);
        let mine = crate::evidence::review::effective(&records).iter().any(|r| r.officer.key() == me);
        if f.mine.as_deref() == Some("1") && (status.is_final() || mine) {
            continue;
        }
        rows.push(Row {
            id: it.id.clone(),
            site: it.site.clone(),
            camera: it.camera.clone(),
            camera_location: m.camera_location.clone(),
            violation_time_utc: m.violation_time_utc.clone(),
            rule: m.rule.id.clone(),
            kind: m.status.kind.name().into(),
            admissible: m.admissibility.admissible,
            severity: m.rule.severity.clone(),
            tier: m.rule.tier,
            review: RowReview { status, decided_by },
            signature_ok: it.problems.is_empty() && problems.is_empty(),
            complete: m.shortfalls().is_empty(),
            trigger_box: m.detections.iter().find(|d| d.trigger).map(|d| d.bbox),
        });
    }
    rows.sort_by(|a, b| b.violation_time_utc.cmp(&a.violation_time_utc).then(b.id.cmp(&a.id)));
    let total = rows.len();
    let size = svc.pipeline.settings.review.page_size;
    let page = f.page.unwrap_or(1).max(1);
    let rows = rows.into_iter().skip((page - 1) * size).take(size).collect();
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(camera: &str, at: &str, b: Option<(f32, f32)>) -> Row {
        Row {
            id: format!("{camera}-{at}"),
            site: "s".into(),
            camera: camera.into(),
            camera_location: String::new(),
            violation_time_utc: format!("2026-12-07T{at}Z"),
            rule: "utensils_left".into(),
            kind: "enforcement".into(),
            admissible: true,
            severity: "minor".into(),
            tier: None,
            review: RowReview { status: Status::Pending, decided_by: Vec::new() },
            signature_ok: true,
            complete: true,
            trigger_box: b.map(|(x, y)| crate::frame::BBox { x1: x, y1: y, x2: x + 40.0, y2: y + 40.0 }),
        }
    }

    #[test]
    fn repeats_are_one_camera_and_rule_at_one_place_within_half_an_hour() {
        let rows = vec![
            row("cam1", "10:40:00", Some((100.0, 100.0))), // 0: newest of the cup's group
            row("cam1", "10:30:00", Some((104.0, 98.0))),  // 1: the same cup, moved a little
            row("cam2", "10:29:00", Some((100.0, 100.0))), // 2: another camera
            row("cam1", "10:20:00", Some((400.0, 100.0))), // 3: another place
            row("cam1", "10:15:00", Some((102.0, 100.0))), // 4: the cup again, 15 min before 1
            row("cam1", "09:00:00", Some((100.0, 100.0))), // 5: over 30 min before 4: not a repeat
            row("cam1", "08:59:00", None),                 // 6: no trigger box
        ];
        assert_eq!(repeats(&rows), vec![Some(0), Some(0), None, None, Some(0), None, None]);
    }
}
