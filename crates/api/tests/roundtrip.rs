//! Property tests: resources built from every field of Istio's CRD schemas survive
//! decoding into meshwork's typed resources and encoding back unchanged, so the types are
//! faithful to the schemas, field for field.

use meshwork_api::resource::Kind;
use meshwork_api::schema::schema_of;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Values that fit `schema`'s shape (types, enums, bounds), ignoring cross-field rules.
fn value_for(schema: &'static Value, depth: usize) -> BoxedStrategy<Value> {
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        return proptest::sample::select(options.clone()).boxed();
    }
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object");
    match ty {
        "string" => "[a-z][a-z0-9.-]{0,8}".prop_map(Value::from).boxed(),
        "boolean" => any::<bool>().prop_map(Value::from).boxed(),
        "number" => (0u32..10_000)
            .prop_map(|n| Value::from(f64::from(n) / 4.0))
            .boxed(),
        "integer" => {
            let lo = schema
                .get("minimum")
                .and_then(Value::as_i64)
                .unwrap_or(-1000);
            let hi = schema
                .get("maximum")
                .and_then(Value::as_i64)
                .unwrap_or(i64::from(i32::MAX))
                .min(i64::from(u32::MAX));
            (lo..=hi).prop_map(Value::from).boxed()
        }
        "array" => {
            let item = value_for(&schema["items"], depth + 1);
            proptest::collection::vec(item, 1..3)
                .prop_map(Value::Array)
                .boxed()
        }
        _ => object_for(schema, depth),
    }
}

fn object_for(schema: &'static Value, depth: usize) -> BoxedStrategy<Value> {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = props
            .iter()
            // `mirror_percent`, `jwks_uri`: proto-name aliases of camelCase fields.
            .filter(|(name, _)| !name.contains('_'))
            .filter(|(name, _)| name.as_str() != "status")
            .map(|(name, s)| {
                let name = name.clone();
                let value = value_for(s, depth + 1);
                if required.contains(&name.as_str()) {
                    return value.prop_map(move |v| Some((name.clone(), v))).boxed();
                }
                let weight = if depth < 2 { 0.6 } else { 0.3 };
                proptest::option::weighted(weight, value)
                    .prop_map(move |v| v.map(|v| (name.clone(), v)))
                    .boxed()
            })
            .collect();
        return fields
            .prop_map(|entries| Value::Object(entries.into_iter().flatten().collect::<Map<_, _>>()))
            .boxed();
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        return proptest::collection::btree_map(
            "[a-z]{1,6}",
            value_for(additional, depth + 1),
            1..3,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed();
    }
    Just(Value::Object(Map::new())).boxed()
}

fn resource_for(kind: Kind) -> BoxedStrategy<Value> {
    let spec = &schema_of(kind).expect("an Istio kind")["properties"]["spec"];
    let version = kind.versions()[0];
    let api_version = format!("{}/{}", kind.group(), version);
    object_for(spec, 0)
        .prop_map(move |spec| {
            serde_json::json!({
                "apiVersion": api_version,
                "kind": kind.name(),
                "metadata": {"name": "x", "namespace": "default"},
                "spec": spec,
            })
        })
        .boxed()
}

fn istio_kinds() -> impl Strategy<Value = (Kind, Value)> {
    let kinds: Vec<Kind> = Kind::ALL.iter().copied().filter(|k| k.is_istio()).collect();
    proptest::sample::select(kinds).prop_flat_map(|k| resource_for(k).prop_map(move |v| (k, v)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn typed_resources_round_trip((kind, input) in istio_kinds()) {
        let typed = kind.decode(input.clone()).map_err(|e| TestCaseError::fail(format!("{kind}: {e}\n{input:#}")))?;
        let back = typed.to_json();
        prop_assert_eq!(&back, &input, "{} changed in a round trip", kind);
        let again = kind.decode(back).unwrap();
        prop_assert_eq!(again, typed);
    }
}
