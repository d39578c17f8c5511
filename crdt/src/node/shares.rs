//! Shares: one account's collection shared with chosen contacts, read or
//! write, and taken back; every replica enforces who may write.
//!
//! # The model
//!
//! A share is a collection of its **owner** account plus its access list
//! ([`Acl`], `hearth_crypto::acl`): a signed log of grants and revocations
//! that only the owner's devices write. The list's id (the hash of its
//! create entry) is the share's id. The owner grants a contact `read` or
//! `write` ([`Node::share`]); granting again changes the level;
//! [`Node::unshare`] revokes. Each change to the list is offered to every
//! account it names ([`Request::Offer`] on `/hearth/share/1`), with the
//! collection's shard count.
//!
//! The recipient holds the offer until someone on its account accepts it
//! under a local name ([`Node::accept_share`]; by default
//! `shared.<owner>.<collection>`) or declines it. Nothing syncs before
//! acceptance; the answer goes back to the owner ([`Request::Answer`]).
//! The local collection is a new one: accepting never mixes the share with
//! the recipient's own collections, and the owner can never reach those.
//!
//! # Where shares live
//!
//! In the reserved collection [`COLLECTION`], one record per share (keyed by
//! its id): the access list (the union of every version seen), the local
//! name, each member's answer as known here, and the accounts a message is
//! still owed to. So every device of the account knows every share, and an
//! access list grown on one device reaches the others with the ordinary
//! sync sessions.
//!
//! # Sessions with a contact's devices
//!
//! A device of a contact gets a sync session only while the two accounts
//! share something both have accepted (its [`Scope`]): each side offers the
//! shares it is active in whose list names the other account (or whose
//! owner it is), under the share's id as the wire name, sends each list
//! with the membership logs of the accounts it names ([`Credentials`], in a
//! [`crate::sync::Frame::Acl`]) before any data, and syncs only what both
//! list. Every change to shares re-announces the scope on every open
//! session, lists first; a session whose scope became empty closes. So a
//! revocation reaches every member before anything written after it, and
//! nothing is sent to a revoked account from the moment of the commit.
//!
//! # Who may write
//!
//! Every local change to a shared collection carries, as its Automerge
//! message, the list heads it was written under ([`note_of`]), and its
//! actor is its author device. A peer's change is applied only if its
//! author is a device of the owner account, or of an account that held
//! `write` at the list state the change names ([`Node::gate`]), that
//! account's devices read from its log (a contact's own, or the one the
//! owner sent beside the list for a fellow member); otherwise
//! the whole message is refused and the session closes. A reader's own
//! write is refused locally ([`ShareError::ReadOnly`]).
//!
//! Every change is also signed by its author device
//! ([`crate::collection::authorship`]); the signature travels beside the
//! change, from replica to replica, so a member relaying changes cannot
//! forge another member's (or the owner's) actor. The owner's devices
//! endorse their own account's unsigned changes (those written before the
//! collection was shared). A change must name a list state that includes
//! every state its dependencies name, so a writer cannot build on what was
//! written after its revocation while claiming an older state. A change
//! naming a state this replica lacks is not refused: the session holds its
//! message back until the list arrives ([`crate::sync::Limits::max_waiting`]).
//!
//! What this cannot catch: a revoked writer's change written on a fork of
//! the past, concurrent with its revocation (it names an old state and
//! depends only on old changes). Every replica accepts it alike, so all
//! converge; a change whose dependency has not arrived yet is judged
//! without that dependency's state (Automerge queues it until it can apply).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hearth_crypto::acl::{self, Acl, AclState, Level};
use hearth_crypto::card::Card;
use hearth_crypto::identity::DeviceId;
use hearth_crypto::membership::{AccountId, EntryHash, Log};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::contacts::{Purpose, Reply, Request};
use super::data::{check_doctype, is_reserved};
use super::{Error, Millis, Node, Output, Outputs};
use crate::collection::{Candidate, Collection, PutMode, Refusal, Signer};
use crate::sync::Gate;

/// The reserved collection that holds the account's shares.
pub const COLLECTION: &str = "hearth.shares";

/// Prefix of the note a shared collection's changes carry.
const NOTE_PREFIX: &str = "hearth-acl:";

/// A member's answer to an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    /// Not answered yet.
    Offered,
    /// Accepted: the share syncs.
    Accepted,
    /// Declined.
    Declined,
}

/// Where a member of a share stands, as `hearth shares` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// Offered, not answered yet.
    Offered,
    /// Accepted; it syncs.
    Active,
    /// Declined.
    Declined,
    /// Revoked by the owner.
    Revoked,
}

/// One share, as this account knows it.
#[derive(Debug, Clone)]
pub struct Share {
    /// Its access list (every version seen, merged).
    pub acl: Arc<Acl>,
    /// Its shard count on the owner.
    pub shards: u16,
    /// The collection's name on this account: the owner's own, or the name
    /// the recipient accepted it under.
    pub local: Option<String>,
    /// Each member's answer as known here (the recipient knows its own).
    pub answers: BTreeMap<AccountId, Answer>,
    /// Accounts a message about it is still owed to.
    pub owed: BTreeSet<AccountId>,
    /// Membership logs of accounts the list names that are not contacts of
    /// this one, as the owner's devices sent them: what checks a fellow
    /// member's changes relayed by the owner.
    pub logs: BTreeMap<AccountId, Arc<Log>>,
    /// Contact cards of those same accounts, as the owner's devices (or a
    /// fellow member) passed them on: where a fellow member's devices
    /// listen, so members sync with each other without the owner.
    pub cards: BTreeMap<AccountId, Arc<Card>>,
    /// When the record last changed.
    pub updated_at_ms: Millis,
}

impl Share {
    /// Its id: the id of its access list.
    pub fn id(&self) -> EntryHash {
        self.acl.id()
    }

    /// The owner account.
    pub fn owner(&self) -> AccountId {
        self.acl.owner()
    }

    /// Where `account` stands, judged by `state` (the list's state now).
    pub fn standing(&self, account: &AccountId, state: &AclState) -> Standing {
        if state.is_revoked(account) {
            return Standing::Revoked;
        }
        match self.answers.get(account) {
            Some(Answer::Accepted) => Standing::Active,
            Some(Answer::Declined) => Standing::Declined,
            _ => Standing::Offered,
        }
    }

    fn to_record(&self) -> Value {
        let answers: BTreeMap<String, Answer> = self
            .answers
            .iter()
            .map(|(a, s)| (a.to_string(), *s))
            .collect();
        json!({
            "acl": data_encoding::BASE64.encode(&self.acl.encode()),
            "shards": self.shards,
            "local": self.local,
            "answers": answers,
            // A map, not a list: two devices that each add or remove an
            // account concurrently keep both edits (a list is replaced
            // whole, and one of the two would be lost).
            "owed": self
                .owed
                .iter()
                .map(|a| (a.to_string(), true))
                .collect::<BTreeMap<_, _>>(),
            "logs": self
                .logs
                .iter()
                .map(|(a, l)| (a.to_string(), data_encoding::BASE64.encode(&l.encode())))
                .collect::<BTreeMap<_, _>>(),
            "cards": self
                .cards
                .iter()
                .map(|(a, c)| (a.to_string(), data_encoding::BASE64.encode(&c.to_bytes())))
                .collect::<BTreeMap<_, _>>(),
            "updated_at_ms": self.updated_at_ms,
        })
    }

