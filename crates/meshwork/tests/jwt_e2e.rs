//! RequestAuthentication at the gateway, end to end: tokens signed with the test keys of
//! `tests/fixtures/jwt` (RS256, PS256, ES256, EdDSA), verified against an inline JWKS or
//! one the proxy fetches from a `jwksUri`, with the answers Envoy gives, the request
//! principal and claims that AuthorizationPolicies read, and what a valid token leaves in
//! the request the backend gets.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use support::*;

const ISSUER: &str = "https://auth.example.test";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with `alg` by the test key `kid`, with these claims.
fn token(alg: Algorithm, kid: &str, claims: serde_json::Value) -> String {
    let key = match alg {
        Algorithm::RS256 | Algorithm::PS256 if kid == "rsa-2" => {
            EncodingKey::from_rsa_pem(fixture("other-rsa.pem").as_bytes())
        }
        Algorithm::RS256 | Algorithm::PS256 => {
            EncodingKey::from_rsa_pem(fixture("rsa.pem").as_bytes())
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(fixture("ec.pem").as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(fixture("ed.pem").as_bytes()),
        other => panic!("no test key for {other:?}"),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// Claims of a token of `ISSUER` for `sub`, valid for an hour, for the audience `shop`.
fn claims(sub: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER,
        "sub": sub,
        "aud": ["shop", "other"],
        "azp": "web-app",
        "exp": now() + 3600,
        "groups": ["readers", "admins"],
        "org": {"team": "payments"},
        "level": 3,
    })
}

/// A RequestAuthentication of `ISSUER` at the gateway with these `jwks` settings (YAML
/// fields of the rule), and an ALLOW policy that requires a token for `/secure` and the
/// group `admins` and team `payments` for `/admin`.
fn policies(jwks: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: auth, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: {ISSUER}
    audiences: [shop]
{jwks}    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - {{header: x-jwt-sub, claim: sub}}
    - {{header: x-jwt-level, claim: level}}
  - issuer: https://cookies.example.test
    jwks: '{other}'
    fromHeaders: [{{name: x-token, prefix: "Token "}}]
    fromParams: [tok]
    fromCookies: [session]
    forwardOriginalToken: true
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: ALLOW
  rules:
  - to: [{{operation: {{paths: ["/open*"]}}}}]
  - from: [{{source: {{requestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: ["/secure*"]}}}}]
  - from: [{{source: {{requestPrincipals: ["{ISSUER}/*"]}}}}]
    to: [{{operation: {{paths: ["/admin*"]}}}}]
    when:
    - {{key: "request.auth.claims[groups]", values: [admins]}}
    - {{key: "request.auth.claims[org][team]", values: [payments]}}
    - {{key: request.auth.audiences, values: [shop]}}
    - {{key: request.auth.presenter, values: [web-app]}}
"#,
        other = fixture("other-jwks.json").replace('\n', "")
    )
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}")
}

