//! Load balancing, outlier detection, slow start and locality, as pure functions.

use super::*;
use meshwork_resources::cluster::{CircuitBreakers, HashKey};

fn eps(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint {
            address: format!("10.0.0.{i}"),
            port: 80,
            ..Default::default()
        })
        .collect()
}

fn policy(lb: LbPolicy, outlier: Option<OutlierPolicy>) -> ClusterPolicy {
    ClusterPolicy {
        lb,
        circuit_breakers: CircuitBreakers::default(),
        outlier,
        locality: None,
        warmup: None,
        retry_budget: None,
    }
}

fn od(n: u32, max_pct: u32) -> OutlierPolicy {
    OutlierPolicy {
        consecutive_5xx: Some(n),
        consecutive_gateway: None,
        consecutive_local_origin: None,
        split_local_origin: false,
        interval_ms: 1000,
        base_ejection_ms: 60_000,
        max_ejection_percent: max_pct,
        min_health_percent: 0,
    }
}

#[test]
fn consistent_hash_keeps_keys_and_moves_about_one_in_n() {
    for lb in [
        LbPolicy::RingHash {
            key: HashKey::SourceIp,
            min_ring_size: 1024,
        },
        LbPolicy::Maglev {
            key: HashKey::SourceIp,
            table_size: 65537,
        },
    ] {
        let four = Balancer::new(&eps(4), &policy(lb.clone(), None));
        let five = Balancer::new(&eps(5), &policy(lb.clone(), None));
        let keys: Vec<u64> = (0..2000).map(|k| hash64(format!("user-{k}"))).collect();
        let mut moved = 0;
        for h in &keys {
            let a = four.pick(Some(*h)).unwrap();
            assert_eq!(four.pick(Some(*h)), Some(a), "a key stays on its endpoint");
            let b = five.pick(Some(*h)).unwrap();
            if four.endpoints[a].endpoint != five.endpoints[b].endpoint {
                moved += 1;
            }
        }
        // Adding a fifth endpoint should move about 1/5 of the keys.
        assert!(
            (250..=600).contains(&moved),
            "{lb:?}: {moved} of 2000 moved"
        );
    }
}

#[test]
fn consecutive_errors_eject_and_ejected_endpoints_get_no_traffic() {
    let b = Balancer::new(&eps(3), &policy(LbPolicy::RoundRobin, Some(od(3, 100))));
    for _ in 0..2 {
        b.report(1, Outcome::Status(503));
    }
    assert!(!b.ejected(1));
    b.report(1, Outcome::Status(200));
    b.report(1, Outcome::Status(503));
    b.report(1, Outcome::LocalFailure);
    assert!(!b.ejected(1), "a success resets the count");
    b.report(1, Outcome::Status(500));
    assert!(b.ejected(1));
    assert!((0..100).all(|_| b.pick(None) != Some(1)));
}

#[test]
fn ejection_is_capped_and_panic_mode_uses_everyone() {
    let b = Balancer::new(&eps(10), &policy(LbPolicy::RoundRobin, Some(od(1, 20))));
    for i in 0..5 {
        b.report(i, Outcome::Status(503));
    }
    let ejected = (0..10).filter(|i| b.ejected(*i)).count();
    assert_eq!(ejected, 2, "maxEjectionPercent 20 of 10 endpoints");
    let mut o = od(1, 100);
    o.min_health_percent = 60;
    let b = Balancer::new(&eps(2), &policy(LbPolicy::RoundRobin, Some(o)));
    b.report(0, Outcome::Status(503));
    assert!(b.ejected(0));
    let picks: Vec<_> = (0..10).filter_map(|_| b.pick(None)).collect();
    assert!(
        picks.contains(&0),
        "below minHealthPercent every endpoint is used"
    );
}

