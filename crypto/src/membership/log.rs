//! The membership log: a verified DAG of entries and the member set it implies.
//!
//! Entries are stored in the order they were accepted, which is always a
//! topological order (an entry is accepted only after its parents). For each
//! entry the log keeps the set of its ancestors as a bitset over those
//! positions, so "is `a` in the causal past of `b`" is one bit test and the
//! causal past of a new entry is the union of its parents' sets. Devices get
//! dense slot numbers, so evaluating a causal past walks plain vectors.
//!
//! Cost: an entry that builds on every head (the usual case) is checked and
//! applied in time independent of the log's size, apart from the ancestor
//! bitset. An entry concurrent with others is checked against a fresh
//! evaluation of its causal past, linear in the log's size, so a log full of
//! concurrent entries costs quadratic time to verify; [`MAX_ENTRIES`] bounds it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use super::entry::{WireEntry, to_postcard};
use super::{
    AccountId, Entry, EntryHash, Error, MAX_ENTRIES, MAX_LOG_BYTES, MAX_PARENTS, Op,
    clean_device_name,
};
use crate::identity::{DeviceId, DeviceKey};

/// Version byte that starts an encoded log.
const LOG_FORMAT_VERSION: u8 = 1;

/// A member device of the account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The device.
    pub device: DeviceId,
    /// Its display name, from the entry that added it.
    pub name: String,
    /// When it was added, by the adding device's clock (ms since the Unix epoch).
    pub added_at_ms: u64,
}

/// What [`Log::apply`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The entry was new and is now part of the log.
    Added,
    /// The log already held the entry; nothing changed.
    Duplicate,
}

/// An account's membership log. See the [module docs](super) for the rules.
#[derive(Clone)]
pub struct Log {
    // Invariants: entries[0] is the genesis; every entry's parents come before
    // it; index maps each hash to its position; ancestors[i] holds exactly the
    // positions of entries[i]'s ancestors; heads are the entries no other
    // entry names as parent; slots/devices number every device an entry
    // names; meta[i] describes entries[i] by slot; unless `stale` (only while
    // decoding), state == evaluate(all entries) and members is derived from it.
    entries: Vec<Entry>,
    index: HashMap<EntryHash, usize>,
    ancestors: Vec<Bits>,
    heads: BTreeSet<EntryHash>,
    slots: HashMap<DeviceId, usize>,
    devices: Vec<DeviceId>,
    meta: Vec<Meta>,
    state: Eval,
    members: BTreeMap<DeviceId, Member>,
    stale: bool,
}

/// An entry reduced to what the membership rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    kind: Kind,
    /// Slot of the author.
    author: usize,
    /// Slot of the device the entry adds or removes.
    device: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Genesis,
    Add,
    Remove,
}

/// The membership rules applied to a causally closed set of entries, by
/// device slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Eval {
    /// Positions of the removals of each device.
    removals: Vec<Vec<usize>>,
    /// Positions of the adds (and the genesis) of each device that count,
    /// ascending.
    counting: Vec<Vec<usize>>,
}

impl Eval {
    fn with_slots(slots: usize) -> Eval {
        Eval {
            removals: vec![Vec::new(); slots],
            counting: vec![Vec::new(); slots],
        }
    }

    fn grow(&mut self, slots: usize) {
        if self.removals.len() < slots {
            self.removals.resize(slots, Vec::new());
            self.counting.resize(slots, Vec::new());
        }
    }

    fn is_removed(&self, slot: usize) -> bool {
        self.removals.get(slot).is_some_and(|r| !r.is_empty())
    }

    fn is_member(&self, slot: usize) -> bool {
        !self.is_removed(slot) && self.counting.get(slot).is_some_and(|c| !c.is_empty())
    }

    fn member_count(&self) -> usize {
        (0..self.counting.len())
            .filter(|&s| self.is_member(s))
            .count()
    }
}

impl Log {
    /// Founds a new account with `key`'s device as its only member.
    ///
    /// The name goes through [`clean_device_name`](super::clean_device_name),
    /// so any string works; use
    /// [`validate_device_name`](super::validate_device_name) first to refuse
    /// bad names instead.
    pub fn genesis(key: &DeviceKey, device_name: &str, at_ms: u64) -> Log {
        let op = Op::Genesis {
            device: key.id(),
            name: clean_device_name(device_name),
        };
        // A cleaned name and no parents always make a well-formed genesis.
        Self::start(Entry::sign_unchecked(key, op, Vec::new(), at_ms))
    }

    /// Starts a log from a genesis entry received from elsewhere (for example
    /// when joining an account, before its other entries arrive).
    pub fn from_genesis(entry: Entry) -> Result<Log, Error> {
        match entry.op() {
            Op::Genesis { .. } => Ok(Self::start(entry)),
            _ => Err(Error::NotGenesis),
        }
    }

