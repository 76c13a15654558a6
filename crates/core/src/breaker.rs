//! A per-provider circuit breaker that runs on the caller's clock.
//!
//! States: **closed** (traffic flows; outcomes are counted), **open** (no traffic until a deadline),
//! **half-open** (a bounded number of probe calls; that many successes close it, any failure opens
//! it again). It trips when either rule fires:
//! - `consecutive_failures` outage failures in a row (fast reaction to a hard outage; more when
//!   the provider's recent failure rate makes such a streak likely by chance: a partial
//!   degradation is not an outage), or
//! - over a sliding time window with at least `minimum_calls` calls, the failure rate or the
//!   slow-call rate reaches its threshold (catches partial outages and brownouts).
//!
//! After a recovery (half-open to closed), neither rule trips for three of the provider's average
//! answer times: the first outcomes then are the fast failures of the calls sent since, whose
//! answers are still running, and would re-trip a partially failing provider every time.
//!
//! Open time grows on repeated trips (`open_base × multiplier^(trips-1)`, capped at `open_max`, then
//! shortened by up to `open_jitter` so probes from many gateways spread out). The trip count decays:
//! a provider that stayed closed for a whole `open_max` starts again from `open_base`, so a recovered
//! provider gets traffic back within one cap. Transitions are lazy: open becomes half-open when a
//! call passes a `now` past the deadline; no timer exists. An open deadline never moves earlier.
//!
//! Only outage classes (server errors and timeouts) count as failures. Rate limits, client errors
//! and cancellations are neutral: they release a probe slot and nothing else.

use crate::config::BreakerSettings;
use crate::rng::RouterRng;
use crate::time::Instant;
use crate::window::SlidingWindow;
use std::time::Duration;

const CALLS: usize = 0;
const FAILURES: usize = 1;
const SLOW: usize = 2;

/// A provider whose recent calls failed at most this often is healthy: a failover to it is free
/// of the retry budget (see `Router::send`).
const HEALTHY_FAILURE_RATIO: f64 = 0.1;

/// Calls in the breaker's window below which `Breaker::fails_most` does not judge a provider that
/// did not recover lately by its failure share.
const JUDGED_CALLS: u64 = 3;

/// A streak of failures whose chance at the provider's background failure rate is below this
/// trips the breaker (see `Breaker::streak_to_trip`).
const STREAK_CHANCE: f64 = 1e-6;

/// The weight of each answer in the breaker's average answer time (about the last 20 count).
const ANSWER_TIME_WEIGHT: f64 = 0.05;

/// How many of the provider's average answer times a recovered breaker settles for.
const SETTLE_ANSWER_TIMES: u32 = 3;

/// The longest streak needed, as a multiple of `consecutive_failures`.
const STREAK_MAX_FACTOR: u32 = 4;

/// The externally visible state of a breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// No traffic until `until`.
    Open {
        /// When the breaker becomes half-open.
        until: Instant,
    },
    /// Probing: `in_flight` probes out, `successes` of the needed ones seen.
    HalfOpen {
        /// Probes in flight.
        in_flight: u32,
        /// Successful probes so far.
        successes: u32,
    },
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// Which half-open period a probe belongs to: a probe's outcome only counts in its own period.
pub(crate) type ProbeEpoch = u32;

/// One provider's breaker.
#[derive(Clone, Debug)]
pub(crate) struct Breaker {
    state: BreakerState,
    /// Bumped on every open → half-open transition.
    epoch: ProbeEpoch,
    consecutive_failures: u32,
    window: SlidingWindow<3>,
    trips: u32,
    total_trips: u64,
    closed_at: Instant,
    /// When it last opened (by its own trip or a sibling replica's), for shared state.
    opened_at: Option<Instant>,
    /// When it last closed after being open.
    recovered_at: Option<Instant>,
    /// While not closed: the share of its calls the provider answered, as last known (the
    /// window's at a trip by the rate rules, none at a trip by a streak of failures, then moved a
    /// tenth of the way by each later outcome: probes, panic attempts, calls sent before the
    /// trip). `None` when nothing was known at the trip.
    answered_share: Option<f64>,
    /// How long its answers take from send to end (an average over about the last 20), once
    /// one was seen: the grace after a recovery (`Breaker::settling`).
    answer_time: Option<Duration>,
}

