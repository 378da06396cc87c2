//! The ingress gateway end to end: `meshwork up` and `meshwork echo` as separate processes,
//! curl as the client, every port dynamic. Covers the seeds' north-south examples: path
//! and header routing, a 90/10 canary, HTTPS with a cert-manager Secret, HTTPS redirect,
//! MUTUAL TLS, hot reload under load, rejected changes, certificate rotation, access logs.

mod support;

use std::time::Duration;

use support::*;

/// Gateway Service (port 80 -> `http`, 443 -> `https`), Gateway with the given servers,
/// and two services `api` (v1, v2 subsets) and `web` backed by echo processes.
fn base_config(mesh: &mut Mesh, http: u16, https: u16, servers: &str) {
    let v1 = mesh.echo("api-v1");
    let v2 = mesh.echo("api-v2");
    let web = mesh.echo("web");
    mesh.config("gateway.yaml", &public_gateway(http, https, servers));
    mesh.config(
        "services.yaml",
        &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: api, namespace: shop}}
spec:
  selector: {{app: api}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: api-v1, namespace: shop}}
spec: {{address: 127.0.0.1, labels: {{app: api, version: v1}}, ports: {{http: {v1}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: api-v2, namespace: shop}}
spec: {{address: 127.0.0.1, labels: {{app: api, version: v2}}, ports: {{http: {v2}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: web, namespace: shop}}
spec: {{address: 127.0.0.1, labels: {{app: web}}, ports: {{http: {web}}}}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: api, namespace: shop}}
spec:
  host: api
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"#
        ),
    );
}

const ROUTES: &str = r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.test]
  gateways: [istio-system/public]
  http:
  - match:
    - headers:
        x-version: {exact: v2}
    route:
    - destination: {host: api, subset: v2}
  - match:
    - uri: {prefix: /api}
    route:
    - destination: {host: api, subset: v1}
      weight: 90
    - destination: {host: api, subset: v2}
      weight: 10
  - match:
    - uri: {prefix: /web}
    route:
    - destination: {host: web}
"#;

const HTTP_SERVER: &str = r#"  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop.example.test"]
"#;

/// The echo name of each response to `n` requests for `url`, counted.
fn names(url: &str, extra: &[&str], n: usize) -> std::collections::BTreeMap<String, usize> {
    let many = format!("{url}?n=[1-{n}]");
    let mut args = vec!["-D", "-", "-o", "/dev/null", many.as_str()];
    args.extend_from_slice(extra);
    let out = curl(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut counts = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("x-echo-name: ") {
            *counts.entry(name.trim().to_string()).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn routes_by_path_header_and_weight() {
    let mut mesh = Mesh::new("routing");
    let http = free_port();
    base_config(&mut mesh, http, free_port(), HTTP_SERVER);
    mesh.config("routes.yaml", ROUTES);
    mesh.up(&[]);
    let base = format!("http://127.0.0.1:{http}");
    let host = ["-H", "Host: shop.example.test"];

    let web = curl(&[&format!("{base}/web/index"), host[0], host[1]]);
    let body: serde_json::Value = serde_json::from_slice(&web.stdout).unwrap();
    assert_eq!(body["name"], "web");
    assert_eq!(body["path"], "/web/index");
    assert_eq!(body["headers"]["x-forwarded-proto"], "http");
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        body["headers"]["x-request-id"].as_str().unwrap().len(),
        36,
        "a generated UUID"
    );

    let v2 = curl(&[
        &format!("{base}/anything"),
        host[0],
        host[1],
        "-H",
        "x-version: v2",
        "-H",
        "x-request-id: abc-123",
    ]);
    let body: serde_json::Value = serde_json::from_slice(&v2.stdout).unwrap();
    assert_eq!(body["name"], "api-v2");
    assert_eq!(
        body["headers"]["x-request-id"], "abc-123",
        "a client's request id is kept"
    );

    assert_eq!(
        status(&[&format!("{base}/nothing"), host[0], host[1]]),
        404,
        "no route"
    );
    assert_eq!(
        status(&[&format!("{base}/api"), "-H", "Host: other.test"]),
        404,
        "no virtual host"
    );

    let counts = names(&format!("{base}/api/items"), &host, 1000);
    let v2 = counts.get("api-v2").copied().unwrap_or(0);
    let v1 = counts.get("api-v1").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 1000, "{counts:?}");
    assert!(
        (70..=130).contains(&v2),
        "a 90/10 split within 3 points: {counts:?}"
    );
}

#[test]
fn https_with_a_cert_manager_secret_redirect_and_http2() {
    let mut mesh = Mesh::new("https");
    let (http, https) = (free_port(), free_port());
    let servers = r#"  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["shop.example.test"]
    tls: {mode: SIMPLE, credentialName: shop-tls}
"#;
    base_config(&mut mesh, http, https, servers);
    mesh.config("routes.yaml", ROUTES);
    let ca = TestCa::new("test root");
    let (cert, key) = ca.leaf(&["shop.example.test"], "shop v1");
    mesh.config(
        "secret.yaml",
        &tls_secret("istio-system", "shop-tls", &cert, &key, None),
    );
    let ca_file = mesh.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    mesh.up(&[]);

    let redirect = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &format!("http://127.0.0.1:{http}/web/x?y=1"),
        "-H",
        "Host: shop.example.test",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&redirect.stdout),
        "301 https://shop.example.test/web/x?y=1"
    );

    let resolve = format!("shop.example.test:{https}:127.0.0.1");
    let url = format!("https://shop.example.test:{https}/web/page");
    for version in ["--http1.1", "--http2"] {
        let out = curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca_file.to_str().unwrap(),
            version,
            "-w",
            "\n%{http_version}",
            &url,
        ]);
        assert!(
            out.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, proto) = text.rsplit_once('\n').unwrap();
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["name"], "web");
        assert_eq!(body["headers"]["x-forwarded-proto"], "https");
        assert_eq!(proto, if version == "--http2" { "2" } else { "1.1" });
    }

    // An unknown SNI gets no certificate: the connection is closed.
    let other = format!("other.test:{https}:127.0.0.1");
    let out = curl(&[
        "--resolve",
        &other,
        "-k",
        &format!("https://other.test:{https}/"),
    ]);
    assert!(!out.status.success());
    support::eventually(Duration::from_secs(5), "the SNI refusal in the log", || {
        mesh.log().contains("no server for this SNI")
    });

    // Rotation: a new Secret; new handshakes present the new certificate.
    let (cert2, key2) = ca.leaf(&["shop.example.test"], "shop v2");
    mesh.config(
        "secret.yaml",
        &tls_secret("istio-system", "shop-tls", &cert2, &key2, None),
    );
    support::eventually(Duration::from_secs(10), "the rotated certificate", || {
        let out = curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca_file.to_str().unwrap(),
            "-v",
            "-o",
            "/dev/null",
            &url,
        ]);
        String::from_utf8_lossy(&out.stderr).contains("CN=shop v2")
    });
}

