//! The proxies connected to this control plane and, per resource type, what was last sent
//! and what each proxy answered: what `meshwork proxy-status` prints.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use meshwork_xds::TypeUrl;
use meshwork_xds::proto::{ProxyStatus, TypeStatus};

/// One resource type of one proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeState {
    /// The version and nonce last sent.
    pub sent_version: String,
    /// The nonce last sent.
    pub sent_nonce: String,
    /// The version the proxy last acknowledged.
    pub acked_version: String,
    /// Whether the last response sent was acknowledged.
    pub acked: bool,
    /// The proxy's reason, when it rejected the last response sent.
    pub nack: String,
}

/// One connected proxy.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// What `proxy-status` prints for it.
    pub id: String,
    /// Its namespace.
    pub namespace: String,
    /// `gateway` or `sidecar`.
    pub role: String,
    /// Where it serves `/config_dump`.
    pub admin_address: String,
    /// Its build.
    pub version: String,
    /// The workload found behind it (`workloadentry/NS/NAME`), if any.
    pub workload: Option<String>,
    /// Per type.
    pub types: BTreeMap<TypeUrl, TypeState>,
    /// The node as the control plane resolved it.
    pub node: meshwork_model::resources::Node,
}

/// Every connected proxy, by connection.
#[derive(Debug, Default)]
pub struct Proxies {
    next: AtomicU64,
    entries: Mutex<BTreeMap<u64, Entry>>,
}

impl Proxies {
    /// Adds a connection; returns its key.
    pub fn register(&self, entry: Entry) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, entry);
        key
    }

    /// Removes a connection that ended.
    pub fn remove(&self, key: u64) {
        self.lock().remove(&key);
    }

    /// Changes a connection's entry.
    pub fn update(&self, key: u64, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.lock().get_mut(&key) {
            f(e);
        }
    }

    /// A response of type `t` was sent.
    pub fn sent(&self, key: u64, t: TypeUrl, version: &str, nonce: &str) {
        self.update(key, |e| {
            let s = e.types.entry(t).or_default();
            s.sent_version = version.to_string();
            s.sent_nonce = nonce.to_string();
            s.acked = false;
            s.nack.clear();
        });
    }

    /// The proxy answered the response `nonce` of type `t`: an ACK of `version`, or a NACK
    /// with `error`. Answers to an older response than the last sent are ignored, as
    /// xDS servers do.
    pub fn answered(&self, key: u64, t: TypeUrl, nonce: &str, version: &str, error: Option<&str>) {
        self.update(key, |e| {
            let Some(s) = e.types.get_mut(&t) else { return };
            if s.sent_nonce != nonce {
                return;
            }
            match error {
                Some(reason) => {
                    s.acked = false;
                    s.nack = reason.to_string();
                }
                None => {
                    s.acked = true;
                    s.nack.clear();
                    s.acked_version = version.to_string();
                }
            }
        });
    }

    /// How many proxies are connected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, ordered by id.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self.lock().values().cloned().collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// What `proxy-status` reads.
    pub fn report(&self, control_plane: &str) -> Vec<ProxyStatus> {
        self.entries()
            .into_iter()
            .map(|e| ProxyStatus {
                id: e.id,
                namespace: e.namespace,
                role: e.role,
                admin_address: e.admin_address,
                workload: e.workload.clone().unwrap_or_default(),
                workload_warning: if e.workload.is_none() {
                    "no Pod or WorkloadEntry has this proxy's address in its namespace".into()
                } else {
                    String::new()
                },
                version: e.version,
                control_plane: control_plane.to_string(),
                types: e
                    .types
                    .iter()
                    .map(|(t, s)| TypeStatus {
                        type_url: t.as_str().to_string(),
                        sent_version: s.sent_version.clone(),
                        sent_nonce: s.sent_nonce.clone(),
                        acked_version: s.acked_version.clone(),
                        acked: s.acked,
                        nack: s.nack.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_of_the_last_response_syncs_a_stale_one_is_ignored_and_a_nack_is_kept() {
        let p = Proxies::default();
        let k = p.register(Entry {
            id: "a.default".into(),
            ..Entry::default()
        });
        p.sent(k, TypeUrl::Listener, "1", "n1");
        p.sent(k, TypeUrl::Listener, "2", "n2");
        // The ACK of the first response comes after the second was sent: still stale.
        p.answered(k, TypeUrl::Listener, "n1", "1", None);
        let s = &p.entries()[0].types[&TypeUrl::Listener];
        assert!(!s.acked);
        p.answered(k, TypeUrl::Listener, "n2", "1", Some("cannot bind"));
        let s = &p.entries()[0].types[&TypeUrl::Listener];
        assert_eq!((s.acked, s.nack.as_str()), (false, "cannot bind"));
        p.sent(k, TypeUrl::Listener, "3", "n3");
        p.answered(k, TypeUrl::Listener, "n3", "3", None);
        let s = &p.entries()[0].types[&TypeUrl::Listener];
        assert_eq!(
            (s.acked, s.acked_version.as_str(), s.nack.as_str()),
            (true, "3", "")
        );
        p.remove(k);
        assert!(p.is_empty());
    }
}
