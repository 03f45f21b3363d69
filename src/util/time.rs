//! Times as vigil writes them: RFC 3339 with milliseconds, UTC (`Z`) or at the site's offset.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

/// `2026-11-23T08:00:00.000Z`
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The same instant at `offset_s` seconds east of UTC: `2026-11-23T16:00:00.000+08:00`.
pub fn local(t: DateTime<Utc>, offset_s: i32) -> String {
    t.with_timezone(&fixed_offset(offset_s)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// As pages and messages show a time to people: site-local, to the second, with the offset:
/// `2026-11-23 16:00:00 (+08:00)` (one format everywhere; the `from=` filters accept it).
pub fn shown(t: DateTime<Utc>, offset_s: i32) -> String {
    let l = t.with_timezone(&fixed_offset(offset_s));
    format!("{} ({})", l.format("%Y-%m-%d %H:%M:%S"), l.format("%:z"))
}

/// Reads a time as people type or copy it: RFC 3339; what [`shown`] writes
/// (`2026-11-23 16:00:00 (+08:00)`, its offset honoured); or a site-local date and time with or
/// without seconds, `T` or a space between (`2026-11-23T16:00`, `2026-11-23 16:00:05`); or a date
/// alone (its first second). `None` when it is none of these.
pub fn parse_shown(s: &str, offset_s: i32) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = parse_rfc3339(s) {
        return Some(t);
    }
    // "… (+08:00)": the offset written beside the time
    let (text, offset_s) = match s.strip_suffix(')').and_then(|r| r.rsplit_once('(')) {
        Some((t, off)) => (t.trim(), parse_utc_offset(off.trim())?),
        None => (s, offset_s),
    };
    let text = text.replacen(' ', "T", 1);
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(&text, f).ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))?;
    naive.and_local_timezone(fixed_offset(offset_s)).single().map(|t| t.with_timezone(&Utc))
}

/// A fixed offset (UTC when out of range; offsets are validated at config load).
pub fn fixed_offset(offset_s: i32) -> FixedOffset {
    FixedOffset::east_opt(offset_s).unwrap_or(FixedOffset::east_opt(0).expect("zero offset"))
}

/// Parses a UTC offset like "+08:00" into seconds east of UTC.
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60 && h.to_string().len() <= 2).then_some(sign * (h * 3600 + m * 60))
}

/// Parses an RFC 3339 time into UTC.
pub fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// `t + days`, or `None` where that leaves chrono's range (no arithmetic on times may panic).
pub fn add_days(t: DateTime<Utc>, days: u32) -> Option<DateTime<Utc>> {
    t.checked_add_signed(chrono::Duration::try_days(days as i64)?)
}

/// `epoch + d` for a stream time `d`, saturating at chrono's range.
pub fn add_std(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| t.checked_add_signed(d)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_as_the_pages_show_it_reads_back() {
        let t = parse_rfc3339("2026-11-23T08:00:05Z").unwrap();
        let shown_text = shown(t, 8 * 3600);
        assert_eq!(shown_text, "2026-11-23 16:00:05 (+08:00)");
        assert_eq!(parse_shown(&shown_text, 0), Some(t), "its own offset, whatever the site's");
        assert_eq!(parse_shown("2026-11-23 16:00:05", 8 * 3600), Some(t));
        assert_eq!(parse_shown("2026-11-23T16:00:05", 8 * 3600), Some(t));
        assert_eq!(parse_shown("2026-11-23T16:00", 8 * 3600), parse_rfc3339("2026-11-23T08:00:00Z").ok());
        assert_eq!(parse_shown("2026-11-23", 8 * 3600), parse_rfc3339("2026-11-22T16:00:00Z").ok());
        assert_eq!(parse_shown("2026-11-23T08:00:05Z", 8 * 3600), Some(t));
        for bad in ["", "yesterday", "2026-13-01", "2026-11-23 16:00:05 (+99:00)"] {
            assert_eq!(parse_shown(bad, 0), None, "{bad}");
        }
    }

    #[test]
    fn offsets_and_formats() {
        assert_eq!(parse_utc_offset("+08:00"), Some(8 * 3600));
        assert_eq!(parse_utc_offset("-05:30"), Some(-(5 * 3600 + 1800)));
        assert_eq!(parse_utc_offset("08:00"), None);
        assert_eq!(parse_utc_offset("+8"), None);
        let t = parse_rfc3339("2026-11-23T08:00:00Z").unwrap();
        assert_eq!(rfc3339(t), "2026-11-23T08:00:00.000Z");
        assert_eq!(local(t, 8 * 3600), "2026-11-23T16:00:00.000+08:00");
        assert!(add_days(t, 365).is_some());
        assert!(add_days(t, u32::MAX).is_none(), "overflow is None, not a panic");
    }
}
