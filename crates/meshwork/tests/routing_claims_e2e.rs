//! The routing claims of docs/traffic.md that the other end-to-end files do not cover:
//! VirtualServices merged oldest first, the legacy `name.namespace` gateway reference,
//! ServiceEntry `DNS` resolution and `workloadSelector`, `appProtocol` choosing h2c,
//! requests in flight finishing on the old config across a reload, the TEXT access log,
//! header prefix and `gateways` matches, whole-path rewrites, destination header changes,
//! and the empty 404 of an unrouted request.

mod support;

use std::time::Duration;

use support::*;

fn reply(text: &str) -> String {
    format!("directResponse: {{status: 200, body: {{string: {text}}}}}")
}

fn body(http: u16, host: &str, path: &str) -> String {
    let out = curl(&[
        "-H",
        &format!("Host: {host}"),
        &format!("http://127.0.0.1:{http}{path}"),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn virtual_services_merge_oldest_first_and_legacy_gateway_references_bind() {
    let mut mesh = Mesh::new("merge");
    let http = free_port();
    mesh.config("gateway.yaml", &http_gateway(http, "[shop.example.test]"));
    // Named so that name order and file order disagree with age.
    mesh.config(
        "routes.yaml",
        &format!(
            r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a-newer, namespace: shop, creationTimestamp: "2024-06-01T00:00:00Z"}}
spec:
  hosts: [shop.example.test]
  gateways: [gw.istio-system]
  http:
  - match: [{{uri: {{prefix: /x}}}}]
    {}
  - match: [{{uri: {{prefix: /newer-only}}}}]
    {}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: b-older, namespace: shop, creationTimestamp: "2020-01-01T00:00:00Z"}}
spec:
  hosts: [shop.example.test]
  gateways: [istio-system/gw]
  http:
  - match: [{{uri: {{prefix: /x}}}}]
    {}
"#,
            reply("newer"),
            reply("newer-only"),
            reply("older"),
        ),
    );
    mesh.up(&[]);
    assert_eq!(body(http, "shop.example.test", "/x"), "older");
    assert_eq!(
        body(http, "shop.example.test", "/newer-only"),
        "newer-only",
        "the VirtualService that names its gateway as gw.istio-system is bound"
    );
}

#[test]
fn service_entries_resolve_dns_at_connect_time_and_select_workloads() {
    let mut mesh = Mesh::new("service-entries");
    let http = free_port();
    let by_dns = mesh.echo("by-dns");
    let selected = mesh.echo("selected");
    mesh.config(
        "gateway.yaml",
        &http_gateway(http, "[dns.example.test, vm.example.test]"),
    );
    mesh.config(
        "entries.yaml",
        &format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns, namespace: apps}}
spec:
  hosts: [dns.apps.internal]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {by_dns}}}]
  resolution: DNS
  endpoints: [{{address: localhost}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: vm-1, namespace: apps}}
spec: {{address: 127.0.0.1, labels: {{app: vm}}, ports: {{http: {selected}}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: vm, namespace: apps}}
spec:
  hosts: [vm.apps.internal]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: vm}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: entries, namespace: apps}}
spec:
  hosts: [dns.example.test, vm.example.test]
  gateways: [istio-system/gw]
  http:
  - match: [{{authority: {{exact: dns.example.test}}}}]
    route: [{{destination: {{host: dns.apps.internal}}}}]
  - route: [{{destination: {{host: vm.apps.internal}}}}]
"#
        ),
    );
    mesh.up(&[]);
    let get = |host: &str| {
        answers(&[
            "-H",
            &format!("Host: {host}"),
            &format!("http://127.0.0.1:{http}/x"),
        ])
    };
    assert_eq!(
        get("dns.example.test"),
        [("200 by-dns".to_string(), 1)].into(),
        "localhost, resolved when connecting"
    );
    assert_eq!(
        get("vm.example.test"),
        [("200 selected".to_string(), 1)].into(),
        "the WorkloadEntry the selector picks"
    );
}

#[test]
fn app_protocol_http2_speaks_h2c_upstream() {
    let mut mesh = Mesh::new("app-protocol");
    let http = free_port();
    let backend = mesh.echo("h2");
    app_config(
        &mesh,
        http,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        APP_ROUTE,
    );
    let cfg = std::fs::read_to_string(mesh.dir.path().join("config/config.yaml")).unwrap();
    let with_app_protocol = cfg.replace(
        "ports: [{name: http, port: 80}]",
        "ports: [{name: http, port: 80, appProtocol: http2}]",
    );
    assert_ne!(cfg, with_app_protocol);
    mesh.config("config.yaml", &with_app_protocol);
    mesh.up(&[]);
    let out = curl(&["-H", APP_HOST, &format!("http://127.0.0.1:{http}/x")]);
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["protocol"], "HTTP/2.0",
        "appProtocol wins over the port name"
    );
}

