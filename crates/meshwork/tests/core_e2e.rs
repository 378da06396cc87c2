//! The data-plane core end to end: per-resource updates (an ejected endpoint and the
//! circuit-breaker counts survive unrelated changes; a server with a bad secret is left out
//! alone), typed response flags and details in the access log (`DI,URX`; connections
//! refused before routing), and X.509 v1 client certificates at a MUTUAL server.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const HOST: &str = "Host: app.example.test";

/// A gateway on `http` (and `https` when given) with `servers`, a service `app` backed by
/// `backends`, a DestinationRule with `policy`, and the VirtualService `routes`.
fn config(
    mesh: &Mesh,
    http: u16,
    https: u16,
    servers: &str,
    backends: &[u16],
    policy: &str,
    routes: &str,
) {
    let http_server =
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"app.example.test\"]\n";
    mesh.config(
        "gateway.yaml",
        &public_gateway(http, https, &format!("{http_server}{servers}")),
    );
    mesh.config(
        "services.yaml",
        &format!(
            "{}---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: app, namespace: shop}}\nspec:\n  host: app\n  trafficPolicy:\n{policy}\n",
            app_service(backends)
        ),
    );
    mesh.config("routes.yaml", &app_routes("[app.example.test]", routes));
}

fn access_log_on(mesh: &Mesh) -> String {
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )
    .unwrap();
    mesh_file.to_str().unwrap().to_string()
}

/// The access log entries written so far.
fn entries(mesh: &Mesh) -> Vec<serde_json::Value> {
    mesh.up
        .as_ref()
        .unwrap()
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Applies an unrelated change (a new VirtualService with a route of its own) and waits
/// until it is in force.
fn unrelated_change(mesh: &Mesh, marker: &str) {
    mesh.config(
        "other.yaml",
        &format!(
            r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: {marker}, namespace: shop}}
spec:
  hosts: [app.example.test]
  gateways: [istio-system/public]
  http:
  - match: [{{uri: {{exact: /{marker}}}}}]
    directResponse: {{status: 204}}
"#
        ),
    );
    let admin = format!("http://127.0.0.1:{}/config_dump", mesh.admin);
    eventually(Duration::from_secs(10), "the unrelated change", || {
        String::from_utf8_lossy(&curl(&[&admin]).stdout).contains(&format!("shop/{marker}#0"))
    });
}

