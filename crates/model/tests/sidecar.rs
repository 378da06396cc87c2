//! Sidecars and gateways compiled per proxy, as the control plane compiles them for each
//! connecting proxy: the workload behind an address, Sidecar ingress and egress listeners,
//! mesh VirtualServices between services, and `exportTo` scoping.

use std::collections::BTreeMap;
use std::path::Path;

use meshwork_api::load::{LoadOptions, load_str};
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

fn snapshot(yaml: &str) -> MeshSnapshot {
    let out = load_str(Path::new("mesh.yaml"), yaml, &LoadOptions::default());
    assert!(!out.has_errors(), "{:#?}", out.diagnostics);
    MeshSnapshot::new(
        out.config.objects.into_iter().map(|o| o.object).collect(),
        out.config.mesh,
    )
}

fn sidecar(snap: &MeshSnapshot, ns: &str, ip: &str) -> (ProxyConfig, Vec<String>) {
    let found = find_workload(&snap.objects, ns, ip);
    let node = resolve_node(
        Node {
            id: format!("{ip}.{ns}"),
            role: Role::Sidecar,
            namespace: ns.into(),
            ips: vec![ip.into()],
            ..Node::default()
        },
        found.as_ref(),
    );
    let (config, warnings) = compile_proxy(snap, &node);
    // What the control plane streams decodes to what it compiled.
    let wire = serde_json::to_vec(&config).expect("serializes");
    let back: ProxyConfig = serde_json::from_slice(&wire).expect("deserializes");
    assert_eq!(back, config);
    (config, warnings)
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
    let inbound = &config.listeners["127.0.10.1_9080"];
    assert_eq!(inbound.servers[0].protocol, ServerProtocol::Http);
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
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("no Sidecar resource selects it")),
        "{warnings:?}"
    );
}

#[test]
fn compilation_is_deterministic() {
    let snap = snapshot(MESH);
    let a = sidecar(&snap, "default", "127.0.10.1");
    let b = sidecar(&snap, "default", "127.0.10.1");
    assert_eq!(a.0, b.0);
}
