//! mTLS between sidecars, with real processes: Bookinfo as `meshwork demo` runs it, under
//! PeerAuthentication STRICT in its namespace, then PERMISSIVE and DISABLE; auto mTLS
//! between proxies; the server learning the client's principal for AuthorizationPolicy;
//! and a DestinationRule that disables TLS toward a STRICT server failing as in Istio.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::bookinfo::Bookinfo;
use support::*;

const REVIEWS_V1: &str = "127.0.10.3";
const V1: &str = "200 productpage-v1(details-v1,reviews-v1)";
const V3: &str = "200 productpage-v1(details-v1,reviews-v3(ratings-v1))";

fn root(mesh: &Bookinfo) -> String {
    mesh.dir
        .path()
        .join("config/.meshwork/root-cert.pem")
        .display()
        .to_string()
}

/// Plaintext through the reviews v1 sidecar's inbound port.
fn plaintext(mesh: &Bookinfo) -> u16 {
    status(&[&format!("http://{REVIEWS_V1}:{}/reviews/0", mesh.base)])
}

fn only(counts: &BTreeMap<String, usize>, allowed: &[&str]) -> bool {
    !counts.is_empty() && counts.keys().all(|k| allowed.contains(&k.as_str()))
}

#[test]
fn strict_refuses_plaintext_and_clients_without_certificates_and_mesh_traffic_flows() {
    let mesh = Bookinfo::start();
    // The mesh works: gateway -> productpage -> details, reviews -> ratings, all mTLS.
    let counts = mesh.chains(20, &[]);
    assert!(only(&counts, &[V1, V3]), "{counts:?}");
    // The destination reports the client's principal, learned from its certificate; the
    // source reports its own.
    let inbound = reported(&mesh, "reviews-v1-sidecar", "destination", "reviews-v1");
    for label in [
        "source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-productpage\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-reviews\"",
        "destination_service=\"reviews.default.svc.cluster.local\"",
        "destination_workload_namespace=\"default\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v1\"",
        "connection_security_policy=\"mutual_tls\"",
        "response_code=\"200\"",
        // What the client's sidecar said of itself (Istio's metadata exchange).
        "source_workload=\"productpage-v1\"",
        "source_workload_namespace=\"default\"",
        "source_app=\"productpage\"",
        "source_version=\"v1\"",
        "source_canonical_service=\"productpage\"",
    ] {
        assert!(inbound.contains(label), "{label} in {inbound}");
    }
    // The admin port serves the same metrics.
    let admin = mesh.flag("reviews-v1-sidecar", "--admin");
    let out = curl(&["-s", &format!("http://{admin}/stats/prometheus")]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&inbound),
        "the admin port serves the status port's series"
    );
    // The source learns the destination's workload from its answer: a series per
    // reviews version it reached.
    for (workload, version) in [("reviews-v1", "v1"), ("reviews-v3", "v3")] {
        let outbound = reported(&mesh, "productpage-v1-sidecar", "source", workload);
        for label in [
            "source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-productpage\"",
            "source_app=\"productpage\"",
            "destination_service=\"reviews.default.svc.cluster.local\"",
            "destination_app=\"reviews\"",
            &format!("destination_version=\"{version}\""),
            "destination_canonical_service=\"reviews\"",
        ] {
            assert!(outbound.contains(label), "{label} in {outbound}");
        }
    }
    // A plaintext client is refused.
    assert_eq!(plaintext(&mesh), 0, "plaintext is not served under STRICT");
    // A TLS client without a certificate is refused; the server's certificate carries its
    // SPIFFE identity and chains to the mesh root.
    let target = format!("{REVIEWS_V1}:{}", mesh.base);
    let out = openssl(&[
        "s_client",
        "-connect",
        &target,
        "-CAfile",
        &root(&mesh),
        "-showcerts",
        "-verify_return_error",
    ]);
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    let leaf = out
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END CERTIFICATE-----").next())
        .map(|b| format!("-----BEGIN CERTIFICATE-----{b}-----END CERTIFICATE-----\n"))
        .expect("the server's certificate");
    let file = mesh.dir.path().join("server.pem");
    std::fs::write(&file, leaf).unwrap();
    let text = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        file.to_str().unwrap(),
    ]);
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "{text}"
    );
    // Asked for a request, the server refuses the client that has no certificate.
    let http = openssl_request(&target, &root(&mesh));
    assert!(!http.contains("HTTP/1.1 200"), "{http}");
    assert!(
        http.contains("alert") || http.contains("error") || http.contains("errno"),
        "{http}"
    );
}

