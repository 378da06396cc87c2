//! The proxy's side of the discovery stream: it subscribes to every resource type, applies
//! each response resource by resource ([`crate::Proxy::apply`]), and answers with an ACK
//! or, when the proxy rejected a resource of that type, a NACK with the reasons (the
//! rejected resources keep their previous version). While the control plane is away the
//! proxy serves its last good config and reconnects with jittered exponential backoff;
//! on reconnecting it receives the whole state again and applies only what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use meshwork_resources::ProxyConfig;
use meshwork_xds::proto::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshwork_xds::proto::{Node as Hello, Status};
use meshwork_xds::{DiscoveryRequest, DiscoveryResponse, TypeUrl, decode};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::Proxy;
use crate::admin::AdminState;

/// The largest response a proxy accepts.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Where the control plane is and who this proxy is.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` of `meshwork control`.
    pub control_plane: String,
    /// What the proxy says of itself on connecting.
    pub hello: Hello,
    /// Where its workload certificate comes from; none for a proxy without mTLS.
    pub identity: Option<crate::identity::IdentityOptions>,
    /// Speak to the control plane over mTLS (its TLS port, istiod's 15012), proving the
    /// identity with the workload certificate (Istio's `controlPlaneAuthPolicy:
    /// MUTUAL_TLS`): the identity is the token's, and the stream waits for the
    /// certificate. Otherwise plaintext (15010), where the control plane sends no keys.
    pub mutual_tls: bool,
}

/// The secrets the proxy makes itself (its workload certificate and the mesh roots),
/// added to every config it applies, and the lock that keeps applies in order.
#[derive(Default)]
pub struct Local {
    secrets: std::sync::Mutex<BTreeMap<String, meshwork_resources::Secret>>,
    apply: tokio::sync::Mutex<()>,
    /// The config as the control plane last sent it, to apply again when the
    /// certificate arrives or is renewed.
    desired: std::sync::Mutex<ProxyConfig>,
    /// The proxy waits for a workload certificate (it has identity options).
    wants_certificate: std::sync::atomic::AtomicBool,
    /// It has one.
    has_certificate: std::sync::atomic::AtomicBool,
    /// Every type has arrived at least once.
    complete: std::sync::atomic::AtomicBool,
}

impl Local {
    fn add_to(&self, config: &mut ProxyConfig) {
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        for (name, s) in secrets.iter() {
            if name == crate::identity::ROOT_SECRET {
                // The control plane's roots win: they carry a root rotation to every proxy
                // at once; the ones that came with the certificate are the fallback.
                config
                    .secrets
                    .entry(name.clone())
                    .or_insert_with(|| s.clone());
            } else {
                config.secrets.insert(name.clone(), s.clone());
            }
        }
    }

    /// Whether a rejection only waits for the proxy's own certificate (as Envoy warms a
    /// listener until its SDS secret arrives): not a NACK.
    fn warming(&self, reason: &str) -> bool {
        use std::sync::atomic::Ordering;
        self.wants_certificate.load(Ordering::SeqCst)
            && !self.has_certificate.load(Ordering::SeqCst)
            && [
                crate::identity::WORKLOAD_SECRET,
                crate::identity::ROOT_SECRET,
            ]
            .iter()
            .any(|name| reason.contains(&format!("secret {name} is not available")))
    }

    /// Ready: every type has arrived, the certificate too when one is wanted, and every
    /// listener is bound.
    async fn ready(&self, proxy: &Proxy) -> bool {
        use std::sync::atomic::Ordering;
        self.complete.load(Ordering::SeqCst)
            && (!self.wants_certificate.load(Ordering::SeqCst)
                || self.has_certificate.load(Ordering::SeqCst))
            && proxy.unbound().await.is_empty()
    }

    /// The TLS settings that prove the proxy's identity to the control plane: its workload
    /// certificate, and the roots it came with; none before it has one.
    fn control_plane_tls(&self, server_name: &str) -> Option<tonic::transport::ClientTlsConfig> {
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        let inline = |p: &Option<meshwork_resources::secret::Pem>| match p {
            Some(meshwork_resources::secret::Pem::Inline(text)) => Some(text.clone()),
            _ => None,
        };
        let cert = secrets.get(crate::identity::WORKLOAD_SECRET)?;
        let roots = inline(&secrets.get(crate::identity::ROOT_SECRET)?.trusted_ca)?;
        let identity = tonic::transport::Identity::from_pem(
            inline(&cert.certificate_chain)?,
            inline(&cert.private_key)?,
        );
        Some(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(roots))
                .identity(identity)
                .domain_name(server_name.to_string()),
        )
    }

    /// Applies what the control plane sent, with the local secrets; it is also what a new
    /// certificate applies again.
    async fn apply(&self, proxy: &Proxy, config: ProxyConfig) -> crate::ApplyReport {
        let _order = self.apply.lock().await;
        *self.desired.lock().unwrap_or_else(|e| e.into_inner()) = config.clone();
        let mut config = config;
        self.add_to(&mut config);
        proxy.apply(config).await
    }

    /// Applies the last config the control plane sent again (a new certificate arrived).
    /// Read under the apply lock, so it never rolls back a newer config.
    async fn reapply(&self, proxy: &Proxy) -> crate::ApplyReport {
        let _order = self.apply.lock().await;
        let mut config = self
            .desired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.add_to(&mut config);
        proxy.apply(config).await
    }
}

