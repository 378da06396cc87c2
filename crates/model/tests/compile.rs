//! Compilation as a pure function: the seeds' gateway configs in, per-gateway config out,
//! checked field by field, and the same every time.

use std::path::Path;

use meshwork_api::load::{LoadOptions, load_str};
use meshwork_api::resource::Object;
use meshwork_model::compile_gateways;
use meshwork_resources::listener::ServerProtocol;
use meshwork_resources::route::{RouteAction, StringMatcher};
use meshwork_resources::secret::Pem;

fn compile(yaml: &str) -> meshwork_model::Compiled {
    let out = load_str(Path::new("t.yaml"), yaml, &LoadOptions::default());
    assert!(!out.has_errors(), "{:#?}", out.diagnostics);
    let objects: Vec<Object> = out.config.objects.into_iter().map(|o| o.object).collect();
    let compiled = compile_gateways(&objects, &out.config.mesh);
    // What the control plane streams decodes to what it compiled.
    for g in &compiled.gateways {
        let wire = serde_json::to_vec(g).unwrap();
        let back: meshwork_resources::ProxyConfig = serde_json::from_slice(&wire).unwrap();
        assert_eq!(&back, g);
    }
    compiled
}

/// Seed 003: the gateway Service maps 80 -> 8080 and 443 -> 8443; HTTPS with a Secret.
const SEED_003: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: istio-system
  labels: {istio: ingressgateway}
spec:
  type: LoadBalancer
  selector: {istio: ingressgateway}
  ports:
  - {name: http2, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: 8443}
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: my-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: app-tls}
    hosts: [app.example.com]
---
apiVersion: v1
kind: Secret
metadata: {name: app-tls, namespace: istio-system}
type: kubernetes.io/tls
stringData:
  tls.crt: CERT
  tls.key: KEY
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: my-service, namespace: default}
spec:
  hosts: [app.example.com]
  gateways: [istio-system/my-gateway]
  http:
  - match: [{uri: {prefix: /}}]
    route:
    - destination:
        host: my-service.default.svc.cluster.local
        port: {number: 80}
---
apiVersion: v1
kind: Service
metadata: {name: my-service, namespace: default}
spec:
  selector: {app: my-service}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: my-service-1, namespace: default, labels: {app: my-service}}
status: {podIP: 10.1.2.3}
"#;

#[test]
fn seed_003_compiles_to_an_https_listener_on_the_target_port() {
    let c = compile(SEED_003);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.gateways.len(), 1);
    let g = &c.gateways[0];
    assert_eq!(g.node.id, "istio=ingressgateway");
    assert_eq!(g.listeners.len(), 1);
    let l = &g.listeners["0.0.0.0_8443"];
    assert_eq!((l.bind_port, l.gateway_port), (8443, 443));
    let s = &l.servers[0];
    assert_eq!(s.protocol, ServerProtocol::Https);
    assert_eq!(s.hosts, ["app.example.com"]);
    assert_eq!(s.route_table, "https.443.https.my-gateway.istio-system");
    let tls = s.tls.as_ref().unwrap();
    assert_eq!(tls.certificate, "kubernetes://istio-system/app-tls");
    let secret = &g.secrets[&tls.certificate];
    assert_eq!(secret.certificate_chain, Some(Pem::Inline("CERT".into())));
    assert!(secret.private_key.is_some());
    let vh = &g.route_tables[&s.route_table].virtual_hosts[0];
    assert_eq!(vh.domains, ["app.example.com"]);
    let route = &vh.routes[0];
    assert_eq!(
        route.matches[0].uri,
        Some(StringMatcher::Prefix("/".into()))
    );
    let RouteAction::Forward(dests) = &route.action else {
        panic!()
    };
    assert_eq!(
        dests[0].cluster,
        "outbound|80||my-service.default.svc.cluster.local"
    );
    assert_eq!(dests[0].weight, 100);
    let cluster = &g.clusters[&dests[0].cluster];
    let endpoints = &g.endpoints[&dests[0].cluster].endpoints;
    assert_eq!(endpoints.len(), 1);
    assert_eq!(
        (endpoints[0].address.as_str(), endpoints[0].port),
        ("10.1.2.3", 8080)
    );
    assert_eq!(
        cluster.connect_timeout_ms, 10_000,
        "Istio's default connect timeout"
    );
    // The private key never appears in the dump.
    let wire = serde_json::to_string(g).unwrap();
    assert_eq!(
        wire.matches("\"KEY\"").count(),
        1,
        "the key lives in its secret only"
    );
    let dump = serde_json::to_string(&g.redacted()).unwrap();
    assert!(dump.contains("[redacted 3 bytes]") && !dump.contains("\"KEY\""));
}

