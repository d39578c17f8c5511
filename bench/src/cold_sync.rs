//! P5: cold sync of 10k records to a newly paired device, on loopback.
//!
//! - **End to end.** Device A (an in-process node: engine, libp2p network,
//!   mesh tasks, as `hearth up` runs them) imports 10k records with
//!   `put_many`. Device B, already a member of A's account (see
//!   [`crate::mesh`]: its home is created on the membership log a pairing
//!   would have given it) but holding nothing, then starts its node and is
//!   told A's address. The clock runs from B's start (engine spawn, network
//!   up, dial, Noise, Yamux, Hello, shard transfer, B's durable commits)
//!   until B's `status().records` reaches 10k; B's copy is then checked
//!   record by record against A's.
//! - **On the wire.** The same records in a 16-shard `Collection`, synced
//!   between two `hearth_crdt::sync::Session`s in memory: the exact frames
//!   of `/hearth/sync/1`, minus the 4-byte length prefix and the Noise and
//!   Yamux framing. Bytes, frames and flights (one-way latencies) are
//!   counted.
//! - **Baseline.** Raw Automerge sync (`automerge::sync`) of the same 16
//!   shard documents, each to an empty document, in Automerge's canonical
//!   loop (A generates, B receives and generates, A receives, … until
//!   neither sends), the 16 shards side by side. Also shown: the whole
//!   collection as one Automerge document (the shard saves concatenated
//!   load as one), which is what the anchor of TARGETS.md measured; and the
//!   16 shards with both sides opening at once (as two peers that connect
//!   do), where Automerge sends each shard twice because the peer's second
//!   message still shows empty heads.
//!
//! Targets: bytes ≤ 1.2 × the raw Automerge sync of the same documents;
//! ≥ 20k records/s end to end.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use automerge::{ActorId, Automerge, ReadDoc};
use hearth_bench::stats;
use hearth_crdt::sync::Replica;
use serde_json::Value;

use crate::Ctx;
use crate::mesh::{Account, Node, stop_all};
use crate::node::{self, DOCTYPE};
use crate::report::Outcome;
use crate::wire::{self, AmPair, Pair, Traffic, Turns};

/// Records synced, as TARGETS.md sets.
const RECORDS: usize = 10_000;
/// Hearth's default shard count.
const SHARDS: u16 = 16;
/// How long B may take before the scenario gives up.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Records of B compared with A's after the sync.
const SAMPLE: usize = 500;

