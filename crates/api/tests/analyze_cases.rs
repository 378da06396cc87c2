//! The analyzer table: each file in tests/data/analyze is one case, read as `meshwork
//! analyze` reads its input, with header lines that say what one analyzer must report:
//!
//! ```text
//! # analyzer: virtualservice.GatewayAnalyzer
//! # expect: IST0101 VirtualService default/reviews: Referenced gateway not found: "gw"
//! # expect: IST0132 VirtualService default/reviews
//! ```
//!
//! Each `expect` is a code and an origin, optionally followed by `: ` and the exact text.
//! The analyzer's messages must equal the expectations as a multiset; `# expect: nothing`
//! says it must stay silent. Every analyzer needs a case that fires and one that does not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshwork_api::analyze::{ANALYZERS, Context, run_one};
use meshwork_api::load::{LoadOptions, load_str};

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/analyze");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

struct Case {
    analyzer: String,
    /// (code, origin) -> the texts expected (None: any text).
    expect: Vec<(String, String, Option<String>)>,
    silent: bool,
}

fn parse(text: &str, file: &Path) -> Case {
    let mut case = Case {
        analyzer: String::new(),
        expect: Vec::new(),
        silent: false,
    };
    for line in text.lines() {
        if let Some(a) = line.strip_prefix("# analyzer: ") {
            case.analyzer = a.trim().to_string();
        } else if let Some(e) = line.strip_prefix("# expect: ") {
            let e = e.trim();
            if e == "nothing" {
                case.silent = true;
                continue;
            }
            let (head, text) = match e.split_once(": ") {
                Some((h, t)) => (h, Some(t.to_string())),
                None => (e, None),
            };
            let (code, origin) = head
                .split_once(' ')
                .unwrap_or_else(|| panic!("{}: bad expect line {line:?}", file.display()));
            case.expect
                .push((code.to_string(), origin.to_string(), text));
        }
    }
    assert!(
        !case.analyzer.is_empty(),
        "{}: no analyzer line",
        file.display()
    );
    assert!(
        case.silent == case.expect.is_empty(),
        "{}: give expect lines, or `expect: nothing`, not both",
        file.display()
    );
    case
}

#[test]
fn every_case_reports_exactly_what_it_expects() {
    let mut fired: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    let files = cases();
    assert!(files.len() >= 2 * ANALYZERS.len(), "{} cases", files.len());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let case = parse(&text, file);
        let analyzer = ANALYZERS
            .iter()
            .find(|a| a.name == case.analyzer)
            .unwrap_or_else(|| panic!("{}: unknown analyzer {}", file.display(), case.analyzer));
        let outcome = load_str(file, &text, &LoadOptions::default());
        let ctx = Context::new(&outcome);
        let got = run_one(analyzer, &ctx);
        let entry = fired.entry(case.analyzer.clone()).or_default();
        if case.silent {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
        let mut unmatched: Vec<_> = got
            .iter()
            .map(|m| (m.kind.code.to_string(), m.origin_text(), m.text.clone()))
            .collect();
        let mut missing = Vec::new();
        for (code, origin, want) in &case.expect {
            let pos = unmatched.iter().position(|(c, o, t)| {
                c == code && o == origin && want.as_ref().is_none_or(|w| w == t)
            });
            match pos {
                Some(i) => {
                    unmatched.remove(i);
                }
                None => missing.push(format!("{code} {origin}: {want:?}")),
            }
        }
        if !missing.is_empty() || !unmatched.is_empty() {
            failures.push(format!(
                "{}:\n  missing: {missing:#?}\n  unexpected: {unmatched:#?}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for a in ANALYZERS {
        let (fires, silent) = fired.get(a.name).copied().unwrap_or_default();
        assert!(
            fires >= 1 && silent >= 1,
            "{}: {fires} firing and {silent} silent cases; each analyzer needs both",
            a.name
        );
    }
}

#[test]
fn analyzers_have_unique_names_and_declared_codes() {
    let names: Vec<&str> = ANALYZERS.iter().map(|a| a.name).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "sorted by name, each once");
    for a in ANALYZERS {
        assert!(!a.codes.is_empty(), "{}", a.name);
    }
}
