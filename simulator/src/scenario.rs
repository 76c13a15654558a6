//! Scenario files: the raw TOML form, its validation, and errors that point at file, line and field.
//!
//! Parse, don't validate: [`Scenario::parse`] deserializes the file into private `Raw*` structs (every
//! table denies unknown fields), then checks every value and builds the validated [`Scenario`] the
//! engine runs. Any error is a [`ScenarioError`] naming the file, the line and column, the dotted
//! field path (`events[2].fraction`, `configs[0].router.breaker.failure_rate`) and a fix. The line
//! comes from toml's spans: serde errors carry one, and for errors found after deserializing, the
//! field path is looked up in toml's spanned document tree. The format is documented in
//! `docs/scenarios.md`.

use crate::draw::LogNormal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use stilts_core::{ErrorClass, RouterConfig, ValidConfig};

/// Most providers a scenario's world can hold.
pub const MAX_WORLD_PROVIDERS: usize = 16;
/// Most attempts per request a config under test may make (`max_attempts`). The oracle tries this
/// many attempts per provider and timeline piece, so it stays an upper bound for every run.
pub const MAX_ATTEMPTS: u32 = 64;
/// Most timeline events in one scenario.
pub const MAX_EVENTS: usize = 256;
/// Longest scenario: 31 days of virtual time.
pub const MAX_DURATION_S: f64 = 31.0 * 86_400.0;

const NANOS_PER_SEC: f64 = 1e9;
/// Longest span any millisecond value may give (31 days, like the longest scenario).
pub const MAX_MS: u64 = 31 * 86_400_000;
/// Largest multiplier any factor (brownout, slow first token, capacity, spike) may give.
pub const MAX_FACTOR: f64 = 1e6;
/// Slowest and fastest generation speeds, tokens per second.
const TOKENS_PER_S_RANGE: (f64, f64) = (1e-3, 1e9);
/// Shortest flapping period: 1 ms.
const MIN_FLAP_PERIOD_NS: u64 = NANOS_PER_MS;
/// Highest request rate a scenario may reach, spikes included.
const MAX_RATE_RPS: f64 = 1e7;
const NANOS_PER_MS: u64 = 1_000_000;

/// A scenario that cannot be loaded: where the problem is and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    /// The file the problem is in (a scenario, or a router config file it includes).
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// Dotted path of the field, e.g. `providers[1].ttft_ms.p99`; empty for syntax errors.
    pub path: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it; empty when the problem says it all.
    pub fix: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

/// A problem found by validation, before it is placed in a file.
#[derive(Debug)]
struct Invalid {
    path: String,
    problem: String,
    fix: String,
    /// The problem is in an included config file (with this text), not in the scenario.
    file: Option<(PathBuf, String)>,
}

