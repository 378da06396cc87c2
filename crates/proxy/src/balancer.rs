//! The "pick endpoint" phase: load balancing (round robin, least request, random, ring hash,
//! Maglev), outlier detection (consecutive errors eject an endpoint for a growing time, up
//! to a share of the cluster, with Envoy's panic mode below a healthy threshold), and the
//! circuit breakers' counters.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use meshwork_resources::Endpoint;
use meshwork_resources::cluster::{ClusterPolicy, LbPolicy, OutlierPolicy};

/// One clock for every balancer, so that ejection times survive a rebuild.
fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A stable 64-bit hash (SipHash with fixed keys), the same in every process.
pub fn hash64(data: impl Hash) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// One unit of a counter in use (a request, retry or connection in flight), given back
/// when dropped.
pub struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    /// Takes a unit if fewer than `limit` are in use.
    pub fn try_acquire(counter: &'a AtomicU32, limit: u32) -> Option<InFlight<'a>> {
        if counter.fetch_add(1, Ordering::Relaxed) >= limit {
            counter.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(InFlight(counter))
    }

    /// Takes a unit regardless of any limit.
    pub fn acquire(counter: &'a AtomicU32) -> InFlight<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A unit of a counter held by something that outlives a borrow of it (a response body
/// that streams after its request's handler returned), given back when dropped.
pub struct Held<T: Send + Sync + 'static> {
    owner: Arc<T>,
    counter: fn(&T) -> &AtomicU32,
}

impl<T: Send + Sync + 'static> Held<T> {
    /// Takes a unit of `owner`'s `counter` if fewer than `limit` are in use.
    pub fn try_acquire(owner: &Arc<T>, counter: fn(&T) -> &AtomicU32, limit: u32) -> Option<Self> {
        let c = counter(owner);
        if c.fetch_add(1, Ordering::Relaxed) >= limit {
            c.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Held {
            owner: owner.clone(),
            counter,
        })
    }

    /// Takes a unit regardless of any limit.
    pub fn acquire(owner: &Arc<T>, counter: fn(&T) -> &AtomicU32) -> Self {
        counter(owner).fetch_add(1, Ordering::Relaxed);
        Held {
            owner: owner.clone(),
            counter,
        }
    }
}

impl<T: Send + Sync + 'static> Drop for Held<T> {
    fn drop(&mut self) {
        (self.counter)(&self.owner).fetch_sub(1, Ordering::Relaxed);
    }
}

/// What became of a request to an endpoint, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// Connecting failed, or the connection broke or timed out (a local-origin failure).
    LocalFailure,
}

/// Per-endpoint state: load, health and ejections. Kept across config updates for as long
/// as the endpoint stays in its cluster.
#[derive(Debug)]
pub struct EndpointState {
    /// The address.
    pub endpoint: Endpoint,
    /// `ip:port`, made once: where requests go and what the access log names.
    pub authority: Arc<str>,
    /// Requests in flight.
    pub active: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
    /// When the endpoint joined (for slow start); `None` when it was there from the start.
    joined: Option<Instant>,
}

impl EndpointState {
    fn new(endpoint: Endpoint, joined: Option<Instant>) -> EndpointState {
        EndpointState {
            authority: endpoint.authority().into(),
            endpoint,
            active: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            joined,
        }
    }

    /// How many times outlier detection has ejected the endpoint.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }
}

/// A cluster's circuit-breaker counters, kept across config updates for as long as the
/// cluster exists, so that limits hold while old and new config serve side by side.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Requests in flight to the cluster.
    pub active_requests: AtomicU32,
    /// Retries in flight to the cluster.
    pub active_retries: AtomicU32,
    /// TCP connections open to the cluster.
    pub active_connections: AtomicU32,
    /// Requests sent to the cluster, for `maxRequestsPerConnection`.
    pub requests_sent: AtomicU64,
}

