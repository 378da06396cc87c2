//! Sidecars whose traffic iptables redirects to them: what the capture listeners hand
//! connections to, compiled per proxy as the control plane compiles it.

mod common;

use common::{sidecar_config, snapshot};
use meshwork_model::proxy::{MeshSnapshot, compile_proxy};
use meshwork_resources::cluster::OriginalDestination;
use meshwork_resources::listener::{Capture, ServerProtocol};
use meshwork_resources::node::Interception;
use meshwork_resources::route::RouteAction;
use meshwork_resources::{Node, ProxyConfig, Role};

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: 10.96.0.30
  selector: {app: db}
  ports: [{name: tcp-postgres, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: default}
spec:
  clusterIP: 10.96.0.40
  selector: {app: legacy}
  ports: [{name: legacy, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage-v1, namespace: default}
spec: {address: 10.0.0.1, labels: {app: productpage}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 10.0.0.3, labels: {app: reviews}, serviceAccount: bookinfo-reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db, namespace: default}
spec: {address: 10.0.0.5, labels: {app: db}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.external.test]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.30}]
"#;

fn captured(snap: &MeshSnapshot, ip: &str) -> (ProxyConfig, Vec<String>) {
    let ports = Interception {
        outbound_port: 15001,
        inbound_port: 15006,
    };
    sidecar_config(snap, "default", ip, Some(ports))
}

#[test]
fn only_the_capture_ports_are_bound_and_services_get_listeners_of_their_original_destination() {
    let (config, _) = captured(&snapshot(MESH), "10.0.0.1");
    let bound: Vec<(&str, u16, Option<Capture>)> = config
        .listeners
        .values()
        .filter(|l| l.bind_to_port)
        .map(|l| (l.name.as_str(), l.bind_port, l.capture))
        .collect();
    assert_eq!(
        bound,
        [
            ("virtualInbound", 15006, Some(Capture::Inbound)),
            ("virtualOutbound", 15001, Some(Capture::Outbound))
        ]
    );
    // HTTP on 9080: one listener for the port, routed by Host, the VIP among the names.
    let http = &config.listeners["0.0.0.0_9080"];
    assert!(http.outbound && !http.bind_to_port);
    assert_eq!(http.servers[0].protocol, ServerProtocol::Http);
    let table = &config.route_tables[&http.servers[0].route_table];
    let reviews = table
        .virtual_hosts
        .iter()
        .find(|v| v.name == "reviews.default.svc.cluster.local:9080")
        .expect("reviews");
    for name in ["reviews", "reviews.default", "10.96.0.20"] {
        assert!(reviews.domains.iter().any(|d| d == name), "{name}");
    }
    // The undeclared `legacy` port is told apart from HTTP by its bytes: its address
    // routes the rest.
    let tcp = &http.servers[1];
    assert_eq!(tcp.protocol, ServerProtocol::Tcp);
    assert_eq!(tcp.tcp_routes[0].destination_subnets, ["10.96.0.40/32"]);
    assert_eq!(
        tcp.tcp_routes[0].destinations[0].cluster,
        "outbound|9080||legacy.default.svc.cluster.local"
    );
    // Unknown hosts pass through (ALLOW_ANY, the default).
    let last = table.virtual_hosts.last().unwrap();
    assert_eq!(last.name, "allow_any");
    assert_eq!(tcp.tcp_routes.last().unwrap().name, "PassthroughCluster");
    assert_eq!(
        config.clusters["PassthroughCluster"].original_destination,
        Some(OriginalDestination::AsSent)
    );
    // A declared TCP port: a listener for its address.
    let db = &config.listeners["10.96.0.30_5432"];
    assert_eq!(db.servers.len(), 1);
    assert_eq!(
        db.servers[0].tcp_routes[0].destinations[0].cluster,
        "outbound|5432||db.default.svc.cluster.local"
    );
    // Any other port passes through too.
    let other = &config.listeners["0.0.0.0_0"];
    assert_eq!(other.servers[0].tcp_routes[0].name, "PassthroughCluster");
}

