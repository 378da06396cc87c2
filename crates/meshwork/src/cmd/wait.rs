//! `meshwork wait`: blocks until the sidecar is ready, as Istio's `pilot-agent wait` does
//! for `holdApplicationUntilProxyStarts`. Run the app after it (`meshwork wait && exec
//! app`): with traffic captured, what the app sends before its sidecar is ready has
//! nowhere to go.

use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Arguments of `meshwork wait`.
#[derive(clap::Args)]
pub struct Args {
    /// The proxy's status address (its `--status`).
    #[arg(long, default_value = "127.0.0.1:15021")]
    status: String,
    /// How long to wait.
    #[arg(long, default_value = "60s", value_parser = super::settings::duration)]
    timeout: Duration,
    /// How often to ask.
    #[arg(long, default_value = "100ms", value_parser = super::settings::duration)]
    period: Duration,
}

/// The status of `GET /healthz/ready`, or why there is none.
async fn ready(status: &str) -> Result<u16, String> {
    let mut sender = meshwork_proxy::upstream::http1_to(status).await?;
    let request = http::Request::get("/healthz/ready")
        .header(http::header::HOST, status)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}

/// Waits; exit 0 once the proxy is ready, 1 when the time is up.
pub fn run(args: Args) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let start = Instant::now();
        loop {
            // A status port that accepts and never answers is asked again.
            let asked =
                tokio::time::timeout(args.period.max(Duration::from_secs(1)), ready(&args.status));
            let last = match asked.await.unwrap_or_else(|_| Err("no answer".into())) {
                Ok(200) => {
                    eprintln!("the proxy is ready ({:?})", start.elapsed());
                    return ExitCode::SUCCESS;
                }
                Ok(code) => format!("it answers {code}"),
                Err(e) => e,
            };
            if start.elapsed() >= args.timeout {
                eprintln!(
                    "error: the proxy at {} is not ready after {:?}: {last}",
                    args.status, args.timeout
                );
                return ExitCode::from(1);
            }
            tokio::time::sleep(args.period).await;
        }
    })
}
