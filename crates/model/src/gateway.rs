//! Gateway proxies: one per distinct Gateway `selector`. Each gets listeners for its
//! servers' ports (bound on the Service's targetPort), servers with their TLS, route tables
//! from the VirtualServices bound to it, and the clusters those routes use.

use std::collections::{BTreeMap, BTreeSet};

use meshwork_api::generated::networking::{Server, ServerTlsMode, TlsProtocol};
use meshwork_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::{Gateway, Object, VirtualService};
use meshwork_api::validate::common::hosts_match;

use meshwork_resources::listener::{
    CipherSuite, L4Route, Listener, ServerChain, ServerProtocol, TlsContext, TlsMode, TlsVersion,
};
use meshwork_resources::route::{RouteTable, VirtualHost, WeightedCluster};
use meshwork_resources::{Node, ProxyConfig, Role, Secret};

use crate::clusters::{ClusterContext, build_clusters};
use crate::registry::{Registry, resolve_host};
use crate::routes::{RouteContext, compile_route};

/// The result of compilation: what each gateway runs, and what could not be honoured.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// One config per gateway proxy.
    pub gateways: Vec<ProxyConfig>,
    /// Problems that leave part of the config out (a missing Secret, an unknown host).
    pub warnings: Vec<String>,
}

/// A name for the proxy serving `selector`: `istio=ingressgateway`.
pub fn selector_name(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Compiles every gateway proxy the config asks for.
pub fn compile_gateways(objects: &[Object], mesh: &MeshConfig) -> Compiled {
    let registry = Registry::build(objects);
    let mut by_selector: BTreeMap<BTreeMap<String, String>, Vec<&Gateway>> = BTreeMap::new();
    for obj in objects {
        if let Object::Gateway(g) = obj {
            by_selector
                .entry(g.spec.selector.clone())
                .or_default()
                .push(g);
        }
    }
    let mut out = Compiled::default();
    for (selector, gateways) in by_selector {
        let namespace = gateways
            .first()
            .map(|g| meta_ns(g).to_string())
            .unwrap_or_default();
        let gw = compile_one(
            &selector,
            &namespace,
            false,
            &gateways,
            objects,
            &registry,
            mesh,
            &mut out.warnings,
        );
        out.gateways.push(gw);
    }
    out
}

/// Compiles the gateway proxy `node`: every Gateway whose `selector` its labels match.
/// The node's own identity (id, namespace, labels) is kept.
pub fn compile_gateway_node(
    node: &Node,
    objects: &[Object],
    registry: &Registry,
    mesh: &MeshConfig,
    warnings: &mut Vec<String>,
) -> ProxyConfig {
    let gateways: Vec<&Gateway> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Gateway(g) => Some(g),
            _ => None,
        })
        .filter(|g| {
            !g.spec.selector.is_empty()
                && g.spec
                    .selector
                    .iter()
                    .all(|(k, v)| node.labels.get(k) == Some(v))
        })
        .collect();
    let mut config = compile_one(
        &node.labels,
        &node.namespace,
        true,
        &gateways,
        objects,
        registry,
        mesh,
        warnings,
    );
    config.node = Node {
        role: Role::Gateway,
        ..node.clone()
    };
    config
}

fn meta_ns(g: &Gateway) -> &str {
    g.metadata.namespace.as_deref().unwrap_or_default()
}

fn meta_name(g: &Gateway) -> &str {
    g.metadata.name.as_deref().unwrap_or_default()
}

/// Port number -> (targetPort, appProtocol) of the Service that selects the gateway's pods.
fn port_map(
    selector: &BTreeMap<String, String>,
    objects: &[Object],
) -> BTreeMap<u32, (u16, Option<String>)> {
    let mut map = BTreeMap::new();
    for obj in objects {
        let Object::Service(svc) = obj else { continue };
        let Some(spec) = &svc.spec else { continue };
        let sel = spec.selector.clone().unwrap_or_default();
        if sel.is_empty() || !sel.iter().all(|(k, v)| selector.get(k) == Some(v)) {
            continue;
        }
        for p in spec.ports.iter().flatten() {
            let target = match &p.target_port {
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                _ => u16::try_from(p.port).ok(),
            };
            if let (Ok(port), Some(target)) = (u32::try_from(p.port), target) {
                map.entry(port).or_insert((target, p.app_protocol.clone()));
            }
        }
    }
    map
}

