//! The HTTP request path, as a sequence of phases over one request:
//! server (HTTPS redirect) → match route → act (redirect, direct response, forward with
//! timeout and retries) → record (access log). Errors carry their status and response flag.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use meshwork_resources::cluster::{HashKey, LbPolicy, UpstreamProtocol};
use meshwork_resources::route::{
    CorsPolicy, FaultAbort, HeaderOps, Redirect, RetryOn, RetryPolicy, RouteAction, StringMatcher,
};

use crate::Shared;
use crate::access_log::{Entry, rfc3339};
use crate::balancer::{InFlight, Outcome, hash64};
use crate::body::{Body, Counted, boxed, empty, full};
use crate::error::ProxyError;
use crate::flags::ResponseFlags;
use crate::recorder::{Kind, Outcome as Recorded};
use crate::route::{RequestFacts, find_route, pick_weighted, virtual_host};
use crate::route_table::CompiledRoute;
use crate::runtime::Runtime as State;

/// What the connection phase learnt, for every request on the connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client.
    pub peer: SocketAddr,
    /// The address of the socket the connection arrived on (as configured).
    pub bind: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// SNI, when TLS.
    pub sni: Option<String>,
}

/// Requests whose bodies are at most this large are buffered so they can be retried.
const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// Headers that describe one hop and are never forwarded (as `HeaderName`s, so removing
/// them parses nothing).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Outcome details of the forward phase, for the access log.
#[derive(Default)]
struct Upstream {
    cluster: Option<String>,
    host: Option<String>,
    service_time: Option<u64>,
    route: Option<String>,
    /// What happened on the way (DI, FI, URX) and the error that ended the request.
    flags: ResponseFlags,
    /// Envoy's `response_code_details`.
    details: Cow<'static, str>,
}

