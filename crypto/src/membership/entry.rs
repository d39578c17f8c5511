//! Membership entries, their canonical encoding, and the ids derived from it.
//!
//! An entry's canonical encoding is postcard of
//! `(op, author, parents, at_ms, signature)`, with device ids and hashes as raw
//! 32-byte arrays. The signature covers a context string followed by the
//! encoding of the first four fields; the [`EntryHash`] is blake3 of the whole
//! encoding. Hashes are always recomputed from the decoded fields, never taken
//! from the input, so two encodings that decode alike cannot get different
//! hashes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Error, MAX_ENTRY_BYTES, MAX_PARENTS, ParseIdError, validate_device_name};
use crate::identity::{DeviceId, DeviceKey, Signature};
use crate::text::serde_as_text;

/// Prefix of every signed message, so an entry signature can never be
/// mistaken for a signature over anything else the device key signs.
const SIGNING_CONTEXT: &[u8] = b"hearth/membership-entry/v1\0";

/// The blake3 hash of an entry's canonical encoding: its content address.
///
/// Text form: 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryHash([u8; 32]);

impl EntryHash {
    /// Wraps 32 hash bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(*bytes)
    }

    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({self})")
    }
}

impl FromStr for EntryHash {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        decode_32(
            s,
            "entry hash",
            "lowercase hex",
            64,
            &data_encoding::HEXLOWER_PERMISSIVE,
        )
        .map(Self)
    }
}

serde_as_text!(EntryHash, "an entry hash (64 hex digits)");

/// The id of an account: the hash of its genesis entry.
///
/// Text form: `acc_` followed by the 32 bytes in unpadded lowercase base32
/// (56 characters in all). Parsing accepts either case after the prefix.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId([u8; 32]);

impl AccountId {
    const PREFIX: &'static str = "acc_";

    /// The account founded by the genesis entry with this hash.
    pub fn from_genesis(hash: EntryHash) -> Self {
        Self(hash.0)
    }

    /// The hash of the account's genesis entry.
    pub fn genesis_hash(&self) -> EntryHash {
        EntryHash(self.0)
    }

    /// Wraps 32 id bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(*bytes)
    }

    /// The 32 id bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = data_encoding::BASE32_NOPAD
            .encode(&self.0)
            .to_ascii_lowercase();
        write!(f, "{}{body}", Self::PREFIX)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

impl FromStr for AccountId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        let body = s
            .strip_prefix(Self::PREFIX)
            .ok_or(ParseIdError::MissingPrefix)?;
        decode_32(
            body,
            "account id",
            "base32",
            52,
            &data_encoding::BASE32_NOPAD_NOCASE,
        )
        .map(Self)
    }
}

serde_as_text!(AccountId, "an account id (acc_…)");

/// Decodes text of a known length into 32 bytes, checking the length first
/// so no work is done on oversized input.
fn decode_32(
    text: &str,
    what: &'static str,
    alphabet: &'static str,
    expected: usize,
    encoding: &data_encoding::Encoding,
) -> Result<[u8; 32], ParseIdError> {
    if text.len() != expected {
        return Err(ParseIdError::Length {
            what,
            len: text.len(),
            expected,
        });
    }
    let mut out = [0u8; 32];
    encoding
        .decode_mut(text.as_bytes(), &mut out)
        .map_err(|partial| ParseIdError::Encoding {
            what,
            alphabet,
            source: partial.error,
        })?;
    Ok(out)
}

/// What an entry does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Founds the account; the author adds itself.
    Genesis {
        /// The founding device (the author).
        device: DeviceId,
        /// Its display name.
        name: String,
    },
    /// Adds a device.
    AddDevice {
        /// The new device.
        device: DeviceId,
        /// Its display name.
        name: String,
    },
    /// Removes a device, for good.
    RemoveDevice {
        /// The device removed.
        device: DeviceId,
    },
}

impl Op {
    /// The device the operation is about.
    pub fn device(&self) -> DeviceId {
        match self {
            Op::Genesis { device, .. } | Op::AddDevice { device, .. } => *device,
            Op::RemoveDevice { device } => *device,
        }
    }
}

