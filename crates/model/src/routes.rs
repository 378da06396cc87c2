//! VirtualService HTTP routes to compiled routes: matches, actions, header operations,
//! rewrites, timeouts and retries. Destinations become cluster names; the clusters
//! themselves are built in [`crate::clusters`].

use meshwork_api::duration::parse_duration;
use meshwork_api::generated::networking::{
    Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRoute, RedirectPortSelection,
    StringMatch, UnmatchedPreflights,
};

use crate::registry::{Registry, resolve_host};
use meshwork_resources::route::{
    CorsPolicy, Fault, FaultAbort, HeaderMatcher, HeaderOps, Mirror, QueryMatcher, Redirect,
    RetryOn, RetryPolicy, Rewrite, Route, RouteAction, RouteMatch, StringMatcher, WeightedCluster,
};

/// Istio's cluster name for a destination: `outbound|port|subset|host`.
pub fn cluster_name(host: &str, port: u32, subset: Option<&str>) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// A destination resolved to a service host and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterKey {
    /// FQDN host.
    pub host: String,
    /// Service port.
    pub port: u32,
    /// Subset name.
    pub subset: Option<String>,
}

impl ClusterKey {
    /// The cluster's name.
    pub fn name(&self) -> String {
        cluster_name(&self.host, self.port, self.subset.as_deref())
    }
}

/// Resolves a destination: short host names in `namespace`, the port from the destination
/// or the service's only port.
pub fn resolve_destination(
    d: &Destination,
    namespace: &str,
    registry: &Registry,
    warnings: &mut Vec<String>,
) -> ClusterKey {
    let host = resolve_host(&d.host, namespace);
    let port = match d.port.as_ref().and_then(|p| p.number) {
        Some(p) => p,
        None => match registry.get(&host).map(|s| s.ports.as_slice()) {
            Some([only]) => only.number,
            Some([first, ..]) => {
                warnings.push(format!(
                    "destination {host} has several ports and names none; using {}",
                    first.number
                ));
                first.number
            }
            _ => 80,
        },
    };
    ClusterKey {
        host,
        port,
        subset: d.subset.clone().filter(|s| !s.is_empty()),
    }
}

fn matcher(m: &StringMatch) -> Option<StringMatcher> {
    if let Some(e) = &m.exact {
        Some(StringMatcher::Exact(e.clone()))
    } else if let Some(p) = &m.prefix {
        Some(StringMatcher::Prefix(p.clone()))
    } else {
        m.regex.as_ref().map(|r| StringMatcher::Regex(r.clone()))
    }
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|(k, v)| HeaderMatcher {
            name: k.to_ascii_lowercase(),
            value: matcher(v),
            invert: false,
        })
        .collect();
    headers.extend(m.without_headers.iter().map(|(k, v)| HeaderMatcher {
        name: k.to_ascii_lowercase(),
        value: matcher(v),
        invert: true,
    }));
    RouteMatch {
        uri: m.uri.as_ref().and_then(matcher),
        ignore_uri_case: m.ignore_uri_case == Some(true),
        scheme: m.scheme.as_ref().and_then(matcher),
        method: m.method.as_ref().and_then(matcher),
        authority: m.authority.as_ref().and_then(matcher),
        headers,
        query_params: m
            .query_params
            .iter()
            .map(|(k, v)| QueryMatcher {
                name: k.clone(),
                value: matcher(v),
            })
            .collect(),
        port: m.port.filter(|p| *p != 0),
    }
}

fn header_ops(ops: Option<&HeaderOperations>) -> HeaderOps {
    let Some(ops) = ops else {
        return HeaderOps::default();
    };
    HeaderOps {
        set: ops
            .set
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        add: ops
            .add
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        remove: ops.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
    }
}

fn request_ops(h: Option<&Headers>) -> HeaderOps {
    header_ops(h.and_then(|h| h.request.as_ref()))
}

fn response_ops(h: Option<&Headers>) -> HeaderOps {
    header_ops(h.and_then(|h| h.response.as_ref()))
}

/// gRPC status names to codes.
fn grpc_code(name: &str) -> Option<u32> {
    const CODES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    CODES
        .iter()
        .position(|c| *c == name)
        .map(|i| i as u32)
        .or_else(|| name.parse().ok())
}

fn millis(text: Option<&String>) -> Option<u64> {
    text.and_then(|t| parse_duration(t).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Istio's retry policy when a route sets none: 2 attempts on connection failures,
/// refused streams and 503.
pub fn default_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        per_try_timeout_ms: None,
        retry_on: RetryOn::parse(
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,503",
        )
        .0,
    }
}

/// Where a route is compiled: for which VirtualService namespace, gateway and port.
pub struct RouteContext<'a> {
    /// The VirtualService's namespace, for short host names.
    pub namespace: &'a str,
    /// How the VirtualService names the gateway being compiled (for `match.gateways`).
    pub gateway_names: &'a [String],
    /// The Gateway port.
    pub port: u32,
    /// The services.
    pub registry: &'a Registry,
}

