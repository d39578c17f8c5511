//! Property tests for the query engine.
//!
//! - `Selector::matches` agrees with a reference evaluator written here from
//!   the CouchDB rules, straight over the JSON selector: no normalization, no
//!   shared code with the engine (its own collation, paths and negation).
//! - `find` returns the same documents in the same order with indexes
//!   (maintained by `update`) as without.
//! - Merging partial aggregates of any split equals aggregating the whole.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{AggregateRequest, FindRequest, Index, Indexes, Selector, aggregate, find};

// ---------------------------------------------------------------------------
// Reference evaluator.

fn r_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(false) => 1,
        Value::Bool(true) => 2,
        Value::Number(_) => 3,
        Value::String(_) => 4,
        Value::Array(_) => 5,
        Value::Object(_) => 6,
    }
}

/// Collation for the generated values: their numbers are small ints and
/// halves, so comparing as f64 is exact.
fn r_cmp(a: &Value, b: &Value) -> Ordering {
    if r_rank(a) != r_rank(b) {
        return r_rank(a).cmp(&r_rank(b));
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap()
            .partial_cmp(&y.as_f64().unwrap())
            .unwrap(),
        (Value::String(x), Value::String(y)) => x.chars().cmp(y.chars()),
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().min(y.len()) {
                let o = r_cmp(&x[i], &y[i]);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut xs: Vec<_> = x.iter().collect();
            let mut ys: Vec<_> = y.iter().collect();
            xs.sort_by(|p, q| p.0.cmp(q.0));
            ys.sort_by(|p, q| p.0.cmp(q.0));
            for i in 0..xs.len().min(ys.len()) {
                let o = xs[i].0.cmp(ys[i].0).then_with(|| r_cmp(xs[i].1, ys[i].1));
                if o != Ordering::Equal {
                    return o;
                }
            }
            xs.len().cmp(&ys.len())
        }
        _ => Ordering::Equal,
    }
}

