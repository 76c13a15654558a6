//! State shared between replicas: what one router learns steers its siblings, once the driver
//! carries reports between them (here by hand, as the simulator does).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

mod common;

use common::*;
use proptest::prelude::*;
use std::time::Duration;
use stilts_core::{
    BreakerState, Cooldown, ErrorClass, Instant, Opening, ProviderReport, ReplicaReport, Router,
    RouterConfig, SharedView,
};

/// Replica `to` takes in what `from` knows.
fn sync(from: &mut Router, to: &mut Router, now: Instant) {
    let report = from.shared_report(now);
    to.apply_shared(&SharedView::merge([&report]), now);
}

#[test]
fn a_breaker_opened_on_one_replica_steers_the_other() {
    let mut a = router(&["primary", "backup"], priority);
    let mut b = router(&["primary", "backup"], priority);
    for i in 0..5 {
        let t = run_call(
            &mut a,
            Instant::from_millis(i * 100),
            |name, _| match name {
                "primary" => fail(ErrorClass::Server),
                _ => ok(10),
            },
        );
        assert_eq!(t.end, Ok("backup".to_string()));
    }
    let now = Instant::from_secs(1);
    assert!(matches!(
        a.breaker_state(id(&a, "primary"), now),
        BreakerState::Open { .. }
    ));
    // Before the exchange, b still sends to the broken primary first.
    assert_eq!(
        b.breaker_state(id(&b, "primary"), now),
        BreakerState::Closed
    );
    sync(&mut a, &mut b, now);
    let t = run_call(&mut b, now, |_, _| ok(10));
    assert_eq!(t.sent, ["backup"], "b must skip the primary a found broken");
    // The same view again changes nothing more: the deadline is a's, not extended.
    let before = b.breaker_state(id(&b, "primary"), now);
    sync(&mut a, &mut b, now);
    assert_eq!(b.breaker_state(id(&b, "primary"), now), before);
}

#[test]
fn a_recovery_seen_by_one_replica_closes_the_others_breaker() {
    let mut a = router(&["primary", "backup"], priority);
    let mut b = router(&["primary", "backup"], priority);
    for i in 0..5 {
        run_call(
            &mut a,
            Instant::from_millis(i * 100),
            |name, _| match name {
                "primary" => fail(ErrorClass::Server),
                _ => ok(10),
            },
        );
    }
    sync(&mut a, &mut b, Instant::from_secs(1));
    // a's breaker half-opens after its open time; its probes succeed and close it.
    let mut later = Instant::from_secs(20);
    while a.breaker_state(id(&a, "primary"), later) != BreakerState::Closed {
        let t = run_call(&mut a, later, |_, _| ok(10));
        assert_eq!(t.sent, ["primary"]);
        later = later + Duration::from_millis(100);
        assert!(
            later < Instant::from_secs(21),
            "the probes did not close a's breaker"
        );
    }
    assert_eq!(
        a.breaker_state(id(&a, "primary"), later),
        BreakerState::Closed
    );
    // b was opened by a's report; a's recovery closes it without a probe of its own.
    sync(&mut a, &mut b, later);
    assert_eq!(
        b.breaker_state(id(&b, "primary"), later),
        BreakerState::Closed
    );
    // An old opening replayed after the recovery does not reopen it.
    let stale = ReplicaReport {
        spend_period: 0,
        spent_usd: 0.0,
        providers: vec![ProviderReport {
            name: "primary".into(),
            opened: Some(Opening {
                at: Instant::from_millis(400),
                until: Instant::from_secs(60),
            }),
            recovered_at: None,
            cooldown: None,
            minute: [0, 0],
        }],
    };
    b.apply_shared(&SharedView::merge([&stale]), later);
    assert_eq!(
        b.breaker_state(id(&b, "primary"), later),
        BreakerState::Closed
    );
}

#[test]
fn a_retry_after_reaches_the_siblings() {
    let mut a = router(&["primary", "backup"], priority);
    let mut b = router(&["primary", "backup"], priority);
    let t = run_call(&mut a, Instant::ZERO, |name, _| match name {
        "primary" => rate_limited(30_000),
        _ => ok(10),
    });
    assert_eq!(t.sent, ["primary", "backup"]);
    let now = Instant::from_secs(1);
    sync(&mut a, &mut b, now);
    let t = run_call(&mut b, now, |_, _| ok(10));
    assert_eq!(t.sent, ["backup"]);
    let status = b.status(now);
    assert_eq!(
        status[0].cooldown.map(|(kind, _)| kind),
        Some(Cooldown::RateLimited)
    );
    // It ends when a's ends.
    let t = run_call(&mut b, Instant::from_millis(30_100), |_, _| ok(10));
    assert_eq!(t.sent, ["primary"]);
}

