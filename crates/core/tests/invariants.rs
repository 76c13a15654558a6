//! Property tests of the router's invariants over arbitrary sequences of requests, outcomes and
//! time steps, with several calls in flight at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;
use stilts_core::{
    Attempt, BreakerState, Call, Decision, ErrorClass, Instant, Outcome, PolicyKind,
    ProviderConfig, ProviderId, RequestMeta, Router, RouterConfig, Usage,
};

#[derive(Clone, Debug)]
struct Op {
    advance_ms: u16,
    action: u8,
    outcome: u8,
    latency_ms: u16,
}

fn op() -> impl Strategy<Value = Op> {
    (0u16..3_000, any::<u8>(), any::<u8>(), 1u16..20_000).prop_map(
        |(advance_ms, action, outcome, latency_ms)| Op {
            advance_ms,
            action,
            outcome,
            latency_ms,
        },
    )
}

#[derive(Clone, Debug)]
struct Setup {
    policy: PolicyKind,
    providers: usize,
    hedge_ms: Option<u64>,
    max_attempts: u32,
    ratio: f64,
    min_per_second: f64,
    seed: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![
            Just(PolicyKind::Weighted),
            Just(PolicyKind::Priority),
            Just(PolicyKind::RoundRobin),
            Just(PolicyKind::LeastLatency),
            Just(PolicyKind::Cost),
        ],
        1usize..6,
        proptest::option::of(1u64..3_000),
        1u32..7,
        0.0f64..1.0,
        0.0f64..3.0,
        any::<u64>(),
    )
        .prop_map(
            |(policy, providers, hedge_ms, max_attempts, ratio, min_per_second, seed)| Setup {
                policy,
                providers,
                hedge_ms,
                max_attempts,
                ratio,
                min_per_second,
                seed,
            },
        )
}

fn config(s: &Setup, reversed: bool) -> RouterConfig {
    let mut c = RouterConfig {
        policy: s.policy,
        providers: (0..s.providers)
            .map(|i| ProviderConfig {
                weight: Some(1 + i as u32),
                priority: Some((i / 2) as u32),
                input_usd_per_mtok: Some(i as f64),
                context_window: (i == 1).then_some(4_000),
                prefill_continuation: Some(i % 2 == 0),
                ..ProviderConfig::named(format!("p{i}"))
            })
            .collect(),
        max_attempts: Some(s.max_attempts),
        deadline_ms: Some(30_000),
        ..RouterConfig::default()
    };
    c.hedge.delay_ms = s.hedge_ms;
    c.budget.ratio = Some(s.ratio);
    c.budget.min_per_second = Some(s.min_per_second);
    c.breaker.consecutive_failures = Some(3);
    c.breaker.minimum_calls = Some(5);
    if reversed {
        c.providers.reverse();
    }
    c
}

fn build(s: &Setup) -> Router {
    Router::new(config(s, false).validate().expect("valid"), s.seed)
}

fn outcome(code: u8, latency_ms: u16) -> Outcome {
    let latency = Duration::from_millis(u64::from(latency_ms));
    match code % 13 {
        0..=3 => Outcome::Success {
            latency,
            first_token: None,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 10,
            },
        },
        12 => Outcome::Cancelled,
        n => Outcome::Failure {
            class: ErrorClass::ALL[usize::from(n - 4) % 8],
            latency,
            retry_after: (n % 2 == 0).then(|| Duration::from_millis(u64::from(latency_ms) / 2)),
        },
    }
}

struct Active {
    call: Call,
    in_flight: Vec<Attempt>,
    steps: u32,
    saw_bad_request: bool,
}

/// Everything observed during a run, for the assertions and for determinism checks.
#[derive(Default, Debug, PartialEq)]
struct Log {
    decisions: Vec<String>,
    requests: u64,
    retries: u64,
    /// Failovers to an untried provider with headroom, which the budget does not charge.
    free_failovers: u64,
    /// Attempts after a call's first sent to the provider that fails every attempt, if any.
    extra_to_failing: u64,
    first_at: Option<Instant>,
    last_at: Instant,
}

struct Harness {
    router: Router,
    setup: Setup,
    now: Instant,
    active: Vec<Active>,
    open_until: BTreeMap<String, Instant>,
    reversed: bool,
    log: Log,
    /// A provider (by name) whose every attempt fails with a server error.
    failing: Option<String>,
}