impl Breaker {
    pub(crate) fn new(settings: &BreakerSettings) -> Self {
        Breaker {
            state: BreakerState::Closed,
            epoch: 0,
            consecutive_failures: 0,
            window: SlidingWindow::new(
                u64::try_from(settings.window.as_nanos()).unwrap_or(u64::MAX),
                settings.window_buckets,
            ),
            trips: 0,
            total_trips: 0,
            closed_at: Instant::ZERO,
            opened_at: None,
            recovered_at: None,
            answered_share: None,
            answer_time: None,
        }
    }

    /// The state at `now`, applying a due open → half-open transition.
    pub(crate) fn state(&mut self, now: Instant) -> BreakerState {
        if let BreakerState::Open { until } = self.state {
            if now >= until {
                self.state = BreakerState::HalfOpen {
                    in_flight: 0,
                    successes: 0,
                };
                self.epoch = self.epoch.wrapping_add(1);
            }
        }
        self.state
    }

    /// The same breaker under new settings: state, trip count and history are kept; the sliding
    /// window restarts only if its length or resolution changed.
    pub(crate) fn reconfigured(&self, old: &BreakerSettings, new: &BreakerSettings) -> Breaker {
        let mut breaker = self.clone();
        if old.window != new.window || old.window_buckets != new.window_buckets {
            breaker.window = Breaker::new(new).window;
            breaker.consecutive_failures = 0;
        }
        breaker
    }

    /// While not closed, the share of its calls the provider answered as last known (see
    /// `answered_share`); `None` with nothing to judge. Panic routing asks it of breakers that
    /// keep their provider out.
    pub(crate) fn answered_share(&self) -> Option<f64> {
        self.answered_share
    }

    /// Whether the provider is healthy enough to take a failover without the retry budget: closed,
    /// and at most `HEALTHY_FAILURE_RATIO` of the calls in the breaker's window failed.
    pub(crate) fn has_headroom(&mut self, now: Instant) -> bool {
        self.closed_with_failures_at_most(now, HEALTHY_FAILURE_RATIO)
    }

    /// Whether the provider still answers most of its calls: closed, and at most half the calls in
    /// the breaker's window failed. A retry there is then more likely than not to succeed.
    pub(crate) fn mostly_answers(&mut self, now: Instant) -> bool {
        self.closed_with_failures_at_most(now, 0.5)
    }

    /// Whether the provider is known to fail most of its calls: its breaker is not closed, or more
    /// than half the calls in its window failed. Not the opposite of `mostly_answers`: with fewer
    /// than `JUDGED_CALLS` calls in a window that saw no recovery (a lower tier that gets traffic
    /// only on failovers), one failure says little either way. A breaker that closed within the
    /// window has a short window because it was open: its failures count.
    pub(crate) fn fails_most(&mut self, now: Instant) -> bool {
        if self.state(now) != BreakerState::Closed {
            return true;
        }
        let totals = self.window.totals(now);
        let recovered_lately = self.recovered_at.is_some_and(|at| {
            now.as_nanos().saturating_sub(at.as_nanos()) < self.window.span_nanos()
        });
        if totals[CALLS] < JUDGED_CALLS && !recovered_lately {
            return false;
        }
        totals[FAILURES] as f64 > 0.5 * totals[CALLS] as f64
    }

    /// Calls that succeeded in the breaker's window.
    pub(crate) fn recent_successes(&mut self, now: Instant) -> u64 {
        let totals = self.window.totals(now);
        totals[CALLS].saturating_sub(totals[FAILURES])
    }

    fn closed_with_failures_at_most(&mut self, now: Instant, share: f64) -> bool {
        if self.state(now) != BreakerState::Closed {
            return false;
        }
        let totals = self.window.totals(now);
        totals[FAILURES] as f64 <= share * totals[CALLS] as f64
    }

    /// How many times this breaker has opened since it was created.
    pub(crate) fn total_trips(&self) -> u64 {
        self.total_trips
    }

