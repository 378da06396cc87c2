//! DestinationRule traffic policy for one cluster: the top-level policy, overridden field
//! by field by the port's `portLevelSettings`, then by the subset's policy and its own
//! port-level settings, as Istio merges them; then turned into load balancing, circuit
//! breakers and outlier detection with Istio's defaults.

use meshwork_api::duration::parse_duration;
use meshwork_api::generated::networking::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, LocalityLbSetting,
    OutlierDetection, RetryBudget, SimpleLb, TrafficPolicy,
};
use meshwork_resources::cluster::{
    CircuitBreakers, ClusterPolicy, HashKey, LbPolicy, LocalityPolicy, OutlierPolicy,
};

/// The parts of a traffic policy that apply per port.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EffectivePolicy {
    /// Connection limits and timeouts.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Ejection of failing endpoints.
    pub outlier_detection: Option<OutlierDetection>,
    /// Bound on retries relative to traffic.
    pub retry_budget: Option<RetryBudget>,
    /// TLS origination to the endpoints.
    pub tls: Option<ClientTlsSettings>,
}

impl EffectivePolicy {
    /// `over` wins field by field.
    fn overlay(mut self, over: EffectivePolicy) -> EffectivePolicy {
        if over.connection_pool.is_some() {
            self.connection_pool = over.connection_pool;
        }
        if over.load_balancer.is_some() {
            self.load_balancer = over.load_balancer;
        }
        if over.outlier_detection.is_some() {
            self.outlier_detection = over.outlier_detection;
        }
        if over.retry_budget.is_some() {
            self.retry_budget = over.retry_budget;
        }
        if over.tls.is_some() {
            self.tls = over.tls;
        }
        self
    }

    fn of(tp: &TrafficPolicy, port: u32) -> EffectivePolicy {
        let top = EffectivePolicy {
            connection_pool: tp.connection_pool.clone(),
            load_balancer: tp.load_balancer.clone(),
            outlier_detection: tp.outlier_detection.clone(),
            retry_budget: tp.retry_budget.clone(),
            tls: tp.tls.clone(),
        };
        match tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(port))
        {
            Some(pl) => top.overlay(EffectivePolicy {
                connection_pool: pl.connection_pool.clone(),
                load_balancer: pl.load_balancer.clone(),
                outlier_detection: pl.outlier_detection.clone(),
                retry_budget: None,
                tls: pl.tls.clone(),
            }),
            None => top,
        }
    }
}

/// The policy for `port` and, when given, a subset's own policy on top.
pub fn effective(
    top: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u32,
) -> EffectivePolicy {
    let base = top
        .map(|t| EffectivePolicy::of(t, port))
        .unwrap_or_default();
    match subset {
        Some(s) => base.overlay(EffectivePolicy::of(s, port)),
        None => base,
    }
}

fn millis(text: Option<&String>) -> Option<u64> {
    text.and_then(|t| parse_duration(t).ok())
        .map(|d| d.as_millis() as u64)
}

fn limit(v: Option<i32>) -> Option<u32> {
    v.filter(|n| *n > 0).map(|n| n as u32)
}

