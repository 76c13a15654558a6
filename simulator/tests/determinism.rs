//! Determinism is the product: the same (scenario, seed) gives byte-identical JSON; another seed
//! gives another report; and the world is the same for every policy (common random numbers).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a broken fixture should fail the test loudly

use std::path::Path;
use stilts_sim::{Scenario, simulate, simulate_one};

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name);
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
    for name in [
        "flapping.toml",
        "stream-cut-and-stall.toml",
        "metastable-retry-storm.toml",
    ] {
        let s = scenario(name);
        let a = simulate(&s, 7, &mut |_| {}).to_json();
        let b = simulate(&s, 7, &mut |_| {}).to_json();
        assert!(a == b, "{name}: two runs with seed 7 differ");
        assert_eq!(
            simulate(&s, 7, &mut |_| {}).to_html(),
            simulate(&s, 7, &mut |_| {}).to_html(),
            "{name}: HTML differs"
        );
        let c = simulate(&s, 8, &mut |_| {}).to_json();
        assert_ne!(a, c, "{name}: seed 8 gave the same report as seed 7");
    }
}

#[test]
fn every_run_meets_the_same_traffic_and_a_run_does_not_depend_on_the_others() {
    let s = scenario("flapping.toml");
    let full = simulate(&s, 3, &mut |_| {});
    let requests = full.runs[0].requests;
    assert!(full.runs.iter().all(|r| r.requests == requests));
    // Running one config alone gives exactly its part of the full report.
    for r in &full.runs {
        let alone = simulate_one(&s, 3, &r.name).expect("the run exists");
        assert_eq!(
            serde_json::to_string(&alone).expect("serializes"),
            serde_json::to_string(r).expect("serializes"),
            "{}",
            r.name
        );
    }
    assert!(simulate_one(&s, 3, "nope").is_none());
}

#[test]
fn json_report_has_the_documented_shape() {
    let s = scenario("quota-exhausted.toml");
    let report = simulate(&s, 1, &mut |_| {});
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
    assert_eq!(v["schema"], "stilts-sim-report/1");
    let names: Vec<&str> = v["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["stilts", "single", "naive", "seed_router", "oracle"]
    );
    for key in [
        "availability",
        "latency_ms_p50",
        "latency_ms_p999",
        "ttft_ms_p99",
        "amplification",
        "cost_per_1k_usd",
        "cost_floor_usd",
        "providers",
        "recovery",
        "series",
        "failures",
        "attempt_errors",
    ] {
        assert!(v["runs"][0].get(key).is_some(), "missing {key}");
    }
}
