//! The router's configuration: a serde form with documented defaults, and its validated form.
//!
//! Parse, don't validate: [`RouterConfig`] is what a file says (every field optional, with the
//! defaults documented here and in `docs/routing.md`); [`RouterConfig::validate`] turns it into a
//! [`ValidConfig`] or a [`ConfigError`] that names the field and the fix. The router only ever sees
//! a `ValidConfig`. The gateway and the simulator share this form: a route's `[router]` table and a
//! scenario's `[[configs]]` are the same thing.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The most providers one router (one route) can hold.
pub const MAX_PROVIDERS: usize = 64;

/// How the router picks among the healthy providers of the best priority tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Random by weight: what a hand-written router does.
    #[default]
    Weighted,
    /// An ordered fallback chain: the first healthy provider in config order.
    Priority,
    /// Smooth weighted round robin (nginx's): deterministic interleaving by weight.
    RoundRobin,
    /// Power of two random choices over peak-EWMA latency × (in-flight + 1).
    LeastLatency,
    /// The cheapest healthy provider whose context window fits the request.
    Cost,
}

impl PolicyKind {
    /// The snake_case name used in config and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Weighted => "weighted",
            PolicyKind::Priority => "priority",
            PolicyKind::RoundRobin => "round_robin",
            PolicyKind::LeastLatency => "least_latency",
            PolicyKind::Cost => "cost",
        }
    }
}

/// A router: its providers and how it routes among them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// How to pick a provider. Default: `weighted`.
    pub policy: PolicyKind,
    /// The providers, in preference order (used by `priority` and to break ties).
    pub providers: Vec<ProviderConfig>,
    /// Deadline for a whole request, all attempts included, when the client sets none. Default 60 000.
    pub deadline_ms: Option<u64>,
    /// Attempts per request at most, hedges included. Default 4.
    pub max_attempts: Option<u32>,
    /// Per-provider circuit breaker.
    pub breaker: BreakerConfig,
    /// Retry planning and cool-downs.
    pub retry: RetryConfig,
    /// The retry budget shared by all requests of this router.
    pub budget: BudgetConfig,
    /// Hedged requests (off by default).
    pub hedge: HedgeConfig,
    /// Default per-attempt timeouts; a provider may override each one.
    pub timeouts: TimeoutsConfig,
    /// Latency tracking for `least_latency`.
    pub latency: LatencyConfig,
    /// Optional spend limit.
    pub spend: SpendConfig,
}

/// One provider deployment as the router sees it: a name, a share, a price and limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Unique name; it appears in `X-Provider`, metrics and reports.
    pub name: String,
    /// Relative share for `weighted` and `round_robin`. Default 1.
    pub weight: Option<u32>,
    /// Preference tier: lower is preferred; a higher tier gets traffic only when every provider of the
    /// lower tiers is unavailable. Default 0.
    pub priority: Option<u32>,
    /// USD per million input tokens. Default 0.
    pub input_usd_per_mtok: Option<f64>,
    /// USD per million output tokens. Default 0.
    pub output_usd_per_mtok: Option<f64>,
    /// Context window in tokens, if known; requests that do not fit are not sent here.
    pub context_window: Option<u32>,
    /// Local request rate limit per minute, to shift traffic before the provider says 429.
    pub requests_per_minute: Option<u32>,
    /// Local token rate limit per minute (input + expected output).
    pub tokens_per_minute: Option<u64>,
    /// The provider can continue a partial assistant answer exactly (prefill continuation).
    pub prefill_continuation: Option<bool>,
    /// Overrides of the router's default timeouts.
    pub timeouts: TimeoutsConfig,
}

