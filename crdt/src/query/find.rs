//! `_find`: parse a CouchDB find body, pick a plan, run it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use serde_json::{Map, Value};

use super::Error;
use super::collate::{self, describe};
use super::index::{Index, Indexes};
use super::path::FieldPath;
use super::plan::{self, Interval, Ranges};
use super::selector::{Leaf, Selector};

/// The most entries `fields` may list.
pub const MAX_FIELDS: usize = 1000;

/// The most entries `sort` may list.
pub const MAX_SORT_FIELDS: usize = 64;

const CONTEXT: &str = "find request";
const KEYS: &str = "selector, fields, sort, limit, skip, use_index, bookmark, allow_fallback \
                    (also accepted and ignored: execution_stats, r, conflicts, update, stable, stale)";
/// Keys CouchDB accepts that change nothing for a single local replica.
const IGNORED_KEYS: &[&str] = &[
    "execution_stats",
    "r",
    "conflicts",
    "update",
    "stable",
    "stale",
];

const BOOKMARK_PREFIX: &str = "offset-";

/// The name reported when the record map itself serves a selector on `_id`.
const ALL_DOCS: &str = "_all_docs";

/// A sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Smallest first, in collation order.
    #[default]
    Asc,
    /// Largest first.
    Desc,
}

/// One entry of `sort`: `"a"` or `{"a": "desc"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortField {
    /// The field to sort on.
    pub field: FieldPath,
    /// Ascending or descending.
    pub direction: Direction,
}

/// A parsed `_find` body.
#[derive(Debug, Clone)]
pub struct FindRequest {
    /// Which records match.
    pub selector: Selector,
    /// The fields to return; empty means whole records. `_id` and `_rev` are
    /// only returned when listed (CouchDB behaviour).
    pub fields: Vec<FieldPath>,
    /// The order of results; empty means `_id` order.
    pub sort: Vec<SortField>,
    /// The most records to return; `None` means all of them.
    pub limit: Option<usize>,
    /// How many matching records to skip first.
    pub skip: usize,
    /// The index to use, if the client insists (`_design/` prefix removed).
    pub use_index: Option<String>,
    /// When `use_index` cannot be honoured: fall back to another plan with a
    /// warning (`true`, the default), or fail.
    pub allow_fallback: bool,
    /// Where a previous page ended, from its [`Found::bookmark`].
    pub bookmark: usize,
}

/// The answer to a [`FindRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The matching records, projected, in order.
    pub docs: Vec<Value>,
    /// The index that served the query (`"_all_docs"` for a range of `_id`s),
    /// or `None` for a full scan.
    pub index: Option<String>,
    /// How many records were evaluated against the selector.
    pub examined: usize,
    /// Pass this as `bookmark` to get the next page.
    pub bookmark: String,
    /// Notes for the client, as in CouchDB's `warning` (e.g. an unusable
    /// `use_index`).
    pub warnings: Vec<String>,
}

fn bad(key: &'static str, expected: &'static str, got: &Value) -> Error {
    Error::BadValue {
        key,
        context: CONTEXT,
        expected,
        got: describe_value(got),
    }
}

/// Small numbers are shown as they are, everything else by type.
fn describe_value(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        other => describe(other).to_owned(),
    }
}

fn non_negative(key: &'static str, value: &Value) -> Result<usize, Error> {
    value
        .as_u64()
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .ok_or_else(|| bad(key, "a non-negative integer", value))
}

impl FindRequest {
    /// Parses a CouchDB `_find` body. `selector` is required; keys CouchDB
    /// accepts but that mean nothing here are ignored; any other key is an
    /// error.
    pub fn parse(body: &Value) -> Result<FindRequest, Error> {
        let Value::Object(map) = body else {
            return Err(Error::NotAnObject {
                what: CONTEXT,
                got: describe(body),
            });
        };
        let mut request = FindRequest {
            selector: Selector::all(),
            fields: Vec::new(),
            sort: Vec::new(),
            limit: None,
            skip: 0,
            use_index: None,
            allow_fallback: true,
            bookmark: 0,
        };
        let mut has_selector = false;
        for (key, value) in map {
            match key.as_str() {
                "selector" => {
                    request.selector = Selector::parse(value)?;
                    has_selector = true;
                }
                "fields" => request.fields = parse_fields(value)?,
                "sort" => request.sort = parse_sort(value)?,
                "limit" => request.limit = Some(non_negative("limit", value)?),
                "skip" => request.skip = non_negative("skip", value)?,
                "use_index" => request.use_index = parse_use_index(value)?,
                "allow_fallback" => {
                    request.allow_fallback = value
                        .as_bool()
                        .ok_or_else(|| bad("allow_fallback", "true or false", value))?;
                }
                "bookmark" => request.bookmark = parse_bookmark(value)?,
                ignored if IGNORED_KEYS.contains(&ignored) => {}
                other => {
                    return Err(Error::UnknownKey {
                        key: other.to_owned(),
                        context: CONTEXT,
                        expected: KEYS,
                    });
                }
            }
        }
        if !has_selector {
            return Err(Error::MissingKey {
                key: "selector",
                context: CONTEXT,
            });
        }
        Ok(request)
    }
}

