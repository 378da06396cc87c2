//! `meshwork iptables`: what Istio's `istio-iptables` (and its CNI plugin) does for a
//! pod. In the current network namespace it installs the `nat` rules that redirect the
//! workload's inbound TCP to the sidecar's inbound capture port (15006) and its outbound
//! TCP to the outbound one (15001). The proxy's own traffic (its UID and GID, 1337 as in
//! Istio) is left alone, as is traffic to 127.0.0.1; the proxy's calls to its own pod
//! address over loopback come back in as inbound. The rules live in chains of their
//! own (`ISTIO_INBOUND`, `ISTIO_IN_REDIRECT`, `ISTIO_OUTPUT`, `ISTIO_REDIRECT`), so
//! installing again replaces them and `--cleanup` removes them. IPv6 gets the same rules
//! with ip6tables.
//!
//! The knobs are Istio's, as flags or as the `traffic.sidecar.istio.io/*` annotations of
//! a Pod manifest given with `--pod`; a flag wins over an annotation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

/// The chains the rules live in.
const CHAINS: [&str; 5] = [
    "ISTIO_INBOUND",
    "ISTIO_REDIRECT",
    "ISTIO_IN_REDIRECT",
    "ISTIO_OUTPUT",
    "ISTIO_DNS",
];

/// The jumps from the built-in chains into them: (chain, rule).
const JUMPS: [(&str, &str); 2] = [
    ("PREROUTING", "-p tcp -j ISTIO_INBOUND"),
    ("OUTPUT", "-p tcp -j ISTIO_OUTPUT"),
];

/// The jump of `--redirect-dns`.
const DNS_JUMP: (&str, &str) = ("OUTPUT", "-p udp --dport 53 -j ISTIO_DNS");

/// The annotation prefix Istio reads these knobs from.
const ANNOTATION: &str = "traffic.sidecar.istio.io/";

/// Arguments of `meshwork iptables`.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// The port outbound TCP is redirected to (the sidecar's `--outbound-capture-port`).
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    /// The port inbound TCP is redirected to (the sidecar's `--inbound-capture-port`).
    #[arg(long, default_value_t = 15006)]
    inbound_port: u16,
    /// The UID the proxy runs as: its traffic is not redirected.
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,
    /// The GID the proxy runs as.
    #[arg(long, default_value_t = 1337)]
    proxy_gid: u32,
    /// Inbound ports to redirect (`*` for all), as `includeInboundPorts`.
    #[arg(long)]
    include_inbound_ports: Option<String>,
    /// Inbound ports not to redirect, as `excludeInboundPorts` (the proxy's own status
    /// and metrics ports, 15020, 15021 and 15090, always are not).
    #[arg(long)]
    exclude_inbound_ports: Option<String>,
    /// Outbound destinations to redirect (CIDRs, or `*`), as `includeOutboundIPRanges`.
    #[arg(long)]
    include_outbound_ip_ranges: Option<String>,
    /// Outbound destinations not to redirect, as `excludeOutboundIPRanges`.
    #[arg(long)]
    exclude_outbound_ip_ranges: Option<String>,
    /// Outbound ports not to redirect, as `excludeOutboundPorts`.
    #[arg(long)]
    exclude_outbound_ports: Option<String>,
    /// Outbound ports to redirect whatever the destination, as `includeOutboundPorts`.
    #[arg(long)]
    include_outbound_ports: Option<String>,
    /// Also send the workload's DNS (UDP and TCP port 53) to the sidecar's DNS proxy, as
    /// Istio does with `ISTIO_META_DNS_CAPTURE`.
    #[arg(long)]
    redirect_dns: bool,
    /// The DNS proxy's port (the sidecar's `--dns-address`).
    #[arg(long, default_value_t = 15053)]
    dns_port: u16,
    /// A Pod manifest whose `traffic.sidecar.istio.io/*` annotations set the knobs the
    /// flags leave unset.
    #[arg(long, value_name = "FILE")]
    pod: Option<PathBuf>,
    /// Print the rules (in iptables-restore's format) instead of installing them.
    #[arg(long)]
    dry_run: bool,
    /// Remove the rules.
    #[arg(long)]
    cleanup: bool,
}

