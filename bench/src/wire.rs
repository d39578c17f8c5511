//! Two peers syncing in memory, frame by frame, with every byte counted: the
//! wire figures of P5 and P6.
//!
//! Hearth's side is two `hearth_crdt::sync::Session`s over `MemoryReplica`s:
//! exactly the frames a node writes on a `/hearth/sync/1` stream (the
//! length prefix, Noise and Yamux framing excluded). The baseline is raw
//! Automerge sync (`generate_sync_message` / `receive_sync_message`) of the
//! same documents, each message encoded and decoded as it would be sent.
//!
//! Both run in lockstep *flights*: in each flight, everything either side has
//! to send crosses at once, and the replies form the next flight. A flight is
//! one one-way latency, so a round trip is two flights, and both sides
//! speaking first (Hello, or Automerge's opening message) costs one flight,
//! not two.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use automerge::sync::{Message, State, SyncDoc};
use automerge::{ActorId, Automerge};
use hearth_crdt::collection::{Collection, PutMode};
use hearth_crdt::sync::{Limits, MemoryReplica, Replica, Session};
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership::Log;
use serde_json::Value;

/// More flights than any exchange needs; beyond it the sync is looping.
const MAX_FLIGHTS: u32 = 64;

/// Records per `Collection::put_many`, as the engine imports.
const BATCH: usize = 5000;

/// What crossed the wire, direction 0 being A → B and 1 being B → A.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Traffic {
    /// Flights until both sides were quiet.
    pub(crate) flights: u32,
    /// The flight after which B's check first held (see [`Pair::sync`]).
    pub(crate) done_at: Option<u32>,
    /// Frames (or Automerge messages) each way.
    pub(crate) frames: [u64; 2],
    /// Bytes each way.
    pub(crate) bytes: [u64; 2],
    /// Wall time of the exchange, in seconds.
    pub(crate) secs: f64,
}

impl Traffic {
    /// Bytes both ways.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.bytes[0] + self.bytes[1]
    }

    /// Frames both ways.
    pub(crate) fn total_frames(&self) -> u64 {
        self.frames[0] + self.frames[1]
    }

    /// Round trips: flights / 2.
    pub(crate) fn round_trips(&self) -> f64 {
        f64::from(self.flights) / 2.0
    }

    fn count(&mut self, direction: usize, frame: &[u8]) {
        self.frames[direction] += 1;
        self.bytes[direction] += frame.len() as u64;
    }
}

