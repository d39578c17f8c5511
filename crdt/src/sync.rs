//! The sans-IO sync core of the mesh: two devices of one account bring every
//! collection and the membership log to the same state over `/hearth/sync/1`.
//!
//! A node runs one [`Session`] per connected peer. The session owns no socket
//! and no clock: the caller hands it every inbound frame
//! ([`Session::receive`]) and sends, persists and publishes what comes back
//! in [`Effects`]. The node's engine and the simulator drive the same code.
//! The node's data is reached through the [`Replica`] trait;
//! [`MemoryReplica`] is an in-memory implementation for tests and the
//! simulator.
//!
//! # Frames
//!
//! Every frame is a version byte ([`FRAME_VERSION`]) followed by a postcard
//! [`Frame`]. Decoding refuses a frame longer than [`Limits::max_frame`]
//! before reading it, bounds every count while decoding, refuses trailing
//! bytes and never panics.
//!
//! - [`Frame::Hello`], sent once by each side at the start: a digest of the
//!   membership log's heads, and for every collection its name, shard count
//!   and one 8-byte [`collection_digest`] (BLAKE3 over every shard's
//!   [`Collection::shard_digest`], itself 8 bytes of BLAKE3 over the shard's
//!   heads). About 25 bytes per collection.
//! - [`Frame::Shards`]: every shard digest of one collection, sent by both
//!   sides when their collection digests differ.
//! - [`Frame::Log`]: a whole encoded membership log.
//! - [`Frame::Sync`]: an Automerge sync message for one shard of one
//!   collection, with the sender's shard count.
//!
//! # The Hello fast path
//!
//! Each side compares the peer's Hello with its own current state and only
//! works on what differs:
//!
//! - log digests differ: send our [`Frame::Log`];
//! - collection digests match: nothing is sent; the session records that the
//!   peer has exactly our heads in every shard, so a later local write is
//!   pushed at once;
//! - collection digests differ: send our [`Frame::Shards`]; on the peer's,
//!   compare shard by shard with the rules below (half a round trip more,
//!   only for collections that differ);
//! - a shard's digests match: as for a whole collection;
//! - a shard differs (or the peer lacks the collection): run Automerge's sync
//!   protocol for that shard, from the sync state persisted by the previous
//!   session; a side that lacks the collection creates it, with the peer's
//!   shard count, when the first frame about it arrives.
//!
//! So a reconnect between devices that are in sync is one Hello each way and
//! nothing else. Nothing is preset from a Hello beyond "in sync": a Hello or
//! a `Shards` frame may be stale by the time it is read (the peer may have
//! heard from a third device since), and presetting "the peer holds nothing"
//! from one lost changes in the interleaving proptest. A new device
//! therefore gets each shard in two flights (Automerge's opening message,
//! then the changes) rather than one.
//!
//! Sync messages are applied without letting Automerge inflate unbounded
//! data: their changes go through [`Collection::sync_receive`], which checks
//! the inflated size of compressed chunks and columns against
//! [`Limits::max_inflated`] and merges all-or-nothing, panic-guarded, before
//! Automerge sees the rest of the message.
//!
//! # Membership
//!
//! The peer must be a member of [`Replica::membership`] on every frame, so a
//! removal applied while the session is open (through any session or
//! locally) ends it at its next frame. One exception lets a device that was
//! added elsewhere join: a non-member's Hello whose log digest differs from
//! ours is held back (nothing is sent to it) until its [`Frame::Log`] arrives;
//! if the merged log makes it a member the Hello is then processed, otherwise
//! the session ends. A received log is merged only if every entry verifies
//! and belongs to our account; we answer with our own log only when the
//! received one lacks entries we have not already sent, so logs never
//! ping-pong.
//!
//! # What the caller must do
//!
//! An [`Error`] from [`Session::receive`] means: close this session (the peer
//! may reconnect and start over). On success, **persist before sending**:
//! store the chunks the merge produced (`Collection::take_chunks` of every
//! collection in [`Effects::merged`], [`Effects::changed`] and
//! [`Effects::created`]), the membership log when
//! [`Effects::membership_changed`], and [`Effects::states`], durably, and
//! only then send [`Effects::send`] in order. A reply acknowledges what was
//! received; acknowledging data a crash could lose would make the peer skip
//! it on the next session. After a local write, or after a merge changed
//! shards (see [`Effects::changed`]), call [`Session::local_change`] on every
//! other session so changes travel on through the mesh.
//!
//! # Example
//!
//! ```
//! use automerge::ActorId;
//! use hearth_crdt::collection::{Collection, PutMode};
//! use hearth_crdt::sync::{Limits, MemoryReplica, Replica, Session};
//! use hearth_crypto::identity::DeviceKey;
//! use hearth_crypto::membership::Log;
//! use serde_json::json;
//!
//! let (laptop_key, phone_key) = (DeviceKey::from_bytes(&[1; 32]), DeviceKey::from_bytes(&[2; 32]));
//! let mut log = Log::genesis(&laptop_key, "laptop", 0);
//! log.add_device(&laptop_key, phone_key.id(), "phone", 1)?;
//!
//! let mut laptop = MemoryReplica::new(ActorId::from([1u8; 16]), log.clone());
//! let mut notes = Collection::new("io.cozy.notes", 4, ActorId::from([1u8; 16]))?;
//! notes.put("n1", json!({"title": "hello"}), PutMode::Create, 0)?;
//! laptop.insert(notes);
//! let mut phone = MemoryReplica::new(ActorId::from([2u8; 16]), log);
//!
//! // One session on each side; frames travel by hand here.
//! let mut at_laptop = Session::new(phone_key.id(), [], Limits::default());
//! let mut at_phone = Session::new(laptop_key.id(), [], Limits::default());
//! let mut to_phone = at_laptop.start(&laptop)?;
//! let mut to_laptop = at_phone.start(&phone)?;
//! while !to_phone.is_empty() || !to_laptop.is_empty() {
//!     for frame in std::mem::take(&mut to_phone) {
//!         to_laptop.extend(at_phone.receive(&mut phone, &frame)?.send);
//!     }
//!     for frame in std::mem::take(&mut to_laptop) {
//!         to_phone.extend(at_laptop.receive(&mut laptop, &frame)?.send);
//!     }
//! }
//! let synced = phone.collection("io.cozy.notes").unwrap();
//! assert_eq!(synced.get("n1").unwrap()["title"], "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::sync::{Capability, Have, Message, ReadMessageError, State};
use automerge::{ActorId, ChangeHash};
use hearth_crypto::identity::DeviceId;
use hearth_crypto::membership::{self, EntryHash, Log};

