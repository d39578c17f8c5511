//! P12: the cost of authorship. P1's and P5's shapes, each run twice in the
//! same round: once with every change signed and checked, once without.
//!
//! Both sides run the real node core (`hearth_crdt::node::Node`) in memory
//! ([`crate::core_net`]): the same code the daemon's engine thread drives,
//! minus the store's commit and the network.
//!
//! - **Signed.** Two accounts, Alice and Bob, become contacts (card,
//!   request, acceptance: the core's own `/hearth/share/1` messages). Alice
//!   writes one seed record into `bench.signed`, shares it with Bob
//!   (`write`), and Bob accepts (his local collection is created empty).
//!   Bob's node then writes
//!   with its signer set (`Signer::author`, which `Node::set_notes` sets on
//!   a share's local collection): every change carries the access-list
//!   heads it was written under and Bob's device signature.
//! - **Unsigned.** Two devices of one account, the seed on the first, the
//!   records written on the second into a collection nothing shares: no
//!   note, no signer, no gate.
//!
//! What is measured on each:
//!
//! - **Import (P1's shape).** The `--records` records written with
//!   `Node::put_many` in batches of `engine.import_batch` (5000), each batch
//!   one change per shard, on the writer (Bob / the second device) while it
//!   has no session. Throughput, median of the rounds.
//! - **Cold sync (P5's shape).** 10k records (the first 10k of the run's
//!   records) written in batches of 5000, then a session opened between the
//!   writer and the receiver (Alice / the first device), carried until both
//!   are quiet. On the signed side Alice's share gate (`Node::gate`, the
//!   private `check_change` of `hearth_crdt::node::shares`) checks every one
//!   of Bob's changes: the signature verifies, the signer is the change's
//!   author device, that device belongs to an account the list names, the
//!   access-list state the change's note names is known, includes every
//!   state its dependencies name, and grants Bob's account `write`. Wire
//!   bytes are counted from the frames the cores sent (the `/hearth/sync/1`
//!   frames, without the 4-byte length prefix, Noise and Yamux), and the
//!   `signatures` field of each `Frame::Sync` is measured exactly (the frame
//!   re-encoded without it).
//! - **Cold sync, one change per record.** The same 10k records written with
//!   one `Node::put` each (10k changes, each signed, each checked on
//!   arrival): the worst case for the per-change cost. The writes' own
//!   latencies give the single-put figure (P2's shape, in memory).
//!
//! The two worlds run side by side, interleaved batch by batch and put by
//! put, their syncs alternated (three pairs per round for the batch-written
//! records), after an uncounted warm-up round.
//!
//! After every run the answer is checked: the receiver holds exactly the
//! writer's records (10k + the seed), no session was refused or closed, and
//! on the signed side every change the receiver holds carries a signature
//! that verifies, Bob's for each of his changes; on the unsigned side none
//! does.
//!
//! Target: signed ≥ 0.9 × unsigned (throughput); bytes added per change on
//! the wire reported.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use automerge::ChangeHash;
use hearth_bench::stats::{self, Summary};
use hearth_crdt::collection::authorship::AUTHORSHIP_BYTES;
use hearth_crdt::collection::{Authorship, Collection, PutMode};
use hearth_crdt::node::shares::Standing;
use hearth_crdt::sync::{Frame, Limits};
use hearth_crypto::acl::Level;
use hearth_crypto::identity::{DeviceId, DeviceKey};
use serde_json::{Value, json};

use crate::Ctx;
use crate::core_net::{self, Net, Sent};
use crate::report::Outcome;

/// The owner's collection (and the unsigned one's name on both devices).
const COLLECTION: &str = "bench.signed";
/// Records of the cold sync, as P5.
const SYNC_RECORDS: usize = 10_000;
/// Cold syncs of records written in batches, per round.
const SYNC_REPEATS: usize = 3;
/// Records of the warm-up round.
const WARMUP: usize = 2_000;
/// Signatures made and verified for the per-operation figures.
const MICRO: usize = 2_000;
/// The receiver: Alice (the owner), or the unsigned account's first device.
const RECEIVER: usize = 0;
/// The writer: Bob (granted `write`), or the unsigned account's second device.
const WRITER: usize = 1;

