//! `auth.AuthorizationPoliciesAnalyzer`: policies whose selector matches no workload, and
//! source namespaces that do not exist.

use super::context::selector_text;
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
        if let Some(sel) = selector.filter(|s| !s.is_empty()) {
            let scope = (ns != ctx.istio_namespace()).then_some(ns.as_str());
            if ctx.pods_selected(scope, sel).next().is_none() {
                report.push(
                    NO_MATCHING_WORKLOADS_FOUND,
                    o,
                    format!(
                        "No matching workloads for this resource with the following labels: {}",
                        selector_text(sel)
                    ),
                );
            }
        }
        let sources = ap
            .spec
            .rules
            .iter()
            .flat_map(|r| r.from.iter())
            .filter_map(|f| f.source.as_ref());
        for want in sources.flat_map(|s| s.namespaces.iter()) {
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