    /// Whether a call may be sent at `now`: `None` if not, `Some(None)` for a normal call,
    /// `Some(Some(epoch))` for a half-open probe of period `epoch`.
    pub(crate) fn admits(
        &mut self,
        now: Instant,
        settings: &BreakerSettings,
    ) -> Option<Option<ProbeEpoch>> {
        match self.state(now) {
            BreakerState::Closed => Some(None),
            BreakerState::Open { .. } => None,
            BreakerState::HalfOpen { in_flight, .. } => {
                (in_flight < settings.half_open_probes.max(1)).then_some(Some(self.epoch))
            }
        }
    }

    /// A call was sent; `probe` is what [`Breaker::admits`] said.
    pub(crate) fn on_send(&mut self, probe: Option<ProbeEpoch>) {
        if self.is_current_probe(probe) {
            if let BreakerState::HalfOpen { in_flight, .. } = &mut self.state {
                *in_flight += 1;
            }
        }
    }

    fn is_current_probe(&self, probe: Option<ProbeEpoch>) -> bool {
        matches!(self.state, BreakerState::HalfOpen { .. }) && probe == Some(self.epoch)
    }

    /// Releases the probe slot of a probe of the current half-open period.
    fn release_probe(&mut self, probe: Option<ProbeEpoch>) -> bool {
        if self.is_current_probe(probe) {
            if let BreakerState::HalfOpen { in_flight, .. } = &mut self.state {
                *in_flight = in_flight.saturating_sub(1);
                return true;
            }
        }
        false
    }

    /// A call ended in a way that says nothing about the provider's health.
    pub(crate) fn on_neutral(&mut self, probe: Option<ProbeEpoch>) {
        self.release_probe(probe);
    }

    /// A call succeeded after `latency`.
    pub(crate) fn on_success(
        &mut self,
        now: Instant,
        latency: Duration,
        probe: Option<ProbeEpoch>,
        settings: &BreakerSettings,
        rng: &mut RouterRng,
    ) {
        self.note_while_open(true);
        if self.release_probe(probe) {
            if let BreakerState::HalfOpen { successes, .. } = &mut self.state {
                *successes += 1;
                if *successes >= settings.half_open_probes.max(1) {
                    self.close(now);
                }
            }
            return;
        }
        if self.state == BreakerState::Closed {
            self.consecutive_failures = 0;
            let slow = u64::from(latency >= settings.slow_call);
            let totals = self.window.add(now, [1, 0, slow]);
            self.check_rates(totals, now, settings, rng);
        }
    }

    /// A call failed with an outage class after `latency`.
    pub(crate) fn on_failure(
        &mut self,
        now: Instant,
        latency: Duration,
        probe: Option<ProbeEpoch>,
        settings: &BreakerSettings,
        rng: &mut RouterRng,
    ) {
        self.note_while_open(false);
        if self.release_probe(probe) {
            self.trip(now, settings, rng);
            return;
        }
        // Failures of calls sent before the breaker opened, or of probes of an earlier half-open
        // period, say nothing new.
        if self.state != BreakerState::Closed {
            return;
        }
        self.consecutive_failures += 1;
        let slow = u64::from(latency >= settings.slow_call);
        let totals = self.window.add(now, [1, 1, slow]);
        if self.settling(now) {
            return;
        }
        if settings.consecutive_failures > 0
            && self.consecutive_failures >= self.streak_to_trip(totals, settings)
        {
            self.trip(now, settings, rng);
            // A streak this unlikely by chance is an outage: whatever the window's older calls
            // say, the provider answers nothing now.
            self.answered_share = Some(0.0);
        } else {
            self.check_rates(totals, now, settings, rng);
        }
    }

    /// Records that an answer took `answered_in` from its send to its end (a stream's whole
    /// time, not its first token).
    pub(crate) fn observe_answer_time(&mut self, answered_in: Duration) {
        self.answer_time = Some(match self.answer_time {
            None => answered_in,
            Some(average) => {
                average.mul_f64(1.0 - ANSWER_TIME_WEIGHT) + answered_in.mul_f64(ANSWER_TIME_WEIGHT)
            }
        });
    }