#[test]
fn mutual_tls_accepts_good_client_certificates_only() {
    let mut mesh = Mesh::new("mtls");
    let (http, https) = (free_port(), free_port());
    let servers = r#"  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.internal"]
    tls: {mode: MUTUAL, credentialName: internal-tls}
"#;
    base_config(&mut mesh, http, https, servers);
    mesh.config(
        "routes.yaml",
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: internal, namespace: shop}
spec:
  hosts: [api.internal]
  gateways: [istio-system/public]
  http:
  - route:
    - destination: {host: web}
"#,
    );
    let server_ca = TestCa::new("server root");
    let client_ca = TestCa::new("client root");
    let rogue_ca = TestCa::new("rogue root");
    let (cert, key) = server_ca.leaf(&["api.internal"], "api.internal");
    mesh.config(
        "secret.yaml",
        &tls_secret(
            "istio-system",
            "internal-tls",
            &cert,
            &key,
            Some(&client_ca.cert_pem),
        ),
    );
    let dir = mesh.dir.path().to_path_buf();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let ca = write("server-ca.pem", &server_ca.cert_pem);
    let (good_cert, good_key) = client_ca.leaf(&["client.internal"], "client");
    let (bad_cert, bad_key) = rogue_ca.leaf(&["client.internal"], "rogue");
    let (gc, gk) = (write("good.pem", &good_cert), write("good.key", &good_key));
    let (bc, bk) = (write("bad.pem", &bad_cert), write("bad.key", &bad_key));
    mesh.up(&[]);

    let resolve = format!("api.internal:{https}:127.0.0.1");
    let url = format!("https://api.internal:{https}/");
    let base = ["--resolve", resolve.as_str(), "--cacert", ca.as_str()];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        a.push(&url);
        status(&a)
    };
    assert_eq!(
        with(&["--cert", &gc, "--key", &gk]),
        200,
        "a client certificate from the trusted CA"
    );
    assert_eq!(with(&[]), 0, "no client certificate is refused");
    assert_eq!(
        with(&["--cert", &bc, "--key", &bk]),
        0,
        "a certificate from another CA is refused"
    );
}

