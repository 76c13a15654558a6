//! How often a provider's calls lately ran out of their deadline while on it: the signal that
//! moves traffic to a provider that finishes in time.
//!
//! A call whose deadline ends while its attempt still runs is a failure for its user, but often not
//! the provider's: a client may ask for answers in 4 s that a provider generating 50 tokens a second
//! cannot give, however healthy. The breaker rightly stays out of it (a timeout the client's
//! deadline cut short is neutral there, or a client with a tight deadline could open every breaker
//! for everyone). Yet where another provider of the route finishes more of the same calls in
//! time, sending them to the slow one loses requests a plain weighted random choice would answer.
//! The speed fit (`speed.rs`) catches the route's longest answers missing a deadline; this catches
//! the everyday share: the share of a provider's finished calls that ran out of their deadline
//! there (an exponentially weighted average over the last [`WINDOW`] or so; a call's first attempt
//! only, and not when the call's deadline was shorter than the provider's usual latency, which is
//! the client's choice: `Router::record`), none up to
//! [`SHUN_FROM`], rising to [`SHUN_MAX`] at [`SHUN_FULL`]. What it moves is relative: only toward
//! a provider that misses fewer (`docs/routing.md`, "Spill"), so a deadline nobody meets moves
//! nothing. It starts at zero: a provider is trusted to finish in time until it does not.

/// How many recent finished calls the share mostly reflects (the weight of a new one is
/// `1 / WINDOW`).
const WINDOW: f64 = 64.0;
/// Nothing moves up to this share of calls out of their deadline...
const SHUN_FROM: f64 = 0.02;
/// ...and the most from this one.
const SHUN_FULL: f64 = 0.2;
/// The share of its traffic a provider that misses many deadlines loses at the most: the rest
/// keeps it measured, so the traffic comes back when it finishes in time.
const SHUN_MAX: f64 = 0.9;

/// The recent share of a provider's finished calls that ran out of their deadline on it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DeadlineMisses {
    share: f64,
}

impl DeadlineMisses {
    /// Records a call finished on this provider: `true` if its deadline ended it here, `false` if
    /// the provider answered in time.
    pub(crate) fn observe(&mut self, missed: bool) {
        let sample = if missed { 1.0 } else { 0.0 };
        self.share += (sample - self.share) / WINDOW;
    }

    /// The share of its traffic to send to a provider that misses fewer deadlines.
    pub(crate) fn shun(&self) -> f64 {
        ((self.share - SHUN_FROM) / (SHUN_FULL - SHUN_FROM)).clamp(0.0, 1.0) * SHUN_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(m: &mut DeadlineMisses, calls: usize, missed_every: usize) {
        for k in 0..calls {
            m.observe(missed_every > 0 && k % missed_every == 0);
        }
    }

    #[test]
    fn a_provider_is_trusted_until_it_misses_deadlines() {
        assert_eq!(DeadlineMisses::default().shun(), 0.0);
    }

    #[test]
    fn a_rare_miss_moves_nothing() {
        let mut m = DeadlineMisses::default();
        feed(&mut m, 1_000, 100);
        assert_eq!(m.shun(), 0.0);
    }

    #[test]
    fn the_shun_grows_with_the_misses_and_stops_short_of_all() {
        let mut tenth = DeadlineMisses::default();
        feed(&mut tenth, 1_000, 10);
        let mut half = DeadlineMisses::default();
        feed(&mut half, 1_000, 2);
        assert!(tenth.shun() > 0.2 && tenth.shun() < 0.6, "{}", tenth.shun());
        assert_eq!(half.shun(), SHUN_MAX);
    }

    #[test]
    fn answers_in_time_bring_the_traffic_back() {
        let mut m = DeadlineMisses::default();
        feed(&mut m, 500, 2);
        assert_eq!(m.shun(), SHUN_MAX);
        feed(&mut m, 500, 0);
        assert_eq!(m.shun(), 0.0);
    }
}
