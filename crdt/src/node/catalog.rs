//! The catalog entry of a collection: what a store keeps about it besides
//! its chunks and changes.
//!
//! The core rewrites the entry in the same [`Batch`](super::Batch) as every
//! write to the collection, so its counters always match the chunks and
//! changes the batch stores with it.

use serde::{Deserialize, Serialize};

/// What a store knows about one collection besides its chunks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Catalog {
    /// Automerge documents the collection is sharded across; fixed at creation.
    pub shards: u16,
    /// When the collection was created, ms since the Unix epoch.
    pub created_ms: i64,
    /// Declared indexes.
    pub indexes: Vec<IndexDef>,
    /// Per shard: the sequence number the next chunk gets.
    pub next_chunk: Vec<u64>,
    /// Per shard: chunks currently stored (compaction resets it to 1).
    pub chunk_count: Vec<u32>,
    /// The latest changes-feed sequence: every changed record has its own.
    pub last_seq: u64,
    /// Per shard: bytes of the snapshot chunk written by the last compaction.
    pub snapshot_bytes: Vec<u64>,
    /// Per shard: bytes of the incremental chunks written since then.
    pub incremental_bytes: Vec<u64>,
}

/// A declared index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexDef {
    /// Its name.
    pub name: String,
    /// Indexed fields, dotted paths.
    pub fields: Vec<String>,
}

impl Catalog {
    /// Whether every per-shard vector has one slot per shard.
    pub fn is_consistent(&self) -> bool {
        let n = usize::from(self.shards);
        self.shards >= 1
            && self.next_chunk.len() == n
            && self.chunk_count.len() == n
            && self.snapshot_bytes.len() == n
            && self.incremental_bytes.len() == n
    }

    /// A new, empty collection.
    pub fn new(shards: u16, created_ms: i64) -> Self {
        Self {
            shards,
            created_ms,
            indexes: Vec::new(),
            next_chunk: vec![0; usize::from(shards)],
            chunk_count: vec![0; usize::from(shards)],
            last_seq: 0,
            snapshot_bytes: vec![0; usize::from(shards)],
            incremental_bytes: vec![0; usize::from(shards)],
        }
    }
}
