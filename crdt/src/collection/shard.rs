//! One shard: an Automerge document plus what has been handed out for storage.
//!
//! Every call that decodes bytes (loading persisted chunks, merging a peer's
//! changes) runs inside [`std::panic::catch_unwind`]: Automerge has panicked on
//! malformed input, and a hostile or corrupt byte string must cost the caller
//! an error, not the process. Merges are also all-or-nothing: they apply in
//! place (a clone per merge cost as much as the merge itself on a large
//! shard), and any failure, a refused record or a caught panic, rolls the
//! document back to the heads it had by rebuilding it from its own change
//! history ([`Automerge::fork_at`]), so no shard is left half-updated. The
//! rebuild drops changes Automerge held back for missing dependencies; the
//! sync protocol asks for them again. Only if that rebuild itself fails is
//! the document left as Automerge left it, and the error says so.

use std::any::Any;
use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{
    ActorId, Automerge, Change, ChangeHash, LoadOptions, OnPartialLoad, PatchAction, PatchLog,
    Prop, ReadDoc, VerificationMode,
};

use std::collections::BTreeMap;

use super::DecodeError;
use super::authorship::{self, Authorship, Signer};

/// Magic bytes opening every Automerge chunk.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
pub(crate) const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
pub(crate) const CHUNK_COMPRESSED_CHANGE: u8 = 2;

#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) doc: Automerge,
    /// Heads covered by the chunks already returned from [`Shard::take_chunk`]
    /// or [`Shard::compact`].
    saved_heads: Vec<ChangeHash>,
    /// The encoded changes from `saved_heads` to the current heads, when every
    /// one of them was a local commit; `None` after a merge, and then
    /// Automerge re-encodes them.
    pending: Option<Vec<u8>>,
    /// Our actor's last sequence number in this document, once looked up.
    last_seq: Option<u64>,
    /// The signatures known for this document's changes (see
    /// [`super::authorship`]), by change.
    authorships: BTreeMap<ChangeHash, Authorship>,
    /// Those not yet in a chunk handed out for storage.
    unsaved: Vec<Authorship>,
    /// What signs this replica's changes, on a shared collection.
    signer: Option<Signer>,
    /// Records whose `_rev` holds concurrent values. Their shown revision
    /// is a function of every such value, and Automerge reports a conflict
    /// only when it starts, not when another concurrent value joins it; so
    /// every merge re-reads these (see [`Shard::merge`]).
    pub(crate) conflicted: BTreeSet<String>,
    /// Peers' changes decoded by merges, and those of them new here.
    pub(crate) arrivals: super::Arrivals,
}

impl Shard {
    pub(crate) fn new(actor: ActorId) -> Self {
        Self {
            doc: Automerge::new().with_actor(actor),
            saved_heads: Vec::new(),
            pending: Some(Vec::new()),
            last_seq: Some(0),
            authorships: BTreeMap::new(),
            unsaved: Vec::new(),
            signer: None,
            conflicted: BTreeSet::new(),
            arrivals: super::Arrivals::default(),
        }
    }

