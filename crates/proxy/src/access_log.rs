//! The access log: one line per request, JSON (Istio's `accessLogEncoding: JSON`) or
//! Envoy's default text format, written by a dedicated thread so requests never block on it.

use std::io::Write;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use std::borrow::Cow;

use meshwork_resources::log_format::{self, Command, LogFormat, Segment};
use serde::Serialize;

/// The fields Istio's JSON access log carries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Entry {
    /// Request start, RFC 3339 with milliseconds.
    pub start_time: String,
    /// Method.
    pub method: String,
    /// Original path with query.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: String,
    /// Status sent downstream.
    pub response_code: u16,
    /// Envoy response flags (`-` for none).
    pub response_flags: String,
    /// Envoy's `response_code_details` (`via_upstream`, `route_not_found`, ...).
    pub response_code_details: String,
    /// Total time in milliseconds.
    pub duration: u64,
    /// Request body bytes.
    pub bytes_received: u64,
    /// Response body bytes.
    pub bytes_sent: u64,
    /// Host / :authority.
    pub authority: String,
    /// Cluster name, if routed.
    pub upstream_cluster: Option<std::sync::Arc<str>>,
    /// Endpoint `ip:port`, if forwarded.
    pub upstream_host: Option<std::sync::Arc<str>>,
    /// X-Forwarded-For as received.
    pub x_forwarded_for: Option<String>,
    /// User-Agent.
    pub user_agent: Option<String>,
    /// X-Request-Id (generated when absent).
    pub request_id: String,
    /// Route name.
    pub route_name: Option<std::sync::Arc<str>>,
    /// Client address.
    pub downstream_remote_address: String,
    /// SNI, when TLS.
    pub requested_server_name: Option<String>,
    /// Time to upstream response headers in milliseconds.
    pub upstream_service_time: Option<u64>,
    /// Why a connection was closed before it was routed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_termination_details: Option<String>,
    /// The AUDIT AuthorizationPolicy the request matched (`ns/name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_policy: Option<String>,
    /// What else telemetry expressions may read; not a field of the log.
    #[serde(skip)]
    pub facts: Facts,
}

/// What a request's or connection's record carries besides its log fields, for the
/// Telemetry API's expressions (filters, metric tags).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Served as the server: a sidecar's inbound.
    pub inbound: bool,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The address the client connected to.
    pub destination: Option<std::net::SocketAddr>,
    /// The client's SPIFFE id, when it presented a verified certificate.
    pub peer_identity: Option<std::sync::Arc<str>>,
    /// The request headers the expressions read, as sent.
    pub request_headers: Vec<(String, String)>,
    /// The response headers the expressions read.
    pub response_headers: Vec<(String, String)>,
}

fn some(o: &Option<String>) -> Option<Cow<'_, str>> {
    o.as_deref().map(Cow::Borrowed)
}

fn header<'a>(list: &'a [(String, String)], name: &str) -> Option<Cow<'a, str>> {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| Cow::Borrowed(v.as_str()))
}

/// Istio's default text format, parsed once.
fn istio_text() -> &'static [Segment] {
    static FORMAT: std::sync::OnceLock<Vec<Segment>> = std::sync::OnceLock::new();
    FORMAT.get_or_init(|| log_format::parse(log_format::ISTIO_TEXT).unwrap_or_default())
}

impl Entry {
    /// The entry as one line of the log: in `format`, else Istio's default text, or its
    /// default JSON when `json`.
    pub fn line(&self, format: Option<&LogFormat>, json: bool) -> String {
        match format {
            Some(LogFormat::Text(segments)) => self.text(segments),
            Some(LogFormat::Labels(labels)) => self.json(labels),
            None if json => serde_json::to_string(self).unwrap_or_default(),
            None => self.text(istio_text()),
        }
    }

