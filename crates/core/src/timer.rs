//! The timer of one attempt: the core decides when each stage of an attempt has run out of time.
//!
//! A driver performs attempts; it should not also decide how long each stage may take, or two
//! drivers (the gateway in real time, the simulator in virtual time) drift apart. So, as in
//! quinn-proto, where a connection says when it must next be woken (`poll_timeout`) and decides
//! what a wake-up means (`handle_timeout`), every attempt gets an [`AttemptTimer`]
//! ([`Attempt::timer`], at the instant it is sent) and the driver only reports and asks:
//!
//! - it tells the timer what happened, with the instant: [`on_headers`](AttemptTimer::on_headers),
//!   [`on_first_token`](AttemptTimer::on_first_token), [`on_data`](AttemptTimer::on_data) for any
//!   other stream event or body chunk, [`on_end`](AttemptTimer::on_end);
//! - it arms one timer at [`poll_timeout`](AttemptTimer::poll_timeout) (asked again after every
//!   event: an event may move it) and, when that timer fires, calls
//!   [`handle_timeout`](AttemptTimer::handle_timeout) with the time now: `None` if nothing is
//!   due yet (a wake-up a little early is harmless: arm again), or the [`Expiry`] exactly once,
//!   after which the attempt is over (it failed as a timeout) and later events are ignored.
//!
//! The contract, for an attempt sent at `sent` under [`Timeouts`] `t`:
//!
//! - response headers by `sent + t.headers` ([`Stage::Headers`]; for a plain request `t` is
//!   [`Timeouts::for_request`]'s, whose headers limit grows with the expected output, since a
//!   plain upstream sends its headers only with the whole answer);
//! - for a stream, the first token by `sent + t.first_token` ([`Stage::FirstToken`]), a limit that
//!   runs from the send and so also while the headers are awaited;
//! - after the headers, every gap between data (stream events, or body chunks of a plain answer or
//!   an error) at most `t.stall` ([`Stage::Stall`], [`Stage::Body`]), before the first token too;
//! - everything by the attempt's deadline: the attempt limit (`t.attempt`) clipped to the call's
//!   deadline. When the deadline comes before the stage's own limit, the [`Expiry`] says so
//!   ([`Cause::AttemptLimit`], [`Cause::CallDeadline`]): a short request deadline or little time
//!   left in the call is not a slow stage.
//!
//! A limit expires exactly at its instant, never before: `handle_timeout(now)` is `None` while
//! `now < poll_timeout()`. An event reported at the very instant a limit falls due (before
//! `handle_timeout`) still counts.
//!
//! Not here: the connect limit (`t.connect`). It stays with the driver's HTTP connector, configured
//! with the core's `timeouts.connect`: a pooled client (hyper's) reuses connections and does not
//! say when a new one is made, so the driver cannot report that moment. A connection that is slow
//! to open still counts against the headers limit, which runs from the send. The call-level wakes
//! (backoff and Retry-After waits, the hedge delay, the call's deadline) are the router's
//! [`Decision::Wait`](crate::Decision::Wait) and [`Decision::Hedge`](crate::Decision::Hedge).

use crate::attempt::Attempt;
use crate::config::Timeouts;
use crate::time::Instant;
use std::fmt;
use std::time::Duration;

/// What an attempt was waiting for when a limit ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The response headers (`headers`, from the send).
    Headers,
    /// The first token of a stream (`first_token`, from the send).
    FirstToken,
    /// The next event of a stream (`stall`, from the last data).
    Stall,
    /// The next chunk of a plain answer's body, or of an error's body (`stall`, from the last
    /// data).
    Body,
}

impl Stage {
    /// A short snake_case name for metrics and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Headers => "headers",
            Stage::FirstToken => "first_token",
            Stage::Stall => "stall",
            Stage::Body => "body",
        }
    }
}

/// Which limit ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The stage's own limit (`headers`, `first_token` or `stall`).
    Stage,
    /// The attempt limit (`attempt`) came before the stage's own limit.
    AttemptLimit,
    /// The call's deadline (the route's, or the client's own) came before the stage's own limit
    /// and the attempt limit.
    CallDeadline,
}

