//! Security policies: PeerAuthentication (port-level mTLS), AuthorizationPolicy (actions,
//! sources, operations and conditions) and RequestAuthentication (JWT rules).

use std::net::IpAddr;
use std::sync::OnceLock;

use regex::Regex;

use crate::diagnostic::{Findings, Severity};
use crate::generated::security::{
    AuthorizationAction, AuthorizationPolicySpec, Condition, JwtRule, Operation, Rule, Source,
};
use crate::path::FieldPath;
use crate::resource::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};

use super::common::{
    check_duration, check_policy_targets, check_workload_selector, validate_header_name,
};

/// Validates a PeerAuthentication: port-level mTLS needs a workload selector and real ports.
pub fn validate_peer_authentication(pa: &PeerAuthentication, spec: &FieldPath, out: &mut Findings) {
    let s = &pa.spec;
    let no_labels = s
        .selector
        .as_ref()
        .is_none_or(|sel| sel.match_labels.is_empty());
    let ports = spec.field("portLevelMtls");
    if no_labels && !s.port_level_mtls.is_empty() {
        out.error(
            &ports,
            "mesh/namespace peer authentication cannot have port level mTLS",
        );
    }
    for port in s.port_level_mtls.keys() {
        if !port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) {
            out.error(&ports.key(port), "port must be in range 1..65535");
        }
    }
    check_workload_selector(s.selector.as_ref(), &spec.field("selector"), out);
}

/// Validates an AuthorizationPolicy. As in Istio, errors are prefixed with
/// `invalid policy <name>.<namespace>:`; warnings are not.
pub fn validate_authorization_policy(
    ap: &AuthorizationPolicy,
    spec: &FieldPath,
    out: &mut Findings,
) {
    let mut local = Findings::default();
    check_authorization_policy(&ap.spec, spec, &mut local);
    let prefix = format!(
        "invalid policy {}.{}:",
        ap.metadata.name.as_deref().unwrap_or_default(),
        ap.metadata.namespace.as_deref().unwrap_or_default()
    );
    for f in local.into_vec() {
        match f.severity {
            Severity::Error => out.error(&f.path, format!("{prefix} {}", f.message)),
            Severity::Warning => out.warn(&f.path, f.message),
        }
    }
}

/// The rules of an AuthorizationPolicy, with unprefixed messages.
fn check_authorization_policy(s: &AuthorizationPolicySpec, spec: &FieldPath, out: &mut Findings) {
    check_policy_targets(
        s.selector.as_ref(),
        s.target_ref.as_ref(),
        &s.target_refs,
        spec,
        out,
    );
    let action = s.action.unwrap_or_default();
    if action == AuthorizationAction::Custom {
        check_custom(s, spec, out);
    }
    if s.provider.is_some() && action != AuthorizationAction::Custom {
        out.error(
            &spec.field("provider"),
            format!(
                "`provider` must not be with non CUSTOM action, found {}",
                action.as_str()
            ),
        );
    }
    if action == AuthorizationAction::Deny && s.rules.is_empty() {
        out.error(
            &spec.field("rules"),
            "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
        );
    }
    for (i, rule) in s.rules.iter().enumerate() {
        check_rule(rule, i, action, &spec.field("rules").index(i), out);
    }
}

/// CUSTOM action: rules and a provider, and none of the attributes the external
/// authorizer cannot see.
fn check_custom(s: &AuthorizationPolicySpec, spec: &FieldPath, out: &mut Findings) {
    if s.rules.is_empty() {
        out.error(
            &spec.field("rules"),
            "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
        );
    } else if s
        .provider
        .as_ref()
        .and_then(|p| p.name.as_deref())
        .is_none_or(str::is_empty)
    {
        out.error(
            &spec.field("provider").field("name"),
            "`provider.name` must not be empty",
        );
    }
    for (i, rule) in s.rules.iter().enumerate() {
        let rp = spec.field("rules").index(i);
        for (j, from) in rule.from.iter().enumerate() {
            let Some(src) = &from.source else { continue };
            let sp = rp.field("from").index(j).field("source");
            for (field, go_name, list) in custom_unsupported(src) {
                if !list.is_empty() {
                    out.error(
                        &sp.field(field),
                        format!("From.{go_name} is currently not supported with CUSTOM action"),
                    );
                }
            }
        }
        for (k, c) in rule.when.iter().enumerate() {
            let key = c.key.as_str();
            let identity = matches!(
                key,
                "source.namespace" | "source.serviceAccount" | "source.principal"
            );
            if identity || key.starts_with("request.auth.") {
                out.error(
                    &rp.field("when").index(k).field("key"),
                    format!("{key} is currently not supported with CUSTOM action"),
                );
            }
        }
    }
}

/// A list field of a source or an operation: its YAML name, its Go name (as Istio's
/// messages spell it) and its values.
type NamedList<'a> = (&'static str, &'static str, &'a [String]);

