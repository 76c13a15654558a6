//! The report: what each run achieved, checked against the scenario's expectations.
//!
//! [`Report`] is the stable JSON schema documented in `docs/scenarios.md` (`schema =
//! "stilts-sim-report/1"`): field names carry their unit last, maps are ordered, floats are rounded
//! to fixed decimals before serialization so the same run always prints the same bytes, and nothing
//! depends on the wall clock. [`Report::to_table`] and [`Report::to_html`] render the same data.

use crate::metrics::{Metrics, REASONS};
use crate::scenario::{Expectation, Scenario};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use stilts_core::ErrorClass;

/// The schema name and version of [`Report`]'s JSON.
pub const SCHEMA: &str = "stilts-sim-report/1";

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    let r = (x * scale).round() / scale;
    // Never print "-0".
    if r == 0.0 { 0.0 } else { r }
}

/// The whole report of one scenario and seed.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    pub description: String,
    /// The seed used.
    pub seed: u64,
    /// Arrivals stop after this long.
    pub duration_s: f64,
    /// Requests generated (the same for every run).
    pub requests: u64,
    /// The world's providers, in file order.
    pub providers: Vec<String>,
    /// The timeline.
    pub events: Vec<EventReport>,
    /// One entry per config, then `single`, `naive`, `seed_router`, `oracle`.
    pub runs: Vec<RunReport>,
    /// Every expectation check, in file order.
    pub expectations: Vec<ExpectationResult>,
    /// Whether every expectation passed.
    pub passed: bool,
    /// The traffic spikes of the scenario, for the HTML report's timeline. Not part of the JSON
    /// schema `stilts-sim-report/1` (fields are only added with a new version).
    #[serde(skip)]
    pub spikes: Vec<SpikeReport>,
}

/// One traffic spike: the request rate times `factor` over `[start_s, end_s)`.
#[derive(Clone, Debug)]
pub struct SpikeReport {
    /// Start, seconds.
    pub start_s: f64,
    /// End, seconds (clipped to the scenario's duration).
    pub end_s: f64,
    /// Rate multiplier.
    pub factor: f64,
}

/// One timeline event.
#[derive(Clone, Debug, Serialize)]
pub struct EventReport {
    /// Position in the file's `[[events]]`.
    pub index: usize,
    /// Kind name.
    pub kind: &'static str,
    /// Affected providers.
    pub providers: Vec<String>,
    /// Start, seconds.
    pub start_s: f64,
    /// End, seconds.
    pub end_s: f64,
    /// The file's note.
    pub note: String,
}

/// What one config or baseline achieved.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Config or baseline name.
    pub name: String,
    /// `config`, `baseline` or `oracle`.
    pub kind: &'static str,
    /// The routing policy, for configs.
    pub policy: Option<&'static str>,
    /// Requests.
    pub requests: u64,
    /// Requests answered within the client's deadline.
    pub answered: u64,
    /// answered / requests.
    pub availability: f64,
    /// Unanswered requests by reason (only non-zero reasons).
    pub failures: BTreeMap<&'static str, u64>,
    /// Failed attempts by error class (only non-zero classes).
    pub attempt_errors: BTreeMap<&'static str, u64>,
    /// Latency of answered requests, ms.
    pub latency_ms_p50: Option<f64>,
    /// p90.
    pub latency_ms_p90: Option<f64>,
    /// p99.
    pub latency_ms_p99: Option<f64>,
    /// p99.9.
    pub latency_ms_p999: Option<f64>,
    /// Time to first token of answered streams, ms.
    pub ttft_ms_p50: Option<f64>,
    /// p90.
    pub ttft_ms_p90: Option<f64>,
    /// p99.
    pub ttft_ms_p99: Option<f64>,
    /// p99.9.
    pub ttft_ms_p999: Option<f64>,
    /// Attempts sent.
    pub attempts: u64,
    /// Attempts per request (retry amplification).
    pub amplification: f64,
    /// Hedged attempts.
    pub hedges: u64,
    /// Attempts cancelled (hedge losers, calls that ended first).
    pub cancelled: u64,
    /// Spend at the world's list prices, USD.
    pub cost_usd: f64,
    /// Spend per 1 000 requests, USD.
    pub cost_per_1k_usd: f64,
    /// What perfect foresight would have paid for the requests this run answered, USD.
    pub cost_floor_usd: f64,
    /// Per provider.
    pub providers: Vec<ProviderReport>,
    /// Time to recover after each event that ended before the scenario did.
    pub recovery: Vec<RecoveryReport>,
    /// Time series for charts.
    pub series: Series,
    /// Requests in flight at most at once.
    pub in_flight_max: u64,
    /// Broken simulator invariants (always 0 unless there is a bug).
    pub invariant_violations: u64,
}

