//! Authorization in the policy phase, with Istio's semantics: a request matching any DENY
//! policy is denied; otherwise, when ALLOW policies apply, it must match one of them; with
//! none, it is allowed. A denied request gets 403 `RBAC: access denied`, flag `RBAC`, and
//! `rbac_access_denied_matched_policy[ns/name]` (`[none]` when no ALLOW policy matched).
//!
//! TCP connections are authorized too, when routed ([`evaluate_tcp`]). Fields only HTTP
//! has (hosts, methods, paths, request principals, request headers and JWT attributes)
//! are treated as Istio treats them there: a rule that uses one can never match for
//! ALLOW, and for DENY it matches on its other fields.

use std::net::IpAddr;

use http::header::HeaderMap;
use meshwork_resources::authorization::{
    AuthorizationPolicy, AuthzAction, AuthzCondition, AuthzOperation, AuthzRule, AuthzSource,
    ConditionKey, Field, MetadataCondition, MetadataMatch, Pattern,
};
use prost_types::value::Kind;

/// What the filters that ran before authorization left for it, by filter name (Envoy's
/// dynamic metadata): the external authorizer's `dynamic_metadata`.
#[derive(Debug, Default, Clone)]
pub struct FilterMetadata(Vec<(&'static str, prost_types::Struct)>);

impl FilterMetadata {
    /// Sets what `filter` left.
    pub fn set(&mut self, filter: &'static str, metadata: prost_types::Struct) {
        self.0.retain(|(f, _)| *f != filter);
        self.0.push((filter, metadata));
    }

    /// The value under `key` of what `filter` left.
    pub fn get(&self, filter: &str, key: &str) -> Option<&Kind> {
        self.0
            .iter()
            .find(|(f, _)| *f == filter)
            .and_then(|(_, m)| m.fields.get(key))
            .and_then(|v| v.kind.as_ref())
    }
}

/// What a request is authorized on (for a TCP connection: no method, path or headers).
pub struct Attributes<'a> {
    /// The peer's principal: its SPIFFE id without `spiffe://`, else its certificate subject.
    pub principal: Option<&'a str>,
    /// The peer's address.
    pub source_ip: IpAddr,
    /// The original client's address (the peer's, at a gateway with no trusted proxies).
    pub remote_ip: IpAddr,
    /// The address the connection arrived on.
    pub destination_ip: Option<IpAddr>,
    /// The port the connection arrived on.
    pub port: u16,
    /// The request's host, lower case, without port.
    pub host: &'a str,
    /// The request's authority as sent.
    pub authority: &'a str,
    /// The method.
    pub method: &'a str,
    /// The path without query.
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The connection's SNI.
    pub sni: Option<&'a str>,
    /// What the request's verified JWT says, when it has one.
    pub request: Option<&'a crate::request::jwt::Authenticated>,
    /// What earlier filters left (none on a TCP connection).
    pub metadata: Option<&'a FilterMetadata>,
}

impl<'a> Attributes<'a> {
    /// The attributes of a connection: its peer's principal and addresses, its port and
    /// SNI; no host, method or path yet (a TCP connection has none).
    pub fn of_connection(
        conn: &'a crate::connection::Connection,
        headers: &'a HeaderMap,
    ) -> Attributes<'a> {
        Attributes {
            principal: conn
                .peer_identity
                .as_deref()
                .map(|id| id.strip_prefix("spiffe://").unwrap_or(id)),
            source_ip: conn.peer.ip(),
            remote_ip: conn.peer.ip(),
            destination_ip: conn.local.map(|l| l.ip()),
            port: conn.local.map_or(conn.bind.port(), |l| l.port()),
            host: "",
            authority: "",
            method: "",
            path: "",
            headers,
            sni: conn.sni.as_deref(),
            request: None,
            metadata: None,
        }
    }
}

/// The outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Allow,
    /// Denied, by this policy (`None`: no ALLOW policy matched).
    Deny(Option<String>),
}

/// The namespace of a principal `trust-domain/ns/NS/sa/SA`.
fn namespace_of(principal: &str) -> Option<&str> {
    let mut parts = principal.split('/');
    while let Some(p) = parts.next() {
        if p == "ns" {
            return parts.next();
        }
    }
    None
}

fn any(patterns: &[Pattern], value: Option<&str>, ignore_case: bool) -> bool {
    value.is_some_and(|v| patterns.iter().any(|p| p.matches(v, ignore_case)))
}

/// A field holds when the value matches one of `values` (if any) and none of `not_values`.
fn holds(f: &Field<Pattern>, value: Option<&str>, ignore_case: bool) -> bool {
    (f.values.is_empty() || any(&f.values, value, ignore_case))
        && !any(&f.not_values, value, ignore_case)
}

fn in_block(block: &str, ip: IpAddr) -> bool {
    match block.parse::<ipnet::IpNet>() {
        Ok(net) => net.contains(&ip),
        Err(_) => block.parse::<IpAddr>() == Ok(ip),
    }
}

