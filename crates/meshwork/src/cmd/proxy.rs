//! `meshwork proxy`: one gateway or sidecar, configured by `meshwork control` over the
//! discovery stream. Its identity comes from flags or Istio's environment variables
//! (INSTANCE_IP, POD_NAMESPACE, POD_NAME, ISTIO_METAJSON_LABELS); its admin, status and
//! metrics addresses are flags, so that many proxies share one host.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use meshwork_proxy::Proxy;
use meshwork_proxy::admin::{self, AdminState};
use meshwork_proxy::discovery::{ClientOptions, run as run_discovery};
use meshwork_xds::proto::Node as Hello;
use tokio::net::TcpListener;
use tracing::info;

/// What the proxy is.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An ingress or egress gateway.
    Gateway,
    /// A workload's sidecar.
    Sidecar,
}

/// How a proxy authenticates to the control plane (Istio's `controlPlaneAuthPolicy`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthPolicy {
    /// mTLS with the workload certificate.
    #[value(name = "MUTUAL_TLS")]
    MutualTls,
    /// Plaintext.
    #[value(name = "NONE")]
    None,
}

/// How a workload's traffic reaches its proxy.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterceptionMode {
    /// iptables redirects it to the capture ports.
    #[value(name = "REDIRECT")]
    Redirect,
    /// Nothing redirects it.
    #[value(name = "NONE")]
    None,
}

/// Arguments of `meshwork proxy`.
#[derive(clap::Args)]
pub struct Args {
    /// Gateway or sidecar.
    #[arg(long, value_enum, default_value = "sidecar")]
    role: Role,
    /// The control plane: its TLS port (`meshwork control --secure-listen`, istiod's
    /// 15012), or its plaintext one (`--listen`, 15010).
    #[arg(long, env = "PILOT_ADDRESS", default_value = "127.0.0.1:15012")]
    control_plane: String,
    /// How the proxy proves itself to the control plane, as Istio's
    /// `controlPlaneAuthPolicy`: MUTUAL_TLS with its workload certificate, or NONE
    /// (plaintext, where the control plane sends no private keys). NONE when the
    /// control plane's port is 15010, else MUTUAL_TLS.
    #[arg(long, env = "CONTROL_PLANE_AUTH_POLICY", value_enum)]
    control_plane_auth_policy: Option<AuthPolicy>,
    /// How the workload's traffic reaches the proxy, as Istio's INTERCEPTION_MODE:
    /// REDIRECT when `meshwork iptables` sends it to the capture ports, NONE when the
    /// app calls the proxy's listeners itself.
    #[arg(
        long,
        env = "ISTIO_META_INTERCEPTION_MODE",
        value_enum,
        default_value = "NONE"
    )]
    interception_mode: InterceptionMode,
    /// Where iptables sends the workload's outbound TCP (Istio's 15001).
    #[arg(long, default_value_t = 15001)]
    outbound_capture_port: u16,
    /// Where iptables sends inbound TCP to the workload (Istio's 15006).
    #[arg(long, default_value_t = 15006)]
    inbound_capture_port: u16,
    /// Answer the workload's DNS (what `meshwork iptables --redirect-dns` sends here) for
    /// the mesh's names, as Istio's DNS proxy does; the rest goes to the resolvers of
    /// /etc/resolv.conf.
    #[arg(long, env = "ISTIO_META_DNS_CAPTURE", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    dns_capture: bool,
    /// Where the DNS proxy listens, UDP and TCP (Istio's 15053).
    #[arg(long, default_value = "127.0.0.1:15053")]
    dns_address: SocketAddr,
    /// The mesh's trust domain, for the identity the token names.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// The workload's address: the control plane finds the Pod or WorkloadEntry by it.
    #[arg(long, env = "INSTANCE_IP")]
    ip: String,
    /// The workload's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The proxy's name (the pod's); the workload's name when not given.
    #[arg(long, env = "POD_NAME")]
    name: Option<String>,
    /// Labels, `k=v,k=v`: they override the workload's (gateways are selected by them).
    #[arg(long, value_parser = labels)]
    labels: Option<BTreeMap<String, String>>,
    /// Labels as Istio's injector passes them: a JSON object.
    #[arg(long, env = "ISTIO_METAJSON_LABELS", hide = true, value_parser = json_labels)]
    json_labels: Option<BTreeMap<String, String>>,
    /// Admin address: `/config_dump`.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Status address: `/healthz/ready` and `/stats/prometheus`.
    #[arg(long, default_value = "127.0.0.1:15021")]
    status: SocketAddr,
    /// Also serve Istio's standard metrics on a port of their own (Istio's are 15020 and
    /// 15090); may be given more than once. The admin and status ports serve them at
    /// `/stats/prometheus` in any case.
    #[arg(long, value_name = "ADDR")]
    metrics: Vec<SocketAddr>,
    /// `region/zone/subzone`, for locality load balancing.
    #[arg(long, env = "ISTIO_META_LOCALITY")]
    locality: Option<String>,
    /// The certificate service (the control plane's TLS port); by default the control
    /// plane's address under MUTUAL_TLS, else its host, port 15012.
    #[arg(long, env = "CA_ADDR")]
    ca_address: Option<String>,
    /// The mesh root that verifies the certificate service (`meshwork control` writes it
    /// into its state directory).
    #[arg(long, default_value = "./.meshwork/root-cert.pem")]
    ca_root: std::path::PathBuf,
    /// The token that proves this proxy's identity (`meshwork token create`).
    #[arg(long, default_value = "/var/run/secrets/tokens/istio-token")]
    token_file: std::path::PathBuf,
    /// The lifetime to ask for the workload certificate; the control plane's default
    /// when not given.
    #[arg(long, value_parser = super::settings::duration)]
    workload_cert_ttl: Option<std::time::Duration>,
    /// How long connections may finish after SIGTERM; by default the mesh config's
    /// `defaultConfig.terminationDrainDuration`, as the control plane sends it (5s).
    #[arg(long, value_parser = super::settings::duration)]
    drain: Option<std::time::Duration>,
    #[command(flatten)]
    settings: super::settings::SettingsArgs,
}

