//! Endpoint sets: the addresses behind one cluster, sent apart from the cluster so that an
//! endpoint-only change updates only them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The endpoints of one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSet {
    /// The cluster these endpoints serve.
    pub cluster: String,
    /// The endpoints, sorted.
    pub endpoints: Vec<Endpoint>,
}

/// One upstream address.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// IP address or DNS name.
    pub address: String,
    /// Port.
    pub port: u16,
    /// `region/zone/subzone`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// The endpoint's values of the labels named by `failoverPriority`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Endpoint {
    /// `address:port`.
    pub fn authority(&self) -> String {
        if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}
