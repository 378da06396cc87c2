//! Connections to upstream endpoints, pooled per endpoint and keyed by everything that
//! makes a connection reusable: the address, the protocol (HTTP/1.1, or HTTP/2 with prior
//! knowledge), the TLS identity and SNI, and the connection settings. HTTP/1.1 connections
//! go back to their pool when a response body has been read to its end; HTTP/2 connections
//! are shared by every request to the endpoint. Pools of endpoints that are gone are
//! dropped after each update ([`Upstreams::retain`]).

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use meshwork_resources::cluster::{Cluster, ConnectionSettings, UpstreamProtocol};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::body::{Body, boxed};
use crate::error::UpstreamError;
use crate::upstream_tls::TlsOrigination;

/// Idle HTTP/1.1 connections kept per endpoint at most.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// Everything that makes a connection reusable for another request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    addr: String,
    protocol: UpstreamProtocol,
    /// The TLS identity and SNI, when the connection is TLS.
    tls: Option<(u64, String)>,
    connect_timeout_ms: u64,
    settings: ConnectionSettings,
}

/// The connections to one endpoint.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<(http1::SendRequest<Body>, Instant)>>,
    shared: Mutex<Option<http2::SendRequest<Body>>>,
}

impl Pool {
    /// An idle HTTP/1.1 connection that is still open and has not idled too long.
    fn checkout(&self, idle_timeout: Duration) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    /// Closes the idle connections older than `idle_timeout`.
    fn prune(&self, idle_timeout: Duration) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(sender, since)| !sender.is_closed() && since.elapsed() < idle_timeout);
    }

    fn release(&self, sender: http1::SendRequest<Body>) {
        // Only a connection that can take the next request now: one whose request body is
        // still streaming (the upstream answered early) would make the next user wait.
        if sender.is_closed() || !sender.is_ready() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push((sender, Instant::now()));
        }
    }
}

/// The pools of one proxy, shared by every runtime it applies.
#[derive(Clone, Default)]
pub struct Upstreams {
    pools: Arc<Mutex<HashMap<PoolKey, Arc<Pool>>>>,
}

impl Upstreams {
    /// The client of a cluster: its connection settings and TLS origination.
    pub fn for_cluster(&self, cluster: &Cluster, tls: Option<TlsOrigination>) -> ClusterClient {
        ClusterClient {
            upstreams: self.clone(),
            connect_timeout_ms: cluster.connect_timeout_ms,
            settings: cluster.connections.clone(),
            tls: tls.map(Arc::new),
            default_sni: cluster.host.clone(),
            cache: Arc::default(),
        }
    }

    /// Drops the pools that no cluster would use any more: of endpoints that are gone, or
    /// made with TLS or connection settings that no cluster of the endpoint has now.
    pub fn retain<'a>(&self, in_use: impl Iterator<Item = (&'a ClusterClient, String)>) {
        let scopes: HashSet<(String, Option<u64>, u64, ConnectionSettings)> = in_use
            .map(|(client, addr)| {
                (
                    addr,
                    client.tls.as_ref().map(|t| t.identity),
                    client.connect_timeout_ms,
                    client.settings.clone(),
                )
            })
            .collect();
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| {
                scopes.contains(&(
                    k.addr.clone(),
                    k.tls.as_ref().map(|(identity, _)| *identity),
                    k.connect_timeout_ms,
                    k.settings.clone(),
                ))
            });
    }

    fn pool(&self, key: PoolKey) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(&key) {
            return pool.clone();
        }
        let pool = Arc::new(Pool::default());
        // Idle connections close after the cluster's `http.idleTimeout`, used or not: a
        // reaper per pool, which ends when the pool is dropped.
        let idle_timeout = Duration::from_millis(key.settings.http_idle_timeout_ms);
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            let every =
                (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
            loop {
                tokio::time::sleep(every).await;
                match weak.upgrade() {
                    Some(pool) => pool.prune(idle_timeout),
                    None => return,
                }
            }
        });
        pools.insert(key, pool.clone());
        pool
    }
}

/// How one cluster connects to its endpoints.
#[derive(Clone)]
pub struct ClusterClient {
    upstreams: Upstreams,
    connect_timeout_ms: u64,
    settings: ConnectionSettings,
    tls: Option<Arc<TlsOrigination>>,
    /// The SNI when neither the settings nor the request name one.
    default_sni: String,
    /// This cluster's pools by endpoint address and protocol (HTTP/1.1, HTTP/2), found
    /// without building a key: for clusters whose SNI does not depend on the request.
    cache: Arc<std::sync::RwLock<EndpointPools>>,
}

