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
    pub authority: Authority,
    /// The authority's host, lower case, without port ([`RequestContext::host`]).
    host: Host,
    /// The route that matched.
    pub route: Option<Arc<str>>,
    /// The AUDIT policy the request matched, if any.
    pub audit: Option<String>,
    /// What the filters before authorization left for it (the external authorizer's
    /// dynamic metadata).
    pub metadata: crate::request::authz::FilterMetadata,
    /// The cluster chosen.
    pub cluster: Option<Arc<str>>,
    /// The endpoint of the last attempt.
    pub upstream_host: Option<Arc<str>>,
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
        let authority = Authority::of(parts);
        RequestContext {
            conn,
            start: Instant::now(),
            host: Host::of(&authority),
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

    /// The authority's host, lower case, without port or trailing dot.
    pub fn host(&self) -> &str {
        match &self.host {
            Host::Prefix(n) => &self.authority[..*n],
            Host::Owned(h) => h,
        }
    }

    /// Notes a local answer's details.
    pub fn answered(&mut self, details: &'static str) {
        self.details = Cow::Borrowed(details);
    }

    /// The access-log entry for the request head (filled in further when it ends).
    pub fn entry(&self, parts: &http::request::Parts) -> Entry {
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
            authority: self.authority.to_string(),
            // As forwarded: what the client sent, with the client's address appended.
            x_forwarded_for: self
                .forwarded_for(&parts.headers)
                .to_str()
                .ok()
                .map(str::to_string),
            user_agent: header_str(&parts.headers, "user-agent"),
            request_id: header_str(&parts.headers, X_REQUEST_ID.as_str()).unwrap_or_default(),
            downstream_remote_address: self.conn.peer.to_string(),
            requested_server_name: self.conn.sni.clone(),
            ..Default::default()
        }
    }

    /// `X-Forwarded-For` as sent upstream: the client's value with the peer appended;
    /// without one, the peer's address, made once per connection.
    pub fn forwarded_for(&self, headers: &HeaderMap) -> HeaderValue {
        let peer = self.conn.peer_ip_header();
        match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", self.conn.peer.ip()))
                .unwrap_or_else(|_| peer.clone()),
            None => peer.clone(),
        }
    }
}

/// A header's value as text.
pub fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A request's authority as sent, sharing the bytes the codec read (the URI's
/// authority, else the Host header) rather than copying them.
#[derive(Clone, Debug, Default)]
pub struct Authority(Shared);

#[derive(Clone, Debug, Default)]
enum Shared {
    #[default]
    None,
    Uri(http::uri::Authority),
    /// A Host header that is visible ASCII.
    Header(http::HeaderValue),
}

impl Authority {
    /// The authority of a request with this head (empty when it has none).
    pub fn of(parts: &http::request::Parts) -> Authority {
        if let Some(a) = parts.uri.authority() {
            return Authority(Shared::Uri(a.clone()));
        }
        match parts.headers.get(header::HOST) {
            Some(h) if h.to_str().is_ok() => Authority(Shared::Header(h.clone())),
            _ => Authority(Shared::None),
        }
    }

    /// The authority as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Shared::None => "",
            Shared::Uri(a) => a.as_str(),
            Shared::Header(h) => h.to_str().unwrap_or(""),
        }
    }
}

impl std::ops::Deref for Authority {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request's host: most often the start of its authority as sent (already lower case,
/// before `:port`), else a lowered copy.
enum Host {
    /// The first this many bytes of the authority.
    Prefix(usize),
    /// A copy, changed.
    Owned(String),
}

impl Host {
    fn of(authority: &str) -> Host {
        let host = host_slice(authority);
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Host::Owned(host.to_ascii_lowercase())
        } else {
            Host::Prefix(host.len())
        }
    }
}

/// The host part of an authority: without the port and a trailing dot, as sent.
fn host_slice(authority: &str) -> &str {
    let host = if authority.starts_with('[') {
        // `[v6]:port`: up to and with the bracket.
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// The host part of an authority, lower case and without a trailing dot
/// (`Example.com.:8080` → `example.com`), as Envoy's `strip_trailing_host_dot` reads it.
pub fn host_of(authority: &str) -> String {
    host_slice(authority).to_ascii_lowercase()
}

/// Keeps a client's X-Request-Id, or makes one, as Envoy does.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if headers.get(&X_REQUEST_ID).is_some_and(|v| !v.is_empty()) {
        return;
    }
    // A version 4 UUID from a fast generator: no system call per request.
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    random[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    let uuid = uuid::Builder::from_random_bytes(random).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut buf);
    // Owned once and shared: copying the header map for a retry copies no id.
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf)) {
        headers.insert(X_REQUEST_ID, v);
    }
}

/// `X-Request-Id`.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

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
        // The request context keeps the host as the start of the authority when it can.
        for (authority, host) in [
            ("example.com:8080", "example.com"),
            ("Example.com:8080", "example.com"),
            ("[::1]:80", "[::1]"),
            ("admin.example.com.", "admin.example.com"),
            ("127.0.0.1:15001", "127.0.0.1"),
            ("", ""),
        ] {
            let kept = Host::of(authority);
            let got = match &kept {
                Host::Prefix(n) => &authority[..*n],
                Host::Owned(h) => h.as_str(),
            };
            assert_eq!(got, host, "{authority}");
            assert_eq!(
                matches!(kept, Host::Owned(_)),
                authority.bytes().any(|b| b.is_ascii_uppercase())
            );
        }
    }
}