/// Circuit breaker settings. See `docs/routing.md#circuit-breaker`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Trip after this many consecutive outage failures. Default 5; 0 disables the rule.
    pub consecutive_failures: Option<u32>,
    /// Trip when failures / calls over the window reach this ratio (0, 1]. Default 0.5.
    pub failure_rate: Option<f64>,
    /// Trip when slow calls / calls over the window reach this ratio (0, 1]. Default 1.0.
    pub slow_call_rate: Option<f64>,
    /// A call slower than this (time to first token for streams) is slow. Default 30 000.
    pub slow_call_ms: Option<u64>,
    /// Length of the sliding window. Default 30 000.
    pub window_ms: Option<u64>,
    /// Buckets in the window (its time resolution). Default 10.
    pub window_buckets: Option<u32>,
    /// Calls in the window before a rate is judged. Default 20.
    pub minimum_calls: Option<u32>,
    /// Open time after the first trip. Default 5 000.
    pub open_base_ms: Option<u64>,
    /// Open time cap. Default 10 000 (or `open_base_ms`, if longer).
    pub open_max_ms: Option<u64>,
    /// Open time multiplier on each re-trip. Default 2.0.
    pub open_multiplier: Option<f64>,
    /// Open time is shortened by up to this fraction at random, to spread probes. Default 0.2.
    pub open_jitter: Option<f64>,
    /// Probe calls admitted at once when half-open; that many successes close the breaker. Default 2.
    pub half_open_probes: Option<u32>,
}

/// Retry planning and cool-down settings. See `docs/routing.md#retries`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Full-jitter backoff base before retrying a provider that already failed. Default 100.
    pub backoff_base_ms: Option<u64>,
    /// Full-jitter backoff cap. Default 2 000.
    pub backoff_max_ms: Option<u64>,
    /// Wait out a preferred provider's Retry-After up to this long instead of falling to a lower
    /// tier. Default 3 000.
    pub rate_limit_wait_max_ms: Option<u64>,
    /// Cool-down after a 429 without Retry-After, when the provider's 429s are repeated (an
    /// isolated one cools nothing down; `docs/routing.md`, "Error classes"). Default 1 000.
    pub rate_limit_cooldown_ms: Option<u64>,
    /// Cool-down after an auth failure (401/403). Default 300 000.
    pub auth_cooldown_ms: Option<u64>,
    /// Cool-down after a spent quota (longer if Retry-After says so). Default 900 000.
    pub quota_cooldown_ms: Option<u64>,
    /// Fail over after a content-filter refusal instead of returning it. Default false.
    pub content_filter_failover: Option<bool>,
    /// Quick retries of the preferred provider after a loud error while it still answers most of
    /// its calls (its breaker is closed and at most half its recent calls failed) before a lower
    /// tier is used; equal
    /// peers still fail over at once. Default 1; 0 falls to the next tier at once.
    pub preferred_retries: Option<u32>,
}

/// Retry budget settings (Finagle's `RetryBudget`). See `docs/routing.md#retry-budget`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Retries allowed per request over the window. Default 0.2.
    pub ratio: Option<f64>,
    /// Retries always allowed per second, whatever the traffic. Default 10.
    pub min_per_second: Option<f64>,
    /// How long a request's deposit counts. Default 10 000.
    pub window_ms: Option<u64>,
}

/// Hedged requests. See `docs/routing.md#hedging`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgeConfig {
    /// Send a second attempt to another provider when the first has not answered after this long.
    /// Unset (the default) disables hedging. Hedges draw on the retry budget.
    pub delay_ms: Option<u64>,
    /// Hedge a half-open breaker's probe at once to another provider, so a user whose request
    /// probes a provider that may still be down is answered by the other either way; the probe
    /// runs to its end and its outcome decides the breaker. Default true.
    pub probes: Option<bool>,
}

/// Per-attempt timeouts, enforced by the core's [`AttemptTimer`](crate::AttemptTimer) (connect:
/// by the driver's HTTP connector).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// TCP + TLS connect. Default 5 000.
    pub connect_ms: Option<u64>,
    /// Until response headers. Default 10 000. A plain (non-stream) upstream sends its headers
    /// only with the whole answer, so for plain requests the router adds
    /// `plain_headers_ms_per_output_token` per expected output token (capped at `attempt_ms`).
    pub headers_ms: Option<u64>,
    /// Extra headers time per expected output token for plain requests. Default 50 (a floor of
    /// 20 tokens/s).
    pub plain_headers_ms_per_output_token: Option<u64>,
    /// Until the first token of a stream. Default 10 000.
    pub first_token_ms: Option<u64>,
    /// Longest gap between stream events. Default 10 000.
    pub stall_ms: Option<u64>,
    /// One whole attempt. Default 60 000.
    pub attempt_ms: Option<u64>,
}

