//! Bookinfo on the mesh for end-to-end tests: each piece of `meshwork demo` its own
//! process, started from the commands `meshwork demo --print-config --json` gives.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

/// One process of the demo, as `--print-config --json` lists it.
#[derive(serde::Deserialize)]
pub struct Step {
    pub name: String,
    pub args: Vec<String>,
    pub status_port: Option<u16>,
    pub writes: Option<String>,
}

/// Bookinfo on the mesh, each piece its own process.
pub struct Bookinfo {
    pub dir: TempDir,
    pub base: u16,
    pub control: u16,
    pub steps: Vec<Step>,
    pub procs: BTreeMap<String, Proc>,
}

impl Bookinfo {
    /// Writes the demo's config and starts every process, then waits until every proxy
    /// is ready.
    pub fn start() -> Bookinfo {
        Self::start_with(&[])
    }

    /// The same, with more arguments for the control plane.
    pub fn start_with(control_args: &[&str]) -> Bookinfo {
        let base = free_block(30);
        let control = free_port();
        let dir = TempDir::new("mesh");
        let config = dir.path().join("config");
        let out = run(
            &[
                "demo",
                "--print-config",
                config.to_str().unwrap(),
                "--json",
                "--base-port",
                &base.to_string(),
                "--control-port",
                &control.to_string(),
                "--secure-port",
                &free_port().to_string(),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let steps: Vec<Step> = serde_json::from_slice(&out.stdout).expect("steps as JSON");
        let mut mesh = Bookinfo {
            dir,
            base,
            control,
            steps,
            procs: BTreeMap::new(),
        };
        if let Some(control) = mesh.steps.iter_mut().find(|s| s.name == "control") {
            control
                .args
                .extend(control_args.iter().map(|a| a.to_string()));
        }
        let names: Vec<String> = mesh.steps.iter().map(|s| s.name.clone()).collect();
        for name in &names {
            mesh.launch(name);
        }
        for s in &mesh.steps {
            if let Some(port) = s.status_port {
                let url = format!("http://127.0.0.1:{port}/healthz/ready");
                let p = &mesh.procs[&s.name];
                let start = Instant::now();
                while status(&[&url]) != 200 {
                    assert!(
                        start.elapsed() < Duration::from_secs(20),
                        "{} did not become ready:\n{}\ncontrol:\n{}",
                        s.name,
                        p.stderr(),
                        mesh.procs["control"].stderr()
                    );
                    std::thread::sleep(Duration::from_millis(25));
                }
            }
        }
        mesh
    }

    /// Starts one step; the control plane is waited for.
    pub fn launch(&mut self, name: &str) {
        let step = self.steps.iter().find(|s| s.name == name).expect("a step");
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        if let Some(file) = &step.writes {
            let out = run(&args, None);
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(file, &out.stdout).unwrap();
            return;
        }
        let p = Proc::start(self.dir.path(), name, &args);
        if name == "control" {
            let port = self.control;
            eventually(Duration::from_secs(10), "the control plane", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        self.procs.insert(name.to_string(), p);
    }

    /// The value of `flag` in a step's arguments.
    pub fn flag(&self, step: &str, flag: &str) -> String {
        let args = &self
            .steps
            .iter()
            .find(|s| s.name == step)
            .expect("a step")
            .args;
        let i = args.iter().position(|a| a == flag).expect("the flag");
        args[i + 1].clone()
    }

    pub fn stop(&mut self, name: &str) {
        self.procs.remove(name);
    }

    pub fn control_plane(&self) -> String {
        format!("127.0.0.1:{}", self.control)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/productpage", self.base + 1)
    }

    /// `n` requests through the gateway, counted by `STATUS CHAIN`.
    pub fn chains(&self, n: usize, headers: &[&str]) -> BTreeMap<String, usize> {
        chains(&format!("{}?[1-{n}]", self.url()), headers)
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("config/bookinfo.yaml")
    }

    /// Rewrites the config file with `edit` applied, atomically.
    pub fn edit(&self, edit: impl FnOnce(String) -> String) {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = edit(text.clone());
        assert_ne!(changed, text, "the edit changes the config");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, changed).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    pub fn meshwork(&self, args: &[&str]) -> (bool, String, String) {
        let cp = self.control_plane();
        let mut all = args.to_vec();
        all.extend(["--control-plane", &cp]);
        let out = run(&all, None);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn proxy_status(&self) -> String {
        let (ok, out, err) = self.meshwork(&["proxy-status"]);
        assert!(ok, "proxy-status fails: {err}");
        out
    }

    /// The `istio_requests_total` lines a proxy (`reviews-v1-sidecar`) serves on its status
    /// port.
    pub fn requests_total(&self, step: &str) -> Vec<String> {
        let port = self
            .steps
            .iter()
            .find(|s| s.name == step)
            .and_then(|s| s.status_port)
            .expect("a proxy step");
        let out = curl(&["-s", &format!("http://127.0.0.1:{port}/stats/prometheus")]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .map(str::to_string)
            .collect()
    }

    /// The proxy-status lines of proxies whose every type is SYNCED.
    pub fn synced(&self) -> usize {
        self.proxy_status()
            .lines()
            .skip(1)
            .filter(|l| l.contains(".default") || l.contains(".istio-system"))
            .filter(|l| l.split_whitespace().filter(|w| *w == "SYNCED").count() == 7)
            .count()
    }
}
