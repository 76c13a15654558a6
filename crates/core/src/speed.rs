//! A provider's generation speed: how long its answers take per output token, measured.
//!
//! A plain (non-stream) upstream sends its headers only with the whole answer, so a plain
//! attempt's headers limit must cover the whole generation. A fixed allowance per token
//! (`plain_headers_ms_per_output_token`, 50 ms) has to fit the slowest model anyone configures, and
//! so on a fast provider it lets a stuck attempt run past the call's deadline. The router learns
//! what a healthy answer of each provider takes instead, from two measures of its successful
//! answers (plain or streamed, send to last byte):
//!
//! * **the fastest time per output token**, over answers of at least [`MIN_ANSWER_TOKENS`] (a
//!   short answer's start-up time would dominate its rate). It drops to a faster answer at once and
//!   rises toward slower ones with a time constant of [`SLOWDOWN_DECAY`] (half an hour), so the
//!   queueing of an overload, which slows every answer for minutes, does not teach the router that
//!   the provider generates slowly (and so lengthen the limit that lets it fail over);
//! * **the longest answer**, in output tokens: a peak that decays over [`LONGEST_DECAY`]
//!   (ten minutes). A plain request rarely says how long its answer will be (without `max_tokens`
//!   the router assumes 512 tokens), so the length that matters is the provider's own.
//!
//! [`Speed::longest_answer`] is the longest answer's length at the fastest rate. Knowledge stops
//! counting when it is old: below [`MIN_TOKENS`] of output tokens decayed over [`LONGEST_DECAY`]
//! there is no estimate, and the configured allowance applies. Knowledge is also young for a
//! while ([`Speed::watched_for`]): in the first seconds of watching a provider, only its short
//! answers can have finished, so the longest one seen says little of how long a healthy answer
//! may take.

use crate::time::Instant;
use std::time::Duration;

/// Time constant with which the fastest rate rises toward slower answers.
pub const SLOWDOWN_DECAY: Duration = Duration::from_secs(1_800);

/// Decay time constant of the longest answer's length and of the evidence behind the estimate.
pub const LONGEST_DECAY: Duration = Duration::from_secs(600);

/// Output tokens (decayed) below which the speed is not known.
pub const MIN_TOKENS: f64 = 256.0;

/// Answers shorter than this do not measure the rate.
pub const MIN_ANSWER_TOKENS: u64 = 32;

/// What the router knows of a provider's answers' speed and length.
#[derive(Clone, Copy, Debug, Default)]
pub struct Speed {
    /// Fastest recent nanoseconds per output token (0 until measured).
    fastest: f64,
    /// Output tokens seen, decayed over [`LONGEST_DECAY`].
    evidence: f64,
    /// Output tokens of the longest recent answer, decayed over [`LONGEST_DECAY`].
    longest: f64,
    stamp: Option<Instant>,
    /// The first answer of the current knowledge (reset when the knowledge lapsed, or when
    /// answers too few to make it known were followed by an idle spell of [`LONGEST_DECAY`]).
    watch_start: Option<Instant>,
    /// The estimate was known since `watch_start`: a later unknown one means it lapsed.
    was_known: bool,
}

impl Speed {
    fn decay_by(&self, now: Instant, tau: Duration) -> f64 {
        let Some(stamp) = self.stamp else {
            return 1.0;
        };
        let dt = now.as_nanos().saturating_sub(stamp.as_nanos()) as f64;
        (-dt / tau.as_nanos() as f64).exp()
    }

    /// Records an answer of `output_tokens` that took `duration`, at `now`.
    pub fn observe(&mut self, now: Instant, duration: Duration, output_tokens: u64) {
        if output_tokens == 0 {
            return;
        }
        let known = self.per_token(now).is_some();
        // Knowledge lapsed (it was known, or a few short answers were followed by a long idle
        // spell): watching starts anew.
        let idle = self
            .stamp
            .is_some_and(|stamp| now.saturating_since(stamp) >= LONGEST_DECAY);
        if self.watch_start.is_none() || (!known && (self.was_known || idle)) {
            self.watch_start = Some(now);
            self.was_known = false;
        }
        let tokens = output_tokens as f64;
        let faded = self.decay_by(now, LONGEST_DECAY);
        self.evidence = self.evidence * faded + tokens;
        self.longest = (self.longest * faded).max(tokens);
        if output_tokens >= MIN_ANSWER_TOKENS {
            let rate = duration.as_nanos() as f64 / tokens;
            if self.fastest == 0.0 || rate < self.fastest {
                self.fastest = rate;
            } else {
                let w = self.decay_by(now, SLOWDOWN_DECAY);
                self.fastest = self.fastest * w + rate * (1.0 - w);
            }
        }
        self.stamp = Some(self.stamp.map_or(now, |s| s.max(now)));
        self.was_known |= self.per_token(now).is_some();
    }

