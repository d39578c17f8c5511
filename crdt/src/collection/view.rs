//! Reading records out of shard documents into the materialised view.
//!
//! Only a root entry that is a map, whose key is a valid id, and that nests
//! no deeper than the record limit is a record. Anything else other writers
//! put in a shard is invisible, on every replica alike, so the view stays a
//! function of the document. A record whose id hashes to another shard is
//! refused outright (see [`DecodeError::MisplacedRecord`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use automerge::iter::DocItem;
use automerge::{ObjId as ExId, ObjType, ROOT, ReadDoc, Value as AmValue, ValueRef};
use serde_json::{Map, Value};

use super::{DecodeError, ShardIndex, rev, shard_of};
use crate::record::{self, ID_KEY, REV_KEY, StoredRev};

/// True when `id` may hold a record in shard `shard` of `shard_count`.
pub(crate) fn is_visible(id: &str, shard: ShardIndex, shard_count: u16) -> bool {
    record::validate_id(id).is_ok() && shard_of(id, shard_count) == shard
}

/// Refuses a record map stored under an id that belongs to another shard.
fn placement(id: &str, shard: ShardIndex, shard_count: u16) -> Result<(), DecodeError> {
    let belongs_to = shard_of(id, shard_count);
    if belongs_to != shard && record::validate_id(id).is_ok() {
        return Err(DecodeError::MisplacedRecord {
            id: id.to_owned(),
            belongs_to,
        });
    }
    Ok(())
}

/// [`placement`] for the root entry `id` of `doc`, if it is a map.
pub(crate) fn check_placement<R: ReadDoc>(
    doc: &R,
    id: &str,
    shard: ShardIndex,
    shard_count: u16,
) -> Result<(), DecodeError> {
    match doc.get(ROOT, id) {
        Ok(Some((AmValue::Object(ObjType::Map | ObjType::Table), _))) => {
            placement(id, shard, shard_count)
        }
        _ => Ok(()),
    }
}

/// A shard's records as [`read_shard`] reads them: every record in key
/// order, and the ids of those whose `_rev` holds concurrent values (or
/// that are held in several concurrent versions).
pub(crate) type ShardRecords = (Vec<(String, Value)>, BTreeSet<String>);

/// Every record of one shard, in the document's key order, with the ids of
/// those whose `_rev` holds concurrent values (or that are held in several
/// concurrent versions: see [`versions`]).
///
/// This walks the whole document once with [`ReadDoc::iter`] instead of
/// asking for each record map in turn, which would seek through the op
/// columns once per record: a shard loads noticeably faster this way. It
/// must agree exactly with [`read_one`] (the tests check both against the
/// same documents).
pub(crate) fn read_shard<R: ReadDoc>(
    doc: &R,
    shard: ShardIndex,
    shard_count: u16,
) -> Result<ShardRecords, DecodeError> {
    let mut walk = Walk::default();
    let mut current: Option<(Arc<ExId>, Option<usize>)> = None;
    for item in doc.iter() {
        let node = match &current {
            Some((obj, node)) if Arc::ptr_eq(obj, &item.obj) => *node,
            _ => {
                let node = match &*item.obj {
                    ExId::Root => None,
                    ExId::Id(counter, _, actor) => match walk.by_obj.get(&(*counter, *actor)) {
                        Some(&n) => Some(n),
                        // An object below a record we gave up on.
                        None => {
                            current = Some((item.obj.clone(), Some(usize::MAX)));
                            continue;
                        }
                    },
                };
                current = Some((item.obj.clone(), node));
                node
            }
        };
        match (node, item.item) {
            (Some(usize::MAX), _) => {}
            (None, DocItem::Map(entry)) => {
                if matches!(entry.value, ValueRef::Object(ObjType::Map | ObjType::Table)) {
                    placement(&entry.key, shard, shard_count)?;
                    if record::validate_id(&entry.key).is_ok() {
                        let obj = entry.id();
                        // Concurrent creations: the revision is read from
                        // every version now, and kept.
                        let versions = entry.conflict.then(|| versions_rev(doc, &entry.key));
                        walk.record(entry.key.into_owned(), obj, versions);
                    }
                }
            }
            (None, _) => {}
            (Some(n), DocItem::Map(entry)) => {
                if walk.nodes[n].depth == 1 {
                    if entry.key == ID_KEY {
                        continue;
                    }
                    if entry.key == REV_KEY {
                        let record = walk.nodes[n].record;
                        if walk.records[record].versions {
                            continue;
                        }
                        let obj = walk.records[record].obj.clone();
                        walk.records[record].rev =
                            record::read_rev(doc, &obj, &entry.value, entry.conflict);
                        continue;
                    }
                }
                let slot = Slot::Key(entry.key.to_string());
                walk.value(n, slot, &entry.value, || entry.id());
            }
            (Some(n), DocItem::List(entry)) => {
                let index = walk.nodes[n].value.as_array().map_or(0, Vec::len);
                walk.value(n, Slot::Index(index), &entry.value, || entry.id());
            }
            (Some(n), DocItem::Text(span)) => {
                if let Value::String(text) = &mut walk.nodes[n].value {
                    text.push_str(span.as_str());
                }
            }
        }
    }
    Ok(walk.finish())
}

