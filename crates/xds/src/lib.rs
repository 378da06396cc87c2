//! The discovery protocol between `meshwork control` and its proxies: xDS's aggregated
//! stream in shape (type URL, version, nonce, ACK and NACK), carrying meshwork's own
//! per-proxy resources as JSON. Both ends encode and decode through [`encode`] and
//! [`decode`], so what a proxy applies is exactly what the control plane compiled.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use meshwork_resources::{AccessLog, ProxyConfig, authorization::AuthorizationPolicy};

/// The generated protocol messages and services.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("meshwork.discovery.v1");
}

pub use proto::{DiscoveryRequest, DiscoveryResponse, Resource};

/// The resource types of the stream, in the order a push sends them: what a resource
/// refers to arrives before it (secrets and endpoints before clusters' users, route
/// tables before the listeners that name them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TypeUrl {
    /// The proxy's identity as the control plane resolved it (one resource, `node`).
    Node,
    /// Certificates, keys and CAs.
    Secret,
    /// Upstream clusters.
    Cluster,
    /// Endpoint sets, by cluster.
    EndpointSet,
    /// Route tables.
    RouteTable,
    /// Listeners.
    Listener,
    /// Access log and authorization (one resource, `policy`).
    Policy,
}

impl TypeUrl {
    /// Every type, in push order.
    pub const ALL: [TypeUrl; 7] = [
        TypeUrl::Node,
        TypeUrl::Secret,
        TypeUrl::Cluster,
        TypeUrl::EndpointSet,
        TypeUrl::RouteTable,
        TypeUrl::Listener,
        TypeUrl::Policy,
    ];

    /// The type URL on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TypeUrl::Node => "type.meshwork.dev/meshwork.v1.Node",
            TypeUrl::Secret => "type.meshwork.dev/meshwork.v1.Secret",
            TypeUrl::Cluster => "type.meshwork.dev/meshwork.v1.Cluster",
            TypeUrl::EndpointSet => "type.meshwork.dev/meshwork.v1.EndpointSet",
            TypeUrl::RouteTable => "type.meshwork.dev/meshwork.v1.RouteTable",
            TypeUrl::Listener => "type.meshwork.dev/meshwork.v1.Listener",
            TypeUrl::Policy => "type.meshwork.dev/meshwork.v1.Policy",
        }
    }

    /// The type for a URL.
    pub fn parse(url: &str) -> Option<TypeUrl> {
        TypeUrl::ALL.into_iter().find(|t| t.as_str() == url)
    }

    /// Envoy's short name, as `proxy-status` prints it (`CDS`, `LDS`; `NDS` and `PDS`
    /// for the node and policy types meshwork adds).
    pub fn short(self) -> &'static str {
        match self {
            TypeUrl::Node => "NDS",
            TypeUrl::Secret => "SDS",
            TypeUrl::Cluster => "CDS",
            TypeUrl::EndpointSet => "EDS",
            TypeUrl::RouteTable => "RDS",
            TypeUrl::Listener => "LDS",
            TypeUrl::Policy => "PDS",
        }
    }

    /// The data-plane resource kind of this type, where it is one.
    pub fn resource_type(self) -> Option<meshwork_resources::ResourceType> {
        use meshwork_resources::ResourceType as R;
        match self {
            TypeUrl::Secret => Some(R::Secret),
            TypeUrl::Cluster => Some(R::Cluster),
            TypeUrl::EndpointSet => Some(R::EndpointSet),
            TypeUrl::RouteTable => Some(R::RouteTable),
            TypeUrl::Listener => Some(R::Listener),
            TypeUrl::Node | TypeUrl::Policy => None,
        }
    }
}

impl std::fmt::Display for TypeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The proxy-wide settings carried by the [`TypeUrl::Policy`] type.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// The access log, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
    /// The AuthorizationPolicies of the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization: Vec<AuthorizationPolicy>,
}

fn named<T: serde::Serialize>(map: &BTreeMap<String, T>) -> Vec<Resource> {
    map.iter()
        .map(|(name, value)| Resource {
            name: name.clone(),
            body: serde_json::to_vec(value)
                .expect("resources always serialize")
                .into(),
        })
        .collect()
}

/// A config as the resources of each type, by name, ready to send.
pub fn encode(config: &ProxyConfig) -> BTreeMap<TypeUrl, Vec<Resource>> {
    let one = |name: &str, body: Vec<u8>| {
        vec![Resource {
            name: name.into(),
            body: body.into(),
        }]
    };
    let policy = Policy {
        access_log: config.access_log.clone(),
        authorization: config.authorization.clone(),
    };
    BTreeMap::from([
        (
            TypeUrl::Node,
            one(
                "node",
                serde_json::to_vec(&config.node).expect("resources always serialize"),
            ),
        ),
        (TypeUrl::Secret, named(&config.secrets)),
        (TypeUrl::Cluster, named(&config.clusters)),
        (TypeUrl::EndpointSet, named(&config.endpoints)),
        (TypeUrl::RouteTable, named(&config.route_tables)),
        (TypeUrl::Listener, named(&config.listeners)),
        (
            TypeUrl::Policy,
            one(
                "policy",
                serde_json::to_vec(&policy).expect("resources always serialize"),
            ),
        ),
    ])
}

