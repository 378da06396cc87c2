//! What the Telemetry API changes of Istio's standard metrics for one proxy: metrics it
//! turns off and tags it removes or adds, resolved per metric and per side.

use serde::{Deserialize, Serialize};

use crate::expr::Expr;

/// One of Istio's standard metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Metric {
    /// `istio_requests_total`.
    RequestCount,
    /// `istio_request_duration_milliseconds`.
    RequestDuration,
    /// `istio_request_bytes`.
    RequestSize,
    /// `istio_response_bytes`.
    ResponseSize,
    /// `istio_tcp_connections_opened_total`.
    TcpOpenedConnections,
    /// `istio_tcp_connections_closed_total`.
    TcpClosedConnections,
    /// `istio_tcp_sent_bytes_total`.
    TcpSentBytes,
    /// `istio_tcp_received_bytes_total`.
    TcpReceivedBytes,
}

impl Metric {
    /// Every metric, in order.
    pub const ALL: [Metric; 8] = [
        Metric::RequestCount,
        Metric::RequestDuration,
        Metric::RequestSize,
        Metric::ResponseSize,
        Metric::TcpOpenedConnections,
        Metric::TcpClosedConnections,
        Metric::TcpSentBytes,
        Metric::TcpReceivedBytes,
    ];
}

/// How one metric differs from Istio's standard, as one side reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricOverride {
    /// The metric.
    pub metric: Metric,
    /// As the server reports it (`reporter="destination"`); else as the client.
    pub inbound: bool,
    /// Not recorded at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Tags removed, changed or added, by name, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagOverride>,
}

/// One tag's change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagOverride {
    /// The tag (`request_host`, `destination_canonical_service`).
    pub name: String,
    /// Its value; `None` removes the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Expr>,
}
