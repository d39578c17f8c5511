//! The engine's side of the mesh: the account's devices and one sync session
//! per connected device.
//!
//! The network layer (see [`crate::mesh`]) moves bytes; everything that reads
//! or changes the replica happens here, on the engine thread, so a peer's
//! changes go through the same single owner as local writes.
//!
//! - **Membership.** The account's membership log lives in the store. Adding a
//!   device (after a confirmed pairing) or removing one appends a signed entry
//!   and commits it before anything else learns of it. Every change of the
//!   member set is published on a [`watch`] channel, which the network layer
//!   follows to admit or disconnect peers.
//! - **Sessions.** A connected member gets a [`sync::Session`]. Inbound frames
//!   go through it; what it merged is committed (chunks, changes feed, sync
//!   states) in one durable transaction *before* any reply is queued, so a
//!   peer never learns that this device holds changes that a crash could
//!   lose. Outbound frames go into the peer's bounded outbox; a peer that
//!   does not drain it is disconnected rather than buffered without end.
//! - **Access.** A frame from a device that is not, or no longer, a member
//!   closes its session, whatever the connection layer did.

use std::collections::{BTreeMap, BTreeSet};

use hearth_crdt::sync;
use hearth_crypto::identity::DeviceId;
use hearth_crypto::membership;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Engine, Error, Handle, now_ms};
use crate::store::{Table, keys};

/// The account's member devices, as the network layer needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// This device.
    pub me: DeviceId,
    /// Every member device, this one included.
    pub devices: BTreeSet<DeviceId>,
}

/// One device of the account, for `hearth devices`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Device {
    /// Its id (its libp2p peer id).
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was added to the account, ms since the Unix epoch.
    pub added_at_ms: u64,
    /// When this device last had a sync session with it; `None` if never.
    pub last_seen_ms: Option<i64>,
    /// Whether a sync session with it is open now.
    pub online: bool,
    /// Whether it is the device answering.
    pub this_device: bool,
}

