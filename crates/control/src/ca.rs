//! The mesh CA: a root generated on first start and kept in the state directory, or
//! plugged-in certificates as Istio takes them (`cacerts`: `ca-cert.pem`, `ca-key.pem`,
//! `root-cert.pem`, `cert-chain.pem`). It signs workload certificates whose only identity
//! is the SPIFFE URI SAN `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`,
//! whatever the CSR asks for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A workload identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: String,
}

impl Identity {
    /// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
    pub fn spiffe(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

/// The CA could not be loaded, made, or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate, key or CSR is not what it must be.
    #[error("{what}: {reason}")]
    Invalid {
        /// Which.
        what: String,
        /// Why.
        reason: String,
    },
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // A key file is created readable by its owner alone, never wider for a moment.
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    Ok(())
}

fn invalid(what: impl Into<String>, e: impl std::fmt::Display) -> CaError {
    CaError::Invalid {
        what: what.into(),
        reason: e.to_string(),
    }
}

/// The mesh CA.
pub struct MeshCa {
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate and what it chains through, up to (not including) the root.
    chain: String,
    /// The roots proxies trust (more than one while a root rolls).
    roots: String,
    trust_domain: String,
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// The files of a CA directory, as Istio names them.
pub const ROOT_CERT: &str = "root-cert.pem";
const CA_CERT: &str = "ca-cert.pem";
const CA_KEY: &str = "ca-key.pem";
const CERT_CHAIN: &str = "cert-chain.pem";

impl MeshCa {
    /// Plugged-in certificates from `cacerts` when given; otherwise the root kept in
    /// `state_dir`, made there on first start. The mesh root is (re)written to
    /// `state_dir/root-cert.pem` for proxies to trust.
    pub fn open(
        state_dir: &Path,
        cacerts: Option<&Path>,
        trust_domain: &str,
    ) -> Result<MeshCa, CaError> {
        let ca = match cacerts {
            Some(dir) => Self::plugged(dir, trust_domain)?,
            None if state_dir.join(CA_KEY).exists() => Self::plugged(state_dir, trust_domain)?,
            None => Self::create(state_dir, trust_domain)?,
        };
        // Written only when it changes: the file is watched, and a rewrite is a change.
        let root_file = state_dir.join(ROOT_CERT);
        if std::fs::read_to_string(&root_file).ok().as_deref() != Some(ca.roots.as_str()) {
            write(&root_file, &ca.roots, false)?;
        }
        Ok(ca)
    }

    fn plugged(dir: &Path, trust_domain: &str) -> Result<MeshCa, CaError> {
        let cert = read(&dir.join(CA_CERT))?;
        let key_pem = read(&dir.join(CA_KEY))?;
        let roots = read(&dir.join(ROOT_CERT))?;
        let chain_file = dir.join(CERT_CHAIN);
        let chain = if chain_file.exists() {
            read(&chain_file)?
        } else {
            cert.clone()
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(CA_KEY, e))?;
        // The key must be the certificate's: a half-copied pair would sign certificates
        // nothing verifies.
        {
            use rustls_pki_types::pem::PemObject;
            let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes())
                .map_err(|e| invalid(CA_CERT, e))?;
            let (_, parsed) =
                x509_parser::parse_x509_certificate(&der).map_err(|e| invalid(CA_CERT, e))?;
            let public = rcgen::PublicKeyData::der_bytes(&key);
            if parsed.public_key().subject_public_key.data.as_ref() != public {
                return Err(CaError::Invalid {
                    what: CA_KEY.into(),
                    reason: format!("it is not the key of {CA_CERT}"),
                });
            }
        }
        let issuer = Issuer::from_ca_cert_pem(&cert, key).map_err(|e| invalid(CA_CERT, e))?;
        Ok(MeshCa {
            issuer,
            chain,
            roots,
            trust_domain: trust_domain.to_string(),
        })
    }

