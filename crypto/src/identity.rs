//! Device identities.
//!
//! Every device holds one ed25519 signing key, its [`DeviceKey`]. The public
//! half is the device's [`DeviceId`]. The same key is the device's libp2p
//! identity, and a `DeviceId` prints exactly like the libp2p `PeerId` of that
//! key: base58btc of the identity multihash of the protobuf-encoded public key,
//! which always starts with `12D3KooW`. So a peer that libp2p authenticated as
//! `12D3KooW…` *is* the device `12D3KooW…`, with no mapping table in between.
//!
//! Parsing a `DeviceId` is strict: the text must be an ed25519 peer id, and the
//! key must be a canonical, non-weak curve point. Signatures are checked with
//! strict ed25519 verification (no malleable signatures, no small-order keys),
//! so one message has one valid signature per key.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::text::serde_as_text;

/// Bytes that precede the 32-byte key in the binary form of an ed25519 `PeerId`:
/// identity multihash (code 0x00, length 36) of the protobuf `PublicKey`
/// message (field 1 `Type` = 1 Ed25519, field 2 `Data` of length 32).
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// Length of the binary form of an ed25519 `PeerId`.
const PEER_ID_LEN: usize = PEER_ID_PREFIX.len() + 32;

/// How the text form of every ed25519 peer id begins.
const ED25519_TEXT_PREFIX: &str = "12D3KooW";

/// Longest text accepted when parsing a [`DeviceId`]. Real ids are 52
/// characters; the bound stops a huge string from reaching the quadratic
/// base58 decoder.
pub const MAX_DEVICE_ID_TEXT_LEN: usize = 64;

