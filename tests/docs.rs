//! The book (`docs/`) and the README can't drift from the code: the configuration reference is
//! `vigil config defaults --markdown`; mdBook builds the book; every internal link and anchor
//! resolves; every TOML example parses (a pipeline fragment against the pipeline's own JSON Schema,
//! laid over the demo site; a privacy mask with vigil's own loader); every `vigil` command line of
//! every shell example parses with vigil's own command-line parser.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;

const CONFIG_REFERENCE: &str = "docs/src/reference/config.md";

#[test]
fn the_config_reference_is_vigil_config_defaults() {
    let o = vigil().args(["config", "defaults", "--markdown"]).output().unwrap();
    assert!(o.status.success());
    let table = String::from_utf8(o.stdout).unwrap();
    let page = std::fs::read_to_string(repo().join(CONFIG_REFERENCE)).unwrap();
    let a = page.find("<!-- config-table:start -->\n").expect("start marker") + "<!-- config-table:start -->\n".len();
    let b = page.find("<!-- config-table:end -->").expect("end marker");
    assert!(page[a..b] == table, "{CONFIG_REFERENCE} differs from `vigil config defaults --markdown`; regenerate it");
    // every documented key has a meaning, and ranged keys say their range
    for line in table.lines().skip(2) {
        let cells: Vec<&str> = line.split(" | ").collect();
        assert!(cells.len() >= 4 && !cells[3].trim_end_matches(" |").trim().is_empty(), "undocumented key: {line}");
    }
    assert!(table.contains("| `analysis.fps` | 5 | (0, 60] |"), "{table}");
}

/// The Markdown files of the book and the README.
fn pages() -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut out = vec![repo().join("README.md")];
    walk(&repo().join("docs/src"), &mut out);
    out.sort();
    out
}

/// A fenced code block: info string, first line number, text.
type Block = (String, usize, String);

/// Fenced code blocks of a page.
fn blocks(text: &str) -> Vec<Block> {
    let (mut out, mut open): (Vec<Block>, Option<Block>) = (Vec::new(), None);
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match (&mut open, fence) {
            (None, true) => {
                open = Some((line.trim_start().trim_start_matches('`').trim().to_string(), i + 2, String::new()))
            }
            (Some(_), true) => out.push(open.take().unwrap()),
            (Some((_, _, body)), false) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, false) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    out
}

/// The page's text outside code blocks and code spans.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            // code spans hold no links
            let mut inside = false;
            for part in line.split('`') {
                if !inside {
                    out.push_str(part);
                }
                inside = !inside;
            }
            out.push('\n');
        }
    }
    out
}

/// mdBook's id of a heading: lower case; letters, digits, `_` and `-` kept; spaces to `-`.
fn heading_id(heading: &str) -> String {
    let text = heading.replace(['`', '*'], "");
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().next().unwrap_or(c))
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            let id = heading_id(line.trim_start_matches('#').trim());
            let mut unique = id.clone();
            let mut n = 1;
            while seen.contains(&unique) {
                unique = format!("{id}-{n}");
                n += 1;
            }
            seen.insert(unique);
        }
    }
    seen
}