/// Latency estimation for `least_latency`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    /// Peak-EWMA decay time constant. Default 10 000.
    pub decay_ms: Option<u64>,
    /// Assumed latency of a provider with no samples yet. Default 1 000.
    pub default_ms: Option<u64>,
}

/// An optional spend limit over fixed periods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpendConfig {
    /// USD per period; once spent, only free providers (price 0, e.g. a local model) get traffic.
    pub limit_usd: Option<f64>,
    /// Period length. Default 86 400 000 (a day).
    pub period_ms: Option<u64>,
}

/// A configuration value that is wrong, with where it is and how to fix it: "place, problem,
/// fix", the one error shape of every stilts config (the gateway's file uses it too).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}; {fix}")]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `providers[1].weight`.
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

impl ConfigError {
    /// An error at `path` (dotted, e.g. `routes.chat.deployments[1].weight`), saying what is wrong
    /// and what to do. Every config of stilts (router, gateway file, scenario) reports with it.
    pub fn new(
        path: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ConfigError {
            path: path.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// Validated breaker settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSettings {
    /// 0 disables the consecutive rule.
    pub consecutive_failures: u32,
    /// In (0, 1].
    pub failure_rate: f64,
    /// In (0, 1].
    pub slow_call_rate: f64,
    /// Slow-call threshold.
    pub slow_call: Duration,
    /// Window length.
    pub window: Duration,
    /// Window buckets, 1..=1000.
    pub window_buckets: u32,
    /// At least 1.
    pub minimum_calls: u32,
    /// First open time.
    pub open_base: Duration,
    /// Open time cap, ≥ `open_base`.
    pub open_max: Duration,
    /// ≥ 1.
    pub open_multiplier: f64,
    /// In [0, 1).
    pub open_jitter: f64,
    /// At least 1.
    pub half_open_probes: u32,
}

/// Validated retry settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrySettings {
    /// Backoff base.
    pub backoff_base: Duration,
    /// Backoff cap, ≥ base.
    pub backoff_max: Duration,
    /// Longest Retry-After worth waiting out on a preferred provider.
    pub rate_limit_wait_max: Duration,
    /// Cool-down after a repeated 429 without Retry-After.
    pub rate_limit_cooldown: Duration,
    /// Cool-down after an auth failure.
    pub auth_cooldown: Duration,
    /// Cool-down after a spent quota.
    pub quota_cooldown: Duration,
    /// Fail over after a content-filter refusal.
    pub content_filter_failover: bool,
    /// Quick retries of the preferred provider after a loud error while it mostly answers, ≤ 5.
    pub preferred_retries: u32,
}

/// Validated retry budget.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetSettings {
    /// ≥ 0.
    pub ratio: f64,
    /// ≥ 0.
    pub min_per_second: f64,
    /// 1 s ..= 60 s.
    pub window: Duration,
}

/// Validated per-attempt timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect.
    pub connect: Duration,
    /// Until response headers (for plain requests, see [`Timeouts::for_request`]).
    pub headers: Duration,
    /// Extra headers time per expected output token for plain requests.
    pub plain_headers_per_output_token: Duration,
    /// Until the first stream token.
    pub first_token: Duration,
    /// Longest gap between stream events.
    pub stall: Duration,
    /// One whole attempt.
    pub attempt: Duration,
}

