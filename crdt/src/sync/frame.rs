//! The wire frames of `/hearth/sync/1`: a version byte, then a postcard enum.
//!
//! Decoding checks the frame size before anything else, bounds every count
//! while it decodes (a length prefix cannot make it allocate more than the
//! bound), refuses trailing bytes, and validates the `Hello` it returns.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{Error, Limits};
use crate::collection::{
    Authorship, EMPTY_SHARD_DIGEST, MAX_DOCTYPE_BYTES, MAX_SHARDS, ShardDigest, ShardIndex,
};

/// The first byte of every frame of this protocol version.
pub const FRAME_VERSION: u8 = 1;

/// Most collections one `Hello` may list.
pub const MAX_COLLECTIONS: usize = 4096;

/// Most change signatures one [`Frame::Sync`] may carry.
pub const MAX_AUTHORSHIPS: usize = 1 << 16;

/// One message of the sync protocol. See the [module docs](super).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The opening summary each side sends once.
    Hello(Hello),
    /// The sender's whole membership log, as `membership::Log::encode` gives it.
    Log {
        /// The encoded log.
        #[serde(with = "bytes")]
        bytes: Vec<u8>,
    },
    /// An Automerge sync message for one shard of one collection.
    Sync {
        /// The collection (doctype).
        collection: String,
        /// The collection's shard count on the sender, so that a receiver
        /// that lacks the collection can create it with the same count.
        shards: u16,
        /// The shard.
        shard: ShardIndex,
        /// The encoded `automerge::sync::Message`.
        #[serde(with = "bytes")]
        message: Vec<u8>,
        /// The signatures the sender holds for the changes the message
        /// carries (a shared collection's; empty otherwise).
        #[serde(deserialize_with = "bounded::<_, _, MAX_AUTHORSHIPS>")]
        signatures: Vec<Authorship>,
    },
    /// Every shard digest of one collection, sent when the collection
    /// digests of the two Hellos differ, so each side learns which shards to
    /// sync.
    Shards(Summary),
    /// A shared collection's credentials: its whole access list and what
    /// else the node needs to check its changes, encoded by the node (the
    /// session does not read them). Sent to a contact's device before any
    /// data of that collection, and again when it changes.
    Acl {
        /// The collection, by the name the session uses for it.
        collection: String,
        /// The encoded credentials.
        #[serde(with = "bytes")]
        bytes: Vec<u8>,
    },
}

/// What a `Hello` carries: enough to tell, without any Automerge work, which
/// shards and whether the membership logs differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// BLAKE3 over the sender's sorted membership log heads.
    pub log_digest: [u8; 32],
    /// Every collection of the sender, sorted by name.
    #[serde(deserialize_with = "bounded::<_, _, MAX_COLLECTIONS>")]
    pub collections: Vec<Summary>,
}

/// One collection in a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The collection's name (doctype).
    pub name: String,
    /// Its shard count.
    pub shards: u16,
    /// In a [`Frame::Shards`], [`crate::collection::Collection::shard_digest`]
    /// of every shard, in order. In a [`Hello`], only the collection digest
    /// ([`collection_digest`]) of those, which keeps an in-sync reconnect
    /// small.
    #[serde(deserialize_with = "bounded::<_, _, { MAX_SHARDS as usize }>")]
    pub digests: Vec<ShardDigest>,
}

impl Frame {
    /// The frame's bytes, refused when longer than `limits.max_frame`.
    pub fn encode(&self, limits: &Limits) -> Result<Vec<u8>, Error> {
        let out = postcard::to_extend(self, vec![FRAME_VERSION])?;
        if out.len() > limits.max_frame {
            return Err(Error::FrameTooLarge {
                len: out.len(),
                max: limits.max_frame,
            });
        }
        Ok(out)
    }

