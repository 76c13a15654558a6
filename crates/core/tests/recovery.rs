//! Breakers, probes and recovery over whole calls: an open breaker steers traffic away and probes
//! after its open time, a half-open probe is hedged at once and still decides the breaker, a
//! provider that comes back gets traffic within 15 s, and with every breaker open a call still goes
//! to the provider that answers most (panic routing).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

mod common;

use common::*;
use std::time::Duration;
use stilts_core::{
    BreakerState, Decision, ErrorClass, GiveUpReason, Instant, Outcome, RequestMeta,
};

#[test]
fn an_open_breaker_sends_traffic_elsewhere_and_probes_after_the_open_time() {
    let mut r = router(&["a", "b"], priority);
    let a = id(&r, "a");
    let mut now = Instant::ZERO;
    for _ in 0..5 {
        let t = run_call(&mut r, now, |name, _| match name {
            "a" => fail(ErrorClass::Server),
            _ => ok(10),
        });
        now = t.end_at;
    }
    assert!(matches!(r.breaker_state(a, now), BreakerState::Open { .. }));
    let t = run_call(&mut r, now, |_, _| ok(10));
    assert_eq!(t.sent, ["b"]);
    // 5 s later a is half-open and gets a probe.
    let t = run_call(&mut r, now + Duration::from_secs(5), |_, _| ok(10));
    assert_eq!(t.sent, ["a"]);
}

/// A primary down for 60 s gets traffic back within 15 s of its recovery at the defaults, even when
/// its last probe failed just before: the recovery instant is swept across a whole probe period.
#[test]
fn a_recovered_primary_gets_traffic_back_within_15_s() {
    for offset_ms in (0..12_000).step_by(500) {
        let mut r = router(&["a", "b"], priority);
        let down_from = Instant::from_secs(10);
        let up_at = Instant::from_secs(70) + Duration::from_millis(offset_ms);
        let mut now = Instant::ZERO;
        let mut back_at = None;
        // A request every 100 ms.
        while now < up_at + Duration::from_secs(30) {
            let down = now >= down_from && now < up_at;
            let t = run_call(&mut r, now, |p, _| {
                if p == "a" && down {
                    fail(ErrorClass::Server)
                } else {
                    ok(10)
                }
            });
            if now >= up_at && t.end.as_deref() == Ok("a") && back_at.is_none() {
                back_at = Some(now);
            }
            now = now + Duration::from_millis(100);
        }
        let back = back_at.expect("the primary never got traffic back");
        let after = back.saturating_since(up_at);
        assert!(
            after <= Duration::from_secs(15),
            "recovered at +{offset_ms} ms: traffic back only {after:?} later"
        );
    }
}

/// Trips `a`'s breaker (five server errors) and returns when it tripped; it is open for 4 to 5 s
/// (the open time is jittered).
fn trip_a_open(r: &mut stilts_core::Router) -> Instant {
    let mut now = Instant::ZERO;
    for _ in 0..5 {
        let t = run_call(r, now, |name, _| match name {
            "a" => fail(ErrorClass::Server),
            _ => ok(10),
        });
        now = t.end_at;
    }
    let a = id(r, "a");
    assert!(matches!(r.breaker_state(a, now), BreakerState::Open { .. }));
    now
}

/// Trips `a`'s breaker (five server errors) and returns when it is half-open.
fn trip_a(r: &mut stilts_core::Router) -> Instant {
    let a = id(r, "a");
    let later = trip_a_open(r) + Duration::from_secs(5);
    assert!(matches!(
        r.breaker_state(a, later),
        BreakerState::HalfOpen { .. }
    ));
    later
}