fn ip_holds(f: &Field<String>, ip: IpAddr) -> bool {
    (f.values.is_empty() || f.values.iter().any(|b| in_block(b, ip)))
        && !f.not_values.iter().any(|b| in_block(b, ip))
}

fn source_matches(s: &AuthzSource, a: &Attributes<'_>) -> bool {
    holds(&s.principals, a.principal, false)
        && holds(
            &s.request_principals,
            a.request.map(|r| r.principal.as_str()),
            false,
        )
        && holds(&s.namespaces, a.principal.and_then(namespace_of), false)
        && holds(&s.service_accounts, a.principal, false)
        && holds(&s.trust_domains, a.principal, false)
        && ip_holds(&s.ip_blocks, a.source_ip)
        && ip_holds(&s.remote_ip_blocks, a.remote_ip)
}

fn operation_matches(o: &AuthzOperation, a: &Attributes<'_>) -> bool {
    let host_ok = |f: &Field<Pattern>| {
        // Istio matches hosts with and without the port.
        let one = |v: &str| f.values.iter().any(|p| p.matches(v, true));
        let none = |v: &str| !f.not_values.iter().any(|p| p.matches(v, true));
        (f.values.is_empty() || one(a.host) || one(a.authority))
            && none(a.host)
            && none(a.authority)
    };
    host_ok(&o.hosts)
        && (o.ports.values.is_empty() || o.ports.values.contains(&a.port))
        && !o.ports.not_values.contains(&a.port)
        && holds(&o.methods, Some(a.method), false)
        && holds(&o.paths, Some(a.path), false)
}

fn condition_holds(c: &AuthzCondition, a: &Attributes<'_>) -> bool {
    let header;
    let text;
    let value: Option<&str> = match &c.key {
        ConditionKey::RequestHeader(name) => {
            header = a
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(",");
            (!header.is_empty() || a.headers.contains_key(name.as_str())).then_some(header.as_str())
        }
        ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => {
            let ip = match &c.key {
                ConditionKey::SourceIp => Some(a.source_ip),
                ConditionKey::RemoteIp => Some(a.remote_ip),
                _ => a.destination_ip,
            };
            let Some(ip) = ip else { return false };
            let block = |p: &Pattern| match p {
                Pattern::Exact(b) => in_block(b, ip),
                Pattern::Any => true,
                _ => false,
            };
            return (c.values.is_empty() || c.values.iter().any(block))
                && !c.not_values.iter().any(block);
        }
        ConditionKey::SourceNamespace => a.principal.and_then(namespace_of),
        ConditionKey::SourcePrincipal => a.principal,
        ConditionKey::SourceTrustDomain => a.principal.and_then(|p| p.split('/').next()),
        ConditionKey::DestinationPort => {
            text = a.port.to_string();
            Some(text.as_str())
        }
        ConditionKey::ConnectionSni => a.sni,
        ConditionKey::FilterMetadata(m) => return metadata_holds(m, a.metadata),
        ConditionKey::Unknown(_) => return false,
        ConditionKey::RequestAuth(key) => {
            let values = request_auth(key, a.request);
            return (c.values.is_empty()
                || values
                    .iter()
                    .any(|v| any(&c.values, Some(v.as_str()), false)))
                && !values
                    .iter()
                    .any(|v| any(&c.not_values, Some(v.as_str()), false));
        }
    };
    (c.values.is_empty() || any(&c.values, value, false)) && !any(&c.not_values, value, false)
}

/// Whether an `experimental.envoy.filters.*` condition holds: as Envoy's metadata
/// matcher, a string match needs a string, a list match a list with a matching string,
/// and nothing matches a value that is not there.
fn metadata_holds(m: &MetadataCondition, metadata: Option<&FilterMetadata>) -> bool {
    let value = metadata.and_then(|md| md.get(&m.filter, &m.key));
    let string = |p: &Pattern, v: &prost_types::Value| matches!(&v.kind, Some(Kind::StringValue(s)) if p.matches(s, false));
    let one = |x: &MetadataMatch| match (x, value) {
        (MetadataMatch::String(p), Some(Kind::StringValue(s))) => p.matches(s, false),
        (MetadataMatch::ListOneOf(p), Some(Kind::ListValue(l))) => {
            l.values.iter().any(|v| string(p, v))
        }
        _ => false,
    };
    (m.values.is_empty() || m.values.iter().any(one)) && !m.not_values.iter().any(one)
}

