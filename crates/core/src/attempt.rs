//! One attempt the router asked for, and the timer its driver runs it under.

use crate::breaker::ProbeEpoch;
use crate::config::Timeouts;
use crate::provider::ProviderId;
use crate::time::Instant;
use crate::timer::AttemptTimer;

/// One attempt the router asked for. Pass it back to [`Router::record`](crate::Router::record)
/// exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "every attempt must be performed and recorded"]
pub struct Attempt {
    /// Where to send it.
    pub provider: ProviderId,
    /// 1 for the first attempt of the call, then 2, 3, ...
    pub number: u32,
    /// Whether this is a hedge sent while an earlier attempt is still in flight.
    pub is_hedge: bool,
    /// When the attempt must be abandoned (recorded as a timeout): the attempt timeout, clipped to
    /// the call's deadline.
    pub deadline: Instant,
    /// The provider's timeouts for each stage, for this request ([`Timeouts::for_request`]).
    /// Perform the attempt under [`Attempt::timer`], which enforces them.
    pub timeouts: Timeouts,
    pub(crate) provider_uid: u64,
    pub(crate) probe: Option<ProbeEpoch>,
    /// A pace probe: sent to a tier whose recent pace would miss the call's deadline on the
    /// route's long answers, to keep that pace measured (`Router::misses_deadline`).
    pub(crate) pace_probe: bool,
    /// The call asked for a stream.
    pub(crate) stream: bool,
    /// `deadline` is the call's deadline (it came before the attempt limit).
    pub(crate) by_call: bool,
}

impl Attempt {
    /// The timer of this attempt, sent at `now`: every stage limit of [`Attempt::timeouts`],
    /// bounded by [`Attempt::deadline`]. See [`AttemptTimer`].
    pub fn timer(&self, now: Instant) -> AttemptTimer {
        AttemptTimer::new(self, now)
    }

    /// Whether the call asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// Whether this attempt is a probe: a half-open breaker's, or a pace probe of a tier whose
    /// traffic is spilled because its pace would miss the deadline of the route's long answers.
    /// When its call ends first (another attempt answered, or the call gave up), do not cancel
    /// it: let it run to its own end, discard its answer, and record its outcome, so the breaker
    /// learns whether the provider is back and the router whether its pace is.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some() || self.pace_probe
    }
}
