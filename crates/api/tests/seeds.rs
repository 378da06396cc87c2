//! Every complete YAML document (with apiVersion and kind) in the user's Istio write-ups
//! validates without errors. The write-ups are copied into tests/data/seeds, and the first
//! test reads that copy only. The second, `#[ignore]`d because the shared originals are
//! not part of the tree, checks that the copy still equals them; `scripts/test.sh` runs it
//! when `../shared/seeds` is beside the checkout.

use std::path::{Path, PathBuf};

use meshwork_api::diagnostic::Severity;
use meshwork_api::load::{LoadOptions, load_str};
use meshwork_api::source::parse_documents;

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seeds")
}

/// The fenced ```yaml blocks of a markdown text.
fn yaml_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed.starts_with("```yaml") || trimmed.starts_with("```yml") => {
                current = Some(String::new());
            }
            Some(block) if trimmed.starts_with("```") => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Complete documents: a block's documents that have apiVersion and kind.
fn complete_documents(block: &str) -> Vec<String> {
    block
        .split("\n---")
        .filter(|doc| {
            parse_documents(doc).is_ok_and(|docs| {
                docs.iter()
                    .any(|d| d.value.get("apiVersion").is_some() && d.value.get("kind").is_some())
            })
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_seed_document_validates_clean() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(seeds_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "the five write-ups");
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (b, block) in yaml_blocks(&text).iter().enumerate() {
            for doc in complete_documents(block) {
                let name = format!("{}#block{b}", file.file_name().unwrap().to_string_lossy());
                let outcome = load_str(Path::new(&name), &doc, &LoadOptions::default());
                let errors: Vec<String> = outcome
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .map(|d| d.to_string())
                    .collect();
                assert!(errors.is_empty(), "{name}:\n{doc}\n{errors:#?}");
                for w in &outcome.diagnostics {
                    let known = w
                        .message
                        .contains("is not supported by meshwork and is ignored")
                        || w.message.starts_with("metadata.name is missing");
                    assert!(known, "unexpected warning {w}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 25, "found only {checked} complete documents");
}

#[test]
#[ignore = "needs ../shared/seeds beside the checkout; scripts/test.sh runs it when present"]
fn shared_seeds_equal_the_in_tree_copy() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seeds");
    let entries =
        std::fs::read_dir(&shared).unwrap_or_else(|e| panic!("{}: {e}", shared.display()));
    let mut count = 0;
    for e in entries {
        let path = e.unwrap().path();
        let copy = seeds_dir().join(path.file_name().unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&copy).unwrap_or_default(),
            "{} differs from the shared original; copy it again",
            copy.display()
        );
        count += 1;
    }
    let copies = std::fs::read_dir(seeds_dir()).unwrap().count();
    assert_eq!(count, copies, "as many shared seeds as copies");
}

/// Every complete document of a write-up, as one input in which each document keeps
/// its line in the write-up (the rest is blank), so that findings point into it.
fn seed_inputs() -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(seeds_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            let original: Vec<&str> = text.lines().collect();
            let mut lines = vec![""; original.len()];
            // (first line, lines) of each document of each ```yaml block
            let mut docs: Vec<(usize, Vec<&str>)> = Vec::new();
            let mut in_block = false;
            for (i, line) in original.iter().enumerate() {
                let trimmed = line.trim_start();
                if !in_block {
                    in_block = trimmed.starts_with("```yaml") || trimmed.starts_with("```yml");
                    if in_block {
                        docs.push((i + 1, Vec::new()));
                    }
                } else if trimmed.starts_with("```") {
                    in_block = false;
                } else if line.starts_with("---") {
                    docs.push((i + 1, Vec::new()));
                } else if let Some(doc) = docs.last_mut() {
                    doc.1.push(line);
                }
            }
            for (first, doc) in docs {
                let body = doc.join("\n");
                if complete_documents(&body).is_empty() {
                    continue;
                }
                lines[first - 1] = "---";
                for (k, l) in doc.into_iter().enumerate() {
                    lines[first + k] = l;
                }
            }
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            (name, lines.join("\n") + "\n")
        })
        .collect()
}

/// `meshwork analyze -A` over each write-up's configuration gives exactly the findings
/// recorded in tests/data/seeds-analyze.txt (reviewed against Istio's analyzers).
#[test]
fn the_seeds_analyze_to_the_recorded_findings() {
    let mut got = String::new();
    for (name, text) in seed_inputs() {
        let outcome = load_str(Path::new(&name), &text, &LoadOptions::default());
        for m in meshwork_api::analyze::analyze(&outcome) {
            got.push_str(&format!("{m}\n"));
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seeds-analyze.txt");
    if std::env::var_os("MESHWORK_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(got, want, "analyze output of the seeds changed");
}
