//! Mutual TLS between mesh proxies: which endpoints are mesh workloads (a proxy serves
//! them), what a client sends them (auto mTLS and `ISTIO_MUTUAL`: the proxy's own workload
//! certificate, verifying the server's SPIFFE identity against the service accounts
//! behind the destination), and what a sidecar's inbound port accepts.

use std::collections::{BTreeMap, BTreeSet};

use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::Object;
use meshwork_resources::cluster::{UpstreamProtocol, UpstreamTls, UpstreamTlsMode};
use meshwork_resources::listener::{TlsContext, TlsMode};
use meshwork_resources::secret::{MESH_ROOTS, WORKLOAD_CERTIFICATE};

use crate::clusters::ClusterContext;
use crate::peer_authentication::{MtlsMode, mode_for};
use crate::registry::{SERVICE_ACCOUNT_LABEL, Service};
use crate::routes::ClusterKey;

/// Whether a workload has a mesh proxy in front of it: Istio's
/// `security.istio.io/tlsMode: istio` label, or a Sidecar resource with ingress listeners
/// selecting it (without traffic capture, nothing else reaches a sidecar).
pub fn is_mesh_workload(
    objects: &[Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    labels.get("security.istio.io/tlsMode").map(String::as_str) == Some("istio")
        || crate::sidecar::sidecar_for(objects, mesh, namespace, labels)
            .is_some_and(|s| !s.spec.ingress.is_empty())
}

fn instances<'a>(
    service: &'a Service,
    port: u32,
    subset: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = &'a crate::registry::Instance> {
    service
        .instances
        .iter()
        .filter(move |i| i.service_port == port)
        .filter(move |i| subset.iter().all(|(k, v)| i.labels.get(k) == Some(v)))
}

/// Auto mTLS applies: every endpoint (of the subset) is a mesh workload whose port does
/// not DISABLE mTLS.
pub fn all_mesh(
    service: &Service,
    port: u32,
    subset: &BTreeMap<String, String>,
    ctx: &ClusterContext<'_>,
) -> bool {
    let mut any = false;
    for i in instances(service, port, subset) {
        any = true;
        let ns = &service.namespace;
        if !is_mesh_workload(ctx.objects, ctx.mesh, ns, &i.labels)
            || mode_for(
                ctx.objects,
                ctx.mesh,
                ns,
                &i.labels,
                u32::from(i.endpoint.port),
            ) == MtlsMode::Disable
        {
            return false;
        }
    }
    any
}

/// What a client sends a mesh destination: its workload certificate, the mesh roots, and
/// the SPIFFE ids of the service accounts behind it as the names to verify.
pub fn client(
    service: &Service,
    key: &ClusterKey,
    subset: &BTreeMap<String, String>,
    protocol: Option<UpstreamProtocol>,
    mesh: &MeshConfig,
) -> UpstreamTls {
    let accounts: BTreeSet<String> = instances(service, key.port, subset)
        .map(|i| {
            let sa = i
                .labels
                .get(SERVICE_ACCOUNT_LABEL)
                .map_or("default", String::as_str);
            format!(
                "spiffe://{}/ns/{}/sa/{sa}",
                mesh.trust_domain, service.namespace
            )
        })
        .collect();
    UpstreamTls {
        mode: UpstreamTlsMode::Mutual,
        client_certificate: Some(WORKLOAD_CERTIFICATE.into()),
        trusted_ca: Some(MESH_ROOTS.into()),
        sni: Some(format!(
            "outbound_.{}_.{}_.{}",
            key.port,
            key.subset.as_deref().unwrap_or(""),
            key.host
        )),
        subject_alt_names: accounts.into_iter().collect(),
        insecure_skip_verify: false,
        min_version: None,
        alpn: match protocol {
            Some(UpstreamProtocol::Http2) => vec!["h2".into()],
            Some(UpstreamProtocol::Http1) => vec!["http/1.1".into()],
            None => Vec::new(),
        },
    }
}

/// What a sidecar's inbound port terminates under STRICT or PERMISSIVE: mTLS with its
/// workload certificate, requiring a client certificate from the mesh roots. A TCP port
/// takes Istio's ALPN, under which mesh clients exchange their metadata first.
pub fn server(http: bool) -> TlsContext {
    TlsContext {
        mode: TlsMode::Mutual,
        certificate: WORKLOAD_CERTIFICATE.into(),
        client_ca: Some(MESH_ROOTS.into()),
        min_version: None,
        max_version: None,
        cipher_suites: Vec::new(),
        alpn: if http {
            vec!["h2".into(), "http/1.1".into()]
        } else {
            meshwork_resources::listener::OPAQUE_ALPN
                .iter()
                .map(|a| a.to_string())
                .collect()
        },
    }
}