/// Serves one request.
pub async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let state = shared.state.load_full();
    let (mut parts, body) = req.into_parts();
    let request_id = ensure_request_id(&mut parts.headers);
    // The access log entry (and the byte counting it needs) only when the log is on.
    let received = Arc::new(AtomicU64::new(0));
    let entry = state.config.access_log.as_ref().map(|_| Entry {
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
        authority: authority(&parts).to_string(),
        // As forwarded: what the client sent, with the client's address appended.
        x_forwarded_for: Some(match header_str(&parts.headers, "x-forwarded-for") {
            Some(prev) => format!("{prev}, {}", conn.peer.ip()),
            None => conn.peer.ip().to_string(),
        }),
        user_agent: header_str(&parts.headers, "user-agent"),
        request_id,
        downstream_remote_address: conn.peer.to_string(),
        requested_server_name: conn.sni.clone(),
        ..Default::default()
    });
    let body = if entry.is_some() {
        boxed(Counted::new(boxed(body), received.clone(), None))
    } else {
        boxed(body)
    };
    let mut up = Upstream {
        details: Cow::Borrowed("via_upstream"),
        ..Upstream::default()
    };
    let response = match serve(parts, body, &conn, &state, &mut up).await {
        Ok(r) => r,
        Err(e) => {
            up.flags.insert(e.flags());
            up.details = e.details();
            let text = e.body();
            let mut r = Response::new(full(text.clone()));
            *r.status_mut() = e.status();
            if !text.is_empty() {
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            r
        }
    };
    let (mut rparts, rbody) = response.into_parts();
    rparts
        .headers
        .insert(header::SERVER, HeaderValue::from_static("meshwork"));
    let outcome = Recorded {
        kind: Kind::Http,
        status: rparts.status.as_u16(),
        flags: up.flags,
        details: up.details,
    };
    let (Some(mut entry), Some(access_log)) = (entry, state.config.access_log.as_ref()) else {
        shared.recorder.record(outcome, None);
        return Ok(Response::from_parts(rparts, rbody));
    };
    entry.response_code = rparts.status.as_u16();
    entry.upstream_cluster = up.cluster;
    entry.upstream_host = up.host;
    entry.upstream_service_time = up.service_time;
    entry.route_name = up.route;
    let json = access_log.json;
    let logger = shared.access_logger(&access_log.path);
    let sent = Arc::new(AtomicU64::new(0));
    let sent_end = sent.clone();
    let recorder_shared = shared.clone();
    let on_end = Box::new(move || {
        entry.duration = start.elapsed().as_millis() as u64;
        entry.bytes_received = received.load(Ordering::Relaxed);
        entry.bytes_sent = sent_end.load(Ordering::Relaxed);
        let log = logger.as_ref().map(|l| (entry, l, json));
        recorder_shared.recorder.record(outcome, log);
    });
    Ok(Response::from_parts(
        rparts,
        boxed(Counted::new(rbody, sent, Some(on_end))),
    ))
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn authority(parts: &http::request::Parts) -> &str {
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

/// The host part of an authority, lower case (`Example.com:8080` → `example.com`).
fn host_of(authority: &str) -> String {
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
    host.to_ascii_lowercase()
}

/// Keeps a client's X-Request-Id, or makes one, as Envoy does.
fn ensure_request_id(headers: &mut HeaderMap) -> String {
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

async fn serve(
    parts: http::request::Parts,
    body: Body,
    conn: &ConnInfo,
    state: &State,
    up: &mut Upstream,
) -> Result<Response<Body>, ProxyError> {
    let listener = state.listeners.get(&conn.bind).ok_or(ProxyError::NoRoute)?;
    let mut parts = parts;
    normalize_request_path(&mut parts);
    let authority = authority(&parts).to_string();
    let host = host_of(&authority);
    // The server is chosen again on the config in force: a reload may have moved it. TLS
    // connections keep the name they were accepted for (SNI), plain ones use the Host.
    let name = if conn.scheme == "https" {
        conn.sni.as_deref()
    } else {
        Some(host.as_str())
    };
    let index = listener
        .server_for(name)
        .or(if conn.scheme == "https" {
            None
        } else {
            Some(0)
        })
        .ok_or(ProxyError::NoRoute)?;
    let server = listener.servers.get(index).ok_or(ProxyError::NoRoute)?;

    // Phase: server policy (HTTPS redirect).
    if server.chain.https_redirect && conn.scheme == "http" {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        up.details = Cow::Borrowed("direct_response");
        return Ok(redirect_response(
            StatusCode::MOVED_PERMANENTLY,
            &format!("https://{host}{path}"),
        ));
    }

    // Phase: match route.
    let vhosts = &state
        .route_tables
        .get(&server.chain.route_table)
        .ok_or(ProxyError::NoRoute)?
        .virtual_hosts;
    let facts = RequestFacts {
        parts: &parts,
        host: &host,
        authority: &authority,
        scheme: conn.scheme,
        gateway_port: listener.gateway_port(),
    };
    let vh = virtual_host(vhosts, &host).ok_or(ProxyError::NoRoute)?;
    let (route, matched) = find_route(vh, &facts).ok_or(ProxyError::NoRoute)?;
    up.route = Some(route.route.name.clone());

    // Phase: policy (CORS preflights, injected faults).
    let origin = header_str(&parts.headers, "origin");
    let cors = route
        .route
        .cors
        .as_ref()
        .zip(origin.as_deref())
        .map(|(policy, origin)| {
            let allowed = route.cors_origins.iter().any(|m| m.matches(origin, false));
            (policy, origin, allowed)
        });
    if let Some((policy, origin, allowed)) = cors
        && parts.method == http::Method::OPTIONS
        && parts.headers.contains_key("access-control-request-method")
        && (allowed || !policy.forward_unmatched_preflights)
    {
        up.details = Cow::Borrowed("cors_response");
        let mut r = Response::new(empty());
        if allowed {
            cors_preflight_headers(r.headers_mut(), policy, origin);
        }
        return Ok(r);
    }
    if let Some(fault) = &route.route.fault {
        if let Some((ms, percent)) = fault.delay
            && roll(percent)
        {
            up.flags.insert(ResponseFlags::DELAY_INJECTED);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(abort) = &fault.abort
            && roll(abort.percent)
        {
            up.flags.insert(ResponseFlags::FAULT_INJECTED);
            up.details = Cow::Borrowed("fault_filter_abort");
            return Ok(abort_response(abort));
        }
    }

    // Phase: act.
    let mut response = match &route.route.action {
        RouteAction::Redirect(r) => {
            up.details = Cow::Borrowed("direct_response");
            redirect(r, &parts, conn, &host)
        }
        RouteAction::DirectResponse { status, body } => {
            up.details = Cow::Borrowed("direct_response");
            let mut r = Response::new(full(body.clone()));
            *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            if !body.is_empty() {
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            r
        }
        RouteAction::Forward(_) => forward(parts, body, conn, route, matched, state, up).await?,
    };
    apply_ops(response.headers_mut(), &route.route.response_headers);
    if let Some((policy, origin, true)) = cors {
        cors_response_headers(response.headers_mut(), policy, origin);
    }
    Ok(response)
}

/// Istio's default path normalization (BASE, RFC 3986): `.` and `..` segments are resolved
/// before routing, and the normalized path is what goes upstream.
fn normalize_request_path(parts: &mut http::request::Parts) {
    let path = parts.uri.path();
    if !path.split('/').any(|seg| seg == "." || seg == "..") {
        return;
    }
    let normalized = remove_dot_segments(path);
    let pq = match parts.uri.query() {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized,
    };
    let mut uri = http::uri::Parts::from(parts.uri.clone());
    if let Ok(p) = pq.parse() {
        uri.path_and_query = Some(p);
        if let Ok(u) = Uri::from_parts(uri) {
            parts.uri = u;
        }
    }
}

/// RFC 3986 section 5.2.4, for absolute paths.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if trailing_slash && !result.ends_with('/') {
        result.push('/');
    }
    result
}

/// True for `percent`% of calls.
fn roll(percent: f64) -> bool {
    percent >= 100.0 || fastrand::f64() * 100.0 < percent
}

fn abort_response(abort: &FaultAbort) -> Response<Body> {
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

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn cors_preflight_headers(h: &mut HeaderMap, policy: &CorsPolicy, origin: &str) {
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

fn cors_response_headers(h: &mut HeaderMap, policy: &CorsPolicy, origin: &str) {
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

fn redirect_response(status: StatusCode, location: &str) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn redirect(
    r: &Redirect,
    parts: &http::request::Parts,
    conn: &ConnInfo,
    host: &str,
) -> Response<Body> {
    let scheme = r.scheme.as_deref().unwrap_or(conn.scheme);
    let authority = r.authority.clone().unwrap_or_else(|| host.to_string());
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
    redirect_response(status, &format!("{scheme}://{authority}{port}{path}"))
}

fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
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

/// The path after `rewrite.uri` / `uriRegexRewrite`.
fn rewritten_path(route: &CompiledRoute, matched: Option<usize>, path: &str) -> Option<String> {
    let rw = route.route.rewrite.as_ref()?;
    if let Some((re, with)) = &route.rewrite_regex {
        return Some(re.replace_all(path, with.as_str()).into_owned());
    }
    let new = rw.uri.as_ref()?;
    let prefix = matched
        .and_then(|i| route.route.matches.get(i))
        .and_then(|m| match &m.uri {
            Some(StringMatcher::Prefix(p)) => Some(p.as_str()),
            _ => None,
        });
    Some(match prefix {
        Some(p) if path.len() >= p.len() => format!("{new}{}", &path[p.len()..]),
        _ => new.clone(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    mut parts: http::request::Parts,
    body: Body,
    conn: &ConnInfo,
    route: &CompiledRoute,
    matched: Option<usize>,
    state: &State,
    up: &mut Upstream,
) -> Result<Response<Body>, ProxyError> {
    let RouteAction::Forward(dests) = &route.route.action else {
        return Err(ProxyError::NoRoute);
    };
    let pick = pick_weighted(dests.iter().map(|d| d.weight), route.total_weight)
        .or(if dests.len() == 1 { Some(0) } else { None })
        .ok_or(ProxyError::NoHealthyUpstream)?;
    let dest = &dests[pick];
    up.cluster = Some(dest.cluster.clone());
    let cluster = state
        .clusters
        .get(&dest.cluster)
        .ok_or(ProxyError::NoCluster)?;
    if cluster.balancer.endpoints.is_empty() {
        return Err(ProxyError::NoHealthyUpstream);
    }

    // Headers as Envoy sends them upstream.
    let original_authority = authority(&parts).to_string();
    let peer_ip = conn.peer.ip().to_string();
    let xff = match header_str(&parts.headers, "x-forwarded-for") {
        Some(prev) => format!("{prev}, {peer_ip}"),
        None => peer_ip,
    };
    let upgrade = upgrade_protocol(&parts.headers);
    let downstream_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    let h = &mut parts.headers;
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
    if let Some(proto) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, proto.clone());
    }
    if h.get(header::TE).is_some_and(|v| v != "trailers") {
        h.remove(header::TE);
    }
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static(conn.scheme));
    apply_ops(h, &route.route.request_headers);
    apply_ops(h, &dest.request_headers);
    let authority = route
        .route
        .rewrite
        .as_ref()
        .and_then(|r| r.authority.clone())
        .unwrap_or(original_authority);
    if let Ok(v) = HeaderValue::from_str(&authority) {
        h.insert(header::HOST, v);
    }
    let per_connection = cluster.cluster.connections.max_requests_per_connection;
    if per_connection > 0
        && cluster.cluster.protocol == UpstreamProtocol::Http1
        && cluster
            .balancer
            .counters
            .requests_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % u64::from(per_connection)
            == u64::from(per_connection) - 1
    {
        // maxRequestsPerConnection: every Nth request to the cluster closes its connection,
        // so connections carry N requests on average (every request when N is 1).
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let path = parts.uri.path().to_string();
    let path_and_query = match rewritten_path(route, matched, &path) {
        Some(p) => match parts.uri.query() {
            Some(q) => format!("{p}?{q}"),
            None => p,
        },
        None => parts
            .uri
            .path_and_query()
            .map_or("/".into(), |p| p.to_string()),
    };

    // A body small enough to hold can be sent again on retry; others stream once.
    let retries = route.route.retries.as_ref();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let replayable = length.map_or(body.is_end_stream(), |n| n <= RETRY_BUFFER_LIMIT);
    let mut body = Some(body);
    let buffered: Option<Bytes> =
        if (retries.is_some() || !route.route.mirrors.is_empty()) && replayable {
            let b = body.take().expect("body present");
            if b.is_end_stream() {
                // No body (most GETs): nothing to read or hold.
                Some(Bytes::new())
            } else {
                Some(
                    b.collect()
                        .await
                        .map_err(|e| ProxyError::BadRequest(e.to_string()))?
                        .to_bytes(),
                )
            }
        } else {
            None
        };
    let max_attempts = match (retries, &buffered) {
        (Some(r), Some(_)) => r.attempts + 1,
        _ => 1,
    };

    // Mirrors get a copy (when the body could be held), fire and forget.
    if buffered.is_some() || body.is_none() {
        for m in &route.route.mirrors {
            if roll(m.percent)
                && let Some(target) = state.clusters.get(&m.cluster)
                && let Some((_, ep)) = target.pick(None)
            {
                let protocol = target.cluster.protocol;
                let (shadow, shadow_host) = shadow_request(
                    &parts,
                    &authority,
                    &path_and_query,
                    protocol,
                    target.clients.is_tls(),
                    buffered.clone(),
                );
                let clients = target.clients.clone();
                let addr = ep.authority();
                if let Ok(req) = shadow {
                    tokio::spawn(async move {
                        let sent = tokio::time::timeout(
                            Duration::from_secs(10),
                            clients.send(protocol, &addr, &shadow_host, req),
                        );
                        if let Ok(Ok(resp)) = sent.await {
                            // Drain the answer so the connection can be reused.
                            let _ = resp.into_body().collect().await;
                        }
                    });
                }
            }
        }
    }

    // `useClientProtocol` speaks the client's HTTP version upstream.
    let protocol = if cluster.cluster.connections.use_client_protocol {
        if parts.version == http::Version::HTTP_2 {
            UpstreamProtocol::Http2
        } else {
            UpstreamProtocol::Http1
        }
    } else {
        cluster.cluster.protocol
    };

    // Phase: pick endpoint, within the cluster's circuit breakers.
    let balancer = &cluster.balancer;
    let limits = &cluster.cluster.policy.circuit_breakers;
    let concurrency = match protocol {
        UpstreamProtocol::Http1 => limits.max_requests.min(
            limits
                .max_connections
                .saturating_add(limits.max_pending_requests),
        ),
        UpstreamProtocol::Http2 => limits.max_requests,
    };
    let _in_flight = InFlight::try_acquire(&balancer.counters.active_requests, concurrency)
        .ok_or(ProxyError::Overflow)?;
    let (hash, new_cookie) = hash_key(
        &cluster.cluster.policy.lb,
        &parts.headers,
        parts.uri.query(),
        conn,
    );

    // With a single attempt the headers move into the upstream request; retries copy them.
    let mut headers_once = (max_attempts == 1).then(|| std::mem::take(&mut parts.headers));
    let attempt_loop = async {
        let mut attempt = 0;
        let mut _retry_slot = None;
        loop {
            attempt += 1;
            let (index, endpoint) = cluster.pick(hash).ok_or(ProxyError::NoHealthyUpstream)?;
            let _endpoint_active = InFlight::acquire(&balancer.endpoints[index].active);
            let addr = endpoint.authority();
            up.host = Some(addr.clone());
            let uri = upstream_uri(
                protocol,
                cluster.clients.is_tls(),
                &authority,
                &path_and_query,
            )?;
            let mut req = Request::builder()
                .method(parts.method.clone())
                .uri(uri)
                .version(http::Version::HTTP_11)
                .body(match &buffered {
                    Some(b) => full(b.clone()),
                    None => body.take().unwrap_or_else(empty),
                })
                .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
            *req.headers_mut() = headers_once.take().unwrap_or_else(|| parts.headers.clone());
            if protocol == UpstreamProtocol::Http2 {
                *req.version_mut() = http::Version::HTTP_2;
            }
            let sent_at = Instant::now();
            let send = cluster.clients.send(protocol, &addr, &authority, req);
            let result = match retries.and_then(|r| r.per_try_timeout_ms) {
                Some(ms) => tokio::time::timeout(Duration::from_millis(ms), send)
                    .await
                    .unwrap_or(Err(ProxyError::Timeout)),
                None => send.await,
            };
            up.service_time = Some(sent_at.elapsed().as_millis() as u64);
            balancer.report(
                index,
                match &result {
                    Ok(r) => Outcome::Status(r.status().as_u16()),
                    Err(_) => Outcome::LocalFailure,
                },
            );
            let retriable = retries.is_some_and(|r| should_retry(r, &result));
            if attempt >= max_attempts || !retriable {
                // Retries ran out on an outcome that would have been retried: URX.
                if attempt > 1 && retriable {
                    up.flags
                        .insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
                }
                return result;
            }
            // Retries in flight are bounded too (`maxRetries`, and the retry budget).
            let mut retry_limit = limits.max_retries;
            if let Some((percent, min)) = cluster.cluster.policy.retry_budget {
                let active = balancer
                    .counters
                    .active_requests
                    .load(std::sync::atomic::Ordering::Relaxed);
                retry_limit =
                    retry_limit.min(((f64::from(active) * percent / 100.0) as u32).max(min));
            }
            _retry_slot = InFlight::try_acquire(&balancer.counters.active_retries, retry_limit);
            if _retry_slot.is_none() {
                return result;
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    };
    let result = match route.route.timeout_ms {
        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), attempt_loop)
            .await
            .unwrap_or(Err(ProxyError::Timeout)),
        None => attempt_loop.await,
    };
    let mut response = result?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(downstream) = downstream_upgrade {
            let upstream = hyper::upgrade::on(&mut response);
            tokio::spawn(splice_upgraded(downstream, upstream));
        }
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, empty()));
    }
    let (mut rparts, rbody) = response.into_parts();
    for name in &HOP_BY_HOP {
        rparts.headers.remove(name);
    }
    apply_ops(&mut rparts.headers, &dest.response_headers);
    if let Some(cookie) = new_cookie
        && let Ok(v) = HeaderValue::from_str(&cookie)
    {
        rparts.headers.append(header::SET_COOKIE, v);
    }
    Ok(Response::from_parts(rparts, boxed(rbody)))
}

/// The URI of an upstream request: the path alone over HTTP/1.1 (Host carries the
/// authority); scheme, authority and path over HTTP/2, where they become pseudo-headers.
fn upstream_uri(
    protocol: UpstreamProtocol,
    tls: bool,
    authority: &str,
    path_and_query: &str,
) -> Result<Uri, ProxyError> {
    let text = match protocol {
        UpstreamProtocol::Http1 => path_and_query.to_string(),
        UpstreamProtocol::Http2 => {
            let scheme = if tls { "https" } else { "http" };
            format!("{scheme}://{authority}{path_and_query}")
        }
    };
    text.parse()
        .map_err(|e: http::uri::InvalidUri| ProxyError::BadRequest(e.to_string()))
}

/// A copy of the request for a mirror, and its authority: Host gets Istio's `-shadow`
/// suffix.
fn shadow_request(
    parts: &http::request::Parts,
    authority: &str,
    path_and_query: &str,
    protocol: UpstreamProtocol,
    tls: bool,
    body: Option<Bytes>,
) -> (Result<Request<Body>, ProxyError>, String) {
    let shadow_host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    };
    let request = (|| {
        let uri = upstream_uri(protocol, tls, &shadow_host, path_and_query)?;
        let mut req = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .version(match protocol {
                UpstreamProtocol::Http1 => http::Version::HTTP_11,
                UpstreamProtocol::Http2 => http::Version::HTTP_2,
            })
            .body(body.map(full).unwrap_or_else(empty))
            .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        *req.headers_mut() = parts.headers.clone();
        if let Ok(v) = HeaderValue::from_str(&shadow_host) {
            req.headers_mut().insert(header::HOST, v);
        }
        Ok(req)
    })();
    (request, shadow_host)
}

/// The consistent-hash value of a request, and a `Set-Cookie` to send when the hash cookie
/// was absent and has been generated (as Envoy does for `httpCookie`).
fn hash_key(
    lb: &LbPolicy,
    headers: &HeaderMap,
    query: Option<&str>,
    conn: &ConnInfo,
) -> (Option<u64>, Option<String>) {
    let key = match lb {
        LbPolicy::RingHash { key, .. } | LbPolicy::Maglev { key, .. } => key,
        _ => return (None, None),
    };
    match key {
        HashKey::Header(name) => (header_str(headers, name).map(hash64), None),
        HashKey::SourceIp => (Some(hash64(conn.peer.ip())), None),
        HashKey::QueryParameter(name) => (
            query.and_then(|q| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then(|| hash64(v))
                })
            }),
            None,
        ),
        HashKey::Cookie {
            name,
            path,
            ttl_secs,
        } => {
            let existing = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| {
                    let (k, v) = c.trim().split_once('=')?;
                    (k == name).then(|| v.to_string())
                });
            match existing {
                Some(v) => (Some(hash64(v)), None),
                None => {
                    let value = format!("{:016x}", fastrand::u64(..));
                    let mut cookie = format!("{name}=\"{value}\"");
                    if let Some(p) = path {
                        cookie.push_str(&format!("; Path={p}"));
                    }
                    if let Some(ttl) = ttl_secs {
                        cookie.push_str(&format!("; Max-Age={ttl}"));
                    }
                    cookie.push_str("; HttpOnly");
                    (Some(hash64(format!("\"{value}\""))), Some(cookie))
                }
            }
        }
    }
}