    /// Loads a shard from its persisted chunks (a full save followed by
    /// incremental saves, or any prefix of that list), then runs `read` on the
    /// loaded document inside the same panic guard.
    pub(crate) fn load<T>(
        chunks: &[Vec<u8>],
        actor: ActorId,
        read: impl FnOnce(&Automerge) -> Result<T, DecodeError>,
    ) -> Result<(Self, T), DecodeError> {
        let mut authorships = BTreeMap::new();
        let mut parts = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let (list, rest) = authorship::split_chunk(chunk)?;
            authorships.extend(list.into_iter().map(|a| (a.change(), a)));
            parts.push(rest);
        }
        let joined;
        let bytes: &[u8] = match parts.as_slice() {
            [] => &[],
            [one] => one,
            many => {
                joined = many.concat();
                &joined
            }
        };
        guard(|| {
            let doc = Automerge::load_with_options(
                bytes,
                LoadOptions::new()
                    .on_partial_load(OnPartialLoad::Error)
                    .verification_mode(VerificationMode::Check),
            )?;
            // Changes whose dependencies are absent sit in a queue and are
            // invisible: for our own storage that means a lost chunk.
            let missing = doc.get_missing_deps(&[]);
            if !missing.is_empty() {
                return Err(DecodeError::MissingDeps {
                    count: missing.len(),
                });
            }
            let doc = doc.with_actor(actor);
            let value = read(&doc)?;
            let saved_heads = doc.get_heads();
            let shard = Self {
                doc,
                saved_heads,
                pending: Some(Vec::new()),
                last_seq: None,
                authorships,
                unsaved: Vec::new(),
                signer: None,
                conflicted: BTreeSet::new(),
                arrivals: super::Arrivals::default(),
            };
            Ok((shard, value))
        })
    }

    /// The sequence number our actor's next change gets.
    pub(crate) fn next_seq(&mut self) -> u64 {
        let last = match self.last_seq {
            Some(seq) => seq,
            None => {
                let actor = self.doc.get_actor().clone();
                self.doc
                    .get_changes_meta(&[])
                    .iter()
                    .filter(|meta| *meta.actor == actor)
                    .map(|meta| meta.seq)
                    .max()
                    .unwrap_or(0)
            }
        };
        self.last_seq = Some(last);
        last + 1
    }

    /// Records a local transaction's commit.
    pub(crate) fn committed(&mut self, hash: Option<ChangeHash>) {
        let Some(hash) = hash else { return };
        self.last_seq = self.last_seq.map(|s| s + 1);
        let change = self.doc.get_change_by_hash(&hash);
        match (self.pending.as_mut(), change) {
            (Some(pending), Some(change)) => pending.extend_from_slice(change.raw_bytes()),
            _ => self.pending = None,
        }
        self.sign(hash);
    }

    /// Applies a change built by this replica (see `bulk`).
    pub(crate) fn apply_local(&mut self, change: Change) -> Result<(), automerge::AutomergeError> {
        let bytes = change.raw_bytes().to_vec();
        let hash = change.hash();
        self.doc.apply_changes([change])?;
        self.last_seq = self.last_seq.map(|s| s + 1);
        if let Some(pending) = self.pending.as_mut() {
            pending.extend_from_slice(&bytes);
        }
        self.sign(hash);
        Ok(())
    }

    /// Signs a change of ours, when a signer is set.
    fn sign(&mut self, hash: ChangeHash) {
        if let Some(signer) = &self.signer {
            let signed = signer.sign(&hash);
            self.keep(signed);
        }
    }

    fn keep(&mut self, signed: Authorship) {
        if self.authorships.insert(signed.change(), signed).is_none() {
            self.unsaved.push(signed);
        }
    }

    /// Sets what signs this replica's changes. An endorsing signer newly set
    /// also signs every change held that carries no signature yet.
    pub(crate) fn set_signer(&mut self, signer: Option<Signer>) {
        let newly_endorsing = signer.as_ref().is_some_and(Signer::endorses)
            && !self.signer.as_ref().is_some_and(Signer::endorses);
        self.signer = signer;
        if newly_endorsing {
            let unsigned: Vec<ChangeHash> = self
                .doc
                .get_changes_meta(&[])
                .iter()
                .map(|meta| meta.hash)
                .filter(|hash| !self.authorships.contains_key(hash))
                .collect();
            for hash in unsigned {
                self.sign(hash);
            }
        }
    }

    /// The signatures known for `hashes` (those without one are skipped).
    pub(crate) fn authorships_for<'h>(
        &self,
        hashes: impl IntoIterator<Item = &'h ChangeHash>,
    ) -> Vec<Authorship> {
        hashes
            .into_iter()
            .filter_map(|hash| self.authorships.get(hash).copied())
            .collect()
    }

    /// Whether any change here carries a signature.
    pub(crate) fn has_authorships(&self) -> bool {
        !self.authorships.is_empty()
    }

    /// The signature known for one change.
    pub(crate) fn authorship(&self, hash: &ChangeHash) -> Option<&Authorship> {
        self.authorships.get(hash)
    }

    /// Applies a peer's changes (the output of `save`, `save_after` or
    /// concatenated change chunks), refusing them if their compressed parts
    /// inflate past `max_inflated` bytes. Returns the root keys whose subtree the
    /// changes touched, with `read`'s result for each, computed on the merged
    /// document; `read` may still refuse the merge. Nothing changes unless
    /// everything succeeds.
    pub(crate) fn merge<T>(
        &mut self,
        bytes: &[u8],
        max_inflated: usize,
        gate: Option<super::ChangeGate<'_>>,
        offered: &[Authorship],
        mut read: impl FnMut(&Automerge, &str) -> Result<T, DecodeError>,
    ) -> Result<Vec<(String, T)>, DecodeError> {
        let current = &self.doc;
        let offered: BTreeMap<ChangeHash, &Authorship> =
            offered.iter().map(|a| (a.change(), a)).collect();
        let known = &self.authorships;
        let (changes, kept, decoded) = guard(|| {
            let mut changes = decode_changes(bytes, max_inflated)?;
            let decoded = changes.len();
            // Peers resend what we have; skipping it also skips the clone.
            changes.retain(|c| !current.get_missing_deps(&[c.hash()]).is_empty());
            let batch: BTreeMap<ChangeHash, &Change> =
                changes.iter().map(|c| (c.hash(), c)).collect();
            let mut kept = Vec::new();
            for change in &changes {
                let hash = change.hash();
                let authorship = offered
                    .get(&hash)
                    .copied()
                    .or_else(|| known.get(&hash))
                    .copied();
                let dep_notes = if gate.is_some() {
                    change
                        .deps()
                        .iter()
                        .map(|dep| match batch.get(dep) {
                            Some(c) => c.message().map(str::to_owned),
                            None => current
                                .get_change_meta_by_hash(dep)
                                .and_then(|m| m.message.map(|n| n.into_owned())),
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                // Verified once: for the gate, and for keeping it.
                let fresh = authorship.filter(|_| !known.contains_key(&hash));
                let candidate = super::Candidate {
                    change,
                    authorship: authorship.as_ref(),
                    signer: authorship
                        .filter(|_| gate.is_some() || fresh.is_some())
                        .map(|a| a.verify()),
                    dep_notes,
                };
                if let Some(gate) = gate {
                    gate(&candidate).map_err(|refusal| match refusal {
                        super::Refusal::Refused(reason) => DecodeError::Refused { reason },
                        super::Refusal::Waiting(reason) => DecodeError::Waiting { reason },
                    })?;
                }
                // Kept only if it checks out: a bad signature from one of our
                // own devices is dropped, not passed on.
                if let Some(signed) = fresh.filter(|_| matches!(candidate.signer, Some(Ok(_)))) {
                    kept.push(signed);
                }
            }
            Ok((changes, kept, decoded))
        })?;
        self.arrivals.received += decoded as u64;
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let merged: Vec<ChangeHash> = changes.iter().map(Change::hash).collect();
        let conflicted = &self.conflicted;
        let before = current.get_heads();
        let doc = &mut self.doc;
        let outcome = guard(|| {
            let mut log = PatchLog::active();
            doc.apply_changes_log_patches(changes, &mut log)?;
            let mut keys = conflicted.clone();
            for patch in doc.make_patches(&mut log) {
                if let Some(key) = root_key(&patch.path, &patch.action) {
                    keys.insert(key);
                }
            }
            let still: BTreeSet<String> = keys
                .iter()
                .filter(|key| rev_conflicted(doc, key))
                .cloned()
                .collect();
            let touched = keys
                .into_iter()
                .map(|key| {
                    let value = read(doc, &key)?;
                    Ok((key, value))
                })
                .collect::<Result<Vec<(String, T)>, DecodeError>>()?;
            Ok((touched, still))
        });
        let (touched, still) = match outcome {
            Ok(done) => done,
            Err(error) => return Err(self.roll_back(&before, error)),
        };
        self.arrivals.new += merged.len() as u64;
        // Every re-read key is known now: conflicted or not.
        self.conflicted.retain(|key| still.contains(key));
        self.conflicted.extend(still);
        // Our own actor's changes only ever come back as duplicates (the
        // actor is never shared), so `last_seq` still holds.
        self.pending = None;
        for signed in kept {
            self.keep(signed);
        }
        if self.signer.as_ref().is_some_and(Signer::endorses) {
            for hash in merged {
                if !self.authorships.contains_key(&hash) {
                    self.sign(hash);
                }
            }
        }
        Ok(touched)
    }

    /// Puts the document back at `heads` after a failed merge, returning the
    /// merge's error (or, if even the rebuild fails, one saying so).
    fn roll_back(&mut self, heads: &[ChangeHash], error: DecodeError) -> DecodeError {
        if self.doc.get_heads() == heads {
            return error;
        }
        let actor = self.doc.get_actor().clone();
        let doc = &self.doc;
        match guard(|| doc.fork_at(heads).map_err(DecodeError::from)) {
            Ok(mut rebuilt) => {
                rebuilt.set_actor(actor);
                self.doc = rebuilt;
                error
            }
            Err(rebuild) => DecodeError::Panicked {
                message: format!("{error}; rolling the shard back failed too: {rebuild}"),
            },
        }
    }

    /// The changes made since the last call (local writes and merged peer
    /// changes alike), as bytes `load` and `merge` accept; `None` when there
    /// are none.
    pub(crate) fn take_chunk(&mut self) -> Option<Vec<u8>> {
        let heads = self.doc.get_heads();
        if heads == self.saved_heads && self.unsaved.is_empty() {
            return None;
        }
        let mut out = authorship::encode_block(&std::mem::take(&mut self.unsaved));
        if heads != self.saved_heads {
            match self.pending.replace(Vec::new()) {
                Some(bytes) if !bytes.is_empty() => out.extend_from_slice(&bytes),
                _ => out.extend_from_slice(&self.doc.save_after(&self.saved_heads)),
            }
            self.saved_heads = heads;
        }
        Some(out)
    }

    /// A full save, which replaces every chunk handed out so far.
    pub(crate) fn compact(&mut self) -> Vec<u8> {
        self.saved_heads = self.doc.get_heads();
        self.pending = Some(Vec::new());
        self.unsaved.clear();
        let all: Vec<Authorship> = self.authorships.values().copied().collect();
        let mut out = authorship::encode_block(&all);
        out.extend_from_slice(&self.doc.save());
        out
    }
}

/// Runs `f`, turning a panic into [`DecodeError::Panicked`].
fn guard<T>(f: impl FnOnce() -> Result<T, DecodeError>) -> Result<T, DecodeError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(DecodeError::Panicked {
            message: panic_message(payload.as_ref()),
        })
    })
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The root key under which a patch applies: the record id it touches.
fn root_key(path: &[(automerge::ObjId, Prop)], action: &PatchAction) -> Option<String> {
    match path.first() {
        Some((_, Prop::Map(key))) => Some(key.clone()),
        Some((_, Prop::Seq(_))) => None,
        None => match action {
            PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => Some(key.clone()),
            PatchAction::Conflict {
                prop: Prop::Map(key),
            }
            | PatchAction::Increment {
                prop: Prop::Map(key),
                ..
            } => Some(key.clone()),
            _ => None,
        },
    }
}