/// Two nodes, a writer and a receiver, and the writer's name for the
/// collection.
struct World {
    net: Net,
    /// The writer's local name of the collection.
    local: String,
    signed: bool,
}

impl World {
    /// Alice and Bob, contacts; Alice's `bench.signed` (one seed record)
    /// shared with Bob for writing, accepted by Bob; no session open.
    fn signed() -> Result<Self> {
        let mut nodes = core_net::account(&["alice"])?;
        nodes.extend(core_net::account(&["bob"])?);
        let mut net = Net::new(nodes);
        net.befriend(RECEIVER, WRITER, "Bob", "Alice")?;
        seed(&mut net)?;
        let share = net.run(RECEIVER, |n, now| {
            n.share(now, COLLECTION, "Bob", Level::Write)
        })?;
        let id = share.id().to_string();
        let accepted = net.run(WRITER, |n, now| n.accept_share(now, &id, None))?;
        let local = accepted
            .local
            .context("an accepted share without a local collection")?;
        // The owner heard the acceptance: Bob stands active at the list's
        // current state, with write.
        let owner = &net.nodes[RECEIVER];
        let known = owner
            .shares()
            .get(&share.id())
            .context("the owner lost its share")?;
        let bob = net.nodes[WRITER].log().account_id();
        let state = known.acl.state(owner.log());
        ensure!(
            known.standing(&bob, &state) == Standing::Active && state.may_write(&bob),
            "Bob is not an active writer of the share on Alice's node"
        );
        ensure!(net.closed.is_empty(), "a session closed during the set-up");
        Ok(Self {
            net,
            local,
            signed: true,
        })
    }

    /// Two devices of one account, the seed on the first; no session open.
    fn unsigned() -> Result<Self> {
        let mut net = Net::new(core_net::account(&["x0", "x1"])?);
        seed(&mut net)?;
        Ok(Self {
            net,
            local: COLLECTION.to_owned(),
            signed: false,
        })
    }

    fn writer_collection(&self) -> Result<&Collection> {
        Ok(&self.net.nodes[WRITER]
            .collection(&self.local)?
            .context("the writer has no collection")?
            .data)
    }

    fn receiver_collection(&self) -> Result<&Collection> {
        Ok(&self.net.nodes[RECEIVER]
            .collection(COLLECTION)?
            .context("the receiver has no collection")?
            .data)
    }

    /// Writes one batch with `put_many` on the writer (no session open);
    /// the time it took.
    fn write_batch(&mut self, batch: Vec<Value>) -> Result<Duration> {
        let local = self.local.clone();
        let n = batch.len();
        let t = Instant::now();
        let written = self.net.run(WRITER, |node, now| {
            node.put_many(now, &mut rand::rngs::OsRng, &local, batch)
        })?;
        let took = t.elapsed();
        ensure!(
            written.len() == n,
            "put_many wrote {} of {n}",
            written.len()
        );
        Ok(took)
    }

    /// Writes one record with `put` (one change) on the writer; the time it
    /// took.
    fn write_one(&mut self, record: &Value) -> Result<Duration> {
        let local = self.local.clone();
        let id = record
            .get("_id")
            .and_then(Value::as_str)
            .context("a record without _id")?
            .to_owned();
        let body = record.clone();
        let t = Instant::now();
        self.net.run(WRITER, |node, now| {
            node.put(
                now,
                &mut rand::rngs::OsRng,
                &local,
                Some(id),
                body,
                PutMode::Create,
            )
        })?;
        Ok(t.elapsed())
    }

    /// Checks that the writer holds exactly `n` records.
    fn check_written(&self, n: usize) -> Result<()> {
        let len = self.writer_collection()?.len();
        ensure!(len == n, "the writer holds {len} records, {n} were written");
        Ok(())
    }

