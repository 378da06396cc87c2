//! DestinationRule analyzers: TLS origination that does not verify the server, and
//! client TLS that contradicts the PeerAuthentication of the destination's namespace.

use super::context::{CLUSTER_DOMAIN, full_name, to_fqdn};
use super::messages::*;
use super::{Analyzer, Context, Report};
use crate::generated::networking::{ClientTlsMode, ClientTlsSettings};
use crate::generated::security::MutualTlsMode;
use crate::load::LoadedObject;

/// `destinationrule.CaCertificateAnalyzer`.
pub const CA_CERTIFICATE: Analyzer = Analyzer {
    name: "destinationrule.CaCertificateAnalyzer",
    description: "Checks if caCertificates is set when TLS mode is SIMPLE/MUTUAL",
    codes: &[
        NO_SERVER_CERT_VERIFICATION_DESTINATION,
        NO_SERVER_CERT_VERIFICATION_PORT,
    ],
    run: run_ca,
};

/// `auth.MTLSAnalyzer`.
pub const MTLS_CONFLICT: Analyzer = Analyzer {
    name: "auth.MTLSAnalyzer",
    description: "Checks for conflicts between a DestinationRule's client TLS and the PeerAuthentication of its host's namespace",
    codes: &[MTLS_POLICY_CONFLICT],
    run: run_mtls,
};

/// The TLS mode when it originates TLS (SIMPLE or MUTUAL) without `caCertificates`.
/// Like Istio, a `credentialName` or `insecureSkipVerify` does not count.
fn unverified(tls: Option<&ClientTlsSettings>) -> Option<&'static str> {
    let tls = tls?;
    let mode = tls.mode?;
    let ca = tls
        .ca_certificates
        .as_deref()
        .is_some_and(|s| !s.is_empty());
    (matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) && !ca).then(|| mode.as_str())
}

fn run_ca(ctx: &Context<'_>, report: &mut Report) {
    for (o, dr) in ctx.destination_rules() {
        let r = o.object.object_ref();
        let host = &dr.spec.host;
        let Some(policy) = &dr.spec.traffic_policy else {
            continue;
        };
        if let Some(mode) = unverified(policy.tls.as_ref()) {
            report.push(
                NO_SERVER_CERT_VERIFICATION_DESTINATION,
                o,
                format!(
                    "DestinationRule {} in namespace {} has TLS mode set to {mode} but no caCertificates are set to validate server identity for host: {host}",
                    r.name, r.namespace
                ),
            );
        }
        for p in &policy.port_level_settings {
            let Some(mode) = unverified(p.tls.as_ref()) else {
                continue;
            };
            // Istio prints the port selector in protobuf's text form.
            let port = match p.port.as_ref().and_then(|p| p.number) {
                Some(n) => format!("number:{n}"),
                None => String::new(),
            };
            report.push(
                NO_SERVER_CERT_VERIFICATION_PORT,
                o,
                format!(
                    "DestinationRule {} in namespace {} has TLS mode set to {mode} but no caCertificates are set to validate server identity for host: {host} at port {port}",
                    r.name, r.namespace
                ),
            );
        }
    }
}

/// The namespace-wide PeerAuthentication in force in `ns` (its own, else the mesh-wide one
/// in the root namespace), with its mode.
fn peer_policy<'c>(ctx: &'c Context<'_>, ns: &str) -> Option<(&'c LoadedObject, MutualTlsMode)> {
    let wide = |want: &str| {
        ctx.peer_authentications().find_map(|(o, pa)| {
            let selector = pa
                .spec
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty());
            let mode = pa
                .spec
                .mtls
                .as_ref()
                .and_then(|m| m.mode)
                .unwrap_or_default();
            (o.object.object_ref().namespace == want && !selector && mode != MutualTlsMode::Unset)
                .then_some((o, mode))
        })
    };
    wide(ns).or_else(|| wide(ctx.istio_namespace()))
}

fn run_mtls(ctx: &Context<'_>, report: &mut Report) {
    for (o, dr) in ctx.destination_rules() {
        let Some(mode) = dr
            .spec
            .traffic_policy
            .as_ref()
            .and_then(|p| p.tls.as_ref())
            .and_then(|t| t.mode)
        else {
            continue;
        };
        let fqdn = to_fqdn(&o.object.object_ref().namespace, &dr.spec.host);
        // Only in-mesh Services have a namespace whose policy applies.
        let Some(host_ns) = fqdn
            .strip_suffix(&format!(".{CLUSTER_DOMAIN}"))
            .and_then(|n| n.split_once('.'))
            .map(|(_, ns)| ns.to_string())
        else {
            continue;
        };
        let Some((pa, pa_mode)) = peer_policy(ctx, &host_ns) else {
            continue;
        };
        let mtls = mode == ClientTlsMode::IstioMutual;
        let conflict = match pa_mode {
            MutualTlsMode::Strict => !mtls,
            MutualTlsMode::Disable => mtls,
            _ => false,
        };
        if conflict {
            report.push(
                MTLS_POLICY_CONFLICT,
                o,
                format!(
                    "A DestinationRule and Policy are in conflict with regards to mTLS for host {fqdn}. The DestinationRule {:?} specifies that mTLS must be {mtls} but the Policy object {:?} specifies {}.",
                    full_name(o),
                    full_name(pa),
                    pa_mode.as_str()
                ),
            );
        }
    }
}
