//! Telemetry: targets, providers, tracing (sampling and custom tags), metric tag overrides
//! and access log filters (CEL expressions).

use cel::Program;

use crate::diagnostic::Findings;
use crate::generated::telemetry::{
    AccessLogging, CustomTag, Metrics, MetricsOverrides, ProviderRef, TagOperation, Tracing,
};
use crate::path::FieldPath;
use crate::resource::Telemetry;

use super::common::check_policy_targets;

/// Validates a Telemetry.
pub fn validate(t: &Telemetry, spec: &FieldPath, out: &mut Findings) {
    let s = &t.spec;
    check_policy_targets(
        s.selector.as_ref(),
        s.target_ref.as_ref(),
        &s.target_refs,
        spec,
        out,
    );
    for (i, m) in s.metrics.iter().enumerate() {
        check_metrics(m, &spec.field("metrics").index(i), out);
    }
    if s.tracing.len() > 1 {
        out.warn(
            &spec.field("tracing"),
            "multiple tracing is not currently supported",
        );
    }
    for (i, tr) in s.tracing.iter().enumerate() {
        check_tracing(tr, &spec.field("tracing").index(i), out);
    }
    for (i, l) in s.access_logging.iter().enumerate() {
        check_access_logging(l, &spec.field("accessLogging").index(i), out);
    }
}

/// Provider references need names; like Istio, only the first empty one is reported.
fn check_providers(providers: &[ProviderRef], path: &FieldPath, out: &mut Findings) {
    if let Some(i) = providers.iter().position(|p| p.name.is_empty()) {
        out.error(
            &path.index(i).field("name"),
            "providers.name may not be empty",
        );
    }
}

/// One metrics entry: providers and overrides.
fn check_metrics(m: &Metrics, path: &FieldPath, out: &mut Findings) {
    check_providers(&m.providers, &path.field("providers"), out);
    for (i, o) in m.overrides.iter().enumerate() {
        check_metrics_override(o, &path.field("overrides").index(i), out);
    }
}

/// Tag overrides (a value exactly when upserting) and the metric selector.
fn check_metrics_override(o: &MetricsOverrides, path: &FieldPath, out: &mut Findings) {
    for (name, tag) in &o.tag_overrides {
        let p = path.field("tagOverrides").key(name);
        if name.is_empty() {
            out.warn(&p, "tagOverrides.name may not be empty");
        }
        let has_value = tag.value.as_deref().is_some_and(|v| !v.is_empty());
        match tag.operation.unwrap_or_default() {
            TagOperation::Upsert if !has_value => out.error(
                &p.field("value"),
                "tagOverrides.value must be set when operation is UPSERT",
            ),
            TagOperation::Remove if has_value => out.error(
                &p.field("value"),
                "tagOverrides.value may only be set when operation is UPSERT",
            ),
            _ => {}
        }
    }
    if let Some(m) = &o.match_
        && m.custom_metric.as_deref() == Some("")
    {
        out.error(
            &path.field("match").field("customMetric"),
            "customMetric may not be empty",
        );
    }
}

/// One tracing entry: providers, sampling percentage and custom tags.
fn check_tracing(tr: &Tracing, path: &FieldPath, out: &mut Findings) {
    if tr.providers.len() > 1 {
        out.warn(
            &path.field("providers"),
            "multiple providers is not currently supported",
        );
    }
    check_providers(&tr.providers, &path.field("providers"), out);
    if tr
        .random_sampling_percentage
        .is_some_and(|p| !(0.0..=100.0).contains(&p))
    {
        out.error(
            &path.field("randomSamplingPercentage"),
            "randomSamplingPercentage must be in range [0.0, 100.0]",
        );
    }
    for (name, tag) in &tr.custom_tags {
        check_custom_tag(name, tag, &path.field("customTags").key(name), out);
    }
}

/// A custom tag: a name, and one non-empty kind of value.
fn check_custom_tag(name: &str, tag: &CustomTag, path: &FieldPath, out: &mut Findings) {
    if name.is_empty() {
        out.error(path, "tag name may not be empty");
    }
    if let Some(l) = &tag.literal {
        if l.value.is_empty() {
            out.error(
                &path.field("literal").field("value"),
                "literal tag value may not be empty",
            );
        }
    } else if let Some(h) = &tag.header {
        if h.name.is_empty() {
            out.error(
                &path.field("header").field("name"),
                "header tag name may not be empty",
            );
        }
    } else if let Some(e) = &tag.environment {
        if e.name.is_empty() {
            out.error(
                &path.field("environment").field("name"),
                "environment tag name may not be empty",
            );
        }
    } else if tag.formatter.is_none() {
        out.error(path, format!("tag '{name}' may not have a nil value"));
    }
}

