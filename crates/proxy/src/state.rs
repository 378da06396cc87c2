//! The runtime form of a gateway's compiled config: regexes compiled, TLS server configs
//! built, clusters with their round-robin cursors. Built once per config change, then
//! swapped in atomically; requests read it without locks.

use std::collections::HashMap;
use std::sync::Arc;

use meshwork_model::config::{
    AccessLog, Cluster, GatewayConfig, Route, RouteMatch, ServerChain, ServerProtocol,
    StringMatcher,
};
use regex::Regex;

use crate::balancer::Balancer;
use crate::tls::{TlsError, server_config};
use crate::upstream::{ClientPair, Upstreams};

/// A string condition ready to run.
#[derive(Debug)]
pub enum Matcher {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Matches the whole value.
    Regex(Regex),
}

impl Matcher {
    fn build(m: &StringMatcher) -> Result<Matcher, regex::Error> {
        Ok(match m {
            StringMatcher::Exact(s) => Matcher::Exact(s.clone()),
            StringMatcher::Prefix(s) => Matcher::Prefix(s.clone()),
            StringMatcher::Regex(r) => Matcher::Regex(Regex::new(&format!("^(?:{r})$"))?),
        })
    }

    /// Whether `value` satisfies the condition (exact and prefix optionally ignoring case).
    pub fn matches(&self, value: &str, ignore_case: bool) -> bool {
        match self {
            Matcher::Exact(s) if ignore_case => s.eq_ignore_ascii_case(value),
            Matcher::Exact(s) => s == value,
            Matcher::Prefix(p) if ignore_case => value
                .get(..p.len())
                .is_some_and(|v| v.eq_ignore_ascii_case(p)),
            Matcher::Prefix(p) => value.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(value),
        }
    }
}

/// A route match, compiled.
#[derive(Debug)]
pub struct CompiledMatch {
    /// The path condition.
    pub uri: Option<Matcher>,
    /// Case-insensitive path.
    pub ignore_uri_case: bool,
    /// Scheme condition.
    pub scheme: Option<Matcher>,
    /// Method condition.
    pub method: Option<Matcher>,
    /// Authority condition.
    pub authority: Option<Matcher>,
    /// Header conditions: name, value (None: present), inverted.
    pub headers: Vec<(String, Option<Matcher>, bool)>,
    /// Query conditions: name, value (None: present).
    pub query: Vec<(String, Option<Matcher>)>,
    /// Gateway port.
    pub port: Option<u32>,
}

impl CompiledMatch {
    fn build(m: &RouteMatch) -> Result<Self, regex::Error> {
        let opt = |m: &Option<StringMatcher>| m.as_ref().map(Matcher::build).transpose();
        Ok(Self {
            uri: opt(&m.uri)?,
            ignore_uri_case: m.ignore_uri_case,
            scheme: opt(&m.scheme)?,
            method: opt(&m.method)?,
            authority: opt(&m.authority)?,
            headers: m
                .headers
                .iter()
                .map(|h| Ok((h.name.clone(), opt(&h.value)?, h.invert)))
                .collect::<Result<_, regex::Error>>()?,
            query: m
                .query_params
                .iter()
                .map(|q| Ok((q.name.clone(), opt(&q.value)?)))
                .collect::<Result<_, regex::Error>>()?,
            port: m.port,
        })
    }
}

/// A route with its matches compiled.
#[derive(Debug)]
pub struct CompiledRoute {
    /// The compiled model route (actions, headers, retries).
    pub route: Route,
    /// Compiled alternatives; empty matches everything.
    pub matches: Vec<CompiledMatch>,
    /// Compiled `uriRegexRewrite` pattern.
    pub rewrite_regex: Option<(Regex, String)>,
    /// Sum of the weights of a forward action.
    pub total_weight: u32,
    /// The CORS policy's allowed origins, compiled.
    pub cors_origins: Vec<Matcher>,
}

