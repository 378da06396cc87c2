//! MeshConfig: mesh-wide settings, from the `mesh` key of the `istio` ConfigMap in the
//! root namespace or from a standalone `mesh.yaml`, applied over Istio's defaults as
//! istiod applies them (top-level fields replace, `defaultConfig` merges field by field,
//! `extensionProviders` merge by name, `trustDomainAliases` unite).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::diagnostic::{Diagnostic, Findings, Location, Severity};
use crate::generated::networking::{LocalityLbSetting, TcpKeepalive};
use crate::load::LoadedObject;
use crate::path::FieldPath;
use crate::resource::{Object, ObjectRef};
use crate::schema;
use crate::source;

/// Mesh-wide settings, with Istio's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    /// The SPIFFE trust domain of workload identities (`cluster.local`).
    pub trust_domain: String,
    /// Other trust domains treated as this one.
    pub trust_domain_aliases: Vec<String>,
    /// The namespace whose config applies mesh-wide (`istio-system`).
    pub root_namespace: String,
    /// Defaults for every proxy.
    pub default_config: ProxyConfig,
    /// Whether tracing is on (`true`).
    pub enable_tracing: bool,
    /// Where Envoy-style access logs go; empty turns them off.
    pub access_log_file: String,
    /// The access log format; empty for the default format.
    pub access_log_format: String,
    /// TEXT or JSON.
    pub access_log_encoding: AccessLogEncoding,
    /// What to do with traffic to hosts not in the registry.
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// How request paths are normalized before routing and policy.
    pub path_normalization: PathNormalization,
    /// Named telemetry and authorization back ends.
    pub extension_providers: Vec<ExtensionProvider>,
    /// Providers used when a Telemetry resource names none.
    pub default_providers: DefaultProviders,
    /// Upstream connect timeout (`10s`).
    pub connect_timeout: String,
    /// How long to wait for a client to speak first before treating it as TCP (`0s`: off).
    pub protocol_detection_timeout: String,
    /// Mesh-wide TCP keepalive for upstream connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Ingress class handled by the gateway (`istio`).
    pub ingress_class: String,
    /// The gateway Service used for Ingress resources (`istio-ingressgateway`).
    pub ingress_service: String,
    /// The gateway selector value for Ingress resources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_selector: Option<String>,
    /// Ingress controller mode (`STRICT`).
    pub ingress_controller_mode: String,
    /// Whether mTLS is used automatically between mesh workloads (`true`).
    pub enable_auto_mtls: bool,
    /// Merge application metrics into the proxy's Prometheus endpoint (`true`).
    pub enable_prometheus_merge: bool,
    /// Default `exportTo` of Services.
    pub default_service_export_to: Vec<String>,
    /// Default `exportTo` of VirtualServices.
    pub default_virtual_service_export_to: Vec<String>,
    /// Default `exportTo` of DestinationRules.
    pub default_destination_rule_export_to: Vec<String>,
    /// DNS refresh rate for DNS-resolved services (`60s`).
    pub dns_refresh_rate: String,
    /// Whether HTTP/1.1 upstream connections are upgraded to HTTP/2.
    pub h2_upgrade_policy: String,
    /// Mesh-wide locality load balancing (`enabled: true`).
    pub locality_lb_setting: LocalityLbSetting,
    /// TLS settings of mesh mTLS.
    #[serde(rename = "meshMTLS", skip_serializing_if = "Option::is_none")]
    pub mesh_mtls: Option<TlsConfig>,
    /// TLS defaults for everything but ISTIO_MUTUAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_defaults: Option<TlsConfig>,
    /// Which namespaces the control plane watches (all when empty).
    pub discovery_selectors: Vec<LabelSelector>,
    /// Other fields Istio defines, kept as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Proxy defaults (`defaultConfig`), with Istio's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    /// How long connections drain on shutdown (`45s`).
    pub drain_duration: String,
    /// How long to wait for connections to finish on termination (`5s`).
    pub termination_drain_duration: String,
    /// The control plane address (`istiod.istio-system.svc:15012`).
    pub discovery_address: String,
    /// The admin port (`15000`).
    pub proxy_admin_port: u16,
    /// The status and metrics port (`15020`).
    pub status_port: u16,
    /// Worker threads; unset derives it from the CPU limit, 0 uses all cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Environment for the proxy agent.
    pub proxy_metadata: BTreeMap<String, String>,
    /// Tracing settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<ProxyTracing>,
    /// Start the application only once the proxy is ready (`false`).
    pub hold_application_until_proxy_starts: bool,
    /// Which proxy statistics to export beyond the defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_stats_matcher: Option<ProxyStatsMatcher>,
    /// Other fields Istio defines, kept as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `defaultConfig.tracing`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyTracing {
    /// Zipkin collector address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<AddressOnly>,
    /// Datadog agent address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<AddressOnly>,
    /// Sampling percentage, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
    /// Other fields Istio defines, kept as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A tracer address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AddressOnly {
    /// `host:port`.
    #[serde(default)]
    pub address: String,
}