    fn create(dir: &Path, trust_domain: &str) -> Result<MeshCa, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| invalid("the mesh root", e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::OrganizationName, trust_domain.to_string());
        params
            .distinguished_name
            .push(DnType::CommonName, "meshwork mesh root".to_string());
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let key = KeyPair::generate().map_err(|e| invalid("the mesh root key", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| invalid("the mesh root", e))?;
        let pem = cert.pem();
        write(&dir.join(CA_KEY), &key.serialize_pem(), true)?;
        write(&dir.join(CA_CERT), &pem, false)?;
        write(&dir.join(CERT_CHAIN), &pem, false)?;
        write(&dir.join(ROOT_CERT), &pem, false)?;
        tracing::info!(dir = %dir.display(), "made a new mesh root");
        Ok(MeshCa {
            issuer: Issuer::new(params, key),
            chain: pem.clone(),
            roots: pem,
            trust_domain: trust_domain.to_string(),
        })
    }

    /// The roots a proxy trusts.
    pub fn roots(&self) -> &str {
        &self.roots
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Signs a CSR for `identity`, valid for `ttl`: the certificate, then the chain to
    /// the root.
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<String, CaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| invalid("the CSR", e))?;
        let uri = identity.spiffe(&self.trust_domain);
        // The CSR must ask for the caller's identity and nothing else, as istiod checks.
        let asked: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|n| match n {
                SanType::URI(u) => u.as_str().to_string(),
                SanType::DnsName(d) => format!("DNS:{}", d.as_str()),
                other => format!("{other:?}"),
            })
            .collect();
        if asked != [uri.clone()] {
            return Err(CaError::Invalid {
                what: "the CSR".into(),
                reason: format!("it asks for {asked:?}; the caller is {uri}"),
            });
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            uri.clone()
                .try_into()
                .map_err(|e| invalid("the SPIFFE id", e))?,
        )];
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = time::Duration::try_from(ttl)
            .ok()
            .and_then(|d| now.checked_add(d))
            .ok_or_else(|| invalid("the certificate lifetime", "out of range"))?;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&fastrand_serial()));
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| invalid("the workload certificate", e))?;
        let mut out = cert.pem();
        if !self.chain_is_root() {
            out.push_str(&self.chain);
        }
        Ok(out)
    }

    /// A certificate for the control plane itself: DNS names (and IP addresses) for its
    /// TLS port, with its new private key, as PEM.
    pub fn server_certificate(
        &self,
        names: &[String],
        ttl: Duration,
    ) -> Result<(String, String), CaError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| invalid("names", e))?;
        for n in names {
            let san = match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    n.clone()
                        .try_into()
                        .map_err(|e| invalid(format!("the name {n}"), e))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "meshwork control plane");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after =
            now + time::Duration::try_from(ttl).map_err(|e| invalid("the lifetime", e))?;
        let key = KeyPair::generate().map_err(|e| invalid("the key", e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| invalid("the control plane certificate", e))?;
        let mut chain = cert.pem();
        if !self.chain_is_root() {
            chain.push_str(&self.chain);
        }
        Ok((chain, key.serialize_pem()))
    }

    /// Whether the signing certificate is the root itself (then the chain adds nothing).
    fn chain_is_root(&self) -> bool {
        self.chain.trim() == self.roots.trim()
    }
}

