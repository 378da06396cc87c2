//! Per-proxy compilation for the control plane: the config of one version indexed once
//! ([`MeshSnapshot`]), the workload behind a connecting proxy found as istiod finds it
//! ([`find_workload`]), and each proxy's resources compiled from both ([`compile_proxy`]).

use std::collections::BTreeMap;

use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::Object;
use meshwork_resources::{Node, ProxyConfig, Role};

use crate::registry::Registry;

/// One version of the config, with what every proxy's compilation shares.
#[derive(Debug, Clone, Default)]
pub struct MeshSnapshot {
    /// The resources.
    pub objects: Vec<Object>,
    /// The mesh config.
    pub mesh: MeshConfig,
    /// The services and their endpoints.
    pub registry: Registry,
}

impl MeshSnapshot {
    /// Indexes a config.
    pub fn new(objects: Vec<Object>, mesh: MeshConfig) -> MeshSnapshot {
        let registry = Registry::build(&objects);
        MeshSnapshot {
            objects,
            mesh,
            registry,
        }
    }
}

/// The Pod or WorkloadEntry behind a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundWorkload {
    /// `pod/NS/NAME` or `workloadentry/NS/NAME`.
    pub source: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its service account (`default` for a Pod without one).
    pub service_account: String,
    /// `region/zone/subzone`, when it has one.
    pub locality: Option<String>,
}

/// The Pod (by `status.podIP`) or WorkloadEntry (by `address`) with address `ip` in
/// `namespace`, as istiod finds the workload of a connecting proxy.
pub fn find_workload(objects: &[Object], namespace: &str, ip: &str) -> Option<FoundWorkload> {
    objects.iter().find_map(|o| match o {
        Object::Pod(pod) if pod.metadata.namespace.as_deref() == Some(namespace) => {
            let pod_ip = pod.status.as_ref()?.pod_ip.as_deref()?;
            (pod_ip == ip).then(|| {
                let name = pod.metadata.name.clone().unwrap_or_default();
                FoundWorkload {
                    source: format!("pod/{namespace}/{name}"),
                    name,
                    labels: pod.metadata.labels.clone().unwrap_or_default(),
                    service_account: pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .unwrap_or_else(|| "default".into()),
                    locality: None,
                }
            })
        }
        Object::WorkloadEntry(we) if we.metadata.namespace.as_deref() == Some(namespace) => {
            (we.spec.address.as_deref() == Some(ip)).then(|| {
                let name = we.metadata.name.clone().unwrap_or_default();
                FoundWorkload {
                    source: format!("workloadentry/{namespace}/{name}"),
                    name,
                    labels: we.spec.labels.clone(),
                    service_account: we
                        .spec
                        .service_account
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    locality: we.spec.locality.clone().filter(|l| !l.is_empty()),
                }
            })
        }
        _ => None,
    })
}

/// The node as the control plane sees it: what the proxy said, completed by its workload.
/// Labels the proxy gives override the workload's.
pub fn resolve_node(mut node: Node, workload: Option<&FoundWorkload>) -> Node {
    if let Some(w) = workload {
        let mut labels = w.labels.clone();
        labels.extend(std::mem::take(&mut node.labels));
        node.labels = labels;
        if node.workload_name.is_empty() {
            node.workload_name = w.name.clone();
        }
        if node.service_account.is_empty() {
            node.service_account = w.service_account.clone();
        }
        if node.locality.is_none() {
            node.locality = w.locality.clone();
        }
    }
    node
}

/// What compiling a proxy's config depends on, beyond its own identity and address:
/// proxies of one class share that part, so the control plane compiles it once per class.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProxyClass {
    /// Gateway or sidecar.
    pub role: Role,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's labels.
    pub labels: BTreeMap<String, String>,
    /// Its traffic is redirected to it (its outbound listeners then bind nothing).
    pub intercepted: bool,
}

impl ProxyClass {
    /// The class of a node.
    pub fn of(node: &Node) -> ProxyClass {
        ProxyClass {
            role: node.role,
            namespace: node.namespace.clone(),
            labels: node.labels.clone(),
            intercepted: node.interception.is_some(),
        }
    }

    fn node(&self) -> Node {
        Node {
            role: self.role,
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            interception: self
                .intercepted
                .then_some(meshwork_resources::node::Interception {
                    outbound_port: 0,
                    inbound_port: 0,
                }),
            ..Node::default()
        }
    }
}

/// Compiles what every proxy of `class` shares, with the problems that leave part of it
/// out. Its node is a placeholder: [`compile_own`] gives each proxy its own.
pub fn compile_class(snapshot: &MeshSnapshot, class: &ProxyClass) -> (ProxyConfig, Vec<String>) {
    let mut warnings = Vec::new();
    let MeshSnapshot {
        objects,
        mesh,
        registry,
    } = snapshot;
    let node = class.node();
    let config = match class.role {
        Role::Gateway => {
            crate::gateway::compile_gateway_node(&node, objects, registry, mesh, &mut warnings)
        }
        Role::Sidecar => crate::sidecar::compile_sidecar_part(
            &node,
            crate::sidecar::Part::Class,
            objects,
            registry,
            mesh,
            &mut warnings,
        ),
    };
    (config, warnings)
}

/// Compiles what is proxy `node`'s own: its identity and what depends on its address.
pub fn compile_own(snapshot: &MeshSnapshot, node: &Node) -> (ProxyConfig, Vec<String>) {
    let mut warnings = Vec::new();
    let config = match node.role {
        Role::Gateway => ProxyConfig {
            node: node.clone(),
            ..ProxyConfig::default()
        },
        Role::Sidecar => crate::sidecar::compile_sidecar_part(
            node,
            crate::sidecar::Part::Own,
            &snapshot.objects,
            &snapshot.registry,
            &snapshot.mesh,
            &mut warnings,
        ),
    };
    (config, warnings)
}

/// One proxy's config: its class's part and its own (the node from its own part).
pub fn merge(class: &ProxyConfig, own: ProxyConfig) -> ProxyConfig {
    let mut out = class.clone();
    out.node = own.node;
    out.listeners.extend(own.listeners);
    out.route_tables.extend(own.route_tables);
    out.clusters.extend(own.clusters);
    out.endpoints.extend(own.endpoints);
    out.secrets.extend(own.secrets);
    out
}

/// Compiles what proxy `node` runs, with the problems that leave part of it out.
pub fn compile_proxy(snapshot: &MeshSnapshot, node: &Node) -> (ProxyConfig, Vec<String>) {
    let (class, mut warnings) = compile_class(snapshot, &ProxyClass::of(node));
    let (own, more) = compile_own(snapshot, node);
    warnings.extend(more);
    (merge(&class, own), warnings)
}
