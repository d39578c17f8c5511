//! The engine: the one owner of the replica.
//!
//! The engine holds the encrypted [`Store`], the device identity and every
//! loaded [`Collection`] with its indexes. It runs on its own OS thread,
//! because redb's commits block, and it serves [`Command`]s from a bounded
//! queue. Everyone else (the HTTP API, the CLI when no daemon runs, later the
//! network) holds a cloneable [`Handle`] and gets each reply on a oneshot.
//!
//! A write is applied to the in-memory collection, its Automerge chunks, the
//! changes-feed entry and the catalog row are written in one redb transaction,
//! and the reply is sent only after that transaction's durable commit. If the
//! commit fails, the collection is reloaded from disk so memory never runs
//! ahead of what is stored.

use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use hearth_crdt::collection::{self, Collection, PutMode, Written};
use hearth_crdt::query::{self, AggregateRequest, FindRequest, Index, Indexes};
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::config::EngineConfig;
use crate::home::Home;
use crate::store::{self, Store, Table, Unlock, keys};

mod catalog;
mod mesh;

pub use catalog::{CatalogEntry, IndexDef};
pub use mesh::{Command as MeshCommand, Device, Members, SessionId};

/// Why an engine command failed.
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
    /// A record is larger than `engine.max_record_bytes`.
    #[error("record {id:?} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The record id.
        id: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The store failed or found tampering.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A collection name could not be encoded as a store key.
    #[error(transparent)]
    StoreKey(#[from] keys::Error),
    /// The stored catalog or identity could not be decoded.
    #[error("store {path} holds an unreadable {what}: {reason}")]
    Damaged {
        /// The store file.
        path: String,
        /// What could not be read.
        what: String,
        /// Why.
        reason: String,
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
    /// A catalog row could not be encoded.
    #[error("cannot encode a catalog row: {0}")]
    Encode(#[from] serde_json::Error),
    /// The engine thread has stopped.
    #[error("the engine has stopped")]
    Stopped,
    /// The membership log refused a change.
    #[error(transparent)]
    Membership(#[from] membership::Error),
    /// The device is not a member of this account.
    #[error("device {0} is not a member of this account")]
    NotAMember(String),
    /// A device cannot remove itself here.
    #[error(
        "a device cannot remove itself; run `hearth devices remove` on another device of the account"
    )]
    RemoveSelf,
    /// A sync session failed.
    #[error(transparent)]
    Sync(#[from] hearth_crdt::sync::Error),
    /// Joining an account needs a device without data of its own.
    #[error(
        "this device already holds data or other devices; join another account only from a fresh home"
    )]
    NotEmpty,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::OpenError),
    /// The store opened but its contents could not be loaded.
    #[error(transparent)]
    Load(#[from] Error),
    /// The engine thread could not be spawned.
    #[error("cannot start the engine thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A summary of this node, for `hearth status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// This device's id (also its libp2p peer id).
    pub device_id: String,
    /// This device's name.
    pub device_name: String,
    /// The account this device belongs to.
    pub account_id: String,
    /// Devices in the account's membership log.
    pub devices: usize,
    /// The store file.
    pub store: String,
    /// Number of collections.
    pub collections: usize,
    /// Number of records across all collections.
    pub records: usize,
    /// The device added to the account most recently, as a sentence, when
    /// the account has more than one.
    #[serde(default)]
    pub latest_device: Option<String>,
}

/// One collection in `hearth collections`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// The doctype.
    pub name: String,
    /// Live records.
    pub records: usize,
    /// Automerge documents it is sharded across.
    pub shards: u16,
    /// Declared indexes.
    pub indexes: Vec<IndexDef>,
    /// The latest changes-feed sequence.
    pub last_seq: u64,
}

/// One entry of a collection's changes feed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    /// Sequence of the write that made this change.
    pub seq: u64,
    /// Record id.
    pub id: String,
    /// Revision after the change.
    pub rev: String,
    /// Whether the record was deleted.
    pub deleted: bool,
    /// The record, when asked for and not deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doc: Option<Value>,
}

/// Result of a changes-feed read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Changes {
    /// The latest change of each record changed after `since`, in sequence order.
    pub results: Vec<Change>,
    /// The sequence to pass as `since` next time.
    pub last_seq: u64,
    /// Changes left after `limit`.
    pub pending: usize,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One record per line.
    Jsonl,
    /// One Automerge document holding every record (the shards' changes,
    /// concatenated; `Automerge::load` reads it as one document).
    Automerge,
}