/// `defaultConfig.proxyStatsMatcher`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyStatsMatcher {
    /// Stat name prefixes to include.
    pub inclusion_prefixes: Vec<String>,
    /// Stat name suffixes to include.
    pub inclusion_suffixes: Vec<String>,
    /// Stat name regexes to include.
    pub inclusion_regexps: Vec<String>,
}

/// `accessLogEncoding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AccessLogEncoding {
    /// One line of text per request.
    #[default]
    Text,
    /// One JSON object per request.
    Json,
}

/// `outboundTrafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutboundTrafficPolicy {
    /// ALLOW_ANY or REGISTRY_ONLY.
    #[serde(default)]
    pub mode: OutboundMode,
}

/// `outboundTrafficPolicy.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Unknown destinations pass through.
    #[default]
    AllowAny,
    /// Only registered destinations are reachable.
    RegistryOnly,
}

/// `pathNormalization`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathNormalization {
    /// The normalization applied.
    #[serde(default)]
    pub normalization: Normalization,
}

/// `pathNormalization.normalization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Normalization {
    /// Istio's default, currently BASE.
    #[default]
    Default,
    /// No normalization.
    None,
    /// RFC 3986 normalization: `.` and `..` segments resolved.
    Base,
    /// BASE, and repeated slashes merged.
    MergeSlashes,
    /// MERGE_SLASHES, and `%2F`, `%2f`, `%5C`, `%5c` decoded first.
    DecodeAndMergeSlashes,
}

/// `meshMTLS` and `tlsDefaults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsConfig {
    /// TLS_AUTO, TLSV1_2 or TLSV1_3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<String>,
    /// ECDH curves, in preference order.
    pub ecdh_curves: Vec<String>,
    /// Cipher suites, in preference order.
    pub cipher_suites: Vec<String>,
}

/// `defaultProviders`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DefaultProviders {
    /// Tracing providers.
    pub tracing: Vec<String>,
    /// Metrics providers.
    pub metrics: Vec<String>,
    /// Access log providers.
    pub access_logging: Vec<String>,
}

/// One entry of `extensionProviders`: a name and exactly one provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    /// The name Telemetry and AuthorizationPolicy resources refer to.
    pub name: String,
    /// Zipkin tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<Value>,
    /// OpenTelemetry tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<Value>,
    /// External authorization over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<Value>,
    /// External authorization over gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_grpc: Option<Value>,
    /// File access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_file_access_log: Option<FileAccessLogProvider>,
    /// Prometheus metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<Value>,
    /// Provider kinds meshwork does not run (stackdriver, datadog, ...), kept as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `envoyFileAccessLog`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FileAccessLogProvider {
    /// Where to write (`/dev/stdout`).
    pub path: String,
    /// Text format, or JSON labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<Value>,
    /// Leave out empty fields.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub omit_empty_values: bool,
}

