//! The control plane's own metrics, under istiod's names so that Istio's control-plane
//! dashboard queries them unchanged, served on `--monitoring-address` (istiod's 15014)
//! at `/metrics` in the Prometheus text format:
//! - `pilot_xds`: proxies connected;
//! - `pilot_xds_pushes{type}`: responses sent, by type (`cds`, `eds`, `lds`, `rds`,
//!   `sds`, `nds`, `pds`);
//! - `pilot_total_xds_rejects{type}`: NACKs, by type;
//! - `pilot_proxy_convergence_time`: seconds from a config version's publication to its
//!   push to a proxy (a histogram, istiod's buckets);
//! - `citadel_server_csr_count`, `citadel_server_success_cert_issuance_count`,
//!   `citadel_server_authentication_failure_count`: the certificate service's requests.
//!
//! Counters keep istiod's names, without `_total`, as its dashboards query them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meshwork_xds::TypeUrl;

/// istiod's buckets for `pilot_proxy_convergence_time`, in seconds.
const CONVERGENCE_BUCKETS: [f64; 9] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0, f64::INFINITY];

/// The control plane's counters.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    pushes: [AtomicU64; 7],
    rejects: [AtomicU64; 7],
    convergence: Mutex<([u64; 9], f64, u64)>,
    /// CSRs received.
    pub csr: AtomicU64,
    /// Certificates issued.
    pub issued: AtomicU64,
    /// CSRs refused for their token.
    pub authentication_failures: AtomicU64,
}

fn index(t: TypeUrl) -> usize {
    TypeUrl::ALL.iter().position(|x| *x == t).unwrap_or(0)
}

impl ControlMetrics {
    /// A response of type `t` was sent.
    pub fn pushed(&self, t: TypeUrl) {
        self.pushes[index(t)].fetch_add(1, Ordering::Relaxed);
    }

    /// A proxy NACKed type `t`.
    pub fn rejected(&self, t: TypeUrl) {
        self.rejects[index(t)].fetch_add(1, Ordering::Relaxed);
    }

    /// A version reached a proxy this long after it was published.
    pub fn converged(&self, after: Duration) {
        let secs = after.as_secs_f64();
        let mut h = self.convergence.lock().unwrap_or_else(|e| e.into_inner());
        for (i, le) in CONVERGENCE_BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.0[i] += 1;
            }
        }
        h.1 += secs;
        h.2 += 1;
    }

    /// The metrics as Prometheus text, with `connected` proxies.
    pub fn encode(&self, connected: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP pilot_xds Proxies connected.\n# TYPE pilot_xds gauge\n");
        out.push_str(&format!("pilot_xds {connected}\n"));
        let by_type = |out: &mut String, name: &str, help: &str, values: &[AtomicU64; 7]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (t, v) in TypeUrl::ALL.iter().zip(values) {
                out.push_str(&format!(
                    "{name}{{type=\"{}\"}} {}\n",
                    t.short().to_ascii_lowercase(),
                    v.load(Ordering::Relaxed)
                ));
            }
        };
        by_type(
            &mut out,
            "pilot_xds_pushes",
            "Responses sent, by type.",
            &self.pushes,
        );
        by_type(
            &mut out,
            "pilot_total_xds_rejects",
            "Responses proxies rejected, by type.",
            &self.rejects,
        );
        let h = self.convergence.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP pilot_proxy_convergence_time Seconds from a config's publication to its push.\n# TYPE pilot_proxy_convergence_time histogram\n");
        for (le, n) in CONVERGENCE_BUCKETS.iter().zip(h.0) {
            let le = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                le.to_string()
            };
            out.push_str(&format!(
                "pilot_proxy_convergence_time_bucket{{le=\"{le}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "pilot_proxy_convergence_time_sum {}\npilot_proxy_convergence_time_count {}\n",
            h.1, h.2
        ));
        for (name, help, v) in [
            ("citadel_server_csr_count", "CSRs received.", &self.csr),
            (
                "citadel_server_success_cert_issuance_count",
                "Certificates issued.",
                &self.issued,
            ),
            (
                "citadel_server_authentication_failure_count",
                "CSRs refused for their credential.",
                &self.authentication_failures,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// Serves `/metrics` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<ControlMetrics>,
    proxies: impl Fn() -> usize + Send + Sync + Clone + 'static,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, proxies) = (metrics.clone(), proxies.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (status, body) = match req.uri().path() {
                        "/metrics" | "/stats/prometheus" => {
                            (http::StatusCode::OK, metrics.encode(proxies()))
                        }
                        _ => (http::StatusCode::NOT_FOUND, "not found\n".to_string()),
                    };
                    let mut r =
                        http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                    *r.status_mut() = status;
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istiods_names_and_buckets() {
        let m = ControlMetrics::default();
        m.pushed(TypeUrl::Cluster);
        m.pushed(TypeUrl::Cluster);
        m.rejected(TypeUrl::Listener);
        m.converged(Duration::from_millis(300));
        m.converged(Duration::from_secs(60));
        m.csr.fetch_add(1, Ordering::Relaxed);
        let text = m.encode(3);
        for line in [
            "pilot_xds 3",
            "pilot_xds_pushes{type=\"cds\"} 2",
            "pilot_total_xds_rejects{type=\"lds\"} 1",
            "pilot_proxy_convergence_time_bucket{le=\"0.1\"} 0",
            "pilot_proxy_convergence_time_bucket{le=\"0.5\"} 1",
            "pilot_proxy_convergence_time_bucket{le=\"30\"} 1",
            "pilot_proxy_convergence_time_bucket{le=\"+Inf\"} 2",
            "pilot_proxy_convergence_time_count 2",
            "citadel_server_csr_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
