//! Range and length checks read from a type's JSON Schema (`schemars`): a config field's range
//! is written once, on the field (`#[schemars(range(min = 0, max = 1))]`), and is both what
//! `vigil config defaults` documents and what loading enforces.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

/// Problems `(key, message)` of `value` against the ranges and lengths in `T`'s schema; keys are
/// relative to `value` (`rules[0].threshold`).
pub fn check<T: JsonSchema + Serialize>(value: &T) -> Vec<(String, String)> {
    let schema = schemars::schema_for!(T);
    let root = schema.as_value().clone();
    let defs = root.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
    let v = match serde_json::to_value(value) {
        Ok(v) => v,
        Err(e) => return vec![(String::new(), format!("cannot be checked: {e}"))],
    };
    let mut out = Vec::new();
    walk(&root, &defs, &v, String::new(), &mut out);
    out
}

fn resolve<'a>(s: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => defs.get(name).map(|d| resolve(d, defs)).unwrap_or(s),
        None => s,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Whether alternative `s` of an `anyOf`/`oneOf` describes `v` (by type and tag constants).
fn fits(s: &Value, defs: &Map<String, Value>, v: &Value) -> bool {
    let s = resolve(s, defs);
    let ty = |t: &str| match s.get("type") {
        Some(Value::String(x)) => x == t,
        Some(Value::Array(a)) => a.iter().any(|x| x == t),
        _ => true,
    };
    let type_ok = match v {
        Value::Null => ty("null"),
        Value::Bool(_) => ty("boolean"),
        Value::Number(_) => ty("number") || ty("integer"),
        Value::String(_) => ty("string"),
        Value::Array(_) => ty("array"),
        Value::Object(_) => ty("object"),
    };
    if !type_ok {
        return false;
    }
    if let (Some(props), Value::Object(o)) = (s.get("properties").and_then(Value::as_object), v) {
        for (k, p) in props {
            if let (Some(c), Some(x)) = (p.get("const"), o.get(k))
                && c != x
            {
                return false;
            }
        }
    }
    true
}

fn num(x: f64) -> String {
    format!("{x}")
}

fn walk(s: &Value, defs: &Map<String, Value>, v: &Value, path: String, out: &mut Vec<(String, String)>) {
    let s = resolve(s, defs);
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array)
            && let Some(a) = alts.iter().find(|a| fits(a, defs, v))
        {
            walk(a, defs, v, path.clone(), out);
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for a in all {
            walk(a, defs, v, path.clone(), out);
        }
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let g = |k: &str| s.get(k).and_then(Value::as_f64);
            let (lo, hi, xlo, xhi) = (g("minimum"), g("maximum"), g("exclusiveMinimum"), g("exclusiveMaximum"));
            let ok = lo.is_none_or(|l| x >= l)
                && hi.is_none_or(|h| x <= h)
                && xlo.is_none_or(|l| x > l)
                && xhi.is_none_or(|h| x < h);
            if !ok || !x.is_finite() {
                let low = lo.map(|l| format!("[{}", num(l))).or(xlo.map(|l| format!("({}", num(l))));
                let high = hi.map(|h| format!("{}]", num(h))).or(xhi.map(|h| format!("{})", num(h))));
                let msg = match (low, high) {
                    (Some(l), Some(h)) => format!("{} must be in {l}, {h}", num(x)),
                    (Some(l), None) => format!("{} must be at least {}", num(x), &l[1..]),
                    (None, Some(h)) => format!("{} must be at most {}", num(x), &h[..h.len() - 1]),
                    (None, None) => format!("{} is not a finite number", num(x)),
                };
                let why = s.get("x-why").and_then(Value::as_str).map(|w| format!(" ({w})")).unwrap_or_default();
                out.push((path.clone(), format!("{msg}{why}")));
            }
        }
        Value::String(t) => {
            let n = t.chars().count() as u64;
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
                && n > max
            {
                out.push((path.clone(), format!("is {n} characters long; at most {max} are allowed")));
            }
            if let Some(min) = s.get("minLength").and_then(Value::as_u64)
                && n < min
            {
                out.push((path.clone(), format!("is {n} characters long; at least {min} are needed")));
            }
        }
        Value::Array(a) => {
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && a.len() as u64 > max
            {
                out.push((path.clone(), format!("has {} items; at most {max} are allowed", a.len())));
            }
            if let Some(items) = s.get("items") {
                for (i, x) in a.iter().enumerate() {
                    walk(items, defs, x, format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(o) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, p) in props {
                    if let Some(x) = o.get(k) {
                        walk(p, defs, x, join(&path, k), out);
                    }
                }
            }
            if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                let props = s.get("properties").and_then(Value::as_object);
                for (k, x) in o {
                    if props.is_none_or(|p| !p.contains_key(k)) {
                        walk(ap, defs, x, join(&path, k), out);
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, JsonSchema)]
    struct Inner {
        #[schemars(range(min = 0, max = 1))]
        threshold: f64,
    }

    #[derive(Serialize, JsonSchema)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Rule {
        A(Inner),
        #[allow(dead_code)]
        B {
            #[schemars(range(min = 1))]
            n: u32,
        },
    }

    #[derive(Serialize, JsonSchema)]
    struct Outer {
        #[schemars(extend("exclusiveMinimum" = 0), range(max = 60))]
        fps: f64,
        #[schemars(length(max = 3))]
        name: String,
        opt: Option<Inner>,
        rules: Vec<Rule>,
    }

    #[test]
    fn ranges_come_from_the_schema() {
        let o = Outer {
            fps: 0.0,
            name: "abcd".into(),
            opt: Some(Inner { threshold: 2.0 }),
            rules: vec![Rule::A(Inner { threshold: 0.5 }), Rule::A(Inner { threshold: -1.0 })],
        };
        let got = check(&o);
        assert_eq!(
            got,
            vec![
                ("fps".to_string(), "0 must be in (0, 60]".to_string()),
                ("name".to_string(), "is 4 characters long; at most 3 are allowed".to_string()),
                ("opt.threshold".to_string(), "2 must be in [0, 1]".to_string()),
                ("rules[1].threshold".to_string(), "-1 must be in [0, 1]".to_string()),
            ]
        );
        let ok = Outer { fps: 5.0, name: "ab".into(), opt: None, rules: vec![] };
        assert!(check(&ok).is_empty());
    }
}
