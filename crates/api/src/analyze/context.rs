//! What every analyzer reads: the loaded resources (with the assumed ingress gateway),
//! the mesh config, the loader's findings, and lookups over them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use serde_json::json;

use crate::diagnostic::{Diagnostic, Location};
use crate::load::{LoadOutcome, LoadedObject};
use crate::mesh::MeshConfig;
use crate::resource::{self as r, Kind, Object};

/// The input of the analyzers.
pub struct Context<'a> {
    /// The resources that loaded, then the assumed defaults (whose origin has no file).
    pub objects: Vec<LoadedObject>,
    /// The mesh config in force.
    pub mesh: &'a MeshConfig,
    /// What the loader found (schema and webhook errors and warnings).
    pub diagnostics: &'a [Diagnostic],
}

macro_rules! typed {
    ($($fn:ident: $variant:ident($ty:ty);)+) => {
        $(
            #[doc = concat!("Every ", stringify!($variant), ", with where it was read.")]
            pub fn $fn(&self) -> impl Iterator<Item = (&LoadedObject, &$ty)> {
                self.objects.iter().filter_map(|o| match &o.object {
                    Object::$variant(x) => Some((o, x)),
                    _ => None,
                })
            }
        )+
    };
}

/// A service a destination can name: a Kubernetes Service or a ServiceEntry host.
#[derive(Debug, Clone)]
pub struct RegisteredHost {
    /// The FQDN (`reviews.default.svc.cluster.local`) or the ServiceEntry host, which may be
    /// a wildcard.
    pub host: String,
    /// The namespaces that see it; `None` for all.
    pub visible_to: Option<Vec<String>>,
    /// Its port numbers.
    pub ports: Vec<u32>,
}

/// A Gateway named by a VirtualService, and the resource when it exists.
pub struct GatewayRef<'s> {
    /// Its namespace.
    pub ns: &'s str,
    /// Its name.
    pub name: &'s str,
    /// The Gateway, when the input has it.
    pub found: Option<(&'s LoadedObject, &'s r::Gateway)>,
}

/// The DNS suffix of Kubernetes Services.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// `reviews` in namespace `default` is `reviews.default.svc.cluster.local`; names with a
/// dot and wildcards are kept as written (Istio's rule).
pub fn to_fqdn(namespace: &str, host: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.{CLUSTER_DOMAIN}")
    }
}

/// True when every label of `selector` is in `labels` (an empty selector selects all).
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// A selector as Kubernetes prints it: `app=a,istio=ingressgateway`.
pub fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The namespaces an `exportTo` list exports to (`None`: all), seen from `own`.
pub fn export_scope(export_to: &[String], own: &str) -> Option<Vec<String>> {
    if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
        return None;
    }
    Some(
        export_to
            .iter()
            .map(|e| if e == "." { own.to_string() } else { e.clone() })
            .collect(),
    )
}

impl<'a> Context<'a> {
    /// The analyzers' view of a load.
    pub fn new(outcome: &'a LoadOutcome) -> Self {
        let mut ctx = Context {
            objects: outcome.config.objects.clone(),
            mesh: &outcome.config.mesh,
            diagnostics: &outcome.diagnostics,
        };
        ctx.add_default_ingress();
        ctx
    }

    typed! {
        gateways: Gateway(r::Gateway);
        virtual_services: VirtualService(r::VirtualService);
        destination_rules: DestinationRule(r::DestinationRule);
        service_entries: ServiceEntry(r::ServiceEntry);
        sidecars: Sidecar(r::Sidecar);
        peer_authentications: PeerAuthentication(r::PeerAuthentication);
        authorization_policies: AuthorizationPolicy(r::AuthorizationPolicy);
        request_authentications: RequestAuthentication(r::RequestAuthentication);
        telemetries: Telemetry(r::Telemetry);
        namespaces: Namespace(core::Namespace);
        services: Service(core::Service);
        secrets: Secret(core::Secret);
        pods: Pod(core::Pod);
        workload_entries: WorkloadEntry(r::WorkloadEntry);
    }

