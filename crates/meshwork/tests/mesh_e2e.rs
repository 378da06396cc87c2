//! The mesh with real processes on loopback: `meshwork control`, an ingress gateway, and
//! Bookinfo's services (echo apps calling the next service) behind sidecars, started
//! process by process from the commands `meshwork demo --print-config` gives. Requests go
//! gateway -> productpage sidecar -> productpage -> its sidecar's egress -> details and
//! reviews v1/v2/v3 sidecars -> apps -> ratings.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::bookinfo::Bookinfo;
use support::*;

const PROXIES: usize = 7;
const JASON: &str = "end-user: jason";

/// A split of `n` requests between two answers, each expected with probability `p` and
/// `1 - p`: both counts within 4.5 standard deviations, and nothing else seen.
fn assert_split(counts: &BTreeMap<String, usize>, a: &str, b: &str, n: usize, p: f64) {
    let seen_a = counts.get(a).copied().unwrap_or(0);
    let seen_b = counts.get(b).copied().unwrap_or(0);
    assert_eq!(seen_a + seen_b, n, "only {a} and {b}: {counts:?}");
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let (lo, hi) = (mean - 4.5 * sd, mean + 4.5 * sd);
    assert!(
        (seen_a as f64) >= lo && (seen_a as f64) <= hi,
        "{a}: {seen_a} of {n}, expected {lo:.0}..{hi:.0}: {counts:?}"
    );
}

const V1: &str = "200 productpage-v1(details-v1,reviews-v1)";
const V2: &str = "200 productpage-v1(details-v1,reviews-v2(ratings-v1))";
const V3: &str = "200 productpage-v1(details-v1,reviews-v3(ratings-v1))";

#[test]
fn bookinfo_reviews_rules_hold_between_sidecars_and_a_change_reaches_every_proxy() {
    let mesh = Bookinfo::start();
    // end-user: jason always reaches reviews v2, which calls ratings.
    assert_eq!(
        mesh.chains(20, &[JASON]),
        BTreeMap::from([(V2.to_string(), 20)])
    );
    // Everyone else: v1 and v3, 50/50.
    assert_split(&mesh.chains(200, &[]), V1, V3, 200, 0.5);
    eventually(Duration::from_secs(10), "every proxy SYNCED", || {
        mesh.synced() == PROXIES
    });

    // 80/20: the change reaches every sidecar that routes reviews.
    let changed = Instant::now();
    mesh.edit(|t| {
        t.replacen("weight: 50", "weight: 80", 1)
            .replacen("weight: 50", "weight: 20", 1)
    });
    for sidecar in ["productpage-v1", "reviews-v2", "reviews-v3"] {
        eventually(
            Duration::from_secs(5),
            &format!("{sidecar} routes 80/20"),
            || {
                let (_, out, _) = mesh.meshwork(&["proxy-config", "routes", sidecar, "-o", "json"]);
                out.contains("\"weight\": 80")
            },
        );
    }
    eprintln!(
        "the change reached every sidecar in {:?}",
        changed.elapsed()
    );
    assert_split(&mesh.chains(200, &[]), V1, V3, 200, 0.8);
    assert_eq!(
        mesh.chains(10, &[JASON]),
        BTreeMap::from([(V2.to_string(), 10)])
    );
    eventually(Duration::from_secs(10), "every proxy SYNCED again", || {
        mesh.synced() == PROXIES
    });
}

