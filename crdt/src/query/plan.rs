//! From a selector to the key ranges an index scan must cover.
//!
//! Each top-level conjunct on a field gives a set of collation intervals the
//! field's value must fall in; intersecting them gives the field's constraint.
//! For a compound index, while the leading fields are pinned to single values,
//! the next field's intervals extend the ranges (`year = 2026, month > 3`).
//! Every range is a superset of what the selector accepts, so scanning it and
//! filtering with the full selector loses nothing.

use std::cmp::Ordering;
use std::ops::Bound;

use serde_json::{Map, Value};

use super::collate::{JsonType, compare, equal};
use super::path::FieldPath;
use super::selector::{Leaf, Test};

/// Compound ranges are only extended while they stay this few; `$in` on the
/// first field alone may produce more, bounded by the selector size.
const MAX_RANGES: usize = 1024;

/// A set of values between two bounds, in collation order.
#[derive(Debug, Clone)]
pub(crate) struct Interval {
    pub(crate) lo: Bound<Value>,
    pub(crate) hi: Bound<Value>,
}

fn cmp_lo(a: &Bound<Value>, b: &Bound<Value>) -> Ordering {
    match (a, b) {
        (Bound::Unbounded, Bound::Unbounded) => Ordering::Equal,
        (Bound::Unbounded, _) => Ordering::Less,
        (_, Bound::Unbounded) => Ordering::Greater,
        (Bound::Included(x), Bound::Included(y)) | (Bound::Excluded(x), Bound::Excluded(y)) => {
            compare(x, y)
        }
        (Bound::Included(x), Bound::Excluded(y)) => compare(x, y).then(Ordering::Less),
        (Bound::Excluded(x), Bound::Included(y)) => compare(x, y).then(Ordering::Greater),
    }
}

fn cmp_hi(a: &Bound<Value>, b: &Bound<Value>) -> Ordering {
    match (a, b) {
        (Bound::Unbounded, Bound::Unbounded) => Ordering::Equal,
        (Bound::Unbounded, _) => Ordering::Greater,
        (_, Bound::Unbounded) => Ordering::Less,
        (Bound::Included(x), Bound::Included(y)) | (Bound::Excluded(x), Bound::Excluded(y)) => {
            compare(x, y)
        }
        (Bound::Included(x), Bound::Excluded(y)) => compare(x, y).then(Ordering::Greater),
        (Bound::Excluded(x), Bound::Included(y)) => compare(x, y).then(Ordering::Less),
    }
}

impl Interval {
    fn new(lo: Bound<Value>, hi: Bound<Value>) -> Interval {
        Interval { lo, hi }
    }

    fn point(value: Value) -> Interval {
        Interval::new(Bound::Included(value.clone()), Bound::Included(value))
    }

    pub(crate) fn full() -> Interval {
        Interval::new(Bound::Unbounded, Bound::Unbounded)
    }

