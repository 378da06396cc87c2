//! Clusters: one per service host, port and subset that a route names, with their endpoint
//! sets (from the registry, filtered by the DestinationRule subset's labels) and the
//! secrets their TLS origination uses.

use std::collections::{BTreeMap, HashMap};

use meshwork_api::duration::parse_duration;
use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::{DestinationRule, Object};

use crate::policy::{compile, effective};
use crate::registry::{Protocol, Registry, resolve_host};
use crate::routes::ClusterKey;
use meshwork_api::generated::networking::{ClientTlsMode, ClientTlsSettings, H2UpgradePolicy};
use meshwork_resources::cluster::{
    Cluster, ConnectionSettings, UpstreamProtocol, UpstreamTls, UpstreamTlsMode,
};
use meshwork_resources::{EndpointSet, Secret};

fn millis(text: Option<&String>) -> Option<u64> {
    text.and_then(|t| parse_duration(t).ok())
        .map(|d| d.as_millis() as u64)
}

/// The DestinationRules exported to the proxy's namespace, by host.
fn destination_rules<'a>(ctx: &ClusterContext<'a>) -> HashMap<String, Vec<&'a DestinationRule>> {
    let mut out: HashMap<String, Vec<&DestinationRule>> = HashMap::new();
    for o in ctx.objects {
        let Object::DestinationRule(dr) = o else {
            continue;
        };
        let ns = dr.metadata.namespace.as_deref().unwrap_or_default();
        if crate::sidecar::exported(
            &dr.spec.export_to,
            &ctx.mesh.default_destination_rule_export_to,
            ns,
            ctx.proxy_namespace,
        ) {
            out.entry(resolve_host(&dr.spec.host, ns))
                .or_default()
                .push(dr);
        }
    }
    out
}

/// The DestinationRule for a host, where Istio looks for it: in the proxy's namespace,
/// then in the service's, then in the root namespace. Rules in other namespaces do not
/// apply.
fn destination_rule<'a>(
    rules: &HashMap<String, Vec<&'a DestinationRule>>,
    host: &str,
    service_ns: &str,
    ctx: &ClusterContext<'_>,
) -> Option<&'a DestinationRule> {
    let candidates = rules.get(host)?;
    [
        ctx.proxy_namespace,
        service_ns,
        ctx.mesh.root_namespace.as_str(),
    ]
    .into_iter()
    .find_map(|ns| {
        candidates
            .iter()
            .find(|dr| dr.metadata.namespace.as_deref() == Some(ns))
    })
    .copied()
}

/// The clusters of a proxy, their endpoint sets and the secrets their TLS needs.
#[derive(Debug, Default)]
pub struct Clusters {
    /// Clusters by name.
    pub clusters: BTreeMap<String, Cluster>,
    /// Endpoint sets by cluster name.
    pub endpoints: BTreeMap<String, EndpointSet>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, Secret>,
}

/// Where the clusters are compiled for: the proxy's namespace, where `credentialName`
/// Secrets are looked up.
pub struct ClusterContext<'a> {
    /// The config.
    pub objects: &'a [Object],
    /// The services.
    pub registry: &'a Registry,
    /// The mesh config.
    pub mesh: &'a MeshConfig,
    /// The proxy's namespace.
    pub proxy_namespace: &'a str,
    /// Whether proxies have mesh certificates (under `meshwork control`, with its CA):
    /// then clusters to mesh workloads use mTLS (auto mTLS, and `ISTIO_MUTUAL`).
    pub mesh_mtls: bool,
}

