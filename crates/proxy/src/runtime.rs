//! The proxy's resources made ready to serve, and the one place they change: [`apply`]
//! takes a new [`ProxyConfig`] and the runtime in force and builds the next runtime
//! resource by resource.
//!
//! - A resource that did not change is kept as it is: a cluster keeps its balancer
//!   (cursor, counters), a listener its TLS configs.
//! - A cluster that changed, or whose endpoints changed, gets a new balancer that keeps
//!   the circuit-breaker counters and the state (load, health, ejections) of every
//!   endpoint still present.
//! - A secret whose bytes changed is swapped into its handle, so the next handshake uses
//!   it without any listener being rebuilt.
//! - A resource that fails to build (a certificate that does not parse, a regex that does
//!   not compile) is rejected alone, with a reason that names it: it keeps its previous
//!   version, or stays absent if it had none, and everything else applies. A server whose
//!   secret is unusable is left out of its listener, as Istio leaves it out; its siblings
//!   keep serving.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use meshwork_resources::listener::{ServerChain, ServerProtocol};
use meshwork_resources::{Cluster, EndpointSet, Listener, ProxyConfig, ResourceType, Secret};

use crate::balancer::Balancer;
use crate::route_table::CompiledRouteTable;
use crate::secrets::{SecretHandle, SecretMaterial};
use crate::tls::server_config;
use crate::upstream::{ClusterClient, Upstreams};
use crate::upstream_tls::origination;

/// A resource that was not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// What kind of resource.
    pub kind: ResourceType,
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.name, self.reason)
    }
}

/// A server of a listener with its TLS config.
pub struct ServerState {
    /// The server.
    pub chain: ServerChain,
    /// The rustls config when the server terminates TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A listener's servers.
pub struct ListenerState {
    /// The resource.
    pub resource: Listener,
    /// Servers in config order, less those left out.
    pub servers: Vec<ServerState>,
    /// Versions of the CA secrets the TLS configs were built with, and of every secret of
    /// a server that was left out (a missing one as `usize::MAX`), so that a fixed secret
    /// brings its server back. A rotated server certificate is not among them: it is
    /// swapped into its handle without a rebuild.
    secret_versions: Vec<(String, usize)>,
}

/// An upstream cluster with its endpoints, balancer and connection pools.
pub struct ClusterState {
    /// The resource.
    pub cluster: Cluster,
    /// Its endpoints, as applied.
    pub endpoints: EndpointSet,
    /// Endpoint choice and health.
    pub balancer: Balancer,
    /// The cluster's name, made once for the per-request logs.
    pub name: Arc<str>,
    /// How connections to the endpoints are made (settings, TLS), and their pools.
    pub clients: ClusterClient,
    /// Versions of the secrets its TLS was built with.
    secret_versions: Vec<(String, usize)>,
    /// The metrics labels of requests from this proxy to this cluster.
    pub peer: Arc<crate::metrics::PeerLabels>,
}

impl ClusterState {
    /// Chooses an endpoint (see [`Balancer::pick`]); `None` when there is none.
    pub fn pick(&self, hash: Option<u64>) -> Option<(usize, &crate::balancer::EndpointState)> {
        let i = self.balancer.pick(hash)?;
        Some((i, &self.balancer.endpoints[i]))
    }

    /// Whether the cluster speaks mesh mTLS (the workload certificate): its peers are the
    /// mesh's, which exchange metadata.
    pub fn mesh_mtls(&self) -> bool {
        self.cluster.tls.as_ref().is_some_and(|t| {
            t.client_certificate.as_deref()
                == Some(meshwork_resources::secret::WORKLOAD_CERTIFICATE)
        })
    }

