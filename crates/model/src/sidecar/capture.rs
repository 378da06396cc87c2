//! Sidecars whose workload's traffic iptables redirects to them (Istio's default,
//! `INTERCEPTION_MODE: REDIRECT`; `meshwork iptables` installs the rules). Nothing is
//! bound but the two capture listeners: `virtualOutbound` (15001) takes the app's calls
//! out and `virtualInbound` (15006) the calls to it. Each hands a connection to the
//! listener of its original destination, which binds no port:
//! - outbound, `VIP:PORT` for a service declared TCP, else `0.0.0.0:PORT` with the route
//!   table of the port's HTTP services (telling HTTP from other bytes when the port also
//!   carries undeclared services), and `0.0.0.0:0` for any other port;
//! - inbound, `POD_IP:PORT` for each port a service sends to the workload, and
//!   `POD_IP:0` for any other; calls go on to the app at the pod's address, from
//!   127.0.0.6.
//!
//! What is not the mesh's follows `outboundTrafficPolicy`: ALLOW_ANY passes it through
//! to where the app meant to go (`PassthroughCluster`); REGISTRY_ONLY answers HTTP with
//! 502 and resets other connections (`BlackHoleCluster`), as Istio does.

use std::collections::BTreeMap;

use meshwork_api::generated::networking::{IstioEgressListener, OutboundTrafficPolicyMode};
use meshwork_api::mesh::OutboundMode;
use meshwork_resources::cluster::{Cluster, OriginalDestination};
use meshwork_resources::dns::NameTable;
use meshwork_resources::listener::{
    Capture, L4Route, Listener, OPAQUE_ALPN, ServerChain, ServerProtocol,
};
use meshwork_resources::node::Interception;
use meshwork_resources::route::{RouteAction, RouteTable, VirtualHost};
use meshwork_resources::{Endpoint, EndpointSet};

use super::{
    Build, domains, forward_route, inbound_cluster, node_ip, plain_server, visible, whole,
};
use crate::registry::{Protocol, Service};

/// Istio's cluster that connects where the app meant to go.
pub const PASSTHROUGH: &str = "PassthroughCluster";
/// Istio's cluster that connects inbound calls to ports no service declares.
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";
/// Where a sidecar's calls to its own app come from (`meshwork iptables` lets it by).
pub const INBOUND_SOURCE: &str = "127.0.0.6";

/// How a service port is spoken, for capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Declared HTTP, HTTP/2 or gRPC: routed by Host.
    Http,
    /// Declared TCP or TLS: by the address called.
    Opaque,
    /// Not declared: HTTP when the first bytes are, else by the address called.
    Detected,
}

fn kind(protocol: Protocol) -> Kind {
    match protocol {
        Protocol::Http | Protocol::Http2 | Protocol::Grpc => Kind::Http,
        Protocol::Tcp | Protocol::Tls | Protocol::Https => Kind::Opaque,
        Protocol::Unknown => Kind::Detected,
    }
}

/// `10.0.0.1` as a subnet (`10.0.0.1/32`); a CIDR as it is.
fn subnet(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => format!("{address}/32"),
        Ok(std::net::IpAddr::V6(_)) => format!("{address}/128"),
        Err(_) => address.to_string(),
    }
}

