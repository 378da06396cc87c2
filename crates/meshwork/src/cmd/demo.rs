//! `meshwork demo`: the whole mesh on one machine, no Kubernetes: the control plane, an
//! ingress gateway, and Bookinfo's shape (productpage, details, reviews v1/v2/v3, ratings)
//! as `meshwork echo` apps, each behind its own sidecar on a loopback address. The apps
//! call the next service where Bookinfo's do (productpage calls details and reviews;
//! reviews v2 and v3 call ratings) through their sidecars' egress listeners.
//!
//! `--print-config DIR` writes the YAML and prints the commands that run it by hand, so
//! that a user can change it and run it with `meshwork control`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `meshwork demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Write the demo's configuration into DIR and print the commands that run it, instead
    /// of running it.
    #[arg(long, value_name = "DIR")]
    print_config: Option<PathBuf>,
    /// With --print-config: print the commands as JSON (`[{"name", "args"}]`).
    #[arg(long, requires = "print_config")]
    json: bool,
    /// The first of the demo's ports: the services' port (Bookinfo's 9080); the gateway,
    /// apps, admin and status ports follow it (30 ports in all).
    #[arg(long, default_value_t = 9080)]
    base_port: u16,
    /// The control plane's port (istiod's 15010).
    #[arg(long, default_value_t = 15010)]
    control_port: u16,
    /// The control plane's TLS port, for certificates (istiod's 15012).
    #[arg(long, default_value_t = 15012)]
    secure_port: u16,
    /// The first three parts of the workloads' loopback addresses.
    #[arg(long, default_value = "127.0.10")]
    network: String,
}

/// One Bookinfo workload.
struct Workload {
    app: &'static str,
    version: &'static str,
    /// The services it calls, with their paths.
    calls: &'static [(&'static str, &'static str)],
}

const WORKLOADS: [Workload; 6] = [
    Workload {
        app: "productpage",
        version: "v1",
        calls: &[("details", "/details/0"), ("reviews", "/reviews/0")],
    },
    Workload {
        app: "details",
        version: "v1",
        calls: &[],
    },
    Workload {
        app: "reviews",
        version: "v1",
        calls: &[],
    },
    Workload {
        app: "reviews",
        version: "v2",
        calls: &[("ratings", "/ratings/0")],
    },
    Workload {
        app: "reviews",
        version: "v3",
        calls: &[("ratings", "/ratings/0")],
    },
    Workload {
        app: "ratings",
        version: "v1",
        calls: &[],
    },
];

const SERVICES: [&str; 4] = ["productpage", "details", "reviews", "ratings"];

/// Where everything of the demo listens.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Every service's port (9080).
    pub service_port: u16,
    /// The ingress gateway's port.
    pub gateway_port: u16,
    /// The control plane's port.
    pub control_port: u16,
    /// The control plane's TLS port.
    pub secure_port: u16,
    /// First app port (on 127.0.0.1); workload `i` uses `app_base + i`.
    pub app_base: u16,
    /// First admin port; proxy `i` (the gateway last) uses `admin_base + i`.
    pub admin_base: u16,
    /// First status port.
    pub status_base: u16,
    /// `127.0.10`: workload `i` is `127.0.10.(i+1)`, its egress `127.0.10.(i+101)`, the
    /// gateway `127.0.10.100`.
    pub network: String,
}

impl Layout {
    /// The layout from a base port.
    pub fn new(base: u16, control_port: u16, secure_port: u16, network: &str) -> Layout {
        Layout {
            service_port: base,
            gateway_port: base + 1,
            control_port,
            secure_port,
            app_base: base + 2,
            admin_base: base + 10,
            status_base: base + 20,
            network: network.to_string(),
        }
    }

    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.network, i + 1)
    }

    fn egress_ip(&self, i: usize) -> String {
        format!("{}.{}", self.network, i + 101)
    }

    fn gateway_ip(&self) -> String {
        format!("{}.100", self.network)
    }

    /// The gateway's URL.
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}/productpage", self.gateway_port)
    }
}

fn name(w: &Workload) -> String {
    format!("{}-{}", w.app, w.version)
}