    /// The single value this interval holds, if it is a point.
    pub(crate) fn as_point(&self) -> Option<&Value> {
        match (&self.lo, &self.hi) {
            (Bound::Included(a), Bound::Included(b)) if equal(a, b) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        matches!((&self.lo, &self.hi), (Bound::Unbounded, Bound::Unbounded))
    }

    fn is_empty(&self) -> bool {
        match (&self.lo, &self.hi) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(a), Bound::Included(b)) => compare(a, b) == Ordering::Greater,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                compare(a, b) != Ordering::Less
            }
        }
    }

    fn intersect(&self, other: &Interval) -> Interval {
        let lo = if cmp_lo(&self.lo, &other.lo) == Ordering::Less {
            &other.lo
        } else {
            &self.lo
        };
        let hi = if cmp_hi(&self.hi, &other.hi) == Ordering::Greater {
            &other.hi
        } else {
            &self.hi
        };
        Interval::new(lo.clone(), hi.clone())
    }

    /// The values of one JSON type.
    fn of_type(ty: JsonType) -> Interval {
        use Bound::{Excluded, Included, Unbounded};
        match ty {
            JsonType::Null => Interval::point(Value::Null),
            JsonType::Boolean => {
                Interval::new(Included(Value::Bool(false)), Included(Value::Bool(true)))
            }
            JsonType::Number => Interval::new(
                Excluded(Value::Bool(true)),
                Excluded(Value::String(String::new())),
            ),
            JsonType::String => Interval::new(
                Included(Value::String(String::new())),
                Excluded(Value::Array(Vec::new())),
            ),
            JsonType::Array => Interval::new(
                Included(Value::Array(Vec::new())),
                Excluded(Value::Object(Map::new())),
            ),
            JsonType::Object => Interval::new(Included(Value::Object(Map::new())), Unbounded),
        }
    }

    /// The strings that start with `prefix`.
    fn prefixed(prefix: &str) -> Interval {
        let hi = match successor(prefix) {
            Some(next) => Bound::Excluded(Value::String(next)),
            None => Bound::Excluded(Value::Array(Vec::new())),
        };
        Interval::new(Bound::Included(Value::String(prefix.to_owned())), hi)
    }
}

/// The smallest string greater than every string starting with `prefix`, if
/// any: the prefix with its last incrementable character incremented.
fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Whether the lower bound of `next` lies above the upper bound of `current`
/// with no value in between shared.
fn separated(current_hi: &Bound<Value>, next_lo: &Bound<Value>) -> bool {
    match (current_hi, next_lo) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
        (Bound::Included(h), Bound::Included(l)) => compare(h, l) == Ordering::Less,
        (Bound::Included(h) | Bound::Excluded(h), Bound::Included(l) | Bound::Excluded(l)) => {
            compare(h, l) != Ordering::Greater
        }
    }
}

/// Sorts intervals and merges overlapping ones, so scans never repeat a key.
fn normalize(mut set: Vec<Interval>) -> Vec<Interval> {
    set.retain(|i| !i.is_empty());
    set.sort_by(|a, b| cmp_lo(&a.lo, &b.lo));
    let mut out: Vec<Interval> = Vec::with_capacity(set.len());
    for next in set {
        match out.last_mut() {
            Some(current) if !separated(&current.hi, &next.lo) => {
                if cmp_hi(&next.hi, &current.hi) == Ordering::Greater {
                    current.hi = next.hi;
                }
            }
            _ => out.push(next),
        }
    }
    out
}

