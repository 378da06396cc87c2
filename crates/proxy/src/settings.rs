//! The proxy's static settings: limits and timeouts on downstream connections, set once
//! from flags when the proxy starts (docs/operations.md lists them with their defaults).

use std::time::Duration;

/// Limits and timeouts of downstream connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// How long a client may take to send a request's headers (slowloris).
    pub request_headers_timeout: Duration,
    /// A downstream connection with no bytes either way for this long is closed
    /// (Istio's default idle timeout: 1 hour).
    pub idle_timeout: Duration,
    /// Connections open at once per listener; more are closed at once and counted.
    pub max_connections_per_listener: usize,
    /// The most bytes of request headers (Envoy's default: 60 KiB); more gets 431.
    pub max_request_headers_bytes: usize,
    /// The most request headers (Envoy's default: 100); more gets 431.
    pub max_request_headers: usize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            request_headers_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            max_connections_per_listener: 100_000,
            max_request_headers_bytes: 60 * 1024,
            max_request_headers: 100,
        }
    }
}
