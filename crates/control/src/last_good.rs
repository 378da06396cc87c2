//! A change with bad resources applies in part, as Istio's webhook rejects resources one
//! by one: every resource that loaded cleanly takes effect, and a resource whose new
//! version has an error keeps its last good version (or stays absent if it never had
//! one). When a file cannot be read as resources at all (bad YAML), every resource last
//! read from it keeps its last good version. A mesh config with errors keeps the last
//! good mesh config.

use std::collections::BTreeSet;
use std::path::PathBuf;

use meshwork_api::diagnostic::Severity;
use meshwork_api::load::{LoadOutcome, LoadedObject};
use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::ObjectRef;

/// The config to apply after a change, and what was held back.
#[derive(Debug)]
pub struct Merged {
    /// The resources to apply.
    pub objects: Vec<LoadedObject>,
    /// The mesh config to apply.
    pub mesh: MeshConfig,
    /// Resources whose new version was rejected and that keep their last good one.
    pub kept: Vec<ObjectRef>,
    /// Resources whose new version was rejected and that had no good one.
    pub left_out: Vec<ObjectRef>,
    /// Whether the mesh config was rejected (the last good one applies).
    pub mesh_kept: bool,
}

/// Merges a load with errors into the last good config.
pub fn merge(
    outcome: LoadOutcome,
    last: &[LoadedObject],
    last_mesh: &MeshConfig,
    mesh_file: Option<&PathBuf>,
) -> Merged {
    let errors: Vec<_> = outcome
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    let bad_refs: BTreeSet<ObjectRef> = errors.iter().filter_map(|d| d.resource.clone()).collect();
    // Files with an error that names no resource: nothing in them can be trusted.
    let bad_files: BTreeSet<PathBuf> = errors
        .iter()
        .filter(|d| d.resource.is_none())
        .map(|d| d.location.file.clone())
        .collect();
    let mesh_kept = mesh_file.is_some_and(|m| bad_files.contains(m));
    let mut objects = outcome.config.objects;
    let present: BTreeSet<ObjectRef> = objects.iter().map(|o| o.object.object_ref()).collect();
    let mut kept = Vec::new();
    for old in last {
        let r = old.object.object_ref();
        let rejected = bad_refs.contains(&r) || bad_files.contains(&old.origin.file);
        if rejected && !present.contains(&r) {
            kept.push(r);
            objects.push(old.clone());
        }
    }
    let had: BTreeSet<ObjectRef> = last.iter().map(|o| o.object.object_ref()).collect();
    let left_out = bad_refs
        .iter()
        .filter(|r| !had.contains(r) && !present.contains(r))
        .cloned()
        .collect();
    Merged {
        objects,
        mesh: if mesh_kept {
            last_mesh.clone()
        } else {
            outcome.config.mesh
        },
        kept,
        left_out,
        mesh_kept,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use meshwork_api::load::{LoadOptions, load_str};

    use super::*;

    fn vs(name: &str, weight: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  hosts: [{name}]\n  http:\n  - route:\n    - destination: {{host: {name}}}\n      {weight}: 100\n---\n"
        )
    }

    fn load(file: &str, text: &str) -> LoadOutcome {
        load_str(Path::new(file), text, &LoadOptions::default())
    }

    fn names(objects: &[LoadedObject]) -> Vec<String> {
        let mut n: Vec<String> = objects
            .iter()
            .map(|o| o.object.object_ref().to_string())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_bad_resource_keeps_its_last_good_version_and_the_rest_applies() {
        let good = load("a.yaml", &(vs("a", "weight") + &vs("b", "weight")));
        let last = good.config.objects.clone();
        // a turns bad, b is dropped, c is new and bad, d is new and good.
        let next = load(
            "a.yaml",
            &(vs("a", "weigth") + &vs("c", "weigth") + &vs("d", "weight")),
        );
        assert!(next.has_errors());
        let m = merge(next, &last, &MeshConfig::default(), None);
        assert_eq!(
            names(&m.objects),
            ["VirtualService shop/a", "VirtualService shop/d"]
        );
        let a = m
            .objects
            .iter()
            .find(|o| o.object.object_ref().name == "a")
            .unwrap();
        assert_eq!(
            a.object.to_json(),
            last[0].object.to_json(),
            "its last good version"
        );
        assert_eq!(m.kept.len(), 1);
        assert_eq!(m.left_out.len(), 1);
        assert_eq!(m.left_out[0].name, "c");
    }

    #[test]
    fn a_file_that_is_not_yaml_keeps_everything_it_held() {
        let good = load("a.yaml", &vs("a", "weight"));
        let last = good.config.objects.clone();
        let next = load("a.yaml", "kind: [unclosed");
        assert!(next.has_errors());
        let m = merge(next, &last, &MeshConfig::default(), None);
        assert_eq!(names(&m.objects), ["VirtualService shop/a"]);
    }
}
