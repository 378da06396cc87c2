//! How the gateway picks and speaks to endpoints, as docs/resilience.md says: RANDOM,
//! PASSTHROUGH, consistent hashing on a header, locality from topology labels and
//! `localityLbSetting.enabled: false`, the service namespace's DestinationRule first,
//! `h2UpgradePolicy` (DestinationRule and mesh config), one HTTP/2 connection per
//! endpoint, `useClientProtocol`, `maxRequestsPerConnection`, `http.idleTimeout` and
//! `tcpKeepalive` on HTTP routes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::*;

/// The echo name of each of the answers to `url` (a curl glob), in order.
fn names_in_order(url: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %header{x-echo-name}\n",
        "-H",
        APP_HOST,
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let out = curl(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (code, name) = l.split_once(' ').unwrap();
            assert_eq!(code, "200", "every request succeeds: {l}");
            name.to_string()
        })
        .collect()
}

#[test]
fn random_spreads_requests_in_no_fixed_order() {
    let mut mesh = Mesh::new("random");
    let http = free_port();
    let ports: Vec<u16> = (0..3).map(|i| mesh.echo(&format!("r{i}"))).collect();
    app_config(
        &mesh,
        http,
        &ports,
        "    loadBalancer: {simple: RANDOM}",
        APP_ROUTE,
    );
    mesh.up(&[]);
    let names = names_in_order(&format!("http://127.0.0.1:{http}/x?n=[1-300]"), &[]);
    assert_eq!(names.len(), 300);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &names {
        *counts.entry(n).or_default() += 1;
    }
    // 100 expected each; 50..=150 is more than 6 standard deviations.
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|c| (50..=150).contains(c)),
        "{counts:?}"
    );
    // Round robin would repeat one cycle of three; a random pick does not.
    let cyclic = names.iter().enumerate().all(|(i, n)| *n == names[i % 3]);
    assert!(!cyclic, "the picks follow a fixed cycle: {names:?}");
}

#[test]
fn passthrough_is_round_robin_at_a_gateway() {
    let mut mesh = Mesh::new("passthrough-lb");
    let http = free_port();
    let ports: Vec<u16> = (0..2).map(|i| mesh.echo(&format!("p{i}"))).collect();
    app_config(
        &mesh,
        http,
        &ports,
        "    loadBalancer: {simple: PASSTHROUGH}",
        APP_ROUTE,
    );
    mesh.up(&[]);
    let names = names_in_order(&format!("http://127.0.0.1:{http}/x?n=[1-40]"), &[]);
    assert!(
        names.iter().enumerate().all(|(i, n)| *n == names[i % 2]) && names[0] != names[1],
        "endpoints in turn: {names:?}"
    );
}

#[test]
fn a_header_hash_keeps_each_key_on_one_endpoint_and_missing_keys_spread() {
    let mut mesh = Mesh::new("header-hash");
    let http = free_port();
    let ports: Vec<u16> = (0..3).map(|i| mesh.echo(&format!("h{i}"))).collect();
    app_config(
        &mesh,
        http,
        &ports,
        "    loadBalancer: {consistentHash: {httpHeaderName: x-user}}",
        APP_ROUTE,
    );
    mesh.up(&[]);
    let mut by_user: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for user in 0..30 {
        let header = format!("x-user: user-{user}");
        let names = names_in_order(
            &format!("http://127.0.0.1:{http}/x?r=[1-5]"),
            &["-H", &header],
        );
        by_user.entry(user).or_default().extend(names);
    }
    assert!(
        by_user.values().all(|names| names.len() == 1),
        "each key stays on one endpoint: {by_user:?}"
    );
    let used: BTreeSet<&String> = by_user.values().flatten().collect();
    assert!(used.len() >= 2, "keys spread over endpoints: {by_user:?}");
    // Without the header: round robin.
    let names: BTreeSet<String> =
        names_in_order(&format!("http://127.0.0.1:{http}/x?n=[1-30]"), &[])
            .into_iter()
            .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn locality_disabled_uses_every_endpoint_whatever_its_locality() {
    let mut mesh = Mesh::new("locality-off");
    let http = free_port();
    let (near, far) = (mesh.echo("near"), mesh.echo("far"));
    app_config(
        &mesh,
        http,
        &[],
        "    outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 30s}\n    loadBalancer: {simple: ROUND_ROBIN, localityLbSetting: {enabled: false}}",
        APP_ROUTE,
    );
    mesh.config(
        "endpoints.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: near, namespace: apps}}\nspec: {{address: 127.0.0.1, locality: us-east/zone1, labels: {{app: app}}, ports: {{http: {near}}}}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: far, namespace: apps}}\nspec: {{address: 127.0.0.1, locality: eu-west/zone1, labels: {{app: app}}, ports: {{http: {far}}}}}\n"
        ),
    );
    mesh.up(&["--locality", "us-east/zone1"]);
    assert_eq!(
        answers(&[
            "-H",
            APP_HOST,
            &format!("http://127.0.0.1:{http}/x?n=[1-40]")
        ]),
        [("200 far".to_string(), 20), ("200 near".to_string(), 20)].into(),
        "the far region gets its share although the near one is healthy"
    );
}

