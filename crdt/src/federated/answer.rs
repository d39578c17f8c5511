//! The querier's side: one result from exact parts and released sums.
//!
//! Exact answers (from contacts whose policy trusts this querier, and from
//! this account's own devices) merge as [`Aggregated`] partials, bit for
//! bit. Noisy answers arrive as [`Release`]s: the two aggregators' sums of
//! shares added together, which is the sum of the bounded contributions
//! plus one discrete Laplace sample per integer. Both are laid out as the
//! same additive integers per cell, so they add; the values (count, sum,
//! mean, variance, histogram) are computed once from the totals, with a
//! 95 % interval from the noise of every release that touched the cell.

use std::collections::BTreeMap;

use ethnum::I256;
use serde_json::{Map, Value, json};

use super::contribution::{ordered, width};
use super::noise::interval95;
use super::policy::{Noise, slots};
use crate::query::aggregate::float_value as float;
use crate::query::collate::Collated;
use crate::query::{AggregateRequest, Aggregated, Reduce, SCALE};

/// One released noisy sum over a grid of cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// The cells, as group-by values in `group_by` order.
    pub grid: Vec<Vec<Value>>,
    /// The additive integers of every cell, noise included.
    pub totals: Vec<I256>,
    /// The noise on each integer of a cell.
    pub noise: Vec<Noise>,
    /// How many accounts the sum is over.
    pub accounts: usize,
    /// The largest ε one of them spent on it.
    pub epsilon: f64,
}

struct Cell {
    key: Map<String, Value>,
    totals: Vec<I256>,
    /// Half-width of the 95 % interval of each integer's noise (0 when
    /// exact), summed over releases: a conservative bound.
    spread: Vec<f64>,
}

/// The result of a federated query: the local aggregate's shape (`groups`,
/// each with `key` and `values`), `exact`, and where noise was added,
/// `noise` with the mechanism, the ε and a 95 % interval per value.
pub fn assemble(
    request: &AggregateRequest,
    exact: Option<&Aggregated>,
    releases: &[Release],
) -> Value {
    if releases.is_empty() {
        let mut out = exact.map_or_else(|| json!({ "groups": [] }), Aggregated::to_json);
        if let Value::Object(map) = &mut out {
            map.remove("examined");
            map.insert("exact".into(), Value::Bool(true));
        }
        return out;
    }
    let w = width(request);
    let group_by: Vec<&str> = request.group_by.iter().map(|f| f.as_str()).collect();
    let mut cells: BTreeMap<Vec<Collated>, Cell> = BTreeMap::new();
    for release in releases {
        if release.totals.len() != release.grid.len() * w || release.noise.len() != w {
            continue;
        }
        for (i, key) in release.grid.iter().enumerate() {
            let c = cell(&mut cells, &group_by, w, key.clone());
            for (slot, total) in release.totals[i * w..(i + 1) * w].iter().enumerate() {
                c.totals[slot] = c.totals[slot].wrapping_add(*total);
                c.spread[slot] += interval95(&release.noise[slot]);
            }
        }
    }
    if let Some(exact) = exact {
        for group in &exact.groups {
            let key: Vec<Value> = group_by
                .iter()
                .map(|f| group.key.get(*f).cloned().unwrap_or(Value::Null))
                .collect();
            let c = cell(&mut cells, &group_by, w, key);
            let additive = group.partials.values().flat_map(|p| p.additive());
            for (slot, value) in additive.enumerate().take(w) {
                c.totals[slot] = c.totals[slot].wrapping_add(value);
            }
        }
    }
    let mut groups = Vec::new();
    let mut intervals = Vec::new();
    for c in cells.into_values() {
        let mut values = Map::new();
        let mut ranges = Map::new();
        let mut at = 0;
        for spec in ordered(request) {
            let n = slots(&spec.reduce, None).len();
            let (value, range) =
                value_of(&spec.reduce, &c.totals[at..at + n], &c.spread[at..at + n]);
            values.insert(spec.name.clone(), value);
            ranges.insert(spec.name.clone(), range);
            at += n;
        }
        groups.push(json!({ "key": c.key.clone(), "values": values }));
        intervals.push(json!({ "key": c.key, "values": ranges }));
    }
    let epsilon = releases.iter().map(|r| r.epsilon).fold(0.0, f64::max);
    json!({
        "groups": groups,
        "exact": false,
        "noise": {
            "mechanism": "discrete Laplace, added once to a secure sum (two aggregators, one geometric half each)",
            "epsilon": epsilon,
            "accounts": releases.iter().map(|r| r.accounts).max().unwrap_or(0),
            "interval": 0.95,
            "intervals": intervals,
        }
    })
}

/// The cell of `key`, created empty the first time.
fn cell<'c>(
    cells: &'c mut BTreeMap<Vec<Collated>, Cell>,
    group_by: &[&str],
    width: usize,
    key: Vec<Value>,
) -> &'c mut Cell {
    let collated: Vec<Collated> = key.iter().cloned().map(Collated).collect();
    cells.entry(collated).or_insert_with(|| Cell {
        key: group_by.iter().map(|f| (*f).to_owned()).zip(key).collect(),
        totals: vec![I256::ZERO; width],
        spread: vec![0.0; width],
    })
}

fn range(lo: f64, hi: f64) -> Value {
    json!([float(lo), float(hi)])
}

