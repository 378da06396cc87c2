//! TLS origination from DestinationRule `tls`, end to end: the gateway speaks TLS to an
//! `openssl s_server` backend. SIMPLE verifies the server's chain against `caCertificates`
//! and its name against `subjectAltNames` (503 with a TLS_error detail otherwise); MUTUAL
//! presents a client certificate from files or from a `credentialName` Secret to a backend
//! that requires one; a port-level DISABLE overrides the top-level mode.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const HOST: &str = "Host: app.example.test";

/// `openssl s_server -www` on a free port; with `client_ca`, client certificates are
/// required and verified against it.
struct TlsBackend {
    child: Child,
    port: u16,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_backend(
    mesh: &Mesh,
    name: &str,
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> TlsBackend {
    let dir = mesh.dir.path();
    let write = |file: String, text: &str| {
        let p = dir.join(file);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (c, k) = (
        write(format!("{name}.crt"), cert),
        write(format!("{name}.key"), key),
    );
    let port = free_port();
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_server",
        "-quiet",
        "-www",
        "-accept",
        &port.to_string(),
        "-cert",
        &c,
        "-key",
        &k,
    ]);
    if let Some(ca) = client_ca {
        let ca = write(format!("{name}-client-ca.pem"), ca);
        cmd.args(["-Verify", "1", "-verify_return_error", "-CAfile", &ca]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server starts");
    eventually(Duration::from_secs(10), "the TLS backend", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    TlsBackend { child, port }
}

/// A gateway on `http` routing `app.example.test` to `app` (port 443 of the backend),
/// with the DestinationRule traffic policy `tls`, and the access log on.
fn config(mesh: &mut Mesh, http: u16, backend: u16, tls: &str, extra: &str) {
    mesh.config(
        "config.yaml",
        &format!(
            r#"{gateway}---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: app, namespace: shop}}
spec:
  hosts: [app.backend.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{https: {backend}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: app, namespace: shop}}
spec:
  host: app.backend.test
  trafficPolicy:
    tls:
{tls}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: app, namespace: shop}}
spec:
  hosts: [app.example.test]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: app.backend.test, port: {{number: 443}}}}}}]
{extra}"#,
            gateway = http_gateway(http, "[app.example.test]")
        ),
    );
}

fn up(mesh: &mut Mesh) {
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )
    .unwrap();
    mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);
}

