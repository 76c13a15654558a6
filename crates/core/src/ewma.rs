//! Peak-EWMA latency: a latency estimate that jumps up at once and decays down slowly.
//!
//! From Finagle's `PeakEwma` (ported in tower's `load::PeakEwma`): when a sample is above the
//! estimate, the estimate becomes the sample (one slow answer is enough to steer traffic away);
//! otherwise it moves toward the sample with weight `1 - exp(-Δt/τ)`. The estimate also decays
//! toward zero while no sample arrives, so a provider that was slow once is tried again.
//! `least_latency` multiplies it by `in_flight + 1` to get a load-aware cost.

use crate::time::Instant;
use std::time::Duration;

/// A peak-sensitive exponentially weighted latency estimate, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct PeakEwma {
    estimate_nanos: f64,
    stamp: Instant,
    tau_nanos: f64,
}

impl PeakEwma {
    /// A new estimate that starts at `initial` and decays with time constant `decay`.
    pub fn new(initial: Duration, decay: Duration) -> Self {
        PeakEwma {
            estimate_nanos: initial.as_nanos() as f64,
            stamp: Instant::ZERO,
            tau_nanos: (decay.as_nanos() as f64).max(1.0),
        }
    }

    fn decay_factor(&self, now: Instant) -> f64 {
        let elapsed = now.as_nanos().saturating_sub(self.stamp.as_nanos()) as f64;
        (-elapsed / self.tau_nanos).exp()
    }

    /// Records a latency sample at `now`.
    pub fn observe(&mut self, now: Instant, sample: Duration) {
        let sample = sample.as_nanos() as f64;
        if sample > self.estimate_nanos {
            self.estimate_nanos = sample;
        } else {
            let w = self.decay_factor(now);
            self.estimate_nanos = self.estimate_nanos * w + sample * (1.0 - w);
        }
        self.stamp = self.stamp.max(now);
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
