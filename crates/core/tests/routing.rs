//! Behaviour of the router over whole calls: failover order, error classes, cool-downs, budgets,
//! hedging and reloads, each driven step by step in virtual time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

mod common;

use common::*;
use std::time::Duration;
use stilts_core::{
    BreakerState, Decision, ErrorClass, GiveUpReason, Instant, Outcome, PolicyKind, RequestMeta,
    RouterConfig,
};

#[test]
fn fails_over_to_an_untried_provider_before_retrying() {
    let mut r = router(&["a", "b", "c"], priority);
    let t = run_call(&mut r, Instant::ZERO, |name, _| match name {
        "c" => ok(100),
        _ => fail(ErrorClass::Server),
    });
    assert_eq!(t.sent, ["a", "b", "c"]);
    assert!(
        t.waited.is_empty(),
        "failover must not sleep: {:?}",
        t.waited
    );
    assert_eq!(t.end, Ok("c".to_string()));
}

#[test]
fn retries_the_same_provider_only_after_a_jittered_backoff() {
    let mut r = router(&["a"], |_| {});
    let t = run_call(&mut r, Instant::ZERO, |_, n| {
        if n < 3 {
            fail(ErrorClass::Server)
        } else {
            ok(100)
        }
    });
    assert_eq!(t.sent, ["a", "a", "a"]);
    assert_eq!(t.waited.len(), 2);
    // Full jitter: U(0, 100 ms), then U(0, 200 ms).
    assert!(t.waited[0] <= Duration::from_millis(100), "{:?}", t.waited);
    assert!(t.waited[1] <= Duration::from_millis(200), "{:?}", t.waited);
    assert_eq!(t.end, Ok("a".to_string()));
}

#[test]
fn a_bad_request_is_returned_never_retried() {
    let mut r = router(&["a", "b"], priority);
    let t = run_call(&mut r, Instant::ZERO, |_, _| fail(ErrorClass::BadRequest));
    assert_eq!(t.sent, ["a"]);
    let why = t.end.unwrap_err();
    assert_eq!(
        why.reason,
        GiveUpReason::NotRetryable(ErrorClass::BadRequest)
    );
    // The client's mistake says nothing about the provider.
    assert_eq!(r.breaker_state(id(&r, "a"), t.end_at), BreakerState::Closed);
}

#[test]
fn content_filter_is_returned_unless_failover_is_configured() {
    let mut r = router(&["a", "b"], priority);
    let t = run_call(&mut r, Instant::ZERO, |_, _| {
        fail(ErrorClass::ContentFilter)
    });
    assert_eq!(t.sent, ["a"]);
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.retry.content_filter_failover = Some(true);
    });
    let t = run_call(&mut r, Instant::ZERO, |name, _| match name {
        "a" => fail(ErrorClass::ContentFilter),
        _ => ok(10),
    });
    assert_eq!(t.sent, ["a", "b"]);
}

#[test]
fn context_length_goes_to_a_larger_window_or_is_returned() {
    let mut r = router(&["small", "also-small", "large"], |c| {
        priority(c);
        c.providers[0].context_window = Some(8_000);
        c.providers[1].context_window = Some(8_000);
        c.providers[2].context_window = Some(128_000);
    });
    let t = run_call(&mut r, Instant::ZERO, |name, _| match name {
        "large" => ok(10),
        _ => fail(ErrorClass::ContextLength),
    });
    // Not resent unchanged to another 8k model.
    assert_eq!(t.sent, ["small", "large"]);

    let mut r = router(&["small", "also-small"], |c| {
        priority(c);
        c.providers[0].context_window = Some(8_000);
        c.providers[1].context_window = Some(8_000);
    });
    let t = run_call(&mut r, Instant::ZERO, |_, _| {
        fail(ErrorClass::ContextLength)
    });
    assert_eq!(t.sent, ["small"]);
    assert_eq!(
        t.end.unwrap_err().reason,
        GiveUpReason::NotRetryable(ErrorClass::ContextLength)
    );
}

