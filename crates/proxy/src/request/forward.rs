//! The forward phase: the request as Envoy sends it upstream (hop-by-hop headers removed,
//! X-Forwarded-For and -Proto, header operations, rewrites), mirrors, then attempts to
//! endpoints with per-try and route timeouts, retries with backoff within the retry
//! budget, and outlier reporting; then the response as it goes back (upgrades spliced,
//! hop-by-hop headers removed, the hash cookie set).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use meshwork_resources::cluster::UpstreamProtocol;
use meshwork_resources::route::{RetryOn, RetryPolicy, StringMatcher, WeightedCluster};

use crate::balancer::{Held, InFlight, Outcome};
use crate::body::Holding;
use crate::body::{Body, boxed, empty, full};
use crate::error::UpstreamError;
use crate::flags::ResponseFlags;
use crate::request::context::{RequestContext, X_FORWARDED_FOR, X_FORWARDED_PROTO};
use crate::request::pick;
use crate::request::policy::roll;
use crate::request::reply::{BadRequest, PhaseError, PickError};
use crate::request::respond::apply_ops;
use crate::route_table::CompiledRoute;
use crate::runtime::{ClusterState, Runtime};

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

/// Removes the hop-by-hop headers. Most messages have none: one pass over the names
/// present finds that, cheaper than a lookup per name.
fn remove_hop_by_hop(h: &mut HeaderMap) {
    if h.keys().any(|k| HOP_BY_HOP.contains(k)) {
        for name in &HOP_BY_HOP {
            h.remove(name);
        }
    }
}

