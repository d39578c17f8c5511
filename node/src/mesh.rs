//! The mesh: the glue between the network ([`crate::net`]), the engine and
//! pairing ([`crate::pairing`]).
//!
//! ```text
//!   net (libp2p swarm) ── Connected / Routable ──▶ mesh ── LinkEvent ──▶ engine thread (core)
//!          ▲                                       │  ▲                        │
//!          │ admission, dial_member                │  └── Dial, Timer ─────────┘
//!          │                                       │ open /hearth/sync/1: one reader + one writer task
//!   engine.members() watch                         ▼
//!                                     frames (bounded queue) ──▶ engine thread
//! ```
//!
//! - **Who dials, and when.** The core decides ([`hearth_crdt::node`]'s
//!   links, under its one redial policy): the mesh tells it what the network
//!   learnt (a member's new address, a connection) and brings it its timer's
//!   tick; it carries out each dial the core asks for. Between two members,
//!   the device with the smaller id opens the one sync stream; the other
//!   only connects and accepts it. The mesh keeps no schedule of its own,
//!   only which streams it is opening, so one dial opens one stream.
//! - **Frames.** Each frame is length-prefixed and refused above
//!   `engine.max_frame_bytes` before it is read into memory. The reader hands
//!   frames to the engine through its bounded queue, so a fast peer waits for
//!   the engine instead of filling memory; the writer drains the session's
//!   bounded outbox.
//! - **Admission.** The member set comes from the engine's watch channel and
//!   goes into the network's admission gate; removed devices are
//!   disconnected at once. A sync stream from a peer that is not a member is
//!   dropped unread.
//! - **Pairing.** `/hearth/pair/1` streams go to [`crate::pairing::Invitations`],
//!   which drives the inviting flow the core holds; a confirmed joiner is
//!   admitted by the core.
//! - **Requests and replies.** `/hearth/share/1` (contacts, shares) and
//!   `/hearth/query/1` (federated queries) carry one request frame and one
//!   reply frame per stream. Inbound, the frame (bounded before it is read)
//!   goes to the engine, whose reply is written only after what it changed
//!   is durable. Outbound, every exchange the core asks for runs in its own
//!   task, so many are on their way at once, each within its time-out; its
//!   reply, or `None` on any failure, goes back to the core.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hearth_crypto::identity::DeviceId;
use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::engine::{Dial, Handle, LinkEvent, Links, Members};
use crate::net::{self, Admission};

/// The daemon's pairing driver: the core's inviting flow, reached through
/// the engine.
pub type Invitations = crate::pairing::Invitations<Handle>;

/// How the mesh runs: from `[pairing]`, `[engine]`, `[contacts]`, `[queries]` and `up`'s flags.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Time-outs of the pairing handshake.
    pub pairing: crate::pairing::Timeouts,
    /// Largest sync frame read (`[engine] max_frame_bytes`).
    pub max_frame: usize,
    /// Frames queued per session (`[engine] peer_outbox`).
    pub outbox: usize,
    /// Whether mDNS discovery runs.
    pub mdns: bool,
    /// Contact requests and their bounds.
    pub contacts: crate::config::ContactsConfig,
    /// Federated queries: message bound and the inbound time-out.
    pub queries: crate::config::QueriesConfig,
}

impl Settings {
    /// The settings of `config`, with mDNS as `up` was told.
    pub fn of(config: &crate::config::Config, mdns: bool) -> Settings {
        Settings {
            pairing: config.pairing.timeouts(),
            max_frame: config.engine.max_frame_bytes,
            outbox: config.engine.peer_outbox,
            mdns,
            contacts: config.contacts.clone(),
            queries: config.queries.clone(),
        }
    }
}

