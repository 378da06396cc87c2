//! The Kubernetes kinds meshwork reads: the checks the API server makes that matter to
//! routing (ports, protocols, addresses, TLS Secrets).

use k8s_openapi::api::core::v1::{Endpoints, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::diagnostic::Findings;
use crate::path::FieldPath;

use super::common::{is_ip, validate_port};
use super::names;

fn port_in_range(n: i32) -> Result<(), String> {
    validate_port(u32::try_from(n).unwrap_or(0))
}

fn check_protocol(p: Option<&String>, path: &FieldPath, out: &mut Findings) {
    if let Some(p) = p
        && !matches!(p.as_str(), "TCP" | "UDP" | "SCTP")
    {
        out.error(
            path,
            format!("unsupported value {p:?}: must be one of \"TCP\", \"UDP\", \"SCTP\""),
        );
    }
}

/// A Service: ports in range, unique, named when there are several; valid target ports.
pub fn validate_service(svc: &Service, out: &mut Findings) {
    let spec_path = FieldPath::root().field("spec");
    let Some(spec) = &svc.spec else { return };
    let ports = spec.ports.as_deref().unwrap_or_default();
    let mut names = std::collections::BTreeSet::new();
    let mut numbers = std::collections::BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = spec_path.field("ports").index(i);
        if let Err(e) = port_in_range(port.port) {
            out.error(&p.field("port"), e);
        }
        let proto = port.protocol.as_deref().unwrap_or("TCP");
        if !numbers.insert((port.port, proto.to_string())) {
            out.error(
                &p.field("port"),
                format!("duplicate port {}/{proto}", port.port),
            );
        }
        check_protocol(port.protocol.as_ref(), &p.field("protocol"), out);
        match port.name.as_deref() {
            Some(name) if !name.is_empty() => {
                if let Err(e) = names::dns1123_label(name) {
                    out.error(&p.field("name"), format!("invalid port name {name:?}: {e}"));
                }
                if !names.insert(name.to_string()) {
                    out.error(&p.field("name"), format!("duplicate port name {name:?}"));
                }
            }
            _ if ports.len() > 1 => {
                out.error(
                    &p.field("name"),
                    "port name is required when a Service has more than one port",
                );
            }
            _ => {}
        }
        match &port.target_port {
            Some(IntOrString::Int(n)) => {
                if let Err(e) = port_in_range(*n) {
                    out.error(&p.field("targetPort"), e);
                }
            }
            Some(IntOrString::String(s))
                if s.is_empty() || s.len() > 15 || names::dns1123_label(s).is_err() =>
            {
                out.error(
                    &p.field("targetPort"),
                    format!("invalid named target port {s:?}: must be an IANA service name"),
                );
            }
            _ => {}
        }
    }
}

/// A Secret of type `kubernetes.io/tls` must hold `tls.crt` and `tls.key`.
pub fn validate_secret(secret: &Secret, out: &mut Findings) {
    if secret.type_.as_deref() != Some("kubernetes.io/tls") {
        return;
    }
    let has = |k: &str| {
        secret.data.as_ref().is_some_and(|d| d.contains_key(k))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(k))
    };
    for key in ["tls.crt", "tls.key"] {
        if !has(key) {
            out.error(
                &FieldPath::root().field("data"),
                format!("a kubernetes.io/tls Secret needs the key {key:?}"),
            );
        }
    }
}

/// A Pod: addresses in its status are IPs.
pub fn validate_pod(pod: &Pod, out: &mut Findings) {
    let status = FieldPath::root().field("status");
    if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_ref())
        && !is_ip(ip)
    {
        out.error(&status.field("podIP"), format!("{ip} is not a valid IP"));
    }
}

/// Endpoints: addresses are IPs, ports in range.
pub fn validate_endpoints(ep: &Endpoints, out: &mut Findings) {
    for (i, subset) in ep.subsets.iter().flatten().enumerate() {
        let p = FieldPath::root().field("subsets").index(i);
        for (j, a) in subset.addresses.iter().flatten().enumerate() {
            if !is_ip(&a.ip) {
                out.error(
                    &p.field("addresses").index(j).field("ip"),
                    format!("{} is not a valid IP", a.ip),
                );
            }
        }
        for (j, port) in subset.ports.iter().flatten().enumerate() {
            if let Err(e) = port_in_range(port.port) {
                out.error(&p.field("ports").index(j).field("port"), e);
            }
        }
    }
}

/// An EndpointSlice: a known address type, IP addresses, ports in range.
pub fn validate_endpoint_slice(es: &EndpointSlice, out: &mut Findings) {
    let root = FieldPath::root();
    let ip_type = matches!(es.address_type.as_str(), "IPv4" | "IPv6");
    if !ip_type && es.address_type != "FQDN" {
        out.error(
            &root.field("addressType"),
            format!(
                "unsupported value {:?}: must be one of \"IPv4\", \"IPv6\", \"FQDN\"",
                es.address_type
            ),
        );
    }
    for (i, e) in es.endpoints.iter().enumerate() {
        for (j, a) in e.addresses.iter().enumerate() {
            if ip_type && !is_ip(a) {
                out.error(
                    &root.field("endpoints").index(i).field("addresses").index(j),
                    format!("{a} is not a valid IP"),
                );
            }
        }
    }
    for (i, port) in es.ports.iter().flatten().enumerate() {
        if let Some(n) = port.port
            && let Err(e) = port_in_range(n)
        {
            out.error(&root.field("ports").index(i).field("port"), e);
        }
    }
}
