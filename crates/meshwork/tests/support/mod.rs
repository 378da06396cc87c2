//! Helpers for end-to-end tests: the real `meshwork` binary as separate processes, free
//! ports, temporary config directories, test certificates, curl, and a bounded wait
//! instead of sleeps.
#![allow(dead_code)]

pub mod bookinfo;
pub mod pods;
pub mod prometheus;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn meshwork_bin() -> &'static str {
    env!("CARGO_BIN_EXE_meshwork")
}

/// Runs `meshwork ARGS` to completion with `stdin` as its standard input.
pub fn run(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(meshwork_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshwork runs");
    let input = stdin.unwrap_or("").to_string();
    let mut pipe = child.stdin.take().unwrap();
    std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    child.wait_with_output().unwrap()
}

/// Claims `port` for this test process: a file per port, made with `create_new`, so that
/// two test processes running at once never pick the same port between choosing it and
/// binding it. A claim older than five minutes (longer than a test may run) is stale and
/// taken over.
fn reserve(port: u16) -> bool {
    let dir = std::env::temp_dir().join("meshwork-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(port.to_string());
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
            .is_ok()
    };
    if create() {
        return true;
    }
    let stale = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > Duration::from_secs(300));
    stale && std::fs::remove_file(&file).is_ok() && create()
}

/// A port that was free a moment ago, for a server to bind. It is drawn from 20000-28999,
/// below Linux's ephemeral range (32768-60999), so no client connection of a parallel test
/// can take it as its source port before the server binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id()).wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    for _ in 0..1000 {
        let n = seed.wrapping_add(NEXT.fetch_add(7, Ordering::Relaxed).wrapping_mul(104_729));
        let port = 20000 + (n % 9000) as u16;
        let free = TcpListener::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free && reserve(port) {
            return port;
        }
    }
    panic!("no free port in 20000-28999");
}

/// Where blocks of ports come from: 29000-32767, in aligned slots of [`BLOCK`] ports, kept
/// apart from [`free_port`]'s single ports so that those never break up a block.
const BLOCKS_FROM: u16 = 29000;
const BLOCK: u16 = 30;

/// `n` (at most 30) consecutive ports that were free a moment ago, all claimed for this
/// test process; returns the first. For commands that derive their ports from a base
/// (`meshwork demo --base-port`).
pub fn free_block(n: u16) -> u16 {
    assert!(n <= BLOCK, "blocks are {BLOCK} ports");
    let slots = (32767 - BLOCKS_FROM) / BLOCK;
    let start = (u64::from(std::process::id()).wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64)
        % u64::from(slots);
    for k in 0..slots {
        let slot = ((start + u64::from(k)) % u64::from(slots)) as u16;
        let base = BLOCKS_FROM + slot * BLOCK;
        let free = (base..base + n).all(|p| {
            TcpListener::bind(("0.0.0.0", p)).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok()
        });
        if !free {
            continue;
        }
        let mut claimed = Vec::new();
        for p in base..base + n {
            if !reserve(p) {
                break;
            }
            claimed.push(p);
        }
        if claimed.len() == usize::from(n) {
            return base;
        }
        // Someone else has part of it: give back what was taken.
        let dir = std::env::temp_dir().join("meshwork-test-ports");
        for p in claimed {
            let _ = std::fs::remove_file(dir.join(p.to_string()));
        }
    }
    panic!("no block of {n} free ports in {BLOCKS_FROM}-32767");
}

/// Polls `check` until it holds or `limit` passes.
pub fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// A child process killed when dropped.
pub struct Proc {
    child: Child,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Proc {
    /// Starts `meshwork ARGS` with stdout and stderr in files under `dir`.
    pub fn start(dir: &Path, label: &str, args: &[&str]) -> Proc {
        Self::start_env(dir, label, args, &[])
    }

    /// Starts `meshwork ARGS` with these environment variables set.
    pub fn start_env(dir: &Path, label: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Self::start_program(dir, label, meshwork_bin(), args, env)
    }

    /// Starts `PROGRAM ARGS` (`ip netns exec ...`) with stdout and stderr in files.
    pub fn start_program(
        dir: &Path,
        label: &str,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let stdout_path = dir.join(format!("{label}.stdout"));
        let stderr_path = dir.join(format!("{label}.stderr"));
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("MESHWORK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} starts: {e}"));
        Proc {
            child,
            stdout_path,
            stderr_path,
        }
    }