/// Exponential backoff with jitter: each wait is drawn between half and all of a ceiling
/// that doubles from `base` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    /// Starts at `base`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            ceiling: base,
        }
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Back to `base`, after a connection that lasted.
    pub fn reset(&mut self) {
        self.ceiling = self.base;
    }
}

/// What the proxy has received, across connections.
#[derive(Default)]
struct Received {
    /// The resources as the control plane last sent them.
    desired: ProxyConfig,
    /// Per type, the version last applied cleanly.
    versions: BTreeMap<TypeUrl, String>,
    /// The types received at least once.
    seen: BTreeSet<TypeUrl>,
    /// The resources of a type whose last response (the one without `more`) has not
    /// arrived yet.
    partial: Option<(String, Vec<meshwork_xds::Resource>)>,
    /// The proxy's own secrets.
    local: Arc<Local>,
    /// Told the proxy's SPIFFE id when the node arrives.
    who: Option<tokio::sync::watch::Sender<Option<String>>>,
}

impl Received {
    /// Takes one response: a part of a type's resources is kept until the last part,
    /// which is applied and answered (ACK or NACK).
    async fn take(
        &mut self,
        proxy: &Proxy,
        mut response: DiscoveryResponse,
    ) -> Option<DiscoveryRequest> {
        let earlier = match self.partial.take() {
            Some((t, parts)) if t == response.type_url => parts,
            _ => Vec::new(),
        };
        if response.more {
            let mut parts = earlier;
            parts.append(&mut response.resources);
            self.partial = Some((response.type_url, parts));
            return None;
        }
        if !earlier.is_empty() {
            let mut all = earlier;
            all.append(&mut response.resources);
            response.resources = all;
        }
        Some(self.apply(proxy, response).await)
    }

    /// Applies one type's resources; returns the ACK or NACK.
    async fn apply(&mut self, proxy: &Proxy, response: DiscoveryResponse) -> DiscoveryRequest {
        let answer = |version: String, error: Option<String>| DiscoveryRequest {
            version_info: version,
            node: None,
            resource_names: Vec::new(),
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: error.map(|message| Status { code: 3, message }),
        };
        let Some(t) = TypeUrl::parse(&response.type_url) else {
            return answer(String::new(), Some("unknown resource type".into()));
        };
        let previous = self.versions.get(&t).cloned().unwrap_or_default();
        let mut candidate = self.desired.clone();
        if let Err(e) = decode(&mut candidate, t, &response.resources) {
            warn!("rejected {}: {e}", t.short());
            return answer(previous, Some(e.to_string()));
        }
        if t == TypeUrl::Node
            && let Some(who) = &self.who
        {
            let n = &candidate.node;
            let sa = if n.service_account.is_empty() {
                "default"
            } else {
                n.service_account.as_str()
            };
            let id = crate::identity::spiffe_id(&n.trust_domain, &n.namespace, sa);
            who.send_if_modified(|current| {
                let changed = current.as_deref() != Some(id.as_str());
                if changed {
                    *current = Some(id.clone());
                }
                changed
            });
        }
        if t == TypeUrl::Node && candidate.node.workload.is_none() {
            warn!(
                proxy = %candidate.node.id,
                "the control plane found no Pod or WorkloadEntry with this proxy's address in its namespace"
            );
        }
        let report = self.local.apply(proxy, candidate.clone()).await;
        self.desired = candidate;
        self.seen.insert(t);
        if self.seen.len() == TypeUrl::ALL.len() {
            self.local
                .complete
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let mut problems: Vec<String> = report
            .rejected
            .iter()
            .filter(|r| Some(r.kind) == t.resource_type())
            .filter(|r| !self.local.warming(&r.reason))
            .map(|r| r.to_string())
            .collect();
        if t == TypeUrl::Listener {
            problems.extend(report.bind_errors.iter().map(|e| e.to_string()));
        }
        if problems.is_empty() {
            self.versions.insert(t, response.version_info.clone());
            answer(response.version_info.clone(), None)
        } else {
            let reason = problems.join("; ");
            warn!(
                "NACK {} version {}: {reason}",
                t.short(),
                response.version_info
            );
            answer(previous, Some(reason))
        }
    }
}

/// Connects to the control plane and applies what it streams, for as long as the process
/// runs. `admin` shows the config in force and turns ready once every type has arrived
/// and every listener is bound. With identity options, the workload certificate is
/// fetched once the control plane has said who the proxy is, and renewed.
pub async fn run(proxy: Arc<Proxy>, admin: Arc<AdminState>, opts: ClientOptions) {
    let mut received = Received::default();
    let (who, told) = tokio::sync::watch::channel(None::<String>);
    if let (true, Some(identity)) = (opts.mutual_tls, &opts.identity) {
        // The control plane is told who the proxy is by its certificate, so the first
        // one is for the identity its token names.
        match crate::identity::token_spiffe(identity) {
            Ok(id) => {
                who.send_replace(Some(id));
            }
            Err(e) => warn!(
                "{e}: the proxy cannot prove its identity to the control plane, which it reaches over mTLS"
            ),
        }
    }
    if let Some(identity) = opts.identity.clone() {
        received
            .local
            .wants_certificate
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (proxy, local, admin) = (proxy.clone(), received.local.clone(), admin.clone());
        tokio::spawn(renew(proxy, local, admin, identity, told));
    }
    received.who = Some(who);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let started = std::time::Instant::now();
        match stream(&proxy, &admin, &opts, &mut received).await {
            Ok(()) => {
                warn!(control_plane = %opts.control_plane, "the control plane closed the stream")
            }
            Err(e) => warn!(control_plane = %opts.control_plane, "{e}"),
        }
        if started.elapsed() > Duration::from_secs(5) {
            backoff.reset();
        }
        let wait = backoff.next_wait();
        info!(
            ?wait,
            "serving the last good config; reconnecting to the control plane"
        );
        tokio::time::sleep(wait).await;
    }
}

