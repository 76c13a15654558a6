//! What a replay measured, the simulator's prediction beside it, and the verdict.
//!
//! The prediction of a gated number is the range of the simulator's values over several router
//! seeds in the same world (the world's own seed first): the gateway's router makes the same
//! kinds of random draws, but real time orders events a little differently from the simulator's
//! queue, so its draws fall on other requests; where one draw decides a lot (a breaker probe that
//! meets a rare error keeps a provider out for another open period) only that spread says what the simulator
//! promises. The measurement may lie outside the range by at most the tolerance.
//!
//! Gated, with [`Tolerances`]: availability (percentage points), attempts per request, each
//! provider's share of attempts (percentage points), requests lost (no answer and no error
//! within the deadline plus a margin: none may be), and how late the client sent requests (a
//! machine that cannot keep up with the compressed clock makes every other number meaningless). Shown but not gated: latency and time to
//! first token (timer resolution is a millisecond of wall time, `speed` milliseconds of virtual
//! time), failed attempts by class, why requests failed, and cost.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use stilts_core::ErrorClass;
use stilts_sim::{ConfigUnderTest, RunReport, Scenario};

use crate::client::ClientRun;

/// How far apart prediction and measurement may be.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Tolerances {
    /// Availability, percentage points (default 1).
    pub availability_points: f64,
    /// Attempts per request (default 0.05).
    pub attempts_per_request: f64,
    /// Each provider's share of attempts, percentage points (default 3).
    pub share_points: f64,
    /// How late the 90th percentile of requests may leave the client, virtual ms (default 250):
    /// beyond it the machine did not keep up with the compressed clock and nothing else is
    /// trusted. The 90th, not the 99th: a machine that cannot keep up falls behind for most
    /// requests, while a virtual machine's stalls of tens of milliseconds (seen on a shared
    /// two-core VM even at 15x) delay only the tail, and moved no gated number.
    pub send_lateness_ms_p90: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            availability_points: 1.0,
            attempts_per_request: 0.05,
            share_points: 3.0,
            send_lateness_ms_p90: 250.0,
        }
    }
}

/// One provider as the gateway saw it.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderMeasured {
    /// The scenario provider's name.
    pub name: String,
    /// Attempts the gateway sent it.
    pub attempts: u64,
    /// Its successful attempts.
    pub successes: u64,
    /// Its share of all attempts.
    pub share: f64,
    /// Spend the gateway accounted, USD.
    pub cost_usd: f64,
    /// Times its breaker opened.
    pub breaker_trips: u64,
}

/// What the gateway did with the scenario's traffic.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// Requests sent.
    pub requests: u64,
    /// Complete answers.
    pub answered: u64,
    /// answered / requests.
    pub availability: f64,
    /// Requests with no answer and no error within their deadline plus a margin.
    pub lost: u64,
    /// Why requests failed (the gateway's error code, `stream_error`, `lost`, `transport`).
    pub failures: BTreeMap<String, u64>,
    /// Attempts the gateway sent.
    pub attempts: u64,
    /// attempts / requests.
    pub attempts_per_request: f64,
    /// Failed attempts by class, as the gateway's router counted them.
    pub attempt_errors: BTreeMap<String, u64>,
    /// Latency of answered requests, virtual ms.
    pub latency_ms_p50: Option<f64>,
    /// p99.
    pub latency_ms_p99: Option<f64>,
    /// Time to first bytes of answered streams, virtual ms.
    pub ttft_ms_p50: Option<f64>,
    /// p99.
    pub ttft_ms_p99: Option<f64>,
    /// Per provider, in the config's order.
    pub providers: Vec<ProviderMeasured>,
    /// Spend, USD.
    pub cost_usd: f64,
    /// Spend per 1 000 requests, USD.
    pub cost_per_1k_usd: f64,
    /// The 90th percentile of how late requests left the client, virtual ms.
    pub send_lateness_ms_p90: f64,
}

/// One gated comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What is compared.
    pub metric: String,
    /// The simulator's value with the world's own router seed.
    pub predicted: f64,
    /// The simulator's lowest and highest value over the router seeds.
    pub predicted_range: (f64, f64),
    /// The gateway's value.
    pub measured: f64,
    /// How far the measurement lies outside the predicted range, in the tolerance's unit (0
    /// inside it).
    pub difference: f64,
    /// The largest difference allowed.
    pub tolerance: f64,
    /// difference ≤ tolerance.
    pub passed: bool,
}