impl Harness {
    fn name_of(&self, p: ProviderId) -> &str {
        &self.router.config().providers[p.index()].name
    }

    fn drive(&mut self, index: usize) {
        let probes = self.router.config().breaker.half_open_probes;
        let before: Vec<BreakerState> = self
            .router
            .status(self.now)
            .iter()
            .map(|s| s.breaker)
            .collect();
        let panics_before: u64 = (0..self.setup.providers)
            .filter_map(ProviderId::from_index)
            .map(|p| self.router.stats(p).panic_sends)
            .sum();
        let a = &mut self.active[index];
        a.steps += 1;
        let bound = 4 * self.setup.max_attempts + 2 * self.setup.providers as u32 + 8;
        assert!(a.steps <= bound, "call took more than {bound} steps");
        let decision = self.router.next_attempt(&mut a.call, self.now);
        self.log.decisions.push(format!("{:?}", decision));
        match decision {
            Decision::Send(attempt) => {
                let state = before[attempt.provider.index()];
                let panicked = (0..self.setup.providers)
                    .filter_map(ProviderId::from_index)
                    .map(|p| self.router.stats(p).panic_sends)
                    .sum::<u64>()
                    > panics_before;
                // Past its breaker only by panic routing (no provider available), counted as such.
                if !panicked {
                    match state {
                        BreakerState::Closed => {}
                        BreakerState::HalfOpen { in_flight, .. } => {
                            assert!(in_flight < probes, "more probes than allowed")
                        }
                        BreakerState::Open { .. } => panic!("sent to an open provider"),
                    }
                }
                assert!(!a.saw_bad_request, "a bad request was retried");
                assert!(attempt.deadline <= a.call.deadline());
                assert!(attempt.number <= self.setup.max_attempts);
                if attempt.number > 1 {
                    self.log.retries += 1;
                }
                let to_failing = self.failing.as_deref()
                    == Some(&self.router.config().providers[attempt.provider.index()].name);
                if attempt.number > 1 && to_failing {
                    self.log.extra_to_failing += 1;
                }
                a.in_flight.push(attempt);
            }
            Decision::Wait { until } => {
                assert!(
                    until > self.now && until < a.call.deadline(),
                    "wait past the deadline"
                );
            }
            Decision::Hedge { at } => {
                assert!(
                    at > self.now && at < a.call.deadline(),
                    "hedge past the deadline"
                );
            }
            Decision::Pending => assert!(!a.in_flight.is_empty()),
            Decision::Done { .. } | Decision::GiveUp(_) => {
                let mut a = self.active.swap_remove(index);
                for attempt in a.in_flight.drain(..) {
                    self.router
                        .record(&mut a.call, attempt, Outcome::Cancelled, self.now);
                }
            }
        }
        self.check_open_deadlines();
    }

    fn check_open_deadlines(&mut self) {
        for s in self.router.status(self.now) {
            if let BreakerState::Open { until } = s.breaker {
                if let Some(previous) = self.open_until.get(&s.name) {
                    if self.now < *previous {
                        assert!(until >= *previous, "an open deadline moved earlier");
                    }
                }
                self.open_until.insert(s.name, until);
            }
        }
    }

