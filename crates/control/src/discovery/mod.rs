//! `meshwork control`: istiod's config path. It watches a config directory, compiles per
//! proxy with the `model` crate, and streams each connected proxy its resources over the
//! aggregated discovery stream (type URL, version, nonce, ACK and NACK). Changes are
//! debounced as istiod debounces them (100 ms quiet, 10 s at most) and only the types
//! whose resources changed are sent. `meshwork proxy-status` reads the debug service.

pub mod classes;
pub mod status;
mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use meshwork_model::proxy::MeshSnapshot;
use meshwork_xds::proto::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use meshwork_xds::proto::mesh_debug_server::{MeshDebug, MeshDebugServer};
use meshwork_xds::proto::{
    ProxyStatusRequest, ProxyStatusResponse, TlsCheckRequest, TlsCheckResponse, TlsCheckRow,
};
use meshwork_xds::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::watch;
use tokio_stream::Stream;
use tracing::{error, info, warn};

use crate::source::{DirSource, OpenError};
use crate::watch::{Debounce, DirWatcher};

/// How `meshwork control` runs.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// The config directory.
    pub dir: PathBuf,
    /// A mesh config file.
    pub mesh: Option<PathBuf>,
    /// Where proxies connect (`127.0.0.1:15010`).
    pub listen: SocketAddr,
    /// This instance's name, as proxy-status prints it.
    pub id: String,
    /// Where the CA and its token key are kept (`./.meshwork`).
    pub state_dir: PathBuf,
    /// Plugged-in CA certificates (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
    /// `cert-chain.pem`), instead of a root of its own.
    pub cacerts: Option<PathBuf>,
    /// The TLS port of the certificate service (`127.0.0.1:15012`).
    pub secure_listen: SocketAddr,
    /// The lifetime of workload certificates (24 h).
    pub workload_cert_ttl: std::time::Duration,
    /// Where the control plane's metrics are served (istiod's 15014), if anywhere.
    pub monitoring_address: Option<SocketAddr>,
}

