//! Resources as they are stored: Istio kinds (`apiVersion`, `kind`, `metadata`, typed `spec`)
//! and the Kubernetes kinds meshwork reads, with one enum over all of them.

use std::fmt;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::generated::{networking, security, telemetry};

/// An Istio custom resource with a typed spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioResource<S> {
    /// `networking.istio.io/v1` and the like: any served version of the kind.
    pub api_version: String,
    /// The kind, as written.
    pub kind: String,
    /// Name, namespace, labels and the rest of Kubernetes' object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The typed spec.
    #[serde(default)]
    pub spec: S,
    /// Status written by a controller; kept as data, never read for behaviour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `networking.istio.io` Gateway.
pub type Gateway = IstioResource<networking::GatewaySpec>;
/// `networking.istio.io` VirtualService.
pub type VirtualService = IstioResource<networking::VirtualServiceSpec>;
/// `networking.istio.io` DestinationRule.
pub type DestinationRule = IstioResource<networking::DestinationRuleSpec>;
/// `networking.istio.io` ServiceEntry.
pub type ServiceEntry = IstioResource<networking::ServiceEntrySpec>;
/// `networking.istio.io` Sidecar.
pub type Sidecar = IstioResource<networking::SidecarSpec>;
/// `networking.istio.io` WorkloadEntry.
pub type WorkloadEntry = IstioResource<networking::WorkloadEntrySpec>;
/// `networking.istio.io` WorkloadGroup.
pub type WorkloadGroup = IstioResource<networking::WorkloadGroupSpec>;
/// `security.istio.io` PeerAuthentication.
pub type PeerAuthentication = IstioResource<security::PeerAuthenticationSpec>;
/// `security.istio.io` AuthorizationPolicy.
pub type AuthorizationPolicy = IstioResource<security::AuthorizationPolicySpec>;
/// `security.istio.io` RequestAuthentication.
pub type RequestAuthentication = IstioResource<security::RequestAuthenticationSpec>;
/// `telemetry.istio.io` Telemetry.
pub type Telemetry = IstioResource<telemetry::TelemetrySpec>;

macro_rules! kinds {
    ($( $variant:ident($ty:ty) = $group:literal [$($version:literal),+] $(cluster $cluster:ident)? ; )+) => {
        /// Every kind meshwork reads.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Kind {
            $(
                #[doc = concat!("`", stringify!($variant), "` (", $group, ")")]
                $variant,
            )+
        }

        impl Kind {
            /// All kinds, in a stable order.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),+];

            /// The kind's name, as written in `kind:`.
            pub fn name(self) -> &'static str {
                match self { $(Kind::$variant => stringify!($variant)),+ }
            }

            /// The API group (empty for Kubernetes' core group).
            pub fn group(self) -> &'static str {
                match self { $(Kind::$variant => $group),+ }
            }

            /// The versions of the group that serve the kind.
            pub fn versions(self) -> &'static [&'static str] {
                match self { $(Kind::$variant => &[$($version),+]),+ }
            }

            /// True for kinds without a namespace (Namespace).
            pub fn is_cluster_scoped(self) -> bool {
                match self { $(Kind::$variant => false $(|| stringify!($cluster) == "yes")?),+ }
            }

            /// Decodes JSON data of this kind into its typed form.
            pub fn decode(self, value: serde_json::Value) -> Result<Object, serde_json::Error> {
                Ok(match self { $(Kind::$variant => Object::$variant(serde_json::from_value(value)?)),+ })
            }
        }

        /// One resource of any supported kind.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum Object {
            $(
                #[doc = concat!("A ", stringify!($variant), ".")]
                $variant($ty),
            )+
        }

        impl Object {
            /// The kind of the resource.
            pub fn kind(&self) -> Kind {
                match self { $(Object::$variant(_) => Kind::$variant),+ }
            }

            /// The object metadata.
            pub fn metadata(&self) -> &ObjectMeta {
                match self { $(Object::$variant(o) => &o.metadata),+ }
            }

            /// The object metadata, for defaulting the namespace.
            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self { $(Object::$variant(o) => &mut o.metadata),+ }
            }

            /// Encodes the resource as JSON data.
            pub fn to_json(&self) -> serde_json::Value {
                let v = match self { $(Object::$variant(o) => serde_json::to_value(o)),+ };
                v.expect("resources always serialize")
            }
        }
    };
}

kinds! {
    Gateway(Gateway) = "networking.istio.io" ["v1", "v1beta1", "v1alpha3"];
    VirtualService(VirtualService) = "networking.istio.io" ["v1", "v1beta1", "v1alpha3"];
    DestinationRule(DestinationRule) = "networking.istio.io" ["v1", "v1beta1", "v1alpha3"];
    ServiceEntry(ServiceEntry) = "networking.istio.io" ["v1", "v1beta1", "v1alpha3"];
    Sidecar(Sidecar) = "networking.istio.io" ["v1", "v1beta1", "v1alpha3"];
    WorkloadEntry(WorkloadEntry) = "networking.istio.io" ["v1", "v1beta1", "v1alpha3"];
    WorkloadGroup(WorkloadGroup) = "networking.istio.io" ["v1", "v1beta1", "v1alpha3"];
    PeerAuthentication(PeerAuthentication) = "security.istio.io" ["v1", "v1beta1"];
    AuthorizationPolicy(AuthorizationPolicy) = "security.istio.io" ["v1", "v1beta1"];
    RequestAuthentication(RequestAuthentication) = "security.istio.io" ["v1", "v1beta1"];
    Telemetry(Telemetry) = "telemetry.istio.io" ["v1", "v1alpha1"];
    Namespace(core::Namespace) = "" ["v1"] cluster yes;
    Service(core::Service) = "" ["v1"];
    Endpoints(core::Endpoints) = "" ["v1"];
    Secret(core::Secret) = "" ["v1"];
    Pod(core::Pod) = "" ["v1"];
    ConfigMap(core::ConfigMap) = "" ["v1"];
    EndpointSlice(discovery::EndpointSlice) = "discovery.k8s.io" ["v1"];
}

impl Kind {
    /// True for Istio's own kinds (checked against the CRD schemas).
    pub fn is_istio(self) -> bool {
        self.group().ends_with(".istio.io")
    }

    /// Finds the kind for an `apiVersion` and `kind` pair.
    pub fn lookup(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == kind && k.group() == group && k.versions().contains(&version))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names a resource: `VirtualService default/reviews`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The kind.
    pub kind: Kind,
    /// The namespace (empty for cluster-scoped kinds).
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl Object {
    /// The resource's name and namespace.
    pub fn object_ref(&self) -> ObjectRef {
        let m = self.metadata();
        ObjectRef {
            kind: self.kind(),
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_every_served_version() {
        assert_eq!(
            Kind::lookup("networking.istio.io/v1beta1", "Gateway"),
            Some(Kind::Gateway)
        );
        assert_eq!(
            Kind::lookup("telemetry.istio.io/v1alpha1", "Telemetry"),
            Some(Kind::Telemetry)
        );
        assert_eq!(Kind::lookup("v1", "Service"), Some(Kind::Service));
        assert_eq!(
            Kind::lookup("discovery.k8s.io/v1", "EndpointSlice"),
            Some(Kind::EndpointSlice)
        );
        assert_eq!(Kind::lookup("networking.istio.io/v2", "Gateway"), None);
        assert_eq!(
            Kind::lookup("networking.istio.io/v1alpha3", "EnvoyFilter"),
            None
        );
        assert!(Kind::Namespace.is_cluster_scoped());
        assert!(!Kind::Service.is_cluster_scoped());
    }
}
