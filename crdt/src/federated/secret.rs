//! Additive secret sharing of contribution vectors modulo 2²⁵⁶.
//!
//! A vector of signed integers is split into `k` share vectors whose sum,
//! element by element and wrapping at 2²⁵⁶, is the original (read back as
//! two's complement). Every share but the last is uniformly random and the
//! last is what remains, so any `k − 1` shares are jointly uniform and
//! independent of the secret: an aggregator holding one share of each
//! contribution learns nothing about any of them. Sums of shares are shares
//! of sums, which is all an aggregator computes.

use ethnum::{I256, U256};
use rand_core::{CryptoRng, RngCore};

/// One share vector.
pub type Share = Vec<U256>;

/// A uniformly random element of Z/2²⁵⁶.
fn uniform(rng: &mut (impl RngCore + CryptoRng)) -> U256 {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    U256::from_le_bytes(bytes)
}

/// Splits `secret` into `parties` (at least 2) share vectors.
pub fn split(secret: &[I256], parties: usize, rng: &mut (impl RngCore + CryptoRng)) -> Vec<Share> {
    let parties = parties.max(2);
    let mut shares: Vec<Share> = (0..parties - 1)
        .map(|_| secret.iter().map(|_| uniform(rng)).collect())
        .collect();
    let last = secret
        .iter()
        .enumerate()
        .map(|(i, s)| {
            shares
                .iter()
                .fold(s.as_u256(), |rest, share| rest.wrapping_sub(share[i]))
        })
        .collect();
    shares.push(last);
    shares
}

/// Adds `other` into `sum`, element by element (both the same length).
pub fn add_into(sum: &mut Share, other: &[U256]) {
    for (s, o) in sum.iter_mut().zip(other) {
        *s = s.wrapping_add(*o);
    }
}

/// Adds signed integers (noise) into a share.
pub fn add_signed(sum: &mut Share, other: &[I256]) {
    for (s, o) in sum.iter_mut().zip(other) {
        *s = s.wrapping_add(o.as_u256());
    }
}

/// The secret the shares add up to, or `None` when their lengths differ.
pub fn combine(shares: &[Share]) -> Option<Vec<I256>> {
    let len = shares.first()?.len();
    if shares.iter().any(|s| s.len() != len) {
        return None;
    }
    let mut sum = vec![U256::ZERO; len];
    for share in shares {
        add_into(&mut sum, share);
    }
    Some(sum.into_iter().map(|s| s.as_i256()).collect())
}

/// Share vectors as 32-byte big-endian integers on the wire.
pub mod wire {
    use ethnum::U256;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes a share vector.
    pub fn serialize<S: Serializer>(share: &[U256], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(share.iter().map(|v| v.to_be_bytes()))
    }

    /// Deserializes a share vector.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<U256>, D::Error> {
        let raw: Vec<[u8; 32]> = Vec::deserialize(deserializer)?;
        if raw.len() > super::MAX_LEN {
            return Err(D::Error::custom("a share vector is too long"));
        }
        Ok(raw.into_iter().map(U256::from_be_bytes).collect())
    }
}

/// The longest share vector accepted from a peer: the most cells times a
/// generous number of integers per cell.
pub const MAX_LEN: usize = 65_536;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand_core::{CryptoRng, RngCore, SeedableRng};

    use super::*;
    use crate::federated::noise::Seeded;

    fn rng(seed: u64) -> impl RngCore + CryptoRng {
        Seeded::seed_from_u64(seed)
    }

    proptest! {
        #[test]
        fn shares_sum_to_the_secret(
            secret in proptest::collection::vec(any::<i128>(), 0..40),
            parties in 2usize..6,
            seed in any::<u64>(),
        ) {
            let secret: Vec<I256> = secret.into_iter().map(I256::from).collect();
            let shares = split(&secret, parties, &mut rng(seed));
            prop_assert_eq!(shares.len(), parties);
            prop_assert_eq!(combine(&shares).unwrap(), secret);
        }

        #[test]
        fn sums_of_shares_are_shares_of_sums(
            a in proptest::collection::vec(any::<i64>(), 8),
            b in proptest::collection::vec(any::<i64>(), 8),
            seed in any::<u64>(),
        ) {
            let a: Vec<I256> = a.into_iter().map(I256::from).collect();
            let b: Vec<I256> = b.into_iter().map(I256::from).collect();
            let mut r = rng(seed);
            let (sa, sb) = (split(&a, 2, &mut r), split(&b, 2, &mut r));
            let mut first = sa[0].clone();
            add_into(&mut first, &sb[0]);
            let mut second = sa[1].clone();
            add_into(&mut second, &sb[1]);
            let total = combine(&[first, second]).unwrap();
            let expected: Vec<I256> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
            prop_assert_eq!(total, expected);
        }
    }

    /// One share alone is uniform whatever the secret: the bits of the first
    /// share of an all-zero secret and of an all-ones secret have the same
    /// distribution (each bit set about half the time), and the last share
    /// of two parties is the secret minus a uniform value, uniform too.
    #[test]
    fn each_share_alone_is_uniform() {
        for secret in [I256::ZERO, I256::from(-1), I256::from(123_456_789)] {
            for party in 0..2 {
                let mut ones = [0u32; 256];
                let trials = 4000;
                let mut r = rng(7);
                for _ in 0..trials {
                    let share = split(&[secret], 2, &mut r)[party][0];
                    for (bit, count) in ones.iter_mut().enumerate() {
                        *count += ((share >> bit as u32) & U256::ONE).as_u32();
                    }
                }
                // 4000 fair coins: the count is within 5 standard deviations
                // (~158) of 2000 for every bit.
                for (bit, count) in ones.iter().enumerate() {
                    assert!(
                        (1842..=2158).contains(count),
                        "secret {secret} party {party} bit {bit}: {count}/4000"
                    );
                }
            }
        }
    }

    #[test]
    fn mismatched_lengths_do_not_combine() {
        assert_eq!(combine(&[vec![U256::ONE], vec![]]), None);
        assert_eq!(combine(&[]), None);
    }
}
