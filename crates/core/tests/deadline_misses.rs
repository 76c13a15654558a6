//! Deadline misses: a provider whose calls keep running out of their deadline loses traffic to one
//! that finishes them in time, within a tier and across tiers; a deadline nobody meets moves
//! nothing; answers in time bring the traffic back (`docs/routing.md`, "Spill"). Driven call by
//! call in virtual time, one call every 5 s with a client's 4 s deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

mod common;

use common::*;
use std::time::Duration;
use stilts_core::{Decision, ErrorClass, Instant, Outcome, PolicyKind, RequestMeta, Router};

const DEADLINE: Duration = Duration::from_secs(4);

/// Runs `calls` calls, one every 5 s from `from`; the first attempt of the `k`-th call on
/// provider `p` runs out of the call's deadline when `misses(p, k)`, else is answered in 1 s.
/// Returns the share of calls whose first attempt went to `b`, and where the next call starts.
fn share_to_b(
    r: &mut Router,
    from: Instant,
    calls: u32,
    misses: impl Fn(&str, u32) -> bool,
) -> (f64, Instant) {
    let mut to_b = 0;
    let mut now = from;
    for k in 0..calls {
        let meta = RequestMeta {
            stream: true,
            deadline: Some(DEADLINE),
            ..RequestMeta::default()
        };
        let mut call = r.begin(meta, now);
        let Decision::Send(attempt) = r.next_attempt(&mut call, now) else {
            panic!("no attempt")
        };
        let name = r.provider(attempt.provider).name.clone();
        to_b += u32::from(name == "b");
        if misses(&name, k) {
            let outcome = Outcome::Failure {
                class: ErrorClass::Timeout,
                latency: DEADLINE,
                retry_after: None,
            };
            r.record(&mut call, attempt, outcome, now + DEADLINE);
        } else {
            let answered = now + Duration::from_secs(1);
            r.record(&mut call, attempt, ok(1_000), answered);
        }
        now = now + Duration::from_secs(5);
    }
    (f64::from(to_b) / f64::from(calls), now)
}

fn weighted(c: &mut stilts_core::RouterConfig) {
    c.policy = PolicyKind::Weighted;
}

/// Of two equal peers, the one whose calls run out of the deadline half the time keeps only a
/// trickle of the traffic (enough to stay measured); answers in time bring its share back.
#[test]
fn a_peer_that_misses_deadlines_loses_most_of_its_share_until_it_answers_in_time() {
    let mut r = router(&["a", "b"], weighted);
    let half_on_a = |p: &str, k: u32| p == "a" && k % 2 == 0;
    let (_, now) = share_to_b(&mut r, Instant::ZERO, 200, half_on_a);
    let (to_b, now) = share_to_b(&mut r, now, 600, half_on_a);
    assert!((0.85..0.99).contains(&to_b), "b took {to_b}");
    // a answers in time again: its trickle of calls measures that, and the share comes back.
    let (_, now) = share_to_b(&mut r, now, 1_500, |_, _| false);
    let (to_b, _) = share_to_b(&mut r, now, 600, |_, _| false);
    assert!((0.4..0.6).contains(&to_b), "b took {to_b}");
}

/// A deadline that every provider misses as often says nothing about which is better: the
/// traffic stays where the policy puts it.
#[test]
fn a_deadline_nobody_meets_moves_nothing() {
    let mut r = router(&["a", "b"], weighted);
    let (to_b, _) = share_to_b(&mut r, Instant::ZERO, 1_000, |_, k| k % 2 == 0);
    assert!((0.4..0.6).contains(&to_b), "b took {to_b}");
}

/// A rare miss (one call in a hundred) moves nothing either.
#[test]
fn a_rare_miss_moves_nothing() {
    let mut r = router(&["a", "b"], weighted);
    let (to_b, _) = share_to_b(&mut r, Instant::ZERO, 1_000, |p, k| {
        p == "a" && k % 100 == 0
    });
    assert!((0.4..0.6).contains(&to_b), "b took {to_b}");
}

/// Under `priority`, a preferred provider whose calls keep running out of the deadline spills
/// most of its traffic to the next tier, which finishes them in time.
#[test]
fn a_preferred_provider_that_misses_deadlines_spills_to_the_next_tier() {
    let mut r = router(&["a", "b"], priority);
    let (to_b, now) = share_to_b(&mut r, Instant::ZERO, 100, |_, _| false);
    assert_eq!(to_b, 0.0, "spilled with nothing missed");
    let third_on_a = |p: &str, k: u32| p == "a" && k % 3 == 0;
    let (_, now) = share_to_b(&mut r, now, 200, third_on_a);
    let (to_b, _) = share_to_b(&mut r, now, 600, third_on_a);
    assert!((0.8..0.99).contains(&to_b), "b took {to_b}");
}

/// A client whose deadline is shorter than the provider's usual latency (10 ms) misses every
/// deadline there by its own choice: that moves no other client's traffic.
#[test]
fn a_client_s_too_short_deadline_moves_no_one_else() {
    let mut r = router(&["a", "b"], priority);
    let mut now = Instant::ZERO;
    let mut others_to_b = 0;
    for _ in 0..600 {
        let hurried = RequestMeta {
            deadline: Some(Duration::from_millis(10)),
            ..RequestMeta::default()
        };
        let mut call = r.begin(hurried, now);
        let Decision::Send(attempt) = r.next_attempt(&mut call, now) else {
            panic!("no attempt")
        };
        let cut = Outcome::Failure {
            class: ErrorClass::Timeout,
            latency: Duration::from_millis(10),
            retry_after: None,
        };
        r.record(&mut call, attempt, cut, now + Duration::from_millis(10));
        now = now + Duration::from_secs(1);
        let mut call = r.begin(RequestMeta::default(), now);
        let Decision::Send(attempt) = r.next_attempt(&mut call, now) else {
            panic!("no attempt")
        };
        others_to_b += u32::from(r.provider(attempt.provider).name == "b");
        r.record(
            &mut call,
            attempt,
            ok(300),
            now + Duration::from_millis(300),
        );
        now = now + Duration::from_secs(1);
    }
    assert_eq!(
        others_to_b, 0,
        "the hurried client's misses moved other calls to b"
    );
}
