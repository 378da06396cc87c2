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
use crate::mesh::{self, MeshConfig, MeshTextOrigin};
use crate::path::{FieldPath, Segment};
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
    /// Where the `mesh` text of each ConfigMap sits in its file.
    mesh_origins: HashMap<ObjectRef, MeshTextOrigin>,
}

/// A document, or a `kind: List` item inside one.
struct DocView<'a> {
    file: &'a Path,
    /// The text of the whole file.
    text: &'a str,
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
            mesh_origins: HashMap::new(),
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
            // The mesh config is not a resource: when it lies inside a scanned directory
            // (`meshwork up DIR --mesh DIR/mesh.yaml`), it is read as the mesh config only.
            let mesh_file = self
                .opts
                .mesh_file
                .as_ref()
                .and_then(|m| m.canonicalize().ok());
            for file in config_files(path)? {
                if mesh_file.is_some() && file.canonicalize().ok() == mesh_file {
                    continue;
                }
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
                text,
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
                    text: view.text,
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
            let known = |p: &FieldPath| kubernetes_field_names(kind, p);
            unknown_fields(view.value, &object.to_json(), &root, &known, &mut findings);
        }
        *object.metadata_mut() = meta;
        validate::validate_object(&object, &mut findings);
        let ok = !findings.has_errors();
        self.report(&view, Some(&resource), findings.into_vec());
        if ok {
            let origin = view.location(&root);
            if let Some(first) = self.seen.get(&resource) {
                // The diagnostic names this file already; repeat it only for another file.
                let message = if first.file == origin.file {
                    format!(
                        "{resource} is defined twice; the first is at line {}",
                        first.line
                    )
                } else {
                    format!(
                        "{resource} is defined twice; the first is at {}:{}",
                        first.file.display(),
                        first.line
                    )
                };
                self.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    location: origin,
                    resource: Some(resource),
                    path: None,
                    message,
                });
                return;
            }
            if let Object::ConfigMap(cm) = &object
                && cm.data.as_ref().is_some_and(|d| d.contains_key("mesh"))
            {
                let key = root.field("data").field("mesh");
                let at = view.doc.position(&view.prefix.join(&key));
                let origin = MeshTextOrigin::of_value(view.text, at);
                self.mesh_origins.insert(resource.clone(), origin);
            }
            self.seen.insert(resource, origin.clone());
            self.objects.push(LoadedObject { object, origin });
        }
    }

    fn unsupported_kind(&mut self, view: &DocView<'_>, api_version: &str, kind_name: &str) {
        // The core group has no name: its apiVersion is the bare version (`v1`).
        let in_group = |k: &Kind| match k.group() {
            "" => !api_version.contains('/'),
            group => api_version.starts_with(&format!("{group}/")),
        };
        let served = Kind::ALL
            .iter()
            .find(|k| k.name() == kind_name && in_group(k));
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
            Ok(m) => {
                if let Ok(back) = serde_json::to_value(&m) {
                    let known = |p: &FieldPath| field_names::<ObjectMeta>(&p.segments()[1..]);
                    unknown_fields(&value, &back, &path, &known, findings);
                }
                m
            }
            Err(e) => {
                findings.error(&path, format!("invalid metadata: {e}"));
                // Keep what names the resource, so that it is reported under its name.
                let text = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_string);
                ObjectMeta {
                    name: text("name"),
                    namespace: text("namespace"),
                    ..ObjectMeta::default()
                }
            }
        };
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
                let (mesh, diags) = mesh::from_config_maps(&self.objects, &self.mesh_origins);
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

/// The names of the fields that can appear at `path`, used to suggest a name for an
/// unknown field: what the decoded value holds, and what the type declares.
type KnownFields<'a> = dyn Fn(&FieldPath) -> Vec<&'static str> + 'a;

/// Reports keys of `input` that did not survive decoding into a typed value: fields the
/// Kubernetes type does not have.
fn unknown_fields(
    input: &Value,
    decoded: &Value,
    path: &FieldPath,
    known: &KnownFields<'_>,
    findings: &mut Findings,
) {
    match (input, decoded) {
        (Value::Object(i), Value::Object(d)) => {
            for (k, v) in i {
                match d.get(k) {
                    Some(dv) => unknown_fields(v, dv, &path.field(k), known, findings),
                    None if v.is_null() => {}
                    None => {
                        let declared = known(path);
                        let names = d.keys().map(String::as_str).chain(declared);
                        let msg = match schema::did_you_mean(k, names) {
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
                unknown_fields(iv, dv, &path.index(n), known, findings);
            }
        }
        _ => {}
    }
}

/// The fields a Kubernetes kind declares at `path` (empty for Istio kinds, which the CRD
/// schema checks).
fn kubernetes_field_names(kind: Kind, path: &FieldPath) -> Vec<&'static str> {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as discovery;
    let path = path.segments();
    match kind {
        Kind::Namespace => field_names::<core::Namespace>(path),
        Kind::Service => field_names::<core::Service>(path),
        Kind::Endpoints => field_names::<core::Endpoints>(path),
        Kind::Secret => field_names::<core::Secret>(path),
        Kind::Pod => field_names::<core::Pod>(path),
        Kind::ConfigMap => field_names::<core::ConfigMap>(path),
        Kind::EndpointSlice => field_names::<discovery::EndpointSlice>(path),
        _ => Vec::new(),
    }
}

/// The field names the type `T` declares for the struct at `path`, read from what its
/// `Deserialize` implementation tells the deserializer (`deserialize_struct`'s field
/// list). Empty when `path` does not lead to a struct.
fn field_names<T: serde::de::DeserializeOwned>(path: &[Segment]) -> Vec<&'static str> {
    let found = std::cell::Cell::new(None);
    let _ = T::deserialize(FieldProbe {
        path,
        found: &found,
    });
    found.get().map(<[&str]>::to_vec).unwrap_or_default()
}

/// A deserializer that follows a path through a type's `Deserialize` implementation and
/// records the field list of the struct it reaches. It never produces a value.
struct FieldProbe<'a> {
    path: &'a [Segment],
    found: &'a std::cell::Cell<Option<&'static [&'static str]>>,
}

impl FieldProbe<'_> {
    fn stop<T>() -> Result<T, serde::de::value::Error> {
        Err(serde::de::Error::custom("field probe"))
    }
}

