//! `meshwork control --config DIR`: the control plane. It serves the discovery stream that
//! `meshwork proxy` connects to, and the debug service `meshwork proxy-status` reads.

use std::path::PathBuf;
use std::process::ExitCode;

use meshwork_control::discovery::{ControlOptions, run as run_control};

/// Arguments of `meshwork control`.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration directory (Istio and Kubernetes YAML).
    #[arg(long, value_name = "DIR")]
    config: PathBuf,
    /// A mesh config file (the `mesh` key of Istio's `istio` ConfigMap, as YAML).
    #[arg(long, value_name = "FILE")]
    mesh: Option<PathBuf>,
    /// Where proxies connect (gRPC; istiod's plaintext port is 15010).
    #[arg(long, default_value = "127.0.0.1:15010")]
    listen: std::net::SocketAddr,
    /// This instance's name, as proxy-status prints it.
    #[arg(long, env = "POD_NAME", default_value = "meshwork-control")]
    id: String,
}

/// Runs until stopped.
pub fn run(args: Args) -> ExitCode {
    let opts = ControlOptions {
        dir: args.config,
        mesh: args.mesh,
        listen: args.listen,
        id: args.id,
    };
    super::block_on(async {
        tokio::select! {
            r = run_control(opts) => r,
            _ = super::proxy::terminated() => Ok(()),
        }
    })
}
