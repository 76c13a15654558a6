//! One routing decision plus its outcome record, for each policy, with 3 and 8 providers.
//!
//! Run: `cargo bench -p stilts-core --bench decide`. Each iteration is the whole life of a
//! successful one-attempt call: `begin`, `next_attempt` (the decision), `record` (the outcome) and
//! the final `next_attempt` that reports `Done`. Time advances 1 ms per iteration so the sliding
//! windows and EWMA decay do real work.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A broken bench setup should stop the bench.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use stilts_core::{
    Decision, Instant, Outcome, PolicyKind, ProviderConfig, RequestMeta, Router, RouterConfig,
    Usage,
};

fn router(policy: PolicyKind, providers: usize) -> Router {
    let config = RouterConfig {
        policy,
        providers: (0..providers)
            .map(|i| ProviderConfig {
                weight: Some(1 + i as u32),
                input_usd_per_mtok: Some(0.5 + i as f64),
                output_usd_per_mtok: Some(2.0 + i as f64),
                context_window: Some(128_000),
                ..ProviderConfig::named(format!("p{i}"))
            })
            .collect(),
        ..RouterConfig::default()
    };
    match config.validate() {
        Ok(valid) => Router::new(valid, 1),
        Err(e) => panic!("bench config: {e}"),
    }
}

fn decide_and_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_and_record");
    for policy in [
        PolicyKind::Weighted,
        PolicyKind::Priority,
        PolicyKind::RoundRobin,
        PolicyKind::LeastLatency,
        PolicyKind::Cost,
    ] {
        for providers in [3, 8] {
            let mut r = router(policy, providers);
            let mut now = Instant::from_secs(1);
            let meta = RequestMeta {
                input_tokens: 500,
                output_tokens: 200,
                stream: false,
                deadline: None,
            };
            let outcome = Outcome::Success {
                latency: Duration::from_millis(800),
                first_token: None,
                usage: Usage {
                    input_tokens: 500,
                    output_tokens: 200,
                },
            };
            group.bench_function(BenchmarkId::new(policy.as_str(), providers), |b| {
                b.iter(|| {
                    now = now + Duration::from_millis(1);
                    let mut call = r.begin(black_box(meta), now);
                    let Decision::Send(attempt) = r.next_attempt(&mut call, now) else {
                        panic!("a healthy router must send")
                    };
                    r.record(&mut call, attempt, black_box(outcome), now);
                    black_box(r.next_attempt(&mut call, now))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decide_and_record);
criterion_main!(benches);
