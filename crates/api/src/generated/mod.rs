//! Types generated from Istio's CRD schemas by `tools/gen_api.py`: every field of every
//! supported kind, named after Istio's protobuf messages.
pub mod common;
pub mod networking;
pub mod security;
pub mod telemetry;
