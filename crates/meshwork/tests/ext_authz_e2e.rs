//! CUSTOM AuthorizationPolicies at the gateway, end to end: an HTTP authorizer (a small
//! server here) and a gRPC one (Envoy's `Authorization/Check`, decoded with Envoy's own
//! definitions from the `envoy-types` crate) decide the requests the policy matches,
//! before DENY and ALLOW; with the authorizer down, `failOpen` decides.

mod support;

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

/// The requests an HTTP authorizer got: request line and headers.
type Seen = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// An HTTP authorizer on a free port: it allows a request that has `x-ext-allow: yes`
/// (answering `x-ext-user: ana`), and denies others with 401, `x-ext-reason: no` and a
/// body of its own. It keeps connections alive, and counts them.
fn http_authorizer() -> (u16, Seen, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Default::default();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (kept, counted) = (seen.clone(), connections.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let request_line = line.trim().to_string();
                    let mut headers = Vec::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        headers.push(line.trim().to_ascii_lowercase());
                    }
                    let allow = headers.iter().any(|h| h == "x-ext-allow: yes");
                    let anonymous = headers.iter().any(|h| h == "x-ext-allow: anonymous");
                    kept.lock().unwrap().push((request_line, headers));
                    let answer: &[u8] = if anonymous {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    } else if allow {
                        b"HTTP/1.1 200 OK\r\nx-ext-user: ana\r\nx-ext-secret: no-leak\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 401 Unauthorized\r\nx-ext-reason: no\r\nx-ext-internal: hidden\r\ncontent-length: 14\r\n\r\ndenied by ext\n"
                    };
                    if reader.get_mut().write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen, connections)
}

const CUSTOM: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: CUSTOM
  provider: {name: authorizer}
  rules:
  - to: [{operation: {paths: ["/protected*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/protected/admin"]}}]
"#;

fn http_provider(port: u16, extra: &str) -> String {
    format!(
        "extensionProviders:\n- name: authorizer\n  envoyExtAuthzHttp:\n    service: 127.0.0.1\n    port: {port}\n    pathPrefix: /check\n    timeout: 2s\n    includeRequestHeadersInCheck: [x-ext-allow]\n    headersToUpstreamOnAllow: [x-ext-user]\n    headersToDownstreamOnDeny: [x-ext-reason]\n{extra}"
    )
}