    /// Whether the breaker closed after its probes answered less than the provider's usual
    /// answer time ago: it counts outcomes then, but neither rule trips it yet. A failure comes
    /// back long before an answer does (a 503 in 100 ms, an answer in seconds), so the first
    /// outcomes after a recovery are the fast failures of the calls sent since, while their
    /// answers are still running: a provider that fails a third of its calls showed its first
    /// five as failures in a row, and twenty outcomes of which seventeen failed, and re-tripped
    /// at every recovery. Once the usual answer time has passed, answers and failures come back
    /// in the proportion they are sent. A provider still down fails its calls over at once
    /// meanwhile, and trips when the grace ends.
    fn settling(&self, now: Instant) -> bool {
        self.recovered_at == Some(self.closed_at)
            && self.answer_time.is_some_and(|t| {
                now.saturating_since(self.closed_at) < t.saturating_mul(SETTLE_ANSWER_TIMES)
            })
    }

    /// Failures in a row that trip the breaker: `consecutive_failures`, or more when the
    /// provider's background failure rate (its window without the current streak) makes a streak
    /// that long likely by chance. A provider failing a quarter of its calls fails five in a row
    /// about once in a thousand calls; that is a partial degradation (the rate rule's business,
    /// and a failover per failure serves it), not an outage. The streak needed is the shortest
    /// whose chance at that rate is below [`STREAK_CHANCE`], at most [`STREAK_MAX_FACTOR`] times
    /// `consecutive_failures`. With too few calls to judge a rate it stays
    /// `consecutive_failures`, so a hard outage on a healthy provider trips as fast as before.
    fn streak_to_trip(&self, totals: [u64; 3], settings: &BreakerSettings) -> u32 {
        let base = settings.consecutive_failures;
        let streak = u64::from(self.consecutive_failures);
        let calls = totals[CALLS].saturating_sub(streak);
        if calls < u64::from(settings.minimum_calls.max(1)) {
            return base;
        }
        let rate = totals[FAILURES].saturating_sub(streak) as f64 / calls as f64;
        if rate <= 0.0 {
            return base;
        }
        let cap = base.saturating_mul(STREAK_MAX_FACTOR);
        if rate >= 1.0 {
            return cap;
        }
        let by_chance = (STREAK_CHANCE.ln() / rate.ln()).ceil();
        if by_chance >= f64::from(cap) {
            cap
        } else {
            base.max(by_chance as u32)
        }
    }

    fn check_rates(
        &mut self,
        totals: [u64; 3],
        now: Instant,
        settings: &BreakerSettings,
        rng: &mut RouterRng,
    ) {
        if self.settling(now) {
            return;
        }
        let calls = totals[CALLS];
        if calls < u64::from(settings.minimum_calls) {
            return;
        }
        let calls = calls as f64;
        if totals[FAILURES] as f64 / calls >= settings.failure_rate
            || totals[SLOW] as f64 / calls >= settings.slow_call_rate
        {
            self.trip(now, settings, rng);
        }
    }

    fn trip(&mut self, now: Instant, settings: &BreakerSettings, rng: &mut RouterRng) {
        if self.state == BreakerState::Closed
            && now.saturating_since(self.closed_at) >= settings.open_max
        {
            // Stayed healthy for a whole cap: forget earlier trips.
            self.trips = 0;
        }
        self.trips = self.trips.saturating_add(1);
        self.total_trips += 1;
        let exponent = i32::try_from(self.trips - 1).unwrap_or(i32::MAX);
        let base = settings.open_base.as_secs_f64();
        let open = (base * settings.open_multiplier.powi(exponent))
            .min(settings.open_max.as_secs_f64())
            * (1.0 - settings.open_jitter * rng.unit());
        let until = now + Duration::from_secs_f64(open.max(0.0));
        let until = match self.state {
            BreakerState::Open { until: current } => until.max(current),
            _ => until,
        };
        let totals = self.window.totals(now);
        if totals[CALLS] > 0 {
            self.answered_share = Some(1.0 - totals[FAILURES] as f64 / totals[CALLS] as f64);
        }
        self.state = BreakerState::Open { until };
        self.opened_at = Some(now);
        self.consecutive_failures = 0;
        self.window.clear();
    }

