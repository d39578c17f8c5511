//! A shared collection's access list: a signed, mergeable log of grants and
//! revocations, written only by the owner account's devices.
//!
//! A collection shared with other people carries an [`Acl`]. Like the
//! account's [membership log](crate::membership), it is a DAG of signed
//! entries ([`AclEntry`]), each naming the entries its author had seen (its
//! `parents`). The first entry creates the list: it names the owner account
//! and the collection, and its hash is the list's id. Later entries grant an
//! account `read` or `write`, change the level, or revoke it. No server
//! orders them; every replica computes the same [`AclState`] from the same
//! entries, whatever order they arrived in.
//!
//! # Who may write it
//!
//! An entry is accepted ([`Acl::apply`], [`Acl::decode`]) only if its
//! signature verifies, all its parents are already held, and its author is
//! a device of the owner account, judged by the owner's membership log the
//! caller gives (a device that ever appeared in it). A stranger's entry, or a
//! contact's, is refused with [`Error::NotOwnerDevice`].
//!
//! Which accepted entries **count** is decided against the owner's log as it
//! is now: an entry counts if its author is a member, or if an entry that
//! counts builds on it (a member had seen it and let it stand). So the
//! entries of a device the owner removed, that no remaining device built
//! on, stop counting once the removal is known, as the membership log
//! ignores a removed device's later entries.
//!
//! # The state
//!
//! For each account, the entries about it (grants and revocations) that
//! count are reduced to their **latest**: those no other counting entry
//! about the same account builds on. Then:
//!
//! - **a revocation wins**: if any latest entry revokes, the account is
//!   revoked, even against a concurrent grant; a grant made after seeing the
//!   revocation (one that builds on it) shares again;
//! - concurrent grants of different levels give the **lower** one, so
//!   concurrency never widens access;
//! - the owner account is never in the list: its devices always write.
//!
//! # Bounds
//!
//! At most [`MAX_ENTRIES`] entries of at most [`MAX_ENTRY_BYTES`] bytes, each
//! with at most [`MAX_PARENTS`] parents; a collection name of at most
//! [`MAX_COLLECTION_LEN`] bytes. Decoding checks every bound before it
//! allocates for what the input claims.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::identity::{DeviceId, DeviceKey, Signature};
use crate::membership::{AccountId, EntryHash, Log};

/// Most entries a list holds: grants, level changes and revocations over a
/// collection's life.
pub const MAX_ENTRIES: usize = 4096;

/// Most parents one entry names.
pub const MAX_PARENTS: usize = 32;

/// Longest collection name, in bytes (the doctype rules allow 128).
pub const MAX_COLLECTION_LEN: usize = 128;

/// Longest encoding of one entry, in bytes, with room to spare.
pub const MAX_ENTRY_BYTES: usize =
    1 + 32 + 2 + MAX_COLLECTION_LEN + 32 + 2 + MAX_PARENTS * 32 + 10 + 64 + 16;

/// Longest encoding of a whole list, in bytes.
pub const MAX_LIST_BYTES: usize = 1 + 3 + MAX_ENTRIES * (MAX_ENTRY_BYTES + 3);

/// Format version of [`Acl::encode`].
const VERSION: u8 = 1;

/// Prefix of every signed message, so an entry signature can never be taken
/// for a signature over anything else the device key signs.
const SIGNING_CONTEXT: &[u8] = b"hearth/acl-entry/v1\0";

/// What a grant lets an account do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Read the records.
    Read,
    /// Read and write them.
    Write,
}

/// What an entry does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AclOp {
    /// Creates the list of `collection`, owned by `owner`.
    Create {
        /// The owner account.
        owner: AccountId,
        /// The collection's name on the owner's devices.
        collection: String,
    },
    /// Gives `account` this level (again, or instead of another).
    Grant {
        /// The account.
        account: AccountId,
        /// The level.
        level: Level,
    },
    /// Takes every right away from `account`.
    Revoke {
        /// The account.
        account: AccountId,
    },
}

