//! Sidecar analyzers: workload selectors that select nothing or the same Pod, and more
//! than one namespace-wide Sidecar. Telemetry resources follow the same rules, so the
//! checks are shared. Messages name the resources by name, as Istio does.

use std::collections::{BTreeMap, BTreeSet};

use super::messages::*;
use super::{Analyzer, Context, Report};
use crate::load::LoadedObject;

/// `sidecar.DefaultSelectorAnalyzer`.
pub const DEFAULT_SELECTOR: Analyzer = Analyzer {
    name: "sidecar.DefaultSelectorAnalyzer",
    description: "Validates that there aren't multiple sidecar resources that have no selector",
    codes: &[MULTIPLE_SIDECARS_WITHOUT_SELECTORS],
    run: |ctx, report| {
        let items = sidecars(ctx);
        no_selector_conflicts(
            &items,
            "Sidecars",
            MULTIPLE_SIDECARS_WITHOUT_SELECTORS,
            report,
        );
    },
};

/// `sidecar.SelectorAnalyzer`.
pub const SELECTOR: Analyzer = Analyzer {
    name: "sidecar.SelectorAnalyzer",
    description: "Validates that sidecars that define a workload selector match at least one pod, and that there aren't multiple sidecar resources that select overlapping pods",
    codes: &[
        REFERENCED_RESOURCE_NOT_FOUND,
        CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
    ],
    run: |ctx, report| {
        let items = sidecars(ctx);
        selector_conflicts(
            ctx,
            &items,
            "Sidecars",
            CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
            report,
        );
    },
};

/// A resource and its workload selector, if any.
pub(super) type Selected<'c> = (&'c LoadedObject, Option<&'c BTreeMap<String, String>>);

fn sidecars<'c>(ctx: &'c Context<'_>) -> Vec<Selected<'c>> {
    ctx.sidecars()
        .map(|(o, s)| (o, s.spec.workload_selector.as_ref().map(|w| &w.labels)))
        .collect()
}

/// More than one resource without a selector in a namespace: each is reported.
pub(super) fn no_selector_conflicts(
    items: &[Selected<'_>],
    plural: &str,
    kind: &'static MessageType,
    report: &mut Report,
) {
    let mut by_ns: BTreeMap<String, Vec<&LoadedObject>> = BTreeMap::new();
    for (o, sel) in items {
        // As in Istio, an empty selector is still a selector.
        if sel.is_none() {
            by_ns
                .entry(o.object.object_ref().namespace)
                .or_default()
                .push(o);
        }
    }
    for (ns, list) in by_ns {
        if list.len() < 2 {
            continue;
        }
        let names: Vec<String> = list.iter().map(|o| o.object.object_ref().name).collect();
        for o in list {
            report.push(
                kind,
                o,
                format!(
                    "The {plural} [{}] in namespace {ns:?} have no workload selector, which can lead to undefined behavior.",
                    names.join(" ")
                ),
            );
        }
    }
}

/// Selectors that select no Pod of their namespace, and Pods that several select.
pub(super) fn selector_conflicts(
    ctx: &Context<'_>,
    items: &[Selected<'_>],
    plural: &str,
    kind: &'static MessageType,
    report: &mut Report,
) {
    // pod (namespace, name) -> the resources that select it
    let mut by_pod: BTreeMap<(String, String), Vec<&LoadedObject>> = BTreeMap::new();
    for (o, sel) in items {
        let Some(sel) = sel.filter(|s| !s.is_empty()) else {
            continue;
        };
        let ns = o.object.object_ref().namespace;
        let mut any = false;
        for (p, _) in ctx.pods_selected(Some(&ns), sel) {
            any = true;
            by_pod
                .entry((ns.clone(), p.object.object_ref().name))
                .or_default()
                .push(o);
        }
        if !any && !ctx.workload_entry_selected(&ns, sel) {
            report.push(
                REFERENCED_RESOURCE_NOT_FOUND,
                o,
                format!(
                    "Referenced selector not found: {:?}",
                    super::context::selector_text(sel)
                ),
            );
        }
    }
    for ((ns, pod), list) in by_pod {
        if list.len() < 2 {
            continue;
        }
        let names: BTreeSet<String> = list.iter().map(|o| o.object.object_ref().name).collect();
        let names: Vec<String> = names.into_iter().collect();
        for o in list {
            report.push(
                kind,
                o,
                format!(
                    "The {plural} [{}] in namespace {ns:?} select the same workload pod {pod:?}, which can lead to undefined behavior.",
                    names.join(" ")
                ),
            );
        }
    }
}
