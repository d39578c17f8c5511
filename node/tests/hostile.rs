//! Hostile peers against a real node, in-process.
//!
//! A target node T and a good member device G run as `hearth up` runs them
//! (engine thread, libp2p network, mesh tasks) on loopback. A hostile member
//! H is no node at all: only a network with H's key, which opens raw
//! `/hearth/sync/1` streams to T and writes whatever bytes it likes. A
//! stranger is a key that is not in the account at all. A hostile contact
//! is a key of another account that T shares `notes` with.
//!
//! Every case checks two things: T ends the offending session (or never lets
//! the stranger in), and T keeps serving its own devices — it answers, and a
//! write on either T or G reaches the other.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use automerge::sync::{BloomFilter, ChunkList, Have, Message, State, SyncDoc as _};
use automerge::transaction::Transactable as _;
use automerge::{ActorId, Automerge, ChangeHash, ROOT};
use futures::io::WriteHalf;
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use hearth_crdt::collection::{Authorship, Collection, PutMode, shard_of};
use hearth_crdt::node::contacts::{Reply, Request};
use hearth_crdt::node::queries;
use hearth_crdt::sync::{FRAME_VERSION, Frame, Hello, Limits, Summary, log_digest};
use hearth_crypto::acl::{Acl, AclEntry, AclOp, Level};
use hearth_crypto::card::Card;
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership::Log;
use hearth_node::config::{ContactsConfig, EngineConfig, QueriesConfig};
use hearth_node::engine::{Engine, Handle, Running};
use hearth_node::home::Home;
use hearth_node::mesh::{self as node_mesh, Mesh};
use hearth_node::net::{self, Admission, Event, Net};
use hearth_node::store::Unlock;
use libp2p::{Multiaddr, PeerId};
use rand::{RngCore as _, SeedableRng as _};
use serde_json::json;
use tokio::sync::{RwLock, mpsc};
use tokio::time::{Instant, sleep, timeout};

/// Longest wait for anything that should happen: sync, a close, a log line.
const WAIT: Duration = Duration::from_secs(10);
const NOTES: &str = "io.cozy.notes";
/// T's shard count for `NOTES` (the engine default).
const SHARDS: u16 = 16;
/// The record every fixture syncs first; its shard holds a change on T.
const WARMUP: &str = "warmup";

/// Every test runs alone (it holds the write lock): the bomb and Bloom tests
/// measure the whole process's memory, and side by side (each with two or
/// three nodes on two cores, under CI's load) the fixtures missed their
/// 10 s waits now and then. Serial, the whole file takes a few seconds.
static ALONE: RwLock<()> = RwLock::const_new(());

// ---------------------------------------------------------------------------
// Log capture: the node says why it closed a session only in its logs, and
// the assertions check that each case was refused for the intended reason.

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .with_env_filter("hearth_node=info")
            .try_init();
    });
}

/// Whether one log line contains every one of `needles`.
fn logged(needles: &[&str]) -> bool {
    let logs = LOGS.lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .any(|line| needles.iter().all(|n| line.contains(n)))
}

async fn expect_logged(needles: &[&str]) {
    let deadline = Instant::now() + WAIT;
    while !logged(needles) {
        if Instant::now() >= deadline {
            // What the node did say is the lead to a failure here.
            let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "no log line with {needles:?} within {WAIT:?}; the last lines:\n{}",
                tail.join("\n")
            );
        }
        sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Nodes.

fn cheap_kdf() -> hearth_crypto::wrap::KdfParams {
    hearth_crypto::wrap::KdfParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    }
}

fn net_config() -> net::Config {
    net::Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        mdns: false,
        ..net::Config::default()
    }
}

fn new_key() -> DeviceKey {
    DeviceKey::generate(&mut rand::rngs::OsRng)
}

fn peer_id(key: &DeviceKey) -> PeerId {
    node_mesh::peer_id(&key.id()).unwrap()
}

/// A running node: engine, network and mesh, as `hearth up` starts them.
struct Node {
    _dir: tempfile::TempDir,
    running: Option<Running>,
    handle: Handle,
    mesh: Mesh,
    peer: PeerId,
    addr: Multiaddr,
    /// Every network event the mesh saw, in order.
    events: Arc<Mutex<Vec<Event>>>,
}

impl Node {
    /// Spawns `engine` and starts its network and mesh the way
    /// `daemon::start_mesh` does, recording the network events on the way.
    async fn start(
        dir: tempfile::TempDir,
        engine: Engine,
        config: &EngineConfig,
        contacts: &ContactsConfig,
    ) -> Node {
        let key = DeviceKey::from_bytes(&engine.device_key().to_bytes());
        let running = engine.spawn().unwrap();
        let handle = running.handle.clone();
        let members = handle.members().borrow().clone();
        let admission = Admission::new(
            members
                .devices
                .iter()
                .filter(|d| **d != members.me)
                .filter_map(node_mesh::peer_id),
        );
        let mut net = net::spawn(&key, net_config(), admission.clone())
            .await
            .unwrap();
        let addr = net.handle.listen_addrs().await.unwrap().remove(0);
        let events = Arc::new(Mutex::new(Vec::new()));
        let (tee, teed) = mpsc::channel(256);
        let mut source = std::mem::replace(&mut net.events, teed);
        let seen = events.clone();
        tokio::spawn(async move {
            while let Some(event) = source.recv().await {
                seen.lock().unwrap().push(event.clone());
                if tee.send(event).await.is_err() {
                    return;
                }
            }
        });
        let mesh = Mesh::start(
            handle.clone(),
            net,
            admission,
            hearth_node::mesh::Settings {
                max_frame: config.max_frame_bytes,
                outbox: config.peer_outbox,
                contacts: contacts.clone(),
                // As `Settings::of` does: the stream's bound is the core's.
                queries: QueriesConfig {
                    max_message_bytes: config.queries.max_message_bytes,
                    ..QueriesConfig::default()
                },
                ..hearth_node::mesh::Settings::default()
            },
        );
        Node {
            _dir: dir,
            running: Some(running),
            handle,
            mesh,
            peer: peer_id(&key),
            addr,
            events,
        }
    }

