//! How much slower a provider answers now than it usually does: the saturation signal that
//! spills traffic to the next tier (see `docs/routing.md`, "Spill").
//!
//! A provider behind its capacity queues work, and one in a brownout slows down; either way its
//! answers take longer than usual long before it fails, and sending it the whole tier's traffic
//! deepens the queue (a metastable overload) or runs requests into their deadlines. Two
//! time-based averages of the latency its users feel (the first token for streams, the whole
//! answer for plain requests; timeouts count as their limit) tell the two apart from noise:
//! `recent` follows the last half minute, `usual` follows `recent` over half an hour, so a brief
//! slowdown stands out at once and a lasting new normal is accepted within the hour. The ratio
//! `recent / usual` maps to the share of the tier's traffic to spill. A plain answer's sample is
//! its latency less its tokens at the provider's fastest recent rate: the wait before and the
//! slowness during generation, not the answer's length, which varies by request.

use crate::time::Instant;
use std::time::Duration;

/// Time constant of the recent average.
const RECENT_TAU_NS: f64 = 30e9;
/// Time constant of the usual average (which follows the recent one).
const USUAL_TAU_NS: f64 = 1_800e9;
/// Samples before the averages are trusted: no spill before.
const WARM_SAMPLES: u32 = 50;
/// No spill below this slowdown...
const SPILL_FROM: f64 = 1.5;
/// ...and the most at this one.
const SPILL_FULL: f64 = 3.0;
/// The share of a tier's traffic that still goes to it at the worst, to keep measuring it.
const SPILL_MAX: f64 = 0.9;

/// One provider's recent and usual felt latency.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Slowdown {
    recent_ns: f64,
    usual_ns: f64,
    samples: u32,
    first: Option<Instant>,
    stamp: Option<Instant>,
}

impl Slowdown {
    /// Takes in one felt latency (for a plain answer, less its tokens at the fastest rate) at
    /// `now`.
    pub(crate) fn observe(&mut self, now: Instant, felt: Duration) {
        let sample = felt.as_nanos() as f64;
        match self.stamp {
            None => {
                self.recent_ns = sample;
                self.usual_ns = sample;
                self.first = Some(now);
                self.stamp = Some(now);
            }
            Some(stamp) => {
                let dt = now.as_nanos().saturating_sub(stamp.as_nanos()) as f64;
                // The usual average follows the recent one as it was over the elapsed time; while
                // it has seen less than its time constant, over the time it has seen (so it is an
                // average of everything so far, not the first sample slowly forgotten).
                let age = self
                    .first
                    .map_or(0.0, |f| now.as_nanos().saturating_sub(f.as_nanos()) as f64);
                let tau = age.clamp(RECENT_TAU_NS, USUAL_TAU_NS);
                let w_usual = (-dt / tau).exp();
                self.usual_ns = self.usual_ns * w_usual + self.recent_ns * (1.0 - w_usual);
                // Each sample weighs at least a little even in a burst at one instant.
                let w_recent = (-dt / RECENT_TAU_NS).exp().min(0.98);
                self.recent_ns = self.recent_ns * w_recent + sample * (1.0 - w_recent);
                self.stamp = Some(stamp.max(now));
            }
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// `recent / usual`, or 1 while too few answers were seen.
    pub(crate) fn ratio(&self) -> f64 {
        if self.samples < WARM_SAMPLES || self.usual_ns <= 0.0 {
            return 1.0;
        }
        self.recent_ns / self.usual_ns
    }

    /// The share of its tier's traffic to send to the next tier instead: 0 up to a 1.5x slowdown,
    /// rising to 0.9 at 3x.
    pub(crate) fn spill(&self) -> f64 {
        let ratio = self.ratio();
        ((ratio - SPILL_FROM) / (SPILL_FULL - SPILL_FROM)).clamp(0.0, 1.0) * SPILL_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut Slowdown, from_s: u64, to_s: u64, every_ms: u64, felt_ms: u64) {
        let mut t = from_s * 1000;
        while t < to_s * 1000 {
            s.observe(Instant::from_millis(t), Duration::from_millis(felt_ms));
            t += every_ms;
        }
    }

    #[test]
    fn a_steady_provider_spills_nothing() {
        let mut s = Slowdown::default();
        feed(&mut s, 0, 3_600, 100, 2_000);
        assert!((s.ratio() - 1.0).abs() < 1e-6);
        assert_eq!(s.spill(), 0.0);
    }

    #[test]
    fn too_few_samples_spill_nothing() {
        let mut s = Slowdown::default();
        feed(&mut s, 0, 1, 100, 1_000);
        feed(&mut s, 1, 4, 100, 10_000);
        assert!(s.samples < WARM_SAMPLES);
        assert_eq!(s.spill(), 0.0);
    }

    #[test]
    fn a_sixfold_slowdown_spills_within_a_minute_and_stops_after_recovery() {
        let mut s = Slowdown::default();
        feed(&mut s, 0, 600, 100, 2_000);
        feed(&mut s, 600, 660, 100, 12_000);
        assert!(s.spill() >= SPILL_MAX - 1e-9, "{}", s.ratio());
        feed(&mut s, 660, 900, 100, 12_000);
        assert!(
            s.spill() > 0.3,
            "five minutes in, it still spills: {}",
            s.ratio()
        );
        feed(&mut s, 900, 1_020, 100, 2_000);
        assert_eq!(s.spill(), 0.0, "{}", s.ratio());
    }

    #[test]
    fn a_lasting_new_normal_is_accepted_within_the_hour() {
        let mut s = Slowdown::default();
        feed(&mut s, 0, 600, 100, 2_000);
        feed(&mut s, 600, 4_800, 100, 4_000);
        assert_eq!(s.spill(), 0.0, "{}", s.ratio());
    }
}
