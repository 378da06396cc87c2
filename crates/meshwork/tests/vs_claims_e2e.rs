//! The VirtualService claims of docs/resilience.md, end to end: gRPC aborts, HTTP aborts
//! (body and flag), `mirrors` with per-mirror percentages and `mirror` with
//! `mirrorPercentage`, bodies too large to mirror, and CORS with prefix origins and
//! `unmatchedPreflights: IGNORE`.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn a_grpc_abort_answers_200_with_the_grpc_status() {
    let mut mesh = Mesh::new("grpc-abort");
    let http = free_port();
    let backend = mesh.echo("grpc");
    app_config(
        &mesh,
        http,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        "  - fault: {abort: {grpcStatus: UNAVAILABLE}}\n    route: [{destination: {host: app}}]\n",
    );
    mesh.up(&[]);
    let out = curl(&[
        "--http2-prior-knowledge",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        APP_HOST,
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--data-binary",
        "",
        &format!("http://127.0.0.1:{http}/echo.Echo/Say"),
    ]);
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(
        head.contains("grpc-status: 14"),
        "UNAVAILABLE is 14: {head}"
    );
    assert!(
        !head.contains("x-echo-name"),
        "the backend was not reached: {head}"
    );
}

#[test]
fn an_http_abort_answers_with_the_fault_body_and_flag() {
    let mut mesh = Mesh::new("http-abort");
    let http = free_port();
    let backend = mesh.echo("never");
    let mesh_file = json_access_log(&mesh);
    app_config(
        &mesh,
        http,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        "  - fault: {abort: {httpStatus: 503}}\n    route: [{destination: {host: app}}]\n",
    );
    mesh.up(&["--mesh", &mesh_file]);
    let out = curl(&[
        "-H",
        APP_HOST,
        "-w",
        " %{http_code}",
        &format!("http://127.0.0.1:{http}/x"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "fault filter abort 503",
        "no percentage means 100%"
    );
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "the access log", || {
        up.stdout().contains("\"response_flags\":\"FI\"")
    });
}

/// The number of requests `backend` logged once it stops changing (copies are fire and
/// forget: they may still arrive after the primary answers).
fn settled(backend: &Proc) -> usize {
    let mut last = (usize::MAX, Instant::now());
    eventually(Duration::from_secs(30), "the copies to settle", || {
        let n = backend.stdout().lines().count();
        if n != last.0 {
            last = (n, Instant::now());
        }
        last.1.elapsed() > Duration::from_secs(1)
    });
    last.0
}

#[test]
fn mirrors_get_their_percentage_of_copies() {
    let mut mesh = Mesh::new("mirrors");
    let http = free_port();
    let backend = mesh.echo("primary");
    // Logged echo backends; each one's log is its entry in `mesh.backends`.
    let mut logged = |name: &str| (mesh.echo_logged(name), mesh.backends.len() - 1);
    let (all_port, all) = logged("all");
    let (quarter_port, quarter) = logged("quarter");
    let (thirty_port, thirty) = logged("thirty");
    let shadows: String = [("all", all_port), ("quarter", quarter_port), ("thirty", thirty_port)]
        .iter()
        .map(|(name, port)| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  hosts: [{name}.apps.internal]\n  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1}}]\n"
            )
        })
        .collect();
    mesh.config("shadows.yaml", &shadows);
    app_config(
        &mesh,
        http,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        r#"  - match: [{uri: {prefix: /mirrors}}]
    route: [{destination: {host: app}}]
    mirrors:
    - destination: {host: all.apps.internal}
    - destination: {host: quarter.apps.internal}
      percentage: {value: 25}
  - match: [{uri: {prefix: /mirror}}]
    route: [{destination: {host: app}}]
    mirror: {host: thirty.apps.internal}
    mirrorPercentage: {value: 30}
"#,
    );
    mesh.up(&[]);
    for path in ["/mirrors", "/mirror"] {
        let got = answers(&[
            "-H",
            APP_HOST,
            &format!("http://127.0.0.1:{http}{path}?n=[1-400]"),
        ]);
        assert_eq!(got, [("200 primary".to_string(), 400)].into());
    }
    // 400 requests: the bounds are more than 4 standard deviations of a fair draw.
    assert_eq!(
        settled(&mesh.backends[all]),
        400,
        "a mirror without percentage gets every request"
    );
    let q = settled(&mesh.backends[quarter]);
    assert!((65..=135).contains(&q), "25% of 400: {q}");
    let t = settled(&mesh.backends[thirty]);
    assert!((82..=158).contains(&t), "30% of 400: {t}");
    let copy: serde_json::Value =
        serde_json::from_str(mesh.backends[quarter].stdout().lines().next().unwrap()).unwrap();
    assert_eq!(copy["host"], "app.example.test-shadow");
}

