//! Telemetry analyzers: resources whose providers resolve to nothing, and workload
//! selectors that select nothing, the same Pod, or are missing more than once.

use super::messages::*;
use super::sidecar::{Selected, no_selector_conflicts, selector_conflicts};
use super::{Analyzer, Context, Report};

/// `telemetry.ProviderAnalyzer`.
pub const PROVIDER: Analyzer = Analyzer {
    name: "telemetry.ProviderAnalyzer",
    description: "Validates that providers in telemetry resource is valid",
    codes: &[INVALID_TELEMETRY_PROVIDER, REFERENCED_RESOURCE_NOT_FOUND],
    run: run_providers,
};

/// `telemetry.DefaultSelectorAnalyzer`.
pub const DEFAULT_SELECTOR: Analyzer = Analyzer {
    name: "telemetry.DefaultSelectorAnalyzer",
    description: "Validates that there aren't multiple telemetry resources that have no selector",
    codes: &[MULTIPLE_TELEMETRIES_WITHOUT_SELECTORS],
    run: |ctx, report| {
        let items = telemetries(ctx);
        no_selector_conflicts(
            &items,
            "Telemetries",
            MULTIPLE_TELEMETRIES_WITHOUT_SELECTORS,
            report,
        );
    },
};

/// `telemetry.SelectorAnalyzer`.
pub const SELECTOR: Analyzer = Analyzer {
    name: "telemetry.SelectorAnalyzer",
    description: "Validates that telemetries that define a selector match at least one pod, and that there aren't multiple telemetry resources that select overlapping pods",
    codes: &[
        REFERENCED_RESOURCE_NOT_FOUND,
        CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS,
    ],
    run: |ctx, report| {
        let items = telemetries(ctx);
        selector_conflicts(
            ctx,
            &items,
            "Telemetries",
            CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS,
            report,
        );
    },
};

fn telemetries<'c>(ctx: &'c Context<'_>) -> Vec<Selected<'c>> {
    ctx.telemetries()
        .filter(|(_, t)| t.spec.target_ref.is_none() && t.spec.target_refs.is_empty())
        .map(|(o, t)| (o, t.spec.selector.as_ref().map(|s| &s.match_labels)))
        .collect()
}

fn run_providers(ctx: &Context<'_>, report: &mut Report) {
    // An access log entry without providers uses the mesh's default access log
    // providers; with none, it does nothing.
    let no_default = ctx.mesh.default_providers.access_logging.is_empty();
    for (o, t) in ctx.telemetries() {
        let s = &t.spec;
        if no_default {
            let r = o.object.object_ref();
            for _ in s.access_logging.iter().filter(|l| l.providers.is_empty()) {
                report.push(
                    INVALID_TELEMETRY_PROVIDER,
                    o,
                    format!(
                        "The Telemetry {} in namespace {:?} with empty providers will be ignored.",
                        r.name, r.namespace
                    ),
                );
            }
        }
        let tracing = s.tracing.iter().flat_map(|x| x.providers.iter());
        let metrics = s.metrics.iter().flat_map(|x| x.providers.iter());
        let logs = s.access_logging.iter().flat_map(|x| x.providers.iter());
        for p in tracing.chain(metrics).chain(logs) {
            if !p.name.is_empty() && ctx.mesh.provider(&p.name).is_none() {
                report.push(
                    REFERENCED_RESOURCE_NOT_FOUND,
                    o,
                    format!("Referenced provider not found: {:?}", p.name),
                );
            }
        }
    }
}