/// One provider in one run.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderReport {
    /// Name.
    pub name: String,
    /// Attempts sent to it.
    pub attempts: u64,
    /// Its successful attempts.
    pub successes: u64,
    /// Its share of all attempts.
    pub share: f64,
    /// Breaker trips (stilts' breaker, or the seed router's home-made one).
    pub breaker_trips: u64,
    /// Spend, USD.
    pub cost_usd: f64,
}

/// Recovery after one event.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryReport {
    /// Index of the event.
    pub event: usize,
    /// From the event's end until availability is back at the recovery level and stays there for
    /// the hold time; `null` if it never is before the scenario ends.
    pub recover_ms: Option<f64>,
}

/// Time series: `points` buckets of `bucket_s` seconds.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    /// Bucket width, seconds.
    pub bucket_s: f64,
    /// Availability of the requests that arrived in each bucket (`null` when none did).
    pub availability: Vec<Option<f64>>,
    /// Each provider's share of the attempts sent in each bucket, in world provider order.
    pub share: Vec<ProviderSeries>,
    /// Requests that arrived in each bucket (exact counts for the HTML report's charts; not part
    /// of the JSON schema `stilts-sim-report/1`).
    #[serde(skip)]
    pub requests: Vec<u64>,
    /// Of those, requests answered (as `requests`).
    #[serde(skip)]
    pub answered: Vec<u64>,
}

/// One provider's share over time.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderSeries {
    /// Provider name.
    pub provider: String,
    /// Share per bucket (0 when no attempt was sent).
    pub share: Vec<f64>,
}

/// One expectation check.
#[derive(Clone, Debug, Serialize)]
pub struct ExpectationResult {
    /// The run checked.
    pub run: String,
    /// What was checked, e.g. `availability_min = 0.999`.
    pub check: String,
    /// The measured value, as text.
    pub actual: String,
    /// Whether it held.
    pub passed: bool,
}

impl ExpectationResult {
    /// `stilts: availability_min = 0.999 (got 0.998)`.
    pub fn describe(&self) -> String {
        format!("{}: {} (got {})", self.run, self.check, self.actual)
    }
}