#[test]
fn hot_reload_under_load_loses_no_request_and_bad_changes_are_rejected() {
    let mut mesh = Mesh::new("reload");
    let http = free_port();
    base_config(&mut mesh, http, free_port(), HTTP_SERVER);
    mesh.config("routes.yaml", ROUTES);
    mesh.up(&[]);
    let url = format!("http://127.0.0.1:{http}/web/x");

    // Load: 3000 sequential keep-alive requests from one curl while the routes change. Each
    // answer's backend is recorded, so the test proves the reload happened during the load.
    let answers = mesh.dir.path().join("load.txt");
    let mut load = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %header{x-echo-name}\n"])
        .args([
            "-H",
            "Host: shop.example.test",
            &format!("{url}?n=[1-3000]"),
        ])
        .stdout(std::fs::File::create(&answers).unwrap())
        .spawn()
        .unwrap();
    let answered = || std::fs::read_to_string(&answers).unwrap_or_default();
    eventually(Duration::from_secs(10), "the load to start", || {
        answered().lines().count() >= 100
    });
    let changed = ROUTES.replace(
        "- destination: {host: web}",
        "- destination: {host: api, subset: v2}",
    );
    mesh.config("routes.yaml", &changed);
    assert!(load.wait().unwrap().success());
    let lines: Vec<String> = answered().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3000);
    let failed: Vec<&String> = lines.iter().filter(|l| !l.starts_with("200 ")).collect();
    assert!(
        failed.is_empty(),
        "failed requests during reload: {failed:?}"
    );
    // The old route answered first, then the new one, and never the old one again.
    let switch = lines
        .iter()
        .position(|l| l == "200 api-v2")
        .expect("the new route answered during the load");
    assert!(switch > 0 && lines[..switch].iter().all(|l| l == "200 web"));
    assert!(lines[switch..].iter().all(|l| l == "200 api-v2"));

    // An invalid change is rejected with the validate message; the last good config serves.
    mesh.config("routes.yaml", &changed.replace("weight: 90", "weigth: 90"));
    support::eventually(Duration::from_secs(10), "the rejection in the log", || {
        mesh.log()
            .contains("unknown field (did you mean \"weight\"?)")
            && mesh.log().contains("configuration rejected")
    });
    let out = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "Host: shop.example.test",
        &url,
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("x-echo-name: api-v2"));
}

#[test]
fn local_replies_timeouts_and_access_log() {
    let mut mesh = Mesh::new("replies");
    let http = free_port();
    base_config(&mut mesh, http, free_port(), HTTP_SERVER);
    mesh.config(
        "routes.yaml",
        r#"apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  selector: {app: nobody}
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.test]
  gateways: [istio-system/public]
  http:
  - match: [{uri: {prefix: /empty}}]
    route: [{destination: {host: empty}}]
  - match: [{uri: {prefix: /slow}}]
    timeout: 200ms
    route: [{destination: {host: web}}]
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, redirectCode: 302}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {prefix: /rw}}]
    rewrite: {uri: /web/rewritten}
    headers:
      request: {set: {x-added: "yes"}}
      response: {add: {x-served-by: gateway}}
    route: [{destination: {host: web}}]
