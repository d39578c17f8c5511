//! The engine's side of the mesh: sync streams handed to the core, the
//! account's devices, and the addresses where they were reached.
//!
//! Everything a session decides (what to send, what to persist first, whom
//! to forward to, who may stay) is the core's ([`hearth_crdt::node::mesh`]).
//! Here a stream becomes a [`SessionId`] with a bounded outbox, its frames
//! become core inputs, and the member set the core publishes reaches the
//! network layer through [`Handle::members`]. The core's dials and timer
//! go out as [`Links`]; what the network learns of a member comes back in
//! as a [`LinkEvent`].

use hearth_crdt::node::{self, Input, Node, Outputs};
use hearth_crypto::identity::DeviceId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::{Engine, Error, Handle, Members, SessionId, now_ms};
use crate::store::{Table, keys};

/// A dial the core asked for ([`hearth_crdt::node::Output::Dial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dial {
    /// The member.
    pub peer: DeviceId,
    /// Whether this side opens the sync stream (else it only connects).
    pub open_stream: bool,
}

/// What the core asks of the network: its dials, and the instant it wants
/// its next [`Input::Tick`] (core time, ms). Taken once, by the mesh
/// ([`Handle::take_links`]).
#[derive(Debug)]
pub struct Links {
    /// Dials, in order; bounded by `[engine] dial_queue`.
    pub dials: mpsc::Receiver<Dial>,
    /// Card exchanges, in order; bounded by `[contacts] deliver_queue`.
    pub deliveries: mpsc::Receiver<super::Delivery>,
    /// Query exchanges, in order; bounded by `[queries] exchange_queue`.
    pub exchanges: mpsc::Receiver<super::QueryExchange>,
    /// The one timer: a newer value replaces the older.
    pub timer: watch::Receiver<Option<node::Millis>>,
}

/// What the network tells the core about links ([`Handle::link`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// A way to this member is known now (a new address).
    Reachable(DeviceId),
    /// The transport connected to this member.
    Connected(DeviceId),
    /// The core's timer fired.
    Tick,
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

/// Most addresses remembered per peer device (eight).
const MAX_REMEMBERED_ADDRS: usize = 16;

impl Engine {
    fn devices(&self) -> Result<Vec<Device>, Error> {
        let me = self.core.id();
        let txn = self.store.read()?;
        let connected: Vec<DeviceId> = self.core.connected().copied().collect();
        let mut out = Vec::new();
        for member in self.core.log().members() {
            let online = connected.contains(&member.device) || member.device == me;
            let last_seen_ms = if online {
                Some(now_ms())
            } else {
                txn.get(Table::Peers, &keys::peer_seen_key(&member.device))?
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map(i64::from_be_bytes)
            };
            out.push(Device {
                this_device: member.device == me,
                online,
                id: member.device.to_string(),
                name: member.name,
                added_at_ms: member.added_at_ms,
                last_seen_ms,
            });
        }
        Ok(out)
    }

    fn open_session(
        &mut self,
        peer: DeviceId,
        outbox: mpsc::Sender<Vec<u8>>,
    ) -> Result<SessionId, Error> {
        let states = self.sync_states(&peer)?;
        self.next_session += 1;
        let session = SessionId(self.next_session);
        self.outboxes.insert(session, outbox);
        let out = self.core.handle(
            now_ms(),
            &mut rand::rngs::OsRng,
            Input::Opened {
                session,
                peer,
                states,
            },
        );
        self.perform(out)?;
        if self.outboxes.contains_key(&session) {
            Ok(session)
        } else {
            Err(Error::Node(node::Error::NotAMember(peer)))
        }
    }

    fn sync_states(&self, peer: &DeviceId) -> Result<Vec<(String, u16, Vec<u8>)>, Error> {
        let txn = self.store.read()?;
        let mut out = Vec::new();
        for (key, value) in txn.scan_prefix(Table::Peers, &keys::peer_prefix(peer))? {
            if let Ok(Some((collection, shard))) = keys::decode_peer_sync_key(&key) {
                out.push((collection, shard, value));
            }
        }
        Ok(out)
    }

    fn session_input(&mut self, input: Input) {
        if let Input::Closed { session } = &input {
            self.outboxes.remove(session);
        }
        let out = self.core.handle(now_ms(), &mut rand::rngs::OsRng, input);
        if let Err(e) = self.perform(out) {
            tracing::error!(error = %e, "cannot store what a peer sent");
        }
    }

