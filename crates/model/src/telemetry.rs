//! The Telemetry API's access logging for a workload (a gateway today): the most specific
//! Telemetry that configures `accessLogging` decides (a workload selector in the
//! workload's namespace, then that namespace's Telemetry without selector, then the root
//! namespace's); its providers name the mesh config's `extensionProviders` (the built-in
//! `envoy` writes to `/dev/stdout`, JSON when `accessLogEncoding: JSON`), or
//! `defaultProviders.accessLogging` when it names none. Without any such Telemetry, the
//! mesh config's `accessLogFile` applies.

use std::collections::BTreeMap;

use meshwork_api::mesh::{AccessLogEncoding, MeshConfig};
use meshwork_api::resource::Object;
use meshwork_resources::trace::Protocol;
use meshwork_resources::{AccessLog, CodeFilter};

/// The access log of a workload in `namespace` with `labels`.
pub fn access_log(
    objects: &[Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Option<AccessLog> {
    let from_mesh = || {
        (!mesh.access_log_file.is_empty()).then(|| AccessLog {
            path: mesh.access_log_file.clone(),
            json: mesh.access_log_encoding == AccessLogEncoding::Json,
            filter: None,
        })
    };
    let chosen = most_specific(objects, mesh, namespace, labels, |t| {
        !t.spec.access_logging.is_empty()
    });
    let ns_of =
        |t: &meshwork_api::resource::Telemetry| t.metadata.namespace.clone().unwrap_or_default();
    let Some(t) = chosen else {
        return from_mesh();
    };
    let name = format!(
        "{}/{}",
        ns_of(t),
        t.metadata.name.as_deref().unwrap_or_default()
    );
    for entry in &t.spec.access_logging {
        let expression = entry.filter.as_ref().and_then(|f| f.expression.as_deref());
        let filter = expression.and_then(CodeFilter::parse);
        if let (Some(e), None) = (expression, filter) {
            warnings.push(format!(
                "Telemetry {name}: accessLogging filter {e:?} is not supported yet (only response.code comparisons are); every request is logged"
            ));
        }
        if entry.disabled == Some(true) {
            return None;
        }
        let providers: Vec<String> = if entry.providers.is_empty() {
            mesh.default_providers.access_logging.clone()
        } else {
            entry.providers.iter().map(|p| p.name.clone()).collect()
        };
        for provider in providers {
            let Some(p) = mesh.provider(&provider) else {
                warnings.push(format!(
                    "Telemetry {name}: provider {provider} is not in the mesh config's extensionProviders"
                ));
                continue;
            };
            let Some(file) = &p.envoy_file_access_log else {
                warnings.push(format!(
                    "Telemetry {name}: provider {provider} is not a file access log; it is not run yet"
                ));
                continue;
            };
            let labels_format = file
                .log_format
                .as_ref()
                .is_some_and(|f| f.get("labels").is_some());
            return Some(AccessLog {
                path: file.path.clone(),
                json: labels_format
                    || (provider == "envoy" && mesh.access_log_encoding == AccessLogEncoding::Json),
                filter,
            });
        }
    }
    None
}

/// The Telemetry that decides one kind of telemetry for a workload, with Istio's
/// precedence: one in its namespace whose selector matches it, then its namespace's
/// without a selector, then the root namespace's.
fn most_specific<'a>(
    objects: &'a [Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    configures: fn(&meshwork_api::resource::Telemetry) -> bool,
) -> Option<&'a meshwork_api::resource::Telemetry> {
    let telemetries: Vec<_> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Telemetry(t) if configures(t) => Some(t),
            _ => None,
        })
        .collect();
    let ns_of =
        |t: &&meshwork_api::resource::Telemetry| t.metadata.namespace.clone().unwrap_or_default();
    let selects = |t: &&meshwork_api::resource::Telemetry| {
        t.spec
            .selector
            .as_ref()
            .is_some_and(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    telemetries
        .iter()
        .find(|t| ns_of(t) == namespace && selects(t))
        .or_else(|| {
            telemetries
                .iter()
                .find(|t| ns_of(t) == namespace && t.spec.selector.is_none())
        })
        .or_else(|| {
            telemetries
                .iter()
                .find(|t| ns_of(t) == mesh.root_namespace && t.spec.selector.is_none())
        })
        .copied()
}

/// The tracing of a workload in `namespace` with `labels`: the most specific Telemetry
/// with `tracing` (its providers, else `defaultProviders.tracing`; its
/// `randomSamplingPercentage`, else the mesh's `defaultConfig.tracing.sampling`, else
/// Istio's 1%), or without one the mesh's default providers. The providers are the mesh
/// config's `zipkin` and `opentelemetry` extension providers.
pub fn tracing(
    objects: &[Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Option<meshwork_resources::trace::Tracing> {
    let chosen = most_specific(objects, mesh, namespace, labels, |t| {
        !t.spec.tracing.is_empty()
    });
    let entry = chosen.and_then(|t| t.spec.tracing.first());
    let name = chosen.map_or_else(String::new, |t| {
        format!(
            "{}/{}",
            t.metadata.namespace.as_deref().unwrap_or_default(),
            t.metadata.name.as_deref().unwrap_or_default()
        )
    });
    let providers: Vec<String> = match entry {
        Some(e) if !e.providers.is_empty() => e.providers.iter().map(|p| p.name.clone()).collect(),
        _ => mesh.default_providers.tracing.clone(),
    };
    let sampling = entry
        .and_then(|e| e.random_sampling_percentage)
        .or_else(|| {
            mesh.default_config
                .tracing
                .as_ref()
                .and_then(|t| t.sampling)
        })
        .unwrap_or(1.0)
        .clamp(0.0, 100.0);
    let custom = entry.map(|e| &e.custom_tags);
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
            disable_span_reporting: entry.and_then(|e| e.disable_span_reporting) == Some(true),
            tags,
            header_tags,
            environment_tags,
        });
    }
    None
}