#[test]
fn an_http_authorizer_decides_what_a_custom_policy_matches() {
    let (port, seen, connections) = http_authorizer();
    let (mesh, http) = policy_gateway_with("ext-http", CUSTOM, &http_provider(port, ""));
    // Not matched by the CUSTOM policy: the authorizer is not asked.
    assert_eq!(app_get(http, "/open", &[]).0, 200);
    assert!(seen.lock().unwrap().is_empty());
    // Allowed: the request goes on with the header the authorizer added.
    let (code, body) = app_get(
        http,
        "/protected/page?x=1",
        &["x-ext-allow: yes", "x-other: 1"],
    );
    assert_eq!(code, 200, "{body}");
    let backend: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(backend["headers"]["x-ext-user"], "ana");
    assert!(
        backend["headers"].get("x-ext-secret").is_none(),
        "{backend}"
    );
    let (line, headers) = seen.lock().unwrap()[0].clone();
    assert_eq!(line, "GET /check/protected/page?x=1 HTTP/1.1");
    assert!(
        headers.contains(&"host: app.example.test".to_string()),
        "{headers:?}"
    );
    assert!(headers.contains(&"x-ext-allow: yes".to_string()));
    assert!(
        !headers.iter().any(|h| h.starts_with("x-other")),
        "{headers:?}"
    );
    // A client's own copy of a header the authorizer may add never reaches the backend,
    // and the check carries no body, so no length either.
    let (code, body) = app_get(
        http,
        "/protected/anon",
        &["x-ext-allow: anonymous", "x-ext-user: admin"],
    );
    assert_eq!(code, 200);
    let backend: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(backend["headers"].get("x-ext-user").is_none(), "{backend}");
    let out = curl(&[
        "-s",
        "-H",
        "Host: app.example.test",
        "-H",
        "x-ext-allow: yes",
        "--data",
        "a body of its own",
        &format!("http://127.0.0.1:{http}/protected/post"),
    ]);
    assert!(!out.stdout.is_empty());
    let (line, headers) = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(line, "POST /check/protected/post HTTP/1.1");
    assert!(
        !headers
            .iter()
            .any(|h| h.starts_with("content-length: ") && h != "content-length: 0"),
        "{headers:?}"
    );
    // Denied: the authorizer's status, body and the headers let through.
    let out = curl(&[
        "-s",
        "-i",
        "-H",
        "Host: app.example.test",
        &format!("http://127.0.0.1:{http}/protected/page"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 401"), "{text}");
    assert!(text.contains("x-ext-reason: no"), "{text}");
    assert!(!text.contains("x-ext-internal"), "{text}");
    assert!(text.ends_with("denied by ext\n"), "{text}");
    // CUSTOM comes first, then DENY: allowed by the authorizer, denied by the policy.
    assert_eq!(
        app_get(http, "/protected/admin", &["x-ext-allow: yes"]).0,
        403
    );
    let log = mesh.up.as_ref().unwrap().stdout();
    assert!(
        log.contains("\"response_flags\":\"UAEX\"")
            && log.contains("\"response_code_details\":\"ext_authz_denied\""),
        "{log}"
    );
    // The checks, one after another, went over one kept-alive connection.
    let checks = seen.lock().unwrap().len();
    assert_eq!(checks, 5);
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn an_authorizer_that_is_down_fails_closed_unless_fail_open() {
    let dead = free_port();
    let (mesh, http) = policy_gateway_with("ext-down", CUSTOM, &http_provider(dead, ""));
    assert_eq!(app_get(http, "/protected", &["x-ext-allow: yes"]).0, 403);
    assert_eq!(app_get(http, "/open", &[]).0, 200);
    eventually(Duration::from_secs(5), "the error logged", || {
        mesh.up
            .as_ref()
            .unwrap()
            .stdout()
            .contains("ext_authz_error")
    });
    let open = http_provider(dead, "    failOpen: true\n");
    let (_mesh, http) = policy_gateway_with("ext-open", CUSTOM, &open);
    assert_eq!(app_get(http, "/protected", &[]).0, 200);
    let status = http_provider(dead, "    statusOnError: \"503\"\n");
    let (_mesh, http) = policy_gateway_with("ext-status", CUSTOM, &status);
    assert_eq!(app_get(http, "/protected", &[]).0, 503);
}

/// A gRPC authorizer: it allows a request whose headers have `x-ext-allow: yes` (adding
/// `x-ext-user: grpc`), and denies others with 401 and a body.
struct GrpcAuthorizer(Arc<Mutex<Vec<String>>>);

#[tonic::async_trait]
impl envoy_types::ext_authz::v3::pb::Authorization for GrpcAuthorizer {
    async fn check(
        &self,
        request: tonic::Request<envoy_types::ext_authz::v3::pb::CheckRequest>,
    ) -> Result<tonic::Response<envoy_types::ext_authz::v3::pb::CheckResponse>, tonic::Status> {
        use envoy_types::ext_authz::v3::pb::*;
        use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse as Answer;
        let http = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {} {}", http.method, http.host, http.path));
        let header = |k: &str, v: &str| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let allow = http.headers.get("x-ext-allow").map(String::as_str) == Some("yes");
        // What the client says its tier and groups are, left as metadata for the policies
        // after the check (`experimental.envoy.filters.http.ext_authz[...]`).
        let dynamic_metadata = http.headers.get("x-ext-tier").map(|tier| {
            use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
            let string = |s: &str| Value {
                kind: Some(Kind::StringValue(s.into())),
            };
            let groups = http
                .headers
                .get("x-ext-groups")
                .cloned()
                .unwrap_or_default();
            Struct {
                fields: [
                    ("tier".to_string(), string(tier)),
                    (
                        "groups".to_string(),
                        Value {
                            kind: Some(Kind::ListValue(ListValue {
                                values: groups.split(',').map(string).collect(),
                            })),
                        },
                    ),
                ]
                .into_iter()
                .collect(),
            }
        });
        let answer = if allow {
            CheckResponse {
                dynamic_metadata,
                status: Some(envoy_types::pb::google::rpc::Status {
                    code: 0,
                    ..Default::default()
                }),
                http_response: Some(Answer::OkResponse(OkHttpResponse {
                    headers: vec![header("x-ext-user", "grpc")],
                    ..Default::default()
                })),
            }
        } else {
            CheckResponse {
                status: Some(envoy_types::pb::google::rpc::Status {
                    code: 7,
                    ..Default::default()
                }),
                http_response: Some(Answer::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 401 }),
                    headers: vec![header("x-ext-reason", "grpc-no")],
                    body: "grpc says no".into(),
                })),
                ..Default::default()
            }
        };
        Ok(tonic::Response::new(answer))
    }
}

