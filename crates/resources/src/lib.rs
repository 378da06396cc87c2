//! The per-proxy configuration as addressable resources: what the control plane compiles
//! for one proxy, what it streams, what the proxy applies resource by resource, and what
//! `/config_dump` prints. A leaf crate (serde only), so the data plane builds without the
//! Istio API.
//!
//! Resources refer to each other by name: a listener's server names its route table and
//! its secrets, a route names clusters, an endpoint set names its cluster. Private keys
//! live only in [`secret::Secret`]s; [`ProxyConfig::redacted`] is what admin pages show.
#![forbid(unsafe_code)]

pub mod authorization;
pub mod cluster;
pub mod dns;
pub mod endpoint;
pub mod expr;
pub mod jwt;
pub mod listener;
pub mod log_format;
pub mod metric;
pub mod node;
pub mod retry;
pub mod route;
pub mod secret;
pub mod trace;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use cluster::Cluster;
pub use endpoint::{Endpoint, EndpointSet};
pub use listener::Listener;
pub use node::{Node, Role};
pub use route::RouteTable;
pub use secret::Secret;

/// Everything one proxy runs: its identity and its resources, each by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// Who the proxy is.
    pub node: Node,
    /// Listeners, by name (`0.0.0.0_8080`).
    #[serde(default)]
    pub listeners: BTreeMap<String, Listener>,
    /// Route tables, by name (`http.8080`, `https.443.https.public.istio-system`).
    #[serde(default)]
    pub route_tables: BTreeMap<String, RouteTable>,
    /// Upstream clusters, by Istio's name (`outbound|80|v1|reviews.default.svc.cluster.local`).
    #[serde(default)]
    pub clusters: BTreeMap<String, Cluster>,
    /// Endpoint sets, by the name of their cluster.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointSet>,
    /// Certificates, keys and trusted CAs, by name (`kubernetes://ns/name`,
    /// `file-cert:CERT~KEY`, `file-root:CA`).
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    /// Where and how to write the access log, when it is on: one for both sides, or one
    /// for each (their modes do not overlap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logs: Vec<AccessLog>,
    /// The AuthorizationPolicies that apply to the proxy, in no particular order
    /// (evaluation is DENY, then ALLOW).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization: Vec<authorization::AuthorizationPolicy>,
    /// The RequestAuthentication rules that apply to the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_authentication: Vec<jwt::JwtRule>,
    /// The external authorizer of the proxy's CUSTOM policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_authz: Option<authorization::ExtAuthz>,
    /// What the DNS proxy answers for, for a sidecar whose traffic is captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<dns::NameTable>,
    /// Tracing, when a Telemetry resource (or the mesh's default providers) turns it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<trace::Tracing>,
    /// How Istio's standard metrics differ here, from Telemetry resources' `metrics`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<metric::MetricOverride>,
    /// How requests are read before they are authorized and routed (mesh config).
    #[serde(default, skip_serializing_if = "HttpOptions::is_default")]
    pub http: HttpOptions,
}

/// How a proxy reads requests before it authorizes and routes them, from the mesh
/// config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpOptions {
    /// `pathNormalization`.
    #[serde(default, skip_serializing_if = "PathNormalization::is_base")]
    pub path_normalization: PathNormalization,
    /// Proxies in front of a gateway whose `X-Forwarded-For` entries it trusts
    /// (`gatewayTopology.numTrustedProxies`): the client is that many entries from the
    /// right.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_trusted_proxies: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl HttpOptions {
    fn is_default(&self) -> bool {
        *self == HttpOptions::default()
    }
}

/// How paths are normalized before matching (Istio's `pathNormalization`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// As received.
    None,
    /// RFC 3986: percent-encoded unreserved characters decoded, `.` and `..` segments
    /// resolved (also when their dots are encoded).
    #[default]
    Base,
    /// BASE, and repeated slashes merged.
    MergeSlashes,
    /// `%2F` and `%5C` decoded (a backslash is a slash), then MERGE_SLASHES.
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    fn is_base(&self) -> bool {
        *self == PathNormalization::Base
    }
}

impl ProxyConfig {
    /// The access log of requests the proxy serves as the server (`inbound`) or the
    /// client.
    pub fn access_log(&self, inbound: bool) -> Option<&AccessLog> {
        self.access_logs.iter().find(|l| l.mode.applies(inbound))
    }

    /// The same config with every private key replaced by its length: what admin pages
    /// and `proxy-config` show.
    pub fn redacted(&self) -> ProxyConfig {
        let mut out = self.clone();
        for s in out.secrets.values_mut() {
            s.redact();
        }
        out
    }
}

/// The kinds of resource a proxy config holds, as they are named in updates and rejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    /// A [`Listener`].
    Listener,
    /// A [`RouteTable`].
    RouteTable,
    /// A [`Cluster`].
    Cluster,
    /// An [`EndpointSet`].
    EndpointSet,
    /// A [`Secret`].
    Secret,
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResourceType::Listener => "listener",
            ResourceType::RouteTable => "route table",
            ResourceType::Cluster => "cluster",
            ResourceType::EndpointSet => "endpoint set",
            ResourceType::Secret => "secret",
        })
    }
}

/// Access log settings (from the mesh config's `accessLogFile` and `accessLogEncoding`, or
/// the Telemetry API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessLog {
    /// `/dev/stdout` or a file path.
    pub path: String,
    /// One JSON object per line (`JSON`) or Envoy's text format (`TEXT`).
    pub json: bool,
    /// Only entries for which this holds are written (Telemetry's `filter.expression`,
    /// such as `response.code >= 400`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<expr::Expr>,
    /// Which side's requests are logged (Telemetry's `match.mode`).
    #[serde(default, skip_serializing_if = "Mode::is_both")]
    pub mode: Mode,
    /// The provider's own format (`logFormat`); Istio's text or JSON default without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<log_format::LogFormat>,
    /// Sent to an OpenTelemetry collector instead of written (`envoyOtelAls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel: Option<OtelLogs>,
}

/// Access logs sent over OTLP to a collector: the line (in the log's text format) is each
/// record's body, these labels its attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtelLogs {
    /// The collector, `host:port`.
    pub collector: String,
    /// The resource's `log_name`.
    pub log_name: String,
    /// Attributes, each a format (`logFormat.labels`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, Vec<log_format::Segment>)>,
}

/// Which requests a telemetry setting applies to, by who reports them (Istio's
/// `WorkloadMode`): a proxy is the client of what it sends (a gateway's requests, a
/// sidecar's outbound) and the server of what its workload is sent (a sidecar's inbound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Both.
    #[default]
    ClientAndServer,
    /// Requests the proxy sends (`reporter="source"`).
    Client,
    /// Requests the proxy's workload is sent (`reporter="destination"`).
    Server,
}

impl Mode {
    fn is_both(&self) -> bool {
        *self == Mode::ClientAndServer
    }

    /// Whether the setting applies to a request the proxy serves as the server
    /// (`inbound`) or the client.
    pub fn applies(self, inbound: bool) -> bool {
        match self {
            Mode::ClientAndServer => true,
            Mode::Client => !inbound,
            Mode::Server => inbound,
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

#[cfg(test)]
mod tests;
