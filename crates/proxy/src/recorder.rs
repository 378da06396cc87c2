//! The one recorder: every HTTP request, every TCP connection and every connection refused
//! before routing passes through [`Recorder::record`], whether or not the access log is on.
//! It counts them (by kind and by response flag), counts Istio's metrics, and writes the
//! access log entry when a log is on for that side and its filter holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use meshwork_resources::expr::{Attribute, Attributes, Value};
use meshwork_resources::log_format::LogFormat;
use meshwork_resources::{AccessLog, ProxyConfig};

use crate::access_log::{AccessLogger, Entry};
use crate::flags::ResponseFlags;
use crate::metrics::{Counterpart, Metrics, Overrides, PeerLabels, RequestSample};
use crate::otel_log::OtelLogger;

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

/// What the Telemetry API asks of one proxy's records: its access logs and how its
/// metrics differ, resolved when its config is applied.
#[derive(Debug, Default)]
pub struct Telemetry {
    access_logs: Vec<AccessLog>,
    /// The metric overrides, by metric and side.
    pub metrics: Overrides,
    /// The request headers the expressions read: only these are kept.
    pub request_headers: Vec<String>,
    /// The response headers they read.
    pub response_headers: Vec<String>,
}

impl Telemetry {
    /// The telemetry of `config`.
    pub fn new(config: &ProxyConfig) -> Telemetry {
        let (mut request, mut response) = (Vec::new(), Vec::new());
        let expressions = config
            .access_logs
            .iter()
            .filter_map(|l| l.filter.as_ref())
            .chain(
                config
                    .metrics
                    .iter()
                    .flat_map(|m| m.tags.iter().filter_map(|t| t.value.as_ref())),
            );
        for e in expressions {
            e.request_headers(&mut request);
            e.response_headers(&mut response);
        }
        let otel_labels: Vec<LogFormat> = config
            .access_logs
            .iter()
            .filter_map(|l| l.otel.as_ref())
            .map(|o| LogFormat::Labels(o.labels.clone()))
            .collect();
        let formats = config.access_logs.iter().filter_map(|l| l.format.as_ref());
        for format in formats.chain(&otel_labels) {
            let (req, resp) = format.headers();
            request.extend(req.into_iter().filter(|h| !h.starts_with(':')));
            response.extend(resp);
        }
        let owned = |mut v: Vec<&str>| {
            v.sort_unstable();
            v.dedup();
            v.into_iter().map(str::to_string).collect()
        };
        Telemetry {
            access_logs: config.access_logs.clone(),
            metrics: Overrides::new(&config.metrics),
            request_headers: owned(request),
            response_headers: owned(response),
        }
    }

    /// The access logs of requests served as the server (`inbound`) or the client.
    pub fn access_logs(&self, inbound: bool) -> impl Iterator<Item = &AccessLog> {
        self.access_logs
            .iter()
            .filter(move |l| l.mode.applies(inbound))
    }

    /// Whether records of this side need an [`Entry`]: a log is on, or metric tags may
    /// read it.
    pub fn wants_entry(&self, inbound: bool) -> bool {
        self.access_logs(inbound).next().is_some() || !self.metrics.is_empty()
    }

    /// The headers of `headers` that expressions read, for [`crate::access_log::Facts`].
    pub fn keep(names: &[String], headers: &http::HeaderMap) -> Vec<(String, String)> {
        names
            .iter()
            .filter_map(|n| {
                let v = headers.get(n.as_str())?.to_str().ok()?;
                Some((n.clone(), v.to_string()))
            })
            .collect()
    }
}

/// A finished request or connection, as expressions read it.
pub struct Finished<'a> {
    /// Its record.
    pub entry: &'a Entry,
    /// Its outcome, once it has one.
    pub outcome: Option<&'a Outcome>,
}

