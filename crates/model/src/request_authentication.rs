//! RequestAuthentication for a workload: the `jwtRules` of every RequestAuthentication
//! that applies to it (the root namespace's without a selector, its namespace's without a
//! selector, and those in either whose selector matches its labels), with Istio's
//! defaults: a token in `Authorization: Bearer ...` or the `access_token` parameter when a
//! rule names no location, keys fetched from `jwksUri` when not inline, and the token
//! removed before the request goes upstream.

use std::collections::BTreeMap;

use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::Object;
use meshwork_resources::jwt::{Jwks, JwtRule};

/// How often keys from a `jwksUri` are fetched again (Envoy's default cache duration is 5
/// minutes; Istio's istiod refreshes every 20).
const REFRESH_SECONDS: u64 = 300;

/// The rules that apply to a workload in `namespace` with `labels`.
pub fn for_workload(
    objects: &[Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Vec<JwtRule> {
    let mut out = Vec::new();
    for o in objects {
        let Object::RequestAuthentication(r) = o else {
            continue;
        };
        let scope = crate::authorization::Scope {
            name: r.metadata.name.as_deref().unwrap_or_default(),
            attachment: crate::attachment::Attachment::new(
                r.metadata.namespace.as_deref(),
                r.spec.selector.as_ref(),
                r.spec.target_ref.as_ref(),
                &r.spec.target_refs,
            ),
        };
        let Some(name) = scope.applies(mesh, namespace, labels, "RequestAuthentication", warnings)
        else {
            continue;
        };
        for rule in &r.spec.jwt_rules {
            let Some(issuer) = rule.issuer.clone().filter(|i| !i.is_empty()) else {
                warnings.push(format!(
                    "RequestAuthentication {name}: a jwtRule has no issuer; it is ignored"
                ));
                continue;
            };
            let jwks = match (&rule.jwks, &rule.jwks_uri) {
                (Some(inline), _) => Jwks::Inline(inline.clone()),
                (None, Some(uri)) => Jwks::Remote {
                    uri: uri.clone(),
                    timeout_ms: rule
                        .timeout
                        .as_deref()
                        .and_then(|t| meshwork_api::duration::parse_duration(t).ok())
                        .map_or(5_000, |d| d.as_millis() as u64),
                    refresh_seconds: REFRESH_SECONDS,
                },
                (None, None) => {
                    warnings.push(format!(
                        "RequestAuthentication {name}: the jwtRule of {issuer} has neither jwks nor jwksUri; it is ignored"
                    ));
                    continue;
                }
            };
            let no_location = rule.from_headers.is_empty()
                && rule.from_params.is_empty()
                && rule.from_cookies.is_empty();
            let from_headers = if no_location {
                vec![("authorization".to_string(), "Bearer ".to_string())]
            } else {
                rule.from_headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            h.prefix.clone().unwrap_or_default(),
                        )
                    })
                    .collect()
            };
            let from_params = if no_location {
                vec!["access_token".to_string()]
            } else {
                rule.from_params.clone()
            };
            out.push(JwtRule {
                policy: name.clone(),
                issuer,
                audiences: rule.audiences.clone(),
                jwks,
                from_headers,
                from_params,
                from_cookies: rule.from_cookies.clone(),
                output_payload_to_header: rule
                    .output_payload_to_header
                    .clone()
                    .map(|h| h.to_ascii_lowercase()),
                output_claim_to_headers: rule
                    .output_claim_to_headers
                    .iter()
                    .map(|c| (c.header.to_ascii_lowercase(), c.claim.clone()))
                    .collect(),
                forward_original_token: rule.forward_original_token == Some(true),
            });
        }
    }
    out.sort_by(|a, b| (&a.policy, &a.issuer).cmp(&(&b.policy, &b.issuer)));
    out
}
