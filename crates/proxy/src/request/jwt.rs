//! End-user authentication in the policy phase, before authorization (as Envoy's
//! `jwt_authn` filter runs before RBAC): Istio's RequestAuthentication. Each rule looks
//! for a token where it says (a header with a prefix, a query parameter, a cookie). A
//! request without a token goes on with no request principal. A token is verified by
//! the rules of its issuer: signature (RS, PS, ES and EdDSA algorithms) with their keys,
//! expiry and not-before with a minute's leeway, audience. A token that is present and
//! not valid is answered `401 Jwt verification fails`. A valid one gives the request
//! principal `iss/sub` and the claims that `request.auth.*` conditions read; it is
//! removed before the request goes upstream unless `forwardOriginalToken`, and its
//! payload and claims go to headers when the rule says so.
//!
//! Keys from a `jwksUri` are fetched by the proxy, kept, and fetched again every few
//! minutes by a task of their own; a failed fetch keeps the keys it had and is logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use meshwork_resources::jwt::{Jwks, JwtRule};

/// One key of a JWKS.
pub struct Key {
    kid: Option<String>,
    family: AlgorithmFamily,
    key: DecodingKey,
}

/// The keys of a JWKS document; keys of kinds that cannot verify (`oct`) are left out.
pub fn parse_jwks(text: &str) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("a key does not load: {e}"))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            family,
            key,
        });
    }
    Ok(keys)
}

/// Keys fetched from a `jwksUri`, refreshed by a task that stops with them.
pub struct RemoteKeys {
    keys: ArcSwapOption<Vec<Key>>,
    task: tokio::task::AbortHandle,
}

impl Drop for RemoteKeys {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RemoteKeys {
    /// Starts fetching `uri` now and every `refresh` after.
    pub fn start(uri: &str, timeout: Duration, refresh: Duration) -> Arc<RemoteKeys> {
        Arc::new_cyclic(|weak: &std::sync::Weak<RemoteKeys>| {
            let weak = weak.clone();
            let uri = uri.to_string();
            let task = tokio::spawn(async move {
                let mut wait = Duration::ZERO;
                loop {
                    tokio::time::sleep(wait).await;
                    let fetched = tokio::time::timeout(timeout, fetch(&uri))
                        .await
                        .unwrap_or_else(|_| Err("the fetch timed out".into()))
                        .and_then(|body| parse_jwks(&body));
                    let Some(this) = weak.upgrade() else {
                        return;
                    };
                    match fetched {
                        Ok(keys) => {
                            this.keys.store(Some(Arc::new(keys)));
                            wait = refresh;
                        }
                        Err(e) => {
                            // The keys already fetched stay; the next try comes sooner.
                            tracing::warn!(uri, error = %e, "cannot fetch the JWKS; the keys already fetched stay");
                            wait = refresh.min(Duration::from_secs(5));
                        }
                    }
                }
            });
            RemoteKeys {
                keys: ArcSwapOption::empty(),
                task: task.abort_handle(),
            }
        })
    }
}

/// GETs `uri` (`http://` or `https://`, verified against the system's roots).
async fn fetch(uri: &str) -> Result<String, String> {
    use http_body_util::BodyExt;
    let parsed: http::Uri = uri.parse().map_err(|e| format!("not a URI: {e}"))?;
    let host = parsed.host().ok_or("the URI has no host")?.to_string();
    let https = parsed.scheme_str() == Some("https");
    let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let path = parsed
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let request = http::Request::get(path)
        .header(
            http::header::HOST,
            parsed.authority().map_or("", |a| a.as_str()),
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = if https {
        let name =
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(system_roots())
            .connect(name, stream)
            .await
            .map_err(|e| e.to_string())?;
        send(hyper_util::rt::TokioIo::new(tls), request).await?
    } else {
        send(hyper_util::rt::TokioIo::new(stream), request).await?
    };
    if !response.status().is_success() {
        return Err(format!("the server answered {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the JWKS is not UTF-8".into())
}

async fn send<I>(
    io: I,
    request: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// A client config that trusts the system's CA bundle.
fn system_roots() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
            for p in pem::parse_many(&bundle).unwrap_or_default() {
                let _ = roots.add(rustls::pki_types::CertificateDer::from(p.into_contents()));
            }
            Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// A rule with its keys.
struct CompiledRule {
    rule: JwtRule,
    inline: Option<Vec<Key>>,
    remote: Option<Arc<RemoteKeys>>,
    /// What a token of each kind of key must satisfy, made once.
    validations: Vec<(AlgorithmFamily, Validation)>,
}

/// What a token of `family` must satisfy under `rule`: its signature by an algorithm of
/// the family, `exp` and `nbf` with a minute's leeway, the issuer, and an `aud` among
/// the rule's audiences when it has any.
fn validation(rule: &JwtRule, family: AlgorithmFamily) -> Validation {
    let algorithms: Vec<Algorithm> = ALGORITHMS
        .iter()
        .copied()
        .filter(|a| family_of(*a) == Some(family))
        .collect();
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms;
    validation.required_spec_claims.clear();
    validation.leeway = 60;
    validation.validate_nbf = true;
    validation.set_issuer(&[rule.issuer.as_str()]);
    if rule.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        // A token without `aud` is not for these audiences.
        validation.set_audience(&rule.audiences);
        validation.required_spec_claims.insert("aud".to_string());
    }
    validation
}

/// The proxy's rules, ready for requests.
pub struct Authenticator {
    rules: Vec<CompiledRule>,
}

/// What a verified token says of the request.
#[derive(Debug, Clone, Default)]
pub struct Authenticated {
    /// `iss/sub`.
    pub principal: String,
    /// Every claim.
    pub claims: serde_json::Value,
}

/// Why a token was refused, as Envoy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No rule has the token's issuer.
    UnknownIssuer,
    /// Its `exp` has passed.
    Expired,
    /// Its `nbf` has not come.
    NotYetValid,
    /// None of its audiences is allowed.
    AudienceNotAllowed,
    /// Malformed, or a signature no key verifies.
    VerificationFails,
}

impl Refusal {
    /// Envoy's `response_code_details` for it.
    pub fn details(self) -> &'static str {
        match self {
            Refusal::UnknownIssuer => "jwt_authn_access_denied{Jwt_issuer_is_not_configured}",
            Refusal::Expired => "jwt_authn_access_denied{Jwt_is_expired}",
            Refusal::NotYetValid => "jwt_authn_access_denied{Jwt_not_yet_valid}",
            Refusal::AudienceNotAllowed => {
                "jwt_authn_access_denied{Audiences_in_Jwt_are_not_allowed}"
            }
            Refusal::VerificationFails => "jwt_authn_access_denied{Jwt_verification_fails}",
        }
    }
}

/// Where a token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Header(String),
    Param(String),
    Cookie(String),
}

const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn family_of(alg: Algorithm) -> Option<AlgorithmFamily> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(AlgorithmFamily::Rsa),
        Algorithm::ES256 | Algorithm::ES384 => Some(AlgorithmFamily::Ec),
        Algorithm::EdDSA => Some(AlgorithmFamily::Ed),
        _ => None,
    }
}

