//! `meshwork proxy-status`: every proxy connected to the control plane, one line each, as
//! `istioctl proxy-status` prints them: per resource type SYNCED (the last response was
//! acknowledged), STALE (sent, not acknowledged yet), NOT SENT, or NACK (the reasons are
//! listed below the table).

use std::process::ExitCode;

use meshwork_xds::TypeUrl;
use meshwork_xds::proto::mesh_debug_client::MeshDebugClient;
use meshwork_xds::proto::{ProxyStatus, ProxyStatusRequest};

/// Arguments of `meshwork proxy-status`.
#[derive(clap::Args)]
pub struct Args {
    /// The control plane.
    #[arg(long, env = "PILOT_ADDRESS", default_value = "127.0.0.1:15010")]
    pub control_plane: String,
    /// `json` prints what the control plane reported.
    #[arg(short = 'o', long)]
    output: Option<String>,
}

/// The columns, in istioctl's order, then meshwork's node and policy types.
const COLUMNS: [TypeUrl; 7] = [
    TypeUrl::Cluster,
    TypeUrl::Listener,
    TypeUrl::EndpointSet,
    TypeUrl::RouteTable,
    TypeUrl::Secret,
    TypeUrl::Node,
    TypeUrl::Policy,
];

/// What the control plane reports.
pub async fn fetch(control_plane: &str) -> Result<Vec<ProxyStatus>, String> {
    let mut client = MeshDebugClient::connect(format!("http://{control_plane}"))
        .await
        .map_err(|e| format!("cannot reach the control plane at {control_plane}: {e}"))?;
    let response = client
        .proxy_status(ProxyStatusRequest {})
        .await
        .map_err(|e| format!("the control plane at {control_plane} answered: {e}"))?;
    Ok(response.into_inner().proxies)
}

fn state(p: &ProxyStatus, t: TypeUrl) -> String {
    match p.types.iter().find(|s| s.type_url == t.as_str()) {
        None => "NOT SENT".into(),
        Some(s) if !s.nack.is_empty() => "NACK".into(),
        Some(s) if s.acked => "SYNCED".into(),
        Some(_) => "STALE".into(),
    }
}

/// The table.
pub fn render(proxies: &[ProxyStatus]) -> String {
    let mut rows = vec![
        ["NAME".to_string()]
            .into_iter()
            .chain(COLUMNS.iter().map(|t| t.short().to_string()))
            .chain(["CONTROL PLANE".into(), "VERSION".into()])
            .collect::<Vec<_>>(),
    ];
    for p in proxies {
        let mut name = p.id.clone();
        if p.workload.is_empty() {
            name.push_str(" (no workload)");
        }
        rows.push(
            [name]
                .into_iter()
                .chain(COLUMNS.iter().map(|t| state(p, *t)))
                .chain([p.control_plane.clone(), p.version.clone()])
                .collect(),
        );
    }
    let mut out = super::table(&rows);
    for p in proxies {
        for s in p.types.iter().filter(|s| !s.nack.is_empty()) {
            let short = TypeUrl::parse(&s.type_url).map_or("?", |t| t.short());
            out.push_str(&format!(
                "\n{} {short} NACK of version {}: {}\n",
                p.id, s.sent_version, s.nack
            ));
        }
        if !p.workload_warning.is_empty() {
            out.push_str(&format!("\n{}: {}\n", p.id, p.workload_warning));
        }
    }
    out
}

/// Prints the table.
pub fn run(args: Args) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(fetch(&args.control_plane)) {
        Ok(proxies) => {
            if args.output.as_deref() == Some("json") {
                let list: Vec<serde_json::Value> = proxies
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "name": p.id,
                            "namespace": p.namespace,
                            "role": p.role,
                            "admin": p.admin_address,
                            "workload": p.workload,
                            "controlPlane": p.control_plane,
                            "version": p.version,
                            "types": p.types.iter().map(|s| serde_json::json!({
                                "type": TypeUrl::parse(&s.type_url).map_or("?", |t| t.short()),
                                "state": TypeUrl::parse(&s.type_url).map(|t| state(p, t)),
                                "sentVersion": s.sent_version,
                                "ackedVersion": s.acked_version,
                                "nack": s.nack,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                print!("{}", render(&proxies));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
