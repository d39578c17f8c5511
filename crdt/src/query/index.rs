//! Secondary indexes: records ordered by the collated values of some fields.

use std::collections::BTreeSet;
use std::collections::btree_map::{self, BTreeMap};
use std::ops::Bound;

use serde_json::Value;

use super::Error;
use super::collate::Collated;
use super::path::FieldPath;
use super::plan::KeyRange;

/// The most fields one index may cover.
pub const MAX_INDEX_FIELDS: usize = 16;

/// The longest index name, in bytes.
const MAX_INDEX_NAME_BYTES: usize = 256;

/// One component of an index key. Sentinels never appear in stored keys; they
/// only build scan bounds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum KeyPart {
    /// The record lacks this (non-first) field: sorts before `null`.
    Missing,
    Value(Collated),
    /// Above every value: `prefix + [Max]` bounds everything under `prefix`.
    Max,
}

/// A stored key: the collated field values, then the `_id` that makes it
/// unique.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    parts: Vec<KeyPart>,
    id: String,
}

/// A secondary index over one or more fields, as created by a CouchDB
/// `_index` request with `{"index": {"fields": [...]}}`.
///
/// It orders the records by the collated values of its fields, then `_id`.
/// A record that lacks the first field is left out (CouchDB behaviour); a
/// missing later field sorts before `null`. Keep it in sync by calling
/// [`Index::update`] on every put and delete, or [`Index::rebuild`].
#[derive(Debug, Clone)]
pub struct Index {
    name: String,
    fields: Vec<String>,
    paths: Vec<FieldPath>,
    entries: BTreeSet<Entry>,
}

impl Index {
    /// Creates an empty index. The name must be non-empty and at most 256
    /// bytes; there must be 1 to [`MAX_INDEX_FIELDS`] distinct, valid fields.
    pub fn new(name: impl Into<String>, fields: Vec<String>) -> Result<Index, Error> {
        let name = name.into();
        let bad = |reason| Error::BadIndex {
            name: name.clone(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("an index name cannot be empty"));
        }
        if name.len() > MAX_INDEX_NAME_BYTES {
            return Err(bad("an index name is limited to 256 bytes"));
        }
        if fields.is_empty() {
            return Err(bad("an index needs at least one field"));
        }
        if fields.len() > MAX_INDEX_FIELDS {
            return Err(bad("an index covers at most 16 fields"));
        }
        let paths = fields
            .iter()
            .map(|f| FieldPath::parse(f))
            .collect::<Result<Vec<_>, _>>()?;
        if paths
            .iter()
            .enumerate()
            .any(|(i, p)| paths[..i].contains(p))
        {
            return Err(bad("a field is listed twice"));
        }
        Ok(Index {
            name,
            fields,
            paths,
            entries: BTreeSet::new(),
        })
    }

    /// The index name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The indexed fields, in key order.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The indexed fields, parsed.
    pub(crate) fn paths(&self) -> &[FieldPath] {
        &self.paths
    }

    /// How many records the index holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index holds no record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn entry(&self, id: &str, record: &Value) -> Option<Entry> {
        let (first, rest) = self.paths.split_first()?;
        let mut parts = Vec::with_capacity(self.paths.len());
        parts.push(KeyPart::Value(Collated(first.lookup(record)?.clone())));
        parts.extend(rest.iter().map(|p| {
            p.lookup(record)
                .map_or(KeyPart::Missing, |v| KeyPart::Value(Collated(v.clone())))
        }));
        Some(Entry {
            parts,
            id: id.to_owned(),
        })
    }

    /// Moves record `id` from its `before` version to its `after` version:
    /// `before` is `None` for an insert, `after` is `None` for a delete.
    ///
    /// `before` must be the version the index last saw for `id` (the one
    /// passed as `after` last time, or to [`Index::rebuild`]); the old key is
    /// computed from it.
    pub fn update(&mut self, id: &str, before: Option<&Value>, after: Option<&Value>) {
        if let Some(old) = before.and_then(|r| self.entry(id, r)) {
            self.entries.remove(&old);
        }
        if let Some(new) = after.and_then(|r| self.entry(id, r)) {
            self.entries.insert(new);
        }
    }

    /// Replaces the contents with `records`, as `(_id, record)` pairs; a
    /// `&BTreeMap<String, Value>` works directly.
    pub fn rebuild<'a, I>(&mut self, records: I)
    where
        I: IntoIterator<Item = (&'a String, &'a Value)>,
    {
        let entries: BTreeSet<Entry> = records
            .into_iter()
            .filter_map(|(id, r)| self.entry(id, r))
            .collect();
        self.entries = entries;
    }

    /// The `_id`s in `ranges`, in key order (or reversed), which must be
    /// sorted and disjoint.
    pub(crate) fn scan<'a>(
        &'a self,
        ranges: &'a [KeyRange],
        reverse: bool,
    ) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        let in_range = move |range: &KeyRange| -> Box<dyn Iterator<Item = &'a str> + 'a> {
            let Some((lo, hi)) = bounds(range) else {
                return Box::new(std::iter::empty());
            };
            let found = self.entries.range((lo, hi)).map(|e| e.id.as_str());
            if reverse {
                Box::new(found.rev())
            } else {
                Box::new(found)
            }
        };
        if reverse {
            Box::new(ranges.iter().rev().flat_map(in_range))
        } else {
            Box::new(ranges.iter().flat_map(in_range))
        }
    }
}

