//! A stream call's attempts race to their first token: the drivers commit the call to the first
//! one and cancel the others then, while the call goes on (see `Router::record`). A loser
//! cancelled so said nothing of its provider: if the winner breaks later, the continuation may go
//! there as a first attempt of the call.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use std::time::Duration;
use stilts_core::{Decision, ErrorClass, Instant, Outcome, RequestMeta};

fn stream() -> RequestMeta {
    RequestMeta {
        input_tokens: 900,
        output_tokens: 512,
        stream: true,
        deadline: Some(Duration::from_secs(30)),
    }
}

#[test]
fn a_hedge_cancelled_at_the_winner_s_first_token_is_a_free_continuation_target() {
    let mut r = router(&["a", "b"], |c| {
        priority(c);
        c.hedge.delay_ms = Some(1_000);
        c.providers[1].prefill_continuation = Some(true);
    });
    let now = Instant::ZERO;
    let mut call = r.begin(stream(), now);
    let Decision::Send(first) = r.next_attempt(&mut call, now) else {
        panic!("no attempt");
    };
    let Decision::Hedge { at } = r.next_attempt(&mut call, now) else {
        panic!("no configured hedge");
    };
    let Decision::Send(hedge) = r.next_attempt(&mut call, at) else {
        panic!("no hedge");
    };
    assert_eq!((first.provider.index(), hedge.provider.index()), (0, 1));
    // a's first token comes first: the drivers cancel b's attempt then; the call goes on.
    let first_token = at + Duration::from_millis(200);
    let recorded = r.record(&mut call, hedge, Outcome::Cancelled, first_token);
    assert_eq!(recorded, Outcome::Cancelled, "a plain loser, not a timeout");
    // a's stream breaks after its bytes reached the client: only b can continue it.
    let broke = first_token + Duration::from_secs(2);
    call.require_continuation();
    r.record(&mut call, first, fail(ErrorClass::Server), broke);
    let Decision::Send(continuation) = r.next_attempt(&mut call, broke) else {
        panic!("no continuation");
    };
    assert_eq!(continuation.provider.index(), 1);
    assert!(!continuation.is_hedge);
    let b = &r.status(broke)[1];
    assert_eq!(
        b.stats.free_failovers, 1,
        "b had headroom and the call had not really tried it: the continuation is not charged"
    );
}
