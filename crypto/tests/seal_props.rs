//! Property tests of sealed values and key wrapping through the public API.

use hearth_crypto::seal::{self, SEAL_OVERHEAD, SecretKey};
use hearth_crypto::wrap::{self, KdfParams, WrappedKey};
use proptest::prelude::*;
use proptest::sample::Index;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sealed_values_open_to_their_plaintext(
        key in any::<[u8; 32]>(),
        aad in bytes(64),
        plaintext in bytes(1024),
        seed in any::<u64>(),
    ) {
        let key = SecretKey::from_bytes(&key);
        let sealed = seal::seal(&key, &aad, &plaintext, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(sealed.len(), plaintext.len() + SEAL_OVERHEAD);
        prop_assert_eq!(seal::open(&key, &aad, &sealed).unwrap(), plaintext);
    }

    #[test]
    fn any_bit_flip_makes_a_sealed_value_fail_to_open(
        key in any::<[u8; 32]>(),
        aad in bytes(32),
        plaintext in bytes(256),
        at in any::<Index>(),
        bit in 0u8..8,
    ) {
        let key = SecretKey::from_bytes(&key);
        let mut sealed = seal::seal(&key, &aad, &plaintext, &mut StdRng::seed_from_u64(1));
        let i = at.index(sealed.len());
        sealed[i] ^= 1 << bit;
        let err = seal::open(&key, &aad, &sealed).unwrap_err();
        if i == 0 {
            prop_assert_eq!(err, seal::Error::UnknownVersion { version: sealed[0] });
        } else {
            prop_assert_eq!(err, seal::Error::Authentication);
        }
    }

    #[test]
    fn a_different_aad_fails_to_open(
        key in any::<[u8; 32]>(),
        aad in bytes(32),
        other in bytes(32),
        plaintext in bytes(256),
    ) {
        prop_assume!(aad != other);
        let key = SecretKey::from_bytes(&key);
        let sealed = seal::seal(&key, &aad, &plaintext, &mut StdRng::seed_from_u64(2));
        prop_assert_eq!(seal::open(&key, &other, &sealed), Err(seal::Error::Authentication));
    }

    #[test]
    fn a_different_key_fails_to_open(
        key in any::<[u8; 32]>(),
        other in any::<[u8; 32]>(),
        plaintext in bytes(256),
    ) {
        prop_assume!(key != other);
        let sealed = seal::seal(
            &SecretKey::from_bytes(&key),
            b"",
            &plaintext,
            &mut StdRng::seed_from_u64(3),
        );
        prop_assert_eq!(
            seal::open(&SecretKey::from_bytes(&other), b"", &sealed),
            Err(seal::Error::Authentication)
        );
    }

    #[test]
    fn distinct_positions_give_distinct_aad(
        t1 in "[a-z0-9-]{0,12}", k1 in bytes(16),
        t2 in "[a-z0-9-]{0,12}", k2 in bytes(16),
    ) {
        prop_assume!((&t1, &k1) != (&t2, &k2));
        prop_assert_ne!(seal::aad(&t1, &k1), seal::aad(&t2, &k2));
    }

    #[test]
    fn opening_arbitrary_bytes_never_panics(key in any::<[u8; 32]>(), input in bytes(128)) {
        let _ = seal::open(&SecretKey::from_bytes(&key), b"aad", &input);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn wrapped_key_decoding_never_panics(input in bytes(160)) {
        if let Ok(wrapped) = WrappedKey::from_bytes(&input) {
            // Anything that decodes re-encodes to the same bytes.
            prop_assert_eq!(wrapped.to_bytes(), input);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn key_wrapping_round_trips(store in any::<[u8; 32]>(), kek in any::<[u8; 32]>(), pass in bytes(40)) {
        prop_assume!(!pass.is_empty());
        let mut rng = StdRng::seed_from_u64(4);
        let store = SecretKey::from_bytes(&store);
        let cheap = KdfParams { m_cost_kib: 64, t_cost: 1, p_cost: 1 };

        let by_pass = wrap::wrap_with_passphrase(&store, &pass, cheap, &mut rng).unwrap();
        let by_pass = WrappedKey::from_bytes(&by_pass.to_bytes()).unwrap();
        let unwrapped = by_pass.unwrap_with_passphrase(&pass).unwrap();
        prop_assert_eq!(unwrapped.as_bytes(), store.as_bytes());

        let by_key = wrap::wrap_with_key(&store, &SecretKey::from_bytes(&kek), &mut rng);
        let by_key = WrappedKey::from_bytes(&by_key.to_bytes()).unwrap();
        let unwrapped = by_key.unwrap_with_key(&SecretKey::from_bytes(&kek)).unwrap();
        prop_assert_eq!(unwrapped.as_bytes(), store.as_bytes());
    }
}
