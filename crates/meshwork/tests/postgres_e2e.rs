//! Seed 004: PostgreSQL behind the gateway with TLS PASSTHROUGH and SNI routing. Two real
//! PostgreSQL servers (SSL on, their own certificates) behind one gateway port; `psql`
//! connects by name with `sslmode=verify-full`, and each name reaches its own server.
//! Also: PostgreSQL 17's direct TLS (ALPN `postgresql`, no SSLRequest) is routed by SNI,
//! and a client that does not ask for TLS is refused with a reason in the log.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

/// A PostgreSQL server in a temporary directory, stopped when dropped.
struct Postgres {
    data: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server packages are installed (scripts/test.sh installs postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    cmd.args(args).output().expect("a PostgreSQL tool runs")
}

impl Postgres {
    fn start(dir: &Path, name: &str, cert: &str, key: &str) -> Postgres {
        let bin = pg_bin();
        let base = dir.join(name);
        std::fs::create_dir_all(&base).unwrap();
        let data = base.join("data");
        let run = |c: &mut Command| {
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // The postgres user must own its files; the temporary tree is opened to it.
        run(Command::new("chmod").args(["0755"]).arg(dir));
        run(Command::new("chmod").args(["0777"]).arg(&base));
        let out = as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        std::fs::write(data.join("server.crt"), cert).unwrap();
        std::fs::write(data.join("server.key"), key).unwrap();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\n",
            data.display()
        );
        let mut pgconf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        pgconf.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), pgconf).unwrap();
        if Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false)
        {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data));
        }
        run(Command::new("chmod")
            .args(["0600"])
            .arg(data.join("server.key")));
        let log = base.join("server.log");
        std::fs::write(&log, "").unwrap();
        run(Command::new("chmod").args(["0666"]).arg(&log));
        let out = as_postgres(
            &bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Postgres { data, bin, port }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

fn psql(url: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([url, "-X", "-tA", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs")
}

#[test]
fn psql_reaches_each_database_by_sni_through_one_gateway_port() {
    let mut mesh = Mesh::new("postgres");
    let gw = free_port();
    let ca = TestCa::new("database root");
    let (c1, k1) = ca.leaf(&["db1.example.test"], "db1.example.test");
    let (c2, k2) = ca.leaf(&["db2.example.test"], "db2.example.test");
    let (c3, k3) = ca.leaf(&["db3.example.test"], "db3.example.test");
    let db1 = Postgres::start(mesh.dir.path(), "db1", &c1, &k1);
    let db2 = Postgres::start(mesh.dir.path(), "db2", &c2, &k2);
    // A TLS server standing in for PostgreSQL 17 with direct TLS.
    let direct = mesh.tls_backend("db3", &c3, &k3);
    let endpoints = |name: &str, port: u16| {
        format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: tcp-postgres, port: 5432}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: {name}, namespace: default}}
subsets:
- addresses: [{{ip: 127.0.0.1}}]
  ports: [{{name: tcp-postgres, port: {port}}}]
---
"#
        )
    };
    let mut config = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports: [{{name: tcp-postgres, port: 5432, targetPort: {gw}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: testing-postgresql-gateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port:
      number: 5432
      name: tcp-postgres
      protocol: TLS
    hosts: [db1.example.test, db2.example.test, db3.example.test]
    tls:
      mode: PASSTHROUGH
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: testing-postgresql-vs, namespace: default}}
spec:
  hosts: [db1.example.test, db2.example.test, db3.example.test]
  gateways: [istio-system/testing-postgresql-gateway]
  tls:
  - match:
    - port: 5432
      sniHosts: [db1.example.test]
    route:
    - destination:
        host: db1-postgresql.default.svc.cluster.local
        port: {{number: 5432}}
  - match:
    - port: 5432
      sniHosts: [db2.example.test]
    route:
    - destination:
        host: db2-postgresql.default.svc.cluster.local
        port: {{number: 5432}}
  - match:
    - port: 5432
      sniHosts: [db3.example.test]
    route:
    - destination:
        host: db3-postgresql.default.svc.cluster.local
        port: {{number: 5432}}
---
"#
    );
    config += &endpoints("db1-postgresql", db1.port);
    config += &endpoints("db2-postgresql", db2.port);
    config += &endpoints("db3-postgresql", direct);
    mesh.config("postgres.yaml", &config);
    let root = mesh.dir.path().join("root.pem");
    std::fs::write(&root, &ca.cert_pem).unwrap();
    mesh.up(&[]);

    for (name, db) in [("db1", &db1), ("db2", &db2)] {
        let url = format!(
            "postgresql://postgres@{name}.example.test:{gw}/postgres?sslmode=verify-full&sslrootcert={}&hostaddr=127.0.0.1",
            root.display()
        );
        let out = psql(
            &url,
            "select current_setting('port'), ssl from pg_stat_ssl where pid = pg_backend_pid()",
        );
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            mesh.log()
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{}|t", db.port),
            "{name} reaches its own server over TLS"
        );
    }

    // PostgreSQL 17's direct TLS: the ClientHello comes first, with ALPN `postgresql`.
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{gw}"),
            "-servername",
            "db3.example.test",
            "-alpn",
            "postgresql",
            "-CAfile",
        ])
        .arg(&root)
        .args(["-verify_return_error", "-brief"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("CN = db3.example.test") || text.contains("CN=db3.example.test"),
        "{text}"
    );

    // Without TLS there is no SNI to route by: refused, with the reason logged.
    let url = format!("postgresql://postgres@127.0.0.1:{gw}/postgres?sslmode=disable");
    assert!(!psql(&url, "select 1").status.success());
    eventually(Duration::from_secs(5), "the refusal in the log", || {
        mesh.log().contains("did not request TLS")
    });
}
