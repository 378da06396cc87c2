//! Loading configuration from files, directories or standard input: multi-document YAML,
//! JSON, `kind: List`, strict field checking, validation, namespace defaulting, and the
//! mesh config. Every problem becomes a [`Diagnostic`] that names the file, line and
//! column, the resource and the field.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::diagnostic::{Diagnostic, Finding, Findings, Location, Severity};
use crate::mesh::{self, MeshConfig};
use crate::path::FieldPath;
use crate::resource::{Kind, Object, ObjectRef};
use crate::schema;
use crate::source::{self, Document};
use crate::validate;

/// How to read the input.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The namespace of resources that name none (`default`, as kubectl).
    pub default_namespace: String,
    /// A standalone mesh config file (`mesh.yaml`); otherwise the `mesh` key of the `istio`
    /// ConfigMap in the root namespace is used, and otherwise Istio's defaults.
    pub mesh_file: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            default_namespace: "default".to_string(),
            mesh_file: None,
        }
    }
}

/// A resource that loaded cleanly, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedObject {
    /// The typed resource, namespace filled in.
    pub object: Object,
    /// The file and line where its document starts.
    pub origin: Location,
}

/// Everything that loaded, with the mesh config in force.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The valid resources, in input order.
    pub objects: Vec<LoadedObject>,
    /// The mesh config (Istio's defaults where not set).
    pub mesh: MeshConfig,
}

/// The result of a load: the valid configuration and every finding.
#[derive(Debug, Clone, Default)]
pub struct LoadOutcome {
    /// What loaded cleanly.
    pub config: Config,
    /// Errors and warnings, in input order.
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadOutcome {
    /// True when any error was found: the input as a whole is invalid.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// The number of errors and of warnings.
    pub fn counts(&self) -> (usize, usize) {
        let errors = self
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        (errors, self.diagnostics.len() - errors)
    }
}

/// A file or directory could not be read at all (as opposed to read and found invalid).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct ReadError {
    /// What could not be read.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Loads every path (files, directories recursively, `-` for standard input).
pub fn load_paths(paths: &[PathBuf], opts: &LoadOptions) -> Result<LoadOutcome, ReadError> {
    let mut loader = Loader::new(opts.clone());
    for path in paths {
        loader.add_path(path)?;
    }
    loader.finish()
}

/// Loads YAML text as if read from `file`.
pub fn load_str(file: &Path, text: &str, opts: &LoadOptions) -> LoadOutcome {
    let mut loader = Loader::new(opts.clone());
    loader.add_text(file, text);
    // Without a mesh file nothing more is read, so this cannot fail.
    loader.finish().unwrap_or_default()
}

/// The files a directory holds that are configuration: `*.yaml`, `*.yml`, `*.json`,
/// recursively, sorted, skipping hidden entries.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    collect(dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let read_err = |source| ReadError {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Accumulates documents from several inputs, then resolves what spans them.
pub struct Loader {
    opts: LoadOptions,
    objects: Vec<LoadedObject>,
    diagnostics: Vec<Diagnostic>,
    seen: HashMap<ObjectRef, Location>,
    unsupported: BTreeSet<(String, String)>,
}

/// A document, or a `kind: List` item inside one.
struct DocView<'a> {
    file: &'a Path,
    doc: &'a Document,
    /// Where the resource sits in the document (`items[3]` inside a List).
    prefix: FieldPath,
    value: &'a Value,
}

impl DocView<'_> {
    fn location(&self, path: &FieldPath) -> Location {
        let pos = self.doc.position(&self.prefix.join(path));
        Location {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
        }
    }
}

impl Loader {
    /// A loader with nothing read yet.
    pub fn new(opts: LoadOptions) -> Self {
        Self {
            opts,
            objects: Vec::new(),
            diagnostics: Vec::new(),
            seen: HashMap::new(),
            unsupported: BTreeSet::new(),
        }
    }

