//! DestinationRule: host, subsets, and the traffic policy (connection pool, load balancer,
//! outlier detection, client TLS, port-level settings, tunnel, proxy protocol).

use std::collections::BTreeSet;

use crate::diagnostic::Findings;
use crate::generated::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, H2UpgradePolicy,
    LoadBalancerSettings, LocalityLbSetting, OutlierDetection, TrafficPolicy,
};
use crate::path::FieldPath;
use crate::resource::DestinationRule;

use super::common::*;

/// Validates a DestinationRule.
pub fn validate(dr: &DestinationRule, spec: &FieldPath, out: &mut Findings) {
    let s = &dr.spec;
    if let Err(e) = validate_wildcard_domain(&s.host) {
        out.error(&spec.field("host"), e);
    }
    if let Some(tp) = &s.traffic_policy {
        check_traffic_policy(tp, &spec.field("trafficPolicy"), out);
    }
    let mut names = BTreeSet::new();
    for (i, subset) in s.subsets.iter().enumerate() {
        let p = spec.field("subsets").index(i);
        if subset.name.is_empty() {
            out.error(&p.field("name"), "subset name cannot be empty");
        } else if !is_dns1123_label(&subset.name) {
            out.error(
                &p.field("name"),
                format!("subset name is invalid: {}", subset.name),
            );
        }
        if !names.insert(subset.name.as_str()) {
            out.error(
                &p.field("name"),
                format!("duplicate subset names: {}", subset.name),
            );
        }
        check_labels(&subset.labels, &p.field("labels"), out);
        if let Some(tp) = &subset.traffic_policy {
            check_traffic_policy(tp, &p.field("trafficPolicy"), out);
        }
    }
    let ns = dr.metadata.namespace.as_deref().unwrap_or_default();
    check_export_to(
        ns,
        &s.export_to,
        false,
        s.workload_selector.is_some(),
        &spec.field("exportTo"),
        out,
    );
    check_workload_selector(
        s.workload_selector.as_ref(),
        &spec.field("workloadSelector"),
        out,
    );
}

