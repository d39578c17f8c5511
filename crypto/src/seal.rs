//! Sealed values: authenticated encryption of everything the store writes.
//!
//! A sealed value is
//!
//! ```text
//! version (1 byte, = 1) ‖ nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)
//! ```
//!
//! made with XChaCha20-Poly1305 under a 32-byte [`SecretKey`]. The nonce is
//! random: XChaCha20's 192-bit nonce makes a collision negligible even after
//! billions of values under one key, so no counter has to survive crashes.
//!
//! The *associated data* is authenticated but not stored. The store passes
//! [`aad`]`(table, key)`, which binds the value to the exact position it was
//! written to: a value moved to another key or table (by a bug or by someone
//! editing the file) fails to open with [`Error::Authentication`] instead of
//! being read as some other record. The version byte is authenticated too.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The format version written as the first byte of every sealed value.
pub const SEAL_VERSION: u8 = 1;

/// Length of the random nonce.
pub const NONCE_LEN: usize = 24;

/// Length of the Poly1305 authentication tag.
pub const TAG_LEN: usize = 16;

const HEADER_LEN: usize = 1 + NONCE_LEN;

/// Bytes a sealed value adds to its plaintext: version, nonce and tag (41).
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input is shorter than the fixed overhead, so it was truncated or is
    /// not a sealed value.
    #[error("sealed value is {len} bytes, shorter than the {min}-byte minimum")]
    TooShort {
        /// Length of the input.
        len: usize,
        /// [`SEAL_OVERHEAD`].
        min: usize,
    },
    /// The first byte names a format this version does not know.
    #[error("sealed value has unknown format version {version}")]
    UnknownVersion {
        /// The version byte found.
        version: u8,
    },
    /// The tag does not match: wrong key, wrong associated data (the value
    /// belongs to another table or key), or the bytes were altered.
    #[error(
        "sealed value failed authentication (wrong key, value moved from another position, or tampered)"
    )]
    Authentication,
}

/// A 32-byte symmetric key. Zeroized on drop; `Debug` does not show it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// Length of a key.
    pub const LEN: usize = 32;

    /// Generates a new random key.
    pub fn generate(rng: &mut (impl CryptoRng + RngCore)) -> Self {
        let mut key = Self([0u8; 32]);
        rng.fill_bytes(&mut key.0);
        key
    }

    /// Wraps existing key bytes (the caller keeps responsibility for zeroizing
    /// its own copy).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(*bytes)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Associated data that pins a stored value to `table` and `key`.
///
/// Both parts are length-prefixed (8-byte little-endian lengths), so no two
/// different `(table, key)` pairs give the same bytes: `("ab", "c")` and
/// `("a", "bc")` differ.
pub fn aad(table: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + table.len() + key.len());
    out.extend_from_slice(&(table.len() as u64).to_le_bytes());
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(&(key.len() as u64).to_le_bytes());
    out.extend_from_slice(key);
    out
}

/// Seals `plaintext` under `key`, authenticating `aad` with it.
///
/// The result is [`SEAL_OVERHEAD`] bytes longer than the plaintext.
///
/// # Panics
///
/// If `plaintext` is longer than 256 GiB, the XChaCha20-Poly1305 limit;
/// no in-memory value the store handles comes near it.
pub fn seal(
    key: &SecretKey,
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut (impl CryptoRng + RngCore),
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .cipher()
        .encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            &bound_aad(SEAL_VERSION, aad),
            &mut out[HEADER_LEN..],
        )
        .expect("plaintext is below the 256 GiB XChaCha20-Poly1305 limit");
    out.extend_from_slice(&tag);
    out
}

/// Opens a value made by [`seal`] with the same key and associated data.
pub fn open(key: &SecretKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(Error::TooShort {
            len: sealed.len(),
            min: SEAL_OVERHEAD,
        });
    }
    let version = sealed[0];
    if version != SEAL_VERSION {
        return Err(Error::UnknownVersion { version });
    }
    let nonce = XNonce::from_slice(&sealed[1..HEADER_LEN]);
    let (body, tag) = sealed[HEADER_LEN..].split_at(sealed.len() - SEAL_OVERHEAD);
    let mut plaintext = body.to_vec();
    key.cipher()
        .decrypt_in_place_detached(
            nonce,
            &bound_aad(version, aad),
            &mut plaintext,
            Tag::from_slice(tag),
        )
        .map_err(|_| Error::Authentication)?;
    Ok(plaintext)
}

