//! Sidecar: ingress listeners (ports, binds, default endpoints, TLS, connection pools),
//! egress listeners (ports, Unix sockets, `namespace/host` entries) and the outbound
//! traffic policy's egress proxy.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::Findings;
use crate::generated::networking::{
    CaptureMode, IstioEgressListener, IstioIngressListener, OutboundTrafficPolicy,
    OutboundTrafficPolicyMode, ServerTlsMode, ServerTlsSettings, SidecarPort,
};
use crate::path::FieldPath;
use crate::resource::Sidecar;

use super::common::{
    check_label_selector, is_http_protocol, validate_fqdn, validate_ip, validate_port,
    validate_port_name, validate_protocol, validate_unix_address,
};
use super::destination_rule::check_connection_pool;
use super::gateway::{check_namespace_slash_host, check_server_tls_options};
use super::virtual_service::check_destination;

const SELECTOR_WITHOUT_LABELS: &str = "sidecar: workload selector specified without labels, will be applied to all services in namespace";
const UNIX_PREFIX: &str = "unix://";
const DUPLICATE_IP_PORT: &str = "sidecar: ports on IP bound listeners must be unique";

/// Validates a Sidecar.
pub fn validate(sc: &Sidecar, spec: &FieldPath, out: &mut Findings) {
    let s = &sc.spec;
    if let Some(ws) = &s.workload_selector
        && !check_label_selector(
            &ws.labels,
            &spec.field("workloadSelector"),
            SELECTOR_WITHOUT_LABELS,
            out,
        )
    {
        return;
    }
    if s.egress.is_empty()
        && s.ingress.is_empty()
        && s.outbound_traffic_policy.is_none()
        && s.inbound_connection_pool.is_none()
    {
        out.error(spec, "sidecar: empty configuration provided");
        return;
    }
    let mut ports = BTreeSet::new();
    for (i, ingress) in s.ingress.iter().enumerate() {
        check_ingress(ingress, &mut ports, &spec.field("ingress").index(i), out);
    }
    if let Some(cp) = &s.inbound_connection_pool {
        check_connection_pool(cp, &spec.field("inboundConnectionPool"), out);
    }
    let namespace = sc.metadata.namespace.as_deref().unwrap_or_default();
    check_egress(&s.egress, namespace, spec, out);
    if let Some(tp) = &s.outbound_traffic_policy {
        check_outbound_traffic_policy(tp, &spec.field("outboundTrafficPolicy"), out);
    }
}

/// One ingress listener. `ports` collects the port numbers seen so far.
fn check_ingress(
    ingress: &IstioIngressListener,
    ports: &mut BTreeSet<u32>,
    path: &FieldPath,
    out: &mut Findings,
) {
    let Some(port) = &ingress.port else {
        out.error(
            &path.field("port"),
            "sidecar: port is required for ingress listeners",
        );
        return;
    };
    let pp = path.field("port");
    if port.target_port.is_some_and(|t| t > 0) {
        out.error(
            &pp.field("targetPort"),
            "targetPort has no impact on Sidecars",
        );
    }
    check_port_name(port, &pp, out);
    if let Err(e) = validate_protocol(port.protocol.as_deref().unwrap_or_default()) {
        out.error(&pp.field("protocol"), e);
    }
    let number = port.number.unwrap_or(0);
    if let Err(e) = validate_port(number) {
        out.error(&pp.field("number"), e);
    }
    check_ip_bind(ingress.bind.as_deref(), &path.field("bind"), out);
    if !ports.insert(number) {
        out.error(&pp.field("number"), DUPLICATE_IP_PORT);
    }
    if let Some(endpoint) = ingress
        .default_endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
    {
        check_default_endpoint(endpoint, &path.field("defaultEndpoint"), out);
    }
    if let Some(tls) = &ingress.tls {
        check_ingress_tls(tls, &path.field("tls"), out);
    }
    if let Some(cp) = &ingress.connection_pool {
        let cpp = path.field("connectionPool");
        check_connection_pool(cp, &cpp, out);
        let protocol = port.protocol.as_deref().unwrap_or_default();
        if cp.http.is_some() && !is_http_protocol(protocol) {
            out.warn(
                &cpp.field("http"),
                format!(
                    "sidecar: HTTP connection pool settings are configured for port {number} ({:?}) but its protocol is not HTTP ({protocol}); only TCP settings will apply",
                    port.name.as_deref().unwrap_or_default()
                ),
            );
        }
    }
}