#[test]
fn tokens_are_verified_and_give_the_request_principal_and_claims() {
    let inline = format!("    jwks: '{}'\n", fixture("jwks.json").replace('\n', ""));
    let (mesh, http) = policy_gateway("jwt-inline", &policies(&inline));
    // No token: the request goes on without a principal, and without the claim headers a
    // client made up.
    let (code, body) = app_get(http, "/open", &["x-jwt-sub: admin", "x-jwt-payload: e30"]);
    assert_eq!(code, 200);
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(seen["headers"].get("x-jwt-sub").is_none(), "{seen}");
    assert!(seen["headers"].get("x-jwt-payload").is_none(), "{seen}");
    let (code, body) = app_get(http, "/secure", &[]);
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));

    // A valid token of each algorithm.
    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::PS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
    ] {
        let t = token(alg, kid, claims("ana"));
        let (code, body) = app_get(http, "/secure", &[&bearer(&t)]);
        assert_eq!(code, 200, "{alg:?}: {body}");
        // What the backend got: no token, the claims it was asked for.
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        let headers = &seen["headers"];
        assert!(headers.get("authorization").is_none(), "{seen}");
        assert_eq!(headers["x-jwt-sub"], "ana");
        assert_eq!(headers["x-jwt-level"], "3");
        assert_eq!(headers["x-jwt-payload"], t.split('.').nth(1).unwrap());
    }
    // Claims, nested claims, audiences and presenter in conditions.
    let admin = token(Algorithm::RS256, "rsa-1", claims("ana"));
    assert_eq!(app_get(http, "/admin", &[&bearer(&admin)]).0, 200);
    let mut reader = claims("bob");
    reader["groups"] = serde_json::json!(["readers"]);
    let reader = token(Algorithm::ES256, "ec-1", reader);
    assert_eq!(app_get(http, "/admin", &[&bearer(&reader)]).0, 403);
    let mut other_team = claims("eve");
    other_team["org"]["team"] = "growth".into();
    let other_team = token(Algorithm::ES256, "ec-1", other_team);
    assert_eq!(app_get(http, "/admin", &[&bearer(&other_team)]).0, 403);

    // Present and not valid: 401, whatever is wrong with it.
    let mut expired = claims("ana");
    expired["exp"] = (now() - 600).into();
    let mut early = claims("ana");
    early["nbf"] = (now() + 600).into();
    let mut wrong_audience = claims("ana");
    wrong_audience["aud"] = "elsewhere".into();
    let mut no_audience = claims("ana");
    no_audience.as_object_mut().unwrap().remove("aud");
    let mut unknown_issuer = claims("ana");
    unknown_issuer["iss"] = "https://evil.example.test".into();
    let bad_signature = {
        let good = token(Algorithm::RS256, "rsa-1", claims("ana"));
        let forged = token(Algorithm::RS256, "rsa-2", claims("mallory"));
        let parts: Vec<&str> = good.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            forged.split('.').nth(1).unwrap(),
            parts[2]
        )
    };
    let other_key = token(Algorithm::RS256, "rsa-2", claims("mallory"));
    for (what, t) in [
        ("expired", token(Algorithm::RS256, "rsa-1", expired)),
        ("not yet valid", token(Algorithm::RS256, "rsa-1", early)),
        (
            "wrong audience",
            token(Algorithm::EdDSA, "ed-1", wrong_audience),
        ),
        (
            "unknown issuer",
            token(Algorithm::RS256, "rsa-1", unknown_issuer),
        ),
        ("no audience", token(Algorithm::RS256, "rsa-1", no_audience)),
        ("bad signature", bad_signature),
        ("a key not in the JWKS", other_key),
        ("not a JWT", "not.a.jwt".to_string()),
    ] {
        for path in ["/open", "/secure"] {
            let (code, body) = app_get(http, path, &[&bearer(&t)]);
            assert_eq!(
                (code, body.as_str()),
                (401, "Jwt verification fails"),
                "{what} on {path}"
            );
        }
    }
    // A good token does not carry a bad one past the proxy: every token found must be
    // valid, wherever it is and however its parameter is spelled.
    let good = token(Algorithm::RS256, "rsa-1", claims("ana"));
    let forged = token(Algorithm::RS256, "rsa-2", claims("admin"));
    for (path, headers) in [
        (
            format!("/secure?access_token={forged}"),
            vec![bearer(&good)],
        ),
        (
            format!("/secure?access%5Ftoken={forged}"),
            vec![bearer(&good)],
        ),
        (
            format!("/secure?access_token={good}&access_token={forged}"),
            vec![],
        ),
        (
            format!("/secure?access_token={good}"),
            vec![bearer(&forged)],
        ),
    ] {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        assert_eq!(app_get(http, &path, &headers).0, 401, "{path}");
    }
    assert_eq!(
        app_get(
            http,
            &format!("/secure?access_token={good}"),
            &[&bearer(&good)]
        )
        .0,
        200,
        "the same good token twice"
    );
    // The access log names why.
    let log = mesh.up.as_ref().unwrap().stdout();
    assert!(
        log.contains("jwt_authn_access_denied{Jwt_is_expired}")
            && log.contains("jwt_authn_access_denied{Jwt_issuer_is_not_configured}")
            && log.contains("jwt_authn_access_denied{Audiences_in_Jwt_are_not_allowed}")
            && log.contains("jwt_authn_access_denied{Jwt_verification_fails}"),
        "{log}"
    );
}

