//! Gateway: servers, ports, hosts and server TLS settings.

use std::collections::BTreeSet;

use crate::diagnostic::Findings;
use crate::generated::networking::{ServerTlsMode, ServerTlsSettings, TlsProtocol};
use crate::path::FieldPath;
use crate::resource::Gateway;

use super::common::*;

/// Validates a Gateway.
pub fn validate(gw: &Gateway, spec: &FieldPath, out: &mut Findings) {
    let name = gw.metadata.name.as_deref().unwrap_or_default();
    if !is_dns1123_label(name) {
        out.error(
            &FieldPath::root().field("metadata").field("name"),
            format!("invalid gateway name: {name:?}"),
        );
    }
    let servers = &gw.spec.servers;
    if servers.is_empty() {
        out.error(
            &spec.field("servers"),
            "gateway must have at least one server",
        );
        return;
    }
    let mut port_names = BTreeSet::new();
    for (i, server) in servers.iter().enumerate() {
        let p = spec.field("servers").index(i);
        if server.hosts.is_empty() {
            out.error(
                &p.field("hosts"),
                "server config must contain at least one host",
            );
        }
        for (j, host) in server.hosts.iter().enumerate() {
            check_namespace_slash_host(host, true, &p.field("hosts").index(j), out);
        }
        let Some(port) = &server.port else {
            out.error(&p.field("port"), "port is required");
            continue;
        };
        let pp = p.field("port");
        if !port.name.is_empty() && !port_names.insert(port.name.as_str()) {
            out.error(
                &pp.field("name"),
                format!(
                    "port names in servers must be unique: duplicate name {}",
                    port.name
                ),
            );
        }
        let protocol_ok = PROTOCOLS.contains(&port.protocol.to_ascii_lowercase().as_str());
        if !protocol_ok {
            out.error(
                &pp.field("protocol"),
                format!(
                    "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                    port.protocol
                ),
            );
        }
        let bind = server.bind.as_deref().unwrap_or("");
        let number = port.number.unwrap_or(0);
        let mut port_ok = true;
        if !(number == 0 && bind.starts_with("unix://"))
            && let Err(e) = validate_port(number)
        {
            out.error(&pp.field("number"), e);
            port_ok = false;
        }
        if port.target_port.is_some_and(|t| t > 0) {
            out.error(
                &pp.field("targetPort"),
                "targetPort has no impact on Gateways",
            );
        }
        if port.name.is_empty() {
            out.error(
                &pp.field("name"),
                format!("port name must be set: {number}"),
            );
        }
        if let Some(uds) = bind.strip_prefix("unix://") {
            if let Err(e) = validate_unix_address(uds) {
                out.error(&p.field("bind"), e);
            }
            if number != 0 {
                out.error(
                    &pp.field("number"),
                    format!("port number must be 0 for unix domain socket: {number}"),
                );
            }
        } else if !bind.is_empty()
            && let Err(e) = validate_ip(bind)
        {
            out.error(&p.field("bind"), e);
        }
        let tls_path = p.field("tls");
        if let Some(tls) = &server.tls {
            if tls.https_redirect == Some(true) && !is_http_protocol(&port.protocol) {
                out.warn(
                    &tls_path.field("httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
            check_server_tls_options(tls, &tls_path, out);
        }
        if port_ok && protocol_ok {
            let proto = port.protocol.as_str();
            match &server.tls {
                None if is_tls_protocol(proto) => {
                    out.error(
                        &tls_path,
                        "server must have TLS settings for HTTPS/TLS protocols",
                    );
                }
                Some(tls) if is_http_protocol(proto) => {
                    let passthrough = matches!(
                        tls.mode.unwrap_or_default(),
                        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                    );
                    let no_certs = tls.ca_certificates.as_deref().unwrap_or("").is_empty()
                        && tls.private_key.as_deref().unwrap_or("").is_empty()
                        && tls.server_certificate.as_deref().unwrap_or("").is_empty();
                    if !(passthrough && no_certs) {
                        out.error(
                            &tls_path,
                            "server cannot have TLS settings for plain text HTTP ports",
                        );
                    }
                }
                Some(_) if !is_tls_protocol(proto) => {
                    out.error(
                        &tls_path,
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                }
                _ => {}
            }
        }
    }
}

/// `ns/host` of Gateway and Sidecar hosts (`*/foo.com`, `./*`, `prod/*.example.com`).
pub fn check_namespace_slash_host(
    host: &str,
    is_gateway: bool,
    path: &FieldPath,
    out: &mut Findings,
) {
    let (ns, dns) = match host.split_once('/') {
        Some((ns, dns)) => (Some(ns), dns),
        None if is_gateway => (None, host),
        None => {
            out.error(path, "host must be of form namespace/dnsName");
            return;
        }
    };
    if let Some(ns) = ns {
        if ns.is_empty() || dns.is_empty() {
            out.error(
                path,
                "config namespace and dnsName in host entry cannot be empty",
            );
            return;
        }
        let ok = ns == "*" || ns == "." || (!is_gateway && ns == "~") || is_dns1123_label(ns);
        if !ok {
            let kind = if is_gateway { "gateway" } else { "sidecar" };
            out.error(path, format!("invalid namespace value {ns:?} in {kind}"));
        }
    }
    if dns != "*" && !dns.contains('.') {
        out.error(path, "short names (non FQDN) are not allowed");
        return;
    }
    if let Err(e) = validate_wildcard_domain(dns)
        && !(is_gateway && is_ip(dns))
    {
        out.error(path, e);
    }
    if let Err(e) = validate_partial_wildcard(dns) {
        out.error(path, e);
    }
}

/// Server TLS settings (Gateway servers and Sidecar ingress listeners).
pub fn check_server_tls_options(tls: &ServerTlsSettings, path: &FieldPath, out: &mut Findings) {
    let old = matches!(
        tls.min_protocol_version,
        Some(TlsProtocol::Tlsv10 | TlsProtocol::Tlsv11)
    );
    if old && tls.cipher_suites.is_empty() {
        out.warn(
            &path.field("minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        );
    }
    let mut invalid: Vec<&str> = Vec::new();
    let mut duplicate: Vec<&str> = Vec::new();
    let mut seen = BTreeSet::new();
    for c in &tls.cipher_suites {
        if !is_valid_cipher_suite(c) {
            invalid.push(c);
        } else if !seen.insert(c.as_str()) {
            duplicate.push(c);
        }
    }
    invalid.sort_unstable();
    duplicate.sort_unstable();
    if !invalid.is_empty() {
        out.warn(
            &path.field("cipherSuites"),
            format!("ignoring invalid cipher suites: [{}]", invalid.join(" ")),
        );
    }
    if !duplicate.is_empty() {
        out.warn(
            &path.field("cipherSuites"),
            format!(
                "ignoring duplicate cipher suites: [{}]",
                duplicate.join(" ")
            ),
        );
    }
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let mode = tls.mode.unwrap_or_default();
    let has_cred = set(&tls.credential_name) || !tls.credential_names.is_empty();
    let has_cert = set(&tls.server_certificate) || !tls.tls_certificates.is_empty();
    let has_key = set(&tls.private_key) || !tls.tls_certificates.is_empty();
    match mode {
        ServerTlsMode::IstioMutual => {
            for (field, set, what) in [
                (
                    "serverCertificate",
                    set(&tls.server_certificate),
                    "server certificate",
                ),
                ("privateKey", set(&tls.private_key), "private key"),
                ("caCertificates", set(&tls.ca_certificates), "CA bundle"),
                (
                    "credentialName",
                    set(&tls.credential_name),
                    "credentialName",
                ),
            ] {
                if set {
                    out.error(
                        &path.field(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                    );
                }
            }
            // Istio reports each of them, and nothing more for ISTIO_MUTUAL.
            return;
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            if set(&tls.ca_crl)
                || has_cert
                || set(&tls.private_key)
                || set(&tls.ca_certificates)
                || has_cred
            {
                out.warn(
                    path,
                    format!(
                        "{} mode does not use certificates, they will be ignored",
                        mode.as_str()
                    ),
                );
            }
        }
        _ if has_cred => return,
        ServerTlsMode::Simple => {
            if !has_cert {
                out.error(
                    &path.field("serverCertificate"),
                    "SIMPLE TLS requires a server certificate",
                );
            }
            if !has_key {
                out.error(
                    &path.field("privateKey"),
                    "SIMPLE TLS requires a private key",
                );
            }
        }
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if !has_cert {
                out.error(
                    &path.field("serverCertificate"),
                    "MUTUAL TLS requires a server certificate",
                );
            }
            if !has_key {
                out.error(
                    &path.field("privateKey"),
                    "MUTUAL TLS requires a private key",
                );
            }
            if !set(&tls.ca_certificates) {
                out.error(
                    &path.field("caCertificates"),
                    "MUTUAL TLS requires a client CA bundle",
                );
            }
        }
    }
    if set(&tls.ca_crl) {
        if has_cred {
            out.error(
                &path.field("caCrl"),
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        } else if mode == ServerTlsMode::Simple {
            out.error(&path.field("caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tls_findings(tls: serde_json::Value) -> Vec<String> {
        let tls: ServerTlsSettings = serde_json::from_value(tls).expect("valid TLS settings");
        let mut out = Findings::default();
        check_server_tls_options(&tls, &FieldPath::root().field("tls"), &mut out);
        out.into_vec()
            .into_iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect()
    }

    #[test]
    fn istio_mutual_reports_every_certificate_field() {
        let f = tls_findings(json!({
            "mode": "ISTIO_MUTUAL", "serverCertificate": "/c.pem", "privateKey": "/k.pem",
            "caCertificates": "/ca.pem", "credentialName": "cert", "caCrl": "/crl.pem"
        }));
        assert_eq!(
            f,
            vec![
                "tls.serverCertificate: ISTIO_MUTUAL TLS cannot have associated server certificate",
                "tls.privateKey: ISTIO_MUTUAL TLS cannot have associated private key",
                "tls.caCertificates: ISTIO_MUTUAL TLS cannot have associated CA bundle",
                "tls.credentialName: ISTIO_MUTUAL TLS cannot have associated credentialName",
            ]
        );
        assert!(tls_findings(json!({"mode": "ISTIO_MUTUAL", "caCrl": "/crl.pem"})).is_empty());
    }
}
