//! Errors and warnings about configuration, each pointing at a file, a line and column,
//! a resource and a field: `reviews.yaml:14:9: VirtualService default/reviews:
//! spec.http[0].route[1].weigth: unknown field (did you mean "weight"?)`.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::path::FieldPath;
use crate::resource::ObjectRef;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The configuration is rejected, as Istio's validating webhook would reject it.
    Error,
    /// Accepted, but probably not what was meant (Istio's webhook warnings, unsupported kinds).
    Warning,
}

/// Where in the input a finding is.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    /// The file (`-` for standard input).
    pub file: PathBuf,
    /// 1-based line; 0 when unknown.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
}

/// One error or warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// File, line and column.
    pub location: Location,
    /// The resource it concerns, when the document got that far.
    #[serde(serialize_with = "ser_display_opt")]
    pub resource: Option<ObjectRef>,
    /// The field it concerns, from the document root (`spec.http[0].timeout`).
    #[serde(serialize_with = "ser_display_opt")]
    pub path: Option<FieldPath>,
    /// What is wrong, and why.
    pub message: String,
}

fn ser_display_opt<T: fmt::Display, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&v.to_string()),
        None => s.serialize_none(),
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.location.file.display())?;
        if self.location.line > 0 {
            write!(f, ":{}:{}", self.location.line, self.location.column)?;
        }
        write!(f, ": ")?;
        if self.severity == Severity::Warning {
            write!(f, "warning: ")?;
        }
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if let Some(p) = &self.path
            && !p.is_root()
        {
            write!(f, "{p}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// A finding not yet placed in a file: what the validators produce. The loader adds the
/// location from the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The field it concerns.
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
}

/// Collects findings while a resource is checked.
#[derive(Debug, Default)]
pub struct Findings(Vec<Finding>);

impl Findings {
    /// Records an error at `path`.
    pub fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.push(Severity::Error, path, message.into());
    }

    /// Records a warning at `path`.
    pub fn warn(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.push(Severity::Warning, path, message.into());
    }

    fn push(&mut self, severity: Severity, path: &FieldPath, message: String) {
        self.0.push(Finding {
            severity,
            path: path.clone(),
            message,
        });
    }

    /// True when an error (not only warnings) was recorded.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|f| f.severity == Severity::Error)
    }

    /// The findings, in the order they were recorded.
    pub fn into_vec(self) -> Vec<Finding> {
        self.0
    }

    /// The findings recorded so far.
    pub fn as_slice(&self) -> &[Finding] {
        &self.0
    }
}
