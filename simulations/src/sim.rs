//! The discrete-event world: nodes, connections, disks and the event queue.
//! See the [crate docs](crate) for the model.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;

use automerge::ChangeHash;
use hearth_crdt::collection::{self, Arrivals, PutMode, ShardIndex};
use hearth_crdt::node::redial::Backoff;
use hearth_crdt::node::{self as core, CloseReason, Input, Output, Outputs, SessionId, Write};
use hearth_crdt::sync::{Frame, Limits};
use hearth_crypto::identity::{DeviceId, DeviceKey};
use hearth_crypto::membership::Log;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::check::{self, AccessViolation, AckedWrite, QueueMax, ReplicaFingerprint, Verdict};
use crate::scenario::{Range, Scenario};

mod federated;
mod pairing;
mod queries;
mod sharing;

pub use federated::{Figures as FederatedFigures, GroupValue, ValueError};
pub use sharing::Figures as SharingFigures;

/// Virtual time, in microseconds.
pub type Time = u64;

const US_PER_MS: f64 = 1_000.0;
const US_PER_S: f64 = 1_000_000.0;

/// Why the world could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building the accounts' membership logs failed.
    #[error("cannot build the membership log: {0}")]
    Membership(#[from] hearth_crypto::membership::Error),
    /// A collection operation the simulator itself makes failed.
    #[error("collection {collection:?}: {source}")]
    Collection {
        /// The collection.
        collection: String,
        /// The cause.
        #[source]
        source: collection::Error,
    },
}

fn us(seconds: f64) -> Time {
    (seconds * US_PER_S).round() as Time
}

fn sample(rng: &mut StdRng, r: Range, scale: f64) -> Time {
    let v = if r.max > r.min {
        rng.gen_range(r.min..=r.max)
    } else {
        r.min
    };
    (v * scale).round() as Time
}

fn exponential(rng: &mut StdRng, mean_us: f64) -> Time {
    let u: f64 = rng.r#gen::<f64>().max(f64::MIN_POSITIVE);
    (-u.ln() * mean_us).round() as Time
}

/// What a node's disk holds durably.
#[derive(Debug, Default)]
struct Durable {
    /// Per collection, its catalog entry and, per shard, the chunks in order.
    chunks: BTreeMap<String, core::Stored>,
    /// Per peer node, the sync states by (collection, shard).
    states: BTreeMap<DeviceId, BTreeMap<(String, ShardIndex), Vec<u8>>>,
    log: Option<Arc<Log>>,
    /// Per (collection, shard): the heads at the latest durable batch, which
    /// the checker compares with the heads every sync frame announces.
    heads: BTreeMap<(String, ShardIndex), Vec<ChangeHash>>,
}

/// One write to the disk, not yet synced: a write of the core's batch, or
/// the heads the batch made durable (for the send checker).
#[derive(Debug)]
enum DiskOp {
    Write(Write),
    Heads {
        name: String,
        shard: ShardIndex,
        heads: Vec<ChangeHash>,
    },
}

impl Durable {
    /// Appends a chunk to a shard's list, or (`replace`, a compaction) makes
    /// it the whole list.
    fn shard_chunks(&mut self, collection: &str, shard: ShardIndex, bytes: Vec<u8>, replace: bool) {
        let Some(list) = self
            .chunks
            .get_mut(collection)
            .and_then(|s| s.1.get_mut(usize::from(shard)))
        else {
            return;
        };
        if replace {
            list.clear();
        }
        list.push(bytes);
    }

    fn apply(&mut self, op: DiskOp) {
        let write = match op {
            DiskOp::Heads { name, shard, heads } => {
                self.heads.insert((name, shard), heads);
                return;
            }
            DiskOp::Write(write) => write,
        };
        match write {
            Write::Catalog { collection, entry } => {
                let shards = usize::from(entry.shards);
                let slot = self
                    .chunks
                    .entry(collection)
                    .or_insert_with(|| (entry.clone(), vec![Vec::new(); shards]));
                slot.0 = entry;
            }
            Write::Chunk {
                collection,
                shard,
                bytes,
                ..
            } => self.shard_chunks(&collection, shard, bytes, false),
            Write::Compacted {
                collection,
                shard,
                bytes,
                ..
            } => self.shard_chunks(&collection, shard, bytes, true),
            Write::SyncState {
                peer,
                collection,
                shard,
                bytes,
            } => {
                self.states
                    .entry(peer)
                    .or_default()
                    .insert((collection, shard), bytes);
            }
            Write::Membership(log) => self.log = Some(log),
            Write::Change { .. } | Write::PeerSeen { .. } => {}
        }
    }
}

/// Something a node may do only once its disk has synced.
#[derive(Debug)]
enum Held {
    Send {
        conn: u32,
        dir: usize,
        epoch: u32,
        frame: Vec<u8>,
    },
    Ack {
        write: u32,
    },
    /// A write to a shared collection.
    SharedAck {
        write: u32,
    },
    /// The reply to a contact request, to device `to`.
    Reply {
        to: u32,
        incarnation: u32,
        bytes: Vec<u8>,
    },
    /// The reply to a query request, to device `to`.
    QueryReply {
        to: u32,
        incarnation: u32,
        exchange: u64,
        bytes: Vec<u8>,
    },
    /// A pairing frame (the welcome, after the new member is durable).
    Pair {
        join: u32,
        attempt: u32,
        frame: Vec<u8>,
    },
}

/// Key of a record in the write registry: (collection index, writer, k).
type RecordKey = (u16, u32, u32);

#[derive(Debug)]
struct Node {
    account: u32,
    id: DeviceId,
    /// The node's pure core: the same code the daemon's engine drives.
    core: core::Node,
    durable: Durable,
    pending: Vec<DiskOp>,
    held: VecDeque<Held>,
    fsync_scheduled: bool,
    incarnation: u32,
    online: bool,
    crashed: bool,
    /// Scheduled for removal from its account: excluded from the
    /// convergence, durability and time-to-converge figures.
    removed: bool,
    /// In its account's log: every initial device, and a joining device
    /// once it adopted the log from its welcome.
    member: bool,
    /// The join (index into `Scenario::joins`) that brings this device in.
    joiner_of: Option<u32>,
    /// The timer its core asked for last, until it fires.
    timer: Option<i64>,
    /// Who its admission gate lets sync (the core's last
    /// `Output::MembersChanged`).
    admission: core::Members,
    /// Per shared record (share, writer, k): the newest generation seen and
    /// the hops it took.
    shared_seen: BTreeMap<(u32, u32, u32), (u64, u32)>,
    links: Vec<u32>,
    outbox: u64,
    /// Per record: the newest generation seen and the hops it took.
    seen: BTreeMap<RecordKey, (u64, u32)>,
    writes_made: u64,
    frames_sent: u64,
    bytes_sent: u64,
    /// Peers' changes that reached the node's collections before its last
    /// restart (its core counts those since).
    arrivals: Arrivals,
}

#[derive(Debug)]
struct Conn {
    ends: [u32; 2],
    epoch: u32,
    up: bool,
    inflight: [u32; 2],
    outbox: [VecDeque<Vec<u8>>; 2],
    last_arrival: [Time; 2],
    connect_pending: bool,
    /// An end's admission refused the other for good (it was removed).
    refused: bool,
}

