//! Transparent interception with real network namespaces as pods: each pod has its
//! sidecar (`meshwork iptables`, then `meshwork proxy --interception-mode REDIRECT` as
//! UID 1337) and an unmodified app (`curl`, or `meshwork echo`, a plain HTTP server) that
//! calls the others by service name. The control plane runs on the host side of the
//! bridge. Needs root; without it these tests fail.

mod support;

use std::time::Duration;

use support::pods::Net;
use support::*;

/// Services (with cluster IPs), their workloads (the pods), mTLS STRICT, and Bookinfo's
/// reviews rule: jason to v2, everyone else to v1.
fn mesh_yaml(net: &Net) -> String {
    let mut yaml = String::new();
    for (name, vip) in [
        ("productpage", "10.96.0.11"),
        ("reviews", "10.96.0.12"),
        ("ratings", "10.96.0.14"),
        ("plain", "10.96.0.20"),
    ] {
        yaml.push_str(&format!(
            "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: {vip}
  selector: {{app: {name}}}
  ports: [{{name: http, port: 9080}}]
---
"
        ));
    }
    // A port of the ratings pods that declares no protocol, and is not HTTP.
    yaml.push_str(
        "apiVersion: v1
kind: Service
metadata: {name: tally, namespace: default}
spec:
  clusterIP: 10.96.0.40
  selector: {app: ratings}
  ports: [{name: tally, port: 7171}]
---
",
    );
    // An API outside the mesh, known by a ServiceEntry without addresses.
    yaml.push_str(&format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.external.test]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {}}}]
---
",
        net.ip(30)
    ));
    // A TLS service outside the mesh, told apart by its SNI.
    yaml.push_str(&format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [secure.external.test]
  ports: [{{number: 8443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: {}}}]
---
",
        net.ip(30)
    ));
    // A service that declares no protocol, outside the mesh (no sidecar at its address).
    yaml.push_str(&format!(
        "apiVersion: v1
kind: Service
metadata: {{name: legacy, namespace: default}}
spec:
  clusterIP: 10.96.0.30
  selector: {{app: legacy}}
  ports: [{{name: legacy, port: 7070}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: legacy, namespace: default}}
spec:
  address: {}
  labels: {{app: legacy}}
---
",
        net.ip(30)
    ));
    for (name, app, version, k, sidecar) in [
        ("sleep", "sleep", "v1", 10, true),
        ("productpage-v1", "productpage", "v1", 11, true),
        ("reviews-v1", "reviews", "v1", 12, true),
        ("reviews-v2", "reviews", "v2", 13, true),
        ("ratings-v1", "ratings", "v1", 14, true),
        ("plain", "plain", "v1", 20, false),
    ] {
        // Istio's injector labels the pods it gives a sidecar.
        let mesh = if sidecar {
            ", security.istio.io/tlsMode: istio"
        } else {
            ""
        };
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec:
  address: {}
  labels: {{app: {app}, version: {version}{mesh}}}
  serviceAccount: bookinfo-{app}
---
",
            net.ip(k)
        ));
    }
    yaml.push_str(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
",
    );
    yaml
}

/// What every pod's `/etc/hosts` says, as cluster DNS would answer.
const HOSTS: &str =
    "10.96.0.11 productpage productpage.default productpage.default.svc.cluster.local
10.96.0.12 reviews reviews.default reviews.default.svc.cluster.local
10.96.0.14 ratings ratings.default ratings.default.svc.cluster.local
10.96.0.20 plain plain.default plain.default.svc.cluster.local
10.96.0.30 legacy legacy.default legacy.default.svc.cluster.local
10.96.0.40 tally tally.default tally.default.svc.cluster.local
";

