//! Per-resource updates: what is kept, what is rebuilt, what is rejected alone.

use std::sync::Arc;

use meshwork_resources::cluster::{
    CircuitBreakers, Cluster, ClusterPolicy, ConnectionSettings, LbPolicy, OutlierPolicy,
    UpstreamProtocol,
};
use meshwork_resources::listener::{Listener, ServerChain, ServerProtocol, TlsContext, TlsMode};
use meshwork_resources::route::{
    Route, RouteAction, RouteMatch, RouteTable, StringMatcher, VirtualHost,
};
use meshwork_resources::secret::Pem;
use meshwork_resources::{Endpoint, EndpointSet, ProxyConfig, ResourceType, Secret};

use super::*;
use crate::balancer::Outcome;

fn endpoint(last: u8) -> Endpoint {
    Endpoint {
        address: format!("127.0.0.{last}"),
        port: 9000,
        ..Default::default()
    }
}

pub(crate) fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        host: "app.default.svc.cluster.local".into(),
        port: 80,
        subset: None,
        protocol: UpstreamProtocol::Http1,
        connect_timeout_ms: 1000,
        idle_timeout_ms: 1000,
        policy: ClusterPolicy {
            lb: LbPolicy::RoundRobin,
            circuit_breakers: CircuitBreakers::default(),
            outlier: Some(OutlierPolicy {
                consecutive_5xx: Some(1),
                consecutive_gateway: None,
                consecutive_local_origin: None,
                split_local_origin: false,
                interval_ms: 1000,
                base_ejection_ms: 600_000,
                max_ejection_percent: 100,
                min_health_percent: 0,
            }),
            locality: None,
            warmup: None,
            retry_budget: None,
        },
        connections: ConnectionSettings {
            tcp_keepalive: None,
            http_idle_timeout_ms: 1000,
            use_client_protocol: false,
            max_requests_per_connection: 0,
            source_address: None,
        },
        tls: None,
        original_destination: None,
    }
}

fn route_table(regex: &str) -> RouteTable {
    RouteTable {
        virtual_hosts: vec![VirtualHost {
            name: "*:80".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "r".into(),
                matches: vec![RouteMatch {
                    uri: Some(StringMatcher::Regex(regex.into())),
                    ..Default::default()
                }],
                action: RouteAction::DirectResponse {
                    status: 200,
                    body: String::new(),
                },
                request_headers: Default::default(),
                response_headers: Default::default(),
                rewrite: None,
                timeout_ms: None,
                retries: None,
                fault: None,
                mirrors: vec![],
                cors: None,
            }],
        }],
    }
}

fn config(endpoints: &[u8]) -> ProxyConfig {
    let mut c = ProxyConfig::default();
    for name in ["a", "b"] {
        c.clusters.insert(name.into(), cluster(name));
        c.endpoints.insert(
            name.into(),
            EndpointSet {
                cluster: name.into(),
                endpoints: endpoints.iter().map(|e| endpoint(*e)).collect(),
            },
        );
    }
    c.route_tables
        .insert("http.80".into(), route_table("/v[0-9]+"));
    c
}

fn apply_to(config: ProxyConfig, previous: &Runtime) -> (Runtime, Vec<Rejection>) {
    apply(config, previous, &Upstreams::default())
}

#[test]
fn an_unchanged_cluster_keeps_its_state_and_a_changed_one_keeps_its_endpoints_health() {
    let (first, rejected) = apply_to(config(&[1, 2]), &Runtime::default());
    assert!(rejected.is_empty());
    let a = first.clusters["a"].clone();
    a.balancer.report(0, Outcome::Status(503));
    assert!(a.balancer.ejected(0), "one 5xx ejects endpoint 0");
    a.balancer
        .counters
        .active_requests
        .store(7, std::sync::atomic::Ordering::Relaxed);

    // A change elsewhere (the route table) keeps both clusters as they are.
    let mut next = config(&[1, 2]);
    next.route_tables
        .insert("http.80".into(), route_table("/w[0-9]+"));
    let (second, _) = apply_to(next, &first);
    assert!(Arc::ptr_eq(&second.clusters["a"], &a));

    // An endpoint-only change: endpoint 1 stays ejected with its count, 3 joins fresh,
    // and the circuit-breaker counters carry over.
    let (third, _) = apply_to(config(&[1, 3]), &second);
    let b = &third.clusters["a"].balancer;
    assert!(!Arc::ptr_eq(&third.clusters["a"], &a));
    let one = b
        .endpoints
        .iter()
        .position(|e| e.endpoint == endpoint(1))
        .unwrap();
    let three = b
        .endpoints
        .iter()
        .position(|e| e.endpoint == endpoint(3))
        .unwrap();
    assert!(b.ejected(one));
    assert_eq!(b.endpoints[one].ejections(), 1);
    assert!(!b.ejected(three));
    assert_eq!(
        b.counters
            .active_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        7
    );

    // A policy change rebuilds the balancer, and the endpoint is still ejected.
    let mut policy = config(&[1, 3]);
    policy.clusters.get_mut("a").unwrap().connect_timeout_ms = 5;
    let (fourth, _) = apply_to(policy, &third);
    let b = &fourth.clusters["a"].balancer;
    let one = b
        .endpoints
        .iter()
        .position(|e| e.endpoint == endpoint(1))
        .unwrap();
    assert!(b.ejected(one));
}