fn invalid(path: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Invalid {
    Invalid {
        path: path.into(),
        problem: problem.into(),
        fix: fix.into(),
        file: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Raw form
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_seed")]
    seed: u64,
    duration_s: f64,
    traffic: RawTraffic,
    providers: Vec<RawProvider>,
    #[serde(default)]
    events: Vec<RawEvent>,
    #[serde(default)]
    configs: Vec<RawConfig>,
    #[serde(default)]
    baselines: RawBaselines,
    #[serde(default)]
    expect: Vec<RawExpect>,
    #[serde(default)]
    report: RawReport,
}

fn default_seed() -> u64 {
    1
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawDist {
    p50: f64,
    p99: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    rate_rps: Option<f64>,
    steps: Option<Vec<[f64; 2]>>,
    diurnal: Option<RawDiurnal>,
    #[serde(default)]
    spikes: Vec<RawSpike>,
    input_tokens: Option<RawDist>,
    output_tokens: Option<RawDist>,
    #[serde(default)]
    stream_share: f64,
    deadline_ms: Option<u64>,
    max_tokens: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiurnal {
    trough_rps: f64,
    peak_rps: f64,
    #[serde(default = "default_peak_at")]
    peak_at_s: f64,
    #[serde(default = "default_period")]
    period_s: f64,
}

fn default_peak_at() -> f64 {
    14.0 * 3600.0
}
fn default_period() -> f64 {
    86_400.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpike {
    start_s: f64,
    duration_s: f64,
    factor: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    model: Option<String>,
    weight: Option<u32>,
    ttft_ms: Option<RawDist>,
    tokens_per_s: Option<f64>,
    error_latency_ms: Option<RawDist>,
    connect_ms: Option<f64>,
    #[serde(default)]
    errors: BTreeMap<ErrorClass, f64>,
    rate_limit_retry_after_ms: Option<u64>,
    capacity: Option<RawCapacity>,
    context_window: Option<u32>,
    input_usd_per_mtok: Option<f64>,
    output_usd_per_mtok: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapacity {
    concurrency: u32,
    #[serde(default)]
    queue: u32,
    overload: Option<ErrorClass>,
    retry_after_ms: Option<u64>,
    serve_abandoned: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    kind: EventKindName,
    provider: Option<String>,
    providers: Option<Vec<String>>,
    model: Option<String>,
    start_s: f64,
    duration_s: Option<f64>,
    fraction: Option<f64>,
    mode: Option<OutageMode>,
    class: Option<ErrorClass>,
    factor: Option<f64>,
    retry_after_ms: Option<u64>,
    period_s: Option<f64>,
    down_s: Option<f64>,
    ttft_ms: Option<f64>,
    #[serde(default)]
    note: String,
}

/// The kinds of timeline event.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum EventKindName {
    /// Every attempt fails: 503s or refused connections.
    Outage,
    /// A fraction of attempts fail with one error class.
    ErrorBurst,
    /// Latency (time to first token and generation time) multiplied by `factor`.
    Brownout,
    /// A fraction of attempts never answer.
    Hang,
    /// A fraction of attempts get 429 with Retry-After.
    RateLimit,
    /// Every attempt gets 429 insufficient_quota.
    QuotaExhausted,
    /// A fraction of streams are cut mid-answer.
    StreamCut,
    /// The first token comes late.
    SlowFirstToken,
    /// A fraction of streams stop sending mid-answer.
    StreamStall,
    /// A fraction of answers carry a body (or stream event) that is not valid data.
    Malformed,
    /// The provider goes down and up with a period.
    Flapping,
    /// One model fails for a fraction of attempts, on every deployment that serves it.
    PartialOutage,
    /// The provider's capacity (concurrency) is multiplied by `factor`.
    Capacity,
}

impl EventKindName {
    /// The snake_case name used in files and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKindName::Outage => "outage",
            EventKindName::ErrorBurst => "error_burst",
            EventKindName::Brownout => "brownout",
            EventKindName::Hang => "hang",
            EventKindName::RateLimit => "rate_limit",
            EventKindName::QuotaExhausted => "quota_exhausted",
            EventKindName::StreamCut => "stream_cut",
            EventKindName::SlowFirstToken => "slow_first_token",
            EventKindName::StreamStall => "stream_stall",
            EventKindName::Malformed => "malformed",
            EventKindName::Flapping => "flapping",
            EventKindName::PartialOutage => "partial_outage",
            EventKindName::Capacity => "capacity",
        }
    }
}

/// How an outage fails.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutageMode {
    /// HTTP 503 after the provider's error latency.
    #[default]
    #[serde(rename = "503")]
    Unavailable,
    /// Connection refused after the connect time.
    #[serde(rename = "refused")]
    Refused,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: String,
    router: Option<RouterConfig>,
    file: Option<String>,
    table: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBaselines {
    primary: Option<String>,
    timeout_ms: Option<u64>,
    sdk_retries: Option<u32>,
    sdk_backoff_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    config: String,
    availability_min: Option<f64>,
    availability_max: Option<f64>,
    cost_per_1k_max: Option<f64>,
    amplification_max: Option<f64>,
    p99_ms_max: Option<f64>,
    recover_ms_max: Option<f64>,
    #[serde(default)]
    beats: Vec<String>,
    #[serde(default)]
    cheaper_than: Vec<String>,
    from_s: Option<f64>,
    until_s: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReport {
    chart_points: Option<u32>,
    resolution_ms: Option<u64>,
    recovered_availability: Option<f64>,
    recovered_hold_s: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// Validated form
// ---------------------------------------------------------------------------------------------

/// A validated scenario, ready to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Default seed (`--seed` overrides it).
    pub seed: u64,
    /// Arrivals stop after this long; requests in flight then run to their end.
    pub duration_ns: u64,
    /// How requests arrive.
    pub traffic: Traffic,
    /// The world's providers.
    pub providers: Vec<ProviderModel>,
    /// The timeline.
    pub events: Vec<Event>,
    /// Router configs to compare, in file order.
    pub configs: Vec<ConfigUnderTest>,
    /// Baseline settings.
    pub baselines: Baselines,
    /// Expectations, in file order.
    pub expectations: Vec<Expectation>,
    /// Report settings.
    pub report: ReportSettings,
    /// The most attempts on one provider any run can make for one request: the oracle's reach.
    pub oracle_attempts: u32,
}

/// The arrival process and request shapes.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// Rate over time before spikes.
    pub rate: Rate,
    /// Spikes: (start, end, factor).
    pub spikes: Vec<(u64, u64, f64)>,
    pub(crate) input_tokens: LogNormal,
    pub(crate) output_tokens: LogNormal,
    /// Share of requests that stream.
    pub stream_share: f64,
    /// The client's deadline for every request.
    pub deadline_ns: u64,
    /// The `max_tokens` every request sets, if any: the router is told it as the expected output
    /// (like the gateway), and answers are cut at it.
    pub max_tokens: Option<u32>,
    /// The largest rate at any time (for thinning).
    pub rate_max_rps: f64,
}

/// A request rate over time.
#[derive(Clone, Debug)]
pub enum Rate {
    /// The same rate throughout.
    Constant(f64),
    /// (start ns, rps) steps, sorted.
    Steps(Vec<(u64, f64)>),
    /// A day-shaped sine between trough and peak.
    Diurnal {
        /// Lowest rate.
        trough_rps: f64,
        /// Highest rate.
        peak_rps: f64,
        /// When the peak is, in seconds from the start (modulo the period).
        peak_at_s: f64,
        /// Period in seconds.
        period_s: f64,
    },
}

/// A provider of the simulated world: how it answers, fails, and what it charges.
#[derive(Clone, Debug)]
pub struct ProviderModel {
    /// Unique name.
    pub name: String,
    /// The model it serves (for per-model events).
    pub model: String,
    /// Weight for the `seed_router` baseline.
    pub weight: u32,
    pub(crate) ttft: LogNormal,
    /// Generation speed.
    pub tokens_per_s: f64,
    pub(crate) error_latency: LogNormal,
    /// Time to a refused connection.
    pub connect_ns: u64,
    /// Base error probability per class, indexed by [`ErrorClass::index`].
    pub errors: [f64; 8],
    /// Retry-After sent with base 429s.
    pub rate_limit_retry_after_ns: Option<u64>,
    /// Concurrency limit and queue.
    pub capacity: Option<Capacity>,
    /// The real context window.
    pub context_window: Option<u32>,
    /// List price, USD per million input tokens.
    pub input_usd_per_mtok: f64,
    /// List price, USD per million output tokens.
    pub output_usd_per_mtok: f64,
    /// Indexes of the events that affect it, in file order (not necessarily start order).
    pub events: Vec<usize>,
}

/// A provider's finite capacity.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    /// Attempts served at once.
    pub concurrency: u32,
    /// Attempts waiting beyond that; more are rejected.
    pub queue: u32,
    /// The class of a rejection.
    pub overload: ErrorClass,
    /// Retry-After sent with a rejection.
    pub retry_after_ns: Option<u64>,
    /// Whether the provider finishes work whose client has gone (the usual case: it cannot tell).
    pub serve_abandoned: bool,
}

/// One timeline event, resolved to providers and nanoseconds.
#[derive(Clone, Debug)]
pub struct Event {
    /// What happens.
    pub kind: EventKind,
    /// The affected world providers.
    pub providers: Vec<usize>,
    /// Start.
    pub start_ns: u64,
    /// End (exclusive); the scenario end plus the longest deadline for "until the end".
    pub end_ns: u64,
    /// Free text from the file.
    pub note: String,
}

/// What an event does while it is active.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EventKind {
    /// Every attempt fails.
    Outage(OutageMode),
    /// `fraction` of attempts fail with `class`.
    ErrorBurst {
        /// Class.
        class: ErrorClass,
        /// Share.
        fraction: f64,
        /// Retry-After sent with these failures (default: the provider's
        /// `rate_limit_retry_after_ms` for `rate_limited`, none otherwise).
        retry_after_ns: Option<u64>,
    },
    /// Latency × `factor`.
    Brownout {
        /// Multiplier.
        factor: f64,
    },
    /// `fraction` of attempts hang.
    Hang {
        /// Share.
        fraction: f64,
    },
    /// `fraction` of attempts get 429.
    RateLimit {
        /// Share.
        fraction: f64,
        /// Retry-After.
        retry_after_ns: Option<u64>,
    },
    /// 429 insufficient_quota.
    QuotaExhausted,
    /// `fraction` of streams cut.
    StreamCut {
        /// Share.
        fraction: f64,
    },
    /// TTFT × `factor`, or at least `ttft_ns`.
    SlowFirstToken {
        /// Multiplier.
        factor: f64,
        /// Floor.
        ttft_ns: u64,
    },
    /// `fraction` of streams stall.
    StreamStall {
        /// Share.
        fraction: f64,
    },
    /// `fraction` of answers malformed.
    Malformed {
        /// Share.
        fraction: f64,
    },
    /// Down for `down_ns` of every `period_ns`.
    Flapping {
        /// Period.
        period_ns: u64,
        /// Down part of each period.
        down_ns: u64,
        /// How it fails when down.
        mode: OutageMode,
    },
    /// `fraction` of attempts on one model get 503.
    PartialOutage {
        /// Share.
        fraction: f64,
    },
    /// Concurrency × `factor`.
    Capacity {
        /// Multiplier.
        factor: f64,
    },
}

impl EventKind {
    /// The kind's name.
    pub fn name(&self) -> EventKindName {
        match self {
            EventKind::Outage(_) => EventKindName::Outage,
            EventKind::ErrorBurst { .. } => EventKindName::ErrorBurst,
            EventKind::Brownout { .. } => EventKindName::Brownout,
            EventKind::Hang { .. } => EventKindName::Hang,
            EventKind::RateLimit { .. } => EventKindName::RateLimit,
            EventKind::QuotaExhausted => EventKindName::QuotaExhausted,
            EventKind::StreamCut { .. } => EventKindName::StreamCut,
            EventKind::SlowFirstToken { .. } => EventKindName::SlowFirstToken,
            EventKind::StreamStall { .. } => EventKindName::StreamStall,
            EventKind::Malformed { .. } => EventKindName::Malformed,
            EventKind::Flapping { .. } => EventKindName::Flapping,
            EventKind::PartialOutage { .. } => EventKindName::PartialOutage,
            EventKind::Capacity { .. } => EventKindName::Capacity,
        }
    }
}

/// A router config under test.
#[derive(Clone, Debug)]
pub struct ConfigUnderTest {
    /// Name in reports and expectations.
    pub name: String,
    /// The validated config.
    pub config: ValidConfig,
    /// For each of the config's providers, the index of the world provider it names.
    pub world_index: Vec<usize>,
}

/// Settings of the simulator-side baselines.
#[derive(Clone, Debug)]
pub struct Baselines {
    /// The world provider `single` uses and `naive` tries first.
    pub primary: usize,
    /// Per-attempt timeout of the baselines (an SDK's `timeout=`).
    pub timeout_ns: u64,
    /// Retries the SDK makes inside each step of the `naive` chain.
    pub sdk_retries: u32,
    /// Backoff base of those SDK retries.
    pub sdk_backoff_ns: u64,
}

/// One expectation block: checks on one run.
#[derive(Clone, Debug, Default)]
pub struct Expectation {
    /// The config or baseline it checks.
    pub run: String,
    /// Minimum availability.
    pub availability_min: Option<f64>,
    /// Maximum availability (to pin that a baseline stays degraded).
    pub availability_max: Option<f64>,
    /// Maximum cost per 1 000 requests, USD.
    pub cost_per_1k_max: Option<f64>,
    /// Maximum attempts per request.
    pub amplification_max: Option<f64>,
    /// Maximum p99 latency of answered requests, ms.
    pub p99_ms_max: Option<f64>,
    /// Every event must be recovered from within this long, ms.
    pub recover_ms_max: Option<f64>,
    /// Runs this one must have strictly higher availability than.
    pub beats: Vec<String>,
    /// Runs this one must cost strictly less than (per 1 000 requests).
    pub cheaper_than: Vec<String>,
    /// Availability checks apply to requests arriving in this window (ns), if set.
    pub window_ns: Option<(u64, u64)>,
}

/// Report settings.
#[derive(Clone, Debug)]
pub struct ReportSettings {
    /// Points in each time series of the report.
    pub chart_points: u32,
    /// Resolution of the availability series used for recovery times.
    pub resolution_ns: u64,
    /// Availability that counts as recovered.
    pub recovered_availability: f64,
    /// How long availability must stay recovered.
    pub recovered_hold_ns: u64,
}

/// Names of the baselines, in report order.
pub const BASELINES: [&str; 4] = ["single", "naive", "seed_router", "oracle"];

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl Scenario {
    /// Reads and validates the scenario file at `path`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_path_buf(),
            position: None,
            path: String::new(),
            problem: format!("cannot read the file: {e}"),
            fix: String::new(),
        })?;
        Scenario::parse(&text, path)
    }

    /// Validates scenario `text`; `origin` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, origin: &Path) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError {
            file: origin.to_path_buf(),
            position: e.span().map(|s| line_column(text, s.start)),
            path: String::new(),
            problem: e.message().trim().to_string(),
            fix: "see docs/scenarios.md for the format".into(),
        })?;
        let base = origin.parent().unwrap_or(Path::new("."));
        validate(raw, base).map_err(|inv| {
            let (file, text) = match &inv.file {
                Some((file, text)) => (file.clone(), text.as_str()),
                None => (origin.to_path_buf(), text),
            };
            ScenarioError {
                position: locate(text, &inv.path).map(|offset| line_column(text, offset)),
                file,
                path: inv.path,
                problem: inv.problem,
                fix: inv.fix,
            }
        })
    }

    /// Names of every run in report order: configs, then the baselines.
    pub fn run_names(&self) -> Vec<String> {
        self.configs
            .iter()
            .map(|c| c.name.clone())
            .chain(BASELINES.iter().map(|b| (*b).to_string()))
            .collect()
    }

    /// The requests one run is expected to simulate: the integral of the traffic rate (spikes
    /// included) over the duration. The arrivals are a Poisson process, so a run draws this many
    /// on average; every run of a report (each config, then the four baselines) draws the same
    /// ones. Computed exactly, piece by piece between rate changes, without simulating anything:
    /// this is how `stilts sim` bounds its work before starting.
    pub fn expected_requests(&self) -> f64 {
        self.traffic.expected_requests(self.duration_ns)
    }
}

