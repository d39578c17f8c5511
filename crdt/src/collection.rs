//! Collections: named sets of JSON records of one doctype over Automerge.
//!
//! # Model
//!
//! A [`Collection`] holds the records of one doctype (`io.cozy.notes`,
//! `bank.operations`, …). It is split across `shard_count` Automerge
//! documents, fixed when the collection is created. A record lives in shard
//! [`shard_of`]`(id)`: the first 8 bytes of BLAKE3(`_id`), little-endian, modulo
//! the shard count. Sharding keeps each document small, so a write, a load or
//! a sync of a 100k-record collection only ever pays for the shards it
//! touches, and shards load in parallel.
//!
//! Each shard document's root is a map from `_id` to the record's map. The
//! JSON ↔ Automerge mapping (strings as scalars, exact numbers, limits) is
//! described in [`crate::record`].
//!
//! The collection keeps a materialised view, a `BTreeMap` from id to the
//! record as JSON (with `_id` and `_rev`). Every local write and every merge
//! updates it, so reads and queries never walk Automerge.
//!
//! # Revisions and write modes
//!
//! Every record carries a CouchDB-style `_rev`, `"N-<32 hex>"`: `N` counts
//! edits and the hex is a digest of the previous revision and the new content
//! (see `rev`). It is stored in the record map, so it replicates.
//!
//! - [`PutMode::Create`] requires that no record has the id.
//! - [`PutMode::Update`] requires the current revision; a mismatch, or a
//!   missing record, is [`Error::Conflict`] carrying the current revision.
//! - [`PutMode::Upsert`] writes whatever is there; it is the explicit opt-out
//!   from the revision check.
//!
//! A `_rev` in a body is ignored in favour of the mode, and a body `_id` must
//! equal the id. An update writes the minimal diff (changed keys set, removed
//! keys deleted, nested maps recursed into, lists replaced whole when they
//! differ), so concurrent edits to different fields of one record merge.
//!
//! A delete removes the id from its shard and reports the tombstone revision
//! (the last revision bumped), as CouchDB does. No tombstone is kept: a later
//! create of the same id starts again at generation 1.
//!
//! # Replication
//!
//! [`Collection::merge_shard`] applies a peer's changes and reports every
//! record whose view changed. When two replicas edit a record concurrently,
//! Automerge merges the fields and keeps both `_rev` values as a conflict.
//! Every replica then shows the same *merged* revision, one generation above
//! the highest conflicting one, derived from the conflicting revisions and the
//! merged content. Nothing is written to do so (which would make replicas
//! trade merge changes forever); the next local update writes a single `_rev`
//! again and ends the conflict.
//!
//! Two replicas that *create* one id concurrently leave two record maps
//! under one root key. The view shows the one Automerge picks, with the
//! merged revision of both, and [`Collection::versions`] returns them all.
//! The next local update writes its content into every version, so they
//! become equal and no edit made inside either is lost.
//!
//! A record another Automerge client wrote without a usable `_rev` shows the
//! revision a create of that content gets.
//!
//! # Storage
//!
//! The collection is sans-IO. After each write, [`Collection::take_chunks`]
//! returns the incremental bytes of every shard changed since the last call
//! (local writes and merged peer changes alike); the node stores them in the
//! same durable transaction that acknowledges the write. A shard's chunk list
//! can be replaced at any time by [`Collection::compact_shard`].
//! [`Collection::load`] takes each shard's chunks in order, validates every
//! shard and rebuilds the view, loading shards on scoped threads. Loading
//! replays every incremental chunk change by change, while a compacted shard
//! loads from columns: compact shards whose chunk lists grow long.
//!
//! # Cost
//!
//! Automerge sets the floor: a record inserted into a populated document
//! through its transaction API costs about 25 µs, and a single-field edit
//! about 25–40 µs. [`Collection::put_many`] therefore writes new records as
//! one hand-built change per shard (about half the cost), fills an empty
//! shard in one batched insert (cheaper still), and writes shards on scoped
//! threads.
//!
//! The actor id must not be reused by two live replicas, and a replica that
//! restarts must either use a fresh actor or have persisted every change it
//! made before any of them left the process: Automerge treats two different
//! changes with the same actor and sequence number as corruption.
//!
//! # Hostile input
//!
//! Bytes given to [`Collection::load`] and [`Collection::merge_shard`] are
//! decoded inside [`std::panic::catch_unwind`], because Automerge has panicked
//! on malformed input; such a panic becomes [`DecodeError::Panicked`]. A merge
//! is all-or-nothing: every chunk is parsed before any is applied, and the
//! changes are applied to a copy of the shard that replaces it only on
//! success. [`MAX_MERGE_BYTES`] bounds one merge's input, and because
//! Automerge inflates compressed chunks and columns without a bound of its
//! own, their inflated size is checked first (a streaming count, nothing kept)
//! against [`MAX_INFLATED_BYTES`], or the bound given to
//! [`Collection::sync_receive`].
//!
//! # Sync
//!
//! [`Collection::shard_digest`], [`Collection::sync_generate`] and
//! [`Collection::sync_receive`] are the per-shard primitives the
//! [`crate::sync`] sessions are built from: a digest to skip in-sync shards,
//! and Automerge's sync protocol with the changes routed through the guarded
//! merge path above.
//!
//! # Example
//!
//! ```
//! use automerge::ActorId;
//! use hearth_crdt::collection::{Collection, PutMode};
//! use serde_json::json;
//!
//! let mut laptop = Collection::new("io.cozy.notes", 4, ActorId::from([1u8; 16]))?;
//! let created = laptop.put("n1", json!({"title": "draft"}), PutMode::Create, 1_000)?;
//! assert!(created.rev.starts_with("1-"));
//!
//! // What the node persists after acknowledging the write.
//! let chunks = laptop.take_chunks();
//!
//! // Another device starts from nothing and receives those chunks.
//! let mut phone = Collection::new("io.cozy.notes", 4, ActorId::from([2u8; 16]))?;
//! for chunk in &chunks {
//!     phone.merge_shard(chunk.shard, &chunk.bytes)?;
//! }
//! assert_eq!(phone.get("n1"), laptop.get("n1"));
//!
//! // An update must name the revision it replaces.
//! let update = PutMode::Update { expected_rev: created.rev.clone() };
//! phone.put("n1", json!({"title": "final"}), update, 2_000)?;
//! let stale = PutMode::Update { expected_rev: created.rev };
//! assert!(phone.put("n1", json!({"title": "lost"}), stale, 3_000).is_err());
//!
//! // Reopening from the persisted chunks gives the same records.
//! let mut per_shard = vec![Vec::new(); 4];
//! for chunk in laptop.take_chunks().into_iter().chain(chunks) {
//!     per_shard[usize::from(chunk.shard)].push(chunk.bytes);
//! }
//! let reopened = Collection::load("io.cozy.notes", ActorId::from([3u8; 16]), per_shard)?;
//! assert_eq!(reopened.records(), laptop.records());
//! # Ok::<(), hearth_crdt::collection::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutomergeError, ChangeHash, hydrate};
use hearth_crypto::identity::DeviceId;
use serde_json::{Map, Value};

