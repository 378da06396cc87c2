//! Secret resources made ready for TLS: a certificate chain with its signing key, and
//! trusted CA certificates. Each secret lives in a [`SecretHandle`] whose content is
//! swapped when the secret changes (a rotated certificate), so handshakes that start after
//! the swap use the new certificate without any listener being rebuilt.

use std::sync::Arc;

use arc_swap::ArcSwap;
use meshwork_resources::Secret;
use meshwork_resources::secret::Pem;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
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
    /// The key does not fit the provider or the certificate.
    #[error("private key: {0}")]
    Key(rustls::Error),
}

/// A secret, parsed.
#[derive(Debug)]
pub struct SecretMaterial {
    /// The resource it was built from.
    pub resource: Secret,
    /// The certificate chain with its key, when the secret has both.
    pub certified: Option<Arc<CertifiedKey>>,
    /// Trusted CA certificates, when the secret has them.
    pub trusted_ca: Vec<CertificateDer<'static>>,
    /// The bytes read, to tell a rotation from no change.
    fingerprint: Vec<u8>,
}

fn read(p: &Pem) -> Result<Vec<u8>, SecretError> {
    match p {
        Pem::Inline(s) => Ok(s.as_bytes().to_vec()),
        Pem::File(path) => std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.clone(),
            source,
        }),
    }
}

/// The certificates in PEM data; none is an error.
pub fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, SecretError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| SecretError::Pem(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(SecretError::Pem("no certificate in PEM data".into()));
    }
    Ok(certs)
}

impl SecretMaterial {
    /// Reads (files) and parses the secret.
    pub fn load(resource: &Secret) -> Result<SecretMaterial, SecretError> {
        let chain = resource.certificate_chain.as_ref().map(read).transpose()?;
        let key = resource.private_key.as_ref().map(read).transpose()?;
        let ca = resource.trusted_ca.as_ref().map(read).transpose()?;
        let mut fingerprint = Vec::new();
        for part in [&chain, &key, &ca].into_iter().flatten() {
            fingerprint.extend_from_slice(part);
            fingerprint.push(0);
        }
        let certified = match (&chain, &key) {
            (Some(chain), Some(key)) => {
                let chain = certs(chain)?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| SecretError::Pem(format!("bad private key PEM: {e}")))?;
                let provider = rustls::crypto::aws_lc_rs::default_provider();
                let certified =
                    CertifiedKey::from_der(chain, key, &provider).map_err(SecretError::Key)?;
                Some(Arc::new(certified))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(SecretError::Pem(
                    "a certificate chain needs its private key, and a key its chain".into(),
                ));
            }
            (None, None) => None,
        };
        let trusted_ca = ca.as_deref().map(certs).transpose()?.unwrap_or_default();
        Ok(SecretMaterial {
            resource: resource.clone(),
            certified,
            trusted_ca,
            fingerprint,
        })
    }

    /// Whether `other` holds the same resource and the same bytes.
    pub fn same_as(&self, other: &SecretMaterial) -> bool {
        self.resource == other.resource && self.fingerprint == other.fingerprint
    }
}

/// A secret whose material can be swapped while handshakes read it.
#[derive(Debug)]
pub struct SecretHandle {
    /// The material in force.
    pub current: ArcSwap<SecretMaterial>,
}

impl SecretHandle {
    /// A handle holding `material`.
    pub fn new(material: SecretMaterial) -> Arc<SecretHandle> {
        Arc::new(SecretHandle {
            current: ArcSwap::from_pointee(material),
        })
    }
}

/// Resolves a server's certificate from its secret at each handshake.
#[derive(Debug)]
pub struct SecretCertResolver(pub Arc<SecretHandle>);

impl rustls::server::ResolvesServerCert for SecretCertResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current.load().certified.clone()
    }
}
