//! The connection context: what the accept, inspection and TLS phases learn about a
//! downstream connection, shared by the HTTP and TCP paths and by every request on it.

use std::net::SocketAddr;
use std::sync::Arc;

/// One downstream connection.
#[derive(Clone)]
pub struct Connection {
    /// The client.
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: Option<SocketAddr>,
    /// The configured address of the socket that accepted it (picks the listener).
    pub bind: SocketAddr,
    /// Where the client meant to connect before a redirect captured it (sidecar capture
    /// ports 15001/15006); `None` when nothing redirected it.
    pub original_dst: Option<SocketAddr>,
    /// `http` or `https` (TLS terminated here).
    pub scheme: &'static str,
    /// SNI of the ClientHello.
    pub sni: Option<String>,
    /// The ALPN protocol agreed on, when TLS was terminated here.
    pub alpn: Option<String>,
    /// The verified client identity: the SPIFFE URI SAN of its certificate, else the
    /// certificate's subject.
    pub peer_identity: Option<std::sync::Arc<str>>,
    /// The listener carries the workload's own calls out (a sidecar's egress): its
    /// AuthorizationPolicies do not apply.
    pub outbound: bool,
    /// Keeps the connection counted (registry, listener cap) for as long as anything
    /// serves it, an upgraded (WebSocket) stream included.
    pub guard: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// The client's workload, from the TCP metadata exchange.
    pub peer_workload: Option<Arc<crate::peer::Workload>>,
    /// The client's address as a header value (X-Forwarded-For), made on first use.
    peer_ip_header: std::sync::OnceLock<http::HeaderValue>,
}

impl Connection {
    /// A plaintext connection accepted on `bind`.
    pub fn new(peer: SocketAddr, local: Option<SocketAddr>, bind: SocketAddr) -> Connection {
        Connection {
            peer,
            local,
            bind,
            original_dst: None,
            scheme: "http",
            sni: None,
            alpn: None,
            peer_identity: None,
            outbound: false,
            guard: None,
            peer_workload: None,
            peer_ip_header: std::sync::OnceLock::new(),
        }
    }

    /// The client's address as a header value, made once for all its requests.
    pub fn peer_ip_header(&self) -> &http::HeaderValue {
        self.peer_ip_header.get_or_init(|| {
            http::HeaderValue::try_from(self.peer.ip().to_string())
                .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"))
        })
    }
}

/// The identity a client certificate proves: its first `spiffe://` URI SAN, else its
/// subject (`CN=client,O=...`).
pub fn peer_identity(der: &[u8]) -> Option<Arc<str>> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && uri.starts_with("spiffe://")
            {
                return Some(Arc::from(*uri));
            }
        }
    }
    Some(Arc::from(cert.subject().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spiffe_uri_wins_over_the_subject() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "frontend");
        let plain = params.self_signed(&key).unwrap();
        assert_eq!(peer_identity(plain.der()).as_deref(), Some("CN=frontend"));
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://cluster.local/ns/default/sa/frontend"
                .try_into()
                .unwrap(),
        )];
        let spiffe = params.self_signed(&key).unwrap();
        assert_eq!(
            peer_identity(spiffe.der()).as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/frontend")
        );
    }
}