use crate::record::{self, REV_KEY};

pub mod authorship;
mod bulk;
mod inflate;
mod rev;
mod shard;

pub(crate) use shard::panic_message;
mod view;
mod write;

use shard::Shard;

pub use authorship::{Authorship, Signer};

/// What bounds a peer's changes on [`Collection::sync_receive`].
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most bytes the compressed parts may inflate to.
    pub max_inflated: usize,
    /// Most bytes a record may take as JSON after the merge.
    pub max_record: usize,
}

/// Index of a shard within its collection, `0..shard_count`.
pub type ShardIndex = u16;

/// Most shards a collection may have.
pub const MAX_SHARDS: u16 = 1024;

/// Longest accepted doctype, in bytes.
pub const MAX_DOCTYPE_BYTES: usize = 128;

/// Most records one [`Collection::put_many`] call may write.
pub const MAX_BATCH_RECORDS: usize = 100_000;

/// Largest byte string one [`Collection::merge_shard`] call accepts.
pub const MAX_MERGE_BYTES: usize = 64 * 1024 * 1024;

/// Most bytes the compressed parts of one [`Collection::merge_shard`] call
/// may inflate to. [`Collection::sync_receive`] takes its own bound.
pub const MAX_INFLATED_BYTES: usize = 64 * 1024 * 1024;

/// The [`Collection::shard_digest`] of a shard with no changes.
pub const EMPTY_SHARD_DIGEST: ShardDigest = [0; 8];

/// A short digest of a shard's heads: equal digests mean equal heads.
pub type ShardDigest = [u8; 8];

/// Batches smaller than this are written on the calling thread: below it,
/// starting threads costs more than the shards' transactions.
const PARALLEL_MIN_RECORDS: usize = 256;

/// Most threads a load or a bulk write uses.
const MAX_WORKERS: usize = 8;

/// Why a collection operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The doctype is empty, too long or uses characters outside `[a-z0-9._-]`.
    #[error(
        "invalid doctype {doctype:?}: expected 1 to {MAX_DOCTYPE_BYTES} bytes of [a-z0-9._-], starting with a letter or digit"
    )]
    InvalidDoctype {
        /// The refused doctype.
        doctype: String,
    },
    /// The shard count is 0 or above [`MAX_SHARDS`].
    #[error("a collection needs 1 to {MAX_SHARDS} shards, got {count}")]
    ShardCount {
        /// The refused count.
        count: usize,
    },
    /// The actor id is empty.
    #[error("the actor id is empty")]
    EmptyActor,
    /// A shard index at or above the shard count.
    #[error("no shard {shard}: the collection has {count} shards")]
    NoSuchShard {
        /// The refused index.
        shard: ShardIndex,
        /// The collection's shard count.
        count: u16,
    },
    /// The record or its id is invalid.
    #[error(transparent)]
    Record(#[from] record::Error),
    /// The write's expectation about the current revision does not hold.
    #[error("document update conflict on {id:?}: current revision is {}", current.as_deref().unwrap_or("none (no such record)"))]
    Conflict {
        /// The record id.
        id: String,
        /// Its current revision, `None` when it does not exist.
        current: Option<String>,
    },
    /// A delete of a record that does not exist.
    #[error("no record {id:?}")]
    NotFound {
        /// The record id.
        id: String,
    },
    /// `put_many` was given [`PutMode::Update`].
    #[error("put_many accepts PutMode::Create or PutMode::Upsert, not Update")]
    BulkUpdate,
    /// A `put_many` batch above [`MAX_BATCH_RECORDS`].
    #[error("a batch of {len} records exceeds the limit of {MAX_BATCH_RECORDS}")]
    BatchTooLarge {
        /// The refused batch's length.
        len: usize,
    },
    /// A peer's sync message carries a Bloom filter whose parameters would
    /// make checking it cost unbounded memory or time.
    #[error(
        "refused a sync message for shard {shard}: its Bloom filter asks for {probes} probes and {bits_per_entry} bits per entry (allowed: 1-{MAX_BLOOM_PROBES} and 1-{MAX_BLOOM_BITS_PER_ENTRY})"
    )]
    BadBloom {
        /// The shard.
        shard: ShardIndex,
        /// The filter's probe count.
        probes: u64,
        /// The filter's bits per entry.
        bits_per_entry: u64,
    },
    /// A merge above [`MAX_MERGE_BYTES`].
    #[error("{len} bytes to merge exceed the limit of {MAX_MERGE_BYTES}")]
    MergeTooLarge {
        /// The refused length.
        len: usize,
    },
    /// A shard's persisted chunks could not be loaded.
    #[error("cannot load shard {shard}: {source}")]
    Load {
        /// The shard.
        shard: ShardIndex,
        /// What was wrong with its bytes.
        #[source]
        source: DecodeError,
    },
    /// A peer's changes could not be merged; the shard is unchanged.
    #[error("cannot merge into shard {shard}: {source}")]
    Merge {
        /// The shard.
        shard: ShardIndex,
        /// What was wrong with the bytes.
        #[source]
        source: DecodeError,
    },
    /// Automerge panicked while generating a sync message (a peer's sync
    /// state named changes the shard lacks); the panic was contained.
    #[error("automerge panicked generating a sync message for shard {shard}: {message}")]
    SyncPanicked {
        /// The shard.
        shard: ShardIndex,
        /// The panic message.
        message: String,
    },
    /// Automerge refused a local write. This is a bug, not bad input; the
    /// view still matches the documents.
    #[error("automerge refused a local write: {0}")]
    Write(#[from] AutomergeError),
}

