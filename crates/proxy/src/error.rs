//! Request-path errors: each carries the status code sent to the client, Envoy's response
//! flag and its `response_code_details` for the access log, so one function turns any of
//! them into a response.

use std::borrow::Cow;

use http::StatusCode;

use crate::flags::ResponseFlags;

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
    /// TLS to the upstream failed (`UF`): the handshake, or the server's certificate.
    #[error(
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS_error:{code}: {message}"
    )]
    UpstreamTls {
        /// A short code for the access log (`CERTIFICATE_VERIFY_FAILED:name_mismatch`).
        code: &'static str,
        /// What rustls said.
        message: String,
    },
    /// The upstream's response could not be parsed (`UPE`).
    #[error(
        "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
    )]
    UpstreamProtocol,
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
            | ProxyError::UpstreamTls { .. }
            | ProxyError::UpstreamProtocol
            | ProxyError::UpstreamReset => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoCluster | ProxyError::Overflow => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Envoy's response flag.
    pub fn flags(&self) -> ResponseFlags {
        match self {
            ProxyError::NoRoute => ResponseFlags::NO_ROUTE_FOUND,
            ProxyError::NoHealthyUpstream => ResponseFlags::NO_HEALTHY_UPSTREAM,
            ProxyError::NoCluster => ResponseFlags::NO_CLUSTER_FOUND,
            ProxyError::ConnectFailure | ProxyError::UpstreamTls { .. } => {
                ResponseFlags::UPSTREAM_CONNECTION_FAILURE
            }
            ProxyError::UpstreamProtocol => ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
            ProxyError::UpstreamReset => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            ProxyError::Timeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            ProxyError::Overflow => ResponseFlags::UPSTREAM_OVERFLOW,
            ProxyError::BadRequest(_) => ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        }
    }

    /// Envoy's `response_code_details`.
    pub fn details(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            ProxyError::NoRoute => "route_not_found",
            ProxyError::NoHealthyUpstream => "no_healthy_upstream",
            ProxyError::NoCluster => "cluster_not_found",
            ProxyError::ConnectFailure => {
                "upstream_reset_before_response_started{connection_failure}"
            }
            ProxyError::UpstreamTls { code, .. } => {
                return Cow::Owned(format!(
                    "upstream_reset_before_response_started{{connection_failure,TLS_error:{code}}}"
                ));
            }
            ProxyError::UpstreamProtocol => {
                "upstream_reset_before_response_started{protocol_error}"
            }
            ProxyError::UpstreamReset => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            ProxyError::Overflow => "upstream_reset_before_response_started{overflow}",
            ProxyError::Timeout => "upstream_response_timeout",
            ProxyError::BadRequest(_) => "downstream_protocol_error",
        })
    }

    /// The body Envoy sends with a locally generated error (404s have none).
    pub fn body(&self) -> String {
        match self {
            ProxyError::NoRoute => String::new(),
            other => other.to_string(),
        }
    }
}
