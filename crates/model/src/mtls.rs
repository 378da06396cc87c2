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
/// workload certificate, requiring a client certificate from the mesh roots.
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
            Vec::new()
        },
    }
}