fn parse_fields(value: &Value) -> Result<Vec<FieldPath>, Error> {
    let Value::Array(items) = value else {
        return Err(bad("fields", "an array of field names", value));
    };
    if items.len() > MAX_FIELDS {
        return Err(Error::TooManyEntries {
            key: "fields",
            context: CONTEXT,
            limit: MAX_FIELDS,
        });
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(name) => FieldPath::parse(name),
            other => Err(bad("fields", "an array of field names", other)),
        })
        .collect()
}

fn parse_sort(value: &Value) -> Result<Vec<SortField>, Error> {
    const EXPECTED: &str = "an array of field names or {\"field\": \"asc\" | \"desc\"} objects";
    let Value::Array(items) = value else {
        return Err(bad("sort", EXPECTED, value));
    };
    if items.len() > MAX_SORT_FIELDS {
        return Err(Error::TooManyEntries {
            key: "sort",
            context: CONTEXT,
            limit: MAX_SORT_FIELDS,
        });
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(name) => Ok(SortField {
                field: FieldPath::parse(name)?,
                direction: Direction::Asc,
            }),
            Value::Object(map) if map.len() == 1 => {
                let Some((name, direction)) = map.iter().next() else {
                    return Err(bad("sort", EXPECTED, item));
                };
                let direction = match direction.as_str() {
                    Some("asc") => Direction::Asc,
                    Some("desc") => Direction::Desc,
                    _ => {
                        return Err(bad(
                            "sort",
                            "\"asc\" or \"desc\" as the direction",
                            direction,
                        ));
                    }
                };
                Ok(SortField {
                    field: FieldPath::parse(name)?,
                    direction,
                })
            }
            other => Err(bad("sort", EXPECTED, other)),
        })
        .collect()
}

fn parse_use_index(value: &Value) -> Result<Option<String>, Error> {
    const EXPECTED: &str = "an index name, or [design document, index name]";
    let name = match value {
        Value::String(name) => name.as_str(),
        Value::Array(items) => match items.as_slice() {
            [Value::String(name)] | [Value::String(_), Value::String(name)] => name.as_str(),
            _ => return Err(bad("use_index", EXPECTED, value)),
        },
        other => return Err(bad("use_index", EXPECTED, other)),
    };
    let name = name.strip_prefix("_design/").unwrap_or(name);
    Ok(if name.is_empty() {
        None
    } else {
        Some(name.to_owned())
    })
}

fn parse_bookmark(value: &Value) -> Result<usize, Error> {
    match value {
        Value::Null => Ok(0),
        Value::String(s) if s.is_empty() || s == "nil" => Ok(0),
        Value::String(s) => s
            .strip_prefix(BOOKMARK_PREFIX)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::BadBookmark {
                bookmark: s.clone(),
            }),
        other => Err(bad("bookmark", "a string", other)),
    }
}

/// Where candidates come from, and in what order.
enum Source<'a> {
    /// Every record, in `_id` order.
    FullScan,
    /// The records whose `_id` lies in these sorted, disjoint intervals.
    AllDocs(Vec<Interval>),
    /// An index, over these key ranges.
    Index(&'a Index, Ranges),
}

struct Plan<'a> {
    source: Source<'a>,
    /// `Some(reverse)` when candidates come in the requested order (reversed
    /// or not), so the scan can stop after `skip + limit` matches.
    order: Option<bool>,
}

impl Plan<'_> {
    fn index_name(&self) -> Option<String> {
        match &self.source {
            Source::FullScan => None,
            Source::AllDocs(_) => Some(ALL_DOCS.to_owned()),
            Source::Index(index, _) => Some(index.name().to_owned()),
        }
    }
}

