//! One account's contribution to a federated aggregate, computed under the
//! [`Terms`] its policy grants.
//!
//! An exact contribution is the query's [`Aggregated`] over the records in
//! the policy's groups. A noisy one first bounds what the account can add:
//! records outside the grid are left out, each cell counts at most
//! `records_per_group` records (the first ones in the order given, `_id`
//! order from the node), and each aggregated value is clamped to its field's
//! bounds. The result is laid out as one flat vector of integers, cell by
//! cell in grid order and, within a cell, aggregate by aggregate in name
//! order ([`crate::query::Partial`]'s additive integers). That vector is
//! what gets split into secret shares; every cell is present, empty or not,
//! so its length reveals nothing about the records.

use std::collections::BTreeMap;

use ethnum::I256;
use serde_json::{Map, Number, Value};

use super::policy::Terms;
use crate::query::collate::Collated;
use crate::query::{self, AggregateRequest, Aggregated, Selector, aggregate};

/// What one account contributes: exact groups, or a bounded vector.
#[derive(Debug, Clone, PartialEq)]
pub enum Contribution {
    /// The query's result over the account's records in the policy's groups.
    Exact(Aggregated),
    /// The bounded additive vector (see the [module docs](self)).
    Bounded(Vec<I256>),
}

/// Computes the contribution of `records` (in `_id` order) to `request`
/// under `terms`.
pub fn contribute<'a, I>(
    request: &AggregateRequest,
    terms: &Terms,
    records: I,
) -> Result<Contribution, query::Error>
where
    I: IntoIterator<Item = &'a Value>,
{
    let cells: BTreeMap<Vec<Collated>, usize> = terms
        .grid
        .iter()
        .enumerate()
        .map(|(i, cell)| (cell.iter().cloned().map(Collated).collect(), i))
        .collect();
    let null = Value::Null;
    let mut taken = vec![0u32; terms.grid.len()];
    // Exact: the matching records themselves, borrowed (cloning each one
    // cost more than aggregating it). Bounded: each record's clamped copy.
    let mut matched: Vec<&'a Value> = Vec::new();
    let mut kept: Vec<Value> = Vec::new();
    for record in records {
        if !request.selector.matches(record) {
            continue;
        }
        let key: Vec<Collated> = request
            .group_by
            .iter()
            .map(|f| Collated(f.lookup(record).unwrap_or(&null).clone()))
            .collect();
        let Some(&cell) = cells.get(&key) else {
            continue;
        };
        if terms.exact {
            matched.push(record);
            continue;
        }
        if taken[cell] >= terms.records_per_group {
            continue;
        }
        taken[cell] += 1;
        kept.push(bounded(request, terms, record));
    }
    let unfiltered = AggregateRequest {
        selector: Selector::all(),
        group_by: request.group_by.clone(),
        aggregates: request.aggregates.clone(),
        scope: request.scope,
        collection: request.collection.clone(),
    };
    if terms.exact {
        return Ok(Contribution::Exact(aggregate(&unfiltered, matched)?));
    }
    let mut result = aggregate(&unfiltered, &kept)?;
    result.examined = 0;
    let width = width(request);
    let mut vector = vec![I256::ZERO; width * terms.grid.len()];
    for group in &result.groups {
        let key: Vec<Collated> = request
            .group_by
            .iter()
            .map(|f| Collated(group.key.get(f.as_str()).unwrap_or(&null).clone()))
            .collect();
        let Some(&cell) = cells.get(&key) else {
            continue;
        };
        let additive = group.partials.values().flat_map(|p| p.additive());
        for (slot, value) in vector[cell * width..].iter_mut().zip(additive) {
            *slot = value;
        }
    }
    Ok(Contribution::Bounded(vector))
}

/// The additive integers per cell of `request` (aggregates in name order).
pub fn width(request: &AggregateRequest) -> usize {
    ordered(request)
        .map(|spec| super::policy::slots(&spec.reduce, None).len())
        .sum()
}

/// The request's aggregates in name order: the order of a cell's integers.
pub(crate) fn ordered(
    request: &AggregateRequest,
) -> impl Iterator<Item = &query::AggregateSpec> + '_ {
    let mut specs: Vec<&query::AggregateSpec> = request.aggregates.iter().collect();
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    specs.into_iter()
}

