//! A failover has only what is left of its call's time: it goes to a provider whose usual answer
//! fits in it, not to one that would still be generating when the deadline ends the call
//! (`Router::fit_time_left`, `docs/routing.md`, "Retries"). Driven call by call in virtual time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

mod common;

use common::*;
use std::time::Duration;
use stilts_core::{Decision, ErrorClass, Instant, Outcome, PolicyKind, RequestMeta, Router, Usage};

/// A request without `max_tokens`, as the drivers describe it.
const UNBOUNDED: RequestMeta = RequestMeta {
    input_tokens: 100,
    output_tokens: 512,
    stream: false,
    deadline: None,
};

/// How long provider `name` takes for an answer of `tokens` output tokens: `fast` and `quick`
/// start in 0.2 s and write 250 tokens a second, `slow` starts in 0.3 s and writes 50 a second,
/// `slower` starts in 0.8 s and writes 25 a second.
fn answer_time(name: &str, tokens: u64) -> Duration {
    match name {
        "slow" => Duration::from_millis(300 + 20 * tokens),
        "slower" => Duration::from_millis(800 + 40 * tokens),
        _ => Duration::from_millis(200 + 4 * tokens),
    }
}

fn answered(name: &str, tokens: u64) -> Outcome {
    Outcome::Success {
        latency: answer_time(name, tokens),
        first_token: None,
        usage: Usage {
            input_tokens: 100,
            output_tokens: tokens,
        },
    }
}

/// Equal peers (`weighted`) answer calls of 100 to 400 output tokens, one call every second,
/// until the router knows each one's pace. Returns when the next call starts.
fn measured(names: &[&str]) -> (Router, Instant) {
    let mut r = router(names, |c| c.policy = PolicyKind::Weighted);
    let mut now = Instant::ZERO;
    for k in 0..600u64 {
        let mut call = r.begin(UNBOUNDED, now);
        let Decision::Send(attempt) = r.next_attempt(&mut call, now) else {
            panic!("no attempt")
        };
        let name = r.provider(attempt.provider).name.clone();
        let tokens = 100 + (k * 37) % 300;
        r.record(
            &mut call,
            attempt,
            answered(&name, tokens),
            now + answer_time(&name, tokens),
        );
        now = now + Duration::from_secs(1);
    }
    (r, now)
}

/// 1,200 calls with `deadline`, one every 10 s, answered with 20 to 180 tokens (in time on every
/// provider, so no first attempt runs out of a 4 s deadline); but every fourth one's first attempt
/// fails with a server error 2.5 s in: each such call's first provider and failover provider.
fn failovers(r: &mut Router, mut now: Instant, deadline: Duration) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    for k in 0..1_200u64 {
        let meta = RequestMeta {
            deadline: Some(deadline),
            ..UNBOUNDED
        };
        let mut call = r.begin(meta, now);
        let Decision::Send(first) = r.next_attempt(&mut call, now) else {
            panic!("no first attempt")
        };
        let first_name = r.provider(first.provider).name.clone();
        if k % 4 != 0 {
            let tokens = 20 + (k * 37) % 160;
            let done = now + answer_time(&first_name, tokens);
            r.record(&mut call, first, answered(&first_name, tokens), done);
            now = now + Duration::from_secs(10);
            continue;
        }
        let failed_at = now + Duration::from_millis(2_500);
        let failure = Outcome::Failure {
            class: ErrorClass::Server,
            latency: Duration::from_millis(2_500),
            retry_after: None,
        };
        r.record(&mut call, first, failure, failed_at);
        if let Decision::Send(failover) = r.next_attempt(&mut call, failed_at) {
            let name = r.provider(failover.provider).name.clone();
            let tokens = 20 + (k * 37) % 160;
            let done = failed_at + answer_time(&name, tokens);
            r.record(&mut call, failover, answered(&name, tokens), done);
            seen.push((first_name, name));
        }
        now = now + Duration::from_secs(10);
    }
    seen
}

/// With 1.5 s left, `slow` (2.3 to 5.3 s for the route's usual answer, 250 tokens falling toward
/// 100) cannot finish a failover and the two fast peers can: no failover goes to `slow`. With
/// 27.5 s left every peer fits, and the policy spreads the failovers as before.
#[test]
fn a_failover_goes_to_a_provider_whose_usual_answer_fits_in_the_time_left() {
    let (mut r, now) = measured(&["fast", "quick", "slow"]);
    let tight = failovers(&mut r, now, Duration::from_secs(4));
    assert!(tight.len() > 250, "{} failovers", tight.len());
    let to_slow = tight.iter().filter(|(_, to)| to == "slow").count();
    assert_eq!(
        to_slow,
        0,
        "{to_slow} of {} failovers went to slow",
        tight.len()
    );

    let (mut r, now) = measured(&["fast", "quick", "slow"]);
    let roomy = failovers(&mut r, now, Duration::from_secs(30));
    // From fast or quick, the failover goes to the other or to slow, half and half.
    let from_fast: Vec<_> = roomy.iter().filter(|(from, _)| from != "slow").collect();
    let to_slow = from_fast.iter().filter(|(_, to)| to == "slow").count();
    let share = to_slow as f64 / from_fast.len() as f64;
    assert!(
        (0.35..0.65).contains(&share),
        "slow took {share} of the failovers"
    );
}

/// With 0.5 s left no provider's usual answer fits: the failover goes to the fastest one left.
#[test]
fn when_no_answer_fits_the_failover_goes_to_the_fastest() {
    let (mut r, now) = measured(&["fast", "slow", "slower"]);
    let seen = failovers(&mut r, now, Duration::from_secs(3));
    assert!(seen.len() > 250, "{} failovers", seen.len());
    for (from, to) in &seen {
        let fastest_left = if from == "fast" { "slow" } else { "fast" };
        assert_eq!(to, fastest_left, "failover from {from}");
    }
}