fn parts(prefix: &[Value], extra: impl IntoIterator<Item = KeyPart>) -> Vec<KeyPart> {
    prefix
        .iter()
        .map(|v| KeyPart::Value(Collated(v.clone())))
        .chain(extra)
        .collect()
}

fn key(parts: Vec<KeyPart>) -> Entry {
    Entry {
        parts,
        id: String::new(),
    }
}

/// Entry bounds covering exactly the keys in `range`, or `None` when it is
/// empty. The empty `id` sorts before every real id with the same parts, and
/// `Max` after every real value, so neither ever equals a stored entry.
fn bounds(range: &KeyRange) -> Option<(Bound<Entry>, Bound<Entry>)> {
    let value = |v: &Value| KeyPart::Value(Collated(v.clone()));
    let prefix = &range.prefix;
    let lo = match &range.last.lo {
        Bound::Unbounded if prefix.is_empty() => Bound::Unbounded,
        Bound::Unbounded => Bound::Included(key(parts(prefix, []))),
        Bound::Included(v) => Bound::Included(key(parts(prefix, [value(v)]))),
        Bound::Excluded(v) => Bound::Included(key(parts(prefix, [value(v), KeyPart::Max]))),
    };
    let hi = match &range.last.hi {
        Bound::Unbounded if prefix.is_empty() => Bound::Unbounded,
        Bound::Unbounded => Bound::Excluded(key(parts(prefix, [KeyPart::Max]))),
        Bound::Included(v) => Bound::Excluded(key(parts(prefix, [value(v), KeyPart::Max]))),
        Bound::Excluded(v) => Bound::Excluded(key(parts(prefix, [value(v)]))),
    };
    // `BTreeSet::range` panics on inverted bounds; an inverted range is empty.
    if let (Bound::Included(l), Bound::Excluded(h)) = (&lo, &hi)
        && l >= h
    {
        return None;
    }
    Some((lo, hi))
}

/// The indexes of one collection, by name.
#[derive(Debug, Clone, Default)]
pub struct Indexes {
    by_name: BTreeMap<String, Index>,
}

impl Indexes {
    /// Adds `index`, which should already be built over the current records
    /// ([`Index::rebuild`]). Returns `false` when an index with the same name
    /// and fields already exists (it is kept, `index` is dropped), `true` when
    /// `index` was added or replaced a same-named index over other fields.
    pub fn define(&mut self, index: Index) -> bool {
        match self.by_name.get(&index.name) {
            Some(existing) if existing.fields == index.fields => false,
            _ => {
                self.by_name.insert(index.name.clone(), index);
                true
            }
        }
    }

    /// The index called `name`.
    pub fn get(&self, name: &str) -> Option<&Index> {
        self.by_name.get(name)
    }

    /// Removes and returns the index called `name`.
    pub fn remove(&mut self, name: &str) -> Option<Index> {
        self.by_name.remove(name)
    }

    /// Applies a put (`after` is `Some`) or delete (`after` is `None`) of
    /// record `id` to every index. See [`Index::update`].
    pub fn update(&mut self, id: &str, before: Option<&Value>, after: Option<&Value>) {
        for index in self.by_name.values_mut() {
            index.update(id, before, after);
        }
    }

    /// Rebuilds every index from `records`.
    pub fn rebuild<'a, I>(&mut self, records: I)
    where
        I: IntoIterator<Item = (&'a String, &'a Value)> + Clone,
    {
        for index in self.by_name.values_mut() {
            index.rebuild(records.clone());
        }
    }

