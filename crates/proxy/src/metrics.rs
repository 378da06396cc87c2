//! Istio's standard metrics, in the Prometheus text format (OpenMetrics), as a proxy's
//! `:15020/stats/prometheus` serves them: `istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`
//! and the `istio_tcp_*` counters, with Istio's label names, `unknown` for what is not
//! known, and Istio's histogram buckets.
//!
//! Labels are resolved when config is applied: the labels that describe the source and
//! destination of a cluster ([`PeerLabels`]) are built once per cluster and shared; a
//! request adds only its protocol, response code, gRPC status and flags, so a known series
//! is found without allocating.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use std::collections::HashMap;

use meshwork_resources::expr::Attributes;
use meshwork_resources::metric::{Metric, MetricOverride};
use meshwork_resources::secret::WORKLOAD_CERTIFICATE;
use meshwork_resources::{Cluster, Node};
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::flags::ResponseFlags;

/// Istio's buckets for request durations, in milliseconds.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's buckets for request and response sizes, in bytes.
pub const SIZE_BUCKETS: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// The label names of a source and destination, in Istio's order.
const PEER_LABELS: [&str; 21] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "connection_security_policy",
];

/// The labels that describe who talks to whom, resolved once per cluster.
#[derive(Debug)]
pub struct PeerLabels {
    values: [String; 21],
    /// Reported by the destination (a sidecar's inbound cluster): the client's principal
    /// and whether it used mTLS come from each connection ([`Counterpart`]).
    inbound: bool,
    id: u64,
}

const UNKNOWN: &str = "unknown";

/// Where `source_principal` and `connection_security_policy` are in [`PEER_LABELS`].
const SOURCE_PRINCIPAL: usize = 3;
const SECURITY_POLICY: usize = 20;

fn label_or<'a>(
    labels: &'a std::collections::BTreeMap<String, String>,
    keys: &[&str],
) -> Option<&'a str> {
    keys.iter().find_map(|k| labels.get(*k).map(String::as_str))
}

/// A workload's labels as Istio's telemetry names them.
struct WorkloadLabels {
    workload: String,
    namespace: String,
    principal: String,
    app: String,
    version: String,
    canonical: String,
    revision: String,
}

impl WorkloadLabels {
    fn of(node: &Node) -> WorkloadLabels {
        let or_unknown = |s: &str| {
            if s.is_empty() {
                UNKNOWN.to_string()
            } else {
                s.to_string()
            }
        };
        let workload = or_unknown(&node.workload_name);
        let canonical = label_or(
            &node.labels,
            &[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ],
        )
        .map(str::to_string)
        .unwrap_or_else(|| workload.clone());
        let principal = if node.trust_domain.is_empty() || node.namespace.is_empty() {
            UNKNOWN.to_string()
        } else {
            let sa = if node.service_account.is_empty() {
                "default"
            } else {
                &node.service_account
            };
            format!(
                "spiffe://{}/ns/{}/sa/{sa}",
                node.trust_domain, node.namespace
            )
        };
        WorkloadLabels {
            workload,
            namespace: or_unknown(&node.namespace),
            principal,
            app: label_or(&node.labels, &["app", "app.kubernetes.io/name"])
                .unwrap_or(UNKNOWN)
                .to_string(),
            version: label_or(&node.labels, &["version", "app.kubernetes.io/version"])
                .unwrap_or(UNKNOWN)
                .to_string(),
            canonical,
            revision: label_or(
                &node.labels,
                &[
                    "service.istio.io/canonical-revision",
                    "app.kubernetes.io/version",
                    "version",
                ],
            )
            .unwrap_or("latest")
            .to_string(),
        }
    }
}

