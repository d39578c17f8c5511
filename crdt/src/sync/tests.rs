#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};

use automerge::sync::{ChunkList, State, SyncDoc};
use automerge::{ActorId, Automerge};
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership::Log;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::collection::{DecodeError, PutMode};

fn key(n: u8) -> DeviceKey {
    DeviceKey::from_bytes(&[n; 32])
}

/// A log in which devices `1..=n` are members.
fn log_of(n: u8) -> Log {
    let founder = key(1);
    let mut log = Log::genesis(&founder, "device-1", 0);
    for i in 2..=n {
        log.add_device(&founder, key(i).id(), &format!("device-{i}"), u64::from(i))
            .unwrap();
    }
    log
}

fn replica(n: u8, log: Log) -> MemoryReplica {
    MemoryReplica::new(ActorId::from([n; 16]), log)
}

fn write(replica: &mut MemoryReplica, collection: &str, shards: u16, id: &str, value: i64) -> u16 {
    if replica.collection(collection).is_none() {
        replica.create_collection(collection, shards).unwrap();
    }
    let coll = replica.collection_mut(collection).unwrap();
    coll.put(id, json!({ "v": value }), PutMode::Upsert, 1_000)
        .unwrap();
    coll.shard_of(id)
}

/// Sync states one replica persisted for one peer.
type PersistedStates = BTreeMap<(String, u16), Vec<u8>>;

/// Replicas, one session per ordered pair that is connected, and the frames
/// in flight between them. Device `i + 1` holds replica `i`.
struct Net {
    replicas: Vec<MemoryReplica>,
    sessions: BTreeMap<(usize, usize), Session>,
    queues: BTreeMap<(usize, usize), VecDeque<Vec<u8>>>,
    persisted: BTreeMap<(usize, usize), PersistedStates>,
    delivered: usize,
}

impl Net {
    fn new(count: u8) -> Self {
        let log = log_of(count);
        Self {
            replicas: (1..=count).map(|n| replica(n, log.clone())).collect(),
            sessions: BTreeMap::new(),
            queues: BTreeMap::new(),
            persisted: BTreeMap::new(),
            delivered: 0,
        }
    }

    fn device(i: usize) -> DeviceId {
        key(u8::try_from(i + 1).unwrap()).id()
    }

    /// Opens (or reopens) sessions between `a` and `b`, dropping frames in flight.
    fn connect(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            let persisted = self.persisted.get(&(x, y)).cloned().unwrap_or_default();
            let session = Session::new(
                Self::device(y),
                persisted.into_iter().map(|((c, s), b)| (c, s, b)),
                Limits::default(),
            );
            self.sessions.insert((x, y), session);
            self.queues.insert((x, y), VecDeque::new());
        }
        for (x, y) in [(a, b), (b, a)] {
            let hello = self
                .sessions
                .get_mut(&(x, y))
                .unwrap()
                .start(&self.replicas[x])
                .unwrap();
            self.queues.get_mut(&(x, y)).unwrap().extend(hello);
        }
    }

    /// Delivers the next frame from `from` to `to`, if any.
    fn deliver(&mut self, from: usize, to: usize) -> Result<bool, Error> {
        let Some(frame) = self
            .queues
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
        else {
            return Ok(false);
        };
        self.delivered += 1;
        let session = self.sessions.get_mut(&(to, from)).unwrap();
        let fx = session.receive(&mut self.replicas[to], &frame)?;
        let store = self.persisted.entry((to, from)).or_default();
        for (c, s, bytes) in fx.states {
            store.insert((c, s), bytes);
        }
        self.queues.get_mut(&(to, from)).unwrap().extend(fx.send);
        for (collection, shard) in fx.changed {
            self.propagate(to, Some(from), &collection, shard);
        }
        Ok(true)
    }

    /// Hands a change of `replica`'s shard to its sessions other than `except`.
    fn propagate(&mut self, replica: usize, except: Option<usize>, collection: &str, shard: u16) {
        let peers: Vec<usize> = self
            .sessions
            .keys()
            .filter(|(x, y)| *x == replica && Some(*y) != except)
            .map(|(_, y)| *y)
            .collect();
        for peer in peers {
            let session = self.sessions.get_mut(&(replica, peer)).unwrap();
            let frames = session
                .local_change(&self.replicas[replica], collection, &[shard])
                .unwrap();
            self.queues
                .get_mut(&(replica, peer))
                .unwrap()
                .extend(frames);
        }
    }

    fn write(&mut self, i: usize, id: &str, value: i64) {
        let shard = write(&mut self.replicas[i], "notes", 4, id, value);
        self.propagate(i, None, "notes", shard);
    }

    /// Delivers frames until none is in flight.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            let busy: Vec<(usize, usize)> = self
                .queues
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(k, _)| *k)
                .collect();
            if busy.is_empty() {
                return;
            }
            for (from, to) in busy {
                self.deliver(from, to).unwrap();
            }
        }
        panic!("the network never went quiet");
    }

    fn assert_converged(&self) {
        let first = &self.replicas[0];
        for other in &self.replicas[1..] {
            assert_eq!(first.collection_names(), other.collection_names());
            for (name, coll) in first.collections() {
                let theirs = other.collection(name).unwrap();
                assert_eq!(coll.records(), theirs.records(), "{name}");
                for shard in 0..coll.shard_count() {
                    assert_eq!(
                        coll.shard_heads(shard).unwrap(),
                        theirs.shard_heads(shard).unwrap()
                    );
                }
            }
        }
    }

    fn sent(&self, from: usize, to: usize) -> Stats {
        self.sessions[&(from, to)].stats()
    }
}

