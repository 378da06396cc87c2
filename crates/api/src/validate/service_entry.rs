//! ServiceEntry: hosts, addresses, ports and endpoints, and how they fit the resolution mode
//! (NONE, STATIC, DNS, DNS_ROUND_ROBIN).

use std::collections::BTreeSet;

use crate::diagnostic::Findings;
use crate::generated::networking::{
    ServiceEntryResolution as Resolution, ServiceEntrySpec, WorkloadEntrySpec,
};
use crate::path::FieldPath;
use crate::resource::ServiceEntry;

use super::common::{
    check_export_to, check_label_selector, check_labels, is_http_protocol, is_ip, is_tcp_protocol,
    is_tls_protocol, validate_fqdn, validate_ip_subnet, validate_partial_wildcard, validate_port,
    validate_port_name, validate_protocol, validate_wildcard_domain,
};
use super::workload::{check_endpoint_ports, check_workload_entry_fields};

const SELECTOR_WITHOUT_LABELS: &str = "service entry: workload selector specified without labels, will be applied to all services in namespace";

/// Validates a ServiceEntry.
pub fn validate(se: &ServiceEntry, spec: &FieldPath, out: &mut Findings) {
    let s = &se.spec;
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
    if s.workload_selector.is_some() && !s.endpoints.is_empty() {
        out.error(
            &spec.field("workloadSelector"),
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }
    let resolution = s.resolution.unwrap_or_default();
    check_hosts(&s.hosts, spec, out);
    check_addresses(&s.addresses, resolution, spec, out);
    let port_names = check_ports(s, resolution, spec, out);
    match resolution {
        Resolution::None => check_resolution_none(s, spec, out),
        Resolution::Static => {
            for (i, ep) in s.endpoints.iter().enumerate() {
                let p = spec.field("endpoints").index(i);
                check_workload_entry_fields(ep, Some(&port_names), false, &p, out);
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            check_resolution_dns(s, resolution, &port_names, spec, out);
        }
        Resolution::DynamicDns => {}
    }
    check_multiple_hosts(s, resolution, spec, out);
    let ns = se.metadata.namespace.as_deref().unwrap_or_default();
    check_export_to(ns, &s.export_to, true, false, &spec.field("exportTo"), out);
}

/// At least one host; no `*`; wildcards only as the whole first label.
fn check_hosts(hosts: &[String], spec: &FieldPath, out: &mut Findings) {
    if hosts.is_empty() {
        out.error(
            &spec.field("hosts"),
            "service entry must have at least one host",
        );
    }
    for (i, host) in hosts.iter().enumerate() {
        let p = spec.field("hosts").index(i);
        if host == "*" {
            out.error(&p, format!("invalid host {host}"));
            continue;
        }
        if let Err(e) = validate_wildcard_domain(host) {
            out.error(&p, e);
        }
        if let Err(e) = validate_partial_wildcard(host) {
            out.warn(&p, e);
        }
    }
}

/// IPs or CIDR blocks; CIDR blocks only when the proxy does not resolve the hosts.
fn check_addresses(
    addresses: &[String],
    resolution: Resolution,
    spec: &FieldPath,
    out: &mut Findings,
) {
    let mut first_cidr = None;
    for (i, address) in addresses.iter().enumerate() {
        let p = spec.field("addresses").index(i);
        if first_cidr.is_none() && address.contains('/') {
            first_cidr = Some(p.clone());
        }
        if let Err(e) = validate_ip_subnet(address) {
            out.error(&p, e);
        }
    }
    if let Some(p) = first_cidr
        && !matches!(resolution, Resolution::None | Resolution::Static)
    {
        out.error(
            &p,
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }
}

/// Unique names and numbers, valid ports and protocols. Returns the port names, which
/// endpoint ports must use.
fn check_ports<'a>(
    s: &'a ServiceEntrySpec,
    resolution: Resolution,
    spec: &FieldPath,
    out: &mut Findings,
) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, port) in s.ports.iter().enumerate() {
        let p = spec.field("ports").index(i);
        let number = port.number.unwrap_or(0);
        let protocol = port.protocol.as_deref().unwrap_or_default();
        if !names.insert(port.name.as_str()) {
            out.error(
                &p.field("name"),
                format!("service entry port name {:?} already defined", port.name),
            );
        }
        if !numbers.insert(number) {
            out.error(
                &p.field("number"),
                format!("service entry port {number} already defined"),
            );
        }
        if let Some(target) = port.target_port.filter(|&t| t != 0) {
            if let Err(e) = validate_port(target) {
                out.error(&p.field("targetPort"), e);
            }
            if resolution == Resolution::None {
                out.warn(
                    &p.field("targetPort"),
                    "targetPort has no effect when resolution mode is NONE",
                );
            }
        }
        // Auto-allocation gives every other resolution mode an address.
        if s.addresses.is_empty()
            && resolution == Resolution::None
            && (protocol.is_empty() || protocol == "TCP")
        {
            out.warn(
                &p.field("protocol"),
                "addresses are required for ports serving TCP (or unset) protocol when ISTIO_META_DNS_AUTO_ALLOCATE is not set on a proxy",
            );
        }
        if let Err(e) = validate_port_name(&port.name) {
            out.error(&p.field("name"), e);
        }
        if let Err(e) = validate_protocol(protocol) {
            out.error(&p.field("protocol"), e);
        }
        if let Err(e) = validate_port(number) {
            out.error(&p.field("number"), e);
        }
    }
    names
}

