//! `injection.Analyzer`: namespaces not labelled for sidecar injection, namespaces with
//! both kinds of injection label, and Pods that should have a proxy and have none.

use std::collections::BTreeMap;

use super::context::is_default;
use super::messages::*;
use super::{Analyzer, Context, Report};

/// The analyzer.
pub const INJECTION: Analyzer = Analyzer {
    name: "injection.Analyzer",
    description: "Checks conditions related to Istio sidecar injection",
    codes: &[
        NAMESPACE_NOT_INJECTED,
        NAMESPACE_MULTIPLE_INJECTION_LABELS,
        POD_MISSING_PROXY,
    ],
    run,
};

/// Namespaces Kubernetes runs itself, never injected.
pub(super) const SYSTEM_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

const INJECTION_LABEL: &str = "istio-injection";
const REVISION_LABEL: &str = "istio.io/rev";

fn skipped(ctx: &Context<'_>, ns: &str) -> bool {
    SYSTEM_NAMESPACES.contains(&ns) || ns == ctx.istio_namespace()
}

/// True when Pods of a namespace with these labels get a sidecar.
fn injected(labels: &BTreeMap<String, String>) -> bool {
    labels.get(INJECTION_LABEL).map(String::as_str) == Some("enabled")
        || (labels.contains_key(REVISION_LABEL) && !labels.contains_key(INJECTION_LABEL))
}

fn run(ctx: &Context<'_>, report: &mut Report) {
    let empty = BTreeMap::new();
    let mut injected_ns = Vec::new();
    for (o, ns) in ctx.namespaces() {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let labels = ns.metadata.labels.as_ref().unwrap_or(&empty);
        if skipped(ctx, &name) {
            continue;
        }
        if injected(labels) {
            injected_ns.push(name.clone());
        }
        if labels.get("istio.io/dataplane-mode").map(String::as_str) == Some("ambient") {
            continue;
        }
        match (labels.contains_key(INJECTION_LABEL), labels.contains_key(REVISION_LABEL)) {
            (true, true) => report.push(
                NAMESPACE_MULTIPLE_INJECTION_LABELS,
                o,
                format!(
                    "The namespace has more than one type of injection labels [{INJECTION_LABEL} {REVISION_LABEL}], which may lead to undefined behavior. Make sure only one injection label exists."
                ),
            ),
            (false, false) => report.push(
                NAMESPACE_NOT_INJECTED,
                o,
                format!(
                    "The namespace is not enabled for Istio injection. Run 'kubectl label namespace {name} istio-injection=enabled' to enable it, or 'kubectl label namespace {name} istio-injection=disabled' to explicitly mark it as not needing injection."
                ),
            ),
            _ => {}
        }
    }
    for (o, pod) in ctx.pods() {
        let r = o.object.object_ref();
        if is_default(o) || skipped(ctx, &r.namespace) {
            continue;
        }
        let m = &pod.metadata;
        let says = |key: &str| {
            let label = m.labels.as_ref().and_then(|l| l.get(key));
            label
                .or_else(|| m.annotations.as_ref().and_then(|a| a.get(key)))
                .cloned()
        };
        let wanted = match says("sidecar.istio.io/inject").as_deref() {
            Some("false") => false,
            Some("true") => true,
            _ => injected_ns.contains(&r.namespace),
        };
        let spec = pod.spec.as_ref();
        let containers = spec.into_iter().flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        });
        let has_proxy = containers.into_iter().any(|c| c.name == "istio-proxy");
        if wanted && !has_proxy {
            report.push(
                POD_MISSING_PROXY,
                o,
                format!(
                    "The pod {} is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.",
                    r.name
                ),
            );
        }
    }
}