impl Attributes for Finished<'_> {
    fn attribute(&self, attribute: Attribute) -> Option<Value> {
        let e = self.entry;
        let text = |s: &str| Some(Value::Str(s.to_string()));
        let int = |n: u64| Some(Value::Int(n as i64));
        let http = e.method != "-";
        match attribute {
            Attribute::RequestMethod if http => text(&e.method),
            Attribute::RequestPath if http => text(&e.path),
            Attribute::RequestUrlPath if http => text(e.path.split('?').next().unwrap_or("")),
            Attribute::RequestHost if http => text(&e.authority),
            Attribute::RequestScheme if http => text(e.facts.scheme),
            Attribute::RequestProtocol if http => text(&e.protocol),
            Attribute::RequestId if http => text(&e.request_id),
            Attribute::RequestUserAgent => e.user_agent.as_deref().and_then(text),
            Attribute::RequestReferer => self.request_header("referer").and_then(text),
            Attribute::RequestSize if http => int(e.bytes_received),
            Attribute::RequestDuration => {
                let ms = self.outcome.map_or(e.duration as f64, |o| o.duration_ms);
                Some(Value::Duration((ms * 1e6) as i64))
            }
            Attribute::ResponseCode if http => int(u64::from(e.response_code)),
            Attribute::ResponseCodeDetails => self.outcome.and_then(|o| text(&o.details)),
            Attribute::ResponseGrpcStatus => self
                .outcome
                .and_then(|o| o.grpc_status)
                .and_then(|s| int(u64::from(s))),
            Attribute::ResponseSize if http => int(e.bytes_sent),
            Attribute::SourceAddress => text(
                &e.downstream_remote_address
                    .parse::<std::net::SocketAddr>()
                    .ok()?
                    .ip()
                    .to_string(),
            ),
            Attribute::SourcePort => int(u64::from(
                e.downstream_remote_address
                    .parse::<std::net::SocketAddr>()
                    .ok()?
                    .port(),
            )),
            Attribute::DestinationAddress => text(&e.facts.destination?.ip().to_string()),
            Attribute::DestinationPort => int(u64::from(e.facts.destination?.port())),
            Attribute::ConnectionMtls => Some(Value::Bool(e.facts.peer_identity.is_some())),
            Attribute::ConnectionRequestedServerName => {
                e.requested_server_name.as_deref().and_then(text)
            }
            Attribute::ConnectionPeerUri => e.facts.peer_identity.as_deref().and_then(text),
            Attribute::UpstreamAddress => e.upstream_host.as_deref().and_then(text),
            Attribute::XdsClusterName => e.upstream_cluster.as_deref().and_then(text),
            Attribute::XdsRouteName => e.route_name.as_deref().and_then(text),
            _ => None,
        }
    }

    fn request_header(&self, name: &str) -> Option<&str> {
        let facts = &self.entry.facts;
        facts
            .request_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn response_header(&self, name: &str) -> Option<&str> {
        let facts = &self.entry.facts;
        facts
            .response_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Receives every outcome.
#[derive(Debug, Default)]
pub struct Recorder {
    /// What was counted.
    pub counters: Counters,
    /// Istio's standard metrics, when they are served.
    pub metrics: Option<Arc<Metrics>>,
    /// The access log writers, by path.
    loggers: RwLock<HashMap<String, AccessLogger>>,
    /// The OpenTelemetry access loggers, by collector and log name (a few at most).
    otel_loggers: RwLock<Vec<(String, String, OtelLogger)>>,
}

impl Recorder {
    /// A recorder that counts Istio's metrics in `metrics`, when given.
    pub fn with_metrics(metrics: Option<Arc<Metrics>>) -> Recorder {
        Recorder {
            metrics,
            ..Recorder::default()
        }
    }

    /// Records one outcome, with its record (`entry`) when `telemetry` wanted one.
    pub fn record(&self, outcome: Outcome, entry: Option<Entry>, telemetry: &Telemetry) {
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
        let finished = entry.as_ref().map(|entry| Finished {
            entry,
            outcome: Some(&outcome),
        });
        let attributes: Option<&dyn Attributes> = finished.as_ref().map(|f| f as _);
        if let Some(metrics) = &self.metrics {
            match (outcome.kind, outcome.peer.clone()) {
                (Kind::Http, Some(peer)) => metrics.request(
                    RequestSample {
                        peer,
                        downstream: outcome.downstream.clone(),
                        grpc: outcome.grpc,
                        code: outcome.status,
                        grpc_status: outcome.grpc_status,
                        flags: outcome.flags,
                        duration_ms: outcome.duration_ms,
                        request_bytes: outcome.request_bytes,
                        response_bytes: outcome.response_bytes,
                    },
                    &telemetry.metrics,
                    attributes,
                ),
                (Kind::Tcp, Some(peer)) => metrics.tcp_closed(
                    peer,
                    outcome.downstream.clone(),
                    outcome.flags,
                    outcome.response_bytes,
                    outcome.request_bytes,
                    &telemetry.metrics,
                    attributes,
                ),
                _ => {}
            }
        }
        let Some(mut entry) = entry else {
            return;
        };
        entry.response_flags = outcome.flags.to_string();
        entry.response_code_details = outcome.details.to_string();
        let finished = Finished {
            entry: &entry,
            outcome: Some(&outcome),
        };
        for log in telemetry.access_logs(entry.facts.inbound) {
            if log.filter.as_ref().is_some_and(|f| !f.holds(&finished)) {
                continue;
            }
            if let Some(otel) = &log.otel {
                if let Some(logger) = self.otel_logger(otel) {
                    logger.log(
                        entry.line(log.format.as_ref(), false),
                        entry.labels(&otel.labels),
                    );
                }
            } else if let Some(logger) = self.access_logger(&log.path) {
                logger.log(entry.line(log.format.as_ref(), log.json));
            }
        }
    }

    /// The OpenTelemetry logger for `otel`'s collector and log name, started on first use.
    fn otel_logger(&self, otel: &meshwork_resources::OtelLogs) -> Option<OtelLogger> {
        let find = |loggers: &[(String, String, OtelLogger)]| {
            loggers
                .iter()
                .find(|(c, n, _)| *c == otel.collector && *n == otel.log_name)
                .map(|(_, _, l)| l.clone())
        };
        if let Some(l) = find(&self.otel_loggers.read().ok()?) {
            return Some(l);
        }
        let mut loggers = self.otel_loggers.write().ok()?;
        if let Some(l) = find(&loggers) {
            return Some(l);
        }
        let logger = OtelLogger::start(&otel.collector, &otel.log_name)?;
        loggers.push((
            otel.collector.clone(),
            otel.log_name.clone(),
            logger.clone(),
        ));
        Some(logger)
    }

    /// The OpenTelemetry loggers' counts of entries sent and dropped.
    pub fn otel_counts(&self) -> (u64, u64) {
        let loggers = self.otel_loggers.read().unwrap_or_else(|e| e.into_inner());
        loggers.iter().fold((0, 0), |(s, d), (_, _, l)| {
            (
                s + l.sent.load(Ordering::Relaxed),
                d + l.dropped.load(Ordering::Relaxed),
            )
        })
    }

    /// The access log writer for `path`, started on first use.
    fn access_logger(&self, path: &str) -> Option<AccessLogger> {
        if let Some(l) = self.loggers.read().ok()?.get(path) {
            return Some(l.clone());
        }
        let mut loggers = self.loggers.write().ok()?;
        if let Some(l) = loggers.get(path) {
            return Some(l.clone());
        }
        match AccessLogger::start(path) {
            Ok(l) => {
                loggers.insert(path.to_string(), l.clone());
                Some(l)
            }
            Err(e) => {
                tracing::warn!(path, error = %e, "cannot open the access log");
                None
            }
        }
    }

    /// The counters in Envoy's `/stats` text form.
    pub fn stats(&self) -> String {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = format!(
            "http.downstream_rq_total: {}\nhttp.downstream_rq_5xx: {}\ntcp.downstream_cx_total: {}\nlistener.downstream_cx_refused: {}\nlistener.downstream_cx_overflow: {}\nhttp.downstream_cx_idle_timeout: {}\n",
            get(&c.http_requests),
            get(&c.http_5xx),
            get(&c.tcp_connections),
            get(&c.refused_connections),
            get(&c.overflow_connections),
            get(&c.idle_timeouts),
        );
        let (sent, dropped) = self.otel_counts();
        if sent + dropped > 0 {
            out.push_str(&format!(
                "access_logs.open_telemetry_access_log.logs_written: {sent}\naccess_logs.open_telemetry_access_log.logs_dropped: {dropped}\n"
            ));
        }
        out
    }
}
