//! `service.PortNameAnalyzer`: Service ports whose protocol Istio cannot tell from their
//! name (`<protocol>[-<suffix>]`) or `appProtocol`.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::context::{is_control_plane, is_default};
use super::injection::SYSTEM_NAMESPACES;
use super::messages::*;
use super::{Analyzer, Context, Report};

/// The analyzer.
pub const PORT_NAME: Analyzer = Analyzer {
    name: "service.PortNameAnalyzer",
    description: "Checks the port names associated with each service",
    codes: &[
        PORT_NAME_NOT_UNDER_CONVENTION,
        EXTERNAL_NAME_INVALID_PORT_NAME,
    ],
    run,
};

/// The protocols Istio reads from a port name's prefix.
const PROTOCOLS: &[&str] = &[
    "grpc",
    "grpc-web",
    "http",
    "http2",
    "https",
    "tcp",
    "tls",
    "mongo",
    "redis",
    "mysql",
    "http_proxy",
];

/// The protocol Istio picks for a port, lowercase; `None` when it cannot tell.
pub(super) fn port_protocol(
    name: &str,
    protocol: Option<&str>,
    app_protocol: Option<&str>,
) -> Option<String> {
    if protocol.is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
        return Some("udp".into());
    }
    let known = |p: &str| {
        let p = p.to_ascii_lowercase();
        PROTOCOLS.contains(&p.as_str()).then_some(p)
    };
    let app = app_protocol.map(|a| match a {
        "kubernetes.io/h2c" => "http2",
        "kubernetes.io/ws" | "kubernetes.io/wss" => "http",
        other => other,
    });
    if let Some(p) = app.and_then(known) {
        return Some(p);
    }
    if name.eq_ignore_ascii_case("grpc-web") || name.to_ascii_lowercase().starts_with("grpc-web-") {
        return Some("grpc-web".into());
    }
    known(name.split('-').next().unwrap_or(name))
}

fn run(ctx: &Context<'_>, report: &mut Report) {
    for (o, svc) in ctx.services() {
        let ns = o.object.object_ref().namespace;
        if is_default(o) || SYSTEM_NAMESPACES.contains(&ns.as_str()) {
            continue;
        }
        let Some(spec) = &svc.spec else { continue };
        // The control plane's own Services are skipped.
        if is_control_plane(&svc.metadata) {
            continue;
        }
        let external = spec.type_.as_deref() == Some("ExternalName");
        for port in spec.ports.iter().flatten() {
            let name = port.name.as_deref().unwrap_or("");
            let app = port.app_protocol.as_deref();
            let protocol = port_protocol(name, port.protocol.as_deref(), app);
            if external {
                if protocol.is_none() || name == "tcp" {
                    report.push(
                        EXTERNAL_NAME_INVALID_PORT_NAME,
                        o,
                        "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for ports serving TCP protocol from being forwarded correctly".into(),
                    );
                }
                continue;
            }
            if protocol.is_some() {
                continue;
            }
            let target = match &port.target_port {
                Some(IntOrString::Int(n)) => n.to_string(),
                Some(IntOrString::String(s)) => s.clone(),
                None => port.port.to_string(),
            };
            report.push(
                PORT_NAME_NOT_UNDER_CONVENTION,
                o,
                format!(
                    "Port name {name} (port: {}, targetPort: {target}) doesn't follow the naming convention of Istio port.",
                    port.port
                ),
            );
        }
    }
}
