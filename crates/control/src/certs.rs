//! The certificate service on the control plane's TLS port (istiod's 15012): a proxy
//! sends a CSR with its token and receives a short-lived workload certificate for the
//! identity the token proves. Every refusal is logged with its reason.

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

/// Issues workload certificates.
pub struct Issuer {
    /// The CA.
    pub ca: Arc<MeshCa>,
    /// What verifies tokens.
    pub tokens: Arc<TokenKey>,
    /// The lifetime of a certificate when the request asks for none (24 h).
    pub default_ttl: Duration,
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
        let identity = self.tokens.verify(&token).map_err(|e| {
            warn!(?peer, "certificate refused: {e}");
            tonic::Status::unauthenticated(format!("certificate refused: {e}"))
        })?;
        let request = request.into_inner();
        let ttl = match u64::try_from(request.validity_duration) {
            Ok(secs) if secs > 0 => Duration::from_secs(secs),
            _ => self.default_ttl,
        };
        let chain = self.ca.sign(&request.csr, &identity, ttl).map_err(|e| {
            warn!(?peer, identity = %identity.spiffe(self.ca.trust_domain()), "certificate refused: {e}");
            tonic::Status::invalid_argument(format!("certificate refused: {e}"))
        })?;
        info!(identity = %identity.spiffe(self.ca.trust_domain()), ?ttl, "issued a workload certificate");
        Ok(tonic::Response::new(CertificateResponse {
            cert_chain: vec![chain, self.ca.roots().to_string()],
        }))
    }
}

/// Serves the certificate service with TLS on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    issuer: Issuer,
) -> Result<(), tonic::transport::Error> {
    let mut names: Vec<String> = CONTROL_PLANE_NAMES.iter().map(|s| s.to_string()).collect();
    names.push(addr.ip().to_string());
    let (chain, key) = issuer
        .ca
        .server_certificate(&names, Duration::from_secs(365 * 24 * 3600))
        .expect("the control plane's certificate can be made");
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(chain, key));
    tonic::transport::Server::builder()
        .tls_config(tls)?
        .add_service(CertificateServiceServer::new(issuer))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
}