#[test]
fn writes_on_both_sides_converge() {
    let mut net = Net::new(2);
    for i in 0..50 {
        write(&mut net.replicas[0], "notes", 4, &format!("a{i}"), i);
    }
    for i in 0..30 {
        write(&mut net.replicas[1], "notes", 4, &format!("b{i}"), i);
    }
    write(&mut net.replicas[0], "notes", 4, "shared", 1);
    write(&mut net.replicas[1], "notes", 4, "shared", 2);
    write(&mut net.replicas[1], "tasks", 2, "t1", 7);
    net.connect(0, 1);
    net.settle();
    net.assert_converged();
    assert_eq!(net.replicas[0].collection("notes").unwrap().len(), 81);
    assert_eq!(net.replicas[0].collection("tasks").unwrap().len(), 1);
}

#[test]
fn an_in_sync_reconnect_is_one_hello_each_way() {
    let mut net = Net::new(2);
    for i in 0..40 {
        write(&mut net.replicas[i % 2], "notes", 16, &format!("r{i}"), 1);
    }
    write(&mut net.replicas[0], "tasks", 16, "t", 1);
    net.connect(0, 1);
    net.settle();
    net.assert_converged();

    net.connect(0, 1);
    net.settle();
    for (a, b) in [(0, 1), (1, 0)] {
        let stats = net.sent(a, b);
        assert_eq!(stats.frames_sent, 1, "{stats:?}");
        assert_eq!(stats.frames_received, 1, "{stats:?}");
        // Two 16-shard collections.
        assert!(stats.bytes_sent < 2 * 300, "{stats:?}");
    }
}

#[test]
fn a_new_empty_replica_receives_a_thousand_records() {
    let mut net = Net::new(2);
    let items: Vec<(String, serde_json::Value)> = (0..1000)
        .map(|i| {
            (
                format!("rec-{i:04}"),
                json!({ "n": i, "text": "some words here" }),
            )
        })
        .collect();
    net.replicas[0]
        .create_collection("bank.operations", 16)
        .unwrap();
    net.replicas[0]
        .collection_mut("bank.operations")
        .unwrap()
        .put_many(items, PutMode::Create, 5)
        .unwrap();
    net.connect(0, 1);
    net.settle();
    net.assert_converged();
    assert_eq!(
        net.replicas[1].collection("bank.operations").unwrap().len(),
        1000
    );
    // A Hello, then per shard Automerge's opening message and the shard's
    // changes; the new replica sends a Hello and per shard its answer and
    // an acknowledgement.
    assert_eq!(net.sent(0, 1).frames_sent, 33);
    assert!(
        net.sent(1, 0).frames_sent <= 33,
        "{}",
        net.sent(1, 0).frames_sent
    );
}

