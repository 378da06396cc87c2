//! Sidecar proxies without traffic capture, as Istio's Sidecar resource defines them for
//! VMs (`captureMode: NONE`): `ingress` listeners hand requests to the app at
//! `defaultEndpoint`; `egress` listeners route the app's outbound calls by the mesh's
//! VirtualServices and DestinationRules of the hosts the listener imports. What a sidecar
//! sees is scoped by its egress `hosts` and by the `exportTo` of Services,
//! VirtualServices and DestinationRules.

use std::collections::BTreeMap;

use meshwork_api::generated::networking::{HttpRoute, IstioEgressListener, IstioIngressListener};
use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::{Object, Sidecar, VirtualService};
use meshwork_api::validate::common::hosts_match;

use meshwork_resources::cluster::{Cluster, ConnectionSettings, UpstreamProtocol};
use meshwork_resources::listener::{L4Route, Listener, ServerChain, ServerProtocol};
use meshwork_resources::route::{
    RetryPolicy, Route, RouteAction, RouteTable, VirtualHost, WeightedCluster,
};
use meshwork_resources::{Endpoint, EndpointSet, Node, ProxyConfig, Role};

use crate::clusters::{ClusterContext, build_clusters};
use crate::peer_authentication::MtlsMode;
use crate::registry::{DOMAIN_SUFFIX, Protocol, Registry, Service, resolve_host};
use crate::routes::{ClusterKey, RouteContext, cluster_name, compile_route, default_retries};

mod capture;
pub use capture::{INBOUND_PASSTHROUGH, PASSTHROUGH};

/// The Sidecar resource that configures a workload, as Istio picks it: one in the
/// workload's namespace whose `workloadSelector` matches its labels, else the one in its
/// namespace without a selector, else the one in the root namespace without a selector.
pub fn sidecar_for<'a>(
    objects: &'a [Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a Sidecar> {
    let mut sidecars: Vec<&Sidecar> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Sidecar(s) => Some(s),
            _ => None,
        })
        .collect();
    crate::oldest_first(&mut sidecars, |s| &s.metadata);
    let ns_of = |s: &Sidecar| s.metadata.namespace.clone().unwrap_or_default();
    let selected = |s: &&Sidecar| {
        s.spec.workload_selector.as_ref().is_some_and(|w| {
            !w.labels.is_empty() && w.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
    };
    let unselected = |s: &&Sidecar| {
        s.spec
            .workload_selector
            .as_ref()
            .is_none_or(|w| w.labels.is_empty())
    };
    let in_ns = |ns: &str| {
        let ns = ns.to_string();
        sidecars
            .iter()
            .copied()
            .filter(move |s| ns_of(s) == ns)
            .collect::<Vec<_>>()
    };
    let local = in_ns(namespace);
    local
        .iter()
        .copied()
        .find(selected)
        .or_else(|| local.iter().copied().find(unselected))
        .or_else(|| {
            in_ns(&mesh.root_namespace)
                .into_iter()
                .find(|s| unselected(s))
        })
}

/// Whether an `exportTo` list (empty: the mesh default) makes a resource of namespace
/// `owner` visible in namespace `viewer`.
pub fn exported(export_to: &[String], default: &[String], owner: &str, viewer: &str) -> bool {
    let list = if export_to.is_empty() {
        default
    } else {
        export_to
    };
    list.iter().any(|e| match e.as_str() {
        "*" => true,
        "." => owner == viewer,
        "~" => false,
        ns => ns == viewer,
    })
}

/// Whether an egress listener's `hosts` entry (`ns/dnsName`) imports `host` of namespace
/// `owner` into a proxy of namespace `viewer`.
fn imports(entry: &str, host: &str, owner: &str, viewer: &str) -> bool {
    let (ns, name) = entry.split_once('/').unwrap_or(("*", entry));
    let ns_ok = match ns {
        "*" => true,
        "." => owner == viewer,
        "~" => false,
        other => other == owner,
    };
    ns_ok && hosts_match(name, host)
}

/// What the sidecar of `node` can reach: the services its egress hosts import that are
/// exported to its namespace.
fn visible<'a>(
    egress: &IstioEgressListener,
    node: &Node,
    registry: &'a Registry,
    mesh: &MeshConfig,
) -> Vec<&'a Service> {
    registry
        .services
        .values()
        .filter(|s| {
            egress
                .hosts
                .iter()
                .any(|h| imports(h, &s.host, &s.namespace, &node.namespace))
        })
        .filter(|s| {
            exported(
                &s.export_to,
                &mesh.default_service_export_to,
                &s.namespace,
                &node.namespace,
            )
        })
        .collect()
}

