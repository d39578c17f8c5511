//! P4: local queries over N records through the engine.
//!
//! On the prepared home (reopened in-process): `_find` with an equality on
//! `month` (about 1/120 of the records match) before and after
//! `define_index(["month"])`, and count/sum/avg aggregates grouped by month
//! and ungrouped; each timed as a `Handle` call (engine queue, query, reply),
//! medians over many runs. Every answer is checked against the records.
//!
//! Baseline: the same questions answered by scanning the Automerge shard
//! documents holding the same records, reading each record's fields through
//! Automerge's API (`keys`, `get`), which is what a query costs without
//! Hearth's materialised view.
//!
//! Targets: indexed find ≤ 5 ms, full aggregate ≤ 50 ms.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use hearth_bench::records::{self, MONTHS};
use hearth_bench::stats::Summary;
use hearth_crdt::query::{AggregateRequest, FindRequest};
use hearth_node::engine::Handle;
use serde_json::{Value, json};

use crate::Ctx;
use crate::baseline::{scan_aggregate, scan_find};
use crate::import;
use crate::node::{self, DOCTYPE};
use crate::report::Outcome;

const FIND_RUNS: usize = 60;
const AGGREGATE_RUNS: usize = 15;
const SCAN_RUNS: usize = 5;

fn p50_ms(samples: &[Duration]) -> Result<f64> {
    Ok(Summary::of(samples)
        .ok_or_else(|| anyhow!("no samples"))?
        .p50_ms())
}

/// Times `runs` finds of `{"month": m}` (months spread over the range), with
/// an optional limit; checks each answer's size.
async fn finds(
    handle: &Handle,
    runs: usize,
    limit: Option<usize>,
    per_month: &BTreeMap<i64, usize>,
    want_index: Option<&str>,
) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(runs);
    for i in 0..runs {
        let month = records::month_value((i as i64 * 37) % MONTHS);
        let mut body = json!({"selector": {"month": month}});
        if let Some(limit) = limit {
            body["limit"] = json!(limit);
        }
        let request = FindRequest::parse(&body)?;
        let started = Instant::now();
        let found = handle.find(DOCTYPE, request).await?;
        out.push(started.elapsed());
        let expected = per_month.get(&month).copied().unwrap_or(0);
        let expected = limit.map_or(expected, |l| expected.min(l));
        if found.docs.len() != expected {
            bail!(
                "find month {month}: {} docs, expected {expected}",
                found.docs.len()
            );
        }
        if found.index.as_deref() != want_index {
            bail!(
                "find month {month} used index {:?}, expected {want_index:?}",
                found.index
            );
        }
    }
    Ok(out)
}

