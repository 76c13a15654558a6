//! A plain attempt's headers limit: fitted to the provider's measured speed and to the call's
//! deadline, never longer than the configured one, never shorter than a healthy answer of the
//! provider; and the fallback hedge of a plain attempt or a stream (see
//! `src/router/plain_limit.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use proptest::prelude::*;
use std::time::Duration;
use stilts_core::{Decision, ErrorClass, Instant, Outcome, ProviderId, RequestMeta, Router, Usage};

fn plain(deadline_s: u64) -> RequestMeta {
    RequestMeta {
        input_tokens: 900,
        output_tokens: 512,
        stream: false,
        deadline: Some(Duration::from_secs(deadline_s)),
    }
}

fn answer(ms: u64, tokens: u64) -> Outcome {
    Outcome::Success {
        latency: Duration::from_millis(ms),
        first_token: None,
        usage: Usage {
            input_tokens: 900,
            output_tokens: tokens,
        },
    }
}

/// `count` answers of `tokens` in `ms` each from the first provider, spread over a minute and a
/// bit (a provider is known once it was watched for as long as its healthy answer, twice its
/// longest); returns the time of the last one.
fn teach(r: &mut Router, count: u64, ms: u64, tokens: u64) -> Instant {
    let every = Duration::from_secs(61) / u32::try_from(count.max(2) - 1).unwrap();
    let mut last = Instant::ZERO;
    for k in 0..count {
        let now = Instant::ZERO + every * u32::try_from(k).unwrap();
        let mut call = r.begin(plain(30), now);
        let Decision::Send(a) = r.next_attempt(&mut call, now) else {
            panic!("no attempt");
        };
        last = now + Duration::from_millis(ms);
        r.record(&mut call, a, answer(ms, tokens), last);
    }
    last
}

fn headers_limit(r: &mut Router, meta: RequestMeta, now: Instant) -> Duration {
    let mut call = r.begin(meta, now);
    match r.next_attempt(&mut call, now) {
        Decision::Send(a) => a.timeouts.headers,
        other => panic!("no attempt: {other:?}"),
    }
}

#[test]
fn an_unmeasured_provider_keeps_the_configured_limit_unless_a_fallback_needs_the_time() {
    // 10 s + 50 ms x 512 = 35.6 s, capped at the 30 s call deadline only by the deadline itself.
    let mut alone = router(&["a"], priority);
    assert_eq!(
        headers_limit(&mut alone, plain(30), Instant::from_secs(0)),
        Duration::from_millis(35_600)
    );
    // With a fallback of unknown speed, nothing is cut, but half the time left is kept for it:
    // the fallback is hedged then (see `a_young_provider_s_long_answer_is_kept_and_its_fallback_
    // hedged_on_time`).
    let mut two = router(&["a", "b"], priority);
    assert_eq!(
        headers_limit(&mut two, plain(30), Instant::from_secs(0)),
        Duration::from_millis(35_600)
    );
    // An unmeasured provider is given at least twice the default latency (1 s) before its
    // fallback is hedged: a client's 1 s deadline is its own.
    let mut call = two.begin(plain(1), Instant::ZERO);
    assert!(matches!(
        two.next_attempt(&mut call, Instant::ZERO),
        Decision::Send(_)
    ));
    assert_eq!(
        two.next_attempt(&mut call, Instant::ZERO),
        Decision::Pending
    );
}

/// Found by the soak (4 s deadlines, answers too short to measure a speed): half the time left,
/// 2 s less a few microseconds, fell just short of the cold floor of 2 s, and the call then hedged
/// nothing, so every hang of its first provider ran into the deadline. A cold provider's fallback
/// is hedged at the later of the two, whatever the deadline, as long as the deadline is later.
#[test]
fn a_cold_provider_s_fallback_is_hedged_at_its_floor_when_the_deadline_is_short() {
    for deadline_s in [3, 4, 5] {
        let mut r = router(&["a", "b"], priority);
        // The call began a few microseconds before its first attempt went out.
        let began = Instant::ZERO;
        let now = began + Duration::from_micros(7);
        let mut call = r.begin(plain(deadline_s), began);
        let Decision::Send(first) = r.next_attempt(&mut call, now) else {
            panic!("no attempt");
        };
        assert_eq!(first.provider.index(), 0);
        let Decision::Hedge { at } = r.next_attempt(&mut call, now) else {
            panic!("no fallback hedge with a {deadline_s} s deadline");
        };
        // Half the time left, but no earlier than the cold floor of twice the default latency.
        let left = Duration::from_secs(deadline_s) - Duration::from_micros(7);
        let expected = now + (left / 2).max(Duration::from_secs(2));
        assert_eq!(at, expected, "{deadline_s} s deadline");
        let Decision::Send(hedge) = r.next_attempt(&mut call, at) else {
            panic!("no hedge");
        };
        assert_eq!(hedge.provider.index(), 1);
        assert!(hedge.is_hedge);
        // b answers; the hung attempt on a loses.
        let answered = at + Duration::from_millis(5);
        r.record(&mut call, hedge, answer(5, 10), answered);
        assert!(matches!(
            r.next_attempt(&mut call, answered),
            Decision::Done { .. }
        ));
        r.record(&mut call, first, Outcome::Cancelled, answered);
    }
}