#[test]
fn compilation_is_deterministic() {
    let a = serde_json::to_string(&compile(SEED_003).gateways).unwrap();
    let b = serde_json::to_string(&compile(SEED_003).gateways).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_missing_secret_leaves_the_server_out_with_a_warning() {
    let c = compile(&SEED_003.replace("name: app-tls, namespace", "name: other-tls, namespace"));
    assert_eq!(
        c.warnings,
        [
            "Gateway istio-system/my-gateway#0: credentialName app-tls: Secret istio-system/app-tls not found; the server is left out"
        ]
    );
    assert!(c.gateways[0].listeners.is_empty());
}

#[test]
fn without_a_gateway_service_the_port_itself_is_bound_and_subsets_select_endpoints() {
    let c = compile(
        r#"
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8081, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: v1
kind: Service
metadata: {name: payments, namespace: default}
spec:
  selector: {app: payments}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: default, labels: {app: payments, version: v1}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: default, labels: {app: payments, version: v2}}
status: {podIP: 10.0.0.2}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: payments}
spec:
  host: payments
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: payments}
spec:
  hosts: [payments.example.com]
  gateways: [istio-system/gw]
  http:
  - route:
    - destination: {host: payments, subset: v1}
      weight: 99
    - destination: {host: payments, subset: v2}
      weight: 1
"#,
    );
    let g = &c.gateways[0];
    assert_eq!(g.listeners["0.0.0.0_8081"].bind_port, 8081);
    let v1 = &g.endpoints["outbound|80|v1|payments.default.svc.cluster.local"].endpoints;
    let v2 = &g.endpoints["outbound|80|v2|payments.default.svc.cluster.local"].endpoints;
    assert_eq!(v1[0].address, "10.0.0.1");
    assert_eq!(v2[0].address, "10.0.0.2");
    assert_eq!(v1.len() + v2.len(), 2);
}

#[test]
fn failover_priority_labels_travel_with_the_endpoints() {
    let c = compile(
        r#"
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8081, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  selector: {app: db}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: d1, namespace: default, labels: {app: db, network: n1, other: x}}
status: {podIP: 10.0.0.1}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer:
      localityLbSetting: {enabled: true, failoverPriority: [network]}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db.example.com]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: db}}]
"#,
    );
    let name = "outbound|80||db.default.svc.cluster.local";
    let cluster = &c.gateways[0].clusters[name];
    let ep = &c.gateways[0].endpoints[name].endpoints[0];
    assert_eq!(ep.labels.get("network").map(String::as_str), Some("n1"));
    assert!(
        !ep.labels.contains_key("other"),
        "only the failoverPriority labels"
    );
    let lp = cluster.policy.locality.as_ref().unwrap();
    assert_eq!(lp.failover_priority, ["network"]);
}

#[test]
fn authorization_policies_apply_by_namespace_and_selector() {
    let policies = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin*"], ports: ["8443"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: for-the-gateway, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules:
  - from: [{source: {serviceAccounts: ["default/sleep"]}}, {source: {notNamespaces: ["prod"]}}]
    when: [{key: "request.headers[X-Role]", values: ["admin"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-workload, namespace: istio-system}
spec: {selector: {matchLabels: {app: other}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: shop}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-target, namespace: istio-system}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: public}]
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: external, namespace: istio-system}
spec:
  action: CUSTOM
  provider: {name: my-authz}
  rules: [{to: [{operation: {paths: ["/checked*"]}}]}]