/// Compiles one VirtualService HTTP route for a gateway proxy. Matches naming another
/// gateway or port are dropped, and a route left with no applicable match does not apply
/// there (`None`). The clusters it needs are added to `clusters`.
pub fn compile_route(
    r: &HttpRoute,
    name: String,
    ctx: &RouteContext<'_>,
    clusters: &mut Vec<ClusterKey>,
    warnings: &mut Vec<String>,
) -> Option<Route> {
    let RouteContext {
        namespace,
        gateway_names,
        port,
        registry,
    } = *ctx;
    let applicable: Vec<&HttpMatchRequest> = r
        .match_
        .iter()
        .filter(|m| {
            (m.gateways.is_empty() || m.gateways.iter().any(|g| gateway_names.contains(g)))
                && m.port.is_none_or(|p| p == 0 || p == port)
        })
        .collect();
    if !r.match_.is_empty() && applicable.is_empty() {
        return None;
    }
    let action = if let Some(rd) = &r.redirect {
        let port = match rd.derive_port {
            Some(RedirectPortSelection::FromRequestPort) => None,
            _ => rd.port.and_then(|p| u16::try_from(p).ok()),
        };
        RouteAction::Redirect(Redirect {
            uri: rd.uri.clone(),
            authority: rd.authority.clone(),
            scheme: rd.scheme.clone(),
            port,
            code: rd
                .redirect_code
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| *c != 0)
                .unwrap_or(301),
        })
    } else if let Some(dr) = &r.direct_response {
        RouteAction::DirectResponse {
            status: dr.status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
            body: dr
                .body
                .as_ref()
                .and_then(|b| b.string.clone().or_else(|| b.bytes.clone()))
                .unwrap_or_default(),
        }
    } else {
        let single = r.route.len() == 1;
        RouteAction::Forward(
            r.route
                .iter()
                .filter_map(|d| {
                    let key =
                        resolve_destination(d.destination.as_ref()?, namespace, registry, warnings);
                    let cluster = key.name();
                    clusters.push(key);
                    let weight = match d.weight {
                        Some(w) => u32::try_from(w).unwrap_or(0),
                        None if single => 100,
                        None => 0,
                    };
                    Some(WeightedCluster {
                        cluster,
                        weight,
                        request_headers: request_ops(d.headers.as_ref()),
                        response_headers: response_ops(d.headers.as_ref()),
                    })
                })
                .collect(),
        )
    };
    let rewrite = r.rewrite.as_ref().map(|rw| Rewrite {
        uri: rw.uri.clone(),
        uri_regex: rw
            .uri_regex_rewrite
            .as_ref()
            .and_then(|x| Some((x.match_.clone()?, x.rewrite.clone()?))),
        authority: rw.authority.clone(),
    });
    let retries = match &r.retries {
        None => Some(default_retries()),
        Some(rt) if rt.attempts.unwrap_or(0) <= 0 => None,
        Some(rt) => Some(RetryPolicy {
            attempts: u32::try_from(rt.attempts.unwrap_or(0)).unwrap_or(0),
            per_try_timeout_ms: millis(rt.per_try_timeout.as_ref()),
            retry_on: match &rt.retry_on {
                Some(on) => {
                    let (on, unknown) = RetryOn::parse(on);
                    for word in unknown {
                        warnings.push(format!(
                            "route {name}: retryOn condition {word:?} is not known; it is ignored"
                        ));
                    }
                    on
                }
                None => default_retries().retry_on,
            },
        }),
    };
    let percent = |p: Option<&meshwork_api::generated::networking::Percent>,
                   legacy: Option<i32>| {
        p.and_then(|p| p.value)
            .or(legacy.map(f64::from))
            .unwrap_or(100.0)
    };
    let fault = r.fault.as_ref().map(|f| Fault {
        delay: f.delay.as_ref().and_then(|d| {
            Some((
                millis(d.fixed_delay.as_ref())?,
                percent(d.percentage.as_ref(), d.percent),
            ))
        }),
        abort: f.abort.as_ref().map(|a| FaultAbort {
            http_status: a.http_status.and_then(|s| u16::try_from(s).ok()),
            grpc_status: a.grpc_status.as_deref().and_then(grpc_code),
            percent: percent(a.percentage.as_ref(), None),
        }),
    });
    let mut mirrors = Vec::new();
    if let Some(m) = &r.mirror {
        let key = resolve_destination(m, namespace, registry, warnings);
        mirrors.push(Mirror {
            cluster: key.name(),
            percent: r
                .mirror_percentage
                .as_ref()
                .and_then(|p| p.value)
                .or(r.mirror_percent.map(f64::from))
                .unwrap_or(100.0),
        });
        clusters.push(key);
    }
    for m in &r.mirrors {
        let Some(d) = &m.destination else { continue };
        let key = resolve_destination(d, namespace, registry, warnings);
        mirrors.push(Mirror {
            cluster: key.name(),
            percent: m.percentage.as_ref().and_then(|p| p.value).unwrap_or(100.0),
        });
        clusters.push(key);
    }
    let cors = r.cors_policy.as_ref().map(|c| CorsPolicy {
        allow_origins: c
            .allow_origins
            .iter()
            .filter_map(matcher)
            .chain(
                c.allow_origin
                    .iter()
                    .map(|o| StringMatcher::Exact(o.clone())),
            )
            .collect(),
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age_secs: millis(c.max_age.as_ref()).map(|ms| ms / 1000),
        allow_credentials: c.allow_credentials == Some(true),
        forward_unmatched_preflights: c.unmatched_preflights != Some(UnmatchedPreflights::Ignore),
    });
    Some(Route {
        name,
        matches: applicable.into_iter().map(route_match).collect(),
        action,
        request_headers: request_ops(r.headers.as_ref()),
        response_headers: response_ops(r.headers.as_ref()),
        rewrite,
        timeout_ms: millis(r.timeout.as_ref()),
        retries,
        fault,
        mirrors,
        cors,
    })
}
