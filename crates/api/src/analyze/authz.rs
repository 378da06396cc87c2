//! `auth.AuthorizationPoliciesAnalyzer`: policies that apply to no workload in the mesh,
//! and source namespaces that do not exist.

use super::context::selector_text;
use super::injection::pod_in_mesh;
use super::messages::*;
use super::{Analyzer, Context, Report};

/// The analyzer.
pub const AUTHORIZATION_POLICIES: Analyzer = Analyzer {
    name: "auth.AuthorizationPoliciesAnalyzer",
    description: "Checks the validity of authorization policies",
    codes: &[NO_MATCHING_WORKLOADS_FOUND, REFERENCED_RESOURCE_NOT_FOUND],
    run,
};

/// Istio's namespace patterns: exact, `prefix*`, `*suffix` or `*`.
fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        name.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        name.ends_with(suffix)
    } else {
        pattern == name
    }
}

fn run(ctx: &Context<'_>, report: &mut Report) {
    let namespaces: Vec<String> = ctx
        .namespaces()
        .filter_map(|(_, n)| n.metadata.name.clone())
        .collect();
    for (o, ap) in ctx.authorization_policies() {
        let ns = o.object.object_ref().namespace;
        let selector = ap.spec.selector.as_ref().map(|s| &s.match_labels);
        // Only Pods in the mesh count. A mesh-wide policy (root namespace) selects in
        // every namespace; one without a selector applies to its whole namespace.
        let mesh_wide = ns == ctx.istio_namespace();
        let scope = (!mesh_wide).then_some(ns.as_str());
        let empty = Default::default();
        let in_mesh = ctx
            .pods_selected(scope, selector.unwrap_or(&empty))
            .any(|(_, p)| pod_in_mesh(ctx, p));
        if !in_mesh && (selector.is_some() || !mesh_wide) {
            report.push(
                NO_MATCHING_WORKLOADS_FOUND,
                o,
                format!(
                    "No matching workloads for this resource with the following labels: {}",
                    selector.map(selector_text).unwrap_or_default()
                ),
            );
        }
        let sources = ap
            .spec
            .rules
            .iter()
            .flat_map(|r| r.from.iter())
            .filter_map(|f| f.source.as_ref());
        for want in sources.flat_map(|s| s.namespaces.iter().chain(s.not_namespaces.iter())) {
            if !namespaces.iter().any(|n| pattern_matches(want, n)) {
                report.push(
                    REFERENCED_RESOURCE_NOT_FOUND,
                    o,
                    format!("Referenced namespace not found: {want:?}"),
                );
            }
        }
    }
}
