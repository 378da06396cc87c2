//! The compiled, per-proxy configuration: what a gateway proxy runs and what
//! `/config_dump` prints. Indexed the way the data plane looks things up: listeners by
//! port, servers by SNI, virtual hosts by domain, clusters by name.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

/// Everything one gateway proxy runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayConfig {
    /// A name derived from the selector (`istio=ingressgateway`).
    pub name: String,
    /// The Gateway selector this proxy answers to.
    pub selector: BTreeMap<String, String>,
    /// One listener per bound port.
    pub listeners: Vec<Listener>,
    /// Route tables, by name (`http.8080`, `https.443.https.public.istio-system`).
    pub route_tables: BTreeMap<String, RouteTable>,
    /// Upstream clusters, by Istio's name (`outbound|80|v1|reviews.default.svc.cluster.local`).
    pub clusters: BTreeMap<String, Cluster>,
    /// Where and how to write the access log, when it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
    /// The gateway's own `region/zone/subzone`, for locality load balancing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
}

/// Access log settings (from the mesh config's `accessLogFile` and `accessLogEncoding`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessLog {
    /// `/dev/stdout` or a file path.
    pub path: String,
    /// One JSON object per line (`JSON`) or Envoy's text format (`TEXT`).
    pub json: bool,
}

/// A bound port and the servers it carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    /// `0.0.0.0_8080`.
    pub name: String,
    /// The address to bind (`0.0.0.0`).
    pub address: String,
    /// The port to bind (the Service's targetPort for the Gateway port, or the port itself).
    pub bind_port: u16,
    /// The Gateway port number (`80`).
    pub gateway_port: u32,
    /// Servers on this port, chosen by SNI when the port terminates TLS.
    pub servers: Vec<ServerChain>,
}

/// One Gateway server on a listener: its hosts, TLS, and the route table it uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerChain {
    /// `ns/gateway` and the server's index, for logs.
    pub source: String,
    /// The server's hosts without namespace (`*.example.com`), matched against SNI.
    pub hosts: Vec<String>,
    /// What the server speaks.
    pub protocol: ServerProtocol,
    /// TLS settings when the server terminates TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsContext>,
    /// Answer every request with a 301 to https (`tls.httpsRedirect`).
    pub https_redirect: bool,
    /// The route table of this server (HTTP and HTTPS servers).
    pub route_table: String,
    /// Routes of TCP, TLS and TLS-passthrough servers, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<L4Route>,
    /// The port carries PostgreSQL (`tcp-postgres`, `postgres`, appProtocol `postgresql`):
    /// a plaintext SSLRequest is answered before the ClientHello is read.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub postgres: bool,
}

/// A TCP or TLS route: where connections go, by SNI (passthrough) or by port and subnet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct L4Route {
    /// `ns/virtualservice#tls[0]`.
    pub name: String,
    /// SNI names the route accepts (passthrough); empty means any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    /// Destination addresses the route accepts; empty means any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// Weighted destinations.
    pub destinations: Vec<WeightedCluster>,
}

/// What a server speaks after any TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerProtocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge or upgrade).
    Http,
    /// HTTP over TLS (ALPN h2 and http/1.1).
    Https,
    /// TLS terminated here, then raw TCP to the upstream (`TLS` with SIMPLE or MUTUAL).
    Tls,
    /// TLS passed through untouched, routed by the SNI of the ClientHello.
    TlsPassthrough,
    /// Raw TCP.
    Tcp,
}

/// TLS termination settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsContext {
    /// SIMPLE (server certificate) or MUTUAL (client certificates verified too).
    pub mode: TlsMode,
    /// The server certificate and key.
    pub certificate: CertificateSource,
    /// The CA that signs client certificates (MUTUAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PemSource>,
    /// `TLSV1_2`, `TLSV1_3`; unset means the library's default (1.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    /// Upper bound on the version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_version: Option<String>,
    /// Allowed cipher suites (OpenSSL names); empty means the defaults.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// ALPN protocols offered: `h2`, `http/1.1`.
    pub alpn: Vec<String>,
}

/// TLS mode of a terminating server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Server certificate only.
    Simple,
    /// Client certificates required and verified.
    Mutual,
    /// Client certificates verified when presented.
    OptionalMutual,
}

/// Where a server certificate comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateSource {
    /// A `kubernetes.io/tls` Secret (credentialName), inline.
    Secret {
        /// `namespace/name` of the Secret.
        name: String,
        /// `tls.crt`.
        cert_pem: String,
        /// `tls.key`; never printed.
        key_pem: Redacted,
    },
    /// `serverCertificate` and `privateKey` files, read (and re-read on change) by the proxy.
    Files {
        /// Certificate chain file.
        cert_path: String,
        /// Private key file.
        key_path: String,
    },
}

/// PEM data: inline (from a Secret's `ca.crt`) or a file (`caCertificates`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PemSource {
    /// Inline PEM.
    Inline(String),
    /// A file path.
    File(String),
}

/// Secret bytes that are carried but never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted {} bytes]", self.0.len())
    }
}

impl Serialize for Redacted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("[redacted {} bytes]", self.0.len()))
    }
}

/// The virtual hosts of a server or port.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteTable {
    /// Virtual hosts, matched by the request's host in Envoy's order: exact, then the
    /// longest suffix wildcard, then `*`.
    pub virtual_hosts: Vec<VirtualHost>,
}

/// The routes for a set of domains.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VirtualHost {
    /// `host:port` style name, for dumps.
    pub name: String,
    /// Domains: `a.example.com`, `*.example.com`, `*`.
    pub domains: Vec<String>,
    /// Routes in order; the first that matches wins.
    pub routes: Vec<Route>,
}