    async fn stop(mut self) {
        let _ = self.mesh.net().shutdown().await;
        if let Some(running) = self.running.take() {
            tokio::task::spawn_blocking(move || running.stop())
                .await
                .unwrap();
        }
    }
}

fn home_in(dir: &tempfile::TempDir) -> Home {
    let home = Home::resolve(Some(dir.path())).unwrap();
    home.ensure_dirs().unwrap();
    home
}

/// T and G, synced, and H's key in the account.
struct Fixture {
    t: Node,
    g: Node,
    h_key: DeviceKey,
    log: Log,
    config: EngineConfig,
    writes: AtomicU32,
}

async fn fixture() -> Fixture {
    fixture_with(&ContactsConfig::default()).await
}

/// [`fixture`], with T taking contact requests as `contacts` says.
async fn fixture_with(contacts: &ContactsConfig) -> Fixture {
    fixture_tuned(contacts, EngineConfig::default()).await
}

/// [`fixture_with`], with T's and G's engines tuned as `config` says.
async fn fixture_tuned(contacts: &ContactsConfig, config: EngineConfig) -> Fixture {
    capture_logs();
    // As `Config::load` does: the core's contact bounds come from `[contacts]`.
    let config = EngineConfig {
        contacts: contacts.limits(),
        ..config
    };
    let t_dir = tempfile::tempdir().unwrap();
    let t_engine = Engine::init(
        &home_in(&t_dir),
        Unlock::KeyFile,
        cheap_kdf(),
        "target",
        config.clone(),
    )
    .unwrap();
    let t_key = DeviceKey::from_bytes(&t_engine.device_key().to_bytes());
    // Membership first, so that both gates admit from the start.
    let t_running = t_engine.spawn().unwrap();
    let (g_key, h_key) = (new_key(), new_key());
    t_running
        .handle
        .add_device(h_key.id(), "hostile".into())
        .await
        .unwrap();
    let log = t_running
        .handle
        .add_device(g_key.id(), "good".into())
        .await
        .unwrap();
    let log = Log::decode(&log).unwrap();
    tokio::task::spawn_blocking(move || t_running.stop())
        .await
        .unwrap();
    let t_engine = Engine::open(&home_in(&t_dir), Unlock::KeyFile, config.clone()).unwrap();
    assert_eq!(t_engine.device_key().id(), t_key.id());
    let t = Node::start(t_dir, t_engine, &config, contacts).await;

    let g_dir = tempfile::tempdir().unwrap();
    let g_engine = Engine::init_joined(
        &home_in(&g_dir),
        Unlock::KeyFile,
        cheap_kdf(),
        g_key,
        log.clone(),
        config.clone(),
    )
    .unwrap();
    let g = Node::start(g_dir, g_engine, &config, &ContactsConfig::default()).await;
    g.mesh.net().dial(t.addr.clone()).await.unwrap();

    let fx = Fixture {
        t,
        g,
        h_key,
        log,
        config,
        writes: AtomicU32::new(0),
    };
    put(&fx.t.handle, WARMUP, 0).await;
    wait_for(&fx.g.handle, WARMUP, 0).await;
    fx
}

async fn put(node: &Handle, id: &str, n: u32) {
    node.put(NOTES, Some(id.into()), json!({ "n": n }), PutMode::Upsert)
        .await
        .unwrap();
}

