//! A real Prometheus server (Debian's `prometheus`, installed by scripts/test.sh) started
//! on a free port, scraping `/stats/prometheus` on the ports it is given every second.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, status};

/// A Prometheus server, stopped when dropped.
pub struct Prometheus {
    child: Child,
    /// Its HTTP API's port.
    pub port: u16,
}

impl Prometheus {
    /// The answer of the HTTP API to the instant query `promql`, as JSON.
    pub fn api_query(&self, promql: &str) -> Result<serde_json::Value, String> {
        let out = super::curl(&[
            "-s",
            "-G",
            &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            "--data-urlencode",
            &format!("query={promql}"),
        ]);
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus scraping each of `targets` every second.
pub fn prometheus_of(dir: &std::path::Path, targets: &[u16]) -> Prometheus {
    let targets: Vec<String> = targets
        .iter()
        .map(|t| format!("\"127.0.0.1:{t}\""))
        .collect();
    let targets = targets.join(", ");
    let bin = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect(
            "Prometheus is not installed: scripts/test.sh installs Debian's prometheus package",
        );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: proxies\n  metrics_path: /stats/prometheus\n  static_configs: [{{targets: [{targets}]}}]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.stderr")).unwrap())
        .spawn()
        .expect("prometheus starts");
    eventually(Duration::from_secs(20), "Prometheus ready", || {
        status(&[&format!("http://127.0.0.1:{port}/-/ready")]) == 200
    });
    Prometheus { child, port }
}
