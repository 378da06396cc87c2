//! The one recorder: every HTTP request, every TCP connection and every connection refused
//! before routing passes through [`Recorder::record`], whether or not the access log is on.
//! It counts them (by kind and by response flag) and writes the access log entry when the
//! log is on. Metrics hook in here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::access_log::Entry;
use crate::flags::ResponseFlags;
use crate::metrics::{Counterpart, Metrics, PeerLabels, RequestSample};

/// What was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP request.
    Http,
    /// A TCP connection that was routed.
    Tcp,
    /// A connection closed before it was routed (TLS handshake failure, unknown SNI, a
    /// PostgreSQL preamble without TLS, no route).
    Refused,
}

/// The outcome of one request or connection.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What it was.
    pub kind: Kind,
    /// The status sent (0 for TCP).
    pub status: u16,
    /// Envoy's response flags.
    pub flags: ResponseFlags,
    /// Envoy's `response_code_details`.
    pub details: std::borrow::Cow<'static, str>,
    /// Who talked to whom, for the metrics; `None` when no destination was chosen.
    pub peer: Option<Arc<PeerLabels>>,
    /// The client as its connection shows it (labels the destination reports).
    pub downstream: Option<Counterpart>,
    /// A gRPC request.
    pub grpc: bool,
    /// The gRPC status of the response, when its headers carry one.
    pub grpc_status: Option<u16>,
    /// Milliseconds from arrival to the end of the response (or of the connection).
    pub duration_ms: f64,
    /// Bytes received from the client (request body, or TCP).
    pub request_bytes: u64,
    /// Bytes sent to the client (response body, or TCP).
    pub response_bytes: u64,
}

impl Outcome {
    /// An outcome with nothing measured yet.
    pub fn new(
        kind: Kind,
        status: u16,
        flags: ResponseFlags,
        details: std::borrow::Cow<'static, str>,
    ) -> Outcome {
        Outcome {
            kind,
            status,
            flags,
            details,
            peer: None,
            downstream: None,
            grpc: false,
            grpc_status: None,
            duration_ms: 0.0,
            request_bytes: 0,
            response_bytes: 0,
        }
    }
}

/// Counters of what the proxy served.
#[derive(Debug, Default)]
pub struct Counters {
    /// HTTP requests.
    pub http_requests: AtomicU64,
    /// HTTP requests answered with a 5xx.
    pub http_5xx: AtomicU64,
    /// TCP connections routed.
    pub tcp_connections: AtomicU64,
    /// Connections refused before routing.
    pub refused_connections: AtomicU64,
    /// Connections closed at once because the listener had its most.
    pub overflow_connections: AtomicU64,
    /// Downstream connections closed for their idle or request-headers timeout.
    pub idle_timeouts: AtomicU64,
}

/// Receives every outcome.
#[derive(Debug, Default)]
pub struct Recorder {
    /// What was counted.
    pub counters: Counters,
    /// Istio's standard metrics, when they are served.
    pub metrics: Option<Arc<Metrics>>,
}

impl Recorder {
    /// Records one outcome; `log` is the access log entry and where it goes, when the log
    /// is on.
    pub fn record(
        &self,
        outcome: Outcome,
        log: Option<(Entry, &crate::access_log::AccessLogger, bool)>,
    ) {
        let c = &self.counters;
        match outcome.kind {
            Kind::Http => {
                c.http_requests.fetch_add(1, Ordering::Relaxed);
                if outcome.status >= 500 {
                    c.http_5xx.fetch_add(1, Ordering::Relaxed);
                }
            }
            Kind::Tcp => {
                c.tcp_connections.fetch_add(1, Ordering::Relaxed);
            }
            Kind::Refused => {
                c.refused_connections.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(metrics) = &self.metrics {
            match (outcome.kind, outcome.peer.clone()) {
                (Kind::Http, Some(peer)) => metrics.request(RequestSample {
                    peer,
                    downstream: outcome.downstream,
                    grpc: outcome.grpc,
                    code: outcome.status,
                    grpc_status: outcome.grpc_status,
                    flags: outcome.flags,
                    duration_ms: outcome.duration_ms,
                    request_bytes: outcome.request_bytes,
                    response_bytes: outcome.response_bytes,
                }),
                (Kind::Tcp, Some(peer)) => metrics.tcp_closed(
                    peer,
                    outcome.downstream,
                    outcome.flags,
                    outcome.response_bytes,
                    outcome.request_bytes,
                ),
                _ => {}
            }
        }
        if let Some((mut entry, logger, json)) = log {
            entry.response_flags = outcome.flags.to_string();
            entry.response_code_details = outcome.details.into_owned();
            logger.log(entry, json);
        }
    }

    /// The counters in Envoy's `/stats` text form.
    pub fn stats(&self) -> String {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "http.downstream_rq_total: {}\nhttp.downstream_rq_5xx: {}\ntcp.downstream_cx_total: {}\nlistener.downstream_cx_refused: {}\nlistener.downstream_cx_overflow: {}\nhttp.downstream_cx_idle_timeout: {}\n",
            get(&c.http_requests),
            get(&c.http_5xx),
            get(&c.tcp_connections),
            get(&c.refused_connections),
            get(&c.overflow_connections),
            get(&c.idle_timeouts),
        )
    }
}
