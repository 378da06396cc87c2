//! Clusters: an upstream service port (and subset) with how to reach its endpoints:
//! protocol, connection settings, TLS origination, load balancing, circuit breakers and
//! outlier detection. The endpoints themselves are an [`crate::EndpointSet`] of their own.

use serde::{Deserialize, Serialize};

use crate::listener::TlsVersion;

/// An upstream service port (and subset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// `outbound|80|v1|reviews.default.svc.cluster.local`.
    pub name: String,
    /// The service host.
    pub host: String,
    /// The service port.
    pub port: u32,
    /// The subset, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// How to speak to endpoints.
    pub protocol: UpstreamProtocol,
    /// Connect timeout in milliseconds (10s by default, as Istio).
    pub connect_timeout_ms: u64,
    /// TCP idle timeout in milliseconds (`connectionPool.tcp.idleTimeout`, 1h by default).
    pub idle_timeout_ms: u64,
    /// Load balancing, circuit breakers and outlier detection.
    pub policy: ClusterPolicy,
    /// How connections to endpoints are made and kept.
    pub connections: ConnectionSettings,
    /// TLS to the endpoints (DestinationRule `tls`); none means plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// A cluster with no endpoints of its own that connects where the client meant to
    /// (Istio's `PassthroughCluster` and `InboundPassthroughCluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_destination: Option<OriginalDestination>,
}

/// Where an original-destination cluster connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginalDestination {
    /// The address the client connected to.
    AsSent,
    /// Its port on 127.0.0.1: inbound, to the app beside the proxy.
    Loopback,
}

/// Connection settings of a cluster (`connectionPool` and `h2UpgradePolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectionSettings {
    /// TCP keepalive: idle time before probes, probe interval (seconds) and probe count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<(Option<u64>, Option<u64>, Option<u32>)>,
    /// Idle HTTP connections are closed after this long (`http.idleTimeout`, 1h by default).
    pub http_idle_timeout_ms: u64,
    /// Speak the client's HTTP version upstream (`http.useClientProtocol`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_client_protocol: bool,
    /// Requests per upstream HTTP/1.1 connection (`http.maxRequestsPerConnection`; 0 is
    /// unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_requests_per_connection: u32,
    /// The address connections come from (Envoy's `upstream_bind_config`): a sidecar
    /// hands inbound calls to its app from 127.0.0.6, which iptables does not capture
    /// again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The protocol used towards endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 without TLS, prior knowledge (h2c): `http2-`, `grpc-` ports.
    Http2,
}

/// How a cluster chooses among its endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// In turn (Istio's default).
    RoundRobin,
    /// The less loaded of two random endpoints (Envoy's power of two choices).
    LeastRequest,
    /// At random.
    Random,
    /// Consistent hashing on a ring of at least `min_ring_size` points.
    RingHash {
        /// What is hashed.
        key: HashKey,
        /// Ring size (1024 by default).
        min_ring_size: u64,
    },
    /// Consistent hashing with a Maglev table of `table_size` (a prime; 65537 by default).
    Maglev {
        /// What is hashed.
        key: HashKey,
        /// Table size.
        table_size: u64,
    },
}

/// The request property a consistent hash uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// A header's value.
    Header(String),
    /// A cookie's value; generated (and set on the response) when absent.
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Cookie lifetime in seconds (a session cookie when unset).
        ttl_secs: Option<u64>,
    },
    /// The client's IP address.
    SourceIp,
    /// A query parameter's value.
    QueryParameter(String),
}

/// Envoy's circuit breakers: limits beyond which requests are refused at once (503 `UO`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreakers {
    /// Connections to the cluster (`tcp.maxConnections`).
    pub max_connections: u32,
    /// Requests waiting for a connection (`http.http1MaxPendingRequests`).
    pub max_pending_requests: u32,
    /// Requests in flight (`http.http2MaxRequests`).
    pub max_requests: u32,
    /// Retries in flight (`http.maxRetries`).
    pub max_retries: u32,
}

impl Default for CircuitBreakers {
    /// Istio sets every limit to the maximum unless a DestinationRule lowers it.
    fn default() -> Self {
        Self {
            max_connections: u32::MAX,
            max_pending_requests: u32::MAX,
            max_requests: u32::MAX,
            max_retries: u32::MAX,
        }
    }
}

/// Outlier detection with Istio's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierPolicy {
    /// Consecutive 5xx (and, unless split, local-origin failures) before ejection (5).
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504 and connection failures before ejection (off).
    pub consecutive_gateway: Option<u32>,
    /// Consecutive local-origin failures before ejection, when split (5).
    pub consecutive_local_origin: Option<u32>,
    /// Count connection failures apart from HTTP errors.
    pub split_local_origin: bool,
    /// How often ejections are reviewed, in milliseconds (10s).
    pub interval_ms: u64,
    /// Ejection time in milliseconds, multiplied by the number of ejections (30s).
    pub base_ejection_ms: u64,
    /// At most this percentage of endpoints is ejected (10).
    pub max_ejection_percent: u32,
    /// Below this percentage of healthy endpoints, all are used (panic mode; 0).
    pub min_health_percent: u32,
}

/// Locality load balancing (`localityLbSetting`), for endpoints with a locality.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalityPolicy {
    /// `from` locality (may end in `*`) -> target localities with their weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<(String, Vec<(String, u32)>)>,
    /// Region to fail over to, by region: `from` -> `to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<(String, String)>,
    /// Labels ranking endpoints: those matching the gateway on more leading labels first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
}

/// The compiled policy of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterPolicy {
    /// Load balancing.
    pub lb: LbPolicy,
    /// Limits.
    pub circuit_breakers: CircuitBreakers,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierPolicy>,
    /// Locality-aware balancing: distribute by weight, or prefer the nearest endpoints and
    /// fail over outward (only with outlier detection, as in Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<LocalityPolicy>,
    /// Slow start for endpoints that join: (window in ms, minimum percent, aggression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<(u64, f64, f64)>,
    /// Retries in flight may be at most this percentage of requests in flight, but never
    /// fewer than the minimum (`retryBudget`: 20% and 3 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<(f64, u32)>,
}

/// TLS origination towards a cluster's endpoints (DestinationRule `tls` SIMPLE or MUTUAL).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpstreamTls {
    /// SIMPLE or MUTUAL.
    pub mode: UpstreamTlsMode,
    /// The secret with the client certificate and key (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// The secret with the CAs that verify the server; none means the system's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<String>,
    /// The SNI to send; none means the request's host (or the service host for TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Names the server certificate must carry (DNS or URI SANs); empty means the SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Do not verify the server's certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// Lowest TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<TlsVersion>,
    /// ALPN protocols offered (`h2` for HTTP/2 clusters, `http/1.1` otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

/// Mode of upstream TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpstreamTlsMode {
    /// Verify the server; no client certificate.
    Simple,
    /// Verify the server and present a client certificate.
    Mutual,
}
