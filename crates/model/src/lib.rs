//! Pure compilation of typed Istio resources into per-proxy configuration: listeners,
//! routes, clusters and endpoints, indexed the way the data plane looks them up. No I/O,
//! deterministic, table-tested. Filled in by the gateway work (see docs/architecture.md).
#![forbid(unsafe_code)]
