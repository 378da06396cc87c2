//! Gateway analyzers: the workload a Gateway selects and the ports its Service exposes,
//! the Secrets its servers name, and Gateways that collide on one workload.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::context::{full_name, is_default, selector_text, selects};
use super::messages::*;
use super::{Analyzer, Context, Report};
use crate::generated::networking::ServerTlsSettings;
use crate::load::LoadedObject;
use crate::resource::Gateway;
use crate::validate::common::hosts_match;

/// `gateway.IngressGatewayPortAnalyzer`.
pub const INGRESS_PORT: Analyzer = Analyzer {
    name: "gateway.IngressGatewayPortAnalyzer",
    description: "Checks a gateway's ports against the gateway's Kubernetes service ports",
    codes: &[
        REFERENCED_RESOURCE_NOT_FOUND,
        GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
    ],
    run: run_ports,
};

/// `gateway.SecretAnalyzer`.
pub const SECRET: Analyzer = Analyzer {
    name: "gateway.SecretAnalyzer",
    description: "Checks a gateway's referenced secrets for correctness",
    codes: &[REFERENCED_RESOURCE_NOT_FOUND, INVALID_GATEWAY_CREDENTIAL],
    run: run_secrets,
};

/// `gateway.ConflictingGatewayAnalyzer`.
pub const CONFLICTING: Analyzer = Analyzer {
    name: "gateway.ConflictingGatewayAnalyzer",
    description: "Checks a gateway's selector, port number and hosts",
    codes: &[CONFLICTING_GATEWAYS],
    run: run_conflicts,
};

/// `gateway.CertificateAnalyzer`.
pub const CERTIFICATE: Analyzer = Analyzer {
    name: "gateway.CertificateAnalyzer",
    description: "Checks a gateway certificate",
    codes: &[GATEWAY_DUPLICATE_CERTIFICATE],
    run: run_certificates,
};

fn user_gateways<'c>(
    ctx: &'c Context<'_>,
) -> impl Iterator<Item = (&'c LoadedObject, &'c Gateway)> {
    ctx.gateways().filter(|(o, _)| !is_default(o))
}

/// The ports a Gateway server can listen on: the target ports of the TCP ports of every
/// Service that selects one of its Pods (the port itself when the target is named).
fn workload_ports(ctx: &Context<'_>, pods: &[&core::Pod]) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for pod in pods {
        for (_, svc) in ctx.services() {
            let Some(spec) = &svc.spec else { continue };
            let same_ns = svc.metadata.namespace == pod.metadata.namespace;
            let selector = spec.selector.clone().unwrap_or_default();
            if !same_ns || selector.is_empty() || !selects(&selector, pod.metadata.labels.as_ref())
            {
                continue;
            }
            for p in spec.ports.iter().flatten() {
                if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                    continue;
                }
                let port = match &p.target_port {
                    Some(IntOrString::Int(n)) => *n,
                    _ => p.port,
                };
                out.insert(port as u32);
            }
        }
    }
    out
}

fn run_ports(ctx: &Context<'_>, report: &mut Report) {
    for (o, gw) in user_gateways(ctx) {
        let selector = &gw.spec.selector;
        let pods: Vec<&core::Pod> = ctx.pods_selected(None, selector).map(|(_, p)| p).collect();
        let text = selector_text(selector);
        if pods.is_empty() {
            report.push(
                REFERENCED_RESOURCE_NOT_FOUND,
                o,
                format!("Referenced selector not found: {text:?}"),
            );
            continue;
        }
        let ports = workload_ports(ctx, &pods);
        for server in &gw.spec.servers {
            let Some(n) = server.port.as_ref().and_then(|p| p.number) else {
                continue;
            };
            if !ports.contains(&n) {
                report.push(
                    GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
                    o,
                    format!(
                        "The gateway is listening on a target port (port {n}) that is not defined in the Service associated with its workload instances (Pod selector {text}). If you need to access the gateway port through the gateway Service, it will not be available."
                    ),
                );
            }
        }
    }
}

/// Where a Gateway's credentials are read: the namespace of the (first) Pod it selects;
/// `None` when it selects none.
fn credential_namespace(ctx: &Context<'_>, gw: &Gateway) -> Option<String> {
    let (_, pod) = ctx.pods_selected(None, &gw.spec.selector).next()?;
    pod.metadata.namespace.clone()
}

/// True when a Secret holds a certificate and key, in either of Istio's layouts
/// (`tls.crt`/`tls.key` or `cert`/`key`), or only a CA bundle (a `-cacert` Secret).
fn holds_credential(s: &core::Secret) -> bool {
    let get = |k: &str| -> Option<String> {
        let data = s
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned());
        data.or_else(|| s.string_data.as_ref().and_then(|d| d.get(k)).cloned())
    };
    let pem = |k: &str, marker: &str| get(k).is_some_and(|v| v.contains(marker));
    let pair = |crt: &str, key: &str| pem(crt, "CERTIFICATE") && pem(key, "PRIVATE KEY");
    pair("tls.crt", "tls.key")
        || pair("cert", "key")
        || pem("ca.crt", "CERTIFICATE")
        || pem("cacert", "CERTIFICATE")
}