/// A traffic policy, top-level or per subset.
pub fn check_traffic_policy(tp: &TrafficPolicy, path: &FieldPath, out: &mut Findings) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        out.error(path, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        out.error(path, "tunnel and proxyProtocol must not be set together");
    }
    if let Some(t) = &tp.tunnel {
        let p = path.field("tunnel");
        if !matches!(
            t.protocol.as_deref(),
            None | Some("") | Some("CONNECT") | Some("POST")
        ) {
            out.error(
                &p.field("protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
        if let Err(fqdn) = validate_fqdn(&t.target_host)
            && let Err(ip) = validate_ip(&t.target_host)
        {
            out.error(
                &p.field("targetHost"),
                format!("tunnel target host must be valid FQDN or IP address: {fqdn}; {ip}"),
            );
        }
        if let Err(e) = validate_port(t.target_port.unwrap_or(0)) {
            out.error(
                &p.field("targetPort"),
                format!("tunnel target port is invalid: {e}"),
            );
        }
    }
    check_policy_parts(
        tp.outlier_detection.as_ref(),
        tp.connection_pool.as_ref(),
        tp.load_balancer.as_ref(),
        tp.tls.as_ref(),
        path,
        out,
    );
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let p = path.field("portLevelSettings").index(i);
        if pl.port.is_none() {
            out.error(&p, "portTrafficPolicy must have valid port");
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            out.error(&p, "port traffic policy must have at least one field");
        }
        check_policy_parts(
            pl.outlier_detection.as_ref(),
            pl.connection_pool.as_ref(),
            pl.load_balancer.as_ref(),
            pl.tls.as_ref(),
            &p,
            out,
        );
    }
}

fn check_policy_parts(
    od: Option<&OutlierDetection>,
    cp: Option<&ConnectionPoolSettings>,
    lb: Option<&LoadBalancerSettings>,
    tls: Option<&ClientTlsSettings>,
    path: &FieldPath,
    out: &mut Findings,
) {
    if let Some(od) = od {
        check_outlier_detection(od, &path.field("outlierDetection"), out);
    }
    if let Some(cp) = cp {
        check_connection_pool(cp, &path.field("connectionPool"), out);
    }
    if let Some(lb) = lb {
        check_load_balancer(lb, od.is_some(), &path.field("loadBalancer"), out);
    }
    if let Some(tls) = tls {
        check_client_tls(tls, &path.field("tls"), out);
    }
}

fn check_outlier_detection(od: &OutlierDetection, path: &FieldPath, out: &mut Findings) {
    check_duration(
        od.base_ejection_time.as_ref(),
        &path.field("baseEjectionTime"),
        out,
    );
    check_duration(od.interval.as_ref(), &path.field("interval"), out);
    if od.consecutive_errors.is_some_and(|n| n != 0) {
        out.warn(
            &path.field("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if od.consecutive_local_origin_failures.is_some_and(|n| n > 0)
        && od.split_external_local_origin_errors != Some(true)
    {
        out.error(
            &path.field("consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    for (field, v) in [
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ] {
        if let Some(v) = v
            && let Err(e) = u32::try_from(v)
                .map_err(|_| format!("percentage {v} is not in range 0..100"))
                .and_then(validate_percent)
        {
            out.error(&path.field(field), e);
        }
    }
}

/// Connection pool settings (DestinationRule and Sidecar).
pub fn check_connection_pool(cp: &ConnectionPoolSettings, path: &FieldPath, out: &mut Findings) {
    if cp.http.is_none() && cp.tcp.is_none() {
        out.error(path, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = &cp.http {
        let p = path.field("http");
        for (field, v, what) in [
            (
                "http1MaxPendingRequests",
                h.http1_max_pending_requests,
                "http1 max pending requests",
            ),
            (
                "http2MaxRequests",
                h.http2_max_requests,
                "http2 max requests",
            ),
            (
                "maxRequestsPerConnection",
                h.max_requests_per_connection,
                "max requests per connection",
            ),
            ("maxRetries", h.max_retries, "max retries"),
            (
                "maxConcurrentStreams",
                h.max_concurrent_streams,
                "max concurrent streams",
            ),
        ] {
            if v.is_some_and(|v| v < 0) {
                out.error(&p.field(field), format!("{what} must be non-negative"));
            }
        }
        check_duration(h.idle_timeout.as_ref(), &p.field("idleTimeout"), out);
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && h.use_client_protocol == Some(true)
        {
            out.error(
                &p.field("useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
    }
    if let Some(t) = &cp.tcp {
        let p = path.field("tcp");
        if t.max_connections.is_some_and(|v| v < 0) {
            out.error(
                &p.field("maxConnections"),
                "max connections must be non-negative",
            );
        }
        check_duration(t.connect_timeout.as_ref(), &p.field("connectTimeout"), out);
        check_duration(
            t.max_connection_duration.as_ref(),
            &p.field("maxConnectionDuration"),
            out,
        );
        check_duration(t.idle_timeout.as_ref(), &p.field("idleTimeout"), out);
        if let Some(k) = &t.tcp_keepalive {
            let kp = p.field("tcpKeepalive");
            check_duration(k.time.as_ref(), &kp.field("time"), out);
            check_duration(k.interval.as_ref(), &kp.field("interval"), out);
        }
    }
}

fn check_load_balancer(
    lb: &LoadBalancerSettings,
    has_outlier_detection: bool,
    path: &FieldPath,
    out: &mut Findings,
) {
    if let Some(ch) = &lb.consistent_hash {
        let p = path.field("consistentHash");
        if let Some(c) = &ch.http_cookie
            && c.name.is_empty()
        {
            out.error(
                &p.field("httpCookie").field("name"),
                "name required for HttpCookie",
            );
        }
        if ch.minimum_ring_size.is_some_and(|n| n != 0) {
            out.warn(
                &p.field("minimumRingSize"),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            );
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                out.error(
                    &p,
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                );
            }
        }
        if let Some(m) = &ch.maglev {
            let size = m.table_size.unwrap_or(0);
            let tp = p.field("maglev").field("tableSize");
            if size == 0 {
                out.error(&tp, "tableSize must be set for maglev");
            } else if size >= 5_000_011 {
                out.error(&tp, "tableSize must be less than 5000011 for maglev");
            } else if !is_prime(size) {
                out.error(&tp, "tableSize must be a prime number for maglev");
            }
        }
    }
    check_duration(
        lb.warmup_duration_secs.as_ref(),
        &path.field("warmupDurationSecs"),
        out,
    );
    if let Some(l) = &lb.locality_lb_setting {
        check_locality_lb(
            l,
            has_outlier_detection,
            &path.field("localityLbSetting"),
            out,
        );
    }
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n > 1;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut i = 3;
    while i * i <= n {
        if n.is_multiple_of(i) {
            return false;
        }
        i += 2;
    }
    true
}

/// `localityLbSetting` (DestinationRule and MeshConfig).
pub fn check_locality_lb(
    l: &LocalityLbSetting,
    has_outlier_detection: bool,
    path: &FieldPath,
    out: &mut Findings,
) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        out.error(
            path,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    if !l.failover.is_empty() {
        for label in &l.failover_priority {
            if matches!(
                label.as_str(),
                "topology.kubernetes.io/region"
                    | "topology.kubernetes.io/zone"
                    | "topology.istio.io/subzone"
            ) {
                out.error(
                    &path.field("failoverPriority"),
                    format!("can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"),
                );
                return;
            }
        }
    }
    let mut froms: Vec<&str> = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let p = path.field("distribute").index(i);
        if let Some(from) = &d.from {
            if let Err(e) = check_locality(from, &froms) {
                out.error(&p.field("from"), e);
            }
            froms.push(from);
        }
        let mut total = 0u64;
        let mut tos: Vec<&str> = Vec::new();
        for (loc, w) in &d.to {
            if !(1..=100).contains(w) {
                out.error(
                    &p.field("to").key(loc),
                    "locality weight must be in range [1, 100]",
                );
            }
            total += u64::from(*w);
            if let Err(e) = check_locality(loc, &tos) {
                out.error(&p.field("to").key(loc), e);
            }
            tos.push(loc);
        }
        if total != 100 {
            out.error(
                &p.field("to"),
                format!("total locality weight {total} != 100"),
            );
        }
    }
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier_detection {
        out.warn(
            path,
            "outlier detection policy must be provided for failover",
        );
    }
    for (i, f) in l.failover.iter().enumerate() {
        let p = path.field("failover").index(i);
        let (from, to) = (
            f.from.as_deref().unwrap_or(""),
            f.to.as_deref().unwrap_or(""),
        );
        if from == to {
            out.error(
                &p,
                "locality lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            out.error(&p, "locality lb failover only specify region");
        }
        if from.contains('*') || to.contains('*') {
            out.error(
                &p,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

fn check_locality(loc: &str, previous: &[&str]) -> Result<(), String> {
    let parts: Vec<&str> = loc.split('/').collect();
    let stars = parts.iter().filter(|p| **p == "*").count();
    if stars > 1 || (stars == 1 && parts.last() != Some(&"*")) {
        return Err(format!(
            "locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
        ));
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "locality {loc} must not contain empty region/zone/subzone info"
        ));
    }
    let covers = |a: &str, b: &str| {
        a == b
            || a.strip_suffix('*')
                .is_some_and(|prefix| b.starts_with(prefix))
    };
    if previous.iter().any(|p| covers(p, loc) || covers(loc, p)) {
        return Err(format!(
            "locality {loc} overlap with previous specified ones"
        ));
    }
    Ok(())
}

/// Client TLS settings towards an upstream.
pub fn check_client_tls(tls: &ClientTlsSettings, path: &FieldPath, out: &mut Findings) {
    let mode = tls.mode.unwrap_or_default();
    let has_ca = tls
        .ca_certificates
        .as_deref()
        .is_some_and(|s| !s.is_empty());
    let has_cred = tls
        .credential_name
        .as_deref()
        .is_some_and(|s| !s.is_empty());
    let has_san = !tls.subject_alt_names.is_empty();
    if tls.insecure_skip_verify == Some(true) {
        if mode == ClientTlsMode::Simple && (has_ca || has_cred || has_san) {
            out.error(
                path,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
            );
        }
        if mode == ClientTlsMode::Mutual && (has_ca || has_san) {
            out.error(
                path,
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
            );
        }
    }
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) && has_cred {
        if set(&tls.client_certificate) || has_ca || set(&tls.private_key) || set(&tls.ca_crl) {
            out.error(
                path,
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            );
        }
        return;
    }
    if mode == ClientTlsMode::Mutual {
        if !set(&tls.client_certificate) {
            out.error(
                &path.field("clientCertificate"),
                "client certificate required for mutual tls",
            );
        }
        if !set(&tls.private_key) {
            out.error(
                &path.field("privateKey"),
                "private key required for mutual tls",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_for_maglev() {
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
        assert!(is_prime(2) && is_prime(3) && !is_prime(1));
    }

    #[test]
    fn localities() {
        assert!(check_locality("us-east/zone1/*", &[]).is_ok());
        assert!(check_locality("us-east/*/sub", &[]).is_err());
        assert!(check_locality("us-east//x", &[]).is_err());
        assert!(check_locality("us-east/zone1", &["us-east/*"]).is_err());
    }
}
