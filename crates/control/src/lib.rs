//! The control plane: config sources (a directory of YAML; Kubernetes later), compilation
//! per proxy, and applying it to proxies (see docs/architecture.md).
#![forbid(unsafe_code)]

pub mod discovery;
pub mod last_good;
pub mod source;
pub mod up;
pub mod watch;