#[test]
fn requests_that_fit_no_window_are_refused_up_front() {
    let mut r = router(&["a"], |c| c.providers[0].context_window = Some(1_000));
    let mut call = r.begin(
        RequestMeta {
            input_tokens: 5_000,
            ..RequestMeta::default()
        },
        Instant::ZERO,
    );
    match r.next_attempt(&mut call, Instant::ZERO) {
        Decision::GiveUp(why) => assert_eq!(why.reason, GiveUpReason::ContextTooLong),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_429_cools_the_provider_down_without_tripping_its_breaker() {
    let mut r = router(&["a", "b"], |c| c.breaker.consecutive_failures = Some(1));
    let a = id(&r, "a");
    // Force the first attempt to a, then 429 it.
    let mut now = Instant::ZERO;
    for _ in 0..20 {
        let t = run_call(&mut r, now, |name, _| match name {
            "a" => rate_limited(30_000),
            _ => ok(10),
        });
        now = t.end_at + Duration::from_millis(1);
        assert_eq!(t.end, Ok("b".to_string()));
    }
    assert_eq!(r.breaker_state(a, now), BreakerState::Closed);
    // While a cools down, every request goes straight to b.
    assert_eq!(r.stats(a).failures[ErrorClass::RateLimited.index()], 1);
}

#[test]
fn waits_out_a_short_retry_after_when_only_a_worse_tier_remains() {
    let mut r = router(&["primary", "local"], |c| {
        priority(c);
    });
    let t = run_call(&mut r, Instant::ZERO, |name, n| match (name, n) {
        ("primary", 1) => rate_limited(1_500),
        _ => ok(10),
    });
    assert_eq!(t.sent, ["primary", "primary"]);
    assert_eq!(t.waited, [Duration::from_millis(1_500)]);

    // A Retry-After beyond the 3 s default: fall to the fallback at once.
    let mut r = router(&["primary", "local"], priority);
    let t = run_call(&mut r, Instant::ZERO, |name, _| match name {
        "primary" => rate_limited(10_000),
        _ => ok(10),
    });
    assert_eq!(t.sent, ["primary", "local"]);
    assert!(t.waited.is_empty());
}

fn refused() -> Outcome {
    Outcome::Failure {
        class: ErrorClass::RateLimited,
        latency: Duration::from_millis(5),
        retry_after: None,
    }
}

#[test]
fn an_isolated_429_without_retry_after_cools_nothing_down_a_repeated_one_does() {
    let mut r = router(&["primary", "fallback"], priority);
    let primary = id(&r, "primary");
    for k in 0..30u64 {
        let t = run_call(&mut r, Instant::from_secs(k), |_, _| ok(10));
        assert_eq!(t.end, Ok("primary".to_string()));
    }
    // One 429 without Retry-After from a provider that answers nearly every call: it is not
    // cooling down, so the call retries it once (the rule for a short Retry-After) and the next
    // call goes to it as usual.
    let t = run_call(&mut r, Instant::from_secs(40), |name, n| match (name, n) {
        ("primary", 1) => refused(),
        _ => ok(10),
    });
    assert_eq!(t.sent, ["primary", "primary"]);
    // No cool-down to wait out: at most the retry's short backoff (a cool-down would be 1 s).
    assert!(
        t.waited.iter().all(|w| *w < Duration::from_millis(200)),
        "{t:?}"
    );
    let t = run_call(
        &mut r,
        Instant::from_secs(40) + Duration::from_millis(300),
        |_, _| ok(10),
    );
    assert_eq!(
        t.sent,
        ["primary"],
        "the next call goes to the primary at once"
    );
    // A second 429 soon after the first: the refusals repeat (the share reaches 10%), so the
    // provider cools down.
    let t = run_call(&mut r, Instant::from_secs(42), |name, _| match name {
        "primary" => refused(),
        _ => ok(10),
    });
    assert_eq!(t.sent, ["primary", "primary", "fallback"]);
    assert_eq!(t.end, Ok("fallback".to_string()));
    assert!(r.status(t.end_at)[primary.index()].cooldown.is_some());
    let t = run_call(&mut r, t.end_at, |_, _| ok(10));
    assert_eq!(t.sent, ["fallback"], "the cooling primary is skipped");
}

#[test]
fn a_provider_refusing_most_calls_is_not_waited_for() {
    let mut r = router(&["primary", "fallback"], priority);
    // It answered its first calls; a short Retry-After is waited out.
    let t = run_call(&mut r, Instant::ZERO, |name, n| match (name, n) {
        ("primary", 1) => rate_limited(1_500),
        _ => ok(10),
    });
    assert_eq!(t.sent, ["primary", "primary"]);
    // Now it refuses seven calls in ten: a wait would most likely end in another 429.
    let mut now = Instant::from_secs(10);
    for k in 0..40u32 {
        let t = run_call(&mut r, now, |name, _| match name {
            "primary" if k % 10 < 7 => rate_limited(1_500),
            _ => ok(10),
        });
        now = t.end_at + Duration::from_secs(2);
    }
    let t = run_call(&mut r, now, |name, _| match name {
        "primary" => rate_limited(1_500),
        _ => ok(10),
    });
    assert_eq!(t.sent, ["primary", "fallback"]);
    assert!(t.waited.is_empty(), "{t:?}");
}

#[test]
fn a_retry_goes_to_the_tried_provider_that_still_answers_most_calls() {
    // Equal peers; `a` fails nine calls in ten, `b` nearly never.
    let mut r = router(&["a", "b"], |c| {
        c.max_attempts = Some(3);
        c.breaker.failure_rate = Some(0.99);
        c.breaker.consecutive_failures = Some(1_000);
    });
    let mut now = Instant::ZERO;
    for k in 0..60u32 {
        let t = run_call(&mut r, now, |name, _| match name {
            "a" if k % 10 != 0 => fail(ErrorClass::Server),
            _ => ok(10),
        });
        now = t.end_at + Duration::from_millis(100);
    }
    // Both fail this call once; the retry goes to `b` every time.
    for _ in 0..20 {
        let t = run_call(&mut r, now, |name, n| match (name, n) {
            (_, 1 | 2) => fail(ErrorClass::Server),
            _ => ok(10),
        });
        assert_eq!(t.sent.len(), 3, "{t:?}");
        assert_eq!(t.sent[2], "b", "{t:?}");
        now = t.end_at + Duration::from_millis(100);
    }
}

#[test]
fn fails_over_at_once_to_an_equal_peer_after_a_429() {
    // Weighted: both providers are in tier 0, so they are equal peers.
    let mut r = router(&["a", "b"], |_| {});
    for i in 0..10 {
        let t = run_call(&mut r, Instant::from_secs(i * 100), |name, _| match name {
            "a" => rate_limited(1_000),
            _ => ok(10),
        });
        assert!(t.waited.is_empty(), "{t:?}");
        assert_eq!(t.end, Ok("b".to_string()));
    }
}

#[test]
fn every_provider_rate_limited_gives_429_after_a_short_wait_at_most() {
    let mut r = router(&["a", "b"], |_| {});
    let t = run_call(&mut r, Instant::ZERO, |_, _| rate_limited(60_000));
    assert_eq!(t.sent.len(), 2);
    assert_eq!(t.end.unwrap_err().reason, GiveUpReason::AllRateLimited);
}

#[test]
fn a_silent_provider_is_retried_last() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.max_attempts = Some(4);
    });
    let t = run_call(&mut r, Instant::ZERO, |name, n| match (name, n) {
        ("a", _) => fail(ErrorClass::Timeout),
        ("b", 2) => fail(ErrorClass::Server),
        _ => ok(10),
    });
    // a timed out, b failed loudly: b is retried before a.
    assert_eq!(t.sent, ["a", "b", "b"]);
}