"#,
    );
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )
    .unwrap();
    mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{http}");
    let host = "Host: shop.example.test";

    let empty = curl(&["-H", host, "-w", "\n%{http_code}", &format!("{base}/empty")]);
    assert_eq!(
        String::from_utf8_lossy(&empty.stdout),
        "no healthy upstream\n503"
    );
    let slow = curl(&[
        "-H",
        host,
        "-w",
        "\n%{http_code}",
        &format!("{base}/slow?delay=2s"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&slow.stdout),
        "upstream request timeout\n504"
    );
    let moved = curl(&[
        "-H",
        host,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &format!("{base}/old"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&moved.stdout),
        "302 http://shop.example.test/new"
    );
    let tea = curl(&["-H", host, "-w", " %{http_code}", &format!("{base}/teapot")]);
    assert_eq!(String::from_utf8_lossy(&tea.stdout), "short and stout 418");
    let rw = curl(&["-H", host, "-D", "/dev/stderr", &format!("{base}/rw/a?b=1")]);
    let body: serde_json::Value = serde_json::from_slice(&rw.stdout).unwrap();
    assert_eq!(body["path"], "/web/rewritten/a?b=1");
    assert_eq!(body["headers"]["x-added"], "yes");
    assert!(String::from_utf8_lossy(&rw.stderr).contains("x-served-by: gateway"));

    let up = mesh.up.as_ref().unwrap();
    support::eventually(Duration::from_secs(5), "access log lines", || {
        up.stdout().lines().count() >= 5
    });
    let lines: Vec<serde_json::Value> = up
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().unwrap().starts_with(path))
            .unwrap()
            .clone()
    };
    let e = find("/empty");
    assert_eq!(e["response_code"], 503);
    assert_eq!(e["response_flags"], "UH");
    assert_eq!(
        e["upstream_cluster"],
        "outbound|80||empty.shop.svc.cluster.local"
    );
    let s = find("/slow");
    assert_eq!(s["response_code"], 504);
    assert_eq!(s["response_flags"], "UT");
    let r = find("/rw");
    assert_eq!(r["response_code"], 200);
    assert_eq!(r["response_flags"], "-");
    assert_eq!(r["method"], "GET");
    assert_eq!(r["authority"], "shop.example.test");
    assert_eq!(r["protocol"], "HTTP/1.1");
    assert!(r["bytes_sent"].as_u64().unwrap() > 100);
    assert!(
        r["upstream_host"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(
        r["user_agent"].as_str().unwrap().split('/').next(),
        Some("curl")
    );
    for field in [
        "start_time",
        "duration",
        "bytes_received",
        "x_forwarded_for",
        "request_id",
    ] {
        assert!(r.get(field).is_some(), "{field} missing from {r}");
    }
}

#[test]
fn websocket_upgrades_pass_through() {
    use std::io::{Read, Write};
    let mut mesh = Mesh::new("ws");
    let http = free_port();
    base_config(&mut mesh, http, free_port(), HTTP_SERVER);
    mesh.config("routes.yaml", ROUTES);
    mesh.up(&[]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /web/socket HTTP/1.1\r\nHost: shop.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("x-echo-name: web"), "{head}");
    for msg in [&b"hello"[..], b"through the gateway"] {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
}

#[test]
fn two_selectors_make_two_gateways_and_retries_skip_a_dead_endpoint() {
    let mut mesh = Mesh::new("two-gateways");
    let (ext, int) = (free_port(), free_port());
    let live = mesh.echo("live");
    let dead = free_port(); // nothing listens here
    mesh.config(
        "gateways.yaml",
        &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports: [{{name: http2, port: 80, targetPort: {ext}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway-internal, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway-internal}}
  ports: [{{name: http2, port: 80, targetPort: {int}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: external-gateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["example.com"]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: internal-gateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway-internal}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*.internal"]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: app, namespace: apps}}
spec:
  hosts: [app.apps.svc.cluster.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {dead}}}}}
  - {{address: 127.0.0.1, ports: {{http: {live}}}}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: public, namespace: apps}}
spec:
  hosts: [example.com]
  gateways: [istio-system/external-gateway]
  http:
  - match: [{{uri: {{prefix: /a}}}}]
    route: [{{destination: {{host: app}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: public-more, namespace: apps}}
spec:
  hosts: [example.com]
  gateways: [istio-system/external-gateway]
  http:
  - match: [{{uri: {{prefix: /b}}}}]
    directResponse: {{status: 200, body: {{string: "from the second VirtualService"}}}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: internal, namespace: apps}}
spec:
  hosts: [api.internal]
  gateways: [istio-system/internal-gateway]
  http:
  - route: [{{destination: {{host: app}}}}]
"#
        ),
    );
    mesh.up(&[]);
    let dump: serde_json::Value = serde_json::from_slice(
        &curl(&[&format!("http://127.0.0.1:{}/config_dump", mesh.admin)]).stdout,
    )
    .unwrap();
    let gateways: Vec<&String> = dump["gateways"].as_object().unwrap().keys().collect();
    assert_eq!(
        gateways,
        ["istio=ingressgateway", "istio=ingressgateway-internal"]
    );

    // Each gateway serves only its own hosts.
    assert_eq!(
        status(&[
            &format!("http://127.0.0.1:{ext}/a"),
            "-H",
            "Host: example.com"
        ]),
        200
    );
    assert_eq!(
        status(&[
            &format!("http://127.0.0.1:{ext}/a"),
            "-H",
            "Host: api.internal"
        ]),
        404
    );
    assert_eq!(
        status(&[
            &format!("http://127.0.0.1:{int}/x"),
            "-H",
            "Host: api.internal"
        ]),
        200
    );
    assert_eq!(
        status(&[
            &format!("http://127.0.0.1:{int}/x"),
            "-H",
            "Host: example.com"
        ]),
        404
    );
    // Two VirtualServices for one host are merged.
    let b = curl(&[
        &format!("http://127.0.0.1:{ext}/b"),
        "-H",
        "Host: example.com",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&b.stdout),
        "from the second VirtualService"
    );

    // Half the picks land on the dead endpoint; Istio's default retry (connect-failure)
    // moves those to the live one, so no client sees a failure.
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
        "-H",
        "Host: example.com",
        &format!("http://127.0.0.1:{ext}/a?n=[1-50]"),
    ]);
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().filter(|c| *c == "200").count(), 50, "{codes}");
}

