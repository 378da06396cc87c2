//! Envoy's response flags as a typed set: several at once, printed in Envoy's order and
//! comma-separated (`UT,URX`, `DI,URX`), `-` when empty.

use std::fmt;

/// A set of response flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident = $bit:expr, $text:literal;)*) => {
        impl ResponseFlags {
            $($(#[$doc])* pub const $name: ResponseFlags = ResponseFlags(1 << $bit);)*
            /// Every flag with its text, in Envoy's order.
            const ALL: &'static [(ResponseFlags, &'static str)] =
                &[$((ResponseFlags(1 << $bit), $text)),*];
        }
    };
}

// Envoy's order (its response flag table), so that joined flags print as Envoy prints them.
flags! {
    /// No healthy upstream.
    NO_HEALTHY_UPSTREAM = 0, "UH";
    /// The upstream request timed out.
    UPSTREAM_REQUEST_TIMEOUT = 1, "UT";
    /// The connection to the upstream failed.
    UPSTREAM_CONNECTION_FAILURE = 2, "UF";
    /// The upstream connection closed before the response.
    UPSTREAM_CONNECTION_TERMINATION = 3, "UC";
    /// A circuit breaker refused the request.
    UPSTREAM_OVERFLOW = 4, "UO";
    /// No route matched.
    NO_ROUTE_FOUND = 5, "NR";
    /// A fault delayed the request.
    DELAY_INJECTED = 6, "DI";
    /// A fault aborted the request.
    FAULT_INJECTED = 7, "FI";
    /// Authorization denied the request.
    UNAUTHORIZED = 8, "RBAC";
    /// The client went away.
    DOWNSTREAM_CONNECTION_TERMINATION = 9, "DC";
    /// Retries ran out on a retriable outcome.
    UPSTREAM_RETRY_LIMIT_EXCEEDED = 10, "URX";
    /// The client's request could not be parsed or forwarded.
    DOWNSTREAM_PROTOCOL_ERROR = 11, "DPE";
    /// The upstream's response could not be parsed.
    UPSTREAM_PROTOCOL_ERROR = 12, "UPE";
    /// The route names a cluster that does not exist.
    NO_CLUSTER_FOUND = 13, "NC";
    /// No listener filter chain (server) matched the connection.
    NO_FILTER_CHAIN_FOUND = 14, "NR_FC";
    /// A TCP connection was idle too long.
    IDLE_TIMEOUT = 15, "IT";
    /// The external authorizer denied the request, or could not be asked.
    UNAUTHORIZED_EXTERNAL_SERVICE = 16, "UAEX";
}

impl ResponseFlags {
    /// No flag.
    pub const NONE: ResponseFlags = ResponseFlags(0);

    /// Adds the flags of `other`.
    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Whether no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = ResponseFlags;
    fn bitor(self, other: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | other.0)
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, text) in ResponseFlags::ALL {
            if self.contains(*flag) {
                if !first {
                    f.write_str(",")?;
                }
                // Envoy prints a missing filter chain as NR too.
                f.write_str(if *text == "NR_FC" { "NR" } else { text })?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_as_envoy_prints_them() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        let mut f = ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
        f.insert(ResponseFlags::DELAY_INJECTED);
        assert_eq!(f.to_string(), "DI,URX");
        f.insert(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
        assert_eq!(f.to_string(), "UT,DI,URX");
        assert_eq!(ResponseFlags::NO_FILTER_CHAIN_FOUND.to_string(), "NR");
        assert!(f.contains(ResponseFlags::DELAY_INJECTED));
        assert!(!f.contains(ResponseFlags::FAULT_INJECTED));
    }
}