/// A cluster's endpoints with their balancing and health state.
#[derive(Debug)]
pub struct Balancer {
    /// Endpoints in config order.
    pub endpoints: Vec<Arc<EndpointState>>,
    policy: ClusterPolicy,
    cursor: Arc<AtomicUsize>,
    ring: Vec<(u64, usize)>,
    maglev: Vec<usize>,
    /// Circuit-breaker counters.
    pub counters: Arc<ClusterCounters>,
    /// The proxy's own locality, for locality load balancing.
    local: Option<String>,
    /// The proxy's labels, for `failoverPriority`.
    proxy_labels: std::collections::BTreeMap<String, String>,
}

impl Balancer {
    /// Builds a balancer whose endpoints were all there from the start.
    pub fn new(endpoints: &[Endpoint], policy: &ClusterPolicy) -> Balancer {
        Self::with_join_times(endpoints, policy, &vec![None; endpoints.len()])
    }

    /// Builds the balancer; `joined[i]` is when endpoint `i` joined the cluster, for slow
    /// start (`warmup`), or `None` when it was there from the start.
    pub fn with_join_times(
        endpoints: &[Endpoint],
        policy: &ClusterPolicy,
        joined: &[Option<Instant>],
    ) -> Balancer {
        let states = endpoints
            .iter()
            .zip(joined)
            .map(|(e, j)| Arc::new(EndpointState::new(e.clone(), *j)))
            .collect();
        Self::from_states(states, policy, Arc::default(), Arc::default())
    }

