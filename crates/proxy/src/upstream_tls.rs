//! TLS origination towards upstream endpoints (DestinationRule `tls` SIMPLE and MUTUAL):
//! rustls client configs that verify the server against the trusted CAs (or the system's
//! trust store) and the expected names (`subjectAltNames`, else the SNI), optionally skip
//! verification (`insecureSkipVerify`), and present the client certificate of a secret,
//! read at every handshake so that a rotated certificate is used without a rebuild.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use meshwork_resources::cluster::{UpstreamTls, UpstreamTlsMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
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
    /// The rustls config.
    pub config: Arc<ClientConfig>,
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
    /// None when nothing is trusted: every certificate is refused.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// Names of which the certificate must carry one; empty means the SNI.
    names: Vec<ServerName<'static>>,
    skip: bool,
}

impl ServerCertVerifier for NameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.skip {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(webpki) = &self.webpki else {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        };
        if self.names.is_empty() {
            return webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        let mut last = None;
        for name in &self.names {
            match webpki.verify_server_cert(end_entity, intermediates, name, ocsp_response, now) {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(rustls::Error::General("no subjectAltNames".into())))
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
    let webpki = if store.is_empty() {
        None
    } else {
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?,
        )
    };
    let verifier = NameVerifier {
        webpki,
        provider: provider.clone(),
        names: tls
            .subject_alt_names
            .iter()
            .filter_map(|n| ServerName::try_from(n.clone()).ok())
            .collect(),
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
    Ok(TlsOrigination {
        config: Arc::new(config),
        sni: tls.sni.clone(),
        identity: identity.finish(),
    })
}
