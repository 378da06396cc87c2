//! Expressions over what a proxy knows of a finished request or connection: the part of
//! CEL that Istio's Telemetry API writes in access-log filters
//! (`response.code >= 400 && request.headers['x-debug'] == 'on'`) and in metric tag
//! overrides (`request.host`, `string(destination.port)`), over Envoy's attribute names.
//!
//! The control plane parses and checks them; a proxy only evaluates the tree. As in CEL,
//! reading what is not there (a header the request did not send) is an error, which
//! `&&` and `||` absorb when their other side decides (`false && error` is false), and
//! which makes a filter not match and a tag `unknown`.

use serde::{Deserialize, Serialize};

use crate::Comparison;

/// A value an expression yields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// `true`, `false`.
    Bool(bool),
    /// An integer (CEL's `int` and `uint`).
    Int(i64),
    /// A string.
    Str(String),
    /// A duration, in nanoseconds (`request.duration`, `duration("1s")`).
    Duration(i64),
}

impl Value {
    /// The value as a metric label or log field: strings as they are, numbers in decimal,
    /// durations in seconds with CEL's `s` suffix.
    pub fn to_text(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Str(s) => s.clone(),
            Value::Duration(ns) => format!("{}s", *ns as f64 / 1e9),
        }
    }
}

/// An attribute of a request or connection, by Envoy's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// `request.method`.
    RequestMethod,
    /// `request.path`: the path with its query.
    RequestPath,
    /// `request.url_path`: the path without its query.
    RequestUrlPath,
    /// `request.host`: the authority as sent.
    RequestHost,
    /// `request.scheme`.
    RequestScheme,
    /// `request.protocol`: `HTTP/1.1`, `HTTP/2`.
    RequestProtocol,
    /// `request.id`: `x-request-id`.
    RequestId,
    /// `request.useragent`.
    RequestUserAgent,
    /// `request.referer`.
    RequestReferer,
    /// `request.size`: body bytes.
    RequestSize,
    /// `request.duration`: from arrival to the end of the response.
    RequestDuration,
    /// `response.code`.
    ResponseCode,
    /// `response.code_details`: Envoy's `response_code_details`.
    ResponseCodeDetails,
    /// `response.grpc_status`.
    ResponseGrpcStatus,
    /// `response.size`: body bytes.
    ResponseSize,
    /// `source.address`: the client's IP.
    SourceAddress,
    /// `source.port`.
    SourcePort,
    /// `destination.address`: the address the client connected to.
    DestinationAddress,
    /// `destination.port`.
    DestinationPort,
    /// `connection.mtls`: the client presented a verified certificate.
    ConnectionMtls,
    /// `connection.requested_server_name`: SNI.
    ConnectionRequestedServerName,
    /// `connection.uri_san_peer_certificate`: the client's SPIFFE id.
    ConnectionPeerUri,
    /// `upstream.address`: the endpoint chosen, `ip:port`.
    UpstreamAddress,
    /// `xds.cluster_name`.
    XdsClusterName,
    /// `xds.route_name`.
    XdsRouteName,
}

