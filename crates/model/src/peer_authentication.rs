//! PeerAuthentication: which mTLS mode a workload's port accepts, with Istio's precedence.
//! A policy whose `selector` matches the workload comes first (its `portLevelMtls` entry
//! for the port, then its `mtls`), then the namespace's policy without a selector, then
//! the mesh's (in the root namespace, without a selector). UNSET inherits from the next
//! level; with nothing set the mode is PERMISSIVE.

use std::collections::BTreeMap;

use meshwork_api::generated::security::{MutualTls, MutualTlsMode};
use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::{Object, PeerAuthentication};

/// What a server port accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MtlsMode {
    /// Mutual TLS only.
    Strict,
    /// Mutual TLS and plaintext, told apart by the first bytes.
    Permissive,
    /// Plaintext only.
    Disable,
}

impl MtlsMode {
    /// Istio's word.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Strict => "STRICT",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Disable => "DISABLE",
        }
    }
}

fn set(m: Option<&MutualTls>) -> Option<MtlsMode> {
    match m?.mode? {
        MutualTlsMode::Unset => None,
        MutualTlsMode::Strict => Some(MtlsMode::Strict),
        MutualTlsMode::Permissive => Some(MtlsMode::Permissive),
        MutualTlsMode::Disable => Some(MtlsMode::Disable),
    }
}

fn oldest_first(mut list: Vec<&PeerAuthentication>) -> Vec<&PeerAuthentication> {
    crate::oldest_first(&mut list, |p| &p.metadata);
    list
}

/// The mode of `port` of a workload in `namespace` with `labels`.
pub fn mode_for(
    objects: &[Object],
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    port: u32,
) -> MtlsMode {
    let policies: Vec<&PeerAuthentication> = objects
        .iter()
        .filter_map(|o| match o {
            Object::PeerAuthentication(p) => Some(p),
            _ => None,
        })
        .collect();
    let in_ns = |ns: &str| {
        oldest_first(
            policies
                .iter()
                .copied()
                .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
                .collect(),
        )
    };
    let selects = |p: &PeerAuthentication| {
        p.spec.selector.as_ref().is_some_and(|s| {
            !s.match_labels.is_empty()
                && s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
    };
    let unselected = |p: &PeerAuthentication| {
        p.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    };
    let local = in_ns(namespace);
    if let Some(p) = local.iter().find(|p| selects(p)) {
        let port_level = set(p.spec.port_level_mtls.get(&port.to_string()));
        if let Some(m) = port_level.or_else(|| set(p.spec.mtls.as_ref())) {
            return m;
        }
    }
    if let Some(m) = local
        .iter()
        .find(|p| unselected(p))
        .and_then(|p| set(p.spec.mtls.as_ref()))
    {
        return m;
    }
    in_ns(&mesh.root_namespace)
        .iter()
        .find(|p| unselected(p))
        .and_then(|p| set(p.spec.mtls.as_ref()))
        .unwrap_or(MtlsMode::Permissive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn objects(yaml: &str) -> (Vec<Object>, MeshConfig) {
        let out = meshwork_api::load::load_str(
            Path::new("pa.yaml"),
            yaml,
            &meshwork_api::load::LoadOptions::default(),
        );
        assert!(!out.has_errors(), "{:#?}", out.diagnostics);
        (
            out.config.objects.into_iter().map(|o| o.object).collect(),
            out.config.mesh,
        )
    }

    fn pa(ns: &str, name: &str, body: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}\n---\n"
        )
    }

    #[test]
    fn precedence_is_workload_port_workload_namespace_mesh_then_permissive() {
        let labels = BTreeMap::from([("app".to_string(), "db".to_string())]);
        let mode = |yaml: &str, port: u32| {
            let (o, m) = objects(yaml);
            mode_for(&o, &m, "shop", &labels, port)
        };
        assert_eq!(mode("", 80), MtlsMode::Permissive);
        let mesh = pa("istio-system", "mesh", "  mtls: {mode: STRICT}");
        assert_eq!(mode(&mesh, 80), MtlsMode::Strict);
        let ns = pa("shop", "ns", "  mtls: {mode: DISABLE}");
        assert_eq!(mode(&format!("{mesh}{ns}"), 80), MtlsMode::Disable);
        // UNSET inherits.
        let unset = pa("shop", "ns", "  mtls: {mode: UNSET}");
        assert_eq!(mode(&format!("{mesh}{unset}"), 80), MtlsMode::Strict);
        let workload = pa(
            "shop",
            "db",
            "  selector: {matchLabels: {app: db}}\n  mtls: {mode: PERMISSIVE}\n  portLevelMtls:\n    \"5432\": {mode: DISABLE}\n    \"9000\": {mode: UNSET}",
        );
        let all = format!("{mesh}{ns}{workload}");
        assert_eq!(mode(&all, 5432), MtlsMode::Disable, "the port's own mode");
        assert_eq!(
            mode(&all, 9000),
            MtlsMode::Permissive,
            "UNSET: the policy's mtls"
        );
        assert_eq!(mode(&all, 80), MtlsMode::Permissive);
        // A selector for other workloads does not apply; another namespace's policy neither.
        let other = pa(
            "shop",
            "web",
            "  selector: {matchLabels: {app: web}}\n  mtls: {mode: DISABLE}",
        );
        let elsewhere = pa("other", "ns", "  mtls: {mode: DISABLE}");
        assert_eq!(
            mode(&format!("{mesh}{other}{elsewhere}"), 80),
            MtlsMode::Strict
        );
    }
}
