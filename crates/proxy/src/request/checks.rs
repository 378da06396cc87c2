//! Checks of the request as the client sent it, before any phase: what Envoy refuses
//! itself rather than forwards. A missing, empty or repeated Host on HTTP/1.1, a `*`
//! target (other than `OPTIONS *`), a path that is not absolute or holds `%00`, and a
//! method not in upper case get 400 `DPE`, and so does a `Host` that is more than
//! `host[:port]`; a transfer coding other than `chunked` alone is 501, as nginx answers.
//! HTTP/1's codec (hyper's) refuses the rest of what is malformed itself, with 400 and
//! close: obs-fold, bare CR, control bytes, invalid or differing lengths, invalid chunk
//! sizes, a `Transfer-Encoding` whose last coding is not `chunked`. It reads a request
//! with both `Content-Length` and `Transfer-Encoding` by the chunked framing alone and
//! closes the connection after it (RFC 9112 6.1), and takes a repeated equal
//! `Content-Length` as one (6.3): neither reaches these checks. `CONNECT` and upgrades other than
//! WebSocket get 403 (`upgrade_failed`), as Istio allows only WebSocket upgrades. An
//! `Upgrade: h2c` is not refused: it is dropped, and the request goes on as HTTP/1.1.

use std::borrow::Cow;

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use crate::flags::ResponseFlags;
use crate::request::reply::LocalReply;

/// A downstream protocol error answered with `status`.
fn refused(status: StatusCode, details: &'static str, body: &'static str) -> LocalReply {
    LocalReply {
        status,
        flags: ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        details: Cow::Borrowed(details),
        body: Cow::Borrowed(body),
    }
}

fn bad(details: &'static str, body: &'static str) -> LocalReply {
    refused(StatusCode::BAD_REQUEST, details, body)
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
    refused(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request_headers_too_large",
        "",
    )
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
    if parts.version < http::Version::HTTP_2 {
        framing(&parts.headers)?;
        // HTTP/1.1 requires a Host, also beside an absolute-form target (RFC 9112 3.2);
        // an HTTP/1.0 request without one could only be routed by guessing.
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) => return Err(bad("missing_host_header", "missing host header")),
            (Some(h), None) if h.is_empty() => {
                return Err(bad("missing_host_header", "empty host header"));
            }
            (Some(h), None) if !is_host(h.as_bytes()) => {
                return Err(bad("invalid_host_header", "invalid host header"));
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

/// An HTTP/1 request's transfer coding: only `chunked` alone is implemented; `gzip,
/// chunked` would reach the backend decoded of its chunks but not of its gzip, with
/// nothing left saying so.
fn framing(headers: &HeaderMap) -> Result<(), LocalReply> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(coding) = codings.next() else {
        return Ok(());
    };
    if codings.next().is_some() || !trim_ows(coding.as_bytes()).eq_ignore_ascii_case(b"chunked") {
        return Err(refused(
            StatusCode::NOT_IMPLEMENTED,
            "invalid_transfer_encoding",
            "unsupported transfer-encoding",
        ));
    }
    Ok(())
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Whether a Host value is `host[:port]` (RFC 9110 7.2): a name, an IPv4 address or a
/// bracketed IPv6 one, with no user info, path or other delimiters.
fn is_host(v: &[u8]) -> bool {
    let (host, port): (&[u8], &[u8]) = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|b| *b == b']') else {
            return false;
        };
        let inside = &rest[..end];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match &rest[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&[], port),
            _ => return false,
        }
    } else {
        match v.iter().position(|b| *b == b':') {
            Some(colon) => (&v[..colon], &v[colon + 1..]),
            None => (v, &[]),
        }
    };
    host.iter().all(|b| HOST_BYTES[usize::from(*b)]) && port.iter().all(u8::is_ascii_digit)
}

/// The bytes of a reg-name or IPv4 address (RFC 3986 3.2.2): unreserved, sub-delims and
/// `%` of percent-encoding.
const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn request(raw: &[(&str, &[u8])]) -> http::request::Parts {
        let mut r = http::Request::builder().uri("/");
        for (name, value) in raw {
            r = r.header(*name, HeaderValue::from_bytes(value).unwrap());
        }
        r.body(()).unwrap().into_parts().0
    }

    fn answer(raw: &[(&str, &[u8])]) -> Option<(u16, String)> {
        check(&request(raw), &crate::settings::ProxySettings::default())
            .err()
            .map(|r| (r.status.as_u16(), r.details.into_owned()))
    }

    #[test]
    fn only_chunked_alone_is_a_transfer_coding_served() {
        let host: (&str, &[u8]) = ("host", b"app.example.test");
        for (what, headers, expected) in [
            ("a length", vec![("content-length", &b"3"[..])], None),
            ("chunked", vec![("transfer-encoding", b"chunked")], None),
            (
                "chunked, any case",
                vec![("transfer-encoding", b"Chunked")],
                None,
            ),
            (
                "gzip, chunked",
                vec![("transfer-encoding", b"gzip, chunked")],
                Some((501, "invalid_transfer_encoding")),
            ),
            (
                "chunked twice",
                vec![
                    ("transfer-encoding", b"chunked"),
                    ("transfer-encoding", b"chunked"),
                ],
                Some((501, "invalid_transfer_encoding")),
            ),
        ] {
            let mut all = vec![host];
            all.extend(headers);
            assert_eq!(
                answer(&all),
                expected.map(|(s, d)| (s, d.to_string())),
                "{what}"
            );
        }
    }

    #[test]
    fn a_host_is_required_and_must_be_only_a_host() {
        for good in [
            &b"app.example.test"[..],
            b"app.example.test:8080",
            b"127.0.0.1:80",
            b"[::1]",
            b"[fd00::7]:443",
            b"host_with_underscore",
        ] {
            assert_eq!(answer(&[("host", good)]), None, "{good:?}");
        }
        for bad in [
            &b"app.example.test/x"[..],
            b"evil@app.example.test",
            b"a b",
            b"a:b:80",
            b"app:80x",
            b"[::1",
            b"[::1]x",
            b"[]",
            b"a?b",
        ] {
            assert_eq!(
                answer(&[("host", bad)]),
                Some((400, "invalid_host_header".into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            answer(&[]),
            Some((400, "missing_host_header".into())),
            "no Host"
        );
        let mut http10 = request(&[]);
        http10.version = http::Version::HTTP_10;
        assert!(
            check(&http10, &crate::settings::ProxySettings::default()).is_err(),
            "HTTP/1.0 without a Host"
        );
        let mut absolute = request(&[]);
        absolute.uri = "http://app.example.test/".parse().unwrap();
        assert!(
            check(&absolute, &crate::settings::ProxySettings::default()).is_err(),
            "an absolute-form target without a Host"
        );
    }
}
