//! Grouped aggregates with mergeable partial states.
//!
//! Each aggregate of each group is a [`Partial`]: a small state that absorbs
//! values one at a time and merges with another partial of the same
//! aggregate. Every additive part of it is an integer (counts, histogram
//! bins, and sums of values and of their squares in fixed-point
//! micro-units), so merging is exactly associative and commutative: a
//! federated query aggregates on each node, ships the [`Aggregated`] (it is
//! serde-serializable), and merges the answers in any order into the result
//! one node would compute over the union of the records.

use std::collections::BTreeMap;

use ethnum::{I256, U256};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::Error;
use super::collate::{Collated, compare_numbers, describe};
use super::path::FieldPath;
use super::selector::Selector;

/// The most groups one aggregate may produce.
pub const MAX_GROUPS: usize = 100_000;

/// The most fields `group_by` may list.
pub const MAX_GROUP_BY: usize = 16;

/// The most named aggregates one request may compute.
pub const MAX_AGGREGATES: usize = 64;

/// The most bounds a `$histogram` may have.
pub const MAX_HISTOGRAM_BOUNDS: usize = 1024;

const CONTEXT: &str = "aggregate request";
const KEYS: &str = "selector, group_by, aggregate, scope, collection";

/// Which replicas a query runs on.
///
/// Only [`Scope::Local`] is implemented; [`AggregateRequest::parse`] refuses
/// `"devices"` and `"contacts"` until federated queries exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This device's replica only.
    #[default]
    Local,
    /// Every device of this account, records deduplicated by `_id`.
    Devices,
    /// Consenting contacts' accounts, each counted once.
    Contacts,
}

/// What an aggregate computes from its field's values.
///
/// `$sum`, `$avg`, `$min`, `$max`, `$variance`, `$stddev` and `$histogram`
/// consider only numeric values: records where the field is missing or not a
/// number are skipped, not counted as zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    /// `$count`: matching records (`true`), or records whose field is present
    /// and not null (a field name).
    Count,
    /// `$sum`: an integer when every value is an integer and the sum fits in
    /// an `i64` (it is computed exactly), a float otherwise; `0` for no
    /// values.
    Sum,
    /// `$avg`: the mean, or null for no values.
    Avg,
    /// `$min`: the smallest number, or null for no values.
    Min,
    /// `$max`: the largest number, or null for no values.
    Max,
    /// `$variance`: the population variance (divides by n, not n - 1), or
    /// null for no values.
    Variance,
    /// `$stddev`: the population standard deviation, or null for no values.
    Stddev,
    /// `$histogram`: how many values fall below `bounds[0]`, in each
    /// `[bounds[i], bounds[i+1])`, and at or above the last bound.
    Histogram {
        /// Strictly ascending bin edges.
        bounds: Vec<Number>,
    },
}

/// One named aggregate of a request: `"avg_kwh": {"$avg": "kwh"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateSpec {
    /// The output name.
    pub name: String,
    /// What to compute.
    pub reduce: Reduce,
    /// The field to read; `None` for `{"$count": true}`.
    pub field: Option<FieldPath>,
}

/// A parsed aggregate query:
/// `{"selector": {...}, "group_by": ["month"], "aggregate": {"n": {"$count": true}}}`.
#[derive(Debug, Clone)]
pub struct AggregateRequest {
    /// Which records take part; all of them by default.
    pub selector: Selector,
    /// The fields whose values form a group's key. A missing field groups as
    /// `null`.
    pub group_by: Vec<FieldPath>,
    /// The aggregates to compute per group, by name.
    pub aggregates: Vec<AggregateSpec>,
    /// Where the query runs: always [`Scope::Local`] for now, as
    /// [`AggregateRequest::parse`] refuses the federated scopes.
    pub scope: Scope,
    /// The collection named in the request, if any (routing is the caller's).
    pub collection: Option<String>,
}

fn bad_value(key: &'static str, expected: &'static str, got: &Value) -> Error {
    Error::BadValue {
        key,
        context: CONTEXT,
        expected,
        got: describe(got).to_owned(),
    }
}

impl AggregateRequest {
    /// Parses an aggregate query. `aggregate` is required and holds 1 to
    /// [`MAX_AGGREGATES`] entries; unknown keys are errors.
    ///
    /// Federated queries do not exist yet, so `scope` may only be `"local"`
    /// (the same as leaving it out: the query runs on this replica);
    /// `"devices"`, `"contacts"` or any other value is refused with
    /// [`Error::UnsupportedScope`] (a non-string with [`Error::BadValue`]),
    /// never answered from the local replica alone.
    pub fn parse(body: &Value) -> Result<AggregateRequest, Error> {
        let Value::Object(map) = body else {
            return Err(Error::NotAnObject {
                what: CONTEXT,
                got: describe(body),
            });
        };
        let mut request = AggregateRequest {
            selector: Selector::all(),
            group_by: Vec::new(),
            aggregates: Vec::new(),
            scope: Scope::Local,
            collection: None,
        };
        let mut has_aggregate = false;
        for (key, value) in map {
            match key.as_str() {
                "selector" => request.selector = Selector::parse(value)?,
                "group_by" => request.group_by = parse_group_by(value)?,
                "aggregate" => {
                    request.aggregates = parse_aggregates(value)?;
                    has_aggregate = true;
                }
                // Federated queries do not exist yet: refuse a scope that
                // asks for them rather than silently answer from this replica.
                "scope" => match value {
                    Value::String(scope) if scope == "local" => request.scope = Scope::Local,
                    Value::String(scope) => {
                        return Err(Error::UnsupportedScope {
                            context: CONTEXT,
                            scope: scope.clone(),
                        });
                    }
                    other => {
                        return Err(bad_value(
                            "scope",
                            "\"local\" (federated scopes are not supported yet)",
                            other,
                        ));
                    }
                },
                "collection" => match value {
                    Value::String(name) => request.collection = Some(name.clone()),
                    other => return Err(bad_value("collection", "a collection name", other)),
                },
                other => {
                    return Err(Error::UnknownKey {
                        key: other.to_owned(),
                        context: CONTEXT,
                        expected: KEYS,
                    });
                }
            }
        }
        if !has_aggregate {
            return Err(Error::MissingKey {
                key: "aggregate",
                context: CONTEXT,
            });
        }
        Ok(request)
    }
}

