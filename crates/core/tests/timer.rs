//! Property tests of the attempt timer's contract: random limits, random event sequences and
//! random wake-ups, checked against a model of the stage limits; and a timer made before a
//! config reload keeps the limits of the attempt it was made for.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

use proptest::prelude::*;
use std::time::Duration;
use stilts_core::{
    AttemptTimer, Cause, Decision, Instant, Outcome, ProviderConfig, RequestMeta, Router,
    RouterConfig, Stage, Timeouts,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timeouts() -> impl Strategy<Value = Timeouts> {
    (
        1u64..5_000,
        1u64..20_000,
        1u64..20_000,
        1u64..20_000,
        1u64..60_000,
    )
        .prop_map(|(connect, headers, first_token, stall, attempt)| Timeouts {
            connect: ms(connect),
            headers: ms(headers),
            plain_headers_per_output_token: ms(0),
            first_token: ms(first_token),
            stall: ms(stall),
            attempt: ms(attempt),
        })
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Headers,
    FirstToken,
    Data,
    End,
    /// The driver's timer fired (maybe early, maybe late): it calls `handle_timeout`.
    Wake,
    /// A wake-up a nanosecond before `poll_timeout()`.
    WakeJustBefore,
    /// A wake-up exactly at `poll_timeout()`.
    WakeAtDue,
}

fn ev() -> impl Strategy<Value = (u64, Ev)> {
    (
        0u64..6_000,
        prop_oneof![
            Just(Ev::Headers),
            Just(Ev::FirstToken),
            Just(Ev::Data),
            Just(Ev::End),
            Just(Ev::Wake),
            Just(Ev::WakeJustBefore),
            Just(Ev::WakeAtDue),
        ],
    )
}

/// What the contract says is due, from the events alone: the model the timer is checked against.
struct Model {
    t: Timeouts,
    stream: bool,
    sent: Instant,
    deadline: Instant,
    headers: bool,
    first_token: bool,
    last_data: Instant,
    over: bool,
}

impl Model {
    /// The stage limits in force (never the deadline), as (instant, stage).
    fn limits(&self) -> Vec<(Instant, Stage)> {
        let mut v = Vec::new();
        if !self.headers {
            v.push((self.sent + self.t.headers, Stage::Headers));
        }
        if self.stream && !self.first_token {
            v.push((self.sent + self.t.first_token, Stage::FirstToken));
        }
        if self.headers {
            let stage = if self.stream {
                Stage::Stall
            } else {
                Stage::Body
            };
            v.push((self.last_data + self.t.stall, stage));
        }
        v
    }

    fn due(&self) -> Instant {
        self.limits()
            .iter()
            .map(|l| l.0)
            .min()
            .unwrap()
            .min(self.deadline)
    }

    fn data(&mut self, now: Instant) {
        self.headers = true;
        self.last_data = self.last_data.max(now);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn never_early_never_past_the_deadline_and_exactly_once(
        t in timeouts(),
        stream in any::<bool>(),
        sent_ms in 0u64..100_000,
        call_ms in 1u64..120_000,
        events in proptest::collection::vec(ev(), 0..40),
    ) {
        let sent = Instant::from_millis(sent_ms);
        let call_deadline = sent + ms(call_ms);
        let mut timer = AttemptTimer::with_limits(&t, stream, sent, call_deadline);
        let deadline = (sent + t.attempt).min(call_deadline);
        prop_assert_eq!(timer.deadline(), deadline);
        prop_assert_eq!(timer.sent(), sent);
        let mut model = Model {
            t, stream, sent, deadline,
            headers: false, first_token: false, last_data: sent, over: false,
        };
        let mut now = sent;
        let mut expiries = 0;
        for (advance, ev) in events {
            let due = timer.poll_timeout();
            now = match ev {
                Ev::WakeJustBefore => now.max(due - Duration::from_nanos(1)),
                Ev::WakeAtDue => now.max(due),
                _ => now + ms(advance),
            };
            prop_assert!(due <= deadline, "poll_timeout {} past the deadline {}", due, deadline);
            if !model.over {
                prop_assert_eq!(due, model.due(), "the timer's due instant is the contract's");
            }
            match ev {
                Ev::Wake | Ev::WakeJustBefore | Ev::WakeAtDue => {
                    let r = timer.handle_timeout(now);
                    match r {
                        Some(e) => {
                            expiries += 1;
                            prop_assert!(!model.over, "an attempt expires once");
                            prop_assert!(now >= due, "expired at {} before its due {}", now, due);
                            prop_assert_eq!(e.at, due);
                            // The limit named is the one that fell due, never one still ahead.
                            if e.cause == Cause::Stage {
                                let limits = model.limits();
                                prop_assert!(
                                    limits.contains(&(e.at, e.stage)),
                                    "{:?} is not a limit in force: {:?}", e, limits
                                );
                                prop_assert!(e.at <= deadline);
                            } else {
                                prop_assert_eq!(e.at, deadline);
                                prop_assert!(model.limits().iter().all(|l| l.0 > deadline));
                            }
                            prop_assert_eq!(e.after_first_token, model.first_token);
                            prop_assert!(timer.is_over());
                            model.over = true;
                        }
                        None => prop_assert!(model.over || now < due, "nothing returned at {} though {} was due", now, due),
                    }
                }
                _ if model.over => {
                    // Ignored: the attempt is over.
                    let before = timer;
                    match ev {
                        Ev::Headers => timer.on_headers(now),
                        Ev::FirstToken => timer.on_first_token(now),
                        Ev::Data => timer.on_data(now),
                        _ => timer.on_end(now),
                    }
                    prop_assert_eq!(before, timer);
                }
                Ev::Headers => {
                    timer.on_headers(now);
                    if !model.headers {
                        model.data(now);
                    }
                }
                Ev::FirstToken => {
                    timer.on_first_token(now);
                    model.data(now);
                    model.first_token |= stream;
                }
                Ev::Data => {
                    timer.on_data(now);
                    model.data(now);
                }
                Ev::End => {
                    timer.on_end(now);
                    model.over = true;
                }
            }
        }
        prop_assert!(expiries <= 1);
        // Whatever happened, nothing is due past the deadline, and the deadline ends it.
        prop_assert!(timer.poll_timeout() <= deadline);
        if !model.over {
            prop_assert!(timer.handle_timeout(deadline).is_some());
        }
        prop_assert_eq!(timer.handle_timeout(Instant::MAX), None);
    }

    #[test]
    fn a_timer_made_before_a_reload_keeps_its_attempts_limits(
        before in timeouts(),
        after in timeouts(),
        stream in any::<bool>(),
        headers_at in proptest::option::of(0u64..30_000),
    ) {
        let config = |t: &Timeouts| {
            let mut provider = ProviderConfig::named("a");
            provider.timeouts.headers_ms = Some(t.headers.as_millis() as u64);
            provider.timeouts.first_token_ms = Some(t.first_token.as_millis() as u64);
            provider.timeouts.stall_ms = Some(t.stall.as_millis() as u64);
            provider.timeouts.attempt_ms = Some(t.attempt.as_millis() as u64);
            provider.timeouts.plain_headers_ms_per_output_token = Some(0);
            RouterConfig {
                providers: vec![provider, ProviderConfig::named("b")],
                deadline_ms: Some(600_000),
                ..RouterConfig::default()
            }
            .validate()
            .unwrap()
        };
        let mut router = Router::new(config(&before), 1);
        let now = Instant::from_secs(1);
        let meta = RequestMeta { stream, ..RequestMeta::default() };
        let mut call = router.begin(meta, now);
        let Decision::Send(attempt) = router.next_attempt(&mut call, now) else {
            panic!("no attempt");
        };
        prop_assert_eq!(attempt.provider.index(), 0);
        let mut timer = attempt.timer(now);
        let planned = timer.poll_timeout();
        router.reconfigure(config(&after));
        // The attempt, and a timer made from it after the reload, keep the limits it was sent with.
        prop_assert_eq!(attempt.timer(now), timer);
        prop_assert_eq!(timer.poll_timeout(), planned);
        if let Some(h) = headers_at {
            timer.on_headers(now + ms(h));
        }
        let due = timer.poll_timeout();
        let e = timer.handle_timeout(due).unwrap();
        prop_assert!(e.at <= now + before.attempt);
        let expected = match (e.cause, e.stage) {
            (Cause::AttemptLimit, _) => before.attempt,
            (Cause::Stage, Stage::Headers) => before.headers,
            (Cause::Stage, Stage::FirstToken) => before.first_token,
            (Cause::Stage, Stage::Stall | Stage::Body) => before.stall,
            (Cause::CallDeadline, _) => unreachable!("the call's deadline is 10 minutes away"),
        };
        prop_assert_eq!(e.limit, expected);
        // Recorded after the reload, against the provider it went to.
        router.record(&mut call, attempt, Outcome::Cancelled, e.at);
        // The next attempt is planned with the new limits.
        let mut call = router.begin(meta, e.at);
        let Decision::Send(next) = router.next_attempt(&mut call, e.at) else {
            panic!("no attempt after the reload");
        };
        if next.provider.index() == 0 {
            prop_assert_eq!(next.timeouts.stall, after.stall);
            prop_assert_eq!(next.timeouts.attempt, after.attempt);
        }
        router.record(&mut call, next, Outcome::Cancelled, e.at);
    }
}
