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
    /// Tags from a request header (`customTags` `header`): tag, then the header's name and
    /// the value when it is absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header_tags: BTreeMap<String, (String, String)>,
    /// Tags from the proxy's environment (`customTags` `environment`): tag, then the
    /// variable and the value when it is unset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_tags: BTreeMap<String, (String, String)>,
}