#[allow(clippy::too_many_arguments)]
fn compile_one(
    selector: &BTreeMap<String, String>,
    namespace: &str,
    mesh_mtls: bool,
    gateways: &[&Gateway],
    objects: &[Object],
    registry: &Registry,
    mesh: &MeshConfig,
    warnings: &mut Vec<String>,
) -> ProxyConfig {
    let ports = port_map(selector, objects);
    // VirtualServices apply where they are exported: to the gateway proxy's namespace.
    let visible: Vec<&VirtualService> = virtual_services(objects)
        .into_iter()
        .filter(|vs| {
            crate::sidecar::exported(
                &vs.spec.export_to,
                &mesh.default_virtual_service_export_to,
                vs.metadata.namespace.as_deref().unwrap_or_default(),
                namespace,
            )
        })
        .collect();
    let mut listeners: BTreeMap<u16, Listener> = BTreeMap::new();
    let mut route_tables = BTreeMap::new();
    let mut secrets: BTreeMap<String, Secret> = BTreeMap::new();
    let mut cluster_keys = Vec::new();
    for gw in gateways {
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let source = format!("{}/{}#{i}", meta_ns(gw), meta_name(gw));
            let Some(port) = server.port.as_ref() else {
                continue;
            };
            let number = port.number.unwrap_or(0);
            let Some(mut chain) =
                server_chain(gw, server, &source, number, objects, &mut secrets, warnings)
            else {
                continue;
            };
            let mapped = ports.get(&number);
            let bind_port = mapped
                .map(|(target, _)| *target)
                .or_else(|| u16::try_from(number).ok())
                .unwrap_or(0);
            chain.postgres = is_postgres(&port.name, mapped.and_then(|(_, app)| app.as_deref()));
            if chain.protocol != ServerProtocol::Http && chain.protocol != ServerProtocol::Https {
                chain.tcp_routes = l4_routes(
                    gw,
                    server,
                    chain.protocol,
                    number,
                    &visible,
                    registry,
                    &mut cluster_keys,
                );
                listeners
                    .entry(bind_port)
                    .or_insert_with(|| new_listener(bind_port, number))
                    .servers
                    .push(chain);
                continue;
            }
            let listener = listeners
                .entry(bind_port)
                .or_insert_with(|| new_listener(bind_port, number));
            let table = route_tables
                .entry(chain.route_table.clone())
                .or_insert_with(RouteTable::default);
            add_virtual_hosts(
                table,
                gw,
                server,
                number,
                &visible,
                registry,
                &mut cluster_keys,
                warnings,
            );
            listener.servers.push(chain);
        }
    }
    for table in route_tables.values_mut() {
        sort_virtual_hosts(table);
    }
    let ctx = ClusterContext {
        objects,
        registry,
        mesh,
        proxy_namespace: namespace,
        mesh_mtls,
    };
    let clusters = build_clusters(&cluster_keys, &ctx, warnings);
    secrets.extend(clusters.secrets);
    let authorization =
        crate::authorization::for_workload(objects, mesh, namespace, selector, warnings);
    let request_authentication =
        crate::request_authentication::for_workload(objects, mesh, namespace, selector, warnings);
    let access_logs = crate::telemetry::access_logs(objects, mesh, namespace, selector, warnings);
    let metrics = crate::telemetry::metrics(objects, mesh, namespace, selector, warnings);
    let tracing = crate::telemetry::tracing(objects, mesh, namespace, selector, warnings);
    ProxyConfig {
        node: Node {
            id: selector_name(selector),
            role: Role::Gateway,
            workload_name: gateway_service(selector, objects).unwrap_or_default(),
            namespace: namespace.to_string(),
            labels: selector.clone(),
            ..Node::default()
        },
        listeners: listeners
            .into_values()
            .map(|l| (l.name.clone(), l))
            .collect(),
        route_tables,
        clusters: clusters.clusters,
        endpoints: clusters.endpoints,
        secrets,
        access_logs,
        metrics,
        authorization,
        request_authentication,
        http: crate::http_options(mesh, true),
        ext_authz: crate::authorization::ext_authz_for_workload(
            objects, mesh, namespace, selector, warnings,
        ),
        names: None,
        tracing,
    }
}

/// The name of the Service that selects the gateway's pods (`istio-ingressgateway`): the
/// gateway's workload name, as its Deployment is usually named.
fn gateway_service(selector: &BTreeMap<String, String>, objects: &[Object]) -> Option<String> {
    objects.iter().find_map(|o| {
        let Object::Service(svc) = o else { return None };
        let sel = svc.spec.as_ref()?.selector.clone().unwrap_or_default();
        (!sel.is_empty() && sel.iter().all(|(k, v)| selector.get(k) == Some(v)))
            .then(|| svc.metadata.name.clone())
            .flatten()
    })
}

