//! Contacts: other accounts this one knows, added from their contact cards,
//! and the exchange that makes two accounts each other's contacts.
//!
//! # The model
//!
//! A contact is another account, known by its verified
//! [`AccountId`], a petname, and its membership log, from which its device
//! list follows. It is **established** once each side has added the other's
//! [`Card`]. Adding a card sends this account's card to the other side over
//! `/hearth/share/1` ([`Request::Card`]): "I added you; here I am". There it
//! is a **pending** request until someone on that account accepts it (adds
//! it back); a request from an account nobody added is never more than that.
//! The answer says whether the other side had added us already
//! ([`Reply::Known`], with its own card) or keeps ours as a request
//! ([`Reply::Pending`]).
//!
//! # Where contacts live
//!
//! In the account's own reserved collection [`COLLECTION`], one record per
//! contact account. So they are durable like any record, sync to every
//! device of the account with the ordinary sync sessions (a contact added
//! on the laptop is known to the phone), and reload at start. Nothing a user
//! or an app writes can touch a `hearth.` collection
//! ([`super::Error::Reserved`]). A record holds the latest card the contact
//! sent and the *union* of every log it ever showed, so a device the contact
//! removed stays removed even if an older card turns up again.
//!
//! # Rules
//!
//! - A card is verified before anything is stored: its log, its signature,
//!   and that the device that sent it is a member of its log.
//! - This account's card must reach the other side once after it was added
//!   or accepted, and again whenever this account's member set changes (so
//!   a contact follows our devices): the record's `deliver` flag says so,
//!   durably. Delivery is tried on every device of the contact with
//!   [`Output::Deliver`]; an answer clears the flag, a failure is retried
//!   after [`Limits::retry_ms`].
//! - Incoming requests are bounded: at most [`Limits::max_pending`] pending
//!   requests, at most [`Limits::max_contacts`] contacts, and
//!   [`Limits::requests_per_minute`] requests per sending device.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hearth_crypto::card::{self, Card};
use hearth_crypto::identity::DeviceId;
use hearth_crypto::membership::{AccountId, Log};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Error, Millis, Node, Output, Outputs};
use crate::collection::PutMode;

/// The reserved collection that holds the account's contacts.
pub const COLLECTION: &str = "hearth.contacts";

/// Version byte that starts every `/hearth/share/1` and `/hearth/query/1`
/// message (each protocol's first version).
const WIRE_VERSION: u8 = 1;

/// Bounds on what contacts and strangers may make this node store or do;
/// each is a field of `[contacts]` in `hearth.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pending requests kept from accounts nobody here added. Default 32.
    pub max_pending: usize,
    /// Contacts in all, pending ones included. Default 1,000.
    pub max_contacts: usize,
    /// Requests one device may send per minute; more are refused. Default 10.
    pub requests_per_minute: u32,
    /// Largest `/hearth/share/1` message, in bytes. Default 16 KiB.
    pub max_message_bytes: usize,
    /// Wait before a card that could not be delivered is tried again, in
    /// ms. Default 30,000.
    pub retry_ms: Millis,
    /// Share offers kept unanswered; more are refused. Default 64.
    pub max_offers: usize,
    /// Access lists (with their credentials) kept that came before their
    /// share's offer, in all; one more drops those of the share first kept.
    /// Default 16.
    pub max_early_credentials: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pending: 32,
            max_contacts: 1000,
            requests_per_minute: 10,
            max_message_bytes: 16 * 1024,
            retry_ms: 30_000,
            max_offers: 64,
            max_early_credentials: 16,
        }
    }
}

/// Devices whose request windows are remembered; the oldest is forgotten
/// beyond this.
const RATE_MAX_DEVICES: usize = 1024;

/// A request on `/hearth/share/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "I have added you": the sender's card ([`Card::to_bytes`]).
    Card {
        /// The card.
        card: Vec<u8>,
    },
    /// "I share this with you" (or its access list changed): the owner's
    /// whole access list ([`hearth_crypto::acl::Acl::encode`]) and the
    /// collection's shard count.
    Offer {
        /// The encoded list.
        acl: Vec<u8>,
        /// The shard count.
        shards: u16,
    },
    /// A recipient's answer to an offer.
    Answer {
        /// The share's id.
        share: String,
        /// Accepted (or declined).
        accepted: bool,
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// We had added you: the contact is established; here is our card.
    Known {
        /// Our card.
        card: Vec<u8>,
    },
    /// Your card is kept as a request until someone here accepts it.
    Pending,
    /// The offer or answer is taken; here is where this side stands.
    Share {
        /// The recipient's answer as known here.
        answer: super::shares::Answer,
    },
    /// Refused, and why.
    Refused {
        /// A sentence.
        reason: String,
    },
}