fn fastrand_serial() -> [u8; 16] {
    let mut out = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut out).is_err() {
        for b in &mut out {
            *b = fastrand::u8(..);
        }
    }
    out[0] &= 0x7f;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSR asking for these URI SANs (and DNS names).
    fn csr_for(uris: &[&str], dns: &[&str]) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI(u.to_string().try_into().unwrap()));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "anything");
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn temp(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mw-ca-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_root_is_made_once_kept_and_signs_spiffe_identities_only() {
        let dir = temp("made");
        let ca = MeshCa::open(&dir, None, "cluster.local").unwrap();
        let root = std::fs::read_to_string(dir.join(ROOT_CERT)).unwrap();
        assert_eq!(root, ca.roots());
        // Opened again: the same root.
        let again = MeshCa::open(&dir, None, "cluster.local").unwrap();
        assert_eq!(again.roots(), root);
        let id = Identity {
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
        };
        let csr = csr_for(
            &["spiffe://cluster.local/ns/default/sa/bookinfo-reviews"],
            &[],
        );
        let chain = again.sign(&csr, &id, Duration::from_secs(3600)).unwrap();
        let der = rustls_pemfile_first(&chain);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            sans,
            ["URI(spiffe://cluster.local/ns/default/sa/bookinfo-reviews)"],
        );
        // A CSR for another identity, or with other names, is refused.
        for (uris, dns) in [
            (&["spiffe://cluster.local/ns/default/sa/admin"][..], &[][..]),
            (
                &["spiffe://cluster.local/ns/default/sa/bookinfo-reviews"][..],
                &["evil.example.com"][..],
            ),
            (&[][..], &[][..]),
        ] {
            let err = again
                .sign(&csr_for(uris, dns), &id, Duration::from_secs(60))
                .unwrap_err();
            assert!(err.to_string().contains("the caller is spiffe://"), "{err}");
        }
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 60);
        // It chains to the root.
        let root_der = rustls_pemfile_first(&root);
        let (_, root_cert) = x509_parser::parse_x509_certificate(&root_der).unwrap();
        assert!(cert.verify_signature(Some(root_cert.public_key())).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plugged_in_cacerts_sign_and_their_chain_is_appended() {
        // A root, and an intermediate it signs, as `istioctl x ca` or cert-manager make.
        let root_key = KeyPair::generate().unwrap();
        let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params
            .distinguished_name
            .push(DnType::CommonName, "plugged root");
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let mid_key = KeyPair::generate().unwrap();
        let mut mid_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        mid_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        mid_params
            .distinguished_name
            .push(DnType::CommonName, "plugged intermediate");
        let mid = mid_params.signed_by(&mid_key, &root_issuer).unwrap();
        let cacerts = temp("plugged-src");
        std::fs::create_dir_all(&cacerts).unwrap();
        std::fs::write(cacerts.join(CA_CERT), mid.pem()).unwrap();
        std::fs::write(cacerts.join(CA_KEY), mid_key.serialize_pem()).unwrap();
        std::fs::write(cacerts.join(ROOT_CERT), root.pem()).unwrap();
        std::fs::write(cacerts.join(CERT_CHAIN), mid.pem()).unwrap();
        let state = temp("plugged-state");
        let ca = MeshCa::open(&state, Some(&cacerts), "example.org").unwrap();
        assert_eq!(
            std::fs::read_to_string(state.join(ROOT_CERT)).unwrap(),
            root.pem()
        );
        let id = Identity {
            namespace: "ns".into(),
            service_account: "sa".into(),
        };
        let csr = csr_for(&["spiffe://example.org/ns/ns/sa/sa"], &[]);
        let chain = ca.sign(&csr, &id, Duration::from_secs(60)).unwrap();
        assert!(
            chain.contains(&mid.pem()),
            "the intermediate follows the leaf"
        );
        let der = rustls_pemfile_first(&chain);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        let mid_der = rustls_pemfile_first(&mid.pem());
        let (_, mid_cert) = x509_parser::parse_x509_certificate(&mid_der).unwrap();
        assert!(leaf.verify_signature(Some(mid_cert.public_key())).is_ok());
        assert!(
            leaf.subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
                .iter()
                .any(|n| n.to_string() == "URI(spiffe://example.org/ns/ns/sa/sa)")
        );
        std::fs::remove_dir_all(&cacerts).unwrap();
        std::fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = temp("mismatch");
        MeshCa::open(&dir, None, "cluster.local").unwrap();
        let other = KeyPair::generate().unwrap();
        std::fs::write(dir.join(CA_KEY), other.serialize_pem()).unwrap();
        let err = MeshCa::open(&dir, None, "cluster.local").unwrap_err();
        assert!(err.to_string().contains("not the key of"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_csr_is_refused() {
        let dir = temp("bad");
        let ca = MeshCa::open(&dir, None, "cluster.local").unwrap();
        let id = Identity {
            namespace: "a".into(),
            service_account: "b".into(),
        };
        assert!(ca.sign("not a csr", &id, Duration::from_secs(60)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn rustls_pemfile_first(pem: &str) -> Vec<u8> {
        pem::parse_many(pem).unwrap()[0].contents().to_vec()
    }
}
