//! stilts-sim: a seeded, single-threaded discrete-event simulator that replays outage scenarios
//! against the real stilts-core router, in virtual time.
//!
//! A [`Scenario`] (a TOML file, see `docs/scenarios.md`) describes a world of providers (latency,
//! errors, capacity, context window, prices), a traffic shape, a timeline of faults, the router
//! configs to compare and the expectations to check. [`simulate`] runs every config through the
//! real [`stilts_core::Router`], then the baselines (`single`, `naive`, `seed_router`) and the
//! `oracle`, all against the same world draws, and returns a [`Report`].
//!
//! The parts:
//! - `scenario`: the file format, its validation and located errors;
//! - `draw`: common random numbers, a hash of (seed, request, provider, attempt, purpose);
//! - `world`: arrivals and the fate of each attempt; the oracle's exact search;
//! - `engine`: the event loop, provider capacity and client-side timeouts;
//! - `strategy`: the router adapter and the baselines;
//! - `metrics`, `report`, `html`: what is measured and how it is shown (`html` splits into its
//!   page, charts, SVG pieces and scales).
//!
//! Determinism is the product: the same scenario and seed give the same report bytes on the same
//! platform. Nothing reads a clock or iterates a hash map into output.
//!
//! ```
//! use std::path::Path;
//! let text = r#"
//! name = "doc"
//! duration_s = 30
//! [traffic]
//! rate_rps = 20
//! [[providers]]
//! name = "a"
//! [[providers]]
//! name = "b"
//! [[events]]
//! kind = "outage"
//! provider = "a"
//! start_s = 5
//! duration_s = 10
//! [[configs]]
//! name = "stilts"
//! [configs.router]
//! policy = "priority"
//! providers = [{ name = "a" }, { name = "b" }]
//! "#;
//! let scenario = stilts_sim::Scenario::parse(text, Path::new("doc.toml"))?;
//! let report = stilts_sim::simulate(&scenario, 7, &mut |_| {});
//! let stilts = &report.runs[0];
//! let single = report.runs.iter().find(|r| r.name == "single").unwrap();
//! assert!(stilts.availability > single.availability);
//! # Ok::<(), stilts_sim::ScenarioError>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod draw;
mod engine;
mod html;
mod metrics;
mod report;
mod scenario;
mod strategy;
mod world;

pub use report::{
    EventReport, ExpectationResult, ProviderReport, ProviderSeries, RecoveryReport, Report,
    RunReport, SCHEMA, Series, SpikeReport,
};
pub use scenario::{
    BASELINES, Baselines, Capacity, ConfigUnderTest, Event, EventKind, EventKindName, Expectation,
    MAX_ATTEMPTS, MAX_WORLD_PROVIDERS, OutageMode, ProviderModel, Rate, Replicas, ReportSettings,
    Scenario, ScenarioError, Traffic,
};

pub use world::{Arrivals, Fate, Mishap, RateWindow, Request};

use strategy::{Naive, SeedRouter, Single, Stilts};

/// Where a simulation is, for progress bars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The run in progress (0-based) among `runs`.
    pub run: usize,
    /// Runs in this simulation: configs + 4 baselines.
    pub runs: usize,
    /// Virtual time reached in this run, ns.
    pub virtual_ns: u64,
    /// The scenario's duration, ns.
    pub duration_ns: u64,
}

