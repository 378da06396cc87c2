//! What OpenTelemetry's OTLP messages share (resources, scopes, attributes), and the gRPC
//! client that exports spans ([`crate::trace::otlp`]) and access logs
//! ([`crate::otel_log`]) to a collector. The messages carry OTLP's field numbers; the
//! tests decode what is sent with the official definitions.

use std::time::Duration;

/// `Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `InstrumentationScope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `KeyValue` with a string value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`, of which spans use strings.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(string, tag = "1")]
    pub string_value: String,
}

/// An export's answer (its partial success is not read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportResponse {}

/// A string attribute.
pub fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            string_value: value.to_string(),
        }),
    }
}

/// The next batch from `queue`: what arrives within `flush` of its first item, `max` at
/// most; `None` once the queue's senders are gone.
pub async fn next_batch<T>(
    queue: &mut tokio::sync::mpsc::Receiver<T>,
    max: usize,
    flush: Duration,
) -> Option<Vec<T>> {
    let mut batch = vec![queue.recv().await?];
    let deadline = tokio::time::Instant::now() + flush;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, queue.recv()).await {
            Ok(Some(item)) => batch.push(item),
            _ => break,
        }
    }
    Some(batch)
}

/// The instrumentation scope of what meshwork sends.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "meshwork".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// A gRPC client (of an OpenTelemetry collector, an external authorizer), connected on
/// first use and reconnected after a failure.
#[derive(Clone)]
pub struct GrpcClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl GrpcClient {
    /// A client of the collector at `host:port`; `None` when that is not an address.
    pub fn new(collector: &str) -> Option<GrpcClient> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{collector}"))
            .ok()?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5));
        Some(GrpcClient {
            grpc: tonic::client::Grpc::new(endpoint.connect_lazy()),
        })
    }

    /// Sends one export request to the service method `path`.
    pub async fn export<Req>(&mut self, path: &'static str, request: Req) -> Result<(), String>
    where
        Req: prost::Message + Send + Sync + 'static,
    {
        self.unary::<Req, ExportResponse>(path, request)
            .await
            .map(|_| ())
    }

    /// Calls the unary method `path`.
    pub async fn unary<Req, Resp>(
        &mut self,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc.ready().await.map_err(|e| e.to_string())?;
        let codec: tonic_prost::ProstCodec<Req, Resp> = tonic_prost::ProstCodec::default();
        self.grpc
            .unary(
                tonic::Request::new(request),
                http::uri::PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }
}
