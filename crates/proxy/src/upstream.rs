//! Connections to upstream endpoints: pooled HTTP/1.1 keep-alive and HTTP/2 cleartext
//! (h2c, prior knowledge, for `http2-` and `grpc-` ports or `h2UpgradePolicy: UPGRADE`)
//! clients, one pair per distinct connection settings (connect timeout, TCP keepalive,
//! idle timeout). Pairs are cached, so a config reload keeps the pools it can.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use meshwork_resources::cluster::{Cluster, ConnectionSettings, UpstreamProtocol};

use crate::body::Body;
use crate::error::ProxyError;

/// The clients of one cluster.
#[derive(Clone)]
pub struct ClientPair {
    http1: Client<HttpConnector, Body>,
    http2: H2Pool,
}

/// HTTP/2 connections, one per endpoint, multiplexed. Requests keep their own `:authority`
/// (the original Host) while the connection goes to the endpoint's address.
#[derive(Clone)]
struct H2Pool {
    conns: Arc<Mutex<HashMap<String, hyper::client::conn::http2::SendRequest<Body>>>>,
    connect_timeout: Duration,
    keepalive: Option<Duration>,
}

impl H2Pool {
    async fn connect(
        &self,
        addr: &str,
    ) -> Result<hyper::client::conn::http2::SendRequest<Body>, ProxyError> {
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| ProxyError::ConnectFailure)?
                .map_err(|_| ProxyError::ConnectFailure)?;
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        if let Some(k) = self.keepalive {
            builder.keep_alive_interval(k);
        }
        let (sender, conn) = builder
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|_| ProxyError::ConnectFailure)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        Ok(sender)
    }

    async fn send(&self, addr: &str, req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        let cached = {
            let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.get(addr).filter(|s| !s.is_closed()).cloned()
        };
        let mut sender = match cached {
            Some(s) => s,
            None => {
                let s = self.connect(addr).await?;
                self.conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(addr.to_string(), s.clone());
                s
            }
        };
        sender
            .ready()
            .await
            .map_err(|_| ProxyError::UpstreamReset)?;
        sender.send_request(req).await.map_err(|e| {
            tracing::debug!(error = %e, "upstream HTTP/2 request failed");
            ProxyError::UpstreamReset
        })
    }
}

impl ClientPair {
    fn new(connect_timeout: Duration, settings: &ConnectionSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        if let Some((time, interval, probes)) = settings.tcp_keepalive {
            connector.set_keepalive(Some(Duration::from_secs(time.unwrap_or(7200))));
            connector.set_keepalive_interval(interval.map(Duration::from_secs));
            connector.set_keepalive_retries(probes);
        }
        let idle = Duration::from_millis(settings.http_idle_timeout_ms);
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle)
            .set_host(false)
            .build(connector.clone());
        let http2 = H2Pool {
            conns: Arc::default(),
            connect_timeout,
            keepalive: settings
                .tcp_keepalive
                .and_then(|(_, interval, _)| interval)
                .map(Duration::from_secs),
        };
        Self { http1, http2 }
    }

    /// Sends a request to the endpoint `addr` (`ip:port`). Over HTTP/1.1 the URI names the
    /// endpoint and the Host header the authority; over HTTP/2 the URI carries the
    /// authority, which becomes `:authority`.
    pub async fn send(
        &self,
        protocol: UpstreamProtocol,
        addr: &str,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        if protocol == UpstreamProtocol::Http2 {
            return self.http2.send(addr, req).await;
        }
        self.http1.request(req).await.map_err(|e| {
            tracing::debug!(error = %e, "upstream request failed");
            if e.is_connect() {
                ProxyError::ConnectFailure
            } else {
                ProxyError::UpstreamReset
            }
        })
    }
}

/// The cache of client pairs, shared by every config a proxy runs.
#[derive(Clone, Default)]
pub struct Upstreams {
    pairs: Arc<Mutex<HashMap<(u64, ConnectionSettings), ClientPair>>>,
}

fn key(cluster: &Cluster) -> (u64, ConnectionSettings) {
    (cluster.connect_timeout_ms, cluster.connections.clone())
}

impl Upstreams {
    /// The clients for a cluster's connection settings.
    pub fn for_cluster(&self, cluster: &Cluster) -> ClientPair {
        let mut pairs = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
        pairs
            .entry(key(cluster))
            .or_insert_with(|| {
                ClientPair::new(
                    Duration::from_millis(cluster.connect_timeout_ms),
                    &cluster.connections,
                )
            })
            .clone()
    }

    /// Drops the pools that none of `clusters` uses.
    pub fn retain<'a>(&self, clusters: impl Iterator<Item = &'a Cluster>) {
        let used: Vec<_> = clusters.map(key).collect();
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| used.contains(k));
    }
}