impl PeerLabels {
    /// The labels of requests from `node` to `cluster` (`None`: no destination, as for a
    /// request that matched no route). A sidecar's inbound cluster (`inbound|...`) is
    /// reported by the destination, `node` itself; every other by the source, `node`.
    pub fn new(node: &Node, cluster: Option<&Cluster>) -> PeerLabels {
        let unknown = || UNKNOWN.to_string();
        let me = WorkloadLabels::of(node);
        let (service, name, namespace) = match cluster.filter(|c| !c.host.is_empty()) {
            Some(c) => {
                let mut parts = c.host.split('.');
                let name = parts.next().unwrap_or(UNKNOWN).to_string();
                let ns = match (parts.next(), parts.next()) {
                    (Some(ns), Some("svc")) => ns.to_string(),
                    _ => unknown(),
                };
                (c.host.clone(), name, ns)
            }
            None => (unknown(), unknown(), unknown()),
        };
        let inbound = cluster.is_some_and(|c| c.name.starts_with("inbound|"));
        let values = if inbound {
            [
                "destination".to_string(),
                unknown(),
                unknown(),
                unknown(),
                unknown(),
                unknown(),
                unknown(),
                unknown(),
                unknown(),
                me.workload,
                me.namespace,
                me.principal,
                me.app,
                me.version,
                service,
                name,
                namespace,
                me.canonical,
                me.revision,
                "Kubernetes".to_string(),
                unknown(),
            ]
        } else {
            // Through a mesh client certificate the source's principal is its own.
            let mesh_tls = cluster
                .and_then(|c| c.tls.as_ref())
                .is_some_and(|t| t.client_certificate.as_deref() == Some(WORKLOAD_CERTIFICATE));
            [
                // A gateway reports as the source of what it forwards, as Istio's do.
                "source".to_string(),
                me.workload,
                me.namespace.clone(),
                if mesh_tls { me.principal } else { unknown() },
                me.app,
                me.version,
                me.canonical,
                me.revision,
                "Kubernetes".to_string(),
                unknown(),
                namespace.clone(),
                unknown(),
                unknown(),
                unknown(),
                service,
                name,
                namespace,
                unknown(),
                "latest".to_string(),
                unknown(),
                unknown(),
            ]
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        values.hash(&mut h);
        PeerLabels {
            id: h.finish(),
            inbound,
            values,
        }
    }

    /// Reported by the destination: the connection's principal and mTLS are labels.
    pub fn inbound(&self) -> bool {
        self.inbound
    }

    /// Each label, with `other`'s side filled in.
    fn each(&self, other: Option<&Counterpart>, f: &mut dyn FnMut(&'static str, &str)) {
        // The other side's workload, as its metadata said: the source's labels at the
        // destination, the destination's at the source.
        let workload = other.and_then(|o| o.workload.as_deref());
        let peer_label = |i: usize| -> Option<&str> {
            let w = workload?;
            let offset = if self.inbound { 0 } else { 8 };
            let value = match i.checked_sub(offset)? {
                1 => &w.name,
                2 => &w.namespace,
                // At the destination the connection's certificate tells the principal.
                3 if !self.inbound => &w.principal,
                4 => &w.app,
                5 => &w.version,
                6 if !self.inbound => return None,
                6 => &w.canonical_service,
                7 if !self.inbound => return None,
                7 => &w.canonical_revision,
                8 if self.inbound => &w.cluster,
                9 if !self.inbound => &w.canonical_service,
                10 if !self.inbound => &w.canonical_revision,
                11 if !self.inbound => &w.cluster,
                _ => return None,
            };
            Some(if value.is_empty() {
                UNKNOWN
            } else {
                value.as_str()
            })
        };
        for (i, (name, value)) in PEER_LABELS.iter().zip(&self.values).enumerate() {
            let value = match (other.filter(|_| self.inbound), i) {
                (Some(d), SOURCE_PRINCIPAL) => d.principal.as_deref().unwrap_or(UNKNOWN),
                (Some(d), SECURITY_POLICY) if d.mutual_tls => "mutual_tls",
                (Some(_), SECURITY_POLICY) => "none",
                _ => peer_label(i).unwrap_or(value.as_str()),
            };
            f(name, value);
        }
    }
}

/// What a proxy learns of the other side of a request: at the destination, the
/// principal the client's certificate proves and whether it spoke mTLS; at either side,
/// the other's workload from its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Counterpart {
    /// The client's SPIFFE id (`spiffe://cluster.local/ns/default/sa/sleep`).
    pub principal: Option<Arc<str>>,
    /// The client presented a verified certificate.
    pub mutual_tls: bool,
    /// The other side's workload (Istio's metadata exchange).
    pub workload: Option<Arc<crate::peer::Workload>>,
}

impl Counterpart {
    /// What `conn` tells of its client, for labels reported by the destination.
    pub fn of(conn: &crate::connection::Connection) -> Counterpart {
        Counterpart {
            principal: conn.peer_identity.clone(),
            mutual_tls: conn.peer_identity.is_some(),
            workload: conn.peer_workload.clone(),
        }
    }
}

/// The series of one kind of request.
#[derive(Debug, Clone)]
pub struct RequestLabels {
    peer: Arc<PeerLabels>,
    downstream: Option<Counterpart>,
    grpc: bool,
    code: u16,
    grpc_status: Option<u16>,
    flags: ResponseFlags,
}

impl PartialEq for RequestLabels {
    fn eq(&self, o: &Self) -> bool {
        self.peer.id == o.peer.id
            && self.downstream == o.downstream
            && self.grpc == o.grpc
            && self.code == o.code
            && self.grpc_status == o.grpc_status
            && self.flags == o.flags
    }
}

impl Eq for RequestLabels {}

impl Hash for RequestLabels {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (
            self.peer.id,
            &self.downstream,
            self.grpc,
            self.code,
            self.grpc_status,
            self.flags,
        )
            .hash(h);
    }
}

