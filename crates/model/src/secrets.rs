//! Secret resources from Kubernetes Secrets (`credentialName`) and from certificate files
//! (`serverCertificate`, `privateKey`, `caCertificates`, `clientCertificate`), named as
//! Istio's SDS names them.

use std::collections::BTreeMap;

use meshwork_api::resource::Object;
use meshwork_resources::secret::{Pem, Secret};

/// The name of the secret for Kubernetes Secret `ns/name`.
pub fn kubernetes_name(ns: &str, name: &str) -> String {
    format!("kubernetes://{ns}/{name}")
}

/// The name of the CA secret that goes with `ns/name` (its `ca.crt`, or `name-cacert`).
pub fn kubernetes_ca_name(ns: &str, name: &str) -> String {
    format!("kubernetes://{ns}/{name}-cacert")
}

/// A certificate chain and key read from files.
pub fn file_certificate(cert: &str, key: &str) -> Secret {
    Secret {
        name: format!("file-cert:{cert}~{key}"),
        certificate_chain: Some(Pem::File(cert.to_string())),
        private_key: Some(Pem::File(key.to_string())),
        trusted_ca: None,
    }
}

/// Trusted CAs read from a file.
pub fn file_ca(path: &str) -> Secret {
    Secret {
        name: format!("file-root:{path}"),
        certificate_chain: None,
        private_key: None,
        trusted_ca: Some(Pem::File(path.to_string())),
    }
}

/// The string data of a Secret (base64 `data` decoded by the loader, or `stringData`).
fn secret_data(objects: &[Object], ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
    objects.iter().find_map(|o| match o {
        Object::Secret(s)
            if s.metadata.name.as_deref() == Some(name)
                && s.metadata.namespace.as_deref() == Some(ns) =>
        {
            let mut out = BTreeMap::new();
            for (k, v) in s.data.iter().flatten() {
                out.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
            }
            for (k, v) in s.string_data.iter().flatten() {
                out.insert(k.clone(), v.clone());
            }
            Some(out)
        }
        _ => None,
    })
}

/// The secrets of `credentialName` `name` in `ns`: the certificate and key (`tls.crt` and
/// `tls.key`, or Istio's generic `cert` and `key`), and the CA when there is one (`ca.crt`
/// or `cacert` in the same Secret, else in the Secret `name-cacert`).
pub fn credential(
    objects: &[Object],
    ns: &str,
    name: &str,
) -> Result<(Secret, Option<Secret>), String> {
    let data = secret_data(objects, ns, name)
        .ok_or_else(|| format!("credentialName {name}: Secret {ns}/{name} not found"))?;
    let get = |keys: &[&str]| keys.iter().find_map(|k| data.get(*k).cloned());
    let cert =
        get(&["tls.crt", "cert"]).ok_or_else(|| format!("Secret {ns}/{name} has no tls.crt"))?;
    let key =
        get(&["tls.key", "key"]).ok_or_else(|| format!("Secret {ns}/{name} has no tls.key"))?;
    let certificate = Secret {
        name: kubernetes_name(ns, name),
        certificate_chain: Some(Pem::Inline(cert)),
        private_key: Some(Pem::Inline(key)),
        trusted_ca: None,
    };
    let ca = get(&["ca.crt", "cacert"]).or_else(|| {
        let other = secret_data(objects, ns, &format!("{name}-cacert"))?;
        other.get("ca.crt").or_else(|| other.get("cacert")).cloned()
    });
    let ca = ca.map(|pem| Secret {
        name: kubernetes_ca_name(ns, name),
        certificate_chain: None,
        private_key: None,
        trusted_ca: Some(Pem::Inline(pem)),
    });
    Ok((certificate, ca))
}