/// Where a nested object goes in its parent.
enum Slot {
    Key(String),
    Index(usize),
}

/// A JSON container being filled while walking the document.
struct Node {
    value: Value,
    parent: Option<(usize, Slot)>,
    record: usize,
    depth: usize,
}

struct Pending {
    id: String,
    obj: ExId,
    rev: StoredRev,
    node: usize,
    unreadable: bool,
    /// The root key holds several concurrent versions of the record.
    versions: bool,
}

#[derive(Default)]
struct Walk {
    nodes: Vec<Node>,
    records: Vec<Pending>,
    /// Object id (counter, actor index) to node.
    by_obj: HashMap<(u64, usize), usize>,
}

impl Walk {
    fn record(&mut self, id: String, obj: ExId, versions: Option<StoredRev>) {
        let node = self.nodes.len();
        self.register(&obj, node);
        self.nodes.push(Node {
            value: Value::Object(Map::new()),
            parent: None,
            record: self.records.len(),
            depth: 1,
        });
        self.records.push(Pending {
            id,
            obj,
            versions: versions.is_some(),
            rev: versions.unwrap_or(StoredRev::Missing),
            node,
            unreadable: false,
        });
    }

    fn register(&mut self, obj: &ExId, node: usize) {
        if let ExId::Id(counter, _, actor) = obj {
            self.by_obj.insert((*counter, *actor), node);
        }
    }

    /// Adds a value to node `n`: scalars directly, objects as a placeholder
    /// and a new node that replaces it in [`Walk::finish`].
    fn value(&mut self, n: usize, slot: Slot, value: &ValueRef<'_>, id: impl FnOnce() -> ExId) {
        let json = match value {
            ValueRef::Scalar(s) => record::from_scalar(s),
            ValueRef::Object(ty) => {
                let record = self.nodes[n].record;
                let depth = self.nodes[n].depth + 1;
                if depth > record::MAX_DEPTH && *ty != ObjType::Text {
                    self.records[record].unreadable = true;
                } else {
                    let child = self.nodes.len();
                    self.register(&id(), child);
                    let empty = match ty {
                        ObjType::Map | ObjType::Table => Value::Object(Map::new()),
                        ObjType::List => Value::Array(Vec::new()),
                        ObjType::Text => Value::String(String::new()),
                    };
                    let slot = match &slot {
                        Slot::Key(k) => Slot::Key(k.clone()),
                        Slot::Index(i) => Slot::Index(*i),
                    };
                    self.nodes.push(Node {
                        value: empty,
                        parent: Some((n, slot)),
                        record,
                        depth,
                    });
                }
                Value::Null
            }
        };
        match (&mut self.nodes[n].value, slot) {
            (Value::Object(fields), Slot::Key(key)) => {
                fields.insert(key, json);
            }
            (Value::Array(items), Slot::Index(_)) => items.push(json),
            _ => {}
        }
    }