/// A request to the engine, with its reply channel.
#[derive(Debug)]
pub enum Command {
    /// Summarise this node.
    Status(oneshot::Sender<Result<Status, Error>>),
    /// List collections.
    Collections(oneshot::Sender<Result<Vec<CollectionInfo>, Error>>),
    /// Write one record.
    Put {
        /// Collection.
        doctype: String,
        /// Id, or `None` to generate one.
        id: Option<String>,
        /// The record.
        body: Value,
        /// Create, update with a rev, or upsert.
        mode: PutMode,
        /// Reply.
        reply: oneshot::Sender<Result<Written, Error>>,
    },
    /// Write many records in one durable commit.
    PutMany {
        /// Collection.
        doctype: String,
        /// Records; each gets its `_id` or a generated one.
        records: Vec<Value>,
        /// Reply: (id, rev) per record, in order.
        reply: oneshot::Sender<Result<Vec<(String, String)>, Error>>,
    },
    /// Write or delete many documents in one durable commit, each on its own
    /// terms (`_rev` → update, `_deleted: true` → delete, else create), as
    /// CouchDB's `_bulk_docs` does.
    Bulk {
        /// Collection.
        doctype: String,
        /// The documents.
        docs: Vec<Value>,
        /// Reply: one result per document, in order.
        reply: oneshot::Sender<Result<Vec<Result<Written, BulkError>>, Error>>,
    },
    /// Read one record.
    Get {
        /// Collection.
        doctype: String,
        /// Id.
        id: String,
        /// Reply.
        reply: oneshot::Sender<Result<Value, Error>>,
    },
    /// Read many records at once; `None` where an id has no record.
    GetMany {
        /// Collection.
        doctype: String,
        /// Ids.
        ids: Vec<String>,
        /// Reply, one entry per id, in order.
        reply: oneshot::Sender<Result<Vec<Option<Value>>, Error>>,
    },
    /// Delete one record.
    Delete {
        /// Collection.
        doctype: String,
        /// Id.
        id: String,
        /// The rev the caller last saw; `None` deletes whatever is current.
        rev: Option<String>,
        /// Reply.
        reply: oneshot::Sender<Result<Written, Error>>,
    },
    /// All records, ordered by id, paged.
    List {
        /// Collection.
        doctype: String,
        /// Records skipped.
        skip: usize,
        /// Records returned at most.
        limit: usize,
        /// Reply: the page and the total count.
        reply: oneshot::Sender<Result<(Vec<Value>, usize), Error>>,
    },
    /// Mango find.
    Find {
        /// Collection.
        doctype: String,
        /// The request.
        request: Box<FindRequest>,
        /// Reply.
        reply: oneshot::Sender<Result<query::Found, Error>>,
    },
    /// Grouped aggregate.
    Aggregate {
        /// Collection.
        doctype: String,
        /// The request.
        request: Box<AggregateRequest>,
        /// Reply: the aggregate as JSON.
        reply: oneshot::Sender<Result<Value, Error>>,
    },
    /// Declare an index.
    DefineIndex {
        /// Collection.
        doctype: String,
        /// Index name, or `None` to derive one from the fields.
        name: Option<String>,
        /// Indexed fields.
        fields: Vec<String>,
        /// Reply: the index name and whether it was created (false: existed).
        reply: oneshot::Sender<Result<(String, bool), Error>>,
    },
    /// Read the changes feed.
    Changes {
        /// Collection.
        doctype: String,
        /// Only changes after this sequence.
        since: u64,
        /// Most results.
        limit: usize,
        /// Include the records.
        include_docs: bool,
        /// Reply.
        reply: oneshot::Sender<Result<Changes, Error>>,
    },
    /// Devices, pairing and sync sessions.
    Mesh(MeshCommand),
    /// Stop after the commands queued before this one, even while other
    /// handles (network tasks) still exist.
    Shutdown,
    /// Export a collection.
    Export {
        /// Collection.
        doctype: String,
        /// Format.
        format: ExportFormat,
        /// Reply: the bytes.
        reply: oneshot::Sender<Result<Vec<u8>, Error>>,
    },
}

/// One document of a bulk write that failed, and why; the others still apply.
#[derive(Debug)]
pub struct BulkError {
    /// The document's id, if it had or got one.
    pub id: String,
    /// Why it failed.
    pub error: Error,
}

/// A cloneable client of the engine.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    members: tokio::sync::watch::Receiver<Members>,
}

/// The running engine: its handle and its thread.
#[derive(Debug)]
pub struct Running {
    /// The client handle.
    pub handle: Handle,
    thread: JoinHandle<Engine>,
}

impl Running {
    /// Drops this handle and waits for the engine to drain its queue and close
    /// the store. Every acknowledged write is already durable; this only makes
    /// sure the redb file is closed cleanly. Other clones of the handle must be
    /// dropped too, or this waits for them.
    pub fn stop(self) {
        drop(self.join());
    }

    /// Like [`Running::stop`], for a process that exits right after: the
    /// store is closed, but the loaded records are not freed one by one,
    /// which would add about a tenth of a second per 100k records to every
    /// CLI command. The OS takes the memory back at exit.
    pub fn stop_before_exit(self) {
        if let Some(mut engine) = self.join() {
            std::mem::forget(std::mem::take(&mut engine.collections));
        }
    }

    fn join(self) -> Option<Engine> {
        // Network tasks may still hold handles; the engine stops anyway once
        // everything queued before this is done.
        let tx = self.handle.tx.clone();
        if let Err(mpsc::error::TrySendError::Full(command)) = tx.try_send(Command::Shutdown) {
            // A full queue: wait for room from a plain thread, since this one
            // may be driving an async runtime.
            let _ = std::thread::spawn(move || tx.blocking_send(command)).join();
        }
        drop(self.handle);
        match self.thread.join() {
            Ok(engine) => Some(engine),
            Err(_) => {
                tracing::error!("engine thread panicked while stopping");
                None
            }
        }
    }
}

/// The identity this engine runs as.
struct Identity {
    key: DeviceKey,
    name: String,
    log: membership::Log,
}

/// One loaded collection.
struct Loaded {
    data: Collection,
    indexes: Indexes,
    meta: CatalogEntry,
}

/// The engine state, owned by its thread.
pub struct Engine {
    store: Store,
    identity: Identity,
    collections: BTreeMap<String, Loaded>,
    config: EngineConfig,
    mesh: mesh::State,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("device", &self.identity.key.id())
            .field("collections", &self.collections.len())
            .finish_non_exhaustive()
    }
}

