//! The accept and TLS phases: listeners on their ports, the SNI read from the ClientHello
//! choosing the server (and its certificate and client-certificate policy), then HTTP/1.1
//! or HTTP/2 on the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::http::{ConnInfo, handle};

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

async fn serve_connection(stream: TcpStream, peer: SocketAddr, port: u16, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let state = shared.state.load_full();
    let Some(listener) = state.listeners.get(&port) else {
        return;
    };
    if !listener.is_tls() {
        let conn = ConnInfo {
            peer,
            bind_port: port,
            scheme: "http",
            sni: None,
            server: None,
        };
        return serve_http(TokioIo::new(stream), conn, shared).await;
    }
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => return debug!(%peer, port, error = %e, "no TLS ClientHello"),
        Err(_) => return debug!(%peer, port, "timed out waiting for a ClientHello"),
    };
    let sni = start.client_hello().server_name().map(str::to_string);
    let Some(index) = listener.server_for(sni.as_deref()) else {
        return info!(%peer, port, sni = sni.as_deref().unwrap_or("-"), "no server for this SNI; connection closed");
    };
    let Some(config) = listener.servers[index].tls.clone() else {
        return;
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return info!(%peer, port, error = %e, "TLS handshake failed"),
        Err(_) => return info!(%peer, port, "TLS handshake timed out"),
    };
    let conn = ConnInfo {
        peer,
        bind_port: port,
        scheme: "https",
        sni,
        server: Some(index),
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
