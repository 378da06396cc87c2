//! `deprecation.DeprecationAnalyzer`: fields Istio has deprecated or ignores.

use super::messages::*;
use super::{Analyzer, Context, Report};

/// The analyzer.
pub const FIELDS: Analyzer = Analyzer {
    name: "deprecation.DeprecationAnalyzer",
    description: "Checks for deprecated Istio types and fields",
    codes: &[DEPRECATED],
    run,
};

fn run(ctx: &Context<'_>, report: &mut Report) {
    for (o, vs) in ctx.virtual_services() {
        let delays = vs
            .spec
            .http
            .iter()
            .filter_map(|h| h.fault.as_ref()?.delay.as_ref());
        if delays.into_iter().any(|d| d.percent.is_some_and(|p| p > 0)) {
            report.push(
                DEPRECATED,
                o,
                "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage".into(),
            );
        }
    }
    for (o, sc) in ctx.sidecars() {
        let policy = sc.spec.outbound_traffic_policy.as_ref();
        if policy.is_some_and(|p| p.egress_proxy.is_some()) {
            report.push(
                DEPRECATED,
                o,
                "Deprecated: OutboundTrafficPolicy.EgressProxy ignored".into(),
            );
        }
    }
}