#[test]
fn certificate_files_mutual_tls_by_ca_file_and_tls_versions() {
    let mut mesh = Mesh::new("tls-files");
    let (http, https) = (free_port(), free_port());
    let ca = TestCa::new("file root");
    let client_ca = TestCa::new("client root");
    let (cert, key) = ca.leaf(&["files.example.test", "v13.example.test"], "files");
    let dir = mesh.dir.path().to_path_buf();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (cert_file, key_file) = (write("server.pem", &cert), write("server.key", &key));
    let client_ca_file = write("client-ca.pem", &client_ca.cert_pem);
    let ca_file = write("ca.pem", &ca.cert_pem);
    let (cc, ck) = client_ca.leaf(&["client"], "client");
    let (cc, ck) = (write("client.pem", &cc), write("client.key", &ck));
    let servers = format!(
        r#"  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["files.example.test"]
    tls:
      mode: MUTUAL
      serverCertificate: {cert_file}
      privateKey: {key_file}
      caCertificates: {client_ca_file}
      maxProtocolVersion: TLSV1_2
  - port: {{number: 443, name: https-13, protocol: HTTPS}}
    hosts: ["v13.example.test"]
    tls:
      mode: SIMPLE
      serverCertificate: {cert_file}
      privateKey: {key_file}
      minProtocolVersion: TLSV1_3
"#
    );
    base_config(&mut mesh, http, https, &servers);
    mesh.config(
        "routes.yaml",
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: files, namespace: shop}
spec:
  hosts: [files.example.test, v13.example.test]
  gateways: [istio-system/public]
  http:
  - route: [{destination: {host: web}}]
"#,
    );
    mesh.up(&[]);
    let get = |host: &str, extra: &[&str]| {
        let resolve = format!("{host}:{https}:127.0.0.1");
        let url = format!("https://{host}:{https}/");
        let mut args = vec!["--resolve", resolve.as_str(), "--cacert", ca_file.as_str()];
        args.extend_from_slice(extra);
        args.push(&url);
        status(&args)
    };
    assert_eq!(
        get("files.example.test", &["--cert", &cc, "--key", &ck]),
        200
    );
    assert_eq!(
        get("files.example.test", &[]),
        0,
        "MUTUAL needs a client certificate"
    );
    assert_eq!(
        get(
            "files.example.test",
            &["--cert", &cc, "--key", &ck, "--tlsv1.3"]
        ),
        0,
        "maxProtocolVersion TLSV1_2"
    );
    assert_eq!(get("v13.example.test", &["--tlsv1.3"]), 200);
    assert_eq!(
        get("v13.example.test", &["--tls-max", "1.2"]),
        0,
        "minProtocolVersion TLSV1_3"
    );
}

#[test]
fn every_match_condition_selects_its_route() {
    let mut mesh = Mesh::new("matches");
    let http = free_port();
    let servers = r#"  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop/*.example.test", "*/exact.example.test"]
"#;
    base_config(&mut mesh, http, free_port(), servers);
    let reply = |name: &str| format!("directResponse: {{status: 200, body: {{string: {name}}}}}");
    mesh.config(
        "routes.yaml",
        &format!(
            r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: matches, namespace: shop}}
spec:
  hosts: ["*.example.test"]
  gateways: [istio-system/public]
  http:
  - match: [{{uri: {{regex: "/v[0-9]+/items"}}}}]
    {}
  - match: [{{uri: {{exact: /CaSe}}, ignoreUriCase: true}}]
    {}
  - match: [{{method: {{exact: DELETE}}}}]
    {}
  - match: [{{authority: {{prefix: "admin."}}}}]
    {}
  - match: [{{queryParams: {{debug: {{exact: "1"}}}}}}]
    {}
  - match: [{{headers: {{x-beta: {{}}}}}}]
    {}
  - match: [{{headers: {{x-tier: {{regex: "gold|silver"}}}}, withoutHeaders: {{x-blocked: {{exact: "yes"}}}}}}]
    {}
  - match: [{{port: 80, scheme: {{exact: http}}, uri: {{prefix: /port}}}}]
    {}
  - {}
"#,
            reply("regex"),
            reply("ignore-case"),
            reply("method"),
            reply("authority"),
            reply("query"),
            reply("presence"),
            reply("header-regex"),
            reply("port-scheme"),
            reply("fallback"),
        ),
    );
    mesh.up(&[]);
    let base = format!("http://127.0.0.1:{http}");
    let get = |path: &str, extra: &[&str]| {
        let url = format!("{base}{path}");
        let mut args = vec!["-H", "Host: shop.example.test", url.as_str()];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&curl(&args).stdout).into_owned()
    };
    assert_eq!(get("/v2/items", &[]), "regex");
    assert_eq!(
        get("/v2/items/more", &[]),
        "fallback",
        "a regex matches the whole path"
    );
    assert_eq!(get("/case", &[]), "ignore-case");
    assert_eq!(get("/x", &["-X", "DELETE"]), "method");
    assert_eq!(get("/x?debug=1", &[]), "query");
    assert_eq!(get("/x?debug=2", &[]), "fallback");
    assert_eq!(get("/x", &["-H", "x-beta: anything"]), "presence");
    assert_eq!(get("/x", &["-H", "x-tier: gold"]), "header-regex");
    assert_eq!(
        get("/x", &["-H", "x-tier: gold", "-H", "x-blocked: yes"]),
        "fallback"
    );
    assert_eq!(get("/port/1", &[]), "port-scheme");
    let admin = String::from_utf8_lossy(
        &curl(&["-H", "Host: admin.example.test", &format!("{base}/x")]).stdout,
    )
    .into_owned();
    assert_eq!(admin, "authority");
    // `shop/*.example.test` admits this VirtualService (namespace shop) for any subdomain.
    assert_eq!(
        status(&["-H", "Host: other.example.test", &format!("{base}/x")]),
        200
    );
}

