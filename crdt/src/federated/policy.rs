//! Consent policies: what an account lets its contacts ask of one collection.
//!
//! A [`Policy`] is written by its owner as JSON (`hearth consent set`) and
//! judged against every query that would read the collection. It names the
//! queriers, the aggregates and fields they may use (each field with clamp
//! bounds), the group-by fields with the values a group may take, whether
//! answers are exact (a trusted querier) or noisy, the minimum cohort, the ε
//! a query costs and the daily budgets. Unknown fields are refused, so a
//! typo never silently widens or narrows consent.
//!
//! [`Policy::judge`] turns a policy and a query into [`Terms`]: the grid of
//! cells the answer is computed over, the clamp bounds, the noise each
//! released quantity needs, or a [`Decline`] with the reason. A query the
//! policy does not fully cover is declined, never partially answered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Decline;
use crate::query::{AggregateRequest, Reduce, SCALE};

/// The most queriers one policy may name.
pub const MAX_QUERIERS: usize = 256;
/// The most fields one policy may bound.
pub const MAX_FIELDS: usize = 64;
/// The most values one group-by field may take in a policy.
pub const MAX_GROUP_VALUES: usize = 1024;
/// The most cells (the product of the group-by value lists) a noisy answer
/// may have: every cell is released, with noise, whether or not it holds
/// records.
pub const MAX_CELLS: usize = 4096;
/// The largest magnitude of a clamp bound: a bound must leave room for exact
/// sums of micro-units (see [`crate::query::MAX_EXACT`]).
pub const MAX_BOUND: f64 = 1e12;

/// Who may ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Queriers {
    /// `"contacts"`: every established contact.
    All(AllContacts),
    /// Contacts by the owner's name for them or by account id.
    Named(Vec<String>),
}

/// The word `"contacts"`, the only string [`Queriers::All`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllContacts {
    /// Every established contact.
    Contacts,
}

/// The clamp bounds of one field: values are clamped into `[min, max]`
/// before they enter a noisy answer, which bounds what one account can add.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// The smallest value counted.
    pub min: f64,
    /// The largest value counted.
    pub max: f64,
}

/// How much ε queries may spend per day (UTC days of the node's clock).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The most ε one querier account may spend on this collection per day.
    pub per_querier_per_day: f64,
    /// The most ε all queriers together may spend on this collection per day.
    pub per_day: f64,
}

/// The default of [`Policy::max_records_per_group`]: one record per account
/// per group, the natural unit of "households like ours" (one reading per
/// month, one bill per period).
pub const DEFAULT_RECORDS_PER_GROUP: u32 = 1;

/// An owner's consent for one collection. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Who may ask.
    pub queriers: Queriers,
    /// The operators allowed, as written in queries (`"$count"`, `"$sum"`,
    /// `"$avg"`, `"$variance"`, `"$stddev"`, `"$histogram"`; `"$min"` and
    /// `"$max"` only with `exact`).
    pub aggregates: Vec<String>,
    /// The fields aggregates may read, each with its clamp bounds.
    #[serde(default)]
    pub fields: BTreeMap<String, Bounds>,
    /// The fields answers may be grouped by, each with the values a group
    /// may take; records in other groups are left out of the answer.
    #[serde(default)]
    pub group_by: BTreeMap<String, Vec<Value>>,
    /// Answers are exact: no noise, no cohort, no clamping (a trusted
    /// querier).
    #[serde(default)]
    pub exact: bool,
    /// The fewest distinct accounts a noisy answer may be computed over. 1
    /// lets the noise alone protect the owner: the secure sum then hides
    /// nothing more than the noise does.
    #[serde(default = "default_cohort")]
    pub min_cohort: u32,
    /// The ε one query costs (noisy answers).
    #[serde(default = "default_epsilon")]
    pub epsilon_per_query: f64,
    /// Daily limits on ε.
    pub budget: Option<Budget>,
    /// The most records of this account one group of a noisy answer counts
    /// (the first ones by `_id`); default [`DEFAULT_RECORDS_PER_GROUP`].
    #[serde(default = "default_records_per_group")]
    pub max_records_per_group: u32,
}

fn default_cohort() -> u32 {
    3
}

fn default_epsilon() -> f64 {
    1.0
}

fn default_records_per_group() -> u32 {
    DEFAULT_RECORDS_PER_GROUP
}

