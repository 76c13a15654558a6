//! Regression tests, each named after the bug it pins (found in review of the first version).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

use std::time::Duration;
use stilts_core::*;

fn cfg(names: &[&str], edit: impl FnOnce(&mut RouterConfig)) -> RouterConfig {
    let mut c = RouterConfig {
        providers: names.iter().map(|n| ProviderConfig::named(*n)).collect(),
        ..RouterConfig::default()
    };
    c.breaker.open_jitter = Some(0.0);
    edit(&mut c);
    c
}

fn router(names: &[&str], edit: impl FnOnce(&mut RouterConfig)) -> Router {
    Router::new(cfg(names, edit).validate().unwrap(), 7)
}

fn ms(x: u64) -> Instant {
    Instant::from_millis(x)
}

fn ok() -> Outcome {
    Outcome::Success {
        latency: Duration::from_millis(10),
        first_token: None,
        usage: Usage::default(),
    }
}

fn fail(class: ErrorClass, retry_after_ms: Option<u64>) -> Outcome {
    Outcome::Failure {
        class,
        latency: Duration::from_millis(10),
        retry_after: retry_after_ms.map(Duration::from_millis),
    }
}

fn send(r: &mut Router, c: &mut Call, now: Instant) -> Attempt {
    match r.next_attempt(c, now) {
        Decision::Send(a) => a,
        d => panic!("expected a send, got {d:?}"),
    }
}

fn name(r: &Router, a: &Attempt) -> String {
    r.provider(a.provider).name.clone()
}

fn priority(c: &mut RouterConfig) {
    c.policy = PolicyKind::Priority;
}

#[test]
fn reload_that_reorders_providers_does_not_retry_the_failed_one_first() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.breaker.consecutive_failures = Some(0);
    });
    let mut call = r.begin(RequestMeta::default(), ms(0));
    let a1 = send(&mut r, &mut call, ms(0));
    assert_eq!(name(&r, &a1), "a");
    r.record(&mut call, a1, fail(ErrorClass::Server, None), ms(10));
    r.reconfigure(
        cfg(&["b", "a"], |c| {
            priority(c);
            c.breaker.consecutive_failures = Some(0);
        })
        .validate()
        .unwrap(),
    );
    let a2 = send(&mut r, &mut call, ms(10));
    assert_eq!(name(&r, &a2), "b");
}

#[test]
fn done_names_the_winner_after_a_reload_moved_it() {
    let mut r = router(&["a", "b"], priority);
    let mut call = r.begin(RequestMeta::default(), ms(0));
    let a1 = send(&mut r, &mut call, ms(0));
    r.record(&mut call, a1, fail(ErrorClass::Server, None), ms(1));
    let a2 = send(&mut r, &mut call, ms(1));
    assert_eq!(name(&r, &a2), "b");
    r.reconfigure(cfg(&["b", "a"], priority).validate().unwrap());
    r.record(&mut call, a2, ok(), ms(2));
    assert_eq!(
        r.next_attempt(&mut call, ms(2)),
        Decision::Done {
            provider: r.provider_id("b")
        }
    );
}

#[test]
fn done_after_the_winner_was_removed_names_no_provider() {
    let mut r = router(&["a", "b"], priority);
    let mut call = r.begin(RequestMeta::default(), ms(0));
    let a1 = send(&mut r, &mut call, ms(0));
    r.record(&mut call, a1, fail(ErrorClass::Server, None), ms(1));
    let a2 = send(&mut r, &mut call, ms(1));
    r.reconfigure(cfg(&["a"], priority).validate().unwrap());
    r.record(&mut call, a2, ok(), ms(2));
    assert_eq!(
        r.next_attempt(&mut call, ms(2)),
        Decision::Done { provider: None }
    );
}

