//! `annotations.K8sAnalyzer`: Istio annotations on Kubernetes resources that Istio does
//! not know, that belong on another kind, that are deprecated, or whose value is wrong.

use super::context::is_default;
use super::messages::*;
use super::{Analyzer, Context, Report};
use crate::resource::Kind;

/// The analyzer.
pub const K8S: Analyzer = Analyzer {
    name: "annotations.K8sAnalyzer",
    description: "Checks for misplaced and invalid Istio annotations in Kubernetes resources",
    codes: &[
        UNKNOWN_ANNOTATION,
        MISPLACED_ANNOTATION,
        DEPRECATED_ANNOTATION,
        INVALID_ANNOTATION,
    ],
    run,
};

/// Where an annotation may go.
#[derive(Clone, Copy)]
enum On {
    Any,
    Ingress,
    Pod,
    Service,
}

/// The value an annotation takes, as far as Istio checks it.
#[derive(Clone, Copy)]
enum Value {
    /// Not checked.
    Text,
    /// `true` or `false` (Go's spellings).
    Bool,
    /// A port number.
    Port,
    /// An unsigned 32-bit number.
    UInt,
    /// `*` or a comma-separated list of port numbers.
    Ports,
    /// `*` or a comma-separated list of CIDR ranges.
    Cidrs,
    /// `REDIRECT`, `TPROXY` or `NONE`.
    Interception,
}

use On::{Any, Ingress, Pod, Service};
use Value::{Bool, Cidrs, Interception, Port, Ports, Text, UInt};

const INJECT: &str = "sidecar.istio.io/inject";

/// Istio's annotations that can appear on the Kubernetes kinds meshwork reads: name,
/// where it goes, its value, and whether it is deprecated.
#[rustfmt::skip]
const ANNOTATIONS: &[(&str, On, Value, bool)] = &[
    ("galley.istio.io/analyze-suppress", Any, Text, false),
    ("kubernetes.io/ingress.class", Ingress, Text, false),
    ("ambient.istio.io/redirection", Pod, Text, false),
    ("ambient.istio.io/bypass-inbound-capture", Pod, Text, false),
    ("inject.istio.io/templates", Pod, Text, false),
    ("istio.io/rev", Pod, Text, false),
    ("networking.istio.io/exportTo", Service, Text, false),
    ("networking.istio.io/traffic-distribution", Service, Text, false),
    ("prometheus.istio.io/merge-metrics", Pod, Bool, false),
    ("proxy.istio.io/config", Pod, Text, false),
    ("proxy.istio.io/overrides", Pod, Text, false),
    ("readiness.status.sidecar.istio.io/applicationPorts", Pod, Text, false),
    ("readiness.status.sidecar.istio.io/failureThreshold", Pod, UInt, false),
    ("readiness.status.sidecar.istio.io/initialDelaySeconds", Pod, UInt, false),
    ("readiness.status.sidecar.istio.io/periodSeconds", Pod, UInt, false),
    ("sidecar.istio.io/agentLogLevel", Pod, Text, false),
    ("sidecar.istio.io/bootstrapOverride", Pod, Text, false),
    ("sidecar.istio.io/componentLogLevel", Pod, Text, false),
    ("sidecar.istio.io/controlPlaneAuthPolicy", Pod, Text, true),
    ("sidecar.istio.io/discoveryAddress", Pod, Text, true),
    ("sidecar.istio.io/enableCoreDump", Pod, Bool, false),
    ("sidecar.istio.io/extraStatTags", Pod, Text, true),
    (INJECT, Pod, Text, true),
    ("sidecar.istio.io/interceptionMode", Pod, Interception, false),
    ("sidecar.istio.io/logLevel", Pod, Text, false),
    ("sidecar.istio.io/nativeSidecar", Pod, Text, false),
    ("sidecar.istio.io/proxyCPU", Pod, Text, false),
    ("sidecar.istio.io/proxyCPULimit", Pod, Text, false),
    ("sidecar.istio.io/proxyImage", Pod, Text, false),
    ("sidecar.istio.io/proxyImageType", Pod, Text, false),
    ("sidecar.istio.io/proxyMemory", Pod, Text, false),
    ("sidecar.istio.io/proxyMemoryLimit", Pod, Text, false),
    ("sidecar.istio.io/rewriteAppHTTPProbers", Pod, Text, false),
    ("sidecar.istio.io/statsHistogramBuckets", Pod, Text, false),
    ("sidecar.istio.io/statsInclusionPrefixes", Pod, Text, true),
    ("sidecar.istio.io/statsInclusionRegexps", Pod, Text, true),
    ("sidecar.istio.io/statsInclusionSuffixes", Pod, Text, true),
    ("sidecar.istio.io/status", Pod, Text, false),
    ("sidecar.istio.io/userVolume", Pod, Text, false),
    ("sidecar.istio.io/userVolumeMount", Pod, Text, false),
    ("status.sidecar.istio.io/port", Pod, Port, false),
    ("traffic.sidecar.istio.io/excludeInboundPorts", Pod, Ports, false),
    ("traffic.sidecar.istio.io/excludeInterfaces", Pod, Text, false),
    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", Pod, Cidrs, false),
    ("traffic.sidecar.istio.io/excludeOutboundPorts", Pod, Ports, false),
    ("traffic.sidecar.istio.io/includeInboundPorts", Pod, Ports, false),
    ("traffic.sidecar.istio.io/includeOutboundIPRanges", Pod, Cidrs, false),
    ("traffic.sidecar.istio.io/includeOutboundPorts", Pod, Ports, false),
    ("traffic.sidecar.istio.io/kubevirtInterfaces", Pod, Text, false),
];

