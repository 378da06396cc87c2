//! Clusters: one per service host, port and subset that a route names, with endpoints
//! from the registry filtered by the DestinationRule subset's labels.

use std::collections::BTreeMap;

use meshwork_api::duration::parse_duration;
use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::{DestinationRule, Object};

use meshwork_api::generated::networking::H2UpgradePolicy;

use crate::config::{Cluster, ConnectionSettings, UpstreamProtocol};
use crate::policy::{compile, effective};
use crate::registry::{Protocol, Registry, resolve_host};
use crate::routes::ClusterKey;

fn millis(text: Option<&String>) -> Option<u64> {
    text.and_then(|t| parse_duration(t).ok())
        .map(|d| d.as_millis() as u64)
}

/// The DestinationRule for a host: the one in the service's namespace first, then any.
fn destination_rule<'a>(
    objects: &'a [Object],
    host: &str,
    service_ns: &str,
) -> Option<&'a DestinationRule> {
    let mut rules: Vec<&DestinationRule> = objects
        .iter()
        .filter_map(|o| match o {
            Object::DestinationRule(dr) => Some(dr),
            _ => None,
        })
        .filter(|dr| {
            resolve_host(
                &dr.spec.host,
                dr.metadata.namespace.as_deref().unwrap_or_default(),
            ) == host
        })
        .collect();
    rules.sort_by_key(|dr| dr.metadata.namespace.as_deref() != Some(service_ns));
    rules.into_iter().next()
}

/// Builds the clusters for these keys.
pub fn build_clusters(
    keys: &[ClusterKey],
    objects: &[Object],
    registry: &Registry,
    mesh: &MeshConfig,
) -> BTreeMap<String, Cluster> {
    let default_connect = parse_duration(&mesh.connect_timeout)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(10_000);
    let mut out = BTreeMap::new();
    for key in keys {
        let name = key.name();
        if out.contains_key(&name) {
            continue;
        }
        let service = registry.get(&key.host);
        let ns = service.map(|s| s.namespace.as_str()).unwrap_or_default();
        let dr = destination_rule(objects, &key.host, ns);
        let subset = key
            .subset
            .as_ref()
            .and_then(|s| dr.and_then(|d| d.spec.subsets.iter().find(|x| &x.name == s)));
        let labels = subset.map(|s| s.labels.clone()).unwrap_or_default();
        let priority_keys: Vec<String> = effective(
            dr.and_then(|d| d.spec.traffic_policy.as_ref()),
            subset.and_then(|s| s.traffic_policy.as_ref()),
            key.port,
        )
        .load_balancer
        .and_then(|lb| lb.locality_lb_setting)
        .or_else(|| Some(mesh.locality_lb_setting.clone()))
        .map(|l| l.failover_priority)
        .unwrap_or_default();
        let endpoints = service
            .map(|s| {
                let mut eps: Vec<_> = s
                    .instances
                    .iter()
                    .filter(|i| i.service_port == key.port)
                    .filter(|i| labels.iter().all(|(k, v)| i.labels.get(k) == Some(v)))
                    .map(|i| {
                        let mut e = i.endpoint.clone();
                        e.labels = priority_keys
                            .iter()
                            .filter_map(|k| Some((k.clone(), i.labels.get(k)?.clone())))
                            .collect();
                        e
                    })
                    .collect();
                eps.sort();
                eps
            })
            .unwrap_or_default();
        let merged = effective(
            dr.and_then(|d| d.spec.traffic_policy.as_ref()),
            subset.and_then(|s| s.traffic_policy.as_ref()),
            key.port,
        );
        let http_pool = merged
            .connection_pool
            .as_ref()
            .and_then(|c| c.http.as_ref());
        let upgrade = match http_pool.and_then(|h| h.h2_upgrade_policy) {
            Some(H2UpgradePolicy::Upgrade) => true,
            Some(H2UpgradePolicy::DoNotUpgrade) => false,
            _ => mesh.h2_upgrade_policy == "UPGRADE",
        };
        let protocol = match service.and_then(|s| s.port(key.port)).map(|p| p.protocol) {
            Some(Protocol::Http2 | Protocol::Grpc) => UpstreamProtocol::Http2,
            Some(Protocol::Http | Protocol::Unknown) | None if upgrade => UpstreamProtocol::Http2,
            _ => UpstreamProtocol::Http1,
        };
        let keepalive = merged
            .connection_pool
            .as_ref()
            .and_then(|c| c.tcp.as_ref())
            .and_then(|t| t.tcp_keepalive.as_ref())
            .or(mesh.tcp_keepalive.as_ref())
            .map(|k| {
                let secs = |t: Option<&String>| millis(t).map(|ms| ms / 1000);
                (secs(k.time.as_ref()), secs(k.interval.as_ref()), k.probes)
            });
        let connections = ConnectionSettings {
            tcp_keepalive: keepalive,
            http_idle_timeout_ms: millis(http_pool.and_then(|h| h.idle_timeout.as_ref()))
                .unwrap_or(3_600_000),
            use_client_protocol: http_pool.and_then(|h| h.use_client_protocol) == Some(true),
            max_requests_per_connection: http_pool
                .and_then(|h| h.max_requests_per_connection)
                .filter(|n| *n > 0)
                .map_or(0, |n| n as u32),
        };
        let connect_timeout_ms = merged
            .connection_pool
            .as_ref()
            .and_then(|c| c.tcp.as_ref())
            .and_then(|t| t.connect_timeout.as_ref())
            .and_then(|t| parse_duration(t).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(default_connect);
        let idle_timeout_ms = merged
            .connection_pool
            .as_ref()
            .and_then(|c| c.tcp.as_ref())
            .and_then(|t| t.idle_timeout.as_ref())
            .and_then(|t| parse_duration(t).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(3_600_000);
        out.insert(
            name.clone(),
            Cluster {
                name,
                host: key.host.clone(),
                port: key.port,
                subset: key.subset.clone(),
                protocol,
                endpoints,
                connect_timeout_ms,
                idle_timeout_ms,
                policy: compile(&merged, Some(&mesh.locality_lb_setting)),
                connections,
            },
        );
    }
    out
}