/// Bytes of Automerge change chunks that hold about as many records as one
/// byte of a compacted save (measured: 17.1 MiB of chunks against 5.7 MiB of
/// snapshot for the same 100k records).
const INCREMENTAL_PER_SNAPSHOT_BYTE: u64 = 3;

/// Most indexes one collection may declare: each costs memory per record and
/// time on every write.
pub const MAX_INDEXES: usize = 32;

const META_DEVICE_KEY: &[u8] = b"device-key";
const META_DEVICE_NAME: &[u8] = b"device-name";
const META_MEMBERSHIP: &[u8] = b"membership-log";

/// Milliseconds since the Unix epoch. The engine's only clock read; the pure
/// crates take time as a parameter.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Checks a collection name (a cozy doctype such as `io.cozy.notes`).
pub fn check_doctype(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadDoctype(name.to_string()))
    }
}

/// A fresh record id: 32 lowercase hex characters, like cozy-stack's.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Engine {
    /// Creates a new device identity and account in a fresh store, and
    /// returns the engine over it, ready to spawn.
    pub fn init(
        home: &Home,
        unlock: Unlock,
        kdf: hearth_crypto::wrap::KdfParams,
        device_name: &str,
        config: EngineConfig,
    ) -> Result<Self, OpenError> {
        let key = DeviceKey::generate(&mut rand::rngs::OsRng);
        let log = membership::Log::genesis(&key, device_name, now_ms().max(0) as u64);
        Self::create(home, unlock, kdf, key, device_name, log, config)
    }

    /// Creates a fresh store for a device that just joined an existing
    /// account: `key` is the identity it paired with and `log` the account's
    /// membership log from the welcome, which must list it.
    pub fn init_joined(
        home: &Home,
        unlock: Unlock,
        kdf: hearth_crypto::wrap::KdfParams,
        key: DeviceKey,
        log: membership::Log,
        config: EngineConfig,
    ) -> Result<Self, OpenError> {
        let name = log
            .member(&key.id())
            .map(|m| m.name.clone())
            .ok_or_else(|| Error::NotAMember(key.id().to_string()))?;
        Self::create(home, unlock, kdf, key, &name, log, config)
    }

    fn create(
        home: &Home,
        unlock: Unlock,
        kdf: hearth_crypto::wrap::KdfParams,
        key: DeviceKey,
        device_name: &str,
        log: membership::Log,
        config: EngineConfig,
    ) -> Result<Self, OpenError> {
        let store = Store::create(home, unlock, kdf)?;
        let mut txn = store.write().map_err(Error::from)?;
        txn.insert(Table::Meta, META_DEVICE_KEY, key.to_bytes().as_slice())
            .map_err(Error::from)?;
        txn.insert(Table::Meta, META_DEVICE_NAME, device_name.as_bytes())
            .map_err(Error::from)?;
        txn.insert(Table::Meta, META_MEMBERSHIP, &log.encode())
            .map_err(Error::from)?;
        txn.commit().map_err(Error::from)?;
        Ok(Self::assemble(
            store,
            Identity {
                key,
                name: device_name.to_string(),
                log,
            },
            config,
        ))
    }

    fn assemble(store: Store, identity: Identity, config: EngineConfig) -> Self {
        let mut engine = Engine {
            store,
            identity,
            collections: BTreeMap::new(),
            mesh: mesh::State::new(
                Members {
                    me: DeviceKey::from_bytes(&[0; 32]).id(),
                    devices: Default::default(),
                },
                config.sync_limits(),
            ),
            config,
        };
        engine.mesh = mesh::State::new(engine.members(), engine.config.sync_limits());
        engine
    }

    /// This device's identity key, for the network layer.
    pub fn device_key(&self) -> &DeviceKey {
        &self.identity.key
    }

    /// Makes this device a member of the account in `log` instead of the
    /// one-device account it was created with. Allowed only while this
    /// device holds no data and its own account has no other device, so
    /// nothing is orphaned; `hearth join` uses it on an initialised home.
    pub fn adopt_account(&mut self, log: membership::Log) -> Result<(), Error> {
        if !self.collections.is_empty() || self.identity.log.members().len() > 1 {
            return Err(Error::NotEmpty);
        }
        if !log.is_member(&self.identity.key.id()) {
            return Err(Error::NotAMember(self.identity.key.id().to_string()));
        }
        self.save_membership(log)
    }

    /// Opens an existing store and loads every collection.
    pub fn open(home: &Home, unlock: Unlock, config: EngineConfig) -> Result<Self, OpenError> {
        let store = Store::open(home, unlock)?;
        let identity = Self::load_identity(&store)?;
        let mut engine = Self::assemble(store, identity, config);
        let names: Vec<String> = {
            let txn = engine.store.read().map_err(Error::from)?;
            txn.scan_prefix(Table::Collections, b"")
                .map_err(Error::from)?
                .into_iter()
                .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
                .collect()
        };
        for name in names {
            engine.load_collection(&name)?;
        }
        Ok(engine)
    }

    /// Starts the engine on its own thread and returns its handle.
    pub fn spawn(self) -> Result<Running, OpenError> {
        let (tx, mut rx) = mpsc::channel(self.config.queue);
        let members = self.mesh.subscribe();
        let mut engine = self;
        let thread = std::thread::Builder::new()
            .name("hearth-engine".into())
            .spawn(move || {
                while let Some(command) = rx.blocking_recv() {
                    if matches!(command, Command::Shutdown) {
                        break;
                    }
                    engine.handle(command);
                }
                tracing::debug!("engine queue closed");
                engine.compact_before_close();
                engine
            })
            .map_err(OpenError::Thread)?;
        Ok(Running {
            handle: Handle { tx, members },
            thread,
        })
    }

    fn damaged(&self, what: &str, reason: impl std::fmt::Display) -> Error {
        Error::Damaged {
            path: self.store.path().display().to_string(),
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }

    fn load_identity(store: &Store) -> Result<Identity, Error> {
        let damaged = |what: &str, reason: &dyn std::fmt::Display| Error::Damaged {
            path: store.path().display().to_string(),
            what: what.to_string(),
            reason: reason.to_string(),
        };
        let txn = store.read()?;
        let key = txn
            .get(Table::Meta, META_DEVICE_KEY)?
            .ok_or_else(|| damaged("device key", &"it is missing"))?;
        let key: [u8; 32] = key
            .as_slice()
            .try_into()
            .map_err(|_| damaged("device key", &"it is not 32 bytes"))?;
        let key = DeviceKey::from_bytes(&key);
        let name = txn
            .get(Table::Meta, META_DEVICE_NAME)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let log = txn
            .get(Table::Meta, META_MEMBERSHIP)?
            .ok_or_else(|| damaged("membership log", &"it is missing"))?;
        let log = membership::Log::decode(&log).map_err(|e| damaged("membership log", &e))?;
        Ok(Identity { key, name, log })
    }

    /// Loads (or reloads) one collection from the store.
    fn load_collection(&mut self, name: &str) -> Result<(), Error> {
        let txn = self.store.read()?;
        let meta = txn
            .get(Table::Collections, name.as_bytes())?
            .ok_or_else(|| self.damaged("catalog", format!("collection {name} is missing")))?;
        let meta: CatalogEntry = serde_json::from_slice(&meta)
            .map_err(|e| self.damaged(&format!("catalog entry of {name}"), e))?;
        if !meta.is_consistent() {
            return Err(self.damaged(
                &format!("catalog entry of {name}"),
                "its per-shard counters do not match its shard count",
            ));
        }
        let mut shards = vec![Vec::new(); usize::from(meta.shards)];
        let mut found = vec![0u32; usize::from(meta.shards)];
        for (key, value) in txn.scan_prefix(Table::Chunks, &keys::chunk_prefix(name)?)? {
            let shard = keys::decode_chunk_key(&key)
                .map_err(|e| self.damaged("chunk key", format!("in collection {name}: {e}")))?
                .shard;
            if let Some(n) = found.get_mut(usize::from(shard)) {
                *n += 1;
            }
            let slot = shards.get_mut(usize::from(shard)).ok_or_else(|| {
                self.damaged("chunk", format!("shard {shard} of {name} is out of range"))
            })?;
            slot.push(value);
        }
        drop(txn);
        // A chunk whose key was damaged no longer sits under its shard; the
        // catalog's count catches that instead of loading a shorter history.
        if found != meta.chunk_count {
            return Err(self.damaged(
                &format!("chunks of {name}"),
                format!(
                    "expected {:?} chunks per shard, found {found:?}",
                    meta.chunk_count
                ),
            ));
        }
        let data = Collection::load(name, self.actor(), shards)?;
        let mut indexes = Indexes::default();
        for def in &meta.indexes {
            let mut index = Index::new(&def.name, def.fields.clone())?;
            index.rebuild(data.records());
            indexes.define(index);
        }
        self.collections.insert(
            name.to_string(),
            Loaded {
                data,
                indexes,
                meta,
            },
        );
        Ok(())
    }

    fn actor(&self) -> automerge::ActorId {
        automerge::ActorId::from(self.identity.key.id().as_bytes().as_slice())
    }

    /// Summarises this node.
    pub fn status(&self) -> Status {
        Status {
            device_id: self.identity.key.id().to_string(),
            device_name: self.identity.name.clone(),
            account_id: self.identity.log.account_id().to_string(),
            devices: self.identity.log.members().len(),
            store: self.store.path().display().to_string(),
            collections: self.collections.len(),
            records: self.collections.values().map(|c| c.data.len()).sum(),
            latest_device: self
                .identity
                .log
                .members()
                .into_iter()
                .filter(|m| m.device != self.identity.key.id())
                .max_by_key(|m| m.added_at_ms)
                .map(|m| format!("device {} ({}) joined the account", m.device, m.name)),
        }
    }

    fn collection(&self, name: &str) -> Result<Option<&Loaded>, Error> {
        check_doctype(name)?;
        Ok(self.collections.get(name))
    }

    /// The collection, created on first write.
    fn collection_mut(&mut self, name: &str) -> Result<&mut Loaded, Error> {
        check_doctype(name)?;
        if !self.collections.contains_key(name) {
            let shards = self.config.shards;
            let data = Collection::new(name, shards, self.actor())?;
            let meta = CatalogEntry::new(shards, now_ms());
            self.collections.insert(
                name.to_string(),
                Loaded {
                    data,
                    indexes: Indexes::default(),
                    meta,
                },
            );
        }
        self.collections
            .get_mut(name)
            .ok_or_else(|| Error::BadDoctype(name.to_string()))
    }

    fn check_size(&self, id: &str, body: &Value) -> Result<(), Error> {
        let limit = self.config.max_record_bytes;
        let size = serde_json::to_vec(body)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > limit {
            return Err(Error::TooLarge {
                id: id.to_string(),
                size,
                limit,
            });
        }
        Ok(())
    }

    /// Persists what the last writes to `name` changed, durably, then updates
    /// the indexes. On failure the collection is reloaded from disk.
    fn commit(&mut self, name: &str, written: &[&Written]) -> Result<(), Error> {
        self.commit_with(name, written, &[])?;
        self.notify_written(name, written);
        Ok(())
    }

    /// [`Engine::commit`] with extra rows written in the same transaction,
    /// and without offering the changes to peers (the caller does).
    fn commit_with(
        &mut self,
        name: &str,
        written: &[&Written],
        rows: &[(Table, Vec<u8>, Vec<u8>)],
    ) -> Result<(), Error> {
        let result = self.try_commit(name, written, rows);
        if let Err(e) = &result {
            tracing::error!(collection = name, error = %e, "commit failed; reloading collection from the store");
            self.collections.remove(name);
            let exists = self
                .store
                .read()
                .and_then(|t| t.get(Table::Collections, name.as_bytes()))
                .map(|v| v.is_some())
                .unwrap_or(false);
            if exists && let Err(reload) = self.load_collection(name) {
                tracing::error!(collection = name, error = %reload, "reload failed");
            }
        }
        result
    }

    /// Compacts every shard that gathered at least `compact_min_bytes` of
    /// changes, so the next open loads snapshots instead of replaying
    /// changes (about twice as fast). A failure only costs that speed.
    fn compact_before_close(&mut self) {
        let min = self.config.compact_min_bytes;
        let names: Vec<String> = self.collections.keys().cloned().collect();
        let mut compacted = false;
        for name in names {
            match self.compact_collection(&name, min) {
                Ok(any) => compacted |= any,
                Err(e) => {
                    tracing::warn!(collection = %name, error = %e, "compaction at close failed")
                }
            }
        }
        // Compaction replaced many chunks with one; give the freed pages back.
        if compacted && let Err(e) = self.store.compact() {
            tracing::warn!(error = %e, "shrinking the store file failed");
        }
    }

    /// Compacts the shards of `name` whose changes reached `min_bytes`;
    /// returns whether any was.
    fn compact_collection(&mut self, name: &str, min_bytes: u64) -> Result<bool, Error> {
        let Some(loaded) = self.collections.get_mut(name) else {
            return Ok(false);
        };
        let due: Vec<u16> = (0..loaded.meta.shards)
            .filter(|&s| loaded.meta.incremental_bytes[usize::from(s)] >= min_bytes)
            .collect();
        if due.is_empty() {
            return Ok(false);
        }
        let mut meta = loaded.meta.clone();
        let mut txn = self.store.write()?;
        for shard in due {
            compact_shard_into(&mut txn, &mut loaded.data, &mut meta, name, shard)?;
        }
        txn.insert(Table::Collections, name.as_bytes(), &encode_meta(&meta)?)?;
        txn.commit()?;
        loaded.meta = meta;
        Ok(true)
    }

    fn try_commit(
        &mut self,
        name: &str,
        written: &[&Written],
        rows: &[(Table, Vec<u8>, Vec<u8>)],
    ) -> Result<(), Error> {
        let compact_after = self.config.compact_after_chunks;
        let compact_min = self.config.compact_min_bytes;
        let loaded = self
            .collections
            .get_mut(name)
            .ok_or_else(|| Error::BadDoctype(name.to_string()))?;
        let mut meta = loaded.meta.clone();
        let chunks = loaded.data.take_chunks();
        let mut txn = self.store.write()?;
        for chunk in chunks {
            let shard = chunk.shard;
            let slot = usize::from(shard);
            let next = meta.next_chunk[slot];
            let incremental = meta.incremental_bytes[slot] + chunk.bytes.len() as u64;
            // Loading a snapshot is far cheaper than replaying changes, so a
            // shard is compacted once its changes hold about as many records
            // as its snapshot (or pile up in number). Change chunks take about
            // three times the bytes of a snapshot of the same records, hence
            // the factor: the snapshot about doubles between compactions, so
            // their total cost stays within about twice the final save.
            let compact = meta.chunk_count[slot] >= compact_after
                || (meta.chunk_count[slot] >= 1
                    && incremental
                        > (meta.snapshot_bytes[slot] * INCREMENTAL_PER_SNAPSHOT_BYTE)
                            .max(compact_min));
            if compact {
                compact_shard_into(&mut txn, &mut loaded.data, &mut meta, name, shard)?;
            } else {
                txn.insert(
                    Table::Chunks,
                    &keys::chunk_key(name, shard, next)?,
                    &chunk.bytes,
                )?;
                meta.chunk_count[slot] += 1;
                meta.incremental_bytes[slot] = incremental;
                meta.next_chunk[slot] = next + 1;
            }
        }
        if !written.is_empty() {
            meta.last_seq += 1;
            let entries: Vec<Value> = written
                .iter()
                .map(|w| json!([w.id, w.rev, w.deleted]))
                .collect();
            let entries = Value::Array(entries).to_string().into_bytes();
            txn.insert(
                Table::Changes,
                &keys::change_key(name, meta.last_seq)?,
                &entries,
            )?;
        }
        for (table, key, value) in rows {
            txn.insert(*table, key, value)?;
        }
        txn.insert(Table::Collections, name.as_bytes(), &encode_meta(&meta)?)?;
        txn.commit()?;
        loaded.meta = meta;
        for w in written {
            loaded
                .indexes
                .update(&w.id, w.before.as_ref(), w.after.as_ref());
        }
        Ok(())
    }

    fn handle(&mut self, command: Command) {
        // A dropped receiver means the caller gave up; nothing to do then.
        match command {
            Command::Status(reply) => {
                let _ = reply.send(Ok(self.status()));
            }
            Command::Collections(reply) => {
                let _ = reply.send(Ok(self.collection_infos()));
            }
            Command::Put {
                doctype,
                id,
                body,
                mode,
                reply,
            } => {
                let _ = reply.send(self.put(&doctype, id, body, mode));
            }
            Command::PutMany {
                doctype,
                records,
                reply,
            } => {
                let _ = reply.send(self.put_many(&doctype, records));
            }
            Command::Bulk {
                doctype,
                docs,
                reply,
            } => {
                let _ = reply.send(self.bulk(&doctype, docs));
            }
            Command::Get { doctype, id, reply } => {
                let _ = reply.send(self.get(&doctype, &id));
            }
            Command::GetMany {
                doctype,
                ids,
                reply,
            } => {
                let _ = reply.send(self.collection(&doctype).map(|c| {
                    ids.iter()
                        .map(|id| c.and_then(|c| c.data.get(id)).cloned())
                        .collect()
                }));
            }
            Command::Delete {
                doctype,
                id,
                rev,
                reply,
            } => {
                let _ = reply.send(self.delete(&doctype, &id, rev.as_deref()));
            }
            Command::List {
                doctype,
                skip,
                limit,
                reply,
            } => {
                let _ = reply.send(self.list(&doctype, skip, limit));
            }
            Command::Find {
                doctype,
                request,
                reply,
            } => {
                let _ = reply.send(self.find(&doctype, &request));
            }
            Command::Aggregate {
                doctype,
                request,
                reply,
            } => {
                let _ = reply.send(self.aggregate(&doctype, &request));
            }
            Command::DefineIndex {
                doctype,
                name,
                fields,
                reply,
            } => {
                let _ = reply.send(self.define_index(&doctype, name, fields));
            }
            Command::Changes {
                doctype,
                since,
                limit,
                include_docs,
                reply,
            } => {
                let _ = reply.send(self.changes(&doctype, since, limit, include_docs));
            }
            Command::Export {
                doctype,
                format,
                reply,
            } => {
                let _ = reply.send(self.export(&doctype, format));
            }
            Command::Mesh(command) => self.handle_mesh(command),
            Command::Shutdown => {}
        }
    }

    fn collection_infos(&self) -> Vec<CollectionInfo> {
        self.collections
            .iter()
            .map(|(name, c)| CollectionInfo {
                name: name.clone(),
                records: c.data.len(),
                shards: c.data.shard_count(),
                indexes: c.meta.indexes.clone(),
                last_seq: c.meta.last_seq,
            })
            .collect()
    }

    fn put(
        &mut self,
        doctype: &str,
        id: Option<String>,
        body: Value,
        mode: PutMode,
    ) -> Result<Written, Error> {
        let id = id
            .or_else(|| body.get("_id").and_then(Value::as_str).map(String::from))
            .unwrap_or_else(new_id);
        self.check_size(&id, &body)?;
        let loaded = self.collection_mut(doctype)?;
        let written = loaded.data.put(&id, body, mode, now_ms())?;
        self.commit(doctype, &[&written])?;
        Ok(written)
    }

    fn put_many(
        &mut self,
        doctype: &str,
        records: Vec<Value>,
    ) -> Result<Vec<(String, String)>, Error> {
        let mut items = Vec::with_capacity(records.len());
        for body in records {
            let id = body
                .get("_id")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(new_id);
            self.check_size(&id, &body)?;
            items.push((id, body));
        }
        let loaded = self.collection_mut(doctype)?;
        let written = loaded.data.put_many(items, PutMode::Upsert, now_ms())?;
        self.commit(doctype, &written.iter().collect::<Vec<_>>())?;
        Ok(written.into_iter().map(|w| (w.id, w.rev)).collect())
    }

    fn bulk(
        &mut self,
        doctype: &str,
        docs: Vec<Value>,
    ) -> Result<Vec<Result<Written, BulkError>>, Error> {
        let mut results = Vec::with_capacity(docs.len());
        self.collection_mut(doctype)?;
        for mut doc in docs {
            let id = doc
                .get("_id")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(new_id);
            let rev = doc.get("_rev").and_then(Value::as_str).map(String::from);
            let deleted = doc.get("_deleted") == Some(&Value::Bool(true));
            if let Some(map) = doc.as_object_mut() {
                map.remove("_deleted");
            }
            let outcome = self.check_size(&id, &doc).and_then(|()| {
                let data = &mut self.collection_mut(doctype)?.data;
                let written = if deleted {
                    data.delete(&id, rev.as_deref(), now_ms())
                } else {
                    let mode = match rev {
                        Some(expected_rev) => PutMode::Update { expected_rev },
                        None => PutMode::Create,
                    };
                    data.put(&id, doc, mode, now_ms())
                };
                written.map_err(|e| in_collection(doctype, e))
            });
            results.push(outcome.map_err(|error| BulkError { id, error }));
        }
        let written: Vec<&Written> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        self.commit(doctype, &written)?;
        Ok(results)
    }

    fn get(&self, doctype: &str, id: &str) -> Result<Value, Error> {
        self.collection(doctype)?
            .and_then(|c| c.data.get(id))
            .cloned()
            .ok_or_else(|| Error::NotFound {
                doctype: doctype.to_string(),
                id: id.to_string(),
            })
    }

    fn delete(&mut self, doctype: &str, id: &str, rev: Option<&str>) -> Result<Written, Error> {
        let not_found = || Error::NotFound {
            doctype: doctype.to_string(),
            id: id.to_string(),
        };
        // Deleting from a collection that does not exist must not create it.
        if self.collection(doctype)?.is_none() {
            return Err(not_found());
        }
        let loaded = self.collection_mut(doctype)?;
        let written = loaded
            .data
            .delete(id, rev, now_ms())
            .map_err(|e| in_collection(doctype, e))?;
        self.commit(doctype, &[&written])?;
        Ok(written)
    }

    fn list(&self, doctype: &str, skip: usize, limit: usize) -> Result<(Vec<Value>, usize), Error> {
        let Some(c) = self.collection(doctype)? else {
            return Ok((Vec::new(), 0));
        };
        let records = c.data.records();
        let page = records.values().skip(skip).take(limit).cloned().collect();
        Ok((page, records.len()))
    }

    fn find(&self, doctype: &str, request: &FindRequest) -> Result<query::Found, Error> {
        match self.collection(doctype)? {
            Some(c) => Ok(query::find(request, c.data.records(), &c.indexes)?),
            None => Ok(query::find(request, &BTreeMap::new(), &Indexes::default())?),
        }
    }

    fn aggregate(&self, doctype: &str, request: &AggregateRequest) -> Result<Value, Error> {
        let empty = BTreeMap::new();
        let records = match self.collection(doctype)? {
            Some(c) => c.data.records(),
            None => &empty,
        };
        Ok(query::aggregate(request, records.values())?.to_json())
    }

    fn define_index(
        &mut self,
        doctype: &str,
        name: Option<String>,
        fields: Vec<String>,
    ) -> Result<(String, bool), Error> {
        let name = name.unwrap_or_else(|| format!("by-{}", fields.join("-")));
        let mut index = Index::new(&name, fields.clone())?;
        let loaded = self.collection_mut(doctype)?;
        if let Some(existing) = loaded.meta.indexes.iter().find(|d| d.name == name) {
            if existing.fields == fields {
                return Ok((name, false));
            }
            return Err(Error::IndexExists {
                name,
                fields: existing.fields.clone(),
            });
        }
        if loaded.meta.indexes.len() >= MAX_INDEXES {
            return Err(Error::TooManyIndexes {
                doctype: doctype.to_string(),
                limit: MAX_INDEXES,
            });
        }
        index.rebuild(loaded.data.records());
        let previous = loaded.meta.clone();
        loaded.meta.indexes.push(IndexDef {
            name: name.clone(),
            fields,
        });
        if let Err(e) = self.commit(doctype, &[]) {
            if let Some(l) = self.collections.get_mut(doctype) {
                l.meta = previous;
            }
            return Err(e);
        }
        if let Some(l) = self.collections.get_mut(doctype) {
            l.indexes.define(index);
        }
        Ok((name, true))
    }

    fn changes(
        &self,
        doctype: &str,
        since: u64,
        limit: usize,
        include_docs: bool,
    ) -> Result<Changes, Error> {
        let Some(c) = self.collection(doctype)? else {
            return Ok(Changes {
                results: Vec::new(),
                last_seq: 0,
                pending: 0,
            });
        };
        let txn = self.store.read()?;
        // Latest change per id, ordered by the sequence that made it.
        let mut latest: BTreeMap<String, (u64, String, bool)> = BTreeMap::new();
        for row in txn.iter_prefix_from(
            Table::Changes,
            &keys::change_prefix(doctype)?,
            &keys::change_key(doctype, since.saturating_add(1))?,
        )? {
            let (key, value) = row?;
            let seq = keys::decode_change_key(&key)
                .map_err(|e| self.damaged("changes key", format!("{doctype}: {e}")))?
                .seq;
            let entries: Vec<(String, String, bool)> = serde_json::from_slice(&value)
                .map_err(|e| self.damaged(&format!("changes entry {seq} of {doctype}"), e))?;
            for (id, rev, deleted) in entries {
                latest.insert(id, (seq, rev, deleted));
            }
        }
        let mut all: Vec<Change> = latest
            .into_iter()
            .map(|(id, (seq, rev, deleted))| Change {
                doc: (include_docs && !deleted)
                    .then(|| c.data.get(&id).cloned())
                    .flatten(),
                seq,
                id,
                rev,
                deleted,
            })
            .collect();
        all.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.id.cmp(&b.id)));
        let pending = all.len().saturating_sub(limit);
        all.truncate(limit);
        let last_seq = if pending == 0 {
            c.meta.last_seq.max(since)
        } else {
            all.last().map(|c| c.seq).unwrap_or(since)
        };
        Ok(Changes {
            results: all,
            last_seq,
            pending,
        })
    }

    fn export(&self, doctype: &str, format: ExportFormat) -> Result<Vec<u8>, Error> {
        let c = self
            .collection(doctype)?
            .ok_or_else(|| Error::NoCollection(doctype.to_string()))?;
        Ok(match format {
            ExportFormat::Jsonl => {
                let mut out = Vec::new();
                for record in c.data.records().values() {
                    serde_json::to_writer(&mut out, record)
                        .map_err(|e| self.damaged("record", e))?;
                    out.push(b'\n');
                }
                out
            }
            ExportFormat::Automerge => c.data.export_automerge().concat(),
        })
    }
}

