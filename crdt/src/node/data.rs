//! The data commands: what a write may be, and what it persists.
//!
//! Every write goes through [`Node::commit`]: the collection's new chunks
//! (or a compacted save of a shard, by the policy below), one changes-feed
//! entry per changed record, and the catalog entry, in one [`Batch`],
//! followed by the frames that offer the change to every open session.
//! Reads are plain methods over the loaded state.
//!
//! - **Doctypes**: 1-128 characters from `a-z`, `0-9`, `.`, `-`, `_`,
//!   starting with a letter or digit ([`check_doctype`]); the same rule for
//!   a collection a peer creates.
//! - **Ids**: the caller's, the body's `_id`, or 32 hex characters from the
//!   RNG, like cozy-stack's.
//! - **Size**: a record's JSON is at most [`Config::max_record_bytes`].
//! - **Changes feed**: each changed record gets its own sequence number, so
//!   a reader paging with any limit resumes exactly where a page ended.
//! - **Compaction**: a shard's incremental chunks are replaced by one save
//!   once they number [`Config::compact_after_chunks`], or once they hold
//!   about as many records as its snapshot (3 bytes of changes per snapshot
//!   byte, measured: 17.1 MiB of changes against 5.7 MiB of snapshot for the
//!   same 100k records) and at least [`Config::compact_min_bytes`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Batch, Catalog, Config, Error, IndexDef, Loaded, Millis, Node, Outputs, Write};
use crate::collection::{self, Collection, PutMode, Written};
use crate::query::{self, AggregateRequest, FindRequest, Index, Indexes};

/// Bytes of Automerge change chunks that hold about as many records as one
/// byte of a compacted save.
const INCREMENTAL_PER_SNAPSHOT_BYTE: u64 = 3;

/// Most indexes one collection may declare: each costs memory per record and
/// time on every write.
pub const MAX_INDEXES: usize = 32;

/// One entry of a collection's changes feed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    /// This change's own sequence number in the collection's feed.
    pub seq: u64,
    /// Record id.
    pub id: String,
    /// Revision after the change.
    pub rev: String,
    /// Whether the record was deleted.
    pub deleted: bool,
    /// The record, when asked for and not deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<Value>,
}

/// One document of a bulk write that failed, and why; the others still apply.
#[derive(Debug)]
pub struct BulkError {
    /// The document's id, if it had or got one.
    pub id: String,
    /// Why it failed.
    pub error: Error,
}

/// Checks a collection name (a cozy doctype such as `io.cozy.notes`).
pub fn check_doctype(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadDoctype(name.to_string()))
    }
}

/// Whether a collection is the node's own (`hearth.*`, such as
/// [`super::contacts::COLLECTION`]): users and apps may read it, only the
/// node's own commands write it.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("hearth.")
}

/// A fresh record id: 32 lowercase hex characters, like cozy-stack's.
pub fn new_id(rng: &mut impl rand_core::RngCore) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn body_id(body: &Value) -> Option<String> {
    body.get("_id").and_then(Value::as_str).map(String::from)
}

/// A collection's error, with the doctype added where a person needs it.
fn in_collection(doctype: &str, e: collection::Error) -> Error {
    match e {
        collection::Error::NotFound { id } => Error::NotFound {
            doctype: doctype.to_string(),
            id,
        },
        other => Error::Record(other),
    }
}

fn check_size(config: &Config, id: &str, body: &Value) -> Result<(), Error> {
    let limit = config.max_record_bytes;
    let size = serde_json::to_vec(body)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > limit {
        return Err(Error::TooLarge {
            id: id.to_string(),
            size,
            limit,
        });
    }
    Ok(())
}

impl Node {
    /// The collection, if it exists; an error for a bad name.
    pub fn collection(&self, name: &str) -> Result<Option<&Loaded>, Error> {
        check_doctype(name)?;
        Ok(self.collections.get(name))
    }

    /// The collection, created (in memory; the next commit stores it) on
    /// first write.
    fn collection_mut(&mut self, name: &str, now: Millis) -> Result<&mut Loaded, Error> {
        check_doctype(name)?;
        if is_reserved(name) {
            return Err(Error::Reserved(name.to_owned()));
        }
        self.check_share_write(name)?;
        self.ensure_collection(name, now)
    }

