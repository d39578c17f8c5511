//! The pure data model of Hearth: JSON records in Automerge, and the queries
//! over them.
//!
//! Nothing here touches a disk, a socket, a clock or ambient randomness. The
//! node feeds it inputs (records, bytes from the store or a peer, the time)
//! and persists or sends what it returns. That is what lets the node, the
//! simulator and the tests drive the very same code.
//!
//! - [`record`]: the exact JSON ↔ Automerge mapping (integers stay integers,
//!   floats stay floats, limits on depth and size).
//! - [`collection`]: a named set of records of one doctype, sharded across
//!   Automerge documents, with CouchDB-style `_id`/`_rev`, a materialised view
//!   for reads, incremental chunks for storage and merges from peers.
//! - [`query`]: Mango selectors, `find` with projection, sort, paging and
//!   indexes, and grouped, mergeable aggregates.
//! - [`sync`]: the sans-IO sync session between two devices of an account:
//!   frames in, effects (frames to send, records merged, states to persist)
//!   out.
//! - [`node`]: the whole node as one sans-IO state machine over the above:
//!   the data commands and their rules, one sync session per peer,
//!   forwarding, membership changes, the pairing invitation and its flow,
//!   whom to dial and when, contacts and their card exchange, shares,
//!   federated queries, and the persist-then-answer order, as ordered
//!   outputs (`Persist`, `Send`, `Close`, `MembersChanged`, `Dial`,
//!   `Timer`, `Deliver`, `Query`, `Answered`). The daemon's engine drives it
//!   over redb and libp2p; `hearth-sim` drives the very same code over a
//!   virtual disk and network.
//! - [`federated`]: the mechanism of federated queries (consent policies,
//!   bounded contributions, secret shares, discrete noise, the ε ledger,
//!   the audit chain, the querier's assembly), which [`node::queries`]
//!   runs as a protocol.
//!
//! Where a new capability goes: its rules and protocol state in a module of
//! [`node`] (sharing, federated queries, apps and ingest each get one), its
//! IO in the node crate's matching module.
//!
//! # Why not samod
//!
//! The architecture suggests samod (the Rust automerge-repo) for sync. Hearth
//! keeps Automerge's own sync protocol (`automerge::sync`, the same Bloom
//! filter exchange samod runs per document) but drives it from [`sync`]
//! instead, for three reasons. A samod document actor owns its Automerge
//! document, while a Hearth collection must own its shards to keep its
//! materialised view, indexes and `_rev`s in step with every merge on one
//! thread. samod's storage convention would store every change a second
//! time beside the collection's own chunk store. And automerge-repo's wire
//! format serves browsers over websockets, which never speak
//! `/hearth/sync/1` on libp2p, so its compatibility buys nothing here. What
//! samod would give is kept: one sync state per peer and document, persisted
//! (encrypted) so an in-sync reconnect is one round trip, a share policy per
//! peer (the membership log), and panic containment per session.
//!
//! # The driving loop
//!
//! A write changes the collection in memory and yields chunks; the caller
//! stores them durably before it acknowledges the write. Loading the stored
//! chunks gives back the same records, and queries run over the view.
//!
//! ```
//! use automerge::ActorId;
//! use hearth_crdt::collection::{Collection, PutMode};
//! use hearth_crdt::query::{self, AggregateRequest, FindRequest, Index, Indexes};
//! use serde_json::json;
//!
//! let actor = ActorId::from(&[1u8; 16][..]);
//! let mut notes = Collection::new("io.cozy.notes", 4, actor.clone())?;
//! let mut store: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4]; // per shard, in order
//!
//! for (id, kwh) in [("jan", 310), ("feb", 280), ("mar", 190)] {
//!     notes.put(id, json!({ "kwh": kwh, "year": 2026 }), PutMode::Create, 1_700_000_000_000)?;
//!     // Persist before acknowledging: here, just keep the bytes.
//!     for chunk in notes.take_chunks() {
//!         store[usize::from(chunk.shard)].push(chunk.bytes);
//!     }
//! }
//! let edited = notes.get("feb").unwrap()["_rev"].as_str().unwrap().to_string();
//! notes.put("feb", json!({ "kwh": 285, "year": 2026 }),
//!           PutMode::Update { expected_rev: edited }, 1_700_000_000_001)?;
//! for chunk in notes.take_chunks() {
//!     store[usize::from(chunk.shard)].push(chunk.bytes);
//! }
//!
//! // A restart: load what was stored.
//! let reopened = Collection::load("io.cozy.notes", actor, store)?;
//! assert_eq!(reopened.records(), notes.records());
//!
//! // Query the view, with an index.
//! let mut indexes = Indexes::default();
//! let mut by_kwh = Index::new("by-kwh", vec!["kwh".into()])?;
//! by_kwh.rebuild(reopened.records());
//! indexes.define(by_kwh);
//! let request = FindRequest::parse(&json!({ "selector": { "kwh": { "$gt": 200 } }, "fields": ["_id"] }))?;
//! let found = query::find(&request, reopened.records(), &indexes)?;
//! assert_eq!(found.docs, vec![json!({ "_id": "feb" }), json!({ "_id": "jan" })]);
//! assert_eq!(found.index.as_deref(), Some("by-kwh"));
//!
//! let request = AggregateRequest::parse(&json!({ "aggregate": { "total": { "$sum": "kwh" } } }))?;
//! let total = query::aggregate(&request, reopened.records().values())?.to_json();
//! assert_eq!(total["groups"][0]["values"]["total"], json!(785));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod collection;
pub mod federated;
pub mod node;
pub mod query;
pub mod record;
pub mod sync;