/// A virtual host, compiled.
#[derive(Debug)]
pub struct CompiledVirtualHost {
    /// Domains, lower case.
    pub domains: Vec<String>,
    /// Routes in order.
    pub routes: Vec<CompiledRoute>,
}

/// A server of a listener with its TLS config.
pub struct ServerState {
    /// The compiled server.
    pub chain: ServerChain,
    /// The rustls config when the server terminates TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A listener's servers.
pub struct ListenerState {
    /// Gateway port number.
    pub gateway_port: u32,
    /// Servers in config order.
    pub servers: Vec<ServerState>,
}

impl ListenerState {
    /// True when connections start with TLS: terminated or passed through.
    pub fn inspects_tls(&self) -> bool {
        self.servers.iter().any(|s| {
            matches!(
                s.chain.protocol,
                ServerProtocol::Https | ServerProtocol::Tls | ServerProtocol::TlsPassthrough
            )
        })
    }

    /// The index of the server whose hosts match `name` (SNI or Host), most specific
    /// first; without a name, a server that accepts any host, else the first.
    pub fn server_for(&self, name: Option<&str>) -> Option<usize> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
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
                .filter(|h| domain_match(h, &name))
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

/// An upstream cluster with its balancer (load balancing, outlier detection, limits).
pub struct ClusterState {
    /// The compiled cluster.
    pub cluster: Cluster,
    /// Endpoint choice and health.
    pub balancer: Balancer,
    /// Pooled connections to the endpoints.
    pub clients: ClientPair,
}

impl ClusterState {
    /// Chooses an endpoint (see [`Balancer::pick`]); `None` when there is none.
    pub fn pick(&self, hash: Option<u64>) -> Option<(usize, &meshwork_model::config::Endpoint)> {
        let i = self.balancer.pick(hash)?;
        Some((i, &self.balancer.endpoints[i].endpoint))
    }
}

/// Envoy's domain matching: exact, `*.suffix` / `*suffix`, or `*`.
pub fn domain_match(domain: &str, host: &str) -> bool {
    if domain == "*" || domain == host {
        return true;
    }
    match domain.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => false,
    }
}

/// Envoy writes regex groups in a replacement as `\1`; the regex crate as `${1}`.
fn envoy_groups_to_regex(replacement: &str) -> String {
    static GROUP: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    GROUP
        .get_or_init(|| Regex::new(r"\\(\d+)").expect("valid regex"))
        .replace_all(replacement, "$${$1}")
        .into_owned()
}

/// Everything a gateway proxy runs, ready for requests.
pub struct State {
    /// The compiled config, as `/config_dump` shows it.
    pub config: Arc<GatewayConfig>,
    /// Listeners by bound port.
    pub listeners: HashMap<u16, ListenerState>,
    /// Route tables by name.
    pub route_tables: HashMap<String, Vec<CompiledVirtualHost>>,
    /// Clusters by name.
    pub clusters: HashMap<String, ClusterState>,
    /// Access log settings.
    pub access_log: Option<AccessLog>,
}

/// The config cannot be run (a certificate that does not parse, a bad regex).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// TLS material is unusable.
    #[error("server {server}: {source}")]
    Tls {
        /// The server (`ns/gateway#index`).
        server: String,
        /// Why.
        #[source]
        source: TlsError,
    },
    /// A regex does not compile (validation should have caught it).
    #[error("route {route}: {source}")]
    Regex {
        /// The route.
        route: String,
        /// Why.
        #[source]
        source: regex::Error,
    },
}

