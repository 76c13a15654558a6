//! `stilts replay`: runs a scenario's traffic through the real gateway against fault-injecting
//! loopback upstreams, time-compressed, and compares the result with the simulator's prediction
//! (stilts-replay).
//!
//! Exit codes: 0 when every config agrees within the tolerances; 1 when one differs (the table
//! says where); 2 (through `main`) for a scenario that cannot be loaded or replayed, named; 3 when
//! the machine did not keep up with the compressed clock, so nothing could be compared (lower
//! `--speed`).

use anyhow::Context as _;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use stilts_replay::{ReplayOptions, Tolerances};
use stilts_sim::Scenario;

/// Arguments of `stilts replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The scenario file (TOML; see docs/scenarios.md).
    pub scenario: PathBuf,
    /// Time compression: scenario seconds per wall second. Latencies and every limit the router
    /// decides are scaled together.
    #[arg(long, default_value_t = 20.0)]
    pub speed: f64,
    /// Replay only the first SECONDS of the scenario (the prediction covers the same window).
    #[arg(long, value_name = "SECONDS")]
    pub until: Option<f64>,
    /// World seed (default: the scenario's own `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Replay only this config (repeatable; default: every config).
    #[arg(long = "config", value_name = "NAME")]
    pub configs: Vec<String>,
    /// Serve this config while comparing with the others' predictions: shows that the comparison
    /// can fail.
    #[arg(long, value_name = "NAME")]
    pub serve_config: Option<String>,
    /// Directory of the provider plugins (default: the gateway's search: STILTS_PLUGIN_DIR, then
    /// the directory of the stilts binary).
    #[arg(long)]
    pub plugin_dir: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `stilts replay`.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let scenario = Scenario::load(&args.scenario)?;
    let options = ReplayOptions {
        speed: args.speed,
        until_s: args.until,
        seed: args.seed,
        configs: args.configs,
        plugin_dir: args.plugin_dir,
        serve_config: args.serve_config,
        tolerances: Tolerances::default(),
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} requests {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(stilts_replay::replay(&scenario, &options, &|p| {
        if let Some(bar) = &bar {
            bar.set_length(p.requests);
            bar.set_position(p.sent);
            bar.set_prefix(format!("config {}/{}", p.config + 1, p.configs));
        }
    }));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report.with_context(|| format!("cannot replay {}", args.scenario.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else if !report.comparable {
        eprintln!(
            "replay: this machine did not keep up with the compressed clock (requests left late), so the gateway's numbers say nothing about the router; lower --speed (it was {})",
            report.speed
        );
        ExitCode::from(3)
    } else {
        eprintln!(
            "replay: the gateway differs from the simulator's prediction for {}",
            report
                .configs
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        ExitCode::FAILURE
    })
}