#[test]
fn local_writes_travel_live_and_through_a_relay() {
    let mut net = Net::new(3);
    write(&mut net.replicas[0], "notes", 4, "seed", 0);
    net.connect(0, 1);
    net.connect(1, 2);
    net.settle();
    net.assert_converged();
    let before = net.delivered;
    net.write(0, "fresh", 42);
    net.settle();
    net.assert_converged();
    assert_eq!(
        net.replicas[2]
            .collection("notes")
            .unwrap()
            .get("fresh")
            .unwrap()["v"],
        42
    );
    // 0 → 1, its acknowledgement, 1 → 2, its acknowledgement.
    assert_eq!(net.delivered - before, 4);
}

#[test]
fn merges_report_written_records_and_persistable_states() {
    let log = log_of(2);
    let mut a = replica(1, log.clone());
    let mut b = replica(2, log);
    write(&mut a, "notes", 2, "x", 1);
    let mut at_a = Session::new(key(2).id(), [], Limits::default());
    let mut at_b = Session::new(key(1).id(), [], Limits::default());
    let hello_a = at_a.start(&a).unwrap();
    let hello_b = at_b.start(&b).unwrap();
    let fx = at_b.receive(&mut b, &hello_a[0]).unwrap();
    assert_eq!(fx.created, vec!["notes".to_owned()]);
    assert!(fx.send.is_empty(), "the empty side waits for the data");
    let fx = at_a.receive(&mut a, &hello_b[0]).unwrap();
    assert_eq!(
        fx.send.len(),
        1,
        "Automerge's opening message for the one shard with data"
    );
    // Pump until B merges the record.
    let mut to_b: VecDeque<Vec<u8>> = fx.send.into();
    let mut to_a: VecDeque<Vec<u8>> = VecDeque::new();
    let mut merging = None;
    for _ in 0..10 {
        while let Some(frame) = to_b.pop_front() {
            let fx = at_b.receive(&mut b, &frame).unwrap();
            to_a.extend(fx.send.iter().cloned());
            if !fx.merged.is_empty() {
                merging = Some(fx);
            }
        }
        while let Some(frame) = to_a.pop_front() {
            to_b.extend(at_a.receive(&mut a, &frame).unwrap().send);
        }
    }
    let fx = merging.expect("B merged the record");
    assert_eq!(fx.merged.len(), 1);
    assert_eq!(fx.merged[0].1[0].id, "x");
    assert_eq!(
        fx.changed,
        vec![(
            "notes".to_owned(),
            a.collection("notes").unwrap().shard_of("x")
        )]
    );
    assert!(!fx.states.is_empty());
    // A state reported once is not reported again unchanged.
    let (c, s, bytes) = fx.states[0].clone();
    let restored = Session::new(
        key(1).id(),
        [(c, s, bytes), ("x".into(), 0, vec![1, 2])],
        Limits::default(),
    );
    assert_eq!(
        restored.states.len(),
        1,
        "bad persisted bytes give a fresh state"
    );
}

#[test]
fn a_stranger_with_our_log_is_refused() {
    let log = log_of(2);
    let mut a = replica(1, log.clone());
    let mut at_a = Session::new(key(9).id(), [], Limits::default());
    let mut stranger = replica(9, log);
    let mut at_stranger = Session::new(key(1).id(), [], Limits::default());
    let hello = at_stranger.start(&stranger).unwrap();
    let err = at_a.receive(&mut a, &hello[0]).unwrap_err();
    assert!(matches!(err, Error::NotMember { .. }), "{err}");
    // And a sync frame straight away is refused too.
    write(&mut stranger, "notes", 1, "x", 1);
    let mut state = State::new();
    let msg = stranger
        .collection("notes")
        .unwrap()
        .sync_generate(0, &mut state)
        .unwrap()
        .unwrap()
        .0;
    let frame = Frame::Sync {
        collection: "notes".into(),
        shards: 1,
        shard: 0,
        message: msg.encode(),
        signatures: Vec::new(),
    }
    .encode(&Limits::default())
    .unwrap();
    let mut at_a = Session::new(key(9).id(), [], Limits::default());
    assert!(matches!(
        at_a.receive(&mut a, &frame),
        Err(Error::NotMember { .. })
    ));
    assert!(a.collection("notes").is_none());
}

