//! TLS for terminating servers: rustls server configs from PEM (inline from a Secret, or
//! files), client certificate verification for MUTUAL, versions, cipher suites and ALPN.

use std::sync::Arc;

use meshwork_model::config::{CertificateSource, PemSource, TlsContext, TlsMode};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TLS material that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PEM data holds no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify anything.
    #[error("client CA: {0}")]
    ClientCa(String),
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_string(),
        source,
    })
}

fn pem_source(p: &PemSource) -> Result<Vec<u8>, TlsError> {
    match p {
        PemSource::Inline(s) => Ok(s.as_bytes().to_vec()),
        PemSource::File(path) => read(path),
    }
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate in PEM data".into()));
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| TlsError::Pem(format!("bad private key PEM: {e}")))
}

/// The crypto provider restricted to the named TLS 1.2 cipher suites (OpenSSL names, as
/// Istio takes them); TLS 1.3 suites are always kept, as in Envoy.
fn provider(cipher_suites: &[String]) -> CryptoProvider {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    if !cipher_suites.is_empty() {
        p.cipher_suites.retain(|s: &SupportedCipherSuite| match s {
            SupportedCipherSuite::Tls13(_) => true,
            SupportedCipherSuite::Tls12(_) => {
                let name = format!("{:?}", s.suite());
                cipher_suites.iter().any(|c| openssl_name_matches(c, &name))
            }
        });
    }
    p
}

/// `ECDHE-RSA-AES128-GCM-SHA256` against rustls' `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`.
fn openssl_name_matches(openssl: &str, iana: &str) -> bool {
    let normalize = |s: &str| {
        s.to_ascii_uppercase()
            .replace("TLS_", "")
            .replace("_WITH_", "_")
            .replace("AES_128", "AES128")
            .replace("AES_256", "AES256")
            .replace("CHACHA20_POLY1305_SHA256", "CHACHA20_POLY1305")
            .replace(['-', '_'], "")
    };
    normalize(openssl) == normalize(iana)
}

/// Builds the rustls config of a terminating server.
pub fn server_config(ctx: &TlsContext) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_pem, key_pem) = match &ctx.certificate {
        CertificateSource::Secret {
            cert_pem, key_pem, ..
        } => (cert_pem.as_bytes().to_vec(), key_pem.0.as_bytes().to_vec()),
        CertificateSource::Files {
            cert_path,
            key_path,
        } => (read(cert_path)?, read(key_path)?),
    };
    let provider = Arc::new(provider(&ctx.cipher_suites));
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    let min13 = ctx.min_version.as_deref() == Some("TLSV1_3");
    let max12 = matches!(
        ctx.max_version.as_deref(),
        Some("TLSV1_2" | "TLSV1_1" | "TLSV1_0")
    );
    if !min13 {
        versions.push(&rustls::version::TLS12);
    }
    if !max12 {
        versions.push(&rustls::version::TLS13);
    }
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let builder = match (&ctx.mode, &ctx.client_ca) {
        (TlsMode::Simple, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in certs(&pem_source(ca)?)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if *mode == TlsMode::OptionalMutual {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?,
            )
        }
    };
    let mut config = builder.with_single_cert(certs(&cert_pem)?, key(&key_pem)?)?;
    config.alpn_protocols = ctx.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // Stateless session tickets (TLS 1.2 and 1.3) so resumption works across connections
    // and tickets, plus a session cache for clients that resume by id.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_cipher_names_map_to_rustls() {
        assert!(openssl_name_matches(
            "ECDHE-RSA-AES128-GCM-SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        ));
        assert!(openssl_name_matches(
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        ));
        assert!(!openssl_name_matches(
            "ECDHE-RSA-AES256-GCM-SHA384",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        ));
    }
}