"#;
    let c = compile(&format!("{SEED_003}{policies}"));
    let g = &c.gateways[0];
    let names: Vec<&str> = g.authorization.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "istio-system/external",
            "istio-system/for-the-gateway",
            "istio-system/mesh-wide"
        ],
        "targetRefs are not applied"
    );
    use meshwork_resources::authorization::{AuthzAction, ConditionKey, Pattern};
    // A CUSTOM policy whose provider the mesh config lacks: what it would check is
    // denied, with a warning.
    assert_eq!(g.authorization[0].action, AuthzAction::Deny);
    assert!(g.ext_authz.is_none());
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("istio-system/external")
                && w.contains("provider my-authz is not in the mesh config")
                && w.contains("denied")),
        "{:?}",
        c.warnings
    );
    let g_authorization = &g.authorization[1..];
    let gw = &g_authorization[0];
    assert_eq!(gw.action, AuthzAction::Allow, "ALLOW is the default action");
    let from = &gw.rules[0].from;
    // serviceAccounts are a constraint of their own, on the principal.
    assert_eq!(
        from[0].service_accounts.values,
        [Pattern::Suffix("/ns/default/sa/sleep".into())]
    );
    assert!(from[0].principals.is_empty());
    assert_eq!(
        from[1].namespaces.not_values,
        [Pattern::Exact("prod".into())]
    );
    assert_eq!(
        gw.rules[0].when[0].key,
        ConditionKey::RequestHeader("x-role".into())
    );
    let deny = &g_authorization[1];
    assert_eq!(deny.action, AuthzAction::Deny);
    assert_eq!(deny.rules[0].to[0].ports.values, [8443]);
    assert_eq!(
        deny.rules[0].to[0].paths.values,
        [Pattern::Prefix("/admin".into())]
    );
}

/// The access log a gateway gets from these Telemetry documents, with the mesh config's
/// `accessLogEncoding: JSON` when `json`.
fn access_log_with(
    telemetry: &str,
    json: bool,
) -> (Vec<meshwork_resources::AccessLog>, Vec<String>) {
    let yaml = format!("{SEED_003}{telemetry}");
    let out = load_str(Path::new("t.yaml"), &yaml, &LoadOptions::default());
    assert!(!out.has_errors(), "{:#?}", out.diagnostics);
    let objects: Vec<Object> = out.config.objects.into_iter().map(|o| o.object).collect();
    let mut mesh = out.config.mesh;
    if json {
        mesh.access_log_encoding = meshwork_api::mesh::AccessLogEncoding::Json;
    }
    let c = compile_gateways(&objects, &mesh);
    (c.gateways[0].access_logs.clone(), c.warnings)
}

#[test]
fn the_telemetry_api_turns_the_access_log_on_and_off() {
    let mesh_wide = "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: access-logs, namespace: istio-system}\nspec:\n  accessLogging:\n  - providers: [{name: envoy}]\n";
    let (log, warnings) = access_log_with("", false);
    assert_eq!(log, [], "off by default");
    assert!(warnings.is_empty());
    let (log, _) = access_log_with(mesh_wide, false);
    let log = log.first().expect("the seed's Telemetry turns it on");
    assert_eq!((log.path.as_str(), log.json), ("/dev/stdout", false));
    let (log, _) = access_log_with(mesh_wide, true);
    assert!(log[0].json, "JSON with accessLogEncoding: JSON");
    // The gateway's namespace is istio-system here: a selector Telemetry there wins.
    let off_for_gateway = "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: quiet, namespace: istio-system}\nspec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  accessLogging:\n  - disabled: true\n";
    let (log, _) = access_log_with(&format!("{mesh_wide}{off_for_gateway}"), false);
    assert_eq!(log, [], "the workload's Telemetry turns it off");
    let unknown = "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: odd, namespace: istio-system}\nspec:\n  accessLogging:\n  - providers: [{name: nowhere}]\n";
    let (log, warnings) = access_log_with(unknown, false);
    assert_eq!(log, []);
    assert!(
        warnings.iter().any(|w| w.contains("provider nowhere")),
        "{warnings:?}"
    );
}

