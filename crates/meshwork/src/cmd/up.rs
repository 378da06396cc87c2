//! `meshwork up DIR`: the control plane and its gateway proxies in one process, serving the
//! configuration in DIR and following its changes.

use std::path::PathBuf;
use std::process::ExitCode;

use meshwork_control::up::{UpOptions, run as run_up};

/// Arguments of `meshwork up`.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration directory (Istio and Kubernetes YAML).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// A mesh config file (the `mesh` key of Istio's `istio` ConfigMap, as YAML).
    #[arg(long, value_name = "FILE")]
    mesh: Option<PathBuf>,
    /// Admin address: `/config_dump`.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: std::net::SocketAddr,
    /// Health address: `/healthz/ready`.
    #[arg(long, default_value = "127.0.0.1:15021")]
    health: std::net::SocketAddr,
    /// The gateways' locality, `region/zone/subzone`, for locality load balancing (what a
    /// gateway pod learns from its node's topology labels in a cluster).
    #[arg(long, value_name = "REGION/ZONE/SUBZONE")]
    locality: Option<String>,
    /// Serve Istio's standard metrics at this address (`/stats/prometheus`; Istio's ports
    /// are 15020 and 15090); may be given more than once.
    #[arg(long, value_name = "ADDR")]
    metrics: Vec<std::net::SocketAddr>,
    #[command(flatten)]
    settings: super::settings::SettingsArgs,
}

/// Runs until stopped.
pub fn run(args: Args) -> ExitCode {
    let opts = UpOptions {
        dir: args.dir,
        mesh: args.mesh,
        admin: args.admin,
        health: args.health,
        locality: args.locality,
        metrics: args.metrics,
        settings: args.settings.settings(),
    };
    super::block_on(run_up(opts))
}