/// Young knowledge (answers watched for less time than the healthy answer they suggest) says
/// little of how long a healthy answer takes: the attempt keeps its time, and the fallback is
/// hedged when it needs to start. The attempt that answers first wins; one that lost to the hedge
/// counts as a timeout.
#[test]
fn a_young_provider_s_long_answer_is_kept_and_its_fallback_hedged_on_time() {
    let mut r = router(&["a", "b"], priority);
    // Ten seconds of 600-token answers in 6 s, watched from the first (at 6 s) for 4 s: too
    // short to have seen a healthy answer of twice 6 s, so only short answers could have finished.
    let mut now = Instant::ZERO;
    for k in 0..10 {
        now = Instant::from_secs(k);
        let mut call = r.begin(plain(30), now);
        let Decision::Send(a) = r.next_attempt(&mut call, now) else {
            panic!("no attempt");
        };
        r.record(
            &mut call,
            a,
            answer(6_000, 600),
            now + Duration::from_secs(6),
        );
    }
    now = now + Duration::from_secs(1);
    // The long answer takes 20 s: it is not cut, and b is hedged at 15 s (half the time left).
    let mut call = r.begin(plain(30), now);
    let Decision::Send(long) = r.next_attempt(&mut call, now) else {
        panic!("no attempt");
    };
    assert_eq!(long.timeouts.headers, Duration::from_millis(35_600));
    let hedge_at = now + Duration::from_secs(15);
    assert_eq!(
        r.next_attempt(&mut call, now),
        Decision::Hedge { at: hedge_at }
    );
    let Decision::Send(hedge) = r.next_attempt(&mut call, hedge_at) else {
        panic!("no hedge at 15 s");
    };
    assert_eq!(hedge.provider.index(), 1);
    assert!(hedge.is_hedge);
    // a answers first: the hedge is cancelled, and a keeps a clean record.
    let done = now + Duration::from_secs(20);
    r.record(&mut call, long, answer(20_000, 2_000), done);
    assert!(matches!(
        r.next_attempt(&mut call, done),
        Decision::Done { .. }
    ));
    r.record(&mut call, hedge, Outcome::Cancelled, done);
    let a = *r.stats(ProviderId::from_index(0).unwrap());
    assert_eq!((a.successes, a.failures.iter().sum::<u64>()), (11, 0));

    // The other way round: b answers first, and a's attempt, cancelled, counts as its timeout.
    let now = done;
    let mut call = r.begin(plain(30), now);
    let Decision::Send(stuck) = r.next_attempt(&mut call, now) else {
        panic!("no attempt");
    };
    let Decision::Hedge { at } = r.next_attempt(&mut call, now) else {
        panic!("no fallback hedge");
    };
    let Decision::Send(hedge) = r.next_attempt(&mut call, at) else {
        panic!("no hedge");
    };
    let answered = at + Duration::from_secs(5);
    r.record(&mut call, hedge, answer(5_000, 300), answered);
    r.record(&mut call, stuck, Outcome::Cancelled, answered);
    let a = *r.stats(ProviderId::from_index(0).unwrap());
    assert_eq!(
        (a.failures[ErrorClass::Timeout.index()], a.cancelled),
        (1, 0)
    );
}

#[test]
fn a_fast_provider_gets_a_limit_fitted_to_its_longest_answer() {
    let mut r = router(&["a"], priority);
    // 300-token answers in 3 s: 10 ms a token; twice the longest answer is 6 s.
    let now = teach(&mut r, 60, 3_000, 300);
    assert_eq!(
        headers_limit(&mut r, plain(30), now),
        Duration::from_secs(16)
    );
}