/// A Telemetry in the gateway's namespace with these `accessLogging` entries (YAML).
fn access_logging(entries: &str) -> String {
    format!(
        "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: logs, namespace: istio-system}}\nspec:\n  accessLogging:\n{entries}"
    )
}

#[test]
fn access_log_modes_split_the_sides_and_filters_compile() {
    use meshwork_resources::Mode;
    // The first entry that covers a side decides it.
    let (logs, warnings) = access_log_with(
        &access_logging(
            "  - match: {mode: CLIENT}\n    disabled: true\n  - providers: [{name: envoy}]\n    filter: {expression: \"response.code >= 400 || 'x-debug' in request.headers\"}\n",
        ),
        false,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].mode, Mode::Server);
    assert!(logs[0].filter.is_some());
    // The same log for both sides is one log.
    let (logs, _) = access_log_with(
        &access_logging(
            "  - match: {mode: SERVER}\n    providers: [{name: envoy}]\n  - providers: [{name: envoy}]\n",
        ),
        false,
    );
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].mode, Mode::ClientAndServer);
    // Different logs for the two sides are two.
    let (logs, _) = access_log_with(
        &access_logging(
            "  - match: {mode: SERVER}\n    providers: [{name: envoy}]\n    filter: {expression: 'response.code >= 500'}\n  - providers: [{name: envoy}]\n",
        ),
        false,
    );
    let modes: Vec<Mode> = logs.iter().map(|l| l.mode).collect();
    assert_eq!(modes, [Mode::Client, Mode::Server]);
    assert!(logs[0].filter.is_none() && logs[1].filter.is_some());
    // A filter meshwork cannot run is named, and the log stays on unfiltered.
    let (logs, warnings) = access_log_with(
        &access_logging(
            "  - providers: [{name: envoy}]\n    filter: {expression: \"request.path.matches('^/x')\"}\n",
        ),
        false,
    );
    assert_eq!(logs.len(), 1);
    assert!(logs[0].filter.is_none());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("Telemetry istio-system/logs")
                && w.contains("matches() is not supported")),
        "{warnings:?}"
    );
}

/// The metric overrides a gateway gets from these Telemetry documents.
fn metrics_with(telemetry: &str) -> (Vec<meshwork_resources::metric::MetricOverride>, Vec<String>) {
    let yaml = format!("{SEED_003}{telemetry}");
    let out = load_str(Path::new("t.yaml"), &yaml, &LoadOptions::default());
    assert!(!out.has_errors(), "{:#?}", out.diagnostics);
    let objects: Vec<Object> = out.config.objects.into_iter().map(|o| o.object).collect();
    let c = compile_gateways(&objects, &out.config.mesh);
    (c.gateways[0].metrics.clone(), c.warnings)
}

