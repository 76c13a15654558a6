//! The classes of upstream failure and what each one means for routing.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an attempt failed, as classified by the plugin (or the host, for transport failures).
///
/// The class decides what the router does next; see the table in `docs/routing.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// 429, Anthropic 529: cool the provider down until Retry-After; not an outage.
    RateLimited,
    /// 5xx, connection reset or refused: counts for the breaker; fail over, then retry with backoff.
    Server,
    /// No headers, no first token, or a stream stall within the limit: counts for the breaker; the
    /// silent provider is retried last.
    Timeout,
    /// The prompt does not fit the model's context: route to a larger context, else return it.
    ContextLength,
    /// The provider refused the content: returned to the client unless failover is configured.
    ContentFilter,
    /// 401/403: the deployment is misconfigured; long cool-down, fail over.
    Auth,
    /// A spent quota (429 insufficient_quota): long cool-down, fail over.
    Quota,
    /// Any other 4xx: the client's fault; returned, never retried.
    BadRequest,
}

impl ErrorClass {
    /// Every class, in a fixed order (used to index per-class counters).
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::RateLimited,
        ErrorClass::Server,
        ErrorClass::Timeout,
        ErrorClass::ContextLength,
        ErrorClass::ContentFilter,
        ErrorClass::Auth,
        ErrorClass::Quota,
        ErrorClass::BadRequest,
    ];

    /// The snake_case name used in config, metrics and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Server => "server",
            ErrorClass::Timeout => "timeout",
            ErrorClass::ContextLength => "context_length",
            ErrorClass::ContentFilter => "content_filter",
            ErrorClass::Auth => "auth",
            ErrorClass::Quota => "quota",
            ErrorClass::BadRequest => "bad_request",
        }
    }

    /// Position in [`ErrorClass::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether a failure of this class counts against the provider's health (breaker, outage).
    pub const fn is_outage(self) -> bool {
        matches!(self, ErrorClass::Server | ErrorClass::Timeout)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_position_in_all() {
        for (i, class) in ErrorClass::ALL.iter().enumerate() {
            assert_eq!(class.index(), i);
        }
    }

    #[test]
    fn only_server_and_timeout_are_outages() {
        let outages: Vec<_> = ErrorClass::ALL.iter().filter(|c| c.is_outage()).collect();
        assert_eq!(outages, [&ErrorClass::Server, &ErrorClass::Timeout]);
    }
}