#[test]
fn a_provider_with_long_answers_keeps_time_for_them_even_when_a_fallback_waits() {
    let mut r = router(&["a", "b"], priority);
    // 1 500-token answers in 15 s: twice that is 30 s, beyond half of the 30 s left.
    let now = teach(&mut r, 60, 15_000, 1_500);
    let limit = headers_limit(&mut r, plain(30), now);
    assert!(limit >= Duration::from_secs(29), "{limit:?}");
}

#[test]
fn no_cut_that_would_leave_the_fallback_less_than_it_needs() {
    let mut r = router(&["a", "b"], priority);
    // 1 000-token answers in 10 s: a healthy answer may take 20 s. The unmeasured fallback needs
    // half the 30 s left, so a cut for it would come at 15 s, before a healthy answer is done: a
    // cut at 20 s would leave it 10 s of its 15. No cut then; the speed rule alone applies.
    let now = teach(&mut r, 60, 10_000, 1_000);
    assert_eq!(
        headers_limit(&mut r, plain(30), now),
        Duration::from_secs(30)
    );
    // With a 50 s deadline the fallback's half (25 s) comes after a healthy answer (20 s): the
    // cut at 25 s is shorter than the speed rule's 30 s.
    assert_eq!(
        headers_limit(&mut r, plain(50), now),
        Duration::from_secs(25)
    );
}

/// When the fallback hedge fails, the call goes on to the next provider while the attempt it
/// hedged still runs (as a cut would have let it), and never sends that provider a second attempt.
#[test]
fn a_failed_fallback_hedge_lets_the_call_go_on_elsewhere() {
    let mut r = router(&["a", "b", "c"], priority);
    let now = Instant::ZERO;
    let mut call = r.begin(plain(30), now);
    let Decision::Send(hung) = r.next_attempt(&mut call, now) else {
        panic!("no attempt");
    };
    let Decision::Hedge { at } = r.next_attempt(&mut call, now) else {
        panic!("no fallback hedge");
    };
    let Decision::Send(hedge) = r.next_attempt(&mut call, at) else {
        panic!("no hedge");
    };
    assert_eq!(hedge.provider.index(), 1);
    let failed = at + Duration::from_millis(50);
    r.record(
        &mut call,
        hedge,
        Outcome::Failure {
            class: ErrorClass::Server,
            latency: Duration::from_millis(50),
            retry_after: None,
        },
        failed,
    );
    let Decision::Send(next) = r.next_attempt(&mut call, failed) else {
        panic!("the call waited on the hung attempt");
    };
    assert_eq!(next.provider.index(), 2, "not a second attempt to a");
    let done = failed + Duration::from_secs(2);
    r.record(&mut call, next, answer(2_000, 200), done);
    assert!(matches!(
        r.next_attempt(&mut call, done),
        Decision::Done { .. }
    ));
    // a lost to the fallback: its cancel is recorded as its timeout.
    let recorded = r.record(&mut call, hung, Outcome::Cancelled, done);
    assert!(
        matches!(
            recorded,
            Outcome::Failure {
                class: ErrorClass::Timeout,
                ..
            }
        ),
        "{recorded:?}"
    );
}

/// A stream's limits stay the configured ones (its first token, not its whole answer, comes
/// within them), whatever its provider's measured speed.
#[test]
fn a_stream_keeps_its_configured_limits() {
    let mut r = router(&["a", "b"], priority);
    let now = teach(&mut r, 60, 3_000, 300);
    let mut meta = plain(30);
    meta.stream = true;
    let mut call = r.begin(meta, now);
    let Decision::Send(a) = r.next_attempt(&mut call, now) else {
        panic!("no attempt");
    };
    assert_eq!(a.timeouts.headers, Duration::from_secs(10));
    assert_eq!(a.timeouts.first_token, Duration::from_secs(10));
    // With the route's 30 s deadline, the fallback needs its time only after the first-token
    // limit has run out: no hedge.
    assert_eq!(r.next_attempt(&mut call, now), Decision::Pending);
}

