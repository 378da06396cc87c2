//! Structural validation of Istio resources against the OpenAPI schemas of Istio's CRDs,
//! as the Kubernetes API server applies them with `kubectl apply --validate=strict`:
//! types, enums, required fields, bounds, unknown fields (with a "did you mean"), the
//! "at most one of" groups of protobuf oneofs, and the CEL rules.
//!
//! The schemas are `schema/istio-schemas.json`, generated with the Rust types by
//! `tools/gen_api.py`, so types and checks cannot drift apart.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::cel_rules;
use crate::diagnostic::Findings;
use crate::path::FieldPath;
use crate::resource::Kind;

#[derive(Deserialize)]
struct KindSchema {
    schema: Value,
}

fn schemas() -> &'static HashMap<String, KindSchema> {
    static SCHEMAS: OnceLock<HashMap<String, KindSchema>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        serde_json::from_str(include_str!("../schema/istio-schemas.json"))
            .expect("the embedded CRD schemas are valid JSON")
    })
}

/// The CRD schema (`openAPIV3Schema`) of an Istio kind; `None` for Kubernetes kinds.
pub fn schema_of(kind: Kind) -> Option<&'static Value> {
    schemas().get(kind.name()).map(|k| &k.schema)
}

/// Checks a whole resource (`apiVersion`, `kind`, `metadata`, `spec`, `status`).
pub fn check_resource(kind: Kind, resource: &Value, out: &mut Findings) {
    let Some(schema) = schema_of(kind) else {
        return;
    };
    let Some(obj) = resource.as_object() else {
        out.error(&FieldPath::root(), "a resource must be a mapping");
        return;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    for (key, value) in obj {
        let path = FieldPath::root().field(key);
        match key.as_str() {
            "apiVersion" | "kind" | "metadata" => {}
            _ => match props.and_then(|p| p.get(key)) {
                Some(s) => check(s, value, &path, out),
                None => unknown_field(key, props, &["apiVersion", "kind", "metadata"], &path, out),
            },
        }
    }
    check_required(schema, obj, &FieldPath::root(), out);
}

/// Checks `value` at `path` against `schema`, recording every problem.
pub fn check(schema: &Value, value: &Value, path: &FieldPath, out: &mut Findings) {
    if value.is_null() {
        // An explicit null is an absent field, as the API server treats it.
        return;
    }
    if !check_type(schema, value, path, out) {
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed.iter().map(display).collect();
        out.error(
            path,
            format!(
                "unsupported value {}: must be one of {}",
                display(value),
                names.join(", ")
            ),
        );
        return;
    }
    check_bounds(schema, value, path, out);
    match value {
        Value::Object(obj) => check_object(schema, obj, path, out),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &path.index(i), out);
                }
            }
            check_list_map_keys(schema, items, path, out);
        }
        _ => {}
    }
    check_combinators(schema, value, path, out);
    check_cel(schema, value, path, out);
}