#[test]
fn bodies_too_large_to_hold_are_not_mirrored() {
    let mut mesh = Mesh::new("mirror-bodies");
    let http = free_port();
    let backend = mesh.echo("primary");
    let shadow_port = mesh.echo_logged("shadow");
    let shadow = mesh.backends.len() - 1;
    mesh.config(
        "shadow.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: shadow, namespace: apps}}\nspec:\n  hosts: [shadow.apps.internal]\n  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {shadow_port}}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1}}]\n"
        ),
    );
    app_config(
        &mesh,
        http,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        "  - route: [{destination: {host: app}}]\n    mirror: {host: shadow.apps.internal}\n",
    );
    mesh.up(&[]);
    for (path, size) in [("/large", 64 * 1024 + 1), ("/small", 1024)] {
        let body = body_file(&mesh, size);
        let got = answers(&[
            "-H",
            APP_HOST,
            "-H",
            "Expect:",
            "--data-binary",
            &body,
            &format!("http://127.0.0.1:{http}{path}"),
        ]);
        assert_eq!(got, [("200 primary".to_string(), 1)].into(), "{path}");
    }
    assert_eq!(
        settled(&mesh.backends[shadow]),
        1,
        "only the small body is copied"
    );
    assert!(
        mesh.backends[shadow]
            .stdout()
            .contains("\"path\":\"/small\"")
    );
}

#[test]
fn cors_prefix_origins_and_ignored_unmatched_preflights() {
    let mut mesh = Mesh::new("cors-ignore");
    let http = free_port();
    let backend = mesh.echo("api");
    app_config(
        &mesh,
        http,
        &[backend],
        "    loadBalancer: {simple: ROUND_ROBIN}",
        r#"  - route: [{destination: {host: app}}]
    corsPolicy:
      allowOrigins: [{prefix: "https://app."}]
      allowMethods: [GET]
      unmatchedPreflights: IGNORE
"#,
    );
    mesh.up(&[]);
    let url = format!("http://127.0.0.1:{http}/items");
    let request = |origin: &str, preflight: bool| {
        let mut args = vec!["-D", "-", "-o", "/dev/null", "-H", APP_HOST];
        let origin = format!("Origin: {origin}");
        args.extend(["-H", origin.as_str()]);
        if preflight {
            args.extend(["-X", "OPTIONS", "-H", "Access-Control-Request-Method: GET"]);
        }
        args.push(&url);
        String::from_utf8_lossy(&curl(&args).stdout).to_ascii_lowercase()
    };
    let ok = request("https://app.example.test", true);
    assert!(ok.starts_with("http/1.1 200"), "{ok}");
    assert!(
        ok.contains("access-control-allow-origin: https://app.example.test"),
        "a prefix origin matches: {ok}"
    );
    assert!(!ok.contains("x-echo-name"), "the gateway answered: {ok}");
    // IGNORE: an unmatched preflight is answered by the gateway, without CORS headers.
    let other = request("https://evil.test", true);
    assert!(other.starts_with("http/1.1 200"), "{other}");
    assert!(!other.contains("x-echo-name"), "not forwarded: {other}");
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    // Actual requests from any origin are forwarded; only allowed ones get the header.
    let actual = request("https://evil.test", false);
    assert!(actual.contains("x-echo-name: api"), "{actual}");
    assert!(!actual.contains("access-control-allow-origin"), "{actual}");
}