    /// Reads a file, a directory (recursively) or `-` (standard input).
    pub fn add_path(&mut self, path: &Path) -> Result<(), ReadError> {
        let read_err = |source| ReadError {
            path: path.to_path_buf(),
            source,
        };
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(read_err)?;
            self.add_text(path, &text);
        } else if path.is_dir() {
            for file in config_files(path)? {
                self.add_path(&file)?;
            }
        } else {
            let text = std::fs::read_to_string(path).map_err(read_err)?;
            self.add_text(path, &text);
        }
        Ok(())
    }

    /// Reads YAML text as if it came from `file`.
    pub fn add_text(&mut self, file: &Path, text: &str) {
        let docs = match source::parse_documents(text) {
            Ok(docs) => docs,
            Err(e) => {
                self.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    location: Location {
                        file: file.to_path_buf(),
                        line: e.position.line,
                        column: e.position.column,
                    },
                    resource: None,
                    path: None,
                    message: format!("invalid YAML: {}", e.message),
                });
                return;
            }
        };
        for doc in &docs {
            self.add_document(DocView {
                file,
                doc,
                prefix: FieldPath::root(),
                value: &doc.value,
            });
        }
    }

    /// Places a document's findings in the file, in the order of the text.
    fn report(&mut self, view: &DocView<'_>, resource: Option<&ObjectRef>, findings: Vec<Finding>) {
        let mut diags: Vec<Diagnostic> = findings
            .into_iter()
            .map(|f| Diagnostic {
                severity: f.severity,
                location: view.location(&f.path),
                resource: resource.cloned(),
                path: Some(f.path),
                message: f.message,
            })
            .collect();
        diags.sort_by_key(|d| (d.location.line, d.location.column));
        self.diagnostics.extend(diags);
    }

    fn add_document(&mut self, view: DocView<'_>) {
        let mut findings = Findings::default();
        let root = FieldPath::root();
        let Some(obj) = view.value.as_object() else {
            findings.error(
                &root,
                "expected a resource: a mapping with apiVersion and kind",
            );
            return self.report(&view, None, findings.into_vec());
        };
        let api_version = obj.get("apiVersion").and_then(Value::as_str);
        let kind_name = obj.get("kind").and_then(Value::as_str);
        let (Some(api_version), Some(kind_name)) = (api_version, kind_name) else {
            for field in ["apiVersion", "kind"] {
                if !obj.get(field).is_some_and(Value::is_string) {
                    findings.error(&root, format!("missing required field \"{field}\""));
                }
            }
            return self.report(&view, None, findings.into_vec());
        };
        if kind_name == "List" && api_version == "v1" {
            let Some(items) = obj.get("items").and_then(Value::as_array) else {
                findings.error(&root.field("items"), "a List needs a list of items");
                return self.report(&view, None, findings.into_vec());
            };
            for (i, item) in items.iter().enumerate() {
                self.add_document(DocView {
                    file: view.file,
                    doc: view.doc,
                    prefix: view.prefix.join(&root.field("items").index(i)),
                    value: item,
                });
            }
            return;
        }
        let Some(kind) = Kind::lookup(api_version, kind_name) else {
            self.unsupported_kind(&view, api_version, kind_name);
            return;
        };

        let meta = self.check_metadata(&view, kind, obj.get("metadata"), &mut findings);
        let resource = ObjectRef {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        };
        if kind.is_istio() {
            schema::check_resource(kind, view.value, &mut findings);
        }
        if findings.has_errors() {
            return self.report(&view, Some(&resource), findings.into_vec());
        }
        let mut object = match kind.decode(view.value.clone()) {
            Ok(o) => o,
            Err(e) => {
                findings.error(&root, format!("cannot read as {kind}: {e}"));
                return self.report(&view, Some(&resource), findings.into_vec());
            }
        };
        if !kind.is_istio() {
            unknown_fields(view.value, &object.to_json(), &root, &mut findings);
        }
        *object.metadata_mut() = meta;
        validate::validate_object(&object, &mut findings);
        let ok = !findings.has_errors();
        self.report(&view, Some(&resource), findings.into_vec());
        if ok {
            let origin = view.location(&root);
            if let Some(first) = self.seen.get(&resource) {
                let message = format!(
                    "{resource} is defined twice; the first is at {}:{}",
                    first.file.display(),
                    first.line
                );
                self.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    location: origin,
                    resource: Some(resource),
                    path: None,
                    message,
                });
                return;
            }
            self.seen.insert(resource, origin.clone());
            self.objects.push(LoadedObject { object, origin });
        }
    }

    fn unsupported_kind(&mut self, view: &DocView<'_>, api_version: &str, kind_name: &str) {
        let served = Kind::ALL
            .iter()
            .find(|k| k.name() == kind_name && api_version.starts_with(&format!("{}/", k.group())));
        let mut findings = Findings::default();
        let root = FieldPath::root();
        if let Some(k) = served {
            findings.error(
                &root.field("apiVersion"),
                format!(
                    "{api_version} does not serve {kind_name} (served versions: {})",
                    k.versions().join(", ")
                ),
            );
        } else if self
            .unsupported
            .insert((api_version.to_string(), kind_name.to_string()))
        {
            findings.warn(
                &root,
                format!("{api_version} {kind_name} is not supported by meshwork and is ignored"),
            );
        }
        self.report(view, None, findings.into_vec());
    }

    /// Reads and checks `metadata`, filling in the namespace.
    fn check_metadata(
        &self,
        view: &DocView<'_>,
        kind: Kind,
        value: Option<&Value>,
        findings: &mut Findings,
    ) -> ObjectMeta {
        let path = FieldPath::root().field("metadata");
        let value = value.cloned().unwrap_or(Value::Object(Default::default()));
        let mut meta: ObjectMeta = match serde_json::from_value(value.clone()) {
            Ok(m) => m,
            Err(e) => {
                findings.error(&path, format!("invalid metadata: {e}"));
                ObjectMeta::default()
            }
        };
        if let Ok(back) = serde_json::to_value(&meta) {
            unknown_fields(&value, &back, &path, findings);
        }
        match meta.name.as_deref() {
            None | Some("") => {
                let pos = view.location(&FieldPath::root());
                let name = format!(
                    "unnamed-{}-line-{}",
                    kind.name().to_ascii_lowercase(),
                    pos.line
                );
                findings.warn(
                    &path,
                    format!(
                        "metadata.name is missing (kubectl would reject this resource); it is named {name:?} here"
                    ),
                );
                meta.name = Some(name);
            }
            Some(name) => {
                if let Err(why) = validate::names::dns1123_subdomain(name) {
                    findings.error(&path.field("name"), format!("invalid name {name:?}: {why}"));
                }
            }
        }
        if kind.is_cluster_scoped() {
            meta.namespace = None;
        } else {
            match meta.namespace.as_deref() {
                None | Some("") => meta.namespace = Some(self.opts.default_namespace.clone()),
                Some(ns) => {
                    if let Err(why) = validate::names::dns1123_label(ns) {
                        findings.error(
                            &path.field("namespace"),
                            format!("invalid namespace {ns:?}: {why}"),
                        );
                    }
                }
            }
        }
        meta
    }

    /// Resolves the mesh config and returns everything loaded.
    pub fn finish(mut self) -> Result<LoadOutcome, ReadError> {
        let mesh = match self.opts.mesh_file.clone() {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ReadError {
                    path: path.clone(),
                    source,
                })?;
                let (mesh, diags) = mesh::parse_mesh_file(&path, &text);
                self.diagnostics.extend(diags);
                mesh
            }
            None => {
                let (mesh, diags) = mesh::from_config_maps(&self.objects);
                self.diagnostics.extend(diags);
                mesh
            }
        };
        Ok(LoadOutcome {
            config: Config {
                objects: self.objects,
                mesh,
            },
            diagnostics: self.diagnostics,
        })
    }
}

/// Reports keys of `input` that did not survive decoding into a typed value: fields the
/// Kubernetes type does not have.
fn unknown_fields(input: &Value, decoded: &Value, path: &FieldPath, findings: &mut Findings) {
    match (input, decoded) {
        (Value::Object(i), Value::Object(d)) => {
            for (k, v) in i {
                match d.get(k) {
                    Some(dv) => unknown_fields(v, dv, &path.field(k), findings),
                    None if v.is_null() => {}
                    None => {
                        let msg = match schema::did_you_mean(k, d.keys().map(String::as_str)) {
                            Some(s) => format!("unknown field (did you mean \"{s}\"?)"),
                            None => "unknown field".to_string(),
                        };
                        findings.error(&path.field(k), msg);
                    }
                }
            }
        }
        (Value::Array(i), Value::Array(d)) => {
            for (n, (iv, dv)) in i.iter().zip(d).enumerate() {
                unknown_fields(iv, dv, &path.index(n), findings);
            }
        }
        _ => {}
    }
}
