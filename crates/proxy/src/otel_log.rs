//! Access logs sent to an OpenTelemetry collector, as Istio's `envoyOtelAls` provider
//! sends them: each entry is a `LogRecord` whose body is the line in the provider's text
//! format (Istio's default without one) and whose attributes are its labels, exported in
//! batches over gRPC to `opentelemetry.proto.collector.logs.v1.LogsService/Export` by a
//! task of their own. A collector that is away costs only the entries, which are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::otlp::{AnyValue, GrpcClient, KeyValue, Resource, attribute, next_batch, scope};

/// The gRPC method logs go to.
pub const EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The most entries waiting to be sent.
const QUEUE: usize = 4096;
/// The most entries in one batch.
const BATCH: usize = 256;
/// How long an entry may wait for its batch.
const FLUSH: Duration = Duration::from_millis(500);

/// `ExportLogsServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportLogsServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_logs: Vec<ResourceLogs>,
}

/// `ResourceLogs`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceLogs {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_logs: Vec<ScopeLogs>,
}

/// `ScopeLogs`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeLogs {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<crate::otlp::InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub log_records: Vec<LogRecord>,
}

/// `LogRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRecord {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(message, optional, tag = "5")]
    pub body: Option<AnyValue>,
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "11")]
    pub observed_time_unix_nano: u64,
}

/// Sends a proxy's entries for one collector and log name.
#[derive(Debug, Clone)]
pub struct OtelLogger {
    queue: mpsc::Sender<LogRecord>,
    /// Entries the collector took.
    pub sent: Arc<AtomicU64>,
    /// Entries dropped: the queue was full or the collector did not take them.
    pub dropped: Arc<AtomicU64>,
}

impl OtelLogger {
    /// A logger to the collector at `host:port`, under `log_name` (its resource's
    /// `log_name` attribute); `None` when that is not an address. Its task runs until the
    /// logger goes.
    pub fn start(collector: &str, log_name: &str) -> Option<OtelLogger> {
        let client = GrpcClient::new(collector)?;
        let (queue, entries) = mpsc::channel(QUEUE);
        let sent = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(export(
            client,
            log_name.to_string(),
            entries,
            sent.clone(),
            dropped.clone(),
        ));
        Some(OtelLogger {
            queue,
            sent,
            dropped,
        })
    }

    /// Queues an entry: its line and its labels; never waits.
    pub fn log(&self, body: String, labels: Vec<(String, String)>) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let record = LogRecord {
            time_unix_nano: now,
            observed_time_unix_nano: now,
            body: Some(AnyValue { string_value: body }),
            attributes: labels.iter().map(|(k, v)| attribute(k, v)).collect(),
        };
        if self.queue.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends entries in batches until the logger is gone.
async fn export(
    mut client: GrpcClient,
    log_name: String,
    mut entries: mpsc::Receiver<LogRecord>,
    sent: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
) {
    while let Some(batch) = next_batch(&mut entries, BATCH, FLUSH).await {
        let n = batch.len() as u64;
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![attribute("log_name", &log_name)],
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records: batch,
                }],
            }],
        };
        match client.export(EXPORT, request).await {
            Ok(()) => sent.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!("access log entries dropped: {e}");
                dropped.fetch_add(n, Ordering::Relaxed)
            }
        };
    }
}