impl<'de> serde::Deserializer<'de> for FieldProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Self::stop()
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.path.split_first() {
            None => {
                self.found.set(Some(fields));
                Self::stop()
            }
            Some((Segment::Field(key), rest)) => visitor.visit_map(ProbeEntry {
                key: Some(key),
                probe: Some(FieldProbe {
                    path: rest,
                    found: self.found,
                }),
            }),
            Some(_) => Self::stop(),
        }
    }

    fn deserialize_map<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.path.split_first() {
            Some((Segment::Field(key) | Segment::Key(key), rest)) => {
                visitor.visit_map(ProbeEntry {
                    key: Some(key),
                    probe: Some(FieldProbe {
                        path: rest,
                        found: self.found,
                    }),
                })
            }
            _ => Self::stop(),
        }
    }

    fn deserialize_seq<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.path.split_first() {
            Some((Segment::Index(_), rest)) => visitor.visit_seq(ProbeElement(Some(FieldProbe {
                path: rest,
                found: self.found,
            }))),
            _ => Self::stop(),
        }
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// The one entry of a map on the probe's path.
struct ProbeEntry<'a> {
    key: Option<&'a str>,
    probe: Option<FieldProbe<'a>>,
}

impl<'de> serde::de::MapAccess<'de> for ProbeEntry<'_> {
    type Error = serde::de::value::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.key.take() {
            Some(key) => seed
                .deserialize(serde::de::value::StrDeserializer::<Self::Error>::new(key))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.probe.take() {
            Some(probe) => seed.deserialize(probe),
            None => FieldProbe::stop(),
        }
    }
}

/// The one element of a list on the probe's path.
struct ProbeElement<'a>(Option<FieldProbe<'a>>);

impl<'de> serde::de::SeqAccess<'de> for ProbeElement<'_> {
    type Error = serde::de::value::Error;

    fn next_element_seed<T: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        match self.0.take() {
            Some(probe) => seed.deserialize(probe).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        let outcome = load_str(Path::new("t.yaml"), text, &LoadOptions::default());
        outcome
            .diagnostics
            .iter()
            .map(|d| d.to_string().trim_start_matches("t.yaml:").to_string())
            .collect()
    }

    #[test]
    fn an_unserved_version_of_a_core_kind_is_an_error() {
        assert_eq!(
            lines("apiVersion: v2\nkind: Service\nmetadata: {name: a}\n"),
            vec!["1:1: apiVersion: v2 does not serve Service (served versions: v1)"]
        );
        assert_eq!(
            lines("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n"),
            vec!["1:1: warning: apps/v1 Deployment is not supported by meshwork and is ignored"]
        );
    }

    #[test]
    fn a_duplicate_in_the_same_file_names_the_line() {
        let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n";
        assert_eq!(
            lines(&format!("{doc}---\n{doc}")),
            vec![
                "5:1: Service default/a: Service default/a is defined twice; the first is at line 1"
            ]
        );
    }

    #[test]
    fn unknown_kubernetes_fields_suggest_declared_names() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a, lables: {}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  selctor: {app: b}\n  ports: [{port: 80, protocl: TCP}]\n";
        assert_eq!(
            lines(text),
            vec![
                "3:21: Service default/a: metadata.lables: unknown field (did you mean \"labels\"?)",
                "9:3: Service default/b: spec.selctor: unknown field (did you mean \"selector\"?)",
                "10:22: Service default/b: spec.ports[0].protocl: unknown field (did you mean \"protocol\"?)",
            ]
        );
        use k8s_openapi::api::core::v1::Service;
        let at = FieldPath::parse("spec.ports[0]");
        assert!(field_names::<Service>(at.segments()).contains(&"targetPort"));
        assert!(field_names::<Service>(FieldPath::parse("spec.nothing").segments()).is_empty());
    }

    #[test]
    fn a_mesh_file_inside_a_scanned_directory_is_the_mesh_config_only() {
        let dir = std::env::temp_dir().join(format!("meshwork-load-mesh-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("service.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(dir.join("mesh.yaml"), "accessLogFile: /dev/stdout\n").unwrap();
        // Not the mesh file: a second file of the same name elsewhere is still a resource.
        std::fs::write(dir.join("sub/mesh.yaml"), "accessLogFile: /dev/stdout\n").unwrap();
        let opts = LoadOptions {
            // Named by another spelling of the same path.
            mesh_file: Some(dir.join("sub/../mesh.yaml")),
            ..LoadOptions::default()
        };
        let outcome = load_paths(std::slice::from_ref(&dir), &opts).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let messages: Vec<String> = outcome.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            !messages.is_empty() && messages.iter().all(|m| m.contains("/sub/mesh.yaml:")),
            "only the other file is read as a resource: {messages:#?}"
        );
        assert_eq!(outcome.config.objects.len(), 1);
        assert_eq!(outcome.config.mesh.access_log_file, "/dev/stdout");
    }

    #[test]
    fn unreadable_metadata_is_one_error_under_the_resource_name() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  labels: [x]\n";
        assert_eq!(
            lines(text),
            vec![
                "3:1: Service default/a: metadata: invalid metadata: invalid type: sequence, expected a map"
            ]
        );
    }
}