    /// The collection, created on first write, reserved ones included.
    pub(super) fn ensure_collection(
        &mut self,
        name: &str,
        now: Millis,
    ) -> Result<&mut Loaded, Error> {
        if !self.collections.contains_key(name) {
            // A share's local collection has the owner's shard count.
            let shards = self.share_of(name).map_or(self.config.shards, |s| s.shards);
            let data = Collection::new(name, shards, self.actor())?;
            self.collections.insert(
                name.to_string(),
                Loaded {
                    data,
                    indexes: Indexes::default(),
                    meta: Catalog::new(shards, now),
                },
            );
            // A shared collection written here before any of its data
            // arrived: its changes are signed and name their list state
            // from the first one.
            if self.share_of(name).is_some() {
                self.set_notes();
            }
        }
        self.collections
            .get_mut(name)
            .ok_or_else(|| Error::BadDoctype(name.to_string()))
    }

    /// Writes one record. Answer only after the outputs' batch is durable.
    pub fn put(
        &mut self,
        now: Millis,
        rng: &mut impl rand_core::RngCore,
        doctype: &str,
        id: Option<String>,
        body: Value,
        mode: PutMode,
    ) -> Result<(Written, Outputs), Error> {
        let id = id.or_else(|| body_id(&body)).unwrap_or_else(|| new_id(rng));
        check_size(&self.config, &id, &body)?;
        let loaded = self.collection_mut(doctype, now)?;
        let written = loaded.data.put(&id, body, mode, now)?;
        let out = self.commit(now, doctype, [&written]);
        Ok((written, out))
    }

    /// Upserts `id` past the share rules (a reader's or a revoked writer's
    /// write), signed as this device and offered to every session, as a
    /// modified node would: how the simulator plays a hostile member. The
    /// other replicas' gates must refuse it. Never on in a build that ships.
    #[cfg(feature = "adversary")]
    pub fn forge(
        &mut self,
        now: Millis,
        doctype: &str,
        id: &str,
        body: Value,
    ) -> Result<(Written, Outputs), Error> {
        check_size(&self.config, id, &body)?;
        let loaded = self.ensure_collection(doctype, now)?;
        let written = loaded.data.put(id, body, PutMode::Upsert, now)?;
        let out = self.commit(now, doctype, [&written]);
        Ok((written, out))
    }

    /// Upserts many records in one batch; each gets its `_id` or a fresh one.
    pub fn put_many(
        &mut self,
        now: Millis,
        rng: &mut impl rand_core::RngCore,
        doctype: &str,
        records: Vec<Value>,
    ) -> Result<(Vec<Written>, Outputs), Error> {
        let mut items = Vec::with_capacity(records.len());
        for body in records {
            let id = body_id(&body).unwrap_or_else(|| new_id(rng));
            check_size(&self.config, &id, &body)?;
            items.push((id, body));
        }
        let loaded = self.collection_mut(doctype, now)?;
        let written = loaded.data.put_many(items, PutMode::Upsert, now)?;
        let out = self.commit(now, doctype, &written);
        Ok((written, out))
    }

    /// Writes or deletes many documents in one batch, each on its own terms
    /// (`_rev` → update, `_deleted: true` → delete, else create), as
    /// CouchDB's `_bulk_docs` does. A document that fails does not stop the
    /// others.
    pub fn bulk(
        &mut self,
        now: Millis,
        rng: &mut impl rand_core::RngCore,
        doctype: &str,
        docs: Vec<Value>,
    ) -> Result<(Vec<Result<Written, BulkError>>, Outputs), Error> {
        let mut results = Vec::with_capacity(docs.len());
        self.collection_mut(doctype, now)?;
        for mut doc in docs {
            let id = body_id(&doc).unwrap_or_else(|| new_id(rng));
            let rev = doc.get("_rev").and_then(Value::as_str).map(String::from);
            let deleted = doc.get("_deleted") == Some(&Value::Bool(true));
            if let Some(map) = doc.as_object_mut() {
                map.remove("_deleted");
            }
            let outcome = check_size(&self.config, &id, &doc).and_then(|()| {
                let data = &mut self.collection_mut(doctype, now)?.data;
                let written = if deleted {
                    data.delete(&id, rev.as_deref(), now)
                } else {
                    let mode = match rev {
                        Some(expected_rev) => PutMode::Update { expected_rev },
                        None => PutMode::Create,
                    };
                    data.put(&id, doc, mode, now)
                };
                written.map_err(|e| in_collection(doctype, e))
            });
            results.push(outcome.map_err(|error| BulkError { id, error }));
        }
        let written = results.iter().filter_map(|r| r.as_ref().ok());
        let out = self.commit(now, doctype, written);
        Ok((results, out))
    }