/// A limit of an attempt ran out: the attempt failed as a timeout.
///
/// Its `Display` is the message a driver reports, e.g. "no response headers within 10000 ms".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Expiry {
    /// What the attempt was waiting for.
    pub stage: Stage,
    /// Which limit ran out: the stage's own, or the attempt's deadline first.
    pub cause: Cause,
    /// How long that limit is: the stage's timeout ([`Cause::Stage`]), the attempt limit
    /// ([`Cause::AttemptLimit`]), or the time from the send to the call's deadline
    /// ([`Cause::CallDeadline`]).
    pub limit: Duration,
    /// When it ran out.
    pub at: Instant,
    /// A stream's first token had arrived: part of the answer may have reached the client.
    pub after_first_token: bool,
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.limit.as_millis();
        if self.cause == Cause::Stage {
            return match (self.stage, self.after_first_token) {
                (Stage::Headers, _) => write!(f, "no response headers within {ms} ms"),
                (Stage::FirstToken, _) => write!(f, "no first token within {ms} ms"),
                (Stage::Stall, false) => write!(
                    f,
                    "the stream stalled before the first token: no data within {ms} ms"
                ),
                (Stage::Stall, true) => write!(f, "the stream stalled: no data within {ms} ms"),
                (Stage::Body, _) => {
                    write!(f, "the response body stalled: no data within {ms} ms")
                }
            };
        }
        let what = match (self.stage, self.after_first_token) {
            (Stage::Headers, _) => "no response headers",
            (Stage::FirstToken | Stage::Stall, false) => "no first token",
            (Stage::FirstToken | Stage::Stall, true) => "the stream did not end",
            (Stage::Body, _) => "the response body did not complete",
        };
        match self.cause {
            Cause::AttemptLimit => write!(
                f,
                "{what} before the attempt's deadline (the attempt limit, attempt_ms = {ms})"
            ),
            _ => write!(
                f,
                "{what} before the attempt's deadline (the request's deadline)"
            ),
        }
    }
}

/// Where an attempt is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Sent; waiting for the response headers.
    Headers,
    /// A stream with headers, waiting for its first token.
    FirstToken,
    /// A stream past its first token.
    Flowing,
    /// A plain answer (or an error) with headers, reading its body.
    Body,
    /// Over: ended, or a limit ran out.
    Over,
}

/// The timer of one attempt: a sans-IO state machine that says when the driver must wake it
/// ([`poll_timeout`](Self::poll_timeout)) and decides, when woken, whether a limit ran out
/// ([`handle_timeout`](Self::handle_timeout)). See the [module docs](self) for the contract.
///
/// Made by [`Attempt::timer`] when the attempt is sent, or by [`AttemptTimer::with_limits`] from
/// explicit limits. It keeps the limits it was made with: a router reconfigured meanwhile changes
/// the next attempts, not this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptTimer {
    sent: Instant,
    deadline: Instant,
    /// The last data (or the headers): the stall limit runs from here.
    last_data: Instant,
    /// The limits, in nanoseconds (small and cheap to add: the simulator copies and polls timers
    /// millions of times a second).
    headers: u64,
    first_token: u64,
    stall: u64,
    attempt: u64,
    /// What `deadline` is: [`Cause::AttemptLimit`] or [`Cause::CallDeadline`].
    deadline_cause: Cause,
    stream: bool,
    phase: Phase,
    first_token_seen: bool,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `ns` nanoseconds after `from`, saturating.
fn after(from: Instant, ns: u64) -> Instant {
    Instant::from_nanos(from.as_nanos().saturating_add(ns))
}

impl AttemptTimer {
    /// The timer of `attempt`, sent at `now`: its [`Attempt::timeouts`] (already for its
    /// request), bounded by its [`Attempt::deadline`].
    pub fn new(attempt: &Attempt, now: Instant) -> Self {
        let t = &attempt.timeouts;
        let cause = if attempt.by_call {
            Cause::CallDeadline
        } else {
            Cause::AttemptLimit
        };
        Self::build(t, attempt.stream, now, attempt.deadline, cause)
    }

