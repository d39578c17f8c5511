//! The core's batches, made durable in redb, and the replica loaded back.
//!
//! | [`Write`] | table | key |
//! |---|---|---|
//! | `Catalog` | `collections-1` | collection name |
//! | `Chunk` | `chunks-1` | [`keys::chunk_key`] |
//! | `Compacted` | `chunks-1` | the shard's chunks removed, then [`keys::chunk_key`] |
//! | `Change` | `changes-2` | the batch's changes of one collection in one row: [`keys::change_key`] of the *last* seq; value [`changes::Row`](super::changes) |
//! | `SyncState` | `peers-1` | [`keys::peer_sync_key`] |
//! | `Membership` | `meta-1` | `"membership-log"` |
//! | `PeerSeen` | `peers-1` | [`keys::peer_seen_key`] |
//!
//! A batch is one write transaction and one durable commit.

use std::collections::{BTreeMap, BTreeSet};

use hearth_crdt::node::{Batch, Catalog, Change, Node, Stored, Write};
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership;

use super::Error;
use crate::store::{Store, Table, keys};

const META_DEVICE_KEY: &[u8] = b"device-key";
const META_DEVICE_NAME: &[u8] = b"device-name";
pub(super) const META_MEMBERSHIP: &[u8] = b"membership-log";