/// Whether scanning keys ordered by `fields` then `_id`, the first `pinned`
/// fields being constant, yields the order `sort` asks for. Returns whether
/// to scan backwards.
fn order_matches(sort: &[SortField], fields: &[FieldPath], pinned: usize) -> Option<bool> {
    let direction = sort.first().map_or(Direction::Asc, |s| s.direction);
    if sort.iter().any(|s| s.direction != direction) {
        return None;
    }
    let id = FieldPath::parse("_id").ok()?;
    // `_id` is unique: nothing after it in a sort can matter, and sorting on
    // it is the tie-break anyway.
    let requested = sort.iter().map(|s| &s.field).take_while(|f| **f != id);
    // Constant fields cannot reorder anything.
    let remaining: Vec<&FieldPath> = requested
        .filter(|f| !fields[..pinned].contains(f))
        .collect();
    let matches = remaining.len() == fields.len() - pinned
        && remaining
            .iter()
            .zip(&fields[pinned..])
            .all(|(a, b)| *a == b);
    matches.then_some(direction == Direction::Desc)
}

/// The `_id` constraint as a set of intervals over the record map, if any.
fn id_plan<'a>(conjuncts: &[&Leaf], sort: &[SortField]) -> Option<Plan<'a>> {
    let id = FieldPath::parse("_id").ok()?;
    let intervals = plan::field_constraint(conjuncts, &id)?;
    let order = order_matches(sort, &[], 0);
    Some(Plan {
        source: Source::AllDocs(intervals),
        order,
    })
}

/// Chooses how to answer `req`, and notes why when `use_index` is not obeyed.
fn choose<'a>(
    req: &FindRequest,
    indexes: &'a Indexes,
    warnings: &mut Vec<String>,
) -> Result<Plan<'a>, Error> {
    let conjuncts = req.selector.conjuncts();
    let index_plan = |index: &'a Index| {
        let ranges = Ranges::build(&conjuncts, index.paths());
        let order = order_matches(&req.sort, index.paths(), ranges.pinned());
        Plan {
            source: Source::Index(index, ranges),
            order,
        }
    };
    let usable = |index: &Index| {
        index
            .paths()
            .first()
            .is_some_and(|first| plan::requires(&conjuncts, first))
    };

    if let Some(name) = &req.use_index {
        match indexes.get(name) {
            Some(index) if usable(index) => return Ok(index_plan(index)),
            Some(index) => {
                let field = index.fields().first().cloned().unwrap_or_default();
                if !req.allow_fallback {
                    return Err(Error::IndexNotUsable {
                        name: name.clone(),
                        field,
                    });
                }
                warnings.push(format!(
                    "index {name:?} was not used: the selector does not constrain its first field {field:?}"
                ));
            }
            None if name == ALL_DOCS => {}
            None => {
                if !req.allow_fallback {
                    return Err(Error::UnknownIndex { name: name.clone() });
                }
                warnings.push(format!(
                    "index {name:?} was not used: there is no index by that name"
                ));
            }
        }
    }

    // Higher is better: narrowed plans by how many leading fields they pin,
    // then plans that deliver the requested order.
    let score = |plan: &Plan<'_>| match &plan.source {
        Source::FullScan => (0, 0, false),
        Source::AllDocs(intervals) => {
            let points = intervals.iter().all(|i| i.as_point().is_some());
            (if points { 3 } else { 2 }, 0, plan.order.is_some())
        }
        Source::Index(_, ranges) if ranges.narrowed => {
            (2, ranges.equality_depth(), plan.order.is_some())
        }
        Source::Index(..) => (1, 0, plan.order.is_some()),
    };
    let mut best = Plan {
        source: Source::FullScan,
        order: order_matches(&req.sort, &[], 0),
    };
    let mut best_score = score(&best);
    let mut consider = |plan: Plan<'a>| {
        let s = score(&plan);
        if s > best_score {
            best = plan;
            best_score = s;
        }
    };
    if let Some(plan) = id_plan(&conjuncts, &req.sort) {
        consider(plan);
    }
    for index in indexes.iter().filter(|i| usable(i)) {
        let plan = index_plan(index);
        let narrowed = matches!(&plan.source, Source::Index(_, r) if r.narrowed);
        // An unnarrowed index only helps when it saves sorting everything
        // to return a few records.
        if narrowed || (plan.order.is_some() && req.limit.is_some()) {
            consider(plan);
        }
    }
    Ok(best)
}

