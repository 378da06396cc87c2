//! Building answers: local replies, redirects, direct responses, fault aborts, header
//! operations and CORS headers.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use meshwork_resources::route::{CorsPolicy, FaultAbort, HeaderOps, Redirect};

use crate::body::{Body, empty, full};
use crate::request::reply::LocalReply;

/// The response for a local reply.
pub fn local_reply(reply: &LocalReply) -> Response<Body> {
    let mut r = Response::new(full(reply.body.clone().into_owned()));
    *r.status_mut() = reply.status;
    if !reply.body.is_empty() {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// A redirect to `location`.
pub fn redirect_to(status: StatusCode, location: &str) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A route's redirect, from the request's scheme, host and path.
pub fn redirect(
    r: &Redirect,
    parts: &http::request::Parts,
    scheme: &str,
    host: &str,
) -> Response<Body> {
    let scheme = r.scheme.as_deref().unwrap_or(scheme);
    let authority = r.authority.as_deref().unwrap_or(host);
    let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
    let path = match (&r.uri, parts.uri.query()) {
        // A new path keeps the request's query unless it brings its own, as Envoy does.
        (Some(u), Some(q)) if !u.contains('?') => format!("{u}?{q}"),
        (Some(u), _) => u.clone(),
        (None, _) => parts
            .uri
            .path_and_query()
            .map_or("/".into(), |p| p.to_string()),
    };
    let status = StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    redirect_to(status, &format!("{scheme}://{authority}{port}{path}"))
}

/// A route's direct response.
pub fn direct(status: u16, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if !body.is_empty() {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// An injected abort: an HTTP status, or a trailers-only gRPC status.
pub fn abort(abort: &FaultAbort) -> Response<Body> {
    let mut r = Response::new(full("fault filter abort"));
    if let Some(code) = abort.grpc_status {
        // A trailers-only gRPC answer: HTTP 200 with the status in the headers.
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        r.headers_mut()
            .insert("grpc-status", HeaderValue::from(code));
        r.headers_mut().insert(
            "grpc-message",
            HeaderValue::from_static("fault filter abort"),
        );
        *r.body_mut() = empty();
    } else {
        *r.status_mut() = abort
            .http_status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    }
    r
}

/// Applies header operations: remove, then set, then add.
pub fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in &ops.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The headers of an answer to an allowed CORS preflight.
pub fn cors_preflight_headers(h: &mut HeaderMap, policy: &CorsPolicy, origin: &str) {
    set(h, "access-control-allow-origin", origin);
    if !policy.allow_methods.is_empty() {
        set(
            h,
            "access-control-allow-methods",
            &policy.allow_methods.join(","),
        );
    }
    if !policy.allow_headers.is_empty() {
        set(
            h,
            "access-control-allow-headers",
            &policy.allow_headers.join(","),
        );
    }
    if let Some(age) = policy.max_age_secs {
        set(h, "access-control-max-age", &age.to_string());
    }
    if policy.allow_credentials {
        set(h, "access-control-allow-credentials", "true");
    }
}

/// The CORS headers of a response to an allowed origin.
pub fn cors_response_headers(h: &mut HeaderMap, policy: &CorsPolicy, origin: &str) {
    set(h, "access-control-allow-origin", origin);
    if policy.allow_credentials {
        set(h, "access-control-allow-credentials", "true");
    }
    if !policy.expose_headers.is_empty() {
        set(
            h,
            "access-control-expose-headers",
            &policy.expose_headers.join(","),
        );
    }
}
