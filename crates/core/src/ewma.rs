//! Peak-EWMA latency: a latency estimate that jumps up at once and decays down slowly.
//!
//! From Finagle's `PeakEwma` (ported in tower's `load::PeakEwma`): when a sample is above the
//! estimate, the estimate becomes the sample (one slow answer is enough to steer traffic away);
//! otherwise it moves toward the sample with weight `1 - exp(-Δt/τ)`. The estimate also decays
//! toward zero while no sample arrives, so a provider that was slow once is tried again. Before
//! its first sample a provider counts as the configured default, without decay.
//! `least_latency` multiplies it by `in_flight + 1` to get a load-aware cost.

use crate::time::Instant;
use std::time::Duration;

/// A peak-sensitive exponentially weighted latency estimate, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct PeakEwma {
    estimate_nanos: f64,
    /// When the last sample arrived; `None` until the first.
    stamp: Option<Instant>,
    tau_nanos: f64,
}

impl PeakEwma {
    /// A new estimate that starts at `initial` and decays with time constant `decay`.
    pub fn new(initial: Duration, decay: Duration) -> Self {
        PeakEwma {
            estimate_nanos: initial.as_nanos() as f64,
            stamp: None,
            tau_nanos: (decay.as_nanos() as f64).max(1.0),
        }
    }

    /// The same estimate with another decay time constant.
    pub fn with_decay(mut self, decay: Duration) -> Self {
        self.tau_nanos = (decay.as_nanos() as f64).max(1.0);
        self
    }

    fn decay_factor(&self, now: Instant) -> f64 {
        let Some(stamp) = self.stamp else {
            return 1.0;
        };
        let x = now.as_nanos().saturating_sub(stamp.as_nanos()) as f64 / self.tau_nanos;
        // exp(-x) ≈ 1 - x + x²/2 within 2e-7 for the small steps between samples on a busy route.
        if x < 0.01 {
            1.0 - x + 0.5 * x * x
        } else {
            (-x).exp()
        }
    }

    /// Records a latency sample at `now`.
    pub fn observe(&mut self, now: Instant, sample: Duration) {
        let sample = sample.as_nanos() as f64;
        if self.stamp.is_none() || sample > self.estimate_nanos {
            self.estimate_nanos = sample;
        } else {
            let w = self.decay_factor(now);
            self.estimate_nanos = self.estimate_nanos * w + sample * (1.0 - w);
        }
        self.stamp = Some(self.stamp.map_or(now, |s| s.max(now)));
    }

    /// The estimate at `now`, decayed since the last sample.
    pub fn estimate_nanos(&self, now: Instant) -> f64 {
        self.estimate_nanos * self.decay_factor(now)
    }

    /// The estimate as a duration.
    pub fn estimate(&self, now: Instant) -> Duration {
        Duration::from_nanos(self.estimate_nanos(now) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmeasured_provider_counts_as_the_default() {
        let e = PeakEwma::new(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(
            e.estimate(Instant::from_secs(3_600)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn the_small_step_approximation_matches_exp() {
        let mut e = PeakEwma::new(Duration::from_secs(1), Duration::from_secs(10));
        e.observe(Instant::from_secs(1), Duration::from_secs(1));
        for ms in [1u64, 50, 99, 101, 500] {
            let got = e.estimate_nanos(Instant::from_secs(1) + Duration::from_millis(ms));
            let want = 1e9 * (-(ms as f64) / 10_000.0).exp();
            assert!((got - want).abs() / want < 1e-6, "{ms} ms: {got} vs {want}");
        }
    }

    #[test]
    fn jumps_to_peaks_and_decays_slowly() {
        let mut e = PeakEwma::new(Duration::from_millis(100), Duration::from_secs(10));
        e.observe(Instant::from_secs(1), Duration::from_secs(2));
        assert_eq!(e.estimate(Instant::from_secs(1)), Duration::from_secs(2));
        e.observe(Instant::from_secs(2), Duration::from_millis(100));
        let after_one_fast = e.estimate(Instant::from_secs(2)).as_secs_f64();
        assert!(
            after_one_fast > 1.5 && after_one_fast < 2.0,
            "{after_one_fast}"
        );
        // Without samples, the estimate fades.
        assert!(e.estimate(Instant::from_secs(60)) < Duration::from_millis(20));
    }
}