impl Traffic {
    /// The integral of the rate over `[0, duration_ns)`, in requests (see
    /// [`Scenario::expected_requests`]).
    pub fn expected_requests(&self, duration_ns: u64) -> f64 {
        // Every instant where the base rate or the spike product may change.
        let mut cuts = vec![0, duration_ns];
        if let Rate::Steps(steps) = &self.rate {
            cuts.extend(steps.iter().map(|(at, _)| *at));
        }
        for (start, end, _) in &self.spikes {
            cuts.extend([*start, *end]);
        }
        cuts.retain(|t| *t <= duration_ns);
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2)
            .map(|w| {
                let (a, b) = (w[0], w[1]);
                let spike: f64 = self
                    .spikes
                    .iter()
                    .filter(|(s, e, _)| *s <= a && a < *e)
                    .map(|(_, _, f)| *f)
                    .product();
                spike * self.rate.integral(a, b)
            })
            .sum()
    }
}

impl Rate {
    /// Requests arriving over `[from_ns, until_ns)` at this rate, where no step starts inside
    /// the span.
    fn integral(&self, from_ns: u64, until_ns: u64) -> f64 {
        let (a, b) = (
            from_ns as f64 / NANOS_PER_SEC,
            until_ns as f64 / NANOS_PER_SEC,
        );
        match self {
            Rate::Constant(r) => r * (b - a),
            Rate::Steps(steps) => {
                let r = steps
                    .iter()
                    .take_while(|(at, _)| *at <= from_ns)
                    .last()
                    .map_or(0.0, |(_, r)| *r);
                r * (b - a)
            }
            Rate::Diurnal {
                trough_rps,
                peak_rps,
                peak_at_s,
                period_s,
            } => {
                // mid + amp * cos(2 pi (t - peak_at) / period), integrated in closed form.
                let mid = (peak_rps + trough_rps) / 2.0;
                let amp = (peak_rps - trough_rps) / 2.0;
                let w = std::f64::consts::TAU / period_s;
                let sin = |t: f64| (w * (t - peak_at_s)).sin();
                mid * (b - a) + amp / w * (sin(b) - sin(a))
            }
        }
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Segment::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// The byte offset of the deepest part of `path` found in the document `text`.
fn locate(text: &str, path: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut best = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for segment in segments(path) {
        let next = match (segment, table, value) {
            (Segment::Key(k), Some(t), _) => t
                .get_key_value(k)
                .map(|(key, v)| (key.span().start, v.span().start, v.get_ref())),
            (Segment::Index(i), _, Some(DeValue::Array(a))) => a
                .get(i)
                .map(|v| (v.span().start, v.span().start, v.get_ref())),
            _ => None,
        };
        let Some((key_at, value_at, v)) = next else {
            break;
        };
        // Tables opened by a `[header]` have spans at their header; keys are always precise.
        best = Some(if matches!(v, DeValue::Table(_)) {
            key_at.min(value_at)
        } else {
            value_at
        });
        table = match v {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
        value = Some(v);
    }
    best
}

fn secs(path: &str, value: f64) -> Result<u64, Invalid> {
    if value.is_finite() && (0.0..=MAX_DURATION_S).contains(&value) {
        Ok((value * NANOS_PER_SEC).round() as u64)
    } else {
        Err(invalid(
            path,
            format!("must be a number of seconds in 0..={MAX_DURATION_S}, got {value}"),
            "use seconds from the scenario start, such as 60",
        ))
    }
}

fn fraction(path: &str, value: Option<f64>, default: f64) -> Result<f64, Invalid> {
    let v = value.unwrap_or(default);
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            path,
            format!("must be in [0, 1], got {v}"),
            "use a share such as 0.25",
        ))
    }
}

fn positive(path: &str, value: f64, example: &str) -> Result<f64, Invalid> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(invalid(
            path,
            format!("must be a positive number, got {value}"),
            format!("use a value such as {example}"),
        ))
    }
}