    /// The indexes, by name.
    pub fn iter(&self) -> btree_map::Values<'_, String, Index> {
        self.by_name.values()
    }

    /// How many indexes there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there is no index.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl<'a> IntoIterator for &'a Indexes {
    type Item = &'a Index;
    type IntoIter = btree_map::Values<'a, String, Index>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Selector;
    use crate::query::plan::Ranges;
    use serde_json::json;

    fn scan_ids(index: &Index, selector: Value, reverse: bool) -> Vec<String> {
        let s = Selector::parse(&selector).unwrap();
        let r = Ranges::build(&s.conjuncts(), index.paths());
        index.scan(&r.ranges, reverse).map(str::to_owned).collect()
    }

    fn sample() -> (BTreeMap<String, Value>, Index) {
        let mut records = BTreeMap::new();
        for (id, doc) in [
            ("a", json!({"y": 2026, "m": 1})),
            ("b", json!({"y": 2026, "m": 5})),
            ("c", json!({"y": 2025, "m": 5})),
            ("d", json!({"y": 2026})),
            ("e", json!({"m": 5})),
            ("f", json!({"y": 2026.0, "m": 3})),
            ("g", json!({"y": "2026", "m": 3})),
        ] {
            records.insert(id.to_owned(), doc);
        }
        let mut index = Index::new("ym", vec!["y".into(), "m".into()]).unwrap();
        index.rebuild(&records);
        (records, index)
    }

    #[test]
    fn records_without_the_first_field_are_left_out() {
        let (_, index) = sample();
        assert_eq!(index.len(), 6);
        assert_eq!(
            scan_ids(&index, json!({"y": {"$exists": true}}), false),
            ["c", "d", "a", "f", "b", "g"]
        );
        assert_eq!(
            scan_ids(&index, json!({"y": {"$exists": true}}), true),
            ["g", "b", "f", "a", "d", "c"]
        );
    }

    #[test]
    fn compound_ranges_scan_only_matching_keys() {
        let (_, index) = sample();
        assert_eq!(
            scan_ids(&index, json!({"y": 2026}), false),
            ["d", "a", "f", "b"]
        );
        assert_eq!(
            scan_ids(&index, json!({"y": 2026, "m": {"$gt": 1}}), false),
            ["f", "b"]
        );
        assert_eq!(
            scan_ids(
                &index,
                json!({"y": 2026, "m": {"$gte": 1, "$lt": 5}}),
                false
            ),
            ["a", "f"]
        );
        assert_eq!(
            scan_ids(&index, json!({"y": 2026, "m": {"$lte": 3}}), false),
            ["d", "a", "f"]
        );
        assert_eq!(
            scan_ids(&index, json!({"y": {"$gt": 2025}}), false),
            ["d", "a", "f", "b", "g"]
        );
        assert_eq!(scan_ids(&index, json!({"y": {"$lt": 2026}}), false), ["c"]);
        assert_eq!(
            scan_ids(&index, json!({"y": {"$in": [2025, "2026"]}}), false),
            ["c", "g"]
        );
        assert_eq!(
            scan_ids(&index, json!({"y": {"$gt": 2026, "$lt": 2026}}), false),
            Vec::<String>::new()
        );
        assert_eq!(
            scan_ids(&index, json!({"y": {"$type": "string"}}), false),
            ["g"]
        );
    }

    #[test]
    fn update_moves_and_removes_entries() {
        let (mut records, mut index) = sample();
        let before = records["a"].clone();
        let after = json!({"y": 1999});
        index.update("a", Some(&before), Some(&after));
        records.insert("a".into(), after.clone());
        assert_eq!(scan_ids(&index, json!({"y": 1999}), false), ["a"]);
        assert_eq!(scan_ids(&index, json!({"y": 2026}), false), ["d", "f", "b"]);
        index.update("a", Some(&after), Some(&json!({"m": 1})));
        assert_eq!(index.len(), 5);
        index.update("b", Some(&records["b"]), None);
        assert_eq!(scan_ids(&index, json!({"y": 2026}), false), ["d", "f"]);
        index.update("z", None, Some(&json!({"y": 2026, "m": 0})));
        assert_eq!(scan_ids(&index, json!({"y": 2026}), false), ["d", "z", "f"]);
    }

    #[test]
    fn bad_definitions_are_refused() {
        assert!(
            Index::new("", vec!["a".into()])
                .unwrap_err()
                .to_string()
                .contains("cannot be empty")
        );
        assert!(
            Index::new("x", vec![])
                .unwrap_err()
                .to_string()
                .contains("at least one field")
        );
        assert!(
            Index::new("x", vec!["a".into(), "a".into()])
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(Index::new("x", vec!["a..b".into()]).is_err());
        let many: Vec<String> = (0..=MAX_INDEX_FIELDS).map(|i| format!("f{i}")).collect();
        assert!(Index::new("x", many).is_err());
    }

    #[test]
    fn define_reports_creation() {
        let mut indexes = Indexes::default();
        assert!(indexes.define(Index::new("a", vec!["x".into()]).unwrap()));
        assert!(!indexes.define(Index::new("a", vec!["x".into()]).unwrap()));
        assert!(indexes.define(Index::new("a", vec!["y".into()]).unwrap()));
        assert_eq!(indexes.get("a").unwrap().fields(), ["y"]);
        assert!(indexes.define(Index::new("b", vec!["x".into()]).unwrap()));
        assert_eq!(
            indexes.iter().map(Index::name).collect::<Vec<_>>(),
            ["a", "b"]
        );
        indexes.update("r", None, Some(&json!({"x": 1, "y": 2})));
        assert_eq!(indexes.get("a").unwrap().len(), 1);
        assert_eq!(indexes.get("b").unwrap().len(), 1);
        assert!(indexes.remove("a").is_some());
        assert_eq!(indexes.len(), 1);
    }
}
