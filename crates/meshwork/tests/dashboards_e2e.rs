//! The PromQL of Istio's standard Grafana dashboards (Mesh, Service, Workload, Control
//! Plane) and of Kiali's traffic graph, run unchanged through a real Prometheus (Debian's
//! `prometheus`) that scrapes every proxy of Bookinfo on the mesh and the control plane.
//! Each query's answer is checked series by series, label value by label value.
//!
//! Grafana's variables are filled as a user would pick them: `$__rate_interval` is `1m`,
//! an "All" choice is `.*`, and `irate` is read as `rate` (an instant query at the end of
//! a steady load; `irate` over the last two scrapes says the same, less steadily).
//! Kiali's queries are as Kiali writes them, with a 60 s duration and its `round(…, 0.001)`.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::bookinfo::Bookinfo;
use support::prometheus::{Prometheus, prometheus_of};
use support::*;

// --- Instant queries and their series ---

type Labels = BTreeMap<String, String>;

/// One series of an instant vector: its labels (Prometheus leaves out empty ones, such as
/// `grpc_response_status=""`) and its value.
#[derive(Debug, Clone)]
struct Sample {
    labels: Labels,
    value: f64,
}

/// The instant vector `promql` evaluates to now, or Prometheus's error.
fn instant(prom: &Prometheus, promql: &str) -> Result<Vec<Sample>, String> {
    let v = prom.api_query(promql)?;
    if v["status"] != "success" {
        return Err(v.to_string());
    }
    if v["data"]["resultType"] != "vector" {
        return Err(format!("not a vector: {v}"));
    }
    let mut samples = Vec::new();
    for r in v["data"]["result"].as_array().into_iter().flatten() {
        let labels: Labels = r["metric"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        // Prometheus writes NaN and ±Inf as "NaN", "+Inf", "-Inf", which f64 parses.
        let value = r["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| format!("no value in {r}"))?;
        samples.push(Sample { labels, value });
    }
    Ok(samples)
}

/// Polls `promql` until `check` holds of its answer (30 s at most), and returns that
/// answer; on timeout, fails with the query and its last answer.
fn until(
    prom: &Prometheus,
    what: &str,
    promql: &str,
    check: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    let start = Instant::now();
    let mut last = Err("not queried".to_string());
    while start.elapsed() < Duration::from_secs(30) {
        last = instant(prom, promql);
        if let Ok(samples) = &last
            && check(samples)
        {
            return samples.clone();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("timed out waiting for {what}\nquery: {promql}\nlast answer: {last:#?}");
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The answer's label sets are exactly `expected` (in any order), each with a value > 0.
fn exactly(samples: &[Sample], expected: &[Labels]) -> bool {
    samples.len() == expected.len()
        && expected
            .iter()
            .all(|e| samples.iter().any(|s| s.labels == *e && s.value > 0.0))
}

/// The one value of an answer without labels (a `sum(...)` with no `by`).
fn single(samples: &[Sample]) -> Option<f64> {
    match samples {
        [s] if s.labels.is_empty() => Some(s.value),
        _ => None,
    }
}

// --- Load ---

/// Requests sent to `urls` in turn, every 100 ms, from a thread, until dropped (two
/// minutes at most).
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(urls: Vec<String>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
                for url in &urls {
                    let _ = status(&[url.as_str()]);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// --- The labels Bookinfo's calls carry ---

const NS: &str = "default";

/// `name` of the namespace default: `(host, name)`.
fn service(name: &str) -> (String, String) {
    (format!("{name}.{NS}.svc.cluster.local"), name.to_string())
}

/// The 16 non-empty labels of Kiali's graph group-by for a call from `(workload,
/// canonical service, revision, namespace)` to the service `svc`'s `(workload, canonical
/// service, revision)`, answered `code` with `flags`, both sides in the cluster
/// `Kubernetes`.
fn kiali_edge(
    source: (&str, &str, &str, &str),
    svc: &str,
    dest: (&str, &str, &str),
    code: &str,
    flags: &str,
) -> Labels {
    let (source_cluster, destination_cluster) = ("Kubernetes", "Kubernetes");
    let (host, name) = service(svc);
    labels(&[
        ("source_cluster", source_cluster),
        ("source_workload", source.0),
        ("source_canonical_service", source.1),
        ("source_canonical_revision", source.2),
        ("source_workload_namespace", source.3),
        ("destination_cluster", destination_cluster),
        ("destination_service_namespace", NS),
        ("destination_service", host.as_str()),
        ("destination_service_name", name.as_str()),
        ("destination_workload_namespace", NS),
        ("destination_workload", dest.0),
        ("destination_canonical_service", dest.1),
        ("destination_canonical_revision", dest.2),
        ("request_protocol", "http"),
        ("response_code", code),
        ("response_flags", flags),
    ])
}

/// The gateway's calls to productpage.
fn gateway_edge() -> Labels {
    kiali_edge(
        GATEWAY,
        "productpage",
        ("productpage-v1", "productpage", "v1"),
        "200",
        "-",
    )
}

/// Bookinfo's calls inside the namespace default, with ratings' app down: its calls fail
/// with `ratings_flags` (`URX` at the source, which retried; `UF` at the destination).
fn default_edges(ratings_flags: &str) -> Vec<Labels> {
    let ok = |source, svc, dest| kiali_edge(source, svc, dest, "200", "-");
    vec![
        ok(PRODUCTPAGE, "details", ("details-v1", "details", "v1")),
        ok(PRODUCTPAGE, "reviews", ("reviews-v1", "reviews", "v1")),
        ok(PRODUCTPAGE, "reviews", ("reviews-v3", "reviews", "v3")),
        kiali_edge(
            REVIEWS_V3,
            "ratings",
            ("ratings-v1", "ratings", "v1"),
            "503",
            ratings_flags,
        ),
    ]
}

const PRODUCTPAGE: (&str, &str, &str, &str) = ("productpage-v1", "productpage", "v1", NS);
const REVIEWS_V3: (&str, &str, &str, &str) = ("reviews-v3", "reviews", "v3", NS);
const GATEWAY: (&str, &str, &str, &str) = (
    "istio-ingressgateway",
    "istio-ingressgateway",
    "latest",
    "istio-system",
);

/// Kiali's group-by for request edges (graph/telemetry/istio/istio.go).
const KIALI_GROUP_BY: &str = "source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,request_protocol,response_code,grpc_response_status,response_flags";

#[test]
fn istios_dashboards_and_kialis_graph_query_the_mesh_unchanged() {
    let monitoring = free_port();
    let mut mesh =
        Bookinfo::start_with(&["--monitoring-address", &format!("127.0.0.1:{monitoring}")]);
    // ratings' app is down before any request: reviews-v3's calls to it fail (503, after
    // retries), so there are failures and response flags to see.
    mesh.stop("ratings-v1");
    let mut targets: Vec<u16> = mesh.steps.iter().filter_map(|s| s.status_port).collect();
    let proxies = targets.len();
    targets.push(monitoring);
    let prom = prometheus_of(mesh.dir.path(), &targets);
    until(&prom, "every target scraped", "count(up == 1)", |r| {
        single(r) == Some(targets.len() as f64)
    });
    // Bookinfo's page, and a path no route matches (the gateway answers 404, NR).
    let page = mesh.url();
    let unrouted = page.replace("/productpage", "/unrouted");
    let _traffic = Traffic::start(vec![page, unrouted]);

    let (productpage, details, reviews, ratings) = (
        service("productpage"),
        service("details"),
        service("reviews"),
        service("ratings"),
    );

    // 1. Istio Mesh Dashboard, "HTTP/gRPC Workloads" (requests): one row per destination
    // workload, named workload.namespace; reviews-v2 only serves end-user jason.
    let workloads = r#"label_join(sum(rate(istio_requests_total{reporter=~"source|waypoint"}[1m])) by (destination_workload, destination_workload_namespace, destination_service), "destination_workload_var", ".", "destination_workload", "destination_workload_namespace")"#;
    let row = |workload: &str, ns: &str, svc: &str| {
        labels(&[
            ("destination_workload", workload),
            ("destination_workload_namespace", ns),
            ("destination_service", svc),
            (
                "destination_workload_var",
                format!("{workload}.{ns}").as_str(),
            ),
        ])
    };
    until(&prom, "the mesh dashboard's workloads", workloads, |r| {
        exactly(
            r,
            &[
                row("productpage-v1", NS, &productpage.0),
                row("details-v1", NS, &details.0),
                row("reviews-v1", NS, &reviews.0),
                row("reviews-v3", NS, &reviews.0),
                row("ratings-v1", NS, &ratings.0),
                row("unknown", "unknown", "unknown"),
            ],
        )
    });

    // 2. Istio Mesh Dashboard, "Success Rate": the 503s from ratings are the only 5xx.
    let success = r#"sum(rate(istio_requests_total{reporter=~"source|waypoint",response_code!~"5.."}[1m])) / sum(rate(istio_requests_total{reporter=~"source|waypoint"}[1m]))"#;
    until(&prom, "a success rate below 1", success, |r| {
        single(r).is_some_and(|v| v > 0.5 && v < 1.0)
    });

    // 3. Istio Service Dashboard (reviews), "Incoming Requests By Source And Response
    // Code", the mTLS series; the plaintext series is empty (STRICT mTLS).
    let by_source = |policy: &str| {
        format!(
            r#"round(sum(rate(istio_requests_total{{connection_security_policy{policy}"mutual_tls",destination_service="{}",reporter=~"destination",source_workload=~".*",source_workload_namespace=~".*"}}[1m])) by (source_workload, source_workload_namespace, response_code), 0.001)"#,
            reviews.0
        )
    };
    until(&prom, "reviews' clients, over mTLS", &by_source("="), |r| {
        exactly(
            r,
            &[labels(&[
                ("source_workload", "productpage-v1"),
                ("source_workload_namespace", NS),
                ("response_code", "200"),
            ])],
        )
    });
    assert!(
        instant(&prom, &by_source("!=")).unwrap().is_empty(),
        "no plaintext calls to reviews"
    );

    // 4. Istio Service Dashboard (ratings), "Incoming Requests By Destination Workload And
    // Response Code": ratings' sidecar answers 503 for its app.
    let by_workload = format!(
        r#"round(sum(rate(istio_requests_total{{connection_security_policy="mutual_tls",destination_service="{}",reporter="destination",destination_workload=~".*",destination_workload_namespace=~".*"}}[1m])) by (destination_workload, destination_workload_namespace, response_code), 0.001)"#,
        ratings.0
    );
    until(&prom, "ratings' 503s", &by_workload, |r| {
        exactly(
            r,
            &[labels(&[
                ("destination_workload", "ratings-v1"),
                ("destination_workload_namespace", NS),
                ("response_code", "503"),
            ])],
        )
    });

    // 5. Istio Workload Dashboard (productpage-v1), "Outgoing Requests By Destination And
    // Response Code". A source reports connection_security_policy="unknown", as Istio's
    // do, so the calls are in the panel's second (non-mTLS) series.
    let outgoing = r#"round(sum(rate(istio_requests_total{connection_security_policy!="mutual_tls",source_workload_namespace=~"default",source_workload=~"productpage-v1",reporter="source",destination_service=~".*"}[1m])) by (destination_service, response_code), 0.001)"#;
    until(&prom, "productpage's outgoing calls", outgoing, |r| {
        exactly(
            r,
            &[
                labels(&[
                    ("destination_service", details.0.as_str()),
                    ("response_code", "200"),
                ]),
                labels(&[
                    ("destination_service", reviews.0.as_str()),
                    ("response_code", "200"),
                ]),
            ],
        )
    });

    // 6. Istio Workload Dashboard (details-v1), "Request Duration" P50, in seconds, from
    // Istio's millisecond buckets (19 and +Inf).
    let p50 = r#"(histogram_quantile(0.50, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload=~"details-v1",destination_workload_namespace=~"default"}[1m])) by (le)) / 1000) or histogram_quantile(0.50, sum(rate(istio_request_duration_seconds_bucket{reporter="destination",destination_workload=~"details-v1",destination_workload_namespace=~"default"}[1m])) by (le))"#;
    until(&prom, "details' median duration", p50, |r| {
        single(r).is_some_and(|s| s > 0.0 && s < 1.0)
    });
    assert_eq!(
        single(
            &instant(
                &prom,
                r#"count(count by (le) (istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload="details-v1"}))"#
            )
            .unwrap()
        ),
        Some(20.0),
        "Istio's 19 duration buckets and +Inf"
    );

    // 7. Kiali's graph of the namespace default, outgoing: source telemetry, by Kiali's 17
    // labels (grpc_response_status is empty for HTTP, so absent from the answer). The
    // destination's cluster comes from its metadata.
    let kiali_outgoing = format!(
        r#"round(sum(rate(istio_requests_total{{reporter="source",source_workload_namespace="{NS}"}} [60s])) by ({KIALI_GROUP_BY}) > 0,0.001)"#
    );
    until(&prom, "Kiali's outgoing edges", &kiali_outgoing, |r| {
        exactly(r, &default_edges("URX"))
    });
    // The gateway's, in istio-system's graph; and the request no route matched.
    let kiali_gateway = format!(
        r#"round(sum(rate(istio_requests_total{{reporter="source",source_workload_namespace="istio-system"}} [60s])) by ({KIALI_GROUP_BY}) > 0,0.001)"#
    );
    let mut unrouted_edge = labels(&[
        ("source_cluster", "Kubernetes"),
        ("source_workload", GATEWAY.0),
        ("source_canonical_service", GATEWAY.1),
        ("source_canonical_revision", GATEWAY.2),
        ("source_workload_namespace", GATEWAY.3),
        ("request_protocol", "http"),
        ("response_code", "404"),
        ("response_flags", "NR"),
        ("destination_canonical_revision", "latest"),
    ]);
    for l in [
        "destination_cluster",
        "destination_service_namespace",
        "destination_service",
        "destination_service_name",
        "destination_workload_namespace",
        "destination_workload",
        "destination_canonical_service",
    ] {
        unrouted_edge.insert(l.to_string(), "unknown".to_string());
    }
    until(&prom, "Kiali's gateway edges", &kiali_gateway, |r| {
        exactly(r, &[gateway_edge(), unrouted_edge.clone()])
    });

    // 8. Kiali's graph of the namespace default, incoming: destination telemetry. Every
    // call is there, with its source's workload and cluster from the metadata exchange
    // (Kiali drops a series whose source namespace is known but whose source cluster is
    // not).
    let kiali_incoming = format!(
        r#"round(sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{NS}"}} [60s])) by ({KIALI_GROUP_BY}) > 0,0.001)"#
    );
    until(&prom, "Kiali's incoming edges", &kiali_incoming, |r| {
        let mut edges = default_edges("UF");
        edges.push(gateway_edge());
        exactly(r, &edges)
    });

    // 9. Kiali's security-policy appender: destination telemetry says mTLS, with both
    // principals.
    let kiali_mtls = format!(
        r#"sum(rate(istio_requests_total{{reporter="destination",source_workload_namespace="{NS}"}}[60s])) by (source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,source_principal,destination_cluster,destination_service_namespace,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,destination_principal,connection_security_policy) > 0"#
    );
    let sa = |name: &str| format!("spiffe://cluster.local/ns/{NS}/sa/bookinfo-{name}");
    let secured = until(&prom, "Kiali's mTLS edges", &kiali_mtls, |r| r.len() == 4);
    for (source, dest, source_sa, dest_sa) in [
        ("productpage-v1", "details-v1", "productpage", "details"),
        ("productpage-v1", "reviews-v1", "productpage", "reviews"),
        ("productpage-v1", "reviews-v3", "productpage", "reviews"),
        ("reviews-v3", "ratings-v1", "reviews", "ratings"),
    ] {
        let s = secured
            .iter()
            .find(|s| {
                s.labels["source_workload"] == source && s.labels["destination_workload"] == dest
            })
            .unwrap_or_else(|| panic!("{source} -> {dest} in {secured:#?}"));
        assert_eq!(
            s.labels["connection_security_policy"], "mutual_tls",
            "{s:?}"
        );
        assert_eq!(s.labels["source_principal"], sa(source_sa), "{s:?}");
        assert_eq!(s.labels["destination_principal"], sa(dest_sa), "{s:?}");
    }

    // The Perses dashboards split outgoing calls by the server's principal, which the
    // source reports from the server's metadata.
    let outgoing_mtls = instant(
        &prom,
        r#"sum(rate(istio_requests_total{reporter="source",source_workload="productpage-v1",destination_principal=~"spiffe.*"}[1m])) by (destination_workload, destination_principal)"#,
    )
    .unwrap();
    for (dest, dest_sa) in [("details-v1", "details"), ("reviews-v1", "reviews")] {
        assert!(
            outgoing_mtls
                .iter()
                .any(|s| s.labels["destination_workload"] == dest
                    && s.labels["destination_principal"] == sa(dest_sa)),
            "{dest}: {outgoing_mtls:#?}"
        );
    }

    // Kiali's response-time appender (P95, outgoing): one value per edge.
    let kiali_p95 = format!(
        r#"histogram_quantile(0.95, sum(rate(istio_request_duration_milliseconds_bucket{{reporter=~"source|waypoint",source_workload_namespace="{NS}"}}[60s])) by (le,source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,request_protocol)) > 0"#
    );
    let times = until(&prom, "Kiali's response times", &kiali_p95, |r| {
        r.len() == 4
    });
    assert!(times.iter().all(|s| s.value.is_finite()), "{times:#?}");

    // 10. Istio Control Plane Dashboard, "Connections (server reported)": every proxy.
    until(&prom, "the proxies connected", "sum(pilot_xds)", |r| {
        single(r) == Some(proxies as f64)
    });
    let cds = single(&instant(&prom, r#"sum(pilot_xds_pushes{type="cds"})"#).unwrap());
    assert!(
        cds.is_some_and(|n| n >= proxies as f64),
        "a CDS push to each proxy: {cds:?}"
    );

    // Not served: what these panels need is Envoy's, Go's, Kubernetes' or istiod's own.
    for absent in [
        r#"envoy_cluster_upstream_cx_active{cluster_name="xds-grpc"}"#,
        "pilot_xds_push_time_bucket",
        "pilot_xds_config_size_bytes_bucket",
        "pilot_k8s_cfg_events",
        "pilot_push_triggers",
        "istio_build",
        "go_goroutines",
    ] {
        let r = instant(&prom, absent).unwrap();
        assert!(r.is_empty(), "{absent}: {r:#?}");
    }

    // The queries docs/telemetry.md shows answer too, as written there.
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/telemetry.md"
    ))
    .unwrap();
    let block = page
        .split("```promql\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/telemetry.md shows the dashboards' PromQL");
    let queries: Vec<&str> = block
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(queries.len() >= 7, "{queries:?}");
    for q in queries {
        until(&prom, "the documented query", q, |r| !r.is_empty());
    }
}