/// The workload's own resolver: it knows `upstream.example.test` (the outside host) and
/// nothing else.
const UPSTREAM_DNS: &str = r#"
import socket, struct, sys, threading
KNOWN = {"upstream.example.test", "headless.default.svc.cluster.local"}
def answer(data):
    i, labels = 12, []
    while data[i] != 0:
        labels.append(data[i + 1:i + 1 + data[i]].decode())
        i += data[i] + 1
    qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
    question = data[12:i + 5]
    known = ".".join(labels).lower() in KNOWN
    answers = b""
    if known and qtype == 1:
        answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + socket.inet_aton(sys.argv[2])
    flags = b"\x81\x80" if known else b"\x81\x83"
    return data[:2] + flags + struct.pack(">HHHH", 1, 1 if answers else 0, 0, 0) + question + answers
def tcp():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((sys.argv[1], 53))
    server.listen(16)
    while True:
        conn, _ = server.accept()
        n = struct.unpack(">H", conn.recv(2))[0]
        data = b""
        while len(data) < n:
            data += conn.recv(n - len(data))
        reply = answer(data)
        conn.sendall(struct.pack(">H", len(reply)) + reply)
        conn.close()
threading.Thread(target=tcp, daemon=True).start()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 53))
print("listening", flush=True)
while True:
    data, peer = sock.recvfrom(512)
    sock.sendto(answer(data), peer)
"#;