    /// What the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit, and returns how it exited.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "meshwork-{label}-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file atomically (temporary name, then rename), as config tools do.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.0.join(name)).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos ^ (N.fetch_add(1, Ordering::Relaxed) << 32)
}

/// Runs curl with these arguments.
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs")
}

/// Runs `openssl ARGS` without input; what it printed, stdout then stderr.
pub fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An HTTP status from curl (`-o /dev/null -w %{http_code}`), 0 when the request failed.
pub fn status(args: &[&str]) -> u16 {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(&all);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Echo backends, `meshwork up` on a config, and the ports they use.
pub struct Mesh {
    pub dir: TempDir,
    pub admin: u16,
    pub health: u16,
    pub up: Option<Proc>,
    pub backends: Vec<Proc>,
}

impl Mesh {
    /// A directory for config, with no process yet.
    pub fn new(label: &str) -> Mesh {
        Mesh {
            dir: TempDir::new(label),
            admin: free_port(),
            health: free_port(),
            up: None,
            backends: Vec::new(),
        }
    }

    /// Starts an echo backend on a free port and returns the port.
    pub fn echo(&mut self, name: &str) -> u16 {
        self.echo_with(name, &[])
    }

    /// Starts an echo backend that logs one JSON line per request on its stdout (the last
    /// of `backends`), and returns the port.
    pub fn echo_logged(&mut self, name: &str) -> u16 {
        self.echo_with(name, &["--log"])
    }

    fn echo_with(&mut self, name: &str, extra: &[&str]) -> u16 {
        let port = free_port();
        let port_arg = port.to_string();
        let mut args = vec!["echo", "--port", &port_arg, "--name", name];
        args.extend_from_slice(extra);
        let p = Proc::start(self.dir.path(), name, &args);
        eventually(Duration::from_secs(10), "the echo backend", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        self.backends.push(p);
        port
    }

    /// Starts a raw TCP echo backend on a free port and returns the port.
    pub fn tcp_echo(&mut self, name: &str) -> u16 {
        let port = free_port();
        let p = Proc::start(
            self.dir.path(),
            name,
            &["echo", "--tcp", "--port", &port.to_string(), "--name", name],
        );
        eventually(Duration::from_secs(10), "the tcp echo backend", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        self.backends.push(p);
        port
    }

    /// Starts `openssl s_server -www` with this certificate on a free port.
    pub fn tls_backend(&mut self, name: &str, cert: &str, key: &str) -> u16 {
        let port = free_port();
        let dir = self.dir.path();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        let out = std::fs::File::create(dir.join(format!("{name}.stdout"))).unwrap();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-www",
                "-accept",
                &port.to_string(),
                "-cert",
            ])
            .arg(&c)
            .arg("-key")
            .arg(&k)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        eventually(Duration::from_secs(10), "the TLS backend", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        self.backends.push(Proc {
            child,
            stdout_path: dir.join(format!("{name}.stdout")),
            stderr_path: dir.join(format!("{name}.stdout")),
        });
        port
    }

    /// Starts `meshwork up` on the config directory (its `config/` subdirectory) and
    /// waits until it is ready.
    pub fn up(&mut self, extra: &[&str]) {
        let config = self.dir.path().join("config");
        let admin = format!("127.0.0.1:{}", self.admin);
        let health = format!("127.0.0.1:{}", self.health);
        let mut args = vec![
            "up",
            config.to_str().unwrap(),
            "--admin",
            &admin,
            "--health",
            &health,
        ];
        args.extend_from_slice(extra);
        let p = Proc::start(self.dir.path(), "up", &args);
        let url = format!("http://127.0.0.1:{}/healthz/ready", self.health);
        let start = Instant::now();
        while status(&[&url]) != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "meshwork up did not become ready:\n{}",
                p.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        self.up = Some(p);
    }

    /// Writes a config file (atomically) into the config directory.
    pub fn config(&self, name: &str, text: &str) {
        let dir = self.dir.path().join("config");
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }

    /// The up process's log.
    pub fn log(&self) -> String {
        self.up.as_ref().map(|p| p.stderr()).unwrap_or_default()
    }
}

/// A CA and certificates it signs, made fresh for each test.
pub struct TestCa {
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// An intermediate CA it signs, and its private key, as PEM.
    pub fn intermediate(&self, name: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf certificate for these DNS names, and its private key, as PEM.
    pub fn leaf(&self, names: &[&str], common_name: &str) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name.to_string());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf certificate for DNS `names` that also carries the URI SAN `uri` (a SPIFFE
    /// id), and its private key, as PEM.
    pub fn leaf_with_uri(&self, names: &[&str], uri: &str) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(uri.try_into().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A `kubernetes.io/tls` Secret as cert-manager writes it (base64 `data`).
pub fn tls_secret(namespace: &str, name: &str, cert: &str, key: &str, ca: Option<&str>) -> String {
    let b64 = |s: &str| base64_encode(s.as_bytes());
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(cert),
        b64(key)
    );
    if let Some(ca) = ca {
        out.push_str(&format!("  ca.crt: {}\n", b64(ca)));
    }
    out
}

/// An `Opaque` Secret with these keys (base64 `data`).
pub fn opaque_secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: Opaque\ndata:\n"
    );
    for (key, value) in data {
        out.push_str(&format!("  {key}: {}\n", base64_encode(value.as_bytes())));
    }
    out
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `istio-ingressgateway` Service (port 80 bound on `http`) and a Gateway `gw` in
/// istio-system that serves `hosts` (a YAML list) over plain HTTP on port 80.
pub fn http_gateway(http: u16, hosts: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports: [{{name: http2, port: 80, targetPort: {http}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: {hosts}
"#
    )
}

/// Runs curl (URL globs allowed) and counts the answers as `"STATUS ECHO-NAME"`: `"200 web"`
/// for a backend's answer, `"503 "` for a gateway's, `"000 "` for a failed request.
pub fn answers(args: &[&str]) -> std::collections::BTreeMap<String, usize> {
    let mut all = vec![
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %header{x-echo-name}\n",
    ];
    all.extend_from_slice(args);
    let out = curl(&all);
    let mut counts = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    counts
}

/// Runs curl on `url` (globs allowed) and counts the answers as `"STATUS CHAIN"`, the
/// chain being the echo apps' `x-echo-chain`: `"200 productpage-v1(details-v1,...)"`.
pub fn chains(url: &str, headers: &[&str]) -> std::collections::BTreeMap<String, usize> {
    let mut args = vec![
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %header{x-echo-chain}\n",
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url);
    let out = curl(&args);
    let mut counts = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    counts
}

/// What a [`Scripted`] backend does with a request.
pub enum Reply {
    /// Answer at once with this status.
    Status(u16),
    /// Keep the request until [`Scripted::release`] (at most 20 s), then answer 200.
    Hold,
    /// Close the connection without an answer (a reset before headers).
    Close,
}

/// An HTTP/1.1 backend in the test process whose answer to each request is decided by the
/// test: `reply(path_and_query, n)` where `n` counts the requests for that path (1 for the
/// first). It reads the whole request body (content-length or chunked), answers with
/// `x-echo-name` and, as body, `name body_bytes`, and records every request it saw.
pub struct Scripted {
    pub port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, usize)>>>,
    released: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Scripted {
    pub fn start(
        name: &str,
        reply: impl Fn(&str, usize) -> Reply + Send + Sync + 'static,
    ) -> Scripted {
        use std::sync::{Arc, Condvar, Mutex};
        let listener = TcpListener::bind(("127.0.0.1", free_port())).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let (name, reply) = (Arc::<str>::from(name), Arc::new(reply));
        let (seen2, released2) = (seen.clone(), released.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (name, reply, seen, released) = (
                    name.clone(),
                    reply.clone(),
                    seen2.clone(),
                    released2.clone(),
                );
                std::thread::spawn(move || {
                    let _ = serve_scripted(stream, &name, &*reply, &seen, &released);
                });
            }
        });
        Scripted {
            port,
            seen,
            released,
        }
    }

    /// Every request so far: its path and query, and the size of its body.
    pub fn seen(&self) -> Vec<(String, usize)> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests for this path and query arrived.
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|(p, _)| p == path).count()
    }

    /// Lets every held request (and every later one) answer.
    pub fn release(&self) {
        *self.released.0.lock().unwrap() = true;
        self.released.1.notify_all();
    }
}

fn serve_scripted(
    stream: std::net::TcpStream,
    name: &str,
    reply: &(dyn Fn(&str, usize) -> Reply + Send + Sync),
    seen: &std::sync::Mutex<Vec<(String, usize)>>,
    released: &(std::sync::Mutex<bool>, std::sync::Condvar),
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line.starts_with("transfer-encoding:") && line.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = 0;
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                let mut chunk = vec![0u8; n + 2];
                reader.read_exact(&mut chunk)?;
                body += n;
                if n == 0 {
                    break;
                }
            }
        } else {
            let mut rest = vec![0u8; length];
            reader.read_exact(&mut rest)?;
            body = length;
        }
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.push((path.clone(), body));
            seen.iter().filter(|(p, _)| *p == path).count()
        };
        let status = match reply(&path, n) {
            Reply::Status(s) => s,
            Reply::Close => return Ok(()),
            Reply::Hold => {
                let (lock, cv) = released;
                let guard = lock.lock().unwrap();
                let _ = cv
                    .wait_timeout_while(guard, Duration::from_secs(20), |r| !*r)
                    .unwrap();
                200
            }
        };
        let text = format!("{name} {body}");
        write!(
            writer,
            "HTTP/1.1 {status} Scripted\r\nx-echo-name: {name}\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        )?;
    }
}