    /// Opens the session and carries it until both sides are quiet; checks
    /// the outcome.
    fn sync(&mut self, expected: usize) -> Result<Synced> {
        self.net.record();
        let started = Instant::now();
        self.net.connect(RECEIVER, WRITER);
        let secs = started.elapsed().as_secs_f64();
        let frames = self.net.take_recording();
        ensure!(
            self.net.closed.is_empty(),
            "sessions were closed: {:?}",
            self.net.closed
        );
        ensure!(
            self.net.connected(RECEIVER, WRITER),
            "the session did not stay open"
        );
        let (mine, theirs) = (self.receiver_collection()?, self.writer_collection()?);
        ensure!(
            mine.len() == expected + 1,
            "the receiver holds {} records, expected {} (the writer's and the seed)",
            mine.len(),
            expected + 1
        );
        if mine.records() != theirs.records() {
            bail!("the two replicas hold different records after the sync");
        }
        let received = census(mine)?;
        let written = census(theirs)?;
        let writer = self.net.nodes[WRITER].id();
        let receiver = self.net.nodes[RECEIVER].id();
        ensure!(
            received.changes == written.changes,
            "the receiver holds {} changes, the writer {}",
            received.changes,
            written.changes
        );
        if self.signed {
            ensure!(
                received.unsigned == 0,
                "{} changes arrived without a signature",
                received.unsigned
            );
            let by_bob = received.by.get(&writer).copied().unwrap_or(0);
            let by_alice = received.by.get(&receiver).copied().unwrap_or(0);
            ensure!(
                by_bob + by_alice == received.changes && by_alice == 1,
                "signers on the receiver: {by_bob} by Bob, {by_alice} by Alice, of {} changes",
                received.changes
            );
        } else {
            ensure!(
                received.unsigned == received.changes,
                "an unsigned world holds {} signed changes",
                received.changes - received.unsigned
            );
        }
        Ok(Synced {
            secs,
            wire: Wire::of(&frames, WRITER)?,
            changes: received.changes,
            writer_changes: received.changes - 1,
        })
    }
}

/// Alice's (or the first device's) seed record, which creates the
/// collection.
fn seed(net: &mut Net) -> Result<()> {
    net.run(RECEIVER, |n, now| {
        n.put(
            now,
            &mut rand::rngs::OsRng,
            COLLECTION,
            Some("seed".into()),
            json!({"seed": true}),
            PutMode::Create,
        )
    })?;
    Ok(())
}

/// What a sync run took and sent.
struct Synced {
    secs: f64,
    wire: Wire,
    /// Changes the receiver holds after the sync.
    changes: usize,
    /// Changes the writer made (all but the seed).
    writer_changes: usize,
}

/// The changes of a collection and who signed them.
struct Census {
    changes: usize,
    unsigned: usize,
    /// Verified signatures, by signer.
    by: BTreeMap<DeviceId, usize>,
}

fn census(coll: &Collection) -> Result<Census> {
    let mut c = Census {
        changes: 0,
        unsigned: 0,
        by: BTreeMap::new(),
    };
    for shard in 0..coll.shard_count() {
        for hash in coll.shard_changes_since(shard, &[])? {
            c.changes += 1;
            match coll.authorship(shard, &hash) {
                None => c.unsigned += 1,
                Some(a) => {
                    let signer = a.verify().map_err(anyhow::Error::msg)?;
                    *c.by.entry(signer).or_default() += 1;
                }
            }
        }
    }
    Ok(c)
}

/// The frames of one sync, counted.
#[derive(Debug, Clone, Copy, Default)]
struct Wire {
    /// Bytes writer → receiver and receiver → writer.
    bytes: [u64; 2],
    frames: [u64; 2],
    /// Signatures carried in `Frame::Sync`s, and the bytes of those
    /// frames' `signatures` fields beyond an empty list.
    signatures: u64,
    signature_bytes: u64,
    /// `Frame::Sync`s that carried at least one signature.
    signed_frames: u64,
    /// Bytes of `Frame::Acl` (the share's credentials).
    acl_bytes: u64,
}

impl Wire {
    fn of(frames: &[Sent], writer: usize) -> Result<Self> {
        let limits = Limits::default();
        let mut w = Wire::default();
        for (from, _, frame) in frames {
            let dir = usize::from(*from != writer);
            w.bytes[dir] += frame.len() as u64;
            w.frames[dir] += 1;
            match Frame::decode(frame, &limits)? {
                Frame::Sync {
                    collection,
                    shards,
                    shard,
                    message,
                    signatures,
                } if !signatures.is_empty() => {
                    let n = signatures.len() as u64;
                    let bare = Frame::Sync {
                        collection,
                        shards,
                        shard,
                        message,
                        signatures: Vec::new(),
                    }
                    .encode(&limits)?;
                    w.signatures += n;
                    w.signature_bytes += (frame.len() - bare.len()) as u64;
                    w.signed_frames += 1;
                }
                Frame::Acl { .. } => w.acl_bytes += frame.len() as u64,
                _ => {}
            }
        }
        Ok(w)
    }