#[test]
fn a_request_in_flight_finishes_on_the_old_config_across_a_reload() {
    let mut mesh = Mesh::new("in-flight");
    let http = free_port();
    let old = Scripted::start("old", |path, _| {
        if path == "/slow" {
            Reply::Hold
        } else {
            Reply::Status(200)
        }
    });
    let new = mesh.echo("new");
    app_config(
        &mesh,
        http,
        &[old.port],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        APP_ROUTE,
    );
    mesh.up(&[]);
    let url = format!("http://127.0.0.1:{http}/slow");
    let held = std::thread::spawn(move || answers(&["-H", APP_HOST, &url]));
    eventually(
        Duration::from_secs(10),
        "the request at the old backend",
        || old.count("/slow") == 1,
    );
    app_config(
        &mesh,
        http,
        &[new],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        APP_ROUTE,
    );
    eventually(Duration::from_secs(10), "the new config", || {
        answers(&["-H", APP_HOST, &format!("http://127.0.0.1:{http}/x")]).contains_key("200 new")
    });
    old.release();
    assert_eq!(
        held.join().unwrap(),
        [("200 old".to_string(), 1)].into(),
        "the request sent before the reload is answered by the old endpoint"
    );
}

#[test]
fn the_text_access_log_writes_envoys_default_format() {
    let mut mesh = Mesh::new("text-log");
    let http = free_port();
    let backend = mesh.echo("logged");
    app_config(
        &mesh,
        http,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        APP_ROUTE,
    );
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: TEXT\n",
    )
    .unwrap();
    mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);
    curl(&[
        "-H",
        APP_HOST,
        "-A",
        "text-agent",
        &format!("http://127.0.0.1:{http}/logged/path?q=1"),
    ]);
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "the access log line", || {
        !up.stdout().is_empty()
    });
    let line = up.stdout().lines().next().unwrap().to_string();
    // [START_TIME] "METHOD PATH PROTOCOL" CODE FLAGS ... "USER-AGENT" "REQUEST-ID"
    // "AUTHORITY" "UPSTREAM-HOST" CLUSTER ...
    assert!(line.starts_with('['), "{line}");
    assert!(
        line.contains("] \"GET /logged/path?q=1 HTTP/1.1\" 200 - "),
        "{line}"
    );
    assert!(line.contains("\"text-agent\""), "{line}");
    assert!(line.contains("\"app.example.test\""), "{line}");
    assert!(
        line.contains(&format!(
            "\"127.0.0.1:{backend}\" outbound|80||app.apps.svc.cluster.local "
        )),
        "{line}"
    );
    assert!(!line.starts_with('{'), "not JSON: {line}");
}

#[test]
fn header_prefix_and_gateway_matches_whole_path_rewrites_and_destination_headers() {
    let mut mesh = Mesh::new("routing-more");
    let http = free_port();
    let backend = mesh.echo("web");
    app_config(
        &mesh,
        http,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        &format!(
            r#"  - match: [{{headers: {{x-tier: {{prefix: gol}}}}}}]
    {}
  - match: [{{gateways: [istio-system/other], uri: {{prefix: /other}}}}]
    {}
  - match: [{{gateways: [istio-system/gw], uri: {{prefix: /other}}}}]
    {}
  - match: [{{uri: {{exact: /old/page}}}}]
    rewrite: {{uri: /new}}
    route:
    - destination: {{host: app}}
      headers:
        request: {{add: {{x-added: "1"}}, remove: [x-drop]}}
        response: {{add: {{x-dest: web}}, remove: [x-echo-name]}}
"#,
            reply("gold-ish"),
            reply("other-gateway"),
            reply("this-gateway"),
        ),
    );
    mesh.up(&[]);
    let base = format!("http://127.0.0.1:{http}");
    let get = |path: &str, extra: &[&str]| {
        let url = format!("{base}{path}");
        let mut args = vec!["-H", APP_HOST, url.as_str()];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&curl(&args).stdout).into_owned()
    };
    assert_eq!(get("/x", &["-H", "x-tier: golden"]), "gold-ish");
    assert_eq!(
        get("/other", &[]),
        "this-gateway",
        "a match naming another gateway does not apply"
    );
    let out = curl(&[
        "-D",
        "/dev/stderr",
        "-H",
        APP_HOST,
        "-H",
        "x-drop: secret",
        &format!("{base}/old/page?q=1"),
    ]);
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["path"], "/new?q=1",
        "an exact match has its whole path replaced"
    );
    assert_eq!(seen["headers"]["x-added"], "1");
    assert!(seen["headers"].get("x-drop").is_none());
    let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    assert!(
        head.contains("x-dest: web") && !head.contains("x-echo-name"),
        "{head}"
    );
    // No route: 404 with an empty body.
    let out = curl(&[
        "-H",
        APP_HOST,
        "-w",
        "%{http_code}",
        &format!("{base}/nothing"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}