/// `meshwork control` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The first config could not be used.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::BindError),
    /// Watching the directory failed.
    #[error("cannot watch {0}")]
    Watch(#[from] notify::Error),
    /// The mesh CA could not be opened or made.
    #[error("the mesh CA: {0}")]
    Ca(#[from] crate::ca::CaError),
    /// The token key could not be read or made.
    #[error("the token key in {0}: {1}")]
    TokenKey(PathBuf, std::io::Error),
    /// The gRPC server failed.
    #[error("the discovery server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// One version of the config, as every connection compiles from it.
#[derive(Debug)]
pub struct Published {
    /// The push version (`1`, `2`, ...), sent as `version_info`.
    pub version: String,
    /// The same, as a number.
    pub number: u64,
    /// The config.
    pub snapshot: MeshSnapshot,
    /// When it was published.
    pub at: std::time::Instant,
}

/// What every connection shares.
pub struct Shared {
    /// The config in force; connections wake up when it changes.
    pub snapshots: watch::Receiver<Arc<Published>>,
    /// The mesh roots (PEM), which every proxy receives as its `ROOTCA` secret.
    pub roots: watch::Receiver<Arc<String>>,
    /// The connected proxies.
    pub proxies: status::Proxies,
    /// What proxies of one class share, compiled once per version.
    pub classes: classes::Classes,
    /// This instance's name.
    pub id: String,
    /// The control plane's metrics.
    pub metrics: Arc<crate::metrics::ControlMetrics>,
}

/// The discovery service on one port: the plaintext one (15010) or the TLS one (15012),
/// where a proxy proves who it is with its workload certificate.
struct Discovery {
    shared: Arc<Shared>,
    secure: bool,
}

/// The identity a client certificate proves: its SPIFFE id's namespace and service
/// account, in `trust_domain`.
pub fn certificate_identity(der: &[u8], trust_domain: &str) -> Result<crate::ca::Identity, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let uri = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::URI(u) if u.starts_with("spiffe://") => Some(u.to_string()),
                _ => None,
            })
        })
        .ok_or("the certificate carries no SPIFFE id")?;
    let rest = uri.strip_prefix("spiffe://").unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [td, "ns", ns, "sa", sa] if *td == trust_domain && !ns.is_empty() && !sa.is_empty() => {
            Ok(crate::ca::Identity {
                namespace: ns.to_string(),
                service_account: sa.to_string(),
            })
        }
        [td, "ns", ns, "sa", sa] if *td != trust_domain && !ns.is_empty() && !sa.is_empty() => {
            Err(format!("{uri} is of trust domain {td}, not {trust_domain}"))
        }
        _ => Err(format!("{uri} is not spiffe://TRUST_DOMAIN/ns/NS/sa/SA")),
    }
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Discovery {
    type StreamAggregatedResourcesStream = ResponseStream;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<ResponseStream>, tonic::Status> {
        let peer = request.remote_addr();
        // On the TLS port the proxy is who its certificate says, and only that.
        let authenticated = if self.secure {
            let trust_domain = self
                .shared
                .snapshots
                .borrow()
                .snapshot
                .mesh
                .trust_domain
                .clone();
            let leaf = request
                .peer_certs()
                .and_then(|chain| chain.first().cloned())
                .ok_or_else(|| {
                    warn!(?peer, "discovery refused: no client certificate");
                    tonic::Status::unauthenticated(
                        "the discovery stream on the TLS port needs the proxy's workload certificate",
                    )
                })?;
            let identity = certificate_identity(&leaf, &trust_domain).map_err(|e| {
                warn!(?peer, "discovery refused: {e}");
                tonic::Status::unauthenticated(format!("discovery refused: {e}"))
            })?;
            Some(identity)
        } else {
            None
        };
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| tonic::Status::invalid_argument("the stream ended before a request"))?;
        let Some(mut node) = first.node.clone() else {
            return Err(tonic::Status::invalid_argument(
                "the first discovery request carries no node",
            ));
        };
        if let Some(identity) = &authenticated {
            if node.namespace.is_empty() {
                node.namespace = identity.namespace.clone();
            }
            if node.namespace != identity.namespace {
                let reason = format!(
                    "discovery refused: proxy {:?} says it is in namespace {}, its certificate is for {}",
                    node.name, node.namespace, identity.namespace
                );
                warn!(?peer, "{reason}");
                return Err(tonic::Status::permission_denied(reason));
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(stream::serve(
            node,
            peer,
            authenticated,
            inbound,
            tx,
            self.shared.clone(),
        ));
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

struct Debug(Arc<Shared>);

#[tonic::async_trait]
impl MeshDebug for Debug {
    async fn proxy_status(
        &self,
        _: tonic::Request<ProxyStatusRequest>,
    ) -> Result<tonic::Response<ProxyStatusResponse>, tonic::Status> {
        Ok(tonic::Response::new(ProxyStatusResponse {
            proxies: self.0.proxies.report(&self.0.id),
        }))
    }

    async fn tls_check(
        &self,
        request: tonic::Request<TlsCheckRequest>,
    ) -> Result<tonic::Response<TlsCheckResponse>, tonic::Status> {
        let request = request.into_inner();
        let entries = self.0.proxies.entries();
        let matching: Vec<_> = entries
            .iter()
            .filter(|e| {
                e.id == request.proxy
                    || e.id
                        .split_once('.')
                        .is_some_and(|(n, _)| n == request.proxy)
            })
            .collect();
        let entry = match matching.as_slice() {
            [one] => *one,
            [] => {
                return Err(tonic::Status::not_found(format!(
                    "no proxy {:?} is connected",
                    request.proxy
                )));
            }
            many => {
                return Err(tonic::Status::invalid_argument(format!(
                    "{:?} names {} proxies; give NAME.NAMESPACE",
                    request.proxy,
                    many.len()
                )));
            }
        };
        let published = self.0.snapshots.borrow().clone();
        let service = Some(request.service.as_str()).filter(|s| !s.is_empty());
        let rows = meshwork_model::mtls::tls_check(&published.snapshot, &entry.node, service)
            .into_iter()
            .map(|c| TlsCheckRow {
                destination: match &c.subset {
                    Some(s) => format!("{}:{}|{s}", c.host, c.port),
                    None => format!("{}:{}", c.host, c.port),
                },
                status: if c.conflict { "CONFLICT" } else { "OK" }.into(),
                server: if c.server.is_empty() {
                    "-".into()
                } else {
                    c.server.join("/")
                },
                client: if c.auto {
                    format!("{} (auto)", c.client)
                } else {
                    c.client.clone()
                },
                destination_rule: c.destination_rule.unwrap_or_else(|| "-".into()),
            })
            .collect();
        Ok(tonic::Response::new(TlsCheckResponse {
            proxy: entry.id.clone(),
            rows,
        }))
    }
}

fn publish(source: &DirSource, version: u64) -> Arc<Published> {
    Arc::new(Published {
        version: version.to_string(),
        number: version,
        snapshot: MeshSnapshot::new(source.objects(), source.mesh().clone()),
        at: std::time::Instant::now(),
    })
}

/// Runs until the process is stopped.
pub async fn run(opts: ControlOptions) -> Result<(), ControlError> {
    let mut source = DirSource::open(opts.dir.clone(), opts.mesh.clone())?;
    let mut version = 1;
    let (publisher, snapshots) = watch::channel(publish(&source, version));
    // The CA and the token key exist before any port is served.
    let trust_domain = source.mesh().trust_domain.clone();
    let first_ca =
        crate::ca::MeshCa::open(&opts.state_dir, opts.cacerts.as_deref(), &trust_domain)?;
    let (roots_tx, roots) = watch::channel(Arc::new(first_ca.roots().to_string()));
    let serving = Arc::new(
        crate::certs::ServingCert::new(&first_ca, opts.secure_listen).map_err(|reason| {
            crate::ca::CaError::Invalid {
                what: "the control plane's certificate".into(),
                reason,
            }
        })?,
    );
    let ca: crate::certs::CaHandle = Arc::new(std::sync::RwLock::new(Arc::new(first_ca)));
    let tokens = Arc::new(
        crate::token::TokenKey::open(&opts.state_dir)
            .map_err(|e| ControlError::TokenKey(opts.state_dir.clone(), e))?,
    );
    let clients = Arc::new(
        crate::certs::MeshClientVerifier::new(&roots.borrow()).map_err(|reason| {
            crate::ca::CaError::Invalid {
                what: "the mesh roots".into(),
                reason,
            }
        })?,
    );
    let listener = crate::bind(opts.listen).await?;
    let secure = crate::bind(opts.secure_listen).await?;
    let metrics = Arc::new(crate::metrics::ControlMetrics::default());
    let issuer = crate::certs::Issuer {
        ca: ca.clone(),
        tokens,
        default_ttl: opts.workload_cert_ttl,
        metrics: metrics.clone(),
    };
    // A root rotation: when the CA's files change, the new CA signs from then on, its
    // roots are pushed to every proxy, and the TLS port gets a new certificate.
    let ca_dir = opts
        .cacerts
        .clone()
        .unwrap_or_else(|| opts.state_dir.clone());
    let ca_files: Vec<std::path::PathBuf> = [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ]
    .iter()
    .map(|f| ca_dir.join(f))
    .collect();
    let (ca_watcher, mut ca_changes) = DirWatcher::start_with(&ca_files, Debounce::ISTIOD)?;
    {
        let (state_dir, cacerts) = (opts.state_dir.clone(), opts.cacerts.clone());
        let (serving, verifier) = (serving.clone(), clients.clone());
        tokio::spawn(async move {
            let _watcher = ca_watcher;
            while ca_changes.recv().await.is_some() {
                match crate::ca::MeshCa::open(&state_dir, cacerts.as_deref(), &trust_domain) {
                    Ok(next) => {
                        if let Err(e) = serving.renew(&next) {
                            error!("the control plane's certificate: {e}");
                        }
                        let roots = next.roots().to_string();
                        if let Err(e) = verifier.renew(&roots) {
                            error!("the mesh roots that verify proxies: {e}");
                        }
                        *ca.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
                        if **roots_tx.borrow() != roots {
                            info!("the mesh roots changed; pushing them to every proxy");
                            roots_tx.send_replace(Arc::new(roots));
                        } else {
                            info!("the mesh CA changed");
                        }
                    }
                    Err(e) => {
                        error!("the mesh CA files are rejected: {e}; the CA in force keeps signing")
                    }
                }
            }
        });
    }
    let shared = Arc::new(Shared {
        snapshots,
        roots,
        proxies: status::Proxies::default(),
        classes: classes::Classes::default(),
        id: opts.id.clone(),
        metrics: metrics.clone(),
    });
    if let Some(addr) = opts.monitoring_address {
        let listener = crate::bind(addr).await?;
        let shared = shared.clone();
        tokio::spawn(crate::metrics::serve(listener, metrics, move || {
            shared.proxies.entries().len()
        }));
    }
    info!(listen = %opts.listen, secure = %opts.secure_listen, id = %opts.id, "control plane ready");
    let (watcher, mut changes) = DirWatcher::start_with(&source.paths(), Debounce::ISTIOD)?;
    tokio::spawn(async move {
        let _watcher = watcher;
        while changes.recv().await.is_some() {
            match source.reload() {
                Ok(()) => {
                    version += 1;
                    info!(version, "configuration changed; pushing");
                    publisher.send_replace(publish(&source, version));
                }
                Err(e) => error!(
                    "cannot read the configuration: {e}; the last good configuration keeps serving"
                ),
            }
        }
    });
    // The TLS port: the certificate service and the authenticated discovery stream.
    {
        let incoming = crate::certs::tls_incoming(secure, serving, clients);
        let secure_discovery = Discovery {
            shared: shared.clone(),
            secure: true,
        };
        tokio::spawn(async move {
            let served = server()
                .add_service(crate::certs::service(issuer))
                .add_service(AggregatedDiscoveryServiceServer::new(secure_discovery))
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                error!("the control plane's TLS port failed: {e}");
            }
        });
    }
    server()
        .add_service(AggregatedDiscoveryServiceServer::new(Discovery {
            shared: shared.clone(),
            secure: false,
        }))
        .add_service(MeshDebugServer::new(Debug(shared)))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

/// A gRPC server whose streams end when their proxy is gone without a word (and so leave
/// proxy-status).
fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
}

#[cfg(test)]
mod tests {
    use super::certificate_identity;

    fn cert(uri: Option<&str>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["plain".to_string()]).unwrap();
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.try_into().unwrap()));
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_proves_the_namespace_and_service_account_of_its_spiffe_id() {
        let id = certificate_identity(
            &cert(Some("spiffe://cluster.local/ns/default/sa/reviews")),
            "cluster.local",
        )
        .unwrap();
        assert_eq!(
            (id.namespace.as_str(), id.service_account.as_str()),
            ("default", "reviews")
        );
        for (uri, why) in [
            (None, "carries no SPIFFE id"),
            (
                Some("spiffe://other.domain/ns/default/sa/reviews"),
                "of trust domain other.domain, not cluster.local",
            ),
            (
                Some("spiffe://cluster.local/ns/default"),
                "is not spiffe://TRUST_DOMAIN/ns/NS/sa/SA",
            ),
            (
                Some("spiffe://cluster.local/ns//sa/reviews"),
                "is not spiffe://TRUST_DOMAIN/ns/NS/sa/SA",
            ),
        ] {
            let err = certificate_identity(&cert(uri), "cluster.local").unwrap_err();
            assert!(err.contains(why), "{uri:?}: {err}");
        }
    }
}