impl AclOp {
    /// The account a grant or revocation is about.
    pub fn account(&self) -> Option<AccountId> {
        match self {
            AclOp::Create { .. } => None,
            AclOp::Grant { account, .. } | AclOp::Revoke { account } => Some(*account),
        }
    }
}

/// Why an entry or a list was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The signature does not verify.
    #[error("access list entry signature does not verify")]
    BadSignature,
    /// The author is no device of the owner account.
    #[error("access list entry by {author}, who is no device of the owner account")]
    NotOwnerDevice {
        /// The author.
        author: DeviceId,
    },
    /// The membership log given is another account's.
    #[error("the membership log given is not the owner account's")]
    WrongOwnerLog,
    /// Parents this list does not hold yet: apply them first.
    #[error("access list entry builds on {} entries this list does not hold yet", missing.len())]
    MissingParents {
        /// The entries to fetch first.
        missing: Vec<EntryHash>,
    },
    /// A second `Create`, or a first entry that is not one.
    #[error("an access list has exactly one create entry, and it comes first")]
    Shape,
    /// An entry other than the create entry names no parent.
    #[error("an access list entry other than the first must build on earlier entries")]
    NoParents,
    /// Too many parents, or parents not sorted and unique.
    #[error("access list entry parents: at most {MAX_PARENTS}, sorted and unique")]
    Parents,
    /// A grant or revocation about the owner account itself.
    #[error("the owner account always holds every right; it cannot be granted or revoked")]
    AboutOwner,
    /// A collection name that is empty or too long.
    #[error("collection name of {len} bytes; 1 to {MAX_COLLECTION_LEN} are allowed")]
    CollectionName {
        /// Its length.
        len: usize,
    },
    /// The list is full.
    #[error("the access list already holds the maximum of {MAX_ENTRIES} entries")]
    Full,
    /// An encoding is larger than its bound.
    #[error("access list encoding of {len} bytes; the limit is {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Bytes that do not decode.
    #[error("malformed access list encoding: {0}")]
    Encoding(#[from] postcard::Error),
    /// Bytes after the encoding.
    #[error("{0} unexpected bytes after the access list encoding")]
    TrailingBytes(usize),
    /// An unknown format version.
    #[error("access list format version {0} is not supported")]
    Version(u8),
    /// A device id in the encoding is not a valid key.
    #[error("access list entry names an invalid device: {0}")]
    Device(#[from] crate::identity::Error),
}

#[derive(Serialize, Deserialize)]
enum WireOp<'a> {
    Create {
        owner: [u8; 32],
        collection: &'a str,
    },
    Grant {
        account: [u8; 32],
        level: Level,
    },
    Revoke {
        account: [u8; 32],
    },
}

#[derive(Serialize, Deserialize)]
struct WireUnsigned<'a> {
    #[serde(borrow)]
    op: WireOp<'a>,
    author: [u8; 32],
    parents: Vec<[u8; 32]>,
    at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct WireEntry<'a> {
    #[serde(borrow)]
    unsigned: WireUnsigned<'a>,
    signature: Signature,
}

fn to_postcard<T: Serialize>(value: &T) -> Vec<u8> {
    // The wire types have no sequence of unknown length and the output is a
    // growable Vec, the only ways postcard's serializer can fail.
    postcard::to_stdvec(value).unwrap_or_default()
}

fn wire_op(op: &AclOp) -> WireOp<'_> {
    match op {
        AclOp::Create { owner, collection } => WireOp::Create {
            owner: *owner.as_bytes(),
            collection,
        },
        AclOp::Grant { account, level } => WireOp::Grant {
            account: *account.as_bytes(),
            level: *level,
        },
        AclOp::Revoke { account } => WireOp::Revoke {
            account: *account.as_bytes(),
        },
    }
}

fn signing_message(unsigned: &WireUnsigned<'_>) -> Vec<u8> {
    let mut message = SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(&to_postcard(unsigned));
    message
}

