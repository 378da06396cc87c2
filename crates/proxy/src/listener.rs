//! The accept, inspect and TLS phases: listeners on their ports; on TLS ports the
//! ClientHello (after PostgreSQL's SSLRequest on PostgreSQL ports) is read without being
//! consumed, and its SNI chooses the server: passed through untouched to a TLS route, or
//! terminated with the server's certificate and client-certificate policy; then HTTP/1.1
//! or HTTP/2, or raw TCP, on the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use meshwork_model::config::ServerProtocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::http::{ConnInfo, handle};
use crate::inspect::{Rewind, accept_postgres_ssl_request, read_client_hello};
use crate::tcp;

/// How long a client may take to send its ClientHello and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running listener; dropping the stop sender ends its accept loop (open connections go on).
pub struct ListenerHandle {
    /// The port actually bound.
    pub port: u16,
    stop: watch::Sender<bool>,
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Binds `port` on all addresses and starts accepting.
pub async fn start(port: u16, shared: Arc<Shared>) -> std::io::Result<ListenerHandle> {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    let bound = listener.local_addr()?.port();
    let (stop, mut stopped) = watch::channel(false);
    info!(port = bound, "listener bound");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tokio::spawn(serve_connection(stream, peer, port, shared.clone()));
                    }
                    Err(e) => {
                        warn!(port, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = stopped.changed() => break,
            }
        }
        info!(port, "listener closed");
    });
    Ok(ListenerHandle { port: bound, stop })
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, port: u16, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let state = shared.state.load_full();
    let Some(listener) = state.listeners.get(&port) else {
        return;
    };
    let local = stream.local_addr().ok();
    if !listener.inspects_tls() {
        if let Some(server) = listener
            .servers
            .iter()
            .find(|s| s.chain.protocol == ServerProtocol::Tcp)
        {
            let session = tcp::Session {
                peer,
                local,
                sni: None,
            };
            let Some(route) =
                tcp::pick_route(&server.chain.tcp_routes, None, local.map(|a| a.ip()))
            else {
                return info!(%peer, port, "no TCP route; connection closed");
            };
            return tcp::forward(stream, route, &state, &shared, session, false, Vec::new()).await;
        }
        let conn = ConnInfo {
            peer,
            bind_port: port,
            scheme: "http",
            sni: None,
        };
        return serve_http(TokioIo::new(stream), conn, shared).await;
    }

    // Phase: inspect what the client sends first (PostgreSQL's SSLRequest, the ClientHello).
    let mut replay = Vec::new();
    let pg_ssl_request = if listener.servers.iter().any(|s| s.chain.postgres) {
        match accept_postgres_ssl_request(&mut stream, &mut replay).await {
            Ok(sent) => sent,
            Err(e) => return info!(%peer, port, error = %e, "connection closed before routing"),
        }
    } else {
        false
    };
    let hello = match read_client_hello(&mut stream, &mut replay).await {
        Ok(h) => h,
        Err(e) => return info!(%peer, port, error = %e, "connection closed before routing"),
    };
    let sni = hello.sni.clone();
    let Some(index) = listener.server_for(sni.as_deref()) else {
        return info!(%peer, port, sni = sni.as_deref().unwrap_or("-"), "no server for this SNI; connection closed");
    };
    let server = &listener.servers[index];
    let session = tcp::Session {
        peer,
        local,
        sni: sni.clone(),
    };
    if server.chain.protocol == ServerProtocol::TlsPassthrough {
        let Some(route) = tcp::pick_route(
            &server.chain.tcp_routes,
            sni.as_deref(),
            local.map(|a| a.ip()),
        ) else {
            return info!(%peer, port, sni = sni.as_deref().unwrap_or("-"), "no TLS route for this SNI; connection closed");
        };
        return tcp::forward(
            stream,
            route,
            &state,
            &shared,
            session,
            pg_ssl_request,
            replay,
        )
        .await;
    }

    // Phase: TLS termination with the server's certificate and client-certificate policy.
    let Some(config) = server.tls.clone() else {
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        acceptor.accept(Rewind::new(replay, stream)),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return info!(%peer, port, error = %e, "TLS handshake failed"),
        Err(_) => return info!(%peer, port, "TLS handshake timed out"),
    };
    if server.chain.protocol == ServerProtocol::Tls {
        let Some(route) = tcp::pick_route(
            &server.chain.tcp_routes,
            sni.as_deref(),
            local.map(|a| a.ip()),
        ) else {
            return info!(%peer, port, "no TCP route; connection closed");
        };
        return tcp::forward(tls, route, &state, &shared, session, false, Vec::new()).await;
    }
    let conn = ConnInfo {
        peer,
        bind_port: port,
        scheme: "https",
        sni,
    };
    serve_http(TokioIo::new(tls), conn, shared).await;
}

async fn serve_http<I>(io: TokioIo<I>, conn: ConnInfo, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let peer = conn.peer;
    let service = service_fn(move |req| handle(req, conn.clone(), shared.clone()));
    if let Err(e) = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, service)
        .await
    {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}