    /// Builds the balancer for a new version of a cluster. Endpoints still present keep
    /// their state (load, health, ejections) and the counters carry over from `previous`;
    /// endpoints that are new join now, unless `first` says this is the proxy's first
    /// config (then they start warm).
    pub fn update(
        endpoints: &[Endpoint],
        policy: &ClusterPolicy,
        previous: Option<&Balancer>,
        first: bool,
    ) -> Balancer {
        let now = Instant::now();
        let states = endpoints
            .iter()
            .map(|e| {
                previous
                    .and_then(|p| p.endpoints.iter().find(|s| s.endpoint == *e))
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(EndpointState::new(e.clone(), (!first).then_some(now)))
                    })
            })
            .collect();
        let (counters, cursor) = match previous {
            Some(p) => (p.counters.clone(), p.cursor.clone()),
            None => (Arc::default(), Arc::default()),
        };
        Self::from_states(states, policy, counters, cursor)
    }

    fn from_states(
        endpoints: Vec<Arc<EndpointState>>,
        policy: &ClusterPolicy,
        counters: Arc<ClusterCounters>,
        cursor: Arc<AtomicUsize>,
    ) -> Balancer {
        let names: Vec<String> = endpoints.iter().map(|e| e.endpoint.authority()).collect();
        let ring = match &policy.lb {
            LbPolicy::RingHash { min_ring_size, .. } if !names.is_empty() => {
                build_ring(&names, *min_ring_size)
            }
            _ => Vec::new(),
        };
        let maglev = match &policy.lb {
            LbPolicy::Maglev { table_size, .. } if !names.is_empty() => {
                build_maglev(&names, *table_size)
            }
            _ => Vec::new(),
        };
        Balancer {
            endpoints,
            policy: policy.clone(),
            cursor,
            ring,
            maglev,
            counters,
            local: None,
            proxy_labels: Default::default(),
        }
    }

    /// Sets the proxy's labels (the gateway's), for `failoverPriority`.
    pub fn with_labels(mut self, labels: std::collections::BTreeMap<String, String>) -> Balancer {
        self.proxy_labels = labels;
        self
    }

    /// Sets the proxy's locality (`region/zone/subzone`).
    pub fn with_locality(mut self, local: Option<String>) -> Balancer {
        self.local = local;
        self
    }

    /// Narrows the candidates by locality: the weighted `distribute` choice, or the nearest
    /// endpoints (same zone, then region, then the `failover` region, then any).
    fn by_locality(&self, candidates: Vec<usize>) -> Vec<usize> {
        let Some(lp) = &self.policy.locality else {
            return candidates;
        };
        if !lp.failover_priority.is_empty() {
            let rank = |i: usize| {
                priority_rank(
                    &lp.failover_priority,
                    &self.proxy_labels,
                    self.local.as_deref(),
                    &self.endpoints[i].endpoint,
                )
            };
            let Some(best) = candidates.iter().map(|i| rank(*i)).min() else {
                return candidates;
            };
            return candidates
                .into_iter()
                .filter(|i| rank(*i) == best)
                .collect();
        }
        let Some(local) = &self.local else {
            return candidates;
        };
        let loc = |i: usize| self.endpoints[i].endpoint.locality.as_deref();
        if !lp.distribute.is_empty() {
            let Some((_, targets)) = lp
                .distribute
                .iter()
                .find(|(from, _)| locality_matches(from, local))
            else {
                return candidates;
            };
            let options: Vec<(u32, Vec<usize>)> = targets
                .iter()
                .map(|(to, w)| {
                    let eps: Vec<usize> = candidates
                        .iter()
                        .copied()
                        .filter(|i| loc(*i).is_some_and(|l| locality_matches(to, l)))
                        .collect();
                    (*w, eps)
                })
                .filter(|(w, eps)| *w > 0 && !eps.is_empty())
                .collect();
            let total: u32 = options.iter().map(|(w, _)| w).sum();
            if total == 0 {
                return candidates;
            }
            let mut roll = fastrand::u32(0..total);
            for (w, eps) in options {
                if roll < w {
                    return eps;
                }
                roll -= w;
            }
            return candidates;
        }
        let rank = |i: usize| closeness(local, loc(i), &lp.failover);
        let Some(best) = candidates.iter().map(|i| rank(*i)).min() else {
            return candidates;
        };
        candidates
            .into_iter()
            .filter(|i| rank(*i) == best)
            .collect()
    }

    /// Envoy's slow-start weight of endpoint `i`, in (0, 1]: `max(minimum, (t / window) ^
    /// (1 / aggression))` while it is in its warm-up window.
    pub fn warmup_weight(&self, i: usize) -> f64 {
        let (Some((window_ms, min_percent, aggression)), Some(joined)) =
            (self.policy.warmup, self.endpoints[i].joined)
        else {
            return 1.0;
        };
        let t = joined.elapsed().as_millis() as f64 / window_ms.max(1) as f64;
        if t >= 1.0 {
            return 1.0;
        }
        t.powf(1.0 / aggression.max(0.01))
            .max(min_percent / 100.0)
            .min(1.0)
    }

    /// The cluster's policy.
    pub fn policy(&self) -> &ClusterPolicy {
        &self.policy
    }

    fn is_ejected(&self, i: usize, now: u64) -> bool {
        self.endpoints[i].ejected_until_ms.load(Ordering::Relaxed) > now
    }

    /// Chooses an endpoint. `hash` is the request's consistent-hash value, when the policy
    /// hashes. Ejected endpoints are skipped unless too few are healthy (panic mode).
    pub fn pick(&self, hash: Option<u64>) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let now = now_ms();
        // The common case, without allocating: nothing ejected, no locality or slow start.
        let plain = self.policy.locality.is_none()
            && self.policy.warmup.is_none()
            && (self.policy.outlier.is_none() || !(0..n).any(|i| self.is_ejected(i, now)));
        if plain {
            match &self.policy.lb {
                LbPolicy::RoundRobin => {
                    return Some(self.cursor.fetch_add(1, Ordering::Relaxed) % n);
                }
                LbPolicy::Random => return Some(fastrand::usize(..n)),
                LbPolicy::LeastRequest => {
                    let (a, b) = (fastrand::usize(..n), fastrand::usize(..n));
                    let load = |i: usize| self.endpoints[i].active.load(Ordering::Relaxed);
                    return Some(if load(b) < load(a) { b } else { a });
                }
                _ => {}
            }
        }
        let healthy: Vec<usize> = (0..n).filter(|i| !self.is_ejected(*i, now)).collect();
        let min_health = self
            .policy
            .outlier
            .as_ref()
            .map_or(0, |o| o.min_health_percent as usize);
        let panic = healthy.is_empty() || healthy.len() * 100 < min_health * n;
        let candidates: Vec<usize> = if panic { (0..n).collect() } else { healthy };
        let candidates = self.by_locality(candidates);
        let usable = |i: usize| panic || !self.is_ejected(i, now);
        let next_usable = |start: usize| (0..n).map(|k| (start + k) % n).find(|i| usable(*i));
        match (&self.policy.lb, hash) {
            (LbPolicy::RingHash { .. }, Some(h)) if !self.ring.is_empty() => {
                let at = self.ring.partition_point(|(p, _)| *p < h) % self.ring.len();
                next_usable(self.ring[at].1)
            }
            (LbPolicy::Maglev { .. }, Some(h)) if !self.maglev.is_empty() => {
                next_usable(self.maglev[(h % self.maglev.len() as u64) as usize])
            }
            (LbPolicy::Random, _) => Some(self.warmed(&candidates, || {
                candidates[fastrand::usize(..candidates.len())]
            })),
            (LbPolicy::LeastRequest, _) => {
                let a = candidates[fastrand::usize(..candidates.len())];
                let b = candidates[fastrand::usize(..candidates.len())];
                let load = |i: usize| self.endpoints[i].active.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
            _ => Some(self.warmed(&candidates, || {
                let k = self.cursor.fetch_add(1, Ordering::Relaxed);
                candidates[k % candidates.len()]
            })),
        }
    }

    /// Draws with `draw` until an endpoint passes its slow-start weight (a few tries at most).
    fn warmed(&self, candidates: &[usize], mut draw: impl FnMut() -> usize) -> usize {
        let mut pick = draw();
        if self.policy.warmup.is_none() {
            return pick;
        }
        for _ in 0..candidates.len() * 4 {
            if fastrand::f64() < self.warmup_weight(pick) {
                break;
            }
            pick = draw();
        }
        pick
    }

    /// Records the outcome of a request to endpoint `i`; may eject it.
    pub fn report(&self, i: usize, outcome: Outcome) {
        let Some(od) = &self.policy.outlier else {
            return;
        };
        let e = &self.endpoints[i];
        let bump = |c: &AtomicU32| c.fetch_add(1, Ordering::Relaxed) + 1;
        let reached = match outcome {
            Outcome::Status(s) if s >= 500 => {
                let five = bump(&e.consecutive_5xx);
                let gw = if (502..=504).contains(&s) {
                    bump(&e.consecutive_gateway)
                } else {
                    e.consecutive_gateway.store(0, Ordering::Relaxed);
                    0
                };
                od.consecutive_5xx.is_some_and(|n| five >= n)
                    || od.consecutive_gateway.is_some_and(|n| gw >= n)
            }
            Outcome::Status(_) => {
                for c in [
                    &e.consecutive_5xx,
                    &e.consecutive_gateway,
                    &e.consecutive_local,
                ] {
                    c.store(0, Ordering::Relaxed);
                }
                false
            }
            Outcome::LocalFailure if od.split_local_origin => {
                let local = bump(&e.consecutive_local);
                od.consecutive_local_origin.is_some_and(|n| local >= n)
            }
            // Not split: a local failure counts as a 503 from the endpoint.
            Outcome::LocalFailure => {
                let five = bump(&e.consecutive_5xx);
                let gw = bump(&e.consecutive_gateway);
                od.consecutive_5xx.is_some_and(|n| five >= n)
                    || od.consecutive_gateway.is_some_and(|n| gw >= n)
            }
        };
        if reached {
            self.eject(i, od);
        }
    }

    fn eject(&self, i: usize, od: &OutlierPolicy) {
        let now = now_ms();
        let n = self.endpoints.len();
        let ejected = (0..n).filter(|j| self.is_ejected(*j, now)).count();
        // Envoy always allows one ejection, whatever the percentage.
        let allowed = (n * od.max_ejection_percent as usize / 100).max(1);
        if ejected >= allowed || self.is_ejected(i, now) {
            return;
        }
        let e = &self.endpoints[i];
        let times = e.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        e.ejected_until_ms.store(
            now + od.base_ejection_ms * u64::from(times),
            Ordering::Relaxed,
        );
        for c in [
            &e.consecutive_5xx,
            &e.consecutive_gateway,
            &e.consecutive_local,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        tracing::info!(endpoint = %e.endpoint.authority(), ejections = times, "endpoint ejected by outlier detection");
    }

    /// Whether endpoint `i` is ejected now.
    pub fn ejected(&self, i: usize) -> bool {
        self.is_ejected(i, now_ms())
    }
}