/// What was wrong with bytes given to [`Collection::load`] or [`Collection::merge_shard`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Automerge refused the bytes.
    #[error("automerge refused the bytes: {0}")]
    Automerge(#[from] AutomergeError),
    /// A change chunk is malformed.
    #[error("malformed change chunk: {0}")]
    Change(#[from] automerge::LoadChangeError),
    /// The bytes are not a sequence of well-framed Automerge chunks.
    #[error("malformed chunk framing at byte {offset}")]
    Framing {
        /// Where the bad chunk starts.
        offset: usize,
    },
    /// A chunk's checksum does not match its contents.
    #[error("bad checksum in the chunk at byte {offset}")]
    BadChecksum {
        /// Where the chunk starts.
        offset: usize,
    },
    /// A chunk type that merges do not accept (bundles, or unknown types).
    #[error("unsupported chunk type {kind} at byte {offset}")]
    UnsupportedChunk {
        /// The chunk type byte.
        kind: u8,
        /// Where the chunk starts.
        offset: usize,
    },
    /// A record sits in a shard its id does not hash to: the shards were
    /// given in the wrong order or number, or a peer shards the collection
    /// differently. Such a record would be unreachable, so it is refused.
    #[error(
        "record {id:?} belongs in shard {belongs_to}: shards out of order, or a different shard count"
    )]
    MisplacedRecord {
        /// The record id.
        id: String,
        /// The shard it hashes to.
        belongs_to: ShardIndex,
    },
    /// A peer's changes would leave a record larger than the record limit.
    #[error("the changes would make record {id:?} {size} bytes, over the limit of {limit} bytes")]
    RecordTooLarge {
        /// The record id.
        id: String,
        /// Its size as JSON after the merge.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A change the collection's gate refused (see [`ChangeGate`]).
    #[error("change refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// A change the gate cannot judge yet (it names an access list state
    /// this replica lacks); nothing was applied, and the same changes may
    /// be offered again once that state is known.
    #[error("change not judged yet: {reason}")]
    Waiting {
        /// Why.
        reason: String,
    },
    /// A persisted block of change signatures is malformed.
    #[error("malformed signatures block: {reason}")]
    Authorship {
        /// What is wrong.
        reason: String,
    },
    /// Persisted changes depend on changes that are not there.
    #[error("{count} changes depend on history that is missing")]
    MissingDeps {
        /// How many dependencies are missing.
        count: usize,
    },
    /// Compressed data in the bytes inflates past the allowed size: refused
    /// before Automerge inflated any of it.
    #[error("refused: inflates past {limit} bytes")]
    Inflate {
        /// The bound, in inflated bytes.
        limit: usize,
    },
    /// Automerge panicked on the bytes; the panic was contained.
    #[error("automerge panicked while decoding: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
}

/// How a [`Collection::put`] treats an existing record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`Error::Conflict`] if the id exists.
    Create,
    /// Fail with [`Error::Conflict`] unless the id exists at `expected_rev`.
    Update {
        /// The revision the write replaces.
        expected_rev: String,
    },
    /// Create or overwrite, without a revision check.
    Upsert,
}

/// One record changed by a write or a merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The record id.
    pub id: String,
    /// The new revision; for a deletion, the tombstone revision.
    pub rev: String,
    /// Whether the record is gone.
    pub deleted: bool,
    /// The record before, as the view held it.
    pub before: Option<Value>,
    /// The record after, as the view now holds it; `None` when deleted.
    pub after: Option<Value>,
}

/// Bytes to append to one shard's persisted chunk list: the changes since the
/// previous chunk, or a full save when the list is still empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardChunk {
    /// The shard.
    pub shard: ShardIndex,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Most probes a peer's Bloom filter may ask for (Automerge uses 7).
pub const MAX_BLOOM_PROBES: u64 = 32;

/// Most bits per entry a peer's Bloom filter may have (Automerge uses 10).
pub const MAX_BLOOM_BITS_PER_ENTRY: u64 = 64;

/// Checks the parameters that open an encoded Bloom filter (an empty
/// encoding is the empty filter): entry count, bits per entry, probes, each
/// a LEB128 number.
fn check_bloom(shard: ShardIndex, bytes: &[u8]) -> Result<(), Error> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut numbers = [0u64; 3];
    let mut rest = bytes;
    for slot in &mut numbers {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let Some((&byte, tail)) = rest.split_first() else {
                return Err(Error::BadBloom {
                    shard,
                    probes: 0,
                    bits_per_entry: 0,
                });
            };
            rest = tail;
            if shift < 64 {
                value |= u64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        *slot = value;
    }
    let [entries, bits_per_entry, probes] = numbers;
    let ok = entries == 0
        || ((1..=MAX_BLOOM_BITS_PER_ENTRY).contains(&bits_per_entry)
            && (1..=MAX_BLOOM_PROBES).contains(&probes));
    if ok {
        Ok(())
    } else {
        Err(Error::BadBloom {
            shard,
            probes,
            bits_per_entry,
        })
    }
}