/// A whole number of milliseconds in 0..=[`MAX_MS`], as nanoseconds (never overflows).
fn millis(path: &str, ms: u64) -> Result<u64, Invalid> {
    if ms <= MAX_MS {
        Ok(ms * NANOS_PER_MS)
    } else {
        Err(invalid(
            path,
            format!("must be at most {MAX_MS} ms (31 days), got {ms}"),
            "give milliseconds, such as 30000",
        ))
    }
}

/// A positive number of milliseconds up to [`MAX_MS`].
fn positive_ms(path: &str, value: f64, example: &str) -> Result<f64, Invalid> {
    let v = positive(path, value, example)?;
    if v <= MAX_MS as f64 {
        Ok(v)
    } else {
        Err(invalid(
            path,
            format!("must be at most {MAX_MS} ms (31 days), got {v}"),
            format!("use a value such as {example}"),
        ))
    }
}

/// A positive multiplier up to [`MAX_FACTOR`].
fn factor_in_range(path: &str, value: f64, example: &str) -> Result<f64, Invalid> {
    let v = positive(path, value, example)?;
    if v <= MAX_FACTOR {
        Ok(v)
    } else {
        Err(invalid(
            path,
            format!("must be at most {MAX_FACTOR:e}, got {v}"),
            format!("use a value such as {example}"),
        ))
    }
}

/// Upper bounds of the log-normal distributions: (largest value, unit).
const DIST_MS: (f64, &str) = (MAX_MS as f64, "ms (31 days)");
const DIST_TOKENS: (f64, &str) = (4.0e9, "tokens");

fn dist(
    path: &str,
    raw: Option<RawDist>,
    default: (f64, f64),
    (max, unit): (f64, &str),
) -> Result<LogNormal, Invalid> {
    let (p50, p99) = match raw {
        Some(d) => (d.p50, d.p99.unwrap_or(d.p50)),
        None => default,
    };
    positive(&format!("{path}.p50"), p50, "800")?;
    for (field, v) in [("p50", p50), ("p99", p99)] {
        if v > max {
            return Err(invalid(
                format!("{path}.{field}"),
                format!("must be at most {max} {unit}, got {v}"),
                "give a smaller value",
            ));
        }
    }
    if !(p99.is_finite() && p99 >= p50) {
        return Err(invalid(
            format!("{path}.p99"),
            format!("must be at least p50 ({p50}), got {p99}"),
            "give the 99th percentile, which is at least the median",
        ));
    }
    Ok(LogNormal::from_p50_p99(p50, p99))
}