fn new_listener(bind_port: u16, gateway_port: u32) -> Listener {
    Listener {
        name: format!("0.0.0.0_{bind_port}"),
        address: "0.0.0.0".into(),
        bind_port,
        gateway_port,
        servers: Vec::new(),
        outbound: false,
        bind_to_port: true,
        capture: None,
    }
}

/// A PostgreSQL port, by Istio's naming (`tcp-postgres`, `postgres-*`) or appProtocol.
fn is_postgres(port_name: &str, app_protocol: Option<&str>) -> bool {
    let name = port_name.to_ascii_lowercase();
    let name = name.strip_prefix("tcp-").unwrap_or(&name);
    name == "postgres"
        || name.starts_with("postgres-")
        || name == "postgresql"
        || app_protocol.is_some_and(|a| a.eq_ignore_ascii_case("postgresql"))
}

/// TLS routes (passthrough: by SNI) or TCP routes (TCP and terminated TLS) of the
/// VirtualServices bound to this server.
fn l4_routes(
    gw: &Gateway,
    server: &Server,
    protocol: ServerProtocol,
    port: u32,
    visible: &[&VirtualService],
    registry: &Registry,
    cluster_keys: &mut Vec<crate::routes::ClusterKey>,
) -> Vec<L4Route> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for &vs in visible {
        let names = binds(vs, gw);
        if names.is_empty() {
            continue;
        }
        let vs_ns = vs.metadata.namespace.as_deref().unwrap_or_default();
        let vs_name = vs.metadata.name.as_deref().unwrap_or_default();
        let admitted = vs.spec.hosts.iter().any(|h| {
            admitted_domain(server, meta_ns(gw), vs_ns, &resolve_host(h, vs_ns)).is_some()
        });
        if !admitted {
            continue;
        }
        let applies = |gateways: &[String], match_port: Option<u32>| {
            (gateways.is_empty() || gateways.iter().any(|g| names.contains(g)))
                && match_port.is_none_or(|p| p == 0 || p == port)
        };
        let mut destinations =
            |route: &[meshwork_api::generated::networking::RouteDestination]| {
                let single = route.len() == 1;
                route
                    .iter()
                    .filter_map(|d| {
                        let key = crate::routes::resolve_destination(
                            d.destination.as_ref()?,
                            vs_ns,
                            registry,
                            &mut warnings,
                        );
                        let cluster = key.name();
                        cluster_keys.push(key);
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
                    .collect::<Vec<_>>()
            };
        if protocol == ServerProtocol::TlsPassthrough {
            for (i, r) in vs.spec.tls.iter().enumerate() {
                let matches: Vec<_> = r
                    .match_
                    .iter()
                    .filter(|m| applies(&m.gateways, m.port))
                    .collect();
                if matches.is_empty() {
                    continue;
                }
                out.push(L4Route {
                    name: format!("{vs_ns}/{vs_name}#tls[{i}]"),
                    sni_hosts: matches.iter().flat_map(|m| m.sni_hosts.clone()).collect(),
                    destination_subnets: matches
                        .iter()
                        .flat_map(|m| m.destination_subnets.clone())
                        .collect(),
                    destinations: destinations(&r.route),
                });
            }
        } else {
            for (i, r) in vs.spec.tcp.iter().enumerate() {
                let matches: Vec<_> = r
                    .match_
                    .iter()
                    .filter(|m| applies(&m.gateways, m.port))
                    .collect();
                if !r.match_.is_empty() && matches.is_empty() {
                    continue;
                }
                out.push(L4Route {
                    name: format!("{vs_ns}/{vs_name}#tcp[{i}]"),
                    sni_hosts: Vec::new(),
                    destination_subnets: matches
                        .iter()
                        .flat_map(|m| m.destination_subnets.clone())
                        .collect(),
                    destinations: destinations(&r.route),
                });
            }
        }
    }
    out
}

pub(crate) fn virtual_services(objects: &[Object]) -> Vec<&VirtualService> {
    let mut services: Vec<&VirtualService> = objects
        .iter()
        .filter_map(|o| match o {
            Object::VirtualService(v) => Some(v),
            _ => None,
        })
        .collect();
    // Istio merges VirtualServices for one host oldest first, then by name.
    crate::oldest_first(&mut services, |v| &v.metadata);
    services
}

fn server_chain(
    gw: &Gateway,
    server: &Server,
    source: &str,
    number: u32,
    objects: &[Object],
    secrets: &mut BTreeMap<String, Secret>,
    warnings: &mut Vec<String>,
) -> Option<ServerChain> {
    let port = server.port.as_ref()?;
    let proto = port.protocol.to_ascii_uppercase();
    let hosts: Vec<String> = server
        .hosts
        .iter()
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, d)| d).to_string())
        .collect();
    let https_redirect = server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true);
    let mode = server.tls.as_ref().map(|t| t.mode.unwrap_or_default());
    let mut terminate = |protocol| match tls_context(gw, server, objects, warnings) {
        Ok((ctx, used)) => {
            secrets.extend(used.into_iter().map(|s| (s.name.clone(), s)));
            Some((protocol, Some(ctx)))
        }
        Err(e) => {
            warnings.push(format!("Gateway {source}: {e}; the server is left out"));
            None
        }
    };
    let (protocol, tls) = match (proto.as_str(), mode) {
        ("HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB", _) => (ServerProtocol::Http, None),
        ("TCP" | "MONGO" | "REDIS" | "MYSQL", _) => (ServerProtocol::Tcp, None),
        ("HTTPS" | "TLS", Some(ServerTlsMode::Passthrough)) => {
            (ServerProtocol::TlsPassthrough, None)
        }
        (
            "HTTPS",
            Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual),
        ) => terminate(ServerProtocol::Https)?,
        (
            "TLS",
            Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual),
        ) => {
            // Raw TCP after termination: no HTTP protocol to offer by ALPN.
            let (protocol, mut tls) = terminate(ServerProtocol::Tls)?;
            if let Some(t) = tls.as_mut() {
                t.alpn.clear();
            }
            (protocol, tls)
        }
        (other, mode) => {
            warnings.push(format!(
                "Gateway {source}: protocol {other} with TLS mode {} is not served; the server is left out",
                mode.map_or("none", |m| m.as_str())
            ));
            return None;
        }
    };
    let route_table = match protocol {
        ServerProtocol::Http => format!("http.{number}"),
        ServerProtocol::Tcp | ServerProtocol::Tls | ServerProtocol::TlsPassthrough => String::new(),
        ServerProtocol::Https => format!(
            "https.{number}.{}.{}.{}",
            port.name,
            meta_name(gw),
            meta_ns(gw)
        ),
    };
    Some(ServerChain {
        source: source.to_string(),
        hosts,
        protocol,
        tls,
        https_redirect,
        route_table,
        tcp_routes: Vec::new(),
        postgres: false,
    })
}