/// A user's request that probes a half-open provider is hedged at once to the next one, at no
/// cost to the retry budget: the user is answered either way. The probe runs to its end after the
/// call and its outcome decides the breaker.
#[test]
fn a_half_open_probe_is_hedged_at_once_and_still_decides_the_breaker() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        // No budget at all: the hedge replaces the failover the user would get anyway.
        c.budget.ratio = Some(0.0);
        c.budget.min_per_second = Some(0.0);
    });
    let (a, b) = (id(&r, "a"), id(&r, "b"));
    let mut now = trip_a(&mut r);
    for probe_number in 1..=2 {
        let mut call = r.begin(RequestMeta::default(), now);
        let Decision::Send(probe) = r.next_attempt(&mut call, now) else {
            panic!("no probe")
        };
        assert_eq!(probe.provider, a);
        assert!(probe.is_probe() && !probe.is_hedge);
        // At the same instant: the hedge.
        let Decision::Send(hedge) = r.next_attempt(&mut call, now) else {
            panic!("the probe was not hedged at once")
        };
        assert_eq!(hedge.provider, b);
        assert!(hedge.is_hedge && !hedge.is_probe());
        assert_eq!(r.next_attempt(&mut call, now), Decision::Pending);
        let answered = now + Duration::from_millis(300);
        r.record(&mut call, hedge, ok(300), answered);
        assert_eq!(
            r.next_attempt(&mut call, answered),
            Decision::Done { provider: Some(b) }
        );
        // The probe is not cancelled: it ends later, after the call, and counts.
        now = now + Duration::from_secs(2);
        r.record(&mut call, probe, ok(2_000), now);
        let state = r.breaker_state(a, now);
        if probe_number == 1 {
            assert!(matches!(state, BreakerState::HalfOpen { .. }), "{state:?}");
        } else {
            assert_eq!(state, BreakerState::Closed);
        }
    }
    // Closed: a plain call again, no hedge.
    let mut call = r.begin(RequestMeta::default(), now);
    let Decision::Send(plain) = r.next_attempt(&mut call, now) else {
        panic!()
    };
    assert!(plain.provider == a && !plain.is_probe());
    assert_eq!(r.next_attempt(&mut call, now), Decision::Pending);
    r.record(&mut call, plain, ok(10), now);
    assert!(r.status(now).iter().all(|s| s.in_flight == 0));
}

#[test]
fn a_probe_that_fails_after_its_call_ended_reopens_the_breaker() {
    let mut r = router(&["a", "b"], priority);
    let a = id(&r, "a");
    let now = trip_a(&mut r);
    let mut call = r.begin(RequestMeta::default(), now);
    let Decision::Send(probe) = r.next_attempt(&mut call, now) else {
        panic!()
    };
    let Decision::Send(hedge) = r.next_attempt(&mut call, now) else {
        panic!()
    };
    r.record(&mut call, hedge, ok(100), now + Duration::from_millis(100));
    assert!(matches!(
        r.next_attempt(&mut call, now + Duration::from_millis(100)),
        Decision::Done { .. }
    ));
    let later = now + Duration::from_secs(10);
    r.record(
        &mut call,
        probe,
        Outcome::Failure {
            class: ErrorClass::Timeout,
            latency: Duration::from_secs(10),
            retry_after: None,
        },
        later,
    );
    assert!(matches!(
        r.breaker_state(a, later),
        BreakerState::Open { .. }
    ));
}