/// Waits until `node` holds record `id` with `n`.
async fn wait_for(node: &Handle, id: &str, n: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(record) = node.get(NOTES, id).await
            && record["n"] == n
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "record {id} = {n} did not sync within {WAIT:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

impl Fixture {
    /// T answers, and writes travel both ways between T and G.
    async fn assert_serving(&self, after: &str) {
        let status = timeout(WAIT, self.t.handle.status())
            .await
            .unwrap_or_else(|_| panic!("T does not answer after {after}"))
            .unwrap();
        assert_eq!(status.device_id, self.t.peer.to_string());
        let n = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        let on_t = format!("from-t-{n}");
        put(&self.t.handle, &on_t, n).await;
        wait_for(&self.g.handle, &on_t, n).await;
        let on_g = format!("from-g-{n}");
        put(&self.g.handle, &on_g, n).await;
        wait_for(&self.t.handle, &on_g, n).await;
    }

    /// H's network, connected to T as a member.
    async fn hostile(&self) -> Net {
        let mut net = net::spawn(&self.h_key, net_config(), Admission::new([self.t.peer]))
            .await
            .unwrap();
        connect(&mut net, self.t.peer, &self.t.addr).await;
        net
    }

    fn h_id(&self) -> String {
        self.h_key.id().to_string()
    }

    /// A well-formed Hello that matches T's membership log and claims no
    /// collections, so the session is past its greeting.
    fn hello(&self) -> Vec<u8> {
        Frame::Hello(Hello {
            log_digest: log_digest(&self.log),
            collections: Vec::new(),
        })
        .encode(&Limits::default())
        .unwrap()
    }

    async fn stop(self) {
        self.g.stop().await;
        self.t.stop().await;
    }
}

/// One raw sync stream from H to T.
struct RawSession {
    writer: WriteHalf<libp2p::Stream>,
    /// T's Hello.
    hello: Hello,
    /// Frames T sent before its Hello, not read yet.
    early: std::collections::VecDeque<Vec<u8>>,
    /// Frames T sends; closed when T ends the stream.
    frames: mpsc::Receiver<Vec<u8>>,
}

impl RawSession {
    /// Opens the stream and waits for T's Hello, which shows that T runs a
    /// session on it.
    async fn open(net: &Net, t: PeerId) -> RawSession {
        let mut control = net.handle.stream_control();
        let stream = timeout(WAIT, control.open_stream(t, net::SYNC))
            .await
            .expect("opening a sync stream timed out")
            .expect("T refused a sync stream from a member");
        let (mut reader, writer) = stream.split();
        let (tx, frames) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok(Some(frame)) = net::read_frame(&mut reader, 64 << 20).await {
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
        let mut frames = frames;
        // A contact's session may carry access lists ahead of the Hello.
        let mut early = std::collections::VecDeque::new();
        let hello = loop {
            let frame = timeout(WAIT, frames.recv())
                .await
                .expect("T sent no Hello")
                .expect("T closed the stream before its Hello");
            match Frame::decode(&frame, &Limits::default()) {
                Ok(Frame::Hello(hello)) => break hello,
                Ok(Frame::Acl { .. }) => early.push_back(frame),
                _ => panic!("T's first frame is not a Hello"),
            }
        };
        RawSession {
            writer,
            hello,
            early,
            frames,
        }
    }

    async fn send(&mut self, frame: &[u8]) {
        net::write_frame(&mut self.writer, frame).await.unwrap();
    }

    /// The next frame T sends that `pick` accepts, skipping others.
    async fn next_where<T>(&mut self, mut pick: impl FnMut(Frame) -> Option<T>) -> T {
        while let Some(bytes) = self.early.pop_front() {
            if let Some(found) = Frame::decode(&bytes, &Limits::default())
                .ok()
                .and_then(&mut pick)
            {
                return found;
            }
        }
        timeout(WAIT, async {
            while let Some(bytes) = self.frames.recv().await {
                if let Some(found) = Frame::decode(&bytes, &Limits::default())
                    .ok()
                    .and_then(&mut pick)
                {
                    return found;
                }
            }
            panic!("T closed the stream first");
        })
        .await
        .expect("T never sent the frame waited for")
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// Waits until T ends the stream (whatever else it still sends first).
    async fn expect_closed(mut self, case: &str) {
        let closed = timeout(WAIT, async { while self.frames.recv().await.is_some() {} }).await;
        assert!(closed.is_ok(), "T kept the stream open after {case}");
    }
}

// ---------------------------------------------------------------------------
// Hostile payloads.

/// An Automerge chunk of `kind` around `body` (checksum bytes arbitrary: the
/// inflate check runs before anything verifies them).
fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3, 4, kind];
    out.extend(uleb(body.len() as u64));
    out.extend_from_slice(body);
    out
}

fn uleb(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A sync frame for `shard` of `NOTES` carrying `message`.
fn sync_frame(shard: u16, message: Message) -> Vec<u8> {
    Frame::Sync {
        collection: NOTES.into(),
        shards: SHARDS,
        shard,
        message: message.encode(),
        signatures: Vec::new(),
    }
    .encode(&Limits::default())
    .unwrap()
}

/// A well-formed sync message with no content, to fill in.
fn empty_message() -> Message {
    Automerge::new()
        .generate_sync_message(&mut State::new())
        .unwrap()
}

fn message_with_changes(chunks: Vec<Vec<u8>>) -> Message {
    let mut message = empty_message();
    message.changes = ChunkList::from(chunks);
    message
}

/// Two decompression bombs that inflate to `inflated` bytes of zeros: a
/// compressed change chunk (type 2) and a document chunk (type 0) with one
/// deflated change column.
fn bombs(inflated: usize) -> [Vec<u8>; 2] {
    let deflated = miniz_oxide::deflate::compress_to_vec(&vec![0u8; inflated], 6);
    let change = sync_frame(0, message_with_changes(vec![chunk(2, &deflated)]));
    // No actors, no heads, one change column (id 1, deflated), no op column.
    let mut body = vec![0, 0, 1, 0x10 | 0x08];
    body.extend(uleb(deflated.len() as u64));
    body.push(0);
    body.extend_from_slice(&deflated);
    let document = sync_frame(0, message_with_changes(vec![chunk(0, &body)]));
    [change, document]
}

/// One real Automerge change chunk.
fn real_change() -> Vec<u8> {
    let mut doc = Automerge::new().with_actor(ActorId::from([9u8; 16]));
    let mut tx = doc.transaction();
    tx.put(
        ROOT,
        "hostile",
        "a value long enough to corrupt in its middle",
    )
    .unwrap();
    tx.commit();
    doc.get_changes(&[]).pop().unwrap().raw_bytes().to_vec()
}

/// The process's peak resident memory, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Resets the peak to the current resident memory (Linux `clear_refs` 5).
fn reset_peak_rss() {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/clear_refs")
    {
        let _ = f.write_all(b"5");
    }
}

// ---------------------------------------------------------------------------
// The cases.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_is_never_connected_and_cannot_open_a_sync_stream() {
    let _alone = ALONE.write().await;
    // With contact requests closed, a stranger is refused at the gate.
    let closed = ContactsConfig {
        accept_requests: false,
        ..ContactsConfig::default()
    };
    let fx = fixture_with(&closed).await;
    let stranger = new_key();
    let s_peer = peer_id(&stranger);
    let net = net::spawn(&stranger, net_config(), Admission::new([fx.t.peer]))
        .await
        .unwrap();
    // The dial may start; T's gate refuses the connection after the handshake.
    let _ = net.handle.dial(fx.t.addr.clone()).await;
    let mut control = net.handle.stream_control();
    let opened = timeout(WAIT, control.open_stream(fx.t.peer, net::SYNC)).await;
    assert!(
        !matches!(opened, Ok(Ok(_))),
        "a stranger opened a sync stream on T"
    );
    assert!(
        !fx.t
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Connected { peer, .. } if *peer == s_peer)),
        "T reported a connection with the stranger"
    );
    let peers = fx.t.mesh.net().peers().await.unwrap();
    assert!(
        !peers.iter().any(|p| p.id == s_peer && p.connected),
        "T holds a connection to the stranger"
    );
    let devices = fx.t.handle.devices().await.unwrap();
    assert!(!devices.iter().any(|d| d.id == s_peer.to_string()));
    fx.assert_serving("a stranger's dial").await;
    let _ = net.handle.shutdown().await;
    fx.stop().await;
}