fn tls_context(
    gw: &Gateway,
    server: &Server,
    objects: &[Object],
    warnings: &mut Vec<String>,
) -> Result<(TlsContext, Vec<Secret>), String> {
    let tls = server.tls.as_ref().ok_or("no TLS settings")?;
    let mode = match tls.mode.unwrap_or_default() {
        ServerTlsMode::Mutual => TlsMode::Mutual,
        ServerTlsMode::OptionalMutual => TlsMode::OptionalMutual,
        _ => TlsMode::Simple,
    };
    let mut used = Vec::new();
    let mut client_ca = tls
        .ca_certificates
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(crate::secrets::file_ca);
    let certificate = if let Some(name) = tls.credential_name.as_deref().filter(|s| !s.is_empty()) {
        let (cert, ca) = crate::secrets::credential(objects, meta_ns(gw), name)?;
        if ca.is_some() {
            client_ca = ca;
        }
        cert
    } else {
        crate::secrets::file_certificate(
            tls.server_certificate
                .as_deref()
                .ok_or("no serverCertificate")?,
            tls.private_key.as_deref().ok_or("no privateKey")?,
        )
    };
    if mode != TlsMode::Simple && client_ca.is_none() {
        return Err("MUTUAL TLS needs a CA: ca.crt in the credential or caCertificates".into());
    }
    let version = |v: Option<TlsProtocol>| match v? {
        TlsProtocol::TlsAuto => None,
        TlsProtocol::Tlsv10 => Some(TlsVersion::Tls10),
        TlsProtocol::Tlsv11 => Some(TlsVersion::Tls11),
        TlsProtocol::Tlsv12 => Some(TlsVersion::Tls12),
        TlsProtocol::Tlsv13 => Some(TlsVersion::Tls13),
    };
    let mut cipher_suites = Vec::new();
    for name in &tls.cipher_suites {
        match CipherSuite::from_openssl_name(name) {
            Some(c) => cipher_suites.push(c),
            None => warnings.push(format!(
                "Gateway {}/{}: cipher suite {name} is not supported; it is ignored",
                meta_ns(gw),
                meta_name(gw)
            )),
        }
    }
    let ctx = TlsContext {
        mode,
        certificate: certificate.name.clone(),
        client_ca: match (&client_ca, mode) {
            (_, TlsMode::Simple) | (None, _) => None,
            (Some(ca), _) => Some(ca.name.clone()),
        },
        min_version: version(tls.min_protocol_version),
        max_version: version(tls.max_protocol_version),
        cipher_suites,
        alpn: vec!["h2".into(), "http/1.1".into()],
    };
    used.push(certificate);
    if mode != TlsMode::Simple {
        used.extend(client_ca);
    }
    Ok((ctx, used))
}

