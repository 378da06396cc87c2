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
    /// Where the mesh CA (its root and key) and the token key are kept; the root proxies
    /// trust is written here as `root-cert.pem`.
    #[arg(long, default_value = "./.meshwork")]
    state_dir: std::path::PathBuf,
    /// Plugged-in CA certificates, as Istio takes them: `ca-cert.pem`, `ca-key.pem`,
    /// `root-cert.pem`, `cert-chain.pem`.
    #[arg(long, value_name = "DIR")]
    cacerts: Option<std::path::PathBuf>,
    /// The certificate service's TLS address (istiod's port is 15012).
    #[arg(long, default_value = "127.0.0.1:15012")]
    secure_listen: std::net::SocketAddr,
    /// How long workload certificates live.
    #[arg(long, default_value = "24h", value_parser = super::settings::duration)]
    workload_cert_ttl: std::time::Duration,
    /// Serve the control plane's metrics at `/metrics` here (istiod's port is 15014).
    #[arg(long, value_name = "ADDR")]
    monitoring_address: Option<std::net::SocketAddr>,
}

/// Runs until stopped.
pub fn run(args: Args) -> ExitCode {
    let opts = ControlOptions {
        dir: args.config,
        mesh: args.mesh,
        listen: args.listen,
        id: args.id,
        state_dir: args.state_dir,
        cacerts: args.cacerts,
        secure_listen: args.secure_listen,
        workload_cert_ttl: args.workload_cert_ttl,
        monitoring_address: args.monitoring_address,
    };
    super::block_on(async {
        tokio::select! {
            r = run_control(opts) => r,
            _ = super::proxy::terminated() => Ok(()),
        }
    })
}