/// The knobs in force, after flags, annotations and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub uid: u32,
    pub gid: u32,
    /// `None`: every inbound port.
    pub include_inbound_ports: Option<Vec<u16>>,
    pub exclude_inbound_ports: Vec<u16>,
    /// `None`: every outbound destination.
    pub include_outbound_ranges: Option<Vec<ipnet::IpNet>>,
    pub exclude_outbound_ranges: Vec<ipnet::IpNet>,
    pub exclude_outbound_ports: Vec<u16>,
    pub include_outbound_ports: Vec<u16>,
    /// Where DNS goes, with `--redirect-dns`.
    pub dns_port: Option<u16>,
}

/// Which iptables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn localhost(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    /// The source Istio's proxy uses to reach its app without being captured again.
    fn inbound_source(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        }
    }

    fn holds(self, net: &ipnet::IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, ipnet::IpNet::V4(_)) | (Family::V6, ipnet::IpNet::V6(_))
        )
    }
}

fn ports(what: &str, text: &str) -> Result<Vec<u16>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{what}: {p:?} is not a port"))
        })
        .collect()
}

fn ranges(what: &str, text: &str) -> Result<Vec<ipnet::IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|r| {
            r.parse::<ipnet::IpNet>()
                .or_else(|_| r.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{what}: {r:?} is not a CIDR"))
        })
        .collect()
}

/// `*` (everything), or a list.
fn all_or<T>(
    what: &str,
    text: &str,
    parse: fn(&str, &str) -> Result<Vec<T>, String>,
) -> Result<Option<Vec<T>>, String> {
    if text.trim() == "*" {
        Ok(None)
    } else {
        parse(what, text).map(Some)
    }
}

impl Capture {
    /// The knobs from flags, then the annotations, then Istio's defaults.
    pub fn resolve(args: &Args, annotations: &BTreeMap<String, String>) -> Result<Capture, String> {
        let knob = |flag: &Option<String>, name: &str| {
            flag.clone()
                .or_else(|| annotations.get(&format!("{ANNOTATION}{name}")).cloned())
        };
        let include_inbound =
            knob(&args.include_inbound_ports, "includeInboundPorts").unwrap_or_else(|| "*".into());
        let mut exclude_inbound = ports(
            "excludeInboundPorts",
            &knob(&args.exclude_inbound_ports, "excludeInboundPorts").unwrap_or_default(),
        )?;
        // The proxy's own ports are never captured.
        for own in [15090, 15021, 15020] {
            if !exclude_inbound.contains(&own) {
                exclude_inbound.push(own);
            }
        }
        let include_outbound = knob(&args.include_outbound_ip_ranges, "includeOutboundIPRanges")
            .unwrap_or_else(|| "*".into());
        Ok(Capture {
            outbound_port: args.outbound_port,
            inbound_port: args.inbound_port,
            uid: args.proxy_uid,
            gid: args.proxy_gid,
            include_inbound_ports: all_or("includeInboundPorts", &include_inbound, ports)?,
            exclude_inbound_ports: exclude_inbound,
            include_outbound_ranges: all_or("includeOutboundIPRanges", &include_outbound, ranges)?,
            exclude_outbound_ranges: ranges(
                "excludeOutboundIPRanges",
                &knob(&args.exclude_outbound_ip_ranges, "excludeOutboundIPRanges")
                    .unwrap_or_default(),
            )?,
            exclude_outbound_ports: ports(
                "excludeOutboundPorts",
                &knob(&args.exclude_outbound_ports, "excludeOutboundPorts").unwrap_or_default(),
            )?,
            include_outbound_ports: ports(
                "includeOutboundPorts",
                &knob(&args.include_outbound_ports, "includeOutboundPorts").unwrap_or_default(),
            )?,
            dns_port: args.redirect_dns.then_some(args.dns_port),
        })
    }

    /// The jumps from the built-in chains that these rules need.
    pub fn jumps(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = JUMPS.to_vec();
        if self.dns_port.is_some() {
            out.push(DNS_JUMP);
        }
        out
    }

