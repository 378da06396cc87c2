//! Request-path errors: each carries the status code sent to the client and Envoy's
//! response flag for the access log, so one function turns any of them into a response.

use http::StatusCode;

/// Why a request did not get an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No virtual host or route matched (`NR`).
    #[error("route_not_found")]
    NoRoute,
    /// The cluster has no endpoint (`UH`).
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    /// The route names a cluster the config lacks (`NC`).
    #[error("cluster not found")]
    NoCluster,
    /// Connecting to the upstream failed (`UF`).
    #[error(
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    )]
    ConnectFailure,
    /// The upstream reset or closed before answering (`UC`).
    #[error(
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    )]
    UpstreamReset,
    /// A circuit breaker refused the request (`UO`).
    #[error("upstream connect error or disconnect/reset before headers. reset reason: overflow")]
    Overflow,
    /// The route's timeout passed (`UT`).
    #[error("upstream request timeout")]
    Timeout,
    /// The request could not be forwarded as written (`DPE`).
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl ProxyError {
    /// The status code returned to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyUpstream
            | ProxyError::ConnectFailure
            | ProxyError::UpstreamReset => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoCluster | ProxyError::Overflow => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Envoy's response flag.
    pub fn flag(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "NR",
            ProxyError::NoHealthyUpstream => "UH",
            ProxyError::NoCluster => "NC",
            ProxyError::ConnectFailure => "UF",
            ProxyError::UpstreamReset => "UC",
            ProxyError::Timeout => "UT",
            ProxyError::Overflow => "UO",
            ProxyError::BadRequest(_) => "DPE",
        }
    }

    /// The body Envoy sends with a locally generated error (404s have none).
    pub fn body(&self) -> String {
        match self {
            ProxyError::NoRoute => String::new(),
            other => other.to_string(),
        }
    }
}