#[test]
fn auth_failures_cool_the_provider_down_for_long() {
    let mut r = router(&["a", "b"], priority);
    let t = run_call(&mut r, Instant::ZERO, |name, _| match name {
        "a" => fail(ErrorClass::Auth),
        _ => ok(10),
    });
    assert_eq!(t.sent, ["a", "b"]);
    // Four minutes later a is still skipped; after the 5 minute cool-down it is used again.
    let t = run_call(&mut r, Instant::from_secs(240), |_, _| ok(10));
    assert_eq!(t.sent, ["b"]);
    let t = run_call(&mut r, Instant::from_secs(301), |_, _| ok(10));
    assert_eq!(t.sent, ["a"]);
}

#[test]
fn the_deadline_bounds_every_retry() {
    let mut r = router(&["a"], |c| {
        c.deadline_ms = Some(1_000);
        c.max_attempts = Some(100);
        c.budget.min_per_second = Some(1_000.0);
        c.breaker.consecutive_failures = Some(0);
    });
    let t = run_call(&mut r, Instant::ZERO, |_, _| fail(ErrorClass::Server));
    assert_eq!(t.end.unwrap_err().reason, GiveUpReason::Deadline);
    assert!(t.end_at <= Instant::from_millis(1_000));
}

#[test]
fn attempts_are_capped_by_max_attempts() {
    let mut r = router(&["a", "b"], |c| {
        c.max_attempts = Some(3);
        c.breaker.consecutive_failures = Some(0);
    });
    let t = run_call(&mut r, Instant::ZERO, |_, _| fail(ErrorClass::Server));
    assert_eq!(t.sent.len(), 3);
    assert_eq!(t.end.unwrap_err().reason, GiveUpReason::AttemptsExhausted);
}