/// Adds a link between devices `a` and `b`, down until it connects.
fn add_link(nodes: &mut [Node], conns: &mut Vec<Conn>, a: u32, b: u32) {
    let c = conns.len() as u32;
    nodes[a as usize].links.push(c);
    nodes[b as usize].links.push(c);
    conns.push(Conn {
        ends: [a, b],
        epoch: 0,
        up: false,
        inflight: [0, 0],
        outbox: [VecDeque::new(), VecDeque::new()],
        last_arrival: [0, 0],
        connect_pending: false,
        refused: false,
    });
}

#[derive(Debug)]
struct WriteRecord {
    key: RecordKey,
    account: u32,
    origin: u32,
    rev: String,
    generation: u64,
    at: Time,
    acked: Option<Time>,
    lost: bool,
    arrivals: u32,
    last_arrival: Time,
    max_hops: u32,
}

#[derive(Debug)]
enum Kind {
    Deliver {
        conn: u32,
        dir: usize,
        epoch: u32,
        frame: Vec<u8>,
    },
    Connect {
        conn: u32,
    },
    Fsync {
        node: u32,
        incarnation: u32,
    },
    Write {
        node: u32,
    },
    Offline {
        node: u32,
    },
    Online {
        node: u32,
    },
    Crash {
        node: u32,
    },
    Restart {
        node: u32,
    },
    PartitionStart {
        index: usize,
    },
    PartitionEnd,
    Removal,
    Heal,
    /// A join starts an attempt with a fresh invitation.
    JoinStart {
        join: u32,
    },
    /// A pairing frame arrives; `dir` 0 is joiner → inviter.
    PairDeliver {
        join: u32,
        attempt: u32,
        dir: usize,
        frame: Vec<u8>,
    },
    /// The person types the code on the inviter.
    PairConfirm {
        join: u32,
        attempt: u32,
    },
    /// A core's timer fires (`at` in core time, to tell stale ones apart).
    Tick {
        node: u32,
        at: i64,
    },
    /// A step of the sharing plan (and the tries it had).
    Share(sharing::Step, u32),
    /// A federated query exchange on its way.
    Query(queries::Step),
    /// A step of the scenario's federated query.
    Federated(federated::Step),
}

#[derive(Debug)]
struct Event {
    at: Time,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    // Reversed: BinaryHeap is a max-heap and the earliest event goes first;
    // `seq` makes ties deterministic (first scheduled, first run).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Counters of one run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counters {
    /// Events processed.
    pub events: u64,
    /// Connections established.
    pub connections: u64,
    /// Connections broken by a lost frame.
    pub breaks_loss: u64,
    /// Connections broken by a duplicated frame.
    pub breaks_duplication: u64,
    /// Connections broken by a reordered frame.
    pub breaks_reorder: u64,
    /// Sessions closed because `Session::receive` or `local_change` failed
    /// (other than for membership).
    pub session_errors: u64,
    /// Sessions that ended because the peer is not a member (a removed
    /// device); the link is not dialled again.
    pub refused: u64,
    /// Crashes.
    pub crashes: u64,
    /// Unacknowledged writes a crash dropped.
    pub lost_unacked_writes: u64,
    /// Fsyncs.
    pub fsyncs: u64,
    /// Writes made.
    pub writes: u64,
    /// Writes acknowledged.
    pub acked: u64,
    /// Pairing attempts started (one invitation each).
    pub pairing_attempts: u64,
    /// Attempts that ended with the new device welcomed.
    pub pairings_succeeded: u64,
    /// Attempts refused because the person typed a wrong code.
    pub pairings_refused: u64,
    /// Attempts that ended otherwise (the connection broke, a device went
    /// down, or a step failed) and were retried.
    pub pairings_failed: u64,
}

/// Everything a finished run hands to the report.
#[derive(Debug)]
pub struct Outcome {
    /// The checkers' verdicts.
    pub verdicts: Vec<Verdict>,
    /// Whether the event queue drained before the quiescence cap.
    pub quiesced: bool,
    /// Virtual time of the last event, µs.
    pub end_us: Time,
    /// Counters.
    pub counters: Counters,
    /// Per write that converged: time from write to the last member replica, µs.
    pub converge_us: Vec<Time>,
    /// Writes that did not reach every member.
    pub unconverged_writes: u64,
    /// Per write that converged: its rounds (largest hop count to a member).
    pub rounds: Vec<u32>,
    /// Arrivals at member replicas by hop count.
    pub hop_histogram: Vec<u64>,
    /// Replicas per document (devices per account).
    pub replicas_per_document: u32,
    /// Per node: frames sent.
    pub frames_per_node: Vec<u64>,
    /// Per node that received any change: the copies of each change that
    /// reached it, on average, in thousandths (repeats included, over the
    /// changes that were new to it).
    pub copies_per_node: Vec<u64>,
    /// Per node: bytes sent.
    pub bytes_per_node: Vec<u64>,
    /// Queue maxima with their bounds.
    pub queues: Vec<QueueMax>,
    /// Devices removed from their accounts.
    pub removed_devices: u32,
    /// Per completed join: time from its first attempt to the welcome, µs.
    pub pairing_us: Vec<Time>,
    /// Contacts, shares and shared writes.
    pub sharing: SharingFigures,
    /// Every federated query's result, by query id ([`World::query`]).
    pub answers: BTreeMap<String, serde_json::Value>,
    /// The scenario's federated query (`[federated]`), if it has one.
    pub federated: Option<FederatedFigures>,
}