/// Why a policy was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The JSON does not have the policy's shape (an unknown field, a wrong
    /// type).
    #[error("bad policy: {0}")]
    Shape(String),
    /// A value is out of its range.
    #[error("bad policy: {0}")]
    Value(String),
}

const NOISY_OPERATORS: [&str; 6] = [
    "$count",
    "$sum",
    "$avg",
    "$variance",
    "$stddev",
    "$histogram",
];
const EXACT_OPERATORS: [&str; 2] = ["$min", "$max"];

/// Selector operators a noisy policy admits: comparisons and membership,
/// never `$regex` (whose cost a querier could inflate) nor the array
/// matchers (whose nesting could).
const NOISY_SELECTOR_OPERATORS: [&str; 12] = [
    "$and", "$or", "$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$in", "$nin", "$exists", "$type",
];

impl Policy {
    /// Parses and checks a policy: unknown fields are refused, bounds must be
    /// ordered and finite, ε and budgets positive and finite, the group-by
    /// value lists non-empty and small, and `$min`/`$max` need `exact`.
    pub fn parse(json: &Value) -> Result<Policy, PolicyError> {
        let policy: Policy =
            serde_json::from_value(json.clone()).map_err(|e| PolicyError::Shape(e.to_string()))?;
        policy.check()?;
        Ok(policy)
    }

    fn check(&self) -> Result<(), PolicyError> {
        let bad = |m: String| Err(PolicyError::Value(m));
        if let Queriers::Named(names) = &self.queriers {
            if names.is_empty() || names.len() > MAX_QUERIERS {
                return bad(format!(
                    "queriers names 1 to {MAX_QUERIERS} contacts, or is \"contacts\""
                ));
            }
            if names.iter().any(|n| n.is_empty() || n.len() > 128) {
                return bad("a querier is a contact's name or account id (1-128 bytes)".into());
            }
        }
        if self.aggregates.is_empty() {
            return bad("aggregates lists at least one operator, like \"$count\"".into());
        }
        for op in &self.aggregates {
            if EXACT_OPERATORS.contains(&op.as_str()) {
                if !self.exact {
                    return bad(format!(
                        "{op} reveals one record's value: it is allowed only with \"exact\": true"
                    ));
                }
            } else if !NOISY_OPERATORS.contains(&op.as_str()) {
                return bad(format!(
                    "unknown aggregate {op:?}: use $count, $sum, $avg, $variance, $stddev, $histogram, $min or $max"
                ));
            }
        }
        if self.fields.len() > MAX_FIELDS {
            return bad(format!("fields bounds at most {MAX_FIELDS} fields"));
        }
        for (name, b) in &self.fields {
            let finite = b.min.is_finite() && b.max.is_finite();
            if !finite || b.min > b.max || b.min.abs() > MAX_BOUND || b.max.abs() > MAX_BOUND {
                return bad(format!(
                    "fields.{name}: min and max are finite numbers within ±{MAX_BOUND:e}, min ≤ max"
                ));
            }
        }
        for (name, values) in &self.group_by {
            if values.is_empty() || values.len() > MAX_GROUP_VALUES {
                return bad(format!(
                    "group_by.{name} lists 1 to {MAX_GROUP_VALUES} values a group may take"
                ));
            }
            if values.iter().any(|v| v.is_object() || v.is_array()) {
                return bad(format!(
                    "group_by.{name}: group values are strings, numbers, booleans or null"
                ));
            }
        }
        if !self.exact {
            if self.min_cohort < 1 {
                return bad("min_cohort is at least 1 for noisy answers".into());
            }
            if !(self.epsilon_per_query.is_finite() && self.epsilon_per_query > 0.0)
                || self.epsilon_per_query > 100.0
            {
                return bad("epsilon_per_query is a number in (0, 100]".into());
            }
            if self.max_records_per_group == 0 || self.max_records_per_group > 10_000 {
                return bad("max_records_per_group is 1 to 10000".into());
            }
        }
        if let Some(b) = &self.budget {
            for (name, value) in [
                ("per_querier_per_day", b.per_querier_per_day),
                ("per_day", b.per_day),
            ] {
                if !(value.is_finite() && value >= 0.0) {
                    return bad(format!("budget.{name} is a number ≥ 0"));
                }
            }
        }
        Ok(())
    }