/// One access logging entry: the filter must parse as CEL; providers need names.
fn check_access_logging(l: &AccessLogging, path: &FieldPath, out: &mut Findings) {
    if let Some(filter) = &l.filter {
        let expression = filter.expression.as_deref().unwrap_or_default();
        if let Err(e) = Program::compile(expression) {
            // The parser's message goes on to draw the expression and a caret below it;
            // its first line says what is wrong and where, and keeps the finding one line.
            let e = e.to_string();
            let first = e.lines().next().unwrap_or_default();
            out.error(
                &path.field("filter").field("expression"),
                format!("must be a valid CEL expression, {first}"),
            );
        }
    }
    check_providers(&l.providers, &path.field("providers"), out);
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::validate::testing;

    const RESOURCE: testing::Resource<'static> = ("telemetry.istio.io/v1", "Telemetry", "t", "ns");

    fn run(spec: Value) -> (Vec<String>, Vec<String>) {
        testing::run::<Telemetry>(RESOURCE, spec, validate)
    }

    fn check(cases: &[(Value, &[&str], &[&str])]) {
        testing::check::<Telemetry>(RESOURCE, validate, cases)
    }

    #[test]
    fn valid_telemetry() {
        check(&[(
            json!({
                "selector": {"matchLabels": {"app": "a"}},
                "tracing": [{
                    "providers": [{"name": "zipkin"}],
                    "randomSamplingPercentage": 10.5,
                    "customTags": {
                        "env": {"environment": {"name": "POD_NAME"}},
                        "lit": {"literal": {"value": "x"}},
                        "hdr": {"header": {"name": "x-id"}},
                        "fmt": {"formatter": {"value": "%REQ(x-id)%"}}
                    }
                }],
                "metrics": [{
                    "providers": [{"name": "prometheus"}],
                    "overrides": [{
                        "match": {"metric": "REQUEST_COUNT"},
                        "tagOverrides": {"a": {"value": "x"}, "b": {"operation": "REMOVE"}}
                    }]
                }],
                "accessLogging": [{"providers": [{"name": "envoy"}], "filter": {"expression": "response.code >= 400"}}]
            }),
            &[],
            &[],
        )]);
    }

    #[test]
    fn targets_and_providers() {
        check(&[(
            json!({
                "selector": {"matchLabels": {"app": "a"}},
                "targetRefs": [{"kind": "Service", "name": "a"}],
                "metrics": [{"providers": [{"name": "a"}, {"name": ""}, {"name": ""}]}],
                "tracing": [{"providers": [{"name": ""}]}],
                "accessLogging": [{"providers": [{"name": ""}]}]
            }),
            &[
                "spec: only one of targetRefs or workloadSelector can be set",
                "spec.metrics[0].providers[1].name: providers.name may not be empty",
                "spec.tracing[0].providers[0].name: providers.name may not be empty",
                "spec.accessLogging[0].providers[0].name: providers.name may not be empty",
            ],
            &[],
        )]);
    }

    #[test]
    fn tracing() {
        check(&[(
            json!({"tracing": [
                {"providers": [{"name": "a"}, {"name": "b"}], "randomSamplingPercentage": 100.5},
                {"randomSamplingPercentage": -1.0, "customTags": {
                    "": {"literal": {"value": "x"}},
                    "lit": {"literal": {"value": ""}},
                    "hdr": {"header": {"name": ""}},
                    "env": {"environment": {"name": ""}},
                    "none": {}
                }}
            ]}),
            &[
                "spec.tracing[0].randomSamplingPercentage: randomSamplingPercentage must be in range [0.0, 100.0]",
                "spec.tracing[1].randomSamplingPercentage: randomSamplingPercentage must be in range [0.0, 100.0]",
                "spec.tracing[1].customTags[]: tag name may not be empty",
                "spec.tracing[1].customTags[env].environment.name: environment tag name may not be empty",
                "spec.tracing[1].customTags[hdr].header.name: header tag name may not be empty",
                "spec.tracing[1].customTags[lit].literal.value: literal tag value may not be empty",
                "spec.tracing[1].customTags[none]: tag 'none' may not have a nil value",
            ],
            &[
                "spec.tracing: multiple tracing is not currently supported",
                "spec.tracing[0].providers: multiple providers is not currently supported",
            ],
        )]);
    }

    #[test]
    fn metric_overrides() {
        check(&[(
            json!({"metrics": [{"overrides": [
                {"tagOverrides": {"": {"value": "x"}, "a": {}, "b": {"operation": "UPSERT", "value": ""}, "c": {"operation": "REMOVE", "value": "x"}}},
                {"match": {"customMetric": ""}}
            ]}]}),
            &[
                "spec.metrics[0].overrides[0].tagOverrides[a].value: tagOverrides.value must be set when operation is UPSERT",
                "spec.metrics[0].overrides[0].tagOverrides[b].value: tagOverrides.value must be set when operation is UPSERT",
                "spec.metrics[0].overrides[0].tagOverrides[c].value: tagOverrides.value may only be set when operation is UPSERT",
                "spec.metrics[0].overrides[1].match.customMetric: customMetric may not be empty",
            ],
            &["spec.metrics[0].overrides[0].tagOverrides[]: tagOverrides.name may not be empty"],
        )]);
    }

    #[test]
    fn access_log_filters_must_parse() {
        let (errors, warnings) = run(json!({"accessLogging": [
            {"filter": {"expression": "response.code >= 400"}},
            {"filter": {"expression": "response.code >="}},
            {"filter": {}}
        ]}));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(errors.len(), 2, "{errors:?}");
        for (e, i) in errors.iter().zip([1, 2]) {
            let prefix = format!(
                "spec.accessLogging[{i}].filter.expression: must be a valid CEL expression, "
            );
            assert!(e.starts_with(&prefix), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