fn credential_names(gw: &Gateway) -> Vec<&str> {
    gw.spec
        .servers
        .iter()
        .filter_map(|s| s.tls.as_ref())
        .flat_map(|t| t.credential_name.iter().chain(t.credential_names.iter()))
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .collect()
}

fn run_secrets(ctx: &Context<'_>, report: &mut Report) {
    for (o, gw) in user_gateways(ctx) {
        let Some(ns) = credential_namespace(ctx, gw) else {
            report.push(
                REFERENCED_RESOURCE_NOT_FOUND,
                o,
                format!(
                    "Referenced selector not found: {:?}",
                    selector_text(&gw.spec.selector)
                ),
            );
            continue;
        };
        for credential in credential_names(gw) {
            let (secret_ns, name) = credential.split_once('/').unwrap_or((&ns, credential));
            let secret = ctx.secrets().find(|(s, _)| {
                let r = s.object.object_ref();
                r.namespace == secret_ns && r.name == name
            });
            match secret {
                None => report.push(
                    REFERENCED_RESOURCE_NOT_FOUND,
                    o,
                    format!("Referenced credentialName not found: {credential:?}"),
                ),
                Some((_, s)) if !holds_credential(s) => {
                    let r = o.object.object_ref();
                    report.push(
                        INVALID_GATEWAY_CREDENTIAL,
                        o,
                        format!(
                            "The credential referenced by the Gateway {} in namespace {} is invalid, which can cause the traffic not to work as expected.",
                            r.name, r.namespace
                        ),
                    );
                }
                Some(_) => {}
            }
        }
    }
}

/// A server host without its namespace part.
fn bare_host(h: &str) -> &str {
    h.split_once('/').map_or(h, |(_, h)| h)
}

/// One message per server whose port and hosts another Gateway of the same selector
/// also serves, naming the other Gateways and the server's own hosts.
fn run_conflicts(ctx: &Context<'_>, report: &mut Report) {
    let gws: Vec<_> = user_gateways(ctx).collect();
    for (i, (o, gw)) in gws.iter().enumerate() {
        for s in &gw.spec.servers {
            let Some(port) = s.port.as_ref().and_then(|p| p.number) else {
                continue;
            };
            let mut others: BTreeSet<String> = BTreeSet::new();
            for (j, (other_o, other)) in gws.iter().enumerate() {
                if i == j || other.spec.selector != gw.spec.selector {
                    continue;
                }
                let overlaps = other.spec.servers.iter().any(|t| {
                    t.port.as_ref().and_then(|p| p.number) == Some(port)
                        && s.hosts.iter().any(|h| {
                            t.hosts
                                .iter()
                                .any(|g| hosts_match(bare_host(h), bare_host(g)))
                        })
                });
                if overlaps {
                    others.insert(full_name(other_o));
                }
            }
            if others.is_empty() {
                continue;
            }
            report.push(
                CONFLICTING_GATEWAYS,
                o,
                format!(
                    "Conflict with gateways {} (workload selector {}, port {port}, hosts {}).",
                    others.into_iter().collect::<Vec<_>>().join(","),
                    selector_text(&gw.spec.selector),
                    s.hosts.join(",")
                ),
            );
        }
    }
}

/// Istio's rule for one certificate served twice: the same `credentialName`, or, with
/// none on either side, the same certificate and key files.
fn same_certificate(a: &ServerTlsSettings, b: &ServerTlsSettings) -> bool {
    fn set(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }
    match (set(&a.credential_name), set(&b.credential_name)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => {
            let (c1, k1) = (set(&a.server_certificate), set(&a.private_key));
            let (c2, k2) = (set(&b.server_certificate), set(&b.private_key));
            c1.is_some() && k1.is_some() && c1 == c2 && k1 == k2
        }
        _ => false,
    }
}

/// True when every label of `x` is in `y`.
fn selector_subset(x: &BTreeMap<String, String>, y: &BTreeMap<String, String>) -> bool {
    x.iter().all(|(k, v)| y.get(k) == Some(v))
}

fn run_certificates(ctx: &Context<'_>, report: &mut Report) {
    let gws: Vec<_> = user_gateways(ctx).collect();
    for (i, (o, gw)) in gws.iter().enumerate() {
        for (j, (other_o, other)) in gws.iter().enumerate() {
            // The other Gateways on (at least) the workloads this one selects.
            if i == j || !selector_subset(&gw.spec.selector, &other.spec.selector) {
                continue;
            }
            let tls = |g: &'_ Gateway| {
                g.spec
                    .servers
                    .iter()
                    .filter_map(|s| s.tls.clone())
                    .collect::<Vec<_>>()
            };
            let (mine, theirs) = (tls(gw), tls(other));
            if mine
                .iter()
                .any(|a| theirs.iter().any(|b| same_certificate(a, b)))
            {
                report.push(
                    GATEWAY_DUPLICATE_CERTIFICATE,
                    o,
                    format!(
                        "Duplicate certificate in multiple gateways [{} {}] may cause 404s if clients re-use HTTP2 connections.",
                        full_name(o),
                        full_name(other_o)
                    ),
                );
            }
        }
    }
}
