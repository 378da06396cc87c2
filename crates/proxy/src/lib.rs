//! The data plane: a proxy runs the compiled per-proxy resources
//! ([`meshwork_resources::ProxyConfig`]) through the request phases: accept, TLS or
//! inspection, select server, match route, policy, pick endpoint, forward, respond.
//! Updates are applied resource by resource ([`runtime::apply`]) off the request path and
//! swapped in atomically; requests in flight finish on the runtime they started with.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balancer;
pub mod body;
pub mod client_cert;
pub mod connection;
pub mod connections;
pub mod discovery;
pub mod dns;
pub mod error;
pub mod flags;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod identity;
pub mod inspect;
pub mod listener;
pub mod metrics;
pub mod otel_log;
pub mod otlp;
pub mod peer;
pub mod recorder;
pub mod request;
pub mod route;
pub mod route_table;
pub mod runtime;
pub mod secrets;
pub mod settings;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod upstream_tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use meshwork_resources::ProxyConfig;

use crate::listener::ListenerHandle;
use crate::runtime::{Rejection, Runtime};
use crate::upstream::Upstreams;

/// What every connection and request of one proxy shares.
pub struct Shared {
    /// The resources in force.
    pub state: ArcSwap<Runtime>,
    /// Upstream connection pools.
    pub upstreams: Upstreams,
    /// Where every request and connection is recorded.
    pub recorder: recorder::Recorder,
    /// Open downstream connections, and the drain signal.
    pub connections: Arc<connections::Registry>,
    /// Limits and timeouts of downstream connections.
    pub settings: settings::ProxySettings,
}

/// A port could not be bound; the rest of the config applies.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind port {} on {}: {source}", addr.port(), addr.ip())]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// What an update did not apply.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Resources rejected, each with its reason; they keep their previous version.
    pub rejected: Vec<Rejection>,
    /// Ports that could not be bound.
    pub bind_errors: Vec<BindError>,
}

impl ApplyReport {
    /// True when everything applied.
    pub fn is_clean(&self) -> bool {
        self.rejected.is_empty() && self.bind_errors.is_empty()
    }
}

/// One proxy: its listeners and the resources they serve.
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: tokio::sync::Mutex<HashMap<SocketAddr, ListenerHandle>>,
}

impl Proxy {
    /// A proxy with nothing applied yet, and the default settings.
    pub fn new() -> Proxy {
        Self::with_settings(settings::ProxySettings::default())
    }

    /// A proxy with nothing applied yet.
    pub fn with_settings(settings: settings::ProxySettings) -> Proxy {
        Self::with_metrics(settings, None)
    }

    /// A proxy with nothing applied yet that counts Istio's standard metrics in `metrics`.
    pub fn with_metrics(
        settings: settings::ProxySettings,
        metrics: Option<Arc<metrics::Metrics>>,
    ) -> Proxy {
        Proxy {
            shared: Arc::new(Shared {
                state: ArcSwap::from_pointee(Runtime::default()),
                upstreams: Upstreams::default(),
                recorder: recorder::Recorder::with_metrics(metrics),
                connections: Arc::default(),
                settings,
            }),
            listeners: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Applies a config, resource by resource (see [`runtime::apply`]): binds new ports,
    /// swaps the runtime in, then closes ports no longer used.
    pub async fn apply(&self, config: ProxyConfig) -> ApplyReport {
        let previous = self.shared.state.load_full();
        let (runtime, rejected) = runtime::apply(config, &previous, &self.shared.upstreams);
        // Listeners that bind no port only take what the capture listeners hand them.
        let addrs: Vec<SocketAddr> = runtime
            .listeners
            .iter()
            .filter(|(_, l)| l.resource.bind_to_port)
            .map(|(a, _)| *a)
            .collect();
        let mut report = ApplyReport {
            rejected,
            bind_errors: Vec::new(),
        };
        let mut listeners = self.listeners.lock().await;
        for addr in &addrs {
            if listeners.contains_key(addr) {
                continue;
            }
            let captures = runtime.listeners[addr].resource.capture.is_some();
            match listener::start(*addr, captures, self.shared.clone()).await {
                Ok(handle) => {
                    listeners.insert(*addr, handle);
                }
                Err(source) => report.bind_errors.push(BindError {
                    addr: *addr,
                    source,
                }),
            }
        }
        // A listener whose state changed (its servers, TLS or client CA) tells the
        // connections it accepted under the old state to finish and close, so that none
        // keeps a handshake the new config would refuse.
        for (addr, new) in &runtime.listeners {
            if let (Some(old), Some(handle)) = (previous.listeners.get(addr), listeners.get(addr))
                && !Arc::ptr_eq(old, new)
            {
                handle.changed();
            }
        }
        self.shared.state.store(Arc::new(runtime));
        listeners.retain(|addr, _| addrs.contains(addr));
        // An address in use by a listener just removed (0.0.0.0:P giving way to
        // 127.0.0.1:P) can be bound now.
        let mut still_failing = Vec::new();
        for e in report.bind_errors.drain(..) {
            let captures = self.shared.state.load().listeners[&e.addr]
                .resource
                .capture
                .is_some();
            match listener::start(e.addr, captures, self.shared.clone()).await {
                Ok(handle) => {
                    listeners.insert(e.addr, handle);
                }
                Err(_) => still_failing.push(e),
            }
        }
        report.bind_errors = still_failing;
        report
    }

    /// Starts draining: listeners stop accepting, HTTP connections close once their
    /// requests in flight are answered.
    pub fn start_drain(&self) {
        self.shared.connections.start_drain();
    }

    /// Drains on shutdown ([`Proxy::start_drain`]) and waits for connections to close, up
    /// to `deadline`. Returns the connections still open.
    pub async fn drain(&self, deadline: std::time::Duration) -> usize {
        self.shared.connections.drain(deadline).await
    }

    /// The resources in force.
    pub fn config(&self) -> Arc<ProxyConfig> {
        self.shared.state.load().config.clone()
    }

    /// What every connection of this proxy shares (the recorder among it).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The runtime in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.shared.state.load_full()
    }

    /// The listener addresses of the config in force that could not be bound.
    pub async fn unbound(&self) -> Vec<SocketAddr> {
        let runtime = self.runtime();
        let listeners = self.listeners.lock().await;
        runtime
            .listeners
            .iter()
            .filter(|(a, l)| l.resource.bind_to_port && !listeners.contains_key(a))
            .map(|(a, _)| *a)
            .collect()
    }

    /// The ports bound now.
    pub async fn bound_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .listeners
            .lock()
            .await
            .values()
            .map(|l| l.addr.port())
            .collect();
        ports.sort_unstable();
        ports
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}
