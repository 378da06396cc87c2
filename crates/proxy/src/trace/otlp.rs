//! Spans as OpenTelemetry's OTLP: an `ExportTraceServiceRequest`, sent over gRPC to
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` (a collector's 4317) or
//! POSTed as protobuf over HTTP (`/v1/traces`, 4318).
//!
//! The messages are the parts of OTLP's `trace/v1` and `collector/trace/v1` protos that a
//! proxy sends, with their field numbers (the shared ones are in [`crate::otlp`]); the
//! tests decode them with the official definitions (the `opentelemetry-proto` crate),
//! which the proxy does not link.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::Span;
use crate::otlp::{InstrumentationScope, KeyValue, Resource, attribute, scope};

/// The gRPC method spans go to.
pub const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`: the spans of one resource (one proxy).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

/// `ScopeSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<OtlpSpan>,
}

/// `Span`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OtlpSpan {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    /// `SpanKind`: 2 server, 3 client.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    /// W3C trace flags: 1 when sampled.
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

/// `Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// `StatusCode`: 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

const SPAN_KIND_SERVER: i32 = 2;
const SPAN_KIND_CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// One span in OTLP's form, with the tags every span carries (`extra`) as attributes.
pub fn span(span: &Span, extra: &BTreeMap<String, String>) -> OtlpSpan {
    // A later tag of the same name wins, as in the Zipkin form.
    let mut attributes: Vec<KeyValue> = Vec::new();
    let tags = span.tags.iter().map(|(k, v)| (*k, v.as_str()));
    let custom = span.custom.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let fixed = extra.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    for (k, v) in tags.chain(custom).chain(fixed) {
        match attributes.iter_mut().find(|a| a.key == k) {
            Some(a) => *a = attribute(k, v),
            None => attributes.push(attribute(k, v)),
        }
    }
    // A server error marks the span as failed, as OpenTelemetry's HTTP conventions do.
    let failed = span
        .tags
        .iter()
        .find(|(k, _)| *k == "http.status_code")
        .and_then(|(_, v)| v.parse::<u16>().ok())
        .is_some_and(|code| code >= 500);
    OtlpSpan {
        trace_id: span.context.trace_id.to_be_bytes().to_vec(),
        span_id: span.context.span_id.to_be_bytes().to_vec(),
        parent_span_id: span
            .context
            .parent_id
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        name: span.name.clone(),
        kind: if span.kind == "SERVER" {
            SPAN_KIND_SERVER
        } else {
            SPAN_KIND_CLIENT
        },
        start_time_unix_nano: nanos(span.start),
        end_time_unix_nano: nanos(span.start + span.duration.max(Duration::from_micros(1))),
        attributes,
        status: failed.then(|| Status {
            message: String::new(),
            code: STATUS_ERROR,
        }),
        flags: u32::from(span.context.sampled),
    }
}

/// A batch of spans as one export request: a resource per service (`service.name`).
pub fn request(spans: &[Span], extra: &BTreeMap<String, String>) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<&str, Vec<OtlpSpan>> = BTreeMap::new();
    for s in spans {
        by_service
            .entry(s.service.as_str())
            .or_default()
            .push(span(s, extra));
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![attribute("service.name", service)],
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                }],
            })
            .collect(),
    }
}
