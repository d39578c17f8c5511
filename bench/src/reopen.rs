//! P3: reopening a store holding N records.
//!
//! - Hearth in-process: `Engine::open` (redb open with its integrity check,
//!   store key unwrap, every chunk read and unsealed, every shard loaded,
//!   the view built) until the first `status` answers; median of the rounds.
//!   The same work is also timed piece by piece to show where it goes.
//! - Hearth as a daemon: from spawning the node to its first
//!   `/_hearth/status` answer, then its steady RSS (VmRSS one second after
//!   ready) against the size of `store.redb`.
//! - Baseline: `Automerge::load` of the same records saved as one document,
//!   and as the 16 shard documents (full saves) loaded on as many threads as
//!   Hearth uses; plus the 16 shards from the incremental chunks of P1's
//!   baseline (one per batch, never compacted), to show what replaying
//!   changes costs against loading snapshots. How many chunks Hearth itself
//!   stores (it compacts shards) is reported beside it.
//!
//! To split the RSS, two fresh child processes (`hearth-bench probe`) load
//! the same chunks and report their RSS growth: one holds only the 16
//! Automerge documents, the other a whole `Collection` (documents plus the
//! materialised view). Both are approximate (allocator slack included).
//!
//! Each round measures everything once, Hearth and baselines interleaved.
//! The file was just written, so it is in the page cache: these are warm
//! opens (dropping the cache needs root).
//!
//! Targets: ready ≤ 300 ms; RSS ≤ 2 × on-disk + 30 MiB.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use automerge::{Automerge, LoadOptions, OnPartialLoad, VerificationMode};
use hearth_bench::{procfs, records, stats};
use hearth_crdt::collection::Collection;
use hearth_node::home::Home;
use hearth_node::store::{Store, Table, Unlock, keys};

use crate::Ctx;
use crate::baseline::{AmShards, workers};
use crate::daemon::Daemon;
use crate::import;
use crate::node::{self, DOCTYPE};
use crate::report::{Outcome, mib};

/// Loads each input as an Automerge document on `threads` threads (inputs
/// dealt round-robin, as Hearth's collection load does).
fn load_parallel(inputs: &[Vec<u8>], hearth_options: bool) -> Result<Duration> {
    let threads = workers().min(inputs.len()).max(1);
    let started = Instant::now();
    let results: Vec<Result<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<usize> {
                    let mut loaded = 0;
                    for bytes in inputs.iter().skip(t).step_by(threads) {
                        let doc = if hearth_options {
                            Automerge::load_with_options(
                                bytes,
                                LoadOptions::new()
                                    .on_partial_load(OnPartialLoad::Error)
                                    .verification_mode(VerificationMode::Check),
                            )?
                        } else {
                            Automerge::load(bytes)?
                        };
                        loaded += usize::from(!doc.get_heads().is_empty());
                    }
                    Ok(loaded)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let took = started.elapsed();
    let loaded: usize = results.into_iter().sum::<Result<usize>>()?;
    if loaded != inputs.len() {
        bail!("loaded {loaded} of {} documents", inputs.len());
    }
    Ok(took)
}

/// Reads every chunk of the benchmark collection from the store, grouped by
/// shard (the store is closed again before returning).
fn read_chunks(home: &Home) -> Result<Vec<Vec<Vec<u8>>>> {
    let store = Store::open(home, Unlock::KeyFile)?;
    let rows = store
        .read()?
        .scan_prefix(Table::Chunks, &keys::chunk_prefix(DOCTYPE)?)?;
    let mut shards: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 16];
    for (key, value) in rows {
        let shard = usize::from(keys::decode_chunk_key(&key)?.shard);
        shards
            .get_mut(shard)
            .ok_or_else(|| anyhow!("shard {shard} out of range"))?
            .push(value);
    }
    Ok(shards)
}

/// What a memory probe holds while its RSS is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Probe {
    /// The 16 Automerge shard documents only.
    Automerge,
    /// A whole `Collection`: the documents and the materialised view.
    Collection,
}

