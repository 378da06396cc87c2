//! A table of policies and requests, with Istio's semantics.

use std::net::IpAddr;

use http::HeaderMap;
use meshwork_resources::authorization::*;

use super::*;

fn attrs<'a>(
    principal: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    headers: &'a HeaderMap,
) -> Attributes<'a> {
    Attributes {
        principal,
        source_ip: "10.1.2.3".parse::<IpAddr>().unwrap(),
        remote_ip: "10.1.2.3".parse::<IpAddr>().unwrap(),
        destination_ip: Some("127.0.0.1".parse().unwrap()),
        port: 8443,
        host: "app.example.test",
        authority: "app.example.test:8443",
        method,
        path,
        headers,
        sni: Some("app.example.test"),
        request: None,
        metadata: None,
    }
}

fn f(values: &[&str]) -> Field<Pattern> {
    Field {
        values: values.iter().map(|v| Pattern::parse(v)).collect(),
        not_values: vec![],
    }
}

fn not(values: &[&str]) -> Field<Pattern> {
    Field {
        values: vec![],
        not_values: values.iter().map(|v| Pattern::parse(v)).collect(),
    }
}

fn policy(name: &str, action: AuthzAction, rules: Vec<AuthzRule>) -> AuthorizationPolicy {
    AuthorizationPolicy {
        name: name.into(),
        action,
        rules,
    }
}

/// The one policy `p` with one rule.
fn one(action: AuthzAction, rule: AuthzRule) -> Vec<AuthorizationPolicy> {
    vec![policy("p", action, vec![rule])]
}

fn from(s: AuthzSource) -> AuthzRule {
    AuthzRule {
        from: vec![s],
        ..Default::default()
    }
}

fn to(o: AuthzOperation) -> AuthzRule {
    AuthzRule {
        to: vec![o],
        ..Default::default()
    }
}

const SLEEP: &str = "cluster.local/ns/default/sa/sleep";
const OTHER: &str = "cluster.local/ns/prod/sa/web";

