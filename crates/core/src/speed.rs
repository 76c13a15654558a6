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
//! [`Speed::longest_answer`] is the longest answer's length at the fastest rate.
//!
//! A third measure answers another question: how long would an answer of a given length take
//! **now**? [`Speed::recent_answer_time`] fits the recent answers with a start-up time plus a time
//! per output token (least squares), so neither a short answer's start-up nor the fastest rate's
//! slow drift skews it. The answers of about the last minute ([`PACE_DECAY`]) count, but at least
//! the last [`PACE_ANSWERS`] however old: a provider that gets only a trickle of calls (because the
//! router keeps traffic away from it) keeps an estimate instead of losing it. The spill uses it to
//! keep the route's longest answers away from a provider where they would miss their deadline
//! (`docs/routing.md`, "Spill"). Knowledge stops
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

/// Time constant with which age fades the answers behind [`Speed::recent_answer_time`].
pub const PACE_DECAY: Duration = Duration::from_secs(60);

/// Answers (weighted) below which [`Speed::recent_answer_time`] is not known.
const PACE_MIN_ANSWERS: f64 = 8.0;

/// The answers [`Speed::recent_answer_time`] reflects at least, however far apart.
const PACE_ANSWERS: f64 = 16.0;

/// The spread of the recent answers' lengths (standard deviation, tokens) below which the time
/// per token cannot be told from the start-up time.
const PACE_MIN_SPREAD: f64 = 32.0;

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
    /// The recent answers' durations against their lengths.
    pace: Pace,
}

/// Decayed sums of recent answers' lengths `x` (tokens) and durations `y` (seconds), for a least
/// squares fit of `y = start + per_token * x`.
#[derive(Clone, Copy, Debug, Default)]
struct Pace {
    n: f64,
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
    stamp: Option<Instant>,
}

impl Pace {
    fn faded(&self, now: Instant) -> f64 {
        self.stamp.map_or(1.0, |stamp| {
            let dt = now.as_nanos().saturating_sub(stamp.as_nanos()) as f64;
            (-dt / PACE_DECAY.as_nanos() as f64).exp()
        })
    }

    fn observe(&mut self, now: Instant, duration: Duration, tokens: f64) {
        // Age fades the older answers, but never below the weight of the last [`PACE_ANSWERS`]
        // less one: a provider that gets a trickle of calls keeps an estimate from its last
        // answers, however old, instead of losing it (and being taken for unknown).
        let floor = if self.n > 0.0 {
            ((PACE_ANSWERS - 1.0) / self.n).min(1.0)
        } else {
            1.0
        };
        let w = self.faded(now).max(floor);
        let y = duration.as_secs_f64();
        self.n = self.n * w + 1.0;
        self.x = self.x * w + tokens;
        self.y = self.y * w + y;
        self.xx = self.xx * w + tokens * tokens;
        self.xy = self.xy * w + tokens * y;
        self.stamp = Some(self.stamp.map_or(now, |s| s.max(now)));
    }

    /// The fitted time of an answer of `tokens`, when enough recent answers of spread lengths
    /// determine it.
    fn time_for(&self, tokens: f64) -> Option<Duration> {
        if self.n < PACE_MIN_ANSWERS {
            return None;
        }
        let (mx, my) = (self.x / self.n, self.y / self.n);
        let spread = self.xx / self.n - mx * mx;
        if spread < PACE_MIN_SPREAD * PACE_MIN_SPREAD {
            return None;
        }
        let per_token = (self.xy / self.n - mx * my) / spread;
        if per_token.is_nan() || per_token <= 0.0 {
            return None;
        }
        let start = (my - per_token * mx).max(0.0);
        Duration::try_from_secs_f64(start + per_token * tokens).ok()
    }
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
        self.pace.observe(now, duration, tokens);
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

    /// Output tokens of the longest recent answer (a peak decaying over [`LONGEST_DECAY`]).
    pub fn longest_tokens(&self, now: Instant) -> f64 {
        self.longest * self.decay_by(now, LONGEST_DECAY)
    }

    /// How long an answer of `output_tokens` takes at the recent pace (start-up included), when
    /// enough recent answers of spread lengths tell.
    pub fn recent_answer_time(&self, output_tokens: f64) -> Option<Duration> {
        self.pace.time_for(output_tokens)
    }

    /// The time of the longest recent answer at the fastest recent rate, when known.
    pub fn longest_answer(&self, now: Instant) -> Option<Duration> {
        let per_token = self.per_token(now)?;
        Some(per_token.mul_f64(self.longest_tokens(now).max(1.0)))
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

    fn answer(tokens: u64, start_ms: u64, per_token_ms: u64) -> Duration {
        Duration::from_millis(start_ms + tokens * per_token_ms)
    }

    #[test]
    fn the_recent_pace_fits_start_up_and_time_per_token() {
        let mut s = Speed::default();
        assert_eq!(s.recent_answer_time(1_000.0), None);
        let lengths = [20u64, 80, 200, 500];
        for k in 0..40u64 {
            let tokens = lengths[(k % 4) as usize];
            s.observe(
                Instant::from_millis(k * 100),
                answer(tokens, 600, 12),
                tokens,
            );
        }
        // 0.6 s + 1 000 x 12 ms, though the fastest rate per token (start-up included) says less
        // of it.
        let got = s
            .recent_answer_time(1_000.0)
            .map_or(0.0, |d| d.as_secs_f64());
        assert!((got - 12.6).abs() < 0.01, "{got}");
    }

    #[test]
    fn answers_of_one_length_do_not_tell_the_pace() {
        let mut s = Speed::default();
        for k in 0..100u64 {
            s.observe(Instant::from_millis(k * 100), answer(200, 600, 12), 200);
        }
        assert_eq!(s.recent_answer_time(1_000.0), None);
    }

    /// A slowdown shows within a minute or two of busy traffic; a provider that then gets only a
    /// trickle keeps its estimate for hours, and a few of the trickle's answers move it.
    #[test]
    fn the_recent_pace_follows_a_slowdown_and_survives_a_trickle() {
        let mut s = Speed::default();
        let lengths = [20u64, 80, 200, 500, 1_000];
        let feed = |s: &mut Speed, from_ms: u64, count: u64, every_ms: u64, per_token: u64| {
            for k in 0..count {
                let tokens = lengths[(k % 5) as usize];
                let at = Instant::from_millis(from_ms + k * every_ms);
                s.observe(at, answer(tokens, 500, per_token), tokens);
            }
        };
        let seconds = |s: &Speed| {
            s.recent_answer_time(1_000.0)
                .map_or(f64::NAN, |d| d.as_secs_f64())
        };
        feed(&mut s, 0, 6_000, 100, 10);
        assert!((seconds(&s) - 10.5).abs() < 0.1, "{}", seconds(&s));
        // 2.5 times slower per token (25.5 s), ten answers a second: two minutes on, most of it.
        feed(&mut s, 600_000, 1_200, 100, 25);
        let slowed = seconds(&s);
        assert!(slowed > 22.0, "{slowed}");
        // Then hours of silence (the estimate has no age limit), and a trickle of answers back at
        // the old pace, one a minute: each counts for a sixteenth, so that forty of them bring the
        // estimate most of the way back.
        feed(&mut s, 7_200_000, 40, 60_000, 10);
        assert!(seconds(&s) < 12.0, "{}", seconds(&s));
    }
}