#[test]
fn a_stale_rate_limit_never_sends_to_an_ineligible_or_open_provider() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.providers[1].priority = Some(1);
        c.providers[1].prefill_continuation = Some(true);
        c.breaker.consecutive_failures = Some(1);
    });
    let mut other = r.begin(RequestMeta::default(), ms(0));
    let x = send(&mut r, &mut other, ms(0));
    let mut call = r.begin(RequestMeta::default(), ms(0));
    let a1 = send(&mut r, &mut call, ms(0));
    assert_eq!(name(&r, &a1), "a");
    r.record(
        &mut call,
        a1,
        fail(ErrorClass::RateLimited, Some(5_000)),
        ms(10),
    );
    // Another call's failure opens a's breaker until 5.1 s.
    r.record(&mut other, x, fail(ErrorClass::Server, None), ms(100));
    let b = send(&mut r, &mut call, ms(10));
    assert_eq!(name(&r, &b), "b");
    // b streamed bytes, then was cut: only exact continuation is allowed now.
    call.require_continuation();
    r.record(&mut call, b, fail(ErrorClass::Server, None), ms(2_500));
    let mut now = ms(2_500);
    for _ in 0..10 {
        match r.next_attempt(&mut call, now) {
            Decision::Wait { until } => now = until,
            Decision::Send(a) => panic!("sent to {} at {now}", name(&r, &a)),
            _ => break,
        }
    }
}

#[test]
fn a_probe_from_an_earlier_half_open_period_does_not_free_a_probe_slot() {
    let mut r = router(&["a"], |c| {
        c.breaker.consecutive_failures = Some(1);
        c.budget.min_per_second = Some(1000.0);
    });
    let mut c0 = r.begin(RequestMeta::default(), ms(0));
    let a0 = send(&mut r, &mut c0, ms(0));
    r.record(&mut c0, a0, fail(ErrorClass::Server, None), ms(0)); // open until 5 s
    let mut c1 = r.begin(RequestMeta::default(), ms(5_000));
    let mut c2 = r.begin(RequestMeta::default(), ms(5_000));
    let p1 = send(&mut r, &mut c1, ms(5_000));
    let p2 = send(&mut r, &mut c2, ms(5_000));
    r.record(&mut c1, p1, fail(ErrorClass::Server, None), ms(5_100)); // open until 15.1 s
    let mut probes = vec![];
    for _ in 0..2 {
        let mut c = r.begin(RequestMeta::default(), ms(15_100));
        let p = send(&mut r, &mut c, ms(15_100));
        probes.push((c, p));
    }
    let mut c5 = r.begin(RequestMeta::default(), ms(15_100));
    assert!(!matches!(
        r.next_attempt(&mut c5, ms(15_100)),
        Decision::Send(_)
    ));
    r.record(&mut c2, p2, ok(), ms(16_000));
    let mut c6 = r.begin(RequestMeta::default(), ms(16_000));
    assert!(!matches!(
        r.next_attempt(&mut c6, ms(16_000)),
        Decision::Send(_)
    ));
}

#[test]
fn reload_with_other_breaker_settings_keeps_open_breakers_open() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.breaker.consecutive_failures = Some(1);
    });
    let mut call = r.begin(RequestMeta::default(), ms(0));
    let a = send(&mut r, &mut call, ms(0));
    r.record(&mut call, a, fail(ErrorClass::Server, None), ms(0));
    let id = r.provider_id("a").unwrap();
    let before = r.breaker_state(id, ms(1));
    assert!(matches!(before, BreakerState::Open { .. }));
    r.reconfigure(
        cfg(&["a", "b"], |c| {
            priority(c);
            c.breaker.consecutive_failures = Some(1);
            c.breaker.slow_call_ms = Some(20_000);
            c.breaker.window_ms = Some(60_000);
        })
        .validate()
        .unwrap(),
    );
    assert_eq!(r.breaker_state(id, ms(1)), before);
}

#[test]
fn an_unmeasured_provider_counts_as_the_default_latency() {
    let mut r = router(&["a", "b"], |c| c.policy = PolicyKind::LeastLatency);
    let now = Instant::from_secs(120);
    let mut to_a = 0;
    let mut hanging = vec![];
    for _ in 0..30 {
        let mut c = r.begin(RequestMeta::default(), now);
        let at = send(&mut r, &mut c, now);
        if name(&r, &at) == "a" {
            to_a += 1;
            hanging.push((c, at));
        } else {
            let fast = Outcome::Success {
                latency: Duration::from_millis(100),
                first_token: None,
                usage: Usage::default(),
            };
            r.record(&mut c, at, fast, now);
        }
    }
    assert_eq!(r.status(now)[0].latency, Duration::from_secs(1));
    assert!(to_a <= 2, "{to_a} of 30 went to the unmeasured provider");
}

