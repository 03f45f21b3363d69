//! `vigil config defaults`: every key of a pipeline file with its default, range and meaning,
//! read from the schema of [`super::PipelineFile`] (so it is what loading enforces). The book's
//! configuration reference (docs/src/reference/config.md) is this output (`--markdown`); a test keeps the two equal.

use serde_json::{Map, Value};

/// One documented key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyDoc {
    pub key: String,
    pub default: String,
    pub range: String,
    pub doc: String,
    /// The range's bounds, when it is numeric (inclusive or not, as `range` says).
    #[serde(skip)]
    pub bounds: (Option<f64>, Option<f64>),
    /// The values it may take, when it is one of a list.
    #[serde(skip)]
    pub choices: Vec<String>,
    /// Its JSON type when it is one value ("number", "integer", "boolean", "string"), else "".
    #[serde(skip)]
    pub scalar: &'static str,
}

fn resolve<'a>(s: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(n) => defs.get(n).map(|d| resolve(d, defs)).unwrap_or(s),
        None => s,
    }
}

/// The object schema a property holds, if it is a table (directly, optional, or an array item).
fn table<'a>(s: &'a Value, defs: &'a Map<String, Value>) -> Option<(&'a Value, bool)> {
    let s = resolve(s, defs);
    if s.get("properties").is_some() {
        return Some((s, false));
    }
    if let Some(alts) = s.get("anyOf").and_then(Value::as_array) {
        for a in alts {
            let a = resolve(a, defs);
            if a.get("properties").is_some() {
                return Some((a, false));
            }
        }
    }
    if s.get("type") == Some(&Value::from("array"))
        && let Some(items) = s.get("items")
    {
        let it = resolve(items, defs);
        // (an array of tables, or of tagged tables; an array of plain enum values is one key)
        let tagged = it
            .get("oneOf")
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|x| resolve(x, defs).get("properties").is_some()));
        if it.get("properties").is_some() || tagged {
            return Some((it, true));
        }
    }
    None
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        Value::Number(n) if n.is_f64() => {
            // the shortest spelling, as an f32 field was written
            let x = n.as_f64().unwrap_or(0.0);
            if (x as f32) as f64 == x { format!("{}", x as f32) } else { format!("{x}") }
        }
        v => v.to_string(),
    }
}

fn enum_values(s: &Value, defs: &Map<String, Value>) -> Option<String> {
    let s = resolve(s, defs);
    let pick = |s: &Value| -> Option<Vec<String>> {
        if let Some(e) = s.get("enum").and_then(Value::as_array) {
            return Some(e.iter().map(text).collect());
        }
        s.get("oneOf").and_then(Value::as_array).map(|alts| {
            alts.iter()
                .filter_map(|a| a.get("const").or_else(|| a.get("enum").and_then(|e| e.get(0))))
                .map(text)
                .collect()
        })
    };
    let s2 = s.get("items").map(|i| resolve(i, defs)).unwrap_or(s);
    pick(s2).filter(|v| !v.is_empty()).map(|v| format!("one of {}", v.join(", ")))
}

/// The schema of a value, past an optional's `anyOf` with null.
fn value_schema<'a>(s: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    let s = resolve(s, defs);
    let alt = s
        .get("anyOf")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x.get("type") != Some(&Value::from("null"))));
    alt.map(|a| resolve(a, defs)).unwrap_or(s)
}

/// A value's numeric bounds (minimum or exclusive minimum, maximum or exclusive maximum), the
/// string values it may take, and its JSON type if it is a single value.
fn limits(s: &Value, defs: &Map<String, Value>) -> ((Option<f64>, Option<f64>), Vec<String>, &'static str) {
    let v = value_schema(s, defs);
    let types: Vec<&str> = match v.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
        _ => Vec::new(),
    };
    let scalar = match types.as_slice() {
        ["number"] => "number",
        ["integer"] => "integer",
        ["boolean"] => "boolean",
        ["string"] => "string",
        _ if v.get("enum").is_some() || v.get("oneOf").is_some() => "string",
        _ => "",
    };
    let n = |a: &str, b: &str| v.get(a).or_else(|| v.get(b)).and_then(Value::as_f64);
    let choices = v
        .get("enum")
        .and_then(Value::as_array)
        .cloned()
        .or_else(|| {
            v.get("oneOf").and_then(Value::as_array).map(|alts| {
                alts.iter()
                    .filter_map(|a| a.get("const").or_else(|| a.get("enum").and_then(|e| e.get(0))))
                    .cloned()
                    .collect()
            })
        })
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    ((n("minimum", "exclusiveMinimum"), n("maximum", "exclusiveMaximum")), choices, scalar)
}

