//! The engine: the IO around the node's pure core.
//!
//! The engine thread owns the encrypted [`Store`] and a
//! [`hearth_crdt::node::Node`], the sans-IO core that holds the replica, the
//! sync sessions and every rule. It serves jobs from a bounded queue; every
//! caller (the HTTP API, the CLI when no daemon runs, the mesh tasks) holds a
//! cloneable [`Handle`] and gets each reply on a oneshot. A job calls the
//! core with the time and the RNG, then performs the core's outputs in order
//! ([`Engine::perform`]):
//!
//! - `Persist(batch)`: one redb transaction with a durable commit
//!   ([`persist`]); nothing after it is performed before it returns;
//! - `Send`: into the session's bounded outbox, drained by its stream's
//!   writer task; a full outbox ends the session;
//! - `Close`: drops the outbox, which ends the stream;
//! - `MembersChanged`: published on a [`watch`] channel that the network's
//!   admission gate follows;
//! - `Dial` and `Timer`: handed to the mesh ([`Links`]), which dials and
//!   brings the core its tick ([`Handle::link`]);
//! - `Deliver` and `Query`: one request-and-reply exchange each, handed to
//!   the mesh ([`Links`]), whose reply comes back through
//!   [`Handle::share_reply`] or [`Handle::query_reply`];
//! - `Answered`: the result of a query goes to the caller of
//!   [`Handle::query`] waiting for it ([`queries`]).
//!
//! So a write is answered only after its commit is durable, and a peer's
//! frame is answered and forwarded only after what it changed is. If a
//! commit fails, the collections it named are reloaded from the store and
//! every session closes, so memory never runs ahead of what is stored.
//!
//! The rest of the module is one concern per file: [`persist`] (batches to
//! redb, loading the replica), [`changes`] (the changes feed), [`mesh`]
//! (sessions, devices, addresses), [`contacts`], [`shares`] and
//! [`queries`] (federated queries, consent and audit).

use std::collections::{BTreeMap, VecDeque};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use hearth_crdt::collection::{PutMode, Written};
use hearth_crdt::node::{self, Node, Output, Outputs, SessionId};
use hearth_crdt::query::{self, AggregateRequest, FindRequest};
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::EngineConfig;
use crate::home::Home;
use crate::store::{self, Store, Unlock, keys};

mod changes;
mod contacts;
mod mesh;
mod persist;
mod queries;
mod shares;

pub use changes::Changes;
pub use contacts::{ContactDevice, ContactInfo, Delivery};
pub use hearth_crdt::node::{BulkError, Change, IndexDef, Members, check_doctype};
pub use mesh::{Device, Dial, LinkEvent, Links};
pub use queries::QueryExchange;
pub use shares::{ShareInfo, ShareMember};

