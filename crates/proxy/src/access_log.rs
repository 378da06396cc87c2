//! The access log: one line per request, JSON (Istio's `accessLogEncoding: JSON`) or
//! Envoy's default text format, written by a dedicated thread so requests never block on it.

use std::io::Write;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

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
    pub upstream_cluster: Option<String>,
    /// Endpoint `ip:port`, if forwarded.
    pub upstream_host: Option<String>,
    /// X-Forwarded-For as received.
    pub x_forwarded_for: Option<String>,
    /// User-Agent.
    pub user_agent: Option<String>,
    /// X-Request-Id (generated when absent).
    pub request_id: String,
    /// Route name.
    pub route_name: Option<String>,
    /// Client address.
    pub downstream_remote_address: String,
    /// SNI, when TLS.
    pub requested_server_name: Option<String>,
    /// Time to upstream response headers in milliseconds.
    pub upstream_service_time: Option<u64>,
    /// Why a connection was closed before it was routed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_termination_details: Option<String>,
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

impl Entry {
    fn text(&self) -> String {
        let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        format!(
            "[{}] \"{} {} {}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {} {}",
            self.start_time,
            self.method,
            self.path,
            self.protocol,
            self.response_code,
            self.response_flags,
            self.bytes_received,
            self.bytes_sent,
            self.duration,
            self.upstream_service_time
                .map_or("-".into(), |t| t.to_string()),
            dash(&self.x_forwarded_for),
            dash(&self.user_agent),
            self.request_id,
            self.authority,
            dash(&self.upstream_host),
            dash(&self.upstream_cluster),
            self.downstream_remote_address,
            dash(&self.requested_server_name),
        )
    }
}

/// Sends entries to the writer thread.
#[derive(Debug, Clone)]
pub struct AccessLogger {
    tx: mpsc::Sender<(Entry, bool)>,
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
        let (tx, rx) = mpsc::channel::<(Entry, bool)>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                for (entry, json) in rx {
                    let line = if json {
                        serde_json::to_string(&entry).unwrap_or_default()
                    } else {
                        entry.text()
                    };
                    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Queues an entry.
    pub fn log(&self, entry: Entry, json: bool) {
        let _ = self.tx.send((entry, json));
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
}
