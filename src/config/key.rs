//! Where in a pipeline file a parse error is: its line, and the dotted key path with array indices
//! that `serde_path_to_error` tracked while deserialising (`cameras[0].rules[0].treshold`).

use serde::de::DeserializeOwned;

/// Parses `text` as TOML into `T`; an error is (where, what): `line 7, cameras[0].rules[0].treshold`
/// and the problem.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
    let de = toml::Deserializer::parse(text).map_err(|e| (line_of(text, &e), e.message().to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.message().to_string();
        // inside a table tagged by `kind` (a rule) serde reads the fields from a buffer, so the
        // path stops at the table: the field an unknown-field error names completes it
        if let Some(name) = msg.strip_prefix("unknown field `").and_then(|r| r.split('`').next())
            && !path.ends_with(name)
        {
            path = if path == "." || path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
        }
        let line = line_of(text, &inner);
        let mut key = if path == "." { String::new() } else { path };
        if let Some(rule) = rule_at(text, &key) {
            key = rule;
        }
        let at = match (line.is_empty(), key.is_empty()) {
            (false, false) => format!("{line}, {key}"),
            (false, true) => line,
            (true, _) => key,
        };
        (at, msg)
    })
}

/// A rule table (`kind`-tagged, so read from a buffer) hides the path below it: for an error
/// whose path stops at `cameras[i]` or `cameras[i].rules[j]`, the rule that fails on its own and the key without which
/// it reads (`cameras[0].rules[1].threshold`).
fn rule_at(text: &str, key: &str) -> Option<String> {
    let (cam, rule) = key.split_once(".rules[").map_or((key, None), |(c, r)| (c, r.strip_suffix(']')));
    let i: usize = cam.strip_prefix("cameras[")?.strip_suffix(']')?.parse().ok()?;
    let doc: toml::Table = toml::from_str(text).ok()?;
    let rules = doc.get("cameras")?.as_array()?.get(i)?.get("rules")?.as_array()?;
    let fails = |r: &toml::Value| r.clone().try_into::<crate::rules::RuleConfig>().is_err();
    let j = match rule {
        Some(j) => j.parse().ok().filter(|&j: &usize| rules.get(j).is_some_and(fails))?,
        None => rules.iter().position(fails)?,
    };
    // the key without which the rule reads: the one the error is about
    let rule = rules[j].as_table()?;
    let field = rule.keys().find(|k| {
        let mut t = rule.clone();
        t.remove(*k);
        toml::Value::Table(t).try_into::<crate::rules::RuleConfig>().is_ok()
    });
    Some(match field {
        Some(f) => format!("{cam}.rules[{j}].{f}"),
        None => format!("{cam}.rules[{j}]"),
    })
}

/// `line N` of the error's span (empty without one).
fn line_of(text: &str, e: &toml::de::Error) -> String {
    e.span().map_or(String::new(), |s| format!("line {}", text[..s.start.min(text.len())].matches('\n').count() + 1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rule_value_of_the_wrong_type_is_named() {
        let text = "[site]\nid=\"s\"\n[[cameras]]\nid=\"c\"\nsource=\"a.mp4\"\n[[cameras.rules]]\nkind=\"no_mask\"\n\
                    [[cameras.rules]]\nkind=\"no_mask\"\nid=\"b\"\nthreshold=\"high\"\n";
        assert_eq!(super::rule_at(text, "cameras[0]").as_deref(), Some("cameras[0].rules[1].threshold"));
        let e = super::parse::<crate::config::PipelineFile>(text).unwrap_err();
        assert_eq!(e.0, "line 6, cameras[0].rules[1].threshold", "{e:?}");
    }
}
