//! `injection.Analyzer`: namespaces not labelled for sidecar injection, namespaces with
//! both kinds of injection label, and Pods that should have a proxy and have none.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;

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
        // Istio checks the Pods of injected namespaces that do not opt out, and not those
        // on the host's network.
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        if injected_ns.contains(&r.namespace)
            && injection_choice(pod) != Some(false)
            && !host_network
            && !has_proxy(pod)
        {
            report.push(
                POD_MISSING_PROXY,
                o,
                format!(
                    "The pod {}/{} is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.",
                    r.namespace, r.name
                ),
            );
        }
    }
}

/// True when the Pod runs the proxy (as a container or a native sidecar).
fn has_proxy(pod: &core::Pod) -> bool {
    let spec = pod.spec.as_ref();
    let containers = spec.into_iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    containers.into_iter().any(|c| c.name == "istio-proxy")
}

/// The Pod's own `sidecar.istio.io/inject` label (or else annotation), when it has one.
fn injection_choice(pod: &core::Pod) -> Option<bool> {
    let m = &pod.metadata;
    let key = "sidecar.istio.io/inject";
    let label = m.labels.as_ref().and_then(|l| l.get(key));
    let says = label.or_else(|| m.annotations.as_ref().and_then(|a| a.get(key)))?;
    if says.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        Some(says.eq_ignore_ascii_case("true"))
    }
}

/// Istio's "in the mesh": the Pod has the proxy, or will get one.
pub(super) fn pod_in_mesh(ctx: &Context<'_>, pod: &core::Pod) -> bool {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let injected_ns = ctx.namespaces().any(|(_, n)| {
        n.metadata.name.as_deref() == Some(ns) && n.metadata.labels.as_ref().is_some_and(injected)
    });
    has_proxy(pod) || injection_choice(pod).unwrap_or(injected_ns)
}
