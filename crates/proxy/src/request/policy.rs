//! The policy phase: what may stop or change a request before it is forwarded:
//! authorization (AuthorizationPolicy, [`authz`]) before routing, then, on the matched
//! route, CORS preflights and injected faults (delays `DI`, aborts `FI`). JWT and rate
//! limits take their place here too.

use std::time::Duration;

use http::Response;
use meshwork_resources::route::CorsPolicy;

use crate::body::{Body, empty};
use crate::flags::ResponseFlags;
use crate::request::context::{RequestContext, header_str};
use crate::request::{authz, respond};
use crate::route_table::CompiledRoute;

/// What the policy phase decided.
pub enum Decision<'a> {
    /// Go on; the allowed CORS origin, if any, decorates the response.
    Continue(Option<(&'a CorsPolicy, String)>),
    /// Answer now.
    Answer(Response<Body>),
}

/// True for `percent`% of calls.
pub fn roll(percent: f64) -> bool {
    percent >= 100.0 || fastrand::f64() * 100.0 < percent
}

/// The proxy's authorization, before routing as Envoy's RBAC filter runs before the
/// router: the answer to a denied request, or `None`.
pub fn authorize(
    ctx: &mut RequestContext,
    parts: &http::request::Parts,
    authorization: &[meshwork_resources::authorization::AuthorizationPolicy],
    authenticated: Option<&crate::request::jwt::Authenticated>,
    trusted_proxies: u32,
) -> Option<Response<Body>> {
    if !authorization.is_empty() {
        let attributes = attributes(ctx, parts, authenticated, trusted_proxies);
        let audit = authz::audit(authorization, &attributes);
        let verdict = authz::evaluate(authorization, &attributes);
        ctx.audit = audit;
        if let authz::Verdict::Deny(policy) = verdict {
            ctx.flags.insert(ResponseFlags::UNAUTHORIZED);
            ctx.details = std::borrow::Cow::Owned(format!(
                "rbac_access_denied_matched_policy[{}]",
                policy.as_deref().unwrap_or("none")
            ));
            let mut r = Response::new(crate::body::full("RBAC: access denied"));
            *r.status_mut() = http::StatusCode::FORBIDDEN;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            return Some(r);
        }
    }
    None
}

/// What a request is authorized on: its connection, host, method, normalized path, the
/// original client's address (behind `trusted_proxies`) and its verified JWT.
pub fn attributes<'a>(
    ctx: &'a RequestContext,
    parts: &'a http::request::Parts,
    authenticated: Option<&'a crate::request::jwt::Authenticated>,
    trusted_proxies: u32,
) -> authz::Attributes<'a> {
    authz::Attributes {
        remote_ip: remote_ip(&parts.headers, ctx.conn.peer.ip(), trusted_proxies),
        host: ctx.host(),
        authority: &ctx.authority,
        method: parts.method.as_str(),
        path: parts.uri.path(),
        request: authenticated,
        metadata: Some(&ctx.metadata),
        ..authz::Attributes::of_connection(&ctx.conn, &parts.headers)
    }
}

/// The original client's address: with `trusted` proxies in front, the entry that many
/// from the right of `X-Forwarded-For` (as Envoy's `xff_num_trusted_hops`); else, or
/// when the header has fewer, the peer.
pub fn remote_ip(
    headers: &http::HeaderMap,
    peer: std::net::IpAddr,
    trusted: u32,
) -> std::net::IpAddr {
    if trusted == 0 {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(trusted as usize)
        .and_then(|i| entries.get(i))
        .and_then(|e| e.parse().ok())
        .unwrap_or(peer)
}

/// Runs the route's policies on the request (authorization ran before routing).
pub async fn apply<'a>(
    ctx: &mut RequestContext,
    route: &'a CompiledRoute,
    parts: &http::request::Parts,
) -> Decision<'a> {
    // CORS: preflights from allowed origins are answered here; others go upstream
    // (FORWARD, the default) or are answered without CORS headers (IGNORE).
    let mut allowed_origin = None;
    if let Some(policy) = &route.route.cors
        && let Some(origin) = header_str(&parts.headers, "origin")
    {
        let allowed = route.cors_origins.iter().any(|m| m.matches(&origin, false));
        if parts.method == http::Method::OPTIONS
            && parts.headers.contains_key("access-control-request-method")
            && (allowed || !policy.forward_unmatched_preflights)
        {
            ctx.answered("cors_response");
            let mut r = Response::new(empty());
            if allowed {
                respond::cors_preflight_headers(r.headers_mut(), policy, &origin);
            }
            return Decision::Answer(r);
        }
        if allowed {
            allowed_origin = Some((policy, origin));
        }
    }
    if let Some(fault) = &route.route.fault {
        if let Some((ms, percent)) = fault.delay
            && roll(percent)
        {
            ctx.flags.insert(ResponseFlags::DELAY_INJECTED);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(abort) = &fault.abort
            && roll(abort.percent)
        {
            ctx.flags.insert(ResponseFlags::FAULT_INJECTED);
            ctx.answered("fault_filter_abort");
            return Decision::Answer(respond::abort(abort));
        }
    }
    Decision::Continue(allowed_origin)
}