#[test]
fn the_retry_budget_stops_a_retry_storm() {
    let mut r = router(&["a", "b"], |c| {
        c.budget.ratio = Some(0.1);
        c.budget.min_per_second = Some(0.0);
        c.breaker.consecutive_failures = Some(0);
        c.breaker.minimum_calls = Some(1_000_000);
    });
    let mut now = Instant::ZERO;
    let mut attempts = 0;
    for _ in 0..1_000 {
        let t = run_call(&mut r, now, |_, _| fail(ErrorClass::Server));
        attempts += t.sent.len();
        now = now + Duration::from_millis(5);
    }
    // 1 000 requests in 5 s, window 10 s: at most 100 retries, plus the first failover, to `b`
    // while it had not failed yet (free: a healthy provider with headroom).
    assert!(attempts <= 1_101, "{attempts} attempts");
    assert!(attempts >= 1_090, "the budget should be used: {attempts}");
}

#[test]
fn the_retry_budget_never_keeps_a_failover_from_an_idle_healthy_fallback() {
    // No budget at all: no retry or failover may be charged.
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.budget.ratio = Some(0.0);
        c.budget.min_per_second = Some(0.0);
        c.breaker.consecutive_failures = Some(0);
        c.breaker.minimum_calls = Some(1_000_000);
    });
    let mut now = Instant::ZERO;
    for _ in 0..200 {
        // The primary fails every call; the healthy fallback has headroom: every call fails over.
        let t = run_call(&mut r, now, |p, _| {
            if p == "a" {
                fail(ErrorClass::Server)
            } else {
                ok(10)
            }
        });
        assert_eq!(t.sent, ["a", "b"]);
        assert_eq!(t.end.as_deref(), Ok("b"));
        now = now + Duration::from_millis(50);
    }
    // Once the fallback fails too (more than 10% of its recent calls), failovers to it are extra
    // load on a struggling provider again: charged, and refused without budget.
    // Its window still holds 200 successes: the 23rd failure takes it past 10%.
    let mut refused = Vec::new();
    for _ in 0..100 {
        let t = run_call(&mut r, now, |_, _| fail(ErrorClass::Server));
        refused.push(t.sent == ["a"]);
        if t.sent == ["a"] {
            assert_eq!(t.end.unwrap_err().reason, GiveUpReason::BudgetExhausted);
        }
        now = now + Duration::from_millis(50);
    }
    let first = refused
        .iter()
        .position(|r| *r)
        .expect("failovers are refused at last");
    assert!((20..30).contains(&first), "first refusal at call {first}");
    assert!(refused[first..].iter().all(|r| *r), "{refused:?}");
}

/// Warms `r` up: 50 calls answered by the preferred provider, so its breaker window is healthy.
fn warm(r: &mut stilts_core::Router) -> Instant {
    let mut now = Instant::ZERO;
    for _ in 0..50 {
        let t = run_call(r, now, |_, _| ok(10));
        assert_eq!(t.end.as_deref(), Ok("a"));
        now = now + Duration::from_millis(100);
    }
    now
}

