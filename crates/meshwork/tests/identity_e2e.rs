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

    /// The same, and its status port.
    fn proxy_with_status(&self, label: &str, token: &str, extra: &[&str]) -> (Proc, u16, u16) {
        let admin = free_port();
        let status = free_port();
        let root = self.state("root-cert.pem");
        let mut args = vec![
            "proxy",
            "--control-plane",
            &self.listen,
            "--ca-address",
            &self.secure,
            "--ca-root",
            &root,
            "--token-file",
            token,
            "--ip",
            "127.0.10.3",
            "--name",
            label,
        ];
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
