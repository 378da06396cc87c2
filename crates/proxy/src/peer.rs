//! Istio's metadata exchange over HTTP, so that both sides of a mesh request fill in the
//! other's workload labels. A sidecar sending to a mesh workload over mTLS adds
//! `x-envoy-peer-metadata-id` and `x-envoy-peer-metadata` (its node metadata as a
//! base64 `google.protobuf.Struct`: NAME, NAMESPACE, WORKLOAD_NAME, CLUSTER_ID, LABELS);
//! the receiving sidecar reads them for its `source_*` labels and answers with its own,
//! which the sender reads for its `destination_*` labels. Both headers are removed
//! before anything reaches an app, and they are believed only on mTLS connections, whose
//! peer the mesh CA vouches for.
//!
//! TCP has no headers: over mTLS with ALPN `istio-peer-exchange`, each side first writes
//! Istio's exchange header (the magic `0x3D230467`, a length, and a
//! `google.protobuf.Any` holding a `Struct` whose `x-envoy-peer-metadata` is the node
//! metadata and `x-envoy-peer-metadata-id` the node id), the client first, then the
//! server once it has read the client's; the connection's own bytes follow.

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

/// The ALPN under which mesh TCP connections start with the exchange.
pub const PEER_EXCHANGE_ALPN: &str = "istio-peer-exchange";

/// The first four bytes of an exchange header.
const MAGIC: u32 = 0x3D23_0467;

/// The largest metadata a peer may send over TCP.
const MAX_TCP_METADATA: usize = 64 * 1024;

/// How long a peer has to send its exchange header.
const EXCHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

const STRUCT_TYPE: &str = "type.googleapis.com/google.protobuf.Struct";

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
    /// The TCP exchange header.
    tcp_header: Bytes,
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
        let node_metadata = Struct { fields };
        let metadata = node_metadata.encode_to_vec();
        let ip = node.ips.first().map_or("", String::as_str);
        let id = format!(
            "sidecar~{ip}~{}.{}~{}.svc.cluster.local",
            node.workload_name, node.namespace, node.namespace
        );
        // Over TCP, Istio's exchange wraps the metadata and the id in one Struct.
        let exchanged = Struct {
            fields: [
                (
                    METADATA_HEADER.as_str().to_string(),
                    Value {
                        kind: Some(Kind::StructValue(node_metadata)),
                    },
                ),
                (ID_HEADER.as_str().to_string(), text(&id)),
            ]
            .into_iter()
            .collect(),
        };
        let any = prost_types::Any {
            type_url: STRUCT_TYPE.into(),
            value: exchanged.encode_to_vec(),
        }
        .encode_to_vec();
        let mut tcp_header = Vec::with_capacity(8 + any.len());
        tcp_header.extend_from_slice(&MAGIC.to_be_bytes());
        tcp_header.extend_from_slice(&(any.len() as u32).to_be_bytes());
        tcp_header.extend_from_slice(&any);
        let encoded = base64::engine::general_purpose::STANDARD.encode(metadata);
        Exchange {
            trust_domain: node.trust_domain.clone(),
            id: HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("sidecar")),
            metadata: HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static("")),
            tcp_header: tcp_header.into(),
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
        // Most messages carry neither: one pass over the names present finds that.
        if !headers
            .keys()
            .any(|k| *k == ID_HEADER || *k == METADATA_HEADER)
        {
            return None;
        }
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