/// Why a device id could not be parsed, or a signature did not verify.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is far longer than any device id.
    #[error("device id is {len} characters long; device ids are at most {max}")]
    TooLong {
        /// Length of the text, in bytes.
        len: usize,
        /// [`MAX_DEVICE_ID_TEXT_LEN`].
        max: usize,
    },
    /// The text is not base58btc.
    #[error("device id is not valid base58: {0}")]
    Base58(#[from] bs58::decode::Error),
    /// The text decodes to the wrong number of bytes.
    #[error("device id decodes to {len} bytes; an ed25519 peer id has {expected}")]
    Length {
        /// Decoded length.
        len: usize,
        /// The length of an ed25519 peer id (38).
        expected: usize,
    },
    /// The text is a peer id of another key type, or not a peer id at all.
    #[error("not an ed25519 peer id; device ids start with \"12D3KooW\"")]
    Prefix,
    /// The 32 key bytes are not a point on the curve.
    #[error("device id does not hold a valid ed25519 public key (not a curve point)")]
    InvalidKey(#[source] ed25519_dalek::SignatureError),
    /// The key bytes are a non-canonical encoding of a curve point.
    #[error("device id holds a non-canonical ed25519 public key encoding")]
    NonCanonicalKey,
    /// The key is a small-order point, for which signatures prove nothing.
    #[error("device id holds a weak (small-order) ed25519 public key")]
    WeakKey,
    /// A signature does not verify for this device and message.
    #[error("signature by {device} does not verify")]
    BadSignature {
        /// The device the signature claimed to come from.
        device: DeviceId,
        /// What the verifier reported.
        #[source]
        source: ed25519_dalek::SignatureError,
    },
}

/// The secret signing key of this device.
///
/// It never leaves the device. It is zeroized on drop and its `Debug` form
/// shows only the public [`DeviceId`].
pub struct DeviceKey {
    key: SigningKey,
}

impl DeviceKey {
    /// Generates a new key from a cryptographic RNG.
    pub fn generate(rng: &mut (impl CryptoRng + RngCore)) -> Self {
        Self {
            key: SigningKey::generate(rng),
        }
    }

    /// Restores a key from its 32-byte secret seed (as from [`DeviceKey::to_bytes`]).
    ///
    /// Every 32-byte value is a valid seed. It is the same seed libp2p's
    /// `Keypair::ed25519_from_bytes` takes, so both derive the same identity.
    pub fn from_bytes(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte secret seed, for storing the key (sealed) on disk.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The Ed25519 key itself, for [`crate::sealed`]'s X25519 view of it.
    pub(crate) fn signing(&self) -> &SigningKey {
        &self.key
    }

    /// The public identity of this device.
    pub fn id(&self) -> DeviceId {
        DeviceId {
            key: self.key.verifying_key().to_bytes(),
        }
    }

    /// Signs a message. Ed25519 signing is deterministic: the same key and
    /// message always give the same signature.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.key.sign(msg).to_bytes())
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

/// The public identity of a device: its ed25519 public key.
///
/// Its text form (`Display`, `FromStr`, serde) is the libp2p `PeerId` of the
/// key, for example `12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq`.
/// Ordering and hashing follow the 32 key bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId {
    // Invariant: the canonical encoding of a curve point that is not of small
    // order. Kept compressed (32 bytes, not the 192 of a `VerifyingKey`)
    // because ids are copied and used as map keys far more often than they
    // verify anything.
    key: [u8; 32],
}

impl DeviceId {
    /// Length of the raw public key.
    pub const LEN: usize = 32;

    /// Builds an id from a raw 32-byte ed25519 public key, refusing bytes that
    /// are not a canonical, non-weak curve point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, Error> {
        Self::decode(bytes).map(|_| Self { key: *bytes })
    }

    /// The id whose raw key is `bytes`, once `signature` over `msg`
    /// verifies under it (strictly, as [`DeviceId::verify`]). The key is
    /// decoded once for both, which is most of the cost of a check when
    /// each signature names its signer (as a change's authorship does).
    pub fn verify_from_bytes(
        bytes: &[u8; 32],
        msg: &[u8],
        signature: &Signature,
    ) -> Result<Self, Error> {
        let key = Self::decode(bytes)?;
        let id = Self { key: *bytes };
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(msg, &sig)
            .map_err(|source| Error::BadSignature { device: id, source })?;
        Ok(id)
    }

    /// Decodes raw key bytes, refusing any that are not a canonical,
    /// non-weak curve point.
    fn decode(bytes: &[u8; 32]) -> Result<VerifyingKey, Error> {
        let key = VerifyingKey::from_bytes(bytes).map_err(Error::InvalidKey)?;
        // Decompression tolerates a y coordinate >= p; re-encoding shows it.
        if key.to_edwards().compress().to_bytes() != *bytes {
            return Err(Error::NonCanonicalKey);
        }
        if key.is_weak() {
            return Err(Error::WeakKey);
        }
        Ok(key)
    }

    /// The raw 32-byte public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The binary form of the libp2p `PeerId` for this key (38 bytes), as
    /// `PeerId::from_bytes` accepts it.
    pub fn to_peer_id_bytes(&self) -> [u8; PEER_ID_LEN] {
        let mut out = [0u8; PEER_ID_LEN];
        out[..PEER_ID_PREFIX.len()].copy_from_slice(&PEER_ID_PREFIX);
        out[PEER_ID_PREFIX.len()..].copy_from_slice(self.as_bytes());
        out
    }

    /// The id whose [`DeviceId::to_peer_id_bytes`] are `bytes`, as libp2p's
    /// `PeerId::to_bytes` gives them: `None` for bytes of another key type
    /// or length, an error for an ed25519 key that is not a valid device key.
    pub fn from_peer_id_bytes(bytes: &[u8]) -> Option<Result<Self, Error>> {
        if bytes.len() != PEER_ID_LEN || bytes[..PEER_ID_PREFIX.len()] != PEER_ID_PREFIX {
            return None;
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[PEER_ID_PREFIX.len()..]);
        Some(Self::from_bytes(&key))
    }

    /// Verifies a signature by this device over `msg`, strictly: malleable
    /// signatures are refused.
    pub fn verify(&self, msg: &[u8], signature: &Signature) -> Result<(), Error> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        // Cannot fail for a constructed id, but costs no more to propagate.
        VerifyingKey::from_bytes(&self.key)
            .and_then(|key| key.verify_strict(msg, &sig))
            .map_err(|source| Error::BadSignature {
                device: *self,
                source,
            })
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.to_peer_id_bytes()).into_string())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

impl FromStr for DeviceId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.len() > MAX_DEVICE_ID_TEXT_LEN {
            return Err(Error::TooLong {
                len: s.len(),
                max: MAX_DEVICE_ID_TEXT_LEN,
            });
        }
        // base58 never decodes to more bytes than it has characters.
        let mut buf = [0u8; MAX_DEVICE_ID_TEXT_LEN];
        let len = bs58::decode(s).onto(&mut buf[..])?;
        if let Some(id) = Self::from_peer_id_bytes(&buf[..len]) {
            return id;
        }
        // Every ed25519 peer id starts with these characters, so text that
        // does not is another kind of id (RSA "Qm…", secp256k1 "16Uiu2…"),
        // while text that does but decodes to the wrong size was cut or padded.
        if !s.starts_with(ED25519_TEXT_PREFIX) || len == PEER_ID_LEN {
            return Err(Error::Prefix);
        }
        Err(Error::Length {
            len,
            expected: PEER_ID_LEN,
        })
    }
}

