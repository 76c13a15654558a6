//! What one run measures, in memory that grows with the scenario's duration and provider count,
//! never with its number of requests: counters, HDR histograms and fixed time series.

use hdrhistogram::Histogram;
use stilts_core::ErrorClass;

/// Latency histograms record microseconds from 1 µs to one hour with 3 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;

/// Request-level failure reasons, in report order.
pub(crate) const REASONS: [&str; 12] = [
    "deadline",
    "not_retryable",
    "attempts_exhausted",
    "budget_exhausted",
    "all_rate_limited",
    "no_healthy_provider",
    "context_too_long",
    "spend_limit",
    "answered_late",
    "driver_stalled",
    "unanswerable",
    "other",
];

pub(crate) fn reason_index(reason: &str) -> usize {
    REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(REASONS.len() - 1)
}

/// Counters of one provider in one run.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProviderCounters {
    pub attempts: u64,
    pub successes: u64,
    pub cost_usd: f64,
}

/// Everything one run records.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub requests: u64,
    pub answered: u64,
    pub failures: [u64; REASONS.len()],
    pub attempts: u64,
    pub attempt_errors: [u64; 8],
    pub cancelled: u64,
    pub latency_us: Histogram<u64>,
    pub ttft_us: Histogram<u64>,
    pub cost_usd: f64,
    pub cost_floor_usd: f64,
    pub providers: Vec<ProviderCounters>,
    /// Per resolution bucket of arrival time: (requests, answered).
    pub fine: Vec<[u32; 2]>,
    pub resolution_ns: u64,
    /// Attempts per chart bucket and provider, flattened `[bucket * providers + p]`.
    pub chart_attempts: Vec<u32>,
    pub chart_bucket_ns: u64,
    pub chart_points: usize,
    /// Broken internal promises (a request the oracle could not answer was answered, a call with
    /// nothing in flight waiting forever). Always 0 unless there is a bug; tests check it.
    pub invariant_violations: u64,
    pub breaker_trips: Vec<u64>,
    pub hedges: u64,
    /// Requests in flight at most at once (the memory bound).
    pub in_flight_max: u64,
}

fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, HIST_MAX_US, 3) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts.
        Err(_) => unreachable!("constant histogram bounds are valid"),
    }
}

impl Metrics {
    pub(crate) fn new(
        providers: usize,
        duration_ns: u64,
        resolution_ns: u64,
        chart_points: u32,
    ) -> Self {
        let fine_len = (duration_ns / resolution_ns + 1) as usize;
        let chart_points = chart_points as usize;
        let chart_bucket_ns = duration_ns.div_ceil(chart_points as u64).max(1);
        Metrics {
            requests: 0,
            answered: 0,
            failures: [0; REASONS.len()],
            attempts: 0,
            attempt_errors: [0; 8],
            cancelled: 0,
            latency_us: histogram(),
            ttft_us: histogram(),
            cost_usd: 0.0,
            cost_floor_usd: 0.0,
            providers: vec![ProviderCounters::default(); providers],
            fine: vec![[0; 2]; fine_len],
            resolution_ns,
            chart_attempts: vec![0; (chart_points + 1) * providers],
            chart_bucket_ns,
            chart_points,
            invariant_violations: 0,
            breaker_trips: vec![0; providers],
            hedges: 0,
            in_flight_max: 0,
        }
    }

    #[inline]
    fn fine_index(&self, arrival: u64) -> usize {
        ((arrival / self.resolution_ns) as usize).min(self.fine.len() - 1)
    }

    #[inline]
    pub(crate) fn arrived(&mut self, arrival: u64) {
        self.requests += 1;
        let i = self.fine_index(arrival);
        self.fine[i][0] += 1;
    }

    #[inline]
    pub(crate) fn attempt_sent(&mut self, provider: usize, now: u64) {
        self.attempts += 1;
        self.providers[provider].attempts += 1;
        let bucket = ((now / self.chart_bucket_ns) as usize).min(self.chart_points);
        self.chart_attempts[bucket * self.providers.len() + provider] += 1;
    }

    #[inline]
    pub(crate) fn attempt_failed(&mut self, class: ErrorClass) {
        self.attempt_errors[class.index()] += 1;
    }

    #[inline]
    pub(crate) fn attempt_succeeded(&mut self, provider: usize, price_usd: f64) {
        self.providers[provider].successes += 1;
        self.bill(provider, price_usd);
    }

    /// Bills `price_usd` to `provider` (an answer, or the work of an attempt dropped mid-answer).
    #[inline]
    pub(crate) fn bill(&mut self, provider: usize, price_usd: f64) {
        self.providers[provider].cost_usd += price_usd;
        self.cost_usd += price_usd;
    }

    #[inline]
    pub(crate) fn answered(&mut self, arrival: u64, latency_ns: u64, ttft_ns: Option<u64>) {
        self.answered += 1;
        let i = self.fine_index(arrival);
        self.fine[i][1] += 1;
        self.latency_us
            .saturating_record((latency_ns / 1000).max(1));
        if let Some(t) = ttft_ns {
            self.ttft_us.saturating_record((t / 1000).max(1));
        }
    }

    #[inline]
    pub(crate) fn failed(&mut self, reason: &str) {
        self.failures[reason_index(reason)] += 1;
    }
}