    /// Moves the answered share while not closed (see `answered_share`).
    fn note_while_open(&mut self, answered: bool) {
        if self.state == BreakerState::Closed {
            return;
        }
        if let Some(share) = &mut self.answered_share {
            *share = *share * 0.9 + if answered { 0.1 } else { 0.0 };
        }
    }

    fn close(&mut self, now: Instant) {
        if self.state != BreakerState::Closed {
            self.recovered_at = Some(now);
        }
        self.state = BreakerState::Closed;
        self.consecutive_failures = 0;
        self.window.clear();
        self.closed_at = now;
    }

    /// The last opening, `(when, until)`, while it is still open at `now`; and the last recovery.
    /// What a replica tells its siblings.
    pub(crate) fn transitions(
        &mut self,
        now: Instant,
    ) -> (Option<(Instant, Instant)>, Option<Instant>) {
        let open = match (self.state(now), self.opened_at) {
            (BreakerState::Open { until }, Some(at)) => Some((at, until)),
            _ => None,
        };
        (open, self.recovered_at)
    }

    /// A sibling replica's breaker for the same provider opened at `at` until `until`. Newer than
    /// anything this breaker saw (its own last opening or recovery) and still running at `now`, it
    /// opens this one too, never for less than it already is; an older one changes nothing.
    pub(crate) fn sibling_opened(&mut self, at: Instant, until: Instant, now: Instant) {
        let newer =
            self.opened_at.is_none_or(|o| at > o) && self.recovered_at.is_none_or(|r| at > r);
        if !newer || until <= now {
            return;
        }
        let until = match self.state(now) {
            BreakerState::Open { until: current } => current.max(until),
            _ => until,
        };
        self.state = BreakerState::Open { until };
        self.opened_at = Some(at);
        self.consecutive_failures = 0;
        self.window.clear();
    }

    /// A sibling replica's breaker for the same provider closed at `at` after its probes passed.
    /// Newer than this breaker's last opening, it closes this one: the provider is back.
    pub(crate) fn sibling_recovered(&mut self, at: Instant, now: Instant) {
        if self.recovered_at.is_some_and(|r| at <= r) || self.opened_at.is_some_and(|o| at <= o) {
            return;
        }
        if self.state(now) == BreakerState::Closed {
            self.recovered_at = Some(at);
            return;
        }
        self.close(now);
        self.recovered_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProviderConfig, RouterConfig};

