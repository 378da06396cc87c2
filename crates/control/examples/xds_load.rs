//! Load for `meshwork control`: N simulated proxies, each its own connection and stream,
//! that ACK every response at once. It measures how long a VirtualService change takes to
//! reach (be ACKed by) every proxy, and the control plane's memory per connected proxy.
//! bench/control_scale.sh drives it.
//!
//!   xds_load write-config DIR SERVICES
//!   xds_load run ADDR PROXIES DIR CONTROL_PID

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meshwork_xds::proto::Node;
use meshwork_xds::proto::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshwork_xds::{DiscoveryRequest, TypeUrl};
use tokio::sync::{Mutex, mpsc};

const NS: &str = "bench";

fn services_yaml(n: usize) -> String {
    let mut out = String::new();
    for k in 0..n {
        let (a, b) = (k / 250, k % 250 + 1);
        out.push_str(&format!(
            "apiVersion: v1
kind: Service
metadata: {{name: svc-{k}, namespace: {NS}}}
spec:
  selector: {{app: svc-{k}}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: svc-{k}-v1, namespace: {NS}}}
spec: {{address: 127.3.{a}.{b}, labels: {{app: svc-{k}, version: v1}}}}
---
"
        ));
    }
    out.push_str(&format!(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: {NS}}}
spec:
  egress:
  - port: {{number: 9080, protocol: HTTP, name: http}}
    hosts: [\"./*\"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc-0, namespace: {NS}}}
spec:
  host: svc-0
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
"
    ));
    out
}

fn route_yaml(v1: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-0, namespace: {NS}}}
spec:
  hosts: [svc-0]
  http:
  - route:
    - destination: {{host: svc-0, subset: v1}}
      weight: {v1}
    - destination: {{host: svc-0, subset: v2}}
      weight: {}
",
        100 - v1
    )
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What one simulated proxy has seen.
#[derive(Default)]
struct Seen {
    types: usize,
    route_version: String,
    route_at: Option<Instant>,
}

async fn proxy(addr: String, i: usize, seen: Arc<Mutex<Seen>>, complete: Arc<AtomicUsize>) {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("an address")
        .connect_timeout(Duration::from_secs(30));
    let hello = Node {
        id: format!("sim-{i}.{NS}"),
        role: "sidecar".into(),
        namespace: NS.into(),
        name: format!("sim-{i}"),
        ips: vec![format!("127.2.{}.{}", i / 250, i % 250 + 1)],
        ..Node::default()
    };
    // As a real proxy does, retry until the stream is up (thousands connecting at once
    // overflow the accept queue).
    let (tx, mut inbound) = loop {
        let Ok(channel) = endpoint.connect().await else {
            tokio::time::sleep(Duration::from_millis(100 + fastrand::u64(..200))).await;
            continue;
        };
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(256 * 1024 * 1024);
        let (tx, rx) = mpsc::channel(16);
        for (k, t) in TypeUrl::ALL.into_iter().enumerate() {
            let _ = tx
                .send(DiscoveryRequest {
                    node: (k == 0).then(|| hello.clone()),
                    type_url: t.as_str().into(),
                    ..DiscoveryRequest::default()
                })
                .await;
        }
        match client
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(s) => break (tx, s.into_inner()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100 + fastrand::u64(..200))).await,
        }
    };
    let mut types = std::collections::BTreeSet::new();
    while let Ok(Some(r)) = inbound.message().await {
        if r.more {
            continue;
        }
        let _ = tx
            .send(DiscoveryRequest {
                version_info: r.version_info.clone(),
                type_url: r.type_url.clone(),
                response_nonce: r.nonce.clone(),
                ..DiscoveryRequest::default()
            })
            .await;
        if i == 0 && std::env::var_os("XDS_LOAD_SIZES").is_some() {
            let bytes: usize = r.resources.iter().map(|x| x.body.len()).sum();
            eprintln!(
                "{} {} resources, {bytes} bytes",
                r.type_url,
                r.resources.len()
            );
        }
        let mut s = seen.lock().await;
        if types.insert(r.type_url.clone()) {
            s.types = types.len();
            if s.types == TypeUrl::ALL.len() {
                complete.fetch_add(1, Ordering::SeqCst);
            }
        }
        if r.type_url == TypeUrl::RouteTable.as_str() {
            s.route_version = r.version_info.clone();
            s.route_at = Some(Instant::now());
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(addr: String, proxies: usize, dir: String, pid: u32) {
    let before = rss_kb(pid);
    let complete = Arc::new(AtomicUsize::new(0));
    let mut seen = Vec::new();
    let started = Instant::now();
    for i in 0..proxies {
        let s = Arc::new(Mutex::new(Seen::default()));
        seen.push(s.clone());
        tokio::spawn(proxy(addr.clone(), i, s, complete.clone()));
    }
    while complete.load(Ordering::SeqCst) < proxies {
        if started.elapsed() > Duration::from_secs(600) {
            eprintln!(
                "only {} of {proxies} proxies synced in 600 s",
                complete.load(Ordering::SeqCst)
            );
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let initial = started.elapsed();
    // Let the control plane settle before its memory is read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb(pid);
    let mut old: HashMap<usize, String> = HashMap::new();
    for (i, s) in seen.iter().enumerate() {
        old.insert(i, s.lock().await.route_version.clone());
    }
    let path = format!("{dir}/route.yaml");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    let next = if current.contains("weight: 90") {
        50
    } else {
        90
    };
    let tmp = format!("{dir}/.route.tmp");
    std::fs::write(&tmp, route_yaml(next)).expect("writes");
    let changed = Instant::now();
    std::fs::rename(&tmp, &path).expect("renames");
    let mut latencies = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        loop {
            {
                let s = s.lock().await;
                if s.route_version != old[&i]
                    && let Some(at) = s.route_at
                {
                    latencies.push(at.saturating_duration_since(changed));
                    break;
                }
            }
            if changed.elapsed() > Duration::from_secs(300) {
                eprintln!("proxy {i} did not receive the change in 300 s");
                std::process::exit(1);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "proxies": proxies,
            "initial_sync_s": initial.as_secs_f64(),
            "change_p50_ms": ms(percentile(&latencies, 0.50)),
            "change_p99_ms": ms(percentile(&latencies, 0.99)),
            "change_last_ms": ms(*latencies.last().expect("proxies")),
            "rss_before_kb": before,
            "rss_after_kb": after,
            "kb_per_proxy": (after.saturating_sub(before)) as f64 / proxies as f64,
        })
    );
    std::process::exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["write-config", dir, services] => {
            let n: usize = services.parse().expect("a number of services");
            std::fs::create_dir_all(dir).expect("the directory");
            std::fs::write(format!("{dir}/services.yaml"), services_yaml(n)).expect("writes");
            std::fs::write(format!("{dir}/route.yaml"), route_yaml(50)).expect("writes");
        }
        ["run", addr, proxies, dir, pid] => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(run(
                addr.to_string(),
                proxies.parse().expect("a number of proxies"),
                dir.to_string(),
                pid.parse().expect("a pid"),
            ));
        }
        _ => {
            eprintln!(
                "usage: xds_load write-config DIR SERVICES | xds_load run ADDR PROXIES DIR CONTROL_PID"
            );
            std::process::exit(2);
        }
    }
}