    /// Each label's value as text (`-` for none), for an OpenTelemetry record's
    /// attributes.
    pub fn labels(&self, labels: &[(String, Vec<Segment>)]) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(key, segments)| (key.clone(), self.text(segments)))
            .collect()
    }

    /// An operator's value; `None` for Envoy's `-`.
    fn value(&self, command: &Command) -> Option<Cow<'_, str>> {
        let text = |s: &str| Some(Cow::Owned(s.to_string()));
        let number = |n: u64| Some(Cow::Owned(n.to_string()));
        match command {
            Command::StartTime => text(&self.start_time),
            Command::RequestHeader(names) => names.iter().find_map(|name| {
                match name.as_str() {
                    ":method" => Some(Cow::Borrowed(self.method.as_str())),
                    ":path" => Some(Cow::Borrowed(self.path.as_str())),
                    ":authority" => Some(Cow::Borrowed(self.authority.as_str())),
                    ":scheme" => Some(Cow::Borrowed(self.facts.scheme)),
                    "x-forwarded-for" => some(&self.x_forwarded_for),
                    "user-agent" => some(&self.user_agent),
                    "x-request-id" => Some(Cow::Borrowed(self.request_id.as_str())),
                    other => header(&self.facts.request_headers, other),
                }
                .filter(|v| !v.is_empty() && v != "-")
            }),
            Command::ResponseHeader(names) => names.iter().find_map(|name| match name.as_str() {
                "x-envoy-upstream-service-time" => self.upstream_service_time.and_then(number),
                other => header(&self.facts.response_headers, other),
            }),
            Command::Protocol => Some(Cow::Borrowed(self.protocol.as_str())),
            Command::ResponseCode => number(u64::from(self.response_code)),
            Command::ResponseFlags => Some(Cow::Borrowed(self.response_flags.as_str())),
            Command::ResponseCodeDetails => {
                Some(Cow::Borrowed(self.response_code_details.as_str()))
            }
            Command::ConnectionTerminationDetails => some(&self.connection_termination_details),
            Command::UpstreamTransportFailureReason | Command::UpstreamLocalAddress => None,
            Command::BytesReceived => number(self.bytes_received),
            Command::BytesSent => number(self.bytes_sent),
            Command::Duration => number(self.duration),
            Command::UpstreamHost => self.upstream_host.as_deref().map(Cow::Borrowed),
            Command::UpstreamCluster => self.upstream_cluster.as_deref().map(Cow::Borrowed),
            Command::DownstreamLocalAddress => {
                self.facts.destination.map(|d| Cow::Owned(d.to_string()))
            }
            Command::DownstreamRemoteAddress => {
                Some(Cow::Borrowed(self.downstream_remote_address.as_str()))
            }
            Command::DownstreamRemoteAddressWithoutPort => self
                .downstream_remote_address
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| Cow::Owned(a.ip().to_string())),
            Command::DownstreamPeerUriSan => self
                .facts
                .peer_identity
                .as_deref()
                .map(|s| Cow::Owned(s.to_string())),
            Command::RequestedServerName => some(&self.requested_server_name),
            Command::RouteName => self.route_name.as_deref().map(Cow::Borrowed),
            Command::AuditHint => self.audit_policy.as_ref().map(|_| Cow::Borrowed("true")),
            Command::AuditPolicy => some(&self.audit_policy),
        }
        .filter(|v| !v.is_empty())
    }

    /// An operator's value cut to its length.
    fn operator(&self, command: &Command, max_length: Option<usize>) -> Option<String> {
        let value = self.value(command)?;
        Some(match max_length {
            Some(n) => value.chars().take(n).collect(),
            None => value.into_owned(),
        })
    }

    /// `segments` as text, `-` for what has no value.
    fn text(&self, segments: &[Segment]) -> String {
        let mut out = String::new();
        for s in segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Operator {
                    command,
                    max_length,
                } => out.push_str(
                    self.operator(command, *max_length)
                        .as_deref()
                        .unwrap_or("-"),
                ),
            }
        }
        out
    }

    /// `labels` as a JSON object: a label that is one operator keeps its value's type
    /// (numbers for codes, sizes and durations) and is `null` without a value.
    fn json(&self, labels: &[(String, Vec<Segment>)]) -> String {
        let mut object = serde_json::Map::new();
        for (key, segments) in labels {
            let value = match segments.as_slice() {
                [
                    Segment::Operator {
                        command,
                        max_length,
                    },
                ] => match self.operator(command, *max_length) {
                    None => serde_json::Value::Null,
                    Some(v) => match command {
                        Command::ResponseCode
                        | Command::BytesReceived
                        | Command::BytesSent
                        | Command::Duration => v
                            .parse::<u64>()
                            .map_or(serde_json::Value::String(v), serde_json::Value::from),
                        _ => serde_json::Value::String(v),
                    },
                },
                _ => serde_json::Value::String(self.text(segments)),
            };
            object.insert(key.clone(), value);
        }
        serde_json::Value::Object(object).to_string()
    }
}

