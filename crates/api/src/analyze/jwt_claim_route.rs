//! `virtualservice.JWTClaimRouteAnalyzer`: routing on JWT claims at a gateway whose Pods
//! no RequestAuthentication applies to, so no claims are ever there to match.

use super::context::selects;
use super::messages::*;
use super::{Analyzer, Context, Report};
use crate::resource::VirtualService;

/// The analyzer.
pub const JWT_CLAIM_ROUTE: Analyzer = Analyzer {
    name: "virtualservice.JWTClaimRouteAnalyzer",
    description: "Checks the VirtualService using JWT claim based routing has corresponding RequestAuthentication",
    codes: &[JWT_CLAIM_ROUTING_WITHOUT_REQUEST_AUTHN],
    run,
};

/// The header-match prefix of JWT claims.
const CLAIM_PREFIX: &str = "@request.auth.claims";

fn claim_key(vs: &VirtualService) -> Option<&str> {
    let matches = vs.spec.http.iter().flat_map(|h| h.match_.iter());
    matches
        .flat_map(|m| m.headers.keys().chain(m.without_headers.keys()))
        .map(String::as_str)
        .find(|k| k.starts_with(CLAIM_PREFIX))
}

fn run(ctx: &Context<'_>, report: &mut Report) {
    for (o, vs) in ctx.virtual_services() {
        let Some(key) = claim_key(vs) else { continue };
        let ns = o.object.object_ref().namespace;
        for gw in vs.spec.gateways.iter().filter(|g| *g != "mesh") {
            let target = ctx.gateway_ref(&ns, gw);
            let (gw_ns, gw_name) = (target.ns, target.name);
            let Some((_, g)) = target.found else {
                continue;
            };
            for (p, pod) in ctx.pods_selected(None, &g.spec.selector) {
                let pod_ns = p.object.object_ref().namespace;
                let covered = ctx.request_authentications().any(|(r, ra)| {
                    let ra_ns = r.object.object_ref().namespace;
                    let selector = ra
                        .spec
                        .selector
                        .as_ref()
                        .map(|s| s.match_labels.clone())
                        .unwrap_or_default();
                    (ra_ns == ctx.istio_namespace() || ra_ns == pod_ns)
                        && selects(&selector, pod.metadata.labels.as_ref())
                });
                if !covered {
                    report.push(
                        JWT_CLAIM_ROUTING_WITHOUT_REQUEST_AUTHN,
                        o,
                        format!(
                            "The virtual service uses the JWT claim based routing (key: {key}) but found no request authentication for the gateway ({gw_ns}/{gw_name}) pod ({}). The request authentication must first be applied for the gateway pods to validate the JWT token and make the claims available for routing.",
                            p.object.object_ref().name
                        ),
                    );
                }
            }
        }
    }
}
