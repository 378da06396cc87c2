//! Compiled config shared between proxies: the part of a proxy's config that depends only
//! on its class (role, namespace, labels) is compiled and encoded once per config version
//! and class, and handed to every proxy of that class (resource bodies are shared bytes).
//! Each proxy adds its own part: its identity and what depends on its address.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use meshwork_model::proxy::{ProxyClass, compile_class};
use meshwork_xds::{Resource, TypeUrl, encode};
use tokio::sync::OnceCell;
use tracing::warn;

use super::Published;

/// The resources of each type, with a digest of each type's set.
#[derive(Debug, Default)]
pub struct Encoded {
    /// By type: the resources, sorted by name, and their digest.
    pub types: BTreeMap<TypeUrl, (Vec<Resource>, u64)>,
}

/// A digest of a type's resources, to tell whether they changed since the last push.
pub fn digest(resources: &[Resource]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in resources {
        r.name.hash(&mut h);
        r.body.hash(&mut h);
    }
    h.finish()
}

impl Encoded {
    /// Encodes a config.
    pub fn of(config: &meshwork_model::resources::ProxyConfig) -> Encoded {
        Encoded {
            types: encode(config)
                .into_iter()
                .map(|(t, r)| {
                    let d = digest(&r);
                    (t, (r, d))
                })
                .collect(),
        }
    }

    fn get(&self, t: TypeUrl) -> (&[Resource], u64) {
        self.types
            .get(&t)
            .map_or((&[][..], 0), |(r, d)| (r.as_slice(), *d))
    }

    /// One proxy's resources of type `t`: its class's and its own (the node is its own,
    /// the policy its class's), with their digest.
    pub fn merged(class: &Encoded, own: &Encoded, t: TypeUrl) -> (Vec<Resource>, u64) {
        match t {
            TypeUrl::Node => {
                let (r, d) = own.get(t);
                (r.to_vec(), d)
            }
            TypeUrl::Policy => {
                let (r, d) = class.get(t);
                (r.to_vec(), d)
            }
            _ => {
                let (c, cd) = class.get(t);
                let (o, od) = own.get(t);
                let mut all: Vec<Resource> = c.iter().chain(o).cloned().collect();
                // Stable: of two resources with one name, the class's comes first.
                all.sort_by(|a, b| a.name.cmp(&b.name));
                (all, cd.rotate_left(1) ^ od)
            }
        }
    }

    /// The names both parts have for type `t` (an ingress and an egress listener on the
    /// same address and port): the proxy's own resource is the one kept.
    pub fn clashes(class: &Encoded, own: &Encoded, t: TypeUrl) -> Vec<String> {
        if matches!(t, TypeUrl::Node | TypeUrl::Policy) {
            return Vec::new();
        }
        let (c, _) = class.get(t);
        let (o, _) = own.get(t);
        o.iter()
            .filter(|r| c.iter().any(|x| x.name == r.name))
            .map(|r| r.name.clone())
            .collect()
    }
}

/// Keeps the last of each run of resources with one name (the proxy's own, after
/// [`Encoded::merged`]'s stable sort).
pub fn keep_last_of_each_name(resources: &mut Vec<Resource>) {
    let mut out: Vec<Resource> = Vec::with_capacity(resources.len());
    for r in resources.drain(..) {
        if out.last().is_some_and(|l| l.name == r.name) {
            out.pop();
        }
        out.push(r);
    }
    *resources = out;
}

type Cell = Arc<OnceCell<Arc<Encoded>>>;

/// How many classes are kept before those no proxy holds are forgotten.
pub const MAX_IDLE_CLASSES: usize = 1024;

/// The classes compiled for the newest config version.
#[derive(Default)]
pub struct Classes {
    inner: Mutex<(u64, HashMap<ProxyClass, Cell>)>,
}

impl Classes {
    /// The encoded part of `class` for `published`: compiled by the first proxy that asks,
    /// awaited by the others. Asking for a newer version forgets the older ones.
    pub async fn get(&self, published: &Published, class: &ProxyClass) -> Arc<Encoded> {
        let cell: Cell = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if published.number > inner.0 {
                *inner = (published.number, HashMap::new());
            }
            if published.number == inner.0 {
                // Labels are the proxies' to choose: forget the classes no connected proxy
                // holds once there are many.
                if inner.1.len() >= MAX_IDLE_CLASSES && !inner.1.contains_key(class) {
                    inner.1.retain(|_, cell| {
                        cell.get()
                            .is_none_or(|encoded| Arc::strong_count(encoded) > 1)
                    });
                }
                inner.1.entry(class.clone()).or_default().clone()
            } else {
                // An older version than the newest: compiled for this caller alone.
                Cell::default()
            }
        };
        cell.get_or_init(|| async {
            let (config, warnings) = compile_class(&published.snapshot, class);
            for w in &warnings {
                warn!(namespace = %class.namespace, labels = ?class.labels, "{w}");
            }
            Arc::new(Encoded::of(&config))
        })
        .await
        .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_name_both_parts_have_is_reported_and_the_own_resource_kept() {
        let resource = |name: &str, body: &str| Resource {
            name: name.into(),
            body: body.as_bytes().to_vec().into(),
            encoding: String::new(),
        };
        let encoded = |rs: Vec<Resource>| Encoded {
            types: BTreeMap::from([(TypeUrl::Listener, (rs, 0))]),
        };
        let class = encoded(vec![
            resource("127.0.0.1_9080", "egress"),
            resource("a", "x"),
        ]);
        let own = encoded(vec![resource("127.0.0.1_9080", "ingress")]);
        assert_eq!(
            Encoded::clashes(&class, &own, TypeUrl::Listener),
            ["127.0.0.1_9080"]
        );
        let (mut all, _) = Encoded::merged(&class, &own, TypeUrl::Listener);
        keep_last_of_each_name(&mut all);
        let bodies: Vec<(&str, &[u8])> =
            all.iter().map(|r| (r.name.as_str(), &r.body[..])).collect();
        assert_eq!(
            bodies,
            [("127.0.0.1_9080", &b"ingress"[..]), ("a", &b"x"[..])]
        );
    }

    #[tokio::test]
    async fn classes_no_proxy_holds_are_forgotten_once_there_are_many() {
        let classes = Classes::default();
        let published = Published {
            version: "1".into(),
            number: 1,
            snapshot: Default::default(),
            at: std::time::Instant::now(),
        };
        let class = |i: usize| ProxyClass {
            role: meshwork_model::resources::Role::Sidecar,
            namespace: "default".into(),
            labels: BTreeMap::from([("pod".to_string(), i.to_string())]),
            intercepted: false,
        };
        // One class a proxy holds, then many that nobody holds.
        let held = classes.get(&published, &class(0)).await;
        for i in 1..3 * MAX_IDLE_CLASSES {
            drop(classes.get(&published, &class(i)).await);
        }
        let (len, kept) = {
            let inner = classes.inner.lock().unwrap();
            (inner.1.len(), inner.1.contains_key(&class(0)))
        };
        assert!(len <= MAX_IDLE_CLASSES + 1, "{len}");
        assert!(kept, "the held class stays");
        // The same class again is the same compiled part.
        assert!(Arc::ptr_eq(
            &held,
            &classes.get(&published, &class(0)).await
        ));
    }
}
