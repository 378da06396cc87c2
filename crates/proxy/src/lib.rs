//! The data plane: a gateway proxy runs compiled configuration ([`meshwork_model::config`])
//! through the request phases: accept, TLS, match route, act (redirect, direct response,
//! forward with timeouts and retries), record telemetry. New configuration is built off
//! the request path and swapped in atomically; requests in flight finish on the old one.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balancer;
pub mod body;
pub mod error;
pub mod http;
pub mod inspect;
pub mod listener;
pub mod route;
pub mod state;
pub mod tcp;
pub mod tls;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use meshwork_model::config::GatewayConfig;

use crate::access_log::AccessLogger;
use crate::listener::ListenerHandle;
use crate::state::{BuildError, State};
use crate::upstream::Upstreams;

/// What every connection and request of one proxy shares.
pub struct Shared {
    /// The config in force.
    pub state: ArcSwap<State>,
    /// Upstream connection pools.
    pub upstreams: Upstreams,
    loggers: Mutex<HashMap<String, AccessLogger>>,
}

impl Shared {
    /// The access log writer for `path`, started on first use.
    pub fn access_logger(&self, path: &str) -> Option<AccessLogger> {
        let mut loggers = self.loggers.lock().ok()?;
        if let Some(l) = loggers.get(path) {
            return Some(l.clone());
        }
        match AccessLogger::start(path) {
            Ok(l) => {
                loggers.insert(path.to_string(), l.clone());
                Some(l)
            }
            Err(e) => {
                tracing::warn!(path, error = %e, "cannot open the access log");
                None
            }
        }
    }
}

/// A config could not be applied; the previous one keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The config cannot be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A port could not be bound.
    #[error("cannot bind port {port}: {source}")]
    Bind {
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One gateway proxy: its listeners and the config they serve.
pub struct GatewayProxy {
    shared: Arc<Shared>,
    listeners: tokio::sync::Mutex<HashMap<u16, ListenerHandle>>,
}

impl GatewayProxy {
    /// Builds the config and binds every listener.
    pub async fn start(config: GatewayConfig) -> Result<GatewayProxy, ApplyError> {
        let upstreams = Upstreams::default();
        let state = State::build(config, &upstreams)?;
        upstreams.mark_started();
        let proxy = GatewayProxy {
            shared: Arc::new(Shared {
                state: ArcSwap::from_pointee(state),
                upstreams,
                loggers: Mutex::new(HashMap::new()),
            }),
            listeners: tokio::sync::Mutex::new(HashMap::new()),
        };
        let ports: Vec<u16> = proxy
            .shared
            .state
            .load()
            .listeners
            .keys()
            .copied()
            .collect();
        proxy.bind(&ports).await?;
        Ok(proxy)
    }

    async fn bind(&self, ports: &[u16]) -> Result<(), ApplyError> {
        let mut listeners = self.listeners.lock().await;
        for port in ports {
            if listeners.contains_key(port) {
                continue;
            }
            let handle = listener::start(*port, self.shared.clone())
                .await
                .map_err(|source| ApplyError::Bind {
                    port: *port,
                    source,
                })?;
            listeners.insert(*port, handle);
        }
        Ok(())
    }

    /// Applies a new config: builds it, binds new ports, swaps it in, then closes ports no
    /// longer used. On error nothing changes.
    pub async fn update(&self, config: GatewayConfig) -> Result<(), ApplyError> {
        let state = State::build(config, &self.shared.upstreams)?;
        let ports: Vec<u16> = state.listeners.keys().copied().collect();
        self.bind(&ports).await?;
        self.shared.state.store(Arc::new(state));
        self.listeners
            .lock()
            .await
            .retain(|port, _| ports.contains(port));
        Ok(())
    }

    /// The config in force.
    pub fn config(&self) -> Arc<GatewayConfig> {
        self.shared.state.load().config.clone()
    }

    /// The ports bound now.
    pub async fn bound_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .listeners
            .lock()
            .await
            .values()
            .map(|l| l.port)
            .collect();
        ports.sort_unstable();
        ports
    }
}
