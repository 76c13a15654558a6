//! Quotas that providers report on their answers (remaining requests and tokens, and when they
//! reset): a provider about to say 429 is skipped until its reset, and with every provider out of
//! quota a call waits for a short reset.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

mod common;

use common::*;
use std::time::Duration;
use stilts_core::{Decision, Instant, PolicyKind, RequestMeta};

/// Quota-aware admission: the provider's reported remaining requests and tokens steer calls away
/// before it says 429, until the reported reset.
#[test]
fn a_provider_out_of_reported_quota_is_skipped_until_its_reset() {
    let mut r = router(&["a", "b"], |c| c.policy = PolicyKind::Priority);
    let a = id(&r, "a");
    let t0 = Instant::from_secs(1);
    r.note_quota(
        a,
        stilts_core::Quota {
            requests: Some((1, Duration::from_secs(10))),
            tokens: None,
        },
        t0,
    );
    let sent = |r: &mut stilts_core::Router, at: Instant| run_call(r, at, |_, _| ok(100)).sent;
    // One request left: this call uses it; the next goes to b without trying a.
    assert_eq!(sent(&mut r, t0), ["a"]);
    assert_eq!(sent(&mut r, t0 + Duration::from_secs(1)), ["b"]);
    // After the reset, a is preferred again.
    assert_eq!(sent(&mut r, t0 + Duration::from_secs(10)), ["a"]);

    // Tokens: 500 left cannot cover a request of 600 (100 in, 500 out).
    r.note_quota(
        a,
        stilts_core::Quota {
            requests: None,
            tokens: Some((500, Duration::from_secs(60))),
        },
        t0 + Duration::from_secs(11),
    );
    let meta = RequestMeta {
        input_tokens: 100,
        output_tokens: 500,
        ..RequestMeta::default()
    };
    let now = t0 + Duration::from_secs(12);
    let mut call = r.begin(meta, now);
    let Decision::Send(attempt) = r.next_attempt(&mut call, now) else {
        panic!("no attempt");
    };
    assert_eq!(r.provider(attempt.provider).name, "b");
    // A small request still fits.
    let meta = RequestMeta {
        input_tokens: 100,
        output_tokens: 100,
        ..RequestMeta::default()
    };
    let mut call = r.begin(meta, now);
    let Decision::Send(attempt) = r.next_attempt(&mut call, now) else {
        panic!("no attempt");
    };
    assert_eq!(r.provider(attempt.provider).name, "a");
}

#[test]
fn with_every_provider_out_of_quota_a_call_waits_for_a_short_reset() {
    let mut r = router(&["a"], |_| {});
    let a = id(&r, "a");
    let t0 = Instant::from_secs(1);
    r.note_quota(
        a,
        stilts_core::Quota {
            requests: Some((0, Duration::from_millis(800))),
            tokens: None,
        },
        t0,
    );
    let t = run_call(&mut r, t0, |_, _| ok(100));
    assert_eq!(t.waited, [Duration::from_millis(800)], "{t:?}");
    assert_eq!(t.end, Ok("a".to_owned()));
}