/// Body of `hearth-bench probe --home DIR --what automerge|collection`: loads
/// the benchmark collection's chunks, then the documents or the collection,
/// and prints (JSON) the RSS before and after the load, with the loaded data
/// still held. Run in a fresh process so nothing else inflates the figures.
pub(crate) fn probe(home: &Path, what: Probe) -> Result<()> {
    let home = Home::at(home)?;
    let shards = read_chunks(&home)?;
    let before = procfs::memory(None)?.rss;
    let held: Box<dyn std::any::Any> = match what {
        Probe::Automerge => {
            let docs = shards
                .into_iter()
                .map(|chunks| Automerge::load(&chunks.concat()))
                .collect::<Result<Vec<_>, _>>()?;
            Box::new(docs)
        }
        Probe::Collection => Box::new(Collection::load(
            DOCTYPE,
            automerge::ActorId::from([9u8; 32].as_slice()),
            shards,
        )?),
    };
    let after = procfs::memory(None)?.rss;
    println!("{}", serde_json::json!({"before": before, "after": after}));
    drop(held);
    Ok(())
}

/// Runs [`probe`] in a child process; returns the RSS growth in bytes.
fn probe_child(home: &Home, what: &str) -> Result<u64> {
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new(exe)
        .args(["probe", "--what", what, "--home"])
        .arg(home.root())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        bail!("the {what} memory probe failed: {}", output.status);
    }
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let (before, after) = (v["before"].as_u64(), v["after"].as_u64());
    match (before, after) {
        (Some(b), Some(a)) => Ok(a.saturating_sub(b)),
        _ => bail!("the {what} memory probe printed {v}"),
    }
}