#[test]
fn https_keep_alive_connections_follow_a_reload_that_moves_servers() {
    use std::io::{BufRead, BufReader, Write};
    let mut mesh = Mesh::new("reload-tls");
    let (http, https) = (free_port(), free_port());
    let servers = r#"  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: ["b.example.test"]
    tls: {mode: SIMPLE, credentialName: wild-tls}
"#;
    base_config(&mut mesh, http, https, servers);
    mesh.config(
        "routes.yaml",
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: b, namespace: shop}
spec:
  hosts: [b.example.test, a.example.test]
  gateways: [istio-system/public]
  http:
  - route: [{destination: {host: web}}]
"#,
    );
    let ca = TestCa::new("reload root");
    let (cert, key) = ca.leaf(&["a.example.test", "b.example.test"], "wild");
    mesh.config(
        "secret.yaml",
        &tls_secret("istio-system", "wild-tls", &cert, &key, None),
    );
    let ca_file = mesh.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    mesh.up(&[]);

    let mut client = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{https}"),
            "-servername",
            "b.example.test",
            "-CAfile",
        ])
        .arg(&ca_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = client.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let exchange = |stdin: &mut std::process::ChildStdin| {
        stdin
            .write_all(b"GET /x HTTP/1.1\r\nHost: b.example.test\r\n\r\n")
            .unwrap();
        let status = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a status line");
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
            if line.starts_with('{') {
                break;
            }
        }
        status
    };
    assert!(exchange(&mut stdin).contains("200"));
    // A server inserted before b's moves b's index; the open connection must keep routing.
    let cfg = std::fs::read_to_string(mesh.dir.path().join("config/gateway.yaml")).unwrap();
    mesh.config(
        "gateway.yaml",
        &cfg.replace(
            "  servers:\n",
            "  servers:\n  - port: {number: 443, name: https-a, protocol: HTTPS}\n    hosts: [\"a.example.test\"]\n    tls: {mode: SIMPLE, credentialName: wild-tls}\n",
        ),
    );
    let admin = format!("http://127.0.0.1:{}/config_dump", mesh.admin);
    eventually(Duration::from_secs(10), "the new server", || {
        String::from_utf8_lossy(&curl(&[&admin]).stdout).contains("https-a")
    });
    assert!(
        exchange(&mut stdin).contains("200"),
        "the kept-alive connection still reaches b's routes"
    );
    drop(stdin);
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn the_most_specific_wildcard_server_wins_the_sni() {
    let mut mesh = Mesh::new("wildcards");
    let (http, https) = (free_port(), free_port());
    let servers = r#"  - port: {number: 443, name: https-wide, protocol: HTTPS}
    hosts: ["*.example.test"]
    tls: {mode: SIMPLE, credentialName: wide-tls}
  - port: {number: 443, name: https-api, protocol: HTTPS}
    hosts: ["*.api.example.test"]
    tls: {mode: SIMPLE, credentialName: api-tls}
"#;
    base_config(&mut mesh, http, https, servers);
    mesh.config("routes.yaml", ROUTES);
    let ca = TestCa::new("wild root");
    let (wc, wk) = ca.leaf(&["*.example.test"], "wide");
    let (ac, ak) = ca.leaf(&["*.api.example.test"], "narrow");
    mesh.config(
        "secret-wide.yaml",
        &tls_secret("istio-system", "wide-tls", &wc, &wk, None),
    );
    mesh.config(
        "secret-api.yaml",
        &tls_secret("istio-system", "api-tls", &ac, &ak, None),
    );
    let ca_file = mesh.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    mesh.up(&[]);
    let cn = |host: &str| {
        let resolve = format!("{host}:{https}:127.0.0.1");
        let out = curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca_file.to_str().unwrap(),
            "-v",
            "-o",
            "/dev/null",
            &format!("https://{host}:{https}/"),
        ]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let narrow = cn("x.api.example.test");
    assert!(narrow.contains("CN=narrow"), "{narrow}\n{}", mesh.log());
    assert!(cn("www.example.test").contains("CN=wide"));
}