/// When the probe's hedge fails, the user does not wait out the probe: the call goes on (a third
/// provider here), and with nothing else left it waits for the probe rather than giving up.
#[test]
fn a_failed_probe_hedge_does_not_leave_the_user_waiting_on_the_probe() {
    let mut r = router(&["a", "b", "c"], priority);
    let (a, b, c) = (id(&r, "a"), id(&r, "b"), id(&r, "c"));
    let now = trip_a(&mut r);
    let mut call = r.begin(RequestMeta::default(), now);
    let Decision::Send(probe) = r.next_attempt(&mut call, now) else {
        panic!()
    };
    let Decision::Send(hedge) = r.next_attempt(&mut call, now) else {
        panic!()
    };
    assert_eq!((probe.provider, hedge.provider), (a, b));
    let later = now + Duration::from_millis(50);
    r.record(&mut call, hedge, fail(ErrorClass::Server), later);
    // The call goes on: b's quick retry after a short backoff, then c; never a second attempt on
    // the probed provider. With b and c failed and the probe still out, it waits for the probe
    // rather than giving up.
    let mut t = later;
    let mut sent = Vec::new();
    loop {
        match r.next_attempt(&mut call, t) {
            Decision::Wait { until } => t = until,
            Decision::Send(next) => {
                assert_ne!(next.provider, a, "a second attempt on the probed provider");
                sent.push(next.provider);
                r.record(&mut call, next, fail(ErrorClass::Server), t);
            }
            Decision::Pending => break,
            other => panic!("{other:?} with the probe still out"),
        }
    }
    assert!(sent.contains(&c), "{sent:?}");
    assert!(
        t < now + Duration::from_secs(5),
        "the call waited on the probe"
    );
    r.record(&mut call, probe, ok(3_000), t + Duration::from_secs(1));
    assert_eq!(
        r.next_attempt(&mut call, t + Duration::from_secs(1)),
        Decision::Done { provider: Some(a) }
    );
}

/// A probe detached from its call (the call's answer came from elsewhere) no longer counts as in
/// flight for the call: a later failure of the winner (a stream broken mid-answer) is routed on,
/// not left waiting; the probe is recorded on the copy `detach` returned.
#[test]
fn a_detached_probe_leaves_its_call_free_to_go_on() {
    let mut r = router(&["a", "b", "c"], priority);
    let now = trip_a(&mut r);
    let mut call = r.begin(RequestMeta::default(), now);
    let Decision::Send(probe) = r.next_attempt(&mut call, now) else {
        panic!()
    };
    let Decision::Send(hedge) = r.next_attempt(&mut call, now) else {
        panic!()
    };
    let mut detached = call.detach(1);
    assert_eq!(call.in_flight(), 1);
    let t = now + Duration::from_secs(2);
    r.record(&mut call, hedge, fail(ErrorClass::Server), t);
    assert!(
        matches!(
            r.next_attempt(&mut call, t),
            Decision::Send(_) | Decision::Wait { .. }
        ),
        "the call waits on a probe it handed over"
    );
    r.record(&mut detached, probe, ok(3_000), t);
    assert_eq!(r.stats(probe.provider).successes, 1);
}

#[test]
fn probe_hedging_can_be_turned_off() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.hedge.probes = Some(false);
    });
    let now = trip_a(&mut r);
    let mut call = r.begin(RequestMeta::default(), now);
    let Decision::Send(probe) = r.next_attempt(&mut call, now) else {
        panic!()
    };
    assert!(probe.is_probe());
    assert_eq!(r.next_attempt(&mut call, now), Decision::Pending);
    r.record(&mut call, probe, ok(10), now);
}

#[test]
fn every_provider_down_gives_up_without_hammering() {
    let mut r = router(&["a", "b"], |_| {});
    let mut now = Instant::ZERO;
    let mut attempts = 0;
    let mut last = None;
    for _ in 0..100 {
        let t = run_call(&mut r, now, |_, _| fail(ErrorClass::Server));
        attempts += t.sent.len();
        last = Some(t.end);
        now = now + Duration::from_millis(20);
    }
    // Both breakers open after a handful of failures; later requests fail fast with no attempt.
    assert!(attempts < 30, "{attempts}");
    assert_eq!(
        last.unwrap().unwrap_err().reason,
        GiveUpReason::NoHealthyProvider
    );
}