/// One config: prediction, measurement, checks.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigReplay {
    /// The config whose prediction is compared.
    pub name: String,
    /// The config the gateway served (the same unless `serve_config` was set).
    pub served: String,
    /// The simulator's run with the world's own router seed.
    pub predicted: RunReport,
    /// Router seeds the predicted ranges were taken over.
    pub router_seeds: usize,
    /// The gateway's run.
    pub measured: Measured,
    /// The gated comparisons.
    pub checks: Vec<Check>,
    /// The machine kept up with the compressed clock (the send-lateness check passed): without
    /// it the other checks say nothing about the router.
    pub comparable: bool,
    /// Every check passed.
    pub passed: bool,
}

/// A whole replay.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    /// Scenario name.
    pub scenario: String,
    /// World seed.
    pub seed: u64,
    /// Time compression.
    pub speed: f64,
    /// Scenario seconds replayed.
    pub duration_s: f64,
    /// Requests per config.
    pub requests: u64,
    /// Per config.
    pub configs: Vec<ConfigReplay>,
    /// Every config agreed.
    pub passed: bool,
    /// The machine kept up with the compressed clock in every config.
    pub comparable: bool,
}

fn percentile(h: &hdrhistogram::Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e3)
}

/// The 90th percentile of how late requests left the client, virtual ms (0 without requests).
fn send_lateness_ms_p90(lateness_ns: &[u64]) -> f64 {
    let mut lateness = lateness_ns.to_vec();
    lateness.sort_unstable();
    lateness
        .get((lateness.len() as f64 * 0.9) as usize)
        .or(lateness.last())
        .map_or(0.0, |ns| *ns as f64 / 1e6)
}

/// Sums up the client's outcomes and the gateway's `/status` view of the route.
pub(crate) fn measure(
    scenario: &Scenario,
    config: &ConfigUnderTest,
    sent: &ClientRun,
    route_status: &serde_json::Value,
) -> Measured {
    let outcomes = &sent.outcomes;
    let send_lateness_ms_p90 = send_lateness_ms_p90(&sent.send_lateness_ns);
    // Microseconds, 3 significant digits, up to a day.
    let new_hist = || hdrhistogram::Histogram::<u64>::new_with_bounds(1, 86_400_000_000, 3).ok();
    let (mut latency, mut ttft) = (new_hist(), new_hist());
    let mut failures = BTreeMap::new();
    let mut answered = 0;
    for o in outcomes {
        if o.answered {
            answered += 1;
            if let Some(h) = latency.as_mut() {
                let _ = h.record((o.latency_ns / 1_000).max(1));
            }
            if let (Some(h), Some(t)) = (ttft.as_mut(), o.ttft_ns) {
                let _ = h.record((t / 1_000).max(1));
            }
        } else if let Some(reason) = &o.reason {
            *failures.entry(reason.clone()).or_insert(0) += 1;
        }
    }
    let requests = outcomes.len() as u64;
    let empty = Vec::new();
    let status = route_status["providers"].as_array().unwrap_or(&empty);
    let mut providers = Vec::new();
    let mut attempt_errors = BTreeMap::new();
    for (i, p) in status.iter().enumerate() {
        let world = config.world_index.get(i).copied().unwrap_or(i);
        providers.push(ProviderMeasured {
            name: scenario.providers.get(world).map_or_else(
                || p["name"].as_str().unwrap_or("").to_owned(),
                |w| w.name.clone(),
            ),
            attempts: p["attempts"].as_u64().unwrap_or(0),
            successes: p["successes"].as_u64().unwrap_or(0),
            share: 0.0,
            cost_usd: p["cost_usd"].as_f64().unwrap_or(0.0),
            breaker_trips: p["breaker_trips"].as_u64().unwrap_or(0),
        });
        for class in ErrorClass::ALL {
            let n = p["failures"][class.as_str()].as_u64().unwrap_or(0)
                + if class == ErrorClass::Timeout {
                    p["cut_by_client_deadline"].as_u64().unwrap_or(0)
                } else {
                    0
                };
            if n > 0 {
                *attempt_errors.entry(class.as_str().to_owned()).or_insert(0) += n;
            }
        }
    }
    let attempts: u64 = providers.iter().map(|p| p.attempts).sum();
    for p in &mut providers {
        p.share = if attempts == 0 {
            0.0
        } else {
            p.attempts as f64 / attempts as f64
        };
    }
    let cost_usd: f64 = providers.iter().map(|p| p.cost_usd).sum();
    let per_request = |x: f64| {
        if requests == 0 {
            0.0
        } else {
            x / requests as f64
        }
    };
    Measured {
        requests,
        answered,
        availability: per_request(answered as f64),
        lost: failures.get("lost").copied().unwrap_or(0),
        failures,
        attempts,
        attempts_per_request: per_request(attempts as f64),
        attempt_errors,
        latency_ms_p50: latency.as_ref().and_then(|h| percentile(h, 0.5)),
        latency_ms_p99: latency.as_ref().and_then(|h| percentile(h, 0.99)),
        ttft_ms_p50: ttft.as_ref().and_then(|h| percentile(h, 0.5)),
        ttft_ms_p99: ttft.as_ref().and_then(|h| percentile(h, 0.99)),
        providers,
        cost_usd,
        cost_per_1k_usd: per_request(cost_usd) * 1000.0,
        send_lateness_ms_p90,
    }
}