#[test]
fn readiness_is_503_until_every_listener_is_bound_then_recovers() {
    let mut mesh = Mesh::new("ready");
    let http = free_port();
    base_config(&mut mesh, http, free_port(), HTTP_SERVER);
    mesh.config("routes.yaml", ROUTES);
    // Something else holds the gateway's port.
    let squatter = std::net::TcpListener::bind(("0.0.0.0", http)).unwrap();
    let config = mesh.dir.path().join("config");
    let (admin, health) = (
        format!("127.0.0.1:{}", mesh.admin),
        format!("127.0.0.1:{}", mesh.health),
    );
    let up = Proc::start(
        mesh.dir.path(),
        "up",
        &[
            "up",
            config.to_str().unwrap(),
            "--admin",
            &admin,
            "--health",
            &health,
        ],
    );
    let ready = format!("http://{health}/healthz/ready");
    eventually(Duration::from_secs(10), "the bind failure", || {
        up.stderr().contains("cannot bind port")
    });
    assert_eq!(status(&[&ready]), 503);
    // The port is freed and the config touched: the reload binds it and readiness follows.
    drop(squatter);
    mesh.config("routes.yaml", &format!("{ROUTES}\n# touched\n"));
    eventually(Duration::from_secs(10), "readiness", || {
        status(&[&ready]) == 200
    });
    assert_eq!(
        status(&[
            &format!("http://127.0.0.1:{http}/web/x"),
            "-H",
            "Host: shop.example.test"
        ]),
        200
    );
}

#[test]
fn regex_and_authority_rewrites_header_removal_and_echo_controls() {
    let mut mesh = Mesh::new("rewrites");
    let http = free_port();
    base_config(&mut mesh, http, free_port(), HTTP_SERVER);
    mesh.config(
        "routes.yaml",
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.test]
  gateways: [istio-system/public]
  http:
  - match: [{uri: {regex: "/v1/.*"}}]
    rewrite:
      uriRegexRewrite: {match: "^/v1/(.*)$", rewrite: "/web/v2/\\1"}
      authority: internal.web
    headers:
      request: {remove: [x-secret]}
      response: {remove: [x-echo-name]}
    route: [{destination: {host: web}}]
  - route:
    - destination: {host: web}
      headers:
        request: {set: {x-destination: web}}
        response: {set: {x-from: web-destination}}
"#,
    );
    mesh.up(&[]);
    let base = format!("http://127.0.0.1:{http}");
    let host = "Host: shop.example.test";
    let out = curl(&[
        "-D",
        "/dev/stderr",
        "-H",
        host,
        "-H",
        "x-secret: s3cr3t",
        &format!("{base}/v1/items?q=1"),
    ]);
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["path"], "/web/v2/items?q=1");
    assert_eq!(body["host"], "internal.web");
    assert!(
        body["headers"].get("x-secret").is_none(),
        "removed request header"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr)
            .to_ascii_lowercase()
            .contains("x-echo-name"),
        "removed response header"
    );

    let out = curl(&["-D", "/dev/stderr", "-H", host, &format!("{base}/other")]);
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["headers"]["x-destination"], "web");
    assert!(String::from_utf8_lossy(&out.stderr).contains("x-from: web-destination"));

    // The echo backend's controls, through the gateway.
    assert_eq!(status(&["-H", host, &format!("{base}/x?status=503")]), 503);
    let sized = curl(&[
        "-H",
        host,
        "-w",
        " %{size_download}",
        &format!("{base}/x?size=1024"),
    ]);
    assert!(String::from_utf8_lossy(&sized.stdout).ends_with(" 1024"));
}

#[test]
fn certificate_files_rotate_without_a_restart() {
    let mut mesh = Mesh::new("file-rotation");
    let (http, https) = (free_port(), free_port());
    let ca = TestCa::new("rotation root");
    let certs = mesh.dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (cert, key) = ca.leaf(&["shop.example.test"], "files v1");
    std::fs::write(certs.join("tls.crt"), &cert).unwrap();
    std::fs::write(certs.join("tls.key"), &key).unwrap();
    let servers = format!(
        "  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [\"shop.example.test\"]\n    tls: {{mode: SIMPLE, serverCertificate: {0}/tls.crt, privateKey: {0}/tls.key}}\n",
        certs.display()
    );
    base_config(&mut mesh, http, https, &servers);
    mesh.config("routes.yaml", ROUTES);
    let ca_file = mesh.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    mesh.up(&[]);
    let resolve = format!("shop.example.test:{https}:127.0.0.1");
    let url = format!("https://shop.example.test:{https}/web/x");
    let subject = || {
        let out = curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca_file.to_str().unwrap(),
            "-v",
            "-o",
            "/dev/null",
            &url,
        ]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(subject().contains("CN=files v1"));
    // As cert-manager's csi driver or a mounted Secret does: new files, written then renamed.
    let (cert2, key2) = ca.leaf(&["shop.example.test"], "files v2");
    std::fs::write(certs.join(".tls.key.new"), &key2).unwrap();
    std::fs::write(certs.join(".tls.crt.new"), &cert2).unwrap();
    std::fs::rename(certs.join(".tls.key.new"), certs.join("tls.key")).unwrap();
    std::fs::rename(certs.join(".tls.crt.new"), certs.join("tls.crt")).unwrap();
    eventually(
        Duration::from_secs(10),
        "the rotated certificate file",
        || subject().contains("CN=files v2"),
    );
}

