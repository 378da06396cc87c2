//! The outlier, pool and retry claims of docs/resilience.md, end to end, each with a
//! backend that misbehaves on purpose: outlier detection by gateway errors and by
//! local-origin failures, one ejection under the default maxEjectionPercent, `retryOn`
//! conditions, the retry limits (`maxRetries`, `retryBudget`), `http2MaxRequests`,
//! `connectTimeout`, TCP `maxConnections`, and the retry buffer's 64 KiB limit.

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use support::*;

fn get(http: u16, path: &str) -> std::collections::BTreeMap<String, usize> {
    answers(&["-H", APP_HOST, &format!("http://127.0.0.1:{http}{path}")])
}

#[test]
fn consecutive_gateway_errors_eject_502s_but_not_500s() {
    let mut mesh = Mesh::new("gateway-errors");
    let http = free_port();
    let bad_gateway = Scripted::start("bad-gateway", |_, _| Reply::Status(502));
    let server_error = Scripted::start("server-error", |_, _| Reply::Status(500));
    let good = mesh.echo("good");
    app_config(
        &mesh,
        http,
        &[bad_gateway.port, server_error.port, good],
        "    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 0, consecutiveGatewayErrors: 1, baseEjectionTime: 300s, maxEjectionPercent: 100}",
        APP_ROUTE,
    );
    mesh.up(&[]);
    let got = get(http, "/x?n=[1-60]");
    assert_eq!(
        got.get("502 bad-gateway"),
        Some(&1),
        "one 502 ejects its endpoint: {got:?}"
    );
    let errors = got.get("500 server-error").copied().unwrap_or(0);
    assert!(
        (25..=35).contains(&errors),
        "a 500 is no gateway error: its endpoint keeps half the traffic: {got:?}"
    );
    assert!(mesh.log().contains("endpoint ejected by outlier detection"));
}

#[test]
fn split_local_origin_failures_eject_a_refusing_endpoint_apart_from_http_errors() {
    let mut mesh = Mesh::new("local-origin");
    let http = free_port();
    let refusing = free_port(); // nothing listens: every connect fails
    let server_error = Scripted::start("server-error", |_, _| Reply::Status(500));
    let good = mesh.echo("good");
    app_config(
        &mesh,
        http,
        &[refusing, server_error.port, good],
        "    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 1, consecutive5xxErrors: 3, baseEjectionTime: 300s, maxEjectionPercent: 100}",
        APP_ROUTE,
    );
    mesh.up(&[]);
    let got = get(http, "/x?n=[1-60]");
    assert_eq!(
        got.get("503 "),
        Some(&1),
        "one connect failure ejects the refusing endpoint: {got:?}"
    );
    // HTTP errors count apart: three 500s in a row eject the other endpoint, not earlier.
    assert_eq!(got.get("500 server-error"), Some(&3), "{got:?}");
    assert_eq!(got.get("200 good"), Some(&56), "{got:?}");
}

#[test]
fn one_ejection_is_allowed_under_the_default_max_ejection_percent() {
    // 10% of three endpoints is less than one; Envoy still ejects one.
    let mut mesh = Mesh::new("one-ejection");
    let http = free_port();
    let (dead, a, b) = (free_port(), mesh.echo("a"), mesh.echo("b"));
    app_config(
        &mesh,
        http,
        &[dead, a, b],
        "    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 1}",
        APP_ROUTE,
    );
    mesh.up(&[]);
    let got = get(http, "/x?n=[1-60]");
    assert_eq!(got.get("503 "), Some(&1), "{got:?}");
    assert_eq!(
        got.get("200 a").copied().unwrap_or(0) + got.get("200 b").copied().unwrap_or(0),
        59
    );
}

#[test]
fn retry_on_conditions_choose_what_is_retried() {
    let mut mesh = Mesh::new("retry-on");
    let http = free_port();
    // The first attempt at each path fails as the path says; the next one succeeds.
    let backend = Scripted::start("scripted", |path, n| match (n, path.split('/').nth(2)) {
        (1, Some("reset")) => Reply::Close,
        (1, Some(code)) => Reply::Status(code.parse().unwrap()),
        _ => Reply::Status(200),
    });
    let route = |prefix: &str, retry_on: &str| {
        format!(
            "  - match: [{{uri: {{prefix: /{prefix}/}}}}]\n    retries: {{attempts: 2, retryOn: \"{retry_on}\"}}\n    route: [{{destination: {{host: app}}}}]\n"
        )
    };
    let routes = [
        route("gateway-error", "gateway-error"),
        route("retriable-4xx", "retriable-4xx"),
        route("reset", "reset"),
        route("five-xx", "5xx"),
    ]
    .concat();
    app_config(
        &mesh,
        http,
        &[backend.port],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        &routes,
    );
    mesh.up(&[]);
    let outcome = |path: &str| {
        let code = status(&["-H", APP_HOST, &format!("http://127.0.0.1:{http}{path}")]);
        (code, backend.count(path))
    };
    // (status seen by the client, attempts at the backend)
    assert_eq!(
        outcome("/gateway-error/502"),
        (200, 2),
        "502 is a gateway error"
    );
    assert_eq!(
        outcome("/gateway-error/504"),
        (200, 2),
        "504 is a gateway error"
    );
    assert_eq!(outcome("/gateway-error/500"), (500, 1), "500 is not");
    assert_eq!(outcome("/retriable-4xx/409"), (200, 2), "409 is retriable");
    assert_eq!(outcome("/retriable-4xx/404"), (404, 1), "404 is not");
    assert_eq!(outcome("/reset/reset"), (200, 2), "a reset before headers");
    assert_eq!(outcome("/five-xx/500"), (200, 2));
    assert_eq!(outcome("/five-xx/reset"), (200, 2), "5xx covers resets too");
}