/// The host of [`app_config`].
pub const APP_HOST: &str = "Host: app.example.test";

/// A route of [`app_config`] to `app` without retries.
pub const APP_ROUTE: &str = "  - retries: {attempts: 0}\n    route: [{destination: {host: app}}]\n";

/// Writes a config for host `app.example.test` on gateway port `http`: a Service `app`
/// (namespace apps, port `http`) whose endpoints are WorkloadEntries at 127.0.0.1 on
/// `ports`, a DestinationRule whose `trafficPolicy` is `policy` (YAML indented by 4), and
/// a VirtualService whose `http` routes are `routes` (YAML list items indented by 2).
pub fn app_config(mesh: &Mesh, http: u16, ports: &[u16], policy: &str, routes: &str) {
    let mut entries = String::new();
    for (i, p) in ports.iter().enumerate() {
        entries += &format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: app-{i}, namespace: apps}}\nspec: {{address: 127.0.0.1, labels: {{app: app}}, ports: {{http: {p}}}}}\n"
        );
    }
    mesh.config("endpoints.yaml", &entries);
    let gateway = http_gateway(http, r#"["app.example.test"]"#);
    mesh.config(
        "config.yaml",
        &format!(
            r#"{gateway}---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: apps}}
spec:
  selector: {{app: app}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: app, namespace: apps}}
spec:
  host: app
  trafficPolicy:
{policy}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: apps}}
spec:
  hosts: [app.example.test]
  gateways: [istio-system/gw]
  http:
{routes}"#
        ),
    );
}