    /// Reads a stored record back against the owner's log; `None` for one
    /// that does not verify. What `previous` (the share as last read)
    /// already holds in the same encoding is taken from it, not verified
    /// again.
    fn from_record(
        id: &str,
        record: &Value,
        owner_log: &Log,
        previous: Option<&Share>,
    ) -> Option<Share> {
        let text = record.get("acl")?.as_str()?;
        let acl = match previous {
            Some(p) if data_encoding::BASE64.encode(&p.acl.encode()) == text => Arc::clone(&p.acl),
            _ => {
                let bytes = data_encoding::BASE64.decode(text.as_bytes()).ok()?;
                Arc::new(Acl::decode(&bytes, owner_log).ok()?)
            }
        };
        if acl.id().to_string() != id {
            return None;
        }
        let answers = record
            .get("answers")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        Some((k.parse().ok()?, serde_json::from_value(v.clone()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Records written before `owed` became a map hold a list.
        let owed = match record.get("owed") {
            Some(Value::Object(m)) => m.keys().filter_map(|k| k.parse().ok()).collect(),
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect(),
            _ => BTreeSet::new(),
        };
        // A stored log that no longer verifies, or whose account is not the
        // one it is filed under, is dropped; the owner sends it again.
        let logs = record
            .get("logs")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        let account: AccountId = k.parse().ok()?;
                        let text = v.as_str()?;
                        if let Some(held) = previous.and_then(|p| p.logs.get(&account))
                            && data_encoding::BASE64.encode(&held.encode()) == text
                        {
                            return Some((account, Arc::clone(held)));
                        }
                        let bytes = data_encoding::BASE64.decode(text.as_bytes()).ok()?;
                        let log = Log::decode(&bytes).ok()?;
                        (log.account_id() == account).then(|| (account, Arc::new(log)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cards = record
            .get("cards")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        let account: AccountId = k.parse().ok()?;
                        let bytes = data_encoding::BASE64.decode(v.as_str()?.as_bytes()).ok()?;
                        if let Some(held) = previous.and_then(|p| p.cards.get(&account))
                            && held.to_bytes() == bytes
                        {
                            return Some((account, Arc::clone(held)));
                        }
                        let card = Card::from_bytes(&bytes).ok()?;
                        (card.account() == account).then(|| (account, Arc::new(card)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Share {
            acl,
            shards: record
                .get("shards")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|&n| n > 0)?,
            local: record
                .get("local")
                .and_then(Value::as_str)
                .map(String::from),
            answers,
            owed,
            logs,
            cards,
            updated_at_ms: record
                .get("updated_at_ms")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        })
    }
}

impl Share {
    /// Joins a concurrent version of the same share record into this one
    /// (two devices of the account stored one offer at once: see
    /// [`crate::collection::Collection::versions`]). What is learnt is
    /// kept from both: every list entry, log and card, every account still
    /// owed, and an answer over no answer. Where both say something, this
    /// version (the one the collection shows) wins.
    fn join(&mut self, other: Share, owner_log: &Log) {
        let mut acl = (*self.acl).clone();
        if acl
            .merge(&other.acl, owner_log)
            .is_ok_and(|added| added > 0)
        {
            self.acl = Arc::new(acl);
        }
        if self.local.is_none() {
            self.local = other.local;
        }
        for (account, answer) in other.answers {
            let mine = self.answers.entry(account).or_insert(answer);
            if *mine == Answer::Offered {
                *mine = answer;
            }
        }
        self.owed.extend(other.owed);
        for (account, log) in other.logs {
            self.logs.entry(account).or_insert(log);
        }
        for (account, card) in other.cards {
            self.cards.entry(account).or_insert(card);
        }
        self.updated_at_ms = self.updated_at_ms.max(other.updated_at_ms);
    }
}

/// The collections a contact's device may sync with this one, by wire name
/// (the share id): each with its local name and its encoded access list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Scope {
    pub(super) shares: BTreeMap<String, (String, u16, Vec<u8>)>,
}

impl Scope {
    pub(super) fn local_of(&self, wire: &str) -> Option<&str> {
        self.shares.get(wire).map(|(l, _, _)| l.as_str())
    }

    pub(super) fn wire_of(&self, local: &str) -> Option<&str> {
        self.shares
            .iter()
            .find(|(_, (l, _, _))| l == local)
            .map(|(w, _)| w.as_str())
    }
}

/// The node's share state: a cache of the parsed records.
#[derive(Debug, Default)]
pub(super) struct Shares {
    known: BTreeMap<EntryHash, Share>,
    /// Per share, a digest of the stored versions `known` was parsed from:
    /// a record read again unchanged is not verified again.
    parsed: BTreeMap<EntryHash, [u8; 32]>,
    /// Per share, digests of credentials already taken in whole (at most
    /// [`MAX_CREDENTIALS_SEEN`]): peers send the same ones again on every
    /// session start, and taking them again changes nothing (lists, logs
    /// and cards only grow), so they are not verified again.
    credentials_seen: BTreeMap<EntryHash, BTreeSet<[u8; 32]>>,
    /// Credentials that came before their share's offer, by share, kept
    /// (at most `[contacts] max_early_credentials` in all) and taken once the offer
    /// makes the share known: the peer does not send them again on the
    /// session that stays open.
    early: BTreeMap<EntryHash, Vec<Vec<u8>>>,
    /// Scopes and gates as last computed, and the state they were computed
    /// at.
    access: Access,
}

/// How many credential digests are remembered per share before the set
/// starts again.
const MAX_CREDENTIALS_SEEN: usize = 64;

/// Gates of shared collections, by local name.
type GateSet = Arc<BTreeMap<String, Gate>>;

/// What sessions with other accounts' devices need on every frame (each
/// one's [`Scope`] and the gates of the shared collections), computed once
/// per state of what decides them: the parsed share and contact records
/// (every change to them calls [`Node::forget_access`]; their collections'
/// heads are checked too) and this account's log (its heads).
#[derive(Default)]
struct Access {
    key: Vec<automerge::ChangeHash>,
    log: Vec<EntryHash>,
    scopes: BTreeMap<AccountId, Option<Arc<Scope>>>,
    gates: Option<GateSet>,
    member_gates: Option<GateSet>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("scopes", &self.scopes.len())
            .field("gates", &self.gates.as_ref().map(|g| g.len()))
            .finish_non_exhaustive()
    }
}

/// Why a share operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// No share has this id.
    #[error("no share {0:?}; `hearth shares` lists them")]
    Unknown(String),
    /// An id prefix that fits several shares.
    #[error("{0:?} fits several shares; give more of the id")]
    Ambiguous(String),
    /// Shares go to established contacts only.
    #[error("{0} is not an established contact yet: both sides must add each other's card first")]
    NotEstablished(String),
    /// Only the owner's devices grant and revoke.
    #[error("{0} is shared with this account by {1}; only its owner can share it further")]
    NotOwner(String, String),
    /// Nothing to revoke.
    #[error("{0} is not shared with {1}")]
    NotShared(String, String),
    /// The share was offered by this account itself.
    #[error("this account owns that share; only its recipients accept or decline it")]
    Own,
    /// The owner revoked this account's access.
    #[error("the owner revoked this account's access to that share")]
    Revoked,
    /// The local name is taken.
    #[error(
        "a collection named {0:?} exists already; a share never mixes with other data, so pick another --as"
    )]
    NameInUse(String),
    /// A write to a shared collection this account may only read.
    #[error("{collection} is shared with this account read-only by {owner}; it cannot be written")]
    ReadOnly {
        /// The local collection.
        collection: String,
        /// The owner, as this account names it.
        owner: String,
    },
    /// Too many offers wait for an answer.
    #[error(
        "this account holds {0} unanswered share offers already, the most it keeps ([contacts] max_offers)"
    )]
    TooManyOffers(usize),
    /// The access list refused an entry.
    #[error(transparent)]
    Acl(#[from] acl::Error),
}

