//! Validation: every value of a [`RouterConfig`] checked and its defaults resolved into a
//! [`ValidConfig`], or a [`ConfigError`] that names the field and the fix.

use super::*;

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
