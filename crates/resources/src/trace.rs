//! Tracing: where a proxy sends its spans and how many traces it starts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Zipkin v2 JSON, POSTed to the path (Jaeger's collector takes it on 9411).
    #[default]
    Zipkin,
    /// OTLP over gRPC (`TraceService/Export`, an OpenTelemetry collector's 4317).
    OtlpGrpc,
    /// OTLP over HTTP: protobuf POSTed to the path (`/v1/traces`, port 4318).
    OtlpHttp,
}

impl Protocol {
    fn is_zipkin(&self) -> bool {
        *self == Protocol::Zipkin
    }
}

fn is_both(mode: &crate::Mode) -> bool {
    *mode == crate::Mode::ClientAndServer
}

/// A proxy's tracing, from the Telemetry resource that applies to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracing {
    /// The collector (`host:port`).
    pub collector: String,
    /// What the collector speaks.
    #[serde(default, skip_serializing_if = "Protocol::is_zipkin")]
    pub protocol: Protocol,
    /// The collector's path (`/api/v2/spans`, `/v1/traces`; unused over gRPC).
    pub path: String,
    /// The percentage of requests without a sampling decision that start a sampled trace.
    pub sampling: f64,
    /// Spans are not sent (the trace context still is).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_span_reporting: bool,
    /// Whose requests get spans (Telemetry's `match.mode`); the context goes on for all.
    #[serde(default, skip_serializing_if = "is_both")]
    pub mode: crate::Mode,
    /// Tags every span carries (`customTags` with a literal value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Tags from a request header (`customTags` `header`): tag, then the header's name and
    /// the value when it is absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header_tags: BTreeMap<String, (String, String)>,
    /// Tags from the proxy's environment (`customTags` `environment`): tag, then the
    /// variable and the value when it is unset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_tags: BTreeMap<String, (String, String)>,
}
