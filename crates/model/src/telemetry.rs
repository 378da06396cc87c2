//! The Telemetry API for one workload: access logs, metrics and tracing, from the
//! Telemetry resources that apply to it with Istio's precedence (a workload selector in
//! the workload's namespace, then that namespace's Telemetry without selector, then the
//! root namespace's), and the mesh config's `extensionProviders` and `defaultProviders`.

use std::collections::BTreeMap;

use meshwork_api::generated::telemetry::{IstioMetric, TagOperation, WorkloadMode};
use meshwork_api::mesh::{AccessLogEncoding, MeshConfig};
use meshwork_api::resource::{Object, Telemetry};
use meshwork_resources::log_format::{self, LogFormat};
use meshwork_resources::metric::{Metric, MetricOverride, TagOverride};
use meshwork_resources::trace::Protocol;
use meshwork_resources::{AccessLog, Mode};

fn mode(m: Option<WorkloadMode>) -> Mode {
    match m {
        Some(WorkloadMode::Client) => Mode::Client,
        Some(WorkloadMode::Server) => Mode::Server,
        _ => Mode::ClientAndServer,
    }
}

fn name_of(t: &Telemetry) -> String {
    format!(
        "{}/{}",
        t.metadata.namespace.as_deref().unwrap_or_default(),
        t.metadata.name.as_deref().unwrap_or_default()
    )
}

/// What one side's access log is, as the Telemetry levels leave it.
#[derive(Default)]
struct LogChoice<'a> {
    providers: Vec<String>,
    disabled: bool,
    filter: Option<&'a str>,
    /// The Telemetry that set it last, for warnings.
    source: String,
}

/// The access logs of a workload in `namespace` with `labels`, one per provider and side
/// (a log both sides share is one). For each side, the `accessLogging` entries whose
/// `match.mode` covers it are merged over the Telemetry levels, the most general first:
/// `providers`, `disabled` and `filter` each keep the last value set. Providers name the
/// mesh config's `extensionProviders` (the built-in `envoy` writes to `/dev/stdout`,
/// JSON when `accessLogEncoding: JSON`); none named means
/// `defaultProviders.accessLogging`. Without any entry, the mesh config's
/// `accessLogFile` applies.
pub fn access_logs(
    objects: &[Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Vec<AccessLog> {
    let levels = levels(objects, mesh, namespace, labels);
    if levels.iter().all(|t| t.spec.access_logging.is_empty()) {
        return (!mesh.access_log_file.is_empty())
            .then(|| AccessLog {
                path: mesh.access_log_file.clone(),
                json: mesh.access_log_encoding == AccessLogEncoding::Json,
                filter: None,
                mode: Mode::ClientAndServer,
                format: None,
                otel: None,
            })
            .into_iter()
            .collect();
    }
    let side = |inbound: bool| -> Option<LogChoice<'_>> {
        let mut choice: Option<LogChoice<'_>> = None;
        for t in &levels {
            for e in &t.spec.access_logging {
                if !mode(e.match_.as_ref().and_then(|m| m.mode)).applies(inbound) {
                    continue;
                }
                let c = choice.get_or_insert_with(LogChoice::default);
                if !e.providers.is_empty() {
                    c.providers = e.providers.iter().map(|p| p.name.clone()).collect();
                }
                if let Some(d) = e.disabled {
                    c.disabled = d;
                }
                if let Some(f) = e.filter.as_ref().and_then(|f| f.expression.as_deref()) {
                    c.filter = Some(f);
                }
                c.source = name_of(t);
            }
        }
        choice
    };
    let mut logs_of = |choice: Option<LogChoice<'_>>| -> Vec<AccessLog> {
        let Some(c) = choice.filter(|c| !c.disabled) else {
            return Vec::new();
        };
        let providers = if c.providers.is_empty() {
            mesh.default_providers.access_logging.clone()
        } else {
            c.providers.clone()
        };
        let filter = c.filter.and_then(|f| match crate::expr::parse(f) {
            Ok(e) => Some(e),
            Err(why) => {
                warnings.push(format!(
                    "Telemetry {}: accessLogging filter {f:?}: {why}; every request is logged",
                    c.source
                ));
                None
            }
        });
        providers
            .iter()
            .filter_map(|p| provider_log(p, filter.clone(), &c.source, mesh, warnings))
            .collect()
    };
    let client = logs_of(side(false));
    let mut server = logs_of(side(true));
    let mut out = Vec::new();
    for c in client {
        match server.iter().position(|s| *s == c) {
            Some(i) => {
                server.remove(i);
                out.push(AccessLog {
                    mode: Mode::ClientAndServer,
                    ..c
                });
            }
            None => out.push(AccessLog {
                mode: Mode::Client,
                ..c
            }),
        }
    }
    out.extend(server.into_iter().map(|s| AccessLog {
        mode: Mode::Server,
        ..s
    }));
    out
}