fn ms(us: u64) -> f64 {
    round(us as f64 / 1000.0, 3)
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> [Option<f64>; 4] {
    if h.is_empty() {
        return [None; 4];
    }
    [0.5, 0.9, 0.99, 0.999].map(|q| Some(ms(h.value_at_quantile(q))))
}

/// Builds the report of one run.
pub(crate) fn run_report(
    scenario: &Scenario,
    name: &str,
    kind: &'static str,
    policy: Option<&'static str>,
    m: &Metrics,
) -> RunReport {
    let lat = percentiles(&m.latency_us);
    let ttft = percentiles(&m.ttft_us);
    let requests = m.requests.max(1) as f64;
    let total_attempts = m.attempts.max(1) as f64;
    let failures = REASONS
        .iter()
        .zip(m.failures.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| (*r, *n))
        .collect();
    let attempt_errors = ErrorClass::ALL
        .iter()
        .zip(m.attempt_errors.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| (c.as_str(), *n))
        .collect();
    let providers = scenario
        .providers
        .iter()
        .enumerate()
        .map(|(i, p)| ProviderReport {
            name: p.name.clone(),
            attempts: m.providers[i].attempts,
            successes: m.providers[i].successes,
            share: round(m.providers[i].attempts as f64 / total_attempts, 4),
            breaker_trips: m.breaker_trips.get(i).copied().unwrap_or(0),
            cost_usd: round(m.providers[i].cost_usd, 6),
        })
        .collect();
    RunReport {
        name: name.to_string(),
        kind,
        policy,
        requests: m.requests,
        answered: m.answered,
        availability: if m.requests == 0 {
            1.0
        } else {
            round(m.answered as f64 / requests, 6)
        },
        failures,
        attempt_errors,
        latency_ms_p50: lat[0],
        latency_ms_p90: lat[1],
        latency_ms_p99: lat[2],
        latency_ms_p999: lat[3],
        ttft_ms_p50: ttft[0],
        ttft_ms_p90: ttft[1],
        ttft_ms_p99: ttft[2],
        ttft_ms_p999: ttft[3],
        attempts: m.attempts,
        amplification: round(m.attempts as f64 / requests, 4),
        hedges: m.hedges,
        cancelled: m.cancelled,
        cost_usd: round(m.cost_usd, 6),
        cost_per_1k_usd: round(m.cost_usd * 1000.0 / requests, 6),
        cost_floor_usd: round(m.cost_floor_usd, 6),
        providers,
        recovery: recovery(scenario, m),
        series: series(scenario, m),
        in_flight_max: m.in_flight_max,
        invariant_violations: m.invariant_violations,
    }
}

fn recovery(scenario: &Scenario, m: &Metrics) -> Vec<RecoveryReport> {
    let res = m.resolution_ns;
    let target = scenario.report.recovered_availability;
    let hold = (scenario.report.recovered_hold_ns.div_ceil(res)).max(1) as usize;
    let ok = |b: &[u32; 2]| b[0] == 0 || f64::from(b[1]) >= target * f64::from(b[0]);
    scenario
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.end_ns < scenario.duration_ns)
        .map(|(i, e)| {
            let first = e.end_ns.div_ceil(res) as usize;
            let last = (scenario.duration_ns / res) as usize; // buckets fully inside the scenario
            let found = (first..last.saturating_sub(hold - 1))
                .find(|&b| m.fine[b..b + hold].iter().all(ok));
            RecoveryReport {
                event: i,
                recover_ms: found
                    .map(|b| round((b as u64 * res).saturating_sub(e.end_ns) as f64 / 1e6, 3)),
            }
        })
        .collect()
}

fn series(scenario: &Scenario, m: &Metrics) -> Series {
    let points = m.chart_points;
    let per = m.chart_bucket_ns;
    let n = scenario.providers.len();
    // Availability per chart bucket, from the fine series.
    let mut avail = vec![[0u64; 2]; points];
    for (b, counts) in m.fine.iter().enumerate() {
        let t = b as u64 * m.resolution_ns;
        let c = ((t / per) as usize).min(points - 1);
        avail[c][0] += u64::from(counts[0]);
        avail[c][1] += u64::from(counts[1]);
    }
    let availability = avail
        .iter()
        .map(|[r, a]| (*r > 0).then(|| round(*a as f64 / *r as f64, 4)))
        .collect();
    let share = (0..n)
        .map(|p| ProviderSeries {
            provider: scenario.providers[p].name.clone(),
            share: (0..points)
                .map(|b| {
                    let row = &m.chart_attempts[b * n..(b + 1) * n];
                    let total: u64 = row.iter().map(|x| u64::from(*x)).sum();
                    if total == 0 {
                        0.0
                    } else {
                        round(f64::from(row[p]) / total as f64, 4)
                    }
                })
                .collect(),
        })
        .collect();
    Series {
        bucket_s: round(per as f64 / 1e9, 3),
        availability,
        share,
        requests: avail.iter().map(|[r, _]| *r).collect(),
        answered: avail.iter().map(|[_, a]| *a).collect(),
    }
}

/// Availability of requests that arrived in `[from, until)`.
fn window_availability(m: &Metrics, from: u64, until: u64) -> f64 {
    let res = m.resolution_ns;
    let (mut r, mut a) = (0u64, 0u64);
    for (b, counts) in m.fine.iter().enumerate() {
        let t = b as u64 * res;
        if t >= from && t < until {
            r += u64::from(counts[0]);
            a += u64::from(counts[1]);
        }
    }
    if r == 0 {
        1.0
    } else {
        round(a as f64 / r as f64, 6)
    }
}