fn validate(raw: RawScenario, base: &Path) -> Result<Scenario, Invalid> {
    if raw.name.trim().is_empty() {
        return Err(invalid("name", "is empty", "name the scenario"));
    }
    let duration_s = positive("duration_s", raw.duration_s, "600")?;
    let duration_ns = secs("duration_s", duration_s)?;
    let traffic = validate_traffic(&raw.traffic)?;

    if raw.providers.is_empty() || raw.providers.len() > MAX_WORLD_PROVIDERS {
        return Err(invalid(
            "providers",
            format!(
                "has {} entries; a world needs 1 to {MAX_WORLD_PROVIDERS}",
                raw.providers.len()
            ),
            "add [[providers]] tables",
        ));
    }
    let mut providers = Vec::with_capacity(raw.providers.len());
    for (i, p) in raw.providers.iter().enumerate() {
        let model = validate_provider(i, p)?;
        if let Some(j) = providers
            .iter()
            .position(|q: &ProviderModel| q.name == model.name)
        {
            return Err(invalid(
                format!("providers[{i}].name"),
                format!("\"{}\" is already the name of providers[{j}]", model.name),
                "give each provider a unique name",
            ));
        }
        providers.push(model);
    }
    let find = |path: &str, name: &str| -> Result<usize, Invalid> {
        providers
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| {
                invalid(
                    path,
                    format!("no provider named \"{name}\""),
                    format!(
                        "use one of: {}",
                        providers
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    };

    if raw.events.len() > MAX_EVENTS {
        return Err(invalid(
            "events",
            format!("has {} entries, more than {MAX_EVENTS}", raw.events.len()),
            "split the scenario",
        ));
    }
    // An event "until the end" lasts until every request has finished.
    let horizon_ns = duration_ns + traffic.deadline_ns + NANOS_PER_MS;
    let mut events = Vec::with_capacity(raw.events.len());
    for (i, e) in raw.events.iter().enumerate() {
        let path = |f: &str| format!("events[{i}].{f}");
        let mut targets = Vec::new();
        if let Some(name) = &e.provider {
            targets.push(find(&path("provider"), name)?);
        }
        for (j, name) in e.providers.iter().flatten().enumerate() {
            targets.push(find(&path(&format!("providers[{j}]")), name)?);
        }
        if let Some(model) = &e.model {
            let before = targets.len();
            targets.extend(
                providers
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| &p.model == model)
                    .map(|(k, _)| k),
            );
            if targets.len() == before {
                return Err(invalid(
                    path("model"),
                    format!("no provider serves model \"{model}\""),
                    "set `model` on the [[providers]] that serve it",
                ));
            }
        }
        targets.sort_unstable();
        targets.dedup();
        if targets.is_empty() {
            return Err(invalid(
                path("kind"),
                "names no provider",
                "add `provider = \"name\"`, `providers = [..]` or `model = \"..\"`",
            ));
        }
        let start_ns = secs(&path("start_s"), e.start_s)?;
        let end_ns = match e.duration_s {
            Some(d) => {
                start_ns + secs(&path("duration_s"), positive(&path("duration_s"), d, "60")?)?
            }
            None => horizon_ns.max(start_ns + 1),
        };
        let kind = validate_event_kind(i, e)?;
        events.push(Event {
            kind,
            providers: targets,
            start_ns,
            end_ns,
            note: e.note.clone(),
        });
    }

    let mut configs = Vec::with_capacity(raw.configs.len());
    for (i, c) in raw.configs.into_iter().enumerate() {
        configs.push(validate_config(i, c, &providers, base)?);
    }
    let primary = match &raw.baselines.primary {
        Some(name) => find("baselines.primary", name)?,
        None => 0,
    };
    let baselines = Baselines {
        primary,
        timeout_ns: match raw.baselines.timeout_ms {
            Some(0) => {
                return Err(invalid(
                    "baselines.timeout_ms",
                    "must be greater than 0",
                    "use the SDK timeout your app sets, such as 30000",
                ));
            }
            Some(ms) => millis("baselines.timeout_ms", ms)?,
            None => 30_000 * NANOS_PER_MS,
        },
        sdk_retries: match raw.baselines.sdk_retries {
            Some(n) if n > 9 => {
                return Err(invalid(
                    "baselines.sdk_retries",
                    format!("{n} is more than 9"),
                    "SDKs default to 2",
                ));
            }
            n => n.unwrap_or(0),
        },
        sdk_backoff_ns: millis(
            "baselines.sdk_backoff_ms",
            raw.baselines.sdk_backoff_ms.unwrap_or(500),
        )?,
    };

    let mut names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
    names.extend(BASELINES.iter().map(|b| (*b).to_string()));
    let check_run = |path: String, name: &str| -> Result<(), Invalid> {
        if names.iter().any(|n| n == name) {
            Ok(())
        } else {
            Err(invalid(
                path,
                format!("no config or baseline named \"{name}\""),
                format!("use one of: {}", names.join(", ")),
            ))
        }
    };
    let mut expectations = Vec::with_capacity(raw.expect.len());
    for (i, e) in raw.expect.iter().enumerate() {
        let path = |f: &str| format!("expect[{i}].{f}");
        check_run(path("config"), &e.config)?;
        for (j, b) in e.beats.iter().enumerate() {
            check_run(path(&format!("beats[{j}]")), b)?;
        }
        for (j, b) in e.cheaper_than.iter().enumerate() {
            check_run(path(&format!("cheaper_than[{j}]")), b)?;
        }
        let window_ns = match (e.from_s, e.until_s) {
            (None, None) => None,
            (from, until) => {
                let from = secs(&path("from_s"), from.unwrap_or(0.0))?;
                let until = secs(&path("until_s"), until.unwrap_or(duration_s))?;
                if until <= from {
                    return Err(invalid(
                        path("until_s"),
                        "must be after from_s",
                        "give a window inside the scenario",
                    ));
                }
                Some((from, until))
            }
        };
        expectations.push(Expectation {
            run: e.config.clone(),
            availability_min: e
                .availability_min
                .map(|v| fraction(&path("availability_min"), Some(v), 0.0))
                .transpose()?,
            availability_max: e
                .availability_max
                .map(|v| fraction(&path("availability_max"), Some(v), 0.0))
                .transpose()?,
            cost_per_1k_max: e.cost_per_1k_max,
            amplification_max: e.amplification_max,
            p99_ms_max: e.p99_ms_max,
            recover_ms_max: e.recover_ms_max,
            beats: e.beats.clone(),
            cheaper_than: e.cheaper_than.clone(),
            window_ns,
        });
    }

    let r = &raw.report;
    let chart_points = r.chart_points.unwrap_or(120);
    if !(2..=2000).contains(&chart_points) {
        return Err(invalid(
            "report.chart_points",
            format!("must be in 2..=2000, got {chart_points}"),
            "use about 120",
        ));
    }
    let resolution_ns = millis(
        "report.resolution_ms",
        r.resolution_ms.unwrap_or(1000).max(1),
    )?;
    if duration_ns / resolution_ns > 10_000_000 {
        return Err(invalid(
            "report.resolution_ms",
            "gives more than 10 million points",
            "use a coarser resolution for long scenarios",
        ));
    }
    let report = ReportSettings {
        chart_points,
        resolution_ns,
        recovered_availability: fraction(
            "report.recovered_availability",
            r.recovered_availability,
            0.95,
        )?,
        recovered_hold_ns: secs("report.recovered_hold_s", r.recovered_hold_s.unwrap_or(5.0))?,
    };
    for (i, e) in events.iter().enumerate() {
        for p in &e.providers {
            providers[*p].events.push(i);
        }
    }
    let oracle_attempts = configs
        .iter()
        .map(|c| c.config.max_attempts)
        .chain([baselines.sdk_retries + 1, 3])
        .max()
        .unwrap_or(3);
    Ok(Scenario {
        name: raw.name,
        description: raw.description,
        seed: raw.seed,
        duration_ns,
        traffic,
        providers,
        events,
        configs,
        baselines,
        expectations,
        report,
        oracle_attempts,
    })
}

fn validate_traffic(t: &RawTraffic) -> Result<Traffic, Invalid> {
    let given = [t.rate_rps.is_some(), t.steps.is_some(), t.diurnal.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        return Err(invalid(
            "traffic",
            "needs exactly one of rate_rps, steps or diurnal",
            "for a constant rate write `rate_rps = 50`",
        ));
    }
    let rps = |path: &str, v: f64| -> Result<f64, Invalid> {
        if v.is_finite() && (0.0..=MAX_RATE_RPS).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(
                path,
                format!("must be a rate in 0..=1e7 requests/s, got {v}"),
                "use requests per second, such as 50",
            ))
        }
    };
    let (rate, mut max) = if let Some(r) = t.rate_rps {
        let r = rps("traffic.rate_rps", r)?;
        (Rate::Constant(r), r)
    } else if let Some(steps) = &t.steps {
        if steps.is_empty() {
            return Err(invalid(
                "traffic.steps",
                "is empty",
                "list [start_s, rps] pairs",
            ));
        }
        let mut out = Vec::with_capacity(steps.len());
        let mut max: f64 = 0.0;
        for (i, [start, r]) in steps.iter().enumerate() {
            let at = secs(&format!("traffic.steps[{i}]"), *start)?;
            if out.last().is_some_and(|(prev, _)| *prev >= at) {
                return Err(invalid(
                    format!("traffic.steps[{i}]"),
                    "starts before the previous step",
                    "sort the steps by start time",
                ));
            }
            let r = rps(&format!("traffic.steps[{i}]"), *r)?;
            max = max.max(r);
            out.push((at, r));
        }
        (Rate::Steps(out), max)
    } else if let Some(d) = &t.diurnal {
        let trough = rps("traffic.diurnal.trough_rps", d.trough_rps)?;
        let peak = rps("traffic.diurnal.peak_rps", d.peak_rps)?;
        if peak < trough {
            return Err(invalid(
                "traffic.diurnal.peak_rps",
                "is below trough_rps",
                "make the peak at least the trough",
            ));
        }
        positive("traffic.diurnal.period_s", d.period_s, "86400")?;
        if !d.peak_at_s.is_finite() {
            return Err(invalid(
                "traffic.diurnal.peak_at_s",
                format!("must be a number of seconds, got {}", d.peak_at_s),
                "use seconds from the scenario start, such as 50400",
            ));
        }
        (
            Rate::Diurnal {
                trough_rps: trough,
                peak_rps: peak,
                peak_at_s: d.peak_at_s,
                period_s: d.period_s,
            },
            peak,
        )
    } else {
        (Rate::Constant(0.0), 0.0)
    };
    let mut spikes = Vec::with_capacity(t.spikes.len());
    for (i, s) in t.spikes.iter().enumerate() {
        let path = |f: &str| format!("traffic.spikes[{i}].{f}");
        let start = secs(&path("start_s"), s.start_s)?;
        let end = start
            + secs(
                &path("duration_s"),
                positive(&path("duration_s"), s.duration_s, "60")?,
            )?;
        let factor = factor_in_range(&path("factor"), s.factor, "3")?;
        spikes.push((start, end, factor));
    }
    max *= spike_peak(&spikes);
    if max > MAX_RATE_RPS {
        return Err(invalid(
            "traffic.spikes",
            format!("overlapping spikes reach {max:e} requests/s, more than {MAX_RATE_RPS:e}"),
            "lower the spike factors",
        ));
    }
    if max <= 0.0 {
        return Err(invalid(
            "traffic",
            "never sends a request",
            "give a positive rate",
        ));
    }
    let stream_share = fraction("traffic.stream_share", Some(t.stream_share), 0.0)?;
    let deadline_ns = match t.deadline_ms {
        Some(0) => {
            return Err(invalid(
                "traffic.deadline_ms",
                "must be greater than 0",
                "use the client's timeout, such as 30000",
            ));
        }
        Some(ms) => millis("traffic.deadline_ms", ms)?,
        None => 60_000 * NANOS_PER_MS,
    };
    Ok(Traffic {
        rate,
        spikes,
        input_tokens: dist(
            "traffic.input_tokens",
            t.input_tokens,
            (800.0, 6000.0),
            DIST_TOKENS,
        )?,
        output_tokens: dist(
            "traffic.output_tokens",
            t.output_tokens,
            (250.0, 1200.0),
            DIST_TOKENS,
        )?,
        stream_share,
        deadline_ns,
        max_tokens: match t.max_tokens {
            Some(0) => {
                return Err(invalid(
                    "traffic.max_tokens",
                    "must be greater than 0",
                    "use the max_tokens your client sets, such as 1024, or remove it",
                ));
            }
            m => m,
        },
        rate_max_rps: max,
    })
}

/// The largest product of the factors of the spikes active at one time (1 outside every spike).
///
/// The product only changes where a spike starts or ends, so checking those instants is exact,
/// whatever mix of factors above and below 1 overlaps (a factor below 1 ending can raise it).
fn spike_peak(spikes: &[(u64, u64, f64)]) -> f64 {
    spikes
        .iter()
        .flat_map(|(s, e, _)| [*s, *e])
        .map(|t| {
            spikes
                .iter()
                .filter(|(s, e, _)| *s <= t && t < *e)
                .map(|(_, _, f)| *f)
                .product::<f64>()
        })
        .fold(1.0, f64::max)
}

