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
    /// The access logs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logs: Vec<AccessLog>,
    /// The AuthorizationPolicies of the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization: Vec<AuthorizationPolicy>,
    /// The RequestAuthentication rules of the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_authentication: Vec<meshwork_resources::jwt::JwtRule>,
    /// The external authorizer of its CUSTOM policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_authz: Option<meshwork_resources::authorization::ExtAuthz>,
    /// What the DNS proxy answers for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<meshwork_resources::dns::NameTable>,
    /// Tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<meshwork_resources::trace::Tracing>,
    /// How the standard metrics differ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<meshwork_resources::metric::MetricOverride>,
    /// How requests are read.
    #[serde(default)]
    pub http: meshwork_resources::HttpOptions,
}

/// Bodies at least this large are sent deflated.
pub const DEFLATE_FROM: usize = 4096;

/// The most a deflated body may inflate to.
pub const MAX_BODY: usize = 256 * 1024 * 1024;

/// A resource with its JSON body, deflated when it is large.
fn resource(name: String, json: Vec<u8>) -> Resource {
    if json.len() >= DEFLATE_FROM {
        Resource {
            name,
            body: miniz_oxide::deflate::compress_to_vec(&json, 3).into(),
            encoding: "deflate".into(),
        }
    } else {
        Resource {
            name,
            body: json.into(),
            encoding: String::new(),
        }
    }
}

fn named<T: serde::Serialize>(map: &BTreeMap<String, T>) -> Vec<Resource> {
    map.iter()
        .map(|(name, value)| {
            resource(
                name.clone(),
                serde_json::to_vec(value).expect("resources always serialize"),
            )
        })
        .collect()
}

/// Splits a type's resources into the bodies of several responses, each at most about
/// `max` bytes (a single larger resource goes alone).
pub fn chunks(resources: Vec<Resource>, max: usize) -> Vec<Vec<Resource>> {
    let mut out: Vec<Vec<Resource>> = vec![Vec::new()];
    let mut size = 0;
    for r in resources {
        let len = r.body.len() + r.name.len();
        if size + len > max && !out.last().is_some_and(Vec::is_empty) {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        out.last_mut().expect("one chunk at least").push(r);
    }
    out
}

/// A resource's JSON, inflated when it was deflated.
fn json_of(r: &Resource) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    match r.encoding.as_str() {
        "" => Ok(std::borrow::Cow::Borrowed(&r.body[..])),
        "deflate" => miniz_oxide::inflate::decompress_to_vec_with_limit(&r.body, MAX_BODY)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| format!("cannot inflate: {e:?}")),
        other => Err(format!("unknown encoding {other:?}")),
    }
}

/// A config as the resources of each type, by name, ready to send.
pub fn encode(config: &ProxyConfig) -> BTreeMap<TypeUrl, Vec<Resource>> {
    let one = |name: &str, body: Vec<u8>| vec![resource(name.into(), body)];
    let policy = Policy {
        access_logs: config.access_logs.clone(),
        authorization: config.authorization.clone(),
        request_authentication: config.request_authentication.clone(),
        ext_authz: config.ext_authz.clone(),
        names: config.names.clone(),
        tracing: config.tracing.clone(),
        metrics: config.metrics.clone(),
        http: config.http.clone(),
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
            let error = |reason: String| DecodeError {
                type_url,
                name: r.name.clone(),
                reason,
            };
            let json = json_of(r).map_err(error)?;
            serde_json::from_slice(&json)
                .map(|v| (r.name.clone(), v))
                .map_err(|e| error(e.to_string()))
        })
        .collect()
}