/// Mesh requests to the engine.
#[derive(Debug)]
pub enum Command {
    /// List the account's devices.
    Devices(oneshot::Sender<Result<Vec<Device>, Error>>),
    /// Add a device whose pairing was confirmed; replies with the welcome
    /// payload (the encoded membership log, which now includes it).
    AddDevice {
        /// The joining device.
        device: DeviceId,
        /// Its name.
        name: String,
        /// Reply.
        reply: oneshot::Sender<Result<Vec<u8>, Error>>,
    },
    /// Remove a device from the account for good.
    RemoveDevice {
        /// The device.
        device: DeviceId,
        /// Reply.
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A sync stream to a member is open: start a session whose frames go to
    /// `outbox`.
    Open {
        /// The authenticated peer.
        peer: DeviceId,
        /// Where this session's outbound frames go.
        outbox: mpsc::Sender<Vec<u8>>,
        /// Reply: the session's number, or refused when the peer is not a
        /// member.
        reply: oneshot::Sender<Result<SessionId, Error>>,
    },
    /// Remember where a member device was reached.
    RememberAddress {
        /// The device.
        peer: DeviceId,
        /// A multiaddr.
        address: String,
        /// Reply.
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A frame arrived on a session.
    Frame {
        /// The session.
        session: SessionId,
        /// The frame, already size-capped by the reader.
        bytes: Vec<u8>,
    },
    /// A session's stream ended.
    Closed {
        /// The session.
        session: SessionId,
    },
}

/// Numbers a sync session, so that a late frame or close of a replaced
/// session never reaches its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(u64);

/// Open sync sessions and what the engine knows of peers.
pub(super) struct State {
    sessions: BTreeMap<DeviceId, Peer>,
    next_session: u64,
    members: watch::Sender<Members>,
    limits: sync::Limits,
}

struct Peer {
    id: SessionId,
    session: sync::Session,
    outbox: mpsc::Sender<Vec<u8>>,
}

impl State {
    pub(super) fn new(members: Members, limits: sync::Limits) -> Self {
        let (members, _) = watch::channel(members);
        Self {
            sessions: BTreeMap::new(),
            next_session: 0,
            members,
            limits,
        }
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<Members> {
        self.members.subscribe()
    }

    fn peer_of(&self, session: SessionId) -> Option<DeviceId> {
        self.sessions
            .iter()
            .find(|(_, p)| p.id == session)
            .map(|(peer, _)| *peer)
    }
}

impl Engine {
    pub(super) fn members(&self) -> Members {
        Members {
            me: self.identity.key.id(),
            devices: self
                .identity
                .log
                .members()
                .into_iter()
                .map(|m| m.device)
                .collect(),
        }
    }

    pub(super) fn handle_mesh(&mut self, command: Command) {
        match command {
            Command::Devices(reply) => {
                let _ = reply.send(self.devices());
            }
            Command::AddDevice {
                device,
                name,
                reply,
            } => {
                let _ = reply.send(self.add_device(device, &name));
            }
            Command::RemoveDevice { device, reply } => {
                let _ = reply.send(self.remove_device(device));
            }
            Command::Open {
                peer,
                outbox,
                reply,
            } => {
                let _ = reply.send(self.open_session(peer, outbox));
            }
            Command::RememberAddress {
                peer,
                address,
                reply,
            } => {
                let _ = reply.send(self.remember_address(peer, address));
            }
            Command::Frame { session, bytes } => self.session_frame(session, &bytes),
            Command::Closed { session } => {
                if let Some(peer) = self.mesh.peer_of(session) {
                    self.close_session(peer, "stream closed");
                }
            }
        }
    }

    fn devices(&self) -> Result<Vec<Device>, Error> {
        let me = self.identity.key.id();
        let txn = self.store.read()?;
        let mut out = Vec::new();
        for member in self.identity.log.members() {
            let id = member.device.to_string();
            let online = self.mesh.sessions.contains_key(&member.device);
            let last_seen_ms = if online || member.device == me {
                Some(now_ms())
            } else {
                txn.get(Table::Peers, &keys::peer_seen_key(&id)?)?
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map(i64::from_be_bytes)
            };
            out.push(Device {
                this_device: member.device == me,
                online: online || member.device == me,
                id,
                name: member.name,
                added_at_ms: member.added_at_ms,
                last_seen_ms,
            });
        }
        Ok(out)
    }

    /// Appends a log entry made by `change`, commits it, and publishes the
    /// new member set.
    fn change_membership(
        &mut self,
        change: impl FnOnce(
            &mut membership::Log,
            &hearth_crypto::identity::DeviceKey,
        ) -> Result<(), membership::Error>,
    ) -> Result<(), Error> {
        let mut log = self.identity.log.clone();
        change(&mut log, &self.identity.key)?;
        self.save_membership(log)
    }

    /// Commits `log` as the account's membership log, then makes it the
    /// engine's and acts on it (see [`Engine::publish_members`]).
    pub(super) fn save_membership(&mut self, log: membership::Log) -> Result<(), Error> {
        self.write_membership(&log)?;
        self.identity.log = log;
        self.publish_members();
        Ok(())
    }

    /// Commits the engine's log after a peer's entries were merged into it
    /// (they were verified on merge), then acts on it.
    fn persist_membership(&mut self) -> Result<(), Error> {
        self.write_membership(&self.identity.log)?;
        self.publish_members();
        Ok(())
    }

    fn write_membership(&self, log: &membership::Log) -> Result<(), Error> {
        let mut txn = self.store.write()?;
        txn.insert(Table::Meta, super::META_MEMBERSHIP, &log.encode())?;
        txn.commit()?;
        Ok(())
    }

    /// Compares the member set with the one last published: sessions of
    /// devices that are no longer members close, and the network layer and
    /// the other devices hear of the change.
    fn publish_members(&mut self) {
        let before = self.mesh.members.borrow().clone();
        let after = self.members();
        if before == after {
            return;
        }
        for added in after.devices.difference(&before.devices) {
            tracing::info!(device = %added, "a device joined the account");
        }
        for removed in before.devices.difference(&after.devices) {
            tracing::info!(device = %removed, "a device was removed from the account");
            self.close_session(*removed, "removed from the account");
        }
        self.mesh.members.send_replace(after);
        // The other devices hear of it now, not at their next reconnect.
        self.broadcast_membership();
    }

    fn add_device(&mut self, device: DeviceId, name: &str) -> Result<Vec<u8>, Error> {
        let at = now_ms().max(0) as u64;
        self.change_membership(|log, key| log.add_device(key, device, name, at).map(drop))?;
        Ok(self.identity.log.encode())
    }

    fn remove_device(&mut self, device: DeviceId) -> Result<(), Error> {
        if device == self.identity.key.id() {
            return Err(Error::RemoveSelf);
        }
        if !self.identity.log.is_member(&device) {
            return Err(Error::NotAMember(device.to_string()));
        }
        let at = now_ms().max(0) as u64;
        self.change_membership(|log, key| log.remove_device(key, device, at).map(drop))
    }
}

impl Handle {
    async fn mesh<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command,
    ) -> Result<T, Error> {
        self.call(|reply| super::Command::Mesh(make(reply))).await
    }

    /// Lists the account's devices.
    pub async fn devices(&self) -> Result<Vec<Device>, Error> {
        self.mesh(Command::Devices).await
    }

    /// Adds a device whose pairing was confirmed and returns the welcome
    /// payload for it.
    pub async fn add_device(&self, device: DeviceId, name: String) -> Result<Vec<u8>, Error> {
        self.mesh(|reply| Command::AddDevice {
            device,
            name,
            reply,
        })
        .await
    }

    /// Removes a device from the account.
    pub async fn remove_device(&self, device: DeviceId) -> Result<(), Error> {
        self.mesh(|reply| Command::RemoveDevice { device, reply })
            .await
    }

    /// Starts a sync session with `peer`, whose frames go to `outbox`.
    pub async fn open_session(
        &self,
        peer: DeviceId,
        outbox: mpsc::Sender<Vec<u8>>,
    ) -> Result<SessionId, Error> {
        self.mesh(|reply| Command::Open {
            peer,
            outbox,
            reply,
        })
        .await
    }

    /// Hands a frame from `peer` to its session. Waits while the engine's
    /// queue is full, which slows the reader down instead of buffering.
    pub async fn session_frame(&self, session: SessionId, bytes: Vec<u8>) -> Result<(), Error> {
        self.tx
            .send(super::Command::Mesh(Command::Frame { session, bytes }))
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Tells the engine that a session's stream ended.
    pub async fn session_closed(&self, session: SessionId) -> Result<(), Error> {
        self.tx
            .send(super::Command::Mesh(Command::Closed { session }))
            .await
            .map_err(|_| Error::Stopped)
    }

    /// The account's member set, updated on every change.
    pub fn members(&self) -> watch::Receiver<Members> {
        self.members.clone()
    }
}

/// The engine's collections and membership log, as the sync layer sees them.
struct EngineReplica<'e> {
    collections: &'e mut BTreeMap<String, super::Loaded>,
    log: &'e mut membership::Log,
    actor: automerge::ActorId,
}

impl Engine {
    fn replica(&mut self) -> EngineReplica<'_> {
        let actor = self.actor();
        EngineReplica {
            collections: &mut self.collections,
            log: &mut self.identity.log,
            actor,
        }
    }

    fn open_session(
        &mut self,
        peer: DeviceId,
        outbox: mpsc::Sender<Vec<u8>>,
    ) -> Result<SessionId, Error> {
        if peer == self.identity.key.id() || !self.identity.log.is_member(&peer) {
            return Err(Error::NotAMember(peer.to_string()));
        }
        let persisted = self.load_sync_states(&peer)?;
        let limits = self.mesh.limits;
        let mut session = sync::Session::new(peer, persisted, limits);
        let hello = session.start(&self.replica())?;
        self.mesh.next_session += 1;
        let id = SessionId(self.mesh.next_session);
        if let Some(old) = self.mesh.sessions.insert(
            peer,
            Peer {
                id,
                session,
                outbox,
            },
        ) {
            tracing::debug!(%peer, old = old.id.0, "a new sync stream replaces the old one");
        }
        self.send_to(peer, hello);
        Ok(id)
    }

    fn load_sync_states(&self, peer: &DeviceId) -> Result<Vec<(String, u16, Vec<u8>)>, Error> {
        let txn = self.store.read()?;
        let mut out = Vec::new();
        for (key, value) in txn.scan_prefix(Table::Peers, &keys::peer_prefix(&peer.to_string())?)? {
            if let Ok(Some((collection, shard))) = keys::decode_peer_sync_key(&key) {
                out.push((collection, shard, value));
            }
        }
        Ok(out)
    }

    /// Queues `frames` for `peer`; a peer whose outbox is full is stalled
    /// and loses its session.
    fn send_to(&mut self, peer: DeviceId, frames: Vec<Vec<u8>>) {
        let Some(p) = self.mesh.sessions.get(&peer) else {
            return;
        };
        for frame in frames {
            if let Err(e) = p.outbox.try_send(frame) {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "its outbox is full",
                    mpsc::error::TrySendError::Closed(_) => "its stream is gone",
                };
                self.close_session(peer, why);
                return;
            }
        }
    }

