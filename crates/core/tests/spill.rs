//! Spill: a preferred tier that answers much slower than usual, or (for streams) breaks many of
//! its streams after they reached the client, sends a share of its traffic to the next tier, and
//! nearly all of it where the route's long answers would miss their deadline (see
//! `docs/routing.md`, "Spill"), driven call by call in virtual time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

mod common;

use common::*;
use std::time::Duration;
use stilts_core::{Decision, ErrorClass, Instant, Outcome, RequestMeta, RouterConfig};

/// One call whose first attempt is answered after `felt_ms` (a stream's first token); returns the
/// provider the router chose.
fn one_stream_call(r: &mut stilts_core::Router, now: Instant, felt_ms: u64) -> String {
    let mut call = r.begin(stream_call(), now);
    let Decision::Send(attempt) = r.next_attempt(&mut call, now) else {
        panic!("no attempt")
    };
    let name = r.provider(attempt.provider).name.clone();
    let felt = if name == "a" { felt_ms } else { 500 };
    r.record(&mut call, attempt, streamed(felt), now);
    name
}

/// Share of `calls` calls (one every 100 ms from `from`) that the router sent to `b`.
fn spilled(r: &mut stilts_core::Router, from: Instant, calls: u32, a_felt_ms: u64) -> f64 {
    let mut to_b = 0;
    for k in 0..calls {
        let now = from + Duration::from_millis(100 * u64::from(k));
        if one_stream_call(r, now, a_felt_ms) == "b" {
            to_b += 1;
        }
    }
    f64::from(to_b) / f64::from(calls)
}

/// A preferred tier that answers far slower than usual (queueing behind its capacity, or a
/// brownout) spills a share of its traffic to the next tier, growing with the slowdown; it keeps
/// some to measure itself, and gets everything back once it is fast again.
#[test]
fn a_slowed_tier_spills_traffic_to_the_next_and_takes_it_back_when_fast() {
    let mut r = router(&["a", "b"], priority);
    let t0 = Instant::ZERO;
    assert_eq!(spilled(&mut r, t0, 3_000, 500), 0.0, "a steady tier spills");
    // Four times slower to its first token: most traffic moves, not all.
    let slow_from = t0 + Duration::from_secs(300);
    let _ = spilled(&mut r, slow_from, 300, 2_000);
    let share = spilled(&mut r, slow_from + Duration::from_secs(30), 600, 2_000);
    assert!((0.75..0.97).contains(&share), "spilled {share}");
    // Fast again: within a minute, everything is back.
    let fast_from = slow_from + Duration::from_secs(90);
    let _ = spilled(&mut r, fast_from, 600, 500);
    let share = spilled(&mut r, fast_from + Duration::from_secs(60), 600, 500);
    assert_eq!(share, 0.0, "still spilled {share}");
}

/// A preferred provider answering much slower than usual is not worth waiting out a short
/// Retry-After for: the wait plus a slowed answer can miss the deadline the next tier meets.
#[test]
fn a_slowed_provider_s_short_retry_after_is_not_waited_out() {
    let mut r = router(&["a", "b"], priority);
    let _ = spilled(&mut r, Instant::ZERO, 3_000, 500);
    let slow_from = Instant::from_secs(300);
    let _ = spilled(&mut r, slow_from, 300, 2_000);
    // The tenth of the calls still sent to a: a 429 with a 1 s Retry-After there.
    let mut now = slow_from + Duration::from_secs(30);
    loop {
        let meta = RequestMeta {
            stream: true,
            ..RequestMeta::default()
        };
        let mut call = r.begin(meta, now);
        let Decision::Send(first) = r.next_attempt(&mut call, now) else {
            panic!()
        };
        if r.provider(first.provider).name != "a" {
            r.record(&mut call, first, ok(500), now);
            now = now + Duration::from_millis(100);
            continue;
        }
        r.record(&mut call, first, rate_limited(1_000), now);
        let Decision::Send(next) = r.next_attempt(&mut call, now) else {
            panic!("waited out a slowed provider's Retry-After")
        };
        assert_eq!(r.provider(next.provider).name, "b");
        r.record(&mut call, next, ok(500), now);
        break;
    }
}

/// A 30% slowdown is noise, not saturation: nothing spills.
#[test]
fn a_mild_slowdown_spills_nothing() {
    let mut r = router(&["a", "b"], priority);
    let _ = spilled(&mut r, Instant::ZERO, 3_000, 500);
    let share = spilled(&mut r, Instant::from_secs(300), 1_200, 650);
    assert_eq!(share, 0.0);
}

