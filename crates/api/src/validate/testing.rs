//! Helpers for the validators' unit tests: build a resource around a spec, run a validator,
//! and compare errors and warnings as `path: message` lines.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::diagnostic::{Finding, Findings, Severity};
use crate::path::FieldPath;

/// A validator of a typed resource (or spec), given the path of `spec`.
pub type Validator<T> = fn(&T, &FieldPath, &mut Findings);

/// Errors and warnings as `path: message` lines.
pub fn split(findings: Findings) -> (Vec<String>, Vec<String>) {
    let (errors, warnings): (Vec<Finding>, Vec<Finding>) = findings
        .into_vec()
        .into_iter()
        .partition(|f| f.severity == Severity::Error);
    let lines = |v: Vec<Finding>| {
        v.iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect::<Vec<_>>()
    };
    (lines(errors), lines(warnings))
}

/// Which resource the spec goes in: apiVersion, kind, name, namespace.
pub type Resource<'a> = (&'a str, &'a str, &'a str, &'a str);

/// Runs `f` on the resource `(api_version, kind, name, namespace)` with this spec.
pub fn run<T: DeserializeOwned>(
    resource: Resource<'_>,
    spec: Value,
    f: Validator<T>,
) -> (Vec<String>, Vec<String>) {
    let (api_version, kind, name, namespace) = resource;
    let obj: T = serde_json::from_value(json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("a valid resource");
    let mut out = Findings::default();
    f(&obj, &FieldPath::root().field("spec"), &mut out);
    split(out)
}

/// Checks each case: a spec, the errors and the warnings it must give.
pub fn check<T: DeserializeOwned>(
    resource: Resource<'_>,
    f: Validator<T>,
    cases: &[(Value, &[&str], &[&str])],
) {
    for (spec, errors, warnings) in cases {
        let (e, w) = run(resource, spec.clone(), f);
        assert_eq!(e, *errors, "errors for {spec}");
        assert_eq!(w, *warnings, "warnings for {spec}");
    }
}
