//! P1: bulk import of N records into one collection, encrypted and durable.
//!
//! - Hearth: a fresh home, `Handle::put_many` in batches of
//!   `engine.import_batch` (5000), the path `hearth import` takes; each batch
//!   is one durable commit of sealed chunks, changes-feed entry and catalog.
//! - Baseline: the same records, batches, 16 shards and one Automerge
//!   transaction per shard per batch ([`AmShards`]), each batch's incremental
//!   saves stored in a plain redb file in one durable commit, with the
//!   durability Hearth's store uses (immediate, two-phase).
//! - Also shown, to show where the time goes: the Automerge work alone (no
//!   storage), and Hearth with shard compaction switched off (the engine
//!   compacts a shard once its changes outweigh its snapshot; the baseline
//!   never compacts).
//!
//! Target: ≥ 80% of the baseline's throughput, and ≥ 100k records/s.

use std::time::Instant;

use anyhow::{Result, bail};
use hearth_bench::{records, stats};
use hearth_node::config::EngineConfig;
use hearth_node::home::Home;

use crate::Ctx;
use crate::baseline::{AmShards, RawRedb};
use crate::node;
use crate::report::{Outcome, mib};

/// Hearth's default shard count; the baseline must use the same.
const SHARDS: u16 = 16;

/// A home holding the run's records (engine stopped, store closed cleanly)
/// and the baseline's shards holding the same records, for P3 and P4.
pub(crate) struct Prepared {
    pub(crate) home: Home,
    pub(crate) shards: AmShards,
    /// Per shard, the incremental saves in the order they were stored.
    pub(crate) chunks: Vec<Vec<Vec<u8>>>,
}

/// The engine configuration with shard compaction switched off, to show
/// what compaction costs an import.
fn no_compaction() -> EngineConfig {
    EngineConfig {
        compact_after_chunks: u32::MAX,
        compact_min_bytes: u64::MAX,
        ..EngineConfig::default()
    }
}

/// Seconds for the Automerge change time.
fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Seconds of the first and the last batch of an import.
#[derive(Debug, Clone, Copy, Default)]
struct Ends {
    first: f64,
    last: f64,
}

impl Ends {
    fn of(per_batch: &[f64]) -> Self {
        Self {
            first: per_batch.first().copied().unwrap_or(0.0),
            last: per_batch.last().copied().unwrap_or(0.0),
        }
    }
}

/// Imports every record into a fresh home; returns it, the seconds taken and
/// the first and last batch's seconds.
fn hearth_import(ctx: &mut Ctx, config: EngineConfig) -> Result<(Home, f64, Ends)> {
    let dir = ctx.fresh_dir("p1-home")?;
    let home = node::init_home(&dir)?;
    let running = node::open_with(&home, config)?;
    let batches = records::batches(&ctx.records, ctx.batch);
    let n = ctx.records.len();
    let handle = running.handle.clone();
    let (secs, per_batch) = ctx.rt.block_on(async {
        let started = Instant::now();
        let mut per_batch = Vec::with_capacity(batches.len());
        let mut written = 0;
        for batch in batches {
            let t = Instant::now();
            written += node::import(&handle, vec![batch]).await?;
            per_batch.push(t.elapsed().as_secs_f64());
        }
        let secs = started.elapsed().as_secs_f64();
        if written != n {
            bail!("imported {written} of {n} records");
        }
        node::expect_records(&handle, n).await?;
        Ok((secs, per_batch))
    })?;
    drop(handle);
    running.stop();
    Ok((home, secs, Ends::of(&per_batch)))
}

/// What a baseline import made and took.
struct BaselineRun {
    shards: AmShards,
    chunks: Vec<Vec<Vec<u8>>>,
    secs: f64,
    ends: Ends,
    file_bytes: u64,
}

