//! Composite keys of the store's tables, encoded so that byte order is the
//! logical order.
//!
//! redb compares `&[u8]` keys lexicographically, so every composite key is
//! built from parts that sort correctly as bytes:
//!
//! - a collection name is written as its UTF-8 length (`u16`, big-endian)
//!   followed by its bytes. The length prefix means one collection's keys are
//!   never a prefix of another's (`"ab"` and `"abc"` differ in their first two
//!   bytes), so a prefix scan of one collection never reaches into another;
//! - a peer device is a [`DeviceId`] written the same way, as the length and
//!   bytes of its text form (the base58 libp2p peer id, `12D3KooW…`). That is
//!   the layout stores have always had, so a store written before the keys
//!   took a typed id still reads;
//! - integers are big-endian, so they sort numerically.
//!
//! `‖` is concatenation; `name` is a collection name, `peer` a peer's id text.
//!
//! | table | row | key | built by |
//! |---|---|---|---|
//! | `chunks-1` | one Automerge chunk of a shard | `name_len:u16 ‖ name ‖ shard:u16 ‖ seq:u64` | [`chunk_key`], prefixes [`chunk_prefix`], [`shard_prefix`] |
//! | `changes-2` | one changed record of a collection's feed | `name_len:u16 ‖ name ‖ seq:u64` | [`change_key`], prefix [`change_prefix`] |
//! | `changes-1` | legacy feed row (one per commit), read only by the migration | the same as `changes-2` | [`change_key`] |
//! | `peers-1` | when the peer was last seen | `peer_len:u16 ‖ peer ‖ 0x00` | [`peer_seen_key`] |
//! | `peers-1` | sync state with the peer for one shard of one collection | `peer_len:u16 ‖ peer ‖ 0x01 ‖ name_len:u16 ‖ name ‖ shard:u16` | [`peer_sync_key`], decoded by [`decode_peer_sync_key`] |
//! | `peers-1` | addresses where the peer was last reached | `peer_len:u16 ‖ peer ‖ 0x02` | [`peer_addrs_key`] |
//! | `collections-1` | a collection's catalog entry | `name` (raw UTF-8) | |
//! | `meta-1` | a device setting | `name` (raw UTF-8) | |
//!
//! Every row of one peer starts with [`peer_prefix`], so one prefix scan reads
//! them all; the tag byte after it tells the kinds apart.

use hearth_crypto::identity::DeviceId;

/// The longest collection name, in UTF-8 bytes, that a key can carry.
pub const MAX_COLLECTION_NAME_LEN: usize = 1024;

/// Errors from encoding or decoding a composite key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The collection name is longer than [`MAX_COLLECTION_NAME_LEN`].
    #[error("collection name is {len} bytes long, at most {max} allowed")]
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key has the wrong length or shape for its table.
    #[error("malformed {kind} key ({len} bytes)")]
    Malformed {
        /// Which kind of key was being decoded (`chunk`, `change`).
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The collection name inside the key is not UTF-8.
    #[error("collection name in {kind} key is not utf-8")]
    NotUtf8 {
        /// Which kind of key was being decoded.
        kind: &'static str,
    },
}

/// A decoded key of the `chunks-1` table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkKey {
    /// The collection the chunk belongs to.
    pub collection: String,
    /// The shard (Automerge document) of that collection.
    pub shard: u16,
    /// The chunk's position in that shard's sequence.
    pub seq: u64,
}

/// A decoded key of the `changes-1` table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeKey {
    /// The collection whose feed this is.
    pub collection: String,
    /// The change's sequence number in that feed.
    pub seq: u64,
}

fn push_name(out: &mut Vec<u8>, collection: &str) -> Result<(), Error> {
    let len = collection.len();
    let len16 = u16::try_from(len)
        .ok()
        .filter(|_| len <= MAX_COLLECTION_NAME_LEN)
        .ok_or(Error::NameTooLong {
            len,
            max: MAX_COLLECTION_NAME_LEN,
        })?;
    out.extend_from_slice(&len16.to_be_bytes());
    out.extend_from_slice(collection.as_bytes());
    Ok(())
}