/// One signed entry of an access list. A value is always well formed and
/// correctly signed: [`AclEntry::sign`] and [`AclEntry::from_bytes`] are the
/// only ways to get one. Whether its author may write it is the list's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    op: AclOp,
    author: DeviceId,
    parents: Vec<EntryHash>,
    at_ms: u64,
    signature: Signature,
    hash: EntryHash,
}

impl AclEntry {
    /// Makes and signs an entry; `parents` are sorted and deduplicated.
    pub fn sign(
        key: &DeviceKey,
        op: AclOp,
        mut parents: Vec<EntryHash>,
        at_ms: u64,
    ) -> Result<AclEntry, Error> {
        parents.sort_unstable();
        parents.dedup();
        check_shape(&op, &parents)?;
        let wire_parents: Vec<[u8; 32]> = parents.iter().map(|p| *p.as_bytes()).collect();
        let unsigned = WireUnsigned {
            op: wire_op(&op),
            author: *key.id().as_bytes(),
            parents: wire_parents,
            at_ms,
        };
        let signature = key.sign(&signing_message(&unsigned));
        let bytes = to_postcard(&WireEntry {
            unsigned,
            signature,
        });
        Ok(AclEntry {
            op,
            author: key.id(),
            parents,
            at_ms,
            signature,
            hash: EntryHash::from_bytes(blake3::hash(&bytes).as_bytes()),
        })
    }

    /// Decodes and verifies one entry: its size, exact encoding, ids, shape
    /// and signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<AclEntry, Error> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(Error::TooLarge {
                len: bytes.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        let (wire, rest): (WireEntry<'_>, _) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes(rest.len()));
        }
        let u = &wire.unsigned;
        let op = match u.op {
            WireOp::Create { owner, collection } => AclOp::Create {
                owner: AccountId::from_bytes(&owner),
                collection: collection.to_owned(),
            },
            WireOp::Grant { account, level } => AclOp::Grant {
                account: AccountId::from_bytes(&account),
                level,
            },
            WireOp::Revoke { account } => AclOp::Revoke {
                account: AccountId::from_bytes(&account),
            },
        };
        if u.parents.len() > MAX_PARENTS || u.parents.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::Parents);
        }
        let parents: Vec<EntryHash> = u.parents.iter().map(EntryHash::from_bytes).collect();
        check_shape(&op, &parents)?;
        let author = DeviceId::from_bytes(&u.author)?;
        author
            .verify(&signing_message(u), &wire.signature)
            .map_err(|_| Error::BadSignature)?;
        Ok(AclEntry {
            op,
            author,
            parents,
            at_ms: u.at_ms,
            signature: wire.signature,
            hash: EntryHash::from_bytes(blake3::hash(bytes).as_bytes()),
        })
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let parents: Vec<[u8; 32]> = self.parents.iter().map(|p| *p.as_bytes()).collect();
        to_postcard(&WireEntry {
            unsigned: WireUnsigned {
                op: wire_op(&self.op),
                author: *self.author.as_bytes(),
                parents,
                at_ms: self.at_ms,
            },
            signature: self.signature,
        })
    }

    /// What it does.
    pub fn op(&self) -> &AclOp {
        &self.op
    }

    /// The device that signed it.
    pub fn author(&self) -> DeviceId {
        self.author
    }

    /// The entries it builds on, sorted.
    pub fn parents(&self) -> &[EntryHash] {
        &self.parents
    }

    /// The author's clock when signing (informational).
    pub fn at_ms(&self) -> u64 {
        self.at_ms
    }

    /// Its content hash.
    pub fn hash(&self) -> EntryHash {
        self.hash
    }
}

fn check_shape(op: &AclOp, parents: &[EntryHash]) -> Result<(), Error> {
    if parents.len() > MAX_PARENTS {
        return Err(Error::Parents);
    }
    match op {
        AclOp::Create { collection, .. } => {
            if collection.is_empty() || collection.len() > MAX_COLLECTION_LEN {
                return Err(Error::CollectionName {
                    len: collection.len(),
                });
            }
            if !parents.is_empty() {
                return Err(Error::Shape);
            }
        }
        AclOp::Grant { .. } | AclOp::Revoke { .. } => {
            if parents.is_empty() {
                return Err(Error::NoParents);
            }
        }
    }
    Ok(())
}

