//! Every resource type survives its wire form: what is encoded decodes to an equal value.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cluster::*;
use crate::listener::*;
use crate::node::Interception;
use crate::route::*;
use crate::secret::Pem;
use crate::*;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let wire = serde_json::to_string(value).expect("encodes");
    let back: T = serde_json::from_str(&wire).expect("decodes");
    assert_eq!(&back, value, "wire form: {wire}");
}

fn weighted(cluster: &str) -> WeightedCluster {
    WeightedCluster {
        cluster: cluster.into(),
        weight: 90,
        request_headers: HeaderOps {
            set: vec![("x-a".into(), "1".into())],
            add: vec![("x-b".into(), "2".into())],
            remove: vec!["x-c".into()],
        },
        response_headers: HeaderOps::default(),
    }
}

fn listener() -> Listener {
    Listener {
        name: "0.0.0.0_8443".into(),
        address: "0.0.0.0".into(),
        bind_port: 8443,
        gateway_port: 443,
        outbound: false,
        bind_to_port: true,
        capture: None,
        servers: vec![
            ServerChain {
                source: "istio-system/gw#0".into(),
                hosts: vec!["*.example.com".into()],
                protocol: ServerProtocol::Https,
                tls: Some(TlsContext {
                    mode: TlsMode::Mutual,
                    certificate: "kubernetes://istio-system/cert".into(),
                    client_ca: Some("kubernetes://istio-system/cert-cacert".into()),
                    min_version: Some(TlsVersion::Tls12),
                    max_version: Some(TlsVersion::Tls13),
                    cipher_suites: CipherSuite::ALL.to_vec(),
                    alpn: vec!["h2".into(), "http/1.1".into()],
                }),
                https_redirect: false,
                route_table: "https.443.https.gw.istio-system".into(),
                tcp_routes: vec![],
                postgres: false,
            },
            ServerChain {
                source: "istio-system/gw#1".into(),
                hosts: vec!["db.example.com".into()],
                protocol: ServerProtocol::TlsPassthrough,
                tls: None,
                https_redirect: true,
                route_table: String::new(),
                tcp_routes: vec![L4Route {
                    name: "db/pg#tls[0]".into(),
                    sni_hosts: vec!["db.example.com".into()],
                    destination_subnets: vec!["10.0.0.0/8".into()],
                    destinations: vec![weighted("outbound|5432||pg.db.svc.cluster.local")],
                }],
                postgres: true,
            },
        ],
    }
}

fn route_table() -> RouteTable {
    let any = StringMatcher::Regex("/v[0-9]+".into());
    RouteTable {
        virtual_hosts: vec![VirtualHost {
            name: "example.com:80".into(),
            domains: vec!["example.com".into()],
            routes: vec![
                Route {
                    name: "default/vs#0".into(),
                    matches: vec![RouteMatch {
                        uri: Some(StringMatcher::Prefix("/api".into())),
                        ignore_uri_case: true,
                        scheme: Some(StringMatcher::Exact("https".into())),
                        method: Some(any.clone()),
                        authority: Some(any.clone()),
                        headers: vec![HeaderMatcher {
                            name: "end-user".into(),
                            value: Some(StringMatcher::Exact("jason".into())),
                            invert: true,
                        }],
                        query_params: vec![QueryMatcher {
                            name: "q".into(),
                            value: None,
                        }],
                        port: Some(80),
                    }],
                    action: RouteAction::Forward(vec![weighted("c1"), weighted("c2")]),
                    request_headers: HeaderOps::default(),
                    response_headers: HeaderOps::default(),
                    rewrite: Some(Rewrite {
                        uri: Some("/".into()),
                        uri_regex: Some(("^/a(.*)$".into(), "/b\\1".into())),
                        authority: Some("other".into()),
                    }),
                    timeout_ms: Some(1500),
                    retries: Some(RetryPolicy {
                        attempts: 3,
                        per_try_timeout_ms: Some(200),
                        retry_on: RetryOn::parse("5xx,reset,connect-failure,503").0,
                    }),
                    fault: Some(Fault {
                        delay: Some((100, 50.0)),
                        abort: Some(FaultAbort {
                            http_status: Some(503),
                            grpc_status: Some(14),
                            percent: 10.0,
                        }),
                    }),
                    mirrors: vec![Mirror {
                        cluster: "c3".into(),
                        percent: 25.0,
                    }],
                    cors: Some(CorsPolicy {
                        allow_origins: vec![StringMatcher::Exact("https://a".into())],
                        allow_methods: vec!["GET".into()],
                        allow_headers: vec!["x".into()],
                        expose_headers: vec!["y".into()],
                        max_age_secs: Some(60),
                        allow_credentials: true,
                        forward_unmatched_preflights: false,
                    }),
                },
                Route {
                    name: "default/vs#1".into(),
                    matches: vec![],
                    action: RouteAction::Redirect(Redirect {
                        uri: Some("/new".into()),
                        authority: Some("b".into()),
                        scheme: Some("https".into()),
                        port: Some(8443),
                        code: 308,
                    }),
                    request_headers: HeaderOps::default(),
                    response_headers: HeaderOps::default(),
                    rewrite: None,
                    timeout_ms: None,
                    retries: None,
                    fault: None,
                    mirrors: vec![],
                    cors: None,
                },
                Route {
                    name: "default/vs#2".into(),
                    matches: vec![],
                    action: RouteAction::DirectResponse {
                        status: 418,
                        body: "teapot".into(),
                    },
                    request_headers: HeaderOps::default(),
                    response_headers: HeaderOps::default(),
                    rewrite: None,
                    timeout_ms: None,
                    retries: None,
                    fault: None,
                    mirrors: vec![],
                    cors: None,
                },
            ],
        }],
    }
}

