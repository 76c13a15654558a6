//! Every shipped scenario: it loads, its runs respect the oracle's bounds, the simulator's invariants
//! hold, and it passes its own expectations.
//!
//! Debug builds are ~20x slower than release: there, scenarios longer than `DEBUG_DURATION_S` are
//! cut to that length for the bound checks (the bounds hold at any length) and their expectations
//! are left to the release run (`cargo test --release -p stilts-sim`, and CI's
//! `stilts sim scenarios/*.toml`). Release builds check everything at full length.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a broken fixture should fail the test loudly

use std::path::{Path, PathBuf};
use stilts_sim::{Report, Scenario, simulate};

const DEBUG_DURATION_S: u64 = 3_600;

fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the scenarios directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "at least 15 scenarios ship, found {}",
        files.len()
    );
    files
}

fn run(path: &Path) -> (Report, bool) {
    let mut scenario = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
    let full = !cfg!(debug_assertions) || scenario.duration_ns <= DEBUG_DURATION_S * 1_000_000_000;
    if !full {
        scenario.duration_ns = DEBUG_DURATION_S * 1_000_000_000;
    }
    let seed = scenario.seed;
    let report = simulate(&scenario, seed, &mut |_| {});
    // The size `stilts sim` checks before it starts is the mean of what a run draws: the
    // arrivals are Poisson, so the count is within a few standard deviations of it.
    let expected = scenario.expected_requests();
    let drawn = report.requests as f64;
    assert!(
        (drawn - expected).abs() <= 5.0 * expected.sqrt() + 1.0,
        "{}: {drawn} requests drawn, {expected:.1} expected",
        path.display()
    );
    (report, full)
}

#[test]
fn shipped_scenarios_respect_the_oracle_and_pass_their_expectations() {
    for path in shipped() {
        let (report, full) = run(&path);
        let name = path.display();
        let oracle = report
            .runs
            .iter()
            .find(|r| r.name == "oracle")
            .expect("every report has the oracle");
        assert_eq!(oracle.invariant_violations, 0, "{name}");
        for r in &report.runs {
            assert_eq!(
                r.invariant_violations, 0,
                "{name}: {} broke an invariant",
                r.name
            );
            assert_eq!(
                r.requests, oracle.requests,
                "{name}: {} saw other traffic",
                r.name
            );
            // Availability: nobody answers a request the oracle cannot.
            assert!(
                r.answered <= oracle.answered,
                "{name}: {} answered {} > oracle {}",
                r.name,
                r.answered,
                oracle.answered
            );
            // Cost: nobody pays less for what it answered than the oracle would have.
            assert!(
                r.cost_usd + 1e-6 >= r.cost_floor_usd,
                "{name}: {} paid {} below its floor {}",
                r.name,
                r.cost_usd,
                r.cost_floor_usd
            );
            assert!(
                r.cost_floor_usd <= oracle.cost_usd + 1e-6,
                "{name}: {} floor above the oracle's cost",
                r.name
            );
        }
        if full {
            let failed: Vec<String> = report.failures().map(|f| f.describe()).collect();
            assert!(
                failed.is_empty(),
                "{name}: expectations failed: {failed:#?}"
            );
        }
    }
}