/// Runs every config and baseline of `scenario` with `seed` and checks the expectations.
///
/// `progress` is called now and then with the virtual time reached (never with wall-clock data).
pub fn simulate(scenario: &Scenario, seed: u64, progress: &mut dyn FnMut(Progress)) -> Report {
    let runs = scenario.configs.len() + 4;
    let duration_ns = scenario.duration_ns;
    let tick = |run: usize| {
        move |virtual_ns: u64| Progress {
            run,
            runs,
            virtual_ns,
            duration_ns,
        }
    };
    let mut metrics = Vec::with_capacity(runs);
    let mut reports = Vec::with_capacity(runs);
    for (i, config) in scenario.configs.iter().enumerate() {
        let at = tick(i);
        let m = engine::run(
            scenario,
            seed,
            Stilts::new(config, seed, scenario.traffic.max_tokens),
            &mut |t| progress(at(t)),
        );
        reports.push(report::run_report(
            scenario,
            &config.name,
            "config",
            Some(config.config.policy.as_str()),
            &m,
        ));
        metrics.push(m);
    }
    let n = scenario.configs.len();
    let b = &scenario.baselines;
    let at = tick(n);
    let single = engine::run(scenario, seed, Single::new(b), &mut |t| progress(at(t)));
    let at = tick(n + 1);
    let naive = engine::run(
        scenario,
        seed,
        Naive::new(b, scenario.providers.len()),
        &mut |t| progress(at(t)),
    );
    let at = tick(n + 2);
    let seed_router = engine::run(
        scenario,
        seed,
        SeedRouter::new(b, &scenario.providers),
        &mut |t| progress(at(t)),
    );
    let at = tick(n + 3);
    let oracle = engine::run_oracle(scenario, seed, &mut |t| progress(at(t)));
    for (name, kind, m) in [
        ("single", "baseline", single),
        ("naive", "baseline", naive),
        ("seed_router", "baseline", seed_router),
        ("oracle", "oracle", oracle),
    ] {
        reports.push(report::run_report(scenario, name, kind, None, &m));
        metrics.push(m);
    }
    let expectations = report::check(&scenario.expectations, &reports, &metrics);
    Report {
        schema: SCHEMA,
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        seed,
        duration_s: scenario.duration_ns as f64 / 1e9,
        requests: reports.first().map_or(0, |r| r.requests),
        providers: scenario.providers.iter().map(|p| p.name.clone()).collect(),
        events: scenario
            .events
            .iter()
            .enumerate()
            .map(|(index, e)| EventReport {
                index,
                kind: e.kind.name().as_str(),
                providers: e
                    .providers
                    .iter()
                    .map(|p| scenario.providers[*p].name.clone())
                    .collect(),
                start_s: e.start_ns as f64 / 1e9,
                end_s: e.end_ns.min(scenario.duration_ns) as f64 / 1e9,
                note: e.note.clone(),
            })
            .collect(),
        passed: expectations.iter().all(|e| e.passed),
        spikes: scenario
            .traffic
            .spikes
            .iter()
            .filter(|(start, _, _)| *start < scenario.duration_ns)
            .map(|(start, end, factor)| SpikeReport {
                start_s: *start as f64 / 1e9,
                end_s: (*end).min(scenario.duration_ns) as f64 / 1e9,
                factor: *factor,
            })
            .collect(),
        runs: reports,
        expectations,
    }
}

/// Runs the config named `name` in the world of `world_seed` with its router seeded by
/// `router_seed` (`simulate` uses one seed for both): the same world met by other router draws
/// (open-time jitter, weighted picks, backoffs). `stilts replay` runs several to know how far the
/// router's own randomness alone moves a prediction. `None` if no config has that name.
pub fn simulate_config(
    scenario: &Scenario,
    world_seed: u64,
    router_seed: u64,
    name: &str,
) -> Option<RunReport> {
    let c = scenario.configs.iter().find(|c| c.name == name)?;
    let m = engine::run(
        scenario,
        world_seed,
        Stilts::new(c, router_seed, scenario.traffic.max_tokens),
        &mut |_| {},
    );
    Some(report::run_report(
        scenario,
        name,
        "config",
        Some(c.config.policy.as_str()),
        &m,
    ))
}

/// Runs only the config named `name` (or a baseline) and returns its report: for benchmarks and
/// sweeps over one policy. `None` if no run has that name.
pub fn simulate_one(scenario: &Scenario, seed: u64, name: &str) -> Option<RunReport> {
    let mut quiet = |_: u64| {};
    let b = &scenario.baselines;
    let (kind, policy, m) = if let Some(c) = scenario.configs.iter().find(|c| c.name == name) {
        (
            "config",
            Some(c.config.policy.as_str()),
            engine::run(
                scenario,
                seed,
                Stilts::new(c, seed, scenario.traffic.max_tokens),
                &mut quiet,
            ),
        )
    } else {
        let m = match name {
            "single" => engine::run(scenario, seed, Single::new(b), &mut quiet),
            "naive" => engine::run(
                scenario,
                seed,
                Naive::new(b, scenario.providers.len()),
                &mut quiet,
            ),
            "seed_router" => engine::run(
                scenario,
                seed,
                SeedRouter::new(b, &scenario.providers),
                &mut quiet,
            ),
            "oracle" => engine::run_oracle(scenario, seed, &mut quiet),
            _ => return None,
        };
        (
            if name == "oracle" {
                "oracle"
            } else {
                "baseline"
            },
            None,
            m,
        )
    };
    Some(report::run_report(scenario, name, kind, policy, &m))
}