impl Default for MeshConfig {
    fn default() -> Self {
        let provider = |name: &str| ExtensionProvider {
            name: name.to_string(),
            ..Default::default()
        };
        let star = vec!["*".to_string()];
        Self {
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: Vec::new(),
            root_namespace: "istio-system".into(),
            default_config: ProxyConfig::default(),
            enable_tracing: true,
            access_log_file: String::new(),
            access_log_format: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            path_normalization: PathNormalization::default(),
            extension_providers: vec![
                ExtensionProvider {
                    prometheus: Some(Value::Object(Map::new())),
                    ..provider("prometheus")
                },
                ExtensionProvider {
                    other: BTreeMap::from([("stackdriver".into(), Value::Object(Map::new()))]),
                    ..provider("stackdriver")
                },
                ExtensionProvider {
                    envoy_file_access_log: Some(FileAccessLogProvider {
                        path: "/dev/stdout".into(),
                        ..Default::default()
                    }),
                    ..provider("envoy")
                },
            ],
            default_providers: DefaultProviders::default(),
            connect_timeout: "10s".into(),
            protocol_detection_timeout: "0s".into(),
            tcp_keepalive: None,
            ingress_class: "istio".into(),
            ingress_service: "istio-ingressgateway".into(),
            ingress_selector: None,
            ingress_controller_mode: "STRICT".into(),
            enable_auto_mtls: true,
            enable_prometheus_merge: true,
            default_service_export_to: star.clone(),
            default_virtual_service_export_to: star.clone(),
            default_destination_rule_export_to: star,
            dns_refresh_rate: "60s".into(),
            h2_upgrade_policy: "DO_NOT_UPGRADE".into(),
            locality_lb_setting: LocalityLbSetting {
                enabled: Some(true),
                ..Default::default()
            },
            mesh_mtls: None,
            tls_defaults: None,
            discovery_selectors: Vec::new(),
            other: BTreeMap::new(),
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            drain_duration: "45s".into(),
            termination_drain_duration: "5s".into(),
            discovery_address: "istiod.istio-system.svc:15012".into(),
            proxy_admin_port: 15000,
            status_port: 15020,
            concurrency: None,
            proxy_metadata: BTreeMap::new(),
            tracing: None,
            hold_application_until_proxy_starts: false,
            proxy_stats_matcher: None,
            other: BTreeMap::new(),
        }
    }
}

impl MeshConfig {
    /// The extension provider called `name`.
    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }
}

fn mesh_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::from_str(include_str!("../schema/mesh-config.json"))
            .expect("the embedded mesh config schema is valid JSON")
    })
}

/// Checks mesh config data and applies it over Istio's defaults.
pub fn apply(value: &Value, findings: &mut Findings) -> MeshConfig {
    if value.is_null() {
        return MeshConfig::default();
    }
    schema::check(mesh_schema(), value, &FieldPath::root(), findings);
    if findings.has_errors() {
        return MeshConfig::default();
    }
    let mut merged = serde_json::to_value(MeshConfig::default()).expect("defaults serialize");
    merge(&mut merged, value);
    match serde_json::from_value(merged) {
        Ok(mesh) => mesh,
        Err(e) => {
            findings.error(&FieldPath::root(), format!("invalid mesh config: {e}"));
            MeshConfig::default()
        }
    }
}

