//! The select-server and match-route phases. The server is chosen again for each request,
//! on the runtime in force (a reload may have moved it): TLS connections keep the name
//! they were accepted for (SNI), plaintext ones use the Host. Then the route table of the
//! server picks the virtual host by host and the first route whose conditions hold.

use crate::request::context::RequestContext;
use crate::request::reply::NoRoute;
use crate::route::{RequestFacts, find_route, virtual_host};
use crate::route_table::CompiledRoute;
use crate::runtime::{Runtime, ServerState};

/// The server of the request's listener that serves it.
pub fn server<'a>(ctx: &RequestContext, state: &'a Runtime) -> Result<&'a ServerState, NoRoute> {
    let listener = state.listeners.get(&ctx.conn.bind).ok_or(NoRoute)?;
    let tls = ctx.conn.scheme == "https";
    let name = if tls {
        ctx.conn.sni.as_deref()
    } else {
        Some(ctx.host())
    };
    let index = listener
        .server_for(name)
        .or(if tls { None } else { Some(0) })
        .ok_or(NoRoute)?;
    listener.servers.get(index).ok_or(NoRoute)
}

/// The route that matches, and the index of the match alternative that held.
pub fn route<'a>(
    ctx: &mut RequestContext,
    state: &'a Runtime,
    server: &ServerState,
    parts: &http::request::Parts,
) -> Result<(&'a CompiledRoute, Option<usize>), NoRoute> {
    let listener = state.listeners.get(&ctx.conn.bind).ok_or(NoRoute)?;
    let table = state
        .route_tables
        .get(&server.chain.route_table)
        .ok_or(NoRoute)?;
    let facts = RequestFacts {
        parts,
        host: ctx.host(),
        authority: &ctx.authority,
        scheme: ctx.conn.scheme,
        gateway_port: listener.gateway_port(),
    };
    let vh = virtual_host(&table.virtual_hosts, ctx.host()).ok_or(NoRoute)?;
    let (route, matched) = find_route(vh, &facts).ok_or(NoRoute)?;
    ctx.route = Some(route.name.clone());
    Ok((route, matched))
}