    pub(super) fn close_session(&mut self, peer: DeviceId, why: &str) {
        if self.mesh.sessions.remove(&peer).is_some() {
            tracing::info!(%peer, why, "sync session closed");
            let seen = (|| -> Result<(), Error> {
                let mut txn = self.store.write()?;
                txn.insert(
                    Table::Peers,
                    &keys::peer_seen_key(&peer.to_string())?,
                    &now_ms().to_be_bytes(),
                )?;
                txn.commit()?;
                Ok(())
            })();
            if let Err(e) = seen {
                tracing::warn!(%peer, error = %e, "cannot record when the peer was last seen");
            }
        }
    }

    fn session_frame(&mut self, session: SessionId, bytes: &[u8]) {
        let Some(peer) = self.mesh.peer_of(session) else {
            return;
        };
        let Some(mut p) = self.mesh.sessions.remove(&peer) else {
            return;
        };
        let heads_before = self.identity.log.heads();
        let result = p.session.receive(&mut self.replica(), bytes);
        self.mesh.sessions.insert(peer, p);
        // Entries the session merged passed the log's checks, even when the
        // frame as a whole was refused afterwards; they are stored either way.
        let log_moved = self.identity.log.heads() != heads_before;
        let effects = match result {
            Ok(effects) => effects,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing the sync session");
                if log_moved && let Err(e) = self.persist_membership() {
                    tracing::error!(error = %e, "cannot store the merged membership log");
                }
                self.close_session(peer, "it sent data this device refuses");
                return;
            }
        };
        if let Err(e) = self.commit_effects(peer, &effects, log_moved) {
            tracing::error!(%peer, error = %e, "cannot store what the peer sent; closing the session");
            self.close_session(peer, "storing its changes failed");
            return;
        }
        // Persisted first, sent second: the peer never learns of changes a
        // crash could still lose.
        self.send_to(peer, effects.send);
        let mut touched: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for (name, shard) in effects.changed {
            touched.entry(name).or_default().push(shard);
        }
        for (name, shards) in touched {
            self.notify_sessions(&name, &shards, Some(peer));
        }
        if effects.membership_changed {
            self.broadcast_membership();
        }
    }

    fn commit_effects(
        &mut self,
        peer: DeviceId,
        effects: &sync::Effects,
        log_moved: bool,
    ) -> Result<(), Error> {
        if log_moved {
            self.persist_membership()?;
        }
        let mut states = Vec::with_capacity(effects.states.len());
        for (collection, shard, bytes) in &effects.states {
            states.push((
                keys::peer_sync_key(&peer.to_string(), collection, *shard)?,
                bytes.clone(),
            ));
        }
        let mut names: BTreeSet<&String> = effects.merged.iter().map(|(n, _)| n).collect();
        names.extend(effects.created.iter());
        if names.is_empty() {
            if !states.is_empty() {
                let mut txn = self.store.write()?;
                for (key, value) in &states {
                    txn.insert(Table::Peers, key, value)?;
                }
                txn.commit()?;
            }
            return Ok(());
        }
        for name in names {
            let written: Vec<&hearth_crdt::collection::Written> = effects
                .merged
                .iter()
                .filter(|(n, _)| n == name)
                .flat_map(|(_, w)| w.iter())
                .collect();
            let rows: Vec<(Table, Vec<u8>, Vec<u8>)> = std::mem::take(&mut states)
                .into_iter()
                .map(|(k, v)| (Table::Peers, k, v))
                .collect();
            self.commit_with(name, &written, &rows)?;
        }
        Ok(())
    }

    /// After a write to `name` (local, or merged from `except`), offers the
    /// changed shards to every other open session.
    pub(super) fn notify_written(
        &mut self,
        name: &str,
        written: &[&hearth_crdt::collection::Written],
    ) {
        if self.mesh.sessions.is_empty() {
            return;
        }
        let Some(loaded) = self.collections.get(name) else {
            return;
        };
        let shards: BTreeSet<u16> = written
            .iter()
            .map(|w| loaded.data.shard_of(&w.id))
            .collect();
        let shards: Vec<u16> = shards.into_iter().collect();
        self.notify_sessions(name, &shards, None);
    }

    fn notify_sessions(&mut self, name: &str, shards: &[u16], except: Option<DeviceId>) {
        self.offer_to_sessions(
            except,
            "offering it our changes failed",
            |session, replica| session.local_change(replica, name, shards),
        );
    }

    /// Sends the membership log to every open session, so a removal reaches
    /// the other devices now.
    fn broadcast_membership(&mut self) {
        self.offer_to_sessions(
            None,
            "sending it the membership log failed",
            |session, replica| session.local_membership_change(replica),
        );
    }

    /// Runs `make` on every open session but `except`'s and queues what it
    /// returns; a session whose frames cannot be made closes with `why`.
    fn offer_to_sessions(
        &mut self,
        except: Option<DeviceId>,
        why: &str,
        mut make: impl FnMut(
            &mut sync::Session,
            &EngineReplica<'_>,
        ) -> Result<Vec<Vec<u8>>, sync::Error>,
    ) {
        let peers: Vec<DeviceId> = self
            .mesh
            .sessions
            .keys()
            .copied()
            .filter(|p| Some(*p) != except)
            .collect();
        for peer in peers {
            let Some(mut p) = self.mesh.sessions.remove(&peer) else {
                continue;
            };
            let frames = make(&mut p.session, &self.replica());
            self.mesh.sessions.insert(peer, p);
            match frames {
                Ok(frames) => self.send_to(peer, frames),
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "closing the sync session");
                    self.close_session(peer, why);
                }
            }
        }
    }
}