/// A stream whose first token has not come when its fallback must start is hedged there (no
/// earlier than the cold floor of twice the default latency): with a 4 s deadline and the
/// configured 10 s first-token limit, a hung stream used to hold the call to its deadline. The
/// first first token wins; the drivers cancel the loser then, before the stream's end, and the
/// loser counts as a timeout of its provider.
#[test]
fn a_stream_without_its_first_token_is_hedged_when_its_fallback_must_start() {
    for (deadline_s, after_ms) in [(3, 2_000), (4, 2_000), (6, 3_000), (12, 6_000)] {
        let mut r = router(&["a", "b"], priority);
        let now = Instant::ZERO;
        let mut meta = plain(deadline_s);
        meta.stream = true;
        let mut call = r.begin(meta, now);
        let Decision::Send(hung) = r.next_attempt(&mut call, now) else {
            panic!("no attempt");
        };
        assert_eq!(hung.provider.index(), 0);
        let Decision::Hedge { at } = r.next_attempt(&mut call, now) else {
            panic!("no fallback hedge with a {deadline_s} s deadline");
        };
        assert_eq!(at, now + Duration::from_millis(after_ms), "{deadline_s} s");
        let Decision::Send(hedge) = r.next_attempt(&mut call, at) else {
            panic!("no hedge");
        };
        assert_eq!(hedge.provider.index(), 1);
        assert!(hedge.is_hedge);
        // b's first token comes first: a is cancelled then, while b's stream still flows.
        let first_token = at + Duration::from_millis(300);
        let recorded = r.record(&mut call, hung, Outcome::Cancelled, first_token);
        assert!(
            matches!(
                recorded,
                Outcome::Failure {
                    class: ErrorClass::Timeout,
                    ..
                }
            ),
            "{deadline_s} s: {recorded:?}"
        );
        let done = first_token + Duration::from_millis(500);
        let streamed = Outcome::Success {
            latency: Duration::from_millis(800),
            first_token: Some(Duration::from_millis(300)),
            usage: Usage {
                input_tokens: 900,
                output_tokens: 40,
            },
        };
        r.record(&mut call, hedge, streamed, done);
        assert!(matches!(
            r.next_attempt(&mut call, done),
            Decision::Done { .. }
        ));
    }
}

/// A stream with nothing to fail over to keeps its whole time: no hedge.
#[test]
fn a_stream_with_no_fallback_is_not_hedged() {
    let mut r = router(&["a"], priority);
    let mut meta = plain(4);
    meta.stream = true;
    let mut call = r.begin(meta, Instant::ZERO);
    let Decision::Send(_) = r.next_attempt(&mut call, Instant::ZERO) else {
        panic!("no attempt");
    };
    assert_eq!(r.next_attempt(&mut call, Instant::ZERO), Decision::Pending);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Whatever the provider taught and whatever the deadline: the limit is never above the
    /// configured one, and never below twice the provider's longest answer at its fastest rate
    /// (a healthy answer is not cut to make room for a fallback).
    #[test]
    fn never_longer_than_configured_never_shorter_than_a_healthy_answer(
        answers in 1u64..40,
        ms in 200u64..20_000,
        tokens in 32u64..2_000,
        deadline_s in 1u64..120,
        fallback in any::<bool>(),
    ) {
        let names: &[&str] = if fallback { &["a", "b"] } else { &["a"] };
        let mut r = router(names, priority);
        let now = teach(&mut r, answers, ms, tokens);
        let limit = headers_limit(&mut r, plain(deadline_s), now);
        let configured = Duration::from_millis(35_600);
        prop_assert!(limit <= configured, "{limit:?}");
        // 256 tokens of evidence make the speed known (it decays a little over the lesson).
        if answers * tokens >= 300 {
            let healthy = Duration::from_millis(ms) * 2;
            let expected_floor = healthy.min(configured);
            // The lesson ends with its last answer: the longest answer's length has not decayed.
            prop_assert!(
                limit.as_secs_f64() >= expected_floor.as_secs_f64() * 0.99,
                "{limit:?} < {expected_floor:?}"
            );
        } else if answers * tokens < 200 && !fallback {
            prop_assert_eq!(limit, configured);
        }
    }
}

