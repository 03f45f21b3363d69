//! Where in a pipeline file a TOML error is: its dotted key path with array indices.

use std::collections::BTreeMap;

/// Turns a toml parse error's span into the dotted key path at that place, so that an unknown key
/// reads `cameras[0].rules[0].treshold` rather than a line number alone.
pub fn toml_error_key(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return String::new();
    };
    let msg = e.message();
    // The key the error is about: for an unknown field, the line that spells it (serde's span may
    // cover the whole table); otherwise the line the span starts on.
    let start = span.start.min(text.len());
    let line_start = |pos: usize| text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let unknown = msg.strip_prefix("unknown field `").and_then(|r| r.split('`').next());
    let mut pos = line_start(start);
    if let Some(name) = unknown {
        let mut off = pos;
        for line in text[pos..].split_inclusive('\n') {
            let t = line.trim_start();
            if t.strip_prefix(name).is_some_and(|r| r.trim_start().starts_with('=')) {
                pos = off;
                break;
            }
            off += line.len();
        }
    }
    let line = text[pos..].lines().next().unwrap_or("");
    let field = line.split_once('=').map(|(k, _)| k.trim().trim_matches('"')).unwrap_or("");
    let field_ok = !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let before = &text[..pos];
    let line_no = before.matches('\n').count() + 1;
    // The table header the key is under, with array-of-tables indices.
    let mut header = String::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut header_idx: BTreeMap<String, usize> = BTreeMap::new();
    for line in before.lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix("[[").and_then(|s| s.strip_suffix("]]")) {
            let h = h.trim().to_string();
            let n = counts.entry(h.clone()).or_insert(0);
            header_idx.insert(h.clone(), *n);
            *n += 1;
            // a new parent element restarts its children's numbering
            let prefix = format!("{h}.");
            counts.retain(|k, _| !k.starts_with(&prefix));
            header = h;
        } else if let Some(h) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            header = h.trim().to_string();
        }
    }
    let mut path = String::new();
    let mut acc = String::new();
    for part in header.split('.').filter(|p| !p.is_empty()) {
        if !acc.is_empty() {
            acc.push('.');
        }
        acc.push_str(part);
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(part);
        if let Some(i) = header_idx.get(&acc) {
            path.push_str(&format!("[{i}]"));
        }
    }
    let key = match (path.is_empty(), field_ok) {
        (true, true) => field.to_string(),
        (false, true) => format!("{path}.{field}"),
        (_, false) => path,
    };
    format!("line {line_no}{}{key}", if key.is_empty() { "" } else { ", " })
}
