//! A plain attempt's headers limit, fitted to the provider's measured speed and to the call's
//! deadline; and the fallback hedge of a plain attempt or a stream.
//!
//! A plain upstream sends its headers only with the whole answer, so the configured headers limit
//! of a plain attempt is `headers + plain_headers_per_output_token × expected output tokens`
//! ([`Timeouts::for_request`]): with the defaults, 10 s + 50 ms × 512 = 35.6 s, longer than a 30 s
//! client deadline. An attempt stuck in an overloaded provider's queue then never gives up in time
//! to fail over. Two rules shorten it, never lengthen it:
//!
//! 1. **Speed.** Once the provider's speed is known ([`Speed`]: enough recent answers, watched
//!    for at least as long as the healthy answer they suggest, since in its first seconds only
//!    short answers can have finished), the allowance per token is [`SPEED_MARGIN`] times its
//!    measured time per token: `headers + 2 × per_token × tokens`. A healthy answer twice as slow
//!    as usual still arrives; a stuck one is given up in proportion to how fast this provider
//!    really is.
//! 2. **Deadline.** When another provider could take the call if this attempt failed, the attempt
//!    leaves time for it: at the latest `reserve` before the call's deadline, where `reserve` is
//!    what the fastest such fallback needs for this answer ([`SPEED_MARGIN`] times its measured
//!    time for it, or half the time left when its speed is unknown), and never more than half the
//!    time left, the attempt ends, or, while its own provider is not known yet, the call hedges
//!    to the fallback and keeps the attempt (the first answer wins; `FallbackHedge`).
//!
//!    When that point comes before a healthy answer of a measured provider would be done (twice
//!    its longest recent answer), the attempt keeps its time instead, its fallback hedged at that
//!    point only if its provider shows trouble by then (`FallbackHedge::trouble_only_until`: its
//!    breaker open or over a tenth of its recent calls failed, or its answers much slower than
//!    usual, `slowdown.rs`; else looked at again every second), and at the latest once the
//!    attempt has outlasted that healthy answer: a cut any later would leave the fallback less
//!    than it needs, losing the answer in progress for one that most likely misses the deadline
//!    too (`openai-2026-06-03-spurious-429`: 24 s answers of a slowed provider were cut at 22 s,
//!    leaving 8 s to a fallback that needed 13). So a provider that gives long answers is not
//!    cut for a fallback that would be no faster, and one that slows down all at once (a brownout's onset, before any of its calls failed) still has
//!    its fallback started while there is time.
//!
//!    An unmeasured provider's fallback is hedged no earlier than twice `latency.default_ms`
//!    (most answers of a route of short answers, which never measure a speed, are done by then),
//!    and at that point when it is later than the point the fallback needs: the fallback gets
//!    less time than it may need, but a cold provider that hangs still leaves its fallback what
//!    time there is, and the hedge costs nothing when the attempt answers first. A client's
//!    deadline shorter than that floor stays the client's. An attempt with nothing to fail over
//!    to keeps the whole time.
//!
//! A stream keeps its configured limits: its headers and first token come early, whatever the
//! length of its answer. What it shares with a plain attempt is the fallback's need for time: a
//! stream whose first token has not come by the point its fallback must start (the same `reserve`
//! before the deadline, never before the cold floor of twice `latency.default_ms`) hedges to the
//! fallback there, and the first first token wins. That point falls before the first-token limit
//! only under a short deadline (with the route's 30 s and the default 10 s limit, the fallback's
//! half of the time starts at 15 s): a stream that hangs under a client's 4 s deadline used to
//! hold the call to it. Both drivers commit a call to the attempt whose first token comes first
//! and cancel the others then, before the stream's end, so the loser counts as a timeout of its
//! provider as a plain hedge's loser does.

use super::Router;
use crate::config::Timeouts;
use crate::provider::{ProviderId, ProviderSet};
use crate::router::Call;
use crate::time::Instant;
use std::time::Duration;

#[cfg(doc)]
use crate::speed::Speed;

/// How many times its measured time per token a provider is allowed before a plain attempt is
/// given up.
pub const SPEED_MARGIN: u32 = 2;

/// A plain attempt's limits: its timeouts, and when its call should hedge to a fallback.
pub(super) struct PlainLimits {
    pub(super) timeouts: Timeouts,
    /// After this long, the call sends a hedge to its fallback (once per call): the provider's
    /// healthy answer is not known yet, so the attempt is kept and the fallback started instead
    /// of a cut.
    pub(super) hedge_after: Option<Duration>,
    /// Until this long after the send, the hedge goes out only if the provider shows trouble
    /// (its breaker open, more than a tenth of its recent calls failed, or its answers much
    /// slower than usual): a measured provider whose healthy answers may run longer than the
    /// hedge's point (see the module docs). From then on the attempt has outlasted a healthy
    /// answer there, and the hedge goes out anyway.
    pub(super) hedge_on_trouble_until: Option<Duration>,
}

