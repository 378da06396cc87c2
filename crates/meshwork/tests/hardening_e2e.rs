//! What an adversarial probe found, end to end with raw sockets where curl cannot send the
//! bytes: requests the upstream may have processed are not retried; only WebSocket
//! upgrades pass; client errors are 400 `DPE` that never reach the backend; header limits
//! answer 431; slow and idle clients are bounded; a listener caps its connections.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

/// A backend that reads each whole request, counts it, then closes without answering.
struct ResettingBackend {
    port: u16,
    requests: Arc<AtomicUsize>,
}

fn resetting_backend() -> ResettingBackend {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                count.fetch_add(1, Ordering::SeqCst);
                // Dropping the stream closes it: the request was processed, no answer.
            });
        }
    });
    ResettingBackend { port, requests }
}

const HOST: &str = "Host: app.example.test";

/// A gateway on `http` routing `app.example.test` to a service on `backend`, with
/// `route_extra` on the route.
fn config(mesh: &Mesh, http: u16, backend: u16, route_extra: &str) {
    let routes = format!("  - route: [{{destination: {{host: app}}}}]\n{route_extra}");
    app_on_port_80(mesh, http, &[backend], "[\"*\"]", &routes);
}

/// A good request sent now is the first that `backend` sees: nothing refused before it
/// reached the backend. (The backend closes without answering, hence the 503.)
fn good_request_is_the_first_at_the_backend(http: u16, backend: &ResettingBackend) {
    assert_eq!(post(http), 503);
    eventually(
        Duration::from_secs(5),
        "the good request at the backend",
        || backend.requests.load(Ordering::SeqCst) >= 1,
    );
    assert_eq!(
        backend.requests.load(Ordering::SeqCst),
        1,
        "nothing before it reached the backend"
    );
}

fn post(http: u16) -> u16 {
    status(&[
        "-X",
        "POST",
        "-d",
        "order=1",
        "-H",
        HOST,
        &format!("http://127.0.0.1:{http}/orders"),
    ])
}

#[test]
fn a_post_the_backend_read_is_not_retried_unless_retry_on_says_reset() {
    let mut mesh = Mesh::new("noretry");
    let http = free_port();
    let backend = resetting_backend();
    config(&mesh, http, backend.port, "");
    mesh.up(&[]);
    assert_eq!(post(http), 503);
    assert_eq!(
        backend.requests.load(Ordering::SeqCst),
        1,
        "Istio's default retry policy does not retry a reset after the request was sent"
    );

    config(
        &mesh,
        http,
        backend.port,
        "    retries: {attempts: 2, retryOn: reset}\n",
    );
    let admin = format!("http://127.0.0.1:{}/config_dump", mesh.admin);
    eventually(Duration::from_secs(10), "retryOn reset", || {
        String::from_utf8_lossy(&curl(&[&admin]).stdout).contains("\"reset\"")
    });
    let before = backend.requests.load(Ordering::SeqCst);
    assert_eq!(post(http), 503);
    assert_eq!(
        backend.requests.load(Ordering::SeqCst) - before,
        3,
        "retryOn: reset tries twice more"
    );
}