/// Whether the record at root key `key` holds concurrent `_rev` values, or
/// is held in several concurrent versions: either way its shown revision
/// depends on more than the map the view reads, so every merge re-reads it.
fn rev_conflicted(doc: &Automerge, key: &str) -> bool {
    match super::view::version_objs(doc, key) {
        Some((_, others)) if !others.is_empty() => true,
        Some((obj, _)) => doc
            .get_all(&obj, crate::record::REV_KEY)
            .is_ok_and(|values| values.len() > 1),
        None => false,
    }
}

/// Parses every chunk of `bytes` before anything is applied, so that a bad
/// chunk anywhere rejects the whole merge instead of applying a prefix (which
/// is what `Automerge::load_incremental` does). Compressed parts are first
/// checked to inflate to at most `max_inflated` bytes in all.
fn decode_changes(bytes: &[u8], max_inflated: usize) -> Result<Vec<Change>, DecodeError> {
    super::inflate::check(bytes, max_inflated)?;
    let mut changes = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let ChunkHeader {
            kind, total: len, ..
        } = chunk_header(bytes, offset)?;
        let chunk = &bytes[offset..offset + len];
        match kind {
            CHUNK_CHANGE | CHUNK_COMPRESSED_CHANGE => {
                let change = Change::try_from(chunk)?;
                // `Change::try_from` does not check the checksum (the first
                // bytes of the change hash); a flipped bit would otherwise
                // turn into a different, valid-looking change.
                if chunk[4..8] != change.hash().0[..4] {
                    return Err(DecodeError::BadChecksum { offset });
                }
                changes.push(change);
            }
            CHUNK_DOCUMENT => {
                let doc = Automerge::load(chunk)?;
                changes.extend(doc.get_changes(&[]));
            }
            other => {
                return Err(DecodeError::UnsupportedChunk {
                    kind: other,
                    offset,
                });
            }
        }
        offset += len;
    }
    Ok(changes)
}

