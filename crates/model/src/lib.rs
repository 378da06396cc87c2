//! Pure compilation of typed Istio resources into per-proxy configuration: listeners,
//! routes, clusters and endpoints, indexed the way the data plane looks them up. No I/O,
//! deterministic, table-tested (see docs/architecture.md).
#![forbid(unsafe_code)]

pub mod attachment;
pub mod authorization;
pub mod clusters;
pub mod expr;
pub mod gateway;
pub mod mtls;
pub mod peer_authentication;
pub mod policy;
pub mod proxy;
pub mod registry;
pub mod request_authentication;
pub mod routes;
pub mod secrets;
pub mod sidecar;
pub mod telemetry;

pub use gateway::{Compiled, compile_gateways};

use meshwork_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Sorts resources as Istio orders competing ones: oldest first, then by namespace and
/// name.
pub(crate) fn oldest_first<T>(items: &mut [&T], meta: impl Fn(&T) -> &ObjectMeta) {
    items.sort_by_key(|i| {
        let m = meta(i);
        (
            m.creation_timestamp.as_ref().map(|t| t.0),
            m.namespace.clone(),
            m.name.clone(),
        )
    });
}
pub use meshwork_resources as resources;

/// How a proxy reads requests, from the mesh config: its `pathNormalization`, and for a
/// gateway the `defaultConfig.gatewayTopology.numTrustedProxies` in front of it.
pub fn http_options(
    mesh: &meshwork_api::mesh::MeshConfig,
    gateway: bool,
) -> meshwork_resources::HttpOptions {
    use meshwork_api::mesh::Normalization;
    use meshwork_resources::PathNormalization;
    let path_normalization = match mesh.path_normalization.normalization {
        Normalization::None => PathNormalization::None,
        Normalization::Default | Normalization::Base => PathNormalization::Base,
        Normalization::MergeSlashes => PathNormalization::MergeSlashes,
        Normalization::DecodeAndMergeSlashes => PathNormalization::DecodeAndMergeSlashes,
    };
    let num_trusted_proxies = if gateway {
        mesh.default_config
            .other
            .get("gatewayTopology")
            .and_then(|t| t.get("numTrustedProxies"))
            .and_then(|n| n.as_u64())
            .unwrap_or(0) as u32
    } else {
        0
    };
    meshwork_resources::HttpOptions {
        path_normalization,
        num_trusted_proxies,
    }
}
