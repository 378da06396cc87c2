//! The building blocks of Istio's validation: host names, ports, protocols, addresses,
//! labels, durations, percentages, regexes, string matches, headers, selectors, exportTo.
//! Messages follow Istio's webhook, so users can search for them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use ipnet::IpNet;
use regex::Regex;

use crate::diagnostic::Findings;
use crate::duration::parse_duration;
use crate::generated::common::{PolicyTargetReference, WorkloadSelector};
use crate::generated::networking::StringMatch;
use crate::path::FieldPath;

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid regex"))
}

const DNS1123_LABEL: &str = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?";

/// An RFC 1123 label as Istio checks it (upper case allowed, at most 63 characters).
pub fn is_dns1123_label(s: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    s.len() <= 63 && re(&RE, &format!("^{DNS1123_LABEL}$")).is_match(s)
}

fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s.len() > 63 {
        return false;
    }
    if s == "*" {
        return true;
    }
    match s.strip_prefix('*') {
        Some(rest) => is_dns1123_label(rest.strip_prefix('-').unwrap_or(rest)),
        None => is_dns1123_label(s),
    }
}

fn dns1123_preconditions(domain: &str) -> Result<(), String> {
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

/// Checks the labels of `domain`; messages name `shown`, the whole name the user wrote.
fn dns1123_labels(domain: &str, shown: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let last = parts.last().copied().unwrap_or("");
    if !last.is_empty() && last.parse::<i64>().is_ok() {
        return Err(format!(
            "domain name {shown:?} invalid (top level domain {last:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            continue; // a trailing dot
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {shown:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified (or single-label) DNS name, without wildcards.
pub fn validate_fqdn(domain: &str) -> Result<(), String> {
    dns1123_preconditions(domain)?;
    dns1123_labels(domain, domain)
}

/// A DNS name whose first label may be a wildcard (`*`, `*.example.com`, `*foo.com`).
pub fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    dns1123_preconditions(domain)?;
    let (first, rest) = domain.split_once('.').unwrap_or((domain, ""));
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    if rest.is_empty() {
        return Ok(());
    }
    dns1123_labels(rest, domain)
}

/// A wildcard anywhere but as the whole first label (`foo*.com`, `a.*.com`).
pub fn validate_partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host != "*" && !host.starts_with("*.") {
        return Err(format!("partial wildcard {host:?} not allowed"));
    }
    Ok(())
}

/// True when `s` parses as an IPv4 or IPv6 address.
pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// An IP address.
pub fn validate_ip(s: &str) -> Result<(), String> {
    if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s} is not a valid IP"))
    }
}

/// An IP address or a CIDR block.
pub fn validate_ip_subnet(s: &str) -> Result<(), String> {
    if s.matches('/').count() == 1 {
        s.parse::<IpNet>()
            .map(|_| ())
            .map_err(|_| format!("{s} is not a valid CIDR block"))
    } else {
        validate_ip(s)
    }
}

/// A Unix domain socket address after `unix://`: absolute path or abstract (`@name`).
pub fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// A port number: 1 to 65535.
pub fn validate_port(port: u32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

/// A port name: an RFC 1123 label.
pub fn validate_port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name}"))
    }
}

/// The protocols Istio knows for ports.
pub const PROTOCOLS: &[&str] = &[
    "tcp",
    "udp",
    "grpc",
    "grpc-web",
    "http",
    "http_proxy",
    "http2",
    "https",
    "tls",
    "mongo",
    "redis",
    "mysql",
];

/// A port protocol (case-insensitive; empty means "detect").
pub fn validate_protocol(p: &str) -> Result<(), String> {
    if p.is_empty() || PROTOCOLS.contains(&p.to_ascii_lowercase().as_str()) {
        Ok(())
    } else {
        Err(format!("unsupported protocol: {p}"))
    }
}

/// HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB.
pub fn is_http_protocol(p: &str) -> bool {
    matches!(
        p.to_ascii_uppercase().as_str(),
        "HTTP" | "HTTP2" | "HTTP_PROXY" | "GRPC" | "GRPC-WEB"
    )
}

