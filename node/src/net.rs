//! The libp2p network of a Hearth node.
//!
//! # Model
//!
//! A device's ed25519 [`DeviceKey`] is also its libp2p identity, so the
//! `PeerId` that the Noise (or QUIC/TLS) handshake authenticates *is* the
//! remote [`DeviceId`](hearth_crypto::identity::DeviceId). [`spawn`] builds one
//! `Swarm` and runs it on its own tokio task; the rest of the node talks to it
//! through a cloneable [`Handle`] (bounded command queue, one-shot replies)
//! and reads [`Event`]s from a bounded channel.
//!
//! # Transports
//!
//! - TCP, secured by Noise and multiplexed by Yamux.
//! - QUIC (v1), which brings its own TLS 1.3 security and multiplexing and
//!   makes hole punching more likely to work.
//! - DNS resolution of `/dns*` addresses (system resolver configuration).
//! - The relay client transport, so a device behind NAT can be reached through
//!   `/p2p-circuit` addresses of a configured relay.
//!
//! # Behaviours, and why each is there
//!
//! - **gate**: the admission check (below); it is first so that it runs before
//!   any other behaviour accepts the connection.
//! - **connection limits** and **memory limits**: bound the number of pending
//!   and established connections, and refuse new ones while the process uses
//!   more memory than [`Config::memory_limit_mb`].
//! - **identify** (`/hearth/id/1` as protocol version): peers tell each other
//!   their listen addresses, which feed reconnection and Kademlia.
//! - **ping**: detects dead connections.
//! - **mDNS** (optional): finds the account's other devices on the LAN.
//! - **Kademlia** (`/hearth/kad/1`): finds a device's addresses by `PeerId`
//!   through the configured bootstrap peers.
//! - **relay server** (optional, [`Config::relay_service`]), **relay client**,
//!   **DCUtR** (hole punching over a relayed connection) and **AutoNAT** (are we
//!   publicly reachable?): connectivity for devices behind NAT.
//! - **streams** (`libp2p_stream`): plain byte streams per protocol, on which
//!   Hearth runs its own framing ([`write_frame`], [`read_frame`]) and caps.
//!
//! # The gate
//!
//! Every connection, inbound or outbound, is checked against the shared
//! [`Admission`] right after the handshake authenticated the remote `PeerId`,
//! and refused (`ConnectionDenied`) unless the peer is a member device, a
//! configured bootstrap or relay peer, or — while pairing is open — a pending
//! joiner. A refused peer never reaches identify, Kademlia or any Hearth
//! protocol. Outbound dials to a known non-admitted `PeerId` are refused before
//! they start. Stream acceptors still run [`Admission::may_use`] on each
//! stream: pending joiners may only use [`PAIR`], infrastructure peers no Hearth
//! protocol at all. When admission changes, [`Handle::refresh_admission`]
//! closes the connections of peers that lost their standing.
//!
//! # Reconnect
//!
//! The swarm task keeps an address book (bounded) fed by mDNS, identify,
//! Kademlia and [`Handle::add_address`], and reports each new address of a
//! member ([`Event::Routable`]). It decides nothing about when to dial: the
//! node's core does ([`hearth_crdt::node`]'s links, under the one redial
//! policy of [`hearth_crdt::node::redial`]), and [`Handle::dial_member`]
//! carries out one attempt: a dial with the known addresses, or a Kademlia
//! lookup when none is known and bootstrap peers are configured
//! ([`Net::lookups`]). Connections close after [`Config::idle_timeout`]
//! without an open stream, so the sync layer keeps one stream per member
//! open.

mod admission;
pub mod frame;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::num::NonZeroU32;
use std::time::Duration;

