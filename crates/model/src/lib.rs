//! Pure compilation of typed Istio resources into per-proxy configuration: listeners,
//! routes, clusters and endpoints, indexed the way the data plane looks them up. No I/O,
//! deterministic, table-tested (see docs/architecture.md).
#![forbid(unsafe_code)]

pub mod authorization;
pub mod clusters;
pub mod gateway;
pub mod mtls;
pub mod peer_authentication;
pub mod policy;
pub mod proxy;
pub mod registry;
pub mod routes;
pub mod secrets;
pub mod sidecar;
pub mod telemetry;

pub use gateway::{Compiled, compile_gateways};
pub use meshwork_resources as resources;