impl Router {
    /// The limits of an attempt of `call` on `p` sent at `now`; `usable` are the providers
    /// available to the call at this decision (the candidate fallbacks).
    pub(super) fn attempt_limits(
        &self,
        call: &Call,
        p: ProviderId,
        usable: ProviderSet,
        now: Instant,
    ) -> PlainLimits {
        let configured = self.config.providers[p.index()]
            .timeouts
            .for_request(call.stream, call.output_tokens);
        let mut limits = PlainLimits {
            timeouts: configured,
            hedge_after: None,
            hedge_on_trouble_until: None,
        };
        let left = call.deadline.saturating_since(now);
        let mut fallbacks = usable.minus(call.tried);
        fallbacks.remove(p);
        let cold_floor = self.cold_floor();
        if call.stream {
            // A stream's first token, not its whole answer, says it is alive: hedge the fallback
            // once it is due, no earlier than the cold floor, if the first token has not come by
            // then (the first first token wins).
            if !fallbacks.is_empty() {
                let leave_at = left.saturating_sub(self.fallback_reserve(fallbacks, left, now));
                let at = leave_at.max(cold_floor);
                if at < limits.timeouts.first_token {
                    limits.hedge_after = Some(at);
                }
            }
            return limits;
        }
        let t = &mut limits.timeouts;
        let base = self.config.providers[p.index()].timeouts.headers;
        let healthy = self.healthy_answer(p, now);
        if let Some(healthy) = healthy {
            t.headers = t.headers.min(base.saturating_add(healthy));
        }
        if fallbacks.is_empty() {
            return limits;
        }
        // Never before a healthy answer here would be done; unmeasured (at start-up, after an
        // idle gap, on a route of short answers), twice the default latency.
        let floor = healthy.unwrap_or(cold_floor);
        let leave_at = left.saturating_sub(self.fallback_reserve(fallbacks, left, now));
        match healthy {
            None => {
                // Nothing says yet whether an attempt this long is stuck or a long answer: keep
                // the attempt and start the fallback on time, or at the floor when that is later
                // (a cold provider that hangs must still leave its fallback what time there is;
                // `plan_hedge` drops a hedge due at or after the deadline).
                let at = leave_at.max(floor);
                if at < t.headers {
                    limits.hedge_after = Some(at);
                }
            }
            // A cut later than `leave_at` would leave the fallback less than it needs: it would
            // lose the answer in progress for a fallback that most likely misses the deadline too.
            Some(_) if leave_at >= floor => t.headers = t.headers.min(leave_at),
            Some(_) if leave_at < t.headers => {
                // A healthy answer here may take longer: keep the attempt, and start the fallback
                // then only if the provider shows trouble by that time (a hang shows in its other
                // calls' timeouts); a healthy provider's long answer costs no hedge.
                limits.hedge_after = Some(leave_at);
                limits.hedge_on_trouble_until = Some(floor);
            }
            Some(_) => {}
        }
        limits
    }

    /// The least time an attempt on an unmeasured provider is given before its fallback is
    /// hedged: twice `latency.default_ms`.
    pub(super) fn cold_floor(&self) -> Duration {
        self.config.latency_default.saturating_mul(SPEED_MARGIN)
    }

    /// What the fastest of `fallbacks` needs for this call's answer, of the `left` time: its
    /// healthy answer when measured, else half the time left, and never more than that half.
    fn fallback_reserve(&self, fallbacks: ProviderSet, left: Duration, now: Instant) -> Duration {
        let half = left / 2;
        fallbacks
            .iter()
            .map(|f| self.healthy_answer(f, now).unwrap_or(half))
            .min()
            .unwrap_or(half)
            .min(half)
    }

    /// [`SPEED_MARGIN`] times the time of `p`'s longest recent answer at its measured speed:
    /// what a healthy plain answer there may take, when known, and only once `p` was watched for
    /// at least that long (an answer that long, sent when watching began, would have been seen).
    fn healthy_answer(&self, p: ProviderId, now: Instant) -> Option<Duration> {
        let speed = &self.health[p.index()].speed;
        let healthy = speed.longest_answer(now)?.saturating_mul(SPEED_MARGIN);
        (speed.watched_for(now) >= healthy).then_some(healthy)
    }
}
