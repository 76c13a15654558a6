//! stilts-class: the classes of upstream failure, and what each one means for routing.
//!
//! One type for two sides that must agree: a plugin classifies an upstream error (through
//! `stilts-plugin`, which re-exports [`ErrorClass`]) and the routing engine acts on the class
//! (`stilts-core`, which re-exports it too). It is a leaf crate with no dependency but serde, so
//! plugins can share it without depending on the engine, and the engine without depending on
//! plugin code. The numbers (`ErrorClass::Quota as u32 == 7`) and the snake_case names are part of
//! the plugin ABI: never renumber or rename, only append.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an attempt failed, as classified by the plugin (or the host, for transport failures).
///
/// The class decides what the router does next; see the table in `docs/routing.md`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// 429, Anthropic 529: cool the provider down until Retry-After; not an outage.
    RateLimited = 1,
    /// 5xx, connection reset or refused: counts for the breaker; fail over, then retry with backoff.
    Server = 2,
    /// No headers, no first token, or a stream stall within the limit (or an upstream 408): counts
    /// for the breaker; the silent provider is retried last.
    Timeout = 3,
    /// The prompt does not fit the model's context: route to a larger context, else return it.
    ContextLength = 4,
    /// The provider refused the content: returned to the client unless failover is configured.
    ContentFilter = 5,
    /// 401/403: the deployment is misconfigured; long cool-down, fail over.
    Auth = 6,
    /// A spent quota (429 insufficient_quota): long cool-down, fail over.
    Quota = 7,
    /// Any other 4xx: the client's fault; returned, never retried.
    BadRequest = 8,
}

impl ErrorClass {
    /// Every class, in numeric order (used to index per-class counters).
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

    /// The snake_case name used in JSON, config, logs, metrics and reports.
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

    /// Position in [`ErrorClass::ALL`] (0 to 7).
    pub const fn index(self) -> usize {
        self as usize - 1
    }

    /// Whether a failure of this class counts against the provider's health (breaker, outage).
    pub const fn is_outage(self) -> bool {
        matches!(self, ErrorClass::Server | ErrorClass::Timeout)
    }

    /// The default class of an HTTP status when the body says nothing more specific.
    pub const fn from_status(status: u16) -> ErrorClass {
        match status {
            401 | 403 => ErrorClass::Auth,
            402 => ErrorClass::Quota,
            408 => ErrorClass::Timeout,
            429 | 529 => ErrorClass::RateLimited,
            409 | 500..=599 => ErrorClass::Server,
            _ => ErrorClass::BadRequest,
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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

    #[test]
    fn abi_numbers_and_names_never_move() {
        let expected = [
            (1, "rate_limited"),
            (2, "server"),
            (3, "timeout"),
            (4, "context_length"),
            (5, "content_filter"),
            (6, "auth"),
            (7, "quota"),
            (8, "bad_request"),
        ];
        for (class, (number, name)) in ErrorClass::ALL.iter().zip(expected) {
            assert_eq!(*class as u32, number);
            assert_eq!(class.as_str(), name);
            assert_eq!(serde_json::to_string(class).unwrap(), format!("\"{name}\""));
        }
    }

    #[test]
    fn statuses_map_to_their_default_class() {
        assert_eq!(ErrorClass::from_status(401), ErrorClass::Auth);
        assert_eq!(ErrorClass::from_status(429), ErrorClass::RateLimited);
        assert_eq!(ErrorClass::from_status(529), ErrorClass::RateLimited);
        assert_eq!(ErrorClass::from_status(503), ErrorClass::Server);
        assert_eq!(ErrorClass::from_status(404), ErrorClass::BadRequest);
    }
}
