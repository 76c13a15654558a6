//! One request's routing state, and what the router and its caller exchange about it: the
//! request as the caller knows it, how each attempt ended, the decision of what to do next, and
//! why a call that failed ended.

use crate::attempt::Attempt;
use crate::class::ErrorClass;
use crate::provider::{ProviderId, ProviderSet};
use crate::time::Instant;
use std::fmt;
use std::time::Duration;

#[cfg(doc)]
use super::Router;

/// What the caller knows about a request before sending it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// Estimated input (prompt) tokens.
    pub input_tokens: u32,
    /// Expected output tokens (the request's `max_tokens`, or an estimate); used for context fit,
    /// cost estimates and token rate limits.
    pub output_tokens: u32,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The client's own deadline, if shorter than the router's default.
    pub deadline: Option<Duration>,
}

/// Tokens an attempt consumed, as reported by the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// The provider answered.
    Success {
        /// Time from send to the last byte.
        latency: Duration,
        /// Time from send to the first token, for streams.
        first_token: Option<Duration>,
        /// Tokens billed.
        usage: Usage,
    },
    /// The attempt failed.
    Failure {
        /// What kind of failure.
        class: ErrorClass,
        /// Time from send to the failure.
        latency: Duration,
        /// The provider's Retry-After, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The caller abandoned the attempt (another one won, or the client left). Neutral for health,
    /// except for a plain attempt that lost to its fallback hedge, which the router records as a
    /// timeout of its provider ([`Router::record`] returns what it recorded).
    Cancelled,
}

/// Why the router stopped trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The call's deadline passed.
    Deadline,
    /// The last failure must not be retried (bad request, content filter, context length).
    NotRetryable(ErrorClass),
    /// `max_attempts` attempts were made.
    AttemptsExhausted,
    /// The retry budget is spent: the route is failing for many requests at once.
    BudgetExhausted,
    /// Every usable provider is rate limited (by itself or by the local limits).
    AllRateLimited,
    /// Every provider is unhealthy, cooling down or already failed for this call.
    NoHealthyProvider,
    /// The request does not fit the context window of any provider.
    ContextTooLong,
    /// The spend limit is reached and no free provider is usable.
    SpendLimit,
}

impl GiveUpReason {
    /// A short snake_case name for metrics and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::Deadline => "deadline",
            GiveUpReason::NotRetryable(_) => "not_retryable",
            GiveUpReason::AttemptsExhausted => "attempts_exhausted",
            GiveUpReason::BudgetExhausted => "budget_exhausted",
            GiveUpReason::AllRateLimited => "all_rate_limited",
            GiveUpReason::NoHealthyProvider => "no_healthy_provider",
            GiveUpReason::ContextTooLong => "context_too_long",
            GiveUpReason::SpendLimit => "spend_limit",
        }
    }
}

/// The end of a call that did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GiveUp {
    /// Why.
    pub reason: GiveUpReason,
    /// The class of the last failed attempt, if any.
    pub last_error: Option<ErrorClass>,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            GiveUpReason::NotRetryable(class) => {
                write!(f, "the provider answered {class}, which is not retried")?
            }
            reason => f.write_str(reason.as_str())?,
        }
        if let Some(class) = self.last_error {
            write!(f, " (last error: {class})")?;
        }
        Ok(())
    }
}

/// What the caller should do next for a call.
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use = "a decision is the only way the router asks for work"]
pub enum Decision {
    /// Send this attempt now.
    Send(Attempt),
    /// Nothing to send before `until` (backoff, or waiting out a short Retry-After); call
    /// [`Router::next_attempt`] again then.
    Wait {
        /// When to ask again.
        until: Instant,
    },
    /// An attempt is in flight; if no outcome arrives by `at`, call [`Router::next_attempt`] again:
    /// it returns a hedged [`Decision::Send`] to another provider if one is usable and the retry
    /// budget allows, else [`Decision::Pending`].
    Hedge {
        /// When to ask again.
        at: Instant,
    },
    /// Attempts are in flight and nothing else is planned: wait for their outcomes.
    Pending,
    /// A provider answered; the call is over. Cancel (and record) any attempt still in flight,
    /// except probes ([`Attempt::is_probe`]): let them end by themselves and record them.
    Done {
        /// The provider whose answer won, or `None` if a config reload removed it since.
        provider: Option<ProviderId>,
    },
    /// The call failed. Cancel (and record) any attempt still in flight, except probes, as for
    /// [`Decision::Done`].
    GiveUp(GiveUp),
}

/// A plain attempt whose healthy answer may outlast the point its fallback must start, or a
/// stream without its first token by then: at `at`, if it is still running (a stream: still
/// without its first token), the call hedges to a fallback instead of cutting it
/// (`plain_limit.rs`). Once the
/// hedge went out, the call goes on elsewhere as if idle while only this attempt is left (never to
/// its provider), and if another attempt wins, this one counts as a timeout of its provider: it
/// was slower than the fallback by all the time the fallback needed.
#[derive(Clone, Copy, Debug)]
pub(super) struct FallbackHedge {
    /// The attempt's number within the call.
    pub(super) attempt: u32,
    /// Its provider (kept current across reloads by `Router::sync`).
    pub(super) provider: ProviderId,
    /// When it was sent.
    pub(super) sent: Instant,
    /// When the fallback needs to start.
    pub(super) at: Instant,
    /// The hedge was sent.
    pub(super) hedged: bool,
    /// Until then, the hedge goes out only once the attempt's provider shows trouble
    /// (`plain_limit.rs`): its check moves on by [`FALLBACK_RECHECK`](super::plan) at a time.
    /// From then on the attempt has outlasted a healthy answer of its provider.
    pub(super) trouble_only_until: Option<Instant>,
}