use crate::collection::{
    self, Authorship, Collection, EMPTY_SHARD_DIGEST, ShardDigest, ShardIndex, Written,
};

mod frame;

pub use frame::{
    FRAME_VERSION, Frame, Hello, MAX_AUTHORSHIPS, MAX_COLLECTIONS, Summary, collection_digest,
};

/// Default [`Limits::max_frame`]: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Default [`Limits::max_inflated`]: 64 MiB.
pub const DEFAULT_MAX_INFLATED: usize = 64 * 1024 * 1024;

/// Default [`Limits::max_record`]: 1 MiB, the node's default record limit.
pub const DEFAULT_MAX_RECORD: usize = 1024 * 1024;

/// Size bounds a session enforces on what a peer sends, and on what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest frame, in bytes, either way. A shard whose sync message would
    /// exceed it cannot be sent whole; raise it or use more shards.
    pub max_frame: usize,
    /// Most bytes the compressed parts of one sync message may inflate to.
    pub max_inflated: usize,
    /// Largest record, in bytes of JSON, a peer's changes may leave behind;
    /// a message that would make one larger is refused whole, as a local
    /// write over the limit is.
    pub max_record: usize,
    /// Most sync messages a session holds back because their changes name
    /// an access list state it does not know yet (each at most a frame);
    /// one more closes the session.
    pub max_waiting: usize,
}

/// Default [`Limits::max_waiting`].
pub const DEFAULT_MAX_WAITING: usize = 16;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            max_inflated: DEFAULT_MAX_INFLATED,
            max_record: DEFAULT_MAX_RECORD,
            max_waiting: DEFAULT_MAX_WAITING,
        }
    }
}