    /// Whether `querier` (the owner's name for the contact, and its account
    /// id) is among the policy's queriers.
    pub fn admits(&self, name: Option<&str>, account: &str) -> bool {
        match &self.queriers {
            Queriers::All(_) => true,
            Queriers::Named(names) => names
                .iter()
                .any(|n| n == account || name.is_some_and(|name| name == n)),
        }
    }

    /// Judges a query against this policy, for a querier it
    /// [admits](Policy::admits): the [`Terms`] an answer is computed under,
    /// or the reason it is declined. Every part of the query must be covered:
    /// each aggregate's operator and field, each group-by field, and (for
    /// noisy answers) each selector operator.
    pub fn judge(&self, request: &AggregateRequest, selector: &Value) -> Result<Terms, Decline> {
        let decline = |reason: String| Err(Decline::Policy(reason));
        let mut quantities = Vec::new();
        let mut fields = BTreeMap::new();
        for spec in super::contribution::ordered(request) {
            let op = operator(&spec.reduce);
            if !self.aggregates.iter().any(|a| a == op) {
                return decline(format!("aggregate {op} is not allowed"));
            }
            let bounds = match &spec.field {
                None => None,
                Some(field) => {
                    let Some(bounds) = self.fields.get(field.as_str()) else {
                        return decline(format!("field {:?} is not allowed", field.as_str()));
                    };
                    fields.insert(field.as_str().to_owned(), *bounds);
                    Some(*bounds)
                }
            };
            quantities.extend(slots(&spec.reduce, bounds));
        }
        let mut grid: Vec<Vec<Value>> = vec![Vec::new()];
        for field in &request.group_by {
            let Some(values) = self.group_by.get(field.as_str()) else {
                return decline(format!("group_by {:?} is not allowed", field.as_str()));
            };
            grid = grid
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| {
                        let mut cell = prefix.clone();
                        cell.push(v.clone());
                        cell
                    })
                })
                .collect();
            if grid.len() > MAX_CELLS {
                return decline(format!(
                    "the group-by values make more than {MAX_CELLS} groups"
                ));
            }
        }
        if !self.exact
            && let Some(op) = first_operator_outside(selector, &NOISY_SELECTOR_OPERATORS)
        {
            return decline(format!("selector operator {op} is not allowed"));
        }
        let records = u128::from(self.max_records_per_group);
        let slots_per_cell = quantities.len() as u128;
        let split = slots_per_cell * grid.len() as u128;
        let noise = if self.exact {
            None
        } else {
            Some(
                quantities
                    .iter()
                    .map(|q| Noise::new(q.sensitivity(records), split, self.epsilon_per_query))
                    .collect(),
            )
        };
        Ok(Terms {
            exact: self.exact,
            grid,
            fields,
            records_per_group: self.max_records_per_group,
            noise,
            epsilon: if self.exact {
                0.0
            } else {
                self.epsilon_per_query
            },
            min_cohort: if self.exact { 1 } else { self.min_cohort },
        })
    }
}

/// The operator a query writes for `reduce`.
pub(crate) fn operator(reduce: &Reduce) -> &'static str {
    match reduce {
        Reduce::Count => "$count",
        Reduce::Sum => "$sum",
        Reduce::Avg => "$avg",
        Reduce::Min => "$min",
        Reduce::Max => "$max",
        Reduce::Variance => "$variance",
        Reduce::Stddev => "$stddev",
        Reduce::Histogram { .. } => "$histogram",
    }
}

/// The first `$operator` key anywhere in `selector` that is not in `allowed`.
fn first_operator_outside(selector: &Value, allowed: &[&str]) -> Option<String> {
    match selector {
        Value::Object(map) => map.iter().find_map(|(key, value)| {
            if key.starts_with('$') && !allowed.contains(&key.as_str()) {
                Some(key.clone())
            } else {
                first_operator_outside(value, allowed)
            }
        }),
        Value::Array(items) => items
            .iter()
            .find_map(|v| first_operator_outside(v, allowed)),
        _ => None,
    }
}

/// One additive quantity of a partial, as it travels in a noisy answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Slot {
    /// A count of records or values.
    Count,
    /// Σq in micro-units of values within these bounds.
    Sum(Bounds),
    /// Σq², micro-units squared.
    Squares(Bounds),
    /// One histogram bin; the `bins` of one histogram share a budget of
    /// one count (a record falls in one bin).
    Bin {
        /// How many bins the histogram has.
        bins: u32,
    },
}