/// The note a change written under `acl`'s current heads carries.
pub fn note_of(acl: &Acl) -> String {
    let heads: Vec<String> = acl.heads().iter().map(ToString::to_string).collect();
    format!("{NOTE_PREFIX}{}", heads.join(","))
}

/// The list heads a change's note names, if it names any.
pub fn heads_of_note(note: &str) -> Option<Vec<EntryHash>> {
    let list = note.strip_prefix(NOTE_PREFIX)?;
    let heads: Option<Vec<EntryHash>> = list
        .split(',')
        .take(acl::MAX_PARENTS)
        .map(|h| h.parse().ok())
        .collect();
    heads.filter(|h| !h.is_empty())
}

/// The default local name of a share: `shared.<owner>.<collection>`, made a
/// valid collection name.
pub fn default_local_name(owner: &str, collection: &str) -> String {
    let clean: String = owner
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-');
    let owner = if clean.is_empty() { "contact" } else { clean };
    let mut name = format!("shared.{owner}.{collection}");
    name.truncate(crate::collection::MAX_DOCTYPE_BYTES);
    name
}

impl Node {
    /// Every share this account knows, by id.
    pub fn shares(&self) -> &BTreeMap<EntryHash, Share> {
        &self.shares.known
    }

    /// The share `id` names: its whole id or a unique prefix of it (at
    /// least 4 characters).
    pub fn find_share(&self, id: &str) -> Result<&Share, Error> {
        let id = id.trim().to_lowercase();
        if id.len() < 4 {
            return Err(ShareError::Unknown(id).into());
        }
        let mut fits = self
            .shares
            .known
            .iter()
            .filter(|(k, _)| k.to_string().starts_with(&id));
        match (fits.next(), fits.next()) {
            (Some((_, share)), None) => Ok(share),
            (Some(_), Some(_)) => Err(ShareError::Ambiguous(id).into()),
            (None, _) => Err(ShareError::Unknown(id).into()),
        }
    }

    /// The share whose local collection is `local`.
    pub fn share_of(&self, local: &str) -> Option<&Share> {
        self.shares
            .known
            .values()
            .find(|s| s.local.as_deref() == Some(local))
    }

    /// The name this account gives `account`: its own, a contact's petname,
    /// or the id.
    pub fn account_name(&self, account: &AccountId) -> String {
        if *account == self.log.account_id() {
            return "me".to_owned();
        }
        self.contacts()
            .get(account)
            .map_or_else(|| account.to_string(), |c| c.shown_name().to_owned())
    }

    /// The membership log of `account`: ours, or a contact's as known.
    fn log_of(&self, account: &AccountId) -> Option<Arc<Log>> {
        if *account == self.log.account_id() {
            return Some(Arc::clone(&self.log));
        }
        self.contacts().get(account).map(|c| Arc::clone(&c.log))
    }

    /// Grants the contact `who` `level` on `collection` (or changes its
    /// level), creating the share on first grant, and offers it.
    pub fn share(
        &mut self,
        now: Millis,
        collection: &str,
        who: &str,
        level: Level,
    ) -> Result<(Share, Outputs), Error> {
        check_doctype(collection)?;
        if is_reserved(collection) {
            return Err(Error::Reserved(collection.to_owned()));
        }
        let shards = match self.collections.get(collection) {
            Some(l) => l.data.shard_count(),
            None => return Err(Error::NoCollection(collection.to_owned())),
        };
        let contact = self.find_contact(who)?;
        if contact.state() != super::contacts::State::Established {
            return Err(ShareError::NotEstablished(contact.shown_name().to_owned()).into());
        }
        let account = contact.account;
        let at = now.max(0) as u64;
        let mut share = match self.share_of(collection) {
            Some(s) if s.owner() != self.log.account_id() => {
                return Err(ShareError::NotOwner(
                    collection.to_owned(),
                    self.account_name(&s.owner()),
                )
                .into());
            }
            Some(s) => s.clone(),
            None => Share {
                acl: Arc::new(
                    Acl::create(&self.key, &self.log, collection, at).map_err(ShareError::from)?,
                ),
                shards,
                local: Some(collection.to_owned()),
                answers: BTreeMap::new(),
                owed: BTreeSet::new(),
                logs: BTreeMap::new(),
                cards: BTreeMap::new(),
                updated_at_ms: now,
            },
        };
        let mut acl = (*share.acl).clone();
        if acl.state(&self.log).level(&account) != Some(level) {
            acl.grant(&self.key, &self.log, account, level, at)
                .map_err(ShareError::from)?;
        }
        share.acl = Arc::new(acl);
        if share.answers.get(&account) != Some(&Answer::Accepted) {
            share.answers.insert(account, Answer::Offered);
        }
        share.owed = self.named_accounts(&share);
        let out = self.save_share(now, &mut share)?;
        Ok((share, out))
    }

    /// Revokes every right of the contact `who` on `collection`.
    pub fn unshare(
        &mut self,
        now: Millis,
        collection: &str,
        who: &str,
    ) -> Result<(Share, Outputs), Error> {
        let contact = self.find_contact(who)?;
        let (account, name) = (contact.account, contact.shown_name().to_owned());
        let not_shared = || ShareError::NotShared(collection.to_owned(), name.clone());
        let share = self.share_of(collection).ok_or_else(not_shared)?;
        if share.owner() != self.log.account_id() {
            return Err(ShareError::NotOwner(
                collection.to_owned(),
                self.account_name(&share.owner()),
            )
            .into());
        }
        if !share.acl.state(&self.log).may_read(&account) {
            return Err(not_shared().into());
        }
        let mut share = share.clone();
        self.revoke(now, &mut share, account)?;
        let out = self.save_share(now, &mut share)?;
        Ok((share, out))
    }

