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
    Pod,
    Service,
}

/// The value an annotation takes.
#[derive(Clone, Copy, PartialEq)]
enum Value {
    Bool,
    Text,
}

struct Def {
    name: &'static str,
    on: On,
    value: Value,
    deprecated: bool,
}

const fn def(name: &'static str, on: On, value: Value, deprecated: bool) -> Def {
    Def {
        name,
        on,
        value,
        deprecated,
    }
}

use On::{Any, Pod, Service};
use Value::{Bool, Text};

/// Istio's annotations that can appear on the Kubernetes kinds meshwork reads.
const ANNOTATIONS: &[Def] = &[
    def("galley.istio.io/analyze-suppress", Any, Text, false),
    def("ambient.istio.io/redirection", Pod, Text, false),
    def("ambient.istio.io/bypass-inbound-capture", Pod, Bool, false),
    def("inject.istio.io/templates", Pod, Text, false),
    def("istio.io/rev", Pod, Text, false),
    def("networking.istio.io/exportTo", Service, Text, false),
    def(
        "networking.istio.io/traffic-distribution",
        Service,
        Text,
        false,
    ),
    def("prometheus.istio.io/merge-metrics", Pod, Bool, false),
    def("proxy.istio.io/config", Pod, Text, false),
    def("proxy.istio.io/overrides", Pod, Text, false),
    def(
        "readiness.status.sidecar.istio.io/applicationPorts",
        Pod,
        Text,
        false,
    ),
    def(
        "readiness.status.sidecar.istio.io/failureThreshold",
        Pod,
        Text,
        false,
    ),
    def(
        "readiness.status.sidecar.istio.io/initialDelaySeconds",
        Pod,
        Text,
        false,
    ),
    def(
        "readiness.status.sidecar.istio.io/periodSeconds",
        Pod,
        Text,
        false,
    ),
    def("sidecar.istio.io/agentLogLevel", Pod, Text, false),
    def("sidecar.istio.io/bootstrapOverride", Pod, Text, false),
    def("sidecar.istio.io/componentLogLevel", Pod, Text, false),
    def("sidecar.istio.io/controlPlaneAuthPolicy", Pod, Text, true),
    def("sidecar.istio.io/discoveryAddress", Pod, Text, true),
    def("sidecar.istio.io/enableCoreDump", Pod, Bool, false),
    def("sidecar.istio.io/extraStatTags", Pod, Text, true),
    def("sidecar.istio.io/inject", Pod, Bool, false),
    def("sidecar.istio.io/interceptionMode", Pod, Text, false),
    def("sidecar.istio.io/logLevel", Pod, Text, false),
    def("sidecar.istio.io/nativeSidecar", Pod, Bool, false),
    def("sidecar.istio.io/proxyCPU", Pod, Text, false),
    def("sidecar.istio.io/proxyCPULimit", Pod, Text, false),
    def("sidecar.istio.io/proxyImage", Pod, Text, false),
    def("sidecar.istio.io/proxyImageType", Pod, Text, false),
    def("sidecar.istio.io/proxyMemory", Pod, Text, false),
    def("sidecar.istio.io/proxyMemoryLimit", Pod, Text, false),
    def("sidecar.istio.io/rewriteAppHTTPProbers", Pod, Bool, false),
    def("sidecar.istio.io/statsHistogramBuckets", Pod, Text, false),
    def("sidecar.istio.io/statsInclusionPrefixes", Pod, Text, true),
    def("sidecar.istio.io/statsInclusionRegexps", Pod, Text, true),
    def("sidecar.istio.io/statsInclusionSuffixes", Pod, Text, true),
    def("sidecar.istio.io/status", Pod, Text, false),
    def("sidecar.istio.io/userVolume", Pod, Text, false),
    def("sidecar.istio.io/userVolumeMount", Pod, Text, false),
    def("status.sidecar.istio.io/port", Pod, Text, false),
    def(
        "traffic.sidecar.istio.io/excludeInboundPorts",
        Pod,
        Text,
        false,
    ),
    def(
        "traffic.sidecar.istio.io/excludeInterfaces",
        Pod,
        Text,
        false,
    ),
    def(
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        Pod,
        Text,
        false,
    ),
    def(
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        Pod,
        Text,
        false,
    ),
    def(
        "traffic.sidecar.istio.io/includeInboundPorts",
        Pod,
        Text,
        false,
    ),
    def(
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        Pod,
        Text,
        false,
    ),
    def(
        "traffic.sidecar.istio.io/includeOutboundPorts",
        Pod,
        Text,
        false,
    ),
    def(
        "traffic.sidecar.istio.io/kubevirtInterfaces",
        Pod,
        Text,
        false,
    ),
];

/// The annotation names of Istio: those whose domain is `istio.io` or under it.
fn is_istio(name: &str) -> bool {
    name.split_once('/')
        .is_some_and(|(domain, _)| domain == "istio.io" || domain.ends_with(".istio.io"))
}

/// Go's `strconv.ParseBool`, which Istio uses for boolean annotations.
fn is_bool(v: &str) -> bool {
    matches!(
        v,
        "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False"
    )
}

fn run(ctx: &Context<'_>, report: &mut Report) {
    for o in &ctx.objects {
        let kind = o.object.kind();
        if is_default(o) || !matches!(kind, Kind::Namespace | Kind::Service | Kind::Pod) {
            continue;
        }
        let Some(annotations) = &o.object.metadata().annotations else {
            continue;
        };
        for (name, value) in annotations {
            if !is_istio(name) {
                continue;
            }
            let Some(d) = ANNOTATIONS.iter().find(|d| d.name == name) else {
                report.push(UNKNOWN_ANNOTATION, o, format!("Unknown annotation: {name}"));
                continue;
            };
            if d.deprecated {
                report.push(
                    DEPRECATED_ANNOTATION,
                    o,
                    format!("Annotation {name:?} has been deprecated and may not work in future Istio versions."),
                );
            }
            let (fits, kinds) = match d.on {
                On::Any => (true, "any resource"),
                On::Pod => (kind == Kind::Pod, "Pod"),
                On::Service => (kind == Kind::Service, "Service"),
            };
            if !fits {
                report.push(
                    MISPLACED_ANNOTATION,
                    o,
                    format!("Misplaced annotation: {name} can only be applied to {kinds}"),
                );
                continue;
            }
            if d.value == Value::Bool && !is_bool(value) {
                report.push(
                    INVALID_ANNOTATION,
                    o,
                    format!("Invalid annotation {name}: {value:?} is not a boolean"),
                );
            }
        }
    }
}
