//! The baselines: the same Automerge work Hearth does, without Hearth.
//!
//! [`AmShards`] stores records the way `hearth_crdt::collection` does (the
//! same shard function, one Automerge map per record under its `_id`, the
//! record's fields plus a `_rev` string, one transaction per touched shard
//! per batch, shards written on the same number of threads, incremental
//! saves of what each batch changed) but with none of Hearth's bookkeeping:
//! no validation, no revision digests, no materialised view, no indexes.
//! [`RawRedb`] stores bytes in a plain, unencrypted redb file.
//!
//! A scenario's ratio `hearth / baseline` therefore measures what Hearth adds
//! on top of the storage and CRDT it is built on.

use std::path::Path;

use anyhow::{Context, Result};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ChangeHash, ROOT, ReadDoc, ScalarValue, hydrate};
use hearth_crdt::collection::shard_of;
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
use serde_json::Value;

/// The field holding the revision, as Hearth stores it.
const REV: &str = "_rev";

/// Threads Hearth's collection writes and loads with (its `workers()`).
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(8)
}

/// A JSON value as an Automerge hydrate value (strings as scalars, as Hearth
/// stores them).
pub(crate) fn to_hydrate(value: &Value) -> hydrate::Value {
    match value {
        Value::Null => hydrate::Value::Scalar(ScalarValue::Null),
        Value::Bool(b) => hydrate::Value::Scalar(ScalarValue::Boolean(*b)),
        Value::Number(n) => hydrate::Value::Scalar(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) if !n.is_f64() => ScalarValue::Int(i),
            (None, Some(u)) if !n.is_f64() => ScalarValue::Uint(u),
            _ => ScalarValue::F64(n.as_f64().unwrap_or(0.0)),
        }),
        Value::String(s) => hydrate::Value::Scalar(ScalarValue::from(s.as_str())),
        Value::Array(items) => items.iter().map(to_hydrate).collect::<Vec<_>>().into(),
        Value::Object(map) => {
            let mut out = hydrate::Map::default();
            for (k, v) in map {
                out.insert(
                    k.clone(),
                    hydrate::MapValue {
                        value: to_hydrate(v),
                        conflict: false,
                    },
                );
            }
            hydrate::Value::Map(out)
        }
    }
}

/// The map stored for a record: its fields without `_id`, plus a `_rev` of
/// the same shape and length as Hearth's (`1-` and 32 hex characters).
fn record_map(record: &Value) -> (String, hydrate::Map) {
    let id = record
        .get("_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut map = match to_hydrate(record) {
        hydrate::Value::Map(m) => m,
        _ => hydrate::Map::default(),
    };
    map.remove("_id");
    map.insert(
        REV.to_owned(),
        hydrate::MapValue {
            value: hydrate::Value::Scalar(ScalarValue::from(format!("1-{id}").as_str())),
            conflict: false,
        },
    );
    (id, map)
}

/// Records sharded over Automerge documents, as Hearth shards them.
pub(crate) struct AmShards {
    docs: Vec<Automerge>,
    saved: Vec<Vec<ChangeHash>>,
    workers: usize,
}

impl AmShards {
    pub(crate) fn new(shards: u16) -> Self {
        let actor = ActorId::from([0xb5u8; 32].as_slice());
        Self {
            docs: (0..shards)
                .map(|_| Automerge::new().with_actor(actor.clone()))
                .collect(),
            saved: vec![Vec::new(); usize::from(shards)],
            workers: workers(),
        }
    }

    pub(crate) fn docs(&self) -> &[Automerge] {
        &self.docs
    }