impl Labels for RequestLabels {
    fn each(&self, f: &mut dyn FnMut(&'static str, &str)) {
        self.peer.each(self.downstream.as_ref(), f);
        f("request_protocol", if self.grpc { "grpc" } else { "http" });
        f("response_code", &self.code.to_string());
        let grpc = self.grpc_status.map(|s| s.to_string()).unwrap_or_default();
        f("grpc_response_status", &grpc);
        f("response_flags", &self.flags.to_string());
    }
}

/// The series of one kind of TCP connection.
#[derive(Debug, Clone)]
pub struct TcpLabels {
    peer: Arc<PeerLabels>,
    downstream: Option<Counterpart>,
    flags: ResponseFlags,
}

impl PartialEq for TcpLabels {
    fn eq(&self, o: &Self) -> bool {
        self.peer.id == o.peer.id && self.downstream == o.downstream && self.flags == o.flags
    }
}

impl Eq for TcpLabels {}

impl Hash for TcpLabels {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self.peer.id, &self.downstream, self.flags).hash(h);
    }
}

impl Labels for TcpLabels {
    fn each(&self, f: &mut dyn FnMut(&'static str, &str)) {
        self.peer.each(self.downstream.as_ref(), f);
        f("request_protocol", "tcp");
        f("response_flags", &self.flags.to_string());
    }
}

/// A label set, as names and values in order.
pub trait Labels {
    /// Calls `f` with each label.
    fn each(&self, f: &mut dyn FnMut(&'static str, &str));
}

/// The series of one metric: its standard labels, or those the Telemetry API's tag
/// overrides made of them (built per record; only proxies with overrides pay for it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Series<L> {
    /// Istio's labels.
    Standard(L),
    /// Labels changed by overrides, in order.
    Custom(Arc<[(String, String)]>),
}

impl<L: Labels> Series<L> {
    /// Calls `f` with each label.
    fn each(&self, f: &mut dyn FnMut(&str, &str)) {
        match self {
            Series::Standard(labels) => labels.each(&mut |name, value| f(name, value)),
            Series::Custom(pairs) => {
                for (name, value) in pairs.iter() {
                    f(name, value);
                }
            }
        }
    }
}

impl<L: Labels + Clone> Series<L> {
    /// The series of `metric` as the overrides of its side (`inbound`) leave it: this
    /// one, a changed copy, or none when the metric is off.
    fn for_metric(
        &self,
        metric: Metric,
        inbound: bool,
        overrides: &Overrides,
        attributes: Option<&dyn Attributes>,
    ) -> Option<std::borrow::Cow<'_, Series<L>>> {
        match overrides.get(metric, inbound) {
            Some(o) if o.disabled => None,
            Some(o) => Some(std::borrow::Cow::Owned(overridden(self, o, attributes))),
            None => Some(std::borrow::Cow::Borrowed(self)),
        }
    }
}

impl<L: Labels> EncodeLabelSet for Series<L> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let mut result = Ok(());
        self.each(&mut |name, value| {
            if result.is_ok() {
                result = (name, value).encode(encoder.encode_label());
            }
        });
        result
    }
}

/// A proxy's metric overrides, by metric and side.
#[derive(Debug, Default)]
pub struct Overrides {
    by: HashMap<(Metric, bool), MetricOverride>,
}

impl Overrides {
    /// The overrides of a config.
    pub fn new(list: &[MetricOverride]) -> Overrides {
        Overrides {
            by: list
                .iter()
                .map(|o| ((o.metric, o.inbound), o.clone()))
                .collect(),
        }
    }

    /// None.
    pub fn is_empty(&self) -> bool {
        self.by.is_empty()
    }