/// Writes a mesh config with a JSON access log on stdout and returns its path.
pub fn json_access_log(mesh: &Mesh) -> String {
    let file = mesh.dir.path().join("mesh.yaml");
    std::fs::write(
        &file,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )
    .unwrap();
    file.to_str().unwrap().to_string()
}

/// The `istio-ingressgateway` Service with a TCP port (31400 bound on `http_target`) and a
/// TLS port (443 bound on `tls_target`), followed by `---`.
pub fn gateway_service(http_target: u16, tls_target: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports:
  - {{name: tcp, port: 31400, targetPort: {http_target}}}
  - {{name: tls, port: 443, targetPort: {tls_target}}}
---
"#
    )
}

/// A TLS gateway on `tls` (443) terminating TLS in `mode` (SIMPLE or MUTUAL, with the
/// Secret `istio-system/db-tls`) for `db.example.test`, and forwarding the plain TCP
/// stream to `backend` (`db.internal`).
pub fn tls_terminated_db(tcp: u16, tls: u16, backend: u16, mode: &str) -> String {
    gateway_service(tcp, tls)
        + &format!(
            r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tls-gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: [db.example.test]
    tls: {{mode: {mode}, credentialName: db-tls}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: apps}}
spec:
  hosts: [db.internal]
  ports: [{{number: 5000, name: tcp, protocol: TCP, targetPort: {backend}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: apps}}
spec:
  hosts: [db.example.test]
  gateways: [istio-system/tls-gw]
  tcp:
  - route: [{{destination: {{host: db.internal, port: {{number: 5000}}}}}}]
"#
        )
}