/// Validated provider settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderSettings {
    /// Unique, non-empty.
    pub name: String,
    /// ≥ 1.
    pub weight: u32,
    /// Lower is preferred.
    pub priority: u32,
    /// USD per million input tokens, ≥ 0.
    pub input_usd_per_mtok: f64,
    /// USD per million output tokens, ≥ 0.
    pub output_usd_per_mtok: f64,
    /// Context window, if known.
    pub context_window: Option<u32>,
    /// Local requests-per-minute limit.
    pub requests_per_minute: Option<u32>,
    /// Local tokens-per-minute limit.
    pub tokens_per_minute: Option<u64>,
    /// Supports exact continuation of a partial answer.
    pub prefill_continuation: bool,
    /// Timeouts for attempts on this provider.
    pub timeouts: Timeouts,
}

impl Timeouts {
    /// The timeouts for one request: a stream gets them as configured; a plain request's headers
    /// limit grows by `plain_headers_per_output_token` per expected output token, because a plain
    /// upstream answers (headers included) only once the whole answer is generated. Never above
    /// the attempt limit.
    pub fn for_request(&self, stream: bool, output_tokens: u32) -> Timeouts {
        let mut t = *self;
        if !stream {
            t.headers = t
                .headers
                .saturating_add(
                    t.plain_headers_per_output_token
                        .saturating_mul(output_tokens),
                )
                .min(t.attempt.max(t.headers));
        }
        t
    }
}

impl ProviderSettings {
    /// Estimated cost in USD of `input` and `output` tokens here.
    pub fn cost_usd(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_usd_per_mtok
            + output_tokens as f64 * self.output_usd_per_mtok)
            / 1e6
    }

    /// Whether this provider charges nothing (a local model).
    pub fn is_free(&self) -> bool {
        self.input_usd_per_mtok == 0.0 && self.output_usd_per_mtok == 0.0
    }
}

/// A configuration that passed validation; the only form a [`Router`](crate::Router) accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidConfig {
    /// Policy.
    pub policy: PolicyKind,
    /// 1..=64 providers with unique names.
    pub providers: Vec<ProviderSettings>,
    /// Default request deadline.
    pub deadline: Duration,
    /// ≥ 1.
    pub max_attempts: u32,
    /// Breaker.
    pub breaker: BreakerSettings,
    /// Retries.
    pub retry: RetrySettings,
    /// Budget.
    pub budget: BudgetSettings,
    /// Hedge delay, if hedging is on.
    pub hedge_delay: Option<Duration>,
    /// Hedge half-open probes at once (`hedge.probes`).
    pub hedge_probes: bool,
    /// Peak-EWMA decay.
    pub latency_decay: Duration,
    /// Assumed latency before any sample.
    pub latency_default: Duration,
    /// Spend limit and period.
    pub spend: Option<(f64, Duration)>,
}

impl ValidConfig {
    /// Bounds that keep the router total even if a caller edited a validated config by hand: at
    /// most 64 providers, at least one attempt and one half-open probe.
    pub(crate) fn clamped(mut self) -> Self {
        self.providers.truncate(MAX_PROVIDERS);
        self.max_attempts = self.max_attempts.max(1);
        self.breaker.half_open_probes = self.breaker.half_open_probes.max(1);
        self.breaker.window_buckets = self.breaker.window_buckets.clamp(1, 1000);
        self
    }
}

fn ms(value: Option<u64>, default: u64) -> Duration {
    Duration::from_millis(value.unwrap_or(default))
}

fn positive_ms(path: &str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match value {
        Some(0) => Err(ConfigError::new(
            path,
            "must be greater than 0",
            format!("set a positive number of milliseconds or remove it for the default {default}"),
        )),
        _ => Ok(ms(value, default)),
    }
}

fn ratio(path: &str, value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    let v = value.unwrap_or(default);
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(ConfigError::new(
            path,
            format!("must be in (0, 1], got {v}"),
            format!("use a fraction such as {default}"),
        ))
    }
}

fn non_negative(path: &str, value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    let v = value.unwrap_or(default);
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(ConfigError::new(
            path,
            format!("must be a finite number ≥ 0, got {v}"),
            format!("use a value such as {default}"),
        ))
    }
}