fn stream_call() -> RequestMeta {
    RequestMeta {
        stream: true,
        ..RequestMeta::default()
    }
}

fn streamed(ms: u64) -> Outcome {
    Outcome::Success {
        latency: Duration::from_millis(ms + 2_000),
        first_token: Some(Duration::from_millis(ms)),
        usage: stilts_core::Usage {
            input_tokens: 100,
            output_tokens: 200,
        },
    }
}

/// `calls` calls, one every 100 ms from `from`, of which every `broken_every`th stream that `a`
/// starts breaks after its first bytes (0: none), continued on `b`; returns the share the router
/// sent to `b` first, and the plain calls' share when `plain`.
fn with_broken_streams(
    r: &mut stilts_core::Router,
    from: Instant,
    calls: u32,
    broken_every: u32,
    plain: bool,
) -> f64 {
    let (mut to_b, mut on_a) = (0, 0);
    for k in 0..calls {
        let now = from + Duration::from_millis(100 * u64::from(k));
        let meta = if plain {
            RequestMeta::default()
        } else {
            stream_call()
        };
        let mut call = r.begin(meta, now);
        let Decision::Send(first) = r.next_attempt(&mut call, now) else {
            panic!("no attempt")
        };
        // A plain answer has no first token: it says nothing of streams.
        let answered = if plain { ok(2_500) } else { streamed(500) };
        if r.provider(first.provider).name == "b" {
            to_b += 1;
            r.record(&mut call, first, answered, now);
            continue;
        }
        on_a += 1;
        if plain || broken_every == 0 || on_a % broken_every != 0 {
            r.record(&mut call, first, answered, now);
            continue;
        }
        // Bytes reached the client, then the stream was cut: continued on b.
        call.require_continuation();
        r.record(&mut call, first, fail(ErrorClass::Server), now);
        let Decision::Send(next) = r.next_attempt(&mut call, now) else {
            panic!("no continuation")
        };
        assert_eq!(r.provider(next.provider).name, "b");
        r.record(&mut call, next, streamed(600), now);
    }
    f64::from(to_b) / f64::from(calls)
}

/// A preferred tier whose streams break after reaching the client (here one in three: cuts,
/// stalls) spills most of its stream traffic to the next tier, though its breaker stays closed;
/// plain traffic, which it serves well, stays; and the streams come back once it finishes them
/// again. An occasional cut (one stream in 25) spills nothing.
#[test]
fn a_tier_that_breaks_its_streams_spills_them_to_the_next() {
    let both = |c: &mut RouterConfig| {
        priority(c);
        c.providers[1].prefill_continuation = Some(true);
    };
    let mut r = router(&["a", "b"], both);
    let t0 = Instant::ZERO;
    let share = with_broken_streams(&mut r, t0, 3_000, 25, false);
    assert!(share < 0.01, "an occasional cut spilled {share}");
    let from = t0 + Duration::from_secs(300);
    let _ = with_broken_streams(&mut r, from, 300, 3, false);
    let share = with_broken_streams(&mut r, from + Duration::from_secs(30), 600, 3, false);
    assert!((0.8..0.97).contains(&share), "spilled {share}");
    let plain = with_broken_streams(&mut r, from + Duration::from_secs(90), 300, 3, true);
    assert_eq!(plain, 0.0, "plain calls spilled {plain}");
    // Clean again: the few streams still sent to a bring its share down, and the rest follow.
    let clean = from + Duration::from_secs(120);
    let _ = with_broken_streams(&mut r, clean, 1_200, 0, false);
    let share = with_broken_streams(&mut r, clean + Duration::from_secs(120), 600, 0, false);
    assert_eq!(share, 0.0, "still spilled {share}");
}

/// Answer lengths cycled through by [`paced`]: a route whose longest answers are 1 200 tokens.
const LENGTHS: [u64; 5] = [50, 150, 300, 600, 1_200];

/// A plain call with a 30 s deadline.
fn plain_30s() -> RequestMeta {
    RequestMeta {
        deadline: Some(Duration::from_secs(30)),
        ..RequestMeta::default()
    }
}

/// A plain answer of `tokens` output tokens in `ms`.
fn answer_in(ms: u64, tokens: u64) -> Outcome {
    Outcome::Success {
        latency: Duration::from_millis(ms),
        first_token: None,
        usage: stilts_core::Usage {
            input_tokens: 100,
            output_tokens: tokens,
        },
    }
}