/// Longest wait for a sync stream to open on a connection that is up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// What the mesh tasks share.
#[derive(Clone)]
pub struct Mesh {
    /// `[contacts]`: who may ask, and the bounds of one exchange.
    contacts: Arc<crate::config::ContactsConfig>,
    /// `[queries]`: the bound of a message and of one inbound exchange.
    queries: Arc<crate::config::QueriesConfig>,
    engine: Handle,
    net: net::Handle,
    admission: Admission,
    invitations: Arc<Invitations>,
    me: DeviceId,
    max_frame: usize,
    outbox: usize,
    mdns: bool,
    /// Whether members without a known address can be looked up.
    lookups: bool,
    /// Sync streams being opened, until their session is open.
    opening: Arc<Mutex<BTreeSet<DeviceId>>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// The device a libp2p peer id names (they are the same key); `None` for a
/// peer id of another key type.
pub fn device_id(peer: &PeerId) -> Option<DeviceId> {
    DeviceId::from_peer_id_bytes(&peer.to_bytes()).and_then(Result::ok)
}

/// The libp2p peer id of a device.
pub fn peer_id(device: &DeviceId) -> Option<PeerId> {
    PeerId::from_bytes(&device.to_peer_id_bytes()).ok()
}

impl Mesh {
    /// Wires the engine, the network and pairing together and starts the
    /// tasks that keep them in step. Runs until the network's event stream
    /// ends.
    pub fn start(engine: Handle, net: net::Net, admission: Admission, settings: Settings) -> Mesh {
        let Settings {
            pairing,
            max_frame,
            outbox,
            mdns,
            contacts,
            queries,
        } = settings;
        let members = engine.members();
        let me = members.borrow().me;
        let invitations = Arc::new(Invitations::new(engine.clone(), pairing));
        admission.set_requests(contacts.accept_requests);
        let mesh = Mesh {
            contacts: Arc::new(contacts),
            queries: Arc::new(queries),
            engine,
            net: net.handle.clone(),
            admission,
            invitations,
            me,
            max_frame,
            outbox,
            mdns,
            lookups: net.lookups,
            opening: Arc::default(),
        };
        match mesh.engine.take_links() {
            Some(links) => {
                tokio::spawn(mesh.clone().follow_links(links));
            }
            None => tracing::error!("the engine's links are taken; nothing will be dialled"),
        }
        tokio::spawn(mesh.clone().follow_members(members));
        tokio::spawn(mesh.clone().accept_sync());
        tokio::spawn(mesh.clone().accept_pairing());
        tokio::spawn(mesh.clone().accept_share());
        tokio::spawn(mesh.clone().accept_query());
        tokio::spawn(mesh.clone().follow_events(net.events));
        mesh
    }

    /// The network handle.
    pub fn net(&self) -> &net::Handle {
        &self.net
    }

    /// The admission gate.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Whether mDNS discovery runs.
    pub fn mdns(&self) -> bool {
        self.mdns
    }

    /// Follows `invitation`, which the core just opened (replacing any
    /// other), and admits pending joiners until it ends.
    pub fn open_invitation(&self, invitation: &hearth_crypto::ticket::Invitation) {
        let expires_at_ms = invitation.expires_at_ms();
        self.invitations.opened();
        self.admission.set_pairing(true);
        let mesh = self.clone();
        tokio::spawn(async move {
            let outcome = mesh.invitations.wait().await;
            if let Some(outcome) = &outcome {
                let text = describe(outcome);
                match outcome {
                    crate::pairing::Outcome::Joined(j) => {
                        tracing::info!(device = %j.device, name = %j.name, "a new device joined the account")
                    }
                    _ => tracing::info!(outcome = %text, "invitation closed"),
                }
            }
            // Until the ticket expires, a device replaying it is still let in
            // to hear that it was used; after that it refuses itself.
            let left = expires_at_ms.saturating_sub(crate::engine::now_ms().max(0) as u64);
            tokio::time::sleep(std::time::Duration::from_millis(left)).await;
            // A newer invitation keeps pairing open.
            if mesh.invitations.status().await.is_none() {
                mesh.admission.set_pairing(false);
            }
        });
    }

    /// How the last invitation ended, once it has (the core keeps it).
    pub async fn last_outcome(&self) -> Option<String> {
        self.invitations.last_outcome().await.as_ref().map(describe)
    }

    /// The pairing invitations of this node.
    pub fn invitations(&self) -> &Arc<Invitations> {
        &self.invitations
    }

