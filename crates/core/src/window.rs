//! A sliding time window of counters: a bounded ring of buckets with subtract-on-evict totals.
//!
//! This is resilience4j's `SlidingTimeWindowMetrics` shape: the window is split into `N` buckets
//! of equal width; recording adds to the head bucket and to a running total; when time moves past
//! a bucket, its counts are subtracted from the total and it is reused. Recording and reading are
//! O(1) amortised (at most `N` buckets are cleared per call), and memory is fixed at construction.

use crate::time::Instant;

/// `K` counters summed over the last `window` of time.
#[derive(Clone, Debug)]
pub(crate) struct SlidingWindow<const K: usize> {
    buckets: Box<[[u64; K]]>,
    total: [u64; K],
    bucket_nanos: u64,
    /// The epoch (`now / bucket_nanos`) of the newest bucket.
    head_epoch: u64,
    /// Where the newest bucket ends, so that most calls skip the division.
    head_end_nanos: u64,
    /// `head_epoch % buckets.len()`.
    head_index: usize,
}

impl<const K: usize> SlidingWindow<K> {
    /// A window of `window_nanos` split into `buckets` buckets (both at least 1).
    pub(crate) fn new(window_nanos: u64, buckets: u32) -> Self {
        let buckets = buckets.max(1) as usize;
        let bucket_nanos = (window_nanos / buckets as u64).max(1);
        SlidingWindow {
            buckets: vec![[0; K]; buckets].into_boxed_slice(),
            total: [0; K],
            bucket_nanos,
            head_epoch: 0,
            head_end_nanos: bucket_nanos,
            head_index: 0,
        }
    }

    /// The span of time the window covers.
    pub(crate) fn span_nanos(&self) -> u64 {
        self.bucket_nanos.saturating_mul(self.buckets.len() as u64)
    }

    fn advance(&mut self, now: Instant) {
        if now.as_nanos() < self.head_end_nanos {
            return;
        }
        let epoch = now.as_nanos() / self.bucket_nanos;
        self.head_end_nanos = epoch.saturating_add(1).saturating_mul(self.bucket_nanos);
        let len = self.buckets.len() as u64;
        if epoch - self.head_epoch >= len {
            self.buckets.iter_mut().for_each(|b| *b = [0; K]);
            self.total = [0; K];
        } else {
            for e in self.head_epoch + 1..=epoch {
                let bucket = &mut self.buckets[(e % len) as usize];
                for (t, b) in self.total.iter_mut().zip(bucket.iter()) {
                    *t -= *b;
                }
                *bucket = [0; K];
            }
        }
        self.head_epoch = epoch;
        self.head_index = (epoch % len) as usize;
    }

    /// Adds `amounts` to the counters at `now` and returns the new totals.
    pub(crate) fn add(&mut self, now: Instant, amounts: [u64; K]) -> [u64; K] {
        self.advance(now);
        let bucket = &mut self.buckets[self.head_index];
        for i in 0..K {
            bucket[i] = bucket[i].saturating_add(amounts[i]);
            self.total[i] = self.total[i].saturating_add(amounts[i]);
        }
        self.total
    }

    /// The counters summed over the window ending at `now`.
    pub(crate) fn totals(&mut self, now: Instant) -> [u64; K] {
        self.advance(now);
        self.total
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = [0; K]);
        self.total = [0; K];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_expire_after_the_window() {
        let mut w = SlidingWindow::<2>::new(10_000, 10);
        w.add(Instant::from_nanos(0), [1, 2]);
        w.add(Instant::from_nanos(5_500), [1, 0]);
        assert_eq!(w.totals(Instant::from_nanos(9_999)), [2, 2]);
        // The first bucket (0..1000) leaves the window at 10_000.
        assert_eq!(w.totals(Instant::from_nanos(10_000)), [1, 0]);
        assert_eq!(w.totals(Instant::from_nanos(15_999)), [0, 0]);
    }

    #[test]
    fn a_long_gap_clears_everything() {
        let mut w = SlidingWindow::<1>::new(1_000, 4);
        w.add(Instant::from_nanos(10), [7]);
        w.add(Instant::from_nanos(1_000_000), [1]);
        assert_eq!(w.totals(Instant::from_nanos(1_000_000)), [1]);
    }

    #[test]
    fn clear_forgets() {
        let mut w = SlidingWindow::<1>::new(1_000, 4);
        w.add(Instant::from_nanos(10), [7]);
        w.clear();
        assert_eq!(w.totals(Instant::from_nanos(20)), [0]);
    }
}