#[test]
fn a_stranger_from_another_account_is_refused_at_its_log() {
    let mut a = replica(1, log_of(2));
    let other = Log::genesis(&key(9), "other", 0);
    let mut stranger = replica(9, other);
    let mut at_a = Session::new(key(9).id(), [], Limits::default());
    let mut at_stranger = Session::new(key(1).id(), [], Limits::default());
    let hello_s = at_stranger.start(&stranger).unwrap();
    let hello_a = at_a.start(&a).unwrap();
    // Held back on both sides: nothing is sent to a non-member, so the
    // connection idles until the caller's timeout.
    let fx = at_a.receive(&mut a, &hello_s[0]).unwrap();
    assert!(fx.send.is_empty());
    let fx = at_stranger.receive(&mut stranger, &hello_a[0]).unwrap();
    assert!(fx.send.is_empty());
    // A log sent anyway is verified and refused: another account.
    let log = Frame::Log {
        bytes: stranger.membership().encode(),
    }
    .encode(&Limits::default())
    .unwrap();
    let err = at_a.receive(&mut a, &log).unwrap_err();
    assert!(matches!(err, Error::Log(_)), "{err}");
    assert_eq!(a.membership().members().len(), 2);
}

#[test]
fn a_device_added_elsewhere_joins_through_its_log() {
    // Device 1 founds the account and adds 3; device 3 copies the log. Then
    // device 1 adds device 2, which copies that log. Device 3 has never
    // heard of 2 when 2 connects to it.
    let founder = key(1);
    let mut log = Log::genesis(&founder, "one", 0);
    log.add_device(&founder, key(3).id(), "three", 1).unwrap();
    let mut three = replica(3, log.clone());
    log.add_device(&founder, key(2).id(), "two", 2).unwrap();
    let mut two = replica(2, log);
    write(&mut two, "notes", 2, "from-two", 2);
    write(&mut three, "notes", 2, "from-three", 3);
    let mut at_two = Session::new(key(3).id(), [], Limits::default());
    let mut at_three = Session::new(key(2).id(), [], Limits::default());
    let mut to_three: VecDeque<Vec<u8>> = at_two.start(&two).unwrap().into();
    let mut to_two: VecDeque<Vec<u8>> = at_three.start(&three).unwrap().into();
    let mut changed = false;
    while !to_three.is_empty() || !to_two.is_empty() {
        if let Some(frame) = to_three.pop_front() {
            let fx = at_three.receive(&mut three, &frame).unwrap();
            changed |= fx.membership_changed;
            to_two.extend(fx.send);
        }
        if let Some(frame) = to_two.pop_front() {
            let fx = at_two.receive(&mut two, &frame).unwrap();
            assert!(!fx.membership_changed);
            to_three.extend(fx.send);
        }
    }
    assert!(changed);
    assert!(three.membership().is_member(&key(2).id()));
    assert_eq!(
        two.collection("notes").unwrap().records(),
        three.collection("notes").unwrap().records()
    );
    assert_eq!(two.collection("notes").unwrap().len(), 2);
}

#[test]
fn a_removed_peer_is_refused_on_an_open_session() {
    let mut net = Net::new(2);
    write(&mut net.replicas[0], "notes", 2, "x", 1);
    net.connect(0, 1);
    net.settle();
    let founder = key(1);
    net.replicas[0]
        .membership_mut()
        .remove_device(&founder, key(2).id(), 10)
        .unwrap();
    net.write(1, "late", 1);
    let err = net.deliver(1, 0).unwrap_err();
    assert!(matches!(err, Error::NotMember { .. }), "{err}");
    assert!(
        net.replicas[0]
            .collection("notes")
            .unwrap()
            .get("late")
            .is_none()
    );
    // Our own sessions stop sending to it as well.
    let session = net.sessions.get_mut(&(0, 1)).unwrap();
    assert!(matches!(
        session.local_change(&net.replicas[0], "notes", &[0]),
        Err(Error::NotMember { .. })
    ));
}