fn r_lookup<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = doc;
    for seg in path {
        at = match at {
            Value::Object(m) => m.get(seg)?,
            Value::Array(items) => {
                if !seg.chars().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                items.get(seg.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(at)
}

fn r_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One operator on a present value, without negation.
fn r_test(op: &str, arg: &Value, v: &Value) -> bool {
    let eq = |a: &Value, b: &Value| r_cmp(a, b) == Ordering::Equal;
    match op {
        "$eq" => eq(v, arg),
        "$gt" => r_cmp(v, arg) == Ordering::Greater,
        "$gte" => r_cmp(v, arg) != Ordering::Less,
        "$lt" => r_cmp(v, arg) == Ordering::Less,
        "$lte" => r_cmp(v, arg) != Ordering::Greater,
        "$in" => {
            let args = arg.as_array().unwrap();
            match v {
                Value::Array(items) => items.iter().any(|i| args.iter().any(|a| eq(i, a))),
                _ => args.iter().any(|a| eq(v, a)),
            }
        }
        "$type" => r_type(v) == arg.as_str().unwrap(),
        "$size" => v
            .as_array()
            .is_some_and(|items| items.len() as u64 == arg.as_u64().unwrap()),
        "$mod" => {
            let (d, r) = (arg[0].as_i64().unwrap(), arg[1].as_i64().unwrap());
            v.as_i64().is_some_and(|n| n % d == r)
        }
        "$regex" => v.as_str().is_some_and(|s| {
            regex::Regex::new(arg.as_str().unwrap())
                .unwrap()
                .is_match(s)
        }),
        "$beginsWith" => v
            .as_str()
            .is_some_and(|s| s.starts_with(arg.as_str().unwrap())),
        "$all" => {
            let args = arg.as_array().unwrap();
            match v {
                Value::Array(items) => {
                    args.iter().all(|a| items.iter().any(|i| eq(i, a)))
                        || (args.len() == 1 && args[0].is_array() && eq(&args[0], v))
                }
                _ => false,
            }
        }
        "$elemMatch" => v
            .as_array()
            .is_some_and(|items| items.iter().any(|e| r_cond(arg, &[], e, false))),
        "$allMatch" => v.as_array().is_some_and(|items| {
            !items.is_empty() && items.iter().all(|e| r_cond(arg, &[], e, false))
        }),
        other => panic!("reference does not know {other}"),
    }
}

/// A leaf under `neg` negations: a missing field fails everything but
/// `$exists`, whose argument the negation flips.
fn r_leaf(path: &[String], op: &str, arg: &Value, doc: &Value, neg: bool) -> bool {
    let found = r_lookup(doc, path);
    if op == "$exists" {
        return found.is_some() == (arg.as_bool().unwrap() != neg);
    }
    let Some(v) = found else { return false };
    let (op, flipped) = match op {
        "$ne" => ("$eq", true),
        "$nin" => ("$in", true),
        other => (other, false),
    };
    r_test(op, arg, v) != (neg != flipped)
}

/// A condition at `path`, negated `neg` times (De Morgan at every level).
fn r_cond(cond: &Value, path: &[String], doc: &Value, neg: bool) -> bool {
    match cond {
        Value::Object(m) if m.is_empty() && path.is_empty() => !neg,
        Value::Object(m) if !m.is_empty() => {
            let mut results = m.iter().map(|(k, v)| r_entry(k, v, path, doc, neg));
            if neg {
                results.any(|x| x)
            } else {
                results.all(|x| x)
            }
        }
        bare => r_leaf(path, "$eq", bare, doc, neg),
    }
}

fn r_entry(key: &str, value: &Value, path: &[String], doc: &Value, neg: bool) -> bool {
    let items = || value.as_array().unwrap().iter();
    match key {
        "$and" if neg => items().any(|x| r_cond(x, path, doc, true)),
        "$and" => items().all(|x| r_cond(x, path, doc, false)),
        "$or" if neg => items().all(|x| r_cond(x, path, doc, true)),
        "$or" => items().any(|x| r_cond(x, path, doc, false)),
        "$nor" if neg => items().any(|x| r_cond(x, path, doc, false)),
        "$nor" => items().all(|x| r_cond(x, path, doc, true)),
        "$not" => r_cond(value, path, doc, !neg),
        op if op.starts_with('$') => r_leaf(path, op, value, doc, neg),
        field => {
            let mut longer = path.to_vec();
            longer.extend(field.split('.').map(str::to_owned));
            r_cond(value, &longer, doc, neg)
        }
    }
}

fn r_matches(selector: &Value, doc: &Value) -> bool {
    r_cond(selector, &[], doc, false)
}

// ---------------------------------------------------------------------------
// Generators.

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(Value::from),
        (-6i64..7).prop_map(|h| json!(h as f64 / 2.0)),
        prop::sample::select(vec!["", "a", "b", "ab", "B", "ba", "é"]).prop_map(Value::from),
    ]
}

const KEYS: [&str; 3] = ["a", "b", "c"];

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), inner, 0..3).prop_map(
                |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            ),
        ]
    })
}

fn record() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn path() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a", "b", "c", "a.b", "a.0", "b.c", "a.b.c", "c.1", "a.a",
    ])
    .prop_map(str::to_owned)
}

/// `$elemMatch` and friends take an object: a bare value becomes `$eq`.
fn as_object(cond: Value) -> Value {
    if cond.is_object() {
        cond
    } else {
        json!({ "$eq": cond })
    }
}

