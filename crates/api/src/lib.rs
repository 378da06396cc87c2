//! Istio's configuration API as Rust types, and everything needed to read it strictly.
pub mod analyze;
pub mod cel_rules;
pub mod diagnostic;
pub mod duration;
pub mod generated;
pub mod load;
pub mod mesh;
pub mod path;
pub mod resource;
pub mod schema;
pub mod source;
pub mod validate;

/// The Kubernetes API types the resources use, for crates that read them.
pub use k8s_openapi;