    /// The rules with every jump they need, in iptables-restore's format (`*nat` ...
    /// `COMMIT`), in the order istio-iptables writes them.
    pub fn rules(&self, family: Family) -> String {
        self.rules_with(family, &self.jumps())
    }

    /// The rules with these jumps. Restoring them with `--noflush` replaces what the
    /// chains held in one step, so nothing goes uncaptured while they are replaced.
    pub fn rules_with(&self, family: Family, jumps: &[(&str, &str)]) -> String {
        let mut out = vec!["*nat".to_string()];
        out.extend(CHAINS.iter().map(|c| format!(":{c} - [0:0]")));
        let mut rule = |r: String| out.push(r);
        rule(format!(
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        ));
        rule(format!(
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.inbound_port
        ));
        // Inbound.
        for (chain, jump) in jumps {
            rule(format!("-A {chain} {jump}"));
        }
        match &self.include_inbound_ports {
            None => {
                for p in &self.exclude_inbound_ports {
                    rule(format!("-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN"));
                }
                rule("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into());
            }
            Some(list) => {
                for p in list
                    .iter()
                    .filter(|p| !self.exclude_inbound_ports.contains(p))
                {
                    rule(format!(
                        "-A ISTIO_INBOUND -p tcp --dport {p} -j ISTIO_IN_REDIRECT"
                    ));
                }
            }
        }
        // DNS from anyone but the proxy (whose own queries go to the resolvers).
        if let Some(port) = self.dns_port {
            for (owner, id) in [("uid", self.uid), ("gid", self.gid)] {
                rule(format!(
                    "-A ISTIO_DNS -m owner --{owner}-owner {id} -j RETURN"
                ));
            }
            for protocol in ["udp", "tcp"] {
                rule(format!(
                    "-A ISTIO_DNS -p {protocol} -j REDIRECT --to-ports {port}"
                ));
            }
            rule("-A ISTIO_OUTPUT -p tcp --dport 53 -j ISTIO_DNS".into());
        }
        // Outbound.
        for p in &self.exclude_outbound_ports {
            rule(format!("-A ISTIO_OUTPUT -p tcp --dport {p} -j RETURN"));
        }
        let (lo, from_proxy) = (family.localhost(), family.inbound_source());
        rule(format!("-A ISTIO_OUTPUT -o lo -s {from_proxy} -j RETURN"));
        for (owner, id) in [("uid", self.uid), ("gid", self.gid)] {
            // The proxy calling its own pod's address comes back in as inbound.
            rule(format!(
                "-A ISTIO_OUTPUT ! -d {lo} -o lo -p tcp -m owner --{owner}-owner {id} -j ISTIO_IN_REDIRECT"
            ));
            // The app's own loopback calls are left alone.
            rule(format!(
                "-A ISTIO_OUTPUT -o lo -m owner ! --{owner}-owner {id} -j RETURN"
            ));
            // The proxy's calls out are never captured.
            rule(format!(
                "-A ISTIO_OUTPUT -m owner --{owner}-owner {id} -j RETURN"
            ));
        }
        rule(format!("-A ISTIO_OUTPUT -d {lo} -j RETURN"));
        for net in self
            .exclude_outbound_ranges
            .iter()
            .filter(|n| family.holds(n))
        {
            rule(format!("-A ISTIO_OUTPUT -d {net} -j RETURN"));
        }
        // Ports captured whatever the destination, after what is never captured.
        for p in &self.include_outbound_ports {
            rule(format!(
                "-A ISTIO_OUTPUT -p tcp --dport {p} -j ISTIO_REDIRECT"
            ));
        }
        match &self.include_outbound_ranges {
            None => rule("-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into()),
            Some(list) => {
                for net in list.iter().filter(|n| family.holds(n)) {
                    rule(format!("-A ISTIO_OUTPUT -d {net} -j ISTIO_REDIRECT"));
                }
                rule("-A ISTIO_OUTPUT -j RETURN".into());
            }
        }
        out.push("COMMIT".into());
        out.join("\n") + "\n"
    }
}

/// Runs `tool ARGS`; its error output when it fails.
fn run_tool(tool: &str, args: &[&str], input: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("{tool}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes the jumps and the chains; what was not there is no error.
fn cleanup(family: Family) {
    let tool = family.tool();
    for (chain, jump) in JUMPS.into_iter().chain([DNS_JUMP]) {
        let mut args = vec!["-t", "nat", "-D", chain];
        args.extend(jump.split(' '));
        while run_tool(tool, &args, None).is_ok() {}
    }
    for chain in CHAINS {
        let _ = run_tool(tool, &["-t", "nat", "-F", chain], None);
    }
    for chain in CHAINS {
        let _ = run_tool(tool, &["-t", "nat", "-X", chain], None);
    }
}

/// The annotations of the Pod in `file`.
fn pod_annotations(file: &std::path::Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let loaded = meshwork_api::load::load_str(file, &text, &Default::default());
    let pod = loaded
        .config
        .objects
        .into_iter()
        .find_map(|o| match o.object {
            meshwork_api::resource::Object::Pod(p) => Some(p),
            _ => None,
        });
    match pod {
        Some(p) => Ok(p.metadata.annotations.unwrap_or_default()),
        None => Err(format!("{}: no Pod in it", file.display())),
    }
}

/// Installs, prints or removes the rules.
pub fn run(args: Args) -> ExitCode {
    let annotations = match &args.pod {
        Some(file) => match pod_annotations(file) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => BTreeMap::new(),
    };
    let capture = match Capture::resolve(&args, &annotations) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let families = [Family::V4, Family::V6];
    if args.dry_run {
        for family in families {
            println!("# {}-restore --noflush", family.tool());
            print!("{}", capture.rules(family));
        }
        return ExitCode::SUCCESS;
    }
    if args.cleanup {
        for family in families {
            cleanup(family);
        }
        eprintln!("removed the capture rules");
        return ExitCode::SUCCESS;
    }
    for family in families {
        let tool = family.tool();
        // A jump already there stays; one no longer wanted goes.
        let present = |(chain, jump): (&str, &str)| {
            let mut args = vec!["-t", "nat", "-C", chain];
            args.extend(jump.split(' '));
            run_tool(tool, &args, None).is_ok()
        };
        if capture.dns_port.is_none() && present(DNS_JUMP) {
            let mut args = vec!["-t", "nat", "-D", DNS_JUMP.0];
            args.extend(DNS_JUMP.1.split(' '));
            let _ = run_tool(tool, &args, None);
        }
        let missing: Vec<(&str, &str)> = capture
            .jumps()
            .into_iter()
            .filter(|j| !present(*j))
            .collect();
        let restore = format!("{tool}-restore");
        match run_tool(
            &restore,
            &["--noflush"],
            Some(&capture.rules_with(family, &missing)),
        ) {
            Ok(()) => eprintln!(
                "{tool}: inbound TCP to port {}, outbound TCP to port {}; UID {} and GID {} are not captured",
                capture.inbound_port, capture.outbound_port, capture.uid, capture.gid
            ),
            // A namespace without IPv6 has nothing to capture there; one with it would
            // have its IPv6 traffic pass the sidecar by.
            Err(e) if family == Family::V6 && !ipv6_enabled() => {
                eprintln!("warning: IPv6 is off here, so not captured: {e}")
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Whether this network namespace has IPv6 addresses.
fn ipv6_enabled() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(args: &Args, annotations: &[(&str, &str)]) -> Result<Capture, String> {
        let annotations = annotations
            .iter()
            .map(|(k, v)| (format!("{ANNOTATION}{k}"), v.to_string()))
            .collect();
        Capture::resolve(args, &annotations)
    }

    fn defaults() -> Args {
        Args {
            outbound_port: 15001,
            inbound_port: 15006,
            proxy_uid: 1337,
            proxy_gid: 1337,
            ..Args::default()
        }
    }

    #[test]
    fn the_default_rules_are_istios() {
        let rules = capture(&defaults(), &[]).unwrap().rules(Family::V4);
        let expected = "*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_REDIRECT - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_DNS - [0:0]
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";
        assert_eq!(rules, expected);
        let v6 = capture(&defaults(), &[]).unwrap().rules(Family::V6);
        assert!(v6.contains("-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN"));
        assert!(v6.contains("-A ISTIO_OUTPUT -d ::1/128 -j RETURN"));
    }

    #[test]
    fn the_knobs_come_from_flags_then_annotations() {
        let annotated = capture(
            &defaults(),
            &[
                ("includeInboundPorts", "9080, 8080"),
                ("excludeInboundPorts", "8080"),
                ("includeOutboundIPRanges", "10.96.0.0/12,fd00::/8"),
                ("excludeOutboundIPRanges", "10.96.0.1/32"),
                ("excludeOutboundPorts", "5432"),
                ("includeOutboundPorts", "443"),
            ],
        )
        .unwrap();
        let v4 = annotated.rules(Family::V4);
        for line in [
            "-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN",
            "-A ISTIO_OUTPUT -d 10.96.0.1/32 -j RETURN",
            "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT",
            "-A ISTIO_OUTPUT -p tcp --dport 443 -j ISTIO_REDIRECT",
        ] {
            assert!(v4.contains(line), "{line}\n{v4}");
        }
        assert!(
            !v4.contains("--dport 8080 -j ISTIO_IN_REDIRECT"),
            "excluded"
        );
        assert!(
            !v4.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"),
            "not everything"
        );
        assert!(v4.trim_end().ends_with("-A ISTIO_OUTPUT -j RETURN\nCOMMIT"));
        assert!(!v4.contains("fd00::/8"), "IPv6 ranges go to ip6tables");
        assert!(
            annotated
                .rules(Family::V6)
                .contains("-A ISTIO_OUTPUT -d fd00::/8 -j ISTIO_REDIRECT")
        );
        // A flag wins over the annotation.
        let flagged = capture(
            &Args {
                exclude_outbound_ports: Some("6379".into()),
                ..defaults()
            },
            &[("excludeOutboundPorts", "5432")],
        )
        .unwrap();
        assert_eq!(flagged.exclude_outbound_ports, [6379]);
    }

    #[test]
    fn dns_is_redirected_for_everyone_but_the_proxy() {
        let rules = capture(
            &Args {
                redirect_dns: true,
                dns_port: 15053,
                ..defaults()
            },
            &[],
        )
        .unwrap()
        .rules(Family::V4);
        assert!(
            rules.contains(
                "-A OUTPUT -p tcp -j ISTIO_OUTPUT\n-A OUTPUT -p udp --dport 53 -j ISTIO_DNS\n"
            ),
            "{rules}"
        );
        let dns = "-A ISTIO_DNS -m owner --uid-owner 1337 -j RETURN
-A ISTIO_DNS -m owner --gid-owner 1337 -j RETURN
-A ISTIO_DNS -p udp -j REDIRECT --to-ports 15053
-A ISTIO_DNS -p tcp -j REDIRECT --to-ports 15053
-A ISTIO_OUTPUT -p tcp --dport 53 -j ISTIO_DNS
";
        assert!(rules.contains(dns), "{rules}");
        // Before the loopback and owner rules of outbound TCP.
        assert!(rules.find(dns).unwrap() < rules.find("-A ISTIO_OUTPUT -o lo").unwrap());
        assert!(
            !capture(&defaults(), &[])
                .unwrap()
                .rules(Family::V4)
                .contains("-j ISTIO_DNS")
        );
    }

    #[test]
    fn bad_knobs_are_named() {
        for (knob, value, error) in [
            (
                "includeInboundPorts",
                "http",
                "includeInboundPorts: \"http\" is not a port",
            ),
            (
                "excludeOutboundPorts",
                "0",
                "excludeOutboundPorts: \"0\" is not a port",
            ),
            (
                "excludeOutboundIPRanges",
                "10.0.0.0/33",
                "excludeOutboundIPRanges: \"10.0.0.0/33\" is not a CIDR",
            ),
        ] {
            let err = capture(&defaults(), &[(knob, value)]).unwrap_err();
            assert_eq!(err, error);
        }
    }
}
