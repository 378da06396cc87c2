//! Local replies: what the proxy answers itself when a phase stops a request. Each phase
//! has its own small error type; all of them convert into one [`LocalReply`] that carries
//! the status, Envoy's response flags, `response_code_details` and the body.

use std::borrow::Cow;

use http::StatusCode;

use crate::error::UpstreamError;
use crate::flags::ResponseFlags;

/// An answer made by the proxy.
#[derive(Debug)]
pub struct LocalReply {
    /// The status sent.
    pub status: StatusCode,
    /// Envoy's response flags.
    pub flags: ResponseFlags,
    /// Envoy's `response_code_details`.
    pub details: Cow<'static, str>,
    /// The body, as Envoy writes it (empty for a 404).
    pub body: Cow<'static, str>,
}

impl From<crate::request::jwt::Refusal> for LocalReply {
    fn from(r: crate::request::jwt::Refusal) -> LocalReply {
        LocalReply {
            status: StatusCode::UNAUTHORIZED,
            flags: ResponseFlags::NONE,
            details: Cow::Borrowed(r.details()),
            body: Cow::Borrowed("Jwt verification fails"),
        }
    }
}

/// The select-server and match-route phases found nothing (`NR`, 404).
#[derive(Debug, thiserror::Error)]
#[error("route_not_found")]
pub struct NoRoute;

impl From<NoRoute> for LocalReply {
    fn from(_: NoRoute) -> LocalReply {
        LocalReply {
            status: StatusCode::NOT_FOUND,
            flags: ResponseFlags::NO_ROUTE_FOUND,
            details: Cow::Borrowed("route_not_found"),
            body: Cow::Borrowed(""),
        }
    }
}

/// The pick-endpoint phase has nothing to pick, or a circuit breaker refuses.
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    /// The route names a cluster the config lacks (`NC`).
    #[error("cluster not found")]
    NoCluster,
    /// The cluster has no endpoint (`UH`).
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    /// A circuit breaker refused the request (`UO`).
    #[error("upstream connect error or disconnect/reset before headers. reset reason: overflow")]
    Overflow,
}

impl From<PickError> for LocalReply {
    fn from(e: PickError) -> LocalReply {
        let (flags, details) = match e {
            PickError::NoCluster => (ResponseFlags::NO_CLUSTER_FOUND, "cluster_not_found"),
            PickError::NoHealthyUpstream => {
                (ResponseFlags::NO_HEALTHY_UPSTREAM, "no_healthy_upstream")
            }
            PickError::Overflow => (
                ResponseFlags::UPSTREAM_OVERFLOW,
                "upstream_reset_before_response_started{overflow}",
            ),
        };
        LocalReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            flags,
            details: Cow::Borrowed(details),
            body: Cow::Owned(e.to_string()),
        }
    }
}

/// The request cannot be forwarded as the client wrote it (`DPE`, 400).
#[derive(Debug, thiserror::Error)]
#[error("bad request: {0}")]
pub struct BadRequest(pub String);

impl From<BadRequest> for LocalReply {
    fn from(e: BadRequest) -> LocalReply {
        LocalReply {
            status: StatusCode::BAD_REQUEST,
            flags: ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            details: Cow::Borrowed("downstream_protocol_error"),
            body: Cow::Owned(e.to_string()),
        }
    }
}

impl From<UpstreamError> for LocalReply {
    fn from(e: UpstreamError) -> LocalReply {
        LocalReply {
            status: e.status(),
            flags: e.flags(),
            details: e.details(),
            body: Cow::Owned(e.to_string()),
        }
    }
}

/// Any phase's failure, for phases that can fail in more than one way.
#[derive(Debug)]
pub enum PhaseError {
    /// Picking an endpoint.
    Pick(PickError),
    /// Talking to the endpoint.
    Upstream(UpstreamError),
    /// The client's request.
    Downstream(BadRequest),
}

impl From<PickError> for PhaseError {
    fn from(e: PickError) -> Self {
        PhaseError::Pick(e)
    }
}

impl From<UpstreamError> for PhaseError {
    fn from(e: UpstreamError) -> Self {
        PhaseError::Upstream(e)
    }
}

impl From<BadRequest> for PhaseError {
    fn from(e: BadRequest) -> Self {
        PhaseError::Downstream(e)
    }
}

impl From<PhaseError> for LocalReply {
    fn from(e: PhaseError) -> LocalReply {
        match e {
            PhaseError::Pick(e) => e.into(),
            PhaseError::Upstream(e) => e.into(),
            PhaseError::Downstream(e) => e.into(),
        }
    }
}