/// An operator object: `{"$gt": 1}`, `{"$elemMatch": ...}`, `{"$or": [...]}`.
fn operator(cond: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    let values = prop::collection::vec(value(), 0..4);
    prop_oneof![
        (
            prop::sample::select(vec!["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]),
            value()
        )
            .prop_map(|(op, v)| json!({ op: v })),
        (prop::sample::select(vec!["$in", "$nin", "$all"]), values)
            .prop_map(|(op, vs)| json!({ op: vs })),
        any::<bool>().prop_map(|b| json!({"$exists": b})),
        prop::sample::select(vec![
            "null", "boolean", "number", "string", "array", "object"
        ])
        .prop_map(|t| json!({"$type": t})),
        (0u64..4).prop_map(|n| json!({"$size": n})),
        (prop::sample::select(vec![-3i64, -2, 2, 3]), -2i64..3)
            .prop_map(|(d, r)| json!({"$mod": [d, r]})),
        prop::sample::select(vec!["^a", "b$", "a|B", "", "^$", "é"])
            .prop_map(|r| json!({"$regex": r})),
        prop::sample::select(vec!["", "a", "b"]).prop_map(|p| json!({"$beginsWith": p})),
        cond.clone()
            .prop_map(|c| json!({"$elemMatch": as_object(c)})),
        cond.clone()
            .prop_map(|c| json!({"$allMatch": as_object(c)})),
        cond.clone()
            .prop_filter("$not needs an object", Value::is_object)
            .prop_map(|c| json!({"$not": c})),
        prop::collection::vec(cond, 0..3).prop_map(|cs| json!({"$or": cs})),
    ]
}

/// A condition on a field: a bare value, operators, or nested fields.
fn condition() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![value(), operator(value().boxed())].boxed();
    leaf.prop_recursive(3, 32, 3, |inner| {
        prop_oneof![
            operator(inner.clone()),
            // Several operators and nested fields in one object.
            prop::collection::vec(
                (
                    prop_oneof![path(), Just("$gt".to_owned()), Just("$ne".to_owned())],
                    inner
                ),
                1..3
            )
            .prop_map(|entries| {
                let mut m = Map::new();
                for (k, v) in entries {
                    // Operators take values, not conditions.
                    let v = if k.starts_with('$')
                        && v.as_object()
                            .is_some_and(|o| o.keys().any(|k| k.starts_with('$')))
                    {
                        json!(1)
                    } else {
                        v
                    };
                    m.insert(k, v);
                }
                Value::Object(m)
            }),
        ]
    })
    .boxed()
}

/// A selector: fields with conditions, combined with `$and/$or/$nor/$not`.
fn selector() -> impl Strategy<Value = Value> {
    let fields = prop::collection::btree_map(path(), condition(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    fields.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            (
                prop::sample::select(vec!["$and", "$or", "$nor"]),
                prop::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(op, xs)| json!({ op: xs })),
            inner.clone().prop_map(|x| json!({"$not": x})),
            (inner, path(), condition()).prop_map(|(x, p, c)| {
                let mut m = x.as_object().cloned().unwrap_or_default();
                m.insert(p, c);
                Value::Object(m)
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn selector_agrees_with_the_reference(sel in selector(), docs in prop::collection::vec(record(), 1..6)) {
        let parsed = Selector::parse(&sel).map_err(|e| TestCaseError::fail(format!("{sel}: {e}")))?;
        for doc in &docs {
            prop_assert_eq!(parsed.matches(doc), r_matches(&sel, doc), "selector {} on {}", sel, doc);
        }
    }
}

// ---------------------------------------------------------------------------
// Index plans against full scans.

/// Values that often collide, so ranges and ties are exercised.
fn key_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        4 => (0i64..5).prop_map(|n| Some(json!(n))),
        1 => Just(Some(json!(2.0))),
        2 => prop::sample::select(vec!["a", "b", "ab"]).prop_map(|s| Some(json!(s))),
        1 => prop::collection::vec((0i64..3).prop_map(Value::from), 0..3).prop_map(|v| Some(Value::Array(v))),
    ]
}

fn indexed_record() -> impl Strategy<Value = Value> {
    (key_value(), key_value(), 0i64..3).prop_map(|(a, b, c)| {
        let mut m = Map::new();
        if let Some(a) = a {
            m.insert("a".into(), a);
        }
        if let Some(b) = b {
            m.insert("b".into(), b);
        }
        m.insert("c".into(), json!(c));
        Value::Object(m)
    })
}

fn key_constraint() -> impl Strategy<Value = Value> {
    let v = || key_value().prop_map(|v| v.unwrap_or(json!(1)));
    prop_oneof![
        v(),
        (
            prop::sample::select(vec!["$eq", "$gt", "$gte", "$lt", "$lte", "$ne"]),
            v()
        )
            .prop_map(|(op, v)| json!({ op: v })),
        (v(), v()).prop_map(|(lo, hi)| json!({"$gte": lo, "$lt": hi})),
        prop::collection::vec(v(), 0..4).prop_map(|vs| json!({"$in": vs})),
        prop::collection::vec(v(), 0..3).prop_map(|vs| json!({"$nin": vs})),
        any::<bool>().prop_map(|b| json!({"$exists": b})),
        prop::sample::select(vec!["number", "string", "array", "null"])
            .prop_map(|t| json!({"$type": t})),
        prop::sample::select(vec!["", "a", "b"]).prop_map(|p| json!({"$beginsWith": p})),
    ]
}

fn find_body() -> impl Strategy<Value = Value> {
    let field_sel = prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "c", "_id"]).prop_map(str::to_owned),
        key_constraint(),
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
    .boxed();
    let sel = prop_oneof![
        4 => field_sel.clone(),
        1 => (field_sel.clone(), field_sel).prop_map(|(x, y)| json!({"$or": [x, y]})),
    ];
    let sort = prop::sample::select(vec![
        json!([]),
        json!(["a"]),
        json!([{"a": "desc"}]),
        json!(["a", "b"]),
        json!([{"b": "desc"}, {"a": "desc"}]),
        json!(["a", {"b": "desc"}]),
        json!(["b"]),
        json!(["_id"]),
        json!([{"_id": "desc"}]),
        json!(["c", "_id"]),
    ]);
    (
        sel,
        sort,
        prop::option::of(0usize..5),
        0usize..3,
        prop::option::of(prop::sample::select(vec!["ia", "iab", "ib"])),
    )
        .prop_map(|(selector, sort, limit, skip, use_index)| {
            let mut body = json!({"selector": selector, "sort": sort, "skip": skip});
            if let Some(limit) = limit {
                body["limit"] = json!(limit);
            }
            if let Some(name) = use_index {
                body["use_index"] = json!(name);
            }
            body
        })
}

/// Puts (`Some`) and deletes (`None`) on record ids `r0`..`r11`.
fn operations() -> impl Strategy<Value = Vec<(usize, Option<Value>)>> {
    prop::collection::vec(
        (0usize..12, prop::option::weighted(0.85, indexed_record())),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn find_with_indexes_equals_a_full_scan(ops in operations(), bodies in prop::collection::vec(find_body(), 1..5)) {
        let mut indexes = Indexes::default();
        for (name, fields) in [("ia", vec!["a"]), ("iab", vec!["a", "b"]), ("ib", vec!["b"]), ("iba", vec!["b", "a"])] {
            indexes.define(Index::new(name, fields.into_iter().map(str::to_owned).collect()).unwrap());
        }
        let mut records: BTreeMap<String, Value> = BTreeMap::new();
        for (n, op) in ops {
            let id = format!("r{n}");
            let after = op.map(|mut doc| {
                doc["_id"] = json!(id.clone());
                doc
            });
            let before = records.get(&id).cloned();
            indexes.update(&id, before.as_ref(), after.as_ref());
            match after {
                Some(doc) => records.insert(id, doc),
                None => records.remove(&id),
            };
        }
        let mut rebuilt = indexes.clone();
        rebuilt.rebuild(&records);
        for (a, b) in indexes.iter().zip(rebuilt.iter()) {
            prop_assert_eq!(a.len(), b.len(), "index {} drifted from a rebuild", a.name());
        }
        let none = Indexes::default();
        for body in bodies {
            let req = FindRequest::parse(&body).unwrap();
            let scanned = find(&req, &records, &none).unwrap();
            let indexed = find(&req, &records, &indexes).unwrap();
            prop_assert_eq!(&indexed.docs, &scanned.docs, "{} via {:?}", body, indexed.index);
            prop_assert!(indexed.examined <= records.len());
        }
    }
}

// ---------------------------------------------------------------------------
// Merging partial aggregates.

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (-1000i64..1000).prop_map(Value::from),
        1 => (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        1 => prop::sample::select(vec![json!(i64::MAX), json!(i64::MIN), json!(u64::MAX), json!(0.5)]),
        1 => Just(json!("not a number")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn merged_partials_equal_the_whole(
        values in prop::collection::vec((0i64..3, number()), 0..60),
        cuts in prop::collection::vec(0usize..60, 0..4),
        ints_only in any::<bool>(),
    ) {
        let records: Vec<Value> = values
            .into_iter()
            .filter(|(_, v)| !ints_only || v.as_i64().is_some_and(|i| i.unsigned_abs() < 1 << 40))
            .map(|(g, v)| json!({"g": g, "v": v}))
            .collect();
        let req = AggregateRequest::parse(&json!({"group_by": ["g"], "aggregate": {
            "n": {"$count": true}, "nv": {"$count": "v"}, "s": {"$sum": "v"}, "lo": {"$min": "v"}, "hi": {"$max": "v"},
            "avg": {"$avg": "v"}, "var": {"$variance": "v"}, "sd": {"$stddev": "v"},
            "h": {"$histogram": {"field": "v", "bounds": [-10, 0, 0.5, 100]}}
        }})).unwrap();
        let whole = aggregate(&req, &records).unwrap();

        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(records.len())).collect();
        cuts.push(0);
        cuts.push(records.len());
        cuts.sort_unstable();
        let parts: Vec<_> = cuts.windows(2).map(|w| aggregate(&req, &records[w[0]..w[1]]).unwrap()).collect();
        // Merge right to left, through serde, to vary association. (Through
        // `Value`, not text: serde_json parses float text exactly only with
        // its `float_roundtrip` feature.)
        let mut merged = parts.last().unwrap().clone();
        for part in parts.iter().rev().skip(1) {
            let wire: super::Aggregated = serde_json::from_value(serde_json::to_value(part).unwrap()).unwrap();
            let mut next = wire;
            next.merge(merged).unwrap();
            merged = next;
        }
        // Exact, floats included: every additive state is an integer.
        prop_assert_eq!(merged.to_json(), whole.to_json());
        if ints_only {
            for group in &whole.groups {
                let sum = group.partials["s"].value();
                prop_assert!(sum.is_i64(), "integer sum became {}", sum);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Hostile input: any JSON parses to a value or an error, never a panic.

fn hostile_json() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "$and",
        "$or",
        "$nor",
        "$not",
        "$eq",
        "$ne",
        "$gt",
        "$in",
        "$nin",
        "$all",
        "$exists",
        "$type",
        "$size",
        "$mod",
        "$regex",
        "$elemMatch",
        "$allMatch",
        "$keyMapMatch",
        "$beginsWith",
        "$foo",
        "a",
        "a.b",
        "",
        "a..b",
        "selector",
        "fields",
        "sort",
        "limit",
        "skip",
        "use_index",
        "bookmark",
        "group_by",
        "aggregate",
        "$count",
        "$sum",
        "$histogram",
        "field",
        "bounds",
        "scope",
        "asc",
        "desc",
    ]);
    let leaf = prop_oneof![
        scalar(),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!("(")
        ]),
    ];
    leaf.prop_recursive(4, 48, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..4).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_json_never_panics(input in hostile_json(), doc in record()) {
        if let Ok(selector) = Selector::parse(&input) {
            let _ = selector.matches(&doc);
        }
        if let Ok(req) = FindRequest::parse(&input) {
            let records: BTreeMap<String, Value> = [("x".to_owned(), doc.clone())].into_iter().collect();
            let _ = find(&req, &records, &Indexes::default());
        }
        if let Ok(req) = AggregateRequest::parse(&input) {
            let _ = aggregate(&req, [&doc]).map(|out| out.to_json());
        }
        for wrapped in [json!({ "selector": input.clone() }), json!({ "aggregate": input.clone() })] {
            let _ = FindRequest::parse(&wrapped);
            let _ = AggregateRequest::parse(&wrapped);
        }
    }
}