    fn revoke(&self, now: Millis, share: &mut Share, account: AccountId) -> Result<(), Error> {
        let mut acl = (*share.acl).clone();
        acl.revoke(&self.key, &self.log, account, now.max(0) as u64)
            .map_err(ShareError::from)?;
        share.acl = Arc::new(acl);
        share.owed = self.named_accounts(share);
        Ok(())
    }

    /// Revokes every share this account owns with `account` (a contact
    /// being removed).
    pub(super) fn unshare_all(
        &mut self,
        now: Millis,
        account: AccountId,
    ) -> Result<Outputs, Error> {
        let mine = self.log.account_id();
        let granted: Vec<Share> = self
            .shares
            .known
            .values()
            .filter(|s| s.owner() == mine && s.acl.state(&self.log).may_read(&account))
            .cloned()
            .collect();
        let mut out = Outputs::default();
        for mut share in granted {
            self.revoke(now, &mut share, account)?;
            share.owed.remove(&account);
            out.extend(self.save_share(now, &mut share)?);
        }
        Ok(out)
    }

    /// Every account the list names (granted or revoked): each must hear of
    /// a change to it.
    fn named_accounts(&self, share: &Share) -> BTreeSet<AccountId> {
        let owner_log = self.log_of(&share.owner());
        let Some(owner_log) = owner_log else {
            return BTreeSet::new();
        };
        named(&share.acl)
            .into_iter()
            .filter(|a| *a != self.log.account_id() && self.contacts().contains_key(a))
            .chain(std::iter::once(share.owner()).filter(|o| *o != self.log.account_id()))
            .filter(|_| owner_log.account_id() == share.owner())
            .collect()
    }

    /// Accepts the offered share `id` under the local name `local` (or the
    /// default): the local collection is created empty, with the owner's
    /// shard count, and the owner hears of it.
    pub fn accept_share(
        &mut self,
        now: Millis,
        id: &str,
        local: Option<&str>,
    ) -> Result<(Share, Outputs), Error> {
        let mut share = self.incoming(id)?;
        let me = self.log.account_id();
        let name = match (&share.local, local) {
            (_, Some(name)) => name.to_owned(),
            (Some(existing), None) => existing.clone(),
            (None, None) => {
                default_local_name(&self.account_name(&share.owner()), share.acl.collection())
            }
        };
        check_doctype(&name)?;
        if is_reserved(&name) {
            return Err(Error::Reserved(name));
        }
        let taken_by_other = self.share_of(&name).is_some_and(|s| s.id() != share.id());
        let exists_unshared =
            self.collections.contains_key(&name) && self.share_of(&name).is_none();
        if taken_by_other || exists_unshared {
            return Err(ShareError::NameInUse(name).into());
        }
        if let Some(previous) = &share.local
            && *previous != name
            && self.collections.contains_key(previous)
        {
            return Err(ShareError::NameInUse(previous.clone()).into());
        }
        share.local = Some(name.clone());
        share.answers.insert(me, Answer::Accepted);
        share.owed = BTreeSet::from([share.owner()]);
        // The local collection is created, empty, by `shares_changed`.
        let out = self.save_share(now, &mut share)?;
        Ok((share, out))
    }

    /// Creates, empty and with the owner's shard count, the local
    /// collection of every share this account takes part in that this
    /// device lacks: one accepted here, or on another device of the account
    /// whose share record just arrived. So the share shows in this device's
    /// collections at once, and its sessions with members list it (a
    /// contact's device syncs only what both sides list).
    fn open_share_collections(&mut self, now: Millis, out: &mut Outputs) {
        let missing: Vec<(String, u16)> = self
            .shares
            .known
            .values()
            // The cheap test first: this runs on every change to shares,
            // and almost always every local collection is already open.
            .filter(|share| {
                share
                    .local
                    .as_ref()
                    .is_some_and(|local| !self.collections.contains_key(local))
            })
            .filter(|share| {
                self.log_of(&share.owner())
                    .is_some_and(|log| self.active_in(share, &share.acl.state(&log)))
            })
            .filter_map(|share| Some((share.local.clone()?, share.shards)))
            .collect();
        if missing.is_empty() {
            return;
        }
        let mut batch = super::Batch::default();
        for (name, shards) in missing {
            // A name a stored record gives that this node cannot use
            // stays unopened; `hearth shares` still lists the share.
            let Ok(data) = Collection::new(&name, shards, self.actor()) else {
                continue;
            };
            self.collections.insert(
                name.clone(),
                super::Loaded {
                    data,
                    indexes: crate::query::Indexes::default(),
                    meta: super::Catalog::new(shards, now),
                },
            );
            self.stage(
                &name,
                std::iter::empty::<&crate::collection::Written>(),
                &mut batch,
            );
        }
        out.persist(batch);
    }

    /// Declines the offered share `id`; the owner hears of it. A share
    /// accepted before stops syncing; its local records stay.
    pub fn decline_share(&mut self, now: Millis, id: &str) -> Result<(Share, Outputs), Error> {
        let mut share = self.incoming(id)?;
        share
            .answers
            .insert(self.log.account_id(), Answer::Declined);
        share.owed = BTreeSet::from([share.owner()]);
        let out = self.save_share(now, &mut share)?;
        Ok((share, out))
    }

    /// A share offered to this account that it may still answer.
    fn incoming(&self, id: &str) -> Result<Share, Error> {
        let share = self.find_share(id)?;
        if share.owner() == self.log.account_id() {
            return Err(ShareError::Own.into());
        }
        let Some(owner_log) = self.log_of(&share.owner()) else {
            return Err(ShareError::Unknown(id.to_owned()).into());
        };
        if share
            .acl
            .state(&owner_log)
            .is_revoked(&self.log.account_id())
        {
            return Err(ShareError::Revoked.into());
        }
        Ok(share.clone())
    }

    /// Stores `share`, keeps it in the cache, sends what it owes and tells
    /// every session what changed.
    fn save_share(&mut self, now: Millis, share: &mut Share) -> Result<Outputs, Error> {
        share.updated_at_ms = now;
        let record = share.to_record();
        let id = share.id().to_string();
        let loaded = self.ensure_collection(COLLECTION, now)?;
        let written = loaded.data.put(&id, record, PutMode::Upsert, now)?;
        let mut out = self.commit(now, COLLECTION, [&written]);
        self.shares.known.insert(share.id(), share.clone());
        self.forget_access();
        self.shares_changed(now, &mut out);
        Ok(out)
    }

