//! Property tests of contact cards through the public API: every card
//! `Card::new` accepts reads back the same, and no input, random or a
//! mutated real card, makes decoding panic or accept a changed card.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use hearth_crypto::card::Card;
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership::Log;
use proptest::prelude::*;

/// A card of an account of `devices` devices, each with one address.
fn card(seed: u8, devices: u8, name: &str) -> Card {
    let key = DeviceKey::from_bytes(&[seed; 32]);
    let mut log = Log::genesis(&key, "first", 0);
    let mut addrs = vec![(key.id(), vec!["/ip4/10.0.0.1/tcp/4001".to_string()])];
    for n in 1..devices {
        let other = DeviceKey::from_bytes(&[seed.wrapping_add(n); 32]).id();
        log.add_device(&key, other, &format!("device-{n}"), u64::from(n))
            .unwrap();
        addrs.push((other, vec![format!("/ip4/10.0.0.{}/tcp/4001", n + 1)]));
    }
    Card::new(&key, name, log, addrs).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_card_reads_back_the_same(seed in 1u8..200, devices in 1u8..6, name in "[a-zA-Z][a-zA-Z0-9 ]{0,30}") {
        let card = card(seed, devices, &name);
        for text in [card.encode(), card.qr_payload(), format!("  {}\n", card.encode())] {
            let back = Card::decode(&text).unwrap();
            prop_assert_eq!(back.account(), card.account());
            prop_assert_eq!(back.name(), card.name());
            prop_assert_eq!(back.addrs(), card.addrs());
            prop_assert_eq!(back.to_bytes(), card.to_bytes());
        }
        let back = Card::from_bytes(&card.to_bytes()).unwrap();
        prop_assert_eq!(back.encode(), card.encode());
    }

    #[test]
    fn random_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3000), text in "\\PC{0,600}") {
        let _ = Card::from_bytes(&bytes);
        let _ = Card::decode(&text);
        let _ = Card::decode(&format!("hearthc1{text}"));
    }

    #[test]
    fn a_mutated_card_is_refused_or_reads_as_exactly_what_was_signed(
        devices in 1u8..4,
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let card = card(7, devices, "alice");
        let mut bytes = card.to_bytes();
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        // A flipped byte either breaks the card (an error, never a panic)
        // or, if every flip landed where a second valid encoding reads the
        // same values, gives back a card that still verifies as signed.
        if let Ok(read) = Card::from_bytes(&bytes) {
            prop_assert_eq!(read.account(), card.account());
            prop_assert_eq!(read.name(), card.name());
            prop_assert_eq!(read.addrs(), card.addrs());
        }
    }
}