#[test]
fn metric_overrides_merge_by_scope_metric_side_and_tag() {
    use meshwork_resources::metric::Metric;
    let mesh_wide = "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  metrics:\n  - providers: [{name: prometheus}]\n    overrides:\n    - match: {metric: ALL_METRICS, mode: CLIENT_AND_SERVER}\n      tagOverrides:\n        destination_canonical_revision: {operation: REMOVE}\n    - match: {metric: REQUEST_COUNT, mode: CLIENT}\n      tagOverrides:\n        request_host: {value: request.host}\n        destination_port: {value: string(destination.port)}\n    - match: {metric: REQUEST_DURATION}\n      disabled: true\n";
    let (overrides, warnings) = metrics_with(mesh_wide);
    assert!(warnings.is_empty(), "{warnings:?}");
    // Eight metrics, two sides each, all with the removal.
    assert_eq!(overrides.len(), 16, "{overrides:#?}");
    let of = |m: Metric, inbound: bool| {
        overrides
            .iter()
            .find(|o| o.metric == m && o.inbound == inbound)
            .unwrap()
    };
    let client_count = of(Metric::RequestCount, false);
    let names: Vec<&str> = client_count.tags.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "destination_canonical_revision",
            "destination_port",
            "request_host"
        ]
    );
    assert!(client_count.tags[0].value.is_none(), "removed");
    assert!(client_count.tags[2].value.is_some());
    assert_eq!(
        of(Metric::RequestCount, true).tags.len(),
        1,
        "the server side only removes"
    );
    assert!(of(Metric::RequestDuration, true).disabled);
    assert!(!of(Metric::RequestSize, true).disabled);
    // A workload's Telemetry comes after: it turns the duration back on for the gateway
    // and puts the revision back as a literal.
    let workload = "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: gateway, namespace: istio-system}\nspec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  metrics:\n  - overrides:\n    - match: {metric: REQUEST_DURATION}\n      disabled: false\n      tagOverrides:\n        destination_canonical_revision: {value: \"'v0'\"}\n        bad: {value: \"request.nothing\"}\n";
    let (overrides, warnings) = metrics_with(&format!("{mesh_wide}{workload}"));
    let duration = overrides
        .iter()
        .find(|o| o.metric == Metric::RequestDuration && !o.inbound)
        .unwrap();
    assert!(!duration.disabled);
    assert_eq!(duration.tags.len(), 1);
    assert!(duration.tags[0].value.is_some(), "{duration:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("tagOverrides bad")
                && w.contains("request.nothing is not an attribute")),
        "{warnings:?}"
    );
    // Nothing changed, nothing sent.
    let (overrides, _) = metrics_with("");
    assert!(overrides.is_empty());
}