/// The catalog row of a collection.
fn encode_meta(meta: &CatalogEntry) -> Result<Vec<u8>, Error> {
    Ok(serde_json::to_vec(meta)?)
}

/// Replaces every stored chunk of `shard` with one full save, in `txn`.
fn compact_shard_into(
    txn: &mut store::WriteTxn<'_>,
    data: &mut Collection,
    meta: &mut CatalogEntry,
    name: &str,
    shard: u16,
) -> Result<(), Error> {
    let slot = usize::from(shard);
    let full = data.compact_shard(shard)?;
    let next = meta.next_chunk[slot];
    txn.remove_prefix(Table::Chunks, &keys::shard_prefix(name, shard)?)?;
    txn.insert(Table::Chunks, &keys::chunk_key(name, shard, next)?, &full)?;
    meta.next_chunk[slot] = next + 1;
    meta.chunk_count[slot] = 1;
    meta.snapshot_bytes[slot] = full.len() as u64;
    meta.incremental_bytes[slot] = 0;
    Ok(())
}

/// A collection's error, with the doctype added where a person needs it.
fn in_collection(doctype: &str, e: collection::Error) -> Error {
    match e {
        collection::Error::NotFound { id } => Error::NotFound {
            doctype: doctype.to_string(),
            id,
        },
        other => Error::Record(other),
    }
}

