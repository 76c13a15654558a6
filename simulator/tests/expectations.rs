//! What `beats` and `trade_off` check: availability never waived; latency (p99 to answer, a
//! failed request never answered) and cost at equal availability waived only by a trade-off stated
//! for that run.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a broken fixture should fail the test loudly

use std::path::Path;
use stilts_sim::{Report, Scenario, simulate};

fn run(text: &str) -> Report {
    let s = Scenario::parse(text, Path::new("expect.toml")).unwrap_or_else(|e| panic!("{e}"));
    simulate(&s, s.seed, &mut |_| {})
}

/// No fault; `pricey` first in the priority chain, while `seed_router` splits by equal weights.
const PRICEY_FIRST: &str = r#"
name = "pricey-first"
duration_s = 120
[traffic]
rate_rps = 10
output_tokens = { p50 = 50, p99 = 100 }
[[providers]]
name = "pricey"
errors = { server = 0.0, rate_limited = 0.0 }
input_usd_per_mtok = 5.0
output_usd_per_mtok = 20.0
[[providers]]
name = "cheap"
errors = { server = 0.0, rate_limited = 0.0 }
input_usd_per_mtok = 0.1
output_usd_per_mtok = 0.4
[[configs]]
name = "stilts"
[configs.router]
policy = "priority"
providers = [{ name = "pricey" }, { name = "cheap" }]
[[expect]]
config = "stilts"
beats = ["single", "seed_router"]
"#;

fn check<'a>(report: &'a Report, needle: &str) -> &'a stilts_sim::ExpectationResult {
    report
        .expectations
        .iter()
        .find(|e| e.check.contains(needle))
        .unwrap_or_else(|| panic!("no check {needle}: {:?}", report.expectations))
}

#[test]
fn beats_fails_a_costlier_run_at_equal_availability() {
    let report = run(PRICEY_FIRST);
    let availability = check(&report, "beats seed_router: availability");
    assert!(availability.passed, "{availability:?}");
    let cost = check(&report, "beats seed_router: at equal availability, cost");
    assert!(!cost.passed, "{cost:?}");
    assert!(!report.passed);
    // `single` sends everything to the same provider: equal cost, so it passes.
    assert!(check(&report, "beats single: at equal availability, cost").passed);
}

#[test]
fn a_stated_trade_off_waives_the_cost_and_says_so() {
    let text = format!(
        "{PRICEY_FIRST}trade_off.seed_router = \"the user put the pricier provider first\"\n"
    );
    let report = run(&text);
    let cost = check(&report, "beats seed_router: at equal availability, cost");
    assert!(cost.passed, "{cost:?}");
    assert!(cost.actual.contains("waived"), "{cost:?}");
    assert!(report.passed);
}

#[test]
fn a_trade_off_never_waives_availability() {
    // `a` is down for the whole run; the config has no fallback, `seed_router` has.
    let text = r#"
name = "down"
duration_s = 60
[traffic]
rate_rps = 10
[[providers]]
name = "a"
[[providers]]
name = "b"
[[events]]
kind = "outage"
provider = "a"
start_s = 0
duration_s = 60
[[configs]]
name = "alone"
[configs.router]
policy = "priority"
providers = [{ name = "a" }]
[[expect]]
config = "alone"
beats = ["seed_router"]
trade_off.seed_router = "none that covers answering less"
"#;
    let report = run(text);
    let availability = check(&report, "beats seed_router: availability");
    assert!(!availability.passed, "{availability:?}");
    assert!(!report.passed);
    // Everything failed: its p99 to answer is "never", and losing it is waived, visibly.
    let latency = check(&report, "beats seed_router: p99");
    assert!(latency.actual.starts_with("never"), "{latency:?}");
    assert!(
        latency.passed && latency.actual.contains("waived"),
        "{latency:?}"
    );
}

#[test]
fn a_trade_off_must_explain_a_beats_comparison() {
    let without_beats = r#"
name = "x"
duration_s = 10
[traffic]
rate_rps = 5
[[providers]]
name = "a"
[[configs]]
name = "c"
[configs.router]
providers = [{ name = "a" }]
[[expect]]
config = "c"
trade_off.naive = "why"
"#;
    let e = Scenario::parse(without_beats, Path::new("bad.toml")).expect_err("must be rejected");
    assert_eq!(e.path, "expect[0].trade_off.naive", "{e}");
    let other_run = without_beats.replace(
        "trade_off.naive = \"why\"",
        "beats = [\"single\"]\ntrade_off.naive = \"why\"",
    );
    let e = Scenario::parse(&other_run, Path::new("bad.toml")).expect_err("must be rejected");
    assert_eq!(e.path, "expect[0].trade_off.naive", "{e}");
    let empty = without_beats.replace(
        "trade_off.naive = \"why\"",
        "beats = [\"naive\"]\ntrade_off.naive = \" \"",
    );
    let e = Scenario::parse(&empty, Path::new("bad.toml")).expect_err("must be rejected");
    assert_eq!(e.path, "expect[0].trade_off.naive", "{e}");
    assert!(!e.fix.is_empty());
}
