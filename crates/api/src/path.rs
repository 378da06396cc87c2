//! Field paths inside a resource, as users write them: `spec.http[0].route[1].weight`.

use std::fmt;

/// One step from a node to its child.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A named field of an object (`spec`, `http`).
    Field(String),
    /// An element of a list (`[0]`).
    Index(usize),
    /// A key of a map whose keys are data, not field names (`selector[istio]`).
    Key(String),
}

/// A path from the document root to a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The document root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Parses a dotted path such as `spec.http[0].route`; `[n]` is an index, `[k]` a map key.
    pub fn parse(text: &str) -> Self {
        let mut out = Vec::new();
        for part in text.split('.').filter(|p| !p.is_empty()) {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !name.is_empty() {
                out.push(Segment::Field(name.to_string()));
            }
            while let Some(end) = rest.find(']') {
                let inner = &rest[1..end];
                out.push(match inner.parse() {
                    Ok(i) => Segment::Index(i),
                    Err(_) => Segment::Key(inner.to_string()),
                });
                rest = &rest[end + 1..];
            }
        }
        Self(out)
    }

    /// This path extended by a field name.
    pub fn field(&self, name: &str) -> Self {
        self.with(Segment::Field(name.to_string()))
    }

    /// This path extended by a list index.
    pub fn index(&self, i: usize) -> Self {
        self.with(Segment::Index(i))
    }

    /// This path extended by a map key.
    pub fn key(&self, k: &str) -> Self {
        self.with(Segment::Key(k.to_string()))
    }

    /// `other` appended to this path.
    pub fn join(&self, other: &FieldPath) -> Self {
        let mut v = self.0.clone();
        v.extend(other.0.iter().cloned());
        Self(v)
    }

    fn with(&self, s: Segment) -> Self {
        let mut v = self.0.clone();
        v.push(s);
        Self(v)
    }

    /// The steps of the path.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// The path without its last step (the root stays the root).
    pub fn parent(&self) -> Self {
        let mut v = self.0.clone();
        v.pop();
        Self(v)
    }

    /// True for the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Segment::Field(name) if i == 0 => write!(f, "{name}")?,
                Segment::Field(name) => write!(f, ".{name}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
                Segment::Key(k) => write!(f, "[{k}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_and_parses_the_same_path() {
        let p = FieldPath::root()
            .field("spec")
            .field("http")
            .index(0)
            .field("route")
            .index(1)
            .field("weigth");
        assert_eq!(p.to_string(), "spec.http[0].route[1].weigth");
        assert_eq!(FieldPath::parse("spec.http[0].route[1].weigth"), p);
        let m = FieldPath::root()
            .field("spec")
            .field("selector")
            .key("istio");
        assert_eq!(m.to_string(), "spec.selector[istio]");
        assert_eq!(FieldPath::parse("spec.selector[istio]"), m);
        assert_eq!(p.parent().to_string(), "spec.http[0].route[1]");
    }
}