/// One destination of a proxy, as `meshwork authn tls-check` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCheck {
    /// The service host.
    pub host: String,
    /// The service port.
    pub port: u32,
    /// The subset, for a subset's cluster.
    pub subset: Option<String>,
    /// What the endpoints' ports accept: STRICT, PERMISSIVE, DISABLE (distinct, sorted);
    /// `NO PROXY` for an endpoint without a mesh proxy.
    pub server: Vec<String>,
    /// What the client sends: ISTIO_MUTUAL, SIMPLE, MUTUAL or DISABLE.
    pub client: String,
    /// Whether auto mTLS chose it (no DestinationRule sets TLS).
    pub auto: bool,
    /// `name.namespace` of the DestinationRule that sets the client's TLS.
    pub destination_rule: Option<String>,
    /// The client's TLS cannot talk to the server: plaintext (or non-mesh TLS) toward
    /// STRICT, or mesh mTLS toward DISABLE.
    pub conflict: bool,
}

/// The DestinationRule that sets TLS for a host, if any.
fn tls_rule(snapshot: &crate::proxy::MeshSnapshot, host: &str, viewer: &str) -> Option<String> {
    snapshot.objects.iter().find_map(|o| {
        let Object::DestinationRule(dr) = o else {
            return None;
        };
        let ns = dr.metadata.namespace.as_deref().unwrap_or_default();
        let sets_tls = dr.spec.traffic_policy.as_ref().is_some_and(|t| {
            t.tls.is_some() || t.port_level_settings.iter().any(|p| p.tls.is_some())
        }) || dr
            .spec
            .subsets
            .iter()
            .any(|s| s.traffic_policy.as_ref().is_some_and(|t| t.tls.is_some()));
        (sets_tls
            && crate::registry::resolve_host(&dr.spec.host, ns) == host
            && crate::sidecar::exported(
                &dr.spec.export_to,
                &snapshot.mesh.default_destination_rule_export_to,
                ns,
                viewer,
            ))
        .then(|| format!("{}.{ns}", dr.metadata.name.as_deref().unwrap_or_default()))
    })
}

/// For proxy `node` and each destination it can reach (`service`: only that host, or
/// its short name), what the server accepts and what the client sends.
pub fn tls_check(
    snapshot: &crate::proxy::MeshSnapshot,
    node: &meshwork_resources::Node,
    service: Option<&str>,
) -> Vec<TlsCheck> {
    let (config, _) = crate::proxy::compile_proxy(snapshot, node);
    let mut out = Vec::new();
    for (name, cluster) in &config.clusters {
        if !name.starts_with("outbound|") {
            continue;
        }
        if let Some(s) = service
            && cluster.host != s
            && !cluster.host.starts_with(&format!("{s}."))
        {
            continue;
        }
        let Some(svc) = snapshot.registry.get(&cluster.host) else {
            continue;
        };
        let endpoints = config
            .endpoints
            .get(name)
            .map(|e| e.endpoints.clone())
            .unwrap_or_default();
        let mut server: BTreeSet<String> = BTreeSet::new();
        for i in svc
            .instances
            .iter()
            .filter(|i| i.service_port == cluster.port)
            .filter(|i| {
                endpoints
                    .iter()
                    .any(|e| e.address == i.endpoint.address && e.port == i.endpoint.port)
            })
        {
            let ns = &svc.namespace;
            if is_mesh_workload(&snapshot.objects, &snapshot.mesh, ns, &i.labels) {
                let mode = mode_for(
                    &snapshot.objects,
                    &snapshot.mesh,
                    ns,
                    &i.labels,
                    u32::from(i.endpoint.port),
                );
                server.insert(mode.as_str().to_string());
            } else {
                server.insert("NO PROXY".into());
            }
        }
        let client = match &cluster.tls {
            None => "DISABLE",
            Some(t)
                if t.client_certificate.as_deref() == Some(WORKLOAD_CERTIFICATE)
                    && t.trusted_ca.as_deref() == Some(MESH_ROOTS) =>
            {
                "ISTIO_MUTUAL"
            }
            Some(t) if t.mode == UpstreamTlsMode::Simple => "SIMPLE",
            Some(_) => "MUTUAL",
        };
        let conflict = (server.contains("STRICT") && client != "ISTIO_MUTUAL")
            || (server.contains("DISABLE") && client == "ISTIO_MUTUAL");
        let destination_rule = tls_rule(snapshot, &cluster.host, &node.namespace);
        out.push(TlsCheck {
            host: cluster.host.clone(),
            port: cluster.port,
            subset: cluster.subset.clone(),
            server: server.into_iter().collect(),
            client: client.to_string(),
            auto: destination_rule.is_none(),
            destination_rule,
            conflict,
        });
    }
    out
}