    async fn follow_members(self, mut members: tokio::sync::watch::Receiver<Members>) {
        // Share peers already told to the engine: telling it again would
        // reset their redial backoff on every change of the member set.
        let mut announced: std::collections::BTreeSet<PeerId> = std::collections::BTreeSet::new();
        loop {
            let (peers, contacts, sharing, addrs) = {
                let m = members.borrow_and_update();
                let peers: Vec<PeerId> = m
                    .devices
                    .iter()
                    .filter(|d| **d != m.me)
                    .filter_map(peer_id)
                    .collect();
                let contacts: Vec<PeerId> = m.contacts.iter().filter_map(peer_id).collect();
                let sharing: Vec<PeerId> = m.peers.iter().filter_map(peer_id).collect();
                (peers, contacts, sharing, m.addrs.clone())
            };
            self.admission.set_members(peers.clone());
            self.admission.set_contacts(contacts);
            self.admission.set_share_peers(sharing.clone());
            if self.net.refresh_admission().await.is_err() {
                return;
            }
            // A device of an account that now shares something with this
            // one: its card's addresses go in the book (a fellow member's
            // card came with the share's list); try it.
            for (device, at) in &addrs {
                let Some(peer) = peer_id(device) else {
                    continue;
                };
                for addr in at
                    .iter()
                    .filter_map(|a| a.parse::<libp2p::Multiaddr>().ok())
                {
                    let _ = self.net.add_address(peer, addr).await;
                }
            }
            announced.retain(|p| sharing.contains(p));
            for peer in &sharing {
                if !announced.insert(*peer) {
                    continue;
                }
                if let Some(device) = device_id(peer) {
                    let _ = self.engine.link(LinkEvent::Reachable(device)).await;
                }
            }
            if self.lookups {
                // Any member can be found by a lookup: each is worth a dial.
                for device in peers.iter().filter_map(device_id) {
                    let _ = self.engine.link(LinkEvent::Reachable(device)).await;
                }
            }
            if members.changed().await.is_err() {
                return;
            }
        }
    }

    async fn follow_events(self, mut events: mpsc::Receiver<net::Event>) {
        while let Some(event) = events.recv().await {
            match event {
                net::Event::Connected { peer, member: true } => {
                    if let Some(device) = device_id(&peer) {
                        let _ = self.engine.link(LinkEvent::Connected(device)).await;
                    }
                }
                net::Event::Routable { peer, address } => {
                    if let Some(device) = device_id(&peer) {
                        // Kept for the next start, whatever taught it (a
                        // peer's identify, a dial, a lookup, the LAN).
                        let _ = self
                            .engine
                            .remember_address(device, address.to_string())
                            .await;
                        let _ = self.engine.link(LinkEvent::Reachable(device)).await;
                    }
                }
                _ => {}
            }
        }
    }