    /// Where to connect for `endpoint`: its address, or for an original-destination
    /// cluster where the client meant to connect (its port on 127.0.0.1, inbound).
    pub fn authority(
        &self,
        endpoint: &crate::balancer::EndpointState,
        conn: &crate::connection::Connection,
    ) -> Arc<str> {
        use meshwork_resources::cluster::OriginalDestination;
        match (self.cluster.original_destination, conn.original_dst) {
            (None, _) => endpoint.authority.clone(),
            (Some(OriginalDestination::AsSent), Some(dst)) => dst.to_string().into(),
            (Some(OriginalDestination::Loopback), Some(dst)) => {
                format!("127.0.0.1:{}", dst.port()).into()
            }
            // Nothing redirected the connection: there is nowhere it meant to go.
            (Some(_), None) => "0.0.0.0:0".into(),
        }
    }
}

/// Everything a proxy runs, ready for requests and connections. Read without locks;
/// replaced as a whole by [`apply`], which shares every unchanged part.
#[derive(Default)]
pub struct Runtime {
    /// The resources in force (rejected ones at their previous version), as
    /// `/config_dump` shows them.
    pub config: Arc<ProxyConfig>,
    /// Listeners by the address their socket is bound to.
    pub listeners: HashMap<SocketAddr, Arc<ListenerState>>,
    /// Route tables by name.
    pub route_tables: HashMap<String, Arc<CompiledRouteTable>>,
    /// Clusters by name.
    pub clusters: HashMap<String, Arc<ClusterState>>,
    /// Secrets by name, with the number of times each was swapped.
    pub secrets: HashMap<String, (Arc<SecretHandle>, usize)>,
    /// The metrics labels of requests that reach no cluster (no route, direct responses).
    pub no_destination: Option<Arc<crate::metrics::PeerLabels>>,
    /// The labels of requests a sidecar's ingress listener (by bound address) answers
    /// before routing, as a denial: its inbound cluster's, reported by the destination.
    pub inbound_peers: HashMap<SocketAddr, Arc<crate::metrics::PeerLabels>>,
    /// This proxy's side of Istio's metadata exchange.
    pub exchange: Arc<crate::peer::Exchange>,
    /// Where spans go, when tracing is on.
    pub tracer: Option<Arc<crate::trace::Tracer>>,
    /// What the Telemetry API asks of the records (access logs, metric overrides).
    pub telemetry: crate::recorder::Telemetry,
    /// RequestAuthentication, when any applies.
    pub jwt: Option<Arc<crate::request::jwt::Authenticator>>,
    /// How the external authorizer is reached, when CUSTOM policies name one.
    pub ext_authz: Option<Arc<crate::request::ext_authz::Channel>>,
}

impl Runtime {
    /// The listener a capture listener hands a connection to, by where the client meant
    /// to connect: the unbound listener of that address and port, else of any address on
    /// that port, else the one for every other port (port 0) of that address or of any.
    pub fn captured(
        &self,
        capture: meshwork_resources::listener::Capture,
        dst: SocketAddr,
    ) -> Option<SocketAddr> {
        let outbound = capture == meshwork_resources::listener::Capture::Outbound;
        // `0.0.0.0` stands for any address of either family, as `[::]` does.
        let v4_any: std::net::IpAddr = std::net::Ipv4Addr::UNSPECIFIED.into();
        let v6_any: std::net::IpAddr = std::net::Ipv6Addr::UNSPECIFIED.into();
        [
            dst,
            SocketAddr::new(v6_any, dst.port()),
            SocketAddr::new(v4_any, dst.port()),
            SocketAddr::new(dst.ip(), 0),
            SocketAddr::new(v6_any, 0),
            SocketAddr::new(v4_any, 0),
        ]
        .into_iter()
        .find(|addr| {
            self.listeners.get(addr).is_some_and(|l| {
                !l.resource.bind_to_port
                    && l.resource.capture.is_none()
                    && l.resource.outbound == outbound
            })
        })
    }