    fn get(&self, metric: Metric, inbound: bool) -> Option<&MetricOverride> {
        if self.by.is_empty() {
            return None;
        }
        self.by.get(&(metric, inbound))
    }
}

/// What of the other side goes into a series: all of it at the destination; at the
/// source only the server's workload (its principal and mTLS are not labels there), and
/// nothing without one.
fn reported(peer: &PeerLabels, other: Option<Counterpart>) -> Option<Counterpart> {
    let other = other?;
    if peer.inbound {
        return Some(other);
    }
    other.workload.map(|w| Counterpart {
        workload: Some(w),
        ..Counterpart::default()
    })
}

/// The labels of `labels` as `o` changes them: removed tags go, upserted ones take their
/// expression's value over `attributes` (`unknown` when it has none), new ones last.
fn overridden<L: Labels>(
    labels: &Series<L>,
    o: &MetricOverride,
    attributes: Option<&dyn Attributes>,
) -> Series<L> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    labels.each(&mut |name, value| pairs.push((name.to_string(), value.to_string())));
    for tag in &o.tags {
        match &tag.value {
            None => pairs.retain(|(name, _)| *name != tag.name),
            Some(e) => {
                let value = attributes
                    .and_then(|a| e.eval(a).ok())
                    .map_or_else(|| UNKNOWN.to_string(), |v| v.to_text());
                match pairs.iter_mut().find(|(name, _)| *name == tag.name) {
                    Some(pair) => pair.1 = value,
                    None => pairs.push((tag.name.clone(), value)),
                }
            }
        }
    }
    Series::Custom(pairs.into())
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

/// One finished request, as the metrics count it.
#[derive(Debug, Clone)]
pub struct RequestSample {
    /// Who talked to whom.
    pub peer: Arc<PeerLabels>,
    /// The client, when the destination reports.
    pub downstream: Option<Counterpart>,
    /// A gRPC request (`content-type: application/grpc...`).
    pub grpc: bool,
    /// The status sent.
    pub code: u16,
    /// The gRPC status, when known from the response headers.
    pub grpc_status: Option<u16>,
    /// Envoy's response flags.
    pub flags: ResponseFlags,
    /// Milliseconds from the request's arrival to the end of its response.
    pub duration_ms: f64,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
}

/// The most series a process keeps by default; past it, new series are counted in
/// `meshwork_metrics_series_overflow_total` and not recorded.
pub const MAX_SERIES: usize = 10_000;

/// Istio's standard metrics of one process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The request series seen, by the hash of their labels, up to `max_series`.
    series: std::sync::RwLock<std::collections::HashSet<u64>>,
    max_series: usize,
    overflow: Counter,
    requests: Family<Series<RequestLabels>, Counter>,
    duration: Histograms<Series<RequestLabels>>,
    request_bytes: Histograms<Series<RequestLabels>>,
    response_bytes: Histograms<Series<RequestLabels>>,
    tcp_opened: Family<Series<TcpLabels>, Counter>,
    tcp_closed: Family<Series<TcpLabels>, Counter>,
    tcp_sent: Family<Series<TcpLabels>, Counter>,
    tcp_received: Family<Series<TcpLabels>, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::with_max_series(MAX_SERIES)
    }
}