#[test]
fn huge_usage_saturates_the_counters_instead_of_panicking() {
    let mut r = router(&["a"], |_| {});
    for i in 0..2 {
        let mut c = r.begin(RequestMeta::default(), ms(i));
        let a = send(&mut r, &mut c, ms(i));
        let usage = Usage {
            input_tokens: u64::MAX,
            output_tokens: 0,
        };
        let outcome = Outcome::Success {
            latency: Duration::from_millis(1),
            first_token: None,
            usage,
        };
        r.record(&mut c, a, outcome, ms(i));
    }
    assert_eq!(r.status(ms(2))[0].stats.input_tokens, u64::MAX);
}

#[test]
fn context_length_is_never_resent_unchanged_even_at_the_largest_window() {
    let mut r = router(&["a"], |c| c.providers[0].context_window = Some(u32::MAX));
    let mut call = r.begin(RequestMeta::default(), ms(0));
    let a = send(&mut r, &mut call, ms(0));
    r.record(&mut call, a, fail(ErrorClass::ContextLength, None), ms(1));
    match r.next_attempt(&mut call, ms(1)) {
        Decision::GiveUp(why) => assert_eq!(
            why.reason,
            GiveUpReason::NotRetryable(ErrorClass::ContextLength)
        ),
        d => panic!("{d:?}"),
    }
}

#[test]
fn the_retry_budget_allows_at_most_twice_the_floor_across_a_bucket_boundary() {
    let mut r = router(&["a"], |c| {
        c.budget.ratio = Some(0.0);
        c.budget.min_per_second = Some(1.0);
        c.max_attempts = Some(2);
        c.breaker.consecutive_failures = Some(0);
        c.breaker.minimum_calls = Some(1_000_000);
        c.retry.backoff_base_ms = Some(0);
        c.retry.backoff_max_ms = Some(0);
    });
    let mut retries = 0;
    for t in [999u64, 10_000] {
        for _ in 0..20 {
            let now = ms(t);
            let mut c = r.begin(RequestMeta::default(), now);
            let a = send(&mut r, &mut c, now);
            r.record(&mut c, a, fail(ErrorClass::Server, None), now);
            if let Decision::Send(a) = r.next_attempt(&mut c, now) {
                retries += 1;
                r.record(&mut c, a, ok(), now);
            }
        }
    }
    // Floor 1/s × 10 s = 10 per window; the documented worst case within 9 s is twice that.
    assert_eq!(retries, 20);
}

#[test]
fn a_wait_is_never_planned_when_the_budget_cannot_pay_for_the_retry() {
    let mut r = router(&["primary", "local"], |c| {
        priority(c);
        c.budget.ratio = Some(0.0);
        c.budget.min_per_second = Some(0.0);
    });
    let mut call = r.begin(RequestMeta::default(), ms(0));
    let a = send(&mut r, &mut call, ms(0));
    r.record(
        &mut call,
        a,
        fail(ErrorClass::RateLimited, Some(1_000)),
        ms(1),
    );
    match r.next_attempt(&mut call, ms(1)) {
        Decision::GiveUp(why) => assert_eq!(why.reason, GiveUpReason::BudgetExhausted),
        d => panic!("{d:?}"),
    }
}

#[test]
fn an_absurd_retry_after_is_capped_at_the_quota_cool_down() {
    let mut r = router(&["a", "b"], priority);
    let mut call = r.begin(RequestMeta::default(), ms(0));
    let a = send(&mut r, &mut call, ms(0));
    let forever = Outcome::Failure {
        class: ErrorClass::RateLimited,
        latency: Duration::from_millis(1),
        retry_after: Some(Duration::MAX),
    };
    r.record(&mut call, a, forever, ms(0));
    let status = r.status(ms(0));
    let (_, until) = status[0].cooldown.unwrap();
    assert_eq!(until, ms(900_000));
}

#[test]
fn priority_waits_out_a_preferred_providers_429_once_then_falls_back() {
    let mut r = router(&["primary", "fallback"], |c| {
        priority(c);
        c.max_attempts = Some(6);
    });
    let mut call = r.begin(RequestMeta::default(), ms(0));
    let mut now = ms(0);
    let mut sent = vec![];
    loop {
        match r.next_attempt(&mut call, now) {
            Decision::Send(a) => {
                let n = name(&r, &a);
                let outcome = if n == "primary" {
                    fail(ErrorClass::RateLimited, Some(1_000))
                } else {
                    ok()
                };
                sent.push(n);
                now = now + Duration::from_millis(10);
                r.record(&mut call, a, outcome, now);
            }
            Decision::Wait { until } => now = until,
            Decision::Done { .. } => break,
            d => panic!("{d:?}"),
        }
    }
    assert_eq!(sent, ["primary", "primary", "fallback"]);
}