async fn aggregates(handle: &Handle, body: &Value, n: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(AGGREGATE_RUNS);
    for _ in 0..AGGREGATE_RUNS {
        let request = AggregateRequest::parse(body)?;
        let started = Instant::now();
        let result = handle.aggregate(DOCTYPE, request).await?;
        out.push(started.elapsed());
        let total: u64 = result["groups"]
            .as_array()
            .map(|groups| {
                groups
                    .iter()
                    .filter_map(|g| g["values"]["n"].as_u64())
                    .sum()
            })
            .unwrap_or(0);
        if total != n as u64 {
            bail!("aggregate counted {total} records, expected {n}: {result}");
        }
    }
    Ok(out)
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<Outcome> {
    import::prepare(ctx)?;
    let n = ctx.records.len();
    let mut per_month: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &ctx.records {
        *per_month
            .entry(r["month"].as_i64().unwrap_or(0))
            .or_default() += 1;
    }
    let prepared = ctx
        .prepared
        .as_ref()
        .ok_or_else(|| anyhow!("no prepared home"))?;
    let running = node::open(&prepared.home)?;
    let handle = running.handle.clone();
    let grouped = json!({
        "group_by": ["month"],
        "aggregate": {"n": {"$count": true}, "total": {"$sum": "amount"}, "avg": {"$avg": "amount"}}
    });
    let ungrouped = json!({
        "aggregate": {"n": {"$count": true}, "total": {"$sum": "amount"}, "avg": {"$avg": "amount"}}
    });
    let measured = ctx.rt.block_on(async {
        let scan = finds(&handle, 10, None, &per_month, None).await?;
        let started = Instant::now();
        let (name, created) = handle
            .define_index(DOCTYPE, Some("by-month".into()), vec!["month".into()])
            .await?;
        let define = started.elapsed();
        if !created {
            bail!("index {name} already existed");
        }
        let indexed = finds(&handle, FIND_RUNS, None, &per_month, Some("by-month")).await?;
        let limited = finds(&handle, FIND_RUNS, Some(25), &per_month, Some("by-month")).await?;
        let agg_grouped = aggregates(&handle, &grouped, n).await?;
        let agg_all = aggregates(&handle, &ungrouped, n).await?;
        anyhow::Ok((scan, define, indexed, limited, agg_grouped, agg_all))
    });
    drop(handle);
    running.stop();
    let (scan, define, indexed, limited, agg_grouped, agg_all) = measured?;

    // Baseline: Automerge map scans over the same records.
    let docs = prepared.shards.docs();
    let (mut b_agg, mut b_find) = (vec![], vec![]);
    for i in 0..SCAN_RUNS {
        let started = Instant::now();
        let result = scan_aggregate(docs)?;
        b_agg.push(started.elapsed());
        if result.count != n as u64 {
            bail!(
                "the baseline scan counted {} records, expected {n}",
                result.count
            );
        }
        let month = records::month_value(i as i64 * 37 % MONTHS);
        let started = Instant::now();
        let ids = scan_find(docs, month)?;
        b_find.push(started.elapsed());
        if ids.len() != per_month.get(&month).copied().unwrap_or(0) {
            bail!(
                "the baseline scan found {} records of month {month}",
                ids.len()
            );
        }
    }

    let mut o = Outcome::new("P4", "local queries over N records");
    let f = o.figure("hearth indexed find month=M p50", p50_ms(&indexed)?, "ms");
    o.figure(
        "hearth indexed find month=M, limit 25, p50",
        p50_ms(&limited)?,
        "ms",
    );
    o.figure(
        "hearth unindexed find month=M p50 (full scan)",
        p50_ms(&scan)?,
        "ms",
    );
    o.figure(
        "hearth define_index(month) on N records",
        define.as_secs_f64() * 1000.0,
        "ms",
    );
    let ag = o.figure(
        "hearth aggregate count/sum/avg by month p50",
        p50_ms(&agg_grouped)?,
        "ms",
    );
    let aa = o.figure(
        "hearth aggregate count/sum/avg, no group, p50",
        p50_ms(&agg_all)?,
        "ms",
    );
    let bf = o.figure(
        "baseline automerge scan find month=M p50",
        p50_ms(&b_find)?,
        "ms",
    );
    let ba = o.figure(
        "baseline automerge scan count/sum/avg by month p50",
        p50_ms(&b_agg)?,
        "ms",
    );
    o.figure("hearth indexed find / baseline scan", f / bf, "×");
    o.figure("hearth grouped aggregate / baseline scan", ag / ba, "×");
    o.at_most("indexed find p50", f, 5.0, "≤ 5 ms".into());
    o.at_most("aggregate by month p50", ag, 50.0, "≤ 50 ms".into());
    o.at_most("aggregate, no group, p50", aa, 50.0, "≤ 50 ms".into());
    o.note(format!(
        "{n} records, {} months (~{} matches per find, whole records returned); {FIND_RUNS} finds, {AGGREGATE_RUNS} aggregates, {SCAN_RUNS} baseline scans; timed as Handle calls in-process",
        per_month.len(),
        n / per_month.len().max(1)
    ));
    Ok(o)
}
