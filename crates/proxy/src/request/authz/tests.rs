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
