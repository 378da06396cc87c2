//! Why talking to an upstream endpoint failed (the forward phase, and TCP routes). Each
//! variant knows the status sent to the client, Envoy's response flag, its
//! `response_code_details` and the body Envoy would send.

use std::borrow::Cow;

use http::StatusCode;

use crate::flags::ResponseFlags;

/// Why a request or connection got no upstream response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting to the upstream failed (`UF`).
    #[error(
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    )]
    ConnectFailure,
    /// TLS to the upstream failed (`UF`): the handshake, or the server's certificate.
    #[error(
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS_error:{code}: {message}"
    )]
    Tls {
        /// A short code for the access log (`CERTIFICATE_VERIFY_FAILED:name_mismatch`).
        code: &'static str,
        /// What rustls said.
        message: String,
    },
    /// The upstream's response could not be parsed (`UPE`).
    #[error(
        "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
    )]
    Protocol,
    /// The upstream reset or closed before answering (`UC`).
    #[error(
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    )]
    Reset,
    /// The per-try or route timeout passed (`UT`).
    #[error("upstream request timeout")]
    Timeout,
    /// The client's request body failed while it was being sent (a malformed chunk, or
    /// the client went away): the client's fault, never the endpoint's (`DPE`, 400).
    #[error("bad request: the request body could not be read")]
    RequestBody,
}

impl UpstreamError {
    /// The status code returned to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::RequestBody => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Envoy's response flag.
    pub fn flags(&self) -> ResponseFlags {
        match self {
            UpstreamError::ConnectFailure | UpstreamError::Tls { .. } => {
                ResponseFlags::UPSTREAM_CONNECTION_FAILURE
            }
            UpstreamError::Protocol => ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
            UpstreamError::Reset => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            UpstreamError::Timeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            UpstreamError::RequestBody => ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        }
    }

    /// Envoy's `response_code_details`.
    pub fn details(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            UpstreamError::ConnectFailure => {
                "upstream_reset_before_response_started{connection_failure}"
            }
            UpstreamError::Tls { code, .. } => {
                return Cow::Owned(format!(
                    "upstream_reset_before_response_started{{connection_failure,TLS_error:{code}}}"
                ));
            }
            UpstreamError::Protocol => "upstream_reset_before_response_started{protocol_error}",
            UpstreamError::Reset => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            UpstreamError::Timeout => "upstream_response_timeout",
            UpstreamError::RequestBody => "downstream_protocol_error",
        })
    }
}
