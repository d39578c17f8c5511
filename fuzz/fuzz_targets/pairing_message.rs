//! Pairing handshake messages from a joiner or an inviter.
#![no_main]

use hearth_crypto::pairing::{CheckCode, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        assert!(Message::decode(&message.encode()).is_ok());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = CheckCode::parse(text);
    }
});