serde_as_text!(
    DeviceId,
    "a device id (an ed25519 libp2p peer id, 12D3KooW…)"
);

/// An ed25519 signature (64 bytes).
///
/// It is plain data: it proves nothing until checked with [`DeviceId::verify`].
/// Serde writes it as a byte string.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Length of a signature.
    pub const LEN: usize = 64;

    /// Wraps 64 signature bytes.
    pub fn from_bytes(bytes: &[u8; 64]) -> Self {
        Self(*bytes)
    }

    /// The 64 signature bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    /// The 64 signature bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signature({}…)",
            data_encoding::HEXLOWER.encode(&self.0[..8])
        )
    }
}

impl serde::Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(SignatureVisitor)
    }
}

struct SignatureVisitor;

impl<'de> serde::de::Visitor<'de> for SignatureVisitor {
    type Value = Signature;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("64 signature bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
        let bytes: [u8; 64] = v
            .try_into()
            .map_err(|_| E::invalid_length(v.len(), &self))?;
        Ok(Signature(bytes))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
        // Self-describing formats (JSON) write bytes as a sequence of numbers.
        let mut bytes = [0u8; 64];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(serde::de::Error::invalid_length(65, &self));
        }
        Ok(Signature(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn hex32(s: &str) -> [u8; 32] {
        data_encoding::HEXLOWER
            .decode(s.as_bytes())
            .unwrap()
            .try_into()
            .unwrap()
    }

    /// Test vector from the libp2p peer-ids specification.
    #[test]
    fn device_id_text_matches_libp2p_spec_vector() {
        let key = DeviceKey::from_bytes(&hex32(
            "7e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d",
        ));
        let id = key.id();
        assert_eq!(
            id.as_bytes(),
            &hex32("1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e")
        );
        assert_eq!(
            id.to_string(),
            "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
        );
        assert_eq!(
            "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
                .parse::<DeviceId>()
                .unwrap(),
            id
        );
    }

    #[test]
    fn generated_ids_round_trip_through_text_and_start_like_peer_ids() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let id = DeviceKey::generate(&mut rng).id();
            let text = id.to_string();
            assert!(text.starts_with("12D3KooW"), "{text}");
            assert_eq!(text.len(), 52);
            assert_eq!(text.parse::<DeviceId>().unwrap(), id);
            assert_eq!(DeviceId::from_bytes(id.as_bytes()).unwrap(), id);
        }
        // The text prefix holds at both ends of the key range too.
        for fill in [0x00, 0xff] {
            let mut raw = [fill; PEER_ID_LEN];
            raw[..6].copy_from_slice(&PEER_ID_PREFIX);
            assert!(
                bs58::encode(raw)
                    .into_string()
                    .starts_with(ED25519_TEXT_PREFIX)
            );
        }
    }