/// The `x-echo-name` of one response.
fn echo_name(url: &str) -> String {
    let out = curl(&["-D", "-", "-o", "/dev/null", "-H", HOST, url]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("x-echo-name: ")
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_default()
}

#[test]
fn an_ejected_endpoint_stays_ejected_across_an_unrelated_change() {
    let mut mesh = Mesh::new("ejected");
    let http = free_port();
    let (a, b) = (mesh.echo("a"), mesh.echo("b"));
    config(
        &mesh,
        http,
        free_port(),
        "",
        &[a, b],
        "    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 10m, maxEjectionPercent: 50}",
        "  - retries: {attempts: 0}\n    route: [{destination: {host: app}}]\n",
    );
    mesh.up(&[]);
    let url = format!("http://127.0.0.1:{http}/");
    // One 503 ejects whichever endpoint answered it.
    let failed = echo_name(&format!("{url}?status=503"));
    assert!(failed == "a" || failed == "b", "{failed:?}");
    let healthy = if failed == "a" { "b" } else { "a" };
    for _ in 0..6 {
        assert_eq!(
            echo_name(&url),
            healthy,
            "the ejected endpoint gets no traffic"
        );
    }
    unrelated_change(&mesh, "other");
    for _ in 0..10 {
        assert_eq!(
            echo_name(&url),
            healthy,
            "still ejected after an unrelated change"
        );
    }
    // An endpoint-only change (a third endpoint joins) keeps the ejection too.
    let c = mesh.echo("c");
    config(
        &mesh,
        http,
        free_port(),
        "",
        &[a, b, c],
        "    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 10m, maxEjectionPercent: 50}",
        "  - retries: {attempts: 0}\n    route: [{destination: {host: app}}]\n",
    );
    eventually(Duration::from_secs(10), "the third endpoint", || {
        echo_name(&url) == "c"
    });
    for _ in 0..12 {
        assert_ne!(
            echo_name(&url),
            failed,
            "still ejected after endpoints changed"
        );
    }
}

#[test]
fn circuit_breaker_limits_hold_across_a_reload_under_load() {
    let mut mesh = Mesh::new("limits");
    let http = free_port();
    let slow = mesh.echo("slow");
    config(
        &mesh,
        http,
        free_port(),
        "",
        &[slow],
        "    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}",
        "  - retries: {attempts: 0}\n    route: [{destination: {host: app}}]\n",
    );
    mesh.up(&[]);
    let fire = |n: usize| {
        std::thread::spawn(move || {
            let out = curl(&[
                "--parallel",
                "--parallel-immediate",
                "--parallel-max",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}\n",
                "-H",
                HOST,
                &format!("http://127.0.0.1:{http}/?delay=6s&n=[1-{n}]"),
            ]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
    };
    let first = fire(4);
    // The two admitted requests are in flight; wait for the overflow answers to be sure.
    eventually(Duration::from_secs(5), "two requests in flight", || {
        let stats = curl(&[&format!("http://127.0.0.1:{}/stats", mesh.admin)]);
        String::from_utf8_lossy(&stats.stdout).contains("downstream_rq_5xx: 2")
    });
    unrelated_change(&mesh, "reload");
    // The reload must not reset the count of requests in flight: more are refused.
    let second = fire(3).join().unwrap();
    assert_eq!(
        second,
        ["503", "503", "503"],
        "limits hold after the reload"
    );
    let mut first = first.join().unwrap();
    first.sort();
    assert_eq!(first, ["200", "200", "503", "503"]);
}

#[test]
fn delays_and_exhausted_retries_are_both_flagged() {
    let mut mesh = Mesh::new("flags");
    let http = free_port();
    let backend = mesh.echo("failing");
    config(
        &mesh,
        http,
        free_port(),
        "",
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        "  - fault: {delay: {fixedDelay: 5ms, percentage: {value: 100}}}\n    retries: {attempts: 2, retryOn: 5xx}\n    route: [{destination: {host: app}}]\n",
    );
    let mesh_file = access_log_on(&mesh);
    mesh.up(&["--mesh", &mesh_file]);
    assert_eq!(
        status(&["-H", HOST, &format!("http://127.0.0.1:{http}/?status=503")]),
        503
    );
    eventually(Duration::from_secs(5), "the access log", || {
        !entries(&mesh).is_empty()
    });
    let e = &entries(&mesh)[0];
    assert_eq!(e["response_flags"], "DI,URX", "{e}");
    assert_eq!(e["response_code_details"], "via_upstream", "{e}");
    assert_eq!(e["response_code"], 503);
}

fn openssl(args: &[&str], dir: &std::path::Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (always named `CN=tutorial root`) and a client certificate made as MUTUAL-gateway
/// tutorials make them:
/// `openssl x509 -req` with no extension file, which writes an X.509 v1 certificate.
fn tutorial_client_cert(dir: &std::path::Path, name: &str) -> (String, String, String) {
    let f = |ext: &str| format!("{name}{ext}");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            // Every CA here has the same name: only the signature tells them apart.
            "/CN=tutorial root",
            "-keyout",
            &f("-ca.key"),
            "-out",
            &f("-ca.crt"),
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name} client"),
            "-keyout",
            &f(".key"),
            "-out",
            &f(".csr"),
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &f(".csr"),
            "-CA",
            &f("-ca.crt"),
            "-CAkey",
            &f("-ca.key"),
            "-CAcreateserial",
            "-out",
            &f(".crt"),
        ],
        dir,
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", &f(".crt")])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("Version: 1 (0x0)"),
        "the tutorial recipe makes a v1 certificate"
    );
    let path = |ext: &str| dir.join(f(ext)).to_str().unwrap().to_string();
    (path("-ca.crt"), path(".crt"), path(".key"))
}

const MUTUAL_SERVER: &str = r#"  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["app.example.test"]
    tls: {mode: MUTUAL, credentialName: app-tls}
"#;

#[test]
fn a_v1_client_certificate_is_accepted_at_a_mutual_server() {
    let mut mesh = Mesh::new("v1cert");
    let (http, https) = (free_port(), free_port());
    let backend = mesh.echo("app");
    config(
        &mesh,
        http,
        https,
        MUTUAL_SERVER,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        "  - route: [{destination: {host: app}}]\n",
    );
    let dir = mesh.dir.path().to_path_buf();
    let (client_ca, cert, key) = tutorial_client_cert(&dir, "good");
    let (_, rogue_cert, rogue_key) = tutorial_client_cert(&dir, "rogue");
    let server_ca = TestCa::new("server root");
    let (server_cert, server_key) = server_ca.leaf(&["app.example.test"], "app");
    let ca_pem = std::fs::read_to_string(&client_ca).unwrap();
    mesh.config(
        "secret.yaml",
        &tls_secret(
            "istio-system",
            "app-tls",
            &server_cert,
            &server_key,
            Some(&ca_pem),
        ),
    );
    let server_ca_file = dir.join("server-ca.pem");
    std::fs::write(&server_ca_file, &server_ca.cert_pem).unwrap();
    mesh.up(&[]);
    let resolve = format!("app.example.test:{https}:127.0.0.1");
    let url = format!("https://app.example.test:{https}/");
    let with = |cert: &str, key: &str, tls: &str| {
        status(&[
            "--resolve",
            &resolve,
            "--cacert",
            server_ca_file.to_str().unwrap(),
            tls,
            "--cert",
            cert,
            "--key",
            key,
            &url,
        ])
    };
    assert_eq!(
        with(&cert, &key, "--tlsv1.3"),
        200,
        "a v1 certificate from the trusted CA, over TLS 1.3"
    );
    let tls12 = status(&[
        "--resolve",
        &resolve,
        "--cacert",
        server_ca_file.to_str().unwrap(),
        "--tls-max",
        "1.2",
        "--cert",
        &cert,
        "--key",
        &key,
        &url,
    ]);
    assert_eq!(tls12, 200, "and over TLS 1.2");
    assert_eq!(
        with(&rogue_cert, &rogue_key, "--tlsv1.3"),
        0,
        "a v1 certificate from another CA is refused"
    );
}

#[test]
fn connections_refused_before_routing_are_recorded_and_logged() {
    let mut mesh = Mesh::new("refused");
    let (http, https) = (free_port(), free_port());
    let backend = mesh.echo("app");
    config(
        &mesh,
        http,
        https,
        MUTUAL_SERVER,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        "  - route: [{destination: {host: app}}]\n",
    );
    let ca = TestCa::new("root");
    let (cert, key) = ca.leaf(&["app.example.test"], "app");
    mesh.config(
        "secret.yaml",
        &tls_secret("istio-system", "app-tls", &cert, &key, Some(&ca.cert_pem)),
    );
    let ca_file = mesh.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let mesh_file = access_log_on(&mesh);
    mesh.up(&["--mesh", &mesh_file]);

    // An SNI no server has.
    let unknown = curl(&[
        "--resolve",
        &format!("nobody.example.test:{https}:127.0.0.1"),
        "-k",
        &format!("https://nobody.example.test:{https}/"),
    ]);
    assert!(!unknown.status.success());
    // A MUTUAL server and no client certificate: the handshake fails.
    let no_cert = curl(&[
        "--resolve",
        &format!("app.example.test:{https}:127.0.0.1"),
        "--cacert",
        ca_file.to_str().unwrap(),
        &format!("https://app.example.test:{https}/"),
    ]);
    assert!(!no_cert.status.success());
    eventually(Duration::from_secs(5), "two access log entries", || {
        entries(&mesh).len() >= 2
    });
    let all = entries(&mesh);
    let by_sni = |sni: &str| {
        all.iter()
            .find(|e| e["requested_server_name"] == sni)
            .unwrap_or_else(|| panic!("no entry for {sni}: {all:?}"))
            .clone()
    };
    let nobody = by_sni("nobody.example.test");
    assert_eq!(nobody["response_flags"], "NR");
    assert_eq!(nobody["response_code_details"], "filter_chain_not_found");
    let app = by_sni("app.example.test");
    assert_eq!(app["response_flags"], "DPE");
    assert_eq!(app["response_code_details"], "tls_handshake_failed");
    assert!(
        app["connection_termination_details"]
            .as_str()
            .is_some_and(|d| d.contains("TLS handshake failed")),
        "{app}"
    );
    let stats = curl(&[&format!("http://127.0.0.1:{}/stats", mesh.admin)]);
    assert!(
        String::from_utf8_lossy(&stats.stdout).contains("listener.downstream_cx_refused: 2"),
        "{}",
        String::from_utf8_lossy(&stats.stdout)
    );
}

#[test]
fn a_server_with_a_bad_secret_is_left_out_and_its_sibling_serves() {
    let mut mesh = Mesh::new("badsecret");
    let (http, https) = (free_port(), free_port());
    let backend = mesh.echo("app");
    let servers = r#"  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: ["app.example.test"]
    tls: {mode: SIMPLE, credentialName: good-tls}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: ["broken.example.test"]
    tls: {mode: SIMPLE, credentialName: broken-tls}
"#;
    config(
        &mesh,
        http,
        https,
        servers,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        "  - route: [{destination: {host: app}}]\n",
    );
    let ca = TestCa::new("root");
    let (cert, key) = ca.leaf(&["app.example.test"], "app");
    let (broken_cert, _) = ca.leaf(&["broken.example.test"], "broken");
    mesh.config(
        "secret.yaml",
        &format!(
            "{}---\n{}",
            tls_secret("istio-system", "good-tls", &cert, &key, None),
            tls_secret(
                "istio-system",
                "broken-tls",
                &broken_cert,
                "not a key",
                None
            )
        ),
    );
    let ca_file = mesh.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    mesh.up(&[]);
    let get = |host: &str| {
        status(&[
            "--resolve",
            &format!("{host}:{https}:127.0.0.1"),
            "--cacert",
            ca_file.to_str().unwrap(),
            &format!("https://{host}:{https}/"),
        ])
    };
    assert_eq!(get("app.example.test"), 200, "the sibling keeps serving");
    assert_eq!(
        get("broken.example.test"),
        0,
        "the broken server is left out"
    );
    // The admin page shows the secrets, with their keys redacted.
    let dump = curl(&[&format!("http://127.0.0.1:{}/config_dump", mesh.admin)]);
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("kubernetes://istio-system/good-tls"),
        "{dump}"
    );
    assert!(
        dump.contains("[redacted") && !dump.contains("PRIVATE KEY"),
        "{dump}"
    );
    let log = mesh.log();
    assert!(
        log.contains("secret kubernetes://istio-system/broken-tls: bad private key PEM")
            && log.contains("(the Secret is read from ")
            && log.contains("secret.yaml:")
            && log.contains("listener 0.0.0.0_")
            && log.contains("server istio-system/public#2: secret kubernetes://istio-system/broken-tls is not available; the server is left out"),
        "{log}"
    );
}

