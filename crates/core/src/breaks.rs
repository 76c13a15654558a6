//! How often a provider's streams lately broke after their first bytes reached the client: the
//! signal that moves stream traffic off a tier that interrupts its answers.
//!
//! A failure before a stream's first byte is unseen by the user: the call fails over. After it, the
//! user saw an answer stop mid-way: the call continues exactly on a provider that can
//! (`prefill_continuation`), after the stall limit if the stream went silent, or ends with an
//! in-band error. The breaker does not tell the two apart, and rightly stays closed on a provider
//! that answers most of its calls; but a tier that breaks one stream in five (cut connections,
//! stalls) makes every fifth user of it wait out a stall and read an answer another model
//! finished. The share of broken streams among the provider's streams that reached the client (an
//! exponentially weighted average over the last [`WINDOW`] or so) spills stream traffic to the next
//! tier, as a slowdown does (`slowdown.rs`, `docs/routing.md`, "Spill"): none up to
//! [`SPILL_FROM`], rising to [`SPILL_MAX`] at [`SPILL_FULL`]. It starts at zero: a provider is
//! trusted to finish its streams until it breaks them.

/// How many recent streams the share mostly reflects (the weight of a new one is `1 / WINDOW`).
const WINDOW: f64 = 32.0;
/// No spill up to this share of broken streams (an occasional cut connection)...
const SPILL_FROM: f64 = 0.05;
/// ...and the most from this one.
const SPILL_FULL: f64 = 0.25;
/// The share of a tier's stream traffic that still goes to it at the worst, to keep measuring it.
const SPILL_MAX: f64 = 0.9;

/// The recent share of a provider's streams that broke after their first bytes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StreamBreaks {
    share: f64,
}

impl StreamBreaks {
    /// Records a stream that reached the client: `true` if it broke, `false` if it finished.
    pub(crate) fn observe(&mut self, broke: bool) {
        let sample = if broke { 1.0 } else { 0.0 };
        self.share += (sample - self.share) / WINDOW;
    }

    /// The share of its tier's stream traffic to send to the next tier instead.
    pub(crate) fn spill(&self) -> f64 {
        ((self.share - SPILL_FROM) / (SPILL_FULL - SPILL_FROM)).clamp(0.0, 1.0) * SPILL_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(b: &mut StreamBreaks, streams: usize, broken_every: usize) {
        for k in 0..streams {
            b.observe(broken_every > 0 && k % broken_every == 0);
        }
    }

    #[test]
    fn a_provider_is_trusted_until_it_breaks_streams() {
        assert_eq!(StreamBreaks::default().spill(), 0.0);
    }

    #[test]
    fn an_occasional_cut_spills_nothing() {
        let mut b = StreamBreaks::default();
        // One stream in 25 broken (4%), for a long while.
        feed(&mut b, 2_500, 25);
        assert_eq!(b.spill(), 0.0, "{}", b.share);
    }

    #[test]
    fn a_third_of_streams_broken_spills_nearly_all_and_recovery_takes_it_back() {
        let mut b = StreamBreaks::default();
        feed(&mut b, 200, 3);
        assert!(b.spill() >= SPILL_MAX - 1e-9, "{}", b.share);
        // A hundred clean streams later (what the tenth that still goes there brings in a
        // while), the spill is over.
        feed(&mut b, 100, 0);
        assert_eq!(b.spill(), 0.0, "{}", b.share);
    }
}