    /// Moves every nested container into its parent (children always come
    /// after their parent) and finishes each readable record.
    fn finish(mut self) -> ShardRecords {
        for n in (0..self.nodes.len()).rev() {
            let Some((parent, slot)) = self.nodes[n].parent.take() else {
                continue;
            };
            let value = std::mem::take(&mut self.nodes[n].value);
            match (&mut self.nodes[parent].value, slot) {
                (Value::Object(fields), Slot::Key(key)) => {
                    fields.insert(key, value);
                }
                (Value::Array(items), Slot::Index(i)) => {
                    if let Some(item) = items.get_mut(i) {
                        *item = value;
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(self.records.len());
        let mut conflicted = BTreeSet::new();
        for pending in self.records {
            if pending.unreadable {
                continue;
            }
            if pending.versions || matches!(pending.rev, StoredRev::Conflicted(_)) {
                conflicted.insert(pending.id.clone());
            }
            let Value::Object(fields) = std::mem::take(&mut self.nodes[pending.node].value) else {
                continue;
            };
            let fields = finish_fields(&pending.id, fields, pending.rev);
            out.push((pending.id, Value::Object(fields)));
        }
        (out, conflicted)
    }
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
    let (winner, others) = version_objs(doc, id)?;
    let stored = record::read_record(doc, &winner).ok()?;
    let rev = if others.is_empty() {
        stored.rev
    } else {
        versions_rev(doc, id)
    };
    Some(Value::Object(finish_fields(id, stored.fields, rev)))
}

/// Every concurrent version of the record `id`, the one the view shows
/// first, each with its own revision.
///
/// Two replicas that create the same id concurrently leave two record maps
/// under one root key; Automerge shows one (the view's) and keeps the other
/// as a conflict. Until a write fills every one (see `write::update`), the
/// view shows the merged revision of all of them, and a reader that knows
/// how its records merge (the node's reserved collections) reads them all.
pub(crate) fn versions<R: ReadDoc>(
    doc: &R,
    id: &str,
    shard: ShardIndex,
    shard_count: u16,
) -> Vec<Value> {
    if !is_visible(id, shard, shard_count) {
        return Vec::new();
    }
    let Some((winner, others)) = version_objs(doc, id) else {
        return Vec::new();
    };
    std::iter::once(winner)
        .chain(others)
        .filter_map(|obj| {
            let stored = record::read_record(doc, &obj).ok()?;
            Some(Value::Object(finish_fields(id, stored.fields, stored.rev)))
        })
        .collect()
}

/// The map objects under root key `id`: the one Automerge shows, then the
/// concurrent others in document order. `None` when the key holds no map.
pub(crate) fn version_objs<R: ReadDoc>(doc: &R, id: &str) -> Option<(ExId, Vec<ExId>)> {
    let winner = match doc.get(ROOT, id) {
        Ok(Some((AmValue::Object(ObjType::Map | ObjType::Table), obj))) => obj,
        _ => return None,
    };
    let others = doc
        .get_all(ROOT, id)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(value, obj)| {
            matches!(value, AmValue::Object(ObjType::Map | ObjType::Table)).then_some(obj)
        })
        .filter(|obj| *obj != winner)
        .collect();
    Some((winner, others))
}

/// Every `_rev` value of every version of the record `id`, as one stored
/// revision.
fn versions_rev<R: ReadDoc>(doc: &R, id: &str) -> StoredRev {
    let mut revs: Vec<String> = doc
        .get_all(ROOT, id)
        .unwrap_or_default()
        .into_iter()
        .filter(|(value, _)| matches!(value, AmValue::Object(ObjType::Map | ObjType::Table)))
        .flat_map(|(_, obj)| doc.get_all(&obj, REV_KEY).unwrap_or_default())
        .filter_map(|(value, _)| value.as_str().map(str::to_owned))
        .collect();
    revs.sort_unstable();
    revs.dedup();
    match revs.len() {
        0 => StoredRev::Missing,
        1 => StoredRev::One(revs.remove(0)),
        _ => StoredRev::Conflicted(revs),
    }
}

/// A record's fields with its `_id` and shown `_rev` set.
fn finish_fields(id: &str, mut fields: Map<String, Value>, rev: StoredRev) -> Map<String, Value> {
    fields.insert(ID_KEY.to_owned(), Value::String(id.to_owned()));
    let rev = shown_rev(rev, &fields);
    fields.insert(REV_KEY.to_owned(), Value::String(rev));
    fields
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
