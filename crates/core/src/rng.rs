//! The router's seeded randomness: a ChaCha8 stream and the two draws the core needs.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// A seeded random stream. The same seed gives the same draws on every platform.
#[derive(Clone, Debug)]
pub struct RouterRng(ChaCha8Rng);

impl RouterRng {
    /// A stream from a 64-bit seed.
    pub fn seed_from_u64(seed: u64) -> Self {
        RouterRng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// Wraps a caller-made ChaCha8 generator.
    pub fn from_chacha(rng: ChaCha8Rng) -> Self {
        RouterRng(rng)
    }

    /// Uniform in [0, 1), with 53 bits of precision.
    pub fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n), for n ≥ 1 (Lemire's multiply-shift; the bias is below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.0.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = RouterRng::seed_from_u64(7);
        let mut b = RouterRng::seed_from_u64(7);
        for _ in 0..100 {
            assert_eq!(a.below(10), b.below(10));
            assert_eq!(a.unit().to_bits(), b.unit().to_bits());
        }
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = RouterRng::seed_from_u64(1);
        for n in 1..200 {
            assert!(r.below(n) < n);
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
