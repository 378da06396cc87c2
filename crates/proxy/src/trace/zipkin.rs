//! Spans as Zipkin v2 JSON, the body Jaeger's and Zipkin's collectors take on
//! `/api/v2/spans`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::Span;

/// One span as Zipkin v2 JSON, with the tags every span carries (`extra`).
pub fn span(span: &Span, extra: &BTreeMap<String, String>) -> serde_json::Value {
    let mut tags = serde_json::Map::new();
    for (k, v) in &span.tags {
        tags.insert((*k).into(), v.clone().into());
    }
    for (k, v) in &span.custom {
        tags.insert(k.clone(), v.clone().into());
    }
    for (k, v) in extra {
        tags.insert(k.clone(), v.clone().into());
    }
    let micros = |d: Duration| d.as_micros() as u64;
    let mut json = serde_json::json!({
        "traceId": format!("{:032x}", span.context.trace_id),
        "id": format!("{:016x}", span.context.span_id),
        "name": span.name,
        "kind": span.kind,
        "timestamp": micros(span.start.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()),
        "duration": micros(span.duration).max(1),
        "localEndpoint": {"serviceName": span.service},
        "tags": tags,
    });
    if let Some(p) = span.context.parent_id {
        json["parentId"] = format!("{p:016x}").into();
    }
    json
}

/// A batch of spans: the JSON array a collector takes.
pub fn body(spans: &[Span], extra: &BTreeMap<String, String>) -> Vec<u8> {
    let spans: Vec<serde_json::Value> = spans.iter().map(|s| span(s, extra)).collect();
    serde_json::to_vec(&spans).unwrap_or_default()
}