/// Keeps a workload certificate for `spiffe`: fetched, then renewed at half its
/// lifetime; a failure is retried with backoff while the current certificate serves.
async fn renew(
    proxy: Arc<Proxy>,
    local: Arc<Local>,
    admin: Arc<AdminState>,
    opts: crate::identity::IdentityOptions,
    mut told: tokio::sync::watch::Receiver<Option<String>>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        // The identity the control plane gives now: it may change (a WorkloadEntry that
        // appeared, another service account), and then a certificate is asked for at once.
        let Some(spiffe) = told.borrow_and_update().clone() else {
            if told.changed().await.is_err() {
                return;
            }
            continue;
        };
        let wait = match crate::identity::fetch(&opts, &spiffe).await {
            Ok(cert) => {
                backoff.reset();
                info!(identity = %cert.spiffe, expires = ?cert.expires, "workload certificate issued");
                {
                    let mut secrets = local.secrets.lock().unwrap_or_else(|e| e.into_inner());
                    for s in cert.secrets() {
                        secrets.insert(s.name.clone(), s);
                    }
                }
                local
                    .has_certificate
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                // What waited for the certificate applies now.
                let report = local.reapply(&proxy).await;
                for r in &report.rejected {
                    warn!("{r}");
                }
                show(&admin, &proxy);
                admin.set_ready(local.ready(&proxy).await);
                cert.renew_at()
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    .max(Duration::from_secs(1))
            }
            Err(e) => {
                let wait = backoff.next_wait();
                warn!(identity = %spiffe, ?wait, "no workload certificate: {e}");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = told.changed() => if changed.is_err() { return },
        }
    }
}

/// What the admin port shows: the config in force.
fn show(admin: &AdminState, proxy: &Proxy) {
    let config = proxy.config();
    let id = config.node.id.clone();
    admin
        .config_dump
        .store(Arc::new(vec![(id.clone(), config)]));
    admin.stats.store(Arc::new(vec![(id, proxy.shared())]));
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("cannot connect to the control plane: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the discovery stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the discovery stream closed")]
    Closed,
    #[error("mTLS to the control plane needs the proxy's identity (a token)")]
    NoIdentity,
}

