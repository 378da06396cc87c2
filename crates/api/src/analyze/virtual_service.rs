//! VirtualService analyzers: the gateways, destination hosts and ports, and subsets it
//! names, and hosts two VirtualServices on the mesh gateway both claim.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::context::{RegisteredHost, export_scope, full_name, to_fqdn};
use super::messages::*;
use super::{Analyzer, Context, Report};
use crate::generated::networking::Destination;
use crate::load::LoadedObject;
use crate::resource::VirtualService;
use crate::validate::common::hosts_match;

/// `virtualservice.GatewayAnalyzer`.
pub const GATEWAY: Analyzer = Analyzer {
    name: "virtualservice.GatewayAnalyzer",
    description: "Checks the gateways associated with each virtual service",
    codes: &[REFERENCED_RESOURCE_NOT_FOUND, VS_HOST_NOT_FOUND_IN_GATEWAY],
    run: run_gateways,
};

/// `virtualservice.DestinationHostAnalyzer`.
pub const DESTINATION_HOST: Analyzer = Analyzer {
    name: "virtualservice.DestinationHostAnalyzer",
    description: "Checks the destination hosts associated with each virtual service",
    codes: &[
        REFERENCED_RESOURCE_NOT_FOUND,
        VS_DESTINATION_PORT_SELECTOR_REQUIRED,
        INGRESS_ROUTE_RULES_NOT_AFFECTED,
    ],
    run: |ctx, report| {
        run_destination_hosts(ctx, report);
        run_ingress_subsets(ctx, report);
    },
};

/// `virtualservice.DestinationRuleAnalyzer`.
pub const DESTINATION_RULE: Analyzer = Analyzer {
    name: "virtualservice.DestinationRuleAnalyzer",
    description: "Checks the destination rules associated with each virtual service",
    codes: &[REFERENCED_RESOURCE_NOT_FOUND],
    run: run_destination_rules,
};

/// `virtualservice.ConflictingMeshGatewayHostsAnalyzer`.
pub const CONFLICTING_MESH_GATEWAY_HOSTS: Analyzer = Analyzer {
    name: "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
    description: "Checks if multiple virtual services associated with the mesh gateway have conflicting hosts",
    codes: &[CONFLICTING_MESH_GATEWAY_VS_HOSTS],
    run: run_conflicting_hosts,
};

fn namespace_of(o: &LoadedObject) -> String {
    o.object.object_ref().namespace
}

/// Every destination of a VirtualService, and whether it is a mirror.
fn destinations(vs: &VirtualService) -> Vec<(&Destination, bool)> {
    let s = &vs.spec;
    let routes = s
        .http
        .iter()
        .flat_map(|h| h.route.iter().filter_map(|r| r.destination.as_ref()));
    let tcp = s
        .tcp
        .iter()
        .flat_map(|t| t.route.iter().filter_map(|r| r.destination.as_ref()));
    let tls = s
        .tls
        .iter()
        .flat_map(|t| t.route.iter().filter_map(|r| r.destination.as_ref()));
    let mirrors = s.http.iter().flat_map(|h| {
        h.mirror
            .iter()
            .chain(h.mirrors.iter().filter_map(|m| m.destination.as_ref()))
    });
    routes
        .chain(tcp)
        .chain(tls)
        .map(|d| (d, false))
        .chain(mirrors.map(|d| (d, true)))
        .collect()
}

fn run_gateways(ctx: &Context<'_>, report: &mut Report) {
    for (o, vs) in ctx.virtual_services() {
        let ns = namespace_of(o);
        for gw in &vs.spec.gateways {
            if gw == "mesh" {
                continue;
            }
            let target = ctx.gateway_ref(&ns, gw);
            let (gw_ns, gw_name, found) = (target.ns, target.name, target.found);
            if found.is_none() {
                report.push(
                    REFERENCED_RESOURCE_NOT_FOUND,
                    o,
                    format!("Referenced gateway not found: {gw:?}"),
                );
            }
            let gateway_hosts: Vec<String> = found
                .map(|(_, g)| {
                    g.spec
                        .servers
                        .iter()
                        .flat_map(|s| s.hosts.iter())
                        .filter_map(|h| host_for_namespace(h, gw_ns, &ns))
                        .collect()
                })
                .unwrap_or_default();
            let matched = gateway_hosts
                .iter()
                .any(|gh| vs.spec.hosts.iter().any(|vh| hosts_match(gh, vh)));
            if !matched {
                report.push(
                    VS_HOST_NOT_FOUND_IN_GATEWAY,
                    o,
                    format!(
                        "one or more host [{}] defined in VirtualService {} not found in Gateway {gw_ns}/{gw_name}.",
                        vs.spec.hosts.join(" "),
                        full_name(o)
                    ),
                );
            }
        }
    }
}

/// A Gateway server host (`ns/host`, `./host`, `*/host` or `host`) as seen by a
/// VirtualService in `vs_ns`; `None` when the server does not export it there.
fn host_for_namespace(host: &str, gw_ns: &str, vs_ns: &str) -> Option<String> {
    match host.split_once('/') {
        None => Some(host.to_string()),
        Some(("*", h)) => Some(h.to_string()),
        Some((".", h)) => (gw_ns == vs_ns).then(|| h.to_string()),
        Some((ns, h)) => (ns == vs_ns).then(|| h.to_string()),
    }
}