#[test]
fn the_policy_table() {
    let h = HeaderMap::new();
    let mut admin = HeaderMap::new();
    admin.insert("x-role", "admin".parse().unwrap());
    let allow_sleep_get = policy(
        "default/sleep",
        AuthzAction::Allow,
        vec![AuthzRule {
            from: vec![AuthzSource {
                principals: f(&[SLEEP]),
                ..Default::default()
            }],
            to: vec![AuthzOperation {
                methods: f(&["GET"]),
                ..Default::default()
            }],
            when: vec![],
        }],
    );
    let deny_admin = policy(
        "default/no-admin",
        AuthzAction::Deny,
        vec![to(AuthzOperation {
            paths: f(&["/admin*"]),
            ..Default::default()
        })],
    );
    let allow_nothing = policy("default/allow-nothing", AuthzAction::Allow, vec![]);
    let allow_all = policy(
        "default/allow-all",
        AuthzAction::Allow,
        vec![AuthzRule::default()],
    );
    let cases: Vec<(&str, Vec<AuthorizationPolicy>, Attributes<'_>, Verdict)> = vec![
        (
            "no policy allows",
            vec![],
            attrs(None, "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "principal and method",
            vec![allow_sleep_get.clone()],
            attrs(Some(SLEEP), "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "wrong method",
            vec![allow_sleep_get.clone()],
            attrs(Some(SLEEP), "POST", "/", &h),
            Verdict::Deny(None),
        ),
        (
            "wrong principal",
            vec![allow_sleep_get.clone()],
            attrs(Some(OTHER), "GET", "/", &h),
            Verdict::Deny(None),
        ),
        (
            "no principal",
            vec![allow_sleep_get.clone()],
            attrs(None, "GET", "/", &h),
            Verdict::Deny(None),
        ),
        (
            "deny wins over allow",
            vec![allow_all.clone(), deny_admin.clone()],
            attrs(None, "GET", "/admin/x", &h),
            Verdict::Deny(Some("default/no-admin".into())),
        ),
        (
            "deny does not match",
            vec![deny_admin.clone()],
            attrs(None, "GET", "/public", &h),
            Verdict::Allow,
        ),
        (
            "an empty ALLOW denies all",
            vec![allow_nothing.clone()],
            attrs(Some(SLEEP), "GET", "/", &h),
            Verdict::Deny(None),
        ),
        (
            "an empty rule allows all",
            vec![allow_all.clone()],
            attrs(None, "DELETE", "/x", &h),
            Verdict::Allow,
        ),
        (
            "namespaces",
            one(
                AuthzAction::Allow,
                from(AuthzSource {
                    namespaces: f(&["prod"]),
                    ..Default::default()
                }),
            ),
            attrs(Some(OTHER), "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "not namespaces",
            one(
                AuthzAction::Allow,
                from(AuthzSource {
                    namespaces: not(&["prod"]),
                    ..Default::default()
                }),
            ),
            attrs(Some(OTHER), "GET", "/", &h),
            Verdict::Deny(None),
        ),
        (
            "principal prefix",
            one(
                AuthzAction::Allow,
                from(AuthzSource {
                    principals: f(&["cluster.local/ns/default/*"]),
                    ..Default::default()
                }),
            ),
            attrs(Some(SLEEP), "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "principal any needs one",
            one(
                AuthzAction::Allow,
                from(AuthzSource {
                    principals: f(&["*"]),
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Deny(None),
        ),
        (
            "ipBlocks",
            one(
                AuthzAction::Allow,
                from(AuthzSource {
                    ip_blocks: Field {
                        values: vec!["10.1.0.0/16".into()],
                        not_values: vec![],
                    },
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "notIpBlocks",
            one(
                AuthzAction::Deny,
                from(AuthzSource {
                    ip_blocks: Field {
                        values: vec![],
                        not_values: vec!["10.1.2.3".into()],
                    },
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "remoteIpBlocks",
            one(
                AuthzAction::Deny,
                from(AuthzSource {
                    remote_ip_blocks: Field {
                        values: vec!["10.0.0.0/8".into()],
                        not_values: vec![],
                    },
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Deny(Some("p".into())),
        ),
        (
            "hosts ignore case and port",
            one(
                AuthzAction::Allow,
                to(AuthzOperation {
                    hosts: f(&["APP.example.test"]),
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "host suffix",
            one(
                AuthzAction::Allow,
                to(AuthzOperation {
                    hosts: f(&["*.example.test"]),
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "notHosts",
            one(
                AuthzAction::Allow,
                to(AuthzOperation {
                    hosts: not(&["app.example.test"]),
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Deny(None),
        ),
        (
            "ports",
            one(
                AuthzAction::Allow,
                to(AuthzOperation {
                    ports: Field {
                        values: vec![8443],
                        not_values: vec![],
                    },
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "notPorts",
            one(
                AuthzAction::Deny,
                to(AuthzOperation {
                    ports: Field {
                        values: vec![],
                        not_values: vec![8443],
                    },
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "path suffix",
            one(
                AuthzAction::Deny,
                to(AuthzOperation {
                    paths: f(&["*.php"]),
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/x/index.php", &h),
            Verdict::Deny(Some("p".into())),
        ),
        (
            "notPaths",
            one(
                AuthzAction::Allow,
                to(AuthzOperation {
                    paths: not(&["/private*"]),
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/private/x", &h),
            Verdict::Deny(None),
        ),
        (
            "notMethods",
            one(
                AuthzAction::Allow,
                to(AuthzOperation {
                    methods: not(&["DELETE"]),
                    ..Default::default()
                }),
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "header condition",
            one(
                AuthzAction::Allow,
                AuthzRule {
                    when: vec![AuthzCondition {
                        key: ConditionKey::RequestHeader("x-role".into()),
                        values: vec![Pattern::parse("admin")],
                        not_values: vec![],
                    }],
                    ..Default::default()
                },
            ),
            attrs(None, "GET", "/", &admin),
            Verdict::Allow,
        ),
        (
            "header condition absent",
            one(
                AuthzAction::Allow,
                AuthzRule {
                    when: vec![AuthzCondition {
                        key: ConditionKey::RequestHeader("x-role".into()),
                        values: vec![Pattern::parse("admin")],
                        not_values: vec![],
                    }],
                    ..Default::default()
                },
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Deny(None),
        ),
        (
            "source.ip condition",
            one(
                AuthzAction::Deny,
                AuthzRule {
                    when: vec![AuthzCondition {
                        key: ConditionKey::SourceIp,
                        values: vec![Pattern::parse("10.1.0.0/16")],
                        not_values: vec![],
                    }],
                    ..Default::default()
                },
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Deny(Some("p".into())),
        ),
        (
            "destination.port condition",
            one(
                AuthzAction::Allow,
                AuthzRule {
                    when: vec![AuthzCondition {
                        key: ConditionKey::DestinationPort,
                        values: vec![Pattern::parse("8443")],
                        not_values: vec![],
                    }],
                    ..Default::default()
                },
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "connection.sni condition",
            one(
                AuthzAction::Deny,
                AuthzRule {
                    when: vec![AuthzCondition {
                        key: ConditionKey::ConnectionSni,
                        values: vec![],
                        not_values: vec![Pattern::parse("app.example.test")],
                    }],
                    ..Default::default()
                },
            ),
            attrs(None, "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "source.namespace condition",
            one(
                AuthzAction::Allow,
                AuthzRule {
                    when: vec![AuthzCondition {
                        key: ConditionKey::SourceNamespace,
                        values: vec![Pattern::parse("default")],
                        not_values: vec![],
                    }],
                    ..Default::default()
                },
            ),
            attrs(Some(SLEEP), "GET", "/", &h),
            Verdict::Allow,
        ),
        (
            "JWT attributes never match without RequestAuthentication",
            one(
                AuthzAction::Allow,
                AuthzRule {
                    when: vec![AuthzCondition {
                        key: ConditionKey::RequestAuth("request.auth.claims[iss]".into()),
                        values: vec![Pattern::Any],
                        not_values: vec![],
                    }],
                    ..Default::default()
                },
            ),
            attrs(Some(SLEEP), "GET", "/", &h),
            Verdict::Deny(None),
        ),
        (
            "requestPrincipals need a JWT",
            one(
                AuthzAction::Allow,
                from(AuthzSource {
                    request_principals: f(&["*"]),
                    ..Default::default()
                }),
            ),
            attrs(Some(SLEEP), "GET", "/", &h),
            Verdict::Deny(None),
        ),
        (
            "any rule of a policy",
            vec![policy(
                "p",
                AuthzAction::Allow,
                vec![
                    to(AuthzOperation {
                        paths: f(&["/a"]),
                        ..Default::default()
                    }),
                    to(AuthzOperation {
                        paths: f(&["/b"]),
                        ..Default::default()
                    }),
                ],
            )],
            attrs(None, "GET", "/b", &h),
            Verdict::Allow,
        ),
        (
            "AUDIT does not deny",
            one(AuthzAction::Audit, AuthzRule::default()),
            attrs(None, "GET", "/", &h),
            Verdict::Allow,
        ),
    ];
    let n = cases.len();
    for (what, policies, a, expected) in cases {
        assert_eq!(evaluate(&policies, &a), expected, "{what}");
    }
    assert!(n >= 30, "{n} cases");
}

#[test]
fn patterns_follow_istio() {
    assert!(Pattern::parse("*").matches("x", false));
    assert!(!Pattern::parse("*").matches("", false));
    assert!(Pattern::parse("/api/*").matches("/api/v1", false));
    assert!(!Pattern::parse("/api/*").matches("/apix", false));
    assert!(Pattern::parse("*.php").matches("/a.php", false));
    assert!(Pattern::parse("Exact").matches("exact", true));
    assert!(!Pattern::parse("Exact").matches("exact", false));
}

#[test]
fn on_tcp_http_only_fields_never_allow_and_are_ignored_by_deny() {
    let h = HeaderMap::new();
    let tcp = |principal| Attributes {
        method: "",
        path: "",
        host: "",
        authority: "",
        ..attrs(principal, "", "", &h)
    };
    let allow_paths = policy(
        "allow-paths",
        AuthzAction::Allow,
        vec![to(AuthzOperation {
            paths: f(&["/*"]),
            ..Default::default()
        })],
    );
    assert_eq!(
        evaluate_tcp(std::slice::from_ref(&allow_paths), &tcp(None)),
        Verdict::Deny(None),
        "an ALLOW rule with paths cannot match a TCP connection"
    );
    let allow_port = policy(
        "allow-port",
        AuthzAction::Allow,
        vec![to(AuthzOperation {
            ports: Field {
                values: vec![8443],
                not_values: vec![],
            },
            ..Default::default()
        })],
    );
    assert_eq!(
        evaluate_tcp(&[allow_paths, allow_port], &tcp(None)),
        Verdict::Allow
    );
    let deny_ip_and_path = policy(
        "deny",
        AuthzAction::Deny,
        vec![AuthzRule {
            from: vec![AuthzSource {
                ip_blocks: Field {
                    values: vec!["10.0.0.0/8".into()],
                    not_values: vec![],
                },
                ..Default::default()
            }],
            to: vec![AuthzOperation {
                methods: f(&["POST"]),
                ..Default::default()
            }],
            when: vec![],
        }],
    );
    assert_eq!(
        evaluate_tcp(&[deny_ip_and_path], &tcp(None)),
        Verdict::Deny(Some("deny".into())),
        "DENY matches on its other fields"
    );
}

#[test]
fn request_principals_and_jwt_claims_are_matched() {
    let headers = HeaderMap::new();
    let jwt = crate::request::jwt::Authenticated {
        principal: "https://auth.test/ana".into(),
        claims: serde_json::json!({
            "iss": "https://auth.test", "sub": "ana", "aud": ["shop", "web"], "azp": "spa",
            "groups": ["readers", "admins"], "org": {"team": "payments"}, "level": 3,
        }),
    };
    fn with<'a>(
        jwt: Option<&'a crate::request::jwt::Authenticated>,
        headers: &'a HeaderMap,
    ) -> Attributes<'a> {
        Attributes {
            request: jwt,
            ..attrs(None, "GET", "/", headers)
        }
    }
    let condition = |key: &str, values: &[&str], not: &[&str]| AuthzCondition {
        key: ConditionKey::RequestAuth(key.into()),
        values: values.iter().map(|v| Pattern::parse(v)).collect(),
        not_values: not.iter().map(|v| Pattern::parse(v)).collect(),
    };
    let a = with(Some(&jwt), &headers);
    for (key, values, not, expected) in [
        (
            "request.auth.principal",
            &["https://auth.test/*"][..],
            &[][..],
            true,
        ),
        ("request.auth.principal", &["other/ana"][..], &[][..], false),
        ("request.auth.audiences", &["web"], &[], true),
        ("request.auth.presenter", &["spa"], &[], true),
        ("request.auth.claims[groups]", &["admins"], &[], true),
        ("request.auth.claims[groups]", &["*"], &["admins"], false),
        ("request.auth.claims[org][team]", &["pay*"], &[], true),
        ("request.auth.claims[org][nothing]", &["*"], &[], false),
        ("request.auth.claims[level]", &["3"], &[], true),
        ("request.auth.claims", &["*"], &[], false),
        ("request.auth.claims[org", &["*"], &[], false),
    ] {
        assert_eq!(
            condition_holds(&condition(key, values, not), &a),
            expected,
            "{key} {values:?} not {not:?}"
        );
    }
    // Without a token nothing of request.auth holds, and requestPrincipals cannot match.
    let none = with(None, &headers);
    assert!(!condition_holds(
        &condition("request.auth.principal", &["*"], &[]),
        &none
    ));
    let source = |values: &[&str], not: &[&str]| AuthzSource {
        request_principals: Field {
            values: values.iter().map(|v| Pattern::parse(v)).collect(),
            not_values: not.iter().map(|v| Pattern::parse(v)).collect(),
        },
        ..AuthzSource::default()
    };
    assert!(source_matches(&source(&["*"], &[]), &a));
    assert!(!source_matches(&source(&["*"], &[]), &none));
    assert!(!source_matches(&source(&[], &["https://auth.test/*"]), &a));
    assert!(source_matches(
        &source(&[], &["https://auth.test/*"]),
        &none
    ));
}

#[test]
fn custom_policies_ask_the_authorizer_over_http_and_close_tcp() {
    let headers = HeaderMap::new();
    let a = attrs(None, "GET", "/checked/x", &headers);
    let custom = one(
        AuthzAction::Custom,
        AuthzRule {
            to: vec![AuthzOperation {
                paths: f(&["/checked*"]),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    assert!(custom_matches(&custom, &a));
    assert!(!custom_matches(
        &custom,
        &attrs(None, "GET", "/other", &headers)
    ));
    // Left to the authorizer, a CUSTOM policy neither allows nor denies over HTTP...
    assert_eq!(evaluate(&custom, &a), Verdict::Allow);
    // ...and what it matches on TCP (its paths aside) is closed.
    assert_eq!(evaluate_tcp(&custom, &a), Verdict::Deny(Some("p".into())));
}

/// Every source, operation and condition field, each with a request it matches and one
/// it does not: an ALLOW policy of that one field lets the first through and not the
/// second.
#[test]
fn every_field_matches_what_it_says_and_nothing_else() {
    static HEADERS: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(|| {
        let mut h = HeaderMap::new();
        h.insert("x-team", "payments".parse().unwrap());
        h
    });
    static NONE: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);
    static JWT: std::sync::LazyLock<crate::request::jwt::Authenticated> =
        std::sync::LazyLock::new(|| crate::request::jwt::Authenticated {
            principal: "https://auth.test/ana".into(),
            claims: serde_json::json!({"aud": "shop", "azp": "spa", "groups": ["admins"]}),
        });
    fn not(values: &[&str]) -> Field<Pattern> {
        Field {
            values: vec![],
            not_values: values.iter().map(|v| Pattern::parse(v)).collect(),
        }
    }
    fn ips(values: &[&str], not: &[&str]) -> Field<String> {
        Field {
            values: values.iter().map(|v| v.to_string()).collect(),
            not_values: not.iter().map(|v| v.to_string()).collect(),
        }
    }
    // The request every row starts from: SLEEP at 10.1.2.3 to 127.0.0.1:8443, GET
    // /api/v1/items.
    let base = || -> Attributes<'static> { attrs(Some(SLEEP), "GET", "/api/v1/items", &HEADERS) };
    let src = |f: fn(&mut AuthzSource)| {
        let mut s = AuthzSource::default();
        f(&mut s);
        from(s)
    };
    let op = |f: fn(&mut AuthzOperation)| {
        let mut o = AuthzOperation::default();
        f(&mut o);
        to(o)
    };
    let when = |key: ConditionKey, values: &[&str], not: &[&str]| AuthzRule {
        when: vec![AuthzCondition {
            key,
            values: values.iter().map(|v| Pattern::parse(v)).collect(),
            not_values: not.iter().map(|v| Pattern::parse(v)).collect(),
        }],
        ..Default::default()
    };
    type Tweak = fn(Attributes<'static>) -> Attributes<'static>;
    let rows: Vec<(&str, AuthzRule, Tweak, Tweak)> = vec![
        (
            "principals exact",
            src(|s| s.principals = f(&[SLEEP])),
            |a| a,
            |a| Attributes {
                principal: Some(OTHER),
                ..a
            },
        ),
        (
            "principals prefix",
            src(|s| s.principals = f(&["cluster.local/ns/default/*"])),
            |a| a,
            |a| Attributes {
                principal: Some(OTHER),
                ..a
            },
        ),
        (
            "principals suffix",
            src(|s| s.principals = f(&["*/sa/sleep"])),
            |a| a,
            |a| Attributes {
                principal: Some(OTHER),
                ..a
            },
        ),
        (
            "principals any needs one",
            src(|s| s.principals = f(&["*"])),
            |a| a,
            |a| Attributes {
                principal: None,
                ..a
            },
        ),
        (
            "notPrincipals",
            src(|s| s.principals = not(&[OTHER])),
            |a| a,
            |a| Attributes {
                principal: Some(OTHER),
                ..a
            },
        ),
        (
            "requestPrincipals",
            src(|s| s.request_principals = f(&["https://auth.test/*"])),
            |a| Attributes {
                request: Some(&*JWT),
                ..a
            },
            |a| a,
        ),
        (
            "notRequestPrincipals",
            src(|s| s.request_principals = not(&["https://auth.test/*"])),
            |a| a,
            |a| Attributes {
                request: Some(&*JWT),
                ..a
            },
        ),
        (
            "namespaces",
            src(|s| s.namespaces = f(&["default"])),
            |a| a,
            |a| Attributes {
                principal: Some(OTHER),
                ..a
            },
        ),
        (
            "notNamespaces",
            src(|s| s.namespaces = not(&["prod"])),
            |a| a,
            |a| Attributes {
                principal: Some(OTHER),
                ..a
            },
        ),
        (
            "serviceAccounts",
            src(|s| {
                s.service_accounts = Field {
                    values: vec![Pattern::Suffix("/ns/default/sa/sleep".into())],
                    not_values: vec![],
                }
            }),
            |a| a,
            |a| Attributes {
                principal: Some(OTHER),
                ..a
            },
        ),
        (
            "trustDomains",
            src(|s| {
                s.trust_domains = Field {
                    values: vec![Pattern::Prefix("cluster.local/".into())],
                    not_values: vec![],
                }
            }),
            |a| a,
            |a| Attributes {
                principal: Some("other.domain/ns/default/sa/sleep"),
                ..a
            },
        ),
        (
            "notTrustDomains",
            src(|s| {
                s.trust_domains = Field {
                    values: vec![],
                    not_values: vec![Pattern::Prefix("other.domain/".into())],
                }
            }),
            |a| a,
            |a| Attributes {
                principal: Some("other.domain/ns/default/sa/sleep"),
                ..a
            },
        ),
        (
            "ipBlocks cidr",
            src(|s| s.ip_blocks = ips(&["10.1.0.0/16"], &[])),
            |a| a,
            |a| Attributes {
                source_ip: "10.2.0.1".parse().unwrap(),
                ..a
            },
        ),
        (
            "ipBlocks address",
            src(|s| s.ip_blocks = ips(&["10.1.2.3"], &[])),
            |a| a,
            |a| Attributes {
                source_ip: "10.1.2.4".parse().unwrap(),
                ..a
            },
        ),
        (
            "notIpBlocks",
            src(|s| s.ip_blocks = ips(&[], &["10.2.0.0/16"])),
            |a| a,
            |a| Attributes {
                source_ip: "10.2.0.1".parse().unwrap(),
                ..a
            },
        ),
        (
            "remoteIpBlocks",
            src(|s| s.remote_ip_blocks = ips(&["10.1.0.0/16"], &[])),
            |a| a,
            |a| Attributes {
                remote_ip: "203.0.113.1".parse().unwrap(),
                ..a
            },
        ),
        (
            "notRemoteIpBlocks",
            src(|s| s.remote_ip_blocks = ips(&[], &["203.0.113.0/24"])),
            |a| a,
            |a| Attributes {
                remote_ip: "203.0.113.1".parse().unwrap(),
                ..a
            },
        ),
        (
            "hosts",
            op(|o| o.hosts = f(&["app.example.test"])),
            |a| a,
            |a| Attributes {
                host: "other.test",
                authority: "other.test",
                ..a
            },
        ),
        (
            "hosts without case",
            op(|o| o.hosts = f(&["APP.example.test"])),
            |a| a,
            |a| Attributes {
                host: "other.test",
                authority: "other.test",
                ..a
            },
        ),
        (
            "hosts with port",
            op(|o| o.hosts = f(&["app.example.test:8443"])),
            |a| a,
            |a| Attributes {
                authority: "app.example.test:9443",
                ..a
            },
        ),
        (
            "hosts suffix",
            op(|o| o.hosts = f(&["*.example.test"])),
            |a| a,
            |a| Attributes {
                host: "app.other.test",
                authority: "app.other.test",
                ..a
            },
        ),
        (
            "notHosts",
            op(|o| o.hosts = not(&["other.test"])),
            |a| a,
            |a| Attributes {
                host: "other.test",
                authority: "other.test",
                ..a
            },
        ),
        (
            "ports",
            op(|o| {
                o.ports = Field {
                    values: vec![8443],
                    not_values: vec![],
                }
            }),
            |a| a,
            |a| Attributes { port: 8080, ..a },
        ),
        (
            "notPorts",
            op(|o| {
                o.ports = Field {
                    values: vec![],
                    not_values: vec![8080],
                }
            }),
            |a| a,
            |a| Attributes { port: 8080, ..a },
        ),
        (
            "methods",
            op(|o| o.methods = f(&["GET"])),
            |a| a,
            |a| Attributes {
                method: "DELETE",
                ..a
            },
        ),
        (
            "notMethods",
            op(|o| o.methods = not(&["DELETE"])),
            |a| a,
            |a| Attributes {
                method: "DELETE",
                ..a
            },
        ),
        (
            "paths exact",
            op(|o| o.paths = f(&["/api/v1/items"])),
            |a| a,
            |a| Attributes {
                path: "/api/v1/items/1",
                ..a
            },
        ),
        (
            "paths prefix",
            op(|o| o.paths = f(&["/api/*"])),
            |a| a,
            |a| Attributes {
                path: "/apiary",
                ..a
            },
        ),
        (
            "paths suffix",
            op(|o| o.paths = f(&["*/items"])),
            |a| a,
            |a| Attributes {
                path: "/api/v1/users",
                ..a
            },
        ),
        (
            "paths {*}",
            op(|o| o.paths = f(&["/api/{*}/items"])),
            |a| a,
            |a| Attributes {
                path: "/api/v1/v2/items",
                ..a
            },
        ),
        (
            "paths {**}",
            op(|o| o.paths = f(&["/api/{**}"])),
            |a| a,
            |a| Attributes {
                path: "/other/api",
                ..a
            },
        ),
        (
            "notPaths",
            op(|o| o.paths = not(&["/admin*"])),
            |a| a,
            |a| Attributes {
                path: "/admin/x",
                ..a
            },
        ),
        (
            "request.headers",
            when(
                ConditionKey::RequestHeader("x-team".into()),
                &["payments"],
                &[],
            ),
            |a| a,
            |a| Attributes {
                headers: &NONE,
                ..a
            },
        ),
        (
            "request.headers not",
            when(
                ConditionKey::RequestHeader("x-team".into()),
                &[],
                &["payments"],
            ),
            |a| Attributes {
                headers: &NONE,
                ..a
            },
            |a| a,
        ),
        (
            "source.ip",
            when(ConditionKey::SourceIp, &["10.1.0.0/16"], &[]),
            |a| a,
            |a| Attributes {
                source_ip: "10.9.0.1".parse().unwrap(),
                ..a
            },
        ),
        (
            "source.ip not",
            when(ConditionKey::SourceIp, &[], &["10.9.0.0/16"]),
            |a| a,
            |a| Attributes {
                source_ip: "10.9.0.1".parse().unwrap(),
                ..a
            },
        ),
        (
            "remote.ip",
            when(ConditionKey::RemoteIp, &["10.1.2.3"], &[]),
            |a| a,
            |a| Attributes {
                remote_ip: "10.9.0.1".parse().unwrap(),
                ..a
            },
        ),
        (
            "source.namespace",
            when(ConditionKey::SourceNamespace, &["default"], &[]),
            |a| a,
            |a| Attributes {
                principal: Some(OTHER),
                ..a
            },
        ),
        (
            "source.principal",
            when(ConditionKey::SourcePrincipal, &[SLEEP], &[]),
            |a| a,
            |a| Attributes {
                principal: Some(OTHER),
                ..a
            },
        ),
        (
            "source.trustDomain",
            when(ConditionKey::SourceTrustDomain, &["cluster.local"], &[]),
            |a| a,
            |a| Attributes {
                principal: Some("other.domain/ns/a/sa/b"),
                ..a
            },
        ),
        (
            "destination.ip",
            when(ConditionKey::DestinationIp, &["127.0.0.0/8"], &[]),
            |a| a,
            |a| Attributes {
                destination_ip: Some("10.0.0.1".parse().unwrap()),
                ..a
            },
        ),
        (
            "destination.port",
            when(ConditionKey::DestinationPort, &["8443"], &[]),
            |a| a,
            |a| Attributes { port: 8080, ..a },
        ),
        (
            "connection.sni",
            when(ConditionKey::ConnectionSni, &["*.example.test"], &[]),
            |a| a,
            |a| Attributes {
                sni: Some("other.test"),
                ..a
            },
        ),
        (
            "request.auth.principal",
            when(
                ConditionKey::RequestAuth("request.auth.principal".into()),
                &["https://auth.test/ana"],
                &[],
            ),
            |a| Attributes {
                request: Some(&*JWT),
                ..a
            },
            |a| a,
        ),
        (
            "request.auth.audiences",
            when(
                ConditionKey::RequestAuth("request.auth.audiences".into()),
                &["shop"],
                &[],
            ),
            |a| Attributes {
                request: Some(&*JWT),
                ..a
            },
            |a| a,
        ),
        (
            "request.auth.presenter",
            when(
                ConditionKey::RequestAuth("request.auth.presenter".into()),
                &["spa"],
                &[],
            ),
            |a| Attributes {
                request: Some(&*JWT),
                ..a
            },
            |a| a,
        ),
        (
            "request.auth.claims",
            when(
                ConditionKey::RequestAuth("request.auth.claims[groups]".into()),
                &["admins"],
                &[],
            ),
            |a| Attributes {
                request: Some(&*JWT),
                ..a
            },
            |a| a,
        ),
    ];
    let mut checked = 0;
    for (what, rule, matching, other) in rows {
        let policies = vec![policy("p", AuthzAction::Allow, vec![rule.clone()])];
        assert_eq!(
            evaluate(&policies, &matching(base())),
            Verdict::Allow,
            "{what}: the matching request"
        );
        assert_eq!(
            evaluate(&policies, &other(base())),
            Verdict::Deny(None),
            "{what}: the other request"
        );
        // The same rule in a DENY policy turns both around.
        let denying = vec![policy("d", AuthzAction::Deny, vec![rule])];
        assert_eq!(
            evaluate(&denying, &matching(base())),
            Verdict::Deny(Some("d".into())),
            "{what}: DENY"
        );
        assert_eq!(
            evaluate(&denying, &other(base())),
            Verdict::Allow,
            "{what}: DENY, other"
        );
        checked += 4;
    }
    assert!(checked >= 180, "{checked} cases");
}

#[test]
fn filter_metadata_conditions_match_strings_and_lists_as_envoy_does() {
    use prost_types::{ListValue, Struct, Value};
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    let mut left = Struct::default();
    left.fields.insert("tier".into(), string("free"));
    left.fields.insert(
        "groups".into(),
        Value {
            kind: Some(Kind::ListValue(ListValue {
                values: vec![string("dev"), string("ops")],
            })),
        },
    );
    let mut metadata = FilterMetadata::default();
    metadata.set(EXT_AUTHZ_METADATA, left);
    let h = HeaderMap::new();
    let with = Attributes {
        metadata: Some(&metadata),
        ..attrs(None, "GET", "/", &h)
    };
    let without = attrs(None, "GET", "/", &h);
    let condition = |filter: &str, key: &str, values: &[&str], not: &[&str]| AuthzRule {
        when: vec![AuthzCondition {
            key: ConditionKey::FilterMetadata(MetadataCondition {
                filter: filter.into(),
                key: key.into(),
                values: values.iter().map(|v| MetadataMatch::parse(v)).collect(),
                not_values: not.iter().map(|v| MetadataMatch::parse(v)).collect(),
            }),
            values: vec![],
            not_values: vec![],
        }],
        ..Default::default()
    };
    let ext = EXT_AUTHZ_METADATA;
    for (rule, with_expected, without_expected, what) in [
        (
            condition(ext, "tier", &["free"], &[]),
            true,
            false,
            "a string",
        ),
        (
            condition(ext, "tier", &["fr*"], &[]),
            true,
            false,
            "a prefix",
        ),
        (
            condition(ext, "tier", &["*"], &[]),
            true,
            false,
            "any value",
        ),
        (
            condition(ext, "tier", &["paid"], &[]),
            false,
            false,
            "another string",
        ),
        (
            condition(ext, "tier", &["paid", "free"], &[]),
            true,
            false,
            "any of the values",
        ),
        (
            condition(ext, "tier", &["[free]"], &[]),
            false,
            false,
            "a list match of a string",
        ),
        (
            condition(ext, "groups", &["[ops]"], &[]),
            true,
            false,
            "a list with the value",
        ),
        (
            condition(ext, "groups", &["[o*]"], &[]),
            true,
            false,
            "a list with a prefix",
        ),
        (
            condition(ext, "groups", &["[qa]"], &[]),
            false,
            false,
            "a list without it",
        ),
        (
            condition(ext, "groups", &["ops"], &[]),
            false,
            false,
            "a string match of a list",
        ),
        (
            condition(ext, "missing", &["*"], &[]),
            false,
            false,
            "a key not there",
        ),
        (
            condition(ext, "tier", &[], &["free"]),
            false,
            true,
            "notValues",
        ),
        (
            condition(ext, "tier", &[], &["paid"]),
            true,
            true,
            "other notValues",
        ),
        (
            condition("envoy.filters.network.mysql_proxy", "tier", &["free"], &[]),
            false,
            false,
            "another filter",
        ),
    ] {
        for (a, expected, case) in [
            (&with, with_expected, "with"),
            (&without, without_expected, "without"),
        ] {
            assert_eq!(
                evaluate(&one(AuthzAction::Allow, rule.clone()), a) == Verdict::Allow,
                expected,
                "ALLOW on {what}, {case} metadata"
            );
            assert_eq!(
                evaluate(&one(AuthzAction::Deny, rule.clone()), a) == Verdict::Allow,
                !expected,
                "DENY on {what}, {case} metadata"
            );
        }
    }
    // A TCP connection carries no metadata: the condition is not dropped from a DENY
    // rule as an HTTP-only field would be; it does not hold.
    let deny = one(AuthzAction::Deny, condition(ext, "tier", &["*"], &[]));
    assert_eq!(evaluate_tcp(&deny, &without), Verdict::Allow);
    let allow = one(AuthzAction::Allow, condition(ext, "tier", &[], &["paid"]));
    assert_eq!(evaluate_tcp(&allow, &without), Verdict::Allow);
}
