//! `meshwork proxy-config listeners|routes|clusters|endpoints|all PROXY`: what one proxy
//! runs, read from its own `/config_dump`, as `istioctl proxy-config` tables. PROXY is a
//! name `proxy-status` prints (its admin address comes from the control plane), or any
//! name with `--admin ADDR`.

use std::process::ExitCode;

use http_body_util::BodyExt;
use meshwork_resources::ProxyConfig;
use meshwork_resources::listener::ServerProtocol;
use meshwork_resources::route::{RouteAction, StringMatcher};

/// What to show.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// Listeners: address, port, protocol, where they lead.
    Listeners,
    /// Route tables: virtual hosts, domains, matches and their VirtualService.
    Routes,
    /// Clusters: service, port, subset, direction.
    Clusters,
    /// Endpoints, by cluster.
    Endpoints,
    /// Certificates: the workload certificate (SPIFFE id, serial, expiry) and the roots.
    Secret,
    /// Every table.
    All,
}

/// Arguments of `meshwork proxy-config`.
#[derive(clap::Args)]
pub struct Args {
    /// What to show.
    #[arg(value_enum)]
    what: What,
    /// The proxy, as proxy-status names it (`reviews-v1.default`; the name alone works
    /// when it is unique).
    proxy: String,
    /// The proxy's admin address; without it, the control plane is asked.
    #[arg(long)]
    admin: Option<String>,
    /// The control plane.
    #[arg(long, env = "PILOT_ADDRESS", default_value = "127.0.0.1:15010")]
    control_plane: String,
    /// `json` prints the resources themselves.
    #[arg(short = 'o', long)]
    output: Option<String>,
}

/// The proxy's admin address, from the control plane.
async fn admin_of(control_plane: &str, proxy: &str) -> Result<String, String> {
    let proxies = super::proxy_status::fetch(control_plane).await?;
    let matching: Vec<_> = proxies
        .iter()
        .filter(|p| p.id == proxy || p.id.split_once('.').is_some_and(|(n, _)| n == proxy))
        .collect();
    match matching.as_slice() {
        [one] if !one.admin_address.is_empty() => Ok(one.admin_address.clone()),
        [one] => Err(format!(
            "{} gave the control plane no admin address",
            one.id
        )),
        [] => Err(format!(
            "no proxy {proxy:?} is connected to the control plane at {control_plane}; `meshwork proxy-status` lists them"
        )),
        many => Err(format!(
            "{proxy:?} names {} proxies; give NAME.NAMESPACE",
            many.len()
        )),
    }
}

/// GET `/config_dump` from an admin address.
async fn config_dump(admin: &str) -> Result<serde_json::Value, String> {
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|e| format!("cannot reach the proxy's admin address {admin}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{admin}: {e}"))?;
    tokio::spawn(conn);
    let request = http::Request::get("/config_dump")
        .header(http::header::HOST, admin)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{admin}: {e}"))?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{admin}: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("{admin}/config_dump is not JSON: {e}"))
}

/// The config of `proxy` in a dump (one proxy, or one of several by id).
fn pick(dump: &serde_json::Value, proxy: &str) -> Result<ProxyConfig, String> {
    let all = dump
        .get("gateways")
        .and_then(|g| g.as_object())
        .ok_or("the config dump lists no proxies")?;
    let value = all
        .get(proxy)
        .or_else(|| (all.len() == 1).then(|| all.values().next()).flatten())
        .ok_or_else(|| format!("the dump has no proxy {proxy:?}"))?;
    serde_json::from_value(value.clone()).map_err(|e| format!("unexpected config dump: {e}"))
}

fn matcher(m: &StringMatcher) -> String {
    match m {
        StringMatcher::Exact(s) => s.clone(),
        StringMatcher::Prefix(s) => format!("{s}*"),
        StringMatcher::Regex(s) => format!("~{s}"),
    }
}

