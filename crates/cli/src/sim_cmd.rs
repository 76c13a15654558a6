//! `stilts sim`: replays scenario files in the deterministic simulator (stilts-sim) and reports.
//!
//! Exit codes: 0 when every expectation of every scenario (and seed) holds; 1 when one fails (each
//! failed expectation is named on stderr, with its scenario and seed) or when `--check` finds two
//! runs that differ; 2 (through `main`) for a scenario that cannot be loaded, with its file, line
//! and field.

use anyhow::Context as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use stilts_sim::{Progress, Report, Scenario};

/// Report formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A terminal table.
    Table,
    /// The JSON schema documented in docs/scenarios.md.
    Json,
    /// A self-contained HTML page with SVG charts.
    Html,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "JSON",
            Format::Html => "HTML",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Table => "txt",
            Format::Json => "json",
            Format::Html => "html",
        }
    }
}

/// Arguments of `stilts sim`.
#[derive(clap::Args)]
pub struct SimArgs {
    /// Scenario files (TOML; see docs/scenarios.md).
    #[arg(required = true)]
    pub scenarios: Vec<PathBuf>,
    /// Seed to run (default: the scenario's own `seed`).
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Sweep seeds A..B (B excluded) and print a summary per run.
    #[arg(long, value_name = "A..B")]
    pub seeds: Option<String>,
    /// Run each scenario twice and fail on the first byte where the JSON reports differ.
    #[arg(long)]
    pub check: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the report here instead of stdout (a directory when several scenarios are given).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Never show a progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Most simulated requests one scenario file may cost: its expected arrivals (the integral of
    /// the traffic rate) x runs (configs + 4 baselines) x seeds (x 2 with --check). A bigger one
    /// is refused before anything runs. Takes 2000000000, 2_000_000_000 or 2e9.
    #[arg(long, value_name = "N", default_value = "1e9", value_parser = parse_count)]
    pub max_requests: u64,
}

/// What a scenario file costs, in simulated requests, measured before it runs.
struct Size {
    /// Expected arrivals of one run.
    arrivals: f64,
    /// Runs per seed: configs, then the 4 baselines.
    runs: usize,
    /// Seeds to run.
    seeds: u64,
    /// 2 with `--check` (each seed runs twice), else 1.
    passes: u64,
}

impl Size {
    fn of(scenario: &Scenario, seeds: u64, check: bool) -> Self {
        Size {
            arrivals: scenario.expected_requests(),
            runs: scenario.run_names().len(),
            seeds,
            passes: if check { 2 } else { 1 },
        }
    }

    /// Simulated requests in all, rounded up (saturating: the factors are bounded, the product
    /// of the largest ones still fits).
    fn total(&self) -> u128 {
        (self.arrivals * self.runs as f64 * self.seeds as f64 * self.passes as f64).ceil() as u128
    }