#[test]
fn logs_are_exchanged_once_when_they_differ() {
    let mut net = Net::new(2);
    let founder = key(1);
    net.replicas[0]
        .membership_mut()
        .add_device(&founder, key(5).id(), "five", 9)
        .unwrap();
    net.connect(0, 1);
    net.settle();
    assert!(net.replicas[1].membership().is_member(&key(5).id()));
    // Neither side can tell from a digest whose log is behind, so each sends
    // its log once; neither answers the other's.
    assert_eq!(net.sent(0, 1).frames_sent, 2, "hello and log");
    assert_eq!(net.sent(1, 0).frames_sent, 2, "hello and log");
    // A later local entry goes out once.
    net.replicas[1]
        .membership_mut()
        .add_device(&founder, key(6).id(), "six", 11)
        .unwrap();
    let session = net.sessions.get_mut(&(1, 0)).unwrap();
    let frames = session.local_membership_change(&net.replicas[1]).unwrap();
    assert_eq!(frames.len(), 1);
    assert!(
        session
            .local_membership_change(&net.replicas[1])
            .unwrap()
            .is_empty()
    );
    net.queues.get_mut(&(1, 0)).unwrap().extend(frames);
    net.settle();
    assert!(net.replicas[0].membership().is_member(&key(6).id()));
    assert_eq!(
        net.sent(0, 1).frames_sent,
        2,
        "no answer to a log it lacked nothing from"
    );
}

#[test]
fn oversized_malformed_and_truncated_frames_are_errors() {
    let mut net = Net::new(2);
    write(&mut net.replicas[0], "notes", 2, "x", 1);
    net.connect(0, 1);
    let hello = net.queues[&(0, 1)][0].clone();
    let session = net.sessions.get_mut(&(1, 0)).unwrap();
    let replica = &mut net.replicas[1];
    let huge = vec![FRAME_VERSION; DEFAULT_MAX_FRAME + 1];
    assert!(matches!(
        session.receive(replica, &huge),
        Err(Error::FrameTooLarge { .. })
    ));
    for cut in 0..hello.len() {
        assert!(
            session.receive(replica, &hello[..cut]).is_err(),
            "cut {cut}"
        );
    }
    let bad_message = Frame::Sync {
        collection: "notes".into(),
        shards: 2,
        shard: 0,
        message: vec![0x42, 1, 2, 3],
        signatures: Vec::new(),
    }
    .encode(&Limits::default())
    .unwrap();
    assert!(matches!(
        session.receive(replica, &bad_message),
        Err(Error::BadMessage { .. })
    ));
    let mismatch = Frame::Sync {
        collection: "notes".into(),
        shards: 3,
        shard: 0,
        message: vec![],
        signatures: Vec::new(),
    }
    .encode(&Limits::default())
    .unwrap();
    replica.create_collection("notes", 2).unwrap();
    assert!(matches!(
        session.receive(replica, &mismatch),
        Err(Error::ShardMismatch {
            ours: 2,
            theirs: 3,
            ..
        })
    ));
}

/// A sync frame for shard 0 of `notes` (1 shard) whose changes are `chunk`.
fn sync_frame_with(chunk: Vec<u8>) -> Vec<u8> {
    let doc = Automerge::new();
    let mut message = doc.generate_sync_message(&mut State::new()).unwrap();
    message.changes = ChunkList::from(vec![chunk]);
    Frame::Sync {
        collection: "notes".into(),
        shards: 1,
        shard: 0,
        message: message.encode(),
        signatures: Vec::new(),
    }
    .encode(&Limits::default())
    .unwrap()
}

fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3, 4, kind];
    let mut len = body.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(body);
    out
}

