//! `meshwork analyze [PATH...]`: Istio's configuration analyzers over files, with
//! istioctl's flags, output formats and exit status (0; 79 when a message reaches the
//! failure threshold; 65 when a document cannot be parsed and nothing reaches it; 2 when
//! the input cannot be read).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, ValueEnum};
use meshwork_api::analyze::{ANALYZERS, Level, Message, analyze};
use meshwork_api::diagnostic::Severity;
use meshwork_api::load::{LoadOptions, LoadOutcome, config_files, load_paths};

/// istioctl's exit status when messages reach the failure threshold.
const FOUND_ISSUES: u8 = 79;
/// istioctl's exit status when some input could not be parsed (and nothing else failed).
const DATA_ERROR: u8 = 65;
/// Istio's reference of analysis messages.
const DOCS: &str = "https://istio.io/latest/docs/reference/config/analysis";

/// Arguments of `meshwork analyze`.
#[derive(clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for *.yaml, *.yml, *.json); `-` reads stdin.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The namespace to analyze, and of resources that name none.
    #[arg(short = 'n', long, value_name = "NS")]
    namespace: Option<String>,
    /// Analyze all namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// A mesh config file, merged over Istio's defaults.
    #[arg(long = "meshConfigFile", value_name = "FILE")]
    mesh_config_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Log)]
    output: Format,
    /// The lowest level of message printed: Info, Warning or Error.
    #[arg(long, value_parser = parse_level, default_value = "Warning")]
    output_threshold: Level,
    /// The lowest level of message that makes the exit status 79.
    #[arg(long, value_parser = parse_level, default_value = "Error")]
    failure_threshold: Level,
    /// List the analyzers and the codes each can report, then exit.
    #[arg(short = 'L', long)]
    list_analyzers: bool,
    /// Read the cluster instead of files (not available yet: only `false` is accepted).
    #[arg(short = 'k', long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true")]
    use_kube: bool,
    /// Drop messages: `CODE=Kind name`, where `*` matches anything (`IST0102=Namespace *`).
    #[arg(short = 'S', long, value_name = "CODE=RESOURCE")]
    suppress: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Format {
    Log,
    Json,
    Yaml,
}

fn parse_level(text: &str) -> Result<Level, String> {
    Level::parse(text).ok_or_else(|| format!("{text:?} is not one of Info, Warning, Error"))
}

/// Runs the command.
pub fn run(args: Args) -> ExitCode {
    if args.list_analyzers {
        write_stdout(&list_analyzers());
        return ExitCode::SUCCESS;
    }
    if args.use_kube {
        eprintln!(
            "meshwork analyze: reading a Kubernetes cluster is not available yet; pass --use-kube=false and files"
        );
        return ExitCode::from(2);
    }
    let namespace = args.namespace.clone().unwrap_or_else(|| "default".into());
    let opts = LoadOptions {
        default_namespace: namespace.clone(),
        mesh_file: args.mesh_config_file.clone(),
    };
    let outcome = match load_paths(&args.paths, &opts) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("meshwork analyze: cannot read {e}");
            return ExitCode::from(2);
        }
    };
    let rules = match args
        .suppress
        .iter()
        .map(|s| Suppression::parse(s))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshwork analyze: {e}");
            return ExitCode::from(2);
        }
    };
    let messages: Vec<Message> = analyze(&outcome)
        .into_iter()
        .filter(|m| args.all_namespaces || m.namespace().is_empty() || m.namespace() == namespace)
        .filter(|m| !rules.iter().any(|r| r.matches(m)))
        .collect();
    let shown: Vec<&Message> = messages
        .iter()
        .filter(|m| m.level() >= args.output_threshold)
        .collect();
    // Text that is not YAML or not a resource: istioctl's parse errors.
    let parse_errors: Vec<String> = outcome
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error && d.resource.is_none())
        .map(ToString::to_string)
        .collect();
    if !parse_errors.is_empty() {
        eprintln!("Error(s) adding files:");
        for e in &parse_errors {
            eprintln!("  {e}");
        }
    }
    match args.output {
        Format::Log => {
            let text: String = shown.iter().map(|m| format!("{m}\n")).collect();
            write_stdout(&text);
            if shown.is_empty() {
                eprintln!(
                    "{}",
                    no_issues(&args, &namespace, &outcome, parse_errors.len())
                );
            }
        }
        Format::Json => {
            let list: Vec<serde_json::Value> = shown.iter().map(|m| as_json(m)).collect();
            let mut text = serde_json::to_string_pretty(&list).expect("messages serialize");
            text.push('\n');
            write_stdout(&text);
        }
        Format::Yaml => write_stdout(&as_yaml(&shown)),
    }
    if messages.iter().any(|m| m.level() >= args.failure_threshold) {
        eprintln!(
            "Error: Analyzers found issues when analyzing {}.\nSee {DOCS} for more information about causes and resolutions.",
            target(&args, &namespace)
        );
        ExitCode::from(FOUND_ISSUES)
    } else if !parse_errors.is_empty() {
        ExitCode::from(DATA_ERROR)
    } else {
        ExitCode::SUCCESS
    }
}