/// The `_id` bounds of a collation interval, or `None` if no string lies in
/// it.
fn id_bounds(interval: &Interval) -> Option<(Bound<&str>, Bound<&str>)> {
    const STRING_RANK: u8 = 3;
    let rank = |v: &Value| match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => STRING_RANK - 1,
        Value::String(_) => STRING_RANK,
        Value::Array(_) | Value::Object(_) => STRING_RANK + 1,
    };
    let lo = match &interval.lo {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(v) | Bound::Excluded(v) if rank(v) < STRING_RANK => Bound::Unbounded,
        Bound::Included(Value::String(s)) => Bound::Included(s.as_str()),
        Bound::Excluded(Value::String(s)) => Bound::Excluded(s.as_str()),
        _ => return None,
    };
    let hi = match &interval.hi {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(v) | Bound::Excluded(v) if rank(v) > STRING_RANK => Bound::Unbounded,
        Bound::Included(Value::String(s)) => Bound::Included(s.as_str()),
        Bound::Excluded(Value::String(s)) => Bound::Excluded(s.as_str()),
        _ => return None,
    };
    // `BTreeMap::range` panics on inverted bounds.
    let inverted = match (lo, hi) {
        (Bound::Included(l), Bound::Included(h)) => l > h,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) => {
            l >= h
        }
        _ => false,
    };
    (!inverted).then_some((lo, hi))
}

type Candidates<'a> = Box<dyn Iterator<Item = (&'a String, &'a Value)> + 'a>;

fn candidates<'a>(
    source: &'a Source<'a>,
    records: &'a BTreeMap<String, Value>,
    reverse: bool,
) -> Candidates<'a> {
    match source {
        Source::FullScan if reverse => Box::new(records.iter().rev()),
        Source::FullScan => Box::new(records.iter()),
        Source::AllDocs(intervals) => {
            let in_interval = move |interval: &'a Interval| -> Candidates<'a> {
                match id_bounds(interval) {
                    None => Box::new(std::iter::empty()),
                    Some(bounds) if reverse => Box::new(records.range::<str, _>(bounds).rev()),
                    Some(bounds) => Box::new(records.range::<str, _>(bounds)),
                }
            };
            if reverse {
                Box::new(intervals.iter().rev().flat_map(in_interval))
            } else {
                Box::new(intervals.iter().flat_map(in_interval))
            }
        }
        Source::Index(index, ranges) => Box::new(
            index
                .scan(&ranges.ranges, reverse)
                .filter_map(|id| records.get_key_value(id)),
        ),
    }
}

/// Answers `req` over `records` (keyed by `_id`), using `indexes` when they
/// help.
///
/// The plan never changes the answer, only its cost: every candidate is
/// checked against the full selector, and results are sorted by `sort` then
/// `_id` however they were found.
pub fn find(
    req: &FindRequest,
    records: &BTreeMap<String, Value>,
    indexes: &Indexes,
) -> Result<Found, Error> {
    let mut warnings = Vec::new();
    let plan = choose(req, indexes, &mut warnings)?;
    let start = req.bookmark.saturating_add(req.skip);
    let end = req.limit.map(|limit| start.saturating_add(limit));
    let mut examined = 0;
    let mut matched: Vec<(&String, &Value)> = Vec::new();

    let candidates = candidates(&plan.source, records, plan.order.unwrap_or(false));
    for (id, record) in candidates {
        if plan.order.is_some() && end.is_some_and(|end| matched.len() >= end) {
            break;
        }
        examined += 1;
        if req.selector.matches(record) {
            matched.push((id, record));
        }
    }
    if plan.order.is_none() {
        sort_matches(&mut matched, &req.sort);
    }
    let page = matched
        .get(start.min(matched.len())..end.unwrap_or(usize::MAX).min(matched.len()))
        .unwrap_or(&[]);
    let docs: Vec<Value> = page
        .iter()
        .map(|(_, record)| project(record, &req.fields))
        .collect();
    let bookmark = format!("{BOOKMARK_PREFIX}{}", start.saturating_add(docs.len()));
    Ok(Found {
        docs,
        index: plan.index_name(),
        examined,
        bookmark,
        warnings,
    })
}

