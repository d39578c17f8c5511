//! The node's logic as one sans-IO state machine: the same code runs under
//! the `hearth` daemon (redb and libp2p) and under `hearth-sim` (a virtual
//! disk and network).
//!
//! A [`Node`] owns one device's replica (its collections, their indexes and
//! catalog entries, the account's membership log) and one sync
//! [`Session`](crate::sync::Session) per connected peer. It touches no disk,
//! socket, clock or ambient randomness: the time and the RNG come in with
//! every call, and everything the node wants done comes out as
//! [`Outputs`], an ordered list of [`Output`]s.
//!
//! ```text
//!   commands (put, delete, invite, admit, …) ────────┐
//!   Input::Opened / Frame / Closed ──────────────────┤
//!   Input::Reachable / Connected / Tick ─────────────┤
//!   share_request / share_reply (contact cards) ─────┤
//!   query / query_request / query_reply ─────────────┼─▶ Node ─▶ Outputs: [Persist(batch), Send, Close,
//!   now, rng ────────────────────────────────────────┘                    MembersChanged, Dial, Timer,
//!                                                                         Deliver, Query, Answered]
//! ```
//!
//! - [`data`]: the data commands and their rules: doctype names, record ids,
//!   `_rev` checks (in [`Collection`]), record size limits, indexes, and the
//!   changes feed, where every changed record gets its own sequence number.
//! - [`mesh`]: sync sessions, forwarding what one peer sent to the others,
//!   and membership changes (pairing's admission, removal, merged logs).
//! - [`pairing`]: the rules of a new invitation and the inviting device's
//!   flow, which the node holds ([`Node::inviting`], [`Node::admit`]).
//! - [`redial`]: the one redial and backoff policy of the mesh; the node
//!   applies it to its members (`links`): whom to dial, and when
//!   ([`Output::Dial`], [`Output::Timer`], [`Input::Tick`]).
//! - [`contacts`]: other accounts added from their contact cards, the
//!   request-and-acceptance exchange over `/hearth/share/1`
//!   ([`Output::Deliver`], [`Node::share_request`], [`Node::share_reply`]),
//!   kept in the reserved collection `hearth.contacts` so every device of
//!   the account knows them; their devices go to the driver's admission
//!   gate with the members ([`Members::contacts`]).
//! - [`queries`]: federated queries over `/hearth/query/1`: the querier's
//!   coordinator ([`Node::query`], [`Output::Query`], [`Node::query_reply`],
//!   [`Output::Answered`]) and the answering side ([`Node::query_request`]),
//!   with consent, the ε ledger and the audit log kept in reserved
//!   collections.
//! - [`catalog`]: the per-collection entry a store keeps beside the chunks.
//!
//! # What the driver must do
//!
//! Perform the outputs **in order**. An [`Output::Persist`] is a barrier:
//! its [`Batch`] must be durable (committed, fsynced) before any output after
//! it is performed, and before the command that produced it is answered. So
//! a reply, a frame to a peer or a forwarded change never reveals state a
//! crash could lose. The daemon's engine thread commits each batch in one
//! redb transaction and then carries on; the simulator holds what follows a
//! batch until its virtual disk syncs.
//!
//! There is no "storage completed" input: the barrier stands in for it. The
//! node never needs to hear that a batch landed, because nothing it decides
//! depends on that; only what the driver does next does. A driver with
//! asynchronous storage (the simulator's disk) holds the outputs after a
//! batch until it syncs, which is the same order.
//!
//! If a batch cannot be made durable, the driver stops performing that
//! call's outputs, calls [`Node::reload`] with what the store holds for the
//! collections named in the batch, and closes every session
//! ([`Node::close_all`]): peers resync from what is durable.
//!
//! [`Output::Dial`] and [`Output::Timer`] need no barrier of their own: the
//! driver carries out a dial when it can (one that fails needs no report;
//! the node tries again when its backoff is due) and delivers
//! [`Input::Tick`] at or after the latest timer. It tells the node what its
//! network learnt: [`Input::Reachable`] for a new address of a device,
//! [`Input::Connected`] for a connection either side made. An
//! [`Output::Deliver`] is one request to a contact's device; its reply (or
//! its failure) goes back through [`Node::share_reply`], and a request that
//! arrives is answered with what [`Node::share_request`] returns, after its
//! batch. [`Output::Query`] and [`Node::query_request`] are the same on
//! `/hearth/query/1`, except that several may be in flight to one device,
//! so each carries an exchange number back to [`Node::query_reply`].
//!
//! Sessions are numbered by the driver ([`SessionId`]), so a frame or close
//! from a replaced stream never reaches its successor. A driver that cannot
//! deliver a [`Output::Send`] (the peer's outbox is full, the stream is gone)
//! reports it with [`Input::Closed`].
//!
//! # Example
//!
//! Two devices of one account, driven by hand: each output is performed in
//! order, a batch "persisted" by keeping it, and a write on the laptop
//! reaches the phone.
//!
//! ```
//! use std::collections::VecDeque;
//! use hearth_crdt::collection::PutMode;
//! use hearth_crdt::node::{Batch, Config, Input, Node, Output, Outputs, SessionId};
//! use hearth_crypto::identity::DeviceKey;
//! use hearth_crypto::membership::Log;
//! use rand_core::OsRng;
//! use serde_json::json;
//!
//! let laptop_key = DeviceKey::from_bytes(&[1; 32]);
//! let phone_key = DeviceKey::from_bytes(&[2; 32]);
//! let (laptop_id, phone_id) = (laptop_key.id(), phone_key.id());
//! let mut log = Log::genesis(&laptop_key, "laptop", 0);
//! log.add_device(&laptop_key, phone_id, "phone", 1)?;
//! let mut nodes = [
//!     Node::new(laptop_key, "laptop", log.clone(), Config::default()),
//!     Node::new(phone_key, "phone", log, Config::default()),
//! ];
//! let mut disks: [Vec<Batch>; 2] = [Vec::new(), Vec::new()];
//! // One stream between them: session 0 on the laptop, 1 on the phone.
//! let mut wire: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
//! let mut perform = |at: usize, out: Outputs, wire: &mut VecDeque<(usize, Vec<u8>)>| {
//!     for output in out.items {
//!         match output {
//!             Output::Persist(batch) => disks[at].push(batch), // durable first
//!             Output::Send { frame, .. } => wire.push_back((1 - at, frame)),
//!             other => panic!("unexpected {other:?}"),
//!         }
//!     }
//! };
//! let opened = nodes[0].handle(0, &mut OsRng,
//!     Input::Opened { session: SessionId(0), peer: phone_id, states: vec![] });
//! perform(0, opened, &mut wire);
//! let opened = nodes[1].handle(0, &mut OsRng,
//!     Input::Opened { session: SessionId(1), peer: laptop_id, states: vec![] });
//! perform(1, opened, &mut wire);
//!
//! let (_, out) = nodes[0].put(10, &mut OsRng, "io.cozy.notes", Some("n1".into()),
//!     json!({ "title": "hello" }), PutMode::Create)?;
//! assert!(matches!(out.items[0], Output::Persist(_)));
//! perform(0, out, &mut wire);
//!
//! while let Some((to, frame)) = wire.pop_front() {
//!     let session = SessionId(to as u64);
//!     let out = nodes[to].handle(20, &mut OsRng, Input::Frame { session, frame });
//!     perform(to, out, &mut wire);
//! }
//! assert_eq!(nodes[1].get("io.cozy.notes", "n1")?["title"], "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use hearth_crypto::identity::{DeviceId, DeviceKey};
use hearth_crypto::membership::{self, Log};