fn parse_group_by(value: &Value) -> Result<Vec<FieldPath>, Error> {
    const EXPECTED: &str = "an array of distinct field names";
    let Value::Array(items) = value else {
        return Err(bad_value("group_by", EXPECTED, value));
    };
    if items.len() > MAX_GROUP_BY {
        return Err(Error::TooManyEntries {
            key: "group_by",
            context: CONTEXT,
            limit: MAX_GROUP_BY,
        });
    }
    let mut fields: Vec<FieldPath> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(name) = item else {
            return Err(bad_value("group_by", EXPECTED, item));
        };
        let field = FieldPath::parse(name)?;
        if fields.iter().any(|f| f.as_str() == field.as_str()) {
            return Err(Error::BadValue {
                key: "group_by",
                context: CONTEXT,
                expected: EXPECTED,
                got: format!("{name:?} twice"),
            });
        }
        fields.push(field);
    }
    Ok(fields)
}

fn parse_aggregates(value: &Value) -> Result<Vec<AggregateSpec>, Error> {
    const EXPECTED: &str = "an object like {\"n\": {\"$count\": true}}";
    let Value::Object(map) = value else {
        return Err(bad_value("aggregate", EXPECTED, value));
    };
    if map.is_empty() {
        return Err(Error::BadValue {
            key: "aggregate",
            context: CONTEXT,
            expected: EXPECTED,
            got: "an empty object".to_owned(),
        });
    }
    if map.len() > MAX_AGGREGATES {
        return Err(Error::TooManyEntries {
            key: "aggregate",
            context: CONTEXT,
            limit: MAX_AGGREGATES,
        });
    }
    map.iter()
        .map(|(name, definition)| parse_spec(name, definition))
        .collect()
}

fn parse_spec(name: &str, definition: &Value) -> Result<AggregateSpec, Error> {
    let bad = |op: &str, expected: &'static str, got: &Value| Error::BadAggregate {
        name: name.to_owned(),
        op: op.to_owned(),
        expected,
        got: match got {
            Value::Number(n) => n.to_string(),
            other => describe(other).to_owned(),
        },
    };
    let single = match definition {
        Value::Object(map) if map.len() == 1 => map.iter().next(),
        _ => None,
    };
    let Some((op, arg)) = single else {
        return Err(bad(
            "its definition",
            "an object with one operator, like {\"$avg\": \"kwh\"}",
            definition,
        ));
    };
    let field = |arg: &Value| match arg {
        Value::String(f) => FieldPath::parse(f),
        other => Err(bad(op, "a field name", other)),
    };
    let (reduce, field) = match op.as_str() {
        "$count" => match arg {
            Value::Bool(true) => (Reduce::Count, None),
            Value::String(_) => (Reduce::Count, Some(field(arg)?)),
            other => return Err(bad(op, "true or a field name", other)),
        },
        "$sum" => (Reduce::Sum, Some(field(arg)?)),
        "$avg" => (Reduce::Avg, Some(field(arg)?)),
        "$min" => (Reduce::Min, Some(field(arg)?)),
        "$max" => (Reduce::Max, Some(field(arg)?)),
        "$variance" => (Reduce::Variance, Some(field(arg)?)),
        "$stddev" => (Reduce::Stddev, Some(field(arg)?)),
        "$histogram" => {
            const EXPECTED: &str =
                "{\"field\": name, \"bounds\": [1 to 1024 strictly ascending numbers]}";
            let Value::Object(spec) = arg else {
                return Err(bad(op, EXPECTED, arg));
            };
            if spec.len() != 2 {
                return Err(bad(op, EXPECTED, arg));
            }
            let (Some(Value::String(f)), Some(Value::Array(raw))) =
                (spec.get("field"), spec.get("bounds"))
            else {
                return Err(bad(op, EXPECTED, arg));
            };
            if raw.is_empty() || raw.len() > MAX_HISTOGRAM_BOUNDS {
                return Err(bad(op, EXPECTED, arg));
            }
            let bounds: Vec<Number> = raw
                .iter()
                .map(|b| match b {
                    Value::Number(n) => Ok(n.clone()),
                    other => Err(bad(op, EXPECTED, other)),
                })
                .collect::<Result<_, _>>()?;
            if bounds
                .windows(2)
                .any(|w| compare_numbers(&w[0], &w[1]).is_ge())
            {
                return Err(Error::BadAggregate {
                    name: name.to_owned(),
                    op: op.clone(),
                    expected: "strictly ascending bounds",
                    got: Value::Array(raw.clone()).to_string(),
                });
            }
            (Reduce::Histogram { bounds }, Some(FieldPath::parse(f)?))
        }
        _ => {
            return Err(Error::UnknownAggregate {
                name: name.to_owned(),
                op: op.clone(),
            });
        }
    };
    Ok(AggregateSpec {
        name: name.to_owned(),
        reduce,
        field,
    })
}

/// Fixed-point scale of [`Partial`]'s sums: a number is carried as a whole
/// count of millionths (micro-units), enough for currency and meter readings.
pub const SCALE: i128 = 1_000_000;

/// The largest magnitude a number may have to enter an exact sum: any 64-bit
/// integer qualifies. With it, no sum of up to `u64::MAX` values can overflow
/// the 256-bit accumulators, so overflow never depends on the order values
/// arrive in.
pub const MAX_EXACT: f64 = 1e20;

