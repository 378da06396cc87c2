//! The per-request context every phase reads and writes: the connection, the request's
//! authority and host, and what the phases decided (route, cluster, endpoint, response
//! flags and details) for the recorder.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};

use crate::access_log::{Entry, rfc3339};
use crate::connection::Connection;
use crate::flags::ResponseFlags;

/// One request on its way through the phases.
pub struct RequestContext {
    /// The connection it came on.
    pub conn: Arc<Connection>,
    /// When it arrived.
    pub start: Instant,
    /// The authority as sent (`Host` or `:authority`).
    pub authority: String,
    /// The authority's host, lower case, without port.
    pub host: String,
    /// The route that matched.
    pub route: Option<String>,
    /// The AUDIT policy the request matched, if any.
    pub audit: Option<String>,
    /// What the filters before authorization left for it (the external authorizer's
    /// dynamic metadata).
    pub metadata: crate::request::authz::FilterMetadata,
    /// The cluster chosen.
    pub cluster: Option<String>,
    /// The endpoint of the last attempt.
    pub upstream_host: Option<String>,
    /// Time to the upstream's response headers, in milliseconds.
    pub service_time: Option<u64>,
    /// Envoy's response flags, as the phases set them.
    pub flags: ResponseFlags,
    /// Envoy's `response_code_details`.
    pub details: Cow<'static, str>,
    /// Who talks to whom, for the metrics: the chosen cluster's labels.
    pub peer: Option<Arc<crate::metrics::PeerLabels>>,
    /// The other side's workload, from its metadata: the client's at a sidecar's inbound
    /// port, the server's on the way out.
    pub counterpart: Option<Arc<crate::peer::Workload>>,
}

impl RequestContext {
    /// The context of a request with this head on `conn`.
    pub fn new(conn: Arc<Connection>, parts: &http::request::Parts) -> RequestContext {
        let authority = authority(parts).to_string();
        RequestContext {
            conn,
            start: Instant::now(),
            host: host_of(&authority),
            authority,
            route: None,
            audit: None,
            metadata: Default::default(),
            cluster: None,
            upstream_host: None,
            service_time: None,
            flags: ResponseFlags::NONE,
            details: Cow::Borrowed("via_upstream"),
            peer: None,
            counterpart: None,
        }
    }

    /// Notes a local answer's details.
    pub fn answered(&mut self, details: &'static str) {
        self.details = Cow::Borrowed(details);
    }

    /// The access-log entry for the request head (filled in further when it ends).
    pub fn entry(&self, parts: &http::request::Parts, request_id: String) -> Entry {
        Entry {
            start_time: rfc3339(SystemTime::now()),
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "/".into()),
            protocol: match parts.version {
                http::Version::HTTP_2 => "HTTP/2".into(),
                http::Version::HTTP_10 => "HTTP/1.0".into(),
                http::Version::HTTP_3 => "HTTP/3".into(),
                _ => "HTTP/1.1".into(),
            },
            authority: self.authority.clone(),
            // As forwarded: what the client sent, with the client's address appended.
            x_forwarded_for: Some(self.forwarded_for(&parts.headers)),
            user_agent: header_str(&parts.headers, "user-agent"),
            request_id,
            downstream_remote_address: self.conn.peer.to_string(),
            requested_server_name: self.conn.sni.clone(),
            ..Default::default()
        }
    }

    /// `X-Forwarded-For` as sent upstream: the client's value with the peer appended.
    pub fn forwarded_for(&self, headers: &HeaderMap) -> String {
        let peer = self.conn.peer.ip();
        match header_str(headers, "x-forwarded-for") {
            Some(prev) => format!("{prev}, {peer}"),
            None => peer.to_string(),
        }
    }
}

/// A header's value as text.
pub fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The request's authority: the URI's, else the Host header.
pub fn authority(parts: &http::request::Parts) -> &str {
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

/// The host part of an authority, lower case and without a trailing dot
/// (`Example.com.:8080` → `example.com`), as Envoy's `strip_trailing_host_dot` reads it.
pub fn host_of(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        authority
            .split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string()
    };
    let host = host.strip_suffix('.').unwrap_or(&host);
    host.to_ascii_lowercase()
}

/// Keeps a client's X-Request-Id, or makes one, as Envoy does.
pub fn ensure_request_id(headers: &mut HeaderMap) -> String {
    if let Some(id) = header_str(headers, "x-request-id").filter(|s| !s.is_empty()) {
        return id;
    }
    // A version 4 UUID from a fast generator: no system call per request.
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    random[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    let uuid = uuid::Builder::from_random_bytes(random).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid.hyphenated().encode_lower(&mut buf);
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert("x-request-id", v);
    }
    id.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_of("Example.com:8080"), "example.com");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of("[::1]:80"), "[::1]");
        assert_eq!(host_of("Admin.Example.com.:80"), "admin.example.com");
        assert_eq!(host_of("admin.example.com."), "admin.example.com");
    }
}
