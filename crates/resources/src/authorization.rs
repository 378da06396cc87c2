//! Authorization policies as the proxy runs them: Istio's AuthorizationPolicy with its
//! value patterns compiled (`exact`, `prefix*`, `*suffix`, `*`) and its condition keys
//! named by an enum.

use serde::{Deserialize, Serialize};

/// One AuthorizationPolicy that applies to the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationPolicy {
    /// `ns/name`, for logs and `rbac_access_denied_matched_policy[...]`.
    pub name: String,
    /// What a matching request gets.
    pub action: AuthzAction,
    /// The policy matches a request when any rule does; no rule matches nothing.
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
}

/// The action of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    /// Requests must match an ALLOW policy when there is any.
    Allow,
    /// Matching requests are denied.
    Deny,
    /// Matching requests are marked in the access log.
    Audit,
    /// Matching requests are checked by the external authorizer ([`ExtAuthz`]) first.
    Custom,
}

/// The external authorizer of CUSTOM policies (the mesh config's `envoyExtAuthzHttp` or
/// `envoyExtAuthzGrpc` provider they name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtAuthz {
    /// The provider's name.
    pub provider: String,
    /// `service:port`.
    pub address: String,
    /// Envoy's gRPC `Authorization/Check`; else an HTTP request.
    pub grpc: bool,
    /// Prepended to the request's path (HTTP).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    /// How long a check may take, in milliseconds.
    pub timeout_ms: u64,
    /// When the authorizer cannot be asked, the request goes on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
    /// The status when it cannot be asked and `fail_open` is off (403).
    pub status_on_error: u16,
    /// Request headers sent in the check besides Host, Method, Path, Content-Length and
    /// Authorization (HTTP), lower case patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers: Vec<Pattern>,
    /// Headers added to every check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_additional_headers: Vec<(String, String)>,
    /// Headers of an allowing answer that go upstream with the request (HTTP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<Pattern>,
    /// Headers of a denying answer that go to the client (HTTP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<Pattern>,
}

/// A rule: any `from` (none: any source), any `to` (none: any operation), and every
/// `when`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzRule {
    /// Sources, any of which matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<AuthzSource>,
    /// Operations, any of which matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<AuthzOperation>,
    /// Conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<AuthzCondition>,
}

/// Values a request attribute must (`values`) and must not (`not_values`) match; both
/// empty means the attribute is not constrained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Field<T> {
    /// The attribute must match one of these (when any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<T>,
    /// The attribute must match none of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<T>,
}

impl<T> Default for Field<T> {
    fn default() -> Self {
        Field {
            values: Vec::new(),
            not_values: Vec::new(),
        }
    }
}

impl<T> Field<T> {
    /// Whether nothing is constrained.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.not_values.is_empty()
    }
}

/// Who sent the request; every constrained field must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzSource {
    /// Peer principals (`cluster.local/ns/default/sa/sleep`, the SPIFFE id without
    /// `spiffe://`).
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub principals: Field<Pattern>,
    /// Request principals (`iss/sub` of a JWT).
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub request_principals: Field<Pattern>,
    /// Namespaces of the peer principal.
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub namespaces: Field<Pattern>,
    /// Service accounts (`ns/sa`) of the peer principal, as patterns of the principal.
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub service_accounts: Field<Pattern>,
    /// Trust domains of the peer principal, as patterns of the principal.
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub trust_domains: Field<Pattern>,
    /// The peer's address, as CIDRs or addresses.
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub ip_blocks: Field<String>,
    /// The original client's address (X-Forwarded-For at a gateway), as CIDRs.
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub remote_ip_blocks: Field<String>,
}

/// What the request asks for; every constrained field must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzOperation {
    /// Hosts (case-insensitive).
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub hosts: Field<Pattern>,
    /// Ports the connection arrived on.
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub ports: Field<u16>,
    /// Methods.
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub methods: Field<Pattern>,
    /// Paths (without query).
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub paths: Field<Pattern>,
}

/// A `when` condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzCondition {
    /// The attribute.
    pub key: ConditionKey,
    /// Values, any of which matches (none: not constrained).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Pattern>,
    /// Values none of which may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<Pattern>,
}