/// The mergeable state of one aggregate over some values.
///
/// Everything additive is an integer, so merging is exactly associative and
/// commutative and a partial does not depend on the order its values or its
/// peers' partials arrived in: a federated answer equals the same query run
/// on one node over the union of the records, bit for bit.
///
/// - `$count` counts; `$histogram` counts per bin.
/// - `$sum` and `$avg` keep Σq, where q is the value in micro-units
///   ([`SCALE`]): integers exactly, other numbers rounded to the nearest
///   millionth (half away from zero) before they are added.
/// - `$variance` and `$stddev` keep Σq and Σq² (exact 256-bit integers), and
///   the variance is `(n·Σq² − (Σq)²) / n²`, computed from those integers.
/// - `$min` and `$max` keep the extreme number itself.
///
/// A number beyond ±[`MAX_EXACT`] cannot enter an exact sum: the aggregate
/// reports [`Error::OutOfRange`] rather than a rounded answer. Serialize a
/// partial to ship it; [`Partial::merge`] checks that both sides computed the
/// same thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    reduce: Reduce,
    /// Records for `$count`, numeric values otherwise.
    count: u64,
    /// Σq in micro-units, as a decimal string on the wire.
    #[serde(with = "decimal")]
    sum: I256,
    /// Σq², in micro-units squared.
    #[serde(with = "decimal")]
    squares: U256,
    min: Option<Number>,
    max: Option<Number>,
    /// Whether every value so far was an integer.
    integral: bool,
    /// Whether a value beyond ±[`MAX_EXACT`] was offered to a sum.
    out_of_range: bool,
    histogram: Vec<u64>,
}

/// Wide integers as decimal strings: JSON numbers (and serde_json) stop at
/// 64 bits.
mod decimal {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<T: Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, T: FromStr, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| D::Error::custom("a wide sum must be a decimal integer string"))
    }
}

/// `n` in micro-units, or `None` beyond ±[`MAX_EXACT`]. The conversion of a
/// float is IEEE arithmetic, the same on every node, so each value adds the
/// same integer wherever it is aggregated.
fn micro_units(n: &Number) -> Option<i128> {
    if let Some(i) = n.as_i128() {
        return i.checked_mul(SCALE);
    }
    let x = n.as_f64()?;
    if !x.is_finite() || x.abs() > MAX_EXACT {
        return None;
    }
    Some((x * SCALE as f64).round() as i128)
}

