//! Tracing: where a proxy sends its spans and how many traces it starts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A proxy's tracing, from the Telemetry resource that applies to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracing {
    /// The Zipkin collector (`host:port`), sent Zipkin v2 JSON.
    pub collector: String,
    /// The collector's path (`/api/v2/spans`).
    pub path: String,
    /// The percentage of requests without a sampling decision that start a sampled trace.
    pub sampling: f64,
    /// Spans are not sent (the trace context still is).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_span_reporting: bool,
    /// Tags every span carries (`customTags` with a literal value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}
