//! Which workloads a policy (AuthorizationPolicy, RequestAuthentication, Telemetry)
//! attaches to, by its `selector` or its `targetRef(s)`, as istiod decides it:
//!
//! - A workload that is not a Gateway API gateway (it has no
//!   `gateway.networking.k8s.io/gateway-name` label) takes only policies without
//!   `targetRef(s)`, by namespace and selector.
//! - A Gateway API gateway takes those too, and the policies of its own namespace whose
//!   `targetRef(s)` name its Gateway (`kind: Gateway`, group
//!   `gateway.networking.k8s.io`).
//! - `Service`, `ServiceEntry` and `GatewayClass` targets attach to waypoint proxies
//!   alone, and meshwork runs none: such a policy applies nowhere.

use std::collections::BTreeMap;

use meshwork_api::generated::common::{PolicyTargetReference, WorkloadSelector};

/// The label that names the Gateway API Gateway a gateway's pods serve.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The label Istio used for it before.
const OLD_GATEWAY_NAME_LABEL: &str = "istio.io/gateway-name";

const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// The Gateway API Gateway a workload serves, from its labels.
pub fn gateway_name(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels
        .get(GATEWAY_NAME_LABEL)
        .or_else(|| labels.get(OLD_GATEWAY_NAME_LABEL))
        .map(String::as_str)
}

/// Where a policy says it applies.
pub struct Attachment<'a> {
    /// The policy's namespace.
    pub namespace: &'a str,
    /// Its `selector`.
    pub selector: Option<&'a WorkloadSelector>,
    /// Its `targetRefs`, or its one `targetRef`.
    pub target_refs: Vec<&'a PolicyTargetReference>,
}

impl<'a> Attachment<'a> {
    /// From a policy's namespace and fields.
    pub fn new(
        namespace: Option<&'a str>,
        selector: Option<&'a WorkloadSelector>,
        target_ref: Option<&'a PolicyTargetReference>,
        target_refs: &'a [PolicyTargetReference],
    ) -> Attachment<'a> {
        Attachment {
            namespace: namespace.unwrap_or_default(),
            selector,
            target_refs: if target_refs.is_empty() {
                target_ref.into_iter().collect()
            } else {
                target_refs.iter().collect()
            },
        }
    }

    /// Whether it names neither a selector nor targets: it applies to its whole
    /// namespace (to the mesh, in the root namespace).
    pub fn is_namespace_wide(&self) -> bool {
        self.selector.is_none() && self.target_refs.is_empty()
    }

    /// Whether it attaches to a workload in `namespace` with `labels`. Without targets,
    /// that is when it is in the workload's namespace (or, `root_selects_everywhere`, in
    /// `root_namespace`) and its selector, if any, matches.
    pub fn attaches(
        &self,
        root_namespace: &str,
        root_selects_everywhere: bool,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        if self.target_refs.is_empty() {
            let in_scope = self.namespace == namespace
                || (root_selects_everywhere && self.namespace == root_namespace);
            return in_scope
                && self
                    .selector
                    .is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)));
        }
        let Some(gateway) = gateway_name(labels) else {
            return false;
        };
        self.namespace == namespace
            && self.target_refs.iter().any(|r| {
                is_kind(r, GATEWAY_API_GROUP, "Gateway")
                    && r.namespace.as_deref().is_none_or(|n| n == namespace)
                    && r.name == gateway
            })
    }

    /// When every target is one only a waypoint proxy takes, why the policy applies
    /// nowhere.
    pub fn waypoint_only(&self) -> Option<String> {
        let waypoint = |r: &&PolicyTargetReference| {
            is_kind(r, "", "Service")
                || is_kind(r, "networking.istio.io", "ServiceEntry")
                || is_kind(r, GATEWAY_API_GROUP, "GatewayClass")
        };
        if self.target_refs.is_empty() || !self.target_refs.iter().all(waypoint) {
            return None;
        }
        let names: Vec<String> = self
            .target_refs
            .iter()
            .map(|r| format!("{} {}", r.kind, r.name))
            .collect();
        Some(format!(
            "its targetRefs ({}) attach to waypoint proxies, and meshwork runs none: it applies nowhere",
            names.join(", ")
        ))
    }
}