/// Why an engine job failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The core refused the operation (bad input, conflict, membership).
    #[error(transparent)]
    Node(#[from] node::Error),
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
    /// A catalog row could not be encoded.
    #[error("cannot encode a catalog row: {0}")]
    Encode(#[from] serde_json::Error),
    /// The engine thread has stopped.
    #[error("the engine has stopped")]
    Stopped,
    /// A query had no result within its deadline and the margin after it.
    #[error("query {query} had no result within {waited_ms} ms")]
    NoAnswer {
        /// The query's id.
        query: String,
        /// How long its caller waited.
        waited_ms: u64,
    },
}

impl From<query::Error> for Error {
    fn from(e: query::Error) -> Self {
        Error::Node(node::Error::Query(e))
    }
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

/// One unit of work for the engine thread.
enum Job {
    Run(Box<dyn FnOnce(&mut Engine) + Send>),
    /// Stop after the jobs queued before this one, even while other handles
    /// (network tasks) still exist.
    Shutdown,
}

/// A cloneable client of the engine.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Job>,
    members: watch::Receiver<Members>,
    links: std::sync::Arc<std::sync::Mutex<Option<Links>>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
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
    /// sure the redb file is closed cleanly.
    pub fn stop(self) {
        drop(self.join());
    }

    /// Like [`Running::stop`], for a process that exits right after: the
    /// store is closed, but the loaded records are not freed one by one,
    /// which would add about a tenth of a second per 100k records to every
    /// CLI command. The OS takes the memory back at exit.
    pub fn stop_before_exit(self) {
        if let Some(engine) = self.join() {
            std::mem::forget(engine.core);
        }
    }

    fn join(self) -> Option<Engine> {
        // Network tasks may still hold handles; the engine stops anyway once
        // everything queued before this is done.
        let tx = self.handle.tx.clone();
        if let Err(mpsc::error::TrySendError::Full(job)) = tx.try_send(Job::Shutdown) {
            // A full queue: wait for room from a plain thread, since this one
            // may be driving an async runtime.
            let _ = std::thread::spawn(move || tx.blocking_send(job)).join();
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

/// The engine state, owned by its thread.
pub struct Engine {
    store: Store,
    core: Node,
    config: EngineConfig,
    members: watch::Sender<Members>,
    /// The dials the core asks for, to the network.
    dials: mpsc::Sender<Dial>,
    /// The card exchanges the core asks for, to the network.
    deliveries: mpsc::Sender<Delivery>,
    /// The query exchanges the core asks for, to the network.
    exchanges: mpsc::Sender<QueryExchange>,
    /// Callers of [`Handle::query`] waiting for their result, by query id.
    answers: BTreeMap<String, oneshot::Sender<Value>>,
    /// The one timer the core asks for.
    timer: watch::Sender<Option<node::Millis>>,
    /// The network's ends of `dials` and `timer`, until the handle takes them.
    links: Option<Links>,
    /// The outbox of every open sync stream.
    outboxes: BTreeMap<SessionId, mpsc::Sender<Vec<u8>>>,
    next_session: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("device", &self.core.id())
            .field("collections", &self.core.collections().len())
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch. The engine's only clock read; the pure
/// crates take time as a parameter.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
            .ok_or_else(|| Error::Node(node::Error::NotAMember(key.id())))?;
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
        persist::write_identity(&store, &key, device_name, &log)?;
        let core = Node::new(key, device_name, log, config.node_config());
        Ok(Self::assemble(store, core, config))
    }

    fn assemble(store: Store, core: Node, config: EngineConfig) -> Self {
        let (members, _) = watch::channel(core.members());
        let (dials, dial_rx) = mpsc::channel(config.dial_queue.max(1));
        let (deliveries, delivery_rx) = mpsc::channel(config.deliver_queue.max(1));
        let (exchanges, exchange_rx) = mpsc::channel(config.query_queue.max(1));
        let (timer, timer_rx) = watch::channel(None);
        Engine {
            store,
            core,
            config,
            members,
            dials,
            deliveries,
            exchanges,
            answers: BTreeMap::new(),
            timer,
            links: Some(Links {
                dials: dial_rx,
                deliveries: delivery_rx,
                exchanges: exchange_rx,
                timer: timer_rx,
            }),
            outboxes: BTreeMap::new(),
            next_session: 0,
        }
    }

    /// Opens an existing store and loads every collection.
    pub fn open(home: &Home, unlock: Unlock, config: EngineConfig) -> Result<Self, OpenError> {
        let store = Store::open(home, unlock)?;
        changes::migrate(&store)?;
        let (key, name, log) = persist::read_identity(&store)?;
        let mut core = Node::new(key, &name, log, config.node_config());
        persist::load_all(&store, &mut core)?;
        Ok(Self::assemble(store, core, config))
    }

    /// This device's identity key, for the network layer.
    pub fn device_key(&self) -> &DeviceKey {
        self.core.key()
    }

    /// Whether this device may join another account (see
    /// [`Node::check_may_join`]).
    pub fn check_may_join(&self) -> Result<(), Error> {
        Ok(self.core.check_may_join()?)
    }

    /// Makes this device a member of the account in `log` instead of the
    /// one-device account it was created with (see
    /// [`Node::adopt_account`]).
    pub fn adopt_account(&mut self, log: membership::Log) -> Result<(), Error> {
        let out = self.core.adopt_account(now_ms(), log)?;
        self.perform(out)
    }

    /// Starts the engine on its own thread and returns its handle.
    pub fn spawn(self) -> Result<Running, OpenError> {
        let (tx, mut rx) = mpsc::channel::<Job>(self.config.queue);
        let members = self.members.subscribe();
        let mut engine = self;
        let links = std::sync::Arc::new(std::sync::Mutex::new(engine.links.take()));
        let thread = std::thread::Builder::new()
            .name("hearth-engine".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    match job {
                        Job::Run(run) => run(&mut engine),
                        Job::Shutdown => break,
                    }
                }
                tracing::debug!("engine queue closed");
                engine.compact_before_close();
                engine
            })
            .map_err(OpenError::Thread)?;
        Ok(Running {
            handle: Handle { tx, members, links },
            thread,
        })
    }

    fn damaged(&self, what: &str, reason: impl std::fmt::Display) -> Error {
        persist::damaged(&self.store, what, reason)
    }

    /// Performs the core's outputs in order: each batch durably before
    /// anything after it. See the [module docs](self).
    fn perform(&mut self, out: Outputs) -> Result<(), Error> {
        let mut queue: VecDeque<Output> = out.items.into();
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Persist(batch) => {
                    if let Err(e) = persist::apply(&self.store, &batch) {
                        tracing::error!(error = %e, "commit failed; reloading from the store");
                        self.recover(&batch);
                        return Err(e);
                    }
                }
                Output::Send { session, frame } => {
                    let Some(outbox) = self.outboxes.get(&session) else {
                        continue;
                    };
                    if let Err(e) = outbox.try_send(frame) {
                        let why = match e {
                            mpsc::error::TrySendError::Full(_) => "its outbox is full",
                            mpsc::error::TrySendError::Closed(_) => "its stream is gone",
                        };
                        tracing::info!(session = session.0, why, "ending a sync session");
                        self.outboxes.remove(&session);
                        let more = self.core.handle(
                            now_ms(),
                            &mut rand::rngs::OsRng,
                            node::Input::Closed { session },
                        );
                        queue.extend(more.items);
                    }
                }
                Output::Close {
                    session,
                    peer,
                    reason,
                } => {
                    self.outboxes.remove(&session);
                    match &reason {
                        node::CloseReason::Refused(e) => {
                            tracing::warn!(%peer, error = %e, "closing the sync session");
                        }
                        other => tracing::info!(%peer, why = %other, "sync session closed"),
                    }
                }
                Output::Dial { peer, open_stream } => {
                    let dial = Dial { peer, open_stream };
                    if let Err(mpsc::error::TrySendError::Full(_)) = self.dials.try_send(dial) {
                        tracing::warn!(%peer, "dial queue full; the member is tried when its backoff is next due");
                    }
                }
                Output::Deliver { peer, addrs, frame } => {
                    let delivery = Delivery { peer, addrs, frame };
                    if self.deliveries.try_send(delivery).is_err() {
                        tracing::warn!(%peer, "delivery queue full; the card is sent again later");
                        let (_, more) = self.core.share_reply(now_ms(), peer, None);
                        queue.extend(more.items);
                    }
                }
                Output::Query {
                    exchange,
                    peer,
                    addrs,
                    frame,
                    timeout_ms,
                } => {
                    let sent = QueryExchange {
                        exchange,
                        peer,
                        addrs,
                        frame,
                        timeout_ms,
                    };
                    if self.exchanges.try_send(sent).is_err() {
                        tracing::warn!(%peer, "query exchange queue full; the request counts as undelivered");
                        let more = self.core.query_reply(now_ms(), exchange, None);
                        queue.extend(more.items);
                    }
                }
                Output::Answered { query, result } => match self.answers.remove(&query) {
                    // A caller that gave up dropped its receiver: nothing to do.
                    Some(waiting) => drop(waiting.send(result)),
                    None => tracing::debug!(%query, "a query's result came after its caller left"),
                },
                Output::Timer { at } => {
                    self.timer.send_replace(Some(at));
                }
                Output::MembersChanged(after) => {
                    let before = self.members.borrow().clone();
                    for added in after.devices.difference(&before.devices) {
                        tracing::info!(device = %added, "a device joined the account");
                    }
                    for removed in before.devices.difference(&after.devices) {
                        tracing::info!(device = %removed, "a device was removed from the account");
                    }
                    self.members.send_replace(after);
                }
            }
        }
        Ok(())
    }

    /// After a failed commit: the collections the batch named come back
    /// from the store, and every session closes (peers resync from what is
    /// durable).
    fn recover(&mut self, batch: &node::Batch) {
        if let Err(e) = persist::reload(&self.store, &mut self.core, batch) {
            tracing::error!(error = %e, "reload failed");
        }
        let out = self.core.close_all(now_ms());
        for output in out.items {
            if let Output::Close { session, .. } = output {
                self.outboxes.remove(&session);
            }
        }
    }

    /// Calls the core with the time and the RNG, performs what it asks and
    /// returns its answer.
    fn run<T>(
        &mut self,
        call: impl FnOnce(&mut Node, i64, &mut rand::rngs::OsRng) -> Result<(T, Outputs), node::Error>,
    ) -> Result<T, Error> {
        let (answer, out) = call(&mut self.core, now_ms(), &mut rand::rngs::OsRng)?;
        self.perform(out)?;
        Ok(answer)
    }

    /// Summarises this node.
    pub fn status(&self) -> Status {
        let log = self.core.log();
        let me = self.core.id();
        Status {
            device_id: me.to_string(),
            device_name: self.core.name().to_string(),
            account_id: log.account_id().to_string(),
            devices: log.members().len(),
            store: self.store.path().display().to_string(),
            collections: self.core.collections().len(),
            records: self.core.collections().values().map(|c| c.data.len()).sum(),
            latest_device: log
                .members()
                .into_iter()
                .filter(|m| m.device != me)
                .max_by_key(|m| m.added_at_ms)
                .map(|m| format!("device {} ({}) joined the account", m.device, m.name)),
        }
    }

    fn collection_infos(&self) -> Vec<CollectionInfo> {
        self.core
            .collections()
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

    /// Compacts every shard that gathered at least `compact_min_bytes` of
    /// changes, so the next open loads snapshots instead of replaying
    /// changes (about twice as fast). A failure only costs that speed.
    fn compact_before_close(&mut self) {
        let batch = self.core.compact_due(self.config.compact_min_bytes);
        if batch.writes.is_empty() {
            return;
        }
        if let Err(e) = persist::apply(&self.store, &batch) {
            tracing::warn!(error = %e, "compaction at close failed");
            return;
        }
        // Compaction replaced many chunks with one; give the freed pages back.
        if let Err(e) = self.store.compact() {
            tracing::warn!(error = %e, "shrinking the store file failed");
        }
    }

    fn export(&self, doctype: &str, format: ExportFormat) -> Result<Vec<u8>, Error> {
        let c = self
            .core
            .collection(doctype)?
            .ok_or_else(|| node::Error::NoCollection(doctype.to_string()))?;
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

impl Handle {
    /// Runs `job` on the engine thread and waits for its answer.
    async fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Engine) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        let run = Box::new(move |engine: &mut Engine| {
            // A dropped receiver means the caller gave up; nothing to do then.
            let _ = reply.send(job(engine));
        });
        self.tx
            .send(Job::Run(run))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Queues `job` without waiting for it to run.
    async fn submit(&self, job: impl FnOnce(&mut Engine) + Send + 'static) -> Result<(), Error> {
        self.tx
            .send(Job::Run(Box::new(job)))
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Summarises the node.
    pub async fn status(&self) -> Result<Status, Error> {
        self.call(|e| Ok(e.status())).await
    }

    /// Lists collections.
    pub async fn collections(&self) -> Result<Vec<CollectionInfo>, Error> {
        self.call(|e| Ok(e.collection_infos())).await
    }

    /// Writes one record; returns once it is durable.
    pub async fn put(
        &self,
        doctype: &str,
        id: Option<String>,
        body: Value,
        mode: PutMode,
    ) -> Result<Written, Error> {
        let doctype = doctype.to_owned();
        self.call(move |e| e.run(|n, now, rng| n.put(now, rng, &doctype, id, body, mode)))
            .await
    }

    /// Upserts many records in one durable commit; (id, rev) per record.
    pub async fn put_many(
        &self,
        doctype: &str,
        records: Vec<Value>,
    ) -> Result<Vec<(String, String)>, Error> {
        let doctype = doctype.to_owned();
        let written = self
            .call(move |e| e.run(|n, now, rng| n.put_many(now, rng, &doctype, records)))
            .await?;
        Ok(written.into_iter().map(|w| (w.id, w.rev)).collect())
    }

    /// Writes or deletes many documents in one durable commit.
    pub async fn bulk(
        &self,
        doctype: &str,
        docs: Vec<Value>,
    ) -> Result<Vec<Result<Written, BulkError>>, Error> {
        let doctype = doctype.to_owned();
        self.call(move |e| e.run(|n, now, rng| n.bulk(now, rng, &doctype, docs)))
            .await
    }

    /// Reads one record.
    pub async fn get(&self, doctype: &str, id: &str) -> Result<Value, Error> {
        let (doctype, id) = (doctype.to_owned(), id.to_owned());
        self.call(move |e| Ok(e.core.get(&doctype, &id)?.clone()))
            .await
    }

    /// Reads many records in one round trip; `None` where an id has none.
    pub async fn get_many(
        &self,
        doctype: &str,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Value>>, Error> {
        let doctype = doctype.to_owned();
        self.call(move |e| Ok(e.core.get_many(&doctype, &ids)?))
            .await
    }

    /// Deletes one record.
    pub async fn delete(
        &self,
        doctype: &str,
        id: &str,
        rev: Option<String>,
    ) -> Result<Written, Error> {
        let (doctype, id) = (doctype.to_owned(), id.to_owned());
        self.call(move |e| e.run(|n, now, _| n.delete(now, &doctype, &id, rev.as_deref())))
            .await
    }

    /// A page of records ordered by id, and the total count.
    pub async fn list(
        &self,
        doctype: &str,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<Value>, usize), Error> {
        let doctype = doctype.to_owned();
        self.call(move |e| Ok(e.core.list(&doctype, skip, limit)?))
            .await
    }

    /// Runs a Mango find.
    pub async fn find(&self, doctype: &str, request: FindRequest) -> Result<query::Found, Error> {
        let doctype = doctype.to_owned();
        self.call(move |e| Ok(e.core.find(&doctype, &request)?))
            .await
    }

    /// Runs a grouped aggregate.
    pub async fn aggregate(
        &self,
        doctype: &str,
        request: AggregateRequest,
    ) -> Result<Value, Error> {
        let doctype = doctype.to_owned();
        self.call(move |e| Ok(e.core.aggregate(&doctype, &request)?))
            .await
    }

    /// Declares an index; returns its name and whether it was created.
    pub async fn define_index(
        &self,
        doctype: &str,
        name: Option<String>,
        fields: Vec<String>,
    ) -> Result<(String, bool), Error> {
        let doctype = doctype.to_owned();
        self.call(move |e| e.run(|n, now, _| n.define_index(now, &doctype, name, fields)))
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
        let doctype = doctype.to_owned();
        self.call(move |e| e.changes(&doctype, since, limit, include_docs))
            .await
    }

    /// Exports a collection.
    pub async fn export(&self, doctype: &str, format: ExportFormat) -> Result<Vec<u8>, Error> {
        let doctype = doctype.to_owned();
        self.call(move |e| e.export(&doctype, format)).await
    }
}