/// HTTPS or TLS.
pub fn is_tls_protocol(p: &str) -> bool {
    matches!(p.to_ascii_uppercase().as_str(), "HTTPS" | "TLS")
}

/// Protocols carried over TCP without HTTP parsing (TCP, HTTPS, TLS, MONGO, REDIS, MYSQL).
pub fn is_tcp_protocol(p: &str) -> bool {
    matches!(
        p.to_ascii_uppercase().as_str(),
        "TCP" | "HTTPS" | "TLS" | "MONGO" | "REDIS" | "MYSQL"
    )
}

/// A duration as Istio's protobuf durations require: at least 1ms, whole milliseconds.
pub fn validate_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err("duration must be greater than 1ms".into());
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err("only durations to ms precision are supported".into());
    }
    Ok(d)
}

/// Records a duration problem at `path`, if any.
pub fn check_duration(text: Option<&String>, path: &FieldPath, out: &mut Findings) {
    if let Some(t) = text
        && let Err(e) = validate_duration(t)
    {
        out.error(path, e);
    }
}

/// An integer percentage, 0 to 100.
pub fn validate_percent(v: u32) -> Result<(), String> {
    if v <= 100 {
        Ok(())
    } else {
        Err(format!("percentage {v} is not in range 0..100"))
    }
}

/// A fractional percentage: 0, or between 0.0001 and 100.
pub fn validate_percentage(v: f64) -> Result<(), String> {
    if v == 0.0 || (0.0001..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"
        ))
    }
}

/// An RE2 regular expression, at most 1024 characters. The `regex` crate's syntax is RE2's
/// (no look-around, no back-references), so what it rejects RE2 rejects.
pub fn validate_regex(re: &str, what: &str) -> Result<(), String> {
    if re.len() > 1024 {
        return Err(format!(
            "{what:?}: regex is too large, max length allowed is 1024"
        ));
    }
    Regex::new(re).map(|_| ()).map_err(|e| {
        let detail = e.to_string();
        let last = detail.lines().last().unwrap_or(&detail).trim().to_string();
        format!(
            "{what:?}: {last}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
        )
    })
}

/// A string match: a non-empty prefix, a non-empty valid regex, or any exact value.
pub fn check_string_match(m: &StringMatch, what: &str, path: &FieldPath, out: &mut Findings) {
    if m.prefix.as_deref() == Some("") {
        out.error(
            &path.field("prefix"),
            format!("{what:?}: prefix string match should not be empty"),
        );
    }
    check_string_match_regex(m, what, path, out);
}

/// Only the regex of a string match (an empty prefix is allowed, as for `uri`).
pub fn check_string_match_regex(m: &StringMatch, what: &str, path: &FieldPath, out: &mut Findings) {
    if let Some(r) = &m.regex {
        if r.is_empty() {
            out.error(
                &path.field("regex"),
                format!("{what:?}: regex string match should not be empty"),
            );
        } else if let Err(e) = validate_regex(r, what) {
            out.error(&path.field("regex"), e);
        }
    }
}

/// An HTTP header name.
pub fn validate_header_name(name: &str) -> Result<(), String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if !re(&RE, r"^[-_A-Za-z0-9]+$").is_match(name) {
        return Err(format!("header name {name} is not a valid header name"));
    }
    Ok(())
}

/// True for a JWT claim pseudo-header (`@request.auth.claims.groups`, `...claims[a][b]`).
pub fn is_jwt_claim_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower
        .strip_prefix("@request.auth.claims")
        .is_some_and(|rest| {
            (rest.starts_with('.') && rest.len() > 1)
                || (rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
        })
}

/// A header name that may also be a JWT claim.
pub fn validate_header_name_or_claim(name: &str) -> Result<(), String> {
    if is_jwt_claim_header(name) {
        Ok(())
    } else {
        validate_header_name(name)
    }
}