    fn step(&mut self, op: &Op) {
        self.now = self.now + Duration::from_millis(u64::from(op.advance_ms));
        self.log.first_at.get_or_insert(self.now);
        self.log.last_at = self.now;
        // Calls whose deadline passed get their in-flight attempts timed out first.
        let n = self.active.len();
        match op.action % 4 {
            3 if op.outcome % 16 == 0 => {
                // A config reload that moves every provider.
                self.reversed = !self.reversed;
                let c = config(&self.setup, self.reversed)
                    .validate()
                    .expect("valid");
                self.router.reconfigure(c);
                self.check_open_deadlines();
            }
            3 if op.outcome % 16 == 1 && n > 0 => {
                // Stream bytes reached the client: only exact continuation from now on.
                let i = usize::from(op.action / 4) % n;
                self.active[i].call.require_continuation();
                self.drive(i);
            }
            0 if n < 8 => {
                let meta = RequestMeta {
                    input_tokens: u32::from(op.latency_ms),
                    output_tokens: u32::from(op.outcome),
                    stream: op.action % 2 == 0,
                    deadline: None,
                };
                let call = self.router.begin(meta, self.now);
                self.log.requests += 1;
                self.active.push(Active {
                    call,
                    in_flight: Vec::new(),
                    steps: 0,
                    saw_bad_request: false,
                });
                self.drive(n);
            }
            _ if n > 0 => {
                let i = usize::from(op.action / 4) % n;
                let failing = self.active[i]
                    .in_flight
                    .last()
                    .is_some_and(|t| self.failing.as_deref() == Some(self.name_of(t.provider)));
                let a = &mut self.active[i];
                if let Some(attempt) = a.in_flight.pop() {
                    let result = if failing {
                        Outcome::Failure {
                            class: ErrorClass::Server,
                            latency: Duration::from_millis(u64::from(op.latency_ms)),
                            retry_after: None,
                        }
                    } else if self.now >= attempt.deadline {
                        Outcome::Failure {
                            class: ErrorClass::Timeout,
                            latency: Duration::from_millis(u64::from(op.latency_ms)),
                            retry_after: None,
                        }
                    } else {
                        outcome(op.outcome, op.latency_ms)
                    };
                    if let Outcome::Failure {
                        class: ErrorClass::BadRequest,
                        ..
                    } = result
                    {
                        a.saw_bad_request = true;
                    }
                    self.router.record(&mut a.call, attempt, result, self.now);
                }
                self.drive(i);
            }
            _ => {}
        }
    }

    fn drain(&mut self) {
        let mut guard = 0;
        while let Some(last) = self.active.len().checked_sub(1) {
            guard += 1;
            assert!(guard < 10_000, "calls did not drain");
            self.now = self.now + Duration::from_millis(700);
            self.log.last_at = self.now;
            let a = &mut self.active[last];
            if let Some(attempt) = a.in_flight.pop() {
                let result = outcome(5, 10);
                self.router.record(&mut a.call, attempt, result, self.now);
            }
            self.drive(last);
        }
    }
}

fn run(setup: &Setup, ops: &[Op]) -> Log {
    run_with(setup, ops, None)
}

fn run_with(setup: &Setup, ops: &[Op], failing: Option<&str>) -> Log {
    let mut h = Harness {
        failing: failing.map(str::to_owned),
        router: build(setup),
        setup: setup.clone(),
        now: Instant::from_secs(1),
        active: Vec::new(),
        open_until: BTreeMap::new(),
        reversed: false,
        log: Log::default(),
    };
    for op in ops {
        h.step(op);
    }
    h.drain();
    for s in h.router.status(h.now) {
        assert_eq!(s.in_flight, 0, "in-flight count leaked on {}", s.name);
        h.log.free_failovers += s.stats.free_failovers;
    }
    h.log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Open providers get no traffic beyond the probes, no decision points past the deadline,
    /// every call ends in a bounded number of steps, bad requests are never retried, open
    /// deadlines never move earlier, and no in-flight count leaks.
    #[test]
    fn safety_invariants_hold(setup in setup(), ops in proptest::collection::vec(op(), 1..400)) {
        run(&setup, &ops);
    }

    /// Over any sequence, the retries (and hedges) the budget charges stay within ratio ×
    /// requests plus the floor for each 0.9 window the run spans; the free ones are failovers to a
    /// provider with headroom, never more than the retries.
    #[test]
    fn retries_stay_within_the_budget(setup in setup(), ops in proptest::collection::vec(op(), 1..400)) {
        let log = run(&setup, &ops);
        let span = log.last_at.saturating_since(log.first_at.unwrap_or(log.last_at)).as_secs_f64();
        // Deposits and withdrawals expire a tenth of the window (10 s) at a time: each withdrawal
        // holds its token for at least 9 s.
        let holds = (span / 9.0).ceil() + 1.0;
        let bound = setup.ratio * log.requests as f64 + setup.min_per_second * 10.0 * holds;
        prop_assert!(log.free_failovers <= log.retries);
        let charged = log.retries - log.free_failovers;
        prop_assert!(charged as f64 <= bound + 1e-9, "{} charged retries > bound {}", charged, bound);
    }

    /// The budget bounds the extra load on any one provider: a provider that fails every attempt
    /// receives, beyond the first attempts of calls, no more than the budget allows plus one free
    /// failover per breaker window in which it had no recent calls (a failover is free only to a
    /// provider with headroom, which a provider failing every call has only with an empty window).
    #[test]
    fn a_failing_provider_gets_no_more_extra_load_than_the_budget(
        setup in setup(),
        ops in proptest::collection::vec(op(), 1..400),
        which in 0usize..6,
        tight in any::<bool>(),
    ) {
        // Half the cases with no budget at all, where only free failovers can reach it.
        let mut setup = setup;
        if tight {
            setup.ratio = 0.0;
            setup.min_per_second = 0.0;
            setup.providers = setup.providers.max(2);
        }
        let name = format!("p{}", which % setup.providers);
        let log = run_with(&setup, &ops, Some(&name));
        let span = log.last_at.saturating_since(log.first_at.unwrap_or(log.last_at)).as_secs_f64();
        let holds = (span / 9.0).ceil() + 1.0;
        let budget = setup.ratio * log.requests as f64 + setup.min_per_second * 10.0 * holds;
        // The breaker window is 30 s: one free failover each time it emptied.
        let free = (span / 30.0).ceil() + 1.0;
        prop_assert!(
            log.extra_to_failing as f64 <= budget + free + 1e-9,
            "{} extra attempts to the failing {} > budget {} + {} free", log.extra_to_failing, name, budget, free
        );
    }

    /// The same seed and inputs give the same decision sequence.
    #[test]
    fn decisions_are_deterministic(setup in setup(), ops in proptest::collection::vec(op(), 1..200)) {
        prop_assert_eq!(run(&setup, &ops), run(&setup, &ops));
    }
}

