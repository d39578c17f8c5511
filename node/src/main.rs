//! `hearth`: one device's node of the Hearth personal data mesh.
//!
//! The shape, top to bottom:
//!
//! ```text
//!  hearth <command>            (cli: clap definitions)
//!     │
//!     ├─ up ──► daemon ──┬─► api (axum, loopback, bearer token, cozy data routes, /_hearth/*)
//!     │                  └─► mesh ──► net (libp2p: TCP+Noise+Yamux, QUIC, mDNS, Kademlia,
//!     │                        │           relay, DCUtR, AutoNAT; admission gate: account
//!     │                        │           devices, joiners only while pairing, contacts'
//!     │                        │           devices and requesters for /hearth/share/1 only)
//!     │                        ├─ the core's Dial / Timer out, addresses and connections in
//!     │                        ├─ /hearth/sync/1 ─ one stream per device, capped frames
//!     │                        ├─ /hearth/pair/1 ─ pairing::Invitations: frames of the
//!     │                        │                   core's inviting flow (crypto::pairing)
//!     │                        └─ /hearth/share/1 ─ one request, one reply: contact cards
//!     │                                            (crypto::card) the core asks to Deliver
//!     ├─ join ──► pairing::join over a short-lived net, then a new store
//!     └─ put/get/find/… ──► client::Backend ── daemon running? ── yes ─► HTTP to api
//!                                              └─ no ─► in-process engine
//!                                                          │
//!             engine (one thread, bounded queue, Handle + oneshot replies): IO only
//!                │  calls the core with now + rng, performs its outputs in order:
//!                │  Persist(batch) → one durable redb commit, then Send / Close /
//!                │  MembersChanged (watch → net's admission gate) / Dial / Timer /
//!                │  Deliver (→ mesh)
//!                ▼
//!             hearth_crdt::node (the pure core; hearth-sim drives the same one)
//!                │  data rules, changes feed, one sync::Session per device,
//!                │  forwarding, membership (hearth_crypto::membership), the
//!                │  pairing invitation's flow, whom to dial and when (redial),
//!                │  contacts (kept in the reserved hearth.contacts collection)
//!                │  over hearth_crdt::collection (Automerge shards, _id/_rev)
//!                │  and hearth_crdt::query (Mango find, aggregates, indexes)
//!                ▼
//!             store (redb, every value sealed with XChaCha20-Poly1305,
//!                    store key wrapped by Argon2id(passphrase) or keys/store.key)
//! ```
//!
//! Exit codes: 0 success, 1 error (one line on stderr), 2 usage (from clap).

use std::process::ExitCode;

use clap::Parser;
use hearth_node::cli::{Cli, Command};
use hearth_node::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Command::Up { .. }));
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", commands::one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr. The daemon logs at `info`, other commands only warnings;
/// `HEARTH_LOG` (tracing's env-filter syntax) overrides both.
fn init_tracing(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