#[test]
fn a_plain_request_gets_headers_time_for_its_whole_answer() {
    let mut r = router(&["a"], |_| {});
    let plain = RequestMeta {
        output_tokens: 400,
        ..RequestMeta::default()
    };
    let mut call = r.begin(plain, ms(0));
    let a = send(&mut r, &mut call, ms(0));
    assert_eq!(a.timeouts.headers, Duration::from_secs(30));
    r.record(&mut call, a, Outcome::Cancelled, ms(0));
    let stream = RequestMeta {
        stream: true,
        ..plain
    };
    let mut call = r.begin(stream, ms(0));
    let a = send(&mut r, &mut call, ms(0));
    assert_eq!(a.timeouts.headers, Duration::from_secs(10));
    r.record(&mut call, a, Outcome::Cancelled, ms(0));
}

/// Ten calls whose attempts end at the call's deadline: `client` says whether that deadline is
/// the client's own (`RequestMeta::deadline`) or the route's. Returns the provider's breaker state
/// after them and its counters.
fn timeouts_at_the_call_deadline(client: bool) -> (BreakerState, ProviderStats) {
    let mut r = router(&["a"], |c| {
        c.breaker.consecutive_failures = Some(5);
        c.deadline_ms = Some(50);
    });
    let mut now = ms(0);
    for _ in 0..10 {
        let meta = RequestMeta {
            deadline: client.then_some(Duration::from_millis(10)),
            ..RequestMeta::default()
        };
        let mut call = r.begin(meta, now);
        let Decision::Send(a) = r.next_attempt(&mut call, now) else {
            break; // the breaker opened
        };
        assert_eq!(
            a.deadline,
            call.deadline(),
            "the attempt is bounded by the call"
        );
        // The driver's timer fires at the attempt deadline.
        now = a.deadline;
        r.record(
            &mut call,
            a,
            Outcome::Failure {
                class: ErrorClass::Timeout,
                latency: Duration::from_millis(if client { 10 } else { 50 }),
                retry_after: None,
            },
            now,
        );
        now = now + Duration::from_millis(1);
    }
    let id = ProviderId::from_index(0).unwrap();
    (r.breaker_state(id, now), *r.stats(id))
}

#[test]
fn a_clients_own_short_deadline_never_opens_the_breaker() {
    let (state, stats) = timeouts_at_the_call_deadline(true);
    assert_eq!(
        state,
        BreakerState::Closed,
        "the client's deadline blamed the provider"
    );
    assert_eq!(stats.cut_by_client_deadline, 10);
    assert_eq!(stats.failures[ErrorClass::Timeout.index()], 0);
    // The same timeouts at the route's own deadline are the provider's: the breaker opens.
    let (state, stats) = timeouts_at_the_call_deadline(false);
    assert!(matches!(state, BreakerState::Open { .. }), "{state:?}");
    assert_eq!(stats.cut_by_client_deadline, 0);
    assert_eq!(stats.failures[ErrorClass::Timeout.index()], 5);
}

#[test]
fn a_stage_limit_that_fires_before_the_clients_deadline_is_the_providers_timeout() {
    let mut r = router(&["a"], |c| c.breaker.consecutive_failures = Some(1));
    let meta = RequestMeta {
        deadline: Some(Duration::from_millis(5_000)),
        ..RequestMeta::default()
    };
    let mut call = r.begin(meta, ms(0));
    let a = send(&mut r, &mut call, ms(0));
    // The headers limit (shorter than the client's 5 s) expired at 1 s.
    r.record(&mut call, a, fail(ErrorClass::Timeout, None), ms(1_000));
    let id = ProviderId::from_index(0).unwrap();
    assert!(matches!(
        r.breaker_state(id, ms(1_000)),
        BreakerState::Open { .. }
    ));
    assert_eq!(r.stats(id).failures[ErrorClass::Timeout.index()], 1);
}