use futures::StreamExt as _;
use hearth_crypto::identity::DeviceKey;
use libp2p::core::transport::{ListenerId, PortUse};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, DialError, FromSwarm, NetworkBehaviour, SwarmEvent, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{
    PeerId, StreamProtocol, Swarm, SwarmBuilder, autonat, connection_limits, dcutr, identify, kad,
    mdns, memory_connection_limits, noise, ping, relay, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub use admission::{Admission, Standing};
pub use frame::{read_frame, write_frame};

/// Hearth's sync protocol: one long-lived stream per pair of member devices
/// (the smaller id opens it), carrying [`hearth_crdt::sync`] frames — a
/// Hello, shard digests, the membership log, and Automerge's own sync
/// messages per shard — each length-prefixed ([`write_frame`]) and capped
/// before it is read.
pub const SYNC: StreamProtocol = StreamProtocol::new("/hearth/sync/1");
/// The pairing handshake, the only protocol open to pending joiners.
pub const PAIR: StreamProtocol = StreamProtocol::new("/hearth/pair/1");
/// Contact requests (and, later, share offers): one request frame and one
/// reply frame per stream, open to contacts' devices and, while requests
/// are accepted, to any peer ([`Standing::Requester`]).
pub const SHARE: StreamProtocol = StreamProtocol::new("/hearth/share/1");
/// Federated queries: one request frame and one reply frame per stream
/// ([`hearth_crdt::node::queries`]), open to the account's own devices and
/// to contacts' devices (the core answers only established contacts).
pub const QUERY: StreamProtocol = StreamProtocol::new("/hearth/query/1");
/// Our Kademlia protocol name, which keeps Hearth's DHT apart from IPFS's.
pub const KAD: StreamProtocol = StreamProtocol::new("/hearth/kad/1");
/// The identify protocol version Hearth nodes announce.
pub const IDENTIFY_VERSION: &str = "/hearth/id/1";

/// Length of the command queue from [`Handle`]s to the swarm task.
const COMMAND_QUEUE: usize = 64;
/// Peers the address book holds; members displace other entries when full.
const BOOK_MAX_PEERS: usize = 1024;
/// Addresses kept per peer; newer ones replace the oldest.
const BOOK_MAX_ADDRS: usize = 16;

/// Network settings. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on. Default: `/ip4/0.0.0.0/tcp/0` and
    /// `/ip4/0.0.0.0/udp/0/quic-v1` (every interface, ports chosen by the OS).
    pub listen: Vec<Multiaddr>,
    /// Discover the account's devices on the LAN with mDNS. Default: `true`.
    pub mdns: bool,
    /// Kademlia bootstrap peers, each ending in `/p2p/<peer id>`. They are
    /// admitted as infrastructure. Default: none.
    pub bootstrap: Vec<Multiaddr>,
    /// Relays to hold a reservation on, each ending in `/p2p/<peer id>`, so
    /// that this node is reachable at `<relay>/p2p-circuit`. They are admitted
    /// as infrastructure. Default: none.
    pub relays: Vec<Multiaddr>,
    /// Act as a relay for admitted peers. Default: `false`.
    pub relay_service: bool,
    /// Established connections in total. Default: 64.
    pub max_connections: u32,
    /// Established connections to one peer (TCP, QUIC and a simultaneous
    /// dial can briefly coexist). Default: 4.
    pub max_connections_per_peer: u32,
    /// Connections in their handshake, per direction. Default: 16.
    pub max_pending: u32,
    /// New connections are refused while the process uses more memory than
    /// this many MiB. Default: 1024.
    pub memory_limit_mb: usize,
    /// A connection with no open stream is closed after this long.
    /// Default: 60 s.
    pub idle_timeout: Duration,
    /// Capacity of the [`Event`] channel. When the consumer lags further
    /// behind, events are dropped with a warning (the current state is always
    /// available from [`Handle::peers`]). Default: 256.
    pub event_queue: usize,
    /// Longest wait at start for the listeners to report their addresses.
    /// Default: 5 s.
    pub listen_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![
                Multiaddr::empty()
                    .with(Protocol::Ip4([0, 0, 0, 0].into()))
                    .with(Protocol::Tcp(0)),
                Multiaddr::empty()
                    .with(Protocol::Ip4([0, 0, 0, 0].into()))
                    .with(Protocol::Udp(0))
                    .with(Protocol::QuicV1),
            ],
            mdns: true,
            bootstrap: Vec::new(),
            relays: Vec::new(),
            relay_service: false,
            max_connections: 64,
            max_connections_per_peer: 4,
            max_pending: 16,
            memory_limit_mb: 1024,
            idle_timeout: Duration::from_secs(60),
            event_queue: 256,
            listen_wait: Duration::from_secs(5),
        }
    }
}

