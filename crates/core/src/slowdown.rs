//! How much slower a provider answers now than it usually does: the saturation signal that
//! spills traffic to the next tier (see `docs/routing.md`, "Spill").
//!
//! A provider behind its capacity queues work, and one in a brownout slows down; either way its
//! answers take longer than usual long before it fails, and sending it the whole tier's traffic
//! deepens the queue (a metastable overload) or runs requests into their deadlines. Two trends
//! follow what its users feel, each comparing a recent average with the usual one: streams by
//! their first token, plain answers by their latency per output token (plus [`PLAIN_TOKEN_OFFSET`]
//! for the wait before the first, so short and long answers compare). A timeout counts as its
//! limit, or as the recent average if that is slower. `recent` follows the last half minute (the
//! last 50 or so samples when they come faster), `usual` follows `recent` over two hours, so a
//! slowdown stands out at once and a lasting one is taken for the new normal only slowly (a 2x
//! slowdown stops spilling after about 50 minutes, a 6x one after about two hours). The larger
//! `recent / usual` of the two maps to the share of the tier's traffic to spill.

use crate::time::Instant;
use std::time::Duration;

/// Time constant of the recent average.
const RECENT_TAU_NS: f64 = 30e9;
/// Time constant of the usual average (which follows the recent one). Half an hour was too short:
/// the second half of a 30-minute brownout was taken for normal (`diurnal-day`).
const USUAL_TAU_NS: f64 = 7_200e9;
/// Samples whose mean starts both averages; no spill before.
const WARM_SAMPLES: u32 = 100;
/// No spill below this slowdown...
const SPILL_FROM: f64 = 1.5;
/// ...and the most at this one.
const SPILL_FULL: f64 = 3.0;
/// The share of a tier's traffic that still goes to it at the worst, to keep measuring it.
const SPILL_MAX: f64 = 0.9;

/// Output tokens a plain answer's latency is spread over beyond its own, so a one-token answer is
/// not judged by its wait alone. Small, so short answers (the most sensitive to a queue's wait)
/// weigh most in the average.
const PLAIN_TOKEN_OFFSET: u64 = 16;

/// One provider's slowdown, for streams and for plain answers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Slowdown {
    stream: Trend,
    plain: Trend,
}

impl Slowdown {
    /// A stream's first token came after `first_token` (or its attempt timed out then).
    pub(crate) fn observe_stream(&mut self, now: Instant, first_token: Duration) {
        self.stream.observe(now, first_token.as_nanos() as f64);
    }

    /// A plain answer of `output_tokens` took `latency` (or its attempt, expecting that many,
    /// timed out then).
    pub(crate) fn observe_plain(&mut self, now: Instant, latency: Duration, output_tokens: u64) {
        let per_token =
            latency.as_nanos() as f64 / (output_tokens.saturating_add(PLAIN_TOKEN_OFFSET)) as f64;
        self.plain.observe(now, per_token);
    }

    /// A stream attempt timed out after `latency` waiting for its first token: at least that slow,
    /// so the sample is never below the recent average.
    pub(crate) fn observe_stream_timeout(&mut self, now: Instant, latency: Duration) {
        let sample = (latency.as_nanos() as f64).max(self.stream.recent);
        self.stream.observe(now, sample);
    }

    /// A plain attempt expecting `output_tokens` at most timed out after `latency`: at least as
    /// slow as the recent answers (the expectation is an upper bound, so the quotient alone could
    /// read faster than they are).
    pub(crate) fn observe_plain_timeout(
        &mut self,
        now: Instant,
        latency: Duration,
        output_tokens: u64,
    ) {
        let sample = (latency.as_nanos() as f64
            / output_tokens.saturating_add(PLAIN_TOKEN_OFFSET) as f64)
            .max(self.plain.recent);
        self.plain.observe(now, sample);
    }

    /// The larger `recent / usual` of the two trends (1 for one with too few samples).
    pub(crate) fn ratio(&self) -> f64 {
        self.stream.ratio().max(self.plain.ratio())
    }

