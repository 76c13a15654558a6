//! Routing policies: given the healthy candidates of the best tier, pick one.
//!
//! The router has already removed every provider that must not be used (open breaker, cool-down,
//! local rate limit, context too small, already failed in this call when others remain) and kept
//! only the most preferred priority tier. A policy then only ranks what is left; it is small, has
//! no say over health, and is swappable through the [`Policy`] trait.

use crate::config::{PolicyKind, ProviderSettings};
use crate::ewma::PeakEwma;
use crate::provider::{ProviderId, ProviderSet};
use crate::rng::RouterRng;
use crate::time::Instant;
use std::fmt;

/// Live load of one provider, as the policies see it.
#[derive(Clone, Copy, Debug)]
pub struct ProviderLoad {
    /// Attempts sent and not yet recorded.
    pub in_flight: u32,
    /// Latency estimate (time to first token for streams).
    pub latency: PeakEwma,
}

/// What a policy may look at.
#[derive(Clone, Copy, Debug)]
pub struct PolicyView<'a> {
    /// The current time.
    pub now: Instant,
    /// Every provider's settings, by index.
    pub providers: &'a [ProviderSettings],
    /// Every provider's load, by index.
    pub loads: &'a [ProviderLoad],
    /// Input tokens of the request.
    pub input_tokens: u64,
    /// Expected output tokens of the request: its bound (`max_tokens`, or the drivers' default),
    /// or the mean of the route's recent answers when smaller.
    pub output_tokens: u64,
}

/// A routing policy: picks one of `candidates` (never empty when called).
pub trait Policy: fmt::Debug + Send {
    /// Picks a provider from `candidates`.
    fn pick(
        &mut self,
        candidates: ProviderSet,
        view: &PolicyView<'_>,
        rng: &mut RouterRng,
    ) -> Option<ProviderId>;
}

/// The built-in policy for `kind`, sized for `providers` providers.
pub fn builtin(kind: PolicyKind, providers: usize) -> Box<dyn Policy> {
    match kind {
        PolicyKind::Weighted => Box::new(Weighted),
        PolicyKind::Priority => Box::new(Priority),
        PolicyKind::RoundRobin => Box::new(RoundRobin {
            current: vec![0; providers],
        }),
        PolicyKind::LeastLatency => Box::new(LeastLatency),
        PolicyKind::Cost => Box::new(Cheapest),
    }
}

/// Random by weight.
#[derive(Debug)]
pub struct Weighted;

impl Policy for Weighted {
    fn pick(
        &mut self,
        candidates: ProviderSet,
        view: &PolicyView<'_>,
        rng: &mut RouterRng,
    ) -> Option<ProviderId> {
        if candidates.len() == 1 {
            return candidates.first();
        }
        let total: u64 = candidates
            .iter()
            .map(|p| u64::from(view.providers[p.index()].weight))
            .sum();
        let mut ticket = rng.below(total);
        for p in candidates.iter() {
            let w = u64::from(view.providers[p.index()].weight);
            if ticket < w {
                return Some(p);
            }
            ticket -= w;
        }
        candidates.first()
    }
}

/// The first candidate in configuration order.
#[derive(Debug)]
pub struct Priority;

impl Policy for Priority {
    fn pick(
        &mut self,
        candidates: ProviderSet,
        _: &PolicyView<'_>,
        _: &mut RouterRng,
    ) -> Option<ProviderId> {
        candidates.first()
    }
}

/// Smooth weighted round robin (nginx): each pick adds every candidate's weight to its counter,
/// takes the largest, and subtracts the total from it. Weights 5:1:1 give a,a,b,a,c,a,a rather than
/// a,a,a,a,a,b,c.
#[derive(Debug)]
pub struct RoundRobin {
    current: Vec<i64>,
}

impl Policy for RoundRobin {
    fn pick(
        &mut self,
        candidates: ProviderSet,
        view: &PolicyView<'_>,
        _: &mut RouterRng,
    ) -> Option<ProviderId> {
        if self.current.len() < view.providers.len() {
            self.current.resize(view.providers.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<ProviderId> = None;
        for p in candidates.iter() {
            let w = i64::from(view.providers[p.index()].weight);
            total += w;
            self.current[p.index()] += w;
            if best.is_none_or(|b| self.current[p.index()] > self.current[b.index()]) {
                best = Some(p);
            }
        }
        if let Some(b) = best {
            self.current[b.index()] -= total;
        }
        best
    }
}

/// Power of two choices over peak-EWMA latency × (in-flight + 1), as in Finagle and tower's P2C.
#[derive(Debug)]
pub struct LeastLatency;

impl LeastLatency {
    fn cost(view: &PolicyView<'_>, p: ProviderId) -> f64 {
        let load = &view.loads[p.index()];
        load.latency.estimate_nanos(view.now) * f64::from(load.in_flight + 1)
    }
}

impl Policy for LeastLatency {
    fn pick(
        &mut self,
        candidates: ProviderSet,
        view: &PolicyView<'_>,
        rng: &mut RouterRng,
    ) -> Option<ProviderId> {
        let n = candidates.len() as u64;
        if n <= 1 {
            return candidates.first();
        }
        let i = rng.below(n);
        let mut j = rng.below(n - 1);
        if j >= i {
            j += 1;
        }
        let a = candidates.nth(i as usize)?;
        let b = candidates.nth(j as usize)?;
        Some(if Self::cost(view, b) < Self::cost(view, a) {
            b
        } else {
            a
        })
    }
}

/// The cheapest candidate for this request's tokens; ties go to configuration order.
#[derive(Debug)]
pub struct Cheapest;

impl Policy for Cheapest {
    fn pick(
        &mut self,
        candidates: ProviderSet,
        view: &PolicyView<'_>,
        _: &mut RouterRng,
    ) -> Option<ProviderId> {
        let (input, output) = (view.input_tokens as f64, view.output_tokens as f64);
        let mut best: Option<(f64, ProviderId)> = None;
        for p in candidates.iter() {
            // Compared in USD × 10⁶: the division by a million is the same for every candidate.
            let settings = &view.providers[p.index()];
            let cost = input * settings.input_usd_per_mtok + output * settings.output_usd_per_mtok;
            if best.is_none_or(|(c, _)| cost < c) {
                best = Some((cost, p));
            }
        }
        best.map(|(_, p)| p)
    }
}
