//! Mango queries and mergeable aggregates over JSON records.
//!
//! Records are JSON objects with a string `_id` and `_rev`, kept by the caller
//! in a `BTreeMap` keyed by `_id`. Everything here is pure: JSON in, JSON out.
//!
//! # Selectors
//!
//! [`Selector`] implements CouchDB's Mango language, because cozy-stack speaks
//! to CouchDB and Cozy client libraries must work against Hearth unchanged:
//!
//! - fields: `{"year": 2026, "kwh": {"$gt": 3}}` (an implicit `$and`), dotted
//!   paths `"a.b.c"` or the nested form `{"a": {"b": {"$gt": 1}}}`, and array
//!   indexes `"tags.0"`;
//! - a bare value means exact equality (`{"tags": "x"}` does not match
//!   `{"tags": ["x"]}`, unlike MongoDB);
//! - `$eq $ne $gt $gte $lt $lte $in $nin $exists $type $size $mod $regex
//!   $beginsWith $all $elemMatch $allMatch $keyMapMatch` on fields, and
//!   `$and $or $nor $not` anywhere;
//! - a missing field fails every test except `$exists: false`, negated tests
//!   included (`{"a": {"$ne": 1}}` does not match `{}`), as in CouchDB.
//!
//! # Collation
//!
//! Every comparison, sort, index and group key uses CouchDB's view collation:
//! `null < false < true < numbers < strings < arrays < objects`. Numbers
//! compare by value, whether stored as integer or float (`1 == 1.0`). Arrays
//! compare element by element, objects as their `(key, value)` pairs sorted by
//! key. Unlike CouchDB, strings compare by Unicode code point rather than with
//! ICU: `"B" < "a"` here, and accents sort after every ASCII letter.
//!
//! # Finding
//!
//! [`FindRequest`] is the body of a CouchDB `_find` (`selector`, `fields`,
//! `sort`, `limit`, `skip`, `use_index`, `bookmark`, `allow_fallback`), and
//! [`find`] runs it. Without a `limit` every match is returned (CouchDB's
//! default of 25 does not apply); without a `sort` results come in `_id` order,
//! whatever index serves the query. Ties in a sort are broken by `_id`, in the
//! direction of the first sort field. Records missing a sort field sort before
//! `null`.
//!
//! # Indexes
//!
//! An [`Index`] keeps its records ordered by the collated values of its fields,
//! then `_id`. Records that lack the first field are left out, as in CouchDB,
//! so the planner only uses an index when the selector requires that field.
//! The planner narrows the scan to the ranges the selector's top-level `$and`
//! allows (`$eq`, `$gt`.., `$in`, `$type`, `$beginsWith`, including compound
//! ranges like `year = 2026 and month > 3` on `[year, month]`), filters every
//! candidate with the full selector, and stops early when the index order is
//! the requested order. The index only ever saves work; it never changes an
//! answer. A selector on `_id` is served by the record map itself, reported as
//! the index `"_all_docs"`.
//!
//! # Aggregates
//!
//! [`AggregateRequest`] groups matching records by fields and folds each group
//! into [`Partial`]s: count, exact integer sum, mean and M2 (for variance),
//! min, max and histogram counts. Partials merge associatively, so a federated
//! query can aggregate on every node and merge the answers.
//!
//! ```
//! use hearth_crdt::query::{self, AggregateRequest, FindRequest, Index, Indexes};
//! use serde_json::json;
//! use std::collections::BTreeMap;
//!
//! let mut records = BTreeMap::new();
//! for (id, month, kwh) in [("r1", 1, 3), ("r2", 1, 5), ("r3", 2, 4)] {
//!     records.insert(id.to_owned(), json!({"_id": id, "_rev": "1-a", "month": month, "kwh": kwh}));
//! }
//! let mut indexes = Indexes::default();
//! let mut by_month = Index::new("by_month", vec!["month".into()])?;
//! by_month.rebuild(&records);
//! indexes.define(by_month);
//!
//! let req = FindRequest::parse(&json!({"selector": {"month": 1}, "fields": ["kwh"], "sort": [{"kwh": "desc"}]}))?;
//! let found = query::find(&req, &records, &indexes)?;
//! assert_eq!(found.docs, vec![json!({"kwh": 5}), json!({"kwh": 3})]);
//! assert_eq!(found.index.as_deref(), Some("by_month"));
//!
//! let req = AggregateRequest::parse(&json!({
//!     "group_by": ["month"],
//!     "aggregate": {"n": {"$count": true}, "avg_kwh": {"$avg": "kwh"}}
//! }))?;
//! let out = query::aggregate(&req, records.values())?;
//! assert_eq!(out.to_json()["groups"][0], json!({"key": {"month": 1}, "values": {"n": 2, "avg_kwh": 4.0}}));
//! # Ok::<(), query::Error>(())
//! ```

pub(crate) mod aggregate;
pub(crate) mod collate;
mod error;
mod find;
mod index;
mod path;
mod plan;
mod selector;

#[cfg(test)]
mod prop_tests;

pub use aggregate::{
    AggregateRequest, AggregateSpec, Aggregated, Group, MAX_AGGREGATES, MAX_EXACT, MAX_GROUP_BY,
    MAX_GROUPS, MAX_HISTOGRAM_BOUNDS, Partial, Reduce, SCALE, Scope, aggregate,
};
pub use error::Error;
pub use find::{Direction, FindRequest, Found, MAX_FIELDS, MAX_SORT_FIELDS, SortField, find};
pub use index::{Index, Indexes, MAX_INDEX_FIELDS};
pub use path::{FieldPath, MAX_FIELD_PATH_BYTES};
pub use selector::Selector;

/// How deeply a selector may nest objects, arrays and operators.
pub const MAX_SELECTOR_DEPTH: usize = 64;

/// How many JSON values a selector may hold, operator arguments included.
pub const MAX_SELECTOR_VALUES: usize = 10_000;

/// The longest `$regex` pattern accepted, in bytes.
pub const MAX_REGEX_BYTES: usize = 4096;

/// The most memory a compiled `$regex` may use, in bytes.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