use crate::collection::{self, Collection, ShardIndex};
use crate::query::{self, Indexes};
use crate::sync;

pub mod catalog;
pub mod contacts;
pub mod data;
mod links;
pub mod mesh;
pub mod pairing;
pub mod queries;
pub mod redial;
pub mod shares;

pub use catalog::{Catalog, IndexDef};
pub use contacts::{Contact, ContactError};
pub use data::{BulkError, Change, check_doctype};
pub use mesh::{CloseReason, Members};
pub use queries::QueryError;
pub use shares::{Share, ShareError};

/// Milliseconds since the Unix epoch: the only notion of time the core has.
pub type Millis = i64;

/// Numbers one sync stream; chosen by the driver, unique among the streams
/// it ever opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// The rules a node applies; every field is a documented config field of
/// the daemon (`[engine]` in `hearth.toml`) and a scenario setting of the
/// simulator.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Automerge documents a new collection is sharded across. Default 16.
    pub shards: u16,
    /// Largest single record, in bytes of JSON. Default 1 MiB.
    pub max_record_bytes: usize,
    /// Incremental chunks a shard keeps before they are compacted into one
    /// snapshot. Default 128.
    pub compact_after_chunks: u32,
    /// Incremental bytes a shard may gather before it is compacted, when
    /// they are more than its last snapshot. Default 64 KiB.
    pub compact_min_bytes: u64,
    /// Frame and inflate bounds of every sync session.
    pub limits: sync::Limits,
    /// When members are dialled again (`[net]` backoff fields).
    pub backoff: redial::Backoff,
    /// Bounds on contacts and their requests (`[contacts]`).
    pub contacts: contacts::Limits,
    /// Bounds on federated queries (`[queries]`).
    pub queries: queries::Limits,
    /// Test builds only: a deliberately wrong order of outputs, to prove
    /// that the simulator's checkers catch it.
    #[cfg(feature = "planted-bugs")]
    pub planted: Option<PlantedBug>,
}