/// Each path's first attempt answers 503 and its retry is held (until released): a retry
/// in flight.
fn first_fails_then_held(_path: &str, n: usize) -> Reply {
    if n == 1 {
        Reply::Status(503)
    } else {
        Reply::Hold
    }
}

/// With one retry allowed in flight (by `policy`), a second request's retry is not sent:
/// its failed attempt is returned as it is.
fn a_second_retry_in_flight_is_refused(label: &str, policy: &str) {
    let mut mesh = Mesh::new(label);
    let http = free_port();
    let backend = Scripted::start("scripted", first_fails_then_held);
    app_config(
        &mesh,
        http,
        &[backend.port],
        policy,
        "  - retries: {attempts: 3, retryOn: \"503\"}\n    route: [{destination: {host: app}}]\n",
    );
    mesh.up(&[]);
    let url = format!("http://127.0.0.1:{http}/a");
    let held = std::thread::spawn(move || status(&["-H", APP_HOST, &url]));
    eventually(Duration::from_secs(10), "the first request's retry", || {
        backend.count("/a") == 2
    });
    assert_eq!(
        get(http, "/b"),
        [("503 scripted".to_string(), 1)].into(),
        "the second request is not retried while the first retry is in flight"
    );
    assert_eq!(backend.count("/b"), 1);
    backend.release();
    assert_eq!(held.join().unwrap(), 200, "the held retry answers");
    // With no retry in flight, retries are sent again.
    assert_eq!(get(http, "/c"), [("200 scripted".to_string(), 1)].into());
    assert_eq!(backend.count("/c"), 2);
}

#[test]
fn max_retries_limits_retries_in_flight() {
    a_second_retry_in_flight_is_refused(
        "max-retries",
        "    connectionPool: {http: {maxRetries: 1}}",
    );
}

#[test]
fn a_retry_budget_limits_retries_in_flight() {
    // 0% of the requests in flight, but never fewer than one retry.
    a_second_retry_in_flight_is_refused(
        "retry-budget",
        "    retryBudget: {percent: 0, minRetryConcurrency: 1}",
    );
}

#[test]
fn http2_max_requests_limits_requests_in_flight() {
    let mut mesh = Mesh::new("max-requests");
    let http = free_port();
    let backend = Scripted::start("scripted", |path, _| {
        if path.starts_with("/hold") {
            Reply::Hold
        } else {
            Reply::Status(200)
        }
    });
    let mesh_file = json_access_log(&mesh);
    app_config(
        &mesh,
        http,
        &[backend.port],
        "    connectionPool: {http: {http2MaxRequests: 2}}",
        APP_ROUTE,
    );
    mesh.up(&["--mesh", &mesh_file]);
    let held: Vec<_> = (0..2)
        .map(|i| {
            let url = format!("http://127.0.0.1:{http}/hold/{i}");
            std::thread::spawn(move || status(&["-H", APP_HOST, &url]))
        })
        .collect();
    eventually(Duration::from_secs(10), "two requests in flight", || {
        backend.seen().len() == 2
    });
    assert_eq!(get(http, "/x?n=[1-5]"), [("503 ".to_string(), 5)].into());
    backend.release();
    for h in held {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert_eq!(get(http, "/x"), [("200 scripted".to_string(), 1)].into());
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "the access log", || {
        up.stdout().matches("\"response_flags\":\"UO\"").count() == 5
    });
}