/// Where a healthy answer may take longer than the point the fallback needs to start (1 000-token
/// answers in 10 s: 20 s, against 15 s), the attempt is kept, and the fallback is hedged at that
/// point only if the provider shows trouble by then: a long answer of a healthy provider costs no
/// hedge (the check moves on a second at a time), a hang that trips its breaker meanwhile does.
#[test]
fn a_measured_provider_s_fallback_is_hedged_only_once_it_shows_trouble() {
    let mut r = router(&["a", "b"], priority);
    let b = ProviderId::from_index(1).unwrap();
    let now = teach(&mut r, 60, 10_000, 1_000) + Duration::from_secs(1);
    let mut call = r.begin(plain(30), now);
    let Decision::Send(long) = r.next_attempt(&mut call, now) else {
        panic!("no attempt");
    };
    assert!(long.timeouts.headers >= Duration::from_secs(29), "{long:?}");
    let due = now + Duration::from_secs(15);
    assert_eq!(r.next_attempt(&mut call, now), Decision::Hedge { at: due });
    // Healthy at 15 s: no hedge, a look again a second later.
    let again = due + Duration::from_secs(1);
    assert_eq!(
        r.next_attempt(&mut call, due),
        Decision::Hedge { at: again }
    );
    let done = now + Duration::from_millis(15_500);
    r.record(&mut call, long, answer(15_500, 1_500), done);
    assert!(matches!(
        r.next_attempt(&mut call, done),
        Decision::Done { .. }
    ));
    assert_eq!(r.stats(b).attempts, 0, "a hedge went out");

    // A hang: the call's attempt goes silent while five others fail, tripping a's breaker.
    let now = done;
    let mut call = r.begin(plain(30), now);
    let Decision::Send(stuck) = r.next_attempt(&mut call, now) else {
        panic!("no attempt");
    };
    for k in 1..=5 {
        let t = now + Duration::from_secs(k);
        let mut other = r.begin(plain(30), t);
        let Decision::Send(a) = r.next_attempt(&mut other, t) else {
            panic!("no attempt");
        };
        r.record(&mut other, a, fail(ErrorClass::Timeout), t);
    }
    let due = now + Duration::from_secs(15);
    assert_eq!(r.next_attempt(&mut call, now), Decision::Hedge { at: due });
    let Decision::Send(hedge) = r.next_attempt(&mut call, due) else {
        panic!("no hedge for a provider in trouble");
    };
    assert!(hedge.provider == b && hedge.is_hedge);
    let answered = due + Duration::from_secs(5);
    r.record(&mut call, hedge, answer(5_000, 300), answered);
    r.record(&mut call, stuck, Outcome::Cancelled, answered);
}

/// A provider that slows down all at once (a brownout's onset) shows no trouble until its slowed
/// calls time out: its attempt is still kept past the point its fallback needed, but once it has
/// outlasted a healthy answer there (twice its longest recent one: 20 s), the fallback is hedged
/// anyway, while the call has time left for it.
#[test]
fn a_measured_provider_s_fallback_is_hedged_once_its_attempt_outlasts_a_healthy_answer() {
    let mut r = router(&["a", "b"], priority);
    let b = ProviderId::from_index(1).unwrap();
    let now = teach(&mut r, 60, 10_000, 1_000) + Duration::from_secs(1);
    let mut call = r.begin(plain(30), now);
    let Decision::Send(slowed) = r.next_attempt(&mut call, now) else {
        panic!("no attempt");
    };
    let mut t = now;
    let hedge = loop {
        match r.next_attempt(&mut call, t) {
            Decision::Hedge { at } if at > t => t = at,
            Decision::Send(hedge) => break hedge,
            other => panic!("at {:?}: {other:?}", t.saturating_since(now)),
        }
    };
    let after = t.saturating_since(now);
    assert!(
        after > Duration::from_secs(19) && after <= Duration::from_secs(20),
        "hedged after {after:?}"
    );
    assert!(hedge.provider == b && hedge.is_hedge);
    let answered = t + Duration::from_secs(5);
    r.record(&mut call, hedge, answer(5_000, 300), answered);
    r.record(&mut call, slowed, Outcome::Cancelled, answered);
    assert_eq!(r.stats(b).successes, 1);
}