/// A float as JSON, null when it is not finite.
pub(crate) fn float_value(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A whole number as the JSON number it is, as a float beyond 64 bits.
fn whole_value(x: I256) -> Value {
    if let Ok(small) = i64::try_from(x) {
        Value::from(small)
    } else if let Ok(large) = u64::try_from(x) {
        Value::from(large)
    } else {
        float_value(x.as_f64())
    }
}

impl Partial {
    /// The empty state for `reduce`.
    pub fn new(reduce: Reduce) -> Partial {
        let bins = match &reduce {
            Reduce::Histogram { bounds } => bounds.len() + 1,
            _ => 0,
        };
        Partial {
            reduce,
            count: 0,
            sum: I256::ZERO,
            squares: U256::ZERO,
            min: None,
            max: None,
            integral: true,
            out_of_range: false,
            histogram: vec![0; bins],
        }
    }

    /// What this partial computes.
    pub fn reduce(&self) -> &Reduce {
        &self.reduce
    }

    /// Records counted (`$count`) or numeric values absorbed (the others).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether a value too large for an exact sum was offered: the aggregate
    /// has no exact answer.
    pub fn out_of_range(&self) -> bool {
        self.out_of_range
    }

    /// Counts one record, for `{"$count": true}`.
    pub fn add_record(&mut self) {
        self.count = self.count.saturating_add(1);
    }

    /// Absorbs one field value: `$count` counts it unless it is null, the
    /// others take it only if it is a number. Only the statistics the
    /// operator reports are updated, since this runs once per record.
    pub fn add(&mut self, value: &Value) {
        let Value::Number(n) = value else {
            if self.reduce == Reduce::Count && !value.is_null() {
                self.add_record();
            }
            return;
        };
        self.count = self.count.saturating_add(1);
        match &self.reduce {
            Reduce::Count => {}
            Reduce::Sum | Reduce::Avg | Reduce::Variance | Reduce::Stddev => {
                self.integral &= !n.is_f64();
                let Some(q) = micro_units(n) else {
                    self.out_of_range = true;
                    return;
                };
                self.sum += I256::from(q);
                if matches!(self.reduce, Reduce::Variance | Reduce::Stddev) {
                    let magnitude = U256::from(q.unsigned_abs());
                    self.squares += magnitude * magnitude;
                }
            }
            Reduce::Min => {
                self.integral &= !n.is_f64();
                if self
                    .min
                    .as_ref()
                    .is_none_or(|m| compare_numbers(n, m).is_lt())
                {
                    self.min = Some(n.clone());
                }
            }
            Reduce::Max => {
                self.integral &= !n.is_f64();
                if self
                    .max
                    .as_ref()
                    .is_none_or(|m| compare_numbers(n, m).is_gt())
                {
                    self.max = Some(n.clone());
                }
            }
            Reduce::Histogram { bounds } => {
                let bin = bounds.partition_point(|b| compare_numbers(b, n).is_le());
                if let Some(slot) = self.histogram.get_mut(bin) {
                    *slot = slot.saturating_add(1);
                }
            }
        }
    }

    /// The additive integers of this partial, in the order federated answers
    /// lay them out: `$count` [n], `$sum` [Σq], `$avg` [n, Σq], `$variance`
    /// and `$stddev` [n, Σq, Σq²], `$histogram` one count per bin, `$min`
    /// and `$max` none (they are not additive). Σq² fits an `I256` for any
    /// honest state, since every value is at most [`MAX_EXACT`].
    pub(crate) fn additive(&self) -> Vec<I256> {
        let n = I256::from(self.count);
        match &self.reduce {
            Reduce::Count => vec![n],
            Reduce::Sum => vec![self.sum],
            Reduce::Avg => vec![n, self.sum],
            Reduce::Variance | Reduce::Stddev => vec![n, self.sum, self.squares.as_i256()],
            Reduce::Min | Reduce::Max => Vec::new(),
            Reduce::Histogram { .. } => self.histogram.iter().map(|c| I256::from(*c)).collect(),
        }
    }

    /// Whether the state is shaped as its `reduce` requires: a partial from a
    /// peer is untrusted.
    fn well_formed(&self) -> bool {
        let bins = match &self.reduce {
            Reduce::Histogram { bounds } => bounds.len() + 1,
            _ => 0,
        };
        self.histogram.len() == bins
    }

    /// Folds `other` into `self`, as if `self` had absorbed `other`'s values
    /// too. Fails, leaving `self` unchanged, when `other` computes something
    /// else (another operator or other histogram bounds) or its sums are
    /// beyond what any run of values could reach.
    pub fn merge(&mut self, other: &Partial) -> Result<(), Error> {
        if self.reduce != other.reduce {
            return Err(Error::MergeMismatch {
                reason: "the aggregates use different operators or histogram bounds",
            });
        }
        if !self.well_formed() || !other.well_formed() {
            return Err(Error::MergeMismatch {
                reason: "histogram counts do not match their bounds",
            });
        }
        // Honest sums of u64::MAX values of at most MAX_EXACT stay far below
        // 2^255; a peer's sums that overflow are forged, not rounding.
        let (Some(sum), Some(squares)) = (
            self.sum.checked_add(other.sum),
            self.squares.checked_add(other.squares),
        ) else {
            return Err(Error::MergeMismatch {
                reason: "a partial's sums are larger than any values could give",
            });
        };
        self.count = self.count.saturating_add(other.count);
        self.sum = sum;
        self.squares = squares;
        self.integral &= other.integral;
        self.out_of_range |= other.out_of_range;
        if let Some(m) = &other.min
            && self
                .min
                .as_ref()
                .is_none_or(|s| compare_numbers(m, s).is_lt())
        {
            self.min = Some(m.clone());
        }
        if let Some(m) = &other.max
            && self
                .max
                .as_ref()
                .is_none_or(|s| compare_numbers(m, s).is_gt())
        {
            self.max = Some(m.clone());
        }
        for (slot, add) in self.histogram.iter_mut().zip(&other.histogram) {
            *slot = slot.saturating_add(*add);
        }
        Ok(())
    }

    /// The population variance in squared units, from the exact integers:
    /// `(n·Σq² − (Σq)²) / n²`, scaled back from micro-units. The numerator
    /// is exact whenever it fits in 256 bits (any realistic data); beyond
    /// that the float formula is used, still a function of the state alone.
    fn variance(&self) -> f64 {
        let n = self.count as f64;
        let scale = SCALE as f64;
        let sum = self.sum.unsigned_abs();
        let exact = U256::from(self.count)
            .checked_mul(self.squares)
            .zip(sum.checked_mul(sum))
            .and_then(|(a, b)| a.checked_sub(b));
        match exact {
            Some(numerator) => numerator.as_f64() / (n * n) / (scale * scale),
            None => {
                let mean = self.sum.as_f64() / n;
                ((self.squares.as_f64() / n - mean * mean) / (scale * scale)).max(0.0)
            }
        }
    }

    /// The final JSON value of the aggregate: null for an aggregate with no
    /// values (and for one [`Partial::out_of_range`], which
    /// [`aggregate`] and [`Aggregated::merge`] report as an error instead).
    pub fn value(&self) -> Value {
        let number = |n: &Option<Number>| match n {
            None => Value::Null,
            Some(n) if self.integral => Value::Number(n.clone()),
            Some(n) => float_value(n.as_f64().unwrap_or(f64::NAN)),
        };
        let scale = SCALE as f64;
        match &self.reduce {
            Reduce::Count => Value::from(self.count),
            Reduce::Sum | Reduce::Avg | Reduce::Variance | Reduce::Stddev if self.out_of_range => {
                Value::Null
            }
            Reduce::Sum if self.integral => whole_value(self.sum / I256::from(SCALE)),
            Reduce::Sum => float_value(self.sum.as_f64() / scale),
            Reduce::Avg | Reduce::Variance | Reduce::Stddev if self.count == 0 => Value::Null,
            Reduce::Avg => float_value(self.sum.as_f64() / self.count as f64 / scale),
            Reduce::Min => number(&self.min),
            Reduce::Max => number(&self.max),
            Reduce::Variance => float_value(self.variance()),
            Reduce::Stddev => float_value(self.variance().sqrt()),
            Reduce::Histogram { bounds } => {
                let mut out = Map::new();
                out.insert(
                    "bounds".into(),
                    Value::Array(bounds.iter().cloned().map(Value::Number).collect()),
                );
                out.insert(
                    "counts".into(),
                    Value::Array(self.histogram.iter().map(|c| Value::from(*c)).collect()),
                );
                Value::Object(out)
            }
        }
    }
}

/// One group: its key and the partial of each aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Each `group_by` field and its value in this group (`null` if missing).
    pub key: Map<String, Value>,
    /// Each aggregate's partial state, by name.
    pub partials: BTreeMap<String, Partial>,
}

/// The result of [`aggregate`]: groups in key collation order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregated {
    /// The groups, ordered by their key values in `group_by` order. Without
    /// `group_by` there is exactly one group, with an empty key.
    pub groups: Vec<Group>,
    /// How many records were evaluated against the selector.
    pub examined: usize,
    group_by: Vec<String>,
    aggregates: BTreeMap<String, Reduce>,
}

/// Finds a record's group. Keys are ordered by collation in a `BTreeMap`, so
/// a lookup costs O(log groups) whatever the keys are: unlike a hash table
/// with fixed keys, records crafted by a peer cannot make it quadratic.
struct Grouper {
    index: BTreeMap<Vec<Collated>, usize>,
    partials: Vec<Vec<Partial>>,
    template: Vec<Partial>,
    /// Reused to build each record's key without a fresh allocation.
    probe: Vec<Collated>,
}