/// Forwards the request to one of the route's destinations.
pub async fn forward(
    ctx: &mut RequestContext,
    mut parts: http::request::Parts,
    body: Body,
    route: &CompiledRoute,
    matched: Option<usize>,
    dests: &[WeightedCluster],
    state: &Runtime,
) -> Result<Response<Body>, PhaseError> {
    let (dest, cluster) = match pick::destination(route, dests, state) {
        Ok(found) => found,
        Err((name, e)) => {
            ctx.cluster = name.map(Into::into);
            return Err(e.into());
        }
    };
    ctx.cluster = Some(cluster.name.clone());
    ctx.peer = Some(cluster.peer.clone());
    let (host, downstream_upgrade) = upstream_headers(ctx, &mut parts, route, dest, cluster);
    let authority = host.to_str().unwrap_or_default();
    // A mesh destination is told who calls (Istio's metadata exchange).
    let mesh = cluster.mesh_mtls();
    if mesh {
        state.exchange.add(&mut parts.headers);
    }
    let path_and_query = upstream_path(route, matched, &parts.uri)?;

    // A body small enough to hold can be sent again on retry, or to mirrors; others
    // stream once.
    let retries = route.route.retries.as_ref();
    let wants_copy = retries.is_some() || !route.route.mirrors.is_empty();
    let (held, mut streamed) = hold_body(body, &parts, wants_copy).await?;
    let max_attempts = match (retries, &held) {
        (Some(r), Some(_)) => r.attempts + 1,
        _ => 1,
    };
    if held.is_some() || streamed.is_none() {
        mirror(route, state, &parts, authority, &path_and_query, &held);
    }

    // `useClientProtocol` speaks the client's HTTP version upstream.
    let protocol = match cluster.cluster.connections.use_client_protocol {
        true if parts.version == http::Version::HTTP_2 => UpstreamProtocol::Http2,
        true => UpstreamProtocol::Http1,
        false => cluster.cluster.protocol,
    };
    let in_flight = pick::admit(cluster, protocol)?;
    let (hash, new_cookie) = pick::hash_key(
        &cluster.cluster.policy.lb,
        &parts.headers,
        parts.uri.query(),
        &ctx.conn,
    );
    let uri = upstream_uri(
        protocol,
        cluster.clients.is_tls(),
        authority,
        &path_and_query,
    )?;

    // An endpoint may close an HTTP/1.1 connection just as a request goes out on it (a
    // kept-alive one it found idle, or one it drains). A request it can safely get twice
    // (an idempotent method, RFC 9110 9.2.2, and no body) is then sent again, once, on a
    // new connection, whatever the retry policy says.
    let bodiless = match (&held, &streamed) {
        (Some(b), _) => b.is_empty(),
        (None, Some(s)) => s.is_end_stream(),
        (None, None) => true,
    };
    let mut resend =
        bodiless && parts.method.is_idempotent() && protocol == UpstreamProtocol::Http1;
    let balancer = &cluster.balancer;
    let attempts = async {
        let mut attempt = 0;
        let mut _retry_slot = None;
        loop {
            attempt += 1;
            let (index, endpoint) = cluster
                .pick(hash)
                .ok_or(PhaseError::Pick(PickError::NoHealthyUpstream))?;
            let endpoint_active = Held::acquire(&balancer.endpoints[index], |e| &e.active);
            let addr = cluster.authority(endpoint, &ctx.conn);
            let sent_at = Instant::now();
            let mut fresh = false;
            let result = loop {
                let mut req = Request::builder()
                    .method(parts.method.clone())
                    .uri(uri.clone())
                    .version(match protocol {
                        UpstreamProtocol::Http1 => http::Version::HTTP_11,
                        UpstreamProtocol::Http2 => http::Version::HTTP_2,
                    })
                    .body(match &held {
                        Some(b) => full(b.clone()),
                        None => streamed.take().unwrap_or_else(empty),
                    })
                    .map_err(|e| BadRequest(e.to_string()))?;
                // The headers move into the last request that may be sent; earlier ones
                // get a copy.
                *req.headers_mut() = if resend || attempt < max_attempts {
                    parts.headers.clone()
                } else {
                    std::mem::take(&mut parts.headers)
                };
                let send = cluster.clients.send(protocol, &addr, authority, req, fresh);
                let result = match retries.and_then(|r| r.per_try_timeout_ms) {
                    Some(ms) => tokio::time::timeout(Duration::from_millis(ms), send)
                        .await
                        .unwrap_or(Err(UpstreamError::Timeout)),
                    None => send.await,
                };
                if resend && matches!(result, Err(UpstreamError::Reset)) {
                    tracing::debug!(endpoint = %addr, "the connection closed under the request; sent again");
                    (resend, fresh) = (false, true);
                    continue;
                }
                break result;
            };
            ctx.upstream_host = Some(addr);
            ctx.service_time = Some(sent_at.elapsed().as_millis() as u64);
            // The client's own failures never count against the endpoint.
            match &result {
                Ok(r) => balancer.report(index, Outcome::Status(r.status().as_u16())),
                Err(UpstreamError::RequestBody) => {}
                Err(_) => balancer.report(index, Outcome::LocalFailure),
            }
            let retriable = retries.is_some_and(|r| should_retry(r, &result));
            if attempt >= max_attempts || !retriable {
                // Retries ran out on an outcome that would have been retried: URX.
                if attempt > 1 && retriable {
                    ctx.flags
                        .insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
                }
                return result
                    .map(|r| (r, endpoint_active))
                    .map_err(PhaseError::from);
            }
            drop(endpoint_active);
            // The previous retry's slot is given back before the next is taken.
            _retry_slot = None;
            _retry_slot = retry_slot(cluster);
            if _retry_slot.is_none() {
                return result
                    .map(|r| (r, Held::acquire(&balancer.endpoints[index], |e| &e.active)))
                    .map_err(PhaseError::from);
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    };
    let (response, endpoint_active) = match route.route.timeout_ms {
        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), attempts)
            .await
            .unwrap_or(Err(PhaseError::Upstream(UpstreamError::Timeout)))?,
        None => attempts.await?,
    };
    let mut response = downstream_response(
        response,
        downstream_upgrade.map(|u| (u, ctx.conn.clone())),
        dest,
        new_cookie,
    );
    // What the destination said of itself is for the metrics, never for the app.
    let told = state.exchange.take(response.headers_mut(), mesh);
    if mesh {
        ctx.counterpart = told;
    }
    // The request is in flight, for the circuit breakers and least-request balancing,
    // until its response body has ended.
    Ok(response.map(|body| boxed(Holding::new(body, (in_flight, endpoint_active)))))
}