    /// Carries out the core's dials and brings it its timer's tick.
    async fn follow_links(self, mut links: Links) {
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // Biased: dials first, so a burst of them is not held behind a tick.
            tokio::select! {
                biased;
                dial = links.dials.recv() => match dial {
                    Some(dial) => self.dial(dial).await,
                    None => return,
                },
                delivery = links.deliveries.recv() => match delivery {
                    Some(delivery) => {
                        tokio::spawn(self.clone().deliver(delivery));
                    }
                    None => return,
                },
                exchange = links.exchanges.recv() => match exchange {
                    Some(exchange) => {
                        tokio::spawn(self.clone().query(exchange));
                    }
                    None => return,
                },
                changed = links.timer.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let at = *links.timer.borrow_and_update();
                    due = at.map(|at| {
                        let wait = at.saturating_sub(crate::engine::now_ms()).max(0) as u64;
                        tokio::time::Instant::now() + Duration::from_millis(wait)
                    });
                }
                () = sleep => {
                    due = None;
                    if self.engine.link(LinkEvent::Tick).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// One dial the core asked for: connect and, on the side that opens it,
    /// open the sync stream (at most one being opened per member).
    async fn dial(&self, dial: Dial) {
        let Some(peer) = peer_id(&dial.peer) else {
            return;
        };
        let _ = self.net.dial_member(peer).await;
        if !dial.open_stream {
            return;
        }
        let fresh = self
            .opening
            .lock()
            .map(|mut o| o.insert(dial.peer))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let mesh = self.clone();
        tokio::spawn(async move {
            let mut control = mesh.net.stream_control();
            // Bounded: an open that never resolves would keep this member in
            // `opening`, and every later dial would skip it.
            let open = tokio::time::timeout(OPEN_TIMEOUT, control.open_stream(peer, net::SYNC));
            match open.await {
                Ok(Ok(stream)) => mesh.run_session(dial.peer, stream).await,
                Ok(Err(e)) => {
                    mesh.opened(dial.peer);
                    tracing::info!(%peer, error = %e, "cannot open a sync stream; the next dial tries again");
                }
                Err(_) => {
                    mesh.opened(dial.peer);
                    tracing::info!(%peer, "opening a sync stream timed out; the next dial tries again");
                }
            }
        });
    }

    /// The stream to `device` is open (or failed to): a later dial may open
    /// another.
    fn opened(&self, device: DeviceId) {
        if let Ok(mut opening) = self.opening.lock() {
            opening.remove(&device);
        }
    }

    /// The streams of `protocol` that peers open, each from a device that
    /// may use it ([`Admission::may_use`]); any other is dropped unread.
    fn incoming(
        &self,
        protocol: libp2p::StreamProtocol,
        what: &'static str,
    ) -> Option<impl futures::Stream<Item = (DeviceId, libp2p::Stream)> + use<>> {
        let mut control = self.net.stream_control();
        let incoming = match control.accept(protocol.clone()) {
            Ok(incoming) => incoming,
            Err(e) => {
                tracing::error!(error = %e, "cannot accept {what} streams");
                return None;
            }
        };
        let admission = self.admission.clone();
        Some(incoming.filter_map(move |(peer, stream)| {
            let admitted = device_id(&peer).filter(|_| admission.may_use(&peer, &protocol));
            if admitted.is_none() {
                tracing::info!(%peer, "refused a {what} stream from a peer that may not use it");
            }
            std::future::ready(admitted.map(|device| (device, stream)))
        }))
    }

    async fn accept_sync(self) {
        let Some(mut incoming) = self.incoming(net::SYNC, "sync") else {
            return;
        };
        while let Some((device, stream)) = incoming.next().await {
            tokio::spawn(self.clone().run_session(device, stream));
        }
    }

    async fn accept_pairing(self) {
        let Some(mut incoming) = self.incoming(net::PAIR, "pairing") else {
            return;
        };
        while let Some((device, stream)) = incoming.next().await {
            let mesh = self.clone();
            tokio::spawn(async move {
                // Admission closes when the ticket expires (see
                // `open_invitation`), not when one session ends.
                if let Err(e) = mesh.invitations.serve(device, stream).await {
                    tracing::info!(peer = %device, error = %e, "pairing session ended");
                }
            });
        }
    }

    /// Serves `/hearth/share/1`: one request frame in, the core's reply
    /// out (after what it changed is durable), within the exchange time-out.
    async fn accept_share(self) {
        let Some(mut incoming) = self.incoming(net::SHARE, "share") else {
            return;
        };
        while let Some((device, stream)) = incoming.next().await {
            let mesh = self.clone();
            tokio::spawn(async move {
                let limit = Duration::from_secs(mesh.contacts.exchange_timeout_secs);
                match tokio::time::timeout(limit, mesh.answer_share(device, stream)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::info!(peer = %device, error = %e, "share exchange failed")
                    }
                    Err(_) => tracing::info!(peer = %device, "share exchange timed out"),
                }
            });
        }
    }

    async fn answer_share(
        &self,
        device: DeviceId,
        mut stream: libp2p::Stream,
    ) -> anyhow::Result<()> {
        let max = self.contacts.max_message_bytes;
        let Some(frame) = net::read_frame(&mut stream, max).await? else {
            return Ok(());
        };
        let reply = self.engine.share_request(device, frame).await?;
        net::write_frame(&mut stream, &reply).await?;
        futures::AsyncWriteExt::close(&mut stream).await?;
        Ok(())
    }

    /// Carries one contacts message (a card, a share offer or answer) to a
    /// contact's device and brings its answer back to the core (`None` when
    /// it could not be delivered).
    async fn deliver(self, delivery: crate::engine::Delivery) {
        let limit = Duration::from_secs(self.contacts.exchange_timeout_secs);
        let peer = delivery.peer;
        let reply = match tokio::time::timeout(limit, self.exchange(&delivery)).await {
            Ok(Ok(reply)) => Some(reply),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "cannot deliver a contacts message (card or share)");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "delivering a contacts message timed out");
                None
            }
        };
        let _ = self.engine.share_reply(peer, reply).await;
    }

    async fn exchange(&self, delivery: &crate::engine::Delivery) -> anyhow::Result<Vec<u8>> {
        let peer = peer_id(&delivery.peer).ok_or_else(|| anyhow::anyhow!("not a peer id"))?;
        for addr in &delivery.addrs {
            if let Ok(addr) = addr.parse::<libp2p::Multiaddr>() {
                self.net.add_address(peer, addr).await?;
            }
        }
        let mut stream = self
            .net
            .stream_control()
            .open_stream(peer, net::SHARE)
            .await?;
        net::write_frame(&mut stream, &delivery.frame).await?;
        let reply = net::read_frame(&mut stream, self.contacts.max_message_bytes)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the peer closed the stream without a reply"))?;
        let _ = futures::AsyncWriteExt::close(&mut stream).await;
        Ok(reply)
    }

    /// Serves `/hearth/query/1`: one request frame in (at most `[queries]
    /// max_message_bytes`), the core's reply out after what it changed is
    /// durable, within `[queries] answer_timeout_secs`.
    async fn accept_query(self) {
        let Some(mut incoming) = self.incoming(net::QUERY, "query") else {
            return;
        };
        while let Some((device, stream)) = incoming.next().await {
            let mesh = self.clone();
            tokio::spawn(async move {
                let limit = Duration::from_secs(mesh.queries.answer_timeout_secs);
                match tokio::time::timeout(limit, mesh.answer_query(device, stream)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::info!(peer = %device, error = %e, "query exchange failed")
                    }
                    Err(_) => tracing::info!(peer = %device, "query exchange timed out"),
                }
            });
        }
    }

    async fn answer_query(
        &self,
        device: DeviceId,
        mut stream: libp2p::Stream,
    ) -> anyhow::Result<()> {
        let max = self.queries.max_message_bytes;
        let Some(frame) = net::read_frame(&mut stream, max).await? else {
            return Ok(());
        };
        let reply = self.engine.query_request(device, frame).await?;
        net::write_frame(&mut stream, &reply).await?;
        futures::AsyncWriteExt::close(&mut stream).await?;
        Ok(())
    }

    /// Carries one query request to a device and brings its reply back to
    /// the core (`None` when it failed or took longer than the core
    /// allows).
    async fn query(self, exchange: crate::engine::QueryExchange) {
        let limit = Duration::from_millis(u64::try_from(exchange.timeout_ms.max(1)).unwrap_or(1));
        let peer = exchange.peer;
        let reply = match tokio::time::timeout(limit, self.query_exchange(&exchange)).await {
            Ok(Ok(reply)) => Some(reply),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "cannot carry a query request");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "a query request had no reply in time");
                None
            }
        };
        let _ = self.engine.query_reply(exchange.exchange, reply).await;
    }

    async fn query_exchange(
        &self,
        exchange: &crate::engine::QueryExchange,
    ) -> anyhow::Result<Vec<u8>> {
        let peer = peer_id(&exchange.peer).ok_or_else(|| anyhow::anyhow!("not a peer id"))?;
        for addr in &exchange.addrs {
            if let Ok(addr) = addr.parse::<libp2p::Multiaddr>() {
                self.net.add_address(peer, addr).await?;
            }
        }
        let mut stream = self
            .net
            .stream_control()
            .open_stream(peer, net::QUERY)
            .await?;
        net::write_frame(&mut stream, &exchange.frame).await?;
        let reply = net::read_frame(&mut stream, self.queries.max_message_bytes)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the peer closed the stream without a reply"))?;
        let _ = futures::AsyncWriteExt::close(&mut stream).await;
        Ok(reply)
    }

    /// Runs one sync session over `stream` until either side ends it.
    async fn run_session(self, device: DeviceId, stream: libp2p::Stream) {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(self.outbox);
        let opened = self.engine.open_session(device, tx).await;
        self.opened(device);
        let session = match opened {
            Ok(session) => session,
            Err(e) => {
                tracing::info!(%device, error = %e, "sync session refused");
                return;
            }
        };
        tracing::info!(%device, "sync session open");
        let (mut reader, mut writer) = futures::AsyncReadExt::split(stream);
        let write = async {
            while let Some(frame) = rx.recv().await {
                if let Err(e) = net::write_frame(&mut writer, &frame).await {
                    tracing::debug!(%device, error = %e, "sync stream write failed");
                    break;
                }
            }
            let _ = futures::AsyncWriteExt::close(&mut writer).await;
        };
        let read = async {
            loop {
                match net::read_frame(&mut reader, self.max_frame).await {
                    Ok(Some(frame)) => {
                        if self.engine.session_frame(session, frame).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%device, error = %e, "bad frame on the sync stream; closing it");
                        break;
                    }
                }
            }
        };
        // Not biased: order does not matter, either half ending ends the session the same way.
        tokio::select! {
            () = write => {}
            () = read => {}
        }
        let _ = self.engine.session_closed(session).await;
        tracing::info!(%device, "sync session closed");
    }
}

/// One line saying how an invitation ended.
pub fn describe(outcome: &crate::pairing::Outcome) -> String {
    use crate::pairing::Outcome;
    match outcome {
        Outcome::Joined(j) => format!("device {} ({}) joined the account", j.device, j.name),
        Outcome::Refused(reason) => format!("refused: {reason}"),
        Outcome::Expired => "the invitation expired before a device joined".to_string(),
        Outcome::Cancelled => "the invitation was cancelled or replaced".to_string(),
        Outcome::Failed { device, reason } => format!("pairing with {device} failed: {reason}"),
    }
}