/// One signed entry of a membership log.
///
/// An `Entry` value is always well-formed and correctly signed by its author:
/// the only ways to get one are [`Entry::sign`] and [`Entry::from_bytes`], which
/// check. Whether its author was *allowed* to write it is for [`super::Log`]
/// to decide.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    op: Op,
    author: DeviceId,
    parents: Vec<EntryHash>,
    at_ms: u64,
    signature: Signature,
    hash: EntryHash,
}

#[derive(Serialize, Deserialize)]
enum WireOp<'a> {
    Genesis { device: [u8; 32], name: &'a str },
    AddDevice { device: [u8; 32], name: &'a str },
    RemoveDevice { device: [u8; 32] },
}

#[derive(Serialize, Deserialize)]
struct WireUnsigned<'a> {
    #[serde(borrow)]
    op: WireOp<'a>,
    author: [u8; 32],
    parents: Vec<[u8; 32]>,
    at_ms: u64,
}

/// The canonical encoding of an entry, borrowed from either an [`Entry`] or
/// the input being decoded.
#[derive(Serialize, Deserialize)]
pub(super) struct WireEntry<'a> {
    #[serde(borrow)]
    unsigned: WireUnsigned<'a>,
    signature: Signature,
}

/// Encodes a value whose shape postcard always accepts. Postcard's
/// serializer fails only for sequences of unknown length or a full output
/// buffer; the wire types have neither, and the buffer is a growable `Vec`.
pub(super) fn to_postcard<T: Serialize>(value: &T, out: Vec<u8>) -> Vec<u8> {
    postcard::to_extend(value, out).expect("wire types always encode into a Vec")
}

impl Entry {
    /// Makes and signs an entry. `parents` are sorted and deduplicated. Checks
    /// the entry's shape (parent count, name, genesis rules), not whether the
    /// author may write it.
    pub fn sign(
        key: &DeviceKey,
        op: Op,
        mut parents: Vec<EntryHash>,
        at_ms: u64,
    ) -> Result<Entry, Error> {
        parents.sort_unstable();
        parents.dedup();
        check_shape(&op, key.id(), &parents)?;
        Ok(Self::sign_unchecked(key, op, parents, at_ms))
    }

    /// Signs without checking the shape; `parents` must already be sorted and
    /// unique.
    pub(super) fn sign_unchecked(
        key: &DeviceKey,
        op: Op,
        parents: Vec<EntryHash>,
        at_ms: u64,
    ) -> Entry {
        let author = key.id();
        let unsigned = wire_unsigned(&op, author, &parents, at_ms);
        let signature = key.sign(&signing_message(&unsigned));
        let hash = hash_wire(&WireEntry {
            unsigned,
            signature,
        });
        Entry {
            op,
            author,
            parents,
            at_ms,
            signature,
            hash,
        }
    }

    /// What the entry does.
    pub fn op(&self) -> &Op {
        &self.op
    }

    /// The device that signed it.
    pub fn author(&self) -> DeviceId {
        self.author
    }

    /// The entries it builds on, sorted.
    pub fn parents(&self) -> &[EntryHash] {
        &self.parents
    }

    /// The author's wall-clock time when signing, in ms since the Unix epoch.
    pub fn at_ms(&self) -> u64 {
        self.at_ms
    }

    /// The author's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The entry's content hash.
    pub fn hash(&self) -> EntryHash {
        self.hash
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_postcard(&self.wire(), Vec::new())
    }

