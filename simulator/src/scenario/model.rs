//! The validated scenario: the providers of the simulated world, the traffic, the timeline of
//! events, the router configs under test, the baselines, the expectations and the report settings.
//!
//! Everything here has been checked (see `validate`): times are in nanoseconds, providers are
//! indexes into [`Scenario::providers`], and the engine can run it without further checks.

use super::NANOS_PER_SEC;
use crate::draw::LogNormal;
use serde::Deserialize;
use stilts_core::{ErrorClass, ValidConfig};

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
    /// The account's rate limit: attempts admitted over any trailing minute; beyond it a 429
    /// whose Retry-After is the time until the oldest admitted attempt leaves the minute.
    pub requests_per_minute: Option<u32>,
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

/// A router config under test.
#[derive(Clone, Debug)]
pub struct ConfigUnderTest {
    /// Name in reports and expectations.
    pub name: String,
    /// The validated config.
    pub config: ValidConfig,
    /// For each of the config's providers, the index of the world provider it names.
    pub world_index: Vec<usize>,
    /// Gateway replicas behind a round-robin load balancer, each with its own router.
    pub replicas: Replicas,
}

/// How many gateway replicas run a config, and whether they share state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicas {
    /// Replicas (1: one gateway).
    pub count: u32,
    /// With `[cluster]`: the replicas exchange their routers' shared state every this many
    /// nanoseconds (`stilts_core::SharedView`); `None`: each keeps its own.
    pub sync_ns: Option<u64>,
}

impl Replicas {
    /// One gateway.
    pub const ONE: Replicas = Replicas {
        count: 1,
        sync_ns: None,
    };
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
    /// Runs this one must win against: at least their availability; a p99 time to answer (a
    /// failed request counting as never answered) at most 10% above theirs; at equal availability,
    /// no higher cost per 1 000 requests.
    pub beats: Vec<String>,
    /// Per run named in `beats`, why the latency and cost parts against it may be lost: a
    /// trade-off the scenario's user chose (e.g. a pricier primary first). Availability is never
    /// waived.
    pub trade_off: std::collections::BTreeMap<String, String>,
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

impl Scenario {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on broken fixtures
mod tests {
    use crate::scenario::Scenario;
    use crate::scenario::test_support::MINIMAL;
    use std::path::Path;

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
}