/// Whether `value` is of the schema's `type` (true when the schema names none).
fn has_type(schema: &Value, value: &Value) -> bool {
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let Some(ty) = schema.get("type").and_then(Value::as_str) else {
        return true;
    };
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string() || (int_or_string && is_integer(value)),
        "integer" => is_integer(value) || (int_or_string && value.is_string()),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

fn check_type(schema: &Value, value: &Value, path: &FieldPath, out: &mut Findings) -> bool {
    let Some(ty) = schema.get("type").and_then(Value::as_str) else {
        return true;
    };
    let ok = has_type(schema, value);
    if !ok {
        let want = match ty {
            "object" => "a mapping",
            "array" => "a list",
            "string" => "a string",
            "integer" => "an integer",
            "number" => "a number",
            "boolean" => "true or false",
            other => other,
        };
        out.error(path, format!("expected {want}, got {}", describe(value)));
    }
    ok
}

fn is_integer(v: &Value) -> bool {
    v.as_i64().is_some() || v.as_u64().is_some()
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn check_bounds(schema: &Value, value: &Value, path: &FieldPath, out: &mut Findings) {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    if let Some(n) = value.as_f64() {
        if let Some(min) = num("minimum")
            && n < min
        {
            out.error(path, format!("{n} is less than the minimum {min}"));
        }
        if let Some(max) = num("maximum")
            && n > max
        {
            out.error(path, format!("{n} is greater than the maximum {max}"));
        }
    }
    let len = match value {
        Value::String(s) => Some((s.chars().count(), "Length", "characters")),
        Value::Array(a) => Some((a.len(), "Items", "items")),
        Value::Object(o) => Some((o.len(), "Properties", "entries")),
        _ => None,
    };
    if let Some((n, suffix, unit)) = len {
        if let Some(min) = num(&format!("min{suffix}"))
            && (n as f64) < min
        {
            out.error(path, format!("must have at least {min} {unit}, has {n}"));
        }
        if let Some(max) = num(&format!("max{suffix}"))
            && (n as f64) > max
        {
            out.error(path, format!("must have at most {max} {unit}, has {n}"));
        }
    }
    if let (Some(pattern), Some(s)) = (
        schema.get("pattern").and_then(Value::as_str),
        value.as_str(),
    ) && let Ok(re) = Regex::new(pattern)
        && !re.is_match(s)
    {
        out.error(
            path,
            format!("{s:?} does not match the pattern {pattern:?}"),
        );
    }
}

fn check_object(schema: &Value, obj: &Map<String, Value>, path: &FieldPath, out: &mut Findings) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    for (key, value) in obj {
        if let Some(s) = props.and_then(|p| p.get(key)) {
            if s.get("x-meshwork-unsupported") == Some(&Value::Bool(true)) && !value.is_null() {
                out.warn(
                    &path.field(key),
                    "accepted as Istio defines it, but not used by meshwork: ignored",
                );
            }
            check(s, value, &path.field(key), out);
        } else if let Some(s) = additional.filter(|a| a.is_object()) {
            check(s, value, &path.key(key), out);
        } else if !preserve && props.is_some() {
            unknown_field(key, props, &[], &path.field(key), out);
        }
    }
    check_required(schema, obj, path, out);
}

fn check_required(schema: &Value, obj: &Map<String, Value>, path: &FieldPath, out: &mut Findings) {
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if obj.get(name).is_none_or(Value::is_null) {
            out.error(path, format!("missing required field \"{name}\""));
        }
    }
}

fn unknown_field(
    key: &str,
    props: Option<&Map<String, Value>>,
    extra: &[&str],
    path: &FieldPath,
    out: &mut Findings,
) {
    let known = props
        .into_iter()
        .flat_map(|p| p.keys().map(String::as_str))
        .chain(extra.iter().copied());
    let msg = match did_you_mean(key, known) {
        Some(s) => format!("unknown field (did you mean \"{s}\"?)"),
        None => "unknown field".to_string(),
    };
    out.error(path, msg);
}

/// The known name closest to `key`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .map(|k| {
            let score = if k.to_ascii_lowercase() == lower {
                1.0
            } else {
                strsim::jaro_winkler(&lower, &k.to_ascii_lowercase())
            };
            (score, k)
        })
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn check_list_map_keys(schema: &Value, items: &[Value], path: &FieldPath, out: &mut Findings) {
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
        return;
    }
    let keys: Vec<&str> = schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut seen = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let id: Vec<String> = keys.iter().map(|k| display(&item[*k])).collect();
        if let Some(first) = seen.insert(id.clone(), i) {
            out.error(
                &path.index(i),
                format!(
                    "duplicate entry: {} is already used by {path}[{first}]",
                    keys.join(", ") + "=" + &id.join(",")
                ),
            );
        }
    }
}

/// `oneOf` in Istio's schemas always encodes a protobuf oneof: at most one of a set of fields.
fn check_combinators(schema: &Value, value: &Value, path: &FieldPath, out: &mut Findings) {
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check_combinators(s, value, path, out);
        }
    }
    if let Some(alts) = schema.get("oneOf").and_then(Value::as_array) {
        let passing = alts.iter().filter(|s| satisfies(s, value)).count();
        if passing != 1 {
            let group = oneof_fields(alts);
            let set: Vec<&str> = group
                .iter()
                .copied()
                .filter(|f| value.get(f).is_some())
                .collect();
            if group.is_empty() {
                out.error(path, "must match exactly one of the schema's alternatives");
            } else {
                out.error(
                    path,
                    format!(
                        "only one of {} may be set, found {}",
                        group.join(", "),
                        set.join(" and ")
                    ),
                );
            }
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|s| satisfies(s, value))
    {
        out.error(path, "must match at least one of the schema's alternatives");
    }
}

