//! The TCP proxy: TCP and TLS routes, passthrough included. A route is chosen (by SNI, or by
//! destination subnet), a weighted destination and an endpoint are picked, and bytes flow
//! both ways with half-close kept, until both sides close or the idle timeout passes. One
//! access log line records the bytes each way and why the connection ended.

use std::borrow::Cow;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use meshwork_resources::listener::L4Route;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::info;

use meshwork_resources::cluster::{HashKey, LbPolicy};

use crate::Shared;
use crate::access_log::{Entry, rfc3339};
use crate::balancer::{InFlight, Outcome, hash64};
use crate::connection::Connection;
use crate::flags::ResponseFlags;
use crate::inspect::PG_SSL_REQUEST;
use crate::peer::Workload;
use crate::recorder::{Kind, Outcome as Recorded};
use crate::route::pick_weighted;
use crate::route_table::domain_match;
use crate::runtime::{ClusterState, Runtime as State};

/// The first route that accepts this SNI and destination address.
pub fn pick_route<'a>(
    routes: &'a [L4Route],
    sni: Option<&str>,
    local: Option<IpAddr>,
) -> Option<&'a L4Route> {
    let sni = sni.map(str::to_ascii_lowercase);
    routes.iter().find(|r| {
        let sni_ok = r.sni_hosts.is_empty()
            || sni.as_deref().is_some_and(|s| {
                r.sni_hosts
                    .iter()
                    .any(|h| domain_match(&h.to_ascii_lowercase(), s))
            });
        let subnet_ok = r.destination_subnets.is_empty()
            || local.is_some_and(|ip| {
                r.destination_subnets
                    .iter()
                    .any(|s| match s.parse::<ipnet::IpNet>() {
                        Ok(net) => net.contains(&ip),
                        Err(_) => s.parse::<IpAddr>() == Ok(ip),
                    })
            });
        sni_ok && subnet_ok
    })
}

/// Counts bytes read through a stream and notes the time of the last activity.
struct Metered<S> {
    inner: S,
    read: Arc<AtomicU64>,
    activity: Arc<AtomicU64>,
    epoch: Instant,
}

