//! `meshwork`: an Istio-compatible service mesh in one binary.
#![forbid(unsafe_code)]

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An Istio-compatible service mesh: Istio's configuration API, a small Rust data plane.
#[derive(Parser)]
#[command(name = "meshwork", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check Istio and Kubernetes configuration as Istio's validating webhook would.
    Validate(cmd::validate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
    }
}