impl Slot {
    /// The most one account's records can change this quantity (its L1
    /// sensitivity), given at most `records` records per group.
    fn sensitivity(&self, records: u128) -> u128 {
        let scale = SCALE as u128;
        let magnitude = |b: &Bounds| b.min.abs().max(b.max.abs());
        match self {
            Slot::Count | Slot::Bin { .. } => records,
            Slot::Sum(b) => records * ((magnitude(b) * scale as f64).ceil() as u128),
            Slot::Squares(b) => {
                let m = (magnitude(b) * scale as f64).ceil() as u128;
                records * m * m
            }
        }
    }
}

/// The additive quantities of one aggregate, in the order
/// [`super::contribution`] lays them out.
pub(crate) fn slots(reduce: &Reduce, bounds: Option<Bounds>) -> Vec<Slot> {
    let b = bounds.unwrap_or(Bounds { min: 0.0, max: 0.0 });
    match reduce {
        Reduce::Count => vec![Slot::Count],
        Reduce::Sum => vec![Slot::Sum(b)],
        Reduce::Avg => vec![Slot::Count, Slot::Sum(b)],
        Reduce::Variance | Reduce::Stddev => vec![Slot::Count, Slot::Sum(b), Slot::Squares(b)],
        Reduce::Min | Reduce::Max => Vec::new(),
        Reduce::Histogram { bounds } => {
            let bins = bounds.len() as u32 + 1;
            (0..bins).map(|_| Slot::Bin { bins }).collect()
        }
    }
}

/// The discrete Laplace noise one released quantity needs: scale
/// `t = Δ · split / ε`, kept as the rational `numerator / denominator` the
/// sampler takes (ε in millionths, so the scale is exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Noise {
    /// Δ · split · 10⁶.
    pub numerator: u128,
    /// ε · 10⁶, rounded down (never below 1), so the noise is never smaller
    /// than ε asks.
    pub denominator: u128,
}

impl Noise {
    fn new(sensitivity: u128, split: u128, epsilon: f64) -> Noise {
        Noise {
            numerator: sensitivity
                .max(1)
                .saturating_mul(split.max(1))
                .saturating_mul(1_000_000),
            denominator: ((epsilon * 1e6).floor() as u128).max(1),
        }
    }

    /// The scale as a float, for intervals and reports.
    pub fn scale(&self) -> f64 {
        self.numerator as f64 / self.denominator as f64
    }

    /// The larger of two noises: the one that protects both parties.
    pub fn max(self, other: Noise) -> Noise {
        if self.scale() >= other.scale() {
            self
        } else {
            other
        }
    }
}

