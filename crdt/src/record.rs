//! JSON records and their Automerge representation.
//!
//! A record is a JSON object with a string `_id`. Inside a shard document it is
//! an Automerge map under the root key `_id`; the map holds the record's
//! fields plus its `_rev`. The `_id` is not stored inside the map: the root key
//! already is the id, and a second copy could only disagree with it.
//!
//! | JSON | Automerge |
//! |---|---|
//! | object | map |
//! | array | list |
//! | string | scalar string ([`ScalarValue::Str`]) |
//! | integer in `i64` | [`ScalarValue::Int`] |
//! | integer above `i64::MAX` | [`ScalarValue::Uint`] |
//! | float (including `1.0` and `-0.0`) | [`ScalarValue::F64`] |
//! | `true`/`false` | [`ScalarValue::Boolean`] |
//! | `null` | [`ScalarValue::Null`] |
//!
//! **Strings are scalars, not Automerge text.** A text object costs one
//! operation per character and a record field is replaced whole, CouchDB
//! style, so character-level merging buys nothing here while a scalar string
//! costs one operation whatever its length. Text written by other Automerge
//! clients (automerge-repo web apps write JS strings as text) is still read as
//! a JSON string, and an update keeps it a text object (see the collection's
//! update rules).
//!
//! The round trip is exact: integers stay integers, floats stay floats (`1.0`
//! is not `1`, `-0.0` keeps its sign), and strings keep every code point.
//!
//! Values other writers may put in a document that JSON lacks are read as:
//! counters and timestamps as integers, byte strings as arrays of byte
//! values, non-finite floats and values of unknown type as `null`.
//!
//! Limits: an id is 1 to [`MAX_ID_BYTES`] bytes; a record nests at most
//! [`MAX_DEPTH`] objects and arrays deep (the record itself counts as one);
//! its canonical JSON is at most [`MAX_RECORD_BYTES`] bytes.

use std::io::{self, Write};

use automerge::{ObjType, ReadDoc, ScalarValue, ScalarValueRef, ValueRef, hydrate};
use serde_json::{Map, Number, Value};

/// Longest accepted record id, in UTF-8 bytes.
pub const MAX_ID_BYTES: usize = 512;

/// Deepest accepted nesting of objects and arrays; the record object is level 1.
pub const MAX_DEPTH: usize = 64;

/// Largest accepted record, measured as its canonical JSON (CouchDB's default
/// `max_document_size` is of the same order).
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

/// The key holding a record's id in its JSON form.
pub const ID_KEY: &str = "_id";

/// The key holding a record's revision in its JSON and Automerge forms.
pub const REV_KEY: &str = "_rev";

/// Why a record or record id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The id is the empty string.
    #[error("record id is empty")]
    EmptyId,
    /// The id is longer than [`MAX_ID_BYTES`].
    #[error("record id is {len} bytes long, the limit is {max}")]
    IdTooLong {
        /// Length of the refused id in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a JSON object.
    #[error("a record must be a JSON object, got {found}")]
    NotAnObject {
        /// JSON type of the refused body.
        found: &'static str,
    },
    /// The body's `_id` is not a string.
    #[error("_id must be a string, got {found}")]
    IdNotString {
        /// JSON type of the refused `_id`.
        found: &'static str,
    },
    /// The body's `_id` differs from the id it is written under.
    #[error("_id {body_id:?} in the body does not match the record id {id:?}")]
    IdMismatch {
        /// The id the record is written under.
        id: String,
        /// The `_id` found in the body.
        body_id: String,
    },
    /// The record nests deeper than [`MAX_DEPTH`].
    #[error("record nests objects and arrays deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The record's canonical JSON is larger than [`MAX_RECORD_BYTES`].
    #[error("record is {len} bytes as canonical JSON, the limit is {max}")]
    TooLarge {
        /// Size of the canonical JSON, counted up to the first byte past the limit.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks that `id` can name a record.
pub fn validate_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::EmptyId);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::IdTooLong {
            len: id.len(),
            max: MAX_ID_BYTES,
        });
    }
    Ok(())
}