/// The `Upgrade` protocol of an HTTP/1.1 upgrade request (WebSocket and the like).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    headers
        .get(header::UPGRADE)
        .filter(|_| connection_upgrade)
        .cloned()
}

/// After a 101, bytes flow both ways between client and upstream until either side closes.
async fn splice_upgraded(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    let (Ok(down), Ok(up)) = (downstream.await, upstream.await) else {
        tracing::debug!("an upgrade did not complete");
        return;
    };
    let mut down = hyper_util::rt::TokioIo::new(down);
    let mut up = hyper_util::rt::TokioIo::new(up);
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}

/// Envoy's jittered exponential backoff: 25 ms base, capped at 250 ms.
fn backoff(attempt: u32) -> Duration {
    let ceiling = (25u64 << attempt.min(4)).min(250);
    Duration::from_millis(fastrand::u64(0..=ceiling))
}

fn should_retry(policy: &RetryPolicy, result: &Result<Response<Body>, ProxyError>) -> bool {
    let on = &policy.retry_on;
    match result {
        Ok(resp) => on.retries_status(resp.status().as_u16()),
        Err(ProxyError::ConnectFailure) => {
            on.has(RetryOn::CONNECT_FAILURE)
                || on.has(RetryOn::SERVER_ERROR)
                || on.has(RetryOn::GATEWAY_ERROR)
        }
        Err(ProxyError::UpstreamReset) => {
            on.has(RetryOn::RESET)
                || on.has(RetryOn::SERVER_ERROR)
                || on.has(RetryOn::REFUSED_STREAM)
        }
        Err(ProxyError::Timeout) => on.has(RetryOn::SERVER_ERROR) || on.has(RetryOn::GATEWAY_ERROR),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_of("Example.com:8080"), "example.com");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of("[::1]:80"), "[::1]");
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(remove_dot_segments("/web/../api/x"), "/api/x");
        assert_eq!(remove_dot_segments("/a/./b/../../c"), "/c");
        assert_eq!(remove_dot_segments("/../../x"), "/x");
        assert_eq!(remove_dot_segments("/a/b/.."), "/a/");
        assert_eq!(remove_dot_segments("/a/b/."), "/a/b/");
    }

    #[test]
    fn backoff_is_bounded() {
        for a in 1..10 {
            assert!(backoff(a) <= Duration::from_millis(250));
        }
    }
}
