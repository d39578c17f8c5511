//! Sealing a message to one device, so that only that device can open it:
//! HPKE (RFC 9180) in base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256
//! and ChaCha20-Poly1305, through the `hpke` crate.
//!
//! The recipient's X25519 key is its device key seen on the other curve
//! model: the public key is the Montgomery form of the Ed25519 public key
//! (its [`DeviceId`]), the secret the clamped scalar Ed25519 derives from
//! the seed. So a sender needs nothing but the device id it already holds
//! in a contact card, and no second key is published or kept. (The same
//! seed then serves signatures and key agreement; the two uses never sign
//! or decrypt each other's messages, and the HPKE `info` binds every
//! sealed message to its purpose.)
//!
//! A sealed message is the 32-byte encapsulated key followed by the
//! ciphertext and its 16-byte tag.

use ed25519_dalek::VerifyingKey;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use rand_core::{CryptoRng, RngCore};

use crate::identity::{DeviceId, DeviceKey};
use crate::rng::Bridge;

/// Bytes of the encapsulated X25519 key that starts a sealed message.
const ENCAPPED_LEN: usize = 32;
/// Bytes a sealed message adds to its plaintext: the encapsulated key and
/// the AEAD tag.
pub const SEALED_OVERHEAD: usize = ENCAPPED_LEN + 16;

type Suite = X25519HkdfSha256;

/// Why a message could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The recipient's id is not a usable public key.
    #[error("the recipient's device id is not a valid public key")]
    BadRecipient,
    /// The message is shorter than its envelope.
    #[error("a sealed message is shorter than its envelope")]
    Truncated,
    /// Sealed to another device or for another purpose, or altered.
    #[error(
        "the sealed message does not open with this device's key: it was sealed to another device or altered"
    )]
    Authentication,
}

fn public(device: &DeviceId) -> Result<<Suite as Kem>::PublicKey, Error> {
    let key = VerifyingKey::from_bytes(device.as_bytes()).map_err(|_| Error::BadRecipient)?;
    <Suite as Kem>::PublicKey::from_bytes(key.to_montgomery().as_bytes())
        .map_err(|_| Error::BadRecipient)
}

fn secret(key: &DeviceKey) -> Result<<Suite as Kem>::PrivateKey, Error> {
    let scalar = zeroize::Zeroizing::new(key.signing().to_scalar_bytes());
    <Suite as Kem>::PrivateKey::from_bytes(scalar.as_slice()).map_err(|_| Error::Authentication)
}

/// Seals `plaintext` to `device`; `info` names the purpose (and anything
/// else the recipient must agree on), `aad` is authenticated but not
/// encrypted.
pub fn seal(
    device: &DeviceId,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>, Error> {
    let recipient = public(device)?;
    let (encapped, ciphertext) =
        hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, Suite>(
            &OpModeS::Base,
            &recipient,
            info,
            plaintext,
            aad,
            &mut Bridge(rng),
        )
        .map_err(|_| Error::BadRecipient)?;
    let mut out = Vec::with_capacity(ENCAPPED_LEN + ciphertext.len());
    out.extend_from_slice(&encapped.to_bytes());
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens a message sealed to this device with the same `info` and `aad`.
pub fn open(key: &DeviceKey, info: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
    if sealed.len() < SEALED_OVERHEAD {
        return Err(Error::Truncated);
    }
    let (encapped, ciphertext) = sealed.split_at(ENCAPPED_LEN);
    let encapped =
        <Suite as Kem>::EncappedKey::from_bytes(encapped).map_err(|_| Error::Authentication)?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Suite>(
        &OpModeR::Base,
        &secret(key)?,
        &encapped,
        info,
        ciphertext,
        aad,
    )
    .map_err(|_| Error::Authentication)
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;

    #[test]
    fn only_the_recipient_opens_for_the_same_purpose() {
        let bob = DeviceKey::from_bytes(&[2; 32]);
        let carol = DeviceKey::from_bytes(&[3; 32]);
        let sealed = seal(&bob.id(), b"share", b"q1", b"forty-two", &mut OsRng).unwrap();
        assert_eq!(sealed.len(), 9 + SEALED_OVERHEAD);
        assert_eq!(open(&bob, b"share", b"q1", &sealed).unwrap(), b"forty-two");
        assert_eq!(
            open(&carol, b"share", b"q1", &sealed),
            Err(Error::Authentication)
        );
        assert_eq!(
            open(&bob, b"other", b"q1", &sealed),
            Err(Error::Authentication)
        );
        assert_eq!(
            open(&bob, b"share", b"q2", &sealed),
            Err(Error::Authentication)
        );
        let mut flipped = sealed.clone();
        flipped[40] ^= 1;
        assert_eq!(
            open(&bob, b"share", b"q1", &flipped),
            Err(Error::Authentication)
        );
        assert_eq!(
            open(&bob, b"share", b"q1", &sealed[..20]),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn sealing_twice_gives_different_envelopes() {
        let bob = DeviceKey::from_bytes(&[2; 32]);
        let a = seal(&bob.id(), b"x", b"", b"same", &mut OsRng).unwrap();
        let b = seal(&bob.id(), b"x", b"", b"same", &mut OsRng).unwrap();
        assert_ne!(a, b);
    }
}