/// Whether an entry was new to the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Added.
    New,
    /// Already held; nothing changed.
    Known,
}

/// A collection's access list. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    owner: AccountId,
    collection: String,
    /// In an order where parents come first.
    entries: Vec<AclEntry>,
    index: BTreeMap<EntryHash, usize>,
    heads: BTreeSet<EntryHash>,
}

impl Acl {
    /// A new list for `collection`, created by `key`, a member of the owner
    /// account whose log is `owner_log`.
    pub fn create(
        key: &DeviceKey,
        owner_log: &Log,
        collection: &str,
        at_ms: u64,
    ) -> Result<Acl, Error> {
        if !owner_log.is_member(&key.id()) {
            return Err(Error::NotOwnerDevice { author: key.id() });
        }
        let op = AclOp::Create {
            owner: owner_log.account_id(),
            collection: collection.to_owned(),
        };
        let entry = AclEntry::sign(key, op, Vec::new(), at_ms)?;
        Ok(Self::from_create(entry))
    }

    fn from_create(entry: AclEntry) -> Acl {
        let AclOp::Create { owner, collection } = entry.op.clone() else {
            unreachable!("checked by the callers");
        };
        let hash = entry.hash;
        Acl {
            owner,
            collection,
            entries: vec![entry],
            index: BTreeMap::from([(hash, 0)]),
            heads: BTreeSet::from([hash]),
        }
    }

    /// The list's id: the hash of its create entry.
    pub fn id(&self) -> EntryHash {
        self.entries[0].hash
    }

    /// The owner account.
    pub fn owner(&self) -> AccountId {
        self.owner
    }

    /// The collection's name on the owner's devices.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// The entries no other entry builds on: the state a change is written
    /// under.
    pub fn heads(&self) -> Vec<EntryHash> {
        self.heads.iter().copied().collect()
    }

    /// Every entry, parents first.
    pub fn entries(&self) -> &[AclEntry] {
        &self.entries
    }

    /// Whether the list holds this entry.
    pub fn contains(&self, hash: &EntryHash) -> bool {
        self.index.contains_key(hash)
    }

    /// Grants `account` this level (or changes its level), signed by `key`.
    pub fn grant(
        &mut self,
        key: &DeviceKey,
        owner_log: &Log,
        account: AccountId,
        level: Level,
        at_ms: u64,
    ) -> Result<&AclEntry, Error> {
        self.append(key, owner_log, AclOp::Grant { account, level }, at_ms)
    }

    /// Revokes every right of `account`, signed by `key`.
    pub fn revoke(
        &mut self,
        key: &DeviceKey,
        owner_log: &Log,
        account: AccountId,
        at_ms: u64,
    ) -> Result<&AclEntry, Error> {
        self.append(key, owner_log, AclOp::Revoke { account }, at_ms)
    }

    fn append(
        &mut self,
        key: &DeviceKey,
        owner_log: &Log,
        op: AclOp,
        at_ms: u64,
    ) -> Result<&AclEntry, Error> {
        if !owner_log.is_member(&key.id()) {
            return Err(Error::NotOwnerDevice { author: key.id() });
        }
        let parents: Vec<EntryHash> = self.heads.iter().take(MAX_PARENTS).copied().collect();
        let entry = AclEntry::sign(key, op, parents, at_ms)?;
        let hash = entry.hash;
        self.apply(entry, owner_log)?;
        Ok(&self.entries[self.index[&hash]])
    }