#[test]
fn inbound_ports_hand_calls_to_the_app_under_the_workloads_mtls_mode() {
    let (config, _) = captured(&snapshot(MESH), "10.0.0.3");
    let inbound = &config.listeners["10.0.0.3_9080"];
    assert!(!inbound.outbound && !inbound.bind_to_port);
    let protocols: Vec<ServerProtocol> = inbound.servers.iter().map(|s| s.protocol).collect();
    assert_eq!(protocols, [ServerProtocol::Https], "STRICT: mTLS only");
    let endpoints = &config.endpoints["inbound|9080||"].endpoints;
    assert_eq!(
        (endpoints[0].address.as_str(), endpoints[0].port),
        ("10.0.0.3", 9080),
        "the app at the pod's address"
    );
    assert_eq!(
        config.clusters["inbound|9080||"]
            .connections
            .source_address
            .as_deref(),
        Some("127.0.0.6"),
        "from where iptables lets it by"
    );
    assert_eq!(
        config.clusters["inbound|9080||"].host,
        "reviews.default.svc.cluster.local"
    );
    // Ports no service declares go to the app too, under the same mode.
    let rest = &config.listeners["10.0.0.3_0"];
    assert_eq!(rest.servers[0].protocol, ServerProtocol::Tls);
    assert_eq!(
        config.clusters["InboundPassthroughCluster"].original_destination,
        Some(OriginalDestination::AsSent)
    );
    assert_eq!(
        config.clusters["InboundPassthroughCluster"]
            .connections
            .source_address
            .as_deref(),
        Some("127.0.0.6")
    );
}

#[test]
fn registry_only_answers_unknown_hosts_with_502_and_finds_no_route_for_other_bytes() {
    let yaml = format!(
        "{MESH}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: default}}\nspec:\n  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}\n  egress:\n  - hosts: [\"./*\"]\n"
    );
    let (config, _) = captured(&snapshot(&yaml), "10.0.0.1");
    let table = &config.route_tables["9080"];
    let last = table.virtual_hosts.last().unwrap();
    assert_eq!(last.name, "block_all");
    assert!(matches!(
        last.routes[0].action,
        RouteAction::DirectResponse { status: 502, .. }
    ));
    let port = &config.listeners["0.0.0.0_9080"];
    assert!(
        port.servers[1]
            .tcp_routes
            .iter()
            .all(|r| r.name != "PassthroughCluster"),
        "no passthrough"
    );
    let other = &config.listeners["0.0.0.0_0"];
    let protocols: Vec<ServerProtocol> = other.servers.iter().map(|s| s.protocol).collect();
    assert_eq!(protocols, [ServerProtocol::Http, ServerProtocol::Tcp]);
    assert!(other.servers[1].tcp_routes.is_empty(), "reset");
    assert!(!config.clusters.contains_key("PassthroughCluster"));
}

#[test]
fn a_proxy_without_interception_gets_no_capture_listeners() {
    let snap = snapshot(MESH);
    let node = Node {
        id: "x.default".into(),
        role: Role::Sidecar,
        namespace: "default".into(),
        ips: vec!["10.0.0.1".into()],
        ..Node::default()
    };
    let (config, warnings) = compile_proxy(&snap, &node);
    assert!(config.listeners.is_empty(), "{:?}", config.listeners.keys());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("without traffic capture"))
    );
}

#[test]
fn the_dns_proxy_knows_every_name_a_client_may_use_and_service_entries_get_an_address() {
    let (config, _) = captured(&snapshot(MESH), "10.0.0.1");
    let names = config.names.expect("a name table");
    for name in [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
    ] {
        assert_eq!(names.hosts[name], ["10.96.0.20"], "{name}");
    }
    // A ServiceEntry without addresses gets one, which its names resolve to and which
    // routes the captured call.
    let api = &names.hosts["api.external.test"];
    assert!(api[0].starts_with("240.240."), "{api:?}");
    let table = &config.route_tables["8080"];
    let vhost = table
        .virtual_hosts
        .iter()
        .find(|v| v.name == "api.external.test:8080")
        .expect("the ServiceEntry's virtual host");
    assert!(vhost.domains.contains(&api[0]), "{:?}", vhost.domains);
    // A gateway or an uncaptured sidecar has none.
    let node = Node {
        id: "x.default".into(),
        role: Role::Sidecar,
        namespace: "default".into(),
        ips: vec!["10.0.0.1".into()],
        ..Node::default()
    };
    assert!(compile_proxy(&snapshot(MESH), &node).0.names.is_none());
}
