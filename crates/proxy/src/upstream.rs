//! Connections to upstream endpoints: pooled HTTP/1.1 keep-alive and HTTP/2 cleartext
//! (h2c, prior knowledge, for `http2-` and `grpc-` ports) clients.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use meshwork_model::config::UpstreamProtocol;

use crate::body::Body;
use crate::error::ProxyError;

/// Pooled clients, one per upstream protocol.
#[derive(Clone)]
pub struct Upstreams {
    http1: Client<HttpConnector, Body>,
    http2: Client<HttpConnector, Body>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl Upstreams {
    /// Clients with this connect timeout.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .set_host(false);
        let http1 = builder.build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(true)
            .build(connector);
        Self { http1, http2 }
    }

    /// Sends a request whose URI names the endpoint.
    pub async fn send(
        &self,
        protocol: UpstreamProtocol,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let client = match protocol {
            UpstreamProtocol::Http1 => &self.http1,
            UpstreamProtocol::Http2 => &self.http2,
        };
        client.request(req).await.map_err(|e| {
            tracing::debug!(error = %e, "upstream request failed");
            if e.is_connect() {
                ProxyError::ConnectFailure
            } else {
                ProxyError::UpstreamReset
            }
        })
    }
}