/// The source fields a CUSTOM policy may not use.
fn custom_unsupported(src: &Source) -> [NamedList<'_>; 8] {
    [
        ("namespaces", "Namespaces", &src.namespaces),
        ("notNamespaces", "NotNamespaces", &src.not_namespaces),
        ("serviceAccounts", "ServiceAccounts", &src.service_accounts),
        (
            "notServiceAccounts",
            "NotServiceAccounts",
            &src.not_service_accounts,
        ),
        ("principals", "Principals", &src.principals),
        ("notPrincipals", "NotPrincipals", &src.not_principals),
        (
            "requestPrincipals",
            "RequestPrincipals",
            &src.request_principals,
        ),
        (
            "notRequestPrincipals",
            "NotRequestPrincipals",
            &src.not_request_principals,
        ),
    ]
}

/// The source fields where an empty value is an error, in Istio's order.
fn source_value_lists(src: &Source) -> [NamedList<'_>; 12] {
    [
        ("principals", "Principals", &src.principals),
        (
            "requestPrincipals",
            "RequestPrincipals",
            &src.request_principals,
        ),
        ("namespaces", "Namespaces", &src.namespaces),
        ("serviceAccounts", "ServiceAccounts", &src.service_accounts),
        ("ipBlocks", "IpBlocks", &src.ip_blocks),
        ("remoteIpBlocks", "RemoteIpBlocks", &src.remote_ip_blocks),
        ("notPrincipals", "NotPrincipals", &src.not_principals),
        (
            "notRequestPrincipals",
            "NotRequestPrincipals",
            &src.not_request_principals,
        ),
        ("notNamespaces", "NotNamespaces", &src.not_namespaces),
        (
            "notServiceAccounts",
            "NotServiceAccounts",
            &src.not_service_accounts,
        ),
        ("notIpBlocks", "NotIpBlocks", &src.not_ip_blocks),
        (
            "notRemoteIpBlocks",
            "NotRemoteIpBlocks",
            &src.not_remote_ip_blocks,
        ),
    ]
}

/// The operation fields, in Istio's order.
fn operation_value_lists(op: &Operation) -> [NamedList<'_>; 8] {
    [
        ("ports", "Ports", &op.ports),
        ("methods", "Methods", &op.methods),
        ("paths", "Paths", &op.paths),
        ("hosts", "Hosts", &op.hosts),
        ("notPorts", "NotPorts", &op.not_ports),
        ("notMethods", "NotMethods", &op.not_methods),
        ("notPaths", "NotPaths", &op.not_paths),
        ("notHosts", "NotHosts", &op.not_hosts),
    ]
}

const DENY_HTTP_ONLY: &str = "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port";

/// One rule: sources, operations and conditions, and the DENY-on-TCP warning.
fn check_rule(
    rule: &Rule,
    i: usize,
    action: AuthorizationAction,
    rp: &FieldPath,
    out: &mut Findings,
) {
    let (mut from_exists, mut tcp_in_from) = (false, false);
    for (j, from) in rule.from.iter().enumerate() {
        let sp = rp.field("from").index(j).field("source");
        let Some(src) = &from.source else {
            out.error(
                &sp,
                format!("`from.source` must not be nil, found at rule {i}"),
            );
            continue;
        };
        from_exists = true;
        tcp_in_from |= check_source(src, i, &sp, out);
    }
    let (mut to_exists, mut tcp_in_to) = (false, false);
    for (j, to) in rule.to.iter().enumerate() {
        let op_path = rp.field("to").index(j).field("operation");
        let Some(op) = &to.operation else {
            out.error(
                &op_path,
                format!("`to.operation` must not be nil, found at rule {i}"),
            );
            continue;
        };
        to_exists = true;
        tcp_in_to |= check_operation(op, i, &op_path, out);
    }
    for (k, c) in rule.when.iter().enumerate() {
        check_condition(c, &rp.field("when").index(k), out);
    }
    let http_only = (from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to);
    if action == AuthorizationAction::Deny && http_only {
        out.warn(rp, DENY_HTTP_ONLY);
    }
}