/// Answers: provider `a`'s first attempt fails with `class`, everything else succeeds.
fn a_fails_once(class: ErrorClass) -> impl FnMut(&str, u32) -> Outcome {
    move |p, n| {
        if p == "a" && n == 1 {
            fail(class)
        } else {
            ok(10)
        }
    }
}

#[test]
fn a_loud_error_on_the_preferred_provider_gets_one_quick_retry_before_a_lower_tier() {
    let mut r = router(&["a", "b"], priority);
    let now = warm(&mut r);
    let t = run_call(&mut r, now, a_fails_once(ErrorClass::Server));
    assert_eq!(t.sent, ["a", "a"]);
    assert_eq!(t.end.as_deref(), Ok("a"));
    assert_eq!(
        t.waited.len(),
        1,
        "a full-jitter backoff first: {:?}",
        t.waited
    );
    assert!(t.waited[0] <= Duration::from_millis(100), "{:?}", t.waited);
    // A second error on it: the lower tier.
    let t = run_call(&mut r, t.end_at, |p, _| {
        if p == "a" {
            fail(ErrorClass::Server)
        } else {
            ok(10)
        }
    });
    assert_eq!(t.sent, ["a", "a", "b"]);
}

/// At a flap's onset the preferred provider fails twice (its quick retry too), and the lower tier
/// fails once by chance: the last attempt goes to the provider that failed the call once, not
/// back to the preferred one that failed it twice, though both still answer most of their calls.
#[test]
fn a_retry_goes_to_the_provider_that_failed_the_call_fewer_times() {
    let flap_onset = |r: &mut stilts_core::Router, now| {
        let t = run_call(r, now, |p, n| match (p, n) {
            ("a", _) => fail(ErrorClass::Server),
            ("b", 3) => fail(ErrorClass::Server),
            _ => ok(10),
        });
        assert_eq!(t.sent, ["a", "a", "b", "b"]);
        assert_eq!(t.end.as_deref(), Ok("b"));
    };
    // b has answered some failovers (a's timeouts) lately.
    let mut r = router(&["a", "b"], priority);
    let mut now = warm(&mut r);
    for _ in 0..10 {
        let t = run_call(&mut r, now, a_fails_once(ErrorClass::Timeout));
        assert_eq!(t.sent, ["a", "b"]);
        now = run_call(&mut r, t.end_at, |_, _| ok(10)).end_at;
    }
    flap_onset(&mut r, now);
    // b cold (no call of its own lately): its single failure says little of it.
    let mut r = router(&["a", "b"], priority);
    let now = warm(&mut r);
    flap_onset(&mut r, now);
}

#[test]
fn with_the_budget_spent_the_free_failover_wins_over_the_quick_retry() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.budget.ratio = Some(0.0);
        c.budget.min_per_second = Some(0.0);
    });
    let now = warm(&mut r);
    let t = run_call(&mut r, now, a_fails_once(ErrorClass::Server));
    assert_eq!(t.sent, ["a", "b"]);
    assert_eq!(t.end.as_deref(), Ok("b"));
}

#[test]
fn no_quick_retry_for_a_timeout_an_outage_equal_peers_or_when_turned_off() {
    // Turned off.
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.retry.preferred_retries = Some(0);
    });
    let now = warm(&mut r);
    assert_eq!(
        run_call(&mut r, now, a_fails_once(ErrorClass::Server)).sent,
        ["a", "b"]
    );
    // A silent failure (timeout) costs a whole wait: fail over at once.
    let mut r = router(&["a", "b"], priority);
    let now = warm(&mut r);
    let t = run_call(&mut r, now, a_fails_once(ErrorClass::Timeout));
    assert_eq!(t.sent, ["a", "b"]);
    // A provider failing more than half its recent calls is more likely to fail the retry too.
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.breaker.consecutive_failures = Some(0);
        c.breaker.minimum_calls = Some(1_000_000);
    });
    let mut now = warm(&mut r);
    for _ in 0..60 {
        let t = run_call(&mut r, now, |p, _| {
            if p == "a" {
                fail(ErrorClass::Server)
            } else {
                ok(10)
            }
        });
        now = t.end_at + Duration::from_millis(100);
    }
    assert_eq!(
        run_call(&mut r, now, a_fails_once(ErrorClass::Server)).sent,
        ["a", "b"]
    );
    // Equal peers (one tier): the other peer at once.
    let mut r = router(&["a", "b"], |c| {
        c.providers[1].weight = Some(1);
    });
    let mut now = Instant::ZERO;
    for _ in 0..50 {
        let _ = run_call(&mut r, now, |_, _| ok(10));
        now = now + Duration::from_millis(100);
    }
    for _ in 0..20 {
        let t = run_call(&mut r, now, |_, n| {
            if n == 1 {
                fail(ErrorClass::Server)
            } else {
                ok(10)
            }
        });
        assert_eq!(t.sent.len(), 2, "{:?}", t.sent);
        assert_ne!(t.sent[0], t.sent[1], "equal peers fail over: {:?}", t.sent);
        now = t.end_at + Duration::from_millis(100);
    }
}