impl Grouper {
    fn new(template: Vec<Partial>) -> Grouper {
        Grouper {
            index: BTreeMap::new(),
            partials: Vec::new(),
            template,
            probe: Vec::new(),
        }
    }

    fn slot<'a>(&mut self, key: impl Iterator<Item = &'a Value>) -> Result<usize, Error> {
        self.probe.clear();
        self.probe.extend(key.map(|v| Collated(v.clone())));
        if let Some(&found) = self.index.get(self.probe.as_slice()) {
            return Ok(found);
        }
        if self.partials.len() >= MAX_GROUPS {
            return Err(Error::TooManyGroups { limit: MAX_GROUPS });
        }
        let slot = self.partials.len();
        self.index.insert(self.probe.clone(), slot);
        self.partials.push(self.template.clone());
        Ok(slot)
    }
}

static NULL: Value = Value::Null;

/// Computes `req` over `records`, each evaluated against the selector.
///
/// Grouping compares keys by collation, so `1` and `1.0` fall in one group
/// (keeping the first value seen), and a missing field groups with `null`.
pub fn aggregate<'a, I>(req: &AggregateRequest, records: I) -> Result<Aggregated, Error>
where
    I: IntoIterator<Item = &'a Value>,
{
    let template: Vec<Partial> = req
        .aggregates
        .iter()
        .map(|s| Partial::new(s.reduce.clone()))
        .collect();
    let mut grouper = Grouper::new(template);
    if req.group_by.is_empty() {
        grouper.slot(std::iter::empty())?;
    }
    // Several aggregates often read one field: look each field up once per
    // record, since the lookups (not the arithmetic) dominate the cost.
    let mut fields: Vec<&FieldPath> = Vec::new();
    let inputs: Vec<Option<usize>> = req
        .aggregates
        .iter()
        .map(|spec| {
            spec.field
                .as_ref()
                .map(|field| match fields.iter().position(|f| *f == field) {
                    Some(i) => i,
                    None => {
                        fields.push(field);
                        fields.len() - 1
                    }
                })
        })
        .collect();
    let mut examined = 0;
    let mut values: Vec<Option<&Value>> = Vec::with_capacity(fields.len());
    for record in records {
        examined += 1;
        if !req.selector.matches(record) {
            continue;
        }
        let slot = if req.group_by.is_empty() {
            0
        } else {
            grouper.slot(
                req.group_by
                    .iter()
                    .map(|f| f.lookup(record).unwrap_or(&NULL)),
            )?
        };
        values.clear();
        values.extend(fields.iter().map(|f| f.lookup(record)));
        for (input, partial) in inputs.iter().zip(&mut grouper.partials[slot]) {
            match input {
                None => partial.add_record(),
                Some(i) => {
                    if let Some(Some(value)) = values.get(*i) {
                        partial.add(value);
                    }
                }
            }
        }
    }
    let group_by: Vec<String> = req.group_by.iter().map(|f| f.as_str().to_owned()).collect();
    let mut partials: Vec<Option<Vec<Partial>>> = grouper.partials.into_iter().map(Some).collect();
    // The index iterates in key collation order: the groups come out sorted.
    let groups = grouper
        .index
        .into_iter()
        .filter_map(|(key, slot)| {
            let partials = partials.get_mut(slot)?.take()?;
            Some(Group {
                key: group_by
                    .iter()
                    .cloned()
                    .zip(key.into_iter().map(|c| c.0))
                    .collect(),
                partials: req
                    .aggregates
                    .iter()
                    .map(|s| s.name.clone())
                    .zip(partials)
                    .collect(),
            })
        })
        .collect();
    let aggregates = req
        .aggregates
        .iter()
        .map(|s| (s.name.clone(), s.reduce.clone()))
        .collect();
    let out = Aggregated {
        groups,
        examined,
        group_by,
        aggregates,
    };
    out.check_range()?;
    Ok(out)
}

impl Aggregated {
    /// The `group_by` fields, as written in the request.
    pub fn group_by(&self) -> &[String] {
        &self.group_by
    }

    /// A group's key values in `group_by` order, ordered by collation.
    fn collated_key(&self, group: &Group) -> Vec<Collated> {
        self.group_by
            .iter()
            .map(|f| Collated(group.key.get(f).unwrap_or(&NULL).clone()))
            .collect()
    }

    fn sort_groups(&mut self) {
        let mut groups = std::mem::take(&mut self.groups);
        groups.sort_by_cached_key(|g| self.collated_key(g));
        self.groups = groups;
    }

    /// Whether `group` has exactly the shape this result's groups must have.
    fn fits(&self, group: &Group) -> bool {
        group.key.len() == self.group_by.len()
            && self.group_by.iter().all(|f| group.key.contains_key(f))
            && group.partials.len() == self.aggregates.len()
            && group
                .partials
                .iter()
                .all(|(name, p)| self.aggregates.get(name) == Some(p.reduce()))
    }

    /// Fails with the first aggregate, by name, that met a value too large
    /// for an exact sum.
    fn check_range(&self) -> Result<(), Error> {
        match self
            .groups
            .iter()
            .flat_map(|g| &g.partials)
            .find(|(_, p)| p.out_of_range())
        {
            Some((name, _)) => Err(Error::OutOfRange { name: name.clone() }),
            None => Ok(()),
        }
    }