impl Attribute {
    /// Every attribute with its CEL name.
    pub const ALL: [(&'static str, Attribute); 25] = [
        ("request.method", Attribute::RequestMethod),
        ("request.path", Attribute::RequestPath),
        ("request.url_path", Attribute::RequestUrlPath),
        ("request.host", Attribute::RequestHost),
        ("request.scheme", Attribute::RequestScheme),
        ("request.protocol", Attribute::RequestProtocol),
        ("request.id", Attribute::RequestId),
        ("request.useragent", Attribute::RequestUserAgent),
        ("request.referer", Attribute::RequestReferer),
        ("request.size", Attribute::RequestSize),
        ("request.duration", Attribute::RequestDuration),
        ("response.code", Attribute::ResponseCode),
        ("response.code_details", Attribute::ResponseCodeDetails),
        ("response.grpc_status", Attribute::ResponseGrpcStatus),
        ("response.size", Attribute::ResponseSize),
        ("source.address", Attribute::SourceAddress),
        ("source.port", Attribute::SourcePort),
        ("destination.address", Attribute::DestinationAddress),
        ("destination.port", Attribute::DestinationPort),
        ("connection.mtls", Attribute::ConnectionMtls),
        (
            "connection.requested_server_name",
            Attribute::ConnectionRequestedServerName,
        ),
        (
            "connection.uri_san_peer_certificate",
            Attribute::ConnectionPeerUri,
        ),
        ("upstream.address", Attribute::UpstreamAddress),
        ("xds.cluster_name", Attribute::XdsClusterName),
        ("xds.route_name", Attribute::XdsRouteName),
    ];

    /// The attribute of a CEL name.
    pub fn named(name: &str) -> Option<Attribute> {
        Attribute::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
    }
}

/// A string test, as CEL's string methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextTest {
    /// `a.startsWith(b)`.
    StartsWith,
    /// `a.endsWith(b)`.
    EndsWith,
    /// `a.contains(b)`.
    Contains,
}