/// Sends raw bytes and returns what came back until the gateway closed or 5 s passed.
fn raw(http: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && !out.starts_with(b"HTTP/1.1 200") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn only_websocket_upgrades_pass_and_connect_is_refused() {
    let mut mesh = Mesh::new("upgrades");
    let http = free_port();
    let echo = mesh.echo("app");
    config(&mesh, http, echo, "");
    mesh.up(&[]);
    // h2c smuggling: the Upgrade is dropped, the request is served as HTTP/1.1.
    let h2c = raw(
        http,
        b"GET / HTTP/1.1\r\nHost: app.example.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    );
    assert!(h2c.starts_with("HTTP/1.1 200"), "{h2c}");
    assert!(
        !h2c.to_ascii_lowercase().contains("\"upgrade\""),
        "the backend saw no Upgrade: {h2c}"
    );
    // Another protocol: refused.
    let other = raw(
        http,
        b"GET / HTTP/1.1\r\nHost: app.example.test\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n",
    );
    assert!(other.starts_with("HTTP/1.1 403"), "{other}");
    let connect = raw(
        http,
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
    );
    assert!(connect.starts_with("HTTP/1.1 403"), "{connect}");
    // WebSocket still works.
    let ws = raw(
        http,
        b"GET /socket HTTP/1.1\r\nHost: app.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(ws.starts_with("HTTP/1.1 101"), "{ws}");
}

#[test]
fn client_errors_are_400_and_never_reach_the_backend() {
    let mut mesh = Mesh::new("clienterrors");
    let http = free_port();
    let backend = resetting_backend();
    config(&mesh, http, backend.port, "");
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )
    .unwrap();
    mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);
    for (what, request) in [
        ("no Host", &b"GET / HTTP/1.1\r\n\r\n"[..]),
        ("an empty Host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
        (
            "two Hosts",
            b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        ),
        (
            "an asterisk target",
            b"GET * HTTP/1.1\r\nHost: a.test\r\n\r\n",
        ),
    ] {
        let answer = raw(http, request);
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
    }
    good_request_is_the_first_at_the_backend(http, &backend);
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "four DPE entries", || {
        up.stdout().matches("\"response_flags\":\"DPE\"").count() == 4
    });
}

#[test]
fn header_limits_answer_431() {
    let mut mesh = Mesh::new("headerlimits");
    let http = free_port();
    let echo = mesh.echo("app");
    config(&mesh, http, echo, "");
    mesh.up(&[]);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: app.example.test\r\n");
    for i in 0..101 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw(http, many.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "101 headers: {answer}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app.example.test\r\nx-big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let answer = raw(http, big.as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "70 KiB of headers: {answer}"
    );
    // The same limits over HTTP/2.
    let h2 = |extra: &[&str]| {
        let mut args = vec![
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--http2-prior-knowledge",
            "-H",
            HOST,
        ];
        args.extend_from_slice(extra);
        let url = format!("http://127.0.0.1:{http}/");
        args.push(&url);
        String::from_utf8_lossy(&curl(&args).stdout).into_owned()
    };
    let big = format!("x-big: {}", "a".repeat(70 * 1024));
    // HTTP/2's codec refuses the stream of a header block past the limit (curl: 000).
    assert_eq!(
        h2(&["-H", &big]),
        "000",
        "70 KiB of headers over HTTP/2 are refused"
    );
    let many: Vec<String> = (0..101).map(|i| format!("x-h{i}: v")).collect();
    let mut args: Vec<&str> = Vec::new();
    for h in &many {
        args.extend_from_slice(&["-H", h.as_str()]);
    }
    assert_eq!(h2(&args), "431", "101 headers over HTTP/2");
    assert_eq!(h2(&[]), "200", "within the limits over HTTP/2");
    // Within the limits: served.
    let fine = raw(
        http,
        b"GET / HTTP/1.1\r\nHost: app.example.test\r\nx-a: 1\r\nConnection: close\r\n\r\n",
    );
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
}

/// How long until the gateway closes a connection that sent `bytes` and then nothing.
fn closed_after(http: u16, bytes: &[u8], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.write_all(bytes).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

fn gateway(label: &str, flags: &[&str]) -> (Mesh, u16) {
    let mut mesh = Mesh::new(label);
    let http = free_port();
    let echo = mesh.echo("app");
    config(&mesh, http, echo, "");
    mesh.up(flags);
    (mesh, http)
}

#[test]
fn a_client_that_never_finishes_its_headers_is_closed() {
    let (_mesh, http) = gateway("slowloris", &["--request-headers-timeout", "1s"]);
    assert!(
        closed_after(http, b"GET / HTTP/1.1\r\nHost: app", Duration::from_secs(8)).is_some(),
        "half a request, then silence: closed for the request-headers timeout"
    );
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let (_mesh, http) = gateway("idle", &["--idle-timeout", "2s"]);
    let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    // Kept alive between requests: a second request on the connection is served.
    for _ in 0..2 {
        s.write_all(b"GET /?size=0 HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before the answer");
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{text}");
        let length: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0u8; length];
        s.read_exact(&mut body).unwrap();
    }
    // Then quiet: closed for the idle timeout.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the idle connection stayed open: {e}"),
        }
    }
    assert!(got.is_empty(), "nothing more was sent: {got:?}");
}

