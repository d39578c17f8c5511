//! Discrete Laplace noise from integer samplers, and the RNGs that feed it.
//!
//! Noise is never drawn from floating-point Laplace (whose gaps leak the
//! secret; Mironov 2012). The sampler is the `prio` crate's
//! [`DiscreteLaplace`](prio::dp::distributions::DiscreteLaplace), the exact
//! integer algorithm of Canonne, Kamath and Steinke (2020), with the scale
//! as an exact rational ([`Noise`]).
//!
//! A noisy answer carries one discrete Laplace sample per released integer,
//! and two aggregators each add half of it: the difference of two
//! independent geometric variables *is* a discrete Laplace variable, so the
//! first aggregator adds `+G₁` and the second `−G₂` ([`Half`]). Neither
//! knows the total noise, and the querier receives exactly one Laplace's
//! worth, the least noise the policy's ε allows.
//!
//! The RNG comes in from the caller, as everywhere in the core. [`Seeded`]
//! is the deterministic one an aggregator uses so that the same query over
//! the same contributors, asked again the same day, gets the same noise (a
//! fresh sample each time would let a querier average the noise away).

use ethnum::I256;
use hearth_crypto::rng::Bridge;
use prio::dp::Rational;
use prio::dp::distributions::DiscreteLaplace;
use rand_010::distr::Distribution;
use rand_core::{CryptoRng, RngCore, SeedableRng, impls};

use super::policy::Noise;

/// Which half of the noise an aggregator adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// `+G`, a geometric variable: the first aggregator.
    Plus,
    /// `−G`: the second aggregator.
    Minus,
}

impl Half {
    /// The half of the aggregator at `index` (0 or 1) in a query's list.
    pub fn of(index: usize) -> Half {
        if index == 0 { Half::Plus } else { Half::Minus }
    }
}

fn laplace(noise: &Noise) -> DiscreteLaplace {
    // Both parts are at least 1, so the scale is a positive rational: the
    // constructors refuse only a zero numerator or denominator.
    Rational::from_unsigned(noise.numerator.max(1), noise.denominator.max(1))
        .and_then(DiscreteLaplace::new)
        .expect("a scale of two positive integers is a valid discrete Laplace scale")
}

fn to_i256(sample: impl std::fmt::Display) -> I256 {
    // Samples beyond 2²⁵⁵ have probability far below 2⁻¹⁰⁰⁰ for any scale a
    // policy can ask; saturate rather than panic on one.
    sample.to_string().parse().unwrap_or(I256::MAX)
}

/// One discrete Laplace sample of scale `noise`.
pub fn sample(noise: &Noise, rng: &mut impl RngCore) -> I256 {
    to_i256(laplace(noise).sample(&mut Bridge(rng)))
}

/// One aggregator's half of a discrete Laplace sample: a geometric
/// variable with the same ratio, drawn as a discrete Laplace sample
/// conditioned on being at least zero (the conditional law is exactly that
/// geometric), negated for [`Half::Minus`].
pub fn half(noise: &Noise, half: Half, rng: &mut impl RngCore) -> I256 {
    let laplace = laplace(noise);
    let mut bridge = Bridge(rng);
    let geometric = loop {
        let x = to_i256(laplace.sample(&mut bridge));
        if x >= I256::ZERO {
            break x;
        }
    };
    match half {
        Half::Plus => geometric,
        Half::Minus => -geometric,
    }
}

/// The half-width of the central 95 % interval of a discrete Laplace
/// variable of this scale: the least `k` with `P(|X| > k) ≤ 5 %`, where
/// `P(|X| > k) = 2 q^(k+1) / (1 + q)` and `q = e^(−1/t)`.
pub fn interval95(noise: &Noise) -> f64 {
    let t = noise.scale();
    let q = (-1.0 / t).exp();
    // q^(k+1) ≤ 0.025 (1 + q)  ⇔  k + 1 ≥ t · ln(1 / (0.025 (1 + q)))
    ((t * (1.0 / (0.025 * (1.0 + q))).ln()).ceil() - 1.0).max(0.0)
}