    /// Merges the result of the same request over other records (another
    /// node's answer): groups with equal keys merge their partials, and
    /// `examined` adds up. Fails, leaving `self` unchanged, when `other` comes
    /// from a different request or is malformed.
    pub fn merge(&mut self, other: Aggregated) -> Result<(), Error> {
        if self.group_by != other.group_by {
            return Err(Error::MergeMismatch {
                reason: "the results are grouped by different fields",
            });
        }
        if self.aggregates != other.aggregates {
            return Err(Error::MergeMismatch {
                reason: "the results compute different aggregates",
            });
        }
        if !other
            .groups
            .iter()
            .chain(&self.groups)
            .all(|g| self.fits(g))
        {
            return Err(Error::MergeMismatch {
                reason: "a group does not match the request's fields and aggregates",
            });
        }
        let mut merged = self.groups.clone();
        let mut index: BTreeMap<Vec<Collated>, usize> = BTreeMap::new();
        for (i, group) in merged.iter().enumerate() {
            index.entry(self.collated_key(group)).or_insert(i);
        }
        for group in other.groups {
            match index.get(&self.collated_key(&group)) {
                Some(&i) => {
                    for (name, partial) in &group.partials {
                        if let Some(mine) = merged[i].partials.get_mut(name) {
                            mine.merge(partial)?;
                        }
                    }
                }
                None => {
                    if merged.len() >= MAX_GROUPS {
                        return Err(Error::TooManyGroups { limit: MAX_GROUPS });
                    }
                    index.insert(self.collated_key(&group), merged.len());
                    merged.push(group);
                }
            }
        }
        let mut candidate = Aggregated {
            groups: merged,
            examined: self.examined.saturating_add(other.examined),
            group_by: self.group_by.clone(),
            aggregates: self.aggregates.clone(),
        };
        candidate.check_range()?;
        candidate.sort_groups();
        *self = candidate;
        Ok(())
    }