/// A bug the core can be told to have, so that a test can show a checker
/// catches it (see the simulator's tests).
#[cfg(feature = "planted-bugs")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// Answer a peer's frame before persisting what it changed.
    SendBeforePersist,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            shards: 16,
            max_record_bytes: 1024 * 1024,
            compact_after_chunks: 128,
            compact_min_bytes: 64 * 1024,
            limits: sync::Limits::default(),
            backoff: redial::Backoff::default(),
            contacts: contacts::Limits::default(),
            queries: queries::Limits::default(),
            #[cfg(feature = "planted-bugs")]
            planted: None,
        }
    }
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No record with this id.
    #[error("no record {id:?} in {doctype}")]
    NotFound {
        /// The collection.
        doctype: String,
        /// The id asked for.
        id: String,
    },
    /// No collection of this name exists.
    #[error("no collection {0:?}: nothing was ever written to it")]
    NoCollection(String),
    /// The collection name is not a valid doctype.
    #[error(
        "bad collection name {0:?}: use 1-128 characters from a-z, 0-9, '.', '-' and '_', starting with a letter or digit"
    )]
    BadDoctype(String),
    /// The record could not be written (conflict, bad shape).
    #[error(transparent)]
    Record(#[from] collection::Error),
    /// The query could not be parsed or run.
    #[error(transparent)]
    Query(#[from] query::Error),
    /// A record is larger than [`Config::max_record_bytes`].
    #[error("record {id:?} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The record id.
        id: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An index of this name exists on other fields.
    #[error("an index named {name:?} already exists on fields {fields:?}")]
    IndexExists {
        /// The name.
        name: String,
        /// Its fields.
        fields: Vec<String>,
    },
    /// The collection already has the most indexes allowed.
    #[error("{doctype} already has {limit} indexes, the most a collection may have")]
    TooManyIndexes {
        /// The collection.
        doctype: String,
        /// The limit.
        limit: usize,
    },
    /// The membership log refused a change.
    #[error(transparent)]
    Membership(#[from] membership::Error),
    /// The device is not a member of this account.
    #[error("device {0} is not a member of this account")]
    NotAMember(DeviceId),
    /// A device cannot remove itself here.
    #[error(
        "a device cannot remove itself; run `hearth devices remove` on another device of the account"
    )]
    RemoveSelf,
    /// Joining an account needs a device without data of its own.
    #[error(
        "this device already holds data or other devices; join another account only from a fresh home"
    )]
    NotEmpty,
    /// An invitation could not be made.
    #[error(transparent)]
    Invite(#[from] pairing::Error),
    /// A step of the inviting flow failed.
    #[error(transparent)]
    Pairing(#[from] pairing::SessionError),
    /// A contact operation failed.
    #[error(transparent)]
    Contact(#[from] ContactError),
    /// A share operation failed.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// A federated query or consent operation failed.
    #[error(transparent)]
    Queries(#[from] QueryError),
    /// The collection is the node's own (`hearth.*`): read-only to users
    /// and apps.
    #[error(
        "{0} is kept by hearth itself and cannot be written directly; use the hearth commands that manage it"
    )]
    Reserved(String),
    /// A stored collection does not load.
    #[error("collection {collection} does not load: {reason}")]
    Damaged {
        /// The collection.
        collection: String,
        /// Why.
        reason: String,
    },
}

/// Something that happened to the node that its driver acts on.
#[derive(Debug)]
pub enum Input {
    /// A sync stream with a member opened. `states` are the sync states the
    /// store holds for this peer (the [`Write::SyncState`]s of earlier
    /// sessions).
    Opened {
        /// The driver's number for the stream.
        session: SessionId,
        /// The peer, as the transport authenticated it.
        peer: DeviceId,
        /// Persisted sync states: (collection, shard, bytes).
        states: Vec<(String, ShardIndex, Vec<u8>)>,
    },
    /// A frame arrived on a stream, already bounded by the transport.
    Frame {
        /// The stream.
        session: SessionId,
        /// The frame.
        frame: Vec<u8>,
    },
    /// A stream ended, or the driver could not deliver to it.
    Closed {
        /// The stream.
        session: SessionId,
    },
    /// The driver knows a way to this device now (an address was learnt, a
    /// lookup can find it): a member without a session is dialled at once.
    Reachable {
        /// The device.
        peer: DeviceId,
    },
    /// The transport connected to this device (either side dialled).
    Connected {
        /// The device.
        peer: DeviceId,
    },
    /// The timer of the last [`Output::Timer`] fired.
    Tick,
}

/// One thing the driver must do. See the [module docs](self) for the order.
#[derive(Debug)]
pub enum Output {
    /// Make these writes durable, in one transaction, before anything after.
    Persist(Batch),
    /// Send a frame on a stream.
    Send {
        /// The stream.
        session: SessionId,
        /// The frame.
        frame: Vec<u8>,
    },
    /// End a stream.
    Close {
        /// The stream.
        session: SessionId,
        /// The peer.
        peer: DeviceId,
        /// Why.
        reason: CloseReason,
    },
    /// The account's member set changed: admit by the new one.
    MembersChanged(Members),
    /// Get a sync session with this member: connect to it and, when
    /// `open_stream`, open the sync stream (the device with the smaller id
    /// does; the other waits for it). A dial that fails needs no report:
    /// the node tries again when its backoff is due.
    Dial {
        /// The member.
        peer: DeviceId,
        /// Whether this side opens the stream.
        open_stream: bool,
    },
    /// Send one `/hearth/share/1` request to `peer` (a contact's device),
    /// dialling it at `addrs` if need be, and bring back its answer with
    /// [`Node::share_reply`] (or `None` when it could not be delivered).
    Deliver {
        /// The device.
        peer: DeviceId,
        /// Where its account's card says it listens.
        addrs: Vec<String>,
        /// The request.
        frame: Vec<u8>,
    },
    /// Send one `/hearth/query/1` request to `peer` (one of our devices or a
    /// contact's), dialling it at `addrs` if need be, and bring back its
    /// answer with [`Node::query_reply`] under `exchange` (or `None` when it
    /// could not be delivered within `timeout_ms`).
    Query {
        /// The driver hands this back with the reply.
        exchange: u64,
        /// The device.
        peer: DeviceId,
        /// Where its account's card says it listens (empty for our own).
        addrs: Vec<String>,
        /// The request.
        frame: Vec<u8>,
        /// How long to wait for the reply.
        timeout_ms: Millis,
    },
    /// A query started with [`Node::query`] has its result.
    Answered {
        /// The query's id.
        query: String,
        /// The result (see [`queries`]).
        result: serde_json::Value,
    },
    /// Deliver [`Input::Tick`] at or after `at`; replaces any earlier timer.
    Timer {
        /// When, in the node's time.
        at: Millis,
    },
}

/// What one call asks of its driver, in order.
#[derive(Debug, Default)]
pub struct Outputs {
    /// The outputs.
    pub items: Vec<Output>,
}

impl Outputs {
    fn push(&mut self, output: Output) {
        self.items.push(output);
    }

    fn persist(&mut self, batch: Batch) {
        if !batch.writes.is_empty() {
            self.items.push(Output::Persist(batch));
        }
    }

    /// Appends `other`'s outputs after these.
    pub fn extend(&mut self, other: Outputs) {
        self.items.extend(other.items);
    }
}

/// Writes that must become durable together.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// The writes, in order.
    pub writes: Vec<Write>,
}

