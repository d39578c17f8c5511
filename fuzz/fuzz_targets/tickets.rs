//! Text a person pastes or a QR code holds: pairing tickets and contact
//! cards, and the cards' binary form from the wire.
#![no_main]

use hearth_crypto::card::Card;
use hearth_crypto::ticket::Invitation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Card::from_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(invitation) = Invitation::decode(text) {
            assert_eq!(
                Invitation::decode(&invitation.encode()).ok(),
                Some(invitation)
            );
        }
        if let Ok(card) = Card::decode(text) {
            assert_eq!(
                Card::decode(&card.encode()).map(|c| c.to_bytes()).ok(),
                Some(card.to_bytes())
            );
        }
    }
});
