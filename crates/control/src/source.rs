//! A config directory as a source of config versions: the first load must be clean; every
//! later load is merged into the last good version resource by resource ([`last_good`]),
//! so that a rejected resource keeps its last good version and the rest applies. Every
//! diagnostic is logged as `meshwork validate` prints it.

use std::path::PathBuf;

use meshwork_api::diagnostic::Severity;
use meshwork_api::load::{LoadOptions, LoadOutcome, LoadedObject, ReadError, load_paths};
use meshwork_api::mesh::MeshConfig;
use meshwork_api::resource::Object;
use tracing::{error, warn};

use crate::last_good;

/// The first config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory could not be read.
    #[error("cannot read {0}")]
    Read(#[from] ReadError),
    /// The first config has errors.
    #[error("the configuration has {0} error(s); nothing started")]
    Invalid(usize),
}

/// A config directory and its last good version.
pub struct DirSource {
    dir: PathBuf,
    mesh_file: Option<PathBuf>,
    objects: Vec<LoadedObject>,
    mesh: MeshConfig,
}

impl DirSource {
    fn load(dir: &PathBuf, mesh_file: Option<&PathBuf>) -> Result<LoadOutcome, ReadError> {
        let opts = LoadOptions {
            mesh_file: mesh_file.cloned(),
            ..LoadOptions::default()
        };
        let outcome = load_paths(std::slice::from_ref(dir), &opts)?;
        for d in &outcome.diagnostics {
            match d.severity {
                Severity::Error => error!("{d}"),
                Severity::Warning => warn!("{d}"),
            }
        }
        Ok(outcome)
    }

    /// Loads the first version, which must have no errors.
    pub fn open(dir: PathBuf, mesh_file: Option<PathBuf>) -> Result<DirSource, OpenError> {
        let first = Self::load(&dir, mesh_file.as_ref())?;
        if first.has_errors() {
            return Err(OpenError::Invalid(
                first
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count(),
            ));
        }
        Ok(DirSource {
            dir,
            mesh_file,
            objects: first.config.objects,
            mesh: first.config.mesh,
        })
    }

    /// Reads the directory again and merges it into the last good version. On a read
    /// error the last good version stays, and the error is returned.
    pub fn reload(&mut self) -> Result<(), ReadError> {
        let outcome = Self::load(&self.dir, self.mesh_file.as_ref())?;
        let merged = last_good::merge(outcome, &self.objects, &self.mesh, self.mesh_file.as_ref());
        for r in &merged.kept {
            error!("{r}: the new version is rejected; the last good version keeps serving");
        }
        for r in &merged.left_out {
            error!("{r}: rejected; it has no good version and is left out");
        }
        if merged.mesh_kept {
            error!("the mesh config is rejected; the last good mesh config applies");
        }
        if !merged.kept.is_empty() || !merged.left_out.is_empty() || merged.mesh_kept {
            error!(
                "configuration rejected in part: {} resource(s) keep their last good version, {} left out; the rest applies",
                merged.kept.len(),
                merged.left_out.len()
            );
        }
        self.objects = merged.objects;
        self.mesh = merged.mesh;
        Ok(())
    }

    /// The resources in force, with where each was read.
    pub fn loaded(&self) -> &[LoadedObject] {
        &self.objects
    }

    /// The resources in force.
    pub fn objects(&self) -> Vec<Object> {
        self.objects.iter().map(|o| o.object.clone()).collect()
    }

    /// The mesh config in force.
    pub fn mesh(&self) -> &MeshConfig {
        &self.mesh
    }

    /// The directory and the mesh file: what to watch.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut out = vec![self.dir.clone()];
        out.extend(self.mesh_file.clone());
        out
    }
}