/// The availability tolerance in points: the configured one, or one standard error of a
/// proportion over the replay's requests when that is larger. The gateway's requests meet the
/// world's fates in another real-time order than the simulator's, so its availability is a fresh
/// sample of the same world: a replay of 400 requests (a point is 4 of them) cannot promise its
/// availability to within a point, one of 24 000 can.
fn availability_tolerance(predicted: &RunReport, tolerances: &Tolerances) -> f64 {
    let p = predicted.availability.clamp(0.0, 1.0);
    let n = predicted.requests.max(1) as f64;
    let standard_error_points = 100.0 * (p * (1.0 - p) / n).sqrt();
    tolerances.availability_points.max(standard_error_points)
}

/// The gated checks of one config: `predicted` is the simulator's run with the world's own router
/// seed, `others` the same world with other router seeds.
pub(crate) fn compare(
    name: &str,
    served: &str,
    predicted: RunReport,
    others: &[RunReport],
    measured: Measured,
    tolerances: &Tolerances,
) -> ConfigReplay {
    let range = |f: &dyn Fn(&RunReport) -> f64| {
        others
            .iter()
            .map(f)
            .fold((f(&predicted), f(&predicted)), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let mut checks = vec![
        check(
            "send lateness p90 (ms)",
            0.0,
            (0.0, 0.0),
            measured.send_lateness_ms_p90,
            1.0,
            tolerances.send_lateness_ms_p90,
        ),
        check(
            "availability",
            predicted.availability,
            range(&|r| r.availability),
            measured.availability,
            100.0,
            availability_tolerance(&predicted, tolerances),
        ),
        check(
            "attempts per request",
            predicted.amplification,
            range(&|r| r.amplification),
            measured.attempts_per_request,
            1.0,
            tolerances.attempts_per_request,
        ),
    ];
    for p in &predicted.providers {
        let share_of = |r: &RunReport| {
            r.providers
                .iter()
                .find(|x| x.name == p.name)
                .map_or(0.0, |x| x.share)
        };
        let got = measured
            .providers
            .iter()
            .find(|m| m.name == p.name)
            .map_or(0.0, |m| m.share);
        checks.push(check(
            &format!("share {}", p.name),
            p.share,
            range(&share_of),
            got,
            100.0,
            tolerances.share_points,
        ));
    }
    checks.push(check(
        "requests lost",
        0.0,
        (0.0, 0.0),
        measured.lost as f64,
        1.0,
        0.0,
    ));
    ConfigReplay {
        name: name.to_owned(),
        served: served.to_owned(),
        comparable: checks
            .iter()
            .find(|c| c.metric.starts_with("send lateness"))
            .is_some_and(|c| c.passed),
        passed: checks.iter().all(|c| c.passed),
        predicted,
        router_seeds: 1 + others.len(),
        measured,
        checks,
    }
}

/// A check of `measured` against the predicted range, in the tolerance's unit (`scale`).
fn check(
    metric: &str,
    predicted: f64,
    predicted_range: (f64, f64),
    measured: f64,
    scale: f64,
    tolerance: f64,
) -> Check {
    let (lo, hi) = predicted_range;
    let outside = if measured < lo {
        lo - measured
    } else if measured > hi {
        measured - hi
    } else {
        0.0
    };
    let difference = outside * scale;
    Check {
        metric: metric.to_owned(),
        predicted,
        predicted_range,
        measured,
        difference,
        tolerance,
        passed: difference <= tolerance + 1e-9,
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replay of {} (seed {}): {:.0} s of scenario time at {}x, {} requests per config",
            self.scenario, self.seed, self.duration_s, self.speed, self.requests
        )?;
        for c in &self.configs {
            writeln!(f)?;
            if c.served == c.name {
                writeln!(f, "config \"{}\"", c.name)?;
            } else {
                writeln!(
                    f,
                    "config \"{}\" predicted, \"{}\" served (a deliberate mismatch)",
                    c.name, c.served
                )?;
            }
            writeln!(
                f,
                "  {:<26} {:>26} {:>10} {:>10} {:>10}",
                format!("gated ({} router seeds)", c.router_seeds),
                "simulator [range]",
                "gateway",
                "outside",
                "tolerance"
            )?;
            for k in &c.checks {
                let (lo, hi) = k.predicted_range;
                let (p, m, unit) = if k.metric == "availability" || k.metric.starts_with("share ") {
                    (
                        format!(
                            "{:.2} % [{:.2}, {:.2}]",
                            k.predicted * 100.0,
                            lo * 100.0,
                            hi * 100.0
                        ),
                        format!("{:.2} %", k.measured * 100.0),
                        " pt",
                    )
                } else if k.metric == "requests lost" {
                    ("0".to_owned(), format!("{}", k.measured), "")
                } else if k.metric.starts_with("send lateness") {
                    ("-".to_owned(), format!("{:.0}", k.measured), "")
                } else {
                    (
                        format!("{:.3} [{lo:.3}, {hi:.3}]", k.predicted),
                        format!("{:.3}", k.measured),
                        "",
                    )
                };
                writeln!(
                    f,
                    "  {:<26} {:>26} {:>10} {:>7.2}{unit:<3} {:>7}{unit:<3} {}",
                    k.metric,
                    p,
                    m,
                    k.difference,
                    k.tolerance,
                    if k.passed { "ok" } else { "DIFFERS" }
                )?;
            }
            let (p, m) = (&c.predicted, &c.measured);
            writeln!(
                f,
                "  {:<26} {:>12} {:>12}",
                "shown (world's seed)", "simulator", "gateway"
            )?;
            writeln!(
                f,
                "  {:<26} {:>12} {:>12}",
                "latency p50 / p99 (ms)",
                format!("{} / {}", opt(p.latency_ms_p50), opt(p.latency_ms_p99)),
                format!("{} / {}", opt(m.latency_ms_p50), opt(m.latency_ms_p99)),
            )?;
            writeln!(
                f,
                "  {:<26} {:>12} {:>12}",
                "ttft p50 / p99 (ms)",
                format!("{} / {}", opt(p.ttft_ms_p50), opt(p.ttft_ms_p99)),
                format!("{} / {}", opt(m.ttft_ms_p50), opt(m.ttft_ms_p99)),
            )?;
            writeln!(
                f,
                "  {:<26} {:>12.4} {:>12.4}",
                "cost per 1k requests ($)", p.cost_per_1k_usd, m.cost_per_1k_usd
            )?;
            for pp in &p.providers {
                let trips = m
                    .providers
                    .iter()
                    .find(|x| x.name == pp.name)
                    .map_or(0, |x| x.breaker_trips);
                writeln!(
                    f,
                    "  {:<26} {:>12} {:>12}",
                    format!("breaker trips: {}", pp.name),
                    pp.breaker_trips,
                    trips
                )?;
            }
            let classes: std::collections::BTreeSet<&str> = p
                .attempt_errors
                .keys()
                .copied()
                .chain(m.attempt_errors.keys().map(String::as_str))
                .collect();
            for class in classes {
                writeln!(
                    f,
                    "  {:<26} {:>12} {:>12}",
                    format!("failed attempts: {class}"),
                    p.attempt_errors.get(class).copied().unwrap_or(0),
                    m.attempt_errors.get(class).copied().unwrap_or(0),
                )?;
            }
            let predicted_failures: Vec<String> =
                p.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let measured_failures: Vec<String> =
                m.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(
                f,
                "  unanswered, simulator: {}",
                if predicted_failures.is_empty() {
                    "none".to_owned()
                } else {
                    predicted_failures.join(", ")
                }
            )?;
            writeln!(
                f,
                "  unanswered, gateway:   {}",
                if measured_failures.is_empty() {
                    "none".to_owned()
                } else {
                    measured_failures.join(", ")
                }
            )?;
            let overloaded = !c.comparable;
            writeln!(
                f,
                "  verdict: {}",
                if overloaded {
                    "NOT COMPARABLE: this machine did not keep up with the compressed clock (requests left late); lower --speed"
                } else if c.passed {
                    "the gateway did what the simulator predicted"
                } else {
                    "DIFFERENT beyond the tolerances"
                }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine's short stalls delay a few requests: still comparable. One that cannot keep up
    /// sends most of them late: not comparable.
    #[test]
    fn stalls_delay_the_tail_a_machine_that_cannot_keep_up_delays_most() {
        let limit = Tolerances::default().send_lateness_ms_p90;
        // 1 000 requests, 2 ms late as a rule; 5% caught in stalls, 400 ms late.
        let stalled: Vec<u64> = (0..1_000)
            .map(|i| if i % 20 == 0 { 400_000_000 } else { 2_000_000 })
            .collect();
        assert!(send_lateness_ms_p90(&stalled) <= limit);
        // Falling behind: each request 1 ms later than the one before.
        let behind: Vec<u64> = (0..1_000).map(|i| i * 1_000_000).collect();
        assert!(send_lateness_ms_p90(&behind) > limit);
        assert_eq!(send_lateness_ms_p90(&[]), 0.0);
    }
}
