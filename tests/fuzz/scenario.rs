//! The checks of the simulator's scenario files, as a plain function of the text: the proptest
//! target of `simulator/tests/fuzz.rs` and the AFL++ target of `fuzz/` both call it. Included
//! with `#[path]`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // reason: test support

use std::path::Path;

use stilts_sim::{Rate, Scenario};

/// Most requests per run of the short simulation of an accepted scenario.
const RUN_REQUESTS: f64 = 60.0;

/// `Scenario::parse` on `text` (from a file at `origin`): a refusal names a problem and, when it
/// gives a position, one inside the text; an accepted scenario runs (shortened to about
/// [`RUN_REQUESTS`] requests per run) without a panic, with no more answers than requests, and
/// twice to the same report.
pub fn check_scenario(text: &str, origin: &Path) {
    let scenario = match Scenario::parse(text, origin) {
        Ok(s) => s,
        Err(e) => {
            assert!(
                !e.problem.trim().is_empty(),
                "an error without a problem: {e:?}"
            );
            if let (Some((line, column)), true) = (e.position, e.file == origin) {
                let lines = text.split('\n').count();
                assert!(
                    line >= 1 && line <= lines && column >= 1,
                    "position {line}:{column} outside the text ({lines} lines): {e:?}"
                );
            }
            return;
        }
    };
    let scenario = shortened(scenario);
    let report = stilts_sim::simulate(&scenario, scenario.seed, &mut |_| {});
    for run in &report.runs {
        assert!(
            run.answered <= run.requests,
            "{}: more answers than requests",
            run.name
        );
    }
    let again = stilts_sim::simulate(&scenario, scenario.seed, &mut |_| {});
    assert_eq!(
        serde_json::to_string(&report).unwrap(),
        serde_json::to_string(&again).unwrap(),
        "the same seed gave two reports"
    );
}

/// The scenario cut to about [`RUN_REQUESTS`] arrivals at its highest rate.
fn shortened(mut s: Scenario) -> Scenario {
    let peak = match &s.traffic.rate {
        Rate::Constant(r) => *r,
        Rate::Steps(steps) => steps.iter().map(|&(_, r)| r).fold(0.0, f64::max),
        Rate::Diurnal {
            peak_rps,
            trough_rps,
            ..
        } => peak_rps.max(*trough_rps),
    };
    let spike = s
        .traffic
        .spikes
        .iter()
        .map(|&(_, _, f)| f)
        .fold(1.0, f64::max);
    let rate = (peak * spike).max(1e-9);
    let ns = (RUN_REQUESTS / rate * 1e9).min(s.duration_ns as f64);
    s.duration_ns = (ns as u64).max(1);
    s
}