/// A source. Returns true when it uses attributes TCP traffic has (identities, IPs).
fn check_source(src: &Source, i: usize, path: &FieldPath, out: &mut Findings) -> bool {
    let trust = [&src.trust_domains, &src.not_trust_domains];
    let empty = source_value_lists(src).iter().all(|(_, _, l)| l.is_empty())
        && trust.iter().all(|l| l.is_empty());
    if empty {
        out.error(
            path,
            format!("`from.source` must not be empty, found at rule {i}"),
        );
    }
    for (field, list) in [
        ("ipBlocks", &src.ip_blocks),
        ("notIpBlocks", &src.not_ip_blocks),
        ("remoteIpBlocks", &src.remote_ip_blocks),
        ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
    ] {
        for (k, v) in list.iter().enumerate() {
            if let Err(e) = validate_ip_or_cidr(v) {
                out.error(&path.field(field).index(k), e);
            }
        }
    }
    for (field, go_name, list) in source_value_lists(src) {
        check_empty_values(go_name, list, &path.field(field), out);
    }
    [
        &src.principals,
        &src.not_principals,
        &src.ip_blocks,
        &src.not_ip_blocks,
        &src.namespaces,
        &src.not_namespaces,
        &src.remote_ip_blocks,
        &src.not_remote_ip_blocks,
        &src.service_accounts,
        &src.not_service_accounts,
    ]
    .iter()
    .any(|l| !l.is_empty())
}

/// An operation. Returns true when it names ports (which TCP traffic has).
fn check_operation(op: &Operation, i: usize, path: &FieldPath, out: &mut Findings) -> bool {
    let lists = operation_value_lists(op);
    if lists.iter().all(|(_, _, l)| l.is_empty()) {
        out.error(
            path,
            format!("`to.operation` must not be empty, found at rule {i}"),
        );
    }
    for (field, list) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
        for (k, v) in list.iter().enumerate() {
            if let Err(e) = validate_port_value(v) {
                out.error(&path.field(field).index(k), e);
            }
        }
    }
    for (field, go_name, list) in lists {
        check_empty_values(go_name, list, &path.field(field), out);
    }
    for (field, go_name, list) in [
        ("paths", "Paths", &op.paths),
        ("notPaths", "NotPaths", &op.not_paths),
    ] {
        if let Some(k) = list.iter().position(|p| is_unsupported_path_template(p)) {
            out.error(
                &path.field(field).index(k),
                format!("invalid or unsupported path template, found in {go_name}"),
            );
        }
    }
    !op.ports.is_empty() || !op.not_ports.is_empty()
}

/// Istio's `CheckEmptyValues`: the first empty value of a list.
fn check_empty_values(go_name: &str, list: &[String], path: &FieldPath, out: &mut Findings) {
    if let Some(k) = list.iter().position(String::is_empty) {
        out.error(
            &path.index(k),
            format!("empty value not allowed, found in {go_name}"),
        );
    }
}

/// A path template (`{*}`, `{**}`) using what Envoy's matcher does not support: named
/// variables, empty braces, or bare `*`/`**` segments.
fn is_unsupported_path_template(path: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"/\{[0-9A-Za-z_]+=\*\*?\}|\{[0-9A-Za-z_]*\}|/\*\*?|\*\*?/")
            .expect("valid regex")
    });
    (path.contains("{*}") || path.contains("{**}")) && re.is_match(path)
}

/// Istio's `ValidateIPs` for one value: a CIDR block (with `/`) or an IP address.
fn validate_ip_or_cidr(v: &str) -> Result<(), String> {
    match v.rsplit_once('/') {
        Some((addr, bits)) => parse_prefix(addr, bits)
            .map_err(|why| format!("bad CIDR range ({v}): netip.ParsePrefix({v:?}): {why}")),
        None if v.parse::<IpAddr>().is_ok() => Ok(()),
        None => Err(format!("bad IP address ({v})")),
    }
}

/// Go's `netip.ParsePrefix` after the split at the last `/`, with its reasons.
fn parse_prefix(addr: &str, bits: &str) -> Result<(), String> {
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("ParseAddr({addr:?}): unable to parse IP"))?;
    let bad_bits = || format!("bad bits after slash: {bits:?}");
    let leading_zero_or_sign =
        bits.len() > 1 && !bits.starts_with(|c: char| ('1'..='9').contains(&c));
    if bits.is_empty() || leading_zero_or_sign || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_bits());
    }
    let n: u32 = bits.parse().map_err(|_| bad_bits())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if n > max {
        return Err("prefix length out of range".into());
    }
    Ok(())
}

/// Istio's `ValidatePorts` for one value: a base-10 number up to 65535.
fn validate_port_value(p: &str) -> Result<(), String> {
    let reason = if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        format!("strconv.ParseUint: parsing {p:?}: invalid syntax")
    } else {
        match p.parse::<u32>() {
            Ok(n) if n <= 65535 => return Ok(()),
            // Go formats the nil error of an in-range parse of a too-large port.
            Ok(_) => "<nil>".into(),
            Err(_) => format!("strconv.ParseUint: parsing {p:?}: value out of range"),
        }
    };
    Err(format!("bad port ({p}): {reason}"))
}

/// What the values of a condition key must be.
enum AttributeValues {
    /// Any string.
    Any,
    /// IP addresses or CIDR blocks.
    Ip,
    /// Port numbers.
    Port,
}

