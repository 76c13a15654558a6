//! How long a route's answers are: what the `cost` policy prices a request's output at.
//!
//! A request rarely says how long its answer will be: its `max_tokens` is a bound, and without one
//! the drivers assume 512 tokens. Priced at that bound, a provider that is cheap per input token
//! and dear per output token looks dearer than it is for the usual short answer (gpt-4o-mini at
//! $0.15/$0.60 per million tokens against deepseek-chat at $0.28/$0.42: at 512 output tokens
//! deepseek is the cheaper for a prompt under about 700 tokens; at the 150 tokens a chat answer
//! usually has, only under about 210). Expected cost is linear in the output
//! tokens, so the right price is at their mean: the router keeps the mean output tokens of the
//! route's recent answers (an exponentially weighted average over the last [`WINDOW`] or so,
//! started as the mean of the first ones) and prices a request at that mean, or at its own
//! bound when smaller. Before [`WARM_ANSWERS`] answers, the bound alone.

/// How many recent answers the mean mostly reflects (the weight of a new one is `1 / WINDOW`).
const WINDOW: f64 = 256.0;
/// Answers before the mean is used.
const WARM_ANSWERS: u32 = 32;

/// The mean output tokens of a route's recent answers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AnswerLength {
    mean: f64,
    answers: u32,
}

impl AnswerLength {
    /// Records an answer of `output_tokens` (one with none, e.g. a stream whose usage is unknown,
    /// says nothing).
    pub(crate) fn observe(&mut self, output_tokens: u64) {
        if output_tokens == 0 {
            return;
        }
        self.answers = self.answers.saturating_add(1);
        let weight = (1.0 / f64::from(self.answers)).max(1.0 / WINDOW);
        self.mean += (output_tokens as f64 - self.mean) * weight;
    }

    /// The output tokens to price a request bounded by `bound` at.
    pub(crate) fn expected(&self, bound: u64) -> u64 {
        if self.answers < WARM_ANSWERS {
            return bound;
        }
        bound.min(self.mean.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_until_enough_answers_then_the_mean_when_smaller() {
        let mut a = AnswerLength::default();
        for _ in 0..WARM_ANSWERS - 1 {
            a.observe(150);
        }
        assert_eq!(a.expected(512), 512);
        a.observe(150);
        assert_eq!(a.expected(512), 150);
        assert_eq!(a.expected(100), 100, "a smaller bound stays");
    }

    #[test]
    fn the_mean_follows_a_change_within_a_few_hundred_answers() {
        let mut a = AnswerLength::default();
        for _ in 0..1_000 {
            a.observe(100);
        }
        for _ in 0..600 {
            a.observe(400);
        }
        let now = a.expected(10_000);
        assert!((360..=400).contains(&now), "{now}");
    }

    #[test]
    fn answers_without_usage_are_ignored() {
        let mut a = AnswerLength::default();
        for _ in 0..100 {
            a.observe(0);
        }
        assert_eq!(a.expected(512), 512);
    }
}