/// `calls` plain calls with a 30 s deadline, one every 100 ms from `from`, answered by `a` in
/// 400 ms plus `a_ms_per_token` a token and by `b` in 600 ms plus 14 ms a token, the lengths cycling
/// through `lengths`; returns the share the router sent to `b`.
fn paced(
    r: &mut stilts_core::Router,
    from: Instant,
    calls: u32,
    a_ms_per_token: u64,
    lengths: &[u64],
) -> f64 {
    let mut to_b = 0;
    for k in 0..calls {
        let now = from + Duration::from_millis(100 * u64::from(k));
        let mut call = r.begin(plain_30s(), now);
        let Decision::Send(attempt) = r.next_attempt(&mut call, now) else {
            panic!("no attempt")
        };
        let tokens = lengths[k as usize % lengths.len()];
        let ms = if r.provider(attempt.provider).name == "a" {
            400 + tokens * a_ms_per_token
        } else {
            to_b += 1;
            600 + tokens * 14
        };
        let answer = answer_in(ms, tokens);
        r.record(&mut call, attempt, answer, now + Duration::from_millis(ms));
    }
    f64::from(to_b) / f64::from(calls)
}

/// A preferred tier slowed so far that the route's long answers would miss their deadline there
/// (1 200 tokens at 28 ms a token: 34 s) sends nearly all its traffic to a next tier where they fit
/// (17 s), more than its slowdown alone would spill (at most 90%): the router cannot tell which
/// call will be long. The tier keeps a trickle, and gets its traffic back once it is fast again.
#[test]
fn a_tier_where_long_answers_would_miss_the_deadline_spills_nearly_all_of_it() {
    let mut r = router(&["a", "b"], priority);
    let t0 = Instant::ZERO;
    assert_eq!(paced(&mut r, t0, 3_000, 11, &LENGTHS), 0.0);
    let slow_from = t0 + Duration::from_secs(300);
    let _ = paced(&mut r, slow_from, 1_200, 28, &LENGTHS);
    let settled = slow_from + Duration::from_secs(120);
    let share = paced(&mut r, settled, 1_200, 28, &LENGTHS);
    assert!((0.97..1.0).contains(&share), "spilled {share}");
    // Fast again: the trickle of calls still sent to a shows it, and the traffic comes back.
    let fast_from = slow_from + Duration::from_secs(240);
    let _ = paced(&mut r, fast_from, 6_000, 11, &LENGTHS);
    let back = fast_from + Duration::from_secs(600);
    let share = paced(&mut r, back, 600, 11, &LENGTHS);
    assert_eq!(share, 0.0, "still spilled {share}");
}

/// The same slowdown on a route of short answers (300 tokens at most: 9 s) spills only for the
/// slowdown: at most 90%, and the tier keeps the rest.
#[test]
fn a_slowed_tier_whose_answers_still_fit_spills_only_for_its_slowdown() {
    let short = &LENGTHS[..3];
    let mut r = router(&["a", "b"], priority);
    let _ = paced(&mut r, Instant::ZERO, 3_000, 11, short);
    let slow_from = Instant::from_secs(300);
    let _ = paced(&mut r, slow_from, 1_200, 28, short);
    let share = paced(
        &mut r,
        slow_from + Duration::from_secs(120),
        1_200,
        28,
        short,
    );
    assert!((0.3..0.93).contains(&share), "spilled {share}");
}