/// A cluster's pools by endpoint address: HTTP/1.1, then HTTP/2.
type EndpointPools = HashMap<String, [Option<Arc<Pool>>; 2]>;

impl ClusterClient {
    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn key(&self, addr: &str, protocol: UpstreamProtocol, host: &str) -> PoolKey {
        PoolKey {
            addr: addr.to_string(),
            protocol,
            tls: self.tls.as_ref().map(|t| (t.identity, self.sni(t, host))),
            connect_timeout_ms: self.connect_timeout_ms,
            settings: self.settings.clone(),
        }
    }

    /// The SNI: the one the settings fix, else the request's host, else the service host.
    fn sni(&self, tls: &TlsOrigination, host: &str) -> String {
        let host = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        tls.sni
            .clone()
            .or_else(|| (!host.is_empty()).then(|| host.to_string()))
            .unwrap_or_else(|| self.default_sni.clone())
    }

    /// A connection to `addr` for a TCP route: TLS when the cluster originates it (and
    /// `tls_allowed`), with the SNI of the settings or the service host; and the ALPN the
    /// server chose.
    pub async fn connect_stream(
        &self,
        addr: &str,
        tls_allowed: bool,
    ) -> Result<(Box<dyn IoBox>, Option<Vec<u8>>), UpstreamError> {
        let sni = match &self.tls {
            Some(t) if tls_allowed => {
                Some(t.sni.clone().unwrap_or_else(|| self.default_sni.clone()))
            }
            _ => None,
        };
        self.connect(addr, sni.as_deref(), None, true).await
    }

