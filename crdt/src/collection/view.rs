//! Reading records out of shard documents into the materialised view.
//!
//! Only a root entry that is a map, whose key is a valid id that hashes to
//! this shard, and that nests no deeper than the record limit is a record.
//! Anything else other writers put in a shard is invisible, on every replica
//! alike, so the view stays a function of the document.

use automerge::{ObjType, ROOT, ReadDoc, Value as AmValue};
use serde_json::{Map, Value};

use super::{ShardIndex, rev, shard_of};
use crate::record::{self, ID_KEY, REV_KEY, StoredRev};

/// True when `id` may hold a record in shard `shard` of `shard_count`.
pub(crate) fn is_visible(id: &str, shard: ShardIndex, shard_count: u16) -> bool {
    record::validate_id(id).is_ok() && shard_of(id, shard_count) == shard
}

/// Every record of one shard, in the document's key order.
pub(crate) fn read_shard<R: ReadDoc>(
    doc: &R,
    shard: ShardIndex,
    shard_count: u16,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for item in doc.map_range(ROOT, ..) {
        if !matches!(
            item.value,
            automerge::ValueRef::Object(ObjType::Map | ObjType::Table)
        ) || !is_visible(&item.key, shard, shard_count)
        {
            continue;
        }
        if let Some(value) = read_at(doc, &item.key, &item.id()) {
            out.push((item.key.into_owned(), value));
        }
    }
    out
}

/// The record `id` as the document now holds it, if it holds one.
pub(crate) fn read_one<R: ReadDoc>(
    doc: &R,
    id: &str,
    shard: ShardIndex,
    shard_count: u16,
) -> Option<Value> {
    if !is_visible(id, shard, shard_count) {
        return None;
    }
    match doc.get(ROOT, id) {
        Ok(Some((AmValue::Object(ObjType::Map | ObjType::Table), obj))) => read_at(doc, id, &obj),
        _ => None,
    }
}

fn read_at<R: ReadDoc>(doc: &R, id: &str, obj: &automerge::ObjId) -> Option<Value> {
    let stored = record::read_record(doc, obj).ok()?;
    let mut fields = stored.fields;
    fields.insert(ID_KEY.to_owned(), Value::String(id.to_owned()));
    let rev = shown_rev(stored.rev, &fields);
    fields.insert(REV_KEY.to_owned(), Value::String(rev));
    Some(Value::Object(fields))
}

/// The revision the view shows for stored content (`fields` includes `_id`).
fn shown_rev(stored: StoredRev, fields: &Map<String, Value>) -> String {
    match stored {
        StoredRev::One(r) if rev::parse(&r).is_some() => r,
        StoredRev::One(_) | StoredRev::Missing => rev::derived(fields),
        StoredRev::Conflicted(revs) => rev::merged(&revs, fields),
    }
}

/// The `_rev` of a materialised record.
pub(crate) fn rev_of(record: &Value) -> Option<&str> {
    record.get(REV_KEY).and_then(Value::as_str)
}

/// The `_rev` of a record being written (always set by then).
pub(crate) fn rev_of_map(record: &Map<String, Value>) -> String {
    record
        .get(REV_KEY)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}
