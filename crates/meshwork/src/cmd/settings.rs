//! Flags shared by every command that runs proxies (`up`, `proxy`): downstream limits and
//! timeouts.

/// Limits and timeouts of downstream connections.
#[derive(clap::Args, Debug, Clone)]
pub struct SettingsArgs {
    /// How long a client may take to send a request's headers.
    #[arg(long, default_value = "10s", value_parser = duration)]
    request_headers_timeout: std::time::Duration,
    /// Downstream connections idle this long are closed.
    #[arg(long, default_value = "1h", value_parser = duration)]
    idle_timeout: std::time::Duration,
    /// Connections open at once per listener; more are closed at once.
    #[arg(long, default_value_t = 100_000)]
    max_connections_per_listener: usize,
    /// The most bytes of request headers; more gets 431.
    #[arg(long, default_value_t = 60 * 1024)]
    max_request_headers_bytes: usize,
    /// The most request headers; more gets 431.
    #[arg(long, default_value_t = 100)]
    max_request_headers: usize,
}

/// A duration in Istio's notation (`10s`, `1h`, `250ms`).
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    meshwork_api::duration::parse_duration(text).map_err(|e| e.to_string())
}

impl SettingsArgs {
    /// The proxy settings these flags give.
    pub fn settings(&self) -> meshwork_proxy::settings::ProxySettings {
        meshwork_proxy::settings::ProxySettings {
            request_headers_timeout: self.request_headers_timeout,
            idle_timeout: self.idle_timeout,
            max_connections_per_listener: self.max_connections_per_listener,
            max_request_headers_bytes: self.max_request_headers_bytes,
            max_request_headers: self.max_request_headers,
        }
    }
}
