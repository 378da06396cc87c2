//! The service registry in file mode, in Kubernetes and Istio vocabulary: Services with
//! their ports and protocols, their instances from Pods, WorkloadEntries, Endpoints and
//! EndpointSlices, and ServiceEntries with their own endpoints. Hosts are Istio's: a
//! Service is `name.namespace.svc.cluster.local`.

use std::collections::{BTreeMap, BTreeSet};

use meshwork_api::generated::networking::{ServiceEntryResolution, WorkloadEntrySpec};
use meshwork_api::k8s_openapi::api::core::v1 as core;
use meshwork_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meshwork_api::resource::Object;
use serde::Serialize;

use meshwork_resources::Endpoint;

/// The label that carries a workload's service account among its labels, as Istio's
/// WorkloadEntries do.
pub const SERVICE_ACCOUNT_LABEL: &str = "security.istio.io/serviceAccount";

/// The cluster domain suffix.
pub const DOMAIN_SUFFIX: &str = "cluster.local";

/// Expands a short name (`reviews`) to `reviews.<ns>.svc.cluster.local`; other names stay.
pub fn resolve_host(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{DOMAIN_SUFFIX}")
    }
}

/// The application protocol of a port, as Istio selects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    /// HTTP/1.1 (`http`, `http-*`).
    Http,
    /// HTTP/2 cleartext (`http2`, `http2-*`).
    Http2,
    /// gRPC (`grpc`, `grpc-*`).
    Grpc,
    /// HTTPS (`https-*`).
    Https,
    /// Opaque TLS (`tls-*`).
    Tls,
    /// Opaque TCP (`tcp-*`, `mongo-`, `redis-`, `mysql-`).
    Tcp,
    /// Not declared: detected from traffic.
    Unknown,
}

impl Protocol {
    /// Istio's protocol selection: `appProtocol`, else the port name's prefix (`http-web`).
    pub fn select(app_protocol: Option<&str>, port_name: &str) -> Protocol {
        if let Some(p) = app_protocol {
            return Self::parse(p);
        }
        let prefix = port_name.split('-').next().unwrap_or("");
        Self::parse(prefix)
    }

    /// A protocol name (case-insensitive).
    pub fn parse(name: &str) -> Protocol {
        match name.to_ascii_lowercase().as_str() {
            "http" | "http_proxy" => Protocol::Http,
            "http2" | "kubernetes.io/h2c" => Protocol::Http2,
            "grpc" | "grpc-web" => Protocol::Grpc,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" | "mongo" | "redis" | "mysql" | "postgresql" | "postgres" => Protocol::Tcp,
            _ => Protocol::Unknown,
        }
    }
}

/// A port of a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicePort {
    /// Port name.
    pub name: String,
    /// Service port number.
    pub number: u32,
    /// Where instances listen for it.
    pub target: TargetPort,
    /// Selected protocol.
    pub protocol: Protocol,
}

/// A Service's targetPort.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetPort {
    /// The same number as the service port.
    Same,
    /// A number.
    Number(u16),
    /// A named container (or WorkloadEntry) port.
    Named(String),
}

/// A workload that may back services: a Pod or a WorkloadEntry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Address (IP or DNS name).
    pub address: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Named ports (Pod container ports, WorkloadEntry `ports`).
    pub named_ports: BTreeMap<String, u16>,
    /// `pod/ns/name` or `workloadentry/ns/name`.
    pub source: String,
    /// `region/zone/subzone`: WorkloadEntry `locality`, or the topology labels.
    pub locality: Option<String>,
    /// The named ports map service port names to ports (WorkloadEntry), rather than name
    /// container ports (Pod).
    pub ports_by_service_port: bool,
}

impl Workload {
    /// This workload serving `service_port` on `port`.
    fn instance(&self, port: u16, service_port: u32) -> Instance {
        Instance {
            endpoint: Endpoint {
                address: self.address.clone(),
                port,
                locality: self.locality.clone(),
                labels: BTreeMap::new(),
            },
            service_port,
            labels: self.labels.clone(),
        }
    }
}

/// Locality from Kubernetes' and Istio's topology labels.
fn locality_of(labels: &BTreeMap<String, String>) -> Option<String> {
    let region = labels.get("topology.kubernetes.io/region")?;
    let mut out = region.clone();
    if let Some(zone) = labels.get("topology.kubernetes.io/zone") {
        out = format!("{out}/{zone}");
        if let Some(sub) = labels.get("topology.istio.io/subzone") {
            out = format!("{out}/{sub}");
        }
    }
    Some(out)
}