    /// Deletes one record; `rev`, when given, must be the current one.
    pub fn delete(
        &mut self,
        now: Millis,
        doctype: &str,
        id: &str,
        rev: Option<&str>,
    ) -> Result<(Written, Outputs), Error> {
        // Deleting from a collection that does not exist must not create it.
        if self.collection(doctype)?.is_none() {
            return Err(Error::NotFound {
                doctype: doctype.to_string(),
                id: id.to_string(),
            });
        }
        let loaded = self.collection_mut(doctype, now)?;
        let written = loaded
            .data
            .delete(id, rev, now)
            .map_err(|e| in_collection(doctype, e))?;
        let out = self.commit(now, doctype, [&written]);
        Ok((written, out))
    }

    /// Declares an index (named after its fields when `name` is `None`);
    /// returns its name and whether it is new.
    pub fn define_index(
        &mut self,
        now: Millis,
        doctype: &str,
        name: Option<String>,
        fields: Vec<String>,
    ) -> Result<((String, bool), Outputs), Error> {
        let name = name.unwrap_or_else(|| format!("by-{}", fields.join("-")));
        let mut index = Index::new(&name, fields.clone())?;
        let loaded = self.collection_mut(doctype, now)?;
        if let Some(existing) = loaded.meta.indexes.iter().find(|d| d.name == name) {
            if existing.fields == fields {
                return Ok(((name, false), Outputs::default()));
            }
            return Err(Error::IndexExists {
                name,
                fields: existing.fields.clone(),
            });
        }
        if loaded.meta.indexes.len() >= MAX_INDEXES {
            return Err(Error::TooManyIndexes {
                doctype: doctype.to_string(),
                limit: MAX_INDEXES,
            });
        }
        index.rebuild(loaded.data.records());
        loaded.indexes.define(index);
        loaded.meta.indexes.push(IndexDef {
            name: name.clone(),
            fields,
        });
        let out = self.commit(now, doctype, []);
        Ok(((name, true), out))
    }

    /// One record.
    pub fn get(&self, doctype: &str, id: &str) -> Result<&Value, Error> {
        self.collection(doctype)?
            .and_then(|c| c.data.get(id))
            .ok_or_else(|| Error::NotFound {
                doctype: doctype.to_string(),
                id: id.to_string(),
            })
    }

    /// Many records; `None` where an id has none.
    pub fn get_many(&self, doctype: &str, ids: &[String]) -> Result<Vec<Option<Value>>, Error> {
        let c = self.collection(doctype)?;
        Ok(ids
            .iter()
            .map(|id| c.and_then(|c| c.data.get(id)).cloned())
            .collect())
    }

    /// A page of records ordered by id, and the total count.
    pub fn list(
        &self,
        doctype: &str,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<Value>, usize), Error> {
        let Some(c) = self.collection(doctype)? else {
            return Ok((Vec::new(), 0));
        };
        let records = c.data.records();
        let page = records.values().skip(skip).take(limit).cloned().collect();
        Ok((page, records.len()))
    }

    /// A Mango find.
    pub fn find(&self, doctype: &str, request: &FindRequest) -> Result<query::Found, Error> {
        match self.collection(doctype)? {
            Some(c) => Ok(query::find(request, c.data.records(), &c.indexes)?),
            None => Ok(query::find(
                request,
                &Default::default(),
                &Indexes::default(),
            )?),
        }
    }

    /// A grouped aggregate, as JSON.
    pub fn aggregate(&self, doctype: &str, request: &AggregateRequest) -> Result<Value, Error> {
        let empty = Default::default();
        let records = match self.collection(doctype)? {
            Some(c) => c.data.records(),
            None => &empty,
        };
        Ok(query::aggregate(request, records.values())?.to_json())
    }