/// Why the network could not start, or a request to it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libp2p rejected the device key.
    #[error("libp2p rejected the device key")]
    Key(#[from] libp2p::identity::DecodingError),
    /// The libp2p identity derived from the device key differs from the
    /// device id, which would break the `PeerId` = `DeviceId` rule.
    #[error("libp2p peer id {peer} does not match device id {device}")]
    IdentityMismatch {
        /// What libp2p derived.
        peer: PeerId,
        /// What hearth-crypto derived.
        device: String,
    },
    /// The Noise configuration could not be built.
    #[error("setting up noise failed")]
    Noise(#[from] noise::Error),
    /// The system DNS configuration could not be read.
    #[error("reading the system DNS configuration (/etc/resolv.conf) failed")]
    Dns(#[source] io::Error),
    /// mDNS could not start.
    #[error("starting mDNS failed")]
    Mdns(#[source] io::Error),
    /// A bootstrap or relay address lacks its `/p2p/<peer id>` suffix.
    #[error("{addr} must end with /p2p/<peer id>")]
    MissingPeerId {
        /// The configured address.
        addr: Multiaddr,
    },
    /// Listening on an address failed.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The configured address.
        addr: Multiaddr,
        /// What the transport reported.
        #[source]
        source: libp2p::TransportError<io::Error>,
    },
    /// A listener closed with an error while starting.
    #[error("listener on {addr} failed")]
    Listener {
        /// The configured address.
        addr: Multiaddr,
        /// What the transport reported.
        #[source]
        source: io::Error,
    },
    /// A dial could not start.
    #[error("cannot dial {addr}")]
    Dial {
        /// The address dialled.
        addr: Multiaddr,
        /// What the swarm reported.
        #[source]
        source: DialError,
    },
    /// The gate refused a connection (this is the cause inside libp2p's
    /// `ConnectionDenied`).
    #[error("peer {peer} is not admitted")]
    NotAdmitted {
        /// The refused peer.
        peer: PeerId,
    },
    /// The swarm task has stopped.
    #[error("the network has shut down")]
    Closed,
}

/// Something that happened on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The first connection to `peer` was established.
    Connected {
        /// The remote device.
        peer: PeerId,
        /// Whether it is a member (otherwise infrastructure or a pending joiner).
        member: bool,
    },
    /// The last connection to `peer` closed.
    Disconnected {
        /// The remote device.
        peer: PeerId,
    },
    /// mDNS found a new address of `peer` on the LAN.
    Discovered {
        /// The discovered peer.
        peer: PeerId,
        /// Its address.
        address: Multiaddr,
    },
    /// The address book learnt a new address of the member `peer` (from any
    /// source): it can be dialled there.
    Routable {
        /// The member.
        peer: PeerId,
        /// The new address.
        address: Multiaddr,
    },
}

/// What the network knows about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub id: PeerId,
    /// Whether at least one connection is open.
    pub connected: bool,
    /// Addresses known for it.
    pub addrs: Vec<Multiaddr>,
}

/// A running network: the handle to control it and its event stream.
#[derive(Debug)]
pub struct Net {
    /// Control of the swarm task.
    pub handle: Handle,
    /// Connection events, in order.
    pub events: mpsc::Receiver<Event>,
    /// Whether a member with no known address can still be found (by a
    /// Kademlia lookup through the bootstrap peers), so every member is
    /// worth a dial.
    pub lookups: bool,
}

