//! The proxy's workload certificate. The proxy makes its own key and a CSR for its SPIFFE
//! identity, `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`. It sends the
//! CSR with its token to the control plane's certificate service, over TLS verified
//! against the mesh root, and renews the certificate at half its lifetime. The certificate
//! and the roots become the proxy's own secrets `default` and `ROOTCA` (Istio's SDS
//! names), which its mTLS listeners and clusters name. The key never leaves the proxy.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use meshwork_resources::secret::{Pem, Secret};
use meshwork_xds::proto::CertificateRequest;
use meshwork_xds::proto::certificate_service_client::CertificateServiceClient;

pub use meshwork_resources::secret::{
    MESH_ROOTS as ROOT_SECRET, WORKLOAD_CERTIFICATE as WORKLOAD_SECRET,
};

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// `host:port` of the certificate service (istiod's 15012).
    pub ca_address: String,
    /// The name the control plane's certificate carries.
    pub ca_name: String,
    /// The mesh root that verifies the control plane.
    pub ca_root: PathBuf,
    /// The token that proves the proxy's identity.
    pub token_file: PathBuf,
    /// The lifetime to ask for; none for the control plane's default.
    pub ttl: Option<Duration>,
    /// The mesh's trust domain (`cluster.local`), for the identity a token names before
    /// the control plane has said anything.
    pub trust_domain: String,
}

/// A workload certificate, its key and the roots.
#[derive(Debug, Clone)]
pub struct WorkloadCert {
    /// The SPIFFE id it carries.
    pub spiffe: String,
    /// PEM: the certificate, then any intermediates.
    pub chain: String,
    /// PEM: its private key.
    pub key: String,
    /// PEM: the roots to trust.
    pub roots: String,
    /// When it was received.
    pub issued: SystemTime,
    /// When it expires.
    pub expires: SystemTime,
}

impl WorkloadCert {
    /// The two secrets.
    pub fn secrets(&self) -> [Secret; 2] {
        [
            Secret {
                name: WORKLOAD_SECRET.into(),
                certificate_chain: Some(Pem::Inline(self.chain.clone())),
                private_key: Some(Pem::Inline(self.key.clone())),
                trusted_ca: None,
            },
            Secret {
                name: ROOT_SECRET.into(),
                certificate_chain: None,
                private_key: None,
                trusted_ca: Some(Pem::Inline(self.roots.clone())),
            },
        ]
    }

    /// When to renew it: at half its lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .expires
            .duration_since(self.issued)
            .unwrap_or(Duration::ZERO);
        self.issued + life / 2
    }
}

/// Why no certificate was had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The token file cannot be read.
    #[error("no token: cannot read {0}: {1}")]
    Token(PathBuf, std::io::Error),
    /// The mesh root cannot be read.
    #[error("cannot read the mesh root {0}: {1}")]
    Root(PathBuf, std::io::Error),
    /// The certificate service cannot be reached.
    #[error("cannot reach the certificate service at {0}: {1}")]
    Connect(String, tonic::transport::Error),
    /// The certificate service refused.
    #[error("{0}")]
    Refused(String),
    /// The CSR or the answer is broken.
    #[error("{0}")]
    Invalid(String),
}

/// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The namespace and service account a token names, read without verifying it (the
/// control plane verifies it): a meshwork token is `mw1.PAYLOAD.MAC`, PAYLOAD base64url
/// JSON with `ns` and `sa`.
pub fn token_identity(token: &str) -> Option<(String, String)> {
    use base64::Engine;
    let mut parts = token.trim().split('.');
    let (Some("mw1"), Some(payload)) = (parts.next(), parts.next()) else {
        return None;
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Some((field("ns")?, field("sa")?))
}

/// The SPIFFE id the proxy's token names, in `opts`'s trust domain.
pub fn token_spiffe(opts: &IdentityOptions) -> Result<String, IdentityError> {
    let token = std::fs::read_to_string(&opts.token_file)
        .map_err(|e| IdentityError::Token(opts.token_file.clone(), e))?;
    let (ns, sa) = token_identity(&token).ok_or_else(|| {
        IdentityError::Invalid(format!(
            "{} is not a meshwork token (mw1.PAYLOAD.MAC)",
            opts.token_file.display()
        ))
    })?;
    Ok(spiffe_id(&opts.trust_domain, &ns, &sa))
}

/// A new key and a CSR for `spiffe`, as PEM.
fn csr(spiffe: &str) -> Result<(String, String), IdentityError> {
    let bad = |e: rcgen::Error| IdentityError::Invalid(format!("cannot make the CSR: {e}"));
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
    params.subject_alt_names = vec![rcgen::SanType::URI(
        spiffe.to_string().try_into().map_err(bad)?,
    )];
    let request = params.serialize_request(&key).map_err(bad)?;
    Ok((request.pem().map_err(bad)?, key.serialize_pem()))
}

/// The expiry of the first certificate of a PEM chain.
fn expiry(chain: &str) -> Option<SystemTime> {
    let first = pem::parse_many(chain).ok()?.into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(first.contents()).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Asks the certificate service for a certificate for `spiffe`.
pub async fn fetch(opts: &IdentityOptions, spiffe: &str) -> Result<WorkloadCert, IdentityError> {
    let token = std::fs::read_to_string(&opts.token_file)
        .map_err(|e| IdentityError::Token(opts.token_file.clone(), e))?;
    let root = std::fs::read_to_string(&opts.ca_root)
        .map_err(|e| IdentityError::Root(opts.ca_root.clone(), e))?;
    let connect = |e| IdentityError::Connect(opts.ca_address.clone(), e);
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(root))
        .domain_name(opts.ca_name.clone());
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", opts.ca_address))
        .map_err(connect)?
        .tls_config(tls)
        .map_err(connect)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(connect)?;
    let (csr, key) = csr(spiffe)?;
    let mut request = tonic::Request::new(CertificateRequest {
        csr,
        validity_duration: opts.ttl.map_or(0, |d| d.as_secs() as i64),
    });
    let bearer = format!("Bearer {}", token.trim());
    request.metadata_mut().insert(
        "authorization",
        bearer
            .parse()
            .map_err(|_| IdentityError::Invalid("the token is not valid in a header".into()))?,
    );
    let response = CertificateServiceClient::new(channel)
        .create_certificate(request)
        .await
        .map_err(|s| IdentityError::Refused(s.message().to_string()))?
        .into_inner();
    let [chain, roots] = <[String; 2]>::try_from(response.cert_chain)
        .map_err(|_| IdentityError::Invalid("the answer is not a chain and roots".into()))?;
    let expires = expiry(&chain)
        .ok_or_else(|| IdentityError::Invalid("the certificate cannot be read".into()))?;
    Ok(WorkloadCert {
        spiffe: spiffe.to_string(),
        chain,
        key,
        roots,
        issued: SystemTime::now(),
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csr_asks_for_the_spiffe_id_alone() {
        let id = spiffe_id("cluster.local", "default", "reviews");
        let (pem, key) = csr(&id).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let der = pem::parse(&pem).unwrap();
        let (_, req) =
            <x509_parser::certification_request::X509CertificationRequest as x509_parser::prelude::FromDer<_>>::from_der(der.contents())
                .unwrap();
        let sans: Vec<String> = req
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|e| match e {
                x509_parser::extensions::ParsedExtension::SubjectAlternativeName(s) => Some(
                    s.general_names
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(sans, [format!("URI({id})")]);
    }

    #[test]
    fn a_token_names_its_identity_and_anything_else_names_none() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "mw1.{}.c2ln",
            b64(r#"{"ns":"default","sa":"reviews","exp":1}"#)
        );
        assert_eq!(
            token_identity(&format!("{token}\n")),
            Some(("default".into(), "reviews".into()))
        );
        for bad in [
            String::new(),
            "mw1".into(),
            format!("mw2.{}.c2ln", b64(r#"{"ns":"a","sa":"b"}"#)),
            format!("mw1.{}.c2ln", b64(r#"{"ns":"a"}"#)),
            format!("mw1.{}.c2ln", b64(r#"{"ns":"","sa":"b"}"#)),
            "mw1.!!!.c2ln".into(),
        ] {
            assert_eq!(token_identity(&bad), None, "{bad}");
        }
    }

    #[test]
    fn renewal_is_at_half_the_lifetime() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let cert = WorkloadCert {
            spiffe: String::new(),
            chain: String::new(),
            key: String::new(),
            roots: String::new(),
            issued,
            expires: issued + Duration::from_secs(60),
        };
        assert_eq!(cert.renew_at(), issued + Duration::from_secs(30));
        let [workload, root] = cert.secrets();
        assert_eq!(workload.name, "default");
        assert_eq!(root.name, "ROOTCA");
        assert!(root.trusted_ca.is_some() && root.private_key.is_none());
    }
}
