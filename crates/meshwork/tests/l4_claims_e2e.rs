//! The L4 claims of docs/tcp-tls.md that l4_e2e.rs does not cover: a TCP route's connect
//! timeout (UF) and a TCP route without endpoints (UH) in the access log, an SNI that a
//! server admits but no TLS route names, a client that sends nothing, `HTTPS` servers with
//! `PASSTHROUGH`, and `MUTUAL` termination to TCP.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

/// Connects to the gateway and reads until it closes (a close with unread bytes is a
/// reset); the bytes received.
fn closed_by_gateway(port: u16, send: &[u8], limit: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(send).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the gateway did not close the connection within {limit:?}: {e}"),
    }
    got
}

/// A passthrough Gateway on 443 with one server (`protocol`, `hosts`), and a TLS route that
/// sends SNI `a.example.test` to the TLS backend on `backend`.
fn passthrough_to_a(tcp: u16, tls: u16, protocol: &str, hosts: &str, backend: u16) -> String {
    gateway_service(tcp, tls)
        + &format!(
            r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tls-gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: tls, protocol: {protocol}}}
    hosts: {hosts}
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: a, namespace: apps}}
spec:
  hosts: [a.backend.internal]
  ports: [{{number: 443, name: tls, protocol: TLS, targetPort: {backend}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a, namespace: apps}}
spec:
  hosts: [a.example.test]
  gateways: [istio-system/tls-gw]
  tls:
  - match: [{{sniHosts: [a.example.test]}}]
    route: [{{destination: {{host: a.backend.internal, port: {{number: 443}}}}}}]
"#
        )
}

#[test]
fn tcp_connect_timeouts_and_missing_endpoints_close_with_uf_and_uh() {
    let mut mesh = Mesh::new("tcp-flags");
    let (tcp, tls) = (free_port(), free_port());
    let silent = Silent::new();
    let mut config = single_tcp_route(tcp, tls, "silent", silent.port, "{connectTimeout: 200ms}");
    // A second TCP port whose route goes to a Service without endpoints.
    let empty_port = free_port();
    config = config.replace(
        "  - {name: tls, port: 443, targetPort: ",
        &format!("  - {{name: tcp-empty, port: 31401, targetPort: {empty_port}}}\n  - {{name: tls, port: 443, targetPort: "),
    );
    config += r#"---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: apps}
spec:
  selector: {app: nobody}
  ports: [{name: tcp, port: 7000}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: empty-gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 31401, name: tcp-empty, protocol: TCP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: empty, namespace: apps}
spec:
  hosts: ["*"]
  gateways: [istio-system/empty-gw]
  tcp: [{route: [{destination: {host: empty.apps.svc.cluster.local, port: {number: 7000}}}]}]
"#;
    mesh.config("config.yaml", &config);
    let mesh_file = json_access_log(&mesh);
    mesh.up(&["--mesh", &mesh_file]);
    // The mesh default connect timeout (10 s) would outlast the 5 s read limit.
    assert!(closed_by_gateway(tcp, b"hello", Duration::from_secs(5)).is_empty());
    assert!(closed_by_gateway(empty_port, b"hello", Duration::from_secs(5)).is_empty());
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "both access log lines", || {
        up.stdout().lines().count() >= 2
    });
    let flags: Vec<String> = up
        .stdout()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["response_flags"].to_string()
        })
        .collect();
    assert!(flags.contains(&"\"UF\"".to_string()), "{flags:?}");
    assert!(flags.contains(&"\"UH\"".to_string()), "{flags:?}");
}