#[test]
fn a_bad_route_table_is_rejected_alone_and_keeps_its_previous_version() {
    let (first, _) = apply_to(config(&[1]), &Runtime::default());
    let mut bad = config(&[1]);
    bad.route_tables
        .insert("http.80".into(), route_table("(unclosed"));
    bad.route_tables
        .insert("http.81".into(), route_table("(unclosed"));
    bad.clusters.get_mut("b").unwrap().connect_timeout_ms = 42;
    let (second, rejected) = apply_to(bad, &first);
    let names: Vec<_> = rejected.iter().map(|r| (r.kind, r.name.as_str())).collect();
    assert_eq!(
        names,
        [
            (ResourceType::RouteTable, "http.80"),
            (ResourceType::RouteTable, "http.81")
        ]
    );
    assert!(rejected[0].reason.contains("route r"), "{}", rejected[0]);
    assert!(Arc::ptr_eq(
        &second.route_tables["http.80"],
        &first.route_tables["http.80"]
    ));
    assert!(
        !second.route_tables.contains_key("http.81"),
        "never had a good version"
    );
    assert_eq!(
        second.config.route_tables["http.80"],
        route_table("/v[0-9]+")
    );
    assert_eq!(
        second.clusters["b"].cluster.connect_timeout_ms, 42,
        "the rest applies"
    );
}

fn https_listener(servers: &[(&str, &str)]) -> Listener {
    Listener {
        name: "0.0.0.0_8443".into(),
        address: "0.0.0.0".into(),
        bind_port: 8443,
        gateway_port: 443,
        outbound: false,
        bind_to_port: true,
        capture: None,
        servers: servers
            .iter()
            .map(|(host, secret)| ServerChain {
                source: format!("gw#{host}"),
                hosts: vec![host.to_string()],
                protocol: ServerProtocol::Https,
                tls: Some(TlsContext {
                    mode: TlsMode::Simple,
                    certificate: secret.to_string(),
                    client_ca: None,
                    min_version: None,
                    max_version: None,
                    cipher_suites: vec![],
                    alpn: vec![],
                }),
                https_redirect: false,
                route_table: "http.80".into(),
                tcp_routes: vec![],
                postgres: false,
            })
            .collect(),
    }
}

fn cert_secret(name: &str, host: &str) -> Secret {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    Secret {
        name: name.into(),
        certificate_chain: Some(Pem::Inline(cert.pem())),
        private_key: Some(Pem::Inline(key.serialize_pem())),
        trusted_ca: None,
    }
}

#[test]
fn a_server_with_a_bad_secret_is_left_out_and_a_rotated_secret_is_swapped_in_place() {
    let mut c = config(&[1]);
    c.listeners.insert(
        "0.0.0.0_8443".into(),
        https_listener(&[("a.test", "good"), ("b.test", "bad")]),
    );
    c.secrets
        .insert("good".into(), cert_secret("good", "a.test"));
    let mut bad = cert_secret("bad", "b.test");
    bad.private_key = Some(Pem::Inline("not a key".into()));
    c.secrets.insert("bad".into(), bad);
    let (first, rejected) = apply_to(c.clone(), &Runtime::default());
    let kinds: Vec<_> = rejected.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [ResourceType::Secret, ResourceType::Listener],
        "{rejected:?}"
    );
    assert!(
        rejected[1].reason.contains("server gw#b.test"),
        "{}",
        rejected[1]
    );
    let listener = first.listeners[&"0.0.0.0:8443".parse().unwrap()].clone();
    assert_eq!(listener.servers.len(), 1, "the sibling keeps serving");
    assert_eq!(listener.servers[0].chain.hosts, ["a.test"]);

    // Fixing the bad secret brings its server back, with the listener resource unchanged.
    let mut fixed = c.clone();
    fixed
        .secrets
        .insert("bad".into(), cert_secret("bad", "b.test"));
    let (repaired, rejected) = apply_to(fixed, &first);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(
        repaired.listeners[&"0.0.0.0:8443".parse().unwrap()]
            .servers
            .len(),
        2
    );

    // Rotating the good secret swaps it into the same handle; the listener is kept.
    let handle = first.secrets["good"].0.clone();
    let before = handle.current.load_full();
    c.secrets
        .insert("good".into(), cert_secret("good", "a.test"));
    c.secrets.remove("bad");
    c.listeners
        .insert("0.0.0.0_8443".into(), https_listener(&[("a.test", "good")]));
    let (second, rejected) = apply_to(c.clone(), &first);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert!(Arc::ptr_eq(&second.secrets["good"].0, &handle));
    assert!(
        !Arc::ptr_eq(&handle.current.load_full(), &before),
        "new material"
    );
    let (third, _) = apply_to(c, &second);
    assert!(
        Arc::ptr_eq(
            &third.listeners[&"0.0.0.0:8443".parse().unwrap()],
            &second.listeners[&"0.0.0.0:8443".parse().unwrap()]
        ),
        "an unchanged listener is kept"
    );
}
