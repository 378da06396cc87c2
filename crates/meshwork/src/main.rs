//! `meshwork`: an Istio-compatible service mesh in one binary.
#![forbid(unsafe_code)]

mod cmd;

/// mimalloc: the request path allocates per request, and glibc's allocator showed up as a
/// quarter of the gateway's instructions in the profile (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Analyze Istio configuration as `istioctl analyze` does: references between
    /// resources, conflicts and likely mistakes.
    Analyze(cmd::analyze::Args),
    /// Run the control plane and its gateways on one machine, serving a config directory.
    Up(cmd::up::Args),
    /// Run the control plane: watch a config directory and stream per-proxy config to
    /// gateways and sidecars (istiod's config path).
    Control(cmd::control::Args),
    /// Run one gateway or sidecar, configured by `meshwork control`.
    Proxy(Box<cmd::proxy::Args>),
    /// Show every proxy connected to the control plane and whether it is in sync.
    #[command(name = "proxy-status")]
    ProxyStatus(cmd::proxy_status::Args),
    /// Show what one proxy runs: its listeners, routes, clusters or endpoints.
    #[command(name = "proxy-config")]
    ProxyConfig(cmd::proxy_config::Args),
    /// Run the whole mesh on this machine: the control plane, an ingress gateway, and
    /// Bookinfo's services behind sidecars.
    Demo(cmd::demo::Args),
    /// Check mTLS between a client proxy and its destinations (`authn tls-check`).
    Authn(cmd::authn::Args),
    /// Make tokens that prove a workload's identity to the mesh CA.
    Token(cmd::token::Args),
    /// Run a test backend that answers with the request it saw.
    Echo(cmd::echo::Args),
    /// Redirect this network namespace's TCP to a sidecar's capture ports, as Istio's
    /// istio-iptables does.
    Iptables(cmd::iptables::Args),
    /// Wait until the sidecar is ready, as `pilot-agent wait` does
    /// (holdApplicationUntilProxyStarts).
    Wait(cmd::wait::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr; stdout carries command output and access logs.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHWORK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Analyze(args) => cmd::analyze::run(args),
        Command::Up(args) => cmd::up::run(args),
        Command::Control(args) => cmd::control::run(args),
        Command::Proxy(args) => cmd::proxy::run(*args),
        Command::ProxyStatus(args) => cmd::proxy_status::run(args),
        Command::ProxyConfig(args) => cmd::proxy_config::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Authn(args) => cmd::authn::run(args),
        Command::Token(args) => cmd::token::run(args),
        Command::Echo(args) => cmd::echo::run(args),
        Command::Iptables(args) => cmd::iptables::run(args),
        Command::Wait(args) => cmd::wait::run(args),
    }
}
