//! The pick-endpoint phase: the weighted destination of the route, the cluster's circuit
//! breakers (requests in flight), the consistent-hash key of the request, and the
//! balancer's choice of endpoint.

use http::header::{self, HeaderMap};
use meshwork_resources::cluster::{HashKey, LbPolicy, UpstreamProtocol};
use meshwork_resources::route::WeightedCluster;

use crate::balancer::{ClusterCounters, Held, hash64};
use crate::connection::Connection;
use crate::request::context::header_str;
use crate::request::reply::PickError;
use crate::route::pick_weighted;
use crate::route_table::CompiledRoute;
use crate::runtime::{ClusterState, Runtime};

/// The route's weighted destination for this request, and its cluster.
pub fn destination<'a>(
    route: &'a CompiledRoute,
    dests: &'a [WeightedCluster],
    state: &'a Runtime,
) -> Result<(&'a WeightedCluster, &'a ClusterState), (Option<&'a str>, PickError)> {
    let pick = pick_weighted(dests.iter().map(|d| d.weight), route.total_weight)
        .or(if dests.len() == 1 { Some(0) } else { None })
        .ok_or((None, PickError::NoHealthyUpstream))?;
    let dest = &dests[pick];
    let cluster = state
        .clusters
        .get(&dest.cluster)
        .ok_or((Some(dest.cluster.as_str()), PickError::NoCluster))?;
    if cluster.balancer.endpoints.is_empty() {
        return Err((Some(dest.cluster.as_str()), PickError::NoHealthyUpstream));
    }
    Ok((dest, cluster))
}

/// Admission by the cluster's circuit breakers: a unit of its requests in flight, held
/// until the response has ended.
pub fn admit(
    cluster: &ClusterState,
    protocol: UpstreamProtocol,
) -> Result<Held<ClusterCounters>, PickError> {
    let limits = &cluster.cluster.policy.circuit_breakers;
    let concurrency = match protocol {
        // HTTP/1.1: one request per connection, plus those waiting for one.
        UpstreamProtocol::Http1 => limits.max_requests.min(
            limits
                .max_connections
                .saturating_add(limits.max_pending_requests),
        ),
        UpstreamProtocol::Http2 => limits.max_requests,
    };
    Held::try_acquire(
        &cluster.balancer.counters,
        |c| &c.active_requests,
        concurrency,
    )
    .ok_or(PickError::Overflow)
}

/// The consistent-hash value of a request, and a `Set-Cookie` to send when the hash cookie
/// was absent and has been generated (as Envoy does for `httpCookie`).
pub fn hash_key(
    lb: &LbPolicy,
    headers: &HeaderMap,
    query: Option<&str>,
    conn: &Connection,
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