/// The annotation names Istio checks: those whose domain ends in `istio.io`, and
/// `kubernetes.io/ingress.class`, which Istio documents (it belongs on Ingresses).
fn is_istio(name: &str) -> bool {
    name == "kubernetes.io/ingress.class"
        || name
            .split_once('/')
            .is_some_and(|(domain, _)| domain.ends_with("istio.io"))
}

/// Why `value` is not valid for `kind`, if it is not.
fn invalid(kind: Value, value: &str) -> Option<String> {
    let port = |p: &str| p.trim().parse::<u16>().is_ok_and(|n| n > 0);
    let cidr = |c: &str| c.trim().parse::<ipnet::IpNet>().is_ok();
    let list = |ok: &dyn Fn(&str) -> bool| {
        value == "*" || value.split(',').all(|p| p.trim().is_empty() || ok(p))
    };
    let (ok, what) = match kind {
        Text => (true, ""),
        Bool => (
            matches!(
                value,
                "1" | "t"
                    | "T"
                    | "TRUE"
                    | "true"
                    | "True"
                    | "0"
                    | "f"
                    | "F"
                    | "FALSE"
                    | "false"
                    | "False"
            ),
            "a boolean",
        ),
        Port => (port(value), "a port number"),
        UInt => (value.parse::<u32>().is_ok(), "an unsigned number"),
        Ports => (list(&port), "\"*\" or a list of port numbers"),
        Cidrs => (list(&cidr), "\"*\" or a list of CIDR ranges"),
        Interception => (
            matches!(value, "REDIRECT" | "TPROXY" | "NONE"),
            "one of REDIRECT, TPROXY, NONE",
        ),
    };
    (!ok).then(|| format!("{value:?} is not {what}"))
}

fn run(ctx: &Context<'_>, report: &mut Report) {
    for o in &ctx.objects {
        let kind = o.object.kind();
        if is_default(o) || !matches!(kind, Kind::Namespace | Kind::Service | Kind::Pod) {
            continue;
        }
        let meta = o.object.metadata();
        let Some(annotations) = &meta.annotations else {
            continue;
        };
        for (name, value) in annotations {
            if !is_istio(name) {
                continue;
            }
            let Some(&(_, on, check, deprecated)) = ANNOTATIONS.iter().find(|d| d.0 == name) else {
                report.push(UNKNOWN_ANNOTATION, o, format!("Unknown annotation: {name}"));
                continue;
            };
            // The inject annotation gave way to the label of the same name; with both,
            // the user knows.
            let has_label = meta.labels.as_ref().is_some_and(|l| l.contains_key(name));
            if deprecated && !(name == INJECT && has_label) {
                let extra = if name == INJECT {
                    format!(" in favor of the {INJECT:?} label")
                } else {
                    String::new()
                };
                report.push(
                    DEPRECATED_ANNOTATION,
                    o,
                    format!(
                        "Annotation {name:?} has been deprecated{extra} and may not work in future Istio versions."
                    ),
                );
            }
            let (fits, kinds) = match on {
                Any => (true, "any resource"),
                Ingress => (false, "Ingress"),
                Pod => (kind == Kind::Pod, "Pod"),
                Service => (kind == Kind::Service, "Service"),
            };
            if !fits {
                report.push(
                    MISPLACED_ANNOTATION,
                    o,
                    format!("Misplaced annotation: {name} can only be applied to {kinds}"),
                );
                continue;
            }
            if let Some(problem) = invalid(check, value) {
                report.push(
                    INVALID_ANNOTATION,
                    o,
                    format!("Invalid annotation {name}: {problem}"),
                );
            }
        }
    }
}