/// A deterministic CSPRNG: the BLAKE3 extendable output of a 32-byte key.
/// An aggregator keys it with a secret of its own and the query's identity,
/// so equal questions get equal noise and nobody else can predict it.
pub struct Seeded(blake3::OutputReader);

impl Seeded {
    /// The stream of `secret` keyed over `context`.
    pub fn new(secret: &[u8; 32], context: &[u8]) -> Seeded {
        let mut hasher = blake3::Hasher::new_keyed(secret);
        hasher.update(context);
        Seeded(hasher.finalize_xof())
    }
}

impl SeedableRng for Seeded {
    type Seed = [u8; 32];

    fn from_seed(seed: [u8; 32]) -> Self {
        Seeded::new(&seed, b"")
    }
}

impl RngCore for Seeded {
    fn next_u32(&mut self) -> u32 {
        impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl CryptoRng for Seeded {}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(scale: u128) -> Noise {
        Noise {
            numerator: scale,
            denominator: 1,
        }
    }

    /// The two halves add up to a discrete Laplace variable: their sum has
    /// the Laplace's mean (0), variance (2q / (1 − q)²) and tail, within
    /// sampling error.
    #[test]
    fn two_halves_make_one_laplace() {
        let n = noise(10);
        let mut rng = Seeded::new(&[3; 32], b"halves");
        let trials = 20_000;
        let (mut sum, mut squares, mut beyond) = (0f64, 0f64, 0u32);
        let k = interval95(&n);
        for _ in 0..trials {
            let x = half(&n, Half::Plus, &mut rng) + half(&n, Half::Minus, &mut rng);
            let x = x.as_f64();
            sum += x;
            squares += x * x;
            if x.abs() > k {
                beyond += 1;
            }
        }
        let q = (-1f64 / 10.0).exp();
        let variance = 2.0 * q / (1.0 - q).powi(2);
        let mean = sum / trials as f64;
        assert!(mean.abs() < 0.5, "mean {mean}");
        let var = squares / trials as f64 - mean * mean;
        assert!(
            (var / variance - 1.0).abs() < 0.06,
            "variance {var} vs {variance}"
        );
        let tail = f64::from(beyond) / trials as f64;
        assert!(
            (0.035..=0.055).contains(&tail),
            "beyond the 95 % interval: {tail}"
        );
        // And directly sampled Laplace agrees.
        let direct: f64 = (0..trials)
            .map(|_| sample(&n, &mut rng).as_f64().powi(2))
            .sum::<f64>()
            / trials as f64;
        assert!(
            (direct / variance - 1.0).abs() < 0.06,
            "direct variance {direct}"
        );
    }

    #[test]
    fn a_half_has_its_sign() {
        let n = noise(1000);
        let mut rng = Seeded::new(&[1; 32], b"sign");
        for _ in 0..200 {
            assert!(half(&n, Half::Plus, &mut rng) >= I256::ZERO);
            assert!(half(&n, Half::Minus, &mut rng) <= I256::ZERO);
        }
    }

    #[test]
    fn the_seeded_stream_is_deterministic_and_keyed() {
        let draw = |key: [u8; 32], context: &[u8]| {
            let mut rng = Seeded::new(&key, context);
            sample(&noise(1_000_000), &mut rng)
        };
        assert_eq!(draw([1; 32], b"q"), draw([1; 32], b"q"));
        assert_ne!(draw([1; 32], b"q"), draw([2; 32], b"q"));
        assert_ne!(draw([1; 32], b"q"), draw([1; 32], b"r"));
    }

    #[test]
    fn huge_scales_sample_without_overflow() {
        let n = Noise {
            numerator: 36 * 1_000_000_000 * 1_000_000 * 1_000_000,
            denominator: 1_000_000,
        };
        let mut rng = Seeded::new(&[9; 32], b"big");
        let x = sample(&n, &mut rng);
        assert!(x.unsigned_abs().as_f64() < n.scale() * 100.0);
        assert!(interval95(&n) > n.scale() * 2.9 && interval95(&n) < n.scale() * 3.0);
    }
}