/// The shard holding `id` in a collection of `shard_count` shards
/// (`shard_count` of 0 is treated as 1).
pub fn shard_of(id: &str, shard_count: u16) -> ShardIndex {
    let hash = blake3::hash(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    let n = u64::from_le_bytes(first) % u64::from(shard_count.max(1));
    // The remainder is below a u16, so this never saturates.
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// A collection of JSON records sharded over Automerge documents. See the
/// [module docs](self).
pub struct Collection {
    doctype: String,
    actor: ActorId,
    shards: Vec<Shard>,
    records: BTreeMap<String, Value>,
    workers: usize,
    note: Option<String>,
}

/// Decides whether a peer's change may be applied to a collection (the
/// write rights of a shared one); `Err` says why not, and the whole merge
/// is refused ([`DecodeError::Refused`]) or held back
/// ([`DecodeError::Waiting`]).
pub type ChangeGate<'g> = &'g dyn Fn(&Candidate<'_>) -> Result<(), Refusal>;

/// A peer's change as a [`ChangeGate`] sees it.
#[derive(Debug)]
pub struct Candidate<'a> {
    /// The change.
    pub change: &'a automerge::Change,
    /// The signature that came with it, or that this replica already held.
    pub authorship: Option<&'a Authorship>,
    /// `authorship`'s signer once its signature verified, or why it did
    /// not: checked once, by [`Candidate::new`], for the gate and for
    /// keeping the signature alike.
    pub signer: Option<Result<DeviceId, String>>,
    /// The message (note) of each of its dependencies, in the order of
    /// `change.deps()`; `None` for a dependency without one, or one that
    /// has not arrived.
    pub dep_notes: Vec<Option<String>>,
}

impl<'a> Candidate<'a> {
    /// A change to judge, its signature verified here.
    pub fn new(
        change: &'a automerge::Change,
        authorship: Option<&'a Authorship>,
        dep_notes: Vec<Option<String>>,
    ) -> Self {
        Candidate {
            change,
            authorship,
            signer: authorship.map(Authorship::verify),
            dep_notes,
        }
    }
}

/// How many of peers' changes reached a collection, and how many of those
/// were new to it: `received / new` is how many copies of each change
/// arrived on average (the simulator reports it per node).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrivals {
    /// Changes decoded from peers' merges, repeats included.
    pub received: u64,
    /// Those that were new and were applied.
    pub new: u64,
}

/// Why a [`ChangeGate`] does not let a change through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Never: the change breaks the rules.
    Refused(String),
    /// Not yet: the gate lacks what it needs to judge it.
    Waiting(String),
}

impl fmt::Debug for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collection")
            .field("doctype", &self.doctype)
            .field("actor", &self.actor)
            .field("shard_count", &self.shards.len())
            .field("len", &self.records.len())
            .finish_non_exhaustive()
    }
}

/// A validated record write, before it touches Automerge.
struct Plan {
    id: String,
    shard: ShardIndex,
    before: Option<Value>,
    after: Map<String, Value>,
}

/// The actor a shard writes as: the collection's actor followed by the shard
/// index. Shards are separate documents, so one actor would do for sync; a
/// distinct actor per shard also lets every shard's changes live in one
/// document (see [`Collection::export_automerge`]) without two different
/// changes sharing an actor and sequence number.
pub fn shard_actor(actor: &ActorId, shard: ShardIndex) -> ActorId {
    let mut bytes = actor.to_bytes().to_vec();
    bytes.extend_from_slice(&shard.to_be_bytes());
    ActorId::from(bytes)
}

impl Collection {
    /// An empty collection of `shard_count` shards, writing as `actor`.
    pub fn new(doctype: &str, shard_count: u16, actor: ActorId) -> Result<Self, Error> {
        validate_doctype(doctype)?;
        validate_actor(&actor)?;
        if shard_count == 0 || shard_count > MAX_SHARDS {
            return Err(Error::ShardCount {
                count: usize::from(shard_count),
            });
        }
        Ok(Self {
            doctype: doctype.to_owned(),
            shards: (0..shard_count)
                .map(|i| Shard::new(shard_actor(&actor, i)))
                .collect(),
            actor,
            records: BTreeMap::new(),
            workers: workers(),
            note: None,
        })
    }