impl Metrics {
    /// Metrics that keep at most `max_series` request series.
    pub fn with_max_series(max_series: usize) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<Series<RequestLabels>, Counter>::default();
        let duration: Histograms<Series<RequestLabels>> =
            Family::new_with_constructor(duration_histogram);
        let request_bytes: Histograms<Series<RequestLabels>> =
            Family::new_with_constructor(size_histogram);
        let response_bytes: Histograms<Series<RequestLabels>> =
            Family::new_with_constructor(size_histogram);
        let tcp_opened = Family::<Series<TcpLabels>, Counter>::default();
        let tcp_closed = Family::<Series<TcpLabels>, Counter>::default();
        let tcp_sent = Family::<Series<TcpLabels>, Counter>::default();
        let tcp_received = Family::<Series<TcpLabels>, Counter>::default();
        registry.register("istio_requests", "Requests", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request durations",
            duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to TCP clients",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from TCP clients",
            tcp_received.clone(),
        );
        let overflow = Counter::default();
        registry.register(
            "meshwork_metrics_series_overflow",
            "Requests not recorded because the series cap was reached",
            overflow.clone(),
        );
        Metrics {
            registry,
            series: Default::default(),
            max_series,
            overflow,
            requests,
            duration,
            request_bytes,
            response_bytes,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
        }
    }

    /// Whether `series` may be recorded: known, or new within the cap.
    fn admit<L: Hash>(&self, series: &Series<L>) -> bool {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        series.hash(&mut h);
        let key = h.finish();
        if self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return true;
        }
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        if series.len() >= self.max_series && !series.contains(&key) {
            self.overflow.inc();
            return false;
        }
        series.insert(key);
        true
    }

    /// Counts a finished request; `attributes` are what tag overrides read.
    pub fn request(
        &self,
        s: RequestSample,
        overrides: &Overrides,
        attributes: Option<&dyn Attributes>,
    ) {
        let inbound = s.peer.inbound;
        let labels = RequestLabels {
            downstream: reported(&s.peer, s.downstream),
            peer: s.peer,
            grpc: s.grpc,
            code: s.code,
            grpc_status: s.grpc_status,
            flags: s.flags,
        };
        let standard = Series::Standard(labels);
        // The standard series is admitted once for the four metrics that share it.
        let mut standard_admitted = None;
        let mut each = |metric: Metric, record: &mut dyn FnMut(&Series<RequestLabels>)| {
            let Some(series) = standard.for_metric(metric, inbound, overrides, attributes) else {
                return;
            };
            let admitted = match &series {
                std::borrow::Cow::Borrowed(_) => {
                    *standard_admitted.get_or_insert_with(|| self.admit(&standard))
                }
                std::borrow::Cow::Owned(custom) => self.admit(custom),
            };
            if admitted {
                record(&series);
            }
        };
        each(Metric::RequestCount, &mut |l| {
            self.requests.get_or_create(l).inc();
        });
        each(Metric::RequestDuration, &mut |l| {
            self.duration.get_or_create(l).observe(s.duration_ms)
        });
        each(Metric::RequestSize, &mut |l| {
            self.request_bytes
                .get_or_create(l)
                .observe(s.request_bytes as f64)
        });
        each(Metric::ResponseSize, &mut |l| {
            self.response_bytes
                .get_or_create(l)
                .observe(s.response_bytes as f64)
        });
    }

    /// Counts a TCP connection opened to `peer`'s destination.
    pub fn tcp_opened(
        &self,
        peer: Arc<PeerLabels>,
        downstream: Counterpart,
        overrides: &Overrides,
        attributes: Option<&dyn Attributes>,
    ) {
        let inbound = peer.inbound;
        let standard = Series::Standard(TcpLabels {
            downstream: reported(&peer, Some(downstream)),
            peer,
            flags: ResponseFlags::NONE,
        });
        if let Some(series) =
            standard.for_metric(Metric::TcpOpenedConnections, inbound, overrides, attributes)
            && self.admit(&series)
        {
            self.tcp_opened.get_or_create(&series).inc();
        }
    }

    /// Counts a TCP connection closed, with the bytes each way.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_closed(
        &self,
        peer: Arc<PeerLabels>,
        downstream: Option<Counterpart>,
        flags: ResponseFlags,
        sent: u64,
        received: u64,
        overrides: &Overrides,
        attributes: Option<&dyn Attributes>,
    ) {
        let inbound = peer.inbound;
        let standard = Series::Standard(TcpLabels {
            downstream: reported(&peer, downstream),
            peer,
            flags,
        });
        let series = |metric| {
            standard
                .for_metric(metric, inbound, overrides, attributes)
                .filter(|s| self.admit(s))
        };
        if let Some(s) = series(Metric::TcpClosedConnections) {
            self.tcp_closed.get_or_create(&s).inc();
        }
        if let Some(s) = series(Metric::TcpSentBytes) {
            self.tcp_sent.get_or_create(&s).inc_by(sent);
        }
        if let Some(s) = series(Metric::TcpReceivedBytes) {
            self.tcp_received.get_or_create(&s).inc_by(received);
        }
    }

    /// The metrics in the Prometheus text format, with the process's own.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        let process = process_metrics();
        match out.rfind("# EOF") {
            Some(i) => out.insert_str(i, &process),
            None => out.push_str(&process),
        }
        out
    }
}

