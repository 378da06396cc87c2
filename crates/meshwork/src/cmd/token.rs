//! `meshwork token create`: a token that proves a workload's identity to the mesh CA, as a
//! Kubernetes service-account token does for istiod. A proxy reads it from
//! `--token-file`.

use std::process::ExitCode;

use meshwork_control::ca::Identity;
use meshwork_control::token::TokenKey;

/// Arguments of `meshwork token`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Print a signed token for a namespace and service account.
    Create {
        /// The control plane's state directory (where its token key is).
        #[arg(long, default_value = "./.meshwork")]
        state_dir: std::path::PathBuf,
        /// The workload's namespace.
        #[arg(long)]
        namespace: String,
        /// The workload's service account.
        #[arg(long)]
        service_account: String,
        /// How long the token is valid.
        #[arg(long, default_value = "24h", value_parser = super::settings::duration)]
        ttl: std::time::Duration,
    },
}

/// Prints the token.
pub fn run(args: Args) -> ExitCode {
    match args.action {
        Action::Create {
            state_dir,
            namespace,
            service_account,
            ttl,
        } => match TokenKey::open(&state_dir) {
            Ok(key) => {
                println!(
                    "{}",
                    key.create(
                        &Identity {
                            namespace,
                            service_account
                        },
                        ttl
                    )
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: the token key in {}: {e}", state_dir.display());
                ExitCode::from(1)
            }
        },
    }
}