    /// Remembers an address where `peer` (a member) was reached, so the next
    /// start can dial it. Keeps the newest sixteen.
    pub fn remember_address(&mut self, peer: DeviceId, address: String) -> Result<(), Error> {
        let key = keys::peer_addrs_key(&peer);
        let mut addrs: Vec<String> = self
            .store
            .read()?
            .get(Table::Peers, &key)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if addrs.contains(&address) {
            // Known already: no commit (every start re-learns them all).
            return Ok(());
        }
        addrs.insert(0, address);
        addrs.truncate(MAX_REMEMBERED_ADDRS);
        let mut txn = self.store.write()?;
        txn.insert(Table::Peers, &key, &serde_json::to_vec(&addrs)?)?;
        txn.commit()?;
        Ok(())
    }

    /// Every remembered address of every other member device.
    pub fn known_addresses(&self) -> Result<Vec<(DeviceId, Vec<String>)>, Error> {
        let me = self.core.id();
        let txn = self.store.read()?;
        let mut out = Vec::new();
        for member in self.core.log().members() {
            if member.device == me {
                continue;
            }
            let key = keys::peer_addrs_key(&member.device);
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
    /// Lists the account's devices.
    pub async fn devices(&self) -> Result<Vec<Device>, Error> {
        self.call(|e| e.devices()).await
    }

    /// Adds a device whose pairing was confirmed and returns the welcome
    /// payload for it (the encoded log, which lists it), once durable.
    pub async fn add_device(&self, device: DeviceId, name: String) -> Result<Vec<u8>, Error> {
        self.call(move |e| {
            e.run(|n, now, _| n.add_device(now, device, &name))
                .map(|log| log.encode())
        })
        .await
    }

    /// A new invitation to this account for `ttl_s` seconds, naming `addrs`;
    /// it is the core's open invitation from now on (see
    /// [`hearth_crdt::node::Node::invite`]).
    pub async fn invite(
        &self,
        ttl_s: u64,
        addrs: Vec<String>,
    ) -> Result<hearth_crypto::ticket::Invitation, Error> {
        self.call(move |e| {
            e.run(|n, now, rng| {
                let invitation = n.invite(now, rng, ttl_s, addrs)?;
                Ok((invitation, Outputs::default()))
            })
        })
        .await
    }

    /// Removes a device from the account.
    pub async fn remove_device(&self, device: DeviceId) -> Result<(), Error> {
        self.call(move |e| e.run(|n, now, _| Ok(((), n.remove_device(now, device)?))))
            .await
    }

    /// Starts a sync session with `peer`, whose frames go to `outbox`;
    /// refused when the peer is not a member.
    pub async fn open_session(
        &self,
        peer: DeviceId,
        outbox: mpsc::Sender<Vec<u8>>,
    ) -> Result<SessionId, Error> {
        self.call(move |e| e.open_session(peer, outbox)).await
    }

    /// Hands a frame to its session. Waits while the engine's queue is
    /// full, which slows the reader down instead of buffering.
    pub async fn session_frame(&self, session: SessionId, frame: Vec<u8>) -> Result<(), Error> {
        self.submit(move |e| e.session_input(Input::Frame { session, frame }))
            .await
    }

    /// Tells the engine that a session's stream ended.
    pub async fn session_closed(&self, session: SessionId) -> Result<(), Error> {
        self.submit(move |e| e.session_input(Input::Closed { session }))
            .await
    }

    /// Remembers an address of a member device.
    pub async fn remember_address(&self, peer: DeviceId, address: String) -> Result<(), Error> {
        self.call(move |e| e.remember_address(peer, address)).await
    }

    /// The account's member set, updated on every change.
    pub fn members(&self) -> watch::Receiver<Members> {
        self.members.clone()
    }

    /// The core's dials and timer, for the one mesh that carries them out;
    /// `None` once taken.
    pub fn take_links(&self) -> Option<Links> {
        self.links.lock().ok().and_then(|mut l| l.take())
    }

    /// Tells the core what the network learnt about a link, or that its
    /// timer fired.
    pub async fn link(&self, event: LinkEvent) -> Result<(), Error> {
        let input = match event {
            LinkEvent::Reachable(peer) => Input::Reachable { peer },
            LinkEvent::Connected(peer) => Input::Connected { peer },
            LinkEvent::Tick => Input::Tick,
        };
        self.submit(move |e| e.session_input(input)).await
    }
}

/// The inviting flow lives in the core; the pairing driver reaches it
/// through the engine thread, whose batches are durable before each answer.
impl crate::pairing::Core for Handle {
    async fn run<T: Send + 'static>(
        &self,
        step: impl FnOnce(&mut Node, i64) -> Result<(T, Outputs), node::Error> + Send + 'static,
    ) -> Result<T, crate::pairing::CoreError> {
        Ok(self.call(move |e| e.run(|n, now, _| step(n, now))).await?)
    }
}