#[test]
fn an_endpoints_locality_comes_from_its_topology_labels() {
    let mut mesh = Mesh::new("topology-labels");
    let http = free_port();
    let (near, far) = (mesh.echo("near"), mesh.echo("far"));
    app_config(
        &mesh,
        http,
        &[],
        "    outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 30s}",
        APP_ROUTE,
    );
    let entry = |name: &str, region: &str, zone: &str, sub: &str, port: u16| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  address: 127.0.0.1\n  labels: {{app: app, topology.kubernetes.io/region: {region}, topology.kubernetes.io/zone: {zone}, topology.istio.io/subzone: {sub}}}\n  ports: {{http: {port}}}\n"
        )
    };
    mesh.config(
        "endpoints.yaml",
        &(entry("near", "us-east", "zone1", "rack1", near)
            + &entry("far", "us-east", "zone1", "rack2", far)),
    );
    mesh.up(&["--locality", "us-east/zone1/rack1"]);
    assert_eq!(
        answers(&[
            "-H",
            APP_HOST,
            &format!("http://127.0.0.1:{http}/x?n=[1-20]")
        ]),
        [("200 near".to_string(), 20)].into(),
        "the same subzone takes all traffic"
    );
}

#[test]
fn a_joining_endpoint_keeps_warming_up_across_a_reload() {
    let mut mesh = Mesh::new("warmup-reload");
    let http = free_port();
    let old = mesh.echo("old");
    let policy = "    loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 120s}";
    app_config(&mesh, http, &[old], policy, APP_ROUTE);
    mesh.up(&[]);
    let new = mesh.echo("new");
    app_config(&mesh, http, &[old, new], policy, APP_ROUTE);
    let url = format!("http://127.0.0.1:{http}/x?n=[1-50]");
    eventually(Duration::from_secs(10), "the new endpoint", || {
        answers(&["-H", APP_HOST, &url]).contains_key("200 new")
    });
    // A reload that changes nothing about the endpoints: the one that joined is still
    // warming, and the one present at start is still warm.
    let routes = format!(
        "  - match: [{{uri: {{prefix: /reloaded}}}}]\n    directResponse: {{status: 200, body: {{string: reloaded}}}}\n{APP_ROUTE}"
    );
    app_config(&mesh, http, &[old, new], policy, &routes);
    eventually(Duration::from_secs(10), "the reload", || {
        let out = curl(&["-H", APP_HOST, &format!("http://127.0.0.1:{http}/reloaded")]);
        out.stdout == b"reloaded"
    });
    let got = answers(&[
        "-H",
        APP_HOST,
        &format!("http://127.0.0.1:{http}/x?n=[1-400]"),
    ]);
    let to_new = got.get("200 new").copied().unwrap_or(0);
    assert_eq!(got.values().sum::<usize>(), 400, "{got:?}");
    // Round robin alone, or a reload that forgot the join times, would give it half.
    assert!(
        to_new < 120,
        "the joining endpoint still gets a small share: {got:?}"
    );
}