/// What istioctl says when it prints no message: the files it read (or the namespace when
/// there were none), and how many could not be parsed.
/// What was analyzed, as istioctl says it.
fn target(args: &Args, namespace: &str) -> String {
    if args.all_namespaces {
        "all namespaces".to_string()
    } else {
        format!("namespace: {namespace}")
    }
}

fn no_issues(args: &Args, namespace: &str, outcome: &LoadOutcome, parse_errors: usize) -> String {
    let target = target(args, namespace);
    if parse_errors > 0 {
        let files: BTreeSet<&Path> = outcome
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error && d.resource.is_none())
            .map(|d| d.location.file.as_path())
            .collect();
        let noun = if files.len() == 1 { "file" } else { "files" };
        return format!(
            "No validation issues found when analyzing {target} (but {} {noun} could not be parsed).",
            files.len()
        );
    }
    let files: Vec<String> = args
        .paths
        .iter()
        .flat_map(|p| match config_files(p) {
            Ok(found) if p.is_dir() => found,
            _ => vec![p.clone()],
        })
        .map(|p| p.display().to_string())
        .collect();
    match files.as_slice() {
        [] => format!("\u{2714} No validation issues found when analyzing {target}."),
        [one] => format!("\u{2714} No validation issues found when analyzing {one}."),
        many => format!(
            "\u{2714} No validation issues found when analyzing:\n  - {}",
            many.join("\n  - ")
        ),
    }
}

/// One message as istioctl's JSON and YAML output give it.
fn fields(m: &Message) -> [(&'static str, String); 6] {
    [
        ("code", m.kind.code.to_string()),
        ("documentationUrl", m.documentation_url()),
        ("level", m.level().name().to_string()),
        ("message", m.text.clone()),
        ("origin", m.origin_text()),
        ("reference", m.reference().unwrap_or_default()),
    ]
}

fn as_json(m: &Message) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = fields(m)
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
        .collect();
    serde_json::Value::Object(map)
}

/// A YAML list of the messages; every value is a double-quoted string (JSON's quoting is
/// valid YAML).
fn as_yaml(messages: &[&Message]) -> String {
    if messages.is_empty() {
        return "[]\n".into();
    }
    let mut out = String::new();
    for m in messages {
        for (i, (k, v)) in fields(m).into_iter().enumerate() {
            let lead = if i == 0 { "- " } else { "  " };
            let quoted = serde_json::to_string(&v).expect("strings serialize");
            out.push_str(&format!("{lead}{k}: {quoted}\n"));
        }
    }
    out
}

fn list_analyzers() -> String {
    let mut out = String::from("Available analyzers:\n");
    for a in ANALYZERS {
        out.push_str(&format!("* {}:\n    {}\n", a.name, a.description));
        for c in a.codes {
            out.push_str(&format!("    {} {} ({})\n", c.code, c.name, c.level));
        }
    }
    out
}

/// `--suppress CODE=Kind name`: `*` in either part matches any text.
struct Suppression {
    code: String,
    resource: String,
}

impl Suppression {
    fn parse(text: &str) -> Result<Self, String> {
        let (code, resource) = text
            .split_once('=')
            .ok_or_else(|| format!("--suppress {text:?}: expected CODE=Kind name"))?;
        Ok(Self {
            code: code.trim().to_string(),
            resource: resource.trim().to_string(),
        })
    }

    /// The resource may be written `Kind namespace/name` (meshwork's origins) or `Kind
    /// name.namespace` (istioctl's).
    fn matches(&self, m: &Message) -> bool {
        glob(&self.code, m.kind.code)
            && (glob(&self.resource, &m.origin_text()) || glob(&self.resource, &m.friendly_name()))
    }
}

/// Matches `text` against a pattern in which `*` stands for any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn write_stdout(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob("IST0101", "IST0101"));
        assert!(!glob("IST0101", "IST0102"));
        assert!(glob("*", ""));
        assert!(glob("Namespace *", "Namespace shop"));
        assert!(glob(
            "VirtualService *.default",
            "VirtualService reviews.default"
        ));
        assert!(!glob(
            "VirtualService *.default",
            "VirtualService reviews.shop"
        ));
        assert!(glob("*review*", "VirtualService default/reviews"));
        assert!(glob("a*b*c", "abc"));
        assert!(!glob("a*b*c", "acb"));
        assert!(
            !glob("ab*ba", "aba"),
            "the prefix and suffix may not overlap"
        );
    }
}