fn median_ms(samples: &[Duration]) -> f64 {
    stats::median(
        &samples
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect::<Vec<_>>(),
    )
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<Outcome> {
    import::prepare(ctx)?;
    let n = ctx.records.len();
    let prepared = ctx
        .prepared
        .as_ref()
        .ok_or_else(|| anyhow!("no prepared home"))?;
    let home = prepared.home.clone();
    let disk = std::fs::metadata(home.store_path())?.len();

    // Baseline inputs: the same records as one document, as the 16 shard
    // saves, and as one incremental chunk per batch (never compacted).
    let mut one = AmShards::new(1);
    for batch in records::batches(&ctx.records, ctx.batch) {
        one.apply_batch(&batch, 0)?;
    }
    let one_doc = vec![one.docs()[0].save()];
    drop(one);
    let saves: Vec<Vec<u8>> = prepared.shards.docs().iter().map(Automerge::save).collect();
    let incremental: Vec<Vec<u8>> = prepared.chunks.iter().map(|c| c.concat()).collect();
    // What Hearth stores (its shards may have been compacted), loaded by
    // Automerge alone: Collection::load minus this is the view's cost.
    let stored = read_chunks(&home)?;
    let stored_count: usize = stored.iter().map(Vec::len).sum();
    let stored_shards: Vec<Vec<u8>> = stored.iter().map(|c| c.concat()).collect();
    drop(stored);
    let stored_bytes: usize = stored_shards.iter().map(Vec::len).sum();

    // Each round measures everything once, so that a noisy neighbour hits
    // Hearth and the baselines alike; medians are reported.
    let (mut opens, mut t_store, mut t_read, mut t_load, mut ready) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut b_one, mut b_saves, mut b_incr, mut b_stored) = (vec![], vec![], vec![], vec![]);
    let mut memory = None;
    for round in 0..ctx.rounds {
        eprintln!("P3 round {}/{}…", round + 1, ctx.rounds);
        // In-process: open to first status.
        let started = Instant::now();
        let running = node::open(&home)?;
        let handle = running.handle.clone();
        let status = ctx.rt.block_on(handle.status())?;
        opens.push(started.elapsed());
        if status.records != n {
            bail!("reopened with {} records, expected {n}", status.records);
        }
        drop(handle);
        running.stop();

        // The same work, piece by piece.
        let started = Instant::now();
        let store = Store::open(&home, Unlock::KeyFile)?;
        t_store.push(started.elapsed());
        drop(store);
        let started = Instant::now();
        let shards = read_chunks(&home)?;
        t_read.push(started.elapsed());
        let started = Instant::now();
        let collection = Collection::load(
            DOCTYPE,
            automerge::ActorId::from([9u8; 32].as_slice()),
            shards,
        )?;
        t_load.push(started.elapsed());
        if collection.len() != n {
            bail!(
                "Collection::load found {} records, expected {n}",
                collection.len()
            );
        }
        drop(collection);

        // As a daemon: start to ready, then steady RSS.
        let log = home.root().join(format!("p3-node-{round}.log"));
        let daemon = Daemon::start(&ctx.launcher, &home, &log)?;
        ready.push(daemon.ready_after);
        std::thread::sleep(Duration::from_secs(1));
        let records = daemon.get("/_hearth/status")?["records"]
            .as_u64()
            .unwrap_or(0);
        memory = Some(procfs::memory(Some(daemon.pid()))?);
        daemon.stop()?;
        if records != n as u64 {
            bail!("the daemon reopened with {records} records, expected {n}");
        }

        b_one.push(load_parallel(&one_doc, false)?);
        b_saves.push(load_parallel(&saves, false)?);
        b_incr.push(load_parallel(&incremental, true)?);
        b_stored.push(load_parallel(&stored_shards, true)?);
    }
    let memory = memory.context("no daemon round ran")?;
    let am_memory = probe_child(&home, "automerge")?;
    let collection_memory = probe_child(&home, "collection")?;
    let json_bytes: usize = ctx
        .records
        .iter()
        .map(|r| serde_json::to_vec(r).map_or(0, |v| v.len()))
        .sum();
    let chunk_bytes: usize = incremental.iter().map(Vec::len).sum();

    let mut o = Outcome::new(
        "P3",
        "reopen a store of N records (start to ready), steady RSS",
    );
    let h = o.figure(
        "hearth Engine::open → first status (in-process)",
        median_ms(&opens),
        "ms",
    );
    let d = o.figure(
        "hearth daemon spawn → first /_hearth/status",
        median_ms(&ready),
        "ms",
    );
    o.figure(
        "  of which: Store::open (redb + integrity check + key)",
        median_ms(&t_store),
        "ms",
    );
    o.figure(
        "  of which: read + unseal every chunk (own store open)",
        median_ms(&t_read),
        "ms",
    );
    let load = o.figure(
        "  of which: Collection::load (automerge + view)",
        median_ms(&t_load),
        "ms",
    );
    let am = o.figure(
        "    automerge load of the stored chunks alone, parallel",
        median_ms(&b_stored),
        "ms",
    );
    o.figure("    so, building the view (approx.)", load - am, "ms");
    o.figure(
        "baseline Automerge::load, one document",
        median_ms(&b_one),
        "ms",
    );
    let b = o.figure(
        "baseline Automerge::load, 16 shard saves, parallel",
        median_ms(&b_saves),
        "ms",
    );
    o.figure(
        "automerge load, 16 shards of uncompacted per-batch chunks",
        median_ms(&b_incr),
        "ms",
    );
    o.figure("hearth open / baseline 16-shard load", h / b, "×");
    o.figure("store.redb on disk", mib(disk), "MiB");
    o.figure(
        "hearth chunks stored (all shards)",
        stored_count as f64,
        "chunks",
    );
    o.figure(
        "hearth chunk bytes stored (plaintext)",
        mib(stored_bytes as u64),
        "MiB",
    );
    o.figure("records as JSON", mib(json_bytes as u64), "MiB");
    o.figure(
        "uncompacted per-batch chunks (all shards)",
        mib(chunk_bytes as u64),
        "MiB",
    );
    o.figure(
        "one-document save size",
        mib(one_doc[0].len() as u64),
        "MiB",
    );
    o.figure(
        "16 shard saves size",
        mib(saves.iter().map(|s| s.len() as u64).sum()),
        "MiB",
    );
    o.figure("daemon VmRSS 1 s after ready", mib(memory.rss), "MiB");
    o.figure("daemon VmHWM (peak RSS)", mib(memory.peak_rss), "MiB");
    o.figure(
        "  approx: RSS of the 16 automerge docs alone",
        mib(am_memory),
        "MiB",
    );
    o.figure(
        "  approx: RSS of Collection::load (docs + view)",
        mib(collection_memory),
        "MiB",
    );
    o.at_most("in-process open → ready", h, 300.0, "≤ 300 ms".into());
    o.at_most("daemon start → ready", d, 300.0, "≤ 300 ms".into());
    let limit = 2.0 * mib(disk) + 30.0;
    o.at_most(
        "daemon RSS",
        mib(memory.rss),
        limit,
        format!("≤ {limit:.1} MiB"),
    );
    o.note(format!(
        "{n} records; warm page cache; medians of {} round(s); node via {}; MB read as MiB",
        ctx.rounds,
        ctx.launcher.describe()
    ));
    Ok(o)
}
