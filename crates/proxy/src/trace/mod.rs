//! Tracing, as Envoy's tracers do it for Istio: each request joins the trace its headers
//! carry (W3C `traceparent`, B3 multi-header `x-b3-*`, or B3 single `b3`), or starts one
//! (sampled at the configured percentage); the proxy's hop is one span, whose id goes
//! upstream as the parent, in both W3C and B3 headers. Finished spans of sampled traces
//! are sent to the collector in batches, by a task of their own, as Zipkin v2 JSON
//! ([`zipkin`]) or OTLP over gRPC or HTTP ([`otlp`]): sending never holds a request up,
//! and a collector that is away costs only the spans, which are counted.

pub mod otlp;
pub mod zipkin;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use meshwork_resources::trace::{Protocol, Tracing};
use prost::Message;
use tokio::sync::mpsc;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3_TRACE: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_SINGLE: HeaderName = HeaderName::from_static("b3");

/// The most spans waiting to be sent; past it, new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// The most spans in one batch.
const BATCH: usize = 256;
/// How long a span may wait for its batch.
const FLUSH: Duration = Duration::from_millis(500);

/// Where one request stands in its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace (128 bits).
    pub trace_id: u128,
    /// This hop's span.
    pub span_id: u64,
    /// The span of the caller, when it sent one.
    pub parent_id: Option<u64>,
    /// Whether the trace is recorded.
    pub sampled: bool,
}

fn hex_u128(s: &str) -> Option<u128> {
    // B3 trace ids may be 64 bits (16 hex digits).
    if s.len() != 32 && s.len() != 16 {
        return None;
    }
    u128::from_str_radix(s, 16).ok().filter(|n| *n != 0)
}

fn hex_u64(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok().filter(|n| *n != 0)
}