/// Whether a VirtualService's `gateways` names this Gateway.
fn binds(vs: &VirtualService, gw: &Gateway) -> Vec<String> {
    let vs_ns = vs.metadata.namespace.as_deref().unwrap_or_default();
    let full = format!("{}/{}", meta_ns(gw), meta_name(gw));
    let legacy = format!("{}.{}", meta_name(gw), meta_ns(gw));
    let short = (vs_ns == meta_ns(gw)).then(|| meta_name(gw).to_string());
    vs.spec
        .gateways
        .iter()
        .filter(|g| {
            **g == full
                || **g == legacy
                || Some(g.as_str()) == short.as_deref()
                || g.starts_with(&format!("{legacy}."))
        })
        .cloned()
        .collect()
}

/// The server host that admits a VirtualService host, honouring `ns/` prefixes.
fn admitted_domain(server: &Server, gw_ns: &str, vs_ns: &str, vs_host: &str) -> Option<String> {
    server.hosts.iter().find_map(|h| {
        let (ns, host) = h.split_once('/').unwrap_or(("*", h));
        let ns_ok = ns == "*" || (ns == "." && vs_ns == gw_ns) || ns == vs_ns;
        if !ns_ok || !hosts_match(host, vs_host) {
            return None;
        }
        // The narrower of the two names is what the virtual host serves.
        let narrower = match (host.starts_with('*'), vs_host.starts_with('*')) {
            (true, false) => vs_host,
            (false, true) => host,
            _ if host.len() >= vs_host.len() => host,
            _ => vs_host,
        };
        Some(narrower.to_string())
    })
}

#[allow(clippy::too_many_arguments)]
fn add_virtual_hosts(
    table: &mut RouteTable,
    gw: &Gateway,
    server: &Server,
    port: u32,
    visible: &[&VirtualService],
    registry: &Registry,
    cluster_keys: &mut Vec<crate::routes::ClusterKey>,
    warnings: &mut Vec<String>,
) {
    let services = visible.iter().copied();
    let mut seen_domains: BTreeSet<String> = table
        .virtual_hosts
        .iter()
        .flat_map(|v| v.domains.clone())
        .collect();
    for vs in services {
        let names = binds(vs, gw);
        if names.is_empty() {
            continue;
        }
        let vs_ns = vs.metadata.namespace.as_deref().unwrap_or_default();
        let vs_name = vs.metadata.name.as_deref().unwrap_or_default();
        for host in &vs.spec.hosts {
            let host = resolve_host(host, vs_ns);
            let Some(domain) = admitted_domain(server, meta_ns(gw), vs_ns, &host) else {
                continue;
            };
            let routes: Vec<_> = vs
                .spec
                .http
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let name = r
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{vs_ns}/{vs_name}#{i}"));
                    let ctx = RouteContext {
                        namespace: vs_ns,
                        gateway_names: &names,
                        port,
                        registry,
                    };
                    compile_route(r, name, &ctx, cluster_keys, warnings)
                })
                .collect();
            match table
                .virtual_hosts
                .iter_mut()
                .find(|v| v.domains.contains(&domain))
            {
                // Istio combines VirtualServices for one host with catch-all routes last.
                Some(existing) => {
                    let (catch_all, specific): (Vec<_>, Vec<_>) = existing
                        .routes
                        .drain(..)
                        .partition(|r| r.matches.is_empty());
                    existing.routes.extend(specific);
                    existing.routes.extend(routes);
                    existing.routes.extend(catch_all);
                }
                None => {
                    if seen_domains.insert(domain.clone()) {
                        table.virtual_hosts.push(VirtualHost {
                            name: format!("{domain}:{port}"),
                            domains: vec![domain],
                            routes,
                        });
                    }
                }
            }
        }
    }
}

/// Envoy's virtual host order: exact domains, then suffix wildcards longest first, then `*`.
fn sort_virtual_hosts(table: &mut RouteTable) {
    table.virtual_hosts.sort_by_key(|v| {
        let d = &v.domains[0];
        let class = if d == "*" {
            2
        } else if d.starts_with('*') {
            1
        } else {
            0
        };
        (class, std::cmp::Reverse(d.len()), d.clone())
    });
}
