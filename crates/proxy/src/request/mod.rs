//! The HTTP request path, as named phases over one [`RequestContext`], after the
//! [`checks`] of what Envoy refuses outright (bad Host, `*` targets, CONNECT, upgrades
//! other than WebSocket):
//!
//! 1. **select server** ([`select::server`]): the Gateway server of the listener that
//!    serves the request (by SNI on TLS, else by Host); its `httpsRedirect`.
//! 2. **match route** ([`select::route`]): virtual host by host, first matching route.
//! 3. **policy**: authorization ([`policy::authorize`], before routing, as Envoy's RBAC
//!    filter runs before its router), then on the route ([`policy::apply`]) CORS
//!    preflights and injected faults; JWT and rate limits go here too.
//! 4. **act**: a redirect or direct response ([`respond`]), or
//! 5. **pick endpoint** ([`pick`]) and **forward** ([`forward`]): circuit breakers, the
//!    balancer, attempts with per-try and route timeouts, retries, mirrors.
//! 6. **respond**: header operations, CORS headers, the `server` header; a phase that
//!    stops the request answers with its [`reply::LocalReply`].
//!
//! The accept, inspection and TLS phases before these are in [`crate::listener`]. Every
//! request ends at the recorder ([`crate::recorder`]), whether or not the access log is on.

pub mod authz;
pub mod checks;
pub mod context;
pub mod ext_authz;
pub mod forward;
pub mod jwt;
pub mod path;
pub mod pick;
pub mod policy;
pub mod reply;
pub mod respond;
pub mod select;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use meshwork_resources::route::RouteAction;

use crate::Shared;
use crate::body::{Body, BodyEnd, Counted, Ended, boxed};
use crate::connection::Connection;
use crate::flags::ResponseFlags;
use crate::recorder::{Kind, Outcome};
use crate::runtime::Runtime;
use context::{RequestContext, ensure_request_id};
use policy::Decision;
use reply::LocalReply;

