//! What the store reads back from disk: sealed values and the wrapped store
//! key; a damaged or hostile file is refused, never a panic.
#![no_main]

use hearth_crypto::seal::{SecretKey, open};
use hearth_crypto::wrap::WrappedKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SecretKey::from_bytes(&[7; 32]);
    // Random bytes never authenticate (a forgery chance of 2^-128).
    assert!(open(&key, b"table/key", data).is_err());
    if let Ok(wrapped) = WrappedKey::from_bytes(data) {
        let _ = wrapped.unwrap_with_key(&key);
    }
});