#[test]
fn endpoints_that_join_warm_up() {
    let mut p = policy(LbPolicy::RoundRobin, None);
    p.warmup = Some((60_000, 10.0, 1.0));
    let joined = [None, Some(Instant::now())];
    let b = Balancer::with_join_times(&eps(2), &p, &joined);
    assert_eq!(b.warmup_weight(0), 1.0);
    assert!(
        (b.warmup_weight(1) - 0.1).abs() < 0.01,
        "the minimum percent at first"
    );
    let new = (0..2000).filter(|_| b.pick(None) == Some(1)).count();
    assert!(
        new < 400,
        "the new endpoint gets a small share while warming: {new} of 2000"
    );
    let old = Some(Instant::now() - std::time::Duration::from_secs(30));
    let b = Balancer::with_join_times(&eps(2), &p, &[None, old]);
    assert!(
        (b.warmup_weight(1) - 0.5).abs() < 0.05,
        "half way: half the weight"
    );
}

#[test]
fn localities_prefer_the_nearest_and_distribute_by_weight() {
    use meshwork_resources::cluster::LocalityPolicy;
    let at = |loc: &str, i: u8| Endpoint {
        address: format!("10.0.0.{i}"),
        port: 80,
        locality: Some(loc.into()),
        ..Default::default()
    };
    let endpoints = [
        at("us-west/z1", 0),
        at("us-east/z2", 1),
        at("us-east/z1", 2),
        at("eu/z1", 3),
    ];
    let mut p = policy(LbPolicy::RoundRobin, Some(od(1, 100)));
    p.locality = Some(LocalityPolicy {
        distribute: vec![],
        failover: vec![("us-east".into(), "eu".into())],
        failover_priority: vec![],
    });
    let b = Balancer::new(&endpoints, &p).with_locality(Some("us-east/z1".into()));
    assert!(
        (0..20).all(|_| b.pick(None) == Some(2)),
        "the same zone first"
    );
    b.report(2, Outcome::Status(503));
    assert!(
        (0..20).all(|_| b.pick(None) == Some(1)),
        "then the same region"
    );
    b.report(1, Outcome::Status(503));
    assert!(
        (0..20).all(|_| b.pick(None) == Some(3)),
        "then the failover region"
    );
    p.locality = Some(LocalityPolicy {
        distribute: vec![(
            "us-east/*".into(),
            vec![("us-east/*".into(), 80), ("us-west/*".into(), 20)],
        )],
        failover: vec![],
        failover_priority: vec![],
    });
    let b = Balancer::new(&endpoints, &p).with_locality(Some("us-east/z1".into()));
    let west = (0..2000).filter(|_| b.pick(None) == Some(0)).count();
    assert!(
        (300..=500).contains(&west),
        "20% to us-west: {west} of 2000"
    );
    // failoverPriority: a custom label first, then the region.
    let mut labelled: Vec<Endpoint> = endpoints.to_vec();
    labelled[3].labels.insert("network".into(), "n1".into());
    labelled[0].labels.insert("network".into(), "n1".into());
    p.locality = Some(LocalityPolicy {
        distribute: vec![],
        failover: vec![],
        failover_priority: vec!["network".into(), "topology.kubernetes.io/region".into()],
    });
    let proxy_labels =
        std::collections::BTreeMap::from([("network".to_string(), "n1".to_string())]);
    let b = Balancer::new(&labelled, &p)
        .with_locality(Some("eu/z9".into()))
        .with_labels(proxy_labels);
    assert!(
        (0..20).all(|_| b.pick(None) == Some(3)),
        "same network and region first"
    );
    b.report(3, Outcome::Status(503));
    assert!(
        (0..20).all(|_| b.pick(None) == Some(0)),
        "then the same network"
    );
    assert!(locality_matches("us-east/*", "us-east/z9/s"));
    assert!(!locality_matches("us-east/z1", "us-east/z2"));
}

#[test]
fn least_request_prefers_the_idle_endpoint() {
    let b = Balancer::new(&eps(2), &policy(LbPolicy::LeastRequest, None));
    b.endpoints[0].active.store(10, Ordering::Relaxed);
    // Two random draws; the busy endpoint wins only when both land on it: p = 1/4, so
    // about 1,000 of 4,000 (a standard deviation of 27), where a uniform pick gives 2,000
    // and always picking the idle one gives 0.
    let zero = (0..4000).filter(|_| b.pick(None) == Some(0)).count();
    assert!(
        (850..1150).contains(&zero),
        "the busy endpoint is picked only when both draws land on it: {zero} of 4000"
    );
}
