//! TLS origination towards upstream endpoints (DestinationRule `tls` SIMPLE and MUTUAL):
//! rustls client configs that verify the server against the trusted CAs (or the system's
//! trust store) and the expected names (`subjectAltNames`, else the SNI), optionally skip
//! verification (`insecureSkipVerify`), and present the client certificate of a secret,
//! read at every handshake so that a rotated certificate is used without a rebuild.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use meshwork_resources::cluster::{UpstreamTls, UpstreamTlsMode};
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::secrets::{SecretHandle, SecretMaterial, certs};

/// The system's trust store, used when a DestinationRule names no CA.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Upstream TLS that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    /// A secret the settings name is not available.
    #[error("secret {0} is not available")]
    MissingSecret(String),
    /// The secret has no certificate and key.
    #[error("secret {0} holds no certificate and key")]
    NoCertificate(String),
    /// rustls refused the settings.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// A cluster's TLS origination, ready to connect with.
#[derive(Debug)]
pub struct TlsOrigination {
    /// The rustls config, with the cluster's ALPN.
    pub config: Arc<ClientConfig>,
    /// The same, offering `h2` and `http/1.1` alone, for requests that speak the client's
    /// HTTP version (`useClientProtocol`).
    pub by_protocol: [Arc<ClientConfig>; 2],
    /// For mesh mTLS, the same offering Istio's ALPN for bytes that are not HTTP, for
    /// TCP routes.
    pub opaque: Option<Arc<ClientConfig>>,
    /// The SNI to send when the settings fix one.
    pub sni: Option<String>,
    /// What makes connections with these settings reusable for one another.
    pub identity: u64,
}

/// Resolves the client certificate from its secret at each handshake.
#[derive(Debug)]
struct SecretClientCert(Arc<SecretHandle>);

impl ResolvesClientCert for SecretClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current.load().certified.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.current.load().certified.is_some()
    }
}

/// Verifies the server: the chain against the roots, then the names.
#[derive(Debug)]
struct NameVerifier {
    /// The trusted CAs; none trusted means every certificate is refused.
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// `subjectAltNames`: the certificate must carry one of them exactly, as a DNS, URI
    /// (SPIFFE) or IP SAN. Empty means the SNI is checked instead.
    names: Vec<String>,
    skip: bool,
}

/// Whether the certificate carries one of `names` as a SAN (DNS names compared without
/// case; `*.x` SANs cover one label).
fn has_subject_alt_name(der: &[u8], names: &[String]) -> bool {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|g| match g {
        GeneralName::URI(uri) => names.iter().any(|n| n == uri),
        GeneralName::DNSName(dns) => names.iter().any(|n| {
            n.eq_ignore_ascii_case(dns)
                || dns.strip_prefix("*.").is_some_and(|suffix| {
                    n.split_once('.')
                        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix))
                })
        }),
        GeneralName::IPAddress(bytes) => {
            let ip = match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(std::net::IpAddr::from),
                _ => None,
            };
            ip.is_some_and(|ip| names.iter().any(|n| n.parse() == Ok(ip)))
        }
        _ => false,
    })
}

impl ServerCertVerifier for NameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.skip {
            return Ok(ServerCertVerified::assertion());
        }
        if self.roots.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        }
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.names.is_empty() {
            rustls::client::verify_server_name(&cert, server_name)?;
        } else if !has_subject_alt_name(end_entity, &self.names) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn system_roots() -> Vec<CertificateDer<'static>> {
    std::fs::read(SYSTEM_ROOTS)
        .ok()
        .and_then(|pem| certs(&pem).ok())
        .unwrap_or_default()
}

/// Builds the TLS origination of a cluster from its settings and the secrets they name
/// (`secrets` gives each secret's handle and version).
pub fn origination(
    tls: &UpstreamTls,
    secret: impl Fn(&str) -> Option<(Arc<SecretHandle>, usize)>,
) -> Result<TlsOrigination, UpstreamTlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut identity = std::collections::hash_map::DefaultHasher::new();
    tls.hash(&mut identity);
    let roots: Vec<CertificateDer<'static>> = match &tls.trusted_ca {
        Some(name) => {
            let (handle, version) =
                secret(name).ok_or_else(|| UpstreamTlsError::MissingSecret(name.clone()))?;
            version.hash(&mut identity);
            let material: Arc<SecretMaterial> = handle.current.load_full();
            material.trusted_ca.clone()
        }
        None => system_roots(),
    };
    let mut store = RootCertStore::empty();
    for c in roots {
        let _ = store.add(c);
    }
    let verifier = NameVerifier {
        roots: Arc::new(store),
        provider: provider.clone(),
        names: tls.subject_alt_names.clone(),
        skip: tls.insecure_skip_verify,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&crate::tls::versions(tls.min_version, None))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match (&tls.mode, &tls.client_certificate) {
        (UpstreamTlsMode::Mutual, Some(name)) => {
            let (handle, _) =
                secret(name).ok_or_else(|| UpstreamTlsError::MissingSecret(name.clone()))?;
            if handle.current.load().certified.is_none() {
                return Err(UpstreamTlsError::NoCertificate(name.clone()));
            }
            builder.with_client_cert_resolver(Arc::new(SecretClientCert(handle)))
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let with_alpn = |alpn: &[u8]| {
        let mut c = config.clone();
        c.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(c)
    };
    let mesh =
        tls.client_certificate.as_deref() == Some(meshwork_resources::secret::WORKLOAD_CERTIFICATE);
    let opaque = mesh.then(|| {
        let mut c = config.clone();
        c.alpn_protocols = meshwork_resources::listener::OPAQUE_ALPN
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        Arc::new(c)
    });
    Ok(TlsOrigination {
        opaque,
        by_protocol: [with_alpn(b"http/1.1"), with_alpn(b"h2")],
        config: Arc::new(config),
        sni: tls.sni.clone(),
        identity: identity.finish(),
    })
}
