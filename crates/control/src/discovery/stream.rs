//! One proxy's stream: find its workload, compile its config, send every type whose
//! resources changed (in dependency order), and record its ACKs and NACKs. It compiles
//! again whenever a new config version is published.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use meshwork_model::proxy::{MeshSnapshot, ProxyClass, compile_own, find_workload, resolve_node};
use meshwork_model::resources::node::Interception;
use meshwork_model::resources::secret::{MESH_ROOTS, Pem, Secret};
use meshwork_model::resources::{Node, Role};
use meshwork_xds::proto::Node as Hello;
use meshwork_xds::{DiscoveryRequest, DiscoveryResponse, TypeUrl};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Shared;
use super::classes::Encoded;
use super::status::Entry;

/// The node a proxy's hello describes, completed by its workload: labels and service
/// account from the Pod or WorkloadEntry with its address in its namespace. The id is
/// `NAME.NAMESPACE`, the name being the proxy's own, else its workload's, else its address.
pub fn node_of(hello: &Hello, snapshot: &MeshSnapshot) -> (Node, Option<String>) {
    let ip = hello.ips.first().cloned().unwrap_or_default();
    let found = find_workload(&snapshot.objects, &hello.namespace, &ip);
    let name = [
        hello.name.as_str(),
        found.as_ref().map_or("", |w| w.name.as_str()),
        ip.as_str(),
    ]
    .into_iter()
    .find(|n| !n.is_empty())
    .unwrap_or("proxy")
    .to_string();
    let id = if hello.id.is_empty() {
        format!("{name}.{}", hello.namespace)
    } else {
        hello.id.clone()
    };
    let node = Node {
        id,
        role: if hello.role == "gateway" {
            Role::Gateway
        } else {
            Role::Sidecar
        },
        namespace: hello.namespace.clone(),
        workload_name: hello.name.clone(),
        labels: hello.labels.clone().into_iter().collect(),
        service_account: String::new(),
        locality: Some(hello.locality.clone()).filter(|l| !l.is_empty()),
        ips: hello.ips.clone(),
        workload: None,
        trust_domain: snapshot.mesh.trust_domain.clone(),
        termination_drain_ms: meshwork_api::duration::parse_duration(
            &snapshot.mesh.default_config.termination_drain_duration,
        )
        .ok()
        .map(|d| d.as_millis() as u64),
        interception: (hello.interception_mode == "REDIRECT").then(|| Interception {
            outbound_port: u16::try_from(hello.outbound_capture_port)
                .ok()
                .filter(|p| *p > 0)
                .unwrap_or(15001),
            inbound_port: u16::try_from(hello.inbound_capture_port)
                .ok()
                .filter(|p| *p > 0)
                .unwrap_or(15006),
        }),
    };
    let mut node = resolve_node(node, found.as_ref());
    node.workload = found.as_ref().map(|w| w.source.clone());
    (node, found.map(|w| w.source))
}

/// The most resource bytes in one response.
const CHUNK: usize = 64 * 1024;