impl TimeoutsConfig {
    fn resolve(&self, defaults: &Timeouts, path: &str) -> Result<Timeouts, ConfigError> {
        let pick = |field: &str, value: Option<u64>, default: Duration| match value {
            Some(0) => Err(ConfigError::new(
                format!("{path}.{field}"),
                "must be greater than 0",
                "set a positive number of milliseconds or remove it for the default",
            )),
            Some(v) => Ok(Duration::from_millis(v)),
            None => Ok(default),
        };
        Ok(Timeouts {
            connect: pick("connect_ms", self.connect_ms, defaults.connect)?,
            headers: pick("headers_ms", self.headers_ms, defaults.headers)?,
            plain_headers_per_output_token: match self.plain_headers_ms_per_output_token {
                Some(v) => Duration::from_millis(v),
                None => defaults.plain_headers_per_output_token,
            },
            first_token: pick("first_token_ms", self.first_token_ms, defaults.first_token)?,
            stall: pick("stall_ms", self.stall_ms, defaults.stall)?,
            attempt: pick("attempt_ms", self.attempt_ms, defaults.attempt)?,
        })
    }
}

/// The built-in timeout defaults.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    headers: Duration::from_secs(10),
    plain_headers_per_output_token: Duration::from_millis(50),
    first_token: Duration::from_secs(10),
    stall: Duration::from_secs(10),
    attempt: Duration::from_secs(60),
};