impl Request {
    /// The wire form: a version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

impl Reply {
    /// Reads a reply of at most `max` bytes.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Reply, String> {
        decode(bytes, max)
    }
}

/// The wire form of a one-request, one-reply protocol message: a version
/// byte, then postcard.
pub(super) fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    postcard::to_extend(message, vec![WIRE_VERSION]).unwrap_or_default()
}

/// Reads a message of at most `max` bytes in the form of [`encode`].
pub(super) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], max: usize) -> Result<T, String> {
    if bytes.len() > max {
        return Err(format!(
            "message is {} bytes, over the limit of {max}",
            bytes.len()
        ));
    }
    match bytes.split_first() {
        Some((&WIRE_VERSION, body)) => match postcard::take_from_bytes(body) {
            Ok((message, [])) => Ok(message),
            Ok(_) => Err("message has trailing bytes".into()),
            Err(e) => Err(format!("message does not decode: {e}")),
        },
        Some((v, _)) => Err(format!("message version {v} is not supported")),
        None => Err("empty message".into()),
    }
}

/// Where a contact stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Each side added the other.
    Established,
    /// One side added the other; see [`Contact::direction`].
    Pending,
}

/// Which side of a pending contact has not added the other yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// We added them; they have not answered yet.
    Outgoing,
    /// They added us; accept with [`Node::accept_contact`].
    Incoming,
}

/// One contact, as this account knows it.
#[derive(Debug, Clone)]
pub struct Contact {
    /// Its account.
    pub account: AccountId,
    /// Our petname for it; `None` for a request nobody accepted.
    pub name: Option<String>,
    /// The name its own card gives.
    pub card_name: String,
    /// We added its card (or accepted its request).
    pub added: bool,
    /// It added ours (it sent us its card).
    pub added_us: bool,
    /// Our card still has to reach it.
    pub deliver: bool,
    /// Every log it ever showed, merged.
    pub log: Arc<Log>,
    /// Its latest card.
    pub card: Card,
    /// When the record last changed.
    pub updated_at_ms: Millis,
}

impl Contact {
    /// Established or pending.
    pub fn state(&self) -> State {
        if self.added && self.added_us {
            State::Established
        } else {
            State::Pending
        }
    }

    /// For a pending contact, who has yet to act.
    pub fn direction(&self) -> Option<Direction> {
        match (self.added, self.added_us) {
            (true, false) => Some(Direction::Outgoing),
            (false, true) => Some(Direction::Incoming),
            _ => None,
        }
    }

    /// Its current devices, from its log.
    pub fn devices(&self) -> BTreeSet<DeviceId> {
        self.log.members().into_iter().map(|m| m.device).collect()
    }

    /// The name to show: the petname, else the card's.
    pub fn shown_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.card_name)
    }

    fn to_record(&self) -> Value {
        json!({
            "name": self.name,
            "card_name": self.card_name,
            "added": self.added,
            "added_us": self.added_us,
            "deliver": self.deliver,
            "card": self.card.encode(),
            "log": data_encoding::BASE64.encode(&self.log.encode()),
            "updated_at_ms": self.updated_at_ms,
        })
    }

    /// Reads a stored record back; `None` for one that does not verify
    /// (which only this account's own devices could have written).
    /// What `previous` (the contact as last read) already holds in the
    /// same encoding is taken from it, not verified again.
    fn from_record(id: &str, record: &Value, previous: Option<&Contact>) -> Option<Contact> {
        let account: AccountId = id.parse().ok()?;
        let card_text = record.get("card")?.as_str()?;
        let card = match previous {
            Some(p) if p.card.encode() == card_text => p.card.clone(),
            _ => Card::decode(card_text).ok()?,
        };
        let log_text = record.get("log")?.as_str()?;
        let log = match previous {
            Some(p) if data_encoding::BASE64.encode(&p.log.encode()) == log_text => {
                Arc::clone(&p.log)
            }
            _ => {
                let bytes = data_encoding::BASE64.decode(log_text.as_bytes()).ok()?;
                Arc::new(Log::decode(&bytes).ok()?)
            }
        };
        if log.account_id() != account || card.account() != account {
            return None;
        }
        let flag = |k: &str| record.get(k).and_then(Value::as_bool).unwrap_or(false);
        Some(Contact {
            account,
            name: record.get("name").and_then(Value::as_str).map(String::from),
            card_name: card.name().to_owned(),
            added: flag("added"),
            added_us: flag("added_us"),
            deliver: flag("deliver"),
            log,
            card,
            updated_at_ms: record
                .get("updated_at_ms")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        })
    }
}

