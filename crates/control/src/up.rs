//! `meshwork up`: the control plane and its gateway proxies in one process. It loads a
//! config directory, compiles one gateway proxy per distinct Gateway selector, serves the
//! admin and health endpoints, and applies every change to the directory: a change with
//! any error is rejected (logged as `meshwork validate` prints it) and the last good config
//! keeps serving.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use meshwork_api::load::LoadedObject;
use meshwork_api::resource::Object;
use meshwork_model::compile_gateways;
use meshwork_model::resources::ProxyConfig;
use meshwork_proxy::Proxy;
use meshwork_proxy::admin::{self, AdminState};
use tracing::{error, info, warn};

use crate::source::{DirSource, OpenError};
use crate::watch::DirWatcher;

/// How `meshwork up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The config directory.
    pub dir: PathBuf,
    /// A mesh config file.
    pub mesh: Option<PathBuf>,
    /// Admin address (`127.0.0.1:15000`).
    pub admin: SocketAddr,
    /// Health address (`127.0.0.1:15021`).
    pub health: SocketAddr,
    /// The gateways' `region/zone/subzone`, for locality load balancing.
    pub locality: Option<String>,
    /// Limits and timeouts of downstream connections.
    pub settings: meshwork_proxy::settings::ProxySettings,
    /// Where Istio's standard metrics are served (`/stats/prometheus`), if anywhere
    /// (Istio serves them on 15020 and 15090).
    pub metrics: Vec<SocketAddr>,
}

/// `meshwork up` could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The first config could not be used.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// An admin or health port could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::BindError),
    /// SIGTERM cannot be caught.
    #[error("cannot handle SIGTERM: {0}")]
    Signal(std::io::Error),
    /// Watching the directory failed.
    #[error("cannot watch {0}")]
    Watch(#[from] notify::Error),
}

/// The running gateways of `meshwork up`.
pub struct Gateways {
    proxies: BTreeMap<String, Proxy>,
    admin: Arc<AdminState>,
    locality: Option<String>,
    settings: meshwork_proxy::settings::ProxySettings,
    metrics: Option<Arc<meshwork_proxy::metrics::Metrics>>,
}

impl Gateways {
    /// Compiles and applies a loaded config, resource by resource. Returns false when a
    /// port could not be bound (the gateway is then not ready).
    async fn apply(
        &mut self,
        loaded: &[LoadedObject],
        mesh: &meshwork_api::mesh::MeshConfig,
    ) -> bool {
        let objects: Vec<Object> = loaded.iter().map(|o| o.object.clone()).collect();
        let objects = &objects;
        let compiled = compile_gateways(objects, mesh);
        for w in &compiled.warnings {
            warn!("{w}");
        }
        let mut ok = true;
        let mut seen = Vec::new();
        for mut config in compiled.gateways {
            config.node.locality = self.locality.clone();
            let name = config.node.id.clone();
            seen.push(name.clone());
            let (settings, metrics) = (&self.settings, &self.metrics);
            let proxy = self
                .proxies
                .entry(name.clone())
                .or_insert_with(|| Proxy::with_metrics(settings.clone(), metrics.clone()));
            let report = proxy.apply(config).await;
            for r in &report.rejected {
                match secret_origin(&r.name, loaded) {
                    Some(origin) => {
                        error!(gateway = %name, "{r} (the Secret is read from {origin})")
                    }
                    None => error!(gateway = %name, "{r}"),
                }
            }
            for e in &report.bind_errors {
                error!(gateway = %name, "{e}");
                ok = false;
            }
        }
        self.proxies.retain(|name, _| seen.contains(name));
        let dump = self
            .proxies
            .iter()
            .map(|(name, p)| (name.clone(), p.config()))
            .collect();
        self.admin.config_dump.store(Arc::new(dump));
        let stats = self
            .proxies
            .iter()
            .map(|(name, p)| (name.clone(), p.shared()))
            .collect();
        self.admin.stats.store(Arc::new(stats));
        ok
    }
}

/// Where the Secret behind secret resource `name` (`kubernetes://ns/name`, or its
/// `-cacert` companion) was read: `file:line`.
fn secret_origin(name: &str, loaded: &[LoadedObject]) -> Option<String> {
    let (ns, secret) = name.strip_prefix("kubernetes://")?.split_once('/')?;
    let candidates = [secret, secret.strip_suffix("-cacert").unwrap_or(secret)];
    loaded.iter().find_map(|o| {
        let r = o.object.object_ref();
        (r.kind.name() == "Secret" && r.namespace == ns && candidates.contains(&r.name.as_str()))
            .then(|| format!("{}:{}", o.origin.file.display(), o.origin.line))
    })
}