/// The process metrics Prometheus clients export (`process_*`), from /proc.
fn process_metrics() -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    };
    if let Some(rss) = kib("VmRSS:") {
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            rss * 1024.0,
        );
    }
    if let Some(vsz) = kib("VmSize:") {
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            vsz * 1024.0,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            "process_open_fds",
            "Open file descriptors",
            fds.count() as f64,
        );
    }
    // utime and stime (fields 14 and 15 of /proc/self/stat), in clock ticks of 1/100 s.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    if let (Some(u), Some(s)) = (fields.get(11), fields.get(12))
        && let (Ok(u), Ok(s)) = (u.parse::<f64>(), s.parse::<f64>())
    {
        out.push_str(&format!(
            "# HELP process_cpu_seconds User and system CPU time spent in seconds.\n# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total {}\n",
            (u + s) / 100.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_metrics_are_there() {
        let text = Metrics::default().encode();
        for name in [
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }

    fn sample(code: u16) -> RequestSample {
        RequestSample {
            peer: Arc::new(PeerLabels::new(&Node::default(), None)),
            downstream: None,
            grpc: false,
            code,
            grpc_status: None,
            flags: ResponseFlags::NONE,
            duration_ms: 1.0,
            request_bytes: 0,
            response_bytes: 10,
        }
    }

    #[test]
    fn series_past_the_cap_are_counted_as_overflow() {
        let m = Metrics::with_max_series(2);
        for code in [200, 200, 404, 503, 503] {
            m.request(sample(code), &Overrides::default(), None);
        }
        let text = m.encode();
        assert!(text.contains("response_code=\"200\""), "{text}");
        assert!(text.contains("response_code=\"404\""));
        assert!(!text.contains("response_code=\"503\""), "past the cap");
        assert!(
            text.contains("meshwork_metrics_series_overflow_total 2"),
            "{text}"
        );
    }

    #[test]
    fn the_destination_reports_its_client_from_the_connection() {
        let node = Node {
            namespace: "default".into(),
            workload_name: "reviews-v1".into(),
            service_account: "bookinfo-reviews".into(),
            trust_domain: "cluster.local".into(),
            labels: [("app", "reviews"), ("version", "v1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Node::default()
        };
        let mut cluster = crate::runtime::tests::cluster("inbound|9080||");
        cluster.host = "reviews.default.svc.cluster.local".into();
        let peer = Arc::new(PeerLabels::new(&node, Some(&cluster)));
        assert!(peer.inbound());
        let m = Metrics::default();
        let productpage = Arc::new(crate::peer::Workload {
            name: "productpage-v1".into(),
            namespace: "default".into(),
            app: "productpage".into(),
            version: "v1".into(),
            canonical_service: "productpage".into(),
            canonical_revision: "v1".into(),
            cluster: "Kubernetes".into(),
            principal: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage".into(),
        });
        let client = |principal: Option<&str>| Counterpart {
            principal: principal.map(Arc::from),
            mutual_tls: principal.is_some(),
            workload: principal.map(|_| productpage.clone()),
        };
        for downstream in [
            Some(client(Some(
                "spiffe://cluster.local/ns/default/sa/productpage",
            ))),
            Some(client(None)),
        ] {
            m.request(
                RequestSample {
                    peer: peer.clone(),
                    downstream,
                    ..sample(200)
                },
                &Overrides::default(),
                None,
            );
        }
        let text = m.encode();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .collect();
        assert_eq!(lines.len(), 2, "a series per client: {text}");
        let mtls = lines
            .iter()
            .find(|l| l.contains("mutual_tls"))
            .expect("the mTLS client's series");
        for label in [
            "reporter=\"destination\"",
            "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
            "source_workload=\"productpage-v1\"",
            "source_app=\"productpage\"",
            "source_canonical_service=\"productpage\"",
            "destination_workload=\"reviews-v1\"",
            "destination_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-reviews\"",
            "destination_app=\"reviews\"",
            "destination_version=\"v1\"",
            "destination_service=\"reviews.default.svc.cluster.local\"",
            "destination_service_name=\"reviews\"",
            "destination_service_namespace=\"default\"",
        ] {
            assert!(mtls.contains(label), "{label} in {mtls}");
        }
        assert!(
            lines
                .iter()
                .any(|l| l.contains("source_principal=\"unknown\"")
                    && l.contains("connection_security_policy=\"none\"")),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("source_workload=\"unknown\"")
                    && l.contains("connection_security_policy=\"none\"")),
            "a client without metadata: {text}"
        );
        // The source reports its own principal only through a mesh certificate.
        let outbound = PeerLabels::new(&node, None);
        assert!(!outbound.inbound());
        assert_eq!(outbound.values[SOURCE_PRINCIPAL], "unknown");
        // The source takes the destination's workload from its answer, and keeps the
        // service it called.
        let mut reviews =
            crate::runtime::tests::cluster("outbound|9080||reviews.default.svc.cluster.local");
        reviews.host = "reviews.default.svc.cluster.local".into();
        let to_reviews = Arc::new(PeerLabels::new(&node, Some(&reviews)));
        let m = Metrics::default();
        m.request(
            RequestSample {
                peer: to_reviews,
                downstream: Some(Counterpart {
                    workload: Some(productpage.clone()),
                    ..Counterpart::default()
                }),
                ..sample(200)
            },
            &Overrides::default(),
            None,
        );
        let text = m.encode();
        for label in [
            "reporter=\"source\"",
            "source_workload=\"reviews-v1\"",
            "destination_workload=\"productpage-v1\"",
            "destination_workload_namespace=\"default\"",
            "destination_app=\"productpage\"",
            "destination_version=\"v1\"",
            "destination_canonical_service=\"productpage\"",
            "destination_canonical_revision=\"v1\"",
            "destination_service=\"reviews.default.svc.cluster.local\"",
            "destination_service_name=\"reviews\"",
            "connection_security_policy=\"unknown\"",
        ] {
            assert!(text.contains(label), "{label} in {text}");
        }
    }

    #[test]
    fn istio_buckets_and_unknowns() {
        let m = Metrics::default();
        m.request(sample(200), &Overrides::default(), None);
        let text = m.encode();
        assert!(text.contains("destination_service=\"unknown\""));
        for b in DURATION_BUCKETS {
            assert!(text.contains(&format!("le=\"{b:?}\"")), "bucket {b}");
        }
    }

    /// Attributes with a host and a request header.
    struct Host;

    impl Attributes for Host {
        fn attribute(
            &self,
            attribute: meshwork_resources::expr::Attribute,
        ) -> Option<meshwork_resources::expr::Value> {
            (attribute == meshwork_resources::expr::Attribute::RequestHost)
                .then(|| meshwork_resources::expr::Value::Str("shop.test".into()))
        }
        fn request_header(&self, _: &str) -> Option<&str> {
            None
        }
        fn response_header(&self, _: &str) -> Option<&str> {
            None
        }
    }

    #[test]
    fn overrides_remove_add_and_disable_per_metric() {
        use meshwork_resources::expr::{Attribute, Expr};
        use meshwork_resources::metric::TagOverride;
        let tag = |name: &str, value: Option<Expr>| TagOverride {
            name: name.into(),
            value,
        };
        let overrides = Overrides::new(&[
            MetricOverride {
                metric: Metric::RequestCount,
                inbound: false,
                disabled: false,
                tags: vec![
                    tag("response_flags", None),
                    tag(
                        "request_host",
                        Some(Expr::Attribute(Attribute::RequestHost)),
                    ),
                    tag("from_header", Some(Expr::RequestHeader("x-none".into()))),
                    tag(
                        "source_cluster",
                        Some(Expr::Attribute(Attribute::RequestHost)),
                    ),
                ],
            },
            MetricOverride {
                metric: Metric::RequestSize,
                inbound: false,
                disabled: true,
                tags: vec![],
            },
        ]);
        let m = Metrics::default();
        m.request(sample(200), &overrides, Some(&Host));
        m.request(sample(200), &overrides, Some(&Host));
        let text = m.encode();
        let count = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(count.ends_with(" 2"), "one series for both: {count}");
        assert!(!count.contains("response_flags="), "removed: {count}");
        assert!(
            count.contains("source_cluster=\"shop.test\""),
            "changed in place: {count}"
        );
        assert!(
            count.contains("request_host=\"shop.test\",from_header=\"unknown\"}"),
            "added last, unknown without a value: {count}"
        );
        // The other metrics keep Istio's labels; the disabled one is not there.
        let duration = text
            .lines()
            .find(|l| l.starts_with("istio_request_duration_milliseconds_count{"))
            .unwrap();
        assert!(duration.contains("response_flags=\"-\""), "{duration}");
        assert!(!text.contains("istio_request_bytes_count{"), "{text}");
        assert!(text.contains("istio_response_bytes_count{"), "{text}");
        // The server side is untouched.
        let inbound = overrides.get(Metric::RequestCount, true);
        assert!(inbound.is_none());
    }
}
