//! How often a provider has lately refused with a 429 (or Anthropic's 529) rather than answered:
//! the signal that tells a brief rate limit, worth waiting out, from a provider that turns most of
//! its traffic away.
//!
//! A 429 cools its provider down and is no breaker failure (the provider is healthy, only busy),
//! and a call whose preferred provider said 429 with a short cool-down may wait it out rather than
//! drop a tier (`docs/routing.md`, "Error classes"). That wait pays off when the provider answers
//! most of its calls; when it refuses most of them (Anthropic's overloaded 529s sent to 70% of
//! attempts for half an hour), the wait only spends the call's time and attempts on another
//! refusal. And a 429 without Retry-After cools its provider down only when it is not isolated:
//! an occasional 429 from a provider that answers nearly every call says nothing about the next
//! call, and a cool-down would send a second's traffic to a lower tier for nothing. The share is
//! an exponentially weighted average over the provider's last [`WINDOW`] or so answers and
//! refusals (other failures say nothing about its quota), and it starts at zero: a provider is
//! trusted to answer until it refuses.

/// How many recent outcomes the share mostly reflects (the weight of a new one is `1 / WINDOW`).
const WINDOW: f64 = 16.0;
/// Above this share, a provider is taken to refuse more calls than it answers.
const MOSTLY: f64 = 0.5;
/// From this share on, its refusals are no longer isolated: from a clean history, a second
/// refusal with at most six answers since the first reaches it (1/16 = 0.0625 for one, 0.12 for
/// two in a row).
const REPEATED: f64 = 0.1;

/// The recent share of refusals among a provider's answers and refusals.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Refusals {
    share: f64,
}

impl Refusals {
    /// Records an outcome: `true` for a refusal (rate limited), `false` for an answer.
    pub(crate) fn observe(&mut self, refused: bool) {
        let sample = if refused { 1.0 } else { 0.0 };
        self.share += (sample - self.share) / WINDOW;
    }

    /// Whether it lately refused more calls than it answered: a wait for it is likely wasted.
    pub(crate) fn mostly_refuses(&self) -> bool {
        self.share > MOSTLY
    }

    /// Whether its refusals are repeated rather than isolated: a 429 without Retry-After then
    /// says "busy for a while" (a cool-down), where an isolated one from a provider that answers
    /// nearly every call says nothing about the next.
    pub(crate) fn repeated(&self) -> bool {
        self.share >= REPEATED
    }

    /// The recent share of refusals, in `[0, 1]`.
    #[cfg(test)]
    fn share(&self) -> f64 {
        self.share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_is_trusted_until_it_refuses() {
        let r = Refusals::default();
        assert!(!r.mostly_refuses());
        assert_eq!(r.share(), 0.0);
    }

    #[test]
    fn an_isolated_429_does_not_make_a_provider_mostly_refusing() {
        let mut r = Refusals::default();
        for _ in 0..50 {
            r.observe(false);
        }
        r.observe(true);
        assert!(!r.mostly_refuses(), "share {}", r.share());
    }

    #[test]
    fn a_second_refusal_in_a_row_is_repeated_an_isolated_one_is_not() {
        let mut r = Refusals::default();
        r.observe(true);
        assert!(!r.repeated(), "share {}", r.share());
        r.observe(true);
        assert!(r.repeated(), "share {}", r.share());
        for _ in 0..40 {
            r.observe(false);
        }
        assert!(!r.repeated(), "share {}", r.share());
    }

    /// The rule `docs/routing.md` states: from a clean history, two refusals with at most six
    /// answers between them are repeated; with seven, the second is isolated again.
    #[test]
    fn two_refusals_are_repeated_with_at_most_six_answers_between() {
        for (between, repeated) in [(6, true), (7, false)] {
            let mut r = Refusals::default();
            r.observe(true);
            for _ in 0..between {
                r.observe(false);
            }
            r.observe(true);
            assert_eq!(
                r.repeated(),
                repeated,
                "{between} answers: share {}",
                r.share()
            );
        }
    }

    #[test]
    fn refusing_seven_calls_in_ten_is_mostly_refusing() {
        let mut r = Refusals::default();
        for i in 0..200 {
            r.observe(i % 10 < 7);
        }
        assert!(r.mostly_refuses(), "share {}", r.share());
    }

    #[test]
    fn a_provider_that_answers_again_is_trusted_again() {
        let mut r = Refusals::default();
        for _ in 0..100 {
            r.observe(true);
        }
        assert!(r.mostly_refuses());
        for _ in 0..12 {
            r.observe(false);
        }
        assert!(!r.mostly_refuses(), "share {}", r.share());
    }
}
