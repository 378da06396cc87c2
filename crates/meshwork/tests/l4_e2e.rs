//! L4 end to end: TCP routes with weights and half-close, TLS passthrough by SNI to HTTPS
//! backends that keep their own certificates (beside a terminated HTTPS host on the same
//! port), TLS terminated then proxied as TCP, and
//! clients that are refused (unknown SNI, not TLS) closed with a log line.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use support::*;

/// Reads the backend's greeting line, sends `msg`, closes our sending side, and reads the
/// echo until the backend closes: half-close both ways.
fn tcp_exchange(port: u16, msg: &[u8]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(msg).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let nl = all
        .iter()
        .position(|b| *b == b'\n')
        .expect("a greeting line");
    let name = String::from_utf8_lossy(&all[..nl]).into_owned();
    (name, all[nl + 1..].to_vec())
}

#[test]
fn weighted_tcp_routes_with_half_close() {
    let mut mesh = Mesh::new("tcp");
    let (tcp, tls) = (free_port(), free_port());
    let a = mesh.tcp_echo("tcp-a");
    let b = mesh.tcp_echo("tcp-b");
    mesh.config(
        "config.yaml",
        &(gateway_service(tcp, tls)
            + &format!(
                r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp-gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo-a, namespace: apps}}
spec:
  hosts: [echo-a.apps.internal]
  ports: [{{number: 7000, name: tcp, protocol: TCP, targetPort: {a}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo-b, namespace: apps}}
spec:
  hosts: [echo-b.apps.internal]
  ports: [{{number: 7000, name: tcp, protocol: TCP, targetPort: {b}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp, namespace: apps}}
spec:
  hosts: ["*"]
  gateways: [istio-system/tcp-gw]
  tcp:
  - match: [{{port: 31400}}]
    route:
    - destination: {{host: echo-a.apps.internal, port: {{number: 7000}}}}
      weight: 75
    - destination: {{host: echo-b.apps.internal, port: {{number: 7000}}}}
      weight: 25
"#
            )),
    );
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )
    .unwrap();
    mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);

    let (name, echoed) = tcp_exchange(tcp, b"hello over tcp");
    assert!(name == "tcp-a" || name == "tcp-b", "{name}");
    assert_eq!(
        echoed, b"hello over tcp",
        "the echo arrives after our half-close, then EOF"
    );

    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..200 {
        *counts.entry(tcp_exchange(tcp, b"x").0).or_insert(0) += 1;
    }
    let a = counts.get("tcp-a").copied().unwrap_or(0);
    assert!(
        (120..=180).contains(&a),
        "75/25 split over 200 connections: {counts:?}"
    );

    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "TCP access log lines", || {
        up.stdout().lines().count() >= 201
    });
    // Each line is written when its connection has closed on both sides, so the first
    // exchange's line is not always the first line: it is the one with 14 bytes in.
    let lines: Vec<serde_json::Value> = up
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let with_14: Vec<_> = lines.iter().filter(|e| e["bytes_received"] == 14).collect();
    assert_eq!(with_14.len(), 1, "one exchange sent 14 bytes: {lines:?}");
    assert_eq!(
        lines.iter().filter(|e| e["bytes_received"] == 1).count(),
        200,
        "and 200 sent one byte"
    );
    let first = with_14[0];
    assert_eq!(first["bytes_received"], 14);
    assert_eq!(first["bytes_sent"], 14 + 6, "greeting line and echo");
    assert_eq!(first["response_flags"], "-");
    assert!(
        first["upstream_cluster"]
            .as_str()
            .unwrap()
            .starts_with("outbound|7000||echo-")
    );
}