/// The log of the provider named `provider`, unless the mesh config has no such file
/// or OpenTelemetry log provider.
fn provider_log(
    provider: &str,
    filter: Option<meshwork_resources::expr::Expr>,
    name: &str,
    mesh: &MeshConfig,
    warnings: &mut Vec<String>,
) -> Option<AccessLog> {
    let Some(p) = mesh.provider(provider) else {
        warnings.push(format!(
            "Telemetry {name}: provider {provider} is not in the mesh config's extensionProviders"
        ));
        return None;
    };
    if let Some(als) = p.other.get("envoyOtelAls") {
        let otel = otel_logs(als, provider, name, warnings)?;
        return Some(AccessLog { filter, ..otel });
    }
    let Some(file) = &p.envoy_file_access_log else {
        warnings.push(format!(
            "Telemetry {name}: provider {provider} is neither a file access log nor envoyOtelAls; it is not run"
        ));
        return None;
    };
    let format = file
        .log_format
        .as_ref()
        .and_then(|f| log_format(f, provider, name, warnings));
    Some(AccessLog {
        path: file.path.clone(),
        json: matches!(format, Some(LogFormat::Labels(_)))
            || (format.is_none()
                && provider == "envoy"
                && mesh.access_log_encoding == AccessLogEncoding::Json),
        filter,
        mode: Mode::ClientAndServer,
        format,
        otel: None,
    })
}

/// An `envoyOtelAls` provider: its collector (`service`, `port`), `logName`, and its
/// `logFormat` (`text` for each record's body, `labels` for its attributes).
fn otel_logs(
    als: &serde_json::Value,
    provider: &str,
    telemetry: &str,
    warnings: &mut Vec<String>,
) -> Option<AccessLog> {
    let service = als.get("service").and_then(|v| v.as_str()).unwrap_or("");
    let Some(port) = als.get("port").and_then(|v| v.as_u64()) else {
        warnings.push(format!(
            "Telemetry {telemetry}: provider {provider} (envoyOtelAls) needs a service and a port; it is not run"
        ));
        return None;
    };
    if service.is_empty() {
        warnings.push(format!(
            "Telemetry {telemetry}: provider {provider} (envoyOtelAls) needs a service; it is not run"
        ));
        return None;
    }
    let format = als.get("logFormat");
    let text = format
        .and_then(|f| f.get("text"))
        .map(|t| serde_json::json!({"text": t}))
        .and_then(|t| log_format(&t, provider, telemetry, warnings));
    let labels = match format
        .and_then(|f| f.get("labels"))
        .map(|l| serde_json::json!({"labels": l}))
        .and_then(|l| log_format(&l, provider, telemetry, warnings))
    {
        Some(LogFormat::Labels(labels)) => labels,
        _ => Vec::new(),
    };
    Some(AccessLog {
        path: String::new(),
        json: false,
        filter: None,
        mode: Mode::ClientAndServer,
        format: text,
        otel: Some(meshwork_resources::OtelLogs {
            collector: format!("{service}:{port}"),
            log_name: als
                .get("logName")
                .and_then(|v| v.as_str())
                .unwrap_or("otel_envoy_accesslog")
                .to_string(),
            labels,
        }),
    })
}