    /// Connects to `addr`, with TLS when there is an SNI (and so TLS origination); the
    /// ALPN offered is the cluster's, or `protocol`'s alone when the cluster speaks the
    /// client's protocol (`useClientProtocol`). Returns the ALPN the server chose.
    async fn connect(
        &self,
        addr: &str,
        sni: Option<&str>,
        protocol: Option<UpstreamProtocol>,
        opaque: bool,
    ) -> Result<(Box<dyn IoBox>, Option<Vec<u8>>), UpstreamError> {
        let timeout = Duration::from_millis(self.connect_timeout_ms);
        let connecting = async {
            let Some(source) = &self.settings.source_address else {
                return TcpStream::connect(addr).await;
            };
            let target: std::net::SocketAddr = tokio::net::lookup_host(addr)
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other("no address"))?;
            let source: std::net::IpAddr = source
                .parse()
                .map_err(|_| std::io::Error::other("a bad source address"))?;
            let socket = if target.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(std::net::SocketAddr::new(source, 0))?;
            socket.connect(target).await
        };
        let stream = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| UpstreamError::ConnectFailure)?
            .map_err(|_| UpstreamError::ConnectFailure)?;
        let _ = stream.set_nodelay(true);
        if let Some((time, interval, probes)) = self.settings.tcp_keepalive {
            let mut keepalive =
                socket2::TcpKeepalive::new().with_time(Duration::from_secs(time.unwrap_or(7200)));
            if let Some(i) = interval {
                keepalive = keepalive.with_interval(Duration::from_secs(i));
            }
            if let Some(p) = probes {
                keepalive = keepalive.with_retries(p);
            }
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        }
        let (Some(tls), Some(sni)) = (&self.tls, sni) else {
            return Ok((Box::new(stream), None));
        };
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| {
            UpstreamError::Tls {
                code: "bad_sni",
                message: format!("{sni:?}: {e}"),
            }
        })?;
        let config = match protocol {
            _ if opaque && tls.opaque.is_some() => tls.opaque.clone().unwrap_or(tls.config.clone()),
            _ if !self.settings.use_client_protocol => tls.config.clone(),
            Some(UpstreamProtocol::Http1) => tls.by_protocol[0].clone(),
            Some(UpstreamProtocol::Http2) => tls.by_protocol[1].clone(),
            None => tls.config.clone(),
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls_stream = tokio::time::timeout(timeout, connector.connect(name, stream))
            .await
            .map_err(|_| UpstreamError::Tls {
                code: "handshake_timeout",
                message: "the TLS handshake timed out".into(),
            })?
            .map_err(tls_failure)?;
        let alpn = tls_stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        Ok((Box::new(tls_stream), alpn))
    }

    /// Sends a request to the endpoint `addr` (`ip:port`); `host` is the request's
    /// authority, which picks the SNI when the settings name none. The URI carries the
    /// path (HTTP/1.1) or the scheme, authority and path (HTTP/2). With `fresh`, an
    /// HTTP/1.1 request goes on a new connection, not a kept-alive one.
    pub async fn send(
        &self,
        protocol: UpstreamProtocol,
        addr: &str,
        host: &str,
        req: Request<Body>,
        fresh: bool,
    ) -> Result<Response<Body>, UpstreamError> {
        let slot = match protocol {
            UpstreamProtocol::Http1 => 0,
            UpstreamProtocol::Http2 => 1,
        };
        // The SNI is fixed unless TLS takes it from the request's host.
        let fixed = self.tls.as_ref().is_none_or(|t| t.sni.is_some());
        let cached = fixed
            .then(|| {
                let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
                cache.get(addr).and_then(|pools| pools[slot].clone())
            })
            .flatten();
        let sni = self.tls.as_ref().map(|t| self.sni(t, host));
        let pool = match cached {
            Some(pool) => pool,
            None => {
                let pool = self.upstreams.pool(self.key(addr, protocol, host));
                if fixed {
                    let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
                    cache.entry(addr.to_string()).or_default()[slot] = Some(pool.clone());
                }
                pool
            }
        };
        match protocol {
            UpstreamProtocol::Http1 => {
                self.send_http1(&pool, addr, sni.as_deref(), req, fresh)
                    .await
            }
            UpstreamProtocol::Http2 => self.send_http2(&pool, addr, sni.as_deref(), req).await,
        }
    }

    /// Sends an HTTP/1.1 request on a kept-alive connection (unless `fresh`) or a new
    /// one. A kept-alive connection found closed before the request went out on it is
    /// left for a new one. A request the endpoint closes the connection under after it
    /// went out is [`UpstreamError::Reset`]; whether to send it again is the forward
    /// phase's to decide, as only it still has the request.
    async fn send_http1(
        &self,
        pool: &Arc<Pool>,
        addr: &str,
        sni: Option<&str>,
        mut req: Request<Body>,
        fresh: bool,
    ) -> Result<Response<Body>, UpstreamError> {
        let idle_timeout = Duration::from_millis(self.settings.http_idle_timeout_ms);
        let mut fresh = fresh;
        loop {
            let pooled = if fresh {
                None
            } else {
                pool.checkout(idle_timeout)
            };
            let (mut sender, reused) = match pooled {
                Some(s) => (s, true),
                None => {
                    let (io, _) = self
                        .connect(addr, sni, Some(UpstreamProtocol::Http1), false)
                        .await?;
                    let (sender, conn) = http1::Builder::new()
                        .handshake(TokioIo::new(io))
                        .await
                        .map_err(|_| UpstreamError::ConnectFailure)?;
                    tokio::spawn(async move {
                        if let Err(e) = conn.with_upgrades().await {
                            tracing::debug!(error = %e, "upstream connection ended");
                        }
                    });
                    (sender, false)
                }
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(UpstreamError::ConnectFailure);
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let body = PooledBody::new(body, sender, pool.clone());
                    return Ok(Response::from_parts(parts, boxed(body)));
                }
                Err(mut e) => {
                    // A kept-alive connection the endpoint closed meanwhile: the request
                    // was not sent, so it goes on a new connection.
                    if reused && let Some(r) = e.take_message() {
                        req = r;
                        fresh = true;
                        continue;
                    }
                    return Err(classify(e.error()));
                }
            }
        }
    }

    async fn send_http2(
        &self,
        pool: &Arc<Pool>,
        addr: &str,
        sni: Option<&str>,
        req: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        let cached = pool
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|s| !s.is_closed());
        let mut sender = match cached {
            Some(s) => s,
            None => {
                let (io, _) = self
                    .connect(addr, sni, Some(UpstreamProtocol::Http2), false)
                    .await?;
                let mut builder = http2::Builder::new(TokioExecutor::new());
                builder.timer(TokioTimer::new());
                if let Some((_, Some(interval), _)) = self.settings.tcp_keepalive {
                    builder.keep_alive_interval(Duration::from_secs(interval));
                }
                let (sender, conn) = builder
                    .handshake(TokioIo::new(io))
                    .await
                    .map_err(|_| UpstreamError::ConnectFailure)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                    }
                });
                *pool.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
                sender
            }
        };
        sender.ready().await.map_err(|_| UpstreamError::Reset)?;
        let resp = sender.send_request(req).await.map_err(|e| {
            tracing::debug!(error = %e, "upstream HTTP/2 request failed");
            classify(&e)
        })?;
        Ok(resp.map(boxed))
    }
}