/// A provider that answers much slower than usual (its answers queue: its slowdown spills, see
/// `src/slowdown.rs`) is in trouble though its breaker has seen no failure: an attempt already in
/// its queue gets its fallback hedged at the point the fallback needs to start, not only once it
/// outlasts a healthy answer there (found on unseen worlds: a metastable retry storm with 8 s
/// deadlines failed 314 requests, 110 with this rule).
#[test]
fn a_measured_provider_s_fallback_is_hedged_on_time_once_it_answers_slower_than_usual() {
    let mut r = router(&["a", "b"], priority);
    let a = ProviderId::from_index(0).unwrap();
    let b = ProviderId::from_index(1).unwrap();
    let mut now = teach(&mut r, 120, 10_000, 1_000) + Duration::from_secs(1);
    // Half as fast for a minute: 500-token answers in 10 s. Some calls spill to b, whose answers
    // are as long as a's usual ones: it needs more time than a's healthy answer leaves, so a's
    // attempts are kept, and their fallback hedged only if a shows trouble.
    for _ in 0..100 {
        let mut call = r.begin(plain(30), now);
        let Decision::Send(sent) = r.next_attempt(&mut call, now) else {
            panic!("no attempt");
        };
        let (ms, tokens) = if sent.provider == a {
            (10_000, 500)
        } else {
            (10_000, 1_000)
        };
        r.record(
            &mut call,
            sent,
            answer(ms, tokens),
            now + Duration::from_millis(ms),
        );
        now = now + Duration::from_millis(600);
    }
    assert!(r.stats(b).attempts > 0, "the slowdown spilled nothing");
    assert_eq!(r.breaker_state(a, now), stilts_core::BreakerState::Closed);

    // A call that still goes to a (the rest of the spill goes to b and is answered there).
    let (mut call, queued) = loop {
        let mut call = r.begin(plain(30), now);
        let Decision::Send(sent) = r.next_attempt(&mut call, now) else {
            panic!("no attempt");
        };
        if sent.provider == a {
            break (call, sent);
        }
        r.record(
            &mut call,
            sent,
            answer(10_000, 1_000),
            now + Duration::from_secs(10),
        );
        now = now + Duration::from_millis(1);
    };
    let planned = r.next_attempt(&mut call, now);
    let Decision::Hedge { at: due } = planned else {
        panic!(
            "no fallback hedge planned: {planned:?} (limit {:?})",
            queued.timeouts
        );
    };
    assert!(due > now && due < now + Duration::from_secs(30), "{due:?}");
    let Decision::Send(hedge) = r.next_attempt(&mut call, due) else {
        panic!("the fallback was not hedged at its point while a answered slower than usual");
    };
    assert!(hedge.provider == b && hedge.is_hedge);
    let answered = due + Duration::from_secs(3);
    r.record(&mut call, hedge, answer(3_000, 300), answered);
    r.record(&mut call, queued, Outcome::Cancelled, answered);
}

/// A fallback hedge the retry budget refuses when it is due (an idle fallback takes one free
/// attempt at a time until it answers, and the budget is spent) is looked at again a second
/// later, while the call has time, instead of leaving the call to its stuck attempt: at a spike's
/// onset the fallback vouches for more within seconds (found on unseen worlds: a metastable retry
/// storm with 8 s deadlines lost its onset's queued calls to the deadline).
#[test]
fn a_fallback_hedge_the_budget_refuses_is_looked_at_again_while_there_is_time() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.budget.ratio = Some(0.0);
        c.budget.min_per_second = Some(0.0);
    });
    let b = ProviderId::from_index(1).unwrap();
    let now = Instant::ZERO;
    // Two calls on a cold a: both are due to hedge to b at half the time left, 5 s.
    let mut first = r.begin(plain(10), now);
    let mut second = r.begin(plain(10), now);
    let Decision::Send(first_a) = r.next_attempt(&mut first, now) else {
        panic!("no attempt");
    };
    let Decision::Send(second_a) = r.next_attempt(&mut second, now) else {
        panic!("no attempt");
    };
    let due = now + Duration::from_secs(5);
    assert_eq!(r.next_attempt(&mut first, now), Decision::Hedge { at: due });
    assert_eq!(
        r.next_attempt(&mut second, now),
        Decision::Hedge { at: due }
    );
    // b is idle: the first hedge is free; the second would need the budget, which has nothing.
    let Decision::Send(first_b) = r.next_attempt(&mut first, due) else {
        panic!("the first hedge did not go out");
    };
    assert!(first_b.provider == b && first_b.is_hedge);
    let again = due + Duration::from_secs(1);
    assert_eq!(
        r.next_attempt(&mut second, due),
        Decision::Hedge { at: again },
        "a refused fallback hedge is not looked at again"
    );
    // b answers the first call by then, and vouches for the second hedge.
    let answered = due + Duration::from_millis(800);
    r.record(&mut first, first_b, answer(800, 100), answered);
    r.record(&mut first, first_a, Outcome::Cancelled, answered);
    let Decision::Send(second_b) = r.next_attempt(&mut second, again) else {
        panic!("the second hedge did not go out once b answered");
    };
    assert!(second_b.provider == b && second_b.is_hedge);
    let done = again + Duration::from_millis(800);
    r.record(&mut second, second_b, answer(800, 100), done);
    r.record(&mut second, second_a, Outcome::Cancelled, done);
    assert!(matches!(
        r.next_attempt(&mut second, done),
        Decision::Done { .. }
    ));
    assert_eq!(r.stats(b).successes, 2);
}