/// Istio's `ValidateAttribute`, for the key: what its values must be, or why the key is
/// not accepted.
fn attribute_values(key: &str) -> Result<AttributeValues, String> {
    let map_key = |key: &str| {
        let open = key.find('[').unwrap_or(0);
        if key.ends_with(']') && open > 0 && open + 2 < key.len() {
            Ok(AttributeValues::Any)
        } else {
            Err(format!("bad key ({key}): should have format a[b]"))
        }
    };
    match key {
        _ if key.starts_with("request.headers") => map_key(key),
        "source.ip" | "remote.ip" | "destination.ip" => Ok(AttributeValues::Ip),
        "destination.port" => Ok(AttributeValues::Port),
        "source.namespace"
        | "source.principal"
        | "source.serviceAccount"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(AttributeValues::Any),
        _ if key.starts_with("request.auth.claims") => map_key(key),
        _ if key.starts_with("experimental.envoy.filters.") => map_key(key),
        "destination.namespace" => Err(format!(
            "attribute {key} is replaced by the metadata.namespace"
        )),
        _ if key.starts_with("destination.labels") => Err(format!(
            "attribute {key} is replaced by the workload selector"
        )),
        "destination.name" | "destination.user" => Err(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        )),
        _ => Err(format!("unknown attribute: {key}")),
    }
}

/// A `when` condition: a key, values or notValues, and values that fit the key. A key
/// error is reported once, at the key.
fn check_condition(c: &Condition, path: &FieldPath, out: &mut Findings) {
    let key = c.key.as_str();
    if key.is_empty() {
        out.error(&path.field("key"), "`key` must not be empty");
        return;
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        out.error(
            path,
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        );
        return;
    }
    let kind = attribute_values(key);
    if let Err(e) = &kind {
        out.error(
            &path.field("key"),
            format!("invalid `value` for `key` {key}: {e}"),
        );
    }
    for (field, what, list) in [
        ("values", "value", &c.values),
        ("notValues", "notValue", &c.not_values),
    ] {
        let lp = path.field(field);
        if let Some(k) = list.iter().position(String::is_empty) {
            out.error(
                &lp.index(k),
                format!(
                    "invalid `{what}` for `key` {key}: empty value not allowed, found in {key}"
                ),
            );
            continue;
        }
        let check: fn(&str) -> Result<(), String> = match kind {
            Ok(AttributeValues::Ip) => validate_ip_or_cidr,
            Ok(AttributeValues::Port) => validate_port_value,
            Ok(AttributeValues::Any) | Err(_) => continue,
        };
        for (k, v) in list.iter().enumerate() {
            if let Err(e) = check(v) {
                out.error(
                    &lp.index(k),
                    format!("invalid `{what}` for `key` {key}: {e}"),
                );
            }
        }
    }
}

/// Validates a RequestAuthentication: its targets and each JWT rule.
pub fn validate_request_authentication(
    ra: &RequestAuthentication,
    spec: &FieldPath,
    out: &mut Findings,
) {
    let s = &ra.spec;
    check_policy_targets(
        s.selector.as_ref(),
        s.target_ref.as_ref(),
        &s.target_refs,
        spec,
        out,
    );
    for (i, rule) in s.jwt_rules.iter().enumerate() {
        check_jwt_rule(rule, &spec.field("jwtRules").index(i), out);
    }
}

/// One JWT rule: issuer or JWKS URI, audiences, keys, token locations, claim headers and
/// the JWKS fetch timeout.
fn check_jwt_rule(rule: &JwtRule, path: &FieldPath, out: &mut Findings) {
    for (k, audience) in rule.audiences.iter().enumerate() {
        if audience.is_empty() {
            out.error(
                &path.field("audiences").index(k),
                "audience must be non-empty string",
            );
        }
    }
    let issuer = rule.issuer.as_deref().unwrap_or_default();
    let jwks_uri = rule.jwks_uri.as_deref().unwrap_or_default();
    if issuer.is_empty() && jwks_uri.is_empty() {
        out.error(
            &path.field("issuer"),
            "issuer or jwksUri must be non-empty string",
        );
    }
    if !jwks_uri.is_empty()
        && let Err(e) = check_jwks_uri(jwks_uri)
    {
        out.error(&path.field("jwksUri"), e);
    }
    if let Some(jwks) = rule.jwks.as_deref().filter(|j| !j.is_empty())
        && let Err(e) = check_jwks(jwks)
    {
        out.error(&path.field("jwks"), format!("jwks parse error: {e}"));
    }
    check_token_locations(rule, path, out);
    for (k, c) in rule.output_claim_to_headers.iter().enumerate() {
        let cp = path.field("outputClaimToHeaders").index(k);
        if c.claim.is_empty() || c.header.is_empty() {
            out.error(
                &cp,
                "outputClaimToHeaders header and claim value must be non-empty string",
            );
        } else if let Err(e) = validate_header_name(&c.header) {
            out.error(&cp.field("header"), e);
        }
    }
    check_duration(rule.timeout.as_ref(), &path.field("timeout"), out);
}

