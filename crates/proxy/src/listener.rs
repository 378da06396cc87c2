//! The accept, inspect and TLS phases: listeners on their ports; on TLS ports the
//! ClientHello (after PostgreSQL's SSLRequest on PostgreSQL ports) is read without being
//! consumed, and its SNI chooses the server: passed through untouched to a TLS route, or
//! terminated with the server's certificate and client-certificate policy; then HTTP/1.1
//! or HTTP/2, or raw TCP, on the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use meshwork_resources::listener::ServerProtocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::access_log::{Entry, rfc3339};
use crate::connection::{Connection, peer_identity};
use crate::connections::{Activity, Tracked};
use crate::flags::ResponseFlags;
use crate::inspect::{INSPECT_TIMEOUT, Rewind, accept_postgres_ssl_request, read_client_hello};
use crate::recorder::{Kind, Outcome};
use crate::request::handle;
use crate::runtime::Runtime;
use crate::tcp;

/// How many request headers hyper's HTTP/1 codec takes when not told a number.
const HYPER_MAX_HEADERS: usize = 100;

/// How long a client may take to send its ClientHello and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound socket; dropping the handle ends its accept loop (open connections go on).
/// The socket dispatches each connection to the virtual listener configured for its
/// address in the runtime in force.
pub struct ListenerHandle {
    /// The address actually bound.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    generation: watch::Sender<u64>,
}