    /// The share of its tier's traffic to send to the next tier instead: 0 up to a 1.5x slowdown,
    /// rising to 0.9 at 3x.
    pub(crate) fn spill(&self) -> f64 {
        let ratio = self.ratio();
        ((ratio - SPILL_FROM) / (SPILL_FULL - SPILL_FROM)).clamp(0.0, 1.0) * SPILL_MAX
    }
}

/// A recent and a usual average of one kind of sample.
#[derive(Clone, Copy, Debug, Default)]
struct Trend {
    recent: f64,
    usual: f64,
    samples: u32,
    stamp: Option<Instant>,
}

impl Trend {
    fn observe(&mut self, now: Instant, sample: f64) {
        self.samples = self.samples.saturating_add(1);
        let Some(stamp) = self.stamp else {
            self.recent = sample;
            self.usual = sample;
            self.stamp = Some(now);
            return;
        };
        if self.samples <= WARM_SAMPLES {
            // The first samples, however far apart: both averages are their mean (a single early
            // sample must not stand for the usual).
            self.usual += (sample - self.usual) / f64::from(self.samples);
            self.recent = self.usual;
        } else {
            let dt = now.as_nanos().saturating_sub(stamp.as_nanos()) as f64;
            // The usual average follows the recent one as it was over the elapsed time.
            let w_usual = (-dt / USUAL_TAU_NS).exp();
            self.usual = self.usual * w_usual + self.recent * (1.0 - w_usual);
            // Each sample weighs at least a little even in a burst at one instant.
            let w_recent = (-dt / RECENT_TAU_NS).exp().min(0.98);
            self.recent = self.recent * w_recent + sample * (1.0 - w_recent);
        }
        self.stamp = Some(stamp.max(now));
    }

    /// `recent / usual`, or 1 while too few samples were seen.
    fn ratio(&self) -> f64 {
        if self.samples <= WARM_SAMPLES || self.usual <= 0.0 {
            return 1.0;
        }
        self.recent / self.usual
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut Slowdown, from_s: u64, to_s: u64, every_ms: u64, felt_ms: u64) {
        let mut t = from_s * 1000;
        while t < to_s * 1000 {
            s.observe_stream(Instant::from_millis(t), Duration::from_millis(felt_ms));
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
        assert!(s.stream.samples < WARM_SAMPLES);
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
    fn a_lasting_new_normal_is_accepted_within_hours() {
        let mut s = Slowdown::default();
        feed(&mut s, 0, 600, 100, 2_000);
        feed(&mut s, 600, 2_400, 100, 4_000);
        assert!(
            s.spill() > 0.0,
            "half an hour in, a 2x slowdown still spills"
        );
        feed(&mut s, 2_400, 11_400, 100, 4_000);
        assert_eq!(s.spill(), 0.0, "{}", s.ratio());
    }

    /// Plain answers of every length, at one speed, are one steady trend; the same answers twice
    /// as slow stand out.
    #[test]
    fn plain_answers_compare_across_lengths() {
        let mut s = Slowdown::default();
        let answer =
            |tokens: u64, per_token_ms: u64| Duration::from_millis(450 + tokens * per_token_ms);
        let lengths = [3u64, 40, 150, 700, 1_500];
        for k in 0..6_000u64 {
            let tokens = lengths[(k % 5) as usize];
            s.observe_plain(Instant::from_millis(k * 100), answer(tokens, 11), tokens);
        }
        assert!(s.spill() == 0.0, "{}", s.ratio());
        for k in 6_000..6_600u64 {
            let tokens = lengths[(k % 5) as usize];
            s.observe_plain(Instant::from_millis(k * 100), answer(tokens, 33), tokens);
        }
        // Three times slower per token, the same wait before the first: twice the mean.
        assert!(s.ratio() > 1.9 && s.spill() > 0.2, "{}", s.ratio());
    }
}
