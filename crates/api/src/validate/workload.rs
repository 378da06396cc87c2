//! WorkloadEntry and WorkloadGroup: endpoint addresses, ports and labels, and the readiness
//! probe of a group. ServiceEntry endpoints are workload entries too, and reuse these rules.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::{Findings, Severity};
use crate::generated::networking::{
    HttpHealthCheckConfig, ReadinessProbe, WorkloadEntrySpec, WorkloadGroupSpec,
};
use crate::path::FieldPath;

use super::common::{
    check_labels, is_ip, validate_fqdn, validate_header_name, validate_port, validate_port_name,
    validate_unix_address,
};

/// The scheme of Unix domain socket addresses.
const UNIX_PREFIX: &str = "unix://";

/// Validates a WorkloadEntry: its address may be an IP, a host name or a Unix socket.
pub fn validate_workload_entry(we: &WorkloadEntrySpec, spec: &FieldPath, out: &mut Findings) {
    check_workload_entry_fields(we, None, true, spec, out);
}

/// The rules of one workload entry, standalone or as a ServiceEntry endpoint.
///
/// `service_ports` are the port names of the enclosing ServiceEntry (`None` for a
/// WorkloadEntry): endpoint ports must use them, and a Unix socket endpoint needs exactly
/// one. `allow_fqdn` is false for STATIC resolution, where the address must be an IP.
pub fn check_workload_entry_fields(
    we: &WorkloadEntrySpec,
    service_ports: Option<&BTreeSet<&str>>,
    allow_fqdn: bool,
    path: &FieldPath,
    out: &mut Findings,
) {
    let addr = we.address.as_deref().unwrap_or_default();
    let addr_path = path.field("address");
    if addr.is_empty() {
        let network = we.network.as_deref().unwrap_or_default();
        if network.is_empty() {
            out.error(&addr_path, "address is required");
            return;
        }
        out.warn(
            &addr_path,
            format!("address is unset with network {network:?}"),
        );
    }
    let socket = addr.strip_prefix(UNIX_PREFIX);
    if let Some(socket) = socket {
        if let Err(e) = validate_unix_address(socket) {
            out.error(&addr_path, e);
        }
        if !we.ports.is_empty() {
            out.error(
                &path.field("ports"),
                format!("unix endpoint {addr} must not include ports"),
            );
        }
    } else if !addr.is_empty() && !is_ip(addr) {
        if !allow_fqdn {
            out.error(
                &addr_path,
                format!("endpoint address {addr:?} is not a valid IP address"),
            );
        } else if validate_fqdn(addr).is_err() {
            out.error(
                &addr_path,
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    check_endpoint_ports(&we.ports, service_ports, &path.field("ports"), out);
    check_labels(&we.labels, &path.field("labels"), out);
    if socket.is_some() && service_ports.is_some_and(|p| p.len() != 1) {
        out.error(
            &addr_path,
            "exactly 1 service port required for unix endpoints",
        );
    }
}

/// The `ports` map of an endpoint: valid names and numbers, and, inside a ServiceEntry,
/// names the entry declares. The message names the port number, as Istio's does.
pub fn check_endpoint_ports(
    ports: &BTreeMap<String, u32>,
    service_ports: Option<&BTreeSet<&str>>,
    path: &FieldPath,
    out: &mut Findings,
) {
    for (name, &number) in ports {
        let p = path.key(name);
        if service_ports.is_some_and(|s| !s.contains(name.as_str())) {
            out.error(
                &p,
                format!("endpoint port {number} is not defined by the service entry"),
            );
        }
        if let Err(e) = validate_port_name(name) {
            out.error(&p, e);
        }
        if let Err(e) = validate_port(number) {
            out.error(&p, e);
        }
    }
}

/// Validates a WorkloadGroup: a template is required, metadata labels must be valid, and
/// the readiness probe must name one well-formed health check.
pub fn validate_workload_group(wg: &WorkloadGroupSpec, spec: &FieldPath, out: &mut Findings) {
    if wg.template.is_none() {
        out.error(&spec.field("template"), "template is required");
        return;
    }
    if let Some(meta) = &wg.metadata {
        let mut scratch = Findings::default();
        check_labels(
            &meta.labels,
            &spec.field("metadata").field("labels"),
            &mut scratch,
        );
        let first = scratch
            .into_vec()
            .into_iter()
            .find(|f| f.severity == Severity::Error);
        if let Some(f) = first {
            out.error(&f.path, format!("invalid labels: {}", f.message));
            return;
        }
    }
    if let Some(probe) = &wg.probe {
        check_probe(probe, &spec.field("probe"), out);
    }
}

/// The health check method of a probe. The counters are unsigned in our types, so Istio's
/// "must be non-negative" checks cannot fail here.
fn check_probe(probe: &ReadinessProbe, path: &FieldPath, out: &mut Findings) {
    if let Some(h) = &probe.http_get {
        check_http_get(h, &path.field("httpGet"), out);
    } else if let Some(t) = &probe.tcp_socket {
        if let Err(e) = validate_port(t.port.unwrap_or(0)) {
            out.error(&path.field("tcpSocket").field("port"), e);
        }
    } else if let Some(x) = &probe.exec {
        if x.command.is_empty() {
            out.error(
                &path.field("exec").field("command"),
                "exec.command is required",
            );
        }
    } else if probe.grpc.is_none() {
        out.error(path, "unknown health check method <nil>");
    }
}

/// `probe.httpGet`: port, scheme and header names.
fn check_http_get(h: &HttpHealthCheckConfig, path: &FieldPath, out: &mut Findings) {
    if let Err(e) = validate_port(h.port.unwrap_or(0)) {
        out.error(&path.field("port"), e);
    }
    if let Some(scheme) = &h.scheme
        && !matches!(scheme.as_str(), "" | "HTTP" | "HTTPS")
    {
        out.error(
            &path.field("scheme"),
            "httpGet.scheme must be one of \"HTTPS\", \"HTTP\"",
        );
    }
    for (i, header) in h.http_headers.iter().enumerate() {
        if let Err(e) = validate_header_name(header.name.as_deref().unwrap_or_default()) {
            out.error(&path.field("httpHeaders").index(i).field("name"), e);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::validate::testing::split;

    fn entry(spec: Value) -> (Vec<String>, Vec<String>) {
        let we: WorkloadEntrySpec = serde_json::from_value(spec).expect("valid WorkloadEntry spec");
        let mut out = Findings::default();
        validate_workload_entry(&we, &FieldPath::root().field("spec"), &mut out);
        split(out)
    }

    fn group(spec: Value) -> (Vec<String>, Vec<String>) {
        let wg: WorkloadGroupSpec = serde_json::from_value(spec).expect("valid WorkloadGroup spec");
        let mut out = Findings::default();
        validate_workload_group(&wg, &FieldPath::root().field("spec"), &mut out);
        split(out)
    }

    #[test]
    fn workload_entries() {
        let cases: &[(Value, &[&str], &[&str])] = &[
            (
                json!({"address": "10.0.0.1", "ports": {"http": 8080}, "labels": {"app": "a"}}),
                &[],
                &[],
            ),
            (json!({"address": "vm.example.com"}), &[], &[]),
            (
                json!({"labels": {"app": "a"}}),
                &["spec.address: address is required"],
                &[],
            ),
            (
                json!({"network": "vpc1"}),
                &[],
                &["spec.address: address is unset with network \"vpc1\""],
            ),
            (
                json!({"address": "unix://relative/path"}),
                &["spec.address: relative/path is not an absolute path to a file"],
                &[],
            ),
            (
                json!({"address": "unix:///var/run/a.sock", "ports": {"http": 80}}),
                &["spec.ports: unix endpoint unix:///var/run/a.sock must not include ports"],
                &[],
            ),
            (
                json!({"address": "bad_host!"}),
                &[
                    "spec.address: endpoint address \"bad_host!\" is not a valid FQDN or an IP address",
                ],
                &[],
            ),
            (
                json!({"address": "10.0.0.1", "ports": {"http_x": 0}}),
                &[
                    "spec.ports[http_x]: invalid port name: http_x",
                    "spec.ports[http_x]: port number 0 must be in the range 1..65535",
                ],
                &[],
            ),
            (
                json!({"address": "10.0.0.1", "labels": {"app": "a b"}}),
                &["spec.labels[app]: invalid tag value: \"a b\""],
                &[],
            ),
        ];
        for (spec, errors, warnings) in cases {
            let (e, w) = entry(spec.clone());
            assert_eq!(e, *errors, "errors for {spec}");
            assert_eq!(w, *warnings, "warnings for {spec}");
        }
    }

    #[test]
    fn endpoints_inside_a_service_entry() {
        let names: BTreeSet<&str> = ["http", "grpc"].into_iter().collect();
        let cases: &[(Value, bool, &[&str])] = &[
            (
                json!({"address": "db.example.com"}),
                false,
                &["ep.address: endpoint address \"db.example.com\" is not a valid IP address"],
            ),
            (
                json!({"address": "10.0.0.1", "ports": {"tcp": 9000}}),
                false,
                &["ep.ports[tcp]: endpoint port 9000 is not defined by the service entry"],
            ),
            (
                json!({"address": "unix:///sock"}),
                false,
                &["ep.address: exactly 1 service port required for unix endpoints"],
            ),
            (
                json!({"address": "db.example.com", "ports": {"http": 80}}),
                true,
                &[],
            ),
        ];
        for (spec, allow_fqdn, errors) in cases {
            let we: WorkloadEntrySpec =
                serde_json::from_value(spec.clone()).expect("valid endpoint");
            let mut out = Findings::default();
            check_workload_entry_fields(
                &we,
                Some(&names),
                *allow_fqdn,
                &FieldPath::parse("ep"),
                &mut out,
            );
            let (e, w) = split(out);
            assert_eq!(e, *errors, "errors for {spec}");
            assert!(w.is_empty(), "warnings for {spec}: {w:?}");
        }
    }

    #[test]
    fn workload_groups() {
        let cases: &[(Value, &[&str])] = &[
            (
                json!({
                    "metadata": {"labels": {"app": "vm"}},
                    "template": {"serviceAccount": "sa"},
                    "probe": {"httpGet": {"port": 8080, "scheme": "HTTPS", "httpHeaders": [{"name": "x-probe"}]}}
                }),
                &[],
            ),
            (
                json!({"probe": {"tcpSocket": {"port": 1}}}),
                &["spec.template: template is required"],
            ),
            (
                json!({"template": {}, "metadata": {"labels": {"-bad": "x"}}, "probe": {}}),
                &["spec.metadata.labels[-bad]: invalid labels: invalid tag key: \"-bad\""],
            ),
            (
                json!({"template": {}, "probe": {"httpGet": {"port": 0, "scheme": "FTP", "httpHeaders": [{"name": "a b"}]}}}),
                &[
                    "spec.probe.httpGet.port: port number 0 must be in the range 1..65535",
                    "spec.probe.httpGet.scheme: httpGet.scheme must be one of \"HTTPS\", \"HTTP\"",
                    "spec.probe.httpGet.httpHeaders[0].name: header name a b is not a valid header name",
                ],
            ),
            (
                json!({"template": {}, "probe": {"tcpSocket": {"port": 70000}}}),
                &["spec.probe.tcpSocket.port: port number 70000 must be in the range 1..65535"],
            ),
            (
                json!({"template": {}, "probe": {"exec": {}}}),
                &["spec.probe.exec.command: exec.command is required"],
            ),
            (
                json!({"template": {}, "probe": {"periodSeconds": 5}}),
                &["spec.probe: unknown health check method <nil>"],
            ),
            (
                json!({"template": {}, "probe": {"grpc": {"port": 9090}}}),
                &[],
            ),
        ];
        for (spec, errors) in cases {
            let (e, w) = group(spec.clone());
            assert_eq!(e, *errors, "errors for {spec}");
            assert!(w.is_empty(), "warnings for {spec}: {w:?}");
        }
    }
}
