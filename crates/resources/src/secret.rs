//! Secrets: certificate chains, private keys and trusted CAs, inline (from a Kubernetes
//! Secret) or as files the proxy reads (and re-reads when they change). The only place
//! private keys live.

use serde::{Deserialize, Serialize};

/// The secret with a proxy's own workload certificate and key (Istio's SDS name). The
/// proxy makes it itself; the control plane only names it.
pub const WORKLOAD_CERTIFICATE: &str = "default";

/// The secret with the mesh roots a proxy trusts (Istio's SDS name).
pub const MESH_ROOTS: &str = "ROOTCA";

/// TLS material, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// `kubernetes://ns/name`, `file-cert:CERT~KEY` or `file-root:CA`.
    pub name: String,
    /// A certificate chain (leaf first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_chain: Option<Pem>,
    /// The private key of the chain's leaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<Pem>,
    /// CA certificates to trust when verifying peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<Pem>,
}

/// PEM data, inline or in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pem {
    /// The PEM text.
    Inline(String),
    /// A file path, read by the proxy.
    File(String),
}

impl Secret {
    /// Replaces inline key material by its length.
    pub fn redact(&mut self) {
        if let Some(Pem::Inline(key)) = &mut self.private_key {
            *key = format!("[redacted {} bytes]", key.len());
        }
    }

    /// The files this secret is read from.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        [&self.certificate_chain, &self.private_key, &self.trusted_ca]
            .into_iter()
            .filter_map(|p| match p {
                Some(Pem::File(path)) => Some(path.as_str()),
                _ => None,
            })
    }
}