    /// Refuses a scenario that costs more than `limit`, with the arithmetic and the fix.
    fn check(&self, path: &Path, scenario: &Scenario, limit: u64) -> anyhow::Result<()> {
        let total = self.total();
        if total <= u128::from(limit) {
            return Ok(());
        }
        let seeds = match self.seeds {
            1 => "1 seed".to_string(),
            n => format!("{} seeds", group(u128::from(n))),
        };
        let check = if self.passes == 2 {
            " x 2 (--check)"
        } else {
            ""
        };
        anyhow::bail!(
            "{}: too big to simulate: {} requests arrive in {} s (the integral of the traffic \
             rate) x {} runs ({} + 4 baselines) x {seeds}{check} = {} simulated requests, \
             more than the limit of {} (about {} at 1 M simulated requests per second); shorten \
             duration_s or lower the rate, or pass --max-requests {total} to run it anyway",
            path.display(),
            group(self.arrivals.ceil() as u128),
            seconds(scenario.duration_ns),
            self.runs,
            match self.runs.saturating_sub(4) {
                1 => "1 config".to_string(),
                n => format!("{n} configs"),
            },
            group(total),
            group(u128::from(limit)),
            wall_time(total),
        )
    }
}

/// `1234567` as `1 234 567`, as the docs write numbers.
fn group(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 4 / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// A duration in whole seconds as `2 678 400`, or with decimals when it has a fraction.
fn seconds(ns: u64) -> String {
    if ns % 1_000_000_000 == 0 {
        group(u128::from(ns / 1_000_000_000))
    } else {
        format!("{:.3}", ns as f64 / 1e9)
    }
}

/// Roughly how long `requests` simulated requests take at 1 M per second, in words.
fn wall_time(requests: u128) -> String {
    let s = requests as f64 / 1e6;
    let (value, unit) = if s < 120.0 {
        (s, "seconds")
    } else if s < 7_200.0 {
        (s / 60.0, "minutes")
    } else if s < 172_800.0 {
        (s / 3_600.0, "hours")
    } else if s < 2.0 * 31_557_600.0 {
        (s / 86_400.0, "days")
    } else {
        (s / 31_557_600.0, "years")
    };
    format!("{value:.0} {unit}")
}

/// A count: digits with optional `_` separators, or a number in scientific notation (`2e9`).
fn parse_count(text: &str) -> Result<u64, String> {
    let plain = text.replace('_', "");
    if let Ok(n) = plain.parse::<u64>() {
        return Ok(n);
    }
    match plain.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64 => {
            Ok(v as u64)
        }
        _ => Err(format!(
            "{text:?} is not a count; write it as digits (2000000000, 2_000_000_000) or as 2e9"
        )),
    }
}

/// Runs the simulator.
pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let mut scenarios = Vec::with_capacity(args.scenarios.len());
    for path in &args.scenarios {
        scenarios.push(Scenario::load(path)?);
    }
    let seeds = match &args.seeds {
        Some(range) => Some(parse_range(range)?),
        None => None,
    };
    let seed_count = seeds.map_or(1, |(from, to)| to - from);
    for (scenario, path) in scenarios.iter().zip(&args.scenarios) {
        Size::of(scenario, seed_count, args.check).check(path, scenario, args.max_requests)?;
    }
    let several = scenarios.len() > 1;
    if let (true, Some(out)) = (several, &args.out) {
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create the output directory {}", out.display()))?;
    }
    let mut failed = false;
    for (scenario, path) in scenarios.iter().zip(&args.scenarios) {
        let target = args.out.as_ref().map(|out| {
            if several {
                out.join(format!("{}.{}", file_stem(path), args.format.extension()))
            } else {
                out.clone()
            }
        });
        let ok = match seeds {
            Some((from, to)) => sweep(scenario, from, to, &args, target.as_deref())?,
            None => single(
                scenario,
                args.seed.unwrap_or(scenario.seed),
                &args,
                target.as_deref(),
            )?,
        };
        failed |= !ok;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned())
}

fn parse_range(text: &str) -> anyhow::Result<(u64, u64)> {
    let parsed = text.split_once("..").and_then(|(a, b)| {
        let a: u64 = a.trim().parse().ok()?;
        let b: u64 = b.trim().parse().ok()?;
        (a < b).then_some((a, b))
    });
    parsed.with_context(|| {
        format!("--seeds {text:?}: expected A..B with A < B (B excluded), such as 1..21")
    })
}

/// A progress bar on stderr, only when stderr is a terminal.
struct Bar(Option<indicatif::ProgressBar>);

const BAR_STEPS: u64 = 1000;

impl Bar {
    fn new(label: String, quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(BAR_STEPS);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {percent:>3}% {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label);
        Bar(Some(bar))
    }

    fn update(&self, p: Progress) {
        if let Some(bar) = &self.0 {
            let within = p.virtual_ns as f64 / p.duration_ns.max(1) as f64;
            let done = (p.run as f64 + within.min(1.0)) / p.runs.max(1) as f64;
            bar.set_position((done * BAR_STEPS as f64) as u64);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

fn simulate(scenario: &Scenario, seed: u64, label: String, quiet: bool) -> Report {
    let bar = Bar::new(label, quiet);
    let report = stilts_sim::simulate(scenario, seed, &mut |p| bar.update(p));
    bar.finish();
    report
}

/// Writes `text` to `target` (then says on stdout, in one line, what went where) or to stdout.
fn write_output(target: Option<&Path>, text: &str, what: &str) -> anyhow::Result<()> {
    match target {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write the report to {}", path.display()))?;
            println!("wrote {what} to {} ({} bytes)", path.display(), text.len());
            Ok(())
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
    }
}

fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => report.to_table(),
        Format::Json => report.to_json(),
        Format::Html => report.to_html(),
    }
}

/// One scenario, one seed. Returns whether every expectation held (and `--check` agreed).
fn single(
    scenario: &Scenario,
    seed: u64,
    args: &SimArgs,
    target: Option<&Path>,
) -> anyhow::Result<bool> {
    let label = format!("{} seed {seed}", scenario.name);
    let report = simulate(scenario, seed, label.clone(), args.quiet);
    let mut ok = true;
    if args.check {
        let again = simulate(scenario, seed, format!("{label} (check)"), args.quiet);
        let (a, b) = (report.to_json(), again.to_json());
        if let Some(at) = first_difference(a.as_bytes(), b.as_bytes()) {
            let line = a[..at.min(a.len())].matches('\n').count() + 1;
            eprintln!(
                "{}: seed {seed}: NOT DETERMINISTIC: the JSON reports of two runs first differ at byte {at} (line {line})",
                scenario.name
            );
            ok = false;
        } else if !args.quiet {
            eprintln!(
                "{}: seed {seed}: deterministic ({} identical bytes over two runs)",
                scenario.name,
                a.len()
            );
        }
    }
    let what = format!(
        "the {} report of {} (seed {seed})",
        args.format.name(),
        scenario.name
    );
    write_output(target, &render(&report, args.format), &what)?;
    for failure in report.failures() {
        eprintln!(
            "{}: seed {seed}: expectation failed: {}",
            scenario.name,
            failure.describe()
        );
        ok = false;
    }
    Ok(ok)
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => Some(i),
        None if a.len() != b.len() => Some(a.len().min(b.len())),
        None => None,
    }
}