/// Splits a length-prefixed name off the front of `key`.
fn split_name<'k>(key: &'k [u8], kind: &'static str) -> Result<(&'k str, &'k [u8]), Error> {
    let malformed = Error::Malformed {
        kind,
        len: key.len(),
    };
    let (len, rest) = key.split_first_chunk::<2>().ok_or(malformed.clone())?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len > MAX_COLLECTION_NAME_LEN || rest.len() < len {
        return Err(malformed);
    }
    let (name, rest) = rest.split_at(len);
    let name = std::str::from_utf8(name).map_err(|_| Error::NotUtf8 { kind })?;
    Ok((name, rest))
}

/// The prefix shared by every key of `collection` in `chunks-1` and `changes-1`.
pub fn collection_prefix(collection: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(2 + collection.len());
    push_name(&mut out, collection)?;
    Ok(out)
}

/// The key of chunk `seq` of `shard` of `collection` in `chunks-1`.
pub fn chunk_key(collection: &str, shard: u16, seq: u64) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(2 + collection.len() + 10);
    push_name(&mut out, collection)?;
    out.extend_from_slice(&shard.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    Ok(out)
}

/// The prefix of every chunk of `collection` (all shards) in `chunks-1`.
pub fn chunk_prefix(collection: &str) -> Result<Vec<u8>, Error> {
    collection_prefix(collection)
}

/// The prefix of every chunk of one shard of `collection` in `chunks-1`.
pub fn shard_prefix(collection: &str, shard: u16) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(2 + collection.len() + 2);
    push_name(&mut out, collection)?;
    out.extend_from_slice(&shard.to_be_bytes());
    Ok(out)
}

/// Tags of the `peers-1` row kinds, the byte after [`peer_prefix`].
const PEER_SEEN: u8 = 0;
const PEER_SYNC: u8 = 1;
const PEER_ADDRS: u8 = 2;

/// The prefix of every `peers-1` row of one peer device.
///
/// Infallible: a device id's text is at most
/// [`hearth_crypto::identity::MAX_DEVICE_ID_TEXT_LEN`] bytes.
pub fn peer_prefix(peer: &DeviceId) -> Vec<u8> {
    let text = peer.to_string();
    let len = u16::try_from(text.len()).expect("a device id's text fits a u16 length");
    let mut out = Vec::with_capacity(2 + text.len() + 1);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// The `peers-1` key of when `peer` was last seen.
pub fn peer_seen_key(peer: &DeviceId) -> Vec<u8> {
    let mut out = peer_prefix(peer);
    out.push(PEER_SEEN);
    out
}

/// The `peers-1` key of the addresses where `peer` was last reached.
pub fn peer_addrs_key(peer: &DeviceId) -> Vec<u8> {
    let mut out = peer_prefix(peer);
    out.push(PEER_ADDRS);
    out
}

/// The `peers-1` key of the sync state `peer` and this device share for one
/// shard of `collection`.
pub fn peer_sync_key(peer: &DeviceId, collection: &str, shard: u16) -> Result<Vec<u8>, Error> {
    let mut out = peer_prefix(peer);
    out.push(PEER_SYNC);
    push_name(&mut out, collection)?;
    out.extend_from_slice(&shard.to_be_bytes());
    Ok(out)
}

/// Decodes the collection and shard of a [`peer_sync_key`]; `None` for the
/// other rows of the peer.
pub fn decode_peer_sync_key(key: &[u8]) -> Result<Option<(String, u16)>, Error> {
    let (_, rest) = split_name(key, "peer")?;
    match rest.split_first() {
        Some((&PEER_SYNC, rest)) => {
            let (name, rest) = split_name(rest, "peer sync")?;
            let shard: [u8; 2] = rest.try_into().map_err(|_| Error::Malformed {
                kind: "peer sync",
                len: key.len(),
            })?;
            Ok(Some((name.to_string(), u16::from_be_bytes(shard))))
        }
        _ => Ok(None),
    }
}

/// Decodes a `chunks-1` key.
pub fn decode_chunk_key(key: &[u8]) -> Result<ChunkKey, Error> {
    let (collection, rest) = split_name(key, "chunk")?;
    let malformed = || Error::Malformed {
        kind: "chunk",
        len: key.len(),
    };
    let rest: &[u8; 10] = rest.try_into().map_err(|_| malformed())?;
    let (shard, seq) = rest.split_at(2);
    let shard = u16::from_be_bytes(shard.try_into().map_err(|_| malformed())?);
    let seq = u64::from_be_bytes(seq.try_into().map_err(|_| malformed())?);
    Ok(ChunkKey {
        collection: collection.to_owned(),
        shard,
        seq,
    })
}

/// The key of change `seq` of `collection` in `changes-1`.
pub fn change_key(collection: &str, seq: u64) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(2 + collection.len() + 8);
    push_name(&mut out, collection)?;
    out.extend_from_slice(&seq.to_be_bytes());
    Ok(out)
}