#[test]
fn cipher_suites_and_per_try_timeouts() {
    let mut mesh = Mesh::new("ciphers");
    let (http, https) = (free_port(), free_port());
    let servers = r#"  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["shop.example.test"]
    tls:
      mode: SIMPLE
      credentialName: shop-tls
      maxProtocolVersion: TLSV1_2
      cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256]
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop.example.test"]
"#;
    base_config(&mut mesh, http, https, servers);
    mesh.config(
        "routes.yaml",
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.test]
  gateways: [istio-system/public]
  http:
  - match: [{uri: {prefix: /slow}}]
    retries: {attempts: 2, perTryTimeout: 100ms, retryOn: "5xx"}
    route: [{destination: {host: web}}]
  - route: [{destination: {host: web}}]
"#,
    );
    let ca = TestCa::new("cipher root");
    let (cert, key) = ca.leaf(&["shop.example.test"], "shop");
    mesh.config(
        "secret.yaml",
        &tls_secret("istio-system", "shop-tls", &cert, &key, None),
    );
    let ca_file = mesh.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )
    .unwrap();
    mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);
    let resolve = format!("shop.example.test:{https}:127.0.0.1");
    let url = format!("https://shop.example.test:{https}/web/x");
    let with = |cipher: &str| {
        status(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca_file.to_str().unwrap(),
            "--tls-max",
            "1.2",
            "--ciphers",
            cipher,
            &url,
        ])
    };
    assert_eq!(
        with("ECDHE-ECDSA-AES128-GCM-SHA256"),
        200,
        "the configured suite"
    );
    assert_eq!(
        with("ECDHE-ECDSA-AES256-GCM-SHA384"),
        0,
        "a suite the server does not allow"
    );

    // Every try of a slow backend times out after 100ms; after two retries: 504, URX.
    let out = curl(&[
        "-H",
        "Host: shop.example.test",
        "-w",
        " %{http_code}",
        &format!("http://127.0.0.1:{http}/slow?delay=2s"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "upstream request timeout 504"
    );
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "the access log", || {
        up.stdout().contains("/slow")
    });
    let line = up
        .stdout()
        .lines()
        .find(|l| l.contains("/slow"))
        .unwrap()
        .to_string();
    assert!(line.contains("\"response_flags\":\"UT,URX\""), "{line}");
}

/// A terminating server picks the TLS 1.3 suite by its own preference, as Envoy's does:
/// AES-128-GCM before AES-256-GCM whatever order the client offers them in; a client
/// that offers only AES-256-GCM gets it.
#[test]
fn tls13_suites_follow_the_servers_preference() {
    let mut mesh = Mesh::new("tls13-suites");
    let (http, https) = (free_port(), free_port());
    let servers = r#"  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["shop.example.test"]
    tls: {mode: SIMPLE, credentialName: shop-tls}
"#;
    base_config(&mut mesh, http, https, servers);
    let ca = TestCa::new("suites root");
    let (cert, key) = ca.leaf(&["shop.example.test"], "shop");
    mesh.config(
        "secret.yaml",
        &tls_secret("istio-system", "shop-tls", &cert, &key, None),
    );
    mesh.up(&[]);
    let connect = format!("127.0.0.1:{https}");
    let suite = |offered: &str| {
        let out = openssl(&[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "shop.example.test",
            "-tls1_3",
            "-ciphersuites",
            offered,
            "-brief",
        ]);
        out.lines()
            .find_map(|l| l.strip_prefix("Ciphersuite: "))
            .map(str::trim)
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no handshake: {out}"))
    };
    eventually(Duration::from_secs(5), "the TLS port", || {
        std::net::TcpStream::connect(&connect).is_ok()
    });
    assert_eq!(
        suite("TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"),
        "TLS_AES_128_GCM_SHA256"
    );
    assert_eq!(suite("TLS_AES_256_GCM_SHA384"), "TLS_AES_256_GCM_SHA384");
}