fn clusters() -> Vec<Cluster> {
    let keys = [
        HashKey::Header("x-user".into()),
        HashKey::Cookie {
            name: "c".into(),
            path: Some("/".into()),
            ttl_secs: Some(10),
        },
        HashKey::SourceIp,
        HashKey::QueryParameter("q".into()),
    ];
    let mut lbs = vec![
        LbPolicy::RoundRobin,
        LbPolicy::LeastRequest,
        LbPolicy::Random,
    ];
    for (i, key) in keys.into_iter().enumerate() {
        lbs.push(if i % 2 == 0 {
            LbPolicy::RingHash {
                key,
                min_ring_size: 1024,
            }
        } else {
            LbPolicy::Maglev {
                key,
                table_size: 65537,
            }
        });
    }
    lbs.into_iter()
        .enumerate()
        .map(|(i, lb)| Cluster {
            name: format!("outbound|80|v{i}|reviews.default.svc.cluster.local"),
            host: "reviews.default.svc.cluster.local".into(),
            port: 80,
            subset: Some(format!("v{i}")),
            protocol: if i % 2 == 0 {
                UpstreamProtocol::Http1
            } else {
                UpstreamProtocol::Http2
            },
            connect_timeout_ms: 10_000,
            idle_timeout_ms: 3_600_000,
            policy: ClusterPolicy {
                lb,
                circuit_breakers: CircuitBreakers::default(),
                outlier: Some(OutlierPolicy {
                    consecutive_5xx: Some(5),
                    consecutive_gateway: None,
                    consecutive_local_origin: Some(5),
                    split_local_origin: true,
                    interval_ms: 10_000,
                    base_ejection_ms: 30_000,
                    max_ejection_percent: 10,
                    min_health_percent: 0,
                }),
                locality: Some(LocalityPolicy {
                    distribute: vec![("us/*".into(), vec![("us/a".into(), 80)])],
                    failover: vec![("us".into(), "eu".into())],
                    failover_priority: vec!["topology.kubernetes.io/region".into()],
                }),
                warmup: Some((30_000, 10.0, 1.0)),
                retry_budget: Some((20.0, 3)),
            },
            connections: ConnectionSettings {
                tcp_keepalive: Some((Some(7200), Some(75), Some(9))),
                http_idle_timeout_ms: 3_600_000,
                use_client_protocol: true,
                max_requests_per_connection: 1,
                source_address: None,
            },
            tls: Some(UpstreamTls {
                mode: if i % 2 == 0 {
                    UpstreamTlsMode::Simple
                } else {
                    UpstreamTlsMode::Mutual
                },
                client_certificate: Some("file-cert:/c.pem~/k.pem".into()),
                trusted_ca: Some("file-root:/ca.pem".into()),
                sni: Some("reviews.example".into()),
                subject_alt_names: vec!["reviews.example".into()],
                insecure_skip_verify: i == 3,
                min_version: Some(TlsVersion::Tls13),
                alpn: vec!["h2".into()],
            }),
            original_destination: match i {
                1 => Some(OriginalDestination::AsSent),
                2 => Some(OriginalDestination::Loopback),
                _ => None,
            },
        })
        .collect()
}