/// A cloneable handle on the swarm task.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    local: PeerId,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Dial(Multiaddr, oneshot::Sender<Result<(), Error>>),
    DialMember(PeerId),
    AddAddress(PeerId, Multiaddr, oneshot::Sender<()>),
    RefreshAdmission(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

impl Handle {
    /// This node's peer id (its device id).
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The addresses this node listens on, as others can dial them: concrete
    /// interface addresses (never `0.0.0.0`), each ending in `/p2p/<our id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.request(Command::ListenAddrs).await
    }

    /// Every peer that is connected or has known addresses, sorted by id.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.request(Command::Peers).await
    }

    /// Starts dialling `addr`. With a `/p2p/<id>` suffix the dial is bound to
    /// that peer (and succeeds at once if it is already connected); the
    /// outcome arrives as an [`Event`].
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        self.request(|reply| Command::Dial(addr, reply)).await?
    }

    /// Makes one attempt to connect to the member `peer`, as the node's core
    /// asked: a dial with its known addresses, or a lookup when none is
    /// known. Nothing happens when it is connected, being dialled, or has
    /// no way to be found. Does not wait for the attempt.
    pub async fn dial_member(&self, peer: PeerId) -> Result<(), Error> {
        self.commands
            .send(Command::DialMember(peer))
            .await
            .map_err(|_| Error::Closed)
    }

    /// Records an address for `peer`, for reconnection and stream opening.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), Error> {
        self.request(|reply| Command::AddAddress(peer, addr, reply))
            .await
    }

    /// Applies a change of the shared [`Admission`]: closes the connections of
    /// peers that are no longer admitted.
    pub async fn refresh_admission(&self) -> Result<(), Error> {
        self.request(Command::RefreshAdmission).await
    }

    /// A control to open streams ([`SYNC`], [`PAIR`]) and accept incoming ones.
    /// Acceptors must check [`Admission::may_use`] for every stream.
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Stops the swarm task, closing every connection. Returns once it stopped.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.request(Command::Shutdown).await
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)
    }
}

/// The admission gate: refuses every connection whose peer the shared
/// [`Admission`] does not admit.
struct Gate {
    admission: Admission,
}