#[test]
fn a_per_minute_limit_counts_the_siblings_traffic() {
    let limited = |c: &mut RouterConfig| {
        priority(c);
        c.providers[0].requests_per_minute = Some(10);
    };
    let mut a = router(&["a", "b"], limited);
    let mut b = router(&["a", "b"], limited);
    let mut sent = Vec::new();
    for i in 0..6 {
        sent.extend(run_call(&mut a, Instant::from_millis(i * 100), |_, _| ok(10)).sent);
    }
    let now = Instant::from_secs(1);
    sync(&mut a, &mut b, now);
    for i in 0..6 {
        let at = now + Duration::from_millis(i * 100);
        sent.extend(run_call(&mut b, at, |_, _| ok(10)).sent);
    }
    assert_eq!(sent.iter().filter(|s| *s == "a").count(), 10, "{sent:?}");
    assert_eq!(sent.iter().filter(|s| *s == "b").count(), 2, "{sent:?}");
    // A view without the sibling (it left, its report aged out) gives its share back.
    let later = Instant::from_secs(2);
    b.apply_shared(&SharedView::default(), later);
    assert_eq!(run_call(&mut b, later, |_, _| ok(10)).sent, ["a"]);
}

#[test]
fn a_siblings_deadline_is_capped_as_this_routers_own_would_be() {
    let mut b = router(&["primary", "backup"], priority);
    let now = Instant::from_secs(1);
    let far = Instant::from_secs(1_000_000);
    let forged = ReplicaReport {
        spend_period: 0,
        spent_usd: 0.0,
        providers: vec![ProviderReport {
            name: "primary".into(),
            opened: Some(Opening {
                at: now,
                until: far,
            }),
            recovered_at: None,
            cooldown: Some((Cooldown::Auth, far)),
            minute: [0, 0],
        }],
    };
    b.apply_shared(&SharedView::merge([&forged]), now);
    let status = &b.status(now)[0];
    // open_max (10 s) and the longest cool-down (quota_cooldown, 900 s by default) from now.
    assert_eq!(
        status.breaker,
        BreakerState::Open {
            until: now + Duration::from_secs(10)
        }
    );
    let (_, until) = status.cooldown.unwrap();
    assert_eq!(until, now + Duration::from_secs(900));
}

#[test]
fn the_spend_limit_is_global() {
    let paid = |c: &mut RouterConfig| {
        priority(c);
        c.providers[0].input_usd_per_mtok = Some(1_000.0);
        c.spend.limit_usd = Some(0.35);
    };
    let mut a = router(&["paid", "local"], paid);
    let mut b = router(&["paid", "local"], paid);
    // Each success costs $0.10; a spends $0.20.
    for i in 0..2 {
        assert_eq!(
            run_call(&mut a, Instant::from_secs(i), |_, _| ok(10)).sent,
            ["paid"]
        );
    }
    let now = Instant::from_secs(10);
    sync(&mut a, &mut b, now);
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.extend(run_call(&mut b, now + Duration::from_secs(i), |_, _| ok(10)).sent);
    }
    assert_eq!(sent, ["paid", "paid", "local"]);
    // The next period starts from zero on both.
    let tomorrow = Instant::from_secs(86_400);
    sync(&mut a, &mut b, tomorrow);
    assert_eq!(run_call(&mut b, tomorrow, |_, _| ok(10)).sent, ["paid"]);
}

#[test]
fn a_sibling_in_another_spend_period_leaves_the_others_counted() {
    let paid = |c: &mut RouterConfig| {
        priority(c);
        c.providers[0].input_usd_per_mtok = Some(1_000.0);
        c.spend.limit_usd = Some(0.35);
    };
    let mut b = router(&["paid", "local"], paid);
    let now = Instant::from_secs(10);
    let spent = |period: u64, usd: f64| ReplicaReport {
        spend_period: period,
        spent_usd: usd,
        providers: Vec::new(),
    };
    // One sibling spent $0.30 today; another, a period ahead (its clock, or a forged entry),
    // reports $5: it must not hide today's spend.
    let view = SharedView::merge([&spent(0, 0.30), &spent(1, 5.0)]);
    b.apply_shared(&view, now);
    assert!((b.siblings_spent_usd() - 0.30).abs() < 1e-9);
    assert_eq!(run_call(&mut b, now, |_, _| ok(10)).sent, ["paid"]);
    assert_eq!(
        run_call(&mut b, now + Duration::from_secs(1), |_, _| ok(10)).sent,
        ["local"]
    );
}

