//! The control plane's TLS port (istiod's 15012) and its certificate service: a proxy
//! sends a CSR with its token and receives a short-lived workload certificate for the
//! identity the token proves. Every refusal is logged with its reason. The port verifies
//! the client certificates it is offered against the mesh roots; the discovery stream on
//! it takes the proxy's identity from its certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshwork_xds::proto::certificate_service_server::{
    CertificateService, CertificateServiceServer,
};
use meshwork_xds::proto::{CertificateRequest, CertificateResponse};
use tracing::{info, warn};

use crate::ca::MeshCa;
use crate::token::TokenKey;

/// The names the control plane's own certificate carries, as istiod's does, plus the
/// loopback names proxies on one machine use.
pub const CONTROL_PLANE_NAMES: [&str; 3] = ["istiod.istio-system.svc", "istiod", "localhost"];

/// The longest lifetime a workload certificate gets (Istio's `MAX_WORKLOAD_CERT_TTL`).
pub const MAX_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// The CA in force; replaced when its files change (a root rotation).
pub type CaHandle = Arc<std::sync::RwLock<Arc<MeshCa>>>;

/// Issues workload certificates.
pub struct Issuer {
    /// The CA.
    pub ca: CaHandle,
    /// What verifies tokens.
    pub tokens: Arc<TokenKey>,
    /// The lifetime of a certificate when the request asks for none (24 h).
    pub default_ttl: Duration,
    /// Counts requests, issues and refusals.
    pub metrics: Arc<crate::metrics::ControlMetrics>,
}

#[tonic::async_trait]
impl CertificateService for Issuer {
    async fn create_certificate(
        &self,
        request: tonic::Request<CertificateRequest>,
    ) -> Result<tonic::Response<CertificateResponse>, tonic::Status> {
        let peer = request.remote_addr();
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string();
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics.csr.fetch_add(1, Relaxed);
        let identity = self.tokens.verify(&token).map_err(|e| {
            self.metrics.authentication_failures.fetch_add(1, Relaxed);
            warn!(?peer, "certificate refused: {e}");
            tonic::Status::unauthenticated(format!("certificate refused: {e}"))
        })?;
        let request = request.into_inner();
        let ca = self.ca.read().unwrap_or_else(|e| e.into_inner()).clone();
        // A proxy may ask for less than the default, never for more than Istio's maximum.
        let ttl = match u64::try_from(request.validity_duration) {
            Ok(secs) if secs > 0 => Duration::from_secs(secs).min(MAX_WORKLOAD_CERT_TTL),
            _ => self.default_ttl.min(MAX_WORKLOAD_CERT_TTL),
        };
        let chain = ca.sign(&request.csr, &identity, ttl).map_err(|e| {
            warn!(?peer, identity = %identity.spiffe(ca.trust_domain()), "certificate refused: {e}");
            tonic::Status::invalid_argument(format!("certificate refused: {e}"))
        })?;
        self.metrics.issued.fetch_add(1, Relaxed);
        info!(identity = %identity.spiffe(ca.trust_domain()), ?ttl, "issued a workload certificate");
        Ok(tonic::Response::new(CertificateResponse {
            cert_chain: vec![chain, ca.roots().to_string()],
        }))
    }
}

/// The control plane's own certificate on the TLS port, made from the CA in force; a
/// new CA brings a new one (see [`ServingCert::renew`]) without restarting the port.
#[derive(Debug)]
pub struct ServingCert {
    names: Vec<String>,
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl ServingCert {
    fn make(ca: &MeshCa, names: &[String]) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
        use rustls_pki_types::pem::PemObject;
        let (chain, key) = ca
            .server_certificate(names, Duration::from_secs(365 * 24 * 3600))
            .map_err(|e| e.to_string())?;
        let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
            rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| e.to_string())?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        rustls::sign::CertifiedKey::from_der(chain, key, &provider)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// A certificate for the control plane's names and the address it listens on.
    pub fn new(ca: &MeshCa, addr: SocketAddr) -> Result<ServingCert, String> {
        let mut names: Vec<String> = CONTROL_PLANE_NAMES.iter().map(|s| s.to_string()).collect();
        names.push(addr.ip().to_string());
        let current = Self::make(ca, &names)?;
        Ok(ServingCert {
            names,
            current: std::sync::RwLock::new(current),
        })
    }

    /// A new certificate from `ca`.
    pub fn renew(&self, ca: &MeshCa) -> Result<(), String> {
        let next = Self::make(ca, &self.names)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Verifies the client certificates the TLS port is offered against the mesh roots in
/// force: a root rotation replaces them without restarting the port. A client without a
/// certificate is let in (the certificate service takes tokens); what it may do is
/// decided by the service it calls.
#[derive(Debug)]
pub struct MeshClientVerifier {
    current: std::sync::RwLock<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl MeshClientVerifier {
    fn make(
        roots_pem: &str,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())
    }

    /// A verifier of certificates under `roots_pem`.
    pub fn new(roots_pem: &str) -> Result<MeshClientVerifier, String> {
        Ok(MeshClientVerifier {
            current: std::sync::RwLock::new(Self::make(roots_pem)?),
        })
    }

    /// Verifies under new roots from now on.
    pub fn renew(&self, roots_pem: &str) -> Result<(), String> {
        let next = Self::make(roots_pem)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    fn get(&self) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl rustls::server::danger::ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.get().supported_verify_schemes()
    }
}

/// The TLS connections of the control plane's TLS port (istiod's 15012), handshaken with
/// its certificate and, when the client offers one, its verified client certificate.
pub fn tls_incoming(
    listener: tokio::net::TcpListener,
    serving: Arc<ServingCert>,
    clients: Arc<MeshClientVerifier>,
) -> impl tokio_stream::Stream<
    Item = Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the default TLS versions")
    .with_client_cert_verifier(clients)
    .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The certificate service, to serve on the TLS port.
pub fn service(issuer: Issuer) -> CertificateServiceServer<Issuer> {
    CertificateServiceServer::new(issuer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Identity;

    #[tokio::test]
    async fn a_lifetime_past_the_maximum_is_cut_to_it() {
        let dir = std::env::temp_dir().join(format!("mw-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = MeshCa::open(&dir, None, "cluster.local").unwrap();
        let tokens = TokenKey::open(&dir).unwrap();
        let id = Identity {
            namespace: "default".into(),
            service_account: "reviews".into(),
        };
        let token = tokens.create(&id, Duration::from_secs(60));
        let issuer = Issuer {
            ca: Arc::new(std::sync::RwLock::new(Arc::new(ca))),
            tokens: Arc::new(tokens),
            default_ttl: Duration::from_secs(3600),
            metrics: Default::default(),
        };
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            id.spiffe("cluster.local").try_into().unwrap(),
        )];
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        for asked in [1_000_000_000_000i64, 3_000_000_000] {
            let mut request = tonic::Request::new(CertificateRequest {
                csr: csr.clone(),
                validity_duration: asked,
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let chain = issuer
                .create_certificate(request)
                .await
                .expect("issued")
                .into_inner()
                .cert_chain;
            let der = pem::parse(&chain[0]).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
            let life =
                cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
            assert!(
                life <= MAX_WORKLOAD_CERT_TTL.as_secs() as i64 + 60,
                "{asked}: {life}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