    fn total(&self) -> u64 {
        self.bytes[0] + self.bytes[1]
    }
}

/// One round's figures, signed and unsigned side by side.
struct Round {
    import: [f64; 2],
    /// [`SYNC_REPEATS`] pairs.
    batches: Vec<[Synced; 2]>,
    per_record: [Synced; 2],
    puts: [Vec<Duration>; 2],
}

/// Index of the signed and the unsigned figures in a [`Round`].
const SIGNED: usize = 0;
const UNSIGNED: usize = 1;

/// The order of the two worlds at step `step`: alternated, so that a
/// machine getting slower or faster favours neither.
fn order(step: usize) -> [usize; 2] {
    if step.is_multiple_of(2) {
        [SIGNED, UNSIGNED]
    } else {
        [UNSIGNED, SIGNED]
    }
}

/// A signed and an unsigned world, side by side.
fn worlds() -> Result<[World; 2]> {
    Ok([World::signed()?, World::unsigned()?])
}

/// Syncs both worlds, in the order of `step`.
fn sync_both(worlds: &mut [World; 2], step: usize, expected: usize) -> Result<[Synced; 2]> {
    let mut done: [Option<Synced>; 2] = [None, None];
    for i in order(step) {
        done[i] = Some(worlds[i].sync(expected)?);
    }
    let [a, b] = done;
    let (a, b) = (a.context("no signed run")?, b.context("no unsigned run")?);
    // The same shape on both sides: as many changes synced.
    ensure!(
        a.changes == b.changes,
        "the signed run synced {} changes, the unsigned one {}",
        a.changes,
        b.changes
    );
    Ok([a, b])
}

/// One round: every measurement, the signed and the unsigned world
/// interleaved step by step (batch by batch, put by put) so that both see
/// the same machine.
fn round(ctx: &Ctx, round: usize, records: &[Value], sync_records: &[Value]) -> Result<Round> {
    // Import.
    let mut w = worlds()?;
    let mut import = [0.0; 2];
    for (step, batch) in hearth_bench::records::batches(records, ctx.batch)
        .into_iter()
        .enumerate()
    {
        for i in order(round + step) {
            import[i] += w[i].write_batch(batch.clone())?.as_secs_f64();
        }
    }
    for world in &w {
        world.check_written(records.len())?;
    }
    drop(w);
    // Cold sync of records written in batches, a few times: one sync is
    // short, and this machine's speed drifts.
    let mut batches = Vec::with_capacity(SYNC_REPEATS);
    for rep in 0..SYNC_REPEATS {
        let mut w = worlds()?;
        for (step, batch) in hearth_bench::records::batches(sync_records, ctx.batch)
            .into_iter()
            .enumerate()
        {
            for i in order(round + step) {
                w[i].write_batch(batch.clone())?;
            }
        }
        batches.push(sync_both(&mut w, round + rep, sync_records.len())?);
    }
    // Cold sync of records written one change each; the puts timed.
    let mut w = worlds()?;
    let mut puts: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for (step, r) in sync_records.iter().enumerate() {
        for i in order(round + step) {
            puts[i].push(w[i].write_one(r)?);
        }
    }
    for world in &w {
        world.check_written(sync_records.len())?;
    }
    let per_record = sync_both(&mut w, round + 1, sync_records.len())?;
    Ok(Round {
        import,
        batches,
        per_record,
        puts,
    })
}