impl sync::Replica for EngineReplica<'_> {
    type CreateError = Error;

    fn collection_names(&self) -> Vec<String> {
        self.collections.keys().cloned().collect()
    }

    fn collection(&self, name: &str) -> Option<&hearth_crdt::collection::Collection> {
        self.collections.get(name).map(|l| &l.data)
    }

    fn collection_mut(&mut self, name: &str) -> Option<&mut hearth_crdt::collection::Collection> {
        self.collections.get_mut(name).map(|l| &mut l.data)
    }

    fn create_collection(&mut self, name: &str, shards: u16) -> Result<(), Self::CreateError> {
        // A peer names it: the same rules as a local write's collection.
        super::check_doctype(name)?;
        let data = hearth_crdt::collection::Collection::new(name, shards, self.actor.clone())?;
        self.collections.insert(
            name.to_string(),
            super::Loaded {
                data,
                indexes: Default::default(),
                meta: super::CatalogEntry::new(shards, now_ms()),
            },
        );
        Ok(())
    }

    fn membership(&self) -> &membership::Log {
        self.log
    }

    fn membership_mut(&mut self) -> &mut membership::Log {
        self.log
    }
}

/// Most addresses remembered per peer device.
const MAX_REMEMBERED_ADDRS: usize = 8;

impl Engine {
    /// Remembers an address where `peer` (a member) was reached, so the next
    /// start can dial it. Keeps the newest [`MAX_REMEMBERED_ADDRS`].
    pub fn remember_address(&mut self, peer: DeviceId, address: String) -> Result<(), Error> {
        let key = keys::peer_addrs_key(&peer.to_string())?;
        let mut addrs: Vec<String> = self
            .store
            .read()?
            .get(Table::Peers, &key)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if addrs.first() == Some(&address) {
            return Ok(());
        }
        addrs.retain(|a| *a != address);
        addrs.insert(0, address);
        addrs.truncate(MAX_REMEMBERED_ADDRS);
        let mut txn = self.store.write()?;
        txn.insert(Table::Peers, &key, &serde_json::to_vec(&addrs)?)?;
        txn.commit()?;
        Ok(())
    }

    /// Every remembered address of every other member device.
    pub fn known_addresses(&self) -> Result<Vec<(DeviceId, Vec<String>)>, Error> {
        let me = self.identity.key.id();
        let txn = self.store.read()?;
        let mut out = Vec::new();
        for member in self.identity.log.members() {
            if member.device == me {
                continue;
            }
            let key = keys::peer_addrs_key(&member.device.to_string())?;
            let addrs: Vec<String> = txn
                .get(Table::Peers, &key)?
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            if !addrs.is_empty() {
                out.push((member.device, addrs));
            }
        }
        Ok(out)
    }
}

impl Handle {
    /// Remembers an address of a member device.
    pub async fn remember_address(&self, peer: DeviceId, address: String) -> Result<(), Error> {
        self.mesh(|reply| Command::RememberAddress {
            peer,
            address,
            reply,
        })
        .await
    }
}
