//! AuthorizationPolicy at a MUTUAL gateway, end to end: principals from the clients'
//! SPIFFE certificates, methods and paths, DENY before ALLOW, 403 `RBAC: access denied`
//! with the matched policy in the access log.

mod support;

use std::time::Duration;

use support::*;

const POLICIES: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sleep-reads, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/sleep"]}}]
    to: [{operation: {methods: ["GET"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
"#;

#[test]
fn authorization_policies_decide_by_principal_method_and_path() {
    let mut mesh = Mesh::new("authz");
    let (http, https) = (free_port(), free_port());
    let app = mesh.echo("app");
    let servers = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"app.example.test\"]\n    tls: {mode: MUTUAL, credentialName: app-tls}\n";
    mesh.config(
        "config.yaml",
        &format!(
            "{}---\n{}---\n{}",
            public_gateway(http, https, servers),
            app_service(&[app]),
            app_routes(
                "[app.example.test]",
                "  - route: [{destination: {host: app}}]\n"
            )
        ),
    );
    mesh.config("policies.yaml", POLICIES);
    let server_ca = TestCa::new("server root");
    let client_ca = TestCa::new("mesh root");
    let (cert, key) = server_ca.leaf(&["app.example.test"], "app");
    mesh.config(
        "secret.yaml",
        &tls_secret(
            "istio-system",
            "app-tls",
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
    let (sc, sk) = client_ca.leaf_with_uri(
        &["sleep.test"],
        "spiffe://cluster.local/ns/default/sa/sleep",
    );
    let (oc, ok) = client_ca.leaf_with_uri(&["web.test"], "spiffe://cluster.local/ns/prod/sa/web");
    let (sleep_cert, sleep_key) = (write("sleep.pem", &sc), write("sleep.key", &sk));
    let (other_cert, other_key) = (write("web.pem", &oc), write("web.key", &ok));
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )
    .unwrap();
    mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);

    let resolve = format!("app.example.test:{https}:127.0.0.1");
    let call = |cert: &str, key: &str, method: &str, path: &str| {
        let out = curl(&[
            "-s",
            "-w",
            "\n%{http_code}",
            "--resolve",
            &resolve,
            "--cacert",
            &ca,
            "--cert",
            cert,
            "--key",
            key,
            "-X",
            method,
            &format!("https://app.example.test:{https}{path}"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.to_string(), body.to_string())
    };
    assert_eq!(
        call(&sleep_cert, &sleep_key, "GET", "/").0,
        "200",
        "sleep may GET"
    );
    let (code, body) = call(&sleep_cert, &sleep_key, "POST", "/");
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("403", "RBAC: access denied")
    );
    assert_eq!(
        call(&other_cert, &other_key, "GET", "/").0,
        "403",
        "another principal"
    );
    assert_eq!(
        call(&sleep_cert, &sleep_key, "GET", "/admin/users").0,
        "403",
        "DENY wins"
    );
    // Authorization runs before routing, as Envoy's RBAC filter runs before its router: a
    // denied request for a host no route serves is 403, not 404.
    let unrouted = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        &resolve,
        "--cacert",
        &ca,
        "--cert",
        &other_cert,
        "--key",
        &other_key,
        "-H",
        "Host: nothing.example.test",
        &format!("https://app.example.test:{https}/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&unrouted.stdout), "403");

    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "the access log", || {
        up.stdout().lines().count() >= 4
    });
    let log = up.stdout();
    assert!(
        log.contains("\"response_flags\":\"RBAC\",\"response_code_details\":\"rbac_access_denied_matched_policy[istio-system/no-admin]\""),
        "{log}"
    );
    assert!(
        log.contains("\"response_code_details\":\"rbac_access_denied_matched_policy[none]\""),
        "{log}"
    );
    // The policies are in the gateway's config as it runs them.
    let dump = String::from_utf8_lossy(
        &curl(&[&format!("http://127.0.0.1:{}/config_dump", mesh.admin)]).stdout,
    )
    .into_owned();
    assert!(dump.contains("istio-system/sleep-reads") && dump.contains("istio-system/no-admin"));
}

#[test]
fn a_tcp_connection_a_deny_policy_matches_is_closed() {
    let mut mesh = Mesh::new("authz-tcp");
    let tcp = free_port();
    let backend = mesh.tcp_echo("tcp-app");
    mesh.config(
        "config.yaml",
        &format!(
            r#"apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: tcp, namespace: istio-system}}
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
  hosts: [db.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7000, name: tcp, protocol: TCP, targetPort: {backend}}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: db, namespace: shop}}
spec:
  hosts: ["*"]
  gateways: [istio-system/tcp]
  tcp:
  - route: [{{destination: {{host: db.internal, port: {{number: 7000}}}}}}]
"#
        ),
    );
    let mesh_file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )
    .unwrap();
    mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);
    use std::io::Read;
    let greeting = |port: u16| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        s.read(&mut buf).unwrap_or(0)
    };
    assert!(greeting(tcp) > 0, "the backend greets through the gateway");
    mesh.config(
        "policy.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-local, namespace: istio-system}\nspec:\n  action: DENY\n  rules:\n  - from: [{source: {ipBlocks: [\"127.0.0.0/8\"]}}]\n    to: [{operation: {methods: [\"GET\"]}}]\n",
    );
    eventually(Duration::from_secs(10), "the connection refused", || {
        greeting(tcp) == 0
    });
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "the RBAC entry", || {
        up.stdout().contains(
            "\"response_flags\":\"RBAC\",\"response_code_details\":\"rbac_access_denied_matched_policy[istio-system/no-local]\"",
        )
    });
}

/// Policies that name a Gateway API Gateway in `targetRefs` apply to the gateway whose
/// pods carry its `gateway.networking.k8s.io/gateway-name`, and to no other.
#[test]
fn target_refs_attach_policies_to_the_gateway_they_name() {
    let mut mesh = Mesh::new("authz-target-refs");
    let (http, app) = (free_port(), mesh.echo("app"));
    let servers = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
    let gateway = public_gateway(http, free_port(), servers).replace(
        "{istio: ingressgateway}",
        "{gateway.networking.k8s.io/gateway-name: public}",
    );
    let policies = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: public-no-admin, namespace: istio-system}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: public}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-denies-all, namespace: istio-system}
spec:
  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: other}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a-service-denies-all, namespace: istio-system}
spec:
  targetRefs: [{kind: Service, group: "", name: istio-ingressgateway}]
  action: DENY
  rules: [{}]
"#;
    mesh.config(
        "config.yaml",
        &format!(
            "{gateway}---\n{}---\n{}---\n{policies}",
            app_service(&[app]),
            app_routes(
                "[app.example.test]",
                "  - route: [{destination: {host: app}}]\n"
            ),
        ),
    );
    let mesh_file = json_access_log(&mesh);
    mesh.up(&["--mesh", &mesh_file]);
    assert_eq!(app_get(http, "/", &[]).0, 200);
    let (code, body) = app_get(http, "/admin/x", &[]);
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));
    eventually(Duration::from_secs(5), "the denial is logged", || {
        mesh.up.as_ref().unwrap().stdout().contains(
            "\"response_code_details\":\"rbac_access_denied_matched_policy[istio-system/public-no-admin]\"",
        )
    });
    // A Service target is for waypoint proxies: it is reported, and applies nowhere.
    assert!(
        mesh.log().contains("istio-system/a-service-denies-all") && mesh.log().contains("waypoint"),
        "{}",
        mesh.log()
    );
}