/// Microseconds per `Authorship::sign` and per `Authorship::verify`.
fn micro() -> Result<(f64, f64)> {
    let key = DeviceKey::generate(&mut rand::rngs::OsRng);
    let hashes: Vec<ChangeHash> = (0..MICRO)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            ChangeHash(h)
        })
        .collect();
    let t = Instant::now();
    let signed: Vec<Authorship> = hashes.iter().map(|h| Authorship::sign(&key, h)).collect();
    let sign_us = t.elapsed().as_secs_f64() * 1e6 / MICRO as f64;
    let t = Instant::now();
    for a in &signed {
        let signer = a.verify().map_err(anyhow::Error::msg)?;
        ensure!(signer == key.id(), "a signature verified as another device");
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / MICRO as f64;
    Ok((sign_us, verify_us))
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<Outcome> {
    let sync_records: Vec<Value> = ctx.records[..SYNC_RECORDS.min(ctx.records.len())].to_vec();
    let n_sync = sync_records.len();
    let n_import = ctx.records.len();
    // A warm-up round on a few records, not counted: the first run in a
    // process pays for growing the heap and for cold caches.
    let warm = &ctx.records[..WARMUP.min(ctx.records.len())];
    round(ctx, 0, warm, warm)?;
    let mut rounds = Vec::new();
    for r in 0..ctx.rounds {
        eprintln!("P12 round {}/{}…", r + 1, ctx.rounds);
        rounds.push(round(ctx, r, &ctx.records, &sync_records)?);
    }
    let (sign_us, verify_us) = micro()?;

    let mut o = Outcome::new(
        "P12",
        "cost of authorship: P1 and P5 signed and checked vs not",
    );
    // Import.
    let imports = |i: usize| rounds.iter().map(|r| r.import[i]).collect::<Vec<_>>();
    o.figure(
        "import, signed (shared collection, Bob writing)",
        n_import as f64 / stats::median(&imports(SIGNED)),
        "records/s",
    );
    o.figure(
        "import, unsigned (own collection)",
        n_import as f64 / stats::median(&imports(UNSIGNED)),
        "records/s",
    );
    let import_ratio = o.figure(
        "import signed / unsigned (median of rounds)",
        stats::median(
            &rounds
                .iter()
                .map(|r| r.import[UNSIGNED] / r.import[SIGNED])
                .collect::<Vec<_>>(),
        ),
        "×",
    );
    let batch_pairs: Vec<&[Synced; 2]> = rounds.iter().flat_map(|r| r.batches.iter()).collect();
    let record_pairs: Vec<&[Synced; 2]> = rounds.iter().map(|r| &r.per_record).collect();
    let batch_ratio = sync_figures(
        &mut o,
        "cold sync 10k (batches)",
        &batch_pairs,
        n_sync,
        verify_us,
    );
    let per_record_ratio = sync_figures(
        &mut o,
        "cold sync 10k (1 change/record)",
        &record_pairs,
        n_sync,
        verify_us,
    );
    // Single puts, from the per-record writes of every round.
    let all_puts = |i: usize| -> Vec<Duration> {
        rounds
            .iter()
            .flat_map(|r| r.puts[i].iter().copied())
            .collect()
    };
    let (ps, pu) = (
        Summary::of(&all_puts(SIGNED)).context("no puts")?,
        Summary::of(&all_puts(UNSIGNED)).context("no puts")?,
    );
    o.figure("Node::put (in memory), signed, p50", ps.p50_us, "µs");
    o.figure("Node::put (in memory), unsigned, p50", pu.p50_us, "µs");
    o.figure(
        "Node::put signed / unsigned (p50)",
        pu.p50_us / ps.p50_us,
        "×",
    );
    o.figure("Authorship::sign, per signature", sign_us, "µs");
    o.figure("Authorship::verify, per signature", verify_us, "µs");
    o.at_least(
        "import signed / unsigned",
        import_ratio,
        0.9,
        "≥ 0.90×".into(),
    );
    o.at_least(
        "cold sync signed / unsigned",
        batch_ratio,
        0.9,
        "≥ 0.90×".into(),
    );
    o.at_least(
        "cold sync, 1 change/record, signed / unsigned",
        per_record_ratio,
        0.9,
        "≥ 0.90×".into(),
    );
    o.note(format!(
        "real node cores in memory (no store commit, no network); import: {n_import} records, put_many batches of {}; \
         cold sync: {n_sync} records (16 shards) written on the writer, then one session until both are quiet, {SYNC_REPEATS} \
         pairs per round for the batch-written records, 1 for the per-record ones; {} round(s) after a warm-up round; the \
         signed and unsigned worlds interleaved batch by batch and put by put, their syncs alternated; ratios are \
         throughput signed / unsigned, the median of the paired runs",
        ctx.batch, ctx.rounds
    ));
    o.note(
        "signed: Alice's collection shared with Bob (write); Bob's node writes (signed, note = list heads), Alice's share gate \
         checks every change (signature, signer = author device, member account, list state known and covering its \
         dependencies', write right at it); unsigned: two devices of one account, an unshared collection",
    );
    o.note(format!(
        "signatures field: each Frame::Sync re-encoded without its signatures, so {AUTHORSHIP_BYTES} B per signature plus \
         the list length's bytes beyond 1; 'all bytes added' also holds the list-heads note inside each change, the \
         Frame::Acl credentials and the contact session's Hello"
    ));
    Ok(o)
}

/// The figures of one sync shape from its (signed, unsigned) pairs; returns
/// the median of the paired throughput ratios.
fn sync_figures(
    o: &mut Outcome,
    label: &str,
    pairs: &[&[Synced; 2]],
    records: usize,
    verify_us: f64,
) -> f64 {
    let secs = |i: usize| stats::median(&pairs.iter().map(|p| p[i].secs).collect::<Vec<_>>());
    let (signed, unsigned) = (secs(SIGNED), secs(UNSIGNED));
    o.figure(
        format!("{label}: signed + gate, time"),
        signed * 1000.0,
        "ms",
    );
    o.figure(format!("{label}: unsigned, time"), unsigned * 1000.0, "ms");
    o.figure(
        format!("{label}: signed, throughput"),
        records as f64 / signed,
        "records/s",
    );
    o.figure(
        format!("{label}: unsigned, throughput"),
        records as f64 / unsigned,
        "records/s",
    );
    let ratio = o.figure(
        format!(
            "{label}: signed / unsigned (median of {} pairs)",
            pairs.len()
        ),
        stats::median(
            &pairs
                .iter()
                .map(|p| p[UNSIGNED].secs / p[SIGNED].secs)
                .collect::<Vec<_>>(),
        ),
        "×",
    );
    let Some(last) = pairs.last() else {
        return ratio;
    };
    let (s, u) = (&last[SIGNED], &last[UNSIGNED]);
    let changes = s.writer_changes.max(1) as f64;
    o.figure(
        format!("{label}: changes synced"),
        s.writer_changes as f64,
        "",
    );
    o.figure(
        format!("{label}: signed, bytes writer→receiver"),
        s.wire.bytes[0] as f64,
        "B",
    );
    o.figure(
        format!("{label}: unsigned, bytes writer→receiver"),
        u.wire.bytes[0] as f64,
        "B",
    );
    o.figure(
        format!("{label}: signed, bytes both ways"),
        s.wire.total() as f64,
        "B",
    );
    o.figure(
        format!("{label}: unsigned, bytes both ways"),
        u.wire.total() as f64,
        "B",
    );
    o.figure(
        format!("{label}: frames both ways, signed"),
        (s.wire.frames[0] + s.wire.frames[1]) as f64,
        "",
    );
    o.figure(
        format!("{label}: frames both ways, unsigned"),
        (u.wire.frames[0] + u.wire.frames[1]) as f64,
        "",
    );
    o.figure(
        format!(
            "{label}: signatures carried (in {} Frame::Sync)",
            s.wire.signed_frames
        ),
        s.wire.signatures as f64,
        "",
    );
    o.figure(
        format!("{label}: signatures field, bytes per signature"),
        s.wire.signature_bytes as f64 / s.wire.signatures.max(1) as f64,
        "B",
    );
    o.figure(
        format!("{label}: signatures field, bytes per change synced"),
        s.wire.signature_bytes as f64 / changes,
        "B",
    );
    o.figure(
        format!("{label}: Frame::Acl bytes (both ways)"),
        s.wire.acl_bytes as f64,
        "B",
    );
    o.figure(
        format!("{label}: all bytes added, per change (signed − unsigned)"),
        (s.wire.total() as f64 - u.wire.total() as f64) / changes,
        "B",
    );
    // With a few dozen changes the difference is the machine's noise, not
    // a cost per change.
    if s.writer_changes >= 1000 {
        let added_us = (signed - unsigned) * 1e6 / changes;
        o.figure(
            format!("{label}: time added per change (signed − unsigned)"),
            added_us,
            "µs",
        );
        o.figure(
            format!("{label}: time added per change ÷ one Authorship::verify"),
            added_us / verify_us,
            "×",
        );
    }
    ratio
}