/// The protocol the echo backend saw for one request.
fn upstream_protocol(http: u16, path: &str, extra: &[&str]) -> String {
    let mut args = vec!["-H", APP_HOST];
    args.extend_from_slice(extra);
    let url = format!("http://127.0.0.1:{http}{path}");
    args.push(&url);
    let out = curl(&args);
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    seen["protocol"].as_str().unwrap().to_string()
}

#[test]
fn h2_upgrade_policy_speaks_http2_to_an_http1_port() {
    // From the DestinationRule, or from the mesh config when the rule says nothing.
    for (label, policy, mesh_config) in [
        (
            "h2-upgrade",
            "    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}",
            "",
        ),
        (
            "mesh-h2-upgrade",
            "    loadBalancer: {simple: ROUND_ROBIN}",
            "h2UpgradePolicy: UPGRADE\n",
        ),
    ] {
        let mut mesh = Mesh::new(label);
        let http = free_port();
        let backend = mesh.echo("upgraded");
        app_config(&mesh, http, &[backend], policy, APP_ROUTE);
        let mesh_file = mesh.dir.path().join("mesh.yaml");
        std::fs::write(&mesh_file, mesh_config).unwrap();
        mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);
        assert_eq!(upstream_protocol(http, "/x", &[]), "HTTP/2.0", "{label}");
    }
}

#[test]
fn http2_requests_to_an_endpoint_share_one_connection() {
    let mut mesh = Mesh::new("h2-multiplex");
    let http = free_port();
    let backend = mesh.echo_logged("multiplexed");
    let log = mesh.backends.len() - 1;
    app_config(
        &mesh,
        http,
        &[backend],
        "    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}",
        APP_ROUTE,
    );
    mesh.up(&[]);
    // One request first, so that the connection is up before the burst (a burst on a
    // cold endpoint may open several connections, as docs/resilience.md says).
    assert_eq!(
        status(&["-H", APP_HOST, &format!("http://127.0.0.1:{http}/first")]),
        200
    );
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let url = format!("http://127.0.0.1:{http}/x?delay=5s&client={i}");
            std::thread::spawn(move || status(&["-H", APP_HOST, &url]))
        })
        .collect();
    // All five are at the backend and none has been answered: they are in flight together.
    eventually(
        Duration::from_secs(4),
        "the first request and five more at the backend",
        || mesh.backends[log].stdout().lines().count() == 6,
    );
    assert!(clients.iter().all(|c| !c.is_finished()));
    assert_eq!(
        connections_to(backend),
        1,
        "one connection carries them: {}",
        established_to(backend)
    );
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
}

#[test]
fn the_destination_rule_in_the_services_namespace_is_preferred() {
    // The service's own rule (namespace apps) upgrades to HTTP/2; a rule for the same host
    // in another namespace, read before or after it, says not to.
    for other_file in ["0-other.yaml", "z-other.yaml"] {
        let mut mesh = Mesh::new("dr-namespace");
        let http = free_port();
        let backend = mesh.echo("preferred");
        mesh.config(
            other_file,
            r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: app-elsewhere, namespace: shop}
spec:
  host: app.apps.svc.cluster.local
  trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}}
"#,
        );
        app_config(
            &mesh,
            http,
            &[backend],
            "    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}",
            APP_ROUTE,
        );
        mesh.up(&[]);
        assert_eq!(
            upstream_protocol(http, "/x", &[]),
            "HTTP/2.0",
            "{other_file}"
        );
    }
}

#[test]
fn use_client_protocol_follows_the_clients_http_version() {
    let mut mesh = Mesh::new("client-protocol");
    let http = free_port();
    let backend = mesh.echo("follower");
    app_config(
        &mesh,
        http,
        &[backend],
        "    connectionPool: {http: {useClientProtocol: true}}",
        APP_ROUTE,
    );
    mesh.up(&[]);
    assert_eq!(upstream_protocol(http, "/x", &["--http1.1"]), "HTTP/1.1");
    assert_eq!(
        upstream_protocol(http, "/x", &["--http2-prior-knowledge"]),
        "HTTP/2.0"
    );
}