/// Sorts by the sort fields (missing before `null`), then `_id` in the
/// direction of the first sort field.
fn sort_matches(matched: &mut [(&String, &Value)], sort: &[SortField]) {
    let id_direction = sort.first().map_or(Direction::Asc, |s| s.direction);
    let directed = |ordering: Ordering, direction: Direction| match direction {
        Direction::Asc => ordering,
        Direction::Desc => ordering.reverse(),
    };
    let mut keyed: Vec<(Vec<Option<&Value>>, &String, &Value)> = matched
        .iter()
        .map(|(id, r)| (sort.iter().map(|s| s.field.lookup(r)).collect(), *id, *r))
        .collect();
    keyed.sort_by(|(ka, ida, _), (kb, idb, _)| {
        ka.iter()
            .zip(kb)
            .zip(sort)
            .map(|((a, b), s)| {
                let ordering = match (a, b) {
                    (Some(a), Some(b)) => collate::compare(a, b),
                    (a, b) => a.is_some().cmp(&b.is_some()),
                };
                directed(ordering, s.direction)
            })
            .find(|o| o.is_ne())
            .unwrap_or_else(|| directed(ida.cmp(idb), id_direction))
    });
    for (slot, (_, id, record)) in matched.iter_mut().zip(keyed) {
        *slot = (id, record);
    }
}

/// Keeps only `fields` of `record`, nested as in the record; all of it when
/// `fields` is empty.
fn project(record: &Value, fields: &[FieldPath]) -> Value {
    if fields.is_empty() {
        return record.clone();
    }
    let mut out = Map::new();
    for field in fields {
        if let (Some(value), Some((last, parents))) =
            (field.lookup(record), field.segments().split_last())
        {
            insert_at(&mut out, parents, last, value);
        }
    }
    Value::Object(out)
}