/// An `envoyFileAccessLog` provider's `logFormat`: `text`, or `labels` (a JSON object);
/// `None`, with a warning, when it is neither or does not parse.
fn log_format(
    format: &serde_json::Value,
    provider: &str,
    telemetry: &str,
    warnings: &mut Vec<String>,
) -> Option<LogFormat> {
    let mut warn = |why: String| {
        warnings.push(format!(
            "Telemetry {telemetry}: provider {provider}'s logFormat: {why}; Istio's default format is used"
        ));
    };
    if let Some(text) = format.get("text").and_then(|t| t.as_str()) {
        // Envoy's line ends with the text's newline; the log writes one of its own.
        return match log_format::parse(text.trim_end_matches('\n')) {
            Ok(segments) => Some(LogFormat::Text(segments)),
            Err(why) => {
                warn(why);
                None
            }
        };
    }
    let labels = format.get("labels").and_then(|l| l.as_object())?;
    let mut out = Vec::new();
    for (key, value) in labels {
        let Some(text) = value.as_str() else {
            warn(format!("label {key} is not a string"));
            return None;
        };
        match log_format::parse(text) {
            Ok(segments) => out.push((key.clone(), segments)),
            Err(why) => {
                warn(format!("label {key}: {why}"));
                return None;
            }
        }
    }
    Some(LogFormat::Labels(out))
}

/// The metrics of Istio's `IstioMetric` (`ALL_METRICS` is every one; the gRPC message
/// counts are not kept).
fn metrics_of(m: Option<IstioMetric>) -> &'static [Metric] {
    match m {
        None | Some(IstioMetric::AllMetrics) => &Metric::ALL,
        Some(IstioMetric::RequestCount) => &[Metric::RequestCount],
        Some(IstioMetric::RequestDuration) => &[Metric::RequestDuration],
        Some(IstioMetric::RequestSize) => &[Metric::RequestSize],
        Some(IstioMetric::ResponseSize) => &[Metric::ResponseSize],
        Some(IstioMetric::TcpOpenedConnections) => &[Metric::TcpOpenedConnections],
        Some(IstioMetric::TcpClosedConnections) => &[Metric::TcpClosedConnections],
        Some(IstioMetric::TcpSentBytes) => &[Metric::TcpSentBytes],
        Some(IstioMetric::TcpReceivedBytes) => &[Metric::TcpReceivedBytes],
        Some(IstioMetric::GrpcRequestMessages | IstioMetric::GrpcResponseMessages) => &[],
    }
}

