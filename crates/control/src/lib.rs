//! The control plane: config sources (a directory of YAML; Kubernetes later), compilation
//! per proxy, the push stream, and the mesh CA (see docs/architecture.md).
#![forbid(unsafe_code)]