fn assert_bomb_refused(frame: &[u8]) {
    assert!(
        frame.len() < 1024 * 1024,
        "the bomb is {} bytes",
        frame.len()
    );
    let mut net = Net::new(2);
    write(&mut net.replicas[1], "notes", 1, "keep", 1);
    let heads = net.replicas[1]
        .collection("notes")
        .unwrap()
        .shard_heads(0)
        .unwrap();
    let mut session = Session::new(key(1).id(), [], Limits::default());
    let err = session.receive(&mut net.replicas[1], frame).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Collection {
                source: collection::Error::Merge {
                    source: DecodeError::Inflate {
                        limit: DEFAULT_MAX_INFLATED
                    },
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("refused: inflates past 67108864 bytes"),
        "{err}"
    );
    let coll = net.replicas[1].collection("notes").unwrap();
    assert_eq!(coll.shard_heads(0).unwrap(), heads);
    assert_eq!(coll.len(), 1);
}

#[test]
fn a_compressed_change_bomb_is_refused_before_merge() {
    let zeros = vec![0u8; DEFAULT_MAX_INFLATED + 1024];
    let deflated = miniz_oxide::deflate::compress_to_vec(&zeros, 6);
    assert_bomb_refused(&sync_frame_with(chunk(2, &deflated)));
}

#[test]
fn a_document_column_bomb_is_refused_before_merge() {
    let zeros = vec![0u8; DEFAULT_MAX_INFLATED + 1024];
    let column = miniz_oxide::deflate::compress_to_vec(&zeros, 6);
    let mut body = vec![0, 0, 1, 0x10 | 0x08];
    let mut len = column.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            body.push(byte);
            break;
        }
        body.push(byte | 0x80);
    }
    body.push(0);
    body.extend_from_slice(&column);
    assert_bomb_refused(&sync_frame_with(chunk(0, &body)));
}

#[derive(Debug, Clone)]
enum Step {
    Write {
        replica: usize,
        id: u8,
        value: i64,
    },
    Deliver {
        from: usize,
        to: usize,
        count: usize,
    },
    Reconnect {
        a: usize,
        b: usize,
    },
}

/// Runs `steps` on three fully connected replicas, then settles and checks
/// convergence.
fn run_steps(steps: Vec<Step>) {
    let mut net = Net::new(3);
    net.connect(0, 1);
    net.connect(1, 2);
    net.connect(0, 2);
    for step in steps {
        match step {
            Step::Write { replica, id, value } => net.write(replica, &format!("id-{id}"), value),
            Step::Deliver { from, to, count } => {
                for _ in 0..count {
                    net.deliver(from, to).unwrap();
                }
            }
            Step::Reconnect { a, b } => net.connect(a, b),
        }
    }
    net.settle();
    net.assert_converged();
}

#[test]
fn concurrent_writes_around_a_reconnect_converge() {
    use Step::*;
    run_steps(vec![
        Write {
            replica: 0,
            id: 0,
            value: 0,
        },
        Write {
            replica: 0,
            id: 5,
            value: 0,
        },
        Deliver {
            from: 1,
            to: 0,
            count: 1,
        },
        Deliver {
            from: 0,
            to: 1,
            count: 2,
        },
        Deliver {
            from: 2,
            to: 1,
            count: 1,
        },
        Deliver {
            from: 1,
            to: 2,
            count: 2,
        },
        Write {
            replica: 1,
            id: 5,
            value: 0,
        },
        Reconnect { a: 1, b: 2 },
        Write {
            replica: 0,
            id: 5,
            value: -1,
        },
        Write {
            replica: 2,
            id: 5,
            value: -1,
        },
        Write {
            replica: 0,
            id: 0,
            value: 0,
        },
    ]);
}