impl Exchange {
    /// The client's side of the TCP exchange on a connection whose ALPN is
    /// [`PEER_EXCHANGE_ALPN`]: sends this proxy's header, then reads the server's.
    pub async fn tcp_client<S>(&self, stream: &mut S) -> std::io::Result<Option<Arc<Workload>>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        stream.write_all(&self.tcp_header).await?;
        stream.flush().await?;
        self.read_tcp_header(stream).await
    }

    /// The server's side: reads the client's header, then sends this proxy's.
    pub async fn tcp_server<S>(&self, stream: &mut S) -> std::io::Result<Option<Arc<Workload>>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        let peer = self.read_tcp_header(stream).await?;
        stream.write_all(&self.tcp_header).await?;
        stream.flush().await?;
        Ok(peer)
    }

    /// Reads one exchange header: the peer's workload, `None` when its metadata is not a
    /// workload's; an error when the bytes are not an exchange header.
    async fn read_tcp_header<S>(&self, stream: &mut S) -> std::io::Result<Option<Arc<Workload>>>
    where
        S: tokio::io::AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
        let reading = async {
            let mut head = [0u8; 8];
            stream.read_exact(&mut head).await?;
            let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            if magic != MAGIC {
                return Err(bad("not a metadata exchange header"));
            }
            let length = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
            if length > MAX_TCP_METADATA {
                return Err(bad("the peer's metadata is too large"));
            }
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body).await?;
            Ok(body)
        };
        let body = tokio::time::timeout(EXCHANGE_TIMEOUT, reading)
            .await
            .map_err(|_| bad("the peer sent no metadata exchange header"))??;
        let any = prost_types::Any::decode(body.as_slice())
            .map_err(|_| bad("the peer's metadata is not a protobuf Any"))?;
        if any.type_url != STRUCT_TYPE {
            return Ok(None);
        }
        let Ok(exchanged) = Struct::decode(any.value.as_slice()) else {
            return Ok(None);
        };
        let meta = match exchanged.fields.get(METADATA_HEADER.as_str()) {
            Some(Value {
                kind: Some(Kind::StructValue(meta)),
            }) => meta.clone(),
            _ => return Ok(None),
        };
        Ok(workload(meta, &self.trust_domain).map(Arc::new))
    }
}

/// The workload a metadata header describes, in the mesh of `trust_domain`; `None` when
/// it is not one.
pub fn decode(value: &[u8], trust_domain: &str) -> Option<Workload> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    workload(Struct::decode(bytes.as_slice()).ok()?, trust_domain)
}

/// The workload of node metadata.
fn workload(meta: Struct, trust_domain: &str) -> Option<Workload> {
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

    #[tokio::test]
    async fn the_tcp_exchange_tells_each_side_the_other() {
        let client = Arc::new(Exchange::new(&node()));
        let server = Arc::new(Exchange::new(&Node {
            workload_name: "ratings-v1".into(),
            namespace: "default".into(),
            trust_domain: "cluster.local".into(),
            service_account: "bookinfo-ratings".into(),
            ..Node::default()
        }));
        let (mut a, mut b) = tokio::io::duplex(4096);
        let serving = {
            let server = server.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let peer = server.tcp_server(&mut b).await.unwrap();
                b.write_all(b"after").await.unwrap();
                peer
            })
        };
        let seen_by_client = client.tcp_client(&mut a).await.unwrap().unwrap();
        assert_eq!(seen_by_client.name, "ratings-v1");
        let seen_by_server = serving.await.unwrap().unwrap();
        assert_eq!(seen_by_server.name, "reviews-v2");
        assert_eq!(
            seen_by_server.principal,
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        );
        // The connection's own bytes come after the headers, untouched.
        let mut rest = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut a, &mut rest)
            .await
            .unwrap();
        assert_eq!(&rest, b"after");
    }

    #[tokio::test]
    async fn bytes_that_are_not_an_exchange_header_are_an_error() {
        let server = Exchange::new(&node());
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            &[0x3D, 0x23, 0x04, 0x67, 0xff, 0xff, 0xff, 0xff][..],
            &[0x3D, 0x23, 0x04, 0x67, 0, 0, 0, 3, 0xff, 0xff, 0xff][..],
        ] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            tokio::io::AsyncWriteExt::write_all(&mut a, bad)
                .await
                .unwrap();
            assert!(server.tcp_server(&mut b).await.is_err(), "{bad:?}");
        }
        // A short header from a peer that goes away.
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, &[0x3D, 0x23])
            .await
            .unwrap();
        drop(a);
        assert!(server.tcp_server(&mut b).await.is_err());
    }
}