#[test]
fn an_sni_without_a_tls_route_and_a_silent_client_are_closed_with_a_reason() {
    let mut mesh = Mesh::new("sni-refusals");
    let (tcp, tls) = (free_port(), free_port());
    let ca = TestCa::new("backend root");
    let (cert, key) = ca.leaf(&["a.example.test"], "backend a");
    let backend = mesh.tls_backend("backend-a", &cert, &key);
    mesh.config(
        "config.yaml",
        &passthrough_to_a(tcp, tls, "TLS", r#"["*.example.test"]"#, backend),
    );
    let ca_file = mesh.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    mesh.up(&[]);
    let get = |host: &str| {
        curl(&[
            "--resolve",
            &format!("{host}:{tls}:127.0.0.1"),
            "--cacert",
            ca_file.to_str().unwrap(),
            &format!("https://{host}:{tls}/"),
        ])
    };
    assert!(get("a.example.test").status.success());
    // The server admits *.example.test, but no route names b.example.test.
    assert!(!get("b.example.test").status.success());
    eventually(Duration::from_secs(5), "the refusal in the log", || {
        mesh.log().contains("no TLS route for this SNI") && mesh.log().contains("b.example.test")
    });
    // A client that never sends a ClientHello is closed (after 10 s), with a log line.
    assert!(closed_by_gateway(tls, b"", Duration::from_secs(30)).is_empty());
    eventually(
        Duration::from_secs(5),
        "the silent client in the log",
        || mesh.log().contains("connection closed before routing"),
    );
}

#[test]
fn an_https_server_in_passthrough_mode_passes_tls_through() {
    let mut mesh = Mesh::new("https-passthrough");
    let (tcp, tls) = (free_port(), free_port());
    let ca = TestCa::new("backend root");
    let (cert, key) = ca.leaf(&["a.example.test"], "backend a");
    let backend = mesh.tls_backend("backend-a", &cert, &key);
    mesh.config(
        "config.yaml",
        &passthrough_to_a(tcp, tls, "HTTPS", r#"[a.example.test]"#, backend),
    );
    let ca_file = mesh.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    mesh.up(&[]);
    let out = curl(&[
        "--resolve",
        &format!("a.example.test:{tls}:127.0.0.1"),
        "--cacert",
        ca_file.to_str().unwrap(),
        "-v",
        &format!("https://a.example.test:{tls}/"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("CN=backend a"),
        "the backend's certificate: {stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("s_server"));
}

#[test]
fn mutual_tls_terminated_then_tcp_needs_a_client_certificate() {
    let mut mesh = Mesh::new("mutual-tcp");
    let (tcp, tls) = (free_port(), free_port());
    let backend = mesh.tcp_echo("behind-mtls");
    let server_ca = TestCa::new("gateway root");
    let client_ca = TestCa::new("client root");
    let (cert, key) = server_ca.leaf(&["db.example.test"], "gateway");
    mesh.config(
        "secret.yaml",
        &tls_secret(
            "istio-system",
            "db-tls",
            &cert,
            &key,
            Some(&client_ca.cert_pem),
        ),
    );
    mesh.config(
        "config.yaml",
        &tls_terminated_db(tcp, tls, backend, "MUTUAL"),
    );
    let dir = mesh.dir.path().to_path_buf();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca_file = write("ca.pem", &server_ca.cert_pem);
    let (client_cert, client_key) = client_ca.leaf(&["client"], "client");
    let (cc, ck) = (
        write("client.pem", &client_cert),
        write("client.key", &client_key),
    );
    mesh.up(&[]);
    // openssl s_client with or without a client certificate; the first line the backend
    // sends through the gateway, if any.
    let greeting = |with_cert: bool| {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["s_client", "-quiet", "-connect"])
            .arg(format!("127.0.0.1:{tls}"))
            .args(["-servername", "db.example.test", "-CAfile"])
            .arg(&ca_file);
        if with_cert {
            cmd.arg("-cert").arg(&cc).arg("-key").arg(&ck);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let line = std::io::BufReader::new(stdout)
                .lines()
                .next()
                .and_then(Result::ok);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).ok().flatten();
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
        line
    };
    assert_eq!(greeting(true), Some("behind-mtls".to_string()));
    assert_eq!(greeting(false), None, "no client certificate, no stream");
}