#[test]
fn bodies_up_to_64_kib_are_retried_and_larger_ones_are_sent_once() {
    let mut mesh = Mesh::new("retry-buffer");
    let http = free_port();
    // Every path's first attempt fails; a retry succeeds.
    let backend = Scripted::start("scripted", |_, n| {
        Reply::Status(if n == 1 { 503 } else { 200 })
    });
    app_config(
        &mesh,
        http,
        &[backend.port],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        "  - retries: {attempts: 2, retryOn: \"503\"}\n    route: [{destination: {host: app}}]\n",
    );
    mesh.up(&[]);
    let post = |path: &str, size: usize| {
        let body = body_file(&mesh, size);
        let out = curl(&[
            "-H",
            APP_HOST,
            "-H",
            "Expect:",
            "--data-binary",
            &body,
            "-w",
            " %{http_code}",
            &format!("http://127.0.0.1:{http}{path}"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        post("/held", 64 * 1024),
        "scripted 65536 200",
        "a 64 KiB body is replayed"
    );
    assert_eq!(backend.count("/held"), 2);
    assert_eq!(
        post("/streamed", 64 * 1024 + 1),
        "scripted 65537 503",
        "a larger body is sent once"
    );
    assert_eq!(backend.count("/streamed"), 1);
}

#[test]
fn connect_timeout_cuts_a_connect_that_never_completes() {
    // From the DestinationRule, or from the mesh config when the rule says nothing.
    for (label, policy, mesh_config) in [
        (
            "connect-timeout",
            "    connectionPool: {tcp: {connectTimeout: 200ms}}",
            "",
        ),
        (
            "mesh-connect-timeout",
            "    loadBalancer: {simple: ROUND_ROBIN}",
            "connectTimeout: 200ms\n",
        ),
    ] {
        let mut mesh = Mesh::new(label);
        let http = free_port();
        let silent = Silent::new();
        let mesh_file = mesh.dir.path().join("mesh.yaml");
        std::fs::write(
            &mesh_file,
            format!("accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n{mesh_config}"),
        )
        .unwrap();
        app_config(&mesh, http, &[silent.port], policy, APP_ROUTE);
        mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);
        // The mesh default (10 s) would outlast the client's 5 s.
        let out = curl(&[
            "--max-time",
            "5",
            "-H",
            APP_HOST,
            "-w",
            " %{http_code}",
            &format!("http://127.0.0.1:{http}/x"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("upstream connect error") && text.ends_with(" 503"),
            "{label}: {text}"
        );
        let up = mesh.up.as_ref().unwrap();
        eventually(Duration::from_secs(5), "the access log", || {
            up.stdout().contains("\"response_flags\":\"UF\"")
        });
    }
}

#[test]
fn tcp_max_connections_refuses_connections_beyond_the_limit() {
    let mut mesh = Mesh::new("tcp-max-connections");
    let tcp = free_port();
    let backend = mesh.tcp_echo("tcp-echo");
    mesh.config(
        "tcp.yaml",
        &single_tcp_route(tcp, free_port(), "tcp-echo", backend, "{maxConnections: 1}"),
    );
    mesh.up(&[]);
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let greeting = |s: &mut TcpStream| {
        let mut buf = [0u8; 9];
        s.read_exact(&mut buf).map(|_| buf.to_vec()).ok()
    };
    let mut first = connect();
    assert_eq!(greeting(&mut first), Some(b"tcp-echo\n".to_vec()));
    let mut second = connect();
    let mut rest = Vec::new();
    let closed = second.read_to_end(&mut rest);
    assert!(
        closed.is_ok() && rest.is_empty(),
        "the second connection is closed without reaching the backend: {closed:?} {rest:?}"
    );
    drop(first);
    eventually(
        Duration::from_secs(5),
        "a connection after the first closed",
        || greeting(&mut connect()).is_some(),
    );
}

#[test]
fn a_get_lost_to_a_closing_kept_alive_connection_is_sent_again_a_post_is_not() {
    let mut mesh = Mesh::new("keepalive-race");
    let http = free_port();
    // The first request at each /lost path is read and left unanswered, the connection
    // closed: what an endpoint closing an idle connection does to a request racing it.
    let backend = Scripted::start("scripted", |path, n| {
        if path.starts_with("/lost") && n == 1 {
            Reply::Close
        } else {
            Reply::Status(200)
        }
    });
    app_config(
        &mesh,
        http,
        &[backend.port],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        "  - retries: {attempts: 0}\n    route: [{destination: {host: app}}]\n",
    );
    mesh.up(&[]);
    let url = |path: &str| format!("http://127.0.0.1:{http}{path}");
    // A kept-alive connection to the backend, then a GET on it that it loses.
    assert_eq!(status(&["-H", APP_HOST, &url("/warm/1")]), 200);
    assert_eq!(status(&["-H", APP_HOST, &url("/lost/get")]), 200);
    assert_eq!(
        backend.count("/lost/get"),
        2,
        "sent again on a new connection"
    );
    // A POST with a body is not sent again: the endpoint may have acted on it.
    assert_eq!(status(&["-H", APP_HOST, &url("/warm/2")]), 200);
    let code = status(&["-H", APP_HOST, "-d", "order=1", &url("/lost/post")]);
    assert_eq!(code, 503);
    assert_eq!(backend.count("/lost/post"), 1);
}
