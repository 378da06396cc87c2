//! Pods for tests of transparent interception: network namespaces joined by veth pairs on
//! a bridge, one subnet `10.250.N.0/24` per test (the bridge, `mwbrN`, is the claim on
//! it), the host side at `10.250.N.1`. Each pod has its own `/etc/hosts` (what
//! `ip netns exec` mounts from `/etc/netns/NAME/`). Everything is removed when dropped.
//!
//! This needs root (CAP_NET_ADMIN): without it the test fails, loudly.

use std::process::Command;

use super::*;

/// Runs a command; panics with its output when it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bridge and the pods on it. Drop it after the processes in its pods.
pub struct Net {
    /// `N` of `10.250.N.0/24`.
    pub index: u8,
    pub bridge: String,
    pods: Vec<String>,
    veths: Vec<String>,
}

impl Net {
    /// Claims a free subnet and makes its bridge. Panics when not root.
    pub fn new() -> Net {
        let uid = sh("id", &["-u"]);
        assert_eq!(
            uid.trim(),
            "0",
            "network namespace tests need root (CAP_NET_ADMIN); run them as root, as .ci/run does"
        );
        for index in 1..=250u8 {
            let bridge = format!("mwbr{index}");
            let made = Command::new("ip")
                .args(["link", "add", &bridge, "type", "bridge"])
                .output()
                .expect("ip runs");
            if !made.status.success() {
                continue;
            }
            let net = Net {
                index,
                bridge,
                pods: Vec::new(),
                veths: Vec::new(),
            };
            // A bridge takes the lowest MAC of its ports unless it has its own: the pods'
            // ARP entries for the host would go stale as pods join.
            sh(
                "ip",
                &[
                    "link",
                    "set",
                    &net.bridge,
                    "address",
                    &format!("02:00:0a:fa:{index:02x}:01"),
                ],
            );
            sh(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}/24", net.host()),
                    "dev",
                    &net.bridge,
                ],
            );
            sh("ip", &["link", "set", &net.bridge, "up"]);
            return net;
        }
        panic!("no free subnet 10.250.N.0/24 (bridges mwbr1-250 all exist)");
    }

    /// The host's address on the bridge.
    pub fn host(&self) -> String {
        format!("10.250.{}.1", self.index)
    }

    /// The address of pod `k`.
    pub fn ip(&self, k: u8) -> String {
        format!("10.250.{}.{k}", self.index)
    }

    /// The IPv6 address of pod `k` (every pod has one, on the same link).
    pub fn ip6(&self, k: u8) -> String {
        format!("fd00:250:{}::{k}", self.index)
    }

    /// The namespace name of a pod.
    pub fn ns(&self, pod: &str) -> String {
        format!("mw{}-{pod}", self.index)
    }

    /// A pod at address `k` with these `/etc/hosts` lines.
    pub fn pod(&mut self, name: &str, k: u8, hosts: &str) -> String {
        let ns = self.ns(name);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh("ip", &["netns", "add", &ns]);
        self.pods.push(ns.clone());
        let host_side = format!("mw{}v{k}", self.index);
        let _ = Command::new("ip")
            .args(["link", "del", &host_side])
            .output();
        self.veths.push(host_side.clone());
        sh(
            "ip",
            &[
                "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        sh("ip", &["link", "set", &host_side, "master", &self.bridge]);
        sh("ip", &["link", "set", &host_side, "up"]);
        let ip = self.ip(k);
        let ip6 = format!("{}/64", self.ip6(k));
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            // No duplicate address detection: the address works at once.
            vec!["-6", "addr", "add", &ip6, "dev", "eth0", "nodad"],
            vec!["link", "set", "eth0", "up"],
            vec!["route", "add", "default", "via", &self.host()],
        ] {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend(args);
            sh("ip", &all);
        }
        let etc = format!("/etc/netns/{ns}");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            format!("{etc}/hosts"),
            format!("127.0.0.1 localhost\n{ip} {name}\n{hosts}"),
        )
        .unwrap();
        ns
    }

    /// Pod `ns`'s `/etc/resolv.conf`.
    pub fn resolv_conf(&self, ns: &str, text: &str) {
        std::fs::write(format!("/etc/netns/{ns}/resolv.conf"), text).unwrap();
    }

    /// `COMMAND ARGS` in pod `ns`, to completion.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .output()
            .expect("ip netns exec runs")
    }

    /// curl in pod `ns` (as root: an app, captured), as [`curl`] runs it.
    pub fn curl(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec!["-sS", "--max-time", "10"];
        all.extend_from_slice(args);
        self.exec(ns, "curl", &all)
    }

    /// The HTTP status curl gets in pod `ns`; 0 when the request failed.
    pub fn status(&self, ns: &str, args: &[&str]) -> u16 {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&self.curl(ns, &all).stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// A long-running `PROGRAM ARGS` in pod `ns`.
    pub fn start(&self, dir: &Path, label: &str, ns: &str, program: &str, args: &[&str]) -> Proc {
        let mut all = vec!["netns", "exec", ns, program];
        all.extend_from_slice(args);
        Proc::start_program(dir, label, "ip", &all, &[])
    }

    /// `meshwork ARGS` in pod `ns` as the proxy's user (UID and GID 1337, as Istio's).
    pub fn start_as_proxy(&self, dir: &Path, label: &str, ns: &str, args: &[&str]) -> Proc {
        let mut all = vec![
            "--reuid",
            "1337",
            "--regid",
            "1337",
            "--clear-groups",
            meshwork_bin(),
        ];
        all.extend_from_slice(args);
        self.start(dir, label, ns, "setpriv", &all)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for veth in &self.veths {
            let _ = Command::new("ip").args(["link", "del", veth]).output();
        }
        for ns in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
