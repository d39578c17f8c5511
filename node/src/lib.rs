//! The Hearth node: everything that does IO for one device.
//!
//! The pure crates hold the model: `hearth_crypto` (identities, membership
//! log, sealed values, key wrapping) and `hearth_crdt` (record collections
//! over Automerge, Mango queries, aggregates). This crate binds them to the
//! world:
//!
//! - [`home`]: the home directory and its files (store, keys, API address and token).
//! - [`store`]: the encrypted redb store; every value sealed, bound to its table and key.
//! - [`engine`]: one thread that owns the store and the loaded collections, serving
//!   [`engine::Command`]s from a bounded queue through a cloneable [`engine::Handle`].
//! - [`api`]: the loopback HTTP API (cozy-stack's data routes plus `/_hearth/…`).
//! - [`daemon`]: `hearth up`, lock, API server, clean shutdown on SIGINT/SIGTERM.
//! - [`client`]: how CLI commands reach the data, through the daemon or in-process.
//! - [`cli`] and [`commands`]: the `hearth` command line.
//! - [`config`]: every limit, from `<home>/hearth.toml`, `HEARTH_*` and flags.
//!
//! A write is acknowledged only after its redb commit is durable, so an
//! acknowledged write survives `kill -9` at any point.

pub mod api;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod home;
pub mod mesh;
pub mod net;
pub mod pairing;
pub mod qr;
pub mod store;

/// The device name used when none is given: the host name, else "device".
pub fn default_device_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "device".to_string())
}