    /// How long the current knowledge has been gathered: since its first answer (zero before
    /// any). Answers longer than this cannot have been seen yet.
    pub fn watched_for(&self, now: Instant) -> Duration {
        self.watch_start
            .map_or(Duration::ZERO, |start| now.saturating_since(start))
    }

    /// The fastest recent time per output token, if enough recent answers measured it.
    pub fn per_token(&self, now: Instant) -> Option<Duration> {
        if self.fastest == 0.0 || self.evidence * self.decay_by(now, LONGEST_DECAY) < MIN_TOKENS {
            return None;
        }
        Some(Duration::from_nanos(self.fastest as u64))
    }

    /// The time of the longest recent answer at the fastest recent rate, when known.
    pub fn longest_answer(&self, now: Instant) -> Option<Duration> {
        let per_token = self.per_token(now)?;
        let longest = self.longest * self.decay_by(now, LONGEST_DECAY);
        Some(per_token.mul_f64(longest.max(1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_until_enough_tokens_then_the_fastest_rate() {
        let mut s = Speed::default();
        let t = Instant::from_secs(10);
        assert_eq!(s.per_token(t), None);
        s.observe(t, Duration::from_millis(2_000), 100);
        assert_eq!(s.per_token(t), None, "100 tokens are not enough");
        // 300 tokens in 4.5 s: 15 ms a token, faster than 20 ms.
        s.observe(t, Duration::from_millis(4_500), 300);
        assert_eq!(s.per_token(t), Some(Duration::from_millis(15)));
        // Short answers count as evidence but not as a rate.
        s.observe(t, Duration::from_millis(10), 10);
        assert_eq!(s.per_token(t), Some(Duration::from_millis(15)));
    }

    #[test]
    fn an_overload_of_minutes_barely_moves_the_rate_and_old_knowledge_expires() {
        let mut s = Speed::default();
        s.observe(Instant::from_secs(0), Duration::from_secs(10), 1_000);
        // Three minutes of answers slowed eight times by queueing.
        for k in 1..=180 {
            s.observe(Instant::from_secs(k), Duration::from_secs(16), 200);
        }
        let rate = s
            .per_token(Instant::from_secs(180))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3);
        assert!(rate > 10.0 && rate < 20.0, "{rate} ms a token");
        assert_eq!(
            s.per_token(Instant::from_secs(180 + 3_600)),
            None,
            "an hour later"
        );
    }

    #[test]
    fn the_longest_answer_is_a_slowly_decaying_peak() {
        let mut s = Speed::default();
        s.observe(Instant::from_secs(0), Duration::from_secs(15), 1_500);
        for k in 1..=100u64 {
            s.observe(Instant::from_secs(k), Duration::from_secs(1), 100);
        }
        // 10 ms a token; the longest answer was 1 500 tokens, 100 s ago.
        let got = s
            .longest_answer(Instant::from_secs(100))
            .map_or(0.0, |d| d.as_secs_f64());
        let want = 0.010 * 1_500.0 * (-100.0f64 / 600.0).exp();
        assert!((got - want).abs() < 0.01, "{got} vs {want}");
    }

    #[test]
    fn watching_starts_with_the_first_answer_and_again_after_knowledge_lapsed() {
        let mut s = Speed::default();
        assert_eq!(s.watched_for(Instant::from_secs(5)), Duration::ZERO);
        s.observe(Instant::from_secs(10), Duration::from_secs(1), 100);
        s.observe(Instant::from_secs(20), Duration::from_secs(3), 300);
        assert_eq!(
            s.watched_for(Instant::from_secs(70)),
            Duration::from_secs(60)
        );
        // Two hours idle: the knowledge lapsed, and the next answer starts it anew.
        let later = Instant::from_secs(20 + 7_200);
        assert_eq!(s.per_token(later), None);
        s.observe(later, Duration::from_secs(3), 300);
        assert_eq!(
            s.watched_for(later + Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        // A few short answers, never enough to know the speed, then hours idle: the same.
        let mut s = Speed::default();
        s.observe(Instant::from_secs(0), Duration::from_secs(1), 50);
        let later = Instant::from_secs(7_200);
        s.observe(later, Duration::from_secs(1), 50);
        assert_eq!(s.watched_for(later), Duration::ZERO);
    }

    #[test]
    fn answers_without_tokens_are_ignored() {
        let mut s = Speed::default();
        s.observe(Instant::from_secs(1), Duration::from_secs(30), 0);
        assert_eq!(s.per_token(Instant::from_secs(1)), None);
        assert_eq!(s.evidence, 0.0);
    }
}