#[test]
fn a_proxy_keeps_serving_without_the_control_plane_and_resyncs_when_it_returns() {
    let mut mesh = Bookinfo::start();
    mesh.stop("control");
    let counts = mesh.chains(20, &[]);
    assert_eq!(
        counts.get(V1).unwrap_or(&0) + counts.get(V3).unwrap_or(&0),
        20,
        "the last good config keeps serving: {counts:?}"
    );
    // While the control plane is away, everyone is sent to v3.
    mesh.edit(|t| {
        t.replacen("weight: 50", "weight: 0", 1)
            .replacen("weight: 50", "weight: 100", 1)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(mesh.chains(1, &[JASON]).get(V2), Some(&1));
    mesh.launch("control");
    eventually(Duration::from_secs(20), "the sidecars resync", || {
        mesh.chains(20, &[]) == BTreeMap::from([(V3.to_string(), 20)])
    });
    eventually(
        Duration::from_secs(10),
        "every proxy reconnected and SYNCED",
        || mesh.synced() == PROXIES,
    );
    let log = mesh.procs["productpage-v1-sidecar"].stderr();
    assert!(log.contains("reconnecting to the control plane"), "{log}");
}

#[test]
fn a_listener_a_proxy_cannot_bind_is_nacked_and_shown_by_proxy_status() {
    let monitoring = format!("127.0.0.1:{}", free_port());
    let mesh = Bookinfo::start_with(&["--monitoring-address", &monitoring]);
    // Something else holds the port that details' new ingress listener wants.
    let held = free_port();
    let details_ip = "127.0.10.2";
    let _holder = std::net::TcpListener::bind((details_ip, held)).expect("the port is free");
    let app = mesh.base + 3;
    mesh.edit(|t| {
        let existing = format!("defaultEndpoint: 127.0.0.1:{app}\n    captureMode: NONE");
        t.replacen(
            &existing,
            &format!(
                "{existing}\n  - port: {{number: {held}, protocol: HTTP, name: http-extra}}\n    defaultEndpoint: 127.0.0.1:{app}\n    captureMode: NONE"
            ),
            1,
        )
    });
    eventually(
        Duration::from_secs(10),
        "details NACKs its listeners",
        || {
            mesh.proxy_status()
                .lines()
                .any(|l| l.starts_with("details-v1.default") && l.contains("NACK"))
        },
    );
    // The control plane counts the rejection.
    let metrics =
        String::from_utf8_lossy(&curl(&["-s", &format!("http://{monitoring}/metrics")]).stdout)
            .into_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pilot_total_xds_rejects{type=\"lds\"} ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    let status = mesh.proxy_status();
    let reason = format!("cannot bind port {held} on {details_ip}");
    assert!(
        status.contains("details-v1.default LDS NACK of version "),
        "{status}"
    );
    assert!(status.contains(&reason), "{status}");
    // Only LDS is NACKed; the other types of details and every other proxy are SYNCED.
    let line = status
        .lines()
        .find(|l| l.starts_with("details-v1.default"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().filter(|w| *w == "SYNCED").count(),
        6,
        "{line}"
    );
    assert_eq!(mesh.synced(), PROXIES - 1, "{status}");
    // details keeps serving what it had.
    let counts = mesh.chains(10, &[JASON]);
    assert_eq!(counts, BTreeMap::from([(V2.to_string(), 10)]));
    let log = mesh.procs["details-v1-sidecar"].stderr();
    assert!(log.contains(&reason), "{log}");
}

#[test]
fn export_to_hides_a_service_from_another_namespace() {
    let mesh = Bookinfo::start();
    let port = mesh.base;
    // A service in namespace vault, served by the details workload's sidecar address, and
    // productpage importing every namespace.
    let vault = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: secret, namespace: vault}}
spec:
  selector: {{app: secret}}
  ports: [{{name: http, port: {port}, targetPort: {port}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: secret, namespace: vault}}
spec: {{address: 127.0.10.2, labels: {{app: secret}}}}
"
    );
    std::fs::write(mesh.dir.path().join("config/vault.yaml"), &vault).unwrap();
    // The vault workload has no proxy of its own, so productpage calls it in plaintext,
    // which details' sidecar accepts under PERMISSIVE.
    mesh.edit(|t| {
        t.replace(r#"hosts: ["./*"]"#, r#"hosts: ["*/*"]"#)
            .replace("mtls: {mode: STRICT}", "mtls: {mode: PERMISSIVE}")
    });
    let egress = format!("http://127.0.10.101:{port}/");
    let through = |host: &str| status(&["-H", &format!("Host: {host}"), &egress]);
    eventually(Duration::from_secs(10), "vault's service is routed", || {
        through("secret.vault") == 200
    });
    // Exported only to its own namespace: productpage (default) no longer sees it.
    let hidden = vault.replace(
        "metadata: {name: secret, namespace: vault}\nspec:\n  selector",
        "metadata:\n  name: secret\n  namespace: vault\n  annotations: {networking.istio.io/exportTo: \".\"}\nspec:\n  selector",
    );
    assert_ne!(hidden, vault);
    std::fs::write(mesh.dir.path().join("config/vault.yaml"), &hidden).unwrap();
    eventually(Duration::from_secs(10), "vault's service is hidden", || {
        through("secret.vault") == 404
    });
    assert_eq!(through("details"), 200, "the rest still routes");
    let (_, routes, _) = mesh.meshwork(&["proxy-config", "routes", "productpage-v1"]);
    assert!(!routes.contains("secret.vault"), "{routes}");
    assert!(
        routes.contains("details.default.svc.cluster.local"),
        "{routes}"
    );
}

#[test]
fn proxy_status_and_proxy_config_show_what_each_proxy_runs() {
    let mut mesh = Bookinfo::start();
    let status = mesh.proxy_status();
    let header = status.lines().next().unwrap();
    for column in [
        "NAME",
        "CDS",
        "LDS",
        "EDS",
        "RDS",
        "CONTROL PLANE",
        "VERSION",
    ] {
        assert!(header.contains(column), "{header}");
    }
    for name in [
        "productpage-v1.default",
        "details-v1.default",
        "reviews-v1.default",
        "reviews-v2.default",
        "reviews-v3.default",
        "ratings-v1.default",
        "istio-ingressgateway.istio-system",
    ] {
        assert!(status.contains(name), "{name} in\n{status}");
    }
    let port = mesh.base;
    // Routes: NAME, VHOST NAME, DOMAINS, MATCH, VIRTUAL SERVICE.
    let (ok, routes, err) = mesh.meshwork(&["proxy-config", "routes", "productpage-v1.default"]);
    assert!(ok, "{err}");
    let header = routes.lines().next().unwrap();
    for column in ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"] {
        assert!(header.contains(column), "{header}");
    }
    let jason = routes
        .lines()
        .find(|l| l.contains("end-user=jason"))
        .unwrap_or_else(|| panic!("{routes}"));
    assert!(
        jason.contains(&format!("reviews.default.svc.cluster.local:{port}")),
        "{jason}"
    );
    assert!(jason.contains("reviews.default"), "{jason}");
    // Listeners: the egress address and the ingress address.
    let (_, listeners, _) = mesh.meshwork(&["proxy-config", "listeners", "productpage-v1"]);
    assert!(listeners.contains("127.0.10.101"), "{listeners}");
    assert!(listeners.contains("127.0.10.1 "), "{listeners}");
    // Endpoints of the gateway: productpage's sidecar.
    let (_, endpoints, _) = mesh.meshwork(&["proxy-config", "endpoints", "istio-ingressgateway"]);
    assert!(
        endpoints.contains(&format!("127.0.10.1:{port}")),
        "{endpoints}"
    );
    // Clusters of reviews v2: its subsets' destinations and its inbound cluster.
    let (_, clusters, _) = mesh.meshwork(&["proxy-config", "clusters", "reviews-v2"]);
    assert!(
        clusters.contains("ratings.default.svc.cluster.local"),
        "{clusters}"
    );
    assert!(clusters.contains("inbound"), "{clusters}");
    // The same through --admin, and JSON.
    let admin = mesh.flag("ratings-v1-sidecar", "--admin");
    let out = run(
        &[
            "proxy-config",
            "all",
            "ratings-v1.default",
            "--admin",
            &admin,
            "-o",
            "json",
        ],
        None,
    );
    assert!(out.status.success());
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all["node"]["workload"], "workloadentry/default/ratings-v1");
    // A proxy that is not connected is named in the error.
    let (ok, _, err) = mesh.meshwork(&["proxy-config", "routes", "nobody"]);
    assert!(!ok);
    assert!(err.contains("no proxy \"nobody\""), "{err}");

    // A proxy whose address no workload has is served, and shown as such. Its identity
    // comes from Istio's environment variables, its labels from ISTIO_METAJSON_LABELS and
    // --labels.
    let admin = free_port();
    let health = free_port();
    let cp = mesh.control_plane();
    let stray = Proc::start_env(
        mesh.dir.path(),
        "stray",
        &[
            "proxy",
            "--labels",
            "version=v9",
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--status",
            &format!("127.0.0.1:{health}"),
        ],
        &[
            ("PILOT_ADDRESS", &cp),
            ("CONTROL_PLANE_AUTH_POLICY", "NONE"),
            ("INSTANCE_IP", "127.0.10.77"),
            ("POD_NAME", "stray"),
            ("POD_NAMESPACE", "default"),
            (
                "ISTIO_METAJSON_LABELS",
                r#"{"app": "stray", "version": "v1"}"#,
            ),
        ],
    );
    eventually(Duration::from_secs(10), "the stray proxy is listed", || {
        mesh.proxy_status().contains("stray.default (no workload)")
    });
    assert!(
        mesh.proxy_status()
            .contains("stray.default: no Pod or WorkloadEntry has this proxy's address"),
        "{}",
        mesh.proxy_status()
    );
    eventually(Duration::from_secs(5), "the stray proxy logs it", || {
        stray.stderr().contains("found no Pod or WorkloadEntry")
    });
    let out = run(
        &[
            "proxy-config",
            "all",
            "stray.default",
            "--control-plane",
            &cp,
            "-o",
            "json",
        ],
        None,
    );
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all["node"]["labels"]["app"], "stray", "{all}");
    assert_eq!(
        all["node"]["labels"]["version"], "v9",
        "--labels wins: {all}"
    );
    assert_eq!(all["node"]["ips"][0], "127.0.10.77");
    // A change of endpoints only (one more reviews v1 workload, of the same service
    // account, so the identities clusters verify stay the same) pushes endpoint sets only:
    // productpage's EDS is sent again, its clusters, listeners and routes are not.
    let sent = |proxy: &str, t: &str| -> String {
        let (_, out, _) = mesh.meshwork(&["proxy-status", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        let p = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == proxy)
            .unwrap_or_else(|| panic!("{proxy} in {out}"));
        let s = p["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["type"] == t)
            .unwrap();
        format!(
            "{}/{}",
            s["sentVersion"].as_str().unwrap(),
            s["state"].as_str().unwrap()
        )
    };
    let before: Vec<String> = ["CDS", "LDS", "RDS", "EDS"]
        .iter()
        .map(|t| sent("productpage-v1.default", t))
        .collect();
    std::fs::write(
        mesh.dir.path().join("config/reviews-v1-b.yaml"),
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1-b, namespace: default}
spec: {address: 127.0.10.60, labels: {app: reviews, version: v1}, serviceAccount: bookinfo-reviews}
",
    )
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "the new endpoint is pushed",
        || sent("productpage-v1.default", "EDS") != before[3],
    );
    let after: Vec<String> = ["CDS", "LDS", "RDS"]
        .iter()
        .map(|t| sent("productpage-v1.default", t))
        .collect();
    assert_eq!(after, before[..3], "only endpoint sets are sent");
    let (_, endpoints, _) = mesh.meshwork(&["proxy-config", "endpoints", "productpage-v1"]);
    assert!(
        endpoints.contains(&format!("127.0.10.60:{port}")),
        "{endpoints}"
    );

    // A proxy that goes away leaves the list.
    mesh.stop("ratings-v1-sidecar");
    eventually(
        Duration::from_secs(10),
        "ratings leaves proxy-status",
        || !mesh.proxy_status().contains("ratings-v1.default"),
    );
}