fn validate_provider(i: usize, p: &RawProvider) -> Result<ProviderModel, Invalid> {
    let path = |f: &str| format!("providers[{i}].{f}");
    if p.name.trim().is_empty() {
        return Err(invalid(path("name"), "is empty", "name the provider"));
    }
    let mut errors = [0.0; 8];
    for (class, rate) in &p.errors {
        errors[class.index()] = fraction(&path(&format!("errors.{class}")), Some(*rate), 0.0)?;
    }
    if errors[ErrorClass::ContextLength.index()] > 0.0 {
        return Err(invalid(
            path("errors.context_length"),
            "is not a random error",
            "set `context_window` and the traffic's token sizes instead",
        ));
    }
    if errors.iter().sum::<f64>() > 1.0 {
        return Err(invalid(
            path("errors"),
            "rates add up to more than 1",
            "lower them",
        ));
    }
    let capacity = match &p.capacity {
        None => None,
        Some(c) => {
            if c.concurrency == 0 {
                return Err(invalid(
                    path("capacity.concurrency"),
                    "must be at least 1",
                    "remove [capacity] for an unlimited provider",
                ));
            }
            Some(Capacity {
                concurrency: c.concurrency,
                queue: c.queue,
                overload: c.overload.unwrap_or(ErrorClass::RateLimited),
                retry_after_ns: c
                    .retry_after_ms
                    .map(|ms| millis(&path("capacity.retry_after_ms"), ms))
                    .transpose()?,
                serve_abandoned: c.serve_abandoned.unwrap_or(true),
            })
        }
    };
    let price = |f: &str, v: Option<f64>| -> Result<f64, Invalid> {
        let v = v.unwrap_or(0.0);
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(invalid(
                path(f),
                format!("must be ≥ 0, got {v}"),
                "use the list price in USD per million tokens",
            ))
        }
    };
    if p.context_window == Some(0) {
        return Err(invalid(
            path("context_window"),
            "must be greater than 0",
            "give the model's context window in tokens",
        ));
    }
    Ok(ProviderModel {
        name: p.name.clone(),
        model: p.model.clone().unwrap_or_else(|| p.name.clone()),
        weight: match p.weight {
            Some(0) => {
                return Err(invalid(
                    path("weight"),
                    "must be at least 1",
                    "remove the provider or give it a weight",
                ));
            }
            w => w.unwrap_or(1),
        },
        ttft: dist(&path("ttft_ms"), p.ttft_ms, (600.0, 3000.0), DIST_MS)?,
        tokens_per_s: {
            let v = positive(&path("tokens_per_s"), p.tokens_per_s.unwrap_or(80.0), "80")?;
            let (lo, hi) = TOKENS_PER_S_RANGE;
            if !(lo..=hi).contains(&v) {
                return Err(invalid(
                    path("tokens_per_s"),
                    format!("must be in {lo}..={hi:e} tokens/s, got {v}"),
                    "use the model's generation speed, such as 80",
                ));
            }
            v
        },
        error_latency: dist(
            &path("error_latency_ms"),
            p.error_latency_ms,
            (150.0, 1500.0),
            DIST_MS,
        )?,
        connect_ns: (positive_ms(&path("connect_ms"), p.connect_ms.unwrap_or(20.0), "20")? * 1e6)
            as u64,
        errors,
        rate_limit_retry_after_ns: p
            .rate_limit_retry_after_ms
            .map(|ms| millis(&path("rate_limit_retry_after_ms"), ms))
            .transpose()?,
        capacity,
        context_window: p.context_window,
        input_usd_per_mtok: price("input_usd_per_mtok", p.input_usd_per_mtok)?,
        output_usd_per_mtok: price("output_usd_per_mtok", p.output_usd_per_mtok)?,
        events: Vec::new(),
    })
}

fn validate_event_kind(i: usize, e: &RawEvent) -> Result<EventKind, Invalid> {
    let path = |f: &str| format!("events[{i}].{f}");
    let frac = || fraction(&path("fraction"), e.fraction, 1.0);
    // Reject parameters the kind does not use: a typo'd scenario should not silently run.
    let used: &[&str] = match e.kind {
        EventKindName::Outage => &["mode"],
        EventKindName::ErrorBurst => &["class", "fraction", "retry_after_ms"],
        EventKindName::Brownout | EventKindName::Capacity => &["factor"],
        EventKindName::Hang
        | EventKindName::StreamCut
        | EventKindName::StreamStall
        | EventKindName::Malformed
        | EventKindName::PartialOutage => &["fraction"],
        EventKindName::RateLimit => &["fraction", "retry_after_ms"],
        EventKindName::QuotaExhausted => &[],
        EventKindName::SlowFirstToken => &["factor", "ttft_ms"],
        EventKindName::Flapping => &["period_s", "down_s", "mode"],
    };
    let given = [
        ("fraction", e.fraction.is_some()),
        ("mode", e.mode.is_some()),
        ("class", e.class.is_some()),
        ("factor", e.factor.is_some()),
        ("retry_after_ms", e.retry_after_ms.is_some()),
        ("period_s", e.period_s.is_some()),
        ("down_s", e.down_s.is_some()),
        ("ttft_ms", e.ttft_ms.is_some()),
    ];
    for (field, present) in given {
        if present && !used.contains(&field) {
            return Err(invalid(
                path(field),
                format!("does not apply to kind \"{}\"", e.kind.as_str()),
                format!(
                    "remove it; \"{}\" takes: {}",
                    e.kind.as_str(),
                    if used.is_empty() {
                        "no parameters".to_string()
                    } else {
                        used.join(", ")
                    }
                ),
            ));
        }
    }
    let factor = |example: &str| -> Result<f64, Invalid> {
        match e.factor {
            Some(f) => factor_in_range(&path("factor"), f, example),
            None => Err(invalid(
                path("factor"),
                "is missing",
                format!("add `factor = {example}`"),
            )),
        }
    };
    Ok(match e.kind {
        EventKindName::Outage => EventKind::Outage(e.mode.unwrap_or_default()),
        EventKindName::ErrorBurst => {
            let Some(class) = e.class else {
                return Err(invalid(
                    path("class"),
                    "is missing",
                    "add `class = \"server\"` (or rate_limited, timeout, auth, ...)",
                ));
            };
            if class == ErrorClass::ContextLength {
                return Err(invalid(
                    path("class"),
                    "context_length is not a burst",
                    "use context_window and token sizes",
                ));
            }
            if class == ErrorClass::Timeout && e.retry_after_ms.is_some() {
                return Err(invalid(
                    path("retry_after_ms"),
                    "a timeout burst hangs: no response carries a Retry-After",
                    "remove it, or use another class",
                ));
            }
            EventKind::ErrorBurst {
                class,
                fraction: frac()?,
                retry_after_ns: e
                    .retry_after_ms
                    .map(|ms| millis(&path("retry_after_ms"), ms))
                    .transpose()?,
            }
        }
        EventKindName::Brownout => EventKind::Brownout {
            factor: factor("5")?,
        },
        EventKindName::Capacity => EventKind::Capacity {
            factor: factor("0.3")?,
        },
        EventKindName::Hang => EventKind::Hang { fraction: frac()? },
        EventKindName::RateLimit => EventKind::RateLimit {
            fraction: frac()?,
            retry_after_ns: e
                .retry_after_ms
                .map(|ms| millis(&path("retry_after_ms"), ms))
                .transpose()?,
        },
        EventKindName::QuotaExhausted => EventKind::QuotaExhausted,
        EventKindName::StreamCut => EventKind::StreamCut { fraction: frac()? },
        EventKindName::StreamStall => EventKind::StreamStall { fraction: frac()? },
        EventKindName::Malformed => EventKind::Malformed { fraction: frac()? },
        EventKindName::PartialOutage => {
            if e.model.is_none() {
                return Err(invalid(
                    path("model"),
                    "is missing",
                    "a partial outage hits one model: add `model = \"..\"`",
                ));
            }
            EventKind::PartialOutage { fraction: frac()? }
        }
        EventKindName::SlowFirstToken => {
            if e.factor.is_none() && e.ttft_ms.is_none() {
                return Err(invalid(
                    path("factor"),
                    "is missing",
                    "add `factor = 10` or `ttft_ms = 15000`",
                ));
            }
            EventKind::SlowFirstToken {
                factor: match e.factor {
                    Some(f) => factor_in_range(&path("factor"), f, "10")?,
                    None => 1.0,
                },
                ttft_ns: match e.ttft_ms {
                    Some(ms) => (positive_ms(&path("ttft_ms"), ms, "15000")? * 1e6) as u64,
                    None => 0,
                },
            }
        }
        EventKindName::Flapping => {
            let period = positive(&path("period_s"), e.period_s.unwrap_or(0.0), "60")?;
            let down = positive(&path("down_s"), e.down_s.unwrap_or(0.0), "20")?;
            if down >= period {
                return Err(invalid(
                    path("down_s"),
                    "must be shorter than period_s",
                    "use an outage for a provider that stays down",
                ));
            }
            let period_ns = secs(&path("period_s"), period)?;
            let down_ns = secs(&path("down_s"), down)?;
            if period_ns < MIN_FLAP_PERIOD_NS {
                return Err(invalid(
                    path("period_s"),
                    format!("must be at least 0.001 s (1 ms), got {period}"),
                    "use a period such as 60",
                ));
            }
            if down_ns == 0 || down_ns >= period_ns {
                return Err(invalid(
                    path("down_s"),
                    format!(
                        "{down} s is not between 1 ns and period_s ({period} s) once rounded to ns"
                    ),
                    "use a down time such as 20",
                ));
            }
            EventKind::Flapping {
                period_ns,
                down_ns,
                mode: e.mode.unwrap_or_default(),
            }
        }
    })
}