/// Panic routing: when every provider is kept out by its breaker alone, the call goes to the
/// least bad one that still answers some calls, instead of giving up without an attempt.
#[test]
fn with_every_breaker_open_a_call_goes_to_the_provider_that_still_answers() {
    let mut r = router(&["a"], |_| {});
    let a = id(&r, "a");
    // 20 single attempts, 11 failed: the 50% rate rule trips; 9 of 20 were answered.
    for k in 0..20u64 {
        let now = Instant::from_millis(k * 20);
        let mut call = r.begin(RequestMeta::default(), now);
        let Decision::Send(attempt) = r.next_attempt(&mut call, now) else {
            panic!("no attempt");
        };
        let outcome = if k % 2 == 0 || k == 19 {
            fail(ErrorClass::Server)
        } else {
            ok(100)
        };
        r.record(&mut call, attempt, outcome, now);
    }
    assert!(matches!(
        r.status(Instant::from_millis(500))[0].breaker,
        stilts_core::BreakerState::Open { .. }
    ));
    let t = run_call(&mut r, Instant::from_millis(500), |_, _| ok(100));
    assert_eq!(t.end, Ok("a".to_owned()), "{t:?}");
    assert_eq!(r.stats(a).panic_sends, 1);
    // In panic the call is routed as if the breaker were closed: a failure is retried (with
    // backoff, from the budget), and every such attempt is counted.
    let t = run_call(&mut r, Instant::from_millis(600), |_, n| {
        if n == 1 {
            fail(ErrorClass::Server)
        } else {
            ok(100)
        }
    });
    assert_eq!(t.sent, ["a", "a"], "{t:?}");
    assert_eq!(t.end, Ok("a".to_owned()));
    assert_eq!(r.stats(a).panic_sends, 3);
    assert!(
        matches!(
            r.status(t.end_at)[0].breaker,
            stilts_core::BreakerState::Open { .. }
        ),
        "a panic answer is not a probe: the breaker stays open"
    );
}

#[test]
fn no_panic_traffic_to_a_provider_with_no_recent_answer_or_a_cooldown() {
    // Only failures in the window: a panic attempt would only add a wait.
    let mut r = router(&["a"], |_| {});
    for k in 0..5u64 {
        run_call(&mut r, Instant::from_millis(k), |_, _| {
            fail(ErrorClass::Server)
        });
    }
    let t = run_call(&mut r, Instant::from_millis(100), |_, _| ok(100));
    assert!(t.sent.is_empty() && t.end.is_err(), "{t:?}");
    assert_eq!(r.stats(id(&r, "a")).panic_sends, 0);
}

/// A call that already failed does not spend its next attempt probing a half-open provider that
/// is likely still down: it goes to a healthy one, and the probe rides on a fresh call, which has
/// the other providers left to hedge it to.
#[test]
fn a_retry_goes_to_a_healthy_provider_not_to_a_half_open_probe() {
    let mut r = router(&["a", "b", "c"], priority);
    let (a, b) = (id(&r, "a"), id(&r, "b"));
    let tripped = trip_a_open(&mut r);
    let before = tripped + Duration::from_secs(1);
    let half_open = tripped + Duration::from_secs(5);
    assert!(matches!(
        r.breaker_state(a, before),
        BreakerState::Open { .. }
    ));
    let mut call = r.begin(RequestMeta::default(), before);
    let Decision::Send(first) = r.next_attempt(&mut call, before) else {
        panic!("no attempt")
    };
    assert_eq!(first.provider, b);
    r.record(&mut call, first, fail(ErrorClass::Server), half_open);
    // b's isolated error earns it a quick retry (after a short backoff); a is not probed.
    let mut decision = r.next_attempt(&mut call, half_open);
    if let Decision::Wait { until } = decision {
        decision = r.next_attempt(&mut call, until);
    }
    let Decision::Send(retry) = decision else {
        panic!("no retry: {decision:?}")
    };
    assert!(retry.provider == b && !retry.is_probe(), "{retry:?}");
    // A fresh call probes a.
    let mut fresh = r.begin(RequestMeta::default(), half_open);
    let Decision::Send(probe) = r.next_attempt(&mut fresh, half_open) else {
        panic!("no probe")
    };
    assert!(probe.provider == a && probe.is_probe());
}