impl Contact {
    /// Joins a concurrent version of the same contact record into this one
    /// (two devices of the account took the same card or request at once:
    /// see [`crate::collection::Collection::versions`]). Every flag set on
    /// either stays set, the logs merge, and where both give a name or a
    /// card this version (the one the collection shows) wins.
    fn join(&mut self, other: Contact) {
        if self.name.is_none() {
            self.name = other.name;
        }
        self.added |= other.added;
        self.added_us |= other.added_us;
        self.deliver |= other.deliver;
        let mut log = (*self.log).clone();
        if log.merge(&other.log).is_ok_and(|added| added > 0) {
            self.log = Arc::new(log);
        }
        self.updated_at_ms = self.updated_at_ms.max(other.updated_at_ms);
    }
}

/// The node's contact state beside the records: a cache of the parsed
/// records, what this node's card says, deliveries in flight and request
/// windows.
#[derive(Debug, Default)]
pub(super) struct Contacts {
    known: BTreeMap<AccountId, Contact>,
    /// This account's addresses, for our card.
    card_addrs: Vec<(DeviceId, Vec<String>)>,
    /// Devices a request is on its way to, with what it is about; one
    /// at a time per device.
    pub(super) inflight: BTreeMap<DeviceId, Purpose>,
    /// When undelivered cards are tried again.
    retry_at: Option<Millis>,
    /// Per sending device: the start of its minute and its requests in it.
    windows: BTreeMap<DeviceId, (Millis, u32)>,
}

impl Contacts {
    /// When the node wants a tick for its deliveries.
    pub(super) fn due(&self) -> Option<Millis> {
        self.retry_at
    }
}

/// What a request in flight is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// Our card, to this contact account.
    Card(AccountId),
    /// An offer or answer about this share, to this account.
    Share(hearth_crypto::membership::EntryHash, AccountId),
}

/// Why a contact operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    /// The card does not verify.
    #[error(transparent)]
    Card(#[from] card::Error),
    /// The card is this account's own.
    #[error("this is this account's own card")]
    Own,
    /// No contact has this name or account id.
    #[error("no contact named {0:?}; `hearth contacts` lists them")]
    Unknown(String),
    /// Two contacts would share a petname.
    #[error("another contact is already named {0:?}; pick another --name")]
    NameTaken(String),
    /// A petname that cannot be used.
    #[error("bad contact name {0:?}: use 1-64 characters, no control characters")]
    BadName(String),
    /// Too many requests wait for an answer already.
    #[error(
        "this account holds {0} unanswered requests already, the most it keeps ([contacts] max_pending)"
    )]
    TooManyRequests(usize),
    /// The contact list is full.
    #[error("this account already has {0} contacts, the most allowed ([contacts] max_contacts)")]
    Full(usize),
    /// Nothing to accept.
    #[error("{0} sent no request to accept; add its card with `hearth contact add`")]
    NoRequest(String),
}

fn check_name(name: &str) -> Result<String, ContactError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.len() > 64 || trimmed.chars().any(char::is_control) {
        return Err(ContactError::BadName(name.to_owned()));
    }
    Ok(trimmed.to_owned())
}

impl Node {
    /// This account's contacts, by account.
    pub fn contacts(&self) -> &BTreeMap<AccountId, Contact> {
        &self.contacts.known
    }