/// A port name is optional; when set it must be a DNS label.
fn check_port_name(port: &SidecarPort, pp: &FieldPath, out: &mut Findings) {
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty())
        && let Err(e) = validate_port_name(name)
    {
        out.error(&pp.field("name"), e);
    }
}

/// A bind address of an IP listener, when set.
fn check_ip_bind(bind: Option<&str>, path: &FieldPath, out: &mut Findings) {
    if let Some(bind) = bind.filter(|b| !b.is_empty())
        && let Err(e) = validate_ip(bind)
    {
        out.error(path, e);
    }
}

/// `defaultEndpoint`: a Unix socket, or a loopback/any address with a port.
fn check_default_endpoint(endpoint: &str, path: &FieldPath, out: &mut Findings) {
    if let Some(socket) = endpoint.strip_prefix(UNIX_PREFIX) {
        if let Err(e) = validate_unix_address(socket) {
            out.error(path, e);
        }
        return;
    }
    let (host, port) = match split_host_port(endpoint) {
        Ok(parts) => parts,
        Err(e) => {
            out.error(path, e);
            ("", "")
        }
    };
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        out.error(
            path,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
        );
    }
    match atoi(port) {
        Err(e) => out.error(
            path,
            format!("sidecar: defaultEndpoint port ({port}) is not a number: {e}"),
        ),
        Ok(n) => {
            let checked = u32::try_from(n)
                .map_err(|_| format!("port number {n} must be in the range 1..65535"))
                .and_then(validate_port);
            if let Err(e) = checked {
                out.error(path, e);
            }
        }
    }
}

/// Go's `net.SplitHostPort`: `host:port` or `[host]:port`, with Go's messages.
fn split_host_port(addr: &str) -> Result<(&str, &str), String> {
    const MISSING_PORT: &str = "missing port in address";
    const TOO_MANY_COLONS: &str = "too many colons in address";
    let fail = |why: &str| Err(format!("address {addr}: {why}"));
    let Some(colon) = addr.rfind(':') else {
        return fail(MISSING_PORT);
    };
    // `no_open` and `no_close`: where a stray '[' or ']' would start to be unexpected.
    let (host, no_open, no_close) = if addr.starts_with('[') {
        let Some(end) = addr.find(']') else {
            return fail("missing ']' in address");
        };
        if end + 1 == addr.len() {
            return fail(MISSING_PORT);
        }
        if end + 1 != colon {
            let colon_follows = addr.as_bytes().get(end + 1) == Some(&b':');
            return fail(if colon_follows {
                TOO_MANY_COLONS
            } else {
                MISSING_PORT
            });
        }
        (&addr[1..end], 1, end + 1)
    } else {
        let host = &addr[..colon];
        if host.contains(':') {
            return fail(TOO_MANY_COLONS);
        }
        (host, 0, 0)
    };
    if addr[no_open..].contains('[') {
        return fail("unexpected '[' in address");
    }
    if addr[no_close..].contains(']') {
        return fail("unexpected ']' in address");
    }
    Ok((host, &addr[colon + 1..]))
}

/// Go's `strconv.Atoi`, with its error messages.
fn atoi(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.Atoi: parsing {s:?}: invalid syntax"));
    }
    s.parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {s:?}: value out of range"))
}

