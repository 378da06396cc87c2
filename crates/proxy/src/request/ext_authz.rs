//! External authorization in the policy phase, for CUSTOM AuthorizationPolicies: a
//! request one of them matches is checked by the mesh config's `envoyExtAuthzHttp` or
//! `envoyExtAuthzGrpc` provider before DENY and ALLOW policies are evaluated, as Envoy's
//! `ext_authz` filter runs before RBAC.
//!
//! Over HTTP, the authorizer is sent the request's method, its path behind `pathPrefix`,
//! Host, Authorization and the headers `includeRequestHeadersInCheck` names, with no
//! body; a 200 allows, with the answer's headers that `headersToUpstreamOnAllow` names
//! added to the request; any other status denies, with its body and the headers that
//! `headersToDownstreamOnDeny` names. Over gRPC it is Envoy's
//! `envoy.service.auth.v3.Authorization/Check`. An authorizer that cannot be asked in
//! time lets the request go on when `failOpen`, else it is answered `statusOnError`
//! (403). Denials carry the flag `UAEX`.

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Response, StatusCode};
use meshwork_resources::authorization::{EXT_AUTHZ_METADATA, ExtAuthz, Pattern};

use crate::body::{Body, full};
use crate::flags::ResponseFlags;
use crate::request::context::RequestContext;

/// The gRPC method of Envoy's external authorization service.
pub const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// `CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `AttributeContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "2")]
    pub destination: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<AttributeRequest>,
}

/// `AttributeContext.Peer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
    #[prost(string, tag = "4")]
    pub principal: String,
}

/// `config.core.v3.Address` with its socket address.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Address {
    #[prost(message, optional, tag = "1")]
    pub socket_address: Option<SocketAddress>,
}

/// `config.core.v3.SocketAddress`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SocketAddress {
    #[prost(string, tag = "2")]
    pub address: String,
    #[prost(uint32, tag = "3")]
    pub port_value: u32,
}

/// `AttributeContext.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeRequest {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(map = "string, string", tag = "3")]
    pub headers: HashMap<String, String>,
    #[prost(string, tag = "4")]
    pub path: String,
    #[prost(string, tag = "5")]
    pub host: String,
    #[prost(string, tag = "6")]
    pub scheme: String,
    #[prost(string, tag = "7")]
    pub query: String,
    #[prost(string, tag = "10")]
    pub protocol: String,
}

/// `CheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<RpcStatus>,
    #[prost(message, optional, tag = "2")]
    pub denied_response: Option<DeniedHttpResponse>,
    #[prost(message, optional, tag = "3")]
    pub ok_response: Option<OkHttpResponse>,
    /// Left for the filters after it, under `envoy.filters.http.ext_authz`.
    #[prost(message, optional, tag = "4")]
    pub dynamic_metadata: Option<prost_types::Struct>,
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `DeniedHttpResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeniedHttpResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<HttpStatus>,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(string, tag = "3")]
    pub body: String,
}

/// `type.v3.HttpStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
}

/// `OkHttpResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OkHttpResponse {
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    /// Deprecated for [`CheckResponse::dynamic_metadata`], which it overrides when set.
    #[prost(message, optional, tag = "3")]
    pub dynamic_metadata: Option<prost_types::Struct>,
}

/// `config.core.v3.HeaderValueOption`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValueOption {
    #[prost(message, optional, tag = "1")]
    pub header: Option<HeaderValueProto>,
}

/// `config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValueProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// How the proxy reaches its external authorizer; kept while its address and protocol
/// stay the same.
pub enum Channel {
    /// A gRPC channel.
    Grpc(crate::otlp::GrpcClient),
    /// Kept-alive HTTP/1.1 connections.
    Http(crate::upstream::HelperPool),
}

/// What the authorizer decided.
enum Verdict {
    /// Go on, with these headers added to the request and this metadata for the
    /// policies after it.
    Allow(Vec<(String, String)>, Option<prost_types::Struct>),
    /// Answer with this status, headers and body.
    Deny(u16, Vec<(String, String)>, String),
}

fn named(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name, true))
}

/// Checks the request: the answer when it is denied or cannot be checked, else `None`
/// (and the request carries what the authorizer added).
pub async fn check(
    ext: &ExtAuthz,
    channel: Option<&Channel>,
    ctx: &mut RequestContext,
    parts: &mut http::request::Parts,
) -> Option<Response<Body>> {
    // Headers the authorizer may add come from it alone: a client's own copies go.
    for p in &ext.headers_to_upstream_on_allow {
        if let Pattern::Exact(name) = p {
            parts.headers.remove(name.as_str());
        }
    }
    let timeout = Duration::from_millis(ext.timeout_ms);
    // Without a channel (an address that does not parse) the authorizer cannot be asked.
    let Some(channel) = channel else {
        return failed(ext, ctx, "the authorizer's address is not usable");
    };
    let asked = match channel {
        Channel::Grpc(client) => {
            tokio::time::timeout(timeout, check_grpc(ext, client.clone(), ctx, parts)).await
        }
        Channel::Http(pool) => {
            tokio::time::timeout(timeout, check_http(ext, pool, ctx, parts)).await
        }
    };
    let verdict = match asked {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return failed(ext, ctx, &e),
        Err(_) => return failed(ext, ctx, "the check timed out"),
    };
    match verdict {
        Verdict::Allow(headers, metadata) => {
            if let Some(m) = metadata {
                ctx.metadata.set(EXT_AUTHZ_METADATA, m);
            }
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    parts.headers.insert(k, v);
                }
            }
            None
        }
        Verdict::Deny(status, headers, body) => {
            tracing::info!(provider = %ext.provider, status, "request denied by the external authorizer");
            ctx.flags
                .insert(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE);
            ctx.answered("ext_authz_denied");
            let mut r = Response::new(full(body));
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    r.headers_mut().append(k, v);
                }
            }
            Some(r)
        }
    }
}