/// Checks every expectation against the runs.
pub(crate) fn check(
    expectations: &[Expectation],
    runs: &[RunReport],
    metrics: &[Metrics],
) -> Vec<ExpectationResult> {
    let mut out = Vec::new();
    let find = |name: &str| runs.iter().position(|r| r.name == name);
    for e in expectations {
        let Some(i) = find(&e.run) else { continue };
        let run = &runs[i];
        let mut push = |check: String, actual: String, passed: bool| {
            out.push(ExpectationResult {
                run: run.name.clone(),
                check,
                actual,
                passed,
            })
        };
        let (availability, scope) = match e.window_ns {
            Some((from, until)) => (
                window_availability(&metrics[i], from, until),
                format!(
                    " over {}s..{}s",
                    from / 1_000_000_000,
                    until / 1_000_000_000
                ),
            ),
            None => (run.availability, String::new()),
        };
        if let Some(min) = e.availability_min {
            push(
                format!("availability_min = {min}{scope}"),
                format!("{availability}"),
                availability >= min,
            );
        }
        if let Some(max) = e.availability_max {
            push(
                format!("availability_max = {max}{scope}"),
                format!("{availability}"),
                availability <= max,
            );
        }
        if let Some(max) = e.cost_per_1k_max {
            push(
                format!("cost_per_1k_max = {max}"),
                format!("{}", run.cost_per_1k_usd),
                run.cost_per_1k_usd <= max,
            );
        }
        if let Some(max) = e.amplification_max {
            push(
                format!("amplification_max = {max}"),
                format!("{}", run.amplification),
                run.amplification <= max,
            );
        }
        if let Some(max) = e.p99_ms_max {
            let p99 = run.latency_ms_p99;
            push(
                format!("p99_ms_max = {max}"),
                p99.map_or("no answer".into(), |v| v.to_string()),
                p99.is_some_and(|v| v <= max),
            );
        }
        if let Some(max) = e.recover_ms_max {
            let worst = run
                .recovery
                .iter()
                .map(|r| r.recover_ms)
                .try_fold(0.0f64, |w, r| r.map(|r| w.max(r)));
            push(
                format!("recover_ms_max = {max}"),
                worst.map_or("never recovered".into(), |w| w.to_string()),
                worst.is_some_and(|w| w <= max),
            );
        }
        for other in &e.beats {
            let Some(j) = find(other) else { continue };
            let theirs = match e.window_ns {
                Some((from, until)) => window_availability(&metrics[j], from, until),
                None => runs[j].availability,
            };
            push(
                format!("beats {other}: availability{scope} at least theirs"),
                format!("{availability} vs {theirs}"),
                availability >= theirs,
            );
            if e.window_ns.is_some() {
                continue;
            }
            // Latency and cost, unless the scenario explains the trade-off its user chose.
            let waived = |held: bool, actual: String| match (e.trade_off.get(other), held) {
                (Some(_), false) => (format!("{actual} (waived: trade_off.{other})"), true),
                _ => (actual, held),
            };
            let (mine, yours) = (p99_to_answer(&metrics[i]), p99_to_answer(&metrics[j]));
            let (actual, held) = waived(
                mine <= yours * P99_TOLERANCE,
                format!("{} vs {}", p99_text(mine), p99_text(yours)),
            );
            push(
                format!("beats {other}: p99 to answer at most 10% above theirs"),
                actual,
                held,
            );
            if run.answered == runs[j].answered {
                let (actual, held) = waived(
                    run.cost_per_1k_usd <= runs[j].cost_per_1k_usd,
                    format!("{} vs {}", run.cost_per_1k_usd, runs[j].cost_per_1k_usd),
                );
                push(
                    format!("beats {other}: at equal availability, cost per 1k at most theirs"),
                    actual,
                    held,
                );
            }
        }
        for other in &e.cheaper_than {
            if let Some(j) = find(other) {
                push(
                    format!("cheaper_than {other} (cost per 1k)"),
                    format!("{} vs {}", run.cost_per_1k_usd, runs[j].cost_per_1k_usd),
                    run.cost_per_1k_usd < runs[j].cost_per_1k_usd,
                );
            }
        }
    }
    out
}