/// The prefix of every change of `collection` in `changes-1`.
pub fn change_prefix(collection: &str) -> Result<Vec<u8>, Error> {
    collection_prefix(collection)
}

/// Decodes a `changes-1` key.
pub fn decode_change_key(key: &[u8]) -> Result<ChangeKey, Error> {
    let (collection, rest) = split_name(key, "change")?;
    let seq: [u8; 8] = rest.try_into().map_err(|_| Error::Malformed {
        kind: "change",
        len: key.len(),
    })?;
    Ok(ChangeKey {
        collection: collection.to_owned(),
        seq: u64::from_be_bytes(seq),
    })
}

/// The smallest byte string greater than every string that starts with
/// `prefix`, or `None` when no such string exists (empty or all-`0xff` prefix),
/// in which case a prefix scan runs to the end of the table.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_crypto::identity::DeviceKey;
    use proptest::prelude::*;

    fn peer() -> DeviceId {
        DeviceKey::from_bytes(&[7; 32]).id()
    }

    #[test]
    fn peer_sync_keys_round_trip_and_stay_under_their_peer() {
        let key = peer_sync_key(&peer(), "io.cozy.notes", 7).unwrap();
        assert!(key.starts_with(&peer_prefix(&peer())));
        assert_eq!(
            decode_peer_sync_key(&key).unwrap(),
            Some(("io.cozy.notes".to_string(), 7))
        );
        assert_eq!(decode_peer_sync_key(&peer_seen_key(&peer())).unwrap(), None);
        assert_eq!(
            decode_peer_sync_key(&peer_addrs_key(&peer())).unwrap(),
            None
        );
        assert!(decode_peer_sync_key(&key[..key.len() - 1]).is_err());
    }

    /// Stores written when these keys were built from the id's text must still
    /// read: the bytes are pinned, not recomputed through the same code.
    #[test]
    fn peer_keys_keep_the_layout_stores_were_written_with() {
        let text = peer().to_string();
        // The id text the old callers passed (`peer.to_string()`).
        assert_eq!(text, "12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7");
        let mut prefix = vec![0, 52];
        prefix.extend_from_slice(text.as_bytes());
        assert_eq!(peer_prefix(&peer()), prefix);
        assert_eq!(peer_seen_key(&peer()), [&prefix[..], &[0]].concat());
        assert_eq!(peer_addrs_key(&peer()), [&prefix[..], &[2]].concat());
        assert_eq!(
            peer_sync_key(&peer(), "ab", 0x0102).unwrap(),
            [&prefix[..], &[1, 0, 2, b'a', b'b', 1, 2]].concat()
        );
    }

    #[test]
    fn chunk_key_roundtrips_and_starts_with_its_prefixes() {
        let key = chunk_key("io.cozy.contacts", 3, 42).unwrap();
        assert!(key.starts_with(&chunk_prefix("io.cozy.contacts").unwrap()));
        assert!(key.starts_with(&shard_prefix("io.cozy.contacts", 3).unwrap()));
        assert!(!key.starts_with(&shard_prefix("io.cozy.contacts", 4).unwrap()));
        assert_eq!(
            decode_chunk_key(&key).unwrap(),
            ChunkKey {
                collection: "io.cozy.contacts".into(),
                shard: 3,
                seq: 42
            }
        );
    }

    #[test]
    fn one_collections_prefix_never_matches_a_longer_name() {
        let short = change_prefix("ab").unwrap();
        assert!(!change_key("abc", 0).unwrap().starts_with(&short));
        assert!(!chunk_key("abc", 0, 0).unwrap().starts_with(&short));
    }

    #[test]
    fn over_long_names_are_refused() {
        let name = "x".repeat(MAX_COLLECTION_NAME_LEN + 1);
        assert_eq!(
            chunk_key(&name, 0, 0),
            Err(Error::NameTooLong {
                len: MAX_COLLECTION_NAME_LEN + 1,
                max: MAX_COLLECTION_NAME_LEN
            })
        );
        assert!(change_key(&name[1..], 0).is_ok());
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        for bad in [&b""[..], &[0], &[0, 5, b'a'], &[0, 1, b'a', 0, 0, 0]] {
            assert!(decode_chunk_key(bad).is_err());
            assert!(decode_change_key(bad).is_err());
        }
        let mut chunk = chunk_key("a", 1, 2).unwrap();
        assert!(decode_change_key(&chunk).is_err());
        chunk.push(0);
        assert!(decode_chunk_key(&chunk).is_err());
        assert_eq!(
            decode_change_key(&[0, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(Error::NotUtf8 { kind: "change" })
        );
    }

    #[test]
    fn prefix_end_bounds_exactly_the_prefixed_keys() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }

    proptest! {
        #[test]
        fn chunk_key_bytes_sort_like_their_fields(
            a in ("[a-z.]{0,6}", any::<u16>(), any::<u64>()),
            b in ("[a-z.]{0,6}", any::<u16>(), any::<u64>()),
        ) {
            let ka = chunk_key(&a.0, a.1, a.2).unwrap();
            let kb = chunk_key(&b.0, b.1, b.2).unwrap();
            // Within one collection, bytes order by (shard, seq).
            if a.0 == b.0 {
                prop_assert_eq!(ka.cmp(&kb), (a.1, a.2).cmp(&(b.1, b.2)));
            }
            prop_assert_eq!(decode_chunk_key(&ka).unwrap(), ChunkKey { collection: a.0, shard: a.1, seq: a.2 });
        }

        #[test]
        fn change_key_bytes_sort_by_seq_and_roundtrip(name in "\\PC{0,8}", s1 in any::<u64>(), s2 in any::<u64>()) {
            let k1 = change_key(&name, s1).unwrap();
            let k2 = change_key(&name, s2).unwrap();
            prop_assert_eq!(k1.cmp(&k2), s1.cmp(&s2));
            prop_assert_eq!(decode_change_key(&k1).unwrap().seq, s1);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_chunk_key(&bytes);
            let _ = decode_change_key(&bytes);
        }

        #[test]
        fn prefix_end_is_above_every_extension(prefix in proptest::collection::vec(any::<u8>(), 0..6), tail in proptest::collection::vec(any::<u8>(), 0..6)) {
            let mut key = prefix.clone();
            key.extend_from_slice(&tail);
            if let Some(end) = prefix_end(&prefix) {
                prop_assert!(key < end);
                prop_assert!(prefix < end);
            }
        }
    }
}