/// How Istio's standard metrics differ for a workload in `namespace` with `labels`. As
/// in Istio, the `metrics` of every Telemetry that applies are merged, the root
/// namespace's first, then the namespace's, then the workload's; within each, overrides
/// apply in order, so a later one wins for the metrics, sides and tags it names. Only
/// the `prometheus` provider (the default) is served.
pub fn metrics(
    objects: &[Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Vec<MetricOverride> {
    // (metric, inbound) -> the override so far.
    let mut resolved: BTreeMap<(Metric, bool), MetricOverride> = BTreeMap::new();
    for t in levels(objects, mesh, namespace, labels) {
        let name = name_of(t);
        for entry in &t.spec.metrics {
            let providers: Vec<String> = if entry.providers.is_empty() {
                mesh.default_providers.metrics.clone()
            } else {
                entry.providers.iter().map(|p| p.name.clone()).collect()
            };
            // Istio's default metrics provider is Prometheus.
            let prometheus = providers.is_empty()
                || providers.iter().any(|p| {
                    p == "prometheus" || mesh.provider(p).is_some_and(|p| p.prometheus.is_some())
                });
            if !prometheus {
                warnings.push(format!(
                    "Telemetry {name}: metrics providers {providers:?} are not prometheus; only Prometheus metrics are served"
                ));
                continue;
            }
            for o in &entry.overrides {
                let selector = o.match_.as_ref();
                if let Some(custom) = selector.and_then(|m| m.custom_metric.as_ref()) {
                    warnings.push(format!(
                        "Telemetry {name}: customMetric {custom} is not a metric meshwork keeps; the override is ignored"
                    ));
                    continue;
                }
                let side = mode(selector.and_then(|m| m.mode));
                let mut tags = Vec::new();
                for (tag, change) in &o.tag_overrides {
                    let label_name = tag.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                        && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !label_name {
                        warnings.push(format!(
                            "Telemetry {name}: tagOverrides {tag:?} is not a Prometheus label name (letters, digits and _); the tag is not changed"
                        ));
                        continue;
                    }
                    let value = match (change.operation, change.value.as_deref()) {
                        (Some(TagOperation::Remove), _) => None,
                        (_, Some(text)) => match crate::expr::parse(text) {
                            Ok(e) => Some(e),
                            Err(why) => {
                                warnings.push(format!(
                                    "Telemetry {name}: tagOverrides {tag} value {text:?}: {why}; the tag is not changed"
                                ));
                                continue;
                            }
                        },
                        (_, None) => {
                            warnings.push(format!(
                                "Telemetry {name}: tagOverrides {tag} upserts no value; the tag is not changed"
                            ));
                            continue;
                        }
                    };
                    tags.push(TagOverride {
                        name: tag.clone(),
                        value,
                    });
                }
                for metric in metrics_of(selector.and_then(|m| m.metric)) {
                    for inbound in [false, true] {
                        if !side.applies(inbound) {
                            continue;
                        }
                        let r =
                            resolved
                                .entry((*metric, inbound))
                                .or_insert_with(|| MetricOverride {
                                    metric: *metric,
                                    inbound,
                                    disabled: false,
                                    tags: Vec::new(),
                                });
                        if let Some(disabled) = o.disabled {
                            r.disabled = disabled;
                        }
                        for t in &tags {
                            r.tags.retain(|old| old.name != t.name);
                            r.tags.push(t.clone());
                        }
                    }
                }
            }
        }
    }
    resolved
        .into_values()
        .filter(|r| r.disabled || !r.tags.is_empty())
        .collect()
}

/// The Telemetry resources that apply to a workload, the most general first, as Istio
/// picks them: the root namespace's without a selector, the workload's namespace's
/// without one, and the one in its namespace whose selector matches it. What a later one
/// sets overrides the earlier ones, field by field.
fn levels<'a>(
    objects: &'a [Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Telemetry> {
    let telemetries: Vec<&Telemetry> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Telemetry(t) => Some(t),
            _ => None,
        })
        .collect();
    let attachment = |t: &&'a Telemetry| {
        crate::attachment::Attachment::new(
            t.metadata.namespace.as_deref(),
            t.spec.selector.as_ref(),
            t.spec.target_ref.as_ref(),
            &t.spec.target_refs,
        )
    };
    let wide_in = |t: &&'a Telemetry, ns: &str| {
        let a = attachment(t);
        a.is_namespace_wide() && a.namespace == ns
    };
    let root = telemetries
        .iter()
        .find(|t| wide_in(t, &mesh.root_namespace));
    let own_namespace = telemetries
        .iter()
        .find(|t| wide_in(t, namespace) && namespace != mesh.root_namespace);
    // The workload level: a selector that matches, or targets that name its Gateway.
    let workload = telemetries.iter().find(|t| {
        let a = attachment(t);
        !a.is_namespace_wide() && a.attaches(&mesh.root_namespace, false, namespace, labels)
    });
    [root, own_namespace, workload]
        .into_iter()
        .flatten()
        .copied()
        .collect()
}