/// The listeners table.
pub fn listeners(c: &ProxyConfig) -> String {
    let mut rows = vec![vec![
        "ADDRESS".to_string(),
        "PORT".into(),
        "PROTOCOL".into(),
        "DESTINATION".into(),
    ]];
    for l in c.listeners.values() {
        for s in &l.servers {
            let destination = match s.protocol {
                ServerProtocol::Http | ServerProtocol::Https => format!("Route: {}", s.route_table),
                _ => s
                    .tcp_routes
                    .iter()
                    .flat_map(|r| r.destinations.iter().map(|d| d.cluster.clone()))
                    .map(|c| format!("Cluster: {c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            rows.push(vec![
                l.address.clone(),
                l.bind_port.to_string(),
                format!("{:?}", s.protocol).to_uppercase(),
                destination,
            ]);
        }
    }
    super::table(&rows)
}

/// `ns/name#3` route names carry their VirtualService: `name.ns`.
fn virtual_service(route: &str) -> String {
    route
        .split_once('#')
        .and_then(|(vs, _)| vs.split_once('/'))
        .map_or_else(|| "-".into(), |(ns, name)| format!("{name}.{ns}"))
}

/// The routes table.
pub fn routes(c: &ProxyConfig) -> String {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "VHOST NAME".into(),
        "DOMAINS".into(),
        "MATCH".into(),
        "VIRTUAL SERVICE".into(),
    ]];
    for (name, table) in &c.route_tables {
        for vh in &table.virtual_hosts {
            let domains = match vh.domains.as_slice() {
                [] => "-".to_string(),
                [one] => one.clone(),
                [first, rest @ ..] => format!("{first} + {} more", rest.len()),
            };
            for r in &vh.routes {
                let m = if r.matches.is_empty() {
                    "/*".to_string()
                } else {
                    r.matches
                        .iter()
                        .map(|m| {
                            let mut parts = vec![m.uri.as_ref().map_or("/*".into(), matcher)];
                            parts.extend(m.headers.iter().map(|h| {
                                format!(
                                    "{}={}",
                                    h.name,
                                    h.value.as_ref().map_or("*".into(), matcher)
                                )
                            }));
                            parts.join(" ")
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let vs = match &r.action {
                    RouteAction::Forward(_) if r.name == "default" => "-".to_string(),
                    _ => virtual_service(&r.name),
                };
                rows.push(vec![name.clone(), vh.name.clone(), domains.clone(), m, vs]);
            }
        }
    }
    super::table(&rows)
}

/// The clusters table.
pub fn clusters(c: &ProxyConfig) -> String {
    let mut rows = vec![vec![
        "SERVICE FQDN".to_string(),
        "PORT".into(),
        "SUBSET".into(),
        "DIRECTION".into(),
        "TYPE".into(),
    ]];
    for (name, cl) in &c.clusters {
        let direction = name.split('|').next().unwrap_or("-").to_string();
        rows.push(vec![
            if cl.host.is_empty() {
                "-".into()
            } else {
                cl.host.clone()
            },
            cl.port.to_string(),
            cl.subset.clone().unwrap_or_else(|| "-".into()),
            direction,
            "EDS".into(),
        ]);
    }
    super::table(&rows)
}

/// The endpoints table.
pub fn endpoints(c: &ProxyConfig) -> String {
    let mut rows = vec![vec!["ENDPOINT".to_string(), "CLUSTER".into()]];
    for (name, set) in &c.endpoints {
        for e in &set.endpoints {
            rows.push(vec![format!("{}:{}", e.address, e.port), name.clone()]);
        }
    }
    super::table(&rows)
}

/// The certificates of a PEM text: (subject or SPIFFE id, serial, not after).
fn certificates(pem_text: &str) -> Vec<(String, String, String)> {
    pem::parse_many(pem_text)
        .unwrap_or_default()
        .iter()
        .filter_map(|block| {
            let (_, cert) = x509_parser::parse_x509_certificate(block.contents()).ok()?;
            let uri = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .and_then(|san| {
                    san.value.general_names.iter().find_map(|n| match n {
                        x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                });
            let name = uri.unwrap_or_else(|| cert.subject().to_string());
            let serial = cert.raw_serial_as_string().replace(':', "");
            let expiry = cert
                .validity()
                .not_after
                .to_rfc2822()
                .unwrap_or_else(|_| cert.validity().not_after.to_string());
            Some((name, serial, expiry))
        })
        .collect()
}

/// The secrets table: every certificate of every secret.
pub fn secrets(c: &ProxyConfig) -> String {
    use meshwork_resources::secret::Pem;
    let mut rows = vec![vec![
        "RESOURCE NAME".to_string(),
        "TYPE".into(),
        "IDENTITY".into(),
        "SERIAL NUMBER".into(),
        "NOT AFTER".into(),
    ]];
    for (name, s) in &c.secrets {
        for (kind, pem) in [("Cert Chain", &s.certificate_chain), ("CA", &s.trusted_ca)] {
            let Some(Pem::Inline(text)) = pem else {
                if let Some(Pem::File(path)) = pem {
                    rows.push(vec![
                        name.clone(),
                        kind.into(),
                        format!("file {path}"),
                        "-".into(),
                        "-".into(),
                    ]);
                }
                continue;
            };
            for (identity, serial, expiry) in certificates(text) {
                rows.push(vec![name.clone(), kind.into(), identity, serial, expiry]);
            }
        }
    }
    super::table(&rows)
}

async fn show(args: &Args) -> Result<String, String> {
    let admin = match &args.admin {
        Some(a) => a.clone(),
        None => admin_of(&args.control_plane, &args.proxy).await?,
    };
    let dump = config_dump(&admin).await?;
    let config = pick(&dump, &args.proxy)?;
    if args.output.as_deref() == Some("json") {
        let value = match args.what {
            What::Listeners => serde_json::to_value(&config.listeners),
            What::Routes => serde_json::to_value(&config.route_tables),
            What::Clusters => serde_json::to_value(&config.clusters),
            What::Endpoints => serde_json::to_value(&config.endpoints),
            What::Secret => serde_json::to_value(&config.secrets),
            What::All => serde_json::to_value(&config),
        }
        .map_err(|e| e.to_string())?;
        return Ok(serde_json::to_string_pretty(&value).unwrap_or_default() + "\n");
    }
    Ok(match args.what {
        What::Listeners => listeners(&config),
        What::Routes => routes(&config),
        What::Clusters => clusters(&config),
        What::Endpoints => endpoints(&config),
        What::Secret => secrets(&config),
        What::All => [
            listeners(&config),
            routes(&config),
            clusters(&config),
            endpoints(&config),
        ]
        .join("\n"),
    })
}

/// Prints the table.
pub fn run(args: Args) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(show(&args)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
