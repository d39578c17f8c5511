//! Membership logs and single entries from peers: decoding verifies or
//! refuses, never panics.
#![no_main]

use hearth_crypto::membership::{Entry, Log};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = Log::decode(data) {
        let again = Log::decode(&log.encode()).expect("a decoded log encodes to one that decodes");
        assert_eq!(again.heads(), log.heads());
    }
    let _ = Entry::from_bytes(data);
});