/// What one side's tracing is, as the Telemetry levels leave it.
#[derive(Default, Clone)]
struct TraceChoice<'a> {
    providers: Vec<String>,
    sampling: Option<f64>,
    custom_tags: Option<&'a BTreeMap<String, meshwork_api::generated::telemetry::CustomTag>>,
    disable_span_reporting: bool,
    /// The Telemetry that set it last, for warnings.
    source: String,
}

/// The tracing of a workload in `namespace` with `labels`. For each side, the `tracing`
/// entries whose `match.mode` covers it are merged over the Telemetry levels, the most
/// general first: `providers`, `randomSamplingPercentage`, `customTags` and
/// `disableSpanReporting` each keep the last value set. No providers means
/// `defaultProviders.tracing`; no sampling, the mesh's `defaultConfig.tracing.sampling`,
/// else Istio's 1%. The providers are the mesh config's `zipkin` and `opentelemetry`
/// extension providers. When only one side reports spans, the tracing says which.
pub fn tracing(
    objects: &[Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Option<meshwork_resources::trace::Tracing> {
    let levels = levels(objects, mesh, namespace, labels);
    let side = |inbound: bool| -> TraceChoice<'_> {
        let mut c = TraceChoice::default();
        for t in &levels {
            for e in &t.spec.tracing {
                if !mode(e.match_.as_ref().and_then(|m| m.mode)).applies(inbound) {
                    continue;
                }
                if !e.providers.is_empty() {
                    c.providers = e.providers.iter().map(|p| p.name.clone()).collect();
                }
                if e.random_sampling_percentage.is_some() {
                    c.sampling = e.random_sampling_percentage;
                }
                if !e.custom_tags.is_empty() {
                    c.custom_tags = Some(&e.custom_tags);
                }
                if let Some(d) = e.disable_span_reporting {
                    c.disable_span_reporting = d;
                }
                c.source = name_of(t);
            }
        }
        c
    };
    let (client, server) = (side(false), side(true));
    let client = traced(&client, mesh, warnings);
    // The server side's problems, unless the client side's already named them.
    let mut more = Vec::new();
    let server = traced(&server, mesh, &mut more);
    for w in more {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    use meshwork_resources::trace::Tracing;
    match (client, server) {
        (Some(c), Some(s)) if c == s => Some(c),
        (Some(c), Some(s)) if c.disable_span_reporting && !s.disable_span_reporting => {
            Some(Tracing {
                mode: Mode::Server,
                ..s
            })
        }
        (Some(c), Some(s)) if s.disable_span_reporting && !c.disable_span_reporting => {
            Some(Tracing {
                mode: Mode::Client,
                ..c
            })
        }
        (Some(c), Some(_)) => {
            warnings.push(
                "Telemetry: the client and server sides trace differently; the client side's tracing is used for both".to_string(),
            );
            Some(c)
        }
        (Some(c), None) => Some(Tracing {
            mode: Mode::Client,
            ..c
        }),
        (None, Some(s)) => Some(Tracing {
            mode: Mode::Server,
            ..s
        }),
        (None, None) => None,
    }
}

/// One side's tracing, for both sides.
fn traced(
    choice: &TraceChoice<'_>,
    mesh: &MeshConfig,
    warnings: &mut Vec<String>,
) -> Option<meshwork_resources::trace::Tracing> {
    let name = &choice.source;
    let providers: Vec<String> = if choice.providers.is_empty() {
        mesh.default_providers.tracing.clone()
    } else {
        choice.providers.clone()
    };
    let sampling = choice
        .sampling
        .or_else(|| {
            mesh.default_config
                .tracing
                .as_ref()
                .and_then(|t| t.sampling)
        })
        .unwrap_or(1.0)
        .clamp(0.0, 100.0);
    let custom = choice.custom_tags;
    let tags = custom
        .into_iter()
        .flatten()
        .filter_map(|(k, t)| Some((k.clone(), t.literal.as_ref()?.value.clone())))
        .collect();
    let from = |pick: fn(
        &meshwork_api::generated::telemetry::CustomTag,
    ) -> Option<&meshwork_api::generated::telemetry::EnvironmentTag>| {
        custom
            .into_iter()
            .flatten()
            .filter_map(|(k, t)| {
                let t = pick(t)?;
                Some((
                    k.clone(),
                    (
                        t.name.to_ascii_lowercase(),
                        t.default_value.clone().unwrap_or_default(),
                    ),
                ))
            })
            .collect()
    };
    let header_tags = from(|t| t.header.as_ref());
    let mut environment_tags: std::collections::BTreeMap<String, (String, String)> =
        from(|t| t.environment.as_ref());
    // Variable names keep their case.
    for (k, t) in custom.into_iter().flatten() {
        if let (Some(e), Some(entry)) = (&t.environment, environment_tags.get_mut(k)) {
            entry.0 = e.name.clone();
        }
    }
    for provider in providers {
        let Some(p) = mesh.provider(&provider) else {
            warnings.push(format!(
                "Telemetry {name}: tracing provider {provider} is not in the mesh config's extensionProviders"
            ));
            continue;
        };
        let (settings, protocol, default_port, default_path) = match (&p.zipkin, &p.opentelemetry) {
            (Some(z), _) => (z, Protocol::Zipkin, 9411, "/api/v2/spans"),
            // OTLP over HTTP when the provider has an `http` block, else over gRPC.
            (None, Some(o)) => match o.get("http") {
                Some(http) => (
                    o,
                    Protocol::OtlpHttp,
                    4318,
                    http.get("path")
                        .and_then(|v| v.as_str())
                        .unwrap_or("/v1/traces"),
                ),
                None => (o, Protocol::OtlpGrpc, 4317, ""),
            },
            (None, None) => {
                warnings.push(format!(
                    "Telemetry {name}: tracing provider {provider} is neither zipkin nor opentelemetry; it is not run"
                ));
                continue;
            }
        };
        let service = settings
            .get("service")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let port = settings
            .get("port")
            .and_then(|v| v.as_u64())
            .unwrap_or(default_port);
        if service.is_empty() {
            warnings.push(format!(
                "tracing provider {provider}: it needs a service; tracing is off"
            ));
            return None;
        }
        let path = match protocol {
            Protocol::Zipkin => settings
                .get("path")
                .and_then(|v| v.as_str())
                .unwrap_or(default_path),
            _ => default_path,
        };
        let path = if path.starts_with('/') || path.is_empty() {
            path.to_string()
        } else {
            format!("/{path}")
        };
        return Some(meshwork_resources::trace::Tracing {
            collector: format!("{service}:{port}"),
            protocol,
            path,
            sampling,
            disable_span_reporting: choice.disable_span_reporting,
            mode: Mode::ClientAndServer,
            tags,
            header_tags,
            environment_tags,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_formats_compile_or_are_reported() {
        let mut warnings = Vec::new();
        let text = serde_json::json!({"text": "%RESPONSE_CODE% %REQ(X-USER)%\n"});
        assert!(matches!(
            log_format(&text, "p", "istio-system/t", &mut warnings),
            Some(LogFormat::Text(s)) if s.len() == 3
        ));
        let labels = serde_json::json!({"labels": {"code": "%RESPONSE_CODE%"}});
        assert!(matches!(
            log_format(&labels, "p", "istio-system/t", &mut warnings),
            Some(LogFormat::Labels(l)) if l.len() == 1
        ));
        assert!(warnings.is_empty(), "{warnings:?}");
        for bad in [
            serde_json::json!({"text": "%NOPE%"}),
            serde_json::json!({"labels": {"code": "%RESPONSE_CODE"}}),
            serde_json::json!({"labels": {"code": 3}}),
        ] {
            assert_eq!(log_format(&bad, "p", "istio-system/t", &mut warnings), None);
        }
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].contains("Telemetry istio-system/t: provider p's logFormat: %NOPE%"),
            "{warnings:?}"
        );
    }
}