/// A failed TLS handshake, with a code in the spirit of BoringSSL's for the access log.
fn tls_failure(e: std::io::Error) -> UpstreamError {
    use rustls::CertificateError as C;
    let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    let code = match rustls_error {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "CERTIFICATE_VERIFY_FAILED:name_mismatch"
            }
            C::UnknownIssuer => "CERTIFICATE_VERIFY_FAILED:unknown_issuer",
            C::Expired | C::ExpiredContext { .. } => "CERTIFICATE_VERIFY_FAILED:expired",
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "CERTIFICATE_VERIFY_FAILED:not_yet_valid"
            }
            _ => "CERTIFICATE_VERIFY_FAILED",
        },
        Some(rustls::Error::AlertReceived(_)) => "alert_received",
        Some(rustls::Error::NoApplicationProtocol) => "no_application_protocol",
        Some(_) => "handshake_failure",
        None => "connection_failure",
    };
    UpstreamError::Tls {
        code,
        message: e.to_string(),
    }
}

/// What a failed exchange means for the client and for retries.
fn classify(e: &hyper::Error) -> UpstreamError {
    tracing::debug!(error = %e, "upstream request failed");
    if e.is_parse() {
        UpstreamError::Protocol
    } else if e.is_user() {
        UpstreamError::RequestBody
    } else {
        UpstreamError::Reset
    }
}

/// A plaintext or TLS connection to an endpoint, boxed so both share one pool type.
pub trait IoBox: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> IoBox for T {}

/// A response body that gives its connection back to the pool once read to the end.
struct PooledBody {
    inner: Incoming,
    back: Option<(http1::SendRequest<Body>, Arc<Pool>)>,
}

impl PooledBody {
    fn new(inner: Incoming, sender: http1::SendRequest<Body>, pool: Arc<Pool>) -> PooledBody {
        let mut body = PooledBody {
            inner,
            back: Some((sender, pool)),
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((sender, pool)) = self.back.take() {
            pool.release(sender);
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Readers stop once the body says it has ended, without polling once more.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Kept-alive plaintext HTTP/1.1 connections to one of the proxy's helpers (an HTTP
/// external authorizer), so that a check does not cost a connection.
#[derive(Default)]
pub struct HelperPool(Pool);

/// How long a helper's connection may stay idle before it is not used again.
const HELPER_IDLE: Duration = Duration::from_secs(30);

impl HelperPool {
    /// Sends a request with this head and no body to `addr` on a kept-alive connection,
    /// else a new one, and reads the whole answer; the connection is then kept for the
    /// next. A kept-alive connection that fails before an answer (the helper closed it
    /// meanwhile) is given up, and the request is sent once more on a new one: only then
    /// is a copy of it needed.
    pub async fn send(
        &self,
        addr: &str,
        head: http::request::Parts,
    ) -> Result<(http::response::Parts, Bytes), String> {
        let mut request = Request::from_parts(head, crate::body::empty());
        if let Some(mut sender) = self.0.checkout(HELPER_IDLE)
            && sender.ready().await.is_ok()
        {
            let mut copy = Request::new(crate::body::empty());
            *copy.method_mut() = request.method().clone();
            *copy.uri_mut() = request.uri().clone();
            *copy.headers_mut() = request.headers().clone();
            if let Ok(response) = sender.send_request(request).await {
                return self.read(sender, response).await;
            }
            request = copy;
        }
        let mut sender = http1_to::<Body>(addr).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        self.read(sender, response).await
    }

    async fn read(
        &self,
        sender: http1::SendRequest<Body>,
        response: Response<Incoming>,
    ) -> Result<(http::response::Parts, Bytes), String> {
        use http_body_util::BodyExt;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        self.0.release(sender);
        Ok((parts, body))
    }
}

/// A plaintext HTTP/1.1 connection to `addr` (`host:port`) for one-off requests to the
/// proxy's own helpers (collectors, authorizers, health checks), driven by a task.
pub async fn http1_to<B>(addr: &str) -> Result<hyper::client::conn::http1::SendRequest<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}