    /// Takes an entry from elsewhere. Its parents must be held already
    /// ([`Error::MissingParents`] names those to fetch first); its author must
    /// be a device of the owner account.
    pub fn apply(&mut self, entry: AclEntry, owner_log: &Log) -> Result<Applied, Error> {
        if self.index.contains_key(&entry.hash) {
            return Ok(Applied::Known);
        }
        if owner_log.account_id() != self.owner {
            return Err(Error::WrongOwnerLog);
        }
        match &entry.op {
            AclOp::Create { .. } => return Err(Error::Shape),
            AclOp::Grant { account, .. } | AclOp::Revoke { account } if *account == self.owner => {
                return Err(Error::AboutOwner);
            }
            _ => {}
        }
        let ever_owner_device = owner_log
            .entries()
            .iter()
            .any(|e| e.op().device() == entry.author);
        if !ever_owner_device {
            return Err(Error::NotOwnerDevice {
                author: entry.author,
            });
        }
        let missing: Vec<EntryHash> = entry
            .parents
            .iter()
            .filter(|p| !self.index.contains_key(p))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingParents { missing });
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(Error::Full);
        }
        for parent in &entry.parents {
            self.heads.remove(parent);
        }
        self.heads.insert(entry.hash);
        self.index.insert(entry.hash, self.entries.len());
        self.entries.push(entry);
        Ok(Applied::New)
    }

    /// Takes every entry of `other` (the same list) that this one lacks.
    pub fn merge(&mut self, other: &Acl, owner_log: &Log) -> Result<usize, Error> {
        if other.id() != self.id() {
            return Err(Error::Shape);
        }
        let mut added = 0;
        for entry in &other.entries[1..] {
            if self.apply(entry.clone(), owner_log)? == Applied::New {
                added += 1;
            }
        }
        Ok(added)
    }

    /// The list as it stood at `heads`: only the entries they are or build
    /// on, so that a change written under those heads is judged by what
    /// its author could see. `None` if a head is not held here.
    pub fn at(&self, heads: &[EntryHash]) -> Option<Acl> {
        let mut keep = vec![false; self.entries.len()];
        let mut stack: Vec<usize> = Vec::with_capacity(heads.len());
        for head in heads {
            stack.push(*self.index.get(head)?);
        }
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut keep[i], true) {
                continue;
            }
            stack.extend(self.entries[i].parents.iter().map(|p| self.index[p]));
        }
        // The create entry is every entry's ancestor; keep it for an empty
        // `heads` too, so the result is always a list.
        keep[0] = true;
        let entries: Vec<AclEntry> = self
            .entries
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(e, _)| e.clone())
            .collect();
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.hash, i))
            .collect();
        let mut tips: BTreeSet<EntryHash> = entries.iter().map(|e| e.hash).collect();
        for entry in &entries {
            for parent in &entry.parents {
                tips.remove(parent);
            }
        }
        Some(Acl {
            owner: self.owner,
            collection: self.collection.clone(),
            entries,
            index,
            heads: tips,
        })
    }

    /// Who holds which right, judged against the owner's log as it is now.
    /// See the [module docs](self).
    pub fn state(&self, owner_log: &Log) -> AclState {
        let n = self.entries.len();
        let words = n.div_ceil(64);
        // ancestors[i]: the entries i builds on, directly or not.
        let mut ancestors: Vec<Vec<u64>> = Vec::with_capacity(n);
        for entry in &self.entries {
            let mut set = vec![0u64; words];
            for parent in &entry.parents {
                let p = self.index[parent];
                set[p / 64] |= 1 << (p % 64);
                for (w, word) in ancestors[p].iter().enumerate() {
                    set[w] |= word;
                }
            }
            ancestors.push(set);
        }
        let has = |set: &[u64], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
        // Entries that count: a member's, and everything a member's builds on.
        let mut counts = vec![0u64; words];
        for (i, entry) in self.entries.iter().enumerate() {
            if owner_log.is_member(&entry.author) {
                counts[i / 64] |= 1 << (i % 64);
                for (w, word) in ancestors[i].iter().enumerate() {
                    counts[w] |= word;
                }
            }
        }
        let mut about: BTreeMap<AccountId, Vec<usize>> = BTreeMap::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if let Some(account) = entry.op.account()
                && has(&counts, i)
            {
                about.entry(account).or_default().push(i);
            }
        }
        let mut state = AclState::default();
        for (account, list) in about {
            let latest: Vec<usize> = list
                .iter()
                .copied()
                .filter(|&i| !list.iter().any(|&j| j != i && has(&ancestors[j], i)))
                .collect();
            let mut revoked = false;
            let mut level: Option<Level> = None;
            for i in latest {
                match self.entries[i].op {
                    AclOp::Revoke { .. } => revoked = true,
                    AclOp::Grant { level: l, .. } => {
                        level = Some(level.map_or(l, |have| have.min(l)));
                    }
                    AclOp::Create { .. } => {}
                }
            }
            if revoked {
                state.revoked.insert(account);
            } else if let Some(level) = level {
                state.levels.insert(account, level);
            }
        }
        state
    }

    /// The whole list: a version byte, then every entry, parents first.
    pub fn encode(&self) -> Vec<u8> {
        let entries: Vec<Vec<u8>> = self.entries.iter().map(AclEntry::to_bytes).collect();
        let mut out = vec![VERSION];
        out.extend_from_slice(&to_postcard(&entries));
        out
    }

    /// Decodes and verifies a whole list against the owner's log: every
    /// entry as [`Acl::apply`] checks it.
    pub fn decode(bytes: &[u8], owner_log: &Log) -> Result<Acl, Error> {
        if bytes.len() > MAX_LIST_BYTES {
            return Err(Error::TooLarge {
                len: bytes.len(),
                max: MAX_LIST_BYTES,
            });
        }
        let (&version, body) = bytes.split_first().ok_or(Error::Shape)?;
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let (entries, rest): (Vec<&[u8]>, _) = postcard::take_from_bytes(body)?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes(rest.len()));
        }
        if entries.len() > MAX_ENTRIES {
            return Err(Error::Full);
        }
        let mut entries = entries.into_iter();
        let first = AclEntry::from_bytes(entries.next().ok_or(Error::Shape)?)?;
        if !matches!(first.op, AclOp::Create { .. }) {
            return Err(Error::Shape);
        }
        if !owner_log
            .entries()
            .iter()
            .any(|e| e.op().device() == first.author)
        {
            return Err(Error::NotOwnerDevice {
                author: first.author,
            });
        }
        let mut acl = Acl::from_create(first);
        if owner_log.account_id() != acl.owner {
            return Err(Error::WrongOwnerLog);
        }
        for bytes in entries {
            acl.apply(AclEntry::from_bytes(bytes)?, owner_log)?;
        }
        Ok(acl)
    }
}