/// What a policy allows one query: the result of [`Policy::judge`].
#[derive(Debug, Clone, PartialEq)]
pub struct Terms {
    /// No noise, no cohort, no clamping.
    pub exact: bool,
    /// Every cell the answer covers, as group-by values in `group_by` order;
    /// one empty cell without `group_by`.
    pub grid: Vec<Vec<Value>>,
    /// The clamp bounds of each aggregated field.
    pub fields: BTreeMap<String, Bounds>,
    /// The most records of this account one cell counts (noisy answers).
    pub records_per_group: u32,
    /// The noise each additive quantity of a cell needs, in layout order
    /// (`None` for exact answers).
    pub noise: Option<Vec<Noise>>,
    /// The ε the query costs (0 for exact answers).
    pub epsilon: f64,
    /// The fewest accounts the answer may be released over.
    pub min_cohort: u32,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn household() -> Value {
        json!({
            "queriers": ["alice"],
            "aggregates": ["$count", "$sum", "$avg"],
            "fields": { "kwh": { "min": 0, "max": 1000 } },
            "group_by": { "month": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] },
            "exact": false, "min_cohort": 3, "epsilon_per_query": 1.0,
            "budget": { "per_querier_per_day": 2.0, "per_day": 8.0 }
        })
    }

    fn query(body: Value) -> AggregateRequest {
        AggregateRequest::parse(&body).unwrap()
    }

    #[test]
    fn the_documented_policy_parses_and_unknown_fields_are_refused() {
        let policy = Policy::parse(&household()).unwrap();
        assert_eq!(policy.min_cohort, 3);
        assert!(policy.admits(Some("alice"), "acct"));
        assert!(!policy.admits(Some("bob"), "acct"));
        let mut typo = household();
        typo["min_cohrt"] = json!(3);
        let err = Policy::parse(&typo).unwrap_err().to_string();
        assert!(err.contains("unknown field `min_cohrt`"), "{err}");
        let mut nested = household();
        nested["fields"]["kwh"]["step"] = json!(1);
        assert!(Policy::parse(&nested).is_err());
        let everyone = Policy::parse(&json!({ "queriers": "contacts", "aggregates": ["$count"] }));
        assert!(everyone.unwrap().admits(None, "anyone"));
        assert!(
            Policy::parse(&json!({ "queriers": "friends", "aggregates": ["$count"] })).is_err()
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        for (patch, needle) in [
            (json!({ "aggregates": ["$min"] }), "only with \"exact\""),
            (json!({ "aggregates": ["$median"] }), "unknown aggregate"),
            (
                json!({ "fields": { "kwh": { "min": 5, "max": 1 } } }),
                "min ≤ max",
            ),
            (json!({ "epsilon_per_query": 0 }), "epsilon_per_query"),
            (json!({ "min_cohort": 0 }), "min_cohort"),
            (json!({ "group_by": { "month": [] } }), "group_by.month"),
            (
                json!({ "budget": { "per_querier_per_day": -1, "per_day": 1 } }),
                "budget",
            ),
        ] {
            let mut body = household();
            for (k, v) in patch.as_object().unwrap() {
                body[k] = v.clone();
            }
            let err = Policy::parse(&body).unwrap_err().to_string();
            assert!(err.contains(needle), "{patch}: {err}");
        }
    }

    #[test]
    fn a_covered_query_gets_its_grid_and_noise() {
        let policy = Policy::parse(&household()).unwrap();
        let q = query(json!({
            "selector": { "year": 2026 }, "group_by": ["month"],
            "aggregate": { "kwh": { "$avg": "kwh" }, "n": { "$count": true } }
        }));
        let terms = policy.judge(&q, &json!({ "year": 2026 })).unwrap();
        assert_eq!(terms.grid.len(), 12);
        assert_eq!(terms.grid[0], vec![json!(1)]);
        // $avg carries a count and a sum, $count a count: 3 quantities per
        // cell, ε split over 36.
        let noise = terms.noise.unwrap();
        assert_eq!(noise.len(), 3);
        assert_eq!(noise[0].scale(), 36.0); // one record per cell: Δ = 1
        assert_eq!(noise[1].scale(), 36.0 * 1000.0 * 1e6);
        assert_eq!(terms.epsilon, 1.0);
    }

    #[test]
    fn anything_uncovered_is_declined_with_the_reason() {
        let policy = Policy::parse(&household()).unwrap();
        for (body, selector, needle) in [
            (
                json!({ "aggregate": { "m": { "$variance": "kwh" } } }),
                json!({}),
                "aggregate $variance",
            ),
            (
                json!({ "aggregate": { "s": { "$sum": "eur" } } }),
                json!({}),
                "field \"eur\"",
            ),
            (
                json!({ "group_by": ["city"], "aggregate": { "n": { "$count": true } } }),
                json!({}),
                "group_by \"city\"",
            ),
            (
                json!({ "aggregate": { "n": { "$count": true } } }),
                json!({ "name": { "$regex": "(a+)+$" } }),
                "selector operator $regex",
            ),
        ] {
            let err = policy.judge(&query(body.clone()), &selector).unwrap_err();
            assert!(err.to_string().contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn exact_policies_allow_min_and_max_and_add_no_noise() {
        let policy = Policy::parse(&json!({
            "queriers": ["alice"], "aggregates": ["$min", "$max", "$sum"],
            "fields": { "kwh": { "min": 0, "max": 10 } }, "exact": true
        }))
        .unwrap();
        let q = query(json!({ "aggregate": { "lo": { "$min": "kwh" }, "s": { "$sum": "kwh" } } }));
        let terms = policy
            .judge(&q, &json!({ "kwh": { "$regex": "x" } }))
            .unwrap();
        assert!(terms.exact);
        assert!(terms.noise.is_none());
        assert_eq!(terms.grid, vec![Vec::<Value>::new()]);
    }
}