/// `us-east/zone1/*` against `us-east/zone1/sub2`: each segment equal, `*` matching the rest.
pub fn locality_matches(pattern: &str, locality: &str) -> bool {
    let mut have = locality.split('/');
    for want in pattern.split('/') {
        if want == "*" {
            return true;
        }
        if have.next() != Some(want) {
            return false;
        }
    }
    true
}

/// The value of label `key` for the proxy or an endpoint: its labels, or for the topology
/// labels, its locality.
fn label_value<'a>(
    key: &str,
    labels: &'a std::collections::BTreeMap<String, String>,
    locality: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(v) = labels.get(key) {
        return Some(v);
    }
    let segment = match key {
        "topology.kubernetes.io/region" => 0,
        "topology.kubernetes.io/zone" => 1,
        "topology.istio.io/subzone" => 2,
        _ => return None,
    };
    locality?.split('/').nth(segment)
}

/// `failoverPriority`: the fewer leading labels an endpoint shares with the proxy, the later
/// it is used (0 = shares them all).
fn priority_rank(
    keys: &[String],
    proxy: &std::collections::BTreeMap<String, String>,
    local: Option<&str>,
    ep: &Endpoint,
) -> usize {
    let shared = keys
        .iter()
        .take_while(|k| {
            let mine = label_value(k, proxy, local);
            mine.is_some() && mine == label_value(k, &ep.labels, ep.locality.as_deref())
        })
        .count();
    keys.len() - shared
}