/// A TCP gateway on `tcp` routing everything to one TCP backend (`name.apps.internal`),
/// whose DestinationRule has this `connectionPool.tcp`.
pub fn single_tcp_route(tcp: u16, tls: u16, name: &str, backend: u16, tcp_pool: &str) -> String {
    gateway_service(tcp, tls)
        + &format!(
            r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp-gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: apps}}
spec:
  hosts: [{name}.apps.internal]
  ports: [{{number: 7000, name: tcp, protocol: TCP, targetPort: {backend}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: apps}}
spec:
  host: {name}.apps.internal
  trafficPolicy:
    connectionPool:
      tcp: {tcp_pool}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp, namespace: apps}}
spec:
  hosts: ["*"]
  gateways: [istio-system/tcp-gw]
  tcp:
  - route: [{{destination: {{host: {name}.apps.internal, port: {{number: 7000}}}}}}]
"#
        )
}

/// A listener that never accepts, with its accept queue filled: further SYNs are dropped,
/// so a connect to it neither succeeds nor fails. Keep the value alive while it is used.
pub struct Silent {
    pub port: u16,
    _listener: TcpListener,
    _fillers: Vec<std::net::TcpStream>,
}

impl Silent {
    pub fn new() -> Silent {
        let listener = TcpListener::bind(("127.0.0.1", free_port())).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
            assert!(fillers.len() < 10_000, "the accept queue never filled");
        }
        Silent {
            port: addr.port(),
            _listener: listener,
            _fillers: fillers,
        }
    }
}

/// The seconds left on the keepalive timer of the established connection to `port` (the
/// gateway's upstream socket), from `ss`.
pub fn keepalive_timer(port: u16) -> u64 {
    let text = established_to(port);
    // ss prints the remaining time as `1min16sec` or `59sec`.
    text.split("timer:(keepalive,")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .map(|t| {
            let (min, sec) = t.split_once("min").unwrap_or(("0", t));
            let secs = sec.trim_end_matches("sec").split('.').next().unwrap_or("0");
            min.parse::<u64>().unwrap_or(0) * 60 + secs.parse::<u64>().unwrap_or(0)
        })
        .unwrap_or_else(|| panic!("no keepalive timer on the upstream socket: {text}"))
}

/// `ss`'s lines (with timers) for the established connections to `port`: the gateway's
/// upstream sockets.
pub fn established_to(port: u16) -> String {
    let out = Command::new("ss")
        .args([
            "-tnoH",
            "state",
            "established",
            "dport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .expect("ss (iproute2) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file of `size` bytes in the mesh's directory, as curl's `--data-binary` argument.
pub fn body_file(mesh: &Mesh, size: usize) -> String {
    let file = mesh.dir.path().join(format!("body-{size}"));
    std::fs::write(&file, vec![b'b'; size]).unwrap();
    format!("@{}", file.display())
}

/// The gateway Service (80 to `http`, 443 to `https`) and the Gateway
/// `istio-system/public` with these `servers` (YAML list items, indented two spaces).
pub fn public_gateway(http: u16, https: u16, servers: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: {http}}}
  - {{name: https, port: 443, targetPort: {https}}}
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: public, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
{servers}"#
    )
}