/// How much slower than a baseline's p99 time to answer `beats` accepts.
const P99_TOLERANCE: f64 = 1.1;

/// The p99 time to an answer over every request, ms, a failed request counting as never answered:
/// comparable between runs that fail different shares, unlike the p99 of answered requests alone
/// (a run that drops its slowest requests would look fast).
fn p99_to_answer(m: &Metrics) -> f64 {
    if m.requests == 0 {
        return 0.0;
    }
    let rank = (0.99 * m.requests as f64).ceil() as u64;
    if m.answered == 0 || rank > m.answered {
        return f64::INFINITY;
    }
    m.latency_us
        .value_at_quantile(rank as f64 / m.answered as f64) as f64
        / 1000.0
}

fn p99_text(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0} ms")
    } else {
        "never (over 1% failed)".into()
    }
}

pub(crate) fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

/// Time to recover as both reports print it: seconds with one decimal, or `never`.
pub(crate) fn recover_s(recovery: &RecoveryReport) -> String {
    recovery
        .recover_ms
        .map_or("never".into(), |v| format!("{:.1}", v / 1000.0))
}

impl Report {
    /// The report as pretty JSON (the documented schema), with a trailing newline.
    pub fn to_json(&self) -> String {
        match serde_json::to_string_pretty(self) {
            Ok(mut s) => {
                s.push('\n');
                s
            }
            // Every field is a plain number, string, option, vector or ordered map.
            Err(e) => unreachable!("a report always serializes: {e}"),
        }
    }

    /// The failed expectations.
    pub fn failures(&self) -> impl Iterator<Item = &ExpectationResult> {
        self.expectations.iter().filter(|e| !e.passed)
    }

    /// A plain-text table for terminals.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {} (seed {}, {} s, {} requests)",
            self.scenario, self.seed, self.duration_s, self.requests
        );
        if !self.description.is_empty() {
            let _ = writeln!(s, "  {}", self.description);
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<18} {:>9} {:>8} {:>8} {:>8} {:>9} {:>6} {:>9} {:>6}  failures",
            "run",
            "avail %",
            "p50 ms",
            "p99 ms",
            "p99.9",
            "ttft p99",
            "att/rq",
            "$/1k req",
            "trips"
        );
        for r in &self.runs {
            let trips: u64 = r.providers.iter().map(|p| p.breaker_trips).sum();
            let failures = r
                .failures
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                s,
                "{:<18} {:>9.3} {:>8} {:>8} {:>8} {:>9} {:>6.3} {:>9.4} {:>6}  {}",
                r.name,
                r.availability * 100.0,
                opt(r.latency_ms_p50),
                opt(r.latency_ms_p99),
                opt(r.latency_ms_p999),
                opt(r.ttft_ms_p99),
                r.amplification,
                r.cost_per_1k_usd,
                trips,
                failures
            );
        }
        if !self.events.is_empty() {
            let _ = writeln!(s, "\nevents (time to recover, s):");
            for e in &self.events {
                let recover: Vec<String> = self
                    .runs
                    .iter()
                    .filter_map(|r| {
                        r.recovery
                            .iter()
                            .find(|x| x.event == e.index)
                            .map(|x| format!("{}={}", r.name, recover_s(x)))
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "  #{} {} on {} {}s..{}s  {}",
                    e.index,
                    e.kind,
                    e.providers.join(","),
                    e.start_s,
                    e.end_s,
                    if recover.is_empty() {
                        "(lasts to the end)".to_string()
                    } else {
                        recover.join(" ")
                    }
                );
            }
        }
        if !self.expectations.is_empty() {
            let _ = writeln!(s, "\nexpectations:");
            for e in &self.expectations {
                let _ = writeln!(
                    s,
                    "  {} {}",
                    if e.passed { "pass" } else { "FAIL" },
                    e.describe()
                );
            }
        }
        s
    }

    /// A self-contained HTML page with inline SVG charts.
    pub fn to_html(&self) -> String {
        crate::html::render(self)
    }
}