/// How far an endpoint is from the proxy: 0 same subzone, 1 same zone, 2 same region,
/// 3 the region the proxy's region fails over to, 4 anywhere else.
fn closeness(local: &str, endpoint: Option<&str>, failover: &[(String, String)]) -> u8 {
    let Some(ep) = endpoint else { return 4 };
    let l: Vec<&str> = local.split('/').collect();
    let e: Vec<&str> = ep.split('/').collect();
    let same = |k: usize| (0..k).all(|j| l.get(j).is_some() && l.get(j) == e.get(j));
    if same(3) {
        0
    } else if same(2) {
        1
    } else if same(1) {
        2
    } else if failover
        .iter()
        .any(|(from, to)| Some(&from.as_str()) == l.first() && Some(&to.as_str()) == e.first())
    {
        3
    } else {
        4
    }
}

fn build_ring(names: &[String], min_size: u64) -> Vec<(u64, usize)> {
    let size = min_size.max(names.len() as u64);
    let per = size.div_ceil(names.len() as u64);
    let mut ring: Vec<(u64, usize)> = names
        .iter()
        .enumerate()
        .flat_map(|(i, name)| (0..per).map(move |k| (hash64(format!("{name}_{k}")), i)))
        .collect();
    ring.sort_unstable();
    ring
}

/// Maglev's lookup table: each endpoint fills slots in its own permutation order.
fn build_maglev(names: &[String], table_size: u64) -> Vec<usize> {
    let m = table_size as usize;
    let perms: Vec<(usize, usize)> = names
        .iter()
        .map(|n| {
            let offset = (hash64((n, 0u8)) % table_size) as usize;
            let skip = (hash64((n, 1u8)) % (table_size - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut table = vec![usize::MAX; m];
    let mut next = vec![0usize; names.len()];
    let mut filled = 0;
    while filled < m {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m;
            while table[c] != usize::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            table[c] = i;
            next[i] += 1;
            filled += 1;
            if filled == m {
                break;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests;