#[test]
fn sigterm_drains_requests_in_flight_and_refuses_new_connections() {
    let mut mesh = Mesh::new("drain");
    let http = free_port();
    let slow = mesh.echo("slow");
    config(
        &mesh,
        http,
        free_port(),
        "",
        &[slow],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        "  - route: [{destination: {host: app}}]\n",
    );
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "defaultConfig:\n  terminationDrainDuration: 20s\n",
    )
    .unwrap();
    mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);
    let in_flight = std::thread::spawn(move || {
        status(&[
            "-H",
            HOST,
            &format!("http://127.0.0.1:{http}/?delay=1500ms"),
        ])
    });
    let stats = format!("http://127.0.0.1:{}/stats", mesh.admin);
    eventually(Duration::from_secs(5), "the slow request in flight", || {
        String::from_utf8_lossy(&curl(&[&stats]).stdout).contains("downstream_cx_active: 1")
    });
    let pid = mesh.up.as_ref().unwrap().pid();
    // The shell's own kill: no procps needed.
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let ready = format!("http://127.0.0.1:{}/healthz/ready", mesh.health);
    eventually(Duration::from_secs(5), "not ready while draining", || {
        status(&[&ready]) == 503
    });
    eventually(Duration::from_secs(5), "new connections refused", || {
        std::net::TcpStream::connect(("127.0.0.1", http)).is_err()
    });
    assert_eq!(
        in_flight.join().unwrap(),
        200,
        "the request in flight completes"
    );
    let up = mesh.up.as_mut().unwrap();
    let exit = up.wait_exit(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "exits cleanly after draining: {exit:?}\n{}",
        up.stderr()
    );
    assert!(
        up.stderr()
            .lines()
            .any(|l| l.contains("draining") && l.contains("20s")),
        "the mesh config's terminationDrainDuration: {}",
        up.stderr()
    );
    assert!(up.stderr().contains("drained; exiting"), "{}", up.stderr());
}