    /// Re-reads share records after another device of the account changed
    /// them.
    pub(super) fn refresh_shares<'i>(
        &mut self,
        now: Millis,
        ids: impl IntoIterator<Item = &'i str>,
        out: &mut Outputs,
    ) {
        self.read_shares(ids);
        self.shares_changed(now, out);
    }

    /// Reads share records into the cache (all of them at load) and sets
    /// the notes their local collections write under.
    pub(super) fn read_shares<'i>(&mut self, ids: impl IntoIterator<Item = &'i str>) {
        let mut found = Vec::new();
        if let Some(loaded) = self.collections.get(COLLECTION) {
            for id in ids {
                let Ok(hash) = id.parse::<EntryHash>() else {
                    continue;
                };
                let versions = loaded.data.versions(id);
                let digest =
                    *blake3::hash(&serde_json::to_vec(&versions).unwrap_or_default()).as_bytes();
                if self.shares.parsed.get(&hash) == Some(&digest)
                    && self.shares.known.contains_key(&hash)
                {
                    continue;
                }
                // The owner is named inside the list; try the logs known.
                let share = versions
                    .first()
                    .and_then(record_owner)
                    .and_then(|owner| self.log_of(&owner))
                    .and_then(|log| {
                        versions
                            .iter()
                            .filter_map(|record| {
                                Share::from_record(id, record, &log, self.shares.known.get(&hash))
                            })
                            .reduce(|mut share, other| {
                                share.join(other, &log);
                                share
                            })
                    });
                found.push((hash, share, digest));
            }
        }
        for (hash, share, digest) in found {
            match share {
                Some(s) => {
                    self.shares.known.insert(hash, s);
                    self.shares.parsed.insert(hash, digest);
                }
                None => {
                    self.shares.known.remove(&hash);
                    self.shares.parsed.remove(&hash);
                    self.shares.credentials_seen.remove(&hash);
                }
            };
        }
        self.forget_access();
        self.set_notes();
    }

    /// Whether any share still owes a message.
    pub(super) fn shares_owe(&self) -> bool {
        self.shares.known.values().any(|s| !s.owed.is_empty())
    }

    /// Makes every shared collection write under its list's current heads
    /// and sign what it writes (the owner's devices also endorse their
    /// account's unsigned changes: see [`crate::collection::authorship`]).
    pub(super) fn set_notes(&mut self) {
        let me = self.log.account_id();
        let notes: Vec<(String, String, bool)> = self
            .shares
            .known
            .values()
            .filter_map(|s| Some((s.local.clone()?, note_of(&s.acl), s.owner() == me)))
            .collect();
        for (local, note, owned) in notes {
            if let Some(loaded) = self.collections.get_mut(&local) {
                loaded.data.set_note(Some(note));
                let key = Arc::clone(&self.key);
                loaded.data.set_signer(Some(if owned {
                    Signer::endorsing(key)
                } else {
                    Signer::author(key)
                }));
            }
        }
    }

    /// After any change to shares: local collections write under their
    /// list's heads, owed messages go out, every contact session is
    /// re-announced (or closed when nothing is shared with it any more),
    /// and the driver hears whom to admit.
    fn shares_changed(&mut self, now: Millis, out: &mut Outputs) {
        self.open_share_collections(now, out);
        self.take_early_credentials(now, out);
        self.set_notes();
        self.deliver_shares(now, out);
        self.rescope(now, out);
        self.publish_admission(now, out);
    }

    /// Takes the credentials that came before their share's offer, for
    /// every share now known. One that does not check out is dropped: the
    /// session it came on may be gone, and the peer sends it again with
    /// its next change to the share.
    fn take_early_credentials(&mut self, now: Millis, out: &mut Outputs) {
        let ready: Vec<EntryHash> = self
            .shares
            .early
            .keys()
            .filter(|hash| self.shares.known.contains_key(hash))
            .copied()
            .collect();
        for hash in ready {
            let wire = hash.to_string();
            for bytes in self.shares.early.remove(&hash).unwrap_or_default() {
                let _ = self.take_acl(now, &wire, &bytes, out);
            }
        }
    }

    /// Sends every owed offer and answer to the devices of its account that
    /// have nothing on its way.
    pub(super) fn deliver_shares(&mut self, now: Millis, out: &mut Outputs) {
        let mine = self.log.account_id();
        let mut sends = Vec::new();
        for share in self.shares.known.values() {
            for account in &share.owed {
                let Some(contact) = self.contacts().get(account) else {
                    continue;
                };
                let request = if share.owner() == mine {
                    Request::Offer {
                        acl: share.acl.encode(),
                        shards: share.shards,
                    }
                } else {
                    Request::Answer {
                        share: share.id().to_string(),
                        accepted: share.answers.get(&mine) == Some(&Answer::Accepted),
                    }
                };
                let frame = request.encode();
                let addrs: BTreeMap<&DeviceId, &Vec<String>> =
                    contact.card.addrs().iter().map(|(d, a)| (d, a)).collect();
                for device in contact.devices() {
                    let at = addrs.get(&device).map(|a| (*a).clone()).unwrap_or_default();
                    sends.push((
                        device,
                        Purpose::Share(share.id(), *account),
                        at,
                        frame.clone(),
                    ));
                }
            }
        }
        let mut any = false;
        for (peer, purpose, addrs, frame) in sends {
            if self.contacts.inflight.contains_key(&peer) {
                continue;
            }
            self.contacts.inflight.insert(peer, purpose);
            out.push(Output::Deliver { peer, addrs, frame });
            any = true;
        }
        if any || self.shares.known.values().any(|s| !s.owed.is_empty()) {
            self.retry_later(now, out);
        }
    }

    /// An offer from `from`, a device of a contact: the list verified
    /// against that contact's log, merged into what is known, and kept
    /// until someone here answers it.
    pub(super) fn take_offer(
        &mut self,
        now: Millis,
        from: DeviceId,
        bytes: &[u8],
        shards: u16,
        out: &mut Outputs,
    ) -> Result<Reply, String> {
        let contact = self
            .contacts()
            .values()
            .find(|c| c.log.is_member(&from))
            .ok_or("offers come from contacts only")?;
        if !contact.added {
            return Err("offers come from contacts this account added only".into());
        }
        let owner_log = Arc::clone(&contact.log);
        let acl = Acl::decode(bytes, &owner_log).map_err(|e| e.to_string())?;
        let me = self.log.account_id();
        let state = acl.state(&owner_log);
        if !state.may_read(&me) && !state.is_revoked(&me) {
            return Err("the offer grants this account nothing".into());
        }
        if shards == 0 || shards > crate::collection::MAX_SHARDS {
            return Err(format!("the offer claims {shards} shards"));
        }
        let (mut share, changed) = match self.shares.known.get(&acl.id()) {
            Some(known) => {
                let mut merged = (*known.acl).clone();
                let added = merged.merge(&acl, &owner_log).map_err(|e| e.to_string())?;
                let mut s = known.clone();
                s.acl = Arc::new(merged);
                (s, added > 0)
            }
            None => {
                let waiting = self
                    .shares
                    .known
                    .values()
                    .filter(|s| s.owner() != me && !s.answers.contains_key(&me))
                    .count();
                if waiting >= self.config.contacts.max_offers {
                    return Err(ShareError::TooManyOffers(waiting).to_string());
                }
                let share = Share {
                    acl: Arc::new(acl),
                    shards,
                    local: None,
                    answers: BTreeMap::new(),
                    owed: BTreeSet::new(),
                    logs: BTreeMap::new(),
                    cards: BTreeMap::new(),
                    updated_at_ms: now,
                };
                (share, true)
            }
        };
        if changed {
            out.extend(
                self.save_share(now, &mut share)
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(Reply::Share {
            answer: share.answers.get(&me).copied().unwrap_or(Answer::Offered),
        })
    }

    /// A recipient's answer to one of our offers.
    pub(super) fn take_answer(
        &mut self,
        now: Millis,
        from: DeviceId,
        id: &str,
        accepted: bool,
        out: &mut Outputs,
    ) -> Result<Reply, String> {
        let account = self
            .contacts()
            .values()
            .find(|c| c.log.is_member(&from))
            .map(|c| c.account)
            .ok_or("answers come from contacts only")?;
        let hash: EntryHash = id.parse().map_err(|_| "bad share id".to_owned())?;
        let share = self.shares.known.get(&hash).ok_or("no such share")?;
        if share.owner() != self.log.account_id() {
            return Err("this account does not own that share".into());
        }
        if !share.acl.state(&self.log).may_read(&account) {
            return Err("that share is not offered to your account".into());
        }
        let answer = if accepted {
            Answer::Accepted
        } else {
            Answer::Declined
        };
        if share.answers.get(&account) != Some(&answer) {
            let mut share = share.clone();
            share.answers.insert(account, answer);
            out.extend(
                self.save_share(now, &mut share)
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(Reply::Share { answer })
    }

    /// The reply to an offer or answer we sent `account` about `share`.
    pub(super) fn share_delivered(
        &mut self,
        now: Millis,
        hash: EntryHash,
        account: AccountId,
        answer: Answer,
        out: &mut Outputs,
    ) -> Result<(), String> {
        let Some(known) = self.shares.known.get(&hash) else {
            return Ok(());
        };
        let mut share = known.clone();
        share.owed.remove(&account);
        if share.owner() == self.log.account_id() {
            share.answers.insert(account, answer);
        }
        out.extend(
            self.save_share(now, &mut share)
                .map_err(|e| e.to_string())?,
        );
        self.contacts
            .inflight
            .retain(|_, p| *p != Purpose::Share(hash, account));
        Ok(())
    }

    /// A share's credentials a contact's device sent in a sync session,
    /// under the wire name `wire`: the list merged into the share's if it
    /// verifies, and the logs of named accounts that are not our contacts
    /// kept beside it.
    pub(super) fn take_acl(
        &mut self,
        now: Millis,
        wire: &str,
        bytes: &[u8],
        out: &mut Outputs,
    ) -> Result<(), String> {
        let hash: EntryHash = wire.parse().map_err(|_| "bad share id".to_owned())?;
        // A list of a share whose offer has not reached this account yet
        // (or whose owner is not known here yet) is not an offence: the
        // peer's scope runs ahead of ours. It is set aside, as its data
        // would be (nothing outside our scope syncs), and taken once the
        // offer arrives (`take_early_credentials`).
        let Some(known) = self.shares.known.get(&hash) else {
            // Each is at most a frame; `max_early_credentials` of them in all.
            let max = self.config.contacts.max_early_credentials;
            let early = &mut self.shares.early;
            while early.values().map(Vec::len).sum::<usize>() >= max.max(1)
                && let Some(first) = early.keys().next().copied()
            {
                early.remove(&first);
            }
            if max > 0 {
                early.entry(hash).or_default().push(bytes.to_vec());
            }
            return Ok(());
        };
        let Some(owner_log) = self.log_of(&known.owner()) else {
            return Ok(());
        };
        let digest = *blake3::hash(bytes).as_bytes();
        if self
            .shares
            .credentials_seen
            .get(&hash)
            .is_some_and(|seen| seen.contains(&digest))
        {
            return Ok(());
        }
        let credentials: Credentials = postcard::from_bytes(bytes)
            .map_err(|e| format!("unreadable share credentials: {e}"))?;
        let theirs = Acl::decode(&credentials.acl, &owner_log).map_err(|e| e.to_string())?;
        let mut share = known.clone();
        let mut merged = (*known.acl).clone();
        let mut changed = merged
            .merge(&theirs, &owner_log)
            .map_err(|e| e.to_string())?
            > 0;
        let named = named(&merged);
        for bytes in &credentials.logs {
            let log = Log::decode(bytes).map_err(|e| format!("a member's log: {e}"))?;
            let account = log.account_id();
            if !named.contains(&account) {
                return Err(format!(
                    "the membership log of {account}, an account the list does not name"
                ));
            }
            if self.log_of(&account).is_some() {
                // Ours, or a contact's: that log comes from its own account.
                continue;
            }
            match share.logs.get(&account) {
                Some(held) => {
                    let mut grown = (**held).clone();
                    if grown.merge(&log).map_err(|e| e.to_string())? > 0 {
                        share.logs.insert(account, Arc::new(grown));
                        changed = true;
                    }
                }
                None => {
                    share.logs.insert(account, Arc::new(log));
                    changed = true;
                }
            }
        }
        for bytes in &credentials.cards {
            let card = Card::from_bytes(bytes).map_err(|e| format!("a member's card: {e}"))?;
            let account = card.account();
            if !named.contains(&account) {
                return Err(format!(
                    "the card of {account}, an account the list does not name"
                ));
            }
            if self.log_of(&account).is_some() {
                continue;
            }
            let newer = share
                .cards
                .get(&account)
                .is_none_or(|held| held.to_bytes() != card.to_bytes());
            if newer {
                share.cards.insert(account, Arc::new(card));
                changed = true;
            }
        }
        if changed {
            share.acl = Arc::new(merged);
            out.extend(
                self.save_share(now, &mut share)
                    .map_err(|e| e.to_string())?,
            );
        }
        let seen = self.shares.credentials_seen.entry(hash).or_default();
        if seen.len() >= MAX_CREDENTIALS_SEEN {
            seen.clear();
        }
        seen.insert(digest);
        Ok(())
    }

    /// Whether this account takes part in `share` now: it owns it, or it
    /// accepted it and is not revoked.
    fn active_in(&self, share: &Share, state: &AclState) -> bool {
        let me = self.log.account_id();
        share.local.is_some()
            && (share.owner() == me
                || (share.answers.get(&me) == Some(&Answer::Accepted) && state.may_read(&me)))
    }

    /// The account of `peer`, a device of a contact or of a fellow member
    /// of a share (as the log the owner sent with the list says).
    fn account_of(&self, peer: &DeviceId) -> Option<AccountId> {
        if let Some(contact) = self.contacts().values().find(|c| c.log.is_member(peer)) {
            return Some(contact.account);
        }
        self.shares
            .known
            .values()
            .flat_map(|s| s.logs.iter())
            .find(|(_, log)| log.is_member(peer))
            .map(|(account, _)| *account)
    }

    /// The accounts this one may sync shares with: contacts, and the
    /// fellow members the shares' lists name.
    fn share_accounts(&self) -> BTreeMap<AccountId, Arc<Log>> {
        let mut accounts: BTreeMap<AccountId, Arc<Log>> = BTreeMap::new();
        for share in self.shares.known.values() {
            for (account, log) in &share.logs {
                accounts.insert(*account, Arc::clone(log));
            }
        }
        for contact in self.contacts().values() {
            accounts.insert(contact.account, Arc::clone(&contact.log));
        }
        accounts
    }

    /// Forgets the cached scopes and gates if what decides them moved.
    fn fresh_access(&mut self) {
        let mut key = Vec::new();
        for name in [COLLECTION, super::contacts::COLLECTION] {
            if let Some(l) = self.collections.get(name) {
                for shard in 0..l.data.shard_count() {
                    key.extend(l.data.shard_heads(shard).unwrap_or_default());
                }
            }
            key.push(automerge::ChangeHash([0; 32]));
        }
        let log = self.log.heads();
        let access = &mut self.shares.access;
        if access.key != key || access.log != log {
            *access = Access {
                key,
                log,
                ..Access::default()
            };
        }
    }

    /// Drops the cached scopes and gates: the shares or contacts they were
    /// computed from changed (a commit of their records is offered to the
    /// sessions before the cache of parsed records follows it, so the
    /// records' heads alone could key a cache built from the old ones).
    pub(super) fn forget_access(&mut self) {
        self.shares.access = Access::default();
    }

    /// [`Node::scope_for`], computed once per state of the shares.
    pub(super) fn cached_scope(&mut self, peer: &DeviceId) -> Option<Arc<Scope>> {
        self.fresh_access();
        let account = self.account_of(peer)?;
        if let Some(scope) = self.shares.access.scopes.get(&account) {
            return scope.clone();
        }
        let scope = self.scope_for(peer).map(Arc::new);
        self.shares.access.scopes.insert(account, scope.clone());
        scope
    }

    /// The gates of every shared collection this account holds, by local
    /// name, computed once per state of the shares.
    pub(super) fn cached_gates(&mut self) -> Arc<BTreeMap<String, Gate>> {
        self.cached_gate_set(
            |access| &mut access.gates,
            |node, share| node.gate(share.local.as_deref()?),
        )
    }

    /// The gates sessions with this account's own devices apply to shared
    /// collections: they refuse nothing (another device of the account is
    /// trusted as this one is), but hold back a change naming an access
    /// list state this device lacks until the list arrives. Otherwise this
    /// device could build on it while naming an older state in its own
    /// changes, which every other member would refuse.
    pub(super) fn cached_member_gates(&mut self) -> Arc<BTreeMap<String, Gate>> {
        self.cached_gate_set(
            |access| &mut access.member_gates,
            |_, share| {
                let acl = Arc::clone(&share.acl);
                let gate: Gate = Arc::new(move |candidate: &Candidate<'_>| {
                    let named = candidate.change.message().and_then(heads_of_note);
                    match named.and_then(|heads| heads.into_iter().find(|h| !acl.contains(h))) {
                        Some(unknown) => Err(Refusal::Waiting(format!(
                            "a change naming access list entry {unknown}, which this device lacks"
                        ))),
                        None => Ok(()),
                    }
                });
                Some(gate)
            },
        )
    }

    /// One set of gates, by local name, built by `build` for every share
    /// held here and kept in `slot` until the shares change.
    fn cached_gate_set(
        &mut self,
        slot: fn(&mut Access) -> &mut Option<GateSet>,
        build: impl Fn(&Node, &Share) -> Option<Gate>,
    ) -> GateSet {
        self.fresh_access();
        if let Some(gates) = slot(&mut self.shares.access) {
            return Arc::clone(gates);
        }
        let gates: BTreeMap<String, Gate> = self
            .shares()
            .values()
            .filter_map(|share| Some((share.local.clone()?, build(self, share)?)))
            .collect();
        let gates = Arc::new(gates);
        *slot(&mut self.shares.access) = Some(Arc::clone(&gates));
        gates
    }

    /// What the device `peer` of another account may sync with this one.
    pub(super) fn scope_for(&self, peer: &DeviceId) -> Option<Scope> {
        let account = self.account_of(peer)?;
        let mut scope = Scope::default();
        for share in self.active_with(&account) {
            let local = share.local.clone().unwrap_or_default();
            let credentials = self.credentials(share, &account);
            scope
                .shares
                .insert(share.id().to_string(), (local, share.shards, credentials));
        }
        (!scope.shares.is_empty()).then_some(scope)
    }

    /// The shares this account and `account` both take part in now: owned
    /// by one of them, and readable by the other.
    fn active_with<'s>(&'s self, account: &'s AccountId) -> impl Iterator<Item = &'s Share> + 's {
        self.shares.known.values().filter(move |share| {
            let Some(owner_log) = self.log_of(&share.owner()) else {
                return false;
            };
            let state = share.acl.state(&owner_log);
            let theirs = *account == share.owner() || state.may_read(account);
            theirs && self.active_in(share, &state)
        })
    }

    /// What a session with a device of `peer` sends before the share's
    /// data: the list, and the logs of every other account it names.
    fn credentials(&self, share: &Share, peer: &AccountId) -> Vec<u8> {
        let others: Vec<AccountId> = named(&share.acl)
            .into_iter()
            .filter(|a| a != peer)
            .collect();
        let logs = others
            .iter()
            .filter_map(|a| self.member_log(share, a))
            .map(|log| log.encode())
            .collect();
        let cards = others
            .iter()
            .filter_map(|a| self.card_of(share, a))
            .map(|card| card.to_bytes())
            .collect();
        let credentials = Credentials {
            acl: share.acl.encode(),
            logs,
            cards,
        };
        postcard::to_allocvec(&credentials).unwrap_or_default()
    }

    /// The membership log of `account` for checking its changes to
    /// `share`: a contact's (or ours) as known, else the one the owner sent.
    fn member_log(&self, share: &Share, account: &AccountId) -> Option<Arc<Log>> {
        self.log_of(account)
            .or_else(|| share.logs.get(account).map(Arc::clone))
    }

    /// The card of `account` for `share`: a contact's own, else the one
    /// passed on with the list.
    fn card_of(&self, share: &Share, account: &AccountId) -> Option<Card> {
        match self.contacts().get(account) {
            Some(contact) => Some(contact.card.clone()),
            None => share.cards.get(account).map(|c| (**c).clone()),
        }
    }

    /// The devices of other accounts this one shares something with now
    /// (contacts, and fellow members of its shares), with the addresses
    /// their cards give.
    pub(super) fn share_peers(&self) -> BTreeMap<DeviceId, Vec<String>> {
        let mut peers = BTreeMap::new();
        for (account, log) in self.share_accounts() {
            let Some(share) = self.active_with(&account).next() else {
                continue;
            };
            let addrs: BTreeMap<DeviceId, Vec<String>> = self
                .card_of(share, &account)
                .map(|card| card.addrs().iter().cloned().collect())
                .unwrap_or_default();
            for member in log.members() {
                let at = addrs.get(&member.device).cloned().unwrap_or_default();
                peers.insert(member.device, at);
            }
        }
        peers
    }

    /// A local write to `collection`: refused if it is a share this
    /// account may only read (or no longer write).
    pub(super) fn check_share_write(&self, collection: &str) -> Result<(), Error> {
        let Some(share) = self.share_of(collection) else {
            return Ok(());
        };
        let me = self.log.account_id();
        if share.owner() == me {
            return Ok(());
        }
        let writable = self
            .log_of(&share.owner())
            .is_some_and(|log| share.acl.state(&log).may_write(&me));
        if writable {
            return Ok(());
        }
        Err(ShareError::ReadOnly {
            collection: collection.to_owned(),
            owner: self.account_name(&share.owner()),
        }
        .into())
    }

    /// What checks a peer's changes to the local collection `local`, for a
    /// share (the rules are in the [module docs](self)): each change must
    /// be signed by its author device (or, for the owner account's own
    /// changes, endorsed by one of its devices); the author must be a device
    /// of the owner, or of an account holding `write` at the list state the
    /// change names; and that state must include every state its
    /// dependencies name. A change naming a state this replica lacks waits.
    pub(super) fn gate(&self, local: &str) -> Option<Gate> {
        let share = self.share_of(local)?;
        let owner_log = self.log_of(&share.owner())?;
        let acl = Arc::clone(&share.acl);
        let logs: Vec<(AccountId, Arc<Log>)> = named(&share.acl)
            .into_iter()
            .filter_map(|a| Some((a, self.member_log(share, &a)?)))
            .collect();
        Some(Arc::new(move |candidate: &Candidate<'_>| {
            check_change(candidate, &acl, &owner_log, &logs)
        }))
    }
}

