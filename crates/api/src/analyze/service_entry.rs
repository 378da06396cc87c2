//! `serviceentry.Analyzer` (Istio's ProtocolAddressesAnalyzer): a ServiceEntry with TCP (or unnamed
//! protocol) ports and no addresses, when the mesh does not allocate addresses itself.

use super::messages::*;
use super::{Analyzer, Context, Report};

/// The analyzer.
pub const PROTOCOL_ADDRESSES: Analyzer = Analyzer {
    name: "serviceentry.Analyzer",
    description: "Checks the validity of ServiceEntry",
    codes: &[SERVICE_ENTRY_ADDRESSES_REQUIRED],
    run,
};

fn run(ctx: &Context<'_>, report: &mut Report) {
    let meta = &ctx.mesh.default_config.proxy_metadata;
    let on = |k: &str| meta.get(k).is_some_and(|v| v == "true");
    if on("ISTIO_META_DNS_AUTO_ALLOCATE") && on("ISTIO_META_DNS_CAPTURE") {
        return;
    }
    for (o, se) in ctx.service_entries() {
        let labels = o.object.metadata().labels.as_ref();
        let auto = labels.and_then(|l| l.get("networking.istio.io/enable-autoallocate-ip"));
        if !se.spec.addresses.is_empty() || auto.is_some_and(|v| v == "true") {
            continue;
        }
        let tcp = se.spec.ports.iter().any(|p| {
            p.protocol
                .as_deref()
                .is_none_or(|p| p.is_empty() || p.eq_ignore_ascii_case("TCP"))
        });
        if tcp {
            report.push(
                SERVICE_ENTRY_ADDRESSES_REQUIRED,
                o,
                "ServiceEntry addresses are required for this protocol.".into(),
            );
        }
    }
}