#[test]
fn every_nth_request_closes_its_upstream_connection() {
    let mut mesh = Mesh::new("per-connection-n");
    let http = free_port();
    let backend = mesh.echo("counted");
    app_config(
        &mesh,
        http,
        &[backend],
        "    connectionPool: {http: {maxRequestsPerConnection: 3}}",
        APP_ROUTE,
    );
    mesh.up(&[]);
    let seen: Vec<(String, Option<String>)> = (0..9)
        .map(|_| {
            let out = curl(&["-H", APP_HOST, &format!("http://127.0.0.1:{http}/x")]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let close = v["headers"]["connection"].as_str().map(str::to_string);
            (v["remote"].as_str().unwrap().to_string(), close)
        })
        .collect();
    let closes = seen
        .iter()
        .filter(|(_, c)| c.as_deref() == Some("close"))
        .count();
    assert_eq!(
        closes, 3,
        "every third request says Connection: close: {seen:?}"
    );
    let remotes: BTreeSet<&String> = seen.iter().map(|(r, _)| r).collect();
    assert_eq!(
        remotes.len(),
        3,
        "three connections carried nine requests: {seen:?}"
    );
}

/// The gateway's established connections to `port`.
fn connections_to(port: u16) -> usize {
    established_to(port).lines().count()
}

#[test]
fn idle_upstream_http_connections_are_closed_after_the_idle_timeout() {
    let mut mesh = Mesh::new("http-idle");
    let http = free_port();
    let idle = mesh.echo("idle");
    let kept = mesh.echo("kept");
    app_config(
        &mesh,
        http,
        &[idle],
        "    connectionPool: {http: {idleTimeout: 300ms}}",
        APP_ROUTE,
    );
    // A second service without idleTimeout: its connection stays open meanwhile.
    mesh.config(
        "kept.yaml",
        &format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: kept, namespace: apps}}
spec:
  hosts: [kept.apps.internal]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {kept}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: kept, namespace: apps}}
spec:
  hosts: [kept.example.test]
  gateways: [istio-system/gw]
  http: [{{route: [{{destination: {{host: kept.apps.internal}}}}]}}]
"#
        ),
    );
    let cfg = std::fs::read_to_string(mesh.dir.path().join("config/config.yaml")).unwrap();
    mesh.config(
        "config.yaml",
        &cfg.replace(
            r#"hosts: ["app.example.test"]"#,
            r#"hosts: ["app.example.test", "kept.example.test"]"#,
        ),
    );
    mesh.up(&[]);
    let get = |host: &str| {
        let out = curl(&["-H", host, &format!("http://127.0.0.1:{http}/x")]);
        let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        seen["remote"].as_str().unwrap().to_string()
    };
    let first = get(APP_HOST);
    let kept_first = get("Host: kept.example.test");
    assert_eq!(connections_to(idle), 1);
    eventually(
        Duration::from_secs(5),
        "the idle upstream connection to close",
        || connections_to(idle) == 0,
    );
    assert_eq!(connections_to(kept), 1, "the default idle timeout is 1h");
    assert_ne!(
        get(APP_HOST),
        first,
        "a new connection after the idle close"
    );
    assert_eq!(get("Host: kept.example.test"), kept_first);
}

#[test]
fn upstream_http_connections_get_the_destination_rule_keepalive() {
    let mut mesh = Mesh::new("http-keepalive");
    let http = free_port();
    let backend = mesh.echo("kept-alive");
    app_config(
        &mesh,
        http,
        &[backend],
        "    connectionPool: {tcp: {tcpKeepalive: {time: 77s, interval: 5s, probes: 3}}}",
        APP_ROUTE,
    );
    mesh.up(&[]);
    assert_eq!(
        status(&["-H", APP_HOST, &format!("http://127.0.0.1:{http}/x")]),
        200
    );
    // The pooled connection to the backend stays open with a timer of about 77 s.
    let timer = keepalive_timer(backend);
    assert!((60..=77).contains(&timer), "{timer}");
}
