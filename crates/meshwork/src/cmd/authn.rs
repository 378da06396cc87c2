//! `meshwork authn tls-check CLIENT [SERVICE]`: for a client proxy and each destination it
//! can reach, what the server accepts (its PeerAuthentication mode), what the client
//! sends (auto mTLS or its DestinationRule), and CONFLICT where they cannot talk. As
//! `istioctl authn tls-check` printed it before it was removed.

use std::process::ExitCode;

use meshwork_xds::proto::TlsCheckRequest;
use meshwork_xds::proto::mesh_debug_client::MeshDebugClient;

/// Arguments of `meshwork authn`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Check the TLS settings between a client proxy and the destinations it reaches.
    #[command(name = "tls-check")]
    TlsCheck {
        /// The client proxy, as proxy-status names it.
        client: String,
        /// Only this service (host or short name).
        service: Option<String>,
        /// The control plane.
        #[arg(long, env = "PILOT_ADDRESS", default_value = "127.0.0.1:15010")]
        control_plane: String,
    },
}

async fn tls_check(client: String, service: Option<String>, cp: String) -> Result<String, String> {
    let mut debug = MeshDebugClient::connect(format!("http://{cp}"))
        .await
        .map_err(|e| format!("cannot reach the control plane at {cp}: {e}"))?;
    let response = debug
        .tls_check(TlsCheckRequest {
            proxy: client,
            service: service.unwrap_or_default(),
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let mut rows = vec![vec![
        "HOST:PORT".to_string(),
        "STATUS".into(),
        "SERVER".into(),
        "CLIENT".into(),
        "DESTINATION RULE".into(),
    ]];
    for r in response.rows {
        rows.push(vec![
            r.destination,
            r.status,
            r.server,
            r.client,
            r.destination_rule,
        ]);
    }
    Ok(super::table(&rows))
}

/// Prints the table.
pub fn run(args: Args) -> ExitCode {
    let Action::TlsCheck {
        client,
        service,
        control_plane,
    } = args.action;
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(tls_check(client, service, control_plane)) {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
