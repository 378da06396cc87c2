//! Checks of the request as the client sent it, before any phase: what Envoy refuses
//! itself rather than forwards. A missing, empty or repeated Host on HTTP/1.1, a `*`
//! target (other than `OPTIONS *`), a path that is not absolute or holds `%00`, and a
//! method not in upper case get 400 `DPE`; `CONNECT` and upgrades other than
//! WebSocket get 403 (`upgrade_failed`), as Istio allows only WebSocket upgrades. An
//! `Upgrade: h2c` is not refused: it is dropped, and the request goes on as HTTP/1.1.

use std::borrow::Cow;

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use crate::flags::ResponseFlags;
use crate::request::reply::LocalReply;

fn bad(details: &'static str, body: &'static str) -> LocalReply {
    LocalReply {
        status: StatusCode::BAD_REQUEST,
        flags: ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        details: Cow::Borrowed(details),
        body: Cow::Borrowed(body),
    }
}

fn upgrade_failed() -> LocalReply {
    LocalReply {
        status: StatusCode::FORBIDDEN,
        flags: ResponseFlags::NONE,
        details: Cow::Borrowed("upgrade_failed"),
        body: Cow::Borrowed(""),
    }
}

/// The protocols an HTTP/1.1 request asks to upgrade to, lower case; empty when it asks
/// for none.
pub fn upgrade_tokens(headers: &HeaderMap) -> Vec<String> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return Vec::new();
    }
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn too_large() -> LocalReply {
    LocalReply {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        flags: ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        details: Cow::Borrowed("request_headers_too_large"),
        body: Cow::Borrowed(""),
    }
}

/// Refuses what must not be forwarded. `settings` bound the request headers: HTTP/1.1's
/// codec enforces both bounds itself (431); over HTTP/2 the codec refuses the stream of a
/// header block past the byte limit, and the count is checked here (431).
pub fn check(
    parts: &http::request::Parts,
    settings: &crate::settings::ProxySettings,
) -> Result<(), LocalReply> {
    if parts.version == http::Version::HTTP_2 {
        // As HPACK counts them: name, value and 32 bytes per field.
        let bytes: usize = parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        if parts.headers.len() > settings.max_request_headers
            || bytes > settings.max_request_headers_bytes
        {
            return Err(too_large());
        }
    }
    if parts.method == Method::CONNECT {
        return Err(upgrade_failed());
    }
    let path = parts.uri.path();
    if path == "*" && parts.method != Method::OPTIONS {
        return Err(bad("invalid_request_target", "invalid request target"));
    }
    // What a policy could not see as the backend would: a path that is not absolute (an
    // HTTP/2 `:path` may be anything), an encoded NUL, a method not in upper case.
    if path != "*" && !path.starts_with('/') {
        return Err(bad("invalid_request_target", "invalid request target"));
    }
    if path.contains("%00") {
        return Err(bad("invalid_request_target", "invalid request target"));
    }
    if parts
        .method
        .as_str()
        .bytes()
        .any(|b| b.is_ascii_lowercase())
    {
        return Err(bad("invalid_method", "invalid method"));
    }
    if parts.version == http::Version::HTTP_11 {
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) if parts.uri.authority().is_none() => {
                return Err(bad("missing_host_header", "missing host header"));
            }
            (Some(h), None) if h.is_empty() => {
                return Err(bad("missing_host_header", "empty host header"));
            }
            (Some(_), Some(_)) => {
                return Err(bad("duplicate_host_header", "more than one host header"));
            }
            _ => {}
        }
    }
    let tokens = upgrade_tokens(&parts.headers);
    if !tokens.is_empty() && !tokens.iter().any(|t| t == "websocket" || t == "h2c") {
        return Err(upgrade_failed());
    }
    Ok(())
}