/// A resource that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("{type_url} {name}: {reason}")]
pub struct DecodeError {
    /// Its type.
    pub type_url: TypeUrl,
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

fn decode_named<T: serde::de::DeserializeOwned>(
    type_url: TypeUrl,
    resources: &[Resource],
) -> Result<BTreeMap<String, T>, DecodeError> {
    resources
        .iter()
        .map(|r| {
            serde_json::from_slice(&r.body)
                .map(|v| (r.name.clone(), v))
                .map_err(|e| DecodeError {
                    type_url,
                    name: r.name.clone(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

fn decode_one<T: serde::de::DeserializeOwned + Default>(
    type_url: TypeUrl,
    resources: &[Resource],
) -> Result<T, DecodeError> {
    match resources {
        [] => Ok(T::default()),
        [r] => serde_json::from_slice(&r.body).map_err(|e| DecodeError {
            type_url,
            name: r.name.clone(),
            reason: e.to_string(),
        }),
        [_, extra, ..] => Err(DecodeError {
            type_url,
            name: extra.name.clone(),
            reason: "this type has one resource; more were sent".into(),
        }),
    }
}

/// Replaces the resources of one type in `config` with `resources` (state of the world:
/// a resource not sent is removed). On error `config` is unchanged.
pub fn decode(
    config: &mut ProxyConfig,
    type_url: TypeUrl,
    resources: &[Resource],
) -> Result<(), DecodeError> {
    match type_url {
        TypeUrl::Node => config.node = decode_one(type_url, resources)?,
        TypeUrl::Secret => config.secrets = decode_named(type_url, resources)?,
        TypeUrl::Cluster => config.clusters = decode_named(type_url, resources)?,
        TypeUrl::EndpointSet => config.endpoints = decode_named(type_url, resources)?,
        TypeUrl::RouteTable => config.route_tables = decode_named(type_url, resources)?,
        TypeUrl::Listener => config.listeners = decode_named(type_url, resources)?,
        TypeUrl::Policy => {
            let p: Policy = decode_one(type_url, resources)?;
            config.access_log = p.access_log;
            config.authorization = p.authorization;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_resources::{EndpointSet, Node, Role};

    fn sample() -> ProxyConfig {
        let mut c = ProxyConfig {
            node: Node {
                id: "reviews-v1.default".into(),
                role: Role::Sidecar,
                namespace: "default".into(),
                ..Node::default()
            },
            ..ProxyConfig::default()
        };
        c.endpoints.insert(
            "outbound|9080||reviews.default.svc.cluster.local".into(),
            EndpointSet::default(),
        );
        c.access_log = Some(AccessLog {
            path: "/dev/stdout".into(),
            json: true,
            filter: None,
        });
        c
    }

    #[test]
    fn every_type_round_trips() {
        let config = sample();
        let wire = encode(&config);
        assert_eq!(wire.len(), TypeUrl::ALL.len());
        let mut back = ProxyConfig::default();
        for (t, resources) in &wire {
            decode(&mut back, *t, resources).expect("decodes");
        }
        assert_eq!(back, config);
    }

    #[test]
    fn a_type_replaces_the_old_set_and_a_bad_body_changes_nothing() {
        let mut config = sample();
        decode(&mut config, TypeUrl::EndpointSet, &[]).expect("empty is fine");
        assert!(config.endpoints.is_empty());
        let before = config.clone();
        let bad = [Resource {
            name: "x".into(),
            body: b"{not json".to_vec().into(),
        }];
        let err = decode(&mut config, TypeUrl::Cluster, &bad).expect_err("rejected");
        assert_eq!(err.name, "x");
        assert_eq!(config, before);
        let two = [
            Resource {
                name: "a".into(),
                body: b"{}".to_vec().into(),
            },
            Resource {
                name: "b".into(),
                body: b"{}".to_vec().into(),
            },
        ];
        assert!(decode(&mut config, TypeUrl::Policy, &two).is_err());
    }

    #[test]
    fn type_urls_parse_back() {
        for t in TypeUrl::ALL {
            assert_eq!(TypeUrl::parse(t.as_str()), Some(t));
        }
        assert_eq!(TypeUrl::parse("type.googleapis.com/x"), None);
    }
}
