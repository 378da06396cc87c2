//! Reading YAML or JSON text into documents: plain JSON values plus the line and column of
//! every field, so that any later finding can point at the text that caused it.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

use crate::path::{FieldPath, Segment};

/// Line and column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One YAML document of a stream.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document as JSON data.
    pub value: Value,
    /// Where each field starts: for a map entry its key, for a list element the element.
    pub positions: HashMap<FieldPath, Position>,
}

impl Document {
    /// The position of `path`, or of its nearest ancestor that exists in the text.
    pub fn position(&self, path: &FieldPath) -> Position {
        // Positions are recorded per mapping key, and a map key (`labels[app]`) is one.
        let mut p = path
            .segments()
            .iter()
            .fold(FieldPath::root(), |p, s| match s {
                Segment::Field(name) | Segment::Key(name) => p.field(name),
                Segment::Index(i) => p.index(*i),
            });
        loop {
            if let Some(pos) = self.positions.get(&p) {
                return *pos;
            }
            if p.is_root() {
                return Position { line: 0, column: 0 };
            }
            p = p.parent();
        }
    }
}

/// The text is not well-formed YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub position: Position,
    /// What the parser says.
    pub message: String,
}

/// Parses a stream of YAML documents (JSON is YAML too). Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| SyntaxError {
        position: Position {
            line: e.marker().line(),
            column: e.marker().col() + 1,
        },
        message: e.info().to_string(),
    })?;
    let mut out = Vec::new();
    for doc in &docs {
        let mut positions = HashMap::new();
        let root = FieldPath::root();
        positions.insert(root.clone(), position_of(doc));
        let value = convert(doc, &root, &mut positions)?;
        // A document's own position is that of its first key, not of the `---` before it.
        if let Some(first) = value.as_object().and_then(|o| o.keys().next()) {
            let at = positions[&root.field(first)];
            positions.insert(root.clone(), at);
        }
        if !value.is_null() {
            out.push(Document { value, positions });
        }
    }
    Ok(out)
}

fn position_of(node: &MarkedYaml<'_>) -> Position {
    Position {
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

fn convert(
    node: &MarkedYaml<'_>,
    path: &FieldPath,
    positions: &mut HashMap<FieldPath, Position>,
) -> Result<Value, SyntaxError> {
    Ok(match &node.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let p = path.index(i);
                positions.insert(p.clone(), position_of(item));
                out.push(convert(item, &p, positions)?);
            }
            Value::Array(out)
        }
        YamlData::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match &k.data {
                    YamlData::Value(s) => scalar_text(s),
                    YamlData::Representation(text, _, _) => text.to_string(),
                    _ => {
                        return Err(SyntaxError {
                            position: position_of(k),
                            message: "mapping keys must be plain scalars".into(),
                        });
                    }
                };
                let p = path.field(&key);
                positions.insert(p.clone(), position_of(k));
                let value = convert(v, &p, positions)?;
                out.insert(key, value);
            }
            Value::Object(out)
        }
        YamlData::Tagged(tag, inner) => {
            let v = convert(inner, path, positions)?;
            if tag.handle == "tag:yaml.org,2002:" && tag.suffix == "str" {
                match v {
                    Value::String(_) => v,
                    other => Value::String(other.to_string()),
                }
            } else {
                v
            }
        }
        YamlData::Alias(_) => {
            return Err(SyntaxError {
                position: position_of(node),
                message: "YAML aliases (*name) are not supported; write the value out".into(),
            });
        }
        YamlData::BadValue => {
            return Err(SyntaxError {
                position: position_of(node),
                message: "invalid YAML value".into(),
            });
        }
    })
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => match Number::from_f64(f.into_inner()) {
            Some(n) => Value::Number(n),
            None => Value::String(f.to_string()),
        },
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

fn scalar_text(s: &Scalar<'_>) -> String {
    match scalar(s) {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_positions_of_keys_and_items() {
        let text = "a: 1\n---\nkind: X\nspec:\n  hosts:\n  - one\n  - two\n  port: 80\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        let d = &docs[1];
        assert_eq!(d.value["spec"]["hosts"][1], "two");
        assert_eq!(d.value["spec"]["port"], 80);
        let at = |p: &str| d.position(&FieldPath::parse(p));
        assert_eq!(at("kind"), Position { line: 3, column: 1 });
        assert_eq!(at("spec.hosts"), Position { line: 5, column: 3 });
        assert_eq!(at("spec.hosts[1]"), Position { line: 7, column: 5 });
        assert_eq!(at("spec.port"), Position { line: 8, column: 3 });
        // A field that is not there points at its nearest ancestor.
        assert_eq!(at("spec.missing.deeper"), Position { line: 4, column: 1 });
    }

    #[test]
    fn map_keys_point_at_their_key() {
        let text = "metadata:\n  labels:\n    app: a\n    version: v1\n";
        let d = &parse_documents(text).unwrap()[0];
        let path = FieldPath::root()
            .field("metadata")
            .field("labels")
            .key("version");
        assert_eq!(d.position(&path), Position { line: 4, column: 5 });
    }

    #[test]
    fn numeric_keys_become_strings_and_quoted_numbers_stay_strings() {
        let docs = parse_documents("m:\n  8080: {mode: DISABLE}\nq: \"80\"\n").unwrap();
        assert_eq!(docs[0].value["m"]["8080"]["mode"], "DISABLE");
        assert_eq!(docs[0].value["q"], "80");
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.position.line >= 1, "{err:?}");
        let dup = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert!(dup.message.contains("duplicate"), "{dup:?}");
    }
}
