//! P2: one durable `put` through the HTTP API.
//!
//! A node runs as a child process (the real `hearth up` when built) on a
//! fresh home; a keep-alive client sends sequential `PUT
//! /data/bench.notes/{id}` of small new records, each acknowledged only
//! after its durable commit. The baseline is one small row written to a
//! plain redb file in one durable commit (redb's defaults: immediate,
//! single-phase), in the same run and interleaved with the PUTs in blocks so
//! that a noisy neighbour hits both alike.
//!
//! To show where the time goes, the run also times a two-phase raw commit
//! (what Hearth's store does), a `GET /_hearth/status` round trip (HTTP and
//! engine queue, no commit), the same puts through an in-process engine
//! `Handle::put` (no HTTP), and `Collection::put` + `take_chunks` alone (the
//! Automerge work, no storage).
//!
//! Target: p50 ≤ 1.5 × the raw commit's p50.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use automerge::ActorId;
use hearth_bench::stats::Summary;
use hearth_crdt::collection::{Collection, PutMode};
use hearth_node::engine::Handle;
use serde_json::json;

use crate::Ctx;
use crate::baseline::RawRedb;
use crate::daemon::Daemon;
use crate::node;
use crate::report::Outcome;

const BLOCKS: usize = 5;
const PER_BLOCK: usize = 100;
const WARMUP: usize = 20;

fn put(daemon: &Daemon, i: usize) -> Result<Duration> {
    let id = format!("note-{i:06}");
    let body = json!({"title": format!("note {i}"), "n": i, "done": false});
    let started = Instant::now();
    let mut response = daemon
        .agent()
        .put(daemon.url(&format!("/data/bench.notes/{id}")))
        .header("Authorization", &daemon.auth())
        .send_json(&body)?;
    let status = response.status();
    let text = response.body_mut().read_to_string()?;
    let took = started.elapsed();
    if !status.is_success() {
        bail!("PUT {id}: {status}: {text}");
    }
    Ok(took)
}

fn status(daemon: &Daemon) -> Result<Duration> {
    let started = Instant::now();
    daemon.get("/_hearth/status")?;
    Ok(started.elapsed())
}

fn engine_put(ctx: &Ctx, handle: &Handle, i: usize) -> Result<Duration> {
    let id = format!("note-{i:06}");
    let body = json!({"title": format!("note {i}"), "n": i, "done": false});
    let started = Instant::now();
    ctx.rt
        .block_on(handle.put("bench.notes", Some(id), body, PutMode::Create))?;
    Ok(started.elapsed())
}

fn collection_put(collection: &mut Collection, i: usize) -> Result<Duration> {
    let id = format!("note-{i:06}");
    let body = json!({"title": format!("note {i}"), "n": i, "done": false});
    let started = Instant::now();
    collection.put(&id, body, PutMode::Create, 1_700_000_000_000)?;
    let chunks = collection.take_chunks();
    let took = started.elapsed();
    if chunks.len() != 1 {
        bail!("a put produced {} chunks", chunks.len());
    }
    Ok(took)
}

fn commit(db: &mut RawRedb, value: &[u8]) -> Result<Duration> {
    let started = Instant::now();
    db.commit_row(value)?;
    Ok(started.elapsed())
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<Outcome> {
    let dir = ctx.fresh_dir("p2-home")?;
    let home = node::init_home(&dir)?;
    let raw_dir = ctx.fresh_dir("p2-redb")?;
    let mut raw = RawRedb::create(&raw_dir.join("raw.redb"), false)?;
    let mut raw2 = RawRedb::create(&raw_dir.join("raw-2pc.redb"), true)?;
    let daemon = Daemon::start(&ctx.launcher, &home, &dir.join("node.log"))?;
    let row = br#"{"title":"note 1","n":1,"done":false}"#;

    let mut next = 0;
    for _ in 0..WARMUP {
        put(&daemon, next)?;
        next += 1;
        commit(&mut raw, row)?;
        commit(&mut raw2, row)?;
        status(&daemon)?;
    }
    let (mut puts, mut commits, mut commits2, mut gets) = (vec![], vec![], vec![], vec![]);
    for _ in 0..BLOCKS {
        for _ in 0..PER_BLOCK {
            puts.push(put(&daemon, next)?);
            next += 1;
        }
        for _ in 0..PER_BLOCK {
            commits.push(commit(&mut raw, row)?);
        }
        for _ in 0..PER_BLOCK {
            commits2.push(commit(&mut raw2, row)?);
        }
        for _ in 0..PER_BLOCK / 4 {
            gets.push(status(&daemon)?);
        }
    }
    let records = daemon.get("/_hearth/status")?["records"]
        .as_u64()
        .unwrap_or(0);
    daemon.stop()?;
    if records != next as u64 {
        bail!("the node holds {records} records after {next} PUTs");
    }

    // Where the time goes: the same puts without HTTP (engine in-process),
    // and without storage (the collection alone).
    let engine_dir = ctx.fresh_dir("p2-engine")?;
    let engine_home = node::init_home(&engine_dir)?;
    let running = node::open(&engine_home)?;
    let handle = running.handle.clone();
    let mut collection = Collection::new("bench.notes", 16, ActorId::from([3u8; 32].as_slice()))?;
    let (mut engine_puts, mut crdt_puts) = (vec![], vec![]);
    for i in 0..WARMUP {
        engine_put(ctx, &handle, i)?;
        collection_put(&mut collection, i)?;
    }
    for i in WARMUP..WARMUP + BLOCKS * PER_BLOCK {
        engine_puts.push(engine_put(ctx, &handle, i)?);
        crdt_puts.push(collection_put(&mut collection, i)?);
    }
    drop(handle);
    running.stop();

    let summary = |s: &[Duration]| Summary::of(s).ok_or_else(|| anyhow::anyhow!("no samples"));
    let (p, c, c2, g) = (
        summary(&puts)?,
        summary(&commits)?,
        summary(&commits2)?,
        summary(&gets)?,
    );
    let (e, k) = (summary(&engine_puts)?, summary(&crdt_puts)?);
    let mut o = Outcome::new("P2", "single durable put through the HTTP API");
    o.figure("hearth HTTP PUT p50", p.p50_us, "µs");
    o.figure("hearth HTTP PUT p99", p.p99_us, "µs");
    o.figure("baseline raw redb commit p50", c.p50_us, "µs");
    o.figure("baseline raw redb commit p99", c.p99_us, "µs");
    o.figure("raw redb two-phase commit p50", c2.p50_us, "µs");
    o.figure("raw redb two-phase commit p99", c2.p99_us, "µs");
    o.figure("HTTP GET /_hearth/status p50 (no commit)", g.p50_us, "µs");
    o.figure(
        "engine Handle::put p50 (in-process, no HTTP)",
        e.p50_us,
        "µs",
    );
    o.figure(
        "Collection::put + take_chunks p50 (no storage)",
        k.p50_us,
        "µs",
    );
    o.figure("PUT p50 / two-phase commit p50", p.p50_us / c2.p50_us, "×");
    o.at_most(
        "PUT p50 / raw commit p50",
        p.p50_us / c.p50_us,
        1.5,
        "≤ 1.50×".into(),
    );
    o.note(format!(
        "node: {}; {} sequential PUTs of new ~40-byte records on one keep-alive ureq connection, interleaved in {BLOCKS} blocks with {} raw commits of the same row; {WARMUP} warm-up rounds",
        ctx.launcher.describe(),
        puts.len(),
        commits.len()
    ));
    Ok(o)
}
