//! Sidecars and gateways compiled per proxy, as the control plane compiles them for each
//! connecting proxy: the workload behind an address, Sidecar ingress and egress listeners,
//! mesh VirtualServices between services, and `exportTo` scoping.

mod common;

use std::collections::BTreeMap;

use common::{sidecar_config, snapshot};
use meshwork_model::proxy::{MeshSnapshot, compile_proxy, find_workload, resolve_node};
use meshwork_resources::listener::ServerProtocol;
use meshwork_resources::route::RouteAction;
use meshwork_resources::{Node, ProxyConfig, Role};

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata:
  name: secret-db
  namespace: other
  annotations: {networking.istio.io/exportTo: "."}
spec:
  selector: {app: secret-db}
  ports: [{name: tcp-db, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage-v1, namespace: default}
spec:
  address: 127.0.10.1
  labels: {app: productpage, version: v1}
  serviceAccount: bookinfo-productpage
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 127.0.10.3, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec: {address: 127.0.10.4, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: secret-db, namespace: other}
spec: {address: 127.0.10.9, labels: {app: secret-db}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:19080
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.11.1
    hosts: ["*/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:19083
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-from-gateway, namespace: default}
spec:
  hosts: [ratings]
  gateways: [istio-system/public]
  http:
  - route: [{destination: {host: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

fn sidecar(snap: &MeshSnapshot, ns: &str, ip: &str) -> (ProxyConfig, Vec<String>) {
    sidecar_config(snap, ns, ip, None)
}

/// Some warning says `text`.
fn assert_warned(warnings: &[String], text: &str) {
    assert!(
        warnings.iter().any(|w| w.contains(text)),
        "{text:?} in {warnings:?}"
    );
}

#[test]
fn the_workload_behind_an_address_gives_labels_and_service_account() {
    let snap = snapshot(MESH);
    let w = find_workload(&snap.objects, "default", "127.0.10.1").expect("found");
    assert_eq!(w.source, "workloadentry/default/productpage-v1");
    assert_eq!(w.service_account, "bookinfo-productpage");
    assert_eq!(w.labels.get("app").map(String::as_str), Some("productpage"));
    assert!(find_workload(&snap.objects, "other", "127.0.10.1").is_none());
    // Labels the proxy gives win over the workload's.
    let node = resolve_node(
        Node {
            labels: BTreeMap::from([("version".to_string(), "v9".to_string())]),
            ..Node::default()
        },
        Some(&w),
    );
    assert_eq!(node.labels.get("version").map(String::as_str), Some("v9"));
    assert_eq!(
        node.labels.get("app").map(String::as_str),
        Some("productpage")
    );
    assert_eq!(node.workload_name, "productpage-v1");
}

#[test]
fn ingress_hands_requests_to_the_app_and_egress_routes_by_the_mesh_virtual_service() {
    let snap = snapshot(MESH);
    let (config, warnings) = sidecar(&snap, "default", "127.0.10.1");
    assert!(warnings.is_empty(), "{warnings:?}");
    // Ingress: the workload's address (the default bind), to the app's port.
    // PERMISSIVE by default: the mTLS server, then the plaintext one, both to the app.
    let inbound = &config.listeners["127.0.10.1_9080"];
    let plain = inbound.servers.last().unwrap();
    assert_eq!(plain.protocol, ServerProtocol::Http);
    assert_eq!(plain.route_table, "inbound|9080");
    assert_eq!(inbound.servers[0].route_table, "inbound|9080");
    let app = &config.endpoints["inbound|9080||"].endpoints[0];
    assert_eq!((app.address.as_str(), app.port), ("127.0.0.1", 19080));
    // Egress: the bind given, route table named by the port.
    let outbound = &config.listeners["127.0.11.1_9080"];
    assert_eq!(outbound.servers[0].route_table, "9080");
    let table = &config.route_tables["9080"];
    let reviews = table
        .virtual_hosts
        .iter()
        .find(|v| v.name == "reviews.default.svc.cluster.local:9080")
        .expect("reviews is routed");
    for d in [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
    ] {
        assert!(reviews.domains.iter().any(|x| x == d), "{d}");
    }
    // end-user: jason to v2, then 90/10.
    assert_eq!(reviews.routes.len(), 2);
    assert_eq!(reviews.routes[0].matches[0].headers[0].name, "end-user");
    let RouteAction::Forward(split) = &reviews.routes[1].action else {
        panic!("forwards")
    };
    let weights: Vec<(&str, u32)> = split
        .iter()
        .map(|w| (w.cluster.as_str(), w.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("outbound|9080|v1|reviews.default.svc.cluster.local", 90),
            ("outbound|9080|v2|reviews.default.svc.cluster.local", 10)
        ]
    );
    // Subsets: each workload's address on the target port (its sidecar's ingress).
    let v2 = &config.endpoints["outbound|9080|v2|reviews.default.svc.cluster.local"];
    assert_eq!(v2.endpoints.len(), 1);
    assert_eq!(v2.endpoints[0].address, "127.0.10.4");
    assert_eq!(v2.endpoints[0].port, 9080);
    // A VirtualService bound only to a gateway does not route the mesh: ratings gets the
    // default route.
    let ratings = table
        .virtual_hosts
        .iter()
        .find(|v| v.name == "ratings.default.svc.cluster.local:9080")
        .expect("ratings is reachable");
    assert_eq!(ratings.routes[0].name, "default");
}

#[test]
fn export_to_hides_a_service_from_other_namespaces() {
    let snap = snapshot(MESH);
    let (config, _) = sidecar(&snap, "default", "127.0.10.1");
    let hosts: Vec<&str> = config.route_tables["9080"]
        .virtual_hosts
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        !hosts.iter().any(|h| h.starts_with("secret-db")),
        "{hosts:?}"
    );
    assert!(!config.clusters.keys().any(|c| c.contains("secret-db")));
}

#[test]
fn egress_hosts_scope_what_a_sidecar_sees() {
    let yaml = MESH.replace(
        r#"hosts: ["*/*"]"#,
        r#"hosts: ["./ratings.default.svc.cluster.local"]"#,
    );
    let snap = snapshot(&yaml);
    let (config, _) = sidecar(&snap, "default", "127.0.10.1");
    let hosts: Vec<&str> = config.route_tables["9080"]
        .virtual_hosts
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(hosts, ["ratings.default.svc.cluster.local:9080"]);
}

#[test]
fn a_workload_without_its_own_sidecar_takes_the_namespace_default() {
    let snap = snapshot(MESH);
    let (config, _) = sidecar(&snap, "default", "127.0.10.3");
    assert_eq!(
        config.endpoints["inbound|9080||"].endpoints[0].port, 19083,
        "the namespace's Sidecar without a selector"
    );
    assert!(config.listeners.contains_key("127.0.10.3_9080"));
    assert_eq!(
        config.listeners.len(),
        1,
        "no egress in the default Sidecar"
    );
}

#[test]
fn a_sidecar_nothing_configures_is_warned_about() {
    let snap = snapshot(MESH);
    let (config, warnings) = sidecar(&snap, "other", "127.0.10.9");
    assert!(config.listeners.is_empty());
    assert_warned(&warnings, "no Sidecar resource selects it");
}

#[test]
fn compilation_is_deterministic() {
    let snap = snapshot(MESH);
    let a = sidecar(&snap, "default", "127.0.10.1");
    let b = sidecar(&snap, "default", "127.0.10.1");
    assert_eq!(a.0, b.0);
}

/// A second config: TCP ingress and egress, the 0.0.0.0 endpoint, egress without a port,
/// sourceLabels and sourceNamespace, two VirtualServices for one host, exportTo on
/// VirtualServices, DestinationRules and ServiceEntries, and a Pod as the workload.
const MORE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web, track: canary}}
spec:
  serviceAccountName: web
  containers: [{name: web, image: web}]
status: {podIP: 127.0.20.1}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  selector: {app: db}
  ports: [{name: tcp-db, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: api-1, namespace: shop}
spec: {address: 127.0.20.5, labels: {app: api, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: other}
spec:
  hosts: [private.example.com]
  exportTo: ["."]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.30.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: public, namespace: other}
spec:
  hosts: [public.example.com]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.30.2}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web, namespace: shop}
spec:
  workloadSelector: {labels: {app: web}}
  ingress:
  - port: {number: 9000, protocol: TCP, name: tcp}
    defaultEndpoint: 0.0.0.0:19000
  egress:
  - port: {number: 5432, protocol: TCP, name: tcp-db}
    hosts: ["./db.shop.svc.cluster.local"]
  - port: {number: 8080, protocol: HTTP, name: http}
    bind: 127.0.21.1
    hosts: ["shop/*", "other/*"]
  - hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-old, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [api]
  http:
  - name: canary-only
    match: [{sourceLabels: {track: canary}}]
    route: [{destination: {host: api, subset: v1}}]
  - name: other-namespace-only
    match: [{sourceNamespace: elsewhere}]
    route: [{destination: {host: api}}]
  - name: everyone
    route: [{destination: {host: api}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-new, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  hosts: [api]
  http:
  - name: newer
    route: [{destination: {host: api}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: public-hidden, namespace: other}
spec:
  hosts: [public.example.com]
  exportTo: ["."]
  http:
  - name: hidden-route
    route: [{destination: {host: public.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec:
  host: api
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: public-hidden, namespace: other}
spec:
  host: public.example.com
  exportTo: ["."]
  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 1s}}}
"#;

#[test]
fn a_pod_is_a_workload_too() {
    let snap = snapshot(MORE);
    let w = find_workload(&snap.objects, "shop", "127.0.20.1").expect("the pod");
    assert_eq!(w.source, "pod/shop/web-0");
    assert_eq!(w.service_account, "web");
}

#[test]
fn tcp_ports_forward_bytes_and_zero_address_endpoints_are_the_workload() {
    let snap = snapshot(MORE);
    let (config, warnings) = sidecar(&snap, "shop", "127.0.20.1");
    // Ingress TCP: the workload's address as bind, 0.0.0.0 meaning the workload's address.
    let inbound = &config.listeners["127.0.20.1_9000"];
    let plain = inbound.servers.last().unwrap();
    assert_eq!(plain.protocol, ServerProtocol::Tcp);
    assert_eq!(
        plain.tcp_routes[0].destinations[0].cluster,
        "inbound|9000||"
    );
    assert_eq!(
        inbound.servers[0].protocol,
        ServerProtocol::Tls,
        "mTLS terminated, then TCP"
    );
    let app = &config.endpoints["inbound|9000||"].endpoints[0];
    assert_eq!((app.address.as_str(), app.port), ("127.0.20.1", 19000));
    // Egress TCP: 127.0.0.1 by default, one service.
    let db = &config.listeners["127.0.0.1_5432"];
    assert_eq!(db.servers[0].protocol, ServerProtocol::Tcp);
    assert_eq!(
        db.servers[0].tcp_routes[0].destinations[0].cluster,
        "outbound|5432||db.shop.svc.cluster.local"
    );
    // An egress listener without a port is left out, with a warning.
    assert_eq!(config.listeners.len(), 3, "{:?}", config.listeners.keys());
    assert_warned(&warnings, "without a port needs traffic capture");
}

#[test]
fn source_matches_apply_per_sidecar_and_the_oldest_virtual_service_wins() {
    let snap = snapshot(MORE);
    let routes = |ip: &str| -> Vec<String> {
        let (config, _) = sidecar(&snap, "shop", ip);
        config.route_tables["8080"]
            .virtual_hosts
            .iter()
            .find(|v| v.name == "api.shop.svc.cluster.local:8080")
            .expect("api is routed")
            .routes
            .iter()
            .map(|r| r.name.clone())
            .collect()
    };
    // The canary pod matches sourceLabels; nobody here is in namespace "elsewhere"; the
    // newer VirtualService for the same host does not apply.
    assert_eq!(routes("127.0.20.1"), ["canary-only", "everyone"]);
}

#[test]
fn export_to_of_service_entries_virtual_services_and_destination_rules_is_honoured() {
    let snap = snapshot(MORE);
    let (config, _) = sidecar(&snap, "shop", "127.0.20.1");
    let hosts: Vec<&str> = config.route_tables["8080"]
        .virtual_hosts
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert!(hosts.contains(&"public.example.com:8080"), "{hosts:?}");
    assert!(!hosts.iter().any(|h| h.starts_with("private")), "{hosts:?}");
    let public = config.route_tables["8080"]
        .virtual_hosts
        .iter()
        .find(|v| v.name == "public.example.com:8080")
        .unwrap();
    assert_eq!(
        public.routes[0].name, "default",
        "the VirtualService is not exported here"
    );
    let cluster = &config.clusters["outbound|8080||public.example.com"];
    assert_eq!(
        cluster.connect_timeout_ms, 10_000,
        "nor is the DestinationRule"
    );
}

#[test]
fn egress_host_entries_match_by_namespace_and_name() {
    let visible = |hosts: &str| -> Vec<String> {
        let yaml = MESH.replace(r#"hosts: ["*/*"]"#, &format!("hosts: {hosts}"));
        let snap = snapshot(&yaml);
        let (config, _) = sidecar(&snap, "default", "127.0.10.1");
        let mut out: Vec<String> = config.route_tables["9080"]
            .virtual_hosts
            .iter()
            .map(|v| v.name.split('.').next().unwrap().to_string())
            .collect();
        out.sort();
        out
    };
    assert_eq!(visible(r#"["./*"]"#), ["ratings", "reviews"]);
    assert_eq!(visible(r#"["default/*"]"#), ["ratings", "reviews"]);
    assert_eq!(
        visible(r#"["*/reviews.default.svc.cluster.local"]"#),
        ["reviews"]
    );
    assert_eq!(
        visible(r#"["*/*.default.svc.cluster.local"]"#),
        ["ratings", "reviews"]
    );
    assert_eq!(visible(r#"["~/*"]"#), Vec::<String>::new());
    // secret-db of namespace other is exported to "." only: never seen from default.
    assert_eq!(visible(r#"["other/*"]"#), Vec::<String>::new());
}

#[test]
fn sidecars_of_one_class_share_their_class_part_and_differ_only_in_their_own() {
    use meshwork_model::proxy::{ProxyClass, compile_class, compile_own, merge};
    let snap = snapshot(MESH);
    let node = |ip: &str| Node {
        id: format!("{ip}.default"),
        role: Role::Sidecar,
        namespace: "default".into(),
        labels: BTreeMap::from([
            ("app".to_string(), "productpage".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]),
        ips: vec![ip.into()],
        ..Node::default()
    };
    let (a, b) = (node("127.0.10.1"), node("127.0.10.41"));
    assert_eq!(ProxyClass::of(&a), ProxyClass::of(&b));
    // The class part reads nothing of the address: the same for both.
    let (class, _) = compile_class(&snap, &ProxyClass::of(&a));
    assert!(
        class.listeners.contains_key("127.0.11.1_9080"),
        "egress is shared"
    );
    assert!(!class.listeners.keys().any(|l| l.starts_with("127.0.10.")));
    // Each own part holds its ingress on its own address, and its identity.
    let (own_b, _) = compile_own(&snap, &b);
    assert!(own_b.listeners.contains_key("127.0.10.41_9080"));
    assert_eq!(own_b.node.id, "127.0.10.41.default");
    // Together they are what the proxy runs.
    let (whole, _) = compile_proxy(&snap, &b);
    assert_eq!(merge(&class, own_b), whole);
}

#[test]
fn clients_use_mtls_to_mesh_workloads_and_servers_follow_peer_authentication() {
    use meshwork_resources::cluster::UpstreamTlsMode;
    let snap = snapshot(MESH);
    let (config, _) = sidecar(&snap, "default", "127.0.10.1");
    // reviews' workloads have sidecars (the namespace's Sidecar has ingress): auto mTLS.
    let tls = config.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
        .tls
        .as_ref()
        .expect("mTLS to a mesh workload");
    assert_eq!(tls.mode, UpstreamTlsMode::Mutual);
    assert_eq!(tls.client_certificate.as_deref(), Some("default"));
    assert_eq!(tls.trusted_ca.as_deref(), Some("ROOTCA"));
    assert_eq!(
        tls.subject_alt_names,
        ["spiffe://cluster.local/ns/default/sa/default"]
    );
    assert_eq!(
        tls.sni.as_deref(),
        Some("outbound_.9080_.v1_.reviews.default.svc.cluster.local")
    );
    // ratings has no workload with a proxy: plaintext.
    assert!(
        config.clusters["outbound|9080||ratings.default.svc.cluster.local"]
            .tls
            .is_none()
    );
    // No PeerAuthentication: PERMISSIVE, mTLS and plaintext on the port.
    let protocols = |c: &ProxyConfig| -> Vec<ServerProtocol> {
        c.listeners["127.0.10.1_9080"]
            .servers
            .iter()
            .map(|s| s.protocol)
            .collect()
    };
    assert_eq!(
        protocols(&config),
        [ServerProtocol::Https, ServerProtocol::Http]
    );
    let strict = format!(
        "{MESH}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: default}}\nspec:\n  mtls: {{mode: STRICT}}\n"
    );
    let (config, _) = sidecar(&snapshot(&strict), "default", "127.0.10.1");
    assert_eq!(protocols(&config), [ServerProtocol::Https]);
    let server = &config.listeners["127.0.10.1_9080"].servers[0];
    let ctx = server.tls.as_ref().unwrap();
    assert_eq!(
        ctx.client_ca.as_deref(),
        Some("ROOTCA"),
        "a client certificate is required"
    );
    let disabled = strict.replace("mode: STRICT", "mode: DISABLE");
    let (config, _) = sidecar(&snapshot(&disabled), "default", "127.0.10.1");
    assert_eq!(protocols(&config), [ServerProtocol::Http]);
    // Toward a DISABLE server, auto mTLS sends plaintext.
    assert!(
        config.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
            .tls
            .is_none()
    );
    // A DestinationRule ISTIO_MUTUAL asks for mTLS whatever auto mTLS would do.
    let explicit = disabled.replace(
        "  host: reviews\n  subsets:",
        "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n  subsets:",
    );
    assert_ne!(explicit, disabled);
    let (config, _) = sidecar(&snapshot(&explicit), "default", "127.0.10.1");
    assert!(
        config.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
            .tls
            .is_some()
    );
}

#[test]
fn meshwork_up_without_a_ca_sends_plaintext_to_mesh_workloads() {
    let snap = snapshot(&format!(
        "{MESH}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: public, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [\"*/*\"]}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: front, namespace: default}}\nspec:\n  hosts: [\"*\"]\n  gateways: [istio-system/public]\n  http: [{{route: [{{destination: {{host: reviews, subset: v1}}}}]}}]\n"
    ));
    let compiled = meshwork_model::compile_gateways(&snap.objects, &snap.mesh);
    let cluster =
        &compiled.gateways[0].clusters["outbound|9080|v1|reviews.default.svc.cluster.local"];
    assert!(cluster.tls.is_none());
    // Under the control plane the same gateway sends mTLS.
    let node = Node {
        id: "gw.istio-system".into(),
        role: Role::Gateway,
        namespace: "istio-system".into(),
        labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
        ..Node::default()
    };
    let (config, _) = compile_proxy(&snap, &node);
    assert!(
        config.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
            .tls
            .is_some()
    );
}

#[test]
fn the_tls_mode_label_marks_a_mesh_workload() {
    let cluster = "outbound|8080||api.shop.svc.cluster.local";
    let (config, _) = sidecar(&snapshot(MORE), "shop", "127.0.20.1");
    assert!(
        config.clusters[cluster].tls.is_none(),
        "no proxy in front of api-1"
    );
    let labelled = MORE.replace(
        "spec: {address: 127.0.20.5, labels: {app: api, version: v1}}",
        "spec: {address: 127.0.20.5, labels: {app: api, version: v1, security.istio.io/tlsMode: istio}}",
    );
    assert_ne!(labelled, MORE);
    let (config, _) = sidecar(&snapshot(&labelled), "shop", "127.0.20.1");
    assert!(
        config.clusters[cluster].tls.is_some(),
        "Istio's label says it has one"
    );
}

#[test]
fn without_enable_auto_mtls_clients_send_plaintext_unless_a_destination_rule_asks() {
    let mut snap = snapshot(MESH);
    snap.mesh.enable_auto_mtls = false;
    let (config, _) = sidecar(&snap, "default", "127.0.10.1");
    assert!(
        config.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
            .tls
            .is_none()
    );
}

#[test]
fn an_egress_listener_on_a_non_loopback_address_is_warned_about() {
    let (_, warnings) = sidecar(&snapshot(MESH), "default", "127.0.10.1");
    assert!(
        !warnings.iter().any(|w| w.contains("not a loopback")),
        "{warnings:?}"
    );
    let open = MESH.replace("bind: 127.0.11.1", "bind: 0.0.0.0");
    assert_ne!(open, MESH);
    let (_, warnings) = sidecar(&snapshot(&open), "default", "127.0.10.1");
    assert_warned(&warnings, "binds 0.0.0.0, which is not a loopback address");
}

#[test]
fn destination_rules_are_looked_for_in_the_client_then_the_service_then_the_root_namespace() {
    let rule = |ns: &str, secs: u32| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api, namespace: {ns}}}\nspec:\n  host: api.server.svc.cluster.local\n  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: {secs}s}}}}}}\n"
        )
    };
    let base = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: server}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: api, namespace: server}
spec: {address: 127.0.40.2, labels: {app: api}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: client}
spec:
  egress:
  - port: {number: 8080, protocol: HTTP, name: http}
    bind: 127.0.41.1
    hosts: ["*/*"]
"#;
    let timeout = |rules: &[(&str, u32)]| {
        let mut yaml = base.to_string();
        for (ns, secs) in rules {
            yaml.push_str(&rule(ns, *secs));
        }
        let (config, _) = sidecar(&snapshot(&yaml), "client", "127.0.40.1");
        config.clusters["outbound|8080||api.server.svc.cluster.local"].connect_timeout_ms
    };
    let all = [
        ("third", 5),
        ("istio-system", 4),
        ("server", 3),
        ("client", 2),
    ];
    assert_eq!(timeout(&all), 2_000, "the client's namespace first");
    assert_eq!(timeout(&all[..3]), 3_000, "then the service's");
    assert_eq!(timeout(&all[..2]), 4_000, "then the root namespace");
    assert_eq!(
        timeout(&all[..1]),
        10_000,
        "a rule in another namespace does not apply"
    );
}

#[test]
fn a_sidecar_takes_a_destination_rule_credential_from_its_own_namespace_only() {
    let secret = |ns: &str| {
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: client-cred, namespace: {ns}}}\ntype: Opaque\ndata: {{cert: Y2VydA==, key: a2V5, cacert: Y2E=}}\n"
        )
    };
    let base = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: server}
spec:
  hosts: [api.example.com]
  ports: [{number: 8443, name: tls, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: server}
spec:
  host: api.example.com
  trafficPolicy: {tls: {mode: MUTUAL, credentialName: client-cred}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: client}
spec:
  egress:
  - port: {number: 8443, protocol: HTTP, name: http}
    bind: 127.0.41.1
    hosts: ["*/*"]
"#;
    let compiled = |secret_ns: &str| {
        let yaml = format!("{base}{}", secret(secret_ns));
        sidecar(&snapshot(&yaml), "client", "127.0.40.1")
    };
    let cluster = "outbound|8443||api.example.com";
    let (config, _) = compiled("client");
    assert!(
        config.clusters[cluster].tls.is_some(),
        "the proxy's namespace has the credential"
    );
    let (config, warnings) = compiled("server");
    assert!(
        config.clusters[cluster].tls.is_none(),
        "the rule's namespace is not looked in"
    );
    assert_warned(&warnings, "Secret client/client-cred not found");
}