/// Serves one request.
pub async fn handle(
    req: Request<Incoming>,
    conn: Arc<Connection>,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    let state = shared.state.load_full();
    let (mut parts, body) = req.into_parts();
    ensure_request_id(&mut parts.headers);
    let mut ctx = RequestContext::new(conn, &parts);
    let inbound_peer = state.inbound_peers.get(&ctx.conn.bind);
    ctx.peer = inbound_peer.or(state.no_destination.as_ref()).cloned();
    // Peer metadata never reaches an app; at a sidecar's inbound port it tells who the
    // client is, when its certificate vouches for it.
    let trusted = inbound_peer.is_some() && ctx.conn.peer_identity.is_some();
    ctx.counterpart = state.exchange.take(&mut parts.headers, trusted);
    // Phase: the trace this request joins or starts; its next hop's parent is this one.
    let span = state.tracer.as_ref().and_then(|t| {
        let request = (ctx.conn.scheme, ctx.authority.as_str());
        crate::trace::Pending::begin(t, &mut parts, request, inbound_peer.is_some())
    });
    let grpc = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // The record only when a log or metric tags want it; the byte counting when they or
    // the metrics do.
    let inbound = inbound_peer.is_some();
    let entry = state.telemetry.wants_entry(inbound).then(|| {
        let mut entry = ctx.entry(&parts);
        entry.facts.inbound = inbound;
        entry.facts.request_headers =
            crate::recorder::Telemetry::keep(&state.telemetry.request_headers, &parts.headers);
        entry
    });
    let measured = entry.is_some() || shared.recorder.metrics.is_some();
    // The request's bytes, counted only when something records them.
    let received = measured.then(|| Arc::new(AtomicU64::new(0)));
    let body = match &received {
        Some(received) => boxed(Counted::new(boxed(body), received.clone(), None)),
        None => boxed(body),
    };
    // A client that goes away before its answer is still recorded (`DC`).
    let mut unanswered = Unanswered {
        shared: shared.clone(),
        state: state.clone(),
        entry,
        answered: false,
    };
    let http1 = parts.version < http::Version::HTTP_2;
    let response = match run(&mut ctx, parts, body, &state, &shared.settings).await {
        Ok(r) => r,
        Err(reply) => {
            ctx.flags.insert(reply.flags);
            ctx.details = reply.details.clone();
            let mut response = respond::local_reply(&reply);
            // After a protocol error nothing more is read from an HTTP/1 connection: where
            // this request ends, and the next begins, is in doubt.
            if http1
                && reply
                    .flags
                    .contains(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR)
            {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    unanswered.answered = true;
    let entry = unanswered.entry.take();
    drop(unanswered);
    let (mut rparts, rbody) = response.into_parts();
    rparts
        .headers
        .insert(header::SERVER, HeaderValue::from_static("meshwork"));
    let mut outcome = Outcome::new(Kind::Http, rparts.status.as_u16(), ctx.flags, ctx.details);
    outcome.peer = ctx.peer.take();
    let workload = ctx.counterpart.take();
    if outcome.peer.as_ref().is_some_and(|p| p.inbound()) {
        // A mesh client learns who answered.
        if workload.is_some() {
            state.exchange.add(&mut rparts.headers);
        }
        outcome.downstream = Some(crate::metrics::Counterpart {
            workload,
            ..crate::metrics::Counterpart::of(&ctx.conn)
        });
    } else if workload.is_some() {
        outcome.downstream = Some(crate::metrics::Counterpart {
            workload,
            ..Default::default()
        });
    }
    outcome.grpc = grpc;
    outcome.grpc_status = rparts
        .headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    // The span, finished when the response is.
    let span = span.map(|pending| {
        let inbound = outcome.peer.as_ref().is_some_and(|p| p.inbound());
        pending.answered(
            &state.config.node,
            inbound,
            rparts.status.as_u16(),
            ctx.cluster.as_deref(),
            &ctx.authority,
        )
    });
    let finish = move |flags: ResponseFlags| {
        if let Some(span) = span {
            span.finish(flags);
        }
    };
    if !measured {
        finish(outcome.flags);
        shared.recorder.record(outcome, None, &state.telemetry);
        return Ok(Response::from_parts(rparts, rbody));
    }
    let entry = entry.map(|mut entry| {
        entry.response_code = rparts.status.as_u16();
        entry.upstream_cluster = ctx.cluster;
        entry.upstream_host = ctx.upstream_host;
        entry.upstream_service_time = ctx.service_time;
        entry.route_name = ctx.route;
        entry.audit_policy = ctx.audit;
        entry.facts.response_headers =
            crate::recorder::Telemetry::keep(&state.telemetry.response_headers, &rparts.headers);
        entry
    });
    let sent = Arc::new(AtomicU64::new(0));
    let sent_end = sent.clone();
    let start = ctx.start;
    let recorder = shared.clone();
    let recorded_state = state.clone();
    // Recorded when the response body ends, with the bytes each way.
    let on_end = Box::new(move |ended: Ended| {
        if ended.grpc_status.is_some() {
            outcome.grpc_status = ended.grpc_status;
        }
        // A body cut short: the upstream failed mid-body (UC), or the client left (DC).
        match ended.end {
            BodyEnd::Complete => {}
            BodyEnd::Failed => outcome
                .flags
                .insert(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION),
            BodyEnd::Abandoned => outcome
                .flags
                .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION),
        }
        outcome.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
        outcome.request_bytes = received.as_ref().map_or(0, |r| r.load(Ordering::Relaxed));
        outcome.response_bytes = sent_end.load(Ordering::Relaxed);
        let entry = entry.map(|mut entry| {
            entry.duration = outcome.duration_ms as u64;
            entry.bytes_received = outcome.request_bytes;
            entry.bytes_sent = outcome.response_bytes;
            entry
        });
        finish(outcome.flags);
        recorder
            .recorder
            .record(outcome, entry, &recorded_state.telemetry);
    });
    Ok(Response::from_parts(
        rparts,
        boxed(Counted::new(rbody, sent, Some(on_end))),
    ))
}

/// Records a request whose client went away before it was answered.
struct Unanswered {
    shared: Arc<Shared>,
    state: Arc<Runtime>,
    entry: Option<crate::access_log::Entry>,
    answered: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let outcome = Outcome::new(
            Kind::Http,
            0,
            ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
            std::borrow::Cow::Borrowed("downstream_remote_disconnect"),
        );
        let entry = self.entry.take().map(|mut entry| {
            entry.response_code = 0;
            entry
        });
        self.shared
            .recorder
            .record(outcome, entry, &self.state.telemetry);
    }
}

/// The phases after the connection's: select server, match route, policy, act.
async fn run(
    ctx: &mut RequestContext,
    mut parts: http::request::Parts,
    body: Body,
    state: &Runtime,
    settings: &crate::settings::ProxySettings,
) -> Result<Response<Body>, LocalReply> {
    checks::check(&parts, settings)?;
    path::normalize(&mut parts, state.config.http.path_normalization);
    // Phase: end-user authentication, then authorization, before routing.
    let authenticated = match &state.jwt {
        Some(jwt) if !ctx.conn.outbound => jwt.authenticate(&mut parts)?,
        _ => None,
    };
    let trusted = state.config.http.num_trusted_proxies;
    // Phase: external authorization, for the requests a CUSTOM policy matches.
    if !ctx.conn.outbound
        && let Some(ext) = &state.config.ext_authz
        && authz::custom_matches(
            &state.config.authorization,
            &policy::attributes(ctx, &parts, authenticated.as_ref(), trusted),
        )
        && let Some(answer) =
            ext_authz::check(ext, state.ext_authz.as_deref(), ctx, &mut parts).await
    {
        return Ok(answer);
    }
    if !ctx.conn.outbound
        && let Some(denied) = policy::authorize(
            ctx,
            &parts,
            &state.config.authorization,
            authenticated.as_ref(),
            trusted,
        )
    {
        return Ok(denied);
    }
    let server = select::server(ctx, state)?;
    if server.chain.https_redirect && ctx.conn.scheme == "http" {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        ctx.answered("direct_response");
        return Ok(respond::redirect_to(
            StatusCode::MOVED_PERMANENTLY,
            &format!("https://{}{path}", ctx.host()),
        ));
    }
    let (route, matched) = select::route(ctx, state, server, &parts)?;
    let cors = match policy::apply(ctx, route, &parts).await {
        Decision::Continue(cors) => cors,
        Decision::Answer(r) => return Ok(r),
    };
    let mut response = match &route.route.action {
        RouteAction::Redirect(r) => {
            ctx.answered("direct_response");
            respond::redirect(r, &parts, ctx.conn.scheme, ctx.host())
        }
        RouteAction::DirectResponse { status, body } => {
            ctx.answered("direct_response");
            respond::direct(*status, body)
        }
        RouteAction::Forward(dests) => {
            forward::forward(ctx, parts, body, route, matched, dests, state).await?
        }
    };
    respond::apply_ops(response.headers_mut(), &route.route.response_headers);
    if let Some((policy, origin)) = cors {
        respond::cors_response_headers(response.headers_mut(), policy, &origin);
    }
    Ok(response)
}