/// Sets the headers as Envoy sends them upstream; returns the authority sent (the Host
/// header) and the client's side of an upgrade.
fn upstream_headers(
    ctx: &RequestContext,
    parts: &mut http::request::Parts,
    route: &CompiledRoute,
    dest: &WeightedCluster,
    cluster: &ClusterState,
) -> (HeaderValue, Option<hyper::upgrade::OnUpgrade>) {
    // The client's Host goes on as it is (no copy) unless the URI carries the authority
    // (HTTP/2, absolute form) or the route rewrites it.
    let original_authority = match parts.headers.get(header::HOST) {
        Some(v) if parts.uri.authority().is_none() => Some(v.clone()),
        _ => HeaderValue::from_str(&ctx.authority).ok(),
    };
    let xff = ctx.forwarded_for(&parts.headers);
    let upgrade = upgrade_protocol(&parts.headers);
    let downstream_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    let h = &mut parts.headers;
    remove_hop_by_hop(h);
    if let Some(proto) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, proto.clone());
    }
    if h.get(header::TE).is_some_and(|v| v != "trailers") {
        h.remove(header::TE);
    }
    h.insert(X_FORWARDED_FOR, xff);
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(ctx.conn.scheme));
    apply_ops(h, &route.route.request_headers);
    apply_ops(h, &dest.request_headers);
    let rewritten = route
        .route
        .rewrite
        .as_ref()
        .and_then(|r| r.authority.as_deref())
        .and_then(|a| HeaderValue::from_str(a).ok());
    let authority = rewritten
        .or(original_authority)
        .unwrap_or_else(|| HeaderValue::from_static(""));
    if !authority.is_empty() {
        h.insert(header::HOST, authority.clone());
    }
    let per_connection = cluster.cluster.connections.max_requests_per_connection;
    if per_connection > 0
        && cluster.cluster.protocol == UpstreamProtocol::Http1
        && cluster
            .balancer
            .counters
            .requests_sent
            .fetch_add(1, Ordering::Relaxed)
            % u64::from(per_connection)
            == u64::from(per_connection) - 1
    {
        // maxRequestsPerConnection: every Nth request to the cluster closes its connection,
        // so connections carry N requests on average (every request when N is 1).
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    (authority, downstream_upgrade)
}