    /// A timer from explicit limits, for a driver that runs attempts the router did not plan (the
    /// simulator's baselines): an attempt sent at `now` for a stream or not, under `timeouts`
    /// taken as given (a plain request's headers limit is not grown: apply
    /// [`Timeouts::for_request`] first for that), abandoned at `now + timeouts.attempt` or at
    /// `call_deadline`, whichever comes first.
    pub fn with_limits(
        timeouts: &Timeouts,
        stream: bool,
        now: Instant,
        call_deadline: Instant,
    ) -> Self {
        let limit = now + timeouts.attempt;
        if call_deadline <= limit {
            Self::build(timeouts, stream, now, call_deadline, Cause::CallDeadline)
        } else {
            Self::build(timeouts, stream, now, limit, Cause::AttemptLimit)
        }
    }

    fn build(t: &Timeouts, stream: bool, now: Instant, deadline: Instant, cause: Cause) -> Self {
        AttemptTimer {
            sent: now,
            deadline,
            last_data: now,
            headers: nanos(t.headers),
            first_token: nanos(t.first_token),
            stall: nanos(t.stall),
            attempt: nanos(t.attempt),
            deadline_cause: cause,
            stream,
            phase: Phase::Headers,
            first_token_seen: false,
        }
    }

    /// When the attempt was sent.
    pub fn sent(&self) -> Instant {
        self.sent
    }

    /// When the attempt is abandoned whatever happens: the attempt limit or the call's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the attempt is over: ended ([`on_end`](Self::on_end)) or expired.
    pub fn is_over(&self) -> bool {
        self.phase == Phase::Over
    }

    /// The response headers arrived at `now`. Ignored once they did, or once the attempt is over.
    pub fn on_headers(&mut self, now: Instant) {
        if self.phase == Phase::Headers {
            self.phase = if self.stream {
                Phase::FirstToken
            } else {
                Phase::Body
            };
            self.data(now);
        }
    }

    /// A stream's first token (the first event that carries part of the answer) arrived at `now`.
    /// Implies the headers; later, or for a plain answer, it is data like any other. Ignored once
    /// the attempt is over.
    pub fn on_first_token(&mut self, now: Instant) {
        match self.phase {
            Phase::Over => {}
            _ if !self.stream => self.on_data(now),
            Phase::Headers | Phase::FirstToken | Phase::Flowing | Phase::Body => {
                self.phase = Phase::Flowing;
                self.first_token_seen = true;
                self.data(now);
            }
        }
    }

    /// Data arrived at `now`: a stream event that is not the first token, or a body chunk. Resets
    /// the stall limit. Before the headers, it implies them. Ignored once the attempt is over.
    pub fn on_data(&mut self, now: Instant) {
        match self.phase {
            Phase::Over => {}
            Phase::Headers => self.on_headers(now),
            Phase::FirstToken | Phase::Flowing | Phase::Body => self.data(now),
        }
    }

    /// The attempt ended (answered, failed or cancelled) at `now`: nothing is due any more.
    pub fn on_end(&mut self, _now: Instant) {
        self.phase = Phase::Over;
    }

    fn data(&mut self, now: Instant) {
        self.last_data = self.last_data.max(now);
    }

    /// The next instant the driver must call [`handle_timeout`](Self::handle_timeout): never
    /// later than the attempt's deadline. Once the attempt is over, nothing is due and this is
    /// the deadline (a wake-up then finds nothing).
    pub fn poll_timeout(&self) -> Instant {
        match self.next_limit() {
            Some((_, at, _)) => at.min(self.deadline),
            None => self.deadline,
        }
    }