/// Whether `device` was ever a device of the account of `log`.
fn ever(log: &Log, device: &DeviceId) -> bool {
    log.is_member(device) || log.is_removed(device)
}

/// The key bytes of the author device a shared collection's change names:
/// the first 32 bytes of its 34-byte actor (device id, then shard); not
/// checked to be a device key.
fn author_key(change: &automerge::Change) -> Option<[u8; 32]> {
    let actor = change.actor_id().to_bytes();
    actor
        .get(..32)
        .filter(|_| actor.len() == 34)?
        .try_into()
        .ok()
}

/// The gate of a share: see [`Node::gate`].
fn check_change(
    candidate: &Candidate<'_>,
    acl: &Acl,
    owner_log: &Log,
    logs: &[(AccountId, Arc<Log>)],
) -> Result<(), Refusal> {
    let change = candidate.change;
    let refuse = |reason: String| Refusal::Refused(reason);
    // The author is most often the signer, already decoded and checked:
    // its key is not decoded a second time.
    let device = match (author_key(change), &candidate.signer) {
        (Some(key), Some(Ok(signer))) if signer.as_bytes() == &key => Some(*signer),
        (Some(key), _) => DeviceId::from_bytes(&key).ok(),
        (None, _) => None,
    }
    .ok_or_else(|| refuse("a change whose actor is no device".into()))?;
    let signed = candidate
        .authorship
        .ok_or_else(|| refuse(format!("an unsigned change by {device}")))?;
    if signed.change() != change.hash() {
        return Err(refuse(format!(
            "a signature for another change than {device}'s"
        )));
    }
    let signer = match &candidate.signer {
        Some(Ok(signer)) => *signer,
        Some(Err(reason)) => return Err(refuse(reason.clone())),
        None => signed.verify().map_err(refuse)?,
    };
    let owners = ever(owner_log, &device);
    if signer != device && !(owners && ever(owner_log, &signer)) {
        return Err(refuse(format!(
            "a change by {device} signed by {signer}, which may not vouch for it"
        )));
    }
    if owners {
        return Ok(());
    }
    let (account, _) = logs
        .iter()
        .find(|(_, log)| ever(log, &device))
        .ok_or_else(|| refuse(format!("a change by {device}, a device of no member")))?;
    let heads = change
        .message()
        .and_then(heads_of_note)
        .ok_or_else(|| refuse(format!("a change by {device} names no access list state")))?;
    let then = acl.at(&heads).ok_or_else(|| {
        Refusal::Waiting(format!(
            "a change by {device} names an access list state this device lacks"
        ))
    })?;
    for note in candidate.dep_notes.iter().flatten() {
        let Some(theirs) = heads_of_note(note) else {
            continue;
        };
        if let Some(unknown) = theirs.iter().find(|h| !acl.contains(h)) {
            return Err(Refusal::Waiting(format!(
                "a change by {device} depends on one naming access list entry {unknown}, which this device lacks"
            )));
        }
        if !theirs.iter().all(|h| then.contains(h)) {
            return Err(refuse(format!(
                "a change by {device} names an access list state older than one of its dependencies"
            )));
        }
    }
    if then.state(owner_log).may_write(account) {
        Ok(())
    } else {
        Err(refuse(format!(
            "a change by {device}, whose account held no write right when it wrote"
        )))
    }
}

/// What a session sends before a share's data ([`crate::sync::Frame::Acl`]
/// carries it): the encoded list and the membership logs of the accounts it
/// names, so a member can check a fellow member's changes without being
/// that member's contact. Each log is self-certifying (its genesis is its
/// account id) and is kept only for an account the list names.
#[derive(Debug, Serialize, Deserialize)]
struct Credentials {
    acl: Vec<u8>,
    logs: Vec<Vec<u8>>,
    cards: Vec<Vec<u8>>,
}

/// Every account `acl` names, granted or revoked.
fn named(acl: &Acl) -> BTreeSet<AccountId> {
    acl.entries()
        .iter()
        .filter_map(|e| e.op().account())
        .collect()
}

/// The owner a share record's list names, read without verifying (the
/// caller verifies against that owner's log).
fn record_owner(record: &Value) -> Option<AccountId> {
    let bytes = data_encoding::BASE64
        .decode(record.get("acl")?.as_str()?.as_bytes())
        .ok()?;
    acl::owner_of(&bytes)
}

#[cfg(test)]
mod tests;