/// The owner account an encoded list names, read from its create entry
/// without verifying anything: to find the log to verify it against with
/// [`Acl::decode`].
pub fn owner_of(bytes: &[u8]) -> Option<AccountId> {
    let (&version, body) = bytes.split_first()?;
    if version != VERSION || bytes.len() > MAX_LIST_BYTES {
        return None;
    }
    let (entries, _): (Vec<&[u8]>, _) = postcard::take_from_bytes(body).ok()?;
    match AclEntry::from_bytes(entries.first()?).ok()?.op {
        AclOp::Create { owner, .. } => Some(owner),
        _ => None,
    }
}

/// Who holds which right on a shared collection ([`Acl::state`]). The owner
/// account is not in it: its devices always hold every right.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclState {
    levels: BTreeMap<AccountId, Level>,
    revoked: BTreeSet<AccountId>,
}

impl AclState {
    /// The level `account` holds, if any.
    pub fn level(&self, account: &AccountId) -> Option<Level> {
        self.levels.get(account).copied()
    }

    /// Whether `account` may read.
    pub fn may_read(&self, account: &AccountId) -> bool {
        self.levels.contains_key(account)
    }

    /// Whether `account` may write.
    pub fn may_write(&self, account: &AccountId) -> bool {
        self.level(account) == Some(Level::Write)
    }

    /// Whether `account`'s latest standing is a revocation.
    pub fn is_revoked(&self, account: &AccountId) -> bool {
        self.revoked.contains(account)
    }

    /// Every account with a right, and its level.
    pub fn grants(&self) -> impl Iterator<Item = (&AccountId, &Level)> {
        self.levels.iter()
    }
}

#[cfg(test)]
mod tests;