#[test]
fn a_listener_caps_its_connections_and_counts_the_overflow() {
    let (mesh, http) = gateway("cap", &["--max-connections-per-listener", "3"]);
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", http)).unwrap())
        .collect();
    let stats = format!("http://127.0.0.1:{}/stats", mesh.admin);
    eventually(Duration::from_secs(5), "three connections open", || {
        String::from_utf8_lossy(&curl(&[&stats]).stdout).contains("downstream_cx_active: 3")
    });
    assert!(
        closed_after(http, b"", Duration::from_secs(5)).is_some(),
        "the fourth connection is closed"
    );
    let text = String::from_utf8_lossy(&curl(&[&stats]).stdout).to_string();
    assert!(
        text.contains("listener.downstream_cx_overflow: 1"),
        "{text}"
    );
    drop(held);
    // Once they close, connections are accepted again.
    eventually(Duration::from_secs(5), "a connection served again", || {
        status(&["-H", HOST, &format!("http://127.0.0.1:{http}/")]) == 200
    });
}

/// A backend that answers with a Content-Length of 1,000 and sends 10 bytes, then closes.
fn truncating_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let _ =
                    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789");
            });
        }
    });
    port
}

fn access_log(mesh: &Mesh) -> String {
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )
    .unwrap();
    mesh_file.to_str().unwrap().to_string()
}

#[test]
fn truncated_responses_and_clients_that_leave_are_flagged() {
    let mut mesh = Mesh::new("truncated");
    let http = free_port();
    let backend = truncating_backend();
    config(&mesh, http, backend, "");
    let mesh_file = access_log(&mesh);
    mesh.up(&["--mesh", &mesh_file]);
    let out = curl(&["-s", "-H", HOST, &format!("http://127.0.0.1:{http}/")]);
    assert!(!out.status.success(), "curl sees the response cut short");
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "the UC entry", || {
        up.stdout()
            .contains("\"response_code\":200,\"response_flags\":\"UC\"")
    });

    // A client that gives up before its answer.
    let mut slow_mesh = Mesh::new("client-left");
    let http = free_port();
    let echo = slow_mesh.echo("slow");
    config(&slow_mesh, http, echo, "");
    let mesh_file = access_log(&slow_mesh);
    slow_mesh.up(&["--mesh", &mesh_file]);
    let out = curl(&[
        "-s",
        "--max-time",
        "0.5",
        "-H",
        HOST,
        &format!("http://127.0.0.1:{http}/?delay=3s"),
    ]);
    assert!(!out.status.success());
    let up = slow_mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "the DC entry", || {
        up.stdout()
            .contains("\"response_code\":0,\"response_flags\":\"DC\"")
    });
}

#[test]
fn a_listener_removed_from_config_drains_its_connections() {
    let mut mesh = Mesh::new("removed");
    let (http, extra) = (free_port(), free_port());
    let echo = mesh.echo("app");
    config(&mesh, http, echo, "");
    let second = |on: bool| {
        let server = if on {
            "  - port: {number: 81, name: http-extra, protocol: HTTP}\n    hosts: [\"*\"]\n"
                .to_string()
        } else {
            String::new()
        };
        format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: extra, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {http}, name: http-same, protocol: HTTP}}\n    hosts: [\"nothing.test\"]\n{server}---\napiVersion: v1\nkind: Service\nmetadata: {{name: extra-gw, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  ports: [{{name: http-extra, port: 81, targetPort: {extra}}}]\n"
        )
    };
    mesh.config("extra.yaml", &second(true));
    mesh.config(
        "extra-route.yaml",
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: extra, namespace: shop}\nspec:\n  hosts: [\"*\"]\n  gateways: [istio-system/extra]\n  http:\n  - route: [{destination: {host: app}}]\n",
    );
    mesh.up(&[]);
    let mut s = TcpStream::connect(("127.0.0.1", extra)).unwrap();
    s.write_all(b"GET /?delay=1500ms HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        .unwrap();
    // The listener goes away while the request is in flight.
    mesh.config("extra.yaml", &second(false));
    eventually(Duration::from_secs(10), "the listener closed", || {
        TcpStream::connect(("127.0.0.1", extra)).is_err()
    });
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the kept-alive connection of a removed listener stayed open: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the request in flight completed: {text}"
    );
}

#[test]
fn a_malformed_chunked_body_is_400_before_anything_reaches_the_backend() {
    let mut mesh = Mesh::new("chunked");
    let http = free_port();
    let backend = resetting_backend();
    config(&mesh, http, backend.port, "");
    mesh.up(&[]);
    let answer = raw(
        http,
        b"POST / HTTP/1.1\r\nHost: app.example.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nmore\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    good_request_is_the_first_at_the_backend(http, &backend);

    // A well-formed chunked body, small or large, still goes through.
    let mut echo_mesh = Mesh::new("chunked-ok");
    let http = free_port();
    let echo = echo_mesh.echo("app");
    config(&echo_mesh, http, echo, "");
    echo_mesh.up(&[]);
    for size in [10usize, 200 * 1024] {
        let file = echo_mesh.dir.path().join(format!("body-{size}"));
        std::fs::write(&file, "x".repeat(size)).unwrap();
        let out = curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            HOST,
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("http://127.0.0.1:{http}/"),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "a chunked body of {size} bytes"
        );
    }
}

