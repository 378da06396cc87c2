//! RequestAuthentication and CUSTOM AuthorizationPolicies at a sidecar, end to end, in
//! Bookinfo on the mesh: the gateway passes the client's token and headers on, and
//! productpage's sidecar verifies the token and asks the external authorizer before
//! its workload is reached.

mod support;

use std::io::{BufRead, Write};
use std::time::Duration;

use support::*;

/// A test token of `https://auth.example.test` signed with the test RSA key.
fn token(sub: &str) -> String {
    let pem = std::fs::read(format!(
        "{}/tests/fixtures/jwt/rsa.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &header,
        &serde_json::json!({"iss": "https://auth.example.test", "sub": sub, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// An HTTP authorizer that allows requests with `x-ext-allow: yes`.
fn authorizer() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = std::io::BufReader::new(stream);
            let mut line = String::new();
            let mut allow = false;
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                allow |= line.trim().eq_ignore_ascii_case("x-ext-allow: yes");
                line.clear();
            }
            let answer: &[u8] = if allow {
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 403 Forbidden\r\ncontent-length: 6\r\nconnection: close\r\n\r\nno ext"
            };
            let _ = reader.get_mut().write_all(answer);
        }
    });
    port
}

#[test]
fn a_sidecar_verifies_tokens_and_asks_the_external_authorizer() {
    let port = authorizer();
    let dir = TempDir::new("mesh-policy");
    let mesh_config = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_config,
        format!("extensionProviders:\n- name: authorizer\n  envoyExtAuthzHttp: {{service: 127.0.0.1, port: {port}, timeout: 2s, includeRequestHeadersInCheck: [x-ext-allow]}}\n"),
    )
    .unwrap();
    let mesh = support::bookinfo::Bookinfo::start_with(&["--mesh", mesh_config.to_str().unwrap()]);
    let jwks = std::fs::read_to_string(format!(
        "{}/tests/fixtures/jwt/jwks.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace('\n', "");
    mesh.edit(|config| {
        format!(
            "{config}\n---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: productpage, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: productpage}}}}\n  jwtRules:\n  - issuer: https://auth.example.test\n    jwks: '{jwks}'\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: require-jwt, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: productpage}}}}\n  rules:\n  - from: [{{source: {{requestPrincipals: [\"https://auth.example.test/*\"]}}}}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: ext, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: productpage}}}}\n  action: CUSTOM\n  provider: {{name: authorizer}}\n  rules:\n  - {{}}\n"
        )
    });
    let url = mesh.url();
    let get = |headers: &[&str]| -> u16 {
        let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
        for h in headers {
            args.extend(["-H", h]);
        }
        args.push(&url);
        String::from_utf8_lossy(&curl(&args).stdout)
            .parse()
            .unwrap_or(0)
    };
    let bearer = format!("Authorization: Bearer {}", token("ana"));
    // Once productpage's sidecar has the policies: no token is not enough.
    eventually(Duration::from_secs(15), "the sidecar's policies", || {
        get(&["x-ext-allow: yes"]) == 403
    });
    assert_eq!(get(&[&bearer, "x-ext-allow: yes"]), 200);
    assert_eq!(get(&[&bearer]), 403, "the authorizer says no");
    assert_eq!(
        get(&["Authorization: Bearer not.a.jwt", "x-ext-allow: yes"]),
        401
    );
    let log = mesh.procs["productpage-v1-sidecar"].stdout()
        + &mesh.procs["productpage-v1-sidecar"].stderr();
    assert!(log.contains("denied by the external authorizer"), "{log}");
}