/// Where the token is read from: header names, query parameters and cookies.
fn check_token_locations(rule: &JwtRule, path: &FieldPath, out: &mut Findings) {
    for (k, h) in rule.from_headers.iter().enumerate() {
        if h.name.is_empty() {
            out.error(
                &path.field("fromHeaders").index(k).field("name"),
                "location header name must be non-empty string",
            );
        }
    }
    for (field, message, list) in [
        (
            "fromParams",
            "location query must be non-empty string",
            &rule.from_params,
        ),
        (
            "fromCookies",
            "cookie name must be non-empty string",
            &rule.from_cookies,
        ),
    ] {
        for (k, v) in list.iter().enumerate() {
            if v.is_empty() {
                out.error(&path.field(field).index(k), message);
            }
        }
    }
}

/// Istio's `ParseJwksURI`: a URL (as Go's `url.Parse` reads it) with scheme http or https
/// and, when given, a numeric port.
fn check_jwks_uri(uri: &str) -> Result<(), String> {
    let parse_error = |why: String| format!("parse {uri:?}: {why}");
    if uri.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(parse_error(
            "net/url: invalid control character in URL".into(),
        ));
    }
    let (scheme, rest) = split_scheme(uri).map_err(|e| parse_error(e.into()))?;
    let rest = rest.split(['#', '?']).next().unwrap_or_default();
    let port = match rest.strip_prefix("//") {
        Some(authority) if !scheme.is_empty() => {
            let authority = authority.split('/').next().unwrap_or_default();
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            host_port(host).map_err(parse_error)?
        }
        _ => "",
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("URI scheme {scheme:?} is not supported"));
    }
    if !port.is_empty() && port.parse::<i64>().is_err() {
        return Err(format!(
            "strconv.Atoi: parsing {port:?}: value out of range"
        ));
    }
    Ok(())
}

/// Go's `getScheme`: the lower-cased scheme (or none) and the rest of the URL.
fn split_scheme(uri: &str) -> Result<(String, &str), &'static str> {
    for (i, c) in uri.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' if i == 0 => return Err("missing protocol scheme"),
            ':' => return Ok((uri[..i].to_ascii_lowercase(), &uri[i + 1..])),
            _ => return Ok((String::new(), uri)),
        }
    }
    Ok((String::new(), uri))
}

/// Go's `parseHost`, for the port: digits after the last colon (after `]` for IPv6).
fn host_port(host: &str) -> Result<&str, String> {
    let colon_port = if host.starts_with('[') {
        let Some(end) = host.rfind(']') else {
            return Err("missing ']' in host".into());
        };
        &host[end + 1..]
    } else {
        host.rfind(':').map_or("", |i| &host[i..])
    };
    if colon_port.is_empty() {
        return Ok("");
    }
    match colon_port.strip_prefix(':') {
        Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(format!("invalid port {colon_port:?} after host")),
    }
}