/// The JSON type name of `value` with its article ("a string", "an
/// object"), as error messages name it.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Validates `body` as the record `id` and returns its fields with `_id` set
/// to `id` and any `_rev` removed (the revision is decided by the collection).
pub(crate) fn prepare(id: &str, body: Value) -> Result<Map<String, Value>, Error> {
    validate_id(id)?;
    let mut fields = match body {
        Value::Object(fields) => fields,
        other => {
            return Err(Error::NotAnObject {
                found: json_type(&other),
            });
        }
    };
    match fields.get(ID_KEY) {
        None => {}
        Some(Value::String(body_id)) if body_id == id => {}
        Some(Value::String(body_id)) => {
            return Err(Error::IdMismatch {
                id: id.to_owned(),
                body_id: body_id.clone(),
            });
        }
        Some(other) => {
            return Err(Error::IdNotString {
                found: json_type(other),
            });
        }
    }
    fields.remove(REV_KEY);
    for (key, value) in &fields {
        if key != ID_KEY {
            check_depth(value, 2)?;
        }
    }
    fields.insert(ID_KEY.to_owned(), Value::String(id.to_owned()));
    Ok(fields)
}

/// Rejects values that nest deeper than [`MAX_DEPTH`]; `level` is the depth
/// `value` would occupy if it is a container.
fn check_depth(value: &Value, level: usize) -> Result<(), Error> {
    match value {
        Value::Array(items) => {
            if level > MAX_DEPTH {
                return Err(Error::TooDeep { max: MAX_DEPTH });
            }
            for item in items {
                check_depth(item, level + 1)?;
            }
        }
        Value::Object(fields) => {
            if level > MAX_DEPTH {
                return Err(Error::TooDeep { max: MAX_DEPTH });
            }
            for item in fields.values() {
                check_depth(item, level + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// True when `key` is one of the fields the collection manages itself.
pub(crate) fn is_meta_key(key: &str) -> bool {
    key == ID_KEY || key == REV_KEY
}

/// Exact equality: unlike `==` on [`Value`], `0.0` and `-0.0` differ and an
/// integer never equals a float.
pub fn exact_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_exact_eq(x, y),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| exact_eq(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| exact_eq(x, y)))
        }
        _ => a == b,
    }
}

fn number_exact_eq(x: &Number, y: &Number) -> bool {
    match (x.is_f64(), y.is_f64()) {
        (true, true) => x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits),
        (false, false) => x.as_i64() == y.as_i64() && x.as_u64() == y.as_u64(),
        _ => false,
    }
}

/// Writes the canonical JSON of a record's content: object keys sorted by
/// their UTF-8 bytes, no whitespace, numbers as serde_json prints them
/// (shortest round-trip floats, so `1.0` stays `1.0`). Keys accepted by
/// `include` at the top level are written; nested objects are written whole.
pub(crate) fn write_canonical_fields<W: Write>(
    out: &mut W,
    fields: &Map<String, Value>,
    include: impl Fn(&str) -> bool,
) -> io::Result<()> {
    let mut keys: Vec<&String> = fields.keys().filter(|k| include(k)).collect();
    keys.sort_unstable();
    out.write_all(b"{")?;
    for (n, key) in keys.into_iter().enumerate() {
        if n > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, key)?;
        out.write_all(b":")?;
        if let Some(value) = fields.get(key) {
            write_canonical(out, value)?;
        }
    }
    out.write_all(b"}")
}

fn write_canonical<W: Write>(out: &mut W, value: &Value) -> io::Result<()> {
    match value {
        Value::Object(fields) => write_canonical_fields(out, fields, |_| true),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(out, item)?;
            }
            out.write_all(b"]")
        }
        scalar => serde_json::to_writer(&mut *out, scalar).map_err(io::Error::from),
    }
}

/// The Automerge form of a JSON value (for [`automerge::transaction::Transactable::batch_create_object`]).
pub(crate) fn to_hydrate(value: &Value) -> hydrate::Value {
    match value {
        Value::Object(fields) => hydrate::Value::Map(to_hydrate_map(fields, |_| true)),
        Value::Array(items) => hydrate::Value::List(
            items
                .iter()
                .map(to_hydrate)
                .collect::<Vec<hydrate::Value>>()
                .into(),
        ),
        scalar => hydrate::Value::Scalar(to_scalar(scalar)),
    }
}