    #[test]
    fn key_bytes_round_trip_to_the_same_identity() {
        let mut rng = StdRng::seed_from_u64(2);
        let key = DeviceKey::generate(&mut rng);
        let again = DeviceKey::from_bytes(&key.to_bytes());
        assert_eq!(again.id(), key.id());
        assert_eq!(again.sign(b"m"), key.sign(b"m"));
    }

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let mut rng = StdRng::seed_from_u64(3);
        let a = DeviceKey::generate(&mut rng);
        let b = DeviceKey::generate(&mut rng);
        let sig = a.sign(b"hello");
        assert!(a.id().verify(b"hello", &sig).is_ok());
        assert!(matches!(
            a.id().verify(b"hellO", &sig),
            Err(Error::BadSignature { device, .. }) if device == a.id()
        ));
        assert!(b.id().verify(b"hello", &sig).is_err());
        let mut bytes = sig.to_bytes();
        bytes[40] ^= 1;
        assert!(
            a.id()
                .verify(b"hello", &Signature::from_bytes(&bytes))
                .is_err()
        );
    }

    #[test]
    fn malleated_signature_is_refused() {
        // Adding the group order L to S gives a signature lax verifiers accept.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut rng = StdRng::seed_from_u64(4);
        let key = DeviceKey::generate(&mut rng);
        let mut bytes = key.sign(b"m").to_bytes();
        let mut carry = 0u16;
        for (s, l) in bytes[32..].iter_mut().zip(L) {
            let sum = u16::from(*s) + u16::from(l) + carry;
            *s = sum as u8;
            carry = sum >> 8;
        }
        assert!(
            key.id()
                .verify(b"m", &Signature::from_bytes(&bytes))
                .is_err()
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let seed = [7u8; 32];
        let key = DeviceKey::from_bytes(&seed);
        let debug = format!("{key:?}");
        assert!(debug.contains(&key.id().to_string()));
        assert!(!debug.contains(&data_encoding::HEXLOWER.encode(&seed)));
        assert!(!debug.contains("7, 7, 7"));
    }

    #[test]
    fn bad_text_gives_a_specific_error() {
        let mut rng = StdRng::seed_from_u64(5);
        let good = DeviceKey::generate(&mut rng).id().to_string();

        let mut bad_char = good.clone();
        bad_char.replace_range(10..11, "0");
        assert!(matches!(
            bad_char.parse::<DeviceId>(),
            Err(Error::Base58(_))
        ));

        assert!(matches!(
            good[..30].parse::<DeviceId>(),
            Err(Error::Length { expected: 38, .. })
        ));
        assert!(matches!(
            "x".repeat(1000).parse::<DeviceId>(),
            Err(Error::TooLong { len: 1000, .. })
        ));
        // An RSA-style (sha256 multihash) peer id.
        assert!(matches!(
            "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N".parse::<DeviceId>(),
            Err(Error::Prefix)
        ));
        // 38 bytes with a secp256k1 key type in the protobuf header.
        let mut secp = [0u8; 38];
        secp[..6].copy_from_slice(&[0x00, 0x24, 0x08, 0x02, 0x12, 0x20]);
        let text = bs58::encode(secp).into_string();
        assert!(matches!(text.parse::<DeviceId>(), Err(Error::Prefix)));
        assert!(matches!("".parse::<DeviceId>(), Err(Error::Prefix)));
    }

    #[test]
    fn key_bytes_that_are_not_a_point_are_refused() {
        let with_key = |key: [u8; 32]| {
            let mut raw = [0u8; 38];
            raw[..6].copy_from_slice(&PEER_ID_PREFIX);
            raw[6..].copy_from_slice(&key);
            bs58::encode(raw).into_string()
        };
        // Roughly half of all y coordinates have no matching x.
        let not_a_point = (2u8..=255)
            .map(|y| {
                let mut k = [0u8; 32];
                k[0] = y;
                k
            })
            .find(|k| VerifyingKey::from_bytes(k).is_err())
            .unwrap();
        assert!(matches!(
            with_key(not_a_point).parse::<DeviceId>(),
            Err(Error::InvalidKey(_))
        ));

        // The identity point (y = 1) has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            with_key(identity).parse::<DeviceId>(),
            Err(Error::WeakKey)
        ));

        // y = p + 1 (non-canonical encoding of the identity point).
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        assert!(matches!(
            DeviceId::from_bytes(&non_canonical),
            Err(Error::NonCanonicalKey)
        ));
    }

    #[test]
    fn serde_uses_the_text_form() {
        let id = DeviceKey::from_bytes(&[9u8; 32]).id();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<DeviceId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<DeviceId>("\"12D3KooWnope\"").is_err());

        let bin = postcard::to_stdvec(&id).unwrap();
        assert_eq!(postcard::from_bytes::<DeviceId>(&bin).unwrap(), id);
    }

    #[test]
    fn signature_serde_round_trips_in_binary_and_json() {
        let sig = DeviceKey::from_bytes(&[3u8; 32]).sign(b"x");
        let bin = postcard::to_stdvec(&sig).unwrap();
        assert_eq!(bin.len(), 65);
        assert_eq!(postcard::from_bytes::<Signature>(&bin).unwrap(), sig);
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
        assert!(postcard::from_bytes::<Signature>(&bin[..40]).is_err());
    }

    #[test]
    fn ids_order_by_key_bytes() {
        let mut rng = StdRng::seed_from_u64(6);
        let mut ids: Vec<DeviceId> = (0..20)
            .map(|_| DeviceKey::generate(&mut rng).id())
            .collect();
        ids.sort();
        assert!(ids.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()));
    }
}
