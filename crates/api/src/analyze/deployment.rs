//! `applicationUID.Analyzer`: application containers running as the user ID the sidecar
//! proxy uses (1337), whose traffic the proxy would not capture.

use super::context::{is_control_plane, is_default};
use super::messages::*;
use super::{Analyzer, Context, Report};

/// The analyzer.
pub const APPLICATION_UID: Analyzer = Analyzer {
    name: "applicationUID.Analyzer",
    description: "Checks invalid application UID",
    codes: &[INVALID_APPLICATION_UID],
    run,
};

/// The user ID of the sidecar proxy.
const PROXY_UID: i64 = 1337;

fn run(ctx: &Context<'_>, report: &mut Report) {
    for (o, pod) in ctx.pods() {
        let Some(spec) = pod.spec.as_ref().filter(|_| !is_default(o)) else {
            continue;
        };
        if is_control_plane(&pod.metadata) {
            continue;
        }
        let pod_uid = spec.security_context.as_ref().and_then(|s| s.run_as_user);
        let containers = spec
            .containers
            .iter()
            .filter(|c| c.name != "istio-proxy" && c.name != "istio-operator");
        let container_uid = containers
            .into_iter()
            .any(|c| c.security_context.as_ref().and_then(|s| s.run_as_user) == Some(PROXY_UID));
        if pod_uid == Some(PROXY_UID) || container_uid {
            report.push(
                INVALID_APPLICATION_UID,
                o,
                "User ID (UID) 1337 is reserved for the sidecar proxy.".into(),
            );
        }
    }
}