    /// Persists what the last writes to `name` changed: its chunks (or
    /// compacted saves), one changes-feed entry per record in `written`,
    /// and its catalog entry, as one batch; then offers the changed shards
    /// to every open session.
    pub(super) fn commit<'w>(
        &mut self,
        now: Millis,
        name: &str,
        written: impl IntoIterator<Item = &'w Written>,
    ) -> Outputs {
        let mut batch = Batch::default();
        let shards = self.stage(name, written, &mut batch);
        let mut out = Outputs::default();
        out.persist(batch);
        if !shards.is_empty() {
            self.offer(now, name, &shards, None, &mut out);
        }
        out
    }

    /// Adds to `batch` the writes that make `name`'s in-memory changes
    /// durable; returns the shards whose chunks were taken.
    pub(super) fn stage<'w>(
        &mut self,
        name: &str,
        written: impl IntoIterator<Item = &'w Written>,
        batch: &mut Batch,
    ) -> Vec<u16> {
        let (after, min) = (
            self.config.compact_after_chunks,
            self.config.compact_min_bytes,
        );
        let Some(loaded) = self.collections.get_mut(name) else {
            return Vec::new();
        };
        let meta = &mut loaded.meta;
        // The catalog entry goes first (with its final counters), so a store
        // applying the batch in order knows the collection before its chunks.
        let catalog_at = batch.writes.len();
        let mut shards = Vec::new();
        for chunk in loaded.data.take_chunks() {
            let shard = chunk.shard;
            shards.push(shard);
            let slot = usize::from(shard);
            let next = meta.next_chunk[slot];
            let incremental = meta.incremental_bytes[slot] + chunk.bytes.len() as u64;
            // Loading a snapshot is far cheaper than replaying changes, so a
            // shard is compacted once its changes hold about as many records
            // as its snapshot (or pile up in number): the snapshot about
            // doubles between compactions, so their total cost stays within
            // about twice the final save.
            let compact = meta.chunk_count[slot] >= after
                || (meta.chunk_count[slot] >= 1
                    && incremental
                        > (meta.snapshot_bytes[slot] * INCREMENTAL_PER_SNAPSHOT_BYTE).max(min));
            if !(compact && compact_into(&mut loaded.data, meta, name, shard, batch)) {
                batch.writes.push(Write::Chunk {
                    collection: name.to_owned(),
                    shard,
                    seq: next,
                    bytes: chunk.bytes,
                });
                meta.chunk_count[slot] += 1;
                meta.incremental_bytes[slot] = incremental;
                meta.next_chunk[slot] = next + 1;
            }
        }
        for w in written {
            meta.last_seq += 1;
            batch.writes.push(Write::Change {
                collection: name.to_owned(),
                change: Change {
                    seq: meta.last_seq,
                    id: w.id.clone(),
                    rev: w.rev.clone(),
                    deleted: w.deleted,
                    doc: None,
                },
            });
            loaded
                .indexes
                .update(&w.id, w.before.as_ref(), w.after.as_ref());
        }
        batch.writes.insert(
            catalog_at,
            Write::Catalog {
                collection: name.to_owned(),
                entry: meta.clone(),
            },
        );
        shards.sort_unstable();
        shards.dedup();
        shards
    }

    /// Compacts every shard that gathered at least `min_bytes` of changes,
    /// so the next open loads snapshots instead of replaying changes (about
    /// twice as fast); the daemon does this before it closes.
    pub fn compact_due(&mut self, min_bytes: u64) -> Batch {
        let mut batch = Batch::default();
        for (name, loaded) in &mut self.collections {
            let due: Vec<u16> = (0..loaded.meta.shards)
                .filter(|&s| loaded.meta.incremental_bytes[usize::from(s)] >= min_bytes)
                .collect();
            if due.is_empty() {
                continue;
            }
            let catalog_at = batch.writes.len();
            for shard in due {
                compact_into(&mut loaded.data, &mut loaded.meta, name, shard, &mut batch);
            }
            batch.writes.insert(
                catalog_at,
                Write::Catalog {
                    collection: name.clone(),
                    entry: loaded.meta.clone(),
                },
            );
        }
        batch
    }
}

/// Replaces every stored chunk of `shard` with one full save; false (and
/// nothing staged) if the shard cannot be saved.
fn compact_into(
    data: &mut Collection,
    meta: &mut Catalog,
    name: &str,
    shard: u16,
    batch: &mut Batch,
) -> bool {
    let slot = usize::from(shard);
    let Ok(full) = data.compact_shard(shard) else {
        return false;
    };
    let next = meta.next_chunk[slot];
    meta.next_chunk[slot] = next + 1;
    meta.chunk_count[slot] = 1;
    meta.snapshot_bytes[slot] = full.len() as u64;
    meta.incremental_bytes[slot] = 0;
    batch.writes.push(Write::Compacted {
        collection: name.to_owned(),
        shard,
        seq: next,
        bytes: full,
    });
    true
}
