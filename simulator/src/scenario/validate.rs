//! Validation: the raw form checked, value by value, into the [`Scenario`] the engine runs.
//!
//! Every problem is an `Invalid` carrying the field's dotted path (`events[2].fraction`) and a
//! fix; the caller places it in the file. Names are resolved here (an event's providers, the
//! baselines' primary, the runs an expectation names), times become nanoseconds, and parameters an
//! event kind does not use are refused, so that a typo'd scenario never runs silently.

use super::config::validate_config;
use super::error::{Invalid, invalid};
use super::model::{
    BASELINES, Baselines, Capacity, Event, EventKind, EventKindName, Expectation, ProviderModel,
    Rate, ReportSettings, Scenario, Traffic,
};
use super::ranges::{
    DIST_MS, DIST_TOKENS, dist, factor_in_range, fraction, millis, positive, positive_ms, secs,
};
use super::raw::{RawEvent, RawProvider, RawScenario, RawTraffic};
use super::{
    MAX_EVENTS, MAX_RATE_RPS, MAX_WORLD_PROVIDERS, MIN_FLAP_PERIOD_NS, NANOS_PER_MS,
    TOKENS_PER_S_RANGE,
};
use std::path::Path;
use stilts_core::ErrorClass;

pub(super) fn validate(raw: RawScenario, base: &Path) -> Result<Scenario, Invalid> {
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
        for (run, why) in &e.trade_off {
            let at = path(&format!("trade_off.{run}"));
            if !e.beats.contains(run) {
                return Err(invalid(
                    at,
                    format!("explains a comparison with \"{run}\", which `beats` does not name"),
                    "key each trade-off by a run named in `beats`, or remove it",
                ));
            }
            if why.trim().is_empty() {
                return Err(invalid(
                    at,
                    "is empty",
                    "say which trade-off the scenario's user chose, or remove the key",
                ));
            }
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
            trade_off: e.trade_off.clone(),
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
    if p.requests_per_minute == Some(0) {
        return Err(invalid(
            path("requests_per_minute"),
            "must be at least 1",
            "remove it for a provider without a rate limit",
        ));
    }
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
        requests_per_minute: p.requests_per_minute,
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on broken fixtures
mod tests {
    use crate::scenario::Scenario;
    use crate::scenario::test_support::{MINIMAL, err};
    use std::path::Path;

    #[test]
    fn minimal_scenario_loads() {
        let s = Scenario::parse(MINIMAL, Path::new("x.toml")).unwrap();
        assert_eq!(s.providers.len(), 2);
        assert_eq!(s.configs[0].world_index, vec![0, 1]);
        assert_eq!(s.oracle_attempts, 4);
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
