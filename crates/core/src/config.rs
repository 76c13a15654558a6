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

mod validate;

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
    /// Hedge a probe at once to another provider, so a user whose request probes a provider that
    /// may still be down (a half-open breaker's probe), or that is too slow for the route's long
    /// answers (a pace probe of a tier spilled for the deadline), is answered by the other either
    /// way; the probe runs to its end and its outcome decides the breaker or measures the pace.
    /// Default true.
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
    /// Hedge probes at once, half-open and pace probes (`hedge.probes`).
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

/// The built-in timeout defaults.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    headers: Duration::from_secs(10),
    plain_headers_per_output_token: Duration::from_millis(50),
    first_token: Duration::from_secs(10),
    stall: Duration::from_secs(10),
    attempt: Duration::from_secs(60),
};

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
