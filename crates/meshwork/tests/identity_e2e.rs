//! Mesh identity with real processes: `meshwork control` runs the mesh CA, proxies prove
//! who they are with a token and receive SPIFFE certificates over the control plane's TLS
//! port, renewed before they expire; proxies without a valid token for their identity get
//! none, and the control plane logs why.

mod support;

use std::time::Duration;

use support::*;

const WORKLOAD: &str = r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec:
  address: 127.0.10.3
  labels: {app: reviews, version: v1}
  serviceAccount: bookinfo-reviews
"#;

struct Control {
    dir: TempDir,
    proc: Proc,
    listen: String,
    secure: String,
}

impl Control {
    fn start(extra: &[&str]) -> Control {
        let dir = TempDir::new("identity");
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(dir.path().join("config/workload.yaml"), WORKLOAD).unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let secure_port = free_port();
        let secure = format!("127.0.0.1:{secure_port}");
        let config = dir.path().join("config");
        let state = dir.path().join("state");
        let mut args = vec![
            "control",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &listen,
            "--secure-listen",
            &secure,
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let proc = Proc::start(dir.path(), "control", &args);
        eventually(Duration::from_secs(10), "the certificate service", || {
            std::net::TcpStream::connect(("127.0.0.1", secure_port)).is_ok()
        });
        Control {
            dir,
            proc,
            listen,
            secure,
        }
    }

    fn state(&self, file: &str) -> String {
        self.dir
            .path()
            .join("state")
            .join(file)
            .display()
            .to_string()
    }

    /// A token from `meshwork token create`, written to a file.
    fn token(&self, label: &str, ns: &str, sa: &str, ttl: &str) -> String {
        let out = run(
            &[
                "token",
                "create",
                "--state-dir",
                &self.state(""),
                "--namespace",
                ns,
                "--service-account",
                sa,
                "--ttl",
                ttl,
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = self.dir.path().join(format!("{label}.token"));
        std::fs::write(&path, &out.stdout).unwrap();
        path.display().to_string()
    }

    /// The reviews-v1 sidecar with this token file, and its admin port.
    fn proxy(&self, label: &str, token: &str, extra: &[&str]) -> (Proc, u16) {
        let (p, admin, _) = self.proxy_with_status(label, token, extra);
        (p, admin)
    }

    /// The same, and its status port. It speaks to the control plane over its plaintext
    /// port, where the control plane tells it who it is (its workload's service account).
    fn proxy_with_status(&self, label: &str, token: &str, extra: &[&str]) -> (Proc, u16, u16) {
        let mut all = vec![
            "--control-plane",
            &self.listen,
            "--control-plane-auth-policy",
            "NONE",
            "--ca-address",
            &self.secure,
        ];
        all.extend_from_slice(extra);
        self.any_proxy(label, token, &all)
    }

    /// A proxy that speaks to the control plane over mTLS on its TLS port (the default),
    /// with its status port.
    fn secure_proxy(&self, label: &str, token: &str, extra: &[&str]) -> (Proc, u16, u16) {
        let mut all = vec!["--control-plane", &self.secure];
        all.extend_from_slice(extra);
        self.any_proxy(label, token, &all)
    }

    fn any_proxy(&self, label: &str, token: &str, extra: &[&str]) -> (Proc, u16, u16) {
        let admin = free_port();
        let status = free_port();
        let root = self.state("root-cert.pem");
        let mut args = vec![
            "proxy",
            "--ca-root",
            &root,
            "--token-file",
            token,
            "--name",
            label,
        ];
        if !extra.contains(&"--ip") {
            args.extend(["--ip", "127.0.10.3"]);
        }
        let admin_arg = format!("127.0.0.1:{admin}");
        let status_arg = format!("127.0.0.1:{status}");
        args.extend(["--admin", &admin_arg, "--status", &status_arg]);
        args.extend_from_slice(extra);
        (Proc::start(self.dir.path(), label, &args), admin, status)
    }

    fn secrets(&self, admin: u16) -> String {
        let out = run(
            &[
                "proxy-config",
                "secret",
                "x",
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The proxy's certificate chain, from its config dump.
    fn chain(&self, admin: u16) -> Option<String> {
        let out = run(
            &[
                "proxy-config",
                "secret",
                "x",
                "--admin",
                &format!("127.0.0.1:{admin}"),
                "-o",
                "json",
            ],
            None,
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["default"]["certificate_chain"]["inline"]
            .as_str()
            .map(str::to_string)
    }
}

fn openssl_verify(dir: &std::path::Path, root: &str, chain: &str) -> String {
    let file = dir.join("chain.pem");
    std::fs::write(&file, chain).unwrap();
    let file = file.to_str().unwrap();
    openssl(&["verify", "-CAfile", root, "-untrusted", file, file])
}

#[test]
fn a_proxy_with_a_token_gets_a_spiffe_certificate_that_chains_to_the_mesh_root() {
    let control = Control::start(&[]);
    let token = control.token("good", "default", "bookinfo-reviews", "1h");
    let (proxy, admin) = control.proxy("reviews-v1", &token, &[]);
    let start = std::time::Instant::now();
    while !control
        .secrets(admin)
        .contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no certificate:\n{}\n{}",
            proxy.stderr(),
            control.proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let table = control.secrets(admin);
    assert!(table.contains("ROOTCA"), "{table}");
    let chain = control.chain(admin).expect("the chain is in the dump");
    let verified = openssl_verify(control.dir.path(), &control.state("root-cert.pem"), &chain);
    assert!(verified.contains(": OK"), "{verified}");
    // The key is not in the dump.
    let out = run(
        &[
            "proxy-config",
            "all",
            "x",
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "-o",
            "json",
        ],
        None,
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PRIVATE KEY"));
    assert!(
        control
            .proc
            .stderr()
            .contains("issued a workload certificate")
    );
}

#[test]
fn no_token_a_wrong_identity_an_expired_or_foreign_token_gets_no_certificate() {
    let control = Control::start(&[]);
    let other = Control::start(&[]);
    let cases = [
        (
            "missing",
            control.dir.path().join("none.token").display().to_string(),
            "no token",
        ),
        (
            "wrong",
            control.token("wrong", "default", "admin", "1h"),
            "the caller is spiffe://cluster.local/ns/default/sa/admin",
        ),
        (
            "expired",
            control.token("expired", "default", "bookinfo-reviews", "1ms"),
            "expired",
        ),
        (
            "foreign",
            other.token("foreign", "default", "bookinfo-reviews", "1h"),
            "not signed by this control plane",
        ),
    ];
    std::thread::sleep(Duration::from_millis(20));
    let mut procs = Vec::new();
    for (label, token, reason) in &cases {
        let (p, admin, health) = control.proxy_with_status(label, token, &[]);
        eventually(
            Duration::from_secs(10),
            &format!("{label} is refused"),
            || p.stderr().contains("no workload certificate") && p.stderr().contains(reason),
        );
        // Without its certificate the proxy is not ready.
        assert_eq!(
            status(&[&format!("http://127.0.0.1:{health}/healthz/ready")]),
            503,
            "{label}"
        );
        assert!(
            !control.secrets(admin).contains("spiffe://"),
            "{label} got a certificate"
        );
        if *label != "missing" {
            assert!(
                control.proc.stderr().contains("certificate refused: "),
                "the control plane logs the refusal"
            );
        }
        procs.push(p);
    }
    let log = control.proc.stderr();
    for reason in [
        "expired",
        "not signed by this control plane",
        "the caller is",
    ] {
        assert!(log.contains(reason), "{reason} in\n{log}");
    }
}

#[test]
fn certificates_are_renewed_at_half_their_lifetime() {
    let control = Control::start(&["--workload-cert-ttl", "4s"]);
    let token = control.token("good", "default", "bookinfo-reviews", "1h");
    let (proxy, admin) = control.proxy("reviews-v1", &token, &[]);
    let serial = |table: &str| {
        table
            .lines()
            .find(|l| l.contains("spiffe://"))
            .and_then(|l| l.split_whitespace().nth(4))
            .map(str::to_string)
    };
    eventually(Duration::from_secs(10), "a certificate", || {
        serial(&control.secrets(admin)).is_some()
    });
    let first = serial(&control.secrets(admin)).unwrap();
    eventually(Duration::from_secs(10), "a renewed certificate", || {
        serial(&control.secrets(admin)).is_some_and(|s| s != first)
    });
    let issued = proxy
        .stderr()
        .matches("workload certificate issued")
        .count();
    assert!(issued >= 2, "{issued}");
}

#[test]
fn plugged_in_cacerts_issue_the_certificates() {
    // A root and an intermediate, as `cacerts` holds them.
    let root = TestCa::new("plugged root");
    let (mid_cert, mid_key) = root.intermediate("plugged intermediate");
    let dir = TempDir::new("cacerts");
    std::fs::write(dir.path().join("root-cert.pem"), &root.cert_pem).unwrap();
    std::fs::write(dir.path().join("ca-cert.pem"), &mid_cert).unwrap();
    std::fs::write(dir.path().join("ca-key.pem"), &mid_key).unwrap();
    std::fs::write(dir.path().join("cert-chain.pem"), &mid_cert).unwrap();
    let control = Control::start(&["--cacerts", dir.path().to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(control.state("root-cert.pem")).unwrap(),
        root.cert_pem,
        "proxies are given the plugged root"
    );
    let token = control.token("good", "default", "bookinfo-reviews", "1h");
    let (_proxy, admin) = control.proxy("reviews-v1", &token, &[]);
    eventually(Duration::from_secs(10), "a certificate", || {
        control.chain(admin).is_some()
    });
    let chain = control.chain(admin).unwrap();
    assert!(
        chain.contains(mid_cert.trim()),
        "the intermediate follows the leaf"
    );
    let root_file = dir.path().join("root-cert.pem").display().to_string();
    let verified = openssl_verify(control.dir.path(), &root_file, &chain);
    assert!(verified.contains(": OK"), "{verified}");
}

#[test]
fn a_proxy_asks_again_when_the_control_plane_gives_it_another_identity() {
    let control = Control::start(&[]);
    let token = control.token("late", "default", "bookinfo-late", "1h");
    // No workload has this address yet: the proxy asks for sa/default and is refused.
    let admin = free_port();
    let status_port = free_port();
    let root = control.state("root-cert.pem");
    let proxy = Proc::start(
        control.dir.path(),
        "late",
        &[
            "proxy",
            "--control-plane",
            &control.listen,
            "--control-plane-auth-policy",
            "NONE",
            "--ca-address",
            &control.secure,
            "--ca-root",
            &root,
            "--token-file",
            &token,
            "--ip",
            "127.0.10.30",
            "--name",
            "late",
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--status",
            &format!("127.0.0.1:{status_port}"),
        ],
    );
    eventually(
        Duration::from_secs(10),
        "the first identity is refused",
        || proxy.stderr().contains("no workload certificate"),
    );
    // Its WorkloadEntry appears, with its service account.
    std::fs::write(
        control.dir.path().join("config/late.yaml"),
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: late, namespace: default}
spec: {address: 127.0.10.30, labels: {app: late}, serviceAccount: bookinfo-late}
",
    )
    .unwrap();
    eventually(
        Duration::from_secs(15),
        "a certificate for the new identity",
        || {
            control
                .secrets(admin)
                .contains("spiffe://cluster.local/ns/default/sa/bookinfo-late")
        },
    );
}

/// The gateway of these tests: a workload in istio-system, a Gateway with one HTTPS
/// server on `port` whose key is the Secret `gw-cert`.
fn https_gateway(control: &Control, port: u16) {
    let ca = TestCa::new("gateway test CA");
    let (cert, key) = ca.leaf(&["gw.example.com"], "gw.example.com");
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingressgateway, namespace: istio-system}}
spec:
  address: 127.0.10.100
  labels: {{istio: ingressgateway}}
  serviceAccount: istio-ingressgateway-service-account
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: https, protocol: HTTPS}}
    hosts: [\"*\"]
    tls: {{mode: SIMPLE, credentialName: gw-cert}}
---
{}",
        tls_secret("istio-system", "gw-cert", &cert, &key, None)
    );
    std::fs::write(control.dir.path().join("config/gateway.yaml"), yaml).unwrap();
}

#[test]
fn over_mtls_the_control_plane_takes_the_identity_from_the_certificate() {
    let control = Control::start(&[]);
    // The identity the token names is the one the certificate carries and the control
    // plane serves: the proxy becomes ready and is listed.
    let good = control.token("good", "default", "bookinfo-reviews", "1h");
    let (proxy, admin, health) = control.secure_proxy("reviews-v1", &good, &[]);
    eventually(Duration::from_secs(10), "the mTLS proxy is ready", || {
        status(&[&format!("http://127.0.0.1:{health}/healthz/ready")]) == 200
    });
    assert!(
        control
            .secrets(admin)
            .contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
    );
    let listed = run(&["proxy-status", "--control-plane", &control.listen], None);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("reviews-v1.default"),
        "{}",
        proxy.stderr()
    );
    // A token for another service account than the workload runs as: the certificate
    // proves that other identity, and the control plane refuses to serve the workload's
    // config to it.
    let admin_token = control.token("admin", "default", "admin", "1h");
    let (wrong, _, wrong_health) = control.secure_proxy("wrong", &admin_token, &[]);
    eventually(
        Duration::from_secs(10),
        "the control plane refuses it",
        || {
            control.proc.stderr().contains(
            "has a certificate for service account admin, its workload workloadentry/default/reviews-v1 runs as bookinfo-reviews",
        )
        },
    );
    eventually(Duration::from_secs(5), "the proxy is told why", || {
        wrong.stderr().contains("discovery refused")
    });
    assert_eq!(
        status(&[&format!("http://127.0.0.1:{wrong_health}/healthz/ready")]),
        503
    );
    // A proxy that says it is in another namespace than its certificate.
    let (other, _, _) = control.secure_proxy("other", &good, &["--namespace", "istio-system"]);
    eventually(Duration::from_secs(10), "the namespace is refused", || {
        other
            .stderr()
            .contains("says it is in namespace istio-system, its certificate is for default")
    });
    // No token: no certificate, so nothing to connect with.
    let missing = control.dir.path().join("none.token").display().to_string();
    let (none, _, none_health) = control.secure_proxy("none", &missing, &[]);
    eventually(Duration::from_secs(10), "the proxy says why", || {
        none.stderr().contains("cannot prove its identity")
    });
    assert_eq!(
        status(&[&format!("http://127.0.0.1:{none_health}/healthz/ready")]),
        503
    );
    let log = control.proc.stderr();
    assert!(!log.contains("proxy connected proxy=none"), "{log}");
}

#[test]
fn the_tls_port_refuses_a_discovery_stream_without_a_client_certificate() {
    let control = Control::start(&[]);
    // A gRPC call without a request (so that the answer races no request body), over
    // TLS that verifies the control plane but presents no certificate.
    let url = format!(
        "https://{}/meshwork.discovery.v1.AggregatedDiscoveryService/StreamAggregatedResources",
        control.secure
    );
    let out = curl(&[
        "-s",
        "-i",
        "--http2-prior-knowledge",
        "--cacert",
        &control.state("root-cert.pem"),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "-X",
        "POST",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).replace("%20", " ");
    assert!(
        text.contains("grpc-status: 16"),
        "unauthenticated: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("needs the proxy's workload certificate"),
        "{text}"
    );
    assert!(
        control
            .proc
            .stderr()
            .contains("discovery refused: no client certificate")
    );
}

#[test]
fn private_keys_go_only_to_proxies_that_prove_their_identity_over_mtls() {
    let control = Control::start(&[]);
    let port = free_port();
    https_gateway(&control, port);
    let token = control.token(
        "gateway",
        "istio-system",
        "istio-ingressgateway-service-account",
        "1h",
    );
    let gateway = [
        "--role",
        "gateway",
        "--namespace",
        "istio-system",
        "--ip",
        "127.0.10.100",
    ];
    // Over the plaintext port the gateway gets the Gateway but not its key.
    let (plain, plain_admin, _) = control.proxy_with_status("plain", &token, &gateway);
    eventually(
        Duration::from_secs(10),
        "the control plane withholds it",
        || {
            control
            .proc
            .stderr()
            .contains("secrets kubernetes://istio-system/gw-cert are sent only over the control plane's TLS port")
        },
    );
    eventually(
        Duration::from_secs(10),
        "the plaintext gateway has the roots",
        || control.secrets(plain_admin).contains("ROOTCA"),
    );
    assert!(
        !control.secrets(plain_admin).contains("gw-cert"),
        "{}",
        control.secrets(plain_admin)
    );
    drop(plain);
    // Over mTLS it gets the key, and serves HTTPS with it.
    let (secure, secure_admin, _) = control.secure_proxy("secure", &token, &gateway);
    eventually(
        Duration::from_secs(10),
        "the mTLS gateway has the key",
        || control.secrets(secure_admin).contains("gw-cert"),
    );
    let url = format!("https://gw.example.com:{port}/");
    let resolve = format!("gw.example.com:{port}:127.0.10.100");
    eventually(
        Duration::from_secs(10),
        "HTTPS with the gateway's key",
        || status(&["-k", "--resolve", &resolve, &url]) == 404,
    );
    drop(secure);
}