/// A seed sweep with a summary per run. Returns whether every seed met every expectation.
fn sweep(
    scenario: &Scenario,
    from: u64,
    to: u64,
    args: &SimArgs,
    target: Option<&Path>,
) -> anyhow::Result<bool> {
    let names = scenario.run_names();
    // Per run: (min, sum, max) of availability and the sum of cost per 1k.
    let mut stats = vec![(f64::INFINITY, 0.0, f64::NEG_INFINITY, 0.0); names.len()];
    let mut failures: Vec<(u64, String)> = Vec::new();
    let mut nondeterministic = Vec::new();
    for seed in from..to {
        let label = format!(
            "{} seed {seed} ({}/{})",
            scenario.name,
            seed - from + 1,
            to - from
        );
        let report = simulate(scenario, seed, label, args.quiet);
        if args.check {
            let again = simulate(
                scenario,
                seed,
                format!("{} seed {seed} (check)", scenario.name),
                args.quiet,
            );
            if let Some(at) =
                first_difference(report.to_json().as_bytes(), again.to_json().as_bytes())
            {
                nondeterministic.push((seed, at));
            }
        }
        for (i, run) in report.runs.iter().enumerate() {
            let s = &mut stats[i];
            s.0 = s.0.min(run.availability);
            s.1 += run.availability;
            s.2 = s.2.max(run.availability);
            s.3 += run.cost_per_1k_usd;
        }
        failures.extend(report.failures().map(|f| (seed, f.describe())));
    }
    let n = (to - from) as f64;
    let text = match args.format {
        Format::Json => {
            let runs: Vec<serde_json::Value> = names
                .iter()
                .zip(&stats)
                .map(|(name, s)| {
                    serde_json::json!({
                        "name": name,
                        "availability_min": s.0,
                        "availability_mean": (s.1 / n * 1e6).round() / 1e6,
                        "availability_max": s.2,
                        "cost_per_1k_usd_mean": (s.3 / n * 1e6).round() / 1e6,
                    })
                })
                .collect();
            let failures: Vec<serde_json::Value> = failures
                .iter()
                .map(|(seed, f)| serde_json::json!({ "seed": seed, "expectation": f }))
                .collect();
            let value = serde_json::json!({
                "schema": "stilts-sim-sweep/1",
                "scenario": scenario.name,
                "seeds": [from, to],
                "runs": runs,
                "failures": failures,
            });
            format!("{}\n", serde_json::to_string_pretty(&value)?)
        }
        Format::Table | Format::Html => {
            let mut s = format!(
                "scenario {}: seeds {from}..{to} ({} seeds)\n{:<18} {:>10} {:>10} {:>10} {:>12}\n",
                scenario.name,
                to - from,
                "run",
                "avail min",
                "mean",
                "max",
                "$/1k mean"
            );
            for (name, st) in names.iter().zip(&stats) {
                s.push_str(&format!(
                    "{:<18} {:>9.3}% {:>9.3}% {:>9.3}% {:>12.4}\n",
                    name,
                    st.0 * 100.0,
                    st.1 / n * 100.0,
                    st.2 * 100.0,
                    st.3 / n
                ));
            }
            s.push_str(&format!(
                "seeds failing an expectation: {} of {}\n",
                failures
                    .iter()
                    .map(|(seed, _)| *seed)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
                to - from
            ));
            if args.format == Format::Html {
                format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\"><title>stilts sim sweep</title></head><body><pre>{}</pre></body></html>\n",
                    s.replace('&', "&amp;").replace('<', "&lt;")
                )
            } else {
                s
            }
        }
    };
    let what = format!(
        "the {} summary of {} over seeds {from}..{to}",
        args.format.name(),
        scenario.name
    );
    write_output(target, &text, &what)?;
    for (seed, at) in &nondeterministic {
        eprintln!(
            "{}: seed {seed}: NOT DETERMINISTIC: two runs first differ at byte {at}",
            scenario.name
        );
    }
    for (seed, f) in &failures {
        eprintln!("{}: seed {seed}: expectation failed: {f}", scenario.name);
    }
    Ok(failures.is_empty() && nondeterministic.is_empty())
}