    /// The contact a person means by `who`: a petname, the card's name of
    /// a pending request, or an account id.
    pub fn find_contact(&self, who: &str) -> Result<&Contact, Error> {
        let known = &self.contacts.known;
        if let Ok(account) = who.parse::<AccountId>()
            && let Some(c) = known.get(&account)
        {
            return Ok(c);
        }
        known
            .values()
            .find(|c| c.name.as_deref() == Some(who))
            .or_else(|| {
                known
                    .values()
                    .find(|c| c.name.is_none() && c.card_name == who)
            })
            .ok_or_else(|| ContactError::Unknown(who.to_owned()).into())
    }

    /// Sets the addresses this account's card carries: this device's and
    /// those remembered for its other devices.
    pub fn set_card_addrs(&mut self, addrs: Vec<(DeviceId, Vec<String>)>) {
        let members = self.log.clone();
        self.contacts.card_addrs = addrs
            .into_iter()
            .filter(|(d, a)| members.is_member(d) && !a.is_empty())
            .take(card::MAX_DEVICES)
            .map(|(d, mut a)| {
                a.retain(|a| a.len() <= hearth_crypto::ticket::MAX_ADDR_LEN);
                a.truncate(card::MAX_ADDRS);
                (d, a)
            })
            .collect();
    }

    /// This account's contact card, signed by this device.
    pub fn card(&self) -> Result<Card, Error> {
        Ok(Card::new(
            &self.key,
            &self.name,
            (*self.log).clone(),
            self.contacts.card_addrs.clone(),
        )
        .map_err(ContactError::from)?)
    }

    /// Adds a contact from its card under the petname `name` (or accepts its
    /// pending request) and sends it our card. Answer after the outputs'
    /// batch is durable.
    pub fn add_contact(
        &mut self,
        now: Millis,
        card: Card,
        name: &str,
    ) -> Result<(Contact, Outputs), Error> {
        let name = check_name(name)?;
        if card.account() == self.log.account_id() {
            return Err(ContactError::Own.into());
        }
        let contact = self.merged_or_new(card, false)?;
        self.accept(now, contact, name)
    }

    /// The contact `card` speaks for: the known one with the card merged in,
    /// or a new one if the bounds allow (with `request`, also the bound on
    /// pending requests).
    fn merged_or_new(&self, card: Card, request: bool) -> Result<Contact, Error> {
        if let Some(existing) = self.contacts.known.get(&card.account()) {
            let mut c = existing.clone();
            merge_card(&mut c, card)?;
            return Ok(c);
        }
        let limits = self.config.contacts;
        let pending = self.contacts.known.values().filter(|c| !c.added).count();
        if request && pending >= limits.max_pending {
            return Err(ContactError::TooManyRequests(pending).into());
        }
        if self.contacts.known.len() >= limits.max_contacts {
            return Err(ContactError::Full(limits.max_contacts).into());
        }
        Ok(new_contact(card))
    }

    /// Accepts the pending request of `who` under the petname `name`.
    pub fn accept_contact(
        &mut self,
        now: Millis,
        who: &str,
        name: &str,
    ) -> Result<(Contact, Outputs), Error> {
        let contact = self.find_contact(who)?.clone();
        if !contact.added_us {
            return Err(ContactError::NoRequest(who.to_owned()).into());
        }
        let name = check_name(name)?;
        self.accept(now, contact, name)
    }

    /// Names `contact` (no other contact may have the name), marks it added,
    /// stores it and sends it our card.
    fn accept(
        &mut self,
        now: Millis,
        mut contact: Contact,
        name: String,
    ) -> Result<(Contact, Outputs), Error> {
        let taken = self
            .contacts
            .known
            .values()
            .any(|c| c.account != contact.account && c.name.as_deref() == Some(&name));
        if taken {
            return Err(ContactError::NameTaken(name).into());
        }
        contact.name = Some(name);
        contact.added = true;
        contact.deliver = true;
        let mut out = self.save_contacts(now, std::slice::from_mut(&mut contact))?;
        self.deliver(now, &[contact.account], &mut out);
        Ok((contact, out))
    }

    /// Removes a contact and revokes every share this account gave it.
    pub fn remove_contact(&mut self, now: Millis, who: &str) -> Result<(Contact, Outputs), Error> {
        let contact = self.find_contact(who)?.clone();
        let mut out = self.unshare_all(now, contact.account)?;
        let id = contact.account.to_string();
        let loaded = self.ensure_collection(COLLECTION, now)?;
        let written = loaded.data.delete(&id, None, now)?;
        out.extend(self.commit(now, COLLECTION, [&written]));
        self.contacts.known.remove(&contact.account);
        self.forget_access();
        self.publish_admission(now, &mut out);
        Ok((contact, out))
    }