fn secrets() -> Vec<Secret> {
    vec![
        Secret {
            name: "kubernetes://istio-system/cert".into(),
            certificate_chain: Some(Pem::Inline("-----BEGIN CERTIFICATE-----".into())),
            private_key: Some(Pem::Inline("-----BEGIN PRIVATE KEY-----".into())),
            trusted_ca: Some(Pem::Inline("-----BEGIN CERTIFICATE-----".into())),
        },
        Secret {
            name: "file-cert:/c.pem~/k.pem".into(),
            certificate_chain: Some(Pem::File("/c.pem".into())),
            private_key: Some(Pem::File("/k.pem".into())),
            trusted_ca: None,
        },
    ]
}

fn sample() -> ProxyConfig {
    let clusters = clusters();
    ProxyConfig {
        node: Node {
            id: "reviews-v1.default".into(),
            role: Role::Sidecar,
            namespace: "default".into(),
            workload_name: "reviews-v1".into(),
            labels: BTreeMap::from([("app".into(), "reviews".into())]),
            service_account: "bookinfo-reviews".into(),
            locality: Some("us/a/1".into()),
            ips: vec!["127.0.1.2".into()],
            workload: Some("workloadentry/default/reviews-v1".into()),
            trust_domain: "cluster.local".into(),
            interception: Some(Interception {
                outbound_port: 15001,
                inbound_port: 15006,
            }),
            termination_drain_ms: Some(20_000),
        },
        listeners: [
            listener(),
            Listener {
                name: "virtualOutbound".into(),
                bind_port: 15001,
                capture: Some(Capture::Outbound),
                ..listener()
            },
            Listener {
                name: "10.96.0.1_5432".into(),
                bind_to_port: false,
                ..listener()
            },
        ]
        .into_iter()
        .map(|l| (l.name.clone(), l))
        .collect(),
        route_tables: BTreeMap::from([("http.80".into(), route_table())]),
        endpoints: clusters
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    EndpointSet {
                        cluster: c.name.clone(),
                        endpoints: vec![Endpoint {
                            address: "127.0.0.1".into(),
                            port: 9080,
                            locality: Some("us/a/1".into()),
                            labels: BTreeMap::from([("k".into(), "v".into())]),
                        }],
                    },
                )
            })
            .collect(),
        clusters: clusters.into_iter().map(|c| (c.name.clone(), c)).collect(),
        secrets: secrets().into_iter().map(|s| (s.name.clone(), s)).collect(),
        access_logs: vec![AccessLog {
            path: "/dev/stdout".into(),
            json: true,
            filter: Some(crate::expr::Expr::Compare(
                crate::Comparison::Ge,
                Box::new(crate::expr::Expr::Attribute(
                    crate::expr::Attribute::ResponseCode,
                )),
                Box::new(crate::expr::Expr::Literal(crate::expr::Value::Int(400))),
            )),
            mode: crate::Mode::Server,
            format: Some(crate::log_format::LogFormat::Labels(vec![(
                "code".into(),
                crate::log_format::parse("%RESPONSE_CODE%").unwrap(),
            )])),
            otel: Some(crate::OtelLogs {
                collector: "otel-collector.observability:4317".into(),
                log_name: "mesh".into(),
                labels: vec![(
                    "code".into(),
                    crate::log_format::parse("%RESPONSE_CODE%").unwrap(),
                )],
            }),
        }],
        authorization: vec![authorization()],
        ext_authz: Some(crate::authorization::ExtAuthz {
            provider: "authorizer".into(),
            address: "authz.security:9000".into(),
            grpc: true,
            path_prefix: "/check".into(),
            timeout_ms: 2000,
            fail_open: true,
            status_on_error: 503,
            include_request_headers: vec![crate::authorization::Pattern::parse("x-user*")],
            include_additional_headers: vec![("x-from".into(), "mesh".into())],
            headers_to_upstream_on_allow: vec![crate::authorization::Pattern::parse("x-ext")],
            headers_to_downstream_on_deny: vec![],
        }),
        http: HttpOptions {
            path_normalization: PathNormalization::DecodeAndMergeSlashes,
            num_trusted_proxies: 2,
        },
        request_authentication: vec![crate::jwt::JwtRule {
            policy: "istio-system/auth".into(),
            issuer: "https://auth.example.test".into(),
            audiences: vec!["shop".into()],
            jwks: crate::jwt::Jwks::Remote {
                uri: "https://auth.example.test/jwks".into(),
                timeout_ms: 5000,
                refresh_seconds: 300,
            },
            from_headers: vec![("authorization".into(), "Bearer ".into())],
            from_params: vec!["access_token".into()],
            from_cookies: vec!["session".into()],
            output_payload_to_header: Some("x-jwt".into()),
            output_claim_to_headers: vec![("x-sub".into(), "sub".into())],
            forward_original_token: true,
        }],
        names: Some(crate::dns::NameTable {
            hosts: BTreeMap::from([
                ("reviews".into(), vec!["10.96.0.12".into()]),
                (
                    "api.example.com".into(),
                    vec!["240.240.1.7".into(), "2001:db8::7".into()],
                ),
            ]),
        }),
        tracing: Some(crate::trace::Tracing {
            collector: "otel-collector.observability:4318".into(),
            protocol: crate::trace::Protocol::OtlpHttp,
            path: "/v1/traces".into(),
            sampling: 12.5,
            disable_span_reporting: true,
            mode: crate::Mode::Client,
            tags: BTreeMap::from([("team".into(), "platform".into())]),
            header_tags: BTreeMap::from([("client".into(), ("x-client".into(), "none".into()))]),
            environment_tags: BTreeMap::from([("zone".into(), ("ZONE".into(), "".into()))]),
        }),
        metrics: vec![crate::metric::MetricOverride {
            metric: crate::metric::Metric::RequestCount,
            inbound: true,
            disabled: false,
            tags: vec![
                crate::metric::TagOverride {
                    name: "request_host".into(),
                    value: Some(crate::expr::Expr::Attribute(
                        crate::expr::Attribute::RequestHost,
                    )),
                },
                crate::metric::TagOverride {
                    name: "destination_canonical_revision".into(),
                    value: None,
                },
            ],
        }],
    }
}