    /// Decodes and verifies one entry: size bound, exact encoding (no trailing
    /// bytes), valid device ids and name, parent rules, and the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Entry, Error> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(Error::TooLarge {
                len: bytes.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        let (wire, rest): (WireEntry<'_>, _) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes { len: rest.len() });
        }
        Self::from_wire(wire)
    }

    pub(super) fn wire(&self) -> WireEntry<'_> {
        WireEntry {
            unsigned: wire_unsigned(&self.op, self.author, &self.parents, self.at_ms),
            signature: self.signature,
        }
    }

    pub(super) fn from_wire(wire: WireEntry<'_>) -> Result<Entry, Error> {
        let unsigned = &wire.unsigned;
        let op = match unsigned.op {
            WireOp::Genesis { device, name } => Op::Genesis {
                device: DeviceId::from_bytes(&device)?,
                name: checked_name(name)?,
            },
            WireOp::AddDevice { device, name } => Op::AddDevice {
                device: DeviceId::from_bytes(&device)?,
                name: checked_name(name)?,
            },
            WireOp::RemoveDevice { device } => Op::RemoveDevice {
                device: DeviceId::from_bytes(&device)?,
            },
        };
        let author = DeviceId::from_bytes(&unsigned.author)?;
        if unsigned.parents.len() > MAX_PARENTS {
            return Err(Error::TooManyParents {
                count: unsigned.parents.len(),
                max: MAX_PARENTS,
            });
        }
        if unsigned.parents.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::UnsortedParents);
        }
        let parents: Vec<EntryHash> = unsigned.parents.iter().map(EntryHash::from_bytes).collect();
        check_shape(&op, author, &parents)?;
        author
            .verify(&signing_message(unsigned), &wire.signature)
            .map_err(Error::BadSignature)?;
        Ok(Entry {
            op,
            author,
            parents,
            at_ms: unsigned.at_ms,
            signature: wire.signature,
            hash: hash_wire(&wire),
        })
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("hash", &self.hash)
            .field("op", &self.op)
            .field("author", &self.author)
            .field("parents", &self.parents)
            .field("at_ms", &self.at_ms)
            .finish_non_exhaustive()
    }
}

/// Serialized as its canonical encoding (a byte string); deserializing
/// verifies it as [`Entry::from_bytes`] does.
impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> serde::de::Visitor<'de> for EntryVisitor {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an encoded membership entry")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Entry, E> {
        Entry::from_bytes(v).map_err(E::custom)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Entry, A::Error> {
        // Self-describing formats write bytes as a sequence of numbers.
        let mut bytes = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            if bytes.len() == MAX_ENTRY_BYTES {
                return Err(serde::de::Error::custom(Error::TooLarge {
                    len: bytes.len() + 1,
                    max: MAX_ENTRY_BYTES,
                }));
            }
            bytes.push(b);
        }
        self.visit_bytes(&bytes)
    }
}

fn checked_name(name: &str) -> Result<String, Error> {
    validate_device_name(name)?;
    Ok(name.to_owned())
}

/// Entry-local rules, independent of any log.
fn check_shape(op: &Op, author: DeviceId, parents: &[EntryHash]) -> Result<(), Error> {
    if parents.len() > MAX_PARENTS {
        return Err(Error::TooManyParents {
            count: parents.len(),
            max: MAX_PARENTS,
        });
    }
    match op {
        Op::Genesis { device, name } => {
            if !parents.is_empty() {
                return Err(Error::GenesisWithParents);
            }
            if *device != author {
                return Err(Error::GenesisNotSelf);
            }
            validate_device_name(name)
        }
        Op::AddDevice { name, .. } => {
            if parents.is_empty() {
                return Err(Error::NoParents);
            }
            validate_device_name(name)
        }
        Op::RemoveDevice { .. } => {
            if parents.is_empty() {
                return Err(Error::NoParents);
            }
            Ok(())
        }
    }
}

fn wire_unsigned<'a>(
    op: &'a Op,
    author: DeviceId,
    parents: &[EntryHash],
    at_ms: u64,
) -> WireUnsigned<'a> {
    let op = match op {
        Op::Genesis { device, name } => WireOp::Genesis {
            device: *device.as_bytes(),
            name,
        },
        Op::AddDevice { device, name } => WireOp::AddDevice {
            device: *device.as_bytes(),
            name,
        },
        Op::RemoveDevice { device } => WireOp::RemoveDevice {
            device: *device.as_bytes(),
        },
    };
    WireUnsigned {
        op,
        author: *author.as_bytes(),
        parents: parents.iter().map(|p| p.0).collect(),
        at_ms,
    }
}

fn signing_message(unsigned: &WireUnsigned<'_>) -> Vec<u8> {
    to_postcard(unsigned, SIGNING_CONTEXT.to_vec())
}

