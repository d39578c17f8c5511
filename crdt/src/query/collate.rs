//! CouchDB view collation: one total order over every JSON value.
//!
//! Selectors, sorts, indexes and group keys all compare values through
//! [`compare`], so `{"a": {"$gt": 5}}`, a sort on `a` and an index on `a`
//! agree on what "greater" means.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// 2^64, the first float above every `u64`.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
/// -2^63, the smallest `i64`, exactly representable as a float.
const NEG_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;

/// The rank of a value's type in the collation: null < booleans < numbers <
/// strings < arrays < objects.
fn type_rank(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// Compares two JSON values in CouchDB view collation order.
///
/// Strings compare by Unicode code point, not by ICU collation as in CouchDB
/// (so `"B" < "a"` here, while CouchDB puts `"a"` first). Objects compare as
/// their lists of `(key, value)` pairs sorted by key, so key order in the
/// source text never matters.
pub(crate) fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => compare_arrays(x, y),
        (Value::Object(x), Value::Object(y)) => compare_objects(x, y),
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// Whether two values are equal under collation (`1 == 1.0`).
pub(crate) fn equal(a: &Value, b: &Value) -> bool {
    compare(a, b) == Ordering::Equal
}

fn compare_arrays(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match compare(x, y) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

fn sorted_pairs(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut pairs: Vec<_> = map.iter().collect();
    // serde_json may preserve insertion order (feature `preserve_order`), so
    // sort explicitly rather than trusting the map's iteration order.
    pairs.sort_unstable_by(|x, y| x.0.cmp(y.0));
    pairs
}

fn compare_objects(a: &Map<String, Value>, b: &Map<String, Value>) -> Ordering {
    let (a, b) = (sorted_pairs(a), sorted_pairs(b));
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        match ka.cmp(kb).then_with(|| compare(va, vb)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

/// A JSON number seen exactly: integers stay integers.
#[derive(Clone, Copy)]
enum Exact {
    Int(i128),
    Float(f64),
}

fn exact(n: &Number) -> Exact {
    match n.as_i128() {
        Some(i) => Exact::Int(i),
        // Without serde_json's `arbitrary_precision` every number is an i64, a
        // u64 or a finite f64, so the fallback is unreachable in practice.
        None => Exact::Float(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// Compares numbers by value, exactly, whether stored as integer or float.
pub(crate) fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    match (exact(a), exact(b)) {
        (Exact::Int(x), Exact::Int(y)) => x.cmp(&y),
        // `partial_cmp` treats -0.0 and 0.0 as equal, like the numbers they
        // denote; NaN cannot come from JSON but still gets a total order.
        (Exact::Float(x), Exact::Float(y)) => x.partial_cmp(&y).unwrap_or_else(|| x.total_cmp(&y)),
        (Exact::Int(x), Exact::Float(y)) => compare_int_float(x, y),
        (Exact::Float(x), Exact::Int(y)) => compare_int_float(y, x).reverse(),
    }
}

/// Compares an integer with a float without rounding either.
fn compare_int_float(i: i128, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    // Integers from JSON fit in [-2^63, 2^64).
    if f >= TWO_POW_64 {
        return Ordering::Less;
    }
    if f < NEG_TWO_POW_63 {
        return Ordering::Greater;
    }
    let floor = f.floor();
    // Exact: `floor` is an integer-valued float within the i128 range.
    let floor_int = floor as i128;
    match i.cmp(&floor_int) {
        Ordering::Equal if f > floor => Ordering::Less,
        other => other,
    }
}

/// A value ordered by collation, usable as a `BTreeMap` key.
#[derive(Debug, Clone)]
pub(crate) struct Collated(pub(crate) Value);

impl PartialEq for Collated {
    fn eq(&self, other: &Self) -> bool {
        equal(&self.0, &other.0)
    }
}

impl Eq for Collated {}

impl PartialOrd for Collated {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Collated {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(&self.0, &other.0)
    }
}

/// The JSON type names `$type` understands, in collation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonType {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl JsonType {
    pub(crate) fn of(value: &Value) -> JsonType {
        match value {
            Value::Null => JsonType::Null,
            Value::Bool(_) => JsonType::Boolean,
            Value::Number(_) => JsonType::Number,
            Value::String(_) => JsonType::String,
            Value::Array(_) => JsonType::Array,
            Value::Object(_) => JsonType::Object,
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<JsonType> {
        Some(match name {
            "null" => JsonType::Null,
            "boolean" => JsonType::Boolean,
            "number" => JsonType::Number,
            "string" => JsonType::String,
            "array" => JsonType::Array,
            "object" => JsonType::Object,
            _ => return None,
        })
    }
}

pub(crate) use crate::record::json_type as describe;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_collate_null_bool_number_string_array_object() {
        let ordered = [
            json!(null),
            json!(false),
            json!(true),
            json!(-5),
            json!(1.5),
            json!(2),
            json!(""),
            json!("B"),
            json!("a"),
            json!("é"),
            json!([]),
            json!([1]),
            json!([1, 2]),
            json!([2]),
            json!({}),
            json!({"a": 1}),
            json!({"a": 2}),
            json!({"b": 0}),
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn integers_and_floats_compare_by_value() {
        assert!(equal(&json!(1), &json!(1.0)));
        assert!(equal(&json!(-0.0), &json!(0)));
        assert!(equal(&json!(-0.0), &json!(0.0)));
        assert_eq!(compare(&json!(1), &json!(1.5)), Ordering::Less);
        assert_eq!(compare(&json!(2), &json!(1.5)), Ordering::Greater);
        assert_eq!(compare(&json!(-2), &json!(-1.5)), Ordering::Less);
        // 2^53 + 1 is not representable as f64; rounding would call these equal.
        let big = 9_007_199_254_740_993_i64;
        assert_eq!(
            compare(&json!(big), &json!(9_007_199_254_740_992.0)),
            Ordering::Greater
        );
        assert_eq!(compare(&json!(u64::MAX), &json!(1.0e19)), Ordering::Greater);
        assert_eq!(compare(&json!(u64::MAX), &json!(1.0e20)), Ordering::Less);
        assert_eq!(
            compare(&json!(i64::MIN), &json!(-1.0e19)),
            Ordering::Greater
        );
        assert_eq!(
            compare(&json!(i64::MIN), &json!(-9_223_372_036_854_775_808.0)),
            Ordering::Equal
        );
        assert_eq!(
            compare(&json!(u64::MAX), &json!(i64::MIN)),
            Ordering::Greater
        );
    }

    #[test]
    fn object_key_order_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        assert!(equal(&a, &b));
    }

    #[test]
    fn type_names_round_trip() {
        for name in ["null", "boolean", "number", "string", "array", "object"] {
            assert!(JsonType::from_name(name).is_some());
        }
        assert_eq!(JsonType::from_name("integer"), None);
        assert_eq!(JsonType::of(&json!(1.5)), JsonType::Number);
    }
}