/// Resolution NONE: the proxy forwards to the original destination, so endpoints are
/// meaningless.
fn check_resolution_none(s: &ServiceEntrySpec, spec: &FieldPath, out: &mut Findings) {
    if !s.endpoints.is_empty() {
        out.error(
            &spec.field("endpoints"),
            "no endpoints should be provided for resolution type none",
        );
    }
    if s.workload_selector.is_some() {
        out.warn(
            &spec.field("workloadSelector"),
            "workloadSelector should not be set when resolution mode is NONE",
        );
    }
}

/// Resolution DNS and DNS_ROUND_ROBIN: resolvable hosts or endpoints, and endpoints that
/// are IPs or host names.
fn check_resolution_dns(
    s: &ServiceEntrySpec,
    resolution: Resolution,
    port_names: &BTreeSet<&str>,
    spec: &FieldPath,
    out: &mut Findings,
) {
    let mode = resolution.as_str();
    if s.endpoints.is_empty() {
        for (i, host) in s.hosts.iter().enumerate() {
            if validate_fqdn(host).is_err() {
                out.error(
                    &spec.field("hosts").index(i),
                    format!(
                        "hosts must be FQDN if no endpoints are provided for resolution mode {mode}"
                    ),
                );
            }
        }
    }
    if resolution == Resolution::DnsRoundRobin && s.endpoints.len() > 1 {
        out.error(
            &spec.field("endpoints"),
            format!("there must only be 0 or 1 endpoint for resolution mode {mode}"),
        );
    }
    for (i, ep) in s.endpoints.iter().enumerate() {
        check_dns_endpoint(ep, port_names, &spec.field("endpoints").index(i), out);
    }
    if s.workload_selector.is_some() {
        out.warn(
            &spec.field("workloadSelector"),
            format!("workloadSelector should not be set when resolution mode is {mode}"),
        );
    }
    let tcp = s
        .ports
        .iter()
        .any(|p| is_tcp_protocol(p.protocol.as_deref().unwrap_or_default()));
    if !s.addresses.is_empty() && s.hosts.len() > 1 && tcp {
        out.warn(
            &spec.field("hosts"),
            "service entry can not have more than one host specified simultaneously with address and tcp port",
        );
    }
}

/// One endpoint of a DNS ServiceEntry.
fn check_dns_endpoint(
    ep: &WorkloadEntrySpec,
    port_names: &BTreeSet<&str>,
    path: &FieldPath,
    out: &mut Findings,
) {
    let addr = ep.address.as_deref().unwrap_or_default();
    if !is_ip(addr) && validate_fqdn(addr).is_err() {
        out.error(
            &path.field("address"),
            format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
        );
    }
    check_labels(&ep.labels, &path.field("labels"), out);
    check_endpoint_ports(&ep.ports, Some(port_names), &path.field("ports"), out);
}