impl<S> Metered<S> {
    fn touch(&self) {
        self.activity
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Proxies `client` along `route`. `replay` holds bytes already read from the client (the
/// ClientHello); `pg_ssl_request` says the client sent PostgreSQL's SSLRequest first, which
/// is then sent upstream too and must be answered with `S`.
pub async fn forward<S>(
    client: S,
    route: &L4Route,
    state: &State,
    shared: &Shared,
    conn: &Connection,
    pg_ssl_request: bool,
    replay: Vec<u8>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let mut entry = Entry {
        start_time: rfc3339(SystemTime::now()),
        method: "-".into(),
        path: "-".into(),
        protocol: "-".into(),
        downstream_remote_address: conn.peer.to_string(),
        requested_server_name: conn.sni.clone(),
        route_name: Some(route.name.as_str().into()),
        request_id: "-".into(),
        facts: crate::access_log::Facts {
            inbound: state.inbound_peers.contains_key(&conn.bind),
            destination: Some(conn.original_dst.unwrap_or(conn.bind)),
            peer_identity: conn.peer_identity.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    // The weighted destination, and its cluster.
    let total = route.destinations.iter().map(|d| d.weight).sum();
    let pick = pick_weighted(route.destinations.iter().map(|d| d.weight), total).or((route
        .destinations
        .len()
        == 1)
        .then_some(0));
    let dest = pick.map(|i| &route.destinations[i]);
    entry.upstream_cluster = dest.map(|d| d.cluster.as_str().into());
    let cluster = dest.and_then(|d| state.clusters.get(&d.cluster));
    // Counted as opened once the upstream is connected (with the server's workload when
    // the metadata exchange told it), or at once when the connection goes no further.
    let mut opened = Some(|server: Option<Arc<Workload>>, entry: &Entry| {
        if let (Some(c), Some(metrics)) = (cluster, &shared.recorder.metrics) {
            let attributes = crate::recorder::Finished {
                entry,
                outcome: None,
            };
            metrics.tcp_opened(
                c.peer.clone(),
                counterpart(conn, server),
                &state.telemetry.metrics,
                Some(&attributes),
            );
        }
    });
    let mut server = None;
    let denied = authorize(state, conn);
    let outcome = match (dest, cluster) {
        _ if denied.is_some() => denied,
        (None, _) => Some((
            ResponseFlags::NO_HEALTHY_UPSTREAM,
            "no_healthy_upstream".into(),
        )),
        (Some(_), None) => Some((ResponseFlags::NO_CLUSTER_FOUND, "cluster_not_found".into())),
        (Some(_), Some(cluster)) => {
            let connected = Connected {
                opened: &mut opened,
                server: &mut server,
                exchange: &state.exchange,
            };
            connect_and_splice(
                client,
                cluster,
                conn,
                (pg_ssl_request, replay),
                &mut entry,
                connected,
            )
            .await
        }
    };
    if let Some(open) = opened.take() {
        open(None, &entry);
    }
    entry.duration = start.elapsed().as_millis() as u64;
    let (flags, details) = outcome.unwrap_or((ResponseFlags::NONE, Cow::Borrowed("via_upstream")));
    let recorded = Recorded {
        peer: cluster.map(|c| c.peer.clone()),
        downstream: Some(counterpart(conn, server)),
        request_bytes: entry.bytes_received,
        response_bytes: entry.bytes_sent,
        duration_ms: start.elapsed().as_secs_f64() * 1000.0,
        ..Recorded::new(Kind::Tcp, 0, flags, details)
    };
    shared
        .recorder
        .record(recorded, Some(entry), &state.telemetry);
}

/// The other side of a connection for its metrics: the client as its connection shows it,
/// and the server's workload when the metadata exchange told it.
fn counterpart(conn: &Connection, server: Option<Arc<Workload>>) -> crate::metrics::Counterpart {
    let mut c = crate::metrics::Counterpart::of(conn);
    if server.is_some() {
        c.workload = server;
    }
    c
}

/// What a connection to the upstream tells the caller once it is made: it counts the
/// connection as opened, and learns the server's workload.
struct Connected<'a, F: FnOnce(Option<Arc<Workload>>, &Entry)> {
    opened: &'a mut Option<F>,
    server: &'a mut Option<Arc<Workload>>,
    /// This proxy's side of the exchange.
    exchange: &'a crate::peer::Exchange,
}

/// Authorizes a routed TCP connection; the flag and details when it is denied.
fn authorize(state: &State, conn: &Connection) -> Option<Failure> {
    use crate::request::authz;
    if state.config.authorization.is_empty() || conn.outbound {
        return None;
    }
    let headers = http::HeaderMap::new();
    let attributes = authz::Attributes::of_connection(conn, &headers);
    match authz::evaluate_tcp(&state.config.authorization, &attributes) {
        authz::Verdict::Allow => None,
        authz::Verdict::Deny(policy) => {
            info!(peer = %conn.peer, policy = policy.as_deref().unwrap_or("none"), "connection denied by authorization");
            Some((
                ResponseFlags::UNAUTHORIZED,
                format!(
                    "rbac_access_denied_matched_policy[{}]",
                    policy.as_deref().unwrap_or("none")
                )
                .into(),
            ))
        }
    }
}

/// A TCP-level failure: its flag and Envoy's details.
type Failure = (ResponseFlags, Cow<'static, str>);

fn connect_failed() -> Failure {
    (
        ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
        Cow::Borrowed("upstream_reset_before_response_started{connection_failure}"),
    )
}

/// Returns Envoy's response flag and details when the connection ended abnormally.
async fn connect_and_splice<S, F>(
    client: S,
    cluster: &ClusterState,
    conn: &Connection,
    (pg_ssl_request, replay): (bool, Vec<u8>),
    entry: &mut Entry,
    connected: Connected<'_, F>,
) -> Option<Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Option<Arc<Workload>>, &Entry),
{
    let hash = match &cluster.cluster.policy.lb {
        LbPolicy::RingHash {
            key: HashKey::SourceIp,
            ..
        }
        | LbPolicy::Maglev {
            key: HashKey::SourceIp,
            ..
        } => Some(hash64(conn.peer.ip())),
        _ => None,
    };
    let Some((index, endpoint)) = cluster.pick(hash) else {
        info!(peer = %conn.peer, cluster = %cluster.cluster.name, "no healthy upstream; connection closed");
        return Some((
            ResponseFlags::NO_HEALTHY_UPSTREAM,
            "no_healthy_upstream".into(),
        ));
    };
    let balancer = &cluster.balancer;
    let limit = cluster.cluster.policy.circuit_breakers.max_connections;
    let Some(_open) = InFlight::try_acquire(&balancer.counters.active_connections, limit) else {
        info!(peer = %conn.peer, cluster = %cluster.cluster.name, limit, "maxConnections reached; connection refused");
        return Some((
            ResponseFlags::UPSTREAM_OVERFLOW,
            "upstream_reset_before_response_started{overflow}".into(),
        ));
    };
    let addr = cluster.authority(endpoint, conn);
    entry.upstream_host = Some(addr.clone());
    // PostgreSQL's own TLS negotiation goes to the server as the client sent it, so the
    // connection is plaintext (passthrough) then.
    let (mut upstream, alpn) = match cluster.clients.connect_stream(&addr, !pg_ssl_request).await {
        Ok(s) => s,
        Err(e) => {
            info!(peer = %conn.peer, upstream = %addr, error = %e, "upstream connect failed");
            balancer.report(index, Outcome::LocalFailure);
            return Some((e.flags(), e.details()));
        }
    };
    if pg_ssl_request {
        let mut answer = [0u8; 1];
        let negotiated = async {
            upstream.write_all(&PG_SSL_REQUEST).await?;
            upstream.read_exact(&mut answer).await?;
            Ok::<_, io::Error>(answer[0])
        };
        match tokio::time::timeout(
            Duration::from_millis(cluster.cluster.connect_timeout_ms),
            negotiated,
        )
        .await
        {
            Ok(Ok(b'S')) => {}
            other => {
                info!(peer = %conn.peer, upstream = %addr, answer = ?other, "the upstream PostgreSQL server did not accept TLS; connection closed");
                return Some(connect_failed());
            }
        }
    }
    // A mesh server tells who it is first, as Istio's metadata exchange does.
    if alpn.as_deref() == Some(crate::peer::PEER_EXCHANGE_ALPN.as_bytes()) {
        match connected.exchange.tcp_client(&mut upstream).await {
            Ok(workload) => *connected.server = workload,
            Err(e) => {
                info!(peer = %conn.peer, upstream = %addr, error = %e, "metadata exchange with the upstream failed; connection closed");
                return Some((
                    ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
                    "upstream_reset_before_response_started{protocol_error}".into(),
                ));
            }
        }
    }
    if let Some(open) = connected.opened.take() {
        open(connected.server.clone(), entry);
    }
    if upstream.write_all(&replay).await.is_err() {
        return Some((
            ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            "upstream_reset_before_response_started{connection_termination}".into(),
        ));
    }
    let epoch = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let (received, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    received.fetch_add(replay.len() as u64, Ordering::Relaxed);
    let mut down = Metered {
        inner: client,
        read: received.clone(),
        activity: activity.clone(),
        epoch,
    };
    let mut up = Metered {
        inner: upstream,
        read: sent.clone(),
        activity: activity.clone(),
        epoch,
    };
    let idle = Duration::from_millis(cluster.cluster.idle_timeout_ms);
    let watchdog = async {
        loop {
            let last = Duration::from_millis(activity.load(Ordering::Relaxed));
            let since = epoch.elapsed().saturating_sub(last);
            if since >= idle {
                return;
            }
            tokio::time::sleep(idle - since).await;
        }
    };
    let flag = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut down, &mut up) => match r {
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "connection reset");
                None
            }
        },
        () = watchdog => {
            info!(peer = %conn.peer, upstream = %addr, ?idle, "idle timeout; connection closed");
            Some((ResponseFlags::IDLE_TIMEOUT, "idle_timeout".into()))
        }
    };
    entry.bytes_received = received.load(Ordering::Relaxed);
    entry.bytes_sent = sent.load(Ordering::Relaxed);
    flag
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_resources::route::WeightedCluster;

    fn route(name: &str, sni: &[&str], subnets: &[&str]) -> L4Route {
        L4Route {
            name: name.into(),
            sni_hosts: sni.iter().map(|s| s.to_string()).collect(),
            destination_subnets: subnets.iter().map(|s| s.to_string()).collect(),
            destinations: vec![WeightedCluster {
                cluster: "c".into(),
                weight: 100,
                request_headers: Default::default(),
                response_headers: Default::default(),
            }],
        }
    }

    #[test]
    fn routes_by_sni_then_subnet() {
        let routes = [
            route("db1", &["db1.example.test"], &[]),
            route("wild", &["*.example.test"], &[]),
            route("net", &[], &["10.0.0.0/8"]),
            route("any", &[], &[]),
        ];
        let ip = |s: &str| Some(s.parse().unwrap());
        assert_eq!(
            pick_route(&routes, Some("DB1.example.test"), None)
                .unwrap()
                .name,
            "db1"
        );
        assert_eq!(
            pick_route(&routes, Some("db2.example.test"), None)
                .unwrap()
                .name,
            "wild"
        );
        assert_eq!(
            pick_route(&routes, None, ip("10.1.2.3")).unwrap().name,
            "net"
        );
        assert_eq!(
            pick_route(&routes, None, ip("192.168.0.1")).unwrap().name,
            "any"
        );
        assert!(pick_route(&routes[..2], Some("other.test"), None).is_none());
    }
}