    fn start(genesis: Entry) -> Log {
        let hash = genesis.hash();
        let device = genesis.author();
        let mut log = Log {
            entries: vec![genesis],
            index: HashMap::from([(hash, 0)]),
            ancestors: vec![Bits::default()],
            heads: BTreeSet::from([hash]),
            slots: HashMap::from([(device, 0)]),
            devices: vec![device],
            meta: vec![Meta {
                kind: Kind::Genesis,
                author: 0,
                device: 0,
            }],
            state: Eval::default(),
            members: BTreeMap::new(),
            stale: true,
        };
        log.refresh();
        log
    }

    /// The account this log belongs to: the hash of its genesis entry.
    pub fn account_id(&self) -> AccountId {
        AccountId::from_genesis(self.entries[0].hash())
    }

    /// Signs and appends an entry adding `device`, with the current heads as
    /// parents, and returns it for sending to the account's other devices.
    ///
    /// `author` must be a member and `device` neither a member nor removed.
    /// The name goes through [`clean_device_name`](super::clean_device_name).
    pub fn add_device(
        &mut self,
        author: &DeviceKey,
        device: DeviceId,
        name: &str,
        at_ms: u64,
    ) -> Result<Entry, Error> {
        let op = Op::AddDevice {
            device,
            name: clean_device_name(name),
        };
        self.append(author, op, at_ms)
    }

    /// Signs and appends an entry removing `device` for good, and returns it
    /// for sending to the account's other devices.
    ///
    /// `author` must be a member (a device may remove itself) and `device` a
    /// member other than the last one.
    pub fn remove_device(
        &mut self,
        author: &DeviceKey,
        device: DeviceId,
        at_ms: u64,
    ) -> Result<Entry, Error> {
        self.append(author, Op::RemoveDevice { device }, at_ms)
    }

    fn append(&mut self, author: &DeviceKey, op: Op, at_ms: u64) -> Result<Entry, Error> {
        let parents = self.heads.iter().take(MAX_PARENTS).copied().collect();
        let entry = Entry::sign(author, op, parents, at_ms)?;
        self.insert(entry.clone(), false)?;
        Ok(entry)
    }

    /// Adds an entry received from elsewhere, if the [rules](super) accept it.
    ///
    /// Applying an entry the log already holds is a no-op
    /// ([`Applied::Duplicate`]). An entry whose parents are not all known yet
    /// gives [`Error::MissingParents`] listing them; apply those first. On any
    /// error the log is unchanged.
    pub fn apply(&mut self, entry: Entry) -> Result<Applied, Error> {
        if self.index.contains_key(&entry.hash()) {
            return Ok(Applied::Duplicate);
        }
        self.insert(entry, false)?;
        Ok(Applied::Added)
    }

    /// Applies every entry of `other` (another replica of the same account's
    /// log) that this log lacks, and returns how many were new.
    ///
    /// On error, the entries applied before the failing one stay applied.
    pub fn merge(&mut self, other: &Log) -> Result<usize, Error> {
        if other.account_id() != self.account_id() {
            return Err(Error::AccountMismatch {
                expected: self.account_id(),
                found: other.account_id(),
            });
        }
        let mut added = 0;
        // `other` keeps its entries in a causal order, so parents come first.
        for entry in &other.entries[1..] {
            if self.apply(entry.clone())? == Applied::Added {
                added += 1;
            }
        }
        Ok(added)
    }