/// Whether a reference is to `group`/`kind` (`""` and `core` are the core group).
fn is_kind(r: &PolicyTargetReference, group: &str, kind: &str) -> bool {
    fn canonical(g: &str) -> &str {
        if g == "core" { "" } else { g }
    }
    r.kind == kind && canonical(r.group.as_deref().unwrap_or_default()) == canonical(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn target(group: Option<&str>, kind: &str, name: &str) -> PolicyTargetReference {
        PolicyTargetReference {
            group: group.map(str::to_string),
            kind: kind.into(),
            name: name.into(),
            namespace: None,
        }
    }

    fn at<'a>(
        namespace: &'a str,
        selector: Option<&'a WorkloadSelector>,
        refs: &'a [PolicyTargetReference],
    ) -> Attachment<'a> {
        Attachment {
            namespace,
            selector,
            target_refs: refs.iter().collect(),
        }
    }

    #[test]
    fn policies_attach_as_istiod_decides() {
        let gateway = labels(&[(GATEWAY_NAME_LABEL, "public"), ("app", "gw")]);
        let old_label = labels(&[("istio.io/gateway-name", "public")]);
        let plain = labels(&[("app", "gw")]);
        let selector = WorkloadSelector {
            match_labels: labels(&[("app", "gw")]),
        };
        let to_public = [target(Some(GATEWAY_API_GROUP), "Gateway", "public")];
        let to_other = [target(Some(GATEWAY_API_GROUP), "Gateway", "other")];
        let mut elsewhere = target(Some(GATEWAY_API_GROUP), "Gateway", "public");
        elsewhere.namespace = Some("other".into());
        let elsewhere = [elsewhere];
        let wrong_group = [target(None, "Gateway", "public")];
        let service = [target(None, "Service", "public")];
        let root = "istio-system";
        type Case<'a> = (
            &'a str,
            Attachment<'a>,
            &'a str,
            &'a BTreeMap<String, String>,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "a target to the gateway",
                at("web", None, &to_public),
                "web",
                &gateway,
                true,
            ),
            (
                "the deprecated label",
                at("web", None, &to_public),
                "web",
                &old_label,
                true,
            ),
            (
                "a target to another gateway",
                at("web", None, &to_other),
                "web",
                &gateway,
                false,
            ),
            (
                "a target from another namespace",
                at("other", None, &to_public),
                "web",
                &gateway,
                false,
            ),
            (
                "a target from the root namespace",
                at(root, None, &to_public),
                "web",
                &gateway,
                false,
            ),
            (
                "a target naming another namespace",
                at("web", None, &elsewhere),
                "web",
                &gateway,
                false,
            ),
            (
                "a Gateway of another group",
                at("web", None, &wrong_group),
                "web",
                &gateway,
                false,
            ),
            (
                "a target, on a workload that is no Gateway API gateway",
                at("web", None, &to_public),
                "web",
                &plain,
                false,
            ),
            (
                "a Service target",
                at("web", None, &service),
                "web",
                &gateway,
                false,
            ),
            (
                "a selector",
                at("web", Some(&selector), &[]),
                "web",
                &plain,
                true,
            ),
            (
                "a selector, on a Gateway API gateway",
                at("web", Some(&selector), &[]),
                "web",
                &gateway,
                true,
            ),
            (
                "a selector that does not match",
                at("web", Some(&selector), &[]),
                "web",
                &old_label,
                false,
            ),
            (
                "the root namespace's selector",
                at(root, Some(&selector), &[]),
                "web",
                &plain,
                true,
            ),
            ("the namespace", at("web", None, &[]), "web", &plain, true),
            (
                "another namespace",
                at("other", None, &[]),
                "web",
                &plain,
                false,
            ),
        ];
        for (what, a, ns, l, expected) in cases {
            assert_eq!(a.attaches(root, true, ns, l), expected, "{what}");
        }
        // Without root selection (Telemetry's workload level), the root namespace's
        // selector stays in its namespace.
        assert!(!at(root, Some(&selector), &[]).attaches(root, false, "web", &plain));
        assert!(at("web", None, &service).waypoint_only().is_some());
        assert!(at("web", None, &to_public).waypoint_only().is_none());
        assert!(at("web", None, &[]).waypoint_only().is_none());
    }
}