    /// Whether nothing has been applied yet.
    pub fn is_empty(&self) -> bool {
        self.config.listeners.is_empty() && self.config.clusters.is_empty()
    }
}

/// Builds the runtime for `config` from `previous`, resource by resource. Returns the new
/// runtime and what was rejected.
pub fn apply(
    config: ProxyConfig,
    previous: &Runtime,
    upstreams: &Upstreams,
) -> (Runtime, Vec<Rejection>) {
    let mut rejected = Vec::new();
    let mut accepted = config.clone();
    let first = previous.is_empty();

    // Secrets first: listeners and clusters refer to them.
    let mut secrets = HashMap::new();
    for (name, secret) in &config.secrets {
        match apply_secret(secret, previous.secrets.get(name)) {
            Ok(entry) => {
                secrets.insert(name.clone(), entry);
            }
            Err(reason) => {
                rejected.push(Rejection {
                    kind: ResourceType::Secret,
                    name: name.clone(),
                    reason: format!("{reason}; {}", kept(previous.secrets.contains_key(name))),
                });
                keep_previous(&mut accepted.secrets, &previous.config.secrets, name);
                if let Some(old) = previous.secrets.get(name) {
                    secrets.insert(name.clone(), old.clone());
                }
            }
        }
    }

    let mut route_tables = HashMap::new();
    for (name, table) in &config.route_tables {
        let unchanged = previous.config.route_tables.get(name) == Some(table);
        match previous.route_tables.get(name).filter(|_| unchanged) {
            Some(same) => {
                route_tables.insert(name.clone(), same.clone());
            }
            None => match CompiledRouteTable::build(table) {
                Ok(t) => {
                    route_tables.insert(name.clone(), Arc::new(t));
                }
                Err(e) => {
                    rejected.push(Rejection {
                        kind: ResourceType::RouteTable,
                        name: name.clone(),
                        reason: format!("{e}; {}", kept(previous.route_tables.contains_key(name))),
                    });
                    keep_previous(
                        &mut accepted.route_tables,
                        &previous.config.route_tables,
                        name,
                    );
                    if let Some(old) = previous.route_tables.get(name) {
                        route_tables.insert(name.clone(), old.clone());
                    }
                }
            },
        }
    }

    let mut listeners = HashMap::new();
    for listener in config.listeners.values() {
        let Some(addr) = bind_address(listener) else {
            rejected.push(Rejection {
                kind: ResourceType::Listener,
                name: listener.name.clone(),
                reason: format!(
                    "address {:?} is not an IP address; {}",
                    listener.address,
                    kept(previous.config.listeners.contains_key(&listener.name))
                ),
            });
            keep_previous(
                &mut accepted.listeners,
                &previous.config.listeners,
                &listener.name,
            );
            if let Some((addr, old)) = previous
                .listeners
                .iter()
                .find(|(_, l)| l.resource.name == listener.name)
            {
                listeners.insert(*addr, old.clone());
            }
            continue;
        };
        let old = previous.listeners.get(&addr);
        let state = build_listener(listener, old, &secrets, &mut rejected);
        listeners.insert(addr, state);
    }

    let mut clusters = HashMap::new();
    for (name, cluster) in &config.clusters {
        let endpoints = config.endpoints.get(name).cloned().unwrap_or(EndpointSet {
            cluster: name.clone(),
            endpoints: Vec::new(),
        });
        let old = previous.clusters.get(name);
        let version = |n: &String| secrets.get(n).map_or(usize::MAX, |(_, v)| *v);
        let state = match old {
            Some(o)
                if o.cluster == *cluster
                    && o.endpoints == endpoints
                    && o.secret_versions.iter().all(|(n, v)| version(n) == *v) =>
            {
                o.clone()
            }
            _ => {
                let tls = match &cluster.tls {
                    Some(t) => match origination(t, |n| secrets.get(n).cloned()) {
                        Ok(o) => Some(o),
                        Err(e) => {
                            rejected.push(Rejection {
                                kind: ResourceType::Cluster,
                                name: name.clone(),
                                reason: format!("TLS origination: {e}; {}", kept(old.is_some())),
                            });
                            keep_previous(&mut accepted.clusters, &previous.config.clusters, name);
                            if let Some(o) = old {
                                clusters.insert(name.clone(), o.clone());
                            }
                            continue;
                        }
                    },
                    None => None,
                };
                let secret_versions = cluster
                    .tls
                    .iter()
                    .flat_map(|t| t.client_certificate.iter().chain(&t.trusted_ca))
                    .map(|n| (n.clone(), version(n)))
                    .collect();
                // An original-destination cluster has one stand-in endpoint, which each
                // connection's original destination takes the place of.
                let stand_in = [meshwork_resources::Endpoint {
                    address: "0.0.0.0".into(),
                    port: 0,
                    ..meshwork_resources::Endpoint::default()
                }];
                let balanced = match cluster.original_destination {
                    Some(_) => &stand_in[..],
                    None => &endpoints.endpoints[..],
                };
                Arc::new(ClusterState {
                    balancer: Balancer::update(
                        balanced,
                        &cluster.policy,
                        old.map(|o| &o.balancer),
                        first,
                    )
                    .with_locality(config.node.locality.clone())
                    .with_labels(config.node.labels.clone()),
                    clients: upstreams.for_cluster(cluster, tls),
                    peer: Arc::new(crate::metrics::PeerLabels::new(&config.node, Some(cluster))),
                    name: cluster.name.as_str().into(),
                    cluster: cluster.clone(),
                    endpoints,
                    secret_versions,
                })
            }
        };
        clusters.insert(name.clone(), state);
    }
    upstreams.retain(clusters.values().flat_map(|c| {
        c.endpoints
            .endpoints
            .iter()
            .map(move |e| (&c.clients, e.authority()))
    }));

    let inbound_peers = listeners
        .iter()
        .filter(|(_, l)| !l.resource.outbound)
        .filter_map(|(addr, l)| {
            let name = inbound_cluster(&l.resource, &accepted)?;
            Some((*addr, clusters.get(name)?.peer.clone()))
        })
        .collect();
    // The metadata and the peers met stay as long as the node does.
    let exchange = if previous.config.node == config.node {
        previous.exchange.clone()
    } else {
        Arc::new(crate::peer::Exchange::new(&config.node))
    };
    // Keys fetched from a jwksUri stay while a rule still names it.
    let jwt = (!config.request_authentication.is_empty()).then(|| {
        let mut warnings = Vec::new();
        let authenticator = crate::request::jwt::Authenticator::new(
            &config.request_authentication,
            previous.jwt.as_deref(),
            &mut warnings,
        );
        for w in warnings {
            tracing::warn!("{w}");
        }
        Arc::new(authenticator)
    });
    // The tracer (and its queue of spans) stays while its settings do.
    let tracer = match (&previous.tracer, &config.tracing) {
        (Some(t), Some(settings)) if t.settings == *settings => Some(t.clone()),
        (_, Some(settings)) => Some(Arc::new(crate::trace::Tracer::new(settings.clone()))),
        (_, None) => None,
    };
    // The external authorizer's channel stays while its address does.
    let ext_authz = match (
        &previous.ext_authz,
        &previous.config.ext_authz,
        &config.ext_authz,
    ) {
        (Some(c), Some(old), Some(new)) if new.grpc == old.grpc && old.address == new.address => {
            Some(c.clone())
        }
        (_, _, Some(new)) if new.grpc => crate::otlp::GrpcClient::new(&new.address)
            .map(|c| Arc::new(crate::request::ext_authz::Channel::Grpc(c))),
        (_, _, Some(_)) => Some(Arc::new(crate::request::ext_authz::Channel::Http(
            Default::default(),
        ))),
        _ => None,
    };
    let runtime = Runtime {
        exchange,
        tracer,
        jwt,
        ext_authz,
        telemetry: crate::recorder::Telemetry::new(&accepted),
        no_destination: Some(Arc::new(crate::metrics::PeerLabels::new(
            &config.node,
            None,
        ))),
        inbound_peers,
        config: Arc::new(accepted),
        listeners,
        route_tables,
        clusters,
        secrets,
    };
    (runtime, rejected)
}

/// The first inbound cluster (`inbound|...`) a listener's servers send to.
fn inbound_cluster<'a>(listener: &'a Listener, config: &'a ProxyConfig) -> Option<&'a str> {
    listener.servers.iter().find_map(|server| {
        let tcp = server
            .tcp_routes
            .iter()
            .flat_map(|r| &r.destinations)
            .map(|d| d.cluster.as_str());
        let http = config
            .route_tables
            .get(&server.route_table)
            .into_iter()
            .flat_map(|t| &t.virtual_hosts)
            .flat_map(|v| &v.routes)
            .flat_map(|r| match &r.action {
                meshwork_resources::route::RouteAction::Forward(d) => d.as_slice(),
                _ => &[],
            })
            .map(|d| d.cluster.as_str());
        tcp.chain(http).find(|c| c.starts_with("inbound|"))
    })
}

/// The socket address a listener binds.
pub fn bind_address(listener: &Listener) -> Option<SocketAddr> {
    let ip: std::net::IpAddr = listener.address.parse().ok()?;
    Some(SocketAddr::new(ip, listener.bind_port))
}

/// What becomes of a rejected resource.
fn kept(had_previous: bool) -> &'static str {
    if had_previous {
        "it keeps its previous version"
    } else {
        "it is left out"
    }
}

