//! P6: reconnect of an in-sync pair.
//!
//! Two devices hold the same 1, 4 and 16 collections (16 shards, 500
//! records each), brought in sync by a first session whose sync states each
//! side kept (`Effects::states`, what the engine persists per peer). A new
//! pair of `hearth_crdt::sync::Session`s, restored from those states as after
//! a restart, then reconnects in memory; every frame and byte each way is
//! counted until both sides are quiet.
//!
//! Baseline: raw Automerge sync of the same shard documents, first to
//! convergence, then with both sync states persisted (`State::encode` →
//! `State::decode`) and synced again until quiet, both sides opening at once
//! as Hearth's two Hellos do: the "automerge with persisted sync state" of
//! the anchor. Shown per collection (its 16 shard
//! documents) and for the whole collection as one document (the anchor's
//! 148 B).
//!
//! Also shown, not checked: the same reconnect after A wrote one record
//! while apart.
//!
//! Targets: 1 round trip; ≤ 300 B per collection (both ways).

use anyhow::{Result, bail};
use automerge::{ActorId, Automerge};
use hearth_crdt::collection::PutMode;
use hearth_crdt::sync::Replica;
use serde_json::{Value, json};

use crate::Ctx;
use crate::report::Outcome;
use crate::wire::{self, AmPair, Pair, Traffic, Turns};

const COLLECTIONS: [usize; 3] = [1, 4, 16];
const SHARDS: u16 = 16;
const PER_COLLECTION: usize = 500;

/// What one collection count measured.
struct Measured {
    collections: usize,
    hearth: Traffic,
    after_write: Traffic,
    am_shards: Traffic,
    am_one: Traffic,
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<Outcome> {
    anyhow::ensure!(
        ctx.records.len() >= PER_COLLECTION,
        "P6 needs at least {PER_COLLECTION} records (--records)"
    );
    let records = &ctx.records[..PER_COLLECTION];
    let mut runs = Vec::new();
    for n in COLLECTIONS {
        runs.push(measure(n, records)?);
    }

    let mut o = Outcome::new("P6", "reconnect of an in-sync pair");
    for m in &runs {
        let n = m.collections;
        let per = |t: &Traffic| t.total_bytes() as f64 / n as f64;
        o.figure(
            format!("{n} coll: hearth bytes per collection (both ways)"),
            per(&m.hearth),
            "B",
        );
        o.figure(
            format!("{n} coll: hearth bytes per collection A→B"),
            m.hearth.bytes[0] as f64 / n as f64,
            "B",
        );
        o.figure(
            format!("{n} coll: hearth frames A→B"),
            m.hearth.frames[0] as f64,
            "",
        );
        o.figure(
            format!("{n} coll: hearth frames B→A"),
            m.hearth.frames[1] as f64,
            "",
        );
        o.figure(
            format!("{n} coll: hearth flights until quiet"),
            f64::from(m.hearth.flights),
            "",
        );
        o.figure(
            format!("{n} coll: automerge 16 shard docs, bytes per collection"),
            per(&m.am_shards),
            "B",
        );
        o.figure(
            format!("{n} coll: automerge 16 shard docs, flights"),
            f64::from(m.am_shards.flights),
            "",
        );
        o.figure(
            format!("{n} coll: automerge one doc per collection, bytes per collection"),
            per(&m.am_one),
            "B",
        );
        o.figure(
            format!("{n} coll: automerge one doc per collection, flights"),
            f64::from(m.am_one.flights),
            "",
        );
        o.figure(
            format!("{n} coll: hearth after 1 offline write, bytes total"),
            m.after_write.total_bytes() as f64,
            "B",
        );
        o.figure(
            format!("{n} coll: hearth after 1 offline write, flights"),
            f64::from(m.after_write.flights),
            "",
        );
    }
    let worst_rt = runs
        .iter()
        .map(|m| m.hearth.round_trips())
        .fold(0.0, f64::max);
    let worst_per = runs
        .iter()
        .map(|m| m.hearth.total_bytes() as f64 / m.collections as f64)
        .fold(0.0, f64::max);
    o.at_most(
        "round trips (worst of 1/4/16 coll)",
        worst_rt,
        1.0,
        "≤ 1".into(),
    );
    o.at_most(
        "bytes per collection (worst, both ways)",
        worst_per,
        300.0,
        "≤ 300 B".into(),
    );
    o.note(format!(
        "in memory, hearth_crdt::sync::Session frames (no length prefix, Noise or Yamux); \
         {SHARDS} shards and {PER_COLLECTION} records per collection; a flight is one one-way \
         latency, so both Hellos crossing at once is 1 flight = 0.5 round trip"
    ));
    Ok(o)
}

fn measure(n: usize, records: &[Value]) -> Result<Measured> {
    let mut pair = Pair::new()?;
    let mut am_shards = Vec::new();
    let mut am_one = Vec::new();
    let names: Vec<String> = (0..n).map(|i| format!("bench.c{i:02}")).collect();
    for name in &names {
        let coll = wire::collection(name, SHARDS, ActorId::from([0xa1; 16]), records)?;
        let (shards, one) = wire::am_docs(&coll)?;
        am_shards.extend(shards.into_iter().map(|d| AmPair::new(d, Automerge::new())));
        am_one.push(AmPair::new(one, Automerge::new()));
        pair.a.replica.insert(coll);
    }
    let all_there = |b: &hearth_crdt::sync::MemoryReplica| {
        names
            .iter()
            .all(|c| b.collection(c).is_some_and(|c| c.len() == records.len()))
    };
    let cold = pair.sync(all_there)?;
    if cold.done_at.is_none() {
        bail!("the first sync did not bring B every record");
    }
    let hearth = pair.sync(|_| true)?;

    // One record written on A while apart, then a reconnect.
    let coll = pair
        .a
        .replica
        .collection_mut(&names[0])
        .ok_or_else(|| anyhow::anyhow!("collection {} vanished", names[0]))?;
    coll.put(
        "offline-0001",
        json!({"note": "written while apart"}),
        PutMode::Create,
        1,
    )?;
    let _ = coll.take_chunks();
    let first = names[0].clone();
    let after_write = pair.sync(|b| {
        b.collection(&first)
            .is_some_and(|c| c.get("offline-0001").is_some())
    })?;
    if after_write.done_at.is_none() {
        bail!("the offline write did not reach B");
    }

    for set in [&mut am_shards, &mut am_one] {
        wire::am_sync(set, Turns::AFirst, |_| false)?;
        for p in set.iter_mut() {
            if p.a.get_heads() != p.b.get_heads() {
                bail!("raw Automerge sync went quiet before converging");
            }
            p.persist_states()?;
        }
    }
    let am_shards = wire::am_sync(&mut am_shards, Turns::Lockstep, |_| false)?;
    let am_one = wire::am_sync(&mut am_one, Turns::Lockstep, |_| false)?;
    Ok(Measured {
        collections: n,
        hearth,
        after_write,
        am_shards,
        am_one,
    })
}