    /// Reopens a collection from its persisted chunks: `shards[i]` holds shard
    /// `i`'s chunks in the order they were handed out (a compacted save first,
    /// if any). The shard count is `shards.len()`. Every shard is validated;
    /// the first bad one (lowest index) is reported.
    pub fn load(doctype: &str, actor: ActorId, shards: Vec<Vec<Vec<u8>>>) -> Result<Self, Error> {
        validate_doctype(doctype)?;
        validate_actor(&actor)?;
        let count = u16::try_from(shards.len())
            .ok()
            .filter(|&c| c > 0 && c <= MAX_SHARDS)
            .ok_or(Error::ShardCount {
                count: shards.len(),
            })?;
        let workers = workers();
        let load_one = |index: usize, chunks: &[Vec<u8>]| {
            let shard = ShardIndex::try_from(index).unwrap_or(ShardIndex::MAX);
            Shard::load(chunks, shard_actor(&actor, shard), |doc| {
                view::read_shard(doc, shard, count)
            })
        };
        let threads = workers.min(shards.len());
        let mut loaded: Vec<(usize, Result<_, DecodeError>)> = if threads <= 1 {
            shards
                .iter()
                .enumerate()
                .map(|(index, chunks)| (index, load_one(index, chunks)))
                .collect()
        } else {
            // Shards are dealt round-robin; results carry their index, so the
            // outcome does not depend on timing.
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let shards = &shards;
                        let load_one = &load_one;
                        s.spawn(move || {
                            (t..shards.len())
                                .step_by(threads)
                                .map(|i| (i, load_one(i, &shards[i])))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles.into_iter().flat_map(join).collect()
            })
        };
        drop(shards);
        loaded.sort_unstable_by_key(|(index, _)| *index);
        let mut docs = Vec::with_capacity(loaded.len());
        let mut entries = Vec::new();
        for (index, result) in loaded {
            match result {
                Ok((mut doc, (records, conflicted))) => {
                    doc.conflicted = conflicted;
                    docs.push(doc);
                    entries.extend(records);
                }
                Err(source) => {
                    let shard = ShardIndex::try_from(index).unwrap_or(ShardIndex::MAX);
                    return Err(Error::Load { shard, source });
                }
            }
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            doctype: doctype.to_owned(),
            actor,
            shards: docs,
            records: entries.into_iter().collect(),
            workers,
            note: None,
        })
    }

    /// Sets the message every later local change carries (`None`: none).
    /// A shared collection's changes name the access list state they were
    /// written under this way, so every replica judges them by it.
    pub fn set_note(&mut self, note: Option<String>) {
        self.note = note;
    }

    /// The message local changes carry now.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Sets what signs every later local change (`None`: nothing). A shared
    /// collection's changes are signed by their author device this way (see
    /// [`authorship`]); an endorsing signer also signs, now and on merge,
    /// every change that carries no signature.
    pub fn set_signer(&mut self, signer: Option<Signer>) {
        for shard in &mut self.shards {
            shard.set_signer(signer.clone());
        }
    }

    /// The signature held for one change of one shard.
    pub fn authorship(&self, shard: ShardIndex, hash: &ChangeHash) -> Option<&Authorship> {
        let index = self.check_shard(shard).ok()?;
        self.shards[index].authorship(hash)
    }

    /// The doctype.
    pub fn doctype(&self) -> &str {
        &self.doctype
    }

    /// The actor this replica writes as.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The number of shards, fixed at creation.
    pub fn shard_count(&self) -> u16 {
        // `new` and `load` bound the count by MAX_SHARDS.
        u16::try_from(self.shards.len()).unwrap_or(MAX_SHARDS)
    }

    /// The shard holding `id`.
    pub fn shard_of(&self, id: &str) -> ShardIndex {
        shard_of(id, self.shard_count())
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the collection has no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record `id`, with `_id` and `_rev`.
    pub fn get(&self, id: &str) -> Option<&Value> {
        self.records.get(id)
    }

    /// Every record by id, each with `_id` and `_rev`.
    pub fn records(&self) -> &BTreeMap<String, Value> {
        &self.records
    }

    /// Peers' changes that reached this collection since it was loaded or
    /// created, and how many were new.
    pub fn arrivals(&self) -> Arrivals {
        self.shards
            .iter()
            .fold(Arrivals::default(), |sum, shard| Arrivals {
                received: sum.received + shard.arrivals.received,
                new: sum.new + shard.arrivals.new,
            })
    }

    /// Every concurrent version of the record `id`, the one [`Self::get`]
    /// shows first; empty when there is no such record. Two replicas that
    /// create one id concurrently leave two versions; both stay, and the
    /// next write puts its content into both (see the module docs). A
    /// reader that knows how its records merge reads them all; the view
    /// shows the first with the merged revision of all.
    pub fn versions(&self, id: &str) -> Vec<Value> {
        if record::validate_id(id).is_err() {
            return Vec::new();
        }
        let shard = self.shard_of(id);
        let count = self.shard_count();
        view::versions(&self.shards[usize::from(shard)].doc, id, shard, count)
    }

    /// Writes one record. `body` must be a JSON object; its `_id`, if any, must
    /// equal `id`, and its `_rev` is ignored in favour of `mode`. `at_ms` (Unix
    /// milliseconds) becomes the Automerge change time, in whole seconds as
    /// Automerge defines it.
    pub fn put(
        &mut self,
        id: &str,
        body: Value,
        mode: PutMode,
        at_ms: i64,
    ) -> Result<Written, Error> {
        let fields = record::prepare(id, body)?;
        let before = self.records.get(id);
        check_mode(id, before, &mode)?;
        let after = with_rev(fields, before.and_then(view::rev_of))?;
        let index = usize::from(self.shard_of(id));
        let shard = &mut self.shards[index];
        let mut tx = shard.doc.transaction();
        let written = match before.and_then(Value::as_object) {
            None => write::create(&mut tx, id, &after),
            Some(old) => write::update(&mut tx, id, old, &after),
        };
        if let Err(e) = written {
            tx.rollback();
            return Err(e.into());
        }
        let (hash, _) = tx.commit_with(commit_options(at_ms, self.note.as_deref()));
        shard.committed(hash);
        let rev = view::rev_of_map(&after);
        let after = Value::Object(after);
        let before = self.records.insert(id.to_owned(), after.clone());
        Ok(Written {
            id: id.to_owned(),
            rev,
            deleted: false,
            before,
            after: Some(after),
        })
    }

    /// Writes many records at once: one Automerge change per touched shard,
    /// shards written in parallel. Every record is validated, and every
    /// [`PutMode::Create`] checked for conflicts (including an id repeated in
    /// the batch), before anything is written: an error means nothing was.
    /// With [`PutMode::Upsert`] a repeated id is written in order, each write
    /// reported. Results are in input order.
    pub fn put_many(
        &mut self,
        items: Vec<(String, Value)>,
        mode: PutMode,
        at_ms: i64,
    ) -> Result<Vec<Written>, Error> {
        if matches!(mode, PutMode::Update { .. }) {
            return Err(Error::BulkUpdate);
        }
        if items.len() > MAX_BATCH_RECORDS {
            return Err(Error::BatchTooLarge { len: items.len() });
        }
        let plans = self.plan_batch(items, &mode)?;
        let mut per_shard: Vec<Vec<&Plan>> = vec![Vec::new(); self.shards.len()];
        for plan in &plans {
            per_shard[usize::from(plan.shard)].push(plan);
        }
        let jobs: Vec<(&mut Shard, Vec<&Plan>)> = self
            .shards
            .iter_mut()
            .zip(per_shard)
            .filter(|(_, plans)| !plans.is_empty())
            .collect();
        let threads = if plans.len() >= PARALLEL_MIN_RECORDS {
            self.workers.min(jobs.len())
        } else {
            1
        };
        if let Err(e) = run_jobs(jobs, threads, at_ms, self.note.as_deref()) {
            let ids: Vec<String> = plans.into_iter().map(|p| p.id).collect();
            self.refresh(&ids);
            return Err(e.into());
        }
        let mut out = Vec::with_capacity(plans.len());
        for plan in plans {
            let rev = view::rev_of_map(&plan.after);
            let after = Value::Object(plan.after);
            self.records.insert(plan.id.clone(), after.clone());
            out.push(Written {
                id: plan.id,
                rev,
                deleted: false,
                before: plan.before,
                after: Some(after),
            });
        }
        Ok(out)
    }

    /// Validates a batch and decides each record's revision, in input order.
    fn plan_batch(&self, items: Vec<(String, Value)>, mode: &PutMode) -> Result<Vec<Plan>, Error> {
        let count = self.shard_count();
        let mut latest: HashMap<String, usize> = HashMap::new();
        let mut plans: Vec<Plan> = Vec::with_capacity(items.len());
        for (id, body) in items {
            let fields = record::prepare(&id, body)?;
            let before: Option<Value> = match latest.get(&id) {
                Some(&i) => Some(Value::Object(plans[i].after.clone())),
                None => self.records.get(&id).cloned(),
            };
            check_mode(&id, before.as_ref(), mode)?;
            let after = with_rev(fields, before.as_ref().and_then(view::rev_of))?;
            latest.insert(id.clone(), plans.len());
            plans.push(Plan {
                shard: shard_of(&id, count),
                id,
                before,
                after,
            });
        }
        Ok(plans)
    }

    /// Deletes a record, checking `expected_rev` when given. Returns the
    /// tombstone revision.
    pub fn delete(
        &mut self,
        id: &str,
        expected_rev: Option<&str>,
        at_ms: i64,
    ) -> Result<Written, Error> {
        record::validate_id(id)?;
        let current = self
            .records
            .get(id)
            .ok_or_else(|| Error::NotFound { id: id.to_owned() })?;
        let current_rev = view::rev_of(current).unwrap_or_default().to_owned();
        if expected_rev.is_some_and(|expected| expected != current_rev) {
            return Err(Error::Conflict {
                id: id.to_owned(),
                current: Some(current_rev),
            });
        }
        let index = usize::from(self.shard_of(id));
        let shard = &mut self.shards[index];
        let mut tx = shard.doc.transaction();
        if let Err(e) = write::delete(&mut tx, id) {
            tx.rollback();
            return Err(e.into());
        }
        let (hash, _) = tx.commit_with(commit_options(at_ms, self.note.as_deref()));
        shard.committed(hash);
        let before = self.records.remove(id);
        Ok(Written {
            id: id.to_owned(),
            rev: rev::tombstone(&current_rev),
            deleted: true,
            before,
            after: None,
        })
    }

    /// The incremental bytes of every shard changed since the last call, local
    /// writes and merged peer changes alike. Persist them, appended to each
    /// shard's chunk list, before acknowledging the writes they carry.
    pub fn take_chunks(&mut self) -> Vec<ShardChunk> {
        let mut out = Vec::new();
        for (index, shard) in self.shards.iter_mut().enumerate() {
            if let Some(bytes) = shard.take_chunk() {
                out.push(ShardChunk {
                    shard: ShardIndex::try_from(index).unwrap_or(ShardIndex::MAX),
                    bytes,
                });
            }
        }
        out
    }

    /// A full save of one shard, to replace its whole chunk list. Changes not
    /// yet taken by [`Collection::take_chunks`] are included and count as taken.
    pub fn compact_shard(&mut self, shard: ShardIndex) -> Result<Vec<u8>, Error> {
        let index = self.check_shard(shard)?;
        Ok(self.shards[index].compact())
    }

    /// Applies a peer's changes to one shard (any mix of saves, incremental
    /// saves and change chunks), refreshes the view for exactly the records
    /// the changes touched, and reports those whose view changed. On error the
    /// shard and the view are unchanged. Changes whose dependencies have not
    /// arrived wait inside Automerge and take effect with a later merge.
    /// Compressed parts may inflate to at most [`MAX_INFLATED_BYTES`]; record
    /// sizes are not bounded here ([`Collection::sync_receive`], the path a
    /// peer's changes take, bounds them).
    pub fn merge_shard(&mut self, shard: ShardIndex, bytes: &[u8]) -> Result<Vec<Written>, Error> {
        let bounds = Bounds {
            max_inflated: MAX_INFLATED_BYTES,
            max_record: usize::MAX,
        };
        self.merge_bounded(shard, bytes, bounds, None, &[])
    }

    fn merge_bounded(
        &mut self,
        shard: ShardIndex,
        bytes: &[u8],
        Bounds {
            max_inflated,
            max_record,
        }: Bounds,
        gate: Option<ChangeGate<'_>>,
        offered: &[Authorship],
    ) -> Result<Vec<Written>, Error> {
        let index = self.check_shard(shard)?;
        if bytes.len() > MAX_MERGE_BYTES {
            return Err(Error::MergeTooLarge { len: bytes.len() });
        }
        let count = self.shard_count();
        let touched = self.shards[index]
            .merge(bytes, max_inflated, gate, offered, |doc, id| {
                view::check_placement(doc, id, shard, count)?;
                let record = view::read_one(doc, id, shard, count);
                // The same bound as a local write, on what the merge leaves.
                if let Some(value) = &record {
                    let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
                    if size > max_record {
                        return Err(DecodeError::RecordTooLarge {
                            id: id.to_owned(),
                            size,
                            limit: max_record,
                        });
                    }
                }
                Ok(record)
            })
            .map_err(|source| Error::Merge { shard, source })?;
        let mut out = Vec::new();
        for (id, now) in touched {
            if let Some(written) = self.set_view(id, now) {
                out.push(written);
            }
        }
        Ok(out)
    }

    /// The heads of one shard's document.
    pub fn shard_heads(&self, shard: ShardIndex) -> Result<Vec<ChangeHash>, Error> {
        let index = self.check_shard(shard)?;
        Ok(self.shards[index].doc.get_heads())
    }

    /// The hashes of the changes in one shard that are not in the causal
    /// past of `heads` (all of them for no heads): what a store holding
    /// exactly `heads` lacks. `heads` must be known to the shard.
    pub fn shard_changes_since(
        &self,
        shard: ShardIndex,
        heads: &[ChangeHash],
    ) -> Result<Vec<ChangeHash>, Error> {
        let index = self.check_shard(shard)?;
        Ok(self.shards[index]
            .doc
            .get_changes(heads)
            .iter()
            .map(|c| c.hash())
            .collect())
    }

    /// A digest of one shard's heads: the first 8 bytes of BLAKE3 over the
    /// sorted heads, or [`EMPTY_SHARD_DIGEST`] for a shard without changes.
    /// Two replicas whose digests match hold the same changes (up to a 2^-64
    /// collision), which is what lets a sync session skip in-sync shards.
    pub fn shard_digest(&self, shard: ShardIndex) -> Result<ShardDigest, Error> {
        let mut heads = self.shard_heads(shard)?;
        if heads.is_empty() {
            return Ok(EMPTY_SHARD_DIGEST);
        }
        heads.sort_unstable();
        let mut hasher = blake3::Hasher::new();
        for head in &heads {
            hasher.update(&head.0);
        }
        let mut digest = [0u8; 8];
        digest.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        Ok(digest)
    }

    /// The next Automerge sync message for one shard given the sync `state`
    /// with a peer, or `None` when the peer needs nothing more for now, with
    /// the signatures held for the changes it carries. Automerge can panic
    /// on a state a peer's messages made inconsistent; that panic becomes
    /// [`Error::SyncPanicked`].
    pub fn sync_generate(
        &self,
        shard: ShardIndex,
        state: &mut sync::State,
    ) -> Result<Option<(sync::Message, Vec<Authorship>)>, Error> {
        let index = self.check_shard(shard)?;
        let shard_doc = &self.shards[index];
        let doc = &shard_doc.doc;
        // What the message carries is what it adds to the sent set.
        let before = shard_doc
            .has_authorships()
            .then(|| state.sent_hashes.clone());
        let message = catch_unwind(AssertUnwindSafe(|| doc.generate_sync_message(state))).map_err(
            |payload| Error::SyncPanicked {
                shard,
                message: shard::panic_message(payload.as_ref()),
            },
        )?;
        Ok(message.map(|message| {
            let signed = match &before {
                Some(before) => shard_doc.authorships_for(state.sent_hashes.difference(before)),
                None => Vec::new(),
            };
            (message, signed)
        }))
    }

    /// Applies a peer's sync message to one shard, with the signatures it
    /// carried (`offered`). The message's changes go
    /// through the same path as [`Collection::merge_shard`] (bounded inflate
    /// check, all-or-nothing, panic-guarded, view updated), with compressed
    /// parts bounded by `bounds.max_inflated` bytes; only then does Automerge see the
    /// rest of the message, without changes, to update `state`. Returns the
    /// records whose view changed. On error the shard and the view are
    /// unchanged, and `state` may not be: drop the session. On
    /// [`DecodeError::Waiting`] nothing at all changed, `state` included.
    pub fn sync_receive(
        &mut self,
        shard: ShardIndex,
        state: &mut sync::State,
        mut message: sync::Message,
        offered: &[Authorship],
        bounds: Bounds,
        gate: Option<ChangeGate<'_>>,
    ) -> Result<Vec<Written>, Error> {
        let index = self.check_shard(shard)?;
        // Automerge trusts a filter's parameters: each probe costs memory and
        // a loop turn per change checked when the reply is generated.
        for have in &message.have {
            check_bloom(shard, &have.bloom.to_bytes())?;
        }
        let total = message
            .changes
            .iter()
            .try_fold(0usize, |sum, chunk| sum.checked_add(chunk.len()))
            .unwrap_or(usize::MAX);
        if total > MAX_MERGE_BYTES {
            return Err(Error::MergeTooLarge { len: total });
        }
        let had_changes = !message.changes.is_empty();
        let written = if had_changes {
            let bytes: Vec<u8> = message.changes.iter().flatten().copied().collect();
            self.merge_bounded(shard, &bytes, bounds, gate, offered)?
        } else {
            Vec::new()
        };
        message.changes = sync::ChunkList::empty();
        // Automerge leaves `last_sent_heads` alone when a message carries
        // changes (so that the reply acknowledges them); it sees none here, so
        // keep the value it would have kept.
        let last_sent = state.last_sent_heads.clone();
        let doc = &mut self.shards[index].doc;
        let received = catch_unwind(AssertUnwindSafe(|| {
            doc.receive_sync_message(state, message)
        }));
        match received {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Error::Merge {
                    shard,
                    source: DecodeError::Automerge(e),
                });
            }
            Err(payload) => {
                return Err(Error::Merge {
                    shard,
                    source: DecodeError::Panicked {
                        message: shard::panic_message(payload.as_ref()),
                    },
                });
            }
        }
        if had_changes {
            state.last_sent_heads = last_sent;
        }
        Ok(written)
    }

    /// A full save of every shard, in shard order, for export or inspection
    /// with other Automerge tools. Unlike [`Collection::compact_shard`] this
    /// does not count as persisting anything. Because every shard writes as
    /// its own actor ([`shard_actor`]), the saves concatenated load as one
    /// Automerge document whose root maps every `_id` to its record.
    pub fn export_automerge(&self) -> Vec<Vec<u8>> {
        self.shards.iter().map(|s| s.doc.save()).collect()
    }

    fn check_shard(&self, shard: ShardIndex) -> Result<usize, Error> {
        let index = usize::from(shard);
        if index < self.shards.len() {
            Ok(index)
        } else {
            Err(Error::NoSuchShard {
                shard,
                count: self.shard_count(),
            })
        }
    }

    /// Sets the view of `id` to `now`, reporting the change if there is one.
    fn set_view(&mut self, id: String, now: Option<Value>) -> Option<Written> {
        let before = self.records.get(&id);
        let unchanged = match (before, &now) {
            (None, None) => true,
            (Some(a), Some(b)) => record::exact_eq(a, b),
            _ => false,
        };
        if unchanged {
            return None;
        }
        match now {
            Some(after) => {
                let rev = view::rev_of(&after).unwrap_or_default().to_owned();
                let before = self.records.insert(id.clone(), after.clone());
                Some(Written {
                    id,
                    rev,
                    deleted: false,
                    before,
                    after: Some(after),
                })
            }
            None => {
                let before = self.records.remove(&id);
                let last = before.as_ref().and_then(view::rev_of).unwrap_or_default();
                Some(Written {
                    rev: rev::tombstone(last),
                    id,
                    deleted: true,
                    before,
                    after: None,
                })
            }
        }
    }

    /// Re-reads `ids` from the documents into the view.
    fn refresh(&mut self, ids: &[String]) {
        let count = self.shard_count();
        for id in ids {
            let shard = shard_of(id, count);
            let now = view::read_one(&self.shards[usize::from(shard)].doc, id, shard, count);
            self.set_view(id.clone(), now);
        }
    }
}