#[test]
fn a_kept_alive_mutual_connection_closes_when_its_client_ca_changes() {
    let mut mesh = Mesh::new("ca-change");
    let (http, https) = (free_port(), free_port());
    let backend = mesh.echo("app");
    config(
        &mesh,
        http,
        https,
        MUTUAL_SERVER,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        "  - route: [{destination: {host: app}}]\n",
    );
    let server_ca = TestCa::new("server root");
    let client_ca = TestCa::new("client root");
    let other_ca = TestCa::new("other client root");
    let (cert, key) = server_ca.leaf(&["app.example.test"], "app");
    let secret = |ca: &str| tls_secret("istio-system", "app-tls", &cert, &key, Some(ca));
    mesh.config("secret.yaml", &secret(&client_ca.cert_pem));
    let dir = mesh.dir.path().to_path_buf();
    let (ccert, ckey) = client_ca.leaf(&["client.test"], "client");
    std::fs::write(dir.join("client.pem"), &ccert).unwrap();
    std::fs::write(dir.join("client.key"), &ckey).unwrap();
    mesh.up(&[]);
    let out = std::fs::File::create(dir.join("s_client.out")).unwrap();
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{https}"),
            "-servername",
            "app.example.test",
            "-cert",
            dir.join("client.pem").to_str().unwrap(),
            "-key",
            dir.join("client.key").to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    use std::io::Write;
    stdin
        .write_all(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        .unwrap();
    eventually(Duration::from_secs(10), "the first answer", || {
        std::fs::read_to_string(dir.join("s_client.out"))
            .unwrap_or_default()
            .contains("HTTP/1.1 200")
    });
    // The server now trusts another CA: the kept-alive connection, verified under the old
    // one, is closed.
    mesh.config("secret.yaml", &secret(&other_ca.cert_pem));
    eventually(
        Duration::from_secs(15),
        "the connection verified under the old CA closed",
        || matches!(client.try_wait(), Ok(Some(_))),
    );
    let _ = client.kill();
    let _ = client.wait();
}

/// A backend that sends its headers at once and its 5-byte body 1.5 s later.
fn slow_body_backend() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
                std::thread::sleep(Duration::from_millis(1500));
                let _ = stream.write_all(b"hello");
            });
        }
    });
    port
}

#[test]
fn circuit_breakers_count_a_request_until_its_response_body_ends() {
    let mut mesh = Mesh::new("streaming-limits");
    let http = free_port();
    let backend = slow_body_backend();
    config(
        &mesh,
        http,
        free_port(),
        "",
        &[backend],
        "    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}",
        "  - retries: {attempts: 0}\n    route: [{destination: {host: app}}]\n",
    );
    mesh.up(&[]);
    let out = curl(&[
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
        "-H",
        HOST,
        &format!("http://127.0.0.1:{http}/?n=[1-4]"),
    ]);
    let mut codes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        ["200", "200", "503", "503"],
        "two streaming responses fill the limits of two; the others overflow"
    );
}