/// The demo's configuration: Istio's own resources, as a user writes them for VMs.
pub fn yaml(l: &Layout) -> String {
    let p = l.service_port;
    let mut docs = Vec::new();
    for s in SERVICES {
        docs.push(format!(
            "apiVersion: v1
kind: Service
metadata: {{name: {s}, namespace: default, labels: {{app: {s}}}}}
spec:
  selector: {{app: {s}}}
  ports: [{{name: http, port: {p}, targetPort: {p}}}]"
        ));
    }
    for (i, w) in WORKLOADS.iter().enumerate() {
        let n = name(w);
        let ip = l.ip(i);
        let app_port = l.app_base + i as u16;
        docs.push(format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {n}, namespace: default}}
spec:
  address: {ip}
  labels: {{app: {app}, version: {version}}}
  serviceAccount: bookinfo-{app}",
            app = w.app,
            version = w.version
        ));
        let egress = if w.calls.is_empty() {
            String::new()
        } else {
            format!(
                "
  egress:
  - port: {{number: {p}, protocol: HTTP, name: http}}
    bind: {egress}
    captureMode: NONE
    hosts: [\"./*\"]",
                egress = l.egress_ip(i)
            )
        };
        docs.push(format!(
            "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: {n}, namespace: default}}
spec:
  workloadSelector:
    labels: {{app: {app}, version: {version}}}
  ingress:
  - port: {{number: {p}, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:{app_port}
    captureMode: NONE{egress}",
            app = w.app,
            version = w.version
        ));
    }
    let g = l.gateway_port;
    docs.push(format!(
        "apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports: [{{name: http2, port: {g}, targetPort: {g}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  address: {ip}
  labels: {{istio: ingressgateway, app: istio-ingressgateway}}
  serviceAccount: istio-ingressgateway-service-account
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {g}, name: http, protocol: HTTP}}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [bookinfo-gateway]
  http:
  - match:
    - uri: {{exact: /productpage}}
    - uri: {{prefix: /static}}
    - uri: {{prefix: /api/v1/products}}
    route:
    - destination: {{host: productpage, port: {{number: {p}}}}}",
        ip = l.gateway_ip()
    ));
    for s in SERVICES {
        let subsets: Vec<String> = WORKLOADS
            .iter()
            .filter(|w| w.app == s)
            .map(|w| format!("  - {{name: {v}, labels: {{version: {v}}}}}", v = w.version))
            .collect();
        docs.push(format!(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {s}, namespace: default}}
spec:
  host: {s}
  subsets:
{}",
            subsets.join("\n")
        ));
    }
    docs.push(reviews_rules(50, 50));
    // mTLS on: only mesh clients, with their workload certificates, reach the services.
    docs.push(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}"
            .to_string(),
    );
    docs.join("\n---\n") + "\n"
}

/// Bookinfo's reviews rules: `end-user: jason` to v2; everyone else split between v1
/// and v3.
pub fn reviews_rules(v1: u32, v3: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {{exact: jason}}
    route:
    - destination: {{host: reviews, subset: v2}}
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {v1}
    - destination: {{host: reviews, subset: v3}}
      weight: {v3}"
    )
}

/// One process of the demo.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// What it is (`control`, `productpage-v1`, `productpage-v1-sidecar`).
    pub name: String,
    /// `meshwork` arguments.
    pub args: Vec<String>,
    /// Its `/healthz/ready` port, for proxies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_port: Option<u16>,
    /// For a command that runs to completion: the file its output goes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes: Option<String>,
}

/// The processes that run the demo, in start order.
pub fn steps(l: &Layout, config: &Path) -> Vec<Step> {
    let control = format!("127.0.0.1:{}", l.control_port);
    // Proxies speak to the control plane over mTLS on its TLS port.
    let secure = format!("127.0.0.1:{}", l.secure_port);
    let state = config.join(".meshwork");
    let token_file = |name: &str| state.join(format!("{name}.token")).display().to_string();
    let token = |name: &str, ns: &str, sa: &str| Step {
        name: format!("{name}-token"),
        args: vec![
            "token".into(),
            "create".into(),
            "--state-dir".into(),
            state.display().to_string(),
            "--namespace".into(),
            ns.into(),
            "--service-account".into(),
            sa.into(),
        ],
        status_port: None,
        writes: Some(token_file(name)),
    };
    let mut out = vec![Step {
        name: "control".into(),
        args: vec![
            "control".into(),
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            control.clone(),
            "--secure-listen".into(),
            secure.clone(),
            "--state-dir".into(),
            state.display().to_string(),
        ],
        status_port: None,
        writes: None,
    }];
    let proxy = |name: String, role: &str, ip: String, ns: &str, i: usize, token: String| Step {
        name,
        args: vec![
            "proxy".into(),
            "--role".into(),
            role.into(),
            "--control-plane".into(),
            secure.clone(),
            "--ip".into(),
            ip,
            "--namespace".into(),
            ns.into(),
            "--admin".into(),
            format!("127.0.0.1:{}", l.admin_base + i as u16),
            "--status".into(),
            format!("127.0.0.1:{}", l.status_base + i as u16),
            "--control-plane-auth-policy".into(),
            "MUTUAL_TLS".into(),
            "--ca-root".into(),
            state.join("root-cert.pem").display().to_string(),
            "--token-file".into(),
            token,
        ],
        status_port: Some(l.status_base + i as u16),
        writes: None,
    };
    for (i, w) in WORKLOADS.iter().enumerate() {
        let n = name(w);
        let mut args = vec![
            "echo".to_string(),
            "--port".into(),
            (l.app_base + i as u16).to_string(),
            "--name".into(),
            n.clone(),
        ];
        for (service, path) in w.calls {
            args.extend([
                "--call".into(),
                format!("http://{service}:{}{path}", l.service_port),
            ]);
        }
        if !w.calls.is_empty() {
            args.extend([
                "--via".into(),
                format!("{}:{}", l.egress_ip(i), l.service_port),
            ]);
        }
        out.push(Step {
            name: n.clone(),
            args,
            status_port: None,
            writes: None,
        });
        out.push(token(&n, "default", &format!("bookinfo-{}", w.app)));
        out.push(proxy(
            format!("{n}-sidecar"),
            "sidecar",
            l.ip(i),
            "default",
            i,
            token_file(&n),
        ));
    }
    out.push(token(
        "istio-ingressgateway",
        "istio-system",
        "istio-ingressgateway-service-account",
    ));
    out.push(proxy(
        "istio-ingressgateway".into(),
        "gateway",
        l.gateway_ip(),
        "istio-system",
        WORKLOADS.len(),
        token_file("istio-ingressgateway"),
    ));
    out
}