impl RouterConfig {
    /// Checks every value and resolves defaults.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        if self.providers.is_empty() {
            return Err(ConfigError::new(
                "providers",
                "is empty",
                "list at least one provider",
            ));
        }
        if self.providers.len() > MAX_PROVIDERS {
            return Err(ConfigError::new(
                "providers",
                format!(
                    "has {} entries, more than {MAX_PROVIDERS}",
                    self.providers.len()
                ),
                "split them into several routes",
            ));
        }
        let timeouts = self.timeouts.resolve(&DEFAULT_TIMEOUTS, "timeouts")?;
        let mut providers = Vec::with_capacity(self.providers.len());
        for (i, p) in self.providers.iter().enumerate() {
            providers.push(p.validate(i, &timeouts)?);
            if let Some(j) = self.providers[..i].iter().position(|q| q.name == p.name) {
                return Err(ConfigError::new(
                    format!("providers[{i}].name"),
                    format!("\"{}\" is already the name of providers[{j}]", p.name),
                    "give each provider a unique name",
                ));
            }
        }
        let b = &self.breaker;
        let open_base = positive_ms("breaker.open_base_ms", b.open_base_ms, 5_000)?;
        // The default cap is 10 s, or the base when a config sets a longer base and no cap.
        let open_max = positive_ms(
            "breaker.open_max_ms",
            b.open_max_ms,
            b.open_base_ms.unwrap_or(0).max(10_000),
        )?;
        if open_max < open_base {
            return Err(ConfigError::new(
                "breaker.open_max_ms",
                format!(
                    "{} is below breaker.open_base_ms ({})",
                    open_max.as_millis(),
                    open_base.as_millis()
                ),
                "make the cap at least the base open time",
            ));
        }
        let open_multiplier = b.open_multiplier.unwrap_or(2.0);
        if !(open_multiplier.is_finite() && open_multiplier >= 1.0) {
            return Err(ConfigError::new(
                "breaker.open_multiplier",
                format!("must be ≥ 1, got {open_multiplier}"),
                "use 1 for a fixed open time or 2 to double it on each re-trip",
            ));
        }
        let open_jitter = b.open_jitter.unwrap_or(0.2);
        if !(open_jitter.is_finite() && (0.0..1.0).contains(&open_jitter)) {
            return Err(ConfigError::new(
                "breaker.open_jitter",
                format!("must be in [0, 1), got {open_jitter}"),
                "use a fraction such as 0.2",
            ));
        }
        let window_buckets = b.window_buckets.unwrap_or(10);
        if !(1..=1000).contains(&window_buckets) {
            return Err(ConfigError::new(
                "breaker.window_buckets",
                format!("must be in 1..=1000, got {window_buckets}"),
                "use about 10 buckets",
            ));
        }
        let half_open_probes = b.half_open_probes.unwrap_or(2);
        if half_open_probes == 0 {
            return Err(ConfigError::new(
                "breaker.half_open_probes",
                "must be at least 1",
                "use 1 to 5 probes",
            ));
        }
        let minimum_calls = b.minimum_calls.unwrap_or(20);
        if minimum_calls == 0 {
            return Err(ConfigError::new(
                "breaker.minimum_calls",
                "must be at least 1",
                "use about 20 calls",
            ));
        }
        let breaker = BreakerSettings {
            consecutive_failures: b.consecutive_failures.unwrap_or(5),
            failure_rate: ratio("breaker.failure_rate", b.failure_rate, 0.5)?,
            slow_call_rate: ratio("breaker.slow_call_rate", b.slow_call_rate, 1.0)?,
            slow_call: positive_ms("breaker.slow_call_ms", b.slow_call_ms, 30_000)?,
            window: positive_ms("breaker.window_ms", b.window_ms, 30_000)?,
            window_buckets,
            minimum_calls,
            open_base,
            open_max,
            open_multiplier,
            open_jitter,
            half_open_probes,
        };
        let r = &self.retry;
        let backoff_base = ms(r.backoff_base_ms, 100);
        let backoff_max = ms(r.backoff_max_ms, 2_000);
        if backoff_max < backoff_base {
            return Err(ConfigError::new(
                "retry.backoff_max_ms",
                format!(
                    "{} is below retry.backoff_base_ms ({})",
                    backoff_max.as_millis(),
                    backoff_base.as_millis()
                ),
                "make the cap at least the base",
            ));
        }
        let retry = RetrySettings {
            backoff_base,
            backoff_max,
            rate_limit_wait_max: ms(r.rate_limit_wait_max_ms, 3_000),
            rate_limit_cooldown: positive_ms(
                "retry.rate_limit_cooldown_ms",
                r.rate_limit_cooldown_ms,
                1_000,
            )?,
            auth_cooldown: positive_ms("retry.auth_cooldown_ms", r.auth_cooldown_ms, 300_000)?,
            quota_cooldown: positive_ms("retry.quota_cooldown_ms", r.quota_cooldown_ms, 900_000)?,
            content_filter_failover: r.content_filter_failover.unwrap_or(false),
            preferred_retries: match r.preferred_retries.unwrap_or(1) {
                n @ 0..=5 => n,
                n => {
                    return Err(ConfigError::new(
                        "retry.preferred_retries",
                        format!("must be at most 5, got {n}"),
                        "use 1 (one quick retry before a lower tier) or 0 (fall to it at once)",
                    ));
                }
            },
        };
        let window = ms(self.budget.window_ms, 10_000);
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&window) {
            return Err(ConfigError::new(
                "budget.window_ms",
                format!("must be in 1000..=60000, got {}", window.as_millis()),
                "use 10000 (Finagle's default)",
            ));
        }
        let budget = BudgetSettings {
            ratio: non_negative("budget.ratio", self.budget.ratio, 0.2)?,
            min_per_second: non_negative(
                "budget.min_per_second",
                self.budget.min_per_second,
                10.0,
            )?,
            window,
        };
        let max_attempts = self.max_attempts.unwrap_or(4);
        if max_attempts == 0 {
            return Err(ConfigError::new(
                "max_attempts",
                "must be at least 1",
                "use 1 for no retries, or about 4",
            ));
        }
        let spend = match self.spend.limit_usd {
            None => None,
            Some(limit) => {
                let limit = non_negative("spend.limit_usd", Some(limit), 0.0)?;
                Some((
                    limit,
                    positive_ms("spend.period_ms", self.spend.period_ms, 86_400_000)?,
                ))
            }
        };
        Ok(ValidConfig {
            policy: self.policy,
            providers,
            deadline: positive_ms("deadline_ms", self.deadline_ms, 60_000)?,
            max_attempts,
            breaker,
            retry,
            budget,
            hedge_delay: match self.hedge.delay_ms {
                None => None,
                Some(_) => Some(positive_ms("hedge.delay_ms", self.hedge.delay_ms, 1)?),
            },
            hedge_probes: self.hedge.probes.unwrap_or(true),
            latency_decay: positive_ms("latency.decay_ms", self.latency.decay_ms, 10_000)?,
            latency_default: positive_ms("latency.default_ms", self.latency.default_ms, 1_000)?,
            spend,
        })
    }
}