/// The Service `shop/app` backed by one WorkloadEntry on 127.0.0.1 per port.
pub fn app_service(ports: &[u16]) -> String {
    let mut out = "apiVersion: v1\nkind: Service\nmetadata: {name: app, namespace: shop}\nspec:\n  selector: {app: app}\n  ports: [{name: http, port: 80}]\n".to_string();
    for (i, port) in ports.iter().enumerate() {
        out += &format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: app-{i}, namespace: shop}}\nspec: {{address: 127.0.0.1, labels: {{app: app}}, ports: {{http: {port}}}}}\n"
        );
    }
    out
}

/// The VirtualService `shop/app` for `hosts` on `istio-system/public`, with these `http`
/// routes (YAML list items, indented two spaces).
pub fn app_routes(hosts: &str, routes: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: app, namespace: shop}}\nspec:\n  hosts: {hosts}\n  gateways: [istio-system/public]\n  http:\n{routes}"
    )
}

/// Port 80 of the gateway (bound on `http`, every host) routing `hosts` with `routes`
/// (YAML `http:` items) to the Service `shop/app` on `backends`.
pub fn app_on_port_80(mesh: &Mesh, http: u16, backends: &[u16], hosts: &str, routes: &str) {
    let servers = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
    mesh.config(
        "config.yaml",
        &format!(
            "{}---\n{}---\n{}",
            public_gateway(http, free_port(), servers),
            app_service(backends),
            app_routes(hosts, routes)
        ),
    );
}

/// A gateway serving `app.example.test` on port 80 (bound on the port returned) from the
/// echo server `app`, with `policies` (YAML documents) and a JSON access log on stdout.
pub fn policy_gateway(label: &str, policies: &str) -> (Mesh, u16) {
    policy_gateway_with(label, policies, "")
}

/// The same with more mesh config (YAML lines).
pub fn policy_gateway_with(label: &str, policies: &str, mesh_config: &str) -> (Mesh, u16) {
    let mut mesh = Mesh::new(label);
    let (http, app) = (free_port(), mesh.echo("app"));
    let servers = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
    mesh.config(
        "config.yaml",
        &format!(
            "{}---\n{}---\n{}---\n{policies}",
            public_gateway(http, free_port(), servers),
            app_service(&[app]),
            app_routes(
                "[app.example.test]",
                "  - route: [{destination: {host: app}}]\n"
            ),
        ),
    );
    let mesh_file = json_access_log(&mesh);
    let mut text = std::fs::read_to_string(&mesh_file).unwrap();
    text.push_str(mesh_config);
    std::fs::write(&mesh_file, text).unwrap();
    mesh.up(&["--mesh", &mesh_file]);
    (mesh, http)
}

/// Status and body of a GET of `path` on `app.example.test` with these headers; the path
/// is sent as written (curl normalizes nothing).
pub fn app_get(http: u16, path: &str, headers: &[&str]) -> (u16, String) {
    let url = format!("http://127.0.0.1:{http}{path}");
    let mut args = vec![
        "-s",
        "--path-as-is",
        "-w",
        "\n%{http_code}",
        "-H",
        "Host: app.example.test",
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(&url);
    let out = String::from_utf8_lossy(&curl(&args).stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Serves the gRPC `service` on a free port of loopback, from a thread of its own; the
/// port, once it listens.
pub fn serve_grpc<S>(service: S) -> u16
where
    S: tonic::codegen::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let port = free_port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let _ = runtime.block_on(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve(addr),
        );
    });
    eventually(Duration::from_secs(5), "the collector listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    port
}