/// The names an app may use for `host` from namespace `viewer`: the FQDN, `name.ns.svc`,
/// `name.ns`, and the short name from its own namespace. Ports are not part of domains:
/// the proxy matches the Host header without its port.
pub fn domains(host: &str, viewer: &str) -> Vec<String> {
    let mut out = vec![host.to_string()];
    if let Some(prefix) = host.strip_suffix(&format!(".svc.{DOMAIN_SUFFIX}")) {
        out.push(format!("{prefix}.svc"));
        out.push(prefix.to_string());
        if let Some((name, ns)) = prefix.split_once('.')
            && ns == viewer
        {
            out.push(name.to_string());
        }
    }
    out
}

/// The mesh VirtualServices a proxy in `viewer` sees, by host: for each host the oldest
/// one bound to the mesh (no `gateways`, or `mesh` among them) and exported there.
fn mesh_virtual_services<'a>(
    objects: &'a [Object],
    mesh: &MeshConfig,
    viewer: &str,
) -> BTreeMap<String, &'a VirtualService> {
    let mut out = BTreeMap::new();
    for vs in crate::gateway::virtual_services(objects) {
        let ns = vs.metadata.namespace.as_deref().unwrap_or_default();
        let bound = vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
        if !bound
            || !exported(
                &vs.spec.export_to,
                &mesh.default_virtual_service_export_to,
                ns,
                viewer,
            )
        {
            continue;
        }
        for h in &vs.spec.hosts {
            out.entry(resolve_host(h, ns)).or_insert(vs);
        }
    }
    out
}

/// An HTTP route with only the matches that apply to this proxy (`sourceLabels`,
/// `sourceNamespace`); `None` when it had matches and none applies.
fn for_source(r: &HttpRoute, node: &Node) -> Option<HttpRoute> {
    let mut r = r.clone();
    if r.match_.is_empty() {
        return Some(r);
    }
    r.match_.retain(|m| {
        m.source_labels
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
            && m.source_namespace
                .as_deref()
                .is_none_or(|ns| ns == node.namespace)
    });
    (!r.match_.is_empty()).then_some(r)
}

/// All traffic to one cluster.
fn whole(cluster: String) -> WeightedCluster {
    WeightedCluster {
        cluster,
        weight: 100,
        request_headers: Default::default(),
        response_headers: Default::default(),
    }
}

/// A catch-all route forwarding to one cluster.
fn forward_route(destination: WeightedCluster, retries: Option<RetryPolicy>) -> Route {
    Route {
        name: "default".into(),
        matches: Vec::new(),
        action: RouteAction::Forward(vec![destination]),
        request_headers: Default::default(),
        response_headers: Default::default(),
        rewrite: None,
        timeout_ms: None,
        retries,
        fault: None,
        mirrors: Vec::new(),
        cors: None,
    }
}

/// A server without TLS on a sidecar listener.
fn plain_server(source: String, protocol: ServerProtocol) -> ServerChain {
    ServerChain {
        source,
        hosts: Vec::new(),
        protocol,
        tls: None,
        https_redirect: false,
        route_table: String::new(),
        tcp_routes: Vec::new(),
        postgres: false,
    }
}

/// The route to a service that no VirtualService routes: its port, every endpoint.
fn default_route(host: &str, port: u32, keys: &mut Vec<ClusterKey>) -> Route {
    keys.push(ClusterKey {
        host: host.to_string(),
        port,
        subset: None,
    });
    forward_route(
        whole(cluster_name(host, port, None)),
        Some(default_retries()),
    )
}

/// What one sidecar runs.
struct Build<'a> {
    node: &'a Node,
    objects: &'a [Object],
    registry: &'a Registry,
    mesh: &'a MeshConfig,
    warnings: &'a mut Vec<String>,
    config: ProxyConfig,
    cluster_keys: Vec<ClusterKey>,
    /// The mesh VirtualService of each host.
    routing: BTreeMap<String, &'a VirtualService>,
}