/// TLS termination on a sidecar ingress listener: no SANs, redirects, credentials, or
/// modes that only make sense on gateways.
fn check_ingress_tls(tls: &ServerTlsSettings, path: &FieldPath, out: &mut Findings) {
    if !tls.subject_alt_names.is_empty() {
        out.error(
            &path.field("subjectAltNames"),
            "sidecar: subjectAltNames is not supported in ingress tls",
        );
    }
    if tls.https_redirect == Some(true) {
        out.error(
            &path.field("httpsRedirect"),
            "sidecar: httpsRedirect is not supported",
        );
    }
    if tls
        .credential_name
        .as_deref()
        .is_some_and(|c| !c.is_empty())
    {
        out.error(
            &path.field("credentialName"),
            "sidecar: credentialName is not currently supported",
        );
    }
    if !tls.credential_names.is_empty() {
        out.error(
            &path.field("credentialNames"),
            "sidecar: credentialNames is not currently supported",
        );
    }
    if !tls.tls_certificates.is_empty() {
        out.error(
            &path.field("tlsCertificates"),
            "sidecar: tls_certificates is not currently supported",
        );
    }
    if let Some(mode @ (ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)) = tls.mode {
        out.error(
            &path.field("mode"),
            format!(
                "configuration is invalid: cannot set mode to {} in sidecar ingress tls",
                mode.as_str()
            ),
        );
    }
    check_server_tls_options(tls, path, out);
}

/// The egress listeners: ports and binds, the catch-all listener, and hosts.
fn check_egress(
    egress: &[IstioEgressListener],
    namespace: &str,
    spec: &FieldPath,
    out: &mut Findings,
) {
    let mut ports = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    for (i, listener) in egress.iter().enumerate() {
        let p = spec.field("egress").index(i);
        match &listener.port {
            // Only the last listener may omit the port (Istio's "only one listener with
            // empty port" error cannot trigger once this one holds).
            None if i + 1 == egress.len() => {}
            None => out.error(
                &p,
                "sidecar: the egress listener with empty port should be the last listener in the list",
            ),
            Some(port) => check_egress_port(listener, port, &mut ports, &mut sockets, &p, out),
        }
        check_egress_hosts(&listener.hosts, namespace, &p.field("hosts"), out);
    }
}

/// The port, bind and capture mode of an egress listener; a port 0 listens on a Unix socket.
fn check_egress_port<'a>(
    listener: &'a IstioEgressListener,
    port: &SidecarPort,
    ports: &mut BTreeSet<u32>,
    sockets: &mut BTreeSet<&'a str>,
    path: &FieldPath,
    out: &mut Findings,
) {
    let pp = path.field("port");
    if port.target_port.is_some_and(|t| t > 0) {
        out.error(
            &pp.field("targetPort"),
            "targetPort has no impact on Sidecars",
        );
    }
    check_port_name(port, &pp, out);
    if let Err(e) = validate_protocol(port.protocol.as_deref().unwrap_or_default()) {
        out.error(&pp.field("protocol"), e);
    }
    let bind = listener.bind.as_deref().unwrap_or_default();
    let bind_path = path.field("bind");
    let number = port.number.unwrap_or(0);
    if number == 0 {
        match bind.strip_prefix(UNIX_PREFIX) {
            None => out.error(
                &bind_path,
                "sidecar: ports with 0 value must have a unix domain socket bind address",
            ),
            Some(socket) => {
                if let Err(e) = validate_unix_address(socket) {
                    out.error(&bind_path, e);
                }
            }
        }
        let capture = listener.capture_mode.unwrap_or_default();
        if !matches!(capture, CaptureMode::Default | CaptureMode::None) {
            out.error(
                &path.field("captureMode"),
                "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
            );
        }
        if !sockets.insert(bind) {
            out.error(
                &bind_path,
                "sidecar: unix domain socket values for listeners must be unique",
            );
        }
    } else {
        if let Err(e) = validate_port(number) {
            out.error(&pp.field("number"), e);
        }
        check_ip_bind(Some(bind), &bind_path, out);
        if !ports.insert(number) {
            out.error(&pp.field("number"), DUPLICATE_IP_PORT);
        }
    }
}

/// `namespace/host` entries of an egress listener, with warnings for duplicates.
fn check_egress_hosts(hosts: &[String], namespace: &str, path: &FieldPath, out: &mut Findings) {
    if hosts.is_empty() {
        out.error(
            path,
            "sidecar: egress listener must contain at least one host",
        );
        return;
    }
    let mut by_namespace: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (i, host) in hosts.iter().enumerate() {
        let p = path.index(i);
        if let Some((ns, name)) = host.split_once('/') {
            let ns = if ns == "." { namespace } else { ns };
            let seen = by_namespace.entry(ns).or_default();
            let duplicate = if name == "*" {
                !seen.is_empty()
            } else {
                seen.contains(name) || seen.contains("*")
            };
            if duplicate {
                out.warn(&p, format!("duplicated egress host: {host}"));
            }
            seen.insert(name);
        }
        check_namespace_slash_host(host, false, &p, out);
    }
    let all = by_namespace.get("*").is_some_and(|s| s.contains("*"));
    if all && by_namespace.len() != 1 {
        out.warn(
            path,
            "`*/*` host select all resources, no other hosts can be added",
        );
    }
}