/// The answer when the authorizer could not be asked: none with `failOpen`.
fn failed(ext: &ExtAuthz, ctx: &mut RequestContext, why: &str) -> Option<Response<Body>> {
    tracing::warn!(provider = %ext.provider, error = %why, fail_open = ext.fail_open, "the external authorizer cannot be asked");
    if ext.fail_open {
        return None;
    }
    ctx.flags
        .insert(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE);
    ctx.answered("ext_authz_error");
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::from_u16(ext.status_on_error).unwrap_or(StatusCode::FORBIDDEN);
    Some(r)
}

/// The request headers a check carries.
fn check_headers(ext: &ExtAuthz, parts: &http::request::Parts) -> Vec<(String, String)> {
    // The check has no body: the request's Content-Length is not sent with it.
    let always = ["authorization"];
    let mut out: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(k, _)| {
            always.contains(&k.as_str()) || named(&ext.include_request_headers, k.as_str())
        })
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    out.extend(ext.include_additional_headers.iter().cloned());
    out
}

async fn check_http(
    ext: &ExtAuthz,
    pool: &crate::upstream::HelperPool,
    ctx: &RequestContext,
    parts: &http::request::Parts,
) -> Result<Verdict, String> {
    let target = format!(
        "{}{}",
        ext.path_prefix,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut request = http::Request::builder()
        .method(parts.method.clone())
        .uri(target)
        .header(http::header::HOST, ctx.authority.as_str());
    for (k, v) in check_headers(ext, parts) {
        request = request.header(k, v);
    }
    let (head, _) = request.body(()).map_err(|e| e.to_string())?.into_parts();
    let (response, body) = pool.send(&ext.address, head).await?;
    let status = response.status.as_u16();
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    if status == 200 {
        return Ok(Verdict::Allow(
            headers
                .into_iter()
                .filter(|(k, _)| named(&ext.headers_to_upstream_on_allow, k))
                .collect(),
            None,
        ));
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok(Verdict::Deny(
        status,
        headers
            .into_iter()
            .filter(|(k, _)| named(&ext.headers_to_downstream_on_deny, k))
            .collect(),
        body,
    ))
}

async fn check_grpc(
    ext: &ExtAuthz,
    mut client: crate::otlp::GrpcClient,
    ctx: &RequestContext,
    parts: &http::request::Parts,
) -> Result<Verdict, String> {
    let peer = |addr: std::net::SocketAddr, principal: &str| Peer {
        address: Some(Address {
            socket_address: Some(SocketAddress {
                address: addr.ip().to_string(),
                port_value: u32::from(addr.port()),
            }),
        }),
        principal: principal.to_string(),
    };
    let mut headers: HashMap<String, String> = HashMap::new();
    for (k, v) in parts.headers.iter() {
        if let Ok(v) = v.to_str() {
            headers
                .entry(k.as_str().to_string())
                .and_modify(|e| {
                    e.push(',');
                    e.push_str(v);
                })
                .or_insert_with(|| v.to_string());
        }
    }
    headers.extend(ext.include_additional_headers.iter().cloned());
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(
                ctx.conn.peer,
                ctx.conn.peer_identity.as_deref().unwrap_or(""),
            )),
            destination: ctx.conn.local.map(|l| peer(l, "")),
            request: Some(AttributeRequest {
                http: Some(HttpRequest {
                    id: headers.get("x-request-id").cloned().unwrap_or_default(),
                    method: parts.method.to_string(),
                    path: parts
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string(),
                    query: parts.uri.query().unwrap_or("").to_string(),
                    host: ctx.authority.to_string(),
                    scheme: ctx.conn.scheme.to_string(),
                    protocol: format!("{:?}", parts.version),
                    headers,
                }),
            }),
        }),
    };
    let answer: CheckResponse = client.unary(CHECK, request).await?;
    let pairs = |h: &[HeaderValueOption]| -> Vec<(String, String)> {
        h.iter()
            .filter_map(|o| o.header.as_ref())
            .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
            .collect()
    };
    if answer.status.as_ref().is_none_or(|s| s.code == 0) {
        let ok = answer.ok_response.unwrap_or_default();
        return Ok(Verdict::Allow(
            pairs(&ok.headers),
            ok.dynamic_metadata.or(answer.dynamic_metadata),
        ));
    }
    let denied = answer.denied_response.unwrap_or_default();
    let status = denied
        .status
        .map(|s| s.code)
        .filter(|c| (100..600).contains(c))
        .unwrap_or(403) as u16;
    Ok(Verdict::Deny(status, pairs(&denied.headers), denied.body))
}