/// Compiles the effective policy; `mesh_locality` is the mesh config's `localityLbSetting`.
pub fn compile(p: &EffectivePolicy, mesh_locality: Option<&LocalityLbSetting>) -> ClusterPolicy {
    let lb = match &p.load_balancer {
        None => LbPolicy::RoundRobin,
        Some(lb) => match (&lb.consistent_hash, lb.simple) {
            (Some(ch), _) => {
                let key = if let Some(h) = &ch.http_header_name {
                    HashKey::Header(h.to_ascii_lowercase())
                } else if let Some(c) = &ch.http_cookie {
                    HashKey::Cookie {
                        name: c.name.clone(),
                        path: c.path.clone(),
                        ttl_secs: millis(c.ttl.as_ref()).map(|ms| ms / 1000),
                    }
                } else if let Some(q) = &ch.http_query_parameter_name {
                    HashKey::QueryParameter(q.clone())
                } else {
                    HashKey::SourceIp
                };
                match &ch.maglev {
                    Some(m) => LbPolicy::Maglev {
                        key,
                        table_size: m.table_size.filter(|t| *t > 0).unwrap_or(65537),
                    },
                    None => LbPolicy::RingHash {
                        key,
                        min_ring_size: ch
                            .ring_hash
                            .as_ref()
                            .and_then(|r| r.minimum_ring_size)
                            .or(ch.minimum_ring_size)
                            .filter(|n| *n > 0)
                            .unwrap_or(1024),
                    },
                }
            }
            (None, Some(SimpleLb::LeastRequest | SimpleLb::LeastConn)) => LbPolicy::LeastRequest,
            (None, Some(SimpleLb::Random)) => LbPolicy::Random,
            (None, _) => LbPolicy::RoundRobin,
        },
    };
    let mut cb = CircuitBreakers::default();
    if let Some(cp) = &p.connection_pool {
        if let Some(n) = cp.tcp.as_ref().and_then(|t| limit(t.max_connections)) {
            cb.max_connections = n;
        }
        if let Some(h) = &cp.http {
            if let Some(n) = limit(h.http1_max_pending_requests) {
                cb.max_pending_requests = n;
            }
            if let Some(n) = limit(h.http2_max_requests) {
                cb.max_requests = n;
            }
            if let Some(n) = limit(h.max_retries) {
                cb.max_retries = n;
            }
        }
    }
    let outlier = p.outlier_detection.as_ref().map(|od| {
        let split = od.split_external_local_origin_errors == Some(true);
        OutlierPolicy {
            consecutive_5xx: match od.consecutive5xx_errors {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(5),
            },
            consecutive_gateway: od.consecutive_gateway_errors.filter(|n| *n > 0),
            consecutive_local_origin: split
                .then(|| od.consecutive_local_origin_failures.unwrap_or(5)),
            split_local_origin: split,
            interval_ms: millis(od.interval.as_ref()).unwrap_or(10_000),
            base_ejection_ms: millis(od.base_ejection_time.as_ref()).unwrap_or(30_000),
            max_ejection_percent: od
                .max_ejection_percent
                .map_or(10, |n| n.clamp(0, 100) as u32),
            min_health_percent: od.min_health_percent.map_or(0, |n| n.clamp(0, 100) as u32),
        }
    });
    let retry_budget = p.retry_budget.as_ref().map(|b| {
        (
            b.percent.unwrap_or(20.0),
            b.min_retry_concurrency.unwrap_or(3),
        )
    });
    let warmup = p.load_balancer.as_ref().and_then(|lb| match &lb.warmup {
        Some(w) => Some((
            millis(Some(&w.duration))?,
            w.minimum_percent.unwrap_or(10.0),
            w.aggression.unwrap_or(1.0),
        )),
        None => Some((millis(lb.warmup_duration_secs.as_ref())?, 10.0, 1.0)),
    });
    let setting = p
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.locality_lb_setting.as_ref())
        .or(mesh_locality);
    let locality = setting.filter(|l| l.enabled != Some(false)).and_then(|l| {
        let policy = LocalityPolicy {
            distribute: l
                .distribute
                .iter()
                .map(|d| {
                    (
                        d.from.clone().unwrap_or_default(),
                        d.to.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    )
                })
                .collect(),
            failover: l
                .failover
                .iter()
                .filter_map(|f| Some((f.from.clone()?, f.to.clone()?)))
                .collect(),
            failover_priority: l.failover_priority.clone(),
        };
        // Istio fails over by locality only when outlier detection can notice failures.
        (!policy.distribute.is_empty() || outlier.is_some()).then_some(policy)
    });
    ClusterPolicy {
        lb,
        circuit_breakers: cb,
        outlier,
        locality,
        warmup,
        retry_budget,
    }
}

#[cfg(test)]
fn compile_default(p: &EffectivePolicy) -> ClusterPolicy {
    compile(p, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tp(v: serde_json::Value) -> TrafficPolicy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn port_level_and_subset_policies_override_field_by_field() {
        let top = tp(json!({
            "loadBalancer": {"simple": "RANDOM"},
            "connectionPool": {"tcp": {"maxConnections": 100}},
            "outlierDetection": {"consecutive5xxErrors": 7},
            "portLevelSettings": [{"port": {"number": 9080}, "loadBalancer": {"simple": "LEAST_REQUEST"}}]
        }));
        let subset = tp(json!({"connectionPool": {"tcp": {"maxConnections": 1}}}));
        let p = compile_default(&effective(Some(&top), None, 80));
        assert_eq!(p.lb, LbPolicy::Random);
        assert_eq!(p.circuit_breakers.max_connections, 100);
        assert_eq!(p.outlier.as_ref().unwrap().consecutive_5xx, Some(7));
        let p = compile_default(&effective(Some(&top), None, 9080));
        assert_eq!(p.lb, LbPolicy::LeastRequest, "the port's setting wins");
        assert_eq!(p.circuit_breakers.max_connections, 100, "other fields stay");
        let p = compile_default(&effective(Some(&top), Some(&subset), 9080));
        assert_eq!(
            p.circuit_breakers.max_connections, 1,
            "the subset's pool wins"
        );
        assert_eq!(p.lb, LbPolicy::LeastRequest);
    }

    #[test]
    fn istio_defaults() {
        let p = compile_default(&effective(None, None, 80));
        assert_eq!(p.lb, LbPolicy::RoundRobin);
        assert_eq!(p.circuit_breakers, CircuitBreakers::default());
        assert!(p.outlier.is_none());
        let p = compile_default(&effective(
            Some(&tp(json!({"outlierDetection": {}}))),
            None,
            80,
        ));
        let o = p.outlier.unwrap();
        assert_eq!(
            (
                o.consecutive_5xx,
                o.interval_ms,
                o.base_ejection_ms,
                o.max_ejection_percent
            ),
            (Some(5), 10_000, 30_000, 10)
        );
        let p = compile_default(&effective(
            Some(&tp(
                json!({"loadBalancer": {"consistentHash": {"httpCookie": {"name": "user", "ttl": "60s", "path": "/"}}}}),
            )),
            None,
            80,
        ));
        assert_eq!(
            p.lb,
            LbPolicy::RingHash {
                key: HashKey::Cookie {
                    name: "user".into(),
                    path: Some("/".into()),
                    ttl_secs: Some(60)
                },
                min_ring_size: 1024
            }
        );
    }
}
