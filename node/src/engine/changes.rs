//! The changes feed of a collection (table `changes-2`), read the way
//! CouchDB's `_changes` answers.
//!
//! Every changed record has its own sequence number (the core assigns them,
//! one per record of a write or a merge), so a page that ends at `last_seq`
//! is resumed exactly by the next read `since` it: nothing is delivered twice
//! and nothing is skipped, whatever the page size. A record changed several
//! times after `since` is reported once, at its latest change.
//!
//! The changes of one commit to a collection share one row (a bulk write of
//! 5000 records is one row, not 5000): its key is the *last* sequence it
//! holds, its value a [`Row`] with the first one, so a scan from
//! `since + 1` finds every row holding a later change.
//!
//! `changes-1`, the layout before, stored one row per commit holding every
//! record it changed under one number; [`migrate`] renumbers those rows one
//! record each into `changes-2` when a store is opened.

use std::collections::BTreeMap;

use hearth_crdt::node::{Catalog, Change};
use serde::{Deserialize, Serialize};

use super::{Engine, Error, persist};
use crate::store::{Store, Table, keys};

/// One row of `changes-2`: consecutive changes from `first`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Row {
    /// The sequence of the first entry; entry `i` has `first + i`.
    first: u64,
    /// `(id, rev, deleted)` per change.
    entries: Vec<(String, String, bool)>,
}

/// The rows that store `batch` (changes of `collection` in increasing,
/// consecutive sequence order) under their keys.
pub(super) fn rows(collection: &str, batch: &[&Change]) -> Result<Vec<crate::store::Row>, Error> {
    // One row per run of consecutive numbers; the core numbers one commit's
    // changes so.
    batch
        .chunk_by(|a, b| b.seq == a.seq + 1)
        .map(|run| {
            let row = Row {
                first: run[0].seq,
                entries: run
                    .iter()
                    .map(|c| (c.id.clone(), c.rev.clone(), c.deleted))
                    .collect(),
            };
            Ok((
                keys::change_key(collection, run[run.len() - 1].seq)?,
                serde_json::to_vec(&row)?,
            ))
        })
        .collect()
}

/// Result of a changes-feed read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Changes {
    /// The latest change of each record changed after `since`, in sequence order.
    pub results: Vec<Change>,
    /// The sequence to pass as `since` next time.
    pub last_seq: u64,
    /// Changes left after `limit`.
    pub pending: usize,
}

impl Engine {
    pub(super) fn changes(
        &self,
        doctype: &str,
        since: u64,
        limit: usize,
        include_docs: bool,
    ) -> Result<Changes, Error> {
        let Some(c) = self.core.collection(doctype)? else {
            return Ok(Changes {
                results: Vec::new(),
                last_seq: 0,
                pending: 0,
            });
        };
        let txn = self.store.read()?;
        // Latest change per id, then ordered by its sequence.
        let mut latest: BTreeMap<String, (u64, String, bool)> = BTreeMap::new();
        for row in txn.iter_prefix_from(
            Table::Changes,
            &keys::change_prefix(doctype)?,
            &keys::change_key(doctype, since.saturating_add(1))?,
        )? {
            let (key, value) = row?;
            let last = keys::decode_change_key(&key)
                .map_err(|e| self.damaged("changes key", format!("{doctype}: {e}")))?
                .seq;
            let row: Row = serde_json::from_slice(&value)
                .map_err(|e| self.damaged(&format!("changes row {last} of {doctype}"), e))?;
            for (seq, (id, rev, deleted)) in (row.first..).zip(row.entries) {
                if seq > since {
                    latest.insert(id, (seq, rev, deleted));
                }
            }
        }
        let mut all: Vec<Change> = latest
            .into_iter()
            .map(|(id, (seq, rev, deleted))| Change {
                doc: (include_docs && !deleted)
                    .then(|| c.data.get(&id).cloned())
                    .flatten(),
                seq,
                id,
                rev,
                deleted,
            })
            .collect();
        all.sort_by_key(|c| c.seq);
        let pending = all.len().saturating_sub(limit);
        all.truncate(limit);
        let last_seq = if pending == 0 {
            c.meta.last_seq.max(since)
        } else {
            all.last().map_or(since, |c| c.seq)
        };
        Ok(Changes {
            results: all,
            last_seq,
            pending,
        })
    }
}

/// Migration `changes-1 → changes-2`: each commit's row of entries becomes
/// one row per entry, numbered in order, and the catalog's `last_seq` the
/// new count. Idempotent: the old rows are removed in the same transaction.
pub(super) fn migrate(store: &Store) -> Result<(), Error> {
    let old = store.read()?.scan_prefix(Table::ChangesV1, b"")?;
    if old.is_empty() {
        return Ok(());
    }
    let mut per_collection: BTreeMap<String, Vec<(String, String, bool)>> = BTreeMap::new();
    for (key, value) in old {
        let decoded = keys::decode_change_key(&key)
            .map_err(|e| persist::damaged(store, "changes-1 key", e))?;
        let entries: Vec<(String, String, bool)> = serde_json::from_slice(&value)
            .map_err(|e| persist::damaged(store, "changes-1 entry", e))?;
        per_collection
            .entry(decoded.collection)
            .or_default()
            .extend(entries);
    }
    let mut txn = store.write()?;
    for (name, entries) in per_collection {
        let Some(meta) = txn.get(Table::Collections, name.as_bytes())? else {
            continue;
        };
        let mut meta: Catalog = serde_json::from_slice(&meta)
            .map_err(|e| persist::damaged(store, &format!("catalog entry of {name}"), e))?;
        txn.remove_prefix(Table::Changes, &keys::change_prefix(&name)?)?;
        if !entries.is_empty() {
            let last = entries.len() as u64;
            let row = Row { first: 1, entries };
            txn.insert(
                Table::Changes,
                &keys::change_key(&name, last)?,
                &serde_json::to_vec(&row)?,
            )?;
            meta.last_seq = last;
        }
        txn.insert(
            Table::Collections,
            name.as_bytes(),
            &serde_json::to_vec(&meta)?,
        )?;
    }
    txn.remove_prefix(Table::ChangesV1, b"")?;
    txn.commit()?;
    tracing::info!("changes feed migrated to one sequence number per change (changes-2)");
    Ok(())
}