#[test]
fn tls_passthrough_by_sni_keeps_the_backends_certificates() {
    let mut mesh = Mesh::new("passthrough");
    let (tcp, tls) = (free_port(), free_port());
    let ca = TestCa::new("backends root");
    let (a_cert, a_key) = ca.leaf(&["a.example.test"], "backend a");
    let (b_cert, b_key) = ca.leaf(&["b.example.test"], "backend b");
    let a = mesh.tls_backend("backend-a", &a_cert, &a_key);
    let b = mesh.tls_backend("backend-b", &b_cert, &b_key);
    let (ta, tb) = (mesh.tcp_echo("plain-a"), mesh.tcp_echo("plain-b"));
    let _ = (ta, tb);
    mesh.config(
        "config.yaml",
        &(gateway_service(tcp, tls)
            + &format!(
                r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tls-gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: [a.example.test, b.example.test]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [web.example.test]
    tls: {{mode: SIMPLE, credentialName: web-tls}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: terminated, namespace: apps}}
spec:
  hosts: [web.example.test]
  gateways: [istio-system/tls-gw]
  http:
  - directResponse: {{status: 200, body: {{string: "terminated at the gateway"}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: a, namespace: apps}}
spec:
  hosts: [a.backend.internal]
  ports: [{{number: 443, name: tls, protocol: TLS, targetPort: {a}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: b, namespace: apps}}
spec:
  hosts: [b.backend.internal]
  ports: [{{number: 443, name: tls, protocol: TLS, targetPort: {b}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: passthrough, namespace: apps}}
spec:
  hosts: [a.example.test, b.example.test]
  gateways: [istio-system/tls-gw]
  tls:
  - match: [{{sniHosts: [a.example.test], port: 443}}]
    route: [{{destination: {{host: a.backend.internal, port: {{number: 443}}}}}}]
  - match: [{{sniHosts: [b.example.test], port: 443}}]
    route: [{{destination: {{host: b.backend.internal, port: {{number: 443}}}}}}]
"#
            )),
    );
    // The HTTPS host on the same port is terminated with the gateway's own certificate.
    let (web_cert, web_key) = ca.leaf(&["web.example.test"], "gateway web");
    mesh.config(
        "secret.yaml",
        &tls_secret("istio-system", "web-tls", &web_cert, &web_key, None),
    );
    let ca_file = mesh.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    mesh.up(&[]);
    let resolve = format!("web.example.test:{tls}:127.0.0.1");
    let out = curl(&[
        "--resolve",
        &resolve,
        "--cacert",
        ca_file.to_str().unwrap(),
        "-v",
        &format!("https://web.example.test:{tls}/"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "terminated at the gateway"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("CN=gateway web"));
    for (host, cn) in [
        ("a.example.test", "backend a"),
        ("b.example.test", "backend b"),
    ] {
        let resolve = format!("{host}:{tls}:127.0.0.1");
        let out = curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca_file.to_str().unwrap(),
            "-v",
            &format!("https://{host}:{tls}/"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{host}: {stderr}");
        assert!(
            stderr.contains(&format!("CN={cn}")),
            "{host} presents its backend's certificate: {stderr}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("s_server"),
            "the backend answered"
        );
    }
    // An SNI that no route names is refused: closed, with the reason in the log.
    let resolve = format!("c.example.test:{tls}:127.0.0.1");
    let out = curl(&[
        "--resolve",
        &resolve,
        "-k",
        &format!("https://c.example.test:{tls}/"),
    ]);
    assert!(!out.status.success());
    eventually(Duration::from_secs(5), "the refusal in the log", || {
        mesh.log().contains("no server for this SNI") && mesh.log().contains("c.example.test")
    });
    // Garbage instead of a ClientHello: closed at once, logged.
    let mut s = TcpStream::connect(("127.0.0.1", tls)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let n = s.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "no answer to a non-TLS client");
    eventually(Duration::from_secs(5), "the garbage in the log", || {
        mesh.log().contains("not a TLS ClientHello")
    });
}

#[test]
fn tls_terminated_then_tcp() {
    let mut mesh = Mesh::new("tls-tcp");
    let (tcp, tls) = (free_port(), free_port());
    let backend = mesh.tcp_echo("terminated");
    let ca = TestCa::new("gateway root");
    let (cert, key) = ca.leaf(&["db.example.test"], "gateway");
    mesh.config(
        "secret.yaml",
        &tls_secret("istio-system", "db-tls", &cert, &key, None),
    );
    mesh.config(
        "config.yaml",
        &tls_terminated_db(tcp, tls, backend, "SIMPLE"),
    );
    let ca_file = mesh.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    mesh.up(&[]);
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{tls}"),
            "-servername",
            "db.example.test",
            "-CAfile",
        ])
        .arg(&ca_file)
        .args(["-verify_return_error"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"through TLS\n").unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        for _ in 0..2 {
            let _ = tx.send(lines.next().and_then(Result::ok));
        }
    });
    let got: Vec<Option<String>> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).ok().flatten())
        .collect();
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        got,
        [
            Some("terminated".to_string()),
            Some("through TLS".to_string())
        ]
    );
}

#[test]
fn idle_tcp_connections_are_closed_after_the_destination_rule_idle_timeout() {
    let mut mesh = Mesh::new("idle");
    let (tcp, tls) = (free_port(), free_port());
    let backend = mesh.tcp_echo("idle");
    mesh.config(
        "config.yaml",
        &single_tcp_route(tcp, tls, "idle", backend, "{idleTimeout: 300ms}"),
    );
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )
    .unwrap();
    mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);
    let mut s = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = Vec::new();
    // Without traffic the gateway closes the connection (the default would be 1 hour).
    s.read_to_end(&mut all)
        .expect("closed by the gateway before the read timeout");
    assert_eq!(all, b"idle\n");
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "the access log line", || {
        up.stdout().contains("\"response_flags\":\"IT\"")
    });
}

#[test]
fn upstream_tcp_connections_get_the_destination_rule_keepalive() {
    let mut mesh = Mesh::new("keepalive");
    let (tcp, tls) = (free_port(), free_port());
    let backend = mesh.tcp_echo("kept");
    mesh.config(
        "config.yaml",
        &single_tcp_route(
            tcp,
            tls,
            "kept",
            backend,
            "{tcpKeepalive: {time: 77s, interval: 5s, probes: 3}}",
        ),
    );
    mesh.up(&[]);
    let mut s = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = [0u8; 5];
    s.read_exact(&mut greeting).unwrap();
    // The gateway's socket to the backend carries a keepalive timer of about 77 s.
    let timer = keepalive_timer(backend);
    assert!((60..=77).contains(&timer), "{timer}");
}
