//! CouchDB-style revisions: `"N-<32 lowercase hex>"`.
//!
//! `N` counts the edits that led to this state; the hex is the first 16 bytes
//! of a keyed BLAKE3 digest of the previous revision and the canonical JSON of
//! the new content (which includes `_id`, not `_rev`). The digest makes two
//! replicas that make the same edit from the same revision agree on the new
//! revision, and makes different edits disagree.
//!
//! Three digests exist, told apart by a leading tag byte:
//! - `put`: a write from `prev` (empty for a create) to the new content;
//! - `delete`: the tombstone revision returned when `prev` is deleted;
//! - `merge`: the revision a replica shows for a record whose `_rev` was set
//!   concurrently by several replicas (see the collection docs). It is a pure
//!   function of the conflicting revisions and the merged content, so every
//!   replica computes the same one without writing anything.

use std::io::{self, Write};

use serde_json::{Map, Value};

use crate::record::{self, MAX_RECORD_BYTES, REV_KEY};

const CONTEXT: &str = "hearth-crdt 2025-06 record revision v1";
const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_MERGE: u8 = 3;
const HEX_LEN: usize = 32;

/// Splits a well-formed revision into its generation and digest.
pub(crate) fn parse(rev: &str) -> Option<(u64, &str)> {
    let (generation, hex) = rev.split_once('-')?;
    if generation.is_empty()
        || !generation.bytes().all(|b| b.is_ascii_digit())
        || (generation.len() > 1 && generation.starts_with('0'))
        || hex.len() != HEX_LEN
        || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let generation: u64 = generation.parse().ok()?;
    (generation > 0).then_some((generation, hex))
}

fn generation(rev: Option<&str>) -> u64 {
    rev.and_then(parse).map_or(0, |(n, _)| n)
}

/// The revision of `fields` (a record including `_id`) written over `prev`.
/// Fails when the record's canonical JSON exceeds [`MAX_RECORD_BYTES`].
pub(crate) fn next(
    prev: Option<&str>,
    fields: &Map<String, Value>,
) -> Result<String, record::Error> {
    let mut digest = Digest::new(TAG_PUT, MAX_RECORD_BYTES);
    digest.string(prev.unwrap_or(""));
    digest.fields(fields)?;
    Ok(digest.finish(generation(prev).saturating_add(1)))
}

/// The tombstone revision reported when the record at `prev` is deleted.
pub(crate) fn tombstone(prev: &str) -> String {
    let mut digest = Digest::new(TAG_DELETE, usize::MAX);
    digest.string(prev);
    digest.finish(generation(Some(prev)).saturating_add(1))
}

/// The revision shown for content whose `_rev` was set concurrently to each
/// of `revs` (sorted and deduplicated by the caller).
pub(crate) fn merged(revs: &[String], fields: &Map<String, Value>) -> String {
    let mut digest = Digest::new(TAG_MERGE, usize::MAX);
    digest.hasher.update(&(revs.len() as u64).to_le_bytes());
    for rev in revs {
        digest.string(rev);
    }
    // Unbounded limit: the content already lives in a document.
    let _ = digest.fields(fields);
    let top = revs.iter().map(|r| generation(Some(r))).max().unwrap_or(0);
    digest.finish(top.saturating_add(1))
}

/// The revision shown for stored content that has no usable `_rev` (written by
/// another Automerge client): the revision a create of that content gets.
pub(crate) fn derived(fields: &Map<String, Value>) -> String {
    let mut digest = Digest::new(TAG_PUT, usize::MAX);
    digest.string("");
    let _ = digest.fields(fields);
    digest.finish(1)
}

struct Digest {
    hasher: blake3::Hasher,
    written: usize,
    limit: usize,
}

impl Digest {
    fn new(tag: u8, limit: usize) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(CONTEXT);
        hasher.update(&[tag]);
        Self {
            hasher,
            written: 0,
            limit,
        }
    }

    /// Length-prefixed, so that no two field sequences hash alike.
    fn string(&mut self, s: &str) {
        self.hasher.update(&(s.len() as u64).to_le_bytes());
        self.hasher.update(s.as_bytes());
    }

    fn fields(&mut self, fields: &Map<String, Value>) -> Result<(), record::Error> {
        record::write_canonical_fields(&mut *self, fields, |k| k != REV_KEY).map_err(|_| {
            record::Error::TooLarge {
                len: self.written,
                max: self.limit,
            }
        })
    }

    fn finish(self, generation: u64) -> String {
        let hex = self.hasher.finalize().to_hex();
        format!("{generation}-{}", &hex[..HEX_LEN])
    }
}

impl Write for Digest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.limit {
            return Err(io::Error::other("record exceeds the size limit"));
        }
        self.hasher.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn revisions_have_the_couchdb_shape_and_count_edits() {
        let r1 = next(None, &fields(json!({"_id": "a", "n": 1}))).unwrap();
        let (n, hex) = parse(&r1).unwrap();
        assert_eq!(n, 1);
        assert_eq!(hex.len(), 32);
        let r2 = next(Some(&r1), &fields(json!({"_id": "a", "n": 2}))).unwrap();
        assert_eq!(parse(&r2).unwrap().0, 2);
        assert!(tombstone(&r2).starts_with("3-"));
    }

    #[test]
    fn revision_depends_on_previous_rev_and_content_but_not_on_rev_field() {
        let a = fields(json!({"_id": "a", "n": 1}));
        let with_rev = fields(json!({"_id": "a", "n": 1, "_rev": "7-x"}));
        let r1 = next(None, &a).unwrap();
        assert_eq!(r1, next(None, &with_rev).unwrap());
        assert_ne!(
            r1,
            next(None, &fields(json!({"_id": "a", "n": 1.0}))).unwrap()
        );
        assert_ne!(
            r1,
            next(None, &fields(json!({"_id": "b", "n": 1}))).unwrap()
        );
        let r2 = next(Some(&r1), &a).unwrap();
        assert_ne!(r2, next(Some(&r2), &a).unwrap());
    }

    #[test]
    fn malformed_revisions_do_not_parse() {
        for bad in [
            "",
            "1",
            "0-0123456789abcdef0123456789abcdef",
            "01-0123456789abcdef0123456789abcdef",
            "1-0123456789ABCDEF0123456789abcdef",
            "1-0123",
            "x-0123456789abcdef0123456789abcdef",
            "99999999999999999999999-0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn oversized_records_are_refused() {
        let big = fields(json!({"_id": "a", "s": "x".repeat(MAX_RECORD_BYTES)}));
        assert!(matches!(
            next(None, &big),
            Err(record::Error::TooLarge {
                max: MAX_RECORD_BYTES,
                ..
            })
        ));
    }

    #[test]
    fn merged_revision_is_above_every_conflicting_generation() {
        let f = fields(json!({"_id": "a"}));
        let revs = vec![
            "2-0123456789abcdef0123456789abcdef".to_owned(),
            "5-0123456789abcdef0123456789abcdef".to_owned(),
        ];
        assert!(merged(&revs, &f).starts_with("6-"));
    }
}