/// Every `[text](target)` of the prose: (line, target).
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in prose(text).lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let end = tail.find(')').unwrap_or(tail.len());
            out.push((i + 1, tail[..end].to_string()));
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn every_internal_link_and_anchor_of_the_book_and_the_readme_resolves() {
    let root = repo();
    let book = root.join("docs/src");
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(&root).unwrap().display().to_string();
        for (line, target) in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = target.split_once('#').map_or((target.as_str(), None), |(f, a)| (f, Some(a)));
            let dest = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            let Ok(dest) = dest.canonicalize() else {
                problems.push(format!("{name}:{line}: `{target}`: no such file"));
                continue;
            };
            // the book's own links stay inside the book (mdBook copies only docs/src)
            if page.starts_with(&book) && !dest.starts_with(book.canonicalize().unwrap()) {
                problems.push(format!("{name}:{line}: `{target}` leaves docs/src: the built book would lack it"));
            }
            if let Some(a) = anchor {
                let there = std::fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&there).contains(a) {
                    problems.push(format!("{name}:{line}: `{target}`: no heading with the id `{a}` there"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
    assert!(checked > 50, "only {checked} links checked: is the link reader broken?");
    // every page of the book is in SUMMARY.md (mdBook renders only those)
    let summary = std::fs::read_to_string(book.join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = links(&summary).into_iter().map(|(_, t)| t).collect();
    for page in pages().into_iter().filter(|p| p.starts_with(&book) && !p.ends_with("SUMMARY.md")) {
        let rel = page.strip_prefix(&book).unwrap().to_string_lossy().into_owned();
        assert!(listed.contains(&rel), "docs/src/{rel} is not in SUMMARY.md");
    }
}

/// Lays `over` onto `base`: tables key by key, arrays element by element (a rule of another
/// `kind` replaces the one under it).
fn lay_over(base: &mut serde_json::Value, over: &serde_json::Value) {
    use serde_json::Value;
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            if b.get("kind").is_some() && o.get("kind").is_some() && b.get("kind") != o.get("kind") {
                *b = o.clone();
                return;
            }
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => lay_over(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if o.iter().all(|v| v.is_object()) => {
            for (i, v) in o.iter().enumerate() {
                match b.get_mut(i) {
                    Some(slot) => lay_over(slot, v),
                    None => b.push(v.clone()),
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[test]
fn every_toml_example_parses_as_what_it_shows() {
    let o = vigil().args(["config", "schema"]).output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let demo: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("pipelines/demo.toml")).unwrap()).unwrap();
    let demo = serde_json::to_value(demo).unwrap();
    let (mut pipelines, mut masks, mut problems) = (0, 0, Vec::new());
    for page in pages() {
        let name = page.strip_prefix(repo()).unwrap().display().to_string();
        for (info, line, body) in blocks(&std::fs::read_to_string(&page).unwrap()) {
            if info != "toml" {
                continue;
            }
            let at = format!("{name}:{line}");
            if body.starts_with("# privacy-masks/") {
                masks += 1;
                if let Err(e) = vigil::privacy::PrivacyMask::parse(body.as_bytes(), Path::new(&at), "example".into()) {
                    problems.push(format!("{at}: not a privacy mask: {e}"));
                }
                continue;
            }
            pipelines += 1;
            let fragment: toml::Value = match toml::from_str(&body) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{at}: not TOML: {e}"));
                    continue;
                }
            };
            let mut site = demo.clone();
            lay_over(&mut site, &serde_json::to_value(fragment).unwrap());
            for e in validator.iter_errors(&site) {
                problems.push(format!("{at}: {} at {}", e, e.instance_path()));
            }
        }
    }
    assert!(problems.is_empty(), "TOML examples that don't parse:\n{}", problems.join("\n"));
    assert!(
        pipelines >= 3 && masks >= 1,
        "{pipelines} pipeline and {masks} mask examples: is the block reader broken?"
    );
    println!("TOML examples checked: {pipelines} pipeline fragments, {masks} privacy masks");
}

/// Shell words of one command (quotes kept together, no expansion).
fn words(command: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None::<char>, false);
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The commands of a shell block: continuations joined, comments dropped, split at `&&`, `||`, `;`
/// and `|`.
fn commands(body: &str) -> Vec<String> {
    let joined = body.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        // a comment starts at a `#` outside quotes that begins a word
        let (mut quote, mut cut, mut prev) = (None::<char>, line.len(), ' ');
        for (i, c) in line.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') if prev.is_whitespace() => {
                    cut = i;
                    break;
                }
                _ => {}
            }
            prev = c;
        }
        let line = &line[..cut];
        for part in line.split("&&").flat_map(|p| p.split("||")).flat_map(|p| p.split(';')).flat_map(|p| p.split('|')) {
            if !part.trim().is_empty() {
                out.push(part.trim().to_string());
            }
        }
    }
    out
}

#[test]
fn every_vigil_command_of_every_shell_example_parses() {
    use clap::Parser;
    let (mut parsed, mut problems) = (0, Vec::new());
    for page in pages() {
        let name = page.strip_prefix(repo()).unwrap().display().to_string();
        for (info, line, body) in blocks(&std::fs::read_to_string(&page).unwrap()) {
            if info != "sh" {
                continue;
            }
            for cmd in commands(&body) {
                let w = words(&cmd);
                if !w.first().is_some_and(|p| p == "vigil" || p.ends_with("/vigil")) {
                    continue;
                }
                parsed += 1;
                if let Err(e) = vigil::cli::Cli::try_parse_from(&w) {
                    let first = e.to_string().lines().next().unwrap_or_default().to_string();
                    problems.push(format!("{name}:{line}: `{cmd}`: {first}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "shell examples vigil does not accept:\n{}", problems.join("\n"));
    assert!(parsed >= 20, "only {parsed} vigil commands found: is the block reader broken?");
    println!("vigil command lines checked: {parsed}");
}

/// mdBook: `.deps/bin/mdbook` (made by `.ci/install`) or one on PATH.
fn mdbook() -> PathBuf {
    let local = repo().join(".deps/bin/mdbook");
    if local.exists() {
        return local;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("mdbook")).find(|p| p.exists()))
        .unwrap_or_default();
    on_path.unwrap_or_else(|| panic!("this test builds the book with mdBook, which is not installed: run `bash .ci/install` (it puts mdbook in .deps/bin)"))
}

#[test]
fn the_book_builds_with_mdbook() {
    let out = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(mdbook())
        .args(["build", "docs", "--dest-dir"])
        .arg(out.path())
        .current_dir(repo())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "mdbook build failed:\n{log}");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "mdbook build warned:\n{log}");
    for page in [
        "index.html",
        "reviewer/index.html",
        "zh/ops.html",
        "reference/config.html",
        "img/screenshots/review-queue.png",
    ] {
        assert!(out.path().join(page).exists(), "the built book lacks {page}");
    }
    let reviewer = std::fs::read_to_string(out.path().join("reviewer/index.html")).unwrap();
    assert!(
        reviewer.contains("四项核实") && reviewer.contains("review-queue.png"),
        "the reviewer guide lost its content"
    );
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
