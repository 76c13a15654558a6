//! The retry budget: retries may add at most a fraction of the request rate, plus a small floor.
//!
//! A fixed "retry 3 times" multiplies load by 4 when a provider is down for everyone, which is how
//! retry storms keep an overloaded provider down after its trigger is gone (a metastable failure).
//! A budget bounds the *total* extra load instead: every request deposits `ratio` of a token, every
//! retry or hedge withdraws one, and deposits expire after `window`. A floor of `min_per_second`
//! retries keeps low-traffic routes able to retry. This is Finagle's `RetryBudget` (also tower's
//! `TpsBudget` and Linkerd's), here on the caller's clock: over any window,
//! `retries ≤ ratio × requests + min_per_second × window`. The router does not charge a failover
//! to a provider with headroom (see `Router::send`): the budget protects struggling providers.

use crate::config::BudgetSettings;
use crate::time::Instant;
use crate::window::SlidingWindow;

const DEPOSITS: usize = 0;
const WITHDRAWALS: usize = 1;

/// A token-bucket retry budget over a sliding window.
#[derive(Clone, Debug)]
pub(crate) struct RetryBudget {
    window: SlidingWindow<2>,
    ratio: f64,
    reserve: f64,
}

impl RetryBudget {
    pub(crate) fn new(settings: &BudgetSettings) -> Self {
        RetryBudget {
            window: SlidingWindow::new(
                u64::try_from(settings.window.as_nanos()).unwrap_or(u64::MAX),
                10,
            ),
            ratio: settings.ratio,
            reserve: settings.min_per_second * settings.window.as_secs_f64(),
        }
    }

    /// A new request arrived.
    pub(crate) fn deposit(&mut self, now: Instant) {
        self.window.add(now, [1, 0]);
    }

    /// Retries still available now.
    pub(crate) fn available(&mut self, now: Instant) -> f64 {
        let totals = self.window.totals(now);
        self.reserve + self.ratio * totals[DEPOSITS] as f64 - totals[WITHDRAWALS] as f64
    }

    /// Takes one retry from the budget, if one is left.
    pub(crate) fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.available(now) >= 1.0 {
            self.window.add(now, [0, 1]);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_are_bounded_by_ratio_plus_floor() {
        let mut b = RetryBudget::new(&BudgetSettings {
            ratio: 0.2,
            min_per_second: 1.0,
            window: Duration::from_secs(10),
        });
        let now = Instant::from_secs(1);
        for _ in 0..100 {
            b.deposit(now);
        }
        let mut granted = 0;
        while b.try_withdraw(now) {
            granted += 1;
        }
        // 0.2 × 100 + 1/s × 10 s.
        assert_eq!(granted, 30);
        // Deposits and withdrawals expire together: the floor comes back after the window.
        let later = now + Duration::from_secs(11);
        assert_eq!(b.available(later), 10.0);
    }

    #[test]
    fn zero_budget_never_retries() {
        let mut b = RetryBudget::new(&BudgetSettings {
            ratio: 0.0,
            min_per_second: 0.0,
            window: Duration::from_secs(10),
        });
        b.deposit(Instant::ZERO);
        assert!(!b.try_withdraw(Instant::ZERO));
    }
}
