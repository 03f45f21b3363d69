//! The README's configuration table is generated from the config types (defaults, ranges, docs on
//! the fields): it can't drift.

mod common;

use common::*;

#[test]
fn the_readme_config_table_is_vigil_config_defaults() {
    let o = vigil().args(["config", "defaults", "--markdown"]).output().unwrap();
    assert!(o.status.success());
    let table = String::from_utf8(o.stdout).unwrap();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let a = readme.find("<!-- config-table:start -->\n").expect("start marker") + "<!-- config-table:start -->\n".len();
    let b = readme.find("<!-- config-table:end -->").expect("end marker");
    assert!(
        readme[a..b] == table,
        "README.md's configuration table differs from `vigil config defaults --markdown`; regenerate it"
    );
    // every documented key has a meaning, and ranged keys say their range
    for line in table.lines().skip(2) {
        let cells: Vec<&str> = line.split(" | ").collect();
        assert!(cells.len() >= 4 && !cells[3].trim_end_matches(" |").trim().is_empty(), "undocumented key: {line}");
    }
    assert!(table.contains("| `analysis.fps` | 5 | (0, 60] |"), "{table}");
}

#[test]
fn the_schema_is_valid_json_with_every_section() {
    let o = vigil().args(["config", "schema"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for s in ["site", "worker", "models", "analysis", "clip", "store", "publish", "signing", "retention", "cameras"] {
        assert!(v["properties"][s].is_object(), "{s}");
    }
}

/// The committed schemas in tests/schemas are what `vigil schema` prints (regenerate with
/// `for k in …; do vigil schema $k > tests/schemas/…; done`, see README "Schemas").
#[test]
fn the_committed_schemas_are_vigil_schema() {
    let kinds = [
        "event",
        "manifest",
        "checkpoint",
        "checkpoint-event",
        "index",
        "review",
        "review-event",
        "signature",
        "status",
        "access",
        "access-head-event",
    ];
    let mut files: Vec<String> = std::fs::read_dir(repo().join("tests/schemas"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), kinds.len(), "{files:?}");
    for k in kinds {
        let o = vigil().args(["schema", k]).output().unwrap();
        assert!(o.status.success(), "vigil schema {k}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let name = v["title"].as_str().unwrap().to_string();
        let committed = std::fs::read_to_string(repo().join("tests/schemas").join(format!("{name}.schema.json")))
            .unwrap_or_else(|e| panic!("tests/schemas/{name}.schema.json: {e}"));
        assert_eq!(
            committed,
            String::from_utf8(o.stdout).unwrap(),
            "tests/schemas/{name}.schema.json differs from `vigil schema {k}`; regenerate it"
        );
        assert!(jsonschema::draft202012::meta::is_valid(&v), "{name} is not a valid draft 2020-12 schema");
    }
}