/// The Automerge map for the fields of `fields` accepted by `include`.
pub(crate) fn to_hydrate_map(
    fields: &Map<String, Value>,
    include: impl Fn(&str) -> bool,
) -> hydrate::Map {
    let mut map = hydrate::Map::default();
    for (key, value) in fields {
        if include(key) {
            map.insert(
                key.clone(),
                hydrate::MapValue {
                    value: to_hydrate(value),
                    conflict: false,
                },
            );
        }
    }
    map
}

/// The Automerge scalar for a JSON scalar. Containers map to `Null`; callers
/// only pass scalars.
pub(crate) fn to_scalar(value: &Value) -> ScalarValue {
    match value {
        Value::Null | Value::Array(_) | Value::Object(_) => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
    }
}

/// The JSON form of an Automerge scalar (see the module docs for non-JSON types).
pub(crate) fn from_scalar(value: &ScalarValueRef<'_>) -> Value {
    match value {
        ScalarValueRef::Str(s) => Value::String(s.to_string()),
        ScalarValueRef::Int(i) | ScalarValueRef::Counter(i) | ScalarValueRef::Timestamp(i) => {
            Value::Number((*i).into())
        }
        ScalarValueRef::Uint(u) => Value::Number((*u).into()),
        ScalarValueRef::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        ScalarValueRef::Boolean(b) => Value::Bool(*b),
        ScalarValueRef::Bytes(bytes) => {
            Value::Array(bytes.iter().map(|b| Value::Number((*b).into())).collect())
        }
        ScalarValueRef::Null | ScalarValueRef::Unknown { .. } => Value::Null,
    }
}

/// What a stored record map says about its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredRev {
    /// No usable `_rev` (absent or not a string).
    Missing,
    /// One `_rev` value.
    One(String),
    /// Concurrent writers left several `_rev` values (sorted, deduplicated).
    Conflicted(Vec<String>),
}

/// A record map read back from a document: its fields (without `_id` and
/// `_rev`) and its stored revision.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) fields: Map<String, Value>,
    pub(crate) rev: StoredRev,
}

/// Why a stored map could not be read as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// Reads the record map `obj`. Depth is bounded here rather than trusted:
/// documents come from other peers.
pub(crate) fn read_record<R: ReadDoc>(
    doc: &R,
    obj: &automerge::ObjId,
) -> Result<Stored, Unreadable> {
    let mut fields = Map::new();
    let mut rev = StoredRev::Missing;
    for item in doc.map_range(obj, ..) {
        let key: &str = &item.key;
        if key == ID_KEY {
            continue;
        }
        if key == REV_KEY {
            rev = read_rev(doc, obj, &item.value, item.conflict);
            continue;
        }
        let value = read_value(doc, &item.value, &|| item.id(), 2)?;
        fields.insert(key.to_owned(), value);
    }
    Ok(Stored { fields, rev })
}

pub(crate) fn read_rev<R: ReadDoc>(
    doc: &R,
    obj: &automerge::ObjId,
    winner: &ValueRef<'_>,
    conflict: bool,
) -> StoredRev {
    if conflict {
        let mut revs: Vec<String> = doc
            .get_all(obj, REV_KEY)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(value, _)| value.as_str().map(str::to_owned))
            .collect();
        revs.sort_unstable();
        revs.dedup();
        return match revs.len() {
            0 => StoredRev::Missing,
            1 => StoredRev::One(revs.remove(0)),
            _ => StoredRev::Conflicted(revs),
        };
    }
    match winner {
        ValueRef::Scalar(ScalarValueRef::Str(s)) => StoredRev::One(s.to_string()),
        _ => StoredRev::Missing,
    }
}

