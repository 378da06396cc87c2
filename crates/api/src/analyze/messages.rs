//! Istio's analysis message types: code, name and level, as Istio's message catalog
//! defines them. Texts are built by the analyzers.

use super::Level;

/// One kind of message: `IST0101 ReferencedResourceNotFound`, an error.
#[derive(Debug, PartialEq, Eq)]
pub struct MessageType {
    /// `IST0101`.
    pub code: &'static str,
    /// `ReferencedResourceNotFound`.
    pub name: &'static str,
    /// Its level.
    pub level: Level,
}

impl MessageType {
    /// The page of Istio's reference that explains the code.
    pub fn documentation_url(&self) -> String {
        format!(
            "https://istio.io/latest/docs/reference/config/analysis/{}/",
            self.code.to_ascii_lowercase()
        )
    }
}

macro_rules! messages {
    ($($id:ident = $code:literal $name:literal $level:ident;)+) => {
        $(
            #[doc = concat!("`", $code, "` ", $name, ".")]
            pub const $id: &MessageType = &MessageType { code: $code, name: $name, level: Level::$level };
        )+
        /// Every message type meshwork can report.
        pub const ALL_MESSAGES: &[&MessageType] = &[$($id),+];
    };
}

messages! {
    DEPRECATED = "IST0002" "Deprecated" Warning;
    REFERENCED_RESOURCE_NOT_FOUND = "IST0101" "ReferencedResourceNotFound" Error;
    NAMESPACE_NOT_INJECTED = "IST0102" "NamespaceNotInjected" Info;
    POD_MISSING_PROXY = "IST0103" "PodMissingProxy" Warning;
    SCHEMA_VALIDATION_ERROR = "IST0106" "SchemaValidationError" Error;
    MISPLACED_ANNOTATION = "IST0107" "MisplacedAnnotation" Warning;
    UNKNOWN_ANNOTATION = "IST0108" "UnknownAnnotation" Warning;
    CONFLICTING_MESH_GATEWAY_VS_HOSTS = "IST0109" "ConflictingMeshGatewayVirtualServiceHosts" Error;
    CONFLICTING_SIDECAR_WORKLOAD_SELECTORS = "IST0110" "ConflictingSidecarWorkloadSelectors" Error;
    MULTIPLE_SIDECARS_WITHOUT_SELECTORS = "IST0111" "MultipleSidecarsWithoutWorkloadSelectors" Error;
    VS_DESTINATION_PORT_SELECTOR_REQUIRED = "IST0112" "VirtualServiceDestinationPortSelectorRequired" Error;
    MTLS_POLICY_CONFLICT = "IST0113" "MTLSPolicyConflict" Error;
    PORT_NAME_NOT_UNDER_CONVENTION = "IST0118" "PortNameIsNotUnderNamingConvention" Info;
    NAMESPACE_MULTIPLE_INJECTION_LABELS = "IST0123" "NamespaceMultipleInjectionLabels" Warning;
    INVALID_ANNOTATION = "IST0125" "InvalidAnnotation" Warning;
    NO_MATCHING_WORKLOADS_FOUND = "IST0127" "NoMatchingWorkloadsFound" Warning;
    NO_SERVER_CERT_VERIFICATION_DESTINATION = "IST0128" "NoServerCertificateVerificationDestinationLevel" Warning;
    NO_SERVER_CERT_VERIFICATION_PORT = "IST0129" "NoServerCertificateVerificationPortLevel" Warning;
    VS_UNREACHABLE_RULE = "IST0130" "VirtualServiceUnreachableRule" Warning;
    VS_INEFFECTIVE_MATCH = "IST0131" "VirtualServiceIneffectiveMatch" Info;
    VS_HOST_NOT_FOUND_IN_GATEWAY = "IST0132" "VirtualServiceHostNotFoundInGateway" Warning;
    SCHEMA_WARNING = "IST0133" "SchemaWarning" Warning;
    SERVICE_ENTRY_ADDRESSES_REQUIRED = "IST0134" "ServiceEntryAddressesRequired" Warning;
    DEPRECATED_ANNOTATION = "IST0135" "DeprecatedAnnotation" Info;
    ALPHA_ANNOTATION = "IST0136" "AlphaAnnotation" Info;
    GATEWAY_DUPLICATE_CERTIFICATE = "IST0138" "GatewayDuplicateCertificate" Warning;
    INGRESS_ROUTE_RULES_NOT_AFFECTED = "IST0140" "IngressRouteRulesNotAffected" Warning;
    INVALID_APPLICATION_UID = "IST0144" "InvalidApplicationUID" Warning;
    CONFLICTING_GATEWAYS = "IST0145" "ConflictingGateways" Error;
    JWT_CLAIM_ROUTING_WITHOUT_REQUEST_AUTHN = "IST0149" "JwtClaimBasedRoutingWithoutRequestAuthN" Error;
    EXTERNAL_NAME_INVALID_PORT_NAME = "IST0150" "ExternalNameServiceTypeInvalidPortName" Warning;
    INVALID_TELEMETRY_PROVIDER = "IST0157" "InvalidTelemetryProvider" Warning;
    CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS = "IST0159" "ConflictingTelemetryWorkloadSelectors" Error;
    MULTIPLE_TELEMETRIES_WITHOUT_SELECTORS = "IST0160" "MultipleTelemetriesWithoutWorkloadSelectors" Error;
    INVALID_GATEWAY_CREDENTIAL = "IST0161" "InvalidGatewayCredential" Error;
    GATEWAY_PORT_NOT_DEFINED_ON_SERVICE = "IST0162" "GatewayPortNotDefinedOnService" Warning;
}