/// Several hosts can share plain TCP ports only when the proxy does not resolve them:
/// nothing else tells the hosts apart.
fn check_multiple_hosts(
    s: &ServiceEntrySpec,
    resolution: Resolution,
    spec: &FieldPath,
    out: &mut Findings,
) {
    if resolution == Resolution::None || s.hosts.len() <= 1 {
        return;
    }
    let opaque = s.ports.iter().position(|p| {
        let protocol = p.protocol.as_deref().unwrap_or_default();
        !is_http_protocol(protocol) && !is_tls_protocol(protocol)
    });
    if let Some(i) = opaque {
        out.error(
            &spec.field("ports").index(i).field("protocol"),
            "multiple hosts provided with non-HTTP, non-TLS ports",
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::validate::testing;

    const RESOURCE: testing::Resource<'static> =
        ("networking.istio.io/v1", "ServiceEntry", "se", "default");

    fn check(cases: &[(Value, &[&str], &[&str])]) {
        testing::check::<ServiceEntry>(RESOURCE, validate, cases)
    }

    const HTTP: &str = "http";

    #[test]
    fn valid_entries() {
        check(&[
            (
                json!({"hosts": ["api.example.com"], "ports": [{"name": HTTP, "number": 80, "protocol": "HTTP"}], "resolution": "DNS", "location": "MESH_EXTERNAL"}),
                &[],
                &[],
            ),
            (
                json!({
                    "hosts": ["db.internal"], "addresses": ["10.1.0.0/16"],
                    "ports": [{"name": "tcp", "number": 5432, "protocol": "TCP"}],
                    "resolution": "STATIC",
                    "endpoints": [{"address": "10.1.0.5", "ports": {"tcp": 5433}}],
                    "exportTo": ["."]
                }),
                &[],
                &[],
            ),
        ]);
    }

    #[test]
    fn selector_hosts_and_addresses() {
        check(&[
            (
                json!({"hosts": ["a.com"], "workloadSelector": {"labels": {"app": "*"}}, "resolution": "STATIC"}),
                &[
                    "spec.workloadSelector.labels[app]: wildcard is not supported in selector: \"app=*\"",
                ],
                &[],
            ),
            (
                json!({"hosts": ["a.com"], "workloadSelector": {}, "resolution": "STATIC"}),
                &[],
                &[
                    "spec.workloadSelector: service entry: workload selector specified without labels, will be applied to all services in namespace",
                ],
            ),
            (
                json!({"hosts": ["a.com"], "workloadSelector": {"labels": {"app": "a"}}, "endpoints": [{"address": "1.1.1.1"}], "resolution": "STATIC"}),
                &[
                    "spec.workloadSelector: only one of WorkloadSelector or Endpoints is allowed in Service Entry",
                ],
                &[],
            ),
            (
                json!({"resolution": "STATIC"}),
                &["spec.hosts: service entry must have at least one host"],
                &[],
            ),
            (
                json!({"hosts": ["*", "bad_host.com", "foo*.com"], "resolution": "NONE", "addresses": ["10.0.0.1"]}),
                &[
                    "spec.hosts[0]: invalid host *",
                    "spec.hosts[1]: domain name \"bad_host.com\" invalid (label \"bad_host\" invalid)",
                    "spec.hosts[2]: domain name \"foo*.com\" invalid (label \"foo*\" invalid)",
                ],
                &["spec.hosts[2]: partial wildcard \"foo*.com\" not allowed"],
            ),
            (
                json!({"hosts": ["a.com"], "addresses": ["10.0.0.0/8", "300.0.0.1"], "resolution": "DNS"}),
                &[
                    "spec.addresses[1]: 300.0.0.1 is not a valid IP",
                    "spec.addresses[0]: CIDR addresses are allowed only for NONE/STATIC resolution types",
                ],
                &[],
            ),
        ]);
    }

    #[test]
    fn ports() {
        check(&[
            (
                json!({
                    "hosts": ["a.com"], "addresses": ["10.0.0.1"], "resolution": "NONE",
                    "ports": [
                        {"name": HTTP, "number": 80, "protocol": "HTTP", "targetPort": 70000},
                        {"name": HTTP, "number": 80, "protocol": "HTTP"},
                        {"name": "Bad_Name", "number": 0, "protocol": "FOO"}
                    ]
                }),
                &[
                    "spec.ports[0].targetPort: port number 70000 must be in the range 1..65535",
                    "spec.ports[1].name: service entry port name \"http\" already defined",
                    "spec.ports[1].number: service entry port 80 already defined",
                    "spec.ports[2].name: invalid port name: Bad_Name",
                    "spec.ports[2].protocol: unsupported protocol: FOO",
                    "spec.ports[2].number: port number 0 must be in the range 1..65535",
                ],
                &[
                    "spec.ports[0].targetPort: targetPort has no effect when resolution mode is NONE",
                ],
            ),
            (
                json!({"hosts": ["a.com"], "ports": [{"name": "tcp", "number": 9000}]}),
                &[],
                &[
                    "spec.ports[0].protocol: addresses are required for ports serving TCP (or unset) protocol when ISTIO_META_DNS_AUTO_ALLOCATE is not set on a proxy",
                ],
            ),
        ]);
    }

    #[test]
    fn resolution_none() {
        check(&[
            (
                json!({"hosts": ["a.com"], "addresses": ["10.0.0.1"], "endpoints": [{"address": "1.1.1.1"}]}),
                &["spec.endpoints: no endpoints should be provided for resolution type none"],
                &[],
            ),
            (
                json!({"hosts": ["a.com"], "addresses": ["10.0.0.1"], "workloadSelector": {"labels": {"app": "a"}}}),
                &[],
                &[
                    "spec.workloadSelector: workloadSelector should not be set when resolution mode is NONE",
                ],
            ),
        ]);
    }

    #[test]
    fn resolution_static() {
        check(&[(
            json!({
                "hosts": ["a.com"], "resolution": "STATIC",
                "ports": [{"name": HTTP, "number": 80, "protocol": "HTTP"}, {"name": "grpc", "number": 81, "protocol": "GRPC"}],
                "endpoints": [
                    {"address": "a.example.com"},
                    {"address": "1.1.1.1", "ports": {"tcp": 9000}},
                    {"address": "unix:///var/run/a.sock"}
                ]
            }),
            &[
                "spec.endpoints[0].address: endpoint address \"a.example.com\" is not a valid IP address",
                "spec.endpoints[1].ports[tcp]: endpoint port 9000 is not defined by the service entry",
                "spec.endpoints[2].address: exactly 1 service port required for unix endpoints",
            ],
            &[],
        )]);
    }

    #[test]
    fn resolution_dns() {
        check(&[
            (
                json!({"hosts": ["*.a.com"], "resolution": "DNS", "ports": [{"name": HTTP, "number": 80, "protocol": "HTTP"}]}),
                &[
                    "spec.hosts[0]: hosts must be FQDN if no endpoints are provided for resolution mode DNS",
                ],
                &[],
            ),
            (
                json!({
                    "hosts": ["a.com"], "resolution": "DNS_ROUND_ROBIN",
                    "ports": [{"name": HTTP, "number": 80, "protocol": "HTTP"}],
                    "endpoints": [
                        {"address": "bad_host!", "labels": {"k": "a b"}},
                        {"address": "1.1.1.1", "ports": {"grpc": 0}}
                    ],
                    "workloadSelector": {"labels": {"app": "a"}}
                }),
                &[
                    "spec.workloadSelector: only one of WorkloadSelector or Endpoints is allowed in Service Entry",
                    "spec.endpoints: there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
                    "spec.endpoints[0].address: endpoint address \"bad_host!\" is not a valid FQDN or an IP address",
                    "spec.endpoints[0].labels[k]: invalid tag value: \"a b\"",
                    "spec.endpoints[1].ports[grpc]: endpoint port 0 is not defined by the service entry",
                    "spec.endpoints[1].ports[grpc]: port number 0 must be in the range 1..65535",
                ],
                &[
                    "spec.workloadSelector: workloadSelector should not be set when resolution mode is DNS_ROUND_ROBIN",
                ],
            ),
            (
                json!({
                    "hosts": ["a.com", "b.com"], "addresses": ["10.0.0.1"], "resolution": "DNS",
                    "ports": [{"name": "tls", "number": 443, "protocol": "TLS"}]
                }),
                &[],
                &[
                    "spec.hosts: service entry can not have more than one host specified simultaneously with address and tcp port",
                ],
            ),
        ]);
    }

    #[test]
    fn multiple_hosts_and_export_to() {
        check(&[
            (
                json!({
                    "hosts": ["a.com", "b.com"], "resolution": "DNS",
                    "ports": [{"name": HTTP, "number": 80, "protocol": "HTTP"}, {"name": "tcp", "number": 81}]
                }),
                &["spec.ports[1].protocol: multiple hosts provided with non-HTTP, non-TLS ports"],
                &[],
            ),
            (
                json!({"hosts": ["a.com"], "addresses": ["10.0.0.1"], "exportTo": ["*", "~"]}),
                &[
                    "spec.exportTo: cannot have both public (*) and non-public exportTo values for a resource",
                    "spec.exportTo: cannot export service entry to no one (~) and someone",
                ],
                &[],
            ),
        ]);
    }
}