fn shell_line(step: &Step) -> String {
    let args: Vec<String> = step
        .args
        .iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/=,".contains(c))
            {
                a.clone()
            } else {
                format!("'{a}'")
            }
        })
        .collect();
    match &step.writes {
        Some(file) => format!("meshwork {} > {file}", args.join(" ")),
        None => format!("meshwork {} &", args.join(" ")),
    }
}

fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /healthz/ready HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.ends_with(b"200")
}

struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in self.0.iter_mut().rev() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        let until = Instant::now() + Duration::from_secs(6);
        for (_, c) in self.0.iter_mut() {
            while Instant::now() < until {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_demo(l: &Layout) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("meshwork-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = dir.join("bookinfo.yaml");
    std::fs::write(&config, yaml(l))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find meshwork itself: {e}"))?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let mut children = Children(Vec::new());
    let steps = steps(l, &dir);
    eprintln!(
        "meshwork demo: starting {} processes (logs in {})",
        steps.len(),
        logs.display()
    );
    for step in &steps {
        if let Some(file) = &step.writes {
            let out = Command::new(&exe)
                .args(&step.args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", step.name))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed: {}",
                    step.name,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::fs::write(file, &out.stdout).map_err(|e| format!("cannot write {file}: {e}"))?;
            continue;
        }
        let log = std::fs::File::create(logs.join(format!("{}.log", step.name)))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&exe)
            .args(&step.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", step.name))?;
        children.0.push((step.name.clone(), child));
        if step.name == "control" {
            let until = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", l.control_port)).is_err() {
                if Instant::now() > until {
                    return Err(format!(
                        "the control plane did not start; see {}",
                        logs.join("control.log").display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    }
    for step in &steps {
        let Some(port) = step.status_port else {
            continue;
        };
        let until = Instant::now() + Duration::from_secs(15);
        while !ready(port) {
            if Instant::now() > until {
                return Err(format!(
                    "{} did not become ready; see {}",
                    step.name,
                    logs.join(format!("{}.log", step.name)).display()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        eprintln!("  ready: {}", step.name);
    }
    let cp = format!("--control-plane 127.0.0.1:{}", l.control_port);
    println!(
        "\nBookinfo is running on meshwork, with mTLS between its sidecars (PeerAuthentication STRICT in namespace default). Try:\n\n  curl -s {url}\n  curl -s -H 'end-user: jason' {url}    # reviews v2\n  curl -s -o /dev/null -w '%header{{x-echo-chain}}\\n' {url}\n\n  meshwork proxy-status {cp}\n  meshwork proxy-config routes productpage-v1.default {cp}\n  meshwork proxy-config endpoints istio-ingressgateway.istio-system {cp}\n\nThe configuration is {config}: edit it and the mesh follows.\nCtrl-C stops everything.",
        url = l.gateway_url(),
        config = config.display()
    );
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(super::proxy::terminated());
    eprintln!("meshwork demo: stopping");
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs the demo, or writes its config.
pub fn run(args: Args) -> ExitCode {
    let layout = Layout::new(
        args.base_port,
        args.control_port,
        args.secure_port,
        &args.network,
    );
    if let Some(dir) = args.print_config {
        let file = dir.join("bookinfo.yaml");
        // The state directory too, so that the printed token lines can write into it.
        if let Err(e) = std::fs::create_dir_all(dir.join(".meshwork"))
            .and_then(|()| std::fs::write(&file, yaml(&layout)))
        {
            eprintln!("error: cannot write {}: {e}", file.display());
            return ExitCode::from(1);
        }
        let steps = steps(&layout, &dir);
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&steps).unwrap_or_default()
            );
        } else {
            eprintln!("wrote {}; run it with:", file.display());
            for s in &steps {
                println!("{}", shell_line(s));
            }
        }
        return ExitCode::SUCCESS;
    }
    match run_demo(&layout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