fn authorization() -> crate::authorization::AuthorizationPolicy {
    use crate::authorization::*;
    let f = |v: &[&str]| Field {
        values: v.iter().map(|s| Pattern::parse(s)).collect(),
        not_values: vec![Pattern::Any],
    };
    let keys = [
        ConditionKey::RequestHeader("x-a".into()),
        ConditionKey::SourceIp,
        ConditionKey::RemoteIp,
        ConditionKey::SourceNamespace,
        ConditionKey::SourcePrincipal,
        ConditionKey::DestinationIp,
        ConditionKey::DestinationPort,
        ConditionKey::ConnectionSni,
        ConditionKey::RequestAuth("request.auth.principal".into()),
    ];
    AuthorizationPolicy {
        name: "istio-system/p".into(),
        action: AuthzAction::Deny,
        rules: vec![AuthzRule {
            from: vec![AuthzSource {
                principals: f(&["cluster.local/ns/default/sa/sleep", "a*", "*b"]),
                request_principals: f(&["*"]),
                namespaces: f(&["default"]),
                service_accounts: f(&["*/ns/default/sa/sleep"]),
                trust_domains: f(&["cluster.local/*"]),
                ip_blocks: Field {
                    values: vec!["10.0.0.0/8".into()],
                    not_values: vec!["10.1.2.3".into()],
                },
                remote_ip_blocks: Field::default(),
            }],
            to: vec![AuthzOperation {
                hosts: f(&["*.example.com"]),
                ports: Field {
                    values: vec![443],
                    not_values: vec![80],
                },
                methods: f(&["GET"]),
                paths: f(&["/admin*"]),
            }],
            when: keys
                .into_iter()
                .map(|key| AuthzCondition {
                    key,
                    values: vec![Pattern::parse("v")],
                    not_values: vec![],
                })
                .collect(),
        }],
    }
}