    /// The answer as JSON:
    /// `{"groups": [{"key": {"month": 1}, "values": {"n": 10}}], "examined": N}`.
    pub fn to_json(&self) -> Value {
        let groups = self
            .groups
            .iter()
            .map(|g| {
                let values: Map<String, Value> = g
                    .partials
                    .iter()
                    .map(|(name, p)| (name.clone(), p.value()))
                    .collect();
                let mut out = Map::new();
                out.insert("key".into(), Value::Object(g.key.clone()));
                out.insert("values".into(), Value::Object(values));
                Value::Object(out)
            })
            .collect();
        let mut out = Map::new();
        out.insert("groups".into(), Value::Array(groups));
        out.insert("examined".into(), Value::from(self.examined));
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agg(body: Value, records: &[Value]) -> Aggregated {
        aggregate(&AggregateRequest::parse(&body).unwrap(), records).unwrap()
    }

    fn readings() -> Vec<Value> {
        vec![
            json!({"_id": "1", "month": 1, "kwh": 2, "site": {"id": "a"}}),
            json!({"_id": "2", "month": 1, "kwh": 4, "site": {"id": "b"}}),
            json!({"_id": "3", "month": 2, "kwh": 1.5, "site": {"id": "a"}}),
            json!({"_id": "4", "month": 2, "kwh": "n/a", "site": {"id": "a"}}),
            json!({"_id": "5", "month": 2.0, "site": {"id": "b"}}),
            json!({"_id": "6", "kwh": 10, "site": {"id": "b"}}),
            json!({"_id": "7", "month": 1, "kwh": 6, "year": 2020}),
        ]
    }

    #[test]
    fn groups_count_sum_avg_min_max() {
        let out = agg(
            json!({
                "selector": {"year": {"$exists": false}},
                "group_by": ["month"],
                "aggregate": {
                    "n": {"$count": true}, "nk": {"$count": "kwh"}, "total": {"$sum": "kwh"},
                    "avg": {"$avg": "kwh"}, "lo": {"$min": "kwh"}, "hi": {"$max": "kwh"}
                }
            }),
            &readings(),
        );
        assert_eq!(
            out.to_json(),
            json!({"groups": [
                {"key": {"month": null}, "values": {"n": 1, "nk": 1, "total": 10, "avg": 10.0, "lo": 10, "hi": 10}},
                {"key": {"month": 1}, "values": {"n": 2, "nk": 2, "total": 6, "avg": 3.0, "lo": 2, "hi": 4}},
                {"key": {"month": 2}, "values": {"n": 3, "nk": 2, "total": 1.5, "avg": 1.5, "lo": 1.5, "hi": 1.5}}
            ], "examined": 7})
        );
    }

    #[test]
    fn no_group_by_gives_one_group_even_when_empty() {
        let out = agg(
            json!({"selector": {"nope": 1}, "aggregate": {"n": {"$count": true}, "m": {"$min": "kwh"}, "s": {"$sum": "kwh"}, "v": {"$variance": "kwh"}}}),
            &readings(),
        );
        assert_eq!(
            out.to_json(),
            json!({"groups": [{"key": {}, "values": {"n": 0, "m": null, "s": 0, "v": null}}], "examined": 7})
        );
        let out = agg(
            json!({"group_by": ["x"], "selector": {"nope": 1}, "aggregate": {"n": {"$count": true}}}),
            &readings(),
        );
        assert!(out.groups.is_empty());
    }

    #[test]
    fn dotted_group_keys_and_float_outputs_for_mixed_inputs() {
        let out = agg(
            json!({"group_by": ["site.id"], "aggregate": {"s": {"$sum": "kwh"}, "hi": {"$max": "kwh"}}}),
            &readings(),
        );
        let json = out.to_json();
        assert_eq!(json["groups"][0]["key"], json!({"site.id": null}));
        assert_eq!(json["groups"][1]["key"], json!({"site.id": "a"}));
        // 2 + 1.5: a float sum, and max reported as a float too.
        assert_eq!(json["groups"][1]["values"], json!({"s": 3.5, "hi": 2.0}));
        assert_eq!(json["groups"][2]["values"], json!({"s": 14, "hi": 10}));
    }

    #[test]
    fn variance_stddev_and_histogram() {
        let records: Vec<Value> = [2, 4, 4, 4, 5, 5, 7, 9]
            .iter()
            .map(|v| json!({ "v": v }))
            .collect();
        let out = agg(
            json!({"aggregate": {"var": {"$variance": "v"}, "sd": {"$stddev": "v"}, "h": {"$histogram": {"field": "v", "bounds": [0, 4, 5.5]}}}}),
            &records,
        );
        let values = &out.to_json()["groups"][0]["values"];
        assert!(
            (values["var"].as_f64().unwrap() - 4.0).abs() < 1e-12,
            "{values}"
        );
        assert!(
            (values["sd"].as_f64().unwrap() - 2.0).abs() < 1e-12,
            "{values}"
        );
        assert_eq!(
            values["h"],
            json!({"bounds": [0, 4, 5.5], "counts": [0, 1, 5, 2]})
        );
    }

    #[test]
    fn sums_beyond_64_bits_stay_exact() {
        let records = vec![json!({"v": i64::MAX}), json!({"v": 1})];
        let out = agg(json!({"aggregate": {"s": {"$sum": "v"}}}), &records);
        assert_eq!(
            out.to_json()["groups"][0]["values"]["s"],
            json!(9_223_372_036_854_775_808u64)
        );
        let records = vec![json!({"v": u64::MAX}), json!({"v": u64::MAX})];
        let out = agg(
            json!({"aggregate": {"s": {"$sum": "v"}, "m": {"$max": "v"}, "var": {"$variance": "v"}}}),
            &records,
        );
        assert_eq!(
            out.to_json()["groups"][0]["values"],
            json!({"s": 3.6893488147419103e19, "m": u64::MAX, "var": 0.0})
        );
    }

    #[test]
    fn fractions_are_summed_in_micro_units() {
        // 0.1 + 0.2 is 0.30000000000000004 in floats; in micro-units it is
        // 300000, whatever the order.
        let records = vec![json!({"v": 0.1}), json!({"v": 0.2})];
        let out = agg(
            json!({"aggregate": {"s": {"$sum": "v"}, "a": {"$avg": "v"}}}),
            &records,
        );
        assert_eq!(
            out.to_json()["groups"][0]["values"],
            json!({"s": 0.3, "a": 0.15})
        );
        // Past the sixth decimal a value is rounded before it is added.
        let records = vec![json!({"v": 0.0000004}), json!({"v": 0.0000006})];
        let out = agg(json!({"aggregate": {"s": {"$sum": "v"}}}), &records);
        assert_eq!(out.to_json()["groups"][0]["values"]["s"], json!(0.000001));
    }

    #[test]
    fn a_value_beyond_the_exact_range_is_an_error_not_a_rounded_sum() {
        let records = vec![json!({"g": 1, "v": 1e21}), json!({"g": 2, "v": 1})];
        let req = AggregateRequest::parse(&json!({"group_by": ["g"], "aggregate": {
            "hi": {"$max": "v"}, "s": {"$sum": "v"}}}))
        .unwrap();
        let err = aggregate(&req, &records).unwrap_err();
        assert!(
            matches!(&err, Error::OutOfRange { name } if name == "s"),
            "{err}"
        );
        assert!(err.to_string().contains("beyond ±1e20"), "{err}");
        // Min and max keep the number itself: no range applies.
        let req = AggregateRequest::parse(&json!({"aggregate": {"hi": {"$max": "v"}}})).unwrap();
        let out = aggregate(&req, &records).unwrap();
        assert_eq!(out.to_json()["groups"][0]["values"]["hi"], json!(1e21));
        // A peer's partial out of range makes the merge fail, leaving the
        // target as it was.
        let req = AggregateRequest::parse(&json!({"aggregate": {"s": {"$sum": "v"}}})).unwrap();
        let mut target = aggregate(&req, &records[1..]).unwrap();
        let before = target.clone();
        let mut tainted = Partial::new(Reduce::Sum);
        tainted.add(&json!(1e21));
        let mut other = before.clone();
        other.groups[0].partials.insert("s".into(), tainted);
        assert!(matches!(target.merge(other), Err(Error::OutOfRange { .. })));
        assert_eq!(target, before);
    }

    #[test]
    fn merging_splits_equals_the_whole() {
        let records: Vec<Value> = (0..200)
            .map(|i| json!({"g": i % 3, "v": (i * 7919) % 101, "f": i as f64 / 7.0}))
            .collect();
        let body = json!({"group_by": ["g"], "aggregate": {
            "n": {"$count": true}, "s": {"$sum": "v"}, "lo": {"$min": "f"}, "hi": {"$max": "v"},
            "var": {"$variance": "f"}, "avg": {"$avg": "f"}, "fs": {"$sum": "f"},
            "h": {"$histogram": {"field": "v", "bounds": [10, 50]}}
        }});
        let whole = agg(body.clone(), &records);
        for cut in [0, 37, 199] {
            let mut left = agg(body.clone(), &records[cut..]);
            let right = agg(body.clone(), &records[..cut]);
            left.merge(right).unwrap();
            // Exact: floats included, the merged answer is the whole's.
            assert_eq!(left.to_json(), whole.to_json(), "cut at {cut}");
        }
    }

    #[test]
    fn aggregated_round_trips_through_serde_and_merges() {
        let body = json!({"group_by": ["month"], "aggregate": {"n": {"$count": true}, "h": {"$histogram": {"field": "kwh", "bounds": [3]}}}});
        let a = agg(body.clone(), &readings()[..3]);
        let b = agg(body, &readings()[3..]);
        let wire = serde_json::to_string(&b).unwrap();
        let mut merged = a.clone();
        merged.merge(serde_json::from_str(&wire).unwrap()).unwrap();
        let json = merged.to_json();
        assert_eq!(json["examined"], json!(7));
        assert_eq!(
            json["groups"][1],
            json!({"key": {"month": 1}, "values": {"n": 3, "h": {"bounds": [3], "counts": [1, 2]}}})
        );
        // 2 and 2.0 are one group, whichever side saw it first.
        assert_eq!(json["groups"][2]["values"]["n"], json!(3));
    }

    #[test]
    fn merging_mismatched_results_fails() {
        let a = agg(
            json!({"group_by": ["month"], "aggregate": {"n": {"$count": true}}}),
            &readings(),
        );
        let b = agg(
            json!({"group_by": ["kwh"], "aggregate": {"n": {"$count": true}}}),
            &readings(),
        );
        let c = agg(
            json!({"group_by": ["month"], "aggregate": {"n": {"$sum": "kwh"}}}),
            &readings(),
        );
        assert!(
            a.clone()
                .merge(b)
                .unwrap_err()
                .to_string()
                .contains("grouped by different fields")
        );
        assert!(
            a.clone()
                .merge(c)
                .unwrap_err()
                .to_string()
                .contains("different aggregates")
        );
        let mut tampered = a.clone();
        tampered.groups[0].key.insert("extra".into(), json!(1));
        let mut target = a.clone();
        assert!(target.merge(tampered).is_err());
        assert_eq!(target, a);

        let mut h1 = Partial::new(Reduce::Histogram {
            bounds: vec![1.into()],
        });
        let h2 = Partial::new(Reduce::Histogram {
            bounds: vec![2.into()],
        });
        assert!(h1.merge(&h2).is_err());
        let mut bad: Partial = serde_json::from_value(serde_json::to_value(&h1).unwrap()).unwrap();
        bad.histogram.push(9);
        assert!(
            h1.merge(&bad)
                .unwrap_err()
                .to_string()
                .contains("histogram counts")
        );
    }

    #[test]
    fn parse_errors_are_precise() {
        let err = |v: Value| AggregateRequest::parse(&v).unwrap_err().to_string();
        assert_eq!(
            err(json!({})),
            r#"aggregate request is missing the "aggregate" key"#
        );
        assert!(
            err(json!({"aggregate": {"a": {"$median": "x"}}}))
                .starts_with(r#"bad aggregate "a": unknown operator $median"#)
        );
        assert_eq!(
            err(json!({"aggregate": {"a": {"$avg": 3}}})),
            r#"bad aggregate "a": $avg expects a field name, got 3"#
        );
        assert!(
            err(json!({"aggregate": {"a": {"$count": false}}}))
                .contains("$count expects true or a field name")
        );
        assert!(
            err(json!({"aggregate": {"a": {"$avg": "x", "$sum": "x"}}}))
                .contains("its definition expects an object with one operator")
        );
        assert!(
            err(json!({"aggregate": {"h": {"$histogram": {"field": "x", "bounds": [2, 1]}}}}))
                .contains("strictly ascending")
        );
        assert!(
            err(json!({"aggregate": {"h": {"$histogram": {"field": "x", "bounds": []}}}}))
                .contains("$histogram expects")
        );
        assert!(
            err(json!({"aggregate": {"h": {"$histogram": {"field": "x", "bounds": ["a"]}}}}))
                .contains("$histogram expects")
        );
        assert!(err(json!({"aggregate": {}})).contains("got an empty object"));
        assert!(
            err(json!({"aggregate": {"n": {"$count": true}}, "scope": "world"}))
                .starts_with(r#"bad aggregate request: scope "world" is not supported yet"#)
        );
        assert!(
            err(json!({"aggregate": {"n": {"$count": true}}, "scope": 3})).contains(
                r#""scope" expects "local" (federated scopes are not supported yet), got a number"#
            )
        );
        assert!(
            err(json!({"aggregate": {"n": {"$count": true}}, "group_by": ["a", "a"]}))
                .contains("twice")
        );
        assert!(
            err(json!({"aggregate": {"n": {"$count": true}}, "limit": 3}))
                .starts_with(r#"unknown key "limit" in aggregate request"#)
        );
        assert!(
            err(json!({"aggregate": {"n": {"$count": true}}, "selector": {"a": {"$bad": 1}}}))
                .contains("unknown operator $bad")
        );
    }

    #[test]
    fn parse_reads_scope_and_collection() {
        let req = AggregateRequest::parse(&json!({"collection": "energy.readings", "scope": "local", "aggregate": {"n": {"$count": true}}})).unwrap();
        assert_eq!(req.scope, Scope::Local);
        assert_eq!(req.collection.as_deref(), Some("energy.readings"));
        let req = AggregateRequest::parse(&json!({"aggregate": {"n": {"$count": true}}})).unwrap();
        assert_eq!(req.scope, Scope::Local);
    }

    #[test]
    fn parse_refuses_federated_scopes() {
        let err = AggregateRequest::parse(
            &json!({"scope": "contacts", "aggregate": {"n": {"$count": true}}}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::UnsupportedScope {
                context: "aggregate request",
                scope: "contacts".into()
            }
        );
        assert_eq!(
            err.to_string(),
            r#"bad aggregate request: scope "contacts" is not supported yet; federated scopes ("devices", "contacts") do not exist yet, so leave the "scope" key out (or set it to "local") to query this replica"#
        );
        let err = AggregateRequest::parse(
            &json!({"scope": "devices", "aggregate": {"n": {"$count": true}}}),
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnsupportedScope { scope, .. } if scope == "devices"));
    }

    #[test]
    fn parse_accepts_local_scope_as_this_replica() {
        let body =
            json!({"scope": "local", "group_by": ["month"], "aggregate": {"n": {"$count": true}}});
        let req = AggregateRequest::parse(&body).unwrap();
        assert_eq!(req.scope, Scope::Local);
        // The same answer as without the key.
        let without = json!({"group_by": ["month"], "aggregate": {"n": {"$count": true}}});
        assert_eq!(
            agg(body, &readings()).to_json(),
            agg(without, &readings()).to_json()
        );
    }

    #[test]
    fn too_many_groups_is_an_error() {
        let records: Vec<Value> = (0..=MAX_GROUPS).map(|i| json!({ "k": i })).collect();
        let req = AggregateRequest::parse(
            &json!({"group_by": ["k"], "aggregate": {"n": {"$count": true}}}),
        )
        .unwrap();
        assert_eq!(
            aggregate(&req, &records).unwrap_err(),
            Error::TooManyGroups { limit: MAX_GROUPS }
        );
    }
}