/// The simulated world.
pub struct World {
    scenario: Scenario,
    /// The rules of every device's core.
    core: core::Config,
    rng: StdRng,
    /// Timer events in `queue` (the rest is protocol and fault activity).
    ticks_pending: u64,
    now: Time,
    seq: u64,
    queue: BinaryHeap<Event>,
    nodes: Vec<Node>,
    conns: Vec<Conn>,
    writes: Vec<WriteRecord>,
    by_key: BTreeMap<RecordKey, Vec<u32>>,
    partition: Option<Vec<bool>>,
    healed: bool,
    limits: Limits,
    pad: String,
    counters: Counters,
    violations: Vec<AccessViolation>,
    undurable_sends: Vec<check::UndurableSend>,
    frames_checked: u64,
    to_non_members: u64,
    max_inflight: u64,
    max_outbox: u64,
    max_held: u64,
    hop_histogram: Vec<u64>,
    joins: Vec<pairing::JoinState>,
    /// Pairing properties seen broken during the run.
    pairing_violations: Vec<String>,
    /// Every device by id.
    by_id: BTreeMap<DeviceId, u32>,
    /// The contact graph and shares, and what the run saw of them.
    sharing: sharing::Sharing,
    sharing_figures: SharingFigures,
    /// Federated query exchanges on their way, and the results.
    queries: queries::Queries,
    /// The scenario's federated query.
    federated: federated::Plan,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("scenario", &self.scenario.name)
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl World {
    /// Builds the accounts, devices, logs and links of `scenario` from `seed`.
    pub fn new(scenario: &Scenario, seed: u64) -> Result<Self, Error> {
        Self::with_core(scenario, seed, core::Config::default())
    }

    /// [`World::new`], with every device's core built from `base` (its
    /// shard count set by the scenario): how a test plants a bug in the core.
    pub fn with_core(scenario: &Scenario, seed: u64, base: core::Config) -> Result<Self, Error> {
        let config = core::Config {
            shards: scenario.workload.shards,
            // The node's own redial policy, over the scenario's bounds. A
            // link that stayed up for the longest delay counts as a success.
            backoff: Backoff {
                min_ms: scenario.network.backoff_base_ms.round() as u64,
                max_ms: scenario.network.backoff_max_ms.round() as u64,
                stable_ms: scenario.network.backoff_max_ms.round() as u64,
            },
            ..base
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let t = &scenario.topology;
        let per = t.devices_per_account;
        let removals = scenario.faults.removals_per_account;
        let mut nodes = Vec::with_capacity(scenario.devices() as usize);
        let mut conns = Vec::new();
        for account in 0..t.accounts {
            let keys: Vec<DeviceKey> = (0..per)
                .map(|_| DeviceKey::from_bytes(&rng.r#gen::<[u8; 32]>()))
                .collect();
            let mut log = Log::genesis(&keys[0], "device-0", 0);
            for (i, key) in keys.iter().enumerate().skip(1) {
                log.add_device(&keys[0], key.id(), &format!("device-{i}"), 0)?;
            }
            let log = Arc::new(log);
            let base = account * per;
            for (i, key) in keys.into_iter().enumerate() {
                let id = key.id();
                nodes.push(Node {
                    account,
                    id,
                    core: core::Node::new(
                        key,
                        &format!("device-{i}"),
                        Arc::clone(&log),
                        config.clone(),
                    ),
                    durable: Durable {
                        log: Some(Arc::clone(&log)),
                        ..Durable::default()
                    },
                    pending: Vec::new(),
                    held: VecDeque::new(),
                    fsync_scheduled: false,
                    incarnation: 0,
                    online: true,
                    crashed: false,
                    removed: i as u32 >= per - removals,
                    member: true,
                    joiner_of: None,
                    timer: None,
                    admission: core::Members::of(id, &log),
                    shared_seen: BTreeMap::new(),
                    links: Vec::new(),
                    outbox: 0,
                    seen: BTreeMap::new(),
                    writes_made: 0,
                    frames_sent: 0,
                    bytes_sent: 0,
                    arrivals: Arrivals::default(),
                });
            }
            for (a, b) in overlay(&mut rng, per, t.degree) {
                add_link(&mut nodes, &mut conns, base + a, base + b);
            }
        }
        let sharing = sharing::plan(scenario, &mut rng, &mut nodes, &mut conns);
        let joins = pairing::add_joiners(scenario, &config, &mut rng, &mut nodes, &mut conns);
        let by_id = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id, i as u32))
            .collect();
        let mut world = World {
            scenario: scenario.clone(),
            core: config,
            rng,
            ticks_pending: 0,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            conns,
            writes: Vec::new(),
            by_key: BTreeMap::new(),
            partition: None,
            healed: false,
            limits: Limits::default(),
            pad: "x".repeat(scenario.workload.record_bytes as usize),
            counters: Counters::default(),
            violations: Vec::new(),
            undurable_sends: Vec::new(),
            frames_checked: 0,
            to_non_members: 0,
            max_inflight: 0,
            max_outbox: 0,
            max_held: 0,
            hop_histogram: Vec::new(),
            joins,
            pairing_violations: Vec::new(),
            by_id,
            sharing,
            sharing_figures: SharingFigures::default(),
            queries: queries::Queries::default(),
            federated: federated::Plan::default(),
        };
        world.schedule_initial();
        Ok(world)
    }

    fn push(&mut self, delay: Time, kind: Kind) {
        if matches!(kind, Kind::Tick { .. }) {
            self.ticks_pending += 1;
        }
        self.seq += 1;
        self.queue.push(Event {
            at: self.now + delay,
            seq: self.seq,
            kind,
        });
    }

    /// Schedules a workload or fault event, unless it would fall in the
    /// heal phase, where workload and faults have stopped.
    fn push_before_heal(&mut self, delay: Time, kind: Kind) {
        if self.now + delay < us(self.scenario.duration_s) {
            self.push(delay, kind);
        }
    }

    fn schedule_initial(&mut self) {
        let s = self.scenario.clone();
        let n = self.nodes.len() as u32;
        let rate = s.workload.writes_per_device_per_min;
        let churn = s.faults.churn;
        for node in 0..n {
            if rate > 0.0 {
                let d = exponential(&mut self.rng, 60.0 * US_PER_S / rate);
                self.push_before_heal(d, Kind::Write { node });
            }
            if self.is_querier_device(node) {
                continue;
            }
            if let Some(c) = churn
                && self.rng.gen_bool(c.fraction)
            {
                // Start at a random point of an online period.
                let up = sample(&mut self.rng, c.online_s, US_PER_S);
                let d = self.rng.gen_range(0..=up);
                self.push_before_heal(d, Kind::Offline { node });
            }
            if s.faults.crashes_per_device_per_hour > 0.0 {
                let d = exponential(
                    &mut self.rng,
                    3_600.0 * US_PER_S / s.faults.crashes_per_device_per_hour,
                );
                self.push_before_heal(d, Kind::Crash { node });
            }
        }
        for (index, p) in s.faults.partitions.iter().enumerate() {
            self.push(us(p.start_s), Kind::PartitionStart { index });
            self.push(us(p.end_s), Kind::PartitionEnd);
        }
        if s.faults.removals_per_account > 0 {
            self.push(us(s.faults.removal_at_s), Kind::Removal);
        }
        self.push(us(s.duration_s), Kind::Heal);
        for (join, j) in s.joins.iter().enumerate() {
            self.push(us(j.at_s), Kind::JoinStart { join: join as u32 });
        }
        self.schedule_sharing();
        self.schedule_federated();
        for node in 0..n {
            self.wake(node);
        }
    }

    /// Runs to quiescence (or the cap) and checks the result.
    pub fn run(mut self) -> Outcome {
        let cap = us(self.scenario.duration_s + self.scenario.max_quiescence_s);
        let mut quiesced = true;
        while let Some(ev) = self.queue.pop() {
            if ev.at > cap {
                quiesced = false;
                break;
            }
            if matches!(ev.kind, Kind::Tick { .. }) {
                self.ticks_pending -= 1;
                // Only timers are left after the heal, and none can connect
                // anything (what is down stays unreachable): the world is at
                // rest, though cores keep backing off towards the unreachable.
                if self.healed
                    && self.queue.len() as u64 == self.ticks_pending
                    && !self.any_link_can_connect()
                {
                    break;
                }
            }
            self.now = ev.at;
            self.counters.events += 1;
            self.dispatch(ev.kind);
        }
        self.finish(quiesced)
    }

    fn dispatch(&mut self, kind: Kind) {
        match kind {
            Kind::Deliver {
                conn,
                dir,
                epoch,
                frame,
            } => self.deliver(conn, dir, epoch, frame),
            Kind::Connect { conn } => self.connect(conn),
            Kind::Fsync { node, incarnation } => self.fsync(node, incarnation),
            Kind::Write { node } => self.write(node),
            Kind::Offline { node } => self.offline(node),
            Kind::Online { node } => self.online(node),
            Kind::Crash { node } => self.crash(node),
            Kind::Restart { node } => self.restart(node),
            Kind::PartitionStart { index } => self.partition_start(index),
            Kind::PartitionEnd => {
                self.partition = None;
                self.wake_all();
            }
            Kind::Removal => self.removal(),
            Kind::Heal => self.heal(),
            Kind::JoinStart { join } => self.join_start(join),
            Kind::PairDeliver {
                join,
                attempt,
                dir,
                frame,
            } => self.pair_deliver(join, attempt, dir, frame),
            Kind::PairConfirm { join, attempt } => self.pair_confirm(join, attempt),
            Kind::Tick { node, at } => self.tick(node, at),
            Kind::Share(step, tries) => self.share_step(step, tries),
            Kind::Query(step) => self.query_step(step),
            Kind::Federated(step) => self.federated_step(step),
        }
    }

    /// A core's timer fired: it dials what is due. A device that is down
    /// misses it; waking up tells its core again (see [`World::wake`]).
    fn tick(&mut self, me: u32, at: i64) {
        let node = &mut self.nodes[me as usize];
        if node.timer != Some(at) {
            return;
        }
        node.timer = None;
        if !node.online || node.crashed {
            return;
        }
        let now = self.core_now();
        let out = self.nodes[me as usize]
            .core
            .handle(now, &mut self.rng, Input::Tick);
        self.perform(me, None, out);
    }

    fn any_link_can_connect(&self) -> bool {
        (0..self.conns.len() as u32).any(|c| !self.conns[c as usize].up && self.reachable(c))
    }

    fn faulty(&self) -> bool {
        !self.healed
    }

    // --- connections -----------------------------------------------------

    fn reachable(&self, c: u32) -> bool {
        let conn = &self.conns[c as usize];
        let [a, b] = conn.ends;
        !conn.refused && self.can_talk(a, b) && self.admits(a, b) && self.admits(b, a)
    }

    /// The admission gate for a device that joined by pairing: until it
    /// holds the log and `by`'s log lists it, nothing connects (refusing
    /// for good, as `refused` does, would be wrong: the log is on its way).
    fn admits(&self, by: u32, device: u32) -> bool {
        let d = &self.nodes[device as usize];
        let gate = &self.nodes[by as usize];
        if d.account != gate.account {
            return gate.admission.may_sync(&d.id);
        }
        if d.joiner_of.is_none() {
            return true;
        }
        d.member && self.nodes[by as usize].core.log().is_member(&d.id)
    }

    fn schedule_connect(&mut self, c: u32, delay: Time) {
        let conn = &mut self.conns[c as usize];
        if conn.up || conn.connect_pending || conn.refused {
            return;
        }
        conn.connect_pending = true;
        self.push(delay, Kind::Connect { conn: c });
    }

    /// `node` came up, or the network around it changed: its core hears
    /// that every device it links to may be reachable (as a daemon hears of
    /// a new address), and dials at once what has no session.
    fn wake(&mut self, node: u32) {
        let n = &self.nodes[node as usize];
        if !n.online || n.crashed {
            return;
        }
        let links = n.links.clone();
        for c in links {
            let [a, b] = self.conns[c as usize].ends;
            let other = if a == node { b } else { a };
            let peer = self.nodes[other as usize].id;
            let now = self.core_now();
            let out = self.nodes[node as usize].core.handle(
                now,
                &mut self.rng,
                Input::Reachable { peer },
            );
            self.perform(node, None, out);
        }
    }

    fn wake_all(&mut self) {
        for node in 0..self.nodes.len() as u32 {
            self.wake(node);
        }
    }

    fn connect(&mut self, c: u32) {
        self.conns[c as usize].connect_pending = false;
        if self.conns[c as usize].up || !self.reachable(c) {
            return;
        }
        let conn = &mut self.conns[c as usize];
        conn.epoch += 1;
        conn.up = true;
        conn.last_arrival = [self.now; 2];
        self.counters.connections += 1;
        for side in 0..2 {
            let [me, peer] = {
                let e = self.conns[c as usize].ends;
                [e[side], e[1 - side]]
            };
            let states = self.persisted_states(me, peer);
            let input = Input::Opened {
                session: self.session_id(c, side),
                peer: self.nodes[peer as usize].id,
                states,
            };
            let now = self.core_now();
            let out = self.nodes[me as usize]
                .core
                .handle(now, &mut self.rng, input);
            self.perform(me, None, out);
            if !self.conns[c as usize].up {
                return;
            }
        }
    }

    /// The core's number for `side`'s stream of connection `c` in its
    /// current epoch.
    fn session_id(&self, c: u32, side: usize) -> SessionId {
        let epoch = u64::from(self.conns[c as usize].epoch);
        SessionId((u64::from(c) << 32) | (epoch << 1) | side as u64)
    }

    /// The connection and side of a live session, if its epoch is current.
    fn session_end(&self, session: SessionId) -> Option<(u32, usize)> {
        let c = (session.0 >> 32) as u32;
        let side = (session.0 & 1) as usize;
        let conn = self.conns.get(c as usize)?;
        (conn.up && self.session_id(c, side) == session).then_some((c, side))
    }

    /// Virtual time as the core sees it: ms since the epoch of the run.
    pub(crate) fn core_now(&self) -> i64 {
        (self.now / 1_000) as i64
    }

    /// The sync states `me` holds for `peer`: durable ones overlaid with
    /// those still waiting for an fsync (the node reads its own writes).
    fn persisted_states(&self, me: u32, peer: u32) -> Vec<(String, ShardIndex, Vec<u8>)> {
        let node = &self.nodes[me as usize];
        let peer_id = self.nodes[peer as usize].id;
        let mut states: BTreeMap<(String, ShardIndex), Vec<u8>> = node
            .durable
            .states
            .get(&peer_id)
            .cloned()
            .unwrap_or_default();
        for op in &node.pending {
            if let DiskOp::Write(Write::SyncState {
                peer: p,
                collection,
                shard,
                bytes,
            }) = op
                && *p == peer_id
            {
                states.insert((collection.clone(), *shard), bytes.clone());
            }
        }
        states
            .into_iter()
            .map(|((name, shard), bytes)| (name, shard, bytes))
            .collect()
    }

    /// Closes a connection (both sessions) and, if it may come back,
    /// schedules a reconnect with exponential backoff and jitter.
    fn close(&mut self, c: u32) {
        if !self.conns[c as usize].up {
            return;
        }
        let sessions = [self.session_id(c, 0), self.session_id(c, 1)];
        let conn = &mut self.conns[c as usize];
        conn.up = false;
        conn.epoch += 1;
        conn.inflight = [0, 0];
        for side in 0..2 {
            let queued = conn.outbox[side].len() as u64;
            conn.outbox[side].clear();
            self.nodes[conn.ends[side] as usize].outbox -= queued;
        }
        for (side, session) in sessions.into_iter().enumerate() {
            let me = self.conns[c as usize].ends[side];
            if self.nodes[me as usize].crashed {
                continue;
            }
            let now = self.core_now();
            let out =
                self.nodes[me as usize]
                    .core
                    .handle(now, &mut self.rng, Input::Closed { session });
            self.perform(me, None, out);
        }
        // Each core schedules its own next attempt (Output::Timer).
    }

    fn close_all(&mut self, node: u32) {
        let links = self.nodes[node as usize].links.clone();
        for c in links {
            self.close(c);
        }
    }

    /// Sends now if nothing waits for the disk, else holds the frame until
    /// the next fsync: persist, then send.
    fn node_send(&mut self, c: u32, side: usize, frame: Vec<u8>) {
        let node = self.conns[c as usize].ends[side];
        let to = self.conns[c as usize].ends[1 - side];
        if self.nodes[node as usize].account != self.nodes[to as usize].account
            && let Ok(Frame::Sync { collection, .. }) = Frame::decode(&frame, &self.limits)
            && !self.may_receive(node, to, &collection)
        {
            self.violations.push(AccessViolation {
                at_us: self.now,
                from: node,
                to,
                collection,
            });
        }
        let n = &mut self.nodes[node as usize];
        if n.pending.is_empty() && n.held.is_empty() {
            self.net_send(c, side, frame);
        } else {
            let epoch = self.conns[c as usize].epoch;
            n.held.push_back(Held::Send {
                conn: c,
                dir: side,
                epoch,
                frame,
            });
            self.max_held = self.max_held.max(n.held.len() as u64);
        }
    }

    fn net_send(&mut self, c: u32, dir: usize, frame: Vec<u8>) {
        let [from, to] = {
            let e = self.conns[c as usize].ends;
            [e[dir], e[1 - dir]]
        };
        if !self.conns[c as usize].up {
            return;
        }
        self.check_frame(from, to, &frame);
        let sender = &mut self.nodes[from as usize];
        sender.frames_sent += 1;
        sender.bytes_sent += frame.len() as u64;
        if self.faulty() {
            let net = &self.scenario.network;
            let (loss, dup, reorder) = (net.loss, net.duplication, net.reorder);
            let broke = if self.rng.gen_bool(loss) {
                Some(&mut self.counters.breaks_loss)
            } else if self.rng.gen_bool(dup) {
                Some(&mut self.counters.breaks_duplication)
            } else if self.rng.gen_bool(reorder) {
                Some(&mut self.counters.breaks_reorder)
            } else {
                None
            };
            if let Some(counter) = broke {
                // The transport notices and resets the stream.
                *counter += 1;
                self.close(c);
                return;
            }
        }
        let window = self.scenario.bounds.window_frames;
        let conn = &mut self.conns[c as usize];
        if conn.inflight[dir] < window {
            self.transmit(c, dir, frame);
        } else {
            conn.outbox[dir].push_back(frame);
            let n = &mut self.nodes[from as usize];
            n.outbox += 1;
            self.max_outbox = self.max_outbox.max(n.outbox);
        }
    }

    fn transmit(&mut self, c: u32, dir: usize, frame: Vec<u8>) {
        let latency = sample(&mut self.rng, self.scenario.network.latency_ms, US_PER_MS);
        let conn = &mut self.conns[c as usize];
        conn.inflight[dir] += 1;
        self.max_inflight = self.max_inflight.max(u64::from(conn.inflight[dir]));
        // In order within the connection: never before the previous frame.
        let at = (self.now + latency).max(conn.last_arrival[dir]);
        conn.last_arrival[dir] = at;
        let epoch = conn.epoch;
        self.seq += 1;
        self.queue.push(Event {
            at,
            seq: self.seq,
            kind: Kind::Deliver {
                conn: c,
                dir,
                epoch,
                frame,
            },
        });
    }

    /// The checks every frame on the wire passes: no data to a non-member
    /// (access), and no sync message announcing heads its sender has not
    /// made durable (durable sends).
    fn check_frame(&mut self, from: u32, to: u32, frame: &[u8]) {
        self.frames_checked += 1;
        let decoded = Frame::decode(frame, &self.limits);
        let (sender, receiver) = (&self.nodes[from as usize], &self.nodes[to as usize]);
        if let Ok(Frame::Sync {
            collection,
            shard,
            message,
            ..
        }) = &decoded
            && let Some(undurable) = undurable_heads(sender, collection, *shard, message)
        {
            self.undurable_sends.push(check::UndurableSend {
                at_us: self.now,
                from,
                to,
                collection: collection.clone(),
                shard: *shard,
                heads: undurable,
            });
        }
        if sender.account != receiver.account {
            // Checked when the core produced it (`node_send`): that is the
            // order its outputs are in, whatever the disk holds back.
            return;
        }
        // A device that is still pairing is a non-member whatever the
        // sender's log says: it must not see data before its welcome.
        if receiver.member && sender.core.log().is_member(&receiver.id) {
            return;
        }
        self.to_non_members += 1;
        if let Ok(Frame::Sync { collection, .. }) = decoded {
            self.violations.push(AccessViolation {
                at_us: self.now,
                from,
                to,
                collection,
            });
        }
    }

    fn deliver(&mut self, c: u32, dir: usize, epoch: u32, frame: Vec<u8>) {
        let conn = &mut self.conns[c as usize];
        if !conn.up || conn.epoch != epoch {
            return;
        }
        conn.inflight[dir] -= 1;
        if let Some(next) = conn.outbox[dir].pop_front() {
            self.nodes[conn.ends[dir] as usize].outbox -= 1;
            self.transmit(c, dir, next);
        }
        let side = 1 - dir;
        let [me, peer] = {
            let e = self.conns[c as usize].ends;
            [e[side], e[dir]]
        };
        let session = self.session_id(c, side);
        let now = self.core_now();
        let out = self.nodes[me as usize].core.handle(
            now,
            &mut self.rng,
            Input::Frame { session, frame },
        );
        self.perform(me, Some(peer), out);
    }

    // --- the driver: the core's outputs over the virtual disk and network

    /// Performs `me`'s outputs in order, as the daemon's engine does: a
    /// batch goes to the disk's pending writes, and everything after it is
    /// held until the disk syncs (see [`World::node_send`]). `from` is the
    /// peer whose frame produced them, for the arrival figures.
    fn perform(&mut self, me: u32, from: Option<u32>, out: Outputs) {
        for output in out.items {
            match output {
                Output::Persist(batch) => {
                    let node = &mut self.nodes[me as usize];
                    let mut shards = BTreeSet::new();
                    let mut arrived: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
                    for write in batch.writes {
                        match &write {
                            Write::Chunk {
                                collection, shard, ..
                            }
                            | Write::Compacted {
                                collection, shard, ..
                            } => {
                                shards.insert((collection.clone(), *shard));
                            }
                            Write::Change { collection, change } if !change.deleted => {
                                arrived
                                    .entry(collection.clone())
                                    .or_default()
                                    .push((change.id.clone(), change.rev.clone()));
                            }
                            _ => {}
                        }
                        node.pending.push(DiskOp::Write(write));
                    }
                    for (name, shard) in shards {
                        let heads = node
                            .core
                            .collections()
                            .get(&name)
                            .and_then(|l| l.data.shard_heads(shard).ok())
                            .unwrap_or_default();
                        node.pending.push(DiskOp::Heads { name, shard, heads });
                    }
                    self.ensure_fsync(me);
                    if let Some(from) = from {
                        for (name, records) in arrived {
                            self.arrivals(me, from, &name, &records);
                            self.share_arrivals(me, from, &name, &records);
                        }
                    }
                }
                Output::Send { session, frame } => {
                    if let Some((c, side)) = self.session_end(session) {
                        self.node_send(c, side, frame);
                    }
                }
                Output::Close {
                    session, reason, ..
                } => {
                    let Some((c, _)) = self.session_end(session) else {
                        continue;
                    };
                    let [a, b] = self.conns[c as usize].ends;
                    if self.nodes[a as usize].account != self.nodes[b as usize].account {
                        // Between accounts the admission gates decide when
                        // to connect again; a peer whose change the gate
                        // refused is not dialled again (see `sharing`).
                        if is_gate_refusal(&reason) {
                            self.sharing_figures.refused_by_gate += 1;
                            self.conns[c as usize].refused = true;
                        } else if matches!(reason, CloseReason::Refused(_)) {
                            self.counters.session_errors += 1;
                        }
                        self.close(c);
                        continue;
                    }
                    match reason {
                        // A peer refused for not being a member is never
                        // dialled again (the node's admission gate remembers
                        // it); anything else reconnects with backoff.
                        CloseReason::NotAMember | CloseReason::NotShared => {
                            self.counters.refused += 1;
                            self.conns[c as usize].refused = true;
                        }
                        CloseReason::Refused(_) | CloseReason::StoreFailed => {
                            self.counters.session_errors += 1;
                        }
                        CloseReason::StreamEnded | CloseReason::Replaced => {}
                    }
                    self.close(c);
                }
                Output::MembersChanged(members) => {
                    self.admit_joiners(me);
                    self.members_changed(me, members);
                }
                Output::Deliver { peer, frame, .. } => self.share_deliver(me, peer, frame),
                Output::Query {
                    exchange,
                    peer,
                    frame,
                    timeout_ms,
                    ..
                } => self.query_send(me, exchange, peer, frame, timeout_ms),
                Output::Answered { query, result } => self.query_answered(query, result),
                Output::Dial { peer, .. } => {
                    // One connection carries the session here, whichever
                    // side opens the stream; a dial that cannot get through
                    // is simply lost, as on a real network.
                    if let Some(c) = self.link_to(me, peer)
                        && self.reachable(c)
                    {
                        let d = sample(&mut self.rng, self.scenario.network.connect_ms, US_PER_MS);
                        self.schedule_connect(c, d);
                    }
                }
                Output::Timer { at } => {
                    self.nodes[me as usize].timer = Some(at);
                    let when = (at.max(0) as Time) * 1_000;
                    self.push(when.saturating_sub(self.now), Kind::Tick { node: me, at });
                }
            }
        }
    }

    /// The link between `me` and the device `peer`, if the topology has one.
    fn link_to(&self, me: u32, peer: DeviceId) -> Option<u32> {
        self.nodes[me as usize].links.iter().copied().find(|&c| {
            let [a, b] = self.conns[c as usize].ends;
            let other = if a == me { b } else { a };
            self.nodes[other as usize].id == peer
        })
    }

    fn ensure_fsync(&mut self, me: u32) {
        let node = &mut self.nodes[me as usize];
        if node.pending.is_empty() || node.fsync_scheduled {
            return;
        }
        node.fsync_scheduled = true;
        let incarnation = node.incarnation;
        let d = (self.scenario.storage.fsync_ms * US_PER_MS).round() as Time;
        self.push(
            d.max(1),
            Kind::Fsync {
                node: me,
                incarnation,
            },
        );
    }

    fn fsync(&mut self, me: u32, incarnation: u32) {
        let node = &mut self.nodes[me as usize];
        if node.incarnation != incarnation {
            return;
        }
        node.fsync_scheduled = false;
        self.counters.fsyncs += 1;
        for op in std::mem::take(&mut node.pending) {
            node.durable.apply(op);
        }
        let held = std::mem::take(&mut node.held);
        for h in held {
            match h {
                Held::Send {
                    conn,
                    dir,
                    epoch,
                    frame,
                } => {
                    if self.conns[conn as usize].up && self.conns[conn as usize].epoch == epoch {
                        self.net_send(conn, dir, frame);
                    }
                }
                Held::Ack { write } => {
                    self.writes[write as usize].acked = Some(self.now);
                    self.counters.acked += 1;
                }
                Held::SharedAck { write } => self.sharing.writes[write as usize].acked = true,
                Held::Reply {
                    to,
                    incarnation,
                    bytes,
                } => self.send_reply(to, incarnation, me, bytes),
                Held::QueryReply {
                    to,
                    incarnation,
                    exchange,
                    bytes,
                } => self.send_query_reply(to, incarnation, me, exchange, bytes),
                Held::Pair {
                    join,
                    attempt,
                    frame,
                } => self.pair_send(join, attempt, 1, frame),
            }
        }
    }

    // --- workload and faults ---------------------------------------------

    fn write(&mut self, me: u32) {
        if self.healed {
            return;
        }
        let w = &self.scenario.workload;
        let mean = 60.0 * US_PER_S / w.writes_per_device_per_min;
        let (count, ids, shards) = (w.collections.len(), w.ids_per_device, w.shards);
        let next = exponential(&mut self.rng, mean);
        self.push_before_heal(next, Kind::Write { node: me });
        if self.nodes[me as usize].crashed || !self.nodes[me as usize].member {
            return;
        }
        if self.shared_write(me) {
            return;
        }
        let ci = self.rng.gen_range(0..count);
        let k = self.rng.gen_range(0..ids);
        let name = self.scenario.workload.collections[ci].clone();
        let id = format!("d{me}-{k}");
        let _ = shards;
        let node = &mut self.nodes[me as usize];
        node.writes_made += 1;
        let body = json!({ "n": node.writes_made, "pad": self.pad });
        let now_ms = (self.now / 1_000) as i64;
        let put = node.core.put(
            now_ms,
            &mut self.rng,
            &name,
            Some(id),
            body,
            PutMode::Upsert,
        );
        let Ok((written, out)) = put else {
            // Validated scenario names make this unreachable; count it
            // rather than abort the run.
            self.counters.session_errors += 1;
            return;
        };
        self.perform(me, None, out);
        let node = &mut self.nodes[me as usize];
        let generation = check::rev_generation(&written.rev).unwrap_or(0);
        let key = (ci as u16, me, k);
        node.seen.insert(key, (generation, 0));
        let index = self.writes.len() as u32;
        self.writes.push(WriteRecord {
            key,
            account: node.account,
            origin: me,
            rev: written.rev,
            generation,
            at: self.now,
            acked: None,
            lost: false,
            arrivals: 0,
            last_arrival: self.now,
            max_hops: 0,
        });
        self.by_key.entry(key).or_default().push(index);
        node.held.push_back(Held::Ack { write: index });
        self.max_held = self.max_held.max(node.held.len() as u64);
        self.counters.writes += 1;
        self.ensure_fsync(me);
    }

    /// Records that `me` now holds these records, reached from `from`.
    fn arrivals(&mut self, me: u32, from: u32, name: &str, written: &[(String, String)]) {
        let Some(ci) = self
            .scenario
            .workload
            .collections
            .iter()
            .position(|c| c == name)
        else {
            return;
        };
        for w in written {
            let Some((origin, k)) = parse_id(&w.0) else {
                continue;
            };
            let key = (ci as u16, origin, k);
            let generation = check::rev_generation(&w.1).unwrap_or(0);
            let prev = self.nodes[me as usize].seen.get(&key).map_or(0, |s| s.0);
            if generation <= prev {
                continue;
            }
            let hops = self.nodes[from as usize].seen.get(&key).map_or(0, |s| s.1) + 1;
            self.nodes[me as usize].seen.insert(key, (generation, hops));
            // A device that joined later catches up on old writes: that is
            // not propagation, so it stays out of the time-to-converge and
            // rounds figures (the convergence check still covers it).
            if self.nodes[me as usize].removed || self.nodes[me as usize].joiner_of.is_some() {
                continue;
            }
            let Some(list) = self.by_key.get(&key) else {
                continue;
            };
            for &wi in list {
                let rec = &mut self.writes[wi as usize];
                if rec.lost || rec.generation <= prev || rec.generation > generation {
                    continue;
                }
                rec.arrivals += 1;
                rec.last_arrival = self.now;
                rec.max_hops = rec.max_hops.max(hops);
                let h = hops as usize;
                if self.hop_histogram.len() <= h {
                    self.hop_histogram.resize(h + 1, 0);
                }
                self.hop_histogram[h] += 1;
            }
        }
    }

    fn offline(&mut self, me: u32) {
        if self.healed {
            return;
        }
        self.nodes[me as usize].online = false;
        self.close_all(me);
        self.pairing_down(me);
        if let Some(c) = self.scenario.faults.churn {
            let d = sample(&mut self.rng, c.offline_s, US_PER_S);
            self.push(d.max(1), Kind::Online { node: me });
        }
    }

    fn online(&mut self, me: u32) {
        if self.nodes[me as usize].online {
            return;
        }
        self.nodes[me as usize].online = true;
        self.wake(me);
        if let Some(c) = self.scenario.faults.churn
            && !self.healed
        {
            let d = sample(&mut self.rng, c.online_s, US_PER_S);
            self.push_before_heal(d.max(1), Kind::Offline { node: me });
        }
    }

    fn crash(&mut self, me: u32) {
        if self.healed || self.nodes[me as usize].crashed {
            return;
        }
        self.counters.crashes += 1;
        self.close_all(me);
        self.queries_crashed(me);
        self.pairing_down(me);
        let node = &mut self.nodes[me as usize];
        node.crashed = true;
        node.incarnation += 1;
        node.fsync_scheduled = false;
        node.pending.clear();
        for h in std::mem::take(&mut node.held) {
            if let Held::SharedAck { write } = h {
                self.sharing.writes[write as usize].lost = true;
                self.counters.lost_unacked_writes += 1;
            }
            if let Held::Ack { write } = h {
                let rec = &mut self.writes[write as usize];
                rec.lost = true;
                self.counters.lost_unacked_writes += 1;
                if let Some(list) = self.by_key.get_mut(&rec.key) {
                    list.retain(|&w| w != write);
                }
            }
        }
        let d = sample(&mut self.rng, self.scenario.faults.restart_s, US_PER_S);
        self.push(d.max(1), Kind::Restart { node: me });
    }

    /// Reopens the node from its durable disk: a new core over the stored
    /// log and collections, with no sessions.
    fn restart(&mut self, me: u32) {
        let config = self.core.clone();
        let node = &mut self.nodes[me as usize];
        let log = node
            .durable
            .log
            .clone()
            .unwrap_or_else(|| Arc::clone(node.core.log()));
        let key = DeviceKey::from_bytes(&node.core.key().to_bytes());
        let name = node.core.name().to_owned();
        let mut fresh = core::Node::new(key, &name, log, config);
        for (collection, (meta, shards)) in &node.durable.chunks {
            if fresh
                .load(collection, meta.clone(), shards.clone())
                .is_err()
            {
                self.counters.session_errors += 1;
            }
        }
        node.durable.heads.clear();
        for (collection, loaded) in fresh.collections() {
            for shard in 0..loaded.data.shard_count() {
                let heads = loaded.data.shard_heads(shard).unwrap_or_default();
                node.durable
                    .heads
                    .insert((collection.clone(), shard), heads);
            }
        }
        node.admission = fresh.members();
        let before = arrivals_of(&node.core);
        node.arrivals.received += before.received;
        node.arrivals.new += before.new;
        node.core = fresh;
        node.timer = None;
        node.crashed = false;
        self.wake(me);
        let rate = self.scenario.faults.crashes_per_device_per_hour;
        if rate > 0.0 && !self.healed {
            let d = exponential(&mut self.rng, 3_600.0 * US_PER_S / rate);
            self.push_before_heal(d, Kind::Crash { node: me });
        }
    }

    fn partition_start(&mut self, index: usize) {
        let fraction = self.scenario.faults.partitions[index].fraction;
        let side: Vec<bool> = (0..self.nodes.len())
            .map(|_| self.rng.gen_bool(fraction))
            .collect();
        self.partition = Some(side);
        for c in 0..self.conns.len() as u32 {
            if self.conns[c as usize].up && !self.reachable(c) {
                self.close(c);
            }
        }
    }

    fn removal(&mut self) {
        let per = self.scenario.topology.devices_per_account;
        let removals = self.scenario.faults.removals_per_account;
        for account in 0..self.scenario.topology.accounts {
            let author = account * per;
            for i in per - removals..per {
                let victim = self.nodes[(account * per + i) as usize].id;
                let now_ms = self.core_now();
                match self.nodes[author as usize]
                    .core
                    .remove_device(now_ms, victim)
                {
                    Ok(out) => self.perform(author, None, out),
                    Err(_) => self.counters.session_errors += 1,
                }
            }
        }
    }

    fn heal(&mut self) {
        self.healed = true;
        self.partition = None;
        for me in 0..self.nodes.len() as u32 {
            self.nodes[me as usize].online = true;
        }
        self.wake_all();
    }

    // --- the end ----------------------------------------------------------

    fn finish(mut self, quiesced: bool) -> Outcome {
        let federated = self.federated_figures();
        let sharing_verdicts = self.sharing_verdicts();
        let mut members: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut fingerprints = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.removed || !node.member {
                continue;
            }
            members.entry(node.account).or_default().push(i as u32);
            fingerprints.push(fingerprint(i as u32, node));
        }
        let mut acked: Vec<AckedWrite> = self.shared_acked();
        acked.extend(
            self.writes
                .iter()
                .filter(|w| w.acked.is_some() && !self.nodes[w.origin as usize].removed)
                .map(|w| AckedWrite {
                    node: w.origin,
                    account: w.account,
                    collection: self.scenario.workload.collections[usize::from(w.key.0)].clone(),
                    id: format!("d{}-{}", w.key.1, w.key.2),
                    rev: w.rev.clone(),
                }),
        );
        let nodes = &self.nodes;
        let durability = check::durability(&acked, &members, |node, coll, id| {
            nodes[node as usize]
                .core
                .collections()
                .get(coll)
                .and_then(|c| c.data.get(id))
                .and_then(|r| r.get("_rev"))
                .and_then(|r| r.as_str())
                .map(str::to_owned)
        });
        let b = self.scenario.bounds;
        let queues = vec![
            QueueMax {
                queue: "in-flight frames per connection",
                max: self.max_inflight,
                bound: u64::from(b.window_frames),
            },
            QueueMax {
                queue: "outbox frames per node",
                max: self.max_outbox,
                bound: u64::from(b.max_outbox_frames),
            },
            QueueMax {
                queue: "held until fsync per node",
                max: self.max_held,
                bound: u64::from(b.max_held),
            },
        ];
        let mut verdicts = vec![
            check::convergence(&fingerprints),
            durability,
            check::bounds(&queues),
            check::access(&self.violations, self.frames_checked, self.to_non_members),
            check::durable_sends(&self.undurable_sends, self.frames_checked),
        ];
        if !self.joins.is_empty() {
            verdicts.push(self.pairing_verdict());
        }
        verdicts.extend(sharing_verdicts);
        if let Some(f) = &federated {
            verdicts.push(f.verdict());
        }
        let pairing_us = self.pairing_durations();
        if !quiesced {
            verdicts.push(Verdict {
                name: "quiescence",
                passed: false,
                detail: "events were still pending at the quiescence cap".to_owned(),
            });
        }
        let per = self.scenario.topology.devices_per_account;
        let removals = self.scenario.faults.removals_per_account;
        let mut converge_us = Vec::new();
        let mut rounds = Vec::new();
        let mut unconverged = 0;
        for w in &self.writes {
            if w.lost || self.nodes[w.origin as usize].removed {
                continue;
            }
            let expected = per - removals - 1;
            if w.arrivals >= expected {
                converge_us.push(w.last_arrival - w.at);
                rounds.push(w.max_hops);
            } else {
                unconverged += 1;
            }
        }
        converge_us.sort_unstable();
        rounds.sort_unstable();
        Outcome {
            verdicts,
            quiesced,
            end_us: self.now,
            counters: self.counters,
            converge_us,
            unconverged_writes: unconverged,
            rounds,
            hop_histogram: self.hop_histogram,
            replicas_per_document: per - removals,
            frames_per_node: self.nodes.iter().map(|n| n.frames_sent).collect(),
            copies_per_node: self
                .nodes
                .iter()
                .filter_map(|n| {
                    let now = arrivals_of(&n.core);
                    let new = n.arrivals.new + now.new;
                    let received = n.arrivals.received + now.received;
                    (new > 0).then(|| received * 1000 / new)
                })
                .collect(),
            bytes_per_node: self.nodes.iter().map(|n| n.bytes_sent).collect(),
            queues,
            removed_devices: removals * self.scenario.topology.accounts,
            pairing_us,
            sharing: self.sharing_figures,
            answers: self.queries.answers,
            federated,
        }
    }

    /// Whether `to` may receive the data of the share `wire` (its id) from
    /// `from`, by the sender's own list: the owner's devices, and those of
    /// an account the list lets read.
    fn may_receive(&self, from: u32, to: u32, wire: &str) -> bool {
        let sender = &self.nodes[from as usize].core;
        let account = self.nodes[to as usize].core.log().account_id();
        let Some(share) = sender
            .shares()
            .values()
            .find(|s| s.id().to_string() == wire)
        else {
            return false;
        };
        if share.owner() == account {
            return true;
        }
        let owner_log = if sender.log().account_id() == share.owner() {
            Arc::clone(sender.log())
        } else {
            match sender.contacts().get(&share.owner()) {
                Some(c) => Arc::clone(&c.log),
                None => match share.logs.get(&share.owner()) {
                    Some(l) => Arc::clone(l),
                    None => return false,
                },
            }
        };
        share.acl.state(&owner_log).may_read(&account)
    }
}

/// Whether a session ended because the peer sent a change the share gate
/// refused.
fn is_gate_refusal(reason: &CloseReason) -> bool {
    use hearth_crdt::collection::{DecodeError, Error as CollectionError};
    use hearth_crdt::sync::Error as SyncError;
    matches!(
        reason,
        CloseReason::Refused(SyncError::Collection {
            source: CollectionError::Merge {
                source: DecodeError::Refused { .. },
                ..
            },
            ..
        })
    )
}

fn parse_id(id: &str) -> Option<(u32, u32)> {
    let (origin, k) = id.strip_prefix('d')?.split_once('-')?;
    Some((origin.parse().ok()?, k.parse().ok()?))
}

fn fingerprint(index: u32, node: &Node) -> ReplicaFingerprint {
    let mut heads = blake3::Hasher::new();
    let mut records = blake3::Hasher::new();
    for (name, loaded) in node.core.collections() {
        let coll = &loaded.data;
        if coll.is_empty() {
            // An empty collection equals an absent one: a device that
            // never received data may not have created it.
            continue;
        }
        heads.update(name.as_bytes());
        records.update(name.as_bytes());
        for shard in 0..coll.shard_count() {
            let mut h = coll.shard_heads(shard).unwrap_or_default();
            h.sort_unstable();
            heads.update(&shard.to_be_bytes());
            for hash in h {
                heads.update(hash.as_ref());
            }
        }
        let json = serde_json::to_vec(coll.records()).unwrap_or_default();
        records.update(&json);
    }
    ReplicaFingerprint {
        node: index,
        account: node.account,
        heads: *heads.finalize().as_bytes(),
        records: *records.finalize().as_bytes(),
    }
}

/// The links of one account of `n` devices: every pair ("full"), or a
/// random overlay where every device has about `degree` neighbours
/// (configuration model, self-loops and repeats dropped), joined into one
/// connected graph.
fn overlay(rng: &mut StdRng, n: u32, degree: Option<u32>) -> BTreeSet<(u32, u32)> {
    let mut edges = BTreeSet::new();
    let Some(k) = degree else {
        for a in 0..n {
            for b in a + 1..n {
                edges.insert((a, b));
            }
        }
        return edges;
    };
    let mut stubs: Vec<u32> = (0..n)
        .flat_map(|v| std::iter::repeat_n(v, k as usize))
        .collect();
    // Fisher–Yates with the seeded RNG.
    for i in (1..stubs.len()).rev() {
        let j = rng.gen_range(0..=i);
        stubs.swap(i, j);
    }
    for pair in stubs.chunks_exact(2) {
        let (a, b) = (pair[0].min(pair[1]), pair[0].max(pair[1]));
        if a != b {
            edges.insert((a, b));
        }
    }
    // Join components: link each component's lowest device to device 0's.
    let mut parent: Vec<u32> = (0..n).collect();
    fn root(p: &mut [u32], mut x: u32) -> u32 {
        while p[x as usize] != x {
            p[x as usize] = p[p[x as usize] as usize];
            x = p[x as usize];
        }
        x
    }
    for &(a, b) in &edges {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        if ra != rb {
            parent[ra.max(rb) as usize] = ra.min(rb);
        }
    }
    for v in 1..n {
        let (r0, rv) = (root(&mut parent, 0), root(&mut parent, v));
        if r0 != rv {
            edges.insert((0, v));
            parent[rv as usize] = r0;
        }
    }
    edges
}

/// The hop count the write-to-all-replicas flood needs in theory: log₃ N.
pub fn log3(n: u32) -> f64 {
    f64::from(n.max(1)).ln() / 3f64.ln()
}

/// The heads a sync message of `sender` announces for `shard` that are not
/// in the causal past of what its disk holds, if any.
fn undurable_heads(
    sender: &Node,
    collection: &str,
    shard: ShardIndex,
    message: &[u8],
) -> Option<Vec<ChangeHash>> {
    let message = automerge::sync::Message::decode(message).ok()?;
    if message.heads.is_empty() {
        return None;
    }
    let durable = sender
        .durable
        .heads
        .get(&(collection.to_owned(), shard))
        .map_or(&[][..], Vec::as_slice);
    let loaded = sender.core.collections().get(collection)?;
    let newer = loaded.data.shard_changes_since(shard, durable).ok()?;
    let undurable: Vec<ChangeHash> = message
        .heads
        .iter()
        .filter(|h| newer.contains(h))
        .copied()
        .collect();
    (!undurable.is_empty()).then_some(undurable)
}

/// Peers' changes that reached `core`'s collections since it started.
fn arrivals_of(core: &core::Node) -> Arrivals {
    core.collections()
        .values()
        .map(|loaded| loaded.data.arrivals())
        .fold(Arrivals::default(), |sum, a| Arrivals {
            received: sum.received + a.received,
            new: sum.new + a.new,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_is_connected_and_near_the_degree() {
        let mut rng = StdRng::seed_from_u64(7);
        let edges = overlay(&mut rng, 500, Some(4));
        let mut deg = vec![0u32; 500];
        for &(a, b) in &edges {
            assert!(a < b);
            deg[a as usize] += 1;
            deg[b as usize] += 1;
        }
        let mean = f64::from(deg.iter().sum::<u32>()) / 500.0;
        assert!((3.8..=4.1).contains(&mean), "mean degree {mean}");
        assert!(deg.iter().all(|&d| d > 0));
        assert_eq!(overlay(&mut rng, 4, None).len(), 6);
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(parse_id("d12-3"), Some((12, 3)));
        assert_eq!(parse_id("x12-3"), None);
        assert_eq!(parse_id("d-3"), None);
    }
}