/// An endpoint of a service with the labels subsets select on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    /// The address to connect to.
    pub endpoint: Endpoint,
    /// The service port it serves.
    pub service_port: u32,
    /// Labels, for subsets.
    pub labels: BTreeMap<String, String>,
}

/// A service known to the mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// FQDN host.
    pub host: String,
    /// Namespace of the Service or ServiceEntry.
    pub namespace: String,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Endpoints, per port.
    pub instances: Vec<Instance>,
    /// Where it is visible: a Service's `networking.istio.io/exportTo` annotation, a
    /// ServiceEntry's `exportTo`; empty for the mesh default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// The addresses clients call it at: a Service's `clusterIP`s, a ServiceEntry's
    /// `addresses` (IPs or CIDRs); empty for none (a headless Service).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

impl Service {
    /// The port with this number.
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }
}

/// All services, by host.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Registry {
    /// Services by FQDN host.
    pub services: BTreeMap<String, Service>,
}

fn port_u16(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p > 0)
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Registry {
    /// Builds the registry from loaded resources.
    pub fn build(objects: &[Object]) -> Registry {
        let workloads = collect_workloads(objects);
        let mut services = BTreeMap::new();
        let mut unaddressed = BTreeSet::new();
        for obj in objects {
            match obj {
                Object::Service(svc) => {
                    if let Some(s) = from_service(svc, &workloads, objects) {
                        services.insert(s.host.clone(), s);
                    }
                }
                Object::ServiceEntry(se) => {
                    let ns = se.metadata.namespace.clone().unwrap_or_default();
                    for s in from_service_entry(&se.spec, &ns, &workloads) {
                        if s.addresses.is_empty() && !s.host.contains('*') {
                            unaddressed.insert(s.host.clone());
                        }
                        services.entry(s.host.clone()).or_insert(s);
                    }
                }
                _ => {}
            }
        }
        for (host, address) in allocate(&unaddressed) {
            if let Some(s) = services.get_mut(&host)
                && s.addresses.is_empty()
            {
                s.addresses.push(address);
            }
        }
        Registry { services }
    }

    /// The service for a host.
    pub fn get(&self, host: &str) -> Option<&Service> {
        self.services.get(host)
    }
}

/// Addresses for ServiceEntry hosts that have none, as Istio's DNS auto-allocation gives
/// them: one each in 240.240.0.0/16 (class E, never routed), by a hash of the host, so
/// that a host keeps its address as others come and go; a taken address moves on to the
/// next free one, in host order.
pub fn allocate(hosts: &BTreeSet<String>) -> Vec<(String, String)> {
    const SIZE: u32 = 65534;
    let mut taken = BTreeSet::new();
    let mut out = Vec::new();
    for host in hosts {
        // FNV-1a: the same on every build.
        let mut h: u32 = 0x811c_9dc5;
        for b in host.as_bytes() {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
        let mut n = h % SIZE + 1;
        while !taken.insert(n) {
            n = n % SIZE + 1;
        }
        out.push((host.clone(), format!("240.240.{}.{}", n >> 8, n & 0xff)));
    }
    out
}

fn collect_workloads(objects: &[Object]) -> Vec<Workload> {
    let mut out = Vec::new();
    for obj in objects {
        match obj {
            Object::Pod(pod) => {
                let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
                    continue;
                };
                let named_ports = pod
                    .spec
                    .iter()
                    .flat_map(|s| &s.containers)
                    .flat_map(|c| c.ports.iter().flatten())
                    .filter_map(|p| Some((p.name.clone()?, port_u16(p.container_port)?)))
                    .collect();
                let mut labels = pod.metadata.labels.clone().unwrap_or_default();
                labels
                    .entry(SERVICE_ACCOUNT_LABEL.into())
                    .or_insert_with(|| {
                        pod.spec
                            .as_ref()
                            .and_then(|s| s.service_account_name.clone())
                            .unwrap_or_else(|| "default".into())
                    });
                out.push(Workload {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    address: ip,
                    labels,
                    locality: locality_of(pod.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())),
                    named_ports,
                    ports_by_service_port: false,
                    source: format!(
                        "pod/{}/{}",
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        pod.metadata.name.as_deref().unwrap_or_default()
                    ),
                });
            }
            Object::WorkloadEntry(we) => {
                let ns = we.metadata.namespace.clone().unwrap_or_default();
                let name = we.metadata.name.clone().unwrap_or_default();
                if let Some(w) =
                    workload_from_entry(&we.spec, &ns, format!("workloadentry/{ns}/{name}"))
                {
                    out.push(w);
                }
            }
            _ => {}
        }
    }
    out
}