    /// The current members, ordered by device id.
    pub fn members(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    /// The member record of `device`, if it is a member.
    pub fn member(&self, device: &DeviceId) -> Option<&Member> {
        self.members.get(device)
    }

    /// Whether `device` is currently a member.
    pub fn is_member(&self, device: &DeviceId) -> bool {
        self.members.contains_key(device)
    }

    /// Whether `device` has been removed (and so can never be a member again).
    pub fn is_removed(&self, device: &DeviceId) -> bool {
        self.slots
            .get(device)
            .is_some_and(|&s| self.state.is_removed(s))
    }

    /// The entries no other entry builds on, sorted. A new local entry names
    /// these as its parents.
    pub fn heads(&self) -> Vec<EntryHash> {
        self.heads.iter().copied().collect()
    }

    /// All entries, genesis first, each after its parents.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry with this hash, if the log holds it.
    pub fn get(&self, hash: &EntryHash) -> Option<&Entry> {
        self.index.get(hash).map(|&i| &self.entries[i])
    }

    /// Whether the log holds the entry with this hash.
    pub fn contains(&self, hash: &EntryHash) -> bool {
        self.index.contains_key(hash)
    }

    /// The canonical encoding: a version byte, then the entries in the log's
    /// order. At most [`MAX_LOG_BYTES`] long.
    pub fn encode(&self) -> Vec<u8> {
        let wires: Vec<WireEntry<'_>> = self.entries.iter().map(Entry::wire).collect();
        to_postcard(&wires, vec![LOG_FORMAT_VERSION])
    }

    /// Decodes a log and re-verifies all of it, as if each entry arrived
    /// through [`Log::apply`] in the encoded order: sizes, signatures, parents
    /// (which must come before the entry) and membership rules. Duplicates
    /// and trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<Log, Error> {
        if bytes.len() > MAX_LOG_BYTES {
            return Err(Error::TooLarge {
                len: bytes.len(),
                max: MAX_LOG_BYTES,
            });
        }
        let (&version, body) = bytes.split_first().ok_or(Error::Empty)?;
        if version != LOG_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion { version });
        }
        // Memory is bounded by the input: serde pre-allocates at most ~1 MiB
        // whatever length prefix the input claims, and grows only per element
        // actually decoded.
        let (wires, rest): (Vec<WireEntry<'_>>, _) = postcard::take_from_bytes(body)?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes { len: rest.len() });
        }
        if wires.len() > MAX_ENTRIES {
            return Err(Error::TooManyEntries { max: MAX_ENTRIES });
        }
        let mut wires = wires.into_iter();
        let genesis = wires.next().ok_or(Error::NotGenesis)?;
        let mut log = Log::from_genesis(Entry::from_wire(genesis)?)?;
        for wire in wires {
            let entry = Entry::from_wire(wire)?;
            if log.contains(&entry.hash()) {
                return Err(Error::DuplicateEntry { hash: entry.hash() });
            }
            log.insert(entry, true)?;
        }
        if log.stale {
            log.refresh();
        }
        Ok(log)
    }

    /// Checks `entry` against its causal past and appends it. With `defer`,
    /// a needed re-evaluation of the whole log may be left for later (marking
    /// the state stale), which spares decoding a re-evaluation per entry.
    fn insert(&mut self, entry: Entry, defer: bool) -> Result<(), Error> {
        if let Op::Genesis { .. } = entry.op() {
            return Err(Error::UnexpectedGenesis { hash: entry.hash() });
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(Error::TooManyEntries { max: MAX_ENTRIES });
        }
        let mut parents = Vec::with_capacity(entry.parents().len());
        let mut missing = Vec::new();
        for hash in entry.parents() {
            match self.index.get(hash) {
                Some(&i) => parents.push(i),
                None => missing.push(*hash),
            }
        }
        if !missing.is_empty() {
            return Err(Error::MissingParents { missing });
        }

        let mut ancestors = Bits::default();
        for &p in &parents {
            ancestors.union_with(&self.ancestors[p]);
            ancestors.insert(p);
        }
        // When the entry builds on every head, its causal past is the whole
        // log, whose state is already known. That is the common case.
        let sees_everything = entry.parents().len() == self.heads.len()
            && entry.parents().iter().all(|h| self.heads.contains(h));
        if sees_everything && self.stale {
            self.refresh();
        }
        let evaluated;
        let past = if sees_everything {
            &self.state
        } else {
            evaluated = self.evaluate(&ancestors);
            &evaluated
        };
        self.check_admissible(&entry, past)?;

        // Commit. An add never changes whether other entries count, so the
        // state can be updated in place. So can a removal that saw everything:
        // every add by the removed device precedes it and keeps counting. A
        // concurrent removal can cascade (the device's unseen adds stop
        // counting, then the adds of the devices they brought in), so it
        // re-evaluates.
        let (kind, device) = match entry.op() {
            Op::AddDevice { device, .. } => (Kind::Add, *device),
            Op::RemoveDevice { device } => (Kind::Remove, *device),
            Op::Genesis { device, .. } => (Kind::Genesis, *device),
        };
        let meta = Meta {
            kind,
            author: self.slot(entry.author()),
            device: self.slot(device),
        };
        let hash = entry.hash();
        for parent in entry.parents() {
            self.heads.remove(parent);
        }
        self.heads.insert(hash);
        self.index.insert(hash, self.entries.len());
        self.ancestors.push(ancestors);
        self.entries.push(entry);
        self.meta.push(meta);
        if self.stale {
            // Brought up to date by the next refresh.
        } else if sees_everything || kind == Kind::Add {
            self.advance(self.entries.len() - 1);
        } else if defer {
            self.stale = true;
        } else {
            self.refresh();
        }
        Ok(())
    }

    /// The slot of `device`, assigning a new one if needed.
    fn slot(&mut self, device: DeviceId) -> usize {
        let next = self.devices.len();
        let slot = *self.slots.entry(device).or_insert(next);
        if slot == next {
            self.devices.push(device);
        }
        slot
    }

    /// The acceptance rules, judged against the evaluation of the entry's
    /// causal past.
    fn check_admissible(&self, entry: &Entry, past: &Eval) -> Result<(), Error> {
        let slot = |device: &DeviceId| self.slots.get(device).copied();
        let member = |device: &DeviceId| slot(device).is_some_and(|s| past.is_member(s));
        let removed = |device: &DeviceId| slot(device).is_some_and(|s| past.is_removed(s));

        let author = entry.author();
        if !member(&author) {
            return Err(if removed(&author) {
                Error::AuthorRemoved { author }
            } else {
                Error::NotMember { author }
            });
        }
        match entry.op() {
            Op::Genesis { .. } => Err(Error::UnexpectedGenesis { hash: entry.hash() }),
            Op::AddDevice { device, .. } => {
                if removed(device) {
                    Err(Error::DeviceRemoved { device: *device })
                } else if member(device) {
                    Err(Error::AlreadyMember { device: *device })
                } else {
                    Ok(())
                }
            }
            Op::RemoveDevice { device } => {
                if removed(device) {
                    Err(Error::AlreadyRemoved { device: *device })
                } else if !member(device) {
                    Err(Error::UnknownDevice { device: *device })
                } else if past.member_count() == 1 {
                    Err(Error::LastMember { device: *device })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Applies the membership rules to the entries at the positions in
    /// `mask`, which must be closed under ancestry. Only the set matters, not
    /// the order entries arrived in.
    fn evaluate(&self, mask: &Bits) -> Eval {
        let mut eval = Eval::with_slots(self.devices.len());
        for i in mask.iter() {
            let meta = self.meta[i];
            if meta.kind == Kind::Remove {
                eval.removals[meta.device].push(i);
            }
        }
        // Positions are visited in a topological order, so whether an add's
        // author counts is settled before the add itself is looked at.
        for i in mask.iter() {
            let meta = self.meta[i];
            let counts = match meta.kind {
                Kind::Genesis => true,
                Kind::Add => {
                    let author_counts = eval.counting[meta.author]
                        .iter()
                        .any(|&a| self.ancestors[i].contains(a));
                    // Some device that removed the author had seen this add
                    // and let it stand.
                    let removals = &eval.removals[meta.author];
                    let before_a_removal = removals.is_empty()
                        || removals.iter().any(|&r| self.ancestors[r].contains(i));
                    author_counts && before_a_removal
                }
                Kind::Remove => false,
            };
            if counts {
                eval.counting[meta.device].push(i);
            }
        }
        eval
    }

    /// Updates the state (of all entries but the last) to include the last
    /// entry, when that entry cannot change whether any earlier one counts.
    fn advance(&mut self, i: usize) {
        let meta = self.meta[i];
        self.state.grow(self.devices.len());
        match meta.kind {
            Kind::Genesis => self.state.counting[meta.device].push(i),
            Kind::Add => {
                // No removal can follow a brand-new entry, so an add by an
                // already removed device does not count.
                let counts = !self.state.is_removed(meta.author)
                    && self.state.counting[meta.author]
                        .iter()
                        .any(|&a| self.ancestors[i].contains(a));
                if counts {
                    self.state.counting[meta.device].push(i);
                }
            }
            Kind::Remove => self.state.removals[meta.device].push(i),
        }
        self.update_member(meta.device);
    }

    /// Re-evaluates the whole log.
    fn refresh(&mut self) {
        self.state = self.evaluate(&Bits::full(self.entries.len()));
        self.members.clear();
        for slot in 0..self.devices.len() {
            self.update_member(slot);
        }
        self.stale = false;
    }

    /// Brings the member record of one device in line with the state.
    fn update_member(&mut self, slot: usize) {
        let device = self.devices[slot];
        if !self.state.is_member(slot) {
            self.members.remove(&device);
            return;
        }
        // The earliest counting add by (at_ms, hash) names the member, which
        // every replica computes alike.
        let first = self.state.counting[slot]
            .iter()
            .map(|&i| &self.entries[i])
            .min_by_key(|e| (e.at_ms(), e.hash()));
        if let Some(entry) = first
            && let Op::Genesis { device, name } | Op::AddDevice { device, name } = entry.op()
        {
            let member = Member {
                device: *device,
                name: name.clone(),
                added_at_ms: entry.at_ms(),
            };
            self.members.insert(*device, member);
        }
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("account", &self.account_id())
            .field("entries", &self.entries.len())
            .field("heads", &self.heads)
            .field("members", &self.members.keys())
            .finish()
    }
}

/// A set of entry positions.
#[derive(Debug, Clone, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn full(len: usize) -> Bits {
        let mut words = vec![u64::MAX; len / 64];
        if !len.is_multiple_of(64) {
            words.push((1u64 << (len % 64)) - 1);
        }
        Bits(words)
    }

    fn insert(&mut self, i: usize) {
        let word = i / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (i % 64);
    }

    fn contains(&self, i: usize) -> bool {
        self.0
            .get(i / 64)
            .is_some_and(|word| word >> (i % 64) & 1 == 1)
    }

    fn union_with(&mut self, other: &Bits) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    /// Positions in ascending order.
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(w * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::MAX_DEVICE_NAME_LEN;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn keys(n: usize) -> Vec<DeviceKey> {
        let mut rng = StdRng::seed_from_u64(99);
        (0..n).map(|_| DeviceKey::generate(&mut rng)).collect()
    }

    fn ids(log: &Log) -> Vec<DeviceId> {
        log.members().iter().map(|m| m.device).collect()
    }

    fn sorted(mut v: Vec<DeviceId>) -> Vec<DeviceId> {
        v.sort();
        v
    }

    #[test]
    fn genesis_founds_an_account_with_one_member() {
        let k = keys(1);
        let log = Log::genesis(&k[0], "laptop", 1000);
        assert_eq!(
            log.members(),
            vec![Member {
                device: k[0].id(),
                name: "laptop".into(),
                added_at_ms: 1000
            }]
        );
        assert_eq!(log.account_id().genesis_hash(), log.entries()[0].hash());
        assert_eq!(log.heads(), vec![log.entries()[0].hash()]);
        let text = log.account_id().to_string();
        assert_eq!(text.parse::<AccountId>().unwrap(), log.account_id());
        assert_ne!(
            Log::genesis(&k[0], "laptop", 1001).account_id(),
            log.account_id(),
            "a second genesis is a second account"
        );
    }

    #[test]
    fn genesis_cleans_the_name() {
        let k = keys(1);
        let log = Log::genesis(&k[0], &"\u{7}x".repeat(100), 0);
        let name = &log.members()[0].name;
        assert!(name.len() <= MAX_DEVICE_NAME_LEN);
        assert!(!name.chars().any(char::is_control));
        let decoded = Log::decode(&log.encode()).unwrap();
        assert_eq!(decoded.members(), log.members());
    }

    #[test]
    fn add_and_remove_change_members() {
        let k = keys(3);
        let mut log = Log::genesis(&k[0], "a", 0);
        let add = log.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        assert_eq!(add.parents(), &[log.entries()[0].hash()]);
        assert_eq!(log.heads(), vec![add.hash()]);
        assert!(log.is_member(&k[1].id()));
        // The new member can add others.
        log.add_device(&k[1], k[2].id(), "c", 2).unwrap();
        assert_eq!(ids(&log), sorted(vec![k[0].id(), k[1].id(), k[2].id()]));
        assert_eq!(log.member(&k[2].id()).unwrap().name, "c");

        log.remove_device(&k[2], k[0].id(), 3).unwrap();
        assert!(!log.is_member(&k[0].id()));
        assert!(log.is_removed(&k[0].id()));
        assert_eq!(ids(&log), sorted(vec![k[1].id(), k[2].id()]));
    }

    #[test]
    fn local_operations_refuse_invalid_changes_and_leave_the_log_unchanged() {
        let k = keys(4);
        let mut log = Log::genesis(&k[0], "a", 0);
        let before = log.encode();
        assert!(matches!(
            log.add_device(&k[1], k[2].id(), "x", 1),
            Err(Error::NotMember { author }) if author == k[1].id()
        ));
        assert!(matches!(
            log.add_device(&k[0], k[0].id(), "x", 1),
            Err(Error::AlreadyMember { .. })
        ));
        assert!(matches!(
            log.remove_device(&k[0], k[3].id(), 1),
            Err(Error::UnknownDevice { .. })
        ));
        assert!(matches!(
            log.remove_device(&k[0], k[0].id(), 1),
            Err(Error::LastMember { .. })
        ));
        assert_eq!(log.encode(), before);

        log.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        log.remove_device(&k[0], k[1].id(), 2).unwrap();
        assert!(matches!(
            log.add_device(&k[0], k[1].id(), "b", 3),
            Err(Error::DeviceRemoved { .. })
        ));
        assert!(matches!(
            log.remove_device(&k[0], k[1].id(), 3),
            Err(Error::AlreadyRemoved { .. })
        ));
        assert!(matches!(
            log.add_device(&k[1], k[2].id(), "c", 3),
            Err(Error::AuthorRemoved { .. })
        ));
    }

    #[test]
    fn a_device_may_remove_itself() {
        let k = keys(2);
        let mut log = Log::genesis(&k[0], "a", 0);
        log.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        log.remove_device(&k[1], k[1].id(), 2).unwrap();
        assert_eq!(ids(&log), vec![k[0].id()]);
    }

    #[test]
    fn apply_accepts_entries_from_another_replica_and_ignores_duplicates() {
        let k = keys(2);
        let mut a = Log::genesis(&k[0], "a", 0);
        let mut b = Log::from_genesis(a.entries()[0].clone()).unwrap();
        let add = a.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        assert_eq!(b.apply(add.clone()).unwrap(), Applied::Added);
        assert_eq!(b.apply(add).unwrap(), Applied::Duplicate);
        assert_eq!(b.members(), a.members());
        assert_eq!(b.heads(), a.heads());
        assert_eq!(b.encode(), a.encode());
    }

    #[test]
    fn apply_reports_missing_parents() {
        let k = keys(3);
        let mut a = Log::genesis(&k[0], "a", 0);
        let mut b = Log::from_genesis(a.entries()[0].clone()).unwrap();
        let first = a.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        let second = a.add_device(&k[0], k[2].id(), "c", 2).unwrap();
        match b.apply(second.clone()) {
            Err(Error::MissingParents { missing }) => assert_eq!(missing, vec![first.hash()]),
            other => panic!("expected missing parents, got {other:?}"),
        }
        assert_eq!(b.entries().len(), 1);
        b.apply(first).unwrap();
        b.apply(second).unwrap();
        assert_eq!(b.members(), a.members());
    }

    #[test]
    fn entry_from_a_non_member_is_refused() {
        let k = keys(3);
        let mut log = Log::genesis(&k[0], "a", 0);
        let forged = Entry::sign(
            &k[1],
            Op::AddDevice {
                device: k[2].id(),
                name: "evil".into(),
            },
            log.heads(),
            1,
        )
        .unwrap();
        assert!(matches!(
            log.apply(forged),
            Err(Error::NotMember { author }) if author == k[1].id()
        ));
    }

    #[test]
    fn entry_from_another_account_is_refused() {
        let k = keys(2);
        let mut a = Log::genesis(&k[0], "a", 0);
        let b = Log::genesis(&k[1], "b", 0);
        assert!(matches!(
            a.apply(b.entries()[0].clone()),
            Err(Error::UnexpectedGenesis { .. })
        ));
        assert!(matches!(a.merge(&b), Err(Error::AccountMismatch { .. })));
        assert!(matches!(
            Log::from_genesis(a.clone().add_device(&k[0], k[1].id(), "b", 1).unwrap()),
            Err(Error::NotGenesis)
        ));
    }

    /// The removed device had not yet seen its removal and added another
    /// device; once both sides merge, neither it nor its newcomer is a member,
    /// and the newcomer's own additions do not count either.
    #[test]
    fn adds_by_a_device_removed_concurrently_do_not_count() {
        let k = keys(5);
        let mut a = Log::genesis(&k[0], "a", 0);
        a.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        let mut b = a.clone();

        a.remove_device(&k[0], k[1].id(), 2).unwrap();
        b.add_device(&k[1], k[2].id(), "c", 2).unwrap();
        b.add_device(&k[2], k[3].id(), "d", 3).unwrap();
        assert_eq!(b.members().len(), 4);

        let mut merged_a = a.clone();
        merged_a.merge(&b).unwrap();
        let mut merged_b = b.clone();
        merged_b.merge(&a).unwrap();
        assert_eq!(ids(&merged_a), vec![k[0].id()]);
        assert_eq!(merged_a.members(), merged_b.members());
        assert_eq!(merged_a.heads().len(), 2);

        // Nor can the newcomers write anything after seeing the merge.
        assert!(matches!(
            merged_a.add_device(&k[2], k[4].id(), "e", 5),
            Err(Error::NotMember { .. })
        ));
        assert!(matches!(
            merged_a.add_device(&k[1], k[4].id(), "e", 5),
            Err(Error::AuthorRemoved { .. })
        ));
        // The next local entry merges both branches.
        let e = merged_a.add_device(&k[0], k[4].id(), "e", 6).unwrap();
        assert_eq!(e.parents().len(), 2);
        assert_eq!(merged_a.heads(), vec![e.hash()]);
    }

    #[test]
    fn adds_made_before_a_removal_still_count() {
        let k = keys(3);
        let mut log = Log::genesis(&k[0], "a", 0);
        log.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        log.add_device(&k[1], k[2].id(), "c", 2).unwrap();
        log.remove_device(&k[0], k[1].id(), 3).unwrap();
        assert_eq!(ids(&log), sorted(vec![k[0].id(), k[2].id()]));
    }

    /// Two partitions each add a device that then retires the founder. Each
    /// add was seen by a removal of the founder, so both newcomers stay.
    #[test]
    fn adds_seen_by_one_removal_count_even_if_another_missed_them() {
        let k = keys(3);
        let base = Log::genesis(&k[0], "a", 0);
        let mut x = base.clone();
        let mut y = base;
        x.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        x.remove_device(&k[1], k[0].id(), 2).unwrap();
        y.add_device(&k[0], k[2].id(), "c", 1).unwrap();
        y.remove_device(&k[2], k[0].id(), 2).unwrap();
        x.merge(&y).unwrap();
        assert_eq!(ids(&x), sorted(vec![k[1].id(), k[2].id()]));
        assert!(x.is_removed(&k[0].id()));
    }

    #[test]
    fn concurrent_mutual_removal_removes_both() {
        let k = keys(3);
        let mut a = Log::genesis(&k[0], "a", 0);
        a.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        a.add_device(&k[0], k[2].id(), "c", 2).unwrap();
        let mut b = a.clone();
        a.remove_device(&k[0], k[1].id(), 3).unwrap();
        b.remove_device(&k[1], k[0].id(), 3).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(ids(&a), vec![k[2].id()]);
    }

    #[test]
    fn removal_wins_over_a_concurrent_duplicate_add() {
        let k = keys(3);
        let mut a = Log::genesis(&k[0], "a", 0);
        a.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        let mut b = a.clone();
        // Both add c concurrently, then a removes its own view of c.
        a.add_device(&k[0], k[2].id(), "c-from-a", 5).unwrap();
        b.add_device(&k[1], k[2].id(), "c-from-b", 4).unwrap();
        let mut both = a.clone();
        both.merge(&b).unwrap();
        // Concurrent adds of one device: the earliest add names it.
        assert_eq!(both.member(&k[2].id()).unwrap().name, "c-from-b");
        assert_eq!(both.member(&k[2].id()).unwrap().added_at_ms, 4);
        a.remove_device(&k[0], k[2].id(), 6).unwrap();
        a.merge(&b).unwrap();
        assert!(!a.is_member(&k[2].id()));
    }

    #[test]
    fn encode_decode_round_trips() {
        let k = keys(4);
        let mut a = Log::genesis(&k[0], "a", 0);
        a.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        let mut b = a.clone();
        a.add_device(&k[0], k[2].id(), "c", 2).unwrap();
        b.add_device(&k[1], k[3].id(), "d", 2).unwrap();
        a.merge(&b).unwrap();
        a.remove_device(&k[1], k[0].id(), 3).unwrap();

        let bytes = a.encode();
        let back = Log::decode(&bytes).unwrap();
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.members(), a.members());
        assert_eq!(back.heads(), a.heads());
        assert_eq!(back.account_id(), a.account_id());
        assert!(back.is_removed(&k[0].id()));
    }

    #[test]
    fn decode_refuses_malformed_logs() {
        let k = keys(2);
        let mut log = Log::genesis(&k[0], "a", 0);
        log.add_device(&k[0], k[1].id(), "b", 1).unwrap();
        let bytes = log.encode();

        assert!(matches!(Log::decode(&[]), Err(Error::Empty)));
        assert!(matches!(
            Log::decode(&[9]),
            Err(Error::UnsupportedVersion { version: 9 })
        ));
        assert!(matches!(Log::decode(&[1, 0]), Err(Error::NotGenesis)));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Log::decode(&trailing),
            Err(Error::TrailingBytes { len: 1 })
        ));
        assert!(matches!(
            Log::decode(&vec![1; MAX_LOG_BYTES + 1]),
            Err(Error::TooLarge { .. })
        ));
        // A length prefix claiming 2^32 entries fails at the end of input.
        assert!(matches!(
            Log::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(Error::Encoding(_))
        ));

        // Entries out of causal order.
        let wires: Vec<WireEntry<'_>> = [&log.entries()[1], &log.entries()[0]]
            .into_iter()
            .map(Entry::wire)
            .collect();
        let swapped = to_postcard(&wires, vec![LOG_FORMAT_VERSION]);
        assert!(matches!(Log::decode(&swapped), Err(Error::NotGenesis)));

        let g = log.entries()[0].clone();
        let wires: Vec<WireEntry<'_>> = [&g, &log.entries()[1], &log.entries()[1]]
            .into_iter()
            .map(Entry::wire)
            .collect();
        let dup = to_postcard(&wires, vec![LOG_FORMAT_VERSION]);
        assert!(matches!(
            Log::decode(&dup),
            Err(Error::DuplicateEntry { .. })
        ));
    }

    #[test]
    fn decode_refuses_an_entry_by_a_non_member() {
        let k = keys(3);
        let log = Log::genesis(&k[0], "a", 0);
        let forged = Entry::sign(
            &k[1],
            Op::AddDevice {
                device: k[2].id(),
                name: "x".into(),
            },
            log.heads(),
            1,
        )
        .unwrap();
        let wires = vec![log.entries()[0].wire(), forged.wire()];
        let bytes = to_postcard(&wires, vec![LOG_FORMAT_VERSION]);
        assert!(matches!(Log::decode(&bytes), Err(Error::NotMember { .. })));
    }

    #[test]
    fn log_stops_at_max_entries() {
        let k = keys(1);
        let mut rng = StdRng::seed_from_u64(5);
        let mut log = Log::genesis(&k[0], "a", 0);
        let mut t = 0;
        while log.entries().len() < MAX_ENTRIES {
            t += 1;
            let device = DeviceKey::generate(&mut rng).id();
            log.add_device(&k[0], device, "d", t).unwrap();
        }
        let bytes = log.encode();
        assert!(bytes.len() <= MAX_LOG_BYTES);
        let device = DeviceKey::generate(&mut rng).id();
        assert!(matches!(
            log.add_device(&k[0], device, "d", t + 1),
            Err(Error::TooManyEntries { max: MAX_ENTRIES })
        ));
        let decoded = Log::decode(&bytes).unwrap();
        assert_eq!(decoded.members().len(), MAX_ENTRIES);
    }

    #[test]
    fn more_heads_than_max_parents_are_merged_over_several_entries() {
        let k = keys(1);
        let mut rng = StdRng::seed_from_u64(6);
        let base = Log::genesis(&k[0], "a", 0);
        let mut log = base.clone();
        // MAX_PARENTS + 3 concurrent branches, each made on a copy of base.
        for t in 0..(MAX_PARENTS as u64 + 3) {
            let mut branch = base.clone();
            branch
                .add_device(&k[0], DeviceKey::generate(&mut rng).id(), "d", t)
                .unwrap();
            log.merge(&branch).unwrap();
        }
        assert_eq!(log.heads().len(), MAX_PARENTS + 3);
        let device = DeviceKey::generate(&mut rng).id();
        let e = log.add_device(&k[0], device, "d", 100).unwrap();
        assert_eq!(e.parents().len(), MAX_PARENTS);
        assert_eq!(log.heads().len(), 4);
        let back = Log::decode(&log.encode()).unwrap();
        assert_eq!(back.members(), log.members());
    }

    #[test]
    fn bits_behave_like_a_set() {
        let mut b = Bits::default();
        for i in [0, 5, 63, 64, 130] {
            b.insert(i);
        }
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 5, 63, 64, 130]);
        assert!(b.contains(130) && !b.contains(131) && !b.contains(10_000));
        let full = Bits::full(130);
        assert_eq!(full.iter().count(), 130);
        assert!(full.contains(129) && !full.contains(130));
        assert_eq!(Bits::full(64).iter().count(), 64);
        let mut u = Bits::default();
        u.insert(3);
        u.union_with(&b);
        assert_eq!(u.iter().collect::<Vec<_>>(), vec![0, 3, 5, 63, 64, 130]);
    }

    impl Log {
        /// Recomputes everything the log caches and compares.
        fn assert_invariants(&self) {
            assert!(!self.stale);
            assert_eq!(self.state, self.evaluate(&Bits::full(self.entries.len())));
            let mut fresh = self.clone();
            fresh.refresh();
            assert_eq!(fresh.members, self.members);
            assert_eq!(self.devices.len(), self.slots.len());
            for (slot, device) in self.devices.iter().enumerate() {
                assert_eq!(self.slots[device], slot);
            }
            for (entry, meta) in self.entries.iter().zip(&self.meta) {
                assert_eq!(self.devices[meta.author], entry.author());
                assert_eq!(self.devices[meta.device], entry.op().device());
            }
            let mut referenced = BTreeSet::new();
            for (i, entry) in self.entries.iter().enumerate() {
                assert_eq!(self.index[&entry.hash()], i);
                let mut expected = Bits::default();
                for parent in entry.parents() {
                    let p = self.index[parent];
                    assert!(p < i, "parent after child");
                    expected.union_with(&self.ancestors[p]);
                    expected.insert(p);
                    referenced.insert(*parent);
                }
                assert_eq!(
                    self.ancestors[i].iter().collect::<Vec<_>>(),
                    expected.iter().collect::<Vec<_>>()
                );
            }
            let heads: BTreeSet<EntryHash> = self
                .entries
                .iter()
                .map(Entry::hash)
                .filter(|h| !referenced.contains(h))
                .collect();
            assert_eq!(self.heads, heads);
        }
    }

    #[derive(Debug, Clone)]
    enum Action {
        Add {
            replica: usize,
            author: Index,
            device: usize,
        },
        Remove {
            replica: usize,
            author: Index,
            device: Index,
        },
        Sync {
            from: usize,
            to: usize,
        },
    }

    const REPLICAS: usize = 3;
    const DEVICES: usize = 6;

    fn action() -> impl Strategy<Value = Action> {
        let r = 0..REPLICAS;
        prop_oneof![
            4 => (r.clone(), any::<Index>(), 0..DEVICES)
                .prop_map(|(replica, author, device)| Action::Add { replica, author, device }),
            2 => (r.clone(), any::<Index>(), any::<Index>())
                .prop_map(|(replica, author, device)| Action::Remove { replica, author, device }),
            3 => (r.clone(), r).prop_map(|(from, to)| Action::Sync { from, to }),
        ]
    }

    /// Picks a device: mostly a current member of `log`, sometimes any device
    /// (so refused operations are exercised too).
    fn pick(log: &Log, k: &[DeviceKey], index: &Index) -> usize {
        let members = log.members();
        let n = members.len() + 1;
        let i = index.index(n);
        match members.get(i) {
            Some(m) => k.iter().position(|key| key.id() == m.device).unwrap(),
            None => index.index(k.len()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// The in-place state updates and cached DAG data agree with a full
        /// recomputation after every step, on every replica.
        #[test]
        fn cached_state_matches_full_evaluation(actions in proptest::collection::vec(action(), 8..60)) {
            let k = keys(DEVICES);
            let base = Log::genesis(&k[0], "d0", 0);
            let mut replicas = vec![base; REPLICAS];
            for (t, action) in actions.into_iter().enumerate() {
                let t = t as u64 + 1;
                match action {
                    Action::Add { replica, author, device } => {
                        let author = pick(&replicas[replica], &k, &author);
                        let _ = replicas[replica].add_device(&k[author], k[device].id(), "d", t);
                    }
                    Action::Remove { replica, author, device } => {
                        let author = pick(&replicas[replica], &k, &author);
                        let device = pick(&replicas[replica], &k, &device);
                        let _ = replicas[replica].remove_device(&k[author], k[device].id(), t);
                    }
                    Action::Sync { from, to } => {
                        let other = replicas[from].clone();
                        replicas[to].merge(&other).unwrap();
                    }
                }
                for log in &replicas {
                    log.assert_invariants();
                }
            }
        }
    }
}
