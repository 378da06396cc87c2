//! The data plane: listeners, TLS, the request phases, upstream pools and telemetry, running
//! compiled configuration that is swapped in atomically (see docs/architecture.md).
#![forbid(unsafe_code)]