    /// Writes a batch: one transaction per touched shard, shards spread over
    /// the worker threads (Hearth writes on one thread below 256 records).
    pub(crate) fn apply_batch(&mut self, batch: &[Value], at_s: i64) -> Result<()> {
        let count = u16::try_from(self.docs.len()).unwrap_or(u16::MAX);
        let mut per_shard: Vec<Vec<(String, hydrate::Map)>> = vec![Vec::new(); self.docs.len()];
        for record in batch {
            let (id, map) = record_map(record);
            per_shard[usize::from(shard_of(&id, count))].push((id, map));
        }
        let jobs: Vec<(&mut Automerge, Vec<(String, hydrate::Map)>)> = self
            .docs
            .iter_mut()
            .zip(per_shard)
            .filter(|(_, records)| !records.is_empty())
            .collect();
        let threads = if batch.len() >= 256 {
            self.workers.min(jobs.len()).max(1)
        } else {
            1
        };
        let mut buckets: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
        for (n, job) in jobs.into_iter().enumerate() {
            buckets[n % threads].push(job);
        }
        let results: Vec<Result<(), automerge::AutomergeError>> = std::thread::scope(|s| {
            let handles: Vec<_> = buckets
                .into_iter()
                .map(|bucket| {
                    s.spawn(move || {
                        for (doc, records) in bucket {
                            write_shard(doc, records, at_s)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for r in results {
            r.context("automerge refused a baseline write")?;
        }
        Ok(())
    }

    /// The incremental bytes of every shard changed since the last call.
    pub(crate) fn take_chunks(&mut self) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        for (i, (doc, saved)) in self.docs.iter().zip(self.saved.iter_mut()).enumerate() {
            let heads = doc.get_heads();
            if heads != *saved {
                out.push((u16::try_from(i).unwrap_or(u16::MAX), doc.save_after(saved)));
                *saved = heads;
            }
        }
        out
    }
}

fn write_shard(
    doc: &mut Automerge,
    records: Vec<(String, hydrate::Map)>,
    at_s: i64,
) -> Result<(), automerge::AutomergeError> {
    let empty = doc.is_empty();
    let mut tx = doc.transaction();
    if empty {
        // Hearth fills an empty shard with one batched root insert; so do we.
        let mut root = hydrate::Map::default();
        for (id, map) in records {
            root.insert(
                id,
                hydrate::MapValue {
                    value: hydrate::Value::Map(map),
                    conflict: false,
                },
            );
        }
        tx.init_root_from_hydrate(&root)?;
    } else {
        for (id, map) in records {
            tx.batch_create_object(ROOT, id.as_str(), &hydrate::Value::Map(map), false)?;
        }
    }
    tx.commit_with(CommitOptions::default().with_time(at_s));
    Ok(())
}

/// Reads `field` of every record of every shard through Automerge's API and
/// folds count, sum and per-month groups: the "automerge map scan" anchor.
pub(crate) fn scan_aggregate(docs: &[Automerge]) -> Result<ScanResult> {
    let mut result = ScanResult::default();
    for doc in docs {
        for key in doc.keys(ROOT) {
            let Some((_, obj)) = doc.get(ROOT, key.as_str())? else {
                continue;
            };
            let amount = doc
                .get(&obj, "amount")?
                .and_then(|(v, _)| v.as_f64())
                .unwrap_or(0.0);
            let month = doc
                .get(&obj, "month")?
                .and_then(|(v, _)| v.as_i64())
                .unwrap_or(0);
            result.count += 1;
            result.sum += amount;
            let g = result.by_month.entry(month).or_insert((0, 0.0));
            g.0 += 1;
            g.1 += amount;
        }
    }
    Ok(result)
}

/// Ids of the records whose `month` equals `month`, found by reading every
/// record's field through Automerge (what a find costs without a view).
pub(crate) fn scan_find(docs: &[Automerge], month: i64) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for doc in docs {
        for key in doc.keys(ROOT) {
            let Some((_, obj)) = doc.get(ROOT, key.as_str())? else {
                continue;
            };
            if doc.get(&obj, "month")?.and_then(|(v, _)| v.as_i64()) == Some(month) {
                out.push(key);
            }
        }
    }
    Ok(out)
}

/// What [`scan_aggregate`] computes.
#[derive(Debug, Default)]
pub(crate) struct ScanResult {
    pub(crate) count: u64,
    pub(crate) sum: f64,
    pub(crate) by_month: std::collections::BTreeMap<i64, (u64, f64)>,
}

const CHUNKS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("chunks");
const ROWS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("rows");

/// A plain redb file: no sealing, no catalog, no changes feed.
pub(crate) struct RawRedb {
    db: redb::Database,
    two_phase: bool,
    next: u64,
}

impl RawRedb {
    /// Creates `path` with Hearth's page cache size (64 MiB). `two_phase`
    /// selects redb's two-phase commit, which Hearth's store always uses.
    pub(crate) fn create(path: &Path, two_phase: bool) -> Result<Self> {
        let db = redb::Builder::new()
            .set_cache_size(hearth_node::store::DEFAULT_CACHE_BYTES)
            .create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            db,
            two_phase,
            next: 0,
        })
    }

    fn begin(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        txn.set_two_phase_commit(self.two_phase);
        txn.set_durability(redb::Durability::Immediate)?;
        Ok(txn)
    }

    /// Stores a batch's shard chunks at `(shard, seq)` in one durable commit.
    pub(crate) fn commit_chunks(&mut self, chunks: &[(u16, Vec<u8>)]) -> Result<()> {
        let txn = self.begin()?;
        {
            let mut table = txn.open_table(CHUNKS)?;
            for (shard, bytes) in chunks {
                let mut key = [0u8; 10];
                key[..2].copy_from_slice(&shard.to_be_bytes());
                key[2..].copy_from_slice(&self.next.to_be_bytes());
                table.insert(key.as_slice(), bytes.as_slice())?;
            }
        }
        self.next += 1;
        txn.commit()?;
        Ok(())
    }

    /// Stores one small row in one durable commit.
    pub(crate) fn commit_row(&mut self, value: &[u8]) -> Result<()> {
        let txn = self.begin()?;
        {
            let mut table = txn.open_table(ROWS)?;
            table.insert(self.next, value)?;
        }
        self.next += 1;
        txn.commit()?;
        Ok(())
    }

    /// Rows in the chunks table (to check the baseline stored everything).
    pub(crate) fn chunk_rows(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHUNKS)?;
        Ok(table.len()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hearth_bench::records;

    #[test]
    fn shards_hold_every_record_and_chunks_reload() {
        let recs = records::generate(600, 3);
        let mut am = AmShards::new(4);
        let mut chunks: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
        for batch in records::batches(&recs, 250) {
            am.apply_batch(&batch, 1).unwrap();
            for (shard, bytes) in am.take_chunks() {
                chunks[usize::from(shard)].push(bytes);
            }
        }
        assert!(am.take_chunks().is_empty(), "nothing new after a take");
        let scan = scan_aggregate(am.docs()).unwrap();
        assert_eq!(scan.count, 600);
        let expected: f64 = recs.iter().map(|r| r["amount"].as_f64().unwrap()).sum();
        assert!((scan.sum - expected).abs() < 1e-6);
        let month = recs[0]["month"].as_i64().unwrap();
        let want = recs.iter().filter(|r| r["month"] == month).count();
        assert_eq!(scan_find(am.docs(), month).unwrap().len(), want);
        let reloaded: usize = chunks
            .iter()
            .map(|c| Automerge::load(&c.concat()).unwrap().keys(ROOT).count())
            .sum();
        assert_eq!(reloaded, 600);
    }

    #[test]
    fn hydrate_keeps_json_types() {
        let v = serde_json::json!({"i": 3, "f": 1.0, "s": "x", "b": true, "n": null, "a": [1]});
        let hydrate::Value::Map(m) = to_hydrate(&v) else {
            panic!("not a map")
        };
        assert_eq!(
            m.get("i"),
            Some(&hydrate::Value::Scalar(ScalarValue::Int(3)))
        );
        assert_eq!(
            m.get("f"),
            Some(&hydrate::Value::Scalar(ScalarValue::F64(1.0)))
        );
        assert!(matches!(m.get("a"), Some(hydrate::Value::List(_))));
    }

    #[test]
    fn raw_redb_commits_rows_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = RawRedb::create(&dir.path().join("b.redb"), false).unwrap();
        db.commit_row(b"hello").unwrap();
        db.commit_chunks(&[(0, vec![1, 2]), (3, vec![4])]).unwrap();
        assert_eq!(db.chunk_rows().unwrap(), 2);
    }
}
