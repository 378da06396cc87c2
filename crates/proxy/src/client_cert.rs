//! Client certificate verification for MUTUAL servers. webpki, which rustls uses, accepts
//! only X.509 v3 certificates; Envoy (BoringSSL) also accepts v1 ones, which is what
//! `openssl x509 -req` writes without an extension file, as most MUTUAL-gateway tutorials
//! do. [`AcceptV1`] passes every v3 certificate to webpki unchanged and verifies a v1 leaf
//! itself: signed directly by a trusted CA, within its validity period, and the handshake
//! signature made with its key.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};

/// A client verifier that also accepts X.509 v1 leaf certificates signed by a trusted CA.
#[derive(Debug)]
pub struct AcceptV1 {
    inner: Arc<dyn ClientCertVerifier>,
    roots: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl AcceptV1 {
    /// Wraps the webpki verifier; `roots` are the same trusted CAs.
    pub fn new(
        inner: Arc<dyn ClientCertVerifier>,
        roots: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> AcceptV1 {
        AcceptV1 {
            inner,
            roots,
            provider,
        }
    }
}

fn parse<'a>(der: &'a [u8]) -> Option<X509Certificate<'a>> {
    X509Certificate::from_der(der).ok().map(|(_, c)| c)
}

/// Whether `der` is a v1 certificate.
pub fn is_v1(der: &[u8]) -> bool {
    parse(der).is_some_and(|c| c.version() == X509Version::V1)
}

/// Verifies a v1 leaf against `roots`: a root whose subject is the leaf's issuer signed it,
/// and `now` is within both certificates' validity.
pub fn verify_v1_leaf(
    leaf: &[u8],
    roots: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), CertificateError> {
    let leaf = parse(leaf).ok_or(CertificateError::BadEncoding)?;
    let at = x509_parser::time::ASN1Time::from_timestamp(now.as_secs() as i64)
        .map_err(|_| CertificateError::BadEncoding)?;
    if !leaf.validity().is_valid_at(at) {
        return Err(if leaf.validity().not_before > at {
            CertificateError::NotValidYet
        } else {
            CertificateError::Expired
        });
    }
    for root in roots {
        let Some(root) = parse(root) else { continue };
        if root.subject().as_raw() != leaf.issuer().as_raw() || !root.validity().is_valid_at(at) {
            continue;
        }
        if leaf.verify_signature(Some(root.public_key())).is_ok() {
            return Ok(());
        }
    }
    Err(CertificateError::UnknownIssuer)
}

impl AcceptV1 {
    fn verify_signature_v1(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        tls13: bool,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let bad = || rustls::Error::InvalidCertificate(CertificateError::BadSignature);
        // TLS 1.3 allows fewer schemes (no PKCS#1 v1.5, ECDSA bound to its curve).
        if tls13 && !tls13_scheme(dss.scheme) {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        let leaf = parse(cert).ok_or_else(bad)?;
        let key = &leaf.public_key().subject_public_key.data;
        let algs = self
            .provider
            .signature_verification_algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algs)| *algs)
            .ok_or(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ))?;
        // The scheme names the algorithms; the one that fits the key verifies.
        algs.iter()
            .any(|alg| alg.verify_signature(key, message, dss.signature()).is_ok())
            .then(HandshakeSignatureValid::assertion)
            .ok_or_else(bad)
    }
}

/// The schemes TLS 1.3 allows for a handshake signature (RFC 8446, 4.2.3): no PKCS#1
/// v1.5, no SHA-1.
fn tls13_scheme(scheme: SignatureScheme) -> bool {
    use SignatureScheme as S;
    matches!(
        scheme,
        S::ECDSA_NISTP256_SHA256
            | S::ECDSA_NISTP384_SHA384
            | S::ECDSA_NISTP521_SHA512
            | S::RSA_PSS_SHA256
            | S::RSA_PSS_SHA384
            | S::RSA_PSS_SHA512
            | S::ED25519
            | S::ED448
    )
}

impl ClientCertVerifier for AcceptV1 {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if is_v1(end_entity) {
            return verify_v1_leaf(end_entity, &self.roots, now)
                .map(|()| ClientCertVerified::assertion())
                .map_err(rustls::Error::InvalidCertificate);
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if is_v1(cert) {
            return self.verify_signature_v1(message, cert, dss, false);
        }
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if is_v1(cert) {
            return self.verify_signature_v1(message, cert, dss, true);
        }
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