/// istiod's `ApplyMeshConfig` merge of user YAML over the current config.
fn merge(base: &mut Value, user: &Value) {
    let (Some(base), Some(user)) = (base.as_object_mut(), user.as_object()) else {
        return;
    };
    for (key, value) in user {
        match key.as_str() {
            "defaultConfig" => {
                let target = base
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let (Some(t), Some(u)) = (target.as_object_mut(), value.as_object()) {
                    for (k, v) in u {
                        if k == "proxyMetadata"
                            && let (Some(tm), Some(um)) =
                                (t.get_mut(k).and_then(Value::as_object_mut), v.as_object())
                        {
                            tm.extend(um.clone());
                        } else {
                            t.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            "extensionProviders" => {
                let target = base
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let (Some(t), Some(u)) = (target.as_array_mut(), value.as_array()) {
                    for p in u {
                        match t.iter_mut().find(|e| e.get("name") == p.get("name")) {
                            Some(existing) => *existing = p.clone(),
                            None => t.push(p.clone()),
                        }
                    }
                }
            }
            "trustDomainAliases" => {
                let mut all: Vec<Value> = base
                    .get(key)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                all.extend(value.as_array().cloned().unwrap_or_default());
                all.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                all.dedup();
                base.insert(key.clone(), Value::Array(all));
            }
            _ if value.is_null() => {}
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Reads a standalone mesh config file.
pub fn parse_mesh_file(file: &Path, text: &str) -> (MeshConfig, Vec<Diagnostic>) {
    parse_mesh_text(file, text, MeshTextOrigin::FILE, None)
}

/// Where mesh text sits in the file it was read from, so findings point at its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshTextOrigin {
    /// The text is a literal block (`mesh: |`): its line `n` is the file's line
    /// `line + n`, shifted right by `indent` columns.
    Block {
        /// The file line just before the text (the `mesh: |` line).
        line: usize,
        /// The indentation of the block.
        indent: usize,
    },
    /// The text is some other scalar (quoted, plain or folded), whose lines cannot be
    /// mapped back: findings point at its key.
    Key {
        /// The key's line.
        line: usize,
        /// The key's column.
        column: usize,
    },
}

impl MeshTextOrigin {
    /// A whole file of mesh YAML.
    pub const FILE: Self = Self::Block { line: 0, indent: 0 };

    /// Where the value of the key at `key` (1-based line and column) in `text` starts.
    pub fn of_value(text: &str, key: source::Position) -> Self {
        let at_key = Self::Key {
            line: key.line,
            column: key.column,
        };
        let mut lines = text.lines().skip(key.line.saturating_sub(1));
        let Some(key_line) = lines.next() else {
            return at_key;
        };
        // What follows `key:` on its line: a literal block starts with `|`.
        let after_key = key_line
            .get(key.column.saturating_sub(1)..)
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, value)| value.trim_start());
        if !after_key.is_some_and(|v| v.starts_with('|')) {
            return at_key;
        }
        let indent = lines
            .find(|l| !l.trim().is_empty())
            .map_or(0, |l| l.len() - l.trim_start_matches(' ').len());
        Self::Block {
            line: key.line,
            indent,
        }
    }

    /// The file position of the text's 1-based `line` and `column`.
    fn place(self, line: usize, column: usize) -> (usize, usize) {
        match self {
            Self::Block { line: base, indent } => (base + line, column + indent),
            Self::Key { line, column } => (line, column),
        }
    }
}

/// Parses mesh YAML found at `origin` in `file`.
fn parse_mesh_text(
    file: &Path,
    text: &str,
    origin: MeshTextOrigin,
    resource: Option<&ObjectRef>,
) -> (MeshConfig, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let location = |line: usize, column: usize| {
        let (line, column) = origin.place(line, column);
        Location {
            file: file.to_path_buf(),
            line,
            column,
        }
    };
    let docs = match source::parse_documents(text) {
        Ok(d) => d,
        Err(e) => {
            diags.push(Diagnostic {
                severity: Severity::Error,
                location: location(e.position.line, e.position.column),
                resource: resource.cloned(),
                path: None,
                message: format!("invalid mesh config YAML: {}", e.message),
            });
            return (MeshConfig::default(), diags);
        }
    };
    let Some(doc) = docs.first() else {
        return (MeshConfig::default(), diags);
    };
    let mut findings = Findings::default();
    let mesh = apply(&doc.value, &mut findings);
    for f in findings.into_vec() {
        let pos = doc.position(&f.path);
        diags.push(Diagnostic {
            severity: f.severity,
            location: location(pos.line, pos.column),
            resource: resource.cloned(),
            path: Some(f.path),
            message: format!("mesh config: {}", f.message),
        });
    }
    (mesh, diags)
}

/// The mesh config from the `istio` ConfigMap (key `mesh`) in the root namespace, if any.
/// `origins` tells where each ConfigMap's `mesh` text sits in its file; without an entry,
/// findings point at the ConfigMap.
pub fn from_config_maps(
    objects: &[LoadedObject],
    origins: &HashMap<ObjectRef, MeshTextOrigin>,
) -> (MeshConfig, Vec<Diagnostic>) {
    let root = MeshConfig::default().root_namespace;
    let found = objects.iter().find_map(|o| match &o.object {
        Object::ConfigMap(cm)
            if cm.metadata.name.as_deref() == Some("istio")
                && cm.metadata.namespace.as_deref() == Some(root.as_str()) =>
        {
            Some((o, cm))
        }
        _ => None,
    });
    let Some((loaded, cm)) = found else {
        return (MeshConfig::default(), Vec::new());
    };
    let Some(text) = cm.data.as_ref().and_then(|d| d.get("mesh")) else {
        return (MeshConfig::default(), Vec::new());
    };
    let resource = loaded.object.object_ref();
    let origin = origins
        .get(&resource)
        .copied()
        .unwrap_or(MeshTextOrigin::Key {
            line: loaded.origin.line,
            column: loaded.origin.column,
        });
    parse_mesh_text(&loaded.origin.file, text, origin, Some(&resource))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_match_istio() {
        let m = MeshConfig::default();
        assert_eq!(m.trust_domain, "cluster.local");
        assert_eq!(m.root_namespace, "istio-system");
        assert!(m.enable_tracing);
        assert_eq!(m.connect_timeout, "10s");
        assert_eq!(m.default_config.status_port, 15020);
        assert_eq!(m.default_config.drain_duration, "45s");
        assert_eq!(m.outbound_traffic_policy.mode, OutboundMode::AllowAny);
        let envoy = m.provider("envoy").unwrap();
        assert_eq!(
            envoy.envoy_file_access_log.as_ref().unwrap().path,
            "/dev/stdout"
        );
    }

    #[test]
    fn user_config_merges_over_defaults() {
        let mut f = Findings::default();
        let m = apply(
            &json!({
                "accessLogFile": "/dev/stdout",
                "accessLogEncoding": "JSON",
                "defaultConfig": {"proxyMetadata": {"A": "1"}},
                "extensionProviders": [{"name": "zipkin", "zipkin": {"service": "zipkin.istio-system.svc.cluster.local", "port": 9411}}],
                "trustDomainAliases": ["b", "a"],
            }),
            &mut f,
        );
        assert!(f.as_slice().is_empty(), "{:?}", f.as_slice());
        assert_eq!(m.access_log_file, "/dev/stdout");
        assert_eq!(m.access_log_encoding, AccessLogEncoding::Json);
        assert_eq!(
            m.default_config.drain_duration, "45s",
            "defaultConfig merges field by field"
        );
        assert_eq!(m.default_config.proxy_metadata["A"], "1");
        assert!(m.provider("envoy").is_some() && m.provider("zipkin").is_some());
        assert_eq!(m.trust_domain_aliases, vec!["a", "b"]);
    }

    #[test]
    fn findings_in_the_istio_config_map_point_into_its_mesh_block() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    accessLogFile: /dev/stdout\n    connectTimeout: 0s\n";
        let outcome = crate::load::load_str(
            Path::new("m.yaml"),
            text,
            &crate::load::LoadOptions::default(),
        );
        let lines: Vec<String> = outcome.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            vec![
                "m.yaml:7:5: ConfigMap istio-system/istio: connectTimeout: mesh config: must be a valid duration of at least 1ms"
            ]
        );
        let at = |line, column| source::Position { line, column };
        assert_eq!(
            MeshTextOrigin::of_value("data:\n  mesh: |-\n\n      a: 1\n", at(2, 3)),
            MeshTextOrigin::Block { line: 2, indent: 6 }
        );
        assert_eq!(
            MeshTextOrigin::of_value("data:\n  mesh: \"a: 1\"\n", at(2, 3)),
            MeshTextOrigin::Key { line: 2, column: 3 }
        );
    }

    #[test]
    fn bad_mesh_config_is_reported_by_field() {
        let mut f = Findings::default();
        apply(
            &json!({"accessLogEncodng": "JSON", "connectTimeout": "fast",
                    "extensionProviders": [{"name": "x"}], "configSources": []}),
            &mut f,
        );
        let msgs: Vec<String> = f
            .as_slice()
            .iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect();
        assert!(
            msgs.contains(
                &"accessLogEncodng: unknown field (did you mean \"accessLogEncoding\"?)"
                    .to_string()
            ),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("connectTimeout: must be a valid duration")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.starts_with(
                "extensionProviders[0]: an extension provider must set exactly one provider"
            )),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.starts_with("configSources: accepted as Istio defines it, but not used")), "{msgs:?}");
    }
}