impl Build<'_> {
    /// The outbound side (the class part): a listener per service port of the services
    /// `hosts` import, and the one for every other port.
    pub(super) fn capture_outbound(
        &mut self,
        source: &str,
        hosts: &[String],
        policy: Option<OutboundTrafficPolicyMode>,
    ) {
        let allow_any = match policy {
            Some(OutboundTrafficPolicyMode::AllowAny) => true,
            Some(OutboundTrafficPolicyMode::RegistryOnly) => false,
            None => self.mesh.outbound_traffic_policy.mode == OutboundMode::AllowAny,
        };
        let egress = IstioEgressListener {
            hosts: hosts.to_vec(),
            ..IstioEgressListener::default()
        };
        let services: Vec<&Service> = visible(&egress, self.node, self.registry, self.mesh);
        self.name_table(&services);
        let mut by_port: BTreeMap<u32, Vec<(&Service, Kind)>> = BTreeMap::new();
        for s in &services {
            for p in &s.ports {
                by_port
                    .entry(p.number)
                    .or_default()
                    .push((s, kind(p.protocol)));
            }
        }
        for (port, services) in by_port {
            let Ok(port16) = u16::try_from(port) else {
                continue;
            };
            // Declared TCP with an address: a listener of its own per address.
            for (s, k) in &services {
                if *k != Kind::Opaque {
                    continue;
                }
                if s.addresses.is_empty() {
                    self.warnings.push(format!(
                        "{}: TCP port {port} has no address to be called at; captured calls to it are not routed",
                        s.host
                    ));
                }
                for address in &s.addresses {
                    let mut server = plain_server(
                        format!("{source}#outbound[{address}:{port}]"),
                        ServerProtocol::Tcp,
                    );
                    server.tcp_routes = self.tcp_routes(&s.host, port);
                    self.add_listener(address.clone(), port16, vec![server], true, false);
                }
            }
            // HTTP, TLS by SNI, and undeclared services: one listener on the port.
            let mut servers = Vec::new();
            let http: Vec<&Service> = services
                .iter()
                .filter(|(_, k)| *k != Kind::Opaque)
                .map(|(s, _)| *s)
                .collect();
            if !http.is_empty() {
                let table_name = port.to_string();
                let mut table = RouteTable::default();
                for s in &http {
                    let routes = self.http_routes(&s.host, port);
                    if routes.is_empty() {
                        continue;
                    }
                    let mut names = domains(&s.host, &self.node.namespace);
                    names.extend(s.addresses.iter().cloned());
                    table.virtual_hosts.push(VirtualHost {
                        name: format!("{}:{port}", s.host),
                        domains: names,
                        routes,
                    });
                }
                table.virtual_hosts.push(self.unknown_host(allow_any));
                self.config.route_tables.insert(table_name.clone(), table);
                let mut server =
                    plain_server(format!("{source}#outbound[{port}]"), ServerProtocol::Http);
                server.route_table = table_name;
                servers.push(server);
            }
            // TLS services are told apart by the SNI of the ClientHello, whatever address
            // the app connected to.
            let tls_services: Vec<&Service> = services
                .iter()
                .filter(|(s, _)| {
                    s.port(port)
                        .is_some_and(|p| matches!(p.protocol, Protocol::Tls | Protocol::Https))
                })
                .map(|(s, _)| *s)
                .collect();
            for s in &tls_services {
                let mut server = plain_server(
                    format!("{source}#outbound[{port}]#sni[{}]", s.host),
                    ServerProtocol::TlsPassthrough,
                );
                server.hosts = vec![s.host.clone()];
                server.tcp_routes = self
                    .tcp_routes(&s.host, port)
                    .into_iter()
                    .map(|mut r| {
                        r.sni_hosts = vec![s.host.clone()];
                        r
                    })
                    .collect();
                servers.push(server);
            }
            if servers.is_empty() {
                continue;
            }
            if !tls_services.is_empty() && allow_any {
                let mut any = plain_server(
                    format!("{source}#outbound[{port}]#sni[*]"),
                    ServerProtocol::TlsPassthrough,
                );
                any.hosts = vec!["*".into()];
                any.tcp_routes.push(self.passthrough_route());
                servers.push(any);
            }
            // Undeclared services that are not HTTP go by the address called.
            let mut tcp = plain_server(
                format!("{source}#outbound[{port}]#tcp"),
                ServerProtocol::Tcp,
            );
            for (s, k) in &services {
                if *k != Kind::Detected || s.addresses.is_empty() {
                    continue;
                }
                for mut route in self.tcp_routes(&s.host, port) {
                    route.destination_subnets = s.addresses.iter().map(|a| subnet(a)).collect();
                    tcp.tcp_routes.push(route);
                }
            }
            if allow_any {
                tcp.tcp_routes.push(self.passthrough_route());
            }
            servers.push(tcp);
            self.add_listener("0.0.0.0".into(), port16, servers, true, false);
        }
        // Every other port.
        let mut other = vec![];
        if allow_any {
            let mut tcp = plain_server(format!("{source}#outbound[*]"), ServerProtocol::Tcp);
            tcp.tcp_routes.push(self.passthrough_route());
            other.push(tcp);
        } else {
            // HTTP is answered 502; other bytes find no route and are reset.
            let table = "block_all".to_string();
            let block_all = self.unknown_host(false);
            self.config.route_tables.insert(
                table.clone(),
                RouteTable {
                    virtual_hosts: vec![block_all],
                },
            );
            let mut http = plain_server(format!("{source}#outbound[*]"), ServerProtocol::Http);
            http.route_table = table;
            other.push(http);
            other.push(plain_server(
                format!("{source}#outbound[*]#tcp"),
                ServerProtocol::Tcp,
            ));
        }
        self.add_listener("0.0.0.0".into(), 0, other, true, false);
    }

    /// What the DNS proxy answers for these services: each host with its addresses,
    /// under every name a client of this namespace may use for it (`reviews`,
    /// `reviews.default`, `reviews.default.svc`, the FQDN).
    fn name_table(&mut self, services: &[&Service]) {
        let names = self.config.names.get_or_insert_with(|| NameTable {
            hosts: BTreeMap::new(),
        });
        for s in services {
            if s.addresses.is_empty() || s.host.contains('*') {
                continue;
            }
            let addresses: Vec<String> = s
                .addresses
                .iter()
                .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
                .cloned()
                .collect();
            for name in domains(&s.host, &self.node.namespace) {
                names
                    .hosts
                    .entry(name.to_ascii_lowercase())
                    .or_insert_with(|| addresses.clone());
            }
        }
    }

    /// The virtual host of every host the mesh does not know: through to where the app
    /// meant to go (`allow_any`), else a 502 from `BlackHoleCluster`.
    fn unknown_host(&mut self, allow_any: bool) -> VirtualHost {
        if allow_any {
            self.passthrough_cluster(PASSTHROUGH, OriginalDestination::AsSent);
            VirtualHost {
                name: "allow_any".into(),
                domains: vec!["*".into()],
                routes: vec![forward_route(whole(PASSTHROUGH.into()), None)],
            }
        } else {
            let mut route = forward_route(whole(String::new()), None);
            route.name = "block_all".into();
            route.action = RouteAction::DirectResponse {
                status: 502,
                body: String::new(),
            };
            VirtualHost {
                name: "block_all".into(),
                domains: vec!["*".into()],
                routes: vec![route],
            }
        }
    }

    fn passthrough_route(&mut self) -> L4Route {
        self.passthrough_cluster(PASSTHROUGH, OriginalDestination::AsSent);
        L4Route {
            name: PASSTHROUGH.into(),
            sni_hosts: Vec::new(),
            destination_subnets: Vec::new(),
            destinations: vec![whole(PASSTHROUGH.into())],
        }
    }

    /// A cluster without endpoints that connects where the client meant to.
    fn passthrough_cluster(&mut self, name: &str, to: OriginalDestination) {
        let cluster = Cluster {
            host: String::new(),
            original_destination: Some(to),
            ..inbound_cluster(name, 0, self.mesh)
        };
        self.config.clusters.insert(name.into(), cluster);
        self.config.endpoints.insert(
            name.into(),
            EndpointSet {
                cluster: name.into(),
                endpoints: Vec::new(),
            },
        );
    }

    /// The inbound side (the proxy's own part): a listener per port a service sends to
    /// this workload, handing calls to the app on 127.0.0.1, and one for every other port.
    pub(super) fn capture_inbound(&mut self) {
        let ip = node_ip(self.node);
        let mut ports: BTreeMap<u16, Kind> = BTreeMap::new();
        for s in self.registry.services.values() {
            if s.namespace != self.node.namespace {
                continue;
            }
            for i in &s.instances {
                if i.endpoint.address != ip {
                    continue;
                }
                let Some(p) = s.port(i.service_port) else {
                    continue;
                };
                let k = kind(p.protocol);
                ports
                    .entry(i.endpoint.port)
                    .and_modify(|known| {
                        if *known != k {
                            *known = Kind::Http;
                        }
                    })
                    .or_insert(k);
            }
        }
        for (port, k) in ports {
            let protocol = match k {
                Kind::Opaque => ServerProtocol::Tcp,
                Kind::Http | Kind::Detected => ServerProtocol::Http,
            };
            self.inbound_listener(
                &format!("capture#inbound[{port}]"),
                port,
                protocol,
                Endpoint {
                    address: ip.clone(),
                    port,
                    ..Endpoint::default()
                },
                ip.clone(),
                false,
            );
            self.call_app_from_inbound_source(&format!("inbound|{port}||"));
            if k == Kind::Detected {
                self.other_bytes_too(&format!("{ip}_{port}"), &format!("inbound|{port}||"));
            }
        }
        // Every other port: to where the client meant to connect, the same way, under the
        // workload's mTLS mode.
        self.passthrough_cluster(INBOUND_PASSTHROUGH, OriginalDestination::AsSent);
        self.call_app_from_inbound_source(INBOUND_PASSTHROUGH);
        let mut server = plain_server("capture#inbound[*]".into(), ServerProtocol::Tcp);
        server.tcp_routes.push(L4Route {
            name: INBOUND_PASSTHROUGH.into(),
            sni_hosts: Vec::new(),
            destination_subnets: Vec::new(),
            destinations: vec![whole(INBOUND_PASSTHROUGH.into())],
        });
        let servers = self.peer_authenticated(server, 0);
        self.add_listener(ip, 0, servers, false, false);
    }

    /// An inbound port of undeclared protocol takes other bytes than HTTP too: under mTLS
    /// the client's sidecar says which by ALPN (`istio` for bytes it did not take for
    /// HTTP, as Istio's sidecars say), in plaintext the first bytes tell.
    fn other_bytes_too(&mut self, listener: &str, cluster: &str) {
        let Some(l) = self.config.listeners.get_mut(listener) else {
            return;
        };
        let route = L4Route {
            name: cluster.to_string(),
            sni_hosts: Vec::new(),
            destination_subnets: Vec::new(),
            destinations: vec![whole(cluster.to_string())],
        };
        let mut plain_tcp = None;
        for server in &mut l.servers {
            match server.protocol {
                ServerProtocol::Https => {
                    server.tcp_routes.push(route.clone());
                    if let Some(tls) = &mut server.tls {
                        tls.alpn.extend(OPAQUE_ALPN.iter().map(|a| a.to_string()));
                    }
                }
                ServerProtocol::Http => {
                    let mut tcp = server.clone();
                    tcp.source = format!("{}#tcp", server.source);
                    tcp.protocol = ServerProtocol::Tcp;
                    tcp.route_table = String::new();
                    tcp.tcp_routes = vec![route.clone()];
                    plain_tcp = Some(tcp);
                }
                _ => {}
            }
        }
        l.servers.extend(plain_tcp);
    }

    /// Calls to the app come from 127.0.0.6, which iptables lets through, to the pod's
    /// address (as Istio's sidecars hand them over since 1.10): an app that listens on
    /// 127.0.0.1 alone is not reachable from outside its pod.
    fn call_app_from_inbound_source(&mut self, cluster: &str) {
        if let Some(c) = self.config.clusters.get_mut(cluster) {
            c.connections.source_address = Some(INBOUND_SOURCE.into());
        }
    }

    /// The two listeners iptables sends the workload's TCP to.
    pub(super) fn capture_listeners(&mut self, ports: Interception) {
        for (name, port, capture) in [
            ("virtualOutbound", ports.outbound_port, Capture::Outbound),
            ("virtualInbound", ports.inbound_port, Capture::Inbound),
        ] {
            self.config.listeners.insert(
                name.into(),
                Listener {
                    name: name.into(),
                    address: "0.0.0.0".into(),
                    bind_port: port,
                    gateway_port: u32::from(port),
                    servers: Vec::<ServerChain>::new(),
                    outbound: capture == Capture::Outbound,
                    bind_to_port: true,
                    capture: Some(capture),
                },
            );
        }
    }
}