/// A collection named `name` holding `records` (each with an `_id`), written
/// in batches of 5000 like an import.
pub(crate) fn collection(
    name: &str,
    shards: u16,
    actor: ActorId,
    records: &[Value],
) -> Result<Collection> {
    let mut coll = Collection::new(name, shards, actor)?;
    let at = now_ms();
    for batch in records.chunks(BATCH) {
        let items = batch
            .iter()
            .map(|r| {
                let id = r
                    .get("_id")
                    .and_then(Value::as_str)
                    .context("a record without _id")?;
                Ok((id.to_owned(), r.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        coll.put_many(items, PutMode::Create, at)?;
    }
    // Nothing persists these; drop the pending chunks as the engine would
    // after storing them.
    coll.take_chunks();
    Ok(coll)
}

/// One side of an in-memory pair: its replica and what it persisted of its
/// sync states with the other side.
pub(crate) struct Side {
    pub(crate) replica: MemoryReplica,
    states: BTreeMap<(String, u16), Vec<u8>>,
}

/// Two devices of one account, A and B, held in memory.
pub(crate) struct Pair {
    pub(crate) a: Side,
    pub(crate) b: Side,
    keys: [DeviceKey; 2],
}

impl Pair {
    /// Two empty replicas of a two-device account.
    pub(crate) fn new() -> Result<Self> {
        let ka = DeviceKey::from_bytes(&[0xa1; 32]);
        let kb = DeviceKey::from_bytes(&[0xb2; 32]);
        let mut log = Log::genesis(&ka, "a", 1);
        log.add_device(&ka, kb.id(), "b", 2)?;
        let side = |actor: u8| Side {
            replica: MemoryReplica::new(ActorId::from([actor; 16]), log.clone()),
            states: BTreeMap::new(),
        };
        Ok(Self {
            a: side(0xa1),
            b: side(0xb2),
            keys: [ka, kb],
        })
    }

    /// Connects A and B: a fresh `Session` on each side, restoring the sync
    /// states each side persisted in earlier sessions, then frames back and
    /// forth until both are quiet. `done` is asked about B after every
    /// flight (e.g. "B holds every record").
    pub(crate) fn sync(&mut self, done: impl Fn(&MemoryReplica) -> bool) -> Result<Traffic> {
        let restore = |side: &Side| {
            side.states
                .iter()
                .map(|((c, s), b)| (c.clone(), *s, b.clone()))
                .collect::<Vec<_>>()
        };
        let limits = Limits::default();
        let mut at_a = Session::new(self.keys[1].id(), restore(&self.a), limits);
        let mut at_b = Session::new(self.keys[0].id(), restore(&self.b), limits);
        let mut t = Traffic::default();
        let started = Instant::now();
        let mut to_b = at_a.start(&self.a.replica)?;
        let mut to_a = at_b.start(&self.b.replica)?;
        while !to_b.is_empty() || !to_a.is_empty() {
            t.flights += 1;
            if t.flights > MAX_FLIGHTS {
                bail!("the sessions did not go quiet within {MAX_FLIGHTS} flights");
            }
            let (in_b, in_a) = (std::mem::take(&mut to_b), std::mem::take(&mut to_a));
            for frame in &in_b {
                t.count(0, frame);
                to_a.extend(deliver(&mut at_b, &mut self.b, frame)?);
            }
            for frame in &in_a {
                t.count(1, frame);
                to_b.extend(deliver(&mut at_a, &mut self.a, frame)?);
            }
            if t.done_at.is_none() && done(&self.b.replica) {
                t.done_at = Some(t.flights);
            }
        }
        t.secs = started.elapsed().as_secs_f64();
        if t.done_at.is_none() && done(&self.b.replica) {
            t.done_at = Some(0);
        }
        Ok(t)
    }
}

/// Hands `frame` to `session`; keeps its sync states (what the engine
/// persists) and drops the merged chunks (what the engine stores).
fn deliver(session: &mut Session, side: &mut Side, frame: &[u8]) -> Result<Vec<Vec<u8>>> {
    let fx = session.receive(&mut side.replica, frame)?;
    for name in fx
        .merged
        .iter()
        .map(|(n, _)| n)
        .chain(fx.changed.iter().map(|(n, _)| n))
        .chain(fx.created.iter())
    {
        if let Some(coll) = side.replica.collection_mut(name) {
            coll.take_chunks();
        }
    }
    for (collection, shard, bytes) in fx.states {
        side.states.insert((collection, shard), bytes);
    }
    Ok(fx.send)
}

/// A pair of Automerge documents and their sync states with each other.
pub(crate) struct AmPair {
    pub(crate) a: Automerge,
    pub(crate) b: Automerge,
    sa: State,
    sb: State,
}

impl AmPair {
    /// `a` against `b`, with fresh sync states.
    pub(crate) fn new(a: Automerge, b: Automerge) -> Self {
        Self {
            a,
            b,
            sa: State::new(),
            sb: State::new(),
        }
    }

    /// Replaces both sync states by their persisted form
    /// (`State::encode` then `State::decode`), as after a restart.
    pub(crate) fn persist_states(&mut self) -> Result<()> {
        self.sa = State::decode(&self.sa.encode()).context("a sync state that does not decode")?;
        self.sb = State::decode(&self.sb.encode()).context("a sync state that does not decode")?;
        Ok(())
    }
}

/// How the two sides of a raw Automerge sync take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turns {
    /// Both sides speak in every flight, as two peers do when they connect
    /// at the same time and each opens with a message.
    Lockstep,
    /// The canonical loop of Automerge's documentation: A generates, B
    /// receives, B generates, A receives, … until neither has anything to
    /// send. A flight is a turn in which something was sent.
    AFirst,
}

/// Raw Automerge sync of every pair at once, until no document has anything
/// to send. `done` is asked about the pairs after every flight.
pub(crate) fn am_sync(
    pairs: &mut [AmPair],
    turns: Turns,
    done: impl Fn(&[AmPair]) -> bool,
) -> Result<Traffic> {
    let mut t = Traffic::default();
    let started = Instant::now();
    // In `AFirst`, whose turn it is (false: A's), and how many turns in a
    // row sent nothing.
    let mut b_turn = false;
    let mut idle_turns = 0;
    loop {
        let (a_speaks, b_speaks) = match turns {
            Turns::Lockstep => (true, true),
            Turns::AFirst => (!b_turn, b_turn),
        };
        let mut to_b = Vec::new();
        let mut to_a = Vec::new();
        for (i, p) in pairs.iter_mut().enumerate() {
            if a_speaks && let Some(m) = p.a.generate_sync_message(&mut p.sa) {
                to_b.push((i, m.encode()));
            }
            if b_speaks && let Some(m) = p.b.generate_sync_message(&mut p.sb) {
                to_a.push((i, m.encode()));
            }
        }
        b_turn = !b_turn;
        if to_b.is_empty() && to_a.is_empty() {
            idle_turns += 1;
            if turns == Turns::Lockstep || idle_turns >= 2 {
                break;
            }
            continue;
        }
        idle_turns = 0;
        t.flights += 1;
        if t.flights > MAX_FLIGHTS {
            bail!("Automerge sync did not go quiet within {MAX_FLIGHTS} flights");
        }
        for (i, bytes) in to_b {
            t.count(0, &bytes);
            let p = &mut pairs[i];
            p.b.receive_sync_message(&mut p.sb, Message::decode(&bytes)?)?;
        }
        for (i, bytes) in to_a {
            t.count(1, &bytes);
            let p = &mut pairs[i];
            p.a.receive_sync_message(&mut p.sa, Message::decode(&bytes)?)?;
        }
        if t.done_at.is_none() && done(pairs) {
            t.done_at = Some(t.flights);
        }
    }
    t.secs = started.elapsed().as_secs_f64();
    Ok(t)
}

/// The shards of `coll` as plain Automerge documents, and the whole
/// collection as one document (its shard saves concatenated load as one).
pub(crate) fn am_docs(coll: &Collection) -> Result<(Vec<Automerge>, Automerge)> {
    let saves = coll.export_automerge();
    let shards = saves
        .iter()
        .map(|s| Automerge::load(s))
        .collect::<Result<Vec<_>, _>>()?;
    let one = Automerge::load(&saves.concat())?;
    Ok((shards, one))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<Value> {
        hearth_bench::records::generate(n, 7)
    }

    #[test]
    fn a_cold_sync_delivers_every_record_and_counts_its_bytes() {
        let mut pair = Pair::new().expect("pair");
        let coll = collection("bench.ops", 4, ActorId::from([0xa1; 16]), &records(300))
            .expect("collection");
        pair.a.replica.insert(coll);
        let t = pair
            .sync(|b| b.collection("bench.ops").is_some_and(|c| c.len() == 300))
            .expect("sync");
        assert!(t.done_at.is_some(), "{t:?}");
        assert!(t.bytes[0] > t.bytes[1] && t.total_frames() >= 2, "{t:?}");
        // Reconnect in sync: one Hello each way and nothing else.
        let again = pair.sync(|_| true).expect("reconnect");
        assert_eq!(again.flights, 1, "{again:?}");
        assert_eq!(again.frames, [1, 1], "{again:?}");
    }

    #[test]
    fn raw_automerge_sync_converges_and_reconnects_cheaply() {
        let coll = collection("bench.ops", 2, ActorId::from([0xa1; 16]), &records(100))
            .expect("collection");
        let (shards, one) = am_docs(&coll).expect("docs");
        assert_eq!(shards.len(), 2);
        let mut pairs: Vec<AmPair> = shards
            .into_iter()
            .map(|d| AmPair::new(d, Automerge::new()))
            .collect();
        let t = am_sync(&mut pairs, Turns::AFirst, |_| false).expect("sync");
        assert!(t.flights >= 3 && t.bytes[0] > 0, "{t:?}");
        for p in &pairs {
            assert_eq!(p.a.get_heads(), p.b.get_heads());
        }
        for p in &mut pairs {
            p.persist_states().expect("persist");
        }
        let again = am_sync(&mut pairs, Turns::Lockstep, |_| false).expect("reconnect");
        assert!(
            again.total_bytes() < t.total_bytes() / 10,
            "{again:?} vs {t:?}"
        );
        assert_eq!(
            automerge::ReadDoc::keys(&one, automerge::ROOT).count(),
            100,
            "the shards load as one document"
        );
    }
}