#[test]
fn tokens_are_found_where_their_rule_says_and_forwarded_when_asked() {
    let inline = format!("    jwks: '{}'\n", fixture("jwks.json").replace('\n', ""));
    let (_mesh, http) = policy_gateway("jwt-locations", &policies(&inline));
    let cookie_claims = serde_json::json!({
        "iss": "https://cookies.example.test",
        "sub": "carol",
        "exp": now() + 3600,
    });
    let t = token(Algorithm::RS256, "rsa-2", cookie_claims);
    // The second rule reads x-token (with its prefix), the tok parameter and the
    // session cookie, and forwards the token.
    let (code, body) = app_get(http, "/secure", &[&format!("x-token: Token {t}")]);
    assert_eq!(code, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-token"], format!("Token {t}"));
    assert_eq!(app_get(http, &format!("/secure?tok={t}"), &[]).0, 200);
    assert_eq!(
        app_get(http, "/secure", &[&format!("cookie: a=b; session={t}")]).0,
        200
    );
    // Without its prefix the header holds no token; the default locations are the
    // first rule's (Authorization: Bearer, access_token), whose issuer this is not.
    assert_eq!(app_get(http, "/secure", &[&format!("x-token: {t}")]).0, 403);
    assert_eq!(
        app_get(http, &format!("/secure?access_token={t}"), &[]).0,
        401,
        "a token of another issuer where the first rule looks"
    );
    let first = token(Algorithm::ES256, "ec-1", claims("ana"));
    assert_eq!(
        app_get(http, &format!("/secure?access_token={first}"), &[]).0,
        200
    );
}

#[test]
fn keys_from_a_jwks_uri_are_fetched_and_kept_when_the_server_goes_away() {
    use std::io::{Read, Write};
    // A JWKS server that answers until told to stop.
    let listener = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let jwks = fixture("jwks.json");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                    jwks.len()
                )
                .as_bytes(),
            );
        }
    });
    let remote = format!("    jwksUri: http://127.0.0.1:{port}/.well-known/jwks.json\n");
    let (mesh, http) = policy_gateway("jwt-remote", &policies(&remote));
    let t = token(Algorithm::RS256, "rsa-1", claims("ana"));
    eventually(Duration::from_secs(10), "the fetched keys verify", || {
        app_get(http, "/secure", &[&bearer(&t)]).0 == 200
    });
    // The server goes away: the keys already fetched stay.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app_get(http, "/secure", &[&bearer(&t)]).0, 200);
    let other = token(Algorithm::RS256, "rsa-2", claims("mallory"));
    assert_eq!(app_get(http, "/secure", &[&bearer(&other)]).0, 401);
    drop(mesh);
}

#[test]
fn a_jwks_uri_that_never_answers_refuses_tokens_and_says_why() {
    let dead = free_port();
    let remote = format!("    jwksUri: http://127.0.0.1:{dead}/jwks\n");
    let (mesh, http) = policy_gateway("jwt-dead", &policies(&remote));
    let t = token(Algorithm::RS256, "rsa-1", claims("ana"));
    assert_eq!(app_get(http, "/secure", &[&bearer(&t)]).0, 401);
    assert_eq!(
        app_get(http, "/open", &[]).0,
        200,
        "no token, no keys needed"
    );
    // Longer than the fetch's own 5 s timeout, for a port something else took meanwhile.
    eventually(Duration::from_secs(15), "the failed fetch logged", || {
        mesh.log().contains("cannot fetch the JWKS")
    });
}