/// One HTTP route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// The route's name, or `ns/virtualservice#index`.
    pub name: String,
    /// Alternatives: the route applies when any matches; empty matches everything.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    /// Forward, redirect or answer directly.
    pub action: RouteAction,
    /// Changes to the request before forwarding.
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    /// Changes to the response before returning it.
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
    /// URI and authority rewrites.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Whole-request timeout in milliseconds (none: no timeout, as Istio's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retry policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// Injected delays and aborts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Copies of requests sent elsewhere, fire and forget.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// CORS policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
}

/// Fault injection (`fault`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// Delay before forwarding: milliseconds and the percentage of requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<(u64, f64)>,
    /// Abort instead of forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// An injected error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultAbort {
    /// HTTP status to answer with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// gRPC status code to answer with (HTTP 200, `grpc-status` set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// Percentage of requests.
    pub percent: f64,
}

/// A mirror destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mirror {
    /// Cluster name.
    pub cluster: String,
    /// Percentage of requests copied.
    pub percent: f64,
}

/// CORS (`corsPolicy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CorsPolicy {
    /// Allowed origins.
    pub allow_origins: Vec<StringMatcher>,
    /// `Access-Control-Allow-Methods`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age` in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
    /// Preflights from origins that do not match go upstream (FORWARD, the default) or are
    /// answered without CORS headers (IGNORE).
    pub forward_unmatched_preflights: bool,
}

/// Conditions that must all hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteMatch {
    /// The path (without query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatcher>,
    /// Compare the path case-insensitively (exact and prefix).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    /// `http` or `https`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatcher>,
    /// The method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatcher>,
    /// The authority (Host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatcher>,
    /// Header conditions (names lower-cased).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcher>,
    /// Query parameter conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryMatcher>,
    /// The Gateway port the request arrived on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// How a string is compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatcher {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// An RE2 regex that must match the whole value.
    Regex(String),
}

/// A header condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderMatcher {
    /// Lower-case header name.
    pub name: String,
    /// The value condition; `None` means "present".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<StringMatcher>,
    /// True for `withoutHeaders`: the condition must not hold.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

/// A query parameter condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryMatcher {
    /// Parameter name.
    pub name: String,
    /// Value condition; `None` means "present".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<StringMatcher>,
}

/// What a matched route does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// Forward to one of the weighted clusters.
    Forward(Vec<WeightedCluster>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    DirectResponse {
        /// Status code.
        status: u16,
        /// Body, possibly empty.
        #[serde(skip_serializing_if = "String::is_empty")]
        body: String,
    },
}

/// A destination with its share of traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightedCluster {
    /// Cluster name.
    pub cluster: String,
    /// Relative weight.
    pub weight: u32,
    /// Header changes for requests to this destination.
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    /// Header changes for responses from this destination.
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}

/// A redirect answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Redirect {
    /// Replace the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replace the authority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replace the scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Replace the port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Status code (301 by default).
    pub code: u16,
}

/// Header changes: set (replace), add (append), remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderOps {
    /// Replace or create.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Append.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Remove.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Path and authority rewrites before forwarding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rewrite {
    /// Replace the matched prefix (or the whole path for an exact match) with this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Regex rewrite of the path: (pattern, replacement with `\1` groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<(String, String)>,
    /// Replace the authority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// Retries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub attempts: u32,
    /// Timeout per attempt in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// Conditions (`5xx`, `gateway-error`, `connect-failure`, ... and status codes).
    pub retry_on: Vec<String>,
}

/// An upstream service port (and subset).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    /// `outbound|80|v1|reviews.default.svc.cluster.local`.
    pub name: String,
    /// The service host.
    pub host: String,
    /// The service port.
    pub port: u32,
    /// The subset, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// How to speak to endpoints.
    pub protocol: UpstreamProtocol,
    /// Where to send requests.
    pub endpoints: Vec<Endpoint>,
    /// Connect timeout in milliseconds (10s by default, as Istio).
    pub connect_timeout_ms: u64,
    /// TCP idle timeout in milliseconds (`connectionPool.tcp.idleTimeout`, 1h by default).
    pub idle_timeout_ms: u64,
    /// Load balancing, circuit breakers and outlier detection.
    pub policy: crate::policy::ClusterPolicy,
    /// How connections to endpoints are made and kept.
    pub connections: ConnectionSettings,
}

/// Connection settings of a cluster (`connectionPool` and `h2UpgradePolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ConnectionSettings {
    /// TCP keepalive: idle time before probes, probe interval (seconds) and probe count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<(Option<u64>, Option<u64>, Option<u32>)>,
    /// Idle HTTP connections are closed after this long (`http.idleTimeout`, 1h by default).
    pub http_idle_timeout_ms: u64,
    /// Speak the client's HTTP version upstream (`http.useClientProtocol`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub use_client_protocol: bool,
    /// Requests per upstream HTTP/1.1 connection (`http.maxRequestsPerConnection`; 0 is
    /// unlimited).
    #[serde(skip_serializing_if = "is_zero")]
    pub max_requests_per_connection: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The protocol used towards endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 without TLS, prior knowledge (h2c): `http2-`, `grpc-` ports.
    Http2,
}

/// One upstream address.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    /// IP address or DNS name.
    pub address: String,
    /// Port.
    pub port: u16,
    /// `region/zone/subzone`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// The endpoint's values of the labels named by `failoverPriority`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
