//! VirtualService: hosts, gateways, and the http, tls and tcp routes with everything they
//! carry (matches, destinations and weights, rewrites, redirects, retries, faults, mirrors,
//! CORS, header operations), plus Istio's warnings about rules that can never match.

use std::collections::BTreeMap;

use crate::diagnostic::Findings;
use crate::generated::networking::{
    Destination, HeaderOperations, Headers, HttpFaultInjection, HttpMatchRequest, HttpRetry,
    HttpRoute, RouteDestination, StringMatch, VirtualServiceSpec,
};
use crate::path::FieldPath;
use crate::resource::VirtualService;

use super::common::*;

/// Validates a VirtualService.
pub fn validate(vs: &VirtualService, spec: &FieldPath, out: &mut Findings) {
    let s = &vs.spec;
    let is_delegate = s.hosts.is_empty();
    if is_delegate {
        if !s.gateways.is_empty() {
            out.error(
                &spec.field("gateways"),
                "delegate virtual service must have no gateways specified",
            );
        }
        if !s.tls.is_empty() {
            out.error(
                &spec.field("tls"),
                "delegate virtual service must have no tls route specified",
            );
        }
        if !s.tcp.is_empty() {
            out.error(
                &spec.field("tcp"),
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    check_gateway_names(&s.gateways, &spec.field("gateways"), out);
    let gateway_bound = !s.gateways.is_empty() && !s.gateways.iter().any(|g| g == "mesh");
    if !gateway_bound {
        check_no_jwt_routing(s, spec, out);
    }
    check_hosts(s, gateway_bound, spec, out);
    if s.http.is_empty() && s.tcp.is_empty() && s.tls.is_empty() {
        out.error(spec, "http, tcp or tls must be provided in virtual service");
    }
    let ns = vs.metadata.namespace.as_deref().unwrap_or_default();
    check_export_to(ns, &s.export_to, false, false, &spec.field("exportTo"), out);
    for (i, route) in s.http.iter().enumerate() {
        check_http_route(route, is_delegate, &spec.field("http").index(i), out);
    }
    for (i, route) in s.tls.iter().enumerate() {
        let p = spec.field("tls").index(i);
        if route.match_.is_empty() {
            out.error(
                &p.field("match"),
                "TLS route must have at least one match condition",
            );
        }
        for (j, m) in route.match_.iter().enumerate() {
            let mp = p.field("match").index(j);
            if m.sni_hosts.is_empty() {
                out.error(
                    &mp.field("sniHosts"),
                    "TLS match must have at least one SNI host",
                );
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                check_sni_host(
                    sni,
                    gateway_bound,
                    &s.hosts,
                    &mp.field("sniHosts").index(k),
                    out,
                );
            }
            check_l4_common(
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
                &mp,
                out,
            );
        }
        if route.route.is_empty() {
            out.error(&p.field("route"), "TLS route is required");
        }
        check_route_destinations(&route.route, &p.field("route"), out);
    }
    for (i, route) in s.tcp.iter().enumerate() {
        let p = spec.field("tcp").index(i);
        for (j, m) in route.match_.iter().enumerate() {
            let mp = p.field("match").index(j);
            check_l4_common(
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
                &mp,
                out,
            );
        }
        if route.route.is_empty() {
            out.error(&p.field("route"), "TCP route is required");
        }
        check_route_destinations(&route.route, &p.field("route"), out);
    }
    warn_unreachable(s, spec, out);
}

/// Gateway references: `mesh`, `name`, `ns/name`, or the legacy `name.ns` form.
pub fn check_gateway_names(gateways: &[String], path: &FieldPath, out: &mut Findings) {
    for (i, g) in gateways.iter().enumerate() {
        let p = path.index(i);
        match g.split_once('/') {
            None => {
                if let Some((name, ns)) = g.split_once('.') {
                    out.warn(
                        &p,
                        format!(
                            "using legacy gatewayName format {g:?}; prefer the <namespace>/<name> format: \"{}/{}\"",
                            ns.split('.').next().unwrap_or(ns),
                            name
                        ),
                    );
                }
                if let Err(e) = validate_fqdn(g) {
                    out.error(&p, e);
                }
            }
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    out.error(&p, "config namespace and gateway name cannot be empty");
                    continue;
                }
                if !is_dns1123_label(ns) {
                    out.error(&p, format!("invalid value for namespace: {ns:?}"));
                }
                if !is_dns1123_label(name) {
                    out.error(&p, format!("invalid value for gateway name: {name:?}"));
                }
            }
        }
    }
}

fn check_no_jwt_routing(s: &VirtualServiceSpec, spec: &FieldPath, out: &mut Findings) {
    for (i, route) in s.http.iter().enumerate() {
        for (j, m) in route.match_.iter().enumerate() {
            for (field, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
            ] {
                for k in map.keys().filter(|k| is_jwt_claim_header(k)) {
                    out.error(
                        &spec.field("http").index(i).field("match").index(j).field(field).key(k),
                        format!(
                            "JWT claim based routing (key: {k}) is only supported for gateway, found no gateways: [{}]",
                            s.gateways.join(" ")
                        ),
                    );
                }
            }
        }
    }
}

fn check_hosts(s: &VirtualServiceSpec, gateway_bound: bool, spec: &FieldPath, out: &mut Findings) {
    let mut all_valid = true;
    for (i, host) in s.hosts.iter().enumerate() {
        let p = spec.field("hosts").index(i);
        if let Err(e) = validate_wildcard_domain(host)
            && !is_ip(host)
        {
            out.error(&p, e);
            all_valid = false;
        }
        if host == "*" && !gateway_bound {
            out.error(
                &p,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
            all_valid = false;
        }
    }
    if all_valid {
        for (i, a) in s.hosts.iter().enumerate() {
            for b in &s.hosts[i + 1..] {
                if hosts_match(a, b) {
                    out.error(
                        &spec.field("hosts"),
                        format!("duplicate hosts in virtual service: {a} & {b}"),
                    );
                }
            }
        }
    }
}

fn check_sni_host(
    sni: &str,
    gateway_bound: bool,
    hosts: &[String],
    path: &FieldPath,
    out: &mut Findings,
) {
    let valid = if gateway_bound && sni.starts_with("outbound_") {
        sni.len() > "outbound_.".len()
            && sni
                .as_bytes()
                .get("outbound_.".len())
                .is_some_and(|c| (b'0'..=b'8').contains(c))
    } else {
        validate_wildcard_domain(sni).is_ok()
    };
    if !valid {
        if is_ip(sni) {
            out.warn(
                path,
                format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"),
            );
        } else if let Err(e) = validate_wildcard_domain(sni) {
            out.error(path, e);
        } else {
            out.error(
                path,
                format!("domain name {sni:?} invalid (label \"outbound_\" invalid)"),
            );
        }
        return;
    }
    if !hosts.iter().any(|h| host_subset_of(sni, h)) {
        out.error(
            path,
            format!(
                "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                hosts.join(", ")
            ),
        );
    }
}

fn check_l4_common(
    subnets: &[String],
    port: Option<u32>,
    source_labels: &BTreeMap<String, String>,
    gateways: &[String],
    path: &FieldPath,
    out: &mut Findings,
) {
    for (i, s) in subnets.iter().enumerate() {
        if let Err(e) = validate_ip_subnet(s) {
            out.error(&path.field("destinationSubnets").index(i), e);
        }
    }
    if let Some(p) = port.filter(|p| *p != 0)
        && let Err(e) = validate_port(p)
    {
        out.error(&path.field("port"), e);
    }
    check_labels(source_labels, &path.field("sourceLabels"), out);
    check_gateway_names(gateways, &path.field("gateways"), out);
}

fn check_http_route(r: &HttpRoute, in_delegate: bool, p: &FieldPath, out: &mut Findings) {
    let name = r.name.as_deref().unwrap_or_default();
    if !in_delegate && r.delegate.is_some() {
        if r.redirect.is_some() {
            out.error(
                &p.field("redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            );
        }
        if !r.route.is_empty() {
            out.error(
                &p.field("route"),
                format!("root HTTP route {name} must not specify route"),
            );
        }
    } else {
        if in_delegate && r.delegate.is_some() {
            out.error(
                &p.field("delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        check_route_conflicts(r, p, out);
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        out.error(p, "HTTP route cannot contain both mirror and mirrors");
    }
    for (i, m) in r.match_.iter().enumerate() {
        check_http_match(m, &p.field("match").index(i), out);
    }
    let mut authority: Option<String> = None;
    if let Some(a) = r.rewrite.as_ref().and_then(|rw| rw.authority.clone()) {
        authority = Some(a);
    }
    if let Some(h) = &r.headers {
        check_headers(h, &mut authority, &p.field("headers"), out);
    }
    if let Some(c) = &r.cors_policy {
        let cp = p.field("corsPolicy");
        for (i, o) in c.allow_origins.iter().enumerate() {
            let op = cp.field("allowOrigins").index(i);
            let empty = [&o.exact, &o.prefix, &o.regex]
                .iter()
                .any(|v| v.as_deref() == Some(""));
            if empty {
                out.error(&op, "'' is not a valid match type for CORS allow origins");
            }
            check_string_match_regex(o, "corsPolicy.allowOrigins", &op, out);
        }
        for (i, m) in c.allow_methods.iter().enumerate() {
            if !matches!(
                m.as_str(),
                "GET"
                    | "HEAD"
                    | "POST"
                    | "PUT"
                    | "PATCH"
                    | "DELETE"
                    | "CONNECT"
                    | "OPTIONS"
                    | "TRACE"
            ) {
                out.error(
                    &cp.field("allowMethods").index(i),
                    format!("{m:?} is not a supported HTTP method"),
                );
            }
        }
        for (field, list) in [
            ("allowHeaders", &c.allow_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            for (i, h) in list.iter().enumerate() {
                if h != "*"
                    && let Err(e) = validate_header_name(h)
                {
                    out.error(&cp.field(field).index(i), e);
                }
            }
        }
        if let Some(age) = &c.max_age {
            match validate_duration(age) {
                Err(e) => out.error(&cp.field("maxAge"), e),
                Ok(d) if d.subsec_nanos() > 0 => out.error(
                    &cp.field("maxAge"),
                    "max_age duration is accurate only to seconds precision",
                ),
                Ok(_) => {}
            }
        }
    }
    if let Some(f) = &r.fault {
        check_fault(f, &p.field("fault"), out);
    }
    if let Some(pct) = r.mirror_percent {
        if pct > 100 {
            out.error(
                &p.field("mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {pct})"),
            );
        }
        out.warn(
            &p.field("mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(v) = r.mirror_percentage.as_ref().and_then(|m| m.value) {
        check_mirror_percentage(v, "mirror_percentage", &p.field("mirrorPercentage"), out);
    }
    if let Some(m) = &r.mirror {
        check_destination(m, &p.field("mirror"), out);
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        let mp = p.field("mirrors").index(i);
        match &m.destination {
            None => out.error(
                &mp.field("destination"),
                "destination is required for mirrors",
            ),
            Some(d) => check_destination(d, &mp.field("destination"), out),
        }
        if let Some(v) = m.percentage.as_ref().and_then(|x| x.value) {
            check_mirror_percentage(v, "mirror percentage", &mp.field("percentage"), out);
        }
    }
    if let Some(rd) = &r.redirect {
        let rp = p.field("redirect");
        if rd.uri.is_none()
            && rd.authority.is_none()
            && rd.port.is_none()
            && rd.scheme.is_none()
            && rd.derive_port.is_none()
        {
            out.error(&rp, "redirect must specify URI, authority, scheme, or port");
        } else if let Some(code) = rd
            .redirect_code
            .filter(|c| *c != 0 && !(300..=399).contains(c))
        {
            out.error(
                &rp.field("redirectCode"),
                format!("{code} is not a valid redirect code, must be 3xx"),
            );
        } else if rd
            .scheme
            .as_deref()
            .is_some_and(|s| !matches!(s, "" | "http" | "https"))
        {
            out.error(
                &rp.field("scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
        } else if let Some(port) = rd.port.filter(|p| *p > 0)
            && let Err(e) = validate_port(port)
        {
            out.error(&rp.field("port"), e);
        }
    }
    if let Some(d) = &r.direct_response {
        let dp = p.field("directResponse");
        let len = d
            .body
            .as_ref()
            .map(|b| {
                b.string
                    .as_deref()
                    .or(b.bytes.as_deref())
                    .unwrap_or("")
                    .len()
            })
            .unwrap_or(0);
        if len > 1024 * 1024 {
            out.error(&dp.field("body"), "large direct_responses may impact control plane performance, must be less than 1MB");
        } else if len > 100 * 1024 {
            out.warn(
                &dp.field("body"),
                "large direct_responses may impact control plane performance",
            );
        }
        if let Some(status) = d.status {
            check_http_status(i64::from(status), &dp.field("status"), out);
        }
    }
    if let Some(rt) = &r.retries {
        check_retries(rt, &p.field("retries"), out);
    }
    if let Some(rw) = &r.rewrite {
        let wp = p.field("rewrite");
        if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
            out.error(
                &wp,
                "rewrite may only contain one of URI or UriRegexRewrite",
            );
        } else if rw.uri.is_none() && rw.uri_regex_rewrite.is_none() && rw.authority.is_none() {
            out.error(
                &wp,
                "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
            );
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            let rrp = wp.field("uriRegexRewrite");
            let m = rr.match_.as_deref().unwrap_or("");
            if m.is_empty() || rr.rewrite.as_deref().unwrap_or("").is_empty() {
                out.error(&rrp, "UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match fields to be specified");
            } else if let Err(e) = validate_regex(m, "HTTPRewrite.UriRegexRewrite.Match") {
                out.error(
                    &rrp.field("match"),
                    format!("UriRegexRewrite has errors: {e}"),
                );
            }
        }
    }
    check_duration(r.timeout.as_ref(), &p.field("timeout"), out);
    let rp = p.field("route");
    for (i, d) in r.route.iter().enumerate() {
        let dp = rp.index(i);
        match &d.destination {
            None => out.error(&dp.field("destination"), "destination is required"),
            Some(dest) => check_destination(dest, &dp.field("destination"), out),
        }
        if let Some(h) = &d.headers {
            let mut auth = authority.clone();
            check_headers(h, &mut auth, &dp.field("headers"), out);
        }
    }
    check_weights(r.route.iter().map(|d| d.weight), &rp, out);
}

fn check_route_conflicts(r: &HttpRoute, p: &FieldPath, out: &mut Findings) {
    if r.redirect.is_some() {
        if !r.route.is_empty() {
            out.error(p, "HTTP route cannot contain both route and redirect");
        }
        if r.fault.is_some() {
            out.error(p, "HTTP route cannot contain both fault and redirect");
        }
        if r.rewrite.is_some() {
            out.error(
                p,
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
        if r.direct_response.is_some() {
            out.error(
                p,
                "HTTP route rule cannot contain both direct_response and redirect",
            );
        }
    } else if r.direct_response.is_some() {
        if !r.route.is_empty() {
            out.error(
                p,
                "HTTP route cannot contain both route and direct_response",
            );
        }
        if r.fault.is_some() {
            out.error(
                p,
                "HTTP route cannot contain both fault and direct_response",
            );
        }
        if r.rewrite.is_some() {
            out.error(
                p,
                "HTTP route rule cannot contain both rewrite and direct_response",
            );
        }
    } else if r.route.is_empty() {
        out.error(p, "HTTP route, redirect or direct_response is required");
    }
}

fn check_http_match(m: &HttpMatchRequest, p: &FieldPath, out: &mut Findings) {
    for (field, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (k, v) in map {
            let hp = p.field(field).key(k);
            if let Err(e) = validate_header_name_or_claim(k) {
                out.error(&hp, e);
            }
            if field == "withoutHeaders" && v.regex.as_deref() == Some("*") {
                continue;
            }
            check_string_match(v, "headers", &hp, out);
        }
    }
    if let Some(u) = &m.uri {
        check_string_match_regex(u, "uri", &p.field("uri"), out);
    }
    let singles: [(&str, &Option<StringMatch>); 3] = [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ];
    for (field, sm) in singles {
        if let Some(sm) = sm {
            check_string_match(sm, field, &p.field(field), out);
        }
    }
    for (k, v) in &m.query_params {
        check_string_match(v, "queryParams", &p.field("queryParams").key(k), out);
    }
    if let Some(port) = m.port.filter(|p| *p != 0)
        && let Err(e) = validate_port(port)
    {
        out.error(&p.field("port"), e);
    }
    check_labels(&m.source_labels, &p.field("sourceLabels"), out);
    check_gateway_names(&m.gateways, &p.field("gateways"), out);
    if let Some(ns) = &m.source_namespace
        && !is_dns1123_label(ns)
    {
        out.error(
            &p.field("sourceNamespace"),
            format!("sourceNamespace match {ns} is invalid"),
        );
    }
}

fn check_headers(h: &Headers, authority: &mut Option<String>, p: &FieldPath, out: &mut Findings) {
    if let Some(req) = &h.request {
        check_header_ops(req, true, authority, &p.field("request"), out);
    }
    if let Some(resp) = &h.response {
        check_header_ops(resp, false, &mut None, &p.field("response"), out);
    }
}

fn check_header_ops(
    ops: &HeaderOperations,
    request: bool,
    authority: &mut Option<String>,
    p: &FieldPath,
    out: &mut Findings,
) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            let hp = p.field(field).key(name);
            let check = if request {
                validate_header_op_name_with_authority(name)
            } else {
                validate_header_op_name(name)
            };
            if let Err(e) = check {
                out.error(&hp, e);
            }
            if let Err(e) = validate_header_value(value) {
                out.error(&hp, e);
            }
            if request
                && (name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host"))
            {
                if let Some(prev) = authority.as_ref() {
                    out.error(
                        &hp,
                        format!("authority header cannot be set multiple times: have {prev:?}, attempting to set {value:?}"),
                    );
                }
                *authority = Some(value.clone());
            }
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        if let Err(e) = validate_header_op_name(name) {
            out.error(&p.field("remove").index(i), e);
        }
    }
}

const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn check_fault(f: &HttpFaultInjection, p: &FieldPath, out: &mut Findings) {
    if f.abort.is_none() && f.delay.is_none() {
        out.error(p, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = &f.abort {
        let ap = p.field("abort");
        if let Some(v) = a.percentage.as_ref().and_then(|x| x.value)
            && let Err(e) = validate_percentage(v)
        {
            out.error(&ap.field("percentage"), e);
        }
        if let Some(s) = &a.grpc_status {
            if !GRPC_STATUSES.contains(&s.as_str()) {
                out.error(
                    &ap.field("grpcStatus"),
                    format!("gRPC status {s:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"),
                );
            }
        } else if a.http2_error.is_some() {
            out.error(
                &ap.field("http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
        } else if let Some(code) = a.http_status {
            check_http_status(i64::from(code), &ap.field("httpStatus"), out);
        } else {
            out.warn(&ap, "abort configured, but error type not set");
        }
    }
    if let Some(d) = &f.delay {
        let dp = p.field("delay");
        if let Some(v) = d.percentage.as_ref().and_then(|x| x.value)
            && let Err(e) = validate_percentage(v)
        {
            out.error(&dp.field("percentage"), e);
        }
        check_duration(d.fixed_delay.as_ref(), &dp.field("fixedDelay"), out);
        if let Some(e) = &d.exponential_delay {
            check_duration(Some(e), &dp.field("exponentialDelay"), out);
            out.error(
                &dp.field("exponentialDelay"),
                "exponentialDelay not supported yet",
            );
        }
    }
}

fn check_http_status(code: i64, p: &FieldPath, out: &mut Findings) {
    if !(200..=600).contains(&code) {
        out.error(p, format!("HTTP status {code} is not in range 200-599"));
    }
}

fn check_mirror_percentage(v: f64, what: &str, p: &FieldPath, out: &mut Findings) {
    // Istio formats the value with Go's %f: six decimals.
    if v > 100.0 {
        out.error(
            p,
            format!("{what} must have a max value of 100 (it has {v:.6})"),
        );
    } else if v < 0.0 {
        out.error(
            p,
            format!("{what} must have a min value of 0 (it has {v:.6})"),
        );
    }
}

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// HTTP status codes with a standard reason phrase (as Go's `http.StatusText` knows them).
fn is_known_status(code: u16) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451
        | 500..=508 | 510 | 511)
}

fn check_retries(r: &HttpRetry, p: &FieldPath, out: &mut Findings) {
    let attempts = r.attempts.unwrap_or(0);
    if attempts < 0 {
        out.error(&p.field("attempts"), "attempts cannot be negative");
    }
    if attempts == 0
        && (r.per_try_timeout.is_some()
            || r.retry_on.is_some()
            || r.retry_remote_localities.is_some())
    {
        out.error(
            p,
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    check_duration(r.per_try_timeout.as_ref(), &p.field("perTryTimeout"), out);
    check_duration(r.backoff.as_ref(), &p.field("backoff"), out);
    if let Some(on) = &r.retry_on {
        for token in on.split(',') {
            let ok = RETRY_ON.contains(&token) || token.parse::<u16>().is_ok_and(is_known_status);
            if !ok {
                out.error(
                    &p.field("retryOn"),
                    format!("{token:?} is not a valid retryOn policy"),
                );
            }
        }
    }
}

/// A route destination: a host (no `*`), an optional subset and port.
pub fn check_destination(d: &Destination, p: &FieldPath, out: &mut Findings) {
    if d.host == "*" {
        out.error(&p.field("host"), "invalid destination host *");
    } else if let Err(e) = validate_wildcard_domain(&d.host) {
        out.error(&p.field("host"), e);
    }
    if let Some(s) = d.subset.as_deref().filter(|s| !s.is_empty())
        && !is_dns1123_label(s)
    {
        out.error(&p.field("subset"), format!("subset name is invalid: {s}"));
    }
    if let Some(port) = &d.port
        && let Err(e) = validate_port(port.number.unwrap_or(0))
    {
        out.error(&p.field("port").field("number"), e);
    }
}

fn check_route_destinations(routes: &[RouteDestination], p: &FieldPath, out: &mut Findings) {
    for (i, r) in routes.iter().enumerate() {
        match &r.destination {
            None => out.error(&p.index(i).field("destination"), "destination is required"),
            Some(d) => check_destination(d, &p.index(i).field("destination"), out),
        }
    }
    check_weights(routes.iter().map(|r| r.weight), p, out);
}

fn check_weights(weights: impl Iterator<Item = Option<i32>>, p: &FieldPath, out: &mut Findings) {
    let mut total: i64 = 0;
    let mut n = 0;
    for (i, w) in weights.enumerate() {
        let w = w.unwrap_or(0);
        if w < 0 {
            out.error(&p.index(i).field("weight"), format!("weight {w} < 0"));
        }
        total += i64::from(w);
        n += 1;
    }
    if n > 1 && total == 0 {
        out.error(p, "total destination weight = 0");
    }
}

/// A match's name and its content (without the name), for comparing matches.
type Match<'a> = (Option<&'a str>, serde_json::Value);
/// A rule's name and its matches.
type Rule<'a> = (Option<&'a str>, Vec<Match<'a>>);

/// Istio's warnings for rules that can never match: a catch-all rule that is not last, and
/// matches identical to earlier ones.
fn warn_unreachable(s: &VirtualServiceSpec, spec: &FieldPath, out: &mut Findings) {
    fn id(name: Option<&str>, i: usize) -> String {
        name.map(|n| format!("{n:?}"))
            .unwrap_or_else(|| format!("#{i}"))
    }
    let http: Vec<Rule<'_>> = s
        .http
        .iter()
        .map(|r| {
            let ms = r
                .match_
                .iter()
                .map(|m| (m.name.as_deref(), match_key(m)))
                .collect();
            (r.name.as_deref(), ms)
        })
        .collect();
    let tcp = s.tcp.iter().map(|r| {
        (
            None,
            r.match_
                .iter()
                .map(|m| (None, serde_json::to_value(m).unwrap_or_default()))
                .collect(),
        )
    });
    let tls = s.tls.iter().map(|r| {
        (
            None,
            r.match_
                .iter()
                .map(|m| (None, serde_json::to_value(m).unwrap_or_default()))
                .collect(),
        )
    });
    let groups: [(&str, Vec<Rule<'_>>); 3] = [
        ("http", http),
        ("tcp", tcp.collect()),
        ("tls", tls.collect()),
    ];
    for (field, rules) in groups {
        let mut catch_all_seen = false;
        let mut earlier: Vec<(String, String, serde_json::Value)> = Vec::new();
        for (i, (name, matches)) in rules.iter().enumerate() {
            let rid = id(*name, i);
            let p = spec.field(field).index(i);
            if matches.is_empty() {
                if catch_all_seen {
                    out.warn(&p, format!("virtualService rule {rid} not used (only the last rule can have no matches)"));
                }
                catch_all_seen = true;
                continue;
            }
            let mut duplicates = 0;
            for (j, (mname, key)) in matches.iter().enumerate() {
                if let Some((drule, _, _)) = earlier.iter().find(|(_, _, k)| k == key) {
                    duplicates += 1;
                    out.warn(
                        &p.field("match").index(j),
                        format!(
                            "virtualService rule {rid} match {} is not used (duplicate/overlapping match in rule {drule})",
                            id(*mname, j)
                        ),
                    );
                }
            }
            if duplicates == matches.len() {
                out.warn(
                    &p,
                    format!("virtualService rule {rid} not used (all matches used by prior rules)"),
                );
            }
            for (j, (mname, key)) in matches.iter().enumerate() {
                earlier.push((rid.clone(), id(*mname, j), key.clone()));
            }
        }
    }
}

fn match_key(m: &HttpMatchRequest) -> serde_json::Value {
    let mut m = m.clone();
    m.name = None;
    serde_json::to_value(m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(spec: serde_json::Value) -> Vec<String> {
        let vs: VirtualService = serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "vs", "namespace": "default"}, "spec": spec
        }))
        .unwrap();
        let mut out = Findings::default();
        validate(&vs, &FieldPath::root().field("spec"), &mut out);
        out.into_vec()
            .into_iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect()
    }

    #[test]
    fn a_valid_virtual_service_has_no_findings() {
        let f = findings(json!({
            "hosts": ["reviews"], "gateways": ["istio-system/gw", "mesh"],
            "http": [
                {"match": [{"uri": {"prefix": "/api"}, "headers": {"x-version": {"exact": "v2"}}}],
                 "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                 "timeout": "1.5s", "retries": {"attempts": 3, "perTryTimeout": "100ms", "retryOn": "5xx,connect-failure,503"}},
                {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                           {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}]}
            ]
        }));
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn route_errors() {
        let f = findings(json!({
            "hosts": ["a.example.com", "*.example.com"],
            "http": [
                {"route": [{"destination": {"host": "*"}, "weight": -1}, {"destination": {"host": "b", "subset": "V_1"}, "weight": 1}],
                 "redirect": {"uri": "/x"}, "timeout": "0s",
                 "retries": {"attempts": 2, "retryOn": "5xx,bogus"},
                 "match": [{"uri": {"regex": "(?=x)"}, "headers": {"bad header": {"prefix": ""}}}],
                 "fault": {"abort": {"httpStatus": 700}}},
            ]
        }));
        let want = [
            "spec.hosts: duplicate hosts in virtual service: a.example.com & *.example.com",
            "spec.http[0]: HTTP route cannot contain both route and redirect",
            "spec.http[0]: HTTP route cannot contain both fault and redirect",
            "spec.http[0].match[0].headers[bad header]: header name bad header is not a valid header name",
            "spec.http[0].match[0].headers[bad header].prefix: \"headers\": prefix string match should not be empty",
            "spec.http[0].fault.abort.httpStatus: HTTP status 700 is not in range 200-599",
            "spec.http[0].retries.retryOn: \"bogus\" is not a valid retryOn policy",
            "spec.http[0].timeout: duration must be greater than 1ms",
            "spec.http[0].route[0].destination.host: invalid destination host *",
            "spec.http[0].route[1].destination.subset: subset name is invalid: V_1",
            "spec.http[0].route[0].weight: weight -1 < 0",
        ];
        for w in want {
            assert!(f.iter().any(|x| x == w), "missing {w:?} in {f:#?}");
        }
        assert!(
            f.iter().any(
                |x| x.starts_with("spec.http[0].match[0].uri.regex: \"uri\": ")
                    && x.contains("RE2")
            ),
            "{f:#?}"
        );
    }

    #[test]
    fn delegate_tls_and_gateway_rules() {
        let f = findings(
            json!({"gateways": ["gw.istio-system", "/x"], "tcp": [{"route": [{"destination": {"host": "db"}}]}]}),
        );
        assert!(
            f.contains(
                &"spec.gateways: delegate virtual service must have no gateways specified".into()
            ),
            "{f:#?}"
        );
        assert!(
            f.contains(
                &"spec.tcp: delegate virtual service must have no tcp route specified".into()
            ),
            "{f:#?}"
        );
        assert!(f.contains(&"spec.gateways[0]: using legacy gatewayName format \"gw.istio-system\"; prefer the <namespace>/<name> format: \"istio-system/gw\"".into()), "{f:#?}");
        assert!(
            f.contains(
                &"spec.gateways[1]: config namespace and gateway name cannot be empty".into()
            ),
            "{f:#?}"
        );
        let f = findings(json!({"hosts": ["db.example.com"], "gateways": ["gw"],
            "tls": [{"match": [{"sniHosts": ["other.example.com"], "port": 5432}], "route": [{"destination": {"host": "db"}}]}]}));
        assert_eq!(
            f,
            vec![
                "spec.tls[0].match[0].sniHosts[0]: SNI host \"other.example.com\" is not a compatible subset of any of the virtual service hosts: [db.example.com]"
            ]
        );
        let f = findings(
            json!({"hosts": ["*"], "http": [{"route": [{"destination": {"host": "a"}}]}]}),
        );
        assert_eq!(
            f,
            vec![
                "spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway"
            ]
        );
    }

    #[test]
    fn messages_follow_istio_and_stay_on_one_line() {
        let f = findings(json!({"hosts": ["a"], "gateways": ["mesh"], "http": [
            {"match": [{"headers": {"@request.auth.claims.group": {"exact": "x"}}}],
             "route": [{"destination": {"host": "a"}}]},
            {"rewrite": {"uriRegexRewrite": {"match": "^/(.*"}}, "route": [{"destination": {"host": "a"}}],
             "mirrors": [{"destination": {"host": "b"}, "percentage": {"value": 150}}]}
        ]}));
        assert!(f.contains(&"spec.http[0].match[0].headers[@request.auth.claims.group]: JWT claim based routing (key: @request.auth.claims.group) is only supported for gateway, found no gateways: [mesh]".to_string()), "{f:#?}");
        assert!(f.contains(&"spec.http[1].rewrite.uriRegexRewrite: UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match fields to be specified".to_string()), "{f:#?}");
        assert!(f.contains(&"spec.http[1].mirrors[0].percentage: mirror percentage must have a max value of 100 (it has 150.000000)".to_string()), "{f:#?}");
        assert!(f.iter().all(|m| !m.contains('\n')), "{f:#?}");
    }

    #[test]
    fn unreachable_rules_warn() {
        let f = findings(json!({"hosts": ["a"], "http": [
            {"route": [{"destination": {"host": "a"}}]},
            {"match": [{"uri": {"prefix": "/x"}}], "route": [{"destination": {"host": "a"}}]},
            {"name": "again", "match": [{"uri": {"prefix": "/x"}}], "route": [{"destination": {"host": "a"}}]},
            {"route": [{"destination": {"host": "a"}}]}
        ]}));
        assert_eq!(
            f,
            vec![
                "spec.http[2].match[0]: virtualService rule \"again\" match #0 is not used (duplicate/overlapping match in rule #1)",
                "spec.http[2]: virtualService rule \"again\" not used (all matches used by prior rules)",
                "spec.http[3]: virtualService rule #3 not used (only the last rule can have no matches)",
            ]
        );
    }
}