/// The `istio_requests_total` line of a proxy with this reporter, to this destination
/// workload (exactly one).
fn reported(mesh: &Bookinfo, step: &str, reporter: &str, workload: &str) -> String {
    let all = mesh.requests_total(step);
    let mine: Vec<&String> = all
        .iter()
        .filter(|l| l.contains(&format!("reporter=\"{reporter}\"")))
        .filter(|l| l.contains("destination_service=\"reviews."))
        .filter(|l| l.contains(&format!("destination_workload=\"{workload}\"")))
        .collect();
    assert_eq!(mine.len(), 1, "one series to {workload} in {all:#?}");
    mine[0].clone()
}

/// An HTTP request over TLS without a client certificate.
fn openssl_request(target: &str, root: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", target, "-CAfile", root])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    let _ =
        stdin.write_all(b"GET /reviews/0 HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n");
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn permissive_serves_plaintext_and_mesh_clients_still_use_mtls() {
    let mesh = Bookinfo::start();
    mesh.edit(|t| t.replace("mtls: {mode: STRICT}", "mtls: {mode: PERMISSIVE}"));
    eventually(Duration::from_secs(10), "plaintext is served", || {
        plaintext(&mesh) == 200
    });
    // A plaintext client's peer metadata is not believed, and never reaches the app.
    let out = curl(&[
        "-s",
        "-i",
        "-H",
        "x-envoy-peer-metadata: Zm9yZ2Vk",
        "-H",
        "x-envoy-peer-metadata-id: forged",
        &format!("http://{REVIEWS_V1}:{}/reviews/0", mesh.base),
    ]);
    let answer = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(!answer.contains("x-envoy-peer-metadata"), "{answer}");
    // Only productpage's identity may call reviews: the mesh client's principal, learned
    // from its certificate, is allowed; the plaintext client has none and is denied.
    std::fs::write(
        mesh.dir.path().join("config/reviews-policy.yaml"),
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage]}
",
    )
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "the plaintext client is denied",
        || plaintext(&mesh) == 403,
    );
    let counts = mesh.chains(20, &[]);
    assert!(
        only(&counts, &[V1, V3]),
        "mesh clients are allowed: {counts:?}"
    );
    // The plaintext client was reported with no principal and no mTLS.
    let lines = mesh.requests_total("reviews-v1-sidecar");
    assert!(
        lines.iter().any(|l| l.contains("reporter=\"destination\"")
            && l.contains("source_principal=\"unknown\"")
            && l.contains("connection_security_policy=\"none\"")
            && l.contains("response_code=\"403\"")),
        "{lines:#?}"
    );
}

