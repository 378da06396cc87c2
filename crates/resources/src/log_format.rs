//! Access log formats, as Envoy's format strings write them (`envoyFileAccessLog`'s
//! `logFormat.text`, and each value of `logFormat.labels`): text with command operators
//! such as `%RESPONSE_CODE%`, `%REQ(USER-AGENT)%`, `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`
//! and `%UPSTREAM_HOST%`, each with an optional `:N` that truncates its value.

use serde::{Deserialize, Serialize};

/// What an operator writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// `%START_TIME%`.
    StartTime,
    /// `%REQ(NAME?ALTERNATIVE)%`: a request header (lower case), or the next name's when it
    /// is absent; `:method`, `:path`, `:authority` and `:scheme` are the request's.
    RequestHeader(Vec<String>),
    /// `%RESP(NAME?ALTERNATIVE)%`: a response header.
    ResponseHeader(Vec<String>),
    /// `%PROTOCOL%`.
    Protocol,
    /// `%RESPONSE_CODE%`.
    ResponseCode,
    /// `%RESPONSE_FLAGS%`.
    ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%`.
    ResponseCodeDetails,
    /// `%CONNECTION_TERMINATION_DETAILS%`.
    ConnectionTerminationDetails,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    UpstreamTransportFailureReason,
    /// `%BYTES_RECEIVED%`.
    BytesReceived,
    /// `%BYTES_SENT%`.
    BytesSent,
    /// `%DURATION%`, in milliseconds.
    Duration,
    /// `%UPSTREAM_HOST%`.
    UpstreamHost,
    /// `%UPSTREAM_CLUSTER%`.
    UpstreamCluster,
    /// `%UPSTREAM_LOCAL_ADDRESS%`.
    UpstreamLocalAddress,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`.
    DownstreamLocalAddress,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`.
    DownstreamRemoteAddress,
    /// `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`.
    DownstreamRemoteAddressWithoutPort,
    /// `%DOWNSTREAM_PEER_URI_SAN%`: the client certificate's SPIFFE id.
    DownstreamPeerUriSan,
    /// `%REQUESTED_SERVER_NAME%`.
    RequestedServerName,
    /// `%ROUTE_NAME%`.
    RouteName,
    /// `%DYNAMIC_METADATA(envoy.filters.http.rbac:access_log_hint)%`: `true` when an AUDIT
    /// policy matched.
    AuditHint,
    /// `%DYNAMIC_METADATA(envoy.filters.http.rbac:shadow_effective_policy_id)%`: the AUDIT
    /// policy that matched.
    AuditPolicy,
}

/// A piece of a format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// Text as written.
    Literal(String),
    /// An operator, its value cut to `max_length` characters when given.
    Operator {
        /// What it writes.
        command: Command,
        /// `:N`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_length: Option<usize>,
    },
}

/// A log line's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// A line of text (`logFormat.text`).
    Text(Vec<Segment>),
    /// A JSON object, a key per label (`logFormat.labels`), in order.
    Labels(Vec<(String, Vec<Segment>)>),
}

/// Istio's default text format.
pub const ISTIO_TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%";

fn command(name: &str, arg: Option<&str>) -> Result<Command, String> {
    let headers = |arg: Option<&str>| -> Result<Vec<String>, String> {
        let arg = arg.ok_or_else(|| format!("{name} needs a header, as {name}(X-NAME)"))?;
        Ok(arg
            .split('?')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect())
    };
    let plain = |c: Command| match arg {
        // START_TIME takes a strftime format; meshwork writes Envoy's default.
        Some(_) if name != "START_TIME" => Err(format!("{name} takes no argument")),
        _ => Ok(c),
    };
    match name {
        "REQ" => Ok(Command::RequestHeader(headers(arg)?)),
        "RESP" => Ok(Command::ResponseHeader(headers(arg)?)),
        "START_TIME" => plain(Command::StartTime),
        "PROTOCOL" => plain(Command::Protocol),
        "RESPONSE_CODE" => plain(Command::ResponseCode),
        "RESPONSE_FLAGS" => plain(Command::ResponseFlags),
        "RESPONSE_CODE_DETAILS" => plain(Command::ResponseCodeDetails),
        "CONNECTION_TERMINATION_DETAILS" => plain(Command::ConnectionTerminationDetails),
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => plain(Command::UpstreamTransportFailureReason),
        "BYTES_RECEIVED" => plain(Command::BytesReceived),
        "BYTES_SENT" => plain(Command::BytesSent),
        "DURATION" => plain(Command::Duration),
        "UPSTREAM_HOST" => plain(Command::UpstreamHost),
        "UPSTREAM_CLUSTER" => plain(Command::UpstreamCluster),
        "UPSTREAM_LOCAL_ADDRESS" => plain(Command::UpstreamLocalAddress),
        "DOWNSTREAM_LOCAL_ADDRESS" => plain(Command::DownstreamLocalAddress),
        "DOWNSTREAM_REMOTE_ADDRESS" => plain(Command::DownstreamRemoteAddress),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            plain(Command::DownstreamRemoteAddressWithoutPort)
        }
        "DOWNSTREAM_PEER_URI_SAN" => plain(Command::DownstreamPeerUriSan),
        "REQUESTED_SERVER_NAME" => plain(Command::RequestedServerName),
        "ROUTE_NAME" => plain(Command::RouteName),
        "DYNAMIC_METADATA" => match arg {
            Some("envoy.filters.http.rbac:access_log_hint") => Ok(Command::AuditHint),
            Some("envoy.filters.http.rbac:shadow_effective_policy_id") => Ok(Command::AuditPolicy),
            other => Err(format!(
                "%DYNAMIC_METADATA({})% is not metadata meshwork writes",
                other.unwrap_or_default()
            )),
        },
        other => Err(format!(
            "%{other}% is not a command operator meshwork writes"
        )),
    }
}

/// Parses an Envoy format string. `%%` is a literal `%`.
pub fn parse(text: &str) -> Result<Vec<Segment>, String> {
    let mut out: Vec<Segment> = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        literal.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            literal.push('%');
            rest = after;
            continue;
        }
        // NAME, NAME(ARG), each with an optional :N, up to the closing %. An argument may
        // hold `:` (`REQ(X?:PATH)`), so the closing parenthesis is found first.
        let name_end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .ok_or_else(|| {
                format!(
                    "an operator is not closed at {:?}",
                    &text[text.len() - rest.len() - 1..]
                )
            })?;
        let name = &rest[..name_end];
        if name.is_empty() {
            return Err(format!(
                "a lone % at {:?}",
                &text[text.len() - rest.len() - 1..]
            ));
        }
        let mut after = &rest[name_end..];
        let mut arg = None;
        if let Some(inner) = after.strip_prefix('(') {
            let close = inner
                .find(')')
                .ok_or_else(|| format!("%{name}( is not closed"))?;
            arg = Some(&inner[..close]);
            after = &inner[close + 1..];
        }
        let mut max_length = None;
        if let Some(n) = after.strip_prefix(':') {
            let digits = n.find(|c: char| !c.is_ascii_digit()).unwrap_or(n.len());
            max_length = Some(
                n[..digits]
                    .parse()
                    .map_err(|_| format!("%{name}%'s length is not a number"))?,
            );
            after = &n[digits..];
        }
        let Some(after) = after.strip_prefix('%') else {
            return Err(format!("%{name} is not closed by %"));
        };
        if !literal.is_empty() {
            out.push(Segment::Literal(std::mem::take(&mut literal)));
        }
        out.push(Segment::Operator {
            command: command(name, arg)?,
            max_length,
        });
        rest = after;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        out.push(Segment::Literal(literal));
    }
    Ok(out)
}

impl LogFormat {
    /// The request and response headers the format writes, so that a proxy keeps them.
    pub fn headers(&self) -> (Vec<&str>, Vec<&str>) {
        let segments: Vec<&Segment> = match self {
            LogFormat::Text(s) => s.iter().collect(),
            LogFormat::Labels(l) => l.iter().flat_map(|(_, s)| s).collect(),
        };
        let (mut request, mut response) = (Vec::new(), Vec::new());
        for s in segments {
            match s {
                Segment::Operator {
                    command: Command::RequestHeader(names),
                    ..
                } => request.extend(names.iter().map(String::as_str)),
                Segment::Operator {
                    command: Command::ResponseHeader(names),
                    ..
                } => response.extend(names.iter().map(String::as_str)),
                _ => {}
            }
        }
        (request, response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(command: Command) -> Segment {
        Segment::Operator {
            command,
            max_length: None,
        }
    }

    #[test]
    fn operators_arguments_lengths_and_literals() {
        assert_eq!(
            parse("[%START_TIME%] %REQ(X-ENVOY-ORIGINAL-PATH?:PATH):10% 100%% %RESPONSE_CODE%\n")
                .unwrap(),
            vec![
                Segment::Literal("[".into()),
                op(Command::StartTime),
                Segment::Literal("] ".into()),
                Segment::Operator {
                    command: Command::RequestHeader(vec![
                        "x-envoy-original-path".into(),
                        ":path".into()
                    ]),
                    max_length: Some(10),
                },
                Segment::Literal(" 100% ".into()),
                op(Command::ResponseCode),
                Segment::Literal("\n".into()),
            ]
        );
        assert_eq!(
            parse("%START_TIME(%s.%3f)%").unwrap(),
            vec![op(Command::StartTime)]
        );
        let istio = parse(ISTIO_TEXT).unwrap();
        assert_eq!(
            istio
                .iter()
                .filter(|s| matches!(s, Segment::Operator { .. }))
                .count(),
            24
        );
    }

    #[test]
    fn what_is_not_a_format_is_named() {
        for (text, why) in [
            ("%NOPE%", "%NOPE% is not a command operator"),
            ("%REQ%", "REQ needs a header"),
            ("%REQ(X", "is not closed"),
            ("%DURATION", "not closed"),
            ("%DURATION:x%", "not a number"),
            ("50 % off", "a lone %"),
            ("%BYTES_SENT(x)%", "takes no argument"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
