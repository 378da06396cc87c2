//! The control plane: config sources (a directory of YAML; Kubernetes later), compilation
//! per proxy, and applying it to proxies (see docs/architecture.md).
#![forbid(unsafe_code)]

pub mod ca;
pub mod certs;
pub mod discovery;
pub mod last_good;
pub mod metrics;
pub mod source;
pub mod token;
pub mod up;
pub mod watch;

/// An address a command serves could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: std::net::SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr`, or says which address could not be bound.
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, BindError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}