/// The path (and query) sent upstream, after `rewrite.uri` / `uriRegexRewrite`.
fn upstream_path(
    route: &CompiledRoute,
    matched: Option<usize>,
    uri: &Uri,
) -> Result<PathAndQuery, BadRequest> {
    // Unchanged, the request's own path goes on (no copy).
    let original = || {
        Ok(uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")))
    };
    let Some(rw) = route.route.rewrite.as_ref() else {
        return original();
    };
    let path = uri.path();
    let rewritten = if let Some((re, with)) = &route.rewrite_regex {
        re.replace_all(path, with.as_str()).into_owned()
    } else if let Some(new) = &rw.uri {
        let prefix = matched
            .and_then(|i| route.route.matches.get(i))
            .and_then(|m| match &m.uri {
                Some(StringMatcher::Prefix(p)) => Some(p.as_str()),
                _ => None,
            });
        match prefix {
            Some(p) if path.len() >= p.len() => format!("{new}{}", &path[p.len()..]),
            _ => new.clone(),
        }
    } else {
        return original();
    };
    let text = match uri.query() {
        Some(q) => format!("{rewritten}?{q}"),
        None => rewritten,
    };
    PathAndQuery::from_maybe_shared(Bytes::from(text)).map_err(|e| BadRequest(e.to_string()))
}

/// Reads a body small enough to hold when a copy is wanted (retries, mirrors). Returns
/// the held bytes, or the body to stream once.
///
/// An HTTP/1.1 chunked body (no Content-Length) is read ahead up to the same limit before
/// anything goes upstream, so that a malformed chunk is the client's 400 and never reaches
/// the backend; one that ends within the limit can be retried too.
async fn hold_body(
    body: Body,
    parts: &http::request::Parts,
    wants_copy: bool,
) -> Result<(Option<Bytes>, Option<Body>), BadRequest> {
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if body.is_end_stream() {
        // No body (most GETs): nothing to read or hold.
        return Ok((wants_copy.then(Bytes::new), (!wants_copy).then(empty)));
    }
    match length {
        Some(n) if wants_copy && n <= RETRY_BUFFER_LIMIT => {
            let bytes = body
                .collect()
                .await
                .map_err(|e| BadRequest(e.to_string()))?
                .to_bytes();
            Ok((Some(bytes), None))
        }
        None if parts.version == http::Version::HTTP_11 => read_ahead(body, wants_copy).await,
        _ => Ok((None, Some(body))),
    }
}

/// How long a chunked body is read ahead before it is streamed on regardless, so that a
/// client that sends a little and waits for an answer is not held up.
const READ_AHEAD_WAIT: Duration = Duration::from_millis(200);

/// Reads a chunked body up to the retry buffer, for at most [`READ_AHEAD_WAIT`]: held when
/// it ended within both (and a copy is wanted), else streamed from what was read on.
async fn read_ahead(
    mut body: Body,
    wants_copy: bool,
) -> Result<(Option<Bytes>, Option<Body>), BadRequest> {
    let mut frames: Vec<hyper::body::Frame<Bytes>> = Vec::new();
    let mut size = 0u64;
    let mut only_data = true;
    let deadline = tokio::time::Instant::now() + READ_AHEAD_WAIT;
    while size <= RETRY_BUFFER_LIMIT {
        let Ok(next) = tokio::time::timeout_at(deadline, body.frame()).await else {
            break;
        };
        match next {
            None => {
                if wants_copy && only_data {
                    let mut all = bytes::BytesMut::with_capacity(size as usize);
                    for f in frames {
                        if let Ok(d) = f.into_data() {
                            all.extend_from_slice(&d);
                        }
                    }
                    return Ok((Some(all.freeze()), None));
                }
                return Ok((None, Some(boxed(crate::body::Prefixed::new(frames, None)))));
            }
            Some(Err(e)) => return Err(BadRequest(format!("malformed request body: {e}"))),
            Some(Ok(frame)) => {
                match frame.data_ref() {
                    Some(d) => size += d.len() as u64,
                    None => only_data = false,
                }
                frames.push(frame);
            }
        }
    }
    Ok((
        None,
        Some(boxed(crate::body::Prefixed::new(frames, Some(body)))),
    ))
}

/// Sends copies to the route's mirrors, fire and forget.
fn mirror(
    route: &CompiledRoute,
    state: &Runtime,
    parts: &http::request::Parts,
    authority: &str,
    path_and_query: &PathAndQuery,
    held: &Option<Bytes>,
) {
    for m in &route.route.mirrors {
        let Some(target) = state.clusters.get(&m.cluster).filter(|_| roll(m.percent)) else {
            continue;
        };
        let Some((_, ep)) = target.pick(None) else {
            continue;
        };
        let protocol = target.cluster.protocol;
        let (shadow, shadow_host) = shadow_request(
            parts,
            authority,
            path_and_query,
            protocol,
            target.clients.is_tls(),
            held.clone(),
        );
        let Ok(req) = shadow else { continue };
        let clients = target.clients.clone();
        let addr = ep.authority.clone();
        tokio::spawn(async move {
            let sent = tokio::time::timeout(
                Duration::from_secs(10),
                clients.send(protocol, &addr, &shadow_host, req, false),
            );
            if let Ok(Ok(resp)) = sent.await {
                // Drain the answer so the connection can be reused.
                let _ = resp.into_body().collect().await;
            }
        });
    }
}

/// A retry slot within `maxRetries` and the retry budget, or `None` when there is none.
fn retry_slot(cluster: &ClusterState) -> Option<InFlight<'_>> {
    let counters = &cluster.balancer.counters;
    let mut limit = cluster.cluster.policy.circuit_breakers.max_retries;
    if let Some((percent, min)) = cluster.cluster.policy.retry_budget {
        let active = counters.active_requests.load(Ordering::Relaxed);
        limit = limit.min(((f64::from(active) * percent / 100.0) as u32).max(min));
    }
    InFlight::try_acquire(&counters.active_retries, limit)
}

/// The upstream's response as it goes back to the client.
fn downstream_response(
    mut response: Response<Body>,
    downstream_upgrade: Option<(
        hyper::upgrade::OnUpgrade,
        std::sync::Arc<crate::connection::Connection>,
    )>,
    dest: &WeightedCluster,
    new_cookie: Option<String>,
) -> Response<Body> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some((downstream, conn)) = downstream_upgrade {
            let upstream = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                splice_upgraded(downstream, upstream).await;
                // The connection stays counted (drain, listener cap) while it is spliced.
                drop(conn);
            });
        }
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, empty());
    }
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    apply_ops(&mut parts.headers, &dest.response_headers);
    if let Some(cookie) = new_cookie
        && let Ok(v) = HeaderValue::from_str(&cookie)
    {
        parts.headers.append(header::SET_COOKIE, v);
    }
    Response::from_parts(parts, body)
}