/// An expression, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// A literal.
    Literal(Value),
    /// An attribute.
    Attribute(Attribute),
    /// `request.headers['name']` (the name in lower case).
    RequestHeader(String),
    /// `response.headers['name']`.
    ResponseHeader(String),
    /// `'name' in request.headers`.
    HasRequestHeader(String),
    /// `'name' in response.headers`.
    HasResponseHeader(String),
    /// `!e`.
    Not(Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a OP b`.
    Compare(Comparison, Box<Expr>, Box<Expr>),
    /// `a.startsWith(b)` and the like.
    Text(TextTest, Box<Expr>, Box<Expr>),
    /// `c ? a : b`.
    Choose(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `string(e)`.
    ToString(Box<Expr>),
    /// `int(e)`: a string's number, or a duration's nanoseconds.
    ToInt(Box<Expr>),
}

/// What an expression reads.
pub trait Attributes {
    /// An attribute; `None` when it has no value here (no SNI, no route).
    fn attribute(&self, attribute: Attribute) -> Option<Value>;
    /// A request header's value, as sent.
    fn request_header(&self, name: &str) -> Option<&str>;
    /// A response header's value.
    fn response_header(&self, name: &str) -> Option<&str>;
}

/// An expression read what is not there, or compared values of different types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoValue;

impl Expr {
    /// The value of the expression over `a`.
    pub fn eval(&self, a: &dyn Attributes) -> Result<Value, NoValue> {
        let text = |s: Option<&str>| s.map(|s| Value::Str(s.to_string())).ok_or(NoValue);
        Ok(match self {
            Expr::Literal(v) => v.clone(),
            Expr::Attribute(attr) => a.attribute(*attr).ok_or(NoValue)?,
            Expr::RequestHeader(h) => text(a.request_header(h))?,
            Expr::ResponseHeader(h) => text(a.response_header(h))?,
            Expr::HasRequestHeader(h) => Value::Bool(a.request_header(h).is_some()),
            Expr::HasResponseHeader(h) => Value::Bool(a.response_header(h).is_some()),
            Expr::Not(e) => Value::Bool(!e.eval(a)?.as_bool()?),
            // CEL's logic: a side that decides wins over an error on the other.
            Expr::And(l, r) => {
                let l = l.eval(a).and_then(|v| v.as_bool());
                if l == Ok(false) {
                    return Ok(Value::Bool(false));
                }
                match (l, r.eval(a).and_then(|v| v.as_bool())) {
                    (_, Ok(false)) => Value::Bool(false),
                    (Ok(true), Ok(true)) => Value::Bool(true),
                    _ => return Err(NoValue),
                }
            }
            Expr::Or(l, r) => {
                let l = l.eval(a).and_then(|v| v.as_bool());
                if l == Ok(true) {
                    return Ok(Value::Bool(true));
                }
                match (l, r.eval(a).and_then(|v| v.as_bool())) {
                    (_, Ok(true)) => Value::Bool(true),
                    (Ok(false), Ok(false)) => Value::Bool(false),
                    _ => return Err(NoValue),
                }
            }
            Expr::Compare(op, l, r) => {
                let (l, r) = (l.eval(a)?, r.eval(a)?);
                let ordering = match (&l, &r) {
                    (Value::Int(x), Value::Int(y)) => x.cmp(y),
                    (Value::Str(x), Value::Str(y)) => x.cmp(y),
                    (Value::Duration(x), Value::Duration(y)) => x.cmp(y),
                    (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
                    _ => return Err(NoValue),
                };
                Value::Bool(op.holds(ordering))
            }
            Expr::Text(test, l, r) => {
                let (Value::Str(l), Value::Str(r)) = (l.eval(a)?, r.eval(a)?) else {
                    return Err(NoValue);
                };
                Value::Bool(match test {
                    TextTest::StartsWith => l.starts_with(&r),
                    TextTest::EndsWith => l.ends_with(&r),
                    TextTest::Contains => l.contains(&r),
                })
            }
            Expr::Choose(c, x, y) => {
                if c.eval(a)?.as_bool()? {
                    x.eval(a)?
                } else {
                    y.eval(a)?
                }
            }
            Expr::ToString(e) => Value::Str(e.eval(a)?.to_text()),
            Expr::ToInt(e) => match e.eval(a)? {
                Value::Int(n) => Value::Int(n),
                Value::Duration(ns) => Value::Int(ns),
                Value::Str(s) => Value::Int(s.trim().parse().map_err(|_| NoValue)?),
                Value::Bool(_) => return Err(NoValue),
            },
        })
    }

    /// Whether the expression holds (a filter lets the entry through): true, and not an
    /// error.
    pub fn holds(&self, a: &dyn Attributes) -> bool {
        self.eval(a) == Ok(Value::Bool(true))
    }

    /// The request headers the expression reads, so that a proxy keeps only those.
    pub fn request_headers<'a>(&'a self, out: &mut Vec<&'a str>) {
        self.headers(true, out);
    }

    /// The response headers the expression reads.
    pub fn response_headers<'a>(&'a self, out: &mut Vec<&'a str>) {
        self.headers(false, out);
    }

    fn headers<'a>(&'a self, request: bool, out: &mut Vec<&'a str>) {
        match self {
            Expr::RequestHeader(h) | Expr::HasRequestHeader(h) if request => out.push(h),
            // The referer is a header the record keeps only when asked.
            Expr::Attribute(Attribute::RequestReferer) if request => out.push("referer"),
            Expr::ResponseHeader(h) | Expr::HasResponseHeader(h) if !request => out.push(h),
            Expr::Literal(_)
            | Expr::Attribute(_)
            | Expr::RequestHeader(_)
            | Expr::HasRequestHeader(_)
            | Expr::ResponseHeader(_)
            | Expr::HasResponseHeader(_) => {}
            Expr::Not(e) | Expr::ToString(e) | Expr::ToInt(e) => e.headers(request, out),
            Expr::And(l, r) | Expr::Or(l, r) | Expr::Compare(_, l, r) | Expr::Text(_, l, r) => {
                l.headers(request, out);
                r.headers(request, out);
            }
            Expr::Choose(c, x, y) => {
                c.headers(request, out);
                x.headers(request, out);
                y.headers(request, out);
            }
        }
    }
}

impl Value {
    fn as_bool(&self) -> Result<bool, NoValue> {
        match self {
            Value::Bool(b) => Ok(*b),
            _ => Err(NoValue),
        }
    }
}

impl Comparison {
    /// Whether `ordering` (left against right) satisfies the operator.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Comparison::Eq => ordering == Equal,
            Comparison::Ne => ordering != Equal,
            Comparison::Lt => ordering == Less,
            Comparison::Le => ordering != Greater,
            Comparison::Gt => ordering == Greater,
            Comparison::Ge => ordering != Less,
        }
    }
}