pub(super) fn damaged(store: &Store, what: &str, reason: impl std::fmt::Display) -> Error {
    Error::Damaged {
        path: store.path().display().to_string(),
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// Makes `batch` durable in one transaction.
pub(super) fn apply(store: &Store, batch: &Batch) -> Result<(), Error> {
    let mut txn = store.write()?;
    // Per collection, the batch's changes, in order: one row each.
    let mut changes: BTreeMap<&str, Vec<&Change>> = BTreeMap::new();
    for write in &batch.writes {
        match write {
            Write::Catalog { collection, entry } => {
                txn.insert(
                    Table::Collections,
                    collection.as_bytes(),
                    &serde_json::to_vec(entry)?,
                )?;
            }
            Write::Chunk {
                collection,
                shard,
                seq,
                bytes,
            } => txn.insert(
                Table::Chunks,
                &keys::chunk_key(collection, *shard, *seq)?,
                bytes,
            )?,
            Write::Compacted {
                collection,
                shard,
                seq,
                bytes,
            } => {
                txn.remove_prefix(Table::Chunks, &keys::shard_prefix(collection, *shard)?)?;
                txn.insert(
                    Table::Chunks,
                    &keys::chunk_key(collection, *shard, *seq)?,
                    bytes,
                )?;
            }
            Write::Change { collection, change } => {
                changes.entry(collection).or_default().push(change);
            }
            Write::SyncState {
                peer,
                collection,
                shard,
                bytes,
            } => txn.insert(
                Table::Peers,
                &keys::peer_sync_key(peer, collection, *shard)?,
                bytes,
            )?,
            Write::Membership(log) => txn.insert(Table::Meta, META_MEMBERSHIP, &log.encode())?,
            Write::PeerSeen { peer, at_ms } => txn.insert(
                Table::Peers,
                &keys::peer_seen_key(peer),
                &at_ms.to_be_bytes(),
            )?,
        }
    }
    for (collection, batch) in changes {
        for (key, value) in super::changes::rows(collection, &batch)? {
            txn.insert(Table::Changes, &key, &value)?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Stores a new device's identity and account log.
pub(super) fn write_identity(
    store: &Store,
    key: &DeviceKey,
    name: &str,
    log: &membership::Log,
) -> Result<(), Error> {
    let mut txn = store.write()?;
    txn.insert(Table::Meta, META_DEVICE_KEY, key.to_bytes().as_slice())?;
    txn.insert(Table::Meta, META_DEVICE_NAME, name.as_bytes())?;
    txn.insert(Table::Meta, META_MEMBERSHIP, &log.encode())?;
    txn.commit()?;
    Ok(())
}

/// The device key, its name and the account's log.
pub(super) fn read_identity(store: &Store) -> Result<(DeviceKey, String, membership::Log), Error> {
    let txn = store.read()?;
    let key = txn
        .get(Table::Meta, META_DEVICE_KEY)?
        .ok_or_else(|| damaged(store, "device key", "it is missing"))?;
    let key: [u8; 32] = key
        .as_slice()
        .try_into()
        .map_err(|_| damaged(store, "device key", "it is not 32 bytes"))?;
    let key = DeviceKey::from_bytes(&key);
    let name = txn
        .get(Table::Meta, META_DEVICE_NAME)?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Ok((key, name, read_log(store)?))
}

fn read_log(store: &Store) -> Result<membership::Log, Error> {
    let log = store
        .read()?
        .get(Table::Meta, META_MEMBERSHIP)?
        .ok_or_else(|| damaged(store, "membership log", "it is missing"))?;
    membership::Log::decode(&log).map_err(|e| damaged(store, "membership log", e))
}

/// Every collection name in the catalog.
pub(super) fn collection_names(store: &Store) -> Result<Vec<String>, Error> {
    Ok(store
        .read()?
        .scan_prefix(Table::Collections, b"")?
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect())
}

/// Loads every stored collection into `core`.
pub(super) fn load_all(store: &Store, core: &mut Node) -> Result<(), Error> {
    for name in collection_names(store)? {
        if let Some((meta, shards)) = read_collection(store, &name)? {
            core.load(&name, meta, shards)?;
        }
    }
    Ok(())
}

/// One collection's catalog entry and chunks, checked against each other.
pub(super) fn read_collection(store: &Store, name: &str) -> Result<Option<Stored>, Error> {
    let txn = store.read()?;
    let Some(meta) = txn.get(Table::Collections, name.as_bytes())? else {
        return Ok(None);
    };
    let meta: Catalog = serde_json::from_slice(&meta)
        .map_err(|e| damaged(store, &format!("catalog entry of {name}"), e))?;
    if !meta.is_consistent() {
        return Err(damaged(
            store,
            &format!("catalog entry of {name}"),
            "its per-shard counters do not match its shard count",
        ));
    }
    let mut shards = vec![Vec::new(); usize::from(meta.shards)];
    let mut found = vec![0u32; usize::from(meta.shards)];
    for (key, value) in txn.scan_prefix(Table::Chunks, &keys::chunk_prefix(name)?)? {
        let shard = keys::decode_chunk_key(&key)
            .map_err(|e| damaged(store, "chunk key", format!("in collection {name}: {e}")))?
            .shard;
        if let Some(n) = found.get_mut(usize::from(shard)) {
            *n += 1;
        }
        let slot = shards.get_mut(usize::from(shard)).ok_or_else(|| {
            damaged(
                store,
                "chunk",
                format!("shard {shard} of {name} is out of range"),
            )
        })?;
        slot.push(value);
    }
    // A chunk whose key was damaged no longer sits under its shard; the
    // catalog's count catches that instead of loading a shorter history.
    if found != meta.chunk_count {
        return Err(damaged(
            store,
            &format!("chunks of {name}"),
            format!(
                "expected {:?} chunks per shard, found {found:?}",
                meta.chunk_count
            ),
        ));
    }
    Ok(Some((meta, shards)))
}

/// Puts back into `core` what the store holds for everything `batch` named.
pub(super) fn reload(store: &Store, core: &mut Node, batch: &Batch) -> Result<(), Error> {
    let names: BTreeSet<&str> = batch
        .writes
        .iter()
        .filter_map(|w| match w {
            Write::Catalog { collection, .. }
            | Write::Chunk { collection, .. }
            | Write::Compacted { collection, .. }
            | Write::Change { collection, .. }
            | Write::SyncState { collection, .. } => Some(collection.as_str()),
            Write::Membership(_) | Write::PeerSeen { .. } => None,
        })
        .collect();
    let mut stored = Vec::new();
    for name in names {
        stored.push((name.to_owned(), read_collection(store, name)?));
    }
    core.reload(stored, read_log(store)?)?;
    Ok(())
}