/// The values of a `request.auth.*` key for the request's verified JWT: `principal`
/// (`iss/sub`), `audiences` (each `aud`), `presenter` (`azp`), and `claims[name]`, nested
/// as `claims[a][b]`, each value of a list claim on its own.
fn request_auth(key: &str, request: Option<&crate::request::jwt::Authenticated>) -> Vec<String> {
    let Some(r) = request else {
        return Vec::new();
    };
    let each = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|i| match i {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                        Some(i.to_string())
                    }
                    _ => None,
                })
                .collect(),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => vec![v.to_string()],
            _ => Vec::new(),
        }
    };
    match key {
        "request.auth.principal" => vec![r.principal.clone()],
        "request.auth.audiences" => r.claims.get("aud").map(each).unwrap_or_default(),
        "request.auth.presenter" => r.claims.get("azp").map(each).unwrap_or_default(),
        _ => {
            let Some(path) = key.strip_prefix("request.auth.claims") else {
                return Vec::new();
            };
            let mut value = &r.claims;
            let mut rest = path;
            while let Some(inner) = rest.strip_prefix('[') {
                let Some((name, after)) = inner.split_once(']') else {
                    return Vec::new();
                };
                match value.get(name) {
                    Some(v) => value = v,
                    None => return Vec::new(),
                }
                rest = after;
            }
            if !rest.is_empty() || path.is_empty() {
                return Vec::new();
            }
            each(value)
        }
    }
}

fn rule_matches(r: &AuthzRule, a: &Attributes<'_>) -> bool {
    (r.from.is_empty() || r.from.iter().any(|s| source_matches(s, a)))
        && (r.to.is_empty() || r.to.iter().any(|o| operation_matches(o, a)))
        && r.when.iter().all(|c| condition_holds(c, a))
}

fn policy_matches(p: &AuthorizationPolicy, a: &Attributes<'_>) -> bool {
    p.rules.iter().any(|r| rule_matches(r, a))
}

/// Whether a rule names something only HTTP has.
fn uses_http_fields(r: &AuthzRule) -> bool {
    r.from.iter().any(|s| !s.request_principals.is_empty())
        || r.to
            .iter()
            .any(|o| !o.hosts.is_empty() || !o.methods.is_empty() || !o.paths.is_empty())
        || r.when.iter().any(|c| {
            matches!(
                c.key,
                ConditionKey::RequestHeader(_) | ConditionKey::RequestAuth(_)
            )
        })
}

/// The rule with its HTTP-only parts removed (for DENY on TCP).
fn without_http_fields(r: &AuthzRule) -> AuthzRule {
    let mut r = r.clone();
    for s in &mut r.from {
        s.request_principals = Field::default();
    }
    for o in &mut r.to {
        o.hosts = Field::default();
        o.methods = Field::default();
        o.paths = Field::default();
    }
    r.when.retain(|c| {
        !matches!(
            c.key,
            ConditionKey::RequestHeader(_) | ConditionKey::RequestAuth(_)
        )
    });
    r
}

/// Evaluates the policies for a TCP connection (`a` has no method, path or headers).
pub fn evaluate_tcp(policies: &[AuthorizationPolicy], a: &Attributes<'_>) -> Verdict {
    // The external authorizer is not asked about TCP: what a CUSTOM policy would have it
    // check is closed, so that nothing passes unchecked.
    let deny = policies.iter().find(|p| {
        matches!(p.action, AuthzAction::Deny | AuthzAction::Custom)
            && p.rules
                .iter()
                .any(|r| rule_matches(&without_http_fields(r), a))
    });
    if let Some(p) = deny {
        return Verdict::Deny(Some(p.name.clone()));
    }
    let mut allows = policies
        .iter()
        .filter(|p| p.action == AuthzAction::Allow)
        .peekable();
    if allows.peek().is_none() {
        return Verdict::Allow;
    }
    let allowed = allows.any(|p| {
        p.rules
            .iter()
            .any(|r| !uses_http_fields(r) && rule_matches(r, a))
    });
    if allowed {
        Verdict::Allow
    } else {
        Verdict::Deny(None)
    }
}

/// Whether a CUSTOM policy matches the request: then the external authorizer is asked.
pub fn custom_matches(policies: &[AuthorizationPolicy], a: &Attributes<'_>) -> bool {
    policies
        .iter()
        .any(|p| p.action == AuthzAction::Custom && policy_matches(p, a))
}

/// The first AUDIT policy the request matches: its entry in the access log is marked
/// with it.
pub fn audit(policies: &[AuthorizationPolicy], a: &Attributes<'_>) -> Option<String> {
    policies
        .iter()
        .find(|p| p.action == AuthzAction::Audit && policy_matches(p, a))
        .map(|p| p.name.clone())
}

/// Evaluates the policies for a request.
pub fn evaluate(policies: &[AuthorizationPolicy], a: &Attributes<'_>) -> Verdict {
    if let Some(p) = policies
        .iter()
        .find(|p| p.action == AuthzAction::Deny && policy_matches(p, a))
    {
        return Verdict::Deny(Some(p.name.clone()));
    }
    let mut allows = policies
        .iter()
        .filter(|p| p.action == AuthzAction::Allow)
        .peekable();
    if allows.peek().is_none() {
        return Verdict::Allow;
    }
    if allows.any(|p| policy_matches(p, a)) {
        Verdict::Allow
    } else {
        Verdict::Deny(None)
    }
}

#[cfg(test)]
mod tests;