fn workload_from_entry(we: &WorkloadEntrySpec, ns: &str, source: String) -> Option<Workload> {
    let mut labels = we.labels.clone();
    if let Some(sa) = &we.service_account {
        labels
            .entry(SERVICE_ACCOUNT_LABEL.into())
            .or_insert(sa.clone());
    }
    Some(Workload {
        locality: we
            .locality
            .clone()
            .filter(|l| !l.is_empty())
            .or_else(|| locality_of(&we.labels)),
        namespace: ns.to_string(),
        ports_by_service_port: true,
        address: we.address.clone().filter(|a| !a.is_empty())?,
        labels,
        named_ports: we
            .ports
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), u16::try_from(*v).ok()?)))
            .collect(),
        source,
    })
}

fn from_service(
    svc: &core::Service,
    workloads: &[Workload],
    objects: &[Object],
) -> Option<Service> {
    let name = svc.metadata.name.clone()?;
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let spec = svc.spec.as_ref()?;
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let pname = p.name.clone().unwrap_or_default();
            ServicePort {
                protocol: Protocol::select(p.app_protocol.as_deref(), &pname),
                name: pname,
                number: u32::try_from(p.port).unwrap_or(0),
                target: match &p.target_port {
                    None => TargetPort::Same,
                    Some(IntOrString::Int(n)) => {
                        port_u16(*n).map_or(TargetPort::Same, TargetPort::Number)
                    }
                    Some(IntOrString::String(s)) => TargetPort::Named(s.clone()),
                },
            }
        })
        .collect();
    let selector = spec.selector.clone().unwrap_or_default();
    let mut instances = Vec::new();
    for w in workloads
        .iter()
        .filter(|w| w.namespace == ns && selects(&selector, &w.labels))
    {
        for p in &ports {
            // A WorkloadEntry's `ports` name the service port it serves; a Pod's named
            // container ports only resolve a named targetPort, as in Kubernetes.
            let by_service_port = if w.ports_by_service_port {
                w.named_ports.get(&p.name).copied()
            } else {
                None
            };
            let port = by_service_port.or(match &p.target {
                TargetPort::Same => u16::try_from(p.number).ok(),
                TargetPort::Number(n) => Some(*n),
                TargetPort::Named(n) => w.named_ports.get(n).copied(),
            });
            if let Some(port) = port {
                instances.push(w.instance(port, p.number));
            }
        }
    }
    instances.extend(endpoint_objects(&name, &ns, &ports, workloads, objects));
    dedup(&mut instances);
    let export_to = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("networking.istio.io/exportTo"))
        .map(|a| {
            a.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut addresses: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if let Some(ip) = &spec.cluster_ip
        && !addresses.contains(ip)
    {
        addresses.insert(0, ip.clone());
    }
    addresses.retain(|a| a.parse::<std::net::IpAddr>().is_ok());
    Some(Service {
        host: format!("{name}.{ns}.svc.{DOMAIN_SUFFIX}"),
        namespace: ns,
        ports,
        instances,
        export_to,
        addresses,
    })
}

/// Instances from Endpoints and EndpointSlices of the service (for services without a
/// selector, or endpoints maintained by hand). Labels come from the Pod a target names.
fn endpoint_objects(
    name: &str,
    ns: &str,
    ports: &[ServicePort],
    workloads: &[Workload],
    objects: &[Object],
) -> Vec<Instance> {
    let labels_of = |pod: Option<&str>| {
        pod.and_then(|p| {
            let source = format!("pod/{ns}/{p}");
            workloads.iter().find(|w| w.source == source)
        })
        .map(|w| w.labels.clone())
        .unwrap_or_default()
    };
    let port_for = |port_name: Option<&str>, single: bool| {
        ports
            .iter()
            .find(|p| Some(p.name.as_str()) == port_name || (single && ports.len() == 1))
            .map(|p| p.number)
    };
    let mut out = Vec::new();
    for obj in objects {
        match obj {
            Object::Endpoints(ep)
                if ep.metadata.name.as_deref() == Some(name)
                    && ep.metadata.namespace.as_deref() == Some(ns) =>
            {
                for subset in ep.subsets.iter().flatten() {
                    let eps: Vec<_> = subset.ports.iter().flatten().collect();
                    for a in subset.addresses.iter().flatten() {
                        let pod = a.target_ref.as_ref().and_then(|t| t.name.as_deref());
                        for p in &eps {
                            let (Some(service_port), Some(port)) = (
                                port_for(p.name.as_deref(), eps.len() == 1),
                                port_u16(p.port),
                            ) else {
                                continue;
                            };
                            out.push(Instance {
                                endpoint: Endpoint {
                                    address: a.ip.clone(),
                                    port,
                                    locality: None,
                                    labels: BTreeMap::new(),
                                },
                                service_port,
                                labels: labels_of(pod),
                            });
                        }
                    }
                }
            }
            Object::EndpointSlice(es)
                if es.metadata.namespace.as_deref() == Some(ns)
                    && es
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .map(String::as_str)
                        == Some(name) =>
            {
                let eps: Vec<_> = es.ports.iter().flatten().collect();
                for e in &es.endpoints {
                    if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    let pod = e.target_ref.as_ref().and_then(|t| t.name.as_deref());
                    for a in &e.addresses {
                        for p in &eps {
                            let (Some(service_port), Some(port)) = (
                                port_for(p.name.as_deref(), eps.len() == 1),
                                p.port.and_then(port_u16),
                            ) else {
                                continue;
                            };
                            out.push(Instance {
                                endpoint: Endpoint {
                                    address: a.clone(),
                                    port,
                                    locality: None,
                                    labels: BTreeMap::new(),
                                },
                                service_port,
                                labels: labels_of(pod),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn from_service_entry(
    se: &meshwork_api::generated::networking::ServiceEntrySpec,
    ns: &str,
    workloads: &[Workload],
) -> Vec<Service> {
    let ports: Vec<ServicePort> = se
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone(),
            number: p.number.unwrap_or(0),
            target: p
                .target_port
                .and_then(|t| u16::try_from(t).ok())
                .map_or(TargetPort::Same, TargetPort::Number),
            protocol: Protocol::parse(p.protocol.as_deref().unwrap_or("")),
        })
        .collect();
    let resolution = se.resolution.unwrap_or_default();
    let mut members: Vec<Workload> = se
        .endpoints
        .iter()
        .enumerate()
        .filter_map(|(i, e)| workload_from_entry(e, ns, format!("serviceentry-endpoint/{i}")))
        .collect();
    if let Some(sel) = &se.workload_selector {
        members.extend(
            workloads
                .iter()
                .filter(|w| w.namespace == ns && selects(&sel.labels, &w.labels))
                .cloned(),
        );
    }
    se.hosts
        .iter()
        .map(|host| {
            let mut instances = Vec::new();
            for p in &ports {
                let default_port = match p.target {
                    TargetPort::Number(n) => n,
                    _ => u16::try_from(p.number).unwrap_or(0),
                };
                for w in &members {
                    let port = w.named_ports.get(&p.name).copied().unwrap_or(default_port);
                    instances.push(w.instance(port, p.number));
                }
                let dns = matches!(
                    resolution,
                    ServiceEntryResolution::Dns | ServiceEntryResolution::DnsRoundRobin
                );
                if members.is_empty() && dns && !host.contains('*') {
                    instances.push(Instance {
                        endpoint: Endpoint {
                            address: host.clone(),
                            port: default_port,
                            locality: None,
                            labels: BTreeMap::new(),
                        },
                        service_port: p.number,
                        labels: BTreeMap::new(),
                    });
                }
            }
            dedup(&mut instances);
            Service {
                host: host.clone(),
                namespace: ns.to_string(),
                ports: ports.clone(),
                instances,
                export_to: se.export_to.clone(),
                addresses: se.addresses.clone(),
            }
        })
        .collect()
}

fn dedup(instances: &mut Vec<Instance>) {
    let mut seen = BTreeSet::new();
    instances.retain(|i| seen.insert((i.service_port, i.endpoint.clone())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_without_addresses_get_stable_distinct_ones_in_240_240() {
        let set = |hosts: &[&str]| hosts.iter().map(|h| h.to_string()).collect::<BTreeSet<_>>();
        let some = allocate(&set(&["api.example.com", "db.example.com"]));
        let more = allocate(&set(&[
            "api.example.com",
            "db.example.com",
            "new.example.com",
        ]));
        for (host, address) in &some {
            assert!(address.starts_with("240.240."), "{address}");
            assert!(
                more.contains(&(host.clone(), address.clone())),
                "{host} keeps {address}"
            );
        }
        let addresses: BTreeSet<&String> = more.iter().map(|(_, a)| a).collect();
        assert_eq!(addresses.len(), 3, "distinct: {more:?}");
        // Every host of a full range still gets one of its own.
        let many: BTreeSet<String> = (0..5000).map(|i| format!("h{i}.test")).collect();
        let given: BTreeSet<String> = allocate(&many).into_iter().map(|(_, a)| a).collect();
        assert_eq!(given.len(), 5000);
    }
    use meshwork_api::load::{LoadOptions, load_str};
    use std::path::Path;

    fn registry(yaml: &str) -> Registry {
        let out = load_str(Path::new("t.yaml"), yaml, &LoadOptions::default());
        assert!(!out.has_errors(), "{:#?}", out.diagnostics);
        let objects: Vec<Object> = out.config.objects.into_iter().map(|o| o.object).collect();
        Registry::build(&objects)
    }

    #[test]
    fn protocol_selection_follows_istio() {
        assert_eq!(Protocol::select(None, "http-web"), Protocol::Http);
        assert_eq!(Protocol::select(None, "grpc"), Protocol::Grpc);
        assert_eq!(Protocol::select(None, "http2-x"), Protocol::Http2);
        assert_eq!(Protocol::select(None, "tcp-postgres"), Protocol::Tcp);
        assert_eq!(Protocol::select(Some("https"), "web"), Protocol::Https);
        assert_eq!(Protocol::select(None, "web"), Protocol::Unknown);
    }

    #[test]
    fn short_names_resolve_in_the_namespace() {
        assert_eq!(
            resolve_host("reviews", "prod"),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("reviews.prod.svc.cluster.local", "x"),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(resolve_host("api.example.com", "x"), "api.example.com");
    }

    #[test]
    fn services_get_instances_from_every_source() {
        let r = registry(
            r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9090, targetPort: grpc-port}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: shop, labels: {app: api, version: v1}}
spec:
  containers:
  - name: app
    ports: [{name: grpc-port, containerPort: 19090}, {name: http, containerPort: 7777}]
status: {podIP: 10.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: api-vm, namespace: shop}
spec:
  address: 127.0.0.1
  labels: {app: api, version: v2}
  ports: {http: 18080}
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy, namespace: shop}
subsets:
- addresses: [{ip: 10.1.0.1}]
  ports: [{name: http, port: 9000}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: v1
kind: Service
metadata: {name: sliced, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sliced-abc, namespace: shop, labels: {kubernetes.io/service-name: sliced}}
addressType: IPv4
ports: [{name: http, port: 7070}]
endpoints:
- addresses: [10.2.0.1]
  conditions: {ready: true}
- addresses: [10.2.0.2]
  conditions: {ready: false}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm, namespace: shop}
spec:
  hosts: [vm.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: api, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: shop}
spec:
  hosts: [passthrough.example.com]
  addresses: [10.9.0.0/16]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
"#,
        );
        let api = r.get("api.shop.svc.cluster.local").unwrap();
        let eps: Vec<(u32, String, u16)> = api
            .instances
            .iter()
            .map(|i| (i.service_port, i.endpoint.address.clone(), i.endpoint.port))
            .collect();
        assert_eq!(
            eps,
            vec![
                (80, "10.0.0.1".into(), 8080),
                (9090, "10.0.0.1".into(), 19090),
                (80, "127.0.0.1".into(), 18080),
            ]
        );
        assert_eq!(api.port(9090).unwrap().protocol, Protocol::Grpc);
        let legacy = r.get("legacy.shop.svc.cluster.local").unwrap();
        assert_eq!(
            legacy.instances[0].endpoint,
            Endpoint {
                address: "10.1.0.1".into(),
                port: 9000,
                ..Default::default()
            }
        );
        let ext = r.get("api.example.com").unwrap();
        let sliced = r.get("sliced.shop.svc.cluster.local").unwrap();
        assert_eq!(
            sliced
                .instances
                .iter()
                .map(|i| (i.endpoint.address.as_str(), i.endpoint.port))
                .collect::<Vec<_>>(),
            [("10.2.0.1", 7070)],
            "ready EndpointSlice endpoints only"
        );
        let selected = r.get("vm.example.com").unwrap();
        assert_eq!(
            selected.instances[0].endpoint,
            Endpoint {
                address: "127.0.0.1".into(),
                port: 18080,
                ..Default::default()
            }
        );
        assert!(
            r.get("passthrough.example.com")
                .unwrap()
                .instances
                .is_empty(),
            "resolution NONE has no endpoints"
        );
        assert_eq!(
            ext.instances[0].endpoint,
            Endpoint {
                address: "api.example.com".into(),
                port: 443,
                ..Default::default()
            }
        );
    }
}