impl ProviderConfig {
    /// A provider with this name and every other field at its default.
    pub fn named(name: impl Into<String>) -> Self {
        ProviderConfig {
            name: name.into(),
            ..ProviderConfig::default()
        }
    }

    fn validate(&self, index: usize, defaults: &Timeouts) -> Result<ProviderSettings, ConfigError> {
        let path = |field: &str| format!("providers[{index}].{field}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::new(
                path("name"),
                "is empty",
                "give the provider a name such as \"openai-primary\"",
            ));
        }
        let weight = self.weight.unwrap_or(1);
        if weight == 0 {
            return Err(ConfigError::new(
                path("weight"),
                "must be at least 1",
                "remove the provider, or give it a positive weight",
            ));
        }
        if self.context_window == Some(0) {
            return Err(ConfigError::new(
                path("context_window"),
                "must be greater than 0",
                "set the model's context window in tokens, or remove it if unknown",
            ));
        }
        if self.requests_per_minute == Some(0) || self.tokens_per_minute == Some(0) {
            return Err(ConfigError::new(
                path(if self.requests_per_minute == Some(0) {
                    "requests_per_minute"
                } else {
                    "tokens_per_minute"
                }),
                "must be greater than 0",
                "remove the limit to disable it",
            ));
        }
        Ok(ProviderSettings {
            name: self.name.clone(),
            weight,
            priority: self.priority.unwrap_or(0),
            input_usd_per_mtok: non_negative(
                &path("input_usd_per_mtok"),
                self.input_usd_per_mtok,
                0.0,
            )?,
            output_usd_per_mtok: non_negative(
                &path("output_usd_per_mtok"),
                self.output_usd_per_mtok,
                0.0,
            )?,
            context_window: self.context_window,
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            prefill_continuation: self.prefill_continuation.unwrap_or(false),
            timeouts: self.timeouts.resolve(defaults, &path("timeouts"))?,
        })
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_providers() -> RouterConfig {
        RouterConfig {
            providers: vec![ProviderConfig::named("a"), ProviderConfig::named("b")],
            ..RouterConfig::default()
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let v = two_providers().validate().unwrap();
        let secs = Duration::from_secs;
        let millis = Duration::from_millis;
        assert_eq!(v.policy, PolicyKind::Weighted);
        assert_eq!(v.deadline, secs(60));
        assert_eq!(v.max_attempts, 4);
        let b = &v.breaker;
        assert_eq!(b.consecutive_failures, 5);
        assert_eq!(b.failure_rate, 0.5);
        assert_eq!(b.slow_call_rate, 1.0);
        assert_eq!(b.slow_call, secs(30));
        assert_eq!(
            (b.window, b.window_buckets, b.minimum_calls),
            (secs(30), 10, 20)
        );
        assert_eq!((b.open_base, b.open_max), (secs(5), secs(10)));
        assert_eq!((b.open_multiplier, b.open_jitter), (2.0, 0.2));
        assert_eq!(b.half_open_probes, 2);
        let r = &v.retry;
        assert_eq!((r.backoff_base, r.backoff_max), (millis(100), secs(2)));
        assert_eq!(r.rate_limit_wait_max, secs(3));
        assert_eq!(r.rate_limit_cooldown, secs(1));
        assert_eq!((r.auth_cooldown, r.quota_cooldown), (secs(300), secs(900)));
        assert!(!r.content_filter_failover);
        assert_eq!(v.budget.ratio, 0.2);
        assert_eq!(v.budget.min_per_second, 10.0);
        assert_eq!(v.budget.window, secs(10));
        assert_eq!(v.hedge_delay, None);
        assert_eq!((v.latency_decay, v.latency_default), (secs(10), secs(1)));
        assert_eq!(v.spend, None);
        let p = &v.providers[0];
        assert_eq!((p.weight, p.priority), (1, 0));
        assert_eq!((p.input_usd_per_mtok, p.output_usd_per_mtok), (0.0, 0.0));
        assert_eq!(p.context_window, None);
        assert_eq!((p.requests_per_minute, p.tokens_per_minute), (None, None));
        assert!(!p.prefill_continuation);
        assert_eq!(p.timeouts, DEFAULT_TIMEOUTS);
        assert_eq!(
            DEFAULT_TIMEOUTS,
            Timeouts {
                connect: secs(5),
                headers: secs(10),
                plain_headers_per_output_token: millis(50),
                first_token: secs(10),
                stall: secs(10),
                attempt: secs(60),
            }
        );
    }

    #[test]
    fn a_longer_open_base_alone_raises_the_default_cap() {
        let mut c = two_providers();
        c.breaker.open_base_ms = Some(20_000);
        let b = c.validate().unwrap().breaker;
        assert_eq!(
            (b.open_base, b.open_max),
            (Duration::from_secs(20), Duration::from_secs(20))
        );
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        let mut c = two_providers();
        c.providers[1].weight = Some(0);
        let e = c.validate().unwrap_err();
        assert_eq!(e.path, "providers[1].weight");
        assert!(e.to_string().contains("positive weight"), "{e}");

        let mut c = two_providers();
        c.providers[1].name = "a".into();
        assert_eq!(c.validate().unwrap_err().path, "providers[1].name");

        let mut c = two_providers();
        c.breaker.failure_rate = Some(1.5);
        assert_eq!(c.validate().unwrap_err().path, "breaker.failure_rate");

        let mut c = two_providers();
        c.breaker.open_max_ms = Some(1_000);
        assert_eq!(c.validate().unwrap_err().path, "breaker.open_max_ms");

        let mut c = two_providers();
        c.providers[0].timeouts.stall_ms = Some(0);
        assert_eq!(
            c.validate().unwrap_err().path,
            "providers[0].timeouts.stall_ms"
        );

        assert_eq!(
            RouterConfig::default().validate().unwrap_err().path,
            "providers"
        );
    }

    #[test]
    fn plain_requests_get_headers_time_for_their_answer() {
        let t = DEFAULT_TIMEOUTS;
        assert_eq!(t.for_request(true, 1_000), t);
        assert_eq!(t.for_request(false, 0).headers, Duration::from_secs(10));
        assert_eq!(t.for_request(false, 400).headers, Duration::from_secs(30));
        // Capped at the attempt limit.
        assert_eq!(
            t.for_request(false, 100_000).headers,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn provider_timeouts_override_router_defaults() {
        let mut c = two_providers();
        c.timeouts.headers_ms = Some(2_000);
        c.providers[1].timeouts.headers_ms = Some(500);
        let v = c.validate().unwrap();
        assert_eq!(v.providers[0].timeouts.headers, Duration::from_secs(2));
        assert_eq!(v.providers[1].timeouts.headers, Duration::from_millis(500));
    }

    #[test]
    fn parses_from_toml_and_rejects_unknown_fields() {
        let c: RouterConfig = toml::from_str(
            r#"
            policy = "least_latency"
            [[providers]]
            name = "a"
            weight = 3
            [breaker]
            consecutive_failures = 3
            "#,
        )
        .unwrap();
        assert_eq!(c.policy, PolicyKind::LeastLatency);
        assert_eq!(c.providers[0].weight, Some(3));
        let err = toml::from_str::<RouterConfig>("[breaker]\nconsecutive_failure = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("consecutive_failure"), "{err}");
    }
}
