//! Kubernetes name and label syntax (RFC 1123 labels and subdomains, label keys and values).

use std::sync::OnceLock;

use regex::Regex;

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid regex"))
}

/// A lowercase RFC 1123 label, as Kubernetes requires of namespaces.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !re(&RE, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").is_match(s) {
        return Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".into());
    }
    Ok(())
}

/// A lowercase RFC 1123 subdomain, as Kubernetes requires of most object names.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    if s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    if !re(
        &RE,
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    .is_match(s)
    {
        return Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
    }
    Ok(())
}

fn qualified_name_part(s: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    s.len() <= 63 && re(&RE, r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").is_match(s)
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of up to 63 characters.
pub fn label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        dns1123_subdomain(p).map_err(|e| format!("invalid label key prefix {p:?}: {e}"))?;
    }
    if !qualified_name_part(name) {
        return Err(format!(
            "invalid label key {s:?}: a name must be 63 characters or less, consist of alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// A label value: empty, or up to 63 characters of the label name syntax.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || qualified_name_part(s) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {s:?}: must be 63 characters or less, empty or consist of alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names() {
        assert!(dns1123_label("istio-system").is_ok());
        assert!(dns1123_label("Istio").is_err());
        assert!(dns1123_label("-a").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("my.app-1").is_ok());
        assert!(dns1123_subdomain("my_app").is_err());
        assert!(label_key("app").is_ok());
        assert!(label_key("topology.kubernetes.io/zone").is_ok());
        assert!(label_key("bad key").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x").is_ok());
        assert!(label_value("-v1").is_err());
    }
}