#[test]
fn events_dated_in_this_routers_future_are_ignored() {
    let mut b = router(&["primary", "backup"], priority);
    let now = Instant::from_secs(100);
    // A sibling whose clock runs an hour ahead "recovered" the primary: taken in, every opening
    // of b's own for the next hour would be closed again at the next exchange.
    let ahead = ReplicaReport {
        spend_period: 0,
        spent_usd: 0.0,
        providers: vec![ProviderReport {
            name: "primary".into(),
            opened: Some(Opening {
                at: now + Duration::from_secs(3_600),
                until: now + Duration::from_secs(3_605),
            }),
            recovered_at: Some(now + Duration::from_secs(3_601)),
            cooldown: None,
            minute: [0, 0],
        }],
    };
    for i in 0..5 {
        run_call(
            &mut b,
            now + Duration::from_millis(i * 10),
            |name, _| match name {
                "primary" => fail(ErrorClass::Server),
                _ => ok(10),
            },
        );
    }
    let later = now + Duration::from_secs(1);
    assert!(matches!(
        b.breaker_state(id(&b, "primary"), later),
        BreakerState::Open { .. }
    ));
    b.apply_shared(&SharedView::merge([&ahead]), later);
    assert!(
        matches!(
            b.breaker_state(id(&b, "primary"), later),
            BreakerState::Open { .. }
        ),
        "a recovery dated an hour ahead must not close b's own opening"
    );
    assert_eq!(b.shared_report(later).providers[0].recovered_at, None);
}

#[test]
fn a_report_from_another_config_only_touches_providers_by_name() {
    let mut a = router(&["x", "primary"], priority);
    let mut b = router(&["primary", "backup"], priority);
    let now = Instant::from_secs(1);
    for i in 0..5 {
        run_call(
            &mut a,
            Instant::from_millis(i * 100),
            |name, _| match name {
                "x" => fail(ErrorClass::Server),
                _ => ok(10),
            },
        );
    }
    sync(&mut a, &mut b, now);
    assert_eq!(
        b.breaker_state(id(&b, "primary"), now),
        BreakerState::Closed
    );
    assert_eq!(b.breaker_state(id(&b, "backup"), now), BreakerState::Closed);
}

fn report() -> impl Strategy<Value = ReplicaReport> {
    let provider = (
        prop::sample::select(vec!["a", "b", "c"]),
        prop::option::of((0u64..100, 1u64..100)),
        prop::option::of(0u64..100),
        prop::option::of((any::<bool>(), 0u64..100)),
        (0u64..50, 0u64..5000),
    )
        .prop_map(
            |(name, opened, recovered, cooldown, minute)| ProviderReport {
                name: name.into(),
                opened: opened.map(|(at, len)| Opening {
                    at: Instant::from_secs(at),
                    until: Instant::from_secs(at + len),
                }),
                recovered_at: recovered.map(Instant::from_secs),
                cooldown: cooldown.map(|(rate, until)| {
                    let kind = if rate {
                        Cooldown::RateLimited
                    } else {
                        Cooldown::Auth
                    };
                    (kind, Instant::from_secs(until))
                }),
                minute: [minute.0, minute.1],
            },
        );
    (0u64..3, 0u32..100, prop::collection::vec(provider, 0..4)).prop_map(
        |(spend_period, cents, providers)| ReplicaReport {
            spend_period,
            spent_usd: f64::from(cents) / 100.0,
            providers,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The merge does not depend on the order reports arrive in (spend up to rounding): every
    /// field of every provider, ties included.
    #[test]
    fn merging_ignores_report_order(reports in prop::collection::vec(report(), 0..5)) {
        let sorted = |mut v: SharedView| {
            v.providers.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        let forward = sorted(SharedView::merge(&reports));
        let backward = sorted(SharedView::merge(reports.iter().rev()));
        prop_assert_eq!(&forward.providers, &backward.providers);
        prop_assert_eq!(forward.spent_usd.len(), backward.spent_usd.len());
        for ((p, a), (q, b)) in forward.spent_usd.iter().zip(&backward.spent_usd) {
            prop_assert_eq!(p, q);
            prop_assert!((a - b).abs() < 1e-9);
        }
    }

    /// Applying a view twice leaves a router as applying it once, and a breaker opened by a view
    /// opens until the view's latest deadline, never past the router's own cap (open_max, 10 s).
    #[test]
    fn applying_a_view_is_idempotent(reports in prop::collection::vec(report(), 1..4), now in 0u64..120) {
        let now = Instant::from_secs(now);
        let view = SharedView::merge(&reports);
        let mut once = router(&["a", "b", "c"], |_| {});
        once.apply_shared(&view, now);
        let mut twice = router(&["a", "b", "c"], |_| {});
        twice.apply_shared(&view, now);
        twice.apply_shared(&view, now);
        prop_assert_eq!(once.status(now), twice.status(now));
        prop_assert_eq!(once.shared_report(now), twice.shared_report(now));
        for status in once.status(now) {
            if let BreakerState::Open { until } = status.breaker {
                let latest = view.providers.iter().find(|p| p.name == status.name)
                    .and_then(|p| p.opened).map(|o| o.until.min(now + Duration::from_secs(10)));
                prop_assert_eq!(Some(until), latest);
            }
        }
    }
}