/// One write to the store.
#[derive(Debug, Clone)]
pub enum Write {
    /// A collection's catalog entry, replacing the old one.
    Catalog {
        /// The collection.
        collection: String,
        /// The entry.
        entry: Catalog,
    },
    /// Append a chunk to a shard's list.
    Chunk {
        /// The collection.
        collection: String,
        /// The shard.
        shard: ShardIndex,
        /// Its number in the shard's list ([`Catalog::next_chunk`]).
        seq: u64,
        /// Automerge bytes.
        bytes: Vec<u8>,
    },
    /// Replace every chunk of a shard with this one (a compacted save).
    Compacted {
        /// The collection.
        collection: String,
        /// The shard.
        shard: ShardIndex,
        /// Its number in the shard's list.
        seq: u64,
        /// Automerge bytes of the whole shard.
        bytes: Vec<u8>,
    },
    /// One entry of a collection's changes feed.
    Change {
        /// The collection.
        collection: String,
        /// The entry.
        change: Change,
    },
    /// The sync state of one shard with one peer.
    SyncState {
        /// The peer.
        peer: DeviceId,
        /// The collection.
        collection: String,
        /// The shard.
        shard: ShardIndex,
        /// The encoded state.
        bytes: Vec<u8>,
    },
    /// The account's membership log, replacing the stored one.
    Membership(Arc<Log>),
    /// When a session with a peer last ended.
    PeerSeen {
        /// The peer.
        peer: DeviceId,
        /// When.
        at_ms: Millis,
    },
}