/// A preferred provider that still answers most of its calls (a partial degradation, here a fifth
/// of them failing) gets its quick retry before a lower tier: the retry succeeds more often than
/// not, at the preferred tier's price (`openai-2025-07-09-partial-model`).
#[test]
fn a_partially_degraded_preferred_provider_still_gets_its_quick_retry() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.breaker.consecutive_failures = Some(0);
        c.breaker.minimum_calls = Some(1_000_000);
    });
    let mut now = warm(&mut r);
    for _ in 0..21 {
        let t = run_call(&mut r, now, a_fails_once(ErrorClass::Server));
        assert_eq!(t.sent, ["a", "a"]);
        assert_eq!(t.end.as_deref(), Ok("a"));
        now = t.end_at + Duration::from_millis(100);
    }
}

#[test]
fn a_retry_of_the_same_provider_is_always_charged() {
    let mut r = router(&["a"], |c| {
        c.budget.ratio = Some(0.0);
        c.budget.min_per_second = Some(0.0);
        c.breaker.consecutive_failures = Some(0);
    });
    let t = run_call(&mut r, Instant::ZERO, |_, _| fail(ErrorClass::Server));
    assert_eq!(t.sent, ["a"]);
    assert_eq!(t.end.unwrap_err().reason, GiveUpReason::BudgetExhausted);
}

#[test]
fn local_rate_limits_shift_traffic_before_the_provider_says_429() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.providers[0].requests_per_minute = Some(10);
    });
    let mut sent = Vec::new();
    for i in 0..15 {
        let t = run_call(&mut r, Instant::from_millis(i * 100), |_, _| ok(10));
        sent.extend(t.sent);
    }
    assert_eq!(sent.iter().filter(|s| *s == "a").count(), 10);
    assert_eq!(sent.iter().filter(|s| *s == "b").count(), 5);
}

#[test]
fn the_spend_limit_leaves_only_free_providers() {
    let mut r = router(&["paid", "local"], |c| {
        priority(c);
        c.providers[0].input_usd_per_mtok = Some(1_000.0);
        c.spend.limit_usd = Some(0.25);
    });
    // Each success costs 100 input tokens × $1000/M = $0.10.
    let mut sent = Vec::new();
    for i in 0..5 {
        let t = run_call(&mut r, Instant::from_secs(i), |_, _| ok(10));
        sent.extend(t.sent);
    }
    assert_eq!(sent, ["paid", "paid", "paid", "local", "local"]);
    // A new period (a day) resets the spend.
    let t = run_call(&mut r, Instant::from_secs(86_400), |_, _| ok(10));
    assert_eq!(t.sent, ["paid"]);
}

#[test]
fn cost_policy_picks_the_cheapest_that_fits() {
    let mut r = router(&["pricey", "cheap-small", "cheap"], |c| {
        c.policy = PolicyKind::Cost;
        c.providers[0].input_usd_per_mtok = Some(5.0);
        c.providers[1].input_usd_per_mtok = Some(0.1);
        c.providers[1].context_window = Some(1_000);
        c.providers[2].input_usd_per_mtok = Some(0.2);
    });
    let mut call = r.begin(
        RequestMeta {
            input_tokens: 2_000,
            ..RequestMeta::default()
        },
        Instant::ZERO,
    );
    let Decision::Send(attempt) = r.next_attempt(&mut call, Instant::ZERO) else {
        panic!("expected a send")
    };
    assert_eq!(r.provider(attempt.provider).name, "cheap");
    r.record(&mut call, attempt, Outcome::Cancelled, Instant::ZERO);
}

