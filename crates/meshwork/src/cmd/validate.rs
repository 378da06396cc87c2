//! `meshwork validate PATH...`: errors and warnings as `file:line:col: Kind ns/name: field:
//! message`, then a summary. Exit status 0 when valid, 1 when not, 2 when the input could
//! not be read.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use meshwork_api::load::{LoadOptions, LoadOutcome, load_paths};

/// Arguments of `meshwork validate`.
#[derive(clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for *.yaml, *.yml, *.json); `-` reads stdin.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Namespace of resources that do not name one.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// A mesh config file (the `mesh` key of Istio's `istio` ConfigMap, as YAML).
    #[arg(long, value_name = "FILE")]
    mesh: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    output: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Runs the command.
pub fn run(args: Args) -> ExitCode {
    let opts = LoadOptions {
        default_namespace: args.namespace,
        mesh_file: args.mesh,
    };
    let outcome = match load_paths(&args.paths, &opts) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("meshwork validate: cannot read {e}");
            return ExitCode::from(2);
        }
    };
    match args.output {
        Format::Text => print_text(&outcome),
        Format::Json => print_json(&outcome),
    }
    if outcome.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn summary(outcome: &LoadOutcome) -> String {
    let (errors, warnings) = outcome.counts();
    let n = outcome.config.objects.len();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let verdict = if errors == 0 { "valid" } else { "invalid" };
    format!(
        "{verdict}: {} ({}, {})",
        plural(n, "resource") + " accepted",
        plural(errors, "error"),
        plural(warnings, "warning")
    )
}

fn print_text(outcome: &LoadOutcome) {
    let mut text = String::new();
    for d in &outcome.diagnostics {
        text.push_str(&format!("{d}\n"));
    }
    text.push_str(&summary(outcome));
    text.push('\n');
    write_stdout(&text);
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn write_stdout(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn print_json(outcome: &LoadOutcome) {
    let (errors, warnings) = outcome.counts();
    let out = serde_json::json!({
        "valid": errors == 0,
        "errors": errors,
        "warnings": warnings,
        "resources": outcome.config.objects.len(),
        "diagnostics": outcome.diagnostics,
        "summary": summary(outcome),
    });
    let mut text = serde_json::to_string_pretty(&out).expect("diagnostics serialize");
    text.push('\n');
    write_stdout(&text);
}