/// A collection as a store holds it: its catalog entry and, per shard, its
/// chunks in order.
pub type Stored = (Catalog, Vec<Vec<Vec<u8>>>);

/// One loaded collection.
#[derive(Debug)]
pub struct Loaded {
    /// The records and their Automerge shards.
    pub data: Collection,
    /// Its indexes.
    pub indexes: Indexes,
    /// Its catalog entry as last persisted (or about to be).
    pub meta: Catalog,
}

/// One device's node. See the [module docs](self).
#[derive(Debug)]
pub struct Node {
    key: Arc<DeviceKey>,
    name: String,
    log: Arc<Log>,
    collections: BTreeMap<String, Loaded>,
    sessions: BTreeMap<DeviceId, mesh::Peer>,
    published: Members,
    inviting: pairing::Inviting,
    links: links::Links,
    contacts: contacts::Contacts,
    shares: shares::Shares,
    queries: queries::Queries,
    config: Config,
}

impl Node {
    /// A node with no collections, for the device `key` named `name` in the
    /// account of `log`. Load stored collections with [`Node::load`].
    pub fn new(key: DeviceKey, name: &str, log: impl Into<Arc<Log>>, mut config: Config) -> Node {
        // One record limit for local writes and peers' merges alike.
        config.limits.max_record = config.max_record_bytes;
        let log = log.into();
        let published = Members::of(key.id(), &log);
        Node {
            key: Arc::new(key),
            name: name.to_owned(),
            log,
            collections: BTreeMap::new(),
            sessions: BTreeMap::new(),
            published,
            inviting: pairing::Inviting::default(),
            links: links::Links::new(config.backoff),
            contacts: contacts::Contacts::default(),
            shares: shares::Shares::default(),
            queries: queries::Queries::default(),
            config,
        }
    }