/// The attributes a condition can name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionKey {
    /// `request.headers[name]` (name lower case).
    RequestHeader(String),
    /// `source.ip`.
    SourceIp,
    /// `remote.ip`.
    RemoteIp,
    /// `source.namespace`.
    SourceNamespace,
    /// `source.principal`.
    SourcePrincipal,
    /// `source.trustDomain`: the first part of the peer principal.
    SourceTrustDomain,
    /// `destination.ip`.
    DestinationIp,
    /// `destination.port`.
    DestinationPort,
    /// `connection.sni`.
    ConnectionSni,
    /// `request.auth.principal` and the other JWT attributes, which need
    /// RequestAuthentication: without it they never match.
    RequestAuth(String),
    /// `experimental.envoy.filters.NAME[key]`: a value a filter that ran before left in
    /// the request's metadata. The condition's values are in the key, since each is a
    /// string or a list match.
    FilterMetadata(MetadataCondition),
    /// A key meshwork does not know: it never holds.
    Unknown(String),
}

/// The name the external authorizer's `dynamic_metadata` is kept under, for the
/// conditions `experimental.envoy.filters.http.ext_authz[key]`: the only filter whose
/// metadata a request carries when authorization runs.
pub const EXT_AUTHZ_METADATA: &str = "envoy.filters.http.ext_authz";

/// An `experimental.envoy.filters.*` condition: the value under `key` in the metadata
/// that the filter `filter` (`envoy.filters.http.ext_authz`) left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataCondition {
    /// The filter's name.
    pub filter: String,
    /// The key in its metadata.
    pub key: String,
    /// Values, any of which matches (none: not constrained).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<MetadataMatch>,
    /// Values none of which may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<MetadataMatch>,
}

/// How one value of an `experimental.envoy.filters.*` condition matches, as Istio
/// writes it: `v` matches a string, `[v]` a list that has a matching string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataMatch {
    /// A string value.
    String(Pattern),
    /// A list value with one matching string.
    ListOneOf(Pattern),
}

impl MetadataMatch {
    /// Istio's form of a value: `[v]` is a list match of `v`, else a string match.
    pub fn parse(text: &str) -> MetadataMatch {
        match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Some(inner) => MetadataMatch::ListOneOf(Pattern::parse_value(inner)),
            None => MetadataMatch::String(Pattern::parse_value(text)),
        }
    }
}

/// A value pattern: exact, `prefix*`, `*suffix`, or `*` (any non-empty value).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Present.
    Any,
    /// A path template: `{*}` is one segment, `{**}` (last) any number of them
    /// (`/api/{*}/items/{**}`).
    PathTemplate(String),
}

impl Pattern {
    /// Compiles Istio's `*` forms, and path templates.
    pub fn parse(text: &str) -> Pattern {
        if text.contains("{*}") || text.contains("{**}") {
            Pattern::PathTemplate(text.to_string())
        } else {
            Pattern::parse_value(text)
        }
    }

    /// Compiles Istio's `*` forms of a value that is not a path.
    pub fn parse_value(text: &str) -> Pattern {
        if text == "*" {
            Pattern::Any
        } else if let Some(p) = text.strip_suffix('*') {
            Pattern::Prefix(p.to_string())
        } else if let Some(s) = text.strip_prefix('*') {
            Pattern::Suffix(s.to_string())
        } else {
            Pattern::Exact(text.to_string())
        }
    }

    /// Whether `value` matches (`ignore_case` for hosts).
    pub fn matches(&self, value: &str, ignore_case: bool) -> bool {
        let eq = |a: &str, b: &str| {
            if ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match self {
            Pattern::Any => !value.is_empty(),
            Pattern::Exact(s) => eq(s, value),
            Pattern::Prefix(p) => value.get(..p.len()).is_some_and(|v| eq(v, p)),
            Pattern::Suffix(s) => value
                .len()
                .checked_sub(s.len())
                .and_then(|i| value.get(i..))
                .is_some_and(|v| eq(v, s)),
            Pattern::PathTemplate(t) => template_matches(t, value),
        }
    }
}

/// Whether `path` matches the template `t`, segment by segment.
fn template_matches(t: &str, path: &str) -> bool {
    let template: Vec<&str> = t.split('/').collect();
    let segments: Vec<&str> = path.split('/').collect();
    for (i, part) in template.iter().enumerate() {
        match *part {
            "{**}" => return i == template.len() - 1 && segments.len() >= i,
            "{*}" => match segments.get(i) {
                Some(s) if !s.is_empty() => {}
                _ => return false,
            },
            literal => {
                if segments.get(i) != Some(&literal) {
                    return false;
                }
            }
        }
    }
    template.len() == segments.len()
}