/// The trickle a tier keeps while its traffic is spilled for the deadline goes out as a pace
/// probe: hedged at once to the tier where long answers fit, so the user is answered by whichever
/// comes first, and run to its end after the call, so its answer still measures the tier's pace.
/// Before the slowdown, a call to the same tier is a plain attempt.
#[test]
fn the_trickle_of_a_tier_spilled_for_the_deadline_is_a_pace_probe_hedged_at_once() {
    let mut r = router(&["a", "b"], priority);
    let (a, b) = (id(&r, "a"), id(&r, "b"));
    let meta = RequestMeta {
        deadline: Some(Duration::from_secs(30)),
        ..RequestMeta::default()
    };
    let _ = paced(&mut r, Instant::ZERO, 3_000, 11, &LENGTHS);
    let healthy = Instant::from_secs(300);
    let mut call = r.begin(meta, healthy);
    let Decision::Send(plain) = r.next_attempt(&mut call, healthy) else {
        panic!("no attempt")
    };
    assert!(plain.provider == a && !plain.is_probe());
    assert_eq!(r.next_attempt(&mut call, healthy), Decision::Pending);
    r.record(
        &mut call,
        plain,
        ok(400),
        healthy + Duration::from_millis(400),
    );

    let slow_from = Instant::from_secs(301);
    let _ = paced(&mut r, slow_from, 1_200, 28, &LENGTHS);
    let mut now = slow_from + Duration::from_secs(120);
    let mut probes = 0;
    for k in 0..2_000 {
        now = now + Duration::from_millis(100);
        let tokens = LENGTHS[k % LENGTHS.len()];
        let answer = |startup_ms: u64, ms_per_token: u64| {
            let ms = startup_ms + tokens * ms_per_token;
            let outcome = Outcome::Success {
                latency: Duration::from_millis(ms),
                first_token: None,
                usage: stilts_core::Usage {
                    input_tokens: 100,
                    output_tokens: tokens,
                },
            };
            (outcome, Duration::from_millis(ms))
        };
        let (from_b, b_takes) = answer(600, 14);
        let mut call = r.begin(meta, now);
        let Decision::Send(first) = r.next_attempt(&mut call, now) else {
            panic!("no attempt")
        };
        if first.provider == b {
            assert!(!first.is_probe());
            r.record(&mut call, first, from_b, now + b_takes);
            continue;
        }
        probes += 1;
        assert!(first.is_probe() && !first.is_hedge, "{first:?}");
        let Decision::Send(hedge) = r.next_attempt(&mut call, now) else {
            panic!("the pace probe was not hedged at once")
        };
        assert!(hedge.provider == b && hedge.is_hedge && !hedge.is_probe());
        let answered = now + b_takes;
        r.record(&mut call, hedge, from_b, answered);
        assert_eq!(
            r.next_attempt(&mut call, answered),
            Decision::Done { provider: Some(b) }
        );
        // The probe ends after its call, on the copy the driver detached, and is recorded.
        let mut detached = call.detach(1);
        let (from_a, a_takes) = answer(400, 28);
        r.record(&mut detached, first, from_a, now + a_takes);
    }
    assert!(
        (5..=60).contains(&probes),
        "{probes} pace probes in 2 000 calls"
    );
}

/// `calls` plain calls with a 30 s deadline, one every 100 ms from `from`: `a` fails at once with
/// a 503 while `a_down`, else answers in 400 ms plus `a_ms_per_token` a token; `b` answers in
/// 600 ms plus `b_ms_per_token` a token; the lengths cycle through [`LENGTHS`]. Returns the share
/// of the calls whose first attempt went to `b`.
fn paced_with_failover(
    r: &mut stilts_core::Router,
    from: Instant,
    calls: u32,
    (a_down, a_ms_per_token): (bool, u64),
    b_ms_per_token: u64,
) -> f64 {
    let mut first_to_b = 0;
    for k in 0..calls {
        let now = from + Duration::from_millis(100 * u64::from(k));
        let mut call = r.begin(plain_30s(), now);
        let tokens = LENGTHS[k as usize % LENGTHS.len()];
        let mut at = now;
        for attempt_number in 0.. {
            let attempt = match r.next_attempt(&mut call, at) {
                Decision::Send(attempt) => attempt,
                Decision::Wait { until } => {
                    at = until;
                    continue;
                }
                _ => break,
            };
            let on_a = r.provider(attempt.provider).name == "a";
            if attempt_number == 0 && !on_a {
                first_to_b += 1;
            }
            let (outcome, took) = if on_a && a_down {
                let failure = Outcome::Failure {
                    class: ErrorClass::Server,
                    latency: Duration::from_millis(100),
                    retry_after: None,
                };
                (failure, 100)
            } else {
                let ms = if on_a {
                    400 + tokens * a_ms_per_token
                } else {
                    600 + tokens * b_ms_per_token
                };
                (answer_in(ms, tokens), ms)
            };
            at = at + Duration::from_millis(took);
            r.record(&mut call, attempt, outcome, at);
        }
    }
    f64::from(first_to_b) / f64::from(calls)
}