    /// Whether a WorkloadEntry of `namespace` has the labels `selector` asks for: a VM
    /// workload, which Sidecar and Telemetry selectors select as they select Pods.
    pub fn workload_entry_selected(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> bool {
        self.workload_entries().any(|(_, w)| {
            w.metadata.namespace.as_deref() == Some(namespace)
                && !selector.is_empty()
                && selector
                    .iter()
                    .all(|(k, v)| w.spec.labels.get(k) == Some(v))
        })
    }

    /// The Gateway a VirtualService in `namespace` names (`name` or `ns/name`), with its
    /// namespace and name.
    pub fn gateway_ref<'s>(&'s self, namespace: &'s str, reference: &'s str) -> GatewayRef<'s> {
        let (ns, name) = reference.split_once('/').unwrap_or((namespace, reference));
        let found = self.gateways().find(|(g, _)| {
            let r = g.object.object_ref();
            r.namespace == ns && r.name == name
        });
        GatewayRef { ns, name, found }
    }

    /// The Istio namespace (the mesh's root namespace, `istio-system`).
    pub fn istio_namespace(&self) -> &str {
        &self.mesh.root_namespace
    }

    /// True when the input defines the Namespace.
    pub fn namespace_exists(&self, name: &str) -> bool {
        self.namespaces()
            .any(|(_, n)| n.metadata.name.as_deref() == Some(name))
    }

    /// The Pods `selector` selects, in `namespace` when given.
    pub fn pods_selected<'s>(
        &'s self,
        namespace: Option<&'s str>,
        selector: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = (&'s LoadedObject, &'s core::Pod)> + 's {
        self.pods().filter(move |(_, p)| {
            namespace.is_none_or(|ns| p.metadata.namespace.as_deref() == Some(ns))
                && selects(selector, p.metadata.labels.as_ref())
        })
    }

    /// Every host a destination can name, with its ports and visibility.
    pub fn registered_hosts(&self) -> Vec<RegisteredHost> {
        let mut out = Vec::new();
        for (o, svc) in self.services() {
            let r = o.object.object_ref();
            let ports = svc.spec.iter().flat_map(|s| s.ports.iter().flatten());
            // A Service exports itself with the `networking.istio.io/exportTo` annotation.
            let export_to: Vec<String> = svc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("networking.istio.io/exportTo"))
                .map(|v| v.split(',').map(|e| e.trim().to_string()).collect())
                .unwrap_or_default();
            out.push(RegisteredHost {
                host: format!("{}.{}.{CLUSTER_DOMAIN}", r.name, r.namespace),
                visible_to: export_scope(&export_to, &r.namespace),
                ports: ports.map(|p| p.port as u32).collect(),
            });
        }
        for (o, se) in self.service_entries() {
            let ns = o.object.object_ref().namespace;
            for h in &se.spec.hosts {
                out.push(RegisteredHost {
                    host: to_fqdn(&ns, h),
                    visible_to: export_scope(&se.spec.export_to, &ns),
                    ports: se.spec.ports.iter().filter_map(|p| p.number).collect(),
                });
            }
        }
        out
    }

    /// Adds the ingress gateway that istioctl assumes for files-only analysis, unless the
    /// mesh turns the ingress controller off: a Pod `<ingressService>-dummypod` labelled
    /// `istio: ingressgateway`, and the Service `<ingressService>` (ports 80, 443, 31400
    /// and 15443, each to the same target port) unless the input defines that Service.
    fn add_default_ingress(&mut self) {
        if self
            .mesh
            .ingress_controller_mode
            .eq_ignore_ascii_case("OFF")
        {
            return;
        }
        let ns = self.istio_namespace().to_string();
        let name = self.mesh.ingress_service.clone();
        let labels = json!({"istio": "ingressgateway"});
        let has_service = self.services().any(|(o, _)| {
            let r = o.object.object_ref();
            r.namespace == ns && r.name == name
        });
        let mut add = |kind: Kind, value: serde_json::Value| {
            let object = kind
                .decode(value)
                .expect("the default gateway objects decode");
            self.objects.push(LoadedObject {
                object,
                origin: Location::default(),
            });
        };
        add(
            Kind::Pod,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{name}-dummypod"), "namespace": ns, "labels": labels},
                "spec": {"containers": [{"name": "istio-proxy"}]},
            }),
        );
        if !has_service {
            let port = |name: &str, port: u32| json!({"name": name, "port": port, "targetPort": port, "protocol": "TCP"});
            add(
                Kind::Service,
                json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"selector": labels, "ports": [
                        port("http2", 80),
                        port("https", 443),
                        port("tcp", 31400),
                        port("tls", 15443),
                    ]},
                }),
            );
        }
    }
}

/// `namespace/name` of a resource, as Istio names it in message texts.
pub fn full_name(o: &LoadedObject) -> String {
    let r = o.object.object_ref();
    format!("{}/{}", r.namespace, r.name)
}

/// True for an object istioctl's harness assumed rather than read.
pub fn is_default(o: &LoadedObject) -> bool {
    o.origin.file.as_os_str().is_empty()
}

/// True for Istio's own control plane (labelled `istio`, or `release: istio`), which some
/// analyzers skip.
pub fn is_control_plane(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .is_some_and(|l| l.contains_key("istio") || l.get("release").is_some_and(|r| r == "istio"))
}
