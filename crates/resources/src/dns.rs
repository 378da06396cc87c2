//! What a sidecar's DNS proxy answers for (Istio's NameTable): the mesh's hosts, under
//! every name a client in the proxy's namespace may use, with their addresses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The names the DNS proxy knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameTable {
    /// Lower-case names without the final dot (`reviews`, `reviews.default`,
    /// `reviews.default.svc.cluster.local`, `api.example.com`) and their addresses.
    pub hosts: BTreeMap<String, Vec<String>>,
}