/// The URI of an upstream request: the path alone over HTTP/1.1 (Host carries the
/// authority); scheme, authority and path over HTTP/2, where they become pseudo-headers.
fn upstream_uri(
    protocol: UpstreamProtocol,
    tls: bool,
    authority: &str,
    path_and_query: &PathAndQuery,
) -> Result<Uri, BadRequest> {
    match protocol {
        UpstreamProtocol::Http1 => Ok(Uri::from(path_and_query.clone())),
        UpstreamProtocol::Http2 => {
            let scheme = if tls { "https" } else { "http" };
            format!("{scheme}://{authority}{path_and_query}")
                .parse()
                .map_err(|e: http::uri::InvalidUri| BadRequest(e.to_string()))
        }
    }
}

/// A copy of the request for a mirror, and its authority: Host gets Istio's `-shadow`
/// suffix.
fn shadow_request(
    parts: &http::request::Parts,
    authority: &str,
    path_and_query: &PathAndQuery,
    protocol: UpstreamProtocol,
    tls: bool,
    body: Option<Bytes>,
) -> (Result<Request<Body>, BadRequest>, String) {
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
            .map_err(|e| BadRequest(e.to_string()))?;
        *req.headers_mut() = parts.headers.clone();
        if let Ok(v) = HeaderValue::from_str(&shadow_host) {
            req.headers_mut().insert(header::HOST, v);
        }
        Ok(req)
    })();
    (request, shadow_host)
}

/// The `Upgrade` value to forward: WebSocket only (Istio's one allowed upgrade). Any other
/// token (`h2c`) is dropped with the hop-by-hop headers, so nothing else can turn the
/// connection into a tunnel past routing and policy.
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    crate::request::checks::upgrade_tokens(headers)
        .iter()
        .any(|t| t == "websocket")
        .then(|| HeaderValue::from_static("websocket"))
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

/// Whether an attempt's outcome is retried, as Envoy reads `retryOn`. A connection that
/// failed before the request was sent is safe to retry; a reset after it was sent (the
/// endpoint may have acted on it) only under `reset` or `5xx`.
fn should_retry(policy: &RetryPolicy, result: &Result<Response<Body>, UpstreamError>) -> bool {
    let on = &policy.retry_on;
    match result {
        Ok(resp) => on.retries_status(resp.status().as_u16()),
        Err(UpstreamError::ConnectFailure | UpstreamError::Tls { .. }) => {
            on.has(RetryOn::CONNECT_FAILURE)
                || on.has(RetryOn::SERVER_ERROR)
                || on.has(RetryOn::GATEWAY_ERROR)
                || on.has(RetryOn::RESET_BEFORE_REQUEST)
        }
        Err(UpstreamError::Reset | UpstreamError::Protocol) => {
            on.has(RetryOn::RESET) || on.has(RetryOn::SERVER_ERROR)
        }
        Err(UpstreamError::Timeout) => {
            on.has(RetryOn::SERVER_ERROR) || on.has(RetryOn::GATEWAY_ERROR)
        }
        Err(UpstreamError::RequestBody) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &str) -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: None,
            retry_on: RetryOn::parse(on).0,
        }
    }

    #[test]
    fn resets_after_the_request_was_sent_are_retried_only_under_reset_or_5xx() {
        let default = policy(
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,503",
        );
        let reset = Err(UpstreamError::Reset);
        assert!(!should_retry(&default, &reset), "Istio's default");
        assert!(!should_retry(&default, &Err(UpstreamError::Protocol)));
        assert!(should_retry(&default, &Err(UpstreamError::ConnectFailure)));
        assert!(should_retry(&policy("reset"), &reset));
        assert!(should_retry(&policy("5xx"), &reset));
        assert!(!should_retry(&policy("gateway-error"), &reset));
        assert!(!should_retry(
            &policy("5xx"),
            &Err(UpstreamError::RequestBody)
        ));
    }

    #[test]
    fn backoff_is_bounded() {
        for a in 1..10 {
            assert!(backoff(a) <= Duration::from_millis(250));
        }
    }
}