/// The trace context a request's headers carry: (trace id, caller's span, sampled —
/// `None` when the caller left the decision to us).
pub fn extract(headers: &HeaderMap) -> Option<(u128, u64, Option<bool>)> {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(tp) = text(&TRACEPARENT) {
        // version-traceid-parentid-flags
        let parts: Vec<&str> = tp.trim().split('-').collect();
        if let [version, trace, parent, flags] = parts.as_slice()
            && version.len() == 2
            && *version != "ff"
            && trace.len() == 32
            && flags.len() == 2
            && let (Some(t), Some(p), Ok(f)) = (
                hex_u128(trace),
                hex_u64(parent),
                u8::from_str_radix(flags, 16),
            )
        {
            return Some((t, p, Some(f & 1 == 1)));
        }
    }
    if let (Some(trace), Some(span)) = (text(&B3_TRACE), text(&B3_SPAN))
        && let (Some(t), Some(s)) = (hex_u128(trace), hex_u64(span))
    {
        let sampled = text(&B3_SAMPLED).map(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        return Some((t, s, sampled));
    }
    if let Some(single) = text(&B3_SINGLE) {
        // traceid-spanid[-sampled[-parentspanid]]
        let parts: Vec<&str> = single.trim().split('-').collect();
        if parts.len() >= 2
            && let (Some(t), Some(s)) = (hex_u128(parts[0]), hex_u64(parts[1]))
        {
            let sampled = parts.get(2).map(|v| *v == "1" || *v == "d");
            return Some((t, s, sampled));
        }
    }
    None
}

/// A random id that is never 0.
fn random_u64() -> u64 {
    loop {
        let n = fastrand::u64(..);
        if n != 0 {
            return n;
        }
    }
}

impl TraceContext {
    /// This hop's context: joined from the headers, or a new trace sampled at
    /// `sampling` percent.
    pub fn start(headers: &HeaderMap, sampling: f64) -> TraceContext {
        let decide = || fastrand::f64() * 100.0 < sampling;
        match extract(headers) {
            Some((trace_id, parent, sampled)) => TraceContext {
                trace_id,
                span_id: random_u64(),
                parent_id: Some(parent),
                sampled: sampled.unwrap_or_else(decide),
            },
            None => TraceContext {
                trace_id: (u128::from(random_u64()) << 64) | u128::from(random_u64()),
                span_id: random_u64(),
                parent_id: None,
                sampled: decide(),
            },
        }
    }

    /// Sets the headers the next hop joins: W3C and B3, with this hop's span as parent.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let flags = if self.sampled { "01" } else { "00" };
        let put = |h: &mut HeaderMap, name: HeaderName, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        };
        put(
            headers,
            TRACEPARENT,
            format!("00-{:032x}-{:016x}-{flags}", self.trace_id, self.span_id),
        );
        put(headers, B3_TRACE, format!("{:032x}", self.trace_id));
        put(headers, B3_SPAN, format!("{:016x}", self.span_id));
        match self.parent_id {
            Some(p) => put(headers, B3_PARENT, format!("{p:016x}")),
            None => {
                headers.remove(B3_PARENT);
            }
        }
        put(
            headers,
            B3_SAMPLED,
            if self.sampled { "1" } else { "0" }.into(),
        );
        headers.remove(B3_SINGLE);
    }
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct Span {
    pub context: TraceContext,
    /// `reviews.default.svc.cluster.local:9080/*`.
    pub name: String,
    /// `SERVER` for a sidecar's inbound hop, else `CLIENT`.
    pub kind: &'static str,
    pub start: SystemTime,
    pub duration: Duration,
    /// The proxy's service: `istio-ingressgateway.istio-system`.
    pub service: String,
    pub tags: Vec<(&'static str, String)>,
    /// Custom tags from the request's headers.
    pub custom: Vec<(String, String)>,
}

/// A request's span while it is served: its context went upstream; what the request
/// said is kept only when the trace is sampled.
pub struct Pending {
    tracer: Arc<Tracer>,
    context: TraceContext,
    method: String,
    url: String,
    start: SystemTime,
    custom: Vec<(String, String)>,
}

/// A span whose response has been given, waiting for its end.
pub struct Answered {
    tracer: Arc<Tracer>,
    span: Span,
}

impl Pending {
    /// Joins or starts the request's trace and tells the next hop; the pending span when
    /// the trace is sampled and spans of this side (`inbound`: served as the server) are
    /// reported.
    pub fn begin(
        tracer: &Arc<Tracer>,
        parts: &mut http::request::Parts,
        (scheme, authority): (&str, &str),
        inbound: bool,
    ) -> Option<Pending> {
        let context = TraceContext::start(&parts.headers, tracer.settings.sampling);
        context.inject(&mut parts.headers);
        let reported =
            !tracer.settings.disable_span_reporting && tracer.settings.mode.applies(inbound);
        if !context.sampled || !reported {
            return None;
        }
        let custom = tracer
            .settings
            .header_tags
            .iter()
            .map(|(tag, (header, default))| {
                let value = parts
                    .headers
                    .get(header.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(|| default.clone(), str::to_string);
                (tag.clone(), value)
            })
            .collect();
        Some(Pending {
            tracer: tracer.clone(),
            context,
            method: parts.method.to_string(),
            url: format!(
                "{scheme}://{authority}{}",
                parts.uri.path_and_query().map_or("/", |p| p.as_str())
            ),
            start: SystemTime::now(),
            custom,
        })
    }

    /// The span with what the response says: reported by `node`, the server side when
    /// `inbound`.
    pub fn answered(
        self,
        node: &meshwork_resources::Node,
        inbound: bool,
        status: u16,
        cluster: Option<&str>,
        authority: &str,
    ) -> Answered {
        // The canonical service, as Istio names spans' services: its labels, else the
        // workload.
        let name = [
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ]
        .iter()
        .find_map(|k| node.labels.get(*k).cloned())
        .unwrap_or_else(|| {
            if node.workload_name.is_empty() {
                node.id.clone()
            } else {
                node.workload_name.clone()
            }
        });
        let span = Span {
            context: self.context,
            name: format!("{authority}/*"),
            kind: if inbound { "SERVER" } else { "CLIENT" },
            start: self.start,
            duration: Duration::ZERO,
            service: format!("{name}.{}", node.namespace),
            tags: vec![
                ("component", "proxy".into()),
                ("http.method", self.method),
                ("http.url", self.url),
                ("http.status_code", status.to_string()),
                ("upstream_cluster", cluster.unwrap_or("-").to_string()),
                ("node_id", node.id.clone()),
                ("istio.namespace", node.namespace.clone()),
                ("istio.canonical_service", name),
                ("istio.mesh_id", node.trust_domain.clone()),
            ],
            custom: self.custom,
        };
        Answered {
            tracer: self.tracer,
            span,
        }
    }
}

impl Answered {
    /// Ends the span (its response has ended, with these flags) and hands it on.
    pub fn finish(mut self, flags: crate::flags::ResponseFlags) {
        self.span.duration = self.span.start.elapsed().unwrap_or_default();
        self.span.tags.push(("response_flags", flags.to_string()));
        self.tracer.finish(self.span);
    }
}

/// The spans of one proxy, on their way to the collector.
#[derive(Debug)]
pub struct Tracer {
    /// The settings it was made with.
    pub settings: Tracing,
    /// The tags of every span: the literal ones, and the environment's as the proxy
    /// started with it.
    pub fixed: std::collections::BTreeMap<String, String>,
    queue: mpsc::Sender<Span>,
    /// Spans sent.
    pub sent: Arc<AtomicU64>,
    /// Spans dropped: the queue was full or the collector did not take them.
    pub dropped: Arc<AtomicU64>,
}

impl Tracer {
    /// A tracer sending to `settings.collector` (its task runs until the tracer goes).
    pub fn new(settings: Tracing) -> Tracer {
        let (queue, spans) = mpsc::channel(QUEUE);
        let sent = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut fixed = settings.tags.clone();
        for (tag, (variable, default)) in &settings.environment_tags {
            fixed.insert(
                tag.clone(),
                std::env::var(variable).unwrap_or_else(|_| default.clone()),
            );
        }
        tokio::spawn(export(
            settings.clone(),
            fixed.clone(),
            spans,
            sent.clone(),
            dropped.clone(),
        ));
        Tracer {
            settings,
            fixed,
            queue,
            sent,
            dropped,
        }
    }

    /// Hands a finished span to the sender; never waits.
    pub fn finish(&self, span: Span) {
        if self.settings.disable_span_reporting || !span.context.sampled {
            return;
        }
        if self.queue.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends spans in batches until the tracer is gone.
async fn export(
    settings: Tracing,
    fixed: std::collections::BTreeMap<String, String>,
    mut spans: mpsc::Receiver<Span>,
    sent: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
) {
    let mut grpc = (settings.protocol == Protocol::OtlpGrpc)
        .then(|| crate::otlp::GrpcClient::new(&settings.collector))
        .flatten();
    while let Some(batch) = crate::otlp::next_batch(&mut spans, BATCH, FLUSH).await {
        let n = batch.len() as u64;
        let result = match settings.protocol {
            Protocol::Zipkin => {
                let body = zipkin::body(&batch, &fixed);
                post(&settings, "application/json", body).await
            }
            Protocol::OtlpHttp => {
                let body = otlp::request(&batch, &fixed).encode_to_vec();
                post(&settings, "application/x-protobuf", body).await
            }
            Protocol::OtlpGrpc => match &mut grpc {
                Some(client) => {
                    let request = otlp::request(&batch, &fixed);
                    client.export(otlp::EXPORT, request).await
                }
                None => Err(format!("{} is not a collector address", settings.collector)),
            },
        };
        match result {
            Ok(()) => sent.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(collector = %settings.collector, "spans dropped: {e}");
                dropped.fetch_add(n, Ordering::Relaxed)
            }
        };
    }
}

/// POSTs one batch to the collector.
async fn post(settings: &Tracing, content_type: &str, body: Vec<u8>) -> Result<(), String> {
    let sending = async {
        let mut sender = crate::upstream::http1_to(&settings.collector).await?;
        let request = http::Request::post(settings.path.as_str())
            .header(http::header::HOST, settings.collector.as_str())
            .header(http::header::CONTENT_TYPE, content_type)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {}", response.status()))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), sending)
        .await
        .map_err(|_| "the collector did not answer".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn w3c_and_both_b3_forms_are_joined() {
        let t = 0x4bf92f3577b34da6a3ce929d0e0e4736u128;
        let p = 0x00f067aa0ba902b7u64;
        let w3c = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        assert_eq!(extract(&w3c), Some((t, p, Some(true))));
        let b3 = headers(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]);
        assert_eq!(extract(&b3), Some((t, p, Some(false))));
        let single = headers(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")]);
        assert_eq!(extract(&single), Some((t, p, Some(true))));
        let undecided = headers(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7")]);
        assert_eq!(extract(&undecided), Some((t, p, None)));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(extract(&headers(&[("traceparent", bad)])), None, "{bad}");
        }
    }

    #[test]
    fn the_next_hop_is_told_this_span_as_its_parent() {
        let incoming = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let ctx = TraceContext::start(&incoming, 0.0);
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.parent_id, Some(0x00f067aa0ba902b7));
        assert!(ctx.sampled, "the caller's decision holds");
        let mut out = incoming.clone();
        out.insert("b3", HeaderValue::from_static("stale"));
        ctx.inject(&mut out);
        assert_eq!(extract(&out), Some((ctx.trace_id, ctx.span_id, Some(true))));
        assert_eq!(out["x-b3-parentspanid"], "00f067aa0ba902b7");
        assert!(out.get("b3").is_none());
        // Without a context: a new trace, sampled by the percentage.
        let fresh = TraceContext::start(&HeaderMap::new(), 100.0);
        assert!(fresh.sampled && fresh.parent_id.is_none());
        assert!(!TraceContext::start(&HeaderMap::new(), 0.0).sampled);
    }
}