fn hash_wire(wire: &WireEntry<'_>) -> EntryHash {
    EntryHash(*blake3::hash(&to_postcard(wire, Vec::new())).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn key(seed: u64) -> DeviceKey {
        DeviceKey::generate(&mut StdRng::seed_from_u64(seed))
    }

    fn genesis(k: &DeviceKey) -> Entry {
        Entry::sign(
            k,
            Op::Genesis {
                device: k.id(),
                name: "laptop".into(),
            },
            vec![],
            1000,
        )
        .unwrap()
    }

    #[test]
    fn entry_bytes_round_trip_with_the_same_hash() {
        let k = key(1);
        let g = genesis(&k);
        let add = Entry::sign(
            &k,
            Op::AddDevice {
                device: key(2).id(),
                name: "phone".into(),
            },
            vec![g.hash()],
            2000,
        )
        .unwrap();
        for e in [g, add] {
            let bytes = e.to_bytes();
            assert!(bytes.len() <= MAX_ENTRY_BYTES);
            let back = Entry::from_bytes(&bytes).unwrap();
            assert_eq!(back, e);
            assert_eq!(back.hash(), e.hash());
            assert_eq!(e.hash(), EntryHash(*blake3::hash(&bytes).as_bytes()));
        }
    }

    #[test]
    fn largest_entry_fits_the_size_bound() {
        let k = key(1);
        let parents: Vec<EntryHash> = (0..MAX_PARENTS as u8).map(|i| EntryHash([i; 32])).collect();
        let e = Entry::sign(
            &k,
            Op::AddDevice {
                device: key(2).id(),
                // Two bytes per character: exactly the byte limit.
                name: "é".repeat(super::super::MAX_DEVICE_NAME_LEN / 2),
            },
            parents,
            u64::MAX,
        )
        .unwrap();
        assert!(e.to_bytes().len() <= MAX_ENTRY_BYTES);
        assert_eq!(Entry::from_bytes(&e.to_bytes()).unwrap(), e);
    }

    #[test]
    fn any_changed_byte_breaks_the_entry() {
        let k = key(1);
        let bytes = genesis(&k).to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                Entry::from_bytes(&bad).is_err(),
                "flip at byte {i} accepted"
            );
        }
    }

    #[test]
    fn entry_signed_by_someone_else_fails_verification() {
        let k = key(1);
        let g = genesis(&k);
        let mut wire = g.wire();
        wire.signature = key(2).sign(b"anything");
        let bytes = to_postcard(&wire, Vec::new());
        assert!(matches!(
            Entry::from_bytes(&bytes),
            Err(Error::BadSignature(_))
        ));
    }

    #[test]
    fn shape_rules_are_enforced_when_signing() {
        let k = key(1);
        let g = genesis(&k);
        assert!(matches!(
            Entry::sign(
                &k,
                Op::Genesis {
                    device: key(2).id(),
                    name: "x".into()
                },
                vec![],
                0
            ),
            Err(Error::GenesisNotSelf)
        ));
        assert!(matches!(
            Entry::sign(
                &k,
                Op::Genesis {
                    device: k.id(),
                    name: "x".into()
                },
                vec![g.hash()],
                0
            ),
            Err(Error::GenesisWithParents)
        ));
        assert!(matches!(
            Entry::sign(&k, Op::RemoveDevice { device: k.id() }, vec![], 0),
            Err(Error::NoParents)
        ));
        assert!(matches!(
            Entry::sign(
                &k,
                Op::AddDevice {
                    device: key(2).id(),
                    name: "x".repeat(65)
                },
                vec![g.hash()],
                0
            ),
            Err(Error::NameTooLong { .. })
        ));
        let too_many: Vec<EntryHash> = (0..=MAX_PARENTS as u8)
            .map(|i| EntryHash([i; 32]))
            .collect();
        assert!(matches!(
            Entry::sign(&k, Op::RemoveDevice { device: k.id() }, too_many, 0),
            Err(Error::TooManyParents { count: 33, .. })
        ));
        let dup = Entry::sign(
            &k,
            Op::RemoveDevice { device: k.id() },
            vec![g.hash(), g.hash()],
            0,
        )
        .unwrap();
        assert_eq!(dup.parents(), &[g.hash()]);
    }

    #[test]
    fn unsorted_parents_on_the_wire_are_refused() {
        let k = key(1);
        let parents = vec![[2u8; 32], [1u8; 32]];
        let unsigned = WireUnsigned {
            op: WireOp::RemoveDevice {
                device: *k.id().as_bytes(),
            },
            author: *k.id().as_bytes(),
            parents,
            at_ms: 0,
        };
        let signature = k.sign(&signing_message(&unsigned));
        let bytes = to_postcard(
            &WireEntry {
                unsigned,
                signature,
            },
            Vec::new(),
        );
        assert!(matches!(
            Entry::from_bytes(&bytes),
            Err(Error::UnsortedParents)
        ));
    }

    #[test]
    fn oversized_and_trailing_input_is_refused() {
        let bytes = genesis(&key(1)).to_bytes();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Entry::from_bytes(&trailing),
            Err(Error::TrailingBytes { len: 1 })
        ));
        assert!(matches!(
            Entry::from_bytes(&vec![0u8; MAX_ENTRY_BYTES + 1]),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            Entry::from_bytes(&bytes[..bytes.len() - 1]),
            Err(Error::Encoding(_))
        ));
    }

    #[test]
    fn ids_have_stable_text_forms() {
        let hash = EntryHash([0xab; 32]);
        assert_eq!(hash.to_string(), "ab".repeat(32));
        assert_eq!(hash.to_string().parse::<EntryHash>().unwrap(), hash);
        assert_eq!("AB".repeat(32).parse::<EntryHash>().unwrap(), hash);

        let account = AccountId::from_genesis(EntryHash([0; 32]));
        assert_eq!(account.to_string(), format!("acc_{}", "a".repeat(52)));
        let account = AccountId::from_bytes(&[0x5c; 32]);
        let text = account.to_string();
        assert!(text.starts_with("acc_"));
        assert_eq!(text.len(), 56);
        assert_eq!(text, text.to_ascii_lowercase());
        assert_eq!(text.parse::<AccountId>().unwrap(), account);
        let upper = format!("acc_{}", text[4..].to_ascii_uppercase());
        assert_eq!(upper.parse::<AccountId>().unwrap(), account);
        assert_eq!(account.genesis_hash(), EntryHash([0x5c; 32]));
    }

    #[test]
    fn bad_id_text_gives_specific_errors() {
        assert_eq!("abc".parse::<AccountId>(), Err(ParseIdError::MissingPrefix));
        assert!(matches!(
            "acc_abc".parse::<AccountId>(),
            Err(ParseIdError::Length {
                len: 3,
                expected: 52,
                ..
            })
        ));
        assert!(matches!(
            format!("acc_{}", "1".repeat(52)).parse::<AccountId>(),
            Err(ParseIdError::Encoding { .. })
        ));
        // Non-zero trailing bits would give a second spelling of one id.
        assert!(matches!(
            format!("acc_{}b", "a".repeat(51)).parse::<AccountId>(),
            Err(ParseIdError::Encoding { .. })
        ));
        assert!(matches!(
            "zz".repeat(32).parse::<EntryHash>(),
            Err(ParseIdError::Encoding { .. })
        ));
        assert!(matches!(
            "ab".parse::<EntryHash>(),
            Err(ParseIdError::Length { .. })
        ));
    }

    #[test]
    fn ids_and_entries_serialize() {
        let account = AccountId::from_bytes(&[7; 32]);
        let json = serde_json::to_string(&account).unwrap();
        assert_eq!(json, format!("\"{account}\""));
        assert_eq!(serde_json::from_str::<AccountId>(&json).unwrap(), account);
        let hash = EntryHash([9; 32]);
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(serde_json::from_str::<EntryHash>(&json).unwrap(), hash);

        let g = genesis(&key(3));
        let bin = postcard::to_stdvec(&g).unwrap();
        assert_eq!(postcard::from_bytes::<Entry>(&bin).unwrap(), g);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), g);
    }
}