/// The parts of `record` the request reads, each aggregated number clamped
/// to its field's bounds.
fn bounded(request: &AggregateRequest, terms: &Terms, record: &Value) -> Value {
    let mut out = Value::Object(Map::new());
    for field in &request.group_by {
        if let Some(v) = field.lookup(record) {
            set(&mut out, field.segments(), v.clone());
        }
    }
    for spec in &request.aggregates {
        let Some(field) = &spec.field else { continue };
        let Some(value) = field.lookup(record) else {
            continue;
        };
        let value = match (value, terms.fields.get(field.as_str())) {
            (Value::Number(n), Some(b)) => clamp(n, b.min, b.max),
            (other, _) => other.clone(),
        };
        set(&mut out, field.segments(), value);
    }
    out
}

/// `n` clamped into `[min, max]`, an integer when `n` and the bound it hits
/// are.
fn clamp(n: &Number, min: f64, max: f64) -> Value {
    let x = n.as_f64().unwrap_or(0.0);
    let pick = |bound: f64| {
        if bound.fract() == 0.0 && bound.abs() < 9e15 {
            Value::from(bound as i64)
        } else {
            Number::from_f64(bound).map_or(Value::Null, Value::Number)
        }
    };
    if x < min {
        pick(min)
    } else if x > max {
        pick(max)
    } else {
        Value::Number(n.clone())
    }
}

fn set(target: &mut Value, path: &[String], value: Value) {
    let mut at = target;
    for (i, segment) in path.iter().enumerate() {
        let Value::Object(map) = at else { return };
        if i + 1 == path.len() {
            map.insert(segment.clone(), value);
            return;
        }
        at = map
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::federated::policy::Policy;

    fn readings() -> Vec<Value> {
        vec![
            json!({ "_id": "a", "month": 1, "kwh": 120 }),
            json!({ "_id": "b", "month": 1, "kwh": 80 }),
            json!({ "_id": "c", "month": 2, "kwh": 5000 }),
            json!({ "_id": "d", "month": 13, "kwh": 10 }),
            json!({ "_id": "e", "month": 3, "kwh": -4.5 }),
        ]
    }

    fn request() -> AggregateRequest {
        AggregateRequest::parse(&json!({
            "group_by": ["month"],
            "aggregate": { "kwh": { "$avg": "kwh" }, "n": { "$count": true } }
        }))
        .unwrap()
    }

    fn policy(exact: bool) -> Policy {
        Policy::parse(&json!({
            "queriers": "contacts", "aggregates": ["$avg", "$count"],
            "fields": { "kwh": { "min": 0, "max": 1000 } },
            "group_by": { "month": [1, 2, 3] }, "exact": exact
        }))
        .unwrap()
    }

    #[test]
    fn a_bounded_contribution_clamps_limits_and_covers_every_cell() {
        let request = request();
        let terms = policy(false).judge(&request, &json!({})).unwrap();
        let Contribution::Bounded(v) = contribute(&request, &terms, &readings()).unwrap() else {
            panic!("a noisy policy gives a bounded vector");
        };
        let m = I256::from(1_000_000);
        // Per cell: kwh = [n, Σq], n = [count]. Month 1 keeps only its first
        // record, month 2 is clamped to 1000, month 3 to 0, month 13 is out.
        assert_eq!(
            v,
            vec![
                I256::from(1),
                I256::from(120) * m,
                I256::from(1),
                I256::from(1),
                I256::from(1000) * m,
                I256::from(1),
                I256::from(1),
                I256::ZERO,
                I256::from(1),
            ]
        );
        assert_eq!(width(&request), 3);
    }

    #[test]
    fn an_exact_contribution_is_the_aggregate_over_the_allowed_groups() {
        let request = request();
        let terms = policy(true).judge(&request, &json!({})).unwrap();
        let Contribution::Exact(result) = contribute(&request, &terms, &readings()).unwrap() else {
            panic!("an exact policy gives groups");
        };
        let json = result.to_json();
        assert_eq!(json["groups"].as_array().unwrap().len(), 3);
        assert_eq!(json["groups"][0]["values"]["kwh"], json!(100.0));
        assert_eq!(json["groups"][1]["values"]["kwh"], json!(5000.0));
        assert_eq!(json["groups"][2]["values"]["kwh"], json!(-4.5));
    }

    #[test]
    fn a_selector_filters_before_the_per_group_limit() {
        let request = AggregateRequest::parse(&json!({
            "selector": { "kwh": { "$lt": 100 } }, "group_by": ["month"],
            "aggregate": { "n": { "$count": true } }
        }))
        .unwrap();
        let terms = policy(false).judge(&request, &json!({ "kwh": { "$lt": 100 } }));
        let terms = terms.unwrap();
        let Contribution::Bounded(v) = contribute(&request, &terms, &readings()).unwrap() else {
            panic!();
        };
        // Month 1's first record (120) fails the selector; its second counts.
        assert_eq!(v, vec![I256::from(1), I256::ZERO, I256::from(1)]);
    }
}