/// Dials `t` at `addr` from `net` and waits until the connection is up.
/// A stream opened while a connection is still being set up can wait
/// forever inside libp2p-stream (its open finds no connection yet and its
/// own dial is skipped as one is under way), so tests open streams only on
/// an established connection, as the node's mesh does.
async fn connect(net: &mut Net, t: PeerId, addr: &Multiaddr) {
    net.handle.dial(addr.clone()).await.unwrap();
    let connected = timeout(WAIT, async {
        while let Some(event) = net.events.recv().await {
            if matches!(event, Event::Connected { peer, .. } if peer == t) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(connected, Ok(true), "no connection to T");
}

/// One `/hearth/share/1` exchange from `net` to `t`: the reply, or `None`
/// when T closed the stream without one.
async fn share_exchange(net: &Net, t: PeerId, frame: &[u8]) -> Option<Reply> {
    let mut control = net.handle.stream_control();
    let mut stream = timeout(WAIT, control.open_stream(t, net::SHARE))
        .await
        .expect("opening a share stream timed out")
        .ok()?;
    net::write_frame(&mut stream, frame).await.ok()?;
    let reply = timeout(WAIT, net::read_frame(&mut stream, 1 << 20))
        .await
        .expect("T neither answered nor closed the share stream")
        .ok()??;
    Some(Reply::decode(&reply, 1 << 20).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_reaches_only_the_share_protocol_and_its_requests_are_bounded() {
    let _alone = ALONE.write().await;
    let contacts = ContactsConfig {
        requests_per_minute: 4,
        max_pending: 1,
        ..ContactsConfig::default()
    };
    let fx = fixture_with(&contacts).await;
    let stranger = new_key();
    let mut net = net::spawn(&stranger, net_config(), Admission::new([fx.t.peer]))
        .await
        .unwrap();
    connect(&mut net, fx.t.peer, &fx.t.addr).await;

    // A sync stream from it is dropped unread, and so is a pairing stream.
    let mut control = net.handle.stream_control();
    if let Ok(Ok(stream)) = timeout(WAIT, control.open_stream(fx.t.peer, net::SYNC)).await {
        let (mut reader, _w) = stream.split();
        let read = timeout(WAIT, net::read_frame(&mut reader, 1 << 20)).await;
        assert!(
            !matches!(read, Ok(Ok(Some(_)))),
            "T sent a requester a sync frame"
        );
    }
    expect_logged(&["refused a sync stream", &stranger.id().to_string()]).await;

    let own = Log::genesis(&stranger, "stranger", 0);
    let card = Card::new(&stranger, "stranger", own, Vec::new()).unwrap();
    let request = Request::Card {
        card: card.to_bytes(),
    }
    .encode();

    // A card of another account, sent by this device: refused.
    let other = new_key();
    let forged = Card::new(
        &other,
        "other",
        Log::genesis(&other, "other", 0),
        Vec::new(),
    )
    .unwrap();
    let forged = Request::Card {
        card: forged.to_bytes(),
    }
    .encode();
    let reply = share_exchange(&net, fx.t.peer, &forged).await;
    assert!(
        matches!(&reply, Some(Reply::Refused { reason }) if reason.contains("not a member")),
        "{reply:?}"
    );
    expect_logged(&["refused a contact request", "not a member"]).await;

    // Its own card: kept as a pending request; again, still one request.
    for _ in 0..3 {
        let reply = share_exchange(&net, fx.t.peer, &request).await;
        assert_eq!(reply, Some(Reply::Pending));
    }
    // The fifth request in the minute is one over the limit.
    let reply = share_exchange(&net, fx.t.peer, &request).await;
    assert!(
        matches!(&reply, Some(Reply::Refused { reason }) if reason.contains("too many")),
        "{reply:?}"
    );
    let listed = fx.t.handle.contacts().await.unwrap();
    assert_eq!(listed.len(), 1, "one pending request: {listed:?}");
    assert_eq!(listed[0].account_id, card.account().to_string());

    // A message one byte over the size limit gets no answer.
    let big = vec![1u8; contacts.max_message_bytes + 1];
    let reply = share_exchange(&net, fx.t.peer, &big).await;
    assert_eq!(reply, None, "T answered an oversized message");
    expect_logged(&["share exchange failed"]).await;

    fx.assert_serving("a requester's streams").await;
    let _ = net.handle.shutdown().await;
    fx.stop().await;
}

/// One `/hearth/query/1` exchange from `net` to `t`: the reply, or `None`
/// when T closed the stream without one (or never let it open).
async fn query_exchange(net: &Net, t: PeerId, frame: &[u8]) -> Option<queries::Reply> {
    let mut control = net.handle.stream_control();
    let mut stream = timeout(WAIT, control.open_stream(t, net::QUERY))
        .await
        .expect("opening a query stream timed out")
        .ok()?;
    net::write_frame(&mut stream, frame).await.ok()?;
    let reply = timeout(WAIT, net::read_frame(&mut stream, 1 << 24))
        .await
        .expect("T neither answered nor closed the query stream")
        .ok()??;
    Some(queries::Reply::decode(&reply, 1 << 24).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_protocol_is_bounded_in_size_and_rate_and_closed_to_strangers() {
    let _alone = ALONE.write().await;
    let limits = queries::Limits {
        requests_per_minute: 4,
        max_message_bytes: 64 * 1024,
        ..queries::Limits::default()
    };
    let config = EngineConfig {
        queries: limits,
        ..EngineConfig::default()
    };
    let fx = fixture_tuned(&ContactsConfig::default(), config).await;
    let canonical = json!({ "aggregate": { "n": { "$count": true } }, "collection": NOTES });
    let gather = |id: &str| {
        queries::Request::Gather {
            id: id.to_owned(),
            canonical: canonical.to_string(),
        }
        .encode()
    };

    // A stranger (admitted only to send a contact request) cannot query.
    let stranger = new_key();
    let mut outsider = net::spawn(&stranger, net_config(), Admission::new([fx.t.peer]))
        .await
        .unwrap();
    connect(&mut outsider, fx.t.peer, &fx.t.addr).await;
    let reply = query_exchange(&outsider, fx.t.peer, &gather("q0")).await;
    assert_eq!(reply, None, "T answered a stranger's query");
    expect_logged(&["refused a query stream", &stranger.id().to_string()]).await;
    let _ = outsider.handle.shutdown().await;

    // H is a member device: its requests reach the core.
    let mut net = net::spawn(&fx.h_key, net_config(), Admission::new([fx.t.peer]))
        .await
        .unwrap();
    connect(&mut net, fx.t.peer, &fx.t.addr).await;
    // One byte over the message limit: refused before it is read, and it
    // costs no request of the minute.
    let big = vec![1u8; limits.max_message_bytes + 1];
    let reply = query_exchange(&net, fx.t.peer, &big).await;
    assert_eq!(reply, None, "T answered an oversized query message");
    expect_logged(&["query exchange failed"]).await;
    // At the limit the message reaches the core, which refuses what it is.
    let mut at_limit = vec![1u8; limits.max_message_bytes];
    at_limit[0] = 1;
    let reply = query_exchange(&net, fx.t.peer, &at_limit).await;
    assert!(
        matches!(&reply, Some(queries::Reply::Refused { .. })),
        "{reply:?}"
    );
    // The records that match, then a replay of the same request refused.
    let reply = query_exchange(&net, fx.t.peer, &gather("q1")).await;
    let Some(queries::Reply::Records { json }) = reply else {
        panic!("a member's gather was not answered with records: {reply:?}");
    };
    let records: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert!(
        records
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["_id"] == WARMUP),
        "{records}"
    );
    let reply = query_exchange(&net, fx.t.peer, &gather("q1")).await;
    assert!(
        matches!(&reply, Some(queries::Reply::Refused { reason }) if reason.contains("repeat")),
        "{reply:?}"
    );
    expect_logged(&["refused a query request", "repeat"]).await;
    let reply = query_exchange(&net, fx.t.peer, &gather("q2")).await;
    assert!(
        matches!(&reply, Some(queries::Reply::Records { .. })),
        "{reply:?}"
    );
    // The fifth request in the minute is one over the limit.
    let reply = query_exchange(&net, fx.t.peer, &gather("q3")).await;
    assert!(
        matches!(&reply, Some(queries::Reply::Refused { reason }) if reason.contains("too many")),
        "{reply:?}"
    );
    // Every decision is in T's audit log, the refusals included.
    let audit = fx.t.handle.audit().await.unwrap();
    assert!(audit.len() >= 3, "{audit:?}");

    fx.assert_serving("a member's query streams").await;
    let _ = net.handle.shutdown().await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_requests_are_capped_at_their_limit() {
    let _alone = ALONE.write().await;
    let contacts = ContactsConfig {
        max_pending: 2,
        ..ContactsConfig::default()
    };
    let fx = fixture_with(&contacts).await;
    let mut replies = Vec::new();
    for n in 0..3 {
        let key = new_key();
        let mut net = net::spawn(&key, net_config(), Admission::new([fx.t.peer]))
            .await
            .unwrap();
        connect(&mut net, fx.t.peer, &fx.t.addr).await;
        let name = format!("asker-{n}");
        let card = Card::new(&key, &name, Log::genesis(&key, &name, 0), Vec::new()).unwrap();
        let request = Request::Card {
            card: card.to_bytes(),
        }
        .encode();
        replies.push(share_exchange(&net, fx.t.peer, &request).await);
        let _ = net.handle.shutdown().await;
    }
    assert_eq!(replies[..2], [Some(Reply::Pending), Some(Reply::Pending)]);
    assert!(
        matches!(&replies[2], Some(Reply::Refused { reason }) if reason.contains("unanswered")),
        "{replies:?}"
    );
    assert_eq!(fx.t.handle.contacts().await.unwrap().len(), 2);
    fx.assert_serving("a flood of requests").await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_is_dropped_as_stalled_and_the_others_keep_syncing() {
    let _alone = ALONE.write().await;
    let outbox = 8;
    let config = EngineConfig {
        peer_outbox: outbox,
        ..EngineConfig::default()
    };
    let fx = fixture_tuned(&ContactsConfig::default(), config).await;
    // A record of 128 KiB in every shard of T. The text must not compress
    // (automerge deflates large columns): repeated letters would shrink each
    // answer to a few hundred bytes, every answer would fit in the stream's
    // window, and whether the outbox ever filled would be down to scheduling.
    let text = incompressible_text(128 * 1024);
    let mut ids = std::collections::BTreeMap::new();
    for n in 0.. {
        let id = format!("big-{n}");
        ids.entry(shard_of(&id, SHARDS)).or_insert(id);
        if ids.len() == usize::from(SHARDS) {
            break;
        }
    }
    for id in ids.values() {
        fx.t.handle
            .put(
                NOTES,
                Some(id.clone()),
                json!({ "text": text }),
                PutMode::Upsert,
            )
            .await
            .unwrap();
    }
    let net = fx.hostile().await;
    let mut control = net.handle.stream_control();
    let stream = timeout(WAIT, control.open_stream(fx.t.peer, net::SYNC))
        .await
        .unwrap()
        .unwrap();
    // H greets, asks for every shard, and never reads: T's answers (a
    // shard each) fill the stream's window, then the outbox.
    let (_reader, mut writer) = stream.split();
    net::write_frame(&mut writer, &fx.hello()).await.unwrap();
    for shard in ids.keys() {
        net::write_frame(&mut writer, &sync_frame(*shard, empty_message()))
            .await
            .unwrap();
    }
    expect_logged(&["ending a sync session", "its outbox is full"]).await;
    fx.assert_serving("a member that never reads").await;
    drop(writer);
    let _ = net.handle.shutdown().await;
    fx.stop().await;
}

/// `len` letters from a fixed pseudo-random sequence (xorshift64), which
/// deflate cannot shrink much below six bits a letter.
fn incompressible_text(len: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + u8::try_from(state % 26).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_that_session() {
    let _alone = ALONE.write().await;
    let fx = fixture().await;
    let h = fx.hostile().await;
    let h_id = fx.h_id();
    let max = u32::try_from(fx.config.max_frame_bytes).unwrap();

    // One byte over the limit, then nothing: T must refuse on the prefix
    // alone instead of waiting for (or allocating) 16 MiB.
    let mut session = RawSession::open(&h, fx.t.peer).await;
    session.send_raw(&(max + 1).to_be_bytes()).await;
    session
        .expect_closed("a length prefix over the limit")
        .await;
    let over = format!("frame of {} bytes exceeds the limit", max + 1);
    expect_logged(&[&h_id, "bad frame on the sync stream", &over]).await;
    fx.assert_serving("an oversized frame").await;

    // The largest prefix there is, after a proper Hello.
    let mut session = RawSession::open(&h, fx.t.peer).await;
    session.send(&fx.hello()).await;
    session.send_raw(&u32::MAX.to_be_bytes()).await;
    session.expect_closed("a u32::MAX length prefix").await;
    let over = format!("frame of {} bytes exceeds the limit", u32::MAX);
    expect_logged(&[&h_id, &over]).await;
    fx.assert_serving("a u32::MAX frame").await;

    let _ = h.handle.shutdown().await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_close_only_that_session() {
    let _alone = ALONE.write().await;
    let fx = fixture().await;
    let h = fx.hostile().await;
    let h_id = fx.h_id();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x4845_4152_5448);

    let mut garbage = vec![0u8; 4096];
    rng.fill_bytes(&mut garbage);
    garbage[0] = 0xee; // not our frame version
    let mut session = RawSession::open(&h, fx.t.peer).await;
    session.send(&garbage).await;
    session.expect_closed("random bytes").await;
    expect_logged(&[
        &h_id,
        "closing the sync session",
        "unsupported sync frame version 238",
    ])
    .await;
    fx.assert_serving("random bytes").await;

    // The right version byte, so postcard decodes random bytes.
    rng.fill_bytes(&mut garbage);
    garbage[0] = FRAME_VERSION;
    let mut session = RawSession::open(&h, fx.t.peer).await;
    session.send(&fx.hello()).await;
    session.send(&garbage).await;
    session
        .expect_closed("random bytes after the version byte")
        .await;
    fx.assert_serving("random bytes after the version byte")
        .await;

    // A well-formed frame whose Automerge message is garbage.
    let mut message = vec![0x42];
    message.extend_from_slice(&garbage[..512]);
    let frame = Frame::Sync {
        collection: NOTES.into(),
        shards: SHARDS,
        shard: 0,
        message,
        signatures: Vec::new(),
    }
    .encode(&Limits::default())
    .unwrap();
    let mut session = RawSession::open(&h, fx.t.peer).await;
    session.send(&fx.hello()).await;
    session.send(&frame).await;
    session.expect_closed("a garbage sync message").await;
    expect_logged(&[&h_id, "closing the sync session", "malformed sync message"]).await;
    fx.assert_serving("a garbage sync message").await;

    let _ = h.handle.shutdown().await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_without_inflating() {
    // Bombs twice the engine's inflate limit: if one were inflated, memory
    // would grow by far more than the bound checked below.
    let [change_bomb, document_bomb] = bombs(128 << 20);
    let _alone = ALONE.write().await;
    let fx = fixture().await;
    let h = fx.hostile().await;
    let h_id = fx.h_id();
    let limit = format!("inflates past {} bytes", fx.config.max_inflated_bytes);

    for (name, bomb) in [
        ("a compressed change bomb", &change_bomb),
        ("a document column bomb", &document_bomb),
    ] {
        assert!(bomb.len() < 1 << 20, "{name} is {} bytes", bomb.len());
        let mut session = RawSession::open(&h, fx.t.peer).await;
        session.send(&fx.hello()).await;
        reset_peak_rss();
        let before = peak_rss_kib();
        session.send(bomb).await;
        session.expect_closed(name).await;
        expect_logged(&[&h_id, "closing the sync session", &limit]).await;
        let grown = peak_rss_kib().saturating_sub(before);
        assert!(
            grown < 64 * 1024,
            "{name} of {} bytes grew peak memory by {grown} KiB",
            bomb.len()
        );
        fx.assert_serving(name).await;
    }
    let _ = h.handle.shutdown().await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_that_breaks_automerge_closes_only_that_session() {
    let _alone = ALONE.write().await;
    let fx = fixture().await;
    let h = fx.hostile().await;
    let h_id = fx.h_id();

    // A Bloom filter with one entry and zero bits per entry: unchecked,
    // Automerge takes a remainder by zero (a panic) when it checks T's
    // changes against it. The sync layer now refuses such a filter before
    // Automerge sees it; either way only this session may close. The shard
    // must hold a change of T's for Automerge to check one, and the message
    // claims heads, so that Automerge does not skip the filter by sending its
    // whole document to a peer that has nothing.
    let mut message = empty_message();
    message.heads = vec![ChangeHash([7; 32])];
    message.have = vec![Have {
        last_sync: Vec::new(),
        bloom: BloomFilter::try_from(&[1u8, 0, 7][..]).unwrap(),
    }];
    let mut session = RawSession::open(&h, fx.t.peer).await;
    session.send(&fx.hello()).await;
    session
        .send(&sync_frame(shard_of(WARMUP, SHARDS), message))
        .await;
    session
        .expect_closed("a Bloom filter that panics Automerge")
        .await;
    expect_logged(&[&h_id, "closing the sync session", "Bloom filter"]).await;
    fx.assert_serving("an Automerge panic").await;

    // A real change with one byte flipped in its middle.
    let mut corrupted = real_change();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x55;
    let mut session = RawSession::open(&h, fx.t.peer).await;
    session.send(&fx.hello()).await;
    session
        .send(&sync_frame(0, message_with_changes(vec![corrupted])))
        .await;
    session.expect_closed("a corrupted change").await;
    expect_logged(&[&h_id, "closing the sync session", "collection"]).await;
    fx.assert_serving("a corrupted change").await;

    // A real change cut short.
    let mut truncated = real_change();
    truncated.truncate(truncated.len() - 7);
    let mut session = RawSession::open(&h, fx.t.peer).await;
    session.send(&fx.hello()).await;
    session
        .send(&sync_frame(0, message_with_changes(vec![truncated])))
        .await;
    session.expect_closed("a truncated change").await;
    fx.assert_serving("a truncated change").await;

    // None of it reached T's data: the warmup record and the checks' writes.
    let (_, total) = fx.t.handle.list(NOTES, 0, usize::MAX).await.unwrap();
    assert_eq!(total, 1 + 2 * fx.writes.load(Ordering::Relaxed) as usize);
    let _ = h.handle.shutdown().await;
    fx.stop().await;
}

/// Automerge allocates `num_probes` × 4 bytes and loops `num_probes` times per
/// change it checks, and `num_probes` comes from the peer: at `u32::MAX` one
/// 9-byte filter would make T's engine thread allocate 16 GiB and spin
/// through 4 billion probes per change. The sync layer refuses filters beyond
/// Automerge's own parameters; this runs the attack at 2^26 probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bloom_filter_cannot_make_automerge_allocate_without_bound() {
    let _alone = ALONE.write().await;
    let fx = fixture().await;
    let h = fx.hostile().await;
    let mut bloom = vec![1u8, 10];
    bloom.extend(uleb(1 << 26));
    bloom.extend([0xff, 0xff]);
    let mut message = empty_message();
    message.heads = vec![ChangeHash([7; 32])];
    message.have = vec![Have {
        last_sync: Vec::new(),
        bloom: BloomFilter::try_from(&bloom[..]).unwrap(),
    }];
    let mut session = RawSession::open(&h, fx.t.peer).await;
    session.send(&fx.hello()).await;
    reset_peak_rss();
    let before = peak_rss_kib();
    let started = Instant::now();
    session
        .send(&sync_frame(shard_of(WARMUP, SHARDS), message))
        .await;
    // Whatever T does with it, it must answer its own devices promptly.
    fx.assert_serving("a Bloom filter with 2^26 probes").await;
    let took = started.elapsed();
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 64 * 1024 && took < Duration::from_secs(2),
        "a {}-byte Bloom filter grew peak memory by {grown} KiB; T served again after {took:?}",
        bloom.len()
    );
    drop(session);
    let _ = h.handle.shutdown().await;
    fx.stop().await;
}

/// Regression: the engine stored the chunks of a peer's frame only for
/// collections whose records visibly changed, yet stored the sync states and
/// answered either way. A change that moves a shard's heads without changing
/// any record (here a record added and removed in one change) was
/// acknowledged to the peer and then lost at the next restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_alters_no_record_is_durable_before_the_answer() {
    let _alone = ALONE.write().await;
    let fx = fixture().await;
    let h = fx.hostile().await;
    let mut session = RawSession::open(&h, fx.t.peer).await;
    session.send(&fx.hello()).await;

    let id = (0..)
        .map(|i| format!("fleeting-{i}"))
        .find(|id| shard_of(id, SHARDS) == 0)
        .unwrap();
    let mut doc = Automerge::new().with_actor(ActorId::from([7u8; 16]));
    let mut tx = doc.transaction();
    let record = tx
        .put_object(ROOT, id.as_str(), automerge::ObjType::Map)
        .unwrap();
    tx.put(&record, "n", 1).unwrap();
    tx.delete(ROOT, id.as_str()).unwrap();
    tx.commit();
    let change = doc.get_changes(&[]).pop().unwrap();
    let hash = change.hash();
    session
        .send(&sync_frame(
            0,
            message_with_changes(vec![change.raw_bytes().to_vec()]),
        ))
        .await;
    // T's answer to the frame: by then what the frame changed must be durable.
    timeout(WAIT, session.frames.recv())
        .await
        .expect("T did not answer the change")
        .expect("T closed the stream instead of answering");

    let _ = h.handle.shutdown().await;
    let Fixture { t, g, config, .. } = fx;
    g.stop().await;
    let Node {
        _dir: dir,
        running,
        mesh,
        ..
    } = t;
    let _ = mesh.net().shutdown().await;
    let running = running.unwrap();
    tokio::task::spawn_blocking(move || running.stop())
        .await
        .unwrap();
    let reopened = Engine::open(&home_in(&dir), Unlock::KeyFile, config)
        .unwrap()
        .spawn()
        .unwrap();
    let saved = reopened
        .handle
        .export(NOTES, hearth_node::engine::ExportFormat::Automerge)
        .await
        .unwrap();
    let stored = Automerge::load(&saved).unwrap();
    assert!(
        automerge::ReadDoc::get_change_by_hash(&stored, &hash).is_some(),
        "T answered a change it had not stored"
    );
    tokio::task::spawn_blocking(move || reopened.stop())
        .await
        .unwrap();
}

/// A change writing `id` as the device `actor` into a share of `shards`
/// shards, under `note`: (shard, change chunk, hash).
fn share_change(
    actor: &[u8; 32],
    shards: u16,
    id: &str,
    note: Option<String>,
) -> (u16, Vec<u8>, ChangeHash) {
    let mut c = Collection::new("crafted", shards, ActorId::from(actor.as_slice())).unwrap();
    c.set_note(note);
    c.put(id, json!({ "n": 1 }), PutMode::Upsert, 0).unwrap();
    let shard = c.shard_of(id);
    let chunk = c
        .take_chunks()
        .into_iter()
        .find(|k| k.shard == shard)
        .unwrap()
        .bytes;
    let hash = c.shard_heads(shard).unwrap()[0];
    (shard, chunk, hash)
}

/// A sync frame for the share `wire` carrying one change and `signatures`.
fn share_sync_frame(
    wire: &str,
    shards: u16,
    shard: u16,
    chunk: Vec<u8>,
    signatures: Vec<Authorship>,
) -> Vec<u8> {
    Frame::Sync {
        collection: wire.into(),
        shards,
        shard,
        message: message_with_changes(vec![chunk]).encode(),
        signatures,
    }
    .encode(&Limits::default())
    .unwrap()
}

/// A contact with write access to T's notes, driven by hand: a forged list
/// entry, an unsigned change, a change under T's actor with the contact's
/// signature, each closes only its session with a logged reason; its own
/// signed change is taken; T keeps serving its own devices throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_contact_cannot_forge_the_list_or_another_devices_changes() {
    let _alone = ALONE.write().await;
    let fx = fixture().await;
    let m = new_key();
    let m_log = Log::genesis(&m, "mallory", 0);
    let card = Card::new(&m, "mallory", m_log.clone(), Vec::new()).unwrap();
    fx.t.handle
        .add_contact(card.clone(), "Mallory".into())
        .await
        .unwrap();
    let mut net = net::spawn(&m, net_config(), Admission::new([fx.t.peer]))
        .await
        .unwrap();
    connect(&mut net, fx.t.peer, &fx.t.addr).await;
    let request = Request::Card {
        card: card.to_bytes(),
    }
    .encode();
    share_exchange(&net, fx.t.peer, &request).await.unwrap();
    let share =
        fx.t.handle
            .share(NOTES.into(), "Mallory".into(), Level::Write)
            .await
            .unwrap();
    let answer = Request::Answer {
        share: share.id.clone(),
        accepted: true,
    }
    .encode();
    share_exchange(&net, fx.t.peer, &answer).await.unwrap();
    // T admits Mallory's device to sync once the answer is in.
    let deadline = Instant::now() + WAIT;
    while !fx.t.handle.members().borrow().peers.contains(&m.id()) {
        assert!(Instant::now() < deadline, "T never admitted its contact");
        sleep(Duration::from_millis(20)).await;
    }
    sleep(Duration::from_millis(200)).await;

    let mut session = RawSession::open(&net, fx.t.peer).await;
    let summary = session
        .hello
        .collections
        .iter()
        .find(|c| c.name == share.id)
        .cloned()
        .expect("T's Hello lists the share under its id");
    let shards = summary.shards;
    let hello = Frame::Hello(Hello {
        log_digest: log_digest(&m_log),
        collections: vec![Summary {
            name: share.id.clone(),
            shards,
            digests: summary.digests.clone(),
        }],
    })
    .encode(&Limits::default())
    .unwrap();
    session.send(&hello).await;
    let credentials = session
        .next_where(|f| match f {
            Frame::Acl { collection, bytes } if collection == share.id => Some(bytes),
            _ => None,
        })
        .await;
    let (acl, _, _): (Vec<u8>, Vec<Vec<u8>>, Vec<Vec<u8>>) =
        postcard::from_bytes(&credentials).unwrap();
    let acl = Acl::decode(&acl, &fx.log).unwrap();
    let note = hearth_crdt::node::shares::note_of(&acl);

    // 1. A list entry signed by Mallory (granting a friend write): refused.
    let friend = Log::genesis(&new_key(), "friend", 0).account_id();
    let forged = AclEntry::sign(
        &m,
        AclOp::Grant {
            account: friend,
            level: Level::Write,
        },
        acl.heads(),
        1,
    )
    .unwrap();
    let mut entries: Vec<Vec<u8>> = acl.entries().iter().map(AclEntry::to_bytes).collect();
    entries.push(forged.to_bytes());
    let mut forged_acl = vec![acl.encode()[0]];
    forged_acl.extend(postcard::to_allocvec(&entries).unwrap());
    let frame = Frame::Acl {
        collection: share.id.clone(),
        bytes: postcard::to_allocvec(&(forged_acl, Vec::<Vec<u8>>::new(), Vec::<Vec<u8>>::new()))
            .unwrap(),
    }
    .encode(&Limits::default())
    .unwrap();
    session.send(&frame).await;
    session
        .expect_closed("a list entry signed by a contact")
        .await;
    expect_logged(&["closing the sync session", "no device of the owner account"]).await;

    // 2. Mallory's change without a signature: refused.
    let mine = *m.id().as_bytes();
    let (shard, chunk, hash) = share_change(&mine, shards, "m-unsigned", Some(note.clone()));
    let mut session = RawSession::open(&net, fx.t.peer).await;
    session
        .send(&share_sync_frame(
            &share.id,
            shards,
            shard,
            chunk.clone(),
            Vec::new(),
        ))
        .await;
    session.expect_closed("an unsigned change").await;
    expect_logged(&["closing the sync session", "an unsigned change"]).await;

    // 3. A change under T's own actor, signed by Mallory: refused.
    let t_device = *fx.t.handle.members().borrow().me.as_bytes();
    let (p_shard, p_chunk, p_hash) = share_change(&t_device, shards, "posing-as-t", None);
    let mut session = RawSession::open(&net, fx.t.peer).await;
    let sig = Authorship::sign(&m, &p_hash);
    session
        .send(&share_sync_frame(
            &share.id,
            shards,
            p_shard,
            p_chunk,
            vec![sig],
        ))
        .await;
    session
        .expect_closed("a change under another device's actor")
        .await;
    expect_logged(&["closing the sync session", "may not vouch"]).await;

    // 4. Mallory's own change, signed by Mallory: taken.
    let mut session = RawSession::open(&net, fx.t.peer).await;
    let sig = Authorship::sign(&m, &hash);
    session
        .send(&share_sync_frame(
            &share.id,
            shards,
            shard,
            chunk,
            vec![sig],
        ))
        .await;
    let deadline = Instant::now() + WAIT;
    while fx.t.handle.get(NOTES, "m-unsigned").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "T refused the contact's signed change"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert!(fx.t.handle.get(NOTES, "posing-as-t").await.is_err());
    drop(session);

    // 5. T's own list replayed to T as an offer from Mallory: refused.
    let replay = Request::Offer {
        acl: acl.encode(),
        shards,
    }
    .encode();
    let reply = share_exchange(&net, fx.t.peer, &replay).await;
    assert!(matches!(&reply, Some(Reply::Refused { .. })), "{reply:?}");
    expect_logged(&["refused", &m.id().to_string()]).await;
    // 6. A flood of offers of Mallory's own: the rate limit stops it.
    let mut refused = 0;
    for i in 0..=ContactsConfig::default().requests_per_minute {
        let own = Acl::create(&m, &m_log, &format!("bait-{i}"), 1).unwrap();
        let mut own = own;
        own.grant(&m, &m_log, fx.log.account_id(), Level::Read, 2)
            .unwrap();
        let offer = Request::Offer {
            acl: own.encode(),
            shards: 1,
        }
        .encode();
        if let Some(Reply::Refused { reason }) = share_exchange(&net, fx.t.peer, &offer).await {
            assert!(reason.contains("too many"), "{reason}");
            refused += 1;
        }
    }
    assert!(refused >= 1, "no offer of the flood was refused");

    fx.assert_serving("a hostile contact's frames").await;
    let _ = net.handle.shutdown().await;
    fx.stop().await;
}
