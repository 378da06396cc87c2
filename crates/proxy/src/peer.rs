//! Istio's metadata exchange over HTTP, so that both sides of a mesh request fill in the
//! other's workload labels. A sidecar sending to a mesh workload over mTLS adds
//! `x-envoy-peer-metadata-id` and `x-envoy-peer-metadata` (its node metadata as a
//! base64 `google.protobuf.Struct`: NAME, NAMESPACE, WORKLOAD_NAME, CLUSTER_ID, LABELS);
//! the receiving sidecar reads them for its `source_*` labels and answers with its own,
//! which the sender reads for its `destination_*` labels. Both headers are removed
//! before anything reaches an app, and they are believed only on mTLS connections, whose
//! peer the mesh CA vouches for.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use meshwork_resources::Node;
use prost::Message;
use prost_types::value::Kind;
use prost_types::{Struct, Value};

/// The peer's node id.
pub const ID_HEADER: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");
/// The peer's node metadata.
pub const METADATA_HEADER: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");

/// How many peers' metadata a proxy keeps decoded.
const MAX_PEERS: usize = 1024;

/// The other side's workload, as its metadata says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    /// Its `CLUSTER_ID`.
    pub cluster: String,
    /// Its SPIFFE id, from its namespace and service account in this mesh's trust
    /// domain (the metadata is believed only from a peer that proved an identity with
    /// mTLS); empty when either is not known.
    pub principal: String,
}

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// This proxy's side of the exchange: its headers, made once, and the peers it has met.
#[derive(Debug)]
pub struct Exchange {
    trust_domain: String,
    id: HeaderValue,
    metadata: HeaderValue,
    peers: RwLock<HashMap<Bytes, Arc<Workload>>>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new(&Node::default())
    }
}

impl Exchange {
    /// The exchange of the proxy `node`.
    pub fn new(node: &Node) -> Exchange {
        let labels = Struct {
            fields: node
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect(),
        };
        let mut fields: std::collections::BTreeMap<String, Value> = [
            ("NAME", node.workload_name.as_str()),
            ("NAMESPACE", node.namespace.as_str()),
            ("WORKLOAD_NAME", node.workload_name.as_str()),
            ("CLUSTER_ID", "Kubernetes"),
            ("SERVICE_ACCOUNT", node.service_account.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), text(v)))
        .collect();
        fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        );
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(Struct { fields }.encode_to_vec());
        let ip = node.ips.first().map_or("", String::as_str);
        let id = format!(
            "sidecar~{ip}~{}.{}~{}.svc.cluster.local",
            node.workload_name, node.namespace, node.namespace
        );
        Exchange {
            trust_domain: node.trust_domain.clone(),
            id: HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("sidecar")),
            metadata: HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static("")),
            peers: RwLock::new(HashMap::new()),
        }
    }

    /// Adds this proxy's metadata to `headers`.
    pub fn add(&self, headers: &mut HeaderMap) {
        headers.insert(ID_HEADER, self.id.clone());
        headers.insert(METADATA_HEADER, self.metadata.clone());
    }

    /// Removes the peer's metadata from `headers`; reads it when `trusted` (the peer
    /// proved its identity with mTLS). Decoded once per distinct peer.
    pub fn take(&self, headers: &mut HeaderMap, trusted: bool) -> Option<Arc<Workload>> {
        headers.remove(ID_HEADER);
        let value = headers.remove(METADATA_HEADER)?;
        if !trusted {
            return None;
        }
        let raw: &[u8] = value.as_bytes();
        if let Some(w) = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(raw)
        {
            return Some(w.clone());
        }
        let workload = Arc::new(decode(raw, &self.trust_domain)?);
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        if peers.len() < MAX_PEERS {
            peers.insert(Bytes::copy_from_slice(raw), workload.clone());
        }
        Some(workload)
    }
}

/// The workload a metadata header describes, in the mesh of `trust_domain`; `None` when
/// it is not one.
pub fn decode(value: &[u8], trust_domain: &str) -> Option<Workload> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let meta = Struct::decode(bytes.as_slice()).ok()?;
    let string = |s: &Struct, k: &str| match s.fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => Some(v.clone()),
        _ => None,
    };
    let labels = match meta.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(l)) => l.clone(),
        _ => Struct::default(),
    };
    let label = |keys: &[&str]| keys.iter().find_map(|k| string(&labels, k));
    let name = string(&meta, "WORKLOAD_NAME").or_else(|| string(&meta, "NAME"))?;
    let namespace = string(&meta, "NAMESPACE")?;
    let principal = match string(&meta, "SERVICE_ACCOUNT") {
        Some(sa) if !sa.is_empty() && !trust_domain.is_empty() => {
            format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}")
        }
        _ => String::new(),
    };
    Some(Workload {
        cluster: string(&meta, "CLUSTER_ID").unwrap_or_default(),
        principal,
        app: label(&["app", "app.kubernetes.io/name"]).unwrap_or_default(),
        version: label(&["version", "app.kubernetes.io/version"]).unwrap_or_default(),
        canonical_service: label(&[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ])
        .unwrap_or_else(|| name.clone()),
        canonical_revision: label(&[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ])
        .unwrap_or_else(|| "latest".into()),
        name,
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            workload_name: "reviews-v2".into(),
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
            ips: vec!["10.0.0.4".into()],
            labels: [("app", "reviews"), ("version", "v2")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Node::default()
        }
    }

    #[test]
    fn what_one_side_adds_the_other_reads_and_removes() {
        let mine = Exchange::new(&node());
        let theirs = Exchange::new(&Node {
            trust_domain: "cluster.local".into(),
            ..Node::default()
        });
        let mut headers = HeaderMap::new();
        mine.add(&mut headers);
        assert_eq!(
            headers[ID_HEADER],
            "sidecar~10.0.0.4~reviews-v2.default~default.svc.cluster.local"
        );
        let seen = theirs.take(&mut headers, true).expect("decoded");
        assert!(headers.is_empty(), "removed");
        assert_eq!(
            *seen,
            Workload {
                name: "reviews-v2".into(),
                namespace: "default".into(),
                app: "reviews".into(),
                version: "v2".into(),
                canonical_service: "reviews".into(),
                canonical_revision: "v2".into(),
                cluster: "Kubernetes".into(),
                principal: "spiffe://cluster.local/ns/default/sa/bookinfo-reviews".into(),
            }
        );
        // The second time it comes from the cache: the same workload.
        let mut again = HeaderMap::new();
        mine.add(&mut again);
        assert!(Arc::ptr_eq(&seen, &theirs.take(&mut again, true).unwrap()));
    }

    #[test]
    fn untrusted_or_broken_metadata_is_removed_and_not_believed() {
        let mine = Exchange::new(&node());
        let theirs = Exchange::new(&Node::default());
        let mut headers = HeaderMap::new();
        mine.add(&mut headers);
        assert!(theirs.take(&mut headers, false).is_none());
        assert!(headers.is_empty(), "removed all the same");
        for bad in ["", "!!!", "AAAA", "CgQKAm5v"] {
            let mut h = HeaderMap::new();
            h.insert(METADATA_HEADER, HeaderValue::from_static(bad));
            assert!(theirs.take(&mut h, true).is_none(), "{bad}");
            assert!(h.is_empty());
        }
        // Mutated encodings never panic.
        let good = mine.metadata.as_bytes().to_vec();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..5_000 {
            let mut bytes = good.clone();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng as usize) % bytes.len();
            bytes[i] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
                [(rng >> 40) as usize % 65];
            let _ = decode(&bytes, "cluster.local");
        }
    }
}