impl Gate {
    fn check(&self, peer: PeerId) -> Result<(), ConnectionDenied> {
        match self.admission.standing(&peer) {
            Some(_) => Ok(()),
            None => {
                tracing::debug!(%peer, "connection refused: not admitted");
                Err(ConnectionDenied::new(Error::NotAdmitted { peer }))
            }
        }
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = maybe_peer {
            self.check(peer)?;
        }
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _event: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        std::task::Poll::Pending
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gate: Gate,
    limits: connection_limits::Behaviour,
    memory: memory_connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    /// Off on a node with no bootstrap peers that relays for nobody: there
    /// is no DHT for it to join or serve.
    kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    relay_server: Toggle<relay::Behaviour>,
    relay_client: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    autonat: autonat::Behaviour,
    streams: libp2p_stream::Behaviour,
}

/// Starts the network for the device `key`: builds the swarm, binds the
/// listeners (waiting briefly until they report their addresses, so that
/// [`Handle::listen_addrs`] is meaningful at once), and runs it on a tokio
/// task. Must be called within a tokio runtime.
pub async fn spawn(key: &DeviceKey, config: Config, admission: Admission) -> Result<Net, Error> {
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(key.to_bytes())?;
    let local = keypair.public().to_peer_id();
    let device = key.id().to_string();
    if local.to_string() != device {
        return Err(Error::IdentityMismatch {
            peer: local,
            device,
        });
    }

    let bootstrap = with_peer_ids(&config.bootstrap)?;
    let relays = with_peer_ids(&config.relays)?;
    admission.add_infrastructure(bootstrap.iter().chain(&relays).map(|(peer, _)| *peer));

    let limits = connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(config.max_pending))
        .with_max_pending_outgoing(Some(config.max_pending))
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(config.max_connections_per_peer));
    let mdns = if config.mdns {
        Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local).map_err(Error::Mdns)?)
    } else {
        None
    };
    // Without bootstrap peers there is no DHT to join, and Kademlia would
    // only warn at every start that it knows no peer. A relay keeps it, as
    // the node others bootstrap from.
    let mut kad = (!bootstrap.is_empty() || config.relay_service).then(|| {
        let mut kad_config = kad::Config::new(KAD);
        if bootstrap.is_empty() {
            kad_config.set_periodic_bootstrap_interval(None);
        }
        kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), kad_config)
    });
    let mut autonat = autonat::Behaviour::new(local, autonat::Config::default());
    for (peer, addr) in &bootstrap {
        if let Some(kad) = kad.as_mut() {
            kad.add_address(peer, addr.clone());
        }
        autonat.add_server(*peer, Some(addr.clone()));
    }
    let streams = libp2p_stream::Behaviour::new();
    let control = streams.new_control();
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_VERSION.to_string(), keypair.public())
            .with_agent_version(format!("hearth/{}", env!("CARGO_PKG_VERSION")))
            .with_push_listen_addr_updates(true),
    );
    let relay_server = config
        .relay_service
        .then(|| relay::Behaviour::new(local, relay::Config::default()));
    let gate = Gate {
        admission: admission.clone(),
    };
    let memory_bytes = config.memory_limit_mb.saturating_mul(1024 * 1024);

    let Ok(builder) = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
        .with_dns()
        .map_err(Error::Dns)?
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(move |_, relay_client| Behaviour {
            gate,
            limits: connection_limits::Behaviour::new(limits),
            memory: memory_connection_limits::Behaviour::with_max_bytes(memory_bytes),
            identify,
            ping: ping::Behaviour::default(),
            mdns: Toggle::from(mdns),
            kad: Toggle::from(kad),
            relay_server: Toggle::from(relay_server),
            relay_client,
            dcutr: dcutr::Behaviour::new(local),
            autonat,
            streams,
        });
    let idle = config.idle_timeout;
    let mut swarm = builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();

    let mut pending: HashMap<ListenerId, Multiaddr> = HashMap::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|source| Error::Listen {
                addr: addr.clone(),
                source,
            })?;
        pending.insert(id, addr.clone());
    }

    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events) = mpsc::channel(config.event_queue.max(1));
    let mut driver = Driver {
        swarm,
        admission,
        commands,
        events: events_tx,
        listen_addrs: Vec::new(),
        book: AddressBook::default(),
        listen_wait: config.listen_wait,
        kad_lookups: !bootstrap.is_empty(),
        relay_service: config.relay_service,
    };
    driver.await_listeners(pending).await?;
    for (peer, addr) in bootstrap {
        driver.book.insert(peer, addr, true);
    }
    if driver.kad_lookups {
        // Only fails without known peers, which the check above rules out.
        if let Some(kad) = driver.swarm.behaviour_mut().kad.as_mut() {
            let _ = kad.bootstrap();
        }
    }
    for (peer, addr) in relays {
        driver.book.insert(peer, addr.clone(), true);
        let circuit = addr.with(Protocol::P2pCircuit);
        if let Err(error) = driver.swarm.listen_on(circuit.clone()) {
            tracing::warn!(%circuit, %error, "cannot listen through relay");
        }
    }
    let lookups = driver.kad_lookups;
    tokio::spawn(driver.run());

    Ok(Net {
        handle: Handle {
            commands: commands_tx,
            control,
            local,
        },
        events,
        lookups,
    })
}

/// Splits addresses that must end in `/p2p/<id>` into (peer, address).
fn with_peer_ids(addrs: &[Multiaddr]) -> Result<Vec<(PeerId, Multiaddr)>, Error> {
    addrs.iter().map(check_peer_addr).collect()
}

/// The one check of an address that must name its peer (bootstrap peers,
/// relays): it ends in `/p2p/<peer id>`.
pub fn check_peer_addr(addr: &Multiaddr) -> Result<(PeerId, Multiaddr), Error> {
    addr_peer(addr)
        .map(|peer| (peer, addr.clone()))
        .ok_or_else(|| Error::MissingPeerId { addr: addr.clone() })
}