impl State {
    /// Builds the runtime state; clusters get their clients from `upstreams`.
    pub fn build(config: GatewayConfig, upstreams: &Upstreams) -> Result<State, BuildError> {
        let mut listeners = HashMap::new();
        for l in &config.listeners {
            let mut servers = Vec::new();
            for chain in &l.servers {
                let tls = match &chain.tls {
                    Some(ctx) => Some(server_config(ctx).map_err(|source| BuildError::Tls {
                        server: chain.source.clone(),
                        source,
                    })?),
                    None => None,
                };
                servers.push(ServerState {
                    chain: chain.clone(),
                    tls,
                });
            }
            listeners.insert(
                l.bind_port,
                ListenerState {
                    gateway_port: l.gateway_port,
                    servers,
                },
            );
        }
        let mut route_tables = HashMap::new();
        for (name, table) in &config.route_tables {
            let mut vhosts = Vec::new();
            for vh in &table.virtual_hosts {
                let mut routes = Vec::new();
                for r in &vh.routes {
                    let regex_err = |source| BuildError::Regex {
                        route: r.name.clone(),
                        source,
                    };
                    let matches = r
                        .matches
                        .iter()
                        .map(CompiledMatch::build)
                        .collect::<Result<_, _>>()
                        .map_err(regex_err)?;
                    let rewrite_regex =
                        match r.rewrite.as_ref().and_then(|rw| rw.uri_regex.as_ref()) {
                            Some((pattern, with)) => Some((
                                Regex::new(pattern).map_err(regex_err)?,
                                // Envoy writes groups as \1; the regex crate as ${1}.
                                envoy_groups_to_regex(with),
                            )),
                            None => None,
                        };
                    let total_weight = match &r.action {
                        meshwork_model::config::RouteAction::Forward(c) => {
                            c.iter().map(|w| w.weight).sum()
                        }
                        _ => 0,
                    };
                    let cors_origins = r
                        .cors
                        .iter()
                        .flat_map(|c| &c.allow_origins)
                        .map(Matcher::build)
                        .collect::<Result<_, _>>()
                        .map_err(regex_err)?;
                    routes.push(CompiledRoute {
                        route: r.clone(),
                        matches,
                        rewrite_regex,
                        total_weight,
                        cors_origins,
                    });
                }
                vhosts.push(CompiledVirtualHost {
                    domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
                    routes,
                });
            }
            route_tables.insert(name.clone(), vhosts);
        }
        let clusters = config
            .clusters
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    ClusterState {
                        balancer: Balancer::with_join_times(
                            &c.endpoints,
                            &c.policy,
                            &upstreams.join_times(c),
                        )
                        .with_locality(config.locality.clone())
                        .with_labels(config.selector.clone()),
                        clients: upstreams.for_cluster(c),
                        cluster: c.clone(),
                    },
                )
            })
            .collect();
        Ok(State {
            access_log: config.access_log.clone(),
            config: Arc::new(config),
            listeners,
            route_tables,
            clusters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_match_like_envoy() {
        assert!(domain_match("*", "a.b"));
        assert!(domain_match("*.example.com", "a.example.com"));
        assert!(domain_match("*.example.com", "a.b.example.com"));
        assert!(!domain_match("*.example.com", "example.com"));
        assert!(domain_match("example.com", "example.com"));
        assert!(!domain_match("example.com", "www.example.com"));
    }

    #[test]
    fn matchers() {
        let re = Matcher::build(&StringMatcher::Regex("/api/v[0-9]+".into())).unwrap();
        assert!(re.matches("/api/v2", false));
        assert!(
            !re.matches("/api/v2/x", false),
            "regexes match the whole value"
        );
        let p = Matcher::build(&StringMatcher::Prefix("/API".into())).unwrap();
        assert!(p.matches("/api/x", true));
        assert!(!p.matches("/api/x", false));
    }
}

#[cfg(test)]
mod rewrite_tests {
    #[test]
    fn envoy_group_references_become_regex_crate_ones() {
        assert_eq!(
            super::envoy_groups_to_regex(r"/v2/\1/x/\12"),
            "/v2/${1}/x/${12}"
        );
        let re = regex::Regex::new("^/api/v1/(.*)$").unwrap();
        assert_eq!(
            re.replace_all(
                "/api/v1/items",
                super::envoy_groups_to_regex(r"/v2/\1").as_str()
            ),
            "/v2/items"
        );
    }
}
