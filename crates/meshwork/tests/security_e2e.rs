//! AuthorizationPolicy that is hard to get around, at a gateway, end to end: paths are
//! normalized as the mesh config's `pathNormalization` says before they are matched (and
//! the normalized path is the one forwarded), hosts match without case or trailing dot,
//! absolute-form targets are read by their authority, duplicate headers cannot grant
//! what one would not, oversized heads are refused before any policy, path templates,
//! AUDIT marks the log, and `remote.ip` follows `X-Forwarded-For` only as far as
//! `numTrustedProxies` trusts it.

mod support;

use std::time::Duration;

use support::*;

/// A DENY of `/admin` (and below) and of the host `admin.example.test`; an ALLOW of
/// everything else that needs `x-role: reader` on `/reports`; an AUDIT of `/audited`.
const POLICIES: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
  - to: [{operation: {hosts: ["admin.example.test"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: readers, namespace: istio-system}
spec:
  action: ALLOW
  rules:
  - to: [{operation: {notPaths: ["/reports*"]}}]
  - to: [{operation: {paths: ["/reports*"]}}]
    when: [{key: "request.headers[x-role]", values: [reader]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: istio-system}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {paths: ["/audited"]}}]
"#;

/// The path the echo backend saw.
fn seen_path(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["path"].as_str().unwrap_or_default().to_string()
}

#[test]
fn base_normalization_leaves_no_way_around_a_path_policy() {
    let (mesh, http) = policy_gateway("bypass-base", POLICIES);
    assert_eq!(app_get(http, "/public", &[]).0, 200);
    assert_eq!(app_get(http, "/admin", &[]).0, 403);
    for sneaky in [
        "/./admin",
        "/%61dmin",
        "/%61%64%6d%69%6e/x",
        "/api/%2e%2e/admin",
        "/api/%2E%2e/admin/users",
        "/public/../admin",
        "/public/./../admin/x",
        "/public\\..\\admin",
    ] {
        let (code, body) = app_get(http, sneaky, &[]);
        assert_eq!(
            (code, body.as_str()),
            (403, "RBAC: access denied"),
            "{sneaky}"
        );
    }
    // What is allowed goes upstream normalized: the path authorized is the path served.
    let (code, body) = app_get(http, "/admin/../public?x=1", &[]);
    assert_eq!(code, 200);
    assert_eq!(seen_path(&body), "/public?x=1");
    let (code, body) = app_get(http, "/%7Euser/%2e/page", &[]);
    assert_eq!((code, seen_path(&body).as_str()), (200, "/~user/page"));
    // Under BASE, repeated slashes are not merged (as in Istio; MERGE_SLASHES merges them).
    let (code, body) = app_get(http, "//admin", &[]);
    assert_eq!((code, seen_path(&body).as_str()), (200, "//admin"));
    // The AUDIT policy marks its request's log entry, and only it.
    assert_eq!(app_get(http, "/audited", &[]).0, 200);
    let log = || mesh.up.as_ref().unwrap().stdout();
    eventually(Duration::from_secs(5), "the audited entry", || {
        log().contains("\"audit_policy\":\"istio-system/audit\"")
    });
    let marked: Vec<String> = log()
        .lines()
        .filter(|l| l.contains("audit_policy"))
        .map(str::to_string)
        .collect();
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert!(marked[0].contains("\"path\":\"/audited\""), "{marked:?}");
}

#[test]
fn merge_slashes_and_decoded_slashes_close_the_rest() {
    let merge = "pathNormalization: {normalization: MERGE_SLASHES}\n";
    let (_mesh, http) = policy_gateway_with("bypass-merge", POLICIES, merge);
    for sneaky in ["//admin", "/public//..//admin", "///admin//x", "/\\admin"] {
        assert_eq!(app_get(http, sneaky, &[]).0, 403, "{sneaky}");
    }
    let (code, body) = app_get(http, "/a//b", &[]);
    assert_eq!((code, seen_path(&body).as_str()), (200, "/a/b"));
    // Encoded slashes are not slashes here.
    assert_eq!(app_get(http, "/public%2F..%2Fadmin", &[]).0, 200);

    let decode = "pathNormalization: {normalization: DECODE_AND_MERGE_SLASHES}\n";
    let (_mesh, http) = policy_gateway_with("bypass-decode", POLICIES, decode);
    for sneaky in [
        "/public%2F..%2Fadmin",
        "/public%2f..%2fadmin",
        "/public%5C..%5Cadmin",
        "//admin",
    ] {
        assert_eq!(app_get(http, sneaky, &[]).0, 403, "{sneaky}");
    }

    // NONE: the path as sent, and matched as sent.
    let none = "pathNormalization: {normalization: NONE}\n";
    let (_mesh, http) = policy_gateway_with("bypass-none", POLICIES, none);
    let (code, body) = app_get(http, "/%61dmin", &[]);
    assert_eq!((code, seen_path(&body).as_str()), (200, "/%61dmin"));
}

#[test]
fn hosts_headers_and_request_targets_cannot_get_around_a_policy() {
    let (_mesh, http) = policy_gateway("bypass-host", POLICIES);
    // Host without case, with a port, or with a trailing dot.
    for host in [
        "admin.example.test",
        "ADMIN.Example.Test",
        "admin.example.test:80",
        "admin.example.test.",
    ] {
        let h = format!("Host: {host}");
        let url = format!("http://127.0.0.1:{http}/public");
        assert_eq!(status(&["-H", &h, &url]), 403, "{host}");
    }
    // An absolute-form target is read by its own authority, whatever Host says.
    let target = ["--request-target", "http://admin.example.test/public"];
    let url = format!("http://127.0.0.1:{http}/");
    assert_eq!(
        status(&[target[0], target[1], "-H", "Host: app.example.test", &url]),
        403
    );
    // A condition on a header: duplicates are one joined value, which grants nothing one
    // header would not.
    assert_eq!(app_get(http, "/reports", &["x-role: reader"]).0, 200);
    assert_eq!(app_get(http, "/reports", &[]).0, 403);
    assert_eq!(
        app_get(http, "/reports", &["x-role: guest", "x-role: reader"]).0,
        403
    );
    assert_eq!(app_get(http, "/REPORTS/../reports", &[]).0, 403);
    // What a policy could not see as a backend might: an encoded NUL, a method not in
    // upper case.
    assert_eq!(app_get(http, "/admin%00.txt", &[]).0, 400);
    let url = format!("http://127.0.0.1:{http}/public");
    assert_eq!(
        status(&["-X", "delete", "-H", "Host: app.example.test", &url]),
        400
    );
    // An oversized head is refused before anything reads it.
    let big = format!("x-role: {}", "r".repeat(70 * 1024));
    assert_eq!(app_get(http, "/reports", &[&big]).0, 431);
}

#[test]
fn path_templates_match_segments() {
    let policies = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: items, namespace: istio-system}
spec:
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/api/{*}/items", "/static/{**}"]}}]
"#;
    let (_mesh, http) = policy_gateway("templates", policies);
    for (path, code) in [
        ("/api/v1/items", 200),
        ("/api/v2/items", 200),
        ("/api/v1/v2/items", 403),
        ("/api//items", 403),
        ("/static/css/site.css", 200),
        ("/static/", 200),
        ("/statics/x", 403),
    ] {
        assert_eq!(app_get(http, path, &[]).0, code, "{path}");
    }
}

#[test]
fn remote_ip_trusts_as_many_forwarded_for_entries_as_the_mesh_config_says() {
    let policies = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-bad-clients, namespace: istio-system}
spec:
  action: DENY
  rules:
  - from: [{source: {remoteIpBlocks: ["203.0.113.0/24"]}}]
  - when: [{key: remote.ip, values: ["198.51.100.9"]}]
"#;
    // One trusted proxy in front: the client is the last X-Forwarded-For entry.
    let one = "defaultConfig:\n  gatewayTopology: {numTrustedProxies: 1}\n";
    let (_mesh, http) = policy_gateway_with("xff-one", policies, one);
    assert_eq!(app_get(http, "/", &[]).0, 200, "the peer is the client");
    assert_eq!(app_get(http, "/", &["x-forwarded-for: 203.0.113.7"]).0, 403);
    assert_eq!(
        app_get(http, "/", &["x-forwarded-for: 198.51.100.9"]).0,
        403
    );
    // What the client itself wrote further left is not believed.
    assert_eq!(
        app_get(http, "/", &["x-forwarded-for: 203.0.113.7, 10.1.1.1"]).0,
        200
    );
    // Two trusted proxies: the second entry from the right.
    let two = "defaultConfig:\n  gatewayTopology: {numTrustedProxies: 2}\n";
    let (_mesh, http) = policy_gateway_with("xff-two", policies, two);
    assert_eq!(
        app_get(http, "/", &["x-forwarded-for: 203.0.113.7, 10.1.1.1"]).0,
        403
    );
    // Without numTrustedProxies, X-Forwarded-For says nothing about the client.
    let (_mesh, http) = policy_gateway("xff-none", policies);
    assert_eq!(app_get(http, "/", &["x-forwarded-for: 203.0.113.7"]).0, 200);
}