    /// Loads a stored collection (its catalog entry and, per shard, its
    /// chunks in order), replacing any loaded one of that name.
    pub fn load(
        &mut self,
        name: &str,
        meta: Catalog,
        shards: Vec<Vec<Vec<u8>>>,
    ) -> Result<(), Error> {
        let damaged = |reason: String| Error::Damaged {
            collection: name.to_owned(),
            reason,
        };
        if !meta.is_consistent() || shards.len() != usize::from(meta.shards) {
            return Err(damaged(
                "its catalog entry does not match its shards".to_owned(),
            ));
        }
        let data = Collection::load(name, self.actor(), shards)?;
        let mut indexes = Indexes::default();
        for def in &meta.indexes {
            let mut index = query::Index::new(&def.name, def.fields.clone())?;
            index.rebuild(data.records());
            indexes.define(index);
        }
        self.collections.insert(
            name.to_owned(),
            Loaded {
                data,
                indexes,
                meta,
            },
        );
        if name == contacts::COLLECTION {
            let ids: Vec<String> = self.collections[name]
                .data
                .records()
                .keys()
                .cloned()
                .collect();
            self.refresh_contacts(0, ids.iter().map(String::as_str), &mut Outputs::default());
        }
        // Shares verify against their owners' logs: read them again once
        // the contacts are known, whichever loads first.
        if name == contacts::COLLECTION || name == shares::COLLECTION {
            let ids: Vec<String> = self
                .collections
                .get(shares::COLLECTION)
                .map(|l| l.data.records().keys().cloned().collect())
                .unwrap_or_default();
            self.read_shares(ids.iter().map(String::as_str));
            // Share peers are admitted from the start: the driver begins
            // from `members()`, and the links dial by the same set.
            self.published = self.members();
        }
        // A local collection of a share, whichever loads first, writes
        // under its list's heads and signs what it writes.
        if name == shares::COLLECTION || self.share_of(name).is_some() {
            self.set_notes();
        }
        self.resume_deliveries();
        Ok(())
    }

    /// After a batch failed to persist: replaces the named collections with
    /// what the store holds (`None`: the store has none) and the log with
    /// the stored one. See the [module docs](self).
    pub fn reload(
        &mut self,
        collections: Vec<(String, Option<Stored>)>,
        log: Log,
    ) -> Result<(), Error> {
        self.log = Arc::new(log);
        for (name, stored) in collections {
            self.collections.remove(&name);
            if let Some((meta, shards)) = stored {
                self.load(&name, meta, shards)?;
            }
        }
        Ok(())
    }

    /// Handles one event from the network side. See [`mesh`] and `links`.
    pub fn handle(
        &mut self,
        now: Millis,
        rng: &mut impl rand_core::RngCore,
        input: Input,
    ) -> Outputs {
        let mut out = Outputs::default();
        match input {
            Input::Opened {
                session,
                peer,
                states,
            } => self.open_session(now, session, peer, states, &mut out),
            Input::Frame { session, frame } => self.session_frame(now, session, &frame, &mut out),
            Input::Closed { session } => {
                if let Some(peer) = self.peer_of_session(session) {
                    self.close_session(now, peer, CloseReason::StreamEnded, &mut out);
                }
            }
            Input::Reachable { peer } => self.link_reachable(peer),
            Input::Connected { peer } => self.link_connected(peer),
            Input::Tick => {
                self.link_tick(now, rng, &mut out);
                self.contacts_tick(now, &mut out);
                self.queries_tick(now, &mut out);
            }
        }
        self.schedule_links(now, rng, &mut out);
        out
    }

    /// This device's key.
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    /// This device's id.
    pub fn id(&self) -> DeviceId {
        self.key.id()
    }

    /// This device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The account's membership log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The rules in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every loaded collection, by name.
    pub fn collections(&self) -> &BTreeMap<String, Loaded> {
        &self.collections
    }

    fn actor(&self) -> automerge::ActorId {
        automerge::ActorId::from(self.key.id().as_bytes().as_slice())
    }
}