/// Why a session must close.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A frame longer than [`Limits::max_frame`], received or about to be sent.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An empty frame.
    #[error("empty frame")]
    EmptyFrame,
    /// A frame of a protocol version this build does not speak.
    #[error("unsupported sync frame version {version}")]
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
    /// Bytes follow the frame.
    #[error("{len} unexpected bytes after the frame")]
    TrailingBytes {
        /// How many.
        len: usize,
    },
    /// The frame is not a well-formed encoding (or a count exceeds its bound).
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// A Hello whose collections are not sorted and unique.
    #[error("hello lists collections out of order or twice")]
    UnsortedCollections,
    /// A collection name that is empty or too long.
    #[error(
        "collection name of {len} bytes: expected 1 to {} bytes",
        collection::MAX_DOCTYPE_BYTES
    )]
    BadCollectionName {
        /// The name's length.
        len: usize,
    },
    /// A shard count of 0 or above [`collection::MAX_SHARDS`].
    #[error("collection {collection:?} claims {shards} shards")]
    BadShardCount {
        /// The collection.
        collection: String,
        /// The claimed count.
        shards: u16,
    },
    /// A Hello summary whose digest count differs from its shard count.
    #[error("collection {collection:?} has {shards} shards but {digests} digests")]
    DigestCount {
        /// The collection.
        collection: String,
        /// The shard count.
        shards: u16,
        /// The number of digests.
        digests: usize,
    },
    /// A shard index at or above the shard count.
    #[error("collection {collection:?} has no shard {shard} (it has {shards})")]
    NoSuchShard {
        /// The collection.
        collection: String,
        /// The index.
        shard: ShardIndex,
        /// The shard count.
        shards: u16,
    },
    /// Our Hello would list more than [`MAX_COLLECTIONS`] collections.
    #[error("{count} collections exceed the limit of {MAX_COLLECTIONS} per hello")]
    TooManyCollections {
        /// How many the replica holds.
        count: usize,
    },
    /// The peer may not sync a collection it names (not shared with it, or
    /// no longer).
    #[error("collection {collection:?} is not shared with this peer")]
    NotShared {
        /// The collection.
        collection: String,
    },
    /// A contact's device sent a membership log, which only the devices of
    /// one account exchange.
    #[error("a contact's device sent a membership log")]
    LogFromContact,
    /// The peer is not (or no longer) a member of the account.
    #[error("peer {peer} is not a member of the account")]
    NotMember {
        /// The peer.
        peer: DeviceId,
    },
    /// The peer shards a collection differently.
    #[error("collection {collection:?} has {ours} shards here and {theirs} on the peer")]
    ShardMismatch {
        /// The collection.
        collection: String,
        /// Our shard count.
        ours: u16,
        /// The peer's.
        theirs: u16,
    },
    /// A sync message Automerge cannot parse.
    #[error("malformed sync message for {collection:?} shard {shard}: {source}")]
    BadMessage {
        /// The collection.
        collection: String,
        /// The shard.
        shard: ShardIndex,
        /// Automerge's report.
        #[source]
        source: ReadMessageError,
    },
    /// The peer's membership log was refused (bad entry, another account).
    #[error("membership log refused: {0}")]
    Log(#[from] membership::Error),
    /// A collection refused the peer's data (Automerge refused it, it
    /// inflates past [`Limits::max_inflated`], a contained panic, a record
    /// in the wrong shard); the collection is unchanged.
    #[error("collection {collection:?}: {source}")]
    Collection {
        /// The collection.
        collection: String,
        /// What went wrong.
        #[source]
        source: collection::Error,
    },
    /// The replica could not create a collection the peer has.
    #[error("cannot create collection {collection:?}: {source}")]
    Create {
        /// The collection.
        collection: String,
        /// The replica's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The replica reported success creating a collection it then lacks.
    #[error("the replica did not create collection {collection:?}")]
    NotCreated {
        /// The collection.
        collection: String,
    },
    /// More sync messages wait for an access list state than
    /// [`Limits::max_waiting`] allows.
    #[error("more than {max} sync messages wait for access lists the peer has not sent")]
    TooManyWaiting {
        /// The limit.
        max: usize,
    },
    /// Handling the frame panicked; the panic was contained.
    #[error("sync panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
}

/// Checks a peer's change before it is applied; `Err` says why it is
/// refused, or why it must wait. See [`Replica::gate`].
pub type Gate = std::sync::Arc<
    dyn Fn(&collection::Candidate<'_>) -> Result<(), collection::Refusal> + Send + Sync,
>;

/// The node's data as a session sees it.
///
/// A session with another device of the account sees every collection and
/// exchanges the membership log (the defaults). A session with a contact's
/// device sees a *scope*: only the collections shared between the two
/// accounts, by the names the session uses for them, and never the log
/// ([`Replica::carries_log`] false). Such a session syncs only what both
/// sides list, never pushes a collection the peer did not list, and sends
/// each collection's access list before its data.
pub trait Replica {
    /// Why [`Replica::create_collection`] failed.
    type CreateError: std::error::Error + Send + Sync + 'static;

    /// The names of every collection.
    fn collection_names(&self) -> Vec<String>;

    /// The collection `name`, if it exists.
    fn collection(&self, name: &str) -> Option<&Collection>;

    /// The collection `name`, mutably, if it exists.
    fn collection_mut(&mut self, name: &str) -> Option<&mut Collection>;

    /// Creates an empty collection `name` with `shards` shards, because the
    /// peer has it and we do not. Called only when `name` does not exist.
    fn create_collection(&mut self, name: &str, shards: u16) -> Result<(), Self::CreateError>;

    /// The account's membership log.
    fn membership(&self) -> &Log;

    /// The account's membership log, mutably (a peer's log is merged into it).
    fn membership_mut(&mut self) -> &mut Log;

    /// Whether `peer` may sync with this replica now; checked on every
    /// frame. By default: it is a member of the account.
    fn admits(&self, peer: &DeviceId) -> bool {
        self.membership().is_member(peer)
    }

    /// Whether this replica exchanges the membership log with the peer and
    /// holds every collection either side has (a session between devices of
    /// one account). `false` for a contact's scope.
    fn carries_log(&self) -> bool {
        true
    }

    /// Whether a collection this replica lacks may be created because the
    /// peer has it. By default any.
    fn may_hold(&self, name: &str) -> bool {
        let _ = name;
        true
    }

    /// The access lists to send the peer before any data: `(collection,
    /// encoded list)`. By default none.
    fn access_lists(&self) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }

    /// What checks a peer's changes to `name` before they are applied, if
    /// anything does (a shared collection's write rights).
    fn gate(&self, name: &str) -> Option<Gate> {
        let _ = name;
        None
    }
}

/// A [`Replica`] held in memory: collections by name and a membership log.
/// New collections write as `actor`.
#[derive(Debug)]
pub struct MemoryReplica {
    actor: ActorId,
    collections: BTreeMap<String, Collection>,
    membership: Log,
}

impl MemoryReplica {
    /// An empty replica of the account `membership` describes.
    pub fn new(actor: ActorId, membership: Log) -> Self {
        Self {
            actor,
            collections: BTreeMap::new(),
            membership,
        }
    }

    /// The actor new collections write as.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// Adds (or replaces) a collection, keyed by its doctype.
    pub fn insert(&mut self, collection: Collection) -> Option<Collection> {
        self.collections
            .insert(collection.doctype().to_owned(), collection)
    }

    /// Every collection by name.
    pub fn collections(&self) -> &BTreeMap<String, Collection> {
        &self.collections
    }
}

impl Replica for MemoryReplica {
    type CreateError = collection::Error;

    fn collection_names(&self) -> Vec<String> {
        self.collections.keys().cloned().collect()
    }

    fn collection(&self, name: &str) -> Option<&Collection> {
        self.collections.get(name)
    }

    fn collection_mut(&mut self, name: &str) -> Option<&mut Collection> {
        self.collections.get_mut(name)
    }

    fn create_collection(&mut self, name: &str, shards: u16) -> Result<(), collection::Error> {
        let created = Collection::new(name, shards, self.actor.clone())?;
        self.collections.insert(name.to_owned(), created);
        Ok(())
    }

    fn membership(&self) -> &Log {
        &self.membership
    }

    fn membership_mut(&mut self) -> &mut Log {
        &mut self.membership
    }
}

/// What handling one frame produced. Persist, then send: see the
/// [module docs](self).
#[derive(Debug, Default)]
pub struct Effects {
    /// Frames to send to the peer, in order, once the rest is persisted.
    pub send: Vec<Vec<u8>>,
    /// Records whose view changed, per collection.
    pub merged: Vec<(String, Vec<Written>)>,
    /// Shards whose heads changed (a superset of the shards of `merged`):
    /// take their chunks, and pass them to [`Session::local_change`] of the
    /// other sessions.
    pub changed: Vec<(String, ShardIndex)>,
    /// Collections created because the peer has them.
    pub created: Vec<String>,
    /// Sync states to persist for this peer, `(collection, shard, bytes)`;
    /// give them back to [`Session::new`] next time.
    pub states: Vec<(String, ShardIndex, Vec<u8>)>,
    /// Whether the membership log gained entries.
    pub membership_changed: bool,
    /// Access lists the peer sent ([`Frame::Acl`]): `(collection, bytes)`,
    /// for the caller to verify and merge before it handles the next frame.
    pub access_lists: Vec<(String, Vec<u8>)>,
}

/// Traffic counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames produced for sending.
    pub frames_sent: u64,
    /// Bytes of those frames.
    pub bytes_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Bytes of those frames.
    pub bytes_received: u64,
    /// Frames dropped because they carried a collection this replica does
    /// not share with the peer.
    pub ignored: u64,
}