fn grpc_provider(port: u16) -> String {
    format!(
        "extensionProviders:\n- name: authorizer\n  envoyExtAuthzGrpc: {{service: 127.0.0.1, port: {port}, timeout: 2s}}\n"
    )
}

#[test]
fn a_grpc_authorizer_decides_what_a_custom_policy_matches() {
    use envoy_types::ext_authz::v3::pb::AuthorizationServer;
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let port = serve_grpc(AuthorizationServer::new(GrpcAuthorizer(seen.clone())));
    let provider = grpc_provider(port);
    let (_mesh, http) = policy_gateway_with("ext-grpc", CUSTOM, &provider);
    let (code, body) = app_get(http, "/protected/x", &["x-ext-allow: yes"]);
    assert_eq!(code, 200, "{body}");
    let backend: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(backend["headers"]["x-ext-user"], "grpc");
    assert_eq!(seen.lock().unwrap()[0], "GET app.example.test /protected/x");
    let out = curl(&[
        "-s",
        "-i",
        "-H",
        "Host: app.example.test",
        &format!("http://127.0.0.1:{http}/protected/x"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 401"), "{text}");
    assert!(text.contains("x-ext-reason: grpc-no"), "{text}");
    assert!(text.ends_with("grpc says no"), "{text}");
    assert_eq!(app_get(http, "/open", &[]).0, 200);
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "only matched requests are checked"
    );
}

/// What the gRPC authorizer leaves as metadata decides DENY and ALLOW policies after it,
/// through `experimental.envoy.filters.http.ext_authz[key]` conditions: a string match
/// (`free`) and a list match (`[ops]`).
const BY_METADATA: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: free-tier, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/protected/premium"]}}]
    when:
    - key: experimental.envoy.filters.http.ext_authz[tier]
      values: ["free"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ops-only, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/protected/ops"]}}]
    when:
    - key: experimental.envoy.filters.http.ext_authz[groups]
      notValues: ["[ops]"]
"#;

#[test]
fn what_a_grpc_authorizer_leaves_as_metadata_decides_the_policies_after_it() {
    use envoy_types::ext_authz::v3::pb::AuthorizationServer;
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let port = serve_grpc(AuthorizationServer::new(GrpcAuthorizer(seen.clone())));
    let provider = grpc_provider(port);
    let policies = format!("{CUSTOM}---\n{BY_METADATA}");
    let (mesh, http) = policy_gateway_with("ext-metadata", &policies, &provider);
    let get = |path: &str, tier: &str, groups: &str| {
        let tier = format!("x-ext-tier: {tier}");
        let groups = format!("x-ext-groups: {groups}");
        app_get(http, path, &["x-ext-allow: yes", &tier, &groups])
    };
    let (code, body) = get("/protected/premium", "free", "dev");
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(get("/protected/premium", "paid", "dev").0, 200);
    assert_eq!(get("/protected/premium", "freeish", "dev").0, 200);
    assert_eq!(get("/protected/ops", "free", "dev,ops").0, 200);
    assert_eq!(get("/protected/ops", "free", "dev,qa").0, 403);
    // Without a check (the CUSTOM policy does not match), there is no metadata: the
    // string match cannot hold, and the notValues list match then holds.
    assert_eq!(app_get(http, "/open", &[]).0, 200);
    assert_eq!(seen.lock().unwrap().len(), 5, "only /protected is checked");
    eventually(Duration::from_secs(5), "the denials are logged", || {
        let log = mesh.up.as_ref().unwrap().stdout();
        log.contains("rbac_access_denied_matched_policy[istio-system/free-tier]")
            && log.contains("rbac_access_denied_matched_policy[istio-system/ops-only]")
    });
}