impl Handle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command,
    ) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Summarises the node.
    pub async fn status(&self) -> Result<Status, Error> {
        self.call(Command::Status).await
    }

    /// Lists collections.
    pub async fn collections(&self) -> Result<Vec<CollectionInfo>, Error> {
        self.call(Command::Collections).await
    }

    /// Writes one record; returns once it is durable.
    pub async fn put(
        &self,
        doctype: &str,
        id: Option<String>,
        body: Value,
        mode: PutMode,
    ) -> Result<Written, Error> {
        self.call(|reply| Command::Put {
            doctype: doctype.to_string(),
            id,
            body,
            mode,
            reply,
        })
        .await
    }

    /// Upserts many records in one durable commit.
    pub async fn put_many(
        &self,
        doctype: &str,
        records: Vec<Value>,
    ) -> Result<Vec<(String, String)>, Error> {
        self.call(|reply| Command::PutMany {
            doctype: doctype.to_string(),
            records,
            reply,
        })
        .await
    }

    /// Writes or deletes many documents in one durable commit.
    pub async fn bulk(
        &self,
        doctype: &str,
        docs: Vec<Value>,
    ) -> Result<Vec<Result<Written, BulkError>>, Error> {
        self.call(|reply| Command::Bulk {
            doctype: doctype.to_string(),
            docs,
            reply,
        })
        .await
    }

    /// Reads one record.
    pub async fn get(&self, doctype: &str, id: &str) -> Result<Value, Error> {
        self.call(|reply| Command::Get {
            doctype: doctype.to_string(),
            id: id.to_string(),
            reply,
        })
        .await
    }

    /// Reads many records in one round trip; `None` where an id has none.
    pub async fn get_many(
        &self,
        doctype: &str,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Value>>, Error> {
        self.call(|reply| Command::GetMany {
            doctype: doctype.to_string(),
            ids,
            reply,
        })
        .await
    }

    /// Deletes one record.
    pub async fn delete(
        &self,
        doctype: &str,
        id: &str,
        rev: Option<String>,
    ) -> Result<Written, Error> {
        self.call(|reply| Command::Delete {
            doctype: doctype.to_string(),
            id: id.to_string(),
            rev,
            reply,
        })
        .await
    }

    /// A page of records ordered by id, and the total count.
    pub async fn list(
        &self,
        doctype: &str,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<Value>, usize), Error> {
        self.call(|reply| Command::List {
            doctype: doctype.to_string(),
            skip,
            limit,
            reply,
        })
        .await
    }

    /// Runs a Mango find.
    pub async fn find(&self, doctype: &str, request: FindRequest) -> Result<query::Found, Error> {
        self.call(|reply| Command::Find {
            doctype: doctype.to_string(),
            request: Box::new(request),
            reply,
        })
        .await
    }

    /// Runs a grouped aggregate.
    pub async fn aggregate(
        &self,
        doctype: &str,
        request: AggregateRequest,
    ) -> Result<Value, Error> {
        self.call(|reply| Command::Aggregate {
            doctype: doctype.to_string(),
            request: Box::new(request),
            reply,
        })
        .await
    }

    /// Declares an index.
    pub async fn define_index(
        &self,
        doctype: &str,
        name: Option<String>,
        fields: Vec<String>,
    ) -> Result<(String, bool), Error> {
        self.call(|reply| Command::DefineIndex {
            doctype: doctype.to_string(),
            name,
            fields,
            reply,
        })
        .await
    }

    /// Reads the changes feed.
    pub async fn changes(
        &self,
        doctype: &str,
        since: u64,
        limit: usize,
        include_docs: bool,
    ) -> Result<Changes, Error> {
        self.call(|reply| Command::Changes {
            doctype: doctype.to_string(),
            since,
            limit,
            include_docs,
            reply,
        })
        .await
    }

    /// Exports a collection.
    pub async fn export(&self, doctype: &str, format: ExportFormat) -> Result<Vec<u8>, Error> {
        self.call(|reply| Command::Export {
            doctype: doctype.to_string(),
            format,
            reply,
        })
        .await
    }
}