/// Serves one proxy until its stream ends.
///
/// `authenticated` is the identity the proxy's certificate proves, on the TLS port: the
/// stream ends when its workload runs as another service account. Without it (the
/// plaintext port) no secret with a private key is sent, only the mesh roots.
pub async fn serve(
    hello: Hello,
    peer: Option<SocketAddr>,
    authenticated: Option<crate::ca::Identity>,
    mut inbound: tonic::Streaming<DiscoveryRequest>,
    out: mpsc::Sender<Result<DiscoveryResponse, tonic::Status>>,
    shared: Arc<Shared>,
) {
    let mut snapshots = shared.snapshots.clone();
    let mut roots = shared.roots.clone();
    let first = snapshots.borrow_and_update().clone();
    let Some((node, workload)) =
        authenticated_node(&hello, &first.snapshot, &authenticated, &out).await
    else {
        return;
    };
    let key = shared.proxies.register(Entry {
        id: node.id.clone(),
        namespace: node.namespace.clone(),
        role: hello.role.clone(),
        admin_address: hello.admin_address.clone(),
        version: hello.version.clone(),
        workload: workload.clone(),
        types: BTreeMap::new(),
        node: node.clone(),
    });
    info!(proxy = %node.id, peer = ?peer, workload = ?workload, "proxy connected");
    if workload.is_none() {
        warn!(
            proxy = %node.id,
            "no Pod or WorkloadEntry has address {:?} in namespace {}; the proxy is served with the labels it gave",
            hello.ips.first().map(String::as_str).unwrap_or(""),
            node.namespace
        );
    }
    // What was last sent of each type, as a digest: a connection keeps no copy of its
    // resources.
    let mut sent: BTreeMap<TypeUrl, u64> = BTreeMap::new();
    let mut nonce: u64 = 0;
    let mut warned: Vec<String> = Vec::new();
    let mut warned_keys = false;
    'push: loop {
        let published = snapshots.borrow_and_update().clone();
        let Some((node, workload)) =
            authenticated_node(&hello, &published.snapshot, &authenticated, &out).await
        else {
            break 'push;
        };
        shared.proxies.update(key, |e| {
            e.workload = workload;
            e.id = node.id.clone();
            e.node = node.clone();
        });
        let class = shared.classes.get(&published, &ProxyClass::of(&node)).await;
        let (mut own, warnings) = compile_own(&published.snapshot, &node);
        // The mesh roots come with every proxy's secrets, so that a new root reaches all
        // of them at once.
        let pem = roots.borrow_and_update().to_string();
        own.secrets.insert(
            MESH_ROOTS.to_string(),
            Secret {
                name: MESH_ROOTS.to_string(),
                certificate_chain: None,
                private_key: None,
                trusted_ca: Some(Pem::Inline(pem)),
            },
        );
        if warnings != warned {
            for w in &warnings {
                warn!(proxy = %node.id, "{w}");
            }
            warned = warnings;
        }
        let own = Encoded::of(&own);
        let mut pushed_now = false;
        for t in TypeUrl::ALL {
            let (mut resources, digest) = Encoded::merged(&class, &own, t);
            let clashes = Encoded::clashes(&class, &own, t);
            if !clashes.is_empty() {
                warn!(
                    proxy = %node.id,
                    "{} {} of the proxy's ingress and of its egress share a name; the ingress one is kept (give the egress listener another bind)",
                    t.short(),
                    clashes.join(", ")
                );
                super::classes::keep_last_of_each_name(&mut resources);
            }
            if authenticated.is_none() && t == TypeUrl::Secret {
                let withheld = withhold_keys(&mut resources);
                if !withheld.is_empty() && !warned_keys {
                    warn!(
                        proxy = %node.id,
                        "secrets {} are sent only over the control plane's TLS port, to a proxy that proves its identity there",
                        withheld.join(", ")
                    );
                    warned_keys = true;
                }
            }
            if sent.get(&t) == Some(&digest) {
                continue;
            }
            // Large types go as several responses, so that no message (and no buffer
            // a stream keeps) grows with the size of the config.
            let parts = meshwork_xds::chunks(resources, CHUNK);
            let last = parts.len() - 1;
            for (k, part) in parts.into_iter().enumerate() {
                nonce += 1;
                let response = DiscoveryResponse {
                    version_info: published.version.clone(),
                    resources: part,
                    type_url: t.as_str().to_string(),
                    nonce: nonce.to_string(),
                    control_plane: shared.id.clone(),
                    more: k < last,
                };
                debug!(proxy = %node.id, type_url = %t, version = %published.version, count = response.resources.len(), "push");
                if out.send(Ok(response)).await.is_err() {
                    break 'push;
                }
                shared.metrics.pushed(t);
            }
            shared
                .proxies
                .sent(key, t, &published.version, &nonce.to_string());
            sent.insert(t, digest);
            pushed_now = true;
        }
        if pushed_now {
            shared.metrics.converged(published.at.elapsed());
        }
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(request)) => answered(&shared, key, &node.id, &request),
                    Ok(None) => break 'push,
                    Err(e) => {
                        debug!(proxy = %node.id, "stream error: {e}");
                        break 'push;
                    }
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break 'push;
                    }
                    continue 'push;
                }
                changed = roots.changed() => {
                    if changed.is_err() {
                        break 'push;
                    }
                    continue 'push;
                }
            }
        }
    }
    shared.proxies.remove(key);
    info!(proxy = %hello.id, "proxy disconnected");
}

/// The node of `hello`, authenticated; a refusal is logged and ends the stream with its
/// reason.
async fn authenticated_node(
    hello: &Hello,
    snapshot: &MeshSnapshot,
    identity: &Option<crate::ca::Identity>,
    out: &mpsc::Sender<Result<DiscoveryResponse, tonic::Status>>,
) -> Option<(Node, Option<String>)> {
    let (node, workload) = node_of(hello, snapshot);
    match authenticate(node, identity.as_ref()) {
        Ok(node) => Some((node, workload)),
        Err(reason) => {
            warn!("{reason}; the stream ends");
            let _ = out
                .send(Err(tonic::Status::permission_denied(reason)))
                .await;
            None
        }
    }
}

/// The node with the identity the proxy's certificate proves: its workload must run as
/// that service account; a proxy with no workload is given it.
fn authenticate(mut node: Node, identity: Option<&crate::ca::Identity>) -> Result<Node, String> {
    let Some(identity) = identity else {
        return Ok(node);
    };
    if node.workload.is_none() {
        node.service_account = identity.service_account.clone();
        return Ok(node);
    }
    let runs_as = if node.service_account.is_empty() {
        "default"
    } else {
        node.service_account.as_str()
    };
    if runs_as != identity.service_account {
        return Err(format!(
            "discovery refused: proxy {} has a certificate for service account {}, its workload {} runs as {runs_as}",
            node.id,
            identity.service_account,
            node.workload.as_deref().unwrap_or("")
        ));
    }
    Ok(node)
}

/// Leaves only the mesh roots among secrets; returns the names of the others.
fn withhold_keys(resources: &mut Vec<meshwork_xds::Resource>) -> Vec<String> {
    let mut withheld = Vec::new();
    resources.retain(|r| {
        let keep = r.name == MESH_ROOTS;
        if !keep {
            withheld.push(r.name.clone());
        }
        keep
    });
    withheld
}

/// Records an ACK or NACK. A request without a nonce subscribes to a type, which the
/// first push already covers.
fn answered(shared: &Shared, key: u64, proxy: &str, request: &DiscoveryRequest) {
    if request.response_nonce.is_empty() {
        return;
    }
    let Some(t) = TypeUrl::parse(&request.type_url) else {
        warn!(proxy, type_url = %request.type_url, "unknown type in a request");
        return;
    };
    let error = request.error_detail.as_ref().map(|e| e.message.as_str());
    if let Some(reason) = error {
        shared.metrics.rejected(t);
        warn!(proxy, type_url = %t, nonce = %request.response_nonce, "NACK: {reason}");
    }
    shared.proxies.answered(
        key,
        t,
        &request.response_nonce,
        &request.version_info,
        error,
    );
}