fn read_value<R: ReadDoc>(
    doc: &R,
    value: &ValueRef<'_>,
    id: &dyn Fn() -> automerge::ObjId,
    level: usize,
) -> Result<Value, Unreadable> {
    let ty = match value {
        ValueRef::Scalar(s) => return Ok(from_scalar(s)),
        ValueRef::Object(ty) => *ty,
    };
    let obj = id();
    match ty {
        ObjType::Text => Ok(Value::String(doc.text(&obj).unwrap_or_default())),
        ObjType::Map | ObjType::Table => {
            if level > MAX_DEPTH {
                return Err(Unreadable::TooDeep);
            }
            let mut fields = Map::new();
            for item in doc.map_range(&obj, ..) {
                let v = read_value(doc, &item.value, &|| item.id(), level + 1)?;
                fields.insert(item.key.to_string(), v);
            }
            Ok(Value::Object(fields))
        }
        ObjType::List => {
            if level > MAX_DEPTH {
                return Err(Unreadable::TooDeep);
            }
            let mut items = Vec::new();
            for item in doc.list_range(&obj, ..) {
                items.push(read_value(doc, &item.value, &|| item.id(), level + 1)?);
            }
            Ok(Value::Array(items))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn prepare_sets_id_and_drops_rev() {
        let fields = prepare("a", json!({"_rev": "9-x", "n": 1})).unwrap();
        assert_eq!(Value::Object(fields), json!({"_id": "a", "n": 1}));
    }

    #[test]
    fn prepare_refuses_non_objects_with_their_type() {
        let err = prepare("a", json!([1, 2])).unwrap_err();
        assert_eq!(err, Error::NotAnObject { found: "an array" });
        assert_eq!(
            err.to_string(),
            "a record must be a JSON object, got an array"
        );
    }

    #[test]
    fn prepare_refuses_non_string_or_mismatched_id() {
        assert_eq!(
            prepare("a", json!({"_id": 5})).unwrap_err(),
            Error::IdNotString { found: "a number" }
        );
        assert_eq!(
            prepare("a", json!({"_id": "b"})).unwrap_err(),
            Error::IdMismatch {
                id: "a".into(),
                body_id: "b".into()
            }
        );
    }

    #[test]
    fn ids_are_bounded() {
        assert_eq!(validate_id(""), Err(Error::EmptyId));
        assert!(validate_id(&"x".repeat(MAX_ID_BYTES)).is_ok());
        assert_eq!(
            validate_id(&"x".repeat(MAX_ID_BYTES + 1)),
            Err(Error::IdTooLong {
                len: MAX_ID_BYTES + 1,
                max: MAX_ID_BYTES
            })
        );
    }

    fn nested(levels: usize) -> Value {
        // `levels` containers including the record itself.
        let mut v = json!(1);
        for n in 1..levels {
            v = if n % 2 == 0 {
                json!([v])
            } else {
                json!({ "k": v })
            };
        }
        json!({ "deep": v })
    }

    #[test]
    fn depth_limit_counts_the_record_itself() {
        assert!(prepare("a", nested(MAX_DEPTH)).is_ok());
        assert_eq!(
            prepare("a", nested(MAX_DEPTH + 1)).unwrap_err(),
            Error::TooDeep { max: MAX_DEPTH }
        );
    }

    #[test]
    fn exact_eq_distinguishes_what_json_eq_conflates() {
        assert!(!exact_eq(&json!(0.0), &json!(-0.0)));
        assert_eq!(json!(0.0), json!(-0.0));
        assert!(!exact_eq(&json!(1), &json!(1.0)));
        assert!(exact_eq(&json!({"a": [1, 2.5]}), &json!({"a": [1, 2.5]})));
    }

    #[test]
    fn canonical_json_sorts_keys_and_keeps_number_kinds() {
        let fields = json!({"b": 1.0, "a": {"z": [1, "é"], "y": null}, "_id": "x"});
        let mut out = Vec::new();
        write_canonical_fields(&mut out, fields.as_object().unwrap(), |_| true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"_id":"x","a":{"y":null,"z":[1,"é"]},"b":1.0}"#
        );
    }

    #[test]
    fn scalars_map_to_the_documented_automerge_types() {
        assert_eq!(to_scalar(&json!(i64::MIN)), ScalarValue::Int(i64::MIN));
        assert_eq!(to_scalar(&json!(u64::MAX)), ScalarValue::Uint(u64::MAX));
        assert_eq!(to_scalar(&json!(1.0)), ScalarValue::F64(1.0));
        assert_eq!(to_scalar(&json!("s")), ScalarValue::Str("s".into()));
        assert_eq!(
            from_scalar(&ScalarValueRef::F64(f64::INFINITY)),
            Value::Null
        );
        assert_eq!(
            from_scalar(&ScalarValueRef::Bytes(vec![1u8, 255].into())),
            json!([1, 255])
        );
    }
}
