//! Envoy's retry conditions (`retryOn`), compiled by the model from Istio's comma-separated
//! text into a flag set and a list of status codes, so the proxy never parses them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The conditions under which a request is tried again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    flags: u32,
    /// `retriable-status-codes`: these statuses are retried.
    pub status_codes: Vec<u16>,
}

macro_rules! conditions {
    ($($(#[$doc:meta])* $name:ident = $bit:expr, $text:literal;)*) => {
        impl RetryOn {
            $($(#[$doc])* pub const $name: u32 = 1 << $bit;)*
            const NAMES: &'static [(u32, &'static str)] = &[$((1 << $bit, $text)),*];
        }
    };
}

conditions! {
    /// `5xx`: a 5xx answer, a reset, a connect failure or a timeout.
    SERVER_ERROR = 0, "5xx";
    /// `gateway-error`: 502, 503 or 504.
    GATEWAY_ERROR = 1, "gateway-error";
    /// `reset`: the upstream reset or closed without answering.
    RESET = 2, "reset";
    /// `connect-failure`: connecting failed or timed out.
    CONNECT_FAILURE = 3, "connect-failure";
    /// `retriable-4xx`: 409.
    RETRIABLE_4XX = 4, "retriable-4xx";
    /// `refused-stream`: the upstream refused the stream (HTTP/2 REFUSED_STREAM).
    REFUSED_STREAM = 5, "refused-stream";
    /// `retriable-status-codes`: the statuses in [`RetryOn::status_codes`].
    RETRIABLE_STATUS_CODES = 6, "retriable-status-codes";
    /// `reset-before-request`: a reset before any request byte was sent.
    RESET_BEFORE_REQUEST = 7, "reset-before-request";
    /// `envoy-ratelimited`.
    ENVOY_RATELIMITED = 8, "envoy-ratelimited";
    /// `retriable-headers`.
    RETRIABLE_HEADERS = 9, "retriable-headers";
    /// gRPC `cancelled`.
    CANCELLED = 10, "cancelled";
    /// gRPC `deadline-exceeded`.
    DEADLINE_EXCEEDED = 11, "deadline-exceeded";
    /// gRPC `internal`.
    INTERNAL = 12, "internal";
    /// gRPC `resource-exhausted`.
    RESOURCE_EXHAUSTED = 13, "resource-exhausted";
    /// gRPC `unavailable`.
    UNAVAILABLE = 14, "unavailable";
    /// `http3-post-connect-failure`.
    HTTP3_POST_CONNECT_FAILURE = 15, "http3-post-connect-failure";
}

impl RetryOn {
    /// Parses Istio's `retryOn` text: condition names and status codes, comma-separated.
    /// Status codes imply `retriable-status-codes`, as Istio reads them. Returns the words
    /// it does not know apart.
    pub fn parse(text: &str) -> (RetryOn, Vec<String>) {
        let mut out = RetryOn::default();
        let mut unknown = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if let Ok(code) = word.parse::<u16>() {
                out.flags |= RetryOn::RETRIABLE_STATUS_CODES;
                if !out.status_codes.contains(&code) {
                    out.status_codes.push(code);
                }
            } else if let Some((bit, _)) = RetryOn::NAMES.iter().find(|(_, n)| *n == word) {
                out.flags |= bit;
            } else {
                unknown.push(word.to_string());
            }
        }
        (out, unknown)
    }

    /// Whether the condition (one of the constants) is on.
    pub fn has(&self, condition: u32) -> bool {
        self.flags & condition != 0
    }

    /// Whether a response with this status is retried.
    pub fn retries_status(&self, status: u16) -> bool {
        (self.has(RetryOn::SERVER_ERROR) && status >= 500)
            || (self.has(RetryOn::GATEWAY_ERROR) && (502..=504).contains(&status))
            || (self.has(RetryOn::RETRIABLE_4XX) && status == 409)
            || (self.has(RetryOn::RETRIABLE_STATUS_CODES) && self.status_codes.contains(&status))
    }

    /// The conditions as Istio writes them.
    pub fn words(&self) -> Vec<String> {
        let mut out: Vec<String> = RetryOn::NAMES
            .iter()
            .filter(|(bit, _)| self.flags & bit != 0)
            .map(|(_, n)| n.to_string())
            .collect();
        out.extend(self.status_codes.iter().map(u16::to_string));
        out
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.words().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let words = Vec::<String>::deserialize(d)?;
        let (on, unknown) = RetryOn::parse(&words.join(","));
        match unknown.first() {
            Some(w) => Err(serde::de::Error::custom(format!(
                "unknown retry condition {w:?}"
            ))),
            None => Ok(on),
        }
    }
}