/// The fields of a gateway deployment that only matter to its HTTP calls. The others are its
/// routing settings, with the same names and meanings as a router provider's (`ProviderConfig`),
/// so a typo among them is refused as the gateway refuses it.
const DEPLOYMENT_HTTP_KEYS: &[&str] = &[
    "plugin",
    "base_url",
    "api_key_env",
    "model",
    "extra_headers",
    "options",
];

/// The keys of a TOML dotted key such as `routes."gpt-4.1".router` (quoted parts may hold dots).
fn dotted_keys(table: &str) -> Result<Vec<String>, String> {
    if table.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: toml::Table = toml::from_str(&format!("{table} = 0"))
        .map_err(|_| format!("`{table}` is not a TOML dotted key"))?;
    let mut keys = Vec::new();
    let mut level = &doc;
    loop {
        let mut entries = level.iter();
        let (Some((key, value)), None) = (entries.next(), entries.next()) else {
            return Err(format!("`{table}` is not a TOML dotted key"));
        };
        keys.push(key.clone());
        match value {
            toml::Value::Table(inner) => level = inner,
            _ => return Ok(keys),
        }
    }
}

/// A dotted path for messages, with the keys that need it quoted.
fn dotted_path(keys: &[String]) -> String {
    keys.iter()
        .map(|k| {
            if !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                k.clone()
            } else {
                format!("{k:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// What a config's `file` + `table` yield: the router, the dotted path of its table (the prefix of
/// error paths), the file and its text, and whether the providers came from a gateway route's
/// deployments.
type FromFile = (RouterConfig, String, Option<(PathBuf, String)>, bool);

/// Reads the router table `table` of the TOML file `file`. When it is the `router` of a gateway
/// route (`routes.NAME.router`, a table beside `deployments`), the route's deployments are its
/// providers, as in the gateway: each deployment's routing fields make one provider; a missing
/// router table means the defaults; a router that lists providers itself is refused, as the
/// gateway refuses it.
fn router_from_file(
    path: &dyn Fn(&str) -> String,
    file: &str,
    table: Option<&str>,
    base: &Path,
) -> Result<FromFile, Invalid> {
    let file_path = base.join(file);
    let text = std::fs::read_to_string(&file_path).map_err(|e| {
        invalid(
            path("file"),
            format!("cannot read {}: {e}", file_path.display()),
            "give a path relative to the scenario file",
        )
    })?;
    let in_file = |inv: Invalid| Invalid {
        file: Some((file_path.clone(), text.clone())),
        ..inv
    };
    let keys = dotted_keys(table.unwrap_or_default()).map_err(|problem| {
        invalid(
            path("table"),
            problem,
            "give the dotted path of the router table, such as \"routes.chat.router\"",
        )
    })?;
    let table_path = dotted_path(&keys);
    let doc: toml::Table = toml::from_str(&text).map_err(|e| {
        in_file(invalid(
            "",
            e.message().trim(),
            "the file must be valid TOML",
        ))
    })?;
    let mut value = toml::Value::Table(doc);
    // When the path ends at a route's `router`: the route's `deployments`, beside it.
    let mut deployments: Option<toml::Value> = None;
    for (depth, key) in keys.iter().enumerate() {
        let toml::Value::Table(mut level) = value else {
            return Err(invalid(
                path("table"),
                format!("`{table_path}` is not a table in {}", file_path.display()),
                "give the dotted path of the router table",
            ));
        };
        if depth + 1 == keys.len() && key == "router" {
            deployments = level.remove("deployments");
        }
        value = match level.remove(key) {
            Some(v) => v,
            // A gateway route may leave its router table out: the defaults apply.
            None if deployments.is_some() => toml::Value::Table(toml::Table::new()),
            None => {
                return Err(invalid(
                    path("table"),
                    format!("{} has no table `{table_path}`", file_path.display()),
                    "give the dotted path of the router table, such as \"routes.chat.router\"",
                ));
            }
        };
    }
    let Some(deployments) = deployments else {
        let router: RouterConfig = value.try_into().map_err(|e: toml::de::Error| {
            in_file(invalid(
                table_path.clone(),
                e.message().trim(),
                "it must be a router table (see docs/routing.md)",
            ))
        })?;
        return Ok((router, table_path, Some((file_path, text)), false));
    };
    // A gateway route: its deployments are the providers.
    let route_path = dotted_path(&keys[..keys.len() - 1]);
    let at = |field: &str| format!("{route_path}.{field}");
    let mut router_table = match value {
        toml::Value::Table(t) => t,
        _ => {
            return Err(in_file(invalid(
                table_path.clone(),
                "is not a table",
                "it must be a router table (see docs/routing.md)",
            )));
        }
    };
    if router_table
        .get("providers")
        .and_then(toml::Value::as_array)
        .is_some_and(|p| !p.is_empty())
    {
        return Err(in_file(invalid(
            at("router.providers"),
            "is set; a gateway route's providers are its deployments",
            "remove it and list [[deployments]] instead (stilts config check refuses it too)",
        )));
    }
    let deployments = match deployments {
        toml::Value::Array(d) if !d.is_empty() => d,
        _ => {
            return Err(in_file(invalid(
                at("deployments"),
                "is empty or not a list",
                format!("add at least one [[{route_path}.deployments]] table"),
            )));
        }
    };
    let mut providers = Vec::with_capacity(deployments.len());
    for (j, deployment) in deployments.into_iter().enumerate() {
        let provider = match deployment {
            toml::Value::Table(t) => toml::Value::Table(
                t.into_iter()
                    .filter(|(k, _)| !DEPLOYMENT_HTTP_KEYS.contains(&k.as_str()))
                    .collect(),
            ),
            other => other,
        };
        // Typed one by one, so that an error names its deployment.
        if let Err(e) = provider.clone().try_into::<stilts_core::ProviderConfig>() {
            return Err(in_file(invalid(
                at(&format!("deployments[{j}]")),
                e.message().trim(),
                "fix the deployment's routing fields (see docs/configuration.md)",
            )));
        }
        providers.push(provider);
    }
    router_table.insert("providers".to_owned(), toml::Value::Array(providers));
    let router: RouterConfig =
        toml::Value::Table(router_table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                in_file(invalid(
                    table_path.clone(),
                    e.message().trim(),
                    "it must be a router table (see docs/routing.md)",
                ))
            })?;
    Ok((router, table_path, Some((file_path, text)), true))
}

fn validate_config(
    i: usize,
    raw: RawConfig,
    world: &[ProviderModel],
    base: &Path,
) -> Result<ConfigUnderTest, Invalid> {
    let path = |f: &str| format!("configs[{i}].{f}");
    if raw.name.trim().is_empty() || super::scenario::BASELINES.contains(&raw.name.as_str()) {
        return Err(invalid(
            path("name"),
            format!("\"{}\" is empty or the name of a baseline", raw.name),
            "give the config its own name, such as \"stilts\"",
        ));
    }
    // Where the RouterConfig comes from: inline, or a file shared with the gateway.
    let (mut config, prefix, file, from_deployments) = match (raw.router, &raw.file) {
        (Some(router), None) => (router, path("router"), None, false),
        (None, Some(file)) => router_from_file(&path, file, raw.table.as_deref(), base)?,
        _ => {
            return Err(invalid(
                path("router"),
                "needs exactly one of `router` (an inline table) or `file`",
                "add a [configs.router] table",
            ));
        }
    };
    let join = |p: &str| {
        // Providers built from a gateway route's deployments are named where they are written.
        if let (true, Some(rest)) = (from_deployments, p.strip_prefix("providers[")) {
            let route = prefix.strip_suffix(".router").unwrap_or(&prefix);
            return format!("{route}.deployments[{rest}");
        }
        if prefix.is_empty() {
            p.to_string()
        } else {
            format!("{prefix}.{p}")
        }
    };
    let place = |inv: Invalid| match &file {
        Some(f) => Invalid {
            file: Some(f.clone()),
            ..inv
        },
        None => inv,
    };
    let mut world_index = Vec::with_capacity(config.providers.len());
    for (j, p) in config.providers.iter_mut().enumerate() {
        let Some(w) = world.iter().position(|m| m.name == p.name) else {
            return Err(place(invalid(
                join(&format!("providers[{j}].name")),
                format!(
                    "no provider named \"{}\" in the scenario's [[providers]]",
                    p.name
                ),
                format!(
                    "use one of: {}",
                    world
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )));
        };
        // The router learns prices and windows from the world unless the config says otherwise;
        // a gateway route's router sees exactly what the gateway's does (no price: free).
        if !from_deployments {
            let m = &world[w];
            p.input_usd_per_mtok.get_or_insert(m.input_usd_per_mtok);
            p.output_usd_per_mtok.get_or_insert(m.output_usd_per_mtok);
            if p.context_window.is_none() {
                p.context_window = m.context_window;
            }
        }
        world_index.push(w);
    }
    let valid = config
        .validate()
        .map_err(|e| place(invalid(join(&e.path), e.problem, e.fix)))?;
    if valid.max_attempts > MAX_ATTEMPTS {
        return Err(place(invalid(
            join("max_attempts"),
            format!(
                "{} is more than the simulator's {MAX_ATTEMPTS}",
                valid.max_attempts
            ),
            format!("use at most {MAX_ATTEMPTS} attempts per request"),
        )));
    }
    Ok(ConfigUnderTest {
        name: raw.name,
        config: valid,
        world_index,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on broken fixtures
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
duration_s = 10
[traffic]
rate_rps = 5
[[providers]]
name = "a"
[[providers]]
name = "b"
[[configs]]
name = "stilts"
[configs.router]
policy = "priority"
providers = [{ name = "a" }, { name = "b" }]
"#;

    fn err(text: &str) -> ScenarioError {
        match Scenario::parse(text, Path::new("x.toml")) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn expected_requests_integrate_the_rate_with_spikes() {
        let s = Scenario::parse(MINIMAL, Path::new("x.toml")).unwrap();
        assert!((s.expected_requests() - 50.0).abs() < 1e-9);
        let steps = MINIMAL.replace("rate_rps = 5", "steps = [[2, 10], [6, 1]]");
        let s = Scenario::parse(&steps, Path::new("x.toml")).unwrap();
        assert!((s.expected_requests() - (0.0 + 40.0 + 4.0)).abs() < 1e-9);
        // A spike x3 over 2 s and an overlapping x2 over 1 s at 5 rps.
        let spiky = MINIMAL.replace(
            "rate_rps = 5",
            "rate_rps = 5\nspikes = [{ start_s = 1, duration_s = 2, factor = 3 }, \
             { start_s = 2, duration_s = 1, factor = 2 }]",
        );
        let s = Scenario::parse(&spiky, Path::new("x.toml")).unwrap();
        // 8 s at 5, 1 s at 15 (x3), 1 s at 30 (x3 x2).
        assert!((s.expected_requests() - (40.0 + 15.0 + 30.0)).abs() < 1e-9);
        // A whole period of a diurnal curve averages to its middle; half a period from the
        // trough to the peak too.
        let day = MINIMAL
            .replace("duration_s = 10", "duration_s = 86400")
            .replace(
                "rate_rps = 5",
                "diurnal = { trough_rps = 10, peak_rps = 30, peak_at_s = 43200 }",
            );
        let s = Scenario::parse(&day, Path::new("x.toml")).unwrap();
        assert!((s.expected_requests() - 20.0 * 86_400.0).abs() < 1e-6);
        let half = day.replace("duration_s = 86400", "duration_s = 43200");
        let s = Scenario::parse(&half, Path::new("x.toml")).unwrap();
        assert!((s.expected_requests() - 20.0 * 43_200.0).abs() < 1e-6);
    }

    #[test]
    fn minimal_scenario_loads() {
        let s = Scenario::parse(MINIMAL, Path::new("x.toml")).unwrap();
        assert_eq!(s.providers.len(), 2);
        assert_eq!(s.configs[0].world_index, vec![0, 1]);
        assert_eq!(s.oracle_attempts, 4);
    }

    #[test]
    fn unknown_field_names_line() {
        let e = err(&MINIMAL.replace("rate_rps = 5", "rate_rps = 5\nburst = 3"));
        assert_eq!(e.position.map(|p| p.0), Some(6), "{e}");
        assert!(e.problem.contains("burst"), "{e}");
    }

    #[test]
    fn core_config_errors_name_field_and_line() {
        let e = err(&MINIMAL.replace("{ name = \"b\" }", "{ name = \"b\", weight = 0 }"));
        assert_eq!(e.path, "configs[0].router.providers[1].weight");
        assert_eq!(e.position.map(|p| p.0), Some(14), "{e}");
        let e = err(&MINIMAL.replace("{ name = \"b\" }", "{ name = \"c\" }"));
        assert_eq!(e.path, "configs[0].router.providers[1].name");
        assert!(e.to_string().starts_with("x.toml:14:"), "{e}");
    }

    #[test]
    fn event_errors_name_field_and_line() {
        let text = format!(
            "{MINIMAL}\n[[events]]\nkind = \"brownout\"\nprovider = \"a\"\nstart_s = 1\nfraction = 0.5\n"
        );
        let e = err(&text);
        assert_eq!(e.path, "events[0].fraction");
        assert_eq!(e.position.map(|p| p.0), Some(20), "{e}");
        let text =
            format!("{MINIMAL}\n[[events]]\nkind = \"hang\"\nprovider = \"zz\"\nstart_s = 1\n");
        assert_eq!(err(&text).path, "events[0].provider");
    }
}
