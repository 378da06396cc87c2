//! Listeners: a bound address and the Gateway servers it carries, with their TLS settings.
//! TLS material is referenced by secret name, never inline.

use serde::{Deserialize, Serialize};

use crate::route::WeightedCluster;

/// An address to bind and the servers it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// `0.0.0.0_8080`.
    pub name: String,
    /// The address to bind (`0.0.0.0`).
    pub address: String,
    /// The port to bind (the Service's targetPort for the Gateway port, or the port itself).
    pub bind_port: u16,
    /// The Gateway port number (`80`), which route matches on `port` see.
    pub gateway_port: u32,
    /// Servers on this listener, chosen by SNI when the port terminates TLS.
    pub servers: Vec<ServerChain>,
    /// A sidecar's egress listener: it carries its own app's calls out, so the
    /// workload's AuthorizationPolicies (which guard what comes in) do not apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outbound: bool,
    /// False for a listener that binds no socket (Istio's `bindToPort: false`): it takes
    /// the connections a capture listener hands it by their original destination,
    /// `address:bind_port` (port 0: any port not otherwise listened for).
    #[serde(default = "bound", skip_serializing_if = "is_bound")]
    pub bind_to_port: bool,
    /// A capture listener (Istio's `virtualOutbound` on 15001, `virtualInbound` on
    /// 15006): it takes the connections iptables redirected to it and hands each to the
    /// listener of its original destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<Capture>,
}

/// The ALPN a sidecar offers over mTLS for bytes it did not take for HTTP, as Istio's
/// sidecars do: an inbound port of undeclared protocol forwards them as they are.
pub const OPAQUE_ALPN: [&str; 2] = ["istio-peer-exchange", "istio"];

fn bound() -> bool {
    true
}

fn is_bound(b: &bool) -> bool {
    *b
}

/// Which way a capture listener's connections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capture {
    /// The workload's own calls out: to the outbound listeners (`outbound: true`).
    Outbound,
    /// Calls to the workload: to its inbound listeners.
    Inbound,
}

/// One Gateway server on a listener: its hosts, TLS, and the route table it uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerChain {
    /// `ns/gateway#index` (and the port name), for logs.
    pub source: String,
    /// The server's hosts without namespace (`*.example.com`), matched against SNI.
    pub hosts: Vec<String>,
    /// What the server speaks.
    pub protocol: ServerProtocol,
    /// TLS settings when the server terminates TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsContext>,
    /// Answer every request with a 301 to https (`tls.httpsRedirect`).
    #[serde(default)]
    pub https_redirect: bool,
    /// The route table of this server (HTTP and HTTPS servers).
    #[serde(default)]
    pub route_table: String,
    /// Routes of TCP, TLS and TLS-passthrough servers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<L4Route>,
    /// The port carries PostgreSQL: a plaintext SSLRequest is answered before the
    /// ClientHello is read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub postgres: bool,
}

/// A TCP or TLS route: where connections go, by SNI (passthrough) or by destination subnet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L4Route {
    /// `ns/virtualservice#tls[0]`.
    pub name: String,
    /// SNI names the route accepts (passthrough); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    /// Destination addresses the route accepts; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// Weighted destinations.
    pub destinations: Vec<WeightedCluster>,
}

/// What a server speaks after any TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerProtocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge or upgrade).
    Http,
    /// HTTP over TLS (ALPN h2 and http/1.1).
    Https,
    /// TLS terminated here, then raw TCP to the upstream.
    Tls,
    /// TLS passed through untouched, routed by the SNI of the ClientHello.
    TlsPassthrough,
    /// Raw TCP.
    Tcp,
}

/// TLS termination settings of a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsContext {
    /// SIMPLE, MUTUAL or OPTIONAL_MUTUAL.
    pub mode: TlsMode,
    /// The secret holding the server's certificate chain and key.
    pub certificate: String,
    /// The secret holding the CA that signs client certificates (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<String>,
    /// Lowest version accepted; unset means TLS 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<TlsVersion>,
    /// Highest version accepted; unset means TLS 1.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<TlsVersion>,
    /// Allowed TLS 1.2 cipher suites; empty means the defaults (TLS 1.3 suites are always on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<CipherSuite>,
    /// ALPN protocols offered: `h2`, `http/1.1`.
    #[serde(default)]
    pub alpn: Vec<String>,
}

/// TLS mode of a terminating server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Server certificate only.
    Simple,
    /// Client certificates required and verified.
    Mutual,
    /// Client certificates verified when presented.
    OptionalMutual,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    Tls10,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    Tls11,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    Tls13,
}

/// A TLS 1.2 cipher suite the data plane can offer, by its OpenSSL name (as Istio takes
/// them in `cipherSuites`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CipherSuite {
    /// `ECDHE-ECDSA-AES128-GCM-SHA256`.
    #[serde(rename = "ECDHE-ECDSA-AES128-GCM-SHA256")]
    EcdheEcdsaAes128GcmSha256,
    /// `ECDHE-RSA-AES128-GCM-SHA256`.
    #[serde(rename = "ECDHE-RSA-AES128-GCM-SHA256")]
    EcdheRsaAes128GcmSha256,
    /// `ECDHE-ECDSA-AES256-GCM-SHA384`.
    #[serde(rename = "ECDHE-ECDSA-AES256-GCM-SHA384")]
    EcdheEcdsaAes256GcmSha384,
    /// `ECDHE-RSA-AES256-GCM-SHA384`.
    #[serde(rename = "ECDHE-RSA-AES256-GCM-SHA384")]
    EcdheRsaAes256GcmSha384,
    /// `ECDHE-ECDSA-CHACHA20-POLY1305`.
    #[serde(rename = "ECDHE-ECDSA-CHACHA20-POLY1305")]
    EcdheEcdsaChacha20Poly1305,
    /// `ECDHE-RSA-CHACHA20-POLY1305`.
    #[serde(rename = "ECDHE-RSA-CHACHA20-POLY1305")]
    EcdheRsaChacha20Poly1305,
}

impl CipherSuite {
    /// Every suite, in preference order.
    pub const ALL: [CipherSuite; 6] = [
        CipherSuite::EcdheEcdsaAes128GcmSha256,
        CipherSuite::EcdheRsaAes128GcmSha256,
        CipherSuite::EcdheEcdsaAes256GcmSha384,
        CipherSuite::EcdheRsaAes256GcmSha384,
        CipherSuite::EcdheEcdsaChacha20Poly1305,
        CipherSuite::EcdheRsaChacha20Poly1305,
    ];

    /// The OpenSSL name.
    pub fn openssl_name(self) -> &'static str {
        match self {
            CipherSuite::EcdheEcdsaAes128GcmSha256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
            CipherSuite::EcdheRsaAes128GcmSha256 => "ECDHE-RSA-AES128-GCM-SHA256",
            CipherSuite::EcdheEcdsaAes256GcmSha384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
            CipherSuite::EcdheRsaAes256GcmSha384 => "ECDHE-RSA-AES256-GCM-SHA384",
            CipherSuite::EcdheEcdsaChacha20Poly1305 => "ECDHE-ECDSA-CHACHA20-POLY1305",
            CipherSuite::EcdheRsaChacha20Poly1305 => "ECDHE-RSA-CHACHA20-POLY1305",
        }
    }

    /// The suite with this OpenSSL name (case-insensitive), if the data plane has it.
    pub fn from_openssl_name(name: &str) -> Option<CipherSuite> {
        CipherSuite::ALL
            .into_iter()
            .find(|c| c.openssl_name().eq_ignore_ascii_case(name.trim()))
    }
}