/// Sends entries to the writer thread.
#[derive(Debug, Clone)]
pub struct AccessLogger {
    tx: mpsc::Sender<String>,
}

impl AccessLogger {
    /// Starts a writer for `path` (`/dev/stdout` writes to standard output).
    pub fn start(path: &str) -> std::io::Result<Self> {
        let mut out: Box<dyn Write + Send> = if path == "/dev/stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                for line in rx {
                    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Queues a line.
    pub fn log(&self, line: String) {
        let _ = self.tx.send(line);
    }
}

/// RFC 3339 UTC time with milliseconds, as Envoy's `%START_TIME%`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_953_788_123);
        assert_eq!(rfc3339(t), "2026-11-29T12:03:08.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    fn entry() -> Entry {
        Entry {
            start_time: "2026-12-02T05:00:00.000Z".into(),
            method: "GET".into(),
            path: "/api?q=1".into(),
            protocol: "HTTP/1.1".into(),
            response_code: 503,
            response_flags: "UF".into(),
            response_code_details: "upstream_reset_before_response_started{connection_failure}"
                .into(),
            duration: 12,
            bytes_received: 0,
            bytes_sent: 91,
            authority: "shop.test".into(),
            upstream_cluster: Some("outbound|80||shop.default.svc.cluster.local".into()),
            upstream_host: Some("10.0.0.7:8080".into()),
            x_forwarded_for: Some("10.1.1.1".into()),
            user_agent: Some("curl/8".into()),
            request_id: "abc".into(),
            route_name: None,
            downstream_remote_address: "10.1.1.1:5555".into(),
            requested_server_name: None,
            upstream_service_time: None,
            connection_termination_details: None,
            audit_policy: Some("istio-system/audit".into()),
            facts: Facts {
                request_headers: vec![("x-user".into(), "ana".into())],
                ..Facts::default()
            },
        }
    }

    #[test]
    fn istios_default_text_and_custom_formats() {
        assert_eq!(
            entry().line(None, false),
            "[2026-12-02T05:00:00.000Z] \"GET /api?q=1 HTTP/1.1\" 503 UF upstream_reset_before_response_started{connection_failure} - \"-\" 0 91 12 - \"10.1.1.1\" \"curl/8\" \"abc\" \"shop.test\" \"10.0.0.7:8080\" outbound|80||shop.default.svc.cluster.local - - 10.1.1.1:5555 - -"
        );
        let text = log_format::parse(
            "%REQ(:METHOD)% %REQ(X-USER):2% %REQ(X-NONE?USER-AGENT)% %RESPONSE_CODE%",
        )
        .unwrap();
        assert_eq!(
            entry().line(Some(&LogFormat::Text(text)), false),
            "GET an curl/8 503"
        );
        let labels = LogFormat::Labels(vec![
            ("code".into(), log_format::parse("%RESPONSE_CODE%").unwrap()),
            ("user".into(), log_format::parse("%REQ(X-USER)%").unwrap()),
            (
                "sni".into(),
                log_format::parse("%REQUESTED_SERVER_NAME%").unwrap(),
            ),
            (
                "both".into(),
                log_format::parse("%REQ(:METHOD)% %RESPONSE_CODE%").unwrap(),
            ),
        ]);
        let json: serde_json::Value =
            serde_json::from_str(&entry().line(Some(&labels), true)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": 503, "user": "ana", "sni": null, "both": "GET 503"})
        );
    }
}