/// Builds the clusters for these keys.
pub fn build_clusters(
    keys: &[ClusterKey],
    ctx: &ClusterContext<'_>,
    warnings: &mut Vec<String>,
) -> Clusters {
    let ClusterContext { registry, mesh, .. } = *ctx;
    let default_connect = parse_duration(&mesh.connect_timeout)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(10_000);
    let mut out = Clusters::default();
    let rules = destination_rules(ctx);
    for key in keys {
        let name = key.name();
        if out.clusters.contains_key(&name) {
            continue;
        }
        let service = registry.get(&key.host);
        let ns = service.map(|s| s.namespace.as_str()).unwrap_or_default();
        let dr = destination_rule(&rules, &key.host, ns, ctx);
        let subset = key
            .subset
            .as_ref()
            .and_then(|s| dr.and_then(|d| d.spec.subsets.iter().find(|x| &x.name == s)));
        let labels = subset.map(|s| s.labels.clone()).unwrap_or_default();
        let priority_keys: Vec<String> = effective(
            dr.and_then(|d| d.spec.traffic_policy.as_ref()),
            subset.and_then(|s| s.traffic_policy.as_ref()),
            key.port,
        )
        .load_balancer
        .and_then(|lb| lb.locality_lb_setting)
        .or_else(|| Some(mesh.locality_lb_setting.clone()))
        .map(|l| l.failover_priority)
        .unwrap_or_default();
        let endpoints = service
            .map(|s| {
                let mut eps: Vec<_> = s
                    .instances
                    .iter()
                    .filter(|i| i.service_port == key.port)
                    .filter(|i| labels.iter().all(|(k, v)| i.labels.get(k) == Some(v)))
                    .map(|i| {
                        let mut e = i.endpoint.clone();
                        e.labels = priority_keys
                            .iter()
                            .filter_map(|k| Some((k.clone(), i.labels.get(k)?.clone())))
                            .collect();
                        e
                    })
                    .collect();
                eps.sort();
                eps
            })
            .unwrap_or_default();
        let merged = effective(
            dr.and_then(|d| d.spec.traffic_policy.as_ref()),
            subset.and_then(|s| s.traffic_policy.as_ref()),
            key.port,
        );
        let http_pool = merged
            .connection_pool
            .as_ref()
            .and_then(|c| c.http.as_ref());
        let upgrade = match http_pool.and_then(|h| h.h2_upgrade_policy) {
            Some(H2UpgradePolicy::Upgrade) => true,
            Some(H2UpgradePolicy::DoNotUpgrade) => false,
            _ => mesh.h2_upgrade_policy == "UPGRADE",
        };
        let protocol = match service.and_then(|s| s.port(key.port)).map(|p| p.protocol) {
            Some(Protocol::Http2 | Protocol::Grpc) => UpstreamProtocol::Http2,
            Some(Protocol::Http | Protocol::Unknown) | None if upgrade => UpstreamProtocol::Http2,
            _ => UpstreamProtocol::Http1,
        };
        let keepalive = merged
            .connection_pool
            .as_ref()
            .and_then(|c| c.tcp.as_ref())
            .and_then(|t| t.tcp_keepalive.as_ref())
            .or(mesh.tcp_keepalive.as_ref())
            .map(|k| {
                let secs = |t: Option<&String>| millis(t).map(|ms| ms / 1000);
                (secs(k.time.as_ref()), secs(k.interval.as_ref()), k.probes)
            });
        let connections = ConnectionSettings {
            tcp_keepalive: keepalive,
            http_idle_timeout_ms: millis(http_pool.and_then(|h| h.idle_timeout.as_ref()))
                .unwrap_or(3_600_000),
            use_client_protocol: http_pool.and_then(|h| h.use_client_protocol) == Some(true),
            max_requests_per_connection: http_pool
                .and_then(|h| h.max_requests_per_connection)
                .filter(|n| *n > 0)
                .map_or(0, |n| n as u32),
            source_address: None,
        };
        let connect_timeout_ms = merged
            .connection_pool
            .as_ref()
            .and_then(|c| c.tcp.as_ref())
            .and_then(|t| t.connect_timeout.as_ref())
            .and_then(|t| parse_duration(t).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(default_connect);
        let idle_timeout_ms = merged
            .connection_pool
            .as_ref()
            .and_then(|c| c.tcp.as_ref())
            .and_then(|t| t.idle_timeout.as_ref())
            .and_then(|t| parse_duration(t).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(3_600_000);
        // ALPN only where the port carries HTTP: opaque TCP and TLS ports offer none.
        let port_protocol = service.and_then(|s| s.port(key.port)).map(|p| p.protocol);
        let alpn_protocol = match port_protocol {
            Some(Protocol::Tcp | Protocol::Tls) => None,
            _ => Some(protocol),
        };
        let dr_mode = merged.tls.as_ref().map(|t| t.mode.unwrap_or_default());
        let tls = merged
            .tls
            .as_ref()
            .and_then(|t| upstream_tls(t, alpn_protocol, ctx, &name, &mut out.secrets, warnings));
        let mesh_tls = ctx.mesh_mtls
            && match dr_mode {
                Some(ClientTlsMode::IstioMutual) => true,
                // Auto mTLS: no DestinationRule TLS, and every endpoint a mesh workload
                // whose port does not DISABLE mTLS.
                None => {
                    mesh.enable_auto_mtls
                        && service.is_some_and(|s| crate::mtls::all_mesh(s, key.port, &labels, ctx))
                }
                Some(_) => false,
            };
        let tls = if mesh_tls {
            service.map(|s| crate::mtls::client(s, key, &labels, alpn_protocol, ctx.mesh))
        } else {
            tls
        };
        out.endpoints.insert(
            name.clone(),
            EndpointSet {
                cluster: name.clone(),
                endpoints,
            },
        );
        out.clusters.insert(
            name.clone(),
            Cluster {
                name,
                host: key.host.clone(),
                port: key.port,
                subset: key.subset.clone(),
                protocol,
                connect_timeout_ms,
                idle_timeout_ms,
                policy: compile(&merged, Some(&mesh.locality_lb_setting)),
                connections,
                tls,
                original_destination: None,
            },
        );
    }
    out
}

/// DestinationRule `tls` as the cluster's TLS origination (SIMPLE and MUTUAL; DISABLE is
/// plaintext). Its secrets are added to `secrets`. A credential that cannot be found leaves
/// the cluster without TLS, with a warning, as istiod does.
fn upstream_tls(
    t: &ClientTlsSettings,
    protocol: Option<UpstreamProtocol>,
    ctx: &ClusterContext<'_>,
    cluster: &str,
    secrets: &mut BTreeMap<String, Secret>,
    warnings: &mut Vec<String>,
) -> Option<UpstreamTls> {
    let mode = match t.mode.unwrap_or_default() {
        ClientTlsMode::Disable => return None,
        ClientTlsMode::IstioMutual if !ctx.mesh_mtls => {
            warnings.push(format!(
                "cluster {cluster}: tls mode ISTIO_MUTUAL needs the mesh CA, which is not running; plaintext is used"
            ));
            return None;
        }
        ClientTlsMode::IstioMutual => return None,
        ClientTlsMode::Simple => UpstreamTlsMode::Simple,
        ClientTlsMode::Mutual => UpstreamTlsMode::Mutual,
    };
    let mut client_certificate = None;
    let mut trusted_ca = None;
    if let Some(name) = t.credential_name.as_deref().filter(|n| !n.is_empty()) {
        // As Istio fetches it: from the proxy's own namespace, never the rule's.
        let found = crate::secrets::credential(ctx.objects, ctx.proxy_namespace, name);
        match found {
            Ok((cert, ca)) => {
                if mode == UpstreamTlsMode::Mutual {
                    client_certificate = Some(cert.name.clone());
                    secrets.insert(cert.name.clone(), cert);
                }
                if let Some(ca) = ca {
                    trusted_ca = Some(ca.name.clone());
                    secrets.insert(ca.name.clone(), ca);
                }
            }
            Err(e) => {
                warnings.push(format!(
                    "cluster {cluster}: {e}; TLS origination is left out"
                ));
                return None;
            }
        }
    } else if mode == UpstreamTlsMode::Mutual {
        match (t.client_certificate.as_deref(), t.private_key.as_deref()) {
            (Some(cert), Some(key)) => {
                let s = crate::secrets::file_certificate(cert, key);
                client_certificate = Some(s.name.clone());
                secrets.insert(s.name.clone(), s);
            }
            _ => {
                warnings.push(format!(
                    "cluster {cluster}: MUTUAL TLS needs clientCertificate and privateKey, or credentialName; TLS origination is left out"
                ));
                return None;
            }
        }
    }
    if trusted_ca.is_none()
        && let Some(ca) = t.ca_certificates.as_deref().filter(|c| !c.is_empty())
    {
        let s = crate::secrets::file_ca(ca);
        trusted_ca = Some(s.name.clone());
        secrets.insert(s.name.clone(), s);
    }
    Some(UpstreamTls {
        mode,
        client_certificate,
        trusted_ca,
        sni: t.sni.clone().filter(|s| !s.is_empty()),
        subject_alt_names: t.subject_alt_names.clone(),
        insecure_skip_verify: t.insecure_skip_verify == Some(true),
        min_version: None,
        alpn: match protocol {
            Some(UpstreamProtocol::Http2) => vec!["h2".into()],
            Some(UpstreamProtocol::Http1) => vec!["http/1.1".into()],
            None => Vec::new(),
        },
    })
}