#[test]
fn encoded_dot_segments_are_normalized_before_routing() {
    let mut mesh = Mesh::new("dots");
    let http = free_port();
    let echo = mesh.echo("app");
    config(&mesh, http, echo, "");
    mesh.config(
        "deny.yaml",
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: deny, namespace: shop}\nspec:\n  hosts: [admin.example.test]\n  gateways: [istio-system/public]\n  http:\n  - match: [{uri: {prefix: /admin}}]\n    directResponse: {status: 403, body: {string: denied}}\n  - match: [{uri: {prefix: /public}}]\n    route: [{destination: {host: app}}]\n",
    );
    mesh.up(&[]);
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
    ] {
        let answer = raw(
            http,
            format!("GET {path} HTTP/1.1\r\nHost: admin.example.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 403"), "{path}: {answer}");
    }
    let fine = raw(
        http,
        b"GET /public/x HTTP/1.1\r\nHost: admin.example.test\r\nConnection: close\r\n\r\n",
    );
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
    // Decoding once never makes a new escape (`%6` then `%31`, decoded, is `%61`): what the
    // backend gets is what the routes saw, and decoding it gives no `a`.
    let once = raw(
        http,
        b"GET /public/%6%31dmin HTTP/1.1\r\nHost: admin.example.test\r\nConnection: close\r\n\r\n",
    );
    assert!(once.starts_with("HTTP/1.1 200"), "{once}");
    assert!(once.contains("\"path\":\"/public/%6%31dmin\""), "{once}");
}

#[test]
fn an_upgraded_websocket_stays_counted_against_the_listener_cap() {
    let (mesh, http) = gateway("ws-cap", &["--max-connections-per-listener", "1"]);
    let mut ws = TcpStream::connect(("127.0.0.1", http)).unwrap();
    ws.write_all(
        b"GET /socket HTTP/1.1\r\nHost: app.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    let n = ws.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    // The spliced stream still echoes, and still counts.
    ws.write_all(b"ping").unwrap();
    let n = ws.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    let stats = format!("http://127.0.0.1:{}/stats", mesh.admin);
    let text = String::from_utf8_lossy(&curl(&[&stats]).stdout).to_string();
    assert!(text.contains("downstream_cx_active: 1"), "{text}");
    assert!(
        closed_after(http, b"", Duration::from_secs(5)).is_some(),
        "a second connection is over the cap of one"
    );
    let text = String::from_utf8_lossy(&curl(&[&stats]).stdout).to_string();
    assert!(
        text.contains("listener.downstream_cx_overflow: 1"),
        "{text}"
    );
    drop(ws);
}

/// Headers that describe one hop never reach the backend: Connection, Proxy-Connection,
/// Keep-Alive, Transfer-Encoding, Upgrade (but for a WebSocket) and HTTP2-Settings, and
/// TE unless it is `trailers`; the headers beside them do.
#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let (_mesh, http) = policy_gateway("hop-by-hop", "");
    let seen = |extra: &[&str]| -> serde_json::Value {
        let (code, body) = app_get(http, "/", extra);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["headers"].clone()
    };
    let headers = seen(&[
        "Proxy-Connection: keep-alive",
        "Keep-Alive: timeout=5",
        "TE: gzip",
        "x-beside: 1",
    ]);
    for name in ["proxy-connection", "keep-alive", "te"] {
        assert!(headers.get(name).is_none(), "{name}: {headers}");
    }
    assert_eq!(headers["x-beside"], "1", "{headers}");
    // An h2c upgrade is dropped with its Connection and HTTP2-Settings.
    let headers = seen(&[
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        "x-beside: 3",
    ]);
    for name in ["connection", "upgrade", "http2-settings"] {
        assert!(headers.get(name).is_none(), "{name}: {headers}");
    }
    assert_eq!(headers["x-beside"], "3", "{headers}");
    // None of them: nothing else is taken away.
    let headers = seen(&["x-beside: 2", "TE: trailers"]);
    assert_eq!(headers["x-beside"], "2", "{headers}");
    assert_eq!(headers["te"], "trailers", "{headers}");
}
