//! End-user authentication as the proxy runs it: Istio's RequestAuthentication `jwtRules`,
//! each an issuer with its keys, where its tokens are looked for, and what a valid token
//! adds to the request.

use serde::{Deserialize, Serialize};

/// One `jwtRules` entry of a RequestAuthentication that applies to the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtRule {
    /// `ns/name` of its RequestAuthentication.
    pub policy: String,
    /// `iss` a token must carry.
    pub issuer: String,
    /// `aud` values a token must carry one of; none: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where its keys are.
    pub jwks: Jwks,
    /// Headers a token is read from, each with the prefix its value starts with
    /// (`Authorization`, `Bearer `).
    pub from_headers: Vec<(String, String)>,
    /// Query parameters a token is read from (`access_token`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies a token is read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// The header that gets the verified payload, base64url (`outputPayloadToHeader`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Headers that get a claim's value: header, then claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<(String, String)>,
    /// The token stays in the request sent upstream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
}

/// A rule's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jwks {
    /// A JWKS document (`jwks`).
    Inline(String),
    /// Fetched from `jwksUri` by the proxy, kept, and fetched again every
    /// `refresh_seconds`; a failed fetch keeps the keys it had.
    Remote {
        /// `http://` or `https://`.
        uri: String,
        /// How long one fetch may take, in milliseconds (`timeout`).
        timeout_ms: u64,
        /// How often the keys are fetched again.
        refresh_seconds: u64,
    },
}
