//! Devices of one account, for the mesh scenarios (P5, P7, P11).
//!
//! Pairing is skipped: the benchmark makes every device key itself, writes
//! the account's membership log (the first device's genesis plus one
//! `add_device` entry per other device, signed by the first) and creates
//! each home with `Engine::init_joined` on that log. That is the state a
//! confirmed pairing leaves behind (the welcome carries exactly this log),
//! without the ticket, the check code and the pairing stream, which are not
//! what these scenarios measure.
//!
//! In-process nodes ([`Node`]) run the engine on its thread and the network
//! plus the mesh tasks on the caller's tokio runtime, wired as
//! `hearth_node::daemon` wires them (`net::spawn`, then `Mesh::start`), on
//! loopback TCP without mDNS.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hearth_crypto::identity::{DeviceId, DeviceKey};
use hearth_crypto::membership::Log;
use hearth_crypto::wrap::KdfParams;
use hearth_node::config::EngineConfig;
use hearth_node::engine::{Engine, Handle, Running};
use hearth_node::home::Home;
use hearth_node::mesh::{Mesh, peer_id};
use hearth_node::net;
use hearth_node::store::Unlock;

/// The keys and membership log of an account whose devices are all paired.
pub(crate) struct Account {
    keys: Vec<DeviceKey>,
    log: Log,
}

impl Account {
    /// An account of `count` devices named `dev0`, `dev1`, …; `dev0` made
    /// it and added the others.
    pub(crate) fn new(count: usize) -> Result<Self> {
        let names: Vec<String> = (0..count).map(|i| format!("dev{i}")).collect();
        Self::named(&names.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// An account whose devices are named `names`; the first made it and
    /// added the others.
    pub(crate) fn named(names: &[&str]) -> Result<Self> {
        anyhow::ensure!(!names.is_empty(), "an account has at least one device");
        let keys: Vec<DeviceKey> = names
            .iter()
            .map(|_| DeviceKey::generate(&mut rand::rngs::OsRng))
            .collect();
        let at = now_ms();
        let mut log = Log::genesis(&keys[0], names[0], at);
        for (i, key) in keys.iter().enumerate().skip(1) {
            log.add_device(&keys[0], key.id(), names[i], at + i as u64)
                .context("cannot add a device to the benchmark account")?;
        }
        Ok(Self { keys, log })
    }

    /// The account's membership log.
    pub(crate) fn log(&self) -> &Log {
        &self.log
    }

    /// Device `i`'s id.
    pub(crate) fn id(&self, i: usize) -> DeviceId {
        self.keys[i].id()
    }

    /// Creates device `i`'s home at `root` (unlocked by its key file) and
    /// returns its engine, not yet running.
    pub(crate) fn create(&self, i: usize, root: &Path) -> Result<(Home, Engine)> {
        let home = Home::at(root)?;
        home.ensure_dirs()?;
        let key = DeviceKey::from_bytes(&self.keys[i].to_bytes());
        let engine = Engine::init_joined(
            &home,
            Unlock::KeyFile,
            KdfParams::default(),
            key,
            self.log.clone(),
            EngineConfig::default(),
        )
        .with_context(|| format!("cannot create {}", root.display()))?;
        Ok((home, engine))
    }
}

/// A running in-process node: engine, network and mesh tasks.
pub(crate) struct Node {
    running: Running,
    mesh: Mesh,
    /// Where its network listens, as multiaddr strings.
    pub(crate) addrs: Vec<String>,
    /// Its device id.
    pub(crate) id: DeviceId,
}

impl Node {
    /// Starts `engine` and its network on loopback TCP (a free port), as
    /// `hearth up --listen /ip4/127.0.0.1/tcp/0 --no-mdns` would. Must be
    /// called inside the runtime.
    pub(crate) async fn start(engine: Engine) -> Result<Self> {
        let key = DeviceKey::from_bytes(&engine.device_key().to_bytes());
        let id = key.id();
        let running = engine.spawn()?;
        let members = running.handle.members().borrow().clone();
        let admission = net::Admission::new(
            members
                .devices
                .iter()
                .filter(|d| **d != members.me)
                .filter_map(peer_id),
        );
        let config = net::Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            mdns: false,
            ..net::Config::default()
        };
        let network = net::spawn(&key, config, admission.clone())
            .await
            .context("cannot start the network")?;
        let addrs: Vec<String> = network
            .handle
            .listen_addrs()
            .await?
            .iter()
            .map(ToString::to_string)
            .collect();
        if addrs.is_empty() {
            bail!("the network reported no listen address");
        }
        let engine_config = EngineConfig::default();
        let mesh = Mesh::start(
            running.handle.clone(),
            network,
            admission,
            hearth_node::mesh::Settings {
                max_frame: engine_config.max_frame_bytes,
                outbox: engine_config.peer_outbox,
                ..hearth_node::mesh::Settings::default()
            },
        );
        Ok(Self {
            running,
            mesh,
            addrs,
            id,
        })
    }

    /// The engine's handle.
    pub(crate) fn handle(&self) -> &Handle {
        &self.running.handle
    }

    /// Tells this node where `other` listens (for redials too) and dials it
    /// there at once, as a person typing the address would: the new address
    /// also makes the core's next attempt due now.
    pub(crate) async fn learn(&self, other: &Node) -> Result<()> {
        for addr in &other.addrs {
            // With its `/p2p/<id>` the address is also remembered for
            // redials.
            let full = format!("{addr}/p2p/{}", other.id);
            self.mesh.net().dial(full.parse()?).await?;
        }
        Ok(())
    }

    /// Members this node holds an open connection to.
    pub(crate) async fn connected(&self) -> Result<usize> {
        Ok(self
            .mesh
            .net()
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.connected && self.mesh.admission().is_member(&p.id))
            .count())
    }

    /// Waits until this node is connected to `count` members.
    pub(crate) async fn wait_connected(&self, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.connected().await? < count {
            if Instant::now() > deadline {
                bail!("not connected to {count} devices within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Stops the network, then the engine. Call outside the runtime
    /// (stopping the engine blocks).
    pub(crate) fn stop(self, rt: &tokio::runtime::Runtime) {
        let _ = rt.block_on(self.mesh.net().shutdown());
        drop(self.mesh);
        self.running.stop();
    }
}

/// Unix time in milliseconds (for the log entries and the invitation clock).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Stops every node (see [`Node::stop`]).
pub(crate) fn stop_all(nodes: Vec<Node>, rt: &tokio::runtime::Runtime) {
    for node in nodes {
        node.stop(rt);
    }
}