/// One request's routing state: what was tried, what failed, what is in flight.
///
/// Made by [`Router::begin`]; owned by the caller; small and free of heap data.
#[derive(Clone, Debug)]
pub struct Call {
    pub(super) deadline: Instant,
    /// The time the call was given: its deadline less its start.
    pub(super) given: Duration,
    /// The deadline is the client's own (shorter than the route's): a timeout it causes says
    /// nothing about the provider.
    pub(super) client_deadline: bool,
    pub(super) input_tokens: u32,
    pub(super) output_tokens: u32,
    pub(super) stream: bool,
    pub(super) tried: ProviderSet,
    /// Providers this call sent more than one attempt to.
    pub(super) retried: ProviderSet,
    pub(super) silent: ProviderSet,
    pub(super) rate_limited: ProviderSet,
    /// Rate-limited providers this call already waited for once.
    pub(super) waited_out: ProviderSet,
    pub(super) excluded: ProviderSet,
    pub(super) min_context: u32,
    pub(super) attempts: u32,
    pub(super) in_flight: u32,
    pub(super) last_send: Instant,
    pub(super) hedged: bool,
    /// A half-open probe of this call is in flight (or was): hedge it once, at once.
    pub(super) probing: bool,
    pub(super) probe_hedged: bool,
    /// Providers this call's probes are still on: no other attempt of the call goes there.
    pub(super) probes_out: ProviderSet,
    pub(super) same_provider_retries: u32,
    pub(super) wait_until: Instant,
    pub(super) backoff_served: bool,
    pub(super) needs_continuation: bool,
    /// The attempt recorded next broke after its bytes reached the client (set with
    /// `require_continuation`, taken by `record`).
    pub(super) stream_broke: bool,
    /// The plain attempt in flight whose fallback is hedged rather than cut (`plain_limit.rs`).
    pub(super) fallback_hedge: Option<FallbackHedge>,
    pub(super) last_error: Option<ErrorClass>,
    pub(super) end: Option<Result<Option<ProviderId>, GiveUp>>,
    /// The router's config generation the provider ids in this call refer to.
    pub(super) generation: u32,
}

impl Call {
    /// Attempts started so far (hedges included).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Attempts started and not yet recorded.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The call's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the call's deadline is the client's own (shorter than the route's).
    pub fn deadline_is_clients(&self) -> bool {
        self.client_deadline
    }

    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// Providers tried so far.
    pub fn tried(&self) -> ProviderSet {
        self.tried
    }

    /// The class of the last failure, if any.
    pub fn last_error(&self) -> Option<ErrorClass> {
        self.last_error
    }

    /// Hands `attempts` probes of this call, still in flight, over to the caller, who lets them run
    /// to their end after the call ended or committed to another attempt's stream
    /// ([`Attempt::is_probe`]): the call stops counting them, and the copy returned is the one to
    /// record them on. The call goes on as if it had not tried their providers: a stream that
    /// lost its probe's race and is cut later may continue there (a probe rides on a call's first
    /// attempt, so the call had not tried them before).
    pub fn detach(&mut self, attempts: u32) -> Call {
        self.in_flight = self.in_flight.saturating_sub(attempts);
        let mut detached = self.clone();
        detached.in_flight = attempts;
        self.tried = self.tried.minus(self.probes_out);
        self.probes_out = ProviderSet::EMPTY;
        detached
    }

    /// From now on, only providers that can continue a partial answer exactly are eligible
    /// (`prefill_continuation`). The driver calls this when a stream whose bytes reached the
    /// client broke, just before it records that attempt: its failure then counts as a broken
    /// stream of its provider (`Router::record`), which spills stream traffic from a tier that
    /// breaks many (`docs/routing.md`, "Spill").
    pub fn require_continuation(&mut self) {
        self.needs_continuation = true;
        self.stream_broke = true;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests
mod tests {
    use crate::provider::ProviderId;
    use crate::time::Instant;
    use crate::{ProviderConfig, RequestMeta, Router, RouterConfig};

    /// A probe detached while its call goes on (another attempt's stream won the race to the
    /// first token) no longer counts as tried by the call, nor as a probe of it.
    #[test]
    fn detaching_a_probe_leaves_its_provider_untried() {
        let config = RouterConfig {
            providers: vec![ProviderConfig::named("a"), ProviderConfig::named("b")],
            ..RouterConfig::default()
        };
        let mut router = Router::new(config.validate().unwrap(), 1);
        let mut call = router.begin(RequestMeta::default(), Instant::ZERO);
        let (a, b) = (
            ProviderId::from_index(0).unwrap(),
            ProviderId::from_index(1).unwrap(),
        );
        call.tried.insert(a);
        call.tried.insert(b);
        call.probes_out.insert(a);
        call.in_flight = 2;
        let detached = call.detach(1);
        assert_eq!(detached.in_flight, 1);
        assert_eq!(call.in_flight, 1);
        assert!(!call.tried.contains(a), "the probe's provider is untried");
        assert!(call.tried.contains(b), "the winner's provider stays tried");
        assert!(call.probes_out.is_empty());
    }
}