/// A VirtualService exported only to its own namespace does not route a gateway of
/// another namespace; one exported there (or everywhere) does.
#[test]
fn virtual_services_route_a_gateway_only_where_they_are_exported() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*/*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hidden, namespace: apps}
spec:
  hosts: [hidden.example.com]
  gateways: [istio-system/public]
  exportTo: ["."]
  http: [{route: [{destination: {host: hidden.example.com}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shown, namespace: apps}
spec:
  hosts: [shown.example.com]
  gateways: [istio-system/public]
  exportTo: [istio-system]
  http: [{route: [{destination: {host: shown.example.com}}]}]
"#;
    let compiled = compile(yaml);
    let domains: Vec<&str> = compiled.gateways[0].route_tables["http.80"]
        .virtual_hosts
        .iter()
        .flat_map(|v| v.domains.iter().map(String::as_str))
        .collect();
    assert_eq!(domains, ["shown.example.com"]);
}

#[test]
fn request_authentication_applies_by_scope_with_istios_defaults() {
    let yaml = format!(
        "{SEED_003}---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: mesh, namespace: istio-system}}\nspec:\n  jwtRules:\n  - issuer: https://a.test\n    jwksUri: https://a.test/jwks\n    timeout: 2s\n---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  selector: {{matchLabels: {{istio: ingressgateway}}}}\n  jwtRules:\n  - issuer: https://b.test\n    jwks: '{{\"keys\": []}}'\n    fromHeaders: [{{name: X-Token, prefix: 'Token '}}]\n    outputClaimToHeaders: [{{header: X-Sub, claim: sub}}]\n    forwardOriginalToken: true\n---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: elsewhere, namespace: istio-system}}\nspec:\n  selector: {{matchLabels: {{app: nothing}}}}\n  jwtRules:\n  - issuer: https://c.test\n    jwks: '{{\"keys\": []}}'\n"
    );
    let out = load_str(Path::new("t.yaml"), &yaml, &LoadOptions::default());
    assert!(!out.has_errors(), "{:#?}", out.diagnostics);
    let objects: Vec<Object> = out.config.objects.into_iter().map(|o| o.object).collect();
    let c = compile_gateways(&objects, &out.config.mesh);
    let rules = &c.gateways[0].request_authentication;
    let issuers: Vec<&str> = rules.iter().map(|r| r.issuer.as_str()).collect();
    assert_eq!(issuers, ["https://b.test", "https://a.test"], "{rules:#?}");
    let (b, a) = (&rules[0], &rules[1]);
    // Without a location: Authorization: Bearer and access_token.
    assert_eq!(
        a.from_headers,
        [("authorization".to_string(), "Bearer ".to_string())]
    );
    assert_eq!(a.from_params, ["access_token"]);
    assert_eq!(
        a.jwks,
        meshwork_resources::jwt::Jwks::Remote {
            uri: "https://a.test/jwks".into(),
            timeout_ms: 2000,
            refresh_seconds: 300
        }
    );
    assert!(!a.forward_original_token);
    assert_eq!(
        b.from_headers,
        [("x-token".to_string(), "Token ".to_string())]
    );
    assert!(b.from_params.is_empty());
    assert_eq!(
        b.output_claim_to_headers,
        [("x-sub".to_string(), "sub".to_string())]
    );
    assert!(b.forward_original_token);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

/// The objects and mesh config of these documents.
fn objects_of(yaml: &str) -> (Vec<Object>, meshwork_api::mesh::MeshConfig) {
    let out = load_str(Path::new("t.yaml"), yaml, &LoadOptions::default());
    assert!(!out.has_errors(), "{:#?}", out.diagnostics);
    (
        out.config.objects.into_iter().map(|o| o.object).collect(),
        out.config.mesh,
    )
}

#[test]
fn telemetry_levels_override_field_by_field_root_namespace_then_workload() {
    use meshwork_model::telemetry::{access_logs, tracing};
    use meshwork_resources::Mode;
    let telemetry = |ns: &str, name: &str, selector: &str, spec: &str| {
        format!(
            "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{selector}{spec}"
        )
    };
    let mesh_config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: zipkin\n      zipkin: {service: zipkin.istio-system, port: 9411}\n    - name: file\n      envoyFileAccessLog: {path: /var/log/mesh.log}\n";
    let yaml = format!(
        "{mesh_config}{}{}{}",
        telemetry(
            "istio-system",
            "mesh-default",
            "",
            "  accessLogging: [{providers: [{name: envoy}, {name: file}]}]\n  tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 10}]\n"
        ),
        // The namespace keeps the providers and adds a filter and its own sampling.
        telemetry(
            "shop",
            "shop",
            "",
            "  accessLogging: [{filter: {expression: 'response.code >= 500'}}]\n  tracing: [{randomSamplingPercentage: 50}]\n"
        ),
        // A workload stops its server-side spans only, and its server-side log.
        telemetry(
            "shop",
            "cart",
            "  selector: {matchLabels: {app: cart}}\n",
            "  accessLogging: [{match: {mode: SERVER}, disabled: true}]\n  tracing: [{match: {mode: SERVER}, disableSpanReporting: true}]\n"
        ),
    );
    let (objects, mesh) = objects_of(&yaml);
    let labels =
        |app: &str| std::collections::BTreeMap::from([("app".to_string(), app.to_string())]);
    let mut warnings = Vec::new();
    // Elsewhere in the mesh: the root's.
    let logs = access_logs(&objects, &mesh, "other", &labels("x"), &mut warnings);
    let paths: Vec<&str> = logs.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/dev/stdout", "/var/log/mesh.log"],
        "both providers"
    );
    assert!(
        logs.iter()
            .all(|l| l.filter.is_none() && l.mode == Mode::ClientAndServer)
    );
    assert_eq!(
        tracing(&objects, &mesh, "other", &labels("x"), &mut warnings)
            .unwrap()
            .sampling,
        10.0
    );
    // In shop: the root's providers with the namespace's filter and sampling.
    let logs = access_logs(&objects, &mesh, "shop", &labels("web"), &mut warnings);
    assert_eq!(logs.len(), 2);
    assert!(logs.iter().all(|l| l.filter.is_some()), "{logs:?}");
    let shop = tracing(&objects, &mesh, "shop", &labels("web"), &mut warnings).unwrap();
    assert_eq!(
        (shop.sampling, shop.collector.as_str()),
        (50.0, "zipkin.istio-system:9411")
    );
    assert_eq!(shop.mode, Mode::ClientAndServer);
    // The cart workload: client side only, for both.
    let logs = access_logs(&objects, &mesh, "shop", &labels("cart"), &mut warnings);
    assert!(
        logs.len() == 2
            && logs
                .iter()
                .all(|l| l.mode == Mode::Client && l.filter.is_some()),
        "{logs:?}"
    );
    let cart = tracing(&objects, &mesh, "shop", &labels("cart"), &mut warnings).unwrap();
    assert_eq!((cart.mode, cart.sampling), (Mode::Client, 50.0));
    assert!(!cart.disable_span_reporting);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn default_providers_and_istios_one_percent_apply_when_nothing_names_them() {
    use meshwork_model::telemetry::{access_logs, tracing};
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    defaultProviders: {accessLogging: [file], tracing: [zipkin]}\n    extensionProviders:\n    - name: zipkin\n      zipkin: {service: zipkin.istio-system, port: 9411}\n    - name: file\n      envoyFileAccessLog: {path: /var/log/mesh.log}\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  accessLogging: [{disabled: false}]\n";
    let (objects, mesh) = objects_of(yaml);
    let labels = std::collections::BTreeMap::new();
    let mut warnings = Vec::new();
    let logs = access_logs(&objects, &mesh, "shop", &labels, &mut warnings);
    let paths: Vec<&str> = logs.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(paths, ["/var/log/mesh.log"]);
    let t = tracing(&objects, &mesh, "shop", &labels, &mut warnings).unwrap();
    assert_eq!(
        (t.collector.as_str(), t.sampling),
        ("zipkin.istio-system:9411", 1.0)
    );
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn a_custom_policy_naming_a_second_provider_denies_what_it_matches() {
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: first\n      envoyExtAuthzHttp: {service: a.test, port: 80}\n    - name: second\n      envoyExtAuthzGrpc: {service: b.test, port: 9000}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: istio-system}\nspec:\n  action: CUSTOM\n  provider: {name: first}\n  rules: [{to: [{operation: {paths: [/a]}}]}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: b, namespace: istio-system}\nspec:\n  action: CUSTOM\n  provider: {name: second}\n  rules: [{to: [{operation: {paths: [/b]}}]}]\n";
    let (objects, mesh) = objects_of(yaml);
    let labels = std::collections::BTreeMap::new();
    let mut warnings = Vec::new();
    let policies = meshwork_model::authorization::for_workload(
        &objects,
        &mesh,
        "shop",
        &labels,
        &mut warnings,
    );
    let ext = meshwork_model::authorization::ext_authz_for_workload(
        &objects,
        &mesh,
        "shop",
        &labels,
        &mut warnings,
    )
    .unwrap();
    use meshwork_resources::authorization::AuthzAction;
    assert_eq!(
        (ext.provider.as_str(), ext.address.as_str(), ext.grpc),
        ("first", "a.test:80", false)
    );
    let actions: Vec<(&str, AuthzAction)> = policies
        .iter()
        .map(|p| (p.name.as_str(), p.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("istio-system/a", AuthzAction::Custom),
            ("istio-system/b", AuthzAction::Deny)
        ]
    );
    assert!(
        warnings.iter().any(|w| w.contains("second is not used")),
        "{warnings:?}"
    );
}

/// A Gateway API gateway: its pods carry `gateway.networking.k8s.io/gateway-name`, and
/// policies of its namespace attach to it by `targetRefs` as well as by selector.
const GATEWAY_API_GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: web}
spec:
  selector: {gateway.networking.k8s.io/gateway-name: public}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
"#;

#[test]
fn target_refs_attach_policies_to_the_gateway_they_name() {
    let target = |kind: &str, group: &str, name: &str| {
        format!("  targetRefs: [{{kind: {kind}, group: \"{group}\", name: {name}}}]\n")
    };
    let policy = |kind: &str, name: &str, ns: &str, spec: &str| {
        let rules = match kind {
            "AuthorizationPolicy" => "  rules: [{}]\n",
            "RequestAuthentication" => &format!(
                "  jwtRules: [{{issuer: https://{name}.test, jwks: '{{\"keys\": []}}'}}]\n"
            ),
            _ => "  accessLogging: [{providers: [{name: envoy}]}]\n",
        };
        let group = if kind == "Telemetry" {
            "telemetry"
        } else {
            "security"
        };
        format!(
            "---\napiVersion: {group}.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}{rules}"
        )
    };
    let gw = "gateway.networking.k8s.io";
    let mut yaml = GATEWAY_API_GATEWAY.to_string();
    for kind in ["AuthorizationPolicy", "RequestAuthentication"] {
        yaml += &policy(kind, "by-target", "web", &target("Gateway", gw, "public"));
        yaml += &policy(
            kind,
            "other-gateway",
            "web",
            &target("Gateway", gw, "other"),
        );
        yaml += &policy(
            kind,
            "root-target",
            "istio-system",
            &target("Gateway", gw, "public"),
        );
        yaml += &policy(
            kind,
            "to-a-service",
            "web",
            &target("Service", "", "public"),
        );
        yaml += &policy(
            kind,
            "by-selector",
            "web",
            &format!("  selector: {{matchLabels: {{{gw}/gateway-name: public}}}}\n"),
        );
    }
    yaml += &policy("Telemetry", "logs", "web", &target("Gateway", gw, "public"));
    let c = compile(&yaml);
    let g = &c.gateways[0];
    let names: Vec<&str> = g.authorization.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web/by-selector", "web/by-target"]);
    let issuers: Vec<&str> = g
        .request_authentication
        .iter()
        .map(|r| r.issuer.as_str())
        .collect();
    assert_eq!(issuers.len(), 2, "{issuers:?}");
    assert!(issuers.contains(&"https://by-target.test"), "{issuers:?}");
    assert!(issuers.contains(&"https://by-selector.test"), "{issuers:?}");
    // The Telemetry that targets the gateway is its workload level: an access log. One
    // that targets another gateway is no namespace default: it gives none.
    assert!(!g.access_logs.is_empty(), "{:?}", g.access_logs);
    let elsewhere = format!(
        "{GATEWAY_API_GATEWAY}{}",
        policy("Telemetry", "logs", "web", &target("Gateway", gw, "other"))
    );
    assert!(compile(&elsewhere).gateways[0].access_logs.is_empty());
    for kind in ["AuthorizationPolicy", "RequestAuthentication"] {
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with(&format!("{kind} web/to-a-service:"))
                    && w.contains("waypoint")),
            "{:?}",
            c.warnings
        );
    }
}

#[test]
fn filter_metadata_conditions_compile_to_string_and_list_matches() {
    use meshwork_resources::authorization::{ConditionKey, MetadataMatch, Pattern};
    let policies = r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-metadata, namespace: istio-system}
spec:
  action: DENY
  rules:
  - when:
    - key: experimental.envoy.filters.http.ext_authz[tier]
      values: ["free", "[ops]"]
      notValues: ["tr*"]
    - key: experimental.envoy.filters.network.mysql_proxy[db.table]
      values: ["[update]"]
"#;
    let c = compile(&format!("{SEED_003}{policies}"));
    let when = &c.gateways[0].authorization[0].rules[0].when;
    let ConditionKey::FilterMetadata(ext) = &when[0].key else {
        panic!("{when:?}")
    };
    assert_eq!(
        (ext.filter.as_str(), ext.key.as_str()),
        ("envoy.filters.http.ext_authz", "tier")
    );
    assert_eq!(
        ext.values,
        [
            MetadataMatch::String(Pattern::Exact("free".into())),
            MetadataMatch::ListOneOf(Pattern::Exact("ops".into()))
        ]
    );
    assert_eq!(
        ext.not_values,
        [MetadataMatch::String(Pattern::Prefix("tr".into()))]
    );
    let ConditionKey::FilterMetadata(mysql) = &when[1].key else {
        panic!("{when:?}")
    };
    // The key is one key, dots and all, as Istio reads it.
    assert_eq!(
        (mysql.filter.as_str(), mysql.key.as_str()),
        ("envoy.filters.network.mysql_proxy", "db.table")
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("istio-system/by-metadata")
                && w.contains("envoy.filters.network.mysql_proxy, a filter meshwork does not run")),
        "{:?}",
        c.warnings
    );
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
}