/// `outboundTrafficPolicy.egressProxy`: only with ALLOW_ANY, and a full destination.
fn check_outbound_traffic_policy(tp: &OutboundTrafficPolicy, path: &FieldPath, out: &mut Findings) {
    let Some(proxy) = &tp.egress_proxy else {
        return;
    };
    let pp = path.field("egressProxy");
    if tp.mode.unwrap_or_default() != OutboundTrafficPolicyMode::AllowAny {
        out.error(
            &path.field("mode"),
            "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
        );
        return;
    }
    if let Err(e) = validate_fqdn(&proxy.host) {
        out.error(&pp.field("host"), e);
    }
    if proxy.port.is_none() {
        out.error(
            &pp.field("port"),
            "sidecar: egress_proxy port must be non-nil",
        );
        return;
    }
    check_destination(proxy, &pp, out);
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::validate::testing;

    const RESOURCE: testing::Resource<'static> =
        ("networking.istio.io/v1", "Sidecar", "sc", "prod");

    fn check(cases: &[(Value, &[&str], &[&str])]) {
        testing::check::<Sidecar>(RESOURCE, validate, cases)
    }

    #[test]
    fn valid_sidecar() {
        check(&[(
            json!({
                "workloadSelector": {"labels": {"app": "reviews"}},
                "ingress": [{
                    "port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                    "defaultEndpoint": "127.0.0.1:8080",
                    "connectionPool": {"http": {"maxRetries": 3}}
                }, {
                    "port": {"number": 9443, "protocol": "HTTPS", "name": "https"},
                    "defaultEndpoint": "[::1]:8443",
                    "tls": {"mode": "SIMPLE", "serverCertificate": "/etc/cert.pem", "privateKey": "/etc/key.pem"}
                }],
                "egress": [
                    {"port": {"number": 0, "protocol": "HTTP"}, "bind": "unix:///var/run/egress.sock", "hosts": ["./*"]},
                    {"hosts": ["./*", "istio-system/*"]}
                ],
                "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}
            }),
            &[],
            &[],
        )]);
    }

    #[test]
    fn selector_and_empty_configuration() {
        check(&[
            (
                json!({"workloadSelector": {"labels": {"": "x"}}}),
                &["spec.workloadSelector.labels[]: empty key is not supported in selector: \"=x\""],
                &[],
            ),
            (
                json!({"workloadSelector": {}}),
                &["spec: sidecar: empty configuration provided"],
                &[
                    "spec.workloadSelector: sidecar: workload selector specified without labels, will be applied to all services in namespace",
                ],
            ),
            (
                json!({"inboundConnectionPool": {}}),
                &["spec.inboundConnectionPool: connection pool must have at least one field"],
                &[],
            ),
        ]);
    }

    #[test]
    fn ingress_ports_and_binds() {
        check(&[(
            json!({"ingress": [
                {"defaultEndpoint": "127.0.0.1:80"},
                {"port": {"number": 80, "protocol": "FOO", "name": "bad_name", "targetPort": 8080}, "bind": "not-an-ip"},
                {"port": {"number": 80, "protocol": "HTTP"}},
                {"port": {"number": 0, "protocol": "HTTP"}}
            ]}),
            &[
                "spec.ingress[0].port: sidecar: port is required for ingress listeners",
                "spec.ingress[1].port.targetPort: targetPort has no impact on Sidecars",
                "spec.ingress[1].port.name: invalid port name: bad_name",
                "spec.ingress[1].port.protocol: unsupported protocol: FOO",
                "spec.ingress[1].bind: not-an-ip is not a valid IP",
                "spec.ingress[2].port.number: sidecar: ports on IP bound listeners must be unique",
                "spec.ingress[3].port.number: port number 0 must be in the range 1..65535",
            ],
            &[],
        )]);
    }

    #[test]
    fn ingress_default_endpoints() {
        let p = |n: u32, e: &str| json!({"port": {"number": n, "protocol": "HTTP"}, "defaultEndpoint": e});
        check(&[(
            json!({"ingress": [
                p(1, "unix://relative"),
                p(2, "10.0.0.1:80"),
                p(3, "127.0.0.1:http"),
                p(4, "0.0.0.0:70000"),
                p(5, "localhost"),
                p(6, "unix:///var/run/app.sock"),
                p(7, "[::]:8080")
            ]}),
            &[
                "spec.ingress[0].defaultEndpoint: relative is not an absolute path to a file",
                "spec.ingress[1].defaultEndpoint: sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
                "spec.ingress[2].defaultEndpoint: sidecar: defaultEndpoint port (http) is not a number: strconv.Atoi: parsing \"http\": invalid syntax",
                "spec.ingress[3].defaultEndpoint: port number 70000 must be in the range 1..65535",
                "spec.ingress[4].defaultEndpoint: address localhost: missing port in address",
                "spec.ingress[4].defaultEndpoint: sidecar: defaultEndpoint port () is not a number: strconv.Atoi: parsing \"\": invalid syntax",
            ],
            &[],
        )]);
    }

    #[test]
    fn split_host_port_like_go() {
        assert_eq!(split_host_port("127.0.0.1:80"), Ok(("127.0.0.1", "80")));
        assert_eq!(split_host_port("[::1]:80"), Ok(("::1", "80")));
        assert_eq!(split_host_port(":80"), Ok(("", "80")));
        assert_eq!(
            split_host_port("::1:80"),
            Err("address ::1:80: too many colons in address".into())
        );
        assert_eq!(
            split_host_port("[::1:80"),
            Err("address [::1:80: missing ']' in address".into())
        );
        assert_eq!(
            split_host_port("[::1]"),
            Err("address [::1]: missing port in address".into())
        );
        assert_eq!(
            split_host_port("[::1]x:80"),
            Err("address [::1]x:80: missing port in address".into())
        );
        assert_eq!(
            split_host_port("a]:80"),
            Err("address a]:80: unexpected ']' in address".into())
        );
        assert!(atoi("-1").is_ok_and(|n| n == -1));
        assert_eq!(
            atoi("99999999999999999999"),
            Err("strconv.Atoi: parsing \"99999999999999999999\": value out of range".into())
        );
    }

    #[test]
    fn ingress_tls_and_connection_pool() {
        check(&[
            (
                json!({"ingress": [{
                    "port": {"number": 9443, "protocol": "TCP", "name": "tcp"},
                    "tls": {
                        "mode": "ISTIO_MUTUAL", "subjectAltNames": ["a"], "httpsRedirect": true,
                        "credentialName": "c", "credentialNames": ["c"],
                        "tlsCertificates": [{"serverCertificate": "/a", "privateKey": "/b"}]
                    },
                    "connectionPool": {"http": {"maxRetries": -1}}
                }]}),
                &[
                    "spec.ingress[0].tls.subjectAltNames: sidecar: subjectAltNames is not supported in ingress tls",
                    "spec.ingress[0].tls.httpsRedirect: sidecar: httpsRedirect is not supported",
                    "spec.ingress[0].tls.credentialName: sidecar: credentialName is not currently supported",
                    "spec.ingress[0].tls.credentialNames: sidecar: credentialNames is not currently supported",
                    "spec.ingress[0].tls.tlsCertificates: sidecar: tls_certificates is not currently supported",
                    "spec.ingress[0].tls.mode: configuration is invalid: cannot set mode to ISTIO_MUTUAL in sidecar ingress tls",
                    "spec.ingress[0].tls.credentialName: ISTIO_MUTUAL TLS cannot have associated credentialName",
                    "spec.ingress[0].connectionPool.http.maxRetries: max retries must be non-negative",
                ],
                &[
                    "spec.ingress[0].connectionPool.http: sidecar: HTTP connection pool settings are configured for port 9443 (\"tcp\") but its protocol is not HTTP (TCP); only TCP settings will apply",
                ],
            ),
            (
                json!({"ingress": [{"port": {"number": 9443, "protocol": "TLS"}, "tls": {"mode": "AUTO_PASSTHROUGH"}}]}),
                &[
                    "spec.ingress[0].tls.mode: configuration is invalid: cannot set mode to AUTO_PASSTHROUGH in sidecar ingress tls",
                ],
                &[],
            ),
        ]);
    }

    #[test]
    fn egress_listeners() {
        check(&[(
            json!({"egress": [
                {"hosts": ["./*"]},
                {"port": {"number": 80, "protocol": "HTTP", "name": "Bad_Name", "targetPort": 8080}, "bind": "nope", "hosts": ["./*"]},
                {"port": {"number": 80, "protocol": "HTTP"}, "hosts": ["./*"]},
                {"port": {"number": 0, "protocol": "HTTP"}, "bind": "10.0.0.1", "captureMode": "IPTABLES", "hosts": ["./*"]},
                {"port": {"number": 0, "protocol": "FOO"}, "bind": "unix://rel", "hosts": ["./*"]},
                {"port": {"number": 0}, "bind": "unix://rel", "hosts": ["./*"]},
                {"port": {"number": 90}},
                {"hosts": ["./*"]}
            ]}),
            &[
                "spec.egress[0]: sidecar: the egress listener with empty port should be the last listener in the list",
                "spec.egress[1].port.targetPort: targetPort has no impact on Sidecars",
                "spec.egress[1].port.name: invalid port name: Bad_Name",
                "spec.egress[1].bind: nope is not a valid IP",
                "spec.egress[2].port.number: sidecar: ports on IP bound listeners must be unique",
                "spec.egress[3].bind: sidecar: ports with 0 value must have a unix domain socket bind address",
                "spec.egress[3].captureMode: sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                "spec.egress[4].port.protocol: unsupported protocol: FOO",
                "spec.egress[4].bind: rel is not an absolute path to a file",
                "spec.egress[5].bind: rel is not an absolute path to a file",
                "spec.egress[5].bind: sidecar: unix domain socket values for listeners must be unique",
                "spec.egress[6].hosts: sidecar: egress listener must contain at least one host",
            ],
            &[],
        )]);
    }

    #[test]
    fn egress_hosts() {
        check(&[(
            json!({"egress": [
                {"port": {"number": 80}, "hosts": ["prod/a.example.com", "./a.example.com", "prod/*", "*/*", "foo.com", "bad/host"]},
                {"hosts": ["*/*", "*/a.example.com"]}
            ]}),
            &[
                "spec.egress[0].hosts[4]: host must be of form namespace/dnsName",
                "spec.egress[0].hosts[5]: short names (non FQDN) are not allowed",
            ],
            &[
                "spec.egress[0].hosts[1]: duplicated egress host: ./a.example.com",
                "spec.egress[0].hosts[2]: duplicated egress host: prod/*",
                "spec.egress[0].hosts: `*/*` host select all resources, no other hosts can be added",
                "spec.egress[1].hosts[1]: duplicated egress host: */a.example.com",
            ],
        )]);
    }

    #[test]
    fn egress_proxy() {
        check(&[
            (
                json!({"outboundTrafficPolicy": {"egressProxy": {"host": "proxy.example.com", "port": {"number": 3128}}}}),
                &[
                    "spec.outboundTrafficPolicy.mode: sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
                ],
                &[],
            ),
            (
                json!({"outboundTrafficPolicy": {"mode": "ALLOW_ANY", "egressProxy": {"host": "bad_host"}}}),
                &[
                    "spec.outboundTrafficPolicy.egressProxy.host: domain name \"bad_host\" invalid (label \"bad_host\" invalid)",
                    "spec.outboundTrafficPolicy.egressProxy.port: sidecar: egress_proxy port must be non-nil",
                ],
                &[],
            ),
            (
                json!({"outboundTrafficPolicy": {"mode": "ALLOW_ANY", "egressProxy": {"host": "proxy.example.com", "port": {"number": 3128}}}}),
                &[],
                &[],
            ),
        ]);
    }
}