    /// Stores `contacts` in one commit and keeps them in the cache.
    fn save_contacts(&mut self, now: Millis, contacts: &mut [Contact]) -> Result<Outputs, Error> {
        let records = contacts
            .iter_mut()
            .map(|c| {
                c.updated_at_ms = now;
                (c.account.to_string(), c.to_record())
            })
            .collect();
        let loaded = self.ensure_collection(COLLECTION, now)?;
        let written = loaded.data.put_many(records, PutMode::Upsert, now)?;
        let mut out = self.commit(now, COLLECTION, &written);
        for c in contacts.iter() {
            self.contacts.known.insert(c.account, c.clone());
        }
        self.forget_access();
        self.publish_admission(now, &mut out);
        Ok(out)
    }

    /// Re-reads contact records after another device of the account changed
    /// them (`ids`; all of them at load), and tells the driver if the
    /// devices to admit changed.
    pub(super) fn refresh_contacts<'i>(
        &mut self,
        now: Millis,
        ids: impl IntoIterator<Item = &'i str>,
        out: &mut Outputs,
    ) {
        let loaded = self.collections.get(COLLECTION);
        for id in ids {
            let Ok(account) = id.parse::<AccountId>() else {
                continue;
            };
            let versions = loaded.map(|l| l.data.versions(id)).unwrap_or_default();
            match versions
                .iter()
                .filter_map(|record| {
                    Contact::from_record(id, record, self.contacts.known.get(&account))
                })
                .reduce(|mut contact, other| {
                    contact.join(other);
                    contact
                }) {
                Some(c) => self.contacts.known.insert(account, c),
                None => self.contacts.known.remove(&account),
            };
        }
        self.forget_access();
        self.publish_admission(now, out);
    }

    /// Sends our card to every device of each of `accounts` that still owe
    /// it and have none on its way; the card is signed once for all.
    fn deliver(&mut self, now: Millis, accounts: &[AccountId], out: &mut Outputs) {
        let owed: Vec<&Contact> = accounts
            .iter()
            .filter_map(|a| self.contacts.known.get(a))
            .filter(|c| c.added && c.deliver)
            .collect();
        if owed.is_empty() {
            return;
        }
        let Ok(card) = self.card() else {
            return;
        };
        let frame = encode(&Request::Card {
            card: card.to_bytes(),
        });
        let mut sends = Vec::new();
        for contact in owed {
            let addrs: BTreeMap<&DeviceId, &Vec<String>> =
                contact.card.addrs().iter().map(|(d, a)| (d, a)).collect();
            for device in contact.devices() {
                if !self.contacts.inflight.contains_key(&device) {
                    let at = addrs.get(&device).map(|a| (*a).clone()).unwrap_or_default();
                    sends.push((device, contact.account, at));
                }
            }
        }
        for (peer, account, addrs) in sends {
            self.contacts.inflight.insert(peer, Purpose::Card(account));
            out.push(Output::Deliver {
                peer,
                addrs,
                frame: frame.clone(),
            });
        }
        self.retry_later(now, out);
    }

    pub(super) fn retry_later(&mut self, now: Millis, out: &mut Outputs) {
        let at = now + self.config.contacts.retry_ms;
        let at = match self.contacts.retry_at {
            Some(t) if t > now && t < at => t,
            _ => at,
        };
        self.contacts.retry_at = Some(at);
        self.links.wake_at(at, now, out);
    }

    /// After a load: cards and share messages still owed go out at the
    /// first tick.
    pub(super) fn resume_deliveries(&mut self) {
        let owed = self.contacts.known.values().any(|c| c.added && c.deliver);
        if (owed || self.shares_owe()) && self.contacts.retry_at.is_none() {
            self.contacts.retry_at = Some(0);
            self.links.touch();
        }
    }

    /// The delivery tick: every card still owed is sent again.
    pub(super) fn contacts_tick(&mut self, now: Millis, out: &mut Outputs) {
        if self.contacts.retry_at.is_none_or(|at| at > now) {
            return;
        }
        self.contacts.retry_at = None;
        let owed: Vec<AccountId> = self
            .contacts
            .known
            .values()
            .filter(|c| c.added && c.deliver)
            .map(|c| c.account)
            .collect();
        self.deliver(now, &owed, out);
        self.deliver_shares(now, out);
    }

    /// After our member set changed: every contact must hear of it.
    pub(super) fn contacts_owe_card(&mut self, now: Millis, out: &mut Outputs) {
        let mut stale: Vec<Contact> = self
            .contacts
            .known
            .values()
            .filter(|c| c.added && !c.deliver)
            .cloned()
            .collect();
        if stale.is_empty() {
            return;
        }
        for c in &mut stale {
            c.deliver = true;
        }
        match self.save_contacts(now, &mut stale) {
            Ok(more) => out.extend(more),
            Err(_) => return,
        }
        let accounts: Vec<AccountId> = stale.iter().map(|c| c.account).collect();
        self.deliver(now, &accounts, out);
    }

    /// A `/hearth/share/1` request from `from`: the reply to send back,
    /// after the outputs' batch is durable. A refusal's reason is also in
    /// the reply, for the driver to log.
    pub fn share_request(
        &mut self,
        now: Millis,
        from: DeviceId,
        frame: &[u8],
    ) -> (Reply, Vec<u8>, Outputs) {
        let mut out = Outputs::default();
        let reply = match self.answer(now, from, frame, &mut out) {
            Ok(reply) => reply,
            Err(reason) => Reply::Refused { reason },
        };
        let bytes = encode(&reply);
        (reply, bytes, out)
    }

    fn answer(
        &mut self,
        now: Millis,
        from: DeviceId,
        frame: &[u8],
        out: &mut Outputs,
    ) -> Result<Reply, String> {
        self.rate_limit(now, from)?;
        let request: Request = decode(frame, self.config.contacts.max_message_bytes)?;
        match request {
            Request::Card { card } => {
                let card = self.check_card(from, &card)?;
                let account = card.account();
                let previous = self.contacts.known.get(&account).cloned();
                let mut contact = self.merged_or_new(card, true).map_err(|e| e.to_string())?;
                contact.added_us = true;
                // A repeated request that changes nothing is not written again.
                let changed = previous.as_ref().is_none_or(|p| {
                    !p.added_us
                        || p.log.heads() != contact.log.heads()
                        || p.card.to_bytes() != contact.card.to_bytes()
                });
                if changed {
                    let saved = self.save_contacts(now, std::slice::from_mut(&mut contact));
                    out.extend(saved.map_err(|e| e.to_string())?);
                }
                if contact.added {
                    let card = self.card().map_err(|e| e.to_string())?;
                    Ok(Reply::Known {
                        card: card.to_bytes(),
                    })
                } else {
                    Ok(Reply::Pending)
                }
            }
            Request::Offer { acl, shards } => self.take_offer(now, from, &acl, shards, out),
            Request::Answer { share, accepted } => {
                self.take_answer(now, from, &share, accepted, out)
            }
        }
    }

    /// The answer to a card we sent `peer` (`None`: it could not be
    /// delivered). A refusal's reason is returned for the driver to log.
    pub fn share_reply(
        &mut self,
        now: Millis,
        peer: DeviceId,
        reply: Option<&[u8]>,
    ) -> (Option<String>, Outputs) {
        let mut out = Outputs::default();
        let account = match self.contacts.inflight.remove(&peer) {
            None => return (None, out),
            Some(Purpose::Card(account)) => account,
            Some(Purpose::Share(share, account)) => {
                let problem = match reply
                    .map(|r| decode::<Reply>(r, self.config.contacts.max_message_bytes))
                {
                    None => Some("not delivered".to_owned()),
                    Some(Err(e)) => Some(e),
                    Some(Ok(Reply::Refused { reason })) => Some(reason),
                    Some(Ok(Reply::Share { answer })) => self
                        .share_delivered(now, share, account, answer, &mut out)
                        .err(),
                    Some(Ok(_)) => Some("an answer that does not fit a share".into()),
                };
                // A failed delivery waits for the retry time; a good one
                // frees the device for the next message owed to it.
                if problem.is_some() {
                    self.retry_later(now, &mut out);
                } else {
                    self.deliver_shares(now, &mut out);
                }
                return (problem, out);
            }
        };
        let problem =
            match reply.map(|r| decode::<Reply>(r, self.config.contacts.max_message_bytes)) {
                None => Some("not delivered".to_owned()),
                Some(Err(e)) => Some(e),
                Some(Ok(Reply::Refused { reason })) => Some(reason),
                Some(Ok(Reply::Share { .. })) => Some("an answer that does not fit a card".into()),
                Some(Ok(Reply::Pending)) => self.delivered(now, account, None, &mut out).err(),
                Some(Ok(Reply::Known { card })) => match self.check_card(peer, &card) {
                    Ok(card) if card.account() == account => {
                        self.delivered(now, account, Some(card), &mut out).err()
                    }
                    Ok(_) => Some("its card names another account".into()),
                    Err(e) => Some(e),
                },
            };
        if problem.is_some() {
            self.retry_later(now, &mut out);
        }
        (problem, out)
    }

    fn delivered(
        &mut self,
        now: Millis,
        account: AccountId,
        card: Option<Card>,
        out: &mut Outputs,
    ) -> Result<(), String> {
        let Some(existing) = self.contacts.known.get(&account) else {
            return Ok(());
        };
        let mut contact = existing.clone();
        if let Some(card) = card {
            merge_card(&mut contact, card).map_err(|e| e.to_string())?;
            contact.added_us = true;
        }
        contact.deliver = false;
        let saved = self.save_contacts(now, std::slice::from_mut(&mut contact));
        out.extend(saved.map_err(|e| e.to_string())?);
        // The other devices of the contact need not hear it again.
        self.contacts
            .inflight
            .retain(|_, p| *p != Purpose::Card(account));
        Ok(())
    }

    /// A card a peer sent: it verifies, is not ours, and the peer is one of
    /// its account's devices.
    fn check_card(&self, from: DeviceId, bytes: &[u8]) -> Result<Card, String> {
        let card = Card::from_bytes(bytes).map_err(|e| e.to_string())?;
        if card.account() == self.log.account_id() {
            return Err("the card is this account's own".into());
        }
        if !card.log().is_member(&from) {
            return Err(format!(
                "device {from} sent a card of an account it is not a member of"
            ));
        }
        if let Some(known) = self.contacts.known.get(&card.account())
            && known.log.is_removed(&from)
        {
            return Err(format!("device {from} was removed from its account"));
        }
        Ok(card)
    }

    fn rate_limit(&mut self, now: Millis, from: DeviceId) -> Result<(), String> {
        let per_minute = self.config.contacts.requests_per_minute;
        count_request(
            &mut self.contacts.windows,
            RATE_MAX_DEVICES,
            now,
            from,
            per_minute,
        )
    }
}