#[test]
fn disable_a_destination_rule_without_tls_toward_strict_and_tls_check() {
    let mut mesh = Bookinfo::start();
    // DISABLE for reviews v1's port: clients send it plaintext (auto mTLS follows).
    let port = mesh.base;
    std::fs::write(
        mesh.dir.path().join("config/reviews-disable.yaml"),
        format!(
            "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: reviews, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  portLevelMtls:
    \"{port}\": {{mode: DISABLE}}
"
        ),
    )
    .unwrap();
    eventually(Duration::from_secs(10), "reviews takes plaintext", || {
        plaintext(&mesh) == 200
    });
    let counts = mesh.chains(20, &[]);
    assert!(only(&counts, &[V1, V3]), "{counts:?}");
    std::fs::remove_file(mesh.dir.path().join("config/reviews-disable.yaml")).unwrap();
    eventually(Duration::from_secs(10), "reviews is STRICT again", || {
        plaintext(&mesh) == 0
    });
    // tls-check: every destination of productpage is STRICT, reached with auto mTLS.
    let (ok, table, err) = mesh.meshwork(&["authn", "tls-check", "productpage-v1.default"]);
    assert!(ok, "{err}");
    let header = table.lines().next().unwrap();
    for column in [
        "HOST:PORT",
        "STATUS",
        "SERVER",
        "CLIENT",
        "DESTINATION RULE",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let reviews = table
        .lines()
        .find(|l| l.starts_with(&format!("reviews.default.svc.cluster.local:{port}|v1")))
        .unwrap_or_else(|| panic!("{table}"));
    for word in ["OK", "STRICT", "ISTIO_MUTUAL (auto)"] {
        assert!(reviews.contains(word), "{reviews}");
    }
    // A DestinationRule that turns TLS off toward the STRICT ratings: calls to it fail.
    mesh.edit(|t| {
        t.replace(
            "  host: ratings\n",
            "  host: ratings\n  trafficPolicy: {tls: {mode: DISABLE}}\n",
        )
    });
    let broken = "200 productpage-v1(details-v1,reviews-v2(!503))";
    eventually(
        Duration::from_secs(10),
        "ratings fails from reviews v2",
        || mesh.chains(5, &["end-user: jason"]) == BTreeMap::from([(broken.to_string(), 5)]),
    );
    // ... and tls-check says why.
    let (_, table, _) = mesh.meshwork(&["authn", "tls-check", "reviews-v2", "ratings"]);
    let ratings = table
        .lines()
        .find(|l| l.starts_with("ratings.default.svc.cluster.local"))
        .unwrap_or_else(|| panic!("{table}"));
    for word in ["CONFLICT", "STRICT", "DISABLE", "ratings.default"] {
        assert!(ratings.contains(word), "{ratings}");
    }
    assert!(
        !table.contains("reviews.default"),
        "only the service asked for: {table}"
    );
    let (ok, _, err) = mesh.meshwork(&["authn", "tls-check", "nobody"]);
    assert!(!ok && err.contains("no proxy"), "{err}");
    mesh.stop("control");
}

#[test]
fn workload_certificates_rotate_under_load_without_a_failed_request() {
    // Certificates of 4 s, renewed every 2 s, on every proxy of the request path.
    let mesh = Bookinfo::start_with(&["--workload-cert-ttl", "4s"]);
    let serial = || {
        let (_, table, _) = mesh.meshwork(&["proxy-config", "secret", "reviews-v1"]);
        table
            .lines()
            .find(|l| l.contains("spiffe://"))
            .and_then(|l| l.split_whitespace().nth(4))
            .map(str::to_string)
    };
    let first = serial().expect("a certificate");
    let start = std::time::Instant::now();
    let mut total = BTreeMap::new();
    while start.elapsed() < Duration::from_secs(7) {
        for (k, v) in mesh.chains(20, &[]) {
            *total.entry(k).or_insert(0) += v;
        }
    }
    assert!(only(&total, &[V1, V3]), "every request answered: {total:?}");
    assert_ne!(serial().expect("a certificate"), first, "it rotated");
    let log = mesh.procs["reviews-v1-sidecar"].stderr();
    assert!(
        log.matches("workload certificate issued").count() >= 3,
        "renewed more than once:\n{log}"
    );
}

#[test]
fn a_root_rotation_under_load_loses_no_request() {
    // Plugged-in cacerts: root A and its intermediate.
    let (root_a, root_b) = (TestCa::new("root A"), TestCa::new("root B"));
    let (mid_a, key_a) = root_a.intermediate("intermediate A");
    let (mid_b, key_b) = root_b.intermediate("intermediate B");
    let cacerts = TempDir::new("rotation");
    let put = |file: &str, text: &str| cacerts.write(file, text);
    let sign_with = |mid: &str, key: &str| {
        put("ca-key.pem", key);
        put("cert-chain.pem", mid);
        put("ca-cert.pem", mid);
    };
    sign_with(&mid_a, &key_a);
    put("root-cert.pem", &root_a.cert_pem);
    let dir = cacerts.path().to_str().unwrap().to_string();
    let mesh = Bookinfo::start_with(&["--cacerts", &dir, "--workload-cert-ttl", "4s"]);
    let roots_of = |proxy: &str| {
        let (_, table, _) = mesh.meshwork(&["proxy-config", "secret", proxy]);
        table.lines().filter(|l| l.starts_with("ROOTCA")).count()
    };
    let signed_by = |proxy: &str, mid: &str| {
        let (_, json, _) = mesh.meshwork(&["proxy-config", "secret", proxy, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        v["default"]["certificate_chain"]["inline"]
            .as_str()
            .is_some_and(|c| c.contains(mid.trim()))
    };
    assert!(signed_by("reviews-v1", &mid_a));
    // Failures are logged, to tell their flags if any request is lost.
    std::fs::write(
        mesh.dir.path().join("config/telemetry.yaml"),
        "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: \"response.code >= 500\"}
",
    )
    .unwrap();

    // Requests all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = mesh.url();
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = curl(&[
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %header{x-echo-chain}\n",
                    &format!("{url}?[1-10]"),
                ]);
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    *counts.entry(line.to_string()).or_insert(0) += 1;
                }
            }
            counts
        })
    };
    let proxies = [
        "productpage-v1",
        "details-v1",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
        "ratings-v1",
        "istio-ingressgateway",
    ];
    // 1. Both roots are trusted.
    put(
        "root-cert.pem",
        &format!("{}{}", root_a.cert_pem, root_b.cert_pem),
    );
    eventually(
        Duration::from_secs(15),
        "every proxy trusts both roots",
        || proxies.iter().all(|p| roots_of(p) == 2),
    );
    // 2. The new CA signs; every proxy renews with it.
    sign_with(&mid_b, &key_b);
    eventually(
        Duration::from_secs(20),
        "every proxy has a certificate of B",
        || proxies.iter().all(|p| signed_by(p, &mid_b)),
    );
    // 3. The old root goes.
    put("root-cert.pem", &root_b.cert_pem);
    eventually(
        Duration::from_secs(15),
        "every proxy trusts B alone",
        || proxies.iter().all(|p| roots_of(p) == 1),
    );
    // 4. A broken CA file is rejected; the CA in force keeps signing renewals.
    put("ca-cert.pem", "not a certificate");
    let control = &mesh.procs["control"];
    eventually(Duration::from_secs(10), "the broken CA is rejected", || {
        control.stderr().contains("the mesh CA files are rejected")
    });
    let issued = || {
        control
            .stderr()
            .matches("issued a workload certificate")
            .count()
    };
    let before = issued();
    eventually(Duration::from_secs(10), "renewals go on", || {
        issued() > before + 3
    });
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let counts = load.join().unwrap();
    let total: usize = counts.values().sum();
    assert!(total > 50, "load ran: {counts:?}");
    let logs: String = mesh
        .procs
        .iter()
        .map(|(name, p)| {
            let warnings: Vec<String> = p
                .stderr()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .map(str::to_string)
                .chain(p.stdout().lines().map(|l| format!("access log: {l}")))
                .collect();
            format!("--- {name}\n{}\n", warnings.join("\n"))
        })
        .collect();
    assert!(
        only(&counts, &[V1, V3]),
        "no request lost: {counts:?}\n{logs}"
    );
}