/// The peer an address leads to: its last `/p2p/` component.
fn addr_peer(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// Known addresses per peer, bounded in peers and addresses per peer.
#[derive(Default)]
struct AddressBook {
    peers: HashMap<PeerId, Vec<Multiaddr>>,
}

impl AddressBook {
    /// Records `addr` (without a `/p2p/` suffix); `true` when it was new.
    /// `preferred` entries (members, infrastructure) may displace others when
    /// the book is full.
    fn insert(&mut self, peer: PeerId, mut addr: Multiaddr, preferred: bool) -> bool {
        if addr_peer(&addr).is_some() {
            addr.pop();
        }
        if addr.is_empty() {
            return false;
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= BOOK_MAX_PEERS {
            if !preferred {
                return false;
            }
            let Some(victim) = self.peers.keys().next().copied() else {
                return false;
            };
            self.peers.remove(&victim);
        }
        let addrs = self.peers.entry(peer).or_default();
        if addrs.contains(&addr) {
            return false;
        }
        if addrs.len() >= BOOK_MAX_ADDRS {
            addrs.remove(0);
        }
        addrs.push(addr);
        true
    }

    fn remove(&mut self, peer: &PeerId, addr: &Multiaddr) {
        if let Some(addrs) = self.peers.get_mut(peer) {
            addrs.retain(|a| a != addr);
            if addrs.is_empty() {
                self.peers.remove(peer);
            }
        }
    }

    fn get(&self, peer: &PeerId) -> &[Multiaddr] {
        self.peers.get(peer).map_or(&[], Vec::as_slice)
    }
}

/// The swarm task's state.
struct Driver {
    swarm: Swarm<Behaviour>,
    admission: Admission,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    listen_addrs: Vec<Multiaddr>,
    book: AddressBook,
    listen_wait: Duration,
    kad_lookups: bool,
    /// Whether this node relays for others; its own listen addresses are
    /// then announced as external, which relay reservations carry.
    relay_service: bool,
}

impl Driver {
    /// Drives the swarm until every listener reported an address (or
    /// [`Config::listen_wait`] passed); a listener that fails meanwhile is an error.
    async fn await_listeners(
        &mut self,
        mut pending: HashMap<ListenerId, Multiaddr>,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + self.listen_wait;
        while !pending.is_empty() {
            let event = match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await
            {
                Ok(event) => event,
                Err(_) => {
                    tracing::warn!(listeners = ?pending.values().collect::<Vec<_>>(), "listeners reported no address in time");
                    return Ok(());
                }
            };
            match &event {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    pending.remove(listener_id);
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some(addr) = pending.remove(listener_id) {
                        return Err(Error::Listener {
                            addr,
                            source: io::Error::new(error.kind(), error.to_string()),
                        });
                    }
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } => {
                    if let Some(addr) = pending.remove(listener_id) {
                        let source = match reason {
                            Err(error) => io::Error::new(error.kind(), error.to_string()),
                            Ok(()) => io::Error::other("listener closed while starting"),
                        };
                        return Err(Error::Listener { addr, source });
                    }
                }
                _ => {}
            }
            self.on_swarm_event(event);
        }
        Ok(())
    }

    async fn run(mut self) {
        loop {
            // Biased: commands (Shutdown) first; peers can keep swarm events always ready.
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        drop(self.swarm);
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    // Every handle is gone: nobody can use the network any more.
                    None => return,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peers());
            }
            Command::Dial(addr, reply) => {
                let _ = reply.send(self.dial(addr));
            }
            Command::DialMember(peer) => self.dial_member(peer),
            Command::AddAddress(peer, addr, reply) => {
                self.learn(peer, addr);
                let _ = reply.send(());
            }
            Command::RefreshAdmission(reply) => {
                self.refresh_admission();
                let _ = reply.send(());
            }
            // Handled in `run`, which owns the swarm's end of life.
            Command::Shutdown(reply) => {
                let _ = reply.send(());
            }
        }
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let ids: BTreeSet<PeerId> = self
            .book
            .peers
            .keys()
            .chain(self.swarm.connected_peers())
            .copied()
            .collect();
        ids.into_iter()
            .map(|id| PeerInfo {
                id,
                connected: self.swarm.is_connected(&id),
                addrs: self.book.get(&id).to_vec(),
            })
            .collect()
    }

    fn dial(&mut self, addr: Multiaddr) -> Result<(), Error> {
        let result = match addr_peer(&addr) {
            Some(peer) => {
                self.learn(peer, addr.clone());
                self.swarm.dial(
                    DialOpts::peer_id(peer)
                        .addresses(vec![addr.clone()])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build(),
                )
            }
            None => self.swarm.dial(addr.clone()),
        };
        match result {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
            Err(source) => Err(Error::Dial { addr, source }),
        }
    }

    /// Records an address of `peer` in the book, the swarm and Kademlia.
    fn learn(&mut self, peer: PeerId, addr: Multiaddr) -> bool {
        if peer == *self.swarm.local_peer_id() {
            return false;
        }
        let preferred = matches!(
            self.admission.standing(&peer),
            Some(Standing::Member | Standing::Infrastructure)
        );
        let new = self.book.insert(peer, addr.clone(), preferred);
        if new {
            self.swarm.add_peer_address(peer, addr.clone());
            if self.admission.may_sync(&peer) {
                self.emit(Event::Routable {
                    peer,
                    address: addr,
                });
            }
        }
        new
    }

    fn refresh_admission(&mut self) {
        let refused: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|peer| self.admission.standing(peer).is_none())
            .copied()
            .collect();
        for peer in refused {
            tracing::info!(%peer, "closing connections of a peer that is no longer admitted");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// One attempt on a member, as the core asked (see [`Handle::dial_member`]).
    fn dial_member(&mut self, peer: PeerId) {
        if peer == *self.swarm.local_peer_id()
            || !self.admission.may_sync(&peer)
            || self.swarm.is_connected(&peer)
        {
            return;
        }
        let addrs = self.book.get(&peer).to_vec();
        if addrs.is_empty() {
            if self.kad_lookups
                && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
            {
                kad.get_closest_peers(peer);
            }
            return;
        }
        tracing::debug!(%peer, "dialling member");
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(error) => tracing::debug!(%peer, %error, "dial did not start"),
        }
    }

    fn emit(&self, event: Event) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                tracing::warn!(?event, "network event queue full; event dropped");
            }
            // Nobody listens for events; the network still serves streams.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let local = *self.swarm.local_peer_id();
                let full = if addr_peer(&address) == Some(local) {
                    address
                } else {
                    address.with(Protocol::P2p(local))
                };
                tracing::info!(%full, "listening");
                if self.relay_service && !full.iter().any(|p| p == Protocol::P2pCircuit) {
                    // A relay is run on a node with a reachable address
                    // (`hearth up --relay`): reservations must name it.
                    self.swarm.add_external_address(full.clone());
                }
                if !self.listen_addrs.contains(&full) {
                    self.listen_addrs.push(full);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let local = *self.swarm.local_peer_id();
                let full = if addr_peer(&address) == Some(local) {
                    address
                } else {
                    address.with(Protocol::P2p(local))
                };
                self.listen_addrs.retain(|a| a != &full);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                if endpoint.is_dialer() {
                    self.learn(peer_id, endpoint.get_remote_address().clone());
                }
                if num_established == NonZeroU32::MIN {
                    let member = self.admission.may_sync(&peer_id);
                    tracing::info!(peer = %peer_id, member, "connected");
                    self.emit(Event::Connected {
                        peer: peer_id,
                        member,
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                tracing::info!(peer = %peer_id, "disconnected");
                self.emit(Event::Disconnected { peer: peer_id });
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, address) in found {
                    if self.learn(peer, address.clone()) {
                        self.emit(Event::Discovered { peer, address });
                    }
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(gone)) => {
                for (peer, address) in gone {
                    self.book.remove(&peer, &address);
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let speaks_kad = info.protocols.contains(&KAD);
                for addr in info.listen_addrs {
                    self.learn(peer_id, addr.clone());
                    if speaks_kad && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                        kad.add_address(&peer_id, addr);
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) if self.admission.is_member(&peer) => {
                for addr in addresses.iter() {
                    self.learn(peer, addr.clone());
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(Ok(found)),
                ..
            }) => {
                for info in found.peers {
                    if self.admission.is_member(&info.peer_id) {
                        for addr in info.addrs {
                            self.learn(info.peer_id, addr);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