/// Every value of the query parameter `name`, decoded (its name decoded too).
fn params(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
        .collect()
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Authenticator {
    /// The authenticator of `rules`, keeping the remote keys of `previous` whose URI it
    /// still has.
    pub fn new(
        rules: &[JwtRule],
        previous: Option<&Authenticator>,
        warnings: &mut Vec<String>,
    ) -> Authenticator {
        let known: HashMap<&str, &Arc<RemoteKeys>> = previous
            .into_iter()
            .flat_map(|p| &p.rules)
            .filter_map(|r| match (&r.rule.jwks, &r.remote) {
                (Jwks::Remote { uri, .. }, Some(keys)) => Some((uri.as_str(), keys)),
                _ => None,
            })
            .collect();
        let rules = rules
            .iter()
            .map(|rule| {
                let (inline, remote) = match &rule.jwks {
                    Jwks::Inline(text) => match parse_jwks(text) {
                        Ok(keys) => (Some(keys), None),
                        Err(e) => {
                            warnings.push(format!(
                                "RequestAuthentication {}: the jwks of {}: {e}; its tokens are refused",
                                rule.policy, rule.issuer
                            ));
                            (Some(Vec::new()), None)
                        }
                    },
                    Jwks::Remote {
                        uri,
                        timeout_ms,
                        refresh_seconds,
                    } => {
                        let keys = known.get(uri.as_str()).map_or_else(
                            || {
                                RemoteKeys::start(
                                    uri,
                                    Duration::from_millis(*timeout_ms),
                                    Duration::from_secs(*refresh_seconds),
                                )
                            },
                            |k| (*k).clone(),
                        );
                        (None, Some(keys))
                    }
                };
                CompiledRule {
                    rule: rule.clone(),
                    inline,
                    remote,
                    validations: [AlgorithmFamily::Rsa, AlgorithmFamily::Ec, AlgorithmFamily::Ed]
                        .into_iter()
                        .map(|f| (f, validation(rule, f)))
                        .collect(),
                }
            })
            .collect();
        Authenticator { rules }
    }

    /// The tokens of the request, each with where it was and the rule that looks there.
    fn tokens(&self, parts: &http::request::Parts) -> Vec<(usize, Location, String)> {
        let mut found = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            for (name, prefix) in &r.rule.from_headers {
                for v in parts.headers.get_all(name.as_str()) {
                    let Ok(v) = v.to_str() else { continue };
                    if let Some(token) = v.strip_prefix(prefix.as_str()) {
                        let token = token.trim();
                        if !token.is_empty() {
                            found.push((i, Location::Header(name.clone()), token.to_string()));
                        }
                    }
                }
            }
            if let Some(query) = parts.uri.query() {
                for name in &r.rule.from_params {
                    for token in params(query, name).into_iter().filter(|t| !t.is_empty()) {
                        found.push((i, Location::Param(name.clone()), token));
                    }
                }
            }
            for name in &r.rule.from_cookies {
                let cookies = parts.headers.get_all(http::header::COOKIE);
                for c in cookies.iter().filter_map(|c| c.to_str().ok()) {
                    for pair in c.split(';') {
                        if let Some((k, v)) = pair.trim().split_once('=')
                            && k == name
                            && !v.is_empty()
                        {
                            found.push((i, Location::Cookie(name.clone()), v.to_string()));
                        }
                    }
                }
            }
        }
        found
    }

    /// Verifies `token` with rule `i`.
    fn verify(&self, i: usize, token: &str) -> Result<serde_json::Value, Refusal> {
        let r = &self.rules[i];
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::VerificationFails)?;
        let family = family_of(header.alg).ok_or(Refusal::VerificationFails)?;
        let remote = r.remote.as_ref().and_then(|k| k.keys.load_full());
        let keys: &[Key] = match (&r.inline, &remote) {
            (Some(k), _) => k,
            (None, Some(k)) => k,
            (None, None) => &[],
        };
        let validation = r
            .validations
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, v)| v)
            .ok_or(Refusal::VerificationFails)?;
        let mut refusal = Refusal::VerificationFails;
        let candidates = keys.iter().filter(|k| {
            k.family == family
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        });
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    refusal = match e.kind() {
                        ErrorKind::ExpiredSignature => Refusal::Expired,
                        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
                        ErrorKind::InvalidAudience => Refusal::AudienceNotAllowed,
                        _ => refusal,
                    };
                }
            }
        }
        Err(refusal)
    }

    /// Authenticates the request: `Ok(None)` without a token, `Ok(Some)` with a valid
    /// one (removed from the request unless forwarded, and output to headers as the rule
    /// says), `Err` with a token that is not valid.
    pub fn authenticate(
        &self,
        parts: &mut http::request::Parts,
    ) -> Result<Option<Authenticated>, Refusal> {
        // Headers that carry a verified token's payload or claims come only from the
        // proxy: a client's own copies never reach the backend.
        for rule in self.rules.iter().map(|r| &r.rule) {
            let outputs = rule.output_payload_to_header.iter();
            for name in outputs.chain(rule.output_claim_to_headers.iter().map(|(h, _)| h)) {
                parts.headers.remove(name.as_str());
            }
        }
        let found = self.tokens(parts);
        if found.is_empty() {
            return Ok(None);
        }
        // Every token the request carries must be valid, as Envoy requires: one good
        // token must not carry a forged one past the proxy to the backend.
        let mut distinct: Vec<&str> = found.iter().map(|(_, _, t)| t.as_str()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut first: Option<Authenticated> = None;
        for token in distinct {
            // Only to find the rules of its issuer; it is verified below. Only `iss` is
            // read: the claims are parsed into a value once, when verified.
            let issuer = jsonwebtoken::dangerous::insecure_decode_claims::<IssuerOnly>(token)
                .ok()
                .and_then(|c| c.iss)
                .ok_or(Refusal::VerificationFails)?;
            // The rules of that issuer that look where the token was found.
            let candidates: Vec<(usize, &Location)> = found
                .iter()
                .filter(|(i, _, t)| t == token && self.rules[*i].rule.issuer == issuer)
                .map(|(i, l, _)| (*i, l))
                .collect();
            if candidates.is_empty() {
                return Err(Refusal::UnknownIssuer);
            }
            let mut refusal = Refusal::VerificationFails;
            let mut verified = None;
            for (i, location) in candidates {
                match self.verify(i, token) {
                    Ok(claims) => {
                        verified = Some((i, location.clone(), claims));
                        break;
                    }
                    Err(r) => refusal = r,
                }
            }
            let Some((i, location, claims)) = verified else {
                return Err(refusal);
            };
            let rule = &self.rules[i].rule;
            self.output(rule, &location, token, &claims, parts);
            if first.is_none() {
                let sub = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("");
                first = Some(Authenticated {
                    principal: format!("{}/{sub}", rule.issuer),
                    claims,
                });
            }
        }
        Ok(first)
    }

    /// What a valid token leaves in the request: its header removed unless forwarded, its
    /// payload and claims in headers.
    fn output(
        &self,
        rule: &JwtRule,
        location: &Location,
        token: &str,
        claims: &serde_json::Value,
        parts: &mut http::request::Parts,
    ) {
        if let (false, Location::Header(name)) = (rule.forward_original_token, location) {
            parts.headers.remove(name.as_str());
        }
        if let Some(header) = &rule.output_payload_to_header
            && let Some(payload) = token.split('.').nth(1)
            && let Ok(v) = HeaderValue::from_str(payload)
            && let Ok(name) = http::HeaderName::from_bytes(header.as_bytes())
        {
            parts.headers.insert(name, v);
        }
        for (header, claim) in &rule.output_claim_to_headers {
            let value = match claims.get(claim) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    v.to_string()
                }
                _ => continue,
            };
            if let (Ok(name), Ok(v)) = (
                http::HeaderName::from_bytes(header.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                parts.headers.insert(name, v);
            }
        }
    }
}

/// A token's issuer, read before it is verified to pick the rules that verify it.
#[derive(serde::Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}