    /// Decodes and validates a frame. The size is checked before anything is
    /// decoded.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Frame, Error> {
        if bytes.len() > limits.max_frame {
            return Err(Error::FrameTooLarge {
                len: bytes.len(),
                max: limits.max_frame,
            });
        }
        let (&version, body) = bytes.split_first().ok_or(Error::EmptyFrame)?;
        if version != FRAME_VERSION {
            return Err(Error::UnsupportedVersion { version });
        }
        let (frame, rest): (Frame, _) = postcard::take_from_bytes(body)?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes { len: rest.len() });
        }
        match &frame {
            Frame::Hello(hello) => hello.validate()?,
            Frame::Shards(summary) => summary.validate_full()?,
            Frame::Sync {
                collection,
                shards,
                shard,
                ..
            } => {
                validate_name(collection)?;
                validate_shards(collection, *shards)?;
                if shard >= shards {
                    return Err(Error::NoSuchShard {
                        collection: collection.clone(),
                        shard: *shard,
                        shards: *shards,
                    });
                }
            }
            Frame::Acl { collection, .. } => validate_name(collection)?,
            Frame::Log { .. } => {}
        }
        Ok(frame)
    }
}

impl Hello {
    fn validate(&self) -> Result<(), Error> {
        for pair in self.collections.windows(2) {
            if pair[0].name >= pair[1].name {
                return Err(Error::UnsortedCollections);
            }
        }
        for summary in &self.collections {
            validate_name(&summary.name)?;
            validate_shards(&summary.name, summary.shards)?;
            if summary.digests.len() != 1 && summary.digests.len() != usize::from(summary.shards) {
                return Err(Error::DigestCount {
                    collection: summary.name.clone(),
                    shards: summary.shards,
                    digests: summary.digests.len(),
                });
            }
        }
        Ok(())
    }
}

impl Summary {
    /// Checks a [`Frame::Shards`]: a valid name and one digest per shard.
    pub(crate) fn validate_full(&self) -> Result<(), Error> {
        validate_name(&self.name)?;
        validate_shards(&self.name, self.shards)?;
        if self.digests.len() != usize::from(self.shards) {
            return Err(Error::DigestCount {
                collection: self.name.clone(),
                shards: self.shards,
                digests: self.digests.len(),
            });
        }
        Ok(())
    }
}

/// One digest for a whole collection: [`EMPTY_SHARD_DIGEST`] when every
/// shard is empty, else BLAKE3 over the shard digests in order.
pub fn collection_digest(shards: &[ShardDigest]) -> ShardDigest {
    if shards.iter().all(|d| *d == EMPTY_SHARD_DIGEST) {
        return EMPTY_SHARD_DIGEST;
    }
    let mut hasher = blake3::Hasher::new();
    for digest in shards {
        hasher.update(digest);
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    out
}

fn validate_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_DOCTYPE_BYTES {
        return Err(Error::BadCollectionName { len: name.len() });
    }
    Ok(())
}

fn validate_shards(collection: &str, shards: u16) -> Result<(), Error> {
    if shards == 0 || shards > MAX_SHARDS {
        return Err(Error::BadShardCount {
            collection: collection.to_owned(),
            shards,
        });
    }
    Ok(())
}

/// Deserializes a sequence, refusing more than `MAX` elements before
/// allocating for them.
fn bounded<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const MAX: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for Bounded<T, MAX> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "at most {MAX} elements")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let hint = seq.size_hint().unwrap_or(0);
            if hint > MAX {
                return Err(de::Error::invalid_length(hint, &self));
            }
            let mut out = Vec::with_capacity(hint);
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX {
                    return Err(de::Error::invalid_length(MAX + 1, &self));
                }
                out.push(item);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_seq(Bounded::<T, MAX>(PhantomData))
}

/// Byte strings as one length-prefixed run instead of a sequence of `u8`s,
/// which postcard would decode element by element.
mod bytes {
    use std::fmt;

    use serde::Serializer;
    use serde::de::{self, Deserializer, Visitor};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct Bytes;

        impl Visitor<'_> for Bytes {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }

        deserializer.deserialize_byte_buf(Bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn hello(names: &[&str], shards: u16) -> Frame {
        Frame::Hello(Hello {
            log_digest: [7; 32],
            collections: names
                .iter()
                .map(|n| Summary {
                    name: (*n).to_owned(),
                    shards,
                    digests: (0..shards).map(|i| [i as u8; 8]).collect(),
                })
                .collect(),
        })
    }

    #[test]
    fn frames_round_trip() {
        let limits = Limits::default();
        for frame in [
            hello(&["a", "b.c"], 16),
            Frame::Log {
                bytes: vec![1, 2, 3],
            },
            Frame::Acl {
                collection: "ab12".into(),
                bytes: vec![4, 5],
            },
            Frame::Sync {
                collection: "notes".into(),
                shards: 4,
                shard: 3,
                message: vec![9; 1000],
                signatures: vec![Authorship::sign(
                    &hearth_crypto::identity::DeviceKey::from_bytes(&[5; 32]),
                    &automerge::ChangeHash([6; 32]),
                )],
            },
        ] {
            let bytes = frame.encode(&limits).unwrap();
            assert_eq!(Frame::decode(&bytes, &limits).unwrap(), frame);
        }
    }

    #[test]
    fn a_hello_stays_small() {
        let bytes = hello(&["io.cozy.bank.operations"], 16)
            .encode(&Limits::default())
            .unwrap();
        // version, tag, digest, count, then one summary of about 155 bytes.
        assert!(bytes.len() < 34 + 1 + 160, "{}", bytes.len());
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        let limits = Limits::default();
        let good = hello(&["a"], 2).encode(&limits).unwrap();
        assert!(matches!(
            Frame::decode(&[], &limits),
            Err(Error::EmptyFrame)
        ));
        let mut wrong_version = good.clone();
        wrong_version[0] = 9;
        assert!(matches!(
            Frame::decode(&wrong_version, &limits),
            Err(Error::UnsupportedVersion { version: 9 })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            Frame::decode(&trailing, &limits),
            Err(Error::TrailingBytes { len: 1 })
        ));
        assert!(matches!(
            Frame::decode(&good[..good.len() - 1], &limits),
            Err(Error::Malformed(_))
        ));
        let small = Limits {
            max_frame: 8,
            ..Limits::default()
        };
        assert!(matches!(
            Frame::decode(&good, &small),
            Err(Error::FrameTooLarge { max: 8, .. })
        ));
        assert!(matches!(
            hello(&["b", "a"], 1)
                .encode(&limits)
                .map(|b| Frame::decode(&b, &limits)),
            Ok(Err(Error::UnsortedCollections))
        ));
        let sync = Frame::Sync {
            collection: "x".into(),
            shards: 2,
            shard: 2,
            message: Vec::new(),
            signatures: Vec::new(),
        };
        assert!(matches!(
            Frame::decode(&sync.encode(&limits).unwrap(), &limits),
            Err(Error::NoSuchShard { shard: 2, .. })
        ));
    }

    #[test]
    fn a_huge_claimed_count_is_refused_before_allocating() {
        // version, Hello tag, 32-byte digest, then a count of 2^32.
        let mut bytes = vec![FRAME_VERSION, 0];
        bytes.extend([0u8; 32]);
        bytes.extend([0x80, 0x80, 0x80, 0x80, 0x10]);
        assert!(matches!(
            Frame::decode(&bytes, &Limits::default()),
            Err(Error::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&bytes, &Limits::default());
            let mut versioned = vec![FRAME_VERSION];
            versioned.extend(&bytes);
            let _ = Frame::decode(&versioned, &Limits::default());
        }

        #[test]
        fn truncations_and_flips_never_panic(cut in 0usize..200, flip in 0usize..200, bit in 0u8..8) {
            let limits = Limits::default();
            let mut bytes = hello(&["a", "bb", "ccc"], 5).encode(&limits).unwrap();
            if flip < bytes.len() {
                bytes[flip] ^= 1 << bit;
            }
            bytes.truncate(cut.min(bytes.len()));
            let _ = Frame::decode(&bytes, &limits);
        }
    }
}
