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
    /// Serve Istio's standard metrics at this address (`/stats/prometheus`; Istio's port is
    /// 15020).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// How long a client may take to send a request's headers.
    #[arg(long, default_value = "10s", value_parser = duration)]
    request_headers_timeout: std::time::Duration,
    /// Downstream connections idle this long are closed.
    #[arg(long, default_value = "1h", value_parser = duration)]
    idle_timeout: std::time::Duration,
    /// Connections open at once per listener; more are closed at once.
    #[arg(long, default_value_t = 100_000)]
    max_connections_per_listener: usize,
    /// The most bytes of request headers; more gets 431.
    #[arg(long, default_value_t = 60 * 1024)]
    max_request_headers_bytes: usize,
    /// The most request headers; more gets 431.
    #[arg(long, default_value_t = 100)]
    max_request_headers: usize,
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    meshwork_api::duration::parse_duration(text).map_err(|e| e.to_string())
}

/// Runs until stopped.
pub fn run(args: Args) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let opts = UpOptions {
        dir: args.dir,
        mesh: args.mesh,
        admin: args.admin,
        health: args.health,
        locality: args.locality,
        metrics: args.metrics,
        settings: meshwork_proxy::settings::ProxySettings {
            request_headers_timeout: args.request_headers_timeout,
            idle_timeout: args.idle_timeout,
            max_connections_per_listener: args.max_connections_per_listener,
            max_request_headers_bytes: args.max_request_headers_bytes,
            max_request_headers: args.max_request_headers,
        },
    };
    match runtime.block_on(run_up(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