/// A JSON Web Key Set (`{"keys": [...]}`) or a single key (`{"kty": ...}`).
fn check_jwks(jwks: &str) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
    let has_kty = |v: &serde_json::Value| v.get("kty").is_some_and(serde_json::Value::is_string);
    match value.get("keys") {
        Some(serde_json::Value::Array(keys)) => match keys.iter().position(|k| !has_kty(k)) {
            Some(i) => Err(format!("key {i} has no \"kty\"")),
            None => Ok(()),
        },
        Some(_) => Err("\"keys\" must be an array".into()),
        None if has_kty(&value) => Ok(()),
        None => Err("expected a key set with a \"keys\" array, or a key with \"kty\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::validate::testing;

    fn check<T: serde::de::DeserializeOwned>(
        kind: &str,
        f: testing::Validator<T>,
        cases: &[(Value, &[&str], &[&str])],
    ) {
        testing::check(("security.istio.io/v1", kind, "p", "ns"), f, cases)
    }

    fn authz(cases: &[(Value, &[&str], &[&str])]) {
        check::<AuthorizationPolicy>("AuthorizationPolicy", validate_authorization_policy, cases);
    }

    #[test]
    fn peer_authentication() {
        check::<PeerAuthentication>(
            "PeerAuthentication",
            validate_peer_authentication,
            &[
                (
                    json!({"selector": {"matchLabels": {"app": "a"}}, "mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}}),
                    &[],
                    &[],
                ),
                (
                    json!({"portLevelMtls": {"0": {"mode": "DISABLE"}, "70000": {}}}),
                    &[
                        "spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS",
                        "spec.portLevelMtls[0]: port must be in range 1..65535",
                        "spec.portLevelMtls[70000]: port must be in range 1..65535",
                    ],
                    &[],
                ),
                (
                    json!({"selector": {}, "portLevelMtls": {"80": {}}}),
                    &[
                        "spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS",
                    ],
                    &["spec.selector: workload selector specified without labels"],
                ),
            ],
        );
    }

    #[test]
    fn valid_authorization_policy() {
        authz(&[(
            json!({
                "selector": {"matchLabels": {"app": "a"}},
                "action": "DENY",
                "rules": [{
                    "from": [{"source": {"ipBlocks": ["10.0.0.0/8", "1.2.3.4"], "namespaces": ["prod"]}}],
                    "to": [{"operation": {"ports": ["8080"], "paths": ["/api/{*}/x", "/files/{**}"]}}],
                    "when": [
                        {"key": "request.headers[x-token]", "values": ["a"]},
                        {"key": "source.ip", "notValues": ["10.1.0.0/16"]},
                        {"key": "destination.port", "values": ["443"]}
                    ]
                }]
            }),
            &[],
            &[],
        )]);
    }

    #[test]
    fn custom_and_provider() {
        authz(&[
            (
                json!({"action": "CUSTOM", "provider": {"name": "ext"}}),
                &[
                    "spec.rules: invalid policy p.ns: CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
                ],
                &[],
            ),
            (
                json!({
                    "action": "CUSTOM", "provider": {},
                    "rules": [{
                        "from": [{"source": {"principals": ["a"], "notNamespaces": ["b"], "ipBlocks": ["1.1.1.1"]}}],
                        "when": [
                            {"key": "source.principal", "values": ["a"]},
                            {"key": "request.auth.claims[iss]", "values": ["a"]},
                            {"key": "source.ip", "values": ["1.1.1.1"]}
                        ]
                    }]
                }),
                &[
                    "spec.provider.name: invalid policy p.ns: `provider.name` must not be empty",
                    "spec.rules[0].from[0].source.notNamespaces: invalid policy p.ns: From.NotNamespaces is currently not supported with CUSTOM action",
                    "spec.rules[0].from[0].source.principals: invalid policy p.ns: From.Principals is currently not supported with CUSTOM action",
                    "spec.rules[0].when[0].key: invalid policy p.ns: source.principal is currently not supported with CUSTOM action",
                    "spec.rules[0].when[1].key: invalid policy p.ns: request.auth.claims[iss] is currently not supported with CUSTOM action",
                ],
                &[],
            ),
            (
                json!({"action": "ALLOW", "provider": {"name": "ext"}, "rules": [{}]}),
                &[
                    "spec.provider: invalid policy p.ns: `provider` must not be with non CUSTOM action, found ALLOW",
                ],
                &[],
            ),
            (
                json!({"action": "DENY"}),
                &[
                    "spec.rules: invalid policy p.ns: DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
                ],
                &[],
            ),
            (
                json!({"selector": {"matchLabels": {"app": "a"}}, "targetRef": {"kind": "Service", "name": "a"}}),
                &[
                    "spec: invalid policy p.ns: only one of targetRefs or workloadSelector can be set",
                ],
                &[],
            ),
        ]);
    }

    #[test]
    fn sources_and_operations() {
        authz(&[(
            json!({"rules": [{
                "from": [
                    {},
                    {"source": {}},
                    {"source": {
                        "ipBlocks": ["10.0.0.0/33", "1.2.3", ""],
                        "notRemoteIpBlocks": ["10.0.0.0/08", "abc/8"],
                        "principals": ["a", ""]
                    }}
                ],
                "to": [
                    {},
                    {"operation": {}},
                    {"operation": {
                        "ports": ["80", "x", "70000", "99999999999"],
                        "methods": [""],
                        "paths": ["/a/{*}/b", "/{foo}/{*}"],
                        "notPaths": ["/{**}/*/x"]
                    }}
                ]
            }]}),
            &[
                "spec.rules[0].from[0].source: invalid policy p.ns: `from.source` must not be nil, found at rule 0",
                "spec.rules[0].from[1].source: invalid policy p.ns: `from.source` must not be empty, found at rule 0",
                "spec.rules[0].from[2].source.ipBlocks[0]: invalid policy p.ns: bad CIDR range (10.0.0.0/33): netip.ParsePrefix(\"10.0.0.0/33\"): prefix length out of range",
                "spec.rules[0].from[2].source.ipBlocks[1]: invalid policy p.ns: bad IP address (1.2.3)",
                "spec.rules[0].from[2].source.ipBlocks[2]: invalid policy p.ns: bad IP address ()",
                "spec.rules[0].from[2].source.notRemoteIpBlocks[0]: invalid policy p.ns: bad CIDR range (10.0.0.0/08): netip.ParsePrefix(\"10.0.0.0/08\"): bad bits after slash: \"08\"",
                "spec.rules[0].from[2].source.notRemoteIpBlocks[1]: invalid policy p.ns: bad CIDR range (abc/8): netip.ParsePrefix(\"abc/8\"): ParseAddr(\"abc\"): unable to parse IP",
                "spec.rules[0].from[2].source.principals[1]: invalid policy p.ns: empty value not allowed, found in Principals",
                "spec.rules[0].from[2].source.ipBlocks[2]: invalid policy p.ns: empty value not allowed, found in IpBlocks",
                "spec.rules[0].to[0].operation: invalid policy p.ns: `to.operation` must not be nil, found at rule 0",
                "spec.rules[0].to[1].operation: invalid policy p.ns: `to.operation` must not be empty, found at rule 0",
                "spec.rules[0].to[2].operation.ports[1]: invalid policy p.ns: bad port (x): strconv.ParseUint: parsing \"x\": invalid syntax",
                "spec.rules[0].to[2].operation.ports[2]: invalid policy p.ns: bad port (70000): <nil>",
                "spec.rules[0].to[2].operation.ports[3]: invalid policy p.ns: bad port (99999999999): strconv.ParseUint: parsing \"99999999999\": value out of range",
                "spec.rules[0].to[2].operation.methods[0]: invalid policy p.ns: empty value not allowed, found in Methods",
                "spec.rules[0].to[2].operation.paths[1]: invalid policy p.ns: invalid or unsupported path template, found in Paths",
                "spec.rules[0].to[2].operation.notPaths[0]: invalid policy p.ns: invalid or unsupported path template, found in NotPaths",
            ],
            &[],
        )]);
    }

    #[test]
    fn conditions() {
        authz(&[(
            json!({"rules": [{"when": [
                {"key": "", "values": ["a"]},
                {"key": "source.ip"},
                {"key": "request.headers", "values": ["a"]},
                {"key": "request.auth.claims[]", "notValues": ["a"]},
                {"key": "experimental.envoy.filters.a.b[c]", "values": ["a"]},
                {"key": "source.ip", "values": ["1.2.3.4", "nope"], "notValues": ["10.0.0.0/40"]},
                {"key": "destination.port", "values": ["http"]},
                {"key": "destination.namespace", "values": ["a"]},
                {"key": "destination.labels[app]", "values": ["a"]},
                {"key": "destination.user", "values": ["a"]},
                {"key": "foo.bar", "values": ["a", ""]},
                {"key": "source.serviceAccount", "values": ["ns/sa"]}
            ]}]}),
            &[
                "spec.rules[0].when[0].key: invalid policy p.ns: `key` must not be empty",
                "spec.rules[0].when[1]: invalid policy p.ns: at least one of `values` or `notValues` must be set for key source.ip",
                "spec.rules[0].when[2].key: invalid policy p.ns: invalid `value` for `key` request.headers: bad key (request.headers): should have format a[b]",
                "spec.rules[0].when[3].key: invalid policy p.ns: invalid `value` for `key` request.auth.claims[]: bad key (request.auth.claims[]): should have format a[b]",
                "spec.rules[0].when[5].values[1]: invalid policy p.ns: invalid `value` for `key` source.ip: bad IP address (nope)",
                "spec.rules[0].when[5].notValues[0]: invalid policy p.ns: invalid `notValue` for `key` source.ip: bad CIDR range (10.0.0.0/40): netip.ParsePrefix(\"10.0.0.0/40\"): prefix length out of range",
                "spec.rules[0].when[6].values[0]: invalid policy p.ns: invalid `value` for `key` destination.port: bad port (http): strconv.ParseUint: parsing \"http\": invalid syntax",
                "spec.rules[0].when[7].key: invalid policy p.ns: invalid `value` for `key` destination.namespace: attribute destination.namespace is replaced by the metadata.namespace",
                "spec.rules[0].when[8].key: invalid policy p.ns: invalid `value` for `key` destination.labels[app]: attribute destination.labels[app] is replaced by the workload selector",
                "spec.rules[0].when[9].key: invalid policy p.ns: invalid `value` for `key` destination.user: deprecated attribute destination.user: only supported in v1alpha1",
                "spec.rules[0].when[10].key: invalid policy p.ns: invalid `value` for `key` foo.bar: unknown attribute: foo.bar",
                "spec.rules[0].when[10].values[1]: invalid policy p.ns: invalid `value` for `key` foo.bar: empty value not allowed, found in foo.bar",
            ],
            &[],
        )]);
    }

    #[test]
    fn deny_rules_with_only_http_attributes_warn() {
        let warning = "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port";
        authz(&[
            (
                json!({"action": "DENY", "rules": [
                    {"from": [{"source": {"requestPrincipals": ["*"]}}]},
                    {"to": [{"operation": {"methods": ["GET"]}}]},
                    {"from": [{"source": {"principals": ["a"]}}]},
                    {"to": [{"operation": {"methods": ["GET"], "ports": ["80"]}}]},
                    {"from": [{"source": {"namespaces": ["a"]}}], "to": [{"operation": {"paths": ["/x"]}}]}
                ]}),
                &[],
                &[
                    &format!("spec.rules[0]: {warning}"),
                    &format!("spec.rules[1]: {warning}"),
                    &format!("spec.rules[4]: {warning}"),
                ],
            ),
            (
                json!({"action": "ALLOW", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
                &[],
                &[],
            ),
        ]);
    }

    fn reqauthn(cases: &[(Value, &[&str], &[&str])]) {
        check::<RequestAuthentication>(
            "RequestAuthentication",
            validate_request_authentication,
            cases,
        );
    }

    #[test]
    fn request_authentication() {
        reqauthn(&[
            (
                json!({
                    "selector": {"matchLabels": {"app": "a"}},
                    "jwtRules": [
                        {"issuer": "https://issuer.example.com", "jwksUri": "https://issuer.example.com:8443/jwks.json",
                         "audiences": ["a"], "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}],
                         "fromParams": ["token"], "fromCookies": ["session"],
                         "outputClaimToHeaders": [{"claim": "sub", "header": "x-sub"}], "timeout": "5s"},
                        {"jwksUri": "http://keys.example.com/jwks"},
                        {"issuer": "a", "jwks": "{\"keys\": [{\"kty\": \"RSA\", \"n\": \"x\", \"e\": \"AQAB\"}]}"}
                    ]
                }),
                &[],
                &[],
            ),
            (
                json!({"jwtRules": [
                    {"audiences": ["", "b"], "fromHeaders": [{"name": ""}], "fromParams": [""], "fromCookies": [""]},
                    {"issuer": "a", "jwksUri": "ftp://keys.example.com/jwks", "jwks": "{nope"},
                    {"issuer": "a", "jwksUri": "https://keys.example.com:abc/jwks", "jwks": "{\"keys\": [{}]}"},
                    {"issuer": "a", "jwksUri": "keys.example.com/jwks", "outputClaimToHeaders": [{"claim": "", "header": "x"}, {"claim": "sub", "header": "bad header"}], "timeout": "0s"}
                ]}),
                &[
                    "spec.jwtRules[0].audiences[0]: audience must be non-empty string",
                    "spec.jwtRules[0].issuer: issuer or jwksUri must be non-empty string",
                    "spec.jwtRules[0].fromHeaders[0].name: location header name must be non-empty string",
                    "spec.jwtRules[0].fromParams[0]: location query must be non-empty string",
                    "spec.jwtRules[0].fromCookies[0]: cookie name must be non-empty string",
                    "spec.jwtRules[1].jwksUri: URI scheme \"ftp\" is not supported",
                    "spec.jwtRules[1].jwks: jwks parse error: key must be a string at line 1 column 2",
                    "spec.jwtRules[2].jwksUri: parse \"https://keys.example.com:abc/jwks\": invalid port \":abc\" after host",
                    "spec.jwtRules[2].jwks: jwks parse error: key 0 has no \"kty\"",
                    "spec.jwtRules[3].jwksUri: URI scheme \"\" is not supported",
                    "spec.jwtRules[3].outputClaimToHeaders[0]: outputClaimToHeaders header and claim value must be non-empty string",
                    "spec.jwtRules[3].outputClaimToHeaders[1].header: header name bad header is not a valid header name",
                    "spec.jwtRules[3].timeout: duration must be greater than 1ms",
                ],
                &[],
            ),
            (
                json!({"targetRefs": [{"kind": "Pod", "name": "a"}]}),
                &[
                    "spec.targetRefs[0]: targetRef must be to one of [core/Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway] but was core/Pod",
                ],
                &[],
            ),
        ]);
    }

    #[test]
    fn jwks_uris_like_go() {
        assert!(check_jwks_uri("HTTPS://a.example.com").is_ok());
        assert!(check_jwks_uri("https://[::1]:443/keys").is_ok());
        assert!(check_jwks_uri("https://user@a.example.com:8443/keys?x=1#f").is_ok());
        assert_eq!(
            check_jwks_uri(":foo"),
            Err("parse \":foo\": missing protocol scheme".into())
        );
        assert_eq!(
            check_jwks_uri("https://a.example.com:99999999999999999999"),
            Err("strconv.Atoi: parsing \"99999999999999999999\": value out of range".into())
        );
        assert_eq!(
            check_jwks_uri("https://[::1/keys"),
            Err("parse \"https://[::1/keys\": missing ']' in host".into())
        );
        assert!(check_jwks(r#"{"kty": "EC", "crv": "P-256"}"#).is_ok());
        assert_eq!(
            check_jwks(r#"{"keys": {}}"#),
            Err("\"keys\" must be an array".into())
        );
    }
}
