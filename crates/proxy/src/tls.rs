//! TLS for terminating servers: rustls server configs whose certificate comes from a
//! secret handle (so a rotated certificate is used by the next handshake), client
//! certificate verification for MUTUAL, versions, cipher suites and ALPN.

use std::sync::Arc;

use meshwork_resources::listener::{CipherSuite, TlsContext, TlsMode, TlsVersion};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};

use crate::client_cert::AcceptV1;
use crate::secrets::{SecretCertResolver, SecretHandle, SecretMaterial};

/// TLS settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify anything.
    #[error("client CA: {0}")]
    ClientCa(String),
}

fn rustls_suite(c: CipherSuite) -> rustls::CipherSuite {
    use rustls::CipherSuite as R;
    match c {
        CipherSuite::EcdheEcdsaAes128GcmSha256 => R::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheRsaAes128GcmSha256 => R::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheEcdsaAes256GcmSha384 => R::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheRsaAes256GcmSha384 => R::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheEcdsaChacha20Poly1305 => R::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite::EcdheRsaChacha20Poly1305 => R::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    }
}

/// The crypto provider restricted to the given TLS 1.2 cipher suites; TLS 1.3 suites are
/// always kept, as in Envoy.
pub fn provider(cipher_suites: &[CipherSuite]) -> CryptoProvider {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    if !cipher_suites.is_empty() {
        let wanted: Vec<rustls::CipherSuite> =
            cipher_suites.iter().copied().map(rustls_suite).collect();
        p.cipher_suites.retain(|s: &SupportedCipherSuite| match s {
            SupportedCipherSuite::Tls13(_) => true,
            SupportedCipherSuite::Tls12(_) => wanted.contains(&s.suite()),
        });
    }
    p
}

/// The rustls versions between `min` and `max` (TLS 1.2 and 1.3 are what rustls has).
pub fn versions(
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut out = Vec::new();
    if min.is_none_or(|v| v <= TlsVersion::Tls12) && max.is_none_or(|v| v >= TlsVersion::Tls12) {
        out.push(&rustls::version::TLS12);
    }
    if max.is_none_or(|v| v >= TlsVersion::Tls13) {
        out.push(&rustls::version::TLS13);
    }
    out
}

/// A terminating server's provider: [`provider`], with its suites in the order the server
/// prefers, as Envoy's BoringSSL server chooses. The `cipherSuites` configured come in
/// their order; otherwise, and for TLS 1.3, AES-128-GCM first, then ChaCha20-Poly1305,
/// then AES-256-GCM. (AES-128-GCM's TLS 1.3 suite hashes its key schedule with SHA-256,
/// AES-256-GCM's with SHA-384, which costs more per handshake: see BENCHMARKS.md.)
pub fn server_provider(cipher_suites: &[CipherSuite]) -> CryptoProvider {
    let mut p = provider(cipher_suites);
    let wanted: Vec<rustls::CipherSuite> =
        cipher_suites.iter().copied().map(rustls_suite).collect();
    let rank = |s: &SupportedCipherSuite| {
        use rustls::CipherSuite as R;
        let bulk = match s.suite() {
            R::TLS13_AES_128_GCM_SHA256
            | R::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | R::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
            R::TLS13_CHACHA20_POLY1305_SHA256
            | R::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | R::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 1,
            _ => 2,
        };
        let configured = wanted
            .iter()
            .position(|w| *w == s.suite())
            .unwrap_or(usize::MAX);
        (configured, bulk)
    };
    p.cipher_suites.sort_by_key(rank);
    p
}

/// Builds the rustls config of a terminating server. The certificate is read from `cert`
/// at every handshake; `client_ca` verifies client certificates (MUTUAL).
pub fn server_config(
    ctx: &TlsContext,
    cert: Arc<SecretHandle>,
    client_ca: Option<&SecretMaterial>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(server_provider(&ctx.cipher_suites));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(ctx.min_version, ctx.max_version))?;
    let builder = match (&ctx.mode, client_ca) {
        (TlsMode::Simple, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(TlsError::ClientCa(
                "MUTUAL TLS needs a CA to verify client certificates".into(),
            ));
        }
        (mode, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in &ca.trusted_ca {
                roots
                    .add(c.clone())
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(TlsError::ClientCa(format!(
                    "secret {} holds no CA certificate",
                    ca.resource.name
                )));
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if *mode == TlsMode::OptionalMutual {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(AcceptV1::new(
                verifier,
                ca.trusted_ca.clone(),
                provider,
            )))
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SecretCertResolver(cert)));
    config.ignore_client_order = true;
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
    fn a_server_prefers_configured_suites_then_aes_128_gcm() {
        let names = |p: CryptoProvider| -> Vec<String> {
            p.cipher_suites
                .iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect()
        };
        let default = names(server_provider(&[]));
        assert_eq!(default[0], "TLS13_AES_128_GCM_SHA256", "{default:?}");
        let tls13: Vec<&String> = default.iter().filter(|n| n.starts_with("TLS13")).collect();
        assert_eq!(
            tls13,
            [
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS13_AES_256_GCM_SHA384"
            ]
        );
        let configured = names(server_provider(&[
            CipherSuite::EcdheRsaAes256GcmSha384,
            CipherSuite::EcdheRsaAes128GcmSha256,
        ]));
        let tls12: Vec<&String> = configured
            .iter()
            .filter(|n| !n.starts_with("TLS13"))
            .collect();
        assert_eq!(
            tls12,
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
            ],
            "the configured order"
        );
    }

    #[test]
    fn versions_follow_the_bounds() {
        let names = |v: Vec<&'static rustls::SupportedProtocolVersion>| {
            v.iter().map(|v| v.version).collect::<Vec<_>>()
        };
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        assert_eq!(names(versions(None, None)), [TLSv1_2, TLSv1_3]);
        assert_eq!(names(versions(Some(TlsVersion::Tls13), None)), [TLSv1_3]);
        assert_eq!(names(versions(None, Some(TlsVersion::Tls12))), [TLSv1_2]);
    }

    #[test]
    fn cipher_suites_restrict_tls12_only() {
        let p = provider(&[CipherSuite::EcdheRsaAes128GcmSha256]);
        let tls12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            tls12,
            [rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
        );
        assert!(
            p.cipher_suites
                .iter()
                .any(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
        );
    }
}
