//! Quota-aware admission: the provider's own rate-limit headers steer traffic before it says 429.
//!
//! Providers report what is left of their rate limits on every answer (OpenAI's
//! `x-ratelimit-remaining-requests` / `-tokens` and `x-ratelimit-reset-*`, Anthropic's
//! `anthropic-ratelimit-*`); the driver parses them into a [`Quota`] and gives it to
//! [`Router::note_quota`]. Until the reported reset, the router counts its own sends against what
//! is left, and a provider whose requests are used up, or whose tokens cannot cover a request, is
//! skipped for that request as a local limit would skip it: the call goes to another provider
//! instead of collecting a 429 first. When nothing else is available the call may wait for the
//! reset as it waits for a short Retry-After. A newer report replaces the count; a report whose
//! reset has passed is forgotten.

use super::Router;
use crate::provider::ProviderId;
use crate::time::Instant;
use std::time::Duration;

/// What a provider reported of its rate limits on an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Requests left, and how long until the limit resets.
    pub requests: Option<(u64, Duration)>,
    /// Tokens left, and how long until the limit resets.
    pub tokens: Option<(u64, Duration)>,
}

/// A provider's reported limits, as the router counts them down.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct QuotaLeft {
    requests: Option<(u64, Instant)>,
    tokens: Option<(u64, Instant)>,
}

impl QuotaLeft {
    /// When a request of `tokens` must wait for a reset: the later reset among the limits it
    /// would exceed. Forgets limits whose reset has passed.
    pub(super) fn blocks(&mut self, tokens: u64, now: Instant) -> Option<Instant> {
        let mut until: Option<Instant> = None;
        if let Some((left, reset)) = self.requests {
            if now >= reset {
                self.requests = None;
            } else if left == 0 {
                until = Some(reset);
            }
        }
        if let Some((left, reset)) = self.tokens {
            if now >= reset {
                self.tokens = None;
            } else if left < tokens {
                until = Some(until.map_or(reset, |u| u.max(reset)));
            }
        }
        until
    }

    /// Counts a send of `tokens` against what is left.
    pub(super) fn spend(&mut self, tokens: u64) {
        if let Some((left, _)) = &mut self.requests {
            *left = left.saturating_sub(1);
        }
        if let Some((left, _)) = &mut self.tokens {
            *left = left.saturating_sub(tokens);
        }
    }
}

impl Router {
    /// Records what provider `p` reported of its rate limits at `now` (see the module doc).
    pub fn note_quota(&mut self, p: ProviderId, quota: Quota, now: Instant) {
        let Some(health) = self.health.get_mut(p.index()) else {
            return;
        };
        if let Some((left, reset_in)) = quota.requests {
            health.quota.requests = Some((left, now + reset_in));
        }
        if let Some((left, reset_in)) = quota.tokens {
            health.quota.tokens = Some((left, now + reset_in));
        }
    }
}
