//! Authorship: which device vouches for a change, proven by its signature.
//!
//! A change of a shared collection is bound to the device that made it: the
//! device signs the change hash with its ed25519 key ([`Authorship::sign`]).
//! The signature cannot live inside the change (the hash covers every byte
//! of it), so it travels beside it: each shard keeps the authorships it
//! knows, persists them in its chunks ([`encode_block`], [`split_chunk`]),
//! and a sync message carries those of the changes it sends. A relay passes
//! the author's signature on unchanged, so a receiver checks the author,
//! never just the sender.
//!
//! A change's signer is normally its author (the device its actor names).
//! The owner of a shared collection also *endorses* changes of its own
//! account that carry no signature (written before the collection was
//! shared, or by a device that had not heard of the share yet): see
//! [`Signer::endorsing`]. Whether an endorsement counts is the gate's call.

use std::sync::Arc;

use automerge::ChangeHash;
use hearth_crypto::identity::{DeviceId, DeviceKey, Signature};
use serde::{Deserialize, Serialize};

use super::DecodeError;

/// What a device signs to vouch for a change: a domain tag, then the hash.
const DOMAIN: &[u8] = b"hearth change authorship v1\0";

/// Magic opening a block of authorships at the start of a persisted chunk
/// (an Automerge chunk opens with `85 6f 4a 83`, so the two never collide).
const BLOCK_MAGIC: [u8; 4] = *b"HSG1";

/// Bytes one authorship takes on the wire and on disk (postcard).
pub const AUTHORSHIP_BYTES: usize = 32 + 32 + 1 + Signature::LEN;

/// One device's signature over one change hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorship {
    /// The change's hash.
    pub hash: [u8; 32],
    /// The signing device's id (its public key).
    pub signer: [u8; 32],
    /// The signature over [`DOMAIN`] and the hash.
    pub signature: Signature,
}

impl Authorship {
    /// `key`'s signature over the change `hash`.
    pub fn sign(key: &DeviceKey, hash: &ChangeHash) -> Self {
        Self {
            hash: hash.0,
            signer: *key.id().as_bytes(),
            signature: key.sign(&message(&hash.0)),
        }
    }

    /// The change it vouches for.
    pub fn change(&self) -> ChangeHash {
        ChangeHash(self.hash)
    }

    /// The signer, once the signature checks out.
    pub fn verify(&self) -> Result<DeviceId, String> {
        DeviceId::verify_from_bytes(&self.signer, &message(&self.hash), &self.signature).map_err(
            |e| match e {
                hearth_crypto::identity::Error::BadSignature { .. } => {
                    format!("a forged signature on change {}", self.change())
                }
                other => format!("an authorship whose signer is no device key: {other}"),
            },
        )
    }
}

fn message(hash: &[u8; 32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(DOMAIN.len() + hash.len());
    bytes.extend_from_slice(DOMAIN);
    bytes.extend_from_slice(hash);
    bytes
}

/// What signs a collection's changes, set by the node on shared collections
/// ([`super::Collection::set_signer`]).
#[derive(Clone)]
pub struct Signer {
    key: Arc<DeviceKey>,
    endorse: bool,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("device", &self.key.id())
            .field("endorse", &self.endorse)
            .finish()
    }
}

impl Signer {
    /// Signs this replica's own changes.
    pub fn author(key: Arc<DeviceKey>) -> Self {
        Self {
            key,
            endorse: false,
        }
    }

    /// Signs this replica's own changes and endorses every change it holds
    /// or merges that carries no signature (the owner's devices do this).
    pub fn endorsing(key: Arc<DeviceKey>) -> Self {
        Self { key, endorse: true }
    }

    /// Whether it endorses unsigned changes.
    pub fn endorses(&self) -> bool {
        self.endorse
    }

    /// Its signature over `hash`.
    pub fn sign(&self, hash: &ChangeHash) -> Authorship {
        Authorship::sign(&self.key, hash)
    }
}

/// A persisted block of authorships: magic, length (u32, little-endian),
/// then the postcard list. Empty for an empty list.
pub(crate) fn encode_block(list: &[Authorship]) -> Vec<u8> {
    if list.is_empty() {
        return Vec::new();
    }
    let body = postcard::to_allocvec(list).unwrap_or_default();
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&BLOCK_MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Splits a persisted chunk into the authorships its block holds (if it
/// opens with one) and the Automerge bytes after it.
pub(crate) fn split_chunk(chunk: &[u8]) -> Result<(Vec<Authorship>, &[u8]), DecodeError> {
    let Some(rest) = chunk.strip_prefix(&BLOCK_MAGIC) else {
        return Ok((Vec::new(), chunk));
    };
    let bad = |reason: &str| DecodeError::Authorship {
        reason: reason.to_owned(),
    };
    let (len, body) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("a truncated block length"))?;
    let len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
    if len > body.len() {
        return Err(bad("a block longer than its chunk"));
    }
    let (block, automerge) = body.split_at(len);
    let list: Vec<Authorship> =
        postcard::from_bytes(block).map_err(|e| bad(&format!("an unreadable block: {e}")))?;
    Ok((list, automerge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_tampered_one_does_not() {
        let key = DeviceKey::from_bytes(&[7; 32]);
        let hash = ChangeHash([3; 32]);
        let signed = Authorship::sign(&key, &hash);
        assert_eq!(signed.verify().unwrap(), key.id());
        let mut other = signed;
        other.hash[0] ^= 1;
        assert!(other.verify().unwrap_err().contains("forged"));
        let mut forged = signed;
        forged.signer = *DeviceKey::from_bytes(&[8; 32]).id().as_bytes();
        assert!(forged.verify().is_err());
    }

    #[test]
    fn a_block_round_trips_ahead_of_automerge_bytes_and_bad_blocks_are_errors() {
        let key = DeviceKey::from_bytes(&[7; 32]);
        let list = vec![
            Authorship::sign(&key, &ChangeHash([1; 32])),
            Authorship::sign(&key, &ChangeHash([2; 32])),
        ];
        let mut chunk = encode_block(&list);
        assert_eq!(chunk.len(), 8 + 1 + 2 * AUTHORSHIP_BYTES);
        chunk.extend_from_slice(&[0x85, 0x6f, 0x4a, 0x83, 9]);
        let (back, rest) = split_chunk(&chunk).unwrap();
        assert_eq!(back, list);
        assert_eq!(rest, &[0x85, 0x6f, 0x4a, 0x83, 9]);
        // No block: the bytes are all Automerge's.
        let (none, all) = split_chunk(&[0x85, 1, 2]).unwrap();
        assert!(none.is_empty());
        assert_eq!(all, &[0x85, 1, 2]);
        // A length past the end, and a truncated length.
        let mut long = encode_block(&list);
        long[4] = 0xff;
        long[5] = 0xff;
        assert!(split_chunk(&long).is_err());
        assert!(split_chunk(b"HSG1\x01").is_err());
    }
}
