//! Common random numbers: every random outcome is a pure function of what it is about.
//!
//! The simulator never keeps a random *stream* for the world. Each draw is a hash of
//! (seed, request, provider, attempt on that provider, purpose) put through SplitMix64's
//! finaliser, so the 3rd attempt of request 1 234 on provider `b` sees the same coin flips whichever
//! router sent it and whatever happened before. Two policies compared on one seed therefore meet the
//! same world, and their difference is the policy's, not noise. Adding a provider or an event does
//! not reshuffle the draws of the others (each has its own key).

/// SplitMix64's output function: a bijective 64-bit mixer with good avalanche.
#[inline]
pub(crate) const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a draw is for; each purpose gets independent values for the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Purpose {
    ArrivalGap = 1,
    ArrivalKeep = 2,
    InputTokens = 3,
    OutputTokens = 4,
    Stream = 5,
    BaseError = 6,
    Ttft = 7,
    ErrorLatency = 8,
    Mishap = 9,
    BaselinePick = 10,
    BaselineSleep = 11,
    /// Event `i` uses `Event + i`.
    Event = 1_000,
}

impl Purpose {
    /// The tag of the `n`-th draw for this purpose from one key: the purpose in the high 32 bits,
    /// `n` in the low ones, so no two (purpose, n) pairs share a stream, nor do they meet the
    /// small tags (`purpose + n`) of the other draws. `purpose + n` alone is not enough:
    /// `BaselinePick + 2 == BaselineSleep + 1`.
    pub(crate) const fn nth(self, n: u32) -> u64 {
        (self as u64) << 32 | n as u64
    }
}

/// A key naming one random situation; draws for different purposes derive from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key(u64);

impl Key {
    /// The root key of a seed.
    pub(crate) const fn root(seed: u64) -> Key {
        Key(mix(seed ^ 0x5354_494C_5453_494D))
    }

    /// The key of request (or arrival candidate) `index`.
    #[inline]
    pub(crate) const fn request(self, index: u64) -> Key {
        Key(mix(self.0 ^ mix(index)))
    }

    /// The key of attempt `k` (1-based, counted per provider) on world provider `provider`.
    #[inline]
    pub(crate) const fn attempt(self, provider: usize, k: u32) -> Key {
        Key(mix(
            self.0 ^ ((provider as u64) << 40 | (k as u64) << 8 | 0xA5)
        ))
    }

    /// A raw 64-bit draw.
    #[inline]
    pub(crate) const fn bits(self, purpose: u64) -> u64 {
        mix(self.0 ^ purpose.wrapping_mul(0xD6E8_FEB8_6659_FD93))
    }

    /// Uniform in [0, 1) with 53 bits.
    #[inline]
    pub(crate) fn unit(self, purpose: Purpose) -> f64 {
        self.unit_n(purpose as u64)
    }

    /// Uniform in [0, 1) for a numbered purpose (events).
    #[inline]
    pub(crate) fn unit_n(self, purpose: u64) -> f64 {
        (self.bits(purpose) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe to take the logarithm of.
    #[inline]
    pub(crate) fn open_unit(self, purpose: u64) -> f64 {
        ((self.bits(purpose) >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal draw (Box–Muller from two independent uniforms).
    #[inline]
    pub(crate) fn normal(self, purpose: Purpose) -> f64 {
        let p = purpose as u64;
        let u1 = self.open_unit(p);
        let u2 = self.unit_n(p ^ 0x8000_0000);
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A log-normal distribution given by its median and 99th percentile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LogNormal {
    mu: f64,
    sigma: f64,
}

/// The 99th percentile of the standard normal distribution.
const Z99: f64 = 2.326_347_874_040_841;

impl LogNormal {
    /// From `p50 > 0` and `p99 >= p50` (checked by scenario validation).
    pub(crate) fn from_p50_p99(p50: f64, p99: f64) -> Self {
        LogNormal {
            mu: p50.ln(),
            sigma: ((p99 / p50).ln() / Z99).max(0.0),
        }
    }

    /// The value at standard normal deviate `z`.
    #[inline]
    pub(crate) fn at(self, z: f64) -> f64 {
        (self.mu + self.sigma * z).exp()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on broken fixtures
mod tests {
    use super::*;

    #[test]
    fn draws_are_pure_functions_of_their_key() {
        let k = Key::root(7).request(12).attempt(1, 2);
        assert_eq!(
            k.unit(Purpose::BaseError).to_bits(),
            Key::root(7)
                .request(12)
                .attempt(1, 2)
                .unit(Purpose::BaseError)
                .to_bits()
        );
        assert_ne!(k.unit(Purpose::BaseError), k.unit(Purpose::Ttft));
        assert_ne!(
            k.unit(Purpose::BaseError),
            Key::root(7)
                .request(12)
                .attempt(1, 3)
                .unit(Purpose::BaseError)
        );
        assert_ne!(
            k.unit(Purpose::BaseError),
            Key::root(8)
                .request(12)
                .attempt(1, 2)
                .unit(Purpose::BaseError)
        );
    }

    #[test]
    fn uniform_and_lognormal_have_the_right_shape() {
        let root = Key::root(1);
        let n = 200_000;
        let mut mean = 0.0;
        let ln = LogNormal::from_p50_p99(1000.0, 5000.0);
        let mut values: Vec<f64> = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let k = root.request(i);
            let u = k.unit(Purpose::Stream);
            assert!((0.0..1.0).contains(&u));
            mean += u;
            values.push(ln.at(k.normal(Purpose::Ttft)));
        }
        mean /= n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        values.sort_by(f64::total_cmp);
        let p50 = values[n / 2];
        let p99 = values[n * 99 / 100];
        assert!((p50 / 1000.0 - 1.0).abs() < 0.03, "p50 {p50}");
        assert!((p99 / 5000.0 - 1.0).abs() < 0.06, "p99 {p99}");
    }
}
