//! The tree holds no upstream files: no file is byte-identical to one in the shared
//! reference folder (`../shared/reference/` beside the checkout, where CI and developers
//! have Istio's CRD bundle), and no line of the tree repeats a line of the bundle's field
//! descriptions (the generated code points to Istio's reference instead).
//!
//! The reference folder is not part of the tree, so these tests are `#[ignore]`d: a run
//! without it reports them as skipped. `scripts/test.sh` runs them whenever the folder is
//! there, and then they fail if it cannot be read.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use meshwork_api::source::parse_documents;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference_dir() -> PathBuf {
    repo().join("../shared/reference")
}

/// Every file of the tree, without `.git` and `target`.
fn tree_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name();
        if name == ".git" || name == "target" {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            tree_files(&path, out);
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

fn all_tree_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    tree_files(&repo(), &mut files);
    assert!(files.len() > 50, "the tree was found: {}", files.len());
    files
}

#[test]
#[ignore = "needs ../shared/reference beside the checkout; scripts/test.sh runs it when present"]
fn shared_reference_files_have_no_copy_in_the_tree() {
    let dir = reference_dir();
    let references: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert!(!references.is_empty(), "{} is empty", dir.display());
    let mut copies = Vec::new();
    for file in all_tree_files() {
        let len = file.metadata().unwrap().len();
        for (reference, bytes) in &references {
            if len == bytes.len() as u64 && std::fs::read(&file).unwrap() == *bytes {
                copies.push(format!("{} = {}", file.display(), reference.display()));
            }
        }
    }
    assert!(copies.is_empty(), "upstream files in the tree: {copies:#?}");
}

/// The lines of every `description` in the bundle, trimmed, long enough to be prose.
fn description_lines(bundle: &str) -> HashSet<String> {
    fn walk(v: &serde_json::Value, out: &mut HashSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("description", serde_json::Value::String(text)) => {
                            out.extend(text.lines().map(|l| l.trim().to_string()));
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = HashSet::new();
    for doc in parse_documents(bundle).expect("the bundle parses") {
        walk(&doc.value, &mut out);
    }
    out.retain(|l| l.len() >= 30);
    out
}

/// A line of the tree without comment markers and indentation.
fn bare(line: &str) -> &str {
    line.trim()
        .trim_start_matches(['/', '!', '#', '*', '-', '>'])
        .trim()
}

#[test]
#[ignore = "needs ../shared/reference beside the checkout; scripts/test.sh runs it when present"]
fn shared_reference_prose_is_not_in_the_tree() {
    let bundle_path = reference_dir().join("istio-crd-all.gen.yaml");
    let bundle = std::fs::read_to_string(&bundle_path)
        .unwrap_or_else(|e| panic!("{}: {e}", bundle_path.display()));
    let prose = description_lines(&bundle);
    assert!(prose.len() > 300, "descriptions found: {}", prose.len());
    let mut found = Vec::new();
    for file in all_tree_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue; // not text
        };
        for (n, line) in text.lines().enumerate() {
            if prose.contains(bare(line)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} lines of Istio's descriptions in the tree, first: {:#?}",
        found.len(),
        &found[..found.len().min(10)]
    );
}