/// The associated data handed to the AEAD: the version byte, then the
/// caller's data. Authenticating the version stops a future format from being
/// confused with this one under the same key.
fn bound_aad(version: u8, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + aad.len());
    out.push(version);
    out.extend_from_slice(aad);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(42)
    }

    #[test]
    fn sealed_value_opens_with_same_key_and_aad() {
        let mut rng = rng();
        let key = SecretKey::generate(&mut rng);
        let sealed = seal(&key, b"ctx", b"hello", &mut rng);
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(sealed[0], SEAL_VERSION);
        assert_eq!(open(&key, b"ctx", &sealed).unwrap(), b"hello");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let mut rng = rng();
        let key = SecretKey::generate(&mut rng);
        let sealed = seal(&key, b"", b"", &mut rng);
        assert_eq!(sealed.len(), SEAL_OVERHEAD);
        assert_eq!(open(&key, b"", &sealed).unwrap(), b"");
    }

    #[test]
    fn ciphertext_hides_plaintext_and_nonces_differ() {
        let mut rng = rng();
        let key = SecretKey::generate(&mut rng);
        let plaintext = b"a very recognisable plaintext";
        let a = seal(&key, b"", plaintext, &mut rng);
        let b = seal(&key, b"", plaintext, &mut rng);
        assert_ne!(a, b);
        assert_ne!(a[1..HEADER_LEN], b[1..HEADER_LEN]);
        assert!(!a.windows(plaintext.len()).any(|w| w == plaintext));
    }

    #[test]
    fn wrong_key_fails_authentication() {
        let mut rng = rng();
        let key = SecretKey::generate(&mut rng);
        let other = SecretKey::generate(&mut rng);
        let sealed = seal(&key, b"t", b"v", &mut rng);
        assert_eq!(open(&other, b"t", &sealed), Err(Error::Authentication));
    }

    #[test]
    fn value_swapped_to_another_key_fails_to_open() {
        let mut rng = rng();
        let key = SecretKey::generate(&mut rng);
        let sealed = seal(&key, &aad("records-1", b"a"), b"value of a", &mut rng);
        assert_eq!(
            open(&key, &aad("records-1", b"b"), &sealed),
            Err(Error::Authentication)
        );
        assert_eq!(
            open(&key, &aad("records-2", b"a"), &sealed),
            Err(Error::Authentication)
        );
        assert_eq!(
            open(&key, &aad("records-1", b"a"), &sealed).unwrap(),
            b"value of a"
        );
    }

    #[test]
    fn aad_is_unambiguous() {
        assert_ne!(aad("ab", b"c"), aad("a", b"bc"));
        assert_ne!(aad("", b"x"), aad("x", b""));
        assert_eq!(aad("t", b"k"), aad("t", b"k"));
    }

    #[test]
    fn short_input_and_unknown_version_have_their_own_errors() {
        let mut rng = rng();
        let key = SecretKey::generate(&mut rng);
        assert_eq!(
            open(&key, b"", &[1u8; 40]),
            Err(Error::TooShort { len: 40, min: 41 })
        );
        assert_eq!(
            open(&key, b"", &[]),
            Err(Error::TooShort { len: 0, min: 41 })
        );
        let mut sealed = seal(&key, b"", b"x", &mut rng);
        sealed[0] = 2;
        assert_eq!(
            open(&key, b"", &sealed),
            Err(Error::UnknownVersion { version: 2 })
        );
    }

    #[test]
    fn truncated_value_fails() {
        let mut rng = rng();
        let key = SecretKey::generate(&mut rng);
        let sealed = seal(&key, b"", b"some bytes", &mut rng);
        assert_eq!(
            open(&key, b"", &sealed[..sealed.len() - 1]),
            Err(Error::Authentication)
        );
    }

    #[test]
    fn debug_hides_key_bytes() {
        let key = SecretKey::from_bytes(&[0xab; 32]);
        let debug = format!("{key:?}");
        assert_eq!(debug, "SecretKey(<redacted>)");
    }

    #[test]
    fn key_bytes_round_trip() {
        let mut rng = rng();
        let key = SecretKey::generate(&mut rng);
        let copy = SecretKey::from_bytes(key.as_bytes());
        let sealed = seal(&key, b"", b"v", &mut rng);
        assert_eq!(open(&copy, b"", &sealed).unwrap(), b"v");
        assert_ne!(key.as_bytes(), &[0u8; 32]);
    }
}