pub(crate) fn run(ctx: &mut Ctx) -> Result<Outcome> {
    let records: Vec<Value> = ctx.records[..RECORDS.min(ctx.records.len())].to_vec();
    let n = records.len();

    // On the wire, in memory: Hearth's sessions, then raw Automerge.
    let coll = wire::collection(DOCTYPE, SHARDS, ActorId::from([0xa1; 16]), &records)?;
    let (shard_docs, one_doc) = wire::am_docs(&coll)?;
    let mut pair = Pair::new()?;
    pair.a.replica.insert(coll);
    let hearth = pair.sync(|b| b.collection(DOCTYPE).is_some_and(|c| c.len() == n))?;
    if hearth.done_at.is_none() {
        bail!("the in-memory sessions went quiet before B held the {n} records");
    }
    let all_shards =
        |p: &[AmPair]| p.iter().map(|p| p.b.length(automerge::ROOT)).sum::<usize>() == n;
    let fresh = |docs: &[Automerge]| -> Vec<AmPair> {
        docs.iter()
            .map(|d| AmPair::new(d.clone(), Automerge::new()))
            .collect()
    };
    let mut shards = fresh(&shard_docs);
    let am_shards = wire::am_sync(&mut shards, Turns::AFirst, all_shards)?;
    check_converged(&shards)?;
    let mut shards = fresh(&shard_docs);
    let am_lockstep = wire::am_sync(&mut shards, Turns::Lockstep, all_shards)?;
    check_converged(&shards)?;
    let mut one = fresh(std::slice::from_ref(&one_doc));
    let am_one = wire::am_sync(&mut one, Turns::AFirst, |p| {
        p[0].b.length(automerge::ROOT) == n
    })?;
    check_converged(&one)?;

    // End to end over libp2p, in-process nodes; the median of the rounds.
    let mut runs = Vec::new();
    for _ in 0..ctx.rounds {
        runs.push(end_to_end(ctx, &records)?);
    }
    let secs = stats::median(&runs.iter().map(|r| r.0).collect::<Vec<_>>());
    let connect_secs = stats::median(&runs.iter().map(|r| r.1).collect::<Vec<_>>());
    let fastest = runs.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    let slowest = runs.iter().map(|r| r.0).fold(0.0, f64::max);

    let mut o = Outcome::new("P5", "cold sync of 10k records to a new device");
    let rate = o.figure(
        "hearth end to end (libp2p TCP loopback)",
        n as f64 / secs,
        "records/s",
    );
    o.figure(
        "hearth end to end, B start → all records",
        secs * 1000.0,
        "ms",
    );
    o.figure("  fastest round", fastest * 1000.0, "ms");
    o.figure("  slowest round", slowest * 1000.0, "ms");
    o.figure(
        "  of which B start → connected to A",
        connect_secs * 1000.0,
        "ms",
    );
    traffic_figures(&mut o, "hearth sessions in memory", &hearth);
    traffic_figures(&mut o, "automerge sync, 16 shard docs", &am_shards);
    traffic_figures(&mut o, "automerge sync, one doc", &am_one);
    traffic_figures(
        &mut o,
        "automerge sync, 16 shard docs, both open at once",
        &am_lockstep,
    );
    let ratio = o.figure(
        "bytes hearth / automerge (16 shards)",
        hearth.total_bytes() as f64 / am_shards.total_bytes() as f64,
        "×",
    );
    o.figure(
        "bytes hearth / automerge (one doc)",
        hearth.total_bytes() as f64 / am_one.total_bytes() as f64,
        "×",
    );
    o.at_most("bytes vs raw automerge sync", ratio, 1.2, "≤ 1.20×".into());
    o.at_least(
        "end-to-end throughput",
        rate,
        20_000.0,
        "≥ 20000 rec/s".into(),
    );
    o.note(format!(
        "{n} records, {SHARDS} shards; end to end is the median of {} rounds; B's home is created on the account log a pairing gives \
         (Engine::init_joined), so the pairing handshake is not timed; A and B are in-process \
         nodes in this process (engine thread + libp2p TCP/Noise/Yamux on 127.0.0.1, no mDNS)",
        ctx.rounds
    ));
    o.note(format!(
        "end-to-end rounds, B start → all records (→ connected): {}",
        runs.iter()
            .map(|(t, c)| format!("{:.0} ms ({:.0} ms)", t * 1000.0, c * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    o.note(
        "bytes are counted in memory on the same protocol (hearth_crdt::sync::Session frames, \
         no length prefix, Noise or Yamux); a flight is one one-way latency, a round trip two",
    );
    Ok(o)
}

fn traffic_figures(o: &mut Outcome, what: &str, t: &Traffic) {
    o.figure(format!("{what}: bytes A→B"), t.bytes[0] as f64, "B");
    o.figure(format!("{what}: bytes B→A"), t.bytes[1] as f64, "B");
    o.figure(
        format!("{what}: frames both ways"),
        t.total_frames() as f64,
        "",
    );
    o.figure(
        format!("{what}: flights until B complete"),
        f64::from(t.done_at.unwrap_or(0)),
        "",
    );
    o.figure(
        format!("{what}: flights until quiet"),
        f64::from(t.flights),
        "",
    );
    o.figure(format!("{what}: time"), t.secs * 1000.0, "ms");
}

fn check_converged(pairs: &[AmPair]) -> Result<()> {
    for p in pairs {
        if p.a.get_heads() != p.b.get_heads() {
            bail!("raw Automerge sync went quiet before the documents converged");
        }
    }
    Ok(())
}

/// Imports `records` on A, starts B and times B until it holds them all.
/// Returns (seconds to all records, seconds to the connection).
fn end_to_end(ctx: &mut Ctx, records: &[Value]) -> Result<(f64, f64)> {
    let account = Account::new(2)?;
    let (_, engine_a) = account.create(0, &ctx.fresh_dir("p5-a")?)?;
    let (_, engine_b) = account.create(1, &ctx.fresh_dir("p5-b")?)?;
    let a = ctx.rt.block_on(Node::start(engine_a))?;
    let mut nodes = vec![a];
    let result = (|| {
        let a = &nodes[0];
        ctx.rt.block_on(node::import(
            a.handle(),
            hearth_bench::records::batches(records, ctx.batch),
        ))?;
        let started = Instant::now();
        let b = ctx.rt.block_on(async {
            let b = Node::start(engine_b).await?;
            b.learn(a).await?;
            anyhow::Ok(b)
        })?;
        nodes.push(b);
        let (a, b) = (&nodes[0], &nodes[1]);
        let (secs, connect_secs) = ctx.rt.block_on(async {
            let mut connected = None;
            loop {
                if connected.is_none() && b.connected().await? > 0 {
                    connected = Some(started.elapsed().as_secs_f64());
                }
                if b.handle().status().await?.records >= records.len() {
                    break;
                }
                if started.elapsed() > TIMEOUT {
                    bail!("B did not receive the records within {TIMEOUT:?}");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let secs = started.elapsed().as_secs_f64();
            anyhow::Ok((secs, connected.unwrap_or(secs)))
        })?;
        ctx.rt.block_on(async {
            node::expect_records(b.handle(), records.len()).await?;
            let step = (records.len() / SAMPLE).max(1);
            for r in records.iter().step_by(step) {
                let id = r.get("_id").and_then(Value::as_str).unwrap_or_default();
                let (ours, theirs) = (
                    a.handle().get(DOCTYPE, id).await?,
                    b.handle().get(DOCTYPE, id).await?,
                );
                if ours != theirs {
                    bail!("record {id} differs after the sync: {ours} vs {theirs}");
                }
            }
            anyhow::Ok(())
        })?;
        anyhow::Ok((secs, connect_secs))
    })();
    stop_all(nodes, &ctx.rt);
    result
}
