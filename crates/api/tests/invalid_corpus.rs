//! The corpus of invalid documents in tests/data/invalid: each file states, in
//! `# expect: LINE:COL: MESSAGE` comments, exactly the diagnostics `meshwork validate`
//! must give for it (file, line, column, resource, field path and message). Nothing more
//! and nothing less is accepted.

use std::path::{Path, PathBuf};

use meshwork_api::load::{LoadOptions, load_paths};

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_document_gives_exactly_its_expected_diagnostics() {
    let files = corpus();
    assert!(
        files.len() >= 56,
        "the corpus has only {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(str::to_string)
            .collect();
        assert!(
            !expected.is_empty(),
            "{} states no expectation",
            file.display()
        );
        let outcome = load_paths(std::slice::from_ref(file), &LoadOptions::default()).unwrap();
        assert!(outcome.has_errors(), "{} is valid", file.display());
        let prefix = format!("{}:", file.display());
        let mut actual: Vec<String> = outcome
            .diagnostics
            .iter()
            .map(|d| d.to_string().trim_start_matches(&prefix).to_string())
            .collect();
        expected.sort();
        actual.sort();
        if expected != actual {
            failures.push(format!(
                "{}\n  expected:\n    {}\n  actual:\n    {}",
                file.display(),
                expected.join("\n    "),
                actual.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
