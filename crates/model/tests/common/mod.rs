//! What the model's integration tests share: a snapshot from YAML, and a sidecar's config
//! compiled as the control plane compiles it (and checked to survive the stream).
#![allow(dead_code)]

use std::path::Path;

use meshwork_api::load::{LoadOptions, load_str};
use meshwork_model::proxy::{MeshSnapshot, compile_proxy, find_workload, resolve_node};
use meshwork_resources::node::Interception;
use meshwork_resources::{Node, ProxyConfig, Role};

/// The snapshot of these resources; they must load without errors.
pub fn snapshot(yaml: &str) -> MeshSnapshot {
    let out = load_str(Path::new("mesh.yaml"), yaml, &LoadOptions::default());
    assert!(!out.has_errors(), "{:#?}", out.diagnostics);
    MeshSnapshot::new(
        out.config.objects.into_iter().map(|o| o.object).collect(),
        out.config.mesh,
    )
}

/// The config of the sidecar at `ip` in `ns`, with its warnings.
pub fn sidecar_config(
    snap: &MeshSnapshot,
    ns: &str,
    ip: &str,
    interception: Option<Interception>,
) -> (ProxyConfig, Vec<String>) {
    let found = find_workload(&snap.objects, ns, ip);
    let node = resolve_node(
        Node {
            id: format!("{ip}.{ns}"),
            role: Role::Sidecar,
            namespace: ns.into(),
            ips: vec![ip.into()],
            interception,
            ..Node::default()
        },
        found.as_ref(),
    );
    let (config, warnings) = compile_proxy(snap, &node);
    // What the control plane streams decodes to what it compiled.
    let wire = serde_json::to_vec(&config).expect("serializes");
    let back: ProxyConfig = serde_json::from_slice(&wire).expect("deserializes");
    assert_eq!(back, config);
    (config, warnings)
}
