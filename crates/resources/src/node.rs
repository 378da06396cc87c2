//! The proxy's identity: who it is, as the control plane found it (Pod or WorkloadEntry)
//! and as telemetry, locality load balancing and policy see it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a proxy does.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An ingress or egress gateway (Istio's `router`).
    #[default]
    Gateway,
    /// A workload's sidecar.
    Sidecar,
}

/// One proxy's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique id (`istio=ingressgateway` under `meshwork up`; `NAME.NAMESPACE` in the mesh).
    pub id: String,
    /// Gateway or sidecar.
    pub role: Role,
    /// The workload's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The workload's name (Pod or WorkloadEntry).
    #[serde(default)]
    pub workload_name: String,
    /// The workload's labels (gateways are selected by these).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The workload's service account.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
    /// `region/zone/subzone`, for locality load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// The workload's addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// The mesh's trust domain (`cluster.local`), the first part of SPIFFE ids.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trust_domain: String,
    /// The Pod or WorkloadEntry the control plane found behind the proxy
    /// (`workloadentry/NS/NAME`); none when it found none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// How the workload's traffic reaches the proxy: through iptables redirects to its
    /// capture ports (Istio's `INTERCEPTION_MODE: REDIRECT`); none when nothing
    /// redirects it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interception: Option<Interception>,
    /// How long connections may finish after SIGTERM, in milliseconds (the mesh config's
    /// `defaultConfig.terminationDrainDuration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_drain_ms: Option<u64>,
}

/// The capture ports of a proxy whose workload's traffic iptables redirects to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Interception {
    /// Where the workload's outbound TCP goes (15001).
    pub outbound_port: u16,
    /// Where inbound TCP to the workload goes (15006).
    pub inbound_port: u16,
}
