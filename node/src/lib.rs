//! The Hearth node: everything that does IO for one device.
//!
//! The pure crates hold the model: `hearth_crypto` (identities, membership
//! log, sealed values, key wrapping, the pairing handshake, tickets) and
//! `hearth_crdt` (record collections over Automerge, Mango queries,
//! aggregates, sync sessions, and `hearth_crdt::node`, the node's logic as
//! one sans-IO core). This crate binds them to the world:
//!
//! - [`home`]: the home directory and its files (store, keys, API address and token).
//! - [`store`]: the encrypted redb store; every value sealed, bound to its table and key.
//! - [`engine`]: one thread that owns the store and the core: it calls the core
//!   with the time and the RNG and performs its outputs in order (each batch
//!   durably committed before anything after it), serving jobs from a bounded
//!   queue through a cloneable [`engine::Handle`].
//! - [`api`]: the loopback HTTP API (cozy-stack's data routes plus `/_hearth/…`).
//! - [`daemon`]: `hearth up`, lock, API server, network, clean shutdown on SIGINT/SIGTERM.
//! - [`net`]: the libp2p swarm (transports, discovery, relay, the admission
//!   gate); it carries out the dials the core asks for.
//! - [`mesh`]: the glue between the network and the engine: one sync stream per
//!   member device, its frames carried to the core and back, the core's dials
//!   and timer carried out, what the network learns of members carried in,
//!   and `/hearth/share/1` exchanges (contact cards) both ways.
//! - [`pairing`]: `/hearth/pair/1` over a stream: the frames of the inviting
//!   flow the core holds, and the joining side.
//! - [`qr`]: tickets drawn as QR codes (terminal, PNG) and read back.
//! - [`client`]: how CLI commands reach the data, through the daemon or in-process.
//! - [`import`]: records out of JSON Lines, JSON and CSV, streamed in batches (CLI and API).
//! - [`cli`] and [`commands`]: the `hearth` command line.
//! - [`config`]: every limit, from `<home>/hearth.toml`, `HEARTH_*` and flags.
//!
//! A write is acknowledged only after its redb commit is durable, so an
//! acknowledged write survives `kill -9` at any point; a peer's frame is
//! answered and forwarded only after what it changed is durable too.
//!
//! # Driving the engine
//!
//! ```
//! use hearth_crdt::collection::PutMode;
//! use hearth_node::{config::EngineConfig, engine::Engine, home::Home, store::Unlock};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let home = Home::resolve(Some(dir.path()))?;
//! home.ensure_dirs()?;
//! let engine = Engine::init(&home, Unlock::KeyFile, Default::default(), "laptop",
//!                           EngineConfig::default())?;
//! let running = engine.spawn()?;
//! let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! let written = rt.block_on(running.handle.put("io.cozy.notes", Some("n1".into()),
//!     serde_json::json!({ "title": "hello" }), PutMode::Create))?; // durable here
//! let read = rt.block_on(running.handle.get("io.cozy.notes", "n1"))?;
//! assert_eq!(read["_rev"], written.rev.as_str());
//! running.stop();
//! # Ok(()) }
//! ```

pub mod api;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod home;
pub mod import;
pub mod mesh;
pub mod net;
pub mod pairing;
pub mod qr;
pub mod store;
pub mod utc;

/// The device name used when none is given: the host name, else "device".
pub fn default_device_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "device".to_string())
}