fn decode_one<T: serde::de::DeserializeOwned + Default>(
    type_url: TypeUrl,
    resources: &[Resource],
) -> Result<T, DecodeError> {
    match resources {
        [] => Ok(T::default()),
        [r] => {
            let error = |reason: String| DecodeError {
                type_url,
                name: r.name.clone(),
                reason,
            };
            let json = json_of(r).map_err(error)?;
            serde_json::from_slice(&json).map_err(|e| error(e.to_string()))
        }
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
            config.access_logs = p.access_logs;
            config.authorization = p.authorization;
            config.request_authentication = p.request_authentication;
            config.ext_authz = p.ext_authz;
            config.names = p.names;
            config.tracing = p.tracing;
            config.metrics = p.metrics;
            config.http = p.http;
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
        c.access_logs = vec![AccessLog {
            path: "/dev/stdout".into(),
            json: true,
            filter: None,
            mode: meshwork_resources::Mode::Server,
            format: None,
            otel: None,
        }];
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
            encoding: String::new(),
        }];
        let err = decode(&mut config, TypeUrl::Cluster, &bad).expect_err("rejected");
        assert_eq!(err.name, "x");
        assert_eq!(config, before);
        let two = [
            Resource {
                name: "a".into(),
                body: b"{}".to_vec().into(),
                encoding: String::new(),
            },
            Resource {
                name: "b".into(),
                body: b"{}".to_vec().into(),
                encoding: String::new(),
            },
        ];
        assert!(decode(&mut config, TypeUrl::Policy, &two).is_err());
    }

    #[test]
    fn large_bodies_are_deflated_and_inflate_back() {
        let mut config = sample();
        for i in 0..200 {
            config.endpoints.insert(
                format!("outbound|9080||svc-{i}.default.svc.cluster.local"),
                EndpointSet {
                    cluster: format!("outbound|9080||svc-{i}.default.svc.cluster.local"),
                    endpoints: vec![],
                },
            );
        }
        config.route_tables.insert(
            "9080".into(),
            serde_json::from_value(serde_json::json!({
                "virtual_hosts": (0..300).map(|i| serde_json::json!({
                    "name": format!("svc-{i}.default.svc.cluster.local:9080"),
                    "domains": [format!("svc-{i}"), format!("svc-{i}.default")],
                    "routes": [],
                })).collect::<Vec<_>>()
            }))
            .unwrap(),
        );
        let wire = encode(&config);
        let table = &wire[&TypeUrl::RouteTable][0];
        assert_eq!(table.encoding, "deflate");
        let json = serde_json::to_vec(&config.route_tables["9080"]).unwrap();
        assert!(
            table.body.len() * 5 < json.len(),
            "{} of {}",
            table.body.len(),
            json.len()
        );
        assert_eq!(
            wire[&TypeUrl::EndpointSet][0].encoding,
            "",
            "small bodies stay JSON"
        );
        let mut back = ProxyConfig::default();
        for (t, resources) in &wire {
            decode(&mut back, *t, resources).expect("decodes");
        }
        assert_eq!(back, config);
        // A body that does not inflate, or an unknown encoding, is a decode error.
        let bad = Resource {
            name: "9080".into(),
            body: b"not deflate at all".to_vec().into(),
            encoding: "deflate".into(),
        };
        assert!(decode(&mut back, TypeUrl::RouteTable, &[bad]).is_err());
        let odd = Resource {
            name: "9080".into(),
            body: b"{}".to_vec().into(),
            encoding: "zstd".into(),
        };
        let err = decode(&mut back, TypeUrl::RouteTable, &[odd]).unwrap_err();
        assert!(err.reason.contains("unknown encoding"), "{err}");
    }

    #[test]
    fn chunks_bound_each_message_and_keep_every_resource_in_order() {
        let resources: Vec<Resource> = (0..10)
            .map(|i| Resource {
                name: format!("r{i}"),
                body: vec![b'x'; if i == 4 { 500 } else { 40 }].into(),
                encoding: String::new(),
            })
            .collect();
        let parts = chunks(resources.clone(), 100);
        assert!(parts.iter().all(|p| !p.is_empty()));
        for p in &parts {
            let size: usize = p.iter().map(|r| r.body.len() + r.name.len()).sum();
            assert!(size <= 100 || p.len() == 1, "{size}");
        }
        let flat: Vec<Resource> = parts.into_iter().flatten().collect();
        assert_eq!(flat, resources);
        assert_eq!(chunks(Vec::new(), 100), vec![Vec::<Resource>::new()]);
    }

    #[test]
    fn type_urls_parse_back() {
        for t in TypeUrl::ALL {
            assert_eq!(TypeUrl::parse(t.as_str()), Some(t));
        }
        assert_eq!(TypeUrl::parse("type.googleapis.com/x"), None);
    }
}