#[test]
fn the_control_plane_reports_its_metrics_under_istiods_names() {
    let port = free_port();
    let monitoring = format!("127.0.0.1:{port}");
    let mesh = Bookinfo::start_with(&["--monitoring-address", &monitoring]);
    let metrics = || {
        let out = curl(&["-s", &format!("http://{monitoring}/metrics")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    eventually(Duration::from_secs(10), "every proxy counted", || {
        value(&metrics(), "pilot_xds") == 7.0
    });
    let text = metrics();
    for series in [
        "pilot_xds_pushes{type=\"cds\"}",
        "pilot_xds_pushes{type=\"lds\"}",
        "pilot_proxy_convergence_time_count",
        "citadel_server_csr_count",
        "citadel_server_success_cert_issuance_count",
    ] {
        assert!(value(&text, series) >= 7.0, "{series} in\n{text}");
    }
    assert_eq!(
        value(&text, "citadel_server_authentication_failure_count"),
        0.0
    );
    // A change is pushed again.
    let before = value(&text, "pilot_xds_pushes{type=\"rds\"}");
    mesh.edit(|t| {
        t.replacen("weight: 50", "weight: 80", 1)
            .replacen("weight: 50", "weight: 20", 1)
    });
    eventually(Duration::from_secs(10), "more route pushes", || {
        value(&metrics(), "pilot_xds_pushes{type=\"rds\"}") > before
    });
}