    fn settings(edit: impl FnOnce(&mut RouterConfig)) -> BreakerSettings {
        let mut c = RouterConfig {
            providers: vec![ProviderConfig::named("a")],
            ..RouterConfig::default()
        };
        c.breaker.open_jitter = Some(0.0);
        edit(&mut c);
        c.validate().unwrap().breaker
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    const FAST: Duration = Duration::from_millis(100);

    #[test]
    fn trips_on_consecutive_failures_and_half_opens_lazily() {
        let s = settings(|_| {});
        let mut rng = RouterRng::seed_from_u64(0);
        let mut b = Breaker::new(&s);
        for i in 0..4 {
            b.on_failure(at(i), FAST, None, &s, &mut rng);
            assert_eq!(b.state(at(i)), BreakerState::Closed);
        }
        b.on_failure(at(4), FAST, None, &s, &mut rng);
        assert_eq!(b.state(at(4)), BreakerState::Open { until: at(5_004) });
        assert_eq!(b.admits(at(5_003), &s), None);
        assert_eq!(b.admits(at(5_004), &s), Some(Some(1)));
    }

    #[test]
    fn failing_most_needs_a_few_calls_to_judge_unless_the_breaker_recovered_lately() {
        let s = settings(|_| {});
        let mut rng = RouterRng::seed_from_u64(0);
        let mut b = Breaker::new(&s);
        b.on_failure(at(0), FAST, None, &s, &mut rng);
        assert!(!b.fails_most(at(0)), "one failure of one call says little");
        assert!(
            !b.mostly_answers(at(0)),
            "nor does it vouch for the provider"
        );
        b.on_failure(at(1), FAST, None, &s, &mut rng);
        assert!(!b.fails_most(at(1)));
        b.on_success(at(2), FAST, None, &s, &mut rng);
        assert!(b.fails_most(at(2)), "two failures of three calls");
        b.on_success(at(3), FAST, None, &s, &mut rng);
        assert!(!b.fails_most(at(3)));
        assert!(b.mostly_answers(at(3)), "half failed");
        // Open, then closed by its probe: the window restarts, and one failure after the
        // recovery counts.
        for i in 4..9 {
            b.on_failure(at(i), FAST, None, &s, &mut rng);
        }
        assert!(b.fails_most(at(9)), "open");
        let probe_at = at(60_000);
        for _ in 0..s.half_open_probes {
            let probe = b.admits(probe_at, &s).flatten();
            assert!(probe.is_some(), "half-open");
            b.on_send(probe);
            b.on_success(probe_at, FAST, probe, &s, &mut rng);
        }
        assert_eq!(b.state(probe_at), BreakerState::Closed);
        b.on_failure(probe_at, FAST, None, &s, &mut rng);
        assert!(
            b.fails_most(probe_at),
            "recovered lately: its one failure counts"
        );
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let s = settings(|_| {});
        let mut rng = RouterRng::seed_from_u64(0);
        let mut b = Breaker::new(&s);
        for i in 0..20 {
            if i % 4 == 3 {
                b.on_success(at(i), FAST, None, &s, &mut rng);
            } else {
                b.on_failure(at(i), FAST, None, &s, &mut rng);
            }
        }
        // 15 of 20 failed: the rate rule (50%, 20 calls) fires on the 20th call, not the consecutive one.
        assert!(matches!(b.state(at(19)), BreakerState::Open { .. }));
    }

    #[test]
    fn a_partial_degradation_needs_a_longer_streak_than_an_outage() {
        let s = settings(|_| {});
        let mut rng = RouterRng::seed_from_u64(0);
        // 100 calls failing one in four (below the 50% rate rule), within the window.
        let mut b = Breaker::new(&s);
        for i in 0..100 {
            if i % 4 == 0 {
                b.on_failure(at(i), FAST, None, &s, &mut rng);
            } else {
                b.on_success(at(i), FAST, None, &s, &mut rng);
            }
        }
        // At 25%, five in a row happen once in ~1 000 calls: not an outage. Ten in a row (a
        // chance below one in a million) is.
        for i in 100..109 {
            b.on_failure(at(i), FAST, None, &s, &mut rng);
            assert_eq!(b.state(at(i)), BreakerState::Closed, "failure {}", i - 99);
        }
        b.on_failure(at(109), FAST, None, &s, &mut rng);
        assert!(matches!(b.state(at(109)), BreakerState::Open { .. }));

        // A healthy provider (1 failure in 100) still trips on the fifth failure in a row.
        let mut b = Breaker::new(&s);
        for i in 0..100 {
            if i == 50 {
                b.on_failure(at(i), FAST, None, &s, &mut rng);
            } else {
                b.on_success(at(i), FAST, None, &s, &mut rng);
            }
        }
        for i in 100..104 {
            b.on_failure(at(i), FAST, None, &s, &mut rng);
        }
        assert_eq!(b.state(at(103)), BreakerState::Closed);
        b.on_failure(at(104), FAST, None, &s, &mut rng);
        assert!(matches!(b.state(at(104)), BreakerState::Open { .. }));
    }

    #[test]
    fn failure_rate_needs_the_minimum_calls() {
        let s = settings(|c| c.breaker.consecutive_failures = Some(0));
        let mut rng = RouterRng::seed_from_u64(0);
        let mut b = Breaker::new(&s);
        for i in 0..19 {
            b.on_failure(at(i), FAST, None, &s, &mut rng);
        }
        assert_eq!(b.state(at(19)), BreakerState::Closed);
        b.on_failure(at(19), FAST, None, &s, &mut rng);
        assert!(matches!(b.state(at(19)), BreakerState::Open { .. }));
    }

    #[test]
    fn slow_calls_trip_the_breaker() {
        let s = settings(|c| {
            c.breaker.slow_call_ms = Some(1_000);
            c.breaker.slow_call_rate = Some(0.5);
            c.breaker.minimum_calls = Some(4);
        });
        let mut rng = RouterRng::seed_from_u64(0);
        let mut b = Breaker::new(&s);
        for i in 0..4 {
            b.on_success(at(i), Duration::from_secs(2), None, &s, &mut rng);
        }
        assert!(matches!(b.state(at(4)), BreakerState::Open { .. }));
    }

    #[test]
    fn probes_close_or_reopen_with_a_longer_open_time() {
        let s = settings(|c| c.breaker.consecutive_failures = Some(1));
        let mut rng = RouterRng::seed_from_u64(0);
        let mut b = Breaker::new(&s);
        b.on_failure(at(0), FAST, None, &s, &mut rng);
        assert_eq!(b.state(at(0)), BreakerState::Open { until: at(5_000) });
        // Half-open: two probes admitted, a third is not.
        let p1 = b.admits(at(5_000), &s).unwrap();
        assert_eq!(p1, Some(1));
        b.on_send(p1);
        let p2 = b.admits(at(5_000), &s).unwrap();
        b.on_send(p2);
        assert_eq!(b.admits(at(5_000), &s), None);
        // One probe fails: open again for twice as long.
        b.on_failure(at(5_100), FAST, p1, &s, &mut rng);
        assert_eq!(b.state(at(5_100)), BreakerState::Open { until: at(15_100) });
        // The other probe's success arrives late: the breaker stays open.
        b.on_success(at(5_200), FAST, p2, &s, &mut rng);
        assert_eq!(b.state(at(5_200)), BreakerState::Open { until: at(15_100) });
        // Two good probes close it.
        let p3 = b.admits(at(15_100), &s).unwrap();
        b.on_send(p3);
        let p4 = b.admits(at(15_200), &s).unwrap();
        b.on_send(p4);
        assert_eq!(p3, Some(2));
        b.on_success(at(15_300), FAST, p3, &s, &mut rng);
        b.on_success(at(15_400), FAST, p4, &s, &mut rng);
        assert_eq!(b.state(at(15_400)), BreakerState::Closed);
        // Re-tripping soon after would double again (20 s); open time is capped at 10 s.
        b.on_failure(at(16_000), FAST, None, &s, &mut rng);
        assert_eq!(
            b.state(at(16_000)),
            BreakerState::Open { until: at(26_000) }
        );
    }

    #[test]
    fn a_probe_from_an_earlier_half_open_period_counts_for_nothing() {
        let s = settings(|c| c.breaker.consecutive_failures = Some(1));
        let mut rng = RouterRng::seed_from_u64(0);
        let mut b = Breaker::new(&s);
        b.on_failure(at(0), FAST, None, &s, &mut rng);
        let p1 = b.admits(at(5_000), &s).unwrap();
        b.on_send(p1);
        let p2 = b.admits(at(5_000), &s).unwrap();
        b.on_send(p2);
        b.on_failure(at(5_100), FAST, p1, &s, &mut rng); // open until 15.1 s
        let p3 = b.admits(at(15_100), &s).unwrap();
        b.on_send(p3);
        let p4 = b.admits(at(15_100), &s).unwrap();
        b.on_send(p4);
        // The stale probe p2 answers: it frees no slot and counts no success.
        b.on_success(at(16_000), FAST, p2, &s, &mut rng);
        assert_eq!(
            b.state(at(16_000)),
            BreakerState::HalfOpen {
                in_flight: 2,
                successes: 0
            }
        );
        assert_eq!(b.admits(at(16_000), &s), None);
        // Nor does a stale failure re-trip it.
        b.on_failure(at(16_100), FAST, p1, &s, &mut rng);
        assert!(matches!(b.state(at(16_100)), BreakerState::HalfOpen { .. }));
    }

    #[test]
    fn reconfiguring_keeps_an_open_breaker_open() {
        let s = settings(|c| c.breaker.consecutive_failures = Some(1));
        let mut rng = RouterRng::seed_from_u64(0);
        let mut b = Breaker::new(&s);
        b.on_failure(at(0), FAST, None, &s, &mut rng);
        let new = settings(|c| {
            c.breaker.consecutive_failures = Some(1);
            c.breaker.window_ms = Some(60_000);
            c.breaker.slow_call_ms = Some(1_000);
        });
        let mut b = b.reconfigured(&s, &new);
        assert_eq!(b.state(at(1)), BreakerState::Open { until: at(5_000) });
    }

    #[test]
    fn trip_count_decays_after_a_healthy_cap() {
        let s = settings(|c| {
            c.breaker.consecutive_failures = Some(1);
            c.breaker.half_open_probes = Some(1);
        });
        let mut rng = RouterRng::seed_from_u64(0);
        let mut b = Breaker::new(&s);
        b.on_failure(at(0), FAST, None, &s, &mut rng);
        let probe = b.admits(at(5_000), &s).unwrap();
        b.on_send(probe);
        b.on_failure(at(5_000), FAST, probe, &s, &mut rng); // open 10 s
        let probe = b.admits(at(15_000), &s).unwrap();
        b.on_send(probe);
        b.on_success(at(15_000), FAST, probe, &s, &mut rng);
        assert_eq!(b.state(at(15_000)), BreakerState::Closed);
        // Healthy for 30 s (the cap): the next trip starts again at the base.
        b.on_failure(at(45_000), FAST, None, &s, &mut rng);
        assert_eq!(
            b.state(at(45_000)),
            BreakerState::Open { until: at(50_000) }
        );
    }

    #[test]
    fn neutral_outcomes_only_release_probes() {
        let s = settings(|c| c.breaker.consecutive_failures = Some(1));
        let mut rng = RouterRng::seed_from_u64(0);
        let mut b = Breaker::new(&s);
        b.on_failure(at(0), FAST, None, &s, &mut rng);
        let p1 = b.admits(at(5_000), &s).unwrap();
        b.on_send(p1);
        let p2 = b.admits(at(5_000), &s).unwrap();
        b.on_send(p2);
        assert_eq!(b.admits(at(5_000), &s), None);
        b.on_neutral(p1);
        assert_eq!(b.admits(at(5_000), &s), Some(Some(1)));
    }

    /// After a recovery, the first outcomes are the fast failures of the calls sent since (their
    /// answers take seconds): for three average answer times the breaker counts them but does not
    /// trip; a provider still down trips when that grace ends.
    #[test]
    fn a_recovered_breaker_settles_before_judging_its_fast_failures() {
        let s = settings(|_| {});
        let mut rng = RouterRng::seed_from_u64(0);
        let mut b = Breaker::new(&s);
        for _ in 0..20 {
            b.observe_answer_time(Duration::from_secs(2));
        }
        for i in 0..5 {
            b.on_failure(at(i), FAST, None, &s, &mut rng);
        }
        assert!(matches!(b.state(at(5)), BreakerState::Open { .. }));
        let (p1, p2) = (
            b.admits(at(5_005), &s).unwrap(),
            b.admits(at(5_005), &s).unwrap(),
        );
        b.on_send(p1);
        b.on_send(p2);
        b.on_success(at(7_000), FAST, p1, &s, &mut rng);
        b.on_success(at(7_000), FAST, p2, &s, &mut rng);
        assert_eq!(b.state(at(7_000)), BreakerState::Closed);
        // Thirty fast failures in the first 3 s (and no answer yet): still closed.
        for i in 0..30 {
            b.on_failure(at(7_100 + 100 * i), FAST, None, &s, &mut rng);
        }
        assert_eq!(b.state(at(10_000)), BreakerState::Closed);
        // Failures go on past 3 average answer times (6 s): an outage, it trips.
        for i in 0..40 {
            b.on_failure(at(10_100 + 100 * i), FAST, None, &s, &mut rng);
        }
        assert!(matches!(b.state(at(14_100)), BreakerState::Open { .. }));
    }
}