impl ListenerHandle {
    /// The listener's state changed: connections accepted before finish their requests in
    /// flight and close.
    pub fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Counts a connection as open (registry and listener cap) until dropped.
struct Counted {
    _registered: crate::connections::Registered,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection watches of its listener, and what keeps it counted.
struct ListenerSignals {
    /// Held by the connection and whatever serves it.
    counted: Arc<Counted>,
    /// Set when the listener is removed.
    removed: watch::Receiver<bool>,
    /// Bumped when the listener's state changes.
    generation: watch::Receiver<u64>,
}

/// The terms a TLS connection was accepted under: its server and the version of the CA
/// that verified its client. When the listener changes, a connection whose terms no
/// longer hold (its server changed, or its CA rotated) finishes and closes; others go on.
#[derive(Debug, Clone, PartialEq)]
struct AcceptedUnder {
    server: meshwork_resources::listener::ServerChain,
    ca_version: Option<usize>,
}

impl AcceptedUnder {
    /// The terms the runtime in force gives a connection to `bind` with this SNI.
    fn now(state: &Runtime, bind: SocketAddr, sni: Option<&str>) -> Option<AcceptedUnder> {
        let listener = state.listeners.get(&bind)?;
        let server = &listener.servers[listener.server_for(sni)?];
        let ca_version = server
            .chain
            .tls
            .as_ref()
            .and_then(|t| t.client_ca.as_ref())
            .and_then(|ca| state.secrets.get(ca).map(|(_, v)| *v));
        // Where the server stands in its Gateway is not one of its terms.
        let mut chain = server.chain.clone();
        chain.source.clear();
        Some(AcceptedUnder {
            server: chain,
            ca_version,
        })
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Binds `addr` and starts accepting, until the handle is dropped or the proxy drains.
///
/// A capture listener (`captures`) on 0.0.0.0 takes what ip6tables redirects too, on
/// `[::]`.
pub async fn start(
    addr: SocketAddr,
    captures: bool,
    shared: Arc<Shared>,
) -> std::io::Result<ListenerHandle> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let v6 = if captures && addr.ip() == std::net::IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED) {
        match bind_v6_only(SocketAddr::new(
            std::net::Ipv6Addr::UNSPECIFIED.into(),
            bound.port(),
        )) {
            Ok(l) => Some(l),
            Err(e) => {
                debug!(port = bound.port(), "no IPv6 capture: {e}");
                None
            }
        }
    } else {
        None
    };
    let (stop, mut stopped) = watch::channel(false);
    let (generation, generations) = watch::channel(0u64);
    let mut draining = shared.connections.drain_signal();
    info!(addr = %bound, "listener bound");
    // Connections open on this listener, against its cap.
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = accept_either(&listener, v6.as_ref()) => match accepted {
                    Ok((stream, peer)) => {
                        let limit = shared.settings.max_connections_per_listener;
                        if open.fetch_add(1, Ordering::AcqRel) >= limit {
                            open.fetch_sub(1, Ordering::AcqRel);
                            shared.recorder.counters.overflow_connections.fetch_add(1, Ordering::Relaxed);
                            debug!(%addr, %peer, limit, "listener at its most connections; closed");
                            continue;
                        }
                        let counted = Arc::new(Counted {
                            _registered: shared.connections.register(),
                            open: open.clone(),
                        });
                        let shared = shared.clone();
                        let signals = ListenerSignals {
                            counted,
                            removed: stopped.clone(),
                            generation: generations.clone(),
                        };
                        tokio::spawn(serve_connection(stream, peer, addr, shared, signals));
                    }
                    Err(e) => {
                        warn!(%addr, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = stopped.changed() => break,
                _ = draining.changed() => break,
            }
        }
        info!(%addr, "listener closed");
    });
    Ok(ListenerHandle {
        addr: bound,
        stop,
        generation,
    })
}

/// The next connection of either socket.
async fn accept_either(
    v4: &TcpListener,
    v6: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    match v6 {
        Some(v6) => tokio::select! {
            accepted = v4.accept() => accepted,
            accepted = v6.accept() => accepted,
        },
        None => v4.accept().await,
    }
}

/// A listening socket for IPv6 only (beside an IPv4 one on the same port).
fn bind_v6_only(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Where a connection redirected by iptables (`REDIRECT`) was meant to go.
fn original_destination(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    let addr = match stream.local_addr()? {
        SocketAddr::V4(_) => socket.original_dst_v4()?,
        SocketAddr::V6(_) => socket.original_dst_v6()?,
    };
    addr.as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP address"))
}

/// Why a connection was closed before it was routed, for the recorder.
struct Refusal {
    flags: ResponseFlags,
    details: &'static str,
    why: String,
}

impl Refusal {
    fn new(flags: ResponseFlags, details: &'static str, why: impl ToString) -> Refusal {
        Refusal {
            flags,
            details,
            why: why.to_string(),
        }
    }
}

/// Records a connection refused before routing (and logs it, when the log is on).
fn record_refusal(
    shared: &Shared,
    state: &Runtime,
    peer: SocketAddr,
    bind: SocketAddr,
    sni: Option<String>,
    refusal: Refusal,
) {
    info!(%peer, %bind, sni = sni.as_deref().unwrap_or("-"), reason = %refusal.why, "connection closed before routing");
    let outcome = Outcome::new(Kind::Refused, 0, refusal.flags, refusal.details.into());
    let inbound = state.inbound_peers.contains_key(&bind);
    let entry = state.telemetry.wants_entry(inbound).then(|| Entry {
        start_time: rfc3339(std::time::SystemTime::now()),
        method: "-".into(),
        path: "-".into(),
        protocol: "-".into(),
        request_id: "-".into(),
        downstream_remote_address: peer.to_string(),
        requested_server_name: sni,
        connection_termination_details: Some(refusal.why),
        facts: crate::access_log::Facts {
            inbound,
            destination: Some(bind),
            ..Default::default()
        },
        ..Default::default()
    });
    shared.recorder.record(outcome, entry, &state.telemetry);
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    bind: SocketAddr,
    shared: Arc<Shared>,
    signals: ListenerSignals,
) {
    let _ = stream.set_nodelay(true);
    let state = shared.state.load_full();
    let mut sni = None;
    if let Err(refusal) =
        route_connection(stream, peer, bind, &shared, &state, &mut sni, signals).await
    {
        record_refusal(&shared, &state, peer, bind, sni, refusal);
    }
}

/// The accept, inspect and TLS phases, then the HTTP or TCP path. `sni` is filled in as
/// soon as it is known.
async fn route_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    bind: SocketAddr,
    shared: &Arc<Shared>,
    state: &Arc<Runtime>,
    sni_seen: &mut Option<String>,
    signals: ListenerSignals,
) -> Result<(), Refusal> {
    let no_chain = |why: &str| {
        Refusal::new(
            ResponseFlags::NO_FILTER_CHAIN_FOUND,
            "filter_chain_not_found",
            why,
        )
    };
    let Some(mut listener) = state.listeners.get(&bind) else {
        return Err(no_chain("the listener is gone"));
    };
    // Phase: a capture listener hands the connection to the listener of where the client
    // meant to connect.
    let mut bind = bind;
    let mut original_dst = None;
    if let Some(capture) = listener.resource.capture {
        let dst = original_destination(&stream).map_err(|e| {
            Refusal::new(
                ResponseFlags::NO_FILTER_CHAIN_FOUND,
                "filter_chain_not_found",
                format!("no original destination: {e}"),
            )
        })?;
        // A connection made to a capture port itself would be handed on to itself, and
        // again (Istio's virtualOutbound-blackhole refuses these too).
        if dst.port() == bind.port() {
            return Err(no_chain("a connection to the capture port itself"));
        }
        bind = state
            .captured(capture, dst)
            .ok_or_else(|| no_chain("no listener for the original destination"))?;
        listener = &state.listeners[&bind];
        original_dst = Some(dst);
    }
    let mut conn = Connection::new(peer, stream.local_addr().ok(), bind);
    conn.original_dst = original_dst;
    conn.outbound = listener.resource.outbound;
    conn.guard = Some(signals.counted.clone());
    // Routes by destination address match where the client meant to connect.
    let local_ip = conn.original_dst.or(conn.local).map(|a| a.ip());
    // PERMISSIVE mTLS: a port with a TLS server and a plaintext one tells a client's
    // TLS from its plaintext by the first byte (a TLS handshake record is 0x16).
    let plaintext = !listener.inspects_tls()
        || (listener.has_plaintext() && {
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout(INSPECT_TIMEOUT, stream.peek(&mut first))
                .await
                .map_err(|_| {
                    Refusal::new(
                        ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                        "tls_inspector_failed",
                        "the client sent nothing",
                    )
                })?
                .map_err(|e| {
                    Refusal::new(
                        ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                        "tls_inspector_failed",
                        e,
                    )
                })?;
            peeked == 1 && first[0] != 0x16
        });
    if plaintext {
        // A port that carries HTTP and other bytes tells them apart by the first bytes.
        let tcp = listener
            .servers
            .iter()
            .find(|s| s.chain.protocol == ServerProtocol::Tcp);
        let http = listener
            .servers
            .iter()
            .any(|s| s.chain.protocol == ServerProtocol::Http);
        let tcp = match tcp {
            Some(server) if http => {
                (!crate::inspect::detect_http(&mut stream).await).then_some(server)
            }
            other => other,
        };
        if let Some(server) = tcp {
            let route = tcp::pick_route(&server.chain.tcp_routes, None, local_ip)
                .ok_or_else(|| no_chain("no TCP route"))?;
            tcp::forward(stream, route, state, shared, &conn, false, Vec::new()).await;
            return Ok(());
        }
        serve_http(TokioIo::new(stream), conn, shared.clone(), signals, None).await;
        return Ok(());
    }

    // Phase: inspect what the client sends first (PostgreSQL's SSLRequest, the ClientHello).
    let inspect_failed = |e: crate::inspect::InspectError| {
        Refusal::new(
            ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            "tls_inspector_failed",
            e,
        )
    };
    let mut replay = Vec::new();
    let pg_ssl_request = if listener.servers.iter().any(|s| s.chain.postgres) {
        accept_postgres_ssl_request(&mut stream, &mut replay)
            .await
            .map_err(inspect_failed)?
    } else {
        false
    };
    let hello = read_client_hello(&mut stream, &mut replay)
        .await
        .map_err(inspect_failed)?;
    conn.sni = hello.sni;
    sni_seen.clone_from(&conn.sni);

    // Phase: select the server by SNI.
    let index = listener
        .server_for(conn.sni.as_deref())
        .ok_or_else(|| no_chain("no server for this SNI"))?;
    let server = &listener.servers[index];
    if server.chain.protocol == ServerProtocol::TlsPassthrough {
        let route = tcp::pick_route(&server.chain.tcp_routes, conn.sni.as_deref(), local_ip)
            .ok_or_else(|| no_chain("no TLS route for this SNI"))?;
        tcp::forward(stream, route, state, shared, &conn, pg_ssl_request, replay).await;
        return Ok(());
    }

    // Phase: TLS termination with the server's certificate and client-certificate policy.
    let config = server
        .tls
        .clone()
        .ok_or_else(|| no_chain("the server does not terminate TLS"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshake_failed = |why: String| {
        Refusal::new(
            ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            "tls_handshake_failed",
            why,
        )
    };
    let tls = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        acceptor.accept(Rewind::new(replay, stream)),
    )
    .await
    .map_err(|_| handshake_failed("TLS handshake timed out".into()))?
    .map_err(|e| handshake_failed(format!("TLS handshake failed: {e}")))?;
    let (_, session) = tls.get_ref();
    conn.alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    conn.peer_identity = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| peer_identity(leaf));
    // A mesh client's bytes that are not HTTP, on a port that takes both.
    let opaque = conn
        .alpn
        .as_deref()
        .is_some_and(|a| meshwork_resources::listener::OPAQUE_ALPN.contains(&a))
        && !server.chain.tcp_routes.is_empty();
    if server.chain.protocol == ServerProtocol::Tls || opaque {
        let route = tcp::pick_route(&server.chain.tcp_routes, conn.sni.as_deref(), local_ip)
            .ok_or_else(|| no_chain("no TCP route"))?;
        let mut tls = tls;
        // A mesh client's workload comes first, as Istio's metadata exchange sends it.
        if conn.peer_identity.is_some()
            && conn.alpn.as_deref() == Some(crate::peer::PEER_EXCHANGE_ALPN)
        {
            conn.peer_workload = state.exchange.tcp_server(&mut tls).await.map_err(|e| {
                Refusal::new(
                    ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                    "peer_metadata_exchange_failed",
                    format!("metadata exchange failed: {e}"),
                )
            })?;
        }
        tcp::forward(tls, route, state, shared, &conn, false, Vec::new()).await;
        return Ok(());
    }
    conn.scheme = "https";
    let terms = AcceptedUnder::now(state, bind, conn.sni.as_deref());
    serve_http(TokioIo::new(tls), conn, shared.clone(), signals, terms).await;
    Ok(())
}

/// Completes once the flag is set, or its sender is gone; also when it was set before.
async fn until_set(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await.map(|_| ());
}

/// Serves HTTP on a connection until it closes, the proxy drains, the listener is removed
/// from config or its state changes (these finish the requests in flight, then close), or
/// it idles too long.
async fn serve_http<I>(
    io: TokioIo<I>,
    conn: Connection,
    shared: Arc<Shared>,
    signals: ListenerSignals,
    terms: Option<AcceptedUnder>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (conn_bind, conn_sni) = (conn.bind, conn.sni.clone());
    let conn = Arc::new(conn);
    let peer = conn.peer;
    let settings = shared.settings.clone();
    let mut draining = shared.connections.drain_signal();
    let ListenerSignals {
        mut removed,
        mut generation,
        ..
    } = signals;
    let activity = Activity::default();
    let io = TokioIo::new(Tracked::new(io.into_inner(), activity.clone()));
    let recorder = shared.clone();
    let service = service_fn(move |req| handle(req, conn.clone(), shared.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.request_headers_timeout)
        .max_buf_size(settings.max_request_headers_bytes.max(8192));
    // hyper's own bound is the default: given as a number, hyper fills and copies its
    // header arrays for every request (4% of a request's instructions).
    if settings.max_request_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(settings.max_request_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(settings.max_request_headers_bytes).unwrap_or(u32::MAX),
        );
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let bind = conn_bind;
    let sni = conn_sni;
    let result = loop {
        tokio::select! {
            r = connection.as_mut() => break r,
            () = until_set(&mut draining) => {
                // Finish the requests in flight, then close (GOAWAY on HTTP/2).
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            () = until_set(&mut removed) => {
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            changed = generation.changed(), if terms.is_some() => {
                let state = recorder.state.load();
                let now = AcceptedUnder::now(&state, bind, sni.as_deref());
                if changed.is_err() || now != terms {
                    debug!(%peer, "the connection's server or CA changed; closing it");
                    connection.as_mut().graceful_shutdown();
                    break connection.await;
                }
            }
            () = activity.idle_for(settings.idle_timeout) => {
                recorder.recorder.counters.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "idle timeout; connection closed");
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
        }
    };
    if let Err(e) = result {
        if e.to_string().contains("timeout") {
            recorder
                .recorder
                .counters
                .idle_timeouts
                .fetch_add(1, Ordering::Relaxed);
        }
        debug!(%peer, error = %e, "connection ended with an error");
    }
}