#[test]
fn a_write_before_the_hellos_are_read_converges() {
    use Step::*;
    run_steps(vec![
        Write {
            replica: 2,
            id: 2,
            value: 0,
        },
        Reconnect { a: 2, b: 0 },
        Write {
            replica: 1,
            id: 2,
            value: 0,
        },
        Reconnect { a: 1, b: 0 },
        Write {
            replica: 0,
            id: 5,
            value: 33901686691,
        },
    ]);
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, 0..12u8, any::<i64>()).prop_map(|(replica, id, value)| Step::Write {
            replica,
            id,
            value
        }),
        (0..3usize, 1..3usize, 1..6usize).prop_map(|(from, d, count)| Step::Deliver {
            from,
            to: (from + d) % 3,
            count
        }),
        (0..3usize, 1..3usize).prop_map(|(a, d)| Step::Reconnect { a, b: (a + d) % 3 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_interleavings_between_three_replicas_converge(steps in proptest::collection::vec(step(), 1..40)) {
        run_steps(steps);
    }

    #[test]
    fn random_frames_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), versioned in any::<bool>()) {
        let mut net = Net::new(2);
        write(&mut net.replicas[0], "notes", 2, "x", 1);
        let mut frame = bytes;
        if versioned {
            frame.insert(0, FRAME_VERSION);
        }
        let mut session = Session::new(key(2).id(), [], Limits::default());
        let _ = session.receive(&mut net.replicas[0], &frame);
    }

    #[test]
    fn corrupted_sync_frames_are_errors_not_panics(flip in 0usize..4096, bit in 0u8..8, cut in 0usize..4096) {
        let mut source = replica(2, log_of(2));
        for i in 0..5 {
            write(&mut source, "notes", 1, &format!("r{i}"), i);
        }
        let mut state = State::new();
        state.their_heads = Some(Vec::new());
        state.their_have = Some(Vec::new());
        state.their_need = Some(Vec::new());
        state.their_capabilities = Some(vec![automerge::sync::Capability::MessageV2]);
        let (message, _) = source.collection("notes").unwrap().sync_generate(0, &mut state).unwrap().unwrap();
        let mut frame = Frame::Sync {
            collection: "notes".into(),
            shards: 1,
            shard: 0,
            message: message.encode(),
            signatures: Vec::new(),
        }
        .encode(&Limits::default())
        .unwrap();
        let flip = flip % frame.len();
        frame[flip] ^= 1 << bit;
        frame.truncate(cut.max(1).min(frame.len()));
        let mut target = replica(1, log_of(2));
        let mut session = Session::new(key(2).id(), [], Limits::default());
        if session.receive(&mut target, &frame).is_ok() {
            // Whatever was accepted is a consistent collection (a flipped
            // tag may also turn the frame into another valid one).
            if let Some(coll) = target.collection("notes") {
                prop_assert!(coll.len() <= 5);
            }
        }
    }
}

/// Syncs `a` into `b`, whose session has `limits`, until nothing moves;
/// the first error `b`'s session returns, if any.
fn pump(a: &mut MemoryReplica, b: &mut MemoryReplica, limits: Limits) -> Result<(), Error> {
    let mut at_a = Session::new(key(2).id(), [], Limits::default());
    let mut at_b = Session::new(key(1).id(), [], limits);
    let mut to_b: VecDeque<Vec<u8>> = at_a.start(a).unwrap().into();
    let mut to_a: VecDeque<Vec<u8>> = at_b.start(b).unwrap().into();
    while !to_a.is_empty() || !to_b.is_empty() {
        while let Some(frame) = to_b.pop_front() {
            to_a.extend(at_b.receive(b, &frame)?.send);
        }
        while let Some(frame) = to_a.pop_front() {
            to_b.extend(at_a.receive(a, &frame).unwrap().send);
        }
    }
    Ok(())
}

#[test]
fn a_peers_record_over_the_record_limit_is_refused_at_limit_plus_one() {
    let log = log_of(2);
    let mut a = replica(1, log.clone());
    a.create_collection("notes", 1).unwrap();
    a.collection_mut("notes")
        .unwrap()
        .put(
            "big",
            json!({ "text": "x".repeat(2000) }),
            PutMode::Create,
            0,
        )
        .unwrap();
    let size = serde_json::to_vec(a.collection("notes").unwrap().get("big").unwrap())
        .unwrap()
        .len();

    // One byte under what the record needs: refused whole, nothing merged.
    let mut b = replica(2, log.clone());
    let small = Limits {
        max_record: size - 1,
        ..Limits::default()
    };
    let err = pump(&mut a, &mut b, small).unwrap_err();
    assert!(
        matches!(&err, Error::Collection { source: collection::Error::Merge { source: DecodeError::RecordTooLarge { id, limit, .. }, .. }, .. } if id == "big" && *limit == size - 1),
        "{err}"
    );
    assert!(b.collection("notes").and_then(|c| c.get("big")).is_none());

    // At the limit exactly, it syncs.
    let mut b = replica(2, log);
    let exact = Limits {
        max_record: size,
        ..Limits::default()
    };
    pump(&mut a, &mut b, exact).unwrap();
    assert!(b.collection("notes").unwrap().get("big").is_some());
}