fn labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not k=v"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn json_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str(text).map_err(|e| format!("not a JSON object of strings: {e}"))
}

/// SIGTERM or Ctrl-C.
pub async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot bind {addr}: {e}"))
}

async fn serve(args: Args) -> Result<(), String> {
    // A mesh proxy always keeps Istio's standard metrics, as Istio's do.
    let metrics = Arc::new(meshwork_proxy::metrics::Metrics::default());
    let admin_state = Arc::new(AdminState::default());
    let _ = admin_state.metrics.set(metrics.clone());
    for addr in [args.admin, args.status] {
        tokio::spawn(admin::serve(bind(addr).await?, admin_state.clone()));
    }
    for addr in args.metrics.iter().copied() {
        tokio::spawn(admin::serve_metrics(bind(addr).await?, metrics.clone()));
    }
    let proxy = Arc::new(Proxy::with_metrics(args.settings.settings(), Some(metrics)));
    if args.dns_capture {
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let upstreams = meshwork_proxy::dns::nameservers(&resolv);
        let addr = args.dns_address;
        let sockets = meshwork_proxy::dns::bind(addr)
            .await
            .map_err(|e| format!("cannot bind the DNS proxy on {addr}: {e}"))?;
        // ip6tables sends what it captures to the loopback of its own family.
        if addr.ip() == std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST) {
            let v6 = SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port());
            match meshwork_proxy::dns::bind(v6).await {
                Ok(s) => {
                    tokio::spawn(meshwork_proxy::dns::serve(
                        s,
                        proxy.shared(),
                        upstreams.clone(),
                    ));
                }
                Err(e) => tracing::debug!("no IPv6 DNS proxy on {v6}: {e}"),
            }
        }
        tokio::spawn(meshwork_proxy::dns::serve(
            sockets,
            proxy.shared(),
            upstreams,
        ));
    }
    let mut labels = args.json_labels.unwrap_or_default();
    labels.extend(args.labels.unwrap_or_default());
    let name = args.name.unwrap_or_default();
    let hello = Hello {
        id: if name.is_empty() {
            String::new()
        } else {
            format!("{name}.{}", args.namespace)
        },
        role: match args.role {
            Role::Gateway => "gateway",
            Role::Sidecar => "sidecar",
        }
        .into(),
        namespace: args.namespace,
        name,
        ips: vec![args.ip],
        labels: labels.into_iter().collect(),
        admin_address: args.admin.to_string(),
        locality: args.locality.unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").into(),
        interception_mode: match args.interception_mode {
            InterceptionMode::Redirect => "REDIRECT",
            InterceptionMode::None => "NONE",
        }
        .into(),
        outbound_capture_port: u32::from(args.outbound_capture_port),
        inbound_capture_port: u32::from(args.inbound_capture_port),
    };
    let (host, port) = args
        .control_plane
        .rsplit_once(':')
        .unwrap_or((args.control_plane.as_str(), ""));
    let mutual_tls = match args.control_plane_auth_policy {
        Some(policy) => policy == AuthPolicy::MutualTls,
        None => port != "15010",
    };
    info!(control_plane = %args.control_plane, mutual_tls, role = %hello.role, ip = %hello.ips[0], "proxy starting");
    // Over mTLS the certificate service is on the same port; else on the host's 15012.
    let ca_address = args.ca_address.unwrap_or_else(|| {
        if mutual_tls {
            args.control_plane.clone()
        } else {
            format!("{host}:15012")
        }
    });
    let client = tokio::spawn(run_discovery(
        proxy.clone(),
        admin_state.clone(),
        ClientOptions {
            mutual_tls,
            identity: Some(meshwork_proxy::identity::IdentityOptions {
                ca_address,
                trust_domain: args.trust_domain,
                ca_name: "istiod.istio-system.svc".into(),
                ca_root: args.ca_root,
                token_file: args.token_file,
                ttl: args.workload_cert_ttl,
            }),
            control_plane: args.control_plane,
            hello,
        },
    ));
    terminated().await;
    client.abort();
    admin_state.set_ready(false);
    let drain = args
        .drain
        .or(proxy
            .config()
            .node
            .termination_drain_ms
            .map(std::time::Duration::from_millis))
        .unwrap_or(std::time::Duration::from_secs(5));
    info!(?drain, "SIGTERM: draining");
    proxy.start_drain();
    let left = proxy.drain(drain).await;
    info!(open = left, "drained; exiting");
    Ok(())
}

/// Runs until stopped.
pub fn run(args: Args) -> ExitCode {
    super::block_on(serve(args))
}