/// The baseline: Automerge shards plus, with `store`, a plain redb file.
fn baseline_import(ctx: &mut Ctx, store: bool) -> Result<BaselineRun> {
    let mut db = if store {
        let dir = ctx.fresh_dir("p1-redb")?;
        Some((RawRedb::create(&dir.join("baseline.redb"), true)?, dir))
    } else {
        None
    };
    let batches = records::batches(&ctx.records, ctx.batch);
    let mut shards = AmShards::new(SHARDS);
    let mut kept: Vec<Vec<Vec<u8>>> = vec![Vec::new(); usize::from(SHARDS)];
    let at = now_s();
    let started = Instant::now();
    let mut per_batch = Vec::with_capacity(batches.len());
    for batch in &batches {
        let t = Instant::now();
        shards.apply_batch(batch, at)?;
        let chunks = shards.take_chunks();
        if let Some((db, _)) = db.as_mut() {
            db.commit_chunks(&chunks)?;
        }
        per_batch.push(t.elapsed().as_secs_f64());
        for (shard, bytes) in chunks {
            kept[usize::from(shard)].push(bytes);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let mut file_bytes = 0;
    if let Some((db, dir)) = db {
        let stored = db.chunk_rows()?;
        let expected: usize = kept.iter().map(Vec::len).sum();
        if stored != expected as u64 {
            bail!("the baseline stored {stored} chunks of {expected}");
        }
        drop(db);
        file_bytes = std::fs::metadata(dir.join("baseline.redb"))?.len();
    }
    Ok(BaselineRun {
        shards,
        chunks: kept,
        secs,
        ends: Ends::of(&per_batch),
        file_bytes,
    })
}

/// Builds the prepared home and shards without timing anything (for P3 or P4
/// run without P1).
pub(crate) fn prepare(ctx: &mut Ctx) -> Result<()> {
    if ctx.prepared.is_some() {
        return Ok(());
    }
    eprintln!(
        "preparing a {}-record home and baseline shards…",
        ctx.records.len()
    );
    let (home, _, _) = hearth_import(ctx, EngineConfig::default())?;
    let run = baseline_import(ctx, false)?;
    ctx.prepared = Some(Prepared {
        home,
        shards: run.shards,
        chunks: run.chunks,
    });
    Ok(())
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<Outcome> {
    let n = ctx.records.len() as f64;
    let mut hearth = Vec::new();
    let mut base = Vec::new();
    let mut am_only = Vec::new();
    let mut uncompacted = Vec::new();
    let mut last = None;
    let mut sizes = (0, 0);
    let mut ends = (Ends::default(), Ends::default(), Ends::default());
    for round in 0..ctx.rounds {
        eprintln!("P1 round {}/{}…", round + 1, ctx.rounds);
        let (home, secs, h_ends) = hearth_import(ctx, EngineConfig::default())?;
        hearth.push(n / secs);
        let (_, secs, _) = hearth_import(ctx, no_compaction())?;
        uncompacted.push(n / secs);
        let stored = baseline_import(ctx, true)?;
        base.push(n / stored.secs);
        let alone = baseline_import(ctx, false)?;
        am_only.push(n / alone.secs);
        sizes = (
            std::fs::metadata(home.store_path())?.len(),
            stored.file_bytes,
        );
        ends = (h_ends, stored.ends, alone.ends);
        last = Some(Prepared {
            home,
            shards: stored.shards,
            chunks: stored.chunks,
        });
    }
    ctx.prepared = last;

    let mut o = Outcome::new("P1", "bulk import, encrypted and durable");
    let h = o.figure(
        "hearth put_many via engine",
        stats::median(&hearth),
        "records/s",
    );
    let b = o.figure(
        "baseline automerge + plain redb",
        stats::median(&base),
        "records/s",
    );
    let a = o.figure(
        "automerge work alone (no storage)",
        stats::median(&am_only),
        "records/s",
    );
    let u = o.figure(
        "hearth with shard compaction off",
        stats::median(&uncompacted),
        "records/s",
    );
    o.figure("hearth (compaction off) / baseline", u / b, "×");
    o.figure(
        "hearth time per 5000-record batch",
        ctx.batch as f64 / h * 1000.0,
        "ms",
    );
    o.figure(
        "baseline time per 5000-record batch",
        ctx.batch as f64 / b * 1000.0,
        "ms",
    );
    o.figure("automerge share of the baseline's time", b / a * 100.0, "%");
    o.figure("hearth first batch", ends.0.first * 1000.0, "ms");
    o.figure("hearth last batch", ends.0.last * 1000.0, "ms");
    o.figure("baseline first batch", ends.1.first * 1000.0, "ms");
    o.figure("baseline last batch", ends.1.last * 1000.0, "ms");
    o.figure("automerge alone first batch", ends.2.first * 1000.0, "ms");
    o.figure("automerge alone last batch", ends.2.last * 1000.0, "ms");
    o.figure("hearth store.redb size", mib(sizes.0), "MiB");
    o.figure("baseline redb size", mib(sizes.1), "MiB");
    o.at_least("hearth / baseline throughput", h / b, 0.8, "≥ 0.80×".into());
    o.at_least("hearth throughput", h, 100_000.0, "≥ 100000 rec/s".into());
    o.note(format!(
        "{} records of 5 fields, batches of {}, {SHARDS} shards, median of {} round(s); each round imports into a fresh home / fresh redb file",
        ctx.records.len(),
        ctx.batch,
        ctx.rounds
    ));
    o.note("baseline commits use Hearth's durability: Durability::Immediate and two-phase commit, 64 MiB cache");
    Ok(o)
}