/// A request header that may be set or added, including `:authority` and `host`.
pub fn validate_header_op_name_with_authority(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    let lower = name.to_ascii_lowercase();
    if lower == ":authority" || lower == "host" {
        return Ok(());
    }
    if name.starts_with(':') {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// A header that may be removed, or set on responses: never `host` or a pseudo-header.
pub fn validate_header_op_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if name.starts_with(':') {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// A header value: no control characters but tab, and well-formed `%VARIABLE%` expressions
/// as Envoy's header formatter reads them (`%%` is a literal percent sign).
pub fn validate_header_value(value: &str) -> Result<(), String> {
    if value
        .chars()
        .any(|c| (c as u32) < 0x20 && c != '\t' || c == '\x7f')
    {
        // Shown with its control characters escaped, so the message stays on one line.
        let shown: String = value
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        return Err(format!("header value configuration {shown} is invalid"));
    }
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) == Some(&b'%') {
            i += 2;
            continue;
        }
        let Some(end) = value[i + 1..].find('%') else {
            // Istio names the whole value, as Envoy's header parser does.
            return Err(if i + 1 == bytes.len() {
                "header value configuration: invalid header configuration. Un-escaped %".into()
            } else {
                format!(
                    "header value configuration: invalid header configuration. Un-terminated variable expression '{value}'"
                )
            });
        };
        let var = &value[i + 1..i + 1 + end];
        let well_formed = !var.is_empty()
            && var.split('(').next().is_some_and(|n| {
                n.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            && (!var.contains('(') || var.ends_with(')'));
        if !well_formed {
            return Err(format!(
                "header value configuration: invalid header configuration. Un-terminated variable expression '{value}'"
            ));
        }
        i += end + 2;
    }
    Ok(())
}

/// Istio's label rules for a map of labels (`sourceLabels`, subset labels, ...).
pub fn check_labels(labels: &BTreeMap<String, String>, path: &FieldPath, out: &mut Findings) {
    static KEY: OnceLock<Regex> = OnceLock::new();
    static VALUE: OnceLock<Regex> = OnceLock::new();
    let key_re = re(
        &KEY,
        &format!(
            r"^({DNS1123_LABEL}(\.{DNS1123_LABEL})*/)?((?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        ),
    );
    let value_re = re(&VALUE, r"^((?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$");
    for (k, v) in labels {
        let p = path.key(k);
        match key_re.captures(k) {
            None => out.error(&p, format!("invalid tag key: {k:?}")),
            Some(c) => {
                if c.get(1).is_some_and(|m| m.as_str().len() - 1 > 253) {
                    out.error(
                        &p,
                        format!("invalid tag key: {k:?} (DNS prefix is too long)"),
                    );
                }
                if c.get(3).is_some_and(|m| m.as_str().len() > 63) {
                    out.error(&p, format!("invalid tag key: {k:?} (name is too long)"));
                }
            }
        }
        if !value_re.is_match(v) {
            out.error(&p, format!("invalid tag value: {v:?}"));
        }
    }
}

/// `selector.matchLabels` of security and telemetry resources and DestinationRule.
pub fn check_workload_selector(
    sel: Option<&WorkloadSelector>,
    path: &FieldPath,
    out: &mut Findings,
) {
    let Some(sel) = sel else { return };
    if sel.match_labels.is_empty() {
        out.warn(path, "workload selector specified without labels");
    }
    for (k, v) in &sel.match_labels {
        let p = path.field("matchLabels").key(k);
        if k.is_empty() {
            out.error(
                &p,
                format!("empty key is not supported in selector: \"={v}\""),
            );
        }
        if k.contains('*') || v.contains('*') {
            out.error(
                &p,
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
    }
}

/// `workloadSelector.labels` of Sidecar and ServiceEntry. Returns false on an error.
pub fn check_label_selector(
    labels: &BTreeMap<String, String>,
    path: &FieldPath,
    empty_warning: &str,
    out: &mut Findings,
) -> bool {
    let mut ok = true;
    for (k, v) in labels {
        let p = path.field("labels").key(k);
        if k.is_empty() {
            out.error(
                &p,
                format!("empty key is not supported in selector: \"={v}\""),
            );
            ok = false;
        }
        if k.contains('*') || v.contains('*') {
            out.error(
                &p,
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
            ok = false;
        }
    }
    if ok && labels.is_empty() {
        out.warn(path, empty_warning);
    }
    ok
}

/// `exportTo`: `.`, `*`, `~` (ServiceEntry only) or namespace names, without contradictions.
pub fn check_export_to(
    namespace: &str,
    list: &[String],
    is_service_entry: bool,
    dr_with_selector: bool,
    path: &FieldPath,
    out: &mut Findings,
) {
    // As in Istio, only valid entries are remembered: an invalid one is reported once,
    // not again as a duplicate or as making the list public or private.
    let mut seen = BTreeSet::new();
    for (i, e) in list.iter().enumerate() {
        let p = path.index(i);
        let resolved = if e == "." { namespace } else { e.as_str() };
        if seen.contains(resolved) {
            if e == "." || e == namespace {
                out.error(
                    &p,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                out.error(&p, format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        let valid = match e.as_str() {
            "." | "*" => true,
            "~" if is_service_entry => true,
            "~" => {
                out.error(
                    &p,
                    "exportTo ~ (none) is not allowed for Istio configuration objects",
                );
                false
            }
            other if is_dns1123_label(other) => true,
            _ => {
                out.error(
                    &p,
                    "only .,*,~, or a valid DNS 1123 label is allowed as exportTo entry",
                );
                false
            }
        };
        if valid {
            seen.insert(resolved.to_string());
        }
    }
    if dr_with_selector && !list.is_empty() {
        if !seen.contains(namespace) {
            out.error(
                path,
                "destination rule with workload selector cannot have exportTo beyond current namespace",
            );
        } else if seen.len() > 1 {
            out.error(
                path,
                "destination rule with workload selector cannot have multiple entries in exportTo",
            );
        }
    }
    if seen.contains("*") && list.len() > 1 {
        out.error(
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if seen.contains("~") && list.len() > 1 {
        out.error(
            path,
            "cannot export service entry to no one (~) and someone",
        );
    }
}

/// `selector`, `targetRef` and `targetRefs` of policies: at most one, and valid references.
pub fn check_policy_targets(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    spec: &FieldPath,
    out: &mut Findings,
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        out.error(
            spec,
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    check_workload_selector(selector, &spec.field("selector"), out);
    let refs = target_ref
        .map(|r| (spec.field("targetRef"), r))
        .into_iter()
        .chain(
            target_refs
                .iter()
                .enumerate()
                .map(|(i, r)| (spec.field("targetRefs").index(i), r)),
        );
    for (p, r) in refs {
        if r.name.is_empty() {
            out.error(&p.field("name"), "targetRef name must be set");
        }
        if r.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
            out.error(
                &p.field("namespace"),
                "targetRef namespace must not be set; cross namespace referencing is not supported",
            );
        }
        let group = r
            .group
            .as_deref()
            .filter(|g| !g.is_empty())
            .unwrap_or("core");
        let allowed = matches!(
            (group, r.kind.as_str()),
            ("core", "Service")
                | ("networking.istio.io", "ServiceEntry")
                | ("gateway.networking.k8s.io", "Gateway")
        );
        if !allowed {
            out.error(
                &p,
                format!(
                    "targetRef must be to one of [core/Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway] but was {group}/{}",
                    r.kind
                ),
            );
        }
    }
}

/// The cipher suites Istio recognises (OpenSSL names, as Envoy takes them).
pub const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// True for a cipher suite name Istio accepts.
pub fn is_valid_cipher_suite(s: &str) -> bool {
    s.is_empty()
        || s == "ALL"
        || !s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        || CIPHER_SUITES.contains(&s)
}

/// Istio's host matching: a wildcard matches names ending in its suffix; `*` matches all.
pub fn hosts_match(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => {
            if sa.len() < sb.len() {
                b.ends_with(sa)
            } else {
                a.ends_with(sb)
            }
        }
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// One-directional matching: `a` is covered by `b` (a wildcard is never inside a plain name).
pub fn host_subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb),
        (Some(_), None) => false,
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("*foo.com").is_ok());
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain("reviews.default.svc.cluster.local").is_ok());
        assert_eq!(
            validate_wildcard_domain("10.0.0.1"),
            Err(
                "domain name \"10.0.0.1\" invalid (top level domain \"1\" cannot be all-numeric)"
                    .into()
            )
        );
        assert!(validate_wildcard_domain("a.*.com").is_err());
        assert!(validate_wildcard_domain("bad_host.com").is_err());
        assert!(validate_fqdn("*.x.com").is_err());
        assert!(validate_partial_wildcard("foo*.com").is_err());
        assert!(validate_partial_wildcard("*.foo.com").is_ok());
    }

    #[test]
    fn durations_and_percentages() {
        assert!(validate_duration("1.5s").is_ok());
        assert!(validate_duration("100ms").is_ok());
        assert_eq!(
            validate_duration("0s"),
            Err("duration must be greater than 1ms".into())
        );
        assert_eq!(
            validate_duration("1500us"),
            Err("only durations to ms precision are supported".into())
        );
        assert!(validate_percentage(0.0).is_ok());
        assert!(validate_percentage(100.0).is_ok());
        assert!(validate_percentage(100.5).is_err());
        assert!(validate_percent(101).is_err());
    }

    #[test]
    fn regexes_follow_re2() {
        assert!(validate_regex("^/api/v[0-9]+/.*", "uri").is_ok());
        let look_ahead = validate_regex("(?=foo)", "uri").unwrap_err();
        assert!(look_ahead.contains("RE2"), "{look_ahead}");
        assert!(validate_regex("(a", "uri").is_err());
        assert!(
            validate_regex(r"(a)\1", "uri").is_err(),
            "back-references are not RE2"
        );
    }

    #[test]
    fn headers() {
        assert!(validate_header_name("x-version").is_ok());
        assert!(validate_header_name("x version").is_err());
        assert!(validate_header_op_name_with_authority(":authority").is_ok());
        assert!(validate_header_op_name_with_authority(":path").is_err());
        assert!(validate_header_op_name("Host").is_err());
        assert!(validate_header_value("%DOWNSTREAM_REMOTE_ADDRESS%").is_ok());
        assert!(validate_header_value("100%%").is_ok());
        assert!(validate_header_value("100%").is_err());
        assert!(validate_header_value("%REQ(x-a)%").is_ok());
        assert_eq!(
            validate_header_value("a\nb"),
            Err("header value configuration a\\nb is invalid".into())
        );
        assert_eq!(
            validate_header_value("x %START_TIME"),
            Err("header value configuration: invalid header configuration. Un-terminated variable expression 'x %START_TIME'".into())
        );
        assert!(is_jwt_claim_header("@request.auth.claims.groups"));
    }

    #[test]
    fn export_to_remembers_only_valid_entries() {
        let run = |list: &[&str], se: bool| {
            let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            let mut out = Findings::default();
            check_export_to("prod", &list, se, false, &FieldPath::root(), &mut out);
            out.into_vec()
                .into_iter()
                .map(|f| format!("{}: {}", f.path, f.message))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            run(&["~", "prod"], false),
            vec!["[0]: exportTo ~ (none) is not allowed for Istio configuration objects"]
        );
        assert_eq!(
            run(&["~", "prod"], true),
            vec![": cannot export service entry to no one (~) and someone"]
        );
        assert_eq!(
            run(&["*", "*"], false),
            vec![
                "[1]: duplicate entries in exportTo for entry *",
                ": cannot have both public (*) and non-public exportTo values for a resource",
            ]
        );
    }

    #[test]
    fn host_matching() {
        assert!(hosts_match("*.foo.com", "a.foo.com"));
        assert!(!hosts_match("*.foo.com", "foo.com"));
        assert!(hosts_match("*", "anything"));
        assert!(host_subset_of("a.foo.com", "*.foo.com"));
        assert!(!host_subset_of("*.foo.com", "a.foo.com"));
        assert!(host_subset_of("*.a.foo.com", "*.foo.com"));
    }

    #[test]
    fn ciphers() {
        assert!(is_valid_cipher_suite("ECDHE-RSA-AES128-GCM-SHA256"));
        assert!(is_valid_cipher_suite("-ALL"));
        assert!(!is_valid_cipher_suite("NOT-A-CIPHER"));
    }
}