/// The mesh config's `defaultConfig.terminationDrainDuration` (5 s by default).
fn drain_duration(mesh: &meshwork_api::mesh::MeshConfig) -> std::time::Duration {
    meshwork_api::duration::parse_duration(&mesh.default_config.termination_drain_duration)
        .unwrap_or(std::time::Duration::from_secs(5))
}

impl Gateways {
    /// SIGTERM: not ready any more, then every gateway drains (stops accepting, lets
    /// requests in flight finish) for at most `deadline`.
    async fn drain(&self, deadline: std::time::Duration) {
        self.admin.set_ready(false);
        info!(?deadline, "draining");
        // Every gateway stops accepting at once; then each is waited for, within one deadline.
        for p in self.proxies.values() {
            p.start_drain();
        }
        let until = std::time::Instant::now() + deadline;
        let mut left = 0;
        for p in self.proxies.values() {
            left += p
                .drain(until.saturating_duration_since(std::time::Instant::now()))
                .await;
        }
        info!(open = left, "drained; exiting");
    }
}

/// Files outside the directory that config reads (certificates), to watch as well.
fn referenced_files(configs: &[Arc<ProxyConfig>]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = configs
        .iter()
        .flat_map(|c| c.secrets.values())
        .flat_map(|s| s.files())
        .map(PathBuf::from)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Runs until the process is stopped.
pub async fn run(opts: UpOptions) -> Result<(), UpError> {
    let admin = Arc::new(AdminState::default());
    for addr in [opts.admin, opts.health] {
        let listener = crate::bind(addr).await?;
        tokio::spawn(admin::serve(listener, admin.clone()));
    }
    let metrics = if opts.metrics.is_empty() {
        None
    } else {
        let metrics = Arc::new(meshwork_proxy::metrics::Metrics::default());
        for addr in &opts.metrics {
            let listener = crate::bind(*addr).await?;
            tokio::spawn(admin::serve_metrics(listener, metrics.clone()));
        }
        Some(metrics)
    };
    let mut source = DirSource::open(opts.dir.clone(), opts.mesh.clone())?;
    let mesh = source.mesh().clone();
    let mut gateways = Gateways {
        proxies: BTreeMap::new(),
        admin: admin.clone(),
        locality: opts.locality.clone(),
        settings: opts.settings.clone(),
        metrics,
    };
    let ready = gateways.apply(source.loaded(), &mesh).await;
    admin.set_ready(ready);
    for (name, p) in &gateways.proxies {
        info!(gateway = %name, ports = ?p.bound_ports().await, "gateway ready");
    }
    let source_paths = source.paths();
    let watch_list = |gateways: &Gateways| {
        let mut watched = source_paths.clone();
        let configs: Vec<_> = gateways.proxies.values().map(|p| p.config()).collect();
        watched.extend(referenced_files(&configs));
        watched
    };
    let mut watched = watch_list(&gateways);
    let (mut watcher, mut changes) = DirWatcher::start(&watched)?;
    let mut drain_for = drain_duration(&mesh);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(UpError::Signal)?;
    loop {
        tokio::select! {
            change = changes.recv() => if change.is_none() { break },
            _ = terminate.recv() => {
                gateways.drain(drain_for).await;
                break;
            }
        }
        info!("configuration changed; reloading");
        match source.reload() {
            Ok(()) => {
                drain_for = drain_duration(source.mesh());
                let mesh = source.mesh().clone();
                let ok = gateways.apply(source.loaded(), &mesh).await;
                admin.set_ready(ok);
                if ok {
                    info!("configuration applied");
                }
                // Certificate files named by the new config are watched from now on.
                let now = watch_list(&gateways);
                if now != watched {
                    match DirWatcher::start(&now) {
                        Ok((w, c)) => {
                            (watcher, changes, watched) = (w, c, now);
                        }
                        Err(e) => warn!("cannot watch the files the configuration names: {e}"),
                    }
                }
            }
            Err(e) => error!(
                "cannot read the configuration: {e}; the last good configuration keeps serving"
            ),
        }
    }
    drop(watcher);
    Ok(())
}
