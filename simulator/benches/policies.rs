//! Criterion bench: one fixed scenario (10 simulated minutes at 200 rps, 120 000 requests, three
//! providers, an outage) under each routing policy and each baseline. Users can copy it to benchmark
//! their own policy configs. `cargo bench -p stilts-sim --bench policies`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;
use stilts_sim::{Scenario, simulate_one};

const SCENARIO: &str = r#"
name = "bench"
duration_s = 600
[traffic]
rate_rps = 200
stream_share = 0.5
output_tokens = { p50 = 150, p99 = 450 }
deadline_ms = 30000
[[providers]]
name = "openai"
errors = { server = 0.003, rate_limited = 0.001 }
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.60
[[providers]]
name = "anthropic"
errors = { server = 0.003, rate_limited = 0.001 }
input_usd_per_mtok = 1.0
output_usd_per_mtok = 5.0
[[providers]]
name = "gemini"
errors = { server = 0.003, rate_limited = 0.001 }
input_usd_per_mtok = 0.3
output_usd_per_mtok = 2.5
[[events]]
kind = "outage"
provider = "openai"
start_s = 200
duration_s = 120
"#;

fn bench(c: &mut Criterion) {
    let mut text = SCENARIO.to_string();
    for policy in [
        "weighted",
        "priority",
        "round_robin",
        "least_latency",
        "cost",
    ] {
        text.push_str(&format!(
            "[[configs]]\nname = \"{policy}\"\n[configs.router]\npolicy = \"{policy}\"\nproviders = [{{ name = \"openai\" }}, {{ name = \"anthropic\" }}, {{ name = \"gemini\" }}]\n"
        ));
    }
    let scenario = match Scenario::parse(&text, Path::new("bench.toml")) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let requests = simulate_one(&scenario, 1, "oracle").map_or(1, |r| r.requests);
    let mut group = c.benchmark_group("simulate_10min_200rps");
    group.sample_size(10);
    group.throughput(Throughput::Elements(requests));
    for name in scenario.run_names() {
        group.bench_function(&name, |b| {
            b.iter(|| black_box(simulate_one(&scenario, 1, &name)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