async fn stream(
    proxy: &Proxy,
    admin: &AdminState,
    opts: &ClientOptions,
    received: &mut Received,
) -> Result<(), StreamError> {
    let endpoint = match (opts.mutual_tls, &opts.identity) {
        (true, Some(identity)) => {
            // Until the first certificate arrives there is nothing to prove who it is with.
            let tls = loop {
                if let Some(tls) = received.local.control_plane_tls(&identity.ca_name) {
                    break tls;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            tonic::transport::Endpoint::from_shared(format!("https://{}", opts.control_plane))?
                .tls_config(tls)?
        }
        (true, None) => return Err(StreamError::NoIdentity),
        (false, _) => {
            tonic::transport::Endpoint::from_shared(format!("http://{}", opts.control_plane))?
        }
    }
    .connect_timeout(Duration::from_secs(2))
    .tcp_nodelay(true);
    // A proxy of a large mesh receives route tables of many megabytes.
    let mut client = AggregatedDiscoveryServiceClient::new(endpoint.connect().await?)
        .max_decoding_message_size(MAX_MESSAGE);
    // Parts of a response the last stream did not finish are not carried over.
    received.partial = None;
    let (tx, rx) = mpsc::channel(32);
    for (i, t) in TypeUrl::ALL.into_iter().enumerate() {
        let subscribe = DiscoveryRequest {
            version_info: received.versions.get(&t).cloned().unwrap_or_default(),
            node: (i == 0).then(|| opts.hello.clone()),
            resource_names: Vec::new(),
            type_url: t.as_str().to_string(),
            response_nonce: String::new(),
            error_detail: None,
        };
        tx.send(subscribe).await.map_err(|_| StreamError::Closed)?;
    }
    let mut inbound = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    info!(control_plane = %opts.control_plane, "connected to the control plane");
    while let Some(response) = inbound.message().await? {
        let Some(answer) = received.take(proxy, response).await else {
            continue;
        };
        show(admin, proxy);
        admin.set_ready(received.local.ready(proxy).await);
        tx.send(answer).await.map_err(|_| StreamError::Closed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(names: &[&str]) -> Vec<meshwork_xds::Resource> {
        let mut config = ProxyConfig::default();
        for n in names {
            config.endpoints.insert(
                n.to_string(),
                meshwork_resources::EndpointSet {
                    cluster: n.to_string(),
                    endpoints: Vec::new(),
                },
            );
        }
        meshwork_xds::encode(&config)
            .remove(&TypeUrl::EndpointSet)
            .unwrap()
    }

    fn response(
        resources: Vec<meshwork_xds::Resource>,
        nonce: &str,
        more: bool,
    ) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: "7".into(),
            resources,
            type_url: TypeUrl::EndpointSet.as_str().into(),
            nonce: nonce.into(),
            control_plane: "test".into(),
            more,
        }
    }

    #[tokio::test]
    async fn a_type_sent_in_parts_is_applied_once_whole_and_answered_once() {
        let proxy = Proxy::new();
        let mut received = Received::default();
        let first = received
            .take(&proxy, response(endpoints(&["a", "b"]), "1", true))
            .await;
        assert!(first.is_none(), "a part is not answered");
        assert!(proxy.config().endpoints.is_empty(), "nor applied");
        let ack = received
            .take(&proxy, response(endpoints(&["c"]), "2", false))
            .await
            .expect("the last part is answered");
        assert_eq!(ack.response_nonce, "2");
        assert_eq!(ack.version_info, "7");
        assert!(ack.error_detail.is_none());
        let names: Vec<String> = proxy.config().endpoints.keys().cloned().collect();
        assert_eq!(names, ["a", "b", "c"]);
        // A later whole response replaces the set.
        received
            .take(&proxy, response(endpoints(&["d"]), "3", false))
            .await
            .expect("answered");
        let names: Vec<String> = proxy.config().endpoints.keys().cloned().collect();
        assert_eq!(names, ["d"]);
    }

    #[tokio::test]
    async fn a_body_that_does_not_decode_is_nacked_with_the_version_in_force() {
        let proxy = Proxy::new();
        let mut received = Received::default();
        received
            .take(&proxy, response(endpoints(&["a"]), "1", false))
            .await
            .expect("answered");
        let bad = vec![meshwork_xds::Resource {
            name: "x".into(),
            body: b"{broken".to_vec().into(),
            encoding: String::new(),
        }];
        let mut r = response(bad, "2", false);
        r.version_info = "8".into();
        let nack = received.take(&proxy, r).await.expect("answered");
        assert_eq!(nack.version_info, "7", "the version still in force");
        assert!(nack.error_detail.is_some());
        let names: Vec<String> = proxy.config().endpoints.keys().cloned().collect();
        assert_eq!(names, ["a"], "the last good set keeps serving");
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        for (i, w) in waits.iter().enumerate() {
            let ceiling = Duration::from_millis(100 * (1u64 << i)).min(Duration::from_secs(1));
            assert!(*w >= ceiling / 2 && *w <= ceiling, "wait {i}: {w:?}");
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}