#[test]
fn a_client_deadline_that_cuts_a_provider_running_far_past_its_usual_latency_counts() {
    let mut r = router(&["a"], |c| c.breaker.consecutive_failures = Some(3));
    let id = ProviderId::from_index(0).unwrap();
    let mut now = ms(0);
    // The provider usually answers in 100 ms.
    for _ in 0..20 {
        let mut call = r.begin(RequestMeta::default(), now);
        let a = send(&mut r, &mut call, now);
        now = now + Duration::from_millis(100);
        r.record(
            &mut call,
            a,
            Outcome::Success {
                latency: Duration::from_millis(100),
                first_token: None,
                usage: Usage::default(),
            },
            now,
        );
    }
    // Now it hangs; clients give up after 2 s, twenty times its usual latency.
    for _ in 0..3 {
        now = timeout_at_client_deadline(&mut r, now, Duration::from_secs(2));
    }
    assert!(
        matches!(r.breaker_state(id, now), BreakerState::Open { .. }),
        "a hung provider must trip even when every client has a short deadline"
    );
    assert_eq!(r.stats(id).cut_by_client_deadline, 0);
}

#[test]
fn a_short_client_deadline_after_a_quiet_minute_is_still_the_clients() {
    let mut r = router(&["a"], |c| c.breaker.consecutive_failures = Some(3));
    let id = ProviderId::from_index(0).unwrap();
    // One answer in 1 s, then a quiet minute: the latency estimate decays toward zero.
    let mut call = r.begin(RequestMeta::default(), ms(0));
    let a = send(&mut r, &mut call, ms(0));
    r.record(&mut call, a, ok(), ms(1_000));
    let mut now = ms(61_000);
    for _ in 0..5 {
        now = timeout_at_client_deadline(&mut r, now, Duration::from_millis(10));
    }
    assert_eq!(r.breaker_state(id, now), BreakerState::Closed);
    assert_eq!(r.stats(id).cut_by_client_deadline, 5);
}

/// One call with the client's own `deadline`, whose only attempt times out at that deadline.
/// Returns the time it ended.
fn timeout_at_client_deadline(r: &mut Router, now: Instant, deadline: Duration) -> Instant {
    let meta = RequestMeta {
        deadline: Some(deadline),
        ..RequestMeta::default()
    };
    let mut call = r.begin(meta, now);
    let a = send(r, &mut call, now);
    let end = call.deadline();
    r.record(
        &mut call,
        a,
        Outcome::Failure {
            class: ErrorClass::Timeout,
            latency: deadline,
            retry_after: None,
        },
        end,
    );
    end
}

/// The `cost` policy priced every answer at the request's bound (512 tokens without
/// `max_tokens`): a provider cheap per input token and dear per output token looked dearer than
/// it is for the usual short answer, and short prompts went to the other. It now prices output at
/// the mean of the route's recent answers when that is smaller.
#[test]
fn the_cost_policy_prices_output_at_the_usual_answer_not_the_bound() {
    let mut r = router(&["mini", "chat"], |c| {
        c.policy = PolicyKind::Cost;
        // gpt-4o-mini and deepseek-chat list prices, USD per million tokens.
        (
            c.providers[0].input_usd_per_mtok,
            c.providers[0].output_usd_per_mtok,
        ) = (Some(0.15), Some(0.60));
        (
            c.providers[1].input_usd_per_mtok,
            c.providers[1].output_usd_per_mtok,
        ) = (Some(0.28), Some(0.42));
    });
    let meta = RequestMeta {
        input_tokens: 600,
        output_tokens: 512,
        stream: false,
        deadline: None,
    };
    let first_choice = |r: &mut Router, now: Instant| {
        let mut call = r.begin(meta, now);
        let Decision::Send(a) = r.next_attempt(&mut call, now) else {
            panic!("no attempt")
        };
        let answer = Outcome::Success {
            latency: Duration::from_millis(800),
            first_token: None,
            usage: Usage {
                input_tokens: 600,
                output_tokens: 150,
            },
        };
        r.record(&mut call, a, answer, now);
        r.provider(a.provider).name.clone()
    };
    // At 512 output tokens deepseek-chat is the cheaper for this 600-token prompt ($0.000383
    // against $0.000397)...
    assert_eq!(first_choice(&mut r, ms(0)), "chat");
    for k in 1..40 {
        let _ = first_choice(&mut r, ms(k * 100));
    }
    // ...but answers here have 150 tokens, at which gpt-4o-mini is ($0.000180 against $0.000231).
    assert_eq!(first_choice(&mut r, ms(5_000)), "mini");
}