type ShardKey = (String, ShardIndex);

/// A peer's sync message held back until the access list state its changes
/// name is known (see [`Limits::max_waiting`]).
#[derive(Debug)]
struct Held {
    collection: String,
    shards: u16,
    shard: ShardIndex,
    message: Vec<u8>,
    signatures: Vec<Authorship>,
}

/// The sync protocol with one peer. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    peer: DeviceId,
    limits: Limits,
    states: BTreeMap<ShardKey, State>,
    /// The last encoding of each state handed out (or loaded), so that only
    /// changed states are reported.
    persisted: BTreeMap<ShardKey, Vec<u8>>,
    dirty: BTreeSet<ShardKey>,
    /// The peer's collections as its Hello listed them; `None` until then.
    peer_collections: Option<BTreeMap<String, Vec<ShardDigest>>>,
    /// A non-member's Hello, held until its log arrives.
    pending_hello: Option<Hello>,
    /// Collections whose [`Frame::Shards`] this side has sent.
    shards_sent: BTreeSet<String>,
    /// The heads of the log the peer is known to hold from us.
    log_sent: BTreeSet<EntryHash>,
    /// Messages held back, oldest first, retried before each next frame.
    waiting: VecDeque<Held>,
    stats: Stats,
}

impl Session {
    /// A session with `peer`, restoring the sync states a previous session
    /// reported in [`Effects::states`]. States that do not decode are
    /// dropped: a fresh state only costs a longer first exchange.
    pub fn new(
        peer: DeviceId,
        persisted: impl IntoIterator<Item = (String, ShardIndex, Vec<u8>)>,
        limits: Limits,
    ) -> Self {
        let mut states = BTreeMap::new();
        let mut encodings = BTreeMap::new();
        for (name, shard, bytes) in persisted {
            if let Ok(state) = State::decode(&bytes) {
                states.insert((name.clone(), shard), state);
                encodings.insert((name, shard), bytes);
            }
        }
        Self {
            peer,
            limits,
            states,
            persisted: encodings,
            dirty: BTreeSet::new(),
            peer_collections: None,
            pending_hello: None,
            shards_sent: BTreeSet::new(),
            log_sent: BTreeSet::new(),
            waiting: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The peer.
    pub fn peer(&self) -> &DeviceId {
        &self.peer
    }

    /// The session's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Traffic so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the peer's Hello has been processed.
    pub fn greeted(&self) -> bool {
        self.peer_collections.is_some()
    }

    /// The opening frames: our Hello.
    pub fn start(&mut self, replica: &impl Replica) -> Result<Vec<Vec<u8>>, Error> {
        let mut names = replica.collection_names();
        names.sort_unstable();
        names.dedup();
        if names.len() > MAX_COLLECTIONS {
            return Err(Error::TooManyCollections { count: names.len() });
        }
        let mut collections = Vec::with_capacity(names.len());
        for name in names {
            let Some(coll) = replica.collection(&name) else {
                continue;
            };
            let digests = (0..coll.shard_count())
                .map(|shard| coll.shard_digest(shard))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| Error::Collection {
                    collection: name.clone(),
                    source,
                })?;
            collections.push(Summary {
                name,
                shards: coll.shard_count(),
                digests: vec![collection_digest(&digests)],
            });
        }
        let mut frames = Vec::new();
        for (collection, bytes) in replica.access_lists() {
            frames.push(self.encode(&Frame::Acl { collection, bytes })?);
        }
        let hello = Frame::Hello(Hello {
            log_digest: log_digest(replica.membership()),
            collections,
        });
        frames.push(self.encode(&hello)?);
        Ok(frames)
    }

    /// Announces the replica again, as [`Session::start`] does: for a scope
    /// that changed (a share accepted, an access list changed), its access
    /// lists and a new Hello. What the peer was known to hold is kept.
    pub fn restart(&mut self, replica: &impl Replica) -> Result<Vec<Vec<u8>>, Error> {
        self.start(replica)
    }

    /// Sends the access lists of the replica's scope again (one changed).
    pub fn local_acl_change(&mut self, replica: &impl Replica) -> Result<Vec<Vec<u8>>, Error> {
        if self.peer_collections.is_none() {
            return Ok(Vec::new());
        }
        self.require_member(replica)?;
        let mut frames = Vec::new();
        for (collection, bytes) in replica.access_lists() {
            frames.push(self.encode(&Frame::Acl { collection, bytes })?);
        }
        Ok(frames)
    }

    /// Handles one frame from the peer. An error means the session must close.
    pub fn receive(&mut self, replica: &mut impl Replica, frame: &[u8]) -> Result<Effects, Error> {
        self.stats.frames_received += 1;
        self.stats.bytes_received += frame.len() as u64;
        let frame = Frame::decode(frame, &self.limits)?;
        let mut fx = Effects::default();
        catch_unwind(AssertUnwindSafe(|| {
            // The caller merged the access lists of earlier frames since:
            // what waited for them may pass now.
            self.retry_waiting(replica, &mut fx)?;
            self.dispatch(replica, frame, &mut fx)
        }))
        .unwrap_or_else(|payload| {
            Err(Error::Panicked {
                message: panic_text(payload.as_ref()),
            })
        })?;
        self.count_sent(&fx.send);
        self.flush_states(&mut fx);
        Ok(fx)
    }

    /// Frames carrying a local write to `shards` of `collection` to the peer.
    /// Also call it for shards a merge from another peer changed. Nothing is
    /// sent before the peer's Hello: answering it covers the write.
    pub fn local_change(
        &mut self,
        replica: &impl Replica,
        collection: &str,
        shards: &[ShardIndex],
    ) -> Result<Vec<Vec<u8>>, Error> {
        if self.peer_collections.is_none() {
            return Ok(Vec::new());
        }
        self.require_member(replica)?;
        let Some(coll) = replica.collection(collection) else {
            return Ok(Vec::new());
        };
        let wanted: BTreeSet<ShardIndex> = shards
            .iter()
            .copied()
            .filter(|&s| s < coll.shard_count())
            .collect();
        let mut out = Vec::new();
        for shard in wanted {
            let state = self
                .states
                .entry((collection.to_owned(), shard))
                .or_default();
            if let Some(frame) = generate(coll, collection, shard, state, &self.limits)? {
                out.push(frame);
            }
        }
        self.count_sent(&out);
        Ok(out)
    }

    /// Our log, if it has entries the peer is not known to hold (after a
    /// local pairing or removal). Nothing before the peer's Hello.
    pub fn local_membership_change(
        &mut self,
        replica: &impl Replica,
    ) -> Result<Vec<Vec<u8>>, Error> {
        if self.peer_collections.is_none() || !replica.carries_log() {
            return Ok(Vec::new());
        }
        let heads = replica.membership().heads();
        if heads.iter().all(|h| self.log_sent.contains(h)) {
            return Ok(Vec::new());
        }
        let frames = vec![self.log_frame(replica.membership())?];
        self.count_sent(&frames);
        Ok(frames)
    }

    fn dispatch(
        &mut self,
        replica: &mut impl Replica,
        frame: Frame,
        fx: &mut Effects,
    ) -> Result<(), Error> {
        match frame {
            Frame::Hello(hello) => {
                if !replica.admits(&self.peer) {
                    if !replica.carries_log()
                        || hello.log_digest == log_digest(replica.membership())
                    {
                        return Err(Error::NotMember { peer: self.peer });
                    }
                    self.pending_hello = Some(hello);
                    return Ok(());
                }
                self.on_hello(replica, hello, true, fx)
            }
            Frame::Log { bytes } => {
                if !replica.carries_log() {
                    return Err(Error::LogFromContact);
                }
                self.on_log(replica, &bytes, fx)?;
                self.require_member(replica)?;
                match self.pending_hello.take() {
                    Some(hello) => self.on_hello(replica, hello, false, fx),
                    None => Ok(()),
                }
            }
            Frame::Sync {
                collection,
                shards,
                shard,
                message,
                signatures,
            } => {
                self.require_member(replica)?;
                let held = Held {
                    collection,
                    shards,
                    shard,
                    message,
                    signatures,
                };
                self.on_sync(replica, held, fx)
            }
            Frame::Shards(summary) => {
                self.require_member(replica)?;
                summary.validate_full()?;
                self.on_shards(replica, summary, fx)
            }
            Frame::Acl { collection, bytes } => {
                self.require_member(replica)?;
                fx.access_lists.push((collection, bytes));
                Ok(())
            }
        }
    }

    fn on_hello(
        &mut self,
        replica: &mut impl Replica,
        hello: Hello,
        answer_log: bool,
        fx: &mut Effects,
    ) -> Result<(), Error> {
        if answer_log && replica.carries_log() {
            if hello.log_digest == log_digest(replica.membership()) {
                self.log_sent.extend(replica.membership().heads());
            } else {
                let frame = self.log_frame(replica.membership())?;
                fx.send.push(frame);
            }
        }
        let theirs: BTreeMap<String, Summary> = hello
            .collections
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let mut names: BTreeSet<String> = replica.collection_names().into_iter().collect();
        names.extend(theirs.keys().cloned());
        for name in names {
            let their = theirs.get(&name);
            if replica.collection(&name).is_none() {
                let Some(their) = their else { continue };
                if !replica.may_hold(&name) {
                    // Not shared with this peer, or not accepted here.
                    continue;
                }
                if their.digests.iter().all(|d| *d == EMPTY_SHARD_DIGEST) {
                    continue;
                }
                // Our Hello did not list it, so the peer sends every shard
                // whole; there is nothing to compare.
                self.create(replica, &name, their.shards, fx)?;
                continue;
            }
            let Some(their) = their else {
                if !replica.carries_log() {
                    // A contact's device syncs only what both sides list.
                    continue;
                }
                // The peer lacks it: every shard goes out whole.
                self.reconcile(replica, &name, None, fx)?;
                continue;
            };
            if their.digests.len() == usize::from(their.shards) {
                self.reconcile(replica, &name, Some(&their.digests), fx)?;
                continue;
            }
            let Some(coll) = replica.collection(&name) else {
                continue;
            };
            if their.shards != coll.shard_count() {
                return Err(Error::ShardMismatch {
                    collection: name,
                    ours: coll.shard_count(),
                    theirs: their.shards,
                });
            }
            let ours = shard_digests(coll, &name)?;
            if their.digests.first() == Some(&collection_digest(&ours)) {
                // In sync: remember that the peer holds our heads, send nothing.
                for shard in 0..coll.shard_count() {
                    let heads = coll
                        .shard_heads(shard)
                        .map_err(|source| Error::Collection {
                            collection: name.clone(),
                            source,
                        })?;
                    let key = (name.clone(), shard);
                    seed_in_sync(self.states.entry(key.clone()).or_default(), heads);
                    self.dirty.insert(key);
                }
            } else {
                // Which shards differ: both sides tell each other.
                let shards = Frame::Shards(Summary {
                    name: name.clone(),
                    shards: coll.shard_count(),
                    digests: ours,
                });
                fx.send.push(self.encode(&shards)?);
                self.shards_sent.insert(name);
            }
        }
        self.peer_collections = Some(
            theirs
                .into_iter()
                .map(|(name, summary)| (name, summary.digests))
                .collect(),
        );
        Ok(())
    }

    /// The peer's shard digests for `name` arrived.
    fn on_shards(
        &mut self,
        replica: &mut impl Replica,
        summary: Summary,
        fx: &mut Effects,
    ) -> Result<(), Error> {
        if !replica.may_hold(&summary.name) {
            self.stats.ignored += 1;
            return Ok(());
        }
        if replica.collection(&summary.name).is_none() {
            self.create(replica, &summary.name, summary.shards, fx)?;
        }
        let Some(_) = replica.collection(&summary.name) else {
            return Err(Error::NotCreated {
                collection: summary.name,
            });
        };
        // The peer compares too: when our Hello made it skip that (it showed
        // the collection missing or matching, and it has changed since), it
        // needs our digests as well. Once per collection.
        if !self.shards_sent.contains(&summary.name)
            && let Some(coll) = replica.collection(&summary.name)
        {
            let ours = Frame::Shards(Summary {
                name: summary.name.clone(),
                shards: coll.shard_count(),
                digests: shard_digests(coll, &summary.name)?,
            });
            fx.send.push(self.encode(&ours)?);
            self.shards_sent.insert(summary.name.clone());
        }
        self.reconcile(replica, &summary.name, Some(&summary.digests), fx)?;
        if let Some(known) = self.peer_collections.as_mut() {
            known.insert(summary.name, summary.digests);
        }
        Ok(())
    }

    /// Compares every shard of `name` with the peer's digests (`None`: the
    /// peer lacks the collection) and starts Automerge sync where they
    /// differ.
    fn reconcile(
        &mut self,
        replica: &impl Replica,
        name: &str,
        theirs: Option<&[ShardDigest]>,
        fx: &mut Effects,
    ) -> Result<(), Error> {
        let Some(coll) = replica.collection(name) else {
            return Ok(());
        };
        let count = coll.shard_count();
        if let Some(theirs) = theirs
            && theirs.len() != usize::from(count)
        {
            return Err(Error::ShardMismatch {
                collection: name.to_owned(),
                ours: count,
                theirs: u16::try_from(theirs.len()).unwrap_or(u16::MAX),
            });
        }
        let coll_err = |source| Error::Collection {
            collection: name.to_owned(),
            source,
        };
        for shard in 0..count {
            let ours = coll.shard_digest(shard).map_err(coll_err)?;
            let peer = theirs.map_or(EMPTY_SHARD_DIGEST, |t| t[usize::from(shard)]);
            let key = (name.to_owned(), shard);
            let state = self.states.entry(key.clone()).or_default();
            if ours == peer {
                seed_in_sync(state, coll.shard_heads(shard).map_err(coll_err)?);
                self.dirty.insert(key);
                continue;
            }
            // Both sides run Automerge's protocol from here, from what each
            // actually holds. Presetting the state to "the peer holds
            // nothing" from its Hello (which may be stale by now: it may have
            // received the shard from a third device) saved a round trip for
            // a new device but lost changes in the interleaving proptest.
            //
            // A side that holds nothing of the shard does not open: the
            // peer, which holds something (the digests differ), opens from
            // our Hello. Opening too would cost the whole shard twice: a
            // message with no heads tells Automerge the peer lost its data,
            // so the answer to the peer's opening, crossing the data already
            // on its way, makes the peer send everything again.
            if ours == EMPTY_SHARD_DIGEST {
                continue;
            }
            if let Some(frame) = generate(coll, name, shard, state, &self.limits)? {
                fx.send.push(frame);
            }
        }
        Ok(())
    }

    fn on_log(
        &mut self,
        replica: &mut impl Replica,
        bytes: &[u8],
        fx: &mut Effects,
    ) -> Result<(), Error> {
        let theirs = Log::decode(bytes)?;
        let mut merged = replica.membership().clone();
        // Merged on a copy: a failure half way, or a peer the merged log
        // still does not admit, leaves our log untouched.
        let added = merged.merge(&theirs)?;
        if !merged.is_member(&self.peer) {
            return Err(Error::NotMember { peer: self.peer });
        }
        if added > 0 {
            *replica.membership_mut() = merged;
            fx.membership_changed = true;
        }
        let heads = replica.membership().heads();
        if heads
            .iter()
            .any(|h| !theirs.contains(h) && !self.log_sent.contains(h))
        {
            let frame = self.log_frame(replica.membership())?;
            fx.send.push(frame);
        } else {
            // The peer now holds every entry we have.
            self.log_sent.extend(heads);
        }
        Ok(())
    }

    /// Retries the messages held back, in order; those that still wait stay.
    fn retry_waiting(&mut self, replica: &mut impl Replica, fx: &mut Effects) -> Result<(), Error> {
        for held in std::mem::take(&mut self.waiting) {
            self.on_sync(replica, held, fx)?;
        }
        Ok(())
    }

    fn on_sync(
        &mut self,
        replica: &mut impl Replica,
        held: Held,
        fx: &mut Effects,
    ) -> Result<(), Error> {
        let Held {
            collection: ref name,
            shards,
            shard,
            ref message,
            ref signatures,
        } = held;
        let name = name.clone();
        if !replica.may_hold(&name) {
            // A share the peer still counts this replica in (its copy of the
            // list lags, or this side declined it): its data is dropped,
            // and the rest of the session goes on.
            self.stats.ignored += 1;
            return Ok(());
        }
        if replica.collection(&name).is_none() {
            self.create(replica, &name, shards, fx)?;
        }
        let gate = replica.gate(&name);
        let Some(coll) = replica.collection_mut(&name) else {
            return Err(Error::NotCreated { collection: name });
        };
        if coll.shard_count() != shards {
            return Err(Error::ShardMismatch {
                collection: name,
                ours: coll.shard_count(),
                theirs: shards,
            });
        }
        let message = Message::decode(message).map_err(|source| Error::BadMessage {
            collection: name.clone(),
            shard,
            source,
        })?;
        let coll_err = |source| Error::Collection {
            collection: name.clone(),
            source,
        };
        let before = coll.shard_heads(shard).map_err(coll_err)?;
        let key = (name.clone(), shard);
        let state = self.states.entry(key.clone()).or_default();
        let bounds = collection::Bounds {
            max_inflated: self.limits.max_inflated,
            max_record: self.limits.max_record,
        };
        let gate = gate.as_deref().map(|g| g as collection::ChangeGate<'_>);
        let written = match coll.sync_receive(shard, state, message, signatures, bounds, gate) {
            Ok(written) => written,
            Err(collection::Error::Merge {
                source: collection::DecodeError::Waiting { .. },
                ..
            }) => {
                // Nothing changed; held until the access list arrives.
                if self.waiting.len() >= self.limits.max_waiting {
                    return Err(Error::TooManyWaiting {
                        max: self.limits.max_waiting,
                    });
                }
                self.waiting.push_back(held);
                return Ok(());
            }
            Err(e) => return Err(coll_err(e)),
        };
        if coll.shard_heads(shard).map_err(coll_err)? != before {
            fx.changed.push(key.clone());
        }
        self.dirty.insert(key);
        let reply = generate(coll, &name, shard, state, &self.limits)?;
        if !written.is_empty() {
            fx.merged.push((name, written));
        }
        if let Some(frame) = reply {
            fx.send.push(frame);
        }
        Ok(())
    }

    fn create(
        &mut self,
        replica: &mut impl Replica,
        name: &str,
        shards: u16,
        fx: &mut Effects,
    ) -> Result<(), Error> {
        if !replica.may_hold(name) {
            return Err(Error::NotShared {
                collection: name.to_owned(),
            });
        }
        replica
            .create_collection(name, shards)
            .map_err(|source| Error::Create {
                collection: name.to_owned(),
                source: Box::new(source),
            })?;
        if replica.collection(name).is_none() {
            return Err(Error::NotCreated {
                collection: name.to_owned(),
            });
        }
        fx.created.push(name.to_owned());
        Ok(())
    }

    fn require_member(&self, replica: &impl Replica) -> Result<(), Error> {
        if replica.admits(&self.peer) {
            Ok(())
        } else {
            Err(Error::NotMember { peer: self.peer })
        }
    }

    fn log_frame(&mut self, log: &Log) -> Result<Vec<u8>, Error> {
        let frame = Frame::Log {
            bytes: log.encode(),
        }
        .encode(&self.limits)?;
        self.log_sent.extend(log.heads());
        Ok(frame)
    }

    fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, Error> {
        let bytes = frame.encode(&self.limits)?;
        self.count_sent(std::slice::from_ref(&bytes));
        Ok(bytes)
    }

    fn count_sent(&mut self, frames: &[Vec<u8>]) {
        for frame in frames {
            self.stats.frames_sent += 1;
            self.stats.bytes_sent += frame.len() as u64;
        }
    }

    fn flush_states(&mut self, fx: &mut Effects) {
        for key in std::mem::take(&mut self.dirty) {
            let Some(state) = self.states.get(&key) else {
                continue;
            };
            let bytes = state.encode();
            if self.persisted.get(&key) != Some(&bytes) {
                fx.states.push((key.0.clone(), key.1, bytes.clone()));
                self.persisted.insert(key, bytes);
            }
        }
    }
}

/// The next sync message for a shard, as a frame.
fn generate(
    coll: &Collection,
    name: &str,
    shard: ShardIndex,
    state: &mut State,
    limits: &Limits,
) -> Result<Option<Vec<u8>>, Error> {
    let message = coll
        .sync_generate(shard, state)
        .map_err(|source| Error::Collection {
            collection: name.to_owned(),
            source,
        })?;
    let Some((message, signatures)) = message else {
        return Ok(None);
    };
    let frame = Frame::Sync {
        collection: name.to_owned(),
        shards: coll.shard_count(),
        shard,
        message: message.encode(),
        signatures,
    };
    frame.encode(limits).map(Some)
}

/// What every peer running this code supports.
fn capabilities() -> Option<Vec<Capability>> {
    Some(vec![Capability::MessageV2, Capability::SyncReset])
}

/// Sets `state` to "the peer holds exactly `heads`", which matching digests
/// establish: nothing is due now, and a later local change is sent at once.
fn seed_in_sync(state: &mut State, heads: Vec<ChangeHash>) {
    *state = State {
        shared_heads: heads.clone(),
        last_sent_heads: heads.clone(),
        their_heads: Some(heads.clone()),
        their_need: Some(Vec::new()),
        their_have: Some(vec![Have {
            last_sync: heads,
            bloom: Default::default(),
        }]),
        have_responded: true,
        their_capabilities: capabilities(),
        ..State::new()
    };
}

/// Every shard digest of `coll`, in order.
fn shard_digests(coll: &Collection, name: &str) -> Result<Vec<ShardDigest>, Error> {
    (0..coll.shard_count())
        .map(|shard| coll.shard_digest(shard))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Collection {
            collection: name.to_owned(),
            source,
        })
}

/// BLAKE3 over the log's sorted heads: equal digests mean equal logs.
pub fn log_digest(log: &Log) -> [u8; 32] {
    let mut heads = log.heads();
    heads.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"hearth.sync.log-heads.v1");
    for head in &heads {
        hasher.update(head.as_bytes());
    }
    *hasher.finalize().as_bytes()
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    crate::collection::panic_message(payload)
}

#[cfg(test)]
mod tests;