fn keep_previous<T: Clone>(
    now: &mut std::collections::BTreeMap<String, T>,
    before: &std::collections::BTreeMap<String, T>,
    name: &str,
) {
    match before.get(name) {
        Some(old) => {
            now.insert(name.to_string(), old.clone());
        }
        None => {
            now.remove(name);
        }
    }
}

/// A number no secret version had before, so that a secret removed and added again is
/// never taken for the version it had.
fn next_generation() -> usize {
    static GENERATION: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The handle for a secret: the previous one, with new material swapped in when the
/// resource or its files changed.
fn apply_secret(
    secret: &Secret,
    previous: Option<&(Arc<SecretHandle>, usize)>,
) -> Result<(Arc<SecretHandle>, usize), String> {
    let material = SecretMaterial::load(secret).map_err(|e| e.to_string())?;
    Ok(match previous {
        Some((handle, version)) if handle.current.load().same_as(&material) => {
            (handle.clone(), *version)
        }
        Some((handle, _)) => {
            handle.current.store(Arc::new(material));
            tracing::info!(secret = %secret.name, "secret updated");
            (handle.clone(), next_generation())
        }
        None => (SecretHandle::new(material), next_generation()),
    })
}

/// The listener's state: the previous one when neither the listener nor the CA secrets
/// its TLS configs were built with changed; otherwise rebuilt, leaving out servers whose
/// TLS cannot be set up.
fn build_listener(
    listener: &Listener,
    previous: Option<&Arc<ListenerState>>,
    secrets: &HashMap<String, (Arc<SecretHandle>, usize)>,
    rejected: &mut Vec<Rejection>,
) -> Arc<ListenerState> {
    let version = |name: &String| secrets.get(name).map_or(usize::MAX, |(_, v)| *v);
    if let Some(p) = previous
        && p.resource == *listener
        && p.secret_versions.iter().all(|(n, v)| version(n) == *v)
    {
        return p.clone();
    }
    let mut servers = Vec::new();
    let mut secret_versions: Vec<(String, usize)> = listener
        .servers
        .iter()
        .filter_map(|s| s.tls.as_ref())
        .flat_map(|t| &t.client_ca)
        .map(|n| (n.clone(), version(n)))
        .collect();
    for chain in &listener.servers {
        let Some(ctx) = &chain.tls else {
            servers.push(ServerState {
                chain: chain.clone(),
                tls: None,
            });
            continue;
        };
        let built = (|| {
            let (cert, _) = secrets
                .get(&ctx.certificate)
                .ok_or_else(|| format!("secret {} is not available", ctx.certificate))?;
            let ca = match &ctx.client_ca {
                Some(name) => {
                    let (handle, _) = secrets
                        .get(name)
                        .ok_or_else(|| format!("secret {name} is not available"))?;
                    Some(handle.current.load_full())
                }
                None => None,
            };
            if cert.current.load().certified.is_none() {
                return Err(format!(
                    "secret {} holds no certificate and key",
                    ctx.certificate
                ));
            }
            server_config(ctx, cert.clone(), ca.as_deref()).map_err(|e| e.to_string())
        })();
        match built {
            Ok(tls) => servers.push(ServerState {
                chain: chain.clone(),
                tls: Some(tls),
            }),
            Err(reason) => {
                secret_versions.push((ctx.certificate.clone(), version(&ctx.certificate)));
                rejected.push(Rejection {
                    kind: ResourceType::Listener,
                    name: listener.name.clone(),
                    reason: format!("server {}: {reason}; the server is left out", chain.source),
                });
            }
        }
    }
    Arc::new(ListenerState {
        resource: listener.clone(),
        servers,
        secret_versions,
    })
}

impl ListenerState {
    /// The Gateway port number.
    pub fn gateway_port(&self) -> u32 {
        self.resource.gateway_port
    }

    /// True when connections start with TLS: terminated or passed through.
    pub fn inspects_tls(&self) -> bool {
        self.servers.iter().any(|s| {
            matches!(
                s.chain.protocol,
                ServerProtocol::Https | ServerProtocol::Tls | ServerProtocol::TlsPassthrough
            )
        })
    }

    /// True when the port also serves plaintext beside TLS (PERMISSIVE mTLS).
    pub fn has_plaintext(&self) -> bool {
        self.servers
            .iter()
            .any(|s| matches!(s.chain.protocol, ServerProtocol::Http | ServerProtocol::Tcp))
    }

    /// The index of the server whose hosts match `name` (SNI or Host), most specific
    /// first; without a name, a server that accepts any host, else the first.
    pub fn server_for(&self, name: Option<&str>) -> Option<usize> {
        let name: Option<std::borrow::Cow<'_, str>> = name.map(|n| {
            if n.bytes().any(|b| b.is_ascii_uppercase()) {
                n.to_ascii_lowercase().into()
            } else {
                n.into()
            }
        });
        let Some(name) = name else {
            return self
                .servers
                .iter()
                .position(|s| s.chain.hosts.iter().any(|h| h == "*"))
                .or(if self.servers.is_empty() {
                    None
                } else {
                    Some(0)
                });
        };
        let score = |s: &ServerState| {
            s.chain
                .hosts
                .iter()
                .filter(|h| crate::route_table::domain_match(h, &name))
                // Exact names first, then the longest wildcard suffix, then `*`.
                .map(|h| if *h == name { usize::MAX } else { h.len() })
                .max()
        };
        self.servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| score(s).map(|sc| (sc, std::cmp::Reverse(i))))
            .max()
            .map(|(_, std::cmp::Reverse(i))| i)
    }
}

#[cfg(test)]
pub(crate) mod tests;