/// An aggregate's value and 95 % interval from its additive totals.
fn value_of(reduce: &Reduce, totals: &[I256], spread: &[f64]) -> (Value, Value) {
    let scale = SCALE as f64;
    let get = |i: usize| totals.get(i).map_or(0.0, |t| t.as_f64());
    let k = |i: usize| spread.get(i).copied().unwrap_or(0.0);
    match reduce {
        Reduce::Count => {
            let n = get(0);
            (
                Value::from(n.max(0.0) as u64),
                range((n - k(0)).max(0.0), n + k(0)),
            )
        }
        Reduce::Sum => {
            let s = get(0);
            (
                float(s / scale),
                range((s - k(0)) / scale, (s + k(0)) / scale),
            )
        }
        Reduce::Avg => {
            let (n, s) = (get(0), get(1));
            if n < 1.0 {
                return (Value::Null, Value::Null);
            }
            let (n_lo, n_hi) = (n - k(0), n + k(0));
            let (s_lo, s_hi) = (s - k(1), s + k(1));
            if n_lo < 1.0 {
                return (float(s / n / scale), Value::Null);
            }
            let corners = [s_lo / n_lo, s_lo / n_hi, s_hi / n_lo, s_hi / n_hi];
            let lo = corners.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = corners.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (float(s / n / scale), range(lo / scale, hi / scale))
        }
        Reduce::Variance | Reduce::Stddev => {
            let (n, s, q) = (get(0), get(1), get(2));
            if n < 1.0 {
                return (Value::Null, Value::Null);
            }
            let variance = ((q / n - (s / n).powi(2)) / (scale * scale)).max(0.0);
            let (n_lo, n_hi) = (n - k(0), n + k(0));
            let (s_lo, s_hi) = (s - k(1), s + k(1));
            let (q_lo, q_hi) = ((q - k(2)).max(0.0), q + k(2));
            let squares = [s_lo * s_lo, s_hi * s_hi];
            let s2_hi = squares[0].max(squares[1]);
            let s2_lo = if s_lo <= 0.0 && s_hi >= 0.0 {
                0.0
            } else {
                squares[0].min(squares[1])
            };
            let interval = if n_lo < 1.0 {
                None
            } else {
                let hi = (q_hi / n_lo - s2_lo / (n_hi * n_hi)) / (scale * scale);
                let lo = ((q_lo / n_hi - s2_hi / (n_lo * n_lo)) / (scale * scale)).max(0.0);
                Some((lo, hi.max(lo)))
            };
            if matches!(reduce, Reduce::Stddev) {
                let r = interval.map_or(Value::Null, |(lo, hi)| range(lo.sqrt(), hi.sqrt()));
                (float(variance.sqrt()), r)
            } else {
                (
                    float(variance),
                    interval.map_or(Value::Null, |(lo, hi)| range(lo, hi)),
                )
            }
        }
        Reduce::Min | Reduce::Max => (Value::Null, Value::Null),
        Reduce::Histogram { bounds } => {
            let counts: Vec<Value> = (0..=bounds.len())
                .map(|i| Value::from(get(i).max(0.0) as u64))
                .collect();
            let ranges: Vec<Value> = (0..=bounds.len())
                .map(|i| range((get(i) - k(i)).max(0.0), get(i) + k(i)))
                .collect();
            (
                json!({ "bounds": bounds, "counts": counts }),
                Value::Array(ranges),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::federated::contribution::{Contribution, contribute};
    use crate::federated::policy::Policy;
    use crate::query::aggregate;

    fn request() -> AggregateRequest {
        AggregateRequest::parse(&json!({
            "group_by": ["month"],
            "aggregate": { "kwh": { "$avg": "kwh" }, "n": { "$count": true }, "s": { "$sum": "kwh" } }
        }))
        .unwrap()
    }

    #[test]
    fn exact_parts_alone_are_the_merged_aggregate() {
        let r = request();
        let records = [
            json!({ "month": 1, "kwh": 3 }),
            json!({ "month": 1, "kwh": 4 }),
        ];
        let exact = aggregate(&r, &records).unwrap();
        let out = assemble(&r, Some(&exact), &[]);
        assert_eq!(out["exact"], json!(true));
        assert_eq!(out["groups"][0]["values"]["s"], json!(7));
        assert_eq!(out["groups"][0]["values"]["kwh"], json!(3.5));
    }

    #[test]
    fn a_noiseless_release_adds_to_the_exact_parts() {
        let r = request();
        let policy = Policy::parse(&json!({
            "queriers": "contacts", "aggregates": ["$avg", "$count", "$sum"],
            "fields": { "kwh": { "min": 0, "max": 100 } }, "group_by": { "month": [1, 2] }
        }))
        .unwrap();
        let terms = policy.judge(&r, &json!({})).unwrap();
        let theirs = [
            json!({ "month": 1, "kwh": 10 }),
            json!({ "month": 2, "kwh": 250 }),
        ];
        let Contribution::Bounded(totals) = contribute(&r, &terms, &theirs).unwrap() else {
            panic!()
        };
        let release = Release {
            grid: terms.grid.clone(),
            totals,
            noise: terms.noise.clone().unwrap(),
            accounts: 1,
            epsilon: 1.0,
        };
        let mine = [json!({ "month": 1, "kwh": 20 })];
        let exact = aggregate(&r, &mine).unwrap();
        let out = assemble(&r, Some(&exact), &[release]);
        assert_eq!(out["exact"], json!(false));
        let jan = &out["groups"][0];
        assert_eq!(jan["key"], json!({ "month": 1 }));
        assert_eq!(jan["values"]["n"], json!(2));
        assert_eq!(jan["values"]["s"], json!(30.0));
        assert_eq!(jan["values"]["kwh"], json!(15.0));
        // February's 250 was clamped to 100.
        assert_eq!(out["groups"][1]["values"]["s"], json!(100.0));
        let interval = &out["noise"]["intervals"][0]["values"]["n"];
        assert!(interval[0].as_f64().unwrap() <= 2.0 && interval[1].as_f64().unwrap() >= 2.0);
    }
}