fn check_mode(id: &str, current: Option<&Value>, mode: &PutMode) -> Result<(), Error> {
    let current_rev = current.map(|c| view::rev_of(c).unwrap_or_default());
    let ok = match (mode, current_rev) {
        (PutMode::Upsert, _) => true,
        (PutMode::Create, existing) => existing.is_none(),
        (PutMode::Update { expected_rev }, existing) => existing == Some(expected_rev.as_str()),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Conflict {
            id: id.to_owned(),
            current: current_rev.map(str::to_owned),
        })
    }
}

/// Adds the next revision after `prev` to a prepared record.
fn with_rev(
    mut fields: Map<String, Value>,
    prev: Option<&str>,
) -> Result<Map<String, Value>, Error> {
    let rev = rev::next(prev, &fields)?;
    fields.insert(REV_KEY.to_owned(), Value::String(rev));
    Ok(fields)
}

/// Automerge change times are Unix seconds.
fn at_secs(at_ms: i64) -> i64 {
    at_ms.div_euclid(1000)
}

fn commit_options(at_ms: i64, note: Option<&str>) -> CommitOptions {
    let options = CommitOptions::default().with_time(at_secs(at_ms));
    match note {
        Some(note) => options.with_message(note),
        None => options,
    }
}

/// Writes each shard's plans in one transaction, on up to `threads` threads.
fn run_jobs(
    jobs: Vec<(&mut Shard, Vec<&Plan>)>,
    threads: usize,
    at_ms: i64,
    note: Option<&str>,
) -> Result<(), AutomergeError> {
    if threads <= 1 {
        for (shard, plans) in jobs {
            write_shard(shard, &plans, at_ms, note)?;
        }
        return Ok(());
    }
    let mut buckets: Vec<Vec<(&mut Shard, Vec<&Plan>)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (n, job) in jobs.into_iter().enumerate() {
        buckets[n % threads].push(job);
    }
    let results: Vec<Result<(), AutomergeError>> = std::thread::scope(|s| {
        let handles: Vec<_> = buckets
            .into_iter()
            .map(|bucket| {
                s.spawn(move || {
                    for (shard, plans) in bucket {
                        write_shard(shard, &plans, at_ms, note)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(join).collect()
    });
    results.into_iter().collect()
}

/// Writes one shard's share of a batch as one change.
fn write_shard(
    shard: &mut Shard,
    plans: &[&Plan],
    at_ms: i64,
    note: Option<&str>,
) -> Result<(), AutomergeError> {
    let all_new = plans.iter().all(|p| p.before.is_none());
    if all_new && !shard.doc.is_empty() {
        // Ids are distinct here, since a repeated id would have a `before`.
        let records: Vec<(&str, &Map<String, Value>)> =
            plans.iter().map(|p| (p.id.as_str(), &p.after)).collect();
        let actor = shard.doc.get_actor().clone();
        let seq = shard.next_seq();
        let change = bulk::create_change(&shard.doc, &actor, seq, at_secs(at_ms), note, &records)?;
        return shard.apply_local(change);
    }
    let mut tx = shard.doc.transaction();
    let result = if all_new {
        // Filling an empty document: one batched insert of the whole root map
        // is cheaper still than the bulk change.
        let mut root = hydrate::Map::default();
        for plan in plans {
            let record = record::to_hydrate_map(&plan.after, |k| k != record::ID_KEY);
            root.insert(
                plan.id.clone(),
                hydrate::MapValue {
                    value: hydrate::Value::Map(record),
                    conflict: false,
                },
            );
        }
        tx.init_root_from_hydrate(&root)
    } else {
        plans.iter().try_for_each(
            |plan| match plan.before.as_ref().and_then(Value::as_object) {
                None => write::create(&mut tx, &plan.id, &plan.after),
                Some(old) => write::update(&mut tx, &plan.id, old, &plan.after),
            },
        )
    };
    match result {
        Ok(()) => {
            let (hash, _) = tx.commit_with(commit_options(at_ms, note));
            shard.committed(hash);
            Ok(())
        }
        Err(e) => {
            tx.rollback();
            Err(e)
        }
    }
}

/// Joins a scoped thread, re-raising its panic on the caller's thread as if
/// the work had run there.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_WORKERS)
}

fn validate_doctype(doctype: &str) -> Result<(), Error> {
    let bytes = doctype.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_DOCTYPE_BYTES
        && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidDoctype {
            doctype: doctype.to_owned(),
        })
    }
}

fn validate_actor(actor: &ActorId) -> Result<(), Error> {
    if actor.to_bytes().is_empty() {
        Err(Error::EmptyActor)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