/// Intersects two normalized sets, keeping the result normalized.
fn intersect_sets(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let both = a[i].intersect(&b[j]);
        if !both.is_empty() {
            out.push(both);
        }
        if cmp_hi(&a[i].hi, &b[j].hi) == Ordering::Less {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The intervals one leaf confines its field to, or `None` if it does not
/// narrow the field (negations, `$exists`).
fn leaf_intervals(leaf: &Leaf) -> Option<Vec<Interval>> {
    use Bound::{Excluded, Included, Unbounded};
    if leaf.negated {
        return None;
    }
    let set = match &leaf.test {
        Test::Eq(v) => vec![Interval::point(v.clone())],
        Test::Gt(v) => vec![Interval::new(Excluded(v.clone()), Unbounded)],
        Test::Gte(v) => vec![Interval::new(Included(v.clone()), Unbounded)],
        Test::Lt(v) => vec![Interval::new(Unbounded, Excluded(v.clone()))],
        Test::Lte(v) => vec![Interval::new(Unbounded, Included(v.clone()))],
        Test::In(args) => {
            // An array field matches `$in` through its elements, so every
            // array stays a candidate; array arguments are inside that range.
            let mut set: Vec<Interval> = args
                .iter()
                .filter(|a| !a.is_array())
                .map(|a| Interval::point(a.clone()))
                .collect();
            set.push(Interval::of_type(JsonType::Array));
            set
        }
        Test::Type(ty) => vec![Interval::of_type(*ty)],
        Test::BeginsWith(prefix) => vec![Interval::prefixed(prefix)],
        Test::Regex(_) => vec![Interval::of_type(JsonType::String)],
        Test::Mod { .. } => vec![Interval::of_type(JsonType::Number)],
        Test::Size(_) | Test::All(_) | Test::ElemMatch(_) | Test::AllMatch(_) => {
            vec![Interval::of_type(JsonType::Array)]
        }
        Test::KeyMapMatch(_) => vec![Interval::of_type(JsonType::Object)],
        Test::Exists(_) => return None,
    };
    Some(normalize(set))
}

/// The intersection of every conjunct's intervals on exactly `path`, or
/// `None` when no conjunct narrows it. `Some(vec![])` means nothing matches.
pub(crate) fn field_constraint(conjuncts: &[&Leaf], path: &FieldPath) -> Option<Vec<Interval>> {
    let mut acc: Option<Vec<Interval>> = None;
    for leaf in conjuncts.iter().filter(|l| &l.path == path) {
        if let Some(set) = leaf_intervals(leaf) {
            acc = Some(match acc {
                None => set,
                Some(prev) => intersect_sets(&prev, &set),
            });
        }
    }
    acc
}

/// Whether every match has a value at `path`: some conjunct tests it (or a
/// field below it) with anything but `$exists: false`.
pub(crate) fn requires(conjuncts: &[&Leaf], path: &FieldPath) -> bool {
    conjuncts
        .iter()
        .any(|l| l.path.starts_with(path) && !matches!(l.test, Test::Exists(false)))
}

/// A range of compound index keys: the leading fields equal `prefix`, and
/// the next field lies in `last`.
#[derive(Debug, Clone)]
pub(crate) struct KeyRange {
    pub(crate) prefix: Vec<Value>,
    pub(crate) last: Interval,
}

/// The key ranges to scan in an index over `fields`, in key order.
#[derive(Debug, Clone)]
pub(crate) struct Ranges {
    pub(crate) ranges: Vec<KeyRange>,
    /// Whether the first field is narrowed at all.
    pub(crate) narrowed: bool,
}

impl Ranges {
    pub(crate) fn build(conjuncts: &[&Leaf], fields: &[FieldPath]) -> Ranges {
        let mut ranges = vec![KeyRange {
            prefix: Vec::new(),
            last: Interval::full(),
        }];
        let mut narrowed = false;
        for (i, field) in fields.iter().enumerate() {
            // Only ranges that pin every earlier field can extend to this one;
            // the others (say, the array range of an `$in`) stay as they are.
            let open = |r: &KeyRange| r.prefix.len() == i && r.last.is_full();
            let open_count = ranges.iter().filter(|r| open(r)).count();
            if open_count == 0 {
                break;
            }
            let Some(set) = field_constraint(conjuncts, field) else {
                break;
            };
            if i > 0
                && (ranges.len() - open_count).saturating_add(open_count.saturating_mul(set.len()))
                    > MAX_RANGES
            {
                break;
            }
            narrowed |= i == 0;
            ranges = ranges
                .into_iter()
                .flat_map(|r| {
                    if open(&r) {
                        set.iter()
                            .map(|iv| KeyRange {
                                prefix: r.prefix.clone(),
                                last: iv.clone(),
                            })
                            .collect()
                    } else {
                        vec![r]
                    }
                })
                .collect();
            for range in ranges.iter_mut().filter(|r| r.prefix.len() == i) {
                if let Some(point) = range.last.as_point() {
                    range.prefix.push(point.clone());
                    range.last = Interval::full();
                }
            }
        }
        Ranges { ranges, narrowed }
    }

    /// How many leading fields every range pins to one value.
    pub(crate) fn equality_depth(&self) -> usize {
        self.ranges
            .iter()
            .map(|r| r.prefix.len())
            .min()
            .unwrap_or(0)
    }

    /// How many leading fields hold a single value across the whole scan.
    pub(crate) fn pinned(&self) -> usize {
        match self.ranges.as_slice() {
            [only] => only.prefix.len(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Selector;
    use serde_json::json;

    fn ranges(selector: Value, fields: &[&str]) -> Ranges {
        let s = Selector::parse(&selector).unwrap();
        let fields: Vec<FieldPath> = fields
            .iter()
            .map(|f| FieldPath::parse(f).unwrap())
            .collect();
        Ranges::build(&s.conjuncts(), &fields)
    }

    #[test]
    fn equality_then_range_makes_one_compound_range() {
        let r = ranges(
            json!({"year": 2026, "month": {"$gt": 3, "$lte": 6}}),
            &["year", "month"],
        );
        assert!(r.narrowed);
        assert_eq!(r.ranges.len(), 1);
        assert_eq!(r.ranges[0].prefix, vec![json!(2026)]);
        assert!(matches!(&r.ranges[0].last.lo, Bound::Excluded(v) if v == &json!(3)));
        assert!(matches!(&r.ranges[0].last.hi, Bound::Included(v) if v == &json!(6)));
        assert_eq!(r.pinned(), 1);
    }

    #[test]
    fn contradictions_give_no_ranges() {
        let r = ranges(json!({"a": {"$gt": 5, "$lt": 2}}), &["a"]);
        assert!(r.narrowed);
        assert!(r.ranges.is_empty());
        let r = ranges(json!({"a": {"$gt": 5, "$eq": 5}}), &["a"]);
        assert!(r.ranges.is_empty());
    }

    #[test]
    fn in_keeps_arrays_as_candidates_and_sorts_points() {
        let r = ranges(json!({"a": {"$in": ["b", 1, "a", [1]]}}), &["a", "b"]);
        assert_eq!(r.ranges.len(), 4);
        assert_eq!(r.ranges[0].prefix, vec![json!(1)]);
        assert_eq!(r.ranges[1].prefix, vec![json!("a")]);
        assert_eq!(r.ranges[2].prefix, vec![json!("b")]);
        assert!(r.ranges[3].prefix.is_empty());
        assert!(matches!(&r.ranges[3].last.lo, Bound::Included(v) if v == &json!([])));
        assert_eq!(r.equality_depth(), 0);
    }

    #[test]
    fn negations_and_or_do_not_narrow() {
        assert!(!ranges(json!({"a": {"$ne": 1}}), &["a"]).narrowed);
        assert!(!ranges(json!({"$or": [{"a": 1}, {"a": 2}]}), &["a"]).narrowed);
        assert!(!ranges(json!({"b": 1}), &["a"]).narrowed);
    }

    #[test]
    fn begins_with_is_a_string_range() {
        let r = ranges(json!({"a": {"$beginsWith": "ab"}}), &["a"]);
        assert!(matches!(&r.ranges[0].last.hi, Bound::Excluded(v) if v == &json!("ac")));
        assert_eq!(successor("a\u{10FFFF}"), Some("b".to_owned()));
        assert_eq!(successor("\u{10FFFF}"), None);
        assert_eq!(successor("\u{D7FF}"), Some("\u{E000}".to_owned()));
    }

    #[test]
    fn requires_sees_existence_through_any_test_but_exists_false() {
        let s = Selector::parse(&json!({"a.b": {"$ne": 1}, "c": {"$exists": false}})).unwrap();
        let c = s.conjuncts();
        assert!(requires(&c, &FieldPath::parse("a").unwrap()));
        assert!(requires(&c, &FieldPath::parse("a.b").unwrap()));
        assert!(!requires(&c, &FieldPath::parse("c").unwrap()));
        assert!(!requires(&c, &FieldPath::parse("a.b.c").unwrap()));
    }
}