/// Found in `openai-2025-07-09-partial-model` (seed 42): the route's longest answer (2 093 tokens)
/// took 26.9 s at the second tier, which with its 25% margin missed the 30 s deadline, and 28.7 s
/// at the third, which fit without one; so 99% of the failovers went to the slower third tier,
/// whose few recent answers could not vouch for them, and 28 requests found the retry budget
/// spent. Here `a` (1 200 tokens in 24.4 s: 30.5 s with the margin) is faster than `b` (25.8 s),
/// which took the traffic while `a` was down: once `a` is back, `b` gets nothing for the deadline.
#[test]
fn a_slower_next_tier_is_never_where_long_answers_spill() {
    let mut r = router(&["a", "b"], priority);
    let down = paced_with_failover(&mut r, Instant::ZERO, 1_200, (true, 20), 21);
    assert!(down > 0.5, "a's breaker sent the traffic to b: {down}");
    let back = Instant::from_secs(200);
    let _ = paced_with_failover(&mut r, back, 1_200, (false, 20), 21);
    let share = paced_with_failover(
        &mut r,
        back + Duration::from_secs(120),
        1_200,
        (false, 20),
        21,
    );
    assert!(share < 0.05, "spilled {share} to the slower tier");
}

/// A stream call spilled to a slower tier because the faster one breaks its streams is not a
/// pace probe of that tier, though the route's long answers would miss the deadline there: hedged
/// at once to the faster tier, its first token would win the race most often, and a break there
/// leaves the continuation too little time (`stream-cut-and-stall` at an 8 s deadline answered
/// fewer than `seed_router` so). Here `a` (400 ms + 5 ms a token) breaks one stream in three,
/// continued on `b` (600 ms + 10 ms a token, 12.6 s for the route's 1 200-token answers, one in
/// 25, past the 8 s deadline).
#[test]
fn a_stream_spilled_from_a_tier_that_breaks_streams_is_not_hedged_back_to_it() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.providers[1].prefill_continuation = Some(true);
    });
    let (a, b) = (id(&r, "a"), id(&r, "b"));
    let meta = RequestMeta {
        stream: true,
        deadline: Some(Duration::from_secs(8)),
        ..RequestMeta::default()
    };
    let streamed_in = |startup_ms: u64, ms_per_token: u64, tokens: u64| {
        let ms = startup_ms + tokens * ms_per_token;
        let outcome = Outcome::Success {
            latency: Duration::from_millis(ms),
            first_token: Some(Duration::from_millis(startup_ms)),
            usage: stilts_core::Usage {
                input_tokens: 100,
                output_tokens: tokens,
            },
        };
        (outcome, Duration::from_millis(ms))
    };
    let (mut on_a, mut to_b, mut hedged_at_once) = (0, 0, 0);
    for k in 0..3_600_u32 {
        let now = Instant::ZERO + Duration::from_millis(100 * u64::from(k));
        // The route's long answer now and then: rare enough that b, which misses the deadline on
        // it, still finishes most of its calls in time (`deadline_misses.rs`).
        let tokens = if k % 25 == 24 {
            1_200
        } else {
            LENGTHS[k as usize % 4]
        };
        let (from_a, a_takes) = streamed_in(400, 5, tokens);
        let (from_b, b_takes) = streamed_in(600, 10, tokens);
        let measuring = k >= 3_000;
        let mut call = r.begin(meta, now);
        let Decision::Send(first) = r.next_attempt(&mut call, now) else {
            panic!("no attempt")
        };
        if first.provider == b {
            to_b += u32::from(measuring);
            if let Decision::Send(hedge) = r.next_attempt(&mut call, now) {
                // A pace probe, hedged at once to a, whose first token wins.
                hedged_at_once += u32::from(measuring);
                assert_eq!(hedge.provider, a);
                r.record(&mut call, hedge, from_a, now + a_takes);
                let mut detached = call.detach(1);
                r.record(&mut detached, first, from_b, now + b_takes);
            } else {
                r.record(&mut call, first, from_b, now + b_takes);
            }
            continue;
        }
        on_a += 1;
        if on_a % 3 != 0 {
            r.record(&mut call, first, from_a, now + a_takes);
            continue;
        }
        // Its first bytes reached the client, then it broke: continued on b.
        let broke = now + Duration::from_millis(500);
        call.require_continuation();
        r.record(&mut call, first, fail(ErrorClass::Server), broke);
        let Decision::Send(continuation) = r.next_attempt(&mut call, broke) else {
            panic!("no continuation")
        };
        assert_eq!(continuation.provider, b);
        r.record(&mut call, continuation, from_b, broke + b_takes);
    }
    assert!(
        to_b > 400,
        "a's broken streams spilled {to_b} of 600 calls to b"
    );
    assert_eq!(hedged_at_once, 0, "of {to_b} calls spilled to b");
}