#[test]
fn every_resource_type_round_trips() {
    let config = sample();
    round_trip(&config.node);
    for l in config.listeners.values() {
        round_trip(l);
    }
    for r in config.route_tables.values() {
        round_trip(r);
    }
    for c in config.clusters.values() {
        round_trip(c);
    }
    for e in config.endpoints.values() {
        round_trip(e);
    }
    for s in config.secrets.values() {
        round_trip(s);
    }
    for p in &config.authorization {
        round_trip(p);
    }
    round_trip(&config);
    for r in [
        ResourceType::Listener,
        ResourceType::RouteTable,
        ResourceType::Cluster,
        ResourceType::EndpointSet,
        ResourceType::Secret,
    ] {
        round_trip(&r);
    }
}

#[test]
fn keys_live_only_in_secrets_and_are_redacted() {
    let config = sample();
    let wire = serde_json::to_string(&config).unwrap();
    assert_eq!(wire.matches("BEGIN PRIVATE KEY").count(), 1);
    let shown = serde_json::to_string(&config.redacted()).unwrap();
    assert!(!shown.contains("BEGIN PRIVATE KEY"), "{shown}");
    assert!(shown.contains("[redacted 27 bytes]"));
    // File paths are not secret.
    assert!(shown.contains("/k.pem"));
}

#[test]
fn retry_conditions_parse_into_flags_and_codes() {
    let (on, unknown) = RetryOn::parse("5xx, gateway-error,503,retriable-4xx,bogus");
    assert_eq!(unknown, ["bogus"]);
    assert!(on.has(RetryOn::SERVER_ERROR) && on.has(RetryOn::GATEWAY_ERROR));
    assert!(on.has(RetryOn::RETRIABLE_STATUS_CODES));
    assert!(!on.has(RetryOn::RESET));
    assert!(on.retries_status(500) && on.retries_status(409));
    assert!(!on.retries_status(404));
    let (codes, _) = RetryOn::parse("retriable-status-codes,418");
    assert!(codes.retries_status(418) && !codes.retries_status(500));
    let err = serde_json::from_str::<RetryOn>(r#"["5xx","nope"]"#).unwrap_err();
    assert!(err.to_string().contains("nope"));
}

#[test]
fn cipher_suites_by_openssl_name() {
    for c in CipherSuite::ALL {
        assert_eq!(CipherSuite::from_openssl_name(c.openssl_name()), Some(c));
    }
    assert_eq!(
        CipherSuite::from_openssl_name("ecdhe-rsa-aes128-gcm-sha256"),
        Some(CipherSuite::EcdheRsaAes128GcmSha256)
    );
    assert_eq!(CipherSuite::from_openssl_name("AES128-SHA"), None);
}

#[test]
fn path_templates_match_segments() {
    use crate::authorization::Pattern;
    let t = |template: &str, path: &str| Pattern::parse(template).matches(path, false);
    assert!(t("/api/{*}/items", "/api/v1/items"));
    assert!(!t("/api/{*}/items", "/api/v1/v2/items"));
    assert!(
        !t("/api/{*}/items", "/api//items"),
        "{{*}} is one non-empty segment"
    );
    assert!(t("/api/{**}", "/api/v1/items/7"));
    assert!(t("/api/{**}", "/api/"));
    assert!(!t("/api/{**}", "/apiary/x"));
    assert!(t("/{*}/admin/{**}", "/shop/admin/users/3"));
    assert!(!t("/{*}/admin/{**}", "/shop/public/admin"));
    assert!(matches!(
        crate::authorization::Pattern::parse("/a/{*}"),
        crate::authorization::Pattern::PathTemplate(_)
    ));
}
