//! The admin and health endpoints: `GET /config_dump` on the admin port (15000) prints the
//! compiled config the proxies run; `GET /healthz/ready` on the status port (15021) answers
//! 200 once config is loaded and every listener is bound, 503 before. Both serve
//! `/stats/prometheus` when the process keeps Istio's standard metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use meshwork_resources::ProxyConfig;

use crate::body::{Body, full};

/// What the admin endpoints report.
#[derive(Default)]
pub struct AdminState {
    /// Config loaded and every listener bound.
    pub ready: AtomicBool,
    /// The resources every proxy runs, by proxy id; serialized (keys redacted) when asked for.
    pub config_dump: ArcSwap<Vec<(String, Arc<ProxyConfig>)>>,
    /// The recorders' counters, by proxy id, for `/stats`.
    pub stats: ArcSwap<Vec<(String, Arc<crate::Shared>)>>,
    /// Istio's standard metrics, served at `/stats/prometheus` when the process keeps them.
    pub metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

impl AdminState {
    /// Marks the process ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

fn respond(admin: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if let (Some(metrics), "/stats/prometheus") = (admin.metrics.get(), req.uri().path()) {
        return prometheus(metrics);
    }
    let (status, content_type, body) = match req.uri().path() {
        "/healthz/ready" | "/ready" => {
            if admin.ready.load(Ordering::SeqCst) {
                (StatusCode::OK, "text/plain", "LIVE\n".to_string())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready\n".to_string(),
                )
            }
        }
        "/config_dump" => (StatusCode::OK, "application/json", {
            let gateways = admin.config_dump.load();
            let dump: std::collections::BTreeMap<&str, ProxyConfig> = gateways
                .iter()
                .map(|(n, c)| (n.as_str(), c.redacted()))
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({ "gateways": dump }))
                .unwrap_or_default()
                + "\n"
        }),
        "/stats" => (StatusCode::OK, "text/plain", {
            let mut out = String::new();
            for (id, shared) in admin.stats.load().iter() {
                for line in shared.recorder.stats().lines() {
                    out.push_str(&format!("proxy.{id}.{line}\n"));
                }
                out.push_str(&format!(
                    "proxy.{id}.listener.downstream_cx_active: {}\n",
                    shared.connections.open()
                ));
                if let Some(tracer) = &shared.state.load().tracer {
                    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                    // Envoy's tracer stats, under its tracer's name.
                    let kind = match tracer.settings.protocol {
                        meshwork_resources::trace::Protocol::Zipkin => "zipkin",
                        _ => "opentelemetry",
                    };
                    out.push_str(&format!(
                        "proxy.{id}.tracing.{kind}.spans_sent: {}\nproxy.{id}.tracing.{kind}.spans_dropped: {}\n",
                        get(&tracer.sent),
                        get(&tracer.dropped)
                    ));
                }
            }
            out
        }),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// The metrics in the Prometheus text format.
fn prometheus(metrics: &crate::metrics::Metrics) -> Response<Body> {
    let mut r = Response::new(full(metrics.encode()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}

/// Serves Istio's standard metrics on `listener` (`/stats/prometheus`, and `/metrics`)
/// until the process ends.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<crate::metrics::Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let r = match req.uri().path() {
                    "/stats/prometheus" | "/metrics" => prometheus(&metrics),
                    _ => {
                        let mut r = Response::new(full("not found\n"));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r
                    }
                };
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Serves the admin endpoints on `listener` until the process ends.
pub async fn serve(listener: TcpListener, admin: Arc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let r = respond(&admin, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