fn get(http: u16) -> (u16, String) {
    let out = curl(&[
        "-s",
        "-w",
        "\n%{http_code}",
        "-H",
        HOST,
        &format!("http://127.0.0.1:{http}/"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn last_entry(mesh: &Mesh) -> serde_json::Value {
    let mut found = serde_json::Value::Null;
    eventually(Duration::from_secs(5), "an access log entry", || {
        let out = mesh.up.as_ref().unwrap().stdout();
        match out.lines().rev().find_map(|l| serde_json::from_str(l).ok()) {
            Some(v) => {
                found = v;
                true
            }
            None => false,
        }
    });
    found
}

fn write(mesh: &Mesh, name: &str, text: &str) -> String {
    let p = mesh.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn simple_tls_verifies_the_chain_and_the_names() {
    let mut mesh = Mesh::new("tls-simple");
    let http = free_port();
    let ca = TestCa::new("backend root");
    let (cert, key) = ca.leaf(&["app.backend.test"], "backend");
    let backend = tls_backend(&mesh, "backend", &cert, &key, None);
    let ca_file = write(&mesh, "ca.pem", &ca.cert_pem);
    let tls = format!(
        "      mode: SIMPLE\n      caCertificates: {ca_file}\n      subjectAltNames: [app.backend.test]\n      sni: app.backend.test"
    );
    config(&mut mesh, http, backend.port, &tls, "");
    up(&mut mesh);
    let (code, body) = get(http);
    assert_eq!(code, 200, "{body}\n{}", mesh.log());
    assert!(
        body.contains("s_server"),
        "the TLS backend answered: {body}"
    );

    // A name the certificate does not carry: 503, and the log says why.
    let tls = format!(
        "      mode: SIMPLE\n      caCertificates: {ca_file}\n      subjectAltNames: [other.backend.test]\n      sni: app.backend.test"
    );
    config(&mut mesh, http, backend.port, &tls, "");
    eventually(Duration::from_secs(10), "the SAN mismatch", || {
        get(http).0 == 503
    });
    let (_, body) = get(http);
    assert!(body.contains("TLS_error"), "{body}");
    let e = last_entry(&mesh);
    // A failed handshake is a connect failure, which Istio's default policy retries.
    assert_eq!(e["response_flags"], "UF,URX", "{e}");
    let details = e["response_code_details"].as_str().unwrap();
    assert!(
        details.starts_with("upstream_reset_before_response_started{connection_failure,TLS_error:")
            && details.contains("CERTIFICATE_VERIFY_FAILED:name_mismatch"),
        "{details}"
    );

    // A CA that did not sign the server's certificate.
    let other = TestCa::new("other root");
    let other_file = write(&mesh, "other.pem", &other.cert_pem);
    let tls = format!("      mode: SIMPLE\n      caCertificates: {other_file}");
    config(&mut mesh, http, backend.port, &tls, "");
    eventually(Duration::from_secs(10), "the unknown CA", || {
        get(http).0 == 503
            && last_entry(&mesh)["response_code_details"]
                .as_str()
                .is_some_and(|d| d.contains("CERTIFICATE_VERIFY_FAILED:unknown_issuer"))
    });

    // insecureSkipVerify accepts it anyway.
    config(
        &mut mesh,
        http,
        backend.port,
        "      mode: SIMPLE\n      insecureSkipVerify: true",
        "",
    );
    eventually(Duration::from_secs(10), "insecureSkipVerify", || {
        get(http).0 == 200
    });
}

#[test]
fn subject_alt_names_pin_a_spiffe_identity() {
    let mut mesh = Mesh::new("tls-spiffe");
    let http = free_port();
    let ca = TestCa::new("mesh root");
    let (cert, key) = ca.leaf_with_uri(
        &["app.backend.test"],
        "spiffe://cluster.local/ns/shop/sa/app",
    );
    let backend = tls_backend(&mesh, "backend", &cert, &key, None);
    let ca_file = write(&mesh, "ca.pem", &ca.cert_pem);
    let pinned = |id: &str| {
        format!(
            "      mode: SIMPLE\n      caCertificates: {ca_file}\n      sni: app.backend.test\n      subjectAltNames: [\"{id}\"]"
        )
    };
    config(
        &mut mesh,
        http,
        backend.port,
        &pinned("spiffe://cluster.local/ns/shop/sa/app"),
        "",
    );
    up(&mut mesh);
    assert_eq!(
        get(http).0,
        200,
        "the certificate carries the pinned SPIFFE id"
    );
    // Another identity from the same CA, with a matching SNI, is refused.
    config(
        &mut mesh,
        http,
        backend.port,
        &pinned("spiffe://cluster.local/ns/shop/sa/other"),
        "",
    );
    eventually(
        Duration::from_secs(10),
        "the other identity refused",
        || {
            get(http).0 == 503
                && last_entry(&mesh)["response_code_details"]
                    .as_str()
                    .is_some_and(|d| d.contains("CERTIFICATE_VERIFY_FAILED:name_mismatch"))
        },
    );
}

#[test]
fn mutual_tls_presents_a_client_certificate_from_files_or_a_secret() {
    let mut mesh = Mesh::new("tls-mutual");
    let http = free_port();
    let server_ca = TestCa::new("backend root");
    let client_ca = TestCa::new("client root");
    let (cert, key) = server_ca.leaf(&["app.backend.test"], "backend");
    let backend = tls_backend(&mesh, "backend", &cert, &key, Some(&client_ca.cert_pem));
    let ca_file = write(&mesh, "ca.pem", &server_ca.cert_pem);
    let (client_cert, client_key) = client_ca.leaf(&["gateway.test"], "gateway");
    let cert_file = write(&mesh, "client.pem", &client_cert);
    let key_file = write(&mesh, "client.key", &client_key);

    // Without a client certificate the backend refuses the handshake.
    let simple =
        format!("      mode: SIMPLE\n      caCertificates: {ca_file}\n      sni: app.backend.test");
    config(&mut mesh, http, backend.port, &simple, "");
    up(&mut mesh);
    assert_eq!(get(http).0, 503);

    let files = format!(
        "      mode: MUTUAL\n      caCertificates: {ca_file}\n      clientCertificate: {cert_file}\n      privateKey: {key_file}\n      sni: app.backend.test"
    );
    config(&mut mesh, http, backend.port, &files, "");
    let ok = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        get(http).0 == 200
    });
    assert!(
        ok,
        "MUTUAL from files: {}\n{}",
        last_entry(&mesh),
        mesh.log()
    );

    // credentialName: a Secret in the gateway's namespace with the key, chain and CA.
    let secret = tls_secret(
        "istio-system",
        "backend-client",
        &client_cert,
        &client_key,
        Some(&server_ca.cert_pem),
    );
    config(
        &mut mesh,
        http,
        backend.port,
        "      mode: MUTUAL\n      credentialName: backend-client\n      subjectAltNames: [app.backend.test]",
        &format!("---\n{secret}"),
    );
    eventually(Duration::from_secs(10), "MUTUAL from a Secret", || {
        String::from_utf8_lossy(
            &curl(&[&format!("http://127.0.0.1:{}/config_dump", mesh.admin)]).stdout,
        )
        .contains("kubernetes://istio-system/backend-client")
    });
    assert_eq!(get(http).0, 200, "{}", mesh.log());
    let dump = String::from_utf8_lossy(
        &curl(&[&format!("http://127.0.0.1:{}/config_dump", mesh.admin)]).stdout,
    )
    .into_owned();
    assert!(
        dump.contains("\"client_certificate\": \"kubernetes://istio-system/backend-client\""),
        "the cluster presents the Secret's certificate: {dump}"
    );
}

#[test]
fn a_port_level_disable_overrides_the_top_level_tls() {
    let mut mesh = Mesh::new("tls-disable");
    let http = free_port();
    let plain = mesh.echo("plain");
    // SIMPLE for the host, DISABLE for port 443, as Istio merges them: plaintext.
    let tls = "      mode: SIMPLE\n      insecureSkipVerify: true\n    portLevelSettings:\n    - port: {number: 443}\n      tls: {mode: DISABLE}";
    config(&mut mesh, http, plain, tls, "");
    up(&mut mesh);
    assert_eq!(get(http).0, 200, "{}", mesh.log());
    // Without the port-level setting the gateway speaks TLS to the plaintext echo: 503.
    config(
        &mut mesh,
        http,
        plain,
        "      mode: SIMPLE\n      insecureSkipVerify: true",
        "",
    );
    eventually(
        Duration::from_secs(10),
        "TLS to a plaintext backend fails",
        || {
            get(http).0 == 503
                && last_entry(&mesh)["response_code_details"]
                    .as_str()
                    .is_some_and(|d| d.contains("TLS_error"))
        },
    );
}

#[test]
fn tcp_routes_originate_tls_too() {
    let mut mesh = Mesh::new("tls-tcp");
    let tcp = free_port();
    let ca = TestCa::new("backend root");
    let (cert, key) = ca.leaf(&["db.backend.test"], "backend");
    let backend = tls_backend(&mesh, "backend", &cert, &key, None);
    let ca_file = write(&mesh, "ca.pem", &ca.cert_pem);
    mesh.config(
        "config.yaml",
        &format!(
            r#"apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: public, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {tcp}, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.backend.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {port}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: db, namespace: shop}}
spec:
  host: db.backend.test
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca_file}}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: db, namespace: shop}}
spec:
  hosts: ["*"]
  gateways: [istio-system/public]
  tcp:
  - route: [{{destination: {{host: db.backend.test, port: {{number: 443}}}}}}]
"#,
            port = backend.port
        ),
    );
    mesh.up(&[]);
    // A plaintext client; the gateway speaks TLS (SNI: the service host) to the backend.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.contains("s_server"), "{answer:?}\n{}", mesh.log());
}