/// An A query over TCP (`NAME SERVER`); prints the first address of the answer.
const TCP_QUERY: &str = r#"
import socket, struct, sys
name, server = sys.argv[1], sys.argv[2]
q = b"\x12\x34\x01\x00" + struct.pack(">HHHH", 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00" + struct.pack(">HH", 1, 1)
s = socket.create_connection((server, 53), timeout=5)
s.sendall(struct.pack(">H", len(q)) + q)
n = struct.unpack(">H", s.recv(2))[0]
r = b""
while len(r) < n:
    r += s.recv(n - len(r))
print(socket.inet_ntoa(r[-4:]) if struct.unpack(">H", r[6:8])[0] else "none")
"#;

/// The mesh: the control plane on the host, and the pods. The processes stop before
/// their pods go (fields drop in order).
struct Mesh {
    _procs: Vec<Proc>,
    /// Each pod's sidecar, and how it was started.
    sidecars: std::collections::BTreeMap<String, Proc>,
    sidecar_args: std::collections::BTreeMap<String, Vec<String>>,
    control: Proc,
    net: Net,
    dir: TempDir,
    /// The control plane's plaintext port, for proxy-status.
    listen: String,
}

impl Mesh {
    fn start() -> Mesh {
        Self::start_with(false)
    }

    /// With `dns`, pods find services through their sidecar's DNS proxy (and their
    /// `/etc/hosts` knows nothing of them); the workload's resolver is a DNS server on
    /// the host that knows `upstream.example.test`.
    fn start_with(dns: bool) -> Mesh {
        let mut net = Net::new();
        let hosts = if dns { "" } else { HOSTS };
        let dir = TempDir::new("capture");
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("mesh.yaml"), mesh_yaml(&net)).unwrap();
        let state = dir.path().join("state");
        // Sidecars drain for as long as the mesh config says.
        let mesh_config = dir.path().join("mesh-config.yaml");
        std::fs::write(
            &mesh_config,
            "defaultConfig:\n  terminationDrainDuration: 3s\n",
        )
        .unwrap();
        let listen = format!("{}:{}", net.host(), free_port());
        let secure_port = free_port();
        let secure = format!("{}:{secure_port}", net.host());
        let control = Proc::start(
            dir.path(),
            "control",
            &[
                "control",
                "--config",
                config.to_str().unwrap(),
                "--listen",
                &listen,
                "--secure-listen",
                &secure,
                "--state-dir",
                state.to_str().unwrap(),
                "--mesh",
                mesh_config.to_str().unwrap(),
            ],
        );
        let host = net.host();
        eventually(Duration::from_secs(10), "the control plane", || {
            std::net::TcpStream::connect((host.as_str(), secure_port)).is_ok()
        });
        // What the proxies read, readable by their user.
        let shared = dir.path().join("pods");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::copy(state.join("root-cert.pem"), shared.join("root-cert.pem")).unwrap();
        let root = shared.join("root-cert.pem").display().to_string();
        let mut procs = Vec::new();
        let mut sidecars = std::collections::BTreeMap::new();
        let mut sidecar_args = std::collections::BTreeMap::new();
        let pods: [(&str, u8, &[&str]); 5] = [
            ("sleep", 10, &[]),
            (
                "productpage-v1",
                11,
                &["--call", "http://reviews:9080/reviews/0"],
            ),
            ("reviews-v1", 12, &[]),
            (
                "reviews-v2",
                13,
                &["--call", "http://ratings:9080/ratings/0"],
            ),
            ("ratings-v1", 14, &[]),
        ];
        for (name, k, calls) in pods {
            let ns = net.pod(name, k, hosts);
            if dns {
                net.resolv_conf(
                    &ns,
                    &format!(
                        "nameserver {}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
                        net.host()
                    ),
                );
            }
            let app = name.split('-').next().unwrap();
            let token = run(
                &[
                    "token",
                    "create",
                    "--state-dir",
                    state.to_str().unwrap(),
                    "--namespace",
                    "default",
                    "--service-account",
                    &format!("bookinfo-{app}"),
                ],
                None,
            );
            assert!(token.status.success());
            let token_file = shared.join(format!("{name}.token"));
            std::fs::write(&token_file, &token.stdout).unwrap();
            let iptables: &[&str] = if dns {
                &["iptables", "--redirect-dns"]
            } else {
                &["iptables"]
            };
            let out = net.exec(&ns, meshwork_bin(), iptables);
            assert!(
                out.status.success(),
                "meshwork iptables: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let ip = net.ip(k);
            let args: Vec<String> = [
                "proxy",
                "--control-plane",
                &secure,
                "--interception-mode",
                "REDIRECT",
                "--ip",
                &ip,
                "--namespace",
                "default",
                "--ca-root",
                &root,
                "--token-file",
                token_file.to_str().unwrap(),
                if dns {
                    "--dns-capture"
                } else {
                    "--dns-address=127.0.0.1:15053"
                },
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            sidecars.insert(
                name.to_string(),
                net.start_as_proxy(dir.path(), &format!("{name}-sidecar"), &ns, &refs),
            );
            sidecar_args.insert(name.to_string(), args);
            if name != "sleep" {
                // Apps listen on every address: their sidecar calls them at the pod's.
                let mut args = vec![
                    "echo", "--port", "9080", "--name", name, "--bind", "0.0.0.0",
                ];
                args.extend_from_slice(calls);
                procs.push(net.start(dir.path(), name, &ns, meshwork_bin(), &args));
                if name == "ratings-v1" {
                    // Raw bytes, the server first.
                    procs.push(net.start(
                        dir.path(),
                        "ratings-v1-tally",
                        &ns,
                        meshwork_bin(),
                        &[
                            "echo", "--port", "7171", "--name", "tally", "--bind", "0.0.0.0",
                            "--tcp",
                        ],
                    ));
                }
                if name == "reviews-v1" {
                    // A port no service declares.
                    procs.push(net.start(
                        dir.path(),
                        "reviews-v1-extra",
                        &ns,
                        meshwork_bin(),
                        &[
                            "echo", "--port", "9999", "--name", "extra", "--bind", "0.0.0.0",
                        ],
                    ));
                }
            }
        }
        // A pod without a sidecar, and a host outside the mesh.
        if dns {
            let script = dir.path().join("upstream_dns.py");
            std::fs::write(&script, UPSTREAM_DNS).unwrap();
            procs.push(Proc::start_program(
                dir.path(),
                "upstream-dns",
                "python3",
                &[script.to_str().unwrap(), &net.host(), &net.ip(30)],
                &[],
            ));
        }
        let plain = net.pod("plain", 20, hosts);
        procs.push(net.start(
            dir.path(),
            "plain",
            &plain,
            meshwork_bin(),
            &[
                "echo", "--port", "9080", "--name", "plain", "--bind", "0.0.0.0",
            ],
        ));
        let outside = net.pod("outside", 30, "");
        procs.push(net.start(
            dir.path(),
            "outside",
            &outside,
            meshwork_bin(),
            &[
                "echo", "--port", "8080", "--name", "outside", "--bind", "::",
            ],
        ));
        // A TLS server.
        let ca = TestCa::new("outside CA");
        let (cert, key) = ca.leaf(&["secure.external.test"], "secure.external.test");
        std::fs::write(dir.path().join("secure.crt"), cert).unwrap();
        std::fs::write(dir.path().join("secure.key"), key).unwrap();
        let (crt, key) = (dir.path().join("secure.crt"), dir.path().join("secure.key"));
        procs.push(net.start(
            dir.path(),
            "secure",
            &outside,
            "openssl",
            &[
                "s_server",
                "-accept",
                "8443",
                "-www",
                "-cert",
                crt.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
            ],
        ));
        // A server-first TCP service: it speaks before the client does.
        procs.push(net.start(
            dir.path(),
            "legacy",
            &outside,
            meshwork_bin(),
            &[
                "echo", "--port", "7070", "--name", "legacy", "--bind", "0.0.0.0", "--tcp",
            ],
        ));
        let mesh = Mesh {
            net,
            dir,
            _procs: procs,
            sidecars,
            sidecar_args,
            control,
            listen,
        };
        for name in [
            "sleep",
            "productpage-v1",
            "reviews-v1",
            "reviews-v2",
            "ratings-v1",
        ] {
            let ns = mesh.net.ns(name);
            let start = std::time::Instant::now();
            while mesh
                .net
                .status(&ns, &["http://127.0.0.1:15021/healthz/ready"])
                != 200
            {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "{name}'s sidecar is not ready:\n{}\ncontrol:\n{}",
                    mesh.log(&format!("{name}-sidecar")),
                    mesh.control.stderr()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        mesh
    }

    /// Starts a pod's sidecar again, as it was started first.
    fn restart_sidecar(&mut self, name: &str) {
        let args: Vec<&str> = self.sidecar_args[name].iter().map(String::as_str).collect();
        let ns = self.net.ns(name);
        let label = format!("{name}-sidecar-again");
        let proc = self.net.start_as_proxy(self.dir.path(), &label, &ns, &args);
        self.sidecars.insert(name.to_string(), proc);
    }

    fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{label}.stderr"))).unwrap_or_default()
    }

    /// The `x-echo-chain` a request from the sleep pod gets.
    fn chain_from_sleep(&self, url: &str, headers: &[&str]) -> String {
        let mut args = vec!["-o", "/dev/null", "-w", "%header{x-echo-chain}"];
        for h in headers {
            args.extend(["-H", h]);
        }
        args.push(url);
        let out = self.net.curl(&self.net.ns("sleep"), &args);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn edit(&self, edit: impl FnOnce(String) -> String) {
        let path = self.dir.path().join("config/mesh.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, edit(text)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
}

#[test]
fn apps_call_services_by_name_and_the_mesh_routes_them_over_mtls() {
    let mesh = Mesh::start();
    // The wire between the pods, from before the first call.
    let capture = Proc::start_program(
        mesh.dir.path(),
        "tcpdump",
        "tcpdump",
        &["-i", &mesh.net.bridge, "-l", "-nn", "-A", "tcp port 9080"],
        &[],
    );
    eventually(Duration::from_secs(5), "tcpdump listens", || {
        capture.stderr().contains("listening on")
    });
    // The app calls by name; the VirtualService routes: jason to v2 (which calls ratings).
    let url = "http://productpage:9080/productpage";
    let everyone = mesh.chain_from_sleep(url, &[]);
    assert_eq!(
        everyone,
        "productpage-v1(reviews-v1)",
        "sleep's sidecar:\n{}\nproductpage's sidecar:\n{}",
        mesh.log("sleep-sidecar"),
        mesh.log("productpage-v1-sidecar")
    );
    let jason = mesh.chain_from_sleep(url, &["end-user: jason"]);
    assert_eq!(jason, "productpage-v1(reviews-v2(ratings-v1))");
    // What crossed the bridge was TLS: packets to port 9080, no plaintext HTTP in them.
    std::thread::sleep(Duration::from_millis(300));
    drop(capture);
    let wire = std::fs::read_to_string(mesh.dir.path().join("tcpdump.stdout")).unwrap();
    let packets = wire.lines().filter(|l| l.contains(".9080")).count();
    assert!(packets > 10, "the calls crossed the bridge: {wire}");
    for plaintext in ["GET /", "HTTP/1.1", "x-echo-chain", "end-user"] {
        assert!(
            !wire.contains(plaintext),
            "{plaintext:?} on the wire:\n{wire}"
        );
    }
    // An app calling its own service: its sidecar's call to its own pod comes back in as
    // inbound, through the same mTLS and to the app.
    let out = mesh.net.curl(
        &mesh.net.ns("productpage-v1"),
        &["-o", "/dev/null", "-w", "%header{x-echo-chain}", url],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "productpage-v1(reviews-v1)",
        "{}",
        mesh.log("productpage-v1-sidecar")
    );
    // Bytes that are not HTTP, between two sidecars, on a port that declares no
    // protocol: the client's sidecar says so by ALPN, over mTLS like the rest.
    let tally = mesh.net.exec(
        &mesh.net.ns("sleep"),
        "bash",
        &[
            "-c",
            "exec 3<>/dev/tcp/tally/7171; timeout 5 head -n 1 <&3; printf 'ping\\n' >&3; timeout 5 head -n 1 <&3",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&tally.stdout),
        "tally\nping\n",
        "{}\n{}",
        mesh.log("sleep-sidecar"),
        mesh.log("ratings-v1-sidecar")
    );
    // Both sidecars learnt the other's workload from Istio's TCP metadata exchange, and
    // count the connection and its bytes with it.
    let tcp_metric = |pod: &str, metric: &str, reporter: &str, other: &str| -> (f64, String) {
        let out = mesh.net.curl(
            &mesh.net.ns(pod),
            &["-s", "http://127.0.0.1:15021/stats/prometheus"],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{metric}{{"))
                    && l.contains(&format!("reporter=\"{reporter}\""))
                    && l.contains(other)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (value, text)
    };
    let client = "source_workload=\"sleep\"";
    let server = "destination_workload=\"ratings-v1\"";
    for (pod, reporter, other) in [
        ("ratings-v1", "destination", client),
        ("sleep", "source", server),
    ] {
        let (opened, text) = tcp_metric(pod, "istio_tcp_connections_opened_total", reporter, other);
        assert_eq!(opened, 1.0, "{text}");
        eventually(Duration::from_secs(5), "the connection closed", || {
            tcp_metric(pod, "istio_tcp_connections_closed_total", reporter, other).0 == 1.0
        });
    }
    // The server's sidecar got "ping\n" and sent "tally\n" and the echo.
    for (metric, bytes) in [
        ("istio_tcp_received_bytes_total", 5.0),
        ("istio_tcp_sent_bytes_total", 11.0),
    ] {
        let (value, text) = tcp_metric("ratings-v1", metric, "destination", client);
        assert_eq!(value, bytes, "{metric}: {text}");
    }
    // The control plane knows every sidecar.
    let status = run(&["proxy-status", "--control-plane", &mesh.listen], None);
    let table = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        table.lines().filter(|l| l.contains(".default")).count(),
        5,
        "{table}"
    );
}

#[test]
fn strict_refuses_a_pod_without_a_sidecar_and_the_outbound_policy_decides_the_rest() {
    let mesh = Mesh::start();
    let plain = mesh.net.ns("plain");
    let sleep = mesh.net.ns("sleep");
    // Without a sidecar there is no client certificate: STRICT refuses the plaintext call
    // to the pod, which its app would have answered.
    let reviews = format!("http://{}:9080/reviews/0", mesh.net.ip(12));
    assert_eq!(mesh.net.status(&plain, &[&reviews]), 0);
    // A mesh app calls the pod without a sidecar in plaintext (auto mTLS).
    assert_eq!(
        mesh.chain_from_sleep("http://plain:9080/", &[]),
        "plain",
        "{}",
        mesh.log("sleep-sidecar")
    );
    // A host the mesh does not know: ALLOW_ANY (the default) passes HTTP and other bytes
    // through.
    let outside = format!("http://{}:8080/", mesh.net.ip(30));
    assert_eq!(mesh.net.status(&sleep, &[&outside]), 200);
    let raw = |ns: &str| {
        let script = format!(
            "exec 3<>/dev/tcp/{}/8080; printf 'hello\\r\\n\\r\\n' >&3; timeout 3 cat <&3; echo \" exit=$?\"",
            mesh.net.ip(30)
        );
        let out = mesh.net.exec(ns, "bash", &["-c", &script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A service on a port that declares no protocol, whose server speaks first: the client
    // sends nothing, so after the detection time its bytes are TCP, routed by the service's
    // address.
    let first_line = mesh.net.exec(
        &sleep,
        "bash",
        &[
            "-c",
            "exec 3<>/dev/tcp/legacy/7070; timeout 5 head -n 1 <&3",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&first_line.stdout).trim(),
        "legacy",
        "{}",
        mesh.log("sleep-sidecar")
    );
    assert!(raw(&sleep).starts_with("HTTP/1.1 400"), "{}", raw(&sleep));
    // IPv6 too.
    let outside6 = format!("http://[{}]:8080/", mesh.net.ip6(30));
    assert_eq!(
        mesh.net.status(&sleep, &["-g", &outside6]),
        200,
        "{}",
        mesh.log("sleep-sidecar")
    );
    // Another SNI on that port passes through to where the app meant to go.
    let elsewhere = format!("other.external.test:8443:{}", mesh.net.ip(30));
    assert_eq!(
        mesh.net.status(
            &sleep,
            &[
                "-k",
                "--resolve",
                &elsewhere,
                "https://other.external.test:8443/"
            ]
        ),
        200
    );
    // A TLS service is routed by the SNI of the ClientHello: the app resolved it to an
    // address where nothing is, and reaches it anyway.
    let nowhere = format!("secure.external.test:8443:{}", mesh.net.ip(99));
    assert_eq!(
        mesh.net.status(
            &sleep,
            &[
                "-k",
                "--resolve",
                &nowhere,
                "https://secure.external.test:8443/"
            ]
        ),
        200,
        "{}",
        mesh.log("sleep-sidecar")
    );
    // REGISTRY_ONLY: HTTP to it is answered 502, other bytes get nothing.
    mesh.edit(|t| {
        t + "---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  egress:
  - hosts: [\"./*\"]
"
    });
    eventually(Duration::from_secs(10), "REGISTRY_ONLY applies", || {
        mesh.net.status(&sleep, &[&outside]) == 502
    });
    // No route: the connection is closed at once (`timeout` did not have to end it).
    let blocked = raw(&sleep);
    assert!(
        blocked.trim() == "exit=0" || blocked.trim() == "exit=1",
        "closed, nothing said: {blocked:?}"
    );
    // The same over IPv6, which the sidecar captures too.
    assert_eq!(mesh.net.status(&sleep, &["-g", &outside6]), 502);
    // The mesh's own services are still reached.
    assert_eq!(
        mesh.chain_from_sleep("http://productpage:9080/productpage", &[]),
        "productpage-v1(reviews-v1)"
    );
    // A call to a capture port itself is refused, not handed on to itself for ever.
    for target in [
        "http://127.0.0.1:15001/".to_string(),
        format!("http://{}:15001/", mesh.net.ip(10)),
    ] {
        assert_eq!(mesh.net.status(&sleep, &[&target]), 0, "{target}");
    }
    assert!(
        mesh.log("sleep-sidecar")
            .contains("a connection to the capture port itself")
    );
    // Under PERMISSIVE the pod without a sidecar is served: STRICT was what refused it.
    mesh.edit(|t| t.replace("mtls: {mode: STRICT}", "mtls: {mode: PERMISSIVE}"));
    eventually(Duration::from_secs(10), "PERMISSIVE serves it", || {
        mesh.net.status(&plain, &[&reviews]) == 200
    });
    // A port no service declares reaches the app too; what listens on 127.0.0.1 alone
    // (the sidecar's admin port) does not, since calls come to the pod's address.
    let extra = format!("http://{}:9999/", mesh.net.ip(12));
    assert_eq!(mesh.net.status(&plain, &[&extra]), 200);
    let admin = format!("http://{}:15000/config_dump", mesh.net.ip(12));
    assert_eq!(mesh.net.status(&plain, &[&admin]), 0);
}

#[test]
fn iptables_installs_once_however_often_it_runs_and_cleanup_removes_it() {
    let mut net = Net::new();
    let ns = net.pod("alone", 10, "");
    let rules = |family: &str| {
        let out = net.exec(&ns, &format!("{family}-save"), &["-t", "nat"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A ") && l.contains("ISTIO"))
            .count()
    };
    for _ in 0..2 {
        let out = net.exec(&ns, meshwork_bin(), &["iptables"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(rules("iptables"), 17, "installed once");
    assert_eq!(rules("ip6tables"), 17, "IPv6 too");
    // Installed again with DNS, then without: the rules follow.
    let out = net.exec(&ns, meshwork_bin(), &["iptables", "--redirect-dns"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rules("iptables"), 23, "with DNS");
    let out = net.exec(&ns, meshwork_bin(), &["iptables"]);
    assert!(out.status.success());
    assert_eq!(rules("iptables"), 17, "without DNS again");
    let out = net.exec(&ns, meshwork_bin(), &["iptables", "--cleanup"]);
    assert!(out.status.success());
    assert_eq!(rules("iptables"), 0);
    assert_eq!(rules("ip6tables"), 0);
}

#[test]
fn dry_run_prints_the_rules_a_pods_annotations_ask_for() {
    let dir = TempDir::new("iptables");
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1
  namespace: default
  annotations:
    traffic.sidecar.istio.io/excludeOutboundPorts: \"5432\"
    traffic.sidecar.istio.io/includeInboundPorts: \"9080\"
spec:
  containers: [{name: app, image: reviews}]
",
    )
    .unwrap();
    let out = run(
        &["iptables", "--dry-run", "--pod", pod.to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "# iptables-restore --noflush",
        "# ip6tables-restore --noflush",
        "-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    // A bad annotation is named, and nothing is printed.
    std::fs::write(
        &pod,
        "apiVersion: v1
kind: Pod
metadata:
  name: x
  annotations: {traffic.sidecar.istio.io/excludeOutboundPorts: \"db\"}
spec:
  containers: [{name: app, image: x}]
",
    )
    .unwrap();
    let out = run(
        &["iptables", "--dry-run", "--pod", pod.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("excludeOutboundPorts: \"db\" is not a port")
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_dns_proxy_answers_mesh_names_and_forwards_the_rest() {
    let mesh = Mesh::start_with(true);
    eventually(Duration::from_secs(5), "the upstream resolver", || {
        std::fs::read_to_string(mesh.dir.path().join("upstream-dns.stdout"))
            .is_ok_and(|s| s.contains("listening"))
    });
    let sleep = mesh.net.ns("sleep");
    let resolve = |name: &str| {
        let out = mesh.net.exec(&sleep, "getent", &["ahostsv4", name]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    // Short names, by the search domains of resolv.conf, and the other forms.
    assert_eq!(
        resolve("reviews"),
        "10.96.0.12",
        "{}",
        mesh.log("sleep-sidecar")
    );
    assert_eq!(resolve("reviews.default"), "10.96.0.12");
    assert_eq!(resolve("reviews.default.svc.cluster.local"), "10.96.0.12");
    // DNS over TCP too.
    let tcp = mesh.net.exec(
        &sleep,
        "python3",
        &[
            "-c",
            TCP_QUERY,
            "ratings.default.svc.cluster.local",
            &mesh.net.host(),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&tcp.stdout).trim(),
        "10.96.0.14",
        "{}",
        String::from_utf8_lossy(&tcp.stderr)
    );
    // The app calls by name, as before.
    assert_eq!(
        mesh.chain_from_sleep("http://productpage:9080/productpage", &[]),
        "productpage-v1(reviews-v1)"
    );
    // A ServiceEntry without addresses gets one: it resolves, and the call connects.
    let api = resolve("api.external.test");
    assert!(api.starts_with("240.240."), "{api:?}");
    let out = mesh.net.curl(
        &sleep,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %header{x-echo-name}",
            "http://api.external.test:8080/",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 outside");
    // Everything else goes to the workload's resolver, under the cluster's domain too
    // (a headless Service is the cluster DNS's), over UDP and over TCP.
    assert_eq!(
        resolve("headless.default.svc.cluster.local"),
        mesh.net.ip(30)
    );
    assert_eq!(resolve("nothing.default.svc.cluster.local"), "");
    assert_eq!(resolve("upstream.example.test"), mesh.net.ip(30));
    let tcp = mesh.net.exec(
        &sleep,
        "python3",
        &["-c", TCP_QUERY, "upstream.example.test", &mesh.net.host()],
    );
    assert_eq!(
        String::from_utf8_lossy(&tcp.stdout).trim(),
        mesh.net.ip(30),
        "{}",
        String::from_utf8_lossy(&tcp.stderr)
    );
    assert_eq!(
        mesh.net
            .status(&sleep, &["http://upstream.example.test:8080/"]),
        200
    );
}

#[test]
fn the_app_waits_for_its_sidecar_which_drains_on_sigterm_then_exits() {
    let mut mesh = Mesh::start();
    let sleep = mesh.net.ns("sleep");
    let slow = "http://reviews:9080/reviews/0?delay=1500ms";
    // A request in flight when the sidecar is told to stop.
    let in_flight = {
        let ns = sleep.clone();
        std::thread::spawn(move || {
            let out = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ])
                .arg(slow)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let pid = mesh.sidecars["sleep"].pid().to_string();
    let started = std::time::Instant::now();
    support::pods::sh("kill", &["-TERM", &pid]);
    // It finishes what it was doing, then exits (within its drain time, 3 s from the mesh
    // config).
    assert_eq!(
        in_flight.join().unwrap(),
        "200",
        "{}",
        mesh.log("sleep-sidecar")
    );
    let exit = mesh
        .sidecars
        .get_mut("sleep")
        .unwrap()
        .wait_exit(Duration::from_secs(10))
        .expect("the sidecar exits");
    assert!(exit.success(), "{exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let log = mesh.log("sleep-sidecar");
    assert!(log.contains("drained"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("SIGTERM: draining") && l.contains("3s")),
        "the mesh config's terminationDrainDuration: {log}"
    );
    // Without its sidecar, the app's captured calls have nowhere to go.
    assert_eq!(
        mesh.net.status(&sleep, &["http://reviews:9080/reviews/0"]),
        0
    );
    // `meshwork wait` holds the app until the sidecar started again is ready.
    mesh.restart_sidecar("sleep");
    let held = mesh.net.exec(
        &sleep,
        "sh",
        &[
            "-c",
            &format!(
                "{} wait --timeout 20s && curl -sS -o /dev/null -w %{{http_code}} http://reviews:9080/reviews/0",
                meshwork_bin()
            ),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&held.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&held.stderr)
    );
    assert!(String::from_utf8_lossy(&held.stderr).contains("the proxy is ready"));
}

#[test]
fn wait_gives_up_on_a_status_port_that_never_answers() {
    // Accepts, and says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = run(&["wait", "--status", &addr, "--timeout", "1500ms"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer"));
    drop(silent);
}

#[test]
fn wait_gives_up_when_the_proxy_never_gets_ready() {
    let out = run(
        &["wait", "--status", "127.0.0.1:1", "--timeout", "300ms"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the proxy at 127.0.0.1:1 is not ready after 300ms"),
        "{err}"
    );
}