/// The sidecar's own address: its first IP.
fn node_ip(node: &Node) -> String {
    node.ips
        .first()
        .cloned()
        .unwrap_or_else(|| "0.0.0.0".into())
}

fn server_protocol(protocol: Option<&str>) -> ServerProtocol {
    match Protocol::parse(protocol.unwrap_or("TCP")) {
        Protocol::Http | Protocol::Http2 | Protocol::Grpc => ServerProtocol::Http,
        _ => ServerProtocol::Tcp,
    }
}

impl Build<'_> {
    fn listener(&mut self, address: String, port: u16, servers: Vec<ServerChain>, outbound: bool) {
        self.add_listener(address, port, servers, outbound, true);
    }

    /// A listener; one that does not bind (`bind_to_port` false) takes the connections
    /// the capture listeners hand it.
    fn add_listener(
        &mut self,
        address: String,
        port: u16,
        servers: Vec<ServerChain>,
        outbound: bool,
        bind_to_port: bool,
    ) {
        let name = format!("{address}_{port}");
        if self.config.listeners.contains_key(&name) {
            self.warnings.push(format!(
                "sidecar {}: two listeners on {address}:{port}; the second is left out",
                self.node.id
            ));
            return;
        }
        self.config.listeners.insert(
            name.clone(),
            Listener {
                name,
                address,
                bind_port: port,
                gateway_port: u32::from(port),
                servers,
                outbound,
                bind_to_port,
                capture: None,
            },
        );
    }

    /// An `ingress` listener: `bind:port` (the workload's address by default) to the app
    /// at `defaultEndpoint`.
    fn ingress(&mut self, source: &str, ingress: &IstioIngressListener) {
        let Some(port) = ingress
            .port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok())
        else {
            self.warnings.push(format!(
                "Sidecar {source}: an ingress listener has no port; it is left out"
            ));
            return;
        };
        let Some(endpoint) = ingress
            .default_endpoint
            .as_deref()
            .filter(|e| !e.is_empty())
        else {
            self.warnings.push(format!(
                "Sidecar {source}: ingress port {port} has no defaultEndpoint; without traffic capture it is left out"
            ));
            return;
        };
        let app = endpoint
            .rsplit_once(':')
            .and_then(|(ip, p)| Some((ip, p.parse::<u16>().ok()?)))
            .filter(|(ip, _)| *ip == "127.0.0.1" || *ip == "0.0.0.0");
        let Some((ip, app_port)) = app else {
            self.warnings.push(format!(
                "Sidecar {source}: ingress port {port}: defaultEndpoint {endpoint:?} is not 127.0.0.1:PORT or 0.0.0.0:PORT; it is left out"
            ));
            return;
        };
        let app_address = if ip == "0.0.0.0" {
            node_ip(self.node)
        } else {
            ip.to_string()
        };
        let protocol = server_protocol(ingress.port.as_ref().and_then(|p| p.protocol.as_deref()));
        let bind = ingress
            .bind
            .clone()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| node_ip(self.node));
        self.inbound_listener(
            &format!("{source}#ingress[{port}]"),
            port,
            protocol,
            Endpoint {
                address: app_address,
                port: app_port,
                ..Endpoint::default()
            },
            bind,
            true,
        );
    }

    /// An inbound listener on `bind:port` handing what comes in to the app at `app`:
    /// its cluster `inbound|PORT||`, and its servers as the port's PeerAuthentication
    /// mode asks (mTLS only, mTLS and plaintext told apart by the first bytes, or
    /// plaintext only).
    fn inbound_listener(
        &mut self,
        source: &str,
        port: u16,
        protocol: ServerProtocol,
        app: Endpoint,
        bind: String,
        bind_to_port: bool,
    ) {
        let cluster = format!("inbound|{port}||");
        let mut inbound = inbound_cluster(&cluster, port, self.mesh);
        // The service this port serves, for the destination's telemetry labels.
        inbound.host = self.served_service(port).unwrap_or_default();
        self.config.clusters.insert(cluster.clone(), inbound);
        self.config.endpoints.insert(
            cluster.clone(),
            EndpointSet {
                cluster: cluster.clone(),
                endpoints: vec![app],
            },
        );
        let destination = whole(cluster.clone());
        let mut server = plain_server(source.to_string(), protocol);
        if protocol == ServerProtocol::Http {
            let table = format!("inbound|{port}");
            self.config.route_tables.insert(
                table.clone(),
                RouteTable {
                    virtual_hosts: vec![VirtualHost {
                        name: format!("inbound|http|{port}"),
                        domains: vec!["*".into()],
                        routes: vec![forward_route(destination, None)],
                    }],
                },
            );
            server.route_table = table;
        } else {
            server.tcp_routes.push(L4Route {
                name: cluster.clone(),
                sni_hosts: Vec::new(),
                destination_subnets: Vec::new(),
                destinations: vec![destination],
            });
        }
        let servers = self.peer_authenticated(server, u32::from(port));
        self.add_listener(bind, port, servers, false, bind_to_port);
    }

    /// The servers of an inbound port as PeerAuthentication asks: mTLS only, mTLS and
    /// plaintext (told apart by the first bytes), or plaintext only.
    fn peer_authenticated(&self, mut server: ServerChain, port: u32) -> Vec<ServerChain> {
        let mode = crate::peer_authentication::mode_for(
            self.objects,
            self.mesh,
            &self.node.namespace,
            &self.node.labels,
            port,
        );
        server.hosts = vec!["*".into()];
        let mut mtls = server.clone();
        mtls.source = format!("{}#mtls", server.source);
        mtls.protocol = match server.protocol {
            ServerProtocol::Http => ServerProtocol::Https,
            _ => ServerProtocol::Tls,
        };
        mtls.tls = Some(crate::mtls::server(server.protocol == ServerProtocol::Http));
        match mode {
            MtlsMode::Strict => vec![mtls],
            MtlsMode::Permissive => vec![mtls, server],
            MtlsMode::Disable => vec![server],
        }
    }

    /// The first service (by host) with this workload behind it on `port`.
    fn served_service(&self, port: u16) -> Option<String> {
        let ip = node_ip(self.node);
        self.registry
            .services
            .values()
            .find(|s| {
                s.namespace == self.node.namespace
                    && s.instances
                        .iter()
                        .any(|i| i.endpoint.address == ip && i.endpoint.port == port)
            })
            .map(|s| s.host.clone())
    }

    /// An `egress` listener: `bind:port` (127.0.0.1 by default) routing to the services
    /// it imports on that port.
    fn egress(&mut self, source: &str, egress: &IstioEgressListener) {
        let Some(port) = egress.port.as_ref().and_then(|p| p.number) else {
            self.warnings.push(format!(
                "Sidecar {source}: an egress listener without a port needs traffic capture; it is left out"
            ));
            return;
        };
        let Ok(bind_port) = u16::try_from(port) else {
            return;
        };
        let services: Vec<&Service> = visible(egress, self.node, self.registry, self.mesh)
            .into_iter()
            .filter(|s| s.port(port).is_some())
            .collect();
        let protocol = match egress.port.as_ref().and_then(|p| p.protocol.as_deref()) {
            Some(p) => server_protocol(Some(p)),
            None => match services
                .first()
                .and_then(|s| s.port(port))
                .map(|p| p.protocol)
            {
                Some(Protocol::Tcp | Protocol::Tls) => ServerProtocol::Tcp,
                _ => ServerProtocol::Http,
            },
        };
        let mut server = plain_server(format!("{source}#egress[{port}]"), protocol);
        if protocol == ServerProtocol::Http {
            let table_name = port.to_string();
            let mut table = RouteTable::default();
            for s in &services {
                let routes = self.http_routes(&s.host, port);
                if routes.is_empty() {
                    continue;
                }
                table.virtual_hosts.push(VirtualHost {
                    name: format!("{}:{port}", s.host),
                    domains: domains(&s.host, &self.node.namespace),
                    routes,
                });
            }
            self.config.route_tables.insert(table_name.clone(), table);
            server.route_table = table_name;
        } else {
            if services.len() > 1 {
                self.warnings.push(format!(
                    "Sidecar {source}: TCP egress port {port} imports {} services; only {} is served",
                    services.len(),
                    services[0].host
                ));
            }
            if let Some(s) = services.first() {
                server.tcp_routes = self.tcp_routes(&s.host, port);
            }
        }
        let bind = egress
            .bind
            .clone()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        if bind
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_loopback())
        {
            self.warnings.push(format!(
                "Sidecar {source}: egress port {port} binds {bind}, which is not a loopback address: whatever reaches it calls out with the workload's identity"
            ));
        }
        self.listener(bind, bind_port, vec![server], true);
    }

    fn http_routes(&mut self, host: &str, port: u32) -> Vec<Route> {
        let Some(vs) = self.routing.get(host).copied() else {
            return vec![default_route(host, port, &mut self.cluster_keys)];
        };
        let vs_ns = vs.metadata.namespace.as_deref().unwrap_or_default();
        let vs_name = vs.metadata.name.as_deref().unwrap_or_default();
        let mesh_names = ["mesh".to_string()];
        let ctx = RouteContext {
            namespace: vs_ns,
            gateway_names: &mesh_names,
            port,
            registry: self.registry,
        };
        let mut routes = Vec::new();
        for (i, r) in vs.spec.http.iter().enumerate() {
            let Some(r) = for_source(r, self.node) else {
                continue;
            };
            let name = r
                .name
                .clone()
                .unwrap_or_else(|| format!("{vs_ns}/{vs_name}#{i}"));
            routes.extend(compile_route(
                &r,
                name,
                &ctx,
                &mut self.cluster_keys,
                self.warnings,
            ));
        }
        routes
    }

    fn tcp_routes(&mut self, host: &str, port: u32) -> Vec<L4Route> {
        let default = |keys: &mut Vec<ClusterKey>| {
            keys.push(ClusterKey {
                host: host.to_string(),
                port,
                subset: None,
            });
            vec![L4Route {
                name: "default".into(),
                sni_hosts: Vec::new(),
                destination_subnets: Vec::new(),
                destinations: vec![whole(cluster_name(host, port, None))],
            }]
        };
        let Some(vs) = self.routing.get(host).copied() else {
            return default(&mut self.cluster_keys);
        };
        let vs_ns = vs.metadata.namespace.as_deref().unwrap_or_default();
        let vs_name = vs.metadata.name.as_deref().unwrap_or_default();
        let mut out = Vec::new();
        for (i, r) in vs.spec.tcp.iter().enumerate() {
            let applies = r.match_.is_empty()
                || r.match_.iter().any(|m| {
                    m.port.is_none_or(|p| p == 0 || p == port)
                        && m.source_labels
                            .iter()
                            .all(|(k, v)| self.node.labels.get(k) == Some(v))
                        && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
                });
            if !applies {
                continue;
            }
            let single = r.route.len() == 1;
            let destinations = r
                .route
                .iter()
                .filter_map(|d| {
                    let key = crate::routes::resolve_destination(
                        d.destination.as_ref()?,
                        vs_ns,
                        self.registry,
                        self.warnings,
                    );
                    let cluster = key.name();
                    self.cluster_keys.push(key);
                    Some(WeightedCluster {
                        cluster,
                        weight: match d.weight {
                            Some(w) => u32::try_from(w).unwrap_or(0),
                            None if single => 100,
                            None => 0,
                        },
                        request_headers: Default::default(),
                        response_headers: Default::default(),
                    })
                })
                .collect();
            out.push(L4Route {
                name: format!("{vs_ns}/{vs_name}#tcp[{i}]"),
                sni_hosts: Vec::new(),
                destination_subnets: Vec::new(),
                destinations,
            });
        }
        if out.is_empty() {
            return default(&mut self.cluster_keys);
        }
        out
    }
}

