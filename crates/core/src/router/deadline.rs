//! Choices that keep a call within its deadline: whether a tier's pace would make the route's
//! long answers miss it (the spill's deadline signal), which peers of a tier miss deadlines more
//! often than the best (`deadline_misses.rs`), and where a failover with only what is left of its
//! call's time can still finish (`docs/routing.md`, "Spill" and "Retries").

use super::{Call, Router};
use crate::provider::{ProviderId, ProviderSet};
use crate::time::Instant;
use std::time::Duration;

impl Router {
    /// Whether the route's longest recent answer, at the recent pace (`speed.rs`), would take
    /// longer than `left` at every provider of `tier` and not at any of `next`, every one of
    /// which is faster at it than every one of `tier`. The router cannot tell which call will be
    /// the long one, so under this the whole tier's traffic is at risk of the deadline; the check
    /// needs every provider of both tiers measured, so an unmeasured fallback is not taken for a
    /// faster one. A slower next tier is never the way out, even where its time fits and the
    /// tier's only misses by its margin: it would put the long answers at more risk, not less.
    pub(super) fn misses_deadline(
        &self,
        tier: ProviderSet,
        next: ProviderSet,
        left: Duration,
        now: Instant,
    ) -> bool {
        let longest = self
            .health
            .iter()
            .map(|h| h.speed.longest_tokens(now))
            .fold(0.0, f64::max);
        if longest < f64::from(DEADLINE_MIN_TOKENS) {
            return false;
        }
        let time = |p: ProviderId| self.health[p.index()].speed.recent_answer_time(longest);
        let slowest = |set: ProviderSet| {
            set.iter()
                .map(time)
                .try_fold(Duration::ZERO, |worst, t| t.map(|t| worst.max(t)))
        };
        let fastest = |set: ProviderSet| {
            set.iter()
                .map(time)
                .try_fold(Duration::MAX, |best, t| t.map(|t| best.min(t)))
        };
        let (Some(tier_fastest), Some(next_slowest)) = (fastest(tier), slowest(next)) else {
            return false;
        };
        !tier.is_empty()
            && !next.is_empty()
            && tier_fastest.mul_f64(DEADLINE_MARGIN) > left
            && next_slowest <= left
            && next_slowest < tier_fastest
    }

    /// Within a tier of several providers, for a share of the calls, the providers whose calls run
    /// out of their deadline more often than the best one's (`deadline_misses.rs`): the share
    /// each loses is how much more it is shunned than the best. One draw decides for all, so a
    /// provider shunned more is left out whenever one shunned less is; the best always stays.
    pub(super) fn shun_deadline_misses(&mut self, tier: ProviderSet) -> ProviderSet {
        let shun = |p: ProviderId| self.health[p.index()].deadline_misses.shun();
        let best = tier.iter().map(shun).fold(f64::INFINITY, f64::min);
        if tier.iter().all(|p| shun(p) <= best) {
            return tier;
        }
        let draw = self.rng.unit();
        tier.iter().filter(|&p| shun(p) - best <= draw).collect()
    }

    /// For a failover or a hedge, which has only what is left of the call's time: the providers
    /// of `tier` whose answer of the route's usual length (`answer_length.rs`), at their recent
    /// pace (`speed.rs`), fits in it, when some do and some do not; when none does, the fastest.
    /// A call's first attempt is left to the policy and the deadline-miss share, which weigh
    /// every answer's own length; a failover sent to a provider it cannot finish on is a request
    /// lost where a peer would have answered it. Only where every provider of the tier is
    /// measured: an unmeasured one is not taken for a slow or a fast one.
    pub(super) fn fit_time_left(
        &self,
        tier: ProviderSet,
        call: &Call,
        now: Instant,
    ) -> ProviderSet {
        if call.attempts == 0 || tier.len() <= 1 {
            return tier;
        }
        let left = call.deadline.saturating_since(now);
        let tokens = self.answer_length.expected(u64::from(call.output_tokens)) as f64;
        let time = |p: ProviderId| self.health[p.index()].speed.recent_answer_time(tokens);
        let mut fastest: Option<(Duration, ProviderId)> = None;
        let mut fits = ProviderSet::default();
        for p in tier.iter() {
            let Some(t) = time(p) else {
                return tier;
            };
            if t <= left {
                fits.insert(p);
            }
            if fastest.is_none_or(|(best, _)| t < best) {
                fastest = Some((t, p));
            }
        }
        if !fits.is_empty() {
            return fits;
        }
        fastest.map_or(tier, |(_, p)| [p].into_iter().collect())
    }
}

/// How much longer than its fitted time an answer may take (the wait for its first token varies
/// most): a tier is at risk of the deadline when its fitted time for the route's longest answer,
/// this much longer, would miss it.
const DEADLINE_MARGIN: f64 = 1.25;

/// Answers shorter than this are not judged against a deadline (a route of short answers that
/// still misses it is a stuck provider, which the breaker and the attempt limits handle).
const DEADLINE_MIN_TOKENS: u32 = 64;