#[test]
fn weights_are_honoured() {
    let mut c = RouterConfig {
        providers: vec![
            ProviderConfig {
                weight: Some(1),
                ..ProviderConfig::named("a")
            },
            ProviderConfig {
                weight: Some(2),
                ..ProviderConfig::named("b")
            },
            ProviderConfig {
                weight: Some(7),
                ..ProviderConfig::named("c")
            },
        ],
        ..RouterConfig::default()
    };
    c.budget.min_per_second = Some(0.0);
    let mut r = Router::new(c.validate().expect("valid"), 2024);
    let mut counts = [0u32; 3];
    let n = 100_000;
    for i in 0..n {
        let now = Instant::from_micros_for_test(i);
        let mut call = r.begin(RequestMeta::default(), now);
        let Decision::Send(a) = r.next_attempt(&mut call, now) else {
            panic!("no send")
        };
        counts[a.provider.index()] += 1;
        r.record(&mut call, a, Outcome::Cancelled, now);
    }
    for (count, weight) in counts.iter().zip([1.0, 2.0, 7.0]) {
        let share = f64::from(*count) / f64::from(n as u32);
        let expected = weight / 10.0;
        // 100k draws: the standard error is below 0.0015; allow 4 of them.
        assert!(
            (share - expected).abs() < 0.006,
            "share {share} vs {expected}: {counts:?}"
        );
    }
}

#[test]
fn another_seed_gives_other_decisions() {
    let setup = |seed| Setup {
        policy: PolicyKind::Weighted,
        providers: 4,
        hedge_ms: None,
        max_attempts: 4,
        ratio: 0.2,
        min_per_second: 1.0,
        seed,
    };
    let ops: Vec<Op> = (0..300u32)
        .map(|i| Op {
            advance_ms: (i * 37 % 900) as u16,
            action: (i * 7 % 251) as u8,
            outcome: (i * 13 % 256) as u8,
            latency_ms: (1 + i * 101 % 5_000) as u16,
        })
        .collect();
    assert_eq!(run(&setup(1), &ops), run(&setup(1), &ops));
    assert_ne!(
        run(&setup(1), &ops).decisions,
        run(&setup(2), &ops).decisions
    );
}

trait MicrosForTest {
    fn from_micros_for_test(us: u64) -> Instant;
}

impl MicrosForTest for Instant {
    fn from_micros_for_test(us: u64) -> Instant {
        Instant::from_nanos(us * 1_000)
    }
}