/// The header of one Automerge chunk.
pub(crate) struct ChunkHeader {
    /// The chunk type byte.
    pub(crate) kind: u8,
    /// Length of the header (magic, checksum, type, length).
    pub(crate) header_len: usize,
    /// Length of the whole chunk, header included; within the input.
    pub(crate) total: usize,
}

/// Reads the chunk header at `offset`: magic, checksum, type, LEB128 length.
/// The whole chunk's length is bounds-checked against `bytes`.
pub(crate) fn chunk_header(bytes: &[u8], offset: usize) -> Result<ChunkHeader, DecodeError> {
    let framing = DecodeError::Framing { offset };
    let rest = &bytes[offset..];
    if rest.len() < 10 || rest[..4] != MAGIC {
        return Err(framing);
    }
    let kind = rest[8];
    let mut data_len: u64 = 0;
    let mut header_len = 9;
    for shift in (0..64).step_by(7) {
        let byte = *rest
            .get(header_len)
            .ok_or(DecodeError::Framing { offset })?;
        header_len += 1;
        data_len |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        if shift == 63 {
            return Err(framing);
        }
    }
    let total = usize::try_from(data_len)
        .ok()
        .and_then(|d| d.checked_add(header_len))
        .filter(|&t| t <= rest.len())
        .ok_or(framing)?;
    Ok(ChunkHeader {
        kind,
        header_len,
        total,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use automerge::ROOT;
    use automerge::transaction::Transactable;

    fn doc_with(key: &str) -> Automerge {
        let mut doc = Automerge::new().with_actor(ActorId::from([7u8; 16]));
        let mut tx = doc.transaction();
        tx.put(ROOT, key, 1i64).unwrap();
        tx.commit();
        doc
    }

    #[test]
    fn framing_errors_name_the_offset() {
        let doc = doc_with("a");
        let mut bytes = doc.save_after(&[]);
        let good = bytes.len();
        bytes.extend_from_slice(&[0x85, 0x6f, 0x4a]);
        assert!(matches!(
            decode_changes(&bytes, usize::MAX),
            Err(DecodeError::Framing { offset }) if offset == good
        ));
    }

    #[test]
    fn a_bad_chunk_after_a_good_one_rejects_the_whole_merge() {
        let source = doc_with("a");
        let mut bytes = source.save_after(&[]);
        let mut second = doc_with("b").save_after(&[]);
        let last = second.len() - 1;
        second[last] ^= 0xff;
        bytes.extend(second);
        let mut shard = Shard::new(ActorId::from([1u8; 16]));
        let err = shard
            .merge(&bytes, usize::MAX, None, &[], |_, _| Ok(()))
            .unwrap_err();
        assert!(!matches!(err, DecodeError::Panicked { .. }), "{err}");
        assert!(shard.doc.get_heads().is_empty(), "nothing may be applied");
    }

    #[test]
    fn merge_reports_the_touched_root_keys() {
        let source = doc_with("k");
        let mut shard = Shard::new(ActorId::from([1u8; 16]));
        let touched = shard
            .merge(&source.save(), usize::MAX, None, &[], |doc, key| {
                Ok(doc.get(automerge::ROOT, key).unwrap().is_some())
            })
            .unwrap();
        assert_eq!(touched, vec![("k".to_owned(), true)]);
        assert_eq!(shard.doc.get_heads(), source.get_heads());
    }

    #[test]
    fn a_refused_merge_rolls_the_document_back_and_keeps_the_actor() {
        let mut shard = Shard::new(ActorId::from([1u8; 16]));
        let mut tx = shard.doc.transaction();
        tx.put(ROOT, "mine", 1i64).unwrap();
        tx.commit();
        let before = shard.doc.get_heads();
        let source = doc_with("k");
        let err = shard
            .merge(&source.save(), usize::MAX, None, &[], |_, key| {
                Err::<(), _>(DecodeError::Refused {
                    reason: format!("no {key}"),
                })
            })
            .unwrap_err();
        assert!(matches!(err, DecodeError::Refused { .. }), "{err}");
        assert_eq!(shard.doc.get_heads(), before);
        assert!(shard.doc.get(ROOT, "k").unwrap().is_none());
        assert_eq!(shard.doc.get_actor(), &ActorId::from([1u8; 16]));
        // The same changes merge once nothing refuses them.
        shard
            .merge(&source.save(), usize::MAX, None, &[], |_, _| Ok(()))
            .unwrap();
        assert!(shard.doc.get(ROOT, "k").unwrap().is_some());
        assert!(shard.doc.get(ROOT, "mine").unwrap().is_some());
    }

    #[test]
    fn take_chunk_hands_out_each_change_once() {
        let mut shard = Shard::new(ActorId::from([1u8; 16]));
        assert!(shard.take_chunk().is_none());
        let mut tx = shard.doc.transaction();
        tx.put(ROOT, "x", 1i64).unwrap();
        tx.commit();
        let chunk = shard.take_chunk().unwrap();
        assert!(shard.take_chunk().is_none());
        let (loaded, ()) = Shard::load(&[chunk], ActorId::from([2u8; 16]), |_| Ok(())).unwrap();
        assert_eq!(loaded.doc.get_heads(), shard.doc.get_heads());
    }

    #[test]
    fn guard_turns_panics_into_errors() {
        let err = guard::<()>(|| panic!("boom")).unwrap_err();
        assert!(matches!(err, DecodeError::Panicked { ref message } if message == "boom"));
    }
}