fn range(s: &Value, defs: &Map<String, Value>) -> String {
    let s = value_schema(s, defs);
    let n = |k: &str| s.get(k).and_then(Value::as_f64);
    let f = |x: f64| format!("{x}");
    let lo = n("minimum").map(|l| format!("[{}", f(l))).or(n("exclusiveMinimum").map(|l| format!("({}", f(l))));
    let hi = n("maximum").map(|h| format!("{}]", f(h))).or(n("exclusiveMaximum").map(|h| format!("{})", f(h))));
    match (lo, hi) {
        (Some(l), Some(h)) => format!("{l}, {h}"),
        (Some(l), None) => format!("≥ {}", &l[1..]),
        (None, Some(h)) => format!("≤ {}", &h[..h.len() - 1]),
        (None, None) => {
            if let Some(e) = enum_values(s, defs) {
                e
            } else if let Some(m) = s.get("maxLength").and_then(Value::as_u64) {
                format!("≤ {m} chars")
            } else if let Some(m) = s.get("maxItems").and_then(Value::as_u64) {
                format!("≤ {m} items")
            } else {
                String::new()
            }
        }
    }
}

fn doc(s: &Value) -> String {
    s.get("description").and_then(Value::as_str).unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
}

fn walk(obj: &Value, defs: &Map<String, Value>, prefix: &str, out: &mut Vec<KeyDoc>) {
    let required: Vec<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = obj.get("properties").and_then(Value::as_object) else { return };
    for (k, p) in props {
        if k == "kind" && p.get("const").is_some() {
            continue;
        }
        let key = format!("{prefix}{k}");
        if let Some((t, array)) = table(p, defs) {
            // a table that must be given whole (its keys are required) but has a default: one row
            let whole = t.get("required").and_then(Value::as_array).is_some_and(|r| !r.is_empty());
            if let (false, true, Some(d)) = (array, whole, p.get("default").filter(|d| d.is_object())) {
                let keys: Vec<&String> =
                    t.get("properties").and_then(Value::as_object).map(|o| o.keys().collect()).unwrap_or_default();
                let keys: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
                let range = format!("a table: {}", keys.join(", "));
                out.push(KeyDoc {
                    key,
                    default: text(d),
                    range,
                    doc: doc(p),
                    bounds: (None, None),
                    choices: Vec::new(),
                    scalar: "",
                });
                continue;
            }
            let sub = if array { format!("{key}[].") } else { format!("{key}.") };
            if let Some(variants) = t.get("oneOf").and_then(Value::as_array) {
                for v in variants {
                    let v = resolve(v, defs);
                    let kind = v.pointer("/properties/kind/const").and_then(Value::as_str).unwrap_or("?");
                    walk(v, defs, &format!("{key}[kind={kind}]."), out);
                }
            } else {
                walk(t, defs, &sub, out);
            }
            continue;
        }
        let default = if required.contains(&k.as_str()) {
            "required".to_string()
        } else {
            p.get("default").map(text).unwrap_or_else(|| "none".into())
        };
        let (bounds, choices, scalar) = limits(p, defs);
        out.push(KeyDoc { key, default, range: range(p, defs), doc: doc(p), bounds, choices, scalar });
    }
}

/// The keys of one rule kind (`no_mask`, …), named as in the rule's table (`threshold`, …).
pub fn rule_keys(kind: &str) -> Vec<KeyDoc> {
    let prefix = format!("cameras[].rules[kind={kind}].");
    KEYS.iter()
        .filter_map(|k| k.key.strip_prefix(&prefix).map(|key| KeyDoc { key: key.to_string(), ..k.clone() }))
        .collect()
}

/// Every key of a pipeline file, in file order (read from the schema once per process).
static KEYS: std::sync::LazyLock<Vec<KeyDoc>> = std::sync::LazyLock::new(|| {
    let schema = schemars::schema_for!(super::PipelineFile);
    let root = schema.as_value();
    let defs = root.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut out = Vec::new();
    walk(root, &defs, "", &mut out);
    out
});

/// Every key of a pipeline file, in file order.
pub fn keys() -> Vec<KeyDoc> {
    KEYS.clone()
}

/// The keys as a Markdown table (the book's configuration reference).
pub fn markdown() -> String {
    let mut s = String::from("| key | default | range | meaning |\n| --- | --- | --- | --- |\n");
    for k in keys() {
        let esc = |t: &str| t.replace('|', "\\|");
        s += &format!("| `{}` | {} | {} | {} |\n", k.key, esc(&k.default), esc(&k.range), esc(&k.doc));
    }
    s
}

/// The keys as aligned text.
pub fn text_table() -> String {
    let ks = keys();
    let w = ks.iter().map(|k| k.key.len()).max().unwrap_or(0);
    let mut s = String::new();
    for k in ks {
        s += &format!(
            "{:<w$}  default {}{}\n",
            k.key,
            k.default,
            if k.range.is_empty() { String::new() } else { format!("  range {}", k.range) }
        );
        if !k.doc.is_empty() {
            s += &format!("{:<w$}  {}\n", "", k.doc);
        }
    }
    s
}