/// The cluster from an ingress listener to the app: plain, no retries, Istio's defaults.
fn inbound_cluster(name: &str, port: u16, mesh: &MeshConfig) -> Cluster {
    let connect_timeout_ms = meshwork_api::duration::parse_duration(&mesh.connect_timeout)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(10_000);
    Cluster {
        name: name.to_string(),
        host: String::new(),
        port: u32::from(port),
        subset: None,
        protocol: UpstreamProtocol::Http1,
        connect_timeout_ms,
        idle_timeout_ms: 3_600_000,
        policy: crate::policy::compile(&Default::default(), None),
        connections: ConnectionSettings {
            tcp_keepalive: None,
            http_idle_timeout_ms: 3_600_000,
            use_client_protocol: true,
            max_requests_per_connection: 0,
            source_address: None,
        },
        tls: None,
        original_destination: None,
    }
}

/// Which part of a sidecar's config to compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// What every sidecar of one namespace and set of labels shares: egress listeners,
    /// their routes and clusters, authorization and the access log.
    Class,
    /// What depends on the sidecar's own address: its identity and ingress listeners.
    Own,
}

/// Compiles one part of the sidecar of `node` from the Sidecar resource that selects it.
/// For [`Part::Class`] only the node's namespace and labels are read.
pub fn compile_sidecar_part(
    node: &Node,
    part: Part,
    objects: &[Object],
    registry: &Registry,
    mesh: &MeshConfig,
    warnings: &mut Vec<String>,
) -> ProxyConfig {
    let mut build = Build {
        node,
        objects,
        registry,
        mesh,
        warnings,
        config: ProxyConfig {
            node: Node {
                role: Role::Sidecar,
                ..node.clone()
            },
            ..ProxyConfig::default()
        },
        cluster_keys: Vec::new(),
        routing: match part {
            Part::Class => mesh_virtual_services(objects, mesh, &node.namespace),
            Part::Own => BTreeMap::new(),
        },
    };
    let sidecar = sidecar_for(objects, mesh, &node.namespace, &node.labels);
    let source = sidecar.map(|s| {
        format!(
            "{}/{}",
            s.metadata.namespace.as_deref().unwrap_or_default(),
            s.metadata.name.as_deref().unwrap_or_default()
        )
    });
    let intercepted = node.interception.is_some();
    match (sidecar, part) {
        (Some(sidecar), Part::Own) => {
            let source = source.as_deref().unwrap_or_default();
            for ingress in &sidecar.spec.ingress {
                build.ingress(source, ingress);
            }
            if intercepted && sidecar.spec.ingress.is_empty() {
                build.capture_inbound();
            }
        }
        (Some(sidecar), Part::Class) => {
            let source = source.as_deref().unwrap_or_default();
            let policy = sidecar
                .spec
                .outbound_traffic_policy
                .as_ref()
                .and_then(|p| p.mode);
            for egress in &sidecar.spec.egress {
                let captured = egress.port.as_ref().and_then(|p| p.number).is_none();
                if intercepted && captured {
                    build.capture_outbound(source, &egress.hosts, policy);
                } else {
                    build.egress(source, egress);
                }
            }
            if intercepted && sidecar.spec.egress.is_empty() {
                build.capture_outbound(source, &["*/*".to_string()], policy);
            }
        }
        (None, Part::Own) if intercepted => build.capture_inbound(),
        (None, Part::Class) if intercepted => {
            build.capture_outbound("capture", &["*/*".to_string()], None)
        }
        (None, Part::Own) => build.warnings.push(format!(
            "sidecar {}: no Sidecar resource selects it; without traffic capture it has no listeners (give it ingress and egress listeners with captureMode NONE)",
            node.id
        )),
        (None, Part::Class) => {}
    }
    if let (Part::Own, Some(ports)) = (part, node.interception) {
        build.capture_listeners(ports);
    }
    let Build {
        mut config,
        cluster_keys,
        warnings,
        ..
    } = build;
    if part == Part::Own {
        return config;
    }
    let ctx = ClusterContext {
        objects,
        registry,
        mesh,
        proxy_namespace: &node.namespace,
        mesh_mtls: true,
    };
    let clusters = build_clusters(&cluster_keys, &ctx, warnings);
    config.clusters.extend(clusters.clusters);
    config.endpoints.extend(clusters.endpoints);
    config.secrets.extend(clusters.secrets);
    config.authorization =
        crate::authorization::for_workload(objects, mesh, &node.namespace, &node.labels, warnings);
    config.http = crate::http_options(mesh, false);
    config.ext_authz = crate::authorization::ext_authz_for_workload(
        objects,
        mesh,
        &node.namespace,
        &node.labels,
        warnings,
    );
    config.request_authentication = crate::request_authentication::for_workload(
        objects,
        mesh,
        &node.namespace,
        &node.labels,
        warnings,
    );
    config.access_logs =
        crate::telemetry::access_logs(objects, mesh, &node.namespace, &node.labels, warnings);
    config.metrics =
        crate::telemetry::metrics(objects, mesh, &node.namespace, &node.labels, warnings);
    config.tracing =
        crate::telemetry::tracing(objects, mesh, &node.namespace, &node.labels, warnings);
    config
}