/// Counts one request from `from` in its minute's window, or refuses it past
/// `per_minute`; at most `max_devices` windows are kept, the oldest
/// forgotten first.
pub(super) fn count_request(
    windows: &mut BTreeMap<DeviceId, (Millis, u32)>,
    max_devices: usize,
    now: Millis,
    from: DeviceId,
    per_minute: u32,
) -> Result<(), String> {
    if !windows.contains_key(&from) && windows.len() >= max_devices {
        let oldest = windows
            .iter()
            .min_by_key(|(_, (at, _))| *at)
            .map(|(d, _)| *d);
        if let Some(oldest) = oldest {
            windows.remove(&oldest);
        }
    }
    let window = windows.entry(from).or_insert((now, 0));
    if now - window.0 >= 60_000 {
        *window = (now, 0);
    }
    if window.1 >= per_minute {
        return Err(format!(
            "too many requests: at most {per_minute} a minute per device"
        ));
    }
    window.1 += 1;
    Ok(())
}

fn new_contact(card: Card) -> Contact {
    Contact {
        account: card.account(),
        name: None,
        card_name: card.name().to_owned(),
        added: false,
        added_us: false,
        deliver: false,
        log: Arc::new(card.log().clone()),
        card,
        updated_at_ms: 0,
    }
}

/// Takes a newer card of the same account: its log is merged into the one
/// known, its name and addresses replace the old.
fn merge_card(contact: &mut Contact, card: Card) -> Result<(), Error> {
    let mut log = (*contact.log).clone();
    log.merge(card.log())?;
    contact.log = Arc::new(log);
    contact.card_name = card.name().to_owned();
    contact.card = card;
    Ok(())
}

#[cfg(test)]
pub(super) mod tests;