/// The registered host a destination in `namespace` names: first an exact name visible
/// there, then a wildcard ServiceEntry host.
fn resolve<'h>(
    hosts: &'h [RegisteredHost],
    namespace: &str,
    host: &str,
) -> Option<&'h RegisteredHost> {
    let fqdn = to_fqdn(namespace, host);
    let visible = |r: &&RegisteredHost| {
        r.visible_to
            .as_ref()
            .is_none_or(|v| v.iter().any(|n| n == namespace))
    };
    hosts
        .iter()
        .filter(visible)
        .find(|r| r.host == fqdn)
        .or_else(|| {
            hosts
                .iter()
                .filter(visible)
                .find(|r| r.host.starts_with('*') && hosts_match(&r.host, &fqdn))
        })
}

fn run_destination_hosts(ctx: &Context<'_>, report: &mut Report) {
    let hosts = ctx.registered_hosts();
    for (o, vs) in ctx.virtual_services() {
        let ns = namespace_of(o);
        for (d, mirror) in destinations(vs) {
            let Some(found) = resolve(&hosts, &ns, &d.host) else {
                let what = if mirror { "mirror host" } else { "host" };
                report.push(
                    REFERENCED_RESOURCE_NOT_FOUND,
                    o,
                    format!("Referenced {what} not found: {:?}", d.host),
                );
                continue;
            };
            match d.port.as_ref().and_then(|p| p.number) {
                None if found.ports.len() > 1 => {
                    let ports: Vec<String> = found.ports.iter().map(u32::to_string).collect();
                    report.push(
                        VS_DESTINATION_PORT_SELECTOR_REQUIRED,
                        o,
                        format!(
                            "This VirtualService routes to a service {:?} that exposes multiple ports [{}]. Specifying a port in the destination is required to disambiguate.",
                            d.host,
                            ports.join(" ")
                        ),
                    );
                }
                Some(port) if !found.ports.contains(&port) => report.push(
                    REFERENCED_RESOURCE_NOT_FOUND,
                    o,
                    format!("Referenced host:port not found: \"{}:{port}\"", d.host),
                ),
                _ => {}
            }
        }
    }
}

/// A VirtualService bound to a gateway that routes to a host without a subset, where
/// another VirtualService of that host splits it by subset: the subsets do not apply to
/// the gateway's requests.
fn run_ingress_subsets(ctx: &Context<'_>, report: &mut Report) {
    // The VirtualServices that route their own hosts by subset.
    let by_subset: Vec<(String, Vec<&str>)> = ctx
        .virtual_services()
        .map(|(o, vs)| {
            let hosts = destinations(vs)
                .into_iter()
                .filter(|(d, mirror)| {
                    !mirror
                        && d.subset.as_deref().is_some_and(|s| !s.is_empty())
                        && vs.spec.hosts.contains(&d.host)
                })
                .map(|(d, _)| d.host.as_str())
                .collect();
            (full_name(o), hosts)
        })
        .collect();
    for (o, vs) in ctx.virtual_services() {
        if vs.spec.gateways.is_empty() {
            continue;
        }
        let plain = vs
            .spec
            .http
            .iter()
            .flat_map(|h| h.route.iter())
            .filter_map(|r| r.destination.as_ref());
        for d in plain.filter(|d| d.subset.as_deref().is_none_or(str::is_empty)) {
            for (name, hosts) in &by_subset {
                if hosts.contains(&d.host.as_str()) {
                    report.push(
                        INGRESS_ROUTE_RULES_NOT_AFFECTED,
                        o,
                        format!(
                            "Subset in virtual service {name} has no effect on ingress gateway {} requests",
                            full_name(o)
                        ),
                    );
                }
            }
        }
    }
}

fn run_destination_rules(ctx: &Context<'_>, report: &mut Report) {
    let subsets: HashSet<(String, &str)> = ctx
        .destination_rules()
        .flat_map(|(o, dr)| {
            let host = to_fqdn(&namespace_of(o), &dr.spec.host);
            dr.spec
                .subsets
                .iter()
                .map(move |s| (host.clone(), s.name.as_str()))
        })
        .collect();
    for (o, vs) in ctx.virtual_services() {
        let ns = namespace_of(o);
        for (d, mirror) in destinations(vs) {
            let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            if !subsets.contains(&(to_fqdn(&ns, &d.host), subset)) {
                let what = if mirror { "mirror" } else { "host" };
                report.push(
                    REFERENCED_RESOURCE_NOT_FOUND,
                    o,
                    format!(
                        "Referenced {what}+subset in destinationrule not found: \"{}+{subset}\"",
                        d.host
                    ),
                );
            }
        }
    }
}

fn run_conflicting_hosts(ctx: &Context<'_>, report: &mut Report) {
    // (scope, fqdn) -> the VirtualServices on the mesh gateway that claim it.
    let mut claims: HashMap<String, Vec<&LoadedObject>> = HashMap::new();
    let mut order = Vec::new();
    for (o, vs) in ctx.virtual_services() {
        let s = &vs.spec;
        if !(s.gateways.is_empty() || s.gateways.iter().any(|g| g == "mesh")) {
            continue;
        }
        let ns = namespace_of(o);
        let scopes: BTreeSet<String> = match export_scope(&s.export_to, &ns) {
            None => ["*".to_string()].into(),
            Some(v) => v.into_iter().collect(),
        };
        for scope in &scopes {
            for h in &s.hosts {
                let key = format!("{scope}/{}", to_fqdn(&ns, h));
                let list = claims.entry(key.clone()).or_default();
                if list.is_empty() {
                    order.push(key);
                }
                list.push(o);
            }
        }
    }
    for key in order {
        let list = &claims[&key];
        if list.len() < 2 {
            continue;
        }
        let names: Vec<String> = list.iter().map(|o| full_name(o)).collect();
        for o in list {
            report.push(
                CONFLICTING_MESH_GATEWAY_VS_HOSTS,
                o,
                format!(
                    "The VirtualServices {} associated with mesh gateway define the same host {key} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                    names.join(",")
                ),
            );
        }
    }
}