/// A replica whose gate holds every change back until `open` is set.
struct Holding {
    inner: MemoryReplica,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Replica for Holding {
    type CreateError = collection::Error;

    fn collection_names(&self) -> Vec<String> {
        self.inner.collection_names()
    }

    fn collection(&self, name: &str) -> Option<&Collection> {
        self.inner.collection(name)
    }

    fn collection_mut(&mut self, name: &str) -> Option<&mut Collection> {
        self.inner.collection_mut(name)
    }

    fn create_collection(&mut self, name: &str, shards: u16) -> Result<(), collection::Error> {
        self.inner.create_collection(name, shards)
    }

    fn membership(&self) -> &Log {
        self.inner.membership()
    }

    fn membership_mut(&mut self) -> &mut Log {
        self.inner.membership_mut()
    }

    fn gate(&self, _name: &str) -> Option<Gate> {
        let open = std::sync::Arc::clone(&self.open);
        Some(std::sync::Arc::new(move |_: &collection::Candidate<'_>| {
            if open.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err(collection::Refusal::Waiting(
                    "the list is on its way".into(),
                ))
            }
        }))
    }
}

/// A sync frame carrying everything `source` holds of shard 0 of `notes`.
fn full_frame(source: &MemoryReplica) -> Vec<u8> {
    let mut state = State::new();
    state.their_heads = Some(Vec::new());
    state.their_have = Some(Vec::new());
    state.their_need = Some(Vec::new());
    state.their_capabilities = Some(vec![automerge::sync::Capability::MessageV2]);
    let (message, signatures) = source
        .collection("notes")
        .unwrap()
        .sync_generate(0, &mut state)
        .unwrap()
        .unwrap();
    Frame::Sync {
        collection: "notes".into(),
        shards: 1,
        shard: 0,
        message: message.encode(),
        signatures,
    }
    .encode(&Limits::default())
    .unwrap()
}

#[test]
fn a_message_the_gate_cannot_judge_yet_waits_and_passes_once_it_can() {
    let log = log_of(2);
    let mut source = replica(2, log.clone());
    write(&mut source, "notes", 1, "w1", 1);
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut target = Holding {
        inner: replica(1, log),
        open: std::sync::Arc::clone(&open),
    };
    target.create_collection("notes", 1).unwrap();
    let limits = Limits {
        max_waiting: 2,
        ..Limits::default()
    };
    let mut session = Session::new(Net::device(1), Vec::new(), limits);
    let frame = full_frame(&source);
    // Held: nothing applied, the session stays up.
    let fx = session.receive(&mut target, &frame).unwrap();
    assert!(fx.merged.is_empty() && fx.send.is_empty());
    assert!(target.collection("notes").unwrap().get("w1").is_none());
    // What it waited for arrives; the next frame retries it first.
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let acl = Frame::Acl {
        collection: "notes".into(),
        bytes: vec![1],
    }
    .encode(&Limits::default())
    .unwrap();
    let fx = session.receive(&mut target, &acl).unwrap();
    assert_eq!(fx.merged.len(), 1);
    assert!(target.collection("notes").unwrap().get("w1").is_some());

    // At most `max_waiting` wait; one more closes the session.
    open.store(false, std::sync::atomic::Ordering::SeqCst);
    write(&mut source, "notes", 1, "w2", 2);
    let mut session = Session::new(Net::device(1), Vec::new(), limits);
    let frame = full_frame(&source);
    session.receive(&mut target, &frame).unwrap();
    session.receive(&mut target, &frame).unwrap();
    assert!(matches!(
        session.receive(&mut target, &frame),
        Err(Error::TooManyWaiting { max: 2 })
    ));
    assert!(target.collection("notes").unwrap().get("w2").is_none());
}