    /// Time is `now`: the [`Expiry`] if a limit ran out (exactly once; the attempt is then over),
    /// `None` if nothing is due yet or the attempt is already over.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Expiry> {
        let (stage, at, limit) = self.next_limit()?;
        // A stage limit due exactly at the deadline is the stage's own.
        let (at, cause, limit) = if at <= self.deadline {
            (at, Cause::Stage, limit)
        } else {
            let limit = match self.deadline_cause {
                Cause::AttemptLimit => self.attempt,
                _ => self
                    .deadline
                    .as_nanos()
                    .saturating_sub(self.sent.as_nanos()),
            };
            (self.deadline, self.deadline_cause, limit)
        };
        if now < at {
            return None;
        }
        self.phase = Phase::Over;
        Some(Expiry {
            stage,
            cause,
            limit: Duration::from_nanos(limit),
            at,
            after_first_token: self.first_token_seen,
        })
    }

    /// The stage limit that runs out first in the current phase (before the deadline is
    /// considered), as (stage, instant, its length in ns); at a tie, the limit that runs from the
    /// send. `None` once the attempt is over.
    #[inline]
    fn next_limit(&self) -> Option<(Stage, Instant, u64)> {
        let from_send = |stage, ns| (stage, after(self.sent, ns), ns);
        let stall = |stage| (stage, after(self.last_data, self.stall), self.stall);
        Some(match self.phase {
            Phase::Headers if self.stream && self.first_token < self.headers => {
                from_send(Stage::FirstToken, self.first_token)
            }
            Phase::Headers => from_send(Stage::Headers, self.headers),
            Phase::FirstToken => {
                let first = from_send(Stage::FirstToken, self.first_token);
                let stalled = stall(Stage::Stall);
                if stalled.1 < first.1 { stalled } else { first }
            }
            Phase::Flowing => stall(Stage::Stall),
            Phase::Body => stall(Stage::Body),
            Phase::Over => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: 1_000 * MS,
            headers: 10_000 * MS,
            plain_headers_per_output_token: 50 * MS,
            first_token: 5_000 * MS,
            stall: 2_000 * MS,
            attempt: 60_000 * MS,
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// A timer sent at 1 s with a far call deadline.
    fn timer(stream: bool) -> AttemptTimer {
        AttemptTimer::with_limits(&timeouts(), stream, at(1_000), at(1_000_000))
    }

    /// Asserts that nothing is due a nanosecond before `due`, and that `stage` expires at `due`.
    fn expires_exactly(mut t: AttemptTimer, due: u64, stage: Stage, cause: Cause) -> Expiry {
        assert_eq!(t.poll_timeout(), at(due));
        assert_eq!(t.handle_timeout(at(due) - Duration::from_nanos(1)), None);
        assert_eq!(t.handle_timeout(at(0)), None);
        let e = t.handle_timeout(at(due)).expect("due");
        assert_eq!((e.stage, e.cause, e.at), (stage, cause, at(due)));
        assert_eq!(t.handle_timeout(at(due + 1)), None, "once only");
        assert!(t.is_over());
        e
    }

    #[test]
    fn headers_expire_exactly_at_their_limit() {
        let e = expires_exactly(timer(false), 11_000, Stage::Headers, Cause::Stage);
        assert_eq!(e.to_string(), "no response headers within 10000 ms");
        assert_eq!(e.limit, 10_000 * MS);
    }

    #[test]
    fn a_stream_awaits_its_first_token_from_the_send_even_before_headers() {
        let e = expires_exactly(timer(true), 6_000, Stage::FirstToken, Cause::Stage);
        assert_eq!(e.to_string(), "no first token within 5000 ms");
        let mut t = timer(true);
        t.on_headers(at(1_500));
        // A role chunk and a keep-alive: they reset the stall limit, not the first-token one.
        t.on_data(at(3_000));
        t.on_data(at(4_500));
        let e = expires_exactly(t, 6_000, Stage::FirstToken, Cause::Stage);
        assert!(!e.after_first_token);
    }

    #[test]
    fn the_stall_limit_runs_from_the_last_data_before_and_after_the_first_token() {
        let mut t = timer(true);
        t.on_headers(at(1_100));
        let e = expires_exactly(t, 3_100, Stage::Stall, Cause::Stage);
        assert_eq!(
            e.to_string(),
            "the stream stalled before the first token: no data within 2000 ms"
        );
        let mut t = timer(true);
        t.on_headers(at(1_100));
        t.on_first_token(at(2_000));
        for ms in [3_000, 4_900, 6_500] {
            t.on_data(at(ms));
            assert_eq!(t.poll_timeout(), at(ms + 2_000));
        }
        let e = expires_exactly(t, 8_500, Stage::Stall, Cause::Stage);
        assert!(e.after_first_token);
        assert_eq!(e.to_string(), "the stream stalled: no data within 2000 ms");
    }

    #[test]
    fn a_plain_body_may_not_stall_either() {
        let mut t = timer(false);
        t.on_headers(at(4_000));
        t.on_data(at(5_000));
        let e = expires_exactly(t, 7_000, Stage::Body, Cause::Stage);
        assert_eq!(
            e.to_string(),
            "the response body stalled: no data within 2000 ms"
        );
    }

    #[test]
    fn the_deadline_bounds_every_stage_and_says_it_came_first() {
        // The call's deadline at 2.5 s, before the headers limit (11 s).
        let t = AttemptTimer::with_limits(&timeouts(), false, at(1_000), at(2_500));
        let e = expires_exactly(t, 2_500, Stage::Headers, Cause::CallDeadline);
        assert_eq!(e.limit, 1_500 * MS);
        let message = e.to_string();
        assert_eq!(
            message,
            "no response headers before the attempt's deadline (the request's deadline)"
        );
        assert!(!message.contains("within"), "no stage limit is blamed");
        // The attempt limit (1 s here) before a flowing stream's end.
        let short = Timeouts {
            attempt: 1_000 * MS,
            ..timeouts()
        };
        let mut t = AttemptTimer::with_limits(&short, true, at(1_000), at(1_000_000));
        t.on_first_token(at(1_200));
        t.on_data(at(1_900));
        let e = expires_exactly(t, 2_000, Stage::Stall, Cause::AttemptLimit);
        assert_eq!(
            e.to_string(),
            "the stream did not end before the attempt's deadline (the attempt limit, attempt_ms = 1000)"
        );
        // A limit due exactly at the deadline is the stage's own.
        let t = AttemptTimer::with_limits(&timeouts(), false, at(1_000), at(11_000));
        expires_exactly(t, 11_000, Stage::Headers, Cause::Stage);
    }

    #[test]
    fn poll_timeout_never_passes_the_deadline_even_when_over() {
        let mut t = AttemptTimer::with_limits(&timeouts(), true, at(0), at(1_000));
        assert_eq!(t.poll_timeout(), at(1_000));
        t.on_first_token(at(10));
        t.on_end(at(20));
        assert!(t.is_over());
        assert_eq!(t.poll_timeout(), at(1_000));
        assert_eq!(
            t.handle_timeout(at(5_000)),
            None,
            "an ended attempt never expires"
        );
    }

    #[test]
    fn events_after_expiry_are_ignored() {
        let mut t = timer(true);
        assert!(t.handle_timeout(at(6_000)).is_some());
        t.on_headers(at(6_001));
        t.on_first_token(at(6_002));
        t.on_data(at(6_003));
        assert!(t.is_over());
        assert_eq!(t.handle_timeout(at(100_000)), None);
    }

    #[test]
    fn an_event_at_the_instant_a_limit_falls_due_still_counts() {
        let mut t = timer(false);
        t.on_headers(at(11_000));
        assert_eq!(t.poll_timeout(), at(13_000));
        assert_eq!(t.handle_timeout(at(11_000)), None);
    }

    #[test]
    fn an_attempt_from_the_router_keeps_its_deadline_and_says_what_it_is() {
        use crate::{Decision, ProviderConfig, RequestMeta, Router, RouterConfig};
        let config = RouterConfig {
            providers: vec![ProviderConfig::named("a")],
            deadline_ms: Some(120_000),
            ..RouterConfig::default()
        };
        let mut router = Router::new(config.validate().expect("valid"), 1);
        for (client, cause) in [
            (Some(2_000 * MS), Cause::CallDeadline),
            (None, Cause::AttemptLimit),
        ] {
            let meta = RequestMeta {
                stream: true,
                deadline: client,
                ..RequestMeta::default()
            };
            let mut call = router.begin(meta, at(0));
            let Decision::Send(attempt) = router.next_attempt(&mut call, at(0)) else {
                panic!("no attempt");
            };
            // Sent a little after the decision: the deadline stays the router's.
            let mut t = attempt.timer(at(3));
            assert_eq!(t.sent(), at(3));
            t.on_first_token(at(100));
            // Data flows every half stall: only the deadline can end it.
            let mut now = at(100);
            let e = loop {
                now = now + attempt.timeouts.stall / 2;
                let due = t.poll_timeout();
                if due <= now {
                    break t.handle_timeout(due).expect("due");
                }
                t.on_data(now);
            };
            assert_eq!((e.at, e.cause), (attempt.deadline, cause));
            router.record(&mut call, attempt, crate::Outcome::Cancelled, e.at);
        }
    }
}
