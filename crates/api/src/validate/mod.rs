//! Semantic validation: what Istio's validating webhook rejects (errors) and warns about,
//! after the CRD schema has accepted a resource. One module per kind; the shared rules
//! (hosts, ports, durations, regexes, headers, selectors) are in [`common`].

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod kubernetes;
pub mod names;
pub mod security;
pub mod service_entry;
pub mod sidecar;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod testing;
pub mod virtual_service;
pub mod workload;

use crate::diagnostic::Findings;
use crate::path::FieldPath;
use crate::resource::{Kind, Object};

/// Validates one resource, recording errors and warnings with paths from the document root.
pub fn validate_object(obj: &Object, out: &mut Findings) {
    let spec = FieldPath::root().field("spec");
    check_annotations(obj, out);
    match obj {
        Object::Gateway(g) => gateway::validate(g, &spec, out),
        Object::VirtualService(v) => virtual_service::validate(v, &spec, out),
        Object::DestinationRule(d) => destination_rule::validate(d, &spec, out),
        Object::ServiceEntry(s) => service_entry::validate(s, &spec, out),
        Object::Sidecar(s) => sidecar::validate(s, &spec, out),
        Object::WorkloadEntry(w) => workload::validate_workload_entry(&w.spec, &spec, out),
        Object::WorkloadGroup(w) => workload::validate_workload_group(&w.spec, &spec, out),
        Object::PeerAuthentication(p) => security::validate_peer_authentication(p, &spec, out),
        Object::AuthorizationPolicy(p) => security::validate_authorization_policy(p, &spec, out),
        Object::RequestAuthentication(r) => {
            security::validate_request_authentication(r, &spec, out)
        }
        Object::Telemetry(t) => telemetry::validate(t, &spec, out),
        Object::Service(s) => kubernetes::validate_service(s, out),
        Object::Secret(s) => kubernetes::validate_secret(s, out),
        Object::Pod(p) => kubernetes::validate_pod(p, out),
        Object::Endpoints(e) => kubernetes::validate_endpoints(e, out),
        Object::EndpointSlice(e) => kubernetes::validate_endpoint_slice(e, out),
        Object::Namespace(_) | Object::ConfigMap(_) => {}
    }
}

/// The annotations Istio's webhook looks at before the spec.
fn check_annotations(obj: &Object, out: &mut Findings) {
    let meta = obj.metadata();
    let Some(annotations) = &meta.annotations else {
        return;
    };
    let path = FieldPath::root().field("metadata").field("annotations");
    let id = format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    );
    if annotations.contains_key("internal.istio.io/webhook-always-reject") {
        out.error(
            &path.key("internal.istio.io/webhook-always-reject"),
            "\"internal.istio.io/webhook-always-reject\" annotation found, rejecting",
        );
    }
    let Some(dry_run) = annotations.get("istio.io/dry-run") else {
        return;
    };
    let p = path.key("istio.io/dry-run");
    let Object::AuthorizationPolicy(ap) = obj else {
        if obj.kind().is_istio() && obj.kind() != Kind::AuthorizationPolicy {
            out.error(
                &p,
                format!(
                    "{id} has unsupported annotation istio.io/dry-run, please remove the annotation"
                ),
            );
        }
        return;
    };
    if !matches!(
        dry_run.as_str(),
        "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False"
    ) {
        out.error(
            &p,
            format!("{id} has annotation istio.io/dry-run with invalid value ({dry_run}): invalid syntax"),
        );
    }
    use crate::generated::security::AuthorizationAction;
    let action = ap.spec.action.unwrap_or_default();
    if !matches!(
        action,
        AuthorizationAction::Allow | AuthorizationAction::Deny
    ) {
        out.error(
            &p,
            format!(
                "the annotation istio.io/dry-run currently only supports action ALLOW/DENY, found action {} in {id}",
                action.as_str()
            ),
        );
    }
}