fn oneof_fields(alts: &[Value]) -> Vec<&str> {
    alts.iter()
        .filter_map(|a| a.get("required").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether `value` satisfies a combinator branch (`type`, `required`, `not`, `anyOf`,
/// `oneOf`): int-or-string fields are `anyOf` an integer and a string.
fn satisfies(schema: &Value, value: &Value) -> bool {
    if !has_type(schema, value) {
        return false;
    }
    if let Some(req) = schema.get("required").and_then(Value::as_array)
        && !req
            .iter()
            .filter_map(Value::as_str)
            .all(|f| value.get(f).is_some_and(|v| !v.is_null()))
    {
        return false;
    }
    if let Some(not) = schema.get("not")
        && satisfies(not, value)
    {
        return false;
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|s| satisfies(s, value))
    {
        return false;
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
        && one.iter().filter(|s| satisfies(s, value)).count() != 1
    {
        return false;
    }
    true
}

fn check_cel(schema: &Value, value: &Value, path: &FieldPath, out: &mut Findings) {
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(text) = rule.get("rule").and_then(Value::as_str) else {
            continue;
        };
        let message = rule
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("failed rule: {text}"));
        match cel_rules::evaluate(text, value) {
            Ok(true) => {}
            Ok(false) => out.error(path, message),
            Err(e) => {
                // Say what is wrong with a duration in our words, not the interpreter's.
                let reason = match (text.contains("duration(self)"), value.as_str()) {
                    (true, Some(s)) => match crate::duration::parse_duration(s) {
                        Err(d) => d.to_string(),
                        Ok(_) => e.to_string(),
                    },
                    _ => e.to_string(),
                };
                out.error(path, format!("{message}: {reason}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(kind: Kind, v: Value) -> Vec<String> {
        let mut f = Findings::default();
        check_resource(kind, &v, &mut f);
        f.into_vec()
            .into_iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect()
    }

    #[test]
    fn every_supported_istio_kind_has_a_schema() {
        for k in Kind::ALL.iter().filter(|k| k.is_istio()) {
            assert!(schema_of(*k).is_some(), "{k}");
        }
    }

    #[test]
    fn unknown_fields_suggest_the_closest_name() {
        let e = errors(
            Kind::VirtualService,
            json!({"spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}, "weigth": 10}]}]}}),
        );
        assert_eq!(
            e,
            vec!["spec.http[0].route[0].weigth: unknown field (did you mean \"weight\"?)"]
        );
    }

    #[test]
    fn types_enums_required_oneof_and_cel() {
        let e = errors(
            Kind::DestinationRule,
            json!({"spec": {"host": 5, "trafficPolicy": {
                "loadBalancer": {"simple": "ROUND_ROBINN"},
                "connectionPool": {"tcp": {"connectTimeout": "0s"}}}}}),
        );
        assert!(
            e.contains(&"spec.host: expected a string, got the number 5".to_string()),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with(
                "spec.trafficPolicy.loadBalancer.simple: unsupported value \"ROUND_ROBINN\""
            )),
            "{e:?}"
        );
        assert!(e.contains(&"spec.trafficPolicy.connectionPool.tcp.connectTimeout: must be a valid duration greater than 1ms".to_string()), "{e:?}");
        let e = errors(
            Kind::VirtualService,
            json!({"spec": {"http": [{"match": [{"uri": {"exact": "/a", "prefix": "/b"}}]}]}}),
        );
        assert_eq!(
            e,
            vec![
                "spec.http[0].match[0].uri: only one of exact, prefix, regex may be set, found exact and prefix"
            ]
        );
        let e = errors(
            Kind::VirtualService,
            json!({"spec": {"http": [{"route": [{"destination": {}}]}]}}),
        );
        assert_eq!(
            e,
            vec!["spec.http[0].route[0].destination: missing required field \"host\""]
        );
        let e = errors(Kind::ServiceEntry, json!({"metadata": {}}));
        assert_eq!(e, vec![": missing required field \"spec\""]);
    }

    #[test]
    fn any_of_alternatives_check_their_types() {
        for generation in [json!(3), json!("3")] {
            let e = errors(
                Kind::Gateway,
                json!({"spec": {}, "status": {"observedGeneration": generation}}),
            );
            assert!(e.is_empty(), "{e:?}");
        }
        let e = errors(
            Kind::Gateway,
            json!({"spec": {}, "status": {"observedGeneration": true}}),
        );
        assert_eq!(
            e,
            vec!["status.observedGeneration: must match at least one of the schema's alternatives"]
        );
    }
}