/// Puts `value` at `parents.last` in `out`, creating objects on the way.
fn insert_at(out: &mut Map<String, Value>, parents: &[String], last: &str, value: &Value) {
    let mut target = out;
    for segment in parents {
        match target
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()))
        {
            Value::Object(inner) => target = inner,
            // An ancestor was projected whole and already holds `value`.
            _ => return,
        }
    }
    target.insert(last.to_owned(), value.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Index;
    use serde_json::json;

    fn records(n: usize) -> BTreeMap<String, Value> {
        (0..n)
            .map(|i| {
                let id = format!("r{i:05}");
                let doc = json!({"_id": id, "_rev": "1-x", "n": i, "g": i % 10, "s": format!("s{}", i % 3), "o": {"k": i % 4}});
                (id, doc)
            })
            .collect()
    }

    fn run(body: Value, records: &BTreeMap<String, Value>, indexes: &Indexes) -> Found {
        find(&FindRequest::parse(&body).unwrap(), records, indexes).unwrap()
    }

    fn ids(found: &Found) -> Vec<String> {
        found
            .docs
            .iter()
            .map(|d| d["_id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn indexes(records: &BTreeMap<String, Value>, defs: &[(&str, &[&str])]) -> Indexes {
        let mut indexes = Indexes::default();
        for (name, fields) in defs {
            let mut index =
                Index::new(*name, fields.iter().map(|f| f.to_string()).collect()).unwrap();
            index.rebuild(records);
            indexes.define(index);
        }
        indexes
    }

    #[test]
    fn parse_accepts_couchdb_bodies() {
        let req = FindRequest::parse(&json!({
            "selector": {"a": 1}, "fields": ["a", "b.c"], "sort": ["a", {"b": "desc"}],
            "limit": 10, "skip": 2, "use_index": "_design/by_a", "bookmark": "nil",
            "execution_stats": true, "r": 1, "conflicts": false
        }))
        .unwrap();
        assert_eq!(req.fields.len(), 2);
        assert_eq!(
            req.sort[1],
            SortField {
                field: FieldPath::parse("b").unwrap(),
                direction: Direction::Desc
            }
        );
        assert_eq!((req.limit, req.skip, req.bookmark), (Some(10), 2, 0));
        assert_eq!(req.use_index.as_deref(), Some("by_a"));
        let req = FindRequest::parse(&json!({"selector": {}, "use_index": ["_design/d", "by_b"]}))
            .unwrap();
        assert_eq!(req.use_index.as_deref(), Some("by_b"));
        assert_eq!(req.limit, None);
    }

    #[test]
    fn parse_errors_are_precise() {
        let err = |v: Value| FindRequest::parse(&v).unwrap_err().to_string();
        assert_eq!(
            err(json!({})),
            r#"find request is missing the "selector" key"#
        );
        assert!(
            err(json!({"selector": {}, "limt": 1}))
                .starts_with(r#"unknown key "limt" in find request"#)
        );
        assert_eq!(
            err(json!({"selector": {}, "limit": -1})),
            r#"bad find request: "limit" expects a non-negative integer, got -1"#
        );
        assert!(
            err(json!({"selector": {}, "skip": "2"}))
                .contains(r#""skip" expects a non-negative integer, got a string"#)
        );
        assert!(err(json!({"selector": {}, "sort": [{"a": "up"}]})).contains(r#""asc" or "desc""#));
        assert!(
            err(json!({"selector": {}, "sort": [{"a": "asc", "b": "asc"}]}))
                .contains(r#""sort" expects"#)
        );
        assert!(
            err(json!({"selector": {}, "fields": [1]}))
                .contains(r#""fields" expects an array of field names, got 1"#)
        );
        assert!(err(json!({"selector": {}, "bookmark": "xyz"})).contains("bad bookmark"));
        assert!(err(json!({"selector": {"a": {"$in": 1}}})).contains("$in expects an array"));
        assert_eq!(
            err(json!([])),
            "find request must be a json object, got an array"
        );
        let many: Vec<String> = (0..=MAX_SORT_FIELDS).map(|i| format!("f{i}")).collect();
        assert!(err(json!({"selector": {}, "sort": many})).contains("more than 64 entries"));
    }

    #[test]
    fn projection_keeps_only_listed_fields_nested() {
        let doc = json!({"_id": "x", "_rev": "1-a", "a": {"b": 1, "c": 2}, "t": [5, 6], "z": 0});
        let fields = |f: &[&str]| {
            f.iter()
                .map(|s| FieldPath::parse(s).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            project(&doc, &fields(&["a.b", "z"])),
            json!({"a": {"b": 1}, "z": 0})
        );
        assert_eq!(
            project(&doc, &fields(&["_id", "missing", "a.x"])),
            json!({"_id": "x"})
        );
        assert_eq!(
            project(&doc, &fields(&["a.b", "a"])),
            json!({"a": {"b": 1, "c": 2}})
        );
        assert_eq!(
            project(&doc, &fields(&["a", "a.b"])),
            json!({"a": {"b": 1, "c": 2}})
        );
        assert_eq!(project(&doc, &fields(&["t", "t.1"])), json!({"t": [5, 6]}));
        assert_eq!(project(&doc, &fields(&["t.1"])), json!({"t": {"1": 6}}));
        assert_eq!(project(&doc, &[]), doc);
    }

    #[test]
    fn sort_skip_limit_and_bookmark() {
        let recs = records(30);
        let none = Indexes::default();
        let found = run(
            json!({"selector": {"g": {"$lt": 2}}, "sort": [{"g": "desc"}, {"n": "desc"}]}),
            &recs,
            &none,
        );
        assert_eq!(
            ids(&found),
            ["r00021", "r00011", "r00001", "r00020", "r00010", "r00000"]
        );
        assert_eq!(found.index, None);
        assert_eq!(found.examined, 30);

        // Mixed directions; ties on `s` broken by the next key.
        let found = run(
            json!({"selector": {"n": {"$lt": 6}}, "sort": ["s", {"n": "desc"}]}),
            &recs,
            &none,
        );
        assert_eq!(
            ids(&found),
            ["r00003", "r00000", "r00004", "r00001", "r00005", "r00002"]
        );

        // Ties broken by `_id` in the direction of the first sort field.
        let found = run(
            json!({"selector": {"n": {"$lt": 6}}, "sort": [{"s": "desc"}]}),
            &recs,
            &none,
        );
        assert_eq!(
            ids(&found),
            ["r00005", "r00002", "r00004", "r00001", "r00003", "r00000"]
        );

        let page = |bookmark: &str| {
            run(
                json!({"selector": {"g": 3}, "limit": 2, "skip": 0, "bookmark": bookmark, "fields": ["_id"]}),
                &recs,
                &none,
            )
        };
        let first = page("nil");
        assert_eq!(ids(&first), ["r00003", "r00013"]);
        let second = page(&first.bookmark);
        assert_eq!(ids(&second), ["r00023"]);
        assert!(page(&second.bookmark).docs.is_empty());

        let found = run(
            json!({"selector": {}, "skip": 28, "limit": 5, "fields": ["n"]}),
            &recs,
            &none,
        );
        assert_eq!(found.docs, [json!({"n": 28}), json!({"n": 29})]);
        let found = run(json!({"selector": {}, "skip": 100}), &recs, &none);
        assert!(found.docs.is_empty());
        let found = run(json!({"selector": {}, "limit": 0}), &recs, &none);
        assert!(found.docs.is_empty());
    }

    #[test]
    fn missing_sort_fields_sort_first() {
        let mut recs = BTreeMap::new();
        for (id, doc) in [
            ("a", json!({"v": 2})),
            ("b", json!({})),
            ("c", json!({"v": null})),
            ("d", json!({"v": "x"})),
        ] {
            let mut doc = doc;
            doc["_id"] = json!(id);
            recs.insert(id.to_owned(), doc);
        }
        let found = run(
            json!({"selector": {}, "sort": ["v"]}),
            &recs,
            &Indexes::default(),
        );
        assert_eq!(ids(&found), ["b", "c", "a", "d"]);
    }

    #[test]
    fn equality_on_an_indexed_field_examines_only_matches() {
        let recs = records(1000);
        let idx = indexes(&recs, &[("by_g", &["g"]), ("by_s", &["s"])]);
        let found = run(
            json!({"selector": {"g": 7, "n": {"$gt": 500}}}),
            &recs,
            &idx,
        );
        assert_eq!(found.index.as_deref(), Some("by_g"));
        assert_eq!(found.examined, 100);
        assert_eq!(found.docs.len(), 50);
        assert_eq!(ids(&found)[0], "r00507");

        // The index order is `_id` order for one key, so a limit stops early.
        let found = run(json!({"selector": {"g": 7}, "limit": 3}), &recs, &idx);
        assert_eq!(found.examined, 3);
        assert_eq!(ids(&found), ["r00007", "r00017", "r00027"]);
        let found = run(
            json!({"selector": {"g": 7}, "limit": 3, "sort": [{"g": "desc"}]}),
            &recs,
            &idx,
        );
        assert_eq!(found.examined, 3);
        assert_eq!(ids(&found), ["r00997", "r00987", "r00977"]);
    }

    #[test]
    fn range_with_matching_sort_stops_after_limit() {
        let recs = records(1000);
        let idx = indexes(&recs, &[("by_n", &["n"])]);
        let found = run(
            json!({"selector": {"n": {"$gte": 100}}, "sort": [{"n": "desc"}], "limit": 5, "skip": 1}),
            &recs,
            &idx,
        );
        assert_eq!(found.index.as_deref(), Some("by_n"));
        assert_eq!(found.examined, 6);
        assert_eq!(
            ids(&found),
            ["r00998", "r00997", "r00996", "r00995", "r00994"]
        );
        // Sort on a field the index does not lead with: sorted in memory.
        let found = run(
            json!({"selector": {"n": {"$lt": 20}}, "sort": ["g"], "limit": 2}),
            &recs,
            &idx,
        );
        assert_eq!(found.examined, 20);
        assert_eq!(ids(&found), ["r00000", "r00010"]);
    }

    #[test]
    fn compound_index_serves_equality_then_range() {
        let recs = records(1000);
        let idx = indexes(&recs, &[("g_n", &["g", "n"]), ("by_g", &["g"])]);
        let found = run(
            json!({"selector": {"g": 3, "n": {"$gt": 900}}, "sort": ["g", "n"]}),
            &recs,
            &idx,
        );
        assert_eq!(found.index.as_deref(), Some("g_n"));
        assert_eq!(found.examined, 10);
        assert_eq!(ids(&found).len(), 10);
        let found = run(
            json!({"selector": {"g": {"$in": [3, 4]}, "n": {"$lt": 30}}, "sort": ["g", "n"]}),
            &recs,
            &idx,
        );
        assert_eq!(found.index.as_deref(), Some("g_n"));
        assert_eq!(found.examined, 6);
        assert_eq!(
            ids(&found),
            ["r00003", "r00013", "r00023", "r00004", "r00014", "r00024"]
        );
    }

    #[test]
    fn id_selectors_use_the_record_map() {
        let recs = records(100);
        let none = Indexes::default();
        let found = run(json!({"selector": {"_id": "r00042"}}), &recs, &none);
        assert_eq!(
            (found.index.as_deref(), found.examined, ids(&found).len()),
            (Some("_all_docs"), 1, 1)
        );
        let found = run(
            json!({"selector": {"_id": {"$gt": "r00090", "$lte": "r00093"}}}),
            &recs,
            &none,
        );
        assert_eq!(found.examined, 3);
        assert_eq!(ids(&found), ["r00091", "r00092", "r00093"]);
        let found = run(
            json!({"selector": {"_id": {"$in": ["r00005", "r00001", "nope"]}}}),
            &recs,
            &none,
        );
        assert_eq!(ids(&found), ["r00001", "r00005"]);
        let found = run(
            json!({"selector": {"_id": {"$gt": 5}}, "limit": 2, "sort": [{"_id": "desc"}]}),
            &recs,
            &none,
        );
        assert_eq!(
            (found.examined, ids(&found)),
            (2, vec!["r00099".to_owned(), "r00098".to_owned()])
        );
        let found = run(json!({"selector": {"_id": {"$gt": []}}}), &recs, &none);
        assert_eq!((found.examined, found.docs.len()), (0, 0));
    }

    #[test]
    fn use_index_is_obeyed_or_explained() {
        let recs = records(50);
        let idx = indexes(&recs, &[("by_g", &["g"]), ("by_s", &["s"])]);
        let found = run(
            json!({"selector": {"g": 1, "s": "s1"}, "use_index": "by_s"}),
            &recs,
            &idx,
        );
        assert_eq!(found.index.as_deref(), Some("by_s"));
        assert_eq!(found.examined, 17);
        assert_eq!(ids(&found), ["r00001", "r00031"]);

        let found = run(
            json!({"selector": {"g": 1}, "use_index": "by_s"}),
            &recs,
            &idx,
        );
        assert_eq!(found.index.as_deref(), Some("by_g"));
        assert!(
            found.warnings[0].contains("\"by_s\" was not used"),
            "{:?}",
            found.warnings
        );
        let found = run(
            json!({"selector": {"g": 1}, "use_index": "nope"}),
            &recs,
            &idx,
        );
        assert!(found.warnings[0].contains("no index by that name"));

        let req = FindRequest::parse(
            &json!({"selector": {"g": 1}, "use_index": "by_s", "allow_fallback": false}),
        )
        .unwrap();
        assert_eq!(
            find(&req, &recs, &idx).unwrap_err().to_string(),
            r#"index "by_s" cannot serve this selector: the selector must constrain its first field "s" (an index leaves out records that lack it)"#
        );
        let req = FindRequest::parse(
            &json!({"selector": {"g": 1}, "use_index": "nope", "allow_fallback": false}),
        )
        .unwrap();
        assert!(matches!(
            find(&req, &recs, &idx),
            Err(Error::UnknownIndex { .. })
        ));
    }

    #[test]
    fn an_index_never_hides_records_missing_its_field() {
        let mut recs = records(20);
        recs.insert("zz".into(), json!({"_id": "zz", "other": 1}));
        let idx = indexes(&recs, &[("by_g", &["g"])]);
        // `$exists: false` and `$or` cannot use the index: full scan.
        let found = run(json!({"selector": {"g": {"$exists": false}}}), &recs, &idx);
        assert_eq!(
            (found.index.clone(), ids(&found)),
            (None, vec!["zz".to_owned()])
        );
        let found = run(
            json!({"selector": {"$or": [{"g": 1}, {"other": 1}]}}),
            &recs,
            &idx,
        );
        assert_eq!(found.index, None);
        assert_eq!(ids(&found), ["r00001", "r00011", "zz"]);
        // A sort with a limit alone uses an index only when the selector
        // requires its field.
        let found = run(
            json!({"selector": {}, "sort": ["g"], "limit": 1}),
            &recs,
            &idx,
        );
        assert_eq!(
            (found.index.clone(), ids(&found)),
            (None, vec!["zz".to_owned()])
        );
        let found = run(
            json!({"selector": {"g": {"$exists": true}}, "sort": ["g"], "limit": 2}),
            &recs,
            &idx,
        );
        assert_eq!(found.index.as_deref(), Some("by_g"));
        assert_eq!(
            (found.examined, ids(&found)),
            (2, vec!["r00000".to_owned(), "r00010".to_owned()])
        );
    }
}