#[test]
fn round_robin_interleaves_by_weight() {
    let mut r = router(&["a", "b", "c"], |c| {
        c.policy = PolicyKind::RoundRobin;
        c.providers[0].weight = Some(5);
    });
    let mut sent = String::new();
    for i in 0..7 {
        sent += &run_call(&mut r, Instant::from_millis(i), |_, _| ok(1)).sent[0];
    }
    assert_eq!(sent, "aabacaa");
}

#[test]
fn least_latency_prefers_the_faster_provider() {
    let mut r = router(&["slow", "fast"], |c| c.policy = PolicyKind::LeastLatency);
    let mut now = Instant::ZERO;
    let mut fast = 0;
    for _ in 0..200 {
        let t = run_call(&mut r, now, |name, _| match name {
            "slow" => ok(2_000),
            _ => ok(100),
        });
        fast += usize::from(t.sent[0] == "fast");
        now = now + Duration::from_millis(50);
    }
    assert!(fast > 190, "fast got {fast} of 200");
}

#[test]
fn hedges_after_the_delay_to_another_provider() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.hedge.delay_ms = Some(500);
    });
    let now = Instant::ZERO;
    let mut call = r.begin(RequestMeta::default(), now);
    let Decision::Send(first) = r.next_attempt(&mut call, now) else {
        panic!()
    };
    assert_eq!(
        r.next_attempt(&mut call, now),
        Decision::Hedge {
            at: Instant::from_millis(500)
        }
    );
    let Decision::Send(hedge) = r.next_attempt(&mut call, Instant::from_millis(500)) else {
        panic!()
    };
    assert!(hedge.is_hedge);
    assert_ne!(hedge.provider, first.provider);
    assert_eq!(
        r.next_attempt(&mut call, Instant::from_millis(501)),
        Decision::Pending
    );
    r.record(&mut call, hedge, ok(100), Instant::from_millis(600));
    assert!(matches!(
        r.next_attempt(&mut call, Instant::from_millis(600)),
        Decision::Done { .. }
    ));
    r.record(
        &mut call,
        first,
        Outcome::Cancelled,
        Instant::from_millis(600),
    );
    assert_eq!(r.stats(first.provider).cancelled, 1);
    assert!(
        r.status(Instant::from_millis(600))
            .iter()
            .all(|s| s.in_flight == 0)
    );
}

#[test]
fn reload_keeps_state_of_providers_that_stay() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.breaker.consecutive_failures = Some(1);
    });
    let t = run_call(&mut r, Instant::ZERO, |name, _| match name {
        "a" => fail(ErrorClass::Server),
        _ => ok(10),
    });
    assert_eq!(t.sent, ["a", "b"]);
    let mut config = RouterConfig {
        policy: PolicyKind::Priority,
        providers: vec![
            stilts_core::ProviderConfig::named("new"),
            stilts_core::ProviderConfig::named("a"),
        ],
        ..RouterConfig::default()
    };
    config.breaker.consecutive_failures = Some(1);
    config.breaker.open_jitter = Some(0.0);
    // An attempt in flight across the reload is still recorded against the right provider.
    let mut call = r.begin(RequestMeta::default(), Instant::from_secs(1));
    let Decision::Send(in_flight) = r.next_attempt(&mut call, Instant::from_secs(1)) else {
        panic!()
    };
    assert_eq!(r.provider(in_flight.provider).name, "b");
    r.reconfigure(config.validate().unwrap());
    let a = id(&r, "a");
    assert!(matches!(
        r.breaker_state(a, Instant::from_secs(1)),
        BreakerState::Open { .. }
    ));
    assert_eq!(r.stats(a).failures[ErrorClass::Server.index()], 1);
    r.record(&mut call, in_flight, ok(10), Instant::from_secs(2));
    assert!(
        r.status(Instant::from_secs(2))
            .iter()
            .all(|s| s.in_flight == 0)
    );
}
